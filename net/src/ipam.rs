//! IP address management: which address of a network's subnet belongs to
//! which container, and which host ports are published by whom.
//!
//! The state is a directory of records under an exclusive `flock` on
//! `<dir>/ipam.lock`, so concurrent `berth run`s never hand out the same
//! address or host port:
//!
//! - `v4/<network>/pool` (`SUBNET GATEWAY`), `v4/<network>/next-<offset>`
//!   (where the next free-address search starts, in the name: moved on by
//!   a rename) and `v4/<network>/tables/<first address>`, the lease table
//!   of the /16 of addresses from there: a sparse file with a slot of
//!   [`SLOT`] bytes per address, its owner or zeros, read and written in
//!   place a page at a time; the same under `v6/` for IPv6 pools
//!   ([`AddressPool6`], a /64 or smaller; a table per /112);
//! - `index/<bucket>`: the owner index, owners hashed into
//!   [`INDEX_BUCKETS`] append-only logs of `+OWNER KIND,GROUP,ITEM` and
//!   `-OWNER ...` lines (see the `ipam_log` module): what each owner
//!   holds (its leases, MAC claims and host ports), so that releasing an
//!   owner reads what it holds and nothing else;
//! - `macs/<network>/<mac>` -> owner, MAC addresses asked for, and
//!   `ports/<protocol>-<port>` -> the [`PortForward`]s published on that
//!   host port (one per host address), as JSON: a record each, a symbolic
//!   link whose target is its value (see `Store`).
//!
//! So one allocation or release costs the same with ten leases held or
//! ten thousand: it reads a page of a table and one index bucket, and
//! writes them in place. It makes no inode either: on ext4 without a
//! journal each new inode skips every inode freed in the last 12 hours
//! (`recently_deleted()` in `find_inode_bit`), which cost about 0.7 ms
//! per record while each lease was a link of its own. Filling a /16 in
//! one transaction writes one table and the index buckets. A search from
//! the hint looks at a page of slots; only a pool that wrapped around and
//! is nearly full makes it read more. Listing a network's leases or
//! removing a pool reads its tables whole.
//!
//! Work happens in an [`IpamTxn`]: take the lock, make any number of
//! changes, [`IpamTxn::commit`] once. The changes to tables and index
//! buckets are kept in the transaction and written at commit: index
//! additions first, then the tables, then index removals; MAC and port
//! records are written as they are made, after the index entries that
//! name them. Every write has its inverse in an undo log: dropping a
//! transaction without committing undoes what was written (and the rest
//! was never written), which is how a failed `run` consumes no lease. So
//! a process killed at any point leaves nothing that the owner's
//! [`IpamTxn::release_owner`] does not find and remove: a torn write
//! leaves whole slots (a slot never straddles a page, and the kernel
//! copies a write page by page) and whole log lines (a torn last line is
//! ignored). Nothing is fsynced: leases do not outlive a reboot (every
//! container is dead then and gives its leases back when removed). The
//! [`Ipam`] methods are one-change transactions for convenience. State
//! of an earlier format is migrated under the lock when a transaction
//! starts: a state file (`ipam.json`), or per-address lease links and
//! per-owner index links (`<family>/<network>/leases/`, `owners/`).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::netlink::MacAddr;
use crate::network::is_valid_name;
use crate::persist::{self, FileLock};
use crate::ports::{PortMapping, PortProbe, Protocol};

use self::log::Log;

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
    #[error("IPAM state {path} is malformed: {what}")]
    Malformed { path: PathBuf, what: String },
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
    #[error(
        "invalid lease owner {owner:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]* (at most 64 characters)"
    )]
    InvalidOwner { owner: String },
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

// ---------------------------------------------------------------------------
// The earlier single-file format, imported once (see `IpamTxn::import`).
// ---------------------------------------------------------------------------

/// The file the whole state lived in before the store below.
const LEGACY_FILE: &str = "ipam.json";

#[derive(Debug, Deserialize)]
struct LegacyPool {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    next: u32,
    leases: BTreeMap<String, Ipv4Addr>,
}

#[derive(Debug, Deserialize)]
struct LegacyPool6 {
    subnet: Ipv6Net,
    gateway: Ipv6Addr,
    next: u64,
    leases: BTreeMap<String, Ipv6Addr>,
}

#[derive(Debug, Default, Deserialize)]
struct LegacyRecord {
    #[serde(default)]
    pools: BTreeMap<String, LegacyPool>,
    #[serde(default)]
    ports: Vec<PortForward>,
    #[serde(default)]
    pools6: BTreeMap<String, LegacyPool6>,
    #[serde(default)]
    macs: BTreeMap<String, BTreeMap<String, MacAddr>>,
}

// ---------------------------------------------------------------------------
// The store: one small record per lease, claim and owner (module docs).
// ---------------------------------------------------------------------------

const LOCK_FILE: &str = "ipam.lock";
/// The owner index buckets, `index/<bucket>` (see [`bucket_path`]).
const INDEX: &str = "index";
/// How many buckets the owners are hashed into: with 10,000 owners a
/// bucket holds about 160 (some 15 kB, read and searched for one owner's
/// lines in tens of microseconds), and a store has 64 bucket files
/// whatever its size, all made at once (see [`IpamTxn::make_buckets`]):
/// more would make each read smaller, but a new store (the /16 fill of
/// the bench) would pay for more new inodes.
const INDEX_BUCKETS: u64 = 64;
/// The per-owner index of the previous format, `owners/<owner>`, which
/// a transaction migrates (see [`IpamTxn::migrate_links`]).
const LEGACY_OWNERS: &str = "owners";
/// The per-address leases of the previous format,
/// `<family>/<network>/leases/<address>`.
const LEGACY_LEASES: &str = "leases";
const TABLES: &str = "tables";
const PORTS: &str = "ports";
/// Prefix of the names replacements are written under before the rename;
/// listings skip them (one is left only by a crash between the two steps).
const TEMP_PREFIX: &str = ".tmp.";
/// Values up to this long are symbolic links, longer ones (an owner with
/// hundreds of ports) regular files: a link's target is at most
/// PATH_MAX - 1 bytes.
const LINK_VALUE_MAX: usize = 4000;
/// Addresses per lease table: a table is the aligned /16 (IPv4) or /112
/// (IPv6) around an address, a sparse file of [`SLOT`]-byte slots, one
/// per address, so that a lease is found, taken and freed in place (a
/// pool of any size takes no inode per lease, a /16 one file).
const TABLE_SLOTS: u128 = 1 << 16;
/// A slot: the owner (encoded, at most 64 bytes) and `\n`, then zeros;
/// all zeros when the address is free. A power of two, so that no slot
/// straddles a page.
const SLOT: usize = 128;
/// The unit tables are read, cached and written in.
const PAGE: usize = 4096;
const SLOTS_PER_PAGE: u128 = (PAGE / SLOT) as u128;

/// What an owner holds, as named in its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Mac,
    Port,
    V4,
    V6,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Mac => "mac",
            Kind::Port => "port",
            Kind::V4 => "v4",
            Kind::V6 => "v6",
        }
    }

    fn from_tag(tag: &str) -> Option<Kind> {
        [Kind::Mac, Kind::Port, Kind::V4, Kind::V6]
            .into_iter()
            .find(|kind| kind.tag() == tag)
    }

    /// An address of this family (V4 or V6) as a number.
    fn parse_addr(self, text: &str) -> Option<u128> {
        match self {
            Kind::V4 => text
                .parse::<Ipv4Addr>()
                .ok()
                .map(|a| u128::from(u32::from(a))),
            Kind::V6 => text.parse::<Ipv6Addr>().ok().map(u128::from),
            Kind::Mac | Kind::Port => None,
        }
    }

    /// The canonical text of an address of this family (V4 or V6).
    fn addr_text(self, addr: u128) -> String {
        match self {
            // Truncation cannot happen: IPv4 addresses are below 2^32.
            Kind::V4 => Ipv4Addr::from(addr as u32).to_string(),
            _ => Ipv6Addr::from(addr).to_string(),
        }
    }
}

/// One entry of an owner's index, written `<kind>,<group>,<item>`: the
/// group is a network name (a port's `<protocol>-<port>`), which has no
/// comma, and the item an address, a MAC address or a port's host address.
/// It locates the record it indexes ([`Entry::record`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    kind: Kind,
    group: String,
    item: String,
}

impl Entry {
    fn new(kind: Kind, group: &str, item: impl ToString) -> Self {
        Entry {
            kind,
            group: group.to_owned(),
            item: item.to_string(),
        }
    }

    fn port(mapping: &PortMapping) -> Self {
        Entry::new(Kind::Port, &port_group(mapping), mapping.host_ip)
    }

    fn token(&self) -> String {
        format!("{},{},{}", self.kind.tag(), self.group, self.item)
    }

    fn parse(token: &str) -> Option<Self> {
        let mut parts = token.splitn(3, ',');
        let kind = Kind::from_tag(parts.next()?)?;
        let group = parts.next()?;
        let item = parts.next()?;
        let valid_group = match kind {
            Kind::Port => port_group_valid(group),
            _ => is_valid_name(group),
        };
        let valid_item = !item.is_empty()
            && item
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b'.' | b':'));
        (valid_group && valid_item).then(|| Entry::new(kind, group, item))
    }

    /// The address of a lease entry, if it is one of a valid address.
    fn addr(&self) -> Option<u128> {
        self.kind.parse_addr(&self.item)
    }

    /// The record this entry indexes: the block of an address lease
    /// (which names its owner), a MAC claim whose value is the owner, or
    /// the claims on a host port.
    fn record(&self) -> PathBuf {
        match (self.kind, self.addr()) {
            (Kind::V4 | Kind::V6, Some(addr)) => table_path(self.kind, &self.group, addr).into(),
            (Kind::V4 | Kind::V6, None) => [self.kind.tag(), &self.group, TABLES, &self.item]
                .iter()
                .collect(),
            (Kind::Mac, _) => ["macs", &self.group, &self.item].iter().collect(),
            (Kind::Port, _) => Path::new(PORTS).join(&self.group),
        }
    }
}

/// `<family>/<network>/tables/<first address>`: the lease table of
/// the addresses around `addr`.
fn table_path(kind: Kind, network: &str, addr: u128) -> String {
    let first = kind.addr_text(addr - addr % TABLE_SLOTS);
    format!("{}/{network}/{TABLES}/{first}", kind.tag())
}

/// The last table path made, kept: an allocation asks for it a few
/// times, and a transaction that fills a pool for every address.
#[derive(Debug, Default)]
struct LastTable {
    key: Option<(Kind, String, u128)>,
    path: Rc<str>,
}

impl LastTable {
    fn path(&mut self, kind: Kind, network: &str, addr: u128) -> Rc<str> {
        let first = addr - addr % TABLE_SLOTS;
        match &self.key {
            Some((k, n, f)) if *k == kind && n == network && *f == first => {}
            _ => {
                self.path = table_path(kind, network, addr).into();
                self.key = Some((kind, network.to_owned(), first));
            }
        }
        Rc::clone(&self.path)
    }
}

/// The page of `addr`'s slot in its table, and where in the page it is.
fn slot_of(addr: u128) -> (u32, usize) {
    let slot = addr % TABLE_SLOTS;
    // Below 2^16 / 32.
    (
        (slot / SLOTS_PER_PAGE) as u32,
        (slot % SLOTS_PER_PAGE) as usize * SLOT,
    )
}

/// The owner (encoded) in a slot, `None` if it is free; what is wrong
/// with it if it is neither. A slot without its newline is free: only a
/// write that a kill cut short leaves one (the bytes before the newline
/// are written first), and that write was of a transaction not committed.
fn slot_value(slot: &[u8]) -> Result<Option<&str>, &'static str> {
    if slot.first().map_or(true, |b| *b == 0) {
        return Ok(None);
    }
    let Some(end) = slot.iter().position(|b| *b == b'\n') else {
        return Ok(None);
    };
    std::str::from_utf8(&slot[..end])
        .map(Some)
        .map_err(|_| "an owner that is not UTF-8")
}

/// Read into `buf` from `offset` until it is full or the file ends; the
/// bytes read (the rest of `buf` stays as it was).
fn read_full_at(file: &fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// `<family>/<network>/leases/<address>`: a lease of the previous format.
fn legacy_lease_path(family: &str, network: &str, ip: &str) -> PathBuf {
    [family, network, LEGACY_LEASES, ip].iter().collect()
}

/// `<family>/<network>/<file>`: `pool` (subnet and gateway) or `tables`.
fn pool_path(family: &str, network: &str, file: &str) -> PathBuf {
    [family, network, file].iter().collect()
}

/// `<family>/<network>`: a pool's directory.
fn pool_dir(family: &str, network: &str) -> PathBuf {
    [family, network].iter().collect()
}

/// `index/<bucket>`: the index bucket `owner` is hashed into (FNV-1a:
/// stable across builds and versions, unlike std's hasher).
fn bucket_path(owner: &str) -> String {
    let hash = owner.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{INDEX}/{}", bucket_name(hash % INDEX_BUCKETS))
}

fn bucket_name(bucket: u64) -> String {
    format!("{bucket:02x}")
}

/// The record of the claims on one host port and protocol,
/// `ports/<protocol>-<port>`: a JSON list of forwards (one per host
/// address the port is published on).
fn port_group(mapping: &PortMapping) -> String {
    format!("{}-{}", mapping.protocol, mapping.host_port)
}

fn port_group_valid(group: &str) -> bool {
    group.split_once('-').is_some_and(|(protocol, port)| {
        ["tcp", "udp"].contains(&protocol) && port.parse::<u16>().is_ok()
    })
}

fn check_owner(owner: &str) -> Result<(), IpamError> {
    if is_valid_name(owner) {
        Ok(())
    } else {
        Err(IpamError::InvalidOwner {
            owner: owner.to_owned(),
        })
    }
}

fn check_network(network: &str) -> Result<(), IpamError> {
    if is_valid_name(network) {
        Ok(())
    } else {
        Err(IpamError::InvalidName {
            name: network.to_owned(),
        })
    }
}

fn malformed(path: &Path, what: &str) -> IpamError {
    IpamError::Malformed {
        path: path.to_owned(),
        what: what.to_owned(),
    }
}

/// Parse a record's value (or name) read from `path`.
fn parse_at<T: std::str::FromStr>(text: &str, path: &Path, what: &str) -> Result<T, IpamError> {
    text.parse()
        .map_err(|_| malformed(path, &format!("{what} expected, found {text:?}")))
}

/// A lease's value: the owner, a container id (64 hex digits) as `=`
/// and its 32 bytes in URL-safe base64 (44 characters). File systems
/// keep a link target this short in the inode (ext4 below 60 bytes, XFS
/// and btrfs likewise) where 64 characters take a data block of their
/// own, to allocate, and to free (and discard) on release.
fn encode_owner(owner: &str) -> String {
    let digits = owner.as_bytes();
    let mut bytes = [0u8; 32];
    if digits.len() != 64 {
        return owner.to_owned();
    }
    // A plain loop: this runs once per owner of a change, and an
    // unoptimised build is slow with iterator adaptors.
    for (i, digit) in digits.iter().enumerate() {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return owner.to_owned(),
        };
        bytes[i / 2] |= nibble << (4 * (1 - i % 2));
    }
    let mut value = String::with_capacity(44);
    value.push('=');
    URL_SAFE_NO_PAD.encode_string(bytes, &mut value);
    value
}

/// Whether `value` is an owner as [`encode_owner`] writes it, checked
/// without decoding it (a bucket's lines are checked on every read).
fn owner_value_valid(value: &str) -> bool {
    match value.strip_prefix('=') {
        Some(encoded) => {
            encoded.len() == 43
                && encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        }
        None => is_valid_name(value),
    }
}

fn decode_owner(value: &str, path: &Path) -> Result<String, IpamError> {
    let Some(encoded) = value.strip_prefix('=') else {
        return if is_valid_name(value) {
            Ok(value.to_owned())
        } else {
            Err(malformed(
                path,
                &format!("an owner expected, found {value:?}"),
            ))
        };
    };
    match URL_SAFE_NO_PAD.decode(encoded) {
        Ok(bytes) if bytes.len() == 32 => Ok(bytes.iter().map(|b| format!("{b:02x}")).collect()),
        _ => Err(malformed(
            path,
            &format!("an owner expected, found {value:?}"),
        )),
    }
}

fn is_errno(error: &io::Error, errno: i32) -> bool {
    error.raw_os_error() == Some(errno)
}

/// The records under the IPAM directory. A record is a symbolic link
/// whose target is its value: `symlink(2)` creates it with its value in
/// one step and exclusively (EEXIST), so a crash never leaves a torn or
/// empty record and creating one needs no temp file (Emacs' lock files
/// use links the same way); it costs an inode and, for a short value,
/// nothing else. Replacing one is a link under a temp name and a
/// `rename(2)`. A value too long for a link is a regular file, written
/// under a temp name and then linked (create) or renamed (replace) into
/// place. Nothing ever follows these links.
#[derive(Debug)]
struct Store {
    dir: PathBuf,
    /// Directories the last changes created (parents first), for the
    /// transaction to undo with them: a rolled-back change leaves no
    /// empty directory behind either.
    made_dirs: std::cell::RefCell<Vec<PathBuf>>,
}

impl Store {
    fn path(&self, rel: &Path) -> PathBuf {
        self.dir.join(rel)
    }

    /// The value of a record, `None` if there is none.
    fn read(&self, rel: &Path) -> Result<Option<String>, IpamError> {
        let path = self.path(rel);
        let value = match fs::read_link(&path) {
            Ok(target) => target.into_os_string().into_string().ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // A regular file: a long value.
            Err(e) if is_errno(&e, libc::EINVAL) => {
                let bytes = fs::read(&path).map_err(|e| IpamError::io(&path, e))?;
                String::from_utf8(bytes).ok()
            }
            Err(e) => return Err(IpamError::io(&path, e)),
        };
        match value {
            Some(value) if !value.is_empty() => Ok(Some(value)),
            _ => Err(malformed(&path, "a record's value is empty or not UTF-8")),
        }
    }

    /// Run `make` (which creates `path`), creating the directory (0700)
    /// and any missing parent first if it is missing.
    fn in_dir(&self, path: &Path, mut make: impl FnMut() -> io::Result<()>) -> io::Result<()> {
        match make() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut missing = Vec::new();
                let mut dir = path.parent();
                while let Some(parent) = dir.filter(|d| *d != self.dir && !d.exists()) {
                    missing.push(parent.to_owned());
                    dir = parent.parent();
                }
                for dir in missing.into_iter().rev() {
                    match fs::DirBuilder::new().mode(0o700).create(&dir) {
                        Ok(()) => self.made_dirs.borrow_mut().push(dir),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e),
                    }
                }
                make()
            }
            other => other,
        }
    }

    /// Write `value` at the temp name of `path` as a link or, too long for
    /// one, a file; the temp name.
    fn write_temp(&self, path: &Path, value: &str) -> Result<PathBuf, IpamError> {
        self.write_temp_bytes(path, value.as_bytes(), value.len() <= LINK_VALUE_MAX)
    }

    /// Write `value` at the temp name of `path`, as a link if `as_link`,
    /// else as a regular file; the temp name.
    fn write_temp_bytes(
        &self,
        path: &Path,
        value: &[u8],
        as_link: bool,
    ) -> Result<PathBuf, IpamError> {
        use std::os::unix::ffi::OsStrExt;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = path.with_file_name(format!("{TEMP_PREFIX}{name}"));
        let write = || {
            if as_link {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(value), &temp)
            } else {
                fs::write(&temp, value)
            }
        };
        match self.in_dir(&temp, write) {
            // Left by a crash before its rename: replaced.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&temp).and_then(|()| write())
            }
            other => other,
        }
        .map_err(|e| IpamError::io(&temp, e))?;
        Ok(temp)
    }

    /// Replace the regular file `rel` with `bytes` atomically (a log
    /// rewritten, or put back by an undo).
    fn replace_file(&self, rel: &Path, bytes: &[u8]) -> Result<(), IpamError> {
        let path = self.path(rel);
        let temp = self.write_temp_bytes(&path, bytes, false)?;
        fs::rename(&temp, &path).map_err(|e| IpamError::io(&path, e))
    }

    /// A log record, parsed (an empty one if there is no file).
    fn read_log(&self, rel: &Path, valid: log::Valid) -> Result<Log, IpamError> {
        let path = self.path(rel);
        match fs::read(&path) {
            Ok(bytes) => Log::parse(bytes, &path, valid),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Log::missing(&path, valid)),
            Err(e) => Err(IpamError::io(&path, e)),
        }
    }

    /// The first `len` bytes of the file `rel`.
    fn read_prefix(&self, rel: &Path, len: u64) -> Result<Vec<u8>, IpamError> {
        let path = self.path(rel);
        let mut bytes = fs::read(&path).map_err(|e| IpamError::io(&path, e))?;
        bytes.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(bytes)
    }

    /// Append `text` to the log file `rel` whose complete lines are
    /// `len` bytes (a torn tail past them is cut off first), or create
    /// it with `text` if `len` is `None`. In place: no inode is made
    /// except for a new file.
    fn append(&self, rel: &Path, len: Option<u64>, text: &str) -> Result<(), IpamError> {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        let path = self.path(rel);
        let io = |e| IpamError::io(&path, e);
        match len {
            None => {
                let create = || {
                    let mut file = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)?;
                    io::Write::write_all(&mut file, text.as_bytes())
                };
                self.in_dir(&path, create).map_err(io)
            }
            Some(len) => {
                let file = fs::OpenOptions::new().write(true).open(&path).map_err(io)?;
                if file.metadata().map_err(io)?.len() != len {
                    file.set_len(len).map_err(io)?;
                }
                file.write_all_at(text.as_bytes(), len).map_err(io)
            }
        }
    }

    /// Write `bytes` into the file `rel` at `offset` (an undo).
    fn write_at(&self, rel: &Path, offset: u64, bytes: &[u8]) -> Result<(), IpamError> {
        use std::os::unix::fs::FileExt;
        let path = self.path(rel);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| file.write_all_at(bytes, offset))
            .map_err(|e| IpamError::io(&path, e))
    }

    /// Cut the log file `rel` back to `len` bytes (an undo).
    fn truncate(&self, rel: &Path, len: u64) -> Result<(), IpamError> {
        let path = self.path(rel);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_len(len))
            .map_err(|e| IpamError::io(&path, e))
    }

    /// Create a record; `false` if one exists (it is left alone).
    fn create(&self, rel: &Path, value: &str) -> Result<bool, IpamError> {
        let path = self.path(rel);
        let result = if value.len() <= LINK_VALUE_MAX {
            self.in_dir(&path, || std::os::unix::fs::symlink(value, &path))
        } else {
            let temp = self.write_temp(&path, value)?;
            let linked = fs::hard_link(&temp, &path);
            fs::remove_file(&temp).map_err(|e| IpamError::io(&temp, e))?;
            linked
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(IpamError::io(&path, e)),
        }
    }

    /// Create or replace a record atomically.
    fn replace(&self, rel: &Path, value: &str) -> Result<(), IpamError> {
        let path = self.path(rel);
        let temp = self.write_temp(&path, value)?;
        fs::rename(&temp, &path).map_err(|e| IpamError::io(&path, e))
    }

    /// Remove a record; `false` if there was none.
    fn remove(&self, rel: &Path) -> Result<bool, IpamError> {
        let path = self.path(rel);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(IpamError::io(&path, e)),
        }
    }

    /// The names in a directory (none if it is missing), without the
    /// temp names of replacements.
    fn list(&self, rel: &Path) -> Result<Vec<String>, IpamError> {
        let path = self.path(rel);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(IpamError::io(&path, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| IpamError::io(&path, e))?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|name| malformed(&path.join(name), "a name that is not UTF-8"))?;
            if !name.starts_with(TEMP_PREFIX) {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Remove a directory if it is empty (a removed pool's). Best effort:
    /// one left behind is harmless.
    fn remove_dir_if_empty(&self, rel: &Path) {
        let _ = fs::remove_dir(self.path(rel));
    }
}

/// A pool's next-free hint: the offset the next search starts at, kept
/// in the *name* of a record, `next-<offset>` in the pool's directory, so
/// that moving it on is one `rename(2)` and no new inode (a commit per
/// allocation would otherwise create and free one for the hint alone).
#[derive(Debug, Clone, Copy)]
struct Hint {
    on_disk: Option<u64>,
    next: u64,
}

const HINT_PREFIX: &str = "next-";

/// How to undo one change of a transaction.
#[derive(Debug)]
enum Undo {
    /// Remove a directory the transaction created, if it is empty.
    MadeDir(PathBuf),
    /// Remove the record the transaction created.
    Created(PathBuf),
    /// Put back the value a record had.
    Restore(PathBuf, String),
    /// Cut a log back to the length it had.
    Truncate(PathBuf, u64),
    /// Put back the bytes of a log file rewritten or removed.
    RestoreFile(PathBuf, Vec<u8>),
    /// Put back the bytes of a table at an offset.
    RestoreRange(PathBuf, u64, Vec<u8>),
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

    /// Take the lock: the start of a transaction. Nothing is read yet
    /// (each change reads the few records it needs), except state of an
    /// earlier format, which is migrated here once: a state file
    /// (`ipam.json`) or per-address links (`owners/`, `.../leases/`).
    pub fn transaction(&self) -> Result<IpamTxn, IpamError> {
        persist::ensure_dir(&self.dir).map_err(|e| IpamError::io(&self.dir, e))?;
        let lock_path = self.dir.join(LOCK_FILE);
        let lock = FileLock::exclusive(&lock_path).map_err(|e| IpamError::io(&lock_path, e))?;
        let mut txn = IpamTxn {
            store: Store {
                dir: self.dir.clone(),
                made_dirs: Default::default(),
            },
            _lock: lock,
            undo: Vec::new(),
            pools: HashMap::new(),
            pools6: HashMap::new(),
            hints: HashMap::new(),
            dirty_hints: Vec::new(),
            logs: Default::default(),
            last_owner: Default::default(),
            last_table: Default::default(),
        };
        let legacy = self.dir.join(LEGACY_FILE);
        match fs::read(&legacy) {
            Ok(bytes) => txn.import(&legacy, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(IpamError::io(&legacy, e)),
        }
        let owners = self.dir.join(LEGACY_OWNERS);
        match fs::symlink_metadata(&owners) {
            Ok(_) => txn.migrate_links()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(IpamError::io(&owners, e)),
        }
        Ok(txn)
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
        let ip = txn.release(network, owner)?;
        txn.commit()?;
        Ok(ip)
    }

    /// Give back every address and host port `owner` holds, in every
    /// network (crash cleanup).
    pub fn release_owner(&self, owner: &str) -> Result<Released, IpamError> {
        let mut txn = self.transaction()?;
        let released = txn.release_owner(owner)?;
        txn.commit()?;
        Ok(released)
    }

    /// The leases of `network`, in owner order.
    pub fn leases(&self, network: &str) -> Result<Vec<Lease>, IpamError> {
        self.transaction()?.leases(network)
    }

    /// The host ports `owner` publishes.
    pub fn port_forwards(&self, owner: &str) -> Result<Vec<PortForward>, IpamError> {
        self.transaction()?.port_forwards(owner)
    }

    /// Forget `network`'s pool; refused while it has leases.
    pub fn remove_pool(&self, network: &str) -> Result<(), IpamError> {
        let mut txn = self.transaction()?;
        txn.remove_pool(network)?;
        txn.commit()
    }
}

/// The lease tables and index buckets a transaction read or changed,
/// by path, with the changes not written yet.
#[derive(Debug, Default)]
struct Logs {
    buckets: HashMap<String, Log>,
    tables: HashMap<String, Table>,
}

/// The pages of a lease table read in a transaction.
#[derive(Debug)]
struct Table {
    /// `None`: there is no file (yet).
    file: Option<fs::File>,
    pages: HashMap<u32, Box<[u8]>>,
    /// Pages changed and not written yet.
    dirty: std::collections::BTreeSet<u32>,
}

/// Pool records read or written in a transaction: network -> (subnet,
/// gateway), `None` if it has none.
type PoolRecords<N, A> = HashMap<String, Option<(N, A)>>;

/// The two kinds of pool, for the code they share.
trait PoolKind {
    type Net: Copy + Eq + std::fmt::Display + std::str::FromStr;
    type Addr: Copy + Eq + std::fmt::Display + std::str::FromStr;
    const KIND: Kind;

    fn network(&self) -> &str;
    fn record(&self) -> (Self::Net, Self::Addr);
    /// The transaction's copy of this kind's pool records.
    fn records(txn: &mut IpamTxn) -> &mut PoolRecords<Self::Net, Self::Addr>;
    fn mismatch(network: &str, existing: Self::Net, requested: Self::Net) -> IpamError;
}

impl PoolKind for AddressPool {
    type Net = Ipv4Net;
    type Addr = Ipv4Addr;
    const KIND: Kind = Kind::V4;

    fn network(&self) -> &str {
        &self.network
    }

    fn record(&self) -> (Ipv4Net, Ipv4Addr) {
        (self.subnet, self.gateway)
    }

    fn records(txn: &mut IpamTxn) -> &mut HashMap<String, Option<(Ipv4Net, Ipv4Addr)>> {
        &mut txn.pools
    }

    fn mismatch(network: &str, existing: Ipv4Net, requested: Ipv4Net) -> IpamError {
        IpamError::PoolMismatch {
            network: network.to_owned(),
            existing,
            requested,
        }
    }
}

impl PoolKind for AddressPool6 {
    type Net = Ipv6Net;
    type Addr = Ipv6Addr;
    const KIND: Kind = Kind::V6;

    fn network(&self) -> &str {
        &self.network
    }

    fn record(&self) -> (Ipv6Net, Ipv6Addr) {
        (self.subnet, self.gateway)
    }

    fn records(txn: &mut IpamTxn) -> &mut HashMap<String, Option<(Ipv6Net, Ipv6Addr)>> {
        &mut txn.pools6
    }

    fn mismatch(network: &str, existing: Ipv6Net, requested: Ipv6Net) -> IpamError {
        IpamError::Pool6Mismatch {
            network: network.to_owned(),
            existing,
            requested,
        }
    }
}

/// Where a free-address search looks: the subnet's first address, the
/// offsets it may choose from (`first..=last`), where it starts, and
/// the offsets it never hands out.
struct Search<'a> {
    base: u128,
    first: u128,
    last: u128,
    start: u128,
    reserved: &'a [u128],
}

/// A locked view of the IPAM state; see the module docs.
#[derive(Debug)]
pub struct IpamTxn {
    store: Store,
    _lock: FileLock,
    /// The inverse of every change written so far, applied newest first
    /// if the transaction is dropped without commit.
    undo: Vec<Undo>,
    /// IPv4 pool records read or written: network -> (subnet, gateway).
    pools: HashMap<String, Option<(Ipv4Net, Ipv4Addr)>>,
    pools6: HashMap<String, Option<(Ipv6Net, Ipv6Addr)>>,
    /// Next-free hints read or set, by pool directory; written at commit
    /// only, the ones in `dirty_hints`.
    /// (By the path's bytes: hashing a `Path` walks its components.)
    hints: HashMap<std::ffi::OsString, Hint>,
    dirty_hints: Vec<PathBuf>,
    /// Lease tables and index buckets read, with the changes not written
    /// yet (in a cell: reading one through `&self` caches it).
    logs: std::cell::RefCell<Logs>,
    /// The last owner asked for, with its key.
    last_owner: std::cell::RefCell<Option<(String, Rc<OwnerKey>)>>,
    last_table: std::cell::RefCell<LastTable>,
}

/// An owner's value in records and its index bucket.
#[derive(Debug)]
struct OwnerKey {
    value: String,
    bucket: String,
}

impl Drop for IpamTxn {
    fn drop(&mut self) {
        // Best effort: a change that cannot be undone was made in the
        // index-first order, so the owner's `release_owner` still finds
        // and removes what it left. Changes to logs not written yet
        // simply go with the transaction.
        while let Some(undo) = self.undo.pop() {
            let _ = match undo {
                Undo::Created(rel) => self.store.remove(&rel).map(drop),
                Undo::MadeDir(dir) => {
                    fs::remove_dir(dir).map_err(|e| IpamError::io(&self.store.dir, e))
                }
                Undo::Restore(rel, value) => self.store.replace(&rel, &value),
                Undo::Truncate(rel, len) => self.store.truncate(&rel, len),
                Undo::RestoreFile(rel, bytes) => self.store.replace_file(&rel, &bytes),
                Undo::RestoreRange(rel, offset, bytes) => self.store.write_at(&rel, offset, &bytes),
            };
        }
    }
}

impl IpamTxn {
    // --- changes to link records, each recorded for the undo ---

    /// Set `rel`, whose value is `old`, to `value`.
    fn set(&mut self, rel: PathBuf, old: Option<String>, value: &str) -> Result<(), IpamError> {
        match old {
            Some(old) if old == value => {}
            Some(old) => {
                self.store.replace(&rel, value)?;
                self.undo.push(Undo::Restore(rel, old));
            }
            None => {
                let created = self.store.create(&rel, value)?;
                let made = self.store.made_dirs.take();
                self.undo.extend(made.into_iter().map(Undo::MadeDir));
                if created {
                    self.undo.push(Undo::Created(rel));
                } else {
                    // There after all (the caller did not read it).
                    let old = self.store.read(&rel)?;
                    if old.is_some() {
                        return self.set(rel, old, value);
                    }
                }
            }
        }
        Ok(())
    }

    /// Give `rel` the value `value`, creating it if there is none.
    fn put(&mut self, rel: PathBuf, value: &str) -> Result<(), IpamError> {
        self.set(rel, None, value)
    }

    /// Remove `rel`, whose value is `old`.
    fn delete(&mut self, rel: PathBuf, old: String) -> Result<(), IpamError> {
        if self.store.remove(&rel)? {
            self.undo.push(Undo::Restore(rel, old));
        }
        Ok(())
    }

    // --- lease tables and index buckets ---

    /// Read the index bucket `rel` into the transaction's copy, if it has
    /// not.
    fn load_bucket(&self, logs: &mut Logs, rel: &str) -> Result<(), IpamError> {
        if logs.buckets.contains_key(rel) {
            return Ok(());
        }
        let log = self.store.read_log(Path::new(rel), |owner, token| {
            owner_value_valid(owner) && Entry::parse(token).is_some()
        })?;
        // (A closure that captures nothing is a `fn`.)
        logs.buckets.insert(rel.to_owned(), log);
        Ok(())
    }

    /// Run `change` on the index bucket `rel`, read first if need be.
    fn with_bucket<R>(
        &self,
        rel: &str,
        change: impl FnOnce(&mut Log) -> R,
    ) -> Result<R, IpamError> {
        let mut logs = self.logs.borrow_mut();
        self.load_bucket(&mut logs, rel)?;
        let log = logs.buckets.get_mut(rel).ok_or_else(|| {
            malformed(
                &self.store.path(Path::new(rel)),
                "a log that could not be read",
            )
        })?;
        Ok(change(log))
    }

    /// Run `work` on page `page` of the lease table `rel` (read first if
    /// need be; a page past the end of the file, or of no file, is free
    /// slots).
    fn with_page<R>(
        &self,
        rel: &str,
        page: u32,
        work: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, IpamError> {
        let mut logs = self.logs.borrow_mut();
        let path = self.store.path(Path::new(rel));
        let table = match logs.tables.entry(rel.to_owned()) {
            std::collections::hash_map::Entry::Occupied(table) => table.into_mut(),
            std::collections::hash_map::Entry::Vacant(vacant) => {
                let file = match fs::OpenOptions::new().read(true).write(true).open(&path) {
                    Ok(file) => Some(file),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(IpamError::io(&path, e)),
                };
                vacant.insert(Table {
                    file,
                    pages: HashMap::new(),
                    dirty: Default::default(),
                })
            }
        };
        let bytes = match table.pages.entry(page) {
            std::collections::hash_map::Entry::Occupied(bytes) => bytes.into_mut(),
            std::collections::hash_map::Entry::Vacant(vacant) => {
                let mut bytes = vec![0u8; PAGE].into_boxed_slice();
                if let Some(file) = &table.file {
                    read_full_at(file, &mut bytes, u64::from(page) * PAGE as u64)
                        .map_err(|e| IpamError::io(&path, e))?;
                }
                vacant.insert(bytes)
            }
        };
        Ok(work(bytes))
    }

    /// The owner of the lease of `addr` in `network`, encoded.
    fn lease_holder(
        &self,
        kind: Kind,
        network: &str,
        addr: u128,
    ) -> Result<Option<String>, IpamError> {
        let rel = self.last_table.borrow_mut().path(kind, network, addr);
        let (page, at) = slot_of(addr);
        let value = self.with_page(&rel, page, |bytes| {
            slot_value(&bytes[at..at + SLOT]).map(|value| value.map(str::to_owned))
        })?;
        let path = self.store.path(Path::new(&*rel));
        match value {
            Ok(Some(value)) if !owner_value_valid(&value) => Err(malformed(
                &path,
                &format!(
                    "slot of {}: an owner expected, found {value:?}",
                    kind.addr_text(addr)
                ),
            )),
            Ok(value) => Ok(value),
            Err(what) => Err(malformed(
                &path,
                &format!("slot of {}: {what}", kind.addr_text(addr)),
            )),
        }
    }

    /// Give the lease of `addr` in `network` to the owner `value`
    /// (encoded), or free it (`None`), in its table; written at commit.
    fn set_lease(
        &self,
        kind: Kind,
        network: &str,
        addr: u128,
        value: Option<&str>,
    ) -> Result<(), IpamError> {
        let rel = self.last_table.borrow_mut().path(kind, network, addr);
        let (page, at) = slot_of(addr);
        self.with_page(&rel, page, |bytes| {
            let slot = &mut bytes[at..at + SLOT];
            slot.fill(0);
            if let Some(value) = value {
                slot[..value.len()].copy_from_slice(value.as_bytes());
                slot[value.len()] = b'\n';
            }
        })?;
        if let Some(table) = self.logs.borrow_mut().tables.get_mut(&*rel) {
            table.dirty.insert(page);
        }
        Ok(())
    }

    /// Every lease table of `network`'s pool of `kind` on disk or made in
    /// this transaction, in path order.
    fn tables(&self, kind: Kind, network: &str) -> Result<Vec<String>, IpamError> {
        let dir = pool_path(kind.tag(), network, TABLES);
        let prefix = format!("{}/", dir.display());
        let mut tables: Vec<String> = self
            .store
            .list(&dir)?
            .into_iter()
            .map(|name| format!("{prefix}{name}"))
            .collect();
        tables.extend(
            self.logs
                .borrow()
                .tables
                .keys()
                .filter(|rel| rel.strip_prefix(&prefix).is_some_and(|n| !n.contains('/')))
                .cloned(),
        );
        tables.sort();
        tables.dedup();
        Ok(tables)
    }

    /// The leases of one table: (address, owner). Reads it whole.
    fn table_leases(&self, kind: Kind, rel: &str) -> Result<Vec<(u128, String)>, IpamError> {
        let path = self.store.path(Path::new(rel));
        let name = rel.rsplit('/').next().unwrap_or_default();
        let first = kind
            .parse_addr(name)
            .filter(|first| first % TABLE_SLOTS == 0)
            .ok_or_else(|| malformed(&path, "a lease table named by its first address expected"))?;
        let mut bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(IpamError::io(&path, e)),
        };
        // This transaction's pages over the file's.
        if let Some(table) = self.logs.borrow().tables.get(rel) {
            for (page, cached) in &table.pages {
                let at = *page as usize * PAGE;
                if bytes.len() < at + PAGE {
                    bytes.resize(at + PAGE, 0);
                }
                bytes[at..at + PAGE].copy_from_slice(cached);
            }
        }
        let mut leases = Vec::new();
        for (index, slot) in bytes.chunks(SLOT).enumerate() {
            let addr = first + index as u128;
            match slot_value(slot) {
                Ok(Some(value)) => leases.push((addr, decode_owner(value, &path)?)),
                Ok(None) => {}
                Err(what) => {
                    return Err(malformed(
                        &path,
                        &format!("slot of {}: {what}", kind.addr_text(addr)),
                    ))
                }
            }
        }
        Ok(leases)
    }

    /// Whether `network`'s pool of `kind` has any lease.
    fn has_leases(&self, kind: Kind, network: &str) -> Result<bool, IpamError> {
        for rel in self.tables(kind, network)? {
            if !self.table_leases(kind, &rel)?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Write what changed of the index bucket `rel`: the additions only
    /// (`Some(true)`), or all of it (`None`), rewriting a log that is
    /// mostly dead lines. Recorded for the undo.
    fn write_bucket(&mut self, rel: &str, which: Option<bool>) -> Result<(), IpamError> {
        let mut logs = self.logs.borrow_mut();
        let Some(log) = logs.buckets.get_mut(rel) else {
            return Ok(());
        };
        if !log.is_changed() {
            return Ok(());
        }
        let rel_path = Path::new(rel);
        if which.is_none() && log.wants_rewrite() && log.is_dirty() {
            let old = self
                .store
                .read_prefix(rel_path, log.disk_len.unwrap_or(0))?;
            let text = log.live_text()?;
            self.store.replace_file(rel_path, text.as_bytes())?;
            log.rewritten(text);
            self.undo.push(Undo::RestoreFile(rel.into(), old));
            return Ok(());
        }
        let text = log.take_pending(which);
        if text.is_empty() {
            return Ok(());
        }
        let len = log.disk_len;
        if len.is_none() {
            self.make_buckets()?;
        }
        let written = self.store.append(rel_path, len.or(Some(0)), &text);
        // Before the result: a write cut short is undone as well.
        self.undo.push(Undo::Truncate(rel.into(), len.unwrap_or(0)));
        written?;
        log.appended(&text);
        Ok(())
    }

    /// Create every index bucket file (empty) that is missing: once per
    /// store, so that later allocations only ever append to one (a new
    /// inode can cost most of a millisecond, see the log module). Not
    /// undone: an empty bucket holds nothing.
    fn make_buckets(&self) -> Result<(), IpamError> {
        use std::os::unix::fs::OpenOptionsExt;
        for bucket in 0..INDEX_BUCKETS {
            let path = self.store.path(&Path::new(INDEX).join(bucket_name(bucket)));
            let create = || {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map(drop)
            };
            match self.store.in_dir(&path, create) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(IpamError::io(&path, e))
                }
                _ => {}
            }
        }
        // Kept with the buckets.
        self.store.made_dirs.take();
        Ok(())
    }

    /// Write the changed pages of the lease table `rel`, each contiguous
    /// run in one `pwrite`: the kernel copies a write page by page, so a
    /// kill can cut it between pages only, and a slot (within one page)
    /// is written whole or not at all. Recorded for the undo.
    fn write_table(&mut self, rel: &str) -> Result<(), IpamError> {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        let mut logs = self.logs.borrow_mut();
        let Some(table) = logs.tables.get_mut(rel) else {
            return Ok(());
        };
        if table.dirty.is_empty() {
            return Ok(());
        }
        let path = self.store.path(Path::new(rel));
        let io = |e| IpamError::io(&path, e);
        if table.file.is_none() {
            let open = || {
                fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
            };
            let mut file = None;
            let made = self.store.in_dir(&path, || open().map(|f| file = Some(f)));
            self.undo
                .extend(self.store.made_dirs.take().into_iter().map(Undo::MadeDir));
            made.map_err(io)?;
            self.undo.push(Undo::Created(rel.into()));
            table.file = file;
        }
        // What the file had, to put back: its length (pages past the end
        // are put back by cutting it back) and the pages written over.
        let mut old_len = 0;
        if let Some(file) = &table.file {
            old_len = file.metadata().map_err(io)?.len();
            if old_len > 0 {
                self.undo.push(Undo::Truncate(rel.into(), old_len));
            }
        }
        let Some(file) = &table.file else {
            return Ok(());
        };
        let dirty: Vec<u32> = std::mem::take(&mut table.dirty).into_iter().collect();
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for page in dirty {
            match runs.last_mut() {
                Some((_, end)) if *end + 1 == page => *end = page,
                _ => runs.push((page, page)),
            }
        }
        for (start, end) in runs {
            let offset = u64::from(start) * PAGE as u64;
            let mut bytes = Vec::with_capacity((end - start + 1) as usize * PAGE);
            for page in start..=end {
                bytes.extend_from_slice(&table.pages[&page]);
            }
            if offset < old_len {
                let mut old = vec![0u8; bytes.len().min((old_len - offset) as usize)];
                let on_disk = read_full_at(file, &mut old, offset).map_err(io)?;
                old.truncate(on_disk);
                self.undo.push(Undo::RestoreRange(rel.into(), offset, old));
            }
            file.write_all_at(&bytes, offset).map_err(io)?;
        }
        Ok(())
    }

    /// Write every change of the lease tables and index buckets: index
    /// additions first, then the tables, then index removals, so that a
    /// process killed in between leaves index entries without their
    /// leases (which `release_owner` cleans up), never a lease no index
    /// names.
    fn flush_logs(&mut self) -> Result<(), IpamError> {
        let (mut buckets, mut tables): (Vec<String>, Vec<String>) = {
            let logs = self.logs.borrow();
            (
                logs.buckets
                    .iter()
                    .filter(|(_, log)| log.is_changed())
                    .map(|(rel, _)| rel.clone())
                    .collect(),
                logs.tables
                    .iter()
                    .filter(|(_, table)| !table.dirty.is_empty())
                    .map(|(rel, _)| rel.clone())
                    .collect(),
            )
        };
        buckets.sort();
        tables.sort();
        for rel in &buckets {
            // A bucket with no removal is written whole at once.
            let removals = self
                .logs
                .borrow()
                .buckets
                .get(rel)
                .is_some_and(Log::has_removals);
            self.write_bucket(rel, if removals { Some(true) } else { None })?;
        }
        for rel in &tables {
            self.write_table(rel)?;
        }
        for rel in &buckets {
            self.write_bucket(rel, None)?;
        }
        Ok(())
    }

    /// Write the index entries added to `owner`'s bucket now: before a
    /// record written at once (a MAC or port claim) that they index.
    fn flush_index_adds(&mut self, owner: &str) -> Result<(), IpamError> {
        let key = self.owner_key(owner)?;
        self.write_bucket(&key.bucket, Some(true))
    }

    // --- the owner index ---

    /// `owner`'s value in records and its index bucket, checked; the
    /// last one is kept, as a change asks for it a few times.
    fn owner_key(&self, owner: &str) -> Result<Rc<OwnerKey>, IpamError> {
        if let Some((name, key)) = &*self.last_owner.borrow() {
            if name == owner {
                return Ok(Rc::clone(key));
            }
        }
        let value = encode_owner(owner);
        // A container id (encoded as `=...`) is a valid name: 64 hex
        // digits; anything else is checked.
        if !value.starts_with('=') {
            check_owner(owner)?;
        }
        let key = Rc::new(OwnerKey {
            value,
            bucket: bucket_path(owner),
        });
        *self.last_owner.borrow_mut() = Some((owner.to_owned(), Rc::clone(&key)));
        Ok(key)
    }

    /// `owner`'s index entries, in order (by kind, then network),
    /// including entries a crash may have left.
    fn entries(&self, owner: &str) -> Result<Vec<Entry>, IpamError> {
        let key = self.owner_key(owner)?;
        let mut entries: Vec<Entry> = self.with_bucket(&key.bucket, |log| {
            let values = log.values(&key.value)?;
            Ok::<_, IpamError>(
                values
                    .iter()
                    .filter_map(|token| Entry::parse(token))
                    .collect(),
            )
        })??;
        entries.sort();
        Ok(entries)
    }

    /// Add `new` to `owner`'s index: written before the records they
    /// index (see [`IpamTxn::flush_logs`]).
    fn index_add(&mut self, owner: &str, new: &[Entry]) -> Result<(), IpamError> {
        self.change_index(owner, new, true)
    }

    /// Take `gone` out of `owner`'s index: written after their records.
    fn index_remove(&mut self, owner: &str, gone: &[Entry]) -> Result<(), IpamError> {
        self.change_index(owner, gone, false)
    }

    fn change_index(&mut self, owner: &str, entries: &[Entry], add: bool) -> Result<(), IpamError> {
        let key = self.owner_key(owner)?;
        self.with_bucket(&key.bucket, |log| {
            for entry in entries {
                if add {
                    log.add(&key.value, &entry.token())?;
                } else {
                    log.remove(&key.value, &entry.token())?;
                }
            }
            Ok(())
        })?
    }

    /// The owner of an address lease or MAC claim, as its record has it
    /// (encoded, see [`encode_owner`]).
    fn holder_value(&self, entry: &Entry) -> Result<Option<String>, IpamError> {
        match (entry.kind, entry.addr()) {
            (Kind::V4 | Kind::V6, Some(addr)) => self.lease_holder(entry.kind, &entry.group, addr),
            (Kind::V4 | Kind::V6, None) => Err(malformed(
                &self.store.path(&entry.record()),
                &format!("an address expected, found {:?}", entry.item),
            )),
            _ => self.store.read(&entry.record()),
        }
    }

    /// The owner of an address lease or MAC claim.
    fn holder(&self, entry: &Entry) -> Result<Option<String>, IpamError> {
        self.holder_value(entry)?
            .map(|value| decode_owner(&value, &self.store.path(&entry.record())))
            .transpose()
    }

    /// Whether `owner` holds the lease or MAC claim `entry`.
    fn holds(&self, owner: &str, entry: &Entry) -> Result<bool, IpamError> {
        let key = self.owner_key(owner)?;
        Ok(self
            .holder_value(entry)?
            .is_some_and(|value| value == key.value))
    }

    /// Record that `owner` holds the lease or MAC claim `entry`, index
    /// first.
    fn hold(&mut self, owner: &str, entry: &Entry) -> Result<(), IpamError> {
        self.index_add(owner, std::slice::from_ref(entry))?;
        let key = self.owner_key(owner)?;
        match (entry.kind, entry.addr()) {
            (Kind::V4 | Kind::V6, Some(addr)) => {
                self.set_lease(entry.kind, &entry.group, addr, Some(&key.value))
            }
            _ => {
                self.flush_index_adds(owner)?;
                self.put(entry.record(), &key.value)
            }
        }
    }

    /// Remove the lease or MAC claim `entry` if it is `owner`'s (an entry
    /// left by a crash may index a record since given to another), not
    /// its index entry; whether it was `owner`'s.
    fn drop_record(&mut self, owner: &str, entry: &Entry) -> Result<bool, IpamError> {
        let mine = self.holds(owner, entry)?;
        if mine {
            match (entry.kind, entry.addr()) {
                (Kind::V4 | Kind::V6, Some(addr)) => {
                    self.set_lease(entry.kind, &entry.group, addr, None)?
                }
                _ => {
                    let value = self.owner_key(owner)?.value.clone();
                    self.delete(entry.record(), value)?
                }
            }
        }
        Ok(mine)
    }

    /// The forwards published on a host port and protocol (`group`), and
    /// the record's value.
    fn claims(&self, group: &str) -> Result<(Option<String>, Vec<PortForward>), IpamError> {
        let rel = Path::new(PORTS).join(group);
        let Some(json) = self.store.read(&rel)? else {
            return Ok((None, Vec::new()));
        };
        let claims = serde_json::from_str(&json).map_err(|source| IpamError::Corrupt {
            path: self.store.path(&rel),
            source,
        })?;
        Ok((Some(json), claims))
    }

    fn set_claims(
        &mut self,
        group: &str,
        old: Option<String>,
        claims: &[PortForward],
    ) -> Result<(), IpamError> {
        let rel = Path::new(PORTS).join(group);
        if claims.is_empty() {
            return match old {
                Some(old) => self.delete(rel, old),
                None => Ok(()),
            };
        }
        let json = serde_json::to_string(claims).map_err(|source| IpamError::Corrupt {
            path: self.store.path(&rel),
            source,
        })?;
        self.set(rel, old, &json)
    }

    /// Remove `owner`'s claim of the port `entry` (not its index entry);
    /// the forward, if it was there.
    fn drop_port(&mut self, owner: &str, entry: &Entry) -> Result<Option<PortForward>, IpamError> {
        let (old, mut claims) = self.claims(&entry.group)?;
        let Some(position) = claims
            .iter()
            .position(|f| f.owner == owner && f.mapping.host_ip.to_string() == entry.item)
        else {
            return Ok(None);
        };
        let forward = claims.remove(position);
        self.set_claims(&entry.group, old, &claims)?;
        Ok(Some(forward))
    }

    /// The next-free hint of the pool in `dir` (1 if it has none).
    fn hint(&mut self, dir: &Path) -> Result<u64, IpamError> {
        if let Some(hint) = self.hints.get(dir.as_os_str()) {
            return Ok(hint.next);
        }
        let mut on_disk = None;
        for name in self.store.list(dir)? {
            if let Some(offset) = name.strip_prefix(HINT_PREFIX) {
                on_disk = Some(parse_at(offset, &self.store.path(dir), "a hint offset")?);
            }
        }
        let next = on_disk.unwrap_or(1);
        self.hints
            .insert(dir.as_os_str().to_owned(), Hint { on_disk, next });
        Ok(next)
    }

    fn set_hint(&mut self, dir: &Path, next: u64) -> Result<(), IpamError> {
        match self.hints.get_mut(dir.as_os_str()) {
            Some(hint) => hint.next = next,
            None => {
                self.hint(dir)?;
                if let Some(hint) = self.hints.get_mut(dir.as_os_str()) {
                    hint.next = next;
                }
            }
        }
        if !self.dirty_hints.iter().any(|dirty| dirty == dir) {
            self.dirty_hints.push(dir.to_owned());
        }
        Ok(())
    }

    /// A pool record, `SUBNET GATEWAY`.
    fn read_pool<N: std::str::FromStr, A: std::str::FromStr>(
        &self,
        family: &str,
        network: &str,
    ) -> Result<Option<(N, A)>, IpamError> {
        let rel = pool_path(family, network, "pool");
        let Some(text) = self.store.read(&rel)? else {
            return Ok(None);
        };
        let path = self.store.path(&rel);
        let (subnet, gateway) = text
            .split_once(' ')
            .ok_or_else(|| malformed(&path, "\"SUBNET GATEWAY\" expected"))?;
        Ok(Some((
            parse_at(subnet, &path, "a subnet")?,
            parse_at(gateway, &path, "a gateway")?,
        )))
    }

    /// The entries of `kind` in `group` that `owner` really holds (leases
    /// and MAC claims).
    fn held(&self, owner: &str, kind: Kind, group: &str) -> Result<Vec<Entry>, IpamError> {
        let mut held = Vec::new();
        for entry in self.entries(owner)? {
            if entry.kind == kind && entry.group == group && self.holds(owner, &entry)? {
                held.push(entry);
            }
        }
        Ok(held)
    }

    /// `pool`'s record: the one there if it matches, a fresh one (hint
    /// at the start) if there is none or an empty one that changed.
    fn ensure_pool<P: PoolKind>(&mut self, pool: &P) -> Result<(), IpamError> {
        let name = pool.network();
        let family = P::KIND.tag();
        let record = match P::records(self).get(name) {
            Some(record) => *record,
            None => {
                let record = self.read_pool::<P::Net, P::Addr>(family, name)?;
                P::records(self).insert(name.to_owned(), record);
                record
            }
        };
        let (subnet, gateway) = pool.record();
        match record {
            Some(record) if record == (subnet, gateway) => return Ok(()),
            Some((existing, _)) if self.has_leases(P::KIND, name)? => {
                return Err(P::mismatch(name, existing, subnet))
            }
            _ => {}
        }
        self.put(
            pool_path(family, name, "pool"),
            &format!("{subnet} {gateway}"),
        )?;
        P::records(self).insert(name.to_owned(), Some((subnet, gateway)));
        self.set_hint(&pool_dir(family, name), 1)
    }

    /// The first free offset of `search` at or after its start, wrapping
    /// around once, a page of slots at a time: past the hint the first
    /// page tried has room unless the pool wrapped around.
    fn find_free(
        &self,
        kind: Kind,
        network: &str,
        search: &Search<'_>,
    ) -> Result<Option<u128>, IpamError> {
        let Search {
            base,
            first,
            last,
            start,
            reserved,
        } = *search;
        let span = last - first + 1;
        let (mut offset, mut seen) = (start.clamp(first, last), 0u128);
        while seen < span {
            let addr = base + offset;
            let (page, _) = slot_of(addr);
            let page_first = addr - addr % SLOTS_PER_PAGE;
            // This stretch ends with the page, the bounds, or where the
            // search began.
            let end = (page_first + SLOTS_PER_PAGE - 1 - base)
                .min(last)
                .min(offset + (span - seen) - 1);
            let rel = self.last_table.borrow_mut().path(kind, network, addr);
            let found = self.with_page(&rel, page, |bytes| {
                (offset..=end).find(|candidate| {
                    let at = (base + candidate - page_first) as usize * SLOT;
                    // Free: zeros, or torn (see `slot_value`).
                    !reserved.contains(candidate)
                        && (bytes[at] == 0
                            || slot_value(&bytes[at..at + SLOT]).is_ok_and(|v| v.is_none()))
                })
            })?;
            if found.is_some() {
                return Ok(found);
            }
            seen += end - offset + 1;
            offset = if end == last { first } else { end + 1 };
        }
        Ok(None)
    }

    // --- the API ---

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
        // Checks it, and is kept for the changes below.
        self.owner_key(owner)?;
        let name = pool.network.as_str();
        self.ensure_pool(pool)?;
        let current = match self.held(owner, Kind::V4, name)?.first() {
            Some(entry) => Some(parse_at::<Ipv4Addr>(
                &entry.item,
                &self.store.path(Path::new(&bucket_path(owner))),
                "an IPv4 address",
            )?),
            None => None,
        };
        if let Some(ip) = current {
            if wanted.map_or(true, |wanted| wanted == ip) {
                return Ok(ip);
            }
        }
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
            let entry = Entry::new(Kind::V4, name, wanted);
            if let Some(holder) = self.holder(&entry)? {
                return Err(IpamError::AddressTaken {
                    network: name.to_owned(),
                    ip: wanted,
                    owner: holder,
                });
            }
            self.hold(owner, &entry)?;
            if let Some(old) = current {
                let old_entry = Entry::new(Kind::V4, name, old);
                self.drop_record(owner, &old_entry)?;
                self.index_remove(owner, &[old_entry])?;
            }
            return Ok(wanted);
        }
        let pool_dir = pool_dir("v4", name);
        let hint = self.hint(&pool_dir)?;
        let (first, last) = pool.choice_bounds();
        let size = pool.size();
        let reserved = [0, size - 1, pool.offset(pool.gateway)].map(u128::from);
        let search = Search {
            base: u128::from(u32::from(pool.subnet.network())),
            first: first.into(),
            last: last.into(),
            start: hint.into(),
            reserved: &reserved,
        };
        let Some(offset) = self.find_free(Kind::V4, name, &search)? else {
            return Err(IpamError::Full {
                network: name.to_owned(),
                subnet: pool.subnet,
            });
        };
        // Below the pool's size, a u32.
        let offset = offset as u32;
        let ip = pool.address(offset);
        self.hold(owner, &Entry::new(Kind::V4, name, ip))?;
        self.set_hint(&pool_dir, u64::from((offset + 1) % size))?;
        Ok(ip)
    }

    /// Lease an IPv6 address of `pool` to `owner`: the lease it already
    /// holds there, or the next free one after the last handed out.
    pub fn allocate6(&mut self, pool: &AddressPool6, owner: &str) -> Result<Ipv6Addr, IpamError> {
        pool.validate()?;
        self.owner_key(owner)?;
        let name = pool.network.as_str();
        self.ensure_pool(pool)?;
        if let Some(entry) = self.held(owner, Kind::V6, name)?.first() {
            return parse_at(
                &entry.item,
                &self.store.path(Path::new(&bucket_path(owner))),
                "an IPv6 address",
            );
        }
        let pool_dir = pool_dir("v6", name);
        let last = pool.last_offset();
        let reserved = [u128::from(pool.offset(pool.gateway))];
        // Offsets 1..=last (0 is the subnet-router anycast address).
        let search = Search {
            base: u128::from(pool.subnet.network()),
            first: 1,
            last: last.into(),
            start: self.hint(&pool_dir)?.into(),
            reserved: &reserved,
        };
        let Some(offset) = self.find_free(Kind::V6, name, &search)? else {
            return Err(IpamError::Full6 {
                network: name.to_owned(),
                subnet: pool.subnet,
            });
        };
        // At most `last`, a u64.
        let offset = offset as u64;
        let ip = pool.address(offset);
        self.hold(owner, &Entry::new(Kind::V6, name, ip))?;
        self.set_hint(&pool_dir, if offset == last { 1 } else { offset + 1 })?;
        Ok(ip)
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
        check_owner(owner)?;
        let network = pool.network.as_str();
        check_network(network)?;
        let entry = Entry::new(Kind::Mac, network, mac);
        let taken = |holder: String| IpamError::MacTaken {
            network: network.to_owned(),
            mac,
            owner: holder,
        };
        match self.holder(&entry)? {
            Some(holder) if holder == owner => return Ok(()),
            Some(holder) => return Err(taken(holder)),
            None => {}
        }
        // The owner of the address this MAC is derived from, unless it
        // asked for a MAC of its own.
        if let [0x02, 0x42, a, b, c, d] = mac.0 {
            let lease = Entry::new(Kind::V4, network, Ipv4Addr::new(a, b, c, d));
            if let Some(holder) = self.holder(&lease)? {
                if holder != owner && self.held(&holder, Kind::Mac, network)?.is_empty() {
                    return Err(taken(holder));
                }
            }
        }
        let earlier = self.held(owner, Kind::Mac, network)?;
        self.hold(owner, &entry)?;
        for old in &earlier {
            self.drop_record(owner, old)?;
        }
        self.index_remove(owner, &earlier)
    }

    /// Remove the records of `entries` that `owner` holds, then the
    /// entries from its index; what was `owner`'s: each entry with the
    /// forward of a port.
    fn release_entries(
        &mut self,
        owner: &str,
        entries: Vec<Entry>,
    ) -> Result<Vec<(Entry, Option<PortForward>)>, IpamError> {
        let mut released = Vec::new();
        for entry in &entries {
            if entry.kind == Kind::Port {
                if let Some(forward) = self.drop_port(owner, entry)? {
                    released.push((entry.clone(), Some(forward)));
                }
            } else if self.drop_record(owner, entry)? {
                released.push((entry.clone(), None));
            }
        }
        self.index_remove(owner, &entries)?;
        Ok(released)
    }

    /// Give back `owner`'s IPv6 address in `network`.
    pub fn release6(&mut self, network: &str, owner: &str) -> Result<Option<Ipv6Addr>, IpamError> {
        check_network(network)?;
        let mine: Vec<Entry> = self
            .entries(owner)?
            .into_iter()
            .filter(|e| e.kind == Kind::V6 && e.group == network)
            .collect();
        let released = self.release_entries(owner, mine)?;
        match released.first() {
            Some((entry, _)) => parse_at(
                &entry.item,
                &self.store.path(&entry.record()),
                "an IPv6 address",
            )
            .map(Some),
            None => Ok(None),
        }
    }

    /// The IPv6 leases of `network`, owner -> address.
    pub fn leases6(&self, network: &str) -> Result<BTreeMap<String, Ipv6Addr>, IpamError> {
        check_network(network)?;
        let mut leases = BTreeMap::new();
        for rel in self.tables(Kind::V6, network)? {
            for (addr, owner) in self.table_leases(Kind::V6, &rel)? {
                leases.insert(owner, Ipv6Addr::from(addr));
            }
        }
        Ok(leases)
    }

    /// Give back `owner`'s address in `network` (and the MAC address it
    /// claimed there).
    pub fn release(&mut self, network: &str, owner: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        check_network(network)?;
        let mine: Vec<Entry> = self
            .entries(owner)?
            .into_iter()
            .filter(|e| matches!(e.kind, Kind::V4 | Kind::Mac) && e.group == network)
            .collect();
        for (entry, _) in self.release_entries(owner, mine)? {
            if entry.kind == Kind::V4 {
                return parse_at(
                    &entry.item,
                    &self.store.path(&entry.record()),
                    "an IPv4 address",
                )
                .map(Some);
            }
        }
        Ok(None)
    }

    /// Give back everything `owner` holds: addresses in every network,
    /// MAC addresses and published host ports. Also removes what a crash
    /// left of an unfinished change of `owner`'s.
    pub fn release_owner(&mut self, owner: &str) -> Result<Released, IpamError> {
        let entries = self.entries(owner)?;
        let mut released = Released::default();
        for (entry, forward) in self.release_entries(owner, entries)? {
            match (entry.kind, forward) {
                (Kind::V4, _) => {
                    let path = self.store.path(&entry.record());
                    let ip = parse_at(&entry.item, &path, "an IPv4 address")?;
                    released.addresses.push((entry.group, ip));
                }
                (Kind::Port, Some(forward)) => released.ports.push(forward),
                _ => {}
            }
        }
        sort_forwards(&mut released.ports);
        Ok(released)
    }

    /// Whether any host port forward (other than `except`, an identical
    /// one) clashes with `mapping`; its owner.
    fn port_clash(
        &self,
        mapping: &PortMapping,
        except: Option<&PortForward>,
    ) -> Result<Option<String>, IpamError> {
        let (_, claims) = self.claims(&port_group(mapping))?;
        Ok(claims
            .into_iter()
            .find(|held| held.mapping.clashes_with(mapping) && Some(held) != except)
            .map(|held| held.owner))
    }

    /// Whether exactly `forward` is reserved.
    fn holds_forward(&self, forward: &PortForward) -> Result<bool, IpamError> {
        let (_, claims) = self.claims(&port_group(&forward.mapping))?;
        Ok(claims.contains(forward))
    }

    /// Reserve host ports; all or none. A port held by another owner on
    /// the same address (or where either is on every address), or given
    /// twice, is refused. Re-reserving an identical forward is a no-op.
    pub fn reserve_ports(&mut self, forwards: &[PortForward]) -> Result<(), IpamError> {
        let mut new: BTreeMap<&str, Vec<&PortForward>> = BTreeMap::new();
        for (i, forward) in forwards.iter().enumerate() {
            check_owner(&forward.owner)?;
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
            if let Some(owner) = self.port_clash(mapping, Some(forward))? {
                return Err(IpamError::PortTaken {
                    host_ip: mapping.host_ip,
                    port: mapping.host_port,
                    protocol: mapping.protocol,
                    owner,
                });
            }
            if !self.holds_forward(forward)? {
                new.entry(&forward.owner).or_default().push(forward);
            }
        }
        for (owner, forwards) in new {
            let entries: Vec<Entry> = forwards.iter().map(|f| Entry::port(&f.mapping)).collect();
            self.index_add(owner, &entries)?;
            self.flush_index_adds(owner)?;
            for forward in forwards {
                let group = port_group(&forward.mapping);
                let (old, mut claims) = self.claims(&group)?;
                claims.push(forward.clone());
                self.set_claims(&group, old, &claims)?;
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
                    if self.holds_forward(&forwards[i])? {
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
            let mut chosen = None;
            for port in candidates.clone() {
                let candidate = PortMapping {
                    host_port: port,
                    ..wanted
                };
                // Others of this request count once their port is fixed.
                let settled = forwards.iter().enumerate().any(|(j, f)| {
                    j != i
                        && f.mapping.host_port != 0
                        && f.mapping.host_port_end == 0
                        && f.mapping.clashes_with(&candidate)
                });
                if settled || self.port_clash(&candidate, None)?.is_some() {
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
    pub fn release_ports(&mut self, owner: &str) -> Result<Vec<PortForward>, IpamError> {
        let ports: Vec<Entry> = self
            .entries(owner)?
            .into_iter()
            .filter(|e| e.kind == Kind::Port)
            .collect();
        let mut released: Vec<PortForward> = self
            .release_entries(owner, ports)?
            .into_iter()
            .filter_map(|(_, forward)| forward)
            .collect();
        sort_forwards(&mut released);
        Ok(released)
    }

    /// Give back one host port reservation; whether it was held.
    pub fn release_port(&mut self, forward: &PortForward) -> Result<bool, IpamError> {
        check_owner(&forward.owner)?;
        let group = port_group(&forward.mapping);
        let (old, mut claims) = self.claims(&group)?;
        let before = claims.len();
        claims.retain(|held| held != forward);
        if claims.len() == before {
            return Ok(false);
        }
        self.set_claims(&group, old, &claims)?;
        self.index_remove(&forward.owner, &[Entry::port(&forward.mapping)])?;
        Ok(true)
    }

    /// Whether `owner` holds an address in any network or any host port:
    /// `false` means no trace of an earlier (possibly crashed) attach of
    /// the same owner can exist.
    pub fn holds_anything(&self, owner: &str) -> Result<bool, IpamError> {
        Ok(self
            .entries(owner)?
            .iter()
            .any(|entry| matches!(entry.kind, Kind::V4 | Kind::V6 | Kind::Port)))
    }

    /// The host ports `owner` publishes.
    pub fn port_forwards(&self, owner: &str) -> Result<Vec<PortForward>, IpamError> {
        let mut forwards = Vec::new();
        for entry in self.entries(owner)? {
            if entry.kind == Kind::Port {
                let (_, claims) = self.claims(&entry.group)?;
                forwards.extend(
                    claims.into_iter().filter(|f| {
                        f.owner == owner && f.mapping.host_ip.to_string() == entry.item
                    }),
                );
            }
        }
        sort_forwards(&mut forwards);
        Ok(forwards)
    }

    /// The leases of `network`, in owner order.
    pub fn leases(&self, network: &str) -> Result<Vec<Lease>, IpamError> {
        check_network(network)?;
        let mut leases = Vec::new();
        for rel in self.tables(Kind::V4, network)? {
            for (addr, owner) in self.table_leases(Kind::V4, &rel)? {
                // An IPv4 table's addresses are below 2^32.
                let ip = Ipv4Addr::from(addr as u32);
                leases.push(Lease { owner, ip });
            }
        }
        leases.sort_by(|a, b| (&a.owner, a.ip).cmp(&(&b.owner, b.ip)));
        Ok(leases)
    }

    /// Forget `network`'s pool; refused while it has leases.
    pub fn remove_pool(&mut self, network: &str) -> Result<(), IpamError> {
        check_network(network)?;
        let v4: Vec<String> = self.leases(network)?.into_iter().map(|l| l.owner).collect();
        let v6: Vec<String> = self.leases6(network)?.into_keys().collect();
        for owners in [v4, v6] {
            if let Some(first_owner) = owners.first() {
                return Err(IpamError::InUse {
                    network: network.to_owned(),
                    count: owners.len(),
                    first_owner: first_owner.clone(),
                });
            }
        }
        for kind in [Kind::V4, Kind::V6] {
            let family = kind.tag();
            let dir = pool_dir(family, network);
            for name in self.store.list(&dir)? {
                if name == "pool" || name.starts_with(HINT_PREFIX) {
                    let rel = dir.join(&name);
                    if let Some(old) = self.store.read(&rel)? {
                        self.delete(rel, old)?;
                    }
                }
            }
            self.hints.remove(dir.as_os_str());
            self.dirty_hints.retain(|dirty| *dirty != dir);
            // The (empty) lease tables, put back by an undo.
            for rel in self.tables(kind, network)? {
                let table = self.logs.borrow_mut().tables.remove(&rel);
                if table.map_or(true, |table| table.file.is_some()) {
                    let rel = PathBuf::from(rel);
                    let path = self.store.path(&rel);
                    let bytes = fs::read(&path).map_err(|e| IpamError::io(&path, e))?;
                    self.store.remove(&rel)?;
                    self.undo.push(Undo::RestoreFile(rel, bytes));
                }
            }
            self.store
                .remove_dir_if_empty(&pool_path(family, network, TABLES));
            self.store.remove_dir_if_empty(&dir);
        }
        self.pools.remove(network);
        self.pools6.remove(network);
        Ok(())
    }

    /// Make the changes permanent and release the lock: write the changed
    /// logs (see [`IpamTxn::flush_logs`]) and the next-free hints.
    pub fn commit(mut self) -> Result<(), IpamError> {
        self.flush_logs()?;
        self.write_hints()?;
        self.undo.clear();
        Ok(())
    }

    fn write_hints(&mut self) -> Result<(), IpamError> {
        for dir in std::mem::take(&mut self.dirty_hints) {
            let Some(hint) = self.hints.get_mut(dir.as_os_str()) else {
                continue;
            };
            let new = dir.join(format!("{HINT_PREFIX}{}", hint.next));
            match hint.on_disk {
                Some(old) if old == hint.next => {}
                Some(old) => {
                    let old = self.store.path(&dir.join(format!("{HINT_PREFIX}{old}")));
                    let new = self.store.path(&new);
                    fs::rename(&old, &new).map_err(|e| IpamError::io(&old, e))?;
                }
                None => {
                    self.store.create(&new, "hint")?;
                }
            }
            hint.on_disk = Some(hint.next);
        }
        // Kept with the hints, not undone.
        self.store.made_dirs.take();
        Ok(())
    }

    /// Import the state file of the earlier format (`ipam.json` at
    /// `path`, holding `bytes`), then remove it. A record that exists is
    /// set, so an import that a crash interrupted is simply done again
    /// (the file goes last); a failed one is undone with the transaction.
    fn import(&mut self, path: &Path, bytes: &[u8]) -> Result<(), IpamError> {
        let record: LegacyRecord =
            serde_json::from_slice(bytes).map_err(|source| IpamError::Corrupt {
                path: path.to_owned(),
                source,
            })?;
        for (name, pool) in &record.pools {
            check_network(name)?;
            let value = format!("{} {}", pool.subnet, pool.gateway);
            self.put(pool_path("v4", name, "pool"), &value)?;
            self.set_hint(&pool_dir("v4", name), u64::from(pool.next))?;
            for (owner, ip) in &pool.leases {
                check_owner(owner)?;
                self.hold(owner, &Entry::new(Kind::V4, name, ip))?;
            }
        }
        for (name, pool) in &record.pools6 {
            check_network(name)?;
            let value = format!("{} {}", pool.subnet, pool.gateway);
            self.put(pool_path("v6", name, "pool"), &value)?;
            self.set_hint(&pool_dir("v6", name), pool.next)?;
            for (owner, ip) in &pool.leases {
                check_owner(owner)?;
                self.hold(owner, &Entry::new(Kind::V6, name, ip))?;
            }
        }
        for (network, claims) in &record.macs {
            check_network(network)?;
            for (owner, mac) in claims {
                check_owner(owner)?;
                self.hold(owner, &Entry::new(Kind::Mac, network, mac))?;
            }
        }
        self.reserve_ports(&record.ports)?;
        self.flush_logs()?;
        self.write_hints()?;
        fs::remove_file(path).map_err(|e| IpamError::io(path, e))?;
        self.pools.clear();
        self.pools6.clear();
        self.undo.clear();
        Ok(())
    }

    /// Migrate the per-address links of the previous format: each lease
    /// `<family>/<network>/leases/<address>` (a link to its owner) into
    /// its block and its owner's index bucket, and the MAC and port
    /// entries of each owner's index `owners/<owner>` into its bucket (the
    /// MAC and port records keep their format). The new logs are written
    /// first, then the old links go, leases before indexes: a crash part
    /// way leaves old links that the next transaction migrates again, and
    /// adding what is there already changes nothing.
    fn migrate_links(&mut self) -> Result<(), IpamError> {
        let mut old = Vec::new();
        let mut lease_dirs = Vec::new();
        for kind in [Kind::V4, Kind::V6] {
            let family = kind.tag();
            for network in self.store.list(Path::new(family))? {
                let dir = pool_path(family, &network, LEGACY_LEASES);
                let names = self.store.list(&dir)?;
                if names.is_empty() {
                    lease_dirs.push(dir);
                    continue;
                }
                check_network(&network)?;
                for name in names {
                    let rel = legacy_lease_path(family, &network, &name);
                    let path = self.store.path(&rel);
                    let addr = kind
                        .parse_addr(&name)
                        .ok_or_else(|| malformed(&path, "a lease named by its address expected"))?;
                    if let Some(value) = self.store.read(&rel)? {
                        let owner = decode_owner(&value, &path)?;
                        let entry = Entry::new(kind, &network, kind.addr_text(addr));
                        self.hold(&owner, &entry)?;
                    }
                    old.push(rel);
                }
                lease_dirs.push(dir);
            }
        }
        for owner in self.store.list(Path::new(LEGACY_OWNERS))? {
            let rel = Path::new(LEGACY_OWNERS).join(&owner);
            let path = self.store.path(&rel);
            if !is_valid_name(&owner) {
                return Err(malformed(
                    &path,
                    "an owner's index named by the owner expected",
                ));
            }
            let Some(text) = self.store.read(&rel)? else {
                continue;
            };
            let mut entries = Vec::new();
            for token in text.split(' ') {
                let entry = Entry::parse(token).ok_or_else(|| {
                    malformed(
                        &path,
                        &format!(
                            "an index entry (<kind>,<group>,<item>) expected, found {token:?}"
                        ),
                    )
                })?;
                // The leases came with their records, above.
                if matches!(entry.kind, Kind::Mac | Kind::Port) {
                    entries.push(entry);
                }
            }
            self.index_add(&owner, &entries)?;
            old.push(rel);
        }
        self.flush_logs()?;
        for rel in &old {
            self.store.remove(rel)?;
        }
        // With any temp name a crash left in them.
        for dir in lease_dirs
            .iter()
            .map(PathBuf::as_path)
            .chain([Path::new(LEGACY_OWNERS)])
        {
            let path = self.store.path(dir);
            match fs::remove_dir_all(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(IpamError::io(&path, e))
                }
                _ => {}
            }
        }
        self.undo.clear();
        Ok(())
    }
}

/// Forwards in host port, protocol, host address order.
fn sort_forwards(forwards: &mut [PortForward]) {
    forwards.sort_by_key(|f| {
        (
            f.mapping.host_port,
            f.mapping.protocol.as_str(),
            f.mapping.host_ip,
        )
    });
}

#[path = "ipam_log.rs"]
mod log;

#[cfg(test)]
#[path = "ipam_tests.rs"]
mod tests;
