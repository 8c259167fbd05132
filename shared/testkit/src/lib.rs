//! Fixtures for integration tests, benchmarks and the demo.
//!
//! * [`Netns`]: a named network namespace (`ip netns add`) removed on drop, even when a test
//!   fails. A [`Node`] plays the host the plugins run on; containers are more [`Netns`].
//! * [`run_plugin`]: executes a plugin binary the way a runtime does (env + stdin) inside a
//!   namespace.
//! * [`Runtime`]: executes a conflist like libcni (name/cniVersion injection, capabilities
//!   → `runtimeConfig`, `prevResult` chaining, cached result for CHECK/DEL, DEL in reverse,
//!   GC with valid attachments, STATUS).
//!
//! Safety: nothing here touches the root namespace; every link, address, route and rule is
//! created inside namespaces made by the fixture itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod netns;
mod nft_table;
mod runtime;

pub use netns::{Netns, Node, cmd, sh, unique};
pub use nft_table::{TableState, assert_same_table, table_state};
pub use runtime::{Attachment, PluginOutput, Runtime, run_plugin};

use std::path::PathBuf;

/// True when running as root (tests that need the kernel skip visibly otherwise).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips the calling test with a visible note unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// True when `nft` is installed (the nftables tests compare against it).
pub fn nft_installed() -> bool {
    cni_kernel::firewall::nft::available()
}

/// Skips the calling test with a visible note unless running as root with `nft` installed.
#[macro_export]
macro_rules! require_root_and_nft {
    () => {
        $crate::require_root!();
        if !$crate::nft_installed() {
            eprintln!("skipped: nft not installed");
            return;
        }
    };
}

/// The directory holding this project's plugin binaries: `$CNI_BIN_DIR`, else the cargo
/// target directory of the running test or program (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CNI_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of one of this project's plugin binaries; panics with a hint if it is not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "plugin binary {} not found: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// The reference plugins' directory (Debian `containernetworking-plugins`), if installed.
pub fn reference_dir() -> Option<PathBuf> {
    let d = PathBuf::from("/usr/lib/cni");
    d.join("bridge").is_file().then_some(d)
}

/// What `<tool>-save -t <table>` prints in the calling thread's namespace (`tool` is
/// `iptables` or `ip6tables`), without its comment lines (which carry the time).
pub fn iptables_save_table(tool: &str, table: &str) -> String {
    let out = std::process::Command::new(format!("{tool}-save"))
        .args(["-t", table])
        .output()
        .expect("run iptables-save");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Debian's names for the `iptables` tools of both families, which its alternatives point
/// to `xtables-nft-multi` or `xtables-legacy-multi`.
pub const IPTABLES_TOOLS: [&str; 6] = [
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
];

/// Stand-ins for firewall tools that log each call (`<name> <args>`, one line each) and
/// exit with `status`: `program`, and `links` to it (a plugin that resolves `iptables` to
/// `xtables-nft-multi` takes the stand-ins for `iptables-nft`). Removed on drop.
pub struct LoggingTools {
    dir: TempDir,
}

impl LoggingTools {
    /// Creates `program` and the `links` in a fresh directory.
    pub fn new(program: &str, links: &[&str], status: u8) -> LoggingTools {
        let dir = TempDir::new("tools");
        let bin = dir.path().join(program);
        let log = dir.path().join("log");
        std::fs::write(
            &bin,
            format!(
                "#!/bin/sh\necho \"${{0##*/}} $*\" >>{}\nexit {status}\n",
                log.display()
            ),
        )
        .expect("write stand-in");
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod stand-in");
        for name in links {
            std::os::unix::fs::symlink(&bin, dir.path().join(name)).expect("link stand-in");
        }
        LoggingTools { dir }
    }

    /// A `PATH` that finds the stand-ins first, then the caller's `PATH`.
    pub fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The calls logged so far, one line each.
    pub fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

/// A fresh temporary directory removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `/tmp/<unique>-<label>`.
    pub fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(label));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
