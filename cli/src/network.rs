//! Networks: `berth network create|ls|inspect|rm`, and a container's
//! network during `run` (`--net bridge|NAME|none|host`, `-p`).

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use berth_net::{
    render_hostname, render_hosts, render_resolv_conf_with, BridgeDriver, Endpoint, HostsEntry,
    NetworkConfig, NetworkDriver, NetworkRequest, NetworkStore, PortMapping,
};
use berth_state::{ContainerRecord, ContainerStore};

use crate::args::{NetworkCommand, NetworkCreateArgs};
use crate::paths::Paths;
use crate::table::render;

/// docker's name for the default network.
pub const DEFAULT_NETWORK: &str = "bridge";

/// How a container is connected.
#[derive(Debug)]
pub enum NetworkMode {
    /// Its own network namespace on a bridge network, with `-p` ports.
    /// `network` is `None` for the default network until [`prepare`]
    /// creates it: a run refused for bad input must not leave it behind.
    Bridge {
        network: Option<NetworkConfig>,
        ports: Vec<PortMapping>,
    },
    /// Its own network namespace with only `lo`.
    None,
    /// The host's network namespace.
    Host,
    /// Another running container's network namespace (`container:NAME`),
    /// with its /etc/hosts, resolv.conf and hostname.
    Container {
        netns: PathBuf,
        /// Its directory, where its /etc files are.
        container_dir: PathBuf,
        hostname: String,
    },
}

impl NetworkMode {
    pub fn has_own_namespace(&self) -> bool {
        !matches!(self, NetworkMode::Host)
    }

    /// `--network container:NAME`.
    pub fn shares_another_container(&self) -> bool {
        matches!(self, NetworkMode::Container { .. })
    }
}

fn store(paths: &Paths) -> NetworkStore {
    NetworkStore::new(paths.networks_dir())
}

/// berth's nf_tables table (`table ip berth`).
pub const FIREWALL_TABLE: &str = "berth";

/// The firewall backend: `BERTH_FIREWALL` (`nftables` or `iptables`),
/// else nftables where the kernel has it. Asked once per process.
pub fn firewall_kind() -> anyhow::Result<berth_net::FirewallKind> {
    static CHOSEN: std::sync::OnceLock<Result<berth_net::FirewallKind, String>> =
        std::sync::OnceLock::new();
    CHOSEN
        .get_or_init(|| {
            let requested = std::env::var(berth_net::FIREWALL_ENV).ok();
            berth_net::FirewallKind::choose(requested.as_deref())
                .map_err(|e| format!("{}: {e}", berth_net::FIREWALL_ENV))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

fn driver(paths: &Paths) -> BridgeDriver<berth_net::HostFirewall> {
    // A bad BERTH_FIREWALL is refused before anything is made (`plan`,
    // `network create`); a teardown still cleans up, with the default
    // choice (and the other backend's rules go too: see HostFirewall).
    let kind = firewall_kind()
        .or_else(|_| berth_net::FirewallKind::choose(None))
        .unwrap_or(berth_net::FirewallKind::Iptables);
    let dir = paths.networks_dir();
    let firewall = berth_net::HostFirewall::new(kind, FIREWALL_TABLE, &dir);
    BridgeDriver::with_firewall(&dir, firewall)
}

/// Resolve `--net` and `-p` before anything is created (only the default
/// network's record may be made, on first use, as docker has it always).
pub fn plan(paths: &Paths, net: &str, publish: &[String]) -> anyhow::Result<NetworkMode> {
    let ports = publish_requests(publish)?;
    match net {
        "none" | "host" if !ports.is_empty() => {
            bail!("-p needs a bridge network: --net {net} has no ports to publish")
        }
        "none" => Ok(NetworkMode::None),
        "host" => Ok(NetworkMode::Host),
        mode if mode.starts_with("container:") => {
            let target = &mode["container:".len()..];
            if !ports.is_empty() {
                bail!("conflicting options: -p and --network {mode} (the ports are the other container's)");
            }
            let containers = paths.containers()?;
            let record = crate::container::find(&containers, target)?;
            match record.pid {
                Some(pid) if record.is_active() && crate::container::is_alive(&record) => {
                    Ok(NetworkMode::Container {
                        netns: PathBuf::from(format!("/proc/{pid}/ns/net")),
                        container_dir: containers.container_dir(&record.id),
                        hostname: record.hostname,
                    })
                }
                _ => bail!("cannot join the network of container {target}: it is not running"),
            }
        }
        name => {
            firewall_kind()?;
            let store = store(paths);
            let network = if name == DEFAULT_NETWORK {
                store.get(name).ok()
            } else {
                Some(store.get(name)?)
            };
            if network.as_ref().is_some_and(|n| n.internal) && !ports.is_empty() {
                // docker accepts -p here and publishes nothing; a port
                // that silently does not work is worse than a refusal.
                bail!("-p cannot publish ports on network {name}: it is --internal (no traffic from outside reaches it)");
            }
            Ok(NetworkMode::Bridge { network, ports })
        }
    }
}

/// The mappings `-p` values ask for (ranges expanded), with a host port
/// given twice (on overlapping addresses) refused.
pub fn publish_requests(publish: &[String]) -> anyhow::Result<Vec<PortMapping>> {
    let mut ports: Vec<PortMapping> = Vec::new();
    for spec in publish {
        ports.extend(berth_net::parse_publish(spec)?);
    }
    let fixed = |p: &PortMapping| p.host_port != 0 && p.host_port_end == 0;
    for (i, port) in ports.iter().enumerate() {
        if fixed(port) && ports[..i].iter().any(|p| fixed(p) && p.clashes_with(port)) {
            let binding = if port.host_ip.is_unspecified() {
                port.host_port.to_string()
            } else {
                port.host_binding()
            };
            bail!(
                "host port {binding}/{} is given twice: publish each host port once",
                port.protocol
            );
        }
    }
    Ok(ports)
}

/// The state root berth uses unless told otherwise: its default network
/// is docker's (`berth0`, 172.17.0.0/16).
const DEFAULT_ROOT: &str = "/var/lib/berth";

/// The default network's record, made on first use: the first subnet of
/// the default pools (172.17.0.0/16 first) that no host address or route
/// uses (another root's bridge, docker0 included). The default root's
/// bridge is `berth0`; any other root's is named after its path
/// (`berth-<8 hex>`): two roots never share a bridge, nor hand out one
/// address twice on one link.
fn ensure_default_network(paths: &Paths) -> anyhow::Result<NetworkConfig> {
    let store = store(paths);
    if let Ok(existing) = store.get(DEFAULT_NETWORK) {
        return Ok(existing);
    }
    let canonical = std::fs::canonicalize(paths.root()).unwrap_or_else(|_| paths.root().into());
    // 172.17.0.0/16 when the host does not use it already (docker0 does,
    // on a host that runs docker): then the next free pool.
    let in_use = berth_net::Netlink::connect()
        .and_then(|mut netlink| netlink.ipv4_prefixes_in_use())
        .context("cannot read the host's addresses and routes")?;
    let bridge = if canonical == Path::new(DEFAULT_ROOT) {
        berth_net::DEFAULT_BRIDGE.to_owned()
    } else {
        root_bridge_name(&canonical)
    };
    Ok(store.ensure_default_on(&bridge, |taken| {
        let mut taken = taken.to_vec();
        taken.extend(in_use);
        berth_net::first_free_subnet(&berth_net::default_address_pools(), &taken)
    })?)
}

/// `berth-` and 8 hex digits of the SHA-256 of the root's path (fits
/// IFNAMSIZ).
fn root_bridge_name(root: &Path) -> String {
    use sha2::Digest;
    use std::os::unix::ffi::OsStrExt;
    let digest = sha2::Sha256::digest(root.as_os_str().as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("berth-{hex}")
}

/// Make the network usable (bridge, firewall rules) if it is not: after a
/// reboot, or on first use of the default network.
pub fn prepare(paths: &Paths, mode: &mut NetworkMode) -> anyhow::Result<()> {
    if let NetworkMode::Bridge { network, .. } = mode {
        let network = match network {
            Some(network) => network,
            None => network.insert(ensure_default_network(paths)?),
        };
        let report = driver(paths)
            .ensure(network)
            .with_context(|| format!("cannot set up network {}", network.name))?;
        // Said to a person at a terminal; a script's stderr carries only
        // the container's output and real errors.
        let user_is_watching = nix::unistd::isatty(std::io::stderr()).unwrap_or(false);
        if report.is_some_and(|r| r.ip_forward_enabled) && user_is_watching {
            eprintln!(
                "berth: turned on net.ipv4.ip_forward so that containers can reach other networks"
            );
        }
    }
    Ok(())
}

/// The files berth bind-mounts over the container's /etc/hosts,
/// /etc/resolv.conf and /etc/hostname (written before the init mounts them).
pub struct EtcFiles {
    dir: PathBuf,
}

impl EtcFiles {
    pub fn new(container_dir: &Path) -> Self {
        EtcFiles {
            dir: container_dir.to_owned(),
        }
    }

    /// The files a container with `mode` gets: its own, or those of the
    /// container whose network it shares.
    pub fn for_mode(container_dir: &Path, mode: &NetworkMode) -> Self {
        match mode {
            NetworkMode::Container { container_dir, .. } => EtcFiles::new(container_dir),
            _ => EtcFiles::new(container_dir),
        }
    }

    /// As volumes for the init: (host file, container path).
    pub fn volumes(&self) -> Vec<berth_fs::Volume> {
        ["hosts", "resolv.conf", "hostname"]
            .into_iter()
            .map(|name| berth_fs::Volume {
                source: self.dir.join(name),
                target: format!("/etc/{name}"),
                read_only: false,
            })
            .collect()
    }

    /// Write the files for a container that has (or lacks) an address.
    pub fn write(
        &self,
        record: &ContainerRecord,
        own_ip: Option<Ipv4Addr>,
        others: &[HostsEntry],
    ) -> anyhow::Result<()> {
        let mut resolv = resolv_conf(record)?;
        if is_user_defined(&record.network_mode) {
            resolv = berth_net::render_embedded_resolv_conf(&resolv);
        }
        self.write_hosts(record, own_ip, others)?;
        for (name, text) in [
            ("resolv.conf", resolv),
            ("hostname", render_hostname(&record.hostname)),
        ] {
            let path = self.dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Write /etc/hosts alone: the container's own address (if it has
    /// one) with its hostname and name, `others`, its `--add-host` entries.
    pub fn write_hosts(
        &self,
        record: &ContainerRecord,
        own_ip: Option<Ipv4Addr>,
        others: &[HostsEntry],
    ) -> anyhow::Result<()> {
        let names = [record.name.as_str()];
        let mut entries = others.to_vec();
        for entry in &record.extra_hosts {
            let (name, ip) = parse_extra_host(entry)?;
            entries.push(HostsEntry::new(ip, [name]));
        }
        let path = self.dir.join("hosts");
        std::fs::write(
            &path,
            render_hosts(&record.hostname, own_ip, &names, &entries),
        )
        .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The resolv.conf `record` gets without the embedded responder: the
/// host's, with `--dns`, `--dns-search` and `--dns-option` in place of
/// its lines of that kind.
fn resolv_conf(record: &ContainerRecord) -> anyhow::Result<String> {
    let settings = berth_net::DnsSettings {
        servers: record
            .dns
            .iter()
            .map(|s| {
                s.parse()
                    .with_context(|| format!("invalid --dns {s:?}: not an IP address"))
            })
            .collect::<anyhow::Result<_>>()?,
        search: record.dns_search.clone(),
        options: record.dns_options.clone(),
    };
    Ok(render_resolv_conf_with(&host_resolv_conf(), &settings))
}

/// Whether `net` (a `--net` value) names a user-defined network, where
/// docker gives aliases, `--ip` and its embedded DNS server.
pub fn is_user_defined(net: &str) -> bool {
    !matches!(net, DEFAULT_NETWORK | "none" | "host" | "") && !net.starts_with("container:")
}

/// The embedded DNS responder of a container on a user-defined network
/// (docker's 127.0.0.11), bound in the network namespace of its init
/// `pid` but not serving yet: whoever supervises the container serves it. It answers
/// from the container's live /etc/hosts ([`crate::network_hosts`]) and
/// relays other names to the servers the container would have had;
/// on an `--internal` network to none.
pub fn embedded_dns(
    containers: &ContainerStore,
    mode: &NetworkMode,
    record: &ContainerRecord,
    pid: i32,
) -> anyhow::Result<Option<berth_net::dns::Responder>> {
    let NetworkMode::Bridge {
        network: Some(network),
        ..
    } = mode
    else {
        return Ok(None);
    };
    if !is_user_defined(&record.network_mode) {
        return Ok(None);
    }
    let netns = berth_net::netns::open_netns(&berth_net::netns::netns_path(
        Path::new("/proc"),
        pid as u32,
    ))?;
    let socket = berth_net::dns::bind_embedded(netns.as_fd())?;
    responder(containers, network, record, socket).map(Some)
}

/// The embedded DNS responder of `record` on `network` that answers on
/// `socket` (bound in the container's namespace).
fn responder(
    containers: &ContainerStore,
    network: &NetworkConfig,
    record: &ContainerRecord,
    socket: std::net::UdpSocket,
) -> anyhow::Result<berth_net::dns::Responder> {
    let resolv = resolv_conf(record)?;
    let upstreams = if network.internal {
        Vec::new()
    } else {
        berth_net::nameservers(&resolv)
            .into_iter()
            .map(|ip| std::net::SocketAddr::new(ip, 53))
            .collect()
    };
    let hosts = containers.container_dir(&record.id).join("hosts");
    Ok(berth_net::dns::Responder::new(socket, hosts, upstreams)
        .with_search_domains(berth_net::search_domains(&resolv)))
}

/// The host's resolver configuration as containers start from it:
/// `BERTH_RESOLV_CONF` or `/etc/resolv.conf`, with a loopback stub's
/// nameserver (systemd-resolved's 127.0.0.53) replaced by its upstream
/// servers from `BERTH_UPSTREAM_RESOLV_CONF` or
/// `/run/systemd/resolve/resolv.conf` when that exists (docker's choice;
/// with neither, [`render_resolv_conf_with`] writes docker's defaults).
fn host_resolv_conf() -> String {
    let path = |knob: &str, default: &str| {
        std::env::var_os(knob)
            .filter(|value| !value.is_empty())
            .map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    let host =
        std::fs::read_to_string(path("BERTH_RESOLV_CONF", "/etc/resolv.conf")).unwrap_or_default();
    let upstream = std::fs::read_to_string(path(
        "BERTH_UPSTREAM_RESOLV_CONF",
        "/run/systemd/resolve/resolv.conf",
    ))
    .ok();
    berth_net::with_upstream_nameservers(&host, upstream.as_deref())
}

/// `--add-host NAME:IP` (docker's form; an IPv6 address may follow the
/// first colon).
pub fn parse_extra_host(entry: &str) -> anyhow::Result<(String, std::net::IpAddr)> {
    let (name, ip) = entry
        .split_once(':')
        .with_context(|| format!("invalid --add-host {entry:?}: use NAME:IP"))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    match ip.parse() {
        Ok(ip) if valid_name => Ok((name.to_owned(), ip)),
        _ => bail!("invalid --add-host {entry:?}: use NAME:IP"),
    }
}

/// A container connected by [`attach`].
#[derive(Debug, Default)]
pub struct Attached {
    /// The published host ports, bound: the caller holds them while the
    /// container runs.
    pub held_ports: Vec<berth_net::HeldPort>,
    /// The embedded DNS responder of a container on a user-defined
    /// network (see [`embedded_dns`]), bound and not serving yet.
    pub dns: Option<berth_net::dns::Responder>,
}

/// Connect the container whose init is `pid` and record the endpoint; the
/// /etc/hosts file gets its address and the other containers on the network.
/// On a user-defined network the embedded DNS responder is bound in the
/// same visit to the container's namespace (what [`embedded_dns`] does
/// on its own).
pub fn attach(
    paths: &Paths,
    containers: &ContainerStore,
    mode: &NetworkMode,
    record: &mut ContainerRecord,
    pid: i32,
) -> anyhow::Result<Attached> {
    if !matches!(
        mode,
        NetworkMode::Bridge {
            network: Some(_),
            ..
        }
    ) {
        return Ok(Attached::default());
    }
    let netns = berth_net::netns::open_netns(&berth_net::netns::netns_path(
        Path::new("/proc"),
        pid as u32,
    ))?;
    attach_in(paths, containers, mode, record, netns.as_fd(), true)
}

/// [`attach`] to the network namespace `netns`, without the embedded DNS
/// responder. Returns the published host ports, bound.
pub fn attach_to(
    paths: &Paths,
    containers: &ContainerStore,
    mode: &NetworkMode,
    record: &mut ContainerRecord,
    netns: std::os::fd::BorrowedFd<'_>,
) -> anyhow::Result<Vec<berth_net::HeldPort>> {
    attach_in(paths, containers, mode, record, netns, false).map(|a| a.held_ports)
}

/// [`attach`] to `netns`; with `with_dns`, the embedded DNS responder too
/// (on a user-defined network).
fn attach_in(
    paths: &Paths,
    containers: &ContainerStore,
    mode: &NetworkMode,
    record: &mut ContainerRecord,
    netns: std::os::fd::BorrowedFd<'_>,
    with_dns: bool,
) -> anyhow::Result<Attached> {
    let NetworkMode::Bridge {
        network: Some(network),
        ports,
    } = mode
    else {
        return Ok(Attached::default());
    };
    let mac = match &record.mac_address {
        Some(text) => {
            let mac = parse_mac_address(text)?;
            if let Some(holder) = mac_holder(containers, &network.name, &record.id, mac) {
                bail!(
                    "MAC address {mac} is already in use on network {} by container {holder}",
                    network.name
                );
            }
            Some(mac)
        }
        None => None,
    };
    let driver = driver(paths);
    if let Some(text) = &record.requested_ip {
        // Leased first: the attach then finds the container's lease.
        let wanted: Ipv4Addr = text
            .parse()
            .with_context(|| format!("invalid --ip {text:?}"))?;
        let mut txn = driver.ipam().transaction()?;
        txn.allocate_address(&network.pool(), &record.id, Some(wanted))?;
        txn.commit()?;
    }
    let request = berth_net::AttachRequest {
        ports,
        mac,
        embedded_dns: with_dns && is_user_defined(&record.network_mode),
    };
    let berth_net::Attachment {
        endpoint,
        held_ports,
        dns_socket,
    } = driver.attach_holding(network, &record.id, netns, &request)?;
    record.network = Some(serde_json::to_value(&endpoint)?);
    let mut joined = vec![network.name.clone()];
    // The networks `network connect` added while it was not running.
    let mut connections = connections_of(record);
    if !connections.is_empty() {
        let store = store(paths);
        for (position, connection) in connections.iter_mut().enumerate() {
            let extra = store.get(&connection.network)?;
            let index = u32::try_from(position + 1).unwrap_or(u32::MAX);
            let endpoint = driver
                .connect(&extra, &record.id, netns, index, connection.ip)
                .with_context(|| format!("cannot connect to network {}", extra.name))?;
            connection.endpoint = Some(endpoint);
            joined.push(extra.name);
        }
        set_connections(record, &connections)?;
        let saved = record.connections.clone();
        containers.update(&record.id, |r| r.connections = saved)?;
    }
    let etc_files = EtcFiles::new(&containers.container_dir(&record.id));
    if network.name == DEFAULT_NETWORK {
        // Its own address and names only, as docker's default network
        // has it (reading every record for neighbours made each start
        // slower the more containers ran).
        etc_files.write_hosts(record, Some(endpoint.ip), &[])?;
    }
    // On a user-defined network the refresh writes this container's file
    // too (it holds a lease there now), with the other members.
    crate::network_hosts::refresh(paths, containers, &joined)?;
    let dns = dns_socket
        .map(|socket| responder(containers, network, record, socket))
        .transpose()?;
    Ok(Attached { held_ports, dns })
}

/// docker 25's long form `--network name=NET[,alias=A][,ip=IP][,mac-address=MAC]`:
/// turned into `--network NET` and the flags it stands for. A value given
/// both ways is refused, as docker does.
pub fn expand_network_option(args: &mut crate::args::RunArgs) -> anyhow::Result<()> {
    if !args.net.contains('=') {
        return Ok(());
    }
    let spec = args.net.clone();
    let mut name = None;
    for field in spec.split(',') {
        let (key, value) = field
            .split_once('=')
            .with_context(|| format!("invalid --network {spec:?}: {field:?} is not KEY=VALUE"))?;
        let conflict = |flag: &str| {
            anyhow::anyhow!("conflicting options: --network {key}= and {flag}: give it once")
        };
        match key {
            "name" if name.is_none() && !value.is_empty() => name = Some(value.to_owned()),
            "alias" => args.network_alias.push(value.to_owned()),
            "ip" if args.ip.is_none() => args.ip = Some(value.to_owned()),
            "ip" => return Err(conflict("--ip")),
            "mac-address" if args.mac_address.is_none() => {
                args.mac_address = Some(value.to_owned())
            }
            "mac-address" => return Err(conflict("--mac-address")),
            _ => bail!(
                "invalid --network {spec:?}: berth takes name=, alias=, ip= and mac-address= (once each but alias)"
            ),
        }
    }
    args.net =
        name.with_context(|| format!("invalid --network {spec:?}: name=NETWORK is missing"))?;
    Ok(())
}

/// The address of a running container on its main network.
pub fn primary_ip(record: &ContainerRecord) -> Option<String> {
    let endpoint: berth_net::Endpoint = serde_json::from_value(record.network.clone()?).ok()?;
    Some(endpoint.ip.to_string())
}

/// `--mac-address`: six octets separated by `:` or `-`, unicast (docker
/// refuses a multicast one), not all zero.
pub fn parse_mac_address(text: &str) -> anyhow::Result<berth_net::MacAddr> {
    let mac: berth_net::MacAddr = text.replace('-', ":").parse().ok().with_context(|| {
        format!("invalid --mac-address {text:?}: use six hex octets such as 92:d0:c6:0a:29:33")
    })?;
    if mac.0[0] & 1 == 1 {
        bail!("invalid --mac-address {text:?}: it is a multicast address; a container needs a unicast one");
    }
    if mac.0 == [0; 6] {
        bail!("invalid --mac-address {text:?}: the all-zero address is not usable");
    }
    Ok(mac)
}

/// `run --mac-address`: checked, on a network the container gets an
/// interface on; the canonical text for the record.
pub fn check_mac_address(net: &str, mac: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(text) = mac else {
        return Ok(None);
    };
    if matches!(net, "none" | "host") || net.starts_with("container:") {
        bail!("conflicting options: --mac-address and --network {net} (the container has no interface of its own to set it on)");
    }
    Ok(Some(parse_mac_address(text)?.to_string()))
}

/// The name of a running container other than `own_id` with `mac` on
/// `network`.
fn mac_holder(
    containers: &ContainerStore,
    network: &str,
    own_id: &str,
    mac: berth_net::MacAddr,
) -> Option<String> {
    let records = containers.list().unwrap_or_default();
    records
        .into_iter()
        .filter(|r| r.id != own_id && r.is_active())
        .find(|r| {
            let main = endpoint_of(r).into_iter();
            let others = connections_of(r).into_iter().filter_map(|c| c.endpoint);
            main.chain(others)
                .any(|e| e.network == network && e.mac == mac)
        })
        .map(|r| r.name)
}

/// A network joined besides the main one (`network connect`), kept in the
/// container's record across stops and starts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Connection {
    pub network: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `--ip`: the address asked for.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// While connected (the container runs): the live endpoint.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
}

/// The record's additional networks.
pub fn connections_of(record: &ContainerRecord) -> Vec<Connection> {
    record
        .connections
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

fn set_connections(record: &mut ContainerRecord, connections: &[Connection]) -> anyhow::Result<()> {
    record.connections = connections
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    Ok(())
}

/// The network `--net` named (`bridge` when empty).
pub fn main_network_name(record: &ContainerRecord) -> String {
    if record.network_mode.is_empty() {
        DEFAULT_NETWORK.to_owned()
    } else {
        record.network_mode.clone()
    }
}

/// `--net none`, `host` or `container:X`: no interface, address or port of
/// its own.
fn has_no_network_of_its_own(record: &ContainerRecord) -> bool {
    let main = main_network_name(record);
    matches!(main.as_str(), "none" | "host") || main.starts_with("container:")
}

pub fn endpoint_of(record: &ContainerRecord) -> Option<Endpoint> {
    record
        .network
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// Give back the container's address and ports and remove its rules.
/// Idempotent and cheap; works after a crash at any point. `ended`: every
/// process of the container is gone, so the kernel is already deleting its
/// veth pair with its namespace (no need to wait for that).
pub fn release(paths: &Paths, container_id: &str, ended: bool) -> anyhow::Result<()> {
    if !paths.networks_dir().exists() {
        return Ok(());
    }
    // The veths of `network connect`: gone with the namespace once the
    // container ended; deleted here after a failed start.
    let containers = paths.containers().ok();
    let record = containers.as_ref().and_then(|c| c.load(container_id).ok());
    // A container without a network of its own never held a lease, a port
    // or a rule (`network connect` refuses it, and `disconnect` of the last
    // network releases before it records `none`): nothing to look up under
    // the IPAM lock. Without a record the full procedure runs.
    if record.as_ref().is_some_and(has_no_network_of_its_own) {
        return Ok(());
    }
    let driver = driver(paths);
    if !ended {
        for connection in record.iter().flat_map(connections_of) {
            if let Some(endpoint) = connection.endpoint {
                driver
                    .disconnect(&endpoint.network, container_id, &endpoint.host_veth)
                    .with_context(|| {
                        format!(
                            "cannot disconnect container {container_id} from {}",
                            endpoint.network
                        )
                    })?;
            }
        }
    }
    let detached = if ended {
        driver.detach_ended(container_id)
    } else {
        driver.detach(container_id)
    };
    let report = detached
        .with_context(|| format!("cannot release the network of container {container_id}"))?;
    if let Some(containers) = &containers {
        // The network is released; names that linger in the others'
        // files until their next refresh are not worth failing for.
        let left: Vec<String> = report.addresses.into_iter().map(|(n, _)| n).collect();
        let _ = crate::network_hosts::refresh(paths, containers, &left);
    }
    Ok(())
}

pub fn command(paths: &Paths, command: &NetworkCommand) -> anyhow::Result<i32> {
    if matches!(
        command,
        NetworkCommand::Create(_) | NetworkCommand::Connect(_)
    ) {
        firewall_kind()?;
    }
    match command {
        NetworkCommand::Create(args) => create(paths, args),
        NetworkCommand::Ls => list(paths),
        NetworkCommand::Inspect { names } => inspect(paths, names),
        NetworkCommand::Rm { names } => remove(paths, names),
        NetworkCommand::Prune(args) => crate::prune::network_prune(paths, args),
        NetworkCommand::Connect(args) => connect(paths, args),
        NetworkCommand::Disconnect(args) => disconnect(paths, args),
    }
}

/// `--network-alias` (or `network connect --alias`) on `network`: docker
/// gives aliases on user-defined networks only. Duplicates dropped.
pub fn check_aliases(network: &str, aliases: &[String]) -> anyhow::Result<Vec<String>> {
    if aliases.is_empty() {
        return Ok(Vec::new());
    }
    if !is_user_defined(network) {
        bail!("network-scoped aliases are supported only for containers in user-defined networks (not {:?})", if network.is_empty() { DEFAULT_NETWORK } else { network });
    }
    let mut kept: Vec<String> = Vec::new();
    for alias in aliases {
        let valid = !alias.is_empty()
            && alias.len() <= 253
            && alias
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !valid {
            bail!("invalid network alias {alias:?}: use letters, digits, '-', '.' and '_'");
        }
        if !kept.contains(alias) {
            kept.push(alias.clone());
        }
    }
    Ok(kept)
}

/// `run --ip`: docker takes it on user-defined networks only, inside
/// their subnet.
pub fn check_requested_ip(
    paths: &Paths,
    net: &str,
    ip: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let Some(text) = ip else {
        return Ok(None);
    };
    if !is_user_defined(net) {
        bail!("user specified IP address is supported on user defined networks only");
    }
    let network = store(paths).get(net)?;
    let ip: Ipv4Addr = text
        .parse()
        .ok()
        .filter(|ip| network.subnet.contains(ip))
        .with_context(|| {
            format!(
                "invalid --ip {text:?}: not an IPv4 address in {net} ({})",
                network.subnet
            )
        })?;
    Ok(Some(ip.to_string()))
}

/// The container's init pid when it runs (its network namespace exists).
fn running_pid(record: &ContainerRecord) -> Option<i32> {
    record
        .pid
        .filter(|_| record.is_active() && crate::container::is_alive(record))
}

/// The interface number for a new live connection: the smallest one that
/// no live connection uses (eth1, eth2, ...).
fn free_interface_index(connections: &[Connection]) -> Option<u32> {
    let used: Vec<u32> = connections
        .iter()
        .filter_map(|c| c.endpoint.as_ref())
        .filter_map(|e| e.container_ifname.strip_prefix("eth")?.parse().ok())
        .collect();
    (1..=99).find(|index| !used.contains(index))
}

/// `network connect [--ip IP] [--alias A]... NETWORK CONTAINER`: live on a
/// running container (a new `eth<N>`), recorded on a stopped one (joined
/// at its next start).
fn connect(paths: &Paths, args: &crate::args::NetworkConnectArgs) -> anyhow::Result<i32> {
    let containers = paths.containers()?;
    let record = crate::container::find(&containers, &args.container)?;
    let network = store(paths).get(&args.network)?;
    let main = main_network_name(&record);
    if has_no_network_of_its_own(&record) {
        bail!(
            "container {} cannot be connected to network {}: it runs with --network {main}",
            record.name,
            network.name
        );
    }
    let aliases = check_aliases(&network.name, &args.alias)?;
    if args.ip.is_some() && network.name == DEFAULT_NETWORK {
        bail!("user specified IP address is supported on user defined networks only");
    }
    let ip = match &args.ip {
        Some(text) => Some(
            text.parse::<Ipv4Addr>()
                .ok()
                .filter(|ip| network.subnet.contains(ip))
                .with_context(|| {
                    format!(
                        "invalid --ip {text:?}: not an IPv4 address in {} ({})",
                        network.name, network.subnet
                    )
                })?,
        ),
        None => None,
    };
    let connections = connections_of(&record);
    if main == network.name || connections.iter().any(|c| c.network == network.name) {
        bail!(
            "container {} is already connected to network {}",
            record.name,
            network.name
        );
    }
    let mut connection = Connection {
        network: network.name.clone(),
        aliases,
        ip,
        endpoint: None,
    };
    let driver = driver(paths);
    let running = running_pid(&record);
    if let Some(pid) = running {
        let index = free_interface_index(&connections)
            .with_context(|| format!("container {} has too many networks", record.name))?;
        let netns = berth_net::netns::open_netns(&berth_net::netns::netns_path(
            Path::new("/proc"),
            pid as u32,
        ))?;
        driver
            .ensure(&network)
            .with_context(|| format!("cannot set up network {}", network.name))?;
        let endpoint = driver
            .connect(&network, &record.id, netns.as_fd(), index, ip)
            .with_context(|| {
                format!("cannot connect {} to network {}", record.name, network.name)
            })?;
        connection.endpoint = Some(endpoint);
    }
    let saved = containers.update(&record.id, |r| {
        // Whatever else changed meanwhile is kept; this one is added.
        let mut current = connections_of(r);
        current.retain(|c| c.network != network.name);
        current.push(connection.clone());
        r.connections = current
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
    });
    if let Err(error) = saved {
        if let Some(endpoint) = &connection.endpoint {
            let _ = driver.disconnect(&network.name, &record.id, &endpoint.host_veth);
        }
        return Err(error.into());
    }
    if running.is_some() {
        crate::network_hosts::refresh(paths, &containers, std::slice::from_ref(&network.name))?;
    }
    Ok(0)
}

/// `network disconnect [-f] NETWORK CONTAINER`: its interface on that
/// network goes at once if it runs; the record forgets the network.
/// Disconnecting the main network makes the first connected one main.
fn disconnect(paths: &Paths, args: &crate::args::NetworkDisconnectArgs) -> anyhow::Result<i32> {
    let containers = paths.containers()?;
    let record = crate::container::find(&containers, &args.container)?;
    let network = match store(paths).get(&args.network) {
        Ok(network) => network.name,
        // -f: the network may be gone already.
        Err(_) if args.force => args.network.clone(),
        Err(e) => return Err(e.into()),
    };
    let main = main_network_name(&record);
    let connections = connections_of(&record);
    let connection = connections.iter().find(|c| c.network == network).cloned();
    let is_main = main == network;
    if !is_main && connection.is_none() {
        if args.force {
            // A lease a killed `network connect` took before recording it.
            driver(paths).ipam().release(&network, &record.id)?;
            return Ok(0);
        }
        bail!(
            "container {} is not connected to network {network}",
            record.name
        );
    }
    let driver = driver(paths);
    if running_pid(&record).is_some() {
        let host_veth = if is_main {
            endpoint_of(&record)
                .map(|e| e.host_veth)
                .map_or_else(|| berth_net::host_veth_name(&record.id), Ok)?
        } else {
            match connection.as_ref().and_then(|c| c.endpoint.as_ref()) {
                Some(endpoint) => endpoint.host_veth.clone(),
                None => String::new(),
            }
        };
        if !host_veth.is_empty() {
            let result = driver.disconnect(&network, &record.id, &host_veth);
            if let Err(errors) = result {
                if !args.force {
                    return Err(errors).with_context(|| {
                        format!("cannot disconnect {} from network {network}", record.name)
                    });
                }
            }
        }
    } else {
        // Not running: at most a lease left by a crash.
        let _ = driver.ipam().release(&network, &record.id);
    }
    containers.update(&record.id, |r| {
        let mut rest = connections_of(r);
        rest.retain(|c| c.network != network);
        if is_main {
            r.publish.clear();
            match rest.is_empty() {
                true => {
                    r.network_mode = "none".to_owned();
                    r.network = None;
                    r.network_aliases.clear();
                }
                false => {
                    let promoted = rest.remove(0);
                    r.network_mode = promoted.network.clone();
                    r.network_aliases = promoted.aliases.clone();
                    r.network = promoted
                        .endpoint
                        .as_ref()
                        .and_then(|e| serde_json::to_value(e).ok());
                }
            }
        }
        r.connections = rest
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
    })?;
    crate::network_hosts::refresh_also(
        paths,
        &containers,
        std::slice::from_ref(&network),
        Some(&record.id),
    )?;
    Ok(0)
}

/// docker's `NetworkSettings.Networks` entries of the networks joined with
/// `network connect` (the main network's entry is built by inspect).
pub fn connected_networks_json(
    paths: &Paths,
    record: &ContainerRecord,
) -> Vec<(String, serde_json::Value)> {
    let running = record.is_active();
    let networks = store(paths);
    connections_of(record)
        .into_iter()
        .map(|c| {
            let endpoint = c.endpoint.filter(|_| running);
            let text = |f: fn(&Endpoint) -> String| endpoint.as_ref().map(f).unwrap_or_default();
            let id = networks.get(&c.network).map(|n| n.id).unwrap_or_default();
            let value = serde_json::json!({
                "NetworkID": id,
                "EndpointID": "",
                "Aliases": c.aliases,
                "Gateway": text(|e| e.gateway.to_string()),
                "IPAddress": text(|e| e.ip.to_string()),
                "IPPrefixLen": endpoint.as_ref().map_or(0, |e| e.prefix_len),
                "MacAddress": text(|e| e.mac.to_string()),
                "GlobalIPv6Address": text(|e| e.ipv6.map(|ip| ip.to_string()).unwrap_or_default()),
                "GlobalIPv6PrefixLen": endpoint.as_ref().and_then(|e| e.ipv6_prefix_len).unwrap_or(0),
                "IPv6Gateway": text(|e| e.ipv6_gateway.map(|ip| ip.to_string()).unwrap_or_default()),
            });
            (c.network, value)
        })
        .collect()
}

fn create(paths: &Paths, args: &NetworkCreateArgs) -> anyhow::Result<i32> {
    paths.ensure_root()?;
    let store = store(paths);
    // docker's repeatable --subnet: one IPv4 and one IPv6 at most.
    let (ipv6_subnets, ipv4_subnets): (Vec<&String>, Vec<&String>) =
        args.subnet.iter().partition(|s| s.contains(':'));
    if ipv4_subnets.len() > 1 || ipv6_subnets.len() > 1 {
        bail!("give at most one IPv4 and one IPv6 --subnet");
    }
    let subnet = ipv4_subnets.first().map(|s| (*s).clone());
    let in_use = if subnet.is_none() {
        berth_net::Netlink::connect()
            .and_then(|mut netlink| netlink.ipv4_prefixes_in_use())
            .context("cannot read the host's addresses and routes")?
    } else {
        Vec::new()
    };
    let network = store.create(&NetworkRequest {
        name: args.name.clone(),
        driver: Some(args.driver.clone()),
        subnet,
        gateway: args.gateway.clone(),
        internal: args.internal,
        labels: crate::volume::key_values("--label", &args.label)?,
        ip_range: args.ip_range.clone(),
        ipv6: args.ipv6,
        ipv6_subnet: ipv6_subnets.first().map(|s| (*s).clone()),
        in_use,
    })?;
    match driver(paths).setup(&network) {
        Ok(report) => {
            if report.ip_forward_enabled {
                eprintln!("berth: turned on net.ipv4.ip_forward so that containers can reach other networks");
            }
            if report.ipv6_forward_enabled {
                eprintln!("berth: turned on net.ipv6.conf.all.forwarding so that containers can reach other networks over IPv6");
            }
            println!("{}", network.id);
            Ok(0)
        }
        Err(error) => {
            let _ = driver(paths).teardown(&network);
            let _ = store.remove(&network.name);
            Err(error).with_context(|| format!("cannot set up network {}", network.name))
        }
    }
}

fn list(paths: &Paths) -> anyhow::Result<i32> {
    let networks = store(paths).list()?;
    let rows: Vec<Vec<String>> = networks
        .iter()
        .map(|n| {
            vec![
                n.id[..12].to_owned(),
                n.name.clone(),
                n.driver.clone(),
                n.subnet.to_string(),
                n.gateway.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &["NETWORK ID", "NAME", "DRIVER", "SUBNET", "GATEWAY"],
            &rows
        )
    );
    Ok(0)
}

fn inspect(paths: &Paths, names: &[String]) -> anyhow::Result<i32> {
    let store = store(paths);
    let containers = paths.containers()?;
    let records = crate::container::list(&containers)?;
    let mut out = Vec::new();
    for name in names {
        let network = store.get(name)?;
        let members: Vec<serde_json::Value> = records
            .iter()
            .filter_map(|r| {
                let connected = || {
                    connections_of(r)
                        .into_iter()
                        .filter(|_| r.is_active())
                        .find_map(|c| c.endpoint.filter(|e| e.network == network.name))
                };
                let endpoint = endpoint_of(r)
                    .filter(|e| e.network == network.name)
                    .or_else(connected)?;
                Some(serde_json::json!({ "container": r.name, "id": r.id, "endpoint": endpoint }))
            })
            .collect();
        let mut value = serde_json::to_value(&network)?;
        value["containers"] = serde_json::Value::Array(members);
        // docker's shape of the address settings.
        let mut config = serde_json::json!({
            "Subnet": network.subnet.to_string(),
            "Gateway": network.gateway.to_string(),
        });
        if let Some(range) = network.ip_range {
            config["IPRange"] = range.to_string().into();
        }
        let mut configs = vec![config];
        if let (Some(subnet), Some(gateway)) = (network.ipv6_subnet, network.ipv6_gateway) {
            configs.push(serde_json::json!({
                "Subnet": subnet.to_string(),
                "Gateway": gateway.to_string(),
            }));
        }
        value["EnableIPv6"] = network.ipv6_subnet.is_some().into();
        value["IPAM"] = serde_json::json!({ "Driver": "default", "Config": configs });
        out.push(value);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}

fn remove(paths: &Paths, names: &[String]) -> anyhow::Result<i32> {
    let store = store(paths);
    let containers = crate::container::list(&paths.containers()?)?;
    let mut failed = false;
    for name in names {
        let result = (|| -> anyhow::Result<()> {
            if name == DEFAULT_NETWORK {
                bail!("{name} is a pre-defined network and cannot be removed");
            }
            let network = store.get(name)?;
            if let Some(user) = containers.iter().find(|r| {
                let connected = endpoint_of(r).is_some_and(|e| e.network == network.name)
                    || connections_of(r).iter().any(|c| c.network == network.name);
                connected && r.is_active()
            }) {
                bail!("cannot remove network {name}: container {} is connected to it; remove the container first", user.name);
            }
            driver(paths)
                .teardown(&network)
                .with_context(|| format!("cannot remove network {name}"))?;
            store.remove(name)?;
            Ok(())
        })();
        match result {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("berth: {e:#}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

/// Tear down and forget every network `unused` selects (given the network
/// and its record file); their names. Stops at the first failure.
pub fn remove_unused(
    paths: &Paths,
    unused: impl Fn(&berth_net::NetworkConfig, &Path) -> bool,
) -> anyhow::Result<Vec<String>> {
    let store = store(paths);
    let mut removed = Vec::new();
    for network in store.list()? {
        let record_file = store.dir().join(format!("{}.json", network.name));
        if !unused(&network, &record_file) {
            continue;
        }
        driver(paths)
            .teardown(&network)
            .with_context(|| format!("cannot remove network {}", network.name))?;
        store.remove(&network.name)?;
        removed.push(network.name);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_need_a_user_network_and_valid_names() {
        let aliases = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            check_aliases("web", &aliases(&["db", "db", "cache.local"])).unwrap(),
            ["db", "cache.local"]
        );
        assert!(check_aliases("bridge", &[]).unwrap().is_empty());
        for network in ["bridge", "", "none", "host", "container:x"] {
            let err = check_aliases(network, &aliases(&["db"])).unwrap_err();
            assert!(err.to_string().contains("user-defined"), "{network}: {err}");
        }
        for bad in ["", "a b", "a/b", "x\n"] {
            assert!(check_aliases("web", &aliases(&[bad])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn live_connections_take_the_lowest_free_interface_number() {
        let endpoint = |ifname: &str| Endpoint {
            network: "n".into(),
            container_id: "c".into(),
            ip: Ipv4Addr::new(10, 0, 0, 2),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            mac: berth_net::MacAddr::from_ipv4(Ipv4Addr::new(10, 0, 0, 2)),
            bridge: "br-x".into(),
            host_veth: "vbx".into(),
            container_ifname: ifname.into(),
            ports: Vec::new(),
            ipv6: None,
            ipv6_prefix_len: None,
            ipv6_gateway: None,
        };
        let connection = |ifname: Option<&str>| Connection {
            network: "n".into(),
            aliases: Vec::new(),
            ip: None,
            endpoint: ifname.map(endpoint),
        };
        assert_eq!(free_interface_index(&[]), Some(1));
        let live = [
            connection(Some("eth1")),
            connection(None),
            connection(Some("eth3")),
        ];
        assert_eq!(free_interface_index(&live), Some(2));
        let full: Vec<Connection> = (1..=99)
            .map(|i| connection(Some(&format!("eth{i}"))))
            .collect();
        assert_eq!(free_interface_index(&full), None);
    }

    #[test]
    fn the_long_network_form_becomes_flags() {
        use clap::Parser;
        let parse = |argv: &[&str]| {
            let mut all = vec!["berth", "run"];
            all.extend_from_slice(argv);
            all.push("busybox");
            match crate::args::Cli::try_parse_from(all).unwrap().command {
                crate::args::Command::Run(args) => *args,
                _ => unreachable!(),
            }
        };
        let mut args = parse(&[
            "--network",
            "name=web,alias=a1,ip=10.0.0.5,mac-address=92:d0:c6:0a:29:33,alias=a2",
        ]);
        expand_network_option(&mut args).unwrap();
        assert_eq!(args.net, "web");
        assert_eq!(args.network_alias, ["a1", "a2"]);
        assert_eq!(args.ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(args.mac_address.as_deref(), Some("92:d0:c6:0a:29:33"));
        let mut plain = parse(&["--network", "web"]);
        expand_network_option(&mut plain).unwrap();
        assert_eq!(plain.net, "web");
        for bad in [
            vec!["--network", "alias=x"],
            vec!["--network", "name=a,name=b"],
            vec!["--network", "name=a,driver-opt=x=y"],
            vec!["--network", "name=a,nonsense"],
            vec!["--network", "name=a,ip=10.0.0.5", "--ip", "10.0.0.6"],
            vec![
                "--network",
                "name=a,mac-address=92:d0:c6:0a:29:33",
                "--mac-address",
                "92:d0:c6:0a:29:34",
            ],
        ] {
            let mut args = parse(&bad);
            let err = expand_network_option(&mut args).unwrap_err().to_string();
            assert!(!err.contains('\n'), "{bad:?}: {err}");
        }
    }

    #[test]
    fn mac_addresses_are_six_unicast_octets() {
        let canonical = |t: &str| parse_mac_address(t).map(|m| m.to_string()).ok();
        assert_eq!(
            canonical("92:D0:c6:0a:29:33").as_deref(),
            Some("92:d0:c6:0a:29:33")
        );
        assert_eq!(
            canonical("02-42-0a-00-00-09").as_deref(),
            Some("02:42:0a:00:00:09")
        );
        for bad in [
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
            "92:d0:c6:0a:29",
            "92:d0:c6:0a:29:33:44",
            "92:d0:c6:0a:29:3g",
            "",
        ] {
            let err = parse_mac_address(bad).unwrap_err().to_string();
            assert!(
                err.contains("--mac-address") && !err.contains('\n'),
                "{bad}: {err}"
            );
        }
        assert!(check_mac_address("none", Some("92:d0:c6:0a:29:33")).is_err());
        assert!(check_mac_address("container:x", Some("92:d0:c6:0a:29:33")).is_err());
        assert_eq!(check_mac_address("bridge", None).unwrap(), None);
    }

    #[test]
    fn per_root_bridge_names_fit_and_differ() {
        let a = root_bridge_name(Path::new("/tmp/a"));
        let b = root_bridge_name(Path::new("/tmp/b"));
        assert_ne!(a, b);
        assert!(a.starts_with("berth-") && a.len() <= 15, "{a}");
        assert_eq!(a, root_bridge_name(Path::new("/tmp/a")));
    }
}
