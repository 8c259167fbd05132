//! host-local: ADD and DEL cost at 0, 1,000 and 5,000 existing reservations, ours and the
//! reference's in the same run (alternating every iteration, each on its own data directory
//! populated identically). The reference reads every file of the network directory on each
//! ADD and DEL; ours should stay flat.
//!
//! Reservations are pre-populated by writing files directly in the reference's format (plus
//! `last_reserved_ip.0` pointing at the last one, as the reference would have left it). For
//! ours that is a change behind its back, so the first call rebuilds its index by one full
//! scan: that cost is measured and reported separately ("first call after foreign change").

use super::{Ctx, Stats, time};
use cni_testkit::{PluginOutput, TempDir, run_plugin};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const NET: &str = "benchnet";

fn conf(data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NET,
        "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": "10.20.0.0/16"}]]}
    })
}

/// Writes `n` reservations 10.20.0.2, 10.20.0.3, … as the reference would have.
fn populate(data_dir: &Path, n: usize) {
    let dir = data_dir.join(NET);
    std::fs::create_dir_all(&dir).expect("create network dir");
    std::fs::write(dir.join("lock"), "").expect("lock");
    let mut last = String::new();
    for i in 0..n {
        let a = 2 + i as u32;
        let ip = format!("10.20.{}.{}", a / 256, a % 256);
        std::fs::write(dir.join(&ip), format!("pop{i}\r\neth0")).expect("reservation");
        last = ip;
    }
    if !last.is_empty() {
        std::fs::write(dir.join("last_reserved_ip.0"), &last).expect("last_reserved_ip");
    }
}

fn call(bin: &Path, cmd: &str, id: &str, conf: &Value) -> PluginOutput {
    let out = run_plugin(
        None,
        bin,
        &[
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", "/nonexistent/bench-netns"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ],
        &conf.to_string(),
    );
    assert!(out.ok(), "{} {cmd} {id}: {out}", bin.display());
    out
}

/// One side (ours or the reference) at one population size.
struct Side {
    _dir: TempDir,
    conf: Value,
    add: Vec<Duration>,
    del: Vec<Duration>,
}

impl Side {
    fn new(label: &str, n: usize) -> Side {
        let dir = TempDir::new(label);
        let data = dir.path().join("data");
        populate(&data, n);
        Side {
            conf: conf(&data),
            _dir: dir,
            add: Vec::new(),
            del: Vec::new(),
        }
    }

    fn round(&mut self, bin: &Path, id: &str) {
        let conf = &self.conf;
        self.add.push(time(|| {
            call(bin, "ADD", id, conf);
        }));
        self.del.push(time(|| {
            call(bin, "DEL", id, conf);
        }));
    }
}

/// The benchmark section (`--only host-local`).
///
/// Every iteration runs one ADD+DEL round at each population size, ours then the
/// reference's, so that machine noise over time hits every size and both binaries alike.
pub fn run(ctx: &mut Ctx) {
    let ours_bin = ctx.ours.join("host-local");
    if !ours_bin.is_file() {
        ctx.notes
            .push("host-local: binary not built, section skipped".to_string());
        return;
    }
    let ref_bin = ctx
        .reference
        .as_ref()
        .map(|d| d.join("host-local"))
        .filter(|p| p.is_file());
    let iters = ctx.iters(40);
    let sizes = [0usize, 1_000, 5_000];
    let mut ours: Vec<Side> = sizes
        .iter()
        .map(|&n| Side::new("bench-hl-ours", n))
        .collect();
    let mut theirs: Vec<Option<Side>> = sizes
        .iter()
        .map(|&n| ref_bin.as_ref().map(|_| Side::new("bench-hl-ref", n)))
        .collect();
    // First call of ours after the files were written behind its back: index rebuild.
    let mut first: Vec<Duration> = Vec::new();
    for side in &ours {
        first.push(time(|| {
            call(&ours_bin, "ADD", "warm", &side.conf);
        }));
        call(&ours_bin, "DEL", "warm", &side.conf);
    }
    if let Some(b) = ref_bin.as_ref() {
        for t in theirs.iter_mut().flatten() {
            t.round(b, "warm");
            t.add.clear();
            t.del.clear();
        }
    }
    for i in 0..iters {
        let id = format!("bench{i}");
        for k in 0..sizes.len() {
            ours[k].round(&ours_bin, &id);
            if let (Some(t), Some(b)) = (theirs[k].as_mut(), ref_bin.as_ref()) {
                t.round(b, &id);
            }
        }
    }
    for (k, n) in sizes.iter().enumerate() {
        let extra = json!({
            "reservations": n,
            "first_call_after_foreign_change_ms": first[k].as_secs_f64() * 1000.0,
        });
        ctx.record(
            "host-local",
            &format!("ADD, {n} reserved"),
            Stats::of(&ours[k].add),
            theirs[k].as_ref().map(|t| Stats::of(&t.add)),
            extra.clone(),
        );
        ctx.record(
            "host-local",
            &format!("DEL, {n} reserved"),
            Stats::of(&ours[k].del),
            theirs[k].as_ref().map(|t| Stats::of(&t.del)),
            extra,
        );
    }
}
