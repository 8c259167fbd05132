//! `cni-run`: a tiny libcni-style runtime for the demo and for trying configs by hand.
//!
//! ```text
//! cni-run add|check|del|gc|status --conflist FILE [--netns PATH] [--id ID] [--ifname eth0]
//!         [--cap-args JSON] [--args CNI_ARGS] [--cni-path DIR:DIR] [--cache-dir DIR]
//!         [--valid ID:IFNAME,...]
//! ```
//! Plugins run in the caller's namespace (use `ip netns exec <node> cni-run ...`). The ADD
//! result is cached in `--cache-dir` (default `/var/lib/cni-run`) for CHECK and DEL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cni_testkit::{Attachment, Runtime};
use serde_json::Value;
use std::path::PathBuf;

fn usage() -> ! {
    eprintln!(
        "usage: cni-run add|check|del|gc|status --conflist FILE [--netns PATH] [--id ID] [--ifname IF] [--cap-args JSON] [--args CNI_ARGS] [--cni-path DIRS] [--cache-dir DIR] [--valid ID:IF,...]"
    );
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let verb = args.next().unwrap_or_else(|| usage());
    let mut opts = std::collections::HashMap::new();
    while let Some(k) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        opts.insert(k.trim_start_matches('-').to_string(), v);
    }
    let conflist: Value = serde_json::from_str(
        &std::fs::read_to_string(opts.get("conflist").unwrap_or_else(|| usage()))
            .expect("read conflist"),
    )
    .expect("conflist JSON");
    let cni_path: Vec<PathBuf> = opts
        .get("cni-path")
        .cloned()
        .or_else(|| std::env::var("CNI_PATH").ok())
        .unwrap_or_else(|| "/opt/cni/bin".into())
        .split(':')
        .map(PathBuf::from)
        .collect();
    let rt = Runtime::new(None, conflist, cni_path);
    let att = Attachment {
        container_id: opts.get("id").cloned().unwrap_or_default(),
        ifname: opts.get("ifname").cloned().unwrap_or_else(|| "eth0".into()),
        netns: opts.get("netns").cloned().unwrap_or_default(),
        cni_args: opts.get("args").cloned().unwrap_or_default(),
        cap_args: opts
            .get("cap-args")
            .map(|s| serde_json::from_str(s).expect("--cap-args JSON"))
            .unwrap_or(Value::Null),
    };
    let cache_dir = PathBuf::from(
        opts.get("cache-dir")
            .cloned()
            .unwrap_or_else(|| "/var/lib/cni-run".into()),
    );
    let cache_file = cache_dir.join(format!("{}-{}-{}", rt.name(), att.container_id, att.ifname));
    let fail = |out: cni_testkit::PluginOutput| -> ! {
        print!("{}", out.stdout);
        eprint!("{}", out.stderr);
        std::process::exit(1)
    };
    match verb.as_str() {
        "add" => match rt.add(&att) {
            Ok(r) => {
                std::fs::create_dir_all(&cache_dir).expect("cache dir");
                std::fs::write(&cache_file, r.to_string()).expect("write cache");
                println!("{}", serde_json::to_string_pretty(&r).expect("json"));
            }
            Err(out) => fail(out),
        },
        "check" | "del" => {
            if let Some(v) = load_cache_value(&cache_file) {
                rt.prime(&att, v);
            }
            let r = if verb == "check" {
                rt.check(&att)
            } else {
                rt.del(&att)
            };
            match r {
                Ok(()) => {
                    if verb == "del" {
                        let _ = std::fs::remove_file(&cache_file);
                    }
                }
                Err(out) => fail(out),
            }
        }
        "gc" => {
            let valid: Option<Vec<(String, String)>> = opts.get("valid").map(|s| {
                s.split(',')
                    .filter(|x| !x.is_empty())
                    .map(|x| {
                        let (a, b) = x.split_once(':').unwrap_or((x, "eth0"));
                        (a.to_string(), b.to_string())
                    })
                    .collect()
            });
            let refs: Option<Vec<(&str, &str)>> = valid
                .as_ref()
                .map(|v| v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect());
            if let Err(errs) = rt.gc(refs.as_deref()) {
                for e in errs {
                    eprintln!("{e}");
                }
                std::process::exit(1);
            }
        }
        "status" => {
            if let Err(out) = rt.status() {
                fail(out)
            }
        }
        _ => usage(),
    }
}

fn load_cache_value(path: &std::path::Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}
