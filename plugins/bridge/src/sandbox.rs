//! Inside the CNM *sandbox*: the container interface's sysctls, addresses, link state, IPv6
//! address settling and routes (the reference's `ConfigureIface`). Netlink work uses a handle
//! opened in the sandbox; sysctls are written from inside it ([`NetNs::run`]).

use crate::error::BridgeError;
use cni::{CniResult, IpConfig};
use cni_kernel::netlink::{IPV4_DEVCONF_ARP_NOTIFY, Link};
use cni_kernel::{NetNs, Netlink, RouteSpec, sysctl};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long IPv6 addresses may stay tentative (the reference's settle bound).
const SETTLE: Duration = Duration::from_secs(5);
/// Polling interval: starts short (the kernel clears `tentative` from a work queue a few
/// milliseconds after link up when DAD is off) and backs off to the reference's 50 ms.
const SETTLE_POLL_FIRST: Duration = Duration::from_millis(1);
const SETTLE_POLL_MAX: Duration = Duration::from_millis(50);

/// The gateway of the first address of a family that has one (the reference's choice).
pub fn family_gateway(ips: &[IpConfig], v4: bool) -> Option<IpAddr> {
    ips.iter()
        .filter(|i| i.address.addr().is_ipv4() == v4)
        .filter_map(|i| i.gateway)
        .next()
}

/// Writes the container interface's settings that depend only on the configuration (errors
/// are ignored, as in the reference): DAD (`accept_dad=0` unless `enable_dad`) and
/// `arp_notify`. Done while IPAM may still be allocating; the link is down until
/// [`configure`].
///
/// `arp_notify` is set over netlink (`ctr`), unless the link has it already: one `/proc/sys`
/// lookup less, and those cost more the more namespaces the machine has.
pub fn write_sysctls(
    sandbox: &NetNs,
    ctr: &mut Netlink,
    link: &Link,
    enable_dad: bool,
) -> Result<(), BridgeError> {
    if link.arp_notify != Some(true) {
        let _ = ctr.set_ipv4_conf(link.index, &[(IPV4_DEVCONF_ARP_NOTIFY, 1)]);
    }
    let ifname = link.name.clone();
    sandbox
        .run(move || {
            if enable_dad {
                let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/enhanced_dad"), "1");
                let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/accept_dad"), "1");
            } else {
                let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0");
            }
        })
        .map_err(|e| BridgeError::netns("failed to configure the container interface", e))
}

/// When the result has IPv6 addresses (errors ignored, as in the reference):
/// `disable_ipv6=0` on `lo` and the interface, `keep_addr_on_down=1` and `accept_ra=0` (routes
/// come from IPAM only; a router advertisement must not add SLAAC addresses).
pub fn write_v6_sysctls(sandbox: &NetNs, ifname: &str) -> Result<(), BridgeError> {
    let ifname = ifname.to_string();
    sandbox
        .run(move || {
            for i in ["lo", ifname.as_str()] {
                let _ = sysctl::ensure(&format!("net/ipv6/conf/{i}/disable_ipv6"), "0");
            }
            let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/keep_addr_on_down"), "1");
            let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/accept_ra"), "0");
        })
        .map_err(|e| BridgeError::netns("failed to configure the container interface", e))
}

/// Adds the result's addresses to the container interface, brings it up, and waits for IPv6
/// addresses to settle when there is an IPv6 gateway (the first half of the reference's
/// `ConfigureIface`; [`add_routes`] is the second).
pub fn configure(nl: &mut Netlink, link: &Link, result: &CniResult) -> Result<(), BridgeError> {
    for ip in &result.ips {
        nl.add_address(link.index, &ip.address).map_err(|e| {
            BridgeError::netlink(
                format!("failed to add IP addr {} to {:?}", ip.address, link.name),
                e,
            )
        })?;
    }
    nl.set_up(link.index, true)
        .map_err(|e| BridgeError::netlink(format!("failed to set {:?} up", link.name), e))?;
    if family_gateway(&result.ips, false).is_some() {
        settle(nl, link)?;
    }
    Ok(())
}

/// Adds the result's routes through the container interface, which [`configure`] brought up
/// (ECMP append; a route without `gw` uses its family's gateway).
pub fn add_routes(nl: &mut Netlink, link: &Link, result: &CniResult) -> Result<(), BridgeError> {
    let v4gw = family_gateway(&result.ips, true);
    let v6gw = family_gateway(&result.ips, false);
    for r in &result.routes {
        let v4 = r.dst.addr().is_ipv4();
        let gw = r.gw.or(if v4 { v4gw } else { v6gw });
        let mut spec = RouteSpec::new(r.dst.trunc(), gw, Some(link.index));
        spec.priority = r.priority;
        spec.table = r.table;
        spec.scope = r.scope.and_then(|s| u8::try_from(s).ok());
        nl.add_route(&spec).map_err(|e| {
            BridgeError::netlink(
                format!(
                    "failed to add route '{} via {}' to {:?}",
                    r.dst,
                    gw.map(|g| g.to_string()).unwrap_or_else(|| "<nil>".into()),
                    link.name
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// Polls (bounded) until no address of the link is tentative. DAD failure is an error; a
/// timeout is an error only if the link is operationally up (reference 1.9.0).
fn settle(nl: &mut Netlink, link: &Link) -> Result<(), BridgeError> {
    let deadline = Instant::now() + SETTLE;
    let mut poll = SETTLE_POLL_FIRST;
    loop {
        let addrs = nl
            .addresses(Some(link.index))
            .map_err(|e| BridgeError::netlink("failed to list addresses while settling", e))?;
        if let Some(a) = addrs.iter().find(|a| a.dad_failed()) {
            return Err(BridgeError::System(format!(
                "failed to settle addresses on {:?}: {} failed duplicate address detection",
                link.name, a.addr
            )));
        }
        if !addrs.iter().any(|a| a.is_tentative()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let up = nl
                .link_by_index(link.index)
                .ok()
                .flatten()
                .is_some_and(|l| l.is_oper_up());
            if up {
                return Err(BridgeError::System(format!(
                    "failed to settle addresses on {:?}: still tentative after {}s",
                    link.name,
                    SETTLE.as_secs()
                )));
            }
            return Ok(());
        }
        std::thread::sleep(poll);
        poll = (poll * 2).min(SETTLE_POLL_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_gateways() {
        let ip = |a: &str, g: Option<&str>| IpConfig {
            address: a.parse().unwrap(),
            gateway: g.map(|g| g.parse().unwrap()),
            interface: Some(2),
        };
        let ips = vec![
            ip("10.0.0.2/24", Some("10.0.0.1")),
            ip("2001:db8::2/64", None),
            ip("10.1.0.2/24", Some("10.1.0.1")),
        ];
        assert_eq!(
            family_gateway(&ips, true),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(family_gateway(&ips, false), None);
    }
}
