//! host-local sharing one data directory with the reference binary (Debian's
//! `/usr/lib/cni/host-local`, 1.1.1: cniVersion up to 1.0.0, no GC/STATUS) during a rolling
//! upgrade: reservations made by either are seen, checked and released by the other, in both
//! directions and interleaved at random; and many processes at once (ours alone, and ours
//! mixed with the reference, which share the flock'd `lock`) never hand out an address twice
//! and never lose a release.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cni_testkit::{PluginOutput, TempDir, bin, run_plugin};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const NETNS: &str = "/nonexistent/netns-host-local";

fn reference() -> Option<PathBuf> {
    let p = cni_testkit::reference_dir()?.join("host-local");
    p.is_file().then_some(p)
}

macro_rules! require_reference {
    () => {
        match reference() {
            Some(p) => p,
            None => {
                eprintln!("skipped: reference host-local not installed (apt-get install containernetworking-plugins)");
                return;
            }
        }
    };
}

struct Net {
    dir: TempDir,
    conf: Value,
}

impl Net {
    fn new(label: &str, ipam: Value) -> Net {
        let dir = TempDir::new(label);
        let mut ipam = ipam;
        ipam["type"] = json!("host-local");
        ipam["dataDir"] = json!(dir.path().join("data"));
        let conf = json!({"cniVersion": "1.0.0", "name": "mixnet", "type": "bridge", "ipam": ipam});
        Net { dir, conf }
    }

    fn net_dir(&self) -> PathBuf {
        self.dir.path().join("data").join("mixnet")
    }

    fn run(&self, binary: &Path, cmd: &str, id: &str, conf: &Value) -> PluginOutput {
        run_plugin(
            None,
            binary,
            &[
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", if cmd == "DEL" { "" } else { NETNS }),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", ""),
                ("CNI_PATH", "/nonexistent"),
            ],
            &conf.to_string(),
        )
    }

    fn files(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let Ok(rd) = std::fs::read_dir(self.net_dir()) else {
            return m;
        };
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if name.parse::<std::net::IpAddr>().is_ok() {
                m.insert(name, std::fs::read_to_string(e.path()).unwrap());
            }
        }
        m
    }
}

fn addresses(out: &PluginOutput) -> Vec<String> {
    assert!(out.ok(), "{out}");
    out.json()["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap().to_string())
        .collect()
}

fn dual() -> Value {
    json!({"ranges": [[{"subnet": "10.7.0.0/24"}], [{"subnet": "fd00:7::/64"}]]})
}

#[test]
fn reference_reserves_we_check_and_release() {
    let theirs = require_reference!();
    let ours = bin("host-local");
    let net = Net::new("hl-ref-first", dual());
    assert_eq!(
        addresses(&net.run(&theirs, "ADD", "r1", &net.conf)),
        ["10.7.0.2/24", "fd00:7::2/64"]
    );
    assert_eq!(
        addresses(&net.run(&theirs, "ADD", "r2", &net.conf)),
        ["10.7.0.3/24", "fd00:7::3/64"]
    );
    // Ours sees them: CHECK passes, a duplicate ADD is refused, round robin continues after
    // the reference's last reservation.
    assert!(net.run(&ours, "CHECK", "r1", &net.conf).ok());
    let mut with_prev = net.conf.clone();
    with_prev["prevResult"] = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.7.0.2/24"}, {"address": "fd00:7::2/64"}]});
    let out = net.run(&ours, "CHECK", "r1", &with_prev);
    assert!(out.ok(), "{out}");
    let dup = net.run(&ours, "ADD", "r1", &net.conf);
    assert_eq!(dup.error_code(), Some(999), "{dup}");
    assert!(
        dup.error_msg()
            .contains("10.7.0.2 has been allocated to r1"),
        "{dup}"
    );
    assert_eq!(
        addresses(&net.run(&ours, "ADD", "o1", &net.conf)),
        ["10.7.0.4/24", "fd00:7::4/64"]
    );
    // Ours releases the reference's reservation; the reference agrees it is gone.
    assert!(net.run(&ours, "DEL", "r1", &net.conf).ok());
    assert!(!net.files().values().any(|c| c == "r1\r\neth0"));
    let out = net.run(&theirs, "CHECK", "r1", &net.conf);
    assert_eq!(out.error_code(), Some(999), "{out}");
    assert!(net.run(&theirs, "CHECK", "o1", &net.conf).ok());
    assert!(net.run(&theirs, "CHECK", "r2", &net.conf).ok());
}

#[test]
fn we_reserve_reference_checks_and_releases() {
    let theirs = require_reference!();
    let ours = bin("host-local");
    let net = Net::new("hl-ours-first", dual());
    assert_eq!(
        addresses(&net.run(&ours, "ADD", "o1", &net.conf)),
        ["10.7.0.2/24", "fd00:7::2/64"]
    );
    assert_eq!(
        addresses(&net.run(&ours, "ADD", "o2", &net.conf)),
        ["10.7.0.3/24", "fd00:7::3/64"]
    );
    let index_before: Vec<_> = std::fs::read_dir(net.net_dir().join(".cni-rs-index"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    // The reference sees ours: CHECK, duplicate refusal, round robin from our last address.
    assert!(net.run(&theirs, "CHECK", "o1", &net.conf).ok());
    let dup = net.run(&theirs, "ADD", "o1", &net.conf);
    assert!(
        dup.stdout.contains("10.7.0.2 has been allocated to o1"),
        "{dup}"
    );
    assert_eq!(
        addresses(&net.run(&theirs, "ADD", "r1", &net.conf)),
        ["10.7.0.4/24", "fd00:7::4/64"]
    );
    // The reference's DEL (a recursive walk matching every file's content) removes our
    // reservation and nothing of our index.
    assert!(net.run(&theirs, "DEL", "o1", &net.conf).ok());
    assert!(!net.files().values().any(|c| c == "o1\r\neth0"));
    let index_after: Vec<_> = std::fs::read_dir(net.net_dir().join(".cni-rs-index"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(index_before.len(), index_after.len());
    // Ours notices what the reference did.
    assert_eq!(
        net.run(&ours, "CHECK", "o1", &net.conf).error_code(),
        Some(999)
    );
    assert!(net.run(&ours, "CHECK", "r1", &net.conf).ok());
    assert!(net.run(&ours, "DEL", "r1", &net.conf).ok());
    assert_eq!(
        net.run(&theirs, "CHECK", "r1", &net.conf).error_code(),
        Some(999)
    );
    assert_eq!(
        net.files().values().collect::<Vec<_>>(),
        ["o2\r\neth0", "o2\r\neth0"]
    );
}

#[test]
fn legacy_files_are_released_by_both() {
    let theirs = require_reference!();
    let ours = bin("host-local");
    let net = Net::new(
        "hl-legacy",
        json!({"ranges": [[{"subnet": "10.7.0.0/24"}]]}),
    );
    assert!(net.run(&ours, "DEL", "nobody", &net.conf).ok());
    // (DEL of a network never used creates nothing; the files below need the directory.)
    std::fs::create_dir_all(net.net_dir()).unwrap();
    for (who, deleter) in [("a", &ours), ("b", &theirs)] {
        std::fs::write(
            net.net_dir()
                .join(format!("10.7.0.{}", if who == "a" { 50 } else { 51 })),
            who,
        )
        .unwrap();
        assert!(net.run(deleter, "CHECK", who, &net.conf).ok());
        assert!(net.run(deleter, "DEL", who, &net.conf).ok());
    }
    assert!(net.files().is_empty(), "{:?}", net.files());
}

/// A small deterministic PRNG (xorshift).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn random_interleaving_of_both_binaries_matches_a_model() {
    let theirs = require_reference!();
    let ours = bin("host-local");
    let net = Net::new(
        "hl-random",
        json!({"ranges": [[{"subnet": "10.7.0.0/27"}], [{"subnet": "fd00:7::/64"}]]}),
    );
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut live: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for step in 0..80 {
        let id = format!("c{}", rng.below(14));
        let (who, binary) = if rng.below(2) == 0 {
            ("ours", &ours)
        } else {
            ("theirs", &theirs)
        };
        let what = rng.below(3);
        let ctx = format!("step {step}: {who}");
        if what == 2 {
            let out = net.run(binary, "CHECK", &id, &net.conf);
            assert_eq!(out.ok(), live.contains_key(&id), "{ctx} CHECK {id}: {out}");
        } else if let Some(ips) = live.get(&id).cloned() {
            if what == 0 {
                let out = net.run(binary, "ADD", &id, &net.conf);
                assert!(
                    !out.ok() && out.stdout.contains("duplicate allocation"),
                    "{ctx} dup ADD {id}: {out}"
                );
            } else {
                assert!(
                    net.run(binary, "DEL", &id, &net.conf).ok(),
                    "{ctx} DEL {id}"
                );
                live.remove(&id);
                for ip in ips {
                    assert!(
                        !net.files().contains_key(ip.split('/').next().unwrap()),
                        "{ctx}"
                    );
                }
            }
        } else if what == 0 {
            let ips = addresses(&net.run(binary, "ADD", &id, &net.conf));
            assert_eq!(ips.len(), 2, "{ctx}");
            live.insert(id, ips);
        } else {
            assert!(
                net.run(binary, "DEL", &id, &net.conf).ok(),
                "{ctx} DEL of nothing"
            );
        }
        // The files are exactly the model.
        let mut expected: BTreeMap<String, String> = BTreeMap::new();
        for (id, ips) in &live {
            for ip in ips {
                expected.insert(
                    ip.split('/').next().unwrap().to_string(),
                    format!("{id}\r\neth0"),
                );
            }
        }
        assert_eq!(net.files(), expected, "{ctx}");
    }
    // Tear down alternately; nothing is left but lock, last_reserved_ip.* and our index.
    for (i, id) in live.keys().enumerate() {
        let binary = if i % 2 == 0 { &ours } else { &theirs };
        assert!(net.run(binary, "DEL", id, &net.conf).ok());
    }
    assert!(net.files().is_empty());
}

fn parallel_adds(net: &Net, binaries: Vec<PathBuf>, n: usize) -> Vec<(String, Vec<String>)> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let binary = binaries[i % binaries.len()].clone();
            let conf = net.conf.clone();
            let data = net.dir.path().to_path_buf();
            std::thread::spawn(move || {
                let _keep = data;
                let id = format!("p{i}");
                let out = run_plugin(
                    None,
                    &binary,
                    &[
                        ("CNI_COMMAND", "ADD"),
                        ("CNI_CONTAINERID", &id),
                        ("CNI_NETNS", NETNS),
                        ("CNI_IFNAME", "eth0"),
                        ("CNI_PATH", "/nonexistent"),
                    ],
                    &conf.to_string(),
                );
                (id, addresses(&out))
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn parallel_dels(net: &Net, binaries: Vec<PathBuf>, ids: Vec<String>) {
    let handles: Vec<_> = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let binary = binaries[i % binaries.len()].clone();
            let conf = net.conf.clone();
            std::thread::spawn(move || {
                run_plugin(
                    None,
                    &binary,
                    &[
                        ("CNI_COMMAND", "DEL"),
                        ("CNI_CONTAINERID", &id),
                        ("CNI_IFNAME", "eth0"),
                        ("CNI_PATH", "/nonexistent"),
                    ],
                    &conf.to_string(),
                )
            })
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert!(out.ok(), "{out}");
    }
}

fn assert_distinct(results: &[(String, Vec<String>)], net: &Net) {
    let all: Vec<&String> = results.iter().flat_map(|(_, v)| v).collect();
    let set: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(
        set.len(),
        all.len(),
        "an address was handed out twice: {results:?}"
    );
    let files = net.files();
    assert_eq!(files.len(), all.len());
    for (id, ips) in results {
        for ip in ips {
            assert_eq!(
                files[ip.split('/').next().unwrap()],
                format!("{id}\r\neth0")
            );
        }
    }
}

#[test]
fn fifty_parallel_adds_get_distinct_addresses_and_dels_lose_nothing() {
    let ours = bin("host-local");
    let net = Net::new("hl-parallel", dual());
    let results = parallel_adds(&net, vec![ours.clone()], 50);
    assert_eq!(results.len(), 50);
    assert_distinct(&results, &net);
    // A later sequential ADD continues after all of them.
    let ids: Vec<String> = results.iter().map(|(id, _)| id.clone()).collect();
    parallel_dels(&net, vec![ours.clone()], ids);
    assert!(net.files().is_empty(), "{:?}", net.files());
    // The index is still exact: a fresh ADD for an old ID is not a duplicate.
    assert!(net.run(&ours, "ADD", "p7", &net.conf).ok());
}

#[test]
fn parallel_mix_with_the_reference_never_collides() {
    let theirs = require_reference!();
    let ours = bin("host-local");
    let net = Net::new("hl-parallel-mix", dual());
    let results = parallel_adds(&net, vec![ours.clone(), theirs.clone()], 30);
    assert_distinct(&results, &net);
    let ids: Vec<String> = results.iter().map(|(id, _)| id.clone()).collect();
    parallel_dels(&net, vec![theirs, ours.clone()], ids);
    assert!(net.files().is_empty(), "{:?}", net.files());
    assert!(net.run(&ours, "ADD", "p1", &net.conf).ok());
}
