//! host-local's errors, and their one mapping to CNI error objects.
//!
//! Invalid configuration is code 7 with the reference's message and the field named in
//! `details`; errors of the protocol core (`CNI_ARGS`: 4, undecodable field types: 7) pass
//! through; a lock wait that timed out is 11; STATUS "not available" is 50; allocation
//! failures and failures of the system are 999, as in the reference.

use crate::allocator::AllocReason;
use crate::store::StoreError;
use cni::result::ip_string;
use cni::{CniError, Code};
use std::net::IpAddr;

/// Everything that can go wrong in host-local.
#[derive(Debug, thiserror::Error)]
pub enum HostLocalError {
    /// A semantically invalid configuration value (code 7); `field` is its path.
    #[error("{msg}")]
    Config { msg: String, field: String },
    /// An error of the protocol core, passed through with its code.
    #[error("{0}")]
    Protocol(CniError),
    /// A range set could not be served (code 999).
    #[error("failed to allocate for range {idx}: {reason}")]
    Allocate { idx: usize, reason: AllocReason },
    /// Requested addresses that no range set contains (code 999).
    #[error("failed to allocate all requested IPs: {}", .0.iter().map(|ip| ip_string(*ip)).collect::<Vec<_>>().join(" "))]
    Unfulfilled(Vec<IpAddr>),
    /// The state directory failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// CHECK: the attachment has no reservation (code 999, the reference's text).
    #[error("host-local: Failed to find address added by container {0}")]
    NotFound(String),
    /// CHECK: reservations and `prevResult` disagree (code 999).
    #[error("{0}")]
    Check(String),
    /// Any other failure of the system (code 999).
    #[error("{0}")]
    System(String),
    /// STATUS: ADD cannot be served now (code 50).
    #[error("{0}")]
    Unavailable(String),
    /// Several independent failures (DEL and GC keep going), joined with `;` as the reference
    /// joins DEL errors.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(";"))]
    Many(Vec<HostLocalError>),
}

impl HostLocalError {
    /// Folds a list of errors: none → `Ok`, one → itself, more → [`HostLocalError::Many`].
    pub fn collect(mut errors: Vec<HostLocalError>) -> Result<(), HostLocalError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(HostLocalError::Many(errors)),
        }
    }
}

impl From<HostLocalError> for CniError {
    fn from(e: HostLocalError) -> CniError {
        let msg = e.to_string();
        match e {
            HostLocalError::Config { field, .. } => {
                CniError::new(Code::InvalidConfig, msg).with_details(format!("field: {field}"))
            }
            HostLocalError::Protocol(c) => c,
            HostLocalError::Store(StoreError::LockTimeout { .. }) => {
                CniError::new(Code::TryAgainLater, msg)
            }
            HostLocalError::Store(StoreError::NotADirectory { .. }) => {
                CniError::new(Code::InvalidConfig, msg).with_details("field: ipam.dataDir")
            }
            HostLocalError::Store(StoreError::BadName(_)) => {
                CniError::new(Code::InvalidConfig, msg).with_details("field: name")
            }
            HostLocalError::Unavailable(_) => CniError::new(Code::NotAvailable, msg),
            HostLocalError::Allocate { .. }
            | HostLocalError::Unfulfilled(_)
            | HostLocalError::Store(_)
            | HostLocalError::NotFound(_)
            | HostLocalError::Check(_)
            | HostLocalError::System(_)
            | HostLocalError::Many(_) => CniError::internal(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn codes() {
        let c = CniError::from(HostLocalError::Config {
            msg: "no IP ranges specified".into(),
            field: "ipam.ranges".into(),
        });
        assert_eq!(
            (c.code, c.msg.as_str(), c.details.as_str()),
            (7, "no IP ranges specified", "field: ipam.ranges")
        );
        let c = CniError::from(HostLocalError::Store(StoreError::LockTimeout {
            path: PathBuf::from("/x/lock"),
            secs: 30,
        }));
        assert_eq!(c.code, 11);
        let c = CniError::from(HostLocalError::Store(StoreError::NotADirectory {
            data_dir: PathBuf::from("/x"),
            path: PathBuf::from("/x"),
        }));
        assert_eq!(c.code, 7);
        assert_eq!(
            CniError::from(HostLocalError::Unavailable("x".into())).code,
            50
        );
        let c = CniError::from(HostLocalError::Unfulfilled(vec![
            "10.0.0.1".parse().unwrap(),
            "::ffff:10.0.0.2".parse().unwrap(),
        ]));
        assert_eq!(
            (c.code, c.msg.as_str()),
            (
                999,
                "failed to allocate all requested IPs: 10.0.0.1 10.0.0.2"
            )
        );
        let c = CniError::from(HostLocalError::Protocol(CniError::new(
            Code::InvalidEnv,
            "CNI_ARGS: x",
        )));
        assert_eq!(c.code, 4);
        let many = HostLocalError::collect(vec![
            HostLocalError::System("a".into()),
            HostLocalError::System("b".into()),
        ])
        .unwrap_err();
        assert_eq!(CniError::from(many).msg, "a;b");
    }
}
