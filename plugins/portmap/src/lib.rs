//! The `portmap` CNI plugin.

use cni::skel::{Plugin, Request};
use cni::{CniError, CniResult};

/// The `portmap` plugin.
pub struct Portmap;

impl Plugin for Portmap {
    fn name(&self) -> &'static str {
        "portmap"
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
