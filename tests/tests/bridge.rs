//! End-to-end tests of the `bridge` plugin: every configuration field, dual stack,
//! connectivity (container ↔ container, container → gateway, masqueraded traffic to another
//! host), CHECK after each kind of tampering, DEL in every degraded case, concurrent first
//! ADDs, rollback of failed ADDs, GC and STATUS. Each test runs the real binaries inside its
//! own node namespace, with one namespace per container.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bridge_support;

use bridge_support::*;
use cni_kernel::firewall::names;
use cni_testkit::{
    Attachment, IPTABLES_TOOLS, LoggingTools, Netns, PluginOutput, TempDir, require_root,
    run_plugin,
};
use serde_json::{Value, json};

fn add_ok(rt: &cni_testkit::Runtime, att: &Attachment) -> Value {
    rt.add(att).unwrap_or_else(|e| panic!("ADD failed: {e}"))
}

fn err_of(r: Result<(), PluginOutput>) -> PluginOutput {
    match r {
        Ok(()) => panic!("expected a failure"),
        Err(e) => e,
    }
}

#[test]
fn dual_stack_add_check_del() {
    require_root!();
    let w = World::new("bds");
    let rt = w.runtime(w.conf(json!({})));
    let c = w.node.container("bdsc");
    let att = Attachment::new("abc123", &c.path());
    let r = add_ok(&rt, &att);

    // The result: bridge, host veth, container interface; every IP points at index 2.
    let ifs = r["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3, "{r}");
    assert_eq!(ifs[0]["name"], "cni0");
    assert!(ifs[0].get("sandbox").is_none());
    let hv = ifs[1]["name"].as_str().unwrap().to_string();
    assert!(hv.starts_with("veth") && hv.len() == 12, "{hv}");
    assert!(
        hv[4..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], c.path().display().to_string());
    let ips = r["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2);
    assert!(ips.iter().all(|i| i["interface"] == 2));
    assert!(ips[0]["address"].as_str().unwrap().starts_with("10.88.0."));
    assert_eq!(ips[0]["gateway"], "10.88.0.1");
    assert!(
        ips[1]["address"]
            .as_str()
            .unwrap()
            .starts_with("2001:db8:1::")
    );
    assert!(ips[1]["address"].as_str().unwrap().ends_with("/64"));
    assert_eq!(ips[1]["gateway"], "2001:db8:1::1");
    assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0"}]));
    assert!(r.get("dns").is_none(), "1.x omits an empty dns");

    // The MACs in the result are the current ones.
    let mac_of = |ns: &Netns, dev: &str| {
        ns.ip(&["-o", "link", "show", "dev", dev])
            .split("link/ether ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(ifs[0]["mac"], mac_of(&w.node, "cni0"));
    assert_eq!(ifs[1]["mac"], mac_of(&w.node, &hv));
    assert_eq!(ifs[2]["mac"], mac_of(&c, "eth0"));

    // The sandbox: both addresses, the default route via the gateway, sysctls.
    let a = addrs(&c, "eth0");
    assert!(
        a.iter()
            .any(|x| x.starts_with("10.88.0.") && x.ends_with("/16")),
        "{a:?}"
    );
    assert!(a.iter().any(|x| x.starts_with("2001:db8:1::")), "{a:?}");
    assert!(c.ip(&["route"]).contains("default via 10.88.0.1 dev eth0"));
    assert_eq!(sysctl(&c, "net/ipv6/conf/eth0/accept_dad"), "0");
    assert_eq!(sysctl(&c, "net/ipv4/conf/eth0/arp_notify"), "1");
    assert_eq!(sysctl(&c, "net/ipv6/conf/eth0/keep_addr_on_down"), "1");
    assert_eq!(sysctl(&c, "net/ipv6/conf/eth0/accept_ra"), "0");
    assert!(!c.ip(&["-6", "addr"]).contains("tentative"));

    // The node: gateway addresses on the bridge, the veth on it, forwarding, no eth0.
    let br = addrs(&w.node, "cni0");
    assert!(br.contains(&"10.88.0.1/16".to_string()), "{br:?}");
    assert!(br.contains(&"2001:db8:1::1/64".to_string()), "{br:?}");
    assert!(link_details(&w.node, &hv).contains("master cni0"));
    assert!(!w.node.links().contains(&"eth0".to_string()));
    assert_eq!(sysctl(&w.node, "net/ipv4/ip_forward"), "1");
    assert_eq!(sysctl(&w.node, "net/ipv6/conf/all/forwarding"), "1");
    assert_eq!(sysctl(&w.node, "net/ipv6/conf/cni0/accept_ra"), "0");
    let chain = names::chain_name("mynet", "abc123");
    assert!(w.node.iptables_save(false).contains(&format!(":{chain} -")));
    assert!(w.node.iptables_save(true).contains(&format!(":{chain} -")));

    rt.check(&att).unwrap_or_else(|e| panic!("CHECK: {e}"));
    let cached = rt.cached(&att).unwrap();
    rt.del(&att).unwrap();
    assert!(!w.node.links().contains(&hv));
    assert!(!w.node.iptables_save(false).contains(&chain));
    assert!(!w.node.iptables_save(true).contains(&chain));
    assert!(w.snapshot().ipam_files.is_empty());
    // DEL twice (with and without prevResult) is success.
    rt.prime(&att, cached);
    rt.del(&att).unwrap();
    rt.del(&att).unwrap();
    // ADD again on the same sandbox works (nothing was left behind).
    add_ok(&rt, &att);
    rt.del(&att).unwrap();
}

#[test]
fn repeated_add_fails_without_disturbing_the_first() {
    require_root!();
    let w = World::new("brep");
    let rt = w.runtime(w.conf(json!({"ipam": w.ipam(&["10.88.0.0/16"])})));
    let c = w.node.container("brepc");
    let att = Attachment::new("rep1", &c.path());
    add_ok(&rt, &att);
    let before = w.snapshot();
    let e = rt.add(&att).unwrap_err();
    assert_eq!(e.error_code(), Some(999), "{e}");
    assert!(e.error_msg().contains("already exists"), "{e}");
    assert_eq!(w.snapshot(), before);
    rt.check(&att).unwrap_or_else(|e| panic!("{e}"));
    rt.del(&att).unwrap();
}

#[test]
fn two_containers_talk_and_reach_the_gateway() {
    require_root!();
    let w = World::new("btalk");
    let rt = w.runtime(w.conf(json!({})));
    let c1 = w.node.container("talk1");
    let c2 = w.node.container("talk2");
    let a1 = Attachment::new("talk-1", &c1.path());
    let a2 = Attachment::new("talk-2", &c2.path());
    add_ok(&rt, &a1);
    add_ok(&rt, &a2);
    let (ip1, ip2) = (ipv4_of(&c1), ipv4_of(&c2));
    assert_ne!(ip1, ip2);
    assert!(ping_within(&c1, &ip2, 5), "c1 -> c2 {ip2}");
    assert!(ping_within(&c2, &ip1, 5), "c2 -> c1 {ip1}");
    assert!(ping_within(&c1, "10.88.0.1", 5), "c1 -> gateway");
    assert!(ping_within(&c1, &ipv6_of(&c2), 5), "c1 -> c2 over IPv6");
    assert!(ping_within(&c2, "2001:db8:1::1", 8), "c2 -> IPv6 gateway");
    // The bridge MAC is pinned: it stays when endpoints come and go.
    let mac = w.node.ip(&["-o", "link", "show", "cni0"]);
    rt.del(&a1).unwrap();
    add_ok(&rt, &a1);
    assert_eq!(mac, w.node.ip(&["-o", "link", "show", "cni0"]));
    rt.del(&a1).unwrap();
    rt.del(&a2).unwrap();
}

fn conntrack_shows_snat(node: &Netns, from: &str) -> bool {
    let out = node.try_exec(&["conntrack", "-L"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .any(|l| l.contains(&format!("src={from} dst=198.18.0.2")) && l.contains("dst=198.18.0.1"))
}

#[test]
fn masqueraded_traffic_arrives_from_the_node_address() {
    require_root!();
    for backend in ["iptables", "nftables"] {
        let w = World::new(&format!("bm{}", &backend[..3]));
        let out = outside(&w.node, "bmout");
        let rt = w.runtime(w.conf(json!({"ipMasqBackend": backend,
            "ipam": w.ipam(&["10.88.0.0/16"])})));
        // Attached first: masq1's ADD then finds the table (nftables) or its chains
        // (iptables) in place, and takes the path of every later ADD on a node.
        let c0 = w.node.container("bmc0");
        let att0 = Attachment::new("masq0", &c0.path());
        add_ok(&rt, &att0);
        let c = w.node.container("bmc");
        let att = Attachment::new("masq1", &c.path());
        add_ok(&rt, &att);
        let ip = ipv4_of(&c);
        // The outside host has no route to 10.88.0.0/16: a reply arrives only if the
        // request left the node with the node's address.
        assert!(
            ping_within(&c, "198.18.0.2", 5),
            "{backend}: container -> outside"
        );
        assert!(
            conntrack_shows_snat(&w.node, &ip),
            "{backend}: no SNAT to 198.18.0.1 in conntrack"
        );
        if backend == "nftables" {
            let t = w.node.nft_ruleset();
            assert!(t.contains("table inet cni_plugins_masquerade"), "{t}");
            assert!(
                t.contains(&names::nft_masq_comment("mynet", "eth0", "masq1")),
                "{t}"
            );
            assert!(!w.node.iptables_save(false).contains("CNI-"));
        } else {
            assert!(
                w.node
                    .iptables_save(false)
                    .contains(&names::chain_name("mynet", "masq1"))
            );
        }
        rt.check(&att).unwrap_or_else(|e| panic!("{backend}: {e}"));
        rt.del(&att).unwrap();
        if backend == "nftables" {
            let t = w.node.nft_ruleset();
            assert!(
                !t.contains(&names::nft_masq_comment("mynet", "eth0", "masq1")),
                "{t}"
            );
        }
        rt.del(&att0).unwrap();
        drop(out);
    }
    // Control: without ipMasq the outside host cannot answer.
    let w = World::new("bmctl");
    let _out = outside(&w.node, "bmctlout");
    let rt = w.runtime(w.conf(json!({"ipMasq": false, "ipam": w.ipam(&["10.88.0.0/16"])})));
    let c = w.node.container("bmctlc");
    let att = Attachment::new("nomasq", &c.path());
    add_ok(&rt, &att);
    assert!(
        !c.ping("198.18.0.2"),
        "unmasqueraded traffic must not come back"
    );
    rt.del(&att).unwrap();
}

#[test]
fn mtu_hairpin_isolation_promisc_and_errors() {
    require_root!();
    let w = World::new("bflg");
    let rt = w.runtime(
        w.conf(json!({"bridge": "br14", "mtu": 1400, "hairpinMode": true,
        "portIsolation": true, "ipam": w.ipam(&["10.70.0.0/24"])})),
    );
    let c = w.node.container("bflgc");
    let att = Attachment::new("flags", &c.path());
    let r = add_ok(&rt, &att);
    let hv = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert!(w.node.ip(&["link", "show", "br14"]).contains("mtu 1400"));
    assert!(w.node.ip(&["link", "show", &hv]).contains("mtu 1400"));
    assert!(c.ip(&["link", "show", "eth0"]).contains("mtu 1400"));
    let d = link_details(&w.node, &hv);
    assert!(d.contains("hairpin on"), "{d}");
    assert!(d.contains("isolated on"), "{d}");
    rt.check(&att).unwrap_or_else(|e| panic!("{e}"));
    rt.del(&att).unwrap();

    // promiscMode on the bridge; hairpin off and isolation off written explicitly.
    let rt = w.runtime(w.conf(json!({"bridge": "brp", "promiscMode": true,
        "ipam": w.ipam(&["10.71.0.0/24"])})));
    let r = add_ok(&rt, &att);
    let hv = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert!(w.node.ip(&["link", "show", "brp"]).contains("PROMISC"));
    let d = link_details(&w.node, &hv);
    assert!(
        d.contains("hairpin off") && d.contains("isolated off"),
        "{d}"
    );
    rt.check(&att).unwrap_or_else(|e| panic!("{e}"));
    rt.del(&att).unwrap();

    // Invalid combinations are configuration errors (code 7) and touch nothing.
    let before = w.snapshot();
    for (extra, word) in [
        (json!({"hairpinMode": true, "promiscMode": true}), "hairpin"),
        (json!({"vlan": 4095}), "vlan"),
        (
            json!({"vlanTrunk": [{"minID": 5, "maxID": 2}]}),
            "vlanTrunk",
        ),
        (
            json!({"disableContainerInterface": true}),
            "disableContainerInterface",
        ),
        (json!({"ipMasqBackend": "pf"}), "ipMasqBackend"),
        (json!({"mtu": "big"}), "mtu"),
        (json!({"runtimeConfig": {"mac": "not-a-mac"}}), "mac"),
    ] {
        let rt = w.runtime(w.conf(extra.clone()));
        let e = rt.add(&att).unwrap_err();
        assert_eq!(e.error_code(), Some(7), "{extra}: {e}");
        assert!(e.error_msg().contains(word), "{extra}: {e}");
    }
    assert_eq!(w.snapshot(), before);
    // DEL never reads ipMasqBackend (as in the reference): an unknown one cannot block it.
    w.runtime(w.conf(json!({"ipMasqBackend": "pf"})))
        .del(&att)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn force_address_and_default_gateway() {
    require_root!();
    let w = World::new("bfrc");
    w.node.ip(&["link", "add", "cni0", "type", "bridge"]);
    w.node.ip(&["addr", "add", "10.55.0.1/24", "dev", "cni0"]);
    let c = w.node.container("bfrcc");
    let att = Attachment::new("force", &c.path());
    let ipam = json!({"type": "host-local", "dataDir": w.data.path(),
        "ranges": [[{"subnet": "10.56.0.0/24"}]]});
    let before = w.snapshot();
    let rt = w.runtime(w.conf(json!({"ipam": ipam, "ipMasq": false})));
    let e = rt.add(&att).unwrap_err();
    assert!(
        e.error_msg()
            .contains("\"cni0\" already has an IP address different from 10.56.0.1/24"),
        "{e}"
    );
    assert_eq!(w.snapshot(), before, "the failed ADD is rolled back");
    assert_eq!(addrs(&w.node, "cni0"), vec!["10.55.0.1/24"]);

    // forceAddress replaces it; isDefaultGateway adds the default route (IPAM has none).
    let rt = w.runtime(
        w.conf(json!({"ipam": ipam, "ipMasq": false, "forceAddress": true,
        "isDefaultGateway": true, "isGateway": false})),
    );
    let r = add_ok(&rt, &att);
    assert_eq!(addrs(&w.node, "cni0"), vec!["10.56.0.1/24"]);
    assert_eq!(
        r["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.56.0.1"}])
    );
    assert!(c.ip(&["route"]).contains("default via 10.56.0.1 dev eth0"));
    rt.check(&att).unwrap_or_else(|e| panic!("{e}"));
    rt.del(&att).unwrap();
}

#[test]
fn macspoofchk_drops_spoofed_frames() {
    require_root!();
    let w = World::new("bspf");
    let rt = w.runtime(w.conf(json!({"macspoofchk": true, "ipMasq": false,
        "ipam": w.ipam(&["10.88.0.0/16"])})));
    let c1 = w.node.container("spf1");
    let c2 = w.node.container("spf2");
    let a1 = Attachment::new("spoof-1", &c1.path());
    let a2 = Attachment::new("spoof-2", &c2.path());
    // The first ADD creates `bridge nat` (one `nft`); the second finds it and adds its
    // chains over netlink: the spoofing container is the second.
    let r1 = add_ok(&rt, &a1);
    let r2 = add_ok(&rt, &a2);
    let t = w.node.nft_ruleset();
    for (r, id) in [(&r1, "spoof-1"), (&r2, "spoof-2")] {
        let hv = r["interfaces"][1]["name"].as_str().unwrap();
        assert!(
            t.contains(&format!(
                "iifname \"{hv}\" jump cni-br-iface-{id}-eth0 comment \"macspoofchk-{id}-eth0\""
            )),
            "{t}"
        );
    }
    let ip1 = ipv4_of(&c1);
    assert!(ping_within(&c2, &ip1, 5));
    rt.check(&a1).unwrap_or_else(|e| panic!("{e}"));
    rt.check(&a2).unwrap_or_else(|e| panic!("{e}"));
    // A spoofed source MAC is dropped at the bridge.
    c2.ip(&["link", "set", "eth0", "address", "02:de:ad:be:ef:01"]);
    c2.ip(&["neigh", "flush", "all"]);
    assert!(!c2.ping(&ip1), "spoofed frames must be dropped");
    rt.del(&a1).unwrap();
    rt.del(&a2).unwrap();
    let t = w.node.nft_ruleset();
    assert!(!t.contains("cni-br-iface-"), "{t}");
}

#[test]
fn enabledad_waits_for_dad_and_l2_modes() {
    require_root!();
    let w = World::new("bdad");
    let c = w.node.container("bdadc");
    let att = Attachment::new("dad", &c.path());
    let ipam = json!({"type": "host-local", "dataDir": w.data.path(),
        "ranges": [[{"subnet": "2001:db8:7::/64"}]], "routes": [{"dst": "::/0"}]});
    let rt = w.runtime(w.conf(json!({"enabledad": true, "ipam": ipam, "ipMasq": false})));
    add_ok(&rt, &att);
    assert_eq!(sysctl(&c, "net/ipv6/conf/eth0/accept_dad"), "1");
    assert_eq!(sysctl(&c, "net/ipv6/conf/eth0/enhanced_dad"), "1");
    // ADD returned after DAD: the address is usable, not tentative.
    let v6 = c.ip(&["-6", "addr", "show", "dev", "eth0", "scope", "global"]);
    assert!(
        v6.contains("2001:db8:7::") && !v6.contains("tentative"),
        "{v6}"
    );
    rt.del(&att).unwrap();

    // L2 mode: empty ipam; no addresses, interface up, ipMasq ignored.
    let rt = w.runtime(w.conf(json!({"ipam": {}, "bridge": "l2br"})));
    let r = add_ok(&rt, &att);
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
    assert!(r.get("ips").is_none(), "{r}");
    assert!(addrs(&c, "eth0").is_empty());
    assert!(c.ip(&["link", "show", "eth0"]).contains(",UP"));
    assert!(!w.node.iptables_save(false).contains("CNI-"));
    rt.check(&att).unwrap_or_else(|e| panic!("{e}"));
    rt.del(&att).unwrap();

    // disableContainerInterface: L2 and the container end stays down.
    let rt = w.runtime(w.conf(json!({"ipam": {}, "bridge": "l2br",
        "disableContainerInterface": true})));
    add_ok(&rt, &att);
    assert!(c.ip(&["link", "show", "eth0"]).contains("state DOWN"));
    rt.check(&att).unwrap_or_else(|e| panic!("{e}"));
    rt.del(&att).unwrap();
    assert!(!w.node.links().iter().any(|l| l.starts_with("veth")));
}

#[test]
fn mac_precedence_dns_and_result_versions() {
    require_root!();
    let w = World::new("bmac");
    let c = w.node.container("bmacc");
    let mac_in = |c: &Netns| c.ip(&["-o", "link", "show", "eth0"]);
    let mut att = Attachment::new("mac", &c.path());

    att.cni_args = "IgnoreUnknown=1;K8S_POD_NAME=x;MAC=02:00:00:00:00:01".into();
    let rt = w.runtime(w.conf(json!({"ipam": w.ipam(&["10.88.0.0/16"])})));
    let r = add_ok(&rt, &att);
    assert_eq!(r["interfaces"][2]["mac"], "02:00:00:00:00:01");
    assert!(mac_in(&c).contains("02:00:00:00:00:01"));
    rt.del(&att).unwrap();

    let rt = w.runtime(w.conf(json!({"ipam": w.ipam(&["10.88.0.0/16"]),
        "args": {"cni": {"mac": "02:00:00:00:00:02"}}})));
    add_ok(&rt, &att);
    assert!(mac_in(&c).contains("02:00:00:00:00:02"));
    rt.del(&att).unwrap();

    // runtimeConfig.mac through the "mac" capability wins over both.
    let rt = w.runtime(w.conf(json!({"ipam": w.ipam(&["10.88.0.0/16"]),
        "capabilities": {"mac": true}, "args": {"cni": {"mac": "02:00:00:00:00:02"}},
        "dns": {"nameservers": ["10.88.0.53"], "search": ["svc.local"]}})));
    let att3 = att.clone().with_caps(json!({"mac": "02:00:00:00:00:03"}));
    let r = add_ok(&rt, &att3);
    assert!(mac_in(&c).contains("02:00:00:00:00:03"));
    assert_eq!(
        r["dns"],
        json!({"nameservers": ["10.88.0.53"], "search": ["svc.local"]})
    );
    rt.check(&att3).unwrap_or_else(|e| panic!("{e}"));
    rt.del(&att3).unwrap();

    // Results in older versions.
    att.cni_args = String::new();
    for (ver, check) in [("0.4.0", true), ("0.3.1", false), ("0.2.0", false)] {
        let mut conf = w.conf(json!({"ipam": w.ipam(&["10.88.0.0/16"])}));
        conf["cniVersion"] = json!(ver);
        let rt = w.runtime(conf);
        let r = add_ok(&rt, &att);
        assert_eq!(r["cniVersion"], ver);
        if ver == "0.2.0" {
            assert!(
                r["ip4"]["ip"].as_str().unwrap().starts_with("10.88.0."),
                "{r}"
            );
        } else {
            assert_eq!(r["ips"][0]["version"], "4", "{r}");
            assert_eq!(r["ips"][0]["interface"], 2);
            assert_eq!(r["dns"], json!({}));
        }
        if check {
            rt.check(&att).unwrap_or_else(|e| panic!("{ver}: {e}"));
        }
        rt.del(&att).unwrap();
    }
}

#[test]
fn vlans_where_supported_and_a_clear_error_where_not() {
    require_root!();
    let w = World::new("bvln");
    let c = w.node.container("bvlnc");
    let att = Attachment::new("vlan", &c.path());
    let conf = |extra: Value| {
        w.conf(merged(
            json!({"ipMasq": false, "bridge": "brv", "ipam": w.ipam(&["10.60.0.0/24"])}),
            &extra,
        ))
    };
    if !vlan_filtering_supported() {
        eprintln!(
            "skipped: VLAN integration (this kernel has no bridge VLAN filtering); checking the error and rollback instead"
        );
        let before = w.snapshot();
        for extra in [json!({"vlan": 100}), json!({"vlanTrunk": [{"id": 200}]})] {
            let e = w.runtime(conf(extra.clone())).add(&att).unwrap_err();
            assert_eq!(e.error_code(), Some(999), "{e}");
            assert!(e.error_msg().contains("VLAN filtering"), "{extra}: {e}");
            assert_eq!(w.snapshot(), before, "{extra}: nothing is left behind");
        }
        // The bridge exists already (without VLAN filtering): the veth is rolled back.
        let rt = w.runtime(conf(json!({})));
        add_ok(&rt, &att);
        rt.del(&att).unwrap();
        let before = w.snapshot();
        let e = w.runtime(conf(json!({"vlan": 100}))).add(&att).unwrap_err();
        assert!(e.error_msg().contains("VLAN filtering"), "{e}");
        assert_eq!(w.snapshot(), before);
        return;
    }
    // Access VLAN 100 with a gateway on brv.100, plus a trunk.
    let rt = w.runtime(conf(
        json!({"vlan": 100, "vlanTrunk": [{"minID": 200, "maxID": 202}]}),
    ));
    let r = add_ok(&rt, &att);
    let hv = r["interfaces"][1]["name"].as_str().unwrap();
    let v = w.node.exec(&["bridge", "vlan", "show", "dev", hv]);
    assert!(v.contains("100 PVID Egress Untagged"), "{v}");
    assert!(v.contains("200") && v.contains("202"), "{v}");
    assert!(w.node.links().contains(&"brv.100".to_string()));
    assert!(addrs(&w.node, "brv.100").contains(&"10.60.0.1/24".to_string()));
    rt.check(&att).unwrap_or_else(|e| panic!("{e}"));
    rt.del(&att).unwrap();
}

/// One kind of tampering and the words CHECK must report.
struct Tamper {
    name: &'static str,
    extra: Value,
    action: fn(&World, &Netns, &Value),
    expect: &'static str,
}

#[test]
fn check_fails_after_each_kind_of_tampering() {
    require_root!();
    let w = World::new("bchk");
    let cases = vec![
        Tamper {
            name: "address removed",
            extra: json!({}),
            action: |_, c, _| {
                let a = addrs(c, "eth0")
                    .into_iter()
                    .find(|a| a.contains('.'))
                    .unwrap();
                c.ip(&["addr", "del", &a, "dev", "eth0"]);
            },
            expect: "Failed to match addr",
        },
        Tamper {
            name: "route removed",
            extra: json!({}),
            action: |_, c, _| {
                c.ip(&["route", "del", "default"]);
            },
            expect: "Failed to match route",
        },
        Tamper {
            name: "container MAC changed",
            extra: json!({}),
            action: |_, c, _| {
                c.ip(&["link", "set", "eth0", "address", "02:12:34:56:78:9a"]);
            },
            expect: "Mac",
        },
        Tamper {
            name: "container interface down",
            extra: json!({}),
            action: |_, c, _| {
                c.ip(&["link", "set", "eth0", "down"]);
            },
            expect: "is down",
        },
        Tamper {
            name: "container interface deleted",
            extra: json!({}),
            action: |_, c, _| {
                c.ip(&["link", "del", "eth0"]);
            },
            expect: "not found",
        },
        Tamper {
            name: "veth detached from the bridge",
            extra: json!({}),
            action: |w, _, r| {
                let hv = r["interfaces"][1]["name"].as_str().unwrap();
                w.node.ip(&["link", "set", hv, "nomaster"]);
            },
            expect: "CNI veth created for bridge cni0 was not found",
        },
        Tamper {
            name: "hairpin flipped",
            extra: json!({}),
            action: |w, _, r| {
                let hv = r["interfaces"][1]["name"].as_str().unwrap();
                w.node.ip(&[
                    "link",
                    "set",
                    "dev",
                    hv,
                    "type",
                    "bridge_slave",
                    "hairpin",
                    "on",
                ]);
            },
            expect: "hairpin",
        },
        Tamper {
            name: "isolation cleared",
            extra: json!({"portIsolation": true}),
            action: |w, _, r| {
                let hv = r["interfaces"][1]["name"].as_str().unwrap();
                w.node.ip(&[
                    "link",
                    "set",
                    "dev",
                    hv,
                    "type",
                    "bridge_slave",
                    "isolated",
                    "off",
                ]);
            },
            expect: "port isolation",
        },
        Tamper {
            name: "bridge made promiscuous",
            extra: json!({}),
            action: |w, _, _| {
                w.node.ip(&["link", "set", "cni0", "promisc", "on"]);
            },
            expect: "Promisc",
        },
        Tamper {
            name: "gateway address removed",
            extra: json!({}),
            action: |w, _, _| {
                w.node.ip(&["addr", "del", "10.88.0.1/16", "dev", "cni0"]);
            },
            expect: "gateway address 10.88.0.1/16",
        },
        Tamper {
            name: "iptables masquerade rule removed",
            extra: json!({}),
            action: |w, _, _| {
                let out = w.node.sh(
                    "for c in $(iptables-save -t nat | sed -n 's/^:\\(CNI-[^ ]*\\).*/\\1/p'); do iptables -t nat -F $c; done",
                );
                assert!(out.status.success());
            },
            expect: "masquerade rule missing",
        },
        Tamper {
            name: "nftables masquerade rule removed",
            extra: json!({"ipMasqBackend": "nftables"}),
            action: |w, _, _| flush_masq_checks(&w.node),
            expect: "nftables masquerade rule",
        },
        Tamper {
            name: "macspoofchk rules removed",
            extra: json!({"macspoofchk": true}),
            action: |w, _, _| {
                w.node
                    .exec(&["nft", "flush", "chain", "bridge", "nat", "PREROUTING"]);
            },
            expect: "macspoofchk",
        },
    ];
    for (i, t) in cases.iter().enumerate() {
        // Gateway tampering affects the network: give that case its own bridge.
        let c = w.node.container(&format!("chk{i}"));
        let att = Attachment::new(&format!("tamper-{i}"), &c.path());
        let rt = w.runtime(w.conf(t.extra.clone()));
        let r = add_ok(&rt, &att);
        rt.check(&att)
            .unwrap_or_else(|e| panic!("{}: CHECK before tampering: {e}", t.name));
        (t.action)(&w, &c, &r);
        let e = err_of(rt.check(&att));
        assert!(
            e.error_msg().contains(t.expect),
            "{}: expected {:?} in {e}",
            t.name,
            t.expect
        );
        rt.del(&att)
            .unwrap_or_else(|e| panic!("{}: DEL after tampering: {e}", t.name));
        // Undo network-level tampering for the next case.
        w.node.ip(&["link", "set", "cni0", "promisc", "off"]);
        let _ = w
            .node
            .try_exec(&["ip", "addr", "add", "10.88.0.1/16", "dev", "cni0"]);
    }
    // CHECK without prevResult, and with a prevResult naming another sandbox.
    let c = w.node.container("chkprev");
    let att = Attachment::new("noprev", &c.path());
    let rt = w.runtime(w.conf(json!({})));
    let r = add_ok(&rt, &att);
    rt.forget(&att);
    assert!(
        err_of(rt.check(&att))
            .error_msg()
            .contains("Required prevResult missing")
    );
    let mut other = r.clone();
    other["interfaces"][2]["sandbox"] = json!("/run/netns/elsewhere");
    rt.prime(&att, other);
    assert!(
        err_of(rt.check(&att))
            .error_msg()
            .contains("doesn't match configured netns")
    );
    rt.prime(&att, r);
    rt.del(&att).unwrap();
}

#[derive(Clone, Copy, Debug)]
enum Degraded {
    EmptyNetns,
    NetnsGone,
    InterfaceGone,
    NoPrevResult,
    Everything,
}

#[test]
fn del_in_every_degraded_case_leaves_the_node_as_before() {
    require_root!();
    for extra in [
        json!({}),
        json!({"ipMasqBackend": "nftables", "macspoofchk": true}),
    ] {
        let w = World::new("bdeg");
        let rt = w.runtime(w.conf(extra.clone()));
        // Warm up the network (bridge, gateway, tables), which DEL never removes.
        let warm = w.node.container("degwarm");
        let watt = Attachment::new("warm", &warm.path());
        add_ok(&rt, &watt);
        rt.del(&watt).unwrap();
        let before = w.snapshot();
        for (i, case) in [
            Degraded::EmptyNetns,
            Degraded::NetnsGone,
            Degraded::InterfaceGone,
            Degraded::NoPrevResult,
            Degraded::Everything,
        ]
        .into_iter()
        .enumerate()
        {
            let c = w.node.container(&format!("deg{i}"));
            let att = Attachment::new(&format!("degraded-{i}"), &c.path());
            add_ok(&rt, &att);
            assert_ne!(w.snapshot(), before);
            let mut del_att = att.clone();
            match case {
                Degraded::EmptyNetns => del_att.netns = String::new(),
                Degraded::NetnsGone => drop(c),
                Degraded::InterfaceGone => {
                    c.ip(&["link", "del", "eth0"]);
                }
                Degraded::NoPrevResult => rt.forget(&att),
                Degraded::Everything => {
                    // Nothing names the host veth any more: let the kernel finish removing
                    // the dead sandbox's pair first.
                    let hv: Vec<String> = w
                        .node
                        .links()
                        .into_iter()
                        .filter(|l| l.starts_with("veth"))
                        .collect();
                    drop(c);
                    assert!(wait_links_gone(&w.node, &hv, 10));
                    rt.forget(&att);
                    del_att.netns = String::new();
                }
            }
            rt.del(&del_att)
                .unwrap_or_else(|e| panic!("{extra} {case:?}: DEL failed: {e}"));
            assert_eq!(w.snapshot(), before, "{extra} {case:?}: DEL left something");
            rt.del(&del_att)
                .unwrap_or_else(|e| panic!("{extra} {case:?}: second DEL failed: {e}"));
        }
    }
}

#[test]
fn concurrent_first_adds_on_a_new_bridge_all_succeed() {
    require_root!();
    let w = World::new("bconc");
    let rt = w.runtime(w.conf(json!({"bridge": "brconc"})));
    let containers: Vec<Netns> = (0..6)
        .map(|i| w.node.container(&format!("conc{i}")))
        .collect();
    let atts: Vec<Attachment> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| Attachment::new(&format!("conc-{i}"), &c.path()))
        .collect();
    let results: Vec<Result<Value, PluginOutput>> = std::thread::scope(|s| {
        let handles: Vec<_> = atts.iter().map(|a| s.spawn(|| rt.add(a))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips = Vec::new();
    for r in &results {
        let r = r
            .as_ref()
            .unwrap_or_else(|e| panic!("concurrent ADD failed: {e}"));
        ips.push(r["ips"][0]["address"].as_str().unwrap().to_string());
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), atts.len(), "distinct addresses: {ips:?}");
    assert!(ping_within(&containers[0], &ipv4_of(&containers[5]), 5));
    for a in &atts {
        rt.check(a).unwrap_or_else(|e| panic!("{e}"));
        rt.del(a).unwrap();
    }
    assert!(!w.node.links().iter().any(|l| l.starts_with("veth")));
}

#[test]
fn failed_adds_roll_back_fully() {
    require_root!();
    let w = World::new("broll");
    let conf = w.conf(json!({"ipMasqBackend": "iptables", "macspoofchk": true}));
    let rt = w.runtime(conf.clone());
    let warm = w.node.container("rollwarm");
    let watt = Attachment::new("warm", &warm.path());
    add_ok(&rt, &watt);
    rt.del(&watt).unwrap();
    let before = w.snapshot();
    let c = w.node.container("rollc");
    let att = Attachment::new("roll", &c.path());
    let fake = TempDir::new("fakeipam");
    let calls = fake.path().join("calls");

    // A fake host-local: records every verb it gets, answers with `answer` (shell).
    let add_with_fake_ipam = |answer: &str| {
        let _ = std::fs::remove_file(&calls);
        script(
            fake.path(),
            "host-local",
            &format!(
                "cat >/dev/null; echo \"$CNI_COMMAND\" >>{calls}\n{answer}\n",
                calls = calls.display()
            ),
        );
        w.runtime_with(conf.clone(), fake.path())
            .add(&att)
            .unwrap_err()
    };

    // 1. The IPAM plugin fails: its error passes through; it is sent DEL (SPEC §4).
    let e = add_with_fake_ipam(
        r#"[ "$CNI_COMMAND" = ADD ] || exit 0
printf '{"code": 11, "msg": "ipam busy"}'; exit 1"#,
    );
    assert_eq!(
        (e.error_code(), e.error_msg().as_str()),
        (Some(11), "ipam busy"),
        "{e}"
    );
    assert_eq!(w.snapshot(), before);
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), "ADD\nDEL\n");
    assert_eq!(c.links(), vec!["lo".to_string()]);

    // 2. IPAM answers without addresses.
    let e = add_with_fake_ipam(r#"printf '{"cniVersion": "1.0.0"}'"#);
    assert!(
        e.error_msg()
            .contains("IPAM plugin returned missing IP config"),
        "{e}"
    );
    assert_eq!(w.snapshot(), before);
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), "ADD\nDEL\n");

    // 3. The last step (masquerading) fails after IPAM, the sandbox and the gateway are
    //    done: iptables-restore is made to fail through PATH.
    let tools = TempDir::new("failtools");
    for t in ["iptables-restore", "ip6tables-restore"] {
        script(tools.path(), t, "echo 'simulated failure' >&2; exit 1\n");
    }
    let path = format!(
        "{}:{}",
        tools.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cni_path = w.bin.path().display().to_string();
    let netns = c.path().display().to_string();
    let env = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "roll"),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", cni_path.as_str()),
            ("PATH", path.as_str()),
        ]
    };
    let node_ns = w.node.open();
    let out = run_plugin(
        Some(&node_ns),
        &cni_testkit::bin("bridge"),
        &env("ADD"),
        &conf.to_string(),
    );
    assert!(!out.ok(), "{out}");
    assert!(out.error_msg().contains("masquerad"), "{out}");
    assert_eq!(
        w.snapshot(),
        before,
        "rollback after a failed masquerade step"
    );
    assert_eq!(c.links(), vec!["lo".to_string()]);

    // 4. The routes, added after masquerading (so that the masquerade commit overlaps the
    //    kernel's work on the new link), fail: a gateway the container cannot reach.
    let e = add_with_fake_ipam(
        r#"[ "$CNI_COMMAND" = ADD ] || exit 0
printf '{"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.77/16"}], "routes": [{"dst": "192.168.77.0/24", "gw": "203.0.113.1"}]}'"#,
    );
    assert!(
        e.error_msg()
            .contains("failed to add route '192.168.77.0/24 via 203.0.113.1'"),
        "{e}"
    );
    assert_eq!(w.snapshot(), before, "rollback after a failed route");
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), "ADD\nDEL\n");
    assert_eq!(c.links(), vec!["lo".to_string()]);

    // After all that, a normal ADD works.
    add_ok(&rt, &att);
    rt.del(&att).unwrap();
    assert_eq!(w.snapshot(), before);
}

#[test]
fn gc_removes_stale_rules_and_forwards_to_ipam_and_status() {
    require_root!();
    let w = World::new("bgc");
    let fake = TempDir::new("gcipam");
    let calls = fake.path().join("calls");
    // A fake IPAM: addresses from the container ID's last digit; records GC/STATUS calls.
    script(
        fake.path(),
        "fake-ipam",
        &format!(
            "cat >/dev/null; echo \"$CNI_COMMAND\" >>{calls}\n\
             n=${{CNI_CONTAINERID##*-}}\n\
             case \"$CNI_COMMAND\" in\n\
             ADD) printf '{{\"cniVersion\": \"1.1.0\", \"ips\": [{{\"address\": \"10.77.0.1%s/24\"}}]}}' \"$n\" ;;\n\
             STATUS) [ -e {down} ] && {{ printf '{{\"code\": 50, \"msg\": \"ipam: no addresses\"}}'; exit 1; }} ;;\n\
             esac\nexit 0\n",
            calls = calls.display(),
            down = fake.path().join("down").display()
        ),
    );
    let mut atts = Vec::new();
    let mut nets = Vec::new();
    for backend in ["iptables", "nftables"] {
        let conf = json!({"cniVersion": "1.1.0", "name": "gcnet", "type": "bridge",
            "bridge": "brgc", "isGateway": true, "ipMasq": true, "ipMasqBackend": backend,
            "macspoofchk": true, "ipam": {"type": "fake-ipam"}});
        nets.push(w.runtime_with(conf, fake.path()));
    }
    let mut containers: Vec<Netns> = (0..4)
        .map(|i| w.node.container(&format!("gc{i}")))
        .collect();
    for (i, c) in containers.iter().enumerate() {
        let a = Attachment::new(&format!("gc-{i}"), &c.path());
        add_ok(&nets[i % 2], &a);
        atts.push(a);
    }
    // Attachments 0 (iptables) and 1 (nftables) die without DEL.
    let hv_of = |i: usize| {
        nets[i % 2].cached(&atts[i]).unwrap()["interfaces"][1]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let dead_veths = [hv_of(0), hv_of(1)];
    drop(containers.drain(..2));
    assert!(wait_links_gone(&w.node, &dead_veths, 10));
    // An absent list removes nothing of ours (but IPAM is still asked).
    let before = w.snapshot();
    nets[0].gc(None).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(w.snapshot(), before);
    // Masquerade chains whose POSTROUTING jump is gone are found too: one of a stale
    // container of this network (removed), one of another network (kept).
    let orphans: String = [("gcnet", "gc-9"), ("othernet", "gc-9")]
        .iter()
        .map(|(net, id)| {
            let c = names::chain_name(net, id);
            format!(
                ":{c} - [0:0]\n-A {c} -d 10.77.0.0/24 -m comment --comment {} -j ACCEPT\n",
                serde_json::to_string(&names::comment(net, id)).unwrap()
            )
        })
        .collect();
    let out = w.node.sh(&format!(
        "iptables-restore --noflush <<'EOF'\n*nat\n{orphans}COMMIT\nEOF\n"
    ));
    assert!(out.status.success(), "{out:?}");
    let ipt = w.node.iptables_save(false);
    assert!(ipt.contains(&names::chain_name("gcnet", "gc-9")), "{ipt}");
    // On an iptables-nft node GC reads and removes everything over netlink: the tools here
    // are stand-ins that log their calls and fail.
    let mut links = IPTABLES_TOOLS.to_vec();
    links.push("nft");
    let tools = LoggingTools::new("xtables-nft-multi", &links, 1);
    let valid = [("gc-2", "eth0"), ("gc-3", "eth0")];
    for n in &mut nets {
        n.path = Some(tools.path());
        n.gc(Some(&valid)).unwrap_or_else(|e| panic!("{e:?}"));
        n.path = None;
    }
    assert_eq!(tools.calls(), "", "GC ran the firewall tools");
    let ipt = w.node.iptables_save(false);
    assert!(!ipt.contains(&names::chain_name("gcnet", "gc-0")), "{ipt}");
    assert!(ipt.contains(&names::chain_name("gcnet", "gc-2")), "{ipt}");
    assert!(!ipt.contains(&names::chain_name("gcnet", "gc-9")), "{ipt}");
    assert!(
        ipt.contains(&names::chain_name("othernet", "gc-9")),
        "{ipt}"
    );
    let nft = w.node.nft_ruleset();
    assert!(
        !nft.contains(&names::nft_masq_comment("gcnet", "eth0", "gc-1")),
        "{nft}"
    );
    assert!(
        nft.contains(&names::nft_masq_comment("gcnet", "eth0", "gc-3")),
        "{nft}"
    );
    for v in &dead_veths {
        assert!(!nft.contains(v.as_str()), "macspoofchk of {v} left: {nft}");
    }
    assert!(nft.contains("macspoofchk-gc-2-eth0") && nft.contains("macspoofchk-gc-3-eth0"));
    let log = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        log.matches("GC").count(),
        3,
        "GC forwarded to IPAM each time: {log}"
    );

    // STATUS: forwarded to IPAM; code 50 from it passes through.
    nets[0].status().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(fake.path().join("down"), "").unwrap();
    let e = nets[0].status().unwrap_err();
    assert_eq!(
        (e.error_code(), e.error_msg().as_str()),
        (Some(50), "ipam: no addresses")
    );
    std::fs::remove_file(fake.path().join("down")).unwrap();

    // With the nftables masquerade, whose ADD goes in over netlink, STATUS asks nf_tables
    // and looks for `nft` without running it (the stand-in here logs its calls and fails);
    // it is 50 when the backend cannot work (no `nft` in PATH).
    let tools = LoggingTools::new("nft", &[], 1);
    let cni_path = format!("{}:{}", fake.path().display(), w.bin.path().display());
    let conf = json!({"cniVersion": "1.1.0", "name": "gcnet", "type": "bridge",
        "ipMasq": true, "ipMasqBackend": "nftables", "ipam": {"type": "fake-ipam"}});
    let node_ns = w.node.open();
    let status = |path: &str| {
        run_plugin(
            Some(&node_ns),
            &cni_testkit::bin("bridge"),
            &[
                ("CNI_COMMAND", "STATUS"),
                ("CNI_PATH", &cni_path),
                ("PATH", path),
            ],
            &conf.to_string(),
        )
    };
    let out = status(&tools.path());
    assert!(out.ok(), "{out}");
    assert_eq!(tools.calls(), "");
    let out = status("/nonexistent");
    assert_eq!(out.error_code(), Some(50), "{out}");
    assert!(out.error_msg().contains("nftables"), "{out}");

    // With the iptables backend, STATUS asks nf_tables over netlink when the tools are
    // iptables-nft, and runs `iptables` for any other kind: stand-ins named as Debian's
    // alternatives name them log their calls.
    let conf = json!({"cniVersion": "1.1.0", "name": "gcnet", "type": "bridge",
        "ipMasq": true, "ipMasqBackend": "iptables", "ipam": {"type": "fake-ipam"}});
    for (multi, runs) in [("xtables-nft-multi", false), ("xtables-legacy-multi", true)] {
        let tools = LoggingTools::new(multi, &["iptables", "iptables-restore"], 0);
        let out = run_plugin(
            Some(&node_ns),
            &cni_testkit::bin("bridge"),
            &[
                ("CNI_COMMAND", "STATUS"),
                ("CNI_PATH", &cni_path),
                ("PATH", &tools.path()),
            ],
            &conf.to_string(),
        );
        assert!(out.ok(), "{multi}: {out}");
        let calls = tools.calls();
        assert_eq!(
            calls.contains("iptables -w 10 -t filter -S INPUT 1"),
            runs,
            "{multi}: calls {calls:?}"
        );
    }

    for (i, a) in atts.iter().enumerate().skip(2) {
        nets[i % 2].del(a).unwrap();
    }
}

/// Runs `bridge` from the node for container `id` in `c` as a runtime would, with `PATH`
/// replaced when `path` is given.
fn run_bridge(
    w: &World,
    conf: &Value,
    (id, c): (&str, &Netns),
    cmd: &str,
    path: Option<&str>,
) -> PluginOutput {
    let netns = c.path().display().to_string();
    let cni_path = w.bin.path().display().to_string();
    let mut env = vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", cni_path.as_str()),
    ];
    env.extend(path.map(|p| ("PATH", p)));
    run_plugin(
        Some(&w.node.open()),
        &cni_testkit::bin("bridge"),
        &env,
        &conf.to_string(),
    )
}

/// A network's first ADD on a node with the nftables masquerade backend and `macspoofchk`
/// starts no process: both tables, their chains and rules go in over netlink. `nft` here is
/// a stand-in that logs its calls and fails; the real one then lists what ADD made, and DEL
/// removes it.
#[test]
fn nftables_first_add_starts_no_process() {
    require_root!();
    let w = World::new("bnfp");
    let tools = LoggingTools::new("nft", &[], 1);
    let conf = w.conf(json!({"ipMasqBackend": "nftables", "macspoofchk": true}));
    let c = w.node.container("bnfpc");
    assert!(!w.node.nft_ruleset().contains("cni_plugins_masquerade"));
    let out = run_bridge(&w, &conf, ("nfp", &c), "ADD", Some(&tools.path()));
    assert!(out.ok(), "{out}");
    assert_eq!(tools.calls(), "", "ADD ran nft");
    let t = w.node.nft_ruleset();
    let comment = names::nft_masq_comment("mynet", "eth0", "nfp");
    assert_eq!(t.matches(comment.as_str()).count(), 2, "{t}");
    assert!(t.contains("goto masq_checks"), "{t}");
    assert!(
        t.contains("macspoofchk-nfp-eth0") && t.contains("ether saddr"),
        "{t}"
    );
    let out = run_bridge(&w, &conf, ("nfp", &c), "DEL", None);
    assert!(out.ok(), "{out}");
    let t = w.node.nft_ruleset();
    assert!(
        !t.contains(comment.as_str()) && !t.contains("macspoofchk-nfp-eth0"),
        "{t}"
    );
}

/// On an `iptables-nft` node, a network's first ADD with the iptables masquerade backend
/// starts no process either: the `nat` tables of both families are created over netlink as
/// `iptables-nft` creates them. The tools here are stand-ins named as Debian's alternatives
/// name them, which log their calls and fail; the real ones then list what ADD made.
#[test]
fn iptables_first_add_starts_no_process() {
    require_root!();
    let w = World::new("bipfp");
    let tools = LoggingTools::new("xtables-nft-multi", &IPTABLES_TOOLS, 1);
    let conf = w.conf(json!({}));
    let c = w.node.container("bipfpc");
    assert!(!w.node.iptables_save(false).contains("CNI-"));
    let out = run_bridge(&w, &conf, ("ipfp", &c), "ADD", Some(&tools.path()));
    assert!(out.ok(), "{out}");
    assert_eq!(tools.calls(), "", "ADD ran the iptables tools");
    let chain = names::chain_name("mynet", "ipfp");
    for v6 in [false, true] {
        let t = w.node.iptables_save(v6);
        assert!(t.contains("-A POSTROUTING ") && t.contains(&chain), "{t}");
        assert!(t.contains("-j MASQUERADE"), "{t}");
    }
    let out = run_bridge(&w, &conf, ("ipfp", &c), "DEL", None);
    assert!(out.ok(), "{out}");
    for v6 in [false, true] {
        assert!(!w.node.iptables_save(v6).contains(&chain));
    }
}

/// CHECK (with `macspoofchk` and the masquerade of `extra`'s backend) finds an intact
/// attachment over netlink, with no process: the iptables tools and `nft` are stand-ins that
/// log their calls and fail. Once `break_it` has changed the masquerade rules (given the node
/// and the attachment's iptables chain), the question goes to the listing, and the real
/// tools report it (`expect` in the message).
fn check_starts_no_process(
    prefix: &str,
    extra: Value,
    break_it: fn(&cni_testkit::Node, &str),
    expect: &str,
) {
    let w = World::new(prefix);
    let mut conf = w.conf(extra);
    conf["macspoofchk"] = json!(true);
    let c = w.node.container(&format!("{prefix}c"));
    let id = prefix;
    let out = run_bridge(&w, &conf, (id, &c), "ADD", None);
    assert!(out.ok(), "{out}");
    let mut check = conf.clone();
    check["prevResult"] = out.json();
    let mut links = IPTABLES_TOOLS.to_vec();
    links.push("nft");
    let tools = LoggingTools::new("xtables-nft-multi", &links, 1);
    let out = run_bridge(&w, &check, (id, &c), "CHECK", Some(&tools.path()));
    assert!(out.ok(), "{out}");
    assert_eq!(tools.calls(), "", "CHECK ran the firewall tools");
    break_it(&w.node, &names::chain_name("mynet", id));
    let out = run_bridge(&w, &check, (id, &c), "CHECK", Some(&tools.path()));
    assert!(!out.ok(), "{out}");
    assert!(!tools.calls().is_empty(), "the listing is asked");
    let out = run_bridge(&w, &check, (id, &c), "CHECK", None);
    assert!(!out.ok() && out.error_msg().contains(expect), "{out}");
    let out = run_bridge(&w, &conf, (id, &c), "DEL", None);
    assert!(out.ok(), "{out}");
}

#[test]
fn iptables_check_of_an_intact_attachment_starts_no_process() {
    require_root!();
    // The IPv6 chain's rules replaced by another one.
    check_starts_no_process(
        "bipchk",
        json!({}),
        |node, chain| {
            node.exec(&["ip6tables", "-t", "nat", "-F", chain]);
            node.exec(&[
                "ip6tables",
                "-t",
                "nat",
                "-A",
                chain,
                "-d",
                "2001:db8:9::/64",
                "-j",
                "ACCEPT",
            ]);
        },
        "ip6tables",
    );
}

#[test]
fn nftables_check_of_an_intact_attachment_starts_no_process() {
    require_root!();
    check_starts_no_process(
        "bnfchk",
        json!({"ipMasqBackend": "nftables"}),
        |node, _| flush_masq_checks(node),
        "masquerade rule",
    );
}

/// Removes every rule of the nftables masquerade (as an administrator's `nft` would).
fn flush_masq_checks(node: &cni_testkit::Node) {
    node.exec(&[
        "nft",
        "flush",
        "chain",
        "inet",
        "cni_plugins_masquerade",
        "masq_checks",
    ]);
}

#[test]
fn host_local_runs_in_process_only_when_it_is_this_build() {
    require_root!();
    let w = World::new("binproc");
    let conf = w.conf(json!({}));
    let ours = cni_testkit::bin("host-local");
    let Some(id) = cni::elf::build_id(&mut std::fs::File::open(&ours).unwrap()) else {
        panic!("{} has no build ID", ours.display());
    };
    // The first 4 KiB of our host-local: its headers and build ID, no code. Executed, it
    // could not work, so a successful ADD through it proves that IPAM ran in-process.
    let fake = TempDir::new("headonly");
    let mut head = std::fs::read(&ours).unwrap();
    head.truncate(4096);
    let copy = fake.path().join("host-local");
    std::fs::write(&copy, &head).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let rt = w.runtime_with(conf.clone(), fake.path());
    let c = w.node.container("binproc1");
    let att = Attachment::new("inproc", &c.path());
    let res = add_ok(&rt, &att);
    assert_eq!(res["ips"].as_array().map(Vec::len), Some(2), "{res}");
    let reserved = |ip: &Value| {
        let addr = ip["address"].as_str().unwrap().split('/').next().unwrap();
        std::fs::read_dir(w.data.path().join("mynet"))
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy() == addr)
    };
    assert!(reserved(&res["ips"][0]), "host-local's reservation on disk");
    rt.check(&att).unwrap();
    rt.del(&att).unwrap();
    assert!(!reserved(&res["ips"][0]), "IPAM DEL ran too");
    // What stays after a DEL (the bridge, the nat tables) is the state to come back to.
    let before = w.snapshot();
    assert!(before.ipam_files.is_empty(), "{before:?}");

    // One byte of the build ID changed: now the file is executed (and cannot run), so ADD
    // fails with the exec's error and leaves nothing behind.
    let at = head
        .windows(id.len())
        .position(|x| x == id.as_slice())
        .unwrap();
    head[at] ^= 0xff;
    std::fs::write(&copy, &head).unwrap();
    let e = rt.add(&att).unwrap_err();
    assert!(
        e.error_msg().contains("host-local"),
        "the exec's failure names the plugin: {e}"
    );
    assert_eq!(w.snapshot(), before);
    assert_eq!(c.links(), vec!["lo".to_string()]);
}
