//! Root-only: the rules [`cni_kernel::firewall::xt`] encodes are the very rules
//! `iptables-nft` makes. Each rule is added once by `iptables-restore` and once by an
//! nf_tables transaction, in two fresh namespaces, and what the kernel then reports for
//! them (expressions, byte for byte) and what `iptables-save` prints must be equal. The one
//! deliberate difference: `--dport` is written as the x_tables `tcp`/`udp` match (as older
//! `iptables-nft` releases did), where 1.8.9 writes `payload` + `cmp`; the comparison maps
//! the one onto the other, and `iptables-save`, `iptables -C` and [`xt::dport`] must still
//! read both alike.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cni_kernel::NetNs;
use cni_kernel::firewall::Family;
use cni_kernel::firewall::iptables::{Iptables, Restore, argv, split_args};
use cni_kernel::firewall::xt;
use cni_kernel::nftables::{Change, Expr, NfTables, Rule, TRANSPORT_HEADER};

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
        ],
    }
}

const CHAINS: [&str; 4] = ["CNI-X", "CNI-aaa", "CNI-DN-aaa", "CNI-HOSTPORT-DNAT"];

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

/// `exprs` with iptables-nft 1.8.9's native `--dport` (`payload` of the transport header's
/// bytes 2..4 + `cmp eq`, after `meta l4proto` + `cmp`) replaced by the `tcp`/`udp` match
/// [`xt::encode`] writes.
fn as_port_match(exprs: &[Expr]) -> Vec<Expr> {
    let proto = exprs.iter().find_map(|e| match e {
        Expr::Cmp { data, .. } if data.len() == 1 => Some(data[0]),
        _ => None,
    });
    let mut out = Vec::new();
    let mut i = 0;
    while i < exprs.len() {
        if let (
            Expr::Payload {
                base: TRANSPORT_HEADER,
                offset: 2,
                len: 2,
            },
            Some(Expr::Cmp { op: 0, data }),
        ) = (&exprs[i], exprs.get(i + 1))
        {
            let port = u16::from_be_bytes([data[0], data[1]]);
            let mut info = Vec::new();
            for v in [0, u16::MAX, port, port] {
                info.extend_from_slice(&v.to_ne_bytes());
            }
            info.resize(16, 0);
            out.push(Expr::Match {
                name: if proto == Some(17) { "udp" } else { "tcp" }.into(),
                rev: 0,
                info,
            });
            i += 2;
        } else {
            out.push(exprs[i].clone());
            i += 1;
        }
    }
    out
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
            .map(|(chain, rule)| {
                let (exprs, compat) = xt::encode(&split_args(rule), f)
                    .unwrap_or_else(|| panic!("not encodable: {rule}"));
                Change::AppendRule {
                    family: f.nf_family(),
                    table: "nat".into(),
                    chain: chain.into(),
                    exprs,
                    compat: Some(compat),
                }
            })
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
        for chain in ["CNI-aaa", "POSTROUTING", "CNI-DN-aaa", "CNI-HOSTPORT-DNAT"] {
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
                let native = as_port_match(&x.exprs) != x.exprs;
                assert_eq!(as_port_match(&x.exprs), y.exprs, "{f:?} {chain}");
                if !native {
                    assert_eq!(x.raw_exprs, y.raw_exprs, "{f:?} {chain}");
                }
                let port = |r: &Rule| xt::dport(r);
                assert_eq!(port(x), port(y), "{f:?} {chain}");
                assert_eq!(native, port(y).is_some(), "{f:?} {chain}");
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
