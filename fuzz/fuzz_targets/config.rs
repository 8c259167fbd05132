//! Config parsing: any stdin gives a config or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(conf) = cni::config::NetConf::parse(data) {
        let _ = cni::version::Version::negotiate(&conf.cni_version);
        let _ = cni::gc::valid_attachments(&conf.raw);
        let _ = conf.decode::<serde_json::Value>(&["bridge", "hostPort", "subnet"]);
    }
});
