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

fn driver(paths: &Paths) -> BridgeDriver {
    BridgeDriver::new(&paths.networks_dir())
}

/// Resolve `--net` and `-p` before anything is created (only the default
/// network's record may be made, on first use, as docker has it always).
pub fn plan(paths: &Paths, net: &str, publish: &[String]) -> anyhow::Result<NetworkMode> {
    let ports = publish
        .iter()
        .map(|p| p.parse::<PortMapping>())
        .collect::<Result<Vec<_>, _>>()?;
    for (i, port) in ports.iter().enumerate() {
        let seen = &ports[..i];
        if port.host_port != 0
            && seen
                .iter()
                .any(|p| p.host_port == port.host_port && p.protocol == port.protocol)
        {
            bail!(
                "host port {}/{} is given twice: publish each host port once",
                port.host_port,
                port.protocol
            );
        }
    }
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

/// The state root berth uses unless told otherwise: its default network
/// is docker's (`berth0`, 172.17.0.0/16).
const DEFAULT_ROOT: &str = "/var/lib/berth";

/// The default network's record, made on first use. The default root's is
/// `berth0` on 172.17.0.0/16. Any other root gets a bridge named after
/// its path (`berth-<8 hex>`) and the first free subnet of the default
/// pools that no host address or route uses (another root's bridge
/// included): two roots never share a bridge, nor hand out one address
/// twice on one link.
fn ensure_default_network(paths: &Paths) -> anyhow::Result<NetworkConfig> {
    let store = store(paths);
    let canonical = std::fs::canonicalize(paths.root()).unwrap_or_else(|_| paths.root().into());
    if canonical == Path::new(DEFAULT_ROOT) {
        return Ok(store.ensure_default(berth_net::DEFAULT_SUBNET)?);
    }
    if let Ok(existing) = store.get(DEFAULT_NETWORK) {
        return Ok(existing);
    }
    let in_use = berth_net::Netlink::connect()
        .and_then(|mut netlink| netlink.ipv4_prefixes_in_use())
        .context("cannot read the host's addresses and routes")?;
    let bridge = root_bridge_name(&canonical);
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
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let names = [record.name.as_str()];
        let mut entries = others.to_vec();
        for entry in &record.extra_hosts {
            let (name, ip) = parse_extra_host(entry)?;
            entries.push(HostsEntry::new(ip, [name]));
        }
        let dns = berth_net::DnsSettings {
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
        for (name, text) in [
            (
                "hosts",
                render_hosts(&record.hostname, own_ip, &names, &entries),
            ),
            ("resolv.conf", render_resolv_conf_with(&host_resolv, &dns)),
            ("hostname", render_hostname(&record.hostname)),
        ] {
            let path = self.dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
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

/// Connect the container whose init is `pid` and record the endpoint; the
/// /etc/hosts file gets its address and the other containers on the network.
pub fn attach(
    paths: &Paths,
    containers: &ContainerStore,
    mode: &NetworkMode,
    record: &mut ContainerRecord,
    pid: i32,
) -> anyhow::Result<()> {
    let NetworkMode::Bridge {
        network: Some(network),
        ports,
    } = mode
    else {
        return Ok(());
    };
    let netns = berth_net::netns::open_netns(&berth_net::netns::netns_path(
        Path::new("/proc"),
        pid as u32,
    ))?;
    let endpoint = driver(paths).attach(network, &record.id, netns.as_fd(), ports)?;
    record.network = Some(serde_json::to_value(&endpoint)?);
    let others = neighbours(containers, &network.name, &record.id);
    EtcFiles::new(&containers.container_dir(&record.id)).write(
        record,
        Some(endpoint.ip),
        &others,
    )?;
    Ok(())
}

/// Running containers on `network`, for /etc/hosts.
fn neighbours(containers: &ContainerStore, network: &str, own_id: &str) -> Vec<HostsEntry> {
    let records = containers.list().unwrap_or_default();
    records
        .iter()
        .filter(|r| r.id != own_id && r.is_active())
        .filter_map(|r| {
            let endpoint = endpoint_of(r)?;
            (endpoint.network == network)
                .then(|| HostsEntry::new(endpoint.ip, [r.name.clone(), r.hostname.clone()]))
        })
        .collect()
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
    let driver = driver(paths);
    let detached = if ended {
        driver.detach_ended(container_id)
    } else {
        driver.detach(container_id)
    };
    detached
        .map(drop)
        .with_context(|| format!("cannot release the network of container {container_id}"))
}

pub fn command(paths: &Paths, command: &NetworkCommand) -> anyhow::Result<i32> {
    match command {
        NetworkCommand::Create(args) => create(paths, args),
        NetworkCommand::Ls => list(paths),
        NetworkCommand::Inspect { names } => inspect(paths, names),
        NetworkCommand::Rm { names } => remove(paths, names),
        NetworkCommand::Prune(args) => crate::prune::network_prune(paths, args),
    }
}

fn create(paths: &Paths, args: &NetworkCreateArgs) -> anyhow::Result<i32> {
    paths.ensure_root()?;
    let store = store(paths);
    let in_use = if args.subnet.is_none() {
        berth_net::Netlink::connect()
            .and_then(|mut netlink| netlink.ipv4_prefixes_in_use())
            .context("cannot read the host's addresses and routes")?
    } else {
        Vec::new()
    };
    let network = store.create(&NetworkRequest {
        name: args.name.clone(),
        driver: Some(args.driver.clone()),
        subnet: args.subnet.clone(),
        gateway: args.gateway.clone(),
        internal: args.internal,
        in_use,
    })?;
    match driver(paths).setup(&network) {
        Ok(report) => {
            if report.ip_forward_enabled {
                eprintln!("berth: turned on net.ipv4.ip_forward so that containers can reach other networks");
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
                let endpoint = endpoint_of(r).filter(|e| e.network == network.name)?;
                Some(serde_json::json!({ "container": r.name, "id": r.id, "endpoint": endpoint }))
            })
            .collect();
        let mut value = serde_json::to_value(&network)?;
        value["containers"] = serde_json::Value::Array(members);
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
                endpoint_of(r).is_some_and(|e| e.network == network.name) && r.is_active()
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
