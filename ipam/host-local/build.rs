//! Gives the `host-local` binary a build ID that names its code (see
//! `shared/cni/host-local-stamp.rs`), so that `bridge` can recognise it.

include!("../../shared/cni/host-local-stamp.rs");

fn main() {
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--build-id=0x{}",
        host_local_stamp()
    );
}
