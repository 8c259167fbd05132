//! The nftables backend: the reference's `ip|ip6 cni_hostport` layout (`plugins.md` §3.4).
//! ADD writes what is missing as one `nft -f -` script for **both** families, or, when only
//! the container's own rules are missing (every ADD after a network's first) or nothing
//! exists yet (a network's first ADD without conditions), commits the same over netlink,
//! encoded as `nft` encodes it (no process). DEL reads and removes over
//! netlink; a JSON listing per family is the fallback where rule handles are needed.
//!
//! Differences from the reference, all invisible to its DEL and CHECK (they only look at
//! chain names and comments):
//! * hairpin masquerading matches the container's **subnet** as source (as the iptables
//!   backend does) and only connections that were DNATed (`ct status dnat`), so that another
//!   container of the same bridge can use a published port through the node or bridge address
//!   without `br_netfilter`; `masqAll` is honoured (any source);
//! * a per-network record chain `attachments_<h16(network)>` holds one never-jumped-to rule per
//!   attachment and family, `ip daddr <container IP> return comment "<container ID>"`. nft rule
//!   comments carry no network name, so this record is what lets GC attribute rules to a
//!   network, and lets DEL remove only the rules of *this* network's attachment (a container
//!   attached to two networks has the same ID in both).

use crate::config::{Config, is_v6};
use crate::error::PortmapError;
use cni_kernel::firewall::names::h16;
use cni_kernel::firewall::nft::{self, NftRule};
use cni_kernel::nftables::{
    CMP_EQ, CMP_NEQ, CT_STATUS, Change, Expr, FIB_F_DADDR, FIB_RESULT_ADDRTYPE, HOOK_OUTPUT,
    HOOK_POSTROUTING, HOOK_PREROUTING, Hook, IPS_DST_NAT, META_L4PROTO, NAT_DNAT,
    NAT_PROTO_SPECIFIED, NfFamily, NfTables, RTN_LOCAL, Rule, TRANSPORT_HEADER, Verdict,
    addr_match, octets,
};
use ipnet::IpNet;
use serde_json::Value;
use std::net::IpAddr;

/// The table name (in families `ip` and `ip6`).
pub const TABLE: &str = "cni_hostport";
/// DNAT rules of mappings.
pub const HOSTPORTS: &str = "hostports";
/// Legacy chain of hostIP mappings (kept, as the reference keeps it for upgrades).
pub const HOSTIP_HOSTPORTS: &str = "hostip_hostports";
/// Jumps to both of the above.
pub const HOSTPORTS_ALL: &str = "hostports_all";
/// Masquerading for hairpin and localhost traffic.
pub const MASQUERADING: &str = "masquerading";
/// Chains holding per-container rules (what DEL searches, as the reference does).
pub const RULE_CHAINS: [&str; 3] = [HOSTPORTS, HOSTIP_HOSTPORTS, MASQUERADING];
/// nft's comment length limit.
pub const COMMENT_MAX: usize = 128;

/// `ip` or `ip6`.
pub fn family(v6: bool) -> &'static str {
    if v6 { "ip6" } else { "ip" }
}

/// The per-network record chain.
pub fn record_chain(net: &str) -> String {
    format!("attachments_{}", h16(net))
}

/// The rule comment: the container ID, cut to nft's 128-byte limit (the reference would fail
/// on longer IDs; ADD and DEL cut the same way).
pub fn comment(container_id: &str) -> String {
    let mut c = container_id.to_string();
    if c.len() > COMMENT_MAX {
        let mut cut = COMMENT_MAX;
        while !c.is_char_boundary(cut) {
            cut -= 1;
        }
        c.truncate(cut);
    }
    c
}

fn join_host_port(ip: IpAddr, port: u16) -> String {
    crate::iptables::ip_port(ip, port)
}

/// The comment of our last rule of `hostports_all` (see [`Current`]).
pub const ALL_MARKER: &str = "cni-rs v1";

/// The comment of our rule in `prerouting` and `output`: it names a digest of the
/// conditions the rule was written with.
pub fn base_marker(conditions: &str) -> String {
    format!("cni-rs v1 {}", h16(conditions))
}

/// Which of the chains the reference flushes and rewrites on every ADD (`hostports_all`,
/// `prerouting`, `output`) already hold exactly what this ADD would write. Flushing a chain
/// deletes rules, and a transaction that deletes makes the committing process wait for an
/// RCU grace period (10–25 ms); so ADD rewrites only what differs. The reference's
/// semantics stay: the last ADD's conditions apply table-wide (different conditions, a
/// different digest, a rewrite), and a chain the reference rewrote (no marker) is rewritten.
///
/// It also says which of the table and chains exist already: `add table`/`add chain` of an
/// existing base chain is an update that the kernel releases after a grace period too, so
/// they are written only for what is missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    /// `hostports_all` holds our two jumps.
    pub hostports_all: bool,
    /// `prerouting` holds our rule for these conditions.
    pub prerouting: bool,
    /// `output` holds our rule for these conditions.
    pub output: bool,
    /// The table exists.
    pub table: bool,
    /// The chains that exist.
    pub chains: Vec<String>,
}

impl Current {
    fn has(&self, chain: &str) -> bool {
        self.table && self.chains.iter().any(|c| c == chain)
    }

    /// Everything but a container's own rules is in place for `conf`: an ADD only appends
    /// those ([`rule_changes`]).
    pub fn complete(&self, conf: &Config) -> bool {
        self.table
            && self.hostports_all
            && self.prerouting
            && self.output
            && chains(conf, "").iter().all(|(c, _)| self.has(c))
    }
}

fn verdict(r: &Rule) -> Option<&Verdict> {
    r.exprs.iter().find_map(|e| match e {
        Expr::Immediate {
            verdict: Some(v), ..
        } => Some(v),
        _ => None,
    })
}

/// [`Current`] from the rules of the three chains (pure).
pub fn current_of(all: &[Rule], prerouting: &[Rule], output: &[Rule], conditions: &str) -> Current {
    let jump = |r: &Rule, c: &str| verdict(r) == Some(&Verdict::Jump(c.to_string()));
    let marker = base_marker(conditions);
    let base_ok = |rules: &[Rule]| matches!(rules, [r] if jump(r, HOSTPORTS_ALL) && r.comment.as_deref() == Some(marker.as_str()));
    Current {
        hostports_all: matches!(all, [a, b]
            if jump(a, HOSTIP_HOSTPORTS) && jump(b, HOSTPORTS)
                && b.comment.as_deref() == Some(ALL_MARKER)),
        prerouting: base_ok(prerouting),
        output: base_ok(output),
        table: false,
        chains: Vec::new(),
    }
}

/// [`Current`] of one family, read over netlink (nothing is current if that fails).
pub fn current(nf: &mut NfTables, conf: &Config, v6: bool) -> Current {
    let fam = nf_family(v6);
    if !nf.table_exists(fam, TABLE).unwrap_or(false) {
        return Current::default();
    }
    let mut rules = |c: &str| nf.rules(fam, TABLE, Some(c)).unwrap_or_default();
    let (all, pre, out) = (rules(HOSTPORTS_ALL), rules("prerouting"), rules("output"));
    let mut cur = current_of(&all, &pre, &out, &conf.conditions(v6).join(" "));
    cur.table = true;
    for c in [
        HOSTPORTS,
        HOSTIP_HOSTPORTS,
        HOSTPORTS_ALL,
        MASQUERADING,
        "output",
        "prerouting",
        &record_chain(&conf.network),
    ] {
        if nf.chain(fam, TABLE, c).ok().flatten().is_some() {
            cur.chains.push(c.to_string());
        }
    }
    cur
}

fn nf_family(v6: bool) -> NfFamily {
    if v6 { NfFamily::Ipv6 } else { NfFamily::Ipv4 }
}

/// The table's comment.
const TABLE_COMMENT: &str = "CNI portmap plugin";

/// The chains an ADD of `conf` needs, in the order the script declares them: name, hook (of
/// a base chain) and comment.
fn chain_decls(conf: &Config) -> Vec<(String, Option<Hook>, Option<String>)> {
    let nat = |num, priority| {
        Some(Hook {
            kind: "nat",
            num,
            priority,
        })
    };
    let mut out = vec![
        (HOSTPORTS.to_string(), None, None),
        (HOSTIP_HOSTPORTS.to_string(), None, None),
        (HOSTPORTS_ALL.to_string(), None, None),
    ];
    if conf.snat {
        out.push((MASQUERADING.to_string(), nat(HOOK_POSTROUTING, 100), None));
    }
    out.extend([
        ("output".to_string(), nat(HOOK_OUTPUT, -100), None),
        ("prerouting".to_string(), nat(HOOK_PREROUTING, -100), None),
        (
            record_chain(&conf.network),
            None,
            Some(format!("portmap attachments of network {}", conf.network)),
        ),
    ]);
    out
}

/// The chains an ADD of `conf` needs (in table `t`, `<family> cni_hostport`), each with the
/// line that creates it.
fn chains(conf: &Config, t: &str) -> Vec<(String, String)> {
    chain_decls(conf)
        .into_iter()
        .map(|(chain, hook, comment)| {
            let mut body = Vec::new();
            if let Some(h) = hook {
                let name = match h.num {
                    HOOK_PREROUTING => "prerouting",
                    HOOK_OUTPUT => "output",
                    _ => "postrouting",
                };
                body.push(format!(
                    "type {} hook {name} priority {} ;",
                    h.kind, h.priority
                ));
            }
            if let Some(c) = comment {
                body.push(format!("comment {} ;", nft::quote(&c)));
            }
            let line = if body.is_empty() {
                format!("add chain {t} {chain}")
            } else {
                format!("add chain {t} {chain} {{ {} }}", body.join(" "))
            };
            (chain, line)
        })
        .collect()
}

/// The ADD script for one container address (pure). Lines are `add`/`flush` commands of one
/// transaction; several families can be concatenated into one `nft -f -` input.
pub fn add_script(conf: &Config, container_id: &str, container: IpNet) -> Vec<String> {
    add_script_with(conf, container_id, container, Current::default())
}

/// [`add_script`] that leaves alone the chains `current` says are already right.
pub fn add_script_with(
    conf: &Config,
    container_id: &str,
    container: IpNet,
    current: Current,
) -> Vec<String> {
    let v6 = is_v6(&container.addr());
    let f = family(v6);
    let t = format!("{f} {TABLE}");
    let cmt = nft::quote(&comment(container_id));
    let ip = container.addr().to_canonical();
    let raw_conds = conf.conditions(v6).join(" ");
    let marker = nft::quote(&base_marker(&raw_conds));
    let conds = if raw_conds.is_empty() {
        String::new()
    } else {
        format!("{raw_conds} ")
    };
    let rec = record_chain(&conf.network);
    let mut out = Vec::new();
    if !current.table {
        out.push(format!(
            "add table {t} {{ comment {} ; }}",
            nft::quote(TABLE_COMMENT)
        ));
    }
    out.extend(
        chains(conf, &t)
            .into_iter()
            .filter(|(c, _)| !current.has(c))
            .map(|(_, line)| line),
    );
    if !current.hostports_all {
        out.extend([
            format!("flush chain {t} {HOSTPORTS_ALL}"),
            format!("add rule {t} {HOSTPORTS_ALL} jump {HOSTIP_HOSTPORTS}"),
            format!(
                "add rule {t} {HOSTPORTS_ALL} jump {HOSTPORTS} comment {}",
                nft::quote(ALL_MARKER)
            ),
        ]);
    }
    for (chain, ok) in [
        ("prerouting", current.prerouting),
        ("output", current.output),
    ] {
        if !ok {
            out.extend([
                format!("flush chain {t} {chain}"),
                format!(
                    "add rule {t} {chain} {conds}fib daddr type local jump {HOSTPORTS_ALL} comment {marker}"
                ),
            ]);
        }
    }
    for m in conf.mappings.iter().filter(|m| m.applies_to(v6)) {
        let daddr = m
            .host_ip_match()
            .map(|h| format!("{f} daddr {h} "))
            .unwrap_or_default();
        out.push(format!(
            "add rule {t} {HOSTPORTS} {daddr}{} dport {} dnat to {} comment {cmt}",
            m.protocol.as_str(),
            m.host_port,
            join_host_port(ip, m.container_port)
        ));
    }
    if conf.snat {
        if conf.masq_all {
            out.push(format!(
                "add rule {t} {MASQUERADING} {f} daddr {ip} ct status dnat masquerade comment {cmt}"
            ));
        } else {
            let subnet = container.trunc();
            out.push(format!(
                "add rule {t} {MASQUERADING} {f} saddr {subnet} {f} daddr {ip} ct status dnat masquerade comment {cmt}"
            ));
            if !v6 {
                out.push(format!(
                    "add rule {t} {MASQUERADING} {f} saddr 127.0.0.1 {f} daddr {ip} masquerade comment {cmt}"
                ));
            }
        }
    }
    out.push(format!(
        "add rule {t} {rec} {f} daddr {ip} return comment {cmt}"
    ));
    out
}

/// The container's own rules of [`add_script_with`] (DNAT per mapping, hairpin masquerading,
/// the record), one change each, encoded as `nft` 1.0 encodes those lines: an ADD that finds
/// everything else in place makes them over netlink, without starting `nft`. `None` unless
/// `current` is [complete](Current::complete) and every address is of the container's family
/// (an IPv4-mapped IPv6 address is left to `nft`).
pub fn rule_changes(
    conf: &Config,
    container_id: &str,
    container: IpNet,
    current: &Current,
) -> Option<Vec<Change>> {
    if !current.complete(conf) {
        return None;
    }
    container_changes(conf, container_id, container)
}

/// The whole of a network's first ADD on a node for one family ([`add_script_with`] when
/// nothing exists: the table, its chains, the jumps of `hostports_all`, `prerouting` and
/// `output`, then the container's rules), encoded as `nft` 1.0 encodes those lines. `None`
/// where the script holds what is not encoded here: conditions (nft text of the operator's
/// own), or a comment or container address [`rule_changes`] leaves to `nft`. With `declare`
/// false, only the container's rules (a second address of a family declared earlier in the
/// same transaction).
pub fn first_add_changes(
    conf: &Config,
    container_id: &str,
    container: IpNet,
    declare: bool,
) -> Option<Vec<Change>> {
    let v6 = is_v6(&container.addr());
    let mut out = Vec::new();
    if declare {
        if !conf.conditions(v6).is_empty() {
            return None;
        }
        let family = nf_family(v6);
        let table = || TABLE.to_string();
        out.push(Change::DeclareTable {
            family,
            table: table(),
            comment: Some(TABLE_COMMENT.to_string()),
        });
        for (chain, hook, comment) in chain_decls(conf) {
            if comment.as_deref().is_some_and(|c| !nft::plain(c)) {
                return None;
            }
            out.push(Change::DeclareChain {
                family,
                table: table(),
                chain,
                hook,
                comment,
            });
        }
        let flush = |chain: &str| Change::FlushChain {
            family,
            table: table(),
            chain: chain.to_string(),
        };
        let append = |chain: &str, exprs: Vec<Expr>, comment: Option<&str>| Change::AddRule {
            family,
            table: table(),
            chain: chain.to_string(),
            exprs,
            compat: None,
            comment: comment.map(str::to_string),
            first: false,
        };
        let jump = |c: &str| Expr::Immediate {
            verdict: Some(Verdict::Jump(c.to_string())),
            value: Vec::new(),
        };
        out.extend([
            flush(HOSTPORTS_ALL),
            append(HOSTPORTS_ALL, vec![jump(HOSTIP_HOSTPORTS)], None),
            append(HOSTPORTS_ALL, vec![jump(HOSTPORTS)], Some(ALL_MARKER)),
        ]);
        let marker = base_marker("");
        for chain in ["prerouting", "output"] {
            let local = vec![
                Expr::Fib {
                    result: FIB_RESULT_ADDRTYPE,
                    flags: FIB_F_DADDR,
                },
                Expr::Cmp {
                    op: CMP_EQ,
                    data: RTN_LOCAL.to_ne_bytes().to_vec(),
                },
                jump(HOSTPORTS_ALL),
            ];
            out.extend([flush(chain), append(chain, local, Some(&marker))]);
        }
    }
    out.extend(container_changes(conf, container_id, container)?);
    Some(out)
}

/// The container's own rules of [`add_script_with`] as changes (see [`rule_changes`]).
fn container_changes(conf: &Config, container_id: &str, container: IpNet) -> Option<Vec<Change>> {
    let v6 = is_v6(&container.addr());
    let cmt = comment(container_id);
    if container.addr().is_ipv6() != v6 || !nft::plain(&cmt) {
        return None;
    }
    let family = nf_family(v6);
    let ip = container.addr();
    let host = IpNet::from(ip);
    let rule = |chain: &str, exprs: Vec<Expr>| Change::AddRule {
        family,
        table: TABLE.to_string(),
        chain: chain.to_string(),
        exprs,
        compat: None,
        comment: Some(cmt.clone()),
        first: false,
    };
    let mut out = Vec::new();
    for m in conf.mappings.iter().filter(|m| m.applies_to(v6)) {
        let mut e = Vec::new();
        if m.host_ip_match().is_some() {
            let (_, h) = m.host_ip.as_ref()?;
            if h.is_ipv6() != v6 {
                return None;
            }
            e.extend(addr_match(IpNet::from(*h), true, true));
        }
        e.extend([
            Expr::Meta { key: META_L4PROTO },
            Expr::Cmp {
                op: CMP_EQ,
                data: vec![m.protocol.number()],
            },
            Expr::Payload {
                base: TRANSPORT_HEADER,
                offset: 2,
                len: 2,
            },
            Expr::Cmp {
                op: CMP_EQ,
                data: m.host_port.to_be_bytes().to_vec(),
            },
            Expr::Immediate {
                verdict: None,
                value: octets(ip),
            },
            Expr::ImmediateReg {
                reg: 2,
                value: m.container_port.to_be_bytes().to_vec(),
            },
            Expr::Nat {
                nat_type: NAT_DNAT,
                family,
                addr_reg: 1,
                proto_reg: 2,
                flags: NAT_PROTO_SPECIFIED,
            },
        ]);
        out.push(rule(HOSTPORTS, e));
    }
    if conf.snat {
        // `ct status dnat`: the status bits are in host byte order.
        let dnatted = [
            Expr::Ct { key: CT_STATUS },
            Expr::Bitwise {
                mask: IPS_DST_NAT.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            Expr::Cmp {
                op: CMP_NEQ,
                data: vec![0; 4],
            },
        ];
        let masq = |sources: Option<IpNet>, dnatted: &[Expr]| {
            let mut e = sources
                .map(|s| addr_match(s, false, true))
                .unwrap_or_default();
            e.extend(addr_match(host, true, true));
            e.extend_from_slice(dnatted);
            e.push(Expr::Masq);
            rule(MASQUERADING, e)
        };
        if conf.masq_all {
            out.push(masq(None, &dnatted));
        } else {
            out.push(masq(Some(container.trunc()), &dnatted));
            if !v6 {
                out.push(masq(Some(IpNet::from(IpAddr::from([127, 0, 0, 1]))), &[]));
            }
        }
    }
    let mut record = addr_match(host, true, true);
    record.push(Expr::Immediate {
        verdict: Some(Verdict::Return),
        value: Vec::new(),
    });
    out.push(rule(&record_chain(&conf.network), record));
    Some(out)
}

/// The ADD of every container address (with its family's [`Current`]) as one netlink
/// transaction: [`rule_changes`] where the table exists, [`first_add_changes`] where it does
/// not (a family is declared once, with the first of its addresses). `None` if any address
/// needs `nft`.
pub fn netlink_changes(
    conf: &Config,
    container_id: &str,
    ips: &[IpNet],
    currents: &[Current],
) -> Option<Vec<Change>> {
    let mut declared: Vec<bool> = Vec::new();
    ips.iter()
        .zip(currents)
        .map(|(ip, cur)| {
            if cur.table {
                return rule_changes(conf, container_id, *ip, cur);
            }
            let v6 = is_v6(&ip.addr());
            let declare = !declared.contains(&v6);
            declared.push(v6);
            first_add_changes(conf, container_id, *ip, declare)
        })
        .collect::<Option<Vec<_>>>()
        .map(|c| c.concat())
}

/// Applies the ADD for all container addresses in one transaction; what is already right is
/// read over netlink first. When only the container's own rules are missing (every ADD after
/// the network's first), they are committed over netlink ([`rule_changes`]), and so is a
/// first ADD that finds no table ([`first_add_changes`]); otherwise (a table written by the
/// reference or under other conditions, conditions of the operator's own) one `nft -f -`
/// (the only process of an nftables ADD) writes what is missing.
pub fn add(conf: &Config, container_id: &str, ips: &[IpNet]) -> Result<(), PortmapError> {
    let mut nf = NfTables::open().ok();
    let currents: Vec<Current> = ips
        .iter()
        .map(|ip| {
            nf.as_mut()
                .map(|nf| current(nf, conf, is_v6(&ip.addr())))
                .unwrap_or_default()
        })
        .collect();
    let changes = netlink_changes(conf, container_id, ips, &currents);
    // A refused transaction changed nothing: `nft` then applies the same rules (and reports
    // what is wrong, if anything).
    if let (Some(nf), Some(changes)) = (nf.as_mut(), changes)
        && nf.commit(&changes, None).is_ok()
    {
        return Ok(());
    }
    let mut script = String::new();
    for (ip, cur) in ips.iter().zip(currents) {
        for l in add_script_with(conf, container_id, *ip, cur) {
            script.push_str(&l);
            script.push('\n');
        }
    }
    nft::apply(&script)
        .map_err(|e| PortmapError::firewall("unable to set up nftables rules for port mappings", e))
}

/// Whether a JSON value (a rule's expressions) mentions `ip` as an address.
fn mentions(v: &Value, ip: &str) -> bool {
    match v {
        Value::String(s) => s == ip,
        Value::Array(a) => a.iter().any(|x| mentions(x, ip)),
        Value::Object(o) => o.values().any(|x| mentions(x, ip)),
        _ => false,
    }
}

/// The `(protocol, dport)` a rule matches, if any.
fn proto_dport(rule: &Value) -> Option<(String, u64)> {
    let exprs = rule.get("expr")?.as_array()?;
    exprs.iter().find_map(|e| {
        let m = e.get("match")?;
        let p = m.get("left")?.get("payload")?;
        if p.get("field")?.as_str()? != "dport" {
            return None;
        }
        Some((
            p.get("protocol")?.as_str()?.to_string(),
            m.get("right")?.as_u64()?,
        ))
    })
}

/// A DNAT rule's meaning: `(daddr, protocol, dport, to address, to port)`.
fn dnat_of(rule: &Value) -> Option<(Option<String>, String, u64, String, u64)> {
    let exprs = rule.get("expr")?.as_array()?;
    let (proto, dport) = proto_dport(rule)?;
    let daddr = exprs.iter().find_map(|e| {
        let m = e.get("match")?;
        let p = m.get("left")?.get("payload")?;
        if p.get("field")?.as_str()? != "daddr" {
            return None;
        }
        m.get("right")?.as_str().map(str::to_string)
    });
    let d = exprs.iter().find_map(|e| e.get("dnat"))?;
    Some((
        daddr,
        proto,
        dport,
        d.get("addr")?.as_str()?.to_string(),
        d.get("port")?.as_u64()?,
    ))
}

/// The per-container rules to remove from one family's listing: rules with the container's
/// comment in the reference's chains, restricted to this network's recorded addresses when a
/// record exists, plus the record rules. Returns `(rules, udp ports)`. Pure.
pub fn rules_to_remove(net: &str, container_id: &str, listing: &Value) -> (Vec<NftRule>, Vec<u16>) {
    let cmt = comment(container_id);
    let rec = record_chain(net);
    let all = nft::rules_with_json(listing);
    let recorded: Vec<(&NftRule, &Value)> = all
        .iter()
        .filter(|(r, _)| r.chain == rec && r.comment == cmt)
        .map(|(r, v)| (r, *v))
        .collect();
    let ips: Vec<String> = recorded
        .iter()
        .filter_map(|(_, v)| {
            v.get("expr")?
                .as_array()?
                .iter()
                .find_map(|e| e.get("match")?.get("right")?.as_str().map(str::to_string))
        })
        .collect();
    let mut out: Vec<NftRule> = recorded.iter().map(|(r, _)| (*r).clone()).collect();
    let mut ports = Vec::new();
    for (r, v) in &all {
        if !RULE_CHAINS.contains(&r.chain.as_str()) || r.comment != cmt {
            continue;
        }
        if !ips.is_empty() && !ips.iter().any(|ip| mentions(v, ip)) {
            continue;
        }
        if let Some((p, port)) = proto_dport(v)
            && p == "udp"
            && let Ok(port) = u16::try_from(port)
            && !ports.contains(&port)
        {
            ports.push(port);
        }
        out.push(r.clone());
    }
    (out, ports)
}

/// Addresses (as bytes) a rule compares with or loads: `cmp` data and `immediate` values.
fn values(r: &Rule) -> impl Iterator<Item = &[u8]> {
    r.exprs.iter().filter_map(|e| match e {
        Expr::Cmp { data, .. } => Some(data.as_slice()),
        Expr::Immediate {
            verdict: None,
            value,
        } => Some(value.as_slice()),
        _ => None,
    })
}

/// The UDP destination port a rule matches, if any (`meta l4proto udp` + `udp dport`).
fn udp_dport(r: &Rule) -> Option<u16> {
    if r.meta_eq(META_L4PROTO)? != [17] {
        return None;
    }
    match r.payload_eq(TRANSPORT_HEADER, 2)? {
        (d, None) if d.len() == 2 => Some(u16::from_be_bytes([d[0], d[1]])),
        _ => None,
    }
}

/// [`rules_to_remove`] over rules read with netlink (pure): `chains` are the record chain and
/// the reference's chains of one family, with their rules. Returns the deletions and the
/// UDP ports.
pub fn removal_nf(
    net: &str,
    container_id: &str,
    family: NfFamily,
    chains: &[(String, Vec<Rule>)],
) -> (Vec<Change>, Vec<u16>) {
    let cmt = comment(container_id);
    let rec = record_chain(net);
    let ours = |r: &&Rule| r.comment.as_deref() == Some(cmt.as_str());
    let recorded: Vec<&Rule> = chains
        .iter()
        .filter(|(c, _)| *c == rec)
        .flat_map(|(_, rs)| rs.iter().filter(ours))
        .collect();
    let ips: Vec<&[u8]> = recorded
        .iter()
        .filter_map(|r| values(r).find(|v| v.len() == 4 || v.len() == 16))
        .collect();
    let del = |chain: &str, r: &Rule| Change::DeleteRule {
        family,
        table: TABLE.to_string(),
        chain: chain.to_string(),
        handle: r.handle,
    };
    let mut out: Vec<Change> = recorded.iter().map(|r| del(&rec, r)).collect();
    let mut ports = Vec::new();
    for (chain, rules) in chains {
        if !RULE_CHAINS.contains(&chain.as_str()) {
            continue;
        }
        for r in rules.iter().filter(ours) {
            if !ips.is_empty() && !values(r).any(|v| ips.contains(&v)) {
                continue;
            }
            if let Some(p) = udp_dport(r)
                && !ports.contains(&p)
            {
                ports.push(p);
            }
            out.push(del(chain, r));
        }
    }
    (out, ports)
}

/// DEL over netlink: the rules are read and removed in one nf_tables transaction, no
/// process. `None` when that is not possible (and the `nft` tool is used).
fn del_nf(nf: &mut NfTables, net: &str, container_id: &str) -> Option<(Vec<u16>, Vec<u16>)> {
    for _ in 0..3 {
        let generation = nf.generation().ok()?;
        let mut changes = Vec::new();
        let mut ports = (Vec::new(), Vec::new());
        for v6 in [false, true] {
            let fam = nf_family(v6);
            if !nf.table_exists(fam, TABLE).ok()? {
                continue;
            }
            let mut chains = Vec::new();
            for c in RULE_CHAINS
                .iter()
                .map(|c| c.to_string())
                .chain([record_chain(net)])
            {
                let rules = nf.rules(fam, TABLE, Some(&c)).ok()?;
                chains.push((c, rules));
            }
            let (c, p) = removal_nf(net, container_id, fam, &chains);
            changes.extend(c);
            if v6 {
                ports.1 = p;
            } else {
                ports.0 = p;
            }
        }
        match nf.commit(&changes, Some(generation)) {
            Ok(()) => return Some(ports),
            Err(e) if e.is_restart() => continue,
            Err(_) => return None,
        }
    }
    None
}

/// `delete rule` lines for `rules`.
pub fn delete_script(rules: &[NftRule]) -> String {
    let mut s = String::new();
    for r in rules {
        s.push_str(&format!(
            "delete rule {} {} {} handle {}\n",
            r.family, r.table, r.chain, r.handle
        ));
    }
    s
}

fn list(v6: bool) -> Result<Option<Value>, PortmapError> {
    nft::list_table(family(v6), TABLE).map_err(|e| {
        PortmapError::firewall(format!("could not list table {} {TABLE}", family(v6)), e)
    })
}

/// DEL in both families: one listing per family that has the table, one transaction for all
/// removals. Returns `(ipv4 UDP ports, ipv6 UDP ports)` removed. Without `nft`, nothing can
/// exist: success. With `nf`, everything goes over netlink (no process).
pub fn del(
    nf: Option<&mut NfTables>,
    net: &str,
    container_id: &str,
) -> Result<(Vec<u16>, Vec<u16>), PortmapError> {
    if let Some(nf) = nf
        && let Some(ports) = del_nf(nf, net, container_id)
    {
        return Ok(ports);
    }
    if !nft::available() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut script = String::new();
    let mut ports = (Vec::new(), Vec::new());
    for v6 in [false, true] {
        let Some(listing) = list(v6)? else { continue };
        let (rules, p) = rules_to_remove(net, container_id, &listing);
        script.push_str(&delete_script(&rules));
        if v6 {
            ports.1 = p;
        } else {
            ports.0 = p;
        }
    }
    nft::apply(&script).map_err(|e| PortmapError::firewall("error deleting nftables rules", e))?;
    Ok(ports)
}

/// CHECK for one container address against a listing: table, chains, base-chain jumps and
/// every DNAT and masquerade rule of the container. Returns what is missing. Pure.
pub fn check_listing(
    conf: &Config,
    container_id: &str,
    container: IpNet,
    listing: Option<&Value>,
) -> Vec<String> {
    let v6 = is_v6(&container.addr());
    let f = family(v6);
    let Some(listing) = listing else {
        return vec![format!("table {f} {TABLE}")];
    };
    let mut missing = Vec::new();
    let chains = nft::chains(listing);
    let mut want_chains = vec![
        HOSTPORTS,
        HOSTIP_HOSTPORTS,
        HOSTPORTS_ALL,
        "prerouting",
        "output",
    ];
    if conf.snat {
        want_chains.push(MASQUERADING);
    }
    for c in want_chains {
        if !chains.iter().any(|x| x == c) {
            missing.push(format!("chain {f} {TABLE} {c}"));
        }
    }
    let all = nft::rules_with_json(listing);
    let jumps_to = |chain: &str, target: &str| {
        all.iter().any(|(r, v)| {
            r.chain == chain
                && v.get("expr").and_then(Value::as_array).is_some_and(|e| {
                    e.iter().any(|x| {
                        x.get("jump")
                            .and_then(|j| j.get("target"))
                            .and_then(Value::as_str)
                            == Some(target)
                    })
                })
        })
    };
    for (c, t) in [
        ("prerouting", HOSTPORTS_ALL),
        ("output", HOSTPORTS_ALL),
        (HOSTPORTS_ALL, HOSTPORTS),
        (HOSTPORTS_ALL, HOSTIP_HOSTPORTS),
    ] {
        if !jumps_to(c, t) {
            missing.push(format!("jump {t} in chain {f} {TABLE} {c}"));
        }
    }
    let cmt = comment(container_id);
    let ip = container.addr().to_canonical().to_string();
    let ours: Vec<&(NftRule, &Value)> = all.iter().filter(|(r, _)| r.comment == cmt).collect();
    for m in conf.mappings.iter().filter(|m| m.applies_to(v6)) {
        let want = (
            m.host_ip_match().map(|h| {
                h.parse::<IpAddr>()
                    .map(|a| a.to_canonical().to_string())
                    .unwrap_or_else(|_| h.to_string())
            }),
            m.protocol.as_str().to_string(),
            u64::from(m.host_port),
            ip.clone(),
            u64::from(m.container_port),
        );
        let found = ours.iter().any(|(r, v)| {
            (r.chain == HOSTPORTS || r.chain == HOSTIP_HOSTPORTS)
                && dnat_of(v).as_ref() == Some(&want)
        });
        if !found {
            missing.push(format!(
                "rule \"{}{} dport {} dnat to {}\" in chain {f} {TABLE} {HOSTPORTS}",
                m.host_ip_match()
                    .map(|h| format!("{f} daddr {h} "))
                    .unwrap_or_default(),
                m.protocol.as_str(),
                m.host_port,
                join_host_port(container.addr(), m.container_port)
            ));
        }
    }
    if conf.snat {
        let want = if v6 || conf.masq_all { 1 } else { 2 };
        let have = ours
            .iter()
            .filter(|(r, v)| r.chain == MASQUERADING && mentions(v, &ip))
            .count();
        if have < want {
            missing.push(format!(
                "{} masquerade rule(s) for {ip} in chain {f} {TABLE} {MASQUERADING} (found {have})",
                want
            ));
        }
    }
    missing
}

/// CHECK's question answered over netlink (no process): the table complete for this
/// configuration ([`current`]), and every rule of the container exactly as ADD writes it
/// ([`rule_changes`]). Only a yes counts: anything else is left to the `nft` listing, which
/// names what is missing.
fn present_nf(conf: &Config, container_id: &str, container: IpNet) -> bool {
    let v6 = is_v6(&container.addr());
    let fam = nf_family(v6);
    let Ok(mut nf) = NfTables::open() else {
        return false;
    };
    let cur = current(&mut nf, conf, v6);
    let Some(wanted) = rule_changes(conf, container_id, container, &cur) else {
        return false;
    };
    nf.holds(fam, TABLE, &wanted)
}

/// CHECK for one container address (one listing).
pub fn check(conf: &Config, container_id: &str, container: IpNet) -> Result<(), PortmapError> {
    let v6 = is_v6(&container.addr());
    if present_nf(conf, container_id, container) {
        return Ok(());
    }
    let listing = list(v6)?;
    let missing = check_listing(conf, container_id, container, listing.as_ref());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PortmapError::Check(format!(
            "nftables is missing: {}",
            missing.join("; ")
        )))
    }
}

/// [`gc`] over netlink: the IDs recorded in this network's record chain of each family, each
/// stale one removed as DEL removes it ([`del_nf`]); no process. `None` where nf_tables cannot
/// be read or changed that way (the `nft` listing then runs).
fn gc_nf(net: &str, is_valid: &dyn Fn(&str) -> bool) -> Option<GcRemoved> {
    let mut nf = NfTables::open().ok()?;
    let rec = record_chain(net);
    let mut ids: Vec<String> = Vec::new();
    for v6 in [false, true] {
        let fam = nf_family(v6);
        if !nf.table_exists(fam, TABLE).ok()? || nf.chain(fam, TABLE, &rec).ok()?.is_none() {
            continue;
        }
        let recorded = nf.rules(fam, TABLE, Some(&rec)).ok()?;
        ids.extend(recorded.into_iter().filter_map(|r| r.comment));
    }
    ids.retain(|id| !id.is_empty() && !is_valid(id));
    ids.sort();
    ids.dedup();
    let (mut p4, mut p6) = (Vec::new(), Vec::new());
    for id in &ids {
        let (a, b) = del_nf(&mut nf, net, id)?;
        p4.extend(a);
        p6.extend(b);
    }
    Some((ids, p4, p6))
}

/// Container IDs recorded for this network in one listing.
pub fn recorded_ids(net: &str, listing: &Value) -> Vec<String> {
    let rec = record_chain(net);
    let mut ids: Vec<String> = nft::rules(listing)
        .into_iter()
        .filter(|r| r.chain == rec && !r.comment.is_empty())
        .map(|r| r.comment)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// What GC removed: container IDs, and UDP host ports per family (IPv4, IPv6).
pub type GcRemoved = (Vec<String>, Vec<u16>, Vec<u16>);

/// GC: for each family, removes the rules of every recorded attachment of this network that
/// is not valid. Returns the removed IDs and the UDP ports per family.
pub fn gc(net: &str, is_valid: &dyn Fn(&str) -> bool) -> Result<GcRemoved, PortmapError> {
    if let Some(done) = gc_nf(net, is_valid) {
        return Ok(done);
    }
    if !nft::available() {
        return Ok((Vec::new(), Vec::new(), Vec::new()));
    }
    let mut script = String::new();
    let mut ids = Vec::new();
    let mut ports = (Vec::new(), Vec::new());
    for v6 in [false, true] {
        let Some(listing) = list(v6)? else { continue };
        for id in recorded_ids(net, &listing) {
            // The record holds the comment (the ID cut to 128 bytes); an ID is valid if any
            // valid attachment's ID cuts to it.
            if is_valid(&id) {
                continue;
            }
            let (rules, p) = rules_to_remove(net, &id, &listing);
            script.push_str(&delete_script(&rules));
            if v6 {
                ports.1.extend(p);
            } else {
                ports.0.extend(p);
            }
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    nft::apply(&script)
        .map_err(|e| PortmapError::firewall("error deleting stale nftables rules", e))?;
    Ok((ids, ports.0, ports.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::config::NetConf;

    fn upstream(extra: &str) -> Config {
        let json = format!(
            r#"{{"name":"test","type":"portmap","cniVersion":"1.0.0","backend":"nftables","snat":true,
            "conditionsV4":["a","b"]{extra},
            "runtimeConfig":{{"portMappings":[
                {{"hostPort":8080,"containerPort":80,"protocol":"tcp"}},
                {{"hostPort":8081,"containerPort":80,"protocol":"tcp"}},
                {{"hostPort":8080,"containerPort":81,"protocol":"udp"}},
                {{"hostPort":8082,"containerPort":82,"protocol":"udp"}},
                {{"hostPort":8083,"containerPort":83,"protocol":"tcp","hostIP":"192.168.0.2"}},
                {{"hostPort":8084,"containerPort":84,"protocol":"tcp","hostIP":"0.0.0.0"}},
                {{"hostPort":8085,"containerPort":85,"protocol":"tcp","hostIP":"2001:db8:a::1"}},
                {{"hostPort":8086,"containerPort":86,"protocol":"tcp","hostIP":"::"}}]}}}}"#
        );
        let nc = NetConf::parse(json.as_bytes()).unwrap();
        Config::parse(&nc, || crate::config::Backend::Nftables).unwrap()
    }

    #[test]
    fn upstream_dump_v4() {
        let c = upstream("");
        let mut got = add_script(&c, "icee6giejonei6so", "10.0.0.2/24".parse().unwrap());
        got.sort();
        // Our markers on the rules of the rewritten chains (see `Current`) aside...
        let marker = format!(" comment \"{}\"", base_marker("a b"));
        assert!(got.iter().any(|l| l.ends_with(&marker)));
        let got: Vec<String> = got
            .into_iter()
            .map(|l| {
                l.trim_end_matches(marker.as_str())
                    .trim_end_matches(" comment \"cni-rs v1\"")
                    .to_string()
            })
            .collect();
        // ...the upstream v1.9.1 dump (sorted), except the two documented differences below.
        let same = [
            r#"add table ip cni_hostport { comment "CNI portmap plugin" ; }"#,
            "add chain ip cni_hostport hostip_hostports",
            "add chain ip cni_hostport hostports",
            "add chain ip cni_hostport hostports_all",
            "add chain ip cni_hostport masquerading { type nat hook postrouting priority 100 ; }",
            "add chain ip cni_hostport output { type nat hook output priority -100 ; }",
            "add chain ip cni_hostport prerouting { type nat hook prerouting priority -100 ; }",
            r#"add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.0.0.2:80 comment "icee6giejonei6so""#,
            r#"add rule ip cni_hostport hostports tcp dport 8081 dnat to 10.0.0.2:80 comment "icee6giejonei6so""#,
            r#"add rule ip cni_hostport hostports udp dport 8080 dnat to 10.0.0.2:81 comment "icee6giejonei6so""#,
            r#"add rule ip cni_hostport hostports udp dport 8082 dnat to 10.0.0.2:82 comment "icee6giejonei6so""#,
            r#"add rule ip cni_hostport hostports ip daddr 192.168.0.2 tcp dport 8083 dnat to 10.0.0.2:83 comment "icee6giejonei6so""#,
            r#"add rule ip cni_hostport hostports tcp dport 8084 dnat to 10.0.0.2:84 comment "icee6giejonei6so""#,
            "add rule ip cni_hostport hostports_all jump hostip_hostports",
            "add rule ip cni_hostport hostports_all jump hostports",
            r#"add rule ip cni_hostport masquerading ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade comment "icee6giejonei6so""#,
            "add rule ip cni_hostport output a b fib daddr type local jump hostports_all",
            "add rule ip cni_hostport prerouting a b fib daddr type local jump hostports_all",
        ];
        for l in same {
            assert!(got.iter().any(|g| g == l), "missing {l}\n{got:#?}");
        }
        // Hairpin masquerade: subnet source + ct status dnat (upstream: exact IP).
        assert!(got.contains(&r#"add rule ip cni_hostport masquerading ip saddr 10.0.0.0/24 ip daddr 10.0.0.2 ct status dnat masquerade comment "icee6giejonei6so""#.to_string()));
        // Record chain of this network.
        let rec = record_chain("test");
        assert!(got.contains(&format!(
            r#"add rule ip cni_hostport {rec} ip daddr 10.0.0.2 return comment "icee6giejonei6so""#
        )));
        // Nothing for the IPv6 hostIPs.
        assert!(!got.iter().any(|l| l.contains("8085") || l.contains("8086")));
        // Flushes of the reference's rewritten chains.
        for c in ["hostports_all", "prerouting", "output"] {
            assert!(got.contains(&format!("flush chain ip cni_hostport {c}")));
        }
        assert_eq!(got.len(), same.len() + 2 + 1 + 3);
    }

    #[test]
    fn upstream_v6_snat_false_and_masq_all() {
        let c = upstream(r#","snat":false,"conditionsV6":["c","d"]"#);
        let got = add_script(&c, "icee6giejonei6so", "2001:db8::2/64".parse().unwrap());
        assert!(got.contains(&r#"add rule ip6 cni_hostport hostports ip6 daddr 2001:db8:a::1 tcp dport 8085 dnat to [2001:db8::2]:85 comment "icee6giejonei6so""#.to_string()));
        assert!(got.contains(&r#"add rule ip6 cni_hostport hostports tcp dport 8086 dnat to [2001:db8::2]:86 comment "icee6giejonei6so""#.to_string()));
        assert!(got.contains(&format!(
            "add rule ip6 cni_hostport prerouting c d fib daddr type local jump hostports_all comment \"{}\"",
            base_marker("c d")
        )));
        assert!(!got.iter().any(|l| l.contains("masquerad")));
        assert!(!got.iter().any(|l| l.contains("8083") || l.contains("8084")));

        let c = upstream(r#","masqAll":true"#);
        let got = add_script(&c, "x", "10.0.0.2/24".parse().unwrap());
        let masq: Vec<&String> = got
            .iter()
            .filter(|l| l.contains(" masquerading ") && l.starts_with("add rule"))
            .collect();
        assert_eq!(masq, vec![&r#"add rule ip cni_hostport masquerading ip daddr 10.0.0.2 ct status dnat masquerade comment "x""#.to_string()]);
    }

    fn rule(chain: &str, comment: Option<&str>, target: &str) -> Rule {
        Rule {
            chain: chain.into(),
            handle: 1,
            comment: comment.map(str::to_string),
            exprs: vec![Expr::Immediate {
                verdict: Some(Verdict::Jump(target.into())),
                value: vec![],
            }],
            raw_exprs: vec![],
            compat: None,
        }
    }

    #[test]
    fn rewritten_chains_are_left_alone_when_current() {
        let m = base_marker("a b");
        let all = [
            rule(HOSTPORTS_ALL, None, HOSTIP_HOSTPORTS),
            rule(HOSTPORTS_ALL, Some(ALL_MARKER), HOSTPORTS),
        ];
        let pre = [rule("prerouting", Some(&m), HOSTPORTS_ALL)];
        let mut cur = current_of(&all, &pre, &pre, "a b");
        assert!(cur.hostports_all && cur.prerouting && cur.output);
        // Other conditions (last ADD wins), or a chain the reference rewrote: rewrite.
        assert!(!current_of(&all, &pre, &pre, "c").prerouting);
        let plain = [rule("prerouting", None, HOSTPORTS_ALL)];
        assert!(!current_of(&all, &plain, &plain, "a b").output);
        assert!(!current_of(&all[..1], &pre, &pre, "a b").hostports_all);
        let c = upstream("");
        cur.table = true;
        cur.chains = vec![HOSTPORTS.into(), "prerouting".into(), MASQUERADING.into()];
        let got = add_script_with(&c, "x", "10.0.0.2/24".parse().unwrap(), cur);
        assert!(!got.iter().any(|l| l.starts_with("flush")), "{got:#?}");
        assert!(!got.iter().any(|l| l.starts_with("add table")));
        assert!(
            !got.iter()
                .any(|l| l.contains("chain ip cni_hostport prerouting"))
        );
        assert!(got.contains(&"add chain ip cni_hostport hostports_all".to_string()));
        assert!(
            !got.iter()
                .any(|l| l.contains(" prerouting ") && l.starts_with("add rule"))
        );
    }

    #[test]
    fn netlink_removal_is_scoped_by_the_record() {
        let mk = |chain: &str, handle: u64, comment: &str, exprs: Vec<Expr>| Rule {
            chain: chain.into(),
            handle,
            comment: Some(comment.into()),
            exprs,
            raw_exprs: vec![],
            compat: None,
        };
        let ip = |a: [u8; 4]| Expr::Cmp {
            op: 0,
            data: a.to_vec(),
        };
        let rec = record_chain("net1");
        let udp = vec![
            Expr::Meta { key: META_L4PROTO },
            Expr::Cmp {
                op: 0,
                data: vec![17],
            },
            Expr::Payload {
                base: TRANSPORT_HEADER,
                offset: 2,
                len: 2,
            },
            Expr::Cmp {
                op: 0,
                data: 5353u16.to_be_bytes().to_vec(),
            },
            Expr::Immediate {
                verdict: None,
                value: vec![10, 0, 0, 2],
            },
        ];
        let chains = vec![
            (
                rec.clone(),
                vec![mk(&rec, 14, "abc", vec![ip([10, 0, 0, 2])])],
            ),
            (
                HOSTPORTS.to_string(),
                vec![
                    mk(HOSTPORTS, 10, "abc", udp),
                    mk(
                        HOSTPORTS,
                        11,
                        "abc",
                        vec![Expr::Immediate {
                            verdict: None,
                            value: vec![10, 9, 0, 2],
                        }],
                    ),
                    mk(HOSTPORTS, 12, "other", vec![]),
                ],
            ),
            (
                MASQUERADING.to_string(),
                vec![mk(MASQUERADING, 13, "abc", vec![ip([10, 0, 0, 2])])],
            ),
        ];
        let handles = |c: &[Change]| -> Vec<u64> {
            c.iter()
                .filter_map(|x| match x {
                    Change::DeleteRule { handle, .. } => Some(*handle),
                    _ => None,
                })
                .collect()
        };
        let (ch, ports) = removal_nf("net1", "abc", NfFamily::Ipv4, &chains);
        assert_eq!(handles(&ch), vec![14, 10, 13]);
        assert_eq!(ports, vec![5353]);
        // Without a record of this network, every rule with the comment goes.
        let (ch, _) = removal_nf("net2", "abc", NfFamily::Ipv4, &chains[1..]);
        assert_eq!(handles(&ch), vec![10, 11, 13]);
    }

    #[test]
    fn long_ids_are_cut_to_128_bytes() {
        let id = "a".repeat(200);
        assert_eq!(comment(&id).len(), 128);
        assert_eq!(comment("abc"), "abc");
    }

    const LISTING: &str = r#"{"nftables": [{"metainfo": {}}, {"table": {"family": "ip", "name": "cni_hostport", "handle": 1}},
      {"chain": {"family": "ip", "table": "cni_hostport", "name": "hostports", "handle": 1}},
      {"rule": {"family": "ip", "table": "cni_hostport", "chain": "hostports", "handle": 10, "comment": "abc", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 5353}}, {"dnat": {"addr": "10.0.0.2", "port": 53}}]}},
      {"rule": {"family": "ip", "table": "cni_hostport", "chain": "hostports", "handle": 11, "comment": "abc", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}}, {"dnat": {"addr": "10.9.0.2", "port": 80}}]}},
      {"rule": {"family": "ip", "table": "cni_hostport", "chain": "hostports", "handle": 12, "comment": "other", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 81}}, {"dnat": {"addr": "10.0.0.3", "port": 80}}]}},
      {"rule": {"family": "ip", "table": "cni_hostport", "chain": "masquerading", "handle": 13, "comment": "abc", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "10.0.0.2"}}, {"masquerade": null}]}},
      {"rule": {"family": "ip", "table": "cni_hostport", "chain": "attachments_REC", "handle": 14, "comment": "abc", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "10.0.0.2"}}, {"return": null}]}}
    ]}"#;

    #[test]
    fn removal_is_scoped_by_the_record() {
        let text = LISTING.replace("attachments_REC", &record_chain("net1"));
        let listing: Value = serde_json::from_str(&text).unwrap();
        // net1 recorded abc at 10.0.0.2: the rule of abc at 10.9.0.2 (another network) stays.
        let (rules, ports) = rules_to_remove("net1", "abc", &listing);
        let handles: Vec<u64> = rules.iter().map(|r| r.handle).collect();
        assert_eq!(handles, vec![14, 10, 13]);
        assert_eq!(ports, vec![5353]);
        // Without a record (state of the reference), every rule with the comment goes.
        let (rules, _) = rules_to_remove("net2", "abc", &listing);
        let handles: Vec<u64> = rules.iter().map(|r| r.handle).collect();
        assert_eq!(handles, vec![10, 11, 13]);
        assert_eq!(
            delete_script(&rules[..1]),
            "delete rule ip cni_hostport hostports handle 10\n"
        );
        assert_eq!(recorded_ids("net1", &listing), vec!["abc".to_string()]);
        assert!(recorded_ids("net2", &listing).is_empty());
    }

    #[test]
    fn check_reports_missing_rules() {
        let c = upstream("");
        let text = LISTING.replace("attachments_REC", &record_chain("test"));
        let listing: Value = serde_json::from_str(&text).unwrap();
        let missing = check_listing(&c, "abc", "10.0.0.2/24".parse().unwrap(), Some(&listing));
        assert!(
            missing
                .iter()
                .any(|m| m.contains("chain ip cni_hostport prerouting")),
            "{missing:?}"
        );
        assert!(
            missing
                .iter()
                .any(|m| m.contains("tcp dport 8080 dnat to 10.0.0.2:80")),
            "{missing:?}"
        );
        let none = check_listing(&c, "abc", "10.0.0.2/24".parse().unwrap(), None);
        assert_eq!(none, vec!["table ip cni_hostport".to_string()]);
    }
}
