//! The bridge driver: everything a container's network needs, composed
//! from netlink, IPAM and the firewall.

use crate::errors::ErrorList;
use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use nix::sched::{setns, CloneFlags};
use serde::{Deserialize, Serialize};

use crate::firewall::{
    enable_ip_forward, set_route_localnet, Firewall, FirewallError, IptablesFirewall,
    TeardownErrors,
};
use crate::ipam::{Ipam, IpamError, PortForward};
use crate::netlink::{
    link_index_unlocked, MacAddr, Netlink, NetlinkError, PeerNetns, VethPeer, LOOPBACK_IFINDEX,
    MAX_IFNAME_LEN,
};
use crate::network::NetworkConfig;
use crate::ports::{hold_host_port, HeldPort, PortMapping, PortProbe};

/// The container's end of its veth pair.
pub const CONTAINER_IFNAME: &str = "eth0";

/// Set up networks and connect containers to them. Teardown and detach
/// keep going after an error and return all of them.
pub trait NetworkDriver {
    /// Make the network usable (idempotent).
    fn setup(&self, network: &NetworkConfig) -> Result<SetupReport, DriverError>;
    /// Remove what [`NetworkDriver::setup`] made; refused while a container
    /// holds an address in the network.
    fn teardown(&self, network: &NetworkConfig) -> Result<(), DriverErrors>;
    /// Connect the container whose network namespace is `netns` and publish
    /// `ports`. On failure nothing is left behind.
    fn attach(
        &self,
        network: &NetworkConfig,
        container_id: &str,
        netns: BorrowedFd<'_>,
        ports: &[PortMapping],
    ) -> Result<Endpoint, DriverError>;
    /// Undo [`NetworkDriver::attach`] from the container id alone:
    /// idempotent, and works after a crash at any point of `attach` or
    /// after the container's namespace is gone.
    fn detach(&self, container_id: &str) -> Result<DetachReport, DriverErrors>;
}

/// A container's connection to a network, for the container record and
/// `inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub container_id: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: MacAddr,
    pub bridge: String,
    /// The host end of the veth pair.
    pub host_veth: String,
    /// The container end (`eth0`).
    pub container_ifname: String,
    pub ports: Vec<PortMapping>,
    /// Its IPv6 address on a network with IPv6 (the prefix and gateway
    /// are the network's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<std::net::Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_prefix_len: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<std::net::Ipv6Addr>,
}

impl Endpoint {
    /// The endpoint of `container_id` at `ip` on `network`: a veth pair
    /// `host_veth` (on the bridge) / `container_ifname`, with `mac` or
    /// else the MAC derived from the address.
    fn on(
        network: &NetworkConfig,
        container_id: &str,
        ip: Ipv4Addr,
        mac: Option<MacAddr>,
        host_veth: String,
        container_ifname: String,
        ports: Vec<PortMapping>,
    ) -> Self {
        Endpoint {
            network: network.name.clone(),
            container_id: container_id.to_owned(),
            ip,
            prefix_len: network.subnet.prefix_len(),
            gateway: network.gateway,
            mac: mac.unwrap_or_else(|| MacAddr::from_ipv4(ip)),
            bridge: network.bridge.clone(),
            host_veth,
            container_ifname,
            ports,
            ipv6: None,
            ipv6_prefix_len: network.ipv6_subnet.map(|subnet| subnet.prefix_len()),
            ipv6_gateway: network.ipv6_gateway,
        }
    }

    /// With its IPv6 address.
    fn with_ipv6(mut self, ipv6: Option<std::net::Ipv6Addr>) -> Self {
        self.ipv6 = ipv6;
        if ipv6.is_none() {
            self.ipv6_prefix_len = None;
            self.ipv6_gateway = None;
        }
        self
    }
}

/// What a container asks of its main network besides an address (see
/// [`BridgeDriver::attach_holding`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachRequest<'a> {
    /// Ports to publish.
    pub ports: &'a [PortMapping],
    /// docker's `--mac-address`; `None`: derived from the address.
    pub mac: Option<MacAddr>,
    /// Bind the embedded DNS server's socket (127.0.0.11:53, see
    /// [`crate::dns`]) inside the container's namespace, in the same visit
    /// that sets up its interfaces.
    pub embedded_dns: bool,
}

/// A container attached to its main network ([`BridgeDriver::attach_holding`]).
#[derive(Debug)]
pub struct Attachment {
    pub endpoint: Endpoint,
    /// The published host ports, bound: the caller holds them while the
    /// container runs, so that host processes cannot bind them.
    pub held_ports: Vec<HeldPort>,
    /// With [`AttachRequest::embedded_dns`]: the bound UDP socket of the
    /// embedded DNS server, inside the container's namespace.
    pub dns_socket: Option<UdpSocket>,
}

/// What [`NetworkDriver::setup`] changed on the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetupReport {
    /// net.ipv4.ip_forward was 0 and is now 1: tell the user.
    pub ip_forward_enabled: bool,
    /// net.ipv6.conf.all.forwarding was 0 and is now 1 (a network with
    /// IPv6 that reaches outside).
    pub ipv6_forward_enabled: bool,
    pub bridge_created: bool,
}

/// What [`NetworkDriver::detach`] cleaned up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetachReport {
    /// (network, address) leases given back.
    pub addresses: Vec<(String, Ipv4Addr)>,
    /// Published ports withdrawn.
    pub ports: Vec<PortForward>,
    /// Whether the host veth was still there (and is gone now, or going).
    pub veth_deleted: bool,
    /// The container's namespace was being destroyed, so the kernel
    /// deletes the pair with it, asynchronously (see
    /// [`NetworkDriver::detach`] of [`BridgeDriver`]).
    pub veth_left_to_kernel: bool,
}

/// A driver failure.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
    #[error("cannot enable IPv4 forwarding: {source}")]
    IpForward {
        #[source]
        source: io::Error,
    },
    #[error("cannot enable IPv6 forwarding: {source}")]
    Ipv6Forward {
        #[source]
        source: io::Error,
    },
    #[error("cannot let bridge {bridge} carry localhost connections (route_localnet): {source}")]
    RouteLocalnet {
        bridge: String,
        #[source]
        source: io::Error,
    },
    #[error("subnet {subnet} of network {network} overlaps {used}, which the host already uses (an address or route of another interface)")]
    SubnetInUseOnHost {
        network: String,
        subnet: Ipv4Net,
        used: Ipv4Net,
    },
    #[error("cannot turn IPv6 off on interface {interface} of an IPv4-only network: {source}")]
    Ipv6Off {
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bridge {bridge} belongs to another berth state root ({owner}); refusing to use or remove it")]
    BridgeOwnedElsewhere { bridge: String, owner: String },
    #[error("container id {id:?} cannot name a network interface (it needs letters or digits)")]
    InvalidContainerId { id: String },
    #[error("{error}; cleaning up also failed: {cleanup}")]
    CleanupFailed {
        #[source]
        error: Box<DriverError>,
        cleanup: DriverErrors,
    },
}

/// Every error a teardown or detach met; it did all it could anyway.
pub type DriverErrors = crate::errors::ErrorList<DriverError>;

impl From<TeardownErrors> for DriverErrors {
    fn from(errors: TeardownErrors) -> Self {
        crate::errors::ErrorList(errors.0.into_iter().map(DriverError::Firewall).collect())
    }
}

/// `disable_ipv6` on `interface` in the calling thread's network
/// namespace; nothing to do on a kernel without IPv6.
fn turn_off_ipv6(interface: &str) -> Result<(), DriverError> {
    let path = format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6");
    match std::fs::write(&path, "1\n") {
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && !Path::new("/proc/sys/net/ipv6").exists() =>
        {
            Ok(())
        }
        result => result.map_err(|source| DriverError::Ipv6Off {
            interface: interface.to_owned(),
            source,
        }),
    }
}

/// The host end of the veth of a container's `index`-th additional
/// network (1 to 99, its `eth<index>`): `vb`, the first 10 letters or
/// digits of its id, `x` and the index.
pub fn extra_host_veth_name(container_id: &str, index: u32) -> Result<String, DriverError> {
    let stem: String = container_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(MAX_IFNAME_LEN - 5)
        .collect();
    if stem.is_empty() || !(1..=99).contains(&index) {
        return Err(DriverError::InvalidContainerId {
            id: container_id.to_owned(),
        });
    }
    Ok(format!("vb{stem}x{index}"))
}

/// The host end of a container's veth pair: `vb` and the first 13 letters
/// or digits of its id, so that it can be found from the id alone.
pub fn host_veth_name(container_id: &str) -> Result<String, DriverError> {
    let stem: String = container_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(MAX_IFNAME_LEN - 2)
        .collect();
    if stem.is_empty() {
        return Err(DriverError::InvalidContainerId {
            id: container_id.to_owned(),
        });
    }
    Ok(format!("vb{stem}"))
}

/// Bridge networks: a Linux bridge per network, a veth pair per container,
/// iptables NAT (see [`crate::firewall`]).
#[derive(Debug, Clone)]
pub struct BridgeDriver<F = IptablesFirewall> {
    ipam: Ipam,
    firewall: F,
    proc_sys: PathBuf,
    /// Written as the alias (`IFLA_IFALIAS`) of every bridge this driver
    /// makes; a bridge whose alias names another owner is neither adopted
    /// nor deleted, so two state roots never share or remove each
    /// other's bridge.
    owner: Option<String>,
}

/// The prefix of the bridge aliases that mark an owner.
const OWNER_ALIAS_PREFIX: &str = "berth-root:";

/// The alias marking bridges of the state under `networks_dir`.
pub fn bridge_owner_alias(networks_dir: &Path) -> String {
    format!("{OWNER_ALIAS_PREFIX}{}", networks_dir.display())
}

impl BridgeDriver<IptablesFirewall> {
    /// The usual driver for a state directory (e.g. `<root>/networks`):
    /// IPAM under `<dir>/ipam`, the iptables lock in `<dir>`, `/proc/sys`.
    pub fn new(networks_dir: &Path) -> Self {
        BridgeDriver::with_parts(
            Ipam::new(networks_dir.join("ipam")),
            IptablesFirewall::new(networks_dir),
            PathBuf::from("/proc/sys"),
        )
        .owned_by(bridge_owner_alias(networks_dir))
    }
}

impl<F: Firewall> BridgeDriver<F> {
    /// A driver from its parts; `proc_sys` is normally `/proc/sys`.
    pub fn with_parts(ipam: Ipam, firewall: F, proc_sys: PathBuf) -> Self {
        BridgeDriver {
            ipam,
            firewall,
            proc_sys,
            owner: None,
        }
    }

    /// Mark the bridges this driver makes with `owner` (see
    /// [`bridge_owner_alias`]) and refuse bridges marked by another.
    pub fn owned_by(mut self, owner: String) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Refuse a bridge another owner marked as its own.
    fn check_owner(&self, link: &crate::LinkInfo) -> Result<(), DriverError> {
        match (&self.owner, &link.alias) {
            (Some(mine), Some(theirs))
                if theirs.starts_with(OWNER_ALIAS_PREFIX) && mine != theirs =>
            {
                Err(DriverError::BridgeOwnedElsewhere {
                    bridge: link.name.clone(),
                    owner: theirs[OWNER_ALIAS_PREFIX.len()..].to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    pub fn firewall(&self) -> &F {
        &self.firewall
    }

    /// Set the network up unless its bridge already exists and is up (the
    /// bridge is made last, so its presence means setup completed) and
    /// lets published ports answer on 127.0.0.1 (a bridge set up by an
    /// older berth does not: setting it up again adds what is missing).
    /// Cheap on the fast path: one netlink request and one sysctl read.
    /// `Some(report)` when setup ran.
    pub fn ensure(&self, network: &NetworkConfig) -> Result<Option<SetupReport>, DriverError> {
        let mut netlink = Netlink::connect()?;
        match netlink.link(&network.bridge)? {
            Some(link) if link.up && self.carries_localhost(&network.bridge) => {
                self.check_owner(&link).map(|()| None)
            }
            _ => self.setup(network).map(Some),
        }
    }

    /// Whether `route_localnet` is on for `bridge` (see [`crate::firewall`]).
    fn carries_localhost(&self, bridge: &str) -> bool {
        let path = self
            .proc_sys
            .join("net/ipv4/conf")
            .join(bridge)
            .join("route_localnet");
        std::fs::read_to_string(path).is_ok_and(|value| value.trim() == "1")
    }

    /// The bridge of `network`, set up first unless it exists and is up.
    fn bridge_index(
        &self,
        host: &mut Netlink,
        network: &NetworkConfig,
    ) -> Result<u32, DriverError> {
        match host.link(&network.bridge)? {
            Some(link) if link.up => self.check_owner(&link).map(|()| link.index),
            _ => {
                self.setup(network)?;
                Ok(host.require_link(&network.bridge)?.index)
            }
        }
    }

    /// The veth pair of `endpoint` (host end on `bridge`, the other in
    /// `netns` with the endpoint's name, MAC and address), loopback up,
    /// and, when `default_route`, the default route via the gateway. An
    /// endpoint that publishes ports gets hairpin mode on its bridge port.
    /// With `embedded_dns`, returns the embedded DNS server's socket,
    /// bound in `netns`.
    fn plumb(
        &self,
        host: &mut Netlink,
        bridge: u32,
        endpoint: &Endpoint,
        netns: BorrowedFd<'_>,
        default_route: bool,
        embedded_dns: bool,
    ) -> Result<Option<UdpSocket>, DriverError> {
        // On a network without IPv6 both ends go without it, as docker's
        // do: no link-local address, so no duplicate-address probe or
        // multicast report from each new container, which the bridge
        // would flood to every other container's port (work that grew
        // with the containers on the network).
        let ipv4_only = endpoint.ipv6.is_none();
        let description = format!("network namespace of container {}", endpoint.container_id);
        let ifname = endpoint.container_ifname.as_str();
        // One visit to the container's namespace, on one thread, for all
        // that must be done from inside it: a thread per step (one for
        // the sysctl, one for the netlink socket, one for the DNS socket)
        // cost 0.2-0.5 ms each to start on this path, several ms on a
        // busy machine. It starts before the veth pair is made and does
        // what needs no eth0 meanwhile; then, told the pair exists, turns
        // eth0's IPv6 off (before it is up) and finds its index by name,
        // without a netlink request (and without the RTNL lock).
        let (veth_made, wait_for_veth) = std::sync::mpsc::channel::<()>();
        let (host_side, visit) = std::thread::scope(|scope| {
            let description = &description;
            let visit = scope.spawn(move || -> Result<_, DriverError> {
                setns(netns, CloneFlags::CLONE_NEWNET).map_err(|source| {
                    NetlinkError::EnterNetns {
                        netns: description.clone(),
                        source,
                    }
                })?;
                let mut inside = Netlink::connect_here(description.clone())?;
                // Loopback first: the DNS socket's address is on it.
                inside.set_up(LOOPBACK_IFINDEX)?;
                let dns = if embedded_dns {
                    Some(crate::dns::bind_embedded_here()?)
                } else {
                    None
                };
                if wait_for_veth.recv().is_err() {
                    // The host side failed; it reports why.
                    return Ok(None);
                }
                if ipv4_only {
                    // /proc/sys/net is the one of the thread's namespace.
                    turn_off_ipv6(ifname)?;
                }
                let index =
                    link_index_unlocked(ifname)?.ok_or_else(|| NetlinkError::NoSuchLink {
                        name: ifname.to_owned(),
                        netns: description.clone(),
                    })?;
                Ok(Some((inside, index, dns)))
            });
            let host_side = self.plumb_host_end(host, bridge, endpoint, netns, ipv4_only);
            if host_side.is_ok() {
                // The thread is waiting (or has failed and dropped its end).
                let _ = veth_made.send(());
            }
            drop(veth_made);
            let visit = match visit.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            (host_side, visit)
        });
        host_side?;
        let (mut inside, index, dns) = visit?.ok_or_else(|| NetlinkError::NoSuchLink {
            name: ifname.to_owned(),
            netns: description.clone(),
        })?;
        let address = Ipv4Net::new(endpoint.ip, endpoint.prefix_len).expect("valid prefix");
        inside.add_address(index, address)?;
        let ipv6 = endpoint
            .ipv6
            .zip(endpoint.ipv6_prefix_len)
            .and_then(|(ip, prefix)| ipnet::Ipv6Net::new(ip, prefix).ok());
        if let Some(address) = ipv6 {
            inside.add_address6(index, address)?;
        }
        inside.set_up(index)?;
        if default_route {
            inside.add_default_route(endpoint.gateway, index)?;
            if let (Some(_), Some(gateway)) = (endpoint.ipv6, endpoint.ipv6_gateway) {
                inside.add_default_route6(gateway, index)?;
            }
        }
        Ok(dns)
    }

    /// The host's part of [`Self::plumb`]: the veth pair (its other end
    /// `endpoint.container_ifname` in `netns`), IPv6 off on the host end
    /// when `ipv4_only`, hairpin mode when the endpoint publishes ports.
    fn plumb_host_end(
        &self,
        host: &mut Netlink,
        bridge: u32,
        endpoint: &Endpoint,
        netns: BorrowedFd<'_>,
        ipv4_only: bool,
    ) -> Result<(), DriverError> {
        let peer = VethPeer {
            name: &endpoint.container_ifname,
            netns: Some(netns),
            mac: Some(endpoint.mac),
        };
        // The host end up from the start. A pair of the same name is left by
        // a crashed attempt for this very container, or by its previous
        // run whose namespace the kernel is still tearing down.
        match host.create_veth_up(&endpoint.host_veth, &peer, Some(bridge)) {
            Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST) => {
                host.delete_link(&endpoint.host_veth)?;
                host.create_veth_up(&endpoint.host_veth, &peer, Some(bridge))?;
            }
            result => result?,
        }
        if ipv4_only {
            turn_off_ipv6(&endpoint.host_veth)?;
        }
        if !endpoint.ports.is_empty() {
            // A container reaching its own published port through a host
            // address is routed back out of the bridge port it came from.
            let port = host.link_index(&endpoint.host_veth)?;
            host.set_hairpin(port, true)?;
        }
        Ok(())
    }

    /// Remove the host veth `name`, unless the kernel is about to: when
    /// the peer's namespace is being destroyed (the container ended), the
    /// kernel deletes the pair with it, and an explicit delete would only
    /// wait for the same teardown (an RCU grace period or two, ~25 ms).
    /// Returns (there was one, left to the kernel).
    fn remove_veth(name: &str, ended: bool) -> Result<(bool, bool), NetlinkError> {
        // Asked without the RTNL lock first: while the kernel tears down
        // the container's namespace it holds that lock for tens of ms, and
        // the veth has left this view by then.
        if link_index_unlocked(name)?.is_none() {
            return Ok((false, false));
        }
        if ended {
            return Ok((true, true));
        }
        let mut netlink = Netlink::connect()?;
        let Some(link) = netlink.link(name)? else {
            return Ok((false, false));
        };
        if netlink.peer_netns(&link)? == PeerNetns::Dying {
            return Ok((true, true));
        }
        Ok((netlink.delete_link(name)?, false))
    }
}

impl<F: Firewall> NetworkDriver for BridgeDriver<F> {
    fn setup(&self, network: &NetworkConfig) -> Result<SetupReport, DriverError> {
        let mut netlink = Netlink::connect()?;
        match netlink.link(&network.bridge)? {
            Some(existing) => self.check_owner(&existing)?,
            // A new bridge must not take a subnet the host routes
            // elsewhere already (another engine's bridge, a VPN that came
            // up since the network was made): both would break.
            None => {
                let in_use = netlink.ipv4_prefixes_in_use()?;
                if let Some(used) = in_use
                    .into_iter()
                    .find(|p| crate::network::overlaps(*p, network.subnet))
                {
                    return Err(DriverError::SubnetInUseOnHost {
                        network: network.name.clone(),
                        subnet: network.subnet,
                        used,
                    });
                }
            }
        }
        let ip_forward_enabled = enable_ip_forward(&self.proc_sys)
            .map_err(|source| DriverError::IpForward { source })?;
        let ipv6_forward_enabled = if network.ipv6_subnet.is_some() && !network.internal {
            enable_ipv6_forward(&self.proc_sys)
                .map_err(|source| DriverError::Ipv6Forward { source })?
        } else {
            false
        };
        self.firewall.setup_network(network)?;
        let mut created = false;
        let result = (|| -> Result<(), DriverError> {
            let (index, was_created) = netlink.create_bridge(&network.bridge)?;
            created = was_created;
            if let Some(owner) = &self.owner {
                netlink.set_alias(index, owner)?;
            }
            netlink.add_address(index, network.gateway_net())?;
            if let Some(gateway) = network.ipv6_gateway_net() {
                netlink.add_address6(index, gateway)?;
            }
            // Published ports answer on 127.0.0.1 (see crate::firewall).
            set_route_localnet(&self.proc_sys, &network.bridge, true).map_err(|source| {
                DriverError::RouteLocalnet {
                    bridge: network.bridge.clone(),
                    source,
                }
            })?;
            netlink.set_up(index)?;
            Ok(())
        })();
        if let Err(error) = result {
            let mut cleanup = Vec::new();
            if created {
                if let Err(e) = netlink.delete_link(&network.bridge) {
                    cleanup.push(e.into());
                }
            }
            if let Err(errors) = self.firewall.teardown_network(network) {
                cleanup.extend(DriverErrors::from(errors).0);
            }
            return Err(with_cleanup(error, cleanup));
        }
        Ok(SetupReport {
            ip_forward_enabled,
            ipv6_forward_enabled,
            bridge_created: created,
        })
    }

    fn teardown(&self, network: &NetworkConfig) -> Result<(), DriverErrors> {
        let leases = self
            .ipam
            .leases(&network.name)
            .map_err(|e| ErrorList(vec![DriverError::from(e)]))?;
        if let Some(first) = leases.first() {
            return Err(ErrorList(vec![DriverError::Ipam(IpamError::InUse {
                network: network.name.clone(),
                count: leases.len(),
                first_owner: first.owner.clone(),
            })]));
        }
        // Another root's bridge of the same name stays, with its rules.
        let owned = Netlink::connect()
            .and_then(|mut nl| nl.link(&network.bridge))
            .map_err(DriverError::from)
            .and_then(|link| link.map_or(Ok(()), |link| self.check_owner(&link)));
        if let Err(e) = owned {
            return Err(ErrorList(vec![e]));
        }
        let mut errors = Vec::new();
        if let Err(e) = self.firewall.teardown_network(network) {
            errors.extend(DriverErrors::from(e).0);
        }
        if let Err(e) = Netlink::connect().and_then(|mut nl| nl.delete_link(&network.bridge)) {
            errors.push(e.into());
        }
        if let Err(e) = self.ipam.remove_pool(&network.name) {
            errors.push(e.into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ErrorList(errors))
        }
    }

    fn attach(
        &self,
        network: &NetworkConfig,
        container_id: &str,
        netns: BorrowedFd<'_>,
        ports: &[PortMapping],
    ) -> Result<Endpoint, DriverError> {
        let request = AttachRequest {
            ports,
            ..AttachRequest::default()
        };
        self.attach_holding(network, container_id, netns, &request)
            .map(|attachment| attachment.endpoint)
    }

    fn detach(&self, container_id: &str) -> Result<DetachReport, DriverErrors> {
        self.detach_with(container_id, false)
    }
}

impl<F: Firewall> BridgeDriver<F> {
    /// [`NetworkDriver::attach`] with the container's own MAC address, if
    /// it asks for one, that keeps the published host ports bound: the
    /// [`HeldPort`]s, bound in the same step that finds each port free (no
    /// process can take one in between), are for the caller to hold while
    /// the container runs, so that host processes cannot bind them.
    pub fn attach_holding(
        &self,
        network: &NetworkConfig,
        container_id: &str,
        netns: BorrowedFd<'_>,
        request: &AttachRequest<'_>,
    ) -> Result<Attachment, DriverError> {
        let ports = request.ports;
        let host_veth = host_veth_name(container_id)?;
        let mut host = Netlink::connect()?;
        let bridge = self.bridge_index(&mut host, network)?;
        // Read before the IPAM lock, not while other starts wait for it;
        // only a port published without a host port needs it.
        let ephemeral = if ports.is_empty() {
            DEFAULT_EPHEMERAL_PORTS
        } else {
            ephemeral_port_range(&self.proc_sys)
        };

        // The address and the host ports, in one locked transaction: on
        // any refusal nothing is consumed.
        let mut txn = self.ipam.transaction()?;
        let fresh = !txn.holds_anything(container_id)?;
        let ip = txn.allocate(&network.pool(), container_id)?;
        let ipv6 = match network.pool6() {
            Some(pool) => Some(txn.allocate6(&pool, container_id)?),
            None => None,
        };
        if let Some(mac) = request.mac {
            txn.claim_mac(&network.pool(), container_id, mac)?;
        }
        let mut forwards: Vec<PortForward> = ports
            .iter()
            .map(|mapping| PortForward {
                owner: container_id.to_owned(),
                network: network.name.clone(),
                bridge: network.bridge.clone(),
                container_ip: ip,
                mapping: *mapping,
            })
            .collect();
        let mut held = Vec::new();
        txn.choose_host_ports(
            &mut forwards,
            ephemeral,
            |ip, port, protocol| match hold_host_port(ip, port, protocol) {
                Ok(socket) => {
                    held.push(socket);
                    PortProbe::Free
                }
                Err(probe) => probe,
            },
        )?;
        txn.reserve_ports(&forwards)?;
        let ports: Vec<PortMapping> = forwards.iter().map(|f| f.mapping).collect();
        txn.commit()?;

        let endpoint = Endpoint::on(
            network,
            container_id,
            ip,
            request.mac,
            host_veth,
            CONTAINER_IFNAME.to_owned(),
            ports,
        )
        .with_ipv6(ipv6);
        // `fresh`: the container held no lease before this attach, so no
        // rule of an earlier attempt can exist (see
        // [`Firewall::add_port_forwards`]).
        let plumbed = self
            .plumb(
                &mut host,
                bridge,
                &endpoint,
                netns,
                !network.internal,
                request.embedded_dns,
            )
            .and_then(|dns_socket| {
                self.firewall.add_port_forwards(&forwards, fresh)?;
                Ok(dns_socket)
            });
        match plumbed {
            Ok(dns_socket) => Ok(Attachment {
                endpoint,
                held_ports: held,
                dns_socket,
            }),
            Err(error) => {
                let cleanup = match self.detach(container_id) {
                    Ok(_) => Vec::new(),
                    Err(errors) => errors.0,
                };
                Err(with_cleanup(error, cleanup))
            }
        }
    }

    /// Connect a container that already has its main network to another
    /// one (docker's `network connect`): a lease (`wanted`, or the next
    /// free address), a veth pair whose host end is
    /// [`extra_host_veth_name`]`(container_id, index)` on the network's
    /// bridge and whose other end is `eth<index>` in `netns`, with the
    /// address. No default route (the main network keeps it) and no
    /// published ports. On failure nothing is left behind.
    pub fn connect(
        &self,
        network: &NetworkConfig,
        container_id: &str,
        netns: BorrowedFd<'_>,
        index: u32,
        wanted: Option<Ipv4Addr>,
    ) -> Result<Endpoint, DriverError> {
        let host_veth = extra_host_veth_name(container_id, index)?;
        let mut host = Netlink::connect()?;
        let bridge = self.bridge_index(&mut host, network)?;
        let mut txn = self.ipam.transaction()?;
        let ip = txn.allocate_address(&network.pool(), container_id, wanted)?;
        let ipv6 = match network.pool6() {
            Some(pool) => Some(txn.allocate6(&pool, container_id)?),
            None => None,
        };
        txn.commit()?;
        let endpoint = Endpoint::on(
            network,
            container_id,
            ip,
            None,
            host_veth,
            format!("eth{index}"),
            Vec::new(),
        )
        .with_ipv6(ipv6);
        if let Err(error) = self.plumb(&mut host, bridge, &endpoint, netns, false, false) {
            let cleanup =
                match self.disconnect(&endpoint.network, container_id, &endpoint.host_veth) {
                    Ok(_) => Vec::new(),
                    Err(errors) => errors.0,
                };
            return Err(with_cleanup(error, cleanup));
        }
        Ok(endpoint)
    }

    /// Undo [`BridgeDriver::connect`] (or the attach of the main network):
    /// the ports published on `network`, the veth whose host end is
    /// `host_veth`, and the lease in `network`; the container's other
    /// networks are left alone. Idempotent.
    pub fn disconnect(
        &self,
        network: &str,
        container_id: &str,
        host_veth: &str,
    ) -> Result<DetachReport, DriverErrors> {
        let mut errors = Vec::new();
        let mut report = DetachReport::default();
        let forwards: Vec<PortForward> = self
            .ipam
            .port_forwards(container_id)
            .map_err(|e| ErrorList(vec![DriverError::from(e)]))?
            .into_iter()
            .filter(|f| f.network == network)
            .collect();
        let withdrawn = match self.firewall.remove_port_forwards(&forwards) {
            Ok(()) => forwards,
            Err(e) => {
                errors.extend(DriverErrors::from(e).0);
                Vec::new()
            }
        };
        let all_rules_gone = errors.is_empty();
        match Self::remove_veth(host_veth, false) {
            Ok((existed, left_to_kernel)) => {
                report.veth_deleted = existed;
                report.veth_left_to_kernel = left_to_kernel;
            }
            Err(e) => errors.push(e.into()),
        }
        let released = (|| -> Result<(), IpamError> {
            let mut txn = self.ipam.transaction()?;
            for forward in &withdrawn {
                txn.release_port(forward)?;
            }
            if all_rules_gone {
                if let Some(ip) = txn.release(network, container_id)? {
                    report.addresses.push((network.to_owned(), ip));
                }
                txn.release6(network, container_id)?;
            }
            txn.commit()
        })();
        match released {
            Ok(()) => report.ports = withdrawn,
            Err(e) => errors.push(e.into()),
        }
        ErrorList(errors).into_result().map(|()| report)
    }
}

/// Turn on IPv6 forwarding (`<proc_sys>/net/ipv6/conf/all/forwarding`)
/// in the caller's network namespace; whether it was off. (Like docker,
/// berth accepts that the host then stops taking router advertisements
/// on interfaces with accept_ra=1.)
fn enable_ipv6_forward(proc_sys: &Path) -> io::Result<bool> {
    let path = proc_sys.join("net/ipv6/conf/all/forwarding");
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let current = std::fs::read_to_string(&path).map_err(with_path)?;
    if current.trim() == "1" {
        return Ok(false);
    }
    std::fs::write(&path, "1\n").map_err(with_path)?;
    Ok(true)
}

/// Linux's default `ip_local_port_range`.
const DEFAULT_EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 32768..=60999;

/// The kernel's range for ephemeral ports (`ip_local_port_range`), where
/// docker also picks host ports it chooses; Linux's default if unreadable.
fn ephemeral_port_range(proc_sys: &Path) -> std::ops::RangeInclusive<u16> {
    let text =
        std::fs::read_to_string(proc_sys.join("net/ipv4/ip_local_port_range")).unwrap_or_default();
    let mut bounds = text
        .split_whitespace()
        .filter_map(|n| n.parse::<u16>().ok());
    match (bounds.next(), bounds.next()) {
        (Some(first), Some(last)) if first > 0 && first <= last => first..=last,
        _ => DEFAULT_EPHEMERAL_PORTS,
    }
}

impl<F: Firewall> BridgeDriver<F> {
    /// [`NetworkDriver::detach`] for a container whose processes have all
    /// ended (its PID 1 was reaped): its network namespace is being torn
    /// down, which deletes the veth pair, so the host end is left to the
    /// kernel instead of blocking on a delete (13-30 ms) that races it.
    pub fn detach_ended(&self, container_id: &str) -> Result<DetachReport, DriverErrors> {
        self.detach_with(container_id, true)
    }

    fn detach_with(&self, container_id: &str, ended: bool) -> Result<DetachReport, DriverErrors> {
        let mut errors = Vec::new();
        let mut report = DetachReport::default();

        // Published ports first: their rules point at the address.
        let forwards = self
            .ipam
            .port_forwards(container_id)
            .map_err(|e| ErrorList(vec![DriverError::from(e)]))?;
        // All in one go; on an error none counts as withdrawn (a retry
        // redoes it all, idempotently).
        let withdrawn = match self.firewall.remove_port_forwards(&forwards) {
            Ok(()) => forwards,
            Err(e) => {
                errors.extend(DriverErrors::from(e).0);
                Vec::new()
            }
        };
        let all_rules_gone = errors.is_empty();

        // The veth: gone already, going with the container's namespace,
        // or deleted here.
        match host_veth_name(container_id) {
            Ok(name) => match Self::remove_veth(&name, ended) {
                Ok((existed, left_to_kernel)) => {
                    report.veth_deleted = existed;
                    report.veth_left_to_kernel = left_to_kernel;
                }
                Err(e) => errors.push(e.into()),
            },
            Err(e) => errors.push(e),
        }

        // Leases: ports whose rules are gone; the address only once no rule
        // points at it, so that a retry can still find everything.
        let released = (|| -> Result<(), IpamError> {
            let mut txn = self.ipam.transaction()?;
            for forward in &withdrawn {
                txn.release_port(forward)?;
            }
            if all_rules_gone {
                report.addresses = txn.release_owner(container_id)?.addresses;
            }
            txn.commit()
        })();
        match released {
            Ok(()) => report.ports = withdrawn,
            Err(e) => errors.push(e.into()),
        }
        if errors.is_empty() {
            Ok(report)
        } else {
            Err(ErrorList(errors))
        }
    }
}

fn with_cleanup(error: DriverError, cleanup: Vec<DriverError>) -> DriverError {
    if cleanup.is_empty() {
        error
    } else {
        DriverError::CleanupFailed {
            error: Box::new(error),
            cleanup: ErrorList(cleanup),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_veth_names_fit_and_differ_per_index() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(extra_host_veth_name(&id, 1).unwrap(), "vb0123456789x1");
        assert_eq!(extra_host_veth_name(&id, 99).unwrap(), "vb0123456789x99");
        assert!(extra_host_veth_name(&id, 99).unwrap().len() <= MAX_IFNAME_LEN);
        assert_ne!(
            extra_host_veth_name(&id, 2).unwrap(),
            host_veth_name(&id).unwrap()
        );
        assert!(extra_host_veth_name(&id, 0).is_err());
        assert!(extra_host_veth_name(&id, 100).is_err());
        assert!(extra_host_veth_name("--", 1).is_err());
    }

    #[test]
    fn host_veth_names_fit_and_derive_from_the_id() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(host_veth_name(&id).unwrap(), "vb0123456789abc");
        assert_eq!(host_veth_name("c-1").unwrap(), "vbc1");
        assert!(host_veth_name("--").is_err());
        assert!(host_veth_name(&id).unwrap().len() <= MAX_IFNAME_LEN);
    }

    #[test]
    fn endpoint_serialises_for_the_container_record() {
        let endpoint = Endpoint {
            network: "bridge".into(),
            container_id: "c0ffee".into(),
            ip: Ipv4Addr::new(172, 17, 0, 2),
            prefix_len: 16,
            gateway: Ipv4Addr::new(172, 17, 0, 1),
            mac: MacAddr::from_ipv4(Ipv4Addr::new(172, 17, 0, 2)),
            bridge: "berth0".into(),
            host_veth: "vbc0ffee".into(),
            container_ifname: "eth0".into(),
            ports: vec!["8080:80".parse().unwrap()],
            ipv6: None,
            ipv6_prefix_len: None,
            ipv6_gateway: None,
        };
        let json = serde_json::to_string(&endpoint).unwrap();
        assert_eq!(
            json,
            r#"{"network":"bridge","container_id":"c0ffee","ip":"172.17.0.2","prefix_len":16,"gateway":"172.17.0.1","mac":"02:42:ac:11:00:02","bridge":"berth0","host_veth":"vbc0ffee","container_ifname":"eth0","ports":[{"host_port":8080,"container_port":80,"protocol":"tcp"}]}"#
        );
        assert_eq!(serde_json::from_str::<Endpoint>(&json).unwrap(), endpoint);
    }
}
