//! Least privilege in files: what host-local writes is not writable (reservations: not even
//! readable) by anyone but root, whatever the umask it runs with; another user cannot take a
//! network's lock; one network's lock never stalls another; and the lock cannot be
//! redirected (a symlinked lock is refused, and nothing is created where it points).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hardening_support;

use cni_testkit::{TempDir, require_root};
use hardening_support::*;
use serde_json::{Value, json};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

fn conf(data: &Path, net: &str, subnet: &str) -> Value {
    json!({"cniVersion": "1.1.0", "name": net, "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": subnet}]]}})
}

/// Runs host-local in the test's namespace (it touches no network state) with `umask`.
fn host_local(verb: &str, id: &str, stdin: &Value, umask: &str) -> Bounded {
    let env = verb_env(verb, id, "/nonexistent/netns", "eth0", "/nonexistent");
    let sh = TempDir::new("hlumask");
    let wrapper = sh.path().join("host-local");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\numask {umask}\nexec {}\n",
            cni_testkit::bin("host-local").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    run_bounded(
        None,
        &wrapper,
        &env,
        stdin.to_string().as_bytes(),
        &RunOpts {
            deadline: Duration::from_secs(60),
            ..RunOpts::default()
        },
    )
}

#[test]
fn files_are_private_whatever_the_umask() {
    require_root!();
    let root = TempDir::new("hperm");
    // dataDir does not exist yet: the plugin creates the whole path.
    let data = root.path().join("var/lib/cni/networks");
    let c = conf(&data, "hperm", "10.75.0.0/24");
    for (i, umask) in ["000", "022", "077"].iter().enumerate() {
        let out = host_local("ADD", &format!("hperm{i}"), &c, umask).out;
        assert!(out.ok(), "umask {umask}: {out}");
    }
    // Every directory and file under the root: never group- or world-writable; the
    // reservations, cursors and index never readable by others.
    let mut checked = 0;
    let mut stack = vec![root.path().join("var")];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let mode = md.mode() & 0o7777;
        assert_eq!(
            mode & 0o022,
            0,
            "{} is group/world-writable ({mode:o})",
            p.display()
        );
        assert_eq!(md.uid(), 0, "{} not owned by root", p.display());
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if name != "lock" {
            assert_eq!(
                mode & 0o077,
                0,
                "{} is readable by others ({mode:o})",
                p.display()
            );
        } else {
            assert_eq!(
                mode & 0o007,
                0,
                "the lock is accessible to others ({mode:o})"
            );
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} paths checked");
    assert_eq!(reservations(&data).len(), 3);

    // Another user can neither read a reservation nor take the lock (which would stall
    // every ADD and DEL of the network).
    let net = data.join("hperm");
    let res = reservations(&data).keys().next().unwrap().clone();
    let as_nobody = |script: &str| {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
                script,
            ])
            .output()
            .unwrap()
    };
    let probe = as_nobody("true");
    assert!(
        probe.status.success(),
        "setpriv does not work here: {probe:?}"
    );
    let lock = net.join("lock");
    let out = as_nobody(&format!("flock -n -x {} true", lock.display()));
    assert!(!out.status.success(), "nobody could take the lock: {out:?}");
    let out = as_nobody(&format!("cat {}", data.join(&res).display()));
    assert!(
        !out.status.success(),
        "nobody could read a reservation: {out:?}"
    );
    let out = as_nobody(&format!("touch {}/10.75.0.200", net.display()));
    assert!(
        !out.status.success(),
        "nobody could create a reservation: {out:?}"
    );
    assert!(!net.join("10.75.0.200").exists());
}

#[test]
fn one_networks_lock_never_stalls_another() {
    require_root!();
    let root = TempDir::new("hlocks");
    let data = root.path().join("data");
    let a = conf(&data, "hnet-a", "10.76.0.0/24");
    let b = conf(&data, "hnet-b", "10.77.0.0/24");
    // Create both networks, then hold A's lock as another process would.
    assert!(host_local("ADD", "warm-a", &a, "022").out.ok());
    assert!(host_local("ADD", "warm-b", &b, "022").out.ok());
    let lock_a = std::fs::File::open(data.join("hnet-a/lock")).unwrap();
    lock_a.lock().unwrap();
    // B is served at once, for every verb.
    let t = Instant::now();
    for verb in ["ADD", "CHECK", "DEL"] {
        let out = host_local(verb, "cb", &b, "022").out;
        assert!(out.ok(), "B {verb} while A is locked: {out}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "B stalled behind A's lock: {:?}",
        t.elapsed()
    );
    // A waits for its own lock (the lock is real), and proceeds when it is released.
    let waiter = std::thread::spawn(move || host_local("ADD", "ca", &a, "022"));
    std::thread::sleep(Duration::from_millis(700));
    assert!(!waiter.is_finished(), "A did not wait for its lock");
    lock_a.unlock().unwrap();
    let out = waiter.join().unwrap();
    assert!(out.out.ok(), "A after the lock was released: {}", out.out);
    assert!(out.elapsed >= Duration::from_millis(700));
}

#[test]
fn the_lock_cannot_be_redirected() {
    require_root!();
    let root = TempDir::new("hredir");
    let data = root.path().join("data");
    let a = conf(&data, "hnet-a", "10.78.0.0/24");
    let b = conf(&data, "hnet-b", "10.79.0.0/24");
    assert!(host_local("ADD", "warm-b", &b, "022").out.ok());
    // A's lock is made a symlink to B's: A must refuse it rather than share B's lock.
    std::fs::create_dir_all(data.join("hnet-a")).unwrap();
    std::os::unix::fs::symlink(data.join("hnet-b/lock"), data.join("hnet-a/lock")).unwrap();
    let lock_b = std::fs::File::open(data.join("hnet-b/lock")).unwrap();
    lock_b.lock().unwrap();
    for verb in ["ADD", "DEL", "CHECK"] {
        let r = host_local(verb, "ca", &a, "022");
        assert!(
            r.elapsed < Duration::from_secs(5),
            "A {verb} waited on B's lock"
        );
        check_output(
            &r.out,
            &err(999, &["lock", "symbolic link"]),
            &format!("A {verb} with a symlinked lock"),
        );
    }
    lock_b.unlock().unwrap();
    // A dangling symlink: nothing is created where it points (outside the data dir).
    let outside = root.path().join("outside-target");
    std::fs::remove_file(data.join("hnet-a/lock")).unwrap();
    std::os::unix::fs::symlink(&outside, data.join("hnet-a/lock")).unwrap();
    let r = host_local("ADD", "ca", &a, "022");
    check_output(
        &r.out,
        &err(999, &["symbolic link"]),
        "A with a dangling lock symlink",
    );
    assert!(
        !outside.exists(),
        "the lock symlink was followed outside the data dir"
    );
    assert!(reservations(&data.join("hnet-a")).is_empty());
    // Names cannot point at another network's directory either.
    for name in ["hnet-b/..", "../data/hnet-b", "hnet-a/../hnet-b"] {
        let mut c = a.clone();
        c["name"] = json!(name);
        check_output(
            &host_local("ADD", "ca", &c, "022").out,
            &err(7, &["network name"]),
            name,
        );
    }
    // Once the symlink is gone, A works normally with a lock of its own.
    std::fs::remove_file(data.join("hnet-a/lock")).unwrap();
    assert!(host_local("ADD", "ca", &a, "022").out.ok());
    assert!(
        !std::fs::symlink_metadata(data.join("hnet-a/lock"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}
