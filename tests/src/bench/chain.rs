//! Benchmark section `chain`: what a pod start and a pod teardown cost. One chain ADD is
//! `bridge` (which delegates to `host-local`) then `portmap` with two mappings (one TCP, one
//! UDP) and `prevResult`; one chain DEL is the reverse, with `prevResult` and the mappings
//! again, as containerd sends them.
//!
//! Ours and the reference each get their own node namespace, filled with `N - 1` attached
//! containers; then one more container is attached and detached repeatedly, alternating
//! ours and the reference (each iteration flips who goes first), at N = 1, 10, 100, 250.
//! Plugins are started from a thread that joined the node namespace once; the `N - 1`
//! background containers are anonymous namespaces passed as `/proc/<pid>/fd/<fd>`, the
//! measured one a named (bind-mounted) namespace under `/run/netns`, as CRI runtimes pass them.
//!
//! Each measured container is also checked (CHECK through the chain, as a runtime sends it)
//! and, ours only, a GC of the chain runs that keeps every container on the node (what a
//! runtime's periodic GC does; the reference's 1.1.1 has no GC), both before the DEL's wait.
//!
//! At N = 10 it also records, per plugin invocation, the child processes (`strace -f`) and
//! the peak RSS of the process tree (the median of `RSS_ROUNDS` invocations).

use super::floor::{self, Tx};
use super::{Ctx, Sandbox, Stats, Worker, children, cni_env, exec, median_rss, peak_rss_kib};
use cni_testkit::{Netns, Node, TempDir};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The network name of every bench chain.
pub const NET: &str = "benchnet";

/// The bridge plugin's config (with host-local) for a chain whose IPAM data is in `data`.
pub fn bridge_conf(data: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": "cni0",
        "isGateway": true, "ipMasq": true, "hairpinMode": true,
        "ipam": {"type": "host-local", "dataDir": data,
                 "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    })
}

/// The two port mappings of container number `k`: one TCP and one UDP.
pub fn mappings(k: usize) -> Value {
    mappings_of(k, true)
}

/// The two port mappings of container number `k`; the second is UDP if `udp`, else TCP.
/// A UDP mapping makes ADD (both implementations) flush stale UDP conntrack entries for its
/// host port, which costs a walk of the whole conntrack table.
pub fn mappings_of(k: usize, udp: bool) -> Value {
    json!([
        {"hostPort": 10000 + k, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 30000 + k, "containerPort": 53, "protocol": if udp { "udp" } else { "tcp" }}
    ])
}

/// The portmap plugin's config for container `k` after `prev` (TCP + UDP mappings).
pub fn portmap_conf(k: usize, prev: &Value) -> Value {
    portmap_conf_of(k, true, prev)
}

/// The portmap plugin's config for container `k` after `prev`.
pub fn portmap_conf_of(k: usize, udp: bool, prev: &Value) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": NET, "type": "portmap",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": mappings_of(k, udp)},
        "prevResult": prev
    })
}

/// What a chain CHECK runs, in order (the rows' names).
const CHECKED: [&str; 2] = ["bridge+host-local", "portmap"];

/// One implementation's chain: a `CNI_PATH` directory with its three plugins.
#[derive(Clone)]
pub struct Chain {
    /// `CNI_PATH`.
    pub dir: PathBuf,
    /// The bridge config (its dataDir is per node).
    pub bridge: Value,
}

/// What one chain ADD returned, for its DEL.
#[derive(Clone)]
pub struct Attached {
    pub id: String,
    pub netns: String,
    pub k: usize,
    /// The second mapping is UDP.
    pub udp: bool,
    pub result: Value,
}

impl Chain {
    /// ADD through the chain; the final result and the wall time.
    pub fn add(&self, id: &str, netns: &str, k: usize) -> (Attached, Duration) {
        let (a, [d1, d2]) = self.add_parts(id, netns, k, true);
        (a, d1 + d2)
    }

    /// ADD through the chain; the final result and the wall time of each plugin.
    pub fn add_parts(
        &self,
        id: &str,
        netns: &str,
        k: usize,
        udp: bool,
    ) -> (Attached, [Duration; 2]) {
        let env = cni_env("ADD", id, netns, &self.dir);
        let (out, d1) = exec(&self.dir.join("bridge"), &env, &self.bridge.to_string());
        assert!(out.ok(), "bridge ADD ({}): {out}", self.dir.display());
        let prev = out.json();
        let pm = portmap_conf_of(k, udp, &prev);
        let (out, d2) = exec(&self.dir.join("portmap"), &env, &pm.to_string());
        assert!(out.ok(), "portmap ADD ({}): {out}", self.dir.display());
        (
            Attached {
                id: id.to_string(),
                netns: netns.to_string(),
                k,
                udp,
                result: out.json(),
            },
            [d1, d2],
        )
    }

    /// The DEL stdin of both plugins (portmap first, as a runtime calls them).
    pub fn del_inputs(&self, a: &Attached) -> (String, String) {
        let pm = portmap_conf_of(a.k, a.udp, &a.result);
        let mut br = self.bridge.clone();
        br["prevResult"] = a.result.clone();
        (pm.to_string(), br.to_string())
    }

    /// CHECK through the chain (bridge, then portmap, each with the final result as
    /// `prevResult`, as a runtime sends it); each plugin's time where it succeeded.
    pub fn check_parts(&self, a: &Attached) -> [Option<Duration>; 2] {
        let env = cni_env("CHECK", &a.id, &a.netns, &self.dir);
        let (pm, br) = self.del_inputs(a);
        let (b, db) = exec(&self.dir.join("bridge"), &env, &br);
        let (p, dp) = exec(&self.dir.join("portmap"), &env, &pm);
        [b.ok().then_some(db), p.ok().then_some(dp)]
    }

    /// GC (CNI 1.1) through the chain, keeping the `eth0` attachments of `valid` (container
    /// IDs); the wall time of each plugin (bridge, which runs host-local's GC, then portmap).
    pub fn gc_parts(&self, valid: &[String]) -> [Duration; 2] {
        let keep: Vec<Value> = valid
            .iter()
            .map(|id| json!({"containerID": id, "ifname": "eth0"}))
            .collect();
        let mut br = self.bridge.clone();
        br["cniVersion"] = json!("1.1.0");
        br["cni.dev/valid-attachments"] = json!(keep);
        let pm = json!({"cniVersion": "1.1.0", "name": NET, "type": "portmap",
                        "capabilities": {"portMappings": true},
                        "cni.dev/valid-attachments": keep});
        let env = vec![
            ("CNI_COMMAND".to_string(), "GC".to_string()),
            ("CNI_PATH".to_string(), self.dir.display().to_string()),
        ];
        let mut times = [Duration::ZERO; 2];
        for ((plugin, conf), t) in [("bridge", br), ("portmap", pm)].iter().zip(&mut times) {
            let (out, d) = exec(&self.dir.join(plugin), &env, &conf.to_string());
            assert!(out.ok(), "{plugin} GC ({}): {out}", self.dir.display());
            *t = d;
        }
        times
    }

    /// DEL through the chain in reverse; the wall time.
    pub fn del(&self, a: &Attached) -> Duration {
        let [d1, d2] = self.del_parts(a);
        d1 + d2
    }

    /// DEL through the chain in reverse; the wall time of each plugin (portmap, bridge).
    pub fn del_parts(&self, a: &Attached) -> [Duration; 2] {
        let env = cni_env("DEL", &a.id, &a.netns, &self.dir);
        let (pm, br) = self.del_inputs(a);
        let (out, d1) = exec(&self.dir.join("portmap"), &env, &pm);
        assert!(out.ok(), "portmap DEL ({}): {out}", self.dir.display());
        let (out, d2) = exec(&self.dir.join("bridge"), &env, &br);
        assert!(out.ok(), "bridge DEL ({}): {out}", self.dir.display());
        [d1, d2]
    }
}

/// A `CNI_PATH` directory of symlinks to `bridge`, `host-local` and `portmap` in `from`.
pub fn plugin_dir(from: &Path, label: &str) -> TempDir {
    let d = TempDir::new(label);
    for p in ["bridge", "host-local", "portmap"] {
        std::os::unix::fs::symlink(from.join(p), d.path().join(p)).expect("symlink plugin");
    }
    d
}

/// One implementation on its own node.
struct Side {
    label: &'static str,
    /// Our plugins (not the reference's).
    ours: bool,
    chain: Chain,
    worker: Worker,
    background: Vec<(Sandbox, Attached)>,
    /// The measured container: a bind-mounted (named) namespace, as CRI runtimes pass them.
    probe: Netns,
    add: Vec<Duration>,
    del: Vec<Duration>,
    /// Per plugin: bridge ADD, portmap ADD, portmap DEL, bridge DEL.
    parts: [Vec<Duration>; 4],
    /// The same chain with two TCP mappings (no conntrack flush).
    tcp_add: Vec<Duration>,
    tcp_del: Vec<Duration>,
    /// CHECK of the measured container (bridge, portmap) where it succeeded, and how often
    /// it failed (ours never may; the reference's portmap fails for an IPv4-only container).
    check: [Vec<Duration>; 2],
    check_failed: [usize; 2],
    /// GC of the whole chain with every attached container valid, per plugin (bridge,
    /// portmap; ours: the reference's 1.1.1 has no GC).
    gc_parts: [Vec<Duration>; 2],
    // Dropped last: the node (with everything in it) and the IPAM data.
    _data: TempDir,
    _dir: TempDir,
    _node: Node,
}

impl Side {
    fn new(label: &'static str, bins: &Path, ours: bool) -> Side {
        let node = Node::new(&format!("bch{label}"));
        let data = TempDir::new(&format!("bench-chain-{label}"));
        let dir = plugin_dir(bins, &format!("bench-chain-bin-{label}"));
        let worker = Worker::in_netns(&node.path());
        Side {
            label,
            ours,
            chain: Chain {
                dir: dir.path().to_path_buf(),
                bridge: bridge_conf(data.path()),
            },
            worker,
            background: Vec::new(),
            probe: Netns::new(&format!("bch{label}p")),
            add: Vec::new(),
            del: Vec::new(),
            parts: Default::default(),
            tcp_add: Vec::new(),
            tcp_del: Vec::new(),
            check: Default::default(),
            check_failed: [0; 2],
            gc_parts: Default::default(),
            _data: data,
            _dir: dir,
            _node: node,
        }
    }

    /// Forgets the times measured so far (after the warm-up, after each size).
    fn clear(&mut self) {
        self.add.clear();
        self.del.clear();
        self.parts = Default::default();
        self.tcp_add.clear();
        self.tcp_del.clear();
        self.check = Default::default();
        self.check_failed = [0; 2];
        self.gc_parts = Default::default();
    }

    /// Attaches background containers until `n` are on the node.
    fn fill_to(&mut self, n: usize) {
        while self.background.len() < n {
            let k = self.background.len();
            let sb = Sandbox::new();
            let (chain, netns) = (self.chain.clone(), sb.path());
            let (a, _) = self
                .worker
                .call(move || chain.add(&format!("bg{k}"), &netns, 1000 + k));
            self.background.push((sb, a));
        }
    }

    fn round(&mut self, i: usize) {
        let (chain, netns) = (self.chain.clone(), self.probe.path().display().to_string());
        let id = format!("probe{i}");
        let (a, [b, p]) = self
            .worker
            .call(move || chain.add_parts(&id, &netns, 0, true));
        self.add.push(b + p);
        self.check_and_gc(&a);
        std::thread::sleep(super::ATTACHED);
        let chain = self.chain.clone();
        let [q, c] = self.worker.call(move || chain.del_parts(&a));
        std::thread::sleep(super::SETTLE);
        self.del.push(q + c);
        for (v, d) in self.parts.iter_mut().zip([b, p, q, c]) {
            v.push(d);
        }
        let (chain, netns) = (self.chain.clone(), self.probe.path().display().to_string());
        let id = format!("tprobe{i}");
        let (a, [b, p]) = self
            .worker
            .call(move || chain.add_parts(&id, &netns, 1, false));
        self.tcp_add.push(b + p);
        std::thread::sleep(super::ATTACHED);
        let chain = self.chain.clone();
        let [q, c] = self.worker.call(move || chain.del_parts(&a));
        std::thread::sleep(super::SETTLE);
        self.tcp_del.push(q + c);
    }

    /// CHECK of the measured container `a`, and (ours) a GC that keeps every container on
    /// the node, as a runtime's periodic GC does; both before the DEL's wait, so that the DEL
    /// still follows its ADD by [`super::ATTACHED`] or more.
    fn check_and_gc(&mut self, a: &Attached) {
        let (chain, probe) = (self.chain.clone(), a.clone());
        let checks = self.worker.call(move || chain.check_parts(&probe));
        for (i, c) in checks.into_iter().enumerate() {
            match c {
                Some(d) => self.check[i].push(d),
                None => {
                    assert!(!self.ours, "our chain CHECK failed ({})", CHECKED[i]);
                    self.check_failed[i] += 1;
                }
            }
        }
        if self.ours {
            let mut valid: Vec<String> =
                self.background.iter().map(|(_, b)| b.id.clone()).collect();
            valid.push(a.id.clone());
            let chain = self.chain.clone();
            let [g1, g2] = self.worker.call(move || chain.gc_parts(&valid));
            self.gc_parts[0].push(g1);
            self.gc_parts[1].push(g2);
        }
    }

    /// Child processes and peak RSS of each plugin invocation of one chain ADD and DEL
    /// (each measured on a fresh invocation of its own).
    fn invocation_costs(&self) -> Value {
        let chain = self.chain.clone();
        let netns = self.probe.path().display().to_string();
        self.worker.call(move || {
            let id = "costs";
            let add = cni_env("ADD", id, &netns, &chain.dir);
            let del = cni_env("DEL", id, &netns, &chain.dir);
            let b = chain.dir.join("bridge");
            let pm = chain.dir.join("portmap");
            let br = chain.bridge.to_string();
            let with_prev = |prev: &Value| {
                let mut c = chain.bridge.clone();
                c["prevResult"] = prev.clone();
                c.to_string()
            };
            let mut out = serde_json::Map::new();
            let rss = median_rss(|| {
                let r = peak_rss_kib(&b, &add, &br);
                exec(&b, &del, &br);
                r
            });
            let kids = children(&b, &add, &br);
            exec(&b, &del, &br);
            out.insert(
                "bridge ADD".into(),
                json!({"rss_kib": rss, "children": kids}),
            );

            let (o, _) = exec(&b, &add, &br);
            let prev = o.json();
            let pmc = portmap_conf(0, &prev).to_string();
            let rss = median_rss(|| {
                let r = peak_rss_kib(&pm, &add, &pmc);
                exec(&pm, &del, &pmc);
                r
            });
            let kids = children(&pm, &add, &pmc);
            out.insert(
                "portmap ADD".into(),
                json!({"rss_kib": rss, "children": kids}),
            );
            let rss = median_rss(|| {
                let r = peak_rss_kib(&pm, &del, &pmc);
                exec(&pm, &add, &pmc);
                r
            });
            let kids = children(&pm, &del, &pmc);
            out.insert(
                "portmap DEL".into(),
                json!({"rss_kib": rss, "children": kids}),
            );

            let mut prev = prev;
            let rss = median_rss(|| {
                let r = peak_rss_kib(&b, &del, &with_prev(&prev));
                prev = exec(&b, &add, &br).0.json();
                r
            });
            let kids = children(&b, &del, &with_prev(&prev));
            out.insert(
                "bridge DEL".into(),
                json!({"rss_kib": rss, "children": kids}),
            );
            Value::Object(out)
        })
    }
}

fn summarize_costs(v: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            let kids = x["children"].as_array().map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            });
            out.insert(
                k.clone(),
                json!({
                    "children": kids.as_ref().map(Vec::len),
                    "programs": kids,
                    "rss_kib": x["rss_kib"],
                }),
            );
        }
    }
    Value::Object(out)
}

/// Runs the section.
pub fn run(ctx: &mut Ctx) {
    let Some(refdir) = ctx.reference.clone() else {
        ctx.notes
            .push("chain: reference plugins not installed; section skipped".into());
        return;
    };
    let sizes: Vec<usize> = match &ctx.sizes {
        Some(s) => s.clone(),
        None if ctx.quick => vec![1, 10],
        None => vec![1, 10, 100, 250],
    };
    // 40 rounds: a DEL's time has a long tail (the veth deletion waits for RCU grace
    // periods), and the medians of 20 moved by several ms between runs.
    let iters = ctx.iters(40);
    // Per plugin of [`CHECKED`], where the reference's CHECK failed (noted once at the end).
    let mut check_failures: [Vec<String>; 2] = Default::default();
    let floor_sb = std::sync::Arc::new(Sandbox::new());
    let mut ours = Side::new("o", &ctx.ours, true);
    let mut theirs = Side::new("r", &refdir, false);
    // Warm-up: creates the bridge, the gateway address and the shared firewall state.
    for s in [&mut ours, &mut theirs] {
        s.round(0);
        s.clear();
    }
    for (k, &n) in sizes.iter().enumerate() {
        let before = ours.background.len() + theirs.background.len();
        for s in [&mut ours, &mut theirs] {
            s.fill_to(n - 1);
        }
        // Before the first size too: the warm-up has just created both nodes' bridges and
        // attached the first containers (without this pause, our bridge DEL at 1 container
        // took 29.9 ms over the first 20 rounds and 21.6–25.7 over the next 100).
        if k == 0 || ours.background.len() + theirs.background.len() > before {
            std::thread::sleep(super::SETTLE_AFTER_FILL);
        }
        // The floor (on our node, at the same size) takes a turn after both sides: in this
        // order each of the three follows each of the other two equally often, so what the
        // machine is still doing after the previous round (a teardown's RCU callbacks, say)
        // weighs on the floor as on either side.
        let (mut fa, mut fd) = (Vec::new(), Vec::new());
        let mut fparts: [Vec<Duration>; 3] = Default::default();
        for i in 0..iters {
            if i % 2 == 0 {
                ours.round(i);
                theirs.round(i);
            } else {
                theirs.round(i);
                ours.round(i);
            }
            let (a, d, p) = floor::rounds(&ours.worker, &floor_sb, 1, Tx::Netlink);
            std::thread::sleep(super::SETTLE);
            fa.extend(a);
            fd.extend(d);
            for (v, x) in fparts.iter_mut().zip(p) {
                v.extend(x);
            }
        }
        let p50 =
            |v: &Vec<Duration>| (Stats::of(v).median.as_secs_f64() * 100_000.0).round() / 100.0;
        let parts = |s: &Side| {
            json!({"bridge_add_ms": p50(&s.parts[0]), "portmap_add_ms": p50(&s.parts[1]),
                   "portmap_del_ms": p50(&s.parts[2]), "bridge_del_ms": p50(&s.parts[3])})
        };
        let mut extra = json!({"containers": n, "iterations": iters,
                               "ours_parts": parts(&ours), "ref_parts": parts(&theirs)});
        if n == 10 {
            extra["ours"] = summarize_costs(&ours.invocation_costs());
            extra["reference"] = summarize_costs(&theirs.invocation_costs());
        }
        ctx.record(
            "chain",
            &format!("ADD, {n} containers"),
            Stats::of(&ours.add),
            Some(Stats::of(&theirs.add)),
            json!({"containers": n}),
        );
        ctx.record(
            "chain",
            &format!("DEL, {n} containers"),
            Stats::of(&ours.del),
            Some(Stats::of(&theirs.del)),
            extra,
        );
        ctx.record(
            "chain tcp",
            &format!("ADD, {n} containers"),
            Stats::of(&ours.tcp_add),
            Some(Stats::of(&theirs.tcp_add)),
            json!({"containers": n}),
        );
        ctx.record(
            "chain tcp",
            &format!("DEL, {n} containers"),
            Stats::of(&ours.tcp_del),
            Some(Stats::of(&theirs.tcp_del)),
            json!({"containers": n}),
        );
        for (i, what) in CHECKED.iter().enumerate() {
            let failed = theirs.check_failed[i];
            let reference = (failed == 0).then(|| Stats::of(&theirs.check[i]));
            if failed > 0 {
                check_failures[i].push(format!("{failed} of {iters} rounds at {n}"));
            }
            ctx.record(
                "chain",
                &format!("CHECK {what}, {n} containers"),
                Stats::of(&ours.check[i]),
                reference,
                json!({"containers": n}),
            );
        }
        let gc: Vec<Duration> = ours.gc_parts[0]
            .iter()
            .zip(&ours.gc_parts[1])
            .map(|(b, p)| *b + *p)
            .collect();
        ctx.record(
            "chain",
            &format!("GC, {n} containers"),
            Stats::of(&gc),
            None,
            json!({"containers": n, "valid_attachments": n,
                   "bridge_gc_ms": p50(&ours.gc_parts[0]), "portmap_gc_ms": p50(&ours.gc_parts[1])}),
        );
        ctx.record(
            "floor",
            &format!("ADD, {n} containers"),
            Stats::of(&fa),
            None,
            json!({"containers": n}),
        );
        ctx.record(
            "floor",
            &format!("DEL, {n} containers"),
            Stats::of(&fd),
            None,
            floor::del_parts_json(&fparts),
        );
        for s in [&mut ours, &mut theirs] {
            s.clear();
        }
    }
    for (what, failures) in CHECKED.iter().zip(&check_failures) {
        if !failures.is_empty() {
            ctx.notes.push(format!(
                "chain: the reference's {what} CHECK failed in {} containers; its rows are left out",
                failures.join(", ")
            ));
        }
    }
    ctx.notes.push(format!(
        "chain: bridge (isGateway, ipMasq, hairpinMode; host-local /16) + portmap (1 TCP + 1 UDP \
         mapping; `chain tcp`: 2 TCP mappings, so no conntrack flush), cniVersion 1.0.0; {iters} \
         alternating iterations per size, each followed by one floor round on our node (so each \
         of the three follows each of the other two equally often); N - 1 containers attached \
         before timing, then {} s for their interfaces' IPv6 start-up traffic to pass (before \
         the first size too); CHECK and (ours) GC of the chain with every container valid, \
         after each ADD of the TCP + UDP pass; each container attached {} ms before its DEL; \
         {} ms after each DEL ({}/{})",
        super::SETTLE_AFTER_FILL.as_secs(),
        super::ATTACHED.as_millis(),
        super::SETTLE.as_millis(),
        ours.label,
        theirs.label
    ));
}
