//! NAT and filtering for bridge networks, through iptables.
//!
//! berth keeps its rules in its own chains, jumped to from the built-in
//! ones, and tags every rule with `-m comment --comment berth:<owner>`
//! (the network name for per-network rules, the container id for port
//! forwards; the jumps carry plain `berth`):
//!
//! | table  | chain             | rules                                             |
//! |--------|-------------------|---------------------------------------------------|
//! | nat    | BERTH-POSTROUTING | per network: MASQUERADE from the subnet out of any interface but the bridge; MASQUERADE into the bridge of loopback sources (localhost) and of DNATed flows from the subnet (hairpin) |
//! | nat    | BERTH-DNAT        | per published port: DNAT of `[host address:]port` to container:port |
//! | filter | BERTH-FORWARD     | per network: accept from the bridge, and replies (RELATED,ESTABLISHED) to it; per port: accept new connections to container:port |
//! | raw    | PREROUTING        | per network: drop packets from the bridge to 127.0.0.0/8 |
//!
//! Jumps: `POSTROUTING -> BERTH-POSTROUTING`; `PREROUTING -> BERTH-DNAT`
//! for packets to a local address *other than* 127.0.0.0/8; `OUTPUT ->
//! BERTH-DNAT` for the host's own packets to any local address, 127.0.0.1
//! included; `FORWARD -> BERTH-FORWARD` inserted first.
//!
//! A published port answers on every host address, `localhost` too, as
//! docker's does (`-p 127.0.0.1:8080:80` answers on loopback only), and
//! to containers that call it through a host address (hairpin).
//!
//! Localhost: DNAT in OUTPUT plus `route_localnet` on the bridge (set by
//! [`set_route_localnet`] on that interface only, never on `all`), rather
//! than a userland proxy: no process per port to keep alive and account
//! for, no extra copy of every byte, the container sees the same kind of
//! connection whatever the client, and it is gone with the rules. The
//! kernel refuses to route a packet with a loopback source out of an
//! interface without `route_localnet`, and the container could not answer
//! 127.0.0.1 anyway, so such connections are MASQUERADEd to the bridge's
//! address. Two defences keep loopback local (moby#45610,
//! CVE-2020-8558): packets from elsewhere reach the DNAT rules only for
//! non-loopback addresses (the PREROUTING jump excludes 127.0.0.0/8), and
//! the raw table drops anything arriving from the bridge for
//! 127.0.0.0/8, which `route_localnet` would otherwise deliver to the
//! host's loopback services.
//!
//! Hairpin: the DNAT rules do not exclude the bridge, so a container
//! connecting to a host address reaches the published port, its own
//! included; such a flow goes back out through the bridge it came from,
//! and is MASQUERADEd so that the answer returns through the host, where
//! the DNAT is undone.
//!
//! Every change is idempotent: a rule is added only after `iptables -C`
//! says it is missing, deleted only when `-C` finds it; chains are
//! created only when missing. iptables always runs with `-w`. This works
//! the same with the legacy and the nf_tables backends of iptables.
//!
//! The per-container hot path is cheaper: all of a container's port
//! rules go in or out in ONE `iptables-restore --noflush` run (the
//! `-restore` program beside the `iptables` in use, so the same backend),
//! both tables in one input ([`restore_input`]). Adding without checking
//! is safe only when the caller knows the rules cannot exist (no earlier
//! attach of the container left any trace: see
//! [`Firewall::add_port_forwards`]); deleting in one batch fails as a
//! whole when a rule is missing (a crash between the steps), and then the
//! checked path above takes over. With the nf_tables backend a process
//! that deleted rules waits a whole RCU grace period (10-30 ms) when its
//! netlink socket closes at exit, *after* the kernel committed the batch;
//! berth therefore reads the restore's verbose echo of a comment line put
//! after the last `COMMIT` (echoed only once everything before it was
//! committed) and lets the process finish exiting on its own.
//! Firewall changes of concurrent berth processes are serialised by a
//! lock file, so that "remove the chains once no network is left" cannot
//! race with another process adding a network.

use crate::errors::ErrorList;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::ipam::PortForward;
use crate::network::NetworkConfig;
use crate::persist::{self, FileLock};

/// berth's chain in the nat table for MASQUERADE.
pub const POSTROUTING_CHAIN: &str = "BERTH-POSTROUTING";
/// berth's chain in the nat table for published ports.
pub const DNAT_CHAIN: &str = "BERTH-DNAT";
/// berth's chain in the filter table.
pub const FORWARD_CHAIN: &str = "BERTH-FORWARD";

/// Set up and tear down the rules of networks and published ports.
/// Teardown keeps going after an error and returns all of them.
pub trait Firewall {
    /// Add the network's rules (and berth's chains and jumps when they are
    /// missing).
    fn setup_network(&self, network: &NetworkConfig) -> Result<(), FirewallError>;
    /// Remove the network's rules; remove berth's chains and jumps when no
    /// network rule is left in them.
    fn teardown_network(&self, network: &NetworkConfig) -> Result<(), TeardownErrors>;
    /// Publish all the ports of one container. `absent`: the caller knows
    /// that none of their rules exist (the container held no address or
    /// port before this attach, and rules are only ever added after the
    /// lease is recorded and removed before it is given back), so they
    /// may be added without checking.
    fn add_port_forwards(
        &self,
        forwards: &[PortForward],
        absent: bool,
    ) -> Result<(), FirewallError>;

    /// Withdraw all the given published ports (idempotent).
    fn remove_port_forwards(&self, forwards: &[PortForward]) -> Result<(), TeardownErrors>;

    /// Publish one port of a container.
    fn add_port_forward(&self, forward: &PortForward) -> Result<(), FirewallError> {
        self.add_port_forwards(std::slice::from_ref(forward), false)
    }

    /// Withdraw one published port.
    fn remove_port_forward(&self, forward: &PortForward) -> Result<(), TeardownErrors> {
        self.remove_port_forwards(std::slice::from_ref(forward))
    }
}

/// An iptables failure, with the full command line.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("firewall lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A failure of the nf_tables backend (see [`crate::nftables`]).
    #[error(transparent)]
    Nftables(crate::nftables_msg::NfError),
    #[error("unknown firewall backend {name:?} (use iptables or nftables)")]
    UnknownBackend { name: String },
}

/// Every error a teardown met; it did all it could despite them.
pub type TeardownErrors = crate::errors::ErrorList<FirewallError>;

/// An iptables table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Nat,
    Filter,
    /// Before connection tracking: where packets are dropped unseen.
    Raw,
}

impl Table {
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Filter => "filter",
            Table::Raw => "raw",
        }
    }
}

/// Where a new rule goes in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Append,
    /// First in the chain.
    Insert,
}

/// The address family a [`Rule`] is for: `iptables` or `ip6tables`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Family {
    #[default]
    Ipv4,
    Ipv6,
}

/// One iptables rule as data: the table, the chain, and the rule
/// specification (matches and target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: Table,
    pub chain: String,
    pub position: Position,
    pub spec: Vec<String>,
    /// IPv4 for every rule but those of [`network_rules6`].
    pub family: Family,
}

/// What to do with a [`Rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleOp {
    Check,
    Add,
    Delete,
}

impl Rule {
    fn new(table: Table, chain: &str, spec: &[&str]) -> Self {
        Rule {
            table,
            chain: chain.to_owned(),
            position: Position::Append,
            spec: spec.iter().map(|s| (*s).to_owned()).collect(),
            family: Family::Ipv4,
        }
    }

    fn ipv6(mut self) -> Self {
        self.family = Family::Ipv6;
        self
    }

    fn inserted(mut self) -> Self {
        self.position = Position::Insert;
        self
    }

    /// The iptables arguments for `op` (without the program name).
    pub fn args(&self, op: RuleOp) -> Vec<String> {
        let flag = match (op, self.position) {
            (RuleOp::Check, _) => "-C",
            (RuleOp::Add, Position::Append) => "-A",
            (RuleOp::Add, Position::Insert) => "-I",
            (RuleOp::Delete, _) => "-D",
        };
        let mut args: Vec<String> = ["-w", "-t", self.table.as_str(), flag, &self.chain]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        if op == RuleOp::Add && self.position == Position::Insert {
            args.push("1".to_owned());
        }
        args.extend(self.spec.iter().cloned());
        args
    }
}

fn comment(owner: &str) -> String {
    format!("berth:{owner}")
}

/// One argument of an `iptables-restore` line, quoted when it holds
/// anything but plain characters.
fn restore_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "!-_.:/,+=@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_owned();
    }
    let mut quoted = String::from("\"");
    for c in word.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// The `iptables-restore --noflush` input that adds (`RuleOp::Add`) or
/// deletes (`RuleOp::Delete`) `rules`: per table, in the order the tables
/// first appear, `*table`, one line per rule, `COMMIT`.
pub fn restore_input(rules: &[Rule], op: RuleOp) -> String {
    assert!(op != RuleOp::Check, "iptables-restore cannot check rules");
    let mut tables: Vec<Table> = Vec::new();
    for rule in rules {
        if !tables.contains(&rule.table) {
            tables.push(rule.table);
        }
    }
    let mut input = String::new();
    for table in tables {
        input.push('*');
        input.push_str(table.as_str());
        input.push('\n');
        for rule in rules.iter().filter(|r| r.table == table) {
            // Drop `-w -t <table>`; keep the flag, chain, position, spec.
            let args = rule.args(op);
            let words: Vec<String> = args[3..].iter().map(|a| restore_word(a)).collect();
            input.push_str(&words.join(" "));
            input.push('\n');
        }
        input.push_str("COMMIT\n");
    }
    input
}

/// The comment line put after the last `COMMIT`: `iptables-restore -v`
/// echoes comment lines as it reaches them, so seeing it means every
/// table before it was committed.
pub const RESTORE_SENTINEL: &str = "# berth: committed";

/// berth's chains, in creation order.
pub fn chains() -> [(Table, &'static str); 3] {
    [
        (Table::Nat, POSTROUTING_CHAIN),
        (Table::Nat, DNAT_CHAIN),
        (Table::Filter, FORWARD_CHAIN),
    ]
}

/// The jumps from the built-in chains into berth's. Packets arriving
/// from elsewhere reach the port rules only for a non-loopback local
/// address; the host's own packets also for 127.0.0.0/8, which is how a
/// published port answers on `localhost` (see the module docs).
pub fn jump_rules() -> Vec<Rule> {
    let tagged_jump = ["-m", "comment", "--comment", "berth", "-j", DNAT_CHAIN];
    let local = ["-m", "addrtype", "--dst-type", "LOCAL"];
    let from_outside: Vec<&str> = ["!", "-d", LOOPBACK_NET]
        .into_iter()
        .chain(local)
        .chain(tagged_jump)
        .collect();
    let from_the_host: Vec<&str> = local.into_iter().chain(tagged_jump).collect();
    vec![
        Rule::new(
            Table::Nat,
            "POSTROUTING",
            &[
                "-m",
                "comment",
                "--comment",
                "berth",
                "-j",
                POSTROUTING_CHAIN,
            ],
        ),
        Rule::new(Table::Nat, "PREROUTING", &from_outside),
        Rule::new(Table::Nat, "OUTPUT", &from_the_host),
        Rule::new(
            Table::Filter,
            "FORWARD",
            &["-m", "comment", "--comment", "berth", "-j", FORWARD_CHAIN],
        )
        .inserted(),
    ]
}

/// Jumps earlier versions of berth made and this one does not: removed
/// when the network rules are set up or the chains go, so that an
/// upgraded host does not keep them.
pub fn legacy_jump_rules() -> Vec<Rule> {
    vec![Rule::new(
        Table::Nat,
        "OUTPUT",
        &[
            "!",
            "-d",
            LOOPBACK_NET,
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-m",
            "comment",
            "--comment",
            "berth",
            "-j",
            DNAT_CHAIN,
        ],
    )]
}

/// The loopback network, 127.0.0.0/8.
pub const LOOPBACK_NET: &str = "127.0.0.0/8";

/// The rules of an `--internal` network: no MASQUERADE; traffic between
/// its containers passes, anything into or out of the bridge from or to
/// another interface is dropped (docker's isolation rules).
pub fn internal_network_rules(network: &NetworkConfig) -> Vec<Rule> {
    let bridge = network.bridge.as_str();
    let tag = comment(&network.name);
    let rule = |interfaces: &[&str], target: &str| {
        let mut all = interfaces.to_vec();
        all.extend(["-m", "comment", "--comment", &tag, "-j", target]);
        Rule::new(Table::Filter, FORWARD_CHAIN, &all)
    };
    vec![
        rule(&["-i", bridge, "-o", bridge], "ACCEPT"),
        rule(&["-i", bridge, "!", "-o", bridge], "DROP"),
        rule(&["!", "-i", bridge, "-o", bridge], "DROP"),
    ]
}

/// The rules of one network.
pub fn network_rules(network: &NetworkConfig) -> Vec<Rule> {
    if network.internal {
        let mut rules = internal_network_rules(network);
        rules.push(loopback_guard(network));
        return rules;
    }
    let subnet = network.subnet.to_string();
    let bridge = network.bridge.as_str();
    let tag = comment(&network.name);
    vec![
        Rule::new(
            Table::Nat,
            POSTROUTING_CHAIN,
            &[
                "-s",
                &subnet,
                "!",
                "-o",
                bridge,
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "MASQUERADE",
            ],
        ),
        Rule::new(
            Table::Filter,
            FORWARD_CHAIN,
            &[
                "-o",
                bridge,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "ACCEPT",
            ],
        ),
        Rule::new(
            Table::Filter,
            FORWARD_CHAIN,
            &[
                "-i",
                bridge,
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "ACCEPT",
            ],
        ),
        // The host's connections to 127.0.0.1:PORT, DNATed to a container,
        // leave with a loopback source the container cannot answer: the
        // bridge's address instead.
        Rule::new(
            Table::Nat,
            POSTROUTING_CHAIN,
            &[
                "-s",
                LOOPBACK_NET,
                "-o",
                bridge,
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "MASQUERADE",
            ],
        ),
        // Hairpin: a container reaching a published port through a host
        // address is DNATed back onto its own bridge; unless the source is
        // rewritten too, the server answers it directly, from an address
        // the client did not call.
        Rule::new(
            Table::Nat,
            POSTROUTING_CHAIN,
            &[
                "-s",
                &subnet,
                "-o",
                bridge,
                "-m",
                "conntrack",
                "--ctstate",
                "DNAT",
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "MASQUERADE",
            ],
        ),
        loopback_guard(network),
    ]
}

/// route_localnet on a berth bridge (for published ports on 127.0.0.1)
/// would also let a container address the host's 127.0.0.1 services
/// through it (CVE-2020-8558): nothing from the bridge may be for
/// 127.0.0.0/8. Every network gets it, internal ones too.
fn loopback_guard(network: &NetworkConfig) -> Rule {
    let tag = comment(&network.name);
    Rule::new(
        Table::Raw,
        "PREROUTING",
        &[
            "-d",
            LOOPBACK_NET,
            "-i",
            &network.bridge,
            "-m",
            "comment",
            "--comment",
            &tag,
            "-j",
            "DROP",
        ],
    )
    // First, so that no earlier ACCEPT of another tool's lets them by.
    .inserted()
}

/// berth's IPv6 chains (ports are published on IPv4 only: no DNAT).
pub fn chains6() -> [(Table, &'static str); 2] {
    [
        (Table::Nat, POSTROUTING_CHAIN),
        (Table::Filter, FORWARD_CHAIN),
    ]
}

/// The IPv6 jumps into [`chains6`].
pub fn jump_rules6() -> Vec<Rule> {
    jump_rules()
        .into_iter()
        .filter(|rule| {
            chains6()
                .iter()
                .any(|(_, chain)| rule.spec.last().is_some_and(|t| t == chain))
        })
        .map(Rule::ipv6)
        .collect()
}

/// The IPv6 rules of a network with an IPv6 subnet (none without): as
/// [`network_rules`] for IPv4, minus what only published ports and
/// 127.0.0.1 need: MASQUERADE of the subnet out of other interfaces and
/// forwarding from the bridge and of replies to it; an `--internal`
/// network's isolation rules.
pub fn network_rules6(network: &NetworkConfig) -> Vec<Rule> {
    let Some(subnet) = network.ipv6_subnet else {
        return Vec::new();
    };
    if network.internal {
        return internal_network_rules(network)
            .into_iter()
            .map(Rule::ipv6)
            .collect();
    }
    let subnet = subnet.to_string();
    let bridge = network.bridge.as_str();
    let tag = comment(&network.name);
    let tagged = |spec: &[&str], target: &str| {
        let mut all = spec.to_vec();
        all.extend(["-m", "comment", "--comment", &tag, "-j", target]);
        all.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>()
    };
    let rule = |table: Table, chain: &str, spec: Vec<String>| {
        let words: Vec<&str> = spec.iter().map(String::as_str).collect();
        Rule::new(table, chain, &words).ipv6()
    };
    vec![
        rule(
            Table::Nat,
            POSTROUTING_CHAIN,
            tagged(&["-s", &subnet, "!", "-o", bridge], "MASQUERADE"),
        ),
        rule(
            Table::Filter,
            FORWARD_CHAIN,
            tagged(
                &[
                    "-o",
                    bridge,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "RELATED,ESTABLISHED",
                ],
                "ACCEPT",
            ),
        ),
        rule(
            Table::Filter,
            FORWARD_CHAIN,
            tagged(&["-i", bridge], "ACCEPT"),
        ),
    ]
}

/// The rules of one published port: DNAT of the host port (on the
/// mapping's host address only, when it has one) to the container, and
/// acceptance of the forwarded connections. Neither excludes the bridge
/// itself, so that containers reach the port through a host address too
/// (hairpin; the network's MASQUERADE makes the answers come back).
pub fn port_forward_rules(forward: &PortForward) -> Vec<Rule> {
    let mapping = &forward.mapping;
    let protocol = mapping.protocol.as_str();
    let host_port = mapping.host_port.to_string();
    let container_port = mapping.container_port.to_string();
    let destination = format!("{}:{}", forward.container_ip, container_port);
    let container = format!("{}/32", forward.container_ip);
    let host_ip = format!("{}/32", mapping.host_ip);
    let bridge = forward.bridge.as_str();
    let tag = comment(&forward.owner);
    let mut dnat: Vec<&str> = Vec::new();
    if !mapping.host_ip.is_unspecified() {
        dnat.extend(["-d", &host_ip]);
    }
    dnat.extend([
        "-p",
        protocol,
        "-m",
        protocol,
        "--dport",
        &host_port,
        "-m",
        "comment",
        "--comment",
        &tag,
        "-j",
        "DNAT",
        "--to-destination",
        &destination,
    ]);
    vec![
        Rule::new(Table::Nat, DNAT_CHAIN, &dnat),
        Rule::new(
            Table::Filter,
            FORWARD_CHAIN,
            &[
                "-d",
                &container,
                "-o",
                bridge,
                "-p",
                protocol,
                "-m",
                protocol,
                "--dport",
                &container_port,
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "ACCEPT",
            ],
        ),
    ]
}

/// [`Firewall`] through the `iptables` command.
#[derive(Debug, Clone)]
pub struct IptablesFirewall {
    program: PathBuf,
    lock_dir: PathBuf,
}

impl IptablesFirewall {
    /// Run `iptables` from `$PATH`; serialise through a lock file in
    /// `lock_dir` (e.g. `<state root>/networks`).
    pub fn new(lock_dir: impl Into<PathBuf>) -> Self {
        Self::with_program("iptables", lock_dir)
    }

    /// Run another iptables binary (e.g. `iptables-legacy`).
    pub fn with_program(program: impl Into<PathBuf>, lock_dir: impl Into<PathBuf>) -> Self {
        IptablesFirewall {
            program: program.into(),
            lock_dir: lock_dir.into(),
        }
    }

    /// The same backend for IPv6: `ip6tables` for `iptables`,
    /// `ip6tables-legacy` for `iptables-legacy`, in the same directory.
    pub fn ipv6_sibling(&self) -> IptablesFirewall {
        let name = self
            .program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match name.strip_prefix("iptables") {
            Some(rest) => format!("ip6tables{rest}"),
            None => name,
        };
        IptablesFirewall {
            program: self.program.with_file_name(name),
            lock_dir: self.lock_dir.clone(),
        }
    }

    /// The IPv6 rules of `network` and berth's IPv6 chains and jumps
    /// (under the caller's lock).
    fn setup6_locked(&self, network: &NetworkConfig) -> Result<(), FirewallError> {
        let rules = network_rules6(network);
        if rules.is_empty() {
            return Ok(());
        }
        let six = self.ipv6_sibling();
        for (table, chain) in chains6() {
            six.ensure_chain(table, chain)?;
        }
        for rule in rules.iter().chain(&jump_rules6()) {
            six.ensure_rule(rule)?;
        }
        Ok(())
    }

    /// Remove the IPv6 rules of `network`, and berth's IPv6 chains once
    /// they are empty (under the caller's lock).
    fn teardown6_locked(&self, network: &NetworkConfig, errors: &mut Vec<FirewallError>) {
        let rules = network_rules6(network);
        if rules.is_empty() {
            return;
        }
        let six = self.ipv6_sibling();
        for rule in &rules {
            if let Err(e) = six.remove_rule(rule) {
                errors.push(e);
            }
        }
        six.remove_chains_if_unused(&chains6(), &jump_rules6(), errors);
    }

    fn lock(&self) -> Result<FileLock, FirewallError> {
        let path = self.lock_dir.join("firewall.lock");
        persist::ensure_dir(&self.lock_dir)
            .and_then(|()| FileLock::exclusive(&path))
            .map_err(|source| FirewallError::Lock { path, source })
    }

    /// Run iptables; `Ok(true)` on success, `Ok(false)` on exit status 1
    /// when `status_one_is_no` (how `-C` and `-S` say "not there").
    fn run(&self, args: &[String], status_one_is_no: bool) -> Result<bool, FirewallError> {
        let output = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| FirewallError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        if output.status.success() {
            return Ok(true);
        }
        if status_one_is_no && output.status.code() == Some(1) {
            return Ok(false);
        }
        Err(FirewallError::Command {
            command: format!("{} {}", self.program.display(), args.join(" ")),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }

    /// The `iptables-restore` of the same backend as the `iptables` in
    /// use: `<program>-restore` beside it.
    fn restore_program(&self) -> PathBuf {
        let mut name = self
            .program
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push("-restore");
        self.program.with_file_name(name)
    }

    /// Feed `input` to one `iptables-restore -w --noflush -v`. Returns as
    /// soon as the process has echoed [`RESTORE_SENTINEL`], i.e. after the
    /// last commit; the process is reaped in the background then (see the
    /// module docs). Any failure makes it exit before the echo, and its
    /// status and message are returned.
    fn restore(&self, input: &str) -> Result<(), FirewallError> {
        use std::io::{BufRead, BufReader, Read, Write};
        let program = self.restore_program();
        let args = ["-w", "--noflush", "-v"];
        let command_line = || format!("{} {}", program.display(), args.join(" "));
        let mut child = Command::new(&program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| FirewallError::Spawn {
                program: program.display().to_string(),
                source,
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let written = stdin
            .write_all(input.as_bytes())
            .and_then(|()| stdin.write_all(format!("{RESTORE_SENTINEL}\n").as_bytes()));
        drop(stdin);
        let mut committed = false;
        if written.is_ok() {
            let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
            let mut line = String::new();
            while matches!(stdout.read_line(&mut line), Ok(n) if n > 0) {
                if line.trim_end() == RESTORE_SENTINEL {
                    committed = true;
                    break;
                }
                line.clear();
            }
        }
        if committed {
            // Done; the process may still be closing its netlink socket.
            drop(child.stderr.take());
            std::thread::spawn(move || child.wait());
            return Ok(());
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let status = child.wait().map_err(|source| FirewallError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
        if status.success() && written.is_ok() {
            return Ok(());
        }
        Err(FirewallError::Command {
            command: command_line(),
            status: status.to_string(),
            stderr: stderr.trim().to_owned(),
        })
    }

    fn list_chain(&self, table: Table, chain: &str) -> Result<Option<String>, FirewallError> {
        let args: Vec<String> = ["-w", "-t", table.as_str(), "-S", chain]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let output = Command::new(&self.program)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| FirewallError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        match output.status.code() {
            Some(0) => Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned())),
            Some(1) => Ok(None),
            _ => Err(FirewallError::Command {
                command: format!("{} {}", self.program.display(), args.join(" ")),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            }),
        }
    }

    fn ensure_chain(&self, table: Table, chain: &str) -> Result<(), FirewallError> {
        if self.list_chain(table, chain)?.is_none() {
            self.run(&strings(&["-w", "-t", table.as_str(), "-N", chain]), false)?;
        }
        Ok(())
    }

    fn ensure_rule(&self, rule: &Rule) -> Result<(), FirewallError> {
        if !self.run(&rule.args(RuleOp::Check), true)? {
            self.run(&rule.args(RuleOp::Add), false)?;
        }
        Ok(())
    }

    /// Delete every copy of `rule` there is.
    fn remove_rule(&self, rule: &Rule) -> Result<(), FirewallError> {
        // A bound, in case `-C` kept finding what `-D` deleted.
        for _ in 0..64 {
            match self.remove_rule_once(rule) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Delete one copy of `rule`; `Ok(true)` when there was one.
    fn remove_rule_once(&self, rule: &Rule) -> Result<bool, FirewallError> {
        match self.run(&rule.args(RuleOp::Check), true) {
            Ok(true) => self.run(&rule.args(RuleOp::Delete), false),
            Ok(false) => Ok(false),
            // The nf_tables backend fails `-C` (status 2) when the rule's
            // chain or jump target does not exist: then the rule does not
            // either.
            Err(error) => match self.references_missing_chain(rule) {
                Ok(true) => Ok(false),
                Ok(false) | Err(_) => Err(error),
            },
        }
    }

    /// Whether `rule` lives in, or jumps to, one of berth's chains that
    /// does not exist.
    fn references_missing_chain(&self, rule: &Rule) -> Result<bool, FirewallError> {
        for (table, chain) in chains() {
            let involved = rule.chain == chain || rule.spec.last().is_some_and(|t| t == chain);
            if table == rule.table && involved && self.list_chain(table, chain)?.is_none() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn setup_locked(&self, network: &NetworkConfig) -> Result<(), FirewallError> {
        for (table, chain) in chains() {
            self.ensure_chain(table, chain)?;
        }
        for rule in network_rules(network) {
            self.ensure_rule(&rule)?;
        }
        for rule in jump_rules() {
            self.ensure_rule(&rule)?;
        }
        for rule in legacy_jump_rules() {
            self.remove_rule(&rule)?;
        }
        Ok(())
    }

    /// Remove `jumps` and `chains` when none of the chains holds a rule
    /// any more (berth's IPv4 chains, or its IPv6 ones).
    fn remove_chains_if_unused(
        &self,
        chains: &[(Table, &str)],
        jumps: &[Rule],
        errors: &mut Vec<FirewallError>,
    ) {
        for &(table, chain) in chains {
            match self.list_chain(table, chain) {
                Ok(Some(listing)) if listing.lines().any(|l| l.starts_with("-A ")) => return,
                Ok(_) => {}
                Err(e) => {
                    errors.push(e);
                    return;
                }
            }
        }
        for rule in jumps {
            if let Err(e) = self.remove_rule(rule) {
                errors.push(e);
            }
        }
        for &(table, chain) in chains {
            match self.list_chain(table, chain) {
                Ok(Some(_)) => {
                    if let Err(e) =
                        self.run(&strings(&["-w", "-t", table.as_str(), "-X", chain]), false)
                    {
                        errors.push(e);
                    }
                }
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
    }
}

impl IptablesFirewall {
    /// Add each of `rules` unless it is there (under the lock).
    pub fn ensure_rules(&self, rules: &[Rule]) -> Result<(), FirewallError> {
        let _lock = self.lock()?;
        rules.iter().try_for_each(|rule| self.ensure_rule(rule))
    }

    /// Delete every copy of each of `rules` (under the lock).
    pub fn remove_rules(&self, rules: &[Rule]) -> Result<(), TeardownErrors> {
        let _lock = self.lock().map_err(|e| ErrorList(vec![e]))?;
        let errors: Vec<FirewallError> = rules
            .iter()
            .filter_map(|rule| self.remove_rule(rule).err())
            .collect();
        ErrorList(errors).into_result()
    }

    /// Whether any of berth's chains exists.
    pub fn has_chains(&self) -> Result<bool, FirewallError> {
        for (table, chain) in chains() {
            if self.list_chain(table, chain)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The policy of a built-in chain (`-P CHAIN POLICY` of `-S`), e.g.
    /// `DROP` for docker's FORWARD.
    pub fn policy(&self, table: Table, chain: &str) -> Result<Option<String>, FirewallError> {
        let listing = self.list_chain(table, chain)?;
        let prefix = format!("-P {chain} ");
        Ok(listing.and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix).map(|p| p.trim().to_owned()))
        }))
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

impl Firewall for IptablesFirewall {
    fn setup_network(&self, network: &NetworkConfig) -> Result<(), FirewallError> {
        let _lock = self.lock()?;
        self.setup_locked(network)?;
        self.setup6_locked(network)
    }

    fn teardown_network(&self, network: &NetworkConfig) -> Result<(), TeardownErrors> {
        let mut errors = Vec::new();
        let _lock = match self.lock() {
            Ok(lock) => lock,
            Err(e) => return Err(ErrorList(vec![e])),
        };
        for rule in network_rules(network) {
            if let Err(e) = self.remove_rule(&rule) {
                errors.push(e);
            }
        }
        let jumps: Vec<Rule> = jump_rules()
            .into_iter()
            .chain(legacy_jump_rules())
            .collect();
        self.remove_chains_if_unused(&chains(), &jumps, &mut errors);
        self.teardown6_locked(network, &mut errors);
        ErrorList(errors).into_result()
    }

    fn add_port_forwards(
        &self,
        forwards: &[PortForward],
        absent: bool,
    ) -> Result<(), FirewallError> {
        if forwards.is_empty() {
            return Ok(());
        }
        let rules: Vec<Rule> = forwards.iter().flat_map(port_forward_rules).collect();
        let _lock = self.lock()?;
        // One batch when nothing can be there yet; if it fails (a chain
        // flushed away, no iptables-restore, part of it committed), the
        // checked path below finishes the job.
        if absent && self.restore(&restore_input(&rules, RuleOp::Add)).is_ok() {
            return Ok(());
        }
        for rule in &rules {
            // The chains exist once the network is set up; only when a
            // rule cannot be added are they checked (and made).
            if self.ensure_rule(rule).is_err() {
                for (table, chain) in chains() {
                    self.ensure_chain(table, chain)?;
                }
                self.ensure_rule(rule)?;
            }
        }
        Ok(())
    }

    fn remove_port_forwards(&self, forwards: &[PortForward]) -> Result<(), TeardownErrors> {
        if forwards.is_empty() {
            return Ok(());
        }
        let rules: Vec<Rule> = forwards.iter().flat_map(port_forward_rules).collect();
        let _lock = match self.lock() {
            Ok(lock) => lock,
            Err(e) => return Err(ErrorList(vec![e])),
        };
        // One batch when every rule is there (the usual case); it fails
        // as a whole on a missing rule, and then each is checked.
        if self.restore(&restore_input(&rules, RuleOp::Delete)).is_ok() {
            return Ok(());
        }
        let mut errors = Vec::new();
        for rule in &rules {
            if let Err(e) = self.remove_rule(rule) {
                errors.push(e);
            }
        }
        ErrorList(errors).into_result()
    }
}

/// Turn on IPv4 forwarding (write `1` to `<proc_sys>/net/ipv4/ip_forward`,
/// `proc_sys` normally `/proc/sys`) in the caller's network namespace.
/// Returns whether it was off before, so the caller can say it changed it.
pub fn enable_ip_forward(proc_sys: &Path) -> io::Result<bool> {
    let path = proc_sys.join("net/ipv4/ip_forward");
    let current = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if current.trim() == "1" {
        return Ok(false);
    }
    std::fs::write(&path, "1\n")
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(true)
}

/// Let `interface` route packets with loopback addresses (write `1` to
/// `<proc_sys>/net/ipv4/conf/<interface>/route_localnet`, or `0` when
/// `on` is false), in the caller's network namespace; only that
/// interface, never `all` or `default`. The setting lives and dies with
/// the interface. Returns whether it changed.
pub fn set_route_localnet(proc_sys: &Path, interface: &str, on: bool) -> io::Result<bool> {
    if interface.is_empty() || interface.contains('/') || interface.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{interface:?} is not an interface name"),
        ));
    }
    let path = proc_sys
        .join("net/ipv4/conf")
        .join(interface)
        .join("route_localnet");
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let wanted = if on { "1" } else { "0" };
    let current = std::fs::read_to_string(&path).map_err(with_path)?;
    if current.trim() == wanted {
        return Ok(false);
    }
    std::fs::write(&path, format!("{wanted}\n")).map_err(with_path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PortMapping, Protocol};
    use std::net::Ipv4Addr;

    fn network() -> NetworkConfig {
        NetworkConfig {
            name: "web".into(),
            id: "0123456789ab".repeat(5) + "cdef",
            driver: "bridge".into(),
            subnet: "10.10.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 10, 0, 1),
            bridge: "br-0123456789ab".into(),
            internal: false,
            labels: Default::default(),
            ip_range: None,
            ipv6_subnet: None,
            ipv6_gateway: None,
        }
    }

    fn example_forward(owner: &str, ip: Ipv4Addr, mapping: PortMapping) -> PortForward {
        PortForward {
            owner: owner.to_owned(),
            network: "web".to_owned(),
            bridge: "br-0123456789ab".to_owned(),
            container_ip: ip,
            mapping,
        }
    }

    fn lines(rules: &[Rule], op: RuleOp) -> Vec<String> {
        rules.iter().map(|r| r.args(op).join(" ")).collect()
    }

    #[test]
    fn jump_rules_exclude_loopback_from_outside_and_insert_forward_first() {
        assert_eq!(
            lines(&jump_rules(), RuleOp::Add),
            [
                "-w -t nat -A POSTROUTING -m comment --comment berth -j BERTH-POSTROUTING",
                "-w -t nat -A PREROUTING ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -m comment --comment berth -j BERTH-DNAT",
                "-w -t nat -A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment berth -j BERTH-DNAT",
                "-w -t filter -I FORWARD 1 -m comment --comment berth -j BERTH-FORWARD",
            ]
        );
        assert_eq!(
            lines(&jump_rules()[3..], RuleOp::Check),
            ["-w -t filter -C FORWARD -m comment --comment berth -j BERTH-FORWARD"]
        );
        // The OUTPUT jump of earlier versions, removed on upgrade.
        assert_eq!(
            lines(&legacy_jump_rules(), RuleOp::Delete),
            ["-w -t nat -D OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -m comment --comment berth -j BERTH-DNAT"]
        );
    }

    #[test]
    fn network_rules_masquerade_forward_and_guard_loopback() {
        assert_eq!(
            lines(&network_rules(&network()), RuleOp::Add),
            [
                "-w -t nat -A BERTH-POSTROUTING -s 10.10.0.0/24 ! -o br-0123456789ab -m comment --comment berth:web -j MASQUERADE",
                "-w -t filter -A BERTH-FORWARD -o br-0123456789ab -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment berth:web -j ACCEPT",
                "-w -t filter -A BERTH-FORWARD -i br-0123456789ab -m comment --comment berth:web -j ACCEPT",
                "-w -t nat -A BERTH-POSTROUTING -s 127.0.0.0/8 -o br-0123456789ab -m comment --comment berth:web -j MASQUERADE",
                "-w -t nat -A BERTH-POSTROUTING -s 10.10.0.0/24 -o br-0123456789ab -m conntrack --ctstate DNAT -m comment --comment berth:web -j MASQUERADE",
                "-w -t raw -I PREROUTING 1 -d 127.0.0.0/8 -i br-0123456789ab -m comment --comment berth:web -j DROP",
            ]
        );
        assert_eq!(
            lines(&network_rules(&network())[..1], RuleOp::Delete),
            ["-w -t nat -D BERTH-POSTROUTING -s 10.10.0.0/24 ! -o br-0123456789ab -m comment --comment berth:web -j MASQUERADE"]
        );
    }

    #[test]
    fn port_forward_rules_dnat_and_accept() {
        let forward = example_forward(
            "c0ffee",
            Ipv4Addr::new(10, 10, 0, 2),
            PortMapping::new(8080, 80, Protocol::Tcp),
        );
        assert_eq!(
            lines(&port_forward_rules(&forward), RuleOp::Add),
            [
                "-w -t nat -A BERTH-DNAT -p tcp -m tcp --dport 8080 -m comment --comment berth:c0ffee -j DNAT --to-destination 10.10.0.2:80",
                "-w -t filter -A BERTH-FORWARD -d 10.10.0.2/32 -o br-0123456789ab -p tcp -m tcp --dport 80 -m comment --comment berth:c0ffee -j ACCEPT",
            ]
        );
        // Bound to one host address: DNAT for that destination only.
        let loopback_only = example_forward(
            "c0ffee",
            Ipv4Addr::new(10, 10, 0, 2),
            "127.0.0.1:8080:80".parse().unwrap(),
        );
        assert_eq!(
            lines(&port_forward_rules(&loopback_only), RuleOp::Add),
            [
                "-w -t nat -A BERTH-DNAT -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -m comment --comment berth:c0ffee -j DNAT --to-destination 10.10.0.2:80",
                "-w -t filter -A BERTH-FORWARD -d 10.10.0.2/32 -o br-0123456789ab -p tcp -m tcp --dport 80 -m comment --comment berth:c0ffee -j ACCEPT",
            ]
        );
        let one_address_udp = example_forward(
            "c0ffee",
            Ipv4Addr::new(10, 10, 0, 3),
            "192.168.1.5:5353:53/udp".parse().unwrap(),
        );
        assert_eq!(
            lines(&port_forward_rules(&one_address_udp)[..1], RuleOp::Delete),
            ["-w -t nat -D BERTH-DNAT -d 192.168.1.5/32 -p udp -m udp --dport 5353 -m comment --comment berth:c0ffee -j DNAT --to-destination 10.10.0.3:53"]
        );
        let udp = example_forward(
            "c0ffee",
            Ipv4Addr::new(10, 10, 0, 2),
            PortMapping::new(53, 5353, Protocol::Udp),
        );
        assert_eq!(
            lines(&port_forward_rules(&udp)[..1], RuleOp::Check),
            ["-w -t nat -C BERTH-DNAT -p udp -m udp --dport 53 -m comment --comment berth:c0ffee -j DNAT --to-destination 10.10.0.2:5353"]
        );
    }

    #[test]
    fn restore_batches_hold_a_containers_rules_per_table() {
        let web = example_forward(
            "c0ffee",
            Ipv4Addr::new(10, 10, 0, 2),
            "8080:80".parse().unwrap(),
        );
        let dns = example_forward(
            "c0ffee",
            Ipv4Addr::new(10, 10, 0, 2),
            "53:5353/udp".parse().unwrap(),
        );
        let rules: Vec<Rule> = [&web, &dns]
            .into_iter()
            .flat_map(port_forward_rules)
            .collect();
        assert_eq!(
            restore_input(&rules, RuleOp::Add),
            "*nat\n\
             -A BERTH-DNAT -p tcp -m tcp --dport 8080 -m comment --comment berth:c0ffee -j DNAT --to-destination 10.10.0.2:80\n\
             -A BERTH-DNAT -p udp -m udp --dport 53 -m comment --comment berth:c0ffee -j DNAT --to-destination 10.10.0.2:5353\n\
             COMMIT\n\
             *filter\n\
             -A BERTH-FORWARD -d 10.10.0.2/32 -o br-0123456789ab -p tcp -m tcp --dport 80 -m comment --comment berth:c0ffee -j ACCEPT\n\
             -A BERTH-FORWARD -d 10.10.0.2/32 -o br-0123456789ab -p udp -m udp --dport 5353 -m comment --comment berth:c0ffee -j ACCEPT\n\
             COMMIT\n"
        );
        assert_eq!(
            restore_input(&port_forward_rules(&web), RuleOp::Delete),
            "*nat\n\
             -D BERTH-DNAT -p tcp -m tcp --dport 8080 -m comment --comment berth:c0ffee -j DNAT --to-destination 10.10.0.2:80\n\
             COMMIT\n\
             *filter\n\
             -D BERTH-FORWARD -d 10.10.0.2/32 -o br-0123456789ab -p tcp -m tcp --dport 80 -m comment --comment berth:c0ffee -j ACCEPT\n\
             COMMIT\n"
        );
        // The same lines as the iptables commands, minus `-w -t <table>`.
        for rule in &rules {
            let command = rule.args(RuleOp::Add)[3..].join(" ");
            assert!(restore_input(&rules, RuleOp::Add).contains(&command));
        }
        // Inserted rules keep their position; odd words are quoted.
        let jump = &jump_rules()[3];
        assert_eq!(
            restore_input(std::slice::from_ref(jump), RuleOp::Add),
            "*filter\n-I FORWARD 1 -m comment --comment berth -j BERTH-FORWARD\nCOMMIT\n"
        );
        assert_eq!(restore_word("berth:c0ffee"), "berth:c0ffee");
        assert_eq!(restore_word("a b"), "\"a b\"");
        assert_eq!(restore_word("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(restore_word(""), "\"\"");
    }

    #[test]
    fn restore_program_matches_the_iptables_backend() {
        for (program, restore) in [
            ("iptables", "iptables-restore"),
            ("iptables-nft", "iptables-nft-restore"),
            ("iptables-legacy", "iptables-legacy-restore"),
            ("/usr/sbin/iptables", "/usr/sbin/iptables-restore"),
        ] {
            let firewall = IptablesFirewall::with_program(program, "/nonexistent");
            assert_eq!(firewall.restore_program(), PathBuf::from(restore));
        }
    }

    #[test]
    fn route_localnet_is_set_on_the_named_interface_only() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("net/ipv4/conf");
        for interface in ["all", "default", "br-web"] {
            std::fs::create_dir_all(conf.join(interface)).unwrap();
            std::fs::write(conf.join(interface).join("route_localnet"), "0\n").unwrap();
        }
        assert!(set_route_localnet(dir.path(), "br-web", true).unwrap());
        assert!(!set_route_localnet(dir.path(), "br-web", true).unwrap());
        let value = |interface: &str| {
            std::fs::read_to_string(conf.join(interface).join("route_localnet")).unwrap()
        };
        assert_eq!(
            [value("all"), value("default"), value("br-web")],
            ["0\n", "0\n", "1\n"]
        );
        assert!(set_route_localnet(dir.path(), "br-web", false).unwrap());
        assert_eq!(value("br-web"), "0\n");
        // No interface of that name: an error naming the file.
        let missing = set_route_localnet(dir.path(), "nosuch0", true).unwrap_err();
        assert!(
            missing.to_string().contains("nosuch0/route_localnet"),
            "{missing}"
        );
        for bad in ["", "../all", "..", "a/b"] {
            assert!(
                set_route_localnet(dir.path(), bad, true).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(value("all"), "0\n");
    }

    #[test]
    fn ip_forward_is_switched_on_once() {
        let dir = tempfile::tempdir().unwrap();
        let ipv4 = dir.path().join("net/ipv4");
        std::fs::create_dir_all(&ipv4).unwrap();
        std::fs::write(ipv4.join("ip_forward"), "0\n").unwrap();
        assert!(enable_ip_forward(dir.path()).unwrap());
        assert_eq!(
            std::fs::read_to_string(ipv4.join("ip_forward")).unwrap(),
            "1\n"
        );
        assert!(!enable_ip_forward(dir.path()).unwrap());
    }

    #[test]
    fn ipv6_rules_exist_only_for_ipv6_networks_and_say_so() {
        let plain = network();
        assert!(network_rules6(&plain).is_empty());
        let six = NetworkConfig {
            ipv6_subnet: Some("fd00:1::/64".parse().unwrap()),
            ipv6_gateway: Some("fd00:1::1".parse().unwrap()),
            ..network()
        };
        let rules = network_rules6(&six);
        assert_eq!(rules.len(), 3);
        assert!(rules.iter().all(|r| r.family == Family::Ipv6));
        assert!(network_rules(&six).iter().all(|r| r.family == Family::Ipv4));
        assert_eq!(
            rules[0].args(RuleOp::Add).join(" "),
            "-w -t nat -A BERTH-POSTROUTING -s fd00:1::/64 ! -o br-0123456789ab \
             -m comment --comment berth:web -j MASQUERADE"
        );
        assert_eq!(
            rules[2].args(RuleOp::Add).join(" "),
            "-w -t filter -A BERTH-FORWARD -i br-0123456789ab -m comment --comment berth:web -j ACCEPT"
        );
        let internal = NetworkConfig {
            internal: true,
            ..six.clone()
        };
        let isolated = network_rules6(&internal);
        assert_eq!(isolated.len(), 3);
        assert!(isolated
            .iter()
            .all(|r| r.table == Table::Filter && r.family == Family::Ipv6));
        assert!(isolated
            .iter()
            .all(|r| !r.spec.contains(&"MASQUERADE".to_owned())));
        // Jumps into the two IPv6 chains only (no DNAT over IPv6).
        let jumps: Vec<String> = jump_rules6().iter().map(|r| r.chain.clone()).collect();
        assert_eq!(jumps, ["POSTROUTING", "FORWARD"]);
    }

    #[test]
    fn the_ipv6_sibling_is_the_same_backend() {
        let dir = Path::new("/tmp/x");
        for (program, six) in [
            ("iptables", "ip6tables"),
            ("/usr/sbin/iptables-legacy", "/usr/sbin/ip6tables-legacy"),
            ("iptables-nft", "ip6tables-nft"),
        ] {
            let firewall = IptablesFirewall::with_program(program, dir);
            assert_eq!(firewall.ipv6_sibling().program, PathBuf::from(six));
        }
    }
}
