use cni_kernel::NetNs;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// What a plugin process printed and returned.
#[derive(Clone, Debug)]
pub struct PluginOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl PluginOutput {
    /// Exit status 0.
    pub fn ok(&self) -> bool {
        self.status == 0
    }

    /// stdout parsed as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// The CNI error code, if stdout is an error object.
    pub fn error_code(&self) -> Option<u64> {
        serde_json::from_str::<Value>(&self.stdout)
            .ok()
            .and_then(|v| v.get("code").and_then(Value::as_u64))
    }

    /// The CNI error message, if stdout is an error object.
    pub fn error_msg(&self) -> String {
        serde_json::from_str::<Value>(&self.stdout)
            .ok()
            .and_then(|v| v.get("msg").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default()
    }
}

impl std::fmt::Display for PluginOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}: stdout {} stderr {}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs plugin `bin` with exactly `env` (plus `PATH`) and `stdin`, from a thread inside
/// `netns` (the child inherits it), or in the caller's namespace with `None`.
pub fn run_plugin(
    netns: Option<&NetNs>,
    bin: &Path,
    env: &[(&str, &str)],
    stdin: &str,
) -> PluginOutput {
    let go = || {
        let mut child = Command::new(bin)
            .env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin.as_bytes());
        }
        let out = child.wait_with_output().expect("wait for plugin");
        PluginOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    match netns {
        Some(ns) => ns.run(go).expect("run in netns"),
        None => go(),
    }
}

/// One attachment as a runtime describes it.
#[derive(Clone, Debug, Default)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    /// `CNI_NETNS` (may be empty on DEL).
    pub netns: String,
    pub cni_args: String,
    /// Capability arguments, e.g. `{"portMappings": [...]}`.
    pub cap_args: Value,
}

impl Attachment {
    /// An attachment on `eth0` with no args.
    pub fn new(container_id: &str, netns: &Path) -> Attachment {
        Attachment {
            container_id: container_id.to_string(),
            ifname: "eth0".to_string(),
            netns: netns.display().to_string(),
            cni_args: String::new(),
            cap_args: Value::Null,
        }
    }

    /// With capability arguments.
    pub fn with_caps(mut self, caps: Value) -> Attachment {
        self.cap_args = caps;
        self
    }
}

/// A minimal libcni: runs a conflist's plugins for ADD/CHECK/DEL/GC/STATUS.
pub struct Runtime {
    node: Option<NetNs>,
    /// The network configuration list.
    pub conflist: Value,
    /// `CNI_PATH` directories.
    pub cni_path: Vec<PathBuf>,
    /// The `PATH` the plugins run with; the caller's when `None`.
    pub path: Option<String>,
    cache: Mutex<HashMap<(String, String), Value>>,
}

fn version_ge(a: &str, b: &str) -> bool {
    let p = |s: &str| -> Vec<u64> { s.split('.').map(|x| x.parse().unwrap_or(0)).collect() };
    p(a) >= p(b)
}

impl Runtime {
    /// A runtime executing `conflist` (a list, or a single plugin config) from `cni_path`,
    /// running the plugins inside `node` (or in the caller's namespace).
    pub fn new(node: Option<&crate::Netns>, conflist: Value, cni_path: Vec<PathBuf>) -> Runtime {
        let conflist = if conflist.get("plugins").is_some() {
            conflist
        } else {
            let mut plugin = conflist.clone();
            let obj = plugin.as_object_mut().expect("config object");
            let name = obj.remove("name").unwrap_or(Value::Null);
            let ver = obj.remove("cniVersion").unwrap_or(Value::Null);
            json!({"name": name, "cniVersion": ver, "plugins": [plugin]})
        };
        Runtime {
            node: node.map(|n| n.open()),
            conflist,
            cni_path,
            path: None,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The list's name.
    pub fn name(&self) -> String {
        self.conflist["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The list's cniVersion.
    pub fn version(&self) -> String {
        self.conflist["cniVersion"]
            .as_str()
            .unwrap_or("0.1.0")
            .to_string()
    }

    fn plugins(&self) -> Vec<Value> {
        self.conflist["plugins"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn find(&self, plugin_type: &str) -> PathBuf {
        self.cni_path
            .iter()
            .map(|d| d.join(plugin_type))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("plugin {plugin_type} not in {:?}", self.cni_path))
    }

    /// The request config for one plugin (libcni `buildOneConfig`).
    pub fn request_config(&self, plugin: &Value, prev: Option<&Value>, caps: &Value) -> Value {
        let mut obj: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
        obj.insert("name".into(), json!(self.name()));
        obj.insert("cniVersion".into(), json!(self.version()));
        if let Some(declared) = plugin.get("capabilities").and_then(Value::as_object) {
            let mut rc = Map::new();
            for (k, on) in declared {
                if on.as_bool() == Some(true)
                    && let Some(v) = caps.get(k)
                {
                    rc.insert(k.clone(), v.clone());
                }
            }
            if !rc.is_empty() {
                obj.insert("runtimeConfig".into(), Value::Object(rc));
            }
        }
        if let Some(p) = prev {
            obj.insert("prevResult".into(), p.clone());
        }
        Value::Object(obj)
    }

    fn exec(&self, plugin: &Value, command: &str, att: &Attachment, stdin: &Value) -> PluginOutput {
        let path = self
            .cni_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let bin = self.find(plugin["type"].as_str().unwrap_or_default());
        let mut env = vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", &att.container_id),
            ("CNI_NETNS", &att.netns),
            ("CNI_IFNAME", &att.ifname),
            ("CNI_ARGS", &att.cni_args),
            ("CNI_PATH", &path),
        ];
        env.extend(self.path.as_deref().map(|p| ("PATH", p)));
        run_plugin(self.node.as_ref(), &bin, &env, &stdin.to_string())
    }

    /// ADD through the whole list; caches and returns the final result.
    pub fn add(&self, att: &Attachment) -> Result<Value, PluginOutput> {
        let mut prev: Option<Value> = None;
        for plugin in self.plugins() {
            let conf = self.request_config(&plugin, prev.as_ref(), &att.cap_args);
            let out = self.exec(&plugin, "ADD", att, &conf);
            if !out.ok() {
                return Err(out);
            }
            prev = Some(out.json());
        }
        let result = prev.unwrap_or(Value::Null);
        self.cache.lock().expect("cache").insert(
            (att.container_id.clone(), att.ifname.clone()),
            result.clone(),
        );
        Ok(result)
    }

    /// The cached ADD result of an attachment.
    pub fn cached(&self, att: &Attachment) -> Option<Value> {
        self.cache
            .lock()
            .expect("cache")
            .get(&(att.container_id.clone(), att.ifname.clone()))
            .cloned()
    }

    /// Sets the cached result of an attachment (a runtime that kept its cache on disk).
    pub fn prime(&self, att: &Attachment, result: Value) {
        self.cache
            .lock()
            .expect("cache")
            .insert((att.container_id.clone(), att.ifname.clone()), result);
    }

    /// Forgets the cached result (as after a runtime restart without its cache).
    pub fn forget(&self, att: &Attachment) {
        self.cache
            .lock()
            .expect("cache")
            .remove(&(att.container_id.clone(), att.ifname.clone()));
    }

    /// CHECK through the list with the cached result as `prevResult`.
    pub fn check(&self, att: &Attachment) -> Result<(), PluginOutput> {
        let prev = self.cached(att);
        for plugin in self.plugins() {
            let conf = self.request_config(&plugin, prev.as_ref(), &att.cap_args);
            let out = self.exec(&plugin, "CHECK", att, &conf);
            if !out.ok() {
                return Err(out);
            }
        }
        Ok(())
    }

    /// DEL through the list in reverse; `prevResult` is the cached result for lists ≥ 0.4.0.
    /// The cache entry is dropped on success.
    pub fn del(&self, att: &Attachment) -> Result<(), PluginOutput> {
        let prev = if version_ge(&self.version(), "0.4.0") {
            self.cached(att)
        } else {
            None
        };
        for plugin in self.plugins().iter().rev() {
            let conf = self.request_config(plugin, prev.as_ref(), &att.cap_args);
            let out = self.exec(plugin, "DEL", att, &conf);
            if !out.ok() {
                return Err(out);
            }
        }
        self.forget(att);
        Ok(())
    }

    /// GC with the given valid attachments (`None` sends no key, as cnitool does). Every
    /// plugin is called; errors are collected.
    pub fn gc(&self, valid: Option<&[(&str, &str)]>) -> Result<(), Vec<PluginOutput>> {
        let mut errors = Vec::new();
        let att = Attachment::default();
        for plugin in self.plugins() {
            let mut conf = self.request_config(&plugin, None, &Value::Null);
            if let Some(valid) = valid {
                let list: Vec<Value> = valid
                    .iter()
                    .map(|(id, ifn)| json!({"containerID": id, "ifname": ifn}))
                    .collect();
                conf["cni.dev/valid-attachments"] = json!(list);
                conf["cni.dev/attachments"] = json!(list);
            }
            let out = self.exec(&plugin, "GC", &att, &conf);
            if !out.ok() {
                errors.push(out);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// STATUS on every plugin; the first failure is returned.
    pub fn status(&self) -> Result<(), PluginOutput> {
        let att = Attachment::default();
        for plugin in self.plugins() {
            let conf = self.request_config(&plugin, None, &Value::Null);
            let out = self.exec(&plugin, "STATUS", &att, &conf);
            if !out.ok() {
                return Err(out);
            }
        }
        Ok(())
    }
}
