//! The benchmark harness: runs this project's plugins and the reference ones (Debian's
//! `/usr/lib/cni`) in the same run, alternating so that machine noise hits both, and reports
//! medians, p95 and ratios as a table and as JSON. Never a timed assertion: numbers only.

pub mod chain;
pub mod floor;
pub mod host_local;
pub mod plugins;
pub mod portmap;

use cni_kernel::NetNs;
use cni_testkit::PluginOutput;
use serde_json::{Value, json};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Median and 95th percentile of a set of timings.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub median: Duration,
    pub p95: Duration,
    pub n: usize,
}

impl Stats {
    /// Stats of `v` (empty → zeros).
    pub fn of(v: &[Duration]) -> Stats {
        let mut s = v.to_vec();
        s.sort();
        let pick = |q: f64| -> Duration {
            if s.is_empty() {
                return Duration::ZERO;
            }
            let i = ((s.len() as f64 - 1.0) * q).round() as usize;
            s[i.min(s.len() - 1)]
        };
        Stats {
            median: pick(0.5),
            p95: pick(0.95),
            n: s.len(),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Row {
    pub group: String,
    pub case: String,
    pub ours: Stats,
    pub reference: Option<Stats>,
    /// Free-form extra figures (process counts, RSS, sizes...).
    pub extra: Value,
}

/// A pause after each measured DEL in the sections that time one plugin at a time (`plugins`,
/// `portmap`). A DEL that removed rules leaves the kernel to destroy them after an RCU grace
/// period, holding the namespace's nf_tables lock meanwhile (10–15 ms, more after thousands
/// of rules); our plugins do not wait for that (the reference does, at exit), so a
/// transaction started at once after it waits instead. The pause keeps each row the cost of
/// its own plugin. The `chain` section pauses after each chain DEL too: there the next
/// operation is often the other side's, and a veth deletion's wait for RCU callbacks covers
/// those the other side's teardown just queued (at 250 containers, our TCP + UDP DEL right
/// after the reference's took 1.6–1.7× the DEL floor, the one after our own 1.15–1.3×).
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// How long a measured container stays attached before its DEL, wherever a DEL deletes a
/// veth pair (`plugins`, `chain`, `floor`). The deletion's wait for RCU callbacks depends on
/// the phase of the grace periods that the ADD's own work started, so a DEL issued a few ms
/// after its ADD measures that phase more than the DEL: on one node, a bridge DEL right
/// after its chain ADD took 26.8 ms (median of 40), 20–22 ms after a pause of 3 ms to 1 s;
/// 0.6 ms more in portmap ADD (a UDP mapping's conntrack walk, or a busy loop in its place)
/// moved bridge DEL's median by 3.6 ms. A container runs for a while before it is deleted,
/// and with this pause ours, the reference's and the floor's DELs all start from the same
/// state.
pub const ATTACHED: std::time::Duration = std::time::Duration::from_millis(50);

/// The pause after attaching background containers, before timing at a node size. Each new
/// container interface sends IPv6 DAD probes, MLD reports and router solicitations for some
/// seconds (DAD within 2 s of coming up, solicitations backing off from 4 s), each flooded by
/// the bridge to every port, DAD's while the kernel holds the RTNL lock. Right after a mass
/// attach that traffic, from up to hundreds of containers, lands on the measured ADDs
/// (measured here, 250 containers: bridge ADD 7.9 ms at once, 6.1 ms after 20 s, 6.1 ms after
/// 80 s), charging a one-time cost of recently started containers to the node's size.
pub const SETTLE_AFTER_FILL: std::time::Duration = std::time::Duration::from_secs(20);

/// Where the binaries are and what has been measured so far.
pub struct Ctx {
    /// This project's release binaries.
    pub ours: PathBuf,
    /// The reference binaries, if installed.
    pub reference: Option<PathBuf>,
    /// Fewer iterations (for a smoke run).
    pub quick: bool,
    /// Node sizes for the `chain` section instead of its own (`--sizes`).
    pub sizes: Option<Vec<usize>>,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Ctx {
    /// Iterations to use: `full`, or a handful in quick mode.
    pub fn iters(&self, full: usize) -> usize {
        if self.quick { full.clamp(1, 3) } else { full }
    }

    /// Records a row and prints it at once.
    pub fn record(
        &mut self,
        group: &str,
        case: &str,
        ours: Stats,
        reference: Option<Stats>,
        extra: Value,
    ) {
        let row = Row {
            group: group.to_string(),
            case: case.to_string(),
            ours,
            reference,
            extra,
        };
        println!("{}", format_row(&row));
        self.rows.push(row);
    }

    /// The report as a Markdown table (with the machine it ran on).
    pub fn to_markdown(&self) -> String {
        let mut s = format!("{}\n\n", machine());
        s.push_str("| group | case | ours p50 | ours p95 | ref p50 | ref p95 | ref/ours |\n");
        s.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
        for r in &self.rows {
            let (a, b, c) = match r.reference {
                Some(x) => (
                    format!("{:.2}", ms(x.median)),
                    format!("{:.2}", ms(x.p95)),
                    format!("{:.1}x", ratio(x.median, r.ours.median)),
                ),
                None => ("".into(), "".into(), "".into()),
            };
            s.push_str(&format!(
                "| {} | {} | {:.2} | {:.2} | {a} | {b} | {c} |\n",
                r.group,
                r.case,
                ms(r.ours.median),
                ms(r.ours.p95)
            ));
        }
        // Process start: memory and size.
        let starts: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.extra.get("size_bytes").is_some())
            .collect();
        if !starts.is_empty() {
            s.push_str(&format!("\n| binary | size | ref size | peak RSS (VERSION, median of {RSS_ROUNDS}) | ref peak RSS |\n"));
            s.push_str("| --- | ---: | ---: | ---: | ---: |\n");
            let kib = |v: &Value| v.as_u64().map(|x| format!("{x} KiB")).unwrap_or_default();
            let size = |v: &Value| {
                v.as_u64()
                    .map(|x| format!("{:.2} MB", x as f64 / 1e6))
                    .unwrap_or_default()
            };
            for r in starts {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    r.case.trim_end_matches(" VERSION"),
                    size(&r.extra["size_bytes"]),
                    size(&r.extra["ref_size_bytes"]),
                    kib(&r.extra["rss_kib"]),
                    kib(&r.extra["ref_rss_kib"]),
                ));
            }
        }
        // Per plugin invocation: programs started and peak RSS.
        for r in &self.rows {
            let (Some(o), Some(t)) = (
                r.extra.get("ours").and_then(Value::as_object),
                r.extra.get("reference").and_then(Value::as_object),
            ) else {
                continue;
            };
            s.push_str(&format!(
                "\nPer plugin invocation ({}, {}): child processes and peak RSS of the process tree (median of {RSS_ROUNDS})\n\n",
                r.group, r.case
            ));
            s.push_str("| invocation | ours: children | ours: peak RSS | ref: children | ref: peak RSS |\n");
            s.push_str("| --- | ---: | ---: | ---: | ---: |\n");
            for (k, v) in o {
                let w = t.get(k).cloned().unwrap_or(Value::Null);
                let progs = |x: &Value| {
                    let n = x["children"]
                        .as_u64()
                        .map(|n| n.to_string())
                        .unwrap_or_default();
                    let mut names: Vec<String> = x["programs"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default();
                    names.sort();
                    names.dedup();
                    if names.is_empty() {
                        n
                    } else {
                        format!("{n} ({})", names.join(", "))
                    }
                };
                let kib = |x: &Value| {
                    x["rss_kib"]
                        .as_u64()
                        .map(|v| format!("{v} KiB"))
                        .unwrap_or_default()
                };
                s.push_str(&format!(
                    "| {k} | {} | {} | {} | {} |\n",
                    progs(v),
                    kib(v),
                    progs(&w),
                    kib(&w)
                ));
            }
        }
        for n in &self.notes {
            s.push_str(&format!("\n* {n}"));
        }
        s.push('\n');
        s
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "machine": machine(),
            "rows": self.rows.iter().map(|r| json!({
                "group": r.group,
                "case": r.case,
                "ours_median_ms": ms(r.ours.median),
                "ours_p95_ms": ms(r.ours.p95),
                "reference_median_ms": r.reference.map(|s| ms(s.median)),
                "reference_p95_ms": r.reference.map(|s| ms(s.p95)),
                "ratio": r.reference.map(|s| ratio(s.median, r.ours.median)),
                "n": r.ours.n,
                "extra": r.extra,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

/// Date, kernel, CPUs and iptables version of this machine.
pub fn machine() -> String {
    let run = |argv: &[&str]| {
        Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    format!(
        "{} · Linux {} · {cpus} CPUs ({model}) · {} · nft {}",
        run(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
        run(&["uname", "-r"]),
        run(&["iptables", "--version"]),
        run(&["nft", "--version"])
            .split_whitespace()
            .nth(1)
            .unwrap_or("?")
    )
}

fn ratio(reference: Duration, ours: Duration) -> f64 {
    if ours.is_zero() {
        0.0
    } else {
        reference.as_secs_f64() / ours.as_secs_f64()
    }
}

/// Header of the printed table.
pub fn header() -> String {
    format!(
        "{:<14} {:<34} {:>10} {:>10} {:>10} {:>10} {:>8}  extra",
        "group", "case", "ours p50", "ours p95", "ref p50", "ref p95", "ref/ours"
    )
}

/// One printed line.
pub fn format_row(r: &Row) -> String {
    let (rp50, rp95, rat) = match r.reference {
        Some(s) => (
            format!("{:.2}", ms(s.median)),
            format!("{:.2}", ms(s.p95)),
            format!("{:.1}x", ratio(s.median, r.ours.median)),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    format!(
        "{:<14} {:<34} {:>10.2} {:>10.2} {:>10} {:>10} {:>8}  {}",
        r.group,
        r.case,
        ms(r.ours.median),
        ms(r.ours.p95),
        rp50,
        rp95,
        rat,
        if r.extra.is_null() {
            String::new()
        } else {
            r.extra.to_string()
        }
    )
}

/// Times `f` once.
pub fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// A thread that joined a network namespace once and runs jobs there, so that plugins are
/// started from the node namespace without a thread and `setns` per invocation (which
/// would add noise to both sides). Jobs run one at a time, in order.
pub struct Worker {
    tx: Option<mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// A worker inside the namespace at `path` (`/run/netns/<node>`).
    pub fn in_netns(path: &Path) -> Worker {
        let path = path.to_path_buf();
        let (tx, rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            let ns = NetNs::open(&path).expect("open node netns");
            nix::sched::setns(ns.fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            ready_tx.send(()).expect("worker ready");
            while let Ok(job) = rx.recv() {
                job();
            }
        });
        ready_rx.recv().expect("worker started");
        Worker {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Runs `f` on the worker and returns its value.
    pub fn call<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (rtx, rrx) = mpsc::channel();
        self.tx
            .as_ref()
            .expect("worker alive")
            .send(Box::new(move || {
                let _ = rtx.send(f());
            }))
            .expect("worker alive");
        rrx.recv().expect("worker job panicked")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A container namespace without a name: `CNI_NETNS` is `/proc/<bench pid>/fd/<fd>`, so
/// hundreds of containers cost no `ip netns add` (and are gone when dropped).
pub struct Sandbox {
    ns: NetNs,
}

impl Sandbox {
    /// A fresh namespace.
    pub fn new() -> Sandbox {
        Sandbox {
            ns: NetNs::new_anonymous().expect("anonymous netns"),
        }
    }

    /// The namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The path a runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> String {
        format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.ns.fd().as_raw_fd()
        )
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

/// The `PATH` plugins get (the firewall tools live in the sbin directories).
pub fn tool_path() -> String {
    std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
}

/// Runs a plugin binary from the calling thread (its namespace is inherited) with exactly
/// `env` plus `PATH`, and `stdin`; returns its output and the wall time from spawn to exit.
pub fn exec(bin: &Path, env: &[(String, String)], stdin: &str) -> (PluginOutput, Duration) {
    let t = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .env("PATH", tool_path())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("wait for plugin");
    let d = t.elapsed();
    (
        PluginOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        d,
    )
}

/// Samples behind each peak-RSS figure: one invocation's peak moves by 100 KiB or more from
/// one run to the next (which windows of the binary the kernel maps around a fault depends
/// on what the page cache holds), so a single sample could not show a 60 KiB change.
pub const RSS_ROUNDS: usize = 5;

/// The median of [`RSS_ROUNDS`] samples of `probe` (a [`peak_rss_kib`] call, plus whatever
/// restores the state it changed); `None` if any sample failed.
pub fn median_rss(mut probe: impl FnMut() -> Option<u64>) -> Option<u64> {
    let mut v = (0..RSS_ROUNDS)
        .map(|_| probe())
        .collect::<Option<Vec<u64>>>()?;
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// Peak resident set (KiB) of one invocation: the plugin and every process it waited for
/// (`ru_maxrss` of the children of a probe process, which is this bench binary run with
/// `--rss-probe`). Run from the thread whose namespace the plugin needs.
pub fn peak_rss_kib(bin: &Path, env: &[(String, String)], stdin: &str) -> Option<u64> {
    let me = std::env::current_exe().ok()?;
    let mut child = Command::new(me)
        .arg("--rss-probe")
        .arg(bin)
        .env_clear()
        .env("PATH", tool_path())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with("rss-probe "))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The body of `cni-bench --rss-probe <bin>`: runs `bin` with this process's environment and
/// stdin, discards its output, and prints `rss-probe <max rss KiB> <exit status>`.
pub fn rss_probe_main(bin: &str) -> i32 {
    use std::os::unix::process::CommandExt;
    // Setting the uid (to the current one) makes std fork instead of vfork/posix_spawn: a
    // vforked child runs on this process's memory until exec, and the kernel would record
    // this process's peak as the child's.
    let status = Command::new(bin)
        .uid(nix::unistd::geteuid().as_raw())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let code = status.ok().and_then(|s| s.code()).unwrap_or(-1);
    let rss = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|u| u.max_rss())
        .unwrap_or(-1);
    println!("rss-probe {rss} {code}");
    code
}

/// The programs an invocation starts, by name (`execve` calls of the plugin's process tree
/// other than the plugin itself, traced with `strace -f`); `None` without strace.
pub fn children(bin: &Path, env: &[(String, String)], stdin: &str) -> Option<Vec<String>> {
    let strace = cni_kernel::firewall::find_in_path("strace")?;
    let log = std::env::temp_dir().join(format!(
        "cni-bench-strace-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    let mut child = Command::new(strace)
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=execve",
            "-e",
            "status=successful",
            "-o",
        ])
        .arg(&log)
        .arg(bin)
        .env_clear()
        .env("PATH", tool_path())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    child.wait().ok()?;
    let text = std::fs::read_to_string(&log).ok()?;
    let _ = std::fs::remove_file(&log);
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("execve(\"")? + 8..];
            let path = &rest[..rest.find('"')?];
            Some(path.rsplit('/').next().unwrap_or(path).to_string())
        })
        .collect();
    // The first execve is the plugin itself.
    if !names.is_empty() {
        names.remove(0);
    }
    Some(names)
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Environment of one invocation.
pub fn cni_env(cmd: &str, id: &str, netns: &str, cni_path: &Path) -> Vec<(String, String)> {
    vec![
        ("CNI_COMMAND".into(), cmd.into()),
        ("CNI_CONTAINERID".into(), id.into()),
        ("CNI_NETNS".into(), netns.into()),
        ("CNI_IFNAME".into(), "eth0".into()),
        ("CNI_PATH".into(), cni_path.display().to_string()),
        ("CNI_ARGS".into(), String::new()),
    ]
}

/// Runs `ours` and `reference` alternately `n` times each; returns both timing lists.
pub fn alternate(
    n: usize,
    mut ours: impl FnMut(usize) -> Duration,
    mut reference: Option<impl FnMut(usize) -> Duration>,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut a = Vec::with_capacity(n);
    let mut b = Vec::with_capacity(n);
    for i in 0..n {
        a.push(ours(i));
        if let Some(r) = reference.as_mut() {
            b.push(r(i));
        }
    }
    (a, b)
}
