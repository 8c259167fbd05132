//! Conntrack (ctnetlink): flushing stale UDP entries for published ports, so that a client
//! that sent to a host port before the mapping existed (or after it moved) is not stuck on an
//! old translation.

use crate::netlink::NetlinkError;
use crate::netlink::{Builder, Socket, attrs};
use nix::sys::socket::SockProtocol;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const IPCTNL_MSG_CT_GET_STATS: u16 = 5;
const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_ZONE: u16 = 18;
const IPPROTO_UDP: u8 = 17;

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

/// Deletes the conntrack entries of `family` (`false` = IPv4, `true` = IPv6) whose original
/// tuple is UDP to one of `ports`. Returns how many were deleted.
///
/// Finding them needs a dump, and a dump walks the whole conntrack hash table, shared by all
/// namespaces (262,144 buckets on a machine with 4 GiB or more: about 10 ms, whatever the
/// number of entries). When the namespace has no entries at all, the dump is skipped.
pub fn delete_udp_by_dport(ipv6: bool, ports: &[u16]) -> Result<usize, NetlinkError> {
    if ports.is_empty() {
        return Ok(0);
    }
    let family = if ipv6 { 10 } else { 2 };
    let mut sock = Socket::open(SockProtocol::NetlinkNetFilter)?;
    if entries(&mut sock) == Some(0) {
        return Ok(0);
    }
    let get = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    let del = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
    let entries = sock.dump(get, &nfgenmsg(family), "dump conntrack")?;
    let mut deleted = 0;
    for e in entries {
        if e.payload.len() < 4 {
            continue;
        }
        let mut orig: Option<&[u8]> = None;
        let mut zone: Option<&[u8]> = None;
        for (ty, d) in attrs(&e.payload[4..]) {
            match ty {
                CTA_TUPLE_ORIG => orig = Some(d),
                CTA_ZONE => zone = Some(d),
                _ => {}
            }
        }
        let Some(orig) = orig else { continue };
        let mut proto = 0u8;
        let mut dport = 0u16;
        for (ty, d) in attrs(orig) {
            if ty == CTA_TUPLE_PROTO {
                for (pty, pd) in attrs(d) {
                    match pty {
                        CTA_PROTO_NUM => proto = pd.first().copied().unwrap_or(0),
                        CTA_PROTO_DST_PORT if pd.len() >= 2 => {
                            dport = u16::from_be_bytes([pd[0], pd[1]])
                        }
                        _ => {}
                    }
                }
            }
        }
        if proto != IPPROTO_UDP || !ports.contains(&dport) {
            continue;
        }
        let mut b = Builder::new(&nfgenmsg(family));
        b.nest(CTA_TUPLE_ORIG, true, |b| b.buf.extend_from_slice(orig));
        if let Some(z) = zone {
            b.attr(CTA_ZONE, z);
        }
        match sock.request(del, 0, &b.buf, "delete conntrack entry") {
            Ok(_) => deleted += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}
