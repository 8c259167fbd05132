//! The iptables backend: the reference's rules (`plugins.md` §3.3) generated as pure argv
//! lists, then applied per family as **one** `iptables-save -t nat` listing plus **one**
//! `iptables-restore --noflush` transaction.
//!
//! * Shared chains (`CNI-HOSTPORT-*`) are created with `-N` only when the listing lacks them
//!   and are never declared with `:` (that would flush them); their rules are appended only
//!   when the listing lacks them ("unique append").
//! * The per-container chain `CNI-DN-<hash>` is declared with `:` (created, or flushed if it
//!   exists) and rebuilt; its old entry rules are deleted in the same transaction.
//! * If a concurrent ADD created a shared chain between our listing and our commit, the
//!   transaction fails as a whole and is retried once from a fresh listing.
//!
//! That listing path is the fallback. The usual ADD needs no listing ([`add_fast`]): on
//! `iptables-nft` hosts the shared chains and rules are verified over netlink (a few µs,
//! independent of the number of containers), elsewhere by `-C` lines inside the
//! transaction; the transaction itself only adds, and creates the container's chain with
//! `-N`, which fails (and aborts everything) if a previous ADD left it. A network's first ADD
//! on an `iptables-nft` node, where none of the shared chains exist yet, makes them, the
//! base chains and the container's part in one nf_tables transaction ([`first_changes`]),
//! as `iptables-restore` would have made them. The usual DEL
//! ([`del_fast`]) removes the container's rules over netlink in one nf_tables transaction
//! (`iptables-nft`), or with exact `-D`/`-F`/`-X` lines from the configured mappings.

use crate::config::{Config, PortMapping, Protocol, is_v6};
use crate::error::PortmapError;
use cni_kernel::firewall::iptables::{Iptables, Restore, Ruleset, canonical_rule};
use cni_kernel::firewall::names::{chain_name_with_prefix, dnat_comment};
use cni_kernel::firewall::{Family, FirewallError, xt};
use cni_kernel::nftables::{
    self, ChainInfo, Change, Expr, META_L4PROTO, META_MARK, NfTables, Rule, TRANSPORT_HEADER,
    Verdict,
};
use ipnet::IpNet;
use std::collections::BTreeMap;

/// The table everything lives in.
pub const TABLE: &str = "nat";
/// Entry chain of all port mappings.
pub const DNAT_CHAIN: &str = "CNI-HOSTPORT-DNAT";
/// Chain that sets the masquerade mark.
pub const SETMARK_CHAIN: &str = "CNI-HOSTPORT-SETMARK";
/// Chain that masquerades marked packets.
pub const MASQ_CHAIN: &str = "CNI-HOSTPORT-MASQ";
/// Legacy (pre-0.7) SNAT entry chain; only torn down.
pub const LEGACY_SNAT_CHAIN: &str = "CNI-HOSTPORT-SNAT";
/// Comment of the SETMARK rule.
pub const SETMARK_COMMENT: &str = "CNI portfwd masquerade mark";
/// Comment of the POSTROUTING jump to the MASQ chain.
pub const MASQ_COMMENT: &str = "CNI portfwd requiring masquerade";
/// Ports per multiport match (the kernel's limit).
pub const MULTIPORT_MAX: usize = 15;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// `CNI-DN-<hash(net + id)>`.
pub fn dnat_chain(net: &str, id: &str) -> String {
    chain_name_with_prefix(net, id, "DN-")
}

/// Legacy `CNI-SN-<hash(net + id)>`.
pub fn legacy_snat_chain(net: &str, id: &str) -> String {
    chain_name_with_prefix(net, id, "SN-")
}

/// `ip:port`, IPv6 in brackets (`fmtIpPort`).
pub fn ip_port(ip: std::net::IpAddr, port: u16) -> String {
    let ip = ip.to_canonical();
    if ip.is_ipv4() {
        format!("{ip}:{port}")
    } else {
        format!("[{ip}]:{port}")
    }
}

/// The chain hairpin/localhost traffic jumps to for marking.
pub fn setmark_target(conf: &Config) -> &str {
    conf.external_set_mark_chain
        .as_deref()
        .unwrap_or(SETMARK_CHAIN)
}

/// A rule to put in a chain: `(chain, argv)`; `insert_first` for `-I chain 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedRule {
    pub chain: &'static str,
    pub args: Vec<String>,
    pub insert_first: bool,
}

/// The shared chains and their rules, in the reference's order (§3.3 steps 1 and 2).
pub fn shared_rules(conf: &Config) -> (Vec<&'static str>, Vec<SharedRule>) {
    let mut chains = Vec::new();
    let mut rules = Vec::new();
    if conf.snat && conf.external_set_mark_chain.is_none() {
        let mark = conf.mark();
        chains.push(SETMARK_CHAIN);
        rules.push(SharedRule {
            chain: SETMARK_CHAIN,
            args: s(&[
                "-m",
                "comment",
                "--comment",
                SETMARK_COMMENT,
                "-j",
                "MARK",
                "--set-xmark",
                &mark,
            ]),
            insert_first: false,
        });
        chains.push(MASQ_CHAIN);
        rules.push(SharedRule {
            chain: MASQ_CHAIN,
            args: s(&["-m", "mark", "--mark", &mark, "-j", "MASQUERADE"]),
            insert_first: false,
        });
        rules.push(SharedRule {
            chain: "POSTROUTING",
            args: s(&["-m", "comment", "--comment", MASQ_COMMENT, "-j", MASQ_CHAIN]),
            insert_first: true,
        });
    }
    chains.push(DNAT_CHAIN);
    for entry in ["PREROUTING", "OUTPUT"] {
        rules.push(SharedRule {
            chain: entry,
            args: s(&["-m", "addrtype", "--dst-type", "LOCAL", "-j", DNAT_CHAIN]),
            insert_first: false,
        });
    }
    (chains, rules)
}

/// The rules of `CNI-DN-<hash>` for one container address (`fillDnatRules`), argv exactly as
/// the reference generates them.
pub fn dnat_rules(conf: &Config, container: IpNet) -> Vec<Vec<String>> {
    let v6 = is_v6(&container.addr());
    let mut out = Vec::new();
    let src = cni::result::net_string(&container);
    let target = setmark_target(conf);
    for m in conf.mappings.iter().filter(|m| m.applies_to(v6)) {
        let mut base = s(&[
            "-p",
            m.protocol.as_str(),
            "--dport",
            &m.host_port.to_string(),
        ]);
        if let Some(h) = m.host_ip_match() {
            base.extend(s(&["-d", h]));
        }
        if conf.snat {
            let masq_src = if conf.masq_all {
                if v6 { "::/0" } else { "0.0.0.0/0" }
            } else {
                src.as_str()
            };
            let mut r = base.clone();
            r.extend(s(&["-s", masq_src, "-j", target]));
            out.push(r);
            if !v6 && !conf.masq_all {
                let mut r = base.clone();
                r.extend(s(&["-s", "127.0.0.1", "-j", target]));
                out.push(r);
            }
        }
        let mut r = base;
        r.extend(s(&[
            "-j",
            "DNAT",
            "--to-destination",
            &ip_port(container.addr(), m.container_port),
        ]));
        out.push(r);
    }
    out
}

/// The entry rules appended to `CNI-HOSTPORT-DNAT` (without the final `-j <chain>`): one per
/// protocol (sorted) per chunk of 15 host ports, built from **all** mappings.
pub fn entry_rules(conf: &Config, container_id: &str, v6: bool) -> Vec<Vec<String>> {
    let mut by_proto: BTreeMap<Protocol, Vec<u16>> = BTreeMap::new();
    for m in &conf.mappings {
        by_proto.entry(m.protocol).or_default().push(m.host_port);
    }
    let comment = dnat_comment(&conf.network, container_id);
    let mut out = Vec::new();
    for (proto, ports) in by_proto {
        for chunk in ports.chunks(MULTIPORT_MAX) {
            let list: Vec<String> = chunk.iter().map(u16::to_string).collect();
            let mut r = s(&[
                "-m",
                "comment",
                "--comment",
                &comment,
                "-m",
                "multiport",
                "-p",
                proto.as_str(),
                "--destination-ports",
                &list.join(","),
            ]);
            r.extend(conf.conditions(v6).iter().cloned());
            out.push(r);
        }
    }
    out
}

/// What one ADD did to one family, so that it can be undone exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub family: Option<Family>,
    /// Shared chains this ADD created.
    pub created_chains: Vec<String>,
    /// Shared rules this ADD added.
    pub added_shared: Vec<(String, Vec<String>)>,
    /// Entry rules added to `CNI-HOSTPORT-DNAT`.
    pub entries: Vec<Vec<String>>,
    /// The per-container chain.
    pub chain: String,
}

fn fw(what: &str, tool: &Iptables) -> impl FnOnce(FirewallError) -> PortmapError {
    let what = format!("{what} ({})", tool.bin());
    move |e| PortmapError::firewall(what, e)
}

/// What an ADD of `container` applies besides shared state: its family, its chain and its
/// entry rules (each ending in `-j <chain>`). Pure.
fn container_applied(conf: &Config, container_id: &str, container: IpNet) -> Applied {
    let v6 = is_v6(&container.addr());
    let chain = dnat_chain(&conf.network, container_id);
    let entries = entry_rules(conf, container_id, v6)
        .into_iter()
        .map(|mut r| {
            r.extend(s(&["-j", &chain]));
            r
        })
        .collect();
    Applied {
        family: Some(if v6 { Family::V6 } else { Family::V4 }),
        chain,
        entries,
        ..Applied::default()
    }
}

/// Appends the container's rules to its chain and its entry rules to `CNI-HOSTPORT-DNAT`.
fn append_container_rules(tx: &mut Restore, conf: &Config, container: IpNet, a: &Applied) {
    for r in dnat_rules(conf, container) {
        tx.append(&a.chain, &r);
    }
    for r in &a.entries {
        tx.append(DNAT_CHAIN, r);
    }
}

/// Builds the ADD transaction for one family from a listing. Pure.
pub fn add_transaction(
    conf: &Config,
    container_id: &str,
    container: IpNet,
    listing: &Ruleset,
) -> (Restore, Applied) {
    let mut applied = container_applied(conf, container_id, container);
    let chain = applied.chain.clone();
    let mut tx = Restore::new(TABLE);
    let (chains, rules) = shared_rules(conf);
    for c in chains {
        if !listing.has_chain(c) {
            tx.new_chain(c);
            applied.created_chains.push(c.to_string());
        }
    }
    for r in rules {
        if listing.find_rule(r.chain, &r.args).is_some() {
            continue;
        }
        if r.insert_first {
            tx.insert_first(r.chain, &r.args);
        } else {
            tx.append(r.chain, &r.args);
        }
        applied.added_shared.push((r.chain.to_string(), r.args));
    }
    // Old entry rules of this container (a repeated ADD) go; the chain is rebuilt.
    for old in listing.chain_rules(DNAT_CHAIN) {
        if old.target() == Some(chain.as_str()) {
            tx.delete_saved(old);
        }
    }
    tx.declare_chain(&chain);
    append_container_rules(&mut tx, conf, container, &applied);
    (tx, applied)
}

/// ADD for one family: one listing, one transaction (retried once from a fresh listing if a
/// concurrent ADD changed the shared chains in between).
pub fn add(conf: &Config, container_id: &str, container: IpNet) -> Result<Applied, PortmapError> {
    let family = Family::of(&container.addr());
    let tool = Iptables::new(family);
    // Listing and applying are two steps: two ADDs on a node without the shared rules yet
    // would both see them missing and both add them. This path is serialised (it runs on a
    // node's first ADD, a re-ADD, or a degraded node; the fast path takes no lock).
    let _guard = slow_path_lock().map_err(fw("could not set up port mappings", &tool))?;
    let mut last = None;
    for _ in 0..2 {
        let listing = tool
            .save(TABLE)
            .map_err(fw("could not list table nat", &tool))?;
        let (tx, applied) = add_transaction(conf, container_id, container, &listing);
        match tool.restore(&tx) {
            Ok(()) => return Ok(applied),
            Err(e @ FirewallError::Locked { .. }) => {
                return Err(fw("could not set up port mappings", &tool)(e));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(fw("could not set up port mappings", &tool)(last.unwrap_or(
        FirewallError::Output {
            cmd: "iptables-restore".into(),
            what: "no attempt made".into(),
        },
    )))
}

/// The file whose `flock` serialises [`add`]'s listing path across processes (all network
/// namespaces share it; the path is rare).
const SLOW_PATH_LOCK: &str = "/run/cni-rs-portmap.lock";

/// Takes the slow path's lock, waiting at most 30 s; released when the file is dropped.
fn slow_path_lock() -> Result<std::fs::File, FirewallError> {
    use std::os::unix::fs::OpenOptionsExt;
    let locked = || FirewallError::Locked {
        cmd: format!("flock {SLOW_PATH_LOCK}"),
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(SLOW_PATH_LOCK)
        .map_err(|e| FirewallError::Output {
            cmd: format!("open {SLOW_PATH_LOCK}"),
            what: e.to_string(),
        })?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(_) => return Err(locked()),
        }
    }
}

fn cstr(d: &[u8]) -> &[u8] {
    let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
    &d[..end]
}

/// `xt_addrtype_info_v1` with `--dst-type LOCAL` (`XT_ADDRTYPE_LOCAL` = `1 << RTN_LOCAL`).
fn is_addrtype_dst_local(info: &[u8]) -> bool {
    info.len() >= 8
        && info[..2] == [0, 0]
        && u16::from_ne_bytes([info[2], info[3]]) == 4
        && info[4..8] == [0; 4]
}

/// `-m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark <m>/<m>` as
/// `iptables-nft` encodes it (pure).
pub fn is_setmark_rule(rule: &Rule, mark: u32) -> bool {
    let m = mark.to_ne_bytes();
    let e: Vec<&Expr> = rule.significant().collect();
    matches!(e.as_slice(), [
        Expr::Match { name: mn, rev: 0, info: minfo },
        Expr::Target { name: tn, rev: 2, info: tinfo },
    ] if mn == "comment" && cstr(minfo) == SETMARK_COMMENT.as_bytes()
        && tn == "MARK" && tinfo.len() >= 8 && tinfo[..4] == m && tinfo[4..8] == m)
}

/// `-m mark --mark <m>/<m> -j MASQUERADE` as `iptables-nft` encodes it (pure).
pub fn is_masq_rule(rule: &Rule, mark: u32) -> bool {
    let m = mark.to_ne_bytes();
    let e: Vec<&Expr> = rule.significant().collect();
    matches!(e.as_slice(), [
        Expr::Meta { key: META_MARK },
        Expr::Bitwise { mask, xor },
        Expr::Cmp { op: 0, data },
        Expr::Target { name, .. },
    ] if mask.as_slice() == m && xor.iter().all(|b| *b == 0)
        && data.as_slice() == m && name == "MASQUERADE")
}

/// `-m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT` as `iptables-nft` encodes it (pure).
pub fn is_dnat_entry_jump(rule: &Rule) -> bool {
    let e: Vec<&Expr> = rule.significant().collect();
    matches!(e.as_slice(), [
        Expr::Match { name, rev: 1, info },
        Expr::Immediate { verdict: Some(Verdict::Jump(target)), .. },
    ] if name == "addrtype" && is_addrtype_dst_local(info) && target == DNAT_CHAIN)
}

/// The shared chains and rules of [`shared_rules`] are all present, read from nf_tables
/// (`iptables-nft` encodes them as the predicates above check; any other encoding is "not
/// present", and the caller takes the listing path, which is always right). The jump from
/// `POSTROUTING` to `CNI-HOSTPORT-MASQ` is known from that chain's reference count, so nothing
/// here reads a chain whose size grows with the number of containers.
pub fn shared_present_nf(nf: &mut NfTables, conf: &Config, family: Family) -> bool {
    let fam = family.nf_family();
    let (chains, _) = shared_rules(conf);
    let mut infos = BTreeMap::new();
    for c in chains {
        match nf.chain(fam, TABLE, c).ok().flatten() {
            Some(i) => {
                infos.insert(c, i);
            }
            None => return false,
        }
    }
    let mut rules = |c: &str| -> Vec<Rule> { nf.rules(fam, TABLE, Some(c)).unwrap_or_default() };
    if conf.snat && conf.external_set_mark_chain.is_none() {
        let mark = conf.mark_value();
        let setmark_ok = rules(SETMARK_CHAIN)
            .iter()
            .any(|r| is_setmark_rule(r, mark));
        let masq_rules = rules(MASQ_CHAIN);
        let masq_ok = masq_rules.iter().any(|r| is_masq_rule(r, mark));
        // The reference count of a chain is its rules plus the jumps to it.
        let jumped = infos
            .get(MASQ_CHAIN)
            .is_some_and(|i| i.use_count as usize > masq_rules.len());
        if !(setmark_ok && masq_ok && jumped) {
            return false;
        }
    }
    ["PREROUTING", "OUTPUT"]
        .iter()
        .all(|entry| rules(entry).iter().any(is_dnat_entry_jump))
}

/// The ADD transaction for a container whose chain does not exist yet, planned without a
/// listing (pure): optionally `-C` assertions of every shared rule (where they cannot be
/// verified over netlink), `-N CNI-DN-<hash>`, the container's rules, its entry rules. It
/// applies as a whole or not at all: a missing shared rule or an existing container chain
/// aborts it, and the caller takes the listing path.
pub fn new_transaction(
    conf: &Config,
    container_id: &str,
    container: IpNet,
    assert_shared: bool,
) -> (Restore, Applied) {
    let applied = container_applied(conf, container_id, container);
    let mut tx = Restore::new(TABLE);
    if assert_shared {
        let (_, rules) = shared_rules(conf);
        for r in rules {
            tx.check(r.chain, &r.args);
        }
    }
    tx.new_chain(&applied.chain);
    append_container_rules(&mut tx, conf, container, &applied);
    (tx, applied)
}

/// [`new_transaction`] (without assertions) as one nf_tables transaction, every rule encoded
/// as `iptables-nft` encodes it ([`xt`]); `None` if a rule cannot be encoded (extra
/// `conditionsV4`/`conditionsV6`, say).
pub fn new_changes(conf: &Config, container_id: &str, container: IpNet) -> Option<Vec<Change>> {
    let a = container_applied(conf, container_id, container);
    let family = Family::of(&container.addr());
    let nf = family.nf_family();
    let rule = |c: &str, args: &[String]| xt::append(family, TABLE, c, args);
    let mut out = vec![Change::AddChain {
        family: nf,
        table: TABLE.to_string(),
        chain: a.chain.clone(),
    }];
    for r in dnat_rules(conf, container) {
        out.push(rule(&a.chain, &r)?);
    }
    for r in &a.entries {
        out.push(rule(DNAT_CHAIN, r)?);
    }
    Some(out)
}

/// What a node's `nat` table holds before a network's first ADD there, read over netlink.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatState {
    /// The table exists.
    pub table: bool,
    /// The base chains of it that exist (`PREROUTING`, `OUTPUT`, `POSTROUTING`).
    pub base: Vec<&'static str>,
}

/// The base chains the shared rules go into.
const BASE_CHAINS: [&str; 3] = ["PREROUTING", "OUTPUT", "POSTROUTING"];

/// A first ADD on an `iptables-nft` node where none of the shared chains exist yet, as one
/// nf_tables transaction (pure): what [`add_transaction`] writes there, in the order
/// `iptables-restore` creates it (the table if missing; the shared chains; the shared rules,
/// each base chain created as the first rule goes into it; the container's chain and rules),
/// so that the kernel holds the very objects and handles. `None` if a rule cannot be encoded.
pub fn first_changes(
    conf: &Config,
    container_id: &str,
    container: IpNet,
    state: &NatState,
) -> Option<(Vec<Change>, Applied)> {
    let family = Family::of(&container.addr());
    let nf = family.nf_family();
    let mut applied = container_applied(conf, container_id, container);
    let mut out = Vec::new();
    if !state.table {
        out.push(Change::DeclareTable {
            family: nf,
            table: TABLE.to_string(),
            comment: None,
        });
    }
    let (chains, rules) = shared_rules(conf);
    for c in chains {
        out.push(Change::AddChain {
            family: nf,
            table: TABLE.to_string(),
            chain: c.to_string(),
        });
        applied.created_chains.push(c.to_string());
    }
    let mut base = state.base.clone();
    for r in rules {
        if !base.contains(&r.chain)
            && let Some(declare) = xt::nat_base_chain(family, r.chain)
        {
            out.push(declare);
            base.push(r.chain);
        }
        out.push(if r.insert_first {
            xt::prepend(family, TABLE, r.chain, &r.args)?
        } else {
            xt::append(family, TABLE, r.chain, &r.args)?
        });
        applied.added_shared.push((r.chain.to_string(), r.args));
    }
    out.extend(new_changes(conf, container_id, container)?);
    Some((out, applied))
}

/// A network's first ADD on an `iptables-nft` node ([`first_changes`]), over netlink: no
/// listing, no process. Only where none of the shared chains exist (then none of the shared
/// rules can: a jump needs its chain), under the listing path's lock. `None` when it did not
/// apply (nothing changed then): the listing path ([`add`]) runs.
fn add_first_nf(
    nf: &mut NfTables,
    conf: &Config,
    container_id: &str,
    container: IpNet,
) -> Option<Applied> {
    let family = Family::of(&container.addr());
    let fam = family.nf_family();
    let _guard = slow_path_lock().ok()?;
    let mut state = NatState {
        table: nf.table_exists(fam, TABLE).ok()?,
        base: Vec::new(),
    };
    if state.table {
        for c in shared_rules(conf).0 {
            if nf.chain(fam, TABLE, c).ok()?.is_some() {
                return None;
            }
        }
        for c in BASE_CHAINS {
            if nf.chain(fam, TABLE, c).ok()?.is_some() {
                state.base.push(c);
            }
        }
    }
    let (changes, applied) = first_changes(conf, container_id, container, &state)?;
    nf.commit(&changes, None).ok().map(|()| applied)
}

/// ADD for one family without a listing (see [`new_transaction`]); `None` when it did not
/// apply (nothing changed then) and the listing path ([`add`]) must run. On `iptables-nft`
/// hosts whose shared state checks out, the rules go in over netlink (no process).
pub fn add_fast(conf: &Config, container_id: &str, container: IpNet) -> Option<Applied> {
    let family = Family::of(&container.addr());
    let tool = Iptables::new(family);
    if !tool.available() {
        return None;
    }
    let assert_shared = if tool.uses_nf_tables() {
        let mut nf = NfTables::open().ok()?;
        if !shared_present_nf(&mut nf, conf, family) {
            if let Some(a) = add_first_nf(&mut nf, conf, container_id, container) {
                return Some(a);
            }
            // Unless a concurrent first ADD made the shared state meanwhile (it held the
            // lock), only the listing can tell what is missing.
            if !shared_present_nf(&mut nf, conf, family) {
                return None;
            }
        }
        if let Some(changes) = new_changes(conf, container_id, container) {
            match nf.commit(&changes, None) {
                Ok(()) => return Some(container_applied(conf, container_id, container)),
                // The container's chain exists (a re-ADD): the listing path rebuilds it.
                Err(e) if e.is_exists() => return None,
                Err(_) => {}
            }
        }
        false
    } else {
        true
    };
    let (tx, applied) = new_transaction(conf, container_id, container, assert_shared);
    tool.restore(&tx).ok().map(|_| applied)
}

/// Undoes one family's ADD exactly: the container's chain and entry rules, the shared rules
/// it added, and the shared chains it created if nothing else uses them by now.
pub fn rollback(applied: &Applied) -> Result<(), PortmapError> {
    let Some(family) = applied.family else {
        return Ok(());
    };
    let tool = Iptables::new(family);
    let listing = tool
        .save(TABLE)
        .map_err(fw("could not list table nat", &tool))?;
    let mut own = Restore::new(TABLE);
    let mut removed: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for old in listing.chain_rules(DNAT_CHAIN) {
        if old.target() == Some(applied.chain.as_str()) {
            own.delete_saved(old);
            removed.push((old.chain.clone(), canonical_rule(&old.args)));
        }
    }
    if listing.has_chain(&applied.chain) {
        own.flush_chain(&applied.chain).delete_chain(&applied.chain);
    }
    let mut full = own.clone();
    for (chain, args) in applied.added_shared.iter().rev() {
        if let Some(r) = listing.find_rule(chain, args) {
            full.delete_saved(r);
            removed.push((r.chain.clone(), canonical_rule(&r.args)));
        }
    }
    for c in applied.created_chains.iter().rev() {
        let still_used = listing
            .rules
            .iter()
            .filter(|r| &r.chain == c || r.target() == Some(c.as_str()))
            .any(|r| {
                let key = (r.chain.clone(), canonical_rule(&r.args));
                r.chain != applied.chain && !removed.contains(&key)
            });
        if listing.has_chain(c) && !still_used {
            full.delete_chain(c);
        }
    }
    if tool.restore(&full).is_ok() {
        return Ok(());
    }
    tool.restore(&own)
        .map_err(fw("could not roll back port mappings", &tool))
}

/// What DEL found and removed in one family.
#[derive(Clone, Debug, Default)]
pub struct Removed {
    /// UDP host ports of the removed DNAT rules (for the conntrack flush).
    pub udp_ports: Vec<u16>,
    /// Something was removed.
    pub any: bool,
    /// UDP host ports whose removed DNAT rules, by their counters, had translated no packet
    /// (netlink path only): no conntrack entry can carry their translation, so the flush
    /// need not walk the table for them. A counter reset by hand makes one look idle; its
    /// entries then time out, as the reference (which flushes on ADD only) always leaves them.
    pub idle_udp_ports: Vec<u16>,
}

/// The removal transaction for a container's per-container state in one listing: entry rules
/// jumping to `CNI-DN-<hash>` (and the legacy `CNI-SN-<hash>`), then the chains. Pure.
pub fn del_transaction(net: &str, container_id: &str, listing: &Ruleset) -> (Restore, Removed) {
    let mut tx = Restore::new(TABLE);
    let mut removed = Removed::default();
    for (entry, chain) in [
        (DNAT_CHAIN, dnat_chain(net, container_id)),
        (LEGACY_SNAT_CHAIN, legacy_snat_chain(net, container_id)),
    ] {
        for r in listing.chain_rules(entry) {
            if r.target() == Some(chain.as_str()) {
                tx.delete_saved(r);
                removed.any = true;
            }
        }
        if listing.has_chain(&chain) {
            for r in listing.chain_rules(&chain) {
                if r.value_of("-p") == Some("udp")
                    && let Some(p) = r.value_of("--dport").and_then(|p| p.parse().ok())
                    && !removed.udp_ports.contains(&p)
                {
                    removed.udp_ports.push(p);
                }
            }
            tx.flush_chain(&chain).delete_chain(&chain);
            removed.any = true;
        }
    }
    (tx, removed)
}

/// The UDP destination port a rule matches (nf_tables encoding), if it matches one.
#[inline(always)]
fn udp_dport(r: &Rule) -> Option<u16> {
    if r.meta_eq(META_L4PROTO) != Some(&[17u8][..]) {
        return None;
    }
    let (data, None) = r.payload_eq(TRANSPORT_HEADER, 2)? else {
        return None;
    };
    Some(u16::from_be_bytes(
        <[u8; 2]>::try_from(data.as_slice()).ok()?,
    ))
}

/// UDP host ports matched by rules of a container chain (nf_tables encoding).
fn udp_ports_nf(rules: &[Rule]) -> Vec<u16> {
    let mut out = Vec::new();
    for p in rules.iter().filter_map(udp_dport) {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// UDP host ports whose every DNAT rule in `rules` (a container chain, nf_tables encoding)
/// has a counter that matched no packet.
fn idle_udp_ports_nf(rules: &[Rule]) -> Vec<u16> {
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    for r in rules {
        let dnat = r
            .exprs
            .iter()
            .any(|e| matches!(e, Expr::Target { name, .. } if name == "DNAT"));
        if !dnat {
            continue;
        }
        let Some(p) = udp_dport(r) else {
            continue;
        };
        let list = if r.packets() == Some(0) {
            &mut idle
        } else {
            &mut busy
        };
        if !list.contains(&p) {
            list.push(p);
        }
    }
    idle.retain(|p| !busy.contains(p));
    idle
}

/// One chain DEL removes, as read from nf_tables: its name, the chain its entry rules are in,
/// its reference count, the rules of that entry chain and its own rules.
pub struct ChainState<'a> {
    /// The chain holding the entry rules (`CNI-HOSTPORT-DNAT`).
    pub entry: &'a str,
    /// The container's chain.
    pub chain: String,
    /// The container's chain as nf_tables reports it; `None` if absent.
    pub info: Option<ChainInfo>,
    /// The rules of the entry chain.
    pub entry_rules: Vec<Rule>,
    /// The container chain's own rules.
    pub chain_rules: Vec<Rule>,
}

/// The DEL changes for one family from nf_tables (pure): for the container chain and the
/// legacy SNAT chain, every entry rule jumping to it, then the chain. `None` when the entry
/// rules found do not account for every reference to a chain (its reference count is its own
/// rules plus the jumps to it; a jump from elsewhere is not seen here): the listing path,
/// which sees every chain, must decide.
pub fn plan_del_nf(family: Family, chains: &[ChainState<'_>]) -> Option<(Vec<Change>, Removed)> {
    let nf = family.nf_family();
    let mut out = Vec::new();
    let mut removed = Removed::default();
    for st in chains {
        let (entry, chain) = (st.entry, st.chain.as_str());
        let Some(info) = &st.info else { continue };
        let jumps: Vec<&Rule> = st
            .entry_rules
            .iter()
            .filter(|r| r.jump_target() == Some(chain))
            .collect();
        // A chain's reference count includes its own rules.
        if jumps.len() + st.chain_rules.len() != info.use_count as usize {
            return None;
        }
        for j in jumps {
            out.push(Change::DeleteRule {
                family: nf,
                table: TABLE.to_string(),
                chain: entry.to_string(),
                handle: j.handle,
            });
        }
        out.push(Change::FlushChain {
            family: nf,
            table: TABLE.to_string(),
            chain: chain.to_string(),
        });
        out.push(Change::DeleteChain {
            family: nf,
            table: TABLE.to_string(),
            chain: chain.to_string(),
        });
        for p in udp_ports_nf(&st.chain_rules) {
            if !removed.udp_ports.contains(&p) {
                removed.udp_ports.push(p);
            }
        }
        for p in idle_udp_ports_nf(&st.chain_rules) {
            if !removed.idle_udp_ports.contains(&p) {
                removed.idle_udp_ports.push(p);
            }
        }
        removed.any = true;
    }
    Some((out, removed))
}

/// DEL for one family over netlink (`iptables-nft` hosts): one nf_tables transaction, no
/// process. `None` = undecidable or failed, use the tools.
fn del_nf(nf: &mut NfTables, net: &str, container_id: &str, family: Family) -> Option<Removed> {
    let fam = family.nf_family();
    for _ in 0..3 {
        let generation = nf.generation().ok()?;
        let mut chains = Vec::new();
        for (entry, chain) in [
            (DNAT_CHAIN, dnat_chain(net, container_id)),
            (LEGACY_SNAT_CHAIN, legacy_snat_chain(net, container_id)),
        ] {
            let info = nf.chain(fam, TABLE, &chain).ok()?;
            let (entry_rules, chain_rules) = match &info {
                Some(i) => {
                    let own = nf.rules(fam, TABLE, Some(&chain)).ok()?;
                    let jumps = nf.jumps_to(fam, TABLE, entry, &chain, i, &own).ok()?;
                    (jumps, own)
                }
                None => (Vec::new(), Vec::new()),
            };
            chains.push(ChainState {
                entry,
                chain,
                info,
                entry_rules,
                chain_rules,
            });
        }
        let (changes, removed) = plan_del_nf(family, &chains)?;
        match nf.commit(&changes, Some(generation)) {
            Ok(()) => return Some(removed),
            Err(e) if e.is_restart() => continue,
            Err(_) => return None,
        }
    }
    None
}

/// The exact DEL transaction from the configured mappings (pure): the entry rules as ADD
/// wrote them, then flush and delete the container chain. Fails as a whole if anything is
/// absent or the chain is still referenced; the caller then takes the listing path. Empty
/// without mappings (nothing to be exact about).
pub fn exact_del_transaction(conf: &Config, container_id: &str, v6: bool) -> Restore {
    let mut tx = Restore::new(TABLE);
    if conf.mappings.is_empty() {
        return tx;
    }
    let chain = dnat_chain(&conf.network, container_id);
    for mut r in entry_rules(conf, container_id, v6) {
        r.extend(s(&["-j", &chain]));
        tx.delete(DNAT_CHAIN, &r);
    }
    tx.flush_chain(&chain).delete_chain(&chain);
    tx
}

/// DEL for one family: over netlink when the tools are `iptables-nft` and `nf` is open;
/// otherwise an exact transaction from the configured mappings; otherwise (or when those do
/// not apply) the listing path ([`del`]).
pub fn del_fast(
    nf: Option<&mut NfTables>,
    conf: &Config,
    container_id: &str,
    family: Family,
) -> Result<Removed, PortmapError> {
    let tool = Iptables::new(family);
    if !tool.available() {
        return Ok(Removed::default());
    }
    if tool.uses_nf_tables()
        && let Some(nf) = nf
        && let Some(r) = del_nf(nf, &conf.network, container_id, family)
    {
        return Ok(r);
    }
    let tx = exact_del_transaction(conf, container_id, family == Family::V6);
    if !tx.is_empty() && tool.restore(&tx).is_ok() {
        let v6 = family == Family::V6;
        let mut ports: Vec<u16> = conf
            .mappings
            .iter()
            .filter(|m| m.protocol == Protocol::Udp && m.applies_to(v6))
            .map(|m| m.host_port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        return Ok(Removed {
            udp_ports: ports,
            any: true,
            idle_udp_ports: Vec::new(),
        });
    }
    del(&conf.network, container_id, family)
}

/// DEL for one family. A family whose tools are missing or cannot list is skipped (nothing of
/// ours can exist there); a failing removal is an error.
pub fn del(net: &str, container_id: &str, family: Family) -> Result<Removed, PortmapError> {
    let tool = Iptables::new(family);
    if !tool.available() {
        return Ok(Removed::default());
    }
    let listing = match tool.save(TABLE) {
        Ok(l) => l,
        Err(e @ FirewallError::Locked { .. }) => {
            return Err(fw("could not list table nat", &tool)(e));
        }
        Err(e) => {
            eprintln!(
                "portmap: {} unusable, nothing to remove there: {e}",
                tool.bin()
            );
            return Ok(Removed::default());
        }
    };
    let (tx, removed) = del_transaction(net, container_id, &listing);
    tool.restore(&tx)
        .map_err(fw("could not remove port mappings", &tool))?;
    Ok(removed)
}

/// CHECK for one container address: every rule of the container, the shared chains and the
/// jumps into them. Returns the list of what is missing (empty = fine). Pure.
pub fn check_listing(
    conf: &Config,
    container_id: &str,
    container: IpNet,
    listing: &Ruleset,
) -> Vec<String> {
    let v6 = is_v6(&container.addr());
    let chain = dnat_chain(&conf.network, container_id);
    let mut missing = Vec::new();
    let (chains, rules) = shared_rules(conf);
    for c in chains {
        if !listing.has_chain(c) {
            missing.push(format!("chain {c}"));
        }
    }
    if let Some(ext) = &conf.external_set_mark_chain
        && conf.snat
        && !listing.has_chain(ext)
    {
        missing.push(format!("external set-mark chain {ext}"));
    }
    for r in rules {
        if listing.find_rule(r.chain, &r.args).is_none() {
            missing.push(format!("rule [{}] in chain {}", r.args.join(" "), r.chain));
        }
    }
    if !listing.has_chain(&chain) {
        missing.push(format!("chain {chain}"));
        return missing;
    }
    for r in dnat_rules(conf, container) {
        if listing.find_rule(&chain, &r).is_none() {
            missing.push(format!("rule [{}] in chain {chain}", r.join(" ")));
        }
    }
    for mut r in entry_rules(conf, container_id, v6) {
        r.extend(s(&["-j", &chain]));
        if listing.find_rule(DNAT_CHAIN, &r).is_none() {
            missing.push(format!("rule [{}] in chain {DNAT_CHAIN}", r.join(" ")));
        }
    }
    missing
}

/// CHECK's question answered over netlink (`iptables-nft` tools, no process): the shared state
/// ([`shared_present_nf`]), and every rule of the container and every entry rule jumping to
/// its chain, each exactly as ADD writes it ([`new_changes`]). Only a yes counts: anything
/// missing or written otherwise is left to the listing, which names what is missing.
fn present_nf(conf: &Config, container_id: &str, container: IpNet) -> bool {
    let family = Family::of(&container.addr());
    let fam = family.nf_family();
    let Ok(mut nf) = NfTables::open() else {
        return false;
    };
    if !shared_present_nf(&mut nf, conf, family) {
        return false;
    }
    if let Some(ext) = &conf.external_set_mark_chain
        && conf.snat
        && !nf.chain(fam, TABLE, ext).is_ok_and(|c| c.is_some())
    {
        return false;
    }
    let chain = dnat_chain(&conf.network, container_id);
    let (Some(wanted), Ok(Some(info))) = (
        new_changes(conf, container_id, container),
        nf.chain(fam, TABLE, &chain),
    ) else {
        return false;
    };
    let Ok(own) = nf.rules(fam, TABLE, Some(&chain)) else {
        return false;
    };
    let Ok(entries) = nf.jumps_to(fam, TABLE, DNAT_CHAIN, &chain, &info, &own) else {
        return false;
    };
    nftables::rules_present(&wanted, |c| {
        if c == chain {
            Some(&own)
        } else {
            (c == DNAT_CHAIN).then_some(&entries[..])
        }
    })
}

/// CHECK for one container address (one listing).
pub fn check(conf: &Config, container_id: &str, container: IpNet) -> Result<(), PortmapError> {
    let family = Family::of(&container.addr());
    let tool = Iptables::new(family);
    if tool.uses_nf_tables() && present_nf(conf, container_id, container) {
        return Ok(());
    }
    let listing = tool
        .save(TABLE)
        .map_err(fw("could not list table nat", &tool))?;
    let missing = check_listing(conf, container_id, container, &listing);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PortmapError::Check(format!(
            "{} table nat is missing: {}",
            tool.bin(),
            missing.join("; ")
        )))
    }
}

/// Container IDs of this network with entry rules in a listing (from the
/// `dnat name: "<net>" id: "<id>"` comments). Comments cut at 255 bytes are not attributable.
pub fn attached_ids(net: &str, listing: &Ruleset) -> Vec<String> {
    ids_in_comments(
        net,
        listing.chain_rules(DNAT_CHAIN).filter_map(|r| r.comment()),
    )
}

/// The container IDs of this network named by entry-rule comments (`dnat name: "<net>" id:
/// "<id>"`), sorted, each once.
fn ids_in_comments<S: AsRef<str>>(net: &str, comments: impl Iterator<Item = S>) -> Vec<String> {
    let prefix = format!("dnat name: \"{net}\" id: \"");
    let mut ids: Vec<String> = comments
        .filter_map(|c| {
            let id = c.as_ref().strip_prefix(&prefix)?.strip_suffix('"')?;
            Some(id.to_string())
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// GC for one family over netlink (`iptables-nft` tools): the attached IDs read from the
/// comments of `CNI-HOSTPORT-DNAT`'s rules, each stale one removed as DEL removes it
/// ([`del_nf`]): no listing of the whole table, no process. `None` where nf_tables cannot be
/// read or changed that way; the listing path then runs (what was removed stays removed).
fn gc_nf(
    net: &str,
    is_valid: &dyn Fn(&str) -> bool,
    family: Family,
) -> Option<(Vec<String>, Vec<u16>)> {
    let fam = family.nf_family();
    let mut nf = NfTables::open().ok()?;
    if !nf.table_exists(fam, TABLE).ok()? || nf.chain(fam, TABLE, DNAT_CHAIN).ok()?.is_none() {
        return Some((Vec::new(), Vec::new()));
    }
    let entries = nf.rules(fam, TABLE, Some(DNAT_CHAIN)).ok()?;
    let stale: Vec<String> = ids_in_comments(net, entries.iter().filter_map(Rule::xt_comment))
        .into_iter()
        .filter(|id| !is_valid(id))
        .collect();
    let mut ports = Vec::new();
    for id in &stale {
        let removed = del_nf(&mut nf, net, id, family)?;
        ports.extend(removed.udp_ports);
    }
    Some((stale, ports))
}

/// GC for one family: removes the per-container state of every container of this network
/// whose entry rules carry an ID not in `valid`, over netlink on `iptables-nft` hosts
/// ([`gc_nf`]), else from one listing. Returns the removed IDs and UDP ports.
pub fn gc(
    net: &str,
    is_valid: &dyn Fn(&str) -> bool,
    family: Family,
) -> Result<(Vec<String>, Vec<u16>), PortmapError> {
    let tool = Iptables::new(family);
    if !tool.available() {
        return Ok((Vec::new(), Vec::new()));
    }
    if tool.uses_nf_tables()
        && let Some(done) = gc_nf(net, is_valid, family)
    {
        return Ok(done);
    }
    let listing = match tool.save(TABLE) {
        Ok(l) => l,
        Err(e @ FirewallError::Locked { .. }) => {
            return Err(fw("could not list table nat", &tool)(e));
        }
        Err(_) => return Ok((Vec::new(), Vec::new())),
    };
    let stale: Vec<String> = attached_ids(net, &listing)
        .into_iter()
        .filter(|id| !is_valid(id))
        .collect();
    let mut tx = Restore::new(TABLE);
    let mut ports = Vec::new();
    for id in &stale {
        let (one, removed) = del_transaction(net, id, &listing);
        tx.merge(&one);
        ports.extend(removed.udp_ports);
    }
    // Unreferenced CNI-DN-* chains cannot be attributed to a network: reported only.
    let referenced: Vec<&str> = listing
        .chain_rules(DNAT_CHAIN)
        .filter_map(|r| r.target())
        .collect();
    for c in listing.chains.iter().filter(|c| c.starts_with("CNI-DN-")) {
        if !referenced.contains(&c.as_str()) {
            eprintln!(
                "portmap GC: chain {c} in {} table nat is not referenced by any entry rule and cannot be attributed to a network; left alone",
                tool.bin()
            );
        }
    }
    tool.restore(&tx)
        .map_err(fw("could not remove stale port mappings", &tool))?;
    Ok((stale, ports))
}

/// The mappings of one family (for tests and messages).
pub fn family_mappings(conf: &Config, v6: bool) -> impl Iterator<Item = &PortMapping> {
    conf.mappings.iter().filter(move |m| m.applies_to(v6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::config::NetConf;

    const L: &str = "icee6giejonei6sohng6ahngee7laquohquee9shiGo7fohferakah3Feiyoolu2pei7ciPhoh7shaoX6vai3vuf0ahfaeng8yohb9ceu0daez5hashee8ooYai5wa3y";

    fn upstream(extra: &str) -> Config {
        let json = format!(
            r#"{{"name":"test","type":"portmap","cniVersion":"1.0.0","snat":true,
            "conditionsV4":["-a","b"],"conditionsV6":["-c","d"]{extra},
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
        Config::parse(&nc, || crate::config::Backend::Iptables).unwrap()
    }

    fn lines(v: &[Vec<String>]) -> Vec<String> {
        v.iter().map(|r| r.join(" ")).collect()
    }

    #[test]
    fn chain_name_vector() {
        assert_eq!(dnat_chain("test", L), "CNI-DN-67e92b96e692a494b6b85");
        assert_eq!(
            dnat_chain("mynet", "abc123"),
            "CNI-DN-70a29d9dc18bc4d652ea5"
        );
    }

    #[test]
    fn upstream_entry_rules() {
        let c = upstream("");
        let cm = format!("dnat name: \"test\" id: \"{L}\"");
        let want4 = [
            vec![
                "-m",
                "comment",
                "--comment",
                &cm,
                "-m",
                "multiport",
                "-p",
                "tcp",
                "--destination-ports",
                "8080,8081,8083,8084,8085,8086",
                "-a",
                "b",
            ],
            vec![
                "-m",
                "comment",
                "--comment",
                &cm,
                "-m",
                "multiport",
                "-p",
                "udp",
                "--destination-ports",
                "8080,8082",
                "-a",
                "b",
            ],
        ];
        let got = entry_rules(&c, L, false);
        assert_eq!(got, want4.iter().map(|r| s(r)).collect::<Vec<_>>());
        let got6 = entry_rules(&c, L, true);
        assert_eq!(got6[0].last().map(String::as_str), Some("d"));
        assert_eq!(got6[0][got6[0].len() - 2], "-c");
    }

    #[test]
    fn upstream_dnat_rules_v4() {
        let c = upstream("");
        let got = lines(&dnat_rules(&c, "10.0.0.2/24".parse().unwrap()));
        let want = [
            "-p tcp --dport 8080 -s 10.0.0.2/24 -j CNI-HOSTPORT-SETMARK",
            "-p tcp --dport 8080 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK",
            "-p tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80",
            "-p tcp --dport 8081 -s 10.0.0.2/24 -j CNI-HOSTPORT-SETMARK",
            "-p tcp --dport 8081 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK",
            "-p tcp --dport 8081 -j DNAT --to-destination 10.0.0.2:80",
            "-p udp --dport 8080 -s 10.0.0.2/24 -j CNI-HOSTPORT-SETMARK",
            "-p udp --dport 8080 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK",
            "-p udp --dport 8080 -j DNAT --to-destination 10.0.0.2:81",
            "-p udp --dport 8082 -s 10.0.0.2/24 -j CNI-HOSTPORT-SETMARK",
            "-p udp --dport 8082 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK",
            "-p udp --dport 8082 -j DNAT --to-destination 10.0.0.2:82",
            "-p tcp --dport 8083 -d 192.168.0.2 -s 10.0.0.2/24 -j CNI-HOSTPORT-SETMARK",
            "-p tcp --dport 8083 -d 192.168.0.2 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK",
            "-p tcp --dport 8083 -d 192.168.0.2 -j DNAT --to-destination 10.0.0.2:83",
            "-p tcp --dport 8084 -s 10.0.0.2/24 -j CNI-HOSTPORT-SETMARK",
            "-p tcp --dport 8084 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK",
            "-p tcp --dport 8084 -j DNAT --to-destination 10.0.0.2:84",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn upstream_dnat_rules_v6() {
        let c = upstream("");
        let got = lines(&dnat_rules(&c, "2001:db8::2/64".parse().unwrap()));
        let want = [
            "-p tcp --dport 8080 -s 2001:db8::2/64 -j CNI-HOSTPORT-SETMARK",
            "-p tcp --dport 8080 -j DNAT --to-destination [2001:db8::2]:80",
            "-p tcp --dport 8081 -s 2001:db8::2/64 -j CNI-HOSTPORT-SETMARK",
            "-p tcp --dport 8081 -j DNAT --to-destination [2001:db8::2]:80",
            "-p udp --dport 8080 -s 2001:db8::2/64 -j CNI-HOSTPORT-SETMARK",
            "-p udp --dport 8080 -j DNAT --to-destination [2001:db8::2]:81",
            "-p udp --dport 8082 -s 2001:db8::2/64 -j CNI-HOSTPORT-SETMARK",
            "-p udp --dport 8082 -j DNAT --to-destination [2001:db8::2]:82",
            "-p tcp --dport 8085 -d 2001:db8:a::1 -s 2001:db8::2/64 -j CNI-HOSTPORT-SETMARK",
            "-p tcp --dport 8085 -d 2001:db8:a::1 -j DNAT --to-destination [2001:db8::2]:85",
            "-p tcp --dport 8086 -s 2001:db8::2/64 -j CNI-HOSTPORT-SETMARK",
            "-p tcp --dport 8086 -j DNAT --to-destination [2001:db8::2]:86",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn snat_false_external_chain_and_masq_all() {
        let c = upstream(r#","snat":false"#);
        let got = lines(&dnat_rules(&c, "10.0.0.2/24".parse().unwrap()));
        assert_eq!(got.len(), 6);
        assert!(got.iter().all(|l| l.contains("-j DNAT")));
        let (chains, rules) = shared_rules(&c);
        assert_eq!(chains, vec![DNAT_CHAIN]);
        assert_eq!(rules.len(), 2);

        let c = upstream(r#","externalSetMarkChain":"PLZ-SET-MARK""#);
        let got = lines(&dnat_rules(&c, "10.0.0.2/24".parse().unwrap()));
        assert_eq!(got[0], "-p tcp --dport 8080 -s 10.0.0.2/24 -j PLZ-SET-MARK");
        assert_eq!(got[1], "-p tcp --dport 8080 -s 127.0.0.1 -j PLZ-SET-MARK");
        let (chains, _) = shared_rules(&c);
        assert_eq!(chains, vec![DNAT_CHAIN]);

        let c = upstream(r#","masqAll":true"#);
        let got = lines(&dnat_rules(&c, "10.0.0.2/24".parse().unwrap()));
        assert_eq!(
            got[0],
            "-p tcp --dport 8080 -s 0.0.0.0/0 -j CNI-HOSTPORT-SETMARK"
        );
        assert_eq!(
            got[1],
            "-p tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80"
        );
        assert!(!got.iter().any(|l| l.contains("127.0.0.1")));
        let got = lines(&dnat_rules(&c, "2001:db8::2/64".parse().unwrap()));
        assert_eq!(
            got[0],
            "-p tcp --dport 8080 -s ::/0 -j CNI-HOSTPORT-SETMARK"
        );
    }

    #[test]
    fn mark_chains_for_bit_5() {
        let c = upstream(r#","markMasqBit":5"#);
        let (chains, rules) = shared_rules(&c);
        assert_eq!(chains, vec![SETMARK_CHAIN, MASQ_CHAIN, DNAT_CHAIN]);
        let text: Vec<(String, String, bool)> = rules
            .iter()
            .map(|r| (r.chain.to_string(), r.args.join(" "), r.insert_first))
            .collect();
        assert_eq!(
            text,
            vec![
                (SETMARK_CHAIN.into(), "-m comment --comment CNI portfwd masquerade mark -j MARK --set-xmark 0x20/0x20".into(), false),
                (MASQ_CHAIN.into(), "-m mark --mark 0x20/0x20 -j MASQUERADE".into(), false),
                ("POSTROUTING".into(), "-m comment --comment CNI portfwd requiring masquerade -j CNI-HOSTPORT-MASQ".into(), true),
                ("PREROUTING".into(), "-m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT".into(), false),
                ("OUTPUT".into(), "-m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT".into(), false),
            ]
        );
    }

    #[test]
    fn multiport_chunks_of_15() {
        let maps: Vec<String> = (0..40)
            .map(|i| {
                format!(
                    r#"{{"hostPort":{},"containerPort":80,"protocol":"{}"}}"#,
                    10000 + i,
                    if i % 2 == 0 { "udp" } else { "tcp" }
                )
            })
            .collect();
        let json = format!(
            r#"{{"name":"n","runtimeConfig":{{"portMappings":[{}]}}}}"#,
            maps.join(",")
        );
        let c = Config::parse(&NetConf::parse(json.as_bytes()).unwrap(), || {
            crate::config::Backend::Iptables
        })
        .unwrap();
        let e = entry_rules(&c, "c", false);
        // tcp: 20 ports → 15 + 5; udp: 20 → 15 + 5; tcp first (sorted).
        assert_eq!(e.len(), 4);
        assert_eq!(e[0][7], "tcp");
        assert_eq!(e[0][9].split(',').count(), 15);
        assert_eq!(e[1][9].split(',').count(), 5);
        assert_eq!(e[2][7], "udp");
        assert_eq!(e[2][9].split(',').next(), Some("10000"));
    }

    const EMPTY: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";

    #[test]
    fn add_transaction_on_empty_and_existing_tables() {
        let c = upstream("");
        let (tx, applied) = add_transaction(
            &c,
            "abc",
            "10.0.0.2/24".parse().unwrap(),
            &Ruleset::parse(EMPTY),
        );
        let text = tx.render();
        assert!(
            text.contains("-N CNI-HOSTPORT-SETMARK\n-N CNI-HOSTPORT-MASQ\n-N CNI-HOSTPORT-DNAT\n"),
            "{text}"
        );
        assert!(text.contains("-I POSTROUTING 1 -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ\n"));
        assert!(
            !text.contains(":CNI-HOSTPORT"),
            "shared chains are never declared: {text}"
        );
        let chain = dnat_chain("test", "abc");
        assert!(text.contains(&format!(":{chain} - [0:0]\n")));
        assert_eq!(applied.created_chains.len(), 3);
        assert_eq!(applied.added_shared.len(), 5);
        assert_eq!(applied.entries.len(), 2);

        // With everything shared already there, only the container's part is written, and
        // its old entry rules are deleted first.
        let existing = format!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:CNI-HOSTPORT-DNAT - [0:0]\n:CNI-HOSTPORT-MASQ - [0:0]\n:CNI-HOSTPORT-SETMARK - [0:0]\n:{chain} - [0:0]\n\
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n\
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n\
-A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ\n\
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"test\\\" id: \\\"abc\\\"\" -m multiport --dports 1 -j {chain}\n\
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE\n\
-A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x2000/0x2000\nCOMMIT\n"
        );
        let (tx, applied) = add_transaction(
            &c,
            "abc",
            "10.0.0.2/24".parse().unwrap(),
            &Ruleset::parse(&existing),
        );
        let text = tx.render();
        assert!(applied.created_chains.is_empty());
        assert!(
            applied.added_shared.is_empty(),
            "{:?}",
            applied.added_shared
        );
        assert!(!text.contains("-N "));
        assert!(text.contains(&format!("-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"test\\\" id: \\\"abc\\\"\" -m multiport --dports 1 -j {chain}\n")));

        let (del, removed) = del_transaction("test", "abc", &Ruleset::parse(&existing));
        let text = del.render();
        assert!(removed.any);
        assert!(text.contains(&format!("-F {chain}\n-X {chain}\n")));
        assert!(!text.contains("CNI-HOSTPORT-MASQ"));
        let (del, removed) = del_transaction("test", "other", &Ruleset::parse(&existing));
        assert!(del.is_empty());
        assert!(!removed.any);
        assert_eq!(
            attached_ids("test", &Ruleset::parse(&existing)),
            vec!["abc".to_string()]
        );
        assert!(attached_ids("test2", &Ruleset::parse(&existing)).is_empty());
    }

    /// `(kind, chain)` of each change, to read a plan's order.
    fn kinds(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::DeclareTable { table, .. } => format!("table {table}"),
                Change::DeclareChain { chain, hook, .. } => {
                    format!("base {chain} {}", hook.as_ref().map_or(0, |h| h.priority))
                }
                Change::AddChain { chain, .. } => format!("-N {chain}"),
                Change::AddRule {
                    chain, first: true, ..
                } => format!("-I {chain} 1"),
                Change::AddRule { chain, .. } => format!("-A {chain}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn first_add_plan_in_iptables_restore_order() {
        let nc = NetConf::parse(
            br#"{"name":"test","type":"portmap","cniVersion":"1.0.0",
            "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}}"#,
        )
        .unwrap();
        let c = Config::parse(&nc, || crate::config::Backend::Iptables).unwrap();
        let ip: IpNet = "10.0.0.2/24".parse().unwrap();
        let dn = dnat_chain("test", "abc");
        let (plan, applied) = first_changes(&c, "abc", ip, &NatState::default()).unwrap();
        let mut want: Vec<String> = [
            "table nat",
            "-N CNI-HOSTPORT-SETMARK",
            "-N CNI-HOSTPORT-MASQ",
            "-N CNI-HOSTPORT-DNAT",
            "-A CNI-HOSTPORT-SETMARK",
            "-A CNI-HOSTPORT-MASQ",
            "base POSTROUTING 100",
            "-I POSTROUTING 1",
            "base PREROUTING -100",
            "-A PREROUTING",
            "base OUTPUT -100",
            "-A OUTPUT",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        want.push(format!("-N {dn}"));
        want.extend(std::iter::repeat_n(format!("-A {dn}"), 3));
        want.push("-A CNI-HOSTPORT-DNAT".to_string());
        assert_eq!(kinds(&plan), want);
        // What the listing path records for the same node, for the rollback.
        let (_, listed) = add_transaction(&c, "abc", ip, &Ruleset::parse(EMPTY));
        assert_eq!(applied, listed);

        // A table with its base chains: nothing of them is declared again.
        let state = NatState {
            table: true,
            base: vec!["PREROUTING", "OUTPUT", "POSTROUTING"],
        };
        let (plan, _) = first_changes(&c, "abc", ip, &state).unwrap();
        let k = kinds(&plan);
        assert!(
            k.iter()
                .all(|k| !k.starts_with("table") && !k.starts_with("base"))
        );
        assert_eq!(k.len(), want.len() - 4);
        // Only the DNAT chain and its entries without SNAT.
        let nc = NetConf::parse(
            br#"{"name":"test","type":"portmap","cniVersion":"1.0.0","snat":false,
            "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}}"#,
        )
        .unwrap();
        let nosnat = Config::parse(&nc, || crate::config::Backend::Iptables).unwrap();
        let (plan, _) = first_changes(&nosnat, "abc", ip, &state).unwrap();
        assert_eq!(
            kinds(&plan)[..3],
            ["-N CNI-HOSTPORT-DNAT", "-A PREROUTING", "-A OUTPUT"]
        );
        // Conditions (iptables arguments of the operator's own) are not encoded.
        assert!(first_changes(&upstream(""), "abc", ip, &NatState::default()).is_none());
    }

    fn nf_rule(chain: &str, handle: u64, exprs: Vec<Expr>) -> Rule {
        Rule {
            chain: chain.into(),
            handle,
            comment: None,
            exprs,
            raw_exprs: Vec::new(),
            compat: None,
        }
    }

    fn jump(c: &str) -> Expr {
        Expr::Immediate {
            verdict: Some(Verdict::Jump(c.into())),
            value: Vec::new(),
        }
    }

    #[test]
    fn shared_rules_as_iptables_nft_encodes_them() {
        let mut comment = SETMARK_COMMENT.as_bytes().to_vec();
        comment.resize(256, 0);
        let m = 0x2000u32.to_ne_bytes();
        let mut tinfo = m.to_vec();
        tinfo.extend_from_slice(&m);
        let setmark = nf_rule(
            SETMARK_CHAIN,
            1,
            vec![
                Expr::Match {
                    name: "comment".into(),
                    rev: 0,
                    info: comment,
                },
                Expr::Counter,
                Expr::Target {
                    name: "MARK".into(),
                    rev: 2,
                    info: tinfo,
                },
            ],
        );
        assert!(is_setmark_rule(&setmark, 0x2000));
        assert!(
            !is_setmark_rule(&setmark, 0x20),
            "another markMasqBit is another rule"
        );
        let masq = nf_rule(
            MASQ_CHAIN,
            2,
            vec![
                Expr::Meta { key: META_MARK },
                Expr::Bitwise {
                    mask: m.to_vec(),
                    xor: vec![0; 4],
                },
                Expr::Cmp {
                    op: 0,
                    data: m.to_vec(),
                },
                Expr::Counter,
                Expr::Target {
                    name: "MASQUERADE".into(),
                    rev: 0,
                    info: vec![0; 24],
                },
            ],
        );
        assert!(is_masq_rule(&masq, 0x2000));
        assert!(!is_masq_rule(&setmark, 0x2000));
        let mut addrtype = vec![0u8, 0];
        addrtype.extend_from_slice(&4u16.to_ne_bytes());
        addrtype.extend_from_slice(&[0; 4]);
        let entry = nf_rule(
            "PREROUTING",
            3,
            vec![
                Expr::Match {
                    name: "addrtype".into(),
                    rev: 1,
                    info: addrtype.clone(),
                },
                Expr::Counter,
                jump(DNAT_CHAIN),
            ],
        );
        assert!(is_dnat_entry_jump(&entry));
        let other = nf_rule(
            "PREROUTING",
            4,
            vec![
                Expr::Match {
                    name: "addrtype".into(),
                    rev: 1,
                    info: addrtype,
                },
                jump("KUBE-X"),
            ],
        );
        assert!(!is_dnat_entry_jump(&other));
    }

    #[test]
    fn transactions_without_a_listing() {
        let c = upstream("");
        let chain = dnat_chain("test", "abc");
        let (tx, applied) = new_transaction(&c, "abc", "10.0.0.2/24".parse().unwrap(), true);
        let text = tx.render();
        assert!(text.starts_with("*nat\n-C CNI-HOSTPORT-SETMARK "), "{text}");
        assert!(text.contains(&format!("\n-N {chain}\n")));
        assert!(
            !text.contains(":CNI-"),
            "nothing is declared (flushed): {text}"
        );
        assert_eq!(applied.entries.len(), 2);
        assert!(applied.created_chains.is_empty() && applied.added_shared.is_empty());
        let (tx, _) = new_transaction(&c, "abc", "10.0.0.2/24".parse().unwrap(), false);
        assert!(!tx.render().contains("-C "));
        // The upstream conditions ("-a b") are not encodable: iptables-restore is used.
        assert!(new_changes(&c, "abc", "10.0.0.2/24".parse().unwrap()).is_none());
        let plain = Config::parse(
            &NetConf::parse(
                br#"{"name":"test","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":53,"containerPort":53,"protocol":"udp"}]}}"#,
            )
            .unwrap(),
            || crate::config::Backend::Iptables,
        )
        .unwrap();
        let ch = new_changes(&plain, "abc", "10.0.0.2/24".parse().unwrap()).unwrap();
        assert!(matches!(&ch[0], Change::AddChain { chain: c, .. } if *c == chain));
        // 2 mappings x (2 SETMARK + DNAT) + 2 entry rules.
        assert_eq!(ch.len(), 1 + 6 + 2);
        let del = exact_del_transaction(&plain, "abc", false).render();
        assert!(del.contains("-D CNI-HOSTPORT-DNAT -m comment --comment \"dnat name: \\\"test\\\" id: \\\"abc\\\"\" -m multiport -p tcp --destination-ports 8080 -j "));
        assert!(
            del.ends_with(&format!("-F {chain}\n-X {chain}\nCOMMIT\n")),
            "{del}"
        );
        let none = Config::parse(&NetConf::parse(br#"{"name":"test"}"#).unwrap(), || {
            crate::config::Backend::Iptables
        })
        .unwrap();
        assert!(exact_del_transaction(&none, "abc", false).is_empty());
    }

    #[test]
    fn netlink_del_plan() {
        let chain = dnat_chain("test", "abc");
        let udp = nf_rule(
            &chain,
            10,
            vec![
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
                Expr::Counter,
                jump(SETMARK_CHAIN),
            ],
        );
        let entries = vec![
            nf_rule(DNAT_CHAIN, 1, vec![Expr::Counter, jump(&chain)]),
            nf_rule(DNAT_CHAIN, 2, vec![Expr::Counter, jump("CNI-DN-other")]),
            nf_rule(DNAT_CHAIN, 3, vec![Expr::Counter, jump(&chain)]),
        ];
        let state = |use_count: u32| ChainState {
            entry: DNAT_CHAIN,
            chain: chain.clone(),
            info: Some(ChainInfo {
                handle: 9,
                use_count,
                base: false,
                comment: None,
            }),
            entry_rules: entries.clone(),
            chain_rules: vec![udp.clone()],
        };
        let (changes, removed) = plan_del_nf(Family::V4, &[state(3)]).unwrap();
        let handles: Vec<u64> = changes
            .iter()
            .filter_map(|c| match c {
                Change::DeleteRule { handle, .. } => Some(*handle),
                _ => None,
            })
            .collect();
        assert_eq!(handles, vec![1, 3]);
        assert!(
            matches!(changes.last(), Some(Change::DeleteChain { chain: c, .. }) if *c == chain)
        );
        assert_eq!(removed.udp_ports, vec![5353]);
        assert!(removed.any);
        // A reference from elsewhere (count 4 = 1 rule + 3 jumps, 2 seen): undecidable.
        assert!(plan_del_nf(Family::V4, &[state(4)]).is_none());
        // No chain: nothing to do.
        let absent = ChainState {
            info: None,
            ..state(3)
        };
        let (changes, removed) = plan_del_nf(Family::V4, &[absent]).unwrap();
        assert!(changes.is_empty() && !removed.any);
    }

    #[test]
    fn idle_udp_ports_from_counters() {
        let conf = Config::parse(
            &NetConf::parse(
                br#"{"name":"test","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":53,"containerPort":53,"protocol":"udp"},{"hostPort":54,"containerPort":54,"protocol":"udp"}]}}"#,
            )
            .unwrap(),
            || crate::config::Backend::Iptables,
        )
        .unwrap();
        let chain = dnat_chain("test", "abc");
        // The container chain's rules as ADD writes them, listed with their counters.
        let listed = |busy: &[u16]| -> Vec<Rule> {
            new_changes(&conf, "abc", "10.0.0.2/24".parse().unwrap())
                .unwrap()
                .into_iter()
                .filter_map(|c| match c {
                    Change::AddRule {
                        chain: ch, exprs, ..
                    } if ch == chain => Some(exprs),
                    _ => None,
                })
                .enumerate()
                .map(|(i, exprs)| {
                    let mut r = nf_rule(&chain, i as u64 + 10, exprs.clone());
                    r.raw_exprs = cni_kernel::nftables::encode_exprs(&exprs);
                    let dnat_port = r.payload_eq(TRANSPORT_HEADER, 2).map(|(d, _)| d);
                    let is_dnat = exprs
                        .iter()
                        .any(|e| matches!(e, Expr::Target { name, .. } if name == "DNAT"));
                    if is_dnat
                        && busy
                            .iter()
                            .any(|p| dnat_port == Some(p.to_be_bytes().to_vec()))
                    {
                        // Counted traffic: a rule whose counter the kernel did not report as 0.
                        r.raw_exprs.clear();
                    }
                    r
                })
                .collect()
        };
        let rules = listed(&[]);
        assert_eq!(rules.len(), 9, "3 mappings x (2 SETMARK + DNAT)");
        let mut idle = idle_udp_ports_nf(&rules);
        idle.sort_unstable();
        assert_eq!(
            idle,
            vec![53, 54],
            "no traffic: both UDP ports idle, TCP never"
        );
        assert_eq!(idle_udp_ports_nf(&listed(&[54])), vec![53]);
        assert!(idle_udp_ports_nf(&listed(&[53, 54])).is_empty());
        // Without counters (another tool's rules): nothing is known to be idle.
        let bare: Vec<Rule> = rules
            .iter()
            .map(|r| nf_rule(&chain, r.handle, r.exprs.clone()))
            .collect();
        assert!(idle_udp_ports_nf(&bare).is_empty());
        // plan_del_nf reports them with the ports it removes.
        let st = ChainState {
            entry: DNAT_CHAIN,
            chain: chain.clone(),
            info: Some(ChainInfo {
                handle: 9,
                use_count: 9,
                base: false,
                comment: None,
            }),
            entry_rules: Vec::new(),
            chain_rules: listed(&[54]),
        };
        let (_, removed) = plan_del_nf(Family::V4, &[st]).unwrap();
        assert_eq!(removed.idle_udp_ports, vec![53]);
    }

    #[test]
    fn check_names_what_is_missing() {
        let c = upstream("");
        let missing = check_listing(
            &c,
            "abc",
            "10.0.0.2/24".parse().unwrap(),
            &Ruleset::parse(EMPTY),
        );
        assert!(
            missing.iter().any(|m| m == "chain CNI-HOSTPORT-DNAT"),
            "{missing:?}"
        );
        assert!(missing.iter().any(|m| m.starts_with("chain CNI-DN-")));
    }
}
