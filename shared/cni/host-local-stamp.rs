// The identity of host-local's code, for `build.rs` of `host-local` and `bridge` (included by
// both, so that both compute the same value). host-local's binary carries it as its GNU build
// ID; bridge runs its own compiled-in copy of host-local in-process only when the host-local
// it finds on CNI_PATH carries the same (see cni::invoke::Builtin).
//
// It hashes what host-local's code is made of: the sources of host-local and of the crates
// it uses from this workspace, the manifests and Cargo.lock, the compiler's version, the
// target and the profile's settings.

/// Crate directories (from the workspace root) whose files make host-local's code.
const STAMP_DIRS: &[&str] = &["shared/cni", "shared/kernel", "ipam/host-local"];
/// Single files (from the workspace root) that do too.
const STAMP_FILES: &[&str] = &["Cargo.toml", "Cargo.lock"];

fn stamp_collect(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => stamp_collect(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// The stamp (20 bytes as 40 lowercase hex digits), printing the `rerun-if` lines that keep
/// it current.
fn host_local_stamp() -> String {
    use std::hash::Hasher;
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let root = std::path::PathBuf::from(var("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for d in STAMP_DIRS {
        let dir = root.join(d);
        println!("cargo:rerun-if-changed={}", dir.display());
        stamp_collect(&dir, &mut files);
    }
    for f in STAMP_FILES {
        let file = root.join(f);
        println!("cargo:rerun-if-changed={}", file.display());
        files.push(file);
    }
    files.sort();
    let rustc = std::process::Command::new(std::env::var_os("RUSTC").unwrap_or("rustc".into()))
        .arg("-vV")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    // Three differently seeded SipHash-1-3 states (std's, with fixed keys): 192 bits, of
    // which 160 are used. Not cryptographic; it tells builds apart, it resists no one (a
    // binary on CNI_PATH is trusted to be run anyway).
    let mut h: Vec<std::collections::hash_map::DefaultHasher> = (0u8..3)
        .map(|seed| {
            let mut s = std::collections::hash_map::DefaultHasher::new();
            s.write_u8(seed);
            s
        })
        .collect();
    let mut feed = |bytes: &[u8]| {
        for s in h.iter_mut() {
            s.write_usize(bytes.len());
            s.write(bytes);
        }
    };
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap_or(f);
        feed(rel.to_string_lossy().as_bytes());
        feed(&std::fs::read(f).unwrap_or_default());
    }
    feed(&rustc);
    for k in [
        "TARGET",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_CFG_TARGET_FEATURE",
    ] {
        feed(k.as_bytes());
        feed(var(k).as_bytes());
    }
    let mut out = String::new();
    for s in &h {
        out.push_str(&format!("{:016x}", s.finish()));
    }
    out.truncate(40);
    out
}
