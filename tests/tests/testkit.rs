//! The test kit's own guarantees: namespaces are removed on drop, also when a test panics,
//! and plugins run inside the node namespace, never in the root one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cni_testkit::{Netns, Node, require_root};

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

#[test]
fn namespaces_are_removed_on_drop_even_after_a_panic() {
    require_root!();
    let name = std::thread::spawn(|| {
        let ns = Netns::new("kitpanic");
        let name = ns.name().to_string();
        assert!(netns_exists(&name));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _inner = &ns;
            #[allow(clippy::panic)]
            {
                panic!("simulated test failure");
            }
        }));
        assert!(r.is_err());
        name
    })
    .join()
    .unwrap();
    assert!(!netns_exists(&name));
}

#[test]
fn node_work_stays_in_the_node() {
    require_root!();
    let node = Node::new("kitnode");
    node.ip(&["link", "add", "kitbr0", "type", "bridge"]);
    assert!(node.links().contains(&"kitbr0".to_string()));
    // The root namespace never sees it.
    let root = cni_testkit::cmd(&["ip", "-o", "link", "show"]);
    assert!(!root.contains("kitbr0"));
    let c = node.container("kitc");
    assert_eq!(c.links(), vec!["lo".to_string()]);
    let path = node.path();
    drop(node);
    assert!(!path.exists());
}
