//! `iptables`/`ip6tables`: an argv-exact runner, a parsed `iptables-save` listing, and
//! `iptables-restore --noflush` transactions, so that one ADD or DEL costs one listing and
//! one atomic commit per family instead of a process per rule.

use super::{Family, FirewallError, find_in_path};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

/// Seconds to wait for the xtables lock before giving up (the reference waits forever).
pub const LOCK_WAIT_SECS: &str = "10";

/// The iptables tools of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iptables {
    pub family: Family,
}

fn run_tool(bin: &str, args: &[&str], stdin: Option<&str>) -> Result<String, FirewallError> {
    let path = find_in_path(bin).ok_or_else(|| FirewallError::NotFound {
        bin: bin.to_string(),
    })?;
    let cmd_text = format!("{bin} {}", args.join(" "));
    let mut child = Command::new(path)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| FirewallError::Spawn {
            bin: bin.to_string(),
            source,
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| FirewallError::Spawn {
            bin: bin.to_string(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        if stderr.contains("xtables lock") {
            return Err(FirewallError::Locked { cmd: cmd_text });
        }
        return Err(FirewallError::Failed {
            cmd: match stdin {
                Some(input) => format!("{cmd_text} <<EOF\n{input}EOF"),
                None => cmd_text,
            },
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Iptables {
    /// The tools of `family`.
    pub fn new(family: Family) -> Iptables {
        Iptables { family }
    }

    /// `iptables` or `ip6tables`.
    pub fn bin(&self) -> &'static str {
        match self.family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn save_bin(&self) -> &'static str {
        match self.family {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    fn restore_bin(&self) -> &'static str {
        match self.family {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    /// The tools are installed (no process is started).
    pub fn available(&self) -> bool {
        find_in_path(self.bin()).is_some() && find_in_path(self.restore_bin()).is_some()
    }

    /// The tool works: it can list `filter INPUT` (what the reference calls "usable").
    pub fn usable(&self) -> bool {
        self.available() && self.run(&["-t", "filter", "-S", "INPUT", "1"]).is_ok()
    }

    /// Runs `iptables -w <secs> <args>` with `args` passed as-is.
    pub fn run(&self, args: &[&str]) -> Result<String, FirewallError> {
        let mut full = vec!["-w", LOCK_WAIT_SECS];
        full.extend_from_slice(args);
        run_tool(self.bin(), &full, None)
    }

    /// One `iptables-save -t <table>` listing, parsed.
    pub fn save(&self, table: &str) -> Result<Ruleset, FirewallError> {
        let text = run_tool(self.save_bin(), &["-t", table], None)?;
        Ok(Ruleset::parse(&text))
    }

    /// Applies a transaction with `iptables-restore -w <secs> --noflush` (atomic per table).
    /// An empty transaction starts no process.
    pub fn restore(&self, tx: &Restore) -> Result<(), FirewallError> {
        if tx.is_empty() {
            return Ok(());
        }
        run_tool(
            self.restore_bin(),
            &["-w", LOCK_WAIT_SECS, "--noflush"],
            Some(&tx.render()),
        )
        .map(|_| ())
    }
}

/// One rule line of an `iptables-save` listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    /// The rule's arguments after `-A <chain>`, unquoted.
    pub args: Vec<String>,
    /// The text after `-A <chain> `, exactly as listed (valid restore input).
    pub spec: String,
}

impl SavedRule {
    /// The value of `--comment`, if any.
    pub fn comment(&self) -> Option<&str> {
        self.value_of("--comment")
    }

    /// The jump target (`-j X`).
    pub fn target(&self) -> Option<&str> {
        self.value_of("-j")
    }

    /// The argument following `flag`.
    pub fn value_of(&self, flag: &str) -> Option<&str> {
        self.args
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.args.get(i + 1))
            .map(String::as_str)
    }
}

/// A parsed `iptables-save -t <table>` listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Every chain, built-in and user-defined.
    pub chains: BTreeSet<String>,
    /// Every rule in listing order.
    pub rules: Vec<SavedRule>,
}

impl Ruleset {
    /// Parses `iptables-save` output (one table).
    pub fn parse(text: &str) -> Ruleset {
        let mut rs = Ruleset::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(':') {
                if let Some(name) = rest.split_whitespace().next() {
                    rs.chains.insert(name.to_string());
                }
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
                rs.rules.push(SavedRule {
                    chain: chain.to_string(),
                    args: split_args(spec),
                    spec: spec.to_string(),
                });
            }
        }
        rs
    }

    /// True if the chain exists.
    pub fn has_chain(&self, chain: &str) -> bool {
        self.chains.contains(chain)
    }

    /// The rules of one chain.
    pub fn chain_rules<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a SavedRule> + 'a {
        self.rules.iter().filter(move |r| r.chain == chain)
    }
}

/// Splits a rule spec the way iptables-restore does: whitespace separates, `"` quotes, and a
/// backslash inside quotes escapes the next character.
pub fn split_args(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut escaped = false;
    let mut has_token = false;
    for c in spec.chars() {
        if in_quote {
            if escaped {
                cur.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                in_quote = true;
                has_token = true;
            }
            ' ' | '\t' | '\n' => {
                if has_token || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    has_token = false;
                }
            }
            c => cur.push(c),
        }
    }
    if has_token || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Quotes one argument for restore input.
pub fn quote_arg(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| !c.is_whitespace() && c != '"' && c != '\\' && c != '\'')
    {
        return a.to_string();
    }
    let mut s = String::with_capacity(a.len() + 2);
    s.push('"');
    for c in a.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// An `iptables-restore --noflush` transaction on one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restore {
    table: String,
    lines: Vec<String>,
}

impl Restore {
    /// An empty transaction on `table`.
    pub fn new(table: &str) -> Restore {
        Restore {
            table: table.to_string(),
            lines: Vec::new(),
        }
    }

    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    fn rule_line(op: &str, chain: &str, args: &[String]) -> String {
        let mut l = format!("{op} {chain}");
        for a in args {
            l.push(' ');
            l.push_str(&quote_arg(a));
        }
        l
    }

    /// `:CHAIN - [0:0]`: creates the chain, or **flushes** it if it exists. Use only for
    /// chains this transaction owns entirely (per-container chains), never shared ones.
    pub fn declare_chain(&mut self, chain: &str) -> &mut Restore {
        self.lines.push(format!(":{chain} - [0:0]"));
        self
    }

    /// `-N CHAIN` (fails the transaction if it exists).
    pub fn new_chain(&mut self, chain: &str) -> &mut Restore {
        self.lines.push(format!("-N {chain}"));
        self
    }

    /// `-A CHAIN args...`.
    pub fn append(&mut self, chain: &str, args: &[String]) -> &mut Restore {
        self.lines.push(Self::rule_line("-A", chain, args));
        self
    }

    /// `-I CHAIN 1 args...`.
    pub fn insert_first(&mut self, chain: &str, args: &[String]) -> &mut Restore {
        let mut l = format!("-I {chain} 1");
        for a in args {
            l.push(' ');
            l.push_str(&quote_arg(a));
        }
        self.lines.push(l);
        self
    }

    /// `-D CHAIN args...` (fails the transaction if the rule is absent).
    pub fn delete(&mut self, chain: &str, args: &[String]) -> &mut Restore {
        self.lines.push(Self::rule_line("-D", chain, args));
        self
    }

    /// Deletes a rule exactly as it was listed.
    pub fn delete_saved(&mut self, rule: &SavedRule) -> &mut Restore {
        self.lines.push(format!("-D {} {}", rule.chain, rule.spec));
        self
    }

    /// `-F CHAIN`.
    pub fn flush_chain(&mut self, chain: &str) -> &mut Restore {
        self.lines.push(format!("-F {chain}"));
        self
    }

    /// `-X CHAIN`.
    pub fn delete_chain(&mut self, chain: &str) -> &mut Restore {
        self.lines.push(format!("-X {chain}"));
        self
    }

    /// The restore input.
    pub fn render(&self) -> String {
        let mut s = format!("*{}\n", self.table);
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
        s
    }
}

/// Turns a list of `&str` into owned argv.
pub fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables) on Mon Nov 23 06:00:00 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-70a29d9dc18bc4d652ea5d59 - [0:0]
-A POSTROUTING -s 10.88.0.2/32 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j CNI-70a29d9dc18bc4d652ea5d59
-A CNI-70a29d9dc18bc4d652ea5d59 -d 10.88.0.0/16 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j ACCEPT
-A CNI-70a29d9dc18bc4d652ea5d59 ! -d 224.0.0.0/4 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j MASQUERADE
COMMIT
# Completed on Mon Nov 23 06:00:00 2026
"#;

    #[test]
    fn parses_save_output() {
        let rs = Ruleset::parse(SAVE);
        assert!(rs.has_chain("CNI-70a29d9dc18bc4d652ea5d59"));
        assert!(rs.has_chain("POSTROUTING"));
        assert_eq!(rs.rules.len(), 3);
        let r = &rs.rules[0];
        assert_eq!(r.chain, "POSTROUTING");
        assert_eq!(r.comment(), Some(r#"name: "mynet" id: "abc123""#));
        assert_eq!(r.target(), Some("CNI-70a29d9dc18bc4d652ea5d59"));
        assert_eq!(rs.chain_rules("CNI-70a29d9dc18bc4d652ea5d59").count(), 2);
        assert_eq!(rs.rules[2].args[0], "!");
    }

    #[test]
    fn quoting_roundtrips() {
        let args = argv(&[
            "-m",
            "comment",
            "--comment",
            r#"name: "n" id: "c1""#,
            "-j",
            "ACCEPT",
        ]);
        let mut tx = Restore::new("nat");
        tx.append("X", &args);
        let text = tx.render();
        assert_eq!(
            text,
            "*nat\n-A X -m comment --comment \"name: \\\"n\\\" id: \\\"c1\\\"\" -j ACCEPT\nCOMMIT\n"
        );
        let line = text.lines().nth(1).unwrap();
        assert_eq!(split_args(line.strip_prefix("-A X ").unwrap()), args);
        assert_eq!(quote_arg("plain"), "plain");
        assert_eq!(quote_arg(""), "\"\"");
    }

    #[test]
    fn restore_builder() {
        let rs = Ruleset::parse(SAVE);
        let mut tx = Restore::new("nat");
        assert!(tx.is_empty());
        tx.delete_saved(&rs.rules[0])
            .flush_chain("C")
            .delete_chain("C")
            .declare_chain("D")
            .insert_first("POSTROUTING", &argv(&["-j", "D"]));
        let text = tx.render();
        assert!(text.contains("-D POSTROUTING -s 10.88.0.2/32 -m comment --comment \"name: \\\"mynet\\\" id: \\\"abc123\\\"\" -j CNI-70a29d9dc18bc4d652ea5d59\n"));
        assert!(text.contains("\n:D - [0:0]\n-I POSTROUTING 1 -j D\n"));
    }
}
