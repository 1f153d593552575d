//! Live names on networks: every running container's /etc/hosts lists the
//! other containers that share a network with it (name, short id and that
//! network's aliases), rewritten whenever a container joins or leaves one
//! of its user-defined networks, so that a container started later is
//! resolvable from one started earlier, and a removed one stops being.
//!
//! The hosts file is also what the embedded DNS server answers from
//! ([`berth_net::dns`], set up in [`crate::network::embedded_dns`]): one
//! source of names, kept live here, for programs that read /etc/hosts and
//! for those that ask DNS.
//!
//! Correct under concurrent starts and stops: membership comes from the
//! IPAM leases (taken and given back under the IPAM lock, before a
//! refresh runs), and refreshes are serialised by a lock file, so the
//! last refresh after any change sees every lease and rewrites every
//! member's file.
//!
//! The file is bind-mounted into the container from its directory, so it
//! is rewritten in place (a rename would leave the container on the old
//! inode): one `write` of the whole text from offset 0, then the length
//! cut; a reader in the container sees the old or the new text except in
//! that instant, and the file is tiny.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::Context;
use berth_net::{render_hosts, HostsEntry, Ipam, NetworkStore};
use berth_state::{ContainerRecord, ContainerStore, FileLock};

use crate::paths::Paths;

/// One container as the hosts files see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsMember {
    pub id: String,
    pub name: String,
    pub hostname: String,
    /// Its main network (the one whose address its hostname maps to).
    pub main_network: String,
    /// network -> (its address there, its aliases there).
    pub addresses: BTreeMap<String, (Ipv4Addr, Vec<String>)>,
    /// network -> its IPv6 address there (networks with IPv6).
    pub addresses6: BTreeMap<String, Ipv6Addr>,
    /// `--add-host` entries.
    pub extra_hosts: Vec<HostsEntry>,
}

impl HostsMember {
    /// Its address on its main network, or else on any.
    fn own_address(&self) -> Option<Ipv4Addr> {
        self.addresses
            .get(&self.main_network)
            .or_else(|| self.addresses.values().next())
            .map(|(ip, _)| *ip)
    }
}

/// `me`'s /etc/hosts: the usual lines, its own address with its hostname,
/// name and main-network aliases, then every other member on a network
/// `me` is on (its address there, name, hostname and aliases there), then
/// `me`'s `--add-host` entries.
pub fn hosts_file(me: &HostsMember, members: &[HostsMember]) -> String {
    let mut own_names = vec![me.name.as_str()];
    if let Some((_, aliases)) = me.addresses.get(&me.main_network) {
        own_names.extend(aliases.iter().map(String::as_str));
    }
    let mut others = Vec::new();
    if let Some(ip) = me.addresses6.get(&me.main_network) {
        let mut names = vec![me.hostname.as_str()];
        names.extend(own_names.iter().copied());
        others.push(HostsEntry::new(*ip, names));
    }
    for (network, _) in me.addresses.iter() {
        for other in members.iter().filter(|m| m.id != me.id) {
            if let Some((ip, aliases)) = other.addresses.get(network) {
                let mut names = vec![other.name.clone(), other.hostname.clone()];
                names.extend(aliases.iter().cloned());
                if let Some(ip6) = other.addresses6.get(network) {
                    others.push(HostsEntry::new(*ip6, names.clone()));
                }
                others.push(HostsEntry::new(*ip, names));
            }
        }
    }
    others.extend(me.extra_hosts.iter().cloned());
    render_hosts(&me.hostname, me.own_address(), &own_names, &others)
}

/// The member `record` is, given its addresses by network (from IPAM).
fn member(
    record: &ContainerRecord,
    leases: &BTreeMap<String, Ipv4Addr>,
    leases6: &BTreeMap<String, Ipv6Addr>,
) -> HostsMember {
    let main_network = crate::network::main_network_name(record);
    let mut addresses = BTreeMap::new();
    for (network, ip) in leases {
        let aliases = if *network == main_network {
            record.network_aliases.clone()
        } else {
            crate::network::connections_of(record)
                .into_iter()
                .find(|c| c.network == *network)
                .map(|c| c.aliases)
                .unwrap_or_default()
        };
        addresses.insert(network.clone(), (*ip, aliases));
    }
    let extra_hosts = record
        .extra_hosts
        .iter()
        .filter_map(|entry| crate::network::parse_extra_host(entry).ok())
        .map(|(name, ip): (String, IpAddr)| HostsEntry::new(ip, [name]))
        .collect();
    HostsMember {
        id: record.id.clone(),
        name: record.name.clone(),
        hostname: record.hostname.clone(),
        main_network,
        addresses,
        addresses6: leases6.clone(),
        extra_hosts,
    }
}

/// Rewrite the /etc/hosts of every container that holds an address on one
/// of `networks` (see the module docs). Containers of the default network
/// only are left as they started (docker gives them no names either).
pub fn refresh(
    paths: &Paths,
    containers: &ContainerStore,
    networks: &[String],
) -> anyhow::Result<()> {
    refresh_also(paths, containers, networks, None)
}

/// [`refresh`], and the file of container `also` too (one that just left
/// `networks` and must stop naming their members).
pub fn refresh_also(
    paths: &Paths,
    containers: &ContainerStore,
    networks: &[String],
    also: Option<&str>,
) -> anyhow::Result<()> {
    let networks: Vec<&String> = networks
        .iter()
        .filter(|n| n.as_str() != crate::network::DEFAULT_NETWORK)
        .collect();
    if networks.is_empty() {
        return Ok(());
    }
    let dir = paths.networks_dir();
    let lock_path = dir.join("hosts.lock");
    let _lock = FileLock::exclusive(&lock_path)
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    // owner -> network -> address, over every network of this root.
    let mut leases: BTreeMap<String, BTreeMap<String, Ipv4Addr>> = BTreeMap::new();
    let mut leases6: BTreeMap<String, BTreeMap<String, Ipv6Addr>> = BTreeMap::new();
    {
        let txn = Ipam::new(dir.join("ipam")).transaction()?;
        for network in NetworkStore::new(&dir).list()? {
            for lease in txn.leases(&network.name)? {
                leases
                    .entry(lease.owner)
                    .or_default()
                    .insert(network.name.clone(), lease.ip);
            }
            for (owner, ip) in txn.leases6(&network.name)? {
                leases6
                    .entry(owner)
                    .or_default()
                    .insert(network.name.clone(), ip);
            }
        }
    }
    let no_leases6 = BTreeMap::new();
    if let Some(id) = also {
        leases.entry(id.to_owned()).or_default();
    }
    let mut first_error = None;
    let members: Vec<HostsMember> = leases
        .iter()
        .filter_map(|(id, by_network)| {
            let record = containers.load(id).ok()?;
            Some(member(
                &record,
                by_network,
                leases6.get(id).unwrap_or(&no_leases6),
            ))
        })
        .collect();
    for me in &members {
        let affected = networks
            .iter()
            .any(|n| me.addresses.contains_key(n.as_str()));
        if !affected && also != Some(me.id.as_str()) {
            continue;
        }
        let path = containers.container_dir(&me.id).join("hosts");
        // One container's file that cannot be written (its directory
        // going away) does not keep the others stale.
        if let Err(e) = rewrite_in_place(&path, &hosts_file(me, &members)) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Replace the contents of `path` without replacing the file (it is
/// bind-mounted into the container); a missing file (a container not
/// started yet, or being removed) is skipped.
fn rewrite_in_place(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.set_len(text.len() as u64))
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, main: &str, addresses: &[(&str, &str, &[&str])]) -> HostsMember {
        HostsMember {
            id: id.into(),
            name: format!("name-{id}"),
            hostname: format!("{id}-host"),
            main_network: main.into(),
            addresses: addresses
                .iter()
                .map(|(net, ip, aliases)| {
                    let aliases = aliases.iter().map(|a| (*a).to_owned()).collect();
                    ((*net).to_owned(), (ip.parse().unwrap(), aliases))
                })
                .collect(),
            addresses6: BTreeMap::new(),
            extra_hosts: Vec::new(),
        }
    }

    #[test]
    fn ipv6_addresses_are_listed_before_the_ipv4_ones_of_a_member() {
        let mut a = member("a", "six", &[("six", "10.1.0.2", &["web"])]);
        let mut b = member("b", "six", &[("six", "10.1.0.3", &[])]);
        a.addresses6
            .insert("six".into(), "fd00:1::2".parse().unwrap());
        b.addresses6
            .insert("six".into(), "fd00:1::3".parse().unwrap());
        let file = hosts_file(&a, &[a.clone(), b.clone()]);
        assert_eq!(
            file,
            format!(
                "{HEADER}10.1.0.2\ta-host name-a web\n\
                 fd00:1::2\ta-host name-a web\n\
                 fd00:1::3\tname-b b-host\n\
                 10.1.0.3\tname-b b-host\n"
            )
        );
    }

    const HEADER: &str = "127.0.0.1\tlocalhost\n\
                          ::1\tlocalhost ip6-localhost ip6-loopback\n\
                          fe00::0\tip6-localnet\n\
                          ff00::0\tip6-mcastprefix\n\
                          ff02::1\tip6-allnodes\n\
                          ff02::2\tip6-allrouters\n";

    #[test]
    fn lists_the_members_of_shared_networks_with_their_aliases_there() {
        let a = member(
            "a",
            "front",
            &[("front", "10.1.0.2", &["web"]), ("back", "10.2.0.2", &[])],
        );
        let b = member("b", "back", &[("back", "10.2.0.3", &["db", "store"])]);
        let c = member("c", "front", &[("front", "10.1.0.3", &[])]);
        // d shares no network with b.
        let d = member("d", "other", &[("other", "10.3.0.2", &["x"])]);
        let all = [a.clone(), b.clone(), c.clone(), d.clone()];
        assert_eq!(
            hosts_file(&a, &all),
            format!(
                "{HEADER}10.1.0.2\ta-host name-a web\n\
                 10.2.0.3\tname-b b-host db store\n\
                 10.1.0.3\tname-c c-host\n"
            )
        );
        assert_eq!(
            hosts_file(&b, &all),
            format!("{HEADER}10.2.0.3\tb-host name-b db store\n10.2.0.2\tname-a a-host\n")
        );
        assert_eq!(
            hosts_file(&d, &all),
            format!("{HEADER}10.3.0.2\td-host name-d x\n")
        );
    }

    #[test]
    fn add_host_entries_stay_and_a_member_without_address_has_no_own_line() {
        let mut a = member("a", "front", &[]);
        a.extra_hosts = vec![HostsEntry::new(Ipv4Addr::new(192, 0, 2, 1), ["gw.example"])];
        let text = hosts_file(&a, std::slice::from_ref(&a));
        assert_eq!(text, format!("{HEADER}192.0.2.1\tgw.example\n"));
    }

    #[test]
    fn rewriting_keeps_the_inode_and_drops_the_old_tail() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "a much longer old text\nwith two lines\n").unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        rewrite_in_place(&path, "short\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short\n");
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        // A container without its file yet is skipped, not created.
        rewrite_in_place(&dir.path().join("missing"), "x").unwrap();
        assert!(!dir.path().join("missing").exists());
    }
}
