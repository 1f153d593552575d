//! nf_tables messages over NETLINK_NETFILTER, written by hand: attribute
//! encoding, batch framing (`NFNL_MSG_BATCH_BEGIN` ... `END`, one kernel
//! transaction), dumps, and the socket.
//!
//! Hand-written rather than through neli: neli 0.7 has no nfnetlink
//! batch framing or nf_tables attribute types, and the handful of
//! messages berth needs (tables, chains, rules; a rule dump) are a few
//! hundred lines of plain byte building that unit tests can compare
//! byte for byte with what `nft --debug=mnl` sends.
//!
//! Numbers are the kernel's (`linux/netfilter/nf_tables.h`,
//! `linux/netfilter/nfnetlink.h`); nf_tables attributes carry integers in
//! network byte order, register data (compared values) as the packet or
//! the kernel holds them.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// nfnetlink subsystem of nf_tables.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
/// With NEWTABLE/NEWCHAIN/NEWRULE: create (an existing table or chain is
/// kept).
pub const NLM_F_CREATE: u16 = 0x400;
/// With NEWRULE: at the end of the chain (without it: at the start).
pub const NLM_F_APPEND: u16 = 0x800;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLA_F_NESTED: u16 = 1 << 15;

/// `nfgen_family` of an `ip` table.
pub const NFPROTO_IPV4: u8 = 2;
/// `nfgen_family` of an `ip6` table.
pub const NFPROTO_IPV6: u8 = 10;

/// nf_tables message types (`enum nf_tables_msg_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum MsgType {
    NewTable = 0,
    GetTable = 1,
    DelTable = 2,
    NewChain = 3,
    GetChain = 4,
    NewRule = 6,
    GetRule = 7,
    DelRule = 8,
}

/// Attribute numbers (`NFTA_*`) berth uses.
pub mod attr {
    pub const TABLE_NAME: u16 = 1;

    pub const CHAIN_TABLE: u16 = 1;
    pub const CHAIN_NAME: u16 = 3;
    pub const CHAIN_HOOK: u16 = 4;
    pub const CHAIN_POLICY: u16 = 5;
    pub const CHAIN_TYPE: u16 = 7;
    pub const HOOK_HOOKNUM: u16 = 1;
    pub const HOOK_PRIORITY: u16 = 2;

    pub const RULE_TABLE: u16 = 1;
    pub const RULE_CHAIN: u16 = 2;
    pub const RULE_HANDLE: u16 = 3;
    pub const RULE_EXPRESSIONS: u16 = 4;
    pub const RULE_USERDATA: u16 = 7;

    pub const LIST_ELEM: u16 = 1;
    pub const EXPR_NAME: u16 = 1;
    pub const EXPR_DATA: u16 = 2;

    pub const DATA_VALUE: u16 = 1;
    pub const DATA_VERDICT: u16 = 2;
    pub const VERDICT_CODE: u16 = 1;
    pub const VERDICT_CHAIN: u16 = 2;
}

/// Attributes being written: `nlattr` headers, 4-byte alignment, nesting.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attrs(Vec<u8>);

impl Attrs {
    pub fn new() -> Self {
        Attrs(Vec::new())
    }

    pub fn bytes(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        // Attributes are short (names, addresses, a few nested levels).
        let header = u16::try_from(len).expect("netlink attribute longer than 64 KiB");
        self.0.extend_from_slice(&header.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.pad();
        self
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.bytes(kind, &bytes)
    }

    /// A 32-bit integer in network byte order.
    pub fn u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// A 64-bit integer in network byte order.
    pub fn u64(&mut self, kind: u16, value: u64) -> &mut Self {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// A nested attribute whose contents `fill` writes.
    pub fn nested(&mut self, kind: u16, fill: impl FnOnce(&mut Attrs)) -> &mut Self {
        let mut inner = Attrs::new();
        fill(&mut inner);
        self.bytes(kind | NLA_F_NESTED, &inner.0)
    }

    fn pad(&mut self) {
        while self.0.len() % 4 != 0 {
            self.0.push(0);
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// One netlink message: header, `nfgenmsg`, attributes.
fn message(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, a: &[u8]) {
    let len = u32::try_from(NLMSG_HDRLEN + NFGENMSG_LEN + a.len()).expect("message fits in u32");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    buf.extend_from_slice(a);
}

fn nft_type(kind: MsgType) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | kind as u16
}

/// Messages applied by the kernel as one transaction: all or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    bytes: Vec<u8>,
    first_seq: u32,
    next_seq: u32,
    /// Whether it deletes anything (see [`NfSocket::close`]).
    deletes: bool,
}

impl Batch {
    /// A batch whose messages are numbered from `seq` (the begin marker
    /// takes `seq`).
    pub fn new(seq: u32) -> Self {
        let mut bytes = Vec::new();
        message(
            &mut bytes,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        Batch {
            bytes,
            first_seq: seq,
            next_seq: seq.wrapping_add(1),
            deletes: false,
        }
    }

    /// Add one request (acknowledged, so that a failure names it).
    pub fn push(&mut self, kind: MsgType, family: u8, flags: u16, attrs: &Attrs) {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        self.deletes |= matches!(kind, MsgType::DelTable | MsgType::DelRule);
        message(
            &mut self.bytes,
            nft_type(kind),
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            family,
            0,
            attrs.as_bytes(),
        );
    }

    /// How many requests the batch holds.
    pub fn len(&self) -> usize {
        self.next_seq.wrapping_sub(self.first_seq) as usize - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole batch, end marker included.
    pub fn finish(mut self) -> Vec<u8> {
        let seq = self.next_seq;
        message(
            &mut self.bytes,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        self.bytes
    }
}

/// A failure of nf_tables over netlink.
#[derive(Debug, thiserror::Error)]
pub enum NfError {
    #[error("cannot open a netfilter netlink socket: {0}")]
    Socket(#[source] nix::Error),
    #[error("netfilter netlink {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    /// The kernel refused request number `index` of a batch (or the
    /// commit, `index` 0), with this errno.
    #[error("nf_tables refused {what}: {errno}")]
    Refused {
        what: String,
        errno: nix::errno::Errno,
    },
    #[error("malformed netfilter netlink reply: {0}")]
    Malformed(&'static str),
}

impl NfError {
    /// The kernel's errno, when it refused a request.
    pub fn errno(&self) -> Option<nix::errno::Errno> {
        match self {
            NfError::Refused { errno, .. } => Some(*errno),
            NfError::Io { source, .. } | NfError::Socket(source) => Some(*source),
            NfError::Malformed(_) => None,
        }
    }
}

/// One nf_tables object from a reply: the `nfgenmsg` family and the
/// top-level attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub family: u8,
    pub attrs: Vec<u8>,
}

impl Object {
    /// The first top-level attribute `kind`.
    pub fn get(&self, kind: u16) -> Option<&[u8]> {
        parse_attrs(&self.attrs)
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v)
    }

    /// A string attribute (without its NUL).
    pub fn get_str(&self, kind: u16) -> Option<&str> {
        let bytes = self.get(kind)?;
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).ok()
    }

    /// A 64-bit attribute in network byte order.
    pub fn get_u64(&self, kind: u16) -> Option<u64> {
        let bytes: [u8; 8] = self.get(kind)?.try_into().ok()?;
        Some(u64::from_be_bytes(bytes))
    }
}

/// The attributes in `bytes` as (type without flags, value); stops at
/// the first malformed one.
pub fn parse_attrs(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & !(NLA_F_NESTED | 0x4000);
        if len < 4 || len > rest.len() {
            return None;
        }
        let value = &rest[4..len];
        let aligned = (len + 3) & !3;
        rest = &rest[aligned.min(rest.len())..];
        Some((kind, value))
    })
}

/// One netlink message of a reply.
#[derive(Debug)]
struct Reply<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn parse_replies(bytes: &[u8]) -> Result<Vec<Reply<'_>>, NfError> {
    let mut replies = Vec::new();
    let mut rest = bytes;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(NfError::Malformed("message length"));
        }
        replies.push(Reply {
            kind: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes")),
            payload: &rest[NLMSG_HDRLEN..len],
        });
        let aligned = (len + 3) & !3;
        rest = &rest[aligned.min(rest.len())..];
    }
    Ok(replies)
}

/// The errno of an `NLMSG_ERROR` payload (0: an acknowledgement).
fn error_code(payload: &[u8]) -> Result<i32, NfError> {
    let bytes: [u8; 4] = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(NfError::Malformed("short error message"))?;
    Ok(i32::from_ne_bytes(bytes))
}

/// A NETLINK_NETFILTER socket in the caller's network namespace.
#[derive(Debug)]
pub struct NfSocket {
    fd: OwnedFd,
    seq: u32,
    /// A batch sent on it deleted something (see [`NfSocket::close`]).
    deleted: bool,
}

/// Large enough for one datagram of a dump (the kernel fills at most
/// 32 KiB per message batch) or of a batch's acknowledgements.
const RECV_BUFFER: usize = 128 * 1024;

impl NfSocket {
    pub fn open() -> Result<Self, NfError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(NfError::Socket)?;
        // Sequence numbers only need to differ between requests on this
        // socket; starting from the clock makes stale replies of nobody
        // else's look foreign.
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Ok(NfSocket {
            fd,
            seq,
            deleted: false,
        })
    }

    /// A batch numbered for this socket.
    pub fn batch(&mut self) -> Batch {
        let batch = Batch::new(self.seq);
        // Room for the batch's messages; a batch never holds 2^16.
        self.seq = self.seq.wrapping_add(1 << 16);
        batch
    }

    fn send(&self, bytes: &[u8]) -> Result<(), NfError> {
        let kernel = NetlinkAddr::new(0, 0);
        let sent = sendto(self.fd.as_raw_fd(), bytes, &kernel, MsgFlags::empty())
            .map_err(|source| NfError::Io { op: "send", source })?;
        if sent != bytes.len() {
            return Err(NfError::Io {
                op: "send",
                source: nix::errno::Errno::EMSGSIZE,
            });
        }
        Ok(())
    }

    /// Send `batch` and wait for its outcome. The kernel handles a batch
    /// inside the send call, so every acknowledgement and error is queued
    /// by the time it returns; they are read without blocking. `describe`
    /// names request `i` (1-based; 0 is the transaction itself) for the
    /// error.
    pub fn commit(
        &mut self,
        batch: Batch,
        describe: impl Fn(usize) -> String,
    ) -> Result<(), NfError> {
        if batch.is_empty() {
            return Ok(());
        }
        let first = batch.first_seq;
        let expected = batch.len();
        self.deleted |= batch.deletes;
        self.send(&batch.finish())?;
        let mut buffer = vec![0u8; RECV_BUFFER];
        let mut acknowledged = 0;
        let mut failure = None;
        loop {
            let n = match recv(self.fd.as_raw_fd(), &mut buffer, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(source) => {
                    return Err(NfError::Io {
                        op: "receive",
                        source,
                    })
                }
            };
            for reply in parse_replies(&buffer[..n])? {
                if reply.kind != NLMSG_ERROR {
                    continue;
                }
                let code = error_code(reply.payload)?;
                let index = reply.seq.wrapping_sub(first) as usize;
                if code == 0 {
                    acknowledged += 1;
                } else if failure.is_none() {
                    failure = Some((index, nix::errno::Errno::from_raw(-code)));
                }
            }
        }
        match failure {
            Some((index, errno)) => Err(NfError::Refused {
                what: describe(index),
                errno,
            }),
            None if acknowledged < expected => Err(NfError::Malformed("missing acknowledgements")),
            None => Ok(()),
        }
    }

    /// Dump the objects a GET request of `kind` for `family` (filtered by
    /// `attrs`) returns. ENOENT (the table does not exist) is an empty
    /// list.
    pub fn dump(
        &mut self,
        kind: MsgType,
        family: u8,
        attrs: &Attrs,
    ) -> Result<Vec<Object>, NfError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut request = Vec::new();
        message(
            &mut request,
            nft_type(kind),
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family,
            0,
            attrs.as_bytes(),
        );
        self.send(&request)?;
        let mut objects = Vec::new();
        let mut buffer = vec![0u8; RECV_BUFFER];
        loop {
            let n = match recv(self.fd.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(source) => {
                    return Err(NfError::Io {
                        op: "receive",
                        source,
                    })
                }
            };
            if n == 0 {
                return Err(NfError::Malformed("end of stream inside a dump"));
            }
            for reply in parse_replies(&buffer[..n])? {
                if reply.seq != seq {
                    continue;
                }
                match reply.kind {
                    NLMSG_DONE => return Ok(objects),
                    NLMSG_ERROR => {
                        let code = error_code(reply.payload)?;
                        return match nix::errno::Errno::from_raw(-code) {
                            nix::errno::Errno::ENOENT => Ok(Vec::new()),
                            errno => Err(NfError::Refused {
                                what: format!("a {kind:?} dump"),
                                errno,
                            }),
                        };
                    }
                    _ => {
                        if reply.payload.len() < NFGENMSG_LEN {
                            return Err(NfError::Malformed("short nf_tables object"));
                        }
                        objects.push(Object {
                            family: reply.payload[0],
                            attrs: reply.payload[NFGENMSG_LEN..].to_vec(),
                        });
                        if reply.flags & NLM_F_MULTI == 0 {
                            return Ok(objects);
                        }
                    }
                }
            }
        }
    }

    /// Close the socket; after a batch that deleted something, without
    /// waiting for the kernel ([`NfSocket::close_without_waiting`]).
    pub fn close(self) {
        if self.deleted {
            self.close_without_waiting();
        }
    }

    /// Close the socket without making the caller wait for the kernel.
    ///
    /// The last close of a NETLINK_NETFILTER socket waits while objects
    /// that any transaction deleted are still being freed (nf_tables
    /// flushes its destroy work on the socket's release: an RCU grace
    /// period, 4-30 ms), and a process's exit closes its sockets before
    /// its parent can see it end. After a transaction that deleted rules
    /// the socket therefore goes to a short-lived grandchild that closes
    /// every other descriptor it inherited (so that no pipe or lock stays
    /// open for it) but a pipe, waits until this process has dropped its
    /// own copy of the socket (end of file on the pipe), so that the
    /// grandchild's close is the last one, then closes it and exits; the
    /// child between them exits at once and is reaped here, the grandchild
    /// by init. If a pipe or the fork fails the socket is closed here,
    /// waiting.
    pub fn close_without_waiting(self) {
        let fd = self.fd.as_raw_fd();
        let mut pipe = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills the two-element array it is given.
        if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return;
        }
        let (released, released_write) = (pipe[0], pipe[1]);
        // SAFETY: fork in a process that may have other threads: the
        // children only make async-signal-safe calls (fork, close_range,
        // read, close, _exit) before exiting, and touch no memory the
        // parent shares.
        let child = unsafe { libc::fork() };
        match child {
            0 => {
                // SAFETY: as above; only async-signal-safe calls.
                unsafe {
                    if libc::fork() == 0 {
                        close_all_but(fd.min(released), fd.max(released));
                        let mut byte = 0u8;
                        // End of file once the parent closed its end.
                        while libc::read(released, (&mut byte as *mut u8).cast(), 1) > 0 {}
                        libc::close(fd);
                    }
                    libc::_exit(0);
                }
            }
            pid if pid > 0 => {
                drop(self);
                // SAFETY: the pipe's descriptors are this function's own.
                unsafe {
                    libc::close(released_write);
                    libc::close(released);
                }
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            }
            _ => {
                drop(self);
                // SAFETY: as above.
                unsafe {
                    libc::close(released_write);
                    libc::close(released);
                }
            }
        }
    }

    /// Whether this kernel speaks nf_tables: a table dump is answered.
    pub fn probe(&mut self) -> Result<(), NfError> {
        self.dump(MsgType::GetTable, NFPROTO_IPV4, &Attrs::new())
            .map(|_| ())
    }
}

/// Close every descriptor of the process but `low` and `high` (low <
/// high). Only async-signal-safe calls (for a forked child).
///
/// # Safety
/// Closes descriptors that other code of the process may own: only for
/// a child that execs or exits right after.
unsafe fn close_all_but(low: libc::c_int, high: libc::c_int) {
    let (low, high) = (low as libc::c_uint, high as libc::c_uint);
    // SAFETY: close_range only closes descriptors (the caller's promise).
    unsafe {
        if low > 0 {
            libc::syscall(libc::SYS_close_range, 0 as libc::c_uint, low - 1, 0);
        }
        if high > low + 1 {
            libc::syscall(libc::SYS_close_range, low + 1, high - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, high + 1, libc::c_uint::MAX, 0);
    }
}

impl From<NfError> for io::Error {
    fn from(error: NfError) -> Self {
        match error.errno() {
            Some(errno) => io::Error::new(io::Error::from(errno).kind(), error),
            None => io::Error::other(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_aligned_and_nested() {
        let mut attrs = Attrs::new();
        attrs
            .str(attr::TABLE_NAME, "berth")
            .u32(2, 0x0102_0304)
            .nested(attr::CHAIN_HOOK, |hook| {
                hook.u32(attr::HOOK_HOOKNUM, 4);
            });
        assert_eq!(
            attrs.as_bytes(),
            [
                10, 0, 1, 0, b'b', b'e', b'r', b't', b'h', 0, 0, 0, // "berth\0" + pad
                8, 0, 2, 0, 1, 2, 3, 4, // big-endian u32
                12, 0, 4, 0x80, 8, 0, 1, 0, 0, 0, 0, 4, // nested flag set
            ]
        );
        let parsed: Vec<(u16, Vec<u8>)> = parse_attrs(attrs.as_bytes())
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        assert_eq!(parsed[0], (1, b"berth\0".to_vec()));
        assert_eq!(parsed[1], (2, vec![1, 2, 3, 4]));
        assert_eq!(parsed[2].0, 4);
        assert_eq!(
            parse_attrs(&parsed[2].1).collect::<Vec<_>>(),
            [(1, &[0, 0, 0, 4][..])]
        );
        // Truncated input ends the walk instead of reading past it.
        assert_eq!(parse_attrs(&attrs.as_bytes()[..6]).count(), 0);
        assert_eq!(parse_attrs(&[0xff, 0xff, 1, 0]).count(), 0);
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end_markers() {
        let mut table = Attrs::new();
        table.str(attr::TABLE_NAME, "t");
        let mut batch = Batch::new(100);
        batch.push(MsgType::NewTable, NFPROTO_IPV4, NLM_F_CREATE, &table);
        assert_eq!(batch.len(), 1);
        let bytes = batch.finish();
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            // BATCH_BEGIN, len 20, type 0x10, flags REQUEST, seq 100,
            // nfgenmsg AF_UNSPEC v0 res_id NFNL_SUBSYS_NFTABLES (be)
            &[20, 0, 0, 0, 0x10, 0, 1, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10][..],
            // NEWTABLE (10 << 8 | 0), REQUEST|ACK|CREATE, seq 101, ip
            &[28, 0, 0, 0, 0x00, 0x0a, 0x05, 0x04, 101, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0],
            &[6, 0, 1, 0, b't', 0, 0, 0],
            // BATCH_END, seq 102
            &[20, 0, 0, 0, 0x11, 0, 1, 0, 102, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10],
        ]
        .concat();
        assert_eq!(bytes, expected);
        let replies = parse_replies(&bytes).unwrap();
        assert_eq!(
            replies.iter().map(|r| (r.kind, r.seq)).collect::<Vec<_>>(),
            [(0x10, 100), (0x0a00, 101), (0x11, 102)]
        );
        assert!(Batch::new(7).is_empty());
    }

    #[test]
    fn objects_read_their_attributes() {
        let mut attrs = Attrs::new();
        attrs
            .str(attr::RULE_TABLE, "berth")
            .u64(attr::RULE_HANDLE, 42);
        let object = Object {
            family: NFPROTO_IPV4,
            attrs: attrs.as_bytes().to_vec(),
        };
        assert_eq!(object.get_str(attr::RULE_TABLE), Some("berth"));
        assert_eq!(object.get_u64(attr::RULE_HANDLE), Some(42));
        assert_eq!(object.get(attr::RULE_USERDATA), None);
        assert!(parse_replies(&[40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(error_code(&[1, 2]).is_err());
    }
}
