//! The `host-local` CNI plugin binary: parse, dispatch, call the library.

fn main() {
    cni::skel::run(&host_local::HostLocal);
}
