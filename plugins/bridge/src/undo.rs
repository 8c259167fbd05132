//! The ADD undo stack: each effect pushes its inverse right away (before the effect when the
//! effect may half-succeed); on any failure, or a panic, the steps run in reverse order so
//! the node is left as it was before the ADD. The CNM network (bridge, gateway address,
//! forwarding) is shared by every endpoint and is not undone, except a bridge this very ADD
//! created, which is deleted again if no port is left on it.

use crate::masq::{self, Instance};
use crate::spoofcheck;
use cni::invoke::Ipam;
use cni::skel::Request;
use cni_kernel::Netlink;
use cni_kernel::netlink::LinkKind;
use ipnet::IpNet;

/// One inverse action.
#[derive(Debug)]
pub enum Step {
    /// Delete the host veth (its container end goes with it, with its addresses and routes).
    DeleteVeth { name: String },
    /// Release the IPAM reservation (IPAM DEL).
    IpamDel,
    /// Remove the attachment's masquerade rules for these addresses.
    Masquerade { addrs: Vec<IpNet> },
    /// Remove the attachment's macspoofchk rules.
    SpoofCheck { refid: String },
    /// Delete the bridge this ADD created, if no port is left on it.
    DeleteBridge { name: String },
}

/// The undo stack of one ADD; runs on drop unless disarmed.
pub struct Undo<'a> {
    req: &'a Request,
    steps: Vec<Step>,
    armed: bool,
}

impl<'a> Undo<'a> {
    /// An empty, armed stack.
    pub fn new(req: &'a Request) -> Undo<'a> {
        Undo {
            req,
            steps: Vec::new(),
            armed: true,
        }
    }

    /// Records an inverse action.
    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// The ADD succeeded: keep everything.
    pub fn disarm(mut self) {
        self.armed = false;
    }

    fn run(&mut self) {
        while let Some(step) = self.steps.pop() {
            if let Err(e) = self.run_one(&step) {
                eprintln!("bridge: rollback of {step:?} failed: {e}");
            }
        }
    }

    fn run_one(&self, step: &Step) -> Result<(), String> {
        match step {
            Step::DeleteVeth { name } => {
                let mut nl = Netlink::current().map_err(|e| e.to_string())?;
                if let Some(l) = nl.link_by_name(name).map_err(|e| e.to_string())?
                    && l.kind == LinkKind::Veth
                {
                    match nl.delete_link(l.index) {
                        Ok(()) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok(())
            }
            Step::IpamDel => match Ipam::of(self.req) {
                Some(ipam) => ipam.del().map_err(|e| e.to_string()),
                None => Ok(()),
            },
            Step::Masquerade { addrs } => masq::teardown(
                Instance {
                    net: &self.req.conf.name,
                    ifname: &self.req.env.ifname,
                    container_id: &self.req.env.container_id,
                },
                Some(addrs),
            )
            .map_err(|e| e.to_string()),
            Step::SpoofCheck { refid } => spoofcheck::teardown(refid).map_err(|e| e.to_string()),
            Step::DeleteBridge { name } => {
                let mut nl = Netlink::current().map_err(|e| e.to_string())?;
                crate::network::delete_bridge_if_unused(&mut nl, name).map_err(|e| e.to_string())
            }
        }
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.run();
        }
    }
}
