//! Shared fixtures of the real-client tests (`clients_*.rs`).
//!
//! * [`setup`] installs the Debian packages a client needs and builds the cached artefacts
//!   (`scripts/clients/setup.sh`: busybox root filesystem, OCI image, cnitool).
//! * [`Sandbox`]: the place a client runs. A process holding its own mount namespace (a slave
//!   of the machine's: mounts made inside never propagate out, namespaces the test adds later
//!   under `/run/netns` propagate in) whose network namespace is the test's node. Every client
//!   command is entered into it with `nsenter`, so the client's bridge, veths and firewall
//!   rules land in the node, and every file it writes to `/var/lib` (the libcni cache
//!   `/var/lib/cni/results`), `/run`, `/etc` or `/opt` lands in a tmpfs overlay that vanishes
//!   with the sandbox. The machine's `/etc/cni`, `/opt/cni`, `/var/lib/cni`,
//!   `/var/lib/containers` are never written. `/sys` is the node's (a fresh sysfs), with the
//!   machine's cgroup mounts moved over.
//! * [`Outside`]: a namespace joined to the node by a veth pair (198.19.255.0/30), from which
//!   published ports are reached as a remote client would.
//! * [`CgroupGuard`]: removes the cgroups a runtime created under a test-unique parent.
//! * Leftover checks: no veth, no rule naming a container, no reservation, no cache file.
//!
//! Every command is bounded by `timeout`; drop guards stop daemons and containers and remove
//! what was created, also when a test fails.

#![allow(dead_code)]

use cni_testkit::{Netns, Node, TempDir, bin_dir, unique};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Default bound of one client command.
pub const CMD_SECS: u64 = 60;

/// True (with a visible note) when the developer asked to skip the client tests.
pub fn skip_clients(test: &str) -> bool {
    if std::env::var("CNI_SKIP_CLIENTS").is_ok_and(|v| !v.is_empty() && v != "0") {
        eprintln!("skipped: {test} (CNI_SKIP_CLIENTS is set)");
        return true;
    }
    false
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Where the client artefacts are cached between runs (busybox rootfs, OCI image, cnitool).
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("clients")
}

/// The plugin directory the clients are pointed at: this project's binaries, or
/// `$CNI_CLIENT_PLUGIN_DIR` (e.g. `/usr/lib/cni` to run the tests against the reference).
pub fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("CNI_CLIENT_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(bin_dir);
    for p in ["bridge", "host-local", "portmap", "loopback"] {
        assert!(
            dir.join(p).is_file(),
            "plugin {p} not found in {}: run `cargo build -p bridge -p host-local -p portmap -p loopback` \
             (or set CNI_CLIENT_PLUGIN_DIR)",
            dir.display()
        );
    }
    dir
}

/// True when the clients run the reference plugins (development mode), whose known bugs
/// are then reported instead of failing the test.
pub fn is_reference(dir: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(dir) == canon(Path::new("/usr/lib/cni"))
}

/// A directory holding exactly our four plugins (symlinks, or copies with `copy`, e.g. when
/// the directory is bind-mounted over the plugins' own location), so that a client searching
/// it finds nothing else.
pub fn plugin_links(into: &Path, copy: bool) -> PathBuf {
    let src = plugin_dir();
    let dir = into.join("plugins");
    std::fs::create_dir_all(&dir).expect("plugins dir");
    for p in ["bridge", "host-local", "portmap", "loopback"] {
        let target = std::fs::canonicalize(src.join(p)).expect("plugin path");
        if copy {
            std::fs::copy(&target, dir.join(p)).expect("copy plugin");
        } else {
            std::os::unix::fs::symlink(target, dir.join(p)).expect("symlink plugin");
        }
    }
    dir
}

/// Wraps `plugin` in `dir` with a shell script that appends `<CNI_COMMAND> netns=[<CNI_NETNS>]`
/// to `log` before exec'ing the real binary (kept as `<plugin>.real`), so a test can assert
/// how a client called it.
pub fn record_calls(dir: &Path, plugin: &str, log: &Path) {
    let real = dir.join(format!("{plugin}.real"));
    std::fs::rename(dir.join(plugin), &real).expect("rename plugin");
    let script = format!(
        "#!/bin/sh\necho \"$CNI_COMMAND netns=[$CNI_NETNS] id=[$CNI_CONTAINERID]\" >> '{}'\n\
         exec '{}' \"$@\"\n",
        log.display(),
        real.display()
    );
    let wrapper = dir.join(plugin);
    std::fs::write(&wrapper, script).expect("write wrapper");
    let out = Command::new("chmod")
        .arg("0755")
        .arg(&wrapper)
        .output()
        .expect("chmod");
    assert!(out.status.success());
}

/// Installs what `components` need (`podman`, `containerd`, `cnitool`, `busybox`) and builds
/// the cached artefacts; returns the cache directory.
pub fn setup(components: &[&str]) -> PathBuf {
    let cache = cache_dir();
    let script = repo().join("scripts/clients/setup.sh");
    let started = Instant::now();
    let out = Command::new("timeout")
        .arg("1500")
        .arg(&script)
        .arg(&cache)
        .args(components)
        .output()
        .expect("run setup.sh");
    assert!(
        out.status.success(),
        "{} {components:?} failed: {}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "clients setup {components:?}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    cache
}

/// A copy of the cached busybox root filesystem (one per container: runtimes write into it).
pub fn rootfs_copy(cache: &Path, into: &Path, name: &str) -> PathBuf {
    let dst = into.join(name);
    let out = Command::new("cp")
        .arg("-a")
        .arg(cache.join("rootfs"))
        .arg(&dst)
        .output()
        .expect("cp rootfs");
    assert!(out.status.success(), "cp rootfs: {out:?}");
    dst
}

/// Output as text, for messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command bounded by `secs`, returning its output whatever the status.
pub fn bounded(secs: u64, argv: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new("timeout")
        .args(["-k", "5", &secs.to_string()])
        .args(argv)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

/// An own mount namespace (slave of the machine's) in the node's network namespace, where a
/// client runs.
pub struct Sandbox {
    holder: Child,
    pid: u32,
    mnt: String,
    /// Scratch space of the test (visible inside and outside the sandbox).
    pub work: TempDir,
}

impl Sandbox {
    /// Creates the sandbox in `node`. `overlays` are directories (`etc`, `opt`, `var/lib`,
    /// `run`) that get a throwaway writable layer; `binds` are `(source, target)` bind mounts
    /// made after the overlays (the target is created in its overlay if missing).
    pub fn new(node: &Node, overlays: &[&str], binds: &[(PathBuf, &str)]) -> Sandbox {
        let work = TempDir::new("sandbox");
        let t = work.path().join(".sandbox");
        std::fs::create_dir_all(&t).expect("sandbox dir");
        let mut script = String::from(
            "set -eu\nT=\"$1\"\nmount -t tmpfs -o mode=755 cni-e2e \"$T\"\n\
             mkdir -p \"$T/cg\"\n",
        );
        for o in overlays {
            let k = o.replace('/', "_");
            script.push_str(&format!(
                "mkdir -p \"$T/{k}/u\" \"$T/{k}/w\"\n\
                 mount -t overlay overlay -o \"lowerdir=/{o},upperdir=$T/{k}/u,workdir=$T/{k}/w\" /{o}\n"
            ));
        }
        // sysfs of the node (its /sys/class/net), keeping the cgroup mounts.
        script.push_str(
            "mount --rbind /sys/fs/cgroup \"$T/cg\"\nmount -t sysfs sysfs /sys\n\
             mount --move \"$T/cg\" /sys/fs/cgroup\n",
        );
        for (src, dst) in binds {
            script.push_str(&format!(
                "mkdir -p '{dst}'\nmount --bind '{}' '{dst}'\n",
                src.display()
            ));
        }
        script.push_str("echo ready\nread _ || true\n");
        let script_path = work.path().join("sandbox.sh");
        std::fs::write(&script_path, script).expect("write sandbox.sh");
        let log = std::fs::File::create(work.path().join("sandbox.log")).expect("log");
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "slave", "nsenter"])
            .arg(format!("--net={}", node.path().display()))
            .arg("sh")
            .arg(&script_path)
            .arg(&t)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn sandbox holder");
        let pid = holder.id();
        let stdout = holder.stdout.take().expect("holder stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        if ready.trim() != "ready" {
            let _ = holder.kill();
            let _ = holder.wait();
            panic!(
                "sandbox did not start: {}",
                std::fs::read_to_string(work.path().join("sandbox.log")).unwrap_or_default()
            );
        }
        let mnt = std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
            .expect("holder mnt ns")
            .display()
            .to_string();
        Sandbox {
            holder,
            pid,
            mnt,
            work,
        }
    }

    /// The holder's pid (`nsenter -t`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn command(&self, secs: u64, argv: &[&str], envs: &[(&str, &str)]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["-k", "5", &secs.to_string(), "nsenter", "-t"])
            .arg(self.pid.to_string())
            .args(["-m", "-n", "--"])
            .args(argv)
            .envs(envs.iter().copied());
        c
    }

    /// Runs `argv` inside, bounded by `secs`, returning the output whatever the status.
    pub fn cmd(&self, secs: u64, argv: &[&str], envs: &[(&str, &str)]) -> Output {
        self.command(secs, argv, envs)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
    }

    /// Runs `argv` inside, panicking on failure; returns stdout.
    pub fn run(&self, argv: &[&str], envs: &[(&str, &str)]) -> String {
        let out = self.cmd(CMD_SECS, argv, envs);
        assert!(out.status.success(), "{argv:?} failed: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sh -c script` inside (bounded), returning the output whatever the status.
    pub fn sh(&self, script: &str) -> Output {
        self.cmd(CMD_SECS, &["sh", "-c", script], &[])
    }

    /// Starts `argv` inside in the background (a daemon or a foreground client), its output
    /// to `log`, bounded by `secs`.
    pub fn spawn(&self, secs: u64, argv: &[&str], envs: &[(&str, &str)], log: &Path) -> Child {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        self.command(secs, argv, envs)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"))
    }

    /// Files under `dir` inside the sandbox (relative names), sorted.
    pub fn files(&self, dir: &str) -> Vec<String> {
        let out = self.sh(&format!("cd '{dir}' 2>/dev/null && find . -type f | sort"));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_start_matches("./").to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Pids of the processes in the sandbox's mount namespace, except the holder.
    pub fn processes(&self) -> Vec<u32> {
        let mut v = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if pid == self.pid {
                    continue;
                }
                if std::fs::read_link(e.path().join("ns/mnt"))
                    .is_ok_and(|l| l.display().to_string() == self.mnt)
                {
                    v.push(pid);
                }
            }
        }
        v
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Whatever is still running in here was started by this test.
        for _ in 0..3 {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            for pid in left {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Waits for a child at most `secs`; kills it when the time is up. Returns its exit success.
pub fn wait_child(child: &mut Child, secs: u64) -> Option<bool> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st.success()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Polls `f` every 200 ms for at most `secs`.
pub fn eventually<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The shell pipeline fetching `/` from `addr:port` with busybox (bounded).
pub fn http_get_script(busybox: &str, addr: &str, port: u16) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | {busybox} nc -w 3 {addr} {port}")
}

/// The command a container runs: an HTTP server answering `hello-<name>` on port 80 that
/// exits on SIGTERM.
pub fn httpd_script(name: &str) -> String {
    format!(
        "mkdir -p /tmp/www; echo hello-{name} > /tmp/www/index.html; \
         trap 'exit 0' TERM; httpd -f -p 80 -h /tmp/www & wait"
    )
}

/// Fetches `/` from `addr:port` inside `ns` (retrying for up to 10 s); the body or None.
pub fn http_get_in(ns: &Netns, addr: &str, port: u16) -> Option<String> {
    eventually(10, || {
        let out = ns.try_exec(&[
            "timeout",
            "10",
            "sh",
            "-c",
            &http_get_script("busybox", addr, port),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("200 OK").then(|| body(&text))
    })
}

/// The body of an HTTP response.
pub fn body(resp: &str) -> String {
    resp.split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The first IPv4 address (without prefix) of `ip -4 -o addr show` output.
pub fn first_ipv4(ip_addr_output: &str) -> Option<String> {
    ip_addr_output
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
}

/// A namespace outside the node, joined to it by a veth pair: the node side is
/// `198.19.255.1/30`, the outside `198.19.255.2/30`.
pub struct Outside {
    pub ns: Netns,
}

/// The node's address on the outside link.
pub const NODE_ADDR: &str = "198.19.255.1";
/// The outside namespace's address.
pub const OUTSIDE_ADDR: &str = "198.19.255.2";

impl Outside {
    /// Creates the namespace and the link (both only inside namespaces of this test).
    pub fn new(node: &Node) -> Outside {
        let ns = Netns::new("outside");
        node.ip(&[
            "link",
            "add",
            "e2e-out0",
            "type",
            "veth",
            "peer",
            "name",
            "e2e-out1",
            "netns",
            ns.name(),
        ]);
        node.ip(&["addr", "add", "198.19.255.1/30", "dev", "e2e-out0"]);
        node.ip(&["link", "set", "e2e-out0", "up"]);
        ns.ip(&["addr", "add", "198.19.255.2/30", "dev", "e2e-out1"]);
        ns.ip(&["link", "set", "e2e-out1", "up"]);
        Outside { ns }
    }

    /// Routes `subnet` through the node (to reach container addresses directly).
    pub fn route(&self, subnet: &str) {
        self.ns.ip(&["route", "add", subnet, "via", "198.19.255.1"]);
    }
}

/// True if `text` mentions `needle` as a whole token (an address not followed by a digit).
pub fn mentions(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(i, _)| {
        let after = text[i + needle.len()..].chars().next();
        let before = text[..i].chars().last();
        !after.is_some_and(|c| c.is_ascii_alphanumeric())
            && !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
    })
}

/// Firewall lines of the node (iptables, ip6tables and nft) mentioning any of `needles`.
pub fn rules_mentioning(node: &Node, needles: &[String]) -> Vec<String> {
    let mut text = node.iptables_save(false);
    text.push('\n');
    text.push_str(&node.iptables_save(true));
    text.push('\n');
    text.push_str(&String::from_utf8_lossy(
        &node.try_exec(&["nft", "list", "ruleset"]).stdout,
    ));
    text.lines()
        .filter(|l| needles.iter().any(|n| mentions(l, n)))
        .map(str::to_string)
        .collect()
}

/// Files named like an IP address under `dir` (host-local reservations).
pub fn reservations(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if e
                    .file_name()
                    .to_string_lossy()
                    .parse::<std::net::IpAddr>()
                    .is_ok()
                {
                    out.push(p.display().to_string());
                }
            }
        }
    }
    out.sort();
    out
}

/// Host ends of veth pairs left in the node.
pub fn veths(node: &Node) -> Vec<String> {
    node.links()
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect()
}

/// Removes, on drop, the cgroups a runtime created under `/<name>` (in every hierarchy),
/// killing what still runs in them first.
pub struct CgroupGuard {
    pub name: String,
}

impl CgroupGuard {
    /// A test-unique cgroup parent name.
    pub fn new(label: &str) -> CgroupGuard {
        CgroupGuard {
            name: unique(label),
        }
    }

    fn roots(&self) -> Vec<PathBuf> {
        let base = Path::new("/sys/fs/cgroup");
        let mut v = vec![base.join(&self.name)];
        if let Ok(rd) = std::fs::read_dir(base) {
            for e in rd.flatten() {
                v.push(e.path().join(&self.name));
            }
        }
        v.into_iter().filter(|p| p.is_dir()).collect()
    }

    /// Whether any hierarchy still has the cgroup.
    pub fn exists(&self) -> bool {
        !self.roots().is_empty()
    }
}

fn dirs_depth_first(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs_depth_first(&e.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for root in self.roots() {
            let mut dirs = Vec::new();
            dirs_depth_first(&root, &mut dirs);
            for d in &dirs {
                if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                    for pid in procs.split_whitespace() {
                        let _ = Command::new("kill").args(["-9", pid]).output();
                    }
                }
            }
            for d in &dirs {
                for _ in 0..20 {
                    if std::fs::remove_dir(d).is_ok() || !d.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// The hard limit of a resource of this process from `/proc/self/limits` (`None` for
/// unlimited).
pub fn hard_limit(resource: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with(resource))?;
    let fields: Vec<&str> = line[resource.len()..].split_whitespace().collect();
    fields.get(1)?.parse().ok()
}

/// Prints how long a phase took.
pub fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    eprintln!("{what}: {:.1} s", t.elapsed().as_secs_f64());
    v
}

/// An HTTP server inside a container namespace, killed on drop.
pub struct Server(Child);

impl Server {
    /// Serves `hello-<name>` on port 80 inside `ns`, from a directory under `dir`.
    pub fn start(ns: &Netns, dir: &Path, name: &str) -> Server {
        let www = dir.join(format!("www-{name}"));
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), format!("hello-{name}\n")).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "busybox",
                "httpd",
                "-f",
                "-p",
                "80",
                "-h",
            ])
            .arg(&www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start httpd");
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
