//! portmap end-to-end behaviour: hostIP filtering, masqAll, externalSetMarkChain, conditions,
//! CHECK after ADD and after tampering, DEL in degraded cases, rollback of a failed ADD, GC,
//! STATUS, stale UDP conntrack, config errors — each with both backends where it applies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod portmap_support;

use cni_testkit::{IPTABLES_TOOLS, LoggingTools, require_root};
use portmap_support::*;
use serde_json::{Value, json};

macro_rules! need_world {
    () => {
        require_root!();
        if !have_delegates() {
            eprintln!("skipped: bridge/host-local delegates not installed");
            return;
        }
    };
}

const BACKENDS: [&str; 2] = ["iptables", "nftables"];

fn short(b: &str) -> &str {
    &b[..3]
}

#[test]
fn host_ip_filtering() {
    need_world!();
    for backend in BACKENDS {
        let mut w = World::new(&format!("hostip{}", short(backend)), &Opts::new(backend));
        let m = json!([
            {"hostPort": 9001, "containerPort": 80, "protocol": "tcp", "hostIP": NODE4},
            {"hostPort": 9002, "containerPort": 80, "protocol": "udp", "hostIP": NODE6},
            {"hostPort": 9003, "containerPort": 80, "protocol": "tcp", "hostIP": "0.0.0.0"},
            {"hostPort": 9004, "containerPort": 80, "protocol": "tcp", "hostIP": "::"},
        ]);
        let (a, att) = w.container("hip", m);
        w.add(&att);
        w.rt.check(&att)
            .unwrap_or_else(|e| panic!("{backend} CHECK: {e}"));
        w.settle();
        let _s = Server::start(w.ns(a), 80);
        let ext = &w.ext;
        // 9001: only on NODE4.
        assert!(
            dial(ext, "tcp", NODE4, 9001).is_some(),
            "{backend} 9001 via NODE4"
        );
        assert!(
            dial(ext, "tcp", NODE4_B, 9001).is_none(),
            "{backend} 9001 via NODE4_B"
        );
        assert!(
            dial(ext, "tcp", NODE6, 9001).is_none(),
            "{backend} 9001 via v6"
        );
        // 9002: only IPv6 NODE6.
        assert!(
            dial(ext, "udp", NODE6, 9002).is_some(),
            "{backend} 9002 via NODE6"
        );
        assert!(
            dial(ext, "udp", NODE4, 9002).is_none(),
            "{backend} 9002 via v4"
        );
        // 9003 (0.0.0.0): every IPv4 address, no IPv6.
        assert!(dial(ext, "tcp", NODE4, 9003).is_some(), "{backend} 9003");
        assert!(
            dial(ext, "tcp", NODE4_B, 9003).is_some(),
            "{backend} 9003 B"
        );
        assert!(dial(ext, "tcp", NODE6, 9003).is_none(), "{backend} 9003 v6");
        // 9004 (::): every IPv6 address, no IPv4.
        assert!(dial(ext, "tcp", NODE6, 9004).is_some(), "{backend} 9004");
        assert!(dial(ext, "tcp", NODE4, 9004).is_none(), "{backend} 9004 v4");
        w.rt.del(&att).unwrap();
    }
}

#[test]
fn masq_all_masquerades_external_clients() {
    need_world!();
    for backend in BACKENDS {
        for masq_all in [false, true] {
            let mut o = Opts::new(backend);
            o.portmap = json!({"masqAll": masq_all});
            let mut w = World::new(&format!("masq{}{}", short(backend), masq_all as u8), &o);
            let (a, att) = w.container("masq", maps(&[(9100, 80, "tcp"), (9100, 80, "udp")]));
            w.add(&att);
            w.rt.check(&att)
                .unwrap_or_else(|e| panic!("{backend} CHECK: {e}"));
            w.settle();
            let _s = Server::start(w.ns(a), 80);
            for (proto, addr, ext_ip) in [
                ("tcp", NODE4, EXT4),
                ("udp", NODE4, EXT4),
                ("tcp", NODE6, EXT6),
            ] {
                let r = dial(&w.ext, proto, addr, 9100)
                    .unwrap_or_else(|| panic!("{backend} masqAll={masq_all} {proto} {addr}"));
                if masq_all {
                    assert_ne!(peer(&r), ext_ip, "{backend} {proto}: not masqueraded: {r}");
                    assert!(
                        peer(&r) == GW4 || peer(&r).starts_with("fd00:77:"),
                        "{backend} {proto}: {r}"
                    );
                } else {
                    assert_eq!(peer(&r), ext_ip, "{backend} {proto}: {r}");
                }
            }
            w.rt.del(&att).unwrap();
        }
    }
}

#[test]
fn external_set_mark_chain() {
    need_world!();
    let mut o = Opts::new("iptables");
    o.portmap = json!({"externalSetMarkChain": "PLZ-SET-MARK"});
    let mut w = World::new("extmark", &o);
    // The external chain belongs to someone else (kube-proxy's KUBE-MARK-MASQ style): it
    // marks, and that someone masquerades marked packets.
    for v6 in [false, true] {
        let t = if v6 { "ip6tables" } else { "iptables" };
        w.node.exec(&[t, "-t", "nat", "-N", "PLZ-SET-MARK"]);
        w.node.exec(&[
            t,
            "-t",
            "nat",
            "-A",
            "PLZ-SET-MARK",
            "-j",
            "MARK",
            "--set-xmark",
            "0x4000/0x4000",
        ]);
        w.node.exec(&[
            t,
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-m",
            "mark",
            "--mark",
            "0x4000/0x4000",
            "-j",
            "MASQUERADE",
        ]);
    }
    let (a, att) = w.container("ext", maps(&[(9200, 80, "tcp")]));
    w.add(&att);
    w.rt.check(&att).unwrap_or_else(|e| panic!("CHECK: {e}"));
    let nat = w.node.iptables_save(false);
    assert!(!nat.contains("CNI-HOSTPORT-SETMARK"), "{nat}");
    assert!(!nat.contains("CNI-HOSTPORT-MASQ"), "{nat}");
    assert!(
        nat.contains("-p tcp -m tcp --dport 9200 -j PLZ-SET-MARK"),
        "{nat}"
    );
    w.settle();
    let _s = Server::start(w.ns(a), 80);
    // Hairpin works through the external chain's mark.
    let r = dial(w.ns(a), "tcp", NODE4, 9200).expect("hairpin through external mark chain");
    assert_eq!(peer(&r), GW4);
    assert_eq!(peer(&dial(&w.ext, "tcp", NODE4, 9200).unwrap()), EXT4);
    w.rt.del(&att).unwrap();
}

#[test]
fn conditions_restrict_entry() {
    need_world!();
    for backend in BACKENDS {
        let mut o = Opts::new(backend);
        o.portmap = if backend == "iptables" {
            json!({"conditionsV4": ["-s", EXT4], "conditionsV6": ["!", "-s", EXT6]})
        } else {
            json!({"conditionsV4": ["ip", "saddr", EXT4], "conditionsV6": ["ip6", "saddr", "!=", EXT6]})
        };
        let mut w = World::new(&format!("cond{}", short(backend)), &o);
        let (a, att) = w.container("cond", maps(&[(9300, 80, "tcp")]));
        w.add(&att);
        w.rt.check(&att)
            .unwrap_or_else(|e| panic!("{backend} CHECK: {e}"));
        w.settle();
        let _s = Server::start(w.ns(a), 80);
        assert!(
            dial_from(&w.ext, "tcp", NODE4, 9300, None, Some(EXT4)).is_some(),
            "{backend} allowed source"
        );
        assert!(
            dial_from(&w.ext, "tcp", NODE4, 9300, None, Some(EXT4_B)).is_none(),
            "{backend} other source"
        );
        assert!(
            dial(&w.ext, "tcp", NODE6, 9300).is_none(),
            "{backend} v6 negated source"
        );
        w.rt.del(&att).unwrap();
    }
}

/// Deletes the first firewall rule of the node whose text contains `needle` (a tamperer).
fn tamper(w: &World, backend: &str, v6: bool, needle: &str) {
    if backend == "iptables" {
        let save = w.node.iptables_save(v6);
        let line = save
            .lines()
            .find(|l| l.starts_with("-A ") && l.contains(needle))
            .unwrap_or_else(|| panic!("no rule with {needle}: {save}"));
        let del = line.replacen("-A ", "-D ", 1);
        let t = if v6 { "ip6tables" } else { "iptables" };
        let out = w.node.sh(&format!("{t} -t nat {del}"));
        assert!(out.status.success(), "{del}: {out:?}");
    } else {
        let fam = if v6 { "ip6" } else { "ip" };
        let list = w
            .node
            .exec(&["nft", "-a", "list", "table", fam, "cni_hostport"]);
        let mut chain = String::new();
        for l in list.lines() {
            let l = l.trim();
            if let Some(c) = l.strip_prefix("chain ") {
                chain = c.split_whitespace().next().unwrap().to_string();
            } else if l.contains(needle) {
                let handle = l.rsplit("handle ").next().unwrap().trim();
                w.node.exec(&[
                    "nft",
                    "delete",
                    "rule",
                    fam,
                    "cni_hostport",
                    &chain,
                    "handle",
                    handle,
                ]);
                return;
            }
        }
        panic!("no nft rule with {needle}: {list}");
    }
}

#[test]
fn check_after_add_and_after_tampering() {
    need_world!();
    for backend in BACKENDS {
        // (needle, family, what CHECK must name)
        let cases: Vec<(&str, bool, &str)> = if backend == "iptables" {
            vec![
                ("--dport 9401 -j DNAT", false, "--dport 9401 -j DNAT"),
                ("[fd00:77::", true, "ip6tables"),
                ("-A PREROUTING -m addrtype", false, "PREROUTING"),
                ("CNI portfwd requiring masquerade", false, "POSTROUTING"),
                ("multiport --dports 9400,9401", false, "CNI-HOSTPORT-DNAT"),
            ]
        } else {
            vec![
                ("dport 9401 dnat", false, "dport 9401"),
                ("dport 9400 dnat", true, "ip6 cni_hostport"),
                (
                    "jump hostports_all",
                    false,
                    "jump hostports_all in chain ip cni_hostport",
                ),
                ("masquerade", false, "masquerad"),
            ]
        };
        for (i, (needle, v6, named)) in cases.into_iter().enumerate() {
            let mut w = World::new(&format!("chk{}{i}", short(backend)), &Opts::new(backend));
            let (_, att) = w.container("chk", maps(&[(9400, 80, "tcp"), (9401, 81, "tcp")]));
            w.add(&att);
            w.rt.check(&att)
                .unwrap_or_else(|e| panic!("{backend} CHECK after ADD: {e}"));
            tamper(&w, backend, v6, needle);
            let err =
                w.rt.check(&att)
                    .expect_err("CHECK must fail after tampering");
            assert!(
                err.error_msg().contains(named),
                "{backend}: removing {needle:?}: CHECK said {:?}, should name {named:?}",
                err.error_msg()
            );
            w.rt.del(&att).unwrap();
        }
    }
}

#[test]
fn check_ipv4_only_container() {
    need_world!();
    for backend in BACKENDS {
        let mut o = Opts::new(backend);
        o.dual = false;
        let mut w = World::new(&format!("chk4{}", short(backend)), &o);
        let (_, att) = w.container("v4only", maps(&[(9500, 80, "tcp")]));
        w.add(&att);
        w.rt.check(&att)
            .unwrap_or_else(|e| panic!("{backend}: CHECK on an IPv4-only container: {e}"));
        // No IPv6 state was created for it.
        assert!(!w.node.iptables_save(true).contains("CNI-DN-"));
        w.rt.del(&att).unwrap();
    }
}

#[test]
fn degraded_del_restores_the_previous_rules() {
    need_world!();
    for backend in BACKENDS {
        let mut w = World::new(&format!("del{}", short(backend)), &Opts::new(backend));
        // A first container creates the shared chains (which DEL never removes, as in the
        // reference); the state is compared around a second one.
        let (_, warm) = w.container("warm", maps(&[(9600, 80, "tcp")]));
        w.add(&warm);
        for (case, keep_caps, keep_prev, keep_netns) in [
            ("no runtimeConfig", false, true, true),
            ("no prevResult", true, false, true),
            ("no netns", true, true, false),
            ("nothing at all", false, false, false),
        ] {
            let before = w.firewall_state();
            let id = format!("deg{}", case.len());
            let (_, att) = w.container(&id, maps(&[(9601, 80, "tcp"), (9602, 81, "udp")]));
            w.add(&att);
            assert_ne!(
                w.firewall_state(),
                before,
                "{backend} {case}: ADD changed nothing"
            );
            let mut d = att.clone();
            if !keep_caps {
                d.cap_args = Value::Null;
            }
            if !keep_netns {
                d.netns = String::new();
            }
            if !keep_prev {
                w.rt.forget(&att);
            }
            w.rt.del(&d)
                .unwrap_or_else(|e| panic!("{backend} DEL ({case}): {e}"));
            assert_eq!(
                w.firewall_state(),
                before,
                "{backend} DEL ({case}) left state behind"
            );
            // DEL twice is fine and changes nothing.
            w.rt.del(&d)
                .unwrap_or_else(|e| panic!("{backend} second DEL ({case}): {e}"));
            assert_eq!(w.firewall_state(), before);
        }
        // The warm container is still fully there.
        w.rt.check(&warm)
            .unwrap_or_else(|e| panic!("{backend} warm CHECK: {e}"));
        w.rt.del(&warm).unwrap();
        let after = w.firewall_state();
        assert!(
            !after.contains("warm") && !after.contains("CNI-DN-"),
            "{after}"
        );
    }
}

#[test]
fn failed_add_leaves_no_rule_behind() {
    need_world!();
    for backend in BACKENDS {
        // The IPv4 part is valid, the IPv6 conditions are rejected by the kernel/nft: the
        // IPv4 rules (and, on a fresh node, the shared chains) must be rolled back.
        let mut o = Opts::new(backend);
        o.portmap = if backend == "iptables" {
            json!({"conditionsV4": ["-s", EXT4], "conditionsV6": ["-m", "no_such_match_xyz"]})
        } else {
            json!({"conditionsV4": ["ip", "saddr", EXT4], "conditionsV6": ["no", "such", "thing"]})
        };
        let mut w = World::new(&format!("rb{}", short(backend)), &o);
        let before = w.firewall_state();
        let (_, att) = w.container("rb", maps(&[(9700, 80, "tcp"), (9701, 80, "udp")]));
        let err = w.rt.add(&att).expect_err("ADD must fail");
        assert!(err.error_code().is_some(), "{err}");
        assert_eq!(
            w.firewall_state(),
            before,
            "{backend}: failed ADD left rules behind"
        );
    }
}

/// GC removes the rules of the attachments not in the list, of this network only. It reads and
/// removes them over netlink (the node's iptables are `iptables-nft`): its GCs run with
/// stand-ins for the tools of the backend that log their calls and fail.
#[test]
fn gc_removes_only_stale_attachments() {
    need_world!();
    for backend in BACKENDS {
        let mut w = World::new(&format!("gc{}", short(backend)), &Opts::new(backend));
        let (_, a) = w.container("gca", maps(&[(9800, 80, "tcp")]));
        let (_, b) = w.container("gcb", maps(&[(9801, 80, "udp")]));
        w.add(&a);
        w.add(&b);
        let tools = if backend == "iptables" {
            LoggingTools::new("xtables-nft-multi", &IPTABLES_TOOLS, 1)
        } else {
            LoggingTools::new("nft", &[], 1)
        };
        let path = tools.path();
        let with_cni11 = |w: &World, valid: Option<Value>| {
            let mut conf = w.portmap_conf(None, &Value::Null);
            conf["cniVersion"] = json!("1.1.0");
            if let Some(v) = valid {
                conf["cni.dev/valid-attachments"] = v;
            }
            let env = [
                ("CNI_COMMAND", "GC"),
                ("CNI_CONTAINERID", ""),
                ("CNI_NETNS", ""),
                ("CNI_IFNAME", ""),
                ("PATH", &path),
            ];
            w.run_portmap(&env, &conf)
        };
        // No list: nothing removed.
        let before = w.firewall_state();
        let out = with_cni11(&w, None);
        assert!(out.ok(), "{out}");
        assert_eq!(w.firewall_state(), before);
        // gcb is stale.
        let out = with_cni11(&w, Some(json!([{"containerID": "gca", "ifname": "eth0"}])));
        assert!(out.ok(), "{backend} GC: {out}");
        let after = w.firewall_state();
        assert!(!after.contains("gcb"), "{backend}: {after}");
        assert!(!after.contains("9801"), "{backend}: {after}");
        assert!(after.contains("9800"), "{backend}: {after}");
        assert_eq!(tools.calls(), "", "{backend}: GC ran the firewall tools");
        w.rt.check(&a)
            .unwrap_or_else(|e| panic!("{backend} CHECK after GC: {e}"));
        // Another network's GC does not touch this network's attachments.
        let mut other = w.portmap_conf(None, &Value::Null);
        other["cniVersion"] = json!("1.1.0");
        other["name"] = json!("someothernet");
        other["cni.dev/valid-attachments"] = json!([]);
        let out = w.run_portmap(
            &[
                ("CNI_COMMAND", "GC"),
                ("CNI_CONTAINERID", ""),
                ("CNI_NETNS", ""),
                ("CNI_IFNAME", ""),
            ],
            &other,
        );
        assert!(out.ok(), "{out}");
        assert!(w.firewall_state().contains("9800"));
        w.rt.del(&a).unwrap();
    }
}

#[test]
fn status_reports_an_unusable_backend() {
    need_world!();
    let w = World::new("status", &Opts::new("iptables"));
    for backend in BACKENDS {
        let mut conf = w.portmap_conf(None, &Value::Null);
        conf["cniVersion"] = json!("1.1.0");
        conf["backend"] = json!(backend);
        let ok = w.run_portmap(&[("CNI_COMMAND", "STATUS")], &conf);
        assert!(ok.ok(), "{backend}: {ok}");
        let bad = w.run_portmap(
            &[("CNI_COMMAND", "STATUS"), ("PATH", "/nonexistent")],
            &conf,
        );
        assert_eq!(bad.error_code(), Some(50), "{backend}: {bad}");
    }
}

/// STATUS of the nftables backend says whether ADD can work: its rules go in over netlink,
/// so it asks nf_tables and looks for `nft` without running it; only conditions (nft text
/// of the operator's own, which ADD hands to `nft`) make it run `nft`. The stand-in here
/// logs its calls and fails.
#[test]
fn status_with_nftables_runs_nft_only_for_conditions() {
    need_world!();
    let w = World::new("statusnft", &Opts::new("nftables"));
    let tools = LoggingTools::new("nft", &[], 1);
    let path = tools.path();
    let mut conf = w.portmap_conf(None, &Value::Null);
    conf["cniVersion"] = json!("1.1.0");
    conf["backend"] = json!("nftables");
    let out = w.run_portmap(&[("CNI_COMMAND", "STATUS"), ("PATH", &path)], &conf);
    assert!(out.ok(), "{out}");
    assert_eq!(tools.calls(), "");
    conf["conditionsV4"] = json!(["ip", "saddr", "192.0.2.0/24"]);
    let out = w.run_portmap(&[("CNI_COMMAND", "STATUS"), ("PATH", &path)], &conf);
    assert_eq!(out.error_code(), Some(50), "{out}");
    assert_eq!(tools.calls(), "nft list tables\n");
}

#[test]
fn status_with_iptables_nft_asks_nf_tables_and_runs_no_tool() {
    need_world!();
    let w = World::new("statusnl", &Opts::new("iptables"));
    let mut conf = w.portmap_conf(None, &Value::Null);
    conf["cniVersion"] = json!("1.1.0");
    // Stand-ins named as Debian's alternatives name the two kinds of tools log their calls:
    // iptables-nft's rules are nf_tables rules, asked over netlink; others run `iptables`.
    for (multi, runs) in [("xtables-nft-multi", false), ("xtables-legacy-multi", true)] {
        let tools = LoggingTools::new(multi, &["iptables", "iptables-restore"], 0);
        let path = tools.path();
        let out = w.run_portmap(&[("CNI_COMMAND", "STATUS"), ("PATH", &path)], &conf);
        assert!(out.ok(), "{multi}: {out}");
        let calls = tools.calls();
        assert_eq!(
            calls.contains("iptables -w 10 -t nat -S OUTPUT 1"),
            runs,
            "{multi}: calls {calls:?}"
        );
    }
}

/// A network's first ADD on a node with `backend` starts no process: the rules of both
/// families, and whatever tables and chains they need, go in over netlink. `program` (and
/// the names in `links`, pointing to it) is a stand-in that logs its calls and fails; the
/// real tools then list what ADD made (`dnat` gives the translation as each lists it, for an
/// address and a port), and DEL removes it.
fn first_add_starts_no_process(
    prefix: &str,
    backend: &'static str,
    (program, links): (&str, &[&str]),
    dnat: fn(&str, u16) -> String,
) {
    let mut w = World::new(prefix, &Opts::new(backend));
    let (_, att) = w.container(prefix, json!([]));
    let res = w.add(&att);
    let tools = LoggingTools::new(program, links, 1);
    let conf = w.portmap_conf(
        Some(&res),
        &json!({"portMappings": maps(&[(8080, 80, "tcp"), (5353, 53, "udp")])}),
    );
    let netns = att.netns.clone();
    let env = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", prefix),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
        ]
    };
    let before = w.firewall_state();
    assert!(!before.contains("CNI-HOSTPORT") && !before.contains("cni_hostport"));
    let path = tools.path();
    let mut add = env("ADD");
    add.push(("PATH", &path));
    let out = w.run_portmap(&add, &conf);
    assert!(out.ok(), "{out}");
    assert_eq!(tools.calls(), "");
    let (v4, v6) = World::ips(&res);
    let state = w.firewall_state();
    for want in [
        dnat(&v4.to_string(), 80),
        dnat(&format!("[{}]", v6.unwrap_or_default()), 53),
    ] {
        assert!(state.contains(&want), "{want}: {state}");
    }
    let out = w.run_portmap(&env("DEL"), &conf);
    assert!(out.ok(), "{out}");
    let after = w.firewall_state();
    assert!(
        !after.contains("dnat to") && !after.contains("-j DNAT"),
        "{after}"
    );
    w.rt.del(&att).unwrap();
}

#[test]
fn nftables_first_add_starts_no_process() {
    need_world!();
    first_add_starts_no_process("nfpm", "nftables", ("nft", &[]), |ip, port| {
        format!("dnat to {ip}:{port}")
    });
}

/// The same on an `iptables-nft` node (the bridge's masquerade made the `nat` table first):
/// the stand-ins are named as Debian's alternatives name the tools, so the plugin takes
/// them for `iptables-nft`.
#[test]
fn iptables_first_add_starts_no_process() {
    need_world!();
    first_add_starts_no_process(
        "ipfpm",
        "iptables",
        ("xtables-nft-multi", &IPTABLES_TOOLS),
        |ip, port| format!("-j DNAT --to-destination {ip}:{port}"),
    );
}

/// CHECK with `backend` finds an intact attachment over netlink, with no process: the
/// tools are stand-ins (`program`, and `links` to it) that log their calls and fail. Once
/// `replace` has put another rule in place of one ADD wrote (given the node, the network
/// and the container ID), the question goes to the listing, and the real tools report it.
fn check_starts_no_process(
    prefix: &str,
    backend: &'static str,
    (program, links): (&str, &[&str]),
    replace: fn(&cni_testkit::Node, &str, &str),
) {
    let mut w = World::new(prefix, &Opts::new(backend));
    let (_, att) = w.container(prefix, json!([]));
    let res = w.add(&att);
    let conf = w.portmap_conf(
        Some(&res),
        &json!({"portMappings": maps(&[(8080, 80, "tcp"), (5353, 53, "udp")])}),
    );
    let tools = LoggingTools::new(program, links, 1);
    let path = tools.path();
    let netns = att.netns.clone();
    let env = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", prefix),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
        ]
    };
    let out = w.run_portmap(&env("ADD"), &conf);
    assert!(out.ok(), "{out}");
    let mut check = env("CHECK");
    check.push(("PATH", &path));
    let out = w.run_portmap(&check, &conf);
    assert!(out.ok(), "{backend}: {out}");
    assert_eq!(tools.calls(), "", "{backend}: CHECK ran the firewall tools");
    replace(&w.node, conf["name"].as_str().unwrap_or_default(), prefix);
    let out = w.run_portmap(&check, &conf);
    assert!(!out.ok(), "{backend}: {out}");
    assert!(!tools.calls().is_empty(), "{backend}: the listing is asked");
    let out = w.run_portmap(&env("CHECK"), &conf);
    assert!(
        !out.ok() && out.error_msg().contains("8080"),
        "{backend}: {out}"
    );
    let out = w.run_portmap(&env("DEL"), &conf);
    assert!(out.ok(), "{out}");
    w.rt.del(&att).unwrap();
}

#[test]
fn iptables_check_of_an_intact_attachment_starts_no_process() {
    need_world!();
    check_starts_no_process(
        "ipchk",
        "iptables",
        ("xtables-nft-multi", &IPTABLES_TOOLS),
        |node, net, id| {
            let chain = portmap::iptables::dnat_chain(net, id);
            node.exec(&["iptables", "-t", "nat", "-F", &chain]);
            node.exec(&[
                "iptables",
                "-t",
                "nat",
                "-A",
                &chain,
                "-p",
                "tcp",
                "--dport",
                "8080",
                "-j",
                "DNAT",
                "--to-destination",
                "10.99.0.9:80",
            ]);
        },
    );
}

#[test]
fn nftables_check_of_an_intact_attachment_starts_no_process() {
    need_world!();
    check_starts_no_process("nfchk", "nftables", ("nft", &[]), |node, _, _| {
        node.exec(&["nft", "flush", "chain", "ip", "cni_hostport", "hostports"]);
        node.exec(&[
            "nft",
            "add",
            "rule",
            "ip",
            "cni_hostport",
            "hostports",
            "tcp",
            "dport",
            "8080",
            "dnat",
            "to",
            "10.99.0.9:80",
        ]);
    });
}

#[test]
fn no_mappings_passes_prev_result_through_and_runs_nothing() {
    need_world!();
    let mut w = World::new("nomap", &Opts::new("iptables"));
    let (_, att) = w.container("nomap", json!([]));
    let before = w.firewall_state();
    let res = w.add(&att);
    assert_eq!(w.firewall_state(), before);
    // Without any firewall tool in PATH, ADD/CHECK/DEL without mappings still succeed: they
    // start no process at all.
    let conf = w.portmap_conf(Some(&res), &json!({}));
    let env = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "nomap"),
            ("CNI_NETNS", "/proc/1/ns/net"),
            ("CNI_IFNAME", "eth0"),
            ("PATH", "/nonexistent"),
        ]
    };
    let out = w.run_portmap(&env("ADD"), &conf);
    assert!(out.ok(), "{out}");
    assert_eq!(out.json(), res);
    let out = w.run_portmap(&env("CHECK"), &conf);
    assert!(out.ok(), "{out}");
    let out = w.run_portmap(&env("DEL"), &conf);
    assert!(out.ok(), "{out}");
    w.rt.del(&att).unwrap();
}

#[test]
fn add_without_prev_result_and_invalid_config() {
    need_world!();
    let mut w = World::new("inval", &Opts::new("iptables"));
    let (i, _) = w.container("inval", json!([]));
    let netns = w.ns(i).path().display().to_string();
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "inval"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let conf = w.portmap_conf(None, &json!({"portMappings": maps(&[(80, 80, "tcp")])}));
    let out = w.run_portmap(&env, &conf);
    assert_eq!(out.error_msg(), "must be called as chained plugin", "{out}");
    let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.77.0.9/24"}]});
    for (m, msg) in [
        (
            json!({"hostPort": 70000, "containerPort": 80}),
            "runtimeConfig.portMappings[1].hostPort: 70000 is not a valid port",
        ),
        (
            json!({"hostPort": 80, "containerPort": 0}),
            "runtimeConfig.portMappings[1].containerPort: 0 is not a valid port",
        ),
        (
            json!({"hostPort": 80, "containerPort": 80, "protocol": "icmp"}),
            "runtimeConfig.portMappings[1].protocol: unknown protocol \"icmp\" (expected tcp, udp or sctp)",
        ),
    ] {
        let caps =
            json!({"portMappings": [{"hostPort": 81, "containerPort": 81, "protocol": "tcp"}, m]});
        let conf = w.portmap_conf(Some(&prev), &caps);
        let before = w.firewall_state();
        let out = w.run_portmap(&env, &conf);
        assert_eq!(out.error_code(), Some(7), "{out}");
        assert_eq!(out.error_msg(), msg);
        assert_eq!(w.firewall_state(), before);
    }
}

#[test]
fn stale_udp_conntrack_is_flushed_on_add() {
    need_world!();
    for backend in BACKENDS {
        let mut w = World::new(&format!("ct{}", short(backend)), &Opts::new(backend));
        // A first container makes the node's NAT hooks (and so conntrack) active.
        let (_, warm) = w.container("ctwarm", maps(&[(9900, 80, "tcp")]));
        w.add(&warm);
        // A client sends to a UDP host port before it is mapped: conntrack records an
        // untranslated flow, which would swallow the client's later packets.
        assert!(dial_from(&w.ext, "udp", NODE4, 9901, Some(40001), None).is_none());
        let ct = w
            .node
            .exec(&["conntrack", "-L", "-p", "udp", "--dport", "9901"]);
        assert!(
            ct.contains("dport=9901"),
            "no conntrack entry to go stale: {ct}"
        );
        let (a, att) = w.container("ctudp", maps(&[(9901, 80, "udp")]));
        w.add(&att);
        w.settle();
        let _s = Server::start(w.ns(a), 80);
        let r = dial_from(&w.ext, "udp", NODE4, 9901, Some(40001), None);
        assert!(
            r.is_some(),
            "{backend}: same-tuple UDP client still stuck on a stale entry"
        );
        // DEL flushes too: the translated entry is gone.
        w.rt.del(&att).unwrap();
        let ct = w
            .node
            .exec(&["conntrack", "-L", "-p", "udp", "--dport", "9901"]);
        assert!(
            !ct.contains("dport=9901"),
            "{backend}: entry survived DEL: {ct}"
        );
        w.rt.del(&warm).unwrap();
    }
}
