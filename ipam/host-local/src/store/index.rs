//! The side index's file formats: buckets of records keyed by container ID, and the stamp
//! that says for which exact state of the network directory the buckets are complete.
//!
//! Every file here starts with a header line containing spaces. A container ID cannot contain
//! a space, so the reference's DEL/CHECK (which compare each file's whole trimmed content with
//! `<id>\r\n<ifname>` or `<id>`) can never match, and never remove, an index file.

use super::{Owner, Record};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// The index directory inside the network directory. It starts with a dot, so it can be
/// neither an address nor a network name, and `ls` hides it.
pub const DIR: &str = ".cni-rs-index";

/// First line of every bucket file.
pub const HEADER: &str = "cni-rs host-local index v1 (derived from the reservation files, rebuilt when stale; not a reservation)";

/// First line of the stamp file.
pub const STAMP_HEADER: &str = "cni-rs host-local index stamp v1 (not a reservation)";

/// The stamp's file name.
pub const STAMP: &str = "stamp";

/// Temporary file names (one per purpose; every writer holds the network lock).
pub const TMP_RESERVE: &str = "tmp-reserve";
pub const TMP_PROBE: &str = "tmp-probe";

/// The bucket of container `id` (FNV-1a, folded to 8 bits): at most 256 bucket files exist.
pub fn bucket_of(id: &str) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.trim().as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let folded = h ^ (h >> 32);
    let folded = folded ^ (folded >> 16);
    (folded ^ (folded >> 8)) as u8
}

/// The file name of bucket `b`.
pub fn bucket_file(b: u8) -> String {
    format!("b-{b:02x}")
}

/// True if `name` is a bucket file name.
pub fn is_bucket_file(name: &str) -> bool {
    name.len() == 4 && name.starts_with("b-") && name[2..].bytes().all(|c| c.is_ascii_hexdigit())
}

/// True if a file name can be stored in a bucket line (no control characters, no tab).
pub fn name_storable(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(char::is_control)
}

/// True if a stored name is a safe relative path inside the network directory.
pub fn name_safe(name: &str) -> bool {
    name_storable(name)
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The text of a bucket: the header, then one line per record
/// (`a\t<id>\t<ifname>\t<name>` or `l\t<id>\t<name>`).
pub fn encode_bucket(records: &[Record]) -> String {
    let mut out = String::with_capacity(HEADER.len() + 1 + records.len() * 96);
    out.push_str(HEADER);
    out.push('\n');
    for r in records {
        match &r.owner {
            Owner::Attachment { id, ifname } => {
                out.push_str(&format!("a\t{id}\t{ifname}\t{}\n", r.name));
            }
            Owner::Legacy(id) => out.push_str(&format!("l\t{id}\t{}\n", r.name)),
        }
    }
    out
}

/// Parses a bucket; `None` if it is not exactly what [`encode_bucket`] writes.
pub fn decode_bucket(text: &str) -> Option<Vec<Record>> {
    let mut lines = text.split('\n');
    if lines.next()? != HEADER {
        return None;
    }
    if !text.ends_with('\n') {
        return None;
    }
    let mut out = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let (owner, name) = match f.as_slice() {
            ["a", id, ifname, name] => (
                Owner::Attachment {
                    id: id.to_string(),
                    ifname: ifname.to_string(),
                },
                *name,
            ),
            ["l", id, name] => (Owner::Legacy(id.to_string()), *name),
            _ => return None,
        };
        if !cni::env::valid_id(owner.id()) || !name_safe(name) {
            return None;
        }
        out.push(Record {
            name: name.to_string(),
            owner,
        });
    }
    Some(out)
}

/// The state of the network directory for which the buckets are exact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub boot: String,
    pub dev: u64,
    pub ino: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Stamp {
    /// The stamp of a directory's metadata in this boot.
    pub fn of(md: &Metadata, boot: &str) -> Stamp {
        Stamp {
            boot: boot.to_string(),
            dev: md.dev(),
            ino: md.ino(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }

    /// The stamp file's text.
    pub fn encode(&self) -> String {
        format!(
            "{STAMP_HEADER}\nboot {}\ndev {} ino {}\nmtime {} {}\nctime {} {}\n",
            self.boot, self.dev, self.ino, self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1
        )
    }

    /// Parses a stamp file; `None` if malformed.
    pub fn decode(text: &str) -> Option<Stamp> {
        let mut lines = text.lines();
        if lines.next()? != STAMP_HEADER {
            return None;
        }
        let boot = lines.next()?.strip_prefix("boot ")?.to_string();
        let di: Vec<&str> = lines.next()?.split(' ').collect();
        let (dev, ino) = match di.as_slice() {
            ["dev", d, "ino", i] => (d.parse().ok()?, i.parse().ok()?),
            _ => return None,
        };
        let pair = |line: Option<&str>, key: &str| -> Option<(i64, i64)> {
            let f: Vec<&str> = line?.split(' ').collect();
            match f.as_slice() {
                [k, s, n] if *k == key => Some((s.parse().ok()?, n.parse().ok()?)),
                _ => None,
            }
        };
        let mtime = pair(lines.next(), "mtime")?;
        let ctime = pair(lines.next(), "ctime")?;
        Some(Stamp {
            boot,
            dev,
            ino,
            mtime,
            ctime,
        })
    }
}

/// This boot's ID (`/proc/sys/kernel/random/boot_id`), so that an index is never trusted
/// across a reboot; `"unknown"` if unreadable.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_roundtrip_and_strictness() {
        let recs = vec![
            Record {
                name: "10.0.0.2".into(),
                owner: Owner::attachment("abc", "eth0"),
            },
            Record {
                name: "fd00::2".into(),
                owner: Owner::Legacy("abc".into()),
            },
        ];
        let text = encode_bucket(&recs);
        assert_eq!(decode_bucket(&text), Some(recs));
        assert_eq!(decode_bucket(&encode_bucket(&[])), Some(vec![]));
        assert_eq!(decode_bucket(""), None);
        assert_eq!(decode_bucket("garbage\n"), None);
        // Torn write (no final newline) is rejected.
        assert_eq!(decode_bucket(&text[..text.len() - 1]), None);
        let bad = format!("{HEADER}\na\tabc\teth0\t../etc/passwd\n");
        assert_eq!(decode_bucket(&bad), None);
        let bad = format!("{HEADER}\nx\tabc\n");
        assert_eq!(decode_bucket(&bad), None);
        // Never a reservation for the reference's comparison.
        assert_eq!(Owner::parse(text.as_bytes()), None);
    }

    #[test]
    fn stamp_roundtrip() {
        let s = Stamp {
            boot: "b".into(),
            dev: 1,
            ino: 2,
            mtime: (3, 4),
            ctime: (-5, 6),
        };
        assert_eq!(Stamp::decode(&s.encode()), Some(s.clone()));
        assert_eq!(Stamp::decode("x"), None);
        assert_eq!(Owner::parse(s.encode().as_bytes()), None);
    }

    #[test]
    fn buckets_spread_and_names() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            seen.insert(bucket_of(&format!("{i:064x}")));
        }
        assert!(seen.len() > 200, "{}", seen.len());
        assert_eq!(bucket_of(" a "), bucket_of("a"));
        assert!(is_bucket_file(&bucket_file(7)));
        assert!(!is_bucket_file("b-zz"));
        assert!(name_safe("10.0.0.2") && name_safe("sub/10.0.0.2"));
        assert!(!name_safe("../x") && !name_safe("/x") && !name_safe("a\tb") && !name_safe(""));
    }
}
