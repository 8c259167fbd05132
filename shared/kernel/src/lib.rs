//! The kernel layer: the only code in the project that changes or reads kernel state.
//!
//! * [`netns`]: network namespaces (the CNM *sandbox*), entered only on short-lived threads.
//! * [`netlink`]: a small synchronous rtnetlink client for links, bridge ports, addresses and
//!   routes, plus ctnetlink for conntrack ([`conntrack`]).
//! * [`sysctl`]: `/proc/sys` of the calling thread's namespace.
//! * [`nftables`]: nf_tables over netlink (probes, rule listings, deletion batches).
//! * [`firewall`]: argv-exact `iptables`, batched `iptables-restore --noflush`, `nft -f -`, and
//!   the reference's chain-name and comment formats.

pub mod conntrack;
pub mod firewall;
pub mod netlink;
pub mod netns;
pub mod nftables;
pub mod sysctl;

pub use netlink::{Address, Link, LinkKind, Netlink, NetlinkError, RouteSpec};
pub use netns::{NetNs, NsError};
