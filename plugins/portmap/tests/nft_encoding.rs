//! Root-only: the container rules the nftables backend commits over netlink
//! ([`portmap::nftables::rule_changes`]) are the very rules `nft` makes from the ADD script's
//! lines. Each case runs in two fresh namespaces holding the same table (another container
//! added by `nft` first); the container's rules go in by `nft` in one and over netlink in the
//! other, and what the kernel then reports (chain, comment, expressions byte for byte) and what
//! `nft list table` prints must be equal, before and after DEL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cni::config::NetConf;
use cni_kernel::NetNs;
use cni_kernel::firewall::nft;
use cni_kernel::nftables::{NfFamily, NfTables};
use cni_testkit::{assert_same_table, table_state};
use ipnet::IpNet;
use portmap::config::{Backend, Config};
use portmap::nftables::{self, TABLE};

fn config(extra: &str, mappings: &str) -> Config {
    let json = format!(
        r#"{{"name":"enc","type":"portmap","cniVersion":"1.0.0","backend":"nftables"{extra},
        "runtimeConfig":{{"portMappings":[{mappings}]}}}}"#
    );
    let nc = NetConf::parse(json.as_bytes()).unwrap();
    Config::parse(&nc, || Backend::Nftables).unwrap()
}

fn fam(v6: bool) -> NfFamily {
    if v6 { NfFamily::Ipv6 } else { NfFamily::Ipv4 }
}

#[test]
fn netlink_rules_equal_nft_rules() {
    cni_testkit::require_root_and_nft!();
    let v4_maps = r#"{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
        {"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":"192.168.1.1"},
        {"hostPort":9000,"containerPort":9001,"protocol":"sctp","hostIP":"0.0.0.0"},
        {"hostPort":8085,"containerPort":85,"protocol":"tcp","hostIP":"2001:db8:a::1"}"#;
    let v6_maps = r#"{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
        {"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":"fd00::1"},
        {"hostPort":9000,"containerPort":9000,"protocol":"sctp","hostIP":"::"}"#;
    let cases = [
        ("", v4_maps, "10.88.0.5/16", "10.88.0.4/16"),
        (
            r#","masqAll":true"#,
            v4_maps,
            "10.88.16.5/20",
            "10.88.16.4/20",
        ),
        ("", v4_maps, "10.1.2.3/32", "10.1.2.4/32"),
        (r#","snat":false"#, v4_maps, "10.88.0.5/24", "10.88.0.4/24"),
        ("", v4_maps, "10.88.0.5/0", "10.88.0.4/0"),
        ("", v6_maps, "fd00::5/64", "fd00::4/64"),
        ("", v6_maps, "fd00::5/60", "fd00::4/60"),
        (
            r#","masqAll":true"#,
            v6_maps,
            "fd00:1::5/120",
            "fd00:1::4/120",
        ),
        (r#","snat":false"#, v6_maps, "fd00::5/128", "fd00::4/128"),
    ];
    for (extra, maps, ip, other) in cases {
        let conf = config(extra, maps);
        let ip: IpNet = ip.parse().unwrap();
        let other: IpNet = other.parse().unwrap();
        let v6 = ip.addr().is_ipv6();
        let case = format!("{extra} {ip}");
        let by_nft = NetNs::new_anonymous().unwrap();
        let by_us = NetNs::new_anonymous().unwrap();
        let setup = || {
            nft::apply(&nftables::add_script(&conf, "other", other).join("\n")).unwrap();
            let mut nf = NfTables::open().unwrap();
            let cur = nftables::current(&mut nf, &conf, v6);
            assert!(cur.complete(&conf), "{case}");
            (nf, cur)
        };
        let nft_state = by_nft
            .run(|| {
                let (_, cur) = setup();
                let script = nftables::add_script_with(&conf, "abc", ip, cur);
                assert!(script.iter().all(|l| l.starts_with("add rule ")), "{case}");
                nft::apply(&script.join("\n")).unwrap();
                table_state(fam(v6), TABLE)
            })
            .unwrap();
        let our_state = by_us
            .run(|| {
                let (mut nf, cur) = setup();
                let changes = nftables::rule_changes(&conf, "abc", ip, &cur).unwrap();
                nf.commit(&changes, None).unwrap();
                table_state(fam(v6), TABLE)
            })
            .unwrap();
        assert!(
            nft_state
                .0
                .iter()
                .any(|(_, c, _)| c.as_deref() == Some("abc")),
            "{case}"
        );
        assert_same_table(&nft_state, &our_state, &case);

        // DEL finds them alike and leaves the same table.
        let after = |ns: &NetNs| {
            ns.run(|| {
                let mut nf = NfTables::open().unwrap();
                nftables::del(Some(&mut nf), &conf.network, "abc").unwrap();
                table_state(fam(v6), TABLE)
            })
            .unwrap()
        };
        let (nft_after, our_after) = (after(&by_nft), after(&by_us));
        assert!(
            nft_after
                .0
                .iter()
                .all(|(_, c, _)| c.as_deref() != Some("abc")),
            "{case}"
        );
        assert_same_table(&nft_after, &our_after, &case);
    }
}

#[test]
fn incomplete_tables_are_left_to_nft() {
    let conf = config(
        "",
        r#"{"hostPort":8080,"containerPort":80,"protocol":"tcp"}"#,
    );
    let ip: IpNet = "10.88.0.5/16".parse().unwrap();
    let empty = nftables::Current::default();
    assert!(!empty.complete(&conf));
    assert!(nftables::rule_changes(&conf, "abc", ip, &empty).is_none());
    // An IPv4-mapped IPv6 container address is written by nft as IPv4.
    let complete = nftables::Current {
        hostports_all: true,
        prerouting: true,
        output: true,
        table: true,
        chains: [
            "hostports",
            "hostip_hostports",
            "hostports_all",
            "masquerading",
            "output",
            "prerouting",
        ]
        .iter()
        .map(|c| c.to_string())
        .chain([nftables::record_chain(&conf.network)])
        .collect(),
    };
    assert!(complete.complete(&conf));
    assert!(nftables::rule_changes(&conf, "abc", ip, &complete).is_some());
    let mapped: IpNet = "::ffff:10.88.0.5/112".parse().unwrap();
    assert!(nftables::rule_changes(&conf, "abc", mapped, &complete).is_none());
    let mut no_masq = complete.clone();
    no_masq.chains.retain(|c| c != "masquerading");
    assert!(!no_masq.complete(&conf));
}

/// A network's first ADD on a node (no table yet) over netlink
/// ([`nftables::netlink_changes`] with nothing current) makes the very table `nft` makes
/// from the script: table and chain comments, base chains, the jumps, the container's
/// rules; a second address of a family declares nothing again. The next ADD then finds the
/// table complete, and DEL leaves the same table in both.
#[test]
fn first_add_over_netlink_equals_nft() {
    cni_testkit::require_root_and_nft!();
    let maps = r#"{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
        {"hostPort":5353,"containerPort":53,"protocol":"udp"}"#;
    let cases: [(&str, &[&str]); 5] = [
        ("", &["10.88.0.5/16", "fd00::5/64"]),
        (r#","masqAll":true"#, &["10.88.16.5/20"]),
        (r#","snat":false"#, &["fd00::5/60"]),
        ("", &["10.88.0.5/16", "10.89.0.5/16", "fd00::5/64"]),
        (r#","snat":false"#, &["10.1.2.3/32"]),
    ];
    for (extra, ips) in cases {
        let conf = config(extra, maps);
        let ips: Vec<IpNet> = ips.iter().map(|a| a.parse().unwrap()).collect();
        let case = format!("{extra} {ips:?}");
        let fams: Vec<bool> = [false, true]
            .into_iter()
            .filter(|v6| ips.iter().any(|ip| ip.addr().is_ipv6() == *v6))
            .collect();
        let states = |fams: &[bool]| -> Vec<_> {
            fams.iter().map(|v6| table_state(fam(*v6), TABLE)).collect()
        };
        let by_nft = NetNs::new_anonymous().unwrap();
        let by_us = NetNs::new_anonymous().unwrap();
        let nft_state = by_nft
            .run(|| {
                let script: Vec<String> = ips
                    .iter()
                    .flat_map(|ip| nftables::add_script(&conf, "abc", *ip))
                    .collect();
                nft::apply(&script.join("\n")).unwrap();
                states(&fams)
            })
            .unwrap();
        let our_state = by_us
            .run(|| {
                let mut nf = NfTables::open().unwrap();
                let currents: Vec<_> = ips
                    .iter()
                    .map(|ip| nftables::current(&mut nf, &conf, ip.addr().is_ipv6()))
                    .collect();
                assert!(currents.iter().all(|c| !c.table), "{case}");
                let changes = nftables::netlink_changes(&conf, "abc", &ips, &currents).unwrap();
                nf.commit(&changes, None).unwrap();
                for v6 in &fams {
                    let cur = nftables::current(&mut nf, &conf, *v6);
                    assert!(
                        cur.complete(&conf),
                        "{case}: the next ADD finds it complete"
                    );
                }
                states(&fams)
            })
            .unwrap();
        for (a, b) in nft_state.iter().zip(&our_state) {
            assert!(
                a.0.iter().any(|(_, c, _)| c.as_deref() == Some("abc")),
                "{case}"
            );
            assert_same_table(a, b, &case);
        }
        let after = |ns: &NetNs| {
            ns.run(|| {
                let mut nf = NfTables::open().unwrap();
                nftables::del(Some(&mut nf), &conf.network, "abc").unwrap();
                states(&fams)
            })
            .unwrap()
        };
        for (a, b) in after(&by_nft).iter().zip(&after(&by_us)) {
            assert!(
                a.0.iter().all(|(_, c, _)| c.as_deref() != Some("abc")),
                "{case}"
            );
            assert_same_table(a, b, &case);
        }
    }
}

/// Conditions are the operator's own nft text: a first ADD with them is left to `nft`.
#[test]
fn first_add_with_conditions_is_left_to_nft() {
    let maps = r#"{"hostPort":8080,"containerPort":80,"protocol":"tcp"}"#;
    let ip: IpNet = "10.88.0.5/16".parse().unwrap();
    let plain = config("", maps);
    assert!(nftables::first_add_changes(&plain, "abc", ip, true).is_some());
    let conds = config(r#","conditionsV4":["ip saddr != 10.0.0.0/8"]"#, maps);
    assert!(nftables::first_add_changes(&conds, "abc", ip, true).is_none());
    // Declared with an earlier address: only the container's rules, no conditions needed.
    assert!(nftables::first_add_changes(&conds, "abc", ip, false).is_some());
    let v6: IpNet = "fd00::5/64".parse().unwrap();
    assert!(nftables::first_add_changes(&conds, "abc", v6, true).is_some());
}
