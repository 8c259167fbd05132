//! `iptables`/`ip6tables`: an argv-exact runner, a parsed `iptables-save` listing, and
//! `iptables-restore --noflush` transactions, so that one ADD or DEL costs one listing and
//! one atomic commit per family instead of a process per rule.

pub use super::Pending;
use super::{Family, FirewallError, find_in_path, run_tool, spawn_tool};
use std::collections::BTreeSet;

/// Seconds to wait for the xtables lock before giving up (the reference waits forever).
pub const LOCK_WAIT_SECS: &str = "10";

/// The iptables tools of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iptables {
    pub family: Family,
}

/// Which implementation the `iptables` tools in `PATH` are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `iptables-nft` (`xtables-nft-multi`): the rules are nf_tables rules in table `nat` of
    /// family `ip`/`ip6`, visible to [`crate::nftables`].
    Nft,
    /// `iptables-legacy`: x_tables, invisible to nf_tables probes.
    Legacy,
    /// Not recognizable from the binary (a wrapper script, say).
    Unknown,
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

    /// The variant of the tools, from the name of the binary `iptables-restore` resolves
    /// to (no process is started): Debian's alternatives point it at `xtables-nft-multi` or
    /// `xtables-legacy-multi`.
    pub fn variant(&self) -> Variant {
        let Some(path) = find_in_path(self.restore_bin()) else {
            return Variant::Unknown;
        };
        let real = std::fs::canonicalize(&path).unwrap_or(path);
        let name = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains("legacy") {
            Variant::Legacy
        } else if name.contains("nft") {
            Variant::Nft
        } else {
            Variant::Unknown
        }
    }

    /// True when this family's iptables rules are nf_tables rules that [`crate::nftables`]
    /// can read and change: the tools in `PATH` resolve to `iptables-nft`. Legacy or
    /// unrecognizable tools (a wrapper script) give `false`, and callers use the tools.
    pub fn uses_nf_tables(&self) -> bool {
        self.variant() == Variant::Nft
    }

    /// The tools are installed (no process is started).
    pub fn available(&self) -> bool {
        find_in_path(self.bin()).is_some() && find_in_path(self.restore_bin()).is_some()
    }

    /// The tool works: it can list `filter INPUT` (what the reference calls "usable").
    pub fn usable(&self) -> bool {
        self.available() && self.lists("filter", "INPUT").is_ok()
    }

    /// Whether rules of `table` can be read: `iptables -t <table> -S <chain> 1`, or, with
    /// `iptables-nft` tools (whose rules the plugins read and write over netlink), nf_tables
    /// answering in this namespace, which starts no process (STATUS runs every few seconds
    /// under containerd). If nf_tables does not answer, the tool is run, for its error.
    pub fn lists(&self, table: &str, chain: &str) -> Result<(), FirewallError> {
        if self.uses_nf_tables() && crate::nftables::answers() {
            return Ok(());
        }
        self.run(&["-t", table, "-S", chain, "1"]).map(|_| ())
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
        match self.restore_start(tx)? {
            Some(p) => p.wait().map(|_| ()),
            None => Ok(()),
        }
    }

    /// Starts `iptables-restore` on a transaction and returns at once, so that the caller can
    /// do other work (e.g. delete a link) while the tool commits and exits; collect the
    /// outcome with [`Pending::wait`]. An empty transaction starts nothing (`None`).
    pub fn restore_start(&self, tx: &Restore) -> Result<Option<Pending>, FirewallError> {
        if tx.is_empty() {
            return Ok(None);
        }
        spawn_tool(
            self.restore_bin(),
            &["-w", LOCK_WAIT_SECS, "--noflush"],
            Some(tx.render()),
        )
        .map(Some)
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

impl Ruleset {
    /// The first rule of `chain` equal to `args` in meaning ([`canonical_rule`]): the listing
    /// prints rules in its own normal form (`-s 10.0.0.2/24` as `-s 10.0.0.0/24`, implicit
    /// `-m tcp`, reordered matches), so text comparison would not work.
    pub fn find_rule<'a, S: AsRef<str>>(
        &'a self,
        chain: &'a str,
        args: &[S],
    ) -> Option<&'a SavedRule> {
        let want = canonical_rule(args);
        self.chain_rules(chain)
            .find(|r| canonical_rule(&r.args) == want)
    }

    /// Every rule (in any chain) whose jump target is `target`.
    pub fn rules_targeting<'a>(
        &'a self,
        target: &'a str,
    ) -> impl Iterator<Item = &'a SavedRule> + 'a {
        self.rules
            .iter()
            .filter(move |r| r.target() == Some(target))
    }
}

fn option_alias(name: &str) -> &str {
    match name {
        "--source" | "--src" => "-s",
        "--destination" | "--dst" => "-d",
        "--protocol" => "-p",
        "--jump" => "-j",
        "--goto" => "-g",
        "--in-interface" => "-i",
        "--out-interface" => "-o",
        "--match" => "-m",
        "--destination-ports" | "--dports" => "--dports",
        "--source-ports" | "--sports" => "--sports",
        "--destination-port" => "--dport",
        "--source-port" => "--sport",
        other => other,
    }
}

fn normalize_addr(v: &str) -> String {
    use ipnet::IpNet;
    use std::net::IpAddr;
    if let Ok(n) = v.parse::<IpNet>() {
        let n = n.trunc();
        return format!("{}/{}", n.addr().to_canonical(), n.prefix_len());
    }
    if let Ok(a) = v.parse::<IpAddr>() {
        let a = a.to_canonical();
        let len = if a.is_ipv4() { 32 } else { 128 };
        return format!("{a}/{len}");
    }
    v.to_string()
}

/// An order-independent normal form of a rule's arguments, for comparing the rules we
/// generate with what `iptables-save` lists: `(option, value)` pairs, sorted, with `-m`
/// module loads dropped (they are implied by the options that follow), long option names
/// mapped to short ones, addresses turned into networks (`127.0.0.1` → `127.0.0.1/32`,
/// `10.0.0.2/24` → `10.0.0.0/24`), protocols lowercased, and `!` kept on the option it negates.
pub fn canonical_rule<S: AsRef<str>>(args: &[S]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    let mut neg = false;
    while i < args.len() {
        let tok = args[i].as_ref();
        i += 1;
        if tok == "!" {
            neg = true;
            continue;
        }
        let is_opt = tok.starts_with('-') && tok.len() > 1;
        if !is_opt {
            out.push((String::new(), tok.to_string()));
            neg = false;
            continue;
        }
        let name = option_alias(tok);
        let mut vals: Vec<&str> = Vec::new();
        let mut negated_value = false;
        while i < args.len() {
            let v = args[i].as_ref();
            if v == "!" && vals.is_empty() {
                // `--opt ! value` (old syntax) negates the option.
                negated_value = true;
                i += 1;
                continue;
            }
            if v == "!"
                || (v.starts_with('-')
                    && v.len() > 1
                    && !v[1..].starts_with(|c: char| c.is_ascii_digit()))
            {
                break;
            }
            vals.push(v);
            i += 1;
        }
        let value = vals.join(" ");
        if name == "-m" {
            neg = false;
            continue;
        }
        if (name == "-s" || name == "-d")
            && !(neg || negated_value)
            && (value == "0.0.0.0/0" || value == "::/0")
        {
            // "Any address" is not listed by iptables-save.
            neg = false;
            continue;
        }
        let value = match name {
            "-s" | "-d" => normalize_addr(&value),
            "-p" => value.to_ascii_lowercase(),
            _ => value,
        };
        let key = if neg || negated_value {
            format!("!{name}")
        } else {
            name.to_string()
        };
        out.push((key, value));
        neg = false;
    }
    out.sort();
    out
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

    /// `-C CHAIN args...`: an assertion; the whole transaction fails (and nothing of it is
    /// applied) if the rule is absent.
    pub fn check(&mut self, chain: &str, args: &[String]) -> &mut Restore {
        self.lines.push(Self::rule_line("-C", chain, args));
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

    /// Appends the lines of another transaction on the same table.
    pub fn merge(&mut self, other: &Restore) -> &mut Restore {
        self.lines.extend(other.lines.iter().cloned());
        self
    }

    /// Number of lines (commands) in the transaction.
    pub fn len(&self) -> usize {
        self.lines.len()
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
    fn canonical_rules_match_listing_forms() {
        let ours = argv(&[
            "-p",
            "tcp",
            "--dport",
            "8080",
            "-s",
            "10.0.0.2/24",
            "-j",
            "CNI-HOSTPORT-SETMARK",
        ]);
        let listed =
            split_args("-s 10.0.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK");
        assert_eq!(canonical_rule(&ours), canonical_rule(&listed));
        let ours = argv(&["-p", "tcp", "--dport", "8080", "-s", "127.0.0.1", "-j", "X"]);
        let listed = split_args("-s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j X");
        assert_eq!(canonical_rule(&ours), canonical_rule(&listed));
        let ours = argv(&[
            "-m",
            "comment",
            "--comment",
            "dnat name: \"n\" id: \"c\"",
            "-m",
            "multiport",
            "-p",
            "udp",
            "--destination-ports",
            "53,54",
            "-j",
            "D",
        ]);
        let listed = split_args(
            "-p udp -m comment --comment \"dnat name: \\\"n\\\" id: \\\"c\\\"\" -m multiport --dports 53,54 -j D",
        );
        assert_eq!(canonical_rule(&ours), canonical_rule(&listed));
        let v6 = argv(&[
            "-p",
            "tcp",
            "--dport",
            "80",
            "-s",
            "2001:db8:1::2/64",
            "-j",
            "DNAT",
            "--to-destination",
            "[2001:db8:1::2]:80",
        ]);
        let listed = split_args(
            "-s 2001:db8:1::/64 -p tcp -m tcp --dport 80 -j DNAT --to-destination [2001:db8:1::2]:80",
        );
        assert_eq!(canonical_rule(&v6), canonical_rule(&listed));
        // Different port, negation and address differ.
        let other = split_args("-s 10.0.0.0/24 -p tcp -m tcp --dport 8081 -j CNI-HOSTPORT-SETMARK");
        assert_ne!(
            canonical_rule(&argv(&[
                "-p",
                "tcp",
                "--dport",
                "8080",
                "-s",
                "10.0.0.2/24",
                "-j",
                "CNI-HOSTPORT-SETMARK"
            ])),
            canonical_rule(&other)
        );
        assert_ne!(
            canonical_rule(&argv(&["!", "-s", "10.0.0.0/8", "-j", "X"])),
            canonical_rule(&argv(&["-s", "10.0.0.0/8", "-j", "X"]))
        );
        assert_eq!(
            canonical_rule(&argv(&["!", "-s", "10.0.0.0/8", "-j", "X"])),
            canonical_rule(&argv(&["-s", "!", "10.0.0.0/8", "-j", "X"]))
        );
        let rs = Ruleset::parse(SAVE);
        assert!(
            rs.find_rule(
                "POSTROUTING",
                &argv(&[
                    "-m",
                    "comment",
                    "--comment",
                    "name: \"mynet\" id: \"abc123\"",
                    "-s",
                    "10.88.0.2",
                    "-j",
                    "CNI-70a29d9dc18bc4d652ea5d59"
                ])
            )
            .is_some()
        );
        assert_eq!(
            rs.rules_targeting("CNI-70a29d9dc18bc4d652ea5d59").count(),
            1
        );
    }

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
