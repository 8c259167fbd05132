//! Differential tests against the reference `bridge` (Debian's `/usr/lib/cni/bridge`, 1.1.1,
//! so `cniVersion` ≤ 1.0.0 and iptables masquerading): the same config gives the same result
//! shape (names and MACs redacted), the same addresses and routes in the sandbox, the same
//! gateway addresses and the same masquerade rules; state created by the reference is
//! removed by our DEL (even where the reference itself leaks it) and the other way round.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bridge_support;

use bridge_support::*;
use cni_testkit::{Attachment, Netns, Runtime, require_root};
use serde_json::{Value, json};

fn reference_available() -> bool {
    if cni_testkit::reference_dir().is_none() {
        eprintln!("skipped: the reference plugins are not installed in /usr/lib/cni");
        return false;
    }
    true
}

/// `iptables-save -t nat` / `ip6tables-save -t nat` without comments and counters.
fn nat(ns: &Netns, v6: bool) -> String {
    let tool = if v6 {
        "ip6tables-save"
    } else {
        "iptables-save"
    };
    ns.exec(&[tool, "-t", "nat"])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            if l.starts_with(':') {
                l.rsplit_once(' ').map(|(a, _)| a).unwrap_or(l).to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Pair {
    ours: World,
    reference: World,
}

fn add_both(p: &Pair, conf: &dyn Fn(&World) -> Value, id: &str) -> (Value, Value, Netns, Netns) {
    let c_ours = p.ours.node.container("dfo");
    let c_ref = p.reference.node.container("dfr");
    let r_ours = p
        .ours
        .runtime(conf(&p.ours))
        .add(&Attachment::new(id, &c_ours.path()))
        .unwrap_or_else(|e| panic!("ours: {e}"));
    let r_ref = p
        .reference
        .runtime(conf(&p.reference))
        .add(&Attachment::new(id, &c_ref.path()))
        .unwrap_or_else(|e| panic!("reference: {e}"));
    (r_ours, r_ref, c_ours, c_ref)
}

/// The sandbox path differs between the two sides; make it comparable.
fn unsandbox(mut v: Value) -> Value {
    if let Some(ifs) = v.get_mut("interfaces").and_then(Value::as_array_mut) {
        for i in ifs {
            if i.get("sandbox").is_some() {
                i["sandbox"] = json!("<sandbox>");
            }
        }
    }
    v
}

#[test]
fn same_config_same_result_addresses_routes_and_rules() {
    require_root!();
    if !reference_available() {
        return;
    }
    for version in ["1.0.0", "0.4.0", "0.3.1"] {
        let p = Pair {
            ours: World::new("dfo"),
            reference: World::reference("dfr"),
        };
        let conf = |w: &World| {
            let mut c = w.conf(json!({"isDefaultGateway": true, "hairpinMode": true}));
            c["cniVersion"] = json!(version);
            c["ipam"]["routes"] = json!([{"dst": "10.99.0.0/16"}]);
            c
        };
        let (ro, rr, co, cr) = add_both(&p, &conf, "diff1");
        assert_eq!(
            unsandbox(redact(ro.clone())),
            unsandbox(redact(rr.clone())),
            "{version}: results differ\nours: {ro}\nreference: {rr}"
        );
        assert_eq!(addrs(&co, "eth0"), addrs(&cr, "eth0"), "{version}");
        assert_eq!(routes(&co), routes(&cr), "{version}");
        assert_eq!(
            addrs(&p.ours.node, "cni0"),
            addrs(&p.reference.node, "cni0"),
            "{version}"
        );
        assert_eq!(
            nat(&p.ours.node, false),
            nat(&p.reference.node, false),
            "{version}: iptables"
        );
        assert_eq!(
            nat(&p.ours.node, true),
            nat(&p.reference.node, true),
            "{version}: ip6tables"
        );
        for (w, c) in [(&p.ours, &co), (&p.reference, &cr)] {
            assert!(link_details(&w.node, &hairpin_veth(w)).contains("hairpin on"));
            assert_eq!(sysctl(c, "net/ipv4/conf/eth0/arp_notify"), "1");
        }
        // Each CHECKs the other's work: our CHECK on the reference's ADD and the reference's
        // CHECK on ours (CHECK exists from 0.4.0).
        if version != "0.3.1" {
            let att_r = Attachment::new("diff1", &cr.path());
            let ours_on_ref = Runtime::new(
                Some(&p.reference.node),
                conf(&p.reference),
                vec![p.ours.bin.path().to_path_buf()],
            );
            ours_on_ref.prime(&att_r, rr.clone());
            ours_on_ref
                .check(&att_r)
                .unwrap_or_else(|e| panic!("{version}: our CHECK of the reference's ADD: {e}"));
            // The reference's CHECK gives the same verdict on our ADD as on its own (1.1.1
            // rejects routes whose gateway it filled in itself, on both).
            let att_o = Attachment::new("diff1", &co.path());
            let ref_on_ours = Runtime::new(
                Some(&p.ours.node),
                conf(&p.ours),
                vec![p.reference.bin.path().to_path_buf()],
            );
            ref_on_ours.prime(&att_o, ro.clone());
            let ref_on_ref = p.reference.runtime(conf(&p.reference));
            ref_on_ref.prime(&att_r, rr.clone());
            let verdict = |r: Result<(), cni_testkit::PluginOutput>| r.map_err(|e| e.error_msg());
            assert_eq!(
                verdict(ref_on_ours.check(&att_o)),
                verdict(ref_on_ref.check(&att_r)),
                "{version}: the reference's CHECK judges our ADD differently from its own"
            );
        }
    }
}

fn hairpin_veth(w: &World) -> String {
    w.node
        .links()
        .into_iter()
        .find(|l| l.starts_with("veth"))
        .expect("a host veth")
}

#[test]
fn l2_mode_matches_the_reference() {
    require_root!();
    if !reference_available() {
        return;
    }
    let p = Pair {
        ours: World::new("dl2o"),
        reference: World::reference("dl2r"),
    };
    let conf = |w: &World| w.conf(json!({"ipam": {}, "ipMasq": false, "isGateway": false}));
    let (ro, rr, co, cr) = add_both(&p, &conf, "l2");
    assert_eq!(unsandbox(redact(ro)), unsandbox(redact(rr)));
    assert_eq!(addrs(&co, "eth0"), addrs(&cr, "eth0"));
    assert_eq!(
        co.ip(&["-o", "link", "show", "eth0"]).contains(",UP"),
        cr.ip(&["-o", "link", "show", "eth0"]).contains(",UP")
    );
}

/// The runtimes of one node: ours and the reference's, sharing the config and IPAM dir.
fn both(w: &World, refdir: &cni_testkit::TempDir, conf: &Value) -> (Runtime, Runtime) {
    (
        w.runtime(conf.clone()),
        Runtime::new(
            Some(&w.node),
            conf.clone(),
            vec![refdir.path().to_path_buf()],
        ),
    )
}

#[test]
fn each_removes_what_the_other_created() {
    require_root!();
    if !reference_available() {
        return;
    }
    let w = World::new("dx");
    let refdir = cni_dir(true);
    let conf = w.conf(json!({}));
    let (ours, reference) = both(&w, &refdir, &conf);
    let warm = w.node.container("dxwarm");
    let watt = Attachment::new("warm", &warm.path());
    ours.add(&watt).unwrap();
    ours.del(&watt).unwrap();
    let before = w.snapshot();

    // The reference ADDs, we DEL (carried prevResult, as after an upgrade).
    let c = w.node.container("dx1");
    let att = Attachment::new("cross-1", &c.path());
    let r = reference.add(&att).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(w.snapshot(), before);
    ours.prime(&att, r);
    ours.del(&att).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.snapshot(), before, "our DEL of the reference's ADD");

    // We ADD, the reference DELs (a downgrade).
    let r = ours.add(&att).unwrap_or_else(|e| panic!("{e}"));
    reference.prime(&att, r);
    reference.del(&att).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.snapshot(), before, "the reference's DEL of our ADD");

    // The reference leaks its masquerade rules when the sandbox is gone (plugins#810);
    // our DEL afterwards removes them.
    let c2 = w.node.container("dx2");
    let att2 = Attachment::new("cross-2", &c2.path());
    reference.add(&att2).unwrap_or_else(|e| panic!("{e}"));
    let hv: Vec<String> = w
        .node
        .links()
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect();
    drop(c2);
    assert!(wait_links_gone(&w.node, &hv, 10));
    let mut gone = att2.clone();
    gone.netns = String::new();
    reference.del(&gone).unwrap_or_else(|e| panic!("{e}"));
    let leaked = w.snapshot();
    assert_ne!(
        leaked.iptables, before.iptables,
        "the reference is expected to leak here"
    );
    ours.forget(&gone);
    ours.del(&gone).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.snapshot(), before, "our DEL cleans the reference's leak");
}
