//! Hostile and malformed input to every binary (bridge, host-local, portmap, loopback) and
//! every verb: wrong JSON types for every field of every plugin's configuration (generated
//! from field tables that must cover each plugin's key list), truncated and huge JSON, unknown
//! versions, invalid CIDRs/IPs/MACs, ports 0 and ≥ 65536, protocol names, hostile interface
//! names and container IDs, network names and IPAM types that try to leave their directory,
//! a `dataDir`/`resolvConf`/`CNI_NETNS` that is not what it claims.
//!
//! Every call must give one error object with the right code (skel errors per the contract;
//! invalid configuration 7 naming the field; bad environment 4; undecodable 6) and a message
//! naming the problem, exit 1, never panic, and leave the node exactly as it was (links,
//! addresses, routes, every iptables table, the nftables ruleset, the data directory; nothing
//! written next to the data directory, nothing run outside `CNI_PATH`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hardening_support;

use cni_kernel::NetNs;
use cni_testkit::{Netns, PluginOutput, TempDir, require_root};
use hardening_support::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// One plugin under test in its own node.
struct Target {
    w: World,
    ns: NetNs,
    ctr: Netns,
    ctr_path: String,
    cni_path: String,
    /// An empty working directory (writes relative to the cwd would show up here).
    cwd: TempDir,
}

impl Target {
    fn new(label: &str) -> Target {
        let w = World::new(label);
        let ns = w.node_ns();
        let ctr = w.node.container(&format!("{label}c"));
        let ctr_path = ctr.path().display().to_string();
        let cni_path = w.cni_path();
        Target {
            w,
            ns,
            ctr,
            ctr_path,
            cni_path,
            cwd: TempDir::new("hcwd"),
        }
    }

    /// Runs `plugin` for `verb` with the runtime's usual environment, `overrides` replacing
    /// or adding variables.
    fn call(&self, plugin: &str, verb: &str, overrides: &[(&str, &str)], stdin: &[u8]) -> Bounded {
        let mut env = verb_env(verb, "hc1", &self.ctr_path, "eth0", &self.cni_path);
        for (k, v) in overrides {
            env.retain(|(ek, _)| ek != k);
            env.push((k, v));
        }
        let opts = RunOpts {
            deadline: Duration::from_secs(60),
            mem_kib: Some(2 * 1024 * 1024),
            cwd: Some(self.cwd.path().to_path_buf()),
        };
        let bin = self.w.bin.path().join(plugin);
        let b = run_bounded(Some(&self.ns), &bin, &env, stdin, &opts);
        assert!(!b.timed_out, "{plugin} {verb} hung: {:?}", b.out);
        b
    }

    /// `call` + [`check_output`].
    #[track_caller]
    fn expect(
        &self,
        plugin: &str,
        verb: &str,
        overrides: &[(&str, &str)],
        stdin: &[u8],
        expect: &Expect,
        what: &str,
    ) -> PluginOutput {
        let b = self.call(plugin, verb, overrides, stdin);
        check_output(&b.out, expect, &format!("{plugin} {verb} {what}"));
        b.out
    }

    fn snapshot(&self) -> NodeState {
        self.w.snapshot()
    }

    /// The cwd and the data dir's parent hold nothing but the data dir.
    #[track_caller]
    fn assert_nothing_outside(&self, what: &str) {
        let cwd: Vec<_> = std::fs::read_dir(self.cwd.path()).unwrap().collect();
        assert!(cwd.is_empty(), "{what}: files written to the cwd: {cwd:?}");
        let names: Vec<String> = std::fs::read_dir(self.w.root.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["data".to_string()],
            "{what}: written next to the data dir"
        );
    }
}

/// The base configuration of each plugin (cniVersion 1.1.0, so that every verb passes its
/// version gate). The bridge name is fresh: a failed ADD that created it would show.
fn base(plugin: &str, data: &Path) -> Value {
    let ipam = json!({"type": "host-local", "dataDir": data,
        "ranges": [[{"subnet": "10.66.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]});
    match plugin {
        "bridge" => json!({"cniVersion": "1.1.0", "name": "hnet", "type": "bridge",
            "bridge": "hbr1", "isGateway": true, "ipMasq": true, "ipMasqBackend": "iptables",
            "ipam": ipam}),
        "host-local" => json!({"cniVersion": "1.1.0", "name": "hnet", "type": "bridge",
            "ipam": ipam}),
        "portmap" => json!({"cniVersion": "1.1.0", "name": "hnet", "type": "portmap",
            "backend": "iptables", "snat": true,
            "runtimeConfig": {"portMappings": [
                {"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]},
            "prevResult": {"cniVersion": "1.1.0",
                "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/x"}],
                "ips": [{"address": "10.66.0.5/24", "gateway": "10.66.0.1", "interface": 0}],
                "routes": [{"dst": "0.0.0.0/0"}]}}),
        "loopback" => json!({"cniVersion": "1.1.0", "name": "hnet", "type": "loopback"}),
        other => panic!("unknown plugin {other}"),
    }
}

/// Sets `value` at a path like `ipam.ranges[0][0].subnet`, creating objects and arrays on
/// the way.
fn set_path(doc: &mut Value, path: &str, value: Value) {
    let mut segs: Vec<Result<String, usize>> = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            segs.push(Ok(key.to_string()));
        }
        if !rest.is_empty() {
            for idx in format!("[{rest}").split('[').filter(|s| !s.is_empty()) {
                segs.push(Err(idx.trim_end_matches(']').parse().unwrap()));
            }
        }
    }
    let mut cur = doc;
    let n = segs.len();
    for (i, seg) in segs.into_iter().enumerate() {
        let last = i + 1 == n;
        match seg {
            Ok(key) => {
                if !cur.is_object() {
                    *cur = json!({});
                }
                let obj = cur.as_object_mut().unwrap();
                if last {
                    obj.insert(key, value);
                    return;
                }
                cur = obj.entry(key).or_insert(Value::Null);
            }
            Err(idx) => {
                if !cur.is_array() {
                    *cur = json!([]);
                }
                let arr = cur.as_array_mut().unwrap();
                while arr.len() <= idx {
                    arr.push(json!({}));
                }
                if last {
                    arr[idx] = value;
                    return;
                }
                cur = &mut arr[idx];
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Str,
    Bool,
    Int,
    Arr,
    Obj,
}

/// JSON values of every other type.
fn wrong_values(kind: Kind) -> Vec<Value> {
    match kind {
        Kind::Str => vec![json!(1), json!(true), json!([]), json!({})],
        Kind::Bool => vec![json!("true"), json!(1), json!([]), json!({})],
        Kind::Int => vec![json!("1"), json!(true), json!(1.5), json!([]), json!({})],
        Kind::Arr => vec![json!("x"), json!(1), json!(true), json!({})],
        Kind::Obj => vec![json!("x"), json!(1), json!(true), json!([])],
    }
}

/// Keys every plugin shares, decoded by skel: a wrong type is code 6 (as in the reference).
const COMMON: &[(&str, Kind)] = &[
    ("cniVersion", Kind::Str),
    ("name", Kind::Str),
    ("type", Kind::Str),
    ("capabilities", Kind::Obj),
    ("capabilities.portMappings", Kind::Bool),
    ("ipam", Kind::Obj),
    ("ipam.type", Kind::Str),
    ("dns", Kind::Obj),
    ("dns.nameservers", Kind::Arr),
    ("dns.domain", Kind::Str),
    ("dns.search", Kind::Arr),
    ("dns.options", Kind::Arr),
    ("prevResult", Kind::Obj),
];

const BRIDGE: &[(&str, Kind)] = &[
    ("bridge", Kind::Str),
    ("isGateway", Kind::Bool),
    ("isDefaultGateway", Kind::Bool),
    ("forceAddress", Kind::Bool),
    ("ipMasq", Kind::Bool),
    ("ipMasqBackend", Kind::Str),
    ("mtu", Kind::Int),
    ("hairpinMode", Kind::Bool),
    ("promiscMode", Kind::Bool),
    ("vlan", Kind::Int),
    ("vlanTrunk", Kind::Arr),
    ("vlanTrunk[0]", Kind::Obj),
    ("vlanTrunk[0].minID", Kind::Int),
    ("vlanTrunk[0].maxID", Kind::Int),
    ("vlanTrunk[0].id", Kind::Int),
    ("preserveDefaultVlan", Kind::Bool),
    ("macspoofchk", Kind::Bool),
    ("enabledad", Kind::Bool),
    ("disableContainerInterface", Kind::Bool),
    ("portIsolation", Kind::Bool),
    ("args", Kind::Obj),
    ("args.cni", Kind::Obj),
    ("args.cni.mac", Kind::Str),
    ("runtimeConfig", Kind::Obj),
    ("runtimeConfig.mac", Kind::Str),
];

const HOST_LOCAL: &[(&str, Kind)] = &[
    ("ipam.subnet", Kind::Str),
    ("ipam.rangeStart", Kind::Str),
    ("ipam.rangeEnd", Kind::Str),
    ("ipam.gateway", Kind::Str),
    ("ipam.routes", Kind::Arr),
    ("ipam.routes[0]", Kind::Obj),
    ("ipam.routes[0].dst", Kind::Str),
    ("ipam.routes[0].gw", Kind::Str),
    ("ipam.routes[0].mtu", Kind::Int),
    ("ipam.routes[0].advmss", Kind::Int),
    ("ipam.routes[0].priority", Kind::Int),
    ("ipam.routes[0].table", Kind::Int),
    ("ipam.routes[0].scope", Kind::Int),
    ("ipam.dataDir", Kind::Str),
    ("ipam.resolvConf", Kind::Str),
    ("ipam.ranges", Kind::Arr),
    ("ipam.ranges[0]", Kind::Arr),
    ("ipam.ranges[0][0]", Kind::Obj),
    ("ipam.ranges[0][0].subnet", Kind::Str),
    ("ipam.ranges[0][0].rangeStart", Kind::Str),
    ("ipam.ranges[0][0].rangeEnd", Kind::Str),
    ("ipam.ranges[0][0].gateway", Kind::Str),
    ("runtimeConfig", Kind::Obj),
    ("runtimeConfig.ipRanges", Kind::Arr),
    ("runtimeConfig.ipRanges[0]", Kind::Arr),
    ("runtimeConfig.ipRanges[0][0]", Kind::Obj),
    ("runtimeConfig.ipRanges[0][0].subnet", Kind::Str),
    ("runtimeConfig.ips", Kind::Arr),
    ("runtimeConfig.ips[0]", Kind::Str),
    ("args", Kind::Obj),
    ("args.cni", Kind::Obj),
    ("args.cni.ips", Kind::Arr),
    ("args.cni.ips[0]", Kind::Str),
];

const PORTMAP: &[(&str, Kind)] = &[
    ("backend", Kind::Str),
    ("snat", Kind::Bool),
    ("masqAll", Kind::Bool),
    ("markMasqBit", Kind::Int),
    ("externalSetMarkChain", Kind::Str),
    ("conditionsV4", Kind::Arr),
    ("conditionsV4[0]", Kind::Str),
    ("conditionsV6", Kind::Arr),
    ("conditionsV6[0]", Kind::Str),
    ("runtimeConfig", Kind::Obj),
    ("runtimeConfig.portMappings", Kind::Arr),
    ("runtimeConfig.portMappings[0]", Kind::Obj),
    ("runtimeConfig.portMappings[0].hostPort", Kind::Int),
    ("runtimeConfig.portMappings[0].containerPort", Kind::Int),
    ("runtimeConfig.portMappings[0].protocol", Kind::Str),
    ("runtimeConfig.portMappings[0].hostIP", Kind::Str),
];

/// `prevResult` fields: parsed by the verbs that use a previous result.
const PREV_RESULT: &[(&str, Kind)] = &[
    ("prevResult.cniVersion", Kind::Str),
    ("prevResult.interfaces", Kind::Arr),
    ("prevResult.interfaces[0]", Kind::Obj),
    ("prevResult.interfaces[0].name", Kind::Str),
    ("prevResult.interfaces[0].mac", Kind::Str),
    ("prevResult.interfaces[0].sandbox", Kind::Str),
    ("prevResult.ips", Kind::Arr),
    ("prevResult.ips[0]", Kind::Obj),
    ("prevResult.ips[0].address", Kind::Str),
    ("prevResult.ips[0].gateway", Kind::Str),
    ("prevResult.ips[0].interface", Kind::Int),
    ("prevResult.routes", Kind::Arr),
    ("prevResult.routes[0].dst", Kind::Str),
];

/// Every key name of `known` appears as a segment of some path of `table`: a field added to
/// a plugin without a row here fails this test.
fn assert_covers(known: &[&str], tables: &[&[(&str, Kind)]], plugin: &str) {
    let segments: Vec<String> = tables
        .iter()
        .flat_map(|t| t.iter())
        .flat_map(|(p, _)| {
            p.split(['.', '['])
                .map(|s| s.trim_end_matches(']').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let paths: Vec<&str> = tables
        .iter()
        .flat_map(|t| t.iter())
        .map(|(p, _)| *p)
        .collect();
    for k in known {
        assert!(
            segments.iter().any(|s| s == k) || paths.iter().any(|p| p.starts_with(k)),
            "{plugin}: key {k:?} has no wrong-type row"
        );
    }
}

/// A field table, the code a wrong type gets, and the verbs that read the fields.
type Group<'a> = (&'a [(&'a str, Kind)], u64, &'a [&'a str]);

fn leaf(path: &str) -> &str {
    path.rsplit(['.', '['])
        .next()
        .unwrap_or(path)
        .trim_end_matches(']')
}

/// Runs the wrong-type matrix for one plugin: every field × every wrong JSON type × every verb
/// that reads the field.
fn wrong_types(plugin: &'static str, label: &str) {
    let t = Target::new(label);
    let data = t.w.data();
    let before = t.snapshot();
    let start = Instant::now();
    let mut calls = 0;
    let mut groups: Vec<Group> = vec![(COMMON, 6, &VERBS)];
    match plugin {
        "bridge" => {
            groups.push((BRIDGE, 7, &VERBS));
            // bridge delegates the ipam object: host-local's code 7 passes through, and the
            // ADD that created the bridge and the veth before delegating undoes both. (CHECK,
            // GC and STATUS delegate the same way; host-local's own run covers them.)
            groups.push((HOST_LOCAL, 7, &["ADD", "DEL"]));
            groups.push((PREV_RESULT, 7, &["CHECK"]));
        }
        "host-local" => {
            groups.push((HOST_LOCAL, 7, &VERBS));
            groups.push((PREV_RESULT, 7, &["CHECK"]));
        }
        "portmap" => {
            groups.push((PORTMAP, 7, &VERBS));
            groups.push((PREV_RESULT, 7, &["ADD", "CHECK"]));
        }
        "loopback" => groups.push((PREV_RESULT, 7, &["ADD"])),
        _ => unreachable!(),
    }
    for (table, code, required) in groups {
        for (path, kind) in table {
            for bad in wrong_values(*kind) {
                let mut conf = base(plugin, &data);
                set_path(&mut conf, path, bad.clone());
                let stdin = conf.to_string();
                // Only the verbs that read the field (prevResult: the verbs that use one);
                // every one of them must refuse the value.
                for verb in required.iter().copied() {
                    let expect = err(code, &[leaf(path)]);
                    t.expect(
                        plugin,
                        verb,
                        &[],
                        stdin.as_bytes(),
                        &expect,
                        &format!("{path} = {bad}"),
                    );
                    calls += 1;
                }
            }
            assert_same(
                &before,
                &t.snapshot(),
                &format!("{plugin}: wrong types of {path}"),
            );
        }
    }
    t.assert_nothing_outside(plugin);
    eprintln!(
        "{plugin}: {calls} wrong-type calls in {:.1}s",
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn field_tables_cover_every_plugin_key() {
    assert_covers(bridge::config::KNOWN_KEYS, &[COMMON, BRIDGE], "bridge");
    assert_covers(portmap::config::KNOWN_KEYS, &[PORTMAP], "portmap");
    assert_covers(
        host_local::config::KNOWN_KEYS,
        &[COMMON, HOST_LOCAL],
        "host-local",
    );
    assert_covers(
        cni::config::COMMON_KEYS,
        &[COMMON, BRIDGE, HOST_LOCAL, PREV_RESULT, GC_KEYS],
        "skel",
    );
}

/// Keys of the protocol that are not plugin fields, listed for the coverage check: the GC
/// lists (their wrong shapes are exercised in `hostile_environment`) and `cniVersions`, which
/// only runtimes read.
const GC_KEYS: &[(&str, Kind)] = &[
    ("cni.dev/valid-attachments[0].containerID", Kind::Str),
    ("cni.dev/attachments[0].ifname", Kind::Str),
    ("cniVersions", Kind::Arr),
];

#[test]
fn wrong_types_bridge() {
    require_root!();
    wrong_types("bridge", "hwtb");
}

#[test]
fn wrong_types_host_local() {
    require_root!();
    wrong_types("host-local", "hwth");
}

#[test]
fn wrong_types_portmap() {
    require_root!();
    wrong_types("portmap", "hwtp");
}

#[test]
fn wrong_types_loopback() {
    require_root!();
    wrong_types("loopback", "hwtl");
}

/// The base configurations work: every failure above is caused by its mutation.
#[test]
fn base_configs_work() {
    require_root!();
    let t = Target::new("hbase");
    let data = t.w.data();
    for plugin in PLUGINS {
        let conf = base(plugin, &data).to_string();
        let add = t.expect(plugin, "ADD", &[], conf.as_bytes(), &Expect::Ok, "base");
        let mut chk = base(plugin, &data);
        if plugin != "portmap" {
            chk["prevResult"] = serde_json::from_str(&add.stdout).unwrap();
        }
        t.expect(
            plugin,
            "CHECK",
            &[],
            chk.to_string().as_bytes(),
            &Expect::Ok,
            "base",
        );
        for verb in ["DEL", "DEL", "GC", "STATUS"] {
            t.expect(plugin, verb, &[], conf.as_bytes(), &Expect::Ok, "base");
        }
    }
}

/// Truncated JSON at every structural point, garbage, empty input, non-objects: code 6 for
/// every plugin and verb, and nothing changes.
#[test]
fn truncated_and_malformed_json() {
    require_root!();
    let t = Target::new("htrunc");
    let data = t.w.data();
    let before = t.snapshot();
    let mut calls = 0;
    for plugin in PLUGINS {
        let full = base(plugin, &data).to_string();
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        // Cut after every structural character, plus a few fixed points.
        let cuts: Vec<usize> = full
            .char_indices()
            .filter(|(_, c)| matches!(c, '{' | '[' | ':' | ',' | '"'))
            .map(|(i, _)| i + 1)
            .step_by(3)
            .chain([0, 1, full.len() / 2, full.len() - 1])
            .collect();
        for c in cuts {
            inputs.push(full.as_bytes()[..c].to_vec());
        }
        inputs.extend([
            b"null".to_vec(),
            b"[]".to_vec(),
            b"\"string\"".to_vec(),
            b"42".to_vec(),
            b"{\"name\": \"hnet\"} trailing".to_vec(),
            b"\xff\xfe{}".to_vec(),
            format!("{full}\0").into_bytes(),
        ]);
        for input in &inputs {
            for verb in VERBS {
                t.expect(
                    plugin,
                    verb,
                    &[],
                    input,
                    &err(6, &["error unmarshall network config"]),
                    &format!("input {:?}", String::from_utf8_lossy(input)),
                );
                calls += 1;
            }
        }
    }
    assert_same(&before, &t.snapshot(), "truncated JSON");
    t.assert_nothing_outside("truncated JSON");
    eprintln!("{calls} truncated/malformed calls");
}

/// 50 MB documents: nested too deep, a 50 MB field value, 50 MB of whitespace, and a document
/// over the 64 MiB stdin limit; each plugin answers within seconds under a 1 GiB address-space
/// limit (`ulimit -v`), with the right error, and nothing changes.
#[test]
fn huge_json_neither_hangs_nor_exhausts_memory() {
    require_root!();
    let t = Target::new("hhuge");
    let data = t.w.data();
    let before = t.snapshot();
    const MB: usize = 1024 * 1024;
    // `base` with keys appended (a later duplicate key wins, as in Go).
    let with = |plugin: &str, extra: &str| -> Vec<u8> {
        let s = base(plugin, &data).to_string();
        format!("{},{extra}}}", &s[..s.len() - 1]).into_bytes()
    };
    let deep = vec![b'['; 50 * MB];
    let mut blank = vec![b' '; 50 * MB];
    blank.push(b'{');
    for plugin in PLUGINS {
        let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
            ("50 MB of '['", deep.clone(), err(6, &["recursion limit"])),
            (
                "50 MB of whitespace",
                blank.clone(),
                err(6, &["error unmarshall network config"]),
            ),
            (
                "a 50 MB network name",
                with(plugin, &format!("\"name\":\"{}\"", "a".repeat(50 * MB))),
                err(7, &["network name is too long"]),
            ),
            (
                "a 50 MB unknown key with an unsupported version",
                with(
                    plugin,
                    &format!(
                        "\"cniVersion\":\"9.9.9\",\"junk\":\"{}\"",
                        "x".repeat(50 * MB)
                    ),
                ),
                err(1, &["9.9.9"]),
            ),
            (
                "70 MB of input",
                with(plugin, &format!("\"junk\":\"{}\"", "x".repeat(70 * MB))),
                err(6, &["64 MiB"]),
            ),
        ];
        let verbs: &[&str] = if plugin == "bridge" {
            &["ADD", "DEL"]
        } else {
            &["ADD"]
        };
        for (what, input, expect) in &cases {
            for verb in verbs {
                let opts = RunOpts {
                    deadline: Duration::from_secs(60),
                    mem_kib: Some(1024 * 1024),
                    cwd: Some(t.cwd.path().to_path_buf()),
                };
                let env = verb_env(verb, "hc1", &t.ctr_path, "eth0", &t.cni_path);
                let bin = t.w.bin.path().join(plugin);
                let b = run_bounded(Some(&t.ns), &bin, &env, input, &opts);
                assert!(!b.timed_out, "{plugin} {verb} {what}: hung");
                check_output(&b.out, expect, &format!("{plugin} {verb} {what}"));
                assert!(
                    b.elapsed < Duration::from_secs(20),
                    "{plugin} {verb} {what}: took {:?}",
                    b.elapsed
                );
                eprintln!("{plugin} {verb} {what}: {:?}", b.elapsed);
            }
        }
    }
    assert_same(&before, &t.snapshot(), "huge JSON");
    t.assert_nothing_outside("huge JSON");
}

/// Unknown, malformed and too-old versions: code 1 (incompatible) or 6 (unparsable, for the
/// verbs whose gate compares versions), naming the version.
#[test]
fn unknown_versions() {
    require_root!();
    let t = Target::new("hver");
    let data = t.w.data();
    let before = t.snapshot();
    for plugin in PLUGINS {
        for v in [
            "9.9.9",
            "1.2.0",
            "0.5.0",
            "2.0.0",
            "abc",
            "1",
            "1.0",
            "v1.0.0",
            " 1.0.0",
            "1.0.0-rc1",
            "01.0.0",
            "1.0.0.0",
        ] {
            let mut c = base(plugin, &data);
            c["cniVersion"] = json!(v);
            let stdin = c.to_string();
            for verb in VERBS {
                // ADD and DEL: an exact-match gate (1). CHECK/GC/STATUS compare first: an
                // unparsable version is 6; a parsable unsupported one passes the comparison
                // and fails the exact match (1).
                let expect = Expect::AnyOf(vec![1, 6], vec![v.to_string()]);
                t.expect(
                    plugin,
                    verb,
                    &[],
                    stdin.as_bytes(),
                    &expect,
                    &format!("cniVersion {v:?}"),
                );
            }
        }
        // Too old for the verb.
        for (v, verb) in [
            ("0.3.1", "CHECK"),
            ("1.0.0", "GC"),
            ("1.0.0", "STATUS"),
            ("", "CHECK"),
        ] {
            let mut c = base(plugin, &data);
            c["cniVersion"] = json!(v);
            t.expect(
                plugin,
                verb,
                &[],
                c.to_string().as_bytes(),
                &err(1, &["does not allow"]),
                &format!("cniVersion {v:?}"),
            );
        }
    }
    assert_same(&before, &t.snapshot(), "unknown versions");
    t.assert_nothing_outside("unknown versions");
}

/// Invalid CIDRs, IPs, MACs, ports and protocols, through every plugin that reads them, on
/// every verb that parses them: code 7 naming the field (4 for `CNI_ARGS`).
#[test]
fn invalid_addresses_ports_and_protocols() {
    require_root!();
    let t = Target::new("haddr");
    let data = t.w.data();
    let before = t.snapshot();
    // host-local's fields, given directly and through bridge.
    let ipam_cases: &[(&str, Value, &str)] = &[
        ("ipam.ranges[0][0].subnet", json!("10.0.0.0/33"), "subnet"),
        ("ipam.ranges[0][0].subnet", json!("banana"), "subnet"),
        ("ipam.ranges[0][0].subnet", json!("10.0.0.1/24"), "subnet"),
        ("ipam.ranges[0][0].subnet", json!("10.0.0.0/31"), "subnet"),
        ("ipam.ranges[0][0].subnet", json!("::/130"), "subnet"),
        ("ipam.ranges[0][0].subnet", json!("10.0.0.0/24\n"), "subnet"),
        ("ipam.ranges[0][0].subnet", json!(""), "subnet"),
        (
            "ipam.ranges[0][0].rangeStart",
            json!("10.9.9.9"),
            "rangeStart",
        ),
        (
            "ipam.ranges[0][0].rangeStart",
            json!("10.66.0.x"),
            "rangeStart",
        ),
        ("ipam.ranges[0][0].rangeEnd", json!("300.1.1.1"), "rangeEnd"),
        ("ipam.ranges[0][0].gateway", json!("10.66.0.256"), "gateway"),
        ("ipam.ranges[1][0].subnet", json!("10.66.0.0/25"), "overlap"),
        ("ipam.subnet", json!("10.0.0.0/99"), "subnet"),
        ("ipam.routes[0].dst", json!("10.0.0.0/99"), "dst"),
        ("ipam.routes[0].dst", json!("not-a-cidr"), "dst"),
        ("ipam.routes[0].gw", json!("1.2.3"), "gw"),
        ("runtimeConfig.ips", json!(["10.66.0.999"]), "10.66.0.999"),
        (
            "runtimeConfig.ipRanges",
            json!([[{"subnet": "x"}]]),
            "subnet",
        ),
        ("args.cni.ips", json!(["::g"]), "::g"),
    ];
    for (plugin, prefix) in [("host-local", ""), ("bridge", "")] {
        for (path, v, mention) in ipam_cases {
            let mut c = base(plugin, &data);
            set_path(&mut c, &format!("{prefix}{path}"), v.clone());
            for verb in VERBS {
                t.expect(
                    plugin,
                    verb,
                    &[],
                    c.to_string().as_bytes(),
                    &err(7, &[mention]),
                    &format!("{path} = {v}"),
                );
            }
        }
        // CNI_ARGS IP= is part of the environment: code 4.
        for ip in ["10.66.0.300", "x", "10.66.0.2/99"] {
            let args = format!("IP={ip}");
            for verb in ["ADD", "CHECK", "DEL"] {
                t.expect(
                    plugin,
                    verb,
                    &[("CNI_ARGS", &args)],
                    base(plugin, &data).to_string().as_bytes(),
                    &err(4, &["CNI_ARGS", ip]),
                    &args,
                );
            }
        }
    }
    // bridge: MACs from all three sources, VLANs, MTU, bridge names the kernel refuses.
    let bridge_cases: &[(&str, Value, &str)] = &[
        ("runtimeConfig.mac", json!("zz:zz"), "runtimeConfig.mac"),
        ("args.cni.mac", json!("01:02:03:04:05"), "args.cni.mac"),
        ("vlan", json!(4095), "vlan"),
        ("vlan", json!(-1), "vlan"),
        ("mtu", json!(70000), "mtu"),
        ("mtu", json!(-1), "mtu"),
        ("vlanTrunk", json!([{"minID": 5, "maxID": 2}]), "vlanTrunk"),
        ("bridge", json!("a-bridge-name-too-long"), "bridge"),
        ("bridge", json!(".."), "bridge"),
        ("bridge", json!("."), "bridge"),
        ("bridge", json!("br/0"), "bridge"),
        ("bridge", json!("br\t0"), "bridge"),
        ("bridge", json!("br\n0"), "bridge"),
        ("bridge", json!("br 0"), "bridge"),
        ("ipMasqBackend", json!("pf"), "ipMasqBackend"),
    ];
    for (path, v, mention) in bridge_cases {
        let mut c = base("bridge", &data);
        set_path(&mut c, path, v.clone());
        // ipMasqBackend is read only where masquerading happens (ADD, CHECK, STATUS), as in
        // the reference: DEL and GC must not fail on it.
        let verbs: &[&str] = if *path == "ipMasqBackend" {
            &["ADD", "CHECK", "STATUS"]
        } else {
            &VERBS
        };
        for verb in verbs {
            t.expect(
                "bridge",
                verb,
                &[],
                c.to_string().as_bytes(),
                &err(7, &[mention]),
                &format!("{path} = {v}"),
            );
        }
    }
    for mac in ["zz", "02:00:00:00:00", "02:00:00:00:00:00:00"] {
        let args = format!("MAC={mac}");
        for verb in ["ADD", "CHECK", "DEL"] {
            t.expect(
                "bridge",
                verb,
                &[("CNI_ARGS", &args)],
                base("bridge", &data).to_string().as_bytes(),
                &err(4, &["CNI_ARGS", mac]),
                &args,
            );
        }
    }
    // portmap: ports, protocols, host IPs, mark bits, backends, conditions.
    let pm = "runtimeConfig.portMappings[0]";
    let portmap_cases: Vec<(String, Value, &str)> = vec![
        (format!("{pm}.hostPort"), json!(0), "hostPort"),
        (format!("{pm}.hostPort"), json!(-1), "hostPort"),
        (format!("{pm}.hostPort"), json!(65536), "hostPort"),
        (
            format!("{pm}.hostPort"),
            json!(4_294_967_377_i64),
            "hostPort",
        ),
        (format!("{pm}.hostPort"), json!(1e30), "hostPort"),
        (format!("{pm}.containerPort"), json!(0), "containerPort"),
        (format!("{pm}.containerPort"), json!(65536), "containerPort"),
        (
            format!("{pm}.containerPort"),
            json!(100_000),
            "containerPort",
        ),
        (format!("{pm}.protocol"), json!("icmp"), "protocol"),
        (format!("{pm}.protocol"), json!("tcp;udp"), "protocol"),
        (format!("{pm}.protocol"), json!("tcp\n"), "protocol"),
        (format!("{pm}.protocol"), json!("-j ACCEPT"), "protocol"),
        (format!("{pm}.protocol"), json!("all"), "protocol"),
        (format!("{pm}.protocol"), json!("6"), "protocol"),
        (format!("{pm}.hostIP"), json!("1.2.3"), "hostIP"),
        (format!("{pm}.hostIP"), json!("10.0.0.1/24"), "hostIP"),
        (format!("{pm}.hostIP"), json!("::g"), "hostIP"),
        (format!("{pm}.hostIP"), json!("1.2.3.4 -j DROP"), "hostIP"),
        ("markMasqBit".into(), json!(32), "markMasqBit"),
        ("markMasqBit".into(), json!(-1), "markMasqBit"),
        ("backend".into(), json!("ebtables"), "backend"),
        (
            "conditionsV4".into(),
            json!(["-s", "10.0.0.0/8\n-A INPUT -j DROP"]),
            "conditionsV4",
        ),
        (
            "externalSetMarkChain".into(),
            json!("X\n-A INPUT -j DROP"),
            "externalSetMarkChain",
        ),
        (
            "externalSetMarkChain".into(),
            json!("MY CHAIN"),
            "externalSetMarkChain",
        ),
    ];
    for (path, v, mention) in &portmap_cases {
        let mut c = base("portmap", &data);
        if path == "externalSetMarkChain" {
            // (markMasqBit and externalSetMarkChain together are refused: keep it alone.)
            c.as_object_mut().unwrap().remove("markMasqBit");
        }
        set_path(&mut c, path, v.clone());
        for verb in ["ADD", "CHECK"] {
            t.expect(
                "portmap",
                verb,
                &[],
                c.to_string().as_bytes(),
                &err(7, &[mention]),
                &format!("{path} = {v}"),
            );
        }
        for verb in ["DEL", "GC", "STATUS"] {
            t.expect(
                "portmap",
                verb,
                &[],
                c.to_string().as_bytes(),
                &Expect::NoPanic,
                &format!("{path} = {v}"),
            );
        }
    }
    // nftables conditions are nft syntax: command separators are refused.
    for cond in [
        "ip saddr 10.0.0.0/8 ; flush ruleset",
        "ip saddr 1.1.1.1\nflush ruleset",
        "ip saddr 1.1.1.1 # x",
    ] {
        let mut c = base("portmap", &data);
        c["backend"] = json!("nftables");
        c["conditionsV4"] = json!([cond]);
        t.expect(
            "portmap",
            "ADD",
            &[],
            c.to_string().as_bytes(),
            &err(7, &["conditionsV4"]),
            &format!("nft condition {cond:?}"),
        );
    }
    // prevResult addresses (portmap and loopback consume them on ADD; CHECK everywhere).
    for (path, v) in [
        ("prevResult.ips[0].address", json!("10.66.0.300/24")),
        ("prevResult.ips[0].address", json!("10.66.0.5")),
        ("prevResult.ips[0].gateway", json!("x")),
        ("prevResult.routes[0].dst", json!("0.0.0.0/33")),
        ("prevResult.cniVersion", json!("7.7.7")),
    ] {
        for (plugin, verb) in [
            ("portmap", "ADD"),
            ("portmap", "CHECK"),
            ("loopback", "ADD"),
        ] {
            let mut c = base(plugin, &data);
            if plugin == "loopback" {
                c["prevResult"] = base("portmap", &data)["prevResult"].clone();
            }
            set_path(&mut c, path, v.clone());
            t.expect(
                plugin,
                verb,
                &[],
                c.to_string().as_bytes(),
                &err(7, &["prevResult"]),
                &format!("{path} = {v}"),
            );
        }
    }
    assert_same(&before, &t.snapshot(), "invalid addresses");
    t.assert_nothing_outside("invalid addresses");
}

/// Hostile `CNI_*` variables for every plugin and verb: interface names (too long, `/`, `:`,
/// whitespace, `.`/`..`), container IDs with shell and iptables metacharacters, unknown
/// commands, missing variables: code 4 naming the variable or the problem; no state; nothing
/// run (a marker that any shell expansion would create never appears).
#[test]
fn hostile_environment() {
    require_root!();
    let t = Target::new("henv");
    let data = t.w.data();
    let marker = TempDir::new("hmarker");
    let pwned = marker.path().join("pwned");
    let before = t.snapshot();
    let ifnames = [
        "abcdefghijklmnop",
        "eth0/../../x",
        "a/b",
        "/",
        ".",
        "..",
        "eth 0",
        "eth:0",
        "eth\t0",
        "eth\n0",
        "ééééééééé",
    ];
    let touch = format!("$(touch {})", pwned.display());
    let backticks = format!("`touch {}`", pwned.display());
    let ids: Vec<String> = vec![
        "a;rm -rf /".into(),
        touch,
        backticks,
        "a\" -j ACCEPT".into(),
        "a\n-A INPUT -j DROP".into(),
        "-j".into(),
        "--comment".into(),
        "a|b".into(),
        "a&b".into(),
        "*".into(),
        "a b".into(),
        "../../etc/passwd".into(),
        "a'b".into(),
        "a\\b".into(),
        "a$b".into(),
        "ä".into(),
        " a".into(),
        "a\u{7f}".into(),
    ];
    for plugin in PLUGINS {
        let stdin = base(plugin, &data).to_string();
        for verb in ["ADD", "CHECK", "DEL"] {
            for ifname in ifnames {
                t.expect(
                    plugin,
                    verb,
                    &[("CNI_IFNAME", ifname)],
                    stdin.as_bytes(),
                    &err(4, &["interface name"]),
                    &format!("ifname {ifname:?}"),
                );
            }
            for id in &ids {
                t.expect(
                    plugin,
                    verb,
                    &[("CNI_CONTAINERID", id)],
                    stdin.as_bytes(),
                    &err(4, &["containerID", id]),
                    &format!("container ID {id:?}"),
                );
            }
            for missing in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"] {
                t.expect(
                    plugin,
                    verb,
                    &[(missing, "")],
                    stdin.as_bytes(),
                    &err(4, &[missing]),
                    &format!("{missing} empty"),
                );
            }
        }
        for cmd in ["add", "ADD;DEL", "Version", "DELETE", "ADD\n"] {
            t.expect(
                plugin,
                cmd,
                &[],
                stdin.as_bytes(),
                &err(4, &["unknown CNI_COMMAND"]),
                &format!("CNI_COMMAND {cmd:?}"),
            );
        }
        // Hostile IDs inside a GC list are data, compared and never executed: GC succeeds.
        let mut gc = base(plugin, &data);
        let list: Vec<Value> = ids
            .iter()
            .map(|id| json!({"containerID": id, "ifname": "eth0/../x"}))
            .collect();
        gc["cni.dev/valid-attachments"] = json!(list);
        gc["cni.dev/attachments"] = json!(list);
        t.expect(
            plugin,
            "GC",
            &[],
            gc.to_string().as_bytes(),
            &Expect::Ok,
            "hostile GC list",
        );
        // A GC list of the wrong shape: 7 naming the key.
        gc["cni.dev/valid-attachments"] = json!([{"containerID": 5}]);
        t.expect(
            plugin,
            "GC",
            &[],
            gc.to_string().as_bytes(),
            &err(7, &["cni.dev/valid-attachments"]),
            "GC list of the wrong shape",
        );
    }
    assert!(!pwned.exists(), "a container ID was executed by a shell");
    assert_same(&before, &t.snapshot(), "hostile environment");
    t.assert_nothing_outside("hostile environment");

    // A valid but very long container ID (4 KiB; a rule comment holds at most 256 bytes):
    // whatever ADD makes of it is undone, or removed by DEL. (The network exists first.)
    for plugin in ["bridge", "portmap"] {
        let stdin = base(plugin, &data).to_string();
        for verb in ["ADD", "DEL"] {
            t.expect(plugin, verb, &[], stdin.as_bytes(), &Expect::Ok, "warm-up");
        }
    }
    let before = t.snapshot().without_cursors();
    let long = "a".repeat(4096);
    for plugin in ["bridge", "portmap", "host-local"] {
        let stdin = base(plugin, &data).to_string();
        let env = [("CNI_CONTAINERID", long.as_str())];
        let out = t.expect(
            plugin,
            "ADD",
            &env,
            stdin.as_bytes(),
            &Expect::NoPanic,
            "4 KiB container ID",
        );
        eprintln!(
            "4 KiB container ID: {plugin} ADD exit {} {}",
            out.status,
            out.error_msg()
        );
        t.expect(
            plugin,
            "DEL",
            &env,
            stdin.as_bytes(),
            &Expect::Ok,
            "4 KiB container ID",
        );
    }
    assert_same(
        &before,
        &t.snapshot().without_cursors(),
        "4 KiB container ID",
    );
}

/// Network names and IPAM types that try to leave their directory: refused (7) before
/// anything is created; nothing outside `CNI_PATH` is run (marker programs placed where each
/// path would lead never run); nothing is written outside the data dir.
#[test]
fn names_and_ipam_types_cannot_escape() {
    require_root!();
    let t = Target::new("hesc");
    let data = t.w.data();
    // Marker programs at every place a traversal could reach.
    let outside = TempDir::new("hevil");
    let ran = outside.path().join("ran");
    let body = format!("#!/bin/sh\necho \"$0\" >> {}\nexit 0\n", ran.display());
    let write_marker = |p: &Path| {
        std::fs::write(p, &body).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_marker(&outside.path().join("evil"));
    let bin_parent = t.w.bin.path().parent().unwrap().join("evil-hardening");
    write_marker(&bin_parent);
    let before = t.snapshot();
    for plugin in PLUGINS {
        for name in [
            "..", "../x", "a/b", "/etc", ".hidden", "-x", "a b", "a\nb", "", "ä", "a;b", "$(id)",
        ] {
            let mut c = base(plugin, &data);
            c["name"] = json!(name);
            for verb in VERBS {
                let mention = if name.is_empty() {
                    "missing network name"
                } else {
                    "network name"
                };
                t.expect(
                    plugin,
                    verb,
                    &[],
                    c.to_string().as_bytes(),
                    &err(7, &[mention]),
                    &format!("name {name:?}"),
                );
            }
        }
    }
    let evil_abs = outside.path().join("evil").display().to_string();
    let rel = format!("../{}", bin_parent.file_name().unwrap().to_string_lossy());
    let deep = format!(
        "../../../../../../..{}",
        outside.path().join("evil").display()
    );
    for ty in [
        evil_abs.as_str(),
        rel.as_str(),
        deep.as_str(),
        "..",
        ".",
        "host-local/../host-local",
        "./host-local",
        "/bin/sh",
    ] {
        let mut c = base("bridge", &data);
        c["ipam"]["type"] = json!(ty);
        for verb in VERBS {
            t.expect(
                "bridge",
                verb,
                &[],
                c.to_string().as_bytes(),
                &err(7, &["ipam.type", "CNI_PATH"]),
                &format!("ipam type {ty:?}"),
            );
        }
    }
    // A plain name that exists on PATH but not in CNI_PATH is not found (and not run).
    for ty in ["sh", "true", "evil"] {
        let mut c = base("bridge", &data);
        c["ipam"]["type"] = json!(ty);
        for verb in VERBS {
            t.expect(
                "bridge",
                verb,
                &[(
                    "PATH",
                    &format!("{}:/usr/bin:/bin", outside.path().display()),
                )],
                c.to_string().as_bytes(),
                &Expect::AnyOf(
                    vec![7, 999],
                    vec![format!("failed to find plugin \"{ty}\"")],
                ),
                &format!("ipam type {ty:?}"),
            );
        }
    }
    assert!(
        !ran.exists(),
        "a program outside CNI_PATH was run: {}",
        std::fs::read_to_string(&ran).unwrap_or_default()
    );
    assert_same(&before, &t.snapshot(), "escaping names");
    t.assert_nothing_outside("escaping names");
    // The IPAM plugin is found in CNI_PATH only (control: the same config with the real
    // type works, so the refusals above are about the type).
    let c = base("bridge", &data);
    t.expect(
        "bridge",
        "ADD",
        &[],
        c.to_string().as_bytes(),
        &Expect::Ok,
        "control",
    );
    t.expect(
        "bridge",
        "DEL",
        &[],
        c.to_string().as_bytes(),
        &Expect::Ok,
        "control",
    );
    t.assert_nothing_outside("control");
}

/// A `dataDir` that is a regular file (or under one), and a `resolvConf` that is a device, a
/// directory or a FIFO: a clear error naming the field, no hang, nothing written.
#[test]
fn data_dir_and_resolv_conf_not_what_they_claim() {
    require_root!();
    let t = Target::new("hdd");
    let data = t.w.data();
    let files = TempDir::new("hddfiles");
    let regular = files.path().join("regular");
    std::fs::write(&regular, "i am a file").unwrap();
    let under = regular.join("sub");
    let fifo = files.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let before = t.snapshot();
    let files_before = tree(files.path());
    for plugin in ["host-local", "bridge"] {
        for dd in [&regular, &under] {
            let mut c = base(plugin, &data);
            c["ipam"]["dataDir"] = json!(dd);
            // (GC without a list has nothing to do: give it one, so that it uses the dir.)
            c["cni.dev/valid-attachments"] = json!([]);
            for verb in VERBS {
                let expect = if verb == "STATUS" {
                    Expect::AnyOf(vec![7, 50], vec!["dataDir".into()])
                } else {
                    err(7, &["dataDir"])
                };
                t.expect(
                    plugin,
                    verb,
                    &[],
                    c.to_string().as_bytes(),
                    &expect,
                    &format!("dataDir {dd:?}"),
                );
            }
        }
        for rc in [
            Path::new("/dev/zero"),
            Path::new("/dev/urandom"),
            files.path(),
            fifo.as_path(),
        ] {
            let mut c = base(plugin, &data);
            c["ipam"]["resolvConf"] = json!(rc);
            t.expect(
                plugin,
                "ADD",
                &[],
                c.to_string().as_bytes(),
                &err(7, &["resolvConf"]),
                &format!("resolvConf {rc:?}"),
            );
        }
    }
    assert_eq!(
        tree(files.path()),
        files_before,
        "the regular file was changed"
    );
    assert_same(&before, &t.snapshot(), "dataDir/resolvConf");
    t.assert_nothing_outside("dataDir/resolvConf");
}

/// Unmounts a bind mount on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A `CNI_NETNS` that is not a network namespace: a regular file, a directory, a device,
/// `/proc/self/ns/mnt`, a bind mount of a UTS namespace, a missing path. ADD and CHECK of the
/// plugins that open the sandbox fail with code 4 naming `CNI_NETNS`; DEL succeeds (the
/// sandbox is gone as far as DEL is concerned) and cleans up; nothing is left.
#[test]
fn netns_not_what_it_claims() {
    require_root!();
    let t = Target::new("hns");
    let data = t.w.data();
    let files = TempDir::new("hnsfiles");
    let regular = files.path().join("regular");
    std::fs::write(&regular, "").unwrap();
    let uts = files.path().join("uts");
    std::fs::write(&uts, "").unwrap();
    assert!(
        std::process::Command::new("mount")
            .args(["--bind", "/proc/self/ns/uts"])
            .arg(&uts)
            .status()
            .unwrap()
            .success()
    );
    let _guard = Mount(uts.clone());
    let before = t.snapshot();
    let cases: Vec<String> = vec![
        regular.display().to_string(),
        files.path().display().to_string(),
        "/dev/null".into(),
        "/proc/self/ns/mnt".into(),
        "/proc/self/ns/uts".into(),
        uts.display().to_string(),
        files.path().join("missing").display().to_string(),
    ];
    for plugin in ["bridge", "loopback"] {
        let stdin = base(plugin, &data).to_string();
        for ns in &cases {
            for verb in ["ADD", "CHECK"] {
                let mut c: Value = serde_json::from_str(&stdin).unwrap();
                if verb == "CHECK" {
                    c["prevResult"] = json!({"cniVersion": "1.1.0",
                        "interfaces": [{"name": "eth0", "sandbox": ns}],
                        "ips": [{"address": "10.66.0.5/24", "interface": 0}]});
                }
                t.expect(
                    plugin,
                    verb,
                    &[("CNI_NETNS", ns)],
                    c.to_string().as_bytes(),
                    &err(4, &["CNI_NETNS", ns]),
                    &format!("CNI_NETNS {ns:?}"),
                );
            }
            t.expect(
                plugin,
                "DEL",
                &[("CNI_NETNS", ns)],
                stdin.as_bytes(),
                &Expect::Ok,
                &format!("CNI_NETNS {ns:?}"),
            );
        }
    }
    assert_same(&before, &t.snapshot(), "netns");
    t.assert_nothing_outside("netns");
    drop(t.ctr);
}
