//! Port mappings (`-p HOST:CTR[/tcp|udp]`).

use std::fmt;
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

/// One published port: traffic to `host_port` on any of the host's
/// non-loopback addresses goes to `container_port` in the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

/// Why a `-p` value was refused; the message quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortParseError {
    #[error("invalid port mapping {spec:?}: expected HOSTPORT:CONTAINERPORT[/tcp|/udp]")]
    Format { spec: String },
    #[error("invalid port mapping {spec:?}: {port:?} is not a port number (1-65535)")]
    Port { spec: String, port: String },
    #[error("invalid port mapping {spec:?}: not a port number (1-65535)")]
    NotAPort { spec: String },
    #[error("invalid port mapping {spec:?}: unknown protocol {protocol:?} (tcp or udp)")]
    Protocol { spec: String, protocol: String },
}

/// Parse `[HOSTPORT:]CONTAINERPORT[/tcp|/udp]` (tcp when no protocol is
/// given). Ports must be 1-65535; without a host port (`80`, `:80`)
/// `host_port` is 0: the driver chooses a free one.
///
/// ```
/// use berth_net::{parse_port_mapping, Protocol};
/// let mapping = parse_port_mapping("8080:80/udp").unwrap();
/// assert_eq!((mapping.host_port, mapping.container_port), (8080, 80));
/// assert_eq!(mapping.protocol, Protocol::Udp);
/// assert!(parse_port_mapping("70000:80").is_err());
/// ```
pub fn parse_port_mapping(spec: &str) -> Result<PortMapping, PortParseError> {
    let (ports, protocol) = match spec.split_once('/') {
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
    // `CONTAINERPORT` alone: any free host port (0 until one is chosen).
    let (host, container) = ports.split_once(':').unwrap_or(("", ports));
    if container.is_empty() {
        return Err(PortParseError::Format {
            spec: spec.to_owned(),
        });
    }
    let port = |text: &str| -> Result<u16, PortParseError> {
        let invalid = || {
            if text == spec || text == ports {
                PortParseError::NotAPort {
                    spec: spec.to_owned(),
                }
            } else {
                PortParseError::Port {
                    spec: spec.to_owned(),
                    port: text.to_owned(),
                }
            }
        };
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        match text.parse::<u16>() {
            Ok(0) | Err(_) => Err(invalid()),
            Ok(port) => Ok(port),
        }
    };
    Ok(PortMapping {
        host_port: if host.is_empty() { 0 } else { port(host)? },
        container_port: port(container)?,
        protocol,
    })
}

impl FromStr for PortMapping {
    type Err = PortParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_port_mapping(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(host_port: u16, container_port: u16, protocol: Protocol) -> PortMapping {
        PortMapping {
            host_port,
            container_port,
            protocol,
        }
    }

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
            "80:80:80",
            "1.2.3.4:80:80",
        ] {
            let err = parse_port_mapping(bad).unwrap_err();
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
        assert!(matches!(
            parse_port_mapping("80:80/sctp"),
            Err(PortParseError::Protocol { .. })
        ));
        assert!(matches!(
            parse_port_mapping("80:80/"),
            Err(PortParseError::Protocol { .. })
        ));
    }
}
