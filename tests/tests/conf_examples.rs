//! Every file in `conf-examples/` works: ADD two containers, CHECK (where the version
//! allows), traffic between them, DEL, and nothing left behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cni_testkit::{Attachment, Node, Runtime, TempDir, bin_dir, require_root};
use serde_json::{Value, json};
use std::path::PathBuf;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conf-examples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    v.sort();
    assert!(
        v.len() >= 8,
        "expected the example files in {}",
        dir.display()
    );
    v
}

/// Points every host-local `dataDir` at the test's own directory.
fn isolate(conf: &mut Value, data_dir: &std::path::Path) {
    if let Some(plugins) = conf.get_mut("plugins").and_then(Value::as_array_mut) {
        for p in plugins {
            if let Some(ipam) = p.get_mut("ipam").and_then(Value::as_object_mut)
                && ipam.get("type").and_then(Value::as_str) == Some("host-local")
            {
                ipam.insert("dataDir".into(), json!(data_dir));
            }
        }
    }
}

fn version_ge(a: &str, b: &str) -> bool {
    let p = |s: &str| -> Vec<u64> { s.split('.').map(|x| x.parse().unwrap_or(0)).collect() };
    p(a) >= p(b)
}

fn run_example(path: &PathBuf) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let mut conf: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let data = TempDir::new("confex");
    isolate(&mut conf, data.path());
    let node = Node::new("confex");
    let rt = Runtime::new(Some(&node), conf.clone(), vec![bin_dir()]);
    let version = rt.version();
    let has_portmap = conf["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["type"] == "portmap");
    let loopback_only = conf["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["type"] == "loopback");
    let before = node.iptables_save(false);
    let c1 = node.container("c1");
    let c2 = node.container("c2");
    let mut a1 = Attachment::new("confex-c1", &c1.path());
    let mut a2 = Attachment::new("confex-c2", &c2.path());
    if loopback_only {
        a1.ifname = "lo".into();
        a2.ifname = "lo".into();
    }
    if has_portmap {
        a1 = a1.with_caps(
            json!({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}),
        );
    }
    let r1 = rt
        .add(&a1)
        .unwrap_or_else(|e| panic!("{name}: ADD c1: {e}"));
    let r2 = rt
        .add(&a2)
        .unwrap_or_else(|e| panic!("{name}: ADD c2: {e}"));
    assert_eq!(r1["cniVersion"], Value::from(version.clone()), "{name}");
    if version_ge(&version, "0.4.0") {
        rt.check(&a1)
            .unwrap_or_else(|e| panic!("{name}: CHECK c1: {e}"));
        rt.check(&a2)
            .unwrap_or_else(|e| panic!("{name}: CHECK c2: {e}"));
    }
    // Traffic between the two containers when they have addresses.
    let first_ip = |r: &Value| -> Option<String> {
        r["ips"].as_array()?.iter().find_map(|ip| {
            let a = ip["address"].as_str()?;
            a.contains('.')
                .then(|| a.split('/').next().unwrap().to_string())
        })
    };
    if let (Some(_), Some(ip2)) = (first_ip(&r1), first_ip(&r2)) {
        assert!(c1.ping(&ip2), "{name}: c1 cannot reach c2 at {ip2}");
    }
    rt.del(&a1)
        .unwrap_or_else(|e| panic!("{name}: DEL c1: {e}"));
    rt.del(&a2)
        .unwrap_or_else(|e| panic!("{name}: DEL c2: {e}"));
    // A second DEL, as runtimes do, is fine.
    rt.del(&a1)
        .unwrap_or_else(|e| panic!("{name}: second DEL c1: {e}"));

    // Nothing left: no container veth, no reservation, no per-container rule.
    let links = node.links();
    assert!(
        !links.iter().any(|l| l.starts_with("veth")),
        "{name}: veths left: {links:?}"
    );
    let reservations: Vec<String> = walk(data.path())
        .into_iter()
        .filter(|f| {
            let n = f.file_name().unwrap().to_string_lossy().to_string();
            n.parse::<std::net::IpAddr>().is_ok()
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        reservations.is_empty(),
        "{name}: reservations left: {reservations:?}"
    );
    let after = node.iptables_save(false);
    for line in after.lines() {
        if line.contains("confex-c1") || line.contains("confex-c2") {
            panic!("{name}: rule left behind: {line}\nbefore:\n{before}");
        }
    }
    if version_ge(&version, "0.4.0") {
        assert!(rt.check(&a1).is_err(), "{name}: CHECK after DEL must fail");
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn every_example_adds_checks_and_deletes_cleanly() {
    require_root!();
    for path in examples() {
        run_example(&path);
    }
}
