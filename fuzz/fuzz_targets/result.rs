//! Result conversion: any JSON result parses or fails cleanly, and whatever parses prints in
//! every version without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for fallback in cni::version::SUPPORTED {
        if let Ok(r) = cni::CniResult::parse(&v, fallback) {
            for to in cni::Version::ALL {
                if let Ok(text) = r.to_json(to) {
                    // What we print must parse back.
                    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
                    let _ = cni::CniResult::parse(&back, to.as_str()).unwrap();
                }
            }
        }
    }
});
