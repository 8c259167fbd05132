//! Benchmark section `floor`: the same kernel work as one chain ADD and DEL, done by the
//! smallest in-process program on top of this project's kernel crate, so that the chain
//! numbers can be read against a limit. No plugin process, no IPAM, no JSON.
//!
//! * ADD floor: create the veth pair with its container end born in the sandbox, host end
//!   up and on the bridge, in hairpin mode, without router advertisements (`accept_ra=0`);
//!   in the sandbox, the settings the reference writes before the link comes up
//!   (`arp_notify=1`, so the link-up announces the address; `accept_dad=0`, so IPv6 DAD
//!   completes at once), the address and the link-up; then one firewall transaction
//!   holding every per-container rule of both plugins (the masquerade chain and jump, the
//!   port-mapping chain and entries): over netlink (the least the kernel needs), or as one
//!   `iptables-restore` (the least without netlink); last the default route (bridge's order:
//!   the route would wait for the lock the DAD worker holds after the link-up).
//! * DEL floor: delete those rules in one nf_tables transaction over netlink, delete the veth
//!   pair, release the netlink socket (handed to the kernel, as in the plugins, so that the
//!   transaction's RCU grace period is not waited for).
//! * Components, each alone: the conntrack table walk a UDP mapping requires (ADD flushes
//!   stale UDP entries), a veth delete, an add-only `iptables-restore`, a process start.
//!
//! The `chain` section also runs the floor on its nodes at every size ([`rounds`]).

use super::{Ctx, Sandbox, Stats, Worker, exec};
use cni_kernel::firewall::iptables::{Iptables, Restore, argv};
use cni_kernel::firewall::{Family, xt};
use cni_kernel::netlink::{IPV4_DEVCONF_ARP_NOTIFY, VethSpec};
use cni_kernel::nftables::{Change, NfFamily, NfTables};
use cni_kernel::sysctl;
use cni_kernel::{Netlink, RouteSpec};
use cni_testkit::Node;
use ipnet::IpNet;
use serde_json::json;
use std::time::{Duration, Instant};

const C: &str = "CNI-f100r000000000000000000000";
const DN: &str = "CNI-DN-f100r00000000000000000";

fn chain_c(i: usize) -> String {
    format!("{}{i:04}", &C[..24])
}

fn chain_dn(i: usize) -> String {
    format!("{}{i:04}", &DN[..24])
}

fn comment(i: usize) -> String {
    format!("name: \"benchnet\" id: \"floor{i}\"")
}

/// The shared chains portmap keeps (created once, untimed).
fn shared() -> Restore {
    let mut tx = Restore::new("nat");
    tx.new_chain("CNI-HOSTPORT-SETMARK")
        .new_chain("CNI-HOSTPORT-MASQ")
        .new_chain("CNI-HOSTPORT-DNAT");
    tx.append(
        "CNI-HOSTPORT-SETMARK",
        &argv(&[
            "-m",
            "comment",
            "--comment",
            "CNI portfwd masquerade mark",
            "-j",
            "MARK",
            "--set-xmark",
            "0x2000/0x2000",
        ]),
    );
    tx.append(
        "CNI-HOSTPORT-MASQ",
        &argv(&["-m", "mark", "--mark", "0x2000/0x2000", "-j", "MASQUERADE"]),
    );
    tx.insert_first(
        "POSTROUTING",
        &argv(&[
            "-m",
            "comment",
            "--comment",
            "CNI portfwd requiring masquerade",
            "-j",
            "CNI-HOSTPORT-MASQ",
        ]),
    );
    for e in ["PREROUTING", "OUTPUT"] {
        tx.append(
            e,
            &argv(&[
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                "-j",
                "CNI-HOSTPORT-DNAT",
            ]),
        );
    }
    tx
}

/// Every per-container rule of one chain ADD (bridge masquerade + 2 port mappings), as
/// `(new chain?, chain, argv)`.
fn per_container(i: usize, ip: &str) -> Vec<(bool, String, Vec<String>)> {
    let (c, dn, k) = (chain_c(i), chain_dn(i), comment(i));
    let mut out = vec![
        (true, c.clone(), Vec::new()),
        (
            false,
            c.clone(),
            argv(&[
                "-d",
                "10.88.0.0/16",
                "-m",
                "comment",
                "--comment",
                &k,
                "-j",
                "ACCEPT",
            ]),
        ),
        (
            false,
            c.clone(),
            argv(&[
                "!",
                "-d",
                "224.0.0.0/4",
                "-m",
                "comment",
                "--comment",
                &k,
                "-j",
                "MASQUERADE",
            ]),
        ),
        (
            false,
            "POSTROUTING".into(),
            argv(&["-s", ip, "-m", "comment", "--comment", &k, "-j", &c]),
        ),
        (true, dn.clone(), Vec::new()),
    ];
    for (proto, hp, cp) in [("tcp", "10000", "80"), ("udp", "30000", "53")] {
        let to = format!("{ip}:{cp}");
        out.push((
            false,
            dn.clone(),
            argv(&[
                "-p",
                proto,
                "--dport",
                hp,
                "-s",
                "10.88.0.0/16",
                "-j",
                "CNI-HOSTPORT-SETMARK",
            ]),
        ));
        out.push((
            false,
            dn.clone(),
            argv(&[
                "-p",
                proto,
                "--dport",
                hp,
                "-s",
                "127.0.0.1",
                "-j",
                "CNI-HOSTPORT-SETMARK",
            ]),
        ));
        out.push((
            false,
            dn.clone(),
            argv(&[
                "-p",
                proto,
                "--dport",
                hp,
                "-j",
                "DNAT",
                "--to-destination",
                &to,
            ]),
        ));
        let dc = format!("dnat {k}");
        out.push((
            false,
            "CNI-HOSTPORT-DNAT".into(),
            argv(&[
                "-m",
                "comment",
                "--comment",
                &dc,
                "-m",
                "multiport",
                "-p",
                proto,
                "--destination-ports",
                hp,
                "-j",
                &dn,
            ]),
        ));
    }
    out
}

/// [`per_container`] as one `iptables-restore` transaction.
fn restore_tx(i: usize, ip: &str) -> Restore {
    let mut tx = Restore::new("nat");
    for (new, chain, args) in per_container(i, ip) {
        if new {
            tx.new_chain(&chain);
        } else {
            tx.append(&chain, &args);
        }
    }
    tx
}

/// [`per_container`] as one nf_tables transaction (what `iptables-nft` would commit).
fn nf_changes(i: usize, ip: &str) -> Vec<Change> {
    per_container(i, ip)
        .into_iter()
        .map(|(new, chain, args)| {
            if new {
                Change::AddChain {
                    family: NfFamily::Ipv4,
                    table: "nat".into(),
                    chain,
                }
            } else {
                xt::append(Family::V4, "nat", &chain, &args).expect("encodable")
            }
        })
        .collect()
}

/// How the floor ADD applies its firewall transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tx {
    /// In-process, over netlink: the least the kernel needs.
    Netlink,
    /// One `iptables-restore` process (the iptables backend without netlink).
    Restore,
}

/// The floor's work on a node whose bridge (`cni0`) and shared port-mapping chains exist.
pub struct Floor {
    br: u32,
}

impl Floor {
    /// Sets a node up (bridge with a gateway, the shared chains), on a thread in the node.
    pub fn setup() -> Floor {
        let mut nl = Netlink::current().expect("netlink");
        nl.create_bridge("cni0", 0, false).expect("bridge");
        let br = nl
            .link_by_name("cni0")
            .expect("lookup")
            .expect("bridge exists");
        nl.set_up(br.index, true).expect("bridge up");
        nl.add_address(br.index, &"10.88.0.1/16".parse().expect("net"))
            .expect("gateway");
        Iptables::new(Family::V4)
            .restore(&shared())
            .expect("shared chains");
        Floor { br: br.index }
    }

    /// The floor on a node set up by the plugins (a thread in the node).
    pub fn existing() -> Floor {
        let mut nl = Netlink::current().expect("netlink");
        let br = nl
            .link_by_name("cni0")
            .expect("lookup")
            .expect("bridge exists");
        Floor { br: br.index }
    }

    /// One ADD: veth into the sandbox, up and on the bridge (hairpin, `accept_ra=0`);
    /// `arp_notify`, `accept_dad=0`, address and link up inside; the per-container rules in
    /// one transaction; the default route.
    pub fn add(&self, i: usize, sb: &cni_kernel::NetNs, tx: Tx) -> Duration {
        let ip = format!("10.88.{}.{}", 200 + i / 200, 2 + i % 200);
        let t = Instant::now();
        let mut nl = Netlink::current().expect("netlink");
        let echoed = nl
            .create_veth(&VethSpec {
                name: "vfloor",
                peer_name: "eth0",
                peer_netns: Some(sb.fd()),
                mtu: 0,
                peer_mac: None,
                up: true,
                master: Some(self.br),
            })
            .expect("veth");
        let host = match echoed {
            Some(l) => l,
            None => nl
                .link_by_name("vfloor")
                .expect("lookup")
                .expect("host end"),
        };
        let _ = sysctl::write("net/ipv6/conf/vfloor/accept_ra", "0");
        nl.set_bridge_port(host.index, true, None).expect("hairpin");
        let addr: IpNet = format!("{ip}/16").parse().expect("addr");
        // A netlink socket stays in the namespace it was opened in.
        let (mut c, index) = sb
            .run(move || {
                let mut c = Netlink::current().expect("netlink in sandbox");
                let l = c.link_by_name("eth0").expect("lookup").expect("eth0");
                c.set_ipv4_conf(l.index, &[(IPV4_DEVCONF_ARP_NOTIFY, 1)])
                    .expect("arp_notify");
                let _ = sysctl::write("net/ipv6/conf/eth0/accept_dad", "0");
                c.add_address(l.index, &addr).expect("address");
                c.set_up(l.index, true).expect("up");
                (c, l.index)
            })
            .expect("sandbox");
        // The rules between the link-up and the route, as bridge orders them: the route
        // would wait for the RTNL lock the DAD worker takes after the link-up.
        match tx {
            Tx::Netlink => NfTables::open()
                .expect("nf_tables")
                .commit(&nf_changes(i, &ip), None)
                .expect("rules"),
            Tx::Restore => Iptables::new(Family::V4)
                .restore(&restore_tx(i, &ip))
                .expect("rules"),
        }
        c.add_route(&RouteSpec::new(
            "0.0.0.0/0".parse().expect("net"),
            Some("10.88.0.1".parse().expect("gw")),
            Some(index),
        ))
        .expect("route");
        t.elapsed()
    }

    /// Returns (total, [list+commit, veth delete, socket release]).
    pub fn del(&self, i: usize) -> (Duration, [Duration; 3]) {
        let t = Instant::now();
        let mut nf = NfTables::open().expect("nf_tables");
        let generation = nf.generation().expect("generation");
        let (c, dn) = (chain_c(i), chain_dn(i));
        let f = NfFamily::Ipv4;
        let mut changes = Vec::new();
        for (entry, target) in [("POSTROUTING", &c), ("CNI-HOSTPORT-DNAT", &dn)] {
            // As the plugins do: the jumps by handle, the listing only if that fails.
            let info = nf.chain(f, "nat", target).expect("chain").expect("exists");
            let own = nf.rules(f, "nat", Some(target)).expect("rules");
            let jumps = nf
                .jumps_to(f, "nat", entry, target, &info, &own)
                .expect("rules");
            for r in jumps {
                if r.jump_target() == Some(target.as_str()) {
                    changes.push(Change::DeleteRule {
                        family: f,
                        table: "nat".into(),
                        chain: entry.into(),
                        handle: r.handle,
                    });
                }
            }
        }
        for ch in [&c, &dn] {
            changes.push(Change::FlushChain {
                family: f,
                table: "nat".into(),
                chain: ch.to_string(),
            });
            changes.push(Change::DeleteChain {
                family: f,
                table: "nat".into(),
                chain: ch.to_string(),
            });
        }
        nf.commit(&changes, Some(generation)).expect("commit");
        let t1 = t.elapsed();
        let mut nl = Netlink::current().expect("netlink");
        let h = nl.link_by_name("vfloor").expect("lookup").expect("veth");
        nl.delete_link(h.index).expect("delete veth");
        let t2 = t.elapsed();
        drop(nf);
        let t3 = t.elapsed();
        (t3, [t1, t2 - t1, t3 - t2])
    }
}

/// Floor ADD and DEL rounds on a worker's node (set up by the plugins or [`Floor::setup`]),
/// each attached [`super::ATTACHED`] before its DEL:
/// `(add, del, del parts)`.
pub fn rounds(
    worker: &Worker,
    sb: &std::sync::Arc<Sandbox>,
    iters: usize,
    tx: Tx,
) -> (Vec<Duration>, Vec<Duration>, [Vec<Duration>; 3]) {
    let (mut add, mut del) = (Vec::new(), Vec::new());
    let mut parts: [Vec<Duration>; 3] = Default::default();
    for i in 0..iters {
        let s = sb.clone();
        let (a, d) = worker.call(move || {
            let f = Floor::existing();
            let a = f.add(i, s.ns(), tx);
            std::thread::sleep(super::ATTACHED);
            (a, f.del(i))
        });
        add.push(a);
        del.push(d.0);
        for (v, x) in parts.iter_mut().zip(d.1) {
            v.push(x);
        }
    }
    (add, del, parts)
}

/// `{list_commit_ms, veth_delete_ms, release_ms}` medians of DEL parts.
pub fn del_parts_json(parts: &[Vec<Duration>; 3]) -> serde_json::Value {
    let p50 = |v: &Vec<Duration>| Stats::of(v).median.as_secs_f64() * 1000.0;
    json!({"list_commit_ms": p50(&parts[0]), "veth_delete_ms": p50(&parts[1]), "release_ms": p50(&parts[2])})
}

/// Runs the section: the floor on a node of its own (1 container), and its components.
pub fn run(ctx: &mut Ctx) {
    let node = Node::new("bfloor");
    let worker = Worker::in_netns(&node.path());
    let iters = ctx.iters(20);
    let sb = std::sync::Arc::new(Sandbox::new());
    worker.call(|| {
        let _ = Floor::setup();
    });
    let (add, del, parts) = rounds(&worker, &sb, iters, Tx::Netlink);
    let (add_r, _, _) = rounds(&worker, &sb, iters, Tx::Restore);
    // Components.
    let (mut ct, mut veth, mut restore, mut proc_start) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..iters {
        let s = sb.clone();
        let (a, b, c, d) = worker.call(move || {
            let t = Instant::now();
            let _ = cni_kernel::conntrack::delete_udp_by_dport(None, &[30000], &[]);
            let ct = t.elapsed();
            let mut nl = Netlink::current().expect("netlink");
            nl.create_veth(&VethSpec {
                name: "vfloor",
                peer_name: "eth0",
                peer_netns: Some(s.ns().fd()),
                mtu: 0,
                peer_mac: None,
                up: false,
                master: None,
            })
            .expect("veth");
            let h = nl.link_by_name("vfloor").expect("lookup").expect("veth");
            let t = Instant::now();
            nl.delete_link(h.index).expect("delete");
            let veth = t.elapsed();
            let mut tx = Restore::new("nat");
            let ch = format!("CNI-flrtx{i:04}");
            tx.new_chain(&ch);
            tx.append(
                &ch,
                &argv(&[
                    "-d",
                    "10.77.0.0/16",
                    "-m",
                    "comment",
                    "--comment",
                    "x",
                    "-j",
                    "ACCEPT",
                ]),
            );
            let t = Instant::now();
            Iptables::new(Family::V4).restore(&tx).expect("restore");
            let restore = t.elapsed();
            let (_, start) = exec(std::path::Path::new("/bin/true"), &[], "");
            (ct, veth, restore, start)
        });
        ct.push(a);
        veth.push(b);
        restore.push(c);
        proc_start.push(d);
    }
    ctx.record(
        "floor",
        "ADD, 1 container (netlink tx)",
        Stats::of(&add),
        None,
        json!(null),
    );
    ctx.record(
        "floor",
        "ADD, 1 container (iptables-restore)",
        Stats::of(&add_r),
        None,
        json!(null),
    );
    ctx.record(
        "floor",
        "DEL, 1 container",
        Stats::of(&del),
        None,
        del_parts_json(&parts),
    );
    ctx.record(
        "floor",
        "conntrack UDP flush (table walk)",
        Stats::of(&ct),
        None,
        json!(null),
    );
    ctx.record(
        "floor",
        "veth pair delete",
        Stats::of(&veth),
        None,
        json!(null),
    );
    ctx.record(
        "floor",
        "iptables-restore, add-only",
        Stats::of(&restore),
        None,
        json!(null),
    );
    ctx.record(
        "floor",
        "process start (/bin/true)",
        Stats::of(&proc_start),
        None,
        json!(null),
    );
    drop(worker);
}
