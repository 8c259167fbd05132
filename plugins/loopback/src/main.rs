//! The `loopback` CNI plugin binary: parse, dispatch, call the library.

fn main() {
    cni::skel::run(&loopback::Loopback);
}
