//! CHECK: verifies everything ADD created (the reference checks only part of it): the bridge,
//! the veth pair, its master and MACs, port flags and VLANs, the gateway address, the
//! container's addresses and routes, the masquerade and macspoofchk rules. Each failure names
//! what is wrong.

use crate::add::open_sandbox;
use crate::config::Config;
use crate::endpoint;
use crate::error::BridgeError;
use crate::masq::{self, Instance};
use crate::spoofcheck;
use cni::invoke::Ipam;
use cni::skel::Request;
use cni::{CniResult, Interface};
use cni_kernel::Netlink;
use cni_kernel::netlink::{Link, LinkKind};
use ipnet::IpNet;

fn fail(msg: impl Into<String>) -> BridgeError {
    BridgeError::System(msg.into())
}

fn nl_err(what: &str) -> impl Fn(cni_kernel::NetlinkError) -> BridgeError + '_ {
    move |e| BridgeError::netlink(what.to_string(), e)
}

fn check_bridge(nl: &mut Netlink, rec: &Interface, conf: &Config) -> Result<Link, BridgeError> {
    if !rec.sandbox.is_empty() {
        return Err(fail(format!(
            "Interface {} should not be in sandbox",
            rec.name
        )));
    }
    let br = nl
        .link_by_name(&rec.name)
        .map_err(nl_err("failed to lookup the bridge"))?
        .ok_or_else(|| {
            fail(format!(
                "CNI created bridge {} in host namespace was not found",
                conf.bridge
            ))
        })?;
    if br.kind != LinkKind::Bridge {
        return Err(fail(format!(
            "Interface {} does not have link type of bridge",
            rec.name
        )));
    }
    if !rec.mac.is_empty() && rec.mac != br.mac {
        return Err(fail(format!(
            "Bridge interface {} Mac {} doesn't match: {}",
            rec.name, br.mac, rec.mac
        )));
    }
    if br.is_promisc() != conf.promisc {
        return Err(fail(format!(
            "Bridge interface {} configured Promisc Mode {} doesn't match current state: {}",
            rec.name,
            conf.promisc,
            br.is_promisc()
        )));
    }
    if !br.is_up() {
        return Err(fail(format!("bridge {} is down", br.name)));
    }
    Ok(br)
}

fn check_gateway(
    nl: &mut Netlink,
    br: &Link,
    result: &CniResult,
    conf: &Config,
) -> Result<(), BridgeError> {
    if !conf.is_gateway {
        return Ok(());
    }
    let target = if conf.vlan != 0 {
        let name = format!("{}.{}", br.name, conf.vlan);
        nl.link_by_name(&name)
            .map_err(nl_err("failed to lookup the vlan gateway"))?
            .ok_or_else(|| fail(format!("vlan gateway interface {name} not found")))?
    } else {
        br.clone()
    };
    let have = nl
        .addresses(Some(target.index))
        .map_err(nl_err("failed to list the gateway addresses"))?;
    for ip in &result.ips {
        let Some(gw) = ip.gateway else { continue };
        let Ok(want) = IpNet::new(gw, ip.address.prefix_len()) else {
            continue;
        };
        if !have.iter().any(|a| a.addr == want) {
            return Err(fail(format!(
                "gateway address {want} not found on {}",
                target.name
            )));
        }
    }
    Ok(())
}

fn check_container(
    ctr: &mut Netlink,
    rec: &Interface,
    ifname: &str,
    conf: &Config,
) -> Result<Link, BridgeError> {
    let link = ctr
        .link_by_name(ifname)
        .map_err(nl_err("failed to lookup the container interface"))?
        .ok_or_else(|| {
            fail(format!(
                "CNI created interface in container {ifname} not found"
            ))
        })?;
    if link.kind != LinkKind::Veth {
        return Err(fail(format!(
            "Error: Container interface {ifname} not of type veth"
        )));
    }
    if link.link.is_none() {
        return Err(fail(format!(
            "Unable to obtain veth peer index for veth {ifname}"
        )));
    }
    if !rec.mac.is_empty() && rec.mac != link.mac {
        return Err(fail(format!(
            "Interface {ifname} Mac {} doesn't match container Mac: {}",
            rec.mac, link.mac
        )));
    }
    if conf.mtu > 0 && link.mtu != conf.mtu {
        return Err(fail(format!(
            "Interface {ifname} MTU {} doesn't match configured mtu {}",
            link.mtu, conf.mtu
        )));
    }
    if !conf.disable_container_interface && !link.is_up() {
        return Err(fail(format!("container interface {ifname} is down")));
    }
    Ok(link)
}

fn check_host_veth(
    nl: &mut Netlink,
    result: &CniResult,
    br: &Link,
    ctr_link: &Link,
    conf: &Config,
) -> Result<Link, BridgeError> {
    let mut found: Option<(Link, &Interface)> = None;
    for rec in result.interfaces.iter().filter(|i| i.sandbox.is_empty()) {
        if rec.name == br.name {
            continue;
        }
        let Some(l) = nl
            .link_by_name(&rec.name)
            .map_err(nl_err("failed to lookup the host veth"))?
        else {
            continue;
        };
        if l.kind == LinkKind::Veth
            && ctr_link.link == Some(l.index)
            && l.link == Some(ctr_link.index)
            && l.master == Some(br.index)
        {
            found = Some((l, rec));
            break;
        }
    }
    let Some((host, rec)) = found else {
        return Err(fail(format!(
            "CNI veth created for bridge {} was not found",
            conf.bridge
        )));
    };
    if !rec.mac.is_empty() && rec.mac != host.mac {
        return Err(fail(format!(
            "Interface {} Mac doesn't match: {} not found",
            host.name, rec.mac
        )));
    }
    if host.hairpin.unwrap_or(false) != conf.hairpin {
        return Err(fail(format!(
            "host veth {} hairpin mode is {}, configured hairpinMode is {}",
            host.name,
            host.hairpin.unwrap_or(false),
            conf.hairpin
        )));
    }
    if host.isolated.unwrap_or(false) != conf.port_isolation {
        return Err(fail(format!(
            "host veth {} port isolation is {}, configured portIsolation is {}",
            host.name,
            host.isolated.unwrap_or(false),
            conf.port_isolation
        )));
    }
    if conf.mtu > 0 && host.mtu != conf.mtu {
        return Err(fail(format!(
            "host veth {} MTU {} doesn't match configured mtu {}",
            host.name, host.mtu, conf.mtu
        )));
    }
    if conf.uses_vlans() {
        let mut have = nl
            .bridge_vlans(host.index)
            .map_err(nl_err("failed to list the host veth's VLANs"))?;
        let want = endpoint::expected_vlans(conf);
        if conf.preserve_default_vlan {
            have.retain(|v| want.iter().any(|w| w.0 == v.0));
        }
        have.sort_unstable();
        if have != want {
            return Err(fail(format!(
                "host veth {} VLANs {have:?} don't match the configured {want:?} (vid, flags)",
                host.name
            )));
        }
    }
    Ok(host)
}

fn check_addresses_and_routes(
    ctr: &mut Netlink,
    link: &Link,
    result: &CniResult,
) -> Result<(), BridgeError> {
    let have = ctr
        .addresses(Some(link.index))
        .map_err(nl_err("failed to list the container addresses"))?;
    for ip in &result.ips {
        if !have.iter().any(|a| a.addr == ip.address) {
            return Err(fail(format!(
                "Failed to match addr {} on interface {}",
                ip.address, link.name
            )));
        }
    }
    let routes = ctr
        .routes()
        .map_err(nl_err("failed to list the container routes"))?;
    for r in &result.routes {
        let dst = r.dst.trunc();
        let table = r.table.unwrap_or(254);
        let ok = routes
            .iter()
            .any(|k| k.dst == dst && k.table == Some(table) && (r.gw.is_none() || k.gw == r.gw));
        if !ok {
            return Err(fail(format!(
                "Failed to match route {} via {} in table {table}",
                r.dst,
                r.gw.map(|g| g.to_string())
                    .unwrap_or_else(|| "<nil>".into())
            )));
        }
    }
    Ok(())
}

/// CHECK.
pub fn check(req: &Request) -> Result<(), BridgeError> {
    let conf = Config::from_request(req)?;
    if conf.layer3 && conf.ip_masq {
        conf.checked_backend()?;
    }
    let ifname = req.env.ifname.as_str();
    let (_ns, mut ctr) = open_sandbox(&req.env.netns)?;
    if let Some(ipam) = Ipam::of(req) {
        ipam.check()?;
    }
    let result = req
        .prev_result()?
        .ok_or_else(|| fail("Required prevResult missing"))?;
    let mut host =
        Netlink::current().map_err(|e| BridgeError::netlink("failed to open netlink", e))?;

    let br_rec = result
        .interfaces
        .iter()
        .find(|i| i.name == conf.bridge)
        .ok_or_else(|| {
            fail(format!(
                "CNI created bridge {} in host namespace was not found",
                conf.bridge
            ))
        })?;
    let ctr_rec = result
        .interfaces
        .iter()
        .find(|i| i.name == ifname && i.sandbox == req.env.netns);
    let Some(ctr_rec) = ctr_rec else {
        let sb = result
            .interfaces
            .iter()
            .find(|i| i.name == ifname)
            .map(|i| i.sandbox.clone())
            .unwrap_or_default();
        return Err(fail(format!(
            "Sandbox in prevResult {sb} doesn't match configured netns: {}",
            req.env.netns
        )));
    };
    let br = check_bridge(&mut host, br_rec, &conf)?;
    let ctr_link = check_container(&mut ctr, ctr_rec, ifname, &conf)?;
    let host_veth = check_host_veth(&mut host, &result, &br, &ctr_link, &conf)?;
    check_addresses_and_routes(&mut ctr, &ctr_link, &result)?;
    check_gateway(&mut host, &br, &result, &conf)?;
    let refid = spoofcheck::ref_id(&req.env.container_id, ifname);
    if conf.macspoofchk && !spoofcheck::present_nf(&host_veth.name, &ctr_link.mac, &refid) {
        let listing = spoofcheck::list()?;
        spoofcheck::verify(listing.as_ref(), &host_veth.name, &ctr_link.mac, &refid)
            .map_err(fail)?;
    }
    if conf.layer3 && conf.ip_masq {
        let addrs: Vec<IpNet> = result.ips.iter().map(|i| i.address).collect();
        masq::verify(
            conf.checked_backend()?,
            Instance {
                net: &conf.network,
                ifname,
                container_id: &req.env.container_id,
            },
            &addrs,
        )?;
    }
    Ok(())
}
