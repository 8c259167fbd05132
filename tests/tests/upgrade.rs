//! Rolling upgrade between the reference plugins (Debian `containernetworking-plugins`,
//! `/usr/lib/cni`) and ours, both ways, on one node and one host-local data dir.
//!
//! Upgrade: containers added by the reference (iptables backend, cniVersion 0.4.0 and 1.0.0),
//! then the binaries are swapped for ours (the runtime keeps its cached results, as libcni
//! does on disk): our CHECK passes for the old containers, a new container gets an address
//! that conflicts with none of theirs from the same data dir, old and new containers reach each
//! other and their published ports answer, and our DEL of the old containers removes the
//! reference's rules, veths and reservations completely.
//!
//! Downgrade: the same with the roles swapped: containers added by ours are checked by the
//! reference (without port mappings: the reference 1.1.1 portmap CHECK fails on its own
//! containers when given them, an IPv6 chain bug) and deleted by it without a trace.
//!
//! `CNI_CLIENT_PLUGIN_DIR` overrides our plugin directory (development against the reference).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod clients_common;

use clients_common::*;
use cni_testkit::{Attachment, Netns, Node, Runtime, TempDir, reference_dir, require_root};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const SUBNET_PREFIX: &str = "198.18.64.";

fn conflist(version: &str, ipam: &Path) -> Value {
    json!({
        "cniVersion": version,
        "name": "e2e-upgrade",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni-up0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam,
                    "ranges": [[{"subnet": "198.18.64.0/24", "gateway": "198.18.64.1"}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    })
}

/// One container of the scenario: its namespace, attachment, server and address.
struct Ctr {
    ns: Netns,
    att: Attachment,
    port: u16,
    ip: String,
    _server: Server,
}

fn ip_of(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().unwrap_or_default();
    a.split('/').next().unwrap_or_default().to_string()
}

fn add(rt: &Runtime, node: &Node, dir: &Path, name: &str, port: u16, who: &str) -> Ctr {
    let ns = node.container(name);
    let att = Attachment::new(&format!("e2e-upgrade-{name}"), &ns.path()).with_caps(
        json!({"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}),
    );
    let result = rt
        .add(&att)
        .unwrap_or_else(|e| panic!("{who} ADD {name}: {e}"));
    let ip = ip_of(&result);
    assert!(
        ip.starts_with(SUBNET_PREFIX),
        "{who} ADD {name}: no address: {result}"
    );
    let server = Server::start(&ns, dir, name);
    Ctr {
        ns,
        att,
        port,
        ip,
        _server: server,
    }
}

/// CHECK by `rt` of a container added by the other implementation.
fn check(rt: &Runtime, c: &Ctr, with_ports: bool, who: &str) {
    let att = if with_ports {
        c.att.clone()
    } else {
        Attachment {
            cap_args: Value::Null,
            ..c.att.clone()
        }
    };
    rt.check(&att).unwrap_or_else(|e| {
        panic!(
            "{who} CHECK of {} (added by the other side): {e}",
            c.att.container_id
        )
    });
}

/// Nothing of `gone` is left: rules, reservations, host veths; `kept` are still served.
fn assert_removed(node: &Node, ipam: &Path, gone: &[&Ctr], kept: &[&Ctr], what: &str) {
    let mut needles = Vec::new();
    for c in gone {
        needles.push(c.ip.clone());
        needles.push(c.att.container_id.clone());
    }
    let left = rules_mentioning(node, &needles);
    assert!(left.is_empty(), "{what}: rules left behind: {left:#?}");
    let reserved = reservations(ipam);
    for c in gone {
        assert!(
            !reserved.iter().any(|r| r.ends_with(&format!("/{}", c.ip))),
            "{what}: reservation of {} left: {reserved:?}",
            c.ip
        );
        assert_eq!(
            c.ns.links(),
            vec!["lo".to_string()],
            "{what}: {} still has links",
            c.att.container_id
        );
    }
    assert_eq!(
        reserved.len(),
        kept.len(),
        "{what}: reservations {reserved:?}"
    );
    assert_eq!(
        veths(node).len(),
        kept.len(),
        "{what}: veths {:?}",
        node.links()
    );
    for c in gone {
        let out = node.try_exec(&[
            "timeout",
            "10",
            "sh",
            "-c",
            &http_get_script("busybox", NODE_ADDR, c.port),
        ]);
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("200 OK"),
            "{what}: port {} still answers",
            c.port
        );
    }
}

fn traffic(node: &Node, a: &Ctr, b: &Ctr, what: &str) {
    assert!(
        a.ns.ping(&b.ip),
        "{what}: {} cannot ping {}",
        a.att.container_id,
        b.ip
    );
    for c in [a, b] {
        let name = c.att.container_id.trim_start_matches("e2e-upgrade-");
        assert_eq!(
            http_get_in(node, NODE_ADDR, c.port).as_deref(),
            Some(format!("hello-{name}").as_str()),
            "{what}: published port {} of {}",
            c.port,
            c.att.container_id
        );
    }
}

struct Scenario {
    node: Node,
    _outside: Outside,
    ipam: TempDir,
    www: TempDir,
    reference: PathBuf,
    ours: PathBuf,
    ours_is_reference: bool,
}

impl Scenario {
    fn new(label: &str) -> Scenario {
        let reference = reference_dir().expect(
            "the reference plugins (Debian containernetworking-plugins) are needed: scripts/deps.sh",
        );
        let ours = plugin_dir();
        let node = Node::new(label);
        // The outside link gives the node the address its published ports are fetched at.
        let outside = Outside::new(&node);
        Scenario {
            node,
            _outside: outside,
            ipam: TempDir::new("upgrade-ipam"),
            www: TempDir::new("upgrade-www"),
            ours_is_reference: is_reference(&ours),
            reference,
            ours,
        }
    }

    fn runtime(&self, version: &str, dir: &Path) -> Runtime {
        Runtime::new(
            Some(&self.node),
            conflist(version, self.ipam.path()),
            vec![dir.to_path_buf()],
        )
    }
}

fn upgrade(version: &str) {
    let s = Scenario::new("upgrade");
    let old = s.runtime(version, &s.reference);
    let new = s.runtime(version, &s.ours);
    let what = format!("upgrade {version}");

    // The reference adds two containers.
    let c1 = add(&old, &s.node, s.www.path(), "u1", 18201, "reference");
    let c2 = add(&old, &s.node, s.www.path(), "u2", 18202, "reference");
    // The binaries are swapped; the runtime still has its cached results.
    for c in [&c1, &c2] {
        new.prime(&c.att, old.cached(&c.att).expect("cached result"));
    }
    // Our CHECK passes for the old containers (with their port mappings: ours has no
    // IPv6-only chain bug, so only the reference-as-ours development run skips them).
    for c in [&c1, &c2] {
        check(&new, c, !s.ours_is_reference, "our");
    }
    // A new container gets an address conflicting with none of the old ones.
    let c3 = add(&new, &s.node, s.www.path(), "u3", 18203, "our");
    assert!(
        c3.ip != c1.ip && c3.ip != c2.ip,
        "{what}: new address {} conflicts with {} / {}",
        c3.ip,
        c1.ip,
        c2.ip
    );
    assert_eq!(reservations(s.ipam.path()).len(), 3, "{what}: one data dir");
    traffic(&s.node, &c3, &c1, &what);
    traffic(&s.node, &c1, &c2, &what);
    check(&new, &c3, !s.ours_is_reference, "our");

    // Our DEL of the old containers removes the reference's rules and reservations.
    for c in [&c1, &c2] {
        new.del(&c.att)
            .unwrap_or_else(|e| panic!("{what}: our DEL of {}: {e}", c.att.container_id));
    }
    assert_removed(&s.node, s.ipam.path(), &[&c1, &c2], &[&c3], &what);
    traffic(&s.node, &c3, &c3, &what);
    new.del(&c3.att).unwrap();
    // A second DEL (no cached result any more) is fine.
    new.del(&c1.att).unwrap();
    assert_removed(&s.node, s.ipam.path(), &[&c1, &c2, &c3], &[], &what);
}

fn downgrade(version: &str) {
    let s = Scenario::new("downgrade");
    let old = s.runtime(version, &s.reference);
    let new = s.runtime(version, &s.ours);
    let what = format!("downgrade {version}");

    let d1 = add(&new, &s.node, s.www.path(), "d1", 18211, "our");
    let d2 = add(&new, &s.node, s.www.path(), "d2", 18212, "our");
    for d in [&d1, &d2] {
        old.prime(&d.att, new.cached(&d.att).expect("cached result"));
    }
    // The reference's CHECK accepts what ours set up (bridge, veth, addresses, routes,
    // reservations; portmap without mappings because of the reference's IPv6 CHECK bug).
    for d in [&d1, &d2] {
        check(&old, d, false, "reference");
    }
    let d3 = add(&old, &s.node, s.www.path(), "d3", 18213, "reference");
    assert!(
        d3.ip != d1.ip && d3.ip != d2.ip,
        "{what}: reference address {} conflicts with {} / {}",
        d3.ip,
        d1.ip,
        d2.ip
    );
    traffic(&s.node, &d3, &d1, &what);
    traffic(&s.node, &d1, &d2, &what);

    // The reference's DEL removes everything ours created.
    for d in [&d1, &d2] {
        old.del(&d.att)
            .unwrap_or_else(|e| panic!("{what}: reference DEL of {}: {e}", d.att.container_id));
    }
    assert_removed(&s.node, s.ipam.path(), &[&d1, &d2], &[&d3], &what);
    traffic(&s.node, &d3, &d3, &what);
    old.del(&d3.att).unwrap();
    assert_removed(&s.node, s.ipam.path(), &[&d1, &d2, &d3], &[], &what);
}

#[test]
fn upgrade_from_reference_cni_0_4_0() {
    require_root!();
    upgrade("0.4.0");
}

#[test]
fn upgrade_from_reference_cni_1_0_0() {
    require_root!();
    upgrade("1.0.0");
}

#[test]
fn downgrade_to_reference_cni_0_4_0() {
    require_root!();
    downgrade("0.4.0");
}

#[test]
fn downgrade_to_reference_cni_1_0_0() {
    require_root!();
    downgrade("1.0.0");
}
