//! The CNI error object and its codes.
//!
//! Every library error of this project ends up here exactly once: each crate maps its own
//! `thiserror` enum to a [`CniError`] in one `From` impl, and [`crate::skel`] prints it.

use serde::Serialize;
use std::fmt;

/// The spec's well-known error codes (SPEC §6, plus libcni's 8 and 999).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 1: the config's `cniVersion` is not supported, or too old for the verb.
    IncompatibleVersion,
    /// 2: a field the plugin does not support.
    UnsupportedField,
    /// 3: the container is unknown.
    UnknownContainer,
    /// 4: an environment variable is missing or invalid (the message names it).
    InvalidEnv,
    /// 5: an I/O failure, e.g. reading stdin.
    Io,
    /// 6: stdin (or a version string) could not be decoded.
    DecodeFailure,
    /// 7: the network configuration is invalid (the message names the field).
    InvalidConfig,
    /// 8: `CNI_NETNS` is the plugin's own network namespace.
    InvalidNetns,
    /// 11: a bounded wait (a lock) timed out; the runtime may retry.
    TryAgainLater,
    /// 50: STATUS: the plugin cannot serve ADD now.
    NotAvailable,
    /// 51: STATUS: not available, and existing containers may be degraded.
    NotAvailableDegraded,
    /// 999: a failure of the system (netlink, firewall, files) or an internal error.
    Internal,
}

impl Code {
    /// The numeric code as printed.
    pub fn value(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnsupportedField => 2,
            Code::UnknownContainer => 3,
            Code::InvalidEnv => 4,
            Code::Io => 5,
            Code::DecodeFailure => 6,
            Code::InvalidConfig => 7,
            Code::InvalidNetns => 8,
            Code::TryAgainLater => 11,
            Code::NotAvailable => 50,
            Code::NotAvailableDegraded => 51,
            Code::Internal => 999,
        }
    }
}

/// A CNI error object: what a plugin prints on stdout when it fails.
///
/// The code is kept numeric so that an error from a delegated plugin passes through unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    /// An error with a code and message and no details.
    pub fn new(code: Code, msg: impl Into<String>) -> CniError {
        CniError {
            code: code.value(),
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Code 999: a failure of the system or an internal error.
    pub fn internal(msg: impl Into<String>) -> CniError {
        CniError::new(Code::Internal, msg)
    }

    /// Code 7: a semantically invalid configuration value; the message should name the field.
    pub fn invalid_config(msg: impl Into<String>) -> CniError {
        CniError::new(Code::InvalidConfig, msg)
    }

    /// Adds the `details` text.
    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// Prefixes the message with context, keeping code and details.
    pub fn context(mut self, what: impl fmt::Display) -> CniError {
        self.msg = format!("{what}: {}", self.msg);
        self
    }

    /// The JSON object printed on stdout: `cniVersion`, `code`, `msg`, `details` (if any),
    /// 4-space indented, no trailing newline, Go-style escaping.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        crate::json::to_go_pretty(&Wire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{} (code {})", self.msg, self.code)
        } else {
            write!(f, "{}; {} (code {})", self.msg, self.details, self.code)
        }
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let all = [
            (Code::IncompatibleVersion, 1),
            (Code::UnsupportedField, 2),
            (Code::UnknownContainer, 3),
            (Code::InvalidEnv, 4),
            (Code::Io, 5),
            (Code::DecodeFailure, 6),
            (Code::InvalidConfig, 7),
            (Code::InvalidNetns, 8),
            (Code::TryAgainLater, 11),
            (Code::NotAvailable, 50),
            (Code::NotAvailableDegraded, 51),
            (Code::Internal, 999),
        ];
        for (c, v) in all {
            assert_eq!(c.value(), v);
        }
    }

    #[test]
    fn json_shape() {
        let e = CniError::new(Code::Internal, "a <nil> & b");
        assert_eq!(
            e.to_json("1.0.0"),
            "{\n    \"cniVersion\": \"1.0.0\",\n    \"code\": 999,\n    \"msg\": \"a \\u003cnil\\u003e \\u0026 b\"\n}"
        );
        let e = CniError::new(Code::IncompatibleVersion, "x").with_details("y");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("0.4.0")).unwrap();
        assert_eq!(v["details"], "y");
        assert_eq!(v["code"], 1);
    }

    #[test]
    fn context_keeps_code() {
        let e = CniError::invalid_config("bad").context("ipam");
        assert_eq!(e.msg, "ipam: bad");
        assert_eq!(e.code, 7);
    }
}
