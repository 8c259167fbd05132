//! Delegation: running another plugin (the IPAM plugin) found on `CNI_PATH`, with the
//! caller's environment and the caller's full config on stdin (SPEC §4).
//!
//! Call this from a thread in the host network namespace: the child inherits the calling
//! thread's namespace.
//!
//! A binary may carry a delegate compiled in ([`register_builtin`]: bridge carries
//! host-local). When the file found on `CNI_PATH` is that delegate built from the same
//! sources (its GNU build ID says so), it runs in a thread through the same [`skel`](crate::skel)
//! dispatch, with the same environment, stdin and stdout, instead of in a child process: one
//! process start (about 0.7 ms of CPU) less per call, and nothing else differs. Any other
//! file, including another build of the same plugin, is executed.

use crate::error::{CniError, Code};
use crate::result::CniResult;
use crate::skel::{Plugin, Request};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Finds plugin `plugin_type` in the `CNI_PATH` directories, in order. A `type` that is not a
/// plain file name is rejected (code 7) so that nothing outside `CNI_PATH` can be run.
pub fn find_plugin(plugin_type: &str, path: &[String]) -> Result<PathBuf, CniError> {
    if plugin_type.is_empty()
        || plugin_type == "."
        || plugin_type == ".."
        || plugin_type.contains('/')
        || plugin_type.contains('\0')
    {
        return Err(CniError::invalid_config(format!(
            "invalid plugin type {plugin_type:?}: it must be a plain file name found in CNI_PATH"
        )));
    }
    for dir in path {
        let candidate = PathBuf::from(dir).join(plugin_type);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(CniError::internal(format!(
        "failed to find plugin {plugin_type:?} in path [{}]",
        path.join(" ")
    )))
}

/// Runs `plugin_type` with `CNI_COMMAND=command`, the current environment otherwise, and
/// `stdin`. Returns its stdout on success; on failure its error object passes through
/// unchanged.
pub fn exec(
    plugin_type: &str,
    command: &str,
    path: &[String],
    stdin: &[u8],
) -> Result<Vec<u8>, CniError> {
    start(plugin_type, command, path, stdin)?.wait()
}

/// A delegated plugin that has been started and not waited for yet.
pub struct Running {
    delegate: Delegate,
    plugin_type: String,
    bin: PathBuf,
}

/// How a delegate runs: its binary in a child process, or this binary's copy of it in a
/// thread (see [`Builtin`]).
enum Delegate {
    Child(std::process::Child),
    Thread(std::thread::JoinHandle<(i32, Vec<u8>)>),
}

/// A plugin compiled into this binary that may run in-process in place of its binary on
/// `CNI_PATH`: only when that binary carries `build_id`, i.e. was built from the same sources
/// by the same compiler, so that running it in a thread does exactly what executing it would
/// (same environment, stdin, stdout and exit status; stderr is shared) minus the process.
pub struct Builtin {
    /// The `type` it answers to (`host-local`).
    pub plugin_type: &'static str,
    pub plugin: &'static (dyn Plugin + Sync),
    /// The GNU build ID (lowercase hex) the plugin's own binary has when built from these
    /// sources.
    pub build_id: &'static str,
}

static BUILTIN: std::sync::OnceLock<Builtin> = std::sync::OnceLock::new();

/// Registers this binary's [`Builtin`] (once, before dispatch; later calls are ignored).
pub fn register_builtin(b: Builtin) {
    let _ = BUILTIN.set(b);
}

/// The registered builtin for `plugin_type`, if `bin` is its binary built from these sources
/// and executable (so that executing it would have run the same code).
fn builtin_for(bin: &std::path::Path, plugin_type: &str) -> Option<&'static Builtin> {
    use std::os::unix::fs::PermissionsExt;
    let b = BUILTIN.get().filter(|b| b.plugin_type == plugin_type)?;
    let mut f = std::fs::File::open(bin).ok()?;
    if f.metadata().ok()?.permissions().mode() & 0o111 == 0 {
        return None;
    }
    let id = crate::elf::build_id(&mut f)?;
    let hex: String = id.iter().map(|x| format!("{x:02x}")).collect();
    (hex == b.build_id).then_some(b)
}

/// The [`Io`](crate::skel::Io) of an in-process delegate: the process environment with
/// `CNI_COMMAND` replaced, the given stdin, stdout captured, stderr shared.
struct DelegateIo {
    command: String,
    stdin: Vec<u8>,
    stdout: Vec<u8>,
}

impl crate::skel::Io for DelegateIo {
    fn var(&self, key: &str) -> Option<String> {
        if key == "CNI_COMMAND" {
            Some(self.command.clone())
        } else {
            std::env::var(key).ok()
        }
    }
    fn read_stdin(&mut self) -> std::io::Result<Vec<u8>> {
        Ok(std::mem::take(&mut self.stdin))
    }
    fn write_stdout(&mut self, s: &str) {
        self.stdout.extend_from_slice(s.as_bytes());
    }
    fn write_stderr(&mut self, s: &str) {
        let _ = std::io::stderr().write_all(s.as_bytes());
    }
    fn is_own_netns(&self, netns_path: &str) -> bool {
        crate::skel::ProcessIo.is_own_netns(netns_path)
    }
}

/// Starts `plugin_type` like [`exec`] and returns without waiting, so that the caller can
/// work (e.g. delete a link) while the delegate runs. Collect it with [`Running::wait`].
pub fn start(
    plugin_type: &str,
    command: &str,
    path: &[String],
    stdin: &[u8],
) -> Result<Running, CniError> {
    let bin = find_plugin(plugin_type, path)?;
    start_bin(&bin, plugin_type, command, stdin)
}

/// Runs the plugin binary `bin` (already found on `CNI_PATH`) like [`exec`].
pub fn exec_bin(
    bin: &std::path::Path,
    plugin_type: &str,
    command: &str,
    stdin: &[u8],
) -> Result<Vec<u8>, CniError> {
    start_bin(bin, plugin_type, command, stdin)?.wait()
}

/// Starts the plugin binary `bin` like [`start`].
pub fn start_bin(
    bin: &std::path::Path,
    plugin_type: &str,
    command: &str,
    stdin: &[u8],
) -> Result<Running, CniError> {
    if let Some(b) = builtin_for(bin, plugin_type) {
        let mut io = DelegateIo {
            command: command.to_string(),
            stdin: stdin.to_vec(),
            stdout: Vec::new(),
        };
        let plugin = b.plugin;
        // A new thread starts in the calling thread's network namespace, as a child would.
        let handle = std::thread::Builder::new()
            .name(plugin_type.to_string())
            .spawn(move || {
                let code = crate::skel::dispatch_guarded(plugin, &mut io);
                (code, io.stdout)
            })
            .map_err(|e| CniError::internal(format!("failed to run {}: {e}", bin.display())))?;
        return Ok(Running {
            delegate: Delegate::Thread(handle),
            plugin_type: plugin_type.to_string(),
            bin: bin.to_path_buf(),
        });
    }
    let mut child = Command::new(bin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CniError::internal(format!("failed to run {}: {e}", bin.display())))?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading stdin closes the pipe; its exit status decides.
        let _ = input.write_all(stdin);
    }
    Ok(Running {
        delegate: Delegate::Child(child),
        plugin_type: plugin_type.to_string(),
        bin: bin.to_path_buf(),
    })
}

impl Running {
    /// Waits for the delegate; its stdout on success, its error object otherwise.
    pub fn wait(self) -> Result<Vec<u8>, CniError> {
        let Running {
            delegate,
            plugin_type,
            bin,
        } = self;
        let waited = |e: &dyn std::fmt::Display| {
            CniError::internal(format!("failed to wait for {}: {e}", bin.display()))
        };
        let (status, stdout) = match delegate {
            Delegate::Child(child) => {
                let out = child.wait_with_output().map_err(|e| waited(&e))?;
                if out.status.success() {
                    return Ok(out.stdout);
                }
                (out.status.to_string(), out.stdout)
            }
            Delegate::Thread(handle) => {
                let (code, stdout) = handle.join().map_err(|_| waited(&"it panicked"))?;
                if code == 0 {
                    return Ok(stdout);
                }
                (format!("exit status: {code}"), stdout)
            }
        };
        if stdout.iter().all(u8::is_ascii_whitespace) {
            return Err(CniError::internal(format!(
                "netplugin {plugin_type} failed with no error message: {status}"
            )));
        }
        Err(parse_error(&stdout).unwrap_or_else(|| {
            CniError::internal(format!(
                "netplugin {plugin_type} failed but error parsing its diagnostic message {:?}",
                String::from_utf8_lossy(&stdout)
            ))
        }))
    }
}

/// Decodes a plugin's error object.
pub fn parse_error(stdout: &[u8]) -> Option<CniError> {
    let v: Value = serde_json::from_slice(stdout).ok()?;
    let code = v.get("code")?.as_u64()?;
    Some(CniError {
        code: u32::try_from(code).unwrap_or(u32::MAX),
        msg: v
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        details: v
            .get("details")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}

fn decode_add(out: &[u8], cni_version: &str) -> Result<CniResult, CniError> {
    let v: Value = serde_json::from_slice(out).map_err(|e| {
        CniError::new(
            Code::DecodeFailure,
            format!("failed to decode the IPAM plugin's result: {e}"),
        )
    })?;
    CniResult::parse(&v, cni_version)
}

/// An IPAM ADD started by [`Ipam::start_add`]. Dropped without [`PendingAdd::finish`] (an
/// earlier step failed), it still waits for the delegate: a rollback's IPAM DEL sent after
/// that can then not overtake the ADD and leave its reservation behind.
pub struct PendingAdd<'a> {
    running: Option<Running>,
    req: &'a Request,
}

impl PendingAdd<'_> {
    /// Waits for the delegate; its result in the newest schema, or its error.
    pub fn finish(mut self) -> Result<CniResult, CniError> {
        let running = self
            .running
            .take()
            .ok_or_else(|| CniError::internal("IPAM ADD collected twice"))?;
        decode_add(&running.wait()?, &self.req.conf.cni_version)
    }
}

impl Drop for PendingAdd<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.wait();
        }
    }
}

/// The IPAM plugin of a request (`ipam.type`).
pub struct Ipam<'a> {
    req: &'a Request,
}

impl<'a> Ipam<'a> {
    /// The request's IPAM delegate; `None` in L2 mode (no `ipam.type`).
    pub fn of(req: &'a Request) -> Option<Ipam<'a>> {
        if req.conf.ipam_type.is_empty() {
            None
        } else {
            Some(Ipam { req })
        }
    }

    fn run(&self, command: &str) -> Result<Vec<u8>, CniError> {
        let ty = &self.req.conf.ipam_type;
        let bin = find_plugin(ty, &self.req.env.path).map_err(|e| e.context("ipam.type"))?;
        exec_bin(&bin, ty, command, &self.req.stdin)
    }

    /// Starts IPAM ADD without waiting for it, so that the caller can set up links while
    /// the delegate allocates; collect the result with [`PendingAdd::finish`].
    pub fn start_add(&self) -> Result<PendingAdd<'a>, CniError> {
        let ty = &self.req.conf.ipam_type;
        let bin = find_plugin(ty, &self.req.env.path).map_err(|e| e.context("ipam.type"))?;
        Ok(PendingAdd {
            running: Some(start_bin(&bin, ty, "ADD", &self.req.stdin)?),
            req: self.req,
        })
    }

    /// IPAM DEL.
    pub fn del(&self) -> Result<(), CniError> {
        self.run("DEL").map(|_| ())
    }

    /// Starts IPAM DEL without waiting for it (see [`start`]).
    pub fn start_del(&self) -> Result<Running, CniError> {
        let ty = &self.req.conf.ipam_type;
        let bin = find_plugin(ty, &self.req.env.path).map_err(|e| e.context("ipam.type"))?;
        start_bin(&bin, ty, "DEL", &self.req.stdin)
    }

    /// IPAM CHECK.
    pub fn check(&self) -> Result<(), CniError> {
        self.run("CHECK").map(|_| ())
    }

    /// IPAM STATUS.
    pub fn status(&self) -> Result<(), CniError> {
        self.run("STATUS").map(|_| ())
    }

    /// IPAM GC.
    pub fn gc(&self) -> Result<(), CniError> {
        self.run("GC").map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_path_types() {
        for t in ["../host-local", "/bin/sh", "a/b", "", ".", ".."] {
            let e = find_plugin(t, &["/usr/bin".into()]).unwrap_err();
            assert_eq!(e.code, 7, "{t}");
        }
        let e = find_plugin("no-such-plugin-xyz", &["/usr/bin".into(), "/bin".into()]).unwrap_err();
        assert_eq!(
            e.msg,
            "failed to find plugin \"no-such-plugin-xyz\" in path [/usr/bin /bin]"
        );
    }

    #[test]
    fn searches_every_dir() {
        let p = find_plugin("sh", &["/nonexistent".into(), "/bin".into()]).unwrap();
        assert_eq!(p, PathBuf::from("/bin/sh"));
    }

    #[test]
    fn error_passes_through() {
        let dir = std::env::temp_dir().join(format!("cni-invoke-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("failer");
        std::fs::write(
            &script,
            "#!/bin/sh\ncat >/dev/null\nprintf '{\"code\": 11, \"msg\": \"busy\", \"details\": \"d\"}'\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = exec("failer", "ADD", &[dir.display().to_string()], b"{}").unwrap_err();
        assert_eq!(
            e,
            CniError {
                code: 11,
                msg: "busy".into(),
                details: "d".into()
            }
        );
        let ok = dir.join("ok");
        std::fs::write(&ok, "#!/bin/sh\nread x\necho \"$CNI_COMMAND $x\"\n").unwrap();
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = exec("ok", "DEL", &[dir.display().to_string()], b"in\n").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "DEL in\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A plugin answering only VERSION (through skel), for the in-process tests.
    struct Versioned;
    impl Plugin for Versioned {
        fn name(&self) -> &'static str {
            "versioned"
        }
        fn add(&self, _: &Request) -> Result<CniResult, CniError> {
            Err(CniError::internal("not used"))
        }
        fn del(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
    }

    #[test]
    fn a_binary_with_the_builtins_build_id_runs_in_process_and_no_other() {
        use std::os::unix::fs::PermissionsExt;
        // The test binary's own build ID stands for the builtin's; a copy of its first 4 KiB
        // (headers and notes) carries it but cannot run, so a success proves no exec.
        let exe = std::env::current_exe().unwrap();
        let Some(id) = crate::elf::build_id(&mut std::fs::File::open(&exe).unwrap()) else {
            eprintln!("note: this test binary has no build ID; skipped");
            return;
        };
        let hex: String = id.iter().map(|x| format!("{x:02x}")).collect();
        register_builtin(Builtin {
            plugin_type: "builtin-ipam",
            plugin: &Versioned,
            build_id: Box::leak(hex.into_boxed_str()),
        });
        let dir = std::env::temp_dir().join(format!("cni-builtin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut head = std::fs::read(&exe).unwrap();
        head.truncate(4096);
        let copy = dir.join("builtin-ipam");
        std::fs::write(&copy, &head).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = [dir.display().to_string()];
        let out = exec("builtin-ipam", "VERSION", &path, b"").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            crate::skel::version_reply()
        );

        // Not executable: executing it would fail, so running it in-process must not happen.
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(exec("builtin-ipam", "VERSION", &path, b"").is_err());

        // Another type with the same file is never the builtin.
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        let other = dir.join("other-ipam");
        std::fs::copy(&copy, &other).unwrap();
        assert!(exec("other-ipam", "VERSION", &path, b"").is_err());

        // Another build ID (one byte changed): the file is executed, and fails to run.
        let at = head
            .windows(id.len())
            .position(|w| w == id.as_slice())
            .unwrap();
        head[at] ^= 0xff;
        std::fs::write(&copy, &head).unwrap();
        assert!(exec("builtin-ipam", "VERSION", &path, b"").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_dropped_pending_add_is_waited_for() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cni-pending-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("done");
        let script = dir.join("slow-ipam");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncat >/dev/null\nsleep 0.3\ntouch {}\necho '{{}}'\n",
                marker.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let stdin =
            br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"slow-ipam"}}"#;
        let d = dir.display().to_string();
        let req = Request {
            env: crate::env::Env::from_lookup(|k| match k {
                "CNI_COMMAND" => Some("ADD".into()),
                "CNI_CONTAINERID" => Some("c".into()),
                "CNI_NETNS" => Some("/x".into()),
                "CNI_IFNAME" => Some("eth0".into()),
                "CNI_PATH" => Some(d.clone()),
                _ => None,
            })
            .unwrap(),
            stdin: stdin.to_vec(),
            conf: crate::config::NetConf::parse(stdin).unwrap(),
            version: crate::Version::V1_0_0,
        };
        let pending = Ipam::of(&req).unwrap().start_add().unwrap();
        assert!(!marker.exists(), "start_add must not wait");
        drop(pending);
        assert!(
            marker.exists(),
            "dropping a pending ADD waits for the delegate"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
