//! Delegation: running another plugin (the IPAM plugin) found on `CNI_PATH`, with the
//! caller's environment and the caller's full config on stdin (SPEC §4).
//!
//! Call this from a thread in the host network namespace: the child inherits the calling
//! thread's namespace.

use crate::error::{CniError, Code};
use crate::result::CniResult;
use crate::skel::Request;
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
    child: std::process::Child,
    plugin_type: String,
    bin: PathBuf,
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
        child,
        plugin_type: plugin_type.to_string(),
        bin: bin.to_path_buf(),
    })
}

impl Running {
    /// Waits for the delegate; its stdout on success, its error object otherwise.
    pub fn wait(self) -> Result<Vec<u8>, CniError> {
        let Running {
            child,
            plugin_type,
            bin,
        } = self;
        let out = child.wait_with_output().map_err(|e| {
            CniError::internal(format!("failed to wait for {}: {e}", bin.display()))
        })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Err(CniError::internal(format!(
                "netplugin {plugin_type} failed with no error message: {}",
                out.status
            )));
        }
        Err(parse_error(&out.stdout).unwrap_or_else(|| {
            CniError::internal(format!(
                "netplugin {plugin_type} failed but error parsing its diagnostic message {:?}",
                String::from_utf8_lossy(&out.stdout)
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
