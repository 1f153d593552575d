//! IP address management: which address of a network's subnet belongs to
//! which container, and which host ports are published by whom.
//!
//! All of it lives in one JSON file (`<dir>/ipam.json`) guarded by an
//! exclusive `flock` on `<dir>/ipam.lock`, so concurrent `berth run`s
//! never hand out the same address or host port. On disk each pool keeps
//! its leases (owner -> address) and a next-free hint; in memory a bitmap
//! over the subnet makes an allocation O(1) amortised (a word-at-a-time
//! scan from the hint). Every commit replaces the file atomically.
//! IPv6 pools ([`AddressPool6`], a /64 or smaller) live in the same file:
//! too large for a bitmap, they search from a next-free hint past the
//! offsets their leases hold.
//!
//! Work happens in an [`IpamTxn`]: take the lock, make any number of
//! changes, [`IpamTxn::commit`] once. Dropping a transaction without
//! committing leaves the state exactly as it was, which is how a failed
//! `run` consumes no lease. The [`Ipam`] methods are one-change
//! transactions for convenience.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::netlink::MacAddr;
use crate::network::is_valid_name;
use crate::persist::{self, FileLock};
use crate::ports::{PortMapping, PortProbe, Protocol};

/// Smallest and largest prefix length a pool may have: /8 .. /30.
pub const MIN_PREFIX: u8 = 8;
pub const MAX_PREFIX: u8 = 30;
/// The same for IPv6 pools: /64 .. /120 (offsets fit 64 bits).
pub const MIN_PREFIX6: u8 = 64;
pub const MAX_PREFIX6: u8 = 120;

/// Errors from address and port allocation.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("IPAM state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("IPAM state {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid network name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*")]
    InvalidName { name: String },
    #[error("subnet {subnet} of network {network}: the prefix must be /{MIN_PREFIX} to /{MAX_PREFIX} and the address the network address ({})", subnet.trunc())]
    InvalidSubnet { network: String, subnet: Ipv4Net },
    #[error("gateway {gateway} of network {network} must be a host address inside {subnet}")]
    InvalidGateway {
        network: String,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
    },
    #[error(
        "network {network} already has leases in subnet {existing}; it cannot become {requested}"
    )]
    PoolMismatch {
        network: String,
        existing: Ipv4Net,
        requested: Ipv4Net,
    },
    #[error("address {ip} is not usable in network {network} ({subnet}): not a host address of the subnet, or its gateway")]
    AddressOutsidePool {
        network: String,
        subnet: Ipv4Net,
        ip: Ipv4Addr,
    },
    #[error("address {ip} of network {network} is already in use by container {owner}")]
    AddressTaken {
        network: String,
        ip: Ipv4Addr,
        owner: String,
    },
    #[error("no free address left in network {network} ({subnet})")]
    Full { network: String, subnet: Ipv4Net },
    #[error("no free IPv6 address left in network {network} ({subnet})")]
    Full6 { network: String, subnet: Ipv6Net },
    #[error("network {network} already has IPv6 leases in subnet {existing}; it cannot become {requested}")]
    Pool6Mismatch {
        network: String,
        existing: Ipv6Net,
        requested: Ipv6Net,
    },
    #[error("IPv6 subnet {subnet} of network {network}: the prefix must be /{MIN_PREFIX6} to /{MAX_PREFIX6} and the address the network address, the gateway inside it")]
    InvalidSubnet6 { network: String, subnet: Ipv6Net },
    #[error("MAC address {mac} is already in use on network {network} by container {owner}")]
    MacTaken {
        network: String,
        mac: MacAddr,
        owner: String,
    },
    #[error("IP range {range} of network {network} is not inside its subnet {subnet}")]
    RangeOutsideSubnet {
        network: String,
        subnet: Ipv4Net,
        range: Ipv4Net,
    },
    #[error("host port {}/{protocol} is already published by container {owner}", binding(*host_ip, *port))]
    PortTaken {
        host_ip: Ipv4Addr,
        port: u16,
        protocol: Protocol,
        owner: String,
    },
    #[error("host port {}/{protocol} is given twice", binding(*host_ip, *port))]
    DuplicatePort {
        host_ip: Ipv4Addr,
        port: u16,
        protocol: Protocol,
    },
    #[error("host port {}/{protocol} is in use by a process on the host", binding(*host_ip, *port))]
    PortInUseOnHost {
        host_ip: Ipv4Addr,
        port: u16,
        protocol: Protocol,
    },
    #[error("no free host port for {protocol} in {first}-{last}")]
    NoFreePort {
        protocol: Protocol,
        first: u16,
        last: u16,
    },
    #[error("cannot publish on {host_ip}: it is not an address of this host")]
    NotAHostAddress { host_ip: Ipv4Addr },
    #[error("network {network} still has {count} address lease(s) (first: {first_owner})")]
    InUse {
        network: String,
        count: usize,
        first_owner: String,
    },
}

/// `PORT` for every address, `IP:PORT` for one.
fn binding(host_ip: Ipv4Addr, port: u16) -> String {
    if host_ip.is_unspecified() {
        port.to_string()
    } else {
        format!("{host_ip}:{port}")
    }
}

impl IpamError {
    fn io(path: &Path, source: io::Error) -> Self {
        IpamError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The address range of one network: a subnet and its gateway, which is
/// never handed out (nor are the network and broadcast addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPool {
    pub network: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// docker's `--ip-range`: addresses chosen for containers come from
    /// this part of the subnet only (an address asked for by name may be
    /// any of the subnet). `None`: the whole subnet.
    pub range: Option<Ipv4Net>,
}

impl AddressPool {
    /// A pool whose gateway is the first host address of `subnet`.
    pub fn with_first_gateway(network: &str, subnet: Ipv4Net) -> Result<Self, IpamError> {
        let gateway = Ipv4Addr::from(u32::from(subnet.network()).wrapping_add(1));
        Self::new(network, subnet, gateway)
    }

    /// A pool with an explicit gateway, validated: a name usable as a
    /// file name, /8 to /30 prefix, canonical subnet, gateway a host
    /// address inside it.
    pub fn new(network: &str, subnet: Ipv4Net, gateway: Ipv4Addr) -> Result<Self, IpamError> {
        let pool = AddressPool {
            network: network.to_owned(),
            subnet,
            gateway,
            range: None,
        };
        pool.validate()?;
        Ok(pool)
    }

    /// The pool with addresses chosen from `range` only; refused unless
    /// `range` lies inside the subnet.
    pub fn with_range(mut self, range: Ipv4Net) -> Result<Self, IpamError> {
        self.range = Some(range);
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> Result<(), IpamError> {
        if !is_valid_name(&self.network) {
            return Err(IpamError::InvalidName {
                name: self.network.clone(),
            });
        }
        let subnet = self.subnet;
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&subnet.prefix_len()) || subnet.trunc() != subnet {
            return Err(IpamError::InvalidSubnet {
                network: self.network.clone(),
                subnet,
            });
        }
        let gateway = self.gateway;
        if !subnet.contains(&gateway)
            || gateway == subnet.network()
            || gateway == subnet.broadcast()
        {
            return Err(IpamError::InvalidGateway {
                network: self.network.clone(),
                subnet,
                gateway,
            });
        }
        if let Some(range) = self.range {
            if range.trunc() != range || !subnet.contains(&range) {
                return Err(IpamError::RangeOutsideSubnet {
                    network: self.network.clone(),
                    subnet,
                    range,
                });
            }
        }
        Ok(())
    }

    /// The offsets (first, last) addresses are chosen from.
    fn choice_bounds(&self) -> (u32, u32) {
        match self.range {
            Some(range) => (self.offset(range.network()), self.offset(range.broadcast())),
            None => (0, self.size() - 1),
        }
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.subnet.prefix_len())
    }

    fn offset(&self, ip: Ipv4Addr) -> u32 {
        u32::from(ip).wrapping_sub(u32::from(self.subnet.network()))
    }

    fn address(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + offset)
    }
}

/// The IPv6 addresses of one network: a subnet and its gateway, which is
/// never handed out (nor is the subnet-router anycast address, offset 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPool6 {
    pub network: String,
    pub subnet: Ipv6Net,
    pub gateway: Ipv6Addr,
}

impl AddressPool6 {
    fn validate(&self) -> Result<(), IpamError> {
        if !is_valid_name(&self.network) {
            return Err(IpamError::InvalidName {
                name: self.network.clone(),
            });
        }
        let subnet = self.subnet;
        let valid = (MIN_PREFIX6..=MAX_PREFIX6).contains(&subnet.prefix_len())
            && subnet.trunc() == subnet
            && subnet.contains(&self.gateway)
            && self.gateway != subnet.network();
        if !valid {
            return Err(IpamError::InvalidSubnet6 {
                network: self.network.clone(),
                subnet,
            });
        }
        Ok(())
    }

    /// Number of addresses minus one (the largest offset).
    fn last_offset(&self) -> u64 {
        u64::MAX >> (self.subnet.prefix_len() - MIN_PREFIX6)
    }

    fn offset(&self, ip: Ipv6Addr) -> u64 {
        // Inside a /64 or smaller: the low 64 bits differ only.
        (u128::from(ip) - u128::from(self.subnet.network())) as u64
    }

    fn address(&self, offset: u64) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.subnet.network()) + u128::from(offset))
    }
}

/// A published host port: who owns it and where its traffic goes. Kept
/// under the IPAM lock so that two containers can never publish the same
/// host port, and complete enough to remove the firewall rules after a
/// crash without any other record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    /// The container id that published the port.
    pub owner: String,
    pub network: String,
    /// The bridge interface the container hangs off.
    pub bridge: String,
    pub container_ip: Ipv4Addr,
    pub mapping: PortMapping,
}

/// One address lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub ip: Ipv4Addr,
}

/// What [`IpamTxn::release_owner`] gave back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    /// (network, address) pairs.
    pub addresses: Vec<(String, Ipv4Addr)>,
    pub ports: Vec<PortForward>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PoolRecord {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    /// Offset at which the next free-address search starts.
    next: u32,
    /// owner -> address
    leases: BTreeMap<String, Ipv4Addr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pool6Record {
    subnet: Ipv6Net,
    gateway: Ipv6Addr,
    /// Offset at which the next free-address search starts.
    next: u64,
    /// owner -> address
    leases: BTreeMap<String, Ipv6Addr>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IpamRecord {
    #[serde(default)]
    pools: BTreeMap<String, PoolRecord>,
    #[serde(default)]
    ports: Vec<PortForward>,
    /// IPv6 pools, in the same file (one atomic write covers both).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pools6: BTreeMap<String, Pool6Record>,
    /// MAC addresses asked for (`--mac-address`): network -> owner -> MAC.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    macs: BTreeMap<String, BTreeMap<String, MacAddr>>,
}

/// A fixed-size bitmap; bits past `len` are permanently set so that the
/// search never returns them.
#[derive(Debug, Clone)]
struct Bitmap {
    words: Vec<u64>,
}

impl Bitmap {
    fn new(len: u32) -> Self {
        let len = len as usize;
        let mut words = vec![0u64; len.div_ceil(64)];
        if len % 64 != 0 {
            if let Some(last) = words.last_mut() {
                *last = !0u64 << (len % 64);
            }
        }
        Bitmap { words }
    }

    fn set(&mut self, bit: u32) {
        self.words[bit as usize / 64] |= 1u64 << (bit % 64);
    }

    fn clear(&mut self, bit: u32) {
        self.words[bit as usize / 64] &= !(1u64 << (bit % 64));
    }

    /// First clear bit in `first..=last`.
    fn first_clear_between(&self, first: u32, last: u32) -> Option<u32> {
        if first > last {
            return None;
        }
        let (first_word, last_word) = (first as usize / 64, last as usize / 64);
        for index in first_word..=last_word.min(self.words.len().saturating_sub(1)) {
            let mut mask = !0u64;
            if index == first_word {
                mask &= !0u64 << (first % 64);
            }
            if index == last_word && last % 64 != 63 {
                mask &= !(!0u64 << (last % 64 + 1));
            }
            let free = !self.words[index] & mask;
            if free != 0 {
                return Some((index * 64) as u32 + free.trailing_zeros());
            }
        }
        None
    }

    /// First clear bit in `first..=last` at or after `start`, wrapping
    /// around to `first` once.
    fn first_clear_in(&self, first: u32, last: u32, start: u32) -> Option<u32> {
        let start = start.clamp(first, last);
        self.first_clear_between(start, last)
            .or_else(|| self.first_clear_between(first, start.saturating_sub(1)))
    }

    /// First clear bit at or after `start`, wrapping around once.
    fn first_clear_from(&self, start: u32) -> Option<u32> {
        let count = self.words.len();
        let mut index = (start as usize / 64) % count;
        let mut mask = !0u64 << (start % 64);
        for _ in 0..=count {
            let free = !self.words[index] & mask;
            if free != 0 {
                return Some((index * 64) as u32 + free.trailing_zeros());
            }
            index = (index + 1) % count;
            mask = !0;
        }
        None
    }
}

/// The IPAM store in a directory (e.g. `<state root>/networks/ipam`).
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
}

impl Ipam {
    /// IPAM state under `dir`, created (0700) on first write.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Ipam { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Take the lock and read the state: the start of a transaction.
    pub fn transaction(&self) -> Result<IpamTxn, IpamError> {
        persist::ensure_dir(&self.dir).map_err(|e| IpamError::io(&self.dir, e))?;
        let lock_path = self.dir.join("ipam.lock");
        let lock = FileLock::exclusive(&lock_path).map_err(|e| IpamError::io(&lock_path, e))?;
        let path = self.dir.join("ipam.json");
        let record = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| IpamError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => IpamRecord::default(),
            Err(e) => return Err(IpamError::io(&path, e)),
        };
        Ok(IpamTxn {
            path,
            _lock: lock,
            record,
            bitmaps: HashMap::new(),
            dirty: false,
        })
    }

    /// Lease an address of `pool` to `owner` (the same one again if it
    /// already has one there).
    pub fn allocate(&self, pool: &AddressPool, owner: &str) -> Result<Ipv4Addr, IpamError> {
        let mut txn = self.transaction()?;
        let ip = txn.allocate(pool, owner)?;
        txn.commit()?;
        Ok(ip)
    }

    /// Give back `owner`'s address in `network`, if it has one.
    pub fn release(&self, network: &str, owner: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let mut txn = self.transaction()?;
        let ip = txn.release(network, owner);
        txn.commit()?;
        Ok(ip)
    }

    /// Give back every address and host port `owner` holds, in every
    /// network (crash cleanup).
    pub fn release_owner(&self, owner: &str) -> Result<Released, IpamError> {
        let mut txn = self.transaction()?;
        let released = txn.release_owner(owner);
        txn.commit()?;
        Ok(released)
    }

    /// The leases of `network`, in owner order.
    pub fn leases(&self, network: &str) -> Result<Vec<Lease>, IpamError> {
        Ok(self.transaction()?.leases(network))
    }

    /// The host ports `owner` publishes.
    pub fn port_forwards(&self, owner: &str) -> Result<Vec<PortForward>, IpamError> {
        Ok(self.transaction()?.port_forwards(owner))
    }

    /// Forget `network`'s pool; refused while it has leases.
    pub fn remove_pool(&self, network: &str) -> Result<(), IpamError> {
        let mut txn = self.transaction()?;
        txn.remove_pool(network)?;
        txn.commit()
    }
}

/// A locked view of the IPAM state; see the module docs.
#[derive(Debug)]
pub struct IpamTxn {
    path: PathBuf,
    _lock: FileLock,
    record: IpamRecord,
    bitmaps: HashMap<String, Bitmap>,
    dirty: bool,
}

impl IpamTxn {
    /// Lease an address of `pool` to `owner`: the lease it already holds
    /// there, or the next free host address after the last one handed out.
    pub fn allocate(&mut self, pool: &AddressPool, owner: &str) -> Result<Ipv4Addr, IpamError> {
        self.allocate_address(pool, owner, None)
    }

    /// [`IpamTxn::allocate`], or with `wanted`, exactly that address
    /// (docker's `--ip`): refused when it is outside the pool, the
    /// gateway, the network or broadcast address, or another owner's.
    pub fn allocate_address(
        &mut self,
        pool: &AddressPool,
        owner: &str,
        wanted: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, IpamError> {
        pool.validate()?;
        let name = pool.network.as_str();
        let matches =
            |record: &PoolRecord| record.subnet == pool.subnet && record.gateway == pool.gateway;
        match self.record.pools.get(name) {
            Some(record) if matches(record) => {}
            Some(record) if !record.leases.is_empty() => {
                return Err(IpamError::PoolMismatch {
                    network: name.to_owned(),
                    existing: record.subnet,
                    requested: pool.subnet,
                })
            }
            _ => {
                // New pool, or an empty one that changed: start afresh.
                self.record.pools.insert(
                    name.to_owned(),
                    PoolRecord {
                        subnet: pool.subnet,
                        gateway: pool.gateway,
                        next: 1,
                        leases: BTreeMap::new(),
                    },
                );
                self.bitmaps.remove(name);
            }
        }
        let record = self.record.pools.get_mut(name).expect("inserted above");
        if let Some(ip) = record.leases.get(owner) {
            if wanted.map_or(true, |wanted| wanted == *ip) {
                return Ok(*ip);
            }
        }
        let bitmap = self
            .bitmaps
            .entry(name.to_owned())
            .or_insert_with(|| build_bitmap(pool, record));
        if let Some(wanted) = wanted {
            let usable = pool.subnet.contains(&wanted)
                && ![pool.subnet.network(), pool.subnet.broadcast(), pool.gateway]
                    .contains(&wanted);
            if !usable {
                return Err(IpamError::AddressOutsidePool {
                    network: name.to_owned(),
                    subnet: pool.subnet,
                    ip: wanted,
                });
            }
            if let Some((holder, _)) = record.leases.iter().find(|(_, ip)| **ip == wanted) {
                return Err(IpamError::AddressTaken {
                    network: name.to_owned(),
                    ip: wanted,
                    owner: holder.clone(),
                });
            }
            if let Some(old) = record.leases.insert(owner.to_owned(), wanted) {
                bitmap.clear(pool.offset(old));
            }
            bitmap.set(pool.offset(wanted));
            self.dirty = true;
            return Ok(wanted);
        }
        let found = match pool.range {
            None => bitmap.first_clear_from(record.next),
            Some(_) => {
                let (first, last) = pool.choice_bounds();
                bitmap.first_clear_in(first, last, record.next)
            }
        };
        let Some(offset) = found else {
            return Err(IpamError::Full {
                network: name.to_owned(),
                subnet: pool.subnet,
            });
        };
        bitmap.set(offset);
        let ip = pool.address(offset);
        record.leases.insert(owner.to_owned(), ip);
        record.next = (offset + 1) % pool.size();
        self.dirty = true;
        Ok(ip)
    }

    /// Lease an IPv6 address of `pool` to `owner`: the lease it already
    /// holds there, or the next free one after the last handed out.
    pub fn allocate6(&mut self, pool: &AddressPool6, owner: &str) -> Result<Ipv6Addr, IpamError> {
        pool.validate()?;
        let name = pool.network.as_str();
        match self.record.pools6.get(name) {
            Some(record) if record.subnet == pool.subnet && record.gateway == pool.gateway => {}
            Some(record) if !record.leases.is_empty() => {
                return Err(IpamError::Pool6Mismatch {
                    network: name.to_owned(),
                    existing: record.subnet,
                    requested: pool.subnet,
                })
            }
            _ => {
                self.record.pools6.insert(
                    name.to_owned(),
                    Pool6Record {
                        subnet: pool.subnet,
                        gateway: pool.gateway,
                        next: 1,
                        leases: BTreeMap::new(),
                    },
                );
            }
        }
        let record = self.record.pools6.get_mut(name).expect("inserted above");
        if let Some(ip) = record.leases.get(owner) {
            return Ok(*ip);
        }
        let taken: std::collections::HashSet<u64> =
            record.leases.values().map(|ip| pool.offset(*ip)).collect();
        let gateway = pool.offset(pool.gateway);
        let last = pool.last_offset();
        // At most one offset per lease (and the two reserved) is skipped.
        let mut offset = record.next.clamp(1, last);
        for _ in 0..=taken.len() + 2 {
            if offset != gateway && !taken.contains(&offset) {
                let ip = pool.address(offset);
                record.leases.insert(owner.to_owned(), ip);
                record.next = if offset == last { 1 } else { offset + 1 };
                self.dirty = true;
                return Ok(ip);
            }
            offset = if offset == last { 1 } else { offset + 1 };
        }
        Err(IpamError::Full6 {
            network: name.to_owned(),
            subnet: pool.subnet,
        })
    }

    /// Claim `mac` for `owner` on `pool`'s network: refused when another
    /// owner asked for it there, or has it as its derived MAC (docker's
    /// `02:42` + its IPv4 address, see [`MacAddr::from_ipv4`]).
    pub fn claim_mac(
        &mut self,
        pool: &AddressPool,
        owner: &str,
        mac: MacAddr,
    ) -> Result<(), IpamError> {
        let network = pool.network.as_str();
        let claimed = self.record.macs.get(network);
        let asked = claimed
            .into_iter()
            .flatten()
            .find(|(o, m)| *o != owner && **m == mac)
            .map(|(o, _)| o);
        let derived = || {
            let record = self.record.pools.get(network)?;
            record
                .leases
                .iter()
                .find(|(o, ip)| {
                    *o != owner
                        && MacAddr::from_ipv4(**ip) == mac
                        && !claimed.is_some_and(|c| c.contains_key(*o))
                })
                .map(|(o, _)| o)
        };
        if let Some(holder) = asked.or_else(derived) {
            return Err(IpamError::MacTaken {
                network: network.to_owned(),
                mac,
                owner: holder.clone(),
            });
        }
        let mine = self.record.macs.entry(network.to_owned()).or_default();
        if mine.insert(owner.to_owned(), mac) != Some(mac) {
            self.dirty = true;
        }
        Ok(())
    }

    /// Give back `owner`'s IPv6 address in `network`.
    pub fn release6(&mut self, network: &str, owner: &str) -> Option<Ipv6Addr> {
        let ip = self.record.pools6.get_mut(network)?.leases.remove(owner)?;
        self.dirty = true;
        Some(ip)
    }

    /// The IPv6 leases of `network`, owner -> address.
    pub fn leases6(&self, network: &str) -> BTreeMap<String, Ipv6Addr> {
        self.record
            .pools6
            .get(network)
            .map(|pool| pool.leases.clone())
            .unwrap_or_default()
    }

    /// Give back `owner`'s address in `network`.
    pub fn release(&mut self, network: &str, owner: &str) -> Option<Ipv4Addr> {
        if let Some(claims) = self.record.macs.get_mut(network) {
            if claims.remove(owner).is_some() {
                self.dirty = true;
            }
            if claims.is_empty() {
                self.record.macs.remove(network);
            }
        }
        let record = self.record.pools.get_mut(network)?;
        let ip = record.leases.remove(owner)?;
        self.dirty = true;
        if let Some(bitmap) = self.bitmaps.get_mut(network) {
            let offset = u32::from(ip).wrapping_sub(u32::from(record.subnet.network()));
            bitmap.clear(offset);
        }
        Some(ip)
    }

    /// Give back everything `owner` holds: addresses in every network and
    /// published host ports.
    pub fn release_owner(&mut self, owner: &str) -> Released {
        let networks: Vec<String> = self
            .record
            .pools
            .iter()
            .filter(|(_, pool)| pool.leases.contains_key(owner))
            .map(|(name, _)| name.clone())
            .collect();
        let addresses = networks
            .into_iter()
            .filter_map(|network| {
                let ip = self.release(&network, owner)?;
                Some((network, ip))
            })
            .collect();
        let ports = self.release_ports(owner);
        for pool in self.record.pools6.values_mut() {
            if pool.leases.remove(owner).is_some() {
                self.dirty = true;
            }
        }
        for claims in self.record.macs.values_mut() {
            if claims.remove(owner).is_some() {
                self.dirty = true;
            }
        }
        self.record.macs.retain(|_, claims| !claims.is_empty());
        Released { addresses, ports }
    }

    /// Reserve host ports; all or none. A port held by another owner on
    /// the same address (or where either is on every address), or given
    /// twice, is refused. Re-reserving an identical forward is a no-op.
    pub fn reserve_ports(&mut self, forwards: &[PortForward]) -> Result<(), IpamError> {
        for (i, forward) in forwards.iter().enumerate() {
            let mapping = &forward.mapping;
            if forwards[..i]
                .iter()
                .any(|other| other.mapping.clashes_with(mapping))
            {
                return Err(IpamError::DuplicatePort {
                    host_ip: mapping.host_ip,
                    port: mapping.host_port,
                    protocol: mapping.protocol,
                });
            }
            if let Some(held) = self
                .record
                .ports
                .iter()
                .find(|held| held.mapping.clashes_with(mapping) && *held != forward)
            {
                return Err(IpamError::PortTaken {
                    host_ip: mapping.host_ip,
                    port: mapping.host_port,
                    protocol: mapping.protocol,
                    owner: held.owner.clone(),
                });
            }
        }
        for forward in forwards {
            if !self.record.ports.contains(forward) {
                self.record.ports.push(forward.clone());
                self.dirty = true;
            }
        }
        Ok(())
    }

    /// Check and complete the host ports of `forwards`. A port given must
    /// be one `probe` finds free (no host process uses it: publishing it
    /// would steal that service's traffic) unless `owner` publishes it
    /// already, on an address of the host. A port to be chosen becomes one
    /// that no forward holds (nor another of `forwards`) and that `probe`
    /// finds free: host port 0 ("any", docker's `-p CONTAINERPORT` and
    /// `-P`) one of `range`, a host range (`-p 8000-8010:80`) one of it.
    pub fn choose_host_ports(
        &self,
        forwards: &mut [PortForward],
        range: std::ops::RangeInclusive<u16>,
        mut probe: impl FnMut(Ipv4Addr, u16, Protocol) -> PortProbe,
    ) -> Result<(), IpamError> {
        for i in 0..forwards.len() {
            let wanted = forwards[i].mapping;
            let PortMapping {
                host_ip, protocol, ..
            } = wanted;
            let candidates = match wanted.host_port_choices() {
                Some(ports) if ports.start() == ports.end() => {
                    let republished = self.record.ports.contains(&forwards[i]);
                    if republished {
                        continue;
                    }
                    match probe(host_ip, wanted.host_port, protocol) {
                        PortProbe::Free => continue,
                        PortProbe::InUse => {
                            return Err(IpamError::PortInUseOnHost {
                                host_ip,
                                port: wanted.host_port,
                                protocol,
                            })
                        }
                        PortProbe::NoSuchAddress => {
                            return Err(IpamError::NotAHostAddress { host_ip })
                        }
                    }
                }
                Some(ports) => ports,
                None => range.clone(),
            };
            let held = |port: u16| {
                let candidate = PortMapping {
                    host_port: port,
                    ..wanted
                };
                // Others of this request count once their port is fixed.
                let settled = forwards.iter().enumerate().filter(|&(j, f)| {
                    j != i && f.mapping.host_port != 0 && f.mapping.host_port_end == 0
                });
                self.record
                    .ports
                    .iter()
                    .chain(settled.map(|(_, f)| f))
                    .any(|f| f.mapping.clashes_with(&candidate))
            };
            let mut chosen = None;
            for port in candidates.clone() {
                if held(port) {
                    continue;
                }
                match probe(host_ip, port, protocol) {
                    PortProbe::Free => {
                        chosen = Some(port);
                        break;
                    }
                    PortProbe::InUse => {}
                    PortProbe::NoSuchAddress => return Err(IpamError::NotAHostAddress { host_ip }),
                }
            }
            let port = chosen.ok_or(IpamError::NoFreePort {
                protocol,
                first: *candidates.start(),
                last: *candidates.end(),
            })?;
            forwards[i].mapping.host_port = port;
            forwards[i].mapping.host_port_end = 0;
        }
        Ok(())
    }

    /// Give back the host ports `owner` publishes.
    pub fn release_ports(&mut self, owner: &str) -> Vec<PortForward> {
        let (released, kept) = std::mem::take(&mut self.record.ports)
            .into_iter()
            .partition(|forward| forward.owner == owner);
        self.record.ports = kept;
        let released: Vec<PortForward> = released;
        if !released.is_empty() {
            self.dirty = true;
        }
        released
    }

    /// Give back one host port reservation.
    pub fn release_port(&mut self, forward: &PortForward) -> bool {
        let before = self.record.ports.len();
        self.record.ports.retain(|held| held != forward);
        let removed = self.record.ports.len() != before;
        self.dirty |= removed;
        removed
    }

    /// Whether `owner` holds an address in any network or any host port:
    /// `false` means no trace of an earlier (possibly crashed) attach of
    /// the same owner can exist.
    pub fn holds_anything(&self, owner: &str) -> bool {
        self.record
            .pools
            .values()
            .any(|pool| pool.leases.contains_key(owner))
            || self
                .record
                .ports
                .iter()
                .any(|forward| forward.owner == owner)
            || self
                .record
                .pools6
                .values()
                .any(|pool| pool.leases.contains_key(owner))
    }

    /// The host ports `owner` publishes.
    pub fn port_forwards(&self, owner: &str) -> Vec<PortForward> {
        self.record
            .ports
            .iter()
            .filter(|forward| forward.owner == owner)
            .cloned()
            .collect()
    }

    /// The leases of `network`, in owner order.
    pub fn leases(&self, network: &str) -> Vec<Lease> {
        self.record
            .pools
            .get(network)
            .map(|pool| {
                pool.leases
                    .iter()
                    .map(|(owner, ip)| Lease {
                        owner: owner.clone(),
                        ip: *ip,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forget `network`'s pool; refused while it has leases.
    pub fn remove_pool(&mut self, network: &str) -> Result<(), IpamError> {
        if let Some(pool) = self.record.pools.get(network) {
            if let Some(first_owner) = pool.leases.keys().next() {
                return Err(IpamError::InUse {
                    network: network.to_owned(),
                    count: pool.leases.len(),
                    first_owner: first_owner.clone(),
                });
            }
            self.record.pools.remove(network);
            self.bitmaps.remove(network);
            self.dirty = true;
        }
        if let Some(pool) = self.record.pools6.get(network) {
            if let Some(first_owner) = pool.leases.keys().next() {
                return Err(IpamError::InUse {
                    network: network.to_owned(),
                    count: pool.leases.len(),
                    first_owner: first_owner.clone(),
                });
            }
            self.record.pools6.remove(network);
            self.dirty = true;
        }
        Ok(())
    }

    /// Write the changes (atomically) and release the lock.
    pub fn commit(self) -> Result<(), IpamError> {
        if !self.dirty {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&self.record).map_err(|source| IpamError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        // Leases do not outlive a reboot (every container is dead then and
        // gives its leases back when removed): no directory fsync.
        persist::replace_file_data_synced(&self.path, &bytes)
            .map_err(|e| IpamError::io(&self.path, e))
    }
}

fn build_bitmap(pool: &AddressPool, record: &PoolRecord) -> Bitmap {
    let size = pool.size();
    let mut bitmap = Bitmap::new(size);
    bitmap.set(0);
    bitmap.set(size - 1);
    bitmap.set(pool.offset(pool.gateway));
    for ip in record.leases.values() {
        if pool.subnet.contains(ip) {
            bitmap.set(pool.offset(*ip));
        }
    }
    bitmap
}

#[cfg(test)]
#[path = "ipam_tests.rs"]
mod tests;
