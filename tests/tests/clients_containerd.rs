//! containerd (Debian 1.6) and `ctr run --cni` run this project's plugins unchanged.
//!
//! The test starts its own containerd daemon (own config, root, state and socket) inside a
//! node namespace it created, through a [`Sandbox`]: the node's network namespace plus a
//! mount namespace of its own whose `/etc`, `/opt`, `/var/lib` and `/run` are throwaway overlays.
//! `ctr` reads fixed locations, so the sandbox bind-mounts the test's network directory over
//! `/etc/cni/net.d` (the conflist derived from `conf-examples/10-containerd-net.conflist`) and
//! our plugins over `/opt/cni/bin` and `/usr/lib/cni` (the two directories Debian's ctr
//! searches): the machine's `/etc/cni` and `/opt/cni` are never written and the reference
//! plugins are never found.
//!
//! Two containers run with `ctr run --rm --cni` from an OCI image built locally from busybox
//! (`scripts/clients/busybox-oci.sh`, imported with `ctr image import`). `ctr` cannot publish
//! ports (it passes no capability arguments: portmap just passes the result on), so the
//! containers' server port is reached from the node and from an outside namespace routed
//! through the node. The containers are stopped with `ctr task kill`; the foreground `ctr run`
//! then sends DEL with an **empty `CNI_NETNS`** (and the cached `prevResult`), after which no
//! veth, rule, reservation or cache file may remain. (The reference bridge leaks its
//! masquerade chain there; with `CNI_CLIENT_PLUGIN_DIR=/usr/lib/cni` that leak is reported
//! instead of failing.)
//!
//! Skip locally with `CNI_SKIP_CLIENTS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod clients_common;

use clients_common::*;
use cni_testkit::{Node, require_root};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Output};

const NET: &str = "e2e-ctrd";
const SUBNET: &str = "198.18.32.0/24";
const IMAGE: &str = "localhost/cni-e2e/busybox:latest";

struct Containerd<'a> {
    sb: &'a Sandbox,
    daemon: Child,
    socket: String,
    namespace: String,
    runs: Vec<(String, Child)>,
}

impl<'a> Containerd<'a> {
    fn start(sb: &'a Sandbox, namespace: &str) -> Containerd<'a> {
        let work = sb.work.path();
        let socket = work.join("containerd.sock").display().to_string();
        let config = work.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\", \
                 \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \
                 \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.aufs\"]\n\
                 [grpc]\n  address = \"{socket}\"\n\
                 [ttrpc]\n  address = \"{socket}.ttrpc\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
                root = work.join("root").display(),
                state = work.join("state").display(),
                opt = work.join("opt").display(),
            ),
        )
        .unwrap();
        let config = config.display().to_string();
        let daemon = sb.spawn(
            1800,
            &["containerd", "--config", &config],
            &[],
            &work.join("containerd.log"),
        );
        let c = Containerd {
            sb,
            daemon,
            socket,
            namespace: namespace.to_string(),
            runs: Vec::new(),
        };
        let up = eventually(30, || {
            c.ctr(10, &["version"]).status.success().then_some(())
        });
        assert!(
            up.is_some(),
            "containerd did not come up: {}",
            std::fs::read_to_string(work.join("containerd.log")).unwrap_or_default()
        );
        c
    }

    fn ctr(&self, secs: u64, args: &[&str]) -> Output {
        let mut argv = vec![
            "ctr",
            "--address",
            &self.socket,
            "--namespace",
            &self.namespace,
        ];
        argv.extend_from_slice(args);
        self.sb.cmd(secs, &argv, &[])
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(CMD_SECS, args);
        assert!(out.status.success(), "ctr {args:?} failed: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr run --rm --cni` in the foreground (as a user runs it): it sends DEL itself once
    /// the task has exited.
    fn run(&mut self, id: &str) {
        let log = self.sb.work.path().join(format!("ctr-run-{id}.log"));
        let script = httpd_script(id);
        let args = [
            "ctr",
            "--address",
            &self.socket,
            "--namespace",
            &self.namespace,
            "run",
            "--rm",
            "--cni",
            "--cap-add",
            "CAP_NET_RAW",
            IMAGE,
            id,
            "sh",
            "-c",
            &script,
        ];
        let child = self.sb.spawn(600, &args, &[], &log);
        self.runs.push((id.to_string(), child));
        let running = eventually(30, || {
            let out = self.ctr(10, &["task", "ls"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.starts_with(&format!("{id} ")) && l.contains("RUNNING"))
                .then_some(())
        });
        assert!(
            running.is_some(),
            "ctr run {id} did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn exec(&self, id: &str, script: &str) -> Output {
        let exec_id = cni_testkit::unique("exec");
        self.ctr(
            CMD_SECS,
            &[
                "task",
                "exec",
                "--exec-id",
                &exec_id,
                id,
                "sh",
                "-c",
                script,
            ],
        )
    }

    /// Stops a container: SIGTERM to its task, then waits for the foreground `ctr run --rm`
    /// to finish (it runs the CNI DEL and removes the container).
    fn stop(&mut self, id: &str) {
        self.ctr_ok(&["task", "kill", id]);
        let pos = self
            .runs
            .iter()
            .position(|(i, _)| i == id)
            .expect("known run");
        let (_, mut child) = self.runs.remove(pos);
        let log = self.sb.work.path().join(format!("ctr-run-{id}.log"));
        assert_eq!(
            wait_child(&mut child, 60),
            Some(true),
            "ctr run {id} did not finish cleanly: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

impl Drop for Containerd<'_> {
    fn drop(&mut self) {
        // Also on failure: kill the tasks, let the foreground runs finish, stop the daemon.
        for (id, _) in &self.runs {
            let _ = self.ctr(10, &["task", "kill", "--signal", "SIGKILL", id]);
        }
        for (_, child) in &mut self.runs {
            let _ = wait_child(child, 30);
        }
        // SIGTERM reaches containerd through `timeout`; SIGKILL if it does not stop.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.daemon.id().to_string()])
            .output();
        let _ = wait_child(&mut self.daemon, 15);
    }
}

fn write_network(net_d: &Path, ipam: &Path) {
    // conf-examples/10-containerd-net.conflist with the test's names, IPv4 from 198.18.0.0/15
    // and a ULA IPv6 range.
    let example = repo().join("conf-examples/10-containerd-net.conflist");
    let mut conf: Value =
        serde_json::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
    conf["name"] = json!(NET);
    let bridge = &mut conf["plugins"][0];
    assert_eq!(bridge["type"], "bridge");
    bridge["bridge"] = json!("cni-e2e1");
    bridge["ipam"]["ranges"] = json!([[{"subnet": SUBNET}], [{"subnet": "fd00:198:18:32::/64"}]]);
    bridge["ipam"]["dataDir"] = json!(ipam);
    std::fs::create_dir_all(net_d).unwrap();
    std::fs::write(
        net_d.join(format!("10-{NET}.conflist")),
        serde_json::to_string_pretty(&conf).unwrap(),
    )
    .unwrap();
}

#[test]
fn containerd_ctr_run_cni_two_containers_nothing_left() {
    require_root!();
    if skip_clients("containerd") {
        return;
    }
    let started = std::time::Instant::now();
    let cache = setup(&["containerd"]);
    let reference = is_reference(&plugin_dir());

    let node = Node::new("ctrd");
    let outside = Outside::new(&node);
    outside.route(SUBNET);
    let cgroup = CgroupGuard::new("ctrd");
    let scratch = cni_testkit::TempDir::new("ctrd-files");
    let plugins = plugin_links(scratch.path(), true);
    let calls = scratch.path().join("bridge-calls.log");
    record_calls(&plugins, "bridge", &calls);
    let net_d = scratch.path().join("net.d");
    let ipam = scratch.path().join("ipam");
    write_network(&net_d, &ipam);
    let mut binds: Vec<(PathBuf, &str)> = vec![
        (net_d.clone(), "/etc/cni/net.d"),
        (plugins.clone(), "/opt/cni/bin"),
    ];
    if Path::new("/usr/lib/cni").is_dir() {
        binds.push((plugins.clone(), "/usr/lib/cni"));
    }
    let sb = Sandbox::new(&node, &["etc", "opt", "var/lib", "run"], &binds);
    // The sandbox sees only our plugins where ctr looks.
    let seen = sb.run(&["ls", "/opt/cni/bin", "/usr/lib/cni"], &[]);
    assert!(
        !seen.contains("macvlan"),
        "reference plugins visible: {seen}"
    );

    // The ctr namespace is also containerd's cgroup parent: its cgroups are removed on drop.
    let mut ctrd = timed("containerd start", || Containerd::start(&sb, &cgroup.name));
    eprintln!(
        "{}plugins from {}{}",
        String::from_utf8_lossy(&ctrd.ctr(10, &["version"]).stdout),
        plugin_dir().display(),
        if reference { " (reference)" } else { "" }
    );
    let tar = cache.join("busybox-oci.tar").display().to_string();
    timed("ctr image import", || {
        ctrd.ctr_ok(&["image", "import", &tar]);
    });

    timed("ctr run cc1", || ctrd.run("cc1"));
    timed("ctr run cc2", || ctrd.run("cc2"));

    // Addresses, as the containers see them and as libcni cached the plugins' result.
    let mut ips = Vec::new();
    for id in ["cc1", "cc2"] {
        let out = ctrd.exec(id, "ip -4 -o addr show eth0");
        let ip = first_ipv4(&String::from_utf8_lossy(&out.stdout))
            .unwrap_or_else(|| panic!("{id}: no IPv4 address on eth0: {}", show(&out)));
        assert!(ip.starts_with("198.18.32."), "{id}: {ip}");
        let v6 = ctrd.exec(id, "ip -6 -o addr show eth0 scope global");
        assert!(
            String::from_utf8_lossy(&v6.stdout).contains("fd00:198:18:32:"),
            "{id}: no IPv6 address: {}",
            show(&v6)
        );
        let cache_file = format!("/var/lib/cni/results/{NET}-{}-{id}-eth0", cgroup.name);
        let cached: Value = serde_json::from_str(&sb.run(&["cat", &cache_file], &[]))
            .unwrap_or_else(|e| panic!("{cache_file}: {e}"));
        let result = &cached["result"];
        let ips_in_result = result["ips"].to_string();
        assert!(
            ips_in_result.contains(&format!("\"{ip}/24\"")),
            "{id}: cached result does not hold {ip}: {cached}"
        );
        // The container interface is listed with its sandbox, and the IPs point at it.
        let ifaces = result["interfaces"].as_array().cloned().unwrap_or_default();
        let idx = result["ips"][0]["interface"].as_u64().unwrap_or(u64::MAX) as usize;
        assert_eq!(
            ifaces.get(idx).map(|i| i["name"].clone()),
            Some(json!("eth0")),
            "{id}: ips[0].interface does not point at eth0: {result}"
        );
        assert!(
            ifaces[idx]["sandbox"]
                .as_str()
                .is_some_and(|s| s.starts_with("/proc/") && s.ends_with("/ns/net")),
            "{id}: sandbox of eth0: {result}"
        );
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1], "both containers got the same address");

    // The containers reach each other.
    for (from, to, to_name) in [("cc1", &ips[1], "cc2"), ("cc2", &ips[0], "cc1")] {
        let ping = ctrd.exec(from, &format!("ping -c 1 -W 2 {to} || ping -c 1 -W 2 {to}"));
        assert!(
            ping.status.success(),
            "{from} cannot ping {to}: {}",
            show(&ping)
        );
        let resp = eventually(10, || {
            let out = ctrd.exec(from, &http_get_script("", to, 80));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("200 OK").then(|| body(&text))
        });
        assert_eq!(
            resp.as_deref(),
            Some(format!("hello-{to_name}").as_str()),
            "{from} -> {to}:80"
        );
    }
    // Their server port, from the node and from outside (routed through the node: ctr
    // publishes no ports).
    for (ip, id) in [(&ips[0], "cc1"), (&ips[1], "cc2")] {
        let want = format!("hello-{id}");
        assert_eq!(
            http_get_in(&node, ip, 80).as_deref(),
            Some(want.as_str()),
            "{id} from the node"
        );
        assert_eq!(
            http_get_in(&outside.ns, ip, 80).as_deref(),
            Some(want.as_str()),
            "{id} from the outside namespace"
        );
    }

    // Stop: the foreground ctr sends DEL with CNI_NETNS="" once the task is gone.
    timed("ctr task kill + DEL", || {
        ctrd.stop("cc1");
        ctrd.stop("cc2");
    });
    // That is the pattern under test: bridge DEL with an empty CNI_NETNS, once per container.
    let log = std::fs::read_to_string(&calls).unwrap_or_default();
    for id in ["cc1", "cc2"] {
        let full = format!("{}-{id}", cgroup.name);
        assert!(
            log.contains("ADD netns=[/proc/") && log.contains(&format!("DEL netns=[] id=[{full}]")),
            "bridge was not called as expected for {full}:\n{log}"
        );
    }
    let containers = ctrd.ctr_ok(&["containers", "list", "--quiet"]);
    assert!(
        containers.trim().is_empty(),
        "containers left: {containers}"
    );

    assert_eq!(veths(&node), Vec::<String>::new(), "veths left in the node");
    assert_eq!(
        reservations(&ipam),
        Vec::<String>::new(),
        "reservations left"
    );
    let cache_left = sb.files("/var/lib/cni/results");
    assert!(cache_left.is_empty(), "libcni cache left: {cache_left:?}");
    let mut needles = ips.clone();
    needles.push(format!("{}-cc1", cgroup.name));
    needles.push(format!("{}-cc2", cgroup.name));
    let left = rules_mentioning(&node, &needles);
    if reference && !left.is_empty() {
        eprintln!(
            "known reference bug: bridge DEL with an empty CNI_NETNS leaks its masquerade \
             rules:\n{}",
            left.join("\n")
        );
    } else {
        assert!(left.is_empty(), "rules left behind: {left:#?}");
    }
    drop(ctrd);
    eprintln!(
        "containerd test: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
