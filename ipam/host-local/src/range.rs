//! Address ranges and range sets: membership, overlap, text form, and the round-robin
//! candidate order of the reference allocator (`backend/allocator/{range,range_set,allocator}.go`).
//!
//! A [`Range`] is always canonical (validated by [`crate::config`]): one family, `start <= end`,
//! both inside `subnet`. A [`RangeSet`] is a non-empty list of disjoint ranges of one family;
//! exactly one address is allocated per set.

use cni::result::{ip_string, net_string};
use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One canonical range of a range set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// The network (host bits clear); its prefix is the result's prefix.
    pub subnet: IpNet,
    /// First allocatable address, inclusive.
    pub start: IpAddr,
    /// Last allocatable address, inclusive.
    pub end: IpAddr,
    /// Never allocated; reported as the result's gateway.
    pub gateway: IpAddr,
}

/// True if both addresses are of one family.
pub fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// The address as an integer (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The next address (wrapping), as Go's `ip.NextIP`.
pub fn next_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(1))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(1))),
    }
}

impl Range {
    /// True if `ip` (IPv4-mapped forms included) is in the subnet and within `start..=end`,
    /// as Go's `Range.Contains`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        same_family(ip, self.start)
            && self.subnet.contains(&ip)
            && to_u128(ip) >= to_u128(self.start)
            && to_u128(ip) <= to_u128(self.end)
    }

    /// True if the two ranges share an address (different families never overlap).
    pub fn overlaps(&self, other: &Range) -> bool {
        same_family(self.start, other.start)
            && (self.contains(other.start)
                || self.contains(other.end)
                || other.contains(self.start)
                || other.contains(self.end))
    }

    /// Number of addresses in `start..=end` (saturating for the whole IPv6 space).
    pub fn size(&self) -> u128 {
        (to_u128(self.end) - to_u128(self.start)).saturating_add(1)
    }
}

impl fmt::Display for Range {
    /// `start-end`, the reference's text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", ip_string(self.start), ip_string(self.end))
    }
}

/// A non-empty list of disjoint ranges of one family: one address is allocated per set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl RangeSet {
    /// The range containing `ip`, if any.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    /// True if some range of the set contains `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    /// True if any range of `self` overlaps any range of `other`.
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    /// True if the set is IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.0.first().is_some_and(|r| r.start.is_ipv4())
    }

    /// The candidates of one allocation, in the reference's round-robin order.
    pub fn candidates(&self, last_reserved: Option<IpAddr>) -> Candidates<'_> {
        Candidates::new(self, last_reserved)
    }
}

impl fmt::Display for RangeSet {
    /// `a-b,c-d`, the reference's text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Text of a subnet as Go prints an `IPNet` (`10.0.0.0/24`).
pub fn subnet_string(n: &IpNet) -> String {
    net_string(n)
}

/// The reference's `RangeIter`: starts after `last_reserved` when the set contains it (else at
/// the first range's start), walks every range in order, wraps, skips each range's gateway,
/// and ends when it comes back to where it started. Yields `(address, range index)`.
///
/// Every call to `next` is bounded (it only skips gateways, at most one per range), and the
/// whole walk visits each address at most once.
pub struct Candidates<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: Option<IpAddr>,
    start: Option<IpAddr>,
    done: bool,
}

impl<'a> Candidates<'a> {
    fn new(set: &'a RangeSet, last_reserved: Option<IpAddr>) -> Candidates<'a> {
        let mut it = Candidates {
            set,
            idx: 0,
            cur: None,
            start: None,
            done: set.0.is_empty(),
        };
        let last = last_reserved.map(|ip| ip.to_canonical());
        match last.and_then(|l| set.0.iter().position(|r| r.contains(l)).map(|i| (l, i))) {
            Some((l, i)) => {
                it.idx = i;
                it.cur = Some(l);
            }
            None => it.start = set.0.first().map(|r| r.start),
        }
        it
    }
}

impl Iterator for Candidates<'_> {
    type Item = (IpAddr, usize);

    fn next(&mut self) -> Option<(IpAddr, usize)> {
        let n = self.set.0.len();
        // Each turn either returns or skips a gateway; a full cycle ends at `start`, so the
        // number of turns is bounded by the set's size plus the number of ranges.
        for _ in 0..=n.saturating_mul(2).saturating_add(2) {
            if self.done {
                return None;
            }
            let r = &self.set.0[self.idx];
            let cand = match self.cur {
                None => {
                    self.cur = Some(r.start);
                    self.start = Some(r.start);
                    r.start
                }
                Some(c) => {
                    let nc = if c == r.end {
                        self.idx = (self.idx + 1) % n;
                        self.set.0[self.idx].start
                    } else {
                        next_ip(c)
                    };
                    self.cur = Some(nc);
                    match self.start {
                        None => self.start = Some(nc),
                        Some(s) if s == nc => {
                            self.done = true;
                            return None;
                        }
                        Some(_) => {}
                    }
                    nc
                }
            };
            if cand == self.set.0[self.idx].gateway {
                continue;
            }
            return Some((cand, self.idx));
        }
        // Unreachable for canonical sets (a gateway is one address per range); stop safely.
        self.done = true;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn range(subnet: &str, start: &str, end: &str, gw: &str) -> Range {
        Range {
            subnet: subnet.parse().unwrap(),
            start: ip(start),
            end: ip(end),
            gateway: ip(gw),
        }
    }

    fn all(set: &RangeSet, last: Option<&str>) -> Vec<String> {
        set.candidates(last.map(ip))
            .map(|(a, _)| a.to_string())
            .collect()
    }

    #[test]
    fn contains_and_text() {
        let r = range("10.0.0.0/24", "10.0.0.10", "10.0.0.20", "10.0.0.1");
        assert!(r.contains(ip("10.0.0.10")));
        assert!(r.contains(ip("10.0.0.20")));
        assert!(r.contains(ip("::ffff:10.0.0.15")));
        assert!(!r.contains(ip("10.0.0.9")));
        assert!(!r.contains(ip("10.0.0.21")));
        assert!(!r.contains(ip("fd00::10")));
        assert_eq!(r.to_string(), "10.0.0.10-10.0.0.20");
        assert_eq!(r.size(), 11);
        let s = RangeSet(vec![
            r.clone(),
            range("10.0.1.0/24", "10.0.1.1", "10.0.1.254", "10.0.1.1"),
        ]);
        assert_eq!(s.to_string(), "10.0.0.10-10.0.0.20,10.0.1.1-10.0.1.254");
        assert!(s.contains(ip("10.0.1.7")));
        assert!(s.is_ipv4());
    }

    #[test]
    fn overlap_rules() {
        let a = range("10.0.0.0/24", "10.0.0.1", "10.0.0.254", "10.0.0.1");
        let b = range("10.0.0.0/25", "10.0.0.1", "10.0.0.126", "10.0.0.1");
        let c = range("10.0.1.0/24", "10.0.1.1", "10.0.1.254", "10.0.1.1");
        let d = range("fd00::/64", "fd00::1", "fd00::ffff", "fd00::1");
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(!a.overlaps(&d));
        // Same subnet, disjoint start/end: no overlap.
        let lo = range("10.0.0.0/24", "10.0.0.1", "10.0.0.99", "10.0.0.1");
        let hi = range("10.0.0.0/24", "10.0.0.100", "10.0.0.200", "10.0.0.1");
        assert!(!lo.overlaps(&hi));
    }

    #[test]
    fn round_robin_from_start_skips_gateway_and_ends() {
        let s = RangeSet(vec![range(
            "10.0.0.0/29",
            "10.0.0.1",
            "10.0.0.6",
            "10.0.0.1",
        )]);
        assert_eq!(
            all(&s, None),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
    }

    #[test]
    fn round_robin_after_last_wraps_and_tries_last_last() {
        let s = RangeSet(vec![range(
            "10.0.0.0/29",
            "10.0.0.1",
            "10.0.0.6",
            "10.0.0.1",
        )]);
        assert_eq!(
            all(&s, Some("10.0.0.4")),
            ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        );
        // A last IP outside the set restarts from the first range's start.
        assert_eq!(all(&s, Some("192.168.0.1"))[0], "10.0.0.2");
        // Last IP equal to the end: wraps at once.
        assert_eq!(all(&s, Some("10.0.0.6"))[0], "10.0.0.2");
    }

    #[test]
    fn round_robin_across_ranges() {
        let s = RangeSet(vec![
            range("10.0.0.0/24", "10.0.0.1", "10.0.0.3", "10.0.0.1"),
            range("10.0.1.0/24", "10.0.1.5", "10.0.1.6", "10.0.1.1"),
        ]);
        assert_eq!(
            all(&s, Some("10.0.0.3")),
            ["10.0.1.5", "10.0.1.6", "10.0.0.2", "10.0.0.3"]
        );
        assert_eq!(
            all(&s, None),
            ["10.0.0.2", "10.0.0.3", "10.0.1.5", "10.0.1.6"]
        );
    }

    #[test]
    fn gateway_only_range_yields_nothing() {
        let s = RangeSet(vec![range(
            "10.0.0.0/24",
            "10.0.0.1",
            "10.0.0.1",
            "10.0.0.1",
        )]);
        assert!(all(&s, None).is_empty());
        assert!(all(&s, Some("10.0.0.1")).is_empty());
    }

    #[test]
    fn ipv6_candidates() {
        let s = RangeSet(vec![range("fd00::/64", "fd00::1", "fd00::3", "fd00::1")]);
        assert_eq!(all(&s, None), ["fd00::2", "fd00::3"]);
        assert!(!s.is_ipv4());
    }

    #[test]
    fn every_start_visits_each_non_gateway_once() {
        // Property: from any last-reserved position, the walk is a permutation of the set
        // minus the gateways.
        let s = RangeSet(vec![
            range("10.0.0.0/28", "10.0.0.1", "10.0.0.14", "10.0.0.5"),
            range("10.0.1.0/28", "10.0.1.3", "10.0.1.9", "10.0.1.1"),
        ]);
        let mut expected: Vec<String> = all(&s, None);
        expected.sort();
        assert_eq!(expected.len(), 13 + 7);
        for last in [None, Some("10.0.0.5"), Some("10.0.1.9"), Some("10.0.0.14")] {
            let mut got = all(&s, last);
            got.sort();
            assert_eq!(got, expected, "{last:?}");
        }
    }
}
