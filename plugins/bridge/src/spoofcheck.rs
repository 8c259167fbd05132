//! `macspoofchk`: nft rules in the host's `bridge nat` table that drop frames from the host
//! veth whose source MAC is not the container's (the reference's `pkg/link/spoofcheck.go`,
//! same table, chains and comments, so either implementation removes the other's).
//!
//! ```text
//! table bridge nat {
//!     chain PREROUTING { type filter hook prerouting priority -300; policy accept;
//!         iifname "<hostVeth>" jump cni-br-iface-<id>-<if> comment "macspoofchk-<id>-<if>" }
//!     chain cni-br-iface-<id>-<if> { jump cni-br-iface-<id>-<if>-mac comment "…" }
//!     chain cni-br-iface-<id>-<if>-mac { ether saddr <mac> return comment "…"; drop comment "…" }
//! }
//! ```

use crate::error::BridgeError;
use cni_kernel::firewall::nft as nft_tool;
use cni_kernel::firewall::nft::{chains, plain, quote, rules};
use cni_kernel::nftables::{CMP_EQ, Change, Expr, Hook, NfFamily, NfTables, Rule, Verdict};
use serde_json::Value;

const FAMILY: &str = "bridge";
const TABLE: &str = "nat";
const BASE: &str = "PREROUTING";
const COMMENT_PREFIX: &str = "macspoofchk-";

/// The per-attachment identity `<id>-<ifname>`.
pub fn ref_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}-{ifname}")
}

fn iface_chain(refid: &str) -> String {
    format!("cni-br-iface-{refid}")
}

fn mac_chain(refid: &str) -> String {
    format!("cni-br-iface-{refid}-mac")
}

fn comment(refid: &str) -> String {
    format!("{COMMENT_PREFIX}{refid}")
}

/// The ADD transaction (one `nft -f`).
pub fn setup_script(host_veth: &str, mac: &str, refid: &str) -> String {
    let p = format!("{FAMILY} {TABLE}");
    let ic = iface_chain(refid);
    let mc = mac_chain(refid);
    let c = quote(&comment(refid));
    format!(
        "add table {p}\n\
         add chain {p} {BASE} {{ type filter hook prerouting priority -300 ; policy accept ; }}\n\
         add chain {p} {ic}\n\
         add chain {p} {mc}\n\
         flush chain {p} {ic}\n\
         flush chain {p} {mc}\n\
         add rule {p} {BASE} iifname {} jump {ic} comment {c}\n\
         add rule {p} {ic} jump {mc} comment {c}\n\
         add rule {p} {mc} ether saddr {mac} return comment {c}\n\
         add rule {p} {mc} drop comment {c}\n",
        quote(host_veth)
    )
}

/// `NF_BR_PRE_ROUTING`: the hook of the `PREROUTING` base chain.
const NF_BR_PRE_ROUTING: u32 = 0;
/// `NFT_META_IIFNAME`.
const META_IIFNAME: u32 = 6;
/// `NFT_PAYLOAD_LL_HEADER`.
const LINK_HEADER: u32 = 0;
const IFNAMSIZ: usize = 16;

/// The rules and chains [`setup_script`] adds, as one nf_tables transaction encoded as `nft`
/// 1.0 encodes them: for an ADD that finds `bridge nat` and its `PREROUTING` base chain in
/// place (every ADD after the node's first), which then starts no `nft`. The chains are
/// created exclusively, so a re-ADD, whose chains exist, is refused and left to the script
/// (which flushes them). `None` if the MAC, the interface name or the comment cannot be
/// written so.
pub fn setup_changes(host_veth: &str, mac: &str, refid: &str) -> Option<Vec<Change>> {
    let c = comment(refid);
    if !plain(&c) || host_veth.len() >= IFNAMSIZ {
        return None;
    }
    let mac = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok().filter(|_| b.len() == 2))
        .collect::<Option<Vec<u8>>>()
        .filter(|m| m.len() == 6)?;
    let mut iifname = host_veth.as_bytes().to_vec();
    iifname.resize(IFNAMSIZ, 0);
    let (ic, mc) = (iface_chain(refid), mac_chain(refid));
    let verdict = |v: Verdict| Expr::Immediate {
        verdict: Some(v),
        value: Vec::new(),
    };
    let chain = |name: &str| Change::AddChain {
        family: NfFamily::Bridge,
        table: TABLE.to_string(),
        chain: name.to_string(),
    };
    let rule = |chain: &str, exprs: Vec<Expr>| Change::AddRule {
        family: NfFamily::Bridge,
        table: TABLE.to_string(),
        chain: chain.to_string(),
        exprs,
        compat: None,
        comment: Some(c.clone()),
        first: false,
    };
    Some(vec![
        chain(&ic),
        chain(&mc),
        rule(
            BASE,
            vec![
                Expr::Meta { key: META_IIFNAME },
                Expr::Cmp {
                    op: CMP_EQ,
                    data: iifname,
                },
                verdict(Verdict::Jump(ic.clone())),
            ],
        ),
        rule(&ic, vec![verdict(Verdict::Jump(mc.clone()))]),
        rule(
            &mc,
            vec![
                Expr::Payload {
                    base: LINK_HEADER,
                    offset: 6,
                    len: 6,
                },
                Expr::Cmp {
                    op: CMP_EQ,
                    data: mac,
                },
                verdict(Verdict::Return),
            ],
        ),
        rule(&mc, vec![verdict(Verdict::Drop)]),
    ])
}

/// [`setup_changes`] for the node's first ADD, when `bridge nat` does not exist: the table and
/// its `PREROUTING` base chain declared first, as [`setup_script`] declares them.
pub fn first_setup_changes(host_veth: &str, mac: &str, refid: &str) -> Option<Vec<Change>> {
    let mut changes = vec![
        Change::DeclareTable {
            family: NfFamily::Bridge,
            table: TABLE.to_string(),
            comment: None,
        },
        Change::DeclareChain {
            family: NfFamily::Bridge,
            table: TABLE.to_string(),
            chain: BASE.to_string(),
            hook: Some(Hook {
                kind: "filter",
                num: NF_BR_PRE_ROUTING,
                priority: -300,
            }),
            comment: None,
        },
    ];
    changes.extend(setup_changes(host_veth, mac, refid)?);
    Some(changes)
}

/// Adds the rules of [`setup_changes`] over netlink when `bridge nat` and its `PREROUTING`
/// base chain exist, or with them ([`first_setup_changes`]) when the table does not; false
/// (nothing changed) otherwise.
fn setup_nf(host_veth: &str, mac: &str, refid: &str) -> bool {
    let Ok(mut nf) = NfTables::open() else {
        return false;
    };
    let in_place = nf
        .chain(NfFamily::Bridge, TABLE, BASE)
        .ok()
        .flatten()
        .is_some_and(|c| c.base);
    let changes = if in_place {
        setup_changes(host_veth, mac, refid)
    } else if nf.table_exists(NfFamily::Bridge, TABLE).ok() == Some(false) {
        first_setup_changes(host_veth, mac, refid)
    } else {
        None
    };
    changes.is_some_and(|c| nf.commit(&c, None).is_ok())
}

/// The DEL transaction read over netlink: the `PREROUTING` rules carrying this attachment's
/// comment, then its two chains (flushed, then deleted). `Some(empty)` when nothing is
/// there; `None` if nf_tables cannot be read.
fn teardown_changes(nf: &mut NfTables, refid: &str) -> Option<Vec<Change>> {
    let fam = NfFamily::Bridge;
    if !nf.table_exists(fam, TABLE).ok()? {
        return Some(Vec::new());
    }
    let c = comment(refid);
    let mut out: Vec<Change> = nf
        .rules(fam, TABLE, Some(BASE))
        .ok()?
        .into_iter()
        .filter(|r| r.comment.as_deref() == Some(c.as_str()))
        .map(|r| Change::DeleteRule {
            family: fam,
            table: TABLE.to_string(),
            chain: BASE.to_string(),
            handle: r.handle,
        })
        .collect();
    let mut present = Vec::new();
    for ch in [iface_chain(refid), mac_chain(refid)] {
        if nf.chain(fam, TABLE, &ch).ok()?.is_some() {
            present.push(ch);
        }
    }
    // The iface chain jumps to the mac chain: flush both before deleting either.
    for ch in &present {
        out.push(Change::FlushChain {
            family: fam,
            table: TABLE.to_string(),
            chain: ch.clone(),
        });
    }
    for ch in present {
        out.push(Change::DeleteChain {
            family: fam,
            table: TABLE.to_string(),
            chain: ch,
        });
    }
    Some(out)
}

/// The DEL transaction for a listing of `bridge nat`: the PREROUTING rules carrying this
/// attachment's comment, then its two chains. Empty when nothing is there.
pub fn teardown_script(listing: &Value, refid: &str) -> String {
    let p = format!("{FAMILY} {TABLE}");
    let c = comment(refid);
    let mut s = String::new();
    for r in rules(listing)
        .iter()
        .filter(|r| r.chain == BASE && r.comment == c)
    {
        s.push_str(&format!("delete rule {p} {BASE} handle {}\n", r.handle));
    }
    let present = chains(listing);
    for ch in [iface_chain(refid), mac_chain(refid)] {
        if present.contains(&ch) {
            // The iface chain jumps to the mac chain: flush both before deleting either.
            s.push_str(&format!("flush chain {p} {ch}\n"));
        }
    }
    for ch in [iface_chain(refid), mac_chain(refid)] {
        if present.contains(&ch) {
            s.push_str(&format!("delete chain {p} {ch}\n"));
        }
    }
    s
}

/// The `iifname` a PREROUTING rule matches, from its JSON expression.
fn iifname_of(rule: &Value) -> Option<String> {
    rule.get("expr")?.as_array()?.iter().find_map(|e| {
        let m = e.get("match")?;
        let key = m.get("left")?.get("meta")?.get("key")?.as_str()?;
        (key == "iifname").then(|| m.get("right")?.as_str().map(str::to_string))?
    })
}

fn raw_rules<'a>(listing: &'a Value, chain: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    listing
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("rule"))
        .filter(move |r| r.get("chain").and_then(Value::as_str) == Some(chain))
}

/// GC: the attachments (`ref_id`s) whose host veth no longer exists. Chains carry no network
/// name, so only sets whose interface is gone are touched (safe for any network).
pub fn stale_ref_ids(listing: &Value, link_exists: impl Fn(&str) -> bool) -> Vec<String> {
    let rules =
        raw_rules(listing, BASE).map(|r| (r.get("comment").and_then(Value::as_str), iifname_of(r)));
    stale_of(rules, link_exists)
}

/// The `ref_id`s of `PREROUTING` rules, given as (comment, input interface), whose interface
/// no longer exists; each once.
fn stale_of<C: AsRef<str>>(
    rules: impl Iterator<Item = (Option<C>, Option<String>)>,
    link_exists: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (comment, ifname) in rules {
        let (Some(comment), Some(ifname)) = (comment, ifname) else {
            continue;
        };
        let Some(refid) = comment.as_ref().strip_prefix(COMMENT_PREFIX) else {
            continue;
        };
        if !link_exists(&ifname) && !out.iter().any(|o| o == refid) {
            out.push(refid.to_string());
        }
    }
    out
}

/// [`gc`] over netlink: the `PREROUTING` rules read from nf_tables, each stale set removed
/// as DEL removes it ([`teardown_changes`]); no process. `None` where nf_tables cannot be
/// read or changed that way (the `nft` listing then runs).
fn gc_nf(link_exists: &impl Fn(&str) -> bool) -> Option<Vec<String>> {
    let mut nf = NfTables::open().ok()?;
    let fam = NfFamily::Bridge;
    if !nf.table_exists(fam, TABLE).ok()? {
        return Some(Vec::new());
    }
    let rules = nf.rules(fam, TABLE, Some(BASE)).ok()?;
    let iifname = |r: &Rule| r.meta_eq(META_IIFNAME).map(cni_kernel::nftables::cstr);
    let stale = stale_of(
        rules.iter().map(|r| (r.comment.as_deref(), iifname(r))),
        link_exists,
    );
    for refid in &stale {
        let changes = teardown_changes(&mut nf, refid)?;
        nf.commit(&changes, None).ok()?;
    }
    Some(stale)
}

/// CHECK's question answered over netlink (no process): every rule [`setup_changes`] writes
/// for the attachment is in `bridge nat`, as it writes it. Only a yes counts: anything else
/// is left to the listing ([`verify`]), which names what is wrong.
pub fn present_nf(host_veth: &str, mac: &str, refid: &str) -> bool {
    let (Some(wanted), Ok(mut nf)) = (setup_changes(host_veth, mac, refid), NfTables::open())
    else {
        return false;
    };
    nf.holds(NfFamily::Bridge, TABLE, &wanted)
}

/// Verifies the rules of one attachment in a listing of `bridge nat`.
pub fn verify(
    listing: Option<&Value>,
    host_veth: &str,
    mac: &str,
    refid: &str,
) -> Result<(), String> {
    let Some(listing) = listing else {
        return Err("macspoofchk: nftables table bridge nat not found".into());
    };
    let c = comment(refid);
    let jump_ok = raw_rules(listing, BASE).any(|r| {
        r.get("comment").and_then(Value::as_str) == Some(c.as_str())
            && iifname_of(r).as_deref() == Some(host_veth)
    });
    if !jump_ok {
        return Err(format!(
            "macspoofchk: no rule in bridge nat {BASE} sends {host_veth} to {}",
            iface_chain(refid)
        ));
    }
    let mc = mac_chain(refid);
    let mac_ok = raw_rules(listing, &mc).any(|r| r.to_string().contains(&format!("\"{mac}\"")));
    let drop_ok = raw_rules(listing, &mc).any(|r| r.to_string().contains("\"drop\""));
    if !mac_ok || !drop_ok {
        return Err(format!(
            "macspoofchk: chain bridge nat {mc} does not allow only source MAC {mac}"
        ));
    }
    Ok(())
}

/// Lists `bridge nat`; `None` if the table does not exist.
pub fn list() -> Result<Option<Value>, BridgeError> {
    nft_tool::list_table(FAMILY, TABLE)
        .map_err(|e| BridgeError::firewall("macspoofchk: failed to list nftables bridge nat", e))
}

/// Installs the rules for an attachment: over netlink when the table is in place
/// ([`setup_changes`]) or missing ([`first_setup_changes`]), else (a re-ADD, a table without
/// its base chain) with one `nft -f -`.
pub fn setup(host_veth: &str, mac: &str, refid: &str) -> Result<(), BridgeError> {
    if setup_nf(host_veth, mac, refid) {
        return Ok(());
    }
    nft_tool::apply(&setup_script(host_veth, mac, refid))
        .map_err(|e| BridgeError::firewall("failed to set up macspoofchk", e))
}

/// Removes the rules of an attachment, read and deleted over netlink (no process); where
/// nf_tables cannot be read that way, from an `nft` listing (nothing at all if `nft` is not
/// installed).
pub fn teardown(refid: &str) -> Result<(), BridgeError> {
    if let Ok(mut nf) = NfTables::open()
        && let Some(changes) = teardown_changes(&mut nf, refid)
        && nf.commit(&changes, None).is_ok()
    {
        return Ok(());
    }
    if !nft_tool::available() {
        return Ok(());
    }
    let Some(listing) = list()? else {
        return Ok(());
    };
    nft_tool::apply(&teardown_script(&listing, refid))
        .map_err(|e| BridgeError::firewall("failed to tear down macspoofchk", e))
}

/// GC: removes the rule sets whose host veth is gone.
pub fn gc(link_exists: impl Fn(&str) -> bool) -> Result<Vec<String>, BridgeError> {
    if let Some(stale) = gc_nf(&link_exists) {
        return Ok(stale);
    }
    if !nft_tool::available() {
        return Ok(Vec::new());
    }
    let Some(listing) = list()? else {
        return Ok(Vec::new());
    };
    let stale = stale_ref_ids(&listing, link_exists);
    let script: String = stale.iter().map(|r| teardown_script(&listing, r)).collect();
    nft_tool::apply(&script)
        .map_err(|e| BridgeError::firewall("GC: failed to remove macspoofchk rules", e))?;
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "bridge", "name": "nat", "handle": 2}},
 {"chain": {"family": "bridge", "table": "nat", "name": "PREROUTING", "handle": 1, "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"}},
 {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-abc-eth0", "handle": 2}},
 {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-abc-eth0-mac", "handle": 3}},
 {"rule": {"family": "bridge", "table": "nat", "chain": "PREROUTING", "handle": 4, "comment": "macspoofchk-abc-eth0", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "veth1234"}}, {"jump": {"target": "cni-br-iface-abc-eth0"}}]}},
 {"rule": {"family": "bridge", "table": "nat", "chain": "cni-br-iface-abc-eth0", "handle": 7, "comment": "macspoofchk-abc-eth0", "expr": [{"jump": {"target": "cni-br-iface-abc-eth0-mac"}}]}},
 {"rule": {"family": "bridge", "table": "nat", "chain": "cni-br-iface-abc-eth0-mac", "handle": 5, "comment": "macspoofchk-abc-eth0", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}}, "right": "02:11:22:33:44:55"}}, {"return": null}]}},
 {"rule": {"family": "bridge", "table": "nat", "chain": "cni-br-iface-abc-eth0-mac", "handle": 6, "comment": "macspoofchk-abc-eth0", "expr": [{"drop": null}]}}]}"#;

    #[test]
    fn setup_layout() {
        let s = setup_script("veth1234", "02:11:22:33:44:55", &ref_id("abc", "eth0"));
        assert!(s.contains("add chain bridge nat PREROUTING { type filter hook prerouting priority -300 ; policy accept ; }\n"));
        assert!(s.contains("add rule bridge nat PREROUTING iifname \"veth1234\" jump cni-br-iface-abc-eth0 comment \"macspoofchk-abc-eth0\"\n"));
        assert!(s.contains("add rule bridge nat cni-br-iface-abc-eth0-mac ether saddr 02:11:22:33:44:55 return comment \"macspoofchk-abc-eth0\"\n"));
        assert!(s.ends_with(
            "add rule bridge nat cni-br-iface-abc-eth0-mac drop comment \"macspoofchk-abc-eth0\"\n"
        ));
    }

    #[test]
    fn teardown_verify_gc() {
        let l: Value = serde_json::from_str(LISTING).unwrap();
        let s = teardown_script(&l, "abc-eth0");
        assert_eq!(
            s,
            "delete rule bridge nat PREROUTING handle 4\nflush chain bridge nat cni-br-iface-abc-eth0\nflush chain bridge nat cni-br-iface-abc-eth0-mac\ndelete chain bridge nat cni-br-iface-abc-eth0\ndelete chain bridge nat cni-br-iface-abc-eth0-mac\n"
        );
        assert_eq!(teardown_script(&l, "other-eth0"), "");
        assert!(verify(Some(&l), "veth1234", "02:11:22:33:44:55", "abc-eth0").is_ok());
        assert!(verify(Some(&l), "veth9999", "02:11:22:33:44:55", "abc-eth0").is_err());
        assert!(verify(Some(&l), "veth1234", "02:11:22:33:44:56", "abc-eth0").is_err());
        assert_eq!(stale_ref_ids(&l, |_| true), Vec::<String>::new());
        assert_eq!(stale_ref_ids(&l, |n| n != "veth1234"), vec!["abc-eth0"]);
    }
}
