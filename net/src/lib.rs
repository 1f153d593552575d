//! Container networking for berth: bridge networks with IPAM, veth pairs,
//! iptables NAT and port mapping, and the container's `/etc/hosts`,
//! `/etc/resolv.conf` and `/etc/hostname`.
//!
//! The pieces, each usable alone:
//! - [`netlink`]: rtnetlink through `neli` (bridges, veth pairs with the
//!   peer created directly in another namespace, addresses, routes, link
//!   up, lookups); [`netns`] enters a namespace on a short-lived thread.
//! - [`Ipam`]: address leases and host-port reservations, persisted under a
//!   directory, guarded by a file lock, bitmap allocation.
//! - [`NetworkStore`]: network records (validation, overlap checks, the
//!   default `bridge` network).
//! - [`Firewall`] / [`IptablesFirewall`]: MASQUERADE, forwarding and DNAT
//!   rules in berth's own chains (see [`firewall`] for the rule set, and how
//!   published ports answer on 127.0.0.1 and to hairpin connections).
//! - [`NftablesFirewall`]: the same rules in an nftables table, spoken
//!   over netlink ([`nftables_msg`]) with one transaction per change;
//!   [`HostFirewall`] picks it or iptables ([`FirewallKind`]) and cleans
//!   up after both ([`firewall_backend`]).
//! - [`BridgeDriver`] ([`NetworkDriver`]): all of the above for one
//!   container: `attach` returns an [`Endpoint`], `detach` undoes it from
//!   the container id alone; [`BridgeDriver::attach_holding`] also takes
//!   a MAC address and returns the published host ports bound
//!   ([`HeldPort`]), for the caller to hold while the container runs.
//!   Networks with an IPv6 subnet give IPv6 addresses too.
//! - [`render_hosts`], [`render_resolv_conf`], [`render_hostname`].
//! - [`dns`]: the embedded DNS responder (docker's 127.0.0.11), a thread
//!   of the container's supervisor answering from its hosts file.
//!
//! A container's life, as the CLI drives it:
//!
//! ```no_run
//! use std::path::Path;
//! use berth_net::{
//!     netns, parse_port_mapping, render_hosts, render_resolv_conf, BridgeDriver,
//!     NetworkDriver, NetworkStore, DEFAULT_SUBNET,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let networks = NetworkStore::new("/var/lib/berth/networks");
//! let driver = BridgeDriver::new(Path::new("/var/lib/berth/networks"));
//! let network = networks.ensure_default(DEFAULT_SUBNET)?;
//! if let Some(report) = driver.ensure(&network)? {
//!     if report.ip_forward_enabled {
//!         eprintln!("berth: enabled net.ipv4.ip_forward");
//!     }
//! }
//! // The container process (pid 4242) waits in its new network namespace.
//! let ns = netns::open_netns(&netns::netns_path(Path::new("/proc"), 4242))?;
//! let ports = [parse_port_mapping("8080:80/tcp")?];
//! let endpoint = driver.attach(&network, "c0ffee", std::os::fd::AsFd::as_fd(&ns), &ports)?;
//! let hosts = render_hosts("c0ffee", Some(endpoint.ip), &["web"], &[]);
//! let resolv = render_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf")?);
//! # let _ = (hosts, resolv);
//! // ... write them into the rootfs, start the container; when it is removed
//! // (or after a crash, from the id alone):
//! driver.detach("c0ffee").map_err(|errors| errors.to_string())?;
//! # Ok(())
//! # }
//! ```
//!
//! [`set_link_up`] brings an interface (`lo`) up from inside a fresh
//! namespace:
//!
//! ```no_run
//! berth_net::set_link_up("lo")?;
//! # Ok::<(), berth_net::NetError>(())
//! ```

pub mod dns;
mod driver;
mod errors;
mod files;
pub mod firewall;
pub mod firewall_backend;
mod ipam;
pub mod netlink;
pub mod netns;
mod network;
pub mod nftables;
pub mod nftables_msg;
pub mod nftables_rules;
mod persist;
mod ports;

pub use driver::{
    bridge_owner_alias, extra_host_veth_name, host_veth_name, AttachRequest, Attachment,
    BridgeDriver, DetachReport, DriverError, DriverErrors, Endpoint, NetworkDriver, SetupReport,
    CONTAINER_IFNAME,
};
pub use errors::ErrorList;
pub use files::{
    nameservers, render_embedded_resolv_conf, render_hostname, render_hosts, render_resolv_conf,
    render_resolv_conf_with, search_domains, with_upstream_nameservers, DnsSettings, HostsEntry,
    DEFAULT_NAMESERVERS,
};
pub use firewall::{
    enable_ip_forward, set_route_localnet, Firewall, FirewallError, IptablesFirewall,
    TeardownErrors,
};
pub use firewall_backend::{FirewallKind, HostFirewall, FIREWALL_ENV};
pub use ipam::{AddressPool, AddressPool6, Ipam, IpamError, IpamTxn, Lease, PortForward, Released};
pub use netlink::{LinkInfo, MacAddr, Netlink, NetlinkError};
pub use network::{
    default_address_pools, first_free_subnet, is_valid_name, overlaps, parse_ip_range,
    parse_subnet, NetworkConfig, NetworkError, NetworkRequest, NetworkStore, BRIDGE_DRIVER,
    DEFAULT_BRIDGE, DEFAULT_NETWORK, DEFAULT_SUBNET,
};
pub use nftables::NftablesFirewall;
pub use ports::{
    hold_host_port, parse_port_mapping, parse_publish, probe_host_port, HeldPort, PortMapping,
    PortParseError, PortProbe, Protocol,
};

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// Errors from network setup, naming the interface involved.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open a control socket: {source}")]
    Socket {
        #[source]
        source: nix::Error,
    },
    #[error("interface name {name:?} is too long")]
    NameTooLong { name: String },
    #[error("cannot {op} interface {name}: {source}")]
    Interface {
        name: String,
        op: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// Set interface `name` up (IFF_UP) in the calling process's network
/// namespace.
pub fn set_link_up(name: &str) -> Result<(), NetError> {
    let socket: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|source| NetError::Socket { source })?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= request.ifr_name.len() {
        return Err(NetError::NameTooLong {
            name: name.to_owned(),
        });
    }
    for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let interface_error = |op, source| NetError::Interface {
        name: name.to_owned(),
        op,
        source,
    };
    // SAFETY: SIOCGIFFLAGS reads the flags into the ifreq we own.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) };
    if rc < 0 {
        return Err(interface_error("read the flags of", nix::Error::last()));
    }
    // SAFETY: the kernel filled the flags member of the union above.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) };
    if rc < 0 {
        return Err(interface_error("bring up", nix::Error::last()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_overlong_names() {
        assert!(matches!(
            set_link_up("an-interface-name-far-too-long"),
            Err(NetError::NameTooLong { .. })
        ));
    }

    #[test]
    fn unknown_interface_is_named_in_the_error() {
        let err = set_link_up("nosuchif0").unwrap_err();
        assert!(err.to_string().contains("nosuchif0"), "{err}");
    }
}
