//! Masquerading (`ipMasq`): one firewall transaction per ADD, DEL and GC.
//!
//! iptables ADD: one add-only transaction per address family, planned without a listing
//! (creating the container's chain, which fails if it exists, guards against duplicates):
//! on `iptables-nft` hosts an nf_tables transaction over netlink with the rules encoded as
//! `iptables-nft` encodes them (no process), elsewhere one `iptables-restore --noflush`.
//! Only when it does not apply (chain already there, tools broken) does the listing path
//! run (`iptables-save` + a restore of what is missing).
//!
//! iptables DEL: on `iptables-nft` hosts the rules are found and removed over netlink in one
//! nf_tables transaction, no process at all; otherwise an exact `-D`/`-F`/`-X` restore
//! from the known addresses, and the listing path when that does not apply. Only the
//! families of the attachment's addresses are touched.
//!
//! nftables: the table is read over netlink, `postrouting` is rewritten only when it is not
//! already what we write, and one `nft -f -` applies ADD (an ADD that only adds the
//! attachment's rules commits them over netlink instead); DEL deletes over netlink.
//! DEL always tries both backends, as the reference does, and skips a backend cheaply (a
//! netlink probe) when its table holds nothing of the attachment.

pub mod iptables;
pub mod nft;

use crate::config::Backend;
use crate::error::BridgeError;
use cni::gc::Attachment;
use cni_kernel::firewall::iptables::{Iptables, Ruleset};
use cni_kernel::firewall::{Family, names, nft as nft_tool};
use cni_kernel::nftables::{self, Change, NfTables};
use ipnet::IpNet;
use std::collections::HashSet;

/// The attachment whose rules are handled.
#[derive(Clone, Copy, Debug)]
pub struct Instance<'a> {
    /// The network name (`name`).
    pub net: &'a str,
    /// `CNI_IFNAME` (only the nftables backend keys rules by it).
    pub ifname: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
}

fn families(addrs: &[IpNet]) -> Vec<Family> {
    let mut out: Vec<Family> = addrs.iter().map(|a| Family::of(&a.addr())).collect();
    out.sort();
    out.dedup();
    out
}

fn of_family(addrs: &[IpNet], f: Family) -> Vec<IpNet> {
    addrs
        .iter()
        .filter(|a| Family::of(&a.addr()) == f)
        .copied()
        .collect()
}

fn save(f: Family) -> Result<Ruleset, BridgeError> {
    let ipt = Iptables::new(f);
    ipt.save(iptables::TABLE)
        .map_err(|e| BridgeError::firewall(format!("failed to list {} nat", ipt.bin()), e))
}

/// The listing-based ADD of one family: adds what the listing lacks (also repairs a
/// half-present attachment).
fn iptables_setup_listed(
    inst: Instance<'_>,
    f: Family,
    addrs: &[IpNet],
    listing: Option<Ruleset>,
) -> Result<(), BridgeError> {
    let listing = match listing {
        Some(l) => l,
        None => save(f)?,
    };
    let tx = iptables::plan_setup(&listing, inst.net, inst.container_id, addrs);
    let ipt = Iptables::new(f);
    ipt.restore(&tx).map_err(|e| {
        BridgeError::firewall(format!("failed to set up {} masquerading", ipt.bin()), e)
    })
}

/// The ADD of one family without a listing: on `iptables-nft` hosts one nf_tables
/// transaction over netlink ([`iptables::plan_new_nf`], no process; on a node without the
/// `nat` table, declaring it too: [`iptables::with_nat_declared`]), otherwise one add-only
/// `iptables-restore` creating the chain with `-N` ([`iptables::plan_new`]). False if it did
/// not apply (the chain exists, or the tools do not work); nothing was changed then.
fn iptables_setup_new(inst: Instance<'_>, f: Family, addrs: &[IpNet]) -> bool {
    let ipt = Iptables::new(f);
    if ipt.uses_nf_tables()
        && let Some(changes) = iptables::plan_new_nf(f, inst.net, inst.container_id, addrs)
        && let Ok(mut nf) = NfTables::open()
    {
        // A node where iptables-nft has not created the nat table yet: created here as it
        // creates it, in the same transaction. Asked first: a transaction the kernel refuses
        // for a missing table took it 25 ms here.
        let changes = match nf.table_exists(f.nf_family(), iptables::TABLE) {
            Ok(false) => iptables::with_nat_declared(f, changes),
            _ => changes,
        };
        match nf.commit(&changes, None) {
            Ok(()) => return true,
            // The chain exists: only the listing can tell what is missing.
            Err(e) if e.is_exists() => return false,
            Err(_) => {}
        }
    }
    let tx = iptables::plan_new(inst.net, inst.container_id, addrs);
    ipt.restore(&tx).is_ok()
}

fn iptables_setup(inst: Instance<'_>, addrs: &[IpNet]) -> Result<(), BridgeError> {
    for f in families(addrs) {
        let fa = of_family(addrs, f);
        if !iptables_setup_new(inst, f, &fa) {
            iptables_setup_listed(inst, f, &fa, None)?;
        }
    }
    Ok(())
}

/// What an nftables ADD needs to know of the masquerade table, read over netlink: this
/// instance's stale rules, whether `postrouting` is current, whether everything exists.
struct NftState {
    stale: Vec<u64>,
    postrouting_current: bool,
    /// The table and both chains exist.
    exist: bool,
    /// The table exists.
    table: bool,
}

fn nft_state(nf: &mut NfTables, inst: Instance<'_>) -> Option<NftState> {
    if !nf.table_exists(nft::NF_FAMILY, nft::TABLE).ok()? {
        return Some(NftState {
            stale: Vec::new(),
            postrouting_current: false,
            exist: false,
            table: false,
        });
    }
    let exist = nf
        .chain(nft::NF_FAMILY, nft::TABLE, nft::CHAIN)
        .ok()?
        .is_some()
        && nf
            .chain(nft::NF_FAMILY, nft::TABLE, "postrouting")
            .ok()?
            .is_some();
    let post = nf
        .rules(nft::NF_FAMILY, nft::TABLE, Some("postrouting"))
        .ok()?;
    let checks = nf
        .rules(nft::NF_FAMILY, nft::TABLE, Some(nft::CHAIN))
        .ok()?;
    let stale = nft::teardown_changes(&checks, inst.net, inst.ifname, inst.container_id)
        .into_iter()
        .filter_map(|c| match c {
            Change::DeleteRule { handle, .. } => Some(handle),
            _ => None,
        })
        .collect();
    Some(NftState {
        stale,
        postrouting_current: nft::postrouting_is_current(&post),
        exist,
        table: true,
    })
}

fn nft_setup(inst: Instance<'_>, addrs: &[IpNet]) -> Result<(), BridgeError> {
    // nf_tables is read over netlink (no `nft` process); the `nft -j` listing remains for
    // kernels where that fails. When only this attachment's rules are missing (every ADD
    // after the network's first), or nothing exists yet (the network's first ADD on the
    // node), the same is committed over netlink too; a refused transaction changed nothing,
    // and `nft` then writes the same rules.
    let mut nf = NfTables::open().ok();
    let state = nf.as_mut().and_then(|nf| nft_state(nf, inst));
    if let (Some(nf), Some(st)) = (nf.as_mut(), &state) {
        let (net, ifname, id) = (inst.net, inst.ifname, inst.container_id);
        let changes = if !st.table {
            nft::first_add_changes(net, ifname, id, addrs)
        } else if st.exist && st.postrouting_current && st.stale.is_empty() {
            nft::rule_changes(net, ifname, id, addrs)
        } else {
            None
        };
        if let Some(changes) = changes
            && nf.commit(&changes, None).is_ok()
        {
            return Ok(());
        }
    }
    let script = match state {
        Some(st) => nft::setup_script_with(
            &st.stale,
            !st.postrouting_current,
            st.exist,
            inst.net,
            inst.ifname,
            inst.container_id,
            addrs,
        ),
        None => {
            let listing = nft_tool::list_table(nft::FAMILY, nft::TABLE).map_err(|e| {
                BridgeError::firewall("failed to list nftables masquerade table", e)
            })?;
            let existing = listing.as_ref().map(nft::masq_rules).unwrap_or_default();
            nft::setup_script(&existing, inst.net, inst.ifname, inst.container_id, addrs)
        }
    };
    nft_tool::apply(&script)
        .map_err(|e| BridgeError::firewall("failed to set up nftables masquerading", e))
}

/// Installs the masquerade rules of an attachment; returns the backend used. With no
/// explicit backend this is the reference's default: iptables, unless it is unusable and
/// nftables is usable. A successful add-only transaction proves iptables usable without a
/// separate probe; only when it fails is a listing taken to tell "chain exists" from
/// "iptables does not work".
pub fn setup(
    backend: Option<Backend>,
    inst: Instance<'_>,
    addrs: &[IpNet],
) -> Result<Backend, BridgeError> {
    if addrs.is_empty() {
        return Ok(backend.unwrap_or(Backend::Iptables));
    }
    match backend {
        Some(Backend::Iptables) => iptables_setup(inst, addrs).map(|_| Backend::Iptables),
        Some(Backend::Nftables) => nft_setup(inst, addrs).map(|_| Backend::Nftables),
        None => {
            let fams = families(addrs);
            let first_family = fams.first().copied().unwrap_or(Family::V4);
            let available = Iptables::new(Family::V4).available();
            if available && iptables_setup_new(inst, first_family, &of_family(addrs, first_family))
            {
                for &f in &fams[1..] {
                    let fa = of_family(addrs, f);
                    if !iptables_setup_new(inst, f, &fa) {
                        iptables_setup_listed(inst, f, &fa, None)?;
                    }
                }
                return Ok(Backend::Iptables);
            }
            let first = if available {
                save(first_family).ok()
            } else {
                None
            };
            match first {
                Some(rs) => {
                    iptables_setup_listed(
                        inst,
                        first_family,
                        &of_family(addrs, first_family),
                        Some(rs),
                    )?;
                    for &f in &fams[1..] {
                        let fa = of_family(addrs, f);
                        if !iptables_setup_new(inst, f, &fa) {
                            iptables_setup_listed(inst, f, &fa, None)?;
                        }
                    }
                    Ok(Backend::Iptables)
                }
                None if nft_tool::usable() => nft_setup(inst, addrs).map(|_| Backend::Nftables),
                // Neither works: report the iptables failure, as the reference does.
                None => iptables_setup(inst, addrs).map(|_| Backend::Iptables),
            }
        }
    }
}

fn note(msg: &str) {
    eprintln!("bridge: {msg}");
}

/// One family's iptables removal in flight.
enum Pending {
    /// Committed over netlink already.
    Done,
    /// An exact `iptables-restore` is running; on failure the listing path follows.
    Exact {
        family: Family,
        run: cni_kernel::firewall::iptables::Pending,
    },
    /// Nothing tried yet: the listing path (at [`Teardown::finish`]).
    Listed { family: Family },
}

/// A masquerade teardown that has been started: the nf_tables changes are committed, or the
/// `iptables-restore` of each family runs (both families at once); [`Teardown::finish`]
/// collects the outcome. DEL runs it after the veth pair is gone (see `del`: committed while
/// the link's deletion waits, it made that wait longer).
pub struct Teardown<'a> {
    inst: Instance<'a>,
    addrs: Option<Vec<IpNet>>,
    pending: Vec<Pending>,
    nf: Option<NfTables>,
    errors: Vec<BridgeError>,
}

/// Commits over netlink what can be decided from nf_tables alone (`iptables-nft` rules,
/// and the nft backend's table). `None` = fall back to the tools for this family.
fn nf_teardown_family(
    nf: &mut NfTables,
    inst: Instance<'_>,
    f: Family,
    addrs: Option<&[IpNet]>,
) -> Option<()> {
    let chain = names::chain_name(inst.net, inst.container_id);
    for _ in 0..3 {
        let generation = nf.generation().ok()?;
        let fam = f.nf_family();
        let info = nf.chain(fam, iptables::TABLE, &chain).ok()?;
        let (post, own) = match &info {
            Some(i) => {
                let own = nf.rules(fam, iptables::TABLE, Some(&chain)).ok()?;
                let jumps = nf
                    .jumps_to(fam, iptables::TABLE, iptables::POSTROUTING, &chain, i, &own)
                    .ok()?;
                (jumps, own.len())
            }
            None => (Vec::new(), 0),
        };
        let changes = iptables::plan_teardown_nf(
            f,
            &post,
            info.as_ref().map(|i| (i, own)),
            inst.net,
            inst.container_id,
            addrs,
        )?;
        match nf.commit(&changes, Some(generation)) {
            Ok(()) => return Some(()),
            // The ruleset changed between listing and commit: list again.
            Err(e) if e.is_restart() => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Starts [`teardown`]: commits the nf_tables changes or starts the `iptables-restore` runs.
fn teardown_start<'a>(inst: Instance<'a>, addrs: Option<&[IpNet]>) -> Teardown<'a> {
    let addrs: Option<Vec<IpNet>> = addrs.filter(|a| !a.is_empty()).map(<[IpNet]>::to_vec);
    let fams = match &addrs {
        Some(a) => families(a),
        None => vec![Family::V4, Family::V6],
    };
    let mut t = Teardown {
        inst,
        addrs: addrs.clone(),
        pending: Vec::new(),
        nf: NfTables::open().ok(),
        errors: Vec::new(),
    };
    for f in fams {
        let ipt = Iptables::new(f);
        if !ipt.available() {
            continue;
        }
        let family_addrs = addrs.as_ref().map(|a| of_family(a, f));
        if ipt.uses_nf_tables()
            && let Some(nf) = t.nf.as_mut()
            && nf_teardown_family(nf, inst, f, family_addrs.as_deref()).is_some()
        {
            t.pending.push(Pending::Done);
            continue;
        }
        match &family_addrs {
            Some(fa) if !fa.is_empty() => {
                let tx = iptables::plan_exact_teardown(inst.net, inst.container_id, fa);
                match ipt.restore_start(&tx) {
                    Ok(Some(run)) => t.pending.push(Pending::Exact { family: f, run }),
                    _ => t.pending.push(Pending::Listed { family: f }),
                }
            }
            _ => t.pending.push(Pending::Listed { family: f }),
        }
    }
    // The nftables backend: probed over netlink, changed over netlink.
    match t.nf.as_mut() {
        Some(nf) => match nf.table_exists(nft::NF_FAMILY, nft::TABLE) {
            Ok(false) => {}
            Ok(true) => {
                let done = nf
                    .rules(nft::NF_FAMILY, nft::TABLE, Some(nft::CHAIN))
                    .ok()
                    .map(|rules| {
                        nft::teardown_changes(&rules, inst.net, inst.ifname, inst.container_id)
                    })
                    .and_then(|changes| nf.commit(&changes, None).ok());
                if done.is_none() {
                    nft_teardown_tool(inst, &mut t.errors);
                }
            }
            Err(_) => nft_teardown_tool(inst, &mut t.errors),
        },
        None => nft_teardown_tool(inst, &mut t.errors),
    }
    t
}

/// The nftables removal through the `nft` tool (when netlink could not be used).
fn nft_teardown_tool(inst: Instance<'_>, errors: &mut Vec<BridgeError>) {
    if !nft_tool::available() {
        return;
    }
    match nft_tool::list_table(nft::FAMILY, nft::TABLE) {
        Ok(None) => {}
        Ok(Some(listing)) => {
            let script = nft::teardown_script(
                &nft::masq_rules(&listing),
                inst.net,
                inst.ifname,
                inst.container_id,
            );
            if let Err(e) = nft_tool::apply(&script) {
                errors.push(BridgeError::firewall(
                    "failed to remove nftables masquerade rules",
                    e,
                ));
            }
        }
        Err(e) => note(&format!("skipping nftables masquerade cleanup: {e}")),
    }
}

/// The listing-based removal of one family.
fn iptables_teardown_listed(
    inst: Instance<'_>,
    f: Family,
    addrs: Option<&[IpNet]>,
    errors: &mut Vec<BridgeError>,
) {
    let ipt = Iptables::new(f);
    let listing = match ipt.save(iptables::TABLE) {
        Ok(l) => l,
        Err(e) => {
            note(&format!("skipping {} masquerade cleanup: {e}", ipt.bin()));
            return;
        }
    };
    let family_addrs = addrs.map(|a| of_family(a, f));
    let tx = iptables::plan_teardown(
        &listing,
        inst.net,
        inst.container_id,
        family_addrs.as_deref(),
    );
    if let Err(e) = ipt.restore(&tx) {
        errors.push(BridgeError::firewall(
            format!("failed to remove {} masquerade rules", ipt.bin()),
            e,
        ));
    }
}

impl Teardown<'_> {
    /// Waits for what was started and falls back to the listing where an exact removal did
    /// not apply.
    pub fn finish(mut self) -> Result<(), BridgeError> {
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            match p {
                Pending::Done => {}
                Pending::Exact { family, run } => {
                    if run.wait().is_err() {
                        iptables_teardown_listed(
                            self.inst,
                            family,
                            self.addrs.as_deref(),
                            &mut self.errors,
                        );
                    }
                }
                Pending::Listed { family } => iptables_teardown_listed(
                    self.inst,
                    family,
                    self.addrs.as_deref(),
                    &mut self.errors,
                ),
            }
        }
        drop(self.nf.take());
        BridgeError::collect(std::mem::take(&mut self.errors))
    }
}

/// Removes an attachment's masquerade rules from both backends.
/// `addrs` are the attachment's addresses if known (container interface or `prevResult`);
/// without them everything keyed by `(network, container ID)` (iptables) or `(network,
/// ifname, container ID)` (nftables) goes. A backend whose tool is missing or does not work
/// is skipped with a note on stderr (nothing can have been created with it). Only the
/// families of the known addresses are touched; both when they are unknown.
pub fn teardown(inst: Instance<'_>, addrs: Option<&[IpNet]>) -> Result<(), BridgeError> {
    teardown_start(inst, addrs).finish()
}

/// Verifies the attachment's masquerade rules in the backend ADD would use.
/// CHECK's question for the iptables backend answered over netlink (`iptables-nft` tools of
/// every family involved; no process): the attachment's chain and `POSTROUTING` jumps hold
/// every rule ADD writes ([`iptables::plan_new_nf`]), as it writes them. Only a yes counts:
/// anything else is left to the listing, which names what is missing.
fn iptables_present_nf(inst: Instance<'_>, addrs: &[IpNet]) -> bool {
    let Ok(mut nf) = NfTables::open() else {
        return false;
    };
    let chain = names::chain_name(inst.net, inst.container_id);
    families(addrs).into_iter().all(|f| {
        let fam = f.nf_family();
        let (true, Some(wanted), Ok(Some(info)), Ok(own)) = (
            Iptables::new(f).uses_nf_tables(),
            iptables::plan_new_nf(f, inst.net, inst.container_id, &of_family(addrs, f)),
            nf.chain(fam, iptables::TABLE, &chain),
            nf.rules(fam, iptables::TABLE, Some(&chain)),
        ) else {
            return false;
        };
        let Ok(jumps) = nf.jumps_to(
            fam,
            iptables::TABLE,
            iptables::POSTROUTING,
            &chain,
            &info,
            &own,
        ) else {
            return false;
        };
        nftables::rules_present(&wanted, |c| {
            if c == chain {
                Some(&own)
            } else {
                (c == iptables::POSTROUTING).then_some(&jumps[..])
            }
        })
    })
}

/// CHECK's question for the nftables backend answered over netlink (no process): the
/// masquerade table's `postrouting` as ADD writes it, and every rule of the attachment in
/// `masq_checks` ([`nft::rule_changes`]). Only a yes counts, as for iptables.
fn nft_present_nf(inst: Instance<'_>, addrs: &[IpNet]) -> bool {
    let Ok(mut nf) = NfTables::open() else {
        return false;
    };
    let (Some(wanted), Ok(post)) = (
        nft::rule_changes(inst.net, inst.ifname, inst.container_id, addrs),
        nf.rules(nft::NF_FAMILY, nft::TABLE, Some("postrouting")),
    ) else {
        return false;
    };
    nft::postrouting_is_current(&post) && nf.holds(nft::NF_FAMILY, nft::TABLE, &wanted)
}

pub fn verify(
    backend: Option<Backend>,
    inst: Instance<'_>,
    addrs: &[IpNet],
) -> Result<(), BridgeError> {
    if backend != Some(Backend::Nftables) && iptables_present_nf(inst, addrs) {
        return Ok(());
    }
    let use_nft = match backend {
        Some(Backend::Nftables) => true,
        Some(Backend::Iptables) => false,
        None => !(Iptables::new(Family::V4).available() && save(Family::V4).is_ok()),
    };
    let fail = |m: String| BridgeError::System(m);
    if use_nft && nft_present_nf(inst, addrs) {
        return Ok(());
    }
    if use_nft {
        let listing = nft_tool::list_table(nft::FAMILY, nft::TABLE)
            .map_err(|e| BridgeError::firewall("failed to list nftables masquerade table", e))?;
        return nft::verify(
            listing.as_ref(),
            inst.net,
            inst.ifname,
            inst.container_id,
            addrs,
        )
        .map_err(fail);
    }
    for f in families(addrs) {
        let listing = save(f)?;
        iptables::verify(&listing, inst.net, inst.container_id, &of_family(addrs, f))
            .map_err(|m| fail(format!("{}: {m}", Iptables::new(f).bin())))?;
    }
    Ok(())
}

/// The iptables part of [`gc`] for one family over netlink (`iptables-nft` tools): the stale
/// IDs from the comments of `POSTROUTING`'s rules and of the rules of any masquerade chain
/// that no commented `POSTROUTING` rule jumps to (a chain whose jump is gone is still
/// found), each removed as DEL removes it ([`nf_teardown_family`]); no process. The rest of
/// the `nat` table (portmap's chains, kube-proxy's) is not read: on a busy node it is most
/// of the table. The IDs removed; `None` where nf_tables cannot be read or changed that way
/// (the listing path then runs).
fn iptables_gc_nf(net: &str, valid: &[Attachment], f: Family) -> Option<Vec<String>> {
    let mut nf = NfTables::open().ok()?;
    let fam = f.nf_family();
    if !nf.table_exists(fam, iptables::TABLE).ok()? {
        return Some(Vec::new());
    }
    let entry = nf
        .rules(fam, iptables::TABLE, Some(iptables::POSTROUTING))
        .ok()?;
    let mut comments: Vec<String> = Vec::new();
    let mut covered: HashSet<&str> = HashSet::new();
    for r in &entry {
        if let Some(c) = r.xt_comment() {
            comments.push(c);
            covered.extend(r.jump_target());
        }
    }
    for chain in nf.chain_names(fam, iptables::TABLE).ok()? {
        if names::is_chain_name(&chain) && !covered.contains(chain.as_str()) {
            let rules = nf.rules(fam, iptables::TABLE, Some(&chain)).ok()?;
            comments.extend(rules.iter().filter_map(|r| r.xt_comment()));
        }
    }
    let stale = iptables::stale_ids(comments.iter(), net, valid);
    for id in &stale {
        let inst = Instance {
            net,
            ifname: "",
            container_id: id,
        };
        nf_teardown_family(&mut nf, inst, f, None)?;
    }
    Some(stale)
}

/// GC: removes the masquerade rules of every attachment of `net` not in `valid`, in both
/// backends (what was removed is noted on stderr).
pub fn gc(net: &str, valid: &[Attachment]) -> Result<(), BridgeError> {
    let mut errors = Vec::new();
    for f in [Family::V4, Family::V6] {
        let ipt = Iptables::new(f);
        if !ipt.available() {
            continue;
        }
        if ipt.uses_nf_tables()
            && let Some(stale) = iptables_gc_nf(net, valid, f)
        {
            if !stale.is_empty() {
                note(&format!(
                    "GC: removed {} masquerade rules of stale containers {stale:?}",
                    ipt.bin()
                ));
            }
            continue;
        }
        let listing = match ipt.save(iptables::TABLE) {
            Ok(l) => l,
            Err(e) => {
                note(&format!("GC: skipping {}: {e}", ipt.bin()));
                continue;
            }
        };
        let (tx, stale) = iptables::plan_gc(&listing, net, valid);
        if stale.is_empty() {
            continue;
        }
        match ipt.restore(&tx) {
            Ok(()) => note(&format!(
                "GC: removed {} masquerade rules of stale containers {stale:?}",
                ipt.bin()
            )),
            Err(e) => errors.push(BridgeError::firewall(
                format!("GC: failed to remove {} masquerade rules", ipt.bin()),
                e,
            )),
        }
    }
    match nft_gc_nf(net, valid) {
        Some(Ok(())) => {}
        Some(Err(e)) => errors.push(e),
        None if nft_tool::available() => match nft_tool::list_table(nft::FAMILY, nft::TABLE) {
            Ok(None) => {}
            Ok(Some(listing)) => {
                let script = nft::gc_script(&nft::masq_rules(&listing), net, valid);
                if let Err(e) = nft_tool::apply(&script) {
                    errors.push(BridgeError::firewall(
                        "GC: failed to remove nftables masquerade rules",
                        e,
                    ));
                }
            }
            Err(e) => note(&format!("GC: skipping nftables: {e}")),
        },
        None => {}
    }
    BridgeError::collect(errors)
}

/// The nftables part of [`gc`] over netlink: nothing to do without the table (an iptables
/// node), else the stale rules of `masq_checks` deleted in one transaction. `None` where
/// nf_tables cannot be read that way (the `nft` listing then runs).
fn nft_gc_nf(net: &str, valid: &[Attachment]) -> Option<Result<(), BridgeError>> {
    let mut nf = NfTables::open().ok()?;
    if !nf.table_exists(nft::NF_FAMILY, nft::TABLE).ok()? {
        return Some(Ok(()));
    }
    let checks = nf
        .rules(nft::NF_FAMILY, nft::TABLE, Some(nft::CHAIN))
        .ok()?;
    let changes = nft::gc_changes(&checks, net, valid);
    Some(
        nf.commit(&changes, None)
            .map_err(|e| BridgeError::netlink("GC: failed to remove nftables masquerade rules", e)),
    )
}

/// STATUS: can the backend ADD would use work? `None` = the reference's default (either
/// backend will do).
pub fn usable(backend: Option<Backend>) -> Result<(), BridgeError> {
    let ipt = || Iptables::new(Family::V4).usable();
    let ok = match backend {
        Some(Backend::Iptables) => ipt(),
        // Its ADD goes in over netlink (no process), with nft for a table it did not write.
        Some(Backend::Nftables) => nft_tool::ready(),
        None => ipt() || nft_tool::ready(),
    };
    if ok {
        Ok(())
    } else {
        Err(BridgeError::Unavailable(format!(
            "ipMasq: the {} firewall backend is not usable",
            backend
                .map(Backend::as_str)
                .unwrap_or("iptables or nftables")
        )))
    }
}
