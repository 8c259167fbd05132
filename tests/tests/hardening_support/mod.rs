//! Fixtures of the hardening tests (`hardening_*.rs`): a node namespace with its own
//! `CNI_PATH` (our four binaries) and data directory, the bridge + host-local + portmap chain,
//! a bounded plugin runner (deadline, optional memory limit, own process group), full
//! snapshots of the node (links, addresses, routes, every iptables table, the nftables ruleset,
//! the data directory) and the assertions every hostile call must pass.

#![allow(dead_code)]

use cni_kernel::NetNs;
use cni_testkit::{Node, PluginOutput, Runtime, TempDir, bin};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Our plugin binaries.
pub const PLUGINS: [&str; 4] = ["bridge", "host-local", "portmap", "loopback"];

/// A small deterministic PRNG (xorshift64*): tests print their seed, and `HARDENING_SEED`
/// replays a run.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `HARDENING_SEED` or the clock; the seed is printed.
    pub fn from_env(label: &str) -> Rng {
        let seed = std::env::var("HARDENING_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    ^ u64::from(std::process::id())
            });
        eprintln!("{label}: HARDENING_SEED={seed}");
        Rng(seed.max(1))
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A `CNI_PATH` directory with our four plugins (symlinks).
pub fn cni_dir() -> TempDir {
    let d = TempDir::new("hbin");
    for p in PLUGINS {
        std::os::unix::fs::symlink(bin(p), d.path().join(p)).unwrap();
    }
    d
}

/// One test's world: a node namespace, a `CNI_PATH`, and a root directory holding the
/// host-local data directory (`<root>/data`), so that writes next to it can be detected.
pub struct World {
    pub node: Node,
    pub bin: TempDir,
    pub root: TempDir,
}

impl World {
    /// A fresh world.
    pub fn new(label: &str) -> World {
        let root = TempDir::new(&format!("{label}-root"));
        std::fs::create_dir_all(root.path().join("data")).unwrap();
        World {
            node: Node::new(label),
            bin: cni_dir(),
            root,
        }
    }

    /// The host-local data directory.
    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// `CNI_PATH`.
    pub fn cni_path(&self) -> String {
        self.bin.path().display().to_string()
    }

    /// The node namespace, opened.
    pub fn node_ns(&self) -> NetNs {
        self.node.open()
    }

    /// The bridge + host-local + portmap chain on network `net` (bridge `bridge`, subnet
    /// `subnet`), masquerading and port mappings with `backend` (`iptables`/`nftables`).
    pub fn chain(&self, net: &str, bridge: &str, subnet: &str, backend: &str) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": net,
            "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
                 "ipMasqBackend": backend,
                 "ipam": {"type": "host-local", "dataDir": self.data(),
                          "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "backend": backend, "snat": true,
                 "capabilities": {"portMappings": true}}
            ]
        })
    }

    /// A runtime for `conflist`, running the plugins in the node.
    pub fn runtime(&self, conflist: Value) -> Runtime {
        Runtime::new(
            Some(&self.node),
            conflist,
            vec![self.bin.path().to_path_buf()],
        )
    }

    /// The node's full state.
    pub fn snapshot(&self) -> NodeState {
        NodeState::of(&self.node, &self.data())
    }
}

fn strip_counters(s: &str) -> String {
    s.lines()
        .map(|l| {
            let mut words: Vec<&str> = Vec::new();
            let mut it = l.split_whitespace().peekable();
            while let Some(w) = it.next() {
                if w == "packets" || w == "bytes" {
                    it.next();
                    continue;
                }
                words.push(w);
            }
            words.join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every file under `dir` (relative path → content, or `<dir>` / `<symlink …>`), skipping
/// host-local's derived index directory.
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, here: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(here) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if e.file_name() == ".cni-rs-index" {
                continue;
            }
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap_or_default();
                out.insert(rel, format!("<symlink {}>", t.display()));
            } else if md.is_dir() {
                out.insert(rel.clone(), "<dir>".into());
                walk(root, &p, out);
            } else if !md.is_file() {
                out.insert(rel, "<special>".into());
            } else {
                let c = std::fs::read(&p).unwrap_or_default();
                out.insert(rel, String::from_utf8_lossy(&c).into_owned());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The reservation files under a data dir (`<net>/<ip>` → content).
pub fn reservations(data: &Path) -> BTreeMap<String, String> {
    tree(data)
        .into_iter()
        .filter(|(k, _)| {
            k.rsplit('/')
                .next()
                .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
        })
        .collect()
}

/// Everything an attachment can leave on a node.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct NodeState {
    pub links: Vec<String>,
    pub addrs: Vec<String>,
    pub routes: Vec<String>,
    pub iptables: String,
    pub ip6tables: String,
    pub nft: String,
    /// The data directory: every file except host-local's derived index.
    pub data: BTreeMap<String, String>,
}

impl NodeState {
    /// Takes the snapshot.
    pub fn of(node: &cni_testkit::Netns, data: &Path) -> NodeState {
        let lines = |s: String| -> Vec<String> {
            let mut v: Vec<String> = s
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            v.sort();
            v
        };
        let addrs = node
            .ip(&["-o", "addr", "show"])
            .lines()
            .map(|l| {
                // "3: cni0    inet 10.88.0.1/16 brd ... scope global cni0\ valid_lft ..."
                let w: Vec<&str> = l.split_whitespace().collect();
                let dev = w.get(1).copied().unwrap_or_default();
                let a = w
                    .iter()
                    .position(|x| *x == "inet" || *x == "inet6")
                    .and_then(|i| w.get(i + 1))
                    .copied()
                    .unwrap_or_default();
                format!("{dev} {a}")
            })
            .filter(|l| !l.contains(" fe80::"))
            .collect::<Vec<_>>();
        let mut addrs = addrs;
        addrs.sort();
        let mut routes = Vec::new();
        for fam in ["-4", "-6"] {
            for l in node.ip(&[fam, "route", "show", "table", "all"]).lines() {
                if l.contains("fe80::") || l.starts_with("multicast ") || l.contains("ff00::") {
                    continue;
                }
                // (`linkdown` follows the bridge's carrier, which lags its last port.)
                routes.push(l.trim().trim_end_matches(" linkdown").to_string());
            }
        }
        routes.sort();
        NodeState {
            links: lines(node.links().join("\n")),
            addrs,
            routes,
            iptables: node.iptables_save(false),
            ip6tables: node.iptables_save(true),
            nft: strip_counters(&node.nft_ruleset()),
            data: tree(data),
        }
    }

    /// Without host-local's allocation cursors (`last_reserved_ip.*`), which every ADD
    /// advances by design: what must come back after DEL is everything else.
    pub fn without_cursors(mut self) -> NodeState {
        self.data.retain(|k, _| {
            !k.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("last_reserved_ip."))
        });
        self
    }

    /// The differences to `other`, one line each (empty if equal).
    pub fn diff(&self, other: &NodeState) -> Vec<String> {
        let mut d = Vec::new();
        let cmp = |name: &str, a: &str, b: &str, d: &mut Vec<String>| {
            if a != b {
                d.push(format!("{name} differ:\n--- before\n{a}\n--- after\n{b}"));
            }
        };
        cmp(
            "links",
            &self.links.join("\n"),
            &other.links.join("\n"),
            &mut d,
        );
        cmp(
            "addresses",
            &self.addrs.join("\n"),
            &other.addrs.join("\n"),
            &mut d,
        );
        cmp(
            "routes",
            &self.routes.join("\n"),
            &other.routes.join("\n"),
            &mut d,
        );
        cmp("iptables", &self.iptables, &other.iptables, &mut d);
        cmp("ip6tables", &self.ip6tables, &other.ip6tables, &mut d);
        cmp("nft", &self.nft, &other.nft, &mut d);
        if self.data != other.data {
            d.push(format!(
                "data dir differs:\n--- before\n{:#?}\n--- after\n{:#?}",
                self.data, other.data
            ));
        }
        d
    }
}

/// Asserts that `after` equals `before`, printing only what differs.
#[track_caller]
pub fn assert_same(before: &NodeState, after: &NodeState, what: &str) {
    let d = before.diff(after);
    assert!(d.is_empty(), "{what}: state left behind:\n{}", d.join("\n"));
}

/// How to run a plugin.
#[derive(Clone, Debug)]
pub struct RunOpts {
    /// Kill the plugin (and its process group) after this long.
    pub deadline: Duration,
    /// `ulimit -v` in KiB, if any.
    pub mem_kib: Option<u64>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
}

impl Default for RunOpts {
    fn default() -> RunOpts {
        RunOpts {
            deadline: Duration::from_secs(60),
            mem_kib: None,
            cwd: None,
        }
    }
}

/// The output of a bounded run, plus how long it took and whether it hit the deadline.
#[derive(Debug)]
pub struct Bounded {
    pub out: PluginOutput,
    pub elapsed: Duration,
    pub timed_out: bool,
}

/// Spawns `bin` with exactly `env` (plus `PATH`, `HOME`, `TMPDIR` as given) in its own process
/// group, from a thread inside `netns` (`None`: the caller's namespace).
pub fn spawn(
    netns: Option<&NetNs>,
    bin: &Path,
    env: &[(&str, &str)],
    opts: &RunOpts,
) -> std::io::Result<Child> {
    let go = || {
        let mut c = match opts.mem_kib {
            Some(kib) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg(format!("ulimit -v {kib} && exec \"$0\""))
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        c.env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(d) = &opts.cwd {
            c.current_dir(d);
        }
        c.spawn()
    };
    match netns {
        Some(ns) => ns.run(go).expect("run in netns"),
        None => go(),
    }
}

/// Runs `bin` (see [`spawn`]) with `stdin`, bounded by `opts.deadline`: on expiry the whole
/// process group is killed and `timed_out` is set.
pub fn run_bounded(
    netns: Option<&NetNs>,
    bin: &Path,
    env: &[(&str, &str)],
    stdin: &[u8],
    opts: &RunOpts,
) -> Bounded {
    let start = Instant::now();
    // A binary copied by a test moments ago can still be open for writing in a child that
    // another test thread forked meanwhile (the fd lives until that child execs): ETXTBSY,
    // which goes away by itself. Bounded retries.
    let mut attempts = 0;
    let mut child = loop {
        match spawn(netns, bin, env, opts) {
            Err(e) if e.raw_os_error() == Some(26) && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            r => break r.unwrap_or_else(|e| panic!("spawn {bin:?}: {e}")),
        }
    };
    let pgid = child.id() as i32;
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if start.elapsed() > opts.deadline {
            timed_out = true;
            kill_group(pgid);
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // Children of the plugin (iptables, nft, IPAM) that outlive it are part of the run.
    wait_group_gone(pgid, Duration::from_secs(20));
    let _ = writer.join();
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    Bounded {
        out: PluginOutput {
            status: status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        },
        elapsed: start.elapsed(),
        timed_out,
    }
}

/// SIGKILL to every process of group `pgid`.
pub fn kill_group(pgid: i32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// True if a live (not zombie) process of group `pgid` exists. Zombies do not count: an
/// orphan is reaped by the machine's init, which may take its time.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    rd.flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // "pid (comm) S ppid pgrp ...": comm may contain spaces; parse after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.first().is_some_and(|s| *s != "Z" && *s != "X")
            && f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
    })
}

/// Waits (bounded) until process group `pgid` has no live member left; true if it is gone. A
/// member that stays past the bound is killed.
pub fn wait_group_gone(pgid: i32, bound: Duration) -> bool {
    let start = Instant::now();
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if start.elapsed() > bound {
            kill_group(pgid);
            return false;
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// What a hostile call must produce.
#[derive(Clone, Debug)]
pub enum Expect {
    /// An error object with this code whose `msg` + `details` contain every string.
    Err(u64, Vec<String>),
    /// An error object with one of these codes, mentioning every string.
    AnyOf(Vec<u64>, Vec<String>),
    /// Either success or an error object; never a panic.
    NoPanic,
    /// Exit 0.
    Ok,
}

/// Shorthand for [`Expect::Err`].
pub fn err(code: u64, mentions: &[&str]) -> Expect {
    Expect::Err(code, mentions.iter().map(|s| s.to_string()).collect())
}

/// Checks the process-level contract of one call: no panic of any kind, exactly one JSON
/// document on stdout when it failed, exit status 1 on failure, and the expectation.
#[track_caller]
pub fn check_output(out: &PluginOutput, expect: &Expect, what: &str) {
    assert!(
        !out.stderr.contains("panicked") && !out.stdout.contains("panicked"),
        "{what}: the plugin panicked: {out}"
    );
    assert!(
        out.status == 0 || out.status == 1,
        "{what}: exit status must be 0 or 1 (killed by a signal or aborted?): {out}"
    );
    if out.status == 1 {
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: stdout is not one JSON error object ({e}): {out}"));
        assert!(
            v["code"].is_u64() && v["msg"].is_string(),
            "{what}: not an error object: {out}"
        );
        assert!(
            !v["msg"].as_str().unwrap_or_default().is_empty(),
            "{what}: empty message: {out}"
        );
    }
    let text = || {
        let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        format!(
            "{} {}",
            v["msg"].as_str().unwrap_or_default(),
            v["details"].as_str().unwrap_or_default()
        )
    };
    match expect {
        Expect::Ok => assert_eq!(out.status, 0, "{what}: expected success: {out}"),
        Expect::NoPanic => {}
        Expect::Err(code, mentions) => {
            assert_eq!(out.status, 1, "{what}: expected an error: {out}");
            assert_eq!(out.error_code(), Some(*code), "{what}: wrong code: {out}");
            for m in mentions {
                assert!(
                    text().contains(m.as_str()),
                    "{what}: message must mention {m:?}: {out}"
                );
            }
        }
        Expect::AnyOf(codes, mentions) => {
            assert_eq!(out.status, 1, "{what}: expected an error: {out}");
            let c = out.error_code().unwrap_or(0);
            assert!(
                codes.contains(&c),
                "{what}: code {c} not in {codes:?}: {out}"
            );
            for m in mentions {
                assert!(
                    text().contains(m.as_str()),
                    "{what}: message must mention {m:?}: {out}"
                );
            }
        }
    }
}

/// The environment of one verb as a runtime sets it (GC/STATUS: the attachment variables
/// empty, as libcni sends them).
pub fn verb_env<'a>(
    verb: &'a str,
    id: &'a str,
    netns: &'a str,
    ifname: &'a str,
    cni_path: &'a str,
) -> Vec<(&'static str, &'a str)> {
    let attach = matches!(verb, "ADD" | "DEL" | "CHECK");
    vec![
        ("CNI_COMMAND", verb),
        ("CNI_CONTAINERID", if attach { id } else { "" }),
        ("CNI_NETNS", if attach { netns } else { "" }),
        ("CNI_IFNAME", if attach { ifname } else { "" }),
        ("CNI_ARGS", ""),
        ("CNI_PATH", cni_path),
    ]
}

/// The verbs that read stdin (VERSION ignores it).
pub const VERBS: [&str; 5] = ["ADD", "CHECK", "DEL", "GC", "STATUS"];

/// Tries to take `flock(LOCK_EX | LOCK_NB)` on `path` for up to `bound`; true on success.
pub fn can_lock(path: &Path, bound: Duration) -> bool {
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let start = Instant::now();
    loop {
        match f.try_lock() {
            Ok(()) => {
                let _ = f.unlock();
                return true;
            }
            Err(_) if start.elapsed() < bound => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return false,
        }
    }
}

/// Every `lock` file under `dir`.
pub fn lock_files(dir: &Path) -> Vec<PathBuf> {
    tree(dir)
        .keys()
        .filter(|k| k.rsplit('/').next() == Some("lock"))
        .map(|k| dir.join(k))
        .collect()
}

/// Runs `f(i)` for `i in 0..n` on a pool of `threads` threads; results in index order.
pub fn pool<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<T>>> =
        (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.min(n).max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let r = f(i);
                    *slots[i].lock().unwrap() = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|m| m.into_inner().unwrap().expect("every slot filled"))
        .collect()
}
