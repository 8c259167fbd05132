//! The nftables masquerade backend, compatible with the reference
//! (`pkg/ip/ipmasq_nftables_linux.go`, 1.6.0+): table `inet cni_plugins_masquerade`, chains
//! `masq_checks` and `postrouting`, one rule per address whose comment starts with the
//! instance hash `h16(net)-h16(ifname:id)`.
//!
//! Pure script generation over one `nft -j list table` listing; each ADD, DEL or GC applies
//! one `nft -f -` transaction, except where the plugin reads and writes over netlink: the
//! state an ADD needs, an ADD that only adds this attachment's rules ([`rule_changes`]), the
//! network's first ADD on a node ([`first_add_changes`]), and DEL.

use super::iptables::multicast;
use cni::gc::Attachment;
use cni_kernel::firewall::nft::{NftRule, plain, quote, rules};
use cni_kernel::firewall::{Family, names};
use cni_kernel::nftables::{
    CMP_EQ, Change, Expr, HOOK_POSTROUTING, Hook, META_NFPROTO, NfFamily, Rule, Verdict, addr_match,
};
use ipnet::IpNet;
use serde_json::Value;

/// The table family.
pub const FAMILY: &str = "inet";
/// The table.
pub const TABLE: &str = "cni_plugins_masquerade";
/// The chain holding the per-address rules.
pub const CHAIN: &str = "masq_checks";
const TABLE_COMMENT: &str = "Masquerading for plugins from github.com/containernetworking/plugins";
const CHAIN_COMMENT: &str =
    "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet";

/// The comment on our `goto masq_checks` rule in `postrouting`. The reference flushes and
/// rewrites `postrouting` on every ADD; that deletion costs an RCU grace period (10–25 ms).
/// Its content never changes, so when the chain holds exactly the three rules we wrote
/// (this marker on the last one), ADD leaves it alone. A reference ADD rewrites the chain
/// without the marker, and our next ADD rewrites it once more.
pub const POSTROUTING_MARKER: &str = "cni-rs: postrouting v1";

/// The nf_tables family of the table.
pub const NF_FAMILY: NfFamily = NfFamily::Inet;

fn prefix() -> String {
    format!("{FAMILY} {TABLE}")
}

/// The rule body for one address (as the reference hands it to nft).
pub fn rule_body(addr: &IpNet) -> String {
    let ip = if addr.addr().is_ipv4() { "ip" } else { "ip6" };
    format!(
        "{ip} saddr == {} {ip} daddr != {} masquerade",
        addr.addr(),
        addr.trunc()
    )
}

/// The masq_checks rules of a listing.
pub fn masq_rules(listing: &Value) -> Vec<NftRule> {
    rules(listing)
        .into_iter()
        .filter(|r| r.family == FAMILY && r.table == TABLE && r.chain == CHAIN)
        .collect()
}

/// True if `postrouting` (its rules, from netlink) is exactly what [`setup_script`] writes:
/// two `return` rules and the marked `goto masq_checks`.
pub fn postrouting_is_current(postrouting: &[Rule]) -> bool {
    let verdict = |r: &Rule| {
        r.exprs.iter().find_map(|e| match e {
            cni_kernel::nftables::Expr::Immediate {
                verdict: Some(v), ..
            } => Some(v.clone()),
            _ => None,
        })
    };
    matches!(postrouting, [a, b, c]
        if verdict(a) == Some(Verdict::Return)
            && verdict(b) == Some(Verdict::Return)
            && verdict(c) == Some(Verdict::Goto(CHAIN.to_string()))
            && c.comment.as_deref() == Some(POSTROUTING_MARKER))
}

/// The ADD transaction: ensure the table and chains, rewrite `postrouting`, drop this
/// instance's stale rules, add one rule per address.
pub fn setup_script(
    existing: &[NftRule],
    net: &str,
    ifname: &str,
    container_id: &str,
    addrs: &[IpNet],
) -> String {
    let handles: Vec<u64> = existing
        .iter()
        .filter(|r| {
            r.comment
                .starts_with(&names::nft_masq_prefix(net, ifname, container_id))
        })
        .map(|r| r.handle)
        .collect();
    setup_script_with(&handles, true, false, net, ifname, container_id, addrs)
}

/// [`setup_script`] with the stale rules of this instance given by handle, the rewrite of
/// `postrouting` optional (skipped when [`postrouting_is_current`]), and the declaration of
/// the table and chains skipped when they all `exist` (re-declaring an existing base chain
/// is an update the kernel releases after a grace period). Without deletions and updates
/// the transaction is add-only, which nf_tables commits without waiting for a grace period.
pub fn setup_script_with(
    stale_handles: &[u64],
    rewrite_postrouting: bool,
    exist: bool,
    net: &str,
    ifname: &str,
    container_id: &str,
    addrs: &[IpNet],
) -> String {
    let p = prefix();
    let comment = names::nft_masq_comment(net, ifname, container_id);
    let mut s = String::new();
    if !exist {
        s.push_str(&format!(
            "add table {p} {{ comment {} ; }}\n",
            quote(TABLE_COMMENT)
        ));
        s.push_str(&format!(
            "add chain {p} {CHAIN} {{ comment {} ; }}\n",
            quote(CHAIN_COMMENT)
        ));
        s.push_str(&format!(
            "add chain {p} postrouting {{ type nat hook postrouting priority 100 ; }}\n"
        ));
    }
    if rewrite_postrouting {
        s.push_str(&format!("flush chain {p} postrouting\n"));
        s.push_str(&format!(
            "add rule {p} postrouting ip daddr == {}  return\n",
            multicast(Family::V4)
        ));
        s.push_str(&format!(
            "add rule {p} postrouting ip6 daddr == {}  return\n",
            multicast(Family::V6)
        ));
        s.push_str(&format!(
            "add rule {p} postrouting goto {CHAIN} comment {}\n",
            quote(POSTROUTING_MARKER)
        ));
    }
    for h in stale_handles {
        s.push_str(&format!("delete rule {p} {CHAIN} handle {h}\n"));
    }
    for a in addrs {
        s.push_str(&format!(
            "add rule {p} {CHAIN} {} comment {}\n",
            rule_body(a),
            quote(&comment)
        ));
    }
    s
}

/// The rules [`setup_script_with`] adds for `addrs`, one change each, encoded as `nft` 1.0
/// encodes them: an ADD that finds the table and chains in place, `postrouting` current and
/// no stale rule commits these over netlink, without starting `nft`. `None` if the comment
/// is not [`plain`].
pub fn rule_changes(
    net: &str,
    ifname: &str,
    container_id: &str,
    addrs: &[IpNet],
) -> Option<Vec<Change>> {
    let comment = names::nft_masq_comment(net, ifname, container_id);
    if !plain(&comment) {
        return None;
    }
    let rule = |a: &IpNet| {
        let family = if a.addr().is_ipv4() {
            NfFamily::Ipv4
        } else {
            NfFamily::Ipv6
        };
        let mut exprs = vec![
            Expr::Meta { key: META_NFPROTO },
            Expr::Cmp {
                op: CMP_EQ,
                data: vec![family.code()],
            },
        ];
        exprs.extend(addr_match(IpNet::from(a.addr()), false, true));
        exprs.extend(addr_match(a.trunc(), true, false));
        exprs.push(Expr::Masq);
        Change::AddRule {
            family: NF_FAMILY,
            table: TABLE.to_string(),
            chain: CHAIN.to_string(),
            exprs,
            compat: None,
            comment: Some(comment.clone()),
            first: false,
        }
    };
    Some(addrs.iter().map(rule).collect())
}

/// The whole of [`setup_script_with`] when the table does not exist yet (the network's first
/// ADD on a node): the table, both chains, the `postrouting` rules and this attachment's
/// rules, encoded as `nft` 1.0 encodes those lines. `None` if the comment is not [`plain`].
pub fn first_add_changes(
    net: &str,
    ifname: &str,
    container_id: &str,
    addrs: &[IpNet],
) -> Option<Vec<Change>> {
    let table = || TABLE.to_string();
    let mut out = vec![
        Change::DeclareTable {
            family: NF_FAMILY,
            table: table(),
            comment: Some(TABLE_COMMENT.to_string()),
        },
        Change::DeclareChain {
            family: NF_FAMILY,
            table: table(),
            chain: CHAIN.to_string(),
            hook: None,
            comment: Some(CHAIN_COMMENT.to_string()),
        },
        Change::DeclareChain {
            family: NF_FAMILY,
            table: table(),
            chain: "postrouting".to_string(),
            hook: Some(Hook {
                kind: "nat",
                num: HOOK_POSTROUTING,
                priority: 100,
            }),
            comment: None,
        },
        Change::FlushChain {
            family: NF_FAMILY,
            table: table(),
            chain: "postrouting".to_string(),
        },
    ];
    let post = |exprs: Vec<Expr>, comment: Option<&str>| Change::AddRule {
        family: NF_FAMILY,
        table: table(),
        chain: "postrouting".to_string(),
        exprs,
        compat: None,
        comment: comment.map(str::to_string),
        first: false,
    };
    let multicast_returns = |family: Family| {
        let net: IpNet = multicast(family).parse().ok()?;
        let mut e = vec![
            Expr::Meta { key: META_NFPROTO },
            Expr::Cmp {
                op: CMP_EQ,
                data: vec![family.nf_family().code()],
            },
        ];
        e.extend(addr_match(net, true, true));
        e.push(Expr::Immediate {
            verdict: Some(Verdict::Return),
            value: Vec::new(),
        });
        Some(post(e, None))
    };
    out.push(multicast_returns(Family::V4)?);
    out.push(multicast_returns(Family::V6)?);
    out.push(post(
        vec![Expr::Immediate {
            verdict: Some(Verdict::Goto(CHAIN.to_string())),
            value: Vec::new(),
        }],
        Some(POSTROUTING_MARKER),
    ));
    out.extend(rule_changes(net, ifname, container_id, addrs)?);
    Some(out)
}

/// The DEL changes computed from the netlink listing of `masq_checks`: delete this
/// instance's rules (found by hash; no address needed). Empty when there is nothing to do.
pub fn teardown_changes(
    masq_checks: &[Rule],
    net: &str,
    ifname: &str,
    container_id: &str,
) -> Vec<Change> {
    let instance = names::nft_masq_prefix(net, ifname, container_id);
    deletions(masq_checks, |c| c.starts_with(&instance))
}

/// Deletions of the rules of `masq_checks` whose comment `matches`.
fn deletions(masq_checks: &[Rule], matches: impl Fn(&str) -> bool) -> Vec<Change> {
    masq_checks
        .iter()
        .filter(|r| r.comment.as_deref().is_some_and(&matches))
        .map(|r| Change::DeleteRule {
            family: NF_FAMILY,
            table: TABLE.to_string(),
            chain: CHAIN.to_string(),
            handle: r.handle,
        })
        .collect()
}

/// The DEL transaction: delete this instance's rules (found by hash; no address needed).
/// Empty when there is nothing to delete.
pub fn teardown_script(
    existing: &[NftRule],
    net: &str,
    ifname: &str,
    container_id: &str,
) -> String {
    let instance = names::nft_masq_prefix(net, ifname, container_id);
    delete_script(existing.iter().filter(|r| r.comment.starts_with(&instance)))
}

/// Which rule comments GC removes: those of this network that are not one of the valid
/// attachments' comments (the reference's `gcIPMasqNFTables`).
fn gc_stale(net: &str, valid: &[Attachment]) -> impl Fn(&str) -> bool {
    let net_hash = names::h16(net);
    let keep: Vec<String> = valid
        .iter()
        .map(|a| names::nft_masq_comment(net, &a.ifname, &a.container_id))
        .collect();
    move |c| c.starts_with(&net_hash) && !keep.iter().any(|k| k == c)
}

/// The GC transaction ([`gc_stale`]) as an `nft` script.
pub fn gc_script(existing: &[NftRule], net: &str, valid: &[Attachment]) -> String {
    let stale = gc_stale(net, valid);
    delete_script(existing.iter().filter(|r| stale(&r.comment)))
}

/// The GC transaction ([`gc_stale`]) from the netlink listing of `masq_checks`.
pub fn gc_changes(masq_checks: &[Rule], net: &str, valid: &[Attachment]) -> Vec<Change> {
    deletions(masq_checks, gc_stale(net, valid))
}

fn delete_script<'a>(rules: impl Iterator<Item = &'a NftRule>) -> String {
    let p = prefix();
    rules
        .map(|r| format!("delete rule {p} {} handle {}\n", r.chain, r.handle))
        .collect()
}

/// The source addresses matched by the rules carrying `comment` in a listing.
fn saddrs_of(listing: &Value, comment: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(items) = listing.get("nftables").and_then(Value::as_array) else {
        return out;
    };
    for rule in items.iter().filter_map(|i| i.get("rule")) {
        if rule.get("chain").and_then(Value::as_str) != Some(CHAIN)
            || rule.get("comment").and_then(Value::as_str) != Some(comment)
        {
            continue;
        }
        for e in rule
            .get("expr")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(m) = e.get("match") else { continue };
            let field = m
                .get("left")
                .and_then(|l| l.get("payload"))
                .and_then(|p| p.get("field"))
                .and_then(Value::as_str);
            if field == Some("saddr")
                && let Some(r) = m.get("right").and_then(Value::as_str)
            {
                out.push(r.to_string());
            }
        }
    }
    out
}

/// Verifies that the listing holds one rule per address for this instance and that the
/// postrouting hook jumps to it.
pub fn verify(
    listing: Option<&Value>,
    net: &str,
    ifname: &str,
    container_id: &str,
    addrs: &[IpNet],
) -> Result<(), String> {
    let Some(listing) = listing else {
        return Err(format!("nftables table {FAMILY} {TABLE} not found"));
    };
    let has_goto = rules(listing)
        .iter()
        .any(|r| r.chain == "postrouting" && r.table == TABLE);
    if !has_goto {
        return Err(format!(
            "nftables chain {FAMILY} {TABLE} postrouting has no rules"
        ));
    }
    let comment = names::nft_masq_comment(net, ifname, container_id);
    let found = saddrs_of(listing, &comment);
    for a in addrs {
        let want = a.addr().to_string();
        if !found.contains(&want) {
            return Err(format!(
                "nftables masquerade rule for {want} (comment {comment:?}) not found in {FAMILY} {TABLE} {CHAIN}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(handle: u64, comment: &str) -> NftRule {
        NftRule {
            family: FAMILY.into(),
            table: TABLE.into(),
            chain: CHAIN.into(),
            handle,
            comment: comment.into(),
        }
    }

    #[test]
    fn setup_matches_the_reference_layout() {
        let s = setup_script(
            &[],
            "unit-test",
            "eth0",
            "one",
            &["192.168.1.1/24".parse().unwrap()],
        );
        let want = "add table inet cni_plugins_masquerade { comment \"Masquerading for plugins from github.com/containernetworking/plugins\" ; }\n\
add chain inet cni_plugins_masquerade masq_checks { comment \"Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet\" ; }\n\
add chain inet cni_plugins_masquerade postrouting { type nat hook postrouting priority 100 ; }\n\
flush chain inet cni_plugins_masquerade postrouting\n\
add rule inet cni_plugins_masquerade postrouting ip daddr == 224.0.0.0/4  return\n\
add rule inet cni_plugins_masquerade postrouting ip6 daddr == ff00::/8  return\n\
add rule inet cni_plugins_masquerade postrouting goto masq_checks comment \"cni-rs: postrouting v1\"\n\
add rule inet cni_plugins_masquerade masq_checks ip saddr == 192.168.1.1 ip daddr != 192.168.1.0/24 masquerade comment \"6fd94d501e58f0aa-287fc69eff0574a2, net: unit-test, if: eth0, id: one\"\n";
        assert_eq!(s, want);
        let v6 = rule_body(&"2001:db8:1::2/64".parse().unwrap());
        assert_eq!(
            v6,
            "ip6 saddr == 2001:db8:1::2 ip6 daddr != 2001:db8:1::/64 masquerade"
        );
    }

    #[test]
    fn stale_instance_rules_are_replaced_and_others_kept() {
        let existing = vec![
            rule(
                5,
                "6fd94d501e58f0aa-287fc69eff0574a2, net: unit-test, if: eth0, id: one",
            ),
            rule(
                6,
                "6fd94d501e58f0aa-d750b2c8f0f25d5f, net: unit-test, if: eth0, id: two",
            ),
        ];
        let s = setup_script(
            &existing,
            "unit-test",
            "eth0",
            "one",
            &["192.168.1.1/24".parse().unwrap()],
        );
        assert!(s.contains("delete rule inet cni_plugins_masquerade masq_checks handle 5\n"));
        assert!(!s.contains("handle 6"));
        assert_eq!(
            teardown_script(&existing, "unit-test", "eth0", "two"),
            "delete rule inet cni_plugins_masquerade masq_checks handle 6\n"
        );
        assert_eq!(teardown_script(&existing, "unit-test", "eth1", "two"), "");
    }

    fn nl_rule(chain: &str, handle: u64, comment: Option<&str>, v: Verdict) -> Rule {
        Rule {
            chain: chain.into(),
            handle,
            comment: comment.map(str::to_string),
            exprs: vec![cni_kernel::nftables::Expr::Immediate {
                verdict: Some(v),
                value: Vec::new(),
            }],
            raw_exprs: Vec::new(),
            compat: None,
        }
    }

    #[test]
    fn postrouting_rewritten_only_when_needed() {
        let ours = [
            nl_rule("postrouting", 1, None, Verdict::Return),
            nl_rule("postrouting", 2, None, Verdict::Return),
            nl_rule(
                "postrouting",
                3,
                Some(POSTROUTING_MARKER),
                Verdict::Goto(CHAIN.into()),
            ),
        ];
        assert!(postrouting_is_current(&ours));
        let theirs = [
            nl_rule("postrouting", 1, None, Verdict::Return),
            nl_rule("postrouting", 2, None, Verdict::Return),
            nl_rule("postrouting", 3, None, Verdict::Goto(CHAIN.into())),
        ];
        assert!(!postrouting_is_current(&theirs));
        assert!(!postrouting_is_current(&ours[1..]));
        let s = setup_script_with(
            &[9],
            false,
            true,
            "n",
            "eth0",
            "c",
            &["10.1.0.2/16".parse().unwrap()],
        );
        assert!(!s.contains("add table") && !s.contains("add chain"), "{s}");
        assert!(
            !s.contains("flush") && !s.contains(" postrouting goto"),
            "{s}"
        );
        assert!(s.contains("delete rule inet cni_plugins_masquerade masq_checks handle 9\n"));
        let checks = [
            nl_rule(
                CHAIN,
                4,
                Some(&names::nft_masq_comment("n", "eth0", "c")),
                Verdict::Accept,
            ),
            nl_rule(
                CHAIN,
                5,
                Some(&names::nft_masq_comment("n", "eth1", "c")),
                Verdict::Accept,
            ),
            nl_rule(CHAIN, 6, None, Verdict::Accept),
        ];
        let ch = teardown_changes(&checks, "n", "eth0", "c");
        assert!(matches!(
            ch.as_slice(),
            [Change::DeleteRule { handle: 4, .. }]
        ));
    }

    #[test]
    fn gc_follows_the_reference_vectors() {
        let existing = vec![
            rule(
                2,
                "6fd94d501e58f0aa-d750b2c8f0f25d5f, net: unit-test, if: eth0, id: two",
            ),
            rule(
                3,
                "6fd94d501e58f0aa-a4d4adb82b669cfe, net: unit-test, if: eth0, id: three",
            ),
            rule(
                4,
                "82783ef24bdc7036-acb19d111858e348, net: alternate, if: net1, id: three",
            ),
            rule(
                7,
                "6fd94d501e58f0aa-e766de567ef6c543, net: unit-test, if: eth0, id: four",
            ),
        ];
        let att = |id: &str, ifn: &str| Attachment {
            container_id: id.into(),
            ifname: ifn.into(),
        };
        let s = gc_script(
            &existing,
            "unit-test",
            &[att("two", "eth0"), att("three", "eth0"), att("one", "eth0")],
        );
        assert_eq!(
            s,
            "delete rule inet cni_plugins_masquerade masq_checks handle 7\n"
        );
        assert_eq!(
            gc_script(&existing, "alternate", &[att("three", "net1")]),
            ""
        );
        assert_eq!(gc_script(&existing, "unit-test", &[]).lines().count(), 3);
    }

    #[test]
    fn verify_reads_saddr_from_the_listing() {
        let c = "d23676b4f2d9fe04-ebce0e3dd4dafae3, net: mynet, if: eth0, id: abc123";
        let listing: Value = serde_json::from_str(&format!(
            r#"{{"nftables":[{{"rule":{{"family":"inet","table":"cni_plugins_masquerade","chain":"postrouting","handle":3,"expr":[]}}}},
            {{"rule":{{"family":"inet","table":"cni_plugins_masquerade","chain":"masq_checks","handle":9,"comment":"{c}",
            "expr":[{{"match":{{"op":"==","left":{{"payload":{{"protocol":"ip","field":"saddr"}}}},"right":"10.88.0.2"}}}}]}}}}]}}"#
        ))
        .unwrap();
        let a: Vec<IpNet> = vec!["10.88.0.2/16".parse().unwrap()];
        assert!(verify(Some(&listing), "mynet", "eth0", "abc123", &a).is_ok());
        let b: Vec<IpNet> = vec!["10.88.0.3/16".parse().unwrap()];
        assert!(verify(Some(&listing), "mynet", "eth0", "abc123", &b).is_err());
        assert!(verify(None, "mynet", "eth0", "abc123", &a).is_err());
    }
}
