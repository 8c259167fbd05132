//! GC input: the still-valid attachments (`cni-contract.md` §9).

use crate::error::CniError;
use crate::result::null_default;
use serde::Deserialize;
use serde_json::Value;

/// One attachment `(CNI_CONTAINERID, CNI_IFNAME)` the runtime still uses.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID", default, deserialize_with = "null_default")]
    pub container_id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub ifname: String,
}

/// The valid attachments of a GC request: the union of `cni.dev/valid-attachments` and the
/// older `cni.dev/attachments`. `None` when neither key is present (or both are `null`),
/// which means "no information: remove nothing". `Some(empty)` means everything is stale.
pub fn valid_attachments(raw: &Value) -> Result<Option<Vec<Attachment>>, CniError> {
    let mut found = false;
    let mut out: Vec<Attachment> = Vec::new();
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        match raw.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => {
                found = true;
                let list: Vec<Attachment> = crate::json::from_value(v).map_err(|e| {
                    CniError::invalid_config(format!("invalid network config: {key}: {e}"))
                })?;
                out.extend(list);
            }
        }
    }
    if !found {
        return Ok(None);
    }
    out.sort();
    out.dedup();
    Ok(Some(out))
}

/// True if some valid attachment has this container ID (for state keyed by ID only).
pub fn has_container(valid: &[Attachment], container_id: &str) -> bool {
    valid.iter().any(|a| a.container_id == container_id)
}

/// True if the exact attachment is valid.
pub fn has_attachment(valid: &[Attachment], container_id: &str, ifname: &str) -> bool {
    valid
        .iter()
        .any(|a| a.container_id == container_id && a.ifname == ifname)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_means_none_and_empty_means_all_stale() {
        assert_eq!(valid_attachments(&json!({"name": "n"})).unwrap(), None);
        assert_eq!(
            valid_attachments(&json!({"cni.dev/valid-attachments": null})).unwrap(),
            None
        );
        assert_eq!(
            valid_attachments(&json!({"cni.dev/valid-attachments": []})).unwrap(),
            Some(vec![])
        );
    }

    #[test]
    fn union_of_both_keys() {
        let v = json!({
            "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
            "cni.dev/attachments": [{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "eth1"}]
        });
        let got = valid_attachments(&v).unwrap().unwrap();
        assert_eq!(got.len(), 2);
        assert!(has_attachment(&got, "b", "eth1"));
        assert!(!has_attachment(&got, "b", "eth0"));
        assert!(has_container(&got, "a"));
        let only_old = json!({"cni.dev/attachments": [{"containerID": "x", "ifname": "eth0"}]});
        assert_eq!(valid_attachments(&only_old).unwrap().unwrap().len(), 1);
    }

    #[test]
    fn wrong_type_is_config_error() {
        let e = valid_attachments(&json!({"cni.dev/valid-attachments": "x"})).unwrap_err();
        assert_eq!(e.code, 7);
    }
}
