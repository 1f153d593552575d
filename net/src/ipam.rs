//! IP address management: which address of a network's subnet belongs to
//! which container, and which host ports are published by whom.
//!
//! The state is a directory of small records under an exclusive `flock`
//! on `<dir>/ipam.lock`, so concurrent `berth run`s never hand out the
//! same address or host port. A record is a symbolic link whose target is
//! its value, created in one atomic and exclusive step, so never torn
//! (a value too long for a link is a regular file put in place by link
//! or rename; see `Store`):
//!
//! - `v4/<network>/pool` (`SUBNET GATEWAY`), `v4/<network>/next-<offset>`
//!   (where the next free-address search starts, in the name: moved on by
//!   a rename) and `v4/<network>/leases/<address>` -> owner, one per lease
//!   (as CNI's host-local plugin keeps its leases); the same under `v6/`
//!   for IPv6 pools ([`AddressPool6`], a /64 or smaller);
//! - `macs/<network>/<mac>` -> owner, MAC addresses asked for;
//! - `ports/<protocol>-<port>` -> the [`PortForward`]s published on that
//!   host port (one per host address), as JSON;
//! - `owners/<owner>` -> `<kind>,<group>,<item> ...`: each owner's index of
//!   the leases, claims and ports it holds, so that releasing an owner
//!   reads what it holds and nothing else.
//!
//! So one allocation or release costs the same with ten leases held or
//! ten thousand: it reads and writes a handful of records (the owner's
//! index, the pool record, one lease) and never the others. A search
//! from the hint tries a few addresses; only when the pool has wrapped
//! around and is nearly full does it list the pool's leases into a
//! bitmap. Listing a network's leases or removing a pool reads them all.
//!
//! Work happens in an [`IpamTxn`]: take the lock, make any number of
//! changes, [`IpamTxn::commit`] once. Changes go to disk as they are
//! made, each with its inverse in an undo log: dropping a transaction
//! without committing undoes them, which is how a failed `run` consumes
//! no lease; commit writes the next-free hints and keeps the rest. A
//! record an owner holds is written after its index entry and removed
//! before it, so a process killed at any point leaves nothing that the
//! owner's [`IpamTxn::release_owner`] does not find and remove. Nothing
//! is fsynced: leases do not outlive a reboot (every container is dead
//! then and gives its leases back when removed). The [`Ipam`] methods
//! are one-change transactions for convenience. A state file of the
//! earlier format (`ipam.json`) is imported once and removed.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

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
}

// ---------------------------------------------------------------------------
// The store: one small record per lease, claim and owner (module docs).
// ---------------------------------------------------------------------------

const LOCK_FILE: &str = "ipam.lock";
/// The owner index buckets, `index/<bucket>` (see [`bucket_path`]).
const INDEX: &str = "index";
/// How many buckets the owners are hashed into: with 10,000 owners a
/// bucket holds about ten (a few hundred bytes to read), and filling a
/// /16 in one transaction writes 1024 bucket files, not 65,533.
const INDEX_BUCKETS: u64 = 1024;
/// The per-owner index of the previous format, `owners/<owner>`, which
/// a transaction migrates (see [`IpamTxn::migrate_links`]).
const LEGACY_OWNERS: &str = "owners";
/// The per-address leases of the previous format,
/// `<family>/<network>/leases/<address>`.
const LEGACY_LEASES: &str = "leases";
const BLOCKS: &str = "blocks";
const PORTS: &str = "ports";
/// Prefix of the names replacements are written under before the rename;
/// listings skip them (one is left only by a crash between the two steps).
const TEMP_PREFIX: &str = ".tmp.";
/// Values up to this long are symbolic links, longer ones (an owner with
/// hundreds of ports) regular files: a link's target is at most
/// PATH_MAX - 1 bytes.
const LINK_VALUE_MAX: usize = 4000;
/// Addresses per lease block: a block is the aligned /24 (IPv4) or /120
/// (IPv6) around an address.
const BLOCK_SIZE: u128 = 256;
/// Blocks a free-address search reads one by one before it lists the
/// pool's block files instead: past the hint the blocks are free unless
/// the pool wrapped around, so the listing (O(blocks)) is for nearly
/// full pools only.
const PROBED_BLOCKS: u32 = 2;

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
            Kind::V4 => text.parse::<Ipv4Addr>().ok().map(|a| u128::from(u32::from(a))),
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
            (Kind::V4 | Kind::V6, Some(addr)) => block_path(self.kind, &self.group, addr),
            (Kind::V4 | Kind::V6, None) => {
                [self.kind.tag(), &self.group, BLOCKS, &self.item].iter().collect()
            }
            (Kind::Mac, _) => ["macs", &self.group, &self.item].iter().collect(),
            (Kind::Port, _) => Path::new(PORTS).join(&self.group),
        }
    }
}

/// `<family>/<network>/blocks/<first address>`: the leases of the block
/// of [`BLOCK_SIZE`] addresses around `addr`.
fn block_path(kind: Kind, network: &str, addr: u128) -> PathBuf {
    let first = kind.addr_text(addr - addr % BLOCK_SIZE);
    [kind.tag(), network, BLOCKS, &first].iter().collect()
}

/// `<family>/<network>/leases/<address>`: a lease of the previous format.
fn legacy_lease_path(family: &str, network: &str, ip: &str) -> PathBuf {
    [family, network, LEGACY_LEASES, ip].iter().collect()
}

/// `<family>/<network>/<file>`: `pool` (subnet and gateway) or `blocks`.
fn pool_path(family: &str, network: &str, file: &str) -> PathBuf {
    [family, network, file].iter().collect()
}

/// `<family>/<network>`: a pool's directory.
fn pool_dir(family: &str, network: &str) -> PathBuf {
    [family, network].iter().collect()
}

/// `index/<bucket>`: the index bucket `owner` is hashed into (FNV-1a:
/// stable across builds and versions, unlike std's hasher).
fn bucket_path(owner: &str) -> PathBuf {
    let hash = owner.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    Path::new(INDEX).join(format!("{:03x}", hash % INDEX_BUCKETS))
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
    if digits.len() != 64
        || !digits
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return owner.to_owned();
    }
    let nibble = |b: u8| {
        if b.is_ascii_digit() {
            b - b'0'
        } else {
            b - b'a' + 10
        }
    };
    let bytes: Vec<u8> = digits
        .chunks(2)
        .map(|pair| nibble(pair[0]) << 4 | nibble(pair[1]))
        .collect();
    format!("={}", URL_SAFE_NO_PAD.encode(bytes))
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
    fn in_dir(&self, path: &Path, make: impl Fn() -> io::Result<()>) -> io::Result<()> {
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
    fn read_log(
        &self,
        rel: &Path,
        valid: impl Fn(&str, &str) -> bool,
    ) -> Result<Log, IpamError> {
        let path = self.path(rel);
        match fs::read(&path) {
            Ok(bytes) => Log::parse(&bytes, &path, valid),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Log::missing()),
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

/// The log records a transaction read or changed: lease blocks and
/// owner-index buckets, by path, and which block files exist.
#[derive(Debug, Default)]
struct Logs {
    logs: HashMap<PathBuf, Log>,
    /// The taken addresses of each block read, by offset in the block.
    taken: HashMap<PathBuf, Bitmap>,
    /// The block files of a pool's `blocks` directory, listed once (a
    /// block neither there nor in `logs` has no lease).
    listed: HashMap<PathBuf, std::collections::HashSet<String>>,
}

/// The two kinds of pool, for the code they share.
trait PoolKind {
    type Net: Copy + Eq + std::fmt::Display + std::str::FromStr;
    type Addr: Copy + Eq + std::fmt::Display + std::str::FromStr;
    const KIND: Kind;

    fn network(&self) -> &str;
    fn record(&self) -> (Self::Net, Self::Addr);
    /// The transaction's copy of this kind's pool records.
    fn records(
        txn: &mut IpamTxn,
    ) -> &mut HashMap<String, Option<(Self::Net, Self::Addr)>>;
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
    hints: HashMap<PathBuf, Hint>,
    dirty_hints: Vec<PathBuf>,
    /// Lease blocks and index buckets read, with the changes not written
    /// yet (in a cell: reading one through `&self` caches it).
    logs: std::cell::RefCell<Logs>,
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

    // --- log records: lease blocks and index buckets ---

    /// Read the log `rel` into the transaction's copy, if it has not: an
    /// index bucket, or a lease block (with its taken addresses). A block
    /// the pool's listing does not have is empty, without a read.
    fn load(&self, logs: &mut Logs, rel: &Path) -> Result<(), IpamError> {
        if logs.logs.contains_key(rel) {
            return Ok(());
        }
        let path = self.store.path(rel);
        if rel.starts_with(INDEX) {
            let log = self.store.read_log(rel, |owner, token| {
                decode_owner(owner, &path).is_ok() && Entry::parse(token).is_some()
            })?;
            logs.logs.insert(rel.to_owned(), log);
            return Ok(());
        }
        let kind = match rel.iter().next().and_then(|tag| tag.to_str()) {
            Some("v6") => Kind::V6,
            _ => Kind::V4,
        };
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let first = kind
            .parse_addr(name)
            .filter(|first| first % BLOCK_SIZE == 0)
            .ok_or_else(|| malformed(&path, "a block named by its first address expected"))?;
        let unlisted = rel
            .parent()
            .and_then(|dir| logs.listed.get(dir))
            .is_some_and(|names| !names.contains(name));
        let log = if unlisted {
            Log::missing()
        } else {
            self.store.read_log(rel, |addr, owner| {
                kind.parse_addr(addr).is_some_and(|a| {
                    a - a % BLOCK_SIZE == first && kind.addr_text(a) == addr
                }) && decode_owner(owner, &path).is_ok()
            })?
        };
        let mut taken = Bitmap::new(BLOCK_SIZE as u32);
        for (addr, _) in log.pairs() {
            if let Some(addr) = kind.parse_addr(addr) {
                taken.set((addr - first) as u32);
            }
        }
        logs.taken.insert(rel.to_owned(), taken);
        logs.logs.insert(rel.to_owned(), log);
        Ok(())
    }

    /// Run `change` on the log `rel`, read first if need be.
    fn with_log<R>(
        &self,
        rel: &Path,
        change: impl FnOnce(&mut Log) -> R,
    ) -> Result<R, IpamError> {
        let mut logs = self.logs.borrow_mut();
        self.load(&mut logs, rel)?;
        let log = logs
            .logs
            .get_mut(rel)
            .ok_or_else(|| malformed(&self.store.path(rel), "a log that could not be read"))?;
        Ok(change(log))
    }

    /// The owner of the lease of `addr` in `network`.
    fn lease_holder(
        &self,
        kind: Kind,
        network: &str,
        addr: u128,
    ) -> Result<Option<String>, IpamError> {
        let rel = block_path(kind, network, addr);
        let key = kind.addr_text(addr);
        let value = self.with_log(&rel, |log| {
            log.values(&key).and_then(|owners| owners.first().cloned())
        })?;
        value
            .map(|value| decode_owner(&value, &self.store.path(&rel)))
            .transpose()
    }

    /// Add (`taken`) or remove the lease of `addr` in `network` to the
    /// owner `value` (encoded) in its block, written at commit.
    fn set_lease(
        &self,
        kind: Kind,
        network: &str,
        addr: u128,
        value: &str,
        taken: bool,
    ) -> Result<(), IpamError> {
        let rel = block_path(kind, network, addr);
        let key = kind.addr_text(addr);
        let held = self.with_log(&rel, |log| {
            if taken {
                log.add(&key, value);
            } else {
                log.remove(&key, value);
            }
            log.values(&key).is_some()
        })?;
        if let Some(bits) = self.logs.borrow_mut().taken.get_mut(&rel) {
            let bit = (addr % BLOCK_SIZE) as u32;
            if held {
                bits.set(bit);
            } else {
                bits.clear(bit);
            }
        }
        Ok(())
    }

    /// List the block files of `network`'s pool of `kind`, once.
    fn list_blocks(&self, kind: Kind, network: &str) -> Result<(), IpamError> {
        let dir = pool_path(kind.tag(), network, BLOCKS);
        if self.logs.borrow().listed.contains_key(&dir) {
            return Ok(());
        }
        let names = self.store.list(&dir)?;
        self.logs
            .borrow_mut()
            .listed
            .insert(dir, names.into_iter().collect());
        Ok(())
    }

    /// Every block of `network`'s pool of `kind` on disk or made in this
    /// transaction, in path order.
    fn blocks(&self, kind: Kind, network: &str) -> Result<Vec<PathBuf>, IpamError> {
        self.list_blocks(kind, network)?;
        let dir = pool_path(kind.tag(), network, BLOCKS);
        let logs = self.logs.borrow();
        let mut blocks: Vec<PathBuf> = logs
            .listed
            .get(&dir)
            .into_iter()
            .flatten()
            .map(|name| dir.join(name))
            .chain(
                logs.logs
                    .keys()
                    .filter(|rel| rel.parent() == Some(dir.as_path()))
                    .cloned(),
            )
            .collect();
        blocks.sort();
        blocks.dedup();
        Ok(blocks)
    }

    /// The leases of one block: (address, owner).
    fn block_leases(&self, kind: Kind, rel: &Path) -> Result<Vec<(u128, String)>, IpamError> {
        let path = self.store.path(rel);
        let pairs: Vec<(String, String)> = self.with_log(rel, |log| {
            log.pairs()
                .map(|(addr, owner)| (addr.to_owned(), owner.to_owned()))
                .collect()
        })?;
        pairs
            .into_iter()
            .map(|(addr, owner)| {
                let addr = kind
                    .parse_addr(&addr)
                    .ok_or_else(|| malformed(&path, "an address expected"))?;
                Ok((addr, decode_owner(&owner, &path)?))
            })
            .collect()
    }

    /// Whether `network`'s pool of `kind` has any lease.
    fn has_leases(&self, kind: Kind, network: &str) -> Result<bool, IpamError> {
        for rel in self.blocks(kind, network)? {
            if !self.with_log(&rel, |log| log.is_empty())? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Write what changed of the log `rel`: the additions only
    /// (`Some(true)`), or all of it (`None`), rewriting a log that is
    /// mostly dead lines. Recorded for the undo.
    fn write_log(&mut self, rel: &Path, which: Option<bool>) -> Result<(), IpamError> {
        let mut logs = self.logs.borrow_mut();
        let logs = &mut *logs;
        let Some(log) = logs.logs.get_mut(rel) else {
            return Ok(());
        };
        if !log.is_dirty() {
            return Ok(());
        }
        if which.is_none() && log.wants_rewrite() {
            let old = self.store.read_prefix(rel, log.disk_len.unwrap_or(0))?;
            let text = log.live_text();
            self.store.replace_file(rel, text.as_bytes())?;
            log.rewritten(&text);
            self.undo.push(Undo::RestoreFile(rel.to_owned(), old));
            return Ok(());
        }
        let text = log.take_pending(which);
        if text.is_empty() {
            return Ok(());
        }
        let len = log.disk_len;
        let written = self.store.append(rel, len, &text);
        let made = self.store.made_dirs.take();
        self.undo.extend(made.into_iter().map(Undo::MadeDir));
        // Before the result: a write cut short is undone as well.
        self.undo.push(match len {
            None => Undo::Created(rel.to_owned()),
            Some(len) => Undo::Truncate(rel.to_owned(), len),
        });
        written?;
        log.appended(&text);
        if let (Some(dir), Some(name)) = (rel.parent(), rel.file_name()) {
            if let Some(names) = logs.listed.get_mut(dir) {
                names.insert(name.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }

    /// Write every changed log: index additions first, then the lease
    /// blocks, then index removals, so that a process killed in between
    /// leaves index entries without their leases (which `release_owner`
    /// cleans up), never a lease no index names.
    fn flush_logs(&mut self) -> Result<(), IpamError> {
        let mut dirty: Vec<PathBuf> = self
            .logs
            .borrow()
            .logs
            .iter()
            .filter(|(_, log)| log.is_dirty())
            .map(|(rel, _)| rel.clone())
            .collect();
        dirty.sort();
        let (buckets, blocks): (Vec<PathBuf>, Vec<PathBuf>) =
            dirty.into_iter().partition(|rel| rel.starts_with(INDEX));
        for rel in &buckets {
            self.write_log(rel, Some(true))?;
        }
        for rel in blocks.iter().chain(&buckets) {
            self.write_log(rel, None)?;
        }
        Ok(())
    }

    /// Write the index entries added to `owner`'s bucket now: before a
    /// record written at once (a MAC or port claim) that they index.
    fn flush_index_adds(&mut self, owner: &str) -> Result<(), IpamError> {
        self.write_log(&bucket_path(owner), Some(true))
    }

    // --- the owner index ---

    /// `owner`'s index entries, in order (by kind, then network),
    /// including entries a crash may have left.
    fn entries(&self, owner: &str) -> Result<Vec<Entry>, IpamError> {
        check_owner(owner)?;
        let key = encode_owner(owner);
        let mut entries: Vec<Entry> = self.with_log(&bucket_path(owner), |log| {
            log.values(&key)
                .into_iter()
                .flatten()
                .filter_map(|token| Entry::parse(token))
                .collect()
        })?;
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
        check_owner(owner)?;
        let key = encode_owner(owner);
        self.with_log(&bucket_path(owner), |log| {
            for entry in entries {
                if add {
                    log.add(&key, &entry.token());
                } else {
                    log.remove(&key, &entry.token());
                }
            }
        })
    }

    /// The owner of an address lease or MAC claim.
    fn holder(&self, entry: &Entry) -> Result<Option<String>, IpamError> {
        match (entry.kind, entry.addr()) {
            (Kind::V4 | Kind::V6, Some(addr)) => self.lease_holder(entry.kind, &entry.group, addr),
            (Kind::V4 | Kind::V6, None) => Err(malformed(
                &self.store.path(&entry.record()),
                &format!("an address expected, found {:?}", entry.item),
            )),
            _ => {
                let rel = entry.record();
                match self.store.read(&rel)? {
                    Some(value) => decode_owner(&value, &self.store.path(&rel)).map(Some),
                    None => Ok(None),
                }
            }
        }
    }

    /// Record that `owner` holds the lease or MAC claim `entry`, index
    /// first.
    fn hold(&mut self, owner: &str, entry: &Entry) -> Result<(), IpamError> {
        self.index_add(owner, std::slice::from_ref(entry))?;
        let value = encode_owner(owner);
        match (entry.kind, entry.addr()) {
            (Kind::V4 | Kind::V6, Some(addr)) => {
                self.set_lease(entry.kind, &entry.group, addr, &value, true)
            }
            _ => {
                self.flush_index_adds(owner)?;
                self.put(entry.record(), &value)
            }
        }
    }

    /// Remove the lease or MAC claim `entry` if it is `owner`'s (an entry
    /// left by a crash may index a record since given to another), not
    /// its index entry; whether it was `owner`'s.
    fn drop_record(&mut self, owner: &str, entry: &Entry) -> Result<bool, IpamError> {
        let mine = self.holder(entry)?.is_some_and(|holder| holder == owner);
        if mine {
            let value = encode_owner(owner);
            match (entry.kind, entry.addr()) {
                (Kind::V4 | Kind::V6, Some(addr)) => {
                    self.set_lease(entry.kind, &entry.group, addr, &value, false)?
                }
                _ => self.delete(entry.record(), value)?,
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
        if let Some(hint) = self.hints.get(dir) {
            return Ok(hint.next);
        }
        let mut on_disk = None;
        for name in self.store.list(dir)? {
            if let Some(offset) = name.strip_prefix(HINT_PREFIX) {
                on_disk = Some(parse_at(offset, &self.store.path(dir), "a hint offset")?);
            }
        }
        let next = on_disk.unwrap_or(1);
        self.hints.insert(dir.to_owned(), Hint { on_disk, next });
        Ok(next)
    }

    fn set_hint(&mut self, dir: &Path, next: u64) -> Result<(), IpamError> {
        self.hint(dir)?;
        if let Some(hint) = self.hints.get_mut(dir) {
            hint.next = next;
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
            if entry.kind == kind
                && entry.group == group
                && self.holder(&entry)?.is_some_and(|o| o == owner)
            {
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
        self.put(pool_path(family, name, "pool"), &format!("{subnet} {gateway}"))?;
        P::records(self).insert(name.to_owned(), Some((subnet, gateway)));
        self.set_hint(&pool_dir(family, name), 1)
    }

    /// The first free offset of `search` at or after its start, wrapping
    /// around once. Block by block: past the hint the first block tried
    /// has room unless the pool wrapped around; after a few full ones the
    /// pool's block files are listed, so that a block without one is
    /// known empty without a read.
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
        let (mut offset, mut seen, mut blocks) = (start.clamp(first, last), 0u128, 0u32);
        while seen < span {
            let addr = base + offset;
            let block = addr - addr % BLOCK_SIZE;
            // This stretch ends with the block, the bounds, or where the
            // search began.
            let end = (block + BLOCK_SIZE - 1 - base)
                .min(last)
                .min(offset + (span - seen) - 1);
            if blocks == PROBED_BLOCKS {
                self.list_blocks(kind, network)?;
            }
            blocks += 1;
            let rel = block_path(kind, network, addr);
            let mut logs = self.logs.borrow_mut();
            self.load(&mut logs, &rel)?;
            let (mut low, high) = ((addr - block) as u32, (base + end - block) as u32);
            while let Some(bit) = logs
                .taken
                .get(&rel)
                .and_then(|taken| taken.first_clear_between(low, high))
            {
                let candidate = block + u128::from(bit) - base;
                if !reserved.contains(&candidate) {
                    return Ok(Some(candidate));
                }
                low = bit + 1;
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
        check_owner(owner)?;
        let name = pool.network.as_str();
        self.ensure_pool(pool)?;
        let current = match self.held(owner, Kind::V4, name)?.first() {
            Some(entry) => Some(parse_at::<Ipv4Addr>(
                &entry.item,
                &self.store.path(&bucket_path(owner)),
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
        check_owner(owner)?;
        let name = pool.network.as_str();
        self.ensure_pool(pool)?;
        if let Some(entry) = self.held(owner, Kind::V6, name)?.first() {
            return parse_at(
                &entry.item,
                &self.store.path(&bucket_path(owner)),
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
        for rel in self.blocks(Kind::V6, network)? {
            for (addr, owner) in self.block_leases(Kind::V6, &rel)? {
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
        for rel in self.blocks(Kind::V4, network)? {
            for (addr, owner) in self.block_leases(Kind::V4, &rel)? {
                // An IPv4 block's addresses are below 2^32.
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
            self.hints.remove(&dir);
            self.dirty_hints.retain(|dirty| *dirty != dir);
            // The (empty) block files, put back by an undo.
            for rel in self.blocks(kind, network)? {
                let mut logs = self.logs.borrow_mut();
                logs.taken.remove(&rel);
                if logs.logs.remove(&rel).is_some_and(|log| log.disk_len.is_some()) {
                    let path = self.store.path(&rel);
                    let bytes = fs::read(&path).map_err(|e| IpamError::io(&path, e))?;
                    self.store.remove(&rel)?;
                    self.undo.push(Undo::RestoreFile(rel, bytes));
                }
            }
            let blocks = pool_path(family, network, BLOCKS);
            self.logs.borrow_mut().listed.remove(&blocks);
            self.store.remove_dir_if_empty(&blocks);
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
            let Some(hint) = self.hints.get_mut(&dir) else {
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
                return Err(malformed(&path, "an owner's index named by the owner expected"));
            }
            let Some(text) = self.store.read(&rel)? else {
                continue;
            };
            let mut entries = Vec::new();
            for token in text.split(' ') {
                let entry = Entry::parse(token).ok_or_else(|| {
                    malformed(
                        &path,
                        &format!("an index entry (<kind>,<group>,<item>) expected, found {token:?}"),
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
        for dir in lease_dirs.iter().map(PathBuf::as_path).chain([Path::new(LEGACY_OWNERS)]) {
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
