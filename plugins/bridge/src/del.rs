//! DEL: removes everything keyed by the attachment `(network, container ID, ifname)`, whether
//! or not the sandbox, the interface or `prevResult` are still there, and keeps going after
//! an error so that as much as possible is removed; the errors are reported at the end.
//! The network (bridge, gateway address) stays.

use crate::config::Config;
use crate::error::BridgeError;
use crate::masq::{self, Instance};
use crate::spoofcheck;
use cni::CniResult;
use cni::invoke::Ipam;
use cni::skel::Request;
use cni_kernel::netlink::LinkKind;
use cni_kernel::{NetNs, Netlink, NsError};
use ipnet::IpNet;
use std::net::IpAddr;

/// True for the addresses the reference collects before deleting the link (global unicast).
pub fn is_global_unicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_loopback()
                || a.is_multicast()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_multicast()
                || a.is_unspecified()
                || a.is_unicast_link_local())
        }
    }
}

/// Deletes the container end (the host end goes with it); returns its global-unicast
/// addresses, or `None` if there was no such veth.
fn remove_container_link(ns: &NetNs, ifname: &str) -> Result<Option<Vec<IpNet>>, BridgeError> {
    let mut nl = Netlink::in_netns(ns)
        .map_err(|e| BridgeError::netlink("failed to open netlink in the sandbox", e))?;
    let Some(link) = nl
        .link_by_name(ifname)
        .map_err(|e| BridgeError::netlink(format!("failed to lookup {ifname:?}"), e))?
    else {
        return Ok(None);
    };
    if link.kind != LinkKind::Veth {
        eprintln!("bridge: DEL: {ifname:?} in the sandbox is not a veth; left alone");
        return Ok(None);
    }
    let addrs: Vec<IpNet> = nl
        .addresses(Some(link.index))
        .map_err(|e| BridgeError::netlink(format!("failed to list addresses of {ifname:?}"), e))?
        .into_iter()
        .map(|a| a.addr)
        .filter(|a| is_global_unicast(&a.addr()))
        .collect();
    match nl.delete_link(link.index) {
        Ok(()) => Ok(Some(addrs)),
        Err(e) if e.is_not_found() => Ok(Some(addrs)),
        Err(e) => Err(BridgeError::netlink(
            format!("failed to delete {ifname:?}"),
            e,
        )),
    }
}

/// Without a usable sandbox, a host veth named in `prevResult` is removed if it still exists,
/// is a veth port of our bridge and has the recorded MAC (the sandbox may be alive although
/// the runtime no longer passes it).
fn remove_host_veth_from_prev(prev: &CniResult, conf: &Config) -> Result<(), BridgeError> {
    let Some(recorded) = prev.interfaces.get(1).filter(|i| i.sandbox.is_empty()) else {
        return Ok(());
    };
    if recorded.name.is_empty() || recorded.mac.is_empty() {
        return Ok(());
    }
    let mut nl =
        Netlink::current().map_err(|e| BridgeError::netlink("failed to open netlink", e))?;
    let Some(br) = nl
        .link_by_name(&conf.bridge)
        .map_err(|e| BridgeError::netlink("failed to lookup the bridge", e))?
    else {
        return Ok(());
    };
    let Some(l) = nl
        .link_by_name(&recorded.name)
        .map_err(|e| BridgeError::netlink(format!("failed to lookup {:?}", recorded.name), e))?
    else {
        return Ok(());
    };
    if l.kind == LinkKind::Veth && l.master == Some(br.index) && l.mac == recorded.mac {
        match nl.delete_link(l.index) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                return Err(BridgeError::netlink(
                    format!("failed to delete {:?}", recorded.name),
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// DEL.
pub fn del(req: &Request) -> Result<(), BridgeError> {
    let conf = Config::from_request(req)?;
    let ifname = req.env.ifname.as_str();
    let prev = req.prev_result().ok().flatten();
    let mut errors: Vec<BridgeError> = Vec::new();
    let mut addrs: Option<Vec<IpNet>> = None;
    let mut sandbox_handled = false;

    if !req.env.netns.is_empty() {
        match NetNs::open(&req.env.netns) {
            // The sandbox is gone, and the kernel removes its veth pair asynchronously: the
            // host end is removed right away below if `prevResult` identifies it.
            Err(NsError::NotFound { .. } | NsError::NotNetns { .. }) => {}
            Err(e) => errors.push(BridgeError::netns(
                format!("failed to open netns {:?}", req.env.netns),
                e,
            )),
            Ok(ns) => match remove_container_link(&ns, ifname) {
                Ok(found) => {
                    addrs = found;
                    sandbox_handled = true;
                }
                Err(e) => errors.push(e),
            },
        }
    }
    if !sandbox_handled
        && let Some(p) = &prev
        && let Err(e) = remove_host_veth_from_prev(p, &conf)
    {
        errors.push(e);
    }
    if addrs.as_ref().is_none_or(Vec::is_empty)
        && let Some(p) = &prev
    {
        let from_prev: Vec<IpNet> = p.ips.iter().map(|i| i.address).collect();
        if !from_prev.is_empty() {
            addrs = Some(from_prev);
        }
    }

    if let Some(ipam) = Ipam::of(req)
        && let Err(e) = ipam.del()
    {
        errors.push(BridgeError::Delegate(e));
    }
    if conf.macspoofchk
        && let Err(e) = spoofcheck::teardown(&spoofcheck::ref_id(&req.env.container_id, ifname))
    {
        errors.push(e);
    }
    if conf.layer3
        && conf.ip_masq
        && let Err(e) = masq::teardown(
            Instance {
                net: &conf.network,
                ifname,
                container_id: &req.env.container_id,
            },
            addrs.as_deref(),
        )
    {
        errors.push(e);
    }
    BridgeError::collect(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_unicast() {
        for (s, want) in [
            ("10.88.0.2", true),
            ("127.0.0.1", false),
            ("169.254.1.1", false),
            ("224.0.0.1", false),
            ("2001:db8::1", true),
            ("fe80::1", false),
            ("::1", false),
            ("ff02::1", false),
        ] {
            assert_eq!(is_global_unicast(&s.parse().unwrap()), want, "{s}");
        }
    }
}
