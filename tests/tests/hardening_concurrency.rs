//! Concurrency: 100 containers added concurrently on one network (the bridge + host-local +
//! portmap chain, masquerading and one published port each), all 100 attached at once, then
//! deleted concurrently; 10 rounds. No call may fail, no address may be given twice (results,
//! reservation files and the containers' interfaces agree), and after every round the node's
//! links, addresses, routes, iptables/nftables rules and reservation files are exactly as
//! before the first round.
//!
//! The calls run on a pool of `HARDENING_POOL` threads (default 24) so that a 2-core machine
//! is saturated without 100 debug-build processes fighting over it; `HARDENING_ROUNDS` sets
//! the rounds (default 10 on iptables, 4 on nftables).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hardening_support;

use cni_testkit::{Attachment, Netns, require_root};
use hardening_support::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

const CONTAINERS: usize = 100;

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn ipv4_of(result: &Value) -> String {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str())
        .find(|a| a.contains('.'))
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_string()
}

fn rounds_on(backend: &str, label: &str, subnet: &str, default_rounds: usize) {
    let rounds = env_or("HARDENING_ROUNDS", default_rounds);
    let threads = env_or("HARDENING_POOL", 24);
    let w = World::new(label);
    let rt = w.runtime(w.chain("hconc", "hcon0", subnet, backend));
    let started = Instant::now();
    let ctrs: Vec<Netns> = (0..CONTAINERS)
        .map(|i| w.node.container(&format!("hcc{i}")))
        .collect();
    let atts: Vec<Attachment> = ctrs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Attachment::new(&format!("hconc{i:03}"), &c.path()).with_caps(json!({
                "portMappings": [{"hostPort": 31000 + i, "containerPort": 80, "protocol": "tcp"}]
            }))
        })
        .collect();
    // The network exists (a node that has run a container before).
    rt.add(&atts[0])
        .unwrap_or_else(|e| panic!("warm-up ADD: {e}"));
    rt.del(&atts[0])
        .unwrap_or_else(|e| panic!("warm-up DEL: {e}"));
    let before = w.snapshot().without_cursors();
    eprintln!(
        "concurrency {backend}: {CONTAINERS} containers set up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let (mut add_time, mut del_time) = (0.0, 0.0);
    for round in 0..rounds {
        let t = Instant::now();
        let results = pool(CONTAINERS, threads, |i| rt.add(&atts[i]));
        add_time += t.elapsed().as_secs_f64();
        let mut by_ip: BTreeMap<String, String> = BTreeMap::new();
        for (i, r) in results.iter().enumerate() {
            let r = r
                .as_ref()
                .unwrap_or_else(|e| panic!("round {round}: ADD of container {i} failed: {e}"));
            let ip = ipv4_of(r);
            assert!(!ip.is_empty(), "round {round}: no IPv4 address in {r}");
            if let Some(other) = by_ip.insert(ip.clone(), atts[i].container_id.clone()) {
                panic!(
                    "round {round}: {ip} given to both {other} and {}",
                    atts[i].container_id
                );
            }
        }
        // The reservation files say the same, one per container.
        let files = reservations(&w.data());
        let on_disk: BTreeMap<String, String> = files
            .iter()
            .map(|(k, v)| {
                (
                    k.rsplit('/').next().unwrap().to_string(),
                    v.split("\r\n").next().unwrap_or_default().to_string(),
                )
            })
            .collect();
        assert_eq!(
            on_disk, by_ip,
            "round {round}: reservations differ from the results"
        );
        // And so do the kernels of a sample of containers (every 10th).
        let sample: BTreeSet<String> = ctrs
            .iter()
            .step_by(10)
            .map(|c| {
                c.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
                    .split_whitespace()
                    .skip_while(|w| *w != "inet")
                    .nth(1)
                    .and_then(|a| a.split('/').next())
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        for (k, c) in ctrs.iter().enumerate().step_by(10) {
            let ip = ipv4_of(results[k].as_ref().unwrap());
            assert!(
                sample.contains(&ip),
                "round {round}: {} lacks {ip}",
                c.name()
            );
        }
        let t = Instant::now();
        let dels = pool(CONTAINERS, threads, |i| rt.del(&atts[i]));
        del_time += t.elapsed().as_secs_f64();
        for (i, d) in dels.iter().enumerate() {
            if let Err(e) = d {
                panic!("round {round}: DEL of container {i} failed: {e}");
            }
        }
        assert_same(
            &before,
            &w.snapshot().without_cursors(),
            &format!("{backend} round {round}"),
        );
    }
    for c in &ctrs {
        assert_eq!(c.links(), vec!["lo".to_string()], "{}", c.name());
    }
    eprintln!(
        "concurrency {backend}: {rounds} rounds of {CONTAINERS} concurrent ADDs and DELs ({threads} threads) in {:.1}s: ADD {:.2}s/round ({:.1} ms per container), DEL {:.2}s/round",
        started.elapsed().as_secs_f64(),
        add_time / rounds as f64,
        add_time * 1000.0 / (rounds * CONTAINERS) as f64,
        del_time / rounds as f64
    );
}

#[test]
fn hundred_containers_ten_rounds_iptables() {
    require_root!();
    rounds_on("iptables", "hcip", "10.70.0.0/24", 10);
}

/// The same on the nftables backend, 4 rounds by default (10 rounds cost about a minute of
/// a 2-core machine in a debug build; `HARDENING_ROUNDS=10` runs them).
#[test]
fn hundred_containers_four_rounds_nftables() {
    require_root!();
    rounds_on("nftables", "hcnf", "10.71.0.0/24", 4);
}
