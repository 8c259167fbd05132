//! GC and STATUS (CNI 1.1; the reference has neither, `plugins.md` §5).
//!
//! GC removes the masquerade rules (iptables and nftables) of the attachments of this network
//! that are not in the valid list, the macspoofchk rule sets whose host veth is gone, and
//! forwards GC to the IPAM plugin. An absent list means "no information": nothing of ours is
//! removed (IPAM still gets the request and applies the same rule).
//!
//! STATUS forwards to IPAM and reports code 50 when masquerading is configured and its
//! firewall backend cannot work.

use crate::config::Config;
use crate::error::BridgeError;
use crate::{masq, spoofcheck};
use cni::gc::valid_attachments;
use cni::invoke::Ipam;
use cni::skel::Request;
use cni_kernel::Netlink;

/// GC.
pub fn gc(req: &Request) -> Result<(), BridgeError> {
    let conf = Config::from_request(req)?;
    let valid = valid_attachments(&req.conf.raw).map_err(BridgeError::Delegate)?;
    let mut errors: Vec<BridgeError> = Vec::new();
    match &valid {
        None => eprintln!(
            "bridge: GC: no valid-attachments list in the request; nothing of ours is removed"
        ),
        Some(valid) => {
            if let Err(e) = masq::gc(&conf.network, valid) {
                errors.push(e);
            }
            if conf.macspoofchk {
                let exists = |name: &str| {
                    Netlink::current()
                        .ok()
                        .and_then(|mut nl| nl.link_by_name(name).ok())
                        .is_none_or(|l| l.is_some())
                };
                match spoofcheck::gc(exists) {
                    Ok(stale) if !stale.is_empty() => {
                        eprintln!("bridge: GC: removed macspoofchk rules of {stale:?}")
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
    }
    if let Some(ipam) = Ipam::of(req)
        && let Err(e) = ipam.gc()
    {
        errors.push(BridgeError::Delegate(e));
    }
    BridgeError::collect(errors)
}

/// STATUS.
pub fn status(req: &Request) -> Result<(), BridgeError> {
    let conf = Config::from_request(req)?;
    // The whole configuration is validated before the delegate is asked.
    let backend = if conf.layer3 && conf.ip_masq {
        Some(conf.checked_backend()?)
    } else {
        None
    };
    if let Some(ipam) = Ipam::of(req) {
        ipam.status()?;
    }
    if let Some(backend) = backend {
        masq::usable(backend)?;
    }
    Ok(())
}
