//! NAT and filtering for bridge networks through nf_tables, spoken over
//! netlink (no `nft` or `iptables` process on the run path).
//!
//! berth owns one table, `ip <table>` (the caller names it, `berth` for
//! the CLI), with these chains:
//!
//! | chain         | kind                              | rules |
//! |---------------|-----------------------------------|-------|
//! | `prerouting`  | nat, prerouting, priority -100    | `fib daddr type local ip daddr != 127.0.0.0/8 jump published` |
//! | `output`      | nat, output, priority -100        | `fib daddr type local jump published` |
//! | `published`   | regular                           | per published port: `[ip daddr HOST] <proto> dport P dnat to C:p` |
//! | `postrouting` | nat, postrouting, priority 100    | per network: MASQUERADE from the subnet out of any other interface; into the bridge of loopback sources (localhost) and of DNATed flows from the subnet (hairpin) |
//! | `forward`     | filter, forward, priority 0       | per network: replies to the bridge, anything from it; per port: new connections to C:p; `--internal`: only bridge to itself |
//! | `guard`       | filter, prerouting, priority -300 | per network: drop from the bridge to 127.0.0.0/8 (CVE-2020-8558) |
//!
//! IPv6 networks get their rules in a second table, `ip6 <table>`, with
//! two chains: `postrouting` (nat, priority 100: MASQUERADE of the v6
//! subnet out of any other interface) and `forward` (filter, priority 0:
//! replies to the bridge and anything from it, or an `--internal`
//! network's isolation). A separate `ip6` table rather than one `inet`
//! table: berth's IPv4 rules (DNAT, the localhost and hairpin
//! MASQUERADEs, the 127.0.0.0/8 guard) have no IPv6 counterpart and stay
//! exactly as they were, and a host without IPv6 networks never gets an
//! IPv6 table. The IPv6 rules are part of the same transaction as the
//! IPv4 ones of the network's setup and teardown, and the `ip6` table
//! goes when its last network rule does.
//!
//! The same rules as [`crate::firewall`]'s iptables ones (see there for
//! why localhost and hairpin work this way). Every rule carries a comment
//! (the userdata `nft` shows as `comment "..."`): `berth` for the jumps,
//! `berth:<network>` for a network's rules, `berth:<container> <host
//! address>:<host port>/<protocol>` for a published port's; removal looks
//! the comments up in one dump and deletes exactly those rules by handle.
//! Each change (network setup or teardown, a container's ports in or out)
//! is ONE nf_tables transaction: it happens whole or not at all, so a
//! crash leaves either all of a container's rules or none, and a retry
//! finds them by comment. Changes of concurrent berth processes are
//! serialised by the same lock file as the iptables backend's.
//!
//! Other firewalls: base chains of every table see each packet, and a
//! packet accepted here can still be dropped by another table (iptables'
//! FORWARD with policy DROP, as docker sets it). See
//! [`crate::firewall_backend`] for what berth does about that.

use std::path::PathBuf;

use crate::errors::ErrorList;
use crate::firewall::{Firewall, FirewallError, TeardownErrors};
use crate::ipam::PortForward;
use crate::network::NetworkConfig;
use crate::nftables_msg::{
    attr, Attrs, Batch, MsgType, NfError, NfSocket, Object, NFPROTO_IPV4, NFPROTO_IPV6,
    NLM_F_APPEND, NLM_F_CREATE,
};
use crate::nftables_rules::chain_attrs;
pub use crate::nftables_rules::{
    comment_userdata, describe, network_comment, network_rules, network_rules6, port_comment,
    port_forward_rules, rule_attrs, shared_rules, userdata_comment, ChainSpec, Expr, Field, Hook,
    NftRule, Verdict, CHAINS, CHAINS6, DNAT_CHAIN, SHARED_COMMENT,
};
use crate::persist::{self, FileLock};

/// A rule found in the kernel: its table's family, where, its handle, its
/// comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRule {
    /// [`NFPROTO_IPV4`] (table `ip`) or [`NFPROTO_IPV6`] (table `ip6`).
    pub family: u8,
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

/// [`Firewall`] over nf_tables netlink, in table `ip <table>`.
#[derive(Debug, Clone)]
pub struct NftablesFirewall {
    table: String,
    lock_dir: PathBuf,
}

impl NftablesFirewall {
    /// Rules in table `ip <table>`; serialise through a lock file in
    /// `lock_dir` (e.g. `<state root>/networks`).
    pub fn new(table: impl Into<String>, lock_dir: impl Into<PathBuf>) -> Self {
        NftablesFirewall {
            table: table.into(),
            lock_dir: lock_dir.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether the running kernel has nf_tables (a socket opens and a
    /// table dump is answered).
    pub fn available() -> bool {
        NfSocket::open().and_then(|mut s| s.probe()).is_ok()
    }

    fn lock(&self) -> Result<FileLock, FirewallError> {
        let path = self.lock_dir.join("firewall.lock");
        persist::ensure_dir(&self.lock_dir)
            .and_then(|()| FileLock::exclusive(&path))
            .map_err(|source| FirewallError::Lock { path, source })
    }

    /// Every rule of berth's `ip` table (none when it does not exist).
    pub fn installed_rules(&self) -> Result<Vec<InstalledRule>, FirewallError> {
        let mut socket = NfSocket::open().map_err(FirewallError::from)?;
        self.list(&mut socket, NFPROTO_IPV4)
    }

    /// Every rule of berth's `ip6` table (none when it does not exist).
    pub fn installed_rules6(&self) -> Result<Vec<InstalledRule>, FirewallError> {
        let mut socket = NfSocket::open().map_err(FirewallError::from)?;
        self.list(&mut socket, NFPROTO_IPV6)
    }

    /// Whether berth's `ip` table exists.
    pub fn table_exists(&self) -> Result<bool, FirewallError> {
        let mut socket = NfSocket::open().map_err(FirewallError::from)?;
        self.table_exists_on(&mut socket, NFPROTO_IPV4)
    }

    /// Whether berth's `ip6` table exists.
    pub fn table6_exists(&self) -> Result<bool, FirewallError> {
        let mut socket = NfSocket::open().map_err(FirewallError::from)?;
        self.table_exists_on(&mut socket, NFPROTO_IPV6)
    }

    fn table_exists_on(&self, socket: &mut NfSocket, family: u8) -> Result<bool, FirewallError> {
        let tables = socket
            .dump(MsgType::GetTable, family, &Attrs::new())
            .map_err(FirewallError::from)?;
        Ok(tables
            .iter()
            .any(|t| t.get_str(attr::TABLE_NAME) == Some(self.table.as_str())))
    }

    fn list(&self, socket: &mut NfSocket, family: u8) -> Result<Vec<InstalledRule>, FirewallError> {
        let mut filter = Attrs::new();
        filter.str(attr::RULE_TABLE, &self.table);
        let objects = socket
            .dump(MsgType::GetRule, family, &filter)
            .map_err(FirewallError::from)?;
        Ok(objects
            .iter()
            // Older kernels ignore the filter: keep our table's only.
            .filter(|o| o.get_str(attr::RULE_TABLE) == Some(self.table.as_str()))
            .filter_map(|o| installed_rule(o, family))
            .collect())
    }

    /// `ip` or `ip6`, as `nft` names the table's family.
    fn family_name(family: u8) -> &'static str {
        if family == NFPROTO_IPV6 {
            "ip6"
        } else {
            "ip"
        }
    }

    /// Add the table and chains of `family` (kept when they exist) to
    /// `batch`.
    fn push_skeleton(&self, batch: &mut Batch, family: u8, steps: &mut Vec<String>) {
        let mut table = Attrs::new();
        table.str(attr::TABLE_NAME, &self.table);
        batch.push(MsgType::NewTable, family, NLM_F_CREATE, &table);
        let family_name = Self::family_name(family);
        steps.push(format!("table {family_name} {}", self.table));
        let chains: &[ChainSpec] = if family == NFPROTO_IPV6 {
            &CHAINS6
        } else {
            &CHAINS
        };
        for chain in chains {
            batch.push(
                MsgType::NewChain,
                family,
                NLM_F_CREATE,
                &chain_attrs(&self.table, chain),
            );
            steps.push(format!("chain {family_name} {}", chain.name));
        }
    }

    fn push_rule(&self, batch: &mut Batch, family: u8, rule: &NftRule, steps: &mut Vec<String>) {
        batch.push(
            MsgType::NewRule,
            family,
            NLM_F_CREATE | NLM_F_APPEND,
            &rule_attrs(&self.table, rule),
        );
        steps.push(format!(
            "rule {} {}",
            Self::family_name(family),
            describe(rule)
        ));
    }

    fn push_delete(&self, batch: &mut Batch, rule: &InstalledRule, steps: &mut Vec<String>) {
        let mut attrs = Attrs::new();
        attrs
            .str(attr::RULE_TABLE, &self.table)
            .str(attr::RULE_CHAIN, &rule.chain)
            .u64(attr::RULE_HANDLE, rule.handle);
        batch.push(MsgType::DelRule, rule.family, 0, &attrs);
        steps.push(format!(
            "deleting rule {} of chain {} {} ({})",
            rule.handle,
            Self::family_name(rule.family),
            rule.chain,
            rule.comment.as_deref().unwrap_or("no comment")
        ));
    }

    fn push_delete_table(&self, batch: &mut Batch, family: u8, steps: &mut Vec<String>) {
        let mut table = Attrs::new();
        table.str(attr::TABLE_NAME, &self.table);
        batch.push(MsgType::DelTable, family, 0, &table);
        steps.push(format!(
            "deleting table {} {}",
            Self::family_name(family),
            self.table
        ));
    }

    fn commit(
        &self,
        socket: &mut NfSocket,
        batch: Batch,
        steps: Vec<String>,
    ) -> Result<(), FirewallError> {
        let table = self.table.clone();
        socket
            .commit(batch, |index| match index.checked_sub(1) {
                Some(i) => steps
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("request {index}")),
                None => format!("the transaction on table ip {table}"),
            })
            .map_err(FirewallError::from)
    }

    /// One transaction: the `ip` table and chains, the shared jumps and
    /// `rules` (each replacing any rule with the same comment), after
    /// deleting the rules `installed` that carry one of `replaced`.
    fn replace(
        &self,
        socket: &mut NfSocket,
        installed: &[InstalledRule],
        replaced: &[String],
        rules: &[NftRule],
        with_skeleton: bool,
    ) -> Result<(), FirewallError> {
        let mut batch = socket.batch();
        let mut steps = Vec::new();
        self.push_replace(
            &mut batch,
            &mut steps,
            NFPROTO_IPV4,
            installed,
            replaced,
            rules,
            with_skeleton,
        );
        self.commit(socket, batch, steps)
    }

    /// [`Self::replace`]'s requests for the table of `family`, added to
    /// `batch`.
    #[allow(clippy::too_many_arguments)]
    fn push_replace(
        &self,
        batch: &mut Batch,
        steps: &mut Vec<String>,
        family: u8,
        installed: &[InstalledRule],
        replaced: &[String],
        rules: &[NftRule],
        with_skeleton: bool,
    ) {
        if with_skeleton {
            self.push_skeleton(batch, family, steps);
        }
        for rule in installed {
            if rule
                .comment
                .as_ref()
                .is_some_and(|c| replaced.iter().any(|r| r == c))
            {
                self.push_delete(batch, rule, steps);
            }
        }
        for rule in rules {
            self.push_rule(batch, family, rule, steps);
        }
    }

    /// The network's IPv4 rules and, for an IPv6 network, its IPv6 ones:
    /// one transaction.
    fn setup_locked(
        &self,
        socket: &mut NfSocket,
        network: &NetworkConfig,
    ) -> Result<(), FirewallError> {
        let installed = self.list(socket, NFPROTO_IPV4)?;
        let mut rules = shared_rules();
        rules.extend(network_rules(network));
        let own = network_comment(&network.name);
        let replaced = [SHARED_COMMENT.to_owned(), own.clone()];
        let mut batch = socket.batch();
        let mut steps = Vec::new();
        self.push_replace(
            &mut batch,
            &mut steps,
            NFPROTO_IPV4,
            &installed,
            &replaced,
            &rules,
            true,
        );
        let rules6 = network_rules6(network);
        if !rules6.is_empty() {
            let installed6 = self.list(socket, NFPROTO_IPV6)?;
            self.push_replace(
                &mut batch,
                &mut steps,
                NFPROTO_IPV6,
                &installed6,
                std::slice::from_ref(&own),
                &rules6,
                true,
            );
        }
        self.commit(socket, batch, steps)
    }

    /// Delete the rules carrying one of `comments`; the whole table when
    /// nothing but the shared jumps would be left and `drop_empty_table`.
    /// Only then (a network's rules, not a container's ports) is berth's
    /// `ip6` table looked at too: its rules are networks' only, and it
    /// goes when none is left.
    fn remove_tagged(
        &self,
        comments: &[String],
        drop_empty_table: bool,
    ) -> Result<(), FirewallError> {
        let mut socket = NfSocket::open().map_err(FirewallError::from)?;
        let result = self.remove_tagged_on(&mut socket, comments, drop_empty_table);
        socket.close();
        result
    }

    fn remove_tagged_on(
        &self,
        socket: &mut NfSocket,
        comments: &[String],
        drop_empty_table: bool,
    ) -> Result<(), FirewallError> {
        // A rule or table deleted by someone else between the dumps and
        // the transaction fails it as a whole (ENOENT): list again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let installed = self.list(socket, NFPROTO_IPV4)?;
            let installed6 = if drop_empty_table {
                self.list(socket, NFPROTO_IPV6)?
            } else {
                Vec::new()
            };
            let doomed = |rule: &InstalledRule| {
                rule.comment
                    .as_ref()
                    .is_some_and(|c| comments.iter().any(|w| w == c))
            };
            let left = installed
                .iter()
                .filter(|r| !doomed(r) && r.comment.as_deref() != Some(SHARED_COMMENT))
                .count();
            let mut batch = socket.batch();
            let mut steps = Vec::new();
            // Also when no rule is listed: a table left with empty chains.
            let deleting_table = drop_empty_table && left == 0;
            // With IPv6 requests in the batch too, a missing `ip` table
            // must not fail them (ENOENT): ask whether there is one.
            let ipv4_table_gone = deleting_table
                && installed.is_empty()
                && !self.table_exists_on(socket, NFPROTO_IPV4)?;
            if deleting_table {
                if !ipv4_table_gone {
                    self.push_delete_table(&mut batch, NFPROTO_IPV4, &mut steps);
                }
            } else {
                for rule in installed.iter().filter(|r| doomed(r)) {
                    self.push_delete(&mut batch, rule, &mut steps);
                }
            }
            if drop_empty_table {
                if installed6.iter().all(doomed) {
                    // Also a table left with empty chains; none to delete
                    // when it does not exist.
                    if !installed6.is_empty() || self.table_exists_on(socket, NFPROTO_IPV6)? {
                        self.push_delete_table(&mut batch, NFPROTO_IPV6, &mut steps);
                    }
                } else {
                    for rule in installed6.iter().filter(|r| doomed(r)) {
                        self.push_delete(&mut batch, rule, &mut steps);
                    }
                }
            }
            match self.commit(socket, batch, steps) {
                Err(FirewallError::Nftables(e))
                    if attempts < 3 && e.errno() == Some(nix::errno::Errno::ENOENT) => {}
                result => return result,
            }
        }
    }

    /// Drop berth's `ip` table if it holds nothing but the shared jumps
    /// (or nothing at all), and its `ip6` table if it holds no rule.
    pub fn remove_table_if_unused(&self) -> Result<(), FirewallError> {
        let _lock = self.lock()?;
        self.remove_tagged(&[], true)
    }
}

fn installed_rule(object: &Object, family: u8) -> Option<InstalledRule> {
    Some(InstalledRule {
        family,
        chain: object.get_str(attr::RULE_CHAIN)?.to_owned(),
        handle: object.get_u64(attr::RULE_HANDLE)?,
        comment: object
            .get(attr::RULE_USERDATA)
            .and_then(userdata_comment)
            .map(str::to_owned),
    })
}

impl Firewall for NftablesFirewall {
    fn setup_network(&self, network: &NetworkConfig) -> Result<(), FirewallError> {
        let _lock = self.lock()?;
        let mut socket = NfSocket::open().map_err(FirewallError::from)?;
        let result = self.setup_locked(&mut socket, network);
        socket.close();
        result
    }

    fn teardown_network(&self, network: &NetworkConfig) -> Result<(), TeardownErrors> {
        let result = self
            .lock()
            .and_then(|_lock| self.remove_tagged(&[network_comment(&network.name)], true));
        result.map_err(|e| ErrorList(vec![e]))
    }

    fn add_port_forwards(
        &self,
        forwards: &[PortForward],
        absent: bool,
    ) -> Result<(), FirewallError> {
        if forwards.is_empty() {
            return Ok(());
        }
        let rules: Vec<NftRule> = forwards.iter().flat_map(port_forward_rules).collect();
        let comments: Vec<String> = forwards.iter().map(port_comment).collect();
        let _lock = self.lock()?;
        let mut socket = NfSocket::open().map_err(FirewallError::from)?;
        // Nothing to replace when the caller knows none can exist: one
        // transaction and no dump.
        let installed = if absent {
            Vec::new()
        } else {
            self.list(&mut socket, NFPROTO_IPV4)?
        };
        let result = match self.replace(&mut socket, &installed, &comments, &rules, false) {
            // No table or chain (flushed by hand): make them and retry,
            // now checking for leftovers.
            Err(FirewallError::Nftables(e)) if e.errno() == Some(nix::errno::Errno::ENOENT) => {
                self.list(&mut socket, NFPROTO_IPV4).and_then(|installed| {
                    self.replace(&mut socket, &installed, &comments, &rules, true)
                })
            }
            result => result,
        };
        socket.close();
        result
    }

    fn remove_port_forwards(&self, forwards: &[PortForward]) -> Result<(), TeardownErrors> {
        if forwards.is_empty() {
            return Ok(());
        }
        let comments: Vec<String> = forwards.iter().map(port_comment).collect();
        self.lock()
            .and_then(|_lock| self.remove_tagged(&comments, false))
            .map_err(|e| ErrorList(vec![e]))
    }
}

impl From<NfError> for FirewallError {
    fn from(error: NfError) -> Self {
        FirewallError::Nftables(error)
    }
}
