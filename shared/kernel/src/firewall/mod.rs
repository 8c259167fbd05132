//! Netfilter: the reference's chain names and comments ([`names`]), an argv-exact
//! `iptables`/`ip6tables` runner with batched `iptables-restore --noflush` transactions
//! ([`iptables`]), `nft -f -` transactions ([`nft`]), and `iptables-nft` rules encoded for
//! direct nf_tables transactions ([`xt`]).
//!
//! Rules are passed as argv vectors, never as strings split on spaces, so that the
//! reference's quoted comments survive byte for byte.

pub mod iptables;
pub mod names;
pub mod nft;
pub mod xt;

use std::path::PathBuf;

/// An address family for firewall purposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The nf_tables family `iptables-nft`/`ip6tables-nft` keep their tables in.
    pub fn nf_family(self) -> crate::nftables::NfFamily {
        match self {
            Family::V4 => crate::nftables::NfFamily::Ipv4,
            Family::V6 => crate::nftables::NfFamily::Ipv6,
        }
    }

    /// The family of an address.
    pub fn of(ip: &std::net::IpAddr) -> Family {
        if ip.to_canonical().is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// A firewall command failed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("{bin} was not found in PATH")]
    NotFound { bin: String },
    #[error("failed to run {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("{cmd}: timed out waiting for the xtables lock")]
    Locked { cmd: String },
    #[error("{cmd}: unexpected output: {what}")]
    Output { cmd: String, what: String },
}

/// Finds `bin` in `PATH` (as the reference does; the host's alternatives choose
/// legacy or nft iptables).
pub fn find_in_path(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}
