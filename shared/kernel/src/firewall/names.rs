//! The reference's chain names and comments (`pkg/utils`), byte for byte, so that rules
//! written by the Go plugins are found and removed by ours and the other way round.

use sha2::{Digest, Sha512};

fn sha512_hex(s: &str) -> String {
    Sha512::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `(prefix + hex(sha512(s)))[..n]` (`MustFormatHashWithPrefix`).
pub fn hash_with_prefix(n: usize, prefix: &str, s: &str) -> String {
    let mut out = format!("{prefix}{}", sha512_hex(s));
    out.truncate(n.min(out.len()));
    out
}

/// `CNI-<hash(net + id)>`: bridge's masquerade chain (`FormatChainName`).
pub fn chain_name(net: &str, container_id: &str) -> String {
    chain_name_with_prefix(net, container_id, "")
}

/// True if `chain` has the form of a [`chain_name`] (`CNI-` and 24 lowercase hex digits):
/// bridge's masquerade chains, not portmap's (`CNI-DN-`...) nor its shared ones.
pub fn is_chain_name(chain: &str) -> bool {
    chain.len() == 28
        && chain.strip_prefix("CNI-").is_some_and(|h| {
            h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// `CNI-<prefix><hash(net + id)>`, 28 characters: portmap uses `DN-` and legacy `SN-`.
pub fn chain_name_with_prefix(net: &str, container_id: &str, prefix: &str) -> String {
    hash_with_prefix(
        28,
        &format!("CNI-{prefix}"),
        &format!("{net}{container_id}"),
    )
}

/// `name: "<net>" id: "<id>"` (`FormatComment`).
pub fn comment(net: &str, container_id: &str) -> String {
    format!("name: \"{net}\" id: \"{container_id}\"")
}

/// portmap's entry-rule comment `dnat name: "<net>" id: "<id>"`, cut to 255 bytes.
pub fn dnat_comment(net: &str, container_id: &str) -> String {
    let c = format!("dnat {}", comment(net, container_id));
    if c.len() > 255 {
        format!("{}...", &c[..253])
    } else {
        c
    }
}

/// `hex(sha512(s))[..16]`.
pub fn h16(s: &str) -> String {
    hash_with_prefix(16, "", s)
}

/// The nftables masquerade instance prefix `<h16(net)>-<h16(ifname:id)>`.
pub fn nft_masq_prefix(net: &str, ifname: &str, container_id: &str) -> String {
    format!("{}-{}", h16(net), h16(&format!("{ifname}:{container_id}")))
}

/// The nftables masquerade rule comment, cut to the 128-byte nft limit.
pub fn nft_masq_comment(net: &str, ifname: &str, container_id: &str) -> String {
    let strip = |s: &str| s.replace('"', "");
    let mut c = format!(
        "{}, net: {}, if: {}, id: {}",
        nft_masq_prefix(net, ifname, container_id),
        strip(net),
        strip(ifname),
        strip(container_id)
    );
    if c.len() > 128 {
        let mut cut = 128;
        while !c.is_char_boundary(cut) {
            cut -= 1;
        }
        c.truncate(cut);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: &str = "icee6giejonei6sohng6ahngee7laquohquee9shiGo7fohferakah3Feiyoolu2pei7ciPhoh7shaoX6vai3vuf0ahfaeng8yohb9ceu0daez5hashee8ooYai5wa3y";
    const CTRD: &str = "a1ac5bbb0bfcb9994990fc9cc6e5581629e6cac438d09f5bb24284f0f0eceb6c";

    #[test]
    fn chain_name_vectors() {
        assert_eq!(
            chain_name("mynet", "abc123"),
            "CNI-70a29d9dc18bc4d652ea5d59"
        );
        assert_eq!(
            chain_name("testnet", "abc123"),
            "CNI-ac401170a6a418c7c78d298f"
        );
        assert_eq!(
            chain_name("h4-cnitool", "cnitool-772a163eacf1da86894c"),
            "CNI-ba3c83fe80fc690beeb8e03e"
        );
        assert_eq!(
            chain_name("h4-cnitool", "cnitool-d5f4403a01a08301bbaa"),
            "CNI-cf2f54aebf6f51d7f32f0530"
        );
        assert_eq!(
            chain_name("h4-containerd", CTRD),
            "CNI-d6a9d9a070ae49b2bc448a2e"
        );
        assert_eq!(chain_name("test", L), "CNI-67e92b96e692a494b6b854db");
    }

    #[test]
    fn masquerade_chain_names_are_told_apart() {
        assert!(is_chain_name(&chain_name("mynet", "abc123")));
        assert!(is_chain_name(&chain_name("test", L)));
        for other in [
            chain_name_with_prefix("mynet", "abc123", "DN-"),
            chain_name_with_prefix("mynet", "abc123", "SN-"),
            "CNI-HOSTPORT-DNAT".to_string(),
            "CNI-HOSTPORT-MASQ".to_string(),
            "CNI-70A29D9DC18BC4D652EA5D59".to_string(),
            "CNI-70a29d9dc18bc4d652ea5d5".to_string(),
            "CNI-70a29d9dc18bc4d652ea5d590".to_string(),
            "KUBE-70a29d9dc18bc4d652ea5d".to_string(),
            "POSTROUTING".to_string(),
        ] {
            assert!(!is_chain_name(&other), "{other}");
        }
    }

    #[test]
    fn prefixed_vectors() {
        assert_eq!(
            chain_name_with_prefix("mynet", "abc123", "DN-"),
            "CNI-DN-70a29d9dc18bc4d652ea5"
        );
        assert_eq!(
            chain_name_with_prefix("mynet", "abc123", "SN-"),
            "CNI-SN-70a29d9dc18bc4d652ea5"
        );
        assert_eq!(
            chain_name_with_prefix("testnet", "abc123", "DN-"),
            "CNI-DN-ac401170a6a418c7c78d2"
        );
        assert_eq!(
            chain_name_with_prefix("h4-cnitool", "cnitool-772a163eacf1da86894c", "DN-"),
            "CNI-DN-ba3c83fe80fc690beeb8e"
        );
        assert_eq!(
            chain_name_with_prefix("testNetName", L, "DN-"),
            "CNI-DN-bfd599665540dd91d5d28"
        );
        assert_eq!(
            chain_name_with_prefix("test", L, "DN-"),
            "CNI-DN-67e92b96e692a494b6b85"
        );
        assert_eq!(
            chain_name_with_prefix("h4-containerd", CTRD, "DN-"),
            "CNI-DN-d6a9d9a070ae49b2bc448"
        );
        for n in [
            chain_name("a", "b"),
            chain_name_with_prefix("a", "b", "DN-"),
        ] {
            assert_eq!(n.len(), 28);
        }
    }

    #[test]
    fn comments() {
        assert_eq!(comment("mynet", "abc123"), r#"name: "mynet" id: "abc123""#);
        assert_eq!(
            dnat_comment("mynet", "abc123"),
            r#"dnat name: "mynet" id: "abc123""#
        );
        let long = dnat_comment("n", &"x".repeat(300));
        assert_eq!(long.len(), 256);
        assert!(long.ends_with("..."));
        assert_eq!(h16("mynet"), "d23676b4f2d9fe04");
    }

    #[test]
    fn nft_masq_vectors() {
        assert_eq!(
            nft_masq_comment("mynet", "eth0", "abc123"),
            "d23676b4f2d9fe04-ebce0e3dd4dafae3, net: mynet, if: eth0, id: abc123"
        );
        assert_eq!(
            nft_masq_comment("testnet", "eth0", "abc123"),
            "c5964c6794a1152e-ebce0e3dd4dafae3, net: testnet, if: eth0, id: abc123"
        );
        let c = nft_masq_comment("h4-containerd", "eth0", CTRD);
        assert_eq!(
            c,
            "9b2f411fa4a20f01-a54d5f13c998471c, net: h4-containerd, if: eth0, id: a1ac5bbb0bfcb9994990fc9cc6e5581629e6cac438d09f5bb24284f0f0e"
        );
        assert_eq!(c.len(), 128);
    }
}
