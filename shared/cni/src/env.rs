//! The `CNI_*` environment: which variables each verb needs, and their validation, in the
//! reference skel's order and with its messages (`cni-contract.md` §1).

use crate::error::{CniError, Code};

/// A CNI verb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
    /// Anything else; rejected (code 4) after the config has been validated, as in the reference.
    Unknown(String),
}

impl Command {
    /// Parses `CNI_COMMAND` (case-sensitive, as the reference).
    pub fn parse(s: &str) -> Command {
        match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => Command::Unknown(other.to_string()),
        }
    }

    /// The verb as spelled in `CNI_COMMAND`.
    pub fn as_str(&self) -> &str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Unknown(s) => s,
        }
    }
}

/// The validated environment of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// Empty on a DEL after the sandbox is gone (ctr, CRI), and on GC/STATUS.
    pub netns: String,
    pub ifname: String,
    /// Raw `CNI_ARGS`; each plugin parses the keys it knows ([`crate::args`]).
    pub args: String,
    /// `CNI_PATH` split on `:`, empty entries dropped.
    pub path: Vec<String>,
    /// `CNI_NETNS_OVERRIDE` set to `1`/`true`: skip the "netns is my own" check.
    pub netns_override: bool,
}

const CONTAINER_ID: &str = "CNI_CONTAINERID";
const NETNS: &str = "CNI_NETNS";
const IFNAME: &str = "CNI_IFNAME";
const PATH: &str = "CNI_PATH";

/// Whether `var` is required for `cmd` (libcni v1.3.0's table).
fn required(var: &str, cmd: &Command) -> bool {
    use Command::*;
    match var {
        CONTAINER_ID | IFNAME => matches!(cmd, Add | Check | Del),
        NETNS => matches!(cmd, Add | Check),
        PATH => matches!(cmd, Add | Check | Del | Gc | Status),
        _ => false,
    }
}

/// The container ID / network name pattern `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn valid_id(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Validates a container ID (code 4, details = the ID).
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(CniError::new(Code::InvalidEnv, "invalid characters in containerID").with_details(id))
    }
}

/// Validates an interface name as the kernel and the reference require (code 4).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let err = |m: &str| CniError::new(Code::InvalidEnv, m);
    if name.is_empty() {
        return Err(err("interface name is empty"));
    }
    if name.len() > 15 {
        return Err(err("interface name is too long")
            .with_details("interface name should be less than 16 characters"));
    }
    if name == "." || name == ".." {
        return Err(err("interface name is . or .."));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(err(
            "interface name contains / or : or whitespace characters",
        ));
    }
    Ok(())
}

impl Env {
    /// Reads and validates the environment through `get`. An empty `CNI_COMMAND` must be
    /// handled by the caller first (the "about" text).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let var = |k: &str| get(k).unwrap_or_default();
        let command_raw = var("CNI_COMMAND");
        let command = Command::parse(&command_raw);
        let mut missing: Vec<&str> = Vec::new();
        if command_raw.is_empty() {
            missing.push("CNI_COMMAND");
        }
        let container_id = var(CONTAINER_ID);
        let netns = var(NETNS);
        let ifname = var(IFNAME);
        let args = var("CNI_ARGS");
        let path_raw = var(PATH);
        for (name, value) in [
            (CONTAINER_ID, &container_id),
            (NETNS, &netns),
            (IFNAME, &ifname),
            (PATH, &path_raw),
        ] {
            if !required(name, &command) {
                continue;
            }
            if value.is_empty() {
                missing.push(name);
                continue;
            }
            match name {
                CONTAINER_ID => validate_container_id(value)?,
                IFNAME => validate_ifname(value)?,
                _ => {}
            }
        }
        if !missing.is_empty() {
            return Err(CniError::new(
                Code::InvalidEnv,
                format!("required env variables [{}] missing", missing.join(",")),
            ));
        }
        let over = var("CNI_NETNS_OVERRIDE");
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
            path: path_raw
                .split(':')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
            netns_override: over == "1" || over.eq_ignore_ascii_case("true"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| m.get(k).cloned())
    }

    const FULL: [(&str, &str); 6] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
        ("CNI_ARGS", "IgnoreUnknown=1"),
    ];

    fn with(cmd: &str, drop: &[&str], set: &[(&str, &str)]) -> Result<Env, CniError> {
        let mut v: Vec<(&str, &str)> = FULL
            .iter()
            .copied()
            .filter(|(k, _)| !drop.contains(k))
            .collect();
        v.retain(|(k, _)| *k != "CNI_COMMAND" && !set.iter().any(|(s, _)| s == k));
        v.push(("CNI_COMMAND", cmd));
        v.extend_from_slice(set);
        env(&v)
    }

    #[test]
    fn full_add() {
        let e = with("ADD", &[], &[]).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.path, vec!["/opt/cni/bin", "/usr/lib/cni"]);
        assert!(!e.netns_override);
    }

    #[test]
    fn missing_list_in_walk_order() {
        let e = env(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(e.code, 4);
        assert_eq!(
            e.msg,
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"
        );
        let e = env(&[]).unwrap_err();
        assert_eq!(e.msg, "required env variables [CNI_COMMAND] missing");
    }

    #[test]
    fn per_verb_requirements() {
        // DEL: netns optional.
        assert!(with("DEL", &["CNI_NETNS"], &[]).is_ok());
        // CHECK: netns required.
        assert_eq!(
            with("CHECK", &["CNI_NETNS"], &[]).unwrap_err().msg,
            "required env variables [CNI_NETNS] missing"
        );
        // GC / STATUS: only CNI_PATH.
        assert!(env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")]).is_ok());
        assert_eq!(
            env(&[("CNI_COMMAND", "GC")]).unwrap_err().msg,
            "required env variables [CNI_PATH] missing"
        );
        // VERSION: nothing but the command; podman's dummy values are fine.
        assert!(env(&[("CNI_COMMAND", "VERSION"), ("CNI_CONTAINERID", "")]).is_ok());
        // Unknown: nothing required here (rejected later by skel).
        assert_eq!(
            env(&[("CNI_COMMAND", "FOO")]).unwrap().command,
            Command::Unknown("FOO".into())
        );
        // GC does not validate a bad container ID it does not need.
        assert!(
            env(&[
                ("CNI_COMMAND", "GC"),
                ("CNI_PATH", "/x"),
                ("CNI_CONTAINERID", "$$")
            ])
            .is_ok()
        );
    }

    #[test]
    fn container_id_rules() {
        for bad in ["-abc", "_a", "a b", "a;rm -rf", "a\"b", "a/b", "ä"] {
            let e = with("ADD", &[], &[("CNI_CONTAINERID", bad)]).unwrap_err();
            assert_eq!(e.code, 4, "{bad}");
            assert_eq!(e.msg, "invalid characters in containerID");
            assert_eq!(e.details, bad);
        }
        for good in ["a", "A.b-c_d", "cnitool-772a163eacf1da86894c", "0"] {
            assert!(
                with("ADD", &[], &[("CNI_CONTAINERID", good)]).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn ifname_rules() {
        let cases = [
            ("abcdefghijklmnop", "interface name is too long"),
            (".", "interface name is . or .."),
            ("..", "interface name is . or .."),
            (
                "a/b",
                "interface name contains / or : or whitespace characters",
            ),
            (
                "a:b",
                "interface name contains / or : or whitespace characters",
            ),
            (
                "a b",
                "interface name contains / or : or whitespace characters",
            ),
            (
                "a\tb",
                "interface name contains / or : or whitespace characters",
            ),
        ];
        for (name, msg) in cases {
            let e = with("ADD", &[], &[("CNI_IFNAME", name)]).unwrap_err();
            assert_eq!(e.code, 4);
            assert_eq!(e.msg, msg, "{name}");
        }
        let e = validate_ifname("abcdefghijklmnop").unwrap_err();
        assert_eq!(
            e.details,
            "interface name should be less than 16 characters"
        );
        assert_eq!(
            validate_ifname("").unwrap_err().msg,
            "interface name is empty"
        );
        // 15 bytes is the limit, counted in bytes.
        assert!(validate_ifname("abcdefghijklmno").is_ok());
        assert!(validate_ifname("ééééééééé").is_err());
    }

    #[test]
    fn first_invalid_value_wins_over_missing() {
        // Container ID is walked before ifname and path.
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "$")]).unwrap_err();
        assert_eq!(e.msg, "invalid characters in containerID");
    }

    #[test]
    fn netns_override() {
        assert!(
            with("ADD", &[], &[("CNI_NETNS_OVERRIDE", "TRUE")])
                .unwrap()
                .netns_override
        );
        assert!(
            with("ADD", &[], &[("CNI_NETNS_OVERRIDE", "1")])
                .unwrap()
                .netns_override
        );
        assert!(
            !with("ADD", &[], &[("CNI_NETNS_OVERRIDE", "yes")])
                .unwrap()
                .netns_override
        );
    }
}
