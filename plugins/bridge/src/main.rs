//! The `bridge` CNI plugin binary: parse, dispatch, call the library.

fn main() {
    cni::skel::run(&bridge::Bridge);
}
