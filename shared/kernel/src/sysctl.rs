//! Sysctls of the calling thread's network namespace (`/proc/sys/net/...` resolves against the
//! namespace of the thread that opens it). Use [`crate::NetNs::run`] to write a container's.

use std::io;

/// Normalizes a sysctl name to a `/proc/sys` relative path the way the reference does: dots
/// and slashes are swapped only when a dot comes before the first slash, so that
/// `net/ipv4/conf/eth0.100/forwarding` survives.
pub fn normalize(name: &str) -> String {
    let name = name.trim_start_matches('/');
    let first_dot = name.find('.');
    let first_slash = name.find('/');
    match (first_dot, first_slash) {
        (Some(d), Some(s)) if d < s => swap(name),
        (Some(_), None) => swap(name),
        _ => name.to_string(),
    }
}

fn swap(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect()
}

/// Reads a sysctl, trimmed.
pub fn read(name: &str) -> io::Result<String> {
    let v = std::fs::read_to_string(format!("/proc/sys/{}", normalize(name)))?;
    Ok(v.trim().to_string())
}

/// Writes a sysctl.
pub fn write(name: &str, value: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/{}", normalize(name)), value)
}

/// Writes a sysctl only if it does not already hold `value` (saves a write and keeps
/// read-only /proc setups working when nothing needs changing).
pub fn ensure(name: &str, value: &str) -> io::Result<()> {
    match read(name) {
        Ok(cur) if cur == value => Ok(()),
        _ => write(name, value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize("net.ipv4.ip_forward"), "net/ipv4/ip_forward");
        assert_eq!(normalize("net/ipv4/ip_forward"), "net/ipv4/ip_forward");
        assert_eq!(
            normalize("net/ipv4/conf/eth0.100/forwarding"),
            "net/ipv4/conf/eth0.100/forwarding"
        );
        assert_eq!(
            normalize("net.ipv4.conf.eth0/100.forwarding"),
            "net/ipv4/conf/eth0.100/forwarding"
        );
        assert_eq!(
            normalize("/net/ipv6/conf/eth0/accept_dad"),
            "net/ipv6/conf/eth0/accept_dad"
        );
    }

    #[test]
    fn reads_a_real_value() {
        assert!(read("net/ipv4/ip_forward").is_ok());
    }
}
