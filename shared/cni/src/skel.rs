//! Verb dispatch: the process-level contract every plugin binary shares (environment, stdin,
//! version gates, the one JSON document on stdout, exit status), so that a plugin only
//! implements [`Plugin`].

use crate::config::NetConf;
use crate::env::{Command, Env};
use crate::error::{CniError, Code};
use crate::result::CniResult;
use crate::version::{self, CURRENT, SUPPORTED, Semver, Version};
use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// One invocation: the validated environment and the parsed config.
#[derive(Clone, Debug)]
pub struct Request {
    pub env: Env,
    /// stdin exactly as received, for delegation (IPAM gets the full parent config).
    pub stdin: Vec<u8>,
    pub conf: NetConf,
    /// The negotiated version; results are printed in it.
    pub version: Version,
}

impl Request {
    /// The parsed `prevResult`, if any. It is part of the configuration: a value that does
    /// not parse is invalid configuration (code 7; the reference says 999).
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match self.conf.prev_result_value() {
            None => Ok(None),
            Some(v) => CniResult::parse(v, &self.conf.cni_version)
                .map(Some)
                .map_err(|e| {
                    CniError::new(Code::InvalidConfig, e.msg)
                        .with_details(e.details)
                        .context("could not parse prevResult")
                }),
        }
    }

    /// The request [`dispatch`] builds for `command` from this stdin and `CNI_ARGS`, with
    /// placeholder attachment variables (container `fuzz`, `eth0`, netns `/nonexistent`,
    /// no `CNI_PATH`): the public entry point of each plugin's configuration parsing, for
    /// fuzzing and tests. Fails as the skel would on stdin (codes 6, 7) or a version it
    /// cannot negotiate (1).
    pub fn synthetic(command: &str, stdin: &[u8], cni_args: &str) -> Result<Request, CniError> {
        let conf = NetConf::parse(stdin)?;
        let version = Version::negotiate(&conf.cni_version)?;
        Ok(Request {
            env: Env {
                command: Command::parse(command),
                container_id: "fuzz".into(),
                netns: "/nonexistent".into(),
                ifname: "eth0".into(),
                args: cni_args.into(),
                path: Vec::new(),
                netns_override: false,
            },
            stdin: stdin.to_vec(),
            conf,
            version,
        })
    }
}

/// A CNI plugin: one method per verb. Errors are printed as CNI error objects.
pub trait Plugin {
    /// The plugin's name for the "about" text (`CNI <name> plugin <version>`).
    fn name(&self) -> &'static str;
    /// ADD: returns the result; skel prints it in the config's version.
    fn add(&self, req: &Request) -> Result<CniResult, CniError>;
    /// DEL: must succeed when there is nothing left to remove.
    fn del(&self, req: &Request) -> Result<(), CniError>;
    /// CHECK: verify what ADD created.
    fn check(&self, req: &Request) -> Result<(), CniError>;
    /// STATUS: can this plugin serve ADD now?
    fn status(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
    /// GC: remove state of attachments not in the valid list.
    fn gc(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
}

/// The process seam: environment, stdin, stdout, stderr, and the "own netns" probe.
pub trait Io {
    fn var(&self, key: &str) -> Option<String>;
    fn read_stdin(&mut self) -> std::io::Result<Vec<u8>>;
    fn write_stdout(&mut self, s: &str);
    fn write_stderr(&mut self, s: &str);
    /// True if `netns_path` is the network namespace this process runs in.
    fn is_own_netns(&self, netns_path: &str) -> bool;
}

/// The most stdin a plugin reads (a config is a few KiB; a GC list of 100,000 attachments is
/// about 6 MiB). More is refused (code 6) instead of exhausting memory.
pub const MAX_STDIN: u64 = 64 * 1024 * 1024;

/// The real process environment.
pub struct ProcessIo;

impl Io for ProcessIo {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
    fn read_stdin(&mut self) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        std::io::stdin()
            .lock()
            .take(MAX_STDIN + 1)
            .read_to_end(&mut buf)?;
        Ok(buf)
    }
    fn write_stdout(&mut self, s: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
    }
    fn write_stderr(&mut self, s: &str) {
        let _ = std::io::stderr().write_all(s.as_bytes());
    }
    fn is_own_netns(&self, netns_path: &str) -> bool {
        use std::os::unix::fs::MetadataExt;
        let (Ok(own), Ok(target)) = (
            std::fs::metadata("/proc/thread-self/ns/net"),
            std::fs::metadata(netns_path),
        ) else {
            return false;
        };
        own.dev() == target.dev() && own.ino() == target.ino()
    }
}

/// The VERSION reply: compact JSON and a newline, version always [`CURRENT`].
pub fn version_reply() -> String {
    let list: Vec<String> = SUPPORTED.iter().map(|v| format!("\"{v}\"")).collect();
    format!(
        "{{\"cniVersion\":\"{CURRENT}\",\"supportedVersions\":[{}]}}\n",
        list.join(",")
    )
}

/// The text printed on stderr when `CNI_COMMAND` is empty.
pub fn about(name: &str) -> String {
    format!(
        "CNI {name} plugin v{}\nCNI protocol versions supported: {}\n",
        env!("CARGO_PKG_VERSION"),
        SUPPORTED.join(", ")
    )
}

/// Runs one invocation through `io` and returns the exit status (0 or 1).
pub fn dispatch(plugin: &dyn Plugin, io: &mut dyn Io) -> i32 {
    if io.var("CNI_COMMAND").unwrap_or_default().is_empty() {
        io.write_stderr(&about(plugin.name()));
        return 0;
    }
    let mut err_version = CURRENT.to_string();
    match dispatch_inner(plugin, io, &mut err_version) {
        Ok(Some(out)) => {
            io.write_stdout(&out);
            0
        }
        Ok(None) => 0,
        Err(e) => {
            io.write_stdout(&e.to_json(&err_version));
            1
        }
    }
}

fn dispatch_inner(
    plugin: &dyn Plugin,
    io: &mut dyn Io,
    err_version: &mut String,
) -> Result<Option<String>, CniError> {
    let env = Env::from_lookup(|k| io.var(k))?;
    if env.command == Command::Version {
        return Ok(Some(version_reply()));
    }
    let stdin = io
        .read_stdin()
        .map_err(|e| CniError::new(Code::Io, format!("error reading from stdin: {e}")))?;
    if stdin.len() as u64 > MAX_STDIN {
        return Err(CniError::new(
            Code::DecodeFailure,
            format!(
                "error unmarshall network config: stdin is larger than {} MiB",
                MAX_STDIN >> 20
            ),
        ));
    }
    let conf = NetConf::parse(&stdin)?;
    if Version::parse(&conf.cni_version).is_some() {
        *err_version = conf.cni_version.clone();
    }
    if let Command::Unknown(c) = &env.command {
        return Err(CniError::new(
            Code::InvalidEnv,
            format!("unknown CNI_COMMAND: {c}"),
        ));
    }
    if let Some((min, msg)) = version::gate(env.command.as_str()) {
        let have = Semver::parse(&conf.cni_version)?;
        if have < min {
            return Err(
                CniError::new(Code::IncompatibleVersion, msg).with_details(format!(
                    "config is {:?}, {} needs at least \"{}.{}.{}\"",
                    conf.cni_version,
                    env.command.as_str(),
                    min.0,
                    min.1,
                    min.2
                )),
            );
        }
    }
    if env.command == Command::Gc {
        // The valid-attachments list is part of the protocol: its shape is checked for
        // every plugin, whether or not it keeps state.
        crate::gc::valid_attachments(&conf.raw)?;
    }
    let version = Version::negotiate(&conf.cni_version)?;
    if matches!(env.command, Command::Add | Command::Del)
        && !env.netns_override
        && !env.netns.is_empty()
        && io.is_own_netns(&env.netns)
    {
        return Err(CniError::new(
            Code::InvalidNetns,
            "plugin's netns and netns from CNI_NETNS should not be the same",
        ));
    }
    let req = Request {
        env,
        stdin,
        conf,
        version,
    };
    match req.env.command {
        Command::Add => {
            let result = plugin.add(&req)?;
            Ok(Some(result.to_json(version)?))
        }
        Command::Del => plugin.del(&req).map(|_| None),
        Command::Check => plugin.check(&req).map(|_| None),
        Command::Status => plugin.status(&req).map(|_| None),
        Command::Gc => plugin.gc(&req).map(|_| None),
        Command::Version | Command::Unknown(_) => Ok(None),
    }
}

/// The binary entry point: dispatches with the real process environment and exits. A panic
/// becomes a code-999 error object (and drop guards still roll back what was created).
pub fn run(plugin: &dyn Plugin) -> ! {
    std::panic::set_hook(Box::new(|info| {
        let _ = writeln!(std::io::stderr(), "internal error: {info}");
    }));
    std::process::exit(dispatch_guarded(plugin, &mut ProcessIo))
}

/// [`dispatch`], with a panic turned into a code-999 error object on `io`'s stdout (exit
/// status 1), as [`run`] does for a whole process.
pub fn dispatch_guarded(plugin: &dyn Plugin, io: &mut dyn Io) -> i32 {
    match catch_unwind(AssertUnwindSafe(|| dispatch(plugin, &mut *io))) {
        Ok(code) => code,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            let e = CniError::internal(format!("internal error: the plugin panicked: {what}"));
            io.write_stdout(&e.to_json(CURRENT));
            1
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An in-memory [`Io`] for tests.
    pub struct MockIo {
        pub vars: HashMap<String, String>,
        pub stdin: Vec<u8>,
        pub stdout: String,
        pub stderr: String,
        pub own_netns: String,
    }

    impl MockIo {
        pub fn new(vars: &[(&str, &str)], stdin: &str) -> MockIo {
            MockIo {
                vars: vars
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                stdin: stdin.as_bytes().to_vec(),
                stdout: String::new(),
                stderr: String::new(),
                own_netns: "/proc/self/ns/net".into(),
            }
        }
    }

    impl Io for MockIo {
        fn var(&self, key: &str) -> Option<String> {
            self.vars.get(key).cloned()
        }
        fn read_stdin(&mut self) -> std::io::Result<Vec<u8>> {
            Ok(self.stdin.clone())
        }
        fn write_stdout(&mut self, s: &str) {
            self.stdout.push_str(s);
        }
        fn write_stderr(&mut self, s: &str) {
            self.stderr.push_str(s);
        }
        fn is_own_netns(&self, p: &str) -> bool {
            p == self.own_netns
        }
    }

    struct Echo;
    impl Plugin for Echo {
        fn name(&self) -> &'static str {
            "echo"
        }
        fn add(&self, req: &Request) -> Result<CniResult, CniError> {
            if req.conf.raw.get("boom").is_some() {
                return Err(CniError::internal("boom"));
            }
            Ok(CniResult {
                ips: vec![crate::IpConfig {
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: None,
                    interface: None,
                }],
                ..Default::default()
            })
        }
        fn del(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
    }

    fn run_with(vars: &[(&str, &str)], stdin: &str) -> (i32, MockIo) {
        let mut io = MockIo::new(vars, stdin);
        let code = dispatch(&Echo, &mut io);
        (code, io)
    }

    const ADD: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    fn err_of(io: &MockIo) -> serde_json::Value {
        serde_json::from_str(&io.stdout).unwrap()
    }

    #[test]
    fn version_ignores_stdin() {
        let (code, io) = run_with(&[("CNI_COMMAND", "VERSION")], "garbage");
        assert_eq!(code, 0);
        assert_eq!(
            io.stdout,
            "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
        );
    }

    #[test]
    fn about_text_without_command() {
        let (code, io) = run_with(&[], "");
        assert_eq!(code, 0);
        assert!(io.stdout.is_empty());
        assert!(io.stderr.starts_with("CNI echo plugin v"));
        assert!(
            io.stderr
                .contains("0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0")
        );
    }

    #[test]
    fn add_prints_in_config_version() {
        let (code, io) = run_with(&ADD, r#"{"cniVersion":"0.4.0","name":"n","type":"echo"}"#);
        assert_eq!(code, 0, "{}", io.stdout);
        let v = err_of(&io);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        assert!(!io.stdout.ends_with('\n'));
    }

    #[test]
    fn error_codes() {
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, u64, &'a str);
        let cases: Vec<Case> = vec![
            (ADD.to_vec(), "{bad", 6, "error unmarshall network config"),
            (
                vec![("CNI_COMMAND", "FOO"), ("CNI_PATH", "/x")],
                r#"{"cniVersion":"1.0.0","name":"n"}"#,
                4,
                "unknown CNI_COMMAND: FOO",
            ),
            (
                ADD.to_vec(),
                r#"{"cniVersion":"9.9.9","name":"n"}"#,
                1,
                "incompatible CNI versions",
            ),
            (
                vec![("CNI_COMMAND", "ADD"), ("CNI_PATH", "/x")],
                "{}",
                4,
                "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing",
            ),
            (
                ADD.iter()
                    .map(|&(k, v)| {
                        if k == "CNI_COMMAND" {
                            (k, "CHECK")
                        } else {
                            (k, v)
                        }
                    })
                    .collect(),
                r#"{"cniVersion":"0.3.1","name":"n"}"#,
                1,
                "config version does not allow CHECK",
            ),
            (
                vec![("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
                r#"{"cniVersion":"1.0.0","name":"n"}"#,
                1,
                "config version does not allow GC",
            ),
            (
                vec![("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")],
                r#"{"cniVersion":"0.4.0","name":"n"}"#,
                1,
                "config version does not allow STATUS",
            ),
            (
                vec![("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")],
                r#"{"cniVersion":"one","name":"n"}"#,
                6,
                "invalid version",
            ),
            (
                ADD.to_vec(),
                r#"{"cniVersion":"1.0.0"}"#,
                7,
                "missing network name",
            ),
            (
                ADD.to_vec(),
                r#"{"cniVersion":"1.0.0","name":"n","boom":1}"#,
                999,
                "boom",
            ),
        ];
        for (vars, stdin, code, msg) in cases {
            let (rc, io) = run_with(&vars, stdin);
            assert_eq!(rc, 1, "{stdin}");
            let v = err_of(&io);
            assert_eq!(v["code"], code, "{stdin}: {}", io.stdout);
            assert!(
                v["msg"].as_str().unwrap().starts_with(msg),
                "{stdin}: {}",
                io.stdout
            );
            assert!(v["cniVersion"].is_string());
        }
    }

    #[test]
    fn oversized_stdin_gc_lists_and_gate_details() {
        let mut big = br#"{"cniVersion":"1.0.0","name":"n","x":""#.to_vec();
        big.resize(MAX_STDIN as usize + 1, b'a');
        let mut io = MockIo::new(&ADD, "");
        io.stdin = big;
        assert_eq!(dispatch(&Echo, &mut io), 1);
        let v = err_of(&io);
        assert_eq!(v["code"], 6);
        assert!(v["msg"].as_str().unwrap().contains("64 MiB"), "{v}");
        // A GC list of the wrong shape is refused by every plugin.
        let (rc, io) = run_with(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
            r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":1}]}"#,
        );
        assert_eq!(rc, 1);
        assert_eq!(err_of(&io)["code"], 7);
        // The version gate says which version it got and which it needs.
        let (_, io) = run_with(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
        );
        assert_eq!(
            err_of(&io)["details"],
            "config is \"1.0.0\", GC needs at least \"1.1.0\""
        );
    }

    #[test]
    fn error_carries_config_version() {
        let (_, io) = run_with(&ADD, r#"{"cniVersion":"0.3.1","name":"n","boom":1}"#);
        assert_eq!(err_of(&io)["cniVersion"], "0.3.1");
        let (_, io) = run_with(&ADD, r#"{"cniVersion":"7.7.7","name":"n"}"#);
        assert_eq!(err_of(&io)["cniVersion"], CURRENT);
    }

    #[test]
    fn own_netns_is_rejected_before_add() {
        let vars: Vec<(&str, &str)> = ADD
            .iter()
            .map(|&(k, v)| {
                if k == "CNI_NETNS" {
                    (k, "/proc/self/ns/net")
                } else {
                    (k, v)
                }
            })
            .collect();
        let (rc, io) = run_with(&vars, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(rc, 1);
        assert_eq!(err_of(&io)["code"], 8);
        let mut with_override = vars.clone();
        with_override.push(("CNI_NETNS_OVERRIDE", "true"));
        let (rc, _) = run_with(&with_override, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(rc, 0);
    }

    #[test]
    fn del_check_gc_status_print_nothing() {
        for cmd in ["DEL", "CHECK", "GC", "STATUS"] {
            let vars: Vec<(&str, &str)> = ADD
                .iter()
                .map(|&(k, v)| if k == "CNI_COMMAND" { (k, cmd) } else { (k, v) })
                .collect();
            let (rc, io) = run_with(&vars, r#"{"cniVersion":"1.1.0","name":"n"}"#);
            assert_eq!(rc, 0, "{cmd}: {}", io.stdout);
            assert!(io.stdout.is_empty());
        }
    }
}
