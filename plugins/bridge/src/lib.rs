//! The `bridge` CNI plugin: a drop-in replacement for the reference plugin
//! (`containernetworking/plugins` v1.9.1), in the words of Docker's Container Network Model:
//!
//! * the **network** is a Linux bridge with the gateway address ([`network`]);
//! * the **endpoint** is a veth pair, host end `veth<8 hex>` on the bridge, container end
//!   `CNI_IFNAME` born inside the sandbox ([`endpoint`]);
//! * the **sandbox** is the container's network namespace, configured by [`sandbox`].
//!
//! ADD ([`add`]) undoes everything it did if a step fails ([`undo`]); DEL ([`del`]) removes
//! everything keyed by the attachment even without netns, interface or `prevResult`; CHECK
//! ([`check`]) verifies every resource; GC and STATUS ([`gc`]) are real. Masquerading
//! ([`masq`], iptables or nftables) and [`spoofcheck`] rules are byte-compatible with the
//! reference's, and each ADD/DEL costs one firewall transaction.

pub mod add;
pub mod check;
pub mod config;
pub mod del;
pub mod endpoint;
pub mod error;
pub mod gc;
pub mod masq;
pub mod network;
pub mod sandbox;
pub mod spoofcheck;
pub mod undo;

use cni::skel::{Plugin, Request};
use cni::{CniError, CniResult};

/// The `bridge` plugin.
pub struct Bridge;

impl Plugin for Bridge {
    fn name(&self) -> &'static str {
        "bridge"
    }
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        add::add(req).map_err(CniError::from)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        del::del(req).map_err(CniError::from)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        check::check(req).map_err(CniError::from)
    }
    fn status(&self, req: &Request) -> Result<(), CniError> {
        gc::status(req).map_err(CniError::from)
    }
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        gc::gc(req).map_err(CniError::from)
    }
}
