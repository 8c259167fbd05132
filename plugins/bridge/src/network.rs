//! The CNM *network*: the Linux bridge, its gateway address(es) and the forwarding sysctls.
//! Created or reused on ADD, never removed (other endpoints share it).

use crate::error::BridgeError;
use cni_kernel::netlink::{Link, LinkKind, VLAN_PVID, VLAN_UNTAGGED, VethSpec, parse_mac};
use cni_kernel::{Netlink, sysctl};
use ipnet::IpNet;
use nix::errno::Errno;

/// Creates the bridge if needed (EEXIST is success: concurrent first ADDs race here), sets
/// promisc, checks that the link is a bridge, turns off router advertisements and brings it
/// up. Returns the bridge as re-read from the kernel.
pub fn ensure_bridge(
    nl: &mut Netlink,
    name: &str,
    mtu: u32,
    promisc: bool,
    vlan_filtering: bool,
) -> Result<Link, BridgeError> {
    ensure_bridge_created(nl, name, mtu, promisc, vlan_filtering).map(|(l, _)| l)
}

/// [`ensure_bridge`], also telling whether this call created the bridge (so that a failed
/// ADD can remove it again). A bridge created here and then not usable is deleted before
/// the error is returned.
pub fn ensure_bridge_created(
    nl: &mut Netlink,
    name: &str,
    mtu: u32,
    promisc: bool,
    vlan_filtering: bool,
) -> Result<(Link, bool), BridgeError> {
    let mut created = false;
    let r = setup_bridge(nl, name, mtu, promisc, vlan_filtering, &mut created);
    if r.is_err()
        && created
        && let Ok(Some(l)) = nl.link_by_name(name)
        && l.kind == LinkKind::Bridge
    {
        let _ = nl.delete_link(l.index);
    }
    r.map(|l| (l, created))
}

/// Deletes bridge `name` if it has no port left (the rollback of an ADD that created it;
/// a concurrent ADD that already attached a port keeps it).
pub fn delete_bridge_if_unused(nl: &mut Netlink, name: &str) -> Result<(), BridgeError> {
    let fail = |e| BridgeError::netlink(format!("failed to remove bridge {name:?}"), e);
    let Some(br) = nl.link_by_name(name).map_err(fail)? else {
        return Ok(());
    };
    if br.kind != LinkKind::Bridge {
        return Ok(());
    }
    if nl
        .links()
        .map_err(fail)?
        .iter()
        .any(|l| l.master == Some(br.index))
    {
        return Ok(());
    }
    match nl.delete_link(br.index) {
        Err(e) if !e.is_not_found() => Err(fail(e)),
        _ => Ok(()),
    }
}

fn setup_bridge(
    nl: &mut Netlink,
    name: &str,
    mtu: u32,
    promisc: bool,
    vlan_filtering: bool,
    created: &mut bool,
) -> Result<Link, BridgeError> {
    let fail =
        |what: String| BridgeError::System(format!("failed to create bridge {name:?}: {what}"));
    // Usually the bridge exists: one lookup (which needs no RTNL lock) instead of a create
    // that fails with EEXIST (which takes it) and a lookup.
    let br = match nl.link_by_name(name).map_err(|e| fail(e.to_string()))? {
        Some(br) => br,
        None => {
            match nl.create_bridge(name, mtu, vlan_filtering) {
                Ok(()) => *created = true,
                // Created meanwhile by a concurrent ADD.
                Err(e) if e.is_exists() => {}
                Err(e) if vlan_filtering && e.errno() == Some(Errno::EOPNOTSUPP) => {
                    return Err(BridgeError::System(format!(
                        "failed to create bridge {name:?}: this kernel does not support bridge VLAN filtering, which vlan/vlanTrunk need ({e})"
                    )));
                }
                Err(e) => return Err(fail(e.to_string())),
            }
            nl.link_by_name(name)
                .map_err(|e| fail(e.to_string()))?
                .ok_or_else(|| fail(format!("could not lookup {name:?}: link not found")))?
        }
    };
    if br.kind != LinkKind::Bridge {
        return Err(fail(format!("{name:?} already exists but is not a bridge")));
    }
    let mut changed = false;
    if *created && let Some(mac) = usable_mac(&br.mac) {
        // Pin the MAC the kernel gave the new bridge: otherwise it follows the lowest port
        // MAC, and drops to all zeros when the last port leaves.
        nl.set_mac(br.index, mac)
            .map_err(|e| fail(format!("could not set {name:?}'s mac: {e}")))?;
        changed = true;
    }
    if promisc && !br.is_promisc() {
        nl.set_promisc(br.index, true)
            .map_err(|e| fail(format!("could not set promiscuous mode on {name:?}: {e}")))?;
        changed = true;
    }
    // We own the routes of this interface; errors are ignored as in the reference. Written
    // only when the link says it is not 0 already (a /proc/sys lookup costs more the more
    // namespaces the machine has).
    if br.accept_ra != Some(0) {
        let _ = sysctl::write(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
    }
    if !br.is_up() {
        nl.set_up(br.index, true).map_err(|e| fail(e.to_string()))?;
        changed = true;
    }
    if !changed {
        return Ok(br);
    }
    nl.link_by_index(br.index)
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("the bridge disappeared".into()))
}

/// The reference's `ensureAddr`: the gateway address `gw` (with the subnet's prefix) on
/// `link`. An identical address is success; a different IPv4 address or an overlapping IPv6
/// one is replaced with `force`, otherwise an error. After adding, the link's MAC is pinned
/// to `pin_mac` (a bridge otherwise takes the lowest port MAC, which changes as ports come and
/// go).
pub fn ensure_addr(
    nl: &mut Netlink,
    link: &Link,
    gw: &IpNet,
    force: bool,
    pin_mac: &str,
) -> Result<(), BridgeError> {
    let v4 = gw.addr().is_ipv4();
    let addrs = nl
        .addresses_of_family(Some(link.index), v4)
        .map_err(|e| BridgeError::netlink("could not get list of IP addresses", e))?;
    for a in addrs.iter().filter(|a| a.addr.addr().is_ipv4() == v4) {
        if a.addr == *gw {
            return Ok(());
        }
        if v4 || a.addr.contains(&gw.addr()) || gw.contains(&a.addr.addr()) {
            if force {
                nl.del_address(link.index, &a.addr).map_err(|e| {
                    BridgeError::netlink(
                        format!("could not remove IP address from {:?}", link.name),
                        e,
                    )
                })?;
            } else {
                return Err(BridgeError::System(format!(
                    "{:?} already has an IP address different from {gw}",
                    link.name
                )));
            }
        }
    }
    match nl.add_address(link.index, gw) {
        Ok(()) => {}
        Err(e) if e.is_exists() => {}
        Err(e) => {
            return Err(BridgeError::netlink(
                format!("could not add IP address {gw} to {:?}", link.name),
                e,
            ));
        }
    }
    // A bridge whose ports all left has no valid MAC: pin the current one instead.
    let mac = match usable_mac(pin_mac) {
        Some(m) => Some(m),
        None => nl
            .link_by_index(link.index)
            .map_err(|e| BridgeError::netlink(format!("could not lookup {:?}", link.name), e))?
            .and_then(|l| usable_mac(&l.mac)),
    };
    if let Some(mac) = mac {
        nl.set_mac(link.index, mac)
            .map_err(|e| BridgeError::netlink(format!("could not set {:?}'s mac", link.name), e))?;
    }
    Ok(())
}

/// A MAC that can be assigned: parsable, not all zeros, not multicast.
pub fn usable_mac(text: &str) -> Option<[u8; 6]> {
    parse_mac(text).filter(|m| m.iter().any(|b| *b != 0) && m[0] & 1 == 0)
}

/// The VLAN gateway `<bridge>.<vlan>`: a veth pair in the host whose peer is a port of the
/// bridge on that VLAN (PVID, untagged); created once, then reused.
pub fn ensure_vlan_gateway(
    nl: &mut Netlink,
    br: &Link,
    vlan: u16,
    preserve_default_vlan: bool,
) -> Result<Link, BridgeError> {
    let name = format!("{}.{vlan}", br.name);
    if let Some(l) = nl
        .link_by_name(&name)
        .map_err(|e| BridgeError::netlink(format!("failed to find interface {name:?}"), e))?
    {
        return Ok(l);
    }
    let fail = |e| BridgeError::netlink(format!("failed to create vlan gateway {name:?}"), e);
    let mut peer = String::new();
    for _ in 0..crate::endpoint::NAME_ATTEMPTS {
        let candidate = crate::endpoint::random_veth_name()?;
        match nl.create_veth(&VethSpec {
            name: &name,
            peer_name: &candidate,
            peer_netns: None,
            mtu: br.mtu,
            peer_mac: None,
            up: false,
            master: None,
        }) {
            Ok(_) => {
                peer = candidate;
                break;
            }
            Err(e) if e.is_exists() => {
                if nl.link_by_name(&name).map_err(fail)?.is_some() {
                    break;
                }
            }
            Err(e) => return Err(fail(e)),
        }
    }
    let gw = nl
        .link_by_name(&name)
        .map_err(fail)?
        .ok_or_else(|| BridgeError::System(format!("failed to create vlan gateway {name:?}")))?;
    if let Some(p) = nl.link_by_name(&peer).map_err(fail)? {
        nl.set_up(p.index, true).map_err(fail)?;
        nl.set_master(p.index, br.index).map_err(fail)?;
        if !preserve_default_vlan {
            for (vid, _) in nl.bridge_vlans(p.index).map_err(fail)? {
                nl.bridge_vlan_del(p.index, vid).map_err(fail)?;
            }
        }
        nl.bridge_vlan_add(p.index, vlan, VLAN_PVID | VLAN_UNTAGGED)
            .map_err(fail)?;
    }
    nl.set_up(gw.index, true).map_err(fail)?;
    Ok(gw)
}

/// Enables forwarding for a family in `nl`'s (host) namespace, the calling thread's too,
/// writing only if it is not already on (asked over netlink, else read from /proc).
pub fn enable_forwarding(nl: &mut Netlink, v4: bool) -> Result<(), BridgeError> {
    if nl.forwarding(v4).unwrap_or(false) {
        return Ok(());
    }
    let key = if v4 {
        "net/ipv4/ip_forward"
    } else {
        "net/ipv6/conf/all/forwarding"
    };
    sysctl::ensure(key, "1")
        .map_err(|e| BridgeError::System(format!("failed to enable forwarding ({key}): {e}")))
}
