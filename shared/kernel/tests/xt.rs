//! Root-only: the rules [`cni_kernel::firewall::xt`] encodes are the very rules
//! `iptables-nft` makes. Each rule is added once by `iptables-restore` and once by an
//! nf_tables transaction, in two fresh namespaces, and what the kernel then reports for
//! them (expressions, byte for byte) and what `iptables-save` prints must be equal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cni_kernel::NetNs;
use cni_kernel::firewall::Family;
use cni_kernel::firewall::iptables::{Iptables, Restore, argv, split_args};
use cni_kernel::firewall::xt;
use cni_kernel::nftables::{Change, NfTables};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn tools(f: Family) -> bool {
    let ipt = Iptables::new(f);
    ipt.available() && ipt.uses_nf_tables()
}

/// `(chain, rule)` cases per family; `CNI-X` and the chains named here are created first.
fn cases(f: Family) -> Vec<(&'static str, &'static str)> {
    match f {
        Family::V4 => vec![
            (
                "CNI-aaa",
                r#"-d 10.88.0.0/16 -m comment --comment "name: \"n\" id: \"c\"" -j ACCEPT"#,
            ),
            (
                "CNI-aaa",
                r#"! -d 224.0.0.0/4 -m comment --comment "name: \"n\" id: \"c\"" -j MASQUERADE"#,
            ),
            (
                "POSTROUTING",
                r#"-s 10.88.0.2/32 -m comment --comment "name: \"n\" id: \"c\"" -j CNI-aaa"#,
            ),
            (
                "CNI-aaa",
                r#"-d 10.0.16.0/20 -m comment --comment x -j ACCEPT"#,
            ),
            ("CNI-DN-aaa", "-p tcp --dport 8080 -s 10.88.0.2/16 -j CNI-X"),
            ("CNI-DN-aaa", "-p tcp --dport 8080 -s 127.0.0.1 -j CNI-X"),
            (
                "CNI-DN-aaa",
                "-p tcp --dport 8080 -j DNAT --to-destination 10.88.0.2:80",
            ),
            (
                "CNI-DN-aaa",
                "-p udp --dport 5353 -d 192.168.0.2 -s 10.88.0.2/16 -j CNI-X",
            ),
            (
                "CNI-DN-aaa",
                "-p udp --dport 5353 -d 192.168.0.2 -j DNAT --to-destination 10.88.0.2:53",
            ),
            ("CNI-DN-aaa", "-p tcp --dport 8081 -s 0.0.0.0/0 -j CNI-X"),
            (
                "CNI-HOSTPORT-DNAT",
                r#"-m comment --comment "dnat name: \"n\" id: \"c\"" -m multiport -p tcp --destination-ports 8080,8081 -j CNI-DN-aaa"#,
            ),
            (
                "CNI-HOSTPORT-DNAT",
                r#"-m comment --comment "dnat name: \"n\" id: \"c\"" -m multiport -p udp --destination-ports 5353 -j CNI-DN-aaa"#,
            ),
            (
                "CNI-HOSTPORT-SETMARK",
                r#"-m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000"#,
            ),
            (
                "CNI-HOSTPORT-MASQ",
                "-m mark --mark 0x2000/0x2000 -j MASQUERADE",
            ),
            ("CNI-aaa", "-m addrtype --dst-type LOCAL -j CNI-X"),
        ],
        Family::V6 => vec![
            (
                "CNI-aaa",
                r#"-d 2001:db8:1::/64 -m comment --comment "name: \"n\" id: \"c\"" -j ACCEPT"#,
            ),
            (
                "CNI-aaa",
                r#"! -d ff00::/8 -m comment --comment "name: \"n\" id: \"c\"" -j MASQUERADE"#,
            ),
            (
                "POSTROUTING",
                r#"-s 2001:db8:1::2/128 -m comment --comment "name: \"n\" id: \"c\"" -j CNI-aaa"#,
            ),
            (
                "CNI-DN-aaa",
                "-p tcp --dport 8080 -s 2001:db8:1::2/64 -j CNI-X",
            ),
            (
                "CNI-DN-aaa",
                "-p tcp --dport 8080 -j DNAT --to-destination [2001:db8:1::2]:80",
            ),
            (
                "CNI-DN-aaa",
                "-p tcp --dport 8085 -d 2001:db8:a::1 -s ::/0 -j CNI-X",
            ),
            (
                "CNI-HOSTPORT-DNAT",
                r#"-m comment --comment "dnat name: \"n\" id: \"c\"" -m multiport -p tcp --destination-ports 8080 -j CNI-DN-aaa"#,
            ),
            (
                "CNI-HOSTPORT-SETMARK",
                r#"-m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x4000/0x4000"#,
            ),
            (
                "CNI-HOSTPORT-MASQ",
                "-m mark --mark 0x4000/0x4000 -j MASQUERADE",
            ),
            ("CNI-aaa", "-m addrtype --dst-type LOCAL -j CNI-X"),
        ],
    }
}

const CHAINS: [&str; 6] = [
    "CNI-X",
    "CNI-aaa",
    "CNI-DN-aaa",
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-SETMARK",
    "CNI-HOSTPORT-MASQ",
];

fn base() -> Restore {
    let mut tx = Restore::new("nat");
    for c in CHAINS {
        tx.declare_chain(c);
    }
    tx
}

fn save(ns: &NetNs, f: Family) -> Vec<String> {
    ns.run(|| Iptables::new(f).run(&["-t", "nat", "-S"]).unwrap())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn encoded_rules_are_the_rules_iptables_nft_makes() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    for f in [Family::V4, Family::V6] {
        if !tools(f) {
            eprintln!("skipped {f:?}: iptables-nft not installed");
            continue;
        }
        let by_tool = NetNs::new_anonymous().unwrap();
        let by_us = NetNs::new_anonymous().unwrap();
        let ipt = Iptables::new(f);
        let mut tx = base();
        for (chain, rule) in cases(f) {
            tx.append(chain, &split_args(rule));
        }
        by_tool.run(|| ipt.restore(&tx).unwrap()).unwrap();
        by_us
            .run(|| {
                ipt.restore(&base()).unwrap();
                // iptables-nft creates base chains when first used.
                ipt.run(&["-t", "nat", "-P", "POSTROUTING", "ACCEPT"])
                    .unwrap();
            })
            .unwrap();
        by_tool
            .run(|| {
                ipt.run(&["-t", "nat", "-P", "POSTROUTING", "ACCEPT"])
                    .unwrap()
            })
            .unwrap();
        let changes: Vec<Change> = cases(f)
            .into_iter()
            .map(|(chain, rule)| append(f, chain, rule))
            .collect();
        for (c, (chain, rule)) in changes.iter().zip(cases(f)) {
            by_us
                .run(|| {
                    NfTables::open()
                        .unwrap()
                        .commit(std::slice::from_ref(c), None)
                        .unwrap_or_else(|e| panic!("{f:?} {chain} {rule}: {e}"))
                })
                .unwrap();
        }
        for chain in CHAINS.iter().skip(1).chain(&["POSTROUTING"]) {
            let dump = |ns: &NetNs| {
                ns.run(|| {
                    NfTables::open()
                        .unwrap()
                        .rules(f.nf_family(), "nat", Some(chain))
                        .unwrap()
                })
                .unwrap()
            };
            let (a, b) = (dump(&by_tool), dump(&by_us));
            assert_eq!(a.len(), b.len(), "{f:?} {chain}");
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.exprs, y.exprs, "{f:?} {chain}");
                assert_eq!(x.raw_exprs, y.raw_exprs, "{f:?} {chain}");
            }
        }
        assert_eq!(save(&by_tool, f), save(&by_us, f), "{f:?}");
        // And iptables finds our rules by their argv (as the reference's -C/-D do).
        for (chain, rule) in cases(f) {
            let mut args = vec!["-t", "nat", "-C", chain];
            let owned = split_args(rule);
            args.extend(owned.iter().map(String::as_str));
            by_us.run(|| ipt.run(&args).unwrap()).unwrap();
        }
        let _ = argv(&[]);
    }
}

/// An `AddRule` of `rule` (iptables argv) to `chain`, encoded as `iptables-nft` does.
fn append(f: Family, chain: &str, rule: &str) -> Change {
    xt::append(f, "nat", chain, &split_args(rule))
        .unwrap_or_else(|| panic!("not encodable: {rule}"))
}

#[test]
fn jumps_to_a_chain_made_in_one_transaction_are_found_by_handle() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let f = Family::V4;
    if !tools(f) {
        eprintln!("skipped: iptables-nft not installed");
        return;
    }
    let ns = NetNs::new_anonymous().unwrap();
    let ipt = Iptables::new(f);
    let nff = f.nf_family();
    ns.run(|| {
        let mut tx = base();
        tx.declare_chain("POSTROUTING");
        tx.append(
            "CNI-HOSTPORT-DNAT",
            &split_args("-p tcp --dport 9 -j CNI-X"),
        );
        ipt.restore(&tx).unwrap();
        let mut nf = NfTables::open().unwrap();
        let jump = |chain: &str| format!("-p tcp --dport 80 -j {chain}");
        // portmap's layout: the chain, its rules, then its jumps.
        let mut changes = vec![Change::AddChain {
            family: nff,
            table: "nat".into(),
            chain: "CNI-DN-bbb".into(),
        }];
        changes.push(append(
            f,
            "CNI-DN-bbb",
            "-p tcp --dport 80 -s 10.0.0.2 -j CNI-X",
        ));
        changes.push(append(
            f,
            "CNI-DN-bbb",
            "-p tcp --dport 80 -j DNAT --to-destination 10.0.0.2:8080",
        ));
        changes.push(append(f, "CNI-HOSTPORT-DNAT", &jump("CNI-DN-bbb")));
        changes.push(append(
            f,
            "CNI-HOSTPORT-DNAT",
            "-p udp --dport 53 -j CNI-DN-bbb",
        ));
        // bridge's layout: per address, the chain's two rules, then the jump.
        changes.push(Change::AddChain {
            family: nff,
            table: "nat".into(),
            chain: "CNI-ccc".into(),
        });
        for src in ["10.0.0.2", "10.1.0.2"] {
            changes.push(append(f, "CNI-ccc", "-d 10.0.0.0/16 -j ACCEPT"));
            changes.push(append(f, "CNI-ccc", "! -d 224.0.0.0/4 -j MASQUERADE"));
            changes.push(append(f, "POSTROUTING", &format!("-s {src} -j CNI-ccc")));
        }
        nf.commit(&changes, None).unwrap();

        for (entry, chain, n) in [
            ("CNI-HOSTPORT-DNAT", "CNI-DN-bbb", 2),
            ("POSTROUTING", "CNI-ccc", 2),
        ] {
            let info = nf.chain(nff, "nat", chain).unwrap().unwrap();
            let own = nf.rules(nff, "nat", Some(chain)).unwrap();
            let found = nf
                .jumps_by_handle(nff, "nat", entry, chain, &info, &own)
                .unwrap()
                .unwrap_or_else(|| panic!("{chain}: not found by handle"));
            let listed: Vec<u64> = nf
                .rules(nff, "nat", Some(entry))
                .unwrap()
                .into_iter()
                .filter(|r| r.jump_target() == Some(chain))
                .map(|r| r.handle)
                .collect();
            assert_eq!(listed.len(), n);
            assert_eq!(found.iter().map(|r| r.handle).collect::<Vec<_>>(), listed);
        }

        // A jump from another chain is a reference the probe cannot account for: `None`,
        // and the caller lists.
        ipt.run(&["-t", "nat", "-A", "CNI-X", "-j", "CNI-DN-bbb"])
            .unwrap();
        let info = nf.chain(nff, "nat", "CNI-DN-bbb").unwrap().unwrap();
        let own = nf.rules(nff, "nat", Some("CNI-DN-bbb")).unwrap();
        assert!(
            nf.jumps_by_handle(nff, "nat", "CNI-HOSTPORT-DNAT", "CNI-DN-bbb", &info, &own)
                .unwrap()
                .is_none()
        );
        // `jumps_to` then lists `CNI-HOSTPORT-DNAT`: the same two jumps.
        let listed = nf
            .jumps_to(nff, "nat", "CNI-HOSTPORT-DNAT", "CNI-DN-bbb", &info, &own)
            .unwrap();
        assert_eq!(listed.len(), 2);
        assert!(
            listed
                .iter()
                .all(|r| r.jump_target() == Some("CNI-DN-bbb") && r.chain == "CNI-HOSTPORT-DNAT")
        );
    })
    .unwrap();
}
