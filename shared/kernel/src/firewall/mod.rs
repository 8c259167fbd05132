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

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

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
/// legacy or nft iptables). Answers are remembered for the process (keyed by `PATH` too):
/// one ADD asks for the same tools several times (is it installed, which variant is it), and
/// each search is a `stat` per `PATH` directory.
pub fn find_in_path(bin: &str) -> Option<PathBuf> {
    type Seen = Vec<(std::ffi::OsString, String, Option<PathBuf>)>;
    static SEEN: std::sync::Mutex<Seen> = std::sync::Mutex::new(Vec::new());
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, _, found)) = seen.iter().find(|(p, b, _)| *p == path && b == bin) {
        return found.clone();
    }
    let found = std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file());
    seen.push((path, bin.to_string(), found.clone()));
    found
}

/// A started firewall tool whose outcome has not been collected yet.
pub struct Pending {
    child: std::process::Child,
    bin: String,
    cmd_text: String,
    input: Option<String>,
}

impl Pending {
    /// Waits for the tool and returns its stdout, or its failure.
    pub fn wait(self) -> Result<String, FirewallError> {
        let Pending {
            child,
            bin,
            cmd_text,
            input,
        } = self;
        let out = child
            .wait_with_output()
            .map_err(|source| FirewallError::Spawn {
                bin: bin.clone(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if !out.status.success() {
            if stderr.contains("xtables lock") {
                return Err(FirewallError::Locked { cmd: cmd_text });
            }
            return Err(FirewallError::Failed {
                cmd: match input {
                    Some(input) => format!("{cmd_text} <<EOF\n{input}EOF"),
                    None => cmd_text,
                },
                status: out.status.to_string(),
                stderr,
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

pub(crate) fn spawn_tool(
    bin: &str,
    args: &[&str],
    stdin: Option<String>,
) -> Result<Pending, FirewallError> {
    let path = find_in_path(bin).ok_or_else(|| FirewallError::NotFound {
        bin: bin.to_string(),
    })?;
    let cmd_text = format!("{bin} {}", args.join(" "));
    let mut child = Command::new(path)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| FirewallError::Spawn {
            bin: bin.to_string(),
            source,
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin.as_deref(), child.stdin.take()) {
        // The input is small (a pipe buffer holds 64 KiB); a tool that exits without
        // reading it fails, and its status says why.
        let _ = pipe.write_all(input.as_bytes());
    }
    Ok(Pending {
        child,
        bin: bin.to_string(),
        cmd_text,
        input: stdin,
    })
}

/// Runs a tool to completion: its stdout, or its failure.
pub(crate) fn run_tool(
    bin: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, FirewallError> {
    spawn_tool(bin, args, stdin.map(str::to_string))?.wait()
}
