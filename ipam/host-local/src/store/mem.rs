//! An in-memory [`Store`]: the same semantics as the disk store, for allocator tests.

use super::{Entry, Owner, Record, Store, StoreError, sort_walk_order};
use cni::result::ip_string;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// Files by name (relative path) with their raw content, and the last-reserved addresses.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    /// Reservation-like files: name → content.
    pub files: BTreeMap<String, Vec<u8>>,
    /// `last_reserved_ip.<set>` contents.
    pub last: HashMap<usize, IpAddr>,
    /// Makes `reserve` of this address fail with an I/O error (for rollback tests).
    pub fail_reserve: Option<IpAddr>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// The reserved addresses and their owners' content, for assertions.
    pub fn reserved(&self) -> Vec<(String, String)> {
        self.files
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }
}

impl Store for MemStore {
    fn reserve(&mut self, ip: IpAddr, id: &str, ifname: &str) -> Result<bool, StoreError> {
        if self.fail_reserve == Some(ip) {
            return Err(StoreError::io(
                "create",
                ip_string(ip),
                std::io::Error::other("injected failure"),
            ));
        }
        let name = ip_string(ip);
        if self.files.contains_key(&name) {
            return Ok(false);
        }
        self.files
            .insert(name, Owner::attachment(id, ifname).content().into_bytes());
        Ok(true)
    }

    fn remove(&mut self, name: &str, owner: &Owner) -> Result<bool, StoreError> {
        match self.files.get(name) {
            Some(c) if Owner::parse(c).as_ref() == Some(owner) => {
                self.files.remove(name);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn owned(&mut self, id: &str) -> Result<Vec<Record>, StoreError> {
        let mut v: Vec<Record> = self
            .files
            .iter()
            .filter_map(|(name, c)| {
                Owner::parse(c)
                    .filter(|o| o.id() == id.trim())
                    .map(|owner| Record {
                        name: name.clone(),
                        owner,
                    })
            })
            .collect();
        sort_walk_order(&mut v);
        Ok(v)
    }

    fn exists(&mut self, ip: IpAddr) -> Result<bool, StoreError> {
        Ok(self.files.contains_key(&ip_string(ip)))
    }

    fn last_reserved(&mut self, set: usize) -> Option<IpAddr> {
        self.last.get(&set).copied()
    }

    fn set_last_reserved(&mut self, set: usize, ip: IpAddr) -> Result<(), StoreError> {
        self.last.insert(set, ip);
        Ok(())
    }

    fn entries(&mut self) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .files
            .iter()
            .filter(|(n, _)| !n.contains('/') && n.parse::<IpAddr>().is_ok())
            .map(|(n, c)| Entry {
                name: n.clone(),
                owner: Ok(Owner::parse(c)),
            })
            .collect())
    }
}
