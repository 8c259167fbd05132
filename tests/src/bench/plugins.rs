//! Benchmark section `plugins`: each plugin alone, ours against the reference, alternating:
//! process start (`VERSION`, with peak RSS and binary size), `bridge` with `host-local`
//! (ADD and DEL of one container on a node with the bridge already up; also with
//! `macspoofchk`, and ours with the nftables masquerade backend, which the reference's 1.1.1
//! lacks), `portmap` alone (2 mappings, a `prevResult` naming the container address; no
//! bridge needed), CHECK of each between its ADD and DEL, a node's first ADD of each (on a
//! node of its own every round), and ours' STATUS and GC (the reference's 1.1.1 has neither).

use super::chain::{NET, bridge_conf, mappings, plugin_dir};
use super::{ATTACHED, Ctx, SETTLE, Stats, Worker, cni_env, exec, median_rss, peak_rss_kib};
use cni_testkit::{Netns, Node, PluginOutput, TempDir};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn version(bin: &Path) -> Duration {
    let env = vec![("CNI_COMMAND".to_string(), "VERSION".to_string())];
    let (out, d) = exec(bin, &env, "");
    assert!(out.ok(), "{} VERSION: {out}", bin.display());
    d
}

/// The times of one attachment's ADD, CHECK and DEL (CHECK `None` where it failed: ours
/// never may, the reference's can).
struct Round {
    add: Duration,
    check: Option<Duration>,
    del: Duration,
}

/// CHECK's time if it succeeded; ours must.
fn checked(ours: bool, plugin: &str, out: &PluginOutput, d: Duration) -> Option<Duration> {
    assert!(out.ok() || !ours, "{plugin} CHECK: {out}");
    out.ok().then_some(d)
}

/// ADD, CHECK and DEL times of a case, round after round.
#[derive(Default)]
struct Times {
    add: Vec<Duration>,
    check: Vec<Duration>,
    del: Vec<Duration>,
}

impl Times {
    fn push(&mut self, r: Round) {
        self.add.push(r.add);
        self.check.extend(r.check);
        self.del.push(r.del);
    }
}

struct Side {
    /// Our plugins (not the reference's).
    ours: bool,
    dir: TempDir,
    _data: TempDir,
    node: Node,
    worker: Worker,
    sandbox: Netns,
    bridge: Value,
}

impl Side {
    fn new(label: &str, bins: &Path, ours: bool) -> Side {
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
            ours,
            dir: plugin_dir(bins, &format!("bench-pl-bin-{label}")),
            bridge: bridge_conf(data.path()),
            _data: data,
            node,
            worker,
            sandbox: Netns::new(&format!("bpl{label}c")),
        }
    }

    /// One ADD, CHECK and DEL of `bridge` with `extra` merged into its configuration.
    fn bridge_round(&self, i: usize, extra: &Value) -> Round {
        let dir: PathBuf = self.dir.path().to_path_buf();
        let mut conf = self.bridge.clone();
        if let (Some(c), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let netns = self.sandbox.path().display().to_string();
        let ours = self.ours;
        self.worker.call(move || {
            let id = format!("b{i}");
            let b = dir.join("bridge");
            let (out, a) = exec(&b, &cni_env("ADD", &id, &netns, &dir), &conf.to_string());
            assert!(out.ok(), "bridge ADD: {out}");
            let mut del = conf.clone();
            del["prevResult"] = out.json();
            let (out, c) = exec(&b, &cni_env("CHECK", &id, &netns, &dir), &del.to_string());
            let c = checked(ours, "bridge", &out, c);
            std::thread::sleep(ATTACHED);
            let (out, d) = exec(&b, &cni_env("DEL", &id, &netns, &dir), &del.to_string());
            assert!(out.ok(), "bridge DEL: {out}");
            std::thread::sleep(SETTLE);
            Round {
                add: a,
                check: c,
                del: d,
            }
        })
    }

    /// One STATUS or GC of `plugin` (CNI 1.1; the reference's 1.1.1 has neither) with `conf`;
    /// GC with an empty list of valid attachments (nothing of this network is attached).
    fn verb11(&self, verb: &'static str, plugin: &str, conf: &Value) -> Duration {
        let dir: PathBuf = self.dir.path().to_path_buf();
        let mut conf = conf.clone();
        conf["cniVersion"] = json!("1.1.0");
        if verb == "GC" {
            conf["cni.dev/valid-attachments"] = json!([]);
        }
        let bin = dir.join(plugin);
        self.worker.call(move || {
            let env = vec![
                ("CNI_COMMAND".to_string(), verb.to_string()),
                ("CNI_PATH".to_string(), dir.display().to_string()),
            ];
            let (out, d) = exec(&bin, &env, &conf.to_string());
            assert!(out.ok(), "{} {verb}: {out}", bin.display());
            d
        })
    }

    /// One ADD, CHECK and DEL of `portmap` with `extra` merged into its configuration.
    fn portmap_round(&self, i: usize, extra: &Value) -> Round {
        let dir: PathBuf = self.dir.path().to_path_buf();
        let netns = self.sandbox.path().display().to_string();
        let extra = extra.clone();
        let ours = self.ours;
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
            let (out, c) = exec(&pm, &cni_env("CHECK", &id, &netns, &dir), &conf);
            let c = checked(ours, "portmap", &out, c);
            let (out, d) = exec(&pm, &cni_env("DEL", &id, &netns, &dir), &conf);
            assert!(out.ok(), "portmap DEL: {out}");
            std::thread::sleep(SETTLE);
            Round {
                add: a,
                check: c,
                del: d,
            }
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
    let ours = Side::new("o", &ctx.ours, true);
    let theirs = Side::new("r", &refdir, false);
    let spoof = json!({"macspoofchk": true});
    let nft_masq = json!({"ipMasqBackend": "nftables"});
    // One attachment each way first: the bridge, and the firewall tables that only a node's
    // first attachment creates.
    for s in [&ours, &theirs] {
        s.bridge_round(0, &spoof);
    }
    ours.bridge_round(0, &nft_masq);
    let iters = ctx.iters(20);
    // bridge, portmap, bridge with macspoofchk (ours, the reference's), and ours with the
    // nftables masquerade.
    let [mut ob, mut rb, mut op, mut rp, mut os, mut rs, mut on] =
        std::array::from_fn::<Times, 7, _>(|_| Times::default());
    for i in 1..=iters {
        let order: [(&Side, bool); 2] = if i % 2 == 0 {
            [(&ours, true), (&theirs, false)]
        } else {
            [(&theirs, false), (&ours, true)]
        };
        for (s, is_ours) in order {
            let (b, p, m) = (
                s.bridge_round(i, &json!({})),
                s.portmap_round(i, &json!({})),
                s.bridge_round(i, &spoof),
            );
            let (bt, pt, mt): (&mut Times, &mut Times, &mut Times) = if is_ours {
                (&mut ob, &mut op, &mut os)
            } else {
                (&mut rb, &mut rp, &mut rs)
            };
            bt.push(b);
            pt.push(p);
            mt.push(m);
            if is_ours {
                on.push(s.bridge_round(i, &nft_masq));
            }
        }
    }
    first_adds(ctx, &refdir);
    // STATUS (what containerd asks of a 1.1.0 list whenever the kubelet asks it for its
    // status) and GC with nothing of the network attached (what a runtime's periodic GC
    // reads): ours only.
    let portmap = json!({"name": NET, "type": "portmap"});
    let portmap_nft = json!({"name": NET, "type": "portmap", "backend": "nftables"});
    for verb in ["STATUS", "GC"] {
        for (case, plugin, conf) in [
            ("bridge+host-local", "bridge", &ours.bridge),
            ("portmap", "portmap", &portmap),
            ("portmap", "portmap", &portmap_nft),
        ] {
            let nft = if conf.get("backend").is_some() {
                " (nftables)"
            } else {
                ""
            };
            let times: Vec<Duration> = (0..iters)
                .map(|_| ours.verb11(verb, plugin, conf))
                .collect();
            let case = format!("{case} {verb}{nft}");
            ctx.record("plugins", &case, Stats::of(&times), None, json!(null));
        }
    }
    let _ = (&ours.node, &theirs.node);
    // The reference's CHECK where it worked in every round (its portmap's fails for an
    // IPv4-only container: it looks for the IPv6 chain).
    let full = |t: &Times| (t.check.len() == t.add.len()).then_some(t.check.clone());
    for (t, what) in [
        (&rb, "bridge"),
        (&rs, "bridge (macspoofchk)"),
        (&rp, "portmap"),
    ] {
        if full(t).is_none() {
            ctx.notes.push(format!(
                "plugins: the reference's {what} CHECK failed in {} of {} rounds; its row is left out",
                t.add.len() - t.check.len(),
                t.add.len()
            ));
        }
    }
    let (rbc, rsc, rpc) = (full(&rb), full(&rs), full(&rp));
    record_rows(
        ctx,
        &[
            ("bridge+host-local ADD", &ob.add, Some(&rb.add)),
            ("bridge+host-local CHECK", &ob.check, rbc.as_ref()),
            ("bridge+host-local DEL", &ob.del, Some(&rb.del)),
            ("bridge+host-local ADD, macspoofchk", &os.add, Some(&rs.add)),
            (
                "bridge+host-local CHECK, macspoofchk",
                &os.check,
                rsc.as_ref(),
            ),
            ("bridge+host-local DEL, macspoofchk", &os.del, Some(&rs.del)),
            ("bridge+host-local ADD, nftables masquerade", &on.add, None),
            (
                "bridge+host-local CHECK, nftables masquerade",
                &on.check,
                None,
            ),
            ("bridge+host-local DEL, nftables masquerade", &on.del, None),
            ("portmap ADD (2 mappings)", &op.add, Some(&rp.add)),
            ("portmap CHECK (2 mappings)", &op.check, rpc.as_ref()),
            ("portmap DEL (2 mappings)", &op.del, Some(&rp.del)),
        ],
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
            let side = Side::new(&format!("f{who}{i}"), bins, who == "o");
            let b = side.bridge_round(i, &spoof).add;
            let p = side.portmap_round(i, &json!({})).add;
            if who == "o" {
                ob.push(b);
                op.push(p);
            } else {
                rb.push(b);
                rp.push(p);
            }
        }
        let side = Side::new(&format!("fn{i}"), &ours_dir, true);
        nb.push(side.bridge_round(i, &nft_spoof).add);
        np.push(side.portmap_round(i, &nft).add);
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
