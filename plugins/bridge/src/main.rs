//! The `bridge` CNI plugin binary: parse, dispatch, call the library.

fn main() {
    // host-local is compiled in: when the host-local on CNI_PATH is the same build, IPAM
    // runs in a thread instead of a process of its own.
    cni::invoke::register_builtin(cni::invoke::Builtin {
        plugin_type: "host-local",
        plugin: &host_local::HostLocal,
        build_id: env!("CNI_HOST_LOCAL_BUILD_ID"),
    });
    cni::skel::run(&bridge::Bridge);
}
