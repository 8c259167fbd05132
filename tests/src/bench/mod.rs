//! The benchmark harness: runs this project's plugins and the reference ones (Debian's
//! `/usr/lib/cni`) in the same run, alternating so that machine noise hits both, and reports
//! medians, p95 and ratios as a table and as JSON. Never a timed assertion: numbers only.

pub mod bridge;
pub mod host_local;
pub mod portmap;

use serde_json::{Value, json};
use std::path::PathBuf;
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

/// Where the binaries are and what has been measured so far.
pub struct Ctx {
    /// This project's release binaries.
    pub ours: PathBuf,
    /// The reference binaries, if installed.
    pub reference: Option<PathBuf>,
    /// Fewer iterations (for a smoke run).
    pub quick: bool,
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

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        json!({
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
