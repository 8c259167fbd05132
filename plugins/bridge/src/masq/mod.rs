//! Masquerading (`ipMasq`): one firewall transaction per ADD, DEL and GC.
//!
//! iptables: one `iptables-save -t nat` listing and at most one `iptables-restore --noflush`
//! per address family. nftables: one `nft -j list table` listing and at most one `nft -f -`.
//! DEL always tries both backends, as the reference does, and skips a backend cheaply when
//! its tool is absent or its table holds nothing of the attachment.

pub mod iptables;
pub mod nft;

use crate::config::Backend;
use crate::error::BridgeError;
use cni::gc::Attachment;
use cni_kernel::firewall::iptables::{Iptables, Ruleset};
use cni_kernel::firewall::{Family, nft as nft_tool};
use ipnet::IpNet;

/// The attachment whose rules are handled.
#[derive(Clone, Copy, Debug)]
pub struct Instance<'a> {
    /// The network name (`name`).
    pub net: &'a str,
    /// `CNI_IFNAME` (only the nftables backend keys rules by it).
    pub ifname: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
}

fn families(addrs: &[IpNet]) -> Vec<Family> {
    let mut out: Vec<Family> = addrs.iter().map(|a| Family::of(&a.addr())).collect();
    out.sort();
    out.dedup();
    out
}

fn of_family(addrs: &[IpNet], f: Family) -> Vec<IpNet> {
    addrs
        .iter()
        .filter(|a| Family::of(&a.addr()) == f)
        .copied()
        .collect()
}

fn save(f: Family) -> Result<Ruleset, BridgeError> {
    let ipt = Iptables::new(f);
    ipt.save(iptables::TABLE)
        .map_err(|e| BridgeError::firewall(format!("failed to list {} nat", ipt.bin()), e))
}

fn iptables_setup(
    inst: Instance<'_>,
    addrs: &[IpNet],
    mut first: Option<(Family, Ruleset)>,
) -> Result<(), BridgeError> {
    for f in families(addrs) {
        let listing = match first.take() {
            Some((ff, rs)) if ff == f => rs,
            _ => save(f)?,
        };
        let tx = iptables::plan_setup(&listing, inst.net, inst.container_id, &of_family(addrs, f));
        let ipt = Iptables::new(f);
        ipt.restore(&tx).map_err(|e| {
            BridgeError::firewall(format!("failed to set up {} masquerading", ipt.bin()), e)
        })?;
    }
    Ok(())
}

fn nft_setup(inst: Instance<'_>, addrs: &[IpNet]) -> Result<(), BridgeError> {
    let listing = nft_tool::list_table(nft::FAMILY, nft::TABLE)
        .map_err(|e| BridgeError::firewall("failed to list nftables masquerade table", e))?;
    let existing = listing.as_ref().map(nft::masq_rules).unwrap_or_default();
    let script = nft::setup_script(&existing, inst.net, inst.ifname, inst.container_id, addrs);
    nft_tool::apply(&script)
        .map_err(|e| BridgeError::firewall("failed to set up nftables masquerading", e))
}

/// Installs the masquerade rules of an attachment; returns the backend used. With no
/// explicit backend this is the reference's default: iptables, unless it is unusable and
/// nftables is usable (detected from the first listing, so no extra process is started).
pub fn setup(
    backend: Option<Backend>,
    inst: Instance<'_>,
    addrs: &[IpNet],
) -> Result<Backend, BridgeError> {
    if addrs.is_empty() {
        return Ok(backend.unwrap_or(Backend::Iptables));
    }
    match backend {
        Some(Backend::Iptables) => iptables_setup(inst, addrs, None).map(|_| Backend::Iptables),
        Some(Backend::Nftables) => nft_setup(inst, addrs).map(|_| Backend::Nftables),
        None => {
            let first_family = families(addrs).first().copied().unwrap_or(Family::V4);
            let first = if Iptables::new(Family::V4).available() {
                save(first_family).ok()
            } else {
                None
            };
            match first {
                Some(rs) => {
                    iptables_setup(inst, addrs, Some((first_family, rs))).map(|_| Backend::Iptables)
                }
                None if nft_tool::usable() => nft_setup(inst, addrs).map(|_| Backend::Nftables),
                // Neither works: report the iptables failure, as the reference does.
                None => iptables_setup(inst, addrs, None).map(|_| Backend::Iptables),
            }
        }
    }
}

fn note(msg: &str) {
    eprintln!("bridge: {msg}");
}

/// Removes an attachment's masquerade rules from both backends. `addrs` are the attachment's
/// addresses if known (container interface or `prevResult`); without them everything keyed
/// by `(network, container ID)` (iptables) or `(network, ifname, container ID)` (nftables)
/// goes. A backend whose tool is missing or does not work is skipped with a note on stderr
/// (nothing can have been created with it).
pub fn teardown(inst: Instance<'_>, addrs: Option<&[IpNet]>) -> Result<(), BridgeError> {
    let mut errors = Vec::new();
    let fams = match addrs {
        Some(a) if !a.is_empty() => families(a),
        _ => vec![Family::V4, Family::V6],
    };
    for f in fams {
        let ipt = Iptables::new(f);
        if !ipt.available() {
            continue;
        }
        let listing = match ipt.save(iptables::TABLE) {
            Ok(l) => l,
            Err(e) => {
                note(&format!("skipping {} masquerade cleanup: {e}", ipt.bin()));
                continue;
            }
        };
        let family_addrs = addrs.map(|a| of_family(a, f));
        let tx = iptables::plan_teardown(
            &listing,
            inst.net,
            inst.container_id,
            family_addrs.as_deref(),
        );
        if let Err(e) = ipt.restore(&tx) {
            errors.push(BridgeError::firewall(
                format!("failed to remove {} masquerade rules", ipt.bin()),
                e,
            ));
        }
    }
    if nft_tool::available() {
        match nft_tool::list_table(nft::FAMILY, nft::TABLE) {
            Ok(None) => {}
            Ok(Some(listing)) => {
                let script = nft::teardown_script(
                    &nft::masq_rules(&listing),
                    inst.net,
                    inst.ifname,
                    inst.container_id,
                );
                if let Err(e) = nft_tool::apply(&script) {
                    errors.push(BridgeError::firewall(
                        "failed to remove nftables masquerade rules",
                        e,
                    ));
                }
            }
            Err(e) => note(&format!("skipping nftables masquerade cleanup: {e}")),
        }
    }
    BridgeError::collect(errors)
}

/// Verifies the attachment's masquerade rules in the backend ADD would use.
pub fn verify(
    backend: Option<Backend>,
    inst: Instance<'_>,
    addrs: &[IpNet],
) -> Result<(), BridgeError> {
    let use_nft = match backend {
        Some(Backend::Nftables) => true,
        Some(Backend::Iptables) => false,
        None => !(Iptables::new(Family::V4).available() && save(Family::V4).is_ok()),
    };
    let fail = |m: String| BridgeError::System(m);
    if use_nft {
        let listing = nft_tool::list_table(nft::FAMILY, nft::TABLE)
            .map_err(|e| BridgeError::firewall("failed to list nftables masquerade table", e))?;
        return nft::verify(
            listing.as_ref(),
            inst.net,
            inst.ifname,
            inst.container_id,
            addrs,
        )
        .map_err(fail);
    }
    for f in families(addrs) {
        let listing = save(f)?;
        iptables::verify(&listing, inst.net, inst.container_id, &of_family(addrs, f))
            .map_err(|m| fail(format!("{}: {m}", Iptables::new(f).bin())))?;
    }
    Ok(())
}

/// GC: removes the masquerade rules of every attachment of `net` not in `valid`, in both
/// backends (what was removed is noted on stderr).
pub fn gc(net: &str, valid: &[Attachment]) -> Result<(), BridgeError> {
    let mut errors = Vec::new();
    for f in [Family::V4, Family::V6] {
        let ipt = Iptables::new(f);
        if !ipt.available() {
            continue;
        }
        let listing = match ipt.save(iptables::TABLE) {
            Ok(l) => l,
            Err(e) => {
                note(&format!("GC: skipping {}: {e}", ipt.bin()));
                continue;
            }
        };
        let (tx, stale) = iptables::plan_gc(&listing, net, valid);
        if stale.is_empty() {
            continue;
        }
        match ipt.restore(&tx) {
            Ok(()) => note(&format!(
                "GC: removed {} masquerade rules of stale containers {stale:?}",
                ipt.bin()
            )),
            Err(e) => errors.push(BridgeError::firewall(
                format!("GC: failed to remove {} masquerade rules", ipt.bin()),
                e,
            )),
        }
    }
    if nft_tool::available() {
        match nft_tool::list_table(nft::FAMILY, nft::TABLE) {
            Ok(None) => {}
            Ok(Some(listing)) => {
                let script = nft::gc_script(&nft::masq_rules(&listing), net, valid);
                if let Err(e) = nft_tool::apply(&script) {
                    errors.push(BridgeError::firewall(
                        "GC: failed to remove nftables masquerade rules",
                        e,
                    ));
                }
            }
            Err(e) => note(&format!("GC: skipping nftables: {e}")),
        }
    }
    BridgeError::collect(errors)
}

/// STATUS: can the backend ADD would use work? `None` = the reference's default (either
/// backend will do).
pub fn usable(backend: Option<Backend>) -> Result<(), BridgeError> {
    let ipt = || Iptables::new(Family::V4).usable();
    let ok = match backend {
        Some(Backend::Iptables) => ipt(),
        Some(Backend::Nftables) => nft_tool::usable(),
        None => ipt() || nft_tool::usable(),
    };
    if ok {
        Ok(())
    } else {
        Err(BridgeError::Unavailable(format!(
            "ipMasq: the {} firewall backend is not usable",
            backend
                .map(Backend::as_str)
                .unwrap_or("iptables or nftables")
        )))
    }
}
