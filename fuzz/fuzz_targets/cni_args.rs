//! CNI_ARGS parsing never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = cni::args::CniArgs::parse(s, &["IP", "MAC"], |k, v| {
            if k == "IP" && v.parse::<std::net::IpAddr>().is_err() {
                Err(format!("invalid IP address {v}"))
            } else {
                Ok(())
            }
        });
    }
});
