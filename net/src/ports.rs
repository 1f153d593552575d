//! Port mappings: docker's `-p [IP:][HOSTPORT[-END]:]CTRPORT[-END][/tcp|/udp]`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The name iptables and users know it by: `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_unspecified(ip: &Ipv4Addr) -> bool {
    ip.is_unspecified()
}

fn is_zero(port: &u16) -> bool {
    *port == 0
}

fn unspecified() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}

/// One published port: traffic to `host_port` on `host_ip` (0.0.0.0: any
/// of the host's addresses) goes to `container_port` in the container.
///
/// As a request (before the driver publishes it) `host_port` 0 means "any
/// free port", and a non-zero `host_port_end` means "any free port of
/// `host_port..=host_port_end`" (docker's `-p 8000-8010:80`); a published
/// mapping has one host port and `host_port_end` 0. Both new fields are
/// left out of JSON when unset, so records written before them still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(default = "unspecified", skip_serializing_if = "is_unspecified")]
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub host_port_end: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortMapping {
    /// `host_port` on every host address to `container_port`.
    pub fn new(host_port: u16, container_port: u16, protocol: Protocol) -> Self {
        PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port,
            host_port_end: 0,
            container_port,
            protocol,
        }
    }

    /// The same mapping bound to one host address only.
    pub fn on_host_ip(mut self, host_ip: Ipv4Addr) -> Self {
        self.host_ip = host_ip;
        self
    }

    /// The host ports the request allows: one port, or a range to pick
    /// from; `None` for "any free port".
    pub fn host_port_choices(&self) -> Option<std::ops::RangeInclusive<u16>> {
        match (self.host_port, self.host_port_end) {
            (0, _) => None,
            (first, 0) => Some(first..=first),
            (first, last) => Some(first..=last),
        }
    }

    /// Whether this mapping and `other` would take the same host socket:
    /// same protocol and port, and the same address or either on all.
    pub fn clashes_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip == other.host_ip
                || self.host_ip.is_unspecified()
                || other.host_ip.is_unspecified())
    }

    /// docker's `HOSTIP:HOSTPORT` of a published mapping, as `port` and
    /// `ps` show it: `0.0.0.0:8080`, `127.0.0.1:8080`.
    pub fn host_binding(&self) -> String {
        format!("{}:{}", self.host_ip, self.host_port)
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.host_ip.is_unspecified() {
            write!(f, "{}:", self.host_ip)?;
        }
        write!(f, "{}", self.host_port)?;
        if self.host_port_end != 0 {
            write!(f, "-{}", self.host_port_end)?;
        }
        write!(f, ":{}/{}", self.container_port, self.protocol)
    }
}

/// Why a `-p` value was refused; the message quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortParseError {
    #[error("invalid port mapping {spec:?}: expected [IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp] (ports or ranges like 8000-8010)")]
    Format { spec: String },
    #[error("invalid port mapping {spec:?}: {port:?} is not a port number (1-65535)")]
    Port { spec: String, port: String },
    #[error("invalid port mapping {spec:?}: not a port number (1-65535)")]
    NotAPort { spec: String },
    #[error("invalid port mapping {spec:?}: unknown protocol {protocol:?} (tcp or udp)")]
    Protocol { spec: String, protocol: String },
    #[error("invalid port mapping {spec:?}: {address:?} is not an IPv4 address")]
    Address { spec: String, address: String },
    #[error("invalid port mapping {spec:?}: IPv6 host addresses are not supported (berth publishes on IPv4 only)")]
    Ipv6 { spec: String },
    #[error("invalid port mapping {spec:?}: range {range:?} ends before it starts")]
    BackwardRange { spec: String, range: String },
    #[error("invalid port mapping {spec:?}: the host range has {host} ports and the container range {container}; give ranges of the same length, or one container port with a host range to pick from")]
    RangeMismatch {
        spec: String,
        host: usize,
        container: usize,
    },
    #[error("invalid port mapping {spec:?}: it names {count} ports where one is expected")]
    NotOne { spec: String, count: usize },
}

/// A port or an inclusive range of ports (`80`, `8000-8010`).
fn parse_ports(spec: &str, text: &str) -> Result<(u16, u16), PortParseError> {
    let port = |part: &str| -> Result<u16, PortParseError> {
        let invalid = || {
            if part == spec {
                PortParseError::NotAPort {
                    spec: spec.to_owned(),
                }
            } else {
                PortParseError::Port {
                    spec: spec.to_owned(),
                    port: part.to_owned(),
                }
            }
        };
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        match part.parse::<u16>() {
            Ok(0) | Err(_) => Err(invalid()),
            Ok(port) => Ok(port),
        }
    };
    match text.split_once('-') {
        None => port(text).map(|p| (p, p)),
        Some((first, last)) => {
            let (first, last) = (port(first)?, port(last)?);
            if last < first {
                return Err(PortParseError::BackwardRange {
                    spec: spec.to_owned(),
                    range: text.to_owned(),
                });
            }
            Ok((first, last))
        }
    }
}

/// Parse one `-p` value into the mappings it asks for, docker's forms:
/// `CTR`, `HOST:CTR`, `IP:HOST:CTR`, `IP::CTR`, each port possibly a range
/// (`8000-8002:80-82` maps pairwise; `8000-8010:80` picks one free host
/// port of the range; `80-82` picks any free host port for each), with
/// `/tcp` (the default) or `/udp`. Host port 0 in a result means "any
/// free port". IPv6 host addresses are refused.
///
/// ```
/// use berth_net::{parse_publish, Protocol};
/// let mappings = parse_publish("127.0.0.1:8000-8001:80-81/udp").unwrap();
/// assert_eq!(mappings.len(), 2);
/// assert_eq!((mappings[1].host_port, mappings[1].container_port), (8001, 81));
/// assert_eq!(mappings[1].host_ip.to_string(), "127.0.0.1");
/// assert_eq!(mappings[0].protocol, Protocol::Udp);
/// assert!(parse_publish("8000-8002:80-81").is_err());
/// ```
pub fn parse_publish(spec: &str) -> Result<Vec<PortMapping>, PortParseError> {
    let (ports, protocol) = match spec.rsplit_once('/') {
        Some((ports, "tcp")) => (ports, Protocol::Tcp),
        Some((ports, "udp")) => (ports, Protocol::Udp),
        Some((_, other)) => {
            return Err(PortParseError::Protocol {
                spec: spec.to_owned(),
                protocol: other.to_owned(),
            })
        }
        None => (spec, Protocol::Tcp),
    };
    if ports.starts_with('[') || ports.matches(':').count() > 2 {
        let address = ports
            .rsplitn(3, ':')
            .nth(2)
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if ports.starts_with('[') || address.parse::<Ipv6Addr>().is_ok() {
            return Err(PortParseError::Ipv6 {
                spec: spec.to_owned(),
            });
        }
        return Err(PortParseError::Format {
            spec: spec.to_owned(),
        });
    }
    let parts: Vec<&str> = ports.split(':').collect();
    let (address, host, container) = match parts[..] {
        [container] => ("", "", container),
        [host, container] => ("", host, container),
        [address, host, container] => (address, host, container),
        _ => unreachable!("at most two colons"),
    };
    if container.is_empty() {
        return Err(PortParseError::Format {
            spec: spec.to_owned(),
        });
    }
    let host_ip = if address.is_empty() {
        if parts.len() == 3 {
            return Err(PortParseError::Format {
                spec: spec.to_owned(),
            });
        }
        Ipv4Addr::UNSPECIFIED
    } else {
        address
            .parse::<Ipv4Addr>()
            .map_err(|_| PortParseError::Address {
                spec: spec.to_owned(),
                address: address.to_owned(),
            })?
    };
    let (container_first, container_last) = parse_ports(spec, container)?;
    let container_count = usize::from(container_last - container_first) + 1;
    let container_ports = container_first..=container_last;
    let mapping = |host_port: u16, host_port_end: u16, container_port: u16| PortMapping {
        host_ip,
        host_port,
        host_port_end,
        container_port,
        protocol,
    };
    if host.is_empty() {
        return Ok(container_ports.map(|port| mapping(0, 0, port)).collect());
    }
    let (host_first, host_last) = parse_ports(spec, host)?;
    let host_count = usize::from(host_last - host_first) + 1;
    match (host_count, container_count) {
        (1, 1) => Ok(vec![mapping(host_first, 0, container_first)]),
        (_, 1) => Ok(vec![mapping(host_first, host_last, container_first)]),
        (host, container) if host == container => Ok((host_first..=host_last)
            .zip(container_ports)
            .map(|(host, container)| mapping(host, 0, container))
            .collect()),
        (host, container) => Err(PortParseError::RangeMismatch {
            spec: spec.to_owned(),
            host,
            container,
        }),
    }
}

/// Parse a `-p` value that names one mapping (no range of several ports;
/// a host range to pick from is one mapping). See [`parse_publish`].
///
/// ```
/// use berth_net::{parse_port_mapping, Protocol};
/// let mapping = parse_port_mapping("8080:80/udp").unwrap();
/// assert_eq!((mapping.host_port, mapping.container_port), (8080, 80));
/// assert_eq!(mapping.protocol, Protocol::Udp);
/// assert!(parse_port_mapping("70000:80").is_err());
/// ```
pub fn parse_port_mapping(spec: &str) -> Result<PortMapping, PortParseError> {
    let mappings = parse_publish(spec)?;
    match mappings[..] {
        [one] => Ok(one),
        _ => Err(PortParseError::NotOne {
            spec: spec.to_owned(),
            count: mappings.len(),
        }),
    }
}

impl FromStr for PortMapping {
    type Err = PortParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_port_mapping(s)
    }
}

/// What binding a host port found out (see [`probe_host_port`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProbe {
    /// Nothing on the host holds it.
    Free,
    /// A host process has it bound.
    InUse,
    /// The address is not one of the host's.
    NoSuchAddress,
}

/// Whether a host process holds `port` on `ip` (0.0.0.0: any address):
/// tried by binding it and letting go at once, in the caller's network
/// namespace.
pub fn probe_host_port(ip: Ipv4Addr, port: u16, protocol: Protocol) -> PortProbe {
    match hold_host_port(ip, port, protocol) {
        Ok(_) => PortProbe::Free,
        Err(probe) => probe,
    }
}

/// A host socket bound to a published port (a TCP one listening, never
/// accepting), so that a host process's later bind of the port fails with
/// EADDRINUSE as it does under docker's userland proxy. Connections never
/// reach it: the DNAT rules take them to the container first.
#[derive(Debug)]
pub struct HeldPort {
    pub host_ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub socket: std::os::fd::OwnedFd,
}

/// Bind (and for TCP listen on) `port` on `ip` (0.0.0.0: every address)
/// in the caller's network namespace and keep the socket (close-on-exec);
/// [`PortProbe::InUse`] or [`PortProbe::NoSuchAddress`] when that fails.
/// The TCP socket has SO_REUSEADDR (so that connections of an earlier
/// holder in TIME_WAIT do not block it), which does not let anyone else
/// bind the port while it listens; the UDP one has not, so that no other
/// socket can share the port.
pub fn hold_host_port(ip: Ipv4Addr, port: u16, protocol: Protocol) -> Result<HeldPort, PortProbe> {
    let address = (ip, port);
    let socket: std::io::Result<std::os::fd::OwnedFd> = match protocol {
        Protocol::Tcp => std::net::TcpListener::bind(address).map(Into::into),
        Protocol::Udp => std::net::UdpSocket::bind(address).map(Into::into),
    };
    match socket {
        Ok(socket) => Ok(HeldPort {
            host_ip: ip,
            port,
            protocol,
            socket,
        }),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Err(PortProbe::NoSuchAddress),
        Err(_) => Err(PortProbe::InUse),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(host_port: u16, container_port: u16, protocol: Protocol) -> PortMapping {
        PortMapping::new(host_port, container_port, protocol)
    }

    const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

    #[test]
    fn parses_valid_mappings() {
        assert_eq!(
            parse_port_mapping("8080:80").unwrap(),
            mapping(8080, 80, Protocol::Tcp)
        );
        assert_eq!(
            parse_port_mapping("8080:80/tcp").unwrap(),
            mapping(8080, 80, Protocol::Tcp)
        );
        assert_eq!(
            parse_port_mapping("53:5353/udp").unwrap(),
            mapping(53, 5353, Protocol::Udp)
        );
        assert_eq!(
            parse_port_mapping("65535:1").unwrap(),
            mapping(65535, 1, Protocol::Tcp)
        );
        assert_eq!(
            "1:2/udp".parse::<PortMapping>().unwrap().to_string(),
            "1:2/udp"
        );
    }

    #[test]
    fn a_container_port_alone_asks_for_any_host_port() {
        assert_eq!(
            parse_port_mapping("80").unwrap(),
            mapping(0, 80, Protocol::Tcp)
        );
        assert_eq!(
            parse_port_mapping(":53/udp").unwrap(),
            mapping(0, 53, Protocol::Udp)
        );
    }

    #[test]
    fn a_host_address_binds_the_mapping_to_it() {
        assert_eq!(
            parse_port_mapping("127.0.0.1:8080:80").unwrap(),
            mapping(8080, 80, Protocol::Tcp).on_host_ip(LOOPBACK)
        );
        assert_eq!(
            parse_port_mapping("127.0.0.1::80/udp").unwrap(),
            mapping(0, 80, Protocol::Udp).on_host_ip(LOOPBACK)
        );
        // 0.0.0.0 is every address, as without one.
        assert_eq!(
            parse_port_mapping("0.0.0.0:8080:80").unwrap(),
            mapping(8080, 80, Protocol::Tcp)
        );
        let bound = parse_port_mapping("10.1.2.3:8080:80/udp").unwrap();
        assert_eq!(bound.to_string(), "10.1.2.3:8080:80/udp");
        assert_eq!(bound.host_binding(), "10.1.2.3:8080");
        assert_eq!(
            mapping(8080, 80, Protocol::Tcp).host_binding(),
            "0.0.0.0:8080"
        );
    }

    #[test]
    fn ranges_map_pairwise_or_pick_one_host_port() {
        assert_eq!(
            parse_publish("8000-8002:80-82").unwrap(),
            [
                mapping(8000, 80, Protocol::Tcp),
                mapping(8001, 81, Protocol::Tcp),
                mapping(8002, 82, Protocol::Tcp),
            ]
        );
        assert_eq!(
            parse_publish("127.0.0.1:9000-9001:90-91/udp").unwrap(),
            [
                mapping(9000, 90, Protocol::Udp).on_host_ip(LOOPBACK),
                mapping(9001, 91, Protocol::Udp).on_host_ip(LOOPBACK),
            ]
        );
        // One container port and a host range: one free port of the range.
        let pick = parse_port_mapping("8000-8010:80").unwrap();
        assert_eq!((pick.host_port, pick.host_port_end), (8000, 8010));
        assert_eq!(pick.host_port_choices(), Some(8000..=8010));
        assert_eq!(pick.to_string(), "8000-8010:80/tcp");
        // A container range alone: any host port for each.
        assert_eq!(
            parse_publish("80-81/udp").unwrap(),
            [mapping(0, 80, Protocol::Udp), mapping(0, 81, Protocol::Udp)]
        );
        // A range of one port is that port.
        assert_eq!(
            parse_publish("8080-8080:80-80").unwrap(),
            [mapping(8080, 80, Protocol::Tcp)]
        );
        assert_eq!(mapping(0, 80, Protocol::Tcp).host_port_choices(), None);
        assert_eq!(
            mapping(8080, 80, Protocol::Tcp).host_port_choices(),
            Some(8080..=8080)
        );
    }

    #[test]
    fn records_without_the_new_fields_still_read() {
        let old: PortMapping =
            serde_json::from_str(r#"{"host_port":8080,"container_port":80,"protocol":"tcp"}"#)
                .unwrap();
        assert_eq!(old, mapping(8080, 80, Protocol::Tcp));
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"host_port":8080,"container_port":80,"protocol":"tcp"}"#
        );
        let bound = mapping(8080, 80, Protocol::Udp).on_host_ip(LOOPBACK);
        let json = serde_json::to_string(&bound).unwrap();
        assert_eq!(
            json,
            r#"{"host_ip":"127.0.0.1","host_port":8080,"container_port":80,"protocol":"udp"}"#
        );
        assert_eq!(serde_json::from_str::<PortMapping>(&json).unwrap(), bound);
    }

    #[test]
    fn clashes_need_the_same_port_protocol_and_an_overlapping_address() {
        let any = mapping(8080, 80, Protocol::Tcp);
        let loopback = any.on_host_ip(LOOPBACK);
        let other = any.on_host_ip(Ipv4Addr::new(10, 0, 0, 1));
        assert!(any.clashes_with(&loopback) && loopback.clashes_with(&any));
        assert!(loopback.clashes_with(&loopback));
        assert!(!loopback.clashes_with(&other));
        assert!(!any.clashes_with(&mapping(8080, 80, Protocol::Udp)));
        assert!(!any.clashes_with(&mapping(8081, 80, Protocol::Tcp)));
    }

    #[test]
    fn refuses_invalid_mappings() {
        for bad in [
            "70000:80",
            "80:70000",
            "0:80",
            "80:0",
            "-1:80",
            "+80:80",
            "80:",
            "",
            "a:80",
            "1.2.3.4:80:",
            "8000-:80",
            "-8000:80",
            "8000-8001-8002:80",
        ] {
            let err = parse_publish(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    PortParseError::Port { .. }
                        | PortParseError::NotAPort { .. }
                        | PortParseError::Format { .. }
                ),
                "{bad}: {err:?}"
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        for bad in ["80:80:80", "1.2.3:80:80", "localhost:80:80"] {
            assert!(
                matches!(parse_publish(bad), Err(PortParseError::Address { .. })),
                "{bad}"
            );
        }
        for bad in ["[::1]:8080:80", "::1:8080:80", "[fd00::1]::80/udp"] {
            let err = parse_publish(bad).unwrap_err();
            assert!(matches!(err, PortParseError::Ipv6 { .. }), "{bad}: {err:?}");
            assert!(err.to_string().contains("IPv6"), "{err}");
        }
        for bad in [
            "8000-8001:80-82",
            "8000:80-81",
            "1.2.3.4:8000-8002:80-81/udp",
        ] {
            assert!(
                matches!(
                    parse_publish(bad),
                    Err(PortParseError::RangeMismatch { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_publish("8002-8000:80"),
            Err(PortParseError::BackwardRange { .. })
        ));
        assert!(matches!(
            parse_publish("80:80/sctp"),
            Err(PortParseError::Protocol { .. })
        ));
        assert!(matches!(
            parse_publish("80:80/"),
            Err(PortParseError::Protocol { .. })
        ));
        assert!(matches!(
            parse_port_mapping("8000-8001:80-81"),
            Err(PortParseError::NotOne { count: 2, .. })
        ));
        // Every message is one line.
        for bad in ["8000-8001:80-82", "[::1]:80:80", "x:80:80", "9-1:80"] {
            assert!(!parse_publish(bad).unwrap_err().to_string().contains('\n'));
        }
    }

    #[test]
    fn probing_tells_a_bound_port_and_a_foreign_address() {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(
            probe_host_port(Ipv4Addr::LOCALHOST, port, Protocol::Tcp),
            PortProbe::InUse
        );
        assert_eq!(
            probe_host_port(Ipv4Addr::UNSPECIFIED, port, Protocol::Tcp),
            PortProbe::InUse
        );
        drop(listener);
        assert_eq!(
            probe_host_port(Ipv4Addr::LOCALHOST, port, Protocol::Tcp),
            PortProbe::Free
        );
        // TEST-NET-1 is nobody's address here.
        assert_eq!(
            probe_host_port(Ipv4Addr::new(192, 0, 2, 77), port, Protocol::Udp),
            PortProbe::NoSuchAddress
        );
    }

    #[test]
    fn a_held_port_refuses_later_binds_until_it_is_dropped() {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let held = hold_host_port(Ipv4Addr::LOCALHOST, 0, protocol).unwrap();
            let copy = held.socket.try_clone().unwrap();
            let port = std::net::UdpSocket::from(copy).local_addr().unwrap().port();
            // Another process would use SO_REUSEADDR (std's TcpListener
            // does): still refused.
            assert_eq!(
                probe_host_port(Ipv4Addr::LOCALHOST, port, protocol),
                PortProbe::InUse,
                "{protocol}"
            );
            assert_eq!(
                hold_host_port(Ipv4Addr::UNSPECIFIED, port, protocol).unwrap_err(),
                PortProbe::InUse,
                "{protocol}"
            );
            drop(held);
            assert_eq!(
                probe_host_port(Ipv4Addr::LOCALHOST, port, protocol),
                PortProbe::Free,
                "{protocol}"
            );
        }
    }
}
