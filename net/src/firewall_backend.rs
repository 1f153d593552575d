//! Which firewall berth programs, and living with the others.
//!
//! nftables over netlink ([`NftablesFirewall`]) when the kernel has
//! nf_tables, iptables ([`IptablesFirewall`]) otherwise or when asked
//! for; [`HostFirewall`] is either, and cleans up after both: a host
//! whose berth switched backend (a setting changed, an upgrade from a
//! berth that only had iptables) still loses every rule of a removed
//! container or network.
//!
//! - Network teardown (rare) removes the network's rules, IPv4 and IPv6,
//!   from nf_tables (tables `ip` and `ip6`), and from iptables and
//!   ip6tables whenever they may hold some: the iptables backend was in
//!   use, its marker file is there, or iptables' nf_tables form shows
//!   berth's IPv4 DNAT or IPv6 POSTROUTING chain.
//! - A container's ports go from the backend in use, and from the other
//!   one only when it may hold some: iptables when berth recorded using
//!   it (a marker file in the state directory) or when its nf_tables
//!   form shows berth's chain; nf_tables whenever it is there (one
//!   netlink dump).
//!
//! Coexistence: every nf_tables base chain sees each packet, so an
//! accept in berth's `forward` chain does not get a packet past
//! iptables' FORWARD chain when that has policy DROP (docker sets it).
//! As docker's and netavark's rules live in iptables there, berth does
//! what they do for their own bridges: when setting up a network with the
//! nftables backend while iptables' FORWARD policy is DROP, it also
//! inserts the network's accepts into that chain through iptables
//! (replies to the bridge, anything from it, and DNATed connections to
//! it, i.e. published ports), tagged `berth:<network>` and removed with
//! the network. This costs an `iptables` run at network setup only, and
//! is skipped when no iptables is installed (then nothing can hold such a
//! policy but another nftables table, which berth cannot override either:
//! see the README). A DROP policy set after the network was set up is
//! not noticed until the network is set up again. The same for an IPv6
//! network and ip6tables' FORWARD policy (docker sets that too): the
//! replies to the bridge and anything from it are accepted there (no
//! published ports over IPv6).

use std::path::{Path, PathBuf};

use crate::errors::ErrorList;
use crate::firewall::{
    Firewall, FirewallError, IptablesFirewall, Position, Rule, Table, TeardownErrors,
    DNAT_CHAIN as IPTABLES_DNAT_CHAIN, POSTROUTING_CHAIN as IPTABLES_POSTROUTING_CHAIN,
};
use crate::ipam::PortForward;
use crate::network::NetworkConfig;
use crate::nftables::NftablesFirewall;
use crate::nftables_msg::{attr, Attrs, MsgType, NfSocket, NFPROTO_IPV4, NFPROTO_IPV6};

/// The environment variable that picks the backend.
pub const FIREWALL_ENV: &str = "BERTH_FIREWALL";

/// A firewall backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallKind {
    Nftables,
    Iptables,
}

impl FirewallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FirewallKind::Nftables => "nftables",
            FirewallKind::Iptables => "iptables",
        }
    }

    /// `requested` (`iptables` or `nftables`), or when `None` or empty,
    /// nftables if the kernel has it and iptables otherwise.
    pub fn choose(requested: Option<&str>) -> Result<Self, FirewallError> {
        match requested.map(str::trim) {
            Some("nftables") => Ok(FirewallKind::Nftables),
            Some("iptables") => Ok(FirewallKind::Iptables),
            None | Some("") => Ok(if NftablesFirewall::available() {
                FirewallKind::Nftables
            } else {
                FirewallKind::Iptables
            }),
            Some(other) => Err(FirewallError::UnknownBackend {
                name: other.to_owned(),
            }),
        }
    }
}

/// The firewall of a state directory: one backend in use, the other
/// cleaned up after (see the module docs).
#[derive(Debug, Clone)]
pub struct HostFirewall {
    kind: FirewallKind,
    nftables: NftablesFirewall,
    iptables: IptablesFirewall,
    state_dir: PathBuf,
}

/// The marker file of a state directory whose berth used iptables.
const IPTABLES_MARKER: &str = "firewall-iptables-used";

impl HostFirewall {
    /// `kind` in use; nf_tables rules in table `ip <table>`, iptables
    /// from `$PATH`; lock and marker files in `state_dir` (e.g.
    /// `<root>/networks`).
    pub fn new(kind: FirewallKind, table: &str, state_dir: &Path) -> Self {
        HostFirewall {
            kind,
            nftables: NftablesFirewall::new(table, state_dir),
            iptables: IptablesFirewall::new(state_dir),
            state_dir: state_dir.to_owned(),
        }
    }

    pub fn kind(&self) -> FirewallKind {
        self.kind
    }

    pub fn nftables(&self) -> &NftablesFirewall {
        &self.nftables
    }

    pub fn iptables(&self) -> &IptablesFirewall {
        &self.iptables
    }

    fn marker(&self) -> PathBuf {
        self.state_dir.join(IPTABLES_MARKER)
    }

    /// Record that iptables is about to get rules (before it does).
    fn mark_iptables_used(&self) -> Result<(), FirewallError> {
        let path = self.marker();
        if path.exists() {
            return Ok(());
        }
        crate::persist::ensure_dir(&self.state_dir)
            .and_then(|()| std::fs::write(&path, b""))
            .map_err(|source| FirewallError::Lock { path, source })
    }

    /// Whether iptables may hold berth's rules though nftables is in use.
    fn iptables_may_hold_rules(&self) -> bool {
        self.marker().exists()
            || iptables_nft_chain_exists(NFPROTO_IPV4, "nat", IPTABLES_DNAT_CHAIN)
            || iptables_nft_chain_exists(NFPROTO_IPV6, "nat", IPTABLES_POSTROUTING_CHAIN)
    }

    /// When iptables' FORWARD policy is DROP, its accepts for `network`;
    /// the same in ip6tables for an IPv6 network.
    fn forward_drop_accepts(&self, network: &NetworkConfig) -> Result<(), FirewallError> {
        accept_under_drop_policy(&self.iptables, &forward_accepts(network))?;
        let accepts6 = forward_accepts6(network);
        if accepts6.is_empty() {
            return Ok(());
        }
        accept_under_drop_policy(&self.iptables.ipv6_sibling(), &accepts6)
    }

    /// Remove what [`Self::forward_drop_accepts`] may have added; a
    /// missing iptables or ip6tables program counts as nothing to remove.
    fn remove_forward_drop_accepts(&self, network: &NetworkConfig) -> Result<(), TeardownErrors> {
        let accepts6 = forward_accepts6(network);
        let six = if accepts6.is_empty() {
            Ok(())
        } else {
            ignore_missing_program(self.iptables.ipv6_sibling().remove_rules(&accepts6))
        };
        merge([
            ignore_missing_program(self.iptables.remove_rules(&forward_accepts(network))),
            six,
        ])
    }
}

/// Insert `accepts` with `iptables` (or its ip6tables sibling) when its
/// FORWARD policy is DROP.
fn accept_under_drop_policy(
    iptables: &IptablesFirewall,
    accepts: &[Rule],
) -> Result<(), FirewallError> {
    match iptables.policy(Table::Filter, "FORWARD") {
        // No marker: these go with the network, whose teardown always
        // looks for them; per-container work stays off iptables.
        Ok(Some(policy)) if policy == "DROP" => iptables.ensure_rules(accepts),
        Ok(_) => Ok(()),
        // No iptables: nothing of it can drop packets.
        Err(FirewallError::Spawn { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The accepts berth inserts into ip6tables' FORWARD chain for an IPv6
/// network when that chain's policy is DROP: those of [`forward_accepts`]
/// but for published ports (IPv4 only); none without an IPv6 subnet.
pub fn forward_accepts6(network: &NetworkConfig) -> Vec<Rule> {
    if network.ipv6_subnet.is_none() {
        return Vec::new();
    }
    forward_accepts(network)
        .into_iter()
        .filter(|rule| !rule.spec.iter().any(|word| word == "DNAT"))
        .map(|rule| Rule {
            family: crate::firewall::Family::Ipv6,
            ..rule
        })
        .collect()
}

/// The accepts berth inserts into iptables' FORWARD chain for a network
/// when that chain's policy is DROP (see the module docs).
pub fn forward_accepts(network: &NetworkConfig) -> Vec<Rule> {
    let bridge = network.bridge.as_str();
    let tag = format!("berth:{}", network.name);
    let rule = |matches: &[&str]| {
        let mut spec: Vec<String> = matches.iter().map(|s| (*s).to_owned()).collect();
        spec.extend(["-m", "comment", "--comment", &tag, "-j", "ACCEPT"].map(str::to_owned));
        Rule {
            table: Table::Filter,
            chain: "FORWARD".to_owned(),
            position: Position::Insert,
            spec,
            family: crate::firewall::Family::Ipv4,
        }
    };
    if network.internal {
        return vec![rule(&["-i", bridge, "-o", bridge])];
    }
    vec![
        rule(&[
            "-o",
            bridge,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
        ]),
        rule(&["-i", bridge]),
        rule(&["-o", bridge, "-m", "conntrack", "--ctstate", "DNAT"]),
    ]
}

/// Whether iptables' (or ip6tables') nf_tables form has `chain` in table
/// `ip <table>` (`ip6 <table>` for [`NFPROTO_IPV6`]), as iptables-nft
/// keeps its chains; false when it cannot tell.
fn iptables_nft_chain_exists(family: u8, table: &str, chain: &str) -> bool {
    let Ok(mut socket) = NfSocket::open() else {
        return false;
    };
    let mut filter = Attrs::new();
    filter.str(attr::CHAIN_TABLE, table);
    socket
        .dump(MsgType::GetChain, family, &filter)
        .map(|chains| {
            chains.iter().any(|c| {
                c.get_str(attr::CHAIN_TABLE) == Some(table)
                    && c.get_str(attr::CHAIN_NAME) == Some(chain)
            })
        })
        .unwrap_or(false)
}

/// `Err` of a missing iptables program counts as nothing to clean.
fn ignore_missing_program(result: Result<(), TeardownErrors>) -> Result<(), TeardownErrors> {
    match result {
        Err(errors) => {
            let real: Vec<FirewallError> = errors
                .0
                .into_iter()
                .filter(|e| !matches!(e, FirewallError::Spawn { .. }))
                .collect();
            ErrorList(real).into_result()
        }
        ok => ok,
    }
}

fn merge(
    results: impl IntoIterator<Item = Result<(), TeardownErrors>>,
) -> Result<(), TeardownErrors> {
    let mut errors = Vec::new();
    for result in results {
        if let Err(e) = result {
            errors.extend(e.0);
        }
    }
    ErrorList(errors).into_result()
}

impl Firewall for HostFirewall {
    fn setup_network(&self, network: &NetworkConfig) -> Result<(), FirewallError> {
        match self.kind {
            FirewallKind::Nftables => {
                self.nftables.setup_network(network)?;
                self.forward_drop_accepts(network)
            }
            FirewallKind::Iptables => {
                self.mark_iptables_used()?;
                self.iptables.setup_network(network)
            }
        }
    }

    fn teardown_network(&self, network: &NetworkConfig) -> Result<(), TeardownErrors> {
        let iptables_too = self.kind == FirewallKind::Iptables || self.iptables_may_hold_rules();
        let nftables = if self.kind == FirewallKind::Nftables || NftablesFirewall::available() {
            self.nftables.teardown_network(network)
        } else {
            Ok(())
        };
        let iptables = if iptables_too {
            let result = merge([
                self.iptables.teardown_network(network),
                self.iptables.remove_rules(&forward_accepts(network)),
                self.iptables
                    .ipv6_sibling()
                    .remove_rules(&forward_accepts6(network)),
            ]);
            let result = if self.kind == FirewallKind::Iptables {
                result
            } else {
                ignore_missing_program(result)
            };
            // The marker goes with berth's last iptables chain.
            if result.is_ok() && !self.iptables.has_chains().unwrap_or(true) {
                let _ = std::fs::remove_file(self.marker());
            }
            result
        } else {
            // Only the FORWARD accepts of a DROP policy, if any.
            self.remove_forward_drop_accepts(network)
        };
        merge([nftables, iptables])
    }

    fn add_port_forwards(
        &self,
        forwards: &[PortForward],
        absent: bool,
    ) -> Result<(), FirewallError> {
        match self.kind {
            FirewallKind::Nftables => self.nftables.add_port_forwards(forwards, absent),
            FirewallKind::Iptables => {
                if !forwards.is_empty() {
                    self.mark_iptables_used()?;
                }
                self.iptables.add_port_forwards(forwards, absent)
            }
        }
    }

    fn remove_port_forwards(&self, forwards: &[PortForward]) -> Result<(), TeardownErrors> {
        if forwards.is_empty() {
            return Ok(());
        }
        match self.kind {
            FirewallKind::Nftables => {
                // Asked first: a netfilter socket closed after berth's
                // deletion would wait for the kernel (see
                // `NfSocket::close`).
                let iptables_too = self.iptables_may_hold_rules();
                let own = self.nftables.remove_port_forwards(forwards);
                let other = if iptables_too {
                    ignore_missing_program(self.iptables.remove_port_forwards(forwards))
                } else {
                    Ok(())
                };
                merge([own, other])
            }
            FirewallKind::Iptables => {
                let own = self.iptables.remove_port_forwards(forwards);
                let other = if NftablesFirewall::available() {
                    self.nftables.remove_port_forwards(forwards)
                } else {
                    Ok(())
                };
                merge([own, other])
            }
        }
    }
}

impl crate::BridgeDriver<HostFirewall> {
    /// The driver for a state directory (e.g. `<root>/networks`) with
    /// `firewall`; otherwise as [`crate::BridgeDriver::new`].
    pub fn with_firewall(networks_dir: &Path, firewall: HostFirewall) -> Self {
        crate::BridgeDriver::with_parts(
            crate::Ipam::new(networks_dir.join("ipam")),
            firewall,
            PathBuf::from("/proc/sys"),
        )
        .owned_by(crate::bridge_owner_alias(networks_dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn backend_names_parse_and_unknown_ones_are_refused() {
        assert_eq!(
            FirewallKind::choose(Some("iptables")).unwrap(),
            FirewallKind::Iptables
        );
        assert_eq!(
            FirewallKind::choose(Some("nftables")).unwrap(),
            FirewallKind::Nftables
        );
        let err = FirewallKind::choose(Some("pf")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown firewall backend \"pf\" (use iptables or nftables)"
        );
        assert_eq!(FirewallKind::Nftables.as_str(), "nftables");
    }

    #[test]
    fn forward_accepts_cover_replies_outbound_and_published_ports() {
        let mut network = NetworkConfig {
            name: "web".into(),
            id: "0123456789ab".repeat(5) + "cdef",
            driver: "bridge".into(),
            subnet: "10.10.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 10, 0, 1),
            bridge: "br-web".into(),
            internal: false,
            labels: Default::default(),
            ip_range: None,
            ipv6_subnet: None,
            ipv6_gateway: None,
        };
        let lines = |rules: Vec<Rule>| -> Vec<String> {
            rules
                .iter()
                .map(|r| r.args(crate::firewall::RuleOp::Add).join(" "))
                .collect()
        };
        assert_eq!(
            lines(forward_accepts(&network)),
            [
                "-w -t filter -I FORWARD 1 -o br-web -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment berth:web -j ACCEPT",
                "-w -t filter -I FORWARD 1 -i br-web -m comment --comment berth:web -j ACCEPT",
                "-w -t filter -I FORWARD 1 -o br-web -m conntrack --ctstate DNAT -m comment --comment berth:web -j ACCEPT",
            ]
        );
        network.internal = true;
        assert_eq!(
            lines(forward_accepts(&network)),
            ["-w -t filter -I FORWARD 1 -i br-web -o br-web -m comment --comment berth:web -j ACCEPT"]
        );
    }

    #[test]
    fn ipv6_forward_accepts_are_for_ipv6_networks_and_have_no_dnat() {
        let mut network = NetworkConfig {
            name: "six".into(),
            id: "0123456789ab".repeat(5) + "cdef",
            driver: "bridge".into(),
            subnet: "10.10.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 10, 0, 1),
            bridge: "br-six".into(),
            internal: false,
            labels: Default::default(),
            ip_range: None,
            ipv6_subnet: None,
            ipv6_gateway: None,
        };
        assert!(forward_accepts6(&network).is_empty());
        network.ipv6_subnet = Some("fd00:1::/64".parse().unwrap());
        let accepts = forward_accepts6(&network);
        assert!(accepts
            .iter()
            .all(|r| r.family == crate::firewall::Family::Ipv6));
        let lines: Vec<String> = accepts
            .iter()
            .map(|r| r.args(crate::firewall::RuleOp::Add).join(" "))
            .collect();
        assert_eq!(
            lines,
            [
                "-w -t filter -I FORWARD 1 -o br-six -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment berth:six -j ACCEPT",
                "-w -t filter -I FORWARD 1 -i br-six -m comment --comment berth:six -j ACCEPT",
            ]
        );
        network.internal = true;
        assert_eq!(forward_accepts6(&network).len(), 1);
    }

    #[test]
    fn the_iptables_marker_is_written_once_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("networks");
        let firewall = HostFirewall::new(FirewallKind::Iptables, "berth", &state);
        assert!(!firewall.marker().exists());
        firewall.mark_iptables_used().unwrap();
        firewall.mark_iptables_used().unwrap();
        assert!(state.join(IPTABLES_MARKER).is_file());
        // Nothing to withdraw: no backend is asked.
        assert!(firewall.remove_port_forwards(&[]).is_ok());
    }
}
