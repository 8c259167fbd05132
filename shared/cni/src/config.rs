//! Network configuration as a plugin receives it on stdin: the common keys every plugin reads,
//! validated the way the reference skel does, and typed access to the plugin's own keys with
//! case-insensitive matching (`cni-contract.md` §3, §5).

use crate::error::{CniError, Code};
use crate::result::{Dns, KNOWN_KEYS as RESULT_KEYS, null_default};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Keys of the common configuration (spec §1, §3), matched case-insensitively everywhere.
pub const COMMON_KEYS: &[&str] = &[
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "capabilities",
    "ipMasq",
    "ipam",
    "dns",
    "runtimeConfig",
    "args",
    "cni",
    "prevResult",
    "cni.dev/valid-attachments",
    "cni.dev/attachments",
    "containerID",
    "ifname",
];

/// The common configuration keys, decoded with the types the reference skel uses. A value of
/// the wrong JSON type here is a decode failure (code 6), as in the reference.
#[derive(Deserialize, Default)]
struct Common {
    #[serde(rename = "cniVersion", default, deserialize_with = "null_default")]
    cni_version: String,
    #[serde(default, deserialize_with = "null_default")]
    name: String,
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    plugin_type: String,
    #[serde(default, deserialize_with = "null_default")]
    #[allow(dead_code)]
    capabilities: BTreeMap<String, bool>,
    #[serde(default, deserialize_with = "null_default")]
    ipam: IpamType,
    #[serde(default, deserialize_with = "null_default")]
    #[allow(dead_code)]
    dns: Dns,
    #[serde(rename = "prevResult", default)]
    prev_result: Option<BTreeMap<String, Value>>,
}

#[derive(Deserialize, Default)]
struct IpamType {
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    plugin_type: String,
}

/// The parsed stdin of one invocation.
#[derive(Clone, Debug)]
pub struct NetConf {
    /// The config's `cniVersion`; `"0.1.0"` when absent, as libcni decodes it.
    pub cni_version: String,
    /// The network name (validated against the container-ID pattern).
    pub name: String,
    /// The plugin `type`.
    pub plugin_type: String,
    /// `ipam.type`, empty when there is no IPAM (L2 mode).
    pub ipam_type: String,
    /// The whole document, keys canonicalized for [`COMMON_KEYS`] and result keys.
    pub raw: Value,
}

/// The longest network name: one path component (host-local keeps its state in
/// `<dataDir>/<name>/`), `NAME_MAX` bytes.
pub const MAX_NETWORK_NAME: usize = 255;

/// The `name` checks of the reference skel (code 7), plus a length limit.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::new(Code::InvalidConfig, "missing network name"));
    }
    if name.len() > MAX_NETWORK_NAME {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!(
                "network name is too long ({} bytes, at most {MAX_NETWORK_NAME})",
                name.len()
            ),
        ));
    }
    if !crate::env::valid_id(name) {
        return Err(CniError::new(
            Code::InvalidConfig,
            "invalid characters found in network name",
        )
        .with_details(name));
    }
    Ok(())
}

impl NetConf {
    /// Parses stdin as the skel does: a JSON object (code 6), common keys of the right types
    /// (code 6), and a valid network name (code 7).
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let decode = |e: String| {
            CniError::new(
                Code::DecodeFailure,
                format!("error unmarshall network config: {e}"),
            )
        };
        let mut raw: Value = serde_json::from_slice(stdin).map_err(|e| decode(e.to_string()))?;
        if !raw.is_object() {
            return Err(decode("the network config must be a JSON object".into()));
        }
        canonicalize(&mut raw, &[]);
        let common: Common = crate::json::from_value(&raw).map_err(decode)?;
        validate_network_name(&common.name)?;
        let _ = common.prev_result;
        Ok(NetConf {
            cni_version: if common.cni_version.is_empty() {
                "0.1.0".to_string()
            } else {
                common.cni_version
            },
            name: common.name,
            plugin_type: common.plugin_type,
            ipam_type: common.ipam.plugin_type,
            raw,
        })
    }

    /// Decodes the plugin's own configuration type. `known` lists the plugin's key names
    /// (any casing in the input matches them); a wrong type or bad value is code 7 naming the
    /// field.
    pub fn decode<T: serde::de::DeserializeOwned>(&self, known: &[&str]) -> Result<T, CniError> {
        let mut v = self.raw.clone();
        canonicalize(&mut v, known);
        crate::json::from_value(&v)
            .map_err(|e| CniError::invalid_config(format!("invalid network config: {e}")))
    }

    /// The `prevResult` object, if present and not null.
    pub fn prev_result_value(&self) -> Option<&Value> {
        self.raw.get("prevResult").filter(|v| !v.is_null())
    }
}

fn canonicalize(v: &mut Value, extra: &[&str]) {
    let mut known: Vec<&str> =
        Vec::with_capacity(COMMON_KEYS.len() + RESULT_KEYS.len() + extra.len());
    known.extend_from_slice(COMMON_KEYS);
    known.extend_from_slice(RESULT_KEYS);
    known.extend_from_slice(extra);
    crate::json::canonicalize_keys(v, &known);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_case() {
        let c = NetConf::parse(
            br#"{"NAME": "net1", "Type": "bridge", "IPAM": {"TYPE": "host-local"}}"#,
        )
        .unwrap();
        assert_eq!(c.cni_version, "0.1.0");
        assert_eq!(c.name, "net1");
        assert_eq!(c.plugin_type, "bridge");
        assert_eq!(c.ipam_type, "host-local");
        assert!(c.raw.get("ipam").is_some());
    }

    #[test]
    fn decode_errors() {
        let e = NetConf::parse(b"{not json").unwrap_err();
        assert_eq!(e.code, 6);
        assert!(
            e.msg.starts_with("error unmarshall network config: "),
            "{}",
            e.msg
        );
        assert_eq!(NetConf::parse(b"[1]").unwrap_err().code, 6);
        assert_eq!(NetConf::parse(b"").unwrap_err().code, 6);
        let e = NetConf::parse(br#"{"name": 5}"#).unwrap_err();
        assert_eq!(e.code, 6);
        assert!(e.msg.contains("name"), "{}", e.msg);
        assert_eq!(
            NetConf::parse(br#"{"name":"n","prevResult":3}"#)
                .unwrap_err()
                .code,
            6
        );
    }

    #[test]
    fn name_rules() {
        let e = NetConf::parse(br#"{"cniVersion": "1.0.0"}"#).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (7, "missing network name"));
        let e = NetConf::parse(br#"{"name": "../etc"}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert_eq!(e.msg, "invalid characters found in network name");
        assert_eq!(e.details, "../etc");
        let long = format!(r#"{{"name": "{}"}}"#, "a".repeat(256));
        let e = NetConf::parse(long.as_bytes()).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.starts_with("network name is too long"), "{}", e.msg);
        assert!(NetConf::parse(format!(r#"{{"name": "{}"}}"#, "a".repeat(255)).as_bytes()).is_ok());
        // Objects are objects: an array in their place is a decode error.
        assert_eq!(
            NetConf::parse(br#"{"name": "n", "ipam": ["x"]}"#)
                .unwrap_err()
                .code,
            6
        );
    }

    #[test]
    fn plugin_decode_names_the_field() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct P {
            #[serde(default)]
            mtu: u32,
            #[serde(rename = "hairpinMode", default)]
            hairpin_mode: bool,
        }
        let c = NetConf::parse(br#"{"name": "n", "HairpinMode": true, "MTU": 1400}"#).unwrap();
        let p: P = c.decode(&["mtu", "hairpinMode"]).unwrap();
        assert!(p.hairpin_mode);
        assert_eq!(p.mtu, 1400);
        let c = NetConf::parse(br#"{"name": "n", "mtu": "big"}"#).unwrap();
        let e = c.decode::<P>(&["mtu", "hairpinMode"]).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("mtu: invalid type"), "{}", e.msg);
    }
}
