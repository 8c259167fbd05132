//! Namespace-wide IP settings over netlink (`RTM_GETNETCONF`), read without a `/proc/sys`
//! lookup.

use super::{Builder, Netlink, NetlinkError, attr_u32, attrs};

const RTM_NEWNETCONF: u16 = 80;
const RTM_GETNETCONF: u16 = 82;
const NETCONFA_IFINDEX: u16 = 1;
const NETCONFA_FORWARDING: u16 = 2;
/// `NETCONFA_IFINDEX_ALL`: the `all` settings (IPv4's are `net.ipv4.ip_forward`).
const IFINDEX_ALL: i32 = -1;

impl Netlink {
    /// Forwarding for a family in this namespace: `net.ipv4.ip_forward` (`v4`) or
    /// `net.ipv6.conf.all.forwarding`.
    pub fn forwarding(&mut self, v4: bool) -> Result<bool, NetlinkError> {
        // struct netconfmsg { u8 family } padded to 4 bytes.
        let family: u8 = if v4 { 2 } else { 10 };
        let mut b = Builder::new(&[family, 0, 0, 0]);
        b.u32(NETCONFA_IFINDEX, IFINDEX_ALL as u32);
        let op = if v4 {
            "get ipv4 forwarding"
        } else {
            "get ipv6 forwarding"
        };
        let msgs = self.sock.request(RTM_GETNETCONF, 0, &b.buf, op)?;
        msgs.iter()
            .filter(|m| m.ty == RTM_NEWNETCONF && m.payload.len() >= 4)
            .flat_map(|m| attrs(&m.payload[4..]))
            .find(|(ty, _)| *ty == NETCONFA_FORWARDING)
            .and_then(|(_, d)| attr_u32(d))
            .map(|v| v != 0)
            .ok_or_else(|| NetlinkError::kernel(op, nix::errno::Errno::ENODATA))
    }
}
