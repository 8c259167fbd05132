//! `cni-bench [BIN_DIR] [--quick] [--only GROUP] [--json FILE]`: the benchmark suite.

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
    let mut json_out = PathBuf::from("bench-results/latest.json");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--only" => only = args.next(),
            "--json" => json_out = PathBuf::from(args.next().expect("--json FILE")),
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
        rows: Vec::new(),
        notes: Vec::new(),
    };
    println!("{}", header());
    // Each section: (name for --only, function). Sections are added as plugins land.
    let groups: Vec<Section> = vec![
        ("bridge", cni_e2e::bench::bridge::run),
        ("host-local", cni_e2e::bench::host_local::run),
        ("portmap", cni_e2e::bench::portmap::run),
    ];
    for (name, f) in groups {
        if only.as_deref().is_none_or(|o| o == name) {
            f(&mut ctx);
        }
    }
    if let Some(dir) = json_out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(
        &json_out,
        serde_json::to_string_pretty(&ctx.to_json()).unwrap(),
    )
    .expect("write json");
    println!("\nJSON written to {}", json_out.display());
}
