//! `cni-bench [BIN_DIR] [--quick] [--only GROUP] [--sizes N,N...] [--json FILE] [--md FILE]`:
//! the benchmark suite (`make bench`). Sections: `plugins`, `chain`, `floor`, `host-local`,
//! `portmap`. `--sizes` replaces the node sizes of the `chain` section (1, 10, 100, 250).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cni_e2e::bench::{Ctx, header};
use std::path::PathBuf;

/// A benchmark section: its name for `--only` and its function.
type Section = (&'static str, fn(&mut Ctx));

fn main() {
    let mut args = std::env::args().skip(1);
    let mut ours = PathBuf::from("target/release");
    let mut quick = false;
    let mut only: Option<String> = None;
    let mut sizes: Option<Vec<usize>> = None;
    let mut json_out = PathBuf::from("bench-results/latest.json");
    let mut md_out = PathBuf::from("bench-results/latest.md");
    while let Some(a) = args.next() {
        match a.as_str() {
            // Internal: measure one invocation's peak RSS (see bench::peak_rss_kib).
            "--rss-probe" => {
                let bin = args.next().expect("--rss-probe BIN");
                std::process::exit(cni_e2e::bench::rss_probe_main(&bin));
            }
            "--quick" => quick = true,
            "--only" => only = args.next(),
            "--sizes" => {
                let list = args.next().expect("--sizes N,N...");
                let parsed: Vec<usize> = list
                    .split(',')
                    .map(|n| n.trim().parse().expect("--sizes: numbers of containers"))
                    .collect();
                assert!(parsed.iter().all(|&n| n >= 1), "--sizes: at least 1");
                sizes = Some(parsed);
            }
            "--json" => json_out = PathBuf::from(args.next().expect("--json FILE")),
            "--md" => md_out = PathBuf::from(args.next().expect("--md FILE")),
            other => ours = PathBuf::from(other),
        }
    }
    if !cni_testkit::is_root() {
        eprintln!("cni-bench needs root (it creates network namespaces)");
        std::process::exit(2);
    }
    let mut ctx = Ctx {
        ours: std::fs::canonicalize(&ours).expect("binary dir"),
        reference: cni_testkit::reference_dir(),
        quick,
        sizes,
        rows: Vec::new(),
        notes: Vec::new(),
    };
    println!("{}", header());
    let groups: Vec<Section> = vec![
        ("plugins", cni_e2e::bench::plugins::run),
        ("chain", cni_e2e::bench::chain::run),
        ("floor", cni_e2e::bench::floor::run),
        ("host-local", cni_e2e::bench::host_local::run),
        ("portmap", cni_e2e::bench::portmap::run),
    ];
    for (name, f) in groups {
        if only.as_deref().is_none_or(|o| o == name) {
            f(&mut ctx);
        }
    }
    for (path, text) in [
        (
            &json_out,
            serde_json::to_string_pretty(&ctx.to_json()).unwrap(),
        ),
        (&md_out, ctx.to_markdown()),
    ] {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, text).expect("write results");
    }
    println!(
        "\nJSON written to {}, table to {}",
        json_out.display(),
        md_out.display()
    );
}
