//! The bridge plugin's errors, and their one mapping to CNI error objects.
//!
//! Invalid configuration is code 7 with a message naming the field; failures of the system
//! (netlink, namespaces, firewall tools) are code 999; a lock wait that timed out is code 11;
//! STATUS "not available" is code 50; errors of the delegated IPAM plugin pass through
//! unchanged.

use cni::{CniError, Code};
use cni_kernel::firewall::FirewallError;
use cni_kernel::{NetlinkError, NsError};

/// Everything that can go wrong in the bridge plugin.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The configuration is invalid; the message names the field (code 7).
    #[error("{0}")]
    Config(String),
    /// A netlink operation failed.
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: NetlinkError,
    },
    /// Opening or entering a namespace failed.
    #[error("{what}: {source}")]
    Netns {
        what: String,
        #[source]
        source: NsError,
    },
    /// A firewall tool failed.
    #[error("{what}: {source}")]
    Firewall {
        what: String,
        #[source]
        source: FirewallError,
    },
    /// Any other failure of the system (code 999).
    #[error("{0}")]
    System(String),
    /// STATUS: the plugin cannot serve ADD now (code 50).
    #[error("{0}")]
    Unavailable(String),
    /// An error of the delegated IPAM plugin, passed through unchanged.
    #[error("{0}")]
    Delegate(CniError),
    /// Several independent failures (DEL and GC keep going and report all of them).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<BridgeError>),
}

impl BridgeError {
    /// A netlink error with context.
    pub fn netlink(what: impl Into<String>, source: NetlinkError) -> BridgeError {
        BridgeError::Netlink {
            what: what.into(),
            source,
        }
    }

    /// A firewall error with context.
    pub fn firewall(what: impl Into<String>, source: FirewallError) -> BridgeError {
        BridgeError::Firewall {
            what: what.into(),
            source,
        }
    }

    /// A namespace error with context.
    pub fn netns(what: impl Into<String>, source: NsError) -> BridgeError {
        BridgeError::Netns {
            what: what.into(),
            source,
        }
    }

    /// Folds a list of errors: none → `Ok`, one → itself, more → [`BridgeError::Many`].
    pub fn collect(mut errors: Vec<BridgeError>) -> Result<(), BridgeError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(BridgeError::Many(errors)),
        }
    }

    fn code(&self) -> u32 {
        match self {
            BridgeError::Config(_) => Code::InvalidConfig.value(),
            BridgeError::Unavailable(_) => Code::NotAvailable.value(),
            BridgeError::Delegate(e) => e.code,
            // CNI_NETNS names no network namespace: a bad environment variable.
            BridgeError::Netns {
                source: NsError::NotFound { .. } | NsError::NotNetns { .. },
                ..
            } => Code::InvalidEnv.value(),
            BridgeError::Firewall {
                source: FirewallError::Locked { .. },
                ..
            } => Code::TryAgainLater.value(),
            BridgeError::Many(list) => {
                // A single kind of failure keeps its code; a mix is a failure of the system.
                let first = list.first().map(BridgeError::code);
                if list.iter().all(|e| Some(e.code()) == first) {
                    first.unwrap_or(Code::Internal.value())
                } else {
                    Code::Internal.value()
                }
            }
            BridgeError::Netlink { .. }
            | BridgeError::Netns { .. }
            | BridgeError::Firewall { .. }
            | BridgeError::System(_) => Code::Internal.value(),
        }
    }
}

impl From<CniError> for BridgeError {
    fn from(e: CniError) -> BridgeError {
        BridgeError::Delegate(e)
    }
}

impl From<BridgeError> for CniError {
    fn from(e: BridgeError) -> CniError {
        match e {
            BridgeError::Delegate(inner) => inner,
            other => CniError {
                code: other.code(),
                msg: other.to_string(),
                details: String::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let c: CniError = BridgeError::Config("vlan: bad".into()).into();
        assert_eq!((c.code, c.msg.as_str()), (7, "vlan: bad"));
        let c: CniError = BridgeError::System("x".into()).into();
        assert_eq!(c.code, 999);
        let c: CniError = BridgeError::Unavailable("no".into()).into();
        assert_eq!(c.code, 50);
        let inner = CniError::new(Code::TryAgainLater, "busy").with_details("d");
        let c: CniError = BridgeError::Delegate(inner.clone()).into();
        assert_eq!(c, inner);
        let c: CniError = BridgeError::Firewall {
            what: "w".into(),
            source: FirewallError::Locked { cmd: "x".into() },
        }
        .into();
        assert_eq!(c.code, 11);
        let c: CniError = BridgeError::Many(vec![
            BridgeError::System("a".into()),
            BridgeError::Config("b".into()),
        ])
        .into();
        assert_eq!((c.code, c.msg.as_str()), (999, "a; b"));
        assert!(BridgeError::collect(vec![]).is_ok());
    }
}
