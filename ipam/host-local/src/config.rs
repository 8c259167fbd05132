//! The `host-local` configuration: the `ipam` object plus the parent's `name`, `cniVersion`,
//! `runtimeConfig` and `args`, decoded and validated as the reference's `LoadIPAMConfig` does
//! (`plugins.md` §2.1), with the same messages but code 7 and the offending field named in
//! the error's `details`.
//!
//! Order, as in the reference: requested IPs accumulate from `CNI_ARGS IP=`, `args.cni.ips`,
//! then `runtimeConfig.ips` (prefixes ignored, duplicates collapsed); the legacy top-level
//! `subnet`/`rangeStart`/`rangeEnd`/`gateway` is prepended to `ranges` as one set, then
//! `runtimeConfig.ipRanges` is prepended to that; every set is canonicalized (defaults filled
//! in) and checked; then the pre-0.3.0 one-address-per-family rule; then overlaps between sets.

use crate::error::HostLocalError;
use crate::range::{Range, RangeSet, next_ip, same_family, subnet_string, to_u128};
use cni::Version;
use cni::args::CniArgs;
use cni::result::{Dns, Route, ip_string, null_default};
use cni::skel::Request;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;

/// The reference's default state root.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// Every key this plugin reads (matched case-insensitively, as Go does).
pub const KNOWN_KEYS: &[&str] = &[
    "ipam",
    "ranges",
    "subnet",
    "rangeStart",
    "rangeEnd",
    "gateway",
    "routes",
    "dataDir",
    "resolvConf",
    "runtimeConfig",
    "ipRanges",
    "ips",
    "args",
    "cni",
    "dst",
    "gw",
    "mtu",
    "advmss",
    "priority",
    "table",
    "scope",
];

/// The validated configuration of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamConfig {
    /// The network name: the directory under `data_dir`.
    pub name: String,
    /// State root (`dataDir`, default [`DEFAULT_DATA_DIR`]).
    pub data_dir: PathBuf,
    /// `resolvConf`, parsed into the result's `dns` on ADD.
    pub resolv_conf: Option<PathBuf>,
    /// `routes`, copied into the result.
    pub routes: Vec<Route>,
    /// The range sets, in allocation order (ipRanges, legacy, ranges).
    pub range_sets: Vec<RangeSet>,
    /// Requested addresses, canonical, in accumulation order, without duplicates.
    pub requested: Vec<IpAddr>,
}

#[derive(Deserialize, Default)]
struct RawNet {
    #[serde(default)]
    ipam: Option<RawIpam>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RawRuntime>,
    #[serde(default)]
    args: Option<RawArgs>,
}

#[derive(Deserialize, Default)]
struct RawIpam {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(rename = "rangeStart", default)]
    range_start: Option<String>,
    #[serde(rename = "rangeEnd", default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    routes: Vec<Option<RawRoute>>,
    #[serde(rename = "dataDir", default, deserialize_with = "null_default")]
    data_dir: String,
    #[serde(rename = "resolvConf", default, deserialize_with = "null_default")]
    resolv_conf: String,
    #[serde(default, deserialize_with = "null_default")]
    ranges: Vec<Vec<RawRange>>,
}

#[derive(Deserialize, Default)]
struct RawRange {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(rename = "rangeStart", default)]
    range_start: Option<String>,
    #[serde(rename = "rangeEnd", default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    mtu: u32,
    #[serde(default, deserialize_with = "null_default")]
    advmss: u32,
    #[serde(default, deserialize_with = "null_default")]
    priority: u32,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u32>,
}

#[derive(Deserialize, Default)]
struct RawRuntime {
    #[serde(rename = "ipRanges", default, deserialize_with = "null_default")]
    ip_ranges: Vec<Vec<RawRange>>,
    #[serde(default, deserialize_with = "null_default")]
    ips: Vec<String>,
}

#[derive(Deserialize, Default)]
struct RawArgs {
    #[serde(default)]
    cni: Option<RawCniArgs>,
}

#[derive(Deserialize, Default)]
struct RawCniArgs {
    #[serde(default, deserialize_with = "null_default")]
    ips: Vec<String>,
}

fn invalid(msg: impl Into<String>, field: impl Into<String>) -> HostLocalError {
    HostLocalError::Config {
        msg: msg.into(),
        field: field.into(),
    }
}

/// Parses `ip` or `ip/prefix` (the prefix is ignored), as the reference's `ip.IP` does.
pub fn parse_requested(s: &str) -> Result<IpAddr, String> {
    let parsed = match s.split_once('/') {
        Some(_) => s.parse::<IpNet>().map(|n| n.addr()).ok(),
        None => s.parse::<IpAddr>().ok(),
    };
    parsed
        .map(|ip| ip.to_canonical())
        .ok_or_else(|| format!("invalid IP address {s}"))
}

/// An optional IP field: absent, `null` or `""` mean "not set", as Go's `net.IP` decodes them.
fn opt_ip(v: &Option<String>, field: &str) -> Result<Option<IpAddr>, HostLocalError> {
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<IpAddr>()
            .map(|ip| Some(ip.to_canonical()))
            .map_err(|_| invalid(format!("invalid IP address: {s}"), field)),
    }
}

/// The `CNI_ARGS` keys host-local reads (`IP`), with the reference's value check.
pub fn parse_cni_args(raw: &str) -> Result<Option<IpAddr>, HostLocalError> {
    let args = CniArgs::parse(raw, &["IP"], |_, v| {
        if v.is_empty() {
            Ok(())
        } else {
            parse_requested(v).map(|_| ())
        }
    })
    .map_err(HostLocalError::Protocol)?;
    match args.get("IP") {
        None | Some("") => Ok(None),
        Some(v) => parse_requested(v).map(Some).map_err(|e| {
            HostLocalError::Protocol(cni::CniError::new(
                cni::Code::InvalidEnv,
                format!("CNI_ARGS: {e}"),
            ))
        }),
    }
}

/// One range before canonicalization, with the config path it came from.
struct Pending<'a> {
    raw: &'a RawRange,
    path: String,
}

impl IpamConfig {
    /// Loads the configuration of `req`. `with_args` parses `CNI_ARGS` (ADD, DEL, CHECK);
    /// GC and STATUS ignore it.
    pub fn load(req: &Request, with_args: bool) -> Result<IpamConfig, HostLocalError> {
        let raw: RawNet = req
            .conf
            .decode(KNOWN_KEYS)
            .map_err(HostLocalError::Protocol)?;
        let env_args = if with_args { req.env.args.as_str() } else { "" };
        let version = Version::parse(&req.conf.cni_version).unwrap_or(Version::V0_1_0);
        Self::from_raw(raw, &req.conf.name, env_args, version)
    }

    fn from_raw(
        raw: RawNet,
        name: &str,
        env_args: &str,
        version: Version,
    ) -> Result<IpamConfig, HostLocalError> {
        let Some(ipam) = raw.ipam else {
            return Err(invalid("IPAM config missing 'ipam' key", "ipam"));
        };
        let runtime = raw.runtime_config.unwrap_or_default();

        // Requested IPs: CNI_ARGS, then args.cni.ips, then runtimeConfig.ips.
        let mut requested: Vec<IpAddr> = Vec::new();
        let mut push = |ip: IpAddr| {
            if !requested.contains(&ip) {
                requested.push(ip);
            }
        };
        if let Some(ip) = parse_cni_args(env_args)? {
            push(ip);
        }
        let arg_ips = raw
            .args
            .and_then(|a| a.cni)
            .map(|c| c.ips)
            .unwrap_or_default();
        for (i, s) in arg_ips.iter().enumerate() {
            push(parse_requested(s).map_err(|e| invalid(e, format!("args.cni.ips[{i}]")))?);
        }
        for (i, s) in runtime.ips.iter().enumerate() {
            push(parse_requested(s).map_err(|e| invalid(e, format!("runtimeConfig.ips[{i}]")))?);
        }

        // Range sets: runtimeConfig.ipRanges, then the legacy single range, then ranges.
        let legacy = RawRange {
            subnet: ipam.subnet.clone(),
            range_start: ipam.range_start.clone(),
            range_end: ipam.range_end.clone(),
            gateway: ipam.gateway.clone(),
        };
        let mut pending: Vec<(String, Vec<Pending>)> = Vec::new();
        for (i, set) in runtime.ip_ranges.iter().enumerate() {
            let base = format!("runtimeConfig.ipRanges[{i}]");
            pending.push((base.clone(), pending_set(set, &base)));
        }
        if ipam.subnet.as_deref().is_some_and(|s| !s.is_empty()) {
            pending.push((
                "ipam".to_string(),
                vec![Pending {
                    raw: &legacy,
                    path: "ipam".to_string(),
                }],
            ));
        }
        for (i, set) in ipam.ranges.iter().enumerate() {
            let base = format!("ipam.ranges[{i}]");
            pending.push((base.clone(), pending_set(set, &base)));
        }
        if pending.is_empty() {
            return Err(invalid("no IP ranges specified", "ipam.ranges"));
        }

        let mut range_sets = Vec::with_capacity(pending.len());
        let (mut v4, mut v6) = (0usize, 0usize);
        for (i, (base, set)) in pending.iter().enumerate() {
            let rs = canonical_set(set, base)
                .map_err(|(msg, field)| invalid(format!("invalid range set {i}: {msg}"), field))?;
            if rs.is_ipv4() {
                v4 += 1;
            } else {
                v6 += 1;
            }
            range_sets.push(rs);
        }
        if (v4 > 1 || v6 > 1) && version < Version::V0_3_0 {
            return Err(invalid(
                format!(
                    "CNI version {} does not support more than 1 address per family",
                    version.as_str()
                ),
                "cniVersion",
            ));
        }
        for i in 0..range_sets.len() {
            for j in i + 1..range_sets.len() {
                if range_sets[i].overlaps(&range_sets[j]) {
                    return Err(invalid(
                        format!("range set {i} overlaps with {j}"),
                        format!("{} and {}", pending[i].0, pending[j].0),
                    ));
                }
            }
        }

        let mut routes = Vec::with_capacity(ipam.routes.len());
        for (i, r) in ipam.routes.iter().enumerate() {
            let Some(r) = r else { continue };
            let field = format!("ipam.routes[{i}]");
            let dst = r.dst.parse::<IpNet>().map_err(|_| {
                invalid(
                    format!("invalid CIDR address: {}", r.dst),
                    field.clone() + ".dst",
                )
            })?;
            routes.push(Route {
                dst,
                gw: opt_ip(&r.gw, &(field + ".gw"))?,
                mtu: r.mtu,
                advmss: r.advmss,
                priority: r.priority,
                table: r.table,
                scope: r.scope,
            });
        }

        Ok(IpamConfig {
            name: name.to_string(),
            data_dir: if ipam.data_dir.is_empty() {
                PathBuf::from(DEFAULT_DATA_DIR)
            } else {
                PathBuf::from(&ipam.data_dir)
            },
            resolv_conf: (!ipam.resolv_conf.is_empty()).then(|| PathBuf::from(&ipam.resolv_conf)),
            routes,
            range_sets,
            requested,
        })
    }
}

fn pending_set<'a>(set: &'a [RawRange], base: &str) -> Vec<Pending<'a>> {
    set.iter()
        .enumerate()
        .map(|(j, raw)| Pending {
            raw,
            path: format!("{base}[{j}]"),
        })
        .collect()
}

/// `RangeSet.Canonicalize`: non-empty, each range canonical, one family, no overlap inside.
/// Errors are `(reference message, field path)`.
fn canonical_set(set: &[Pending], base: &str) -> Result<RangeSet, (String, String)> {
    if set.is_empty() {
        return Err(("empty range set".into(), base.to_string()));
    }
    let mut out: Vec<Range> = Vec::with_capacity(set.len());
    for p in set {
        let r = canonical_range(p.raw, &p.path)?;
        if let Some(first) = out.first()
            && !same_family(first.start, r.start)
        {
            return Err(("mixed address families".into(), base.to_string()));
        }
        out.push(r);
    }
    for i in 0..out.len() {
        for j in i + 1..out.len() {
            if out[i].overlaps(&out[j]) {
                return Err((
                    format!("subnets {} and {} overlap", out[i], out[j]),
                    format!("{} and {}", set[i].path, set[j].path),
                ));
            }
        }
    }
    Ok(RangeSet(out))
}

/// `Range.Canonicalize`: checks in the reference's order and fills in the defaults
/// (gateway and start = network + 1; end = last address, minus the broadcast for IPv4).
fn canonical_range(raw: &RawRange, path: &str) -> Result<Range, (String, String)> {
    let f = |k: &str| {
        if path == "ipam" {
            format!("ipam.{k}")
        } else {
            format!("{path}.{k}")
        }
    };
    let subnet_text = raw.subnet.as_deref().unwrap_or("");
    if subnet_text.is_empty() {
        return Err(("missing subnet".into(), f("subnet")));
    }
    let subnet: IpNet = subnet_text
        .parse()
        .map_err(|_| (format!("invalid CIDR address: {subnet_text}"), f("subnet")))?;
    let max = subnet.max_prefix_len();
    if subnet.prefix_len() > max.saturating_sub(2) {
        return Err((
            format!(
                "Network {} too small to allocate from",
                subnet_string(&subnet)
            ),
            f("subnet"),
        ));
    }
    if let IpNet::V6(n) = subnet
        && n.addr().to_ipv4_mapped().is_some()
    {
        return Err(("IPNet IP and Mask version mismatch".into(), f("subnet")));
    }
    if subnet.addr() != subnet.network() {
        return Err((
            format!(
                "Network has host bits set. For a subnet mask of length {} the network address is {}",
                subnet.prefix_len(),
                ip_string(subnet.network())
            ),
            f("subnet"),
        ));
    }
    let first = next_ip(subnet.network());
    let gateway = match opt_ip_pair(&raw.gateway, &f("gateway"))? {
        Some(gw) if !same_family(gw, first) => {
            return Err((
                format!(
                    "gateway {} is not of the family of network {}",
                    ip_string(gw),
                    subnet_string(&subnet)
                ),
                f("gateway"),
            ));
        }
        Some(gw) => gw,
        None => first,
    };
    let cfg_start = opt_ip_pair(&raw.range_start, &f("rangeStart"))?;
    let cfg_end = opt_ip_pair(&raw.range_end, &f("rangeEnd"))?;
    let inside = |ip: IpAddr, lo: Option<IpAddr>, hi: Option<IpAddr>| {
        same_family(ip, first)
            && subnet.contains(&ip)
            && lo.is_none_or(|lo| to_u128(ip) >= to_u128(lo))
            && hi.is_none_or(|hi| to_u128(ip) <= to_u128(hi))
    };
    let start = match cfg_start {
        Some(s) => {
            if !inside(s, Some(s), cfg_end) {
                return Err((
                    format!(
                        "RangeStart {} not in network {}",
                        ip_string(s),
                        subnet_string(&subnet)
                    ),
                    f("rangeStart"),
                ));
            }
            s
        }
        None => first,
    };
    let end = match cfg_end {
        Some(e) => {
            if !inside(e, Some(start), Some(e)) {
                return Err((
                    format!(
                        "RangeEnd {} not in network {}",
                        ip_string(e),
                        subnet_string(&subnet)
                    ),
                    f("rangeEnd"),
                ));
            }
            e
        }
        None => {
            let last = subnet.broadcast();
            match last {
                IpAddr::V4(a) => IpAddr::V4((u32::from(a) - 1).into()),
                v6 => v6,
            }
        }
    };
    Ok(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

fn opt_ip_pair(v: &Option<String>, field: &str) -> Result<Option<IpAddr>, (String, String)> {
    opt_ip(v, field).map_err(|e| match e {
        HostLocalError::Config { msg, field } => (msg, field),
        other => (other.to_string(), field.to_string()),
    })
}

/// Parses a resolv.conf as the reference does: trimmed lines, `#`/`;` comments, `nameserver`
/// appends, `domain` sets, `search` and `options` append all their words.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            continue;
        }
        let rest = fields[1..].iter().map(|s| s.to_string());
        match fields[0] {
            "nameserver" => dns.nameservers.push(fields[1].to_string()),
            "domain" => dns.domain = fields[1].to_string(),
            "search" => dns.search.extend(rest),
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    dns
}

/// The most of `resolvConf` that is read (glibc reads far less).
pub const MAX_RESOLV_CONF: u64 = 1024 * 1024;

/// Reads and parses `resolvConf`. A missing file, or one that is not a regular file, is a
/// configuration error naming the field; other read failures are failures of the system.
pub fn load_resolv_conf(path: &std::path::Path) -> Result<Dns, HostLocalError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let field = "ipam.resolvConf";
    let system = |e: std::io::Error| {
        HostLocalError::System(format!("reading resolvConf {}: {e}", path.display()))
    };
    // Opened without blocking (a FIFO), and only read if it is a regular file: a device
    // (/dev/zero), a FIFO or a directory would hang, exhaust memory or fail obscurely.
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(invalid(
                format!("resolvConf {}: {e}", path.display()),
                field,
            ));
        }
        Err(e) => return Err(system(e)),
    };
    if !f.metadata().map_err(system)?.is_file() {
        return Err(invalid(
            format!("resolvConf {}: not a regular file", path.display()),
            field,
        ));
    }
    let mut bytes = Vec::new();
    f.take(MAX_RESOLV_CONF)
        .read_to_end(&mut bytes)
        .map_err(system)?;
    Ok(parse_resolv_conf(&String::from_utf8_lossy(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn load_v(v: Value, args: &str, version: Version) -> Result<IpamConfig, HostLocalError> {
        let conf = cni::config::NetConf::parse(v.to_string().as_bytes()).unwrap();
        let raw: RawNet = conf.decode(KNOWN_KEYS).map_err(HostLocalError::Protocol)?;
        IpamConfig::from_raw(raw, &conf.name, args, version)
    }

    fn load(ipam: Value) -> Result<IpamConfig, HostLocalError> {
        load_v(json!({"name": "net", "ipam": ipam}), "", Version::V1_1_0)
    }

    fn err(ipam: Value) -> (String, String) {
        match load(ipam).unwrap_err() {
            HostLocalError::Config { msg, field } => (msg, field),
            other => panic!("not a config error: {other:?}"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_v4_and_v6() {
        let c = load(json!({"type": "host-local", "ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00:1::/64"}]]})).unwrap();
        let r = &c.range_sets[0].0[0];
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.1.2.1"), ip("10.1.2.254"), ip("10.1.2.1"))
        );
        let r6 = &c.range_sets[1].0[0];
        assert_eq!(r6.start, ip("fd00:1::1"));
        assert_eq!(r6.end, ip("fd00:1::ffff:ffff:ffff:ffff"));
        assert_eq!(r6.gateway, ip("fd00:1::1"));
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.resolv_conf, None);
        assert!(c.requested.is_empty());
    }

    #[test]
    fn explicit_fields_case_insensitive_keys() {
        let c = load(json!({"Ranges": [[{"Subnet": "10.1.2.0/24", "RANGESTART": "10.1.2.10", "rangeend": "10.1.2.20", "Gateway": "10.1.2.254"}]], "DataDir": "/tmp/x", "ResolvConf": "/etc/r"})).unwrap();
        let r = &c.range_sets[0].0[0];
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.1.2.10"), ip("10.1.2.20"), ip("10.1.2.254"))
        );
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.resolv_conf, Some(PathBuf::from("/etc/r")));
    }

    #[test]
    fn empty_ip_strings_mean_default() {
        let c = load(
            json!({"ranges": [[{"subnet": "10.1.2.0/24", "gateway": "", "rangeStart": null}]]}),
        )
        .unwrap();
        assert_eq!(c.range_sets[0].0[0].gateway, ip("10.1.2.1"));
        assert_eq!(c.range_sets[0].0[0].start, ip("10.1.2.1"));
    }

    #[test]
    fn legacy_prepended_and_ip_ranges_prepended() {
        let v = json!({
            "name": "net",
            "runtimeConfig": {"ipRanges": [[{"subnet": "10.9.0.0/24"}]]},
            "ipam": {"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.5", "ranges": [[{"subnet": "10.2.0.0/24"}]]}
        });
        let c = load_v(v, "", Version::V1_0_0).unwrap();
        let subnets: Vec<String> = c
            .range_sets
            .iter()
            .map(|s| s.0[0].subnet.to_string())
            .collect();
        assert_eq!(subnets, ["10.9.0.0/24", "10.1.0.0/24", "10.2.0.0/24"]);
        assert_eq!(c.range_sets[1].0[0].start, ip("10.1.0.5"));
        // Legacy fields without a subnet are ignored, as in the reference.
        let c = load(json!({"rangeStart": "10.1.0.5", "ranges": [[{"subnet": "10.2.0.0/24"}]]}))
            .unwrap();
        assert_eq!(c.range_sets.len(), 1);
    }

    #[test]
    fn requested_ips_accumulate_in_order() {
        let v = json!({
            "name": "net",
            "args": {"cni": {"ips": ["10.1.0.7/24", "10.1.0.9"]}},
            "runtimeConfig": {"ips": ["fd00::5/64", "10.1.0.9"]},
            "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]}
        });
        let c = load_v(
            v,
            "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.0.3/8",
            Version::V1_1_0,
        )
        .unwrap();
        assert_eq!(
            c.requested,
            vec![
                ip("10.1.0.3"),
                ip("10.1.0.7"),
                ip("10.1.0.9"),
                ip("fd00::5")
            ]
        );
    }

    #[test]
    fn requested_ip_errors() {
        let v = json!({"name": "n", "args": {"cni": {"ips": ["nope"]}}, "ipam": {"subnet": "10.1.0.0/24"}});
        match load_v(v, "", Version::V1_1_0).unwrap_err() {
            HostLocalError::Config { msg, field } => {
                assert_eq!(msg, "invalid IP address nope");
                assert_eq!(field, "args.cni.ips[0]");
            }
            e => panic!("{e:?}"),
        }
        let v = json!({"name": "n", "ipam": {"subnet": "10.1.0.0/24"}});
        match load_v(v.clone(), "IP=abc", Version::V1_1_0).unwrap_err() {
            HostLocalError::Protocol(e) => {
                assert_eq!(e.code, 4);
                assert_eq!(
                    e.msg,
                    r#"CNI_ARGS: error parsing value of pair "IP=abc": invalid IP address abc"#
                );
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            load_v(v.clone(), "FOO=1", Version::V1_1_0),
            Err(HostLocalError::Protocol(_))
        ));
        // lowercase ip is an unknown key: ignored with IgnoreUnknown.
        assert!(
            load_v(v, "IgnoreUnknown=1;ip=10.1.0.5", Version::V1_1_0)
                .unwrap()
                .requested
                .is_empty()
        );
    }

    #[test]
    fn validation_messages() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                json!({"type": "host-local"}),
                "no IP ranges specified",
                "ipam.ranges",
            ),
            (
                json!({"ranges": [[]]}),
                "invalid range set 0: empty range set",
                "ipam.ranges[0]",
            ),
            (
                json!({"ranges": [[{}]]}),
                "invalid range set 0: missing subnet",
                "ipam.ranges[0][0].subnet",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/33"}]]}),
                "invalid range set 0: invalid CIDR address: 10.0.0.0/33",
                "ipam.ranges[0][0].subnet",
            ),
            (
                json!({"ranges": [[{"subnet": "10.1.0.0/31"}]]}),
                "invalid range set 0: Network 10.1.0.0/31 too small to allocate from",
                "ipam.ranges[0][0].subnet",
            ),
            (
                json!({"ranges": [[{"subnet": "fd00::/127"}]]}),
                "invalid range set 0: Network fd00::/127 too small to allocate from",
                "ipam.ranges[0][0].subnet",
            ),
            (
                json!({"ranges": [[{"subnet": "10.1.0.5/24"}]]}),
                "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.1.0.0",
                "ipam.ranges[0][0].subnet",
            ),
            (
                json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.1"}]]}),
                "invalid range set 0: RangeStart 10.2.0.1 not in network 10.1.0.0/24",
                "ipam.ranges[0][0].rangeStart",
            ),
            (
                json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.200", "rangeEnd": "10.1.0.100"}]]}),
                "invalid range set 0: RangeStart 10.1.0.200 not in network 10.1.0.0/24",
                "ipam.ranges[0][0].rangeStart",
            ),
            (
                json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeEnd": "10.1.1.1"}]]}),
                "invalid range set 0: RangeEnd 10.1.1.1 not in network 10.1.0.0/24",
                "ipam.ranges[0][0].rangeEnd",
            ),
            (
                json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeEnd": "fd00::1"}]]}),
                "invalid range set 0: RangeEnd fd00::1 not in network 10.1.0.0/24",
                "ipam.ranges[0][0].rangeEnd",
            ),
            (
                json!({"ranges": [[{"subnet": "10.1.0.0/24", "gateway": "x"}]]}),
                "invalid range set 0: invalid IP address: x",
                "ipam.ranges[0][0].gateway",
            ),
            (
                json!({"ranges": [[{"subnet": "10.1.0.0/24", "gateway": "fd00::1"}]]}),
                "invalid range set 0: gateway fd00::1 is not of the family of network 10.1.0.0/24",
                "ipam.ranges[0][0].gateway",
            ),
            (
                json!({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}]]}),
                "invalid range set 0: mixed address families",
                "ipam.ranges[0]",
            ),
            (
                json!({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.1.0.0/25"}]]}),
                "invalid range set 0: subnets 10.1.0.1-10.1.0.254 and 10.1.0.1-10.1.0.126 overlap",
                "ipam.ranges[0][0] and ipam.ranges[0][1]",
            ),
            (
                json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.0/16"}]]}),
                "range set 0 overlaps with 1",
                "ipam.ranges[0] and ipam.ranges[1]",
            ),
            (
                json!({"subnet": "10.1.0.0/24", "ranges": [[{"subnet": "10.1.0.0/24"}]]}),
                "range set 0 overlaps with 1",
                "ipam and ipam.ranges[0]",
            ),
            (
                json!({"subnet": "10.1.0.0/31"}),
                "invalid range set 0: Network 10.1.0.0/31 too small to allocate from",
                "ipam.subnet",
            ),
            (
                json!({"subnet": "10.1.0.0/24", "routes": [{"dst": "nope"}]}),
                "invalid CIDR address: nope",
                "ipam.routes[0].dst",
            ),
        ];
        for (ipam, msg, field) in cases {
            let (m, f) = err(ipam.clone());
            assert_eq!(m, msg, "{ipam}");
            assert_eq!(f, field, "{ipam}");
        }
        let e = load_v(json!({"name": "n"}), "", Version::V1_0_0).unwrap_err();
        assert_eq!(e.to_string(), "IPAM config missing 'ipam' key");
        let e = load_v(json!({"name": "n", "ipam": null}), "", Version::V1_0_0).unwrap_err();
        assert_eq!(e.to_string(), "IPAM config missing 'ipam' key");
    }

    #[test]
    fn wrong_json_types_are_code_7_naming_the_field() {
        let e = load(json!({"ranges": "x"})).unwrap_err();
        let c = cni::CniError::from(e);
        assert_eq!(c.code, 7);
        assert!(c.msg.contains("ipam.ranges"), "{}", c.msg);
        let c = cni::CniError::from(
            load(json!({"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0", "mtu": -1}]}))
                .unwrap_err(),
        );
        assert_eq!(c.code, 7);
        assert!(c.msg.contains("ipam.routes[0].mtu"), "{}", c.msg);
    }

    #[test]
    fn old_versions_allow_one_address_per_family() {
        let two_v4 = json!({"name": "n", "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]}});
        for v in [Version::V0_1_0, Version::V0_2_0] {
            let e = load_v(two_v4.clone(), "", v).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "CNI version {} does not support more than 1 address per family",
                    v.as_str()
                )
            );
        }
        assert!(load_v(two_v4, "", Version::V0_3_0).is_ok());
        let dual = json!({"name": "n", "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]}});
        assert!(load_v(dual, "", Version::V0_2_0).is_ok());
    }

    #[test]
    fn routes_with_all_fields() {
        let c = load(json!({"subnet": "10.1.0.0/24", "routes": [
            {"dst": "0.0.0.0/0"},
            {"dst": "10.9.0.1/16", "gw": "10.1.0.1", "mtu": 1400, "advmss": 1300, "priority": 5, "table": 100, "scope": 253},
            null
        ]})).unwrap();
        assert_eq!(c.routes.len(), 2);
        let r = &c.routes[1];
        assert_eq!(r.dst.to_string(), "10.9.0.1/16");
        assert_eq!(r.gw, Some(ip("10.1.0.1")));
        assert_eq!(
            (r.mtu, r.advmss, r.priority, r.table, r.scope),
            (1400, 1300, 5, Some(100), Some(253))
        );
    }

    #[test]
    fn resolv_conf_parsing() {
        let d = parse_resolv_conf(
            "# comment\n; other\nnameserver 1.1.1.1\n  nameserver   8.8.8.8  \ndomain a.example\ndomain b.example\nsearch x.example y.example\nsearch z\noptions ndots:5 edns0\nbogus line here\nnameserver\n",
        );
        assert_eq!(d.nameservers, ["1.1.1.1", "8.8.8.8"]);
        assert_eq!(d.domain, "b.example");
        assert_eq!(d.search, ["x.example", "y.example", "z"]);
        assert_eq!(d.options, ["ndots:5", "edns0"]);
    }

    #[test]
    fn resolv_conf_must_be_a_regular_file() {
        for path in ["/dev/zero", "/dev/null", "/"] {
            match load_resolv_conf(std::path::Path::new(path)) {
                Err(HostLocalError::Config { field, msg }) => {
                    assert_eq!(field, "ipam.resolvConf");
                    assert!(msg.contains("not a regular file"), "{msg}");
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        assert!(matches!(
            load_resolv_conf(std::path::Path::new("/nonexistent/resolv.conf")),
            Err(HostLocalError::Config { .. })
        ));
    }
}
