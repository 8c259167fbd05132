//! ADD: ensure the network, create the endpoint in the sandbox, delegate IPAM, configure the
//! sandbox, gateway and masquerading, in the reference's order but for one step, with every
//! effect undone if a later step fails. The step: the container's routes are added last, after
//! masquerading. Bringing the container interface up makes the kernel finish IPv6 DAD at once
//! (`accept_dad=0`) in a worker that holds the RTNL lock while the bridge floods the new
//! port's MLD reports and router solicitation to every port; a route addition needs that lock,
//! the masquerade commit does not, so it runs meanwhile (0.7–0.8 ms less per ADD at 250
//! containers). The final state is the same.

use crate::config::Config;
use crate::error::BridgeError;
use crate::masq::{self, Instance};
use crate::undo::{Step, Undo};
use crate::{endpoint, network, sandbox, spoofcheck};
use cni::invoke::Ipam;
use cni::skel::Request;
use cni::{CniResult, Interface, Route};
use cni_kernel::netlink::Link;
use cni_kernel::{NetNs, Netlink};
use ipnet::IpNet;
use std::net::IpAddr;

/// The gateway addresses (with the subnet prefix) to put on the bridge, per family.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Gateways {
    /// IPv4 gateways.
    pub v4: Vec<IpNet>,
    /// IPv6 gateways.
    pub v6: Vec<IpNet>,
}

/// `network address + 1`.
pub fn first_host(net: &IpNet) -> IpAddr {
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).wrapping_add(1).into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).wrapping_add(1).into()),
    }
}

/// The reference's `calcGateways`: every IP points at the container interface (index 2);
/// with `isGateway` an IP without a gateway gets `network + 1`; with `isDefaultGateway` each
/// family gets a default route via its gateway unless a default route with a `gw` exists.
pub fn calc_gateways(result: &mut CniResult, conf: &Config) -> Gateways {
    let mut gws = Gateways::default();
    let mut default_found = [false, false];
    for i in 0..result.ips.len() {
        let (addr, gateway) = {
            let ipc = &mut result.ips[i];
            ipc.interface = Some(2);
            if ipc.gateway.is_none() && conf.is_gateway {
                ipc.gateway = Some(first_host(&ipc.address));
            }
            (ipc.address, ipc.gateway)
        };
        let v4 = addr.addr().is_ipv4();
        let fam = usize::from(!v4);
        let default_net: IpNet = if v4 {
            IpNet::new(IpAddr::from([0u8; 4]), 0)
        } else {
            IpNet::new(IpAddr::from([0u8; 16]), 0)
        }
        .unwrap_or_default();
        if conf.is_default_gateway && !default_found[fam] {
            default_found[fam] = result
                .routes
                .iter()
                .any(|r| r.gw.is_some() && r.dst == default_net);
            if !default_found[fam] {
                let mut r = Route::to(default_net);
                r.gw = gateway;
                result.routes.push(r);
                default_found[fam] = true;
            }
        }
        if conf.is_gateway
            && let Some(gw) = gateway
            && let Ok(n) = IpNet::new(gw, addr.prefix_len())
        {
            if v4 {
                gws.v4.push(n);
            } else {
                gws.v6.push(n);
            }
        }
    }
    gws
}

fn iface(l: &Link) -> Interface {
    Interface {
        name: l.name.clone(),
        mac: l.mac.clone(),
        ..Interface::default()
    }
}

fn open_host() -> Result<Netlink, BridgeError> {
    Netlink::current().map_err(|e| BridgeError::netlink("failed to open a netlink socket", e))
}

/// Opens the sandbox and a netlink handle inside it, entering it once (which also proves it
/// is a network namespace, see [`NetNs::open_running`]).
pub fn open_sandbox(path: &str) -> Result<(NetNs, Netlink), BridgeError> {
    let (ns, nl) = NetNs::open_running(path, Netlink::current)
        .map_err(|e| BridgeError::netns("CNI_NETNS", e))?;
    let nl = nl.map_err(|e| {
        BridgeError::netlink(format!("failed to open netlink in netns {path:?}"), e)
    })?;
    Ok((ns, nl))
}

/// ADD.
pub fn add(req: &Request) -> Result<CniResult, BridgeError> {
    let conf = Config::from_request(req)?;
    let backend = if conf.layer3 {
        conf.checked_backend()?
    } else {
        None
    };
    let ifname = req.env.ifname.as_str();
    let (sandbox_ns, mut ctr) = open_sandbox(&req.env.netns)?;
    let mut host = open_host()?;

    endpoint::ensure_ifname_free(&mut ctr, ifname)?;
    let mut undo = Undo::new(req);
    // IPAM allocates (in its own process, or in a thread when it is our own host-local) while
    // the network and the endpoint are set up.
    // Declared after `undo`, so dropped first: on an early error it is waited for before
    // the rollback's IPAM DEL. SPEC §4: a delegate that failed ADD is sent DEL too.
    let pending_ipam = match Ipam::of(req) {
        Some(ipam) => {
            undo.push(Step::IpamDel);
            Some(ipam.start_add()?)
        }
        None => None,
    };

    let (br, created) = network::ensure_bridge_created(
        &mut host,
        &conf.bridge,
        conf.mtu,
        conf.promisc,
        conf.uses_vlans(),
    )?;
    let pin_mac = br.mac.clone();

    if created {
        undo.push(Step::DeleteBridge {
            name: conf.bridge.clone(),
        });
    }
    let ep = endpoint::create(
        &mut host,
        &mut ctr,
        &sandbox_ns,
        ifname,
        conf.mtu,
        conf.mac,
        Some(br.index),
    )?;
    undo.push(Step::DeleteVeth {
        name: ep.host.name.clone(),
    });
    endpoint::attach(&mut host, &ep.host, &br, &conf)?;

    let mut result = CniResult {
        interfaces: vec![
            iface(&br),
            iface(&ep.host),
            Interface {
                sandbox: req.env.netns.clone(),
                ..iface(&ep.container)
            },
        ],
        ..CniResult::default()
    };

    if conf.macspoofchk {
        let refid = spoofcheck::ref_id(&req.env.container_id, ifname);
        undo.push(Step::SpoofCheck {
            refid: refid.clone(),
        });
        spoofcheck::setup(&ep.host.name, &ep.container.mac, &refid)?;
    }

    if pending_ipam.is_some() {
        // Settings that need only the configuration, while IPAM may still be allocating.
        sandbox::write_sysctls(&sandbox_ns, &mut ctr, &ep.container, conf.enable_dad)?;
    }
    if let Some(pending) = pending_ipam {
        let r = pending.finish()?;
        result.ips = r.ips;
        result.routes = r.routes;
        result.dns = r.dns;
        if result.ips.is_empty() {
            return Err(BridgeError::System(
                "IPAM plugin returned missing IP config".into(),
            ));
        }
        let gws = calc_gateways(&mut result, &conf);
        let has_v6 = result.ips.iter().any(|i| i.address.addr().is_ipv6());
        if has_v6 {
            sandbox::write_v6_sysctls(&sandbox_ns, ifname)?;
        }
        sandbox::configure(&mut ctr, &ep.container, &result)?;

        if conf.is_gateway {
            let mut vlan_gw: Option<Link> = None;
            for (list, v4) in [(&gws.v4, true), (&gws.v6, false)] {
                for gw in list {
                    if conf.vlan != 0 {
                        let l = match &vlan_gw {
                            Some(l) => l.clone(),
                            None => {
                                let l = network::ensure_vlan_gateway(
                                    &mut host,
                                    &br,
                                    conf.vlan,
                                    conf.preserve_default_vlan,
                                )?;
                                result.interfaces.push(iface(&l));
                                vlan_gw = Some(l.clone());
                                l
                            }
                        };
                        let mac = l.mac.clone();
                        network::ensure_addr(&mut host, &l, gw, conf.force_address, &mac)?;
                    } else {
                        network::ensure_addr(&mut host, &br, gw, conf.force_address, &pin_mac)
                            .map_err(|e| match e {
                                BridgeError::System(m) => {
                                    BridgeError::System(format!("failed to set bridge addr: {m}"))
                                }
                                other => other,
                            })?;
                    }
                }
                if !list.is_empty() {
                    network::enable_forwarding(&mut host, v4)?;
                }
            }
        }

        if conf.ip_masq {
            let addrs: Vec<IpNet> = result.ips.iter().map(|i| i.address).collect();
            undo.push(Step::Masquerade {
                addrs: addrs.clone(),
            });
            masq::setup(
                backend,
                Instance {
                    net: &conf.network,
                    ifname,
                    container_id: &req.env.container_id,
                },
                &addrs,
            )?;
        }
        sandbox::add_routes(&mut ctr, &ep.container, &result)?;
    } else if !conf.disable_container_interface {
        ctr.set_up(ep.container.index, true)
            .map_err(|e| BridgeError::netlink(format!("failed to set {ifname:?} up"), e))?;
    }

    let host_now = if conf.disable_container_interface {
        host.link_by_index(ep.host.index)
            .ok()
            .flatten()
            .unwrap_or_else(|| ep.host.clone())
    } else {
        endpoint::wait_oper_up(&mut host, &ep.host)?
    };
    // MACs can change when the port comes up or the first port joins: report current ones.
    if let Some(i) = result.interfaces.get_mut(1) {
        i.mac = host_now.mac;
    }
    if let Ok(Some(b)) = host.link_by_index(br.index)
        && let Some(i) = result.interfaces.get_mut(0)
    {
        i.mac = b.mac;
    }
    if let Some(dns) = &conf.dns {
        result.dns = dns.clone();
    }
    undo.disarm();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::IpConfig;

    fn conf(gw: bool, dgw: bool) -> Config {
        let nc = cni::config::NetConf::parse(
            format!(r#"{{"name":"n","isGateway":{gw},"isDefaultGateway":{dgw}}}"#).as_bytes(),
        )
        .unwrap();
        let req = Request {
            env: cni::env::Env::from_lookup(|k| match k {
                "CNI_COMMAND" => Some("ADD".into()),
                "CNI_CONTAINERID" => Some("c".into()),
                "CNI_NETNS" => Some("/x".into()),
                "CNI_IFNAME" => Some("eth0".into()),
                "CNI_PATH" => Some("/x".into()),
                _ => None,
            })
            .unwrap(),
            stdin: Vec::new(),
            conf: nc,
            version: cni::Version::V1_0_0,
        };
        Config::from_request(&req).unwrap()
    }

    fn ip(a: &str, g: Option<&str>) -> IpConfig {
        IpConfig {
            address: a.parse().unwrap(),
            gateway: g.map(|g| g.parse().unwrap()),
            interface: None,
        }
    }

    #[test]
    fn gateways_and_default_routes() {
        let mut r = CniResult {
            ips: vec![ip("10.88.0.5/16", None), ip("2001:db8:1::5/64", None)],
            ..CniResult::default()
        };
        let g = calc_gateways(&mut r, &conf(false, true));
        assert_eq!(r.ips[0].gateway, Some("10.88.0.1".parse().unwrap()));
        assert_eq!(r.ips[1].gateway, Some("2001:db8:1::1".parse().unwrap()));
        assert!(r.ips.iter().all(|i| i.interface == Some(2)));
        assert_eq!(g.v4, vec!["10.88.0.1/16".parse::<IpNet>().unwrap()]);
        assert_eq!(g.v6, vec!["2001:db8:1::1/64".parse::<IpNet>().unwrap()]);
        let dsts: Vec<String> = r.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, vec!["0.0.0.0/0", "::/0"]);
        assert_eq!(r.routes[0].gw, Some("10.88.0.1".parse().unwrap()));

        // An IPAM default route with a gw wins; one without a gw does not.
        let mut r = CniResult {
            ips: vec![ip("10.88.0.5/16", Some("10.88.0.254"))],
            routes: vec![Route {
                gw: Some("10.88.0.9".parse().unwrap()),
                ..Route::to("0.0.0.0/0".parse().unwrap())
            }],
            ..CniResult::default()
        };
        let g = calc_gateways(&mut r, &conf(true, true));
        assert_eq!(r.routes.len(), 1);
        assert_eq!(g.v4, vec!["10.88.0.254/16".parse::<IpNet>().unwrap()]);
        let mut r = CniResult {
            ips: vec![ip("10.88.0.5/16", None)],
            routes: vec![Route::to("0.0.0.0/0".parse().unwrap())],
            ..CniResult::default()
        };
        calc_gateways(&mut r, &conf(false, true));
        assert_eq!(r.routes.len(), 2);

        // Not a gateway: IPs keep what IPAM said, nothing goes on the bridge.
        let mut r = CniResult {
            ips: vec![ip("10.88.0.5/16", None)],
            ..CniResult::default()
        };
        let g = calc_gateways(&mut r, &conf(false, false));
        assert_eq!(r.ips[0].gateway, None);
        assert_eq!(g, Gateways::default());
    }
}
