//! The embedded DNS responder: docker's `127.0.0.11` for containers on
//! user-defined networks.
//!
//! A UDP socket bound to `127.0.0.11:53` inside the container's network
//! namespace ([`bind_embedded`]) is served by a thread of the process that
//! supervises the container ([`Responder::spawn`]), so there is no process
//! per network to start, supervise or leak: the socket lives and dies with
//! the container's supervisor.
//!
//! Names are answered from the container's own `/etc/hosts` file, read
//! again for every query: berth rewrites that file whenever a container
//! joins or leaves one of the container's networks (under a lock, after the
//! address lease changed), so the answers are as live as the file, under
//! concurrent starts and stops, with no second copy of the membership to
//! keep in step. `A` and `AAAA` queries for a name the file has get its
//! addresses (or an empty answer for the other family); `PTR` queries
//! for an IPv4 address it has get the first name. Every other query is
//! relayed unchanged to the upstream servers (the nameservers the
//! container would have had without the responder), one at a time each on
//! a short-lived thread, and the first reply is relayed back; with no
//! upstream servers (an `--internal` network) the answer is `REFUSED`,
//! so that no name leaves an internal network.
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use std::path::Path;
//! use berth_net::dns::{bind_embedded, Responder};
//! use berth_net::netns::{netns_path, open_netns};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let netns = open_netns(&netns_path(Path::new("/proc"), 4242))?;
//! let socket = bind_embedded(netns.as_fd())?;
//! let upstreams = vec!["192.0.2.53:53".parse()?];
//! let serving = Responder::new(socket, "/var/lib/berth/containers/c0ffee/hosts", upstreams).spawn()?;
//! // ... the container runs; when it ended:
//! drop(serving);
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Where containers find the responder (docker's address).
pub const EMBEDDED_DNS_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// Seconds a client may keep an answer: short, because a name goes with
/// its container.
const ANSWER_TTL: u32 = 10;
/// How long one upstream server gets to answer before the next is asked;
/// with two servers still inside a resolver's usual 5 s timeout.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Relayed queries in flight at once; more are answered `SERVFAIL` at
/// once, so a flood cannot make a thread per packet.
const MAX_FORWARDS: usize = 32;
/// Largest message relayed (EDNS0 answers may exceed 512 bytes).
const MAX_MESSAGE: usize = 4096;
/// The most of a hosts file read (berth's own are a few KiB even with
/// hundreds of containers on a network).
const MAX_HOSTS_FILE: u64 = 1 << 20;
/// Stack of the responder's threads: they parse one small message.
const THREAD_STACK: usize = 64 * 1024;

const TYPE_A: u16 = 1;
const TYPE_PTR: u16 = 12;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

const RCODE_FORMERR: u8 = 1;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_REFUSED: u8 = 5;

/// Errors of the responder, naming the socket address involved.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot enter the container's network namespace for its DNS responder: {0}")]
    Netns(#[source] nix::Error),
    #[error("cannot bind the DNS responder to {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the DNS responder's thread: {0}")]
    Thread(#[source] io::Error),
    #[error("cannot duplicate the DNS responder's socket: {0}")]
    Socket(#[source] io::Error),
}

/// A UDP socket on `127.0.0.11:53` inside the network namespace `netns`
/// (whose `lo` must be up). The socket stays in that namespace.
pub fn bind_embedded(netns: BorrowedFd<'_>) -> Result<UdpSocket, DnsError> {
    crate::netns::run_in_netns(netns, bind_embedded_here).map_err(DnsError::Netns)?
}

/// [`bind_embedded`] for code already running in the namespace (such as
/// the driver's one visit to a new container's namespace, which binds it
/// there rather than entering the namespace again).
pub fn bind_embedded_here() -> Result<UdpSocket, DnsError> {
    let address = SocketAddr::from((EMBEDDED_DNS_ADDRESS, 53));
    UdpSocket::bind(address).map_err(|source| DnsError::Bind { address, source })
}

/// One container's responder; see the module docs.
#[derive(Debug)]
pub struct Responder {
    socket: UdpSocket,
    hosts_file: PathBuf,
    search_domains: Vec<String>,
    upstreams: Vec<SocketAddr>,
    forwards: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Responder {
    /// Answer queries on `socket` from `hosts_file`, relaying the rest to
    /// the `upstreams` servers (normally port 53 of each
    /// [`nameservers`](crate::nameservers)); none means refusing them.
    pub fn new(
        socket: UdpSocket,
        hosts_file: impl Into<PathBuf>,
        upstreams: Vec<SocketAddr>,
    ) -> Self {
        Responder {
            socket,
            hosts_file: hosts_file.into(),
            search_domains: Vec::new(),
            upstreams,
            forwards: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Also answer the file's names under these domains (the container's
    /// resolv.conf `search` list): resolvers such as busybox's ask for
    /// `NAME.DOMAIN` rather than `NAME`.
    pub fn with_search_domains(mut self, domains: Vec<String>) -> Self {
        self.search_domains = domains
            .into_iter()
            .map(|d| d.trim_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        self
    }

    /// The domains given to [`Responder::with_search_domains`].
    pub fn search_domains(&self) -> &[String] {
        &self.search_domains
    }

    /// The socket served (to hand it to another process).
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// The servers other names are relayed to.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Serve on a thread of its own until the returned [`Serving`] is
    /// dropped (when the container ended).
    pub fn spawn(self) -> Result<Serving, DnsError> {
        let socket = self.socket.try_clone().map_err(DnsError::Socket)?;
        let stop = Arc::clone(&self.stop);
        let thread = std::thread::Builder::new()
            .name("dns".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                // Receiving fails only when the socket is gone: nothing
                // left to serve.
                let _ = self.serve();
            })
            .map_err(DnsError::Thread)?;
        Ok(Serving {
            socket,
            stop,
            thread: Some(thread),
        })
    }

    /// Answer queries until receiving fails (that error) or a
    /// [`Serving`] stops it (`None`).
    pub fn serve(&self) -> Option<io::Error> {
        let mut buffer = [0u8; MAX_MESSAGE];
        loop {
            let received = self.socket.recv_from(&mut buffer);
            if self.stop.load(Ordering::Acquire) {
                return None;
            }
            let (len, client) = match received {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(e),
            };
            let query = &buffer[..len];
            // Read for every query: the file is what berth keeps live.
            let hosts = read_hosts(&self.hosts_file);
            let names = LocalNames {
                hosts: &hosts,
                search_domains: &self.search_domains,
            };
            match reply(query, &names, !self.upstreams.is_empty()) {
                Reply::Answer(message) => {
                    let _ = self.socket.send_to(&message, client);
                }
                Reply::Forward => self.forward(query, client),
                Reply::Drop => {}
            }
        }
    }

    /// Relay `query` upstream on a thread; `SERVFAIL` when too many are
    /// in flight or no thread can be made.
    fn forward(&self, query: &[u8], client: SocketAddr) {
        let refuse = |socket: &UdpSocket| {
            if let Some(message) = error_reply(query, RCODE_SERVFAIL) {
                let _ = socket.send_to(&message, client);
            }
        };
        if self.forwards.fetch_add(1, Ordering::AcqRel) >= MAX_FORWARDS {
            self.forwards.fetch_sub(1, Ordering::AcqRel);
            return refuse(&self.socket);
        }
        let Ok(socket) = self.socket.try_clone() else {
            self.forwards.fetch_sub(1, Ordering::AcqRel);
            return refuse(&self.socket);
        };
        let query = query.to_vec();
        let upstreams = self.upstreams.clone();
        let forwards = Arc::clone(&self.forwards);
        let spawned = std::thread::Builder::new()
            .name("dns-forward".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let message = ask_upstreams(&query, &upstreams)
                    .or_else(|| error_reply(&query, RCODE_SERVFAIL));
                if let Some(message) = message {
                    let _ = socket.send_to(&message, client);
                }
                forwards.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            self.forwards.fetch_sub(1, Ordering::AcqRel);
            refuse(&self.socket);
        }
    }
}

/// The hosts file's text, at most [`MAX_HOSTS_FILE`] bytes of it: the
/// container can write its /etc/hosts, and must not make its monitor
/// read gigabytes per query. Unreadable or not UTF-8: what can be read.
fn read_hosts(path: &std::path::Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = io::Read::read_to_end(&mut io::Read::take(file, MAX_HOSTS_FILE), &mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A responder serving on its thread; dropping it stops the thread and
/// closes the socket (so the container's network namespace is not kept
/// alive by it).
#[derive(Debug)]
pub struct Serving {
    socket: UdpSocket,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the blocked receive (it returns 0 bytes); on an
        // unconnected UDP socket the call reports ENOTCONN but does it.
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&self.socket),
            nix::sys::socket::Shutdown::Read,
        );
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The first upstream reply to `query` (same id, a response), each server
/// asked in turn with [`UPSTREAM_TIMEOUT`].
fn ask_upstreams(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let id = query.get(..2)?;
    for upstream in upstreams {
        let local: SocketAddr = match upstream {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let Ok(socket) = UdpSocket::bind(local) else {
            continue;
        };
        if socket.connect(upstream).is_err()
            || socket.set_read_timeout(Some(UPSTREAM_TIMEOUT)).is_err()
            || socket.send(query).is_err()
        {
            continue;
        }
        let mut buffer = vec![0u8; MAX_MESSAGE];
        // Stray datagrams (a late reply to an earlier query) are skipped
        // until the timeout.
        while let Ok(len) = socket.recv(&mut buffer) {
            if len >= 12 && &buffer[..2] == id && buffer[2] & 0x80 != 0 {
                buffer.truncate(len);
                return Some(buffer);
            }
        }
    }
    None
}

/// What to do with one received message.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send this message back.
    Answer(Vec<u8>),
    /// Not a name of the hosts file: ask the upstream servers.
    Forward,
    /// Not a query (too short, or a response): ignore it.
    Drop,
}

/// The names the responder answers itself.
#[derive(Debug, Clone, Copy)]
pub struct LocalNames<'a> {
    /// A hosts file's text.
    pub hosts: &'a str,
    /// Its names are answered under these domains too (lower case).
    pub search_domains: &'a [String],
}

impl LocalNames<'_> {
    /// The addresses of `name` (lower case), itself or without one of the
    /// search domains; `None` when it has none.
    fn addresses(&self, name: &str) -> Option<Vec<IpAddr>> {
        addresses_of(self.hosts, name).or_else(|| {
            self.search_domains.iter().find_map(|domain| {
                let short = name.strip_suffix(domain.as_str())?.strip_suffix('.')?;
                addresses_of(self.hosts, short)
            })
        })
    }
}

/// The responder's decision for `message` given the `names` it answers
/// itself; `can_forward` is whether there are upstream servers.
pub fn reply(message: &[u8], names: &LocalNames<'_>, can_forward: bool) -> Reply {
    if message.len() < 12 || message[2] & 0x80 != 0 {
        return Reply::Drop;
    }
    let Some(query) = Query::parse(message) else {
        return error_reply(message, RCODE_FORMERR).map_or(Reply::Drop, Reply::Answer);
    };
    let local = match query.class {
        CLASS_IN => local_answer(&query, names),
        _ => None,
    };
    match local {
        Some(addresses) => Reply::Answer(query.answer(&addresses)),
        None if can_forward => Reply::Forward,
        None => Reply::Answer(query.error(RCODE_REFUSED)),
    }
}

/// The answer the hosts file gives to `query`, `None` when the name is
/// not its to answer.
fn local_answer(query: &Query<'_>, names: &LocalNames<'_>) -> Option<Vec<Record>> {
    match query.kind {
        TYPE_A | TYPE_AAAA => {
            let addresses = names.addresses(&query.name)?;
            Some(
                addresses
                    .into_iter()
                    .filter(|ip| ip.is_ipv4() == (query.kind == TYPE_A))
                    .map(Record::Address)
                    .collect(),
            )
        }
        TYPE_PTR => {
            let ip = ptr_address(&query.name)?;
            let name = name_of(names.hosts, ip)?;
            Some(vec![Record::Pointer(name.to_owned())])
        }
        // Another type for a name the file has: no such record here.
        _ => names.addresses(&query.name).map(|_| Vec::new()),
    }
}

/// The addresses `name` has in the hosts file (in file order, without
/// repeats); `None` when it is not there.
fn addresses_of(hosts: &str, name: &str) -> Option<Vec<IpAddr>> {
    let mut found: Vec<IpAddr> = Vec::new();
    for (ip, names) in hosts_lines(hosts) {
        if names.iter().any(|n| n.eq_ignore_ascii_case(name)) && !found.contains(&ip) {
            found.push(ip);
        }
    }
    (!found.is_empty()).then_some(found)
}

/// The first name of `ip` in the hosts file.
fn name_of(hosts: &str, ip: Ipv4Addr) -> Option<&str> {
    hosts_lines(hosts)
        .find(|(address, _)| *address == IpAddr::V4(ip))
        .and_then(|(_, names)| names.first().copied())
}

/// The hosts file's lines as (address, names), comments and malformed
/// lines left out.
fn hosts_lines(hosts: &str) -> impl Iterator<Item = (IpAddr, Vec<&str>)> {
    hosts.lines().filter_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let ip = words.next()?.parse().ok()?;
        let names: Vec<&str> = words.collect();
        (!names.is_empty()).then_some((ip, names))
    })
}

/// `d.c.b.a.in-addr.arpa` -> a.b.c.d.
fn ptr_address(name: &str) -> Option<Ipv4Addr> {
    let labels: Vec<&str> = name.strip_suffix(".in-addr.arpa")?.split('.').collect();
    let [d, c, b, a] = labels.as_slice() else {
        return None;
    };
    Some(Ipv4Addr::new(
        a.parse().ok()?,
        b.parse().ok()?,
        c.parse().ok()?,
        d.parse().ok()?,
    ))
}

/// A record of a local answer.
#[derive(Debug)]
enum Record {
    Address(IpAddr),
    Pointer(String),
}

/// A standard query with one question.
#[derive(Debug)]
struct Query<'a> {
    message: &'a [u8],
    /// The question section's bytes (name, type, class), echoed back.
    question_end: usize,
    /// The name, lower case, without the root's trailing dot.
    name: String,
    kind: u16,
    class: u16,
}

impl<'a> Query<'a> {
    /// `None` unless `message` is a standard query (opcode 0) with
    /// exactly one question whose name is well formed and uncompressed.
    fn parse(message: &'a [u8]) -> Option<Self> {
        let opcode = (message[2] >> 3) & 0x0f;
        let questions = u16::from_be_bytes([message[4], message[5]]);
        if opcode != 0 || questions != 1 {
            return None;
        }
        let mut position = 12;
        let mut labels: Vec<String> = Vec::new();
        loop {
            let len = usize::from(*message.get(position)?);
            position += 1;
            if len == 0 {
                break;
            }
            // 0xc0: a compression pointer, never needed in a question.
            if len > 63 {
                return None;
            }
            let label = message.get(position..position + len)?;
            labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
            position += len;
        }
        let name = labels.join(".");
        if name.len() > 253 {
            return None;
        }
        let fixed = message.get(position..position + 4)?;
        Some(Query {
            message,
            question_end: position + 4,
            name,
            kind: u16::from_be_bytes([fixed[0], fixed[1]]),
            class: u16::from_be_bytes([fixed[2], fixed[3]]),
        })
    }

    /// The header of a reply with `rcode` and `answers` records, the
    /// question echoed.
    fn reply_header(&self, rcode: u8, answers: u16, authoritative: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.question_end + 64);
        out.extend_from_slice(&self.message[..2]);
        // QR, the query's RD, RA (berth recurses through its upstreams),
        // AA for names it owns.
        let recursion_desired = self.message[2] & 0x01;
        out.push(0x80 | if authoritative { 0x04 } else { 0 } | recursion_desired);
        out.push(0x80 | (rcode & 0x0f));
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&answers.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&self.message[12..self.question_end]);
        out
    }

    fn answer(&self, records: &[Record]) -> Vec<u8> {
        let count = u16::try_from(records.len()).unwrap_or(u16::MAX);
        let mut out = self.reply_header(0, count, true);
        for record in records.iter().take(usize::from(count)) {
            // The name: a pointer to the question's (at offset 12).
            out.extend_from_slice(&[0xc0, 12]);
            let (kind, data) = match record {
                Record::Address(IpAddr::V4(ip)) => (TYPE_A, ip.octets().to_vec()),
                Record::Address(IpAddr::V6(ip)) => (TYPE_AAAA, ip.octets().to_vec()),
                Record::Pointer(name) => (TYPE_PTR, encode_name(name)),
            };
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&ANSWER_TTL.to_be_bytes());
            let len = u16::try_from(data.len()).unwrap_or(0);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&data[..usize::from(len)]);
        }
        out
    }

    fn error(&self, rcode: u8) -> Vec<u8> {
        self.reply_header(rcode, 0, false)
    }
}

/// An error reply to `message`: its question echoed when it parses, else
/// the bare header (FORMERR); `None` for a message too short to answer.
fn error_reply(message: &[u8], rcode: u8) -> Option<Vec<u8>> {
    if message.len() < 12 {
        return None;
    }
    if let Some(query) = Query::parse(message) {
        return Some(query.error(rcode));
    }
    let mut out = message[..2].to_vec();
    out.push(0x80 | (message[2] & 0x01));
    out.push(0x80 | rcode);
    out.extend_from_slice(&[0; 8]);
    Some(out)
}

/// `name` in DNS wire form (labels longer than 63 bytes cut).
fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
    out
}

#[cfg(test)]
#[path = "dns_tests.rs"]
mod tests;
