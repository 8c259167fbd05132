//! containerd's CRI calling convention, replayed with the test kit (Debian 12 ships no
//! crictl, so the kubelet side cannot be driven for real): the pod's loopback network
//! (`CNI_IFNAME=lo`, 0.3.1) next to `conf-examples/10-containerd-net.conflist`, random-order
//! `CNI_ARGS` with `IgnoreUnknown=1`, CapitalCase `portMappings` with `HostIP: ""`, the pod IP
//! found through `ips[].interface`, and StopPodSandbox's three DELs (the first with the netns
//! and `prevResult`, two more with `CNI_NETNS=""` and no `prevResult`) — all must succeed and
//! leave nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cni_testkit::{Attachment, Node, Runtime, TempDir, bin_dir, require_root};
use serde_json::{Value, json};
use std::path::PathBuf;

fn example(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../conf-examples")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn cri_pod_lifecycle_with_loopback_capitalcase_ports_and_triple_del() {
    require_root!();
    let data = TempDir::new("cri");
    let mut conf = example("10-containerd-net.conflist");
    conf["plugins"][0]["ipam"]["dataDir"] = json!(data.path());
    let node = Node::new("cri");
    let pod = node.container("cri-pod");
    let net = Runtime::new(Some(&node), conf, vec![bin_dir()]);
    let lo = Runtime::new(
        Some(&node),
        example("99-loopback.conflist"),
        vec![bin_dir()],
    );
    let sandbox_id = "a1ac5bbb0bfcb9994990fc9cc6e5581629e6cac438d09f5bb24284f0f0eceb6c";
    // CRI builds CNI_ARGS from a Go map: the order differs on every call.
    let args = [
        format!("K8S_POD_INFRA_CONTAINER_ID={sandbox_id}"),
        "K8S_POD_UID=7e02d56e-d093-4d07-9577-0486ceda4198".to_string(),
        "IgnoreUnknown=1".to_string(),
        "K8S_POD_NAMESPACE=default".to_string(),
        "K8S_POD_NAME=pod1".to_string(),
    ];
    let caps = json!({
        "portMappings": [{"HostPort": 8101, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
        "bandwidth": {"IngressRate": 0, "EgressRate": 0},
        "io.kubernetes.cri.pod-annotations": {"a": "b"}
    });
    let mut att = Attachment::new(sandbox_id, &pod.path()).with_caps(caps.clone());
    att.cni_args = args.join(";");
    let mut lo_att = Attachment::new(sandbox_id, &pod.path());
    lo_att.ifname = "lo".into();
    lo_att.cni_args = att.cni_args.clone();

    // RunPodSandbox: loopback, then the network.
    let lo_result = lo
        .add(&lo_att)
        .unwrap_or_else(|e| panic!("loopback ADD: {e}"));
    assert_eq!(lo_result["interfaces"][0]["name"], "lo");
    let mut rotated = args.clone();
    rotated.rotate_left(2);
    att.cni_args = rotated.join(";");
    let result = net.add(&att).unwrap_or_else(|e| panic!("ADD: {e}"));

    // go-cni: the pod IP is the IP whose interface index names eth0 in this sandbox.
    let interfaces = result["interfaces"].as_array().unwrap();
    let pod_ips: Vec<&str> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|ip| {
            let i = ip["interface"].as_u64().unwrap() as usize;
            assert!(
                i < interfaces.len(),
                "interface index out of range: {result}"
            );
            interfaces[i]["name"] == "eth0"
                && interfaces[i]["sandbox"] == pod.path().display().to_string()
        })
        .map(|ip| ip["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        pod_ips.len(),
        2,
        "one IPv4 and one IPv6 pod IP on eth0: {result}"
    );
    let v4 = pod_ips[0].split('/').next().unwrap();
    assert!(pod.ip(&["-4", "addr", "show", "eth0"]).contains(v4));

    // The CapitalCase mapping was published.
    let nat = node.iptables_save(false);
    assert!(
        nat.contains("--dport 8101") && nat.contains(&format!("{v4}:80")),
        "HostPort 8101 -> {v4}:80 not published:\n{nat}"
    );
    net.check(&att).unwrap_or_else(|e| panic!("CHECK: {e}"));

    // StopPodSandbox: loopback DEL, then the network DEL with netns and prevResult.
    lo.del(&lo_att)
        .unwrap_or_else(|e| panic!("loopback DEL: {e}"));
    att.cni_args = args.iter().rev().cloned().collect::<Vec<_>>().join(";");
    net.del(&att).unwrap_or_else(|e| panic!("DEL: {e}"));
    // The kubelet stops the sandbox again and RemovePodSandbox stops it once more: no netns,
    // no prevResult (the cache is gone), runtimeConfig still sent.
    let mut gone = att.clone();
    gone.netns = String::new();
    let mut lo_gone = lo_att.clone();
    lo_gone.netns = String::new();
    for round in 0..2 {
        lo.del(&lo_gone)
            .unwrap_or_else(|e| panic!("loopback DEL #{round}: {e}"));
        net.del(&gone)
            .unwrap_or_else(|e| panic!("DEL without netns #{round}: {e}"));
    }

    assert!(
        !node.links().iter().any(|l| l.starts_with("veth")),
        "veth left: {:?}",
        node.links()
    );
    for v6 in [false, true] {
        let rules = node.iptables_save(v6);
        assert!(!rules.contains(sandbox_id), "rules left:\n{rules}");
        assert!(
            !rules.contains(":CNI-DN-") && !rules.contains("-j CNI-DN-"),
            "chains left:\n{rules}"
        );
    }
    let left: Vec<String> = std::fs::read_dir(data.path().join("containerd-net"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert!(left.is_empty(), "reservations left: {left:?}");
}
