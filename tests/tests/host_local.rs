//! host-local run as a runtime runs it (environment + stdin, one process per call), each test
//! with its own data directory: every config form, every requested-IP source, exhaustion,
//! dual stack, every cniVersion, duplicate ADD, CHECK, GC, STATUS, the on-disk format, and
//! the index following changes made behind its back. No namespace is needed (host-local only
//! touches files); `CNI_NETNS` is a path that does not exist.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cni_testkit::{PluginOutput, TempDir, bin, run_plugin};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

const NETNS: &str = "/nonexistent/netns-host-local";
const ALL_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// One test's network: a private data dir and a network name.
struct Net {
    dir: TempDir,
    name: String,
}

impl Net {
    fn new(label: &str) -> Net {
        Net {
            dir: TempDir::new(label),
            name: "hlnet".to_string(),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn net_dir(&self) -> PathBuf {
        self.data_dir().join(&self.name)
    }

    /// A full config: `ipam` gets `type` and `dataDir`; `extra` is merged at the top level.
    fn conf(&self, version: &str, ipam: Value, extra: Value) -> Value {
        let mut ipam = ipam;
        ipam["type"] = json!("host-local");
        ipam["dataDir"] = json!(self.data_dir());
        let mut c =
            json!({"cniVersion": version, "name": self.name, "type": "bridge", "ipam": ipam});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                c[k] = v;
            }
        }
        c
    }

    fn run(&self, cmd: &str, id: &str, ifname: &str, args: &str, conf: &Value) -> PluginOutput {
        run_plugin(
            None,
            &bin("host-local"),
            &[
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", if cmd == "DEL" { "" } else { NETNS }),
                ("CNI_IFNAME", ifname),
                ("CNI_ARGS", args),
                ("CNI_PATH", "/nonexistent"),
            ],
            &conf.to_string(),
        )
    }

    fn add(&self, id: &str, conf: &Value) -> PluginOutput {
        self.run("ADD", id, "eth0", "", conf)
    }

    fn add_ok(&self, id: &str, conf: &Value) -> Value {
        let out = self.add(id, conf);
        assert!(out.ok(), "ADD {id}: {out}");
        out.json()
    }

    fn del(&self, id: &str, conf: &Value) {
        let out = self.run("DEL", id, "eth0", "", conf);
        assert!(out.ok(), "DEL {id}: {out}");
        assert!(out.stdout.is_empty(), "{out}");
    }

    /// Reservation files (names that parse as addresses) and their contents.
    fn files(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let Ok(rd) = std::fs::read_dir(self.net_dir()) else {
            return m;
        };
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if name.parse::<std::net::IpAddr>().is_ok() {
                m.insert(name, std::fs::read_to_string(e.path()).unwrap());
            }
        }
        m
    }
}

fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap().to_string())
        .collect()
}

fn assert_err(out: &PluginOutput, code: u64, msg: &str) {
    assert_eq!(out.status, 1, "{out}");
    assert_eq!(out.error_code(), Some(code), "{out}");
    assert_eq!(out.error_msg(), msg, "{out}");
}

fn v4_24() -> Value {
    json!({"ranges": [[{"subnet": "10.1.0.0/24"}]]})
}

#[test]
fn every_cni_version_prints_an_ipam_result() {
    let net = Net::new("hl-versions");
    let resolv = net.dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.1.0.53\nsearch a.example b.example\noptions ndots:2\ndomain a.example\n",
    )
    .unwrap();
    for (i, v) in ALL_VERSIONS.iter().enumerate() {
        let ipam = json!({
            "ranges": [[{"subnet": "10.1.0.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "resolvConf": resolv,
        });
        let conf = net.conf(v, ipam, json!({}));
        let id = format!("c{i}");
        let r = net.add_ok(&id, &conf);
        let addr = format!("10.1.0.{}/24", i + 2);
        let dns = json!({"nameservers": ["10.1.0.53"], "domain": "a.example", "search": ["a.example", "b.example"], "options": ["ndots:2"]});
        let expected = match *v {
            "0.1.0" | "0.2.0" => json!({
                "cniVersion": v,
                "ip4": {"ip": addr, "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]},
                "dns": dns,
            }),
            "0.3.0" | "0.3.1" | "0.4.0" => json!({
                "cniVersion": v,
                "ips": [{"version": "4", "address": addr, "gateway": "10.1.0.1"}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
                "dns": dns,
            }),
            _ => json!({
                "cniVersion": v,
                "ips": [{"address": addr, "gateway": "10.1.0.1"}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
                "dns": dns,
            }),
        };
        assert_eq!(r, expected, "version {v}");
        assert!(r.get("interfaces").is_none());
        // CHECK exists from 0.4.0 on.
        if *v >= "0.4.0" {
            let out = net.run("CHECK", &id, "eth0", "", &conf);
            assert!(out.ok() && out.stdout.is_empty(), "{v}: {out}");
        }
        net.del(&id, &conf);
        assert!(net.files().is_empty(), "{v}");
    }
}

#[test]
fn files_on_disk_are_the_reference_layout() {
    let net = Net::new("hl-layout");
    let conf = net.conf(
        "1.0.0",
        json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:1::/64"}]]}),
        json!({}),
    );
    net.add_ok("abc123", &conf);
    let d = net.net_dir();
    assert_eq!(
        std::fs::read(d.join("10.1.0.2")).unwrap(),
        b"abc123\r\neth0"
    );
    assert_eq!(
        std::fs::read(d.join("fd00:1::2")).unwrap(),
        b"abc123\r\neth0"
    );
    assert_eq!(
        std::fs::read(d.join("last_reserved_ip.0")).unwrap(),
        b"10.1.0.2"
    );
    assert_eq!(
        std::fs::read(d.join("last_reserved_ip.1")).unwrap(),
        b"fd00:1::2"
    );
    let mode = |n: &str| std::fs::metadata(d.join(n)).unwrap().mode() & 0o777;
    assert_eq!(mode("10.1.0.2"), 0o600);
    assert_eq!(mode("last_reserved_ip.0"), 0o600);
    assert_eq!(mode("lock"), 0o750);
    assert_eq!(std::fs::metadata(d.join("lock")).unwrap().len(), 0);
    assert_eq!(
        mode(".") & 0o022,
        0,
        "network directory must not be group/world-writable"
    );
    // Nothing else at top level but our hidden index directory.
    let mut names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".cni-rs-index",
            "10.1.0.2",
            "fd00:1::2",
            "last_reserved_ip.0",
            "last_reserved_ip.1",
            "lock"
        ]
    );
    // No index file could ever be taken for a reservation by the reference (whose DEL removes
    // any file whose trimmed content equals "<id>\r\n<ifname>" or "<id>").
    for e in std::fs::read_dir(d.join(".cni-rs-index")).unwrap() {
        let content = std::fs::read_to_string(e.unwrap().path()).unwrap();
        let first = content.lines().next().unwrap();
        assert!(first.contains(' '), "{content}");
    }
}

#[test]
fn range_defaults_and_explicit_fields() {
    let net = Net::new("hl-fields");
    // Explicit start/end and a gateway inside the range: the gateway is skipped.
    let conf = net.conf(
        "1.0.0",
        json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.12", "gateway": "10.1.0.11"}]]}),
        json!({}),
    );
    let got: Vec<String> = (0..2)
        .map(|i| addresses(&net.add_ok(&format!("f{i}"), &conf))[0].clone())
        .collect();
    assert_eq!(got, ["10.1.0.10/24", "10.1.0.12/24"]);
    assert_err(
        &net.add("f2", &conf),
        999,
        "failed to allocate for range 0: no IP addresses available in range set: 10.1.0.10-10.1.0.12",
    );
    // Defaults: gateway and start = network + 1; end = broadcast - 1 for IPv4, the last
    // address for IPv6.
    let small = net.conf(
        "1.0.0",
        json!({"ranges": [[{"subnet": "10.1.1.0/30"}], [{"subnet": "fd00:9::/126"}]]}),
        json!({}),
    );
    let r = net.add_ok("s1", &small);
    assert_eq!(
        r["ips"],
        json!([{"address": "10.1.1.2/30", "gateway": "10.1.1.1"}, {"address": "fd00:9::2/126", "gateway": "fd00:9::1"}])
    );
    assert_err(
        &net.add("s2", &small),
        999,
        "failed to allocate for range 0: no IP addresses available in range set: 10.1.1.1-10.1.1.2",
    );
    // The failed ADD released nothing of s1 and kept nothing of its own.
    assert_eq!(
        net.files().values().filter(|c| c.starts_with("s")).count(),
        2
    );
}

#[test]
fn config_forms_legacy_ranges_and_ip_ranges() {
    let net = Net::new("hl-forms");
    // Legacy single range only.
    let legacy = net.conf(
        "0.3.1",
        json!({"subnet": "10.2.0.0/16", "rangeStart": "10.2.5.5", "gateway": "10.2.0.254"}),
        json!({}),
    );
    let r = net.add_ok("l1", &legacy);
    assert_eq!(
        r["ips"],
        json!([{"version": "4", "address": "10.2.5.5/16", "gateway": "10.2.0.254"}])
    );
    net.del("l1", &legacy);
    // Legacy + ranges + runtimeConfig.ipRanges: ipRanges first, then legacy, then ranges.
    let conf = net.conf(
        "1.1.0",
        json!({"subnet": "10.3.0.0/24", "ranges": [[{"subnet": "fd00:3::/64"}]]}),
        json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.100"}]]}}),
    );
    let r = net.add_ok("m1", &conf);
    assert_eq!(
        addresses(&r),
        ["10.9.0.100/24", "10.3.0.2/24", "fd00:3::2/64"]
    );
    assert_eq!(
        std::fs::read_to_string(net.net_dir().join("last_reserved_ip.0")).unwrap(),
        "10.9.0.100"
    );
    assert_eq!(
        std::fs::read_to_string(net.net_dir().join("last_reserved_ip.2")).unwrap(),
        "fd00:3::2"
    );
    // A set with two ranges: the allocation walks into the second when the first is full.
    let two = net.conf("1.0.0", json!({"ranges": [[{"subnet": "10.4.0.0/24", "rangeStart": "10.4.0.2", "rangeEnd": "10.4.0.2"}, {"subnet": "10.5.0.0/24"}]]}), json!({}));
    assert_eq!(addresses(&net.add_ok("t1", &two)), ["10.4.0.2/24"]);
    assert_eq!(addresses(&net.add_ok("t2", &two)), ["10.5.0.2/24"]);
}

#[test]
fn routes_with_the_1_1_0_fields_are_copied() {
    let net = Net::new("hl-routes");
    let conf = net.conf(
        "1.1.0",
        json!({"ranges": [[{"subnet": "10.1.0.0/24"}]], "routes": [
            {"dst": "0.0.0.0/0"},
            {"dst": "192.168.0.0/16", "gw": "10.1.0.254", "mtu": 1400, "advmss": 1360, "priority": 10, "table": 100, "scope": 0}
        ]}),
        json!({}),
    );
    let r = net.add_ok("r1", &conf);
    assert_eq!(
        r["routes"],
        json!([
            {"dst": "0.0.0.0/0"},
            {"advmss": 1360, "dst": "192.168.0.0/16", "gw": "10.1.0.254", "mtu": 1400, "priority": 10, "scope": 0, "table": 100}
        ])
    );
}

#[test]
fn requested_ips_from_every_source_accumulate() {
    let net = Net::new("hl-requested");
    let dual = json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]});
    // CNI_ARGS IP= (prefix ignored) and runtimeConfig.ips together.
    let conf = net.conf(
        "1.1.0",
        dual.clone(),
        json!({"runtimeConfig": {"ips": ["fd00::77/64"]}}),
    );
    let out = net.run(
        "ADD",
        "a1",
        "eth0",
        "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.1.0.50/8",
        &conf,
    );
    assert!(out.ok(), "{out}");
    assert_eq!(addresses(&out.json()), ["10.1.0.50/24", "fd00::77/64"]);
    // args.cni.ips.
    let conf2 = net.conf(
        "1.1.0",
        dual.clone(),
        json!({"args": {"cni": {"ips": ["10.1.0.60", "fd00::60"]}}}),
    );
    assert_eq!(
        addresses(&net.add_ok("a2", &conf2)),
        ["10.1.0.60/24", "fd00::60/64"]
    );
    // Lowercase ip is an unknown key: ignored with IgnoreUnknown, so a normal allocation.
    let plain = net.conf("1.1.0", dual.clone(), json!({}));
    let out = net.run("ADD", "a3", "eth0", "IgnoreUnknown=1;ip=10.1.0.99", &plain);
    assert!(out.ok(), "{out}");
    assert_ne!(addresses(&out.json())[0], "10.1.0.99/24");
    // Taken, gateway, outside every set.
    let out = net.run("ADD", "a4", "eth0", "IP=10.1.0.50", &plain);
    assert_err(
        &out,
        999,
        "failed to allocate for range 0: requested IP address 10.1.0.50 is not available in range set 10.1.0.1-10.1.0.254",
    );
    let out = net.run("ADD", "a4", "eth0", "IP=10.1.0.1", &plain);
    assert_err(
        &out,
        999,
        "failed to allocate for range 0: requested ip 10.1.0.1 is subnet's gateway",
    );
    let out = net.run("ADD", "a4", "eth0", "IP=192.168.1.1", &plain);
    assert_err(
        &out,
        999,
        "failed to allocate all requested IPs: 192.168.1.1",
    );
    // Nothing was left behind by the failed ADDs.
    assert!(!net.files().values().any(|c| c.starts_with("a4")));
    // Bad CNI_ARGS: code 4, and also on DEL.
    let out = net.run("ADD", "a5", "eth0", "IP=nope", &plain);
    assert_eq!(out.error_code(), Some(4), "{out}");
    let out = net.run("DEL", "a5", "eth0", "K8S_POD_NAME=x", &plain);
    assert_eq!(out.error_code(), Some(4), "{out}");
    // A bad address in runtimeConfig.ips: code 7 naming the field.
    let bad = net.conf("1.1.0", dual, json!({"runtimeConfig": {"ips": ["x"]}}));
    let out = net.add("a6", &bad);
    assert_eq!(out.error_code(), Some(7), "{out}");
    assert!(out.stdout.contains("runtimeConfig.ips[0]"), "{out}");
}

#[test]
fn exhaustion_is_clear_and_the_address_comes_back_after_del() {
    let net = Net::new("hl-exhaust");
    let conf = net.conf("1.1.0", json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.2", "rangeEnd": "10.1.0.4"}]]}), json!({}));
    let status = |net: &Net| net.run("STATUS", "", "", "", &conf);
    assert!(status(&net).ok());
    for i in 0..3 {
        net.add_ok(&format!("e{i}"), &conf);
    }
    let out = net.add("e3", &conf);
    assert_err(
        &out,
        999,
        "failed to allocate for range 0: no IP addresses available in range set: 10.1.0.2-10.1.0.4",
    );
    let out = status(&net);
    assert_err(
        &out,
        50,
        "no IP addresses available in range set: 10.1.0.2-10.1.0.4",
    );
    net.del("e1", &conf);
    assert!(status(&net).ok());
    assert_eq!(addresses(&net.add_ok("e3", &conf)), ["10.1.0.3/24"]);
}

#[test]
fn duplicate_add_fails_and_del_is_idempotent() {
    let net = Net::new("hl-dup");
    let conf = net.conf("1.0.0", v4_24(), json!({}));
    net.add_ok("d1", &conf);
    let before = net.files();
    let out = net.add("d1", &conf);
    assert_err(
        &out,
        999,
        "failed to allocate for range 0: 10.1.0.2 has been allocated to d1, duplicate allocation is not allowed",
    );
    assert_eq!(
        net.files(),
        before,
        "a refused duplicate must not disturb the first ADD"
    );
    // Another interface of the same container is a different attachment.
    let out = net.run("ADD", "d1", "net1", "", &conf);
    assert!(out.ok(), "{out}");
    net.del("d1", &conf);
    assert_eq!(net.files().values().collect::<Vec<_>>(), ["d1\r\nnet1"]);
    net.del("d1", &conf);
    net.del("never-added", &conf);
    // DEL before anything ever existed creates the directory and succeeds.
    let other = Net::new("hl-dup-empty");
    other.del("x", &other.conf("1.0.0", v4_24(), json!({})));
}

#[test]
fn check_verifies_reservation_and_prev_result() {
    let net = Net::new("hl-check");
    let conf = net.conf("1.0.0", v4_24(), json!({}));
    let out = net.run("CHECK", "k1", "eth0", "", &conf);
    assert_err(
        &out,
        999,
        "host-local: Failed to find address added by container k1",
    );
    let r = net.add_ok("k1", &conf);
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = r.clone();
    let out = net.run("CHECK", "k1", "eth0", "", &with_prev);
    assert!(out.ok(), "{out}");
    // A prevResult whose address is not ours for this attachment fails.
    let mut wrong = with_prev.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!("10.1.0.200/24");
    let out = net.run("CHECK", "k1", "eth0", "", &wrong);
    assert_eq!(out.error_code(), Some(999), "{out}");
    assert!(out.error_msg().contains("10.1.0.200"), "{out}");
    net.del("k1", &conf);
    let out = net.run("CHECK", "k1", "eth0", "", &with_prev);
    assert_err(
        &out,
        999,
        "host-local: Failed to find address added by container k1",
    );
}

#[test]
fn pre_0_3_0_allows_one_address_per_family() {
    let net = Net::new("hl-old");
    let two = json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]});
    for v in ["0.1.0", "0.2.0"] {
        let out = net.add("o1", &net.conf(v, two.clone(), json!({})));
        assert_err(
            &out,
            7,
            &format!("CNI version {v} does not support more than 1 address per family"),
        );
    }
    // Dual stack is fine in 0.2.0: ip4 and ip6.
    let dual = net.conf(
        "0.2.0",
        json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]}),
        json!({}),
    );
    let r = net.add_ok("o2", &dual);
    assert_eq!(r["ip4"]["ip"], "10.1.0.2/24");
    assert_eq!(r["ip6"]["ip"], "fd00::2/64");
    assert_eq!(r["ip6"]["gateway"], "fd00::1");
}

#[test]
fn invalid_configs_are_code_7_naming_the_field() {
    let net = Net::new("hl-invalid");
    let cases = [
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/31"}]]}),
            "invalid range set 0: Network 10.1.0.0/31 too small to allocate from",
            "ipam.ranges[0][0].subnet",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.0.9/24"}]]}),
            "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.1.0.0",
            "ipam.ranges[0][0].subnet",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeEnd": "10.2.0.1"}]]}),
            "invalid range set 0: RangeEnd 10.2.0.1 not in network 10.1.0.0/24",
            "ipam.ranges[0][0].rangeEnd",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.1.0.128/25"}]]}),
            "invalid range set 0: subnets 10.1.0.1-10.1.0.254 and 10.1.0.129-10.1.0.254 overlap",
            "ipam.ranges[0][0] and ipam.ranges[0][1]",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}]]}),
            "invalid range set 0: mixed address families",
            "ipam.ranges[0]",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.0/23"}]]}),
            "range set 0 overlaps with 1",
            "ipam.ranges[0] and ipam.ranges[1]",
        ),
        (json!({}), "no IP ranges specified", "ipam.ranges"),
    ];
    for (ipam, msg, field) in cases {
        let out = net.add("i1", &net.conf("1.0.0", ipam.clone(), json!({})));
        assert_err(&out, 7, msg);
        assert_eq!(out.json()["details"], format!("field: {field}"), "{ipam}");
    }
    let no_ipam = json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"});
    assert_err(
        &net.add("i1", &no_ipam),
        7,
        "IPAM config missing 'ipam' key",
    );
    // Wrong JSON type: code 7 naming the path.
    let out = net.add(
        "i1",
        &net.conf("1.0.0", json!({"ranges": [[{"subnet": 5}]]}), json!({})),
    );
    assert_eq!(out.error_code(), Some(7), "{out}");
    assert!(
        out.error_msg().contains("ipam.ranges[0][0].subnet"),
        "{out}"
    );
    // Nothing was created for invalid configs.
    assert!(!net.net_dir().exists());
}

#[test]
fn nothing_escapes_the_data_dir() {
    let net = Net::new("hl-escape");
    // A data dir that is a regular file: a clear error naming the field.
    std::fs::create_dir_all(net.dir.path()).unwrap();
    std::fs::write(net.data_dir(), "not a directory").unwrap();
    let conf = net.conf("1.1.0", v4_24(), json!({}));
    let out = net.add("x1", &conf);
    assert_eq!(out.error_code(), Some(7), "{out}");
    assert!(out.error_msg().contains("is not a directory"), "{out}");
    assert_eq!(out.json()["details"], "field: ipam.dataDir");
    let out = net.run("STATUS", "", "", "", &conf);
    assert_eq!(out.error_code(), Some(50), "{out}");
    std::fs::remove_file(net.data_dir()).unwrap();
    // Names that would leave the data dir are refused before anything is created.
    for name in ["..", "../x", "a/b", ".hidden"] {
        let mut c = conf.clone();
        c["name"] = json!(name);
        let out = net.add("x1", &c);
        assert_eq!(out.error_code(), Some(7), "{name}: {out}");
    }
    assert!(!net.data_dir().exists());
    // Dots inside a name stay one path component.
    let mut c = conf.clone();
    c["name"] = json!("a..b");
    net.add_ok("x1", &c);
    assert!(net.data_dir().join("a..b").join("10.1.0.2").is_file());
}

#[test]
fn status_reports_usability() {
    let net = Net::new("hl-status");
    let conf = net.conf("1.1.0", json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64", "rangeStart": "fd00::2", "rangeEnd": "fd00::2"}]]}), json!({}));
    let out = net.run("STATUS", "", "", "", &conf);
    assert!(out.ok() && out.stdout.is_empty(), "{out}");
    net.add_ok("s1", &conf);
    assert_err(
        &net.run("STATUS", "", "", "", &conf),
        50,
        "no IP addresses available in range set: fd00::2-fd00::2",
    );
    // STATUS needs 1.1.0; config errors keep their code.
    assert_eq!(
        net.run("STATUS", "", "", "", &net.conf("1.0.0", v4_24(), json!({})))
            .error_code(),
        Some(1)
    );
    assert_eq!(
        net.run(
            "STATUS",
            "",
            "",
            "",
            &net.conf("1.1.0", json!({}), json!({}))
        )
        .error_code(),
        Some(7)
    );
}

#[test]
fn gc_releases_only_attachments_not_in_the_valid_list() {
    let net = Net::new("hl-gc");
    let conf = net.conf("1.1.0", v4_24(), json!({}));
    for id in ["keep", "gone1", "gone2"] {
        net.add_ok(id, &conf);
    }
    assert!(net.run("ADD", "keep", "net1", "", &conf).ok());
    // Legacy and unparsable files written as old versions / humans would.
    std::fs::write(net.net_dir().join("10.1.0.100"), "keep").unwrap();
    std::fs::write(net.net_dir().join("10.1.0.101"), "gone3").unwrap();
    std::fs::write(net.net_dir().join("10.1.0.102"), "some junk here").unwrap();
    let last_before = std::fs::read(net.net_dir().join("last_reserved_ip.0")).unwrap();
    let gc = |extra: Value| {
        let mut c = conf.clone();
        if let Value::Object(m) = extra {
            for (k, v) in m {
                c[k] = v;
            }
        }
        net.run("GC", "", "", "", &c)
    };
    // No key: no information, nothing removed.
    let before = net.files();
    let out = gc(json!({}));
    assert!(out.ok() && out.stdout.is_empty(), "{out}");
    assert_eq!(net.files(), before);
    // Old spelling only, one attachment of "keep" valid.
    let out = gc(json!({"cni.dev/attachments": [{"containerID": "keep", "ifname": "eth0"}]}));
    assert!(out.ok() && out.stdout.is_empty(), "{out}");
    let left: Vec<(String, String)> = net.files().into_iter().collect();
    assert_eq!(
        left,
        [
            ("10.1.0.100".to_string(), "keep".to_string()),
            ("10.1.0.102".to_string(), "some junk here".to_string()),
            ("10.1.0.2".to_string(), "keep\r\neth0".to_string()),
        ]
    );
    assert!(
        out.stderr.contains("10.1.0.102"),
        "unparsable files are reported: {out}"
    );
    assert_eq!(
        std::fs::read(net.net_dir().join("last_reserved_ip.0")).unwrap(),
        last_before
    );
    assert!(net.net_dir().join("lock").is_file());
    // The released addresses are allocatable again, and the index knows "keep" is gone after
    // an empty list.
    let out = gc(json!({"cni.dev/valid-attachments": [], "cni.dev/attachments": []}));
    assert!(out.ok(), "{out}");
    assert_eq!(net.files().keys().collect::<Vec<_>>(), ["10.1.0.102"]);
    net.add_ok("keep", &conf);
    // GC needs 1.1.0.
    let old = net.conf("1.0.0", v4_24(), json!({"cni.dev/valid-attachments": []}));
    assert_eq!(net.run("GC", "", "", "", &old).error_code(), Some(1));
    assert_eq!(net.files().len(), 2);
}

#[test]
fn index_follows_files_written_behind_its_back() {
    // Files created and removed directly (as the reference binary or a human would) are seen
    // by the next call: duplicates, DEL, allocation.
    let net = Net::new("hl-foreign");
    let conf = net.conf("1.0.0", v4_24(), json!({}));
    net.add_ok("ours", &conf);
    let d = net.net_dir();
    std::fs::write(d.join("10.1.0.3"), "theirs\r\neth0").unwrap();
    std::fs::write(d.join("10.1.0.4"), "legacy").unwrap();
    assert_err(
        &net.add("theirs", &conf),
        999,
        "failed to allocate for range 0: 10.1.0.3 has been allocated to theirs, duplicate allocation is not allowed",
    );
    assert!(net.run("CHECK", "legacy", "eth9", "", &conf).ok());
    // Allocation skips the foreign reservations.
    assert_eq!(addresses(&net.add_ok("next", &conf)), ["10.1.0.5/24"]);
    net.del("theirs", &conf);
    net.del("legacy", &conf);
    assert_eq!(
        net.files().keys().collect::<Vec<_>>(),
        ["10.1.0.2", "10.1.0.5"]
    );
    // A foreign DEL of one of ours.
    std::fs::remove_file(d.join("10.1.0.2")).unwrap();
    assert_eq!(
        net.run("CHECK", "ours", "eth0", "", &conf).error_code(),
        Some(999)
    );
    net.add_ok("ours", &conf);
    // Removing our index entirely changes nothing visible.
    std::fs::remove_dir_all(d.join(".cni-rs-index")).unwrap();
    assert_err(
        &net.add("next", &conf),
        999,
        "failed to allocate for range 0: 10.1.0.5 has been allocated to next, duplicate allocation is not allowed",
    );
}
