//! portmap end-to-end reachability: bridge + host-local + portmap in a node namespace, a
//! server in a container, and clients on every path a user expects, TCP and UDP, IPv4 and
//! IPv6, with both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod portmap_support;

use cni_testkit::require_root;
use portmap_support::*;
use serde_json::json;

const HP: u16 = 8080;
const CP: u16 = 80;

fn reachability(backend: &'static str) {
    let mut w = World::new(&format!("reach{}", &backend[..3]), &Opts::new(backend));
    // A container attached first: A's ADD then finds the shared chains (iptables) or the
    // table (nftables) in place, and takes the path of every later ADD on a node.
    let (_c, att_c) = w.container("ctrc", maps(&[(HP + 1, CP, "tcp")]));
    w.add(&att_c);
    let (a, att_a) = w.container("ctra", maps(&[(HP, CP, "tcp"), (HP, CP, "udp")]));
    let (b, att_b) = w.container("ctrb", json!([]));
    let res_a = w.add(&att_a);
    let res_b = w.add(&att_b);
    let (a4, a6) = World::ips(&res_a);
    let a6 = a6.expect("container A has IPv6");
    let (_b4, _) = World::ips(&res_b);
    w.rt.check(&att_a).unwrap_or_else(|e| panic!("CHECK: {e}"));
    // route_localnet only on the bridge.
    let rl = |ifname: &str| {
        w.node
            .exec(&[
                "cat",
                &format!("/proc/sys/net/ipv4/conf/{ifname}/route_localnet"),
            ])
            .trim()
            .to_string()
    };
    assert_eq!(rl("cni0"), "1");
    assert_eq!(rl("eth0n"), "0");
    assert_eq!(rl("all"), "0");

    w.settle();
    let _srv = Server::start(w.ns(a), CP);
    let mut failures = Vec::new();
    for proto in ["tcp", "udp"] {
        // (what, from, address, expected peer if deterministic)
        let paths: Vec<(&str, &cni_testkit::Netns, &str, Option<&str>)> = vec![
            ("external host → node IPv4", &w.ext, NODE4, Some(EXT4)),
            ("external host → node IPv6", &w.ext, NODE6, Some(EXT6)),
            ("node → own IPv4", &w.node.ns, NODE4, Some(NODE4)),
            ("node → own IPv6", &w.node.ns, NODE6, Some(NODE6)),
            ("node → 127.0.0.1", &w.node.ns, "127.0.0.1", Some(GW4)),
            ("other container → node IPv4", w.ns(b), NODE4, Some(GW4)),
            ("other container → node IPv6", w.ns(b), NODE6, None),
            ("other container → bridge IPv4", w.ns(b), GW4, Some(GW4)),
            ("other container → bridge IPv6", w.ns(b), GW6, None),
            (
                "hairpin IPv4 (container → node → itself)",
                w.ns(a),
                NODE4,
                Some(GW4),
            ),
            ("hairpin IPv6", w.ns(a), NODE6, None),
            ("hairpin IPv4 via bridge address", w.ns(a), GW4, Some(GW4)),
        ];
        for (what, from, addr, want_peer) in paths {
            match dial(from, proto, addr, HP) {
                Some(reply) => {
                    if let Some(p) = want_peer
                        && peer(&reply) != p
                    {
                        failures.push(format!(
                            "{backend} {proto} {what}: peer {} (want {p})",
                            peer(&reply)
                        ));
                    }
                }
                None => failures.push(format!("{backend} {proto} {what}: no answer")),
            }
        }
        // Traffic not addressed to the node is never hijacked (CVE-2025-67499 class): the
        // external host dialling the container's real address on the host port gets nothing
        // (the container listens on CP, not HP).
        w.ext
            .ip(&["route", "replace", "10.77.0.0/24", "via", NODE4]);
        if dial(&w.ext, proto, &a4, HP).is_some() {
            failures.push(format!(
                "{backend} {proto}: traffic to {a4}:{HP} was DNATed"
            ));
        }
        let _ = &a6;
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));

    // DEL: nothing answers on the host port any more, and the rules are gone.
    w.rt.del(&att_a).unwrap_or_else(|e| panic!("DEL: {e}"));
    for proto in ["tcp", "udp"] {
        assert!(
            dial(&w.ext, proto, NODE4, HP).is_none(),
            "{proto} still mapped"
        );
        assert!(
            dial(&w.ext, proto, NODE6, HP).is_none(),
            "{proto} v6 still mapped"
        );
    }
    w.rt.del(&att_c).unwrap_or_else(|e| panic!("DEL: {e}"));
    let state = w.firewall_state();
    assert!(!state.contains("ctra"), "{state}");
    assert!(!state.contains("CNI-DN-"), "{state}");
    w.rt.del(&att_b).unwrap();
}

#[test]
fn reachability_iptables() {
    require_root!();
    if !have_delegates() {
        eprintln!("skipped: reference bridge/host-local not installed");
        return;
    }
    reachability("iptables");
}

#[test]
fn reachability_nftables() {
    require_root!();
    if !have_delegates() {
        eprintln!("skipped: reference bridge/host-local not installed");
        return;
    }
    reachability("nftables");
}
