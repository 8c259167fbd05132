//! Addresses.

use super::{Builder, NLM_F_CREATE, NLM_F_EXCL, Netlink, NetlinkError, attr_u32, attrs};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const IFA_FLAGS: u16 = 8;

/// `IFA_F_DADFAILED`.
pub const IFA_F_DADFAILED: u32 = 0x08;
/// `IFA_F_TENTATIVE`.
pub const IFA_F_TENTATIVE: u32 = 0x40;

/// An address on a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    /// The address with its prefix length (host bits kept).
    pub addr: IpNet,
    /// `IFA_F_*` flags.
    pub flags: u32,
    pub scope: u8,
}

impl Address {
    /// DAD has not finished yet.
    pub fn is_tentative(&self) -> bool {
        self.flags & IFA_F_TENTATIVE != 0
    }
    /// DAD failed.
    pub fn dad_failed(&self) -> bool {
        self.flags & IFA_F_DADFAILED != 0
    }
}

pub(crate) fn family_of(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { 2 } else { 10 }
}

pub(crate) fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

pub(crate) fn ip_from(family: u8, d: &[u8]) -> Option<IpAddr> {
    match family {
        2 if d.len() >= 4 => Some(IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3]))),
        10 if d.len() >= 16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&d[..16]);
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

fn ifaddrmsg(family: u8, prefix: u8, index: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0] = family;
    h[1] = prefix;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h
}

fn addr_msg(index: u32, addr: &IpNet) -> Builder {
    let ip = addr.addr();
    let mut b = Builder::new(&ifaddrmsg(family_of(&ip), addr.prefix_len(), index));
    let bytes = ip_bytes(&ip);
    b.attr(IFA_LOCAL, &bytes);
    b.attr(IFA_ADDRESS, &bytes);
    b
}

impl Netlink {
    /// Adds `addr` (with prefix) to the link; IPv4 gets its broadcast address as `ip addr` and
    /// the reference set it. EEXIST is returned as an error.
    pub fn add_address(&mut self, index: u32, addr: &IpNet) -> Result<(), NetlinkError> {
        let mut b = addr_msg(index, addr);
        if let IpNet::V4(n) = addr
            && n.prefix_len() < 31
        {
            b.attr(IFA_BROADCAST, &n.broadcast().octets());
        }
        self.sock
            .request(
                RTM_NEWADDR,
                NLM_F_CREATE | NLM_F_EXCL,
                &b.buf,
                &format!("add address {addr} to link #{index}"),
            )
            .map(|_| ())
    }

    /// Removes `addr` from the link.
    pub fn del_address(&mut self, index: u32, addr: &IpNet) -> Result<(), NetlinkError> {
        let b = addr_msg(index, addr);
        self.sock
            .request(
                RTM_DELADDR,
                0,
                &b.buf,
                &format!("delete address {addr} from link #{index}"),
            )
            .map(|_| ())
    }

    /// Addresses of one link (or all links with `None`).
    pub fn addresses(&mut self, index: Option<u32>) -> Result<Vec<Address>, NetlinkError> {
        self.addresses_dump(index, 0)
    }

    /// The addresses of one family (IPv4 with `v4`) of one link (or all links). Cheaper than
    /// [`Netlink::addresses`] on a node: the kernel only reports that family, and a node with
    /// hundreds of veths has an IPv6 link-local address on each but IPv4 on none.
    pub fn addresses_of_family(
        &mut self,
        index: Option<u32>,
        v4: bool,
    ) -> Result<Vec<Address>, NetlinkError> {
        self.addresses_dump(index, if v4 { 2 } else { 10 })
    }

    fn addresses_dump(
        &mut self,
        index: Option<u32>,
        family: u8,
    ) -> Result<Vec<Address>, NetlinkError> {
        let b = Builder::new(&ifaddrmsg(family, 0, 0));
        let msgs = self.sock.dump(RTM_GETADDR, &b.buf, "list addresses")?;
        let mut out = Vec::new();
        for m in msgs {
            let p = &m.payload;
            if m.ty != RTM_NEWADDR || p.len() < 8 {
                continue;
            }
            let family = p[0];
            let prefix = p[1];
            let mut flags = u32::from(p[2]);
            let scope = p[3];
            let idx = u32::from_ne_bytes([p[4], p[5], p[6], p[7]]);
            if index.is_some_and(|i| i != idx) {
                continue;
            }
            let mut local = None;
            let mut address = None;
            for (ty, d) in attrs(&p[8..]) {
                match ty {
                    IFA_LOCAL => local = ip_from(family, d),
                    IFA_ADDRESS => address = ip_from(family, d),
                    IFA_FLAGS => flags = attr_u32(d).unwrap_or(flags),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address)
                && let Ok(addr) = IpNet::new(ip, prefix)
            {
                out.push(Address {
                    index: idx,
                    addr,
                    flags,
                    scope,
                });
            }
        }
        Ok(out)
    }
}
