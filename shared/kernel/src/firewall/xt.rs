//! `iptables-nft` rules written directly as nf_tables rules: the small subset of iptables
//! syntax the plugins generate, encoded exactly the way `iptables-nft` 1.8 encodes it, so
//! that `iptables-save`, `iptables -C` and `iptables -D` (ours, the reference's, an
//! administrator's) see the very same rules as if `iptables-restore` had added them.
//!
//! Supported: `-p tcp|udp`, `-s`/`-d` with an optional `!` before `-d`, `--dport`,
//! `-m comment --comment`, `-m multiport --destination-ports` (≤ 15 ports), `-m addrtype
//! --dst-type LOCAL`, `-m mark --mark value/mask`, and the targets `ACCEPT`, `DROP`,
//! `RETURN`, `MASQUERADE`, `DNAT --to-destination ip:port`, `MARK --set-xmark value/mask` and
//! jumps to chains. Anything else (a user's extra conditions, other extensions) makes [`encode`]
//! return `None`, and the caller uses `iptables-restore`.
//!
//! The encodings (checked against `iptables-nft` 1.8.9 by the kernel crate's tests, which
//! compare what the kernel dumps for a rule added both ways):
//! * protocol: `meta l4proto` + `cmp`; the protocol also goes to `NFTA_RULE_COMPAT`, which
//!   x_tables extensions (multiport) check;
//! * addresses: `payload` of the prefix's whole bytes + `cmp`, or of the whole address +
//!   `bitwise` mask + `cmp` when the prefix is not byte-aligned; `/0` matches nothing;
//! * `--dport`: `payload` of the transport header's bytes 2..4 + `cmp` (the native form of
//!   the implicit `-m tcp`/`-m udp`);
//! * `-m mark`: `meta mark` + `bitwise` mask + `cmp` (native too);
//! * `comment`, `multiport`, `addrtype`, `MASQUERADE`, `DNAT`, `MARK`: `nft_compat` matches
//!   and targets with the x_tables structures (`xt_comment_info`, `xt_multiport_v1`,
//!   `xt_addrtype_info_v1`, `nf_nat_ipv4_multi_range_compat` / `nf_nat_range`,
//!   `nf_nat_range2`, `xt_mark_tginfo2`);
//! * every rule gets a `counter` before its verdict or target.

use super::Family;
use crate::nftables::{
    CMP_EQ, CMP_NEQ, Change, Expr, HOOK_OUTPUT, HOOK_POSTROUTING, HOOK_PREROUTING, Hook,
    META_L4PROTO, META_MARK, NAT_PROTO_SPECIFIED, NF_NAT_RANGE_MAP_IPS, TRANSPORT_HEADER, Verdict,
    prefix_match,
};
use ipnet::IpNet;
use std::net::IpAddr;

const XT_MULTIPORT_DESTINATION: u8 = 1;
/// `XT_ADDRTYPE_LOCAL` (`1 << RTN_LOCAL`).
const XT_ADDRTYPE_LOCAL: u16 = 1 << 2;

/// What a rule does at its end.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Verdict(Verdict),
    Masquerade,
    Dnat(IpAddr, u16),
    /// `MARK --set-xmark value/mask`.
    SetMark(u32, u32),
}

#[derive(Clone, Debug, Default)]
struct Parsed {
    proto: Option<u8>,
    src: Option<IpNet>,
    dst: Option<(bool, IpNet)>,
    /// Matches, in command-line order.
    matches: Vec<Match>,
    target: Option<Target>,
}

#[derive(Clone, Debug)]
enum Match {
    Dport(u16),
    Comment(String),
    Multiport(Vec<u16>),
    /// `-m addrtype --dst-type LOCAL`.
    DstLocal,
    /// `-m mark --mark value/mask`.
    Mark(u32, u32),
}

/// `value/mask` as iptables reads a mark (`strtoul` with base 0: hex with `0x`, else
/// decimal); only the form with an explicit mask other than all ones, which is encoded with a
/// `bitwise` (the reference always writes one).
fn parse_mark(s: &str) -> Option<(u32, u32)> {
    let num = |x: &str| match x.strip_prefix("0x").or_else(|| x.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None if x.starts_with('0') && x.len() > 1 => None,
        None => x.parse().ok(),
    };
    let (v, m) = s.split_once('/')?;
    let (v, m) = (num(v)?, num(m)?);
    (m != u32::MAX).then_some((v, m))
}

fn parse_net(s: &str, family: Family) -> Option<IpNet> {
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(s.parse::<IpAddr>().ok()?),
    };
    let v4 = net.addr().is_ipv4();
    if v4 != (family == Family::V4) {
        return None;
    }
    Some(net.trunc())
}

fn parse_to(s: &str, family: Family) -> Option<(IpAddr, u16)> {
    let (ip, port) = match family {
        Family::V4 => s.rsplit_once(':')?,
        Family::V6 => {
            let rest = s.strip_prefix('[')?;
            let (ip, port) = rest.split_once("]:")?;
            (ip, port)
        }
    };
    let ip: IpAddr = ip.parse().ok()?;
    if ip.is_ipv4() != (family == Family::V4) {
        return None;
    }
    Some((ip, port.parse().ok()?))
}

fn parse(args: &[String], family: Family) -> Option<Parsed> {
    let mut p = Parsed::default();
    let mut i = 0;
    let mut negate = false;
    let mut loaded: Vec<&str> = Vec::new();
    let next = |i: &mut usize| -> Option<&String> {
        *i += 1;
        args.get(*i)
    };
    while i < args.len() {
        let a = args[i].as_str();
        if negate && a != "-d" {
            return None;
        }
        match a {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-p" => {
                p.proto = match next(&mut i)?.as_str() {
                    "tcp" => Some(6),
                    "udp" => Some(17),
                    _ => return None,
                };
            }
            "-s" => {
                if p.src.is_some() {
                    return None;
                }
                p.src = Some(parse_net(next(&mut i)?, family)?);
            }
            "-d" => {
                if p.dst.is_some() {
                    return None;
                }
                p.dst = Some((negate, parse_net(next(&mut i)?, family)?));
                negate = false;
            }
            "--dport" => {
                p.proto?;
                p.matches.push(Match::Dport(next(&mut i)?.parse().ok()?));
            }
            "-m" => {
                let m = next(&mut i)?.as_str();
                let known = ["comment", "multiport", "addrtype", "mark"];
                loaded.push(known.into_iter().find(|k| *k == m)?);
            }
            "--dst-type" => {
                if !loaded.contains(&"addrtype") || next(&mut i)? != "LOCAL" {
                    return None;
                }
                p.matches.push(Match::DstLocal);
            }
            "--mark" => {
                if !loaded.contains(&"mark") {
                    return None;
                }
                let (v, m) = parse_mark(next(&mut i)?)?;
                p.matches.push(Match::Mark(v, m));
            }
            "--comment" => {
                if !loaded.contains(&"comment") {
                    return None;
                }
                let c = next(&mut i)?;
                if c.len() > 255 || c.contains('\0') {
                    return None;
                }
                p.matches.push(Match::Comment(c.clone()));
            }
            "--destination-ports" | "--dports" => {
                if !loaded.contains(&"multiport") {
                    return None;
                }
                let ports: Option<Vec<u16>> =
                    next(&mut i)?.split(',').map(|x| x.parse().ok()).collect();
                let ports = ports?;
                if ports.is_empty() || ports.len() > 15 {
                    return None;
                }
                p.matches.push(Match::Multiport(ports));
            }
            "-j" => {
                let t = next(&mut i)?.as_str();
                p.target = Some(match t {
                    "ACCEPT" => Target::Verdict(Verdict::Accept),
                    "DROP" => Target::Verdict(Verdict::Drop),
                    "RETURN" => Target::Verdict(Verdict::Return),
                    "MASQUERADE" => Target::Masquerade,
                    "DNAT" => {
                        if args.get(i + 1).map(String::as_str) != Some("--to-destination") {
                            return None;
                        }
                        i += 1;
                        let (ip, port) = parse_to(next(&mut i)?, family)?;
                        Target::Dnat(ip, port)
                    }
                    "MARK" => {
                        if args.get(i + 1).map(String::as_str) != Some("--set-xmark") {
                            return None;
                        }
                        i += 1;
                        let (v, m) = parse_mark(next(&mut i)?)?;
                        Target::SetMark(v, m)
                    }
                    // An all-capitals name is an x_tables target extension (MARK, SNAT, LOG...)
                    // we do not encode; anything else is a chain.
                    c if c
                        .chars()
                        .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit()) =>
                    {
                        return None;
                    }
                    c => Target::Verdict(Verdict::Jump(c.to_string())),
                });
            }
            _ => return None,
        }
        i += 1;
    }
    if negate {
        return None;
    }
    // multiport needs a protocol, as iptables requires.
    if p.matches.iter().any(|m| matches!(m, Match::Multiport(_))) && p.proto.is_none() {
        return None;
    }
    p.target.as_ref()?;
    Some(p)
}

/// An address match at `offset` of the network header, as `iptables-nft`'s `add_addr` builds
/// it: [`prefix_match`], left out for `/0` (every address).
fn addr_match(out: &mut Vec<Expr>, offset: u32, net: &IpNet, op: u32) {
    if net.prefix_len() > 0 {
        out.extend(prefix_match(offset, net, op));
    }
}

fn nat_range2(ip: IpAddr, port: u16) -> Vec<u8> {
    let mut info = Vec::with_capacity(48);
    info.extend_from_slice(&(NF_NAT_RANGE_MAP_IPS | NAT_PROTO_SPECIFIED).to_ne_bytes());
    let mut addr = [0u8; 16];
    match ip {
        IpAddr::V4(a) => addr[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => addr.copy_from_slice(&a.octets()),
    }
    info.extend_from_slice(&addr);
    info.extend_from_slice(&addr);
    info.extend_from_slice(&port.to_be_bytes());
    info.extend_from_slice(&port.to_be_bytes());
    info.extend_from_slice(&[0, 0]);
    info.resize(48, 0);
    info
}

/// The base chain `chain` of the `nat` table as `iptables-nft` creates it when a rule first
/// goes into it (type nat, x_tables' hook and priority: `NF_IP_PRI_NAT_DST` -100 before
/// routing and on output, `NF_IP_PRI_NAT_SRC` 100 after routing), declared so that it is left
/// as it is if it exists; `None` for any other name.
pub fn nat_base_chain(family: Family, chain: &str) -> Option<Change> {
    let (num, priority) = match chain {
        "PREROUTING" => (HOOK_PREROUTING, -100),
        "OUTPUT" => (HOOK_OUTPUT, -100),
        "POSTROUTING" => (HOOK_POSTROUTING, 100),
        _ => return None,
    };
    Some(Change::DeclareChain {
        family: family.nf_family(),
        table: "nat".to_string(),
        chain: chain.to_string(),
        hook: Some(Hook {
            kind: "nat",
            num,
            priority,
        }),
        comment: None,
    })
}

/// `-A <chain> <args>` in `table` as one change of a transaction, encoded as [`encode`]
/// encodes it; `None` if it cannot be.
pub fn append(family: Family, table: &str, chain: &str, args: &[String]) -> Option<Change> {
    rule(family, table, chain, args, false)
}

/// `-I <chain> 1 <args>` (the rule put first) in `table`, as [`append`].
pub fn prepend(family: Family, table: &str, chain: &str, args: &[String]) -> Option<Change> {
    rule(family, table, chain, args, true)
}

fn rule(family: Family, table: &str, chain: &str, args: &[String], first: bool) -> Option<Change> {
    let (exprs, compat) = encode(args, family)?;
    Some(Change::AddRule {
        family: family.nf_family(),
        table: table.to_string(),
        chain: chain.to_string(),
        exprs,
        compat: Some(compat),
        comment: None,
        first,
    })
}

/// The nf_tables expressions and `NFTA_RULE_COMPAT` of an iptables rule given as argv (the
/// arguments after `-A <chain>`), for `family`; `None` if it uses anything outside the
/// supported subset.
pub fn encode(args: &[String], family: Family) -> Option<(Vec<Expr>, (u32, u32))> {
    let p = parse(args, family)?;
    let mut out = Vec::new();
    if let Some(proto) = p.proto {
        out.push(Expr::Meta { key: META_L4PROTO });
        out.push(Expr::Cmp {
            op: CMP_EQ,
            data: vec![proto],
        });
    }
    let (src_off, dst_off) = match family {
        Family::V4 => (12, 16),
        Family::V6 => (8, 24),
    };
    if let Some(src) = &p.src {
        addr_match(&mut out, src_off, src, CMP_EQ);
    }
    if let Some((neg, dst)) = &p.dst {
        addr_match(&mut out, dst_off, dst, if *neg { CMP_NEQ } else { CMP_EQ });
    }
    for m in &p.matches {
        match m {
            Match::Dport(port) => {
                out.push(Expr::Payload {
                    base: TRANSPORT_HEADER,
                    offset: 2,
                    len: 2,
                });
                out.push(Expr::Cmp {
                    op: CMP_EQ,
                    data: port.to_be_bytes().to_vec(),
                });
            }
            Match::Comment(c) => {
                let mut info = c.as_bytes().to_vec();
                info.resize(256, 0);
                out.push(Expr::Match {
                    name: "comment".into(),
                    rev: 0,
                    info,
                });
            }
            Match::Multiport(ports) => {
                let mut info = vec![XT_MULTIPORT_DESTINATION, ports.len() as u8];
                for i in 0..15 {
                    info.extend_from_slice(&ports.get(i).copied().unwrap_or(0).to_ne_bytes());
                }
                info.resize(48, 0);
                out.push(Expr::Match {
                    name: "multiport".into(),
                    rev: 1,
                    info,
                });
            }
            Match::DstLocal => {
                // xt_addrtype_info_v1: source, dest, flags.
                let mut info = vec![0, 0];
                info.extend_from_slice(&XT_ADDRTYPE_LOCAL.to_ne_bytes());
                info.extend_from_slice(&[0; 4]);
                out.push(Expr::Match {
                    name: "addrtype".into(),
                    rev: 1,
                    info,
                });
            }
            Match::Mark(value, mask) => {
                out.push(Expr::Meta { key: META_MARK });
                out.push(Expr::Bitwise {
                    mask: mask.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                });
                out.push(Expr::Cmp {
                    op: CMP_EQ,
                    data: value.to_ne_bytes().to_vec(),
                });
            }
        }
    }
    out.push(Expr::Counter);
    match p.target? {
        Target::Verdict(v) => out.push(Expr::Immediate {
            verdict: Some(v),
            value: Vec::new(),
        }),
        Target::Masquerade => {
            let info = match family {
                // nf_nat_ipv4_multi_range_compat with rangesize 1, padded to 8 bytes.
                Family::V4 => {
                    let mut i = 1u32.to_ne_bytes().to_vec();
                    i.resize(24, 0);
                    i
                }
                // nf_nat_range, all zero.
                Family::V6 => vec![0; 40],
            };
            out.push(Expr::Target {
                name: "MASQUERADE".into(),
                rev: 0,
                info,
            });
        }
        Target::Dnat(ip, port) => out.push(Expr::Target {
            name: "DNAT".into(),
            rev: 2,
            info: nat_range2(ip, port),
        }),
        Target::SetMark(value, mask) => {
            // xt_mark_tginfo2: mark, mask.
            let mut info = value.to_ne_bytes().to_vec();
            info.extend_from_slice(&mask.to_ne_bytes());
            out.push(Expr::Target {
                name: "MARK".into(),
                rev: 2,
                info,
            });
        }
    }
    Some((out, (u32::from(p.proto.unwrap_or(0)), 0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::iptables::argv;

    #[test]
    fn subset() {
        let ok = |a: &[&str]| encode(&argv(a), Family::V4).is_some();
        assert!(ok(&[
            "-d",
            "10.88.0.0/16",
            "-m",
            "comment",
            "--comment",
            "x y",
            "-j",
            "ACCEPT"
        ]));
        assert!(ok(&[
            "!",
            "-d",
            "224.0.0.0/4",
            "-m",
            "comment",
            "--comment",
            "x",
            "-j",
            "MASQUERADE"
        ]));
        assert!(ok(&[
            "-p",
            "tcp",
            "--dport",
            "80",
            "-j",
            "DNAT",
            "--to-destination",
            "10.0.0.2:80"
        ]));
        assert!(ok(&[
            "-m",
            "comment",
            "--comment",
            "c",
            "-m",
            "multiport",
            "-p",
            "udp",
            "--destination-ports",
            "1,2",
            "-j",
            "CNI-DN-x"
        ]));
        assert!(ok(&[
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "CNI-X"
        ]));
        assert!(ok(&["-j", "MARK", "--set-xmark", "0x2000/0x2000"]));
        assert!(ok(&[
            "-m",
            "mark",
            "--mark",
            "8192/0x2000",
            "-j",
            "MASQUERADE"
        ]));
        // Outside the subset: the caller uses iptables-restore.
        assert!(!ok(&[
            "-m",
            "addrtype",
            "--dst-type",
            "UNICAST",
            "-j",
            "CNI-X"
        ]));
        assert!(
            !ok(&["--dst-type", "LOCAL", "-j", "CNI-X"]),
            "addrtype not loaded"
        );
        assert!(!ok(&["-m", "mark", "--mark", "0x2000", "-j", "CNI-X"]));
        assert!(!ok(&[
            "-m",
            "mark",
            "--mark",
            "1/0xffffffff",
            "-j",
            "CNI-X"
        ]));
        assert!(
            !ok(&["-m", "mark", "--mark", "010/0x10", "-j", "CNI-X"]),
            "octal"
        );
        assert!(!ok(&["-j", "MARK", "--set-mark", "0x2000"]));
        assert!(!ok(&["-m", "conntrack", "--ctstate", "NEW", "-j", "CNI-X"]));
        assert!(!ok(&["-p", "tcp", "--dport", "80", "-a", "b", "-j", "X"]));
        assert!(!ok(&["!", "-s", "10.0.0.0/8", "-j", "X"]));
        assert!(!ok(&["--dport", "80", "-j", "X"]));
        assert!(!ok(&[
            "-m",
            "multiport",
            "--destination-ports",
            "1",
            "-j",
            "CNI-X"
        ]));
        assert!(!ok(&["-j", "SNAT"]), "an x_tables target, not a chain");
        assert!(!ok(&["-s", "2001:db8::1", "-j", "X"]));
        assert!(
            encode(
                &argv(&[
                    "-p",
                    "tcp",
                    "--dport",
                    "80",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    "[2001:db8::2]:80"
                ]),
                Family::V6
            )
            .is_some()
        );
    }

    #[test]
    fn address_forms() {
        let (e, _) = encode(&argv(&["-s", "10.88.0.2/16", "-j", "CNI-X"]), Family::V4).unwrap();
        assert_eq!(
            e[0],
            Expr::Payload {
                base: 1,
                offset: 12,
                len: 2
            }
        );
        assert_eq!(
            e[1],
            Expr::Cmp {
                op: 0,
                data: vec![10, 88]
            }
        );
        let (e, _) = encode(&argv(&["-d", "10.0.16.0/20", "-j", "CNI-X"]), Family::V4).unwrap();
        assert_eq!(
            e[0],
            Expr::Payload {
                base: 1,
                offset: 16,
                len: 4
            }
        );
        assert_eq!(
            e[1],
            Expr::Bitwise {
                mask: vec![255, 255, 240, 0],
                xor: vec![0; 4]
            }
        );
        let (e, _) = encode(&argv(&["-s", "0.0.0.0/0", "-j", "CNI-X"]), Family::V4).unwrap();
        assert_eq!(
            e,
            vec![
                Expr::Counter,
                Expr::Immediate {
                    verdict: Some(Verdict::Jump("CNI-X".into())),
                    value: vec![]
                }
            ]
        );
        let (e, c) = encode(
            &argv(&["-p", "udp", "-s", "127.0.0.1", "-j", "CNI-X"]),
            Family::V4,
        )
        .unwrap();
        assert_eq!(c, (17, 0));
        assert_eq!(
            e[2],
            Expr::Payload {
                base: 1,
                offset: 12,
                len: 4
            }
        );
    }
}
