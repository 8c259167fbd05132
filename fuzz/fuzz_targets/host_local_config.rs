//! host-local's configuration parsing (`IpamConfig::load`, with `CNI_ARGS`), then the
//! allocator on an in-memory store (allocate twice, check, release, STATUS's free-address
//! search): range arithmetic at the edges of the address space never panics. Input: the first
//! line is `CNI_ARGS`, the rest is stdin.
#![no_main]
use host_local::allocator;
use host_local::store::MemStore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (args, stdin) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let Ok(args) = std::str::from_utf8(args) else {
        return;
    };
    let Ok(req) = cni::skel::Request::synthetic("ADD", stdin, args) else {
        return;
    };
    let Ok(conf) = host_local::IpamConfig::load(&req, true) else {
        return;
    };
    let mut store = MemStore::new();
    for id in ["a", "b"] {
        if let Ok(got) =
            allocator::allocate(&mut store, &conf.range_sets, id, "eth0", &conf.requested)
        {
            for a in &got {
                let _ = a.ip_config();
            }
        }
    }
    let _ = allocator::check(&mut store, &conf.range_sets, "a", "eth0", None);
    let _ = allocator::ensure_free(&mut store, &conf.range_sets);
    let _ = allocator::release(&mut store, "a", "eth0", conf.range_sets.len());
    let _ = allocator::ensure_free(&mut store, &conf.range_sets);
});
