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
    attr, Attrs, Batch, MsgType, NfError, NfSocket, Object, NFPROTO_IPV4, NLM_F_APPEND,
    NLM_F_CREATE,
};
use crate::nftables_rules::chain_attrs;
pub use crate::nftables_rules::{
    comment_userdata, describe, network_comment, network_rules, port_comment, port_forward_rules,
    rule_attrs, shared_rules, userdata_comment, ChainSpec, Expr, Field, Hook, NftRule, Verdict,
    CHAINS, DNAT_CHAIN, SHARED_COMMENT,
};
use crate::persist::{self, FileLock};

/// A rule found in the kernel: where, its handle, its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRule {
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

    /// Every rule of berth's table (none when it does not exist).
    pub fn installed_rules(&self) -> Result<Vec<InstalledRule>, FirewallError> {
        let mut socket = NfSocket::open().map_err(FirewallError::from)?;
        self.list(&mut socket)
    }

    /// Whether berth's table exists.
    pub fn table_exists(&self) -> Result<bool, FirewallError> {
        let mut socket = NfSocket::open().map_err(FirewallError::from)?;
        let tables = socket
            .dump(MsgType::GetTable, NFPROTO_IPV4, &Attrs::new())
            .map_err(FirewallError::from)?;
        Ok(tables
            .iter()
            .any(|t| t.get_str(attr::TABLE_NAME) == Some(self.table.as_str())))
    }

    fn list(&self, socket: &mut NfSocket) -> Result<Vec<InstalledRule>, FirewallError> {
        let mut filter = Attrs::new();
        filter.str(attr::RULE_TABLE, &self.table);
        let objects = socket
            .dump(MsgType::GetRule, NFPROTO_IPV4, &filter)
            .map_err(FirewallError::from)?;
        Ok(objects
            .iter()
            // Older kernels ignore the filter: keep our table's only.
            .filter(|o| o.get_str(attr::RULE_TABLE) == Some(self.table.as_str()))
            .filter_map(installed_rule)
            .collect())
    }

    /// Add the table and chains (kept when they exist) to `batch`.
    fn push_skeleton(&self, batch: &mut Batch, steps: &mut Vec<String>) {
        let mut table = Attrs::new();
        table.str(attr::TABLE_NAME, &self.table);
        batch.push(MsgType::NewTable, NFPROTO_IPV4, NLM_F_CREATE, &table);
        steps.push(format!("table ip {}", self.table));
        for chain in &CHAINS {
            batch.push(
                MsgType::NewChain,
                NFPROTO_IPV4,
                NLM_F_CREATE,
                &chain_attrs(&self.table, chain),
            );
            steps.push(format!("chain {}", chain.name));
        }
    }

    fn push_rule(&self, batch: &mut Batch, rule: &NftRule, steps: &mut Vec<String>) {
        batch.push(
            MsgType::NewRule,
            NFPROTO_IPV4,
            NLM_F_CREATE | NLM_F_APPEND,
            &rule_attrs(&self.table, rule),
        );
        steps.push(format!("rule {}", describe(rule)));
    }

    fn push_delete(&self, batch: &mut Batch, rule: &InstalledRule, steps: &mut Vec<String>) {
        let mut attrs = Attrs::new();
        attrs
            .str(attr::RULE_TABLE, &self.table)
            .str(attr::RULE_CHAIN, &rule.chain)
            .u64(attr::RULE_HANDLE, rule.handle);
        batch.push(MsgType::DelRule, NFPROTO_IPV4, 0, &attrs);
        steps.push(format!(
            "deleting rule {} of chain {} ({})",
            rule.handle,
            rule.chain,
            rule.comment.as_deref().unwrap_or("no comment")
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

    /// One transaction: the table and chains, the shared jumps and
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
        if with_skeleton {
            self.push_skeleton(&mut batch, &mut steps);
        }
        for rule in installed {
            if rule
                .comment
                .as_ref()
                .is_some_and(|c| replaced.iter().any(|r| r == c))
            {
                self.push_delete(&mut batch, rule, &mut steps);
            }
        }
        for rule in rules {
            self.push_rule(&mut batch, rule, &mut steps);
        }
        self.commit(socket, batch, steps)
    }

    fn setup_locked(
        &self,
        socket: &mut NfSocket,
        network: &NetworkConfig,
    ) -> Result<(), FirewallError> {
        let installed = self.list(socket)?;
        let mut rules = shared_rules();
        rules.extend(network_rules(network));
        let replaced = [SHARED_COMMENT.to_owned(), network_comment(&network.name)];
        self.replace(socket, &installed, &replaced, &rules, true)
    }

    /// Delete the rules carrying one of `comments`; the whole table when
    /// nothing but the shared jumps would be left and `drop_empty_table`.
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
        // A rule deleted by someone else between the dump and the
        // transaction fails it as a whole (ENOENT): list again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let installed = self.list(socket)?;
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
            // Also when no rule is listed: a table left with empty chains
            // (or none at all, then ENOENT says it is gone already).
            let deleting_table = drop_empty_table && left == 0;
            if deleting_table {
                let mut table = Attrs::new();
                table.str(attr::TABLE_NAME, &self.table);
                batch.push(MsgType::DelTable, NFPROTO_IPV4, 0, &table);
                steps.push(format!("deleting table ip {}", self.table));
            } else {
                for rule in installed.iter().filter(|r| doomed(r)) {
                    self.push_delete(&mut batch, rule, &mut steps);
                }
            }
            match self.commit(socket, batch, steps) {
                Err(FirewallError::Nftables(e))
                    if e.errno() == Some(nix::errno::Errno::ENOENT)
                        && deleting_table
                        && installed.is_empty() =>
                {
                    return Ok(())
                }
                Err(FirewallError::Nftables(e))
                    if attempts < 3 && e.errno() == Some(nix::errno::Errno::ENOENT) => {}
                result => return result,
            }
        }
    }

    /// Drop berth's whole table if it holds nothing but the shared jumps
    /// (or nothing at all).
    pub fn remove_table_if_unused(&self) -> Result<(), FirewallError> {
        let _lock = self.lock()?;
        self.remove_tagged(&[], true)
    }
}

fn installed_rule(object: &Object) -> Option<InstalledRule> {
    Some(InstalledRule {
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

    fn add_port_forward(&self, forward: &PortForward) -> Result<(), FirewallError> {
        self.add_port_forwards(std::slice::from_ref(forward), false)
    }

    fn remove_port_forward(&self, forward: &PortForward) -> Result<(), TeardownErrors> {
        self.remove_port_forwards(std::slice::from_ref(forward))
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
            self.list(&mut socket)?
        };
        let result = match self.replace(&mut socket, &installed, &comments, &rules, false) {
            // No table or chain (flushed by hand): make them and retry,
            // now checking for leftovers.
            Err(FirewallError::Nftables(e)) if e.errno() == Some(nix::errno::Errno::ENOENT) => {
                self.list(&mut socket).and_then(|installed| {
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
