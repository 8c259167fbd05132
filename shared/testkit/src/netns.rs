use cni_kernel::NetNs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this process and call: `cnt<pid>-<n>-<label>`.
pub fn unique(label: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("cnt{}-{}-{}", std::process::id(), n, label)
}

/// Runs a command, panicking with its output if it fails.
pub fn cmd(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `sh -c script`, returning the output whatever the status.
pub fn sh(script: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap_or_else(|e| panic!("sh -c {script}: {e}"))
}

/// A named network namespace under `/run/netns`, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `<unique>-<label>` with `lo` up.
    pub fn new(label: &str) -> Netns {
        let name = unique(label);
        cmd(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace name (`ip netns exec <name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`: what a runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// An open handle.
    pub fn open(&self) -> NetNs {
        NetNs::open(self.path()).expect("open netns")
    }

    /// Runs `argv` inside, panicking on failure; returns stdout.
    pub fn exec(&self, argv: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(argv);
        cmd(&full)
    }

    /// Runs `argv` inside, returning the output whatever the status.
    pub fn try_exec(&self, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .expect("ip netns exec")
    }

    /// Runs `sh -c script` inside, returning the output whatever the status.
    pub fn sh(&self, script: &str) -> Output {
        self.try_exec(&["sh", "-c", script])
    }

    /// `ip <args>` inside, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip"];
        full.extend_from_slice(args);
        self.exec(&full)
    }

    /// Names of the links inside, sorted.
    pub fn links(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect();
        v.sort();
        v
    }

    /// `iptables-save` / `ip6tables-save` output inside, without comments and counters.
    pub fn iptables_save(&self, v6: bool) -> String {
        let out = self.exec(&[if v6 {
            "ip6tables-save"
        } else {
            "iptables-save"
        }]);
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                if l.starts_with(':') {
                    // Drop counters: ":CHAIN POLICY [p:b]".
                    l.rsplit_once(' ').map(|(a, _)| a).unwrap_or(l).to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `nft list ruleset` inside.
    pub fn nft_ruleset(&self) -> String {
        self.exec(&["nft", "list", "ruleset"])
    }

    /// Pings `addr` from inside (bounded: 2 tries, 2 s), true on success.
    pub fn ping(&self, addr: &str) -> bool {
        self.try_exec(&["ping", "-c", "1", "-W", "2", addr])
            .status
            .success()
            || self
                .try_exec(&["ping", "-c", "1", "-W", "2", addr])
                .status
                .success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The "host" of a test: a namespace in which the plugins run and create their bridges,
/// veths' host ends and firewall rules.
pub struct Node {
    pub ns: Netns,
}

impl Node {
    /// A fresh node namespace.
    pub fn new(label: &str) -> Node {
        Node {
            ns: Netns::new(&format!("{label}-node")),
        }
    }

    /// A container (sandbox) namespace belonging to this test.
    pub fn container(&self, label: &str) -> Netns {
        Netns::new(label)
    }
}

impl std::ops::Deref for Node {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}
