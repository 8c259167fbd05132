//! Conntrack (ctnetlink): flushing stale UDP entries for published ports, so that a client
//! that sent to a host port before the mapping existed (or after it moved) is not stuck on an
//! old translation.
//!
//! Finding the entries is the expensive part: the conntrack hash table is shared by all
//! namespaces (262,144 buckets on a machine with 4 GiB or more), and a ctnetlink dump locks
//! every bucket in turn — about 12 ms per family, whatever the number of entries. The
//! `/proc/<tid>/net/nf_conntrack` listing walks the same table under RCU without taking any
//! lock, lists both families in one pass, and shows only the calling thread's namespace:
//! about 1 ms. So the entries are found there, and deleted one by one over ctnetlink by their
//! original tuple; the dump is the fallback for kernels built without that file.

use crate::netlink::NetlinkError;
use crate::netlink::{Builder, Socket, attrs};
use crate::nftables::NfTables;
use nix::sys::socket::SockProtocol;
use std::net::IpAddr;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const IPCTNL_MSG_CT_GET_STATS: u16 = 5;
const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_ZONE: u16 = 18;
const IPPROTO_UDP: u8 = 17;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The listing of the calling thread's namespace (not `/proc/self`: the caller may be a
/// thread that joined another namespace).
const PROC_LISTING: &str = "/proc/thread-self/net/nf_conntrack";

fn nfgenmsg(family: u8) -> [u8; 4] {
    [family, 0, 0, 0]
}

/// The number of conntrack entries of the calling thread's namespace (`nf_conntrack_count`),
/// or `None` if the kernel does not say.
fn entries(sock: &mut Socket) -> Option<u32> {
    let get = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS;
    let msgs = sock
        .request(get, 0, &nfgenmsg(0), "get conntrack stats")
        .ok()?;
    msgs.iter().find_map(|m| {
        attrs(m.payload.get(4..)?)
            .into_iter()
            .find(|(t, _)| *t == CTA_STATS_GLOBAL_ENTRIES)
            .and_then(|(_, d)| {
                d.get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            })
    })
}

/// The original tuple of one UDP entry, as much as a delete request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct UdpEntry {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    zone: u16,
}

/// Parses one line of `nf_conntrack` if it is a UDP entry (pure). The format is
/// `ipv4 2 udp 17 <timeout> src=.. dst=.. sport=.. dport=.. [flags] src=.. (reply) ...
/// zone=N use=N`; the first `src`/`dst`/`sport`/`dport` are the original direction.
fn parse_line(line: &str) -> Option<UdpEntry> {
    let mut tok = line.split_ascii_whitespace();
    let l3 = tok.next()?;
    if l3 != "ipv4" && l3 != "ipv6" {
        return None;
    }
    tok.next()?;
    tok.next()?;
    if tok.next()? != "17" {
        return None;
    }
    let (mut src, mut dst, mut sport, mut dport, mut zone) = (None, None, None, None, 0u16);
    for t in tok {
        let Some((k, v)) = t.split_once('=') else {
            continue;
        };
        match k {
            "src" if src.is_none() => src = Some(v.parse::<IpAddr>().ok()?),
            "dst" if dst.is_none() => dst = Some(v.parse::<IpAddr>().ok()?),
            "sport" if sport.is_none() => sport = Some(v.parse::<u16>().ok()?),
            "dport" if dport.is_none() => dport = Some(v.parse::<u16>().ok()?),
            "zone" => zone = v.parse::<u16>().unwrap_or(0),
            _ => {}
        }
    }
    let (src, dst) = (src?, dst?);
    if src.is_ipv4() != (l3 == "ipv4") || dst.is_ipv4() != src.is_ipv4() {
        return None;
    }
    Some(UdpEntry {
        src,
        dst,
        sport: sport?,
        dport: dport?,
        zone,
    })
}

/// The UDP entries of `listing` whose destination port is in the family's list (pure).
fn matching(listing: &str, v4: &[u16], v6: &[u16]) -> Vec<UdpEntry> {
    listing
        .lines()
        .filter_map(parse_line)
        .filter(|e| {
            let ports = if e.src.is_ipv4() { v4 } else { v6 };
            ports.contains(&e.dport)
        })
        .collect()
}

/// The delete request for one entry: nfgenmsg + the original tuple (+ zone).
fn delete_request(e: &UdpEntry) -> Vec<u8> {
    let family = if e.src.is_ipv4() { AF_INET } else { AF_INET6 };
    let mut b = Builder::new(&nfgenmsg(family));
    b.nest(CTA_TUPLE_ORIG, true, |b| {
        b.nest(CTA_TUPLE_IP, true, |b| match (e.src, e.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                b.attr(CTA_IP_V4_SRC, &s.octets());
                b.attr(CTA_IP_V4_DST, &d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                b.attr(CTA_IP_V6_SRC, &s.octets());
                b.attr(CTA_IP_V6_DST, &d.octets());
            }
            _ => {}
        });
        b.nest(CTA_TUPLE_PROTO, true, |b| {
            b.u8(CTA_PROTO_NUM, IPPROTO_UDP);
            b.attr(CTA_PROTO_SRC_PORT, &e.sport.to_be_bytes());
            b.attr(CTA_PROTO_DST_PORT, &e.dport.to_be_bytes());
        });
    });
    if e.zone != 0 {
        b.attr(CTA_ZONE, &e.zone.to_be_bytes());
    }
    b.buf
}

/// Deletes the conntrack entries of the calling thread's namespace whose original tuple is
/// UDP to one of `v4` (IPv4) or `v6` (IPv6) destination ports. Returns how many were
/// deleted. When the namespace has no entries at all, nothing is walked. Uses the socket of
/// `nf` when given: after a rule-deleting transaction the release of every
/// `NETLINK_NETFILTER` socket of the namespace waits for the kernel's deferred destruction of
/// those rules, so one socket for both jobs is one release.
pub fn delete_udp_by_dport(
    nf: Option<&mut NfTables>,
    v4: &[u16],
    v6: &[u16],
) -> Result<usize, NetlinkError> {
    if v4.is_empty() && v6.is_empty() {
        return Ok(0);
    }
    let mut own;
    let sock = match nf {
        Some(nf) => &mut nf.sock,
        None => {
            own = Socket::open(SockProtocol::NetlinkNetFilter)?;
            &mut own
        }
    };
    if entries(sock) == Some(0) {
        return Ok(0);
    }
    let found = match std::fs::read_to_string(PROC_LISTING) {
        Ok(listing) => matching(&listing, v4, v6),
        Err(_) => {
            let mut found = dump_matching(sock, AF_INET, v4)?;
            found.extend(dump_matching(sock, AF_INET6, v6)?);
            found
        }
    };
    let del = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
    let mut deleted = 0;
    for e in &found {
        match sock.request(del, 0, &delete_request(e), "delete conntrack entry") {
            Ok(_) => deleted += 1,
            Err(err) if err.is_not_found() => {}
            Err(err) => return Err(err),
        }
    }
    Ok(deleted)
}

/// The UDP entries of one family with a destination port in `ports`, from a ctnetlink dump
/// (the fallback when the `/proc` listing is not there).
fn dump_matching(
    sock: &mut Socket,
    family: u8,
    ports: &[u16],
) -> Result<Vec<UdpEntry>, NetlinkError> {
    if ports.is_empty() {
        return Ok(Vec::new());
    }
    let get = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    let msgs = sock.dump(get, &nfgenmsg(family), "dump conntrack")?;
    let mut out = Vec::new();
    for m in msgs {
        let Some(body) = m.payload.get(4..) else {
            continue;
        };
        let mut orig = None;
        let mut zone = 0u16;
        for (ty, d) in attrs(body) {
            match ty {
                CTA_TUPLE_ORIG => orig = Some(d),
                CTA_ZONE if d.len() >= 2 => zone = u16::from_be_bytes([d[0], d[1]]),
                _ => {}
            }
        }
        let Some(orig) = orig else { continue };
        if let Some(e) = parse_tuple(orig, zone)
            && ports.contains(&e.dport)
        {
            out.push(e);
        }
    }
    Ok(out)
}

/// A UDP original tuple from its ctnetlink attributes (pure).
fn parse_tuple(orig: &[u8], zone: u16) -> Option<UdpEntry> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, 0u8, 0u16, 0u16);
    for (ty, d) in attrs(orig) {
        match ty {
            CTA_TUPLE_IP => {
                for (ity, id) in attrs(d) {
                    let ip = match (ity, id.len()) {
                        (CTA_IP_V4_SRC | CTA_IP_V4_DST, 4) => {
                            IpAddr::from(<[u8; 4]>::try_from(id).ok()?)
                        }
                        (CTA_IP_V6_SRC | CTA_IP_V6_DST, 16) => {
                            IpAddr::from(<[u8; 16]>::try_from(id).ok()?)
                        }
                        _ => continue,
                    };
                    if ity == CTA_IP_V4_SRC || ity == CTA_IP_V6_SRC {
                        src = Some(ip);
                    } else {
                        dst = Some(ip);
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (pty, pd) in attrs(d) {
                    match pty {
                        CTA_PROTO_NUM => proto = pd.first().copied().unwrap_or(0),
                        CTA_PROTO_SRC_PORT if pd.len() >= 2 => {
                            sport = u16::from_be_bytes([pd[0], pd[1]])
                        }
                        CTA_PROTO_DST_PORT if pd.len() >= 2 => {
                            dport = u16::from_be_bytes([pd[0], pd[1]])
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if proto != IPPROTO_UDP {
        return None;
    }
    Some(UdpEntry {
        src: src?,
        dst: dst?,
        sport,
        dport,
        zone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "\
ipv4     2 udp      17 29 src=10.1.0.9 dst=10.1.0.1 sport=40000 dport=8080 [UNREPLIED] src=10.88.0.2 dst=10.1.0.9 sport=80 dport=40000 mark=0 zone=0 use=2
ipv4     2 udp      17 29 src=10.1.0.9 dst=10.1.0.1 sport=40001 dport=9999 [UNREPLIED] src=10.1.0.1 dst=10.1.0.9 sport=9999 dport=40001 mark=0 zone=0 use=2
ipv4     2 tcp      6 431999 ESTABLISHED src=10.1.0.9 dst=10.1.0.1 sport=40002 dport=8080 src=10.1.0.1 dst=10.1.0.9 sport=8080 dport=40002 [ASSURED] mark=0 zone=0 use=2
ipv6     10 udp      17 25 src=2001:0db8:0000:0000:0000:0000:0000:0009 dst=2001:0db8:0000:0000:0000:0000:0000:0001 sport=5353 dport=8080 packets=1 bytes=40 [UNREPLIED] src=2001:0db8:0000:0000:0000:0000:0000:0001 dst=2001:0db8:0000:0000:0000:0000:0000:0009 sport=8080 dport=5353 packets=0 bytes=0 mark=0 zone=3 use=2
ipv6     10 icmpv6   58 29 src=fe80:0000:0000:0000:0000:0000:0000:0001 dst=ff02:0000:0000:0000:0000:0000:0000:0002 type=133 code=0 id=0 [UNREPLIED] mark=0 zone=0 use=2
garbage
";

    #[test]
    fn finds_udp_entries_by_family_and_port() {
        let v4 = matching(LISTING, &[8080], &[]);
        assert_eq!(
            v4,
            vec![UdpEntry {
                src: "10.1.0.9".parse().unwrap(),
                dst: "10.1.0.1".parse().unwrap(),
                sport: 40000,
                dport: 8080,
                zone: 0,
            }]
        );
        let v6 = matching(LISTING, &[], &[8080]);
        assert_eq!(v6.len(), 1);
        assert_eq!(v6[0].src, "2001:db8::9".parse::<IpAddr>().unwrap());
        assert_eq!((v6[0].sport, v6[0].dport, v6[0].zone), (5353, 8080, 3));
        assert!(
            matching(LISTING, &[80], &[80]).is_empty(),
            "reply ports are not matched"
        );
        assert_eq!(matching(LISTING, &[8080, 9999], &[8080]).len(), 3);
    }

    #[test]
    fn delete_request_round_trips_through_the_tuple_parser() {
        for e in matching(LISTING, &[8080], &[8080]) {
            let req = delete_request(&e);
            let body = &req[4..];
            let list = attrs(body);
            let orig = list.iter().find(|(t, _)| *t == CTA_TUPLE_ORIG).unwrap().1;
            let zone = list
                .iter()
                .find(|(t, _)| *t == CTA_ZONE)
                .map(|(_, d)| u16::from_be_bytes([d[0], d[1]]))
                .unwrap_or(0);
            assert_eq!(parse_tuple(orig, zone), Some(e.clone()));
            assert_eq!(req[0], if e.src.is_ipv4() { AF_INET } else { AF_INET6 });
        }
    }
}
