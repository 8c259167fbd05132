//! The bridge plugin's configuration parsing (`Config::from_request`, with `CNI_ARGS`), and
//! the gateway computation over a `prevResult`: any input gives a config or an error, never a
//! panic. Input: the first line is `CNI_ARGS`, the rest is stdin.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (args, stdin) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let Ok(args) = std::str::from_utf8(args) else {
        return;
    };
    for command in ["ADD", "DEL", "GC"] {
        let Ok(req) = cni::skel::Request::synthetic(command, stdin, args) else {
            return;
        };
        let Ok(conf) = bridge::config::Config::from_request(&req) else {
            continue;
        };
        let _ = conf.checked_backend();
        if let Ok(Some(mut prev)) = req.prev_result() {
            let _ = bridge::add::calc_gateways(&mut prev, &conf);
            for v in cni::Version::ALL {
                let _ = prev.to_json(v);
            }
        }
    }
});
