//! The container's `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`,
//! rendered as text; the caller writes them into the rootfs.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// One `/etc/hosts` line: an address and its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsEntry {
    pub ip: IpAddr,
    pub names: Vec<String>,
}

impl HostsEntry {
    pub fn new(ip: impl Into<IpAddr>, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        HostsEntry {
            ip: ip.into(),
            names: names.into_iter().map(Into::into).collect(),
        }
    }
}

/// Render `/etc/hosts`: the usual localhost lines, then the container's own
/// address with its hostname and `names` (e.g. its container name; none
/// with `--net none`, where `own_ip` is `None`), then `others` (e.g. the
/// containers already on the same network).
pub fn render_hosts(
    hostname: &str,
    own_ip: Option<Ipv4Addr>,
    names: &[&str],
    others: &[HostsEntry],
) -> String {
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    let mut line = |ip: IpAddr, names: &mut dyn Iterator<Item = &str>| {
        let mut seen: Vec<&str> = Vec::new();
        for name in names {
            if !name.is_empty() && !name.contains(char::is_whitespace) && !seen.contains(&name) {
                seen.push(name);
            }
        }
        if !seen.is_empty() {
            let _ = writeln!(text, "{ip}\t{}", seen.join(" "));
        }
    };
    if let Some(ip) = own_ip {
        line(
            IpAddr::V4(ip),
            &mut std::iter::once(hostname).chain(names.iter().copied()),
        );
    }
    for other in others {
        line(other.ip, &mut other.names.iter().map(String::as_str));
    }
    text
}

/// docker's nameservers for a container when the host has none it can
/// reach (Google Public DNS).
pub const DEFAULT_NAMESERVERS: [Ipv4Addr; 2] =
    [Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(8, 8, 4, 4)];

/// Whether a `nameserver` value is a loopback address (127.0.0.0/8, ::1),
/// which would point at the container itself.
fn is_loopback_server(server: &str) -> bool {
    // Strip an IPv6 zone (fe80::1%eth0) before parsing.
    let address = server.split('%').next().unwrap_or(server);
    address.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host's resolver configuration with its loopback `nameserver` lines
/// (a local stub such as systemd-resolved's 127.0.0.53) replaced by the
/// nameservers of `upstream`, the stub's own configuration (for
/// systemd-resolved `/run/systemd/resolve/resolv.conf`), as docker does.
/// Unchanged when there is no upstream file or no loopback nameserver.
pub fn with_upstream_nameservers(host: &str, upstream: Option<&str>) -> String {
    let nameserver = |line: &str| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next())
            .flatten()
            .map(str::to_owned)
    };
    let has_loopback = host
        .lines()
        .filter_map(nameserver)
        .any(|server| is_loopback_server(&server));
    let Some(upstream) = upstream.filter(|_| has_loopback) else {
        return host.to_owned();
    };
    let mut replacements: Vec<String> = upstream
        .lines()
        .filter_map(nameserver)
        .filter(|server| !is_loopback_server(server))
        .collect();
    replacements.dedup();
    let mut text = String::new();
    let mut written: Vec<String> = Vec::new();
    for line in host.lines() {
        match nameserver(line) {
            Some(server) if is_loopback_server(&server) => {
                // All of the upstream servers in place of the first one.
                for upstream in replacements.drain(..) {
                    let _ = writeln!(text, "nameserver {upstream}");
                    written.push(upstream);
                }
            }
            Some(server) if written.contains(&server) || replacements.contains(&server) => {}
            Some(server) => {
                text.push_str(line);
                text.push('\n');
                written.push(server);
            }
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

/// Render the container's `/etc/resolv.conf` from the host's: the same
/// lines minus `nameserver`s on loopback addresses (127.0.0.0/8, ::1),
/// which would point at the container itself. When none is left, docker's
/// [`DEFAULT_NAMESERVERS`] are written, with a comment saying why.
///
/// On hosts running systemd-resolved the caller should first put the real
/// upstream servers in place of 127.0.0.53 (see
/// [`with_upstream_nameservers`]).
pub fn render_resolv_conf(host: &str) -> String {
    let mut text = String::new();
    let mut nameservers = 0;
    let mut dropped = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            if let Some(server) = words.next() {
                if is_loopback_server(server) {
                    dropped.push(server.to_owned());
                    continue;
                }
                nameservers += 1;
            }
        }
        text.push_str(line);
        text.push('\n');
    }
    if nameservers == 0 {
        if dropped.is_empty() {
            text.push_str("# berth: the host has no nameserver; docker's defaults\n");
        } else {
            let _ = writeln!(
                text,
                "# berth: the host's nameservers ({}) are loopback addresses, \
                 unreachable from the container; docker's defaults",
                dropped.join(", ")
            );
        }
        for server in DEFAULT_NAMESERVERS {
            let _ = writeln!(text, "nameserver {server}");
        }
    }
    text
}

/// A container's own resolver settings (docker's `--dns`, `--dns-search`,
/// `--dns-option`): each one given replaces the host's lines of its kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSettings {
    pub servers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// [`render_resolv_conf`] with `settings` applied: the host's
/// `nameserver`, `search` and `options` lines are replaced by the
/// settings of each kind that has any.
pub fn render_resolv_conf_with(host: &str, settings: &DnsSettings) -> String {
    let replaced = |line: &str| match line.split_whitespace().next() {
        Some("nameserver") => !settings.servers.is_empty(),
        Some("search" | "domain") => !settings.search.is_empty(),
        Some("options") => !settings.options.is_empty(),
        _ => false,
    };
    let kept: Vec<&str> = host.lines().filter(|line| !replaced(line)).collect();
    let mut text = if settings.servers.is_empty() {
        render_resolv_conf(&kept.join("\n"))
    } else {
        let mut text: String = kept.iter().map(|l| format!("{l}\n")).collect();
        for server in &settings.servers {
            let _ = writeln!(text, "nameserver {server}");
        }
        text
    };
    if !settings.search.is_empty() {
        let _ = writeln!(text, "search {}", settings.search.join(" "));
    }
    if !settings.options.is_empty() {
        let _ = writeln!(text, "options {}", settings.options.join(" "));
    }
    text
}

/// The `resolv.conf` of a container whose names the embedded responder
/// answers (docker's on user-defined networks): `resolv` (what the
/// container would have had) with its nameservers replaced by
/// [`EMBEDDED_DNS_ADDRESS`](crate::dns::EMBEDDED_DNS_ADDRESS), noted in a
/// comment as docker does, and `ndots:0` unless `resolv` sets `ndots`, so
/// that a container's name is asked for as it is before any search
/// domain is tried.
pub fn render_embedded_resolv_conf(resolv: &str) -> String {
    let upstreams: Vec<String> = nameservers(resolv).iter().map(IpAddr::to_string).collect();
    let mut text = format!("nameserver {}\n", crate::dns::EMBEDDED_DNS_ADDRESS);
    let mut options: Vec<&str> = Vec::new();
    for line in resolv.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") | None => {}
            Some("options") => options.extend(words),
            Some(_) => {
                let _ = writeln!(text, "{line}");
            }
        }
    }
    if !options.iter().any(|o| o.starts_with("ndots:")) {
        options.push("ndots:0");
    }
    let _ = writeln!(text, "options {}", options.join(" "));
    let _ = writeln!(text, "\n# ExtServers: [{}]", upstreams.join(" "));
    text
}

/// The addresses of the `nameserver` lines of a resolv.conf text (an
/// IPv6 zone dropped; lines that are not an address skipped).
pub fn nameservers(resolv: &str) -> Vec<IpAddr> {
    resolv
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            words.next()?.split('%').next()?.parse().ok()
        })
        .collect()
}

/// The domains of a resolv.conf text's `search` (or `domain`) line; the
/// last such line counts, as in glibc.
pub fn search_domains(resolv: &str) -> Vec<String> {
    let mut domains = Vec::new();
    for line in resolv.lines() {
        let mut words = line.split_whitespace();
        if let Some("search" | "domain") = words.next() {
            domains = words.map(str::to_owned).collect();
        }
    }
    domains
}

/// Render `/etc/hostname`.
pub fn render_hostname(hostname: &str) -> String {
    format!("{hostname}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_responder_replaces_the_nameservers_and_keeps_the_rest() {
        let resolv = "# made by berth\nnameserver 10.98.0.53\nnameserver fe80::1%eth0\nsearch corp.test\noptions edns0\n";
        assert_eq!(
            nameservers(resolv),
            vec![
                "10.98.0.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        assert_eq!(
            render_embedded_resolv_conf(resolv),
            "nameserver 127.0.0.11\n# made by berth\nsearch corp.test\noptions edns0 ndots:0\n\n# ExtServers: [10.98.0.53 fe80::1]\n"
        );
        assert_eq!(search_domains(resolv), vec!["corp.test".to_owned()]);
        assert_eq!(
            search_domains("domain a.test\nsearch b.test c.test\n"),
            vec!["b.test".to_owned(), "c.test".to_owned()]
        );
        // A user's ndots is kept.
        let text = render_embedded_resolv_conf("nameserver 1.1.1.1\noptions ndots:3\n");
        assert!(
            text.contains("options ndots:3\n") && !text.contains("ndots:0"),
            "{text}"
        );
    }

    #[test]
    fn dns_settings_replace_the_hosts_lines_of_their_kind() {
        let host = "nameserver 10.0.0.1\nsearch corp.example\noptions ndots:2\n# kept\n";
        assert_eq!(render_resolv_conf_with(host, &DnsSettings::default()), host);
        let settings = DnsSettings {
            servers: vec!["192.0.2.53".parse().unwrap()],
            search: vec!["a.example".into(), "b.example".into()],
            options: vec!["ndots:5".into(), "timeout:1".into()],
        };
        assert_eq!(
            render_resolv_conf_with(host, &settings),
            "# kept\nnameserver 192.0.2.53\nsearch a.example b.example\noptions ndots:5 timeout:1\n"
        );
        let only_search = DnsSettings {
            search: vec!["x.example".into()],
            ..Default::default()
        };
        let text = render_resolv_conf_with(host, &only_search);
        assert!(text.contains("nameserver 10.0.0.1") && text.contains("search x.example"));
        assert!(!text.contains("corp.example"), "{text}");
    }

    #[test]
    fn hosts_with_own_address_and_others() {
        let hosts = render_hosts(
            "a1b2c3d4e5f6",
            Some(Ipv4Addr::new(172, 17, 0, 2)),
            &["web", "a1b2c3d4e5f6"],
            &[
                HostsEntry::new(Ipv4Addr::new(172, 17, 0, 3), ["db", "0123456789ab"]),
                HostsEntry::new(Ipv4Addr::new(172, 17, 0, 4), Vec::<String>::new()),
            ],
        );
        assert_eq!(
            hosts,
            "127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\n\
             ff00::0\tip6-mcastprefix\n\
             ff02::1\tip6-allnodes\n\
             ff02::2\tip6-allrouters\n\
             172.17.0.2\ta1b2c3d4e5f6 web\n\
             172.17.0.3\tdb 0123456789ab\n"
        );
    }

    #[test]
    fn hosts_without_network() {
        let hosts = render_hosts("box", None, &["web"], &[]);
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(!hosts.contains("box"));
    }

    #[test]
    fn resolv_conf_drops_loopback_nameservers_only() {
        let host = "# generated\nsearch example.org\nnameserver 127.0.0.53\n\
                    nameserver 10.0.0.2\nnameserver ::1\nnameserver 127.1.2.3\n\
                    nameserver fe80::1%eth0\noptions edns0 trust-ad\n";
        assert_eq!(
            render_resolv_conf(host),
            "# generated\nsearch example.org\nnameserver 10.0.0.2\n\
             nameserver fe80::1%eth0\noptions edns0 trust-ad\n"
        );
    }

    #[test]
    fn resolv_conf_with_only_loopback_gets_dockers_defaults() {
        let text = render_resolv_conf("nameserver 127.0.0.53\noptions edns0\n");
        assert!(!text.contains("nameserver 127"), "{text}");
        assert!(text.contains("options edns0\n"));
        assert!(text.contains("# berth: the host's nameservers (127.0.0.53)"));
        assert!(
            text.ends_with("nameserver 8.8.8.8\nnameserver 8.8.4.4\n"),
            "{text}"
        );
        let empty = render_resolv_conf("");
        assert_eq!(
            empty,
            "# berth: the host has no nameserver; docker's defaults\n\
             nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }

    #[test]
    fn loopback_stubs_give_way_to_their_upstream_servers() {
        let host = "# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example\n";
        let upstream =
            "# resolved\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 127.0.0.1\n";
        let merged = with_upstream_nameservers(host, Some(upstream));
        assert_eq!(
            merged,
            "# stub\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n\
             options edns0 trust-ad\nsearch corp.example\n"
        );
        assert_eq!(render_resolv_conf(&merged), merged);
        // No upstream file: docker's defaults in the end.
        let alone = with_upstream_nameservers(host, None);
        assert_eq!(alone, host);
        assert!(render_resolv_conf(&alone).contains("nameserver 8.8.8.8\n"));
        // A host without a loopback stub keeps its own servers.
        let plain = "nameserver 192.0.2.1\n";
        assert_eq!(with_upstream_nameservers(plain, Some(upstream)), plain);
        // A second loopback line and a server named twice are not repeated.
        let two = "nameserver 127.0.0.1\nnameserver 10.0.0.3\nnameserver ::1\n";
        assert_eq!(
            with_upstream_nameservers(two, Some(upstream)),
            "nameserver 10.0.0.2\nnameserver 10.0.0.3\n"
        );
    }

    #[test]
    fn hostname_file() {
        assert_eq!(render_hostname("box"), "box\n");
    }
}
