//! podman (Debian 4.3, CNI network backend) runs this project's plugins unchanged.
//!
//! podman runs inside a node namespace created by the test (through a [`Sandbox`]: the node's
//! network namespace plus a mount namespace of its own whose `/var/lib` and `/run` are
//! throwaway overlays, so its libcni cache and netns files never reach the machine), with its
//! own containers.conf (`network_backend = "cni"`, `cni_plugin_dirs` = our plugins,
//! `network_config_dir` = the test's conflist, derived from
//! `conf-examples/87-podman-bridge.conflist`), its own storage and a test-unique cgroup parent.
//! Two containers run from a local busybox root filesystem (`podman run --rootfs DIR -p
//! HOST:CTR`); the test checks addresses, container-to-container traffic, the published ports
//! from the node, from an outside namespace and from the container itself (hairpin), then stops
//! everything and checks that no veth, rule, reservation, cache file or netns file remains.
//!
//! Skip locally with `CNI_SKIP_CLIENTS=1`; run against the reference plugins with
//! `CNI_CLIENT_PLUGIN_DIR=/usr/lib/cni`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod clients_common;

use clients_common::*;
use cni_testkit::{Node, require_root};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Output;

const NET: &str = "e2e-podman";
const SUBNET: &str = "198.18.16.0/24";
const GATEWAY: &str = "198.18.16.1";

/// podman with the test's own configuration, run inside the sandbox.
struct Podman<'a> {
    sb: &'a Sandbox,
    env: Vec<(String, String)>,
    cgroup_parent: String,
}

impl Podman<'_> {
    fn cmd(&self, secs: u64, args: &[&str]) -> Output {
        let mut argv = vec!["podman"];
        argv.extend_from_slice(args);
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.sb.cmd(secs, &argv, &env)
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(CMD_SECS, args);
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}",
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `podman run -d` of an HTTP server publishing `host_port` → 80.
    fn start(&self, name: &str, rootfs: &Path, host_port: u16) -> String {
        self.run(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            NET,
            "-p",
            &format!("{host_port}:80"),
            "--cap-add",
            "NET_RAW",
            "--cgroup-parent",
            &self.cgroup_parent,
            "--rootfs",
            &rootfs.display().to_string(),
            "sh",
            "-c",
            &httpd_script(name),
        ])
    }

    fn exec(&self, name: &str, script: &str) -> Output {
        self.cmd(CMD_SECS, &["exec", name, "sh", "-c", script])
    }

    /// podman's view of the container's network on `NET`.
    fn network(&self, name: &str) -> Value {
        let out = self.run(&[
            "inspect",
            "--format",
            "{{json .NetworkSettings.Networks}}",
            name,
        ]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v[NET].clone()
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        // Also on failure: remove every container (podman tears their networks down).
        let _ = self.cmd(CMD_SECS, &["rm", "-f", "--all", "-t", "0"]);
    }
}

fn write_config(work: &Path, plugins: &Path, ipam: &Path) -> Vec<(String, String)> {
    // The network: conf-examples/87-podman-bridge.conflist with the test's names.
    let example = repo().join("conf-examples/87-podman-bridge.conflist");
    let mut conf: Value =
        serde_json::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
    conf["name"] = json!(NET);
    let bridge = &mut conf["plugins"][0];
    assert_eq!(bridge["type"], "bridge");
    bridge["bridge"] = json!("cni-e2e0");
    bridge["ipam"]["ranges"] = json!([[{"subnet": SUBNET, "gateway": GATEWAY}]]);
    bridge["ipam"]["dataDir"] = json!(ipam);
    let net_d = work.join("net.d");
    std::fs::create_dir_all(&net_d).unwrap();
    std::fs::write(
        net_d.join(format!("{NET}.conflist")),
        serde_json::to_string_pretty(&conf).unwrap(),
    )
    .unwrap();

    // podman's defaults for root (nofile and nproc ~1M) need CAP_SYS_RESOURCE, which a
    // sandboxed CI machine may not grant: stay at or under this machine's hard limits.
    let mut ulimits = Vec::new();
    for (resource, key) in [("Max open files", "nofile"), ("Max processes", "nproc")] {
        let n = hard_limit(resource).unwrap_or(4096).min(4096);
        ulimits.push(format!("\"{key}={n}:{n}\""));
    }
    let containers_conf = work.join("containers.conf");
    std::fs::write(
        &containers_conf,
        format!(
            "[containers]\ndefault_ulimits = [{}]\n\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n\
             network_config_dir = \"{}\"\ndefault_network = \"{NET}\"\n\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             events_logfile_path = \"{}\"\nruntime = \"runc\"\ntmp_dir = \"{}\"\n",
            ulimits.join(", "),
            plugins.display(),
            net_d.display(),
            work.join("events.log").display(),
            work.join("libpod-tmp").display(),
        ),
    )
    .unwrap();
    let storage_conf = work.join("storage.conf");
    std::fs::write(
        &storage_conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            work.join("storage").display(),
            work.join("runroot").display(),
        ),
    )
    .unwrap();
    vec![
        (
            "CONTAINERS_CONF".into(),
            containers_conf.display().to_string(),
        ),
        (
            "CONTAINERS_STORAGE_CONF".into(),
            storage_conf.display().to_string(),
        ),
    ]
}

#[test]
fn podman_cni_backend_two_containers_published_ports_nothing_left() {
    require_root!();
    if skip_clients("podman") {
        return;
    }
    let started = std::time::Instant::now();
    let cache = setup(&["podman"]);
    let reference = is_reference(&plugin_dir());

    let node = Node::new("podman");
    let outside = Outside::new(&node);
    let cgroup = CgroupGuard::new("podman");
    let sb = Sandbox::new(&node, &["var/lib", "run"], &[]);
    let work: PathBuf = sb.work.path().to_path_buf();
    let plugins = plugin_links(&work, false);
    let ipam = work.join("ipam");
    let env = write_config(&work, &plugins, &ipam);
    let pm = Podman {
        sb: &sb,
        env,
        cgroup_parent: format!("/{}", cgroup.name),
    };
    let version = pm.run(&["version", "--format", "{{.Client.Version}}"]);
    eprintln!(
        "podman {version}, plugins from {} (linked in {}){}",
        plugin_dir().display(),
        plugins.display(),
        if reference { " (reference)" } else { "" }
    );

    // Two containers, each publishing a port.
    let rootfs1 = rootfs_copy(&cache, &work, "rootfs1");
    let rootfs2 = rootfs_copy(&cache, &work, "rootfs2");
    let id1 = timed("podman run c1", || pm.start("c1", &rootfs1, 18080));
    let id2 = timed("podman run c2", || pm.start("c2", &rootfs2, 18081));

    // Addresses: podman's view (from the plugins' result) and the container's agree.
    let mut ips = Vec::new();
    for name in ["c1", "c2"] {
        let net = pm.network(name);
        let ip = net["IPAddress"].as_str().unwrap_or_default().to_string();
        assert!(
            ip.starts_with("198.18.16."),
            "{name}: podman shows no address on {NET}: {net}"
        );
        assert_eq!(net["IPPrefixLen"], 24, "{name}: {net}");
        assert_eq!(net["Gateway"], GATEWAY, "{name}: {net}");
        let inside = pm.exec(name, "ip -4 -o addr show eth0");
        assert_eq!(
            first_ipv4(&String::from_utf8_lossy(&inside.stdout)).as_deref(),
            Some(ip.as_str()),
            "{name}: eth0 inside the container: {}",
            show(&inside)
        );
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1], "both containers got the same address");
    assert!(
        veths(&node).len() >= 2,
        "no veths in the node: {:?}",
        node.links()
    );

    // The containers reach each other (ICMP and TCP).
    for (from, to, to_name) in [("c1", &ips[1], "c2"), ("c2", &ips[0], "c1")] {
        let ping = pm.exec(from, &format!("ping -c 1 -W 2 {to} || ping -c 1 -W 2 {to}"));
        assert!(
            ping.status.success(),
            "{from} cannot ping {to}: {}",
            show(&ping)
        );
        let resp = eventually(10, || {
            let out = pm.exec(from, &http_get_script("", to, 80));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("200 OK").then(|| body(&text))
        });
        assert_eq!(
            resp.as_deref(),
            Some(format!("hello-{to_name}").as_str()),
            "{from} -> {to}:80"
        );
    }

    // The published ports, from the node, from outside, and from the container itself.
    for (port, name) in [(18080u16, "c1"), (18081, "c2")] {
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
    let hairpin = pm.exec("c1", &http_get_script("", NODE_ADDR, 18080));
    assert!(
        String::from_utf8_lossy(&hairpin.stdout).contains("hello-c1"),
        "c1 cannot reach its own published port (hairpin): {}",
        show(&hairpin)
    );

    // While running: podman's libcni cache has both attachments.
    let cached: Vec<String> = sb
        .files("/var/lib/cni/results")
        .into_iter()
        .filter(|f| f.starts_with(NET))
        .collect();
    assert_eq!(cached.len(), 2, "libcni cache: {cached:?}");

    // Stop and remove: podman sends DEL (netns still there, prevResult, portMappings).
    timed("podman stop + rm", || {
        pm.run(&["stop", "-t", "5", "c1", "c2"]);
        pm.run(&["rm", "c1", "c2"]);
    });

    // Nothing left: veths, rules, reservations, cache entries, netns files.
    assert_eq!(veths(&node), Vec::<String>::new(), "veths left in the node");
    let mut needles = ips.clone();
    needles.push(id1.clone());
    needles.push(id2.clone());
    let left = rules_mentioning(&node, &needles);
    assert!(left.is_empty(), "rules left behind: {left:#?}");
    assert_eq!(
        reservations(&ipam),
        Vec::<String>::new(),
        "reservations left"
    );
    let cache_left: Vec<String> = sb
        .files("/var/lib/cni")
        .into_iter()
        .filter(|f| f.contains(&id1) || f.contains(&id2) || f.contains(NET))
        .collect();
    assert!(cache_left.is_empty(), "libcni cache left: {cache_left:?}");
    let netns_left: Vec<String> = sb
        .files("/run/netns")
        .into_iter()
        .filter(|f| f.starts_with("netns-"))
        .collect();
    assert!(netns_left.is_empty(), "podman netns left: {netns_left:?}");
    // The published ports are gone too.
    let after = node.try_exec(&[
        "timeout",
        "10",
        "sh",
        "-c",
        &http_get_script("busybox", NODE_ADDR, 18080),
    ]);
    assert!(
        !String::from_utf8_lossy(&after.stdout).contains("200 OK"),
        "port 18080 still answers after the container was removed"
    );
    eprintln!(
        "podman test: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
