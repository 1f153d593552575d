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
//! member's file. Containers that join one network at once share
//! refreshes: one that began after a change covers it (numbered
//! refreshes, see [`refresh_also`]), so N parallel starts cost a few
//! rounds of N writes rather than N rounds.
//!
//! The file is bind-mounted into the container from its directory, so it
//! is rewritten in place (a rename would leave the container on the old
//! inode): one `write` of the whole text from offset 0, then the length
//! cut; a reader in the container sees the old or the new text except in
//! that instant, and the file is tiny.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context;
use berth_net::{render_hosts, HostsEntry, Ipam, NetworkStore};
use berth_state::{ContainerRecord, ContainerStore, FileLock};
use nix::fcntl::{Flock, FlockArg};

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
///
/// Concurrent joins share refreshes: a refresh of a network that began
/// after the caller's change (its lease, its record) and has ended saw that
/// change and rewrote every member's file, so the caller has nothing left
/// to do there. Without that, N containers starting at once on one network
/// each rewrote all members' files in turn under the lock, N² writes and
/// record reads. The caller still returns only once its change is in every
/// member's file.
pub fn refresh_also(
    paths: &Paths,
    containers: &ContainerStore,
    networks: &[String],
    also: Option<&str>,
) -> anyhow::Result<()> {
    let networks: Vec<String> = networks
        .iter()
        .filter(|n| n.as_str() != crate::network::DEFAULT_NETWORK)
        .cloned()
        .collect();
    if networks.is_empty() {
        return Ok(());
    }
    // Read before waiting for the lock, after the caller's change.
    let seen = Generations::read(&paths.networks_dir().join(GENERATIONS_FILE));
    refresh_after(paths, containers, &networks, also, &seen)
}

/// [`refresh_also`] of the user-defined `networks` for a caller that
/// read `seen` after its change.
fn refresh_after(
    paths: &Paths,
    containers: &ContainerStore,
    networks: &[String],
    also: Option<&str>,
    seen: &Generations,
) -> anyhow::Result<()> {
    let dir = paths.networks_dir();
    let generations_path = dir.join(GENERATIONS_FILE);
    let lock_path = dir.join("hosts.lock");
    let _lock = FileLock::exclusive(&lock_path)
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let mut generations = Generations::read(&generations_path);
    let networks = match also {
        // The container that left is no member any more: only its own
        // refresh rewrites its file.
        Some(_) => networks.to_vec(),
        None => generations.not_refreshed_since(seen, networks),
    };
    if networks.is_empty() {
        return Ok(());
    }
    generations.begin(&networks);
    generations.write(&generations_path)?;
    rewrite_members(&dir, containers, &networks, also)?;
    generations.end(&networks);
    generations.write(&generations_path)
}

/// Under the hosts lock: rewrite the file of every container with an
/// address on one of `networks` (and of `also`), from the leases.
fn rewrite_members(
    dir: &Path,
    containers: &ContainerStore,
    networks: &[String],
    also: Option<&str>,
) -> anyhow::Result<()> {
    let all_networks = NetworkStore::new(dir).list()?;
    // owner -> network -> address, over every network of this root.
    let mut leases: BTreeMap<String, BTreeMap<String, Ipv4Addr>> = BTreeMap::new();
    let mut leases6: BTreeMap<String, BTreeMap<String, Ipv6Addr>> = BTreeMap::new();
    {
        let txn = Ipam::new(dir.join("ipam")).transaction()?;
        for network in &all_networks {
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
    if let Some(id) = also {
        leases.entry(id.to_owned()).or_default();
    }
    let affected = |id: &str, by_network: &BTreeMap<String, Ipv4Addr>| {
        also == Some(id) || networks.iter().any(|n| by_network.contains_key(n))
    };
    // The files to write name the members of every network an affected
    // container is on: only their records are read (not, say, those of
    // the hundreds on the default network beside them).
    let relevant: BTreeSet<&str> = leases
        .iter()
        .filter(|(id, by_network)| affected(id, by_network))
        .flat_map(|(_, by_network)| by_network.keys().map(String::as_str))
        .collect();
    let no_leases6 = BTreeMap::new();
    let members: Vec<HostsMember> = leases
        .iter()
        .filter(|(id, by_network)| {
            affected(id, by_network) || by_network.keys().any(|n| relevant.contains(n.as_str()))
        })
        .filter_map(|(id, by_network)| {
            let record = containers.load(id).ok()?;
            Some(member(
                &record,
                by_network,
                leases6.get(id).unwrap_or(&no_leases6),
            ))
        })
        .collect();
    let mut first_error = None;
    for me in &members {
        let is_affected = networks.iter().any(|n| me.addresses.contains_key(n));
        if !is_affected && also != Some(me.id.as_str()) {
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

/// The file, beside `hosts.lock`, that numbers the refreshes of each
/// network (see [`Generations`]).
const GENERATIONS_FILE: &str = "hosts.generations";

/// Which refresh of each network began last and which ended last: refresh
/// `n` of a network is begun (recorded) before it reads any lease or
/// record, and ended once every member's file is written. A caller that
/// read the generations after its change, saw `started = s`, and then
/// finds `completed > s` under the lock knows that a refresh begun after
/// its change has ended.
///
/// The file is rewritten in place (a new file per write would allocate an
/// inode twice per refresh, which ext4 pays for) under an exclusive
/// `flock` of it, and read under a shared one: readers see the old or the
/// new numbers, never a torn text. Not synced: a file lost with the
/// machine only means one refresh more.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Generations {
    started: BTreeMap<String, u64>,
    completed: BTreeMap<String, u64>,
}

impl Generations {
    /// The numbers in `path`; none when it is missing or unreadable (the
    /// next refresh then runs in full).
    fn read(path: &Path) -> Self {
        let read = || -> Option<Self> {
            let file = std::fs::File::open(path).ok()?;
            let mut file = Flock::lock(file, FlockArg::LockShared).ok()?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).ok()?;
            serde_json::from_slice(&bytes).ok()
        };
        read().unwrap_or_default()
    }

    /// Replace the numbers in `path` (created 0600 if missing).
    fn write(&self, path: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(self)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let file = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| std::io::Error::from(errno))
            .with_context(|| format!("cannot lock {}", path.display()))?;
        file.write_all_at(&bytes, 0)
            .and_then(|()| file.set_len(bytes.len() as u64))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The networks of `wanted` for which no refresh begun after `seen`
    /// has ended.
    fn not_refreshed_since(&self, seen: &Generations, wanted: &[String]) -> Vec<String> {
        let get = |map: &BTreeMap<String, u64>, network: &str| map.get(network).copied();
        wanted
            .iter()
            .filter(|network| {
                get(&self.completed, network).unwrap_or(0)
                    <= get(&seen.started, network).unwrap_or(0)
            })
            .cloned()
            .collect()
    }

    /// Number a new refresh of `networks`, after every earlier one.
    fn begin(&mut self, networks: &[String]) {
        for network in networks {
            let last = self
                .started
                .get(network)
                .copied()
                .unwrap_or(0)
                .max(self.completed.get(network).copied().unwrap_or(0));
            self.started.insert(network.clone(), last + 1);
        }
    }

    /// The refresh [`Generations::begin`] numbered has ended.
    fn end(&mut self, networks: &[String]) {
        for network in networks {
            if let Some(started) = self.started.get(network).copied() {
                self.completed.insert(network.clone(), started);
            }
        }
    }
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

    /// A store with containers `ids` on network `front` (10.1.0.0/24),
    /// each with a hosts file saying "stale".
    fn fixture(ids: &[&str]) -> (tempfile::TempDir, Paths, ContainerStore) {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path().to_owned());
        let containers = paths.containers().unwrap();
        let request = berth_net::NetworkRequest {
            name: "front".into(),
            driver: None,
            subnet: Some("10.1.0.0/24".into()),
            gateway: None,
            internal: false,
            labels: BTreeMap::new(),
            ip_range: None,
            ipv6: false,
            ipv6_subnet: None,
            in_use: Vec::new(),
        };
        let network = NetworkStore::new(paths.networks_dir())
            .create(&request)
            .unwrap();
        let mut txn = Ipam::new(paths.networks_dir().join("ipam"))
            .transaction()
            .unwrap();
        for id in ids {
            let mut record =
                ContainerRecord::new((*id).to_owned(), format!("name-{id}"), "busybox".into());
            record.hostname = format!("{id}-host");
            record.network_mode = "front".into();
            containers.create(&record).unwrap();
            std::fs::write(containers.container_dir(id).join("hosts"), "stale\n").unwrap();
            txn.allocate(&network.pool(), id).unwrap();
        }
        txn.commit().unwrap();
        (root, paths, containers)
    }

    fn hosts_of(containers: &ContainerStore, id: &str) -> String {
        std::fs::read_to_string(containers.container_dir(id).join("hosts")).unwrap()
    }

    #[test]
    fn a_refresh_names_every_member_in_every_members_file() {
        let ids = ["a".repeat(64), "b".repeat(64)];
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let (_root, paths, containers) = fixture(&ids);
        refresh(&paths, &containers, &["front".to_owned()]).unwrap();
        for (me, other) in [(ids[0], ids[1]), (ids[1], ids[0])] {
            let text = hosts_of(&containers, me);
            assert!(text.contains(&format!("name-{other}")), "{text}");
            assert!(text.contains(&format!("{me}-host")), "{text}");
        }
    }

    #[test]
    fn a_refresh_begun_after_the_callers_change_covers_it() {
        let ids = ["a".repeat(64), "b".repeat(64)];
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let (_root, paths, containers) = fixture(&ids);
        let front = ["front".to_owned()];
        let path = paths.networks_dir().join(GENERATIONS_FILE);
        // The caller read the numbers after its change; another process's
        // refresh then began, and ended.
        let seen = Generations::read(&path);
        refresh(&paths, &containers, &front).unwrap();
        std::fs::write(containers.container_dir(ids[0]).join("hosts"), "stale\n").unwrap();
        refresh_after(&paths, &containers, &front, None, &seen).unwrap();
        assert_eq!(hosts_of(&containers, ids[0]), "stale\n", "refreshed again");
        // A caller whose change came after that refresh began is not covered.
        refresh(&paths, &containers, &front).unwrap();
        assert!(hosts_of(&containers, ids[0]).contains(&format!("name-{}", ids[1])));
        // Nor is a container that left (`also`): its own file must go.
        std::fs::write(containers.container_dir(ids[0]).join("hosts"), "stale\n").unwrap();
        refresh_after(&paths, &containers, &front, Some(ids[0]), &seen).unwrap();
        assert_ne!(hosts_of(&containers, ids[0]), "stale\n");
    }

    #[test]
    fn generations_tell_which_refreshes_began_after_a_read() {
        let mut now = Generations::default();
        let front = ["front".to_owned()];
        let seen = now.clone();
        assert_eq!(now.not_refreshed_since(&seen, &front), front);
        now.begin(&front);
        // Begun after `seen` but not ended: not yet covered.
        assert_eq!(now.not_refreshed_since(&seen, &front), front);
        let during = now.clone();
        now.end(&front);
        assert!(now.not_refreshed_since(&seen, &front).is_empty());
        // Read while that refresh ran: it may have read before the change.
        assert_eq!(now.not_refreshed_since(&during, &front), front);
        // A refresh that died half-way is numbered past.
        now.begin(&front);
        now.begin(&front);
        assert_eq!(now.started["front"], 3);
        now.end(&front);
        assert!(now.not_refreshed_since(&during, &front).is_empty());
    }

    #[test]
    fn generations_are_rewritten_in_place_and_read_back() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(GENERATIONS_FILE);
        assert_eq!(Generations::read(&path), Generations::default());
        let mut long = Generations::default();
        for i in 0..20 {
            long.begin(&[format!("network-{i}")]);
        }
        long.write(&path).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        let mut short = Generations::default();
        short.begin(&["one".to_owned()]);
        short.write(&path).unwrap();
        assert_eq!(Generations::read(&path), short);
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(Generations::read(&path), Generations::default());
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
