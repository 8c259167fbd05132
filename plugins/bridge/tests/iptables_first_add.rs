//! Root-only: on a node where `iptables-nft` has not created the `nat` table yet, bridge's
//! masquerade ADD over netlink ([`bridge::masq::iptables::with_nat_declared`] around
//! [`bridge::masq::iptables::plan_new_nf`]) makes the very table `iptables-restore` makes
//! from the same plan: two fresh namespaces, one each way, and what the kernel reports
//! (rules byte for byte), what `nft list table` and what `iptables-save` print must be equal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bridge::masq::iptables::{TABLE, plan_new, plan_new_nf, with_nat_declared};
use cni_kernel::NetNs;
use cni_kernel::firewall::Family;
use cni_kernel::firewall::iptables::Iptables;
use cni_kernel::nftables::NfTables;
use cni_testkit::{assert_same_table, table_state};
use ipnet::IpNet;

#[test]
fn first_add_over_netlink_equals_iptables_restore() {
    cni_testkit::require_root_and_nft!();
    for (f, addr) in [
        (Family::V4, "10.88.0.2/16"),
        (Family::V6, "2001:db8:1::2/64"),
    ] {
        let ipt = Iptables::new(f);
        if !ipt.available() || !ipt.uses_nf_tables() {
            eprintln!("skipped: needs iptables-nft");
            return;
        }
        let addrs: Vec<IpNet> = vec![addr.parse().unwrap()];
        let save = || cni_testkit::iptables_save_table(ipt.bin(), TABLE);
        let by_tool = NetNs::new_anonymous().unwrap();
        let by_us = NetNs::new_anonymous().unwrap();
        let tool_state = by_tool
            .run(|| {
                ipt.restore(&plan_new("mynet", "abc123", &addrs)).unwrap();
                (table_state(f.nf_family(), TABLE), save())
            })
            .unwrap();
        let our_state = by_us
            .run(|| {
                let mut nf = NfTables::open().unwrap();
                assert!(!nf.table_exists(f.nf_family(), TABLE).unwrap());
                let plan = plan_new_nf(f, "mynet", "abc123", &addrs).unwrap();
                nf.commit(&with_nat_declared(f, plan), None).unwrap();
                (table_state(f.nf_family(), TABLE), save())
            })
            .unwrap();
        assert!(tool_state.1.contains("MASQUERADE"), "{}", tool_state.1);
        assert_eq!(tool_state.1, our_state.1, "{f:?}: iptables-save");
        assert_same_table(&tool_state.0, &our_state.0, &format!("{f:?}"));
    }
}
