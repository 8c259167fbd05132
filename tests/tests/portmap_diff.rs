//! portmap against the reference (`/usr/lib/cni/portmap`, Debian 1.1.1, iptables backend):
//! identical rules for the same input, and each removes the other's state. Plus concurrent
//! ADDs on a fresh node (the shared chains are created once, nothing is lost).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cni_testkit::{
    IPTABLES_TOOLS, LoggingTools, Netns, Node, PluginOutput, require_root, run_plugin,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn reference() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/lib/cni/portmap");
    p.is_file().then_some(p)
}

fn conf(extra: Value, id_ip4: &str, id_ip6: Option<&str>) -> Value {
    let mut ips = vec![json!({"address": id_ip4, "interface": 0})];
    if let Some(v6) = id_ip6 {
        ips.push(json!({"address": v6, "interface": 0}));
    }
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "mynet",
        "type": "portmap",
        "runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"HostPort": 8443, "ContainerPort": 443, "Protocol": "tcp", "HostIP": ""},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
            {"hostPort": 8083, "containerPort": 83, "protocol": "tcp", "hostIP": "192.168.0.2"},
            {"hostPort": 8085, "containerPort": 85, "protocol": "tcp", "hostIP": "2001:db8:a::1"},
            {"hostPort": 8086, "containerPort": 86, "protocol": "udp", "hostIP": "::"}
        ]},
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": ips
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn run(node: &Node, ctr: &Netns, bin: &Path, cmd: &str, id: &str, stdin: &Value) -> PluginOutput {
    run_with_path(node, ctr, bin, (cmd, id), stdin, None)
}

/// [`run`] with `PATH` replaced when `path` is given.
fn run_with_path(
    node: &Node,
    ctr: &Netns,
    bin: &Path,
    (cmd, id): (&str, &str),
    stdin: &Value,
    path: Option<&str>,
) -> PluginOutput {
    let netns = ctr.path().display().to_string();
    let mut env = vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", &netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
    ];
    env.extend(path.map(|p| ("PATH", p)));
    run_plugin(Some(&node.open()), bin, &env, &stdin.to_string())
}

fn nat(node: &Node) -> String {
    format!(
        "{}\n--v6--\n{}",
        node.iptables_save(false),
        node.iptables_save(true)
    )
}

#[test]
fn same_rules_as_the_reference_and_each_removes_the_others_state() {
    require_root!();
    let Some(refbin) = reference() else {
        eprintln!("skipped: reference portmap not installed");
        return;
    };
    let ours = cni_testkit::bin("portmap");
    let configs = [
        json!({}),
        json!({"markMasqBit": 5}),
        json!({"snat": false}),
        json!({"externalSetMarkChain": "PLZ-SET-MARK"}),
        json!({"conditionsV4": ["-i", "eth9"], "conditionsV6": ["!", "-i", "eth9"]}),
    ];
    for (i, extra) in configs.iter().enumerate() {
        let node = Node::new(&format!("pmdiff{i}"));
        let ctr = node.container(&format!("pmdiffc{i}"));
        for t in ["iptables", "ip6tables"] {
            node.exec(&[t, "-t", "nat", "-N", "PLZ-SET-MARK"]);
        }
        let c = conf(extra.clone(), "10.88.0.2/16", Some("2001:db8:1::2/64"));
        let id = "abc123";
        let baseline = nat(&node);

        let out = run(&node, &ctr, &refbin, "ADD", id, &c);
        assert!(out.ok(), "reference ADD {extra}: {out}");
        let by_ref = nat(&node);
        assert!(by_ref.contains("CNI-DN-70a29d9dc18bc4d652ea5"), "{by_ref}");
        // (Debian 1.1.1's CHECK is broken: it looks for the IPv4 rules in ip6tables; what
        // matters is that it answers the same on our rules as on its own.)
        let ref_check_on_ref = run(&node, &ctr, &refbin, "CHECK", id, &c);
        // Ours removes the reference's per-container state.
        let out = run(&node, &ctr, &ours, "DEL", id, &c);
        assert!(out.ok(), "our DEL {extra}: {out}");
        let after = nat(&node);
        assert!(!after.contains("CNI-DN-"), "{extra}: {after}");
        assert!(!after.contains("abc123"), "{extra}: {after}");

        // Ours writes byte-identical rules (whole nat tables, both families).
        let out = run(&node, &ctr, &ours, "ADD", id, &c);
        assert!(out.ok(), "our ADD {extra}: {out}");
        let by_ours = nat(&node);
        assert_eq!(by_ours, by_ref, "{extra}: rules differ from the reference");
        let out = run(&node, &ctr, &ours, "CHECK", id, &c);
        assert!(out.ok(), "our CHECK {extra}: {out}");
        // The reference's CHECK answers the same on our rules as on its own.
        let out = run(&node, &ctr, &refbin, "CHECK", id, &c);
        assert_eq!(
            (out.status, out.stdout.clone()),
            (ref_check_on_ref.status, ref_check_on_ref.stdout.clone()),
            "reference CHECK on our rules {extra}"
        );
        // And the reference removes ours.
        let out = run(&node, &ctr, &refbin, "DEL", id, &c);
        assert!(out.ok(), "reference DEL {extra}: {out}");
        let after = nat(&node);
        assert!(!after.contains("CNI-DN-"), "{extra}: {after}");
        assert!(!after.contains("abc123"), "{extra}: {after}");
        // Only the shared chains (which neither removes) differ from the baseline.
        for l in after.lines().filter(|l| !baseline.contains(l)) {
            assert!(
                l.contains("CNI-HOSTPORT-")
                    || l.starts_with(":CNI-HOSTPORT")
                    || l.starts_with('*')
                    || l.starts_with(':')
                    || l == "COMMIT",
                "{extra}: unexpected leftover {l}"
            );
        }
    }
}

/// Concurrent ADDs on a fresh `iptables-nft` node: each shared rule exists once, every
/// container's rules are there, and none of them started a process (the first ADD creates
/// the shared state over netlink under a lock, and the ones that waited for it find it
/// made). The tools are stand-ins that log their calls and fail. The test holds that lock
/// while the ADDs start, so that they all find the node fresh and all but one wait.
#[test]
fn concurrent_adds_on_a_fresh_node() {
    require_root!();
    let ours = cni_testkit::bin("portmap");
    let node = Node::new("pmconc");
    let ctr = node.container("pmconcc");
    let tools = LoggingTools::new("xtables-nft-multi", &IPTABLES_TOOLS, 1);
    let path = tools.path();
    let n = 8;
    // portmap's lock for a node's first ADD (all namespaces share it).
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open("/run/cni-rs-portmap.lock")
        .unwrap();
    lock.lock().unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (node, ctr, ours, path) = (&node, &ctr, &ours, &path);
                s.spawn(move || {
                    let mut c = conf(
                        json!({}),
                        &format!("10.88.0.{}/16", i + 2),
                        Some(&format!("2001:db8:1::{}/64", i + 2)),
                    );
                    c["runtimeConfig"]["portMappings"] =
                        json!([{"hostPort": 10000 + i, "containerPort": 80, "protocol": "tcp"}]);
                    let id = format!("conc{i}");
                    let out = run_with_path(node, ctr, ours, ("ADD", &id), &c, Some(path));
                    assert!(out.ok(), "ADD conc{i}: {out}");
                    c
                })
            })
            .collect();
        // Bounded: each ADD waits for the lock at most 30 s.
        std::thread::sleep(std::time::Duration::from_millis(300));
        lock.unlock().unwrap();
        let confs: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(tools.calls(), "", "ADD ran the iptables tools");
        for (i, c) in confs.iter().enumerate() {
            let out = run(&node, &ctr, &ours, "CHECK", &format!("conc{i}"), c);
            assert!(out.ok(), "CHECK conc{i}: {out}");
        }
    });
    for v6 in [false, true] {
        let save = node.iptables_save(v6);
        for needle in [
            "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
            "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
            "-A CNI-HOSTPORT-SETMARK ",
            "-A CNI-HOSTPORT-MASQ ",
            "CNI portfwd requiring masquerade",
        ] {
            assert_eq!(save.matches(needle).count(), 1, "{needle} in\n{save}");
        }
        assert_eq!(save.matches("-A CNI-HOSTPORT-DNAT ").count(), n, "{save}");
    }
}
