//! Tells `bridge` the build ID that a `host-local` binary built from these sources carries
//! (see `shared/cni/host-local-stamp.rs`), so that it can run that host-local in-process.

include!("../../shared/cni/host-local-stamp.rs");

fn main() {
    println!(
        "cargo:rustc-env=CNI_HOST_LOCAL_BUILD_ID={}",
        host_local_stamp()
    );
}
