//! Network namespaces: the CNM *sandbox*.
//!
//! A namespace is an open file (`/run/netns/x`, `/proc/<pid>/ns/net`, or a bind mount in a
//! runtime's state dir) verified to be on nsfs or procfs. Work that must happen "inside" runs
//! on a fresh scoped thread that joins the namespace and then ends, so no thread is ever left
//! in the wrong namespace, whatever the closure does (return early, fail, panic); or, for
//! callers that go inside several times, on one thread that joins once and ends when its
//! [`Inside`] handle is dropped.

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, PROC_SUPER_MAGIC, fstatfs};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

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
    #[error("a thread working in netns {path:?} panicked: {what}")]
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

    /// Opens the namespace at `path` and starts a thread that joins it and stays there
    /// ([`Inside`]), for callers that work inside more than once (a netlink socket at the start,
    /// sysctls later): one thread and one `setns` instead of one each time. Joining is also
    /// what proves that a bind-mounted file is a network namespace, before anything is done
    /// with it.
    pub fn open_inside(path: impl AsRef<Path>) -> Result<(NetNs, Inside), NsError> {
        let ns = NetNs::open_checked(path.as_ref(), false)?;
        let inside = ns.inside()?;
        Ok((ns, inside))
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
            // it from a throwaway thread (setns refuses another type with EINVAL), so that a
            // bind-mounted UTS or mount namespace is refused before anything is created.
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

    /// Runs `f` on a new thread that has joined this namespace, and returns its value. The
    /// thread ends with `f`; the calling thread never changes namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NsError> {
        std::thread::scope(|s| {
            let handle = s.spawn(|| -> Result<T, NsError> {
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
                })?;
                Ok(f())
            });
            match handle.join() {
                Ok(r) => r,
                Err(payload) => Err(NsError::Panicked {
                    path: self.path.clone(),
                    what: payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_default(),
                }),
            }
        })
    }

    /// A thread that joins this namespace and stays there until the handle is dropped.
    pub fn inside(&self) -> Result<Inside, NsError> {
        let file = self.file.try_clone().map_err(|source| NsError::Open {
            path: self.path.clone(),
            source,
        })?;
        let path = self.path.clone();
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), nix::Error>>();
        let handle = std::thread::spawn(move || {
            let joined = setns(file.as_fd(), CloneFlags::CLONE_NEWNET);
            let ok = joined.is_ok();
            let _ = ready_tx.send(joined);
            if ok {
                while let Ok(job) = rx.recv() {
                    job();
                }
            }
        });
        let outcome = ready_rx.recv().unwrap_or(Err(nix::errno::Errno::ECHILD));
        if let Err(errno) = outcome {
            let _ = handle.join();
            return Err(if errno == nix::errno::Errno::EINVAL {
                NsError::NotNetns { path }
            } else {
                NsError::Enter { path, errno }
            });
        }
        Ok(Inside {
            tx: Some(tx),
            handle: Some(handle),
            path,
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

type Job = Box<dyn FnOnce() + Send>;

/// A thread that has joined a namespace and runs work there, one job at a time, until
/// dropped (then it ends: it is never reused elsewhere, and no other thread ever changes
/// namespace). A job that panics ends the thread; later jobs then fail.
#[derive(Debug)]
pub struct Inside {
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Inside {
    /// Runs `f` inside and returns its value.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NsError> {
        let panicked = || NsError::Panicked {
            path: self.path.clone(),
            what: "the namespace thread ended".into(),
        };
        let (rtx, rrx) = mpsc::channel();
        self.tx
            .as_ref()
            .ok_or_else(panicked)?
            .send(Box::new(move || {
                let _ = rtx.send(f());
            }))
            .map_err(|_| panicked())?;
        rrx.recv().map_err(|_| panicked())
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
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
    fn a_thread_inside_runs_jobs_and_rejects_other_namespaces() {
        let (ns, inside) = NetNs::open_inside("/proc/self/ns/net").unwrap();
        let here = NetNs::current().unwrap();
        assert!(ns.same_as(&here));
        let ino = inside
            .run(|| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata("/proc/thread-self/ns/net")
                    .map(|m| m.ino())
                    .unwrap()
            })
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(ino, here.file.metadata().unwrap().ino());
        assert_eq!(inside.run(|| 2 + 2).unwrap(), 4);
        #[allow(clippy::panic)]
        let r: Result<(), _> = inside.run(|| panic!("boom"));
        assert!(matches!(r, Err(NsError::Panicked { .. })));
        assert!(inside.run(|| ()).is_err());
        drop(inside);
        assert!(matches!(
            NetNs::open_inside("/proc/self/ns/mnt"),
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
