//! The CNM *endpoint*: a veth pair whose host end `veth<8 hex>` is a port of the bridge and
//! whose container end `CNI_IFNAME` is born directly inside the sandbox (never moved).

use crate::config::Config;
use crate::error::BridgeError;
use cni_kernel::netlink::{Link, VLAN_PVID, VLAN_UNTAGGED, VethSpec};
use cni_kernel::{NetNs, Netlink, sysctl};
use std::io::Read;
use std::time::{Duration, Instant};

/// Attempts at a free random host veth name (the reference's 10).
pub const NAME_ATTEMPTS: usize = 10;

/// A fresh `veth%08x` name from 4 random bytes.
pub fn random_veth_name() -> Result<String, BridgeError> {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| BridgeError::System(format!("failed to read /dev/urandom: {e}")))?;
    Ok(format!("veth{:08x}", u32::from_be_bytes(b)))
}

/// Both ends of a created endpoint.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The host end (in the node's namespace).
    pub host: Link,
    /// The container end (in the sandbox).
    pub container: Link,
}

/// The reference's error for an `ifname` that already exists in the sandbox.
fn name_taken(ifname: &str, peer: &str) -> BridgeError {
    BridgeError::System(format!(
        "container veth name ({ifname:?}) peer provided ({peer:?}) already exists"
    ))
}

/// Fails, as [`create`] would, if `ifname` already exists in the sandbox: a repeated ADD
/// must be refused before IPAM runs, or its rollback's IPAM DEL would release the first
/// attachment's reservation.
pub fn ensure_ifname_free(ctr: &mut Netlink, ifname: &str) -> Result<(), BridgeError> {
    let existing = ctr
        .link_by_name(ifname)
        .map_err(|e| BridgeError::netlink(format!("failed to lookup {ifname:?}"), e))?;
    match existing {
        Some(_) => Err(name_taken(ifname, &random_veth_name()?)),
        None => Ok(()),
    }
}

/// Creates the veth pair from the host handle with the peer born in `sandbox`. A collision on
/// the random host name is retried; an existing `ifname` in the sandbox is an error.
///
/// With `bridge`, the host end is created up and already a port of it (one request instead
/// of three; [`attach`] skips what is done). If that request fails for another reason than a
/// name collision, the pair is created plainly, so that [`attach`]'s steps report the error
/// as they always did.
pub fn create(
    host: &mut Netlink,
    ctr: &mut Netlink,
    sandbox: &NetNs,
    ifname: &str,
    mtu: u32,
    mac: Option<[u8; 6]>,
    bridge: Option<u32>,
) -> Result<Endpoint, BridgeError> {
    let mut master = bridge;
    for _ in 0..NAME_ATTEMPTS {
        let name = random_veth_name()?;
        let spec = VethSpec {
            name: &name,
            peer_name: ifname,
            peer_netns: Some(sandbox.fd()),
            mtu,
            peer_mac: mac,
            up: master.is_some(),
            master,
        };
        let created = match host.create_veth(&spec) {
            Err(e) if master.is_some() && !e.is_exists() => {
                master = None;
                host.create_veth(&VethSpec {
                    up: false,
                    master: None,
                    ..spec
                })
            }
            other => other,
        };
        match created {
            Ok(echoed) => {
                let h = match echoed {
                    Some(h) => h,
                    None => host
                        .link_by_name(&name)
                        .map_err(|e| BridgeError::netlink(format!("failed to lookup {name:?}"), e))?
                        .ok_or_else(|| {
                            BridgeError::System(format!("veth {name:?} vanished after creation"))
                        })?,
                };
                let c = ctr
                    .link_by_name(ifname)
                    .map_err(|e| BridgeError::netlink(format!("failed to lookup {ifname:?}"), e))?;
                let Some(c) = c else {
                    let _ = host.delete_link(h.index);
                    return Err(BridgeError::System(format!(
                        "container veth {ifname:?} not found in the sandbox after creation"
                    )));
                };
                return Ok(Endpoint {
                    host: h,
                    container: c,
                });
            }
            Err(e) if e.is_exists() => {
                let in_sandbox = ctr
                    .link_by_name(ifname)
                    .map_err(|e| BridgeError::netlink(format!("failed to lookup {ifname:?}"), e))?;
                if in_sandbox.is_some() {
                    return Err(name_taken(ifname, &name));
                }
                let on_host = host
                    .link_by_name(&name)
                    .map_err(|e| BridgeError::netlink(format!("failed to lookup {name:?}"), e))?;
                if on_host.is_none() {
                    return Err(BridgeError::netlink(
                        format!("failed to create veth pair {name:?}/{ifname:?}"),
                        e,
                    ));
                }
            }
            Err(e) => {
                return Err(BridgeError::netlink(
                    format!("failed to create veth pair {name:?}/{ifname:?}"),
                    e,
                ));
            }
        }
    }
    Err(BridgeError::System(format!(
        "failed to find a free host veth name for {ifname:?} after {NAME_ATTEMPTS} attempts"
    )))
}

/// Makes the host end a port of the bridge: up, no router advertisements, master (the first
/// and the last unless [`create`] did them), hairpin, isolation and VLANs.
pub fn attach(nl: &mut Netlink, host: &Link, br: &Link, conf: &Config) -> Result<(), BridgeError> {
    let name = &host.name;
    if !host.is_up() {
        nl.set_up(host.index, true)
            .map_err(|e| BridgeError::netlink(format!("failed to set {name:?} up"), e))?;
    }
    let _ = sysctl::write(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
    if host.master != Some(br.index) {
        nl.set_master(host.index, br.index).map_err(|e| {
            BridgeError::netlink(
                format!("failed to connect {name:?} to bridge {}", br.name),
                e,
            )
        })?;
    }
    nl.set_bridge_port(
        host.index,
        conf.hairpin,
        conf.port_isolation.then_some(true),
    )
    .map_err(|e| {
        BridgeError::netlink(
            format!("failed to set hairpin mode / port isolation on {name:?}"),
            e,
        )
    })?;
    if conf.uses_vlans() {
        configure_vlans(nl, host, conf).map_err(|e| {
            if e.errno() == Some(nix::errno::Errno::EOPNOTSUPP) {
                BridgeError::System(format!(
                    "failed to set up VLANs on {name:?}: this kernel does not support bridge VLAN filtering ({e})"
                ))
            } else {
                BridgeError::netlink(format!("failed to set up VLANs on {name:?}"), e)
            }
        })?;
    }
    Ok(())
}

fn configure_vlans(
    nl: &mut Netlink,
    host: &Link,
    conf: &Config,
) -> Result<(), cni_kernel::NetlinkError> {
    if !conf.preserve_default_vlan {
        for (vid, _) in nl.bridge_vlans(host.index)? {
            nl.bridge_vlan_del(host.index, vid)?;
        }
    }
    if conf.vlan != 0 {
        nl.bridge_vlan_add(host.index, conf.vlan, VLAN_PVID | VLAN_UNTAGGED)?;
    } else if !conf.trunk.is_empty() {
        // A trunk without an access VLAN keeps the native VLAN 1 (reference 1.8.0).
        nl.bridge_vlan_add(host.index, 1, VLAN_PVID | VLAN_UNTAGGED)?;
    }
    for &vid in &conf.trunk {
        if vid != conf.vlan {
            nl.bridge_vlan_add(host.index, vid, 0)?;
        }
    }
    Ok(())
}

/// The VLANs the host port must carry, as `(vid, flags)`, sorted (for CHECK). Default VLAN
/// entries kept by `preserveDefaultVlan` are not listed.
pub fn expected_vlans(conf: &Config) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    if conf.vlan != 0 {
        out.push((conf.vlan, VLAN_PVID | VLAN_UNTAGGED));
    } else if !conf.trunk.is_empty() {
        out.push((1, VLAN_PVID | VLAN_UNTAGGED));
    }
    for &vid in &conf.trunk {
        if vid != conf.vlan {
            out.push((vid, 0));
        }
    }
    out.sort_unstable();
    out
}

/// Waits until the host end is operationally up (the bridge port left its learning states):
/// the reference sleeps 0, 50, 500, 1000, 1000 ms; this polls from 1 ms, backing off to
/// 50 ms, within the same total bound.
pub fn wait_oper_up(nl: &mut Netlink, host: &Link) -> Result<Link, BridgeError> {
    let deadline = Instant::now() + Duration::from_millis(2550);
    let mut poll = Duration::from_millis(1);
    loop {
        let l = nl
            .link_by_index(host.index)
            .map_err(|e| BridgeError::netlink(format!("failed to lookup {:?}", host.name), e))?
            .ok_or_else(|| BridgeError::System(format!("{:?} disappeared", host.name)))?;
        if l.is_oper_up() {
            return Ok(l);
        }
        if Instant::now() >= deadline {
            return Err(BridgeError::System(format!(
                "bridge port in error state: {}",
                oper_state_name(l.oper_state)
            )));
        }
        std::thread::sleep(poll);
        poll = (poll * 2).min(Duration::from_millis(50));
    }
}

fn oper_state_name(s: u8) -> &'static str {
    match s {
        1 => "not-present",
        2 => "down",
        3 => "lower-layer-down",
        4 => "testing",
        5 => "dormant",
        6 => "up",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names() {
        let a = random_veth_name().unwrap();
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth"));
        assert!(
            a[4..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, random_veth_name().unwrap());
    }
}
