//! Every binary speaks the CNI process protocol: VERSION, and the right error object for
//! each kind of bad input, before touching anything.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cni_testkit::{PluginOutput, bin, run_plugin};
use serde_json::Value;

const PLUGINS: [&str; 4] = ["bridge", "host-local", "portmap", "loopback"];

fn run(plugin: &str, env: &[(&str, &str)], stdin: &str) -> PluginOutput {
    run_plugin(None, &bin(plugin), env, stdin)
}

fn add_env(cmd: &str) -> Vec<(&str, &str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/nonexistent/netns"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/nonexistent"),
    ]
}

fn assert_error(out: &PluginOutput, code: u64, msg: &str) {
    assert_eq!(out.status, 1, "{out}");
    let v = out.json();
    assert_eq!(v["code"], code, "{out}");
    assert!(v["msg"].as_str().unwrap().contains(msg), "{out}");
    assert!(v["cniVersion"].is_string(), "{out}");
}

#[test]
fn version_reply_is_exact() {
    for p in PLUGINS {
        // podman's probe: dummy env, stdin ignored.
        let out = run(
            p,
            &[
                ("CNI_COMMAND", "VERSION"),
                ("CNI_CONTAINERID", ""),
                ("CNI_NETNS", "dummy"),
                ("CNI_IFNAME", "dummy"),
                ("CNI_PATH", "dummy"),
            ],
            r#"{"cniVersion":"1.0.0"}"#,
        );
        assert!(out.ok(), "{p}: {out}");
        assert_eq!(
            out.stdout,
            "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
        );
    }
}

#[test]
fn about_text_on_empty_command() {
    for p in PLUGINS {
        let out = run(p, &[], "");
        assert!(out.ok());
        assert!(out.stdout.is_empty());
        assert!(
            out.stderr.starts_with(&format!("CNI {p} plugin v")),
            "{out}"
        );
        assert!(out.stderr.contains(
            "CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"
        ));
    }
}

#[test]
fn bad_input_gets_the_right_error_object() {
    let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"x"}"#;
    for p in PLUGINS {
        assert_error(
            &run(p, &add_env("ADD"), "{not json"),
            6,
            "error unmarshall network config",
        );
        assert_error(
            &run(p, &add_env("FOO"), conf),
            4,
            "unknown CNI_COMMAND: FOO",
        );
        assert_error(
            &run(p, &add_env("ADD"), r#"{"cniVersion":"9.9.9","name":"n"}"#),
            1,
            "incompatible CNI versions",
        );
        assert_error(
            &run(p, &[("CNI_COMMAND", "ADD"), ("CNI_PATH", "/x")], conf),
            4,
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing",
        );
        assert_error(
            &run(p, &add_env("CHECK"), r#"{"cniVersion":"0.3.1","name":"n"}"#),
            1,
            "config version does not allow CHECK",
        );
        assert_error(
            &run(
                p,
                &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
                r#"{"cniVersion":"1.0.0","name":"n"}"#,
            ),
            1,
            "config version does not allow GC",
        );
        let mut bad_id = add_env("ADD");
        bad_id[1] = ("CNI_CONTAINERID", "a;rm -rf /");
        assert_error(
            &run(p, &bad_id, conf),
            4,
            "invalid characters in containerID",
        );
        let mut bad_if = add_env("ADD");
        bad_if[3] = ("CNI_IFNAME", "../../etc");
        assert_error(
            &run(p, &bad_if, conf),
            4,
            "interface name contains / or : or whitespace characters",
        );
        assert_error(
            &run(
                p,
                &add_env("ADD"),
                r#"{"cniVersion":"1.0.0","name":"../x"}"#,
            ),
            7,
            "invalid characters found in network name",
        );
        // The error carries the config's version.
        let out = run(p, &add_env("FOO"), r#"{"cniVersion":"0.4.0","name":"n"}"#);
        assert_eq!(out.json()["cniVersion"], Value::from("0.4.0"));
    }
}
