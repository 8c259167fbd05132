//! Benchmark section `bridge`: ADD and DEL of `bridge` with `host-local` (the same IPAM
//! binary for both sides), ours against the reference, alternating, inside one node
//! namespace, for an IPv4 and a dual-stack network with masquerading.

use super::{Ctx, Stats, time};
use cni_testkit::{Attachment, Netns, Node, Runtime, TempDir};
use serde_json::json;
use std::path::{Path, PathBuf};

fn link(dir: &Path, name: &str, target: &Path) {
    std::os::unix::fs::symlink(target, dir.join(name)).expect("symlink");
}

/// Our host-local if it allocates (probed), else the reference's: both sides use the same.
fn host_local(ours: &Path, reference: &Path) -> PathBuf {
    let candidate = ours.join("host-local");
    let data = TempDir::new("benchprobe");
    let conf = json!({"cniVersion": "1.0.0", "name": "probe", "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": "10.99.0.0/24"}]]}})
    .to_string();
    let env = |cmd: &'static str| {
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "probe"),
            ("CNI_NETNS", "/var/run/netns/no-such-probe"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ]
    };
    if candidate.is_file() {
        let add = cni_testkit::run_plugin(None, &candidate, &env("ADD"), &conf);
        let _ = cni_testkit::run_plugin(None, &candidate, &env("DEL"), &conf);
        if add.ok() {
            return candidate;
        }
    }
    reference.join("host-local")
}

/// Runs the section.
pub fn run(ctx: &mut Ctx) {
    let Some(refdir) = ctx.reference.clone() else {
        ctx.notes
            .push("bridge: reference plugins not installed; section skipped".into());
        return;
    };
    let ipam_bin = host_local(&ctx.ours, &refdir);
    let ipam_name = if ipam_bin.starts_with(&ctx.ours) {
        "ours"
    } else {
        "reference"
    };
    let ours_dir = TempDir::new("bench-ours");
    let ref_dir = TempDir::new("bench-ref");
    link(ours_dir.path(), "bridge", &ctx.ours.join("bridge"));
    link(ref_dir.path(), "bridge", &refdir.join("bridge"));
    for d in [&ours_dir, &ref_dir] {
        link(d.path(), "host-local", &ipam_bin);
    }
    let n = ctx.iters(40);
    for (case, subnets) in [
        ("ipv4 + ipMasq", vec!["10.88.0.0/16"]),
        (
            "dual stack + ipMasq",
            vec!["10.89.0.0/16", "2001:db8:9::/64"],
        ),
    ] {
        let node = Node::new("benchbr");
        let data = TempDir::new("bench-ipam");
        let ranges: Vec<_> = subnets.iter().map(|s| json!([{"subnet": s}])).collect();
        // cniVersion 1.0.0: the newest the Debian reference accepts.
        let conf = json!({"cniVersion": "1.0.0", "name": "benchnet", "type": "bridge",
            "bridge": "cni0", "isGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": ranges,
                     "routes": [{"dst": "0.0.0.0/0"}]}});
        let ours = Runtime::new(Some(&node), conf.clone(), vec![ours_dir.path().into()]);
        let reference = Runtime::new(Some(&node), conf, vec![ref_dir.path().into()]);
        let c_ours = Netns::new("bbo");
        let c_ref = Netns::new("bbr");
        let a_ours = Attachment::new("bench-ours", &c_ours.path());
        let a_ref = Attachment::new("bench-ref", &c_ref.path());
        // Warm-up: the bridge, gateway and tables exist before timing starts.
        for (rt, a) in [(&ours, &a_ours), (&reference, &a_ref)] {
            rt.add(a)
                .unwrap_or_else(|e| panic!("bridge bench warm-up ADD: {e}"));
            rt.del(a)
                .unwrap_or_else(|e| panic!("bridge bench warm-up DEL: {e}"));
        }
        let (mut oa, mut od, mut ra, mut rd) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            for (rt, a, adds, dels) in [
                (&ours, &a_ours, &mut oa, &mut od),
                (&reference, &a_ref, &mut ra, &mut rd),
            ] {
                adds.push(time(|| {
                    rt.add(a)
                        .unwrap_or_else(|e| panic!("bridge bench ADD: {e}"));
                }));
                dels.push(time(|| {
                    rt.del(a)
                        .unwrap_or_else(|e| panic!("bridge bench DEL: {e}"));
                }));
            }
        }
        let extra = json!({"ipam": format!("host-local ({ipam_name})")});
        ctx.record(
            "bridge",
            &format!("ADD {case}"),
            Stats::of(&oa),
            Some(Stats::of(&ra)),
            extra.clone(),
        );
        ctx.record(
            "bridge",
            &format!("DEL {case}"),
            Stats::of(&od),
            Some(Stats::of(&rd)),
            extra,
        );
    }
}
