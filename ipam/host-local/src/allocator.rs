//! The allocator: ADD, DEL, CHECK, GC and STATUS logic over a [`Store`], with the reference's
//! semantics (`backend/allocator/allocator.go`, `main.go`) and its messages.
//!
//! Pure: everything it knows about the world comes through the [`Store`] trait, so the same
//! code runs over the disk store and over [`crate::store::MemStore`] in tests.
//!
//! Deliberate differences from the reference:
//! * several requested IPs in one range set: the first one (in accumulation order) is used,
//!   not an arbitrary one (Go map order); the others are reported as unfulfilled;
//! * a failure in a later set releases only what *this* ADD reserved (the reference releases
//!   every file of the attachment, including reservations it did not make);
//! * CHECK with a `prevResult` also verifies that the addresses of the `prevResult` that fall
//!   in our range sets are exactly those reserved for the attachment.

use crate::error::HostLocalError;
use crate::range::RangeSet;
use crate::store::{Owner, Store, StoreError};
use cni::IpConfig;
use cni::gc::{Attachment, has_attachment, has_container};
use cni::result::ip_string;
use ipnet::IpNet;
use std::net::IpAddr;

/// Why one range set could not be served (the part after `failed to allocate for range N: `).
#[derive(Debug, thiserror::Error)]
pub enum AllocReason {
    #[error("requested ip {0} is subnet's gateway")]
    RequestedGateway(String),
    #[error("requested IP address {ip} is not available in range set {set}")]
    RequestedTaken { ip: String, set: String },
    #[error("{ip} has been allocated to {id}, duplicate allocation is not allowed")]
    Duplicate { ip: String, id: String },
    #[error("no IP addresses available in range set: {0}")]
    Exhausted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One address handed out by ADD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// Index of the range set it came from.
    pub set: usize,
    pub ip: IpAddr,
    /// The subnet of its range (its prefix is the result's prefix).
    pub subnet: IpNet,
    pub gateway: IpAddr,
}

impl Allocation {
    /// The result entry: `ip/prefix`, the range's gateway, no interface.
    pub fn ip_config(&self) -> IpConfig {
        IpConfig {
            address: IpNet::new(self.ip, self.subnet.prefix_len()).unwrap_or(self.subnet),
            gateway: Some(self.gateway),
            interface: None,
        }
    }
}

/// ADD: one address per range set, requested ones first; all-or-nothing.
pub fn allocate(
    store: &mut dyn Store,
    sets: &[RangeSet],
    id: &str,
    ifname: &str,
    requested: &[IpAddr],
) -> Result<Vec<Allocation>, HostLocalError> {
    let mut remaining: Vec<IpAddr> = Vec::new();
    for ip in requested.iter().map(|ip| ip.to_canonical()) {
        if !remaining.contains(&ip) {
            remaining.push(ip);
        }
    }
    let mut made: Vec<Allocation> = Vec::with_capacity(sets.len());
    for (idx, set) in sets.iter().enumerate() {
        let wanted = remaining
            .iter()
            .position(|ip| set.contains(*ip))
            .map(|i| remaining.remove(i));
        match allocate_one(store, set, idx, id, ifname, wanted) {
            Ok(a) => made.push(a),
            Err(reason) => {
                rollback(store, &made, id, ifname);
                return Err(HostLocalError::Allocate { idx, reason });
            }
        }
    }
    if !remaining.is_empty() {
        rollback(store, &made, id, ifname);
        return Err(HostLocalError::Unfulfilled(remaining));
    }
    Ok(made)
}

fn allocate_one(
    store: &mut dyn Store,
    set: &RangeSet,
    idx: usize,
    id: &str,
    ifname: &str,
    wanted: Option<IpAddr>,
) -> Result<Allocation, AllocReason> {
    if let Some(ip) = wanted {
        let r = set
            .range_for(ip)
            .ok_or_else(|| AllocReason::Exhausted(set.to_string()))?;
        if ip == r.gateway {
            return Err(AllocReason::RequestedGateway(ip_string(ip)));
        }
        if !store.reserve(ip, id, ifname)? {
            return Err(AllocReason::RequestedTaken {
                ip: ip_string(ip),
                set: set.to_string(),
            });
        }
        let a = Allocation {
            set: idx,
            ip,
            subnet: r.subnet,
            gateway: r.gateway,
        };
        record_last(store, &a, id, ifname)?;
        return Ok(a);
    }
    // Duplicate allocation: any file of this attachment (or a legacy file of this container)
    // named after an address of this set.
    for rec in store.owned(id)? {
        if !(rec.owner.is_attachment(id, ifname) || rec.owner.is_legacy_of(id)) {
            continue;
        }
        if let Some(ip) = rec.ip().filter(|ip| set.contains(*ip)) {
            return Err(AllocReason::Duplicate {
                ip: ip_string(ip),
                id: id.to_string(),
            });
        }
    }
    let last = store.last_reserved(idx);
    for (ip, ri) in set.candidates(last) {
        if store.reserve(ip, id, ifname)? {
            let r = &set.0[ri];
            let a = Allocation {
                set: idx,
                ip,
                subnet: r.subnet,
                gateway: r.gateway,
            };
            record_last(store, &a, id, ifname)?;
            return Ok(a);
        }
    }
    Err(AllocReason::Exhausted(set.to_string()))
}

/// Writes `last_reserved_ip.<set>`; if that fails, the fresh reservation is undone.
fn record_last(
    store: &mut dyn Store,
    a: &Allocation,
    id: &str,
    ifname: &str,
) -> Result<(), AllocReason> {
    if let Err(e) = store.set_last_reserved(a.set, a.ip) {
        let _ = store.remove(&ip_string(a.ip), &Owner::attachment(id, ifname));
        return Err(e.into());
    }
    Ok(())
}

/// Undoes the reservations of this ADD (best effort: the runtime will DEL anyway).
fn rollback(store: &mut dyn Store, made: &[Allocation], id: &str, ifname: &str) {
    let owner = Owner::attachment(id, ifname);
    for a in made.iter().rev() {
        let _ = store.remove(&ip_string(a.ip), &owner);
    }
}

/// DEL: removes what the reference's DEL removes (it releases once per range set): every file
/// whose content is `<id>\r\n<ifname>`, and the legacy `<id>` files when there were none of
/// those or when there are several range sets. Returns the names removed. Finding nothing is
/// success; failures are collected and reported together after trying everything.
pub fn release(
    store: &mut dyn Store,
    id: &str,
    ifname: &str,
    n_sets: usize,
) -> Result<Vec<String>, HostLocalError> {
    let records = store.owned(id)?;
    let mut removed = Vec::new();
    let mut errors: Vec<HostLocalError> = Vec::new();
    for r in records.iter().filter(|r| r.owner.is_attachment(id, ifname)) {
        match store.remove(&r.name, &r.owner) {
            Ok(true) => removed.push(r.name.clone()),
            Ok(false) => {}
            Err(e) => errors.push(e.into()),
        }
    }
    if removed.is_empty() || n_sets >= 2 {
        for r in records.iter().filter(|r| r.owner.is_legacy_of(id)) {
            match store.remove(&r.name, &r.owner) {
                Ok(true) => removed.push(r.name.clone()),
                Ok(false) => {}
                Err(e) => errors.push(e.into()),
            }
        }
    }
    HostLocalError::collect(errors).map(|_| removed)
}

/// CHECK: the attachment has a reservation (new or legacy format); with `prev` (the
/// `prevResult` addresses), the addresses of `prev` inside our range sets must be exactly the
/// ones reserved for the attachment.
pub fn check(
    store: &mut dyn Store,
    sets: &[RangeSet],
    id: &str,
    ifname: &str,
    prev: Option<&[IpAddr]>,
) -> Result<(), HostLocalError> {
    let records: Vec<_> = store
        .owned(id)?
        .into_iter()
        .filter(|r| r.owner.is_attachment(id, ifname) || r.owner.is_legacy_of(id))
        .collect();
    if records.is_empty() {
        return Err(HostLocalError::NotFound(id.to_string()));
    }
    let Some(prev) = prev else { return Ok(()) };
    let in_sets = |ip: &IpAddr| sets.iter().any(|s| s.contains(*ip));
    let reserved: Vec<IpAddr> = records
        .iter()
        .filter_map(|r| r.ip())
        .filter(in_sets)
        .collect();
    let reserved_new: Vec<IpAddr> = records
        .iter()
        .filter(|r| r.owner.is_attachment(id, ifname))
        .filter_map(|r| r.ip())
        .filter(in_sets)
        .collect();
    let expected: Vec<IpAddr> = prev
        .iter()
        .map(|ip| ip.to_canonical())
        .filter(in_sets)
        .collect();
    if let Some(ip) = expected.iter().find(|ip| !reserved.contains(ip)) {
        return Err(HostLocalError::Check(format!(
            "host-local: address {} of prevResult is not reserved for container {id} interface {ifname}",
            ip_string(*ip)
        )));
    }
    if let Some(ip) = reserved_new.iter().find(|ip| !expected.contains(ip)) {
        return Err(HostLocalError::Check(format!(
            "host-local: address {} is reserved for container {id} interface {ifname} but is not in prevResult",
            ip_string(*ip)
        )));
    }
    Ok(())
}

/// What GC did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Files removed.
    pub removed: Vec<String>,
    /// Files left alone because they cannot be attributed (reported on stderr).
    pub skipped: Vec<String>,
}

/// GC: removes every address file whose attachment is not in `valid` (legacy `<id>` files: if
/// no valid attachment has that container ID). Unreadable or unparsable files are left alone
/// and listed in the report; removal failures are collected and returned after trying all.
pub fn gc(store: &mut dyn Store, valid: &[Attachment]) -> Result<GcReport, HostLocalError> {
    let mut report = GcReport::default();
    let mut errors: Vec<HostLocalError> = Vec::new();
    for e in store.entries()? {
        let owner = match e.owner {
            Ok(Some(o)) => o,
            Ok(None) => {
                report
                    .skipped
                    .push(format!("{}: content is not a reservation", e.name));
                continue;
            }
            Err(err) => {
                report
                    .skipped
                    .push(format!("{}: unreadable: {err}", e.name));
                continue;
            }
        };
        let keep = match &owner {
            Owner::Attachment { id, ifname } => has_attachment(valid, id, ifname),
            Owner::Legacy(id) => has_container(valid, id),
        };
        if keep {
            continue;
        }
        match store.remove(&e.name, &owner) {
            Ok(true) => report.removed.push(e.name),
            Ok(false) => {}
            Err(err) => errors.push(err.into()),
        }
    }
    HostLocalError::collect(errors).map(|_| report)
}

/// STATUS: every range set has a free, non-gateway address (probing in allocation order, so
/// the first probe usually answers).
pub fn ensure_free(store: &mut dyn Store, sets: &[RangeSet]) -> Result<(), HostLocalError> {
    for (idx, set) in sets.iter().enumerate() {
        let last = store.last_reserved(idx);
        let mut free = false;
        for (ip, _) in set.candidates(last) {
            if !store.exists(ip)? {
                free = true;
                break;
            }
        }
        if !free {
            return Err(HostLocalError::Unavailable(format!(
                "no IP addresses available in range set: {set}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::Range;
    use crate::store::MemStore;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(subnet: &str, start: &str, end: &str) -> RangeSet {
        let n: IpNet = subnet.parse().unwrap();
        RangeSet(vec![Range {
            subnet: n,
            start: ip(start),
            end: ip(end),
            gateway: crate::range::next_ip(n.network()),
        }])
    }

    fn v4() -> RangeSet {
        set("10.1.0.0/24", "10.1.0.1", "10.1.0.254")
    }

    fn add(s: &mut MemStore, sets: &[RangeSet], id: &str) -> Result<Vec<IpAddr>, HostLocalError> {
        allocate(s, sets, id, "eth0", &[]).map(|v| v.into_iter().map(|a| a.ip).collect())
    }

    #[test]
    fn round_robin_skips_gateway_and_continues_after_release() {
        let sets = [v4()];
        let mut s = MemStore::new();
        assert_eq!(add(&mut s, &sets, "a").unwrap(), [ip("10.1.0.2")]);
        assert_eq!(add(&mut s, &sets, "b").unwrap(), [ip("10.1.0.3")]);
        release(&mut s, "a", "eth0", 1).unwrap();
        // Round robin: the released .2 is not reused before the range wraps.
        assert_eq!(add(&mut s, &sets, "c").unwrap(), [ip("10.1.0.4")]);
        assert_eq!(s.last.get(&0), Some(&ip("10.1.0.4")));
        let r = allocate(&mut s, &sets, "c", "eth0", &[]).unwrap_err();
        assert_eq!(
            r.to_string(),
            "failed to allocate for range 0: 10.1.0.4 has been allocated to c, duplicate allocation is not allowed"
        );
        // Same container, other interface: fine.
        assert!(allocate(&mut s, &sets, "c", "eth1", &[]).is_ok());
    }

    #[test]
    fn wraps_and_exhausts_then_recovers() {
        let sets = [set("10.1.0.0/24", "10.1.0.1", "10.1.0.3")];
        let mut s = MemStore::new();
        assert_eq!(add(&mut s, &sets, "a").unwrap(), [ip("10.1.0.2")]);
        assert_eq!(add(&mut s, &sets, "b").unwrap(), [ip("10.1.0.3")]);
        let e = add(&mut s, &sets, "c").unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to allocate for range 0: no IP addresses available in range set: 10.1.0.1-10.1.0.3"
        );
        release(&mut s, "a", "eth0", 1).unwrap();
        assert_eq!(add(&mut s, &sets, "c").unwrap(), [ip("10.1.0.2")]);
    }

    #[test]
    fn requested_ips() {
        let sets = [v4(), set("fd00::/64", "fd00::1", "fd00::ffff")];
        let mut s = MemStore::new();
        let got = allocate(
            &mut s,
            &sets,
            "a",
            "eth0",
            &[ip("fd00::9"), ip("10.1.0.50")],
        )
        .unwrap();
        assert_eq!(got[0].ip, ip("10.1.0.50"));
        assert_eq!(got[1].ip, ip("fd00::9"));
        assert_eq!(got[0].ip_config().address.to_string(), "10.1.0.50/24");
        assert_eq!(got[0].ip_config().gateway, Some(ip("10.1.0.1")));
        assert_eq!(s.last.get(&0), Some(&ip("10.1.0.50")));
        // Taken.
        let e = allocate(&mut s, &sets, "b", "eth0", &[ip("10.1.0.50")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to allocate for range 0: requested IP address 10.1.0.50 is not available in range set 10.1.0.1-10.1.0.254"
        );
        // Gateway.
        let e = allocate(&mut s, &sets, "b", "eth0", &[ip("10.1.0.1")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to allocate for range 0: requested ip 10.1.0.1 is subnet's gateway"
        );
        // Outside every set; the set-0 reservation made meanwhile is rolled back.
        let before = s.files.len();
        let e = allocate(
            &mut s,
            &sets,
            "b",
            "eth0",
            &[ip("192.168.0.1"), ip("10.9.0.1")],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to allocate all requested IPs: 192.168.0.1 10.9.0.1"
        );
        assert_eq!(s.files.len(), before);
        // Two in one set: the second is unfulfilled.
        let e = allocate(
            &mut s,
            &sets,
            "b",
            "eth0",
            &[ip("10.1.0.60"), ip("10.1.0.61")],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to allocate all requested IPs: 10.1.0.61"
        );
        assert_eq!(s.files.len(), before);
        // IPv4-mapped form is canonicalized.
        let got = allocate(&mut s, &sets[..1], "m", "eth0", &[ip("::ffff:10.1.0.70")]).unwrap();
        assert_eq!(got[0].ip, ip("10.1.0.70"));
    }

    #[test]
    fn later_set_failure_releases_only_this_add() {
        let sets = [v4(), set("10.2.0.0/24", "10.2.0.1", "10.2.0.2")];
        let mut s = MemStore::new();
        // Fill set 1 (only .2 is allocatable).
        allocate(&mut s, &sets[1..], "x", "eth0", &[]).unwrap();
        let before = s.reserved();
        let e = add(&mut s, &sets, "a").unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to allocate for range 1: no IP addresses available in range set: 10.2.0.1-10.2.0.2"
        );
        assert_eq!(s.reserved(), before);
        // A duplicate in set 1 does not remove the attachment's earlier reservation there.
        let mut s = MemStore::new();
        allocate(&mut s, &[sets[1].clone()], "a", "eth0", &[]).unwrap();
        let before = s.reserved();
        assert!(add(&mut s, &sets, "a").is_err());
        assert_eq!(s.reserved(), before);
        // An I/O failure in set 1 rolls back set 0.
        let mut s = MemStore::new();
        s.fail_reserve = Some(ip("10.2.0.2"));
        assert!(matches!(
            add(&mut s, &sets, "z").unwrap_err(),
            HostLocalError::Allocate { idx: 1, .. }
        ));
        assert!(s.files.is_empty());
    }

    #[test]
    fn release_semantics_including_legacy() {
        let mut s = MemStore::new();
        s.files.insert("10.1.0.2".into(), b"a\r\neth0".to_vec());
        s.files.insert("10.1.0.3".into(), b"a\r\neth1".to_vec());
        s.files.insert("10.1.0.4".into(), b"a".to_vec());
        s.files.insert("10.1.0.5".into(), b"b\r\neth0".to_vec());
        s.files.insert("stray".into(), b"  a\r\neth0\n".to_vec());
        let removed = release(&mut s, "a", "eth0", 1).unwrap();
        assert_eq!(removed, ["10.1.0.2", "stray"]);
        // With one set, legacy files stay when new-format ones were found.
        assert!(s.files.contains_key("10.1.0.4"));
        // Nothing new-format left: legacy goes.
        assert_eq!(release(&mut s, "a", "eth0", 1).unwrap(), ["10.1.0.4"]);
        assert!(release(&mut s, "a", "eth0", 1).unwrap().is_empty());
        assert!(s.files.contains_key("10.1.0.3") && s.files.contains_key("10.1.0.5"));
        // With two sets, the reference's second pass removes legacy files too.
        s.files.insert("10.1.0.6".into(), b"b".to_vec());
        assert_eq!(
            release(&mut s, "b", "eth0", 2).unwrap(),
            ["10.1.0.5", "10.1.0.6"]
        );
    }

    #[test]
    fn legacy_file_blocks_duplicate_add_and_satisfies_check() {
        let sets = [v4()];
        let mut s = MemStore::new();
        s.files.insert("10.1.0.9".into(), b"a".to_vec());
        let e = add(&mut s, &sets, "a").unwrap_err();
        assert!(
            e.to_string().contains("10.1.0.9 has been allocated to a"),
            "{e}"
        );
        check(&mut s, &sets, "a", "eth0", None).unwrap();
    }

    #[test]
    fn check_rules() {
        let sets = [v4()];
        let mut s = MemStore::new();
        let e = check(&mut s, &sets, "a", "eth0", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "host-local: Failed to find address added by container a"
        );
        let got = add(&mut s, &sets, "a").unwrap();
        check(&mut s, &sets, "a", "eth0", None).unwrap();
        check(&mut s, &sets, "a", "eth0", Some(&got)).unwrap();
        // Addresses outside our sets (another IPAM's) are ignored.
        check(
            &mut s,
            &sets,
            "a",
            "eth0",
            Some(&[got[0], ip("192.168.9.9")]),
        )
        .unwrap();
        let e = check(&mut s, &sets, "a", "eth0", Some(&[ip("10.1.0.77")])).unwrap_err();
        assert!(
            e.to_string()
                .contains("10.1.0.77 of prevResult is not reserved"),
            "{e}"
        );
        let e = check(&mut s, &sets, "a", "eth0", Some(&[])).unwrap_err();
        assert!(e.to_string().contains("is not in prevResult"), "{e}");
        assert!(check(&mut s, &sets, "a", "eth1", None).is_err());
    }

    #[test]
    fn gc_rules() {
        let mut s = MemStore::new();
        s.files.insert("10.1.0.2".into(), b"keep\r\neth0".to_vec());
        s.files.insert("10.1.0.3".into(), b"keep\r\neth1".to_vec());
        s.files.insert("10.1.0.4".into(), b"gone\r\neth0".to_vec());
        s.files.insert("10.1.0.5".into(), b"keep".to_vec());
        s.files.insert("10.1.0.6".into(), b"gone".to_vec());
        s.files
            .insert("10.1.0.7".into(), b"not a reservation".to_vec());
        s.files.insert("notes".into(), b"gone\r\neth0".to_vec());
        s.last.insert(0, ip("10.1.0.4"));
        let valid = [Attachment {
            container_id: "keep".into(),
            ifname: "eth0".into(),
        }];
        let r = gc(&mut s, &valid).unwrap();
        assert_eq!(r.removed, ["10.1.0.3", "10.1.0.4", "10.1.0.6"]);
        assert_eq!(r.skipped.len(), 1);
        let left: Vec<String> = s.files.keys().cloned().collect();
        assert_eq!(left, ["10.1.0.2", "10.1.0.5", "10.1.0.7", "notes"]);
        assert_eq!(s.last.get(&0), Some(&ip("10.1.0.4")));
        // Empty list: everything attributable is stale.
        let r = gc(&mut s, &[]).unwrap();
        assert_eq!(r.removed, ["10.1.0.2", "10.1.0.5"]);
    }

    #[test]
    fn status_free_address() {
        let sets = [set("10.1.0.0/24", "10.1.0.1", "10.1.0.3")];
        let mut s = MemStore::new();
        ensure_free(&mut s, &sets).unwrap();
        add(&mut s, &sets, "a").unwrap();
        ensure_free(&mut s, &sets).unwrap();
        add(&mut s, &sets, "b").unwrap();
        let e = ensure_free(&mut s, &sets).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no IP addresses available in range set: 10.1.0.1-10.1.0.3"
        );
        assert_eq!(cni::CniError::from(e).code, 50);
    }

    /// A small deterministic PRNG (xorshift) for the property tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn property_random_add_del_never_double_allocates() {
        // Two sets (one with two ranges), random ADD/DEL/requested sequences: every live
        // attachment holds exactly one address per set, addresses are unique, inside their
        // set and never a gateway; exhaustion happens only when a set is really full.
        let sets = [
            RangeSet(vec![
                Range {
                    subnet: "10.1.0.0/28".parse().unwrap(),
                    start: ip("10.1.0.1"),
                    end: ip("10.1.0.6"),
                    gateway: ip("10.1.0.3"),
                },
                Range {
                    subnet: "10.1.1.0/28".parse().unwrap(),
                    start: ip("10.1.1.9"),
                    end: ip("10.1.1.12"),
                    gateway: ip("10.1.1.1"),
                },
            ]),
            set("fd00::/120", "fd00::1", "fd00::9"),
        ];
        let capacity = [9usize, 8usize];
        for seed in 1..40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut s = MemStore::new();
            let mut live: Vec<(String, Vec<IpAddr>)> = Vec::new();
            for step in 0..300 {
                if live.is_empty() || rng.below(3) != 0 {
                    let id = format!("c{seed}-{step}");
                    let req: Vec<IpAddr> = if rng.below(4) == 0 {
                        vec![ip(&format!("10.1.0.{}", rng.below(7) + 1))]
                    } else {
                        vec![]
                    };
                    match allocate(&mut s, &sets, &id, "eth0", &req) {
                        Ok(a) => {
                            assert_eq!(a.len(), 2);
                            for x in &a {
                                assert!(sets[x.set].contains(x.ip));
                                assert_ne!(x.ip, sets[x.set].range_for(x.ip).unwrap().gateway);
                            }
                            live.push((id, a.iter().map(|x| x.ip).collect()));
                        }
                        Err(e) => {
                            let full = live.len() >= capacity[0].min(capacity[1]);
                            assert!(full || !req.is_empty(), "seed {seed} step {step}: {e}");
                        }
                    }
                } else {
                    let k = rng.below(live.len() as u64) as usize;
                    let (id, ips) = live.swap_remove(k);
                    let removed = release(&mut s, &id, "eth0", 2).unwrap();
                    assert_eq!(removed.len(), ips.len());
                }
                let mut all: Vec<IpAddr> = live.iter().flat_map(|(_, v)| v.clone()).collect();
                let n = all.len();
                all.sort();
                all.dedup();
                assert_eq!(all.len(), n, "seed {seed}: an address was handed out twice");
                assert_eq!(s.files.len(), n, "seed {seed}: store and live set disagree");
            }
        }
    }
}
