//! The `host-local` IPAM plugin: a drop-in replacement for the reference's
//! (`containernetworking/plugins` v1.9.1), sharing its data directory byte for byte.
//!
//! # Verbs
//!
//! * **ADD**: one address per range set (round robin from `last_reserved_ip.<set>`, skipping
//!   the gateway, wrapping; requested addresses from `CNI_ARGS IP=`, `args.cni.ips` and
//!   `runtimeConfig.ips`), all or nothing; prints an IPAM result (addresses with their
//!   gateways, the configured routes, `dns` from `resolvConf`; no interfaces) in the config's
//!   version. A second ADD of the same attachment fails, as in the reference.
//! * **DEL**: removes exactly the files the reference would remove (by content
//!   `<id>\r\n<ifname>`, legacy `<id>`); nothing to remove is success.
//! * **CHECK**: the attachment has a reservation; with a `prevResult`, its addresses in our
//!   range sets are exactly those reserved for the attachment.
//! * **GC** (1.1.0): removes reservations whose attachment is not in
//!   `cni.dev/valid-attachments` (or the older `cni.dev/attachments`; the union if both); when
//!   neither key is present nothing is removed. Files that cannot be attributed are left alone
//!   and reported on stderr; removal errors are collected and reported after trying all.
//! * **STATUS** (1.1.0): success when the data directory is usable and every range set has a
//!   free address; code 50 otherwise.
//!
//! # Cost
//!
//! The reference reads every file of the network directory on every ADD (duplicate check) and
//! DEL (about 70 ms at 5,000 reservations). Here ADD, DEL and CHECK read one bucket of a side
//! index plus the few files it names, so their cost does not grow with the number of
//! reservations; the index is rebuilt by one full scan only when something else changed the
//! directory. How the index is kept exact, and why it never confuses the reference binary, is
//! explained in [`store::disk`].
//!
//! # Layout
//!
//! [`allocator`] is pure logic over the [`store::Store`] trait; [`store::DiskStore`] is the
//! only code touching files; [`config`] decodes and validates; [`error`] maps every error to
//! a CNI error object in one place.

pub mod allocator;
pub mod config;
pub mod error;
pub mod range;
pub mod store;

pub use config::IpamConfig;
pub use error::HostLocalError;

use cni::skel::{Plugin, Request};
use cni::{CniError, CniResult, Dns};
use std::net::IpAddr;
use store::DiskStore;

/// The `host-local` plugin.
pub struct HostLocal;

impl Plugin for HostLocal {
    fn name(&self) -> &'static str {
        "host-local"
    }
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        cmd_add(req).map_err(CniError::from)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        cmd_del(req).map_err(CniError::from)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        cmd_check(req).map_err(CniError::from)
    }
    fn status(&self, req: &Request) -> Result<(), CniError> {
        cmd_status(req).map_err(CniError::from)
    }
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        cmd_gc(req).map_err(CniError::from)
    }
}

/// Writes the index; a failure only costs a rebuild next time (the reservation files are
/// authoritative), so it is reported on stderr and not returned.
fn commit(store: &mut DiskStore) {
    if let Err(e) = store.commit() {
        eprintln!("host-local: warning: could not update the index (it will be rebuilt): {e}");
    }
}

/// ADD: allocates and returns the IPAM result.
pub fn cmd_add(req: &Request) -> Result<CniResult, HostLocalError> {
    let conf = IpamConfig::load(req, true)?;
    let dns = match &conf.resolv_conf {
        Some(path) => config::load_resolv_conf(path)?,
        None => Dns::default(),
    };
    let mut store = DiskStore::open(&conf.data_dir, &conf.name)?;
    let allocated = allocator::allocate(
        &mut store,
        &conf.range_sets,
        &req.env.container_id,
        &req.env.ifname,
        &conf.requested,
    );
    commit(&mut store);
    let allocated = allocated?;
    Ok(CniResult {
        interfaces: Vec::new(),
        ips: allocated
            .iter()
            .map(allocator::Allocation::ip_config)
            .collect(),
        routes: conf.routes,
        dns,
    })
}

/// DEL: releases the attachment's reservations.
pub fn cmd_del(req: &Request) -> Result<(), HostLocalError> {
    let conf = IpamConfig::load(req, true)?;
    let Some(mut store) = DiskStore::open_existing(&conf.data_dir, &conf.name)? else {
        return Ok(());
    };
    let released = allocator::release(
        &mut store,
        &req.env.container_id,
        &req.env.ifname,
        conf.range_sets.len(),
    );
    commit(&mut store);
    released.map(|_| ())
}

/// CHECK: verifies the attachment's reservations (and the `prevResult` addresses, if given).
pub fn cmd_check(req: &Request) -> Result<(), HostLocalError> {
    let conf = IpamConfig::load(req, true)?;
    let prev: Option<Vec<IpAddr>> = req
        .prev_result()
        .map_err(HostLocalError::Protocol)?
        .map(|r| r.ips.iter().map(|i| i.address.addr()).collect());
    let Some(mut store) = DiskStore::open_existing(&conf.data_dir, &conf.name)? else {
        return Err(HostLocalError::NotFound(req.env.container_id.clone()));
    };
    let checked = allocator::check(
        &mut store,
        &conf.range_sets,
        &req.env.container_id,
        &req.env.ifname,
        prev.as_deref(),
    );
    commit(&mut store);
    checked
}

/// GC: releases the reservations of attachments the runtime no longer knows.
pub fn cmd_gc(req: &Request) -> Result<(), HostLocalError> {
    let conf = IpamConfig::load(req, false)?;
    let Some(valid) =
        cni::gc::valid_attachments(&req.conf.raw).map_err(HostLocalError::Protocol)?
    else {
        eprintln!(
            "host-local: GC without cni.dev/valid-attachments: no information, nothing removed"
        );
        return Ok(());
    };
    let Some(mut store) = DiskStore::open_existing(&conf.data_dir, &conf.name)? else {
        return Ok(());
    };
    // GC checks the index against the files (a full scan), unless opening just did.
    if !store.rebuilt() {
        store.rescan()?;
    }
    let report = allocator::gc(&mut store, &valid);
    commit(&mut store);
    let report = report?;
    for s in &report.skipped {
        eprintln!("host-local: GC left {s}");
    }
    Ok(())
}

/// STATUS: the data directory is usable and every range set has a free address.
pub fn cmd_status(req: &Request) -> Result<(), HostLocalError> {
    let conf = IpamConfig::load(req, false)?;
    let unusable = |e: store::StoreError| {
        HostLocalError::Unavailable(format!(
            "data directory {} is not usable: {e}",
            conf.data_dir.display()
        ))
    };
    let mut store = DiskStore::open(&conf.data_dir, &conf.name).map_err(unusable)?;
    store.probe_writable().map_err(unusable)?;
    let free = allocator::ensure_free(&mut store, &conf.range_sets).map_err(|e| match e {
        HostLocalError::Store(s) => unusable(s),
        other => other,
    });
    commit(&mut store);
    free
}
