//! CNI results: one internal model (the 1.1.0 schema) parsed from and printed as every
//! supported version, with the reference's conversion rules (`cni-contract.md` §6).

use crate::error::CniError;
use crate::json::{canonicalize_keys, from_value, to_go_pretty};
use crate::version::{Family, Version};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;

/// An interface in a result. Empty strings and zero mean "absent".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// 1.1.0 only.
    pub mtu: u32,
    /// The netns path, only for interfaces inside the container.
    pub sandbox: String,
    /// 1.1.0 only.
    pub socket_path: String,
    /// 1.1.0 only.
    pub pci_id: String,
}

/// An address in a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with its prefix length and host bits, e.g. `10.88.0.2/16`.
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into the result's `interfaces`.
    pub interface: Option<usize>,
}

/// A route in a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub mtu: u32,
    pub advmss: u32,
    pub priority: u32,
    pub table: Option<u32>,
    pub scope: Option<u32>,
}

impl Route {
    /// A route to `dst` with nothing else set.
    pub fn to(dst: IpNet) -> Route {
        Route {
            dst,
            gw: None,
            mtu: 0,
            advmss: 0,
            priority: 0,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings in a result or config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dns {
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub domain: String,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub nameservers: Vec<String>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub options: Vec<String>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub search: Vec<String>,
}

impl Dns {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A CNI result in the newest schema; printed in any version with [`CniResult::to_json`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// Every key of every result schema, for case-insensitive matching.
pub const KNOWN_KEYS: &[&str] = &[
    "cniVersion",
    "interfaces",
    "ips",
    "routes",
    "dns",
    "name",
    "mac",
    "mtu",
    "sandbox",
    "socketPath",
    "pciID",
    "version",
    "interface",
    "address",
    "gateway",
    "dst",
    "gw",
    "advmss",
    "priority",
    "table",
    "scope",
    "nameservers",
    "domain",
    "search",
    "options",
    "ip4",
    "ip6",
    "ip",
];

/// `null` decodes as the type's default, as Go does for slices and strings.
pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

// ---- wire types: input (any version, permissive) ----

#[derive(Deserialize)]
struct InResult {
    #[serde(rename = "cniVersion", default, deserialize_with = "null_default")]
    cni_version: String,
    #[serde(default, deserialize_with = "null_default")]
    interfaces: Vec<InInterface>,
    #[serde(default, deserialize_with = "null_default")]
    ips: Vec<InIp>,
    #[serde(default, deserialize_with = "null_default")]
    routes: Vec<InRoute>,
    #[serde(default, deserialize_with = "null_default")]
    dns: Dns,
    #[serde(default)]
    ip4: Option<In020Ip>,
    #[serde(default)]
    ip6: Option<In020Ip>,
}

#[derive(Deserialize)]
struct InInterface {
    #[serde(default, deserialize_with = "null_default")]
    name: String,
    #[serde(default, deserialize_with = "null_default")]
    mac: String,
    #[serde(default, deserialize_with = "null_default")]
    mtu: u32,
    #[serde(default, deserialize_with = "null_default")]
    sandbox: String,
    #[serde(rename = "socketPath", default, deserialize_with = "null_default")]
    socket_path: String,
    #[serde(rename = "pciID", default, deserialize_with = "null_default")]
    pci_id: String,
}

#[derive(Deserialize)]
struct InIp {
    address: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct InRoute {
    dst: IpNet,
    #[serde(default)]
    gw: Option<IpAddr>,
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

#[derive(Deserialize)]
struct In020Ip {
    ip: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default, deserialize_with = "null_default")]
    routes: Vec<InRoute>,
}

impl From<InRoute> for Route {
    fn from(r: InRoute) -> Route {
        Route {
            dst: r.dst,
            gw: r.gw,
            mtu: r.mtu,
            advmss: r.advmss,
            priority: r.priority,
            table: r.table,
            scope: r.scope,
        }
    }
}

// ---- wire types: output 1.x (keys sorted) ----

#[derive(Serialize)]
struct V1Result<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    #[serde(skip_serializing_if = "Dns::is_empty")]
    dns: &'a Dns,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<V1Interface<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<V1Ip>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<V1Route>,
}

#[derive(Serialize)]
struct V1Interface<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    mac: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    mtu: u32,
    name: &'a str,
    #[serde(rename = "pciID", skip_serializing_if = "str::is_empty")]
    pci_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    sandbox: &'a str,
    #[serde(rename = "socketPath", skip_serializing_if = "str::is_empty")]
    socket_path: &'a str,
}

#[derive(Serialize)]
struct V1Ip {
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
}

#[derive(Serialize)]
struct V1Route {
    #[serde(skip_serializing_if = "is_zero")]
    advmss: u32,
    dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    mtu: u32,
    #[serde(skip_serializing_if = "is_zero")]
    priority: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<u32>,
}

// ---- wire types: output 0.3.x/0.4.0 (Go struct order) ----

#[derive(Serialize)]
struct V04Result<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<V04Interface<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<V04Ip>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<V04Route>,
    dns: GoDns<'a>,
}

#[derive(Serialize)]
struct V04Interface<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    mac: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    sandbox: &'a str,
}

#[derive(Serialize)]
struct V04Ip {
    version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
}

#[derive(Serialize)]
struct V04Route {
    dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    mtu: u32,
    #[serde(skip_serializing_if = "is_zero")]
    advmss: u32,
    #[serde(skip_serializing_if = "is_zero")]
    priority: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<u32>,
}

/// DNS in Go struct order, as 0.x results print it (always present, `{}` when empty).
#[derive(Serialize)]
struct GoDns<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    nameservers: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    domain: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    search: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    options: &'a [String],
}

// ---- wire types: output 0.1.0/0.2.0 ----

#[derive(Serialize)]
struct V02Result<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip4: Option<V02Ip>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip6: Option<V02Ip>,
    dns: GoDns<'a>,
}

#[derive(Serialize)]
struct V02Ip {
    ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<V02Route>,
}

#[derive(Serialize)]
struct V02Route {
    dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<String>,
}

/// Go's `net.IP.String()`: IPv4-mapped IPv6 addresses print as IPv4.
pub fn ip_string(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

/// CIDR text with host bits kept, with Go's `net.IPNet.String()` formatting: an IPv4-mapped
/// IPv6 address prints as IPv4 with the last 32 bits of its mask (`::ffff:10.0.0.1/104` is
/// `10.0.0.1/8`), so that what is printed always parses back.
pub fn net_string(n: &IpNet) -> String {
    let prefix = match n.addr() {
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => n.prefix_len().saturating_sub(96),
        _ => n.prefix_len(),
    };
    format!("{}/{prefix}", ip_string(n.addr()))
}

fn go_dns(d: &Dns) -> GoDns<'_> {
    GoDns {
        nameservers: &d.nameservers,
        domain: &d.domain,
        search: &d.search,
        options: &d.options,
    }
}

impl CniResult {
    /// Parses a result of any supported version. `fallback_version` is used when the document
    /// carries no `cniVersion` (libcni uses the config's version for a `prevResult`).
    pub fn parse(value: &Value, fallback_version: &str) -> Result<CniResult, CniError> {
        let mut v = value.clone();
        canonicalize_keys(&mut v, KNOWN_KEYS);
        if !v.is_object() {
            return Err(CniError::internal("a CNI result must be a JSON object"));
        }
        let input: InResult = from_value(&v)
            .map_err(|e| CniError::internal(format!("could not parse result: {e}")))?;
        let version_str = if input.cni_version.is_empty() {
            fallback_version.to_string()
        } else {
            input.cni_version.clone()
        };
        let version = Version::parse(&version_str).ok_or_else(|| {
            CniError::internal(format!("unsupported CNI result version {version_str:?}"))
        })?;
        let mut out = CniResult {
            dns: input.dns,
            ..CniResult::default()
        };
        if version.family() == Family::V02 {
            let mut routes = Vec::new();
            for ip in [input.ip4, input.ip6].into_iter().flatten() {
                out.ips.push(IpConfig {
                    address: ip.ip,
                    gateway: ip.gateway,
                    interface: None,
                });
                routes.extend(ip.routes.into_iter().map(Route::from));
            }
            out.routes = routes;
        } else {
            out.interfaces = input
                .interfaces
                .into_iter()
                .map(|i| Interface {
                    name: i.name,
                    mac: i.mac,
                    mtu: i.mtu,
                    sandbox: i.sandbox,
                    socket_path: i.socket_path,
                    pci_id: i.pci_id,
                })
                .collect();
            out.ips = input
                .ips
                .into_iter()
                .map(|i| IpConfig {
                    address: i.address,
                    gateway: i.gateway,
                    interface: i.interface,
                })
                .collect();
            out.routes = input.routes.into_iter().map(Route::from).collect();
        }
        Ok(out)
    }

    /// Prints the result in `version`, 4-space indented, as the reference does.
    pub fn to_json(&self, version: Version) -> Result<String, CniError> {
        match version.family() {
            Family::V1 => Ok(to_go_pretty(&self.v1(version))),
            Family::V04 => Ok(to_go_pretty(&self.v04(version))),
            Family::V02 => Ok(to_go_pretty(&self.v02(version)?)),
        }
    }

    /// The result in `version` as a JSON value (for `prevResult` chaining and tests).
    pub fn to_value(&self, version: Version) -> Result<Value, CniError> {
        let text = self.to_json(version)?;
        serde_json::from_str(&text).map_err(|e| CniError::internal(e.to_string()))
    }

    fn v1(&self, version: Version) -> V1Result<'_> {
        V1Result {
            cni_version: version.as_str(),
            dns: &self.dns,
            interfaces: self
                .interfaces
                .iter()
                .map(|i| V1Interface {
                    mac: &i.mac,
                    mtu: if version == Version::V1_1_0 { i.mtu } else { 0 },
                    name: &i.name,
                    pci_id: if version == Version::V1_1_0 {
                        &i.pci_id
                    } else {
                        ""
                    },
                    sandbox: &i.sandbox,
                    socket_path: if version == Version::V1_1_0 {
                        &i.socket_path
                    } else {
                        ""
                    },
                })
                .collect(),
            ips: self
                .ips
                .iter()
                .map(|i| V1Ip {
                    address: net_string(&i.address),
                    gateway: i.gateway.map(ip_string),
                    interface: i.interface,
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| V1Route {
                    advmss: r.advmss,
                    dst: net_string(&r.dst),
                    gw: r.gw.map(ip_string),
                    mtu: r.mtu,
                    priority: r.priority,
                    scope: r.scope,
                    table: r.table,
                })
                .collect(),
        }
    }

    fn v04(&self, version: Version) -> V04Result<'_> {
        V04Result {
            cni_version: version.as_str(),
            interfaces: self
                .interfaces
                .iter()
                .map(|i| V04Interface {
                    name: &i.name,
                    mac: &i.mac,
                    sandbox: &i.sandbox,
                })
                .collect(),
            ips: self
                .ips
                .iter()
                .map(|i| V04Ip {
                    version: if i.address.addr().to_canonical().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    },
                    interface: i.interface,
                    address: net_string(&i.address),
                    gateway: i.gateway.map(ip_string),
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| V04Route {
                    dst: net_string(&r.dst),
                    gw: r.gw.map(ip_string),
                    mtu: r.mtu,
                    advmss: r.advmss,
                    priority: r.priority,
                    table: r.table,
                    scope: r.scope,
                })
                .collect(),
            dns: go_dns(&self.dns),
        }
    }

    fn v02(&self, version: Version) -> Result<V02Result<'_>, CniError> {
        let is4 = |n: &IpNet| n.addr().to_canonical().is_ipv4();
        let pick = |want4: bool| {
            self.ips
                .iter()
                .find(|i| is4(&i.address) == want4)
                .map(|i| V02Ip {
                    ip: net_string(&i.address),
                    gateway: i.gateway.map(ip_string),
                    routes: Vec::new(),
                })
        };
        let mut ip4 = pick(true);
        let mut ip6 = pick(false);
        if ip4.is_none() && ip6.is_none() {
            return Err(CniError::internal("cannot convert: no valid IP addresses"));
        }
        for r in &self.routes {
            let target = if is4(&r.dst) { &mut ip4 } else { &mut ip6 };
            if let Some(ip) = target {
                ip.routes.push(V02Route {
                    dst: net_string(&r.dst),
                    gw: r.gw.map(ip_string),
                });
            }
        }
        Ok(V02Result {
            cni_version: version.as_str(),
            ip4,
            ip6,
            dns: go_dns(&self.dns),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: "3a:c9:25:56:a7:cc".into(),
                    ..Default::default()
                },
                Interface {
                    name: "veth5be66be8".into(),
                    mac: "ce:e6:b9:0d:46:f9".into(),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "6a:e5:c3:f6:f6:a1".into(),
                    sandbox: "/run/netns/ctr".into(),
                    mtu: 1400,
                    socket_path: "/s".into(),
                    pci_id: "0000:00:01.0".into(),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.88.0.2/16".parse().unwrap(),
                    gateway: Some("10.88.0.1".parse().unwrap()),
                    interface: Some(2),
                },
                IpConfig {
                    address: "2001:db8:1::2/64".parse().unwrap(),
                    gateway: Some("2001:db8:1::1".parse().unwrap()),
                    interface: Some(2),
                },
            ],
            routes: vec![
                Route {
                    mtu: 1300,
                    advmss: 1200,
                    priority: 5,
                    table: Some(100),
                    scope: Some(0),
                    ..Route::to("0.0.0.0/0".parse().unwrap())
                },
                Route {
                    gw: Some("2001:db8:1::9".parse().unwrap()),
                    ..Route::to("::/0".parse().unwrap())
                },
            ],
            dns: Dns {
                nameservers: vec!["10.0.0.53".into()],
                domain: "example.com".into(),
                search: vec!["a".into()],
                options: vec!["ndots:2".into()],
            },
        }
    }

    #[test]
    fn v100_matches_reference_bytes() {
        let mut r = full();
        r.dns = Dns::default();
        r.routes = vec![Route::to("0.0.0.0/0".parse().unwrap())];
        r.interfaces[2].mtu = 0;
        r.interfaces[2].socket_path.clear();
        r.interfaces[2].pci_id.clear();
        let expected = r#"{
    "cniVersion": "1.0.0",
    "interfaces": [
        {
            "mac": "3a:c9:25:56:a7:cc",
            "name": "cni0"
        },
        {
            "mac": "ce:e6:b9:0d:46:f9",
            "name": "veth5be66be8"
        },
        {
            "mac": "6a:e5:c3:f6:f6:a1",
            "name": "eth0",
            "sandbox": "/run/netns/ctr"
        }
    ],
    "ips": [
        {
            "address": "10.88.0.2/16",
            "gateway": "10.88.0.1",
            "interface": 2
        },
        {
            "address": "2001:db8:1::2/64",
            "gateway": "2001:db8:1::1",
            "interface": 2
        }
    ],
    "routes": [
        {
            "dst": "0.0.0.0/0"
        }
    ]
}"#;
        assert_eq!(r.to_json(Version::V1_0_0).unwrap(), expected);
    }

    #[test]
    fn v040_matches_reference_bytes() {
        let r = CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:97:03:96:76:f7".into(),
                sandbox: "/run/netns/x".into(),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                address: "10.204.2.2/24".parse().unwrap(),
                gateway: Some("10.204.2.1".parse().unwrap()),
                interface: Some(0),
            }],
            routes: vec![Route::to("0.0.0.0/0".parse().unwrap())],
            dns: Dns::default(),
        };
        let expected = r#"{
    "cniVersion": "0.4.0",
    "interfaces": [
        {
            "name": "eth0",
            "mac": "02:97:03:96:76:f7",
            "sandbox": "/run/netns/x"
        }
    ],
    "ips": [
        {
            "version": "4",
            "interface": 0,
            "address": "10.204.2.2/24",
            "gateway": "10.204.2.1"
        }
    ],
    "routes": [
        {
            "dst": "0.0.0.0/0"
        }
    ],
    "dns": {}
}"#;
        assert_eq!(r.to_json(Version::V0_4_0).unwrap(), expected);
    }

    #[test]
    fn v020_matches_reference_bytes() {
        let r = CniResult {
            ips: vec![
                IpConfig {
                    address: "10.1.0.53/24".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    interface: None,
                },
                IpConfig {
                    address: "2001:db8::2/64".parse().unwrap(),
                    gateway: Some("2001:db8::1".parse().unwrap()),
                    interface: None,
                },
            ],
            routes: vec![
                Route::to("0.0.0.0/0".parse().unwrap()),
                Route {
                    gw: Some("2001:db8::9".parse().unwrap()),
                    ..Route::to("::/0".parse().unwrap())
                },
            ],
            ..Default::default()
        };
        let expected = r#"{
    "cniVersion": "0.2.0",
    "ip4": {
        "ip": "10.1.0.53/24",
        "gateway": "10.1.0.1",
        "routes": [
            {
                "dst": "0.0.0.0/0"
            }
        ]
    },
    "ip6": {
        "ip": "2001:db8::2/64",
        "gateway": "2001:db8::1",
        "routes": [
            {
                "dst": "::/0",
                "gw": "2001:db8::9"
            }
        ]
    },
    "dns": {}
}"#;
        assert_eq!(r.to_json(Version::V0_2_0).unwrap(), expected);
    }

    /// Every (from, to) pair: print `full()` in `from`, parse it back, print in `to`, and
    /// check the reference's conversion rules on the outcome.
    #[test]
    fn every_version_pair_converts_with_reference_rules() {
        for from in Version::ALL {
            let text = full().to_json(from).unwrap();
            let parsed_from: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(parsed_from["cniVersion"], from.as_str());
            let r = CniResult::parse(&parsed_from, "0.0.0").unwrap();
            for to in Version::ALL {
                let out = r.to_value(to).unwrap();
                let ctx = format!("{from} -> {to}: {out}");
                assert_eq!(out["cniVersion"], to.as_str(), "{ctx}");
                match to.family() {
                    Family::V02 => {
                        assert_eq!(out["ip4"]["ip"], "10.88.0.2/16", "{ctx}");
                        assert_eq!(out["ip4"]["gateway"], "10.88.0.1", "{ctx}");
                        assert_eq!(out["ip6"]["ip"], "2001:db8:1::2/64", "{ctx}");
                        // Routes keep only dst/gw and go to their family.
                        assert_eq!(out["ip4"]["routes"], json!([{"dst": "0.0.0.0/0"}]), "{ctx}");
                        assert_eq!(
                            out["ip6"]["routes"],
                            json!([{"dst": "::/0", "gw": "2001:db8:1::9"}]),
                            "{ctx}"
                        );
                        assert!(out.get("interfaces").is_none(), "{ctx}");
                        assert_eq!(out["dns"]["nameservers"], json!(["10.0.0.53"]), "{ctx}");
                    }
                    fam => {
                        let ips = out["ips"].as_array().unwrap();
                        assert_eq!(ips.len(), 2, "{ctx}");
                        assert_eq!(ips[0]["address"], "10.88.0.2/16", "{ctx}");
                        if fam == Family::V04 {
                            assert_eq!(ips[0]["version"], "4", "{ctx}");
                            assert_eq!(ips[1]["version"], "6", "{ctx}");
                        } else {
                            assert!(ips[0].get("version").is_none(), "{ctx}");
                        }
                        let routes = out["routes"].as_array().unwrap();
                        assert_eq!(routes.len(), 2, "{ctx}");
                        if from.family() == Family::V02 {
                            // Going up from 0.x: no interfaces, no interface index.
                            assert!(out.get("interfaces").is_none(), "{ctx}");
                            assert!(ips[0].get("interface").is_none(), "{ctx}");
                            assert!(routes[0].get("mtu").is_none(), "{ctx}");
                        } else {
                            let ifs = out["interfaces"].as_array().unwrap();
                            assert_eq!(ifs.len(), 3, "{ctx}");
                            assert_eq!(ifs[2]["sandbox"], "/run/netns/ctr", "{ctx}");
                            assert!(ifs[0].get("sandbox").is_none(), "{ctx}");
                            assert_eq!(ips[0]["interface"], 2, "{ctx}");
                            // Route extras survive every 0.3+ version (shared types.Route).
                            assert_eq!(routes[0]["mtu"], 1300, "{ctx}");
                            assert_eq!(routes[0]["table"], 100, "{ctx}");
                            assert_eq!(routes[0]["scope"], 0, "{ctx}");
                            // Interface 1.1.0 fields only in 1.1.0, and only if they came from 1.1.0.
                            let keeps = from == Version::V1_1_0 && to == Version::V1_1_0;
                            assert_eq!(ifs[2].get("mtu").is_some(), keeps, "{ctx}");
                            assert_eq!(ifs[2].get("pciID").is_some(), keeps, "{ctx}");
                        }
                        if fam == Family::V04 {
                            assert_eq!(out["dns"]["domain"], "example.com", "{ctx}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn down_to_020_without_ips_fails() {
        let r = CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        for v in [Version::V0_1_0, Version::V0_2_0] {
            assert_eq!(
                r.to_json(v).unwrap_err().msg,
                "cannot convert: no valid IP addresses"
            );
        }
        // Other versions are fine without IPs, and 1.x omits empty dns.
        let v = r.to_value(Version::V1_1_0).unwrap();
        assert!(v.get("dns").is_none());
        let v = r.to_value(Version::V0_3_1).unwrap();
        assert_eq!(v["dns"], json!({}));
    }

    #[test]
    fn parse_tolerates_case_nulls_and_unknown_keys() {
        let v = json!({
            "CNIVersion": "0.4.0",
            "Interfaces": null,
            "IPs": [{"Version": "4", "Address": "10.1.0.5/16", "Gateway": "10.1.0.1", "Interface": 0, "extra": 1}],
            "routes": [{"DST": "0.0.0.0/0"}],
            "dns": {},
            "whatever": true
        });
        let r = CniResult::parse(&v, "1.0.0").unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.1.0.5/16");
        assert_eq!(r.ips[0].interface, Some(0));
        assert_eq!(r.routes.len(), 1);
    }

    #[test]
    fn parse_uses_fallback_version_and_rejects_unknown() {
        let v = json!({"ip4": {"ip": "10.0.0.2/8"}});
        let r = CniResult::parse(&v, "0.2.0").unwrap();
        assert_eq!(r.ips.len(), 1);
        let e = CniResult::parse(&json!({"cniVersion": "7.0.0"}), "1.0.0").unwrap_err();
        assert_eq!(e.msg, "unsupported CNI result version \"7.0.0\"");
        assert!(CniResult::parse(&json!({"ips": [{"address": "nope"}]}), "1.0.0").is_err());
    }

    #[test]
    fn ipv4_mapped_prints_as_ipv4() {
        let ip: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(ip_string(ip), "10.1.2.3");
        // With a prefix: the last 32 bits of the mask, as Go prints it (found by fuzzing:
        // "10.1.2.3/104" did not parse back).
        for (net, want) in [
            ("::ffff:10.1.2.3/104", "10.1.2.3/8"),
            ("::ffff:10.1.2.3/128", "10.1.2.3/32"),
            ("::ffff:10.1.2.3/64", "10.1.2.3/0"),
            ("10.1.2.3/24", "10.1.2.3/24"),
            ("fd00::1/64", "fd00::1/64"),
        ] {
            let n: IpNet = net.parse().unwrap();
            assert_eq!(net_string(&n), want);
            assert!(want.parse::<IpNet>().is_ok());
        }
    }
}
