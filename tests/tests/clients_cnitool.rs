//! cnitool (built from Debian's source package of the CNI library 1.1.2, the libcni every Go
//! runtime embeds) runs this project's plugins unchanged.
//!
//! cnitool runs inside a node namespace created by the test (a [`Sandbox`]: the node's network
//! namespace plus a mount namespace of its own whose `/var/lib` is a throwaway overlay, so its
//! libcni cache `/var/lib/cni/results` never reaches the machine) with `NETCONFPATH` = the
//! test's conflist (derived from `conf-examples/10-cnitool.conflist`), `CNI_PATH` = our
//! plugins and port mappings in `CAP_ARGS`. Two container namespaces made by the test are
//! added (`cnitool add <net> <netns>`), checked, reach each other, have their published port
//! answer from the node and from an outside namespace, and are deleted twice (the second DEL
//! has no `prevResult`, as cnitool sends it); then no veth, rule, reservation or cache file
//! may remain. The container id is cnitool's `cnitool-<20 hex of sha512(netns path)>`.
//!
//! Skip locally with `CNI_SKIP_CLIENTS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod clients_common;

use clients_common::*;
use cni_testkit::{Node, require_root};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NET: &str = "e2e-cnitool";
const SUBNET: &str = "198.18.48.0/24";
const GATEWAY: &str = "198.18.48.1";

struct Cnitool<'a> {
    sb: &'a Sandbox,
    bin: String,
    netconfpath: String,
    cni_path: String,
}

impl Cnitool<'_> {
    /// `cnitool <verb> NET <netns>` with the given `CAP_ARGS` (if any).
    fn call(&self, verb: &str, netns: &Path, cap_args: Option<&Value>) -> Output {
        let caps = cap_args.map(Value::to_string);
        let mut env = vec![
            ("NETCONFPATH", self.netconfpath.as_str()),
            ("CNI_PATH", self.cni_path.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", ""),
        ];
        if let Some(c) = &caps {
            env.push(("CAP_ARGS", c.as_str()));
        }
        let netns = netns.display().to_string();
        self.sb.cmd(CMD_SECS, &[&self.bin, verb, NET, &netns], &env)
    }

    fn ok(&self, verb: &str, netns: &Path, cap_args: Option<&Value>) -> String {
        let out = self.call(verb, netns, cap_args);
        assert!(
            out.status.success(),
            "cnitool {verb} {NET} {}: {}",
            netns.display(),
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// cnitool's container id for a netns path: `cnitool-` + 20 hex digits of its SHA-512.
fn cnitool_id(netns: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("printf %s \"$1\" | sha512sum")
        .arg("sh")
        .arg(netns)
        .output()
        .expect("sha512sum");
    let hex = String::from_utf8_lossy(&out.stdout);
    format!("cnitool-{}", &hex[..20])
}

fn caps(host_port: u16) -> Value {
    json!({"portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]})
}

#[test]
fn cnitool_add_check_del_two_containers_nothing_left() {
    require_root!();
    if skip_clients("cnitool") {
        return;
    }
    let started = std::time::Instant::now();
    let cache = setup(&["cnitool"]);
    let reference = is_reference(&plugin_dir());

    let node = Node::new("cnitool");
    let outside = Outside::new(&node);
    let sb = Sandbox::new(&node, &["var/lib"], &[]);
    let work: PathBuf = sb.work.path().to_path_buf();
    let plugins = plugin_links(&work, false);
    let ipam = work.join("ipam");

    // conf-examples/10-cnitool.conflist with the test's names. cniVersion 1.0.0: the
    // libcni of Debian's cnitool (1.1.2) knows no later version.
    let example = repo().join("conf-examples/10-cnitool.conflist");
    let mut conf: Value =
        serde_json::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
    conf["name"] = json!(NET);
    conf["cniVersion"] = json!("1.0.0");
    let bridge = &mut conf["plugins"][0];
    assert_eq!(bridge["type"], "bridge");
    bridge["bridge"] = json!("cni-e2e2");
    bridge["ipam"]["ranges"] = json!([[{"subnet": SUBNET, "gateway": GATEWAY}]]);
    bridge["ipam"]["dataDir"] = json!(ipam);
    let net_d = work.join("net.d");
    std::fs::create_dir_all(&net_d).unwrap();
    std::fs::write(
        net_d.join("10-e2e.conflist"),
        serde_json::to_string_pretty(&conf).unwrap(),
    )
    .unwrap();

    let tool = Cnitool {
        sb: &sb,
        bin: cache.join("cnitool").display().to_string(),
        netconfpath: net_d.display().to_string(),
        cni_path: plugins.display().to_string(),
    };
    eprintln!(
        "cnitool from {}, plugins from {}{}",
        tool.bin,
        plugin_dir().display(),
        if reference { " (reference)" } else { "" }
    );

    let c1 = node.container("c1");
    let c2 = node.container("c2");
    let _s1 = Server::start(&c1, &work, "c1");
    let _s2 = Server::start(&c2, &work, "c2");
    let containers = [(&c1, 18085u16, "c1"), (&c2, 18086, "c2")];

    // ADD: the result cnitool prints is the plugins' final result.
    let mut ips = Vec::new();
    for (ns, port, name) in containers {
        let out = timed(&format!("cnitool add {name}"), || {
            tool.ok("add", &ns.path(), Some(&caps(port)))
        });
        let result: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name}: {e}: {out}"));
        assert_eq!(result["cniVersion"], "1.0.0", "{name}: {result}");
        let addr = result["ips"][0]["address"].as_str().unwrap_or_default();
        assert!(
            addr.starts_with("198.18.48.") && addr.ends_with("/24"),
            "{name}: {result}"
        );
        assert_eq!(result["ips"][0]["gateway"], GATEWAY, "{name}: {result}");
        let idx = result["ips"][0]["interface"].as_u64().unwrap_or(u64::MAX) as usize;
        let iface = &result["interfaces"][idx];
        assert_eq!(iface["name"], "eth0", "{name}: {result}");
        assert_eq!(
            iface["sandbox"],
            json!(ns.path().display().to_string()),
            "{name}: {result}"
        );
        let ip = addr.split('/').next().unwrap().to_string();
        let inside = ns.ip(&["-4", "-o", "addr", "show", "eth0"]);
        assert_eq!(first_ipv4(&inside).as_deref(), Some(ip.as_str()), "{name}");
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1], "both containers got the same address");

    // cnitool's container id and libcni cache entry.
    let ids: Vec<String> = [&c1, &c2].iter().map(|ns| cnitool_id(&ns.path())).collect();
    let cached = sb.files("/var/lib/cni/results");
    for id in &ids {
        assert!(
            cached.contains(&format!("{NET}-{id}-eth0")),
            "no cache entry for {id}: {cached:?}"
        );
    }
    let rules = node.iptables_save(false);
    for id in &ids {
        assert!(rules.contains(id), "no rule names {id}:\n{rules}");
    }

    // CHECK (prevResult from the cache, runtimeConfig from CAP_ARGS).
    for (ns, port, name) in containers {
        let out = tool.call("check", &ns.path(), Some(&caps(port)));
        if !out.status.success() && reference {
            eprintln!(
                "known reference bug: portmap 1.1.1 CHECK with port mappings fails: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            tool.ok("check", &ns.path(), None);
        } else {
            assert!(out.status.success(), "cnitool check {name}: {}", show(&out));
        }
    }

    // Traffic between the containers, and the published ports from the node and outside.
    assert!(c1.ping(&ips[1]), "c1 cannot ping c2 at {}", ips[1]);
    assert!(c2.ping(&ips[0]), "c2 cannot ping c1 at {}", ips[0]);
    assert_eq!(http_get_in(&c1, &ips[1], 80).as_deref(), Some("hello-c2"));
    for (_, port, name) in containers {
        let want = format!("hello-{name}");
        assert_eq!(
            http_get_in(&node, NODE_ADDR, port).as_deref(),
            Some(want.as_str()),
            "published port {port} from the node"
        );
        assert_eq!(
            http_get_in(&outside.ns, NODE_ADDR, port).as_deref(),
            Some(want.as_str()),
            "published port {port} from the outside namespace"
        );
    }

    // DEL twice each (the second without prevResult: the cache entry is gone), then CHECK
    // must fail.
    for (ns, port, name) in containers {
        timed(&format!("cnitool del {name}"), || {
            tool.ok("del", &ns.path(), Some(&caps(port)));
        });
        tool.ok("del", &ns.path(), Some(&caps(port)));
        let after = tool.call("check", &ns.path(), Some(&caps(port)));
        assert!(
            !after.status.success(),
            "cnitool check {name} after DEL succeeded: {}",
            show(&after)
        );
    }

    assert_eq!(veths(&node), Vec::<String>::new(), "veths left in the node");
    assert_eq!(
        reservations(&ipam),
        Vec::<String>::new(),
        "reservations left"
    );
    let cache_left = sb.files("/var/lib/cni/results");
    assert!(cache_left.is_empty(), "libcni cache left: {cache_left:?}");
    let mut needles = ips.clone();
    needles.extend(ids.iter().cloned());
    let left = rules_mentioning(&node, &needles);
    assert!(left.is_empty(), "rules left behind: {left:#?}");
    for (ns, _, name) in containers {
        assert_eq!(ns.links(), vec!["lo".to_string()], "{name}: links left");
    }
    eprintln!(
        "cnitool test: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
