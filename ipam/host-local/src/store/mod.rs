//! Reservation storage behind one small trait, so that the allocator is pure: [`DiskStore`]
//! (the reference's on-disk layout, plus a side index) and [`MemStore`] (for unit and
//! property tests).
//!
//! A reservation is a file named after the address (Go's text form) whose trimmed content is
//! `<containerID>\r\n<ifname>`, or `<containerID>` alone in the legacy (pre-0.7) format.

pub mod disk;
mod index;
pub mod mem;

pub use disk::{DiskStore, LockWait};
pub use mem::MemStore;

use std::net::IpAddr;
use std::path::PathBuf;

/// Who a reservation file belongs to, parsed from its content.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// `<id>\r\n<ifname>`.
    Attachment { id: String, ifname: String },
    /// `<id>` alone (files written before v0.7).
    Legacy(String),
}

impl Owner {
    /// The owner of `(id, ifname)`.
    pub fn attachment(id: &str, ifname: &str) -> Owner {
        Owner::Attachment {
            id: id.trim().to_string(),
            ifname: ifname.to_string(),
        }
    }

    /// The container ID.
    pub fn id(&self) -> &str {
        match self {
            Owner::Attachment { id, .. } | Owner::Legacy(id) => id,
        }
    }

    /// Parses a reservation file's content the way the reference compares it (after Go's
    /// `strings.TrimSpace`). Content that no valid `(CNI_CONTAINERID, CNI_IFNAME)` could ever
    /// match is `None`.
    pub fn parse(content: &[u8]) -> Option<Owner> {
        let text = std::str::from_utf8(content).ok()?.trim();
        match text.split_once("\r\n") {
            Some((id, ifname)) => (cni::env::valid_id(id)
                && !ifname.is_empty()
                && !ifname.chars().any(char::is_whitespace))
            .then(|| Owner::Attachment {
                id: id.to_string(),
                ifname: ifname.to_string(),
            }),
            None => cni::env::valid_id(text).then(|| Owner::Legacy(text.to_string())),
        }
    }

    /// The exact bytes the reference writes for this owner.
    pub fn content(&self) -> String {
        match self {
            Owner::Attachment { id, ifname } => format!("{id}\r\n{ifname}"),
            Owner::Legacy(id) => id.clone(),
        }
    }

    /// True if a DEL/CHECK/duplicate check of `(id, ifname)` matches this owner in the
    /// new format.
    pub fn is_attachment(&self, id: &str, ifname: &str) -> bool {
        matches!(self, Owner::Attachment { id: i, ifname: f } if i == id.trim() && f == ifname)
    }

    /// True if this is a legacy file of container `id`.
    pub fn is_legacy_of(&self, id: &str) -> bool {
        matches!(self, Owner::Legacy(i) if i == id.trim())
    }
}

/// One reservation-like file: its path relative to the network directory, and its owner.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    pub name: String,
    pub owner: Owner,
}

impl Record {
    /// The address named by the file's base name, as Go's `net.ParseIP(basename)`.
    pub fn ip(&self) -> Option<IpAddr> {
        let base = self.name.rsplit('/').next().unwrap_or(&self.name);
        base.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
    }
}

/// Sorts records in the order Go's `filepath.Walk` visits them (lexical per path component).
pub fn sort_walk_order(records: &mut [Record]) {
    records.sort_by(|a, b| a.name.split('/').cmp(b.name.split('/')));
}

/// A top-level file named after an address, as GC sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// The owner; `Ok(None)` for content no attachment can match; `Err` if unreadable.
    pub owner: Result<Option<Owner>, String>,
}

/// A failure of the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `dataDir` (or the network directory) exists but is not a directory.
    #[error("dataDir {}: {} exists and is not a directory", data_dir.display(), path.display())]
    NotADirectory { data_dir: PathBuf, path: PathBuf },
    /// The network name cannot be used as a single path component.
    #[error("invalid network name {0:?}: it must be a single path component")]
    BadName(String),
    /// The lock was held by someone else for too long.
    #[error("timed out after {secs} s waiting for the lock {}", path.display())]
    LockTimeout { path: PathBuf, secs: u64 },
}

impl StoreError {
    /// An I/O error with its operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// What the allocator needs from storage. Every method is called with the store's lock held
/// (a [`DiskStore`] holds it from open to drop).
pub trait Store {
    /// Creates the reservation of `ip` for `(id, ifname)` atomically; `Ok(false)` if the address
    /// is taken.
    fn reserve(&mut self, ip: IpAddr, id: &str, ifname: &str) -> Result<bool, StoreError>;
    /// Removes the file `name` if its content still belongs to `owner`; `Ok(false)` if it is
    /// gone or belongs to someone else.
    fn remove(&mut self, name: &str, owner: &Owner) -> Result<bool, StoreError>;
    /// Every file belonging to container `id` (any ifname, and legacy files), in walk order.
    fn owned(&mut self, id: &str) -> Result<Vec<Record>, StoreError>;
    /// True if a file named after `ip` exists (reserved, whatever its content).
    fn exists(&mut self, ip: IpAddr) -> Result<bool, StoreError>;
    /// The content of `last_reserved_ip.<set>`, if it parses as an address.
    fn last_reserved(&mut self, set: usize) -> Option<IpAddr>;
    /// Records the last address reserved in `set`.
    fn set_last_reserved(&mut self, set: usize, ip: IpAddr) -> Result<(), StoreError>;
    /// Every top-level file named after an address (for GC).
    fn entries(&mut self) -> Result<Vec<Entry>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_parsing_matches_reference_comparison() {
        assert_eq!(
            Owner::parse(b"abc123\r\neth0"),
            Some(Owner::attachment("abc123", "eth0"))
        );
        assert_eq!(
            Owner::parse(b"  abc123\r\neth0\n"),
            Some(Owner::attachment("abc123", "eth0"))
        );
        assert_eq!(
            Owner::parse(b"abc123"),
            Some(Owner::Legacy("abc123".into()))
        );
        assert_eq!(Owner::parse(b""), None);
        assert_eq!(Owner::parse(b"a b"), None);
        assert_eq!(Owner::parse(b"abc\neth0"), None);
        assert_eq!(Owner::parse(b"abc\r\neth 0"), None);
        assert_eq!(Owner::parse(&[0xff, 0xfe]), None);
        // The index header can never be mistaken for a reservation.
        assert_eq!(Owner::parse(index::HEADER.as_bytes()), None);
        assert_eq!(Owner::attachment("abc", "eth0").content(), "abc\r\neth0");
        assert!(Owner::attachment("abc", "eth0").is_attachment(" abc ", "eth0"));
        assert!(!Owner::attachment("abc", "eth0").is_attachment("abc", "eth1"));
        assert!(Owner::Legacy("abc".into()).is_legacy_of("abc"));
    }

    #[test]
    fn walk_order_is_per_component() {
        let mut v: Vec<Record> = ["sub.x", "sub/a", "10.0.0.2", "10.0.0.10"]
            .iter()
            .map(|n| Record {
                name: n.to_string(),
                owner: Owner::Legacy("a".into()),
            })
            .collect();
        sort_walk_order(&mut v);
        let names: Vec<&str> = v.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["10.0.0.10", "10.0.0.2", "sub/a", "sub.x"]);
        assert_eq!(v[2].ip(), None);
        assert_eq!(v[0].ip(), Some("10.0.0.10".parse().unwrap()));
    }
}
