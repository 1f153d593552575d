//! berth's nf_tables rules as data: chains, matches and verdicts, their
//! netlink encoding (as `nft` writes the same rules), and their `nft`
//! text for messages and tests. [`crate::nftables`] puts them in the
//! kernel.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::firewall::LOOPBACK_NET;
use crate::ipam::PortForward;
use crate::network::NetworkConfig;
use crate::nftables_msg::{attr, Attrs, NFPROTO_IPV4};
use crate::ports::Protocol;

/// The comment of the jump rules every network shares.
pub const SHARED_COMMENT: &str = "berth";
/// The regular chain the published ports live in.
pub const DNAT_CHAIN: &str = "published";
const PREROUTING_CHAIN: &str = "prerouting";
const OUTPUT_CHAIN: &str = "output";
const POSTROUTING_CHAIN: &str = "postrouting";
const FORWARD_CHAIN: &str = "forward";
const GUARD_CHAIN: &str = "guard";

/// Netfilter hooks (`enum nf_inet_hooks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting = 0,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

/// One of berth's chains: regular, or a base chain at a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainSpec {
    pub name: &'static str,
    /// (type, hook, priority) of a base chain.
    pub base: Option<(&'static str, Hook, i32)>,
}

/// berth's chains, in creation order (the regular `published` before the
/// chains that jump to it).
pub const CHAINS: [ChainSpec; 6] = [
    ChainSpec {
        name: DNAT_CHAIN,
        base: None,
    },
    ChainSpec {
        name: PREROUTING_CHAIN,
        base: Some(("nat", Hook::Prerouting, -100)),
    },
    ChainSpec {
        name: OUTPUT_CHAIN,
        base: Some(("nat", Hook::Output, -100)),
    },
    ChainSpec {
        name: POSTROUTING_CHAIN,
        base: Some(("nat", Hook::Postrouting, 100)),
    },
    ChainSpec {
        name: FORWARD_CHAIN,
        base: Some(("filter", Hook::Forward, 0)),
    },
    // Where iptables' raw table sits: before connection tracking.
    ChainSpec {
        name: GUARD_CHAIN,
        base: Some(("filter", Hook::Prerouting, -300)),
    },
];

/// berth's chains in its `ip6` table, for IPv6 networks: MASQUERADE and
/// forwarding only (ports are published on IPv4 only, and IPv6 has no
/// route_localnet to guard against).
pub const CHAINS6: [ChainSpec; 2] = [
    ChainSpec {
        name: POSTROUTING_CHAIN,
        base: Some(("nat", Hook::Postrouting, 100)),
    },
    ChainSpec {
        name: FORWARD_CHAIN,
        base: Some(("filter", Hook::Forward, 0)),
    },
];

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Jump(&'static str),
}

/// What a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    IpSaddr,
    IpDaddr,
    /// The source address of an IPv6 header.
    Ip6Saddr,
    IifName,
    OifName,
    L4Proto,
    /// The destination port of TCP or UDP (after an [`Field::L4Proto`]
    /// match).
    DestPort,
    /// `fib daddr type`: the kind of route to the destination.
    FibDaddrType,
    CtState,
    CtStatus,
}

/// One nf_tables expression, with its registers fixed: values are loaded
/// into register 1 (the address and port of a DNAT into 1 and 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Load `field` into register 1.
    Load(Field),
    /// Register 1 &= mask (xor 0).
    And(Vec<u8>),
    /// Compare register 1 with `value`: equal, or not (`negated`).
    Cmp {
        negated: bool,
        value: Vec<u8>,
    },
    /// DNAT to `address:port` (immediates into registers 1 and 2).
    Dnat {
        address: Ipv4Addr,
        port: u16,
    },
    Masquerade,
    Verdict(Verdict),
}

/// `RTN_LOCAL`: the destination is an address of this host.
const RTN_LOCAL: u32 = 2;
/// ct state bits (`NF_CT_STATE_BIT`): established, related.
const CT_STATE_ESTABLISHED: u32 = 1 << 1;
const CT_STATE_RELATED: u32 = 1 << 2;
/// ct status bit IPS_DST_NAT.
const IPS_DST_NAT: u32 = 1 << 5;
const IFNAMSIZ: usize = 16;

/// A rule as data: its chain, expressions and comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRule {
    pub chain: &'static str,
    pub exprs: Vec<Expr>,
    pub comment: String,
}

/// Builds a rule's expressions, match by match.
#[derive(Debug, Default)]
struct Matches(Vec<Expr>);

impl Matches {
    fn new() -> Self {
        Matches::default()
    }

    fn eq(mut self, field: Field, value: Vec<u8>) -> Self {
        self.0.push(Expr::Load(field));
        self.0.push(Expr::Cmp {
            negated: false,
            value,
        });
        self
    }

    fn ne(mut self, field: Field, value: Vec<u8>) -> Self {
        self.0.push(Expr::Load(field));
        self.0.push(Expr::Cmp {
            negated: true,
            value,
        });
        self
    }

    fn interface(self, field: Field, name: &str, equal: bool) -> Self {
        let mut padded = name.as_bytes().to_vec();
        padded.resize(IFNAMSIZ, 0);
        if equal {
            self.eq(field, padded)
        } else {
            self.ne(field, padded)
        }
    }

    fn iif(self, name: &str) -> Self {
        self.interface(Field::IifName, name, true)
    }

    fn oif(self, name: &str) -> Self {
        self.interface(Field::OifName, name, true)
    }

    fn not_iif(self, name: &str) -> Self {
        self.interface(Field::IifName, name, false)
    }

    fn not_oif(self, name: &str) -> Self {
        self.interface(Field::OifName, name, false)
    }

    /// The address field in `net` (or not, `negated`).
    fn in_net(mut self, field: Field, net: Ipv4Net, negated: bool) -> Self {
        self.0.push(Expr::Load(field));
        if net.prefix_len() < 32 {
            self.0.push(Expr::And(net.netmask().octets().to_vec()));
        }
        self.0.push(Expr::Cmp {
            negated,
            value: net.network().octets().to_vec(),
        });
        self
    }

    /// The IPv6 source address in `net`.
    fn saddr6(mut self, net: Ipv6Net) -> Self {
        self.0.push(Expr::Load(Field::Ip6Saddr));
        if net.prefix_len() < 128 {
            self.0.push(Expr::And(net.netmask().octets().to_vec()));
        }
        self.0.push(Expr::Cmp {
            negated: false,
            value: net.network().octets().to_vec(),
        });
        self
    }

    fn saddr(self, net: Ipv4Net) -> Self {
        self.in_net(Field::IpSaddr, net, false)
    }

    fn daddr(self, net: Ipv4Net) -> Self {
        self.in_net(Field::IpDaddr, net, false)
    }

    fn dport(self, protocol: Protocol, port: u16) -> Self {
        let number = match protocol {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        };
        self.eq(Field::L4Proto, vec![number])
            .eq(Field::DestPort, port.to_be_bytes().to_vec())
    }

    /// The bits of a ct field set: `(value & bits) != 0`.
    fn ct_any(mut self, field: Field, bits: u32) -> Self {
        self.0.push(Expr::Load(field));
        self.0.push(Expr::And(bits.to_ne_bytes().to_vec()));
        self.0.push(Expr::Cmp {
            negated: true,
            value: vec![0; 4],
        });
        self
    }

    fn local_destination(self) -> Self {
        self.eq(Field::FibDaddrType, RTN_LOCAL.to_ne_bytes().to_vec())
    }

    fn then(mut self, last: Expr, chain: &'static str, comment: &str) -> NftRule {
        self.0.push(last);
        NftRule {
            chain,
            exprs: self.0,
            comment: comment.to_owned(),
        }
    }

    fn verdict(self, verdict: Verdict, chain: &'static str, comment: &str) -> NftRule {
        self.then(Expr::Verdict(verdict), chain, comment)
    }
}

fn loopback() -> Ipv4Net {
    LOOPBACK_NET.parse().expect("valid network")
}

fn single(address: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(address, 32).expect("a /32")
}

/// The comment of a network's rules.
pub fn network_comment(network: &str) -> String {
    format!("berth:{network}")
}

/// The comment of a published port's rules: unique per container and
/// host binding, so that one port can be withdrawn alone.
pub fn port_comment(forward: &PortForward) -> String {
    let mapping = &forward.mapping;
    format!(
        "berth:{} {}:{}/{}",
        forward.owner,
        mapping.host_ip,
        mapping.host_port,
        mapping.protocol.as_str()
    )
}

/// The jumps from the hooks into `published`: packets from elsewhere only for
/// a non-loopback local address, the host's own for any local address
/// (how a published port answers on localhost).
pub fn shared_rules() -> Vec<NftRule> {
    let jump = Verdict::Jump(DNAT_CHAIN);
    vec![
        Matches::new()
            .local_destination()
            .in_net(Field::IpDaddr, loopback(), true)
            .verdict(jump.clone(), PREROUTING_CHAIN, SHARED_COMMENT),
        Matches::new()
            .local_destination()
            .verdict(jump, OUTPUT_CHAIN, SHARED_COMMENT),
    ]
}

/// The rules of one network (see the module docs).
pub fn network_rules(network: &NetworkConfig) -> Vec<NftRule> {
    let bridge = network.bridge.as_str();
    let tag = network_comment(&network.name);
    let guard =
        Matches::new()
            .iif(bridge)
            .daddr(loopback())
            .verdict(Verdict::Drop, GUARD_CHAIN, &tag);
    if network.internal {
        return vec![
            Matches::new()
                .iif(bridge)
                .oif(bridge)
                .verdict(Verdict::Accept, FORWARD_CHAIN, &tag),
            Matches::new()
                .iif(bridge)
                .not_oif(bridge)
                .verdict(Verdict::Drop, FORWARD_CHAIN, &tag),
            Matches::new()
                .not_iif(bridge)
                .oif(bridge)
                .verdict(Verdict::Drop, FORWARD_CHAIN, &tag),
            guard,
        ];
    }
    vec![
        Matches::new().saddr(network.subnet).not_oif(bridge).then(
            Expr::Masquerade,
            POSTROUTING_CHAIN,
            &tag,
        ),
        Matches::new()
            .oif(bridge)
            .ct_any(Field::CtState, CT_STATE_ESTABLISHED | CT_STATE_RELATED)
            .verdict(Verdict::Accept, FORWARD_CHAIN, &tag),
        Matches::new()
            .iif(bridge)
            .verdict(Verdict::Accept, FORWARD_CHAIN, &tag),
        // The host's connections to 127.0.0.1:PORT leave with a loopback
        // source the container cannot answer.
        Matches::new().saddr(loopback()).oif(bridge).then(
            Expr::Masquerade,
            POSTROUTING_CHAIN,
            &tag,
        ),
        // Hairpin: a container calling a published port through a host
        // address.
        Matches::new()
            .saddr(network.subnet)
            .oif(bridge)
            .ct_any(Field::CtStatus, IPS_DST_NAT)
            .then(Expr::Masquerade, POSTROUTING_CHAIN, &tag),
        guard,
    ]
}

/// The IPv6 rules of a network with an IPv6 subnet (none without), for
/// berth's `ip6` table: as the iptables backend's
/// [`crate::firewall::network_rules6`], MASQUERADE of the subnet out of
/// any other interface, replies to the bridge and anything from it
/// accepted; an `--internal` network's isolation instead.
pub fn network_rules6(network: &NetworkConfig) -> Vec<NftRule> {
    let Some(subnet) = network.ipv6_subnet else {
        return Vec::new();
    };
    if network.internal {
        // The same interface-only isolation as IPv4's, without the guard.
        return network_rules(network)
            .into_iter()
            .filter(|rule| rule.chain == FORWARD_CHAIN)
            .collect();
    }
    let bridge = network.bridge.as_str();
    let tag = network_comment(&network.name);
    vec![
        Matches::new().saddr6(subnet).not_oif(bridge).then(
            Expr::Masquerade,
            POSTROUTING_CHAIN,
            &tag,
        ),
        Matches::new()
            .oif(bridge)
            .ct_any(Field::CtState, CT_STATE_ESTABLISHED | CT_STATE_RELATED)
            .verdict(Verdict::Accept, FORWARD_CHAIN, &tag),
        Matches::new()
            .iif(bridge)
            .verdict(Verdict::Accept, FORWARD_CHAIN, &tag),
    ]
}

/// The rules of one published port: DNAT of the host port (on its host
/// address only, when it has one) and acceptance of the forwarded
/// connections. Neither excludes the bridge (hairpin).
pub fn port_forward_rules(forward: &PortForward) -> Vec<NftRule> {
    let mapping = &forward.mapping;
    let tag = port_comment(forward);
    let mut dnat = Matches::new();
    if !mapping.host_ip.is_unspecified() {
        dnat = dnat.daddr(single(mapping.host_ip));
    }
    vec![
        dnat.dport(mapping.protocol, mapping.host_port).then(
            Expr::Dnat {
                address: forward.container_ip,
                port: mapping.container_port,
            },
            DNAT_CHAIN,
            &tag,
        ),
        Matches::new()
            .daddr(single(forward.container_ip))
            .oif(&forward.bridge)
            .dport(mapping.protocol, mapping.container_port)
            .verdict(Verdict::Accept, FORWARD_CHAIN, &tag),
    ]
}

// ---------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------

const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG_2: u32 = 2;

/// Append `expr` (one or more nf_tables expressions) to a rule's list.
fn encode_expr(expr: &Expr, out: &mut Attrs) {
    match expr {
        Expr::Load(
            field @ (Field::IpSaddr | Field::IpDaddr | Field::Ip6Saddr | Field::DestPort),
        ) => {
            // base (network / transport header), offset, length
            let (base, offset, len) = match field {
                Field::IpSaddr => (1, 12, 4),
                Field::IpDaddr => (1, 16, 4),
                Field::Ip6Saddr => (1, 8, 16),
                _ => (2, 2, 2),
            };
            push_expr(out, "payload", |a| {
                a.u32(1, REG_1).u32(2, base).u32(3, offset).u32(4, len);
            });
        }
        Expr::Load(field @ (Field::IifName | Field::OifName | Field::L4Proto)) => {
            let key = match field {
                Field::IifName => 6,
                Field::OifName => 7,
                _ => 16,
            };
            // KEY before DREG, as nft writes it.
            push_expr(out, "meta", |a| {
                a.u32(2, key).u32(1, REG_1);
            });
        }
        Expr::Load(Field::FibDaddrType) => push_expr(out, "fib", |a| {
            // DREG, RESULT (ADDRTYPE), FLAGS (DADDR)
            a.u32(1, REG_1).u32(2, 3).u32(3, 1 << 1);
        }),
        Expr::Load(field @ (Field::CtState | Field::CtStatus)) => {
            let key = if *field == Field::CtState { 0 } else { 2 };
            push_expr(out, "ct", |a| {
                a.u32(2, key).u32(1, REG_1);
            });
        }
        Expr::And(mask) => push_expr(out, "bitwise", |a| {
            let len = u32::try_from(mask.len()).expect("short mask");
            a.u32(1, REG_1)
                .u32(2, REG_1)
                .u32(3, len)
                .nested(4, |d| {
                    d.bytes(attr::DATA_VALUE, mask);
                })
                .nested(5, |d| {
                    d.bytes(attr::DATA_VALUE, &vec![0; mask.len()]);
                });
        }),
        Expr::Cmp { negated, value } => push_expr(out, "cmp", |a| {
            a.u32(1, REG_1).u32(2, u32::from(*negated)).nested(3, |d| {
                d.bytes(attr::DATA_VALUE, value);
            });
        }),
        Expr::Dnat { address, port } => {
            immediate(out, REG_1, &address.octets());
            immediate(out, REG_2, &port.to_be_bytes());
            push_expr(out, "nat", |a| {
                // TYPE (DNAT), FAMILY, REG_ADDR_MIN, REG_PROTO_MIN,
                // FLAGS (NF_NAT_RANGE_PROTO_SPECIFIED)
                a.u32(1, 1)
                    .u32(2, u32::from(NFPROTO_IPV4))
                    .u32(3, REG_1)
                    .u32(5, REG_2)
                    .u32(7, 2);
            });
        }
        Expr::Masquerade => push_expr(out, "masq", |_| {}),
        Expr::Verdict(verdict) => push_expr(out, "immediate", |a| {
            a.u32(1, REG_VERDICT).nested(2, |d| {
                d.nested(attr::DATA_VERDICT, |v| {
                    match verdict {
                        Verdict::Accept => v.u32(attr::VERDICT_CODE, 1),
                        Verdict::Drop => v.u32(attr::VERDICT_CODE, 0),
                        // NFT_JUMP is -3.
                        Verdict::Jump(chain) => v
                            .u32(attr::VERDICT_CODE, (-3i32) as u32)
                            .str(attr::VERDICT_CHAIN, chain),
                    };
                });
            });
        }),
    }
}

fn push_expr(out: &mut Attrs, name: &str, fill: impl FnOnce(&mut Attrs)) {
    out.nested(attr::LIST_ELEM, |elem| {
        elem.str(attr::EXPR_NAME, name)
            .nested(attr::EXPR_DATA, fill);
    });
}

fn immediate(out: &mut Attrs, register: u32, value: &[u8]) {
    push_expr(out, "immediate", |a| {
        a.u32(1, register).nested(2, |d| {
            d.bytes(attr::DATA_VALUE, value);
        });
    });
}

/// The rule's userdata: a comment TLV as `nft` writes it
/// (NFTNL_UDATA_RULE_COMMENT, length, the string with its NUL).
pub fn comment_userdata(comment: &str) -> Vec<u8> {
    let mut bytes = comment.as_bytes().to_vec();
    bytes.truncate(254);
    bytes.push(0);
    let mut userdata = vec![0, bytes.len() as u8];
    userdata.extend(bytes);
    userdata
}

/// The comment in a rule's userdata, if it has one.
pub fn userdata_comment(userdata: &[u8]) -> Option<&str> {
    let mut rest = userdata;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], usize::from(rest[1]));
        let value = rest.get(2..2 + len)?;
        if kind == 0 {
            let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
            return std::str::from_utf8(&value[..end]).ok();
        }
        rest = &rest[2 + len..];
    }
    None
}

/// The NEWRULE attributes of `rule` in `table`.
pub fn rule_attrs(table: &str, rule: &NftRule) -> Attrs {
    let mut attrs = Attrs::new();
    attrs
        .str(attr::RULE_TABLE, table)
        .str(attr::RULE_CHAIN, rule.chain)
        .nested(attr::RULE_EXPRESSIONS, |list| {
            for expr in &rule.exprs {
                encode_expr(expr, list);
            }
        })
        .bytes(attr::RULE_USERDATA, &comment_userdata(&rule.comment));
    attrs
}

pub(crate) fn chain_attrs(table: &str, chain: &ChainSpec) -> Attrs {
    let mut attrs = Attrs::new();
    attrs
        .str(attr::CHAIN_TABLE, table)
        .str(attr::CHAIN_NAME, chain.name);
    if let Some((kind, hook, priority)) = chain.base {
        attrs
            .nested(attr::CHAIN_HOOK, |h| {
                h.u32(attr::HOOK_HOOKNUM, hook as u32)
                    .u32(attr::HOOK_PRIORITY, priority as u32);
            })
            .u32(attr::CHAIN_POLICY, 1)
            .str(attr::CHAIN_TYPE, kind);
    }
    attrs
}

/// `rule` the way `nft list` writes it (for messages and tests).
pub fn describe(rule: &NftRule) -> String {
    let mut text = String::new();
    let mut loaded = None;
    let mut masked: Option<&[u8]> = None;
    for expr in &rule.exprs {
        match expr {
            Expr::Load(field) => {
                loaded = Some(*field);
                masked = None;
            }
            Expr::And(mask) => masked = Some(mask),
            Expr::Cmp { negated, value } => {
                let op = if *negated { "!= " } else { "" };
                let _ = match loaded {
                    Some(Field::IpSaddr | Field::IpDaddr) => {
                        let name = if loaded == Some(Field::IpSaddr) {
                            "saddr"
                        } else {
                            "daddr"
                        };
                        let address = octets(value);
                        let prefix =
                            masked.map_or(32, |m| m.iter().map(|b| b.count_ones()).sum::<u32>());
                        if prefix == 32 {
                            write!(text, "ip {name} {op}{address} ")
                        } else {
                            write!(text, "ip {name} {op}{address}/{prefix} ")
                        }
                    }
                    Some(Field::Ip6Saddr) => {
                        let address = match <[u8; 16]>::try_from(value.as_slice()) {
                            Ok(bytes) => Ipv6Addr::from(bytes),
                            Err(_) => Ipv6Addr::UNSPECIFIED,
                        };
                        let prefix =
                            masked.map_or(128, |m| m.iter().map(|b| b.count_ones()).sum::<u32>());
                        if prefix == 128 {
                            write!(text, "ip6 saddr {op}{address} ")
                        } else {
                            write!(text, "ip6 saddr {op}{address}/{prefix} ")
                        }
                    }
                    Some(Field::IifName | Field::OifName) => {
                        let name = if loaded == Some(Field::IifName) {
                            "iifname"
                        } else {
                            "oifname"
                        };
                        let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
                        let interface = String::from_utf8_lossy(&value[..end]);
                        write!(text, "{name} {op}\"{interface}\" ")
                    }
                    Some(Field::L4Proto) => write!(
                        text,
                        "{} ",
                        match value.first() {
                            Some(6) => "tcp",
                            Some(17) => "udp",
                            _ => "?",
                        }
                    ),
                    Some(Field::DestPort) => {
                        let port = u16::from_be_bytes([value[0], value[1]]);
                        write!(text, "dport {op}{port} ")
                    }
                    Some(Field::FibDaddrType) => write!(text, "fib daddr type {op}local "),
                    Some(Field::CtState) => write!(text, "ct state established,related "),
                    Some(Field::CtStatus) => write!(text, "ct status dnat "),
                    None => write!(text, "? "),
                };
            }
            Expr::Dnat { address, port } => {
                let _ = write!(text, "dnat to {address}:{port} ");
            }
            Expr::Masquerade => text.push_str("masquerade "),
            Expr::Verdict(Verdict::Accept) => text.push_str("accept "),
            Expr::Verdict(Verdict::Drop) => text.push_str("drop "),
            Expr::Verdict(Verdict::Jump(chain)) => {
                let _ = write!(text, "jump {chain} ");
            }
        }
    }
    let _ = write!(text, "comment \"{}\"", rule.comment);
    format!("{}: {text}", rule.chain)
}

fn octets(value: &[u8]) -> Ipv4Addr {
    match <[u8; 4]>::try_from(value) {
        Ok(bytes) => Ipv4Addr::from(bytes),
        Err(_) => Ipv4Addr::UNSPECIFIED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PortMapping, Protocol};

    fn network(internal: bool) -> NetworkConfig {
        NetworkConfig {
            name: "web".into(),
            id: "0123456789ab".repeat(5) + "cdef",
            driver: "bridge".into(),
            subnet: "10.10.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 10, 0, 1),
            bridge: "br-0123456789ab".into(),
            internal,
            labels: Default::default(),
            ip_range: None,
            ipv6_subnet: None,
            ipv6_gateway: None,
        }
    }

    fn forward(mapping: PortMapping) -> PortForward {
        PortForward {
            owner: "c0ffee".into(),
            network: "web".into(),
            bridge: "br-0123456789ab".into(),
            container_ip: Ipv4Addr::new(10, 10, 0, 2),
            mapping,
        }
    }

    fn described(rules: &[NftRule]) -> Vec<String> {
        rules.iter().map(describe).collect()
    }

    #[test]
    fn the_rules_say_what_the_iptables_ones_say() {
        assert_eq!(
            described(&shared_rules()),
            [
                "prerouting: fib daddr type local ip daddr != 127.0.0.0/8 jump published comment \"berth\"",
                "output: fib daddr type local jump published comment \"berth\"",
            ]
        );
        assert_eq!(
            described(&network_rules(&network(false))),
            [
                "postrouting: ip saddr 10.10.0.0/24 oifname != \"br-0123456789ab\" masquerade comment \"berth:web\"",
                "forward: oifname \"br-0123456789ab\" ct state established,related accept comment \"berth:web\"",
                "forward: iifname \"br-0123456789ab\" accept comment \"berth:web\"",
                "postrouting: ip saddr 127.0.0.0/8 oifname \"br-0123456789ab\" masquerade comment \"berth:web\"",
                "postrouting: ip saddr 10.10.0.0/24 oifname \"br-0123456789ab\" ct status dnat masquerade comment \"berth:web\"",
                "guard: iifname \"br-0123456789ab\" ip daddr 127.0.0.0/8 drop comment \"berth:web\"",
            ]
        );
        assert_eq!(
            described(&network_rules(&network(true))),
            [
                "forward: iifname \"br-0123456789ab\" oifname \"br-0123456789ab\" accept comment \"berth:web\"",
                "forward: iifname \"br-0123456789ab\" oifname != \"br-0123456789ab\" drop comment \"berth:web\"",
                "forward: iifname != \"br-0123456789ab\" oifname \"br-0123456789ab\" drop comment \"berth:web\"",
                "guard: iifname \"br-0123456789ab\" ip daddr 127.0.0.0/8 drop comment \"berth:web\"",
            ]
        );
        assert_eq!(
            described(&port_forward_rules(&forward(PortMapping::new(
                8080,
                80,
                Protocol::Tcp
            )))),
            [
                "published: tcp dport 8080 dnat to 10.10.0.2:80 comment \"berth:c0ffee 0.0.0.0:8080/tcp\"",
                "forward: ip daddr 10.10.0.2 oifname \"br-0123456789ab\" tcp dport 80 accept comment \"berth:c0ffee 0.0.0.0:8080/tcp\"",
            ]
        );
        let bound = forward("127.0.0.1:5353:53/udp".parse().unwrap());
        assert_eq!(
            describe(&port_forward_rules(&bound)[0]),
            "published: ip daddr 127.0.0.1 udp dport 5353 dnat to 10.10.0.2:53 comment \"berth:c0ffee 127.0.0.1:5353/udp\""
        );
    }

    /// The bytes `nft --debug=mnl add rule ip berth published tcp dport 8080
    /// dnat to 10.10.0.2:80 comment "berth:x"` sends for the expressions
    /// (nft 1.0.6), attribute by attribute.
    #[test]
    fn a_dnat_rule_encodes_like_nft() {
        let rule = NftRule {
            chain: DNAT_CHAIN,
            exprs: Matches::new()
                .dport(Protocol::Tcp, 8080)
                .then(
                    Expr::Dnat {
                        address: Ipv4Addr::new(10, 10, 0, 2),
                        port: 80,
                    },
                    DNAT_CHAIN,
                    "berth:x",
                )
                .exprs,
            comment: "berth:x".into(),
        };
        let attrs = rule_attrs("berth", &rule);
        let top: Vec<(u16, Vec<u8>)> = crate::nftables_msg::parse_attrs(attrs.as_bytes())
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        assert_eq!(top[0], (attr::RULE_TABLE, b"berth\0".to_vec()));
        assert_eq!(top[1], (attr::RULE_CHAIN, b"published\0".to_vec()));
        assert_eq!(
            top[3],
            (attr::RULE_USERDATA, b"\x00\x08berth:x\x00".to_vec())
        );
        let exprs: Vec<Vec<u8>> = crate::nftables_msg::parse_attrs(&top[2].1)
            .map(|(_, v)| v.to_vec())
            .collect();
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let expected = [
            // meta load l4proto => reg 1
            "090001006d65746100000000 14000280 0800020000000010 0800010000000001",
            // cmp eq reg 1 0x06
            "08000100636d7000 20000280 0800010000000001 0800020000000000 0c000380 05000100 06000000",
            // payload load 2b @ transport header + 2 => reg 1
            "0c0001007061796c6f616400 24000280 0800010000000001 0800020000000002 0800030000000002 0800040000000002",
            // cmp eq reg 1 0x1f90 (8080)
            "08000100636d7000 20000280 0800010000000001 0800020000000000 0c000380 06000100 1f900000",
            // immediate reg 1 10.10.0.2
            "0e000100696d6d656469617465000000 18000280 0800010000000001 0c000280 08000100 0a0a0002",
            // immediate reg 2 0x0050 (80)
            "0e000100696d6d656469617465000000 18000280 0800010000000002 0c000280 06000100 00500000",
            // nat dnat ip addr_min reg 1 proto_min reg 2 flags 0x2
            "080001006e617400 2c000280 0800010000000001 0800020000000002 0800030000000001 0800050000000002 0800070000000002",
        ];
        assert_eq!(exprs.len(), expected.len());
        for (got, want) in exprs.iter().zip(expected) {
            assert_eq!(hex(got), want.replace(' ', ""));
        }
    }

    fn network6(internal: bool) -> NetworkConfig {
        NetworkConfig {
            ipv6_subnet: Some("fd00:1::/64".parse().unwrap()),
            ipv6_gateway: Some("fd00:1::1".parse().unwrap()),
            ..network(internal)
        }
    }

    #[test]
    fn ipv6_rules_exist_only_for_ipv6_networks_and_say_what_ip6tables_says() {
        assert!(network_rules6(&network(false)).is_empty());
        assert!(network_rules6(&network(true)).is_empty());
        assert_eq!(
            described(&network_rules6(&network6(false))),
            [
                "postrouting: ip6 saddr fd00:1::/64 oifname != \"br-0123456789ab\" masquerade comment \"berth:web\"",
                "forward: oifname \"br-0123456789ab\" ct state established,related accept comment \"berth:web\"",
                "forward: iifname \"br-0123456789ab\" accept comment \"berth:web\"",
            ]
        );
        assert_eq!(
            described(&network_rules6(&network6(true))),
            [
                "forward: iifname \"br-0123456789ab\" oifname \"br-0123456789ab\" accept comment \"berth:web\"",
                "forward: iifname \"br-0123456789ab\" oifname != \"br-0123456789ab\" drop comment \"berth:web\"",
                "forward: iifname != \"br-0123456789ab\" oifname \"br-0123456789ab\" drop comment \"berth:web\"",
            ]
        );
        // Every IPv6 rule lives in a chain of the ip6 table.
        for internal in [false, true] {
            for rule in network_rules6(&network6(internal)) {
                assert!(CHAINS6.iter().any(|c| c.name == rule.chain), "{rule:?}");
            }
        }
    }

    /// The expressions of `rule` as hex strings, one per expression.
    fn expression_hex(rule: &NftRule) -> Vec<String> {
        let attrs = rule_attrs("t", rule);
        let top: Vec<(u16, Vec<u8>)> = crate::nftables_msg::parse_attrs(attrs.as_bytes())
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        assert_eq!(top[2].0, attr::RULE_EXPRESSIONS);
        crate::nftables_msg::parse_attrs(&top[2].1)
            .map(|(_, v)| v.iter().map(|b| format!("{b:02x}")).collect())
            .collect()
    }

    /// The bytes `nft --debug=mnl add rule ip6 t postrouting ip6 saddr
    /// fd00:1::2 oifname != "br-x" masquerade comment "berth:x"` sends for
    /// the expressions (nft 1.0.6). For a prefix shorter than /128 berth
    /// adds a bitwise mask of all 16 bytes before the compare (nft loads
    /// only the prefix's bytes instead; `nft list` shows both the same
    /// way, see the privileged test).
    #[test]
    fn an_ipv6_masquerade_encodes_like_nft() {
        let host = Matches::new()
            .saddr6("fd00:1::2/128".parse().unwrap())
            .not_oif("br-x")
            .then(Expr::Masquerade, POSTROUTING_CHAIN, "berth:x");
        let expected = [
            // payload load 16b @ network header + 8 => reg 1
            "0c0001007061796c6f616400 24000280 0800010000000001 0800020000000001 0800030000000008 0800040000000010",
            // cmp eq reg 1 fd00:1::2
            "08000100636d7000 2c000280 0800010000000001 0800020000000000 18000380 14000100 fd000001000000000000000000000002",
            // meta load oifname => reg 1
            "090001006d65746100000000 14000280 0800020000000007 0800010000000001",
            // cmp neq reg 1 "br-x"
            "08000100636d7000 2c000280 0800010000000001 0800020000000001 18000380 14000100 62722d78000000000000000000000000",
            // masq
            "090001006d61737100000000 04000280",
        ];
        let got = expression_hex(&host);
        assert_eq!(got.len(), expected.len());
        for (got, want) in got.iter().zip(expected) {
            assert_eq!(got, &want.replace(' ', ""));
        }
        let subnet = Matches::new().saddr6("fd00:1::/64".parse().unwrap()).then(
            Expr::Masquerade,
            POSTROUTING_CHAIN,
            "berth:x",
        );
        let got = expression_hex(&subnet);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], expected[0].replace(' ', ""));
        // bitwise reg 1 = (reg 1 & ffff:ffff:ffff:ffff::) ^ 0
        assert_eq!(
            got[1],
            "0c000100626974776973650 0 4c000280 0800010000000001 0800020000000001 0800030000000010 \
             18000480 14000100 ffffffffffffffff0000000000000000 \
             18000580 14000100 00000000000000000000000000000000"
                .replace(' ', "")
        );
        // cmp eq reg 1 fd00:1::
        assert_eq!(
            got[2],
            "08000100636d7000 2c000280 0800010000000001 0800020000000000 18000380 14000100 fd000001000000000000000000000000"
                .replace(' ', "")
        );
    }

    #[test]
    fn comments_round_trip_through_userdata() {
        let userdata = comment_userdata("berth:c0ffee 0.0.0.0:8080/tcp");
        assert_eq!(userdata[..2], [0, 30]);
        assert_eq!(
            userdata_comment(&userdata),
            Some("berth:c0ffee 0.0.0.0:8080/tcp")
        );
        // Another TLV first (nft's rule userdata may hold more).
        let mut mixed = vec![7, 2, 1, 2];
        mixed.extend(&userdata);
        assert_eq!(
            userdata_comment(&mixed),
            Some("berth:c0ffee 0.0.0.0:8080/tcp")
        );
        assert_eq!(userdata_comment(&[0, 9, b'x']), None);
        assert_eq!(userdata_comment(&[]), None);
    }
}
