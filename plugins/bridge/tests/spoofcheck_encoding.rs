//! Root-only: the `macspoofchk` chains and rules that bridge adds over netlink
//! ([`bridge::spoofcheck::setup_changes`]) are the very ones `nft` makes from the ADD script,
//! and the netlink teardown leaves what the `nft` teardown leaves. Two fresh namespaces hold
//! the same `bridge nat` table (another attachment set up by `nft` first); the attachment goes
//! in by `nft` in one and over netlink in the other, and what the kernel then reports (chain,
//! comment, expressions byte for byte) and what `nft list table` prints must be equal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bridge::spoofcheck::{
    first_setup_changes, ref_id, setup, setup_changes, setup_script, teardown, teardown_script,
};
use cni_kernel::NetNs;
use cni_kernel::firewall::nft;
use cni_kernel::nftables::{NfFamily, NfTables};
use cni_testkit::{assert_same_table, table_state};

#[test]
fn netlink_rules_equal_nft_rules() {
    cni_testkit::require_root_and_nft!();
    let other = ref_id("other", "eth0");
    let refid = ref_id("abc", "eth0");
    let (veth, mac) = ("veth12345678901", "0a:11:22:33:44:ff");
    let by_nft = NetNs::new_anonymous().unwrap();
    let by_us = NetNs::new_anonymous().unwrap();
    let base = || nft::apply(&setup_script("vethother", "02:00:00:00:00:01", &other)).unwrap();
    let nft_state = by_nft
        .run(|| {
            base();
            nft::apply(&setup_script(veth, mac, &refid)).unwrap();
            table_state(NfFamily::Bridge, "nat")
        })
        .unwrap();
    let our_state = by_us
        .run(|| {
            base();
            let mut nf = NfTables::open().unwrap();
            nf.commit(&setup_changes(veth, mac, &refid).unwrap(), None)
                .unwrap();
            table_state(NfFamily::Bridge, "nat")
        })
        .unwrap();
    assert!(nft_state.1.contains(mac), "{}", nft_state.1);
    assert_same_table(&nft_state, &our_state, "ADD");

    // A re-ADD (its chains exist) is refused over netlink and goes to `nft`, which rewrites
    // the chains and, as the reference does, appends one more jump.
    let nft_again = by_nft
        .run(|| {
            nft::apply(&setup_script(veth, mac, &refid)).unwrap();
            table_state(NfFamily::Bridge, "nat")
        })
        .unwrap();
    let our_again = by_us
        .run(|| {
            setup(veth, mac, &refid).unwrap();
            table_state(NfFamily::Bridge, "nat")
        })
        .unwrap();
    assert_same_table(&nft_again, &our_again, "re-ADD");

    // DEL: the netlink teardown leaves what the nft teardown leaves.
    let nft_after = by_nft
        .run(|| {
            let listing = nft::list_table("bridge", "nat").unwrap().unwrap();
            nft::apply(&teardown_script(&listing, &refid)).unwrap();
            table_state(NfFamily::Bridge, "nat")
        })
        .unwrap();
    let our_after = by_us
        .run(|| {
            teardown(&refid).unwrap();
            teardown(&refid).unwrap();
            table_state(NfFamily::Bridge, "nat")
        })
        .unwrap();
    assert!(!nft_after.1.contains(mac), "{}", nft_after.1);
    assert!(nft_after.1.contains("vethother"), "{}", nft_after.1);
    assert_same_table(&nft_after, &our_after, "DEL");
}

#[test]
fn what_nft_would_write_differently_is_left_to_it() {
    let refid = ref_id("abc", "eth0");
    assert!(setup_changes("veth1", "02:11:22:33:44:55", &refid).is_some());
    assert!(setup_changes("veth1", "02:11:22:33:44", &refid).is_none());
    assert!(setup_changes("veth1", "02:11:22:33:44:5", &refid).is_none());
    assert!(setup_changes("veth1", "02:11:22:33:44:zz", &refid).is_none());
    assert!(setup_changes("veth1234567890123", "02:11:22:33:44:55", &refid).is_none());
    assert!(setup_changes("veth1", "02:11:22:33:44:55", &ref_id("a\"b", "eth0")).is_none());
}

/// The node's first ADD (no `bridge nat` yet) over netlink ([`first_setup_changes`]) makes
/// the very table `nft` makes from the script, base chain included; `setup` takes that path.
#[test]
fn first_add_over_netlink_equals_nft() {
    cni_testkit::require_root_and_nft!();
    let refid = ref_id("abc", "eth0");
    let (veth, mac) = ("veth12345678901", "0a:11:22:33:44:ff");
    let by_nft = NetNs::new_anonymous().unwrap();
    let by_us = NetNs::new_anonymous().unwrap();
    let by_setup = NetNs::new_anonymous().unwrap();
    let nft_state = by_nft
        .run(|| {
            nft::apply(&setup_script(veth, mac, &refid)).unwrap();
            table_state(NfFamily::Bridge, "nat")
        })
        .unwrap();
    let our_state = by_us
        .run(|| {
            let mut nf = NfTables::open().unwrap();
            assert!(!nf.table_exists(NfFamily::Bridge, "nat").unwrap());
            nf.commit(&first_setup_changes(veth, mac, &refid).unwrap(), None)
                .unwrap();
            table_state(NfFamily::Bridge, "nat")
        })
        .unwrap();
    assert!(
        nft_state.1.contains("type filter hook prerouting"),
        "{}",
        nft_state.1
    );
    assert_same_table(&nft_state, &our_state, "first ADD");
    let setup_state = by_setup
        .run(|| {
            setup(veth, mac, &refid).unwrap();
            table_state(NfFamily::Bridge, "nat")
        })
        .unwrap();
    assert_same_table(&nft_state, &setup_state, "first ADD by setup");
}
