//! Network namespaces: the CNM *sandbox*.
//!
//! A namespace is an open file (`/run/netns/x`, `/proc/<pid>/ns/net`, or a bind mount in a
//! runtime's state dir) verified to be on nsfs or procfs. Work that must happen "inside" (a
//! netlink socket, a sysctl) runs on the calling thread between two `setns` calls: in, then
//! back to the thread's own namespace before [`NetNs::run`] returns, whatever the closure does
//! (return early, fail, panic). If the way back is refused, the process aborts rather than go
//! on in the wrong namespace. A thread start and two hand-offs between CPUs cost 0.1–0.3 ms
//! each time on a virtual machine; the two `setns` calls, microseconds.

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, PROC_SUPER_MAGIC, fstatfs};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Errors opening or entering a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("failed to open netns {path:?}: no such file or directory")]
    NotFound { path: PathBuf },
    #[error("failed to open netns {path:?}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path:?} is not a network namespace")]
    NotNetns { path: PathBuf },
    #[error("failed to enter netns {path:?}: {errno}")]
    Enter { path: PathBuf, errno: nix::Error },
    #[error("work inside netns {path:?} panicked: {what}")]
    Panicked { path: PathBuf, what: String },
}

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the namespace at `path` and verifies that it is one.
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs, NsError> {
        NetNs::open_checked(path.as_ref(), true)
    }

    /// Opens the namespace at `path` and runs `f` inside it (see [`NetNs::run`]). Entering is
    /// also what proves that a bind-mounted file is a network namespace, before anything is
    /// done with it, so this is [`NetNs::open`] and a first [`NetNs::run`] with one `setns`
    /// pair instead of two.
    pub fn open_running<T: Send>(
        path: impl AsRef<Path>,
        f: impl FnOnce() -> T + Send,
    ) -> Result<(NetNs, T), NsError> {
        let ns = NetNs::open_checked(path.as_ref(), false)?;
        let value = ns.run(f)?;
        Ok((ns, value))
    }

    fn open_checked(path: &Path, verify_bind_mount: bool) -> Result<NetNs, NsError> {
        let path = path.to_path_buf();
        let file = File::open(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                NsError::NotFound { path: path.clone() }
            } else {
                NsError::Open {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let fs = fstatfs(&file).map_err(|e| NsError::Open {
            path: path.clone(),
            source: std::io::Error::from(e),
        })?;
        let magic = fs.filesystem_type();
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(NsError::NotNetns { path });
        }
        // nsfs holds every namespace type. Opened through /proc/<pid>/ns/<x>, the fd's name
        // says which ("net:[ino]", "mnt:[ino]"); a bind mount shows its path instead, and its
        // type is then checked when it is entered (setns refuses another type with EINVAL).
        let name = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        let typed = name.ends_with(']') && name.contains(":[");
        if (typed && !name.starts_with("net:[")) || (magic == PROC_SUPER_MAGIC && !typed) {
            return Err(NsError::NotNetns { path });
        }
        let ns = NetNs { file, path };
        if !typed && verify_bind_mount {
            // A bind mount of some namespace: prove it is a network namespace now, by joining
            // it (setns refuses another type with EINVAL), so that a bind-mounted UTS or mount
            // namespace is refused before anything is created.
            ns.run(|| ())?;
        }
        Ok(ns)
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<NetNs, NsError> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    /// Creates a new, unnamed network namespace (alive as long as this handle). Used by tests
    /// and benchmarks; plugins only ever open namespaces the runtime made.
    pub fn new_anonymous() -> Result<NetNs, NsError> {
        std::thread::scope(|s| {
            s.spawn(|| -> Result<NetNs, NsError> {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| NsError::Enter {
                    path: PathBuf::from("(new)"),
                    errno,
                })?;
                NetNs::current()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NsError::Panicked {
                    path: PathBuf::from("(new)"),
                    what: String::new(),
                })
            })
        })
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace file descriptor (for `IFLA_NET_NS_FD`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Runs `f` inside this namespace and returns its value. The calling thread joins the
    /// namespace, runs `f`, and returns to its own namespace before this returns (the process
    /// aborts if the kernel refuses the way back). `f` must not start threads or processes
    /// that are meant to live in the caller's namespace: they would be born inside. Without
    /// `/proc` (no handle on the caller's namespace to come back to), `f` runs on a new thread
    /// that joins the namespace and ends with `f`.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NsError> {
        let Ok(home) = File::open("/proc/thread-self/ns/net") else {
            return self.run_on_thread(f);
        };
        self.enter()?;
        let outcome = catch_unwind(AssertUnwindSafe(f));
        if let Err(errno) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
            let _ = writeln!(
                std::io::stderr(),
                "fatal: failed to return from netns {:?} to the caller's namespace: {errno}",
                self.path
            );
            std::process::abort();
        }
        outcome.map_err(|payload| self.panicked(payload.as_ref()))
    }

    /// Joins this namespace on the calling thread.
    fn enter(&self) -> Result<(), NsError> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| {
            if errno == nix::errno::Errno::EINVAL {
                NsError::NotNetns {
                    path: self.path.clone(),
                }
            } else {
                NsError::Enter {
                    path: self.path.clone(),
                    errno,
                }
            }
        })
    }

    fn panicked(&self, payload: &(dyn std::any::Any + Send)) -> NsError {
        NsError::Panicked {
            path: self.path.clone(),
            what: payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default(),
        }
    }

    /// [`NetNs::run`] on a scoped thread that joins the namespace and ends with `f`.
    fn run_on_thread<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NsError> {
        std::thread::scope(|s| {
            let handle = s.spawn(|| -> Result<T, NsError> {
                self.enter()?;
                Ok(f())
            });
            match handle.join() {
                Ok(r) => r,
                Err(payload) => Err(self.panicked(payload.as_ref())),
            }
        })
    }

    /// True if both handles name the same namespace.
    pub fn same_as(&self, other: &NetNs) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.file.metadata(), other.file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_netns() {
        let tmp = std::env::temp_dir().join(format!("not-a-netns-{}", std::process::id()));
        std::fs::write(&tmp, b"x").unwrap();
        assert!(matches!(NetNs::open(&tmp), Err(NsError::NotNetns { .. })));
        let _ = std::fs::remove_file(&tmp);
        assert!(matches!(
            NetNs::open("/nonexistent/netns"),
            Err(NsError::NotFound { .. })
        ));
        assert!(matches!(
            NetNs::open("/proc/self/status"),
            Err(NsError::NotNetns { .. })
        ));
        assert!(matches!(
            NetNs::open("/proc/self/ns/mnt"),
            Err(NsError::NotNetns { .. })
        ));
    }

    #[test]
    fn current_is_a_netns_and_run_returns() {
        let cur = NetNs::current().unwrap();
        let again = NetNs::open("/proc/self/ns/net").unwrap();
        assert!(cur.same_as(&again));
        assert_eq!(cur.run(|| 41 + 1).unwrap(), 42);
    }

    #[test]
    fn open_running_enters_once_and_rejects_other_namespaces() {
        let caller = std::thread::current().id();
        let (ns, (ino, thread)) = NetNs::open_running("/proc/self/ns/net", || {
            use std::os::unix::fs::MetadataExt;
            let ino = std::fs::metadata("/proc/thread-self/ns/net")
                .map(|m| m.ino())
                .unwrap();
            (ino, std::thread::current().id())
        })
        .unwrap();
        let here = NetNs::current().unwrap();
        assert!(ns.same_as(&here));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(ino, here.file.metadata().unwrap().ino());
        // The work ran on the calling thread: no thread was started for it.
        assert_eq!(thread, caller);
        assert!(matches!(
            NetNs::open_running("/proc/self/ns/mnt", || ()),
            Err(NsError::NotNetns { .. })
        ));
    }

    #[test]
    fn panic_inside_is_an_error_not_a_crash() {
        let cur = NetNs::current().unwrap();
        #[allow(clippy::panic)]
        let r: Result<(), _> = cur.run(|| panic!("boom"));
        assert!(matches!(r, Err(NsError::Panicked { .. })));
    }
}
