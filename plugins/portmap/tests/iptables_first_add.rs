//! Root-only: a network's first iptables ADD on an `iptables-nft` node goes in over netlink
//! ([`portmap::iptables::add_fast`], which then commits [`portmap::iptables::first_changes`])
//! and makes the very table `iptables-restore` makes from the listing path's transaction
//! ([`portmap::iptables::add_transaction`]). Each case runs in two fresh namespaces holding
//! the same `nat` table beforehand (none, one bridge's masquerade, another tool's chains);
//! what the kernel reports (rules byte for byte, chain order and handles), what `nft list
//! table` and what `iptables-save` print must be equal, and so must what each ADD records
//! for its rollback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cni::config::NetConf;
use cni_kernel::NetNs;
use cni_kernel::firewall::Family;
use cni_kernel::firewall::iptables::{Iptables, Restore, split_args};
use cni_kernel::nftables::NfTables;
use cni_testkit::{assert_same_table, table_state};
use ipnet::IpNet;
use portmap::config::{Backend, Config};
use portmap::iptables::{TABLE, add_fast, add_transaction};

fn config(extra: &str) -> Config {
    let json = format!(
        r#"{{"name":"enc","type":"portmap","cniVersion":"1.0.0"{extra},
        "runtimeConfig":{{"portMappings":[
            {{"hostPort":8080,"containerPort":80,"protocol":"tcp"}},
            {{"hostPort":5353,"containerPort":53,"protocol":"udp"}}]}}}}"#
    );
    let nc = NetConf::parse(json.as_bytes()).unwrap();
    Config::parse(&nc, || Backend::Iptables).unwrap()
}

/// What the `nat` table holds before the ADD: `-N`/`-A` lines for iptables-restore.
fn before(lines: &[&str]) -> Restore {
    let mut tx = Restore::new(TABLE);
    for l in lines {
        let args = split_args(l);
        match args.first().map(String::as_str) {
            Some("-N") => tx.new_chain(&args[1]),
            Some("-A") => tx.append(&args[1], &args[2..]),
            _ => panic!("{l}"),
        };
    }
    tx
}

fn save(ipt: &Iptables) -> String {
    cni_testkit::iptables_save_table(ipt.bin(), TABLE)
}

#[test]
fn first_add_over_netlink_equals_iptables_restore() {
    cni_testkit::require_root_and_nft!();
    let bridge4: &[&str] = &[
        "-N CNI-0123",
        "-A CNI-0123 -d 10.88.0.0/16 -j ACCEPT",
        "-A POSTROUTING -s 10.88.0.4/32 -j CNI-0123",
    ];
    let bridge6: &[&str] = &[
        "-N CNI-0123",
        "-A CNI-0123 -d fd00::/64 -j ACCEPT",
        "-A POSTROUTING -s fd00::4/128 -j CNI-0123",
    ];
    let other: &[&str] = &[
        "-N KUBE-X",
        "-A PREROUTING -j KUBE-X",
        "-A OUTPUT -j KUBE-X",
    ];
    let ext: &[&str] = &["-N EXT-MARK"];
    let cases: [(&str, &str, &[&str]); 9] = [
        ("", "10.88.0.5/16", &[]),
        ("", "fd00::5/64", &[]),
        ("", "10.88.0.5/16", bridge4),
        ("", "fd00::5/64", bridge6),
        ("", "10.88.0.5/16", other),
        (r#","markMasqBit":5"#, "10.88.0.5/16", bridge4),
        (r#","snat":false"#, "10.88.0.5/16", &[]),
        (r#","snat":false"#, "fd00::5/64", other),
        (r#","externalSetMarkChain":"EXT-MARK""#, "10.88.0.5/16", ext),
    ];
    for (extra, ip, pre) in cases {
        let conf = config(extra);
        let ip: IpNet = ip.parse().unwrap();
        let f = Family::of(&ip.addr());
        let ipt = Iptables::new(f);
        if !ipt.available() || !ipt.uses_nf_tables() {
            eprintln!("skipped: needs iptables-nft");
            return;
        }
        let case = format!("{extra} {ip} {pre:?}");
        let by_tool = NetNs::new_anonymous().unwrap();
        let by_us = NetNs::new_anonymous().unwrap();
        let setup = || {
            if !pre.is_empty() {
                ipt.restore(&before(pre)).unwrap();
            }
        };
        let (tool_applied, tool_state) = by_tool
            .run(|| {
                setup();
                let listing = ipt.save(TABLE).unwrap();
                let (tx, applied) = add_transaction(&conf, "abc", ip, &listing);
                ipt.restore(&tx).unwrap();
                (applied, (table_state(f.nf_family(), TABLE), save(&ipt)))
            })
            .unwrap();
        let (our_applied, our_state) = by_us
            .run(|| {
                setup();
                let gen_before = NfTables::open().unwrap().generation().unwrap();
                let applied = add_fast(&conf, "abc", ip)
                    .unwrap_or_else(|| panic!("{case}: not applied over netlink"));
                // One transaction, whatever it had to create.
                let gen_after = NfTables::open().unwrap().generation().unwrap();
                assert_eq!(gen_after, gen_before + 1, "{case}");
                (applied, (table_state(f.nf_family(), TABLE), save(&ipt)))
            })
            .unwrap();
        assert!(tool_state.1.contains("-j DNAT"), "{case}: {}", tool_state.1);
        assert_eq!(tool_state.1, our_state.1, "{case}: iptables-save");
        assert_same_table(&tool_state.0, &our_state.0, &case);
        assert_eq!(tool_applied, our_applied, "{case}");
        assert!(!our_applied.created_chains.is_empty(), "{case}");

        // The next container's ADD finds the shared state complete (the usual path) on both.
        let next: IpNet = if f == Family::V4 {
            "10.88.0.6/16".parse().unwrap()
        } else {
            "fd00::6/64".parse().unwrap()
        };
        let then = |ns: &NetNs| {
            ns.run(|| {
                add_fast(&conf, "def", next).unwrap_or_else(|| panic!("{case}: second ADD"));
                (table_state(f.nf_family(), TABLE), save(&ipt))
            })
            .unwrap()
        };
        let (a, b) = (then(&by_tool), then(&by_us));
        assert_eq!(a.1, b.1, "{case}: iptables-save after a second ADD");
        assert_same_table(&a.0, &b.0, &case);
    }
}

/// Where some of the shared chains exist already (another configuration's, or a half-made
/// state), the first ADD is not made over netlink: only the listing can tell what is
/// missing. Nothing is changed by the attempt.
#[test]
fn partial_shared_state_is_left_to_the_listing() {
    cni_testkit::require_root_and_nft!();
    let ipt = Iptables::new(Family::V4);
    if !ipt.available() || !ipt.uses_nf_tables() {
        eprintln!("skipped: needs iptables-nft");
        return;
    }
    let conf = config("");
    let ns = NetNs::new_anonymous().unwrap();
    ns.run(|| {
        ipt.restore(&before(&[
            "-N CNI-HOSTPORT-DNAT",
            "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
        ]))
        .unwrap();
        let was = save(&ipt);
        assert!(add_fast(&conf, "abc", "10.88.0.5/16".parse().unwrap()).is_none());
        assert_eq!(save(&ipt), was);
    })
    .unwrap();
}
