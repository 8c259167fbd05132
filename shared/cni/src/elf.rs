//! Just enough ELF to read a binary's GNU build ID (the `NT_GNU_BUILD_ID` note), which
//! identifies a build: [`crate::invoke`] compares it before running a delegate in-process.

use std::fs::File;
use std::os::unix::fs::FileExt;

const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;
/// The most note data read from one segment (build IDs sit in the first few hundred bytes).
const MAX_NOTES: u64 = 4096;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The build ID of a 64-bit little-endian ELF file; `None` for anything else, or none.
pub fn build_id(f: &mut File) -> Option<Vec<u8>> {
    let mut eh = [0u8; 64];
    f.read_exact_at(&mut eh, 0).ok()?;
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if eh[..4] != *b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let phoff = u64_at(&eh, 32)?;
    let phentsize = usize::from(u16_at(&eh, 54)?);
    let phnum = usize::from(u16_at(&eh, 56)?);
    if phentsize < 56 || phnum == 0 || phnum > 64 {
        return None;
    }
    let mut ph = vec![0u8; phentsize * phnum];
    f.read_exact_at(&mut ph, phoff).ok()?;
    ph.chunks_exact(phentsize)
        .filter(|p| u32_at(p, 0) == Some(PT_NOTE))
        .find_map(|p| {
            let (off, size) = (u64_at(p, 8)?, u64_at(p, 32)?.min(MAX_NOTES));
            let mut notes = vec![0u8; usize::try_from(size).ok()?];
            f.read_exact_at(&mut notes, off).ok()?;
            gnu_build_id(&notes)
        })
}

/// The `NT_GNU_BUILD_ID` descriptor among `notes` (one note segment's bytes).
fn gnu_build_id(notes: &[u8]) -> Option<Vec<u8>> {
    let pad = |n: usize| n.checked_add(3).map(|n| n & !3);
    let mut at = 0;
    while at + 12 <= notes.len() {
        let namesz = usize::try_from(u32_at(notes, at)?).ok()?;
        let descsz = usize::try_from(u32_at(notes, at + 4)?).ok()?;
        let kind = u32_at(notes, at + 8)?;
        let name_at = at + 12;
        let desc_at = name_at.checked_add(pad(namesz)?)?;
        let end = desc_at.checked_add(pad(descsz)?)?;
        let name = notes.get(name_at..name_at.checked_add(namesz)?)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return Some(notes.get(desc_at..desc_at.checked_add(descsz)?)?.to_vec());
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(name);
        v.resize(v.len().next_multiple_of(4), 0);
        v.extend_from_slice(desc);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    #[test]
    fn finds_the_gnu_build_id_among_other_notes() {
        let mut notes = note(
            b"GNU\0",
            1,
            &[0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0],
        );
        notes.extend(note(b"Go\0", NT_GNU_BUILD_ID, b"not-this-one"));
        notes.extend(note(b"GNU\0", NT_GNU_BUILD_ID, &[0xab; 20]));
        assert_eq!(gnu_build_id(&notes), Some(vec![0xab; 20]));
    }

    #[test]
    fn truncated_or_absurd_notes_are_none() {
        let full = note(b"GNU\0", NT_GNU_BUILD_ID, &[1; 20]);
        for cut in 0..full.len() {
            assert_eq!(gnu_build_id(&full[..cut]), None, "cut at {cut}");
        }
        let mut huge = full.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(gnu_build_id(&huge), None);
    }

    #[test]
    fn reads_the_build_id_of_a_real_binary() {
        // This test binary has one if the linker added it (`--build-id`, the default on
        // Debian); a non-ELF file has none.
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("readelf")
            .arg("-n")
            .arg(&exe)
            .output();
        let Ok(out) = out else { return };
        let text = String::from_utf8_lossy(&out.stdout);
        let want = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: "))
            .map(str::to_string);
        let got = build_id(&mut File::open(&exe).unwrap())
            .map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>());
        assert_eq!(got, want);
        assert_eq!(build_id(&mut File::open("/etc/hostname").unwrap()), None);
    }
}
