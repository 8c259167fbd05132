//! The `bridge` CNI plugin.

use cni::skel::{Plugin, Request};
use cni::{CniError, CniResult};

/// The `bridge` plugin.
pub struct Bridge;

impl Plugin for Bridge {
    fn name(&self) -> &'static str {
        "bridge"
    }
    fn add(&self, _req: &Request) -> Result<CniResult, CniError> {
        Err(CniError::internal("ADD is not implemented yet"))
    }
    fn del(&self, _req: &Request) -> Result<(), CniError> {
        Err(CniError::internal("DEL is not implemented yet"))
    }
    fn check(&self, _req: &Request) -> Result<(), CniError> {
        Err(CniError::internal("CHECK is not implemented yet"))
    }
}
