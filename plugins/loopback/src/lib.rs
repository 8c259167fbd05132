//! The `loopback` CNI plugin: brings `lo` up in the sandbox on ADD and answers with the
//! reference's result shape (`lo` with MAC `00:00:00:00:00:00` in the sandbox, its IPv4 and
//! IPv6 loopback addresses with `interface: 0`); a `prevResult` is passed through unchanged.
//! DEL sets `lo` down, best effort (a missing sandbox is success). CHECK verifies `lo` is up.
//!
//! containerd's CRI invokes it for every pod (`CNI_IFNAME=lo`), so a `/opt/cni/bin` replaced
//! as a whole must carry it.

use cni::skel::{Plugin, Request};
use cni::{CniError, CniResult, Interface, IpConfig};
use cni_kernel::netlink::Link;
use cni_kernel::{NetNs, Netlink, NetlinkError, NsError};
use ipnet::IpNet;

/// The loopback plugin's errors.
#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    /// The sandbox could not be opened.
    #[error("failed to open netns {path:?}: {source}")]
    Netns { path: String, source: NsError },
    /// A netlink operation failed.
    #[error("{what}: {source}")]
    Netlink { what: String, source: NetlinkError },
    /// `lo` is missing or wrong.
    #[error("{0}")]
    Invalid(String),
    /// `prevResult` could not be parsed.
    #[error(transparent)]
    Cni(CniError),
}

impl From<LoopbackError> for CniError {
    fn from(e: LoopbackError) -> CniError {
        match e {
            LoopbackError::Cni(c) => c,
            // CNI_NETNS names no network namespace: a bad environment variable.
            LoopbackError::Netns {
                source: NsError::NotFound { .. } | NsError::NotNetns { .. },
                ..
            } => CniError::new(cni::Code::InvalidEnv, format!("CNI_NETNS: {e}")),
            other => CniError::internal(other.to_string()),
        }
    }
}

fn open(path: &str) -> Result<Netlink, LoopbackError> {
    // One entry proves the namespace's type and opens the socket (see NetNs::open_running).
    let (_ns, nl) =
        NetNs::open_running(path, Netlink::current).map_err(|source| LoopbackError::Netns {
            path: path.to_string(),
            source,
        })?;
    nl.map_err(|source| LoopbackError::Netlink {
        what: "failed to open netlink in the sandbox".into(),
        source,
    })
}

fn lo(nl: &mut Netlink) -> Result<Link, LoopbackError> {
    nl.link_by_name("lo")
        .map_err(|source| LoopbackError::Netlink {
            what: "failed to lookup lo".into(),
            source,
        })?
        .ok_or_else(|| LoopbackError::Invalid("Link not found: lo".into()))
}

/// ADD.
pub fn add(req: &Request) -> Result<CniResult, LoopbackError> {
    let prev = req.prev_result().map_err(LoopbackError::Cni)?;
    let mut nl = open(&req.env.netns)?;
    let link = lo(&mut nl)?;
    nl.set_up(link.index, true)
        .map_err(|source| LoopbackError::Netlink {
            what: "failed to set lo up".into(),
            source,
        })?;
    let addrs = nl
        .addresses(Some(link.index))
        .map_err(|source| LoopbackError::Netlink {
            what: "failed to list the addresses of lo".into(),
            source,
        })?;
    let mut first: [Option<IpNet>; 2] = [None, None];
    for a in &addrs {
        if !a.addr.addr().is_loopback() {
            return Err(LoopbackError::Invalid(format!(
                "loopback interface found with non-loopback address {:?}",
                a.addr.addr().to_string()
            )));
        }
        let slot = usize::from(a.addr.addr().is_ipv6());
        if first[slot].is_none() {
            first[slot] = Some(a.addr);
        }
    }
    if let Some(p) = prev {
        return Ok(p);
    }
    Ok(CniResult {
        interfaces: vec![Interface {
            name: "lo".into(),
            mac: "00:00:00:00:00:00".into(),
            sandbox: req.env.netns.clone(),
            ..Interface::default()
        }],
        ips: first
            .into_iter()
            .flatten()
            .map(|address| IpConfig {
                address,
                gateway: None,
                interface: Some(0),
            })
            .collect(),
        ..CniResult::default()
    })
}

/// DEL: best effort. No sandbox, or a vanished one, is success; `lo` is set down.
pub fn del(req: &Request) -> Result<(), LoopbackError> {
    if req.env.netns.is_empty() {
        return Ok(());
    }
    let mut nl = match open(&req.env.netns) {
        Ok(nl) => nl,
        Err(LoopbackError::Netns {
            source: NsError::NotFound { .. } | NsError::NotNetns { .. },
            ..
        }) => return Ok(()),
        Err(e) => return Err(e),
    };
    match nl.link_by_name("lo") {
        Ok(Some(l)) => {
            if let Err(e) = nl.set_up(l.index, false) {
                eprintln!("loopback: DEL: failed to set lo down: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => eprintln!("loopback: DEL: failed to lookup lo: {e}"),
    }
    Ok(())
}

/// CHECK: `lo` exists and is up.
pub fn check(req: &Request) -> Result<(), LoopbackError> {
    let mut nl = open(&req.env.netns)?;
    if !lo(&mut nl)?.is_up() {
        return Err(LoopbackError::Invalid("loopback interface is down".into()));
    }
    Ok(())
}

/// The `loopback` plugin.
pub struct Loopback;

impl Plugin for Loopback {
    fn name(&self) -> &'static str {
        "loopback"
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
}
