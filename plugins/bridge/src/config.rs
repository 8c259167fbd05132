//! The bridge configuration: every field of the reference v1.9.1, decoded case-insensitively,
//! validated before anything is touched, with the reference's defaults.

use crate::error::BridgeError;
use cni::Dns;
use cni::args::CniArgs;
use cni::skel::Request;
use cni_kernel::netlink::parse_mac;
use serde::Deserialize;

/// The reference's default bridge name.
pub const DEFAULT_BRIDGE: &str = "cni0";

/// Keys of the bridge configuration (matched case-insensitively).
pub const KNOWN_KEYS: &[&str] = &[
    "bridge",
    "isGateway",
    "isDefaultGateway",
    "forceAddress",
    "ipMasq",
    "ipMasqBackend",
    "mtu",
    "hairpinMode",
    "promiscMode",
    "vlan",
    "vlanTrunk",
    "preserveDefaultVlan",
    "macspoofchk",
    "enabledad",
    "disableContainerInterface",
    "portIsolation",
    "dns",
    "args",
    "cni",
    "runtimeConfig",
    "mac",
    "minID",
    "maxID",
    "id",
    "nameservers",
    "domain",
    "search",
    "options",
];

/// The masquerading backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `iptables`/`ip6tables`, table `nat`, chains `CNI-<hash>`.
    Iptables,
    /// `nft`, table `inet cni_plugins_masquerade`.
    Nftables,
}

impl Backend {
    /// The name as spelled in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }
}

#[derive(Deserialize, Default)]
struct TrunkEntry {
    #[serde(rename = "minID", default)]
    min_id: Option<i64>,
    #[serde(rename = "maxID", default)]
    max_id: Option<i64>,
    #[serde(default)]
    id: Option<i64>,
}

#[derive(Deserialize, Default)]
struct MacHolder {
    #[serde(default)]
    mac: Option<String>,
}

#[derive(Deserialize, Default)]
struct ArgsHolder {
    #[serde(default)]
    cni: Option<MacHolder>,
}

#[derive(Deserialize, Default)]
struct DnsConf {
    #[serde(default)]
    nameservers: Option<Vec<String>>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    search: Option<Vec<String>>,
    #[serde(default)]
    options: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    bridge: Option<String>,
    #[serde(rename = "isGateway", default)]
    is_gateway: Option<bool>,
    #[serde(rename = "isDefaultGateway", default)]
    is_default_gateway: Option<bool>,
    #[serde(rename = "forceAddress", default)]
    force_address: Option<bool>,
    #[serde(rename = "ipMasq", default)]
    ip_masq: Option<bool>,
    #[serde(rename = "ipMasqBackend", default)]
    ip_masq_backend: Option<String>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(rename = "hairpinMode", default)]
    hairpin_mode: Option<bool>,
    #[serde(rename = "promiscMode", default)]
    promisc_mode: Option<bool>,
    #[serde(default)]
    vlan: Option<i64>,
    #[serde(rename = "vlanTrunk", default)]
    vlan_trunk: Option<Vec<TrunkEntry>>,
    #[serde(rename = "preserveDefaultVlan", default)]
    preserve_default_vlan: Option<bool>,
    #[serde(default)]
    macspoofchk: Option<bool>,
    #[serde(default)]
    enabledad: Option<bool>,
    #[serde(rename = "disableContainerInterface", default)]
    disable_container_interface: Option<bool>,
    #[serde(rename = "portIsolation", default)]
    port_isolation: Option<bool>,
    #[serde(default)]
    dns: Option<DnsConf>,
    #[serde(default)]
    args: Option<ArgsHolder>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<MacHolder>,
}

/// The validated bridge configuration of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The network name (`name`).
    pub network: String,
    /// The bridge (CNM network) name.
    pub bridge: String,
    /// Put the gateway address(es) on the bridge (implied by `is_default_gateway`).
    pub is_gateway: bool,
    /// Add a default route via the gateway per family.
    pub is_default_gateway: bool,
    /// Replace a conflicting bridge address instead of failing.
    pub force_address: bool,
    /// Masquerade traffic leaving the subnet.
    pub ip_masq: bool,
    /// The explicitly configured masquerading backend (`None` = the reference's default).
    pub backend: Option<Backend>,
    /// An unknown `ipMasqBackend` value. Only ADD, CHECK and STATUS reject it (as the
    /// reference, whose DEL never reads the field): a DEL must not fail on it.
    pub backend_invalid: Option<String>,
    /// MTU of the veth pair (and of the bridge when created); 0 = kernel default.
    pub mtu: u32,
    /// Hairpin mode on the host veth.
    pub hairpin: bool,
    /// Promiscuous mode on the bridge.
    pub promisc: bool,
    /// Access VLAN (PVID, untagged); 0 = none.
    pub vlan: u16,
    /// Tagged trunk VLANs, sorted and deduplicated.
    pub trunk: Vec<u16>,
    /// Keep the default VLAN on the host veth.
    pub preserve_default_vlan: bool,
    /// nft anti-MAC-spoofing rules.
    pub macspoofchk: bool,
    /// Keep DAD on in the container (`accept_dad=1`, `enhanced_dad=1`).
    pub enable_dad: bool,
    /// L2 only; the container interface stays down.
    pub disable_container_interface: bool,
    /// `IFLA_BRPORT_ISOLATED` on the host veth.
    pub port_isolation: bool,
    /// DNS from the config, if any field is set (it replaces IPAM's).
    pub dns: Option<Dns>,
    /// The requested container MAC (`runtimeConfig.mac` > `args.cni.mac` > `CNI_ARGS MAC`).
    pub mac: Option<[u8; 6]>,
    /// `ipam.type` is set (L3 mode).
    pub layer3: bool,
}

impl Config {
    /// True when the host veth needs VLAN configuration (and the bridge VLAN filtering).
    pub fn uses_vlans(&self) -> bool {
        self.vlan != 0 || !self.trunk.is_empty()
    }

    /// The masquerading backend, or the configuration error of an unknown one.
    pub fn checked_backend(&self) -> Result<Option<Backend>, BridgeError> {
        match &self.backend_invalid {
            Some(other) => Err(BridgeError::Config(format!(
                "ipMasqBackend: unknown ipmasq backend {other:?}"
            ))),
            None => Ok(self.backend),
        }
    }

    /// Decodes and validates the request's configuration (and `CNI_ARGS`).
    pub fn from_request(req: &Request) -> Result<Config, BridgeError> {
        let raw: Raw = req.conf.decode(KNOWN_KEYS).map_err(|e| {
            BridgeError::Config(e.msg.replacen(
                "invalid network config",
                "failed to load netconf",
                1,
            ))
        })?;
        let args = CniArgs::parse(&req.env.args, &["MAC"], |_, v| {
            if v.is_empty() || parse_mac(v).is_some() {
                Ok(())
            } else {
                Err(format!("invalid MAC address {v:?}"))
            }
        })
        .map_err(BridgeError::Delegate)?;
        Config::validate(raw, &req.conf.name, !req.conf.ipam_type.is_empty(), &args)
    }

    fn validate(
        raw: Raw,
        network: &str,
        layer3: bool,
        args: &CniArgs,
    ) -> Result<Config, BridgeError> {
        let cfg_err = |m: String| BridgeError::Config(m);
        let vlan = raw.vlan.unwrap_or(0);
        if !(0..=4094).contains(&vlan) {
            return Err(cfg_err(format!(
                "vlan: invalid VLAN ID {vlan} (must be between 0 and 4094)"
            )));
        }
        let trunk = collect_trunk(raw.vlan_trunk.as_deref().unwrap_or_default())?;
        let mtu = raw.mtu.unwrap_or(0);
        let mtu = u32::try_from(mtu)
            .ok()
            .filter(|m| *m <= 65535)
            .ok_or_else(|| cfg_err(format!("mtu: invalid MTU {mtu} (must be 0 to 65535)")))?;
        let hairpin = raw.hairpin_mode.unwrap_or(false);
        let promisc = raw.promisc_mode.unwrap_or(false);
        if hairpin && promisc {
            return Err(cfg_err(
                "hairpinMode, promiscMode: cannot set hairpin mode and promiscuous mode at the same time"
                    .into(),
            ));
        }
        let disable_container_interface = raw.disable_container_interface.unwrap_or(false);
        if disable_container_interface && layer3 {
            return Err(cfg_err(
                "disableContainerInterface: cannot use IPAM when DisableContainerInterface flag is set"
                    .into(),
            ));
        }
        let ip_masq = raw.ip_masq.unwrap_or(false);
        let (backend, backend_invalid) = match raw.ip_masq_backend.as_deref() {
            None | Some("") => (None, None),
            Some("iptables") => (Some(Backend::Iptables), None),
            Some("nftables") => (Some(Backend::Nftables), None),
            Some(other) if ip_masq => (None, Some(other.to_string())),
            Some(_) => (None, None),
        };
        let bridge = match raw.bridge.as_deref() {
            None | Some("") => DEFAULT_BRIDGE.to_string(),
            Some(b) => b.to_string(),
        };
        // The kernel's rules for interface names (dev_valid_name), checked before anything
        // is created.
        if cni::env::validate_ifname(&bridge).is_err() || bridge.contains('\0') {
            return Err(cfg_err(format!(
                "bridge: invalid interface name {bridge:?} (at most 15 bytes, not \".\" or \"..\", no '/', ':' or whitespace)"
            )));
        }
        let mut mac_text: Option<(String, &str)> = None;
        if let Some(m) = args.get("MAC").filter(|m| !m.is_empty()) {
            mac_text = Some((m.to_string(), "CNI_ARGS MAC"));
        }
        if let Some(m) = raw
            .args
            .and_then(|a| a.cni)
            .and_then(|c| c.mac)
            .filter(|m| !m.is_empty())
        {
            mac_text = Some((m, "args.cni.mac"));
        }
        if let Some(m) = raw
            .runtime_config
            .and_then(|r| r.mac)
            .filter(|m| !m.is_empty())
        {
            mac_text = Some((m, "runtimeConfig.mac"));
        }
        let mac = match mac_text {
            None => None,
            Some((text, from)) => Some(
                parse_mac(&text)
                    .ok_or_else(|| cfg_err(format!("{from}: invalid MAC address {text:?}")))?,
            ),
        };
        let dns = raw.dns.and_then(|d| {
            let set = d.nameservers.is_some()
                || d.search.is_some()
                || d.options.is_some()
                || d.domain.as_deref().is_some_and(|s| !s.is_empty());
            set.then(|| Dns {
                domain: d.domain.unwrap_or_default(),
                nameservers: d.nameservers.unwrap_or_default(),
                options: d.options.unwrap_or_default(),
                search: d.search.unwrap_or_default(),
            })
        });
        let is_default_gateway = raw.is_default_gateway.unwrap_or(false);
        Ok(Config {
            network: network.to_string(),
            bridge,
            is_gateway: raw.is_gateway.unwrap_or(false) || is_default_gateway,
            is_default_gateway,
            force_address: raw.force_address.unwrap_or(false),
            ip_masq,
            backend,
            backend_invalid,
            mtu,
            hairpin,
            promisc,
            vlan: vlan as u16,
            trunk,
            preserve_default_vlan: raw.preserve_default_vlan.unwrap_or(false),
            macspoofchk: raw.macspoofchk.unwrap_or(false),
            enable_dad: raw.enabledad.unwrap_or(false),
            disable_container_interface,
            port_isolation: raw.port_isolation.unwrap_or(false),
            dns,
            mac,
            layer3,
        })
    }
}

/// The trunk VLAN list, with the reference's checks and messages.
fn collect_trunk(entries: &[TrunkEntry]) -> Result<Vec<u16>, BridgeError> {
    let err = |m: &str| BridgeError::Config(format!("vlanTrunk: {m}"));
    let valid = |v: i64| (1..=4094).contains(&v);
    let mut out: Vec<u16> = Vec::new();
    for e in entries {
        match (e.min_id, e.max_id) {
            (Some(min), Some(max)) => {
                if !valid(min) {
                    return Err(err("incorrect trunk minID parameter"));
                }
                if !valid(max) {
                    return Err(err("incorrect trunk maxID parameter"));
                }
                if max < min {
                    return Err(err("minID is greater than maxID in trunk parameter"));
                }
                out.extend((min..=max).map(|v| v as u16));
            }
            (None, Some(_)) => {
                return Err(err(
                    "minID and maxID should be configured simultaneously, minID is missing",
                ));
            }
            (Some(_), None) => {
                return Err(err(
                    "minID and maxID should be configured simultaneously, maxID is missing",
                ));
            }
            (None, None) => {}
        }
        if let Some(id) = e.id {
            if !valid(id) {
                return Err(err("incorrect trunk id parameter"));
            }
            out.push(id as u16);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::config::NetConf;

    fn conf(json: &str, args: &str) -> Result<Config, BridgeError> {
        let nc = NetConf::parse(json.as_bytes()).unwrap();
        let raw: Raw = nc
            .decode(KNOWN_KEYS)
            .map_err(|e| BridgeError::Config(e.msg))?;
        let a = CniArgs::parse(args, &["MAC"], |_, _| Ok(())).unwrap();
        Config::validate(raw, &nc.name, !nc.ipam_type.is_empty(), &a)
    }

    fn msg(r: Result<Config, BridgeError>) -> String {
        match r {
            Err(BridgeError::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = conf(r#"{"name":"n","type":"bridge"}"#, "").unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && !c.ip_masq && !c.layer3 && !c.preserve_default_vlan);
        assert_eq!((c.mtu, c.vlan), (0, 0));
        assert!(c.trunk.is_empty() && c.mac.is_none() && c.dns.is_none());
        let c = conf(
            r#"{"name":"n","isDefaultGateway":true,"ipam":{"type":"host-local"}}"#,
            "",
        )
        .unwrap();
        assert!(c.is_gateway && c.is_default_gateway && c.layer3);
    }

    #[test]
    fn keys_are_case_insensitive() {
        let c = conf(
            r#"{"name":"n","Bridge":"br9","IsGateway":true,"MTU":1400,"HAIRPINMODE":true,"VlanTrunk":[{"MinId":3,"MAXID":4},{"ID":9}]}"#,
            "",
        )
        .unwrap();
        assert_eq!(c.bridge, "br9");
        assert!(c.is_gateway && c.hairpin);
        assert_eq!(c.mtu, 1400);
        assert_eq!(c.trunk, vec![3, 4, 9]);
    }

    #[test]
    fn mac_precedence() {
        let base = r#"{"name":"n"}"#;
        let c = conf(base, "IgnoreUnknown=1;MAC=02:00:00:00:00:01").unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 1]));
        let c = conf(
            r#"{"name":"n","args":{"cni":{"mac":"02:00:00:00:00:02"}}}"#,
            "MAC=02:00:00:00:00:01",
        )
        .unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 2]));
        let c = conf(
            r#"{"name":"n","args":{"cni":{"mac":"02:00:00:00:00:02"}},"runtimeConfig":{"mac":"02:00:00:00:00:03"}}"#,
            "MAC=02:00:00:00:00:01",
        )
        .unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 3]));
        let m = msg(conf(r#"{"name":"n","runtimeConfig":{"mac":"zz"}}"#, ""));
        assert!(m.starts_with("runtimeConfig.mac: invalid MAC"), "{m}");
    }

    #[test]
    fn validation_messages() {
        let m = msg(conf(r#"{"name":"n","vlan":4095}"#, ""));
        assert_eq!(m, "vlan: invalid VLAN ID 4095 (must be between 0 and 4094)");
        assert!(msg(conf(r#"{"name":"n","vlan":-1}"#, "")).contains("invalid VLAN ID -1"));
        let cases = [
            (
                r#"[{"minID":0,"maxID":3}]"#,
                "incorrect trunk minID parameter",
            ),
            (
                r#"[{"minID":1,"maxID":4095}]"#,
                "incorrect trunk maxID parameter",
            ),
            (
                r#"[{"minID":5,"maxID":3}]"#,
                "minID is greater than maxID in trunk parameter",
            ),
            (
                r#"[{"maxID":3}]"#,
                "minID and maxID should be configured simultaneously, minID is missing",
            ),
            (
                r#"[{"minID":3}]"#,
                "minID and maxID should be configured simultaneously, maxID is missing",
            ),
            (r#"[{"id":0}]"#, "incorrect trunk id parameter"),
        ];
        for (trunk, want) in cases {
            let m = msg(conf(&format!(r#"{{"name":"n","vlanTrunk":{trunk}}}"#), ""));
            assert_eq!(m, format!("vlanTrunk: {want}"));
        }
        assert!(
            msg(conf(
                r#"{"name":"n","hairpinMode":true,"promiscMode":true}"#,
                ""
            ))
            .contains("cannot set hairpin mode and promiscuous mode at the same time")
        );
        assert!(
            msg(conf(
                r#"{"name":"n","disableContainerInterface":true,"ipam":{"type":"host-local"}}"#,
                ""
            ))
            .contains("cannot use IPAM when DisableContainerInterface flag is set")
        );
        let c = conf(r#"{"name":"n","ipMasq":true,"ipMasqBackend":"pf"}"#, "").unwrap();
        match c.checked_backend() {
            Err(BridgeError::Config(m)) => {
                assert_eq!(m, r#"ipMasqBackend: unknown ipmasq backend "pf""#)
            }
            other => panic!("{other:?}"),
        }
        // Not masquerading: the backend is never used, as in the reference.
        assert!(conf(r#"{"name":"n","ipMasqBackend":"pf"}"#, "").is_ok());
        assert!(msg(conf(r#"{"name":"n","mtu":-5}"#, "")).starts_with("mtu:"));
        // portIsolation is a JSON bool; a string is a decode error naming the field.
        let m = msg(conf(r#"{"name":"n","portIsolation":"true"}"#, ""));
        assert!(m.contains("portIsolation"), "{m}");
        assert!(
            msg(conf(
                r#"{"name":"n","bridge":"a-very-long-bridge-name"}"#,
                ""
            ))
            .starts_with("bridge:")
        );
        // The kernel's interface-name rules, before anything is created.
        for bad in ["..", ".", "br/0", "br 0", "br\\t0", "br\\n0", "br:0"] {
            let m = msg(conf(&format!(r#"{{"name":"n","bridge":"{bad}"}}"#), ""));
            assert!(
                m.starts_with("bridge: invalid interface name"),
                "{bad}: {m}"
            );
        }
    }

    #[test]
    fn vlan_with_trunk_is_the_native_vlan() {
        let c = conf(
            r#"{"name":"n","vlan":7,"vlanTrunk":[{"id":9},{"id":9}]}"#,
            "",
        )
        .unwrap();
        assert_eq!((c.vlan, c.trunk.clone()), (7, vec![9]));
        assert!(c.uses_vlans());
    }

    #[test]
    fn dns_replaces_only_when_set() {
        let c = conf(r#"{"name":"n","dns":{}}"#, "").unwrap();
        assert!(c.dns.is_none());
        let c = conf(r#"{"name":"n","dns":{"nameservers":["10.0.0.53"]}}"#, "").unwrap();
        assert_eq!(c.dns.unwrap().nameservers, vec!["10.0.0.53".to_string()]);
    }
}
