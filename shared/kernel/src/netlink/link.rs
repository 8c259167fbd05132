//! Links: bridges (the CNM *network*), veth pairs (the *endpoint*), bridge-port flags and
//! VLANs.

use super::{
    Builder, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, Netlink, NetlinkError, attr_str, attr_u32, attrs,
};
use std::os::fd::{AsRawFd, BorrowedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;

const AF_UNSPEC: u8 = 0;
const AF_BRIDGE: u8 = 7;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_EXT_MASK: u16 = 29;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IFLA_INET_CONF: u16 = 1;
const IFLA_INET6_CONF: u16 = 2;
/// `IPV4_DEVCONF_*` (1-based; `IFLA_INET_CONF` holds them from index 0 as u32).
pub const IPV4_DEVCONF_ARP_NOTIFY: u16 = 22;
pub const IPV4_DEVCONF_ROUTE_LOCALNET: u16 = 26;
/// `DEVCONF_ACCEPT_RA` (0-based; `IFLA_INET6_CONF` holds s32 values).
const DEVCONF_ACCEPT_RA: usize = 3;

const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
const IFLA_INFO_SLAVE_DATA: u16 = 5;
const VETH_INFO_PEER: u16 = 1;
const IFLA_BR_VLAN_FILTERING: u16 = 7;

const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_BRPORT_ISOLATED: u16 = 33;

const IFLA_BRIDGE_FLAGS: u16 = 0;
const IFLA_BRIDGE_VLAN_INFO: u16 = 2;
const BRIDGE_FLAGS_MASTER: u16 = 1;
const RTEXT_FILTER_BRVLAN: u32 = 1 << 1;

/// `bridge_vlan_info.flags`: the VLAN is the port's PVID.
pub const VLAN_PVID: u16 = 2;
/// `bridge_vlan_info.flags`: egress untagged.
pub const VLAN_UNTAGGED: u16 = 4;

const IFF_UP: u32 = 0x1;
const IFF_PROMISC: u32 = 0x100;
/// `IF_OPER_UP`.
pub const OPER_UP: u8 = 6;

/// What kind of link this is (`IFLA_INFO_KIND`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Veth,
    /// Any other kind, e.g. `dummy`, `vlan`.
    Other(String),
    /// No kind reported (`lo`, physical NICs).
    None,
}

/// A link as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    /// `aa:bb:cc:dd:ee:ff`, lowercase; empty if the link has no hardware address.
    pub mac: String,
    pub mtu: u32,
    pub flags: u32,
    /// Index of the master (the bridge of a bridge port).
    pub master: Option<u32>,
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    pub link: Option<u32>,
    pub oper_state: u8,
    /// Bridge ports: hairpin (`IFLA_BRPORT_MODE`).
    pub hairpin: Option<bool>,
    /// Bridge ports: isolated (`IFLA_BRPORT_ISOLATED`).
    pub isolated: Option<bool>,
    /// Bridges: `vlan_filtering`.
    pub vlan_filtering: Option<bool>,
    /// `net.ipv6.conf.<link>.accept_ra`, when the link has IPv6 (read from `IFLA_AF_SPEC`,
    /// which saves a `/proc/sys` lookup: those cost more the more namespaces exist).
    pub accept_ra: Option<i32>,
    /// `net.ipv4.conf.<link>.arp_notify`, when the link has IPv4.
    pub arp_notify: Option<bool>,
    /// `net.ipv4.conf.<link>.route_localnet`, when the link has IPv4.
    pub route_localnet: Option<bool>,
}

impl Link {
    /// Administratively up.
    pub fn is_up(&self) -> bool {
        self.flags & IFF_UP != 0
    }
    /// Promiscuous mode on.
    pub fn is_promisc(&self) -> bool {
        self.flags & IFF_PROMISC != 0
    }
    /// Operationally up.
    pub fn is_oper_up(&self) -> bool {
        self.oper_state == OPER_UP
    }
}

/// A veth pair to create from this handle's namespace.
pub struct VethSpec<'a> {
    /// The end that stays in this handle's namespace.
    pub name: &'a str,
    /// The other end's name (created in `peer_netns` if given).
    pub peer_name: &'a str,
    /// Namespace for the peer end (`IFLA_NET_NS_FD`).
    pub peer_netns: Option<BorrowedFd<'a>>,
    /// MTU for both ends; 0 = kernel default.
    pub mtu: u32,
    /// MAC of the peer end, if requested.
    pub peer_mac: Option<[u8; 6]>,
    /// Bring this end up in the same request (saves a request and an RTNL round).
    pub up: bool,
    /// Make this end a port of that bridge in the same request (`IFLA_MASTER`).
    pub master: Option<u32>,
}

fn ifinfomsg(family: u8, index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = family;
    h[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (any case, also `-` separated).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    Some(out)
}

fn parse_link(payload: &[u8]) -> Option<Link> {
    if payload.len() < 16 {
        return None;
    }
    let index = i32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]) as u32;
    let flags = u32::from_ne_bytes([payload[8], payload[9], payload[10], payload[11]]);
    let mut link = Link {
        index,
        name: String::new(),
        kind: LinkKind::None,
        mac: String::new(),
        mtu: 0,
        flags,
        master: None,
        link: None,
        oper_state: 0,
        hairpin: None,
        isolated: None,
        vlan_filtering: None,
        accept_ra: None,
        arp_notify: None,
        route_localnet: None,
    };
    for (ty, data) in attrs(&payload[16..]) {
        match ty {
            IFLA_AF_SPEC => {
                for (family, conf) in attrs(data) {
                    for (cty, values) in attrs(conf) {
                        let at = |i: usize| values.get(i * 4..i * 4 + 4).and_then(attr_u32);
                        match (family, cty) {
                            (AF_INET, IFLA_INET_CONF) => {
                                let v4 = |id: u16| at(usize::from(id) - 1).map(|v| v != 0);
                                link.arp_notify = v4(IPV4_DEVCONF_ARP_NOTIFY);
                                link.route_localnet = v4(IPV4_DEVCONF_ROUTE_LOCALNET);
                            }
                            (AF_INET6, IFLA_INET6_CONF) => {
                                link.accept_ra = at(DEVCONF_ACCEPT_RA).map(|v| v as i32);
                            }
                            _ => {}
                        }
                    }
                }
            }
            IFLA_IFNAME => link.name = attr_str(data),
            IFLA_ADDRESS => link.mac = format_mac(data),
            IFLA_MTU => link.mtu = attr_u32(data).unwrap_or(0),
            IFLA_MASTER => link.master = attr_u32(data),
            IFLA_LINK => link.link = attr_u32(data),
            IFLA_OPERSTATE => link.oper_state = data.first().copied().unwrap_or(0),
            IFLA_LINKINFO => {
                let mut kind = String::new();
                let mut info_data: &[u8] = &[];
                for (ity, idata) in attrs(data) {
                    match ity {
                        IFLA_INFO_KIND => kind = attr_str(idata),
                        IFLA_INFO_DATA => info_data = idata,
                        IFLA_INFO_SLAVE_KIND => {}
                        IFLA_INFO_SLAVE_DATA => {
                            for (sty, sdata) in attrs(idata) {
                                match sty {
                                    IFLA_BRPORT_MODE => {
                                        link.hairpin = sdata.first().map(|b| *b != 0)
                                    }
                                    IFLA_BRPORT_ISOLATED => {
                                        link.isolated = sdata.first().map(|b| *b != 0)
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                link.kind = match kind.as_str() {
                    "bridge" => {
                        for (dty, d) in attrs(info_data) {
                            if dty == IFLA_BR_VLAN_FILTERING {
                                link.vlan_filtering = d.first().map(|b| *b != 0);
                            }
                        }
                        LinkKind::Bridge
                    }
                    "veth" => LinkKind::Veth,
                    "" => LinkKind::None,
                    other => LinkKind::Other(other.to_string()),
                };
            }
            _ => {}
        }
    }
    Some(link)
}

impl Netlink {
    /// The link named `name`, or `None`.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut b = Builder::new(&ifinfomsg(AF_UNSPEC, 0, 0, 0));
        b.str(IFLA_IFNAME, name);
        match self
            .sock
            .request(RTM_GETLINK, 0, &b.buf, &format!("get link {name}"))
        {
            Ok(msgs) => Ok(msgs.iter().find_map(|m| {
                if m.ty == RTM_NEWLINK {
                    parse_link(&m.payload)
                } else {
                    None
                }
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link with index `index`, or `None`.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let b = Builder::new(&ifinfomsg(AF_UNSPEC, index, 0, 0));
        match self
            .sock
            .request(RTM_GETLINK, 0, &b.buf, &format!("get link #{index}"))
        {
            Ok(msgs) => Ok(msgs.iter().find_map(|m| parse_link(&m.payload))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// All links of this namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let b = Builder::new(&ifinfomsg(AF_UNSPEC, 0, 0, 0));
        let msgs = self.sock.dump(RTM_GETLINK, &b.buf, "list links")?;
        Ok(msgs
            .iter()
            .filter(|m| m.ty == RTM_NEWLINK)
            .filter_map(|m| parse_link(&m.payload))
            .collect())
    }

    /// Creates a bridge. EEXIST is returned as an error (see [`NetlinkError::is_exists`]).
    pub fn create_bridge(
        &mut self,
        name: &str,
        mtu: u32,
        vlan_filtering: bool,
    ) -> Result<(), NetlinkError> {
        let mut b = Builder::new(&ifinfomsg(AF_UNSPEC, 0, 0, 0));
        b.str(IFLA_IFNAME, name);
        if mtu > 0 {
            b.u32(IFLA_MTU, mtu);
        }
        b.nest(IFLA_LINKINFO, true, |b| {
            b.str(IFLA_INFO_KIND, "bridge");
            if vlan_filtering {
                b.nest(IFLA_INFO_DATA, true, |b| {
                    b.u8(IFLA_BR_VLAN_FILTERING, 1);
                });
            }
        });
        self.sock
            .request(
                RTM_NEWLINK,
                NLM_F_CREATE | NLM_F_EXCL,
                &b.buf,
                &format!("create bridge {name}"),
            )
            .map(|_| ())
    }

    /// Creates a veth pair; the peer is born directly in `spec.peer_netns` if given.
    /// With `up` or `master`, the kernel brings this end up and then attaches it, or fails
    /// the whole request (and creates nothing). Returns this end as the kernel reported it
    /// (`NLM_F_ECHO`, Linux 6.3 and later; `None` from older kernels), so that the caller
    /// needs no lookup: its `master` is `spec.master` (the kernel reports the link before
    /// attaching it), and its operational state is not final.
    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> Result<Option<Link>, NetlinkError> {
        let up = if spec.up { IFF_UP } else { 0 };
        let mut b = Builder::new(&ifinfomsg(AF_UNSPEC, 0, up, up));
        b.str(IFLA_IFNAME, spec.name);
        if spec.mtu > 0 {
            b.u32(IFLA_MTU, spec.mtu);
        }
        if let Some(m) = spec.master {
            b.u32(IFLA_MASTER, m);
        }
        b.nest(IFLA_LINKINFO, true, |b| {
            b.str(IFLA_INFO_KIND, "veth");
            b.nest(IFLA_INFO_DATA, true, |b| {
                b.nest(VETH_INFO_PEER, true, |b| {
                    b.buf.extend_from_slice(&ifinfomsg(AF_UNSPEC, 0, 0, 0));
                    b.str(IFLA_IFNAME, spec.peer_name);
                    if spec.mtu > 0 {
                        b.u32(IFLA_MTU, spec.mtu);
                    }
                    if let Some(mac) = spec.peer_mac {
                        b.attr(IFLA_ADDRESS, &mac);
                    }
                    if let Some(fd) = spec.peer_netns {
                        b.u32(IFLA_NET_NS_FD, fd.as_raw_fd() as u32);
                    }
                });
            });
        });
        let msgs = self.sock.request(
            RTM_NEWLINK,
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
            &b.buf,
            &format!("create veth {} (peer {})", spec.name, spec.peer_name),
        )?;
        Ok(msgs
            .iter()
            .filter(|m| m.ty == RTM_NEWLINK)
            .filter_map(|m| parse_link(&m.payload))
            .find(|l| l.name == spec.name && l.index != 0)
            .map(|mut l| {
                if spec.master.is_some() {
                    l.master = spec.master;
                }
                l
            }))
    }

    /// Deletes a link (for a veth, both ends go).
    pub fn delete_link(&mut self, index: u32) -> Result<(), NetlinkError> {
        let b = Builder::new(&ifinfomsg(AF_UNSPEC, index, 0, 0));
        self.sock
            .request(RTM_DELLINK, 0, &b.buf, &format!("delete link #{index}"))
            .map(|_| ())
    }

    fn set_link(
        &mut self,
        index: u32,
        flags: u32,
        change: u32,
        op: &str,
        attrs: impl FnOnce(&mut Builder),
    ) -> Result<(), NetlinkError> {
        let mut b = Builder::new(&ifinfomsg(AF_UNSPEC, index, flags, change));
        attrs(&mut b);
        self.sock.request(RTM_SETLINK, 0, &b.buf, op).map(|_| ())
    }

    /// Sets IPv4 per-interface settings (`net.ipv4.conf.<link>.*`) by `IPV4_DEVCONF_*` id, as
    /// writing the sysctls would, without a `/proc/sys` lookup.
    pub fn set_ipv4_conf(&mut self, index: u32, values: &[(u16, u32)]) -> Result<(), NetlinkError> {
        self.set_link(
            index,
            0,
            0,
            &format!("set ipv4 conf of link #{index}"),
            |b| {
                b.nest(IFLA_AF_SPEC, false, |b| {
                    b.nest(AF_INET, false, |b| {
                        b.nest(IFLA_INET_CONF, false, |b| {
                            for &(id, v) in values {
                                b.u32(id, v);
                            }
                        });
                    });
                });
            },
        )
    }

    /// Sets the link administratively up or down.
    pub fn set_up(&mut self, index: u32, up: bool) -> Result<(), NetlinkError> {
        let flags = if up { IFF_UP } else { 0 };
        self.set_link(
            index,
            flags,
            IFF_UP,
            &format!("set link #{index} up={up}"),
            |_| {},
        )
    }

    /// Turns promiscuous mode on or off.
    pub fn set_promisc(&mut self, index: u32, on: bool) -> Result<(), NetlinkError> {
        let flags = if on { IFF_PROMISC } else { 0 };
        self.set_link(
            index,
            flags,
            IFF_PROMISC,
            &format!("set link #{index} promisc={on}"),
            |_| {},
        )
    }

    /// Enslaves the link to `master` (0 = release).
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<(), NetlinkError> {
        self.set_link(index, 0, 0, &format!("set master of link #{index}"), |b| {
            b.u32(IFLA_MASTER, master);
        })
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        self.set_link(index, 0, 0, &format!("set mtu of link #{index}"), |b| {
            b.u32(IFLA_MTU, mtu);
        })
    }

    /// Sets the hardware address.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        self.set_link(index, 0, 0, &format!("set mac of link #{index}"), |b| {
            b.attr(IFLA_ADDRESS, &mac);
        })
    }

    /// Sets a bridge port's hairpin mode and, if given, its isolation flag.
    pub fn set_bridge_port(
        &mut self,
        index: u32,
        hairpin: bool,
        isolated: Option<bool>,
    ) -> Result<(), NetlinkError> {
        let mut b = Builder::new(&ifinfomsg(AF_BRIDGE, index, 0, 0));
        b.nest(IFLA_PROTINFO, true, |b| {
            b.u8(IFLA_BRPORT_MODE, u8::from(hairpin));
            if let Some(iso) = isolated {
                b.u8(IFLA_BRPORT_ISOLATED, u8::from(iso));
            }
        });
        self.sock
            .request(
                RTM_SETLINK,
                0,
                &b.buf,
                &format!("set bridge port flags of link #{index}"),
            )
            .map(|_| ())
    }

    fn vlan_msg(
        &mut self,
        ty: u16,
        index: u32,
        vid: u16,
        flags: u16,
        op: &str,
    ) -> Result<(), NetlinkError> {
        let mut b = Builder::new(&ifinfomsg(AF_BRIDGE, index, 0, 0));
        b.nest(IFLA_AF_SPEC, false, |b| {
            b.u16(IFLA_BRIDGE_FLAGS, BRIDGE_FLAGS_MASTER);
            let mut info = [0u8; 4];
            info[..2].copy_from_slice(&flags.to_ne_bytes());
            info[2..].copy_from_slice(&vid.to_ne_bytes());
            b.attr(IFLA_BRIDGE_VLAN_INFO, &info);
        });
        self.sock.request(ty, 0, &b.buf, op).map(|_| ())
    }

    /// Adds VLAN `vid` to a bridge port; `flags` from [`VLAN_PVID`] / [`VLAN_UNTAGGED`].
    pub fn bridge_vlan_add(
        &mut self,
        index: u32,
        vid: u16,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        self.vlan_msg(
            RTM_SETLINK,
            index,
            vid,
            flags,
            &format!("add vlan {vid} to link #{index}"),
        )
    }

    /// Removes VLAN `vid` from a bridge port.
    pub fn bridge_vlan_del(&mut self, index: u32, vid: u16) -> Result<(), NetlinkError> {
        self.vlan_msg(
            RTM_DELLINK,
            index,
            vid,
            0,
            &format!("delete vlan {vid} from link #{index}"),
        )
    }

    /// The VLANs of a bridge port as `(vid, flags)`.
    pub fn bridge_vlans(&mut self, index: u32) -> Result<Vec<(u16, u16)>, NetlinkError> {
        let mut b = Builder::new(&ifinfomsg(AF_BRIDGE, 0, 0, 0));
        b.u32(IFLA_EXT_MASK, RTEXT_FILTER_BRVLAN);
        let msgs = self.sock.dump(RTM_GETLINK, &b.buf, "list bridge vlans")?;
        let mut out = Vec::new();
        for m in msgs {
            if m.payload.len() < 16 {
                continue;
            }
            let idx =
                i32::from_ne_bytes([m.payload[4], m.payload[5], m.payload[6], m.payload[7]]) as u32;
            if idx != index {
                continue;
            }
            for (ty, data) in attrs(&m.payload[16..]) {
                if ty != IFLA_AF_SPEC {
                    continue;
                }
                for (vty, v) in attrs(data) {
                    if vty == IFLA_BRIDGE_VLAN_INFO && v.len() >= 4 {
                        out.push((
                            u16::from_ne_bytes([v[2], v[3]]),
                            u16::from_ne_bytes([v[0], v[1]]),
                        ));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_text() {
        assert_eq!(
            format_mac(&[0xde, 0xad, 0, 1, 2, 0xff]),
            "de:ad:00:01:02:ff"
        );
        assert_eq!(
            parse_mac("DE:ad:00:01:02:ff"),
            Some([0xde, 0xad, 0, 1, 2, 0xff])
        );
        assert_eq!(
            parse_mac("de-ad-00-01-02-ff"),
            Some([0xde, 0xad, 0, 1, 2, 0xff])
        );
        assert_eq!(parse_mac("de:ad:00:01:02"), None);
        assert_eq!(parse_mac("de:ad:00:01:02:fff"), None);
        assert_eq!(parse_mac("zz:ad:00:01:02:ff"), None);
    }
}
