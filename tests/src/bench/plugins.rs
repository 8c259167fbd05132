//! Benchmark section `plugins`: each plugin alone, ours against the reference, alternating:
//! process start (`VERSION`, with peak RSS and binary size), `bridge` with `host-local`
//! (ADD and DEL of one container on a node with the bridge already up; also with
//! `macspoofchk`, and ours with the nftables masquerade backend, which the reference's 1.1.1
//! lacks), `portmap` alone (2 mappings, a `prevResult` naming the container address; no
//! bridge needed), a node's first ADD of each (on a node of its own every round), and ours'
//! STATUS (the reference's 1.1.1 has none).

use super::chain::{NET, bridge_conf, mappings, plugin_dir};
use super::{ATTACHED, Ctx, SETTLE, Stats, Worker, cni_env, exec, median_rss, peak_rss_kib};
use cni_testkit::{Netns, Node, TempDir};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn version(bin: &Path) -> Duration {
    let env = vec![("CNI_COMMAND".to_string(), "VERSION".to_string())];
    let (out, d) = exec(bin, &env, "");
    assert!(out.ok(), "{} VERSION: {out}", bin.display());
    d
}

struct Side {
    dir: TempDir,
    _data: TempDir,
    node: Node,
    worker: Worker,
    sandbox: Netns,
    bridge: Value,
}

impl Side {
    fn new(label: &str, bins: &Path) -> Side {
        let node = Node::new(&format!("bpl{label}"));
        // portmap alone needs a route to the container address (route_localnet).
        node.ip(&[
            "link", "add", "bpm0", "type", "veth", "peer", "name", "bpm1",
        ]);
        node.ip(&["addr", "add", "10.89.0.1/16", "dev", "bpm0"]);
        node.ip(&["link", "set", "bpm0", "up"]);
        node.ip(&["link", "set", "bpm1", "up"]);
        let data = TempDir::new(&format!("bench-pl-{label}"));
        let worker = Worker::in_netns(&node.path());
        Side {
            dir: plugin_dir(bins, &format!("bench-pl-bin-{label}")),
            bridge: bridge_conf(data.path()),
            _data: data,
            node,
            worker,
            sandbox: Netns::new(&format!("bpl{label}c")),
        }
    }

    /// One ADD and DEL of `bridge` with `extra` merged into its configuration.
    fn bridge_round(&self, i: usize, extra: &Value) -> (Duration, Duration) {
        let dir: PathBuf = self.dir.path().to_path_buf();
        let mut conf = self.bridge.clone();
        if let (Some(c), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let netns = self.sandbox.path().display().to_string();
        self.worker.call(move || {
            let id = format!("b{i}");
            let b = dir.join("bridge");
            let (out, a) = exec(&b, &cni_env("ADD", &id, &netns, &dir), &conf.to_string());
            assert!(out.ok(), "bridge ADD: {out}");
            std::thread::sleep(ATTACHED);
            let mut del = conf.clone();
            del["prevResult"] = out.json();
            let (out, d) = exec(&b, &cni_env("DEL", &id, &netns, &dir), &del.to_string());
            assert!(out.ok(), "bridge DEL: {out}");
            std::thread::sleep(SETTLE);
            (a, d)
        })
    }

    /// One STATUS of `plugin` (CNI 1.1; the reference's 1.1.1 has no STATUS) with `conf`.
    fn status(&self, plugin: &str, conf: &Value) -> Duration {
        let dir: PathBuf = self.dir.path().to_path_buf();
        let mut conf = conf.clone();
        conf["cniVersion"] = json!("1.1.0");
        let bin = dir.join(plugin);
        self.worker.call(move || {
            let env = vec![
                ("CNI_COMMAND".to_string(), "STATUS".to_string()),
                ("CNI_PATH".to_string(), dir.display().to_string()),
            ];
            let (out, d) = exec(&bin, &env, &conf.to_string());
            assert!(out.ok(), "{} STATUS: {out}", bin.display());
            d
        })
    }

    /// One ADD and DEL of `portmap` with `extra` merged into its configuration.
    fn portmap_round(&self, i: usize, extra: &Value) -> (Duration, Duration) {
        let dir: PathBuf = self.dir.path().to_path_buf();
        let netns = self.sandbox.path().display().to_string();
        let extra = extra.clone();
        self.worker.call(move || {
            let id = format!("p{i}");
            let mut conf = json!({
                "cniVersion": "1.0.0", "name": NET, "type": "portmap",
                "runtimeConfig": {"portMappings": mappings(i % 1000)},
                "prevResult": {"cniVersion": "1.0.0",
                    "interfaces": [{"name": "eth0", "sandbox": netns}],
                    "ips": [{"address": "10.89.0.2/16", "interface": 0}]}
            });
            if let (Some(c), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
                c.extend(e.clone());
            }
            let conf = conf.to_string();
            let pm = dir.join("portmap");
            let (out, a) = exec(&pm, &cni_env("ADD", &id, &netns, &dir), &conf);
            assert!(out.ok(), "portmap ADD: {out}");
            let (out, d) = exec(&pm, &cni_env("DEL", &id, &netns, &dir), &conf);
            assert!(out.ok(), "portmap DEL: {out}");
            std::thread::sleep(SETTLE);
            (a, d)
        })
    }
}

/// Runs the section.
pub fn run(ctx: &mut Ctx) {
    let Some(refdir) = ctx.reference.clone() else {
        ctx.notes
            .push("plugins: reference plugins not installed; section skipped".into());
        return;
    };
    // Process start.
    let n = ctx.iters(100);
    for p in ["bridge", "host-local", "portmap", "loopback"] {
        let (o, r) = (ctx.ours.join(p), refdir.join(p));
        if !o.is_file() || !r.is_file() {
            continue;
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..n {
            if i % 2 == 0 {
                a.push(version(&o));
                b.push(version(&r));
            } else {
                b.push(version(&r));
                a.push(version(&o));
            }
        }
        let venv = vec![("CNI_COMMAND".to_string(), "VERSION".to_string())];
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        ctx.record(
            "start",
            &format!("{p} VERSION"),
            Stats::of(&a),
            Some(Stats::of(&b)),
            json!({
                "rss_kib": median_rss(|| peak_rss_kib(&o, &venv, "")),
                "ref_rss_kib": median_rss(|| peak_rss_kib(&r, &venv, "")),
                "size_bytes": size(&o),
                "ref_size_bytes": size(&r),
            }),
        );
    }
    // bridge + host-local, and portmap, each alone.
    let ours = Side::new("o", &ctx.ours);
    let theirs = Side::new("r", &refdir);
    let spoof = json!({"macspoofchk": true});
    let nft_masq = json!({"ipMasqBackend": "nftables"});
    // One attachment each way first: the bridge, and the firewall tables that only a node's
    // first attachment creates.
    for s in [&ours, &theirs] {
        s.bridge_round(0, &spoof);
    }
    ours.bridge_round(0, &nft_masq);
    let iters = ctx.iters(20);
    let (mut oa, mut od, mut ra, mut rd) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut pa, mut pd, mut qa, mut qd) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut sa, mut sd, mut ta, mut td) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut na, mut nd) = (Vec::new(), Vec::new());
    for i in 1..=iters {
        let order: [(&Side, bool); 2] = if i % 2 == 0 {
            [(&ours, true), (&theirs, false)]
        } else {
            [(&theirs, false), (&ours, true)]
        };
        for (s, is_ours) in order {
            let (a, d) = s.bridge_round(i, &json!({}));
            let (x, y) = s.portmap_round(i, &json!({}));
            let (u, v) = s.bridge_round(i, &spoof);
            if is_ours {
                oa.push(a);
                od.push(d);
                pa.push(x);
                pd.push(y);
                sa.push(u);
                sd.push(v);
                let (a, d) = s.bridge_round(i, &nft_masq);
                na.push(a);
                nd.push(d);
            } else {
                ra.push(a);
                rd.push(d);
                qa.push(x);
                qd.push(y);
                ta.push(u);
                td.push(v);
            }
        }
    }
    first_adds(ctx, &refdir);
    // STATUS (what containerd asks of a 1.1.0 list whenever the kubelet asks it for its
    // status): ours only.
    for (case, plugin, conf) in [
        ("bridge+host-local STATUS", "bridge", ours.bridge.clone()),
        (
            "portmap STATUS",
            "portmap",
            json!({"name": NET, "type": "portmap"}),
        ),
        (
            "portmap STATUS (nftables)",
            "portmap",
            json!({"name": NET, "type": "portmap", "backend": "nftables"}),
        ),
    ] {
        let times: Vec<Duration> = (0..iters).map(|_| ours.status(plugin, &conf)).collect();
        ctx.record("plugins", case, Stats::of(&times), None, json!(null));
    }
    let _ = (&ours.node, &theirs.node);
    ctx.record(
        "plugins",
        "bridge+host-local ADD",
        Stats::of(&oa),
        Some(Stats::of(&ra)),
        json!(null),
    );
    ctx.record(
        "plugins",
        "bridge+host-local DEL",
        Stats::of(&od),
        Some(Stats::of(&rd)),
        json!(null),
    );
    record_rows(
        ctx,
        &[
            ("bridge+host-local ADD, macspoofchk", &sa, Some(&ta)),
            ("bridge+host-local DEL, macspoofchk", &sd, Some(&td)),
            ("bridge+host-local ADD, nftables masquerade", &na, None),
            ("bridge+host-local DEL, nftables masquerade", &nd, None),
        ],
    );
    ctx.record(
        "plugins",
        "portmap ADD (2 mappings)",
        Stats::of(&pa),
        Some(Stats::of(&qa)),
        json!(null),
    );
    ctx.record(
        "plugins",
        "portmap DEL (2 mappings)",
        Stats::of(&pd),
        Some(Stats::of(&qd)),
        json!(null),
    );
}

/// A node's first ADD, which also creates the bridge and the firewall tables and chains that
/// every later ADD finds in place: each round on a node of its own, alternating. `bridge` with
/// `macspoofchk` (iptables masquerading) and `portmap` (iptables) against the reference; ours
/// alone with the nftables backends (the reference's 1.1.1 has none).
fn first_adds(ctx: &mut Ctx, refdir: &Path) {
    let spoof = json!({"macspoofchk": true});
    let nft_spoof = json!({"macspoofchk": true, "ipMasqBackend": "nftables"});
    let nft = json!({"backend": "nftables"});
    let iters = ctx.iters(15);
    let ours_dir = ctx.ours.clone();
    let (mut ob, mut rb, mut op, mut rp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut nb, mut np) = (Vec::new(), Vec::new());
    for i in 0..iters {
        let mut sides = [(ours_dir.as_path(), "o"), (refdir, "r")];
        if i % 2 == 1 {
            sides.reverse();
        }
        for (bins, who) in sides {
            let side = Side::new(&format!("f{who}{i}"), bins);
            let (b, _) = side.bridge_round(i, &spoof);
            let (p, _) = side.portmap_round(i, &json!({}));
            if who == "o" {
                ob.push(b);
                op.push(p);
            } else {
                rb.push(b);
                rp.push(p);
            }
        }
        let side = Side::new(&format!("fn{i}"), &ours_dir);
        nb.push(side.bridge_round(i, &nft_spoof).0);
        np.push(side.portmap_round(i, &nft).0);
    }
    record_rows(
        ctx,
        &[
            (
                "bridge+host-local ADD, a node's first, macspoofchk",
                &ob,
                Some(&rb),
            ),
            ("portmap ADD (2 mappings), a node's first", &op, Some(&rp)),
            (
                "bridge+host-local ADD, a node's first, macspoofchk, nftables masquerade",
                &nb,
                None,
            ),
            (
                "portmap ADD (2 mappings), a node's first (nftables)",
                &np,
                None,
            ),
        ],
    );
}

/// A `plugins` row: case, our times, the reference's times (if it has the case).
type Row<'a> = (&'a str, &'a Vec<Duration>, Option<&'a Vec<Duration>>);

/// Records `plugins` rows.
fn record_rows(ctx: &mut Ctx, rows: &[Row<'_>]) {
    for (case, ours, theirs) in rows {
        ctx.record(
            "plugins",
            case,
            Stats::of(ours),
            theirs.map(|t| Stats::of(t)),
            json!(null),
        );
    }
}
