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
use cni_kernel::firewall::names;
use ipnet::IpNet;
use std::net::IpAddr;

/// The table the masquerade rules live in.
pub const TABLE: &str = "nat";
const POSTROUTING: &str = "POSTROUTING";

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
    let prefix = format!("name: \"{net}\" id: \"");
    let mut stale: Vec<String> = Vec::new();
    for r in &listing.rules {
        let Some(id) = r
            .comment()
            .and_then(|c| c.strip_prefix(&prefix))
            .and_then(|c| c.strip_suffix('"'))
        else {
            continue;
        };
        if !has_container(valid, id) && !stale.iter().any(|s| s == id) {
            stale.push(id.to_string());
        }
    }
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
