//! GC end to end and after a reboot.
//!
//! * Containers are added through the bridge + host-local + portmap chain (masquerading and
//!   published ports, on each firewall backend); some are then "lost" (their sandboxes vanish
//!   and the runtime never sends DEL), and GC runs with the valid list of the others. Every
//!   trace of the lost ones (reservations, masquerade and port-mapping rules, veths) must be
//!   gone and the survivors untouched: the node must be identical, rule for rule and file for
//!   file, to a twin node on which only the survivors were ever added (addresses are pinned
//!   with `CNI_ARGS IP=` so that both nodes allocate the same ones), and the survivors must
//!   still pass CHECK.
//! * Reboot: with the data directory on persistent storage, a node namespace that disappears
//!   with all its containers leaves their reservations behind, and the range runs dry; a GC
//!   from the restarted runtime (which knows no container) gives them back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hardening_support;

use cni_testkit::{Attachment, Netns, Runtime, TempDir, require_root};
use hardening_support::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// Replaces the random host veth names (`veth` + 8 hex digits) so that two nodes compare.
fn normalized(mut s: NodeState) -> NodeState {
    for l in s.links.iter_mut() {
        if l.starts_with("veth") && l.len() == 12 {
            *l = "veth*".into();
        }
    }
    s.links.sort();
    s.without_cursors()
}

fn attachment(id: &str, ctr: &Netns, n: usize, subnet_prefix: &str) -> Attachment {
    let mut a = Attachment::new(id, &ctr.path()).with_caps(json!({"portMappings": [
        {"hostPort": 32000 + n, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 32000 + n, "containerPort": 53, "protocol": "udp"}]}));
    a.cni_args = format!("IgnoreUnknown=1;IP={subnet_prefix}{}", 10 + n);
    a
}

fn gc_end_to_end(backend: &str, label: &str, prefix: &str) {
    let started = Instant::now();
    let subnet = format!("{prefix}0/24");
    let ids: Vec<String> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                format!("hgc-keep-{i}")
            } else {
                format!("hgc-lost-{i}")
            }
        })
        .collect();

    // Node A: everything added, the odd ones lost, then GC.
    let a = World::new(&format!("{label}a"));
    let rt_a = a.runtime(a.chain("hgcnet", "hgcbr0", &subnet, backend));
    let mut ctrs: Vec<Option<Netns>> = Vec::new();
    let mut atts = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let c = a.node.container(&format!("hgcc{n}"));
        let att = attachment(id, &c, n, prefix);
        rt_a.add(&att).unwrap_or_else(|e| panic!("ADD {id}: {e}"));
        atts.push(att);
        ctrs.push(Some(c));
    }
    let full = a.snapshot();
    let rules = |s: &NodeState| format!("{}\n{}\n{}", s.iptables, s.ip6tables, s.nft);
    let lost: Vec<&String> = ids.iter().filter(|i| i.contains("lost")).collect();
    assert!(
        lost.iter().all(|id| rules(&full).contains(id.as_str())),
        "the lost containers' rules must exist before GC:\n{}",
        rules(&full)
    );
    // Lose the odd ones: their sandboxes go away (the kernel removes their veths), no DEL.
    let mut lost_veths = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        if id.contains("lost") {
            let r = rt_a.cached(&atts[n]).unwrap();
            lost_veths.push(r["interfaces"][1]["name"].as_str().unwrap().to_string());
            rt_a.forget(&atts[n]);
            ctrs[n] = None;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.node.links().iter().any(|l| lost_veths.contains(l)) {
        assert!(Instant::now() < deadline, "lost veths did not go away");
        std::thread::sleep(Duration::from_millis(20));
    }
    let valid: Vec<(&str, &str)> = ids
        .iter()
        .filter(|i| i.contains("keep"))
        .map(|i| (i.as_str(), "eth0"))
        .collect();
    rt_a.gc(Some(&valid))
        .unwrap_or_else(|e| panic!("GC failed: {e:?}"));
    let after_gc = a.snapshot();
    for id in &lost {
        assert!(
            !rules(&after_gc).contains(id.as_str()),
            "{id} still has rules after GC:\n{}",
            rules(&after_gc)
        );
        assert!(
            !reservations(&a.data())
                .values()
                .any(|v| v.contains(id.as_str())),
            "{id} still has a reservation"
        );
    }
    for (n, id) in ids.iter().enumerate() {
        if id.contains("keep") {
            rt_a.check(&atts[n])
                .unwrap_or_else(|e| panic!("CHECK of survivor {id} after GC: {e}"));
        }
    }

    // Node B: only the survivors, ever.
    let b = World::new(&format!("{label}b"));
    let rt_b = b.runtime(b.chain("hgcnet", "hgcbr0", &subnet, backend));
    let mut b_ctrs = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        if id.contains("keep") {
            let c = b.node.container(&format!("hgcb{n}"));
            let att = attachment(id, &c, n, prefix);
            rt_b.add(&att)
                .unwrap_or_else(|e| panic!("twin ADD {id}: {e}"));
            b_ctrs.push(c);
        }
    }
    let twin = normalized(b.snapshot());
    let mut got = normalized(after_gc);
    // The data dirs differ only by their location.
    assert_eq!(
        got.data, twin.data,
        "reservations after GC differ from the twin's"
    );
    got.data = twin.data.clone();
    assert_same(
        &twin,
        &got,
        &format!("{backend}: node after GC vs. a node with only the survivors"),
    );

    // The survivors still work and are removed by DEL as usual.
    for (n, id) in ids.iter().enumerate() {
        if id.contains("keep") {
            rt_a.del(&atts[n])
                .unwrap_or_else(|e| panic!("DEL {id}: {e}"));
        }
    }
    assert!(reservations(&a.data()).is_empty());
    eprintln!(
        "gc {backend}: end to end in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn gc_removes_every_trace_of_lost_containers_iptables() {
    require_root!();
    gc_end_to_end("iptables", "hgci", "10.72.0.");
}

#[test]
fn gc_removes_every_trace_of_lost_containers_nftables() {
    require_root!();
    gc_end_to_end("nftables", "hgcn", "10.73.0.");
}

/// Reboot: a persistent data dir outlives the node and its containers; the reservations are
/// recovered by the restarted runtime's GC, and only by it (an absent list removes nothing).
#[test]
fn reservations_of_containers_gone_with_a_reboot_are_recovered_by_gc() {
    require_root!();
    // A /29 with the gateway .1: exactly five addresses to give.
    let persistent = TempDir::new("hreboot-data");
    let conflist = json!({"cniVersion": "1.1.0", "name": "hreboot", "plugins": [
        {"type": "bridge", "bridge": "hrb0", "isGateway": true, "ipMasq": true,
         "ipam": {"type": "host-local", "dataDir": persistent.path(),
                  "ranges": [[{"subnet": "10.74.0.0/29"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": true}}]});
    let boot1 = World::new("hrb1");
    let rt1 = Runtime::new(
        Some(&boot1.node),
        conflist.clone(),
        vec![boot1.bin.path().to_path_buf()],
    );
    let old: Vec<Netns> = (0..5)
        .map(|i| boot1.node.container(&format!("hro{i}")))
        .collect();
    for (i, c) in old.iter().enumerate() {
        rt1.add(&Attachment::new(&format!("hreboot-old-{i}"), &c.path()))
            .unwrap_or_else(|e| panic!("boot 1 ADD {i}: {e}"));
    }
    assert_eq!(reservations(persistent.path()).len(), 5);
    // The reboot: the node and every container vanish; the data dir stays.
    drop(old);
    drop(rt1);
    drop(boot1);

    let boot2 = World::new("hrb2");
    let rt2 = Runtime::new(
        Some(&boot2.node),
        conflist.clone(),
        vec![boot2.bin.path().to_path_buf()],
    );
    let fresh: Vec<Netns> = (0..5)
        .map(|i| boot2.node.container(&format!("hrn{i}")))
        .collect();
    let att = |i: usize| Attachment::new(&format!("hreboot-new-{i}"), &fresh[i].path());
    // The leak the reference is known for: the range is exhausted by ghosts.
    let e = rt2.add(&att(0)).unwrap_err();
    assert!(
        e.error_msg().contains("no IP addresses available"),
        "expected exhaustion, got {e}"
    );
    // GC without a list is "no information": nothing is removed.
    rt2.gc(None)
        .unwrap_or_else(|e| panic!("GC without a list: {e:?}"));
    assert_eq!(reservations(persistent.path()).len(), 5);
    // The restarted runtime knows no container: its GC frees all five.
    rt2.gc(Some(&[])).unwrap_or_else(|e| panic!("GC: {e:?}"));
    assert!(reservations(persistent.path()).is_empty());
    for i in 0..5 {
        rt2.add(&att(i))
            .unwrap_or_else(|e| panic!("boot 2 ADD {i}: {e}"));
    }
    // A GC listing the new containers keeps them all.
    let ids: Vec<String> = (0..5).map(|i| format!("hreboot-new-{i}")).collect();
    let valid: Vec<(&str, &str)> = ids.iter().map(|i| (i.as_str(), "eth0")).collect();
    rt2.gc(Some(&valid)).unwrap_or_else(|e| panic!("GC: {e:?}"));
    assert_eq!(reservations(persistent.path()).len(), 5);
    for i in 0..5 {
        rt2.check(&att(i))
            .unwrap_or_else(|e| panic!("CHECK {i}: {e}"));
        rt2.del(&att(i)).unwrap_or_else(|e| panic!("DEL {i}: {e}"));
    }
    assert!(reservations(persistent.path()).is_empty());
}
