//! Network records: one JSON file per network under a directory passed in
//! (e.g. `<state root>/networks`), created and removed under an exclusive
//! lock so that names stay unique and subnets never overlap.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::ipam::{AddressPool, AddressPool6, MAX_PREFIX, MAX_PREFIX6, MIN_PREFIX, MIN_PREFIX6};
use crate::persist::{self, FileLock};

/// docker's name for the default network.
pub const DEFAULT_NETWORK: &str = "bridge";
/// The bridge interface of the default network.
pub const DEFAULT_BRIDGE: &str = "berth0";
/// The only driver there is.
pub const BRIDGE_DRIVER: &str = "bridge";
/// docker's default subnet, used when the caller has no better idea.
pub const DEFAULT_SUBNET: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(172, 17, 0, 0), 16) {
    Ok(net) => net,
    Err(_) => panic!("valid constant"),
};

/// Names that mean something else to `--net` and cannot be created.
const RESERVED_NAMES: [&str; 3] = ["bridge", "host", "none"];

/// A bridge network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub name: String,
    /// 64 hex digits.
    pub id: String,
    /// Always `bridge`.
    pub driver: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The bridge interface on the host: `berth0` for the default network,
    /// `br-<first 12 hex of the id>` for the others.
    pub bridge: String,
    /// docker's `--internal`: containers reach each other but nothing
    /// outside (no masquerade, no forwarding out, no default route).
    #[serde(default)]
    pub internal: bool,
    /// `--label K=V`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--ip-range`: the part of the subnet containers' addresses are
    /// chosen from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv4Net>,
    /// `--ipv6 --subnet fd00:1::/64`: the IPv6 subnet (dual stack with
    /// the IPv4 one); `None`: IPv4 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_subnet: Option<Ipv6Net>,
    /// The bridge's IPv6 address: the subnet's `::1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<Ipv6Addr>,
}

impl NetworkConfig {
    /// The network's IPv6 address pool, if it has IPv6.
    pub fn pool6(&self) -> Option<AddressPool6> {
        Some(AddressPool6 {
            network: self.name.clone(),
            subnet: self.ipv6_subnet?,
            gateway: self.ipv6_gateway?,
        })
    }

    /// The IPv6 gateway with the subnet's prefix, as it is set on the bridge.
    pub fn ipv6_gateway_net(&self) -> Option<Ipv6Net> {
        Ipv6Net::new(self.ipv6_gateway?, self.ipv6_subnet?.prefix_len()).ok()
    }

    /// The network's address pool, for [`crate::Ipam`].
    pub fn pool(&self) -> AddressPool {
        AddressPool {
            network: self.name.clone(),
            subnet: self.subnet,
            gateway: self.gateway,
            range: self.ip_range,
        }
    }

    /// The gateway with the subnet's prefix, as it is set on the bridge.
    pub fn gateway_net(&self) -> Ipv4Net {
        Ipv4Net::new(self.gateway, self.subnet.prefix_len()).expect("prefix of a valid subnet")
    }
}

/// What `berth network create` asks for, as the user typed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkRequest {
    pub name: String,
    /// `None` means `bridge`.
    pub driver: Option<String>,
    /// CIDR, e.g. `10.10.0.0/24`; `None`: the first subnet of
    /// [`default_address_pools`] that overlaps neither another network
    /// nor any of `in_use`.
    pub subnet: Option<String>,
    /// Default: the first host address of the subnet.
    pub gateway: Option<String>,
    /// `--internal`.
    pub internal: bool,
    /// `--label K=V`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--ip-range`, CIDR inside the subnet.
    pub ip_range: Option<String>,
    /// `--ipv6`.
    pub ipv6: bool,
    /// The IPv6 `--subnet` (needs `ipv6`).
    pub ipv6_subnet: Option<String>,
    /// Prefixes the host already routes or has addresses in (see
    /// [`crate::Netlink::ipv4_prefixes_in_use`]); a chosen subnet avoids them.
    pub in_use: Vec<Ipv4Net>,
}

/// Errors from network records; each names the network or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("network record {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid network name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*")]
    InvalidName { name: String },
    #[error("network name {name:?} is reserved")]
    ReservedName { name: String },
    #[error("network {name} already exists")]
    NameTaken { name: String },
    #[error("network {name} not found")]
    NotFound { name: String },
    #[error("unknown network driver {driver:?} (only \"bridge\" is supported)")]
    UnknownDriver { driver: String },
    #[error("invalid subnet {subnet:?}: expected an IPv4 CIDR such as 10.10.0.0/24")]
    InvalidCidr { subnet: String },
    #[error("invalid subnet {subnet}: the prefix must be /{MIN_PREFIX} to /{MAX_PREFIX}")]
    PrefixOutOfRange { subnet: Ipv4Net },
    #[error("invalid subnet {subnet}: host bits are set (did you mean {}?)", subnet.trunc())]
    HostBitsSet { subnet: Ipv4Net },
    #[error("invalid gateway {gateway:?}: expected an IPv4 address")]
    InvalidGatewayAddress { gateway: String },
    #[error("gateway {gateway} is not a host address of subnet {subnet}")]
    GatewayOutsideSubnet { gateway: Ipv4Addr, subnet: Ipv4Net },
    #[error("invalid IP range {range:?}: expected an IPv4 CIDR such as 10.10.0.128/25")]
    InvalidIpRange { range: String },
    #[error("IP range {range} is not inside subnet {subnet}")]
    IpRangeOutsideSubnet { range: Ipv4Net, subnet: Ipv4Net },
    #[error("invalid IPv6 subnet {subnet:?}: expected a CIDR such as fd00:1::/64, prefix /{MIN_PREFIX6} to /{MAX_PREFIX6}, host bits clear")]
    InvalidCidr6 { subnet: String },
    #[error("an IPv6 subnet ({subnet}) needs --ipv6")]
    Ipv6NotEnabled { subnet: String },
    #[error("--ipv6 needs an IPv6 --subnet, such as fd00:1::/64")]
    Ipv6WithoutSubnet,
    #[error("IPv6 subnet {subnet} overlaps {existing} of network {network}")]
    Overlap6 {
        subnet: Ipv6Net,
        network: String,
        existing: Ipv6Net,
    },
    #[error("no free subnet left in the default address pools (172.17-31.0.0/16, 192.168.0.0/16 in /20s): give one with --subnet")]
    PoolsExhausted,
    #[error("subnet {subnet} overlaps {existing} of network {network}")]
    Overlap {
        subnet: Ipv4Net,
        network: String,
        existing: Ipv4Net,
    },
}

impl NetworkError {
    fn io(path: &Path, source: io::Error) -> Self {
        NetworkError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Whether `name` matches `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (and is at most
/// 64 characters), so it is safe as a file name.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Validate a subnet and gateway (given as text) into typed values.
pub fn parse_subnet(
    subnet: &str,
    gateway: Option<&str>,
) -> Result<(Ipv4Net, Ipv4Addr), NetworkError> {
    let subnet: Ipv4Net = subnet
        .trim()
        .parse()
        .map_err(|_| NetworkError::InvalidCidr {
            subnet: subnet.to_owned(),
        })?;
    check_subnet(subnet)?;
    let gateway = match gateway {
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| NetworkError::InvalidGatewayAddress {
                gateway: text.to_owned(),
            })?,
        None => Ipv4Addr::from(u32::from(subnet.network()) + 1),
    };
    if !subnet.contains(&gateway) || gateway == subnet.network() || gateway == subnet.broadcast() {
        return Err(NetworkError::GatewayOutsideSubnet { gateway, subnet });
    }
    Ok((subnet, gateway))
}

/// An IPv6 `--subnet`: a CIDR with the host bits clear, /64 to /120.
pub fn parse_subnet6(text: &str) -> Result<Ipv6Net, NetworkError> {
    let invalid = || NetworkError::InvalidCidr6 {
        subnet: text.to_owned(),
    };
    let subnet: Ipv6Net = text.trim().parse().map_err(|_| invalid())?;
    if !(MIN_PREFIX6..=MAX_PREFIX6).contains(&subnet.prefix_len()) || subnet.trunc() != subnet {
        return Err(invalid());
    }
    Ok(subnet)
}

/// docker's `--ip-range`: a CIDR inside `subnet` (host bits cleared, as
/// docker does).
pub fn parse_ip_range(text: &str, subnet: Ipv4Net) -> Result<Ipv4Net, NetworkError> {
    let range: Ipv4Net = text
        .trim()
        .parse()
        .map_err(|_| NetworkError::InvalidIpRange {
            range: text.to_owned(),
        })?;
    let range = range.trunc();
    if !subnet.contains(&range) {
        return Err(NetworkError::IpRangeOutsideSubnet { range, subnet });
    }
    Ok(range)
}

fn check_subnet(subnet: Ipv4Net) -> Result<(), NetworkError> {
    if !(MIN_PREFIX..=MAX_PREFIX).contains(&subnet.prefix_len()) {
        return Err(NetworkError::PrefixOutOfRange { subnet });
    }
    if subnet.trunc() != subnet {
        return Err(NetworkError::HostBitsSet { subnet });
    }
    Ok(())
}

/// Where a subnet is chosen when none is given, in order: docker's
/// default address pools, 172.17.0.0/16 .. 172.31.0.0/16, then
/// 192.168.0.0/16 cut into /20s.
pub fn default_address_pools() -> Vec<Ipv4Net> {
    let sixteens = (17..=31)
        .map(|b| Ipv4Addr::new(172, b, 0, 0))
        .map(|a| (a, 16));
    let twenties = (0..16u8)
        .map(|i| Ipv4Addr::new(192, 168, i * 16, 0))
        .map(|a| (a, 20));
    sixteens
        .chain(twenties)
        .filter_map(|(address, prefix)| Ipv4Net::new(address, prefix).ok())
        .collect()
}

/// The first of `candidates` that overlaps none of `taken`.
pub fn first_free_subnet(candidates: &[Ipv4Net], taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    candidates
        .iter()
        .copied()
        .find(|candidate| !taken.iter().any(|t| overlaps(*candidate, *t)))
}

/// Whether two subnets share any address.
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The network records in a directory.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    dir: PathBuf,
}

impl NetworkStore {
    /// Records under `dir` (created 0700 on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        NetworkStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<FileLock, NetworkError> {
        persist::ensure_dir(&self.dir).map_err(|e| NetworkError::io(&self.dir, e))?;
        let path = self.dir.join(".lock");
        FileLock::exclusive(&path).map_err(|e| NetworkError::io(&path, e))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Validate `request` and record the new network. Nothing is written
    /// when any check fails.
    pub fn create(&self, request: &NetworkRequest) -> Result<NetworkConfig, NetworkError> {
        if !is_valid_name(&request.name) {
            return Err(NetworkError::InvalidName {
                name: request.name.clone(),
            });
        }
        if RESERVED_NAMES.contains(&request.name.as_str()) {
            return Err(NetworkError::ReservedName {
                name: request.name.clone(),
            });
        }
        let driver = request.driver.as_deref().unwrap_or(BRIDGE_DRIVER);
        if driver != BRIDGE_DRIVER {
            return Err(NetworkError::UnknownDriver {
                driver: driver.to_owned(),
            });
        }
        let explicit = match &request.subnet {
            Some(text) => Some(parse_subnet(text, request.gateway.as_deref())?),
            None => None,
        };
        let id = random_id()?;
        let _lock = self.lock()?;
        let (subnet, gateway) = match explicit {
            Some(chosen) => chosen,
            None => {
                // The default network's subnet stays reserved for it even
                // before it exists, as docker0's is.
                let mut taken: Vec<Ipv4Net> = self.list()?.iter().map(|n| n.subnet).collect();
                taken.extend(&request.in_use);
                taken.push(DEFAULT_SUBNET);
                let subnet = first_free_subnet(&default_address_pools(), &taken)
                    .ok_or(NetworkError::PoolsExhausted)?;
                parse_subnet(&subnet.to_string(), request.gateway.as_deref())?
            }
        };
        let ip_range = request
            .ip_range
            .as_deref()
            .map(|text| parse_ip_range(text, subnet))
            .transpose()?;
        let ipv6_subnet = match (&request.ipv6_subnet, request.ipv6) {
            (None, false) => None,
            (None, true) => return Err(NetworkError::Ipv6WithoutSubnet),
            (Some(text), false) => {
                return Err(NetworkError::Ipv6NotEnabled {
                    subnet: text.clone(),
                })
            }
            (Some(text), true) => Some(parse_subnet6(text)?),
        };
        if let Some(subnet) = ipv6_subnet {
            for other in self.list()? {
                if let Some(existing) = other.ipv6_subnet {
                    if existing.contains(&subnet.network()) || subnet.contains(&existing.network())
                    {
                        return Err(NetworkError::Overlap6 {
                            subnet,
                            network: other.name,
                            existing,
                        });
                    }
                }
            }
        }
        let config = NetworkConfig {
            name: request.name.clone(),
            bridge: format!("br-{}", &id[..12]),
            id,
            driver: BRIDGE_DRIVER.to_owned(),
            subnet,
            gateway,
            internal: request.internal,
            labels: request.labels.clone(),
            ip_range,
            ipv6_subnet,
            ipv6_gateway: ipv6_subnet
                .map(|subnet| Ipv6Addr::from(u128::from(subnet.network()) + 1)),
        };
        self.insert_locked(&config)?;
        Ok(config)
    }

    /// The default network (`bridge` on `berth0`), created with `subnet`
    /// (and its first host address as gateway) if it does not exist yet.
    /// An existing default network is returned as it is.
    pub fn ensure_default(&self, subnet: Ipv4Net) -> Result<NetworkConfig, NetworkError> {
        self.ensure_default_on(DEFAULT_BRIDGE, |_| Some(subnet))
    }

    /// [`NetworkStore::ensure_default`] on bridge `bridge`, with the
    /// subnet `choose` picks given the subnets of this store's other
    /// networks (under the store's lock, so concurrent callers agree).
    pub fn ensure_default_on(
        &self,
        bridge: &str,
        choose: impl FnOnce(&[Ipv4Net]) -> Option<Ipv4Net>,
    ) -> Result<NetworkConfig, NetworkError> {
        let _lock = self.lock()?;
        match self.get(DEFAULT_NETWORK) {
            Ok(existing) => return Ok(existing),
            Err(NetworkError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let taken: Vec<Ipv4Net> = self.list()?.iter().map(|n| n.subnet).collect();
        let subnet = choose(&taken).ok_or(NetworkError::PoolsExhausted)?;
        check_subnet(subnet)?;
        let config = NetworkConfig {
            name: DEFAULT_NETWORK.to_owned(),
            id: random_id()?,
            driver: BRIDGE_DRIVER.to_owned(),
            subnet,
            gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
            bridge: bridge.to_owned(),
            internal: false,
            labels: Default::default(),
            ip_range: None,
            ipv6_subnet: None,
            ipv6_gateway: None,
        };
        self.insert_locked(&config)?;
        Ok(config)
    }

    fn insert_locked(&self, config: &NetworkConfig) -> Result<(), NetworkError> {
        let path = self.path(&config.name);
        if path.exists() {
            return Err(NetworkError::NameTaken {
                name: config.name.clone(),
            });
        }
        for other in self.list()? {
            if overlaps(config.subnet, other.subnet) {
                return Err(NetworkError::Overlap {
                    subnet: config.subnet,
                    network: other.name,
                    existing: other.subnet,
                });
            }
        }
        let bytes = serde_json::to_vec_pretty(config).map_err(|source| NetworkError::Corrupt {
            path: path.clone(),
            source,
        })?;
        persist::write_atomic(&path, &bytes).map_err(|e| NetworkError::io(&path, e))
    }

    /// The network called `name`.
    pub fn get(&self, name: &str) -> Result<NetworkConfig, NetworkError> {
        if !is_valid_name(name) {
            return Err(NetworkError::NotFound {
                name: name.to_owned(),
            });
        }
        let path = self.path(name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(NetworkError::NotFound {
                    name: name.to_owned(),
                })
            }
            Err(e) => return Err(NetworkError::io(&path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| NetworkError::Corrupt { path, source })
    }

    /// Every network, sorted by name.
    pub fn list(&self) -> Result<Vec<NetworkConfig>, NetworkError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NetworkError::io(&self.dir, e)),
        };
        let mut networks = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| NetworkError::io(&self.dir, e))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !is_valid_name(name) {
                continue;
            }
            match self.get(name) {
                Ok(config) => networks.push(config),
                // Removed while we were listing.
                Err(NetworkError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(networks)
    }

    /// Delete the record of `name`. Whether the network is still in use is
    /// the caller's question (see [`crate::NetworkDriver::teardown`]).
    pub fn remove(&self, name: &str) -> Result<NetworkConfig, NetworkError> {
        let _lock = self.lock()?;
        let config = self.get(name)?;
        let path = self.path(name);
        fs::remove_file(&path).map_err(|e| NetworkError::io(&path, e))?;
        Ok(config)
    }
}

/// 64 random hex digits from the kernel's CSPRNG.
fn random_id() -> Result<String, NetworkError> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the pointer and length describe the unfilled tail of
        // `bytes`, which we own and which outlives the call.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(NetworkError::io(Path::new("getrandom"), err));
        }
        filled += n as usize;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, subnet: &str, gateway: Option<&str>) -> NetworkRequest {
        NetworkRequest {
            name: name.to_owned(),
            subnet: Some(subnet.to_owned()),
            gateway: gateway.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn creates_lists_gets_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path().join("networks"));
        assert!(store.list().unwrap().is_empty());
        let web = store.create(&request("web", "10.10.0.0/24", None)).unwrap();
        assert_eq!(web.gateway, Ipv4Addr::new(10, 10, 0, 1));
        assert_eq!(web.driver, "bridge");
        assert_eq!(web.id.len(), 64);
        assert_eq!(web.bridge, format!("br-{}", &web.id[..12]));
        assert!(web.bridge.len() <= 15);
        let db = store
            .create(&request("db", "10.20.0.0/16", Some("10.20.255.254")))
            .unwrap();
        assert_eq!(db.gateway, Ipv4Addr::new(10, 20, 255, 254));
        let names: Vec<_> = store.list().unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["db", "web"]);
        assert_eq!(store.get("web").unwrap(), web);
        assert_eq!(store.remove("web").unwrap(), web);
        assert!(matches!(
            store.get("web"),
            Err(NetworkError::NotFound { .. })
        ));
        assert!(matches!(
            store.remove("web"),
            Err(NetworkError::NotFound { .. })
        ));
        // A removed network's subnet is free again.
        store
            .create(&request("web2", "10.10.0.0/24", None))
            .unwrap();
    }

    #[test]
    fn refuses_bad_requests_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        store.create(&request("web", "10.10.0.0/16", None)).unwrap();
        type Expected = fn(&NetworkError) -> bool;
        let cases: Vec<(NetworkRequest, Expected)> = vec![
            (request("web", "10.99.0.0/24", None), |e| {
                matches!(e, NetworkError::NameTaken { .. })
            }),
            (request("../etc", "10.99.0.0/24", None), |e| {
                matches!(e, NetworkError::InvalidName { .. })
            }),
            (request(".hidden", "10.99.0.0/24", None), |e| {
                matches!(e, NetworkError::InvalidName { .. })
            }),
            (request("", "10.99.0.0/24", None), |e| {
                matches!(e, NetworkError::InvalidName { .. })
            }),
            (request("host", "10.99.0.0/24", None), |e| {
                matches!(e, NetworkError::ReservedName { .. })
            }),
            (request("bridge", "10.99.0.0/24", None), |e| {
                matches!(e, NetworkError::ReservedName { .. })
            }),
            (request("x", "10.99.0.0", None), |e| {
                matches!(e, NetworkError::InvalidCidr { .. })
            }),
            (request("x", "10.999.0.0/24", None), |e| {
                matches!(e, NetworkError::InvalidCidr { .. })
            }),
            (request("x", "10.99.0.0/33", None), |e| {
                matches!(e, NetworkError::InvalidCidr { .. })
            }),
            (request("x", "10.99.0.0/31", None), |e| {
                matches!(e, NetworkError::PrefixOutOfRange { .. })
            }),
            (request("x", "10.0.0.0/7", None), |e| {
                matches!(e, NetworkError::PrefixOutOfRange { .. })
            }),
            (request("x", "10.99.0.1/24", None), |e| {
                matches!(e, NetworkError::HostBitsSet { .. })
            }),
            (request("x", "10.99.0.0/24", Some("10.98.0.1")), |e| {
                matches!(e, NetworkError::GatewayOutsideSubnet { .. })
            }),
            (request("x", "10.99.0.0/24", Some("10.99.0.0")), |e| {
                matches!(e, NetworkError::GatewayOutsideSubnet { .. })
            }),
            (request("x", "10.99.0.0/24", Some("10.99.0.255")), |e| {
                matches!(e, NetworkError::GatewayOutsideSubnet { .. })
            }),
            (request("x", "10.99.0.0/24", Some("gw")), |e| {
                matches!(e, NetworkError::InvalidGatewayAddress { .. })
            }),
            (request("x", "10.10.5.0/24", None), |e| {
                matches!(e, NetworkError::Overlap { .. })
            }),
            (request("x", "10.0.0.0/8", None), |e| {
                matches!(e, NetworkError::Overlap { .. })
            }),
            (
                NetworkRequest {
                    driver: Some("macvlan".into()),
                    ..request("x", "10.99.0.0/24", None)
                },
                |e| matches!(e, NetworkError::UnknownDriver { .. }),
            ),
        ];
        for (req, expected) in cases {
            let err = store.create(&req).unwrap_err();
            assert!(expected(&err), "{req:?}: {err:?}");
        }
        let names: Vec<_> = store.list().unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["web"]);
    }

    #[test]
    fn concurrent_creates_of_overlapping_subnets_admit_one() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = NetworkStore::new(dir.path());
                std::thread::spawn(move || {
                    store
                        .create(&request(&format!("n{i}"), &format!("10.50.{i}.0/24"), None))
                        .and_then(|_| {
                            store.create(&request(&format!("wide{i}"), "10.50.0.0/16", None))
                        })
                        .is_ok()
                })
            })
            .collect();
        let wide_created = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(wide_created, 0, "a /16 over existing /24s must be refused");
        let store = NetworkStore::new(dir.path());
        assert_eq!(store.list().unwrap().len(), 8);

        // Racing creates of the same subnet under different names: one wins.
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = NetworkStore::new(dir.path());
                std::thread::spawn(move || {
                    store
                        .create(&request(&format!("race{i}"), "10.60.0.0/24", None))
                        .is_ok()
                })
            })
            .collect();
        let winners = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(winners, 1);
    }

    #[test]
    fn pools_are_dockers_defaults_in_order() {
        let pools = default_address_pools();
        assert_eq!(pools.len(), 15 + 16);
        assert_eq!(pools[0].to_string(), "172.17.0.0/16");
        assert_eq!(pools[14].to_string(), "172.31.0.0/16");
        assert_eq!(pools[15].to_string(), "192.168.0.0/20");
        assert_eq!(pools[30].to_string(), "192.168.240.0/20");
        for (i, a) in pools.iter().enumerate() {
            assert!(pools[i + 1..].iter().all(|b| !overlaps(*a, *b)), "{a}");
        }
    }

    #[test]
    fn first_free_subnet_skips_anything_overlapping() {
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let pools = default_address_pools();
        assert_eq!(first_free_subnet(&pools, &[]), Some(net("172.17.0.0/16")));
        // A host address inside 172.17 (a /24 on docker0) and a wide route
        // over 172.18-19 push the choice to 172.20.
        let taken = [
            net("172.17.0.0/24"),
            net("172.18.0.0/15"),
            net("10.0.0.0/8"),
        ];
        assert_eq!(
            first_free_subnet(&pools, &taken),
            Some(net("172.20.0.0/16"))
        );
        // A covering route (172.16.0.0/12) takes every /16: 192.168 next,
        // where a home LAN on 192.168.0.0/24 costs the first /20 only.
        let taken = [net("172.16.0.0/12"), net("192.168.0.0/24")];
        assert_eq!(
            first_free_subnet(&pools, &taken),
            Some(net("192.168.16.0/20"))
        );
        let everything = [net("128.0.0.0/1")];
        assert_eq!(first_free_subnet(&pools, &everything), None);
    }

    #[test]
    fn create_without_subnet_avoids_networks_the_default_and_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        let auto = |name: &str, in_use: Vec<Ipv4Net>| NetworkRequest {
            name: name.to_owned(),
            in_use,
            ..Default::default()
        };
        // 172.17 is the default network's even before it exists.
        let first = store.create(&auto("a", vec![])).unwrap();
        assert_eq!(first.subnet.to_string(), "172.18.0.0/16");
        assert_eq!(first.gateway, Ipv4Addr::new(172, 18, 0, 1));
        store
            .create(&request("manual", "172.19.4.0/24", None))
            .unwrap();
        // The host has 172.20.1.7/24 on some interface.
        let host = vec!["172.20.1.0/24".parse().unwrap()];
        let second = store.create(&auto("b", host)).unwrap();
        assert_eq!(second.subnet.to_string(), "172.21.0.0/16");
        // A gateway given without a subnet is checked against the choice.
        let err = store
            .create(&NetworkRequest {
                gateway: Some("10.0.0.1".into()),
                ..auto("c", vec![])
            })
            .unwrap_err();
        assert!(
            matches!(err, NetworkError::GatewayOutsideSubnet { .. }),
            "{err}"
        );
        let all = vec!["128.0.0.0/1".parse().unwrap()];
        assert!(matches!(
            store.create(&auto("d", all)),
            Err(NetworkError::PoolsExhausted)
        ));
    }

    #[test]
    fn default_network_on_its_own_bridge_takes_a_free_subnet() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        store.create(&request("x", "172.17.0.0/24", None)).unwrap();
        let default = store
            .ensure_default_on("berth-0a1b2c3d", |taken| {
                first_free_subnet(&default_address_pools(), taken)
            })
            .unwrap();
        assert_eq!(default.bridge, "berth-0a1b2c3d");
        assert_eq!(default.subnet.to_string(), "172.18.0.0/16");
    }

    #[test]
    fn ip_range_is_kept_and_must_lie_inside_the_subnet() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        let with_range = |name: &str, range: &str| NetworkRequest {
            ip_range: Some(range.to_owned()),
            ..request(name, "10.30.0.0/16", None)
        };
        let made = store.create(&with_range("r", "10.30.5.0/24")).unwrap();
        assert_eq!(made.ip_range, Some("10.30.5.0/24".parse().unwrap()));
        assert_eq!(made.pool().range, made.ip_range);
        assert_eq!(store.get("r").unwrap(), made);
        for (range, outside) in [("10.31.0.0/24", true), ("10.0.0.0/8", true), ("x", false)] {
            let err = store.create(&with_range("bad", range)).unwrap_err();
            let expected = if outside {
                matches!(err, NetworkError::IpRangeOutsideSubnet { .. })
            } else {
                matches!(err, NetworkError::InvalidIpRange { .. })
            };
            assert!(expected, "{range}: {err:?}");
        }
    }

    #[test]
    fn ipv6_subnets_need_ipv6_and_do_not_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        let dual = |name: &str, v4: &str, v6: Option<&str>, ipv6: bool| NetworkRequest {
            ipv6,
            ipv6_subnet: v6.map(str::to_owned),
            ..request(name, v4, None)
        };
        let made = store
            .create(&dual("six", "10.40.0.0/24", Some("fd00:1::/64"), true))
            .unwrap();
        assert_eq!(made.ipv6_subnet, Some("fd00:1::/64".parse().unwrap()));
        assert_eq!(made.ipv6_gateway, Some("fd00:1::1".parse().unwrap()));
        assert_eq!(made.ipv6_gateway_net().unwrap().to_string(), "fd00:1::1/64");
        assert_eq!(made.pool6().unwrap().subnet, made.ipv6_subnet.unwrap());
        assert_eq!(store.get("six").unwrap(), made);
        type Expected = fn(&NetworkError) -> bool;
        let cases: [(NetworkRequest, Expected); 5] = [
            (dual("a", "10.41.0.0/24", Some("fd00:2::/64"), false), |e| {
                matches!(e, NetworkError::Ipv6NotEnabled { .. })
            }),
            (dual("b", "10.41.0.0/24", None, true), |e| {
                matches!(e, NetworkError::Ipv6WithoutSubnet)
            }),
            (
                dual("c", "10.41.0.0/24", Some("fd00:1:0:0:1::/80"), true),
                |e| matches!(e, NetworkError::Overlap6 { .. }),
            ),
            (dual("d", "10.41.0.0/24", Some("fd00:3::/48"), true), |e| {
                matches!(e, NetworkError::InvalidCidr6 { .. })
            }),
            (dual("e", "10.41.0.0/24", Some("fd00:3::1/64"), true), |e| {
                matches!(e, NetworkError::InvalidCidr6 { .. })
            }),
        ];
        for (req, expected) in cases {
            let err = store.create(&req).unwrap_err();
            assert!(expected(&err), "{req:?}: {err:?}");
        }
        let plain = store
            .create(&request("four", "10.42.0.0/24", None))
            .unwrap();
        assert_eq!(plain.pool6(), None);
    }

    #[test]
    fn overlap_detection() {
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        assert!(overlaps(net("10.0.0.0/8"), net("10.1.2.0/24")));
        assert!(overlaps(net("10.1.2.0/24"), net("10.0.0.0/8")));
        assert!(overlaps(net("10.1.2.0/24"), net("10.1.2.0/24")));
        assert!(!overlaps(net("10.1.2.0/24"), net("10.1.3.0/24")));
        assert!(!overlaps(net("10.1.2.0/30"), net("10.1.2.4/30")));
    }

    #[test]
    fn default_network_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        let first = store.ensure_default(DEFAULT_SUBNET).unwrap();
        assert_eq!(first.name, "bridge");
        assert_eq!(first.bridge, "berth0");
        assert_eq!(first.subnet.to_string(), "172.17.0.0/16");
        assert_eq!(first.gateway, Ipv4Addr::new(172, 17, 0, 1));
        // A later call with another subnet returns the existing network.
        let again = store
            .ensure_default("10.0.0.0/24".parse().unwrap())
            .unwrap();
        assert_eq!(again, first);
        // A configurable subnet for a fresh store.
        let other = NetworkStore::new(dir.path().join("other"));
        let custom = other
            .ensure_default("10.200.0.0/24".parse().unwrap())
            .unwrap();
        assert_eq!(custom.gateway, Ipv4Addr::new(10, 200, 0, 1));
        // The default network's subnet takes part in overlap checks.
        assert!(matches!(
            store.create(&request("x", "172.17.5.0/24", None)),
            Err(NetworkError::Overlap { .. })
        ));
    }

    #[test]
    fn record_json_shape() {
        let config = NetworkConfig {
            name: "web".into(),
            id: "ab".repeat(32),
            driver: "bridge".into(),
            subnet: "10.10.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 10, 0, 1),
            bridge: "br-abababababab".into(),
            internal: false,
            labels: Default::default(),
            ip_range: None,
            ipv6_subnet: None,
            ipv6_gateway: None,
        };
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["subnet"], "10.10.0.0/24");
        assert_eq!(json["gateway"], "10.10.0.1");
        let back: NetworkConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, config);
    }
}
