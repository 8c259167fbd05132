//! portmap's configuration parsing (`Config::parse`, both backends), the container addresses
//! it picks from `prevResult`, and the nftables rules it would generate from them: any input
//! gives rules or an error, never a panic; every generated line is one line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portmap::config::{Backend, Config, ContainerIps};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = cni::skel::Request::synthetic("ADD", data, "") else {
        return;
    };
    for backend in [Backend::Iptables, Backend::Nftables] {
        let Ok(conf) = Config::parse(&req.conf, || backend) else {
            continue;
        };
        let _ = conf.mark();
        let Ok(Some(prev)) = req.prev_result() else {
            continue;
        };
        let ips = ContainerIps::from_result(&prev, "eth0");
        if conf.backend == Backend::Nftables {
            for ip in ips.iter() {
                for line in portmap::nftables::add_script(&conf, "fuzz", ip) {
                    assert!(
                        !line.contains('\n'),
                        "a generated nft command spans lines: {line:?}"
                    );
                }
            }
        }
    }
});
