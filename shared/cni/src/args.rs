//! `CNI_ARGS` (`K=V;K2=V2`) with the reference's exact rules: case-sensitive keys,
//! `IgnoreUnknown`, strict pair syntax, last duplicate wins (`cni-contract.md` §4).
//!
//! Errors are code 4 (an invalid environment variable); the message keeps the reference's
//! text after a `CNI_` prefix so that it names the variable.

use crate::error::{CniError, Code};

/// The known keys found in `CNI_ARGS`, in input order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub ignore_unknown: bool,
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// The value of a known key (the last one given).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parses `raw`. `known` are the keys this plugin reads besides `IgnoreUnknown`;
    /// `validate(key, value)` checks a known key's value as soon as it is seen.
    pub fn parse(
        raw: &str,
        known: &[&str],
        validate: impl Fn(&str, &str) -> Result<(), String>,
    ) -> Result<CniArgs, CniError> {
        let err = |m: String| CniError::new(Code::InvalidEnv, format!("CNI_ARGS: {m}"));
        let mut out = CniArgs::default();
        let mut unknown: Vec<&str> = Vec::new();
        if raw.is_empty() {
            return Ok(out);
        }
        for pair in raw.split(';') {
            let kv: Vec<&str> = pair.split('=').collect();
            if kv.len() != 2 {
                return Err(err(format!("invalid pair {pair:?}")));
            }
            let (key, value) = (kv[0], kv[1]);
            if key == "IgnoreUnknown" {
                out.ignore_unknown = match value.to_ascii_lowercase().as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => {
                        return Err(err(format!(
                            "error parsing value of pair {pair:?}: boolean unmarshal error: invalid input {value}"
                        )));
                    }
                };
            } else if known.contains(&key) {
                validate(key, value)
                    .map_err(|e| err(format!("error parsing value of pair {pair:?}: {e}")))?;
                out.pairs.push((key.to_string(), value.to_string()));
            } else {
                unknown.push(pair);
            }
        }
        if !unknown.is_empty() && !out.ignore_unknown {
            let list: Vec<String> = unknown.iter().map(|p| format!("{p:?}")).collect();
            return Err(err(format!("unknown args [{}]", list.join(" "))));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip_ok(k: &str, v: &str) -> Result<(), String> {
        if k == "IP"
            && !v.is_empty()
            && v.split('/')
                .next()
                .unwrap_or("")
                .parse::<std::net::IpAddr>()
                .is_err()
        {
            return Err(format!("invalid IP address {v}"));
        }
        Ok(())
    }

    fn parse(s: &str) -> Result<CniArgs, CniError> {
        CniArgs::parse(s, &["IP"], ip_ok)
    }

    #[test]
    fn reference_table() {
        assert_eq!(parse("").unwrap(), CniArgs::default());
        let e = parse("K8S_POD_NAME=x").unwrap_err();
        assert_eq!(e.code, 4);
        assert_eq!(e.msg, r#"CNI_ARGS: unknown args ["K8S_POD_NAME=x"]"#);
        // lowercase ip is an unknown key, ignored.
        let a = parse("IgnoreUnknown=1;ip=10.1.0.50").unwrap();
        assert_eq!(a.get("IP"), None);
        let a = parse("IgnoreUnknown=1;IP=10.1.0.50").unwrap();
        assert_eq!(a.get("IP"), Some("10.1.0.50"));
        assert_eq!(
            parse("IgnoreUnknown=1;FOO=a=b").unwrap_err().msg,
            r#"CNI_ARGS: invalid pair "FOO=a=b""#
        );
        assert_eq!(
            parse("IgnoreUnknown=1;").unwrap_err().msg,
            r#"CNI_ARGS: invalid pair """#
        );
        assert_eq!(
            parse("IgnoreUnknown=yes;X=1").unwrap_err().msg,
            r#"CNI_ARGS: error parsing value of pair "IgnoreUnknown=yes": boolean unmarshal error: invalid input yes"#
        );
        assert_eq!(
            parse("ignoreunknown=1;X=1").unwrap_err().msg,
            r#"CNI_ARGS: unknown args ["ignoreunknown=1" "X=1"]"#
        );
        assert_eq!(
            parse("IP=abc").unwrap_err().msg,
            r#"CNI_ARGS: error parsing value of pair "IP=abc": invalid IP address abc"#
        );
        assert!(parse("KEY").is_err());
    }

    #[test]
    fn last_duplicate_wins_and_bool_forms() {
        let a = parse("IP=10.0.0.1;IP=10.0.0.2;IgnoreUnknown=TRUE;Z=1").unwrap();
        assert_eq!(a.get("IP"), Some("10.0.0.2"));
        assert!(a.ignore_unknown);
        assert!(!parse("IgnoreUnknown=0").unwrap().ignore_unknown);
        assert!(!parse("IgnoreUnknown=False").unwrap().ignore_unknown);
        // IgnoreUnknown applies regardless of position; CRI sends random order.
        assert!(parse("K8S_POD_NAME=x;IgnoreUnknown=1;K8S_POD_UID=y").is_ok());
    }
}
