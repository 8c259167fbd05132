//! portmap: ADD and DEL time for 2, 100 and 1,000 mappings (dual-stack container), ours
//! (iptables and nftables backends) against the reference (iptables; Debian 1.1.1 has no nft
//! backend), alternating in the same run; plus the number of processes each ADD and DEL
//! starts, counted once per case with `strace -f` (not timed).

use super::{Ctx, SETTLE, Stats};
use cni_testkit::{Netns, Node, run_plugin};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn conf(n: usize, backend: Option<&str>) -> Value {
    conf_of(n, backend, true)
}

/// The config for `n` mappings; the container is dual-stack if `dual`, IPv4-only otherwise.
fn conf_of(n: usize, backend: Option<&str>, dual: bool) -> Value {
    let maps: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "hostPort": 20000 + i,
                "containerPort": 80 + (i % 100),
                "protocol": if i % 4 == 3 { "udp" } else { "tcp" }
            })
        })
        .collect();
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "benchnet",
        "type": "portmap",
        "runtimeConfig": {"portMappings": maps},
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [
                {"address": "10.88.0.2/16", "interface": 0},
                {"address": "2001:db8:1::2/64", "interface": 0}
            ]
        }
    });
    if let Some(b) = backend {
        c["backend"] = json!(b);
    }
    if !dual && let Some(ips) = c["prevResult"]["ips"].as_array_mut() {
        ips.truncate(1);
    }
    c
}

struct Bench<'a> {
    node: &'a Node,
    ctr: &'a Netns,
}

impl Bench<'_> {
    fn run(&self, bin: &Path, cmd: &str, stdin: &Value, path: Option<&str>) -> Duration {
        let netns = self.ctr.path().display().to_string();
        let mut env = vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "bench1"),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        if let Some(p) = path {
            env.push(("PATH", p));
        }
        let ns = self.node.open();
        let text = stdin.to_string();
        let t = Instant::now();
        let out = run_plugin(Some(&ns), bin, &env, &text);
        let d = t.elapsed();
        assert!(out.ok(), "{} {cmd}: {out}", bin.display());
        d
    }
}

/// The programs one ADD and one DEL start (untimed, traced with `strace -f`).
fn count(b: &Bench, bin: &Path, c: &Value) -> (Option<usize>, Option<usize>) {
    let netns = b.ctr.path().display().to_string();
    let env = |cmd: &str| {
        let mut e = super::cni_env(cmd, "bench1", &netns, Path::new("/usr/lib/cni"));
        e.retain(|(k, _)| k != "CNI_ARGS");
        e
    };
    let text = c.to_string();
    let ns = b.node.open();
    let add = ns
        .run(|| super::children(bin, &env("ADD"), &text))
        .ok()
        .flatten();
    let del = ns
        .run(|| super::children(bin, &env("DEL"), &text))
        .ok()
        .flatten();
    (add.map(|v| v.len()), del.map(|v| v.len()))
}

/// The portmap benchmark section.
pub fn run(ctx: &mut Ctx) {
    let ours = ctx.ours.join("portmap");
    let reference: Option<PathBuf> = ctx
        .reference
        .as_ref()
        .map(|d| d.join("portmap"))
        .filter(|p| p.is_file());
    let node = Node::new("benchpm");
    let ctr = node.container("benchpmc");
    let b = Bench {
        node: &node,
        ctr: &ctr,
    };
    for n in [2usize, 100, 1000] {
        let ipt = conf(n, Some("iptables"));
        let nftc = conf(n, Some("nftables"));
        let ref_conf = conf(n, None);
        let our_iters = ctx.iters(if n >= 1000 { 15 } else { 20 });
        let ref_iters = match n {
            0..=10 => ctx.iters(20),
            11..=200 => ctx.iters(3),
            _ => 1,
        };
        let (mut oa, mut od, mut ra, mut rd, mut na, mut nd) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for i in 0..our_iters.max(ref_iters) {
            if i < our_iters {
                oa.push(b.run(&ours, "ADD", &ipt, None));
                od.push(b.run(&ours, "DEL", &ipt, None));
                std::thread::sleep(SETTLE);
                na.push(b.run(&ours, "ADD", &nftc, None));
                nd.push(b.run(&ours, "DEL", &nftc, None));
                std::thread::sleep(SETTLE);
            }
            if let Some(r) = &reference
                && i < ref_iters
            {
                ra.push(b.run(r, "ADD", &ref_conf, None));
                rd.push(b.run(r, "DEL", &ref_conf, None));
                std::thread::sleep(SETTLE);
            }
        }
        // Process counts (one untimed ADD+DEL each; the reference only up to 100 mappings).
        let (o_add_p, o_del_p) = count(&b, &ours, &ipt);
        let (n_add_p, n_del_p) = count(&b, &ours, &nftc);
        let refp = match &reference {
            Some(r) if n <= 100 => Some(count(&b, r, &ref_conf)),
            _ => None,
        };
        let rstats = |v: &Vec<Duration>| (!v.is_empty()).then(|| Stats::of(v));
        ctx.record(
            "portmap",
            &format!("ADD {n} mappings (iptables)"),
            Stats::of(&oa),
            rstats(&ra),
            json!({"procs": o_add_p, "ref_procs": refp.map(|p| p.0), "ref_n": ra.len()}),
        );
        ctx.record(
            "portmap",
            &format!("DEL {n} mappings (iptables)"),
            Stats::of(&od),
            rstats(&rd),
            json!({"procs": o_del_p, "ref_procs": refp.map(|p| p.1), "ref_n": rd.len()}),
        );
        ctx.record(
            "portmap",
            &format!("ADD {n} mappings (nftables)"),
            Stats::of(&na),
            None,
            json!({"procs": n_add_p}),
        );
        ctx.record(
            "portmap",
            &format!("DEL {n} mappings (nftables)"),
            Stats::of(&nd),
            None,
            json!({"procs": n_del_p}),
        );
    }
    // 1,000 mappings on an IPv4-only container (half the rules): ours only.
    for backend in ["iptables", "nftables"] {
        let c = conf_of(1000, Some(backend), false);
        let (mut a, mut d) = (vec![], vec![]);
        for _ in 0..ctx.iters(15) {
            a.push(b.run(&ours, "ADD", &c, None));
            d.push(b.run(&ours, "DEL", &c, None));
        }
        for (verb, v) in [("ADD", &a), ("DEL", &d)] {
            ctx.record(
                "portmap",
                &format!("{verb} 1000 mappings, IPv4 only ({backend})"),
                Stats::of(v),
                None,
                json!({}),
            );
        }
    }
    ctx.notes.push(
        "portmap: dual-stack container, mappings 3/4 tcp 1/4 udp; the reference is Debian 1.1.1 \
         (iptables only), run at most once at 1,000 mappings; procs = processes started"
            .to_string(),
    );
}
