//! portmap's errors, mapped to CNI error objects in exactly one place ([`From`] below).

use cni::{CniError, Code};
use cni_kernel::firewall::FirewallError;

/// Everything that can go wrong in portmap.
#[derive(Debug, thiserror::Error)]
pub enum PortmapError {
    /// The configuration is invalid (code 7; the message names the field).
    #[error("{0}")]
    Config(String),
    /// ADD without `prevResult`.
    #[error("must be called as chained plugin")]
    NotChained,
    /// CHECK without `prevResult`.
    #[error("Required prevResult missing")]
    PrevResultMissing,
    /// An error from the protocol layer (e.g. an unparsable `prevResult`), passed through.
    #[error("{0}")]
    Cni(CniError),
    /// A firewall command failed (code 999; code 11 when the xtables lock wait timed out).
    #[error("{what}: {source}")]
    Firewall {
        what: String,
        #[source]
        source: FirewallError,
    },
    /// CHECK found missing or different state.
    #[error("{0}")]
    Check(String),
    /// Setting `route_localnet` failed.
    #[error("unable to enable route_localnet: {0}")]
    Localnet(String),
    /// STATUS: the selected backend cannot be used (code 50).
    #[error("{0}")]
    Unavailable(String),
    /// GC could not remove everything it should have.
    #[error("GC failed: {}", .0.join("; "))]
    Gc(Vec<String>),
}

impl PortmapError {
    /// A firewall error with context.
    pub fn firewall(what: impl Into<String>, source: FirewallError) -> PortmapError {
        PortmapError::Firewall {
            what: what.into(),
            source,
        }
    }
}

impl From<CniError> for PortmapError {
    fn from(e: CniError) -> PortmapError {
        PortmapError::Cni(e)
    }
}

impl From<PortmapError> for CniError {
    fn from(e: PortmapError) -> CniError {
        match e {
            PortmapError::Config(m) => CniError::new(Code::InvalidConfig, m),
            PortmapError::Cni(e) => e,
            PortmapError::Firewall {
                source: FirewallError::Locked { .. },
                ..
            } => CniError::new(Code::TryAgainLater, e.to_string()),
            PortmapError::Unavailable(m) => CniError::new(Code::NotAvailable, m),
            other => CniError::new(Code::Internal, other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let c: CniError = PortmapError::Config("x: bad".into()).into();
        assert_eq!((c.code, c.msg.as_str()), (7, "x: bad"));
        let c: CniError = PortmapError::firewall(
            "iptables",
            FirewallError::Locked {
                cmd: "iptables-restore".into(),
            },
        )
        .into();
        assert_eq!(c.code, 11);
        assert!(c.msg.contains("xtables lock"), "{}", c.msg);
        let c: CniError = PortmapError::Unavailable("nope".into()).into();
        assert_eq!(c.code, 50);
        let c: CniError = PortmapError::NotChained.into();
        assert_eq!(
            (c.code, c.msg.as_str()),
            (999, "must be called as chained plugin")
        );
        let c: CniError = PortmapError::Cni(CniError::new(Code::DecodeFailure, "d")).into();
        assert_eq!(c.code, 6);
    }
}
