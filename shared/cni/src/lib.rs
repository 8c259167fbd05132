//! The CNI protocol core shared by `bridge`, `host-local`, `portmap` and `loopback`.
//!
//! Everything here is pure: it reads the environment and stdin through the [`skel::Io`] seam,
//! never touches the kernel, and is unit-tested without root. The contract it implements is the
//! reference plugins' (`containernetworking/plugins` v1.9.1, libcni v1.3.0) as written down in the
//! team's `cni-contract.md`.

pub mod args;
pub mod config;
pub mod elf;
pub mod env;
pub mod error;
pub mod gc;
pub mod invoke;
pub mod json;
pub mod result;
pub mod skel;
pub mod version;

pub use error::{CniError, Code};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::Version;
