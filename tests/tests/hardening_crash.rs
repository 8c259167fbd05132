//! Crash safety: the bridge + host-local + portmap chain is killed with SIGKILL at a random
//! point of ADD (a random delay between 0 and 1.25 times the victim's measured ADD time, a few
//! ms to ~20 ms; randomly the bridge (in half of those trials with host-local running inside
//! it, as when `CNI_PATH` has the same build), the host-local that the bridge executes, or
//! portmap),
//! 100 times on each firewall backend. After each kill the
//! runtime's DEL (and, when the killed plugin's children were still running, GC) leaves the
//! node exactly as before: no veth, no address, no route, no iptables or nftables rule, no
//! reservation, no lock held.
//!
//! Runtimes kill plugins exactly like this (a context deadline in Go sends SIGKILL to the
//! plugin only); the children a killed plugin started (its IPAM plugin, `iptables-restore`,
//! `nft`) run to completion as orphans. Odd trials wait for them before the DEL: then DEL alone
//! must restore the node. Even trials send DEL right away, racing the orphans (which may
//! commit after DEL): then GC with the runtime's (empty) valid list must finish the job.
//!
//! Seeded (`HARDENING_SEED` replays a run); `HARDENING_CRASH_TRIALS` sets the trials per
//! backend (default 100, so 200 in all).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hardening_support;

use cni_kernel::NetNs;
use cni_testkit::{Attachment, PluginOutput, TempDir, require_root};
use hardening_support::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which process of the chain is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victim {
    Bridge,
    HostLocal,
    Portmap,
}

/// A plugin run that can be killed: its output, whether the kill hit a live process, and
/// its process group (children included).
struct Killable {
    out: PluginOutput,
    killed: bool,
    pgid: i32,
}

/// Runs `bin` with `stdin`; with `kill`, SIGKILLs after `delay` either the plugin itself or
/// (for the IPAM victim) the process whose pid the host-local wrapper writes to `pidfile`.
fn run_killable(
    ns: &NetNs,
    bin: &Path,
    env: &[(&str, &str)],
    stdin: &[u8],
    kill: Option<(Duration, Option<&Path>)>,
) -> Killable {
    let mut child = spawn(Some(ns), bin, env, &RunOpts::default()).expect("spawn plugin");
    let pgid = child.id() as i32;
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let mut killed = false;
    if let Some((delay, pidfile)) = kill {
        match pidfile {
            None => {
                std::thread::sleep(delay);
                // Still running? Then this kill lands in the middle of its work.
                if child.try_wait().expect("try_wait").is_none() {
                    killed = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    )
                    .is_ok();
                }
            }
            Some(pidfile) => {
                // Wait (bounded) for the bridge to execute its IPAM plugin.
                let start = Instant::now();
                let pid = loop {
                    if let Some(pid) = std::fs::read_to_string(pidfile)
                        .ok()
                        .and_then(|s| s.trim().parse::<i32>().ok())
                    {
                        break Some(pid);
                    }
                    if child.try_wait().expect("try_wait").is_some()
                        || start.elapsed() > Duration::from_secs(10)
                    {
                        break None;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                };
                if let Some(pid) = pid {
                    std::thread::sleep(delay);
                    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|s| !s.contains(") Z "));
                    if alive {
                        killed = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        )
                        .is_ok();
                    }
                }
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            kill_group(pgid);
            panic!("{} hung", bin.display());
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let _ = writer.join();
    use std::os::unix::process::ExitStatusExt;
    Killable {
        out: PluginOutput {
            status: status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned(),
            stderr: String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned(),
        },
        killed,
        pgid,
    }
}

/// A `CNI_PATH` whose host-local is a wrapper that records its pid, then becomes the real one.
fn crash_bin(pidfile: &Path) -> TempDir {
    let d = TempDir::new("hcbin");
    for p in ["bridge", "portmap"] {
        std::os::unix::fs::symlink(cni_testkit::bin(p), d.path().join(p)).unwrap();
    }
    let w = d.path().join("host-local");
    std::fs::write(
        &w,
        format!(
            "#!/bin/sh\necho $$ > {}.tmp && mv {0}.tmp {0}\nexec {} \"$@\"\n",
            pidfile.display(),
            cni_testkit::bin("host-local").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// The locks a plugin may hold: host-local's, and the xtables lock.
fn assert_no_lock_held(data: &Path, what: &str) {
    let mut locks = lock_files(data);
    let xt = PathBuf::from("/run/xtables.lock");
    if xt.exists() {
        locks.push(xt);
    }
    for l in locks {
        assert!(
            can_lock(&l, Duration::from_secs(5)),
            "{what}: lock {} is still held",
            l.display()
        );
    }
}

fn trials() -> usize {
    std::env::var("HARDENING_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

fn crash_trials(backend: &str, label: &str, subnet: &str) {
    let started = Instant::now();
    let mut rng = Rng::from_env(&format!("crash {backend}"));
    let w = World::new(label);
    let pid_dir = TempDir::new("hcpid");
    let pidfile = pid_dir.path().join("host-local.pid");
    let bin = crash_bin(&pidfile);
    let conflist = w.chain("hcrash", "hcbr0", subnet, backend);
    let rt = cni_testkit::Runtime::new(
        Some(&w.node),
        conflist.clone(),
        vec![bin.path().to_path_buf()],
    );
    let ns = w.node_ns();
    let ctr = w.node.container(&format!("{label}c"));
    let caps = json!({"portMappings": [
        {"hostPort": 28080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 28081, "containerPort": 81, "protocol": "udp"}]});
    // Warm up: the network (bridge, gateway, shared chains) exists before the snapshot, as
    // on any node that has run a container.
    let warm = Attachment::new("hcwarm", &ctr.path()).with_caps(caps.clone());
    rt.add(&warm).unwrap_or_else(|e| panic!("warm-up ADD: {e}"));
    rt.del(&warm).unwrap_or_else(|e| panic!("warm-up DEL: {e}"));
    let plugins: Vec<Value> = conflist["plugins"].as_array().unwrap().clone();
    let cni_path = bin.path().display().to_string();
    // Half of the bridge kills use the real host-local (same build: bridge runs it in a
    // thread, which dies with it) instead of the wrapper (a process that outlives bridge).
    let inproc = TempDir::new("hcinproc");
    for p in ["bridge", "portmap", "host-local"] {
        std::os::unix::fs::symlink(cni_testkit::bin(p), inproc.path().join(p)).unwrap();
    }
    let inproc_path = inproc.path().display().to_string();
    let mut inproc_kills = 0;
    let netns = ctr.path().display().to_string();
    // How long each victim takes to ADD here: kill delays are drawn from 0 to 1.25 times that,
    // so that most kills land inside the work whatever the build and machine.
    let mut took = [Duration::ZERO; 3];
    for round in 0..3 {
        let id = format!("hctime{round}");
        let env = verb_env("ADD", &id, &netns, "eth0", &cni_path);
        let t = Instant::now();
        let hl = run_killable(
            &ns,
            &bin.path().join("host-local"),
            &env,
            rt.request_config(&plugins[0], None, &caps)
                .to_string()
                .as_bytes(),
            None,
        );
        took[1] += t.elapsed();
        assert!(hl.out.ok(), "timing host-local: {}", hl.out);
        let denv = verb_env("DEL", &id, &netns, "eth0", &cni_path);
        let conf = rt.request_config(&plugins[0], None, &caps).to_string();
        assert!(
            run_killable(
                &ns,
                &bin.path().join("host-local"),
                &denv,
                conf.as_bytes(),
                None
            )
            .out
            .ok()
        );
        let t = Instant::now();
        let br = run_killable(&ns, &bin.path().join("bridge"), &env, conf.as_bytes(), None);
        took[0] += t.elapsed();
        assert!(br.out.ok(), "timing bridge: {}", br.out);
        let prev: Value = serde_json::from_str(&br.out.stdout).unwrap();
        let pconf = rt
            .request_config(&plugins[1], Some(&prev), &caps)
            .to_string();
        let t = Instant::now();
        let pm = run_killable(
            &ns,
            &bin.path().join("portmap"),
            &env,
            pconf.as_bytes(),
            None,
        );
        took[2] += t.elapsed();
        assert!(pm.out.ok(), "timing portmap: {}", pm.out);
        let att = Attachment::new(&id, &ctr.path()).with_caps(caps.clone());
        rt.del(&att).unwrap_or_else(|e| panic!("timing DEL: {e}"));
    }
    let max_delay: Vec<u64> = took
        .iter()
        .map(|d| (d.as_micros() as u64 / 3) * 5 / 4 + 1)
        .collect();
    eprintln!("crash {backend}: kill delays up to {max_delay:?} µs (bridge, host-local, portmap)");
    let before = w.snapshot().without_cursors();
    let n = trials();
    let (mut hits, mut del_alone, mut needed_gc) = (0, 0, 0);
    let mut by_victim = [0usize; 3];
    // Time spent in: ADD (with the kill), waiting for orphans, DEL, snapshots, GC.
    let mut phase = [Duration::ZERO; 5];
    for i in 0..n {
        let t0 = Instant::now();
        let id = format!("hcrash{i}");
        let att = Attachment::new(&id, &ctr.path()).with_caps(caps.clone());
        let victim = match rng.below(3) {
            0 => Victim::Bridge,
            1 => Victim::HostLocal,
            _ => Victim::Portmap,
        };
        let delay = Duration::from_micros(rng.below(max_delay[victim as usize]));
        let in_process = victim == Victim::Bridge && rng.below(2) == 0;
        inproc_kills += usize::from(in_process);
        let what = format!(
            "{backend} trial {i}: kill {victim:?} after {delay:?}{}",
            if in_process { " (IPAM in-process)" } else { "" }
        );
        let _ = std::fs::remove_file(&pidfile);
        let add_path = if in_process { &inproc_path } else { &cni_path };
        let env = verb_env("ADD", &id, &netns, "eth0", add_path);

        // ADD through the chain, as a runtime does, with the kill.
        let conf = rt.request_config(&plugins[0], None, &att.cap_args);
        let kill = match victim {
            Victim::Bridge => Some((delay, None)),
            Victim::HostLocal => Some((delay, Some(pidfile.as_path()))),
            Victim::Portmap => None,
        };
        let br = run_killable(
            &ns,
            &bin.path().join("bridge"),
            &env,
            conf.to_string().as_bytes(),
            kill,
        );
        let mut groups = vec![br.pgid];
        let mut killed = br.killed;
        let mut result: Option<Value> = None;
        if br.out.ok() {
            let prev: Value = serde_json::from_str(&br.out.stdout).unwrap();
            let conf = rt.request_config(&plugins[1], Some(&prev), &att.cap_args);
            let kill = (victim == Victim::Portmap).then_some((delay, None));
            let pm = run_killable(
                &ns,
                &bin.path().join("portmap"),
                &env,
                conf.to_string().as_bytes(),
                kill,
            );
            groups.push(pm.pgid);
            killed |= pm.killed;
            if pm.out.ok() {
                result = Some(serde_json::from_str(&pm.out.stdout).unwrap());
            } else if !pm.killed {
                // A kill, or a failure it caused: never a panic.
                check_output(&pm.out, &Expect::NoPanic, &what);
            }
        } else if !br.killed {
            // The bridge survived but failed (its IPAM plugin was killed): a clean error.
            check_output(&br.out, &Expect::NoPanic, &what);
        }
        if killed {
            hits += 1;
            by_victim[victim as usize] += 1;
        }
        if let Some(r) = &result {
            rt.prime(&att, r.clone());
        }

        let wait_first = i % 2 == 1;
        phase[0] += t0.elapsed();
        let t1 = Instant::now();
        if wait_first {
            for g in &groups {
                assert!(
                    wait_group_gone(*g, Duration::from_secs(30)),
                    "{what}: orphans did not finish"
                );
            }
        }
        phase[1] += t1.elapsed();
        // The runtime's DEL (without prevResult unless ADD returned one): must succeed.
        let t2 = Instant::now();
        rt.del(&att)
            .unwrap_or_else(|e| panic!("{what}: DEL failed: {e}"));
        phase[2] += t2.elapsed();
        let t1 = Instant::now();
        for g in &groups {
            assert!(
                wait_group_gone(*g, Duration::from_secs(30)),
                "{what}: orphans did not finish"
            );
        }
        phase[1] += t1.elapsed();
        let t3 = Instant::now();
        let after_del = w.snapshot().without_cursors();
        phase[3] += t3.elapsed();
        if after_del.diff(&before).is_empty() {
            del_alone += 1;
        } else {
            assert!(
                !wait_first,
                "{what}: DEL alone (no process of the ADD left) must restore the node:\n{}",
                before.diff(&after_del).join("\n")
            );
            needed_gc += 1;
            let t4 = Instant::now();
            rt.gc(Some(&[]))
                .unwrap_or_else(|e| panic!("{what}: GC failed: {e:?}"));
            assert_same(
                &before,
                &w.snapshot().without_cursors(),
                &format!("{what}, after DEL and GC"),
            );
            phase[4] += t4.elapsed();
        }
        assert_eq!(
            ctr.links(),
            vec!["lo".to_string()],
            "{what}: container links"
        );
        assert_no_lock_held(&w.data(), &what);
    }
    eprintln!(
        "crash {backend}: {n} trials in {:.1}s; {hits} kills hit a running process (bridge {} ({inproc_kills} bridge trials with IPAM in-process), host-local {}, portmap {}); DEL alone restored the node {del_alone} times, DEL + GC {needed_gc} times",
        started.elapsed().as_secs_f64(),
        by_victim[0],
        by_victim[1],
        by_victim[2]
    );
    eprintln!(
        "crash {backend}: time in ADD {:?}, waiting for orphans {:?}, DEL {:?}, snapshots {:?}, GC {:?}",
        phase[0], phase[1], phase[2], phase[3], phase[4]
    );
    // The kills must really land inside ADD (otherwise this test proves nothing).
    assert!(
        hits * 4 >= n,
        "only {hits} of {n} kills hit a running plugin"
    );
    assert!(
        by_victim.iter().all(|c| *c > 0),
        "every victim must be hit: {by_victim:?}"
    );
}

#[test]
fn sigkill_during_add_iptables() {
    require_root!();
    crash_trials("iptables", "hcrip", "10.68.0.0/24");
}

#[test]
fn sigkill_during_add_nftables() {
    require_root!();
    crash_trials("nftables", "hcrnf", "10.69.0.0/24");
}
