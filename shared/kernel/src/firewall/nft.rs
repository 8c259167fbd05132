//! `nft`: one `nft -f -` transaction per call, and JSON listings to find rules by comment.

use super::{FirewallError, find_in_path};
use serde_json::Value;

/// A rule found in an `nft -j` listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftRule {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub handle: u64,
    pub comment: String,
}

/// `nft` is installed (no process is started).
pub fn available() -> bool {
    find_in_path("nft").is_some()
}

/// `nft` works: it can list tables (what the reference calls "usable").
pub fn usable() -> bool {
    available() && run(&["list", "tables"], None).is_ok()
}

/// `nft` is installed and nf_tables answers in this namespace, without starting a process:
/// what an ADD needs whose rules go in over netlink, with `nft` for what is not encoded.
/// STATUS asks this every few seconds under containerd, where [`usable`] would run `nft`.
pub fn ready() -> bool {
    available() && crate::nftables::answers()
}

fn run(args: &[&str], stdin: Option<&str>) -> Result<String, FirewallError> {
    super::run_tool("nft", args, stdin)
}

/// Applies `script` atomically with `nft -f -`. An empty script starts no process.
pub fn apply(script: &str) -> Result<(), FirewallError> {
    if script.trim().is_empty() {
        return Ok(());
    }
    run(&["-f", "-"], Some(script)).map(|_| ())
}

/// `nft -j list table <family> <table>`; `None` if the table does not exist.
pub fn list_table(family: &str, table: &str) -> Result<Option<Value>, FirewallError> {
    match run(&["-j", "list", "table", family, table], None) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| FirewallError::Output {
                cmd: format!("nft -j list table {family} {table}"),
                what: e.to_string(),
            }),
        Err(FirewallError::Failed { stderr, .. })
            if stderr.contains("No such file or directory") =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The rules in an `nft -j` listing, with their comments (empty if none).
pub fn rules(listing: &Value) -> Vec<NftRule> {
    let Some(items) = listing.get("nftables").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| i.get("rule"))
        .filter_map(|r| {
            Some(NftRule {
                family: r.get("family")?.as_str()?.to_string(),
                table: r.get("table")?.as_str()?.to_string(),
                chain: r.get("chain")?.as_str()?.to_string(),
                handle: r.get("handle")?.as_u64()?,
                comment: r
                    .get("comment")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            })
        })
        .collect()
}

/// The rules in an `nft -j` listing together with their raw JSON object (for callers that
/// need the expressions).
pub fn rules_with_json(listing: &Value) -> Vec<(NftRule, &Value)> {
    let Some(items) = listing.get("nftables").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| i.get("rule"))
        .filter_map(|r| {
            Some((
                NftRule {
                    family: r.get("family")?.as_str()?.to_string(),
                    table: r.get("table")?.as_str()?.to_string(),
                    chain: r.get("chain")?.as_str()?.to_string(),
                    handle: r.get("handle")?.as_u64()?,
                    comment: r
                        .get("comment")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                },
                r,
            ))
        })
        .collect()
}

/// The chain names in an `nft -j` listing.
pub fn chains(listing: &Value) -> Vec<String> {
    let Some(items) = listing.get("nftables").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| i.get("chain"))
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// A comment `nft` stores exactly as [`quote`] writes it: at most 128 bytes (nft's limit),
/// no quote or backslash. Rules with such a comment can be written over netlink and read
/// back as `nft` would have made them.
pub fn plain(comment: &str) -> bool {
    comment.len() <= 128 && !comment.contains(['"', '\\'])
}

/// Quotes a string for nft script input.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listing() {
        let v: Value = serde_json::from_str(r#"{"nftables": [{"metainfo": {}}, {"table": {"family": "ip", "name": "cni_hostport"}},
            {"chain": {"family": "ip", "table": "cni_hostport", "name": "hostports"}},
            {"rule": {"family": "ip", "table": "cni_hostport", "chain": "hostports", "handle": 7, "comment": "abc", "expr": []}},
            {"rule": {"family": "ip", "table": "cni_hostport", "chain": "hostports", "handle": 8, "expr": []}}]}"#).unwrap();
        let r = rules(&v);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].handle, 7);
        assert_eq!(r[0].comment, "abc");
        assert_eq!(r[1].comment, "");
        assert_eq!(chains(&v), vec!["hostports"]);
        assert_eq!(quote(r#"a"b"#), r#""a\"b""#);
    }
}
