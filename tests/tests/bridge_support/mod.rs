//! Shared fixtures of the bridge tests: a node namespace with its own `CNI_PATH` directory
//! (our `bridge` or the reference's, plus a `host-local`), a host-local data dir, config
//! builders, snapshots of the node's links / firewall rules / IPAM files, and fake IPAM
//! plugins for failure injection.

#![allow(dead_code)]

use cni_testkit::{Netns, Node, Runtime, TempDir, bin};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Our `host-local` if it works (probed once: ADD then DEL in a scratch data dir), else the
/// reference's, with a visible note.
pub fn host_local() -> PathBuf {
    static CHOICE: OnceLock<PathBuf> = OnceLock::new();
    CHOICE
        .get_or_init(|| {
            let ours = cni_testkit::bin_dir().join("host-local");
            if ours.is_file() && probe(&ours) {
                eprintln!("note: bridge tests use our host-local ({})", ours.display());
                ours
            } else {
                eprintln!(
                    "note: our host-local does not pass the probe; bridge tests use /usr/lib/cni/host-local"
                );
                PathBuf::from("/usr/lib/cni/host-local")
            }
        })
        .clone()
}

fn probe(bin: &Path) -> bool {
    let dir = TempDir::new("hlprobe");
    let conf = json!({"cniVersion": "1.0.0", "name": "probe", "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": dir.path(), "ranges": [[{"subnet": "10.99.0.0/24"}]]}})
    .to_string();
    let env = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "probe"),
            ("CNI_NETNS", "/var/run/netns/no-such-probe"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ]
    };
    let add = cni_testkit::run_plugin(None, bin, &env("ADD"), &conf);
    let ok = add.ok()
        && serde_json::from_str::<Value>(&add.stdout)
            .ok()
            .and_then(|v| {
                v["ips"][0]["address"]
                    .as_str()
                    .map(|s| s.starts_with("10.99.0."))
            })
            .unwrap_or(false);
    let del = cni_testkit::run_plugin(None, bin, &env("DEL"), &conf);
    ok && del.ok()
}

/// A `CNI_PATH` directory holding `bridge` (ours or the reference's) and `host-local`.
pub fn cni_dir(reference: bool) -> TempDir {
    let d = TempDir::new(if reference { "refbin" } else { "ourbin" });
    let bridge = if reference {
        PathBuf::from("/usr/lib/cni/bridge")
    } else {
        bin("bridge")
    };
    std::os::unix::fs::symlink(bridge, d.path().join("bridge")).unwrap();
    std::os::unix::fs::symlink(host_local(), d.path().join("host-local")).unwrap();
    d
}

/// Writes an executable script into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// One test's world: a node, a `CNI_PATH`, a host-local data dir.
pub struct World {
    pub data: TempDir,
    pub bin: TempDir,
    pub node: Node,
}

impl World {
    /// With our bridge.
    pub fn new(label: &str) -> World {
        World {
            node: Node::new(label),
            bin: cni_dir(false),
            data: TempDir::new(&format!("{label}-ipam")),
        }
    }

    /// With the reference bridge.
    pub fn reference(label: &str) -> World {
        World {
            node: Node::new(label),
            bin: cni_dir(true),
            data: TempDir::new(&format!("{label}-ipam")),
        }
    }

    /// A host-local `ipam` object with these ranges (`[[subnet], [subnet]]`).
    pub fn ipam(&self, subnets: &[&str]) -> Value {
        let ranges: Vec<Value> = subnets.iter().map(|s| json!([{"subnet": s}])).collect();
        json!({"type": "host-local", "dataDir": self.data.path(), "ranges": ranges,
               "routes": [{"dst": "0.0.0.0/0"}]})
    }

    /// A bridge config (`cniVersion` 1.0.0, network `mynet`) with `extra` merged in and a
    /// dual-stack host-local IPAM unless `extra` sets `ipam`.
    pub fn conf(&self, extra: Value) -> Value {
        let mut c = json!({"cniVersion": "1.0.0", "name": "mynet", "type": "bridge",
            "bridge": "cni0", "isGateway": true, "ipMasq": true,
            "ipam": self.ipam(&["10.88.0.0/16", "2001:db8:1::/64"])});
        if let (Some(obj), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        c
    }

    /// A runtime for `conf` running plugins in the node.
    pub fn runtime(&self, conf: Value) -> Runtime {
        Runtime::new(Some(&self.node), conf, vec![self.bin.path().to_path_buf()])
    }

    /// A runtime with extra `CNI_PATH` directories first (fake plugins).
    pub fn runtime_with(&self, conf: Value, first: &Path) -> Runtime {
        Runtime::new(
            Some(&self.node),
            conf,
            vec![first.to_path_buf(), self.bin.path().to_path_buf()],
        )
    }

    /// The node's state that ADD creates and DEL must remove.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::of(&self.node, self.data.path())
    }
}

/// What an attachment leaves on the node: link names, the nat tables of both families, the
/// nftables ruleset (counters stripped) and the host-local reservation files (named after
/// their IP).
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub links: Vec<String>,
    pub iptables: String,
    pub ip6tables: String,
    pub nft: String,
    pub ipam_files: Vec<String>,
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
        .collect::<Vec<_>>()
        .join("\n")
}

impl Snapshot {
    /// Takes a snapshot of `node` and the host-local files under `data`.
    pub fn of(node: &Netns, data: &Path) -> Snapshot {
        let mut files = Vec::new();
        for net in std::fs::read_dir(data).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().into_owned();
                // Reservations only: files named after an IP (host-local's own rule); `lock`,
                // `last_reserved_ip.*` and side indexes are not reservations.
                if name.parse::<std::net::IpAddr>().is_ok() {
                    files.push(format!("{}/{name}", net.file_name().to_string_lossy()));
                }
            }
        }
        files.sort();
        Snapshot {
            links: node.links(),
            iptables: node.iptables_save(false),
            ip6tables: node.iptables_save(true),
            nft: strip_counters(&node.nft_ruleset()),
            ipam_files: files,
        }
    }
}

/// The addresses of `ifname` in `ns` as `ip -o addr` prints them (`10.88.0.2/16`), global
/// scope only.
pub fn addrs(ns: &Netns, ifname: &str) -> Vec<String> {
    let mut v: Vec<String> = ns
        .ip(&["-o", "addr", "show", "dev", ifname, "scope", "global"])
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.iter()
                .position(|x| *x == "inet" || *x == "inet6")
                .and_then(|i| w.get(i + 1))
                .map(|s| s.to_string())
        })
        .collect();
    v.sort();
    v
}

/// `ip route` (v4 and v6) of `ns`, without kernel-added link-local and proto-kernel noise
/// that depends on MACs, one line each, sorted.
pub fn routes(ns: &Netns) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for fam in ["-4", "-6"] {
        for l in ns.ip(&[fam, "route", "show", "table", "all"]).lines() {
            if l.contains("fe80::")
                || l.starts_with("local ")
                || l.starts_with("multicast ")
                || l.contains("table local")
            {
                continue;
            }
            v.push(l.trim().to_string());
        }
    }
    v.sort();
    v
}

/// `ip -d link show dev <name>` in `ns`.
pub fn link_details(ns: &Netns, name: &str) -> String {
    ns.ip(&["-d", "link", "show", "dev", name])
}

/// A sysctl's value read inside `ns`.
pub fn sysctl(ns: &Netns, key: &str) -> String {
    ns.exec(&["cat", &format!("/proc/sys/{key}")])
        .trim()
        .to_string()
}

/// True if bridge VLAN filtering works on this kernel (probed in a throwaway namespace).
pub fn vlan_filtering_supported() -> bool {
    static S: OnceLock<bool> = OnceLock::new();
    *S.get_or_init(|| {
        let ns = Netns::new("vlanprobe");
        ns.try_exec(&[
            "ip",
            "link",
            "add",
            "pbr0",
            "type",
            "bridge",
            "vlan_filtering",
            "1",
        ])
        .status
        .success()
    })
}

/// An "outside" host linked to the node by a veth: node 198.18.0.1/24, outside 198.18.0.2/24
/// (198.18.0.0/15 is reserved for benchmarking and never routed).
pub fn outside(node: &Netns, label: &str) -> Netns {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let out = Netns::new(label);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let a = format!("up{}x{n}", std::process::id() % 100_000);
    let b = format!("{a}p");
    let st = Command::new("ip")
        .args([
            "link",
            "add",
            &a,
            "netns",
            node.name(),
            "type",
            "veth",
            "peer",
            "name",
            &b,
        ])
        .args(["netns", out.name()])
        .status()
        .unwrap();
    assert!(st.success());
    node.ip(&["addr", "add", "198.18.0.1/24", "dev", &a]);
    node.ip(&["link", "set", &a, "up"]);
    out.ip(&["addr", "add", "198.18.0.2/24", "dev", &b]);
    out.ip(&["link", "set", &b, "up"]);
    out
}

/// Merges the keys of `extra` into `base` (both objects).
pub fn merged(mut base: Value, extra: &Value) -> Value {
    if let (Some(obj), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    base
}

/// Redacts names and MACs of a result so that two implementations' results compare.
pub fn redact(mut v: Value) -> Value {
    if let Some(ifs) = v.get_mut("interfaces").and_then(Value::as_array_mut) {
        for i in ifs {
            if let Some(o) = i.as_object_mut() {
                if o.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.starts_with("veth"))
                {
                    o.insert("name".into(), json!("veth*"));
                }
                if o.contains_key("mac") {
                    o.insert("mac".into(), json!("*"));
                }
            }
        }
    }
    if v.get("dns")
        .is_some_and(|d| d.as_object().is_some_and(|o| o.is_empty()))
    {
        v.as_object_mut().map(|o| o.remove("dns"));
    }
    v
}

/// The first global IPv4 address of `eth0` in `ns`, without prefix.
pub fn ipv4_of(ns: &Netns) -> String {
    addrs(ns, "eth0")
        .into_iter()
        .find(|a| a.contains('.'))
        .and_then(|a| a.split('/').next().map(str::to_string))
        .expect("an IPv4 address on eth0")
}

/// The first global IPv6 address of `eth0` in `ns`, without prefix.
pub fn ipv6_of(ns: &Netns) -> String {
    addrs(ns, "eth0")
        .into_iter()
        .find(|a| a.contains(':'))
        .and_then(|a| a.split('/').next().map(str::to_string))
        .expect("an IPv6 address on eth0")
}

/// Pings `addr` (v4 or v6) from `ns`, retrying for up to `secs` seconds (IPv6 DAD on the
/// bridge address can take a moment).
pub fn ping_within(ns: &Netns, addr: &str, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if ns
            .try_exec(&["ping", "-c", "1", "-W", "1", addr])
            .status
            .success()
        {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Waits (bounded) until none of `names` is a link of `ns` (a deleted namespace takes its
/// veths with it asynchronously).
pub fn wait_links_gone(ns: &Netns, names: &[String], secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let links = ns.links();
        if !names.iter().any(|n| links.contains(n)) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
