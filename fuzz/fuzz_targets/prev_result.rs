//! A config carrying an arbitrary prevResult: parsing it never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(prev) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for version in ["0.2.0", "0.4.0", "1.0.0", "1.1.0"] {
        let conf = serde_json::json!({"cniVersion": version, "name": "n", "type": "portmap", "prevResult": prev});
        if let Ok(c) = cni::config::NetConf::parse(conf.to_string().as_bytes())
            && let Some(v) = c.prev_result_value()
        {
            let _ = cni::CniResult::parse(v, &c.cni_version);
        }
    }
});
