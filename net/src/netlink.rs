//! rtnetlink through `neli`: links, bridges, veth pairs, addresses and
//! routes. No `ip` or `brctl` subprocesses.
//!
//! A [`Netlink`] handle talks to the network namespace it was opened in:
//! [`Netlink::connect`] for the caller's, [`Netlink::connect_in`] for
//! another one (entered on a short-lived thread just to open the socket).

use std::fmt;
use std::io::Cursor;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::str::FromStr;

use ipnet::Ipv4Net;
use neli::consts::nl::{NlmF, Nlmsg, NlmsgerrAttr};
use neli::consts::rtnl::{
    Ifa, Iff, Ifla, IflaInfo, RtAddrFamily, RtScope, RtTable, Rta, RtaType, Rtm, Rtn, Rtprot,
};
use neli::consts::socket::NlFamily;
use neli::err::SocketError;
use neli::nl::{NlPayload, NlmsghdrBuilder};
use neli::rtnl::{
    Ifaddrmsg, IfaddrmsgBuilder, Ifinfomsg, IfinfomsgBuilder, Rtattr, RtattrBuilder, Rtmsg,
    RtmsgBuilder,
};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::{Buffer, RtBuffer};
use neli::utils::Groups;
use neli::{FromBytesWithInput, Size, ToBytes};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::netns::run_in_netns;

/// `VETH_INFO_PEER` from `<linux/veth.h>`.
const VETH_INFO_PEER: u16 = 1;
/// Longest interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Errors from netlink requests; each names the operation, the link and
/// the namespace, and keeps the kernel's errno.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket in {netns}: {source}")]
    Socket {
        netns: String,
        #[source]
        source: SocketError,
    },
    #[error("cannot enter network namespace {netns}: {source}")]
    EnterNetns {
        netns: String,
        #[source]
        source: Errno,
    },
    #[error("cannot {op} {subject} in {netns}: {errno}{}", ext_ack.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel {
        op: &'static str,
        subject: String,
        netns: String,
        errno: Errno,
        ext_ack: Option<String>,
    },
    #[error("netlink I/O to {op} {subject} in {netns}: {source}")]
    Io {
        op: &'static str,
        subject: String,
        netns: String,
        #[source]
        source: SocketError,
    },
    #[error("cannot build the netlink request to {op} {subject}: {detail}")]
    Build {
        op: &'static str,
        subject: String,
        detail: String,
    },
    #[error("link {name} not found in {netns}")]
    NoSuchLink { name: String, netns: String },
    #[error("link {name} in {netns} exists but is {kind:?}, not a {expected}")]
    WrongKind {
        name: String,
        netns: String,
        kind: Option<String>,
        expected: &'static str,
    },
    #[error("invalid interface name {name:?} (1 to 15 characters, no '/', ':' or whitespace)")]
    InvalidName { name: String },
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// A MAC address; shown and serialised as `02:42:0a:0a:00:02`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// docker's scheme: a locally administered `02:42` followed by the
    /// IPv4 address, so that the MAC is unique on the bridge.
    pub fn from_ipv4(ip: Ipv4Addr) -> Self {
        let [a, b, c, d] = ip.octets();
        MacAddr([0x02, 0x42, a, b, c, d])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Why a MAC address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(|| MacParseError(s.to_owned()))?;
            if part.len() != 2 {
                return Err(MacParseError(s.to_owned()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_owned()));
        }
        Ok(MacAddr(bytes))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What [`Netlink::link`] reports about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub up: bool,
    /// Index of the bridge it is attached to.
    pub master: Option<u32>,
    /// `IFLA_INFO_KIND`: `bridge`, `veth`, ...; `None` for plain devices
    /// such as `lo`.
    pub kind: Option<String>,
    /// `IFLA_LINK`: for a veth, the index of its peer (in the peer's
    /// namespace).
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: set when the peer lives in another namespace:
    /// that namespace's id as seen from this one, or
    /// [`NSID_NOT_ASSIGNED`] when it has none (the kernel gives no id to a
    /// namespace that is being destroyed).
    pub link_netnsid: Option<i32>,
    /// `IFLA_IFALIAS`, the free-text alias (berth marks its bridges'
    /// owner there).
    pub alias: Option<String>,
}

/// `NETNSA_NSID_NOT_ASSIGNED`: the peer namespace has no id here.
pub const NSID_NOT_ASSIGNED: i32 = -1;

/// `LOOPBACK_IFINDEX`: `lo` is interface 1 in every network namespace.
pub const LOOPBACK_IFINDEX: u32 = 1;

/// Whether the namespace at the other end of a link is alive, as far as
/// this namespace can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerNetns {
    /// The peer is in this namespace (or the link has no peer).
    Local,
    /// The peer's namespace is alive.
    Alive,
    /// The peer's namespace is being destroyed: the kernel deletes the
    /// pair with it, asynchronously.
    Dying,
}

/// The peer end of a new veth pair.
#[derive(Debug, Clone, Copy)]
pub struct VethPeer<'a> {
    pub name: &'a str,
    /// Create the peer directly in this network namespace.
    pub netns: Option<BorrowedFd<'a>>,
    pub mac: Option<MacAddr>,
}

/// Check an interface name: 1 to 15 bytes, no `/`, `:`, whitespace or NUL.
pub fn check_ifname(name: &str) -> Result<(), NetlinkError> {
    let bad = |c: char| c == '/' || c == ':' || c == '\0' || c.is_whitespace();
    if name.is_empty()
        || name.len() > MAX_IFNAME_LEN
        || name.contains(bad)
        || name == "."
        || name == ".."
    {
        return Err(NetlinkError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The index of interface `name` in the calling thread's network
/// namespace, `None` if there is none. Unlike an rtnetlink request this
/// takes no RTNL lock (the kernel answers under RCU), so it does not wait
/// while the kernel holds that lock to tear down a network namespace; an
/// interface being unregistered is already gone from this view.
pub fn link_index_unlocked(name: &str) -> Result<Option<u32>, NetlinkError> {
    check_ifname(name)?;
    let c_name = std::ffi::CString::new(name).map_err(|_| NetlinkError::InvalidName {
        name: name.to_owned(),
    })?;
    // SAFETY: a valid NUL-terminated string; if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    Ok((index != 0).then_some(index))
}

/// An rtnetlink socket bound to one network namespace.
pub struct Netlink {
    socket: NlSocketHandle,
    seq: u32,
    netns: String,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.socket.as_raw_fd())
            .field("netns", &self.netns)
            .finish()
    }
}

type BuildResult<T> = Result<T, String>;

fn attr<T, P>(ty: T, payload: P) -> BuildResult<Rtattr<T, Buffer>>
where
    T: RtaType,
    P: Size + ToBytes,
{
    RtattrBuilder::default()
        .rta_type(ty)
        .rta_payload(payload)
        .build()
        .map_err(|e| e.to_string())
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn connect() -> Result<Self, NetlinkError> {
        Self::open("the current network namespace".to_owned())
    }

    /// A socket in the network namespace `netns`, described as
    /// `description` in errors (e.g. `/proc/1234/ns/net`). The namespace
    /// is entered by a short-lived thread only to open the socket.
    pub fn connect_in(netns: BorrowedFd<'_>, description: &str) -> Result<Self, NetlinkError> {
        let description = format!("network namespace {description}");
        let opened = run_in_netns(netns, || Self::open(description.clone()));
        match opened {
            Ok(result) => result,
            Err(source) => Err(NetlinkError::EnterNetns {
                netns: description,
                source,
            }),
        }
    }

    /// A socket in the calling thread's network namespace, described as
    /// `netns` in errors: for code running on a thread that entered
    /// another namespace (see [`crate::netns::run_in_netns`]) to do more
    /// there than open this socket.
    pub fn connect_here(netns: String) -> Result<Self, NetlinkError> {
        Self::open(netns)
    }

    fn open(netns: String) -> Result<Self, NetlinkError> {
        let socket =
            NlSocketHandle::connect(NlFamily::Route, None, Groups::empty()).map_err(|source| {
                NetlinkError::Socket {
                    netns: netns.clone(),
                    source,
                }
            })?;
        // Extended ACKs only improve error messages; old kernels lack them.
        let _ = socket.enable_ext_ack(true);
        Ok(Netlink {
            socket,
            seq: 0,
            netns,
        })
    }

    /// The namespace this socket talks to, as used in errors.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Send one request and collect the payloads of its replies until the
    /// kernel's ACK (or error).
    /// Ask the kernel to create something; `Ok(false)` when it already
    /// exists (EEXIST), so callers stay idempotent.
    fn create_unless_exists<P>(
        &mut self,
        subject: &str,
        ty: Rtm,
        payload: BuildResult<P>,
    ) -> Result<bool, NetlinkError>
    where
        P: Size + ToBytes + std::fmt::Debug,
    {
        match self.request("add", subject, ty, NlmF::CREATE | NlmF::EXCL, payload) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(Errno::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn request<P>(
        &mut self,
        op: &'static str,
        subject: &str,
        ty: Rtm,
        flags: NlmF,
        payload: BuildResult<P>,
    ) -> Result<Vec<Buffer>, NetlinkError>
    where
        P: Size + ToBytes + fmt::Debug,
    {
        let build = |detail: String| NetlinkError::Build {
            op,
            subject: subject.to_owned(),
            detail,
        };
        let payload = payload.map_err(build)?;
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let message = NlmsghdrBuilder::default()
            .nl_type(ty)
            .nl_flags(flags | NlmF::REQUEST | NlmF::ACK)
            .nl_seq(seq)
            .nl_payload(NlPayload::Payload(payload))
            .build()
            .map_err(|e| build(e.to_string()))?;
        let io = |source: SocketError| NetlinkError::Io {
            op,
            subject: subject.to_owned(),
            netns: self.netns.clone(),
            source,
        };
        self.socket.send(&message).map_err(io)?;
        let mut payloads = Vec::new();
        loop {
            let (messages, _) = self.socket.recv::<u16, Buffer>().map_err(io)?;
            for message in messages {
                let message = message.map_err(io)?;
                if *message.nl_seq() != seq {
                    continue;
                }
                if *message.nl_type() == u16::from(Nlmsg::Done) {
                    return Ok(payloads);
                }
                match message.nl_payload() {
                    NlPayload::Ack(_) => return Ok(payloads),
                    NlPayload::Err(err) => {
                        let ext_ack = err
                            .ext_ack()
                            .get_attr_handle()
                            .get_attr_payload_as_with_len::<String>(NlmsgerrAttr::Msg)
                            .ok();
                        return Err(NetlinkError::Kernel {
                            op,
                            subject: subject.to_owned(),
                            netns: self.netns.clone(),
                            errno: Errno::from_raw(-*err.error()),
                            ext_ack,
                        });
                    }
                    NlPayload::Payload(payload) => payloads.push(payload.clone()),
                    NlPayload::DumpExtAck(_) | NlPayload::Empty => {}
                }
            }
        }
    }

    /// Look up an interface by name; `None` if there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        check_ifname(name)?;
        let message = (|| {
            let mut attrs = RtBuffer::new();
            attrs.push(attr(Ifla::Ifname, name)?);
            IfinfomsgBuilder::default()
                .ifi_family(RtAddrFamily::Unspecified)
                .rtattrs(attrs)
                .build()
                .map_err(|e| e.to_string())
        })();
        let subject = format!("link {name}");
        let replies = match self.request("look up", &subject, Rtm::Getlink, NlmF::empty(), message)
        {
            Ok(replies) => replies,
            Err(e) if e.errno() == Some(Errno::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(reply) = replies.first() else {
            return Ok(None);
        };
        parse_link(reply)
            .map(Some)
            .map_err(|detail| NetlinkError::Build {
                op: "parse the reply about",
                subject,
                detail,
            })
    }

    /// Like [`Netlink::link`], but a missing link is an error.
    pub fn require_link(&mut self, name: &str) -> Result<LinkInfo, NetlinkError> {
        self.link(name)?.ok_or_else(|| NetlinkError::NoSuchLink {
            name: name.to_owned(),
            netns: self.netns.clone(),
        })
    }

    /// The index of interface `name`.
    pub fn link_index(&mut self, name: &str) -> Result<u32, NetlinkError> {
        Ok(self.require_link(name)?.index)
    }

    /// Create bridge `name` unless it exists; an existing link of another
    /// kind is an error. Returns its index and whether it was created.
    pub fn create_bridge(&mut self, name: &str) -> Result<(u32, bool), NetlinkError> {
        check_ifname(name)?;
        let message = (|| {
            let mut info = RtBuffer::new();
            info.push(attr(IflaInfo::Kind, "bridge")?);
            let mut attrs = RtBuffer::new();
            attrs.push(attr(Ifla::Ifname, name)?);
            attrs.push(attr(Ifla::Linkinfo, info)?);
            IfinfomsgBuilder::default()
                .ifi_family(RtAddrFamily::Unspecified)
                .rtattrs(attrs)
                .build()
                .map_err(|e| e.to_string())
        })();
        let subject = format!("bridge {name}");
        let created = match self.request(
            "create",
            &subject,
            Rtm::Newlink,
            NlmF::CREATE | NlmF::EXCL,
            message,
        ) {
            Ok(_) => true,
            Err(e) if e.errno() == Some(Errno::EEXIST) => false,
            Err(e) => return Err(e),
        };
        let link = self.require_link(name)?;
        if link.kind.as_deref() != Some("bridge") {
            return Err(NetlinkError::WrongKind {
                name: name.to_owned(),
                netns: self.netns.clone(),
                kind: link.kind,
                expected: "bridge",
            });
        }
        Ok((link.index, created))
    }

    /// Create a veth pair: `name` here, `peer` in its namespace (or here),
    /// optionally attached to bridge `master` at once.
    pub fn create_veth(
        &mut self,
        name: &str,
        peer: &VethPeer<'_>,
        master: Option<u32>,
    ) -> Result<(), NetlinkError> {
        self.new_veth(name, peer, master, false)
    }

    /// Like [`Netlink::create_veth`], with this end up from the start (one
    /// request instead of three). The peer cannot be: the kernel configures
    /// it before the two ends are tied together, and a veth end without a
    /// peer refuses to come up (ENOTCONN).
    pub fn create_veth_up(
        &mut self,
        name: &str,
        peer: &VethPeer<'_>,
        master: Option<u32>,
    ) -> Result<(), NetlinkError> {
        self.new_veth(name, peer, master, true)
    }

    fn new_veth(
        &mut self,
        name: &str,
        peer: &VethPeer<'_>,
        master: Option<u32>,
        up: bool,
    ) -> Result<(), NetlinkError> {
        check_ifname(name)?;
        check_ifname(peer.name)?;
        let message = (|| {
            let mut peer_attrs = RtBuffer::new();
            peer_attrs.push(attr(Ifla::Ifname, peer.name)?);
            if let Some(netns) = peer.netns {
                peer_attrs.push(attr(Ifla::NetNsFd, netns.as_raw_fd() as u32)?);
            }
            if let Some(mac) = peer.mac {
                peer_attrs.push(attr(Ifla::Address, mac.0)?);
            }
            let peer_info = IfinfomsgBuilder::default()
                .ifi_family(RtAddrFamily::Unspecified)
                .rtattrs(peer_attrs)
                .build()
                .map_err(|e| e.to_string())?;
            let mut data: RtBuffer<u16, Buffer> = RtBuffer::new();
            data.push(attr(VETH_INFO_PEER, peer_info)?);
            let mut info = RtBuffer::new();
            info.push(attr(IflaInfo::Kind, "veth")?);
            info.push(attr(IflaInfo::Data, data)?);
            let mut attrs = RtBuffer::new();
            attrs.push(attr(Ifla::Ifname, name)?);
            if let Some(master) = master {
                attrs.push(attr(Ifla::Master, master)?);
            }
            attrs.push(attr(Ifla::Linkinfo, info)?);
            let mut message = IfinfomsgBuilder::default()
                .ifi_family(RtAddrFamily::Unspecified)
                .rtattrs(attrs);
            if up {
                message = message.up();
            }
            message.build().map_err(|e| e.to_string())
        })();
        let subject = format!("veth pair {name} <-> {}", peer.name);
        self.request(
            "create",
            &subject,
            Rtm::Newlink,
            NlmF::CREATE | NlmF::EXCL,
            message,
        )?;
        Ok(())
    }

    /// Change link `index` (`subject` names it in errors).
    fn modify_link(
        &mut self,
        op: &'static str,
        subject: &str,
        index: u32,
        up: Option<bool>,
        attrs: BuildResult<RtBuffer<Ifla, Buffer>>,
    ) -> Result<(), NetlinkError> {
        let message = attrs.and_then(|attrs| {
            let mut builder = IfinfomsgBuilder::default()
                .ifi_family(RtAddrFamily::Unspecified)
                .ifi_index(index as libc::c_int)
                .rtattrs(attrs);
            builder = match up {
                Some(true) => builder.up(),
                Some(false) => builder.down(),
                None => builder,
            };
            builder.build().map_err(|e| e.to_string())
        });
        self.request(op, subject, Rtm::Newlink, NlmF::empty(), message)?;
        Ok(())
    }

    /// Set link `index` up.
    pub fn set_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        let subject = format!("link #{index}");
        self.modify_link("bring up", &subject, index, Some(true), Ok(RtBuffer::new()))
    }

    /// Set interface `name` up.
    pub fn set_up_by_name(&mut self, name: &str) -> Result<(), NetlinkError> {
        let index = self.link_index(name)?;
        let subject = format!("link {name}");
        self.modify_link("bring up", &subject, index, Some(true), Ok(RtBuffer::new()))
    }

    /// Attach link `index` to bridge `master`.
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<(), NetlinkError> {
        let subject = format!("link #{index}");
        let attrs = attr(Ifla::Master, master).map(|a| {
            let mut attrs = RtBuffer::new();
            attrs.push(a);
            attrs
        });
        self.modify_link("attach to a bridge", &subject, index, None, attrs)
    }

    /// Turn the hairpin mode of bridge port `index` on or off (`bridge
    /// link set dev X hairpin on`): whether the bridge may send a frame
    /// back out of the port it came in on. Needed when the host routes a
    /// container's packet back to that same container (a published port
    /// reached through a host address).
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> Result<(), NetlinkError> {
        // IFLA_BRPORT_MODE; the nested flag tells the bridge that
        // IFLA_PROTINFO holds port attributes, not a bare STP state.
        const BRPORT_MODE: u16 = 4;
        const NESTED: u16 = 1 << 15;
        let subject = format!("bridge port #{index}");
        let message = (|| {
            let mut port = RtBuffer::new();
            port.push(attr(Ifla::UnrecognizedConst(BRPORT_MODE), u8::from(on))?);
            let mut attrs = RtBuffer::new();
            attrs.push(attr(
                Ifla::UnrecognizedConst(libc::IFLA_PROTINFO | NESTED),
                port,
            )?);
            IfinfomsgBuilder::default()
                .ifi_family(RtAddrFamily::UnrecognizedConst(libc::AF_BRIDGE as u8))
                .ifi_index(index as libc::c_int)
                .rtattrs(attrs)
                .build()
                .map_err(|e| e.to_string())
        })();
        self.request(
            "set the hairpin mode of",
            &subject,
            Rtm::Setlink,
            NlmF::empty(),
            message,
        )?;
        Ok(())
    }

    /// Set the MAC address of link `index`.
    pub fn set_mac(&mut self, index: u32, mac: MacAddr) -> Result<(), NetlinkError> {
        let subject = format!("link #{index}");
        let attrs = attr(Ifla::Address, mac.0).map(|a| {
            let mut attrs = RtBuffer::new();
            attrs.push(a);
            attrs
        });
        self.modify_link("set the MAC address of", &subject, index, None, attrs)
    }

    /// Rename link `index` (it must be down).
    pub fn rename(&mut self, index: u32, name: &str) -> Result<(), NetlinkError> {
        check_ifname(name)?;
        let subject = format!("link #{index} to {name}");
        let attrs = attr(Ifla::Ifname, name).map(|a| {
            let mut attrs = RtBuffer::new();
            attrs.push(a);
            attrs
        });
        self.modify_link("rename", &subject, index, None, attrs)
    }

    /// Move link `index` into the network namespace `netns`.
    pub fn move_to_netns(&mut self, index: u32, netns: BorrowedFd<'_>) -> Result<(), NetlinkError> {
        let subject = format!("link #{index}");
        let attrs = attr(Ifla::NetNsFd, netns.as_raw_fd() as u32).map(|a| {
            let mut attrs = RtBuffer::new();
            attrs.push(a);
            attrs
        });
        self.modify_link("move to another namespace", &subject, index, None, attrs)
    }

    /// Delete interface `name` (a veth takes its peer with it): one
    /// request, by name. Returns whether there was one.
    pub fn delete_link(&mut self, name: &str) -> Result<bool, NetlinkError> {
        check_ifname(name)?;
        let message = (|| {
            let mut attrs = RtBuffer::new();
            attrs.push(attr(Ifla::Ifname, name)?);
            IfinfomsgBuilder::default()
                .ifi_family(RtAddrFamily::Unspecified)
                .rtattrs(attrs)
                .build()
                .map_err(|e| e.to_string())
        })();
        let subject = format!("link {name}");
        match self.request("delete", &subject, Rtm::Dellink, NlmF::empty(), message) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the namespace holding the peer of `link` (a veth end
    /// looked up here) is alive. A peer namespace without an id here is
    /// being destroyed; one with an id is asked for the peer, which fails
    /// once that namespace is on its way out.
    pub fn peer_netns(&mut self, link: &LinkInfo) -> Result<PeerNetns, NetlinkError> {
        let Some(nsid) = link.link_netnsid else {
            return Ok(PeerNetns::Local);
        };
        if nsid < 0 {
            return Ok(PeerNetns::Dying);
        }
        let Some(peer) = link.link else {
            return Ok(PeerNetns::Alive);
        };
        let message = (|| {
            let mut attrs = RtBuffer::new();
            attrs.push(attr(Ifla::IfNetnsid, nsid)?);
            IfinfomsgBuilder::default()
                .ifi_family(RtAddrFamily::Unspecified)
                .ifi_index(peer as libc::c_int)
                .rtattrs(attrs)
                .build()
                .map_err(|e| e.to_string())
        })();
        let subject = format!("the peer of link {} (netns id {nsid})", link.name);
        match self.request("look up", &subject, Rtm::Getlink, NlmF::empty(), message) {
            Ok(_) => Ok(PeerNetns::Alive),
            // EINVAL: no live namespace has that id any more; ENODEV: the
            // peer is gone already.
            Err(e) if matches!(e.errno(), Some(Errno::EINVAL | Errno::ENODEV)) => {
                Ok(PeerNetns::Dying)
            }
            Err(e) => Err(e),
        }
    }

    /// Add `address` (with its prefix) to link `index`; already present is
    /// fine. Returns whether it was added.
    pub fn add_address(&mut self, index: u32, address: Ipv4Net) -> Result<bool, NetlinkError> {
        let ip = address.addr().octets();
        let message = (|| -> BuildResult<Ifaddrmsg> {
            let mut attrs = RtBuffer::new();
            attrs.push(attr(Ifa::Local, ip)?);
            attrs.push(attr(Ifa::Address, ip)?);
            if address.prefix_len() < 31 {
                attrs.push(attr(Ifa::Broadcast, address.broadcast().octets())?);
            }
            IfaddrmsgBuilder::default()
                .ifa_family(RtAddrFamily::Inet)
                .ifa_prefixlen(address.prefix_len())
                .ifa_scope(RtScope::Universe)
                .ifa_index(index)
                .rtattrs(attrs)
                .build()
                .map_err(|e| e.to_string())
        })();
        let subject = format!("address {address} on link #{index}");
        self.create_unless_exists(&subject, Rtm::Newaddr, message)
    }

    /// Add the default route via `gateway` out of link `index`; an
    /// existing default route is left alone. Returns whether it was added.
    pub fn add_default_route(
        &mut self,
        gateway: Ipv4Addr,
        index: u32,
    ) -> Result<bool, NetlinkError> {
        self.add_default_route_via(gateway.into(), index)
    }

    /// [`Netlink::add_default_route`] of either family.
    fn add_default_route_via(
        &mut self,
        gateway: std::net::IpAddr,
        index: u32,
    ) -> Result<bool, NetlinkError> {
        let (family, octets, subject) = match gateway {
            std::net::IpAddr::V4(v4) => (
                RtAddrFamily::Inet,
                v4.octets().to_vec(),
                format!("default route via {gateway}"),
            ),
            std::net::IpAddr::V6(v6) => (
                RtAddrFamily::Inet6,
                v6.octets().to_vec(),
                format!("IPv6 default route via {gateway}"),
            ),
        };
        let message = (|| {
            let mut attrs = RtBuffer::new();
            attrs.push(attr(Rta::Gateway, octets)?);
            attrs.push(attr(Rta::Oif, index)?);
            RtmsgBuilder::default()
                .rtm_family(family)
                .rtm_dst_len(0)
                .rtm_src_len(0)
                .rtm_tos(0)
                .rtm_table(RtTable::Main)
                .rtm_protocol(Rtprot::Boot)
                .rtm_scope(RtScope::Universe)
                .rtm_type(Rtn::Unicast)
                .rtattrs(attrs)
                .build()
                .map_err(|e| e.to_string())
        })();
        self.create_unless_exists(&subject, Rtm::Newroute, message)
    }

    /// Add the IPv6 `address` (with its prefix) to link `index`, usable at
    /// once (no duplicate address detection: the IPAM hands each address
    /// out once); already present is fine. Returns whether it was added.
    pub fn add_address6(
        &mut self,
        index: u32,
        address: ipnet::Ipv6Net,
    ) -> Result<bool, NetlinkError> {
        let ip = address.addr().octets();
        let message = (|| -> BuildResult<Ifaddrmsg> {
            let mut attrs = RtBuffer::new();
            attrs.push(attr(Ifa::Local, ip)?);
            attrs.push(attr(Ifa::Address, ip)?);
            IfaddrmsgBuilder::default()
                .ifa_family(RtAddrFamily::Inet6)
                .ifa_prefixlen(address.prefix_len())
                .ifa_flags(neli::consts::rtnl::IfaF::NODAD)
                .ifa_scope(RtScope::Universe)
                .ifa_index(index)
                .rtattrs(attrs)
                .build()
                .map_err(|e| e.to_string())
        })();
        let subject = format!("address {address} on link #{index}");
        self.create_unless_exists(&subject, Rtm::Newaddr, message)
    }

    /// Add the IPv6 default route via `gateway` out of link `index`; an
    /// existing one is left alone. Returns whether it was added.
    pub fn add_default_route6(
        &mut self,
        gateway: std::net::Ipv6Addr,
        index: u32,
    ) -> Result<bool, NetlinkError> {
        self.add_default_route_via(gateway.into(), index)
    }
}

impl Netlink {
    /// Every IPv4 prefix this namespace already uses: the subnets of its
    /// addresses and the destinations of its routes (any table; default
    /// routes left out, since they cover everything). A new network's
    /// subnet must overlap none of them (another bridge, docker0, a VPN).
    pub fn ipv4_prefixes_in_use(&mut self) -> Result<Vec<Ipv4Net>, NetlinkError> {
        let mut prefixes = Vec::new();
        let addresses = IfaddrmsgBuilder::default()
            .ifa_family(RtAddrFamily::Inet)
            .ifa_prefixlen(0)
            .ifa_scope(RtScope::Universe)
            .ifa_index(0)
            .build()
            .map_err(|e| e.to_string());
        for reply in self.request("list", "addresses", Rtm::Getaddr, NlmF::DUMP, addresses)? {
            let bytes: &[u8] = reply.as_ref();
            let Ok(message) =
                Ifaddrmsg::from_bytes_with_input(&mut Cursor::new(bytes), bytes.len())
            else {
                continue;
            };
            let attrs = message.rtattrs().get_attr_handle();
            let local = attrs
                .get_attribute(Ifa::Local)
                .or_else(|| attrs.get_attribute(Ifa::Address))
                .and_then(|a| <[u8; 4]>::try_from(a.rta_payload().as_ref()).ok());
            if let Some(octets) = local {
                if let Ok(net) = Ipv4Net::new(Ipv4Addr::from(octets), *message.ifa_prefixlen()) {
                    prefixes.push(net.trunc());
                }
            }
        }
        let routes = RtmsgBuilder::default()
            .rtm_family(RtAddrFamily::Inet)
            .rtm_dst_len(0)
            .rtm_src_len(0)
            .rtm_tos(0)
            .rtm_table(RtTable::Unspec)
            .rtm_protocol(Rtprot::Unspec)
            .rtm_scope(RtScope::Universe)
            .rtm_type(Rtn::Unspec)
            .build()
            .map_err(|e| e.to_string());
        for reply in self.request("list", "routes", Rtm::Getroute, NlmF::DUMP, routes)? {
            let bytes: &[u8] = reply.as_ref();
            let Ok(message) = Rtmsg::from_bytes_with_input(&mut Cursor::new(bytes), bytes.len())
            else {
                continue;
            };
            let prefix_len = *message.rtm_dst_len();
            if prefix_len == 0 {
                continue;
            }
            let destination = message
                .rtattrs()
                .get_attr_handle()
                .get_attribute(Rta::Dst)
                .and_then(|a| <[u8; 4]>::try_from(a.rta_payload().as_ref()).ok());
            if let Some(octets) = destination {
                if let Ok(net) = Ipv4Net::new(Ipv4Addr::from(octets), prefix_len) {
                    prefixes.push(net.trunc());
                }
            }
        }
        prefixes.sort();
        prefixes.dedup();
        Ok(prefixes)
    }

    /// Set the alias (`ip link set NAME alias TEXT`) of link `index`.
    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<(), NetlinkError> {
        let subject = format!("link #{index}");
        let attrs = attr(Ifla::Ifalias, alias).map(|a| {
            let mut attrs = RtBuffer::new();
            attrs.push(a);
            attrs
        });
        self.modify_link("set the alias of", &subject, index, None, attrs)
    }
}

fn parse_link(reply: &Buffer) -> Result<LinkInfo, String> {
    let bytes: &[u8] = reply.as_ref();
    let info = Ifinfomsg::from_bytes_with_input(&mut Cursor::new(bytes), bytes.len())
        .map_err(|e| e.to_string())?;
    let attrs = info.rtattrs().get_attr_handle();
    let name = attrs
        .get_attr_payload_as_with_len::<String>(Ifla::Ifname)
        .map_err(|e| e.to_string())?;
    let mac = attrs
        .get_attribute(Ifla::Address)
        .and_then(|a| <[u8; 6]>::try_from(a.rta_payload().as_ref()).ok())
        .map(MacAddr);
    let master = attrs.get_attr_payload_as::<u32>(Ifla::Master).ok();
    let link = attrs.get_attr_payload_as::<u32>(Ifla::Link).ok();
    let link_netnsid = attrs.get_attr_payload_as::<i32>(Ifla::LinkNetnsid).ok();
    let alias = attrs
        .get_attr_payload_as_with_len::<String>(Ifla::Ifalias)
        .ok()
        .map(|a| a.trim_end_matches('\0').to_owned())
        .filter(|a| !a.is_empty());
    let kind = attrs
        .get_nested_attributes::<IflaInfo>(Ifla::Linkinfo)
        .ok()
        .and_then(|info| {
            info.get_attr_payload_as_with_len::<String>(IflaInfo::Kind)
                .ok()
        });
    Ok(LinkInfo {
        index: *info.ifi_index() as u32,
        name: name.trim_end_matches('\0').to_owned(),
        mac,
        up: info.ifi_flags().contains(Iff::UP),
        master,
        kind: kind.map(|k| k.trim_end_matches('\0').to_owned()),
        link,
        link_netnsid,
        alias,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_round_trip() {
        let mac = MacAddr::from_ipv4(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(mac.to_string(), "02:42:ac:11:00:02");
        assert_eq!("02:42:ac:11:00:02".parse::<MacAddr>().unwrap(), mac);
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"02:42:ac:11:00:02\""
        );
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "2:42:ac:11:00:02",
            "zz:42:ac:11:00:02",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn interface_names_are_checked() {
        for good in ["eth0", "berth0", "br-0123456789ab", "vb0123456789abc"] {
            check_ifname(good).unwrap();
        }
        for bad in ["", "a/b", "a:b", "a b", "0123456789abcdef", ".", ".."] {
            assert!(check_ifname(bad).is_err(), "{bad}");
        }
    }
}
