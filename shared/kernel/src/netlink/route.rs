//! Routes.

use super::addr::{family_of, ip_bytes, ip_from};
use super::{Builder, NLM_F_APPEND, NLM_F_CREATE, Netlink, NetlinkError, attr_u32, attrs};
use ipnet::IpNet;
use std::net::IpAddr;

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_METRICS: u16 = 8;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTAX_MTU: u16 = 2;
const RTAX_ADVMSS: u16 = 8;
const RT_TABLE_MAIN: u32 = 254;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;

/// A route to add, or one read back from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    /// Output link index.
    pub oif: Option<u32>,
    pub priority: u32,
    /// Routing table; `None` = main.
    pub table: Option<u32>,
    /// `RT_SCOPE_*`; `None` = universe (0).
    pub scope: Option<u8>,
    pub mtu: u32,
    pub advmss: u32,
}

impl RouteSpec {
    /// A route to `dst` via `gw` out of `oif`, with everything else default.
    pub fn new(dst: IpNet, gw: Option<IpAddr>, oif: Option<u32>) -> RouteSpec {
        RouteSpec {
            dst,
            gw,
            oif,
            priority: 0,
            table: None,
            scope: None,
            mtu: 0,
            advmss: 0,
        }
    }
}

fn rtmsg(family: u8, dst_len: u8, table: u8, scope: u8, ty: u8, protocol: u8) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = family;
    h[1] = dst_len;
    h[4] = table;
    h[5] = protocol;
    h[6] = scope;
    h[7] = ty;
    h
}

fn route_msg(r: &RouteSpec) -> Builder {
    let dst_ip = r.dst.network();
    let family = family_of(&dst_ip);
    let table = r.table.unwrap_or(RT_TABLE_MAIN);
    let t8 = if table < 256 { table as u8 } else { 0 };
    let mut b = Builder::new(&rtmsg(
        family,
        r.dst.prefix_len(),
        t8,
        r.scope.unwrap_or(0),
        RTN_UNICAST,
        RTPROT_BOOT,
    ));
    b.attr(RTA_DST, &ip_bytes(&dst_ip));
    if let Some(gw) = r.gw {
        b.attr(RTA_GATEWAY, &ip_bytes(&gw));
    }
    if let Some(oif) = r.oif {
        b.u32(RTA_OIF, oif);
    }
    if r.priority > 0 {
        b.u32(RTA_PRIORITY, r.priority);
    }
    if table >= 256 {
        b.u32(RTA_TABLE, table);
    }
    if r.mtu > 0 || r.advmss > 0 {
        b.nest(RTA_METRICS, false, |b| {
            if r.mtu > 0 {
                b.u32(RTAX_MTU, r.mtu);
            }
            if r.advmss > 0 {
                b.u32(RTAX_ADVMSS, r.advmss);
            }
        });
    }
    b
}

impl Netlink {
    /// Adds a route with `NLM_F_CREATE|NLM_F_APPEND` (an ECMP add, as the reference does).
    pub fn add_route(&mut self, r: &RouteSpec) -> Result<(), NetlinkError> {
        let b = route_msg(r);
        self.sock
            .request(
                RTM_NEWROUTE,
                NLM_F_CREATE | NLM_F_APPEND,
                &b.buf,
                &format!("add route {} via {:?}", r.dst, r.gw),
            )
            .map(|_| ())
    }

    /// Deletes a route.
    pub fn del_route(&mut self, r: &RouteSpec) -> Result<(), NetlinkError> {
        let b = route_msg(r);
        self.sock
            .request(RTM_DELROUTE, 0, &b.buf, &format!("delete route {}", r.dst))
            .map(|_| ())
    }

    /// All unicast routes of all tables; multipath routes are expanded, one entry per hop.
    pub fn routes(&mut self) -> Result<Vec<RouteSpec>, NetlinkError> {
        let b = Builder::new(&rtmsg(0, 0, 0, 0, 0, 0));
        let msgs = self.sock.dump(RTM_GETROUTE, &b.buf, "list routes")?;
        let mut out = Vec::new();
        for m in msgs {
            let p = &m.payload;
            if m.ty != RTM_NEWROUTE || p.len() < 12 || p[7] != RTN_UNICAST {
                continue;
            }
            let family = p[0];
            let dst_len = p[1];
            let mut table = u32::from(p[4]);
            let scope = p[6];
            let mut dst = None;
            let mut gw = None;
            let mut oif = None;
            let mut priority = 0;
            let mut hops: Vec<(Option<IpAddr>, Option<u32>)> = Vec::new();
            for (ty, d) in attrs(&p[12..]) {
                match ty {
                    RTA_DST => dst = ip_from(family, d),
                    RTA_GATEWAY => gw = ip_from(family, d),
                    RTA_OIF => oif = attr_u32(d),
                    RTA_PRIORITY => priority = attr_u32(d).unwrap_or(0),
                    RTA_TABLE => table = attr_u32(d).unwrap_or(table),
                    RTA_MULTIPATH => {
                        let mut rest = d;
                        while rest.len() >= 8 {
                            let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
                            if len < 8 || len > rest.len() {
                                break;
                            }
                            let ifindex = u32::from_ne_bytes([rest[4], rest[5], rest[6], rest[7]]);
                            let mut hgw = None;
                            for (hty, hd) in attrs(&rest[8..len]) {
                                if hty == RTA_GATEWAY {
                                    hgw = ip_from(family, hd);
                                }
                            }
                            hops.push((hgw, Some(ifindex)));
                            rest = &rest[super::align(len).min(rest.len())..];
                        }
                    }
                    _ => {}
                }
            }
            let dst_ip = match dst {
                Some(ip) => ip,
                None if family == 2 => IpAddr::from([0u8; 4]),
                None => IpAddr::from([0u8; 16]),
            };
            let Ok(dst) = IpNet::new(dst_ip, dst_len) else {
                continue;
            };
            if hops.is_empty() {
                hops.push((gw, oif));
            }
            for (gw, oif) in hops {
                out.push(RouteSpec {
                    dst,
                    gw,
                    oif,
                    priority,
                    table: Some(table),
                    scope: Some(scope),
                    mtu: 0,
                    advmss: 0,
                });
            }
        }
        Ok(out)
    }

    /// The output link the kernel would use to reach `dst` (`ip route get`).
    pub fn route_get_oif(&mut self, dst: IpAddr) -> Result<Option<u32>, NetlinkError> {
        let bits = if dst.is_ipv4() { 32 } else { 128 };
        let mut b = Builder::new(&rtmsg(family_of(&dst), bits, 0, 0, 0, 0));
        b.attr(RTA_DST, &ip_bytes(&dst));
        let msgs = self
            .sock
            .request(RTM_GETROUTE, 0, &b.buf, &format!("route get {dst}"))?;
        for m in msgs {
            if m.ty == RTM_NEWROUTE && m.payload.len() >= 12 {
                for (ty, d) in attrs(&m.payload[12..]) {
                    if ty == RTA_OIF {
                        return Ok(attr_u32(d));
                    }
                }
            }
        }
        Ok(None)
    }
}
