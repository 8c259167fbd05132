//! The `portmap` CNI plugin: publishes container ports on the node, with the reference's
//! iptables rules (byte-compatible chain names, comments and argv) or its nftables layout.
//!
//! One ADD costs one `iptables-save -t nat` listing and one `iptables-restore --noflush` per
//! container address family, or a single `nft -f -` for both families; DEL the same (one
//! listing + one transaction). Rules are generated as pure data ([`iptables`], [`nftables`])
//! and unit-tested against the upstream vectors. See `plugins.md` §3 for the reference.

pub mod config;
pub mod error;
pub mod iptables;
pub mod nftables;

use cni::skel::{Plugin, Request};
use cni::{CniError, CniResult};
use cni_kernel::firewall::{Family, iptables::Iptables, nft};
use cni_kernel::nftables::NfTables;
use config::{Backend, Config, ContainerIps, Protocol, detect_backend};
use error::PortmapError;

/// The `portmap` plugin.
pub struct Portmap;

impl Plugin for Portmap {
    fn name(&self) -> &'static str {
        "portmap"
    }
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        add(req).map_err(CniError::from)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        del(req).map_err(CniError::from)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        check(req).map_err(CniError::from)
    }
    fn status(&self, req: &Request) -> Result<(), CniError> {
        status(req).map_err(CniError::from)
    }
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        gc(req).map_err(CniError::from)
    }
}

fn parse(req: &Request) -> Result<Config, PortmapError> {
    Config::parse(&req.conf, detect_backend)
}

/// UDP host ports of the mappings that apply to a family.
fn udp_ports(conf: &Config, v6: bool) -> Vec<u16> {
    let mut v: Vec<u16> = conf
        .mappings
        .iter()
        .filter(|m| m.protocol == Protocol::Udp && m.applies_to(v6))
        .map(|m| m.host_port)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Deletes conntrack entries of UDP flows to `v4`/`v6` host ports (best effort, logged): a
/// client that talked to a host port before the mapping existed (or after it was removed)
/// would otherwise keep its stale, untranslated entry. Both families in one pass, over `nf`'s
/// socket when given (after a rule-deleting transaction, each netfilter socket's release
/// waits for the rules' destruction: one socket, one release).
fn flush_udp_conntrack(nf: Option<&mut NfTables>, v4: &[u16], v6: &[u16]) {
    if let Err(e) = cni_kernel::conntrack::delete_udp_by_dport(nf, v4, v6) {
        eprintln!("portmap: failed to delete stale UDP conntrack entries: {e}");
    }
}

/// The node interface that routes to `ip` (with bridge: the bridge), if any.
fn routable_host_if(ip: std::net::IpAddr) -> Option<cni_kernel::netlink::Link> {
    let mut nl = cni_kernel::Netlink::current().ok()?;
    let idx = nl.route_get_oif(ip).ok()??;
    nl.link_by_index(idx).ok()?
}

fn localnet_sysctl(ifname: &str) -> String {
    format!("net/ipv4/conf/{ifname}/route_localnet")
}

/// Sets `route_localnet=1` on the interface routing to the container (only that one), so
/// that `127.0.0.1:<hostPort>` can be DNATed across it (CVE-2020-8558 context: the reference
/// does the same; the masquerade rules rewrite the 127.0.0.1 source).
fn enable_localnet(conf: &Config, ips: &ContainerIps) -> Result<(), PortmapError> {
    if !conf.snat {
        return Ok(());
    }
    let Some(v4) = ips.v4 else { return Ok(()) };
    let Some(link) = routable_host_if(v4.addr()) else {
        return Ok(());
    };
    // Already on (every ADD after the first): the link says so, no /proc/sys lookup.
    if link.route_localnet == Some(true) {
        return Ok(());
    }
    let ifname = link.name;
    cni_kernel::sysctl::ensure(&localnet_sysctl(&ifname), "1")
        .map_err(|e| PortmapError::Localnet(format!("{ifname}: {e}")))
}

fn add(req: &Request) -> Result<CniResult, PortmapError> {
    let conf = parse(req)?;
    let prev = req.prev_result()?.ok_or(PortmapError::NotChained)?;
    if conf.mappings.is_empty() {
        return Ok(prev);
    }
    let ips = ContainerIps::from_result(&prev, &req.env.ifname);
    let id = req.env.container_id.as_str();
    if ips.iter().next().is_none() {
        return Ok(prev);
    }
    match conf.backend {
        Backend::Iptables => {
            // One family after the other: nf_tables serializes commits per network
            // namespace anyway (measured: running both families concurrently gains nothing).
            let mut done: Vec<iptables::Applied> = Vec::new();
            let mut result = Ok(());
            for ip in ips.iter() {
                let outcome = match iptables::add_fast(&conf, id, ip) {
                    Some(a) => Ok(a),
                    None => iptables::add(&conf, id, ip),
                };
                match outcome {
                    Ok(a) => done.push(a),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if result.is_ok() {
                result = enable_localnet(&conf, &ips);
            }
            if let Err(e) = result {
                for a in done.iter().rev() {
                    if let Err(re) = iptables::rollback(a) {
                        eprintln!("portmap: rollback failed: {re}");
                    }
                }
                return Err(e);
            }
        }
        Backend::Nftables => {
            let all: Vec<_> = ips.iter().collect();
            nftables::add(&conf, id, &all)?;
            if let Err(e) = enable_localnet(&conf, &ips) {
                let mut nf = NfTables::open().ok();
                if let Err(re) = nftables::del(nf.as_mut(), &conf.network, id) {
                    eprintln!("portmap: rollback failed: {re}");
                }
                return Err(e);
            }
        }
    }
    let v4 = if ips.v4.is_some() {
        udp_ports(&conf, false)
    } else {
        Vec::new()
    };
    let v6 = if ips.v6.is_some() {
        udp_ports(&conf, true)
    } else {
        Vec::new()
    };
    flush_udp_conntrack(None, &v4, &v6);
    Ok(prev)
}

fn merge_ports(mut a: Vec<u16>, b: Vec<u16>) -> Vec<u16> {
    a.extend(b);
    a.sort_unstable();
    a.dedup();
    a
}

fn del(req: &Request) -> Result<(), PortmapError> {
    let conf = parse(req)?;
    let id = req.env.container_id.as_str();
    match conf.backend {
        Backend::Iptables => {
            let mut errors = Vec::new();
            // Only the families the container had, when `prevResult` says; both otherwise.
            let families: Vec<(Family, bool)> = match req.prev_result().ok().flatten() {
                Some(prev) => {
                    let ips = ContainerIps::from_result(&prev, &req.env.ifname);
                    let mut f = Vec::new();
                    if ips.v4.is_some() {
                        f.push((Family::V4, false));
                    }
                    if ips.v6.is_some() {
                        f.push((Family::V6, true));
                    }
                    if f.is_empty() {
                        f = vec![(Family::V4, false), (Family::V6, true)];
                    }
                    f
                }
                None => vec![(Family::V4, false), (Family::V6, true)],
            };
            let mut nf = NfTables::open().ok();
            let outcomes: Vec<_> = families
                .into_iter()
                .map(|(family, v6)| (v6, iptables::del_fast(nf.as_mut(), &conf, id, family)))
                .collect();
            let (mut p4, mut p6) = (Vec::new(), Vec::new());
            for (v6, outcome) in outcomes {
                match outcome {
                    Ok(r) if r.any => {
                        let mut ports = merge_ports(r.udp_ports, udp_ports(&conf, v6));
                        // A port whose DNAT rule never matched has no translated entries.
                        ports.retain(|p| !r.idle_udp_ports.contains(p));
                        if v6 {
                            p6 = ports;
                        } else {
                            p4 = ports;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(e),
                }
            }
            flush_udp_conntrack(nf.as_mut(), &p4, &p6);
            if !Iptables::new(Family::V4).available() && !Iptables::new(Family::V6).available() {
                eprintln!(
                    "portmap: neither iptables nor ip6tables is installed; nothing to remove"
                );
            }
            match errors.into_iter().next() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        Backend::Nftables => {
            let mut nf = NfTables::open().ok();
            let (p4, p6) = nftables::del(nf.as_mut(), &conf.network, id)?;
            let p4 = if p4.is_empty() {
                p4
            } else {
                merge_ports(p4, udp_ports(&conf, false))
            };
            let p6 = if p6.is_empty() {
                p6
            } else {
                merge_ports(p6, udp_ports(&conf, true))
            };
            flush_udp_conntrack(nf.as_mut(), &p4, &p6);
            Ok(())
        }
    }
}

fn check(req: &Request) -> Result<(), PortmapError> {
    let conf = parse(req)?;
    let prev = req.prev_result()?.ok_or(PortmapError::PrevResultMissing)?;
    if conf.mappings.is_empty() {
        return Ok(());
    }
    let ips = ContainerIps::from_result(&prev, &req.env.ifname);
    let id = req.env.container_id.as_str();
    for ip in ips.iter() {
        match conf.backend {
            Backend::Iptables => iptables::check(&conf, id, ip)?,
            Backend::Nftables => nftables::check(&conf, id, ip)?,
        }
    }
    if conf.snat
        && let Some(v4) = ips.v4
        && let Some(link) = routable_host_if(v4.addr())
        && cni_kernel::sysctl::read(&localnet_sysctl(&link.name)).is_ok_and(|v| v != "1")
    {
        return Err(PortmapError::Check(format!(
            "route_localnet is not enabled on {}",
            link.name
        )));
    }
    Ok(())
}

fn status(req: &Request) -> Result<(), PortmapError> {
    let conf = parse(req)?;
    match conf.backend {
        Backend::Iptables => {
            let tool = Iptables::new(Family::V4);
            if !tool.available() {
                return Err(PortmapError::Unavailable(
                    "iptables backend is not usable: iptables/iptables-restore not found in PATH"
                        .into(),
                ));
            }
            tool.lists("nat", "OUTPUT").map_err(|e| {
                PortmapError::Unavailable(format!("iptables backend is not usable: {e}"))
            })
        }
        Backend::Nftables => {
            // ADD runs nft for conditions (nft text of the operator's own); the rest goes in
            // over netlink.
            let with_conditions = [false, true]
                .iter()
                .any(|v6| !conf.conditions(*v6).is_empty());
            if with_conditions && !nft::usable() {
                Err(PortmapError::Unavailable(
                    "nftables backend is not usable: nft cannot list tables".into(),
                ))
            } else if !nft::ready() {
                Err(PortmapError::Unavailable(
                    "nftables backend is not usable: nft not found in PATH, or nf_tables does \
                     not answer"
                        .into(),
                ))
            } else {
                Ok(())
            }
        }
    }
}

fn gc(req: &Request) -> Result<(), PortmapError> {
    let conf = parse(req)?;
    let Some(valid) = cni::gc::valid_attachments(&req.conf.raw)? else {
        eprintln!("portmap GC: no valid-attachments list in the request; nothing removed");
        return Ok(());
    };
    let is_valid = |id: &str| {
        valid
            .iter()
            .any(|a| a.container_id == id || nftables::comment(&a.container_id) == id)
    };
    let mut errors = Vec::new();
    match conf.backend {
        Backend::Iptables => {
            let mut ports: [Vec<u16>; 2] = Default::default();
            for (family, v6) in [(Family::V4, false), (Family::V6, true)] {
                match iptables::gc(&conf.network, &is_valid, family) {
                    Ok((_, p)) => ports[usize::from(v6)] = merge_ports(p, Vec::new()),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            flush_udp_conntrack(None, &ports[0], &ports[1]);
        }
        Backend::Nftables => match nftables::gc(&conf.network, &is_valid) {
            Ok((_, p4, p6)) => {
                flush_udp_conntrack(
                    None,
                    &merge_ports(p4, Vec::new()),
                    &merge_ports(p6, Vec::new()),
                );
            }
            Err(e) => errors.push(e.to_string()),
        },
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PortmapError::Gc(errors))
    }
}
