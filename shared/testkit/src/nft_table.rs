//! Comparing an nf_tables table written two ways (by `nft`, and by a plugin over netlink):
//! what the kernel reports for every rule, and what `nft list table` prints.

use cni_kernel::nftables::{NfFamily, NfTables};

/// A table as the kernel holds it: `(chain, comment, expressions)` per rule, in order, and
/// `nft list table`'s output.
pub type TableState = (Vec<(String, Option<String>, Vec<u8>)>, String);

/// The state of table `table` of `family` in the calling thread's namespace.
pub fn table_state(family: NfFamily, table: &str) -> TableState {
    let mut nf = NfTables::open().unwrap();
    let rules = nf
        .rules(family, table, None)
        .unwrap()
        .into_iter()
        .map(|r| (r.chain, r.comment, r.raw_exprs))
        .collect();
    let out = std::process::Command::new("nft")
        .args(["list", "table", family.name(), table])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (rules, String::from_utf8(out.stdout).unwrap())
}

/// Asserts two states are the same (the listing, then rule by rule, naming the first rule
/// that differs).
pub fn assert_same_table(by_nft: &TableState, by_us: &TableState, what: &str) {
    assert_eq!(by_nft.1, by_us.1, "{what}: nft lists them differently");
    assert_eq!(by_nft.0.len(), by_us.0.len(), "{what}: rule counts");
    for (i, (a, b)) in by_nft.0.iter().zip(&by_us.0).enumerate() {
        assert!(
            a == b,
            "{what}: rule {i} differs\n  nft:  {a:?}\n  ours: {b:?}"
        );
    }
}
