//! nf_tables over netlink (`NETLINK_NETFILTER`, subsystem `NFNL_SUBSYS_NFTABLES`), without
//! starting a process: existence probes for tables and chains, rule listings with their
//! handles, comments and expressions, and atomic transactions that add chains and rules
//! (encoded as `iptables-nft` encodes them, see [`crate::firewall::xt`]) or delete them.
//!
//! This is what lets a plugin skip `nft`/`iptables-save` when it only needs to know whether
//! something exists (a `nft list tables` costs about 4 ms, a netlink query a few µs), and
//! remove rules and chains in one kernel transaction. Rules written by `iptables-nft` live
//! here too (table `nat` of family `ip`/`ip6`); rules of `iptables-legacy` do not, so callers
//! use these probes for the iptables backend only after [`crate::firewall::iptables`] says
//! the tools are the nf_tables variant.
//!
//! One caveat the kernel imposes: after a transaction that deleted something, the release
//! of any `NETLINK_NETFILTER` socket (ours, or a tool's at exit) waits for the deferred
//! destruction, which includes an RCU grace period (10–25 ms). This crate's sockets are
//! therefore released by the kernel after the process is gone, not by the process (see
//! `Socket`'s `Drop` in [`crate::netlink`]): dropping an [`NfTables`] never waits.

use crate::netlink::{Builder, Message, NetlinkError, Socket, attrs};
use ipnet::IpNet;
use nix::errno::Errno;
use nix::sys::socket::SockProtocol;
use std::net::IpAddr;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_BATCH_GENID: u16 = 1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_GETGEN: u16 = 16;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_HANDLE: u16 = 2;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_USE: u16 = 6;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_CHAIN_USERDATA: u16 = 12;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_COMPAT: u16 = 5;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_RULE_COMPAT_PROTO: u16 = 1;
const NFTA_RULE_COMPAT_FLAGS: u16 = 2;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_GEN_ID: u16 = 1;

const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
/// `NFT_REG_VERDICT` and `NFT_REG_1`, the registers `iptables-nft` uses.
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_FLAGS: u16 = 7;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFTA_COMPAT_NAME: u16 = 1;
const NFTA_COMPAT_REV: u16 = 2;
const NFTA_COMPAT_INFO: u16 = 3;
/// `NFTNL_UDATA_RULE_COMMENT` / `NFTNL_UDATA_CHAIN_COMMENT`: the comment TLV in userdata.
const UDATA_COMMENT: u8 = 0;

/// An nf_tables address family (`NFPROTO_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NfFamily {
    /// `inet` (IPv4 and IPv6).
    Inet,
    /// `ip`: also where `iptables-nft` keeps its tables.
    Ipv4,
    /// `ip6`: where `ip6tables-nft` keeps its tables.
    Ipv6,
    /// `bridge`.
    Bridge,
}

impl NfFamily {
    /// The `NFPROTO_*` number (what `meta nfproto` compares with).
    pub fn code(self) -> u8 {
        match self {
            NfFamily::Inet => 1,
            NfFamily::Ipv4 => 2,
            NfFamily::Bridge => 7,
            NfFamily::Ipv6 => 10,
        }
    }

    fn from_code(code: u32) -> Option<NfFamily> {
        [
            NfFamily::Inet,
            NfFamily::Ipv4,
            NfFamily::Bridge,
            NfFamily::Ipv6,
        ]
        .into_iter()
        .find(|f| u32::from(f.code()) == code)
    }

    /// The family's name in `nft` syntax.
    pub fn name(self) -> &'static str {
        match self {
            NfFamily::Inet => "inet",
            NfFamily::Ipv4 => "ip",
            NfFamily::Ipv6 => "ip6",
            NfFamily::Bridge => "bridge",
        }
    }
}

/// A chain as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainInfo {
    /// The chain's handle.
    pub handle: u64,
    /// How many rules jump or go to this chain (`NFTA_CHAIN_USE`).
    pub use_count: u32,
    /// A base chain (attached to a hook).
    pub base: bool,
    /// The chain's comment (`nft ... { comment "..." }`), if any.
    pub comment: Option<String>,
}

/// A verdict of an `immediate` expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
    /// `return`.
    Return,
    /// `continue`.
    Continue,
    /// `jump <chain>`.
    Jump(String),
    /// `goto <chain>`.
    Goto(String),
    /// Any other verdict code.
    Other(i32),
}

/// One expression of a rule, decoded as far as callers need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// `immediate`: a verdict, or a value loaded into a register.
    Immediate {
        verdict: Option<Verdict>,
        value: Vec<u8>,
    },
    /// `cmp`: `op` is `NFT_CMP_*` (0 = eq, 1 = neq).
    Cmp { op: u32, data: Vec<u8> },
    /// `payload` load.
    Payload { base: u32, offset: u32, len: u32 },
    /// `meta` load or set.
    Meta { key: u32 },
    /// `bitwise` (mask and xor).
    Bitwise { mask: Vec<u8>, xor: Vec<u8> },
    /// An x_tables match run through `nft_compat` (what `iptables-nft` uses for `-m comment`,
    /// `-m addrtype`, `-m multiport`...).
    Match {
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    /// An x_tables target through `nft_compat` (`-j MARK`, `-j MASQUERADE`, `-j DNAT`...).
    Target {
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    /// `counter`.
    Counter,
    /// `immediate`: a value loaded into a register other than 1 (`nft` loads the port of a
    /// `dnat to` into register 2).
    ImmediateReg { reg: u32, value: Vec<u8> },
    /// `ct load <key>` into register 1 (`ct status`: [`CT_STATUS`]).
    Ct { key: u32 },
    /// `nat`: `nat_type` 0 = snat, 1 = dnat; the address and the port come from registers
    /// (`0` = none), `flags` are `NF_NAT_RANGE_*`.
    Nat {
        nat_type: u32,
        family: NfFamily,
        addr_reg: u32,
        proto_reg: u32,
        flags: u32,
    },
    /// `masq` without options.
    Masq,
    /// `fib` lookup into register 1: `result` is `NFT_FIB_RESULT_*`, `flags` `NFTA_FIB_F_*`
    /// (`fib daddr type`: [`FIB_RESULT_ADDRTYPE`], [`FIB_F_DADDR`]).
    Fib { result: u32, flags: u32 },
    /// Any other expression, by name.
    Other(String),
}

/// A rule as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The chain the rule is in.
    pub chain: String,
    /// The rule's handle (stable for the rule's lifetime, never reused within a table).
    pub handle: u64,
    /// The `nft` comment (userdata), if any. `iptables-nft` keeps `-m comment` as a
    /// [`Expr::Match`] instead.
    pub comment: Option<String>,
    /// The expressions, in order.
    pub exprs: Vec<Expr>,
    /// The `NFTA_RULE_EXPRESSIONS` attribute as the kernel sent it (for exact comparison of
    /// two rules).
    pub raw_exprs: Vec<u8>,
    /// `NFTA_RULE_COMPAT`: the protocol and flags x_tables matches see, if set.
    pub compat: Option<(u32, u32)>,
}

impl Rule {
    /// The chain this rule jumps or goes to, if its verdict is one.
    pub fn jump_target(&self) -> Option<&str> {
        self.exprs.iter().find_map(|e| match e {
            Expr::Immediate {
                verdict: Some(Verdict::Jump(c) | Verdict::Goto(c)),
                ..
            } => Some(c.as_str()),
            _ => None,
        })
    }

    /// The comment of an `iptables-nft` rule: the text of its `-m comment` match (the
    /// `xt_comment_info` blob, NUL-terminated), or the nft comment.
    pub fn xt_comment(&self) -> Option<String> {
        self.exprs
            .iter()
            .find_map(|e| match e {
                Expr::Match { name, info, .. } if name == "comment" => Some(cstr(info)),
                _ => None,
            })
            .or_else(|| self.comment.clone())
    }

    /// What the rule compares for equality with the bytes at `offset` of header `base`
    /// (`payload` load, optional `bitwise` mask, `cmp eq`): `(value, mask)`.
    pub fn payload_eq(&self, base: u32, offset: u32) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
        let e = &self.exprs;
        let i = e.iter().position(
            |x| matches!(x, Expr::Payload { base: b, offset: o, .. } if *b == base && *o == offset),
        )?;
        let (mask, j) = match e.get(i + 1) {
            Some(Expr::Bitwise { mask, .. }) => (Some(mask.clone()), i + 2),
            _ => (None, i + 1),
        };
        match e.get(j) {
            Some(Expr::Cmp { op: 0, data }) => Some((data.clone(), mask)),
            _ => None,
        }
    }

    /// What the rule compares for equality with meta key `key` (`meta` load, `cmp eq`).
    pub fn meta_eq(&self, key: u32) -> Option<&[u8]> {
        let e = &self.exprs;
        let i = e
            .iter()
            .position(|x| matches!(x, Expr::Meta { key: k } if *k == key))?;
        match e.get(i + 1) {
            Some(Expr::Cmp { op: 0, data }) => Some(data),
            _ => None,
        }
    }

    /// The expressions other than counters (which `iptables-nft` adds to every rule).
    pub fn significant(&self) -> impl Iterator<Item = &Expr> {
        self.exprs.iter().filter(|e| !matches!(e, Expr::Counter))
    }

    /// The packets the rule's `counter` expressions have counted (their sum), as the kernel
    /// reported them; `None` if it has no counter or one without a packet count.
    pub fn packets(&self) -> Option<u64> {
        let mut total: Option<u64> = None;
        for (ty, elem) in attrs(&self.raw_exprs) {
            if ty != NFTA_LIST_ELEM {
                continue;
            }
            let (name, data) = expr_name_data(elem);
            if name == "counter" {
                let n = attrs(data)
                    .into_iter()
                    .find(|(t, _)| *t == NFTA_COUNTER_PACKETS)
                    .and_then(|(_, d)| be64(d))?;
                total = Some(total.unwrap_or(0).saturating_add(n));
            }
        }
        total
    }
}

/// The `NFTA_RULE_EXPRESSIONS` payload of `exprs` as this crate commits them (counters at
/// zero): what [`Rule::raw_exprs`] holds for a rule listed right after it was added.
pub fn encode_exprs(exprs: &[Expr]) -> Vec<u8> {
    let mut b = Builder::new(&[]);
    for e in exprs {
        e.encode(&mut b);
    }
    b.buf
}

/// `NFT_PAYLOAD_NETWORK_HEADER`.
pub const NETWORK_HEADER: u32 = 1;
/// `NFT_PAYLOAD_TRANSPORT_HEADER`.
pub const TRANSPORT_HEADER: u32 = 2;
/// `NFT_META_MARK`.
pub const META_MARK: u32 = 3;
/// `NFT_META_L4PROTO`.
pub const META_L4PROTO: u32 = 16;
/// `NFT_CT_STATUS`: the conntrack status bits ([`Expr::Ct`]), in host byte order.
pub const CT_STATUS: u32 = 2;

/// `NF_INET_PRE_ROUTING`: the hook of a `prerouting` base chain.
pub const HOOK_PREROUTING: u32 = 0;
/// `NF_INET_LOCAL_OUT`: the hook of an `output` base chain.
pub const HOOK_OUTPUT: u32 = 3;
/// `NF_INET_POST_ROUTING`: the hook of a `postrouting` base chain.
pub const HOOK_POSTROUTING: u32 = 4;
/// `NFT_FIB_RESULT_ADDRTYPE`: a `fib ... type` lookup (the route type, `RTN_*`).
pub const FIB_RESULT_ADDRTYPE: u32 = 3;
/// `NFTA_FIB_F_DADDR`: a `fib daddr` lookup.
pub const FIB_F_DADDR: u32 = 2;
/// `RTN_LOCAL`: `type local`, compared in host byte order.
pub const RTN_LOCAL: u32 = 2;
/// `IPS_DST_NAT`: the status bit of a connection that was DNATed (`ct status dnat`).
pub const IPS_DST_NAT: u32 = 0x20;
/// `NFT_NAT_DNAT` ([`Expr::Nat`]).
pub const NAT_DNAT: u32 = 1;
/// `NF_NAT_RANGE_PROTO_SPECIFIED`: the `nat` expression sets the port too.
pub const NAT_PROTO_SPECIFIED: u32 = 2;
/// `NF_NAT_RANGE_MAP_IPS`: the rule maps addresses.
pub const NF_NAT_RANGE_MAP_IPS: u32 = 1;

/// `NFT_META_NFPROTO`: the packet's family in an `inet` table (`ip` or `ip6` matches).
pub const META_NFPROTO: u32 = 15;
/// `NFT_CMP_EQ`.
pub const CMP_EQ: u32 = 0;
/// `NFT_CMP_NEQ`.
pub const CMP_NEQ: u32 = 1;

/// `ip|ip6 saddr|daddr ==|!= <net>` as `nft` 1.0 encodes it (for a table of the address's
/// family; an `inet` table needs a `meta nfproto` match first). See [`prefix_match`].
pub fn addr_match(net: IpNet, daddr: bool, equal: bool) -> Vec<Expr> {
    let offset = match (net, daddr) {
        (IpNet::V4(_), false) => 12,
        (IpNet::V4(_), true) => 16,
        (IpNet::V6(_), false) => 8,
        (IpNet::V6(_), true) => 24,
    };
    prefix_match(offset, &net, if equal { CMP_EQ } else { CMP_NEQ })
}

/// `payload` (+ `bitwise`) + `cmp` comparing the address at `offset` of the network header
/// with `net` (`op`: [`CMP_EQ`] or [`CMP_NEQ`]), as both `nft` and `iptables-nft` build it: a
/// prefix on a byte boundary loads just its bytes, any other prefix (and `/0`, which
/// `iptables-nft` leaves out instead) the whole address under a mask.
pub fn prefix_match(offset: u32, net: &IpNet, op: u32) -> Vec<Expr> {
    let (addr, mask) = match net {
        IpNet::V4(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
        IpNet::V6(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
    };
    let prefix = usize::from(net.prefix_len());
    let load = |len: usize| Expr::Payload {
        base: NETWORK_HEADER,
        offset,
        len: len as u32,
    };
    if prefix > 0 && prefix % 8 == 0 {
        let n = prefix / 8;
        vec![
            load(n),
            Expr::Cmp {
                op,
                data: addr[..n].to_vec(),
            },
        ]
    } else {
        vec![
            load(addr.len()),
            Expr::Bitwise {
                xor: vec![0; mask.len()],
                mask,
            },
            Expr::Cmp { op, data: addr },
        ]
    }
}

/// An address as register data (network byte order).
pub fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// What makes a chain a base chain: `{ type <kind> hook <num> priority <priority> ; }`
/// (policy accept, the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    /// The chain type: `nat`, `filter`, `route`.
    pub kind: &'static str,
    /// The hook, `NF_INET_*` ([`HOOK_PREROUTING`], [`HOOK_OUTPUT`], [`HOOK_POSTROUTING`]).
    pub num: u32,
    /// The priority.
    pub priority: i32,
}

/// One change of an atomic [`NfTables::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Delete one rule by handle.
    DeleteRule {
        family: NfFamily,
        table: String,
        chain: String,
        handle: u64,
    },
    /// Delete every rule of a chain (`flush chain`, `iptables -F`).
    FlushChain {
        family: NfFamily,
        table: String,
        chain: String,
    },
    /// Delete an empty, unreferenced chain (`iptables -X`).
    DeleteChain {
        family: NfFamily,
        table: String,
        chain: String,
    },
    /// Create a regular chain; the transaction fails if it exists (`iptables -N`).
    AddChain {
        family: NfFamily,
        table: String,
        chain: String,
    },
    /// Declare a table as `nft add table` does: created if missing, left as it is if not.
    DeclareTable {
        family: NfFamily,
        table: String,
        /// The table's comment (userdata), as `nft add table ... { comment "..." ; }`.
        comment: Option<String>,
    },
    /// Declare a chain as `nft add chain` does: created if missing (no error if it exists),
    /// attached to a hook if `hook` is given.
    DeclareChain {
        family: NfFamily,
        table: String,
        chain: String,
        hook: Option<Hook>,
        /// The chain's comment (userdata), as `nft add chain ... { comment "..." ; }`.
        comment: Option<String>,
    },
    /// Add a rule: its expressions, and the protocol and inversion x_tables extensions are
    /// checked against (`NFTA_RULE_COMPAT`).
    AddRule {
        family: NfFamily,
        table: String,
        chain: String,
        exprs: Vec<Expr>,
        compat: Option<(u32, u32)>,
        /// The `nft` comment (userdata), as `nft ... comment "..."` writes it.
        comment: Option<String>,
        /// Put first in the chain (`iptables -I <chain> 1`), not appended (`-A`).
        first: bool,
    },
}

fn put_data(b: &mut Builder, ty: u16, value: &[u8]) {
    b.nest(ty, true, |b| {
        b.attr(NFTA_DATA_VALUE, value);
    });
}

fn be(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

impl Expr {
    /// This expression as the kernel reports it back once added: a `nat` with an address
    /// register gains `NF_NAT_RANGE_MAP_IPS` (the kernel sets it).
    fn as_reported(&self) -> Expr {
        let mut e = self.clone();
        if let Expr::Nat {
            addr_reg, flags, ..
        } = &mut e
            && *addr_reg != 0
        {
            *flags |= NF_NAT_RANGE_MAP_IPS;
        }
        e
    }

    /// Appends this expression, as an `NFTA_LIST_ELEM`, the way `iptables-nft` (libnftnl)
    /// encodes it: loads go to register 1, verdicts to the verdict register, counters start
    /// at zero. `Other` cannot be encoded and is skipped (callers never build one).
    fn encode(&self, b: &mut Builder) {
        let name = match self {
            Expr::Immediate { .. } => "immediate",
            Expr::Cmp { .. } => "cmp",
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } => "meta",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Match { .. } => "match",
            Expr::Target { .. } => "target",
            Expr::Counter => "counter",
            Expr::ImmediateReg { .. } => "immediate",
            Expr::Ct { .. } => "ct",
            Expr::Nat { .. } => "nat",
            Expr::Masq => "masq",
            Expr::Fib { .. } => "fib",
            Expr::Other(_) => return,
        };
        b.nest(NFTA_LIST_ELEM, true, |b| {
            b.str(NFTA_EXPR_NAME, name);
            b.nest(NFTA_EXPR_DATA, true, |b| match self {
                Expr::Immediate { verdict, value } => match verdict {
                    Some(v) => {
                        b.attr(NFTA_IMMEDIATE_DREG, &be(NFT_REG_VERDICT));
                        b.nest(NFTA_IMMEDIATE_DATA, true, |b| {
                            b.nest(NFTA_DATA_VERDICT, true, |b| {
                                let (code, chain): (i32, Option<&str>) = match v {
                                    Verdict::Accept => (1, None),
                                    Verdict::Drop => (0, None),
                                    Verdict::Return => (-5, None),
                                    Verdict::Continue => (-1, None),
                                    Verdict::Jump(c) => (-3, Some(c)),
                                    Verdict::Goto(c) => (-4, Some(c)),
                                    Verdict::Other(x) => (*x, None),
                                };
                                b.attr(NFTA_VERDICT_CODE, &code.to_be_bytes());
                                if let Some(c) = chain {
                                    b.str(NFTA_VERDICT_CHAIN, c);
                                }
                            });
                        });
                    }
                    None => {
                        b.attr(NFTA_IMMEDIATE_DREG, &be(NFT_REG_1));
                        put_data(b, NFTA_IMMEDIATE_DATA, value);
                    }
                },
                Expr::Cmp { op, data } => {
                    b.attr(NFTA_CMP_SREG, &be(NFT_REG_1));
                    b.attr(NFTA_CMP_OP, &be(*op));
                    put_data(b, NFTA_CMP_DATA, data);
                }
                Expr::Payload { base, offset, len } => {
                    b.attr(NFTA_PAYLOAD_DREG, &be(NFT_REG_1));
                    b.attr(NFTA_PAYLOAD_BASE, &be(*base));
                    b.attr(NFTA_PAYLOAD_OFFSET, &be(*offset));
                    b.attr(NFTA_PAYLOAD_LEN, &be(*len));
                }
                Expr::Meta { key } => {
                    b.attr(NFTA_META_KEY, &be(*key));
                    b.attr(NFTA_META_DREG, &be(NFT_REG_1));
                }
                Expr::Bitwise { mask, xor } => {
                    b.attr(NFTA_BITWISE_SREG, &be(NFT_REG_1));
                    b.attr(NFTA_BITWISE_DREG, &be(NFT_REG_1));
                    b.attr(NFTA_BITWISE_LEN, &be(mask.len() as u32));
                    put_data(b, NFTA_BITWISE_MASK, mask);
                    put_data(b, NFTA_BITWISE_XOR, xor);
                }
                Expr::Match { name, rev, info } | Expr::Target { name, rev, info } => {
                    b.str(NFTA_COMPAT_NAME, name);
                    b.attr(NFTA_COMPAT_REV, &be(*rev));
                    b.attr(NFTA_COMPAT_INFO, info);
                }
                Expr::Counter => {
                    b.attr(NFTA_COUNTER_BYTES, &0u64.to_be_bytes());
                    b.attr(NFTA_COUNTER_PACKETS, &0u64.to_be_bytes());
                }
                Expr::ImmediateReg { reg, value } => {
                    b.attr(NFTA_IMMEDIATE_DREG, &be(*reg));
                    put_data(b, NFTA_IMMEDIATE_DATA, value);
                }
                Expr::Ct { key } => {
                    b.attr(NFTA_CT_DREG, &be(NFT_REG_1));
                    b.attr(NFTA_CT_KEY, &be(*key));
                }
                Expr::Nat {
                    nat_type,
                    family,
                    addr_reg,
                    proto_reg,
                    flags,
                } => {
                    b.attr(NFTA_NAT_TYPE, &be(*nat_type));
                    b.attr(NFTA_NAT_FAMILY, &be(u32::from(family.code())));
                    if *addr_reg != 0 {
                        b.attr(NFTA_NAT_REG_ADDR_MIN, &be(*addr_reg));
                    }
                    if *proto_reg != 0 {
                        b.attr(NFTA_NAT_REG_PROTO_MIN, &be(*proto_reg));
                    }
                    if *flags != 0 {
                        b.attr(NFTA_NAT_FLAGS, &be(*flags));
                    }
                }
                Expr::Fib { result, flags } => {
                    b.attr(NFTA_FIB_DREG, &be(NFT_REG_1));
                    b.attr(NFTA_FIB_RESULT, &be(*result));
                    b.attr(NFTA_FIB_FLAGS, &be(*flags));
                }
                Expr::Masq | Expr::Other(_) => {}
            });
        });
    }
}

/// A NUL-terminated (or NUL-padded) string of an attribute or a compared value, such as an
/// interface name.
pub fn cstr(d: &[u8]) -> String {
    let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
    String::from_utf8_lossy(&d[..end]).into_owned()
}

fn be32(d: &[u8]) -> Option<u32> {
    d.get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be64(d: &[u8]) -> Option<u64> {
    d.get(..8).map(|b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_be_bytes(a)
    })
}

fn nfgenmsg(family: u8, res_id: u16) -> [u8; 4] {
    let r = res_id.to_be_bytes();
    [family, 0, r[0], r[1]]
}

fn msg_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// The nftnl userdata of a comment: one TLV, the text with its NUL (`None` if over 254 bytes,
/// which no `nft` comment is).
fn udata_of_comment(comment: &str) -> Option<Vec<u8>> {
    let len = u8::try_from(comment.len() + 1).ok()?;
    let mut u = vec![UDATA_COMMENT, len];
    u.extend_from_slice(comment.as_bytes());
    u.push(0);
    Some(u)
}

/// Parses the comment TLV out of nftnl userdata.
fn udata_comment(d: &[u8]) -> Option<String> {
    let mut rest = d;
    while rest.len() >= 2 {
        let (ty, len) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + len)?;
        if ty == UDATA_COMMENT {
            return Some(cstr(value));
        }
        rest = &rest[2 + len..];
    }
    None
}

fn parse_data(d: &[u8]) -> (Option<Verdict>, Vec<u8>) {
    let mut verdict = None;
    let mut value = Vec::new();
    for (ty, v) in attrs(d) {
        match ty {
            NFTA_DATA_VALUE => value = v.to_vec(),
            NFTA_DATA_VERDICT => {
                let mut code: Option<i32> = None;
                let mut chain = String::new();
                for (vty, vd) in attrs(v) {
                    match vty {
                        NFTA_VERDICT_CODE => code = be32(vd).map(|c| c as i32),
                        NFTA_VERDICT_CHAIN => chain = cstr(vd),
                        _ => {}
                    }
                }
                verdict = code.map(|c| match c {
                    1 => Verdict::Accept,
                    0 => Verdict::Drop,
                    -5 => Verdict::Return,
                    -1 => Verdict::Continue,
                    -3 => Verdict::Jump(chain.clone()),
                    -4 => Verdict::Goto(chain.clone()),
                    other => Verdict::Other(other),
                });
            }
            _ => {}
        }
    }
    (verdict, value)
}

/// The name and the data attribute of one `NFTA_LIST_ELEM` expression.
fn expr_name_data(elem: &[u8]) -> (String, &[u8]) {
    let (mut name, mut data): (String, &[u8]) = (String::new(), &[]);
    for (ty, d) in attrs(elem) {
        match ty {
            NFTA_EXPR_NAME => name = cstr(d),
            NFTA_EXPR_DATA => data = d,
            _ => {}
        }
    }
    (name, data)
}

fn parse_expr(elem: &[u8]) -> Expr {
    let (name, data) = expr_name_data(elem);
    let a = attrs(data);
    let get = |t: u16| a.iter().find(|(ty, _)| *ty == t).map(|(_, d)| *d);
    let u = |t: u16| get(t).and_then(be32).unwrap_or(0);
    match name.as_str() {
        "immediate" => {
            let (verdict, value) = get(NFTA_IMMEDIATE_DATA).map(parse_data).unwrap_or_default();
            match u(NFTA_IMMEDIATE_DREG) {
                reg if verdict.is_none() && reg > NFT_REG_1 => Expr::ImmediateReg { reg, value },
                _ => Expr::Immediate { verdict, value },
            }
        }
        "ct" if u(NFTA_CT_DREG) == NFT_REG_1 => Expr::Ct {
            key: u(NFTA_CT_KEY),
        },
        "nat" => match NfFamily::from_code(u(NFTA_NAT_FAMILY)) {
            Some(family) => Expr::Nat {
                nat_type: u(NFTA_NAT_TYPE),
                family,
                addr_reg: u(NFTA_NAT_REG_ADDR_MIN),
                proto_reg: u(NFTA_NAT_REG_PROTO_MIN),
                flags: u(NFTA_NAT_FLAGS),
            },
            None => Expr::Other(name),
        },
        "masq" if a.is_empty() => Expr::Masq,
        "fib" if u(NFTA_FIB_DREG) == NFT_REG_1 => Expr::Fib {
            result: u(NFTA_FIB_RESULT),
            flags: u(NFTA_FIB_FLAGS),
        },
        "cmp" => Expr::Cmp {
            op: u(NFTA_CMP_OP),
            data: get(NFTA_CMP_DATA)
                .map(|d| parse_data(d).1)
                .unwrap_or_default(),
        },
        "payload" => Expr::Payload {
            base: u(NFTA_PAYLOAD_BASE),
            offset: u(NFTA_PAYLOAD_OFFSET),
            len: u(NFTA_PAYLOAD_LEN),
        },
        "meta" => Expr::Meta {
            key: u(NFTA_META_KEY),
        },
        "bitwise" => Expr::Bitwise {
            mask: get(NFTA_BITWISE_MASK)
                .map(|d| parse_data(d).1)
                .unwrap_or_default(),
            xor: get(NFTA_BITWISE_XOR)
                .map(|d| parse_data(d).1)
                .unwrap_or_default(),
        },
        "match" | "target" => {
            let n = get(NFTA_COMPAT_NAME).map(cstr).unwrap_or_default();
            let rev = u(NFTA_COMPAT_REV);
            let info = get(NFTA_COMPAT_INFO)
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            if name == "match" {
                Expr::Match { name: n, rev, info }
            } else {
                Expr::Target { name: n, rev, info }
            }
        }
        "counter" => Expr::Counter,
        _ => Expr::Other(name),
    }
}

fn parse_rule(payload: &[u8]) -> Option<Rule> {
    let body = payload.get(4..)?;
    let mut rule = Rule {
        chain: String::new(),
        handle: 0,
        comment: None,
        exprs: Vec::new(),
        raw_exprs: Vec::new(),
        compat: None,
    };
    for (ty, d) in attrs(body) {
        match ty {
            NFTA_RULE_CHAIN => rule.chain = cstr(d),
            NFTA_RULE_HANDLE => rule.handle = be64(d)?,
            NFTA_RULE_USERDATA => rule.comment = udata_comment(d),
            NFTA_RULE_COMPAT => {
                let a = attrs(d);
                let get = |t: u16| {
                    a.iter()
                        .find(|(ty, _)| *ty == t)
                        .and_then(|(_, v)| be32(v))
                        .unwrap_or(0)
                };
                rule.compat = Some((get(NFTA_RULE_COMPAT_PROTO), get(NFTA_RULE_COMPAT_FLAGS)));
            }
            NFTA_RULE_EXPRESSIONS => {
                rule.raw_exprs = d.to_vec();
                rule.exprs = attrs(d)
                    .into_iter()
                    .filter(|(t, _)| *t == NFTA_LIST_ELEM)
                    .map(|(_, e)| parse_expr(e))
                    .collect();
            }
            _ => {}
        }
    }
    Some(rule)
}

/// Appends the netlink payload of one change to `b`; returns the message's type and flags
/// (without `NLM_F_ACK`, which [`NfTables::commit`] asks for once per transaction).
fn encode_change(c: &Change, b: &mut Builder) -> (u16, u16) {
    match c {
        Change::DeleteRule {
            family,
            table,
            chain,
            handle,
        } => {
            b.buf.extend_from_slice(&nfgenmsg(family.code(), 0));
            b.str(NFTA_RULE_TABLE, table).str(NFTA_RULE_CHAIN, chain);
            b.attr(NFTA_RULE_HANDLE, &handle.to_be_bytes());
            (msg_type(NFT_MSG_DELRULE), 0)
        }
        Change::FlushChain {
            family,
            table,
            chain,
        } => {
            b.buf.extend_from_slice(&nfgenmsg(family.code(), 0));
            b.str(NFTA_RULE_TABLE, table).str(NFTA_RULE_CHAIN, chain);
            (msg_type(NFT_MSG_DELRULE), 0)
        }
        Change::DeleteChain {
            family,
            table,
            chain,
        } => {
            b.buf.extend_from_slice(&nfgenmsg(family.code(), 0));
            b.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, chain);
            (msg_type(NFT_MSG_DELCHAIN), 0)
        }
        Change::AddChain {
            family,
            table,
            chain,
        } => {
            b.buf.extend_from_slice(&nfgenmsg(family.code(), 0));
            b.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, chain);
            (msg_type(NFT_MSG_NEWCHAIN), NLM_F_CREATE | NLM_F_EXCL)
        }
        Change::DeclareTable {
            family,
            table,
            comment,
        } => {
            b.buf.extend_from_slice(&nfgenmsg(family.code(), 0));
            b.str(NFTA_TABLE_NAME, table);
            b.attr(NFTA_TABLE_FLAGS, &be(0));
            if let Some(c) = comment.as_deref().and_then(udata_of_comment) {
                b.attr(NFTA_TABLE_USERDATA, &c);
            }
            (msg_type(NFT_MSG_NEWTABLE), NLM_F_CREATE)
        }
        Change::DeclareChain {
            family,
            table,
            chain,
            hook,
            comment,
        } => {
            b.buf.extend_from_slice(&nfgenmsg(family.code(), 0));
            b.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, chain);
            if let Some(h) = hook {
                b.nest(NFTA_CHAIN_HOOK, true, |b| {
                    b.attr(NFTA_HOOK_HOOKNUM, &be(h.num));
                    b.attr(NFTA_HOOK_PRIORITY, &h.priority.to_be_bytes());
                });
                b.str(NFTA_CHAIN_TYPE, h.kind);
            }
            if let Some(c) = comment.as_deref().and_then(udata_of_comment) {
                b.attr(NFTA_CHAIN_USERDATA, &c);
            }
            (msg_type(NFT_MSG_NEWCHAIN), NLM_F_CREATE)
        }
        Change::AddRule {
            family,
            table,
            chain,
            exprs,
            compat,
            comment,
            first,
        } => {
            b.buf.extend_from_slice(&nfgenmsg(family.code(), 0));
            b.str(NFTA_RULE_TABLE, table).str(NFTA_RULE_CHAIN, chain);
            b.nest(NFTA_RULE_EXPRESSIONS, true, |b| {
                for e in exprs {
                    e.encode(b);
                }
            });
            if let Some((proto, flags)) = compat {
                b.nest(NFTA_RULE_COMPAT, true, |b| {
                    b.attr(NFTA_RULE_COMPAT_PROTO, &be(*proto));
                    b.attr(NFTA_RULE_COMPAT_FLAGS, &be(*flags));
                });
            }
            if let Some(c) = comment.as_deref().and_then(udata_of_comment) {
                b.attr(NFTA_RULE_USERDATA, &c);
            }
            // Without NLM_F_APPEND (and without a position) the kernel puts the rule first.
            let append = if *first { 0 } else { NLM_F_APPEND };
            (msg_type(NFT_MSG_NEWRULE), NLM_F_CREATE | append)
        }
    }
}

/// Every rule `changes` adds is among the rules `rules_of` gives for its chain, with the same
/// expressions as the kernel reports them (counters aside) and, where the change has one, the
/// same comment: CHECK's question for rules ADD wrote with these changes (`rules_of` gives
/// `None` for a chain it did not read: not present).
pub fn rules_present<'a>(
    changes: &[Change],
    rules_of: impl Fn(&str) -> Option<&'a [Rule]>,
) -> bool {
    changes.iter().all(|c| match c {
        Change::AddRule {
            chain,
            exprs,
            comment,
            ..
        } => rules_of(chain).is_some_and(|rules| {
            let wanted: Vec<Expr> = exprs
                .iter()
                .filter(|e| !matches!(e, Expr::Counter))
                .map(Expr::as_reported)
                .collect();
            rules.iter().any(|r| {
                (comment.is_none() || r.comment == *comment) && r.significant().eq(wanted.iter())
            })
        }),
        _ => true,
    })
}

/// nf_tables answers in the calling thread's namespace: a socket opens and the ruleset
/// generation can be read, as every transaction needs (with `CAP_NET_ADMIN`, as the tools
/// need it). No process is started.
pub fn answers() -> bool {
    NfTables::open().and_then(|mut nf| nf.generation()).is_ok()
}

/// A handle on the calling thread's namespace's nf_tables.
pub struct NfTables {
    pub(crate) sock: Socket,
}

impl NfTables {
    /// Opens a `NETLINK_NETFILTER` socket in the calling thread's namespace.
    pub fn open() -> Result<NfTables, NetlinkError> {
        Ok(NfTables {
            sock: Socket::open(SockProtocol::NetlinkNetFilter)?,
        })
    }

    /// True if the table exists. Errors other than "absent" (e.g. no nf_tables in this
    /// kernel) are returned, so that callers fall back to the tools.
    pub fn table_exists(&mut self, family: NfFamily, table: &str) -> Result<bool, NetlinkError> {
        let mut b = Builder::new(&nfgenmsg(family.code(), 0));
        b.str(NFTA_TABLE_NAME, table);
        match self.sock.request(
            msg_type(NFT_MSG_GETTABLE),
            0,
            &b.buf,
            &format!("get table {} {table}", family.name()),
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The chain, or `None` if it (or its table) does not exist.
    pub fn chain(
        &mut self,
        family: NfFamily,
        table: &str,
        chain: &str,
    ) -> Result<Option<ChainInfo>, NetlinkError> {
        let mut b = Builder::new(&nfgenmsg(family.code(), 0));
        b.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, chain);
        let msgs = match self.sock.request(
            msg_type(NFT_MSG_GETCHAIN),
            0,
            &b.buf,
            &format!("get chain {} {table} {chain}", family.name()),
        ) {
            Ok(m) => m,
            Err(e) if e.errno() == Some(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(m) = msgs.first() else {
            return Ok(None);
        };
        let mut info = ChainInfo {
            handle: 0,
            use_count: 0,
            base: false,
            comment: None,
        };
        for (ty, d) in attrs(m.payload.get(4..).unwrap_or_default()) {
            match ty {
                NFTA_CHAIN_HANDLE => info.handle = be64(d).unwrap_or(0),
                NFTA_CHAIN_USE => info.use_count = be32(d).unwrap_or(0),
                NFTA_CHAIN_HOOK => info.base = true,
                NFTA_CHAIN_USERDATA => info.comment = udata_comment(d),
                _ => {}
            }
        }
        Ok(Some(info))
    }

    /// The `new` messages (objects) of a `get` dump; none where the kernel says there is no
    /// such table or chain. Inlined: [`NfTables::rules`] is on DEL's path, whose code the
    /// symbol-order lists gather.
    #[inline(always)]
    fn objects(
        &mut self,
        get: u16,
        new: u16,
        req: &[u8],
        op: &str,
    ) -> Result<Vec<Message>, NetlinkError> {
        match self.sock.dump(msg_type(get), req, op) {
            Ok(mut msgs) => {
                msgs.retain(|m| m.ty == msg_type(new));
                Ok(msgs)
            }
            Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The names of the chains of `table` (none if it does not exist). The kernel lists
    /// every chain of the family; only chain names and tables are read, so this stays cheap
    /// where listing the rules would not be.
    pub fn chain_names(
        &mut self,
        family: NfFamily,
        table: &str,
    ) -> Result<Vec<String>, NetlinkError> {
        let b = Builder::new(&nfgenmsg(family.code(), 0));
        let op = format!("list chains of {}", family.name());
        Ok(self
            .objects(NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN, &b.buf, &op)?
            .iter()
            .filter_map(|m| {
                let (mut t, mut name) = (None, None);
                for (ty, d) in attrs(m.payload.get(4..)?) {
                    match ty {
                        NFTA_CHAIN_TABLE => t = Some(cstr(d)),
                        NFTA_CHAIN_NAME => name = Some(cstr(d)),
                        _ => {}
                    }
                }
                name.filter(|_| t.as_deref() == Some(table))
            })
            .collect())
    }

    /// One rule by its handle, or `None` if `chain` has no rule with that handle.
    pub fn rule(
        &mut self,
        family: NfFamily,
        table: &str,
        chain: &str,
        handle: u64,
    ) -> Result<Option<Rule>, NetlinkError> {
        let mut b = Builder::new(&nfgenmsg(family.code(), 0));
        b.str(NFTA_RULE_TABLE, table)
            .str(NFTA_RULE_CHAIN, chain)
            .attr(NFTA_RULE_HANDLE, &handle.to_be_bytes());
        let op = format!("get rule {} {table} {chain} {handle}", family.name());
        match self.sock.request(msg_type(NFT_MSG_GETRULE), 0, &b.buf, &op) {
            Ok(msgs) => Ok(msgs
                .iter()
                .filter(|m| m.ty == msg_type(NFT_MSG_NEWRULE))
                .find_map(|m| parse_rule(&m.payload))
                .filter(|r| r.chain == chain)),
            Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every jump to `chain` in `entry`, found without listing `entry`, for a chain created
    /// with its rules and its jumps in one transaction (as the plugins and `iptables-restore`
    /// do): such a transaction numbers them in order, so the jumps are among the handles
    /// right after the chain's own. `info` and `own` are the chain and its rules. `None`
    /// when the jumps found there do not account for every reference to the chain (created
    /// otherwise, or referenced from elsewhere): list `entry` then. On a node with hundreds
    /// of containers this saves listing hundreds of rules, a few milliseconds.
    pub fn jumps_by_handle(
        &mut self,
        family: NfFamily,
        table: &str,
        entry: &str,
        chain: &str,
        info: &ChainInfo,
        own: &[Rule],
    ) -> Result<Option<Vec<Rule>>, NetlinkError> {
        /// More references than this: list instead.
        const MAX_JUMPS: usize = 32;
        let Some(expected) = (info.use_count as usize).checked_sub(own.len()) else {
            return Ok(None);
        };
        if expected > MAX_JUMPS {
            return Ok(None);
        }
        let mut jumps = Vec::with_capacity(expected);
        let last = info.handle + (own.len() + expected) as u64;
        for handle in info.handle + 1..=last {
            if jumps.len() == expected {
                break;
            }
            if own.iter().any(|r| r.handle == handle) {
                continue;
            }
            match self.rule(family, table, entry, handle)? {
                Some(r) if r.jump_target() == Some(chain) => jumps.push(r),
                _ => return Ok(None),
            }
        }
        Ok((jumps.len() == expected).then_some(jumps))
    }

    /// Every jump to `chain` (`info`, with its rules `own`) in `entry`: by handle when it
    /// can ([`NfTables::jumps_by_handle`]), otherwise from a listing of `entry`.
    pub fn jumps_to(
        &mut self,
        family: NfFamily,
        table: &str,
        entry: &str,
        chain: &str,
        info: &ChainInfo,
        own: &[Rule],
    ) -> Result<Vec<Rule>, NetlinkError> {
        if let Ok(Some(jumps)) = self.jumps_by_handle(family, table, entry, chain, info, own) {
            return Ok(jumps);
        }
        let mut rules = self.rules(family, table, Some(entry))?;
        rules.retain(|r| r.jump_target() == Some(chain));
        Ok(rules)
    }

    /// Every rule `changes` adds is in `table` as [`rules_present`] compares them, the rules
    /// of each chain concerned read once. False if they cannot be read.
    pub fn holds(&mut self, family: NfFamily, table: &str, changes: &[Change]) -> bool {
        let mut rules: Vec<(&str, Vec<Rule>)> = Vec::new();
        for c in changes {
            if let Change::AddRule { chain, .. } = c
                && !rules.iter().any(|(n, _)| n == chain)
            {
                match self.rules(family, table, Some(chain)) {
                    Ok(r) => rules.push((chain, r)),
                    Err(_) => return false,
                }
            }
        }
        rules_present(changes, |c| {
            rules
                .iter()
                .find(|(n, _)| *n == c)
                .map(|(_, r)| r.as_slice())
        })
    }

    /// The rules of one chain (or of the whole table with `chain = None`), in order. An
    /// absent table or chain has no rules.
    pub fn rules(
        &mut self,
        family: NfFamily,
        table: &str,
        chain: Option<&str>,
    ) -> Result<Vec<Rule>, NetlinkError> {
        let mut b = Builder::new(&nfgenmsg(family.code(), 0));
        b.str(NFTA_RULE_TABLE, table);
        if let Some(c) = chain {
            b.str(NFTA_RULE_CHAIN, c);
        }
        let op = format!(
            "list rules of {} {table} {}",
            family.name(),
            chain.unwrap_or("*")
        );
        Ok(self
            .objects(NFT_MSG_GETRULE, NFT_MSG_NEWRULE, &b.buf, &op)?
            .iter()
            .filter_map(|m| parse_rule(&m.payload))
            .filter(|r| chain.is_none_or(|c| r.chain == c))
            .collect())
    }

    /// The current ruleset generation (changes with every commit).
    pub fn generation(&mut self) -> Result<u32, NetlinkError> {
        let b = Builder::new(&nfgenmsg(0, 0));
        let msgs = self
            .sock
            .request(msg_type(NFT_MSG_GETGEN), 0, &b.buf, "get generation")?;
        msgs.first()
            .and_then(|m| {
                attrs(m.payload.get(4..)?)
                    .into_iter()
                    .find(|(t, _)| *t == NFTA_GEN_ID)
                    .and_then(|(_, d)| be32(d))
            })
            .ok_or_else(|| NetlinkError::Protocol("get generation: no generation id".into()))
    }

    /// Applies `changes` as one transaction: all or nothing. With `generation`, the kernel
    /// refuses (`ERESTART`) if the ruleset changed since that generation was read, so that
    /// handles taken from a listing cannot be applied to a newer ruleset. An empty list does
    /// nothing.
    pub fn commit(
        &mut self,
        changes: &[Change],
        generation: Option<u32>,
    ) -> Result<(), NetlinkError> {
        if changes.is_empty() {
            return Ok(());
        }
        // The messages are encoded straight into the datagram (thousands of rules for
        // thousands of port mappings). Errors are reported for every message; a positive ack
        // is asked only for the last change, so that a transaction of thousands of rules does
        // not queue thousands of acks (which would overflow the socket's receive buffer).
        let n = changes.len();
        self.sock
            .batch(n + 2, "nf_tables transaction", |i, b| match i {
                0 => {
                    b.buf.extend_from_slice(&nfgenmsg(0, NFNL_SUBSYS_NFTABLES));
                    if let Some(g) = generation {
                        b.attr(NFNL_BATCH_GENID, &g.to_be_bytes());
                    }
                    (NFNL_MSG_BATCH_BEGIN, 0)
                }
                i if i <= n => {
                    let (ty, flags) = encode_change(&changes[i - 1], b);
                    (ty, if i == n { flags | NLM_F_ACK } else { flags })
                }
                _ => {
                    b.buf.extend_from_slice(&nfgenmsg(0, NFNL_SUBSYS_NFTABLES));
                    (NFNL_MSG_BATCH_END, 0)
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userdata_comment() {
        let mut u = vec![0u8, 4];
        u.extend_from_slice(b"abc\0");
        assert_eq!(udata_comment(&u).as_deref(), Some("abc"));
        assert_eq!(
            udata_comment(&[5, 1, 9, 0, 2, b'x', 0]).as_deref(),
            Some("x")
        );
        assert_eq!(udata_comment(&[0, 9, 1]), None);
        assert_eq!(udata_of_comment("abc"), Some(u));
        assert_eq!(udata_of_comment(&"x".repeat(255)), None);
    }

    #[test]
    fn expressions_decode() {
        // immediate jump -> "CNI-X"
        let mut b = Builder::new(&[]);
        b.nest(NFTA_LIST_ELEM, true, |b| {
            b.str(NFTA_EXPR_NAME, "immediate");
            b.nest(NFTA_EXPR_DATA, true, |b| {
                b.attr(NFTA_IMMEDIATE_DREG, &0u32.to_be_bytes());
                b.nest(NFTA_IMMEDIATE_DATA, true, |b| {
                    b.nest(NFTA_DATA_VERDICT, true, |b| {
                        b.attr(NFTA_VERDICT_CODE, &(-3i32).to_be_bytes());
                        b.str(NFTA_VERDICT_CHAIN, "CNI-X");
                    });
                });
            });
        });
        let elems = attrs(&b.buf);
        let e = parse_expr(elems[0].1);
        assert_eq!(
            e,
            Expr::Immediate {
                verdict: Some(Verdict::Jump("CNI-X".into())),
                value: Vec::new()
            }
        );
        let r = Rule {
            chain: "C".into(),
            handle: 1,
            comment: None,
            exprs: vec![Expr::Counter, e],
            raw_exprs: Vec::new(),
            compat: None,
        };
        assert_eq!(r.jump_target(), Some("CNI-X"));
        assert_eq!(r.significant().count(), 1);
    }

    #[test]
    fn counter_packets() {
        let counter = |b: &mut Builder, packets: u64| {
            b.nest(NFTA_LIST_ELEM, true, |b| {
                b.str(NFTA_EXPR_NAME, "counter");
                b.nest(NFTA_EXPR_DATA, true, |b| {
                    b.attr(NFTA_COUNTER_BYTES, &(packets * 60).to_be_bytes());
                    b.attr(NFTA_COUNTER_PACKETS, &packets.to_be_bytes());
                });
            });
        };
        let rule = |raw: Vec<u8>| Rule {
            chain: "C".into(),
            handle: 1,
            comment: None,
            exprs: Vec::new(),
            raw_exprs: raw,
            compat: None,
        };
        let mut b = Builder::new(&[]);
        counter(&mut b, 5);
        Expr::Target {
            name: "DNAT".into(),
            rev: 2,
            info: vec![0; 4],
        }
        .encode(&mut b);
        assert_eq!(rule(b.buf).packets(), Some(5));
        let mut b = Builder::new(&[]);
        counter(&mut b, 2);
        counter(&mut b, 3);
        assert_eq!(rule(b.buf).packets(), Some(5));
        assert_eq!(
            rule(encode_exprs(&[Expr::Counter, Expr::Meta { key: 16 }])).packets(),
            Some(0)
        );
        assert_eq!(
            rule(encode_exprs(&[Expr::Meta { key: 16 }])).packets(),
            None
        );
        assert_eq!(rule(Vec::new()).packets(), None);
    }
}
