//! Fixtures shared by the portmap end-to-end tests: a node namespace with an "external host"
//! namespace on a veth, a bridge + host-local + portmap conflist, and tiny perl echo
//! servers/clients (perl-base is Essential on Debian; busybox's `nc` has no UDP mode) that
//! answer `pong <proto> <peer address>` so that tests can see who connected.

#![allow(dead_code)]

use cni_testkit::{Attachment, Netns, Node, Runtime, TempDir};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The node's address on the external link.
pub const NODE4: &str = "192.168.77.1";
pub const NODE6: &str = "fd77::1";
/// A second node address (for hostIP filtering).
pub const NODE4_B: &str = "192.168.77.100";
/// The external host's addresses.
pub const EXT4: &str = "192.168.77.2";
pub const EXT4_B: &str = "192.168.77.3";
pub const EXT6: &str = "fd77::2";
/// The bridge gateway addresses.
pub const GW4: &str = "10.77.0.1";
pub const GW6: &str = "fd00:77::1";

const SERVER: &str = r#"
use IO::Socket::IP; use IO::Select; use Socket qw(getnameinfo NI_NUMERICHOST NI_NUMERICSERV);
my ($life, $port) = @ARGV; $SIG{ALRM} = sub { exit 0 }; alarm($life);
my $t = IO::Socket::IP->new(LocalHost => "::", LocalPort => $port, Listen => 64, ReuseAddr => 1, V6Only => 0, Proto => "tcp") or die "tcp: $@";
my $u = IO::Socket::IP->new(LocalHost => "::", LocalPort => $port, V6Only => 0, Proto => "udp") or die "udp: $@";
$| = 1; print "ready\n";
my $sel = IO::Select->new($t, $u);
while (1) {
  for my $h ($sel->can_read(1)) {
    if ($h == $t) {
      my $c = $t->accept or next; my $p = $c->peerhost; $p =~ s/^::ffff://;
      print $c "pong tcp $p\n"; close $c;
    } else {
      my $peer = $u->recv(my $buf, 200); next unless defined $peer;
      my ($err, $host) = getnameinfo($peer, NI_NUMERICHOST | NI_NUMERICSERV); $host =~ s/^::ffff://;
      $u->send("pong udp $host\n", 0, $peer);
    }
  }
}
"#;

const CLIENT: &str = r#"
use IO::Socket::IP; use IO::Select;
my ($proto, $host, $port, $lport, $laddr) = @ARGV; $SIG{ALRM} = sub { exit 3 }; alarm(4);
my %o = (PeerHost => $host, PeerPort => $port, Proto => $proto, Timeout => 2);
$o{LocalPort} = $lport if $lport; $o{LocalHost} = $laddr if $laddr; $o{ReuseAddr} = 1 if $lport;
my $s = IO::Socket::IP->new(%o) or exit 2;
if ($proto eq "udp") {
  my $sel = IO::Select->new($s);
  for (1..3) { $s->send("ping\n"); if ($sel->can_read(0.7)) { my $b; $s->recv($b, 200); print $b; exit 0 } }
  exit 1;
}
my $l = <$s>; exit 1 unless defined $l; print $l;
"#;

/// An echo server (TCP and UDP on one port, both families) running inside a namespace,
/// killed on drop.
pub struct Server {
    child: Child,
}

impl Server {
    /// Starts the server in `ns` on `port` (lives at most 120 s).
    pub fn start(ns: &Netns, port: u16) -> Server {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "perl", "-e", SERVER, "120"])
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn server");
        let out = child.stdout.take().expect("server stdout");
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("server ready");
        assert_eq!(line.trim(), "ready", "server failed to start");
        Server { child }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Dials `host:port` over `proto` from `ns`; the server's reply (`pong <proto> <peer>`), or
/// `None` if nothing answered (bounded: 4 s).
pub fn dial(ns: &Netns, proto: &str, host: &str, port: u16) -> Option<String> {
    dial_from(ns, proto, host, port, None, None)
}

/// [`dial`] with a fixed local port and/or local address.
pub fn dial_from(
    ns: &Netns,
    proto: &str,
    host: &str,
    port: u16,
    lport: Option<u16>,
    laddr: Option<&str>,
) -> Option<String> {
    let port = port.to_string();
    let lport = lport.map(|p| p.to_string()).unwrap_or_else(|| "0".into());
    let out = ns.try_exec(&[
        "perl",
        "-e",
        CLIENT,
        proto,
        host,
        &port,
        &lport,
        laddr.unwrap_or(""),
    ]);
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && s.starts_with("pong")).then_some(s)
}

/// The peer address the server saw, from a reply.
pub fn peer(reply: &str) -> &str {
    reply.split_whitespace().nth(2).unwrap_or("")
}

/// Which binaries the conflist uses for bridge and host-local: this project's when they are
/// built, else the reference's (`/usr/lib/cni`); `PORTMAP_TEST_REFERENCE_DELEGATES=1` forces
/// the reference's.
pub fn delegates_dir() -> PathBuf {
    let ours = cni_testkit::bin_dir();
    let ours_built = ours.join("bridge").is_file() && ours.join("host-local").is_file();
    if ours_built && std::env::var_os("PORTMAP_TEST_REFERENCE_DELEGATES").is_none() {
        ours
    } else {
        PathBuf::from("/usr/lib/cni")
    }
}

/// A test world: node, external host, CNI_PATH of symlinks, runtime.
pub struct World {
    pub node: Node,
    pub ext: Netns,
    pub cni_dir: TempDir,
    pub data_dir: TempDir,
    pub rt: Runtime,
    pub containers: Vec<Netns>,
}

/// Options of the conflist.
#[derive(Clone)]
pub struct Opts {
    pub backend: &'static str,
    pub dual: bool,
    /// Extra keys of the portmap plugin config.
    pub portmap: Value,
    pub cni_version: &'static str,
}

impl Opts {
    /// Dual-stack, the given backend, no extra keys.
    pub fn new(backend: &'static str) -> Opts {
        Opts {
            backend,
            dual: true,
            portmap: json!({}),
            cni_version: "1.0.0",
        }
    }
}

/// Whether the reference plugins needed as delegates are installed.
pub fn have_delegates() -> bool {
    let d = delegates_dir();
    d.join("bridge").is_file() && d.join("host-local").is_file()
}

impl World {
    /// Builds the world. `label` must be unique per test (it names the network).
    pub fn new(label: &str, opts: &Opts) -> World {
        let node = Node::new(label);
        let ext = Netns::new(&format!("{label}-ext"));
        node.ip(&[
            "link",
            "add",
            "eth0n",
            "type",
            "veth",
            "peer",
            "name",
            "ext0",
            "netns",
            ext.name(),
        ]);
        node.ip(&["addr", "add", &format!("{NODE4}/24"), "dev", "eth0n"]);
        node.ip(&["addr", "add", &format!("{NODE4_B}/24"), "dev", "eth0n"]);
        node.ip(&[
            "addr",
            "add",
            &format!("{NODE6}/64"),
            "dev",
            "eth0n",
            "nodad",
        ]);
        node.ip(&["link", "set", "eth0n", "up"]);
        ext.ip(&["addr", "add", &format!("{EXT4}/24"), "dev", "ext0"]);
        ext.ip(&["addr", "add", &format!("{EXT4_B}/24"), "dev", "ext0"]);
        ext.ip(&["addr", "add", &format!("{EXT6}/64"), "dev", "ext0", "nodad"]);
        ext.ip(&["link", "set", "ext0", "up"]);

        let cni_dir = TempDir::new(&format!("{label}-cnipath"));
        let data_dir = TempDir::new(&format!("{label}-ipam"));
        let del = delegates_dir();
        for p in ["bridge", "host-local"] {
            std::os::unix::fs::symlink(del.join(p), cni_dir.path().join(p)).unwrap();
        }
        std::os::unix::fs::symlink(cni_testkit::bin("portmap"), cni_dir.path().join("portmap"))
            .unwrap();

        let mut ranges = vec![json!([{"subnet": "10.77.0.0/24"}])];
        if opts.dual {
            ranges.push(json!([{"subnet": "fd00:77::/64"}]));
        }
        let mut pm = json!({
            "type": "portmap",
            "capabilities": {"portMappings": true},
            "backend": opts.backend,
        });
        if let (Some(o), Some(extra)) = (pm.as_object_mut(), opts.portmap.as_object()) {
            for (k, v) in extra {
                o.insert(k.clone(), v.clone());
            }
        }
        let conflist = json!({
            "cniVersion": opts.cni_version,
            "name": format!("pm{}", label.replace('_', "")),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": true,
                    "isDefaultGateway": true,
                    "hairpinMode": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": ranges,
                        "dataDir": data_dir.path().display().to_string(),
                    }
                },
                pm
            ]
        });
        let rt = Runtime::new(Some(&node.ns), conflist, vec![cni_dir.path().to_path_buf()]);
        World {
            node,
            ext,
            cni_dir,
            data_dir,
            rt,
            containers: Vec::new(),
        }
    }

    /// A new container namespace and its attachment with `mappings`.
    pub fn container(&mut self, id: &str, mappings: Value) -> (usize, Attachment) {
        let ns = self.node.container(id);
        let att = Attachment::new(id, &ns.path()).with_caps(json!({"portMappings": mappings}));
        self.containers.push(ns);
        (self.containers.len() - 1, att)
    }

    /// The container namespace at `i`.
    pub fn ns(&self, i: usize) -> &Netns {
        &self.containers[i]
    }

    /// ADD, panicking with the plugin output on failure; returns the result.
    pub fn add(&self, att: &Attachment) -> Value {
        self.rt
            .add(att)
            .unwrap_or_else(|e| panic!("ADD {} failed: {e}", att.container_id))
    }

    /// The container's IPv4 and IPv6 addresses from an ADD result.
    pub fn ips(result: &Value) -> (String, Option<String>) {
        let mut v4 = String::new();
        let mut v6 = None;
        for ip in result["ips"].as_array().into_iter().flatten() {
            let a = ip["address"].as_str().unwrap_or_default();
            let addr = a.split('/').next().unwrap_or_default().to_string();
            if addr.contains(':') {
                v6.get_or_insert(addr);
            } else if v4.is_empty() {
                v4 = addr;
            }
        }
        (v4, v6)
    }

    /// Waits (at most 5 s) until no IPv6 address in the node or the containers is still
    /// tentative (duplicate address detection), so that the first IPv6 dial is not racing it.
    pub fn settle(&self) {
        for _ in 0..50 {
            let busy = std::iter::once(&self.node.ns)
                .chain(self.containers.iter())
                .any(|ns| {
                    !ns.ip(&["-6", "addr", "show", "tentative"])
                        .trim()
                        .is_empty()
                });
            if !busy {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The node's firewall state relevant to portmap, for before/after comparisons: the user
    /// chains and rules of both nat tables (iptables-nft instantiates empty tables with their
    /// base chains on first use; those are not state) and the `cni_hostport` tables.
    pub fn firewall_state(&self) -> String {
        let mut out = String::new();
        for v6 in [false, true] {
            out.push_str(if v6 {
                "--ip6tables--\n"
            } else {
                "--iptables--\n"
            });
            for l in self.node.iptables_save(v6).lines() {
                let builtin = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]
                    .iter()
                    .any(|c| l.starts_with(&format!(":{c} ")));
                if l.starts_with("-A ") || (l.starts_with(':') && !builtin) {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        for fam in ["ip", "ip6"] {
            out.push_str(&format!("--nft {fam}--\n"));
            let o = self
                .node
                .try_exec(&["nft", "list", "table", fam, "cni_hostport"]);
            out.push_str(&String::from_utf8_lossy(&o.stdout));
        }
        out
    }

    /// Runs the portmap binary directly in the node with explicit env and stdin.
    pub fn run_portmap(&self, env: &[(&str, &str)], stdin: &Value) -> cni_testkit::PluginOutput {
        let path = self.cni_dir.path().display().to_string();
        let mut full: Vec<(&str, &str)> = vec![("CNI_PATH", &path)];
        full.extend_from_slice(env);
        cni_testkit::run_plugin(
            Some(&self.node.open()),
            &self.cni_dir.path().join("portmap"),
            &full,
            &stdin.to_string(),
        )
    }

    /// The portmap plugin's request config as the runtime builds it.
    pub fn portmap_conf(&self, prev: Option<&Value>, caps: &Value) -> Value {
        let plugin = self.rt.conflist["plugins"][1].clone();
        self.rt.request_config(&plugin, prev, caps)
    }
}

/// `{hostPort, containerPort, protocol}` mappings.
pub fn maps(list: &[(u16, u16, &str)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(h, c, p)| json!({"hostPort": h, "containerPort": c, "protocol": p}))
            .collect(),
    )
}
