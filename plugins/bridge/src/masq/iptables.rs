//! The iptables masquerade backend, byte-compatible with the reference
//! (`pkg/ip/ipmasq_iptables_linux.go`): table `nat`, per-container chain
//! `CNI-<hash(net + id)>`, comment `name: "<net>" id: "<id>"`.
//!
//! Everything here is pure planning over one `iptables-save -t nat` listing: the caller lists
//! once, plans, and applies the plan with one `iptables-restore --noflush` per family.
//! Listed rules are compared semantically (addresses parsed, not text), so rules written by the
//! reference (`-A C -d 10.88.0.2/16 -j ACCEPT -m comment …`) and ours match.

use cni::gc::{Attachment, has_container};
use cni_kernel::firewall::Family;
use cni_kernel::firewall::iptables::{Restore, Ruleset, SavedRule, argv};
use cni_kernel::firewall::{names, xt};
use cni_kernel::nftables::{ChainInfo, Change, NETWORK_HEADER, Rule};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The table the masquerade rules live in.
pub const TABLE: &str = "nat";
/// The base chain the attachments' jumps are in.
pub(crate) const POSTROUTING: &str = "POSTROUTING";

/// Multicast destinations that are never masqueraded.
pub fn multicast(family: Family) -> &'static str {
    match family {
        Family::V4 => "224.0.0.0/4",
        Family::V6 => "ff00::/8",
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The parts of a rule that identify it, as iptables itself compares rules.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    chain: String,
    src: Option<IpNet>,
    dst: Option<(bool, IpNet)>,
    target: String,
    comment: Option<String>,
}

impl Key {
    fn of(rule: &SavedRule) -> Key {
        let mut k = Key {
            chain: rule.chain.clone(),
            src: None,
            dst: None,
            target: String::new(),
            comment: None,
        };
        let mut negate = false;
        let mut it = rule.args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "!" => {
                    negate = true;
                    continue;
                }
                "-s" | "--source" => k.src = it.next().and_then(|v| parse_net(v)),
                "-d" | "--destination" => {
                    k.dst = it
                        .next()
                        .and_then(|v| parse_net(v))
                        .map(|n| (negate, n.trunc()))
                }
                "-j" | "--jump" => k.target = it.next().cloned().unwrap_or_default(),
                "--comment" => k.comment = it.next().cloned(),
                _ => {}
            }
            negate = false;
        }
        k
    }
}

/// One rule we want, with its argv in the order `iptables-save` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    key: Key,
    /// The chain the rule goes into.
    pub chain: String,
    /// The rule's arguments after `-A <chain>`.
    pub args: Vec<String>,
}

/// The reference's rules for one attachment's addresses (all of one family), in the order the
/// reference appends them: per address, ACCEPT to its subnet, MASQUERADE of the rest, then the
/// POSTROUTING jump.
pub fn wanted(net: &str, container_id: &str, addrs: &[IpNet]) -> Vec<Wanted> {
    let chain = names::chain_name(net, container_id);
    let comment = names::comment(net, container_id);
    let mut out: Vec<Wanted> = Vec::new();
    for a in addrs {
        let family = Family::of(&a.addr());
        let subnet = a.trunc();
        let host = IpNet::from(a.addr());
        let mcast = parse_net(multicast(family));
        let rules = [
            Wanted {
                key: Key {
                    chain: chain.clone(),
                    src: None,
                    dst: Some((false, subnet)),
                    target: "ACCEPT".into(),
                    comment: Some(comment.clone()),
                },
                chain: chain.clone(),
                args: argv(&[
                    "-d",
                    &subnet.to_string(),
                    "-m",
                    "comment",
                    "--comment",
                    &comment,
                    "-j",
                    "ACCEPT",
                ]),
            },
            Wanted {
                key: Key {
                    chain: chain.clone(),
                    src: None,
                    dst: mcast.map(|m| (true, m)),
                    target: "MASQUERADE".into(),
                    comment: Some(comment.clone()),
                },
                chain: chain.clone(),
                args: argv(&[
                    "!",
                    "-d",
                    multicast(family),
                    "-m",
                    "comment",
                    "--comment",
                    &comment,
                    "-j",
                    "MASQUERADE",
                ]),
            },
            Wanted {
                key: Key {
                    chain: POSTROUTING.into(),
                    src: Some(host),
                    dst: None,
                    target: chain.clone(),
                    comment: Some(comment.clone()),
                },
                chain: POSTROUTING.into(),
                args: argv(&[
                    "-s",
                    &host.to_string(),
                    "-m",
                    "comment",
                    "--comment",
                    &comment,
                    "-j",
                    &chain,
                ]),
            },
        ];
        for r in rules {
            if !out.iter().any(|o| o.key == r.key) {
                out.push(r);
            }
        }
    }
    out
}

/// The restore transaction that adds what is missing from `listing` (the reference's "create
/// the chain if absent, then unique-append each rule").
pub fn plan_setup(listing: &Ruleset, net: &str, container_id: &str, addrs: &[IpNet]) -> Restore {
    let chain = names::chain_name(net, container_id);
    let mut tx = Restore::new(TABLE);
    if !listing.has_chain(&chain) {
        tx.declare_chain(&chain);
    }
    let present: Vec<Key> = listing.rules.iter().map(Key::of).collect();
    for w in wanted(net, container_id, addrs) {
        if !present.contains(&w.key) {
            tx.append(&w.chain, &w.args);
        }
    }
    tx
}

/// The ADD transaction for a container whose chain does not exist yet, planned without any
/// listing: `-N <chain>` (which makes the whole transaction fail if the chain exists, e.g. a
/// second interface of the container or a re-ADD after a crash; the caller then falls back
/// to [`plan_setup`] over a listing), then every rule. A new chain cannot be the target of
/// an existing jump, so nothing here can duplicate a rule.
pub fn plan_new(net: &str, container_id: &str, addrs: &[IpNet]) -> Restore {
    let mut tx = Restore::new(TABLE);
    if addrs.is_empty() {
        return tx;
    }
    tx.new_chain(&names::chain_name(net, container_id));
    for w in wanted(net, container_id, addrs) {
        tx.append(&w.chain, &w.args);
    }
    tx
}

/// [`plan_new`] as one nf_tables transaction (`iptables-nft` hosts): create the chain (the
/// transaction fails if it exists), append every rule, encoded exactly as `iptables-nft`
/// would ([`xt`]). `None` if a rule cannot be encoded (never for the reference's rules).
pub fn plan_new_nf(
    family: Family,
    net: &str,
    container_id: &str,
    addrs: &[IpNet],
) -> Option<Vec<Change>> {
    if addrs.is_empty() {
        return Some(Vec::new());
    }
    let nf = family.nf_family();
    let mut out = vec![Change::AddChain {
        family: nf,
        table: TABLE.to_string(),
        chain: names::chain_name(net, container_id),
    }];
    for w in wanted(net, container_id, addrs) {
        out.push(xt::append(family, TABLE, &w.chain, &w.args)?);
    }
    Some(out)
}

/// [`plan_new_nf`]'s `plan` for a node where `iptables-nft` has not created the `nat` table
/// yet: the table, the attachment's chain, then `POSTROUTING` as `iptables-restore` creates
/// it when the first rule needs it (type nat, hook postrouting, priority 100, x_tables'
/// `NF_IP_PRI_NAT_SRC`), then the rules; the same objects in the same order.
pub fn with_nat_declared(family: Family, plan: Vec<Change>) -> Vec<Change> {
    let mut out = vec![Change::DeclareTable {
        family: family.nf_family(),
        table: TABLE.to_string(),
        comment: None,
    }];
    let mut plan = plan.into_iter();
    out.extend(plan.next());
    out.extend(xt::nat_base_chain(family, POSTROUTING));
    out.extend(plan);
    out
}

/// The DEL transaction when the attachment's addresses are known, planned without a
/// listing: delete the POSTROUTING jump of each address exactly as the reference wrote it,
/// then flush and delete the chain. It fails as a whole if any of it is absent or the chain
/// is still referenced (another interface of the container); the caller then falls back to
/// [`plan_teardown`] over a listing.
pub fn plan_exact_teardown(net: &str, container_id: &str, addrs: &[IpNet]) -> Restore {
    let chain = names::chain_name(net, container_id);
    let mut tx = Restore::new(TABLE);
    for w in wanted(net, container_id, addrs) {
        if w.chain == POSTROUTING {
            tx.delete(&w.chain, &w.args);
        }
    }
    tx.flush_chain(&chain).delete_chain(&chain);
    tx
}

/// The source network an `iptables-nft` rule matches (`-s`), read from its nf_tables
/// expressions: a load of the source address field, an optional mask, a comparison.
pub fn nf_source(rule: &Rule, family: Family) -> Option<IpNet> {
    let (offset, size) = match family {
        Family::V4 => (12, 4),
        Family::V6 => (8, 16),
    };
    let (data, mask) = rule.payload_eq(NETWORK_HEADER, offset)?;
    if data.is_empty() || data.len() > size {
        return None;
    }
    let prefix = match &mask {
        Some(m) => m.iter().map(|b| b.count_ones()).sum::<u32>(),
        None => data.len() as u32 * 8,
    };
    let mut bytes = [0u8; 16];
    bytes[..data.len()].copy_from_slice(&data);
    let ip = match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(bytes)),
    };
    IpNet::new(ip, u8::try_from(prefix).ok()?).ok()
}

/// The DEL changes for one family computed from nf_tables directly (`iptables-nft` hosts):
/// the same decisions as [`plan_teardown`], over the rules of `POSTROUTING` and the chain's
/// reference count. `None` when the jumps found in `POSTROUTING` do not account for every
/// reference to the chain (someone jumps to it from elsewhere): the caller then uses the
/// listing, which sees every chain. `chain_info` is the chain and its number of rules.
pub fn plan_teardown_nf(
    family: Family,
    postrouting: &[Rule],
    chain_info: Option<(&ChainInfo, usize)>,
    net: &str,
    container_id: &str,
    addrs: Option<&[IpNet]>,
) -> Option<Vec<Change>> {
    let chain = names::chain_name(net, container_id);
    let Some((info, own_rules)) = chain_info else {
        // No chain, so no jump to it either.
        return Some(Vec::new());
    };
    let nf = family.nf_family();
    let jumps: Vec<&Rule> = postrouting
        .iter()
        .filter(|r| r.jump_target() == Some(chain.as_str()))
        .collect();
    // A chain's reference count is its own rules plus the jumps to it.
    if jumps.len() + own_rules != info.use_count as usize {
        return None;
    }
    let change = |c: &str| (nf, TABLE.to_string(), c.to_string());
    let mut out = Vec::new();
    let mut kept = 0;
    for r in jumps {
        let remove = match addrs {
            Some(list) if !list.is_empty() => match nf_source(r, family) {
                Some(src) => list.iter().any(|a| src.contains(&a.addr())),
                None => true,
            },
            _ => true,
        };
        if remove {
            let (family, table, chain) = change(POSTROUTING);
            out.push(Change::DeleteRule {
                family,
                table,
                chain,
                handle: r.handle,
            });
        } else {
            kept += 1;
        }
    }
    if kept == 0 {
        let (family, table, c) = change(&chain);
        out.push(Change::FlushChain {
            family,
            table: table.clone(),
            chain: c.clone(),
        });
        out.push(Change::DeleteChain {
            family,
            table,
            chain: c,
        });
    }
    Some(out)
}

/// The restore transaction that removes one attachment's rules.
///
/// With `addrs` known, only the jumps from those addresses are removed (the chain is shared by
/// every interface of the container, as in the reference), and the chain goes when no jump to
/// it is left. Without addresses (interface and `prevResult` both gone), every jump to the
/// chain and the chain itself are removed: the chain name and the comment come from
/// `(network, container ID)` alone.
pub fn plan_teardown(
    listing: &Ruleset,
    net: &str,
    container_id: &str,
    addrs: Option<&[IpNet]>,
) -> Restore {
    let chain = names::chain_name(net, container_id);
    let mut tx = Restore::new(TABLE);
    let jumps: Vec<&SavedRule> = listing
        .rules
        .iter()
        .filter(|r| r.chain != chain && r.target() == Some(chain.as_str()))
        .collect();
    let mut kept = 0;
    for r in &jumps {
        let remove = match addrs {
            Some(list) if !list.is_empty() => {
                let src = Key::of(r).src;
                match src {
                    Some(s) => list.iter().any(|a| s.contains(&a.addr())),
                    None => true,
                }
            }
            _ => true,
        };
        if remove {
            tx.delete_saved(r);
        } else {
            kept += 1;
        }
    }
    if kept == 0 && listing.has_chain(&chain) {
        tx.flush_chain(&chain);
        tx.delete_chain(&chain);
    }
    tx
}

/// The restore transaction that removes the rules of every container of `net` that is not in
/// `valid` (matched by container ID: the iptables rules carry no ifname).
pub fn plan_gc(listing: &Ruleset, net: &str, valid: &[Attachment]) -> (Restore, Vec<String>) {
    let stale = stale_ids(listing.rules.iter().filter_map(|r| r.comment()), net, valid);
    let mut tx = Restore::new(TABLE);
    for id in &stale {
        let chain = names::chain_name(net, id);
        for r in listing
            .rules
            .iter()
            .filter(|r| r.chain != chain && r.target() == Some(chain.as_str()))
        {
            tx.delete_saved(r);
        }
        if listing.has_chain(&chain) {
            tx.flush_chain(&chain);
            tx.delete_chain(&chain);
        }
    }
    (tx, stale)
}

/// The container IDs of `net` named by rule comments (`name: "<net>" id: "<id>"`) that are not
/// in `valid`, in the order first seen, each once.
pub fn stale_ids<S: AsRef<str>>(
    comments: impl Iterator<Item = S>,
    net: &str,
    valid: &[Attachment],
) -> Vec<String> {
    let prefix = format!("name: \"{net}\" id: \"");
    let mut stale: Vec<String> = Vec::new();
    for c in comments {
        let Some(id) = c
            .as_ref()
            .strip_prefix(&prefix)
            .and_then(|c| c.strip_suffix('"'))
        else {
            continue;
        };
        if !has_container(valid, id) && !stale.iter().any(|s| s == id) {
            stale.push(id.to_string());
        }
    }
    stale
}

/// Verifies that every rule of the attachment is in `listing`; the error names the missing
/// rule.
pub fn verify(
    listing: &Ruleset,
    net: &str,
    container_id: &str,
    addrs: &[IpNet],
) -> Result<(), String> {
    let chain = names::chain_name(net, container_id);
    if !listing.has_chain(&chain) {
        return Err(format!("masquerade chain {chain} not found in table nat"));
    }
    let present: Vec<Key> = listing.rules.iter().map(Key::of).collect();
    for w in wanted(net, container_id, addrs) {
        if !present.contains(&w.key) {
            return Err(format!(
                "masquerade rule missing from table nat: -A {} {}",
                w.chain,
                w.args.join(" ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAIN: &str = "CNI-70a29d9dc18bc4d652ea5d59";

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// What the reference left in `iptables-save -t nat` (observed, Debian 1.1.1).
    const REFERENCE_V4: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-70a29d9dc18bc4d652ea5d59 - [0:0]
-A POSTROUTING -s 10.88.0.2/32 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j CNI-70a29d9dc18bc4d652ea5d59
-A CNI-70a29d9dc18bc4d652ea5d59 -d 10.88.0.0/16 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j ACCEPT
-A CNI-70a29d9dc18bc4d652ea5d59 ! -d 224.0.0.0/4 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j MASQUERADE
COMMIT
"#;

    const EMPTY: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";

    #[test]
    fn setup_on_empty_table_writes_the_reference_rules() {
        let tx = plan_setup(
            &Ruleset::parse(EMPTY),
            "mynet",
            "abc123",
            &nets(&["10.88.0.2/16"]),
        );
        assert_eq!(
            tx.render(),
            format!(
                "*nat\n:{CHAIN} - [0:0]\n\
                 -A {CHAIN} -d 10.88.0.0/16 -m comment --comment \"name: \\\"mynet\\\" id: \\\"abc123\\\"\" -j ACCEPT\n\
                 -A {CHAIN} ! -d 224.0.0.0/4 -m comment --comment \"name: \\\"mynet\\\" id: \\\"abc123\\\"\" -j MASQUERADE\n\
                 -A POSTROUTING -s 10.88.0.2/32 -m comment --comment \"name: \\\"mynet\\\" id: \\\"abc123\\\"\" -j {CHAIN}\n\
                 COMMIT\n"
            )
        );
        let v6 = plan_setup(
            &Ruleset::parse(EMPTY),
            "mynet",
            "abc123",
            &nets(&["2001:db8:1::2/64"]),
        )
        .render();
        assert!(v6.contains("-d 2001:db8:1::/64 "), "{v6}");
        assert!(v6.contains("! -d ff00::/8 "), "{v6}");
        assert!(v6.contains("-A POSTROUTING -s 2001:db8:1::2/128 "), "{v6}");
    }

    #[test]
    fn setup_is_idempotent_against_the_reference_listing() {
        let rs = Ruleset::parse(REFERENCE_V4);
        assert!(plan_setup(&rs, "mynet", "abc123", &nets(&["10.88.0.2/16"])).is_empty());
        assert!(verify(&rs, "mynet", "abc123", &nets(&["10.88.0.2/16"])).is_ok());
        // A second address in another subnet adds only what is new (shared MASQUERADE rule).
        let tx = plan_setup(&rs, "mynet", "abc123", &nets(&["10.99.0.5/24"])).render();
        assert_eq!(tx.lines().count(), 4, "{tx}");
        assert!(tx.contains("-d 10.99.0.0/24"));
        assert!(tx.contains("-s 10.99.0.5/32"));
    }

    #[test]
    fn verify_names_the_missing_rule() {
        let text = REFERENCE_V4.replace(
            "-A CNI-70a29d9dc18bc4d652ea5d59 ! -d 224.0.0.0/4 -m comment --comment \"name: \\\"mynet\\\" id: \\\"abc123\\\"\" -j MASQUERADE\n",
            "",
        );
        let e = verify(
            &Ruleset::parse(&text),
            "mynet",
            "abc123",
            &nets(&["10.88.0.2/16"]),
        )
        .unwrap_err();
        assert!(e.contains("MASQUERADE"), "{e}");
        let e = verify(
            &Ruleset::parse(EMPTY),
            "mynet",
            "abc123",
            &nets(&["10.88.0.2/16"]),
        )
        .unwrap_err();
        assert!(e.contains(CHAIN), "{e}");
    }

    #[test]
    fn teardown_with_and_without_addresses() {
        let rs = Ruleset::parse(REFERENCE_V4);
        let expect_all = format!(
            "*nat\n-D POSTROUTING -s 10.88.0.2/32 -m comment --comment \"name: \\\"mynet\\\" id: \\\"abc123\\\"\" -j {CHAIN}\n-F {CHAIN}\n-X {CHAIN}\nCOMMIT\n"
        );
        assert_eq!(
            plan_teardown(&rs, "mynet", "abc123", None).render(),
            expect_all
        );
        assert_eq!(
            plan_teardown(&rs, "mynet", "abc123", Some(&nets(&["10.88.0.2/16"]))).render(),
            expect_all
        );
        // Another interface of the same container keeps the shared chain.
        let tx = plan_teardown(&rs, "mynet", "abc123", Some(&nets(&["10.77.0.9/24"])));
        assert!(tx.is_empty());
        // Nothing of this attachment: nothing to do, no process.
        assert!(plan_teardown(&rs, "othernet", "abc123", None).is_empty());
        assert!(plan_teardown(&Ruleset::parse(EMPTY), "mynet", "abc123", None).is_empty());
    }

    fn nf_rule(chain: &str, handle: u64, src: Option<[u8; 4]>, target: &str) -> Rule {
        let mut exprs = Vec::new();
        if let Some(a) = src {
            exprs.push(cni_kernel::nftables::Expr::Payload {
                base: NETWORK_HEADER,
                offset: 12,
                len: 4,
            });
            exprs.push(cni_kernel::nftables::Expr::Cmp {
                op: 0,
                data: a.to_vec(),
            });
        }
        exprs.push(cni_kernel::nftables::Expr::Immediate {
            verdict: Some(cni_kernel::nftables::Verdict::Jump(target.into())),
            value: Vec::new(),
        });
        Rule {
            chain: chain.into(),
            handle,
            comment: None,
            exprs,
            raw_exprs: Vec::new(),
            compat: None,
        }
    }

    #[test]
    fn plans_without_a_listing() {
        let tx = plan_new("mynet", "abc123", &nets(&["10.88.0.2/16"])).render();
        assert!(
            tx.starts_with(&format!("*nat\n-N {CHAIN}\n-A {CHAIN} -d 10.88.0.0/16 ")),
            "{tx}"
        );
        assert!(tx.contains("-A POSTROUTING -s 10.88.0.2/32 "));
        assert!(plan_new("mynet", "abc123", &[]).is_empty());
        let ch = plan_new_nf(Family::V4, "mynet", "abc123", &nets(&["10.88.0.2/16"])).unwrap();
        assert!(matches!(&ch[0], Change::AddChain { chain, .. } if chain == CHAIN));
        assert_eq!(ch.len(), 4);
        let del = plan_exact_teardown("mynet", "abc123", &nets(&["10.88.0.2/16"])).render();
        assert_eq!(
            del,
            format!(
                "*nat\n-D POSTROUTING -s 10.88.0.2/32 -m comment --comment \"name: \\\"mynet\\\" id: \\\"abc123\\\"\" -j {CHAIN}\n-F {CHAIN}\n-X {CHAIN}\nCOMMIT\n"
            )
        );
    }

    #[test]
    fn netlink_teardown_plan() {
        let post = vec![
            nf_rule(POSTROUTING, 5, Some([10, 88, 0, 2]), CHAIN),
            nf_rule(POSTROUTING, 6, Some([10, 99, 0, 7]), CHAIN),
            nf_rule(POSTROUTING, 7, Some([10, 88, 0, 3]), "CNI-other"),
        ];
        assert_eq!(
            nf_source(&post[0], Family::V4),
            Some("10.88.0.2/32".parse().unwrap())
        );
        let info = ChainInfo {
            handle: 3,
            use_count: 4,
            base: false,
            comment: None,
        };
        // Everything of the container (2 jumps + its 2 rules = the count).
        let all =
            plan_teardown_nf(Family::V4, &post, Some((&info, 2)), "mynet", "abc123", None).unwrap();
        assert_eq!(all.len(), 4);
        // One interface's address: its jump only, the chain stays for the other.
        let one = plan_teardown_nf(
            Family::V4,
            &post,
            Some((&info, 2)),
            "mynet",
            "abc123",
            Some(&nets(&["10.88.0.2/16"])),
        )
        .unwrap();
        assert!(matches!(
            one.as_slice(),
            [Change::DeleteRule { handle: 5, .. }]
        ));
        // A jump from another chain is not in POSTROUTING: undecidable here.
        assert!(
            plan_teardown_nf(Family::V4, &post, Some((&info, 1)), "mynet", "abc123", None)
                .is_none()
        );
        assert_eq!(
            plan_teardown_nf(Family::V4, &post, None, "mynet", "abc123", None),
            Some(Vec::new())
        );
    }

    #[test]
    fn gc_removes_only_invalid_containers_of_this_network() {
        let mut text = REFERENCE_V4.replace("COMMIT\n", "");
        let other = names::chain_name("mynet", "keep1");
        let foreign = names::chain_name("othernet", "zzz");
        text.push_str(&format!(
            ":{other} - [0:0]\n-A POSTROUTING -s 10.88.0.3/32 -m comment --comment \"name: \\\"mynet\\\" id: \\\"keep1\\\"\" -j {other}\n\
             :{foreign} - [0:0]\n-A POSTROUTING -s 10.88.0.4/32 -m comment --comment \"name: \\\"othernet\\\" id: \\\"zzz\\\"\" -j {foreign}\nCOMMIT\n"
        ));
        let rs = Ruleset::parse(&text);
        let valid = vec![Attachment {
            container_id: "keep1".into(),
            ifname: "eth0".into(),
        }];
        let (tx, stale) = plan_gc(&rs, "mynet", &valid);
        assert_eq!(stale, vec!["abc123".to_string()]);
        let out = tx.render();
        assert!(out.contains(&format!("-X {CHAIN}")));
        assert!(!out.contains(&other) && !out.contains(&foreign), "{out}");
        let (tx, _) = plan_gc(&rs, "mynet", &[]);
        assert!(tx.render().contains(&format!("-X {other}")));
    }
}
