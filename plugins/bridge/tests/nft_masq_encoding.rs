//! Root-only: the masquerade rules the nftables backend commits over netlink
//! ([`bridge::masq::nft::rule_changes`]) are the very rules `nft` makes from the ADD script.
//! Each case runs in two fresh namespaces holding the same table (another attachment set up
//! by `nft` first); the attachment's rules go in by `nft` in one and over netlink in the
//! other, and what the kernel then reports (chain, comment, expressions byte for byte) and
//! what `nft list table` prints must be equal, before and after DEL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bridge::masq::nft::{
    CHAIN, NF_FAMILY, TABLE, first_add_changes, postrouting_is_current, rule_changes,
    setup_script_with, teardown_changes,
};
use cni_kernel::NetNs;
use cni_kernel::firewall::nft;
use cni_kernel::nftables::NfTables;
use cni_testkit::{TableState, assert_same_table, table_state};
use ipnet::IpNet;

#[test]
fn netlink_rules_equal_nft_rules() {
    cni_testkit::require_root_and_nft!();
    let net = "masqenc";
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["10.88.0.5/16", "fd00::5/64"],
            &["10.88.0.4/16", "fd00::4/64"],
        ),
        (
            &["10.88.16.5/20", "fd00::5/60"],
            &["10.88.16.4/20", "fd00::4/60"],
        ),
        (&["10.1.2.3/32", "fd00:1::3/128"], &["10.1.2.4/32"]),
        (&["10.88.0.5/0", "fd00::5/0"], &["10.88.0.4/0"]),
    ];
    for (addrs, others) in cases {
        let parse = |v: &[&str]| -> Vec<IpNet> { v.iter().map(|a| a.parse().unwrap()).collect() };
        let (addrs, others) = (parse(addrs), parse(others));
        let case = format!("{addrs:?}");
        let by_nft = NetNs::new_anonymous().unwrap();
        let by_us = NetNs::new_anonymous().unwrap();
        let setup = || {
            nft::apply(&setup_script_with(
                &[],
                true,
                false,
                net,
                "eth0",
                "other",
                &others,
            ))
            .unwrap();
            let mut nf = NfTables::open().unwrap();
            let post = nf.rules(NF_FAMILY, TABLE, Some("postrouting")).unwrap();
            assert!(postrouting_is_current(&post), "{case}");
            nf
        };
        let nft_state = by_nft
            .run(|| {
                setup();
                let script = setup_script_with(&[], false, true, net, "eth0", "abc", &addrs);
                assert!(script.lines().all(|l| l.starts_with("add rule ")), "{case}");
                nft::apply(&script).unwrap();
                table_state(NF_FAMILY, TABLE)
            })
            .unwrap();
        let our_state = by_us
            .run(|| {
                let mut nf = setup();
                let changes = rule_changes(net, "eth0", "abc", &addrs).unwrap();
                nf.commit(&changes, None).unwrap();
                table_state(NF_FAMILY, TABLE)
            })
            .unwrap();
        let ours = |s: &TableState| {
            s.0.iter()
                .filter(|(_, c, _)| c.as_deref().is_some_and(|c| c.contains("id: abc")))
                .count()
        };
        assert_eq!(ours(&nft_state), addrs.len(), "{case}");
        assert_same_table(&nft_state, &our_state, &case);

        // DEL finds them alike and leaves the same table.
        let after = |ns: &NetNs| {
            ns.run(|| {
                let mut nf = NfTables::open().unwrap();
                let checks = nf.rules(NF_FAMILY, TABLE, Some(CHAIN)).unwrap();
                let del = teardown_changes(&checks, net, "eth0", "abc");
                assert_eq!(del.len(), addrs.len());
                nf.commit(&del, None).unwrap();
                table_state(NF_FAMILY, TABLE)
            })
            .unwrap()
        };
        let (nft_after, our_after) = (after(&by_nft), after(&by_us));
        assert_eq!(ours(&nft_after), 0, "{case}");
        assert_same_table(&nft_after, &our_after, &case);
    }
}

#[test]
fn comments_nft_would_rewrite_are_left_to_nft() {
    let addrs: Vec<IpNet> = vec!["10.88.0.5/16".parse().unwrap()];
    assert!(rule_changes("net", "eth0", "abc", &addrs).is_some());
    assert!(rule_changes("net\\x", "eth0", "abc", &addrs).is_none());
}

/// The network's first ADD on a node (no table yet) over netlink ([`first_add_changes`])
/// makes the very table `nft` makes from the script: comments, the `postrouting` base chain
/// and its rules, the attachment's rules. The next ADD finds `postrouting` current.
#[test]
fn first_add_over_netlink_equals_nft() {
    cni_testkit::require_root_and_nft!();
    let net = "masqfirst";
    let cases: [&[&str]; 3] = [
        &["10.88.0.5/16", "fd00::5/64"],
        &["10.88.16.5/20"],
        &["fd00:1::3/128"],
    ];
    for addrs in cases {
        let addrs: Vec<IpNet> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        let case = format!("{addrs:?}");
        let by_nft = NetNs::new_anonymous().unwrap();
        let by_us = NetNs::new_anonymous().unwrap();
        let nft_state = by_nft
            .run(|| {
                let script = setup_script_with(&[], true, false, net, "eth0", "abc", &addrs);
                nft::apply(&script).unwrap();
                table_state(NF_FAMILY, TABLE)
            })
            .unwrap();
        let our_state = by_us
            .run(|| {
                let mut nf = NfTables::open().unwrap();
                assert!(!nf.table_exists(NF_FAMILY, TABLE).unwrap(), "{case}");
                let changes = first_add_changes(net, "eth0", "abc", &addrs).unwrap();
                nf.commit(&changes, None).unwrap();
                let post = nf.rules(NF_FAMILY, TABLE, Some("postrouting")).unwrap();
                assert!(postrouting_is_current(&post), "{case}");
                table_state(NF_FAMILY, TABLE)
            })
            .unwrap();
        assert_eq!(nft_state.0.len(), 3 + addrs.len(), "{case}");
        assert_same_table(&nft_state, &our_state, &case);
    }
}
