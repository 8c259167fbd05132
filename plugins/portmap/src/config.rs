//! portmap's configuration: the reference's fields and defaults (`plugins.md` §3.1), keys
//! matched case-insensitively (containerd sends `HostPort`), validated with messages that name
//! the field, plus the container addresses picked from `prevResult` as the reference does.

use crate::error::PortmapError;
use cni::CniResult;
use cni::config::NetConf;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

/// Keys of portmap's own configuration, for case-insensitive matching.
pub const KNOWN_KEYS: &[&str] = &[
    "backend",
    "snat",
    "masqAll",
    "markMasqBit",
    "externalSetMarkChain",
    "conditionsV4",
    "conditionsV6",
    "runtimeConfig",
    "portMappings",
    "hostPort",
    "containerPort",
    "protocol",
    "hostIP",
];

/// The default mark bit (Kubernetes uses 14/15, Calico 20–31).
pub const DEFAULT_MARK_BIT: u32 = 13;

/// The firewall backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Iptables,
    Nftables,
}

impl Backend {
    /// `iptables` / `nftables`, as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }
}

/// A transport protocol of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Sctp,
    Tcp,
    Udp,
}

impl Protocol {
    /// The lowercase name used by iptables and nft (`tcp`, `udp`, `sctp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// The IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// Parses a protocol name, case-insensitively.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// One validated port mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// The `hostIP` text as given (empty string = absent), and its parsed value.
    pub host_ip: Option<(String, IpAddr)>,
}

impl PortMapping {
    /// Whether this mapping applies to a container address of the given family
    /// (`hostIP` of the other family is skipped).
    pub fn applies_to(&self, v6: bool) -> bool {
        match &self.host_ip {
            None => true,
            Some((_, ip)) => is_v6(ip) == v6,
        }
    }

    /// The destination restriction (`-d` / `ip daddr`): none for absent, `0.0.0.0` or `::`.
    pub fn host_ip_match(&self) -> Option<&str> {
        match &self.host_ip {
            Some((text, ip)) if !ip.is_unspecified() => Some(text.as_str()),
            _ => None,
        }
    }
}

/// True for an IPv6 address that is not IPv4-mapped (Go's `To4() == nil`).
pub fn is_v6(ip: &IpAddr) -> bool {
    !ip.to_canonical().is_ipv4()
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The network name (`name`).
    pub network: String,
    /// The backend, explicit or detected.
    pub backend: Backend,
    /// True if `backend` was written in the config.
    pub backend_explicit: bool,
    pub snat: bool,
    pub masq_all: bool,
    pub mark_bit: u32,
    pub external_set_mark_chain: Option<String>,
    pub conditions_v4: Vec<String>,
    pub conditions_v6: Vec<String>,
    pub mappings: Vec<PortMapping>,
}

#[derive(Deserialize, Default)]
struct RawConf {
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    snat: Option<bool>,
    #[serde(rename = "masqAll", default)]
    masq_all: Option<bool>,
    #[serde(rename = "markMasqBit", default)]
    mark_masq_bit: Option<i64>,
    #[serde(rename = "externalSetMarkChain", default)]
    external_set_mark_chain: Option<String>,
    #[serde(rename = "conditionsV4", default)]
    conditions_v4: Option<Vec<String>>,
    #[serde(rename = "conditionsV6", default)]
    conditions_v6: Option<Vec<String>>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RawRuntime>,
}

#[derive(Deserialize, Default)]
struct RawRuntime {
    #[serde(rename = "portMappings", default)]
    port_mappings: Option<Vec<RawMapping>>,
}

#[derive(Deserialize, Default)]
struct RawMapping {
    #[serde(rename = "hostPort", default)]
    host_port: Option<i64>,
    #[serde(rename = "containerPort", default)]
    container_port: Option<i64>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(rename = "hostIP", default)]
    host_ip: Option<String>,
}

/// Which syntax a conditions list is written in: iptables tokens start with `-` or `!`.
fn conditions_backend(c: &[String]) -> Option<Backend> {
    let first = c.first()?;
    if first.is_empty() {
        return None;
    }
    if first.starts_with('-') || first.starts_with('!') {
        Some(Backend::Iptables)
    } else {
        Some(Backend::Nftables)
    }
}

/// Values that end up in a firewall transaction verbatim must not be able to start another
/// line or command there: no control characters anywhere; in nft conditions (inserted as nft
/// text) no `;` (command separator) or `#` (comment); the external chain is one iptables
/// chain name (≤ 28 bytes, no whitespace, not an option).
fn check_tokens(
    external: &Option<String>,
    v4: &[String],
    v6: &[String],
    backend: Backend,
) -> Result<(), PortmapError> {
    let bad = |field: &str, v: &str, why: &str| {
        Err(PortmapError::Config(format!(
            "{field}: invalid value {v:?}: {why}"
        )))
    };
    for (field, list) in [("conditionsV4", v4), ("conditionsV6", v6)] {
        for c in list {
            if c.chars().any(char::is_control) {
                return bad(field, c, "control characters are not allowed");
            }
            if backend == Backend::Nftables && c.contains([';', '#']) {
                return bad(
                    field,
                    c,
                    "';' and '#' are not allowed in nftables conditions",
                );
            }
        }
    }
    if let Some(chain) = external
        && (chain.len() > 28
            || chain.starts_with(['-', '!'])
            || chain
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '"'))
    {
        return bad(
            "externalSetMarkChain",
            chain,
            "an iptables chain name (at most 28 bytes, no whitespace or quotes)",
        );
    }
    Ok(())
}

fn port(index: usize, field: &str, v: Option<i64>) -> Result<u16, PortmapError> {
    let name = format!("runtimeConfig.portMappings[{index}].{field}");
    match v {
        None => Err(PortmapError::Config(format!("{name}: missing port number"))),
        Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Some(p) => Err(PortmapError::Config(format!(
            "{name}: {p} is not a valid port"
        ))),
    }
}

impl Config {
    /// Decodes and validates the configuration. `detect` chooses the backend when the config
    /// does not name one (see [`detect_backend`]); it is only called when needed.
    pub fn parse(conf: &NetConf, detect: impl FnOnce() -> Backend) -> Result<Config, PortmapError> {
        let raw: RawConf = conf
            .decode(KNOWN_KEYS)
            .map_err(|e| PortmapError::Config(e.msg))?;
        let external = raw.external_set_mark_chain.filter(|s| !s.is_empty());
        if raw.mark_masq_bit.is_some() && external.is_some() {
            return Err(PortmapError::Config(
                "Cannot specify externalSetMarkChain and markMasqBit".into(),
            ));
        }
        let mark_bit = match raw.mark_masq_bit {
            None => DEFAULT_MARK_BIT,
            Some(b) if (0..=31).contains(&b) => b as u32,
            Some(b) => {
                return Err(PortmapError::Config(format!(
                    "markMasqBit: {b}: MasqMarkBit must be between 0 and 31"
                )));
            }
        };
        let conditions_v4 = raw.conditions_v4.unwrap_or_default();
        let conditions_v6 = raw.conditions_v6.unwrap_or_default();
        let (backend, backend_explicit) = match raw.backend.as_deref() {
            None | Some("") => (detect(), false),
            Some("iptables") => (Backend::Iptables, true),
            Some("nftables") => (Backend::Nftables, true),
            Some(other) => {
                return Err(PortmapError::Config(format!(
                    "backend: unrecognized backend {other:?}"
                )));
            }
        };
        let mut wrong: Vec<&str> = Vec::new();
        if external.is_some() && backend == Backend::Nftables {
            wrong.push("externalSetMarkChain");
        }
        for (name, c) in [
            ("conditionsV4", &conditions_v4),
            ("conditionsV6", &conditions_v6),
        ] {
            if conditions_backend(c).is_some_and(|b| b != backend) {
                wrong.push(name);
            }
        }
        if !wrong.is_empty() {
            let other = match backend {
                Backend::Iptables => Backend::Nftables,
                Backend::Nftables => Backend::Iptables,
            };
            return Err(PortmapError::Config(format!(
                "{} backend was requested but configuration contains {}-specific options [{}]",
                backend.as_str(),
                other.as_str(),
                wrong.join(" ")
            )));
        }
        check_tokens(&external, &conditions_v4, &conditions_v6, backend)?;
        let raw_maps = raw
            .runtime_config
            .and_then(|r| r.port_mappings)
            .unwrap_or_default();
        let mut mappings = Vec::with_capacity(raw_maps.len());
        for (i, m) in raw_maps.into_iter().enumerate() {
            let container_port = port(i, "containerPort", m.container_port)?;
            let host_port = port(i, "hostPort", m.host_port)?;
            let protocol = match m.protocol.as_deref() {
                None | Some("") => Protocol::Tcp,
                Some(p) => Protocol::parse(p).ok_or_else(|| {
                    PortmapError::Config(format!(
                        "runtimeConfig.portMappings[{i}].protocol: unknown protocol {p:?} (expected tcp, udp or sctp)"
                    ))
                })?,
            };
            let host_ip = match m.host_ip.as_deref() {
                None | Some("") => None,
                Some(t) => {
                    let ip: IpAddr = t.parse().map_err(|_| {
                        PortmapError::Config(format!(
                            "runtimeConfig.portMappings[{i}].hostIP: {t:?} is not an IP address"
                        ))
                    })?;
                    Some((t.to_string(), ip))
                }
            };
            mappings.push(PortMapping {
                host_port,
                container_port,
                protocol,
                host_ip,
            });
        }
        Ok(Config {
            network: conf.name.clone(),
            backend,
            backend_explicit,
            snat: raw.snat.unwrap_or(true),
            masq_all: raw.masq_all.unwrap_or(false),
            mark_bit,
            external_set_mark_chain: external,
            conditions_v4,
            conditions_v6,
            mappings,
        })
    }

    /// The conditions of one family.
    pub fn conditions(&self, v6: bool) -> &[String] {
        if v6 {
            &self.conditions_v6
        } else {
            &self.conditions_v4
        }
    }

    /// The mark value text `0x2000/0x2000` for the configured bit.
    pub fn mark(&self) -> String {
        let m = 1u64 << self.mark_bit;
        format!("{m:#x}/{m:#x}")
    }

    /// The masquerade mark as a number (`1 << markMasqBit`).
    pub fn mark_value(&self) -> u32 {
        1u32 << self.mark_bit.min(31)
    }
}

/// The default backend as the reference chooses it: iptables, unless iptables is not there
/// and nft is. Decided from `PATH` alone (no process is started); an iptables that is
/// installed but unusable shows up as a firewall error instead.
pub fn detect_backend() -> Backend {
    use cni_kernel::firewall::{Family, iptables::Iptables, nft};
    if !Iptables::new(Family::V4).available() && nft::available() {
        Backend::Nftables
    } else {
        Backend::Iptables
    }
}

/// The container addresses portmap works on (`parseConfig`): the first IPv4 and the first
/// IPv6 of `prevResult` that are not known to belong to another interface, with prefix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerIps {
    pub v4: Option<IpNet>,
    pub v6: Option<IpNet>,
}

impl ContainerIps {
    /// Picks the addresses from a parsed `prevResult`.
    pub fn from_result(prev: &CniResult, ifname: &str) -> ContainerIps {
        let mut out = ContainerIps::default();
        for ip in &prev.ips {
            let v6 = is_v6(&ip.address.addr());
            if (v6 && out.v6.is_some()) || (!v6 && out.v4.is_some()) {
                continue;
            }
            if let Some(idx) = ip.interface
                && let Some(intf) = prev.interfaces.get(idx)
                && (intf.name != ifname || intf.sandbox.is_empty())
            {
                continue;
            }
            if v6 {
                out.v6 = Some(ip.address);
            } else {
                out.v4 = Some(ip.address);
            }
        }
        out
    }

    /// The addresses present, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.v4.iter().chain(self.v6.iter()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> Result<Config, PortmapError> {
        let nc = NetConf::parse(json.as_bytes()).unwrap();
        Config::parse(&nc, || Backend::Iptables)
    }

    fn err(json: &str) -> String {
        match conf(json) {
            Err(PortmapError::Config(m)) => m,
            other => panic!("expected config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = conf(r#"{"name":"n","type":"portmap"}"#).unwrap();
        assert_eq!(c.backend, Backend::Iptables);
        assert!(!c.backend_explicit);
        assert!(c.snat);
        assert!(!c.masq_all);
        assert_eq!(c.mark_bit, 13);
        assert_eq!(c.mark(), "0x2000/0x2000");
        assert!(c.mappings.is_empty());
    }

    #[test]
    fn mark_text() {
        let c = conf(r#"{"name":"n","markMasqBit":5}"#).unwrap();
        assert_eq!(c.mark(), "0x20/0x20");
        let c = conf(r#"{"name":"n","markMasqBit":0}"#).unwrap();
        assert_eq!(c.mark(), "0x1/0x1");
        let c = conf(r#"{"name":"n","markMasqBit":31}"#).unwrap();
        assert_eq!(c.mark(), "0x80000000/0x80000000");
    }

    #[test]
    fn capitalized_keys_and_mixed_entries() {
        let c = conf(
            r#"{"name":"n","RuntimeConfig":{"PortMappings":[
                {"hostPort":8080,"containerPort":80,"protocol":"tcp"},
                {"HostPort":8443,"ContainerPort":443,"Protocol":"TCP","HostIP":""},
                {"HOSTPORT":5353,"containerport":53,"protocol":"udp","hostip":"::"}]},
                "MasqAll": true, "SNAT": false}"#,
        )
        .unwrap();
        assert_eq!(c.mappings.len(), 3);
        assert_eq!(c.mappings[1].host_port, 8443);
        assert_eq!(c.mappings[1].protocol, Protocol::Tcp);
        assert_eq!(c.mappings[1].host_ip, None);
        assert_eq!(c.mappings[2].protocol, Protocol::Udp);
        assert!(c.mappings[2].applies_to(true));
        assert!(!c.mappings[2].applies_to(false));
        assert_eq!(c.mappings[2].host_ip_match(), None);
        assert!(c.masq_all);
        assert!(!c.snat);
    }

    #[test]
    fn invalid_values_name_the_field() {
        let base = |m: &str| {
            format!(
                r#"{{"name":"n","runtimeConfig":{{"portMappings":[{{"hostPort":1,"containerPort":1}},{m}]}}}}"#
            )
        };
        assert_eq!(
            err(&base(r#"{"hostPort":70000,"containerPort":80}"#)),
            "runtimeConfig.portMappings[1].hostPort: 70000 is not a valid port"
        );
        assert_eq!(
            err(&base(r#"{"hostPort":80,"containerPort":0}"#)),
            "runtimeConfig.portMappings[1].containerPort: 0 is not a valid port"
        );
        assert_eq!(
            err(&base(r#"{"hostPort":-1,"containerPort":80}"#)),
            "runtimeConfig.portMappings[1].hostPort: -1 is not a valid port"
        );
        assert_eq!(
            err(&base(r#"{"containerPort":80}"#)),
            "runtimeConfig.portMappings[1].hostPort: missing port number"
        );
        assert_eq!(
            err(&base(
                r#"{"hostPort":80,"containerPort":80,"protocol":"icmp"}"#
            )),
            "runtimeConfig.portMappings[1].protocol: unknown protocol \"icmp\" (expected tcp, udp or sctp)"
        );
        assert_eq!(
            err(&base(
                r#"{"hostPort":80,"containerPort":80,"hostIP":"nope"}"#
            )),
            "runtimeConfig.portMappings[1].hostIP: \"nope\" is not an IP address"
        );
        let e = err(&base(r#"{"hostPort":"80","containerPort":80}"#));
        assert!(e.contains("runtimeConfig.portMappings[1].hostPort"), "{e}");
        assert_eq!(
            err(r#"{"name":"n","markMasqBit":32}"#),
            "markMasqBit: 32: MasqMarkBit must be between 0 and 31"
        );
        assert_eq!(
            err(r#"{"name":"n","markMasqBit":3,"externalSetMarkChain":"X"}"#),
            "Cannot specify externalSetMarkChain and markMasqBit"
        );
        assert_eq!(
            err(r#"{"name":"n","backend":"pf"}"#),
            "backend: unrecognized backend \"pf\""
        );
    }

    #[test]
    fn conditions_must_match_the_backend() {
        assert_eq!(
            err(
                r#"{"name":"n","backend":"iptables","conditionsV4":["aaa","bbbb"],"conditionsV6":["ccc"]}"#
            ),
            "iptables backend was requested but configuration contains nftables-specific options [conditionsV4 conditionsV6]"
        );
        assert_eq!(
            err(
                r#"{"name":"n","backend":"nftables","externalSetMarkChain":"KUBE-MARK-MASQ","conditionsV4":["-a","b"],"conditionsV6":["-c","d"]}"#
            ),
            "nftables backend was requested but configuration contains iptables-specific options [externalSetMarkChain conditionsV4 conditionsV6]"
        );
        let c = conf(r#"{"name":"n","backend":"nftables","conditionsV4":["aaa","bbbb"]}"#).unwrap();
        assert_eq!(c.backend, Backend::Nftables);
        assert!(c.backend_explicit);
        // Conditions never select the backend: the detected default applies.
        assert!(
            err(r#"{"name":"n","conditionsV4":["iifname","x"]}"#).starts_with("iptables backend")
        );
        let c = conf(r#"{"name":"n","conditionsV4":["!","-s","10.0.0.0/8"]}"#).unwrap();
        assert_eq!(c.conditions(false).len(), 3);
    }

    #[test]
    fn container_ip_selection() {
        let prev = CniResult::parse(
            &serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "cni0", "mac": "00:11:22:33:44:55"},
                    {"name": "veth1", "mac": "00:11:22:33:44:66"},
                    {"name": "eth0", "mac": "00:11:22:33:44:77", "sandbox": "/run/netns/x"}
                ],
                "ips": [
                    {"address": "10.1.0.1/24", "interface": 0},
                    {"address": "10.2.0.2/24", "interface": 2},
                    {"address": "10.3.0.3/24", "interface": 2},
                    {"address": "2001:db8::9/64"},
                    {"address": "2001:db8:1::2/64", "interface": 2}
                ]
            }),
            "1.0.0",
        )
        .unwrap();
        let ips = ContainerIps::from_result(&prev, "eth0");
        assert_eq!(ips.v4, Some("10.2.0.2/24".parse().unwrap()));
        // An IP without an interface index is accepted.
        assert_eq!(ips.v6, Some("2001:db8::9/64".parse().unwrap()));
        let other = ContainerIps::from_result(&prev, "eth1");
        assert_eq!(other.v4, None);
        assert_eq!(other.iter().count(), 1);
    }
}
