//! CNI spec versions: the supported list, exact-match negotiation and the verb gates.

use crate::error::{CniError, Code};
use std::fmt;

/// The spec versions a plugin of this project speaks, oldest first.
pub const SUPPORTED: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The newest supported version: what VERSION reports and what errors carry when the config
/// could not be read.
pub const CURRENT: &str = "1.1.0";

/// One supported spec version. Ordered oldest to newest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// The result schema a version uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// 0.1.0 and 0.2.0: `ip4`/`ip6`.
    V02,
    /// 0.3.0, 0.3.1 and 0.4.0: `ips[]` with `version`.
    V04,
    /// 1.0.0 and 1.1.0: `ips[]` without `version`, keys sorted.
    V1,
}

impl Version {
    /// Every supported version, oldest first.
    pub const ALL: [Version; 7] = [
        Version::V0_1_0,
        Version::V0_2_0,
        Version::V0_3_0,
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];

    /// Exact-match lookup, as the reference negotiates (no semver ranges).
    pub fn parse(s: &str) -> Option<Version> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The version string.
    pub fn as_str(self) -> &'static str {
        SUPPORTED[self as usize]
    }

    /// The result schema family of this version.
    pub fn family(self) -> Family {
        match self {
            Version::V0_1_0 | Version::V0_2_0 => Family::V02,
            Version::V0_3_0 | Version::V0_3_1 | Version::V0_4_0 => Family::V04,
            Version::V1_0_0 | Version::V1_1_0 => Family::V1,
        }
    }

    /// The config version, exactly matched against [`SUPPORTED`]; code 1 otherwise.
    pub fn negotiate(config_version: &str) -> Result<Version, CniError> {
        Version::parse(config_version).ok_or_else(|| {
            let list: Vec<String> = SUPPORTED.iter().map(|v| format!("{v:?}")).collect();
            CniError::new(Code::IncompatibleVersion, "incompatible CNI versions").with_details(
                format!(
                    "config is {config_version:?}, plugin supports [{}]",
                    list.join(" ")
                ),
            )
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `major.minor.patch` triple, for the `>=` gates on CHECK, GC and STATUS, which apply to
/// any well-formed version string (even one this plugin does not support).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Semver(pub u64, pub u64, pub u64);

impl Semver {
    /// Parses `X.Y.Z` (missing parts are 0, as Go's semver parser in libcni allows `X.Y`).
    pub fn parse(s: &str) -> Result<Semver, CniError> {
        let bad = || {
            CniError::new(Code::DecodeFailure, format!("invalid version {s:?}"))
                .with_details("a CNI version is three dot-separated numbers, e.g. \"1.1.0\"")
        };
        let mut parts = s.split('.');
        let mut next = |required: bool| -> Result<u64, CniError> {
            match parts.next() {
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().map_err(|_| bad())
                }
                None if !required => Ok(0),
                _ => Err(bad()),
            }
        };
        let v = Semver(next(true)?, next(false)?, next(false)?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

/// The lowest config version at which a verb is allowed, and the message when it is not.
pub fn gate(verb: &str) -> Option<(Semver, &'static str)> {
    match verb {
        "CHECK" => Some((Semver(0, 4, 0), "config version does not allow CHECK")),
        "GC" => Some((Semver(1, 1, 0), "config version does not allow GC")),
        "STATUS" => Some((Semver(1, 1, 0), "config version does not allow STATUS")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_match_only() {
        assert_eq!(Version::parse("0.3.1"), Some(Version::V0_3_1));
        assert_eq!(Version::parse("1.1"), None);
        assert_eq!(Version::parse("1.1.0 "), None);
        let e = Version::negotiate("9.9.9").unwrap_err();
        assert_eq!(e.code, 1);
        assert_eq!(e.msg, "incompatible CNI versions");
        assert_eq!(
            e.details,
            r#"config is "9.9.9", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]"#
        );
    }

    #[test]
    fn families_and_order() {
        assert!(Version::V0_1_0 < Version::V1_1_0);
        assert_eq!(Version::V0_2_0.family(), Family::V02);
        assert_eq!(Version::V0_4_0.family(), Family::V04);
        assert_eq!(Version::V1_0_0.family(), Family::V1);
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()), Some(v));
        }
    }

    #[test]
    fn semver_parsing() {
        assert_eq!(Semver::parse("0.4.0").unwrap(), Semver(0, 4, 0));
        assert_eq!(Semver::parse("1.1").unwrap(), Semver(1, 1, 0));
        assert!(Semver::parse("1.x.0").is_err());
        assert!(Semver::parse("").is_err());
        assert!(Semver::parse("1.0.0.0").is_err());
        assert_eq!(Semver::parse("abc").unwrap_err().code, 6);
        assert!(Semver::parse("0.3.1").unwrap() < gate("CHECK").unwrap().0);
    }
}
