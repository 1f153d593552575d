//! Privileged tests of the netlink, firewall and driver layers. Each test
//! builds its own world out of throw-away network namespaces (a "host", a
//! "container", a "client", an "upstream"), created by `unshare` on a
//! short-lived thread and destroyed when their last fd closes, so the real
//! host's links, routes, sysctls and iptables rules are never touched (and
//! every test checks that at the end). Traffic only flows between those
//! namespaces. Without root the tests print why they skip.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::Duration;

use berth_net::netlink::VethPeer;
use berth_net::netns::run_in_netns;
use berth_net::{
    AttachRequest, BridgeDriver, DriverError, Firewall, FirewallKind, HostFirewall, Ipam,
    IpamError, IptablesFirewall, MacAddr, Netlink, NetlinkError, NetworkConfig, NetworkDriver,
    NetworkRequest, NetworkStore, NftablesFirewall, PortForward, PortMapping, Protocol,
};
use ipnet::Ipv4Net;
use nix::sched::{unshare, CloneFlags};

const TIMEOUT: Duration = Duration::from_secs(5);

fn skip_unless_root(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return false;
    }
    eprintln!("skipping {test}: needs root (network namespaces, netlink, iptables)");
    true
}

/// What the real host looks like; must be the same after every test.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    links: BTreeSet<String>,
    ip_forward: String,
    iptables: String,
    legacy: String,
    /// berth's lines of `nft list ruleset` (none when there is no nft).
    nftables: Vec<String>,
}

impl HostState {
    /// Taken from the test's main thread, which stays in the host's
    /// network namespace.
    fn capture() -> Self {
        let links = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        HostState {
            links,
            ip_forward: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
            iptables: iptables_save(),
            legacy: Command::new("iptables-legacy-save")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect(),
            nftables: Command::new("nft")
                .args(["list", "ruleset"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("berth"))
                .map(str::to_owned)
                .collect(),
        }
    }
}

fn iptables_save() -> String {
    saved_rules("iptables-save")
}

fn saved_rules(program: &str) -> String {
    let output = Command::new(program).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A new, empty network namespace, alive as long as the fd.
fn new_netns() -> OwnedFd {
    thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).unwrap();
        OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net").unwrap())
    })
    .join()
    .unwrap()
}

/// Run `f` in `netns` (on its own thread).
fn in_ns<T: Send>(netns: &OwnedFd, f: impl FnOnce() -> T + Send) -> T {
    run_in_netns(netns.as_fd(), f).unwrap()
}

/// A namespace to play the host in, checked to be a fresh one as seen
/// through /proc/sys too (per-thread), so writing its sysctls is safe.
fn fake_host() -> OwnedFd {
    let host = new_netns();
    let conf: BTreeSet<String> = in_ns(&host, || {
        std::fs::read_dir("/proc/sys/net/ipv4/conf")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    });
    assert_eq!(
        conf,
        ["all", "default", "lo"].map(String::from).into(),
        "/proc/sys/net does not follow the thread's namespace; refusing to go on"
    );
    in_ns(&host, || {
        Netlink::connect().unwrap().set_up_by_name("lo").unwrap();
        // A new namespace may inherit the host's forwarding setting: start
        // every fake host with it off, whatever the real host has.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "0\n").unwrap();
    });
    host
}

fn net(text: &str) -> Ipv4Net {
    text.parse().unwrap()
}

/// A veth from the current namespace (`host_name`, `host_address`) to
/// `eth0` in `other` (`other_address`, default route via the host side).
fn wire(host_name: &str, host_address: &str, other: &OwnedFd, other_address: &str) {
    let mut nl = Netlink::connect().unwrap();
    let peer = VethPeer {
        name: "eth0",
        netns: Some(other.as_fd()),
        mac: None,
    };
    nl.create_veth(host_name, &peer, None).unwrap();
    let index = nl.link_index(host_name).unwrap();
    nl.add_address(index, net(host_address)).unwrap();
    nl.set_up(index).unwrap();
    let mut inside = Netlink::connect_in(other.as_fd(), "test").unwrap();
    let eth0 = inside.link_index("eth0").unwrap();
    inside.add_address(eth0, net(other_address)).unwrap();
    inside.set_up(eth0).unwrap();
    inside.set_up_by_name("lo").unwrap();
    inside
        .add_default_route(net(host_address).addr(), eth0)
        .unwrap();
}

/// A TCP server in `netns` that answers each of `count` connections with
/// "pong" and reports who connected.
fn serve(netns: &OwnedFd, addr: &str, count: usize) -> thread::JoinHandle<Vec<SocketAddr>> {
    let addr: SocketAddr = addr.parse().unwrap();
    let listener = in_ns(netns, || TcpListener::bind(addr)).unwrap();
    thread::spawn(move || {
        (0..count)
            .map(|_| {
                let (mut stream, peer) = listener.accept().unwrap();
                stream.write_all(b"pong").unwrap();
                peer
            })
            .collect()
    })
}

/// Connect (from the calling thread's namespace) and read the answer.
fn ping(addr: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr.parse().unwrap(), TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn bridge_veth_addresses_routes_and_traffic() {
    if skip_unless_root("bridge_veth_addresses_routes_and_traffic") {
        return;
    }
    let before = HostState::capture();
    let host = fake_host();
    let container = new_netns();
    in_ns(&host, || {
        let mut nl = Netlink::connect().unwrap();
        let (bridge, created) = nl.create_bridge("br-test").unwrap();
        assert!(created);
        assert_eq!(nl.create_bridge("br-test").unwrap(), (bridge, false));
        assert!(nl.add_address(bridge, net("10.99.0.1/24")).unwrap());
        assert!(!nl.add_address(bridge, net("10.99.0.1/24")).unwrap());
        nl.set_up(bridge).unwrap();

        let mac: MacAddr = "02:42:0a:63:00:02".parse().unwrap();
        let peer = VethPeer {
            name: "eth0",
            netns: Some(container.as_fd()),
            mac: Some(mac),
        };
        nl.create_veth("vbtest", &peer, Some(bridge)).unwrap();
        nl.set_up_by_name("vbtest").unwrap();
        let host_end = nl.require_link("vbtest").unwrap();
        assert_eq!(host_end.master, Some(bridge));
        assert_eq!(host_end.kind.as_deref(), Some("veth"));
        assert!(host_end.up);
        assert!(
            nl.link("eth0").unwrap().is_none(),
            "the peer went straight into the container"
        );
        assert!(matches!(
            nl.create_bridge("vbtest"),
            Err(NetlinkError::WrongKind { .. })
        ));

        let mut inside = Netlink::connect_in(container.as_fd(), "test container").unwrap();
        let eth0 = inside.require_link("eth0").unwrap();
        assert_eq!(eth0.mac, Some(mac));
        inside.add_address(eth0.index, net("10.99.0.2/24")).unwrap();
        inside.set_up(eth0.index).unwrap();
        inside.set_up_by_name("lo").unwrap();
        assert!(inside
            .add_default_route(Ipv4Addr::new(10, 99, 0, 1), eth0.index)
            .unwrap());
        assert!(!inside
            .add_default_route(Ipv4Addr::new(10, 99, 0, 1), eth0.index)
            .unwrap());
        // Rename works on a down link; errors name the link and namespace.
        let err = inside.link_index("nosuch0").unwrap_err();
        assert!(err.to_string().contains("nosuch0"), "{err}");
        assert!(err.to_string().contains("test container"), "{err}");

        // Host -> container over the bridge.
        let server = serve(&container, "10.99.0.2:7000", 1);
        assert_eq!(ping("10.99.0.2:7000").unwrap(), "pong");
        let peers = server.join().unwrap();
        assert_eq!(peers[0].ip().to_string(), "10.99.0.1");

        // Container -> an address of the host outside its subnet: needs
        // the default route.
        let lo = nl.link_index("lo").unwrap();
        nl.add_address(lo, net("10.98.0.1/32")).unwrap();
        let server = serve(&host, "10.98.0.1:7001", 1);
        assert_eq!(
            in_ns(&container, || ping("10.98.0.1:7001")).unwrap(),
            "pong"
        );
        assert_eq!(server.join().unwrap()[0].ip().to_string(), "10.99.0.2");

        // A link created here and moved over, then renamed there.
        nl.create_veth(
            "vbmove",
            &VethPeer {
                name: "vbmovepeer",
                netns: None,
                mac: None,
            },
            None,
        )
        .unwrap();
        let moved = nl.link_index("vbmovepeer").unwrap();
        nl.move_to_netns(moved, container.as_fd()).unwrap();
        assert!(nl.link("vbmovepeer").unwrap().is_none());
        let mut inside = Netlink::connect_in(container.as_fd(), "test container").unwrap();
        let index = inside.link_index("vbmovepeer").unwrap();
        inside.rename(index, "eth1").unwrap();
        inside.set_up(index).unwrap();
        assert!(inside.require_link("eth1").unwrap().up);

        // Deleting one end removes the pair; deleting again is a no-op.
        assert!(nl.delete_link("vbtest").unwrap());
        assert!(!nl.delete_link("vbtest").unwrap());
        assert!(inside.link("eth0").unwrap().is_none());
        assert!(nl.delete_link("br-test").unwrap());
    });
    drop((host, container));
    assert_eq!(HostState::capture(), before);
}

fn test_network(name: &str, subnet: &str, bridge: &str) -> NetworkConfig {
    let subnet = net(subnet);
    NetworkConfig {
        name: name.to_owned(),
        id: "f".repeat(64),
        driver: "bridge".to_owned(),
        subnet,
        gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
        bridge: bridge.to_owned(),
        internal: false,
        labels: Default::default(),
        ip_range: None,
        ipv6_subnet: None,
        ipv6_gateway: None,
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn iptables_rules_are_idempotent_tagged_and_fully_removed() {
    if skip_unless_root("iptables_rules_are_idempotent_tagged_and_fully_removed") {
        return;
    }
    let before = HostState::capture();
    // Whichever backend `iptables` is, and both explicit ones when present.
    for (program, save) in [
        ("iptables", "iptables-save"),
        ("iptables-nft", "iptables-nft-save"),
        ("iptables-legacy", "iptables-legacy-save"),
    ] {
        let found = Command::new(program)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("{program} not found; skipping it");
            continue;
        }
        firewall_round_trip(program, save);
    }
    assert_eq!(HostState::capture(), before);
}

fn firewall_round_trip(program: &str, save: &str) {
    let host = fake_host();
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().to_owned();
    let iptables_save = || saved_rules(save);
    in_ns(&host, move || {
        let firewall = IptablesFirewall::with_program(program, &lock_dir);
        let network = test_network("fwnet", "10.88.0.0/24", "br-fwtest");
        let other = test_network("fwother", "10.87.0.0/24", "br-fwother");
        let forward = PortForward {
            owner: "c0ffee".to_owned(),
            network: "fwnet".to_owned(),
            bridge: "br-fwtest".to_owned(),
            container_ip: Ipv4Addr::new(10, 88, 0, 2),
            mapping: PortMapping::new(8080, 80, Protocol::Tcp),
        };
        for _ in 0..2 {
            firewall.setup_network(&network).unwrap();
            firewall.setup_network(&other).unwrap();
            firewall.add_port_forward(&forward).unwrap();
        }
        let saved = iptables_save();
        for rule in [
            "-A POSTROUTING -m comment --comment berth -j BERTH-POSTROUTING",
            "-A PREROUTING ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -m comment --comment berth -j BERTH-DNAT",
            "-A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment berth -j BERTH-DNAT",
            "-A FORWARD -m comment --comment berth -j BERTH-FORWARD",
            "-A BERTH-POSTROUTING -s 10.88.0.0/24 ! -o br-fwtest -m comment --comment \"berth:fwnet\" -j MASQUERADE",
            "-A BERTH-FORWARD -o br-fwtest -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"berth:fwnet\" -j ACCEPT",
            "-A BERTH-FORWARD -i br-fwtest -m comment --comment \"berth:fwnet\" -j ACCEPT",
            "-A BERTH-POSTROUTING -s 127.0.0.0/8 -o br-fwtest -m comment --comment \"berth:fwnet\" -j MASQUERADE",
            "-A BERTH-POSTROUTING -s 10.88.0.0/24 -o br-fwtest -m conntrack --ctstate DNAT -m comment --comment \"berth:fwnet\" -j MASQUERADE",
            "-A PREROUTING -d 127.0.0.0/8 -i br-fwtest -m comment --comment \"berth:fwnet\" -j DROP",
            "-A BERTH-DNAT -p tcp -m tcp --dport 8080 -m comment --comment \"berth:c0ffee\" -j DNAT --to-destination 10.88.0.2:80",
            "-A BERTH-FORWARD -d 10.88.0.2/32 -o br-fwtest -p tcp -m tcp --dport 80 -m comment --comment \"berth:c0ffee\" -j ACCEPT",
        ] {
            assert_eq!(count(&saved, rule), 1, "{rule}\nin\n{saved}");
        }
        // Every rule berth added carries a berth comment.
        for line in saved
            .lines()
            .filter(|l| l.starts_with("-A ") && l.contains("BERTH"))
        {
            assert!(
                line.contains("--comment berth ") || line.contains("--comment \"berth:"),
                "{line}"
            );
        }

        firewall.remove_port_forward(&forward).unwrap();
        firewall.remove_port_forward(&forward).unwrap();
        let saved = iptables_save();
        assert_eq!(count(&saved, "berth:c0ffee"), 0, "{saved}");
        firewall.teardown_network(&network).unwrap();
        let saved = iptables_save();
        assert_eq!(count(&saved, "berth:fwnet"), 0, "{saved}");
        assert_eq!(
            count(&saved, "berth:fwother"),
            6,
            "other network kept\n{saved}"
        );
        assert!(
            saved.contains(":BERTH-FORWARD"),
            "chains stay while a network is left"
        );
        firewall.teardown_network(&other).unwrap();
        let saved = iptables_save();
        assert!(!saved.to_lowercase().contains("berth"), "{saved}");
        // Teardown of what is gone already is fine.
        firewall.teardown_network(&other).unwrap();
        firewall.remove_port_forward(&forward).unwrap();

        // The one-batch paths: two ports of a container added unchecked
        // (`absent`) in one iptables-restore, removed in one.
        firewall.setup_network(&network).unwrap();
        let udp = PortForward {
            mapping: "5353:53/udp".parse().unwrap(),
            ..forward.clone()
        };
        let both = [forward.clone(), udp.clone()];
        firewall.add_port_forwards(&both, true).unwrap();
        let saved = iptables_save();
        assert_eq!(count(&saved, "berth:c0ffee"), 4, "{saved}");
        assert_eq!(count(&saved, "--dport 5353 "), 1, "{saved}");
        // Not absent: checked, nothing doubled.
        firewall.add_port_forwards(&both, false).unwrap();
        assert_eq!(count(&iptables_save(), "berth:c0ffee"), 4);
        firewall.remove_port_forwards(&both).unwrap();
        assert_eq!(count(&iptables_save(), "berth:c0ffee"), 0);

        // A rule gone behind berth's back (or never added: a crash between
        // the steps) makes the batch fail; each rule is then checked.
        firewall.add_port_forwards(&both, true).unwrap();
        let dnat = &berth_net::firewall::port_forward_rules(&udp)[0];
        let mut delete = vec!["-t".to_owned(), "nat".to_owned()];
        delete.extend(dnat.args(berth_net::firewall::RuleOp::Delete)[3..].to_vec());
        let status = Command::new(program).args(&delete).status().unwrap();
        assert!(status.success());
        assert_eq!(count(&iptables_save(), "berth:c0ffee"), 3);
        firewall.remove_port_forwards(&both).unwrap();
        assert_eq!(count(&iptables_save(), "berth:c0ffee"), 0);
        firewall.teardown_network(&network).unwrap();
        assert!(!iptables_save().to_lowercase().contains("berth"));
    });
}

fn driver(dir: &std::path::Path) -> BridgeDriver {
    BridgeDriver::with_parts(
        Ipam::new(dir.join("ipam")),
        IptablesFirewall::new(dir),
        PathBuf::from("/proc/sys"),
    )
}

#[test]
fn driver_dnat_masquerade_and_cleanup() {
    if skip_unless_root("driver_dnat_masquerade_and_cleanup") {
        return;
    }
    let before = HostState::capture();
    let host = fake_host();
    let container = new_netns();
    let second = new_netns();
    let client = new_netns();
    let upstream = new_netns();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_owned();
    in_ns(&host, || {
        let store = NetworkStore::new(state.join("networks"));
        let network = store
            .create(&NetworkRequest {
                name: "e2e".into(),
                subnet: Some("10.77.0.0/24".into()),
                ..Default::default()
            })
            .unwrap();
        let driver = driver(&state);
        let report = driver.setup(&network).unwrap();
        assert!(report.ip_forward_enabled && report.bridge_created);
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
            "1\n"
        );
        assert_eq!(driver.ensure(&network).unwrap(), None, "fast path");
        // A bridge without route_localnet (set up by an older berth) is
        // set up again, which adds what is missing.
        let route_localnet = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", network.bridge);
        std::fs::write(&route_localnet, "0\n").unwrap();
        assert!(driver.ensure(&network).unwrap().is_some());
        assert_eq!(std::fs::read_to_string(&route_localnet).unwrap(), "1\n");
        assert_eq!(driver.ensure(&network).unwrap(), None, "fast path again");

        // The outside world: a client and an upstream host.
        wire("vclient", "192.0.2.1/24", &client, "192.0.2.2/24");
        wire("vupstream", "198.51.100.1/24", &upstream, "198.51.100.2/24");
        // The upstream host has no route back to the containers' subnet:
        // only MASQUERADE lets it answer.

        let ports = ["8080:80/tcp".parse::<PortMapping>().unwrap()];
        let started = std::time::Instant::now();
        let endpoint = driver
            .attach(&network, "c1c1c1", container.as_fd(), &ports)
            .unwrap();
        eprintln!("attach with one port took {:?}", started.elapsed());
        assert_eq!(endpoint.ip, Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(endpoint.gateway, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(endpoint.prefix_len, 24);
        assert_eq!(endpoint.host_veth, "vbc1c1c1");
        assert_eq!(endpoint.mac.to_string(), "02:42:0a:4d:00:02");
        let inside = in_ns(&container, || {
            Netlink::connect().unwrap().require_link("eth0").unwrap()
        });
        assert_eq!(inside.mac, Some(endpoint.mac));
        assert!(inside.up);

        // DNAT from an outside client to the host's address.
        let server = serve(&container, "0.0.0.0:80", 5);
        assert_eq!(in_ns(&client, || ping("192.0.2.1:8080")).unwrap(), "pong");
        // From the host itself, through its own non-loopback addresses,
        // and through loopback.
        assert_eq!(ping("198.51.100.1:8080").unwrap(), "pong");
        assert_eq!(ping("10.77.0.1:8080").unwrap(), "pong");
        assert_eq!(ping("127.0.0.1:8080").unwrap(), "pong");
        // The container itself through the host's address (hairpin).
        assert_eq!(
            in_ns(&container, || ping("198.51.100.1:8080")).unwrap(),
            "pong"
        );
        let peers = server.join().unwrap();
        let seen: Vec<String> = peers.iter().map(|p| p.ip().to_string()).collect();
        // The client as itself; the host's own addresses; loopback and the
        // hairpin as the bridge's address.
        assert_eq!(
            seen,
            [
                "192.0.2.2",
                "198.51.100.1",
                "10.77.0.1",
                "10.77.0.1",
                "10.77.0.1"
            ]
        );
        // route_localnet on the bridge only.
        let route_localnet = |interface: &str| {
            std::fs::read_to_string(format!(
                "/proc/sys/net/ipv4/conf/{interface}/route_localnet"
            ))
            .unwrap()
        };
        assert_eq!(route_localnet(&network.bridge), "1\n");
        assert_eq!(route_localnet("vclient"), "0\n");

        // MASQUERADE: upstream sees the host's address, not the container's.
        let server = serve(&upstream, "198.51.100.2:9000", 1);
        assert_eq!(
            in_ns(&container, || ping("198.51.100.2:9000")).unwrap(),
            "pong"
        );
        assert_eq!(server.join().unwrap()[0].ip().to_string(), "198.51.100.1");

        // A second container cannot take the same host port, and the
        // refusal consumes nothing.
        let err = driver
            .attach(&network, "c2c2c2", second.as_fd(), &ports)
            .unwrap_err();
        assert!(
            matches!(
                err,
                DriverError::Ipam(IpamError::PortTaken { port: 8080, .. })
            ),
            "{err:?}"
        );
        assert_eq!(driver.ipam().leases("e2e").unwrap().len(), 1);
        assert!(in_ns(&second, || Netlink::connect()
            .unwrap()
            .link("eth0")
            .unwrap())
        .is_none());

        // A network in use cannot be torn down.
        assert!(driver.teardown(&network).is_err());

        // Detach: rules, veth, lease and port all gone; port free again.
        let started = std::time::Instant::now();
        let report = driver.detach("c1c1c1").unwrap();
        eprintln!("detach with one port took {:?}", started.elapsed());
        assert!(report.veth_deleted);
        assert_eq!(report.addresses, [("e2e".to_owned(), endpoint.ip)]);
        assert_eq!(report.ports.len(), 1);
        assert_eq!(count(&iptables_save(), "berth:c1c1c1"), 0);
        assert!(Netlink::connect()
            .unwrap()
            .link("vbc1c1c1")
            .unwrap()
            .is_none());
        assert_eq!(driver.detach("c1c1c1").unwrap(), Default::default());
        let started = std::time::Instant::now();
        let quiet = new_netns();
        driver
            .attach(&network, "c3c3c3", quiet.as_fd(), &[])
            .unwrap();
        eprintln!("attach without ports took {:?}", started.elapsed());
        let started = std::time::Instant::now();
        driver.detach("c3c3c3").unwrap();
        eprintln!("detach without ports took {:?}", started.elapsed());
        drop(quiet);
        let endpoint2 = driver
            .attach(&network, "c2c2c2", second.as_fd(), &ports)
            .unwrap();
        let server = serve(&second, "0.0.0.0:80", 1);
        assert_eq!(in_ns(&client, || ping("192.0.2.1:8080")).unwrap(), "pong");
        server.join().unwrap();

        // Crash cleanup: the container's namespace is gone (its veth with
        // it); detach from the id alone still frees everything.
        drop(second);
        driver.detach("c2c2c2").unwrap();
        let saved = iptables_save();
        assert_eq!(count(&saved, "berth:c2c2c2"), 0, "{saved}");
        assert!(driver.ipam().leases("e2e").unwrap().is_empty());
        assert!(driver.ipam().port_forwards("c2c2c2").unwrap().is_empty());
        let _ = endpoint2;

        // Network teardown: no berth rule, chain or bridge left.
        driver.teardown(&network).unwrap();
        store.remove("e2e").unwrap();
        let saved = iptables_save();
        assert!(!saved.to_lowercase().contains("berth"), "{saved}");
        assert!(Netlink::connect()
            .unwrap()
            .link(&network.bridge)
            .unwrap()
            .is_none());
    });
    drop((host, container, client, upstream));
    assert_eq!(HostState::capture(), before);
}

#[test]
fn parallel_attaches_get_distinct_addresses_and_leave_nothing() {
    if skip_unless_root("parallel_attaches_get_distinct_addresses_and_leave_nothing") {
        return;
    }
    let before = HostState::capture();
    let host = fake_host();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_owned();
    let network = test_network("par", "10.66.0.0/24", "br-partest");
    in_ns(&host, || driver(&state).setup(&network).unwrap());
    let links_before: BTreeSet<String> = in_ns(&host, link_names);

    let namespaces: Vec<OwnedFd> = (0..30).map(|_| new_netns()).collect();
    let endpoints: Vec<_> = thread::scope(|scope| {
        let handles: Vec<_> = namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let (host, state, network) = (&host, &state, &network);
                scope.spawn(move || {
                    in_ns(host, || {
                        driver(state)
                            .attach(network, &format!("p{i:02}"), ns.as_fd(), &[])
                            .unwrap()
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let addresses: BTreeSet<_> = endpoints.iter().map(|e| e.ip).collect();
    assert_eq!(addresses.len(), 30);

    in_ns(&host, || {
        let driver = driver(&state);
        for endpoint in &endpoints {
            driver.detach(&endpoint.container_id).unwrap();
        }
        assert!(driver.ipam().leases("par").unwrap().is_empty());
        assert_eq!(link_names(), links_before);
        driver.teardown(&network).unwrap();
        assert!(!iptables_save().to_lowercase().contains("berth"));
    });
    drop((host, namespaces));
    assert_eq!(HostState::capture(), before);
}

#[test]
fn crash_between_attach_steps_then_reattach_and_detach_after_the_namespace_died() {
    if skip_unless_root(
        "crash_between_attach_steps_then_reattach_and_detach_after_the_namespace_died",
    ) {
        return;
    }
    let before = HostState::capture();
    let host = fake_host();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_owned();
    let network = test_network("crash", "10.55.0.0/24", "br-crashtest");
    in_ns(&host, || {
        let driver = driver(&state);
        driver.setup(&network).unwrap();
        let links_before = link_names();
        let ports = ["8080:80/tcp".parse::<PortMapping>().unwrap()];

        // A first attempt got as far as the lease, the veth and the rules,
        // then berth died (simulated: the steps done by hand).
        let container = new_netns();
        let ip = driver.ipam().allocate(&network.pool(), "dead01").unwrap();
        let forward = PortForward {
            owner: "dead01".to_owned(),
            network: network.name.clone(),
            bridge: network.bridge.clone(),
            container_ip: ip,
            mapping: ports[0],
        };
        let mut txn = driver.ipam().transaction().unwrap();
        txn.reserve_ports(std::slice::from_ref(&forward)).unwrap();
        txn.commit().unwrap();
        let mut nl = Netlink::connect().unwrap();
        let bridge = nl.link_index(&network.bridge).unwrap();
        let peer = VethPeer {
            name: "eth0",
            netns: Some(container.as_fd()),
            mac: None,
        };
        nl.create_veth("vbdead01", &peer, Some(bridge)).unwrap();
        driver
            .firewall()
            .add_port_forwards(std::slice::from_ref(&forward), true)
            .unwrap();

        // The retry (same id, same namespace) replaces the veth and finds
        // the rules already there: nothing doubled.
        let endpoint = driver
            .attach(&network, "dead01", container.as_fd(), &ports)
            .unwrap();
        assert_eq!(endpoint.ip, ip);
        assert_eq!(count(&iptables_save(), "berth:dead01"), 2);
        let eth0 = in_ns(&container, || {
            Netlink::connect().unwrap().require_link("eth0").unwrap()
        });
        assert_eq!(eth0.mac, Some(endpoint.mac), "the new pair");

        // Detach while the container's namespace lives: the veth is
        // deleted at once.
        let report = driver.detach("dead01").unwrap();
        assert!(report.veth_deleted && !report.veth_left_to_kernel);
        assert_eq!(link_names(), links_before);
        assert_eq!(count(&iptables_save(), "berth:dead01"), 0);

        // The usual end: the container (its namespace) is gone before the
        // detach. When the kernel is already tearing the namespace down it
        // deletes the pair with it, and detach leaves it to it; the rules
        // and leases are detach's job either way. How soon the namespace
        // dies varies (the kernel frees the netlink socket attach opened
        // inside after an RCU grace period), so a few rounds.
        let mut left_to_kernel = 0;
        let mut slowest = Duration::ZERO;
        for round in 0..8 {
            let container = new_netns();
            driver
                .attach(&network, "gone01", container.as_fd(), &ports)
                .unwrap();
            assert!(link_names().contains("vbgone01"));
            drop(container);
            thread::sleep(Duration::from_millis(round));
            let report = driver.detach("gone01").unwrap();
            let detached = std::time::Instant::now();
            left_to_kernel += usize::from(report.veth_left_to_kernel);
            assert_eq!(report.ports.len(), 1);
            assert!(driver.ipam().leases("crash").unwrap().is_empty());
            while link_names().contains("vbgone01") {
                assert!(
                    detached.elapsed() < Duration::from_secs(2),
                    "veth left behind"
                );
                thread::sleep(Duration::from_micros(200));
            }
            slowest = slowest.max(detached.elapsed());
        }
        eprintln!(
            "detach after the namespace died: {left_to_kernel} of 8 veths left to the kernel; \
             the last gone {slowest:?} after detach returned"
        );
        assert_eq!(count(&iptables_save(), "berth:gone01"), 0);
        assert_eq!(link_names(), links_before);
        // Attaching the same id again right away works whether or not the
        // kernel is done with the old pair.
        let again = new_netns();
        driver
            .attach(&network, "gone01", again.as_fd(), &[])
            .unwrap();
        driver.detach("gone01").unwrap();
        drop(again);
        assert_eq!(driver.detach("gone01").unwrap(), Default::default());

        driver.teardown(&network).unwrap();
        assert!(!iptables_save().to_lowercase().contains("berth"));
    });
    drop(host);
    assert_eq!(HostState::capture(), before);
}

/// Interface names in the calling thread's network namespace
/// (/proc/thread-self/net/dev follows the thread, not the process).
fn link_names() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/thread-self/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn a_bridge_marked_by_another_owner_is_neither_adopted_nor_removed() {
    if skip_unless_root("a_bridge_marked_by_another_owner_is_neither_adopted_nor_removed") {
        return;
    }
    let before = HostState::capture();
    let host = fake_host();
    let container = new_netns();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = test_network("shared", "10.68.0.0/24", "br-ownertest");
    let owned =
        |dir: &std::path::Path| driver(dir).owned_by(format!("berth-root:{}", dir.display()));
    in_ns(&host, || {
        let first = owned(one.path());
        first.setup(&network).unwrap();
        let link = Netlink::connect()
            .unwrap()
            .require_link("br-ownertest")
            .unwrap();
        assert_eq!(
            link.alias.as_deref(),
            Some(format!("berth-root:{}", one.path().display()).as_str())
        );
        first
            .attach(&network, "c1", container.as_fd(), &[])
            .unwrap();

        // Another root's driver refuses the bridge for every use.
        let second = owned(two.path());
        let refused = |e: &DriverError| matches!(e, DriverError::BridgeOwnedElsewhere { .. });
        assert!(refused(&second.setup(&network).unwrap_err()));
        assert!(refused(&second.ensure(&network).unwrap_err()));
        let attach = second.attach(&network, "c2", new_netns().as_fd(), &[]);
        assert!(refused(&attach.unwrap_err()));
        let teardown = second.teardown(&network).unwrap_err();
        assert!(teardown.0.iter().any(refused), "{teardown}");
        assert!(Netlink::connect()
            .unwrap()
            .link("br-ownertest")
            .unwrap()
            .is_some());
        assert!(second.ipam().leases("shared").unwrap().is_empty());

        // Its owner still works it, and removes it.
        assert_eq!(first.ensure(&network).unwrap(), None);
        first.detach("c1").unwrap();
        first.teardown(&network).unwrap();
        assert!(Netlink::connect()
            .unwrap()
            .link("br-ownertest")
            .unwrap()
            .is_none());
    });
    drop((host, container));
    assert_eq!(HostState::capture(), before);
}

#[test]
fn connect_and_disconnect_add_and_remove_one_interface_and_lease() {
    if skip_unless_root("connect_and_disconnect_add_and_remove_one_interface_and_lease") {
        return;
    }
    let before = HostState::capture();
    let host = fake_host();
    let container = new_netns();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_owned();
    let main = test_network("main", "10.69.0.0/24", "br-conmain");
    let extra = test_network("extra", "10.70.0.0/24", "br-conextra");
    in_ns(&host, || {
        let driver = driver(&state);
        driver.attach(&main, "c1", container.as_fd(), &[]).unwrap();
        let wanted = "10.70.0.9".parse().unwrap();
        let endpoint = driver
            .connect(&extra, "c1", container.as_fd(), 1, Some(wanted))
            .unwrap();
        assert_eq!(endpoint.ip, wanted);
        assert_eq!(endpoint.container_ifname, "eth1");
        assert!(endpoint.ports.is_empty());
        let leases = driver.ipam().leases("extra").unwrap();
        assert_eq!(leases.len(), 1);
        in_ns(&container, || {
            let mut inside = Netlink::connect().unwrap();
            assert!(inside.link("eth0").unwrap().is_some());
            assert!(inside.link("eth1").unwrap().unwrap().up);
        });
        // The same address for another container is refused, nothing made.
        let other = new_netns();
        let taken = driver.connect(&extra, "c2", other.as_fd(), 1, Some(wanted));
        assert!(matches!(
            taken,
            Err(DriverError::Ipam(IpamError::AddressTaken { .. }))
        ));

        let report = driver
            .disconnect("extra", "c1", &endpoint.host_veth)
            .unwrap();
        assert_eq!(report.addresses, [("extra".to_owned(), wanted)]);
        assert!(driver.ipam().leases("extra").unwrap().is_empty());
        assert_eq!(driver.ipam().leases("main").unwrap().len(), 1);
        in_ns(&container, || {
            let mut inside = Netlink::connect().unwrap();
            assert!(inside.link("eth1").unwrap().is_none());
            assert!(inside.link("eth0").unwrap().is_some());
        });
        // Idempotent.
        driver
            .disconnect("extra", "c1", &endpoint.host_veth)
            .unwrap();
        driver.detach("c1").unwrap();
        driver.teardown(&extra).unwrap();
        driver.teardown(&main).unwrap();
    });
    drop((host, container));
    assert_eq!(HostState::capture(), before);
}

#[test]
fn attach_binds_the_embedded_dns_socket_in_the_container_namespace() {
    if skip_unless_root("attach_binds_the_embedded_dns_socket_in_the_container_namespace") {
        return;
    }
    let before = HostState::capture();
    let host = fake_host();
    let container = new_netns();
    let plain = new_netns();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_owned();
    let network = test_network("dnsnet", "10.71.0.0/24", "br-dnsnet");
    in_ns(&host, || {
        let driver = driver(&state);
        let request = AttachRequest {
            embedded_dns: true,
            ..AttachRequest::default()
        };
        let attachment = driver
            .attach_holding(&network, "d1", container.as_fd(), &request)
            .unwrap();
        let socket = attachment.dns_socket.expect("the DNS socket, as asked");
        assert_eq!(
            socket.local_addr().unwrap(),
            "127.0.0.11:53".parse::<SocketAddr>().unwrap()
        );
        // Bound in the container's namespace: a query from there arrives.
        in_ns(&container, || {
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            client.send_to(b"query", "127.0.0.11:53").unwrap();
        });
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buffer = [0u8; 16];
        let (length, _) = socket.recv_from(&mut buffer).unwrap();
        assert_eq!(&buffer[..length], b"query");
        // The same visit left eth0 up with its address, lo up, and no
        // IPv6 on the IPv4-only network.
        in_ns(&container, || {
            let mut inside = Netlink::connect().unwrap();
            assert!(inside.link("eth0").unwrap().unwrap().up);
            assert!(inside.link("lo").unwrap().unwrap().up);
            if std::path::Path::new("/proc/sys/net/ipv6").exists() {
                let off = std::fs::read_to_string("/proc/sys/net/ipv6/conf/eth0/disable_ipv6");
                assert_eq!(off.unwrap().trim(), "1");
            }
            let route = Command::new("ip")
                .args(["-4", "route", "show", "default"])
                .output()
                .unwrap();
            let route = String::from_utf8_lossy(&route.stdout);
            assert!(route.contains("via 10.71.0.1 dev eth0"), "{route}");
        });
        // Not asked: no socket, and 127.0.0.11:53 stays free there.
        let attachment = driver
            .attach_holding(&network, "d2", plain.as_fd(), &AttachRequest::default())
            .unwrap();
        assert!(attachment.dns_socket.is_none());
        in_ns(&plain, || UdpSocket::bind("127.0.0.11:53").unwrap());
        drop(socket);
        driver.detach("d1").unwrap();
        driver.detach("d2").unwrap();
        driver.teardown(&network).unwrap();
    });
    drop((host, container, plain));
    assert_eq!(HostState::capture(), before);
}

/// `nft -j list table ip TABLE` in the current namespace: each rule as
/// (chain, comment), in order; `None` when the table does not exist.
fn nft_rules(table: &str) -> Option<Vec<(String, String)>> {
    nft_family_rules("ip", table)
}

/// [`nft_rules`] for a table of `family` (`ip`, `ip6`).
fn nft_family_rules(family: &str, table: &str) -> Option<Vec<(String, String)>> {
    let output = Command::new("nft")
        .args(["-j", "list", "table", family, table])
        .output()
        .expect("run nft");
    if !output.status.success() {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    Some(
        value["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|item| item.get("rule"))
            .map(|rule| {
                (
                    rule["chain"].as_str().unwrap().to_owned(),
                    rule["comment"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect(),
    )
}

/// `nft list table ip TABLE` as text, for rule-by-rule comparison.
fn nft_text(table: &str) -> String {
    nft_family_text("ip", table)
}

/// [`nft_text`] for a table of `family` (`ip`, `ip6`).
fn nft_family_text(family: &str, table: &str) -> String {
    let output = Command::new("nft")
        .args(["list", "table", family, table])
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn nftables_rules_appear_in_one_table_and_disappear_exactly() {
    if skip_unless_root("nftables_rules_appear_in_one_table_and_disappear_exactly") {
        return;
    }
    if Command::new("nft").arg("-v").output().is_err() {
        eprintln!("skipping: no nft binary to read the rules back");
        return;
    }
    let before = HostState::capture();
    let host = fake_host();
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().to_owned();
    in_ns(&host, move || {
        // Foreign rules present: another tool's table must stay intact.
        let foreign = Command::new("nft")
            .args(["add table ip other; add chain ip other c { type filter hook forward priority 0; policy accept; }; add rule ip other c counter"])
            .status()
            .unwrap();
        assert!(foreign.success());
        let firewall = NftablesFirewall::new("berthtest", &lock_dir);
        let network = test_network("fwnet", "10.88.0.0/24", "br-fwtest");
        let mut internal = test_network("fwinternal", "10.87.0.0/24", "br-fwint");
        internal.internal = true;
        let forward = |owner: &str, mapping: &str| PortForward {
            owner: owner.to_owned(),
            network: "fwnet".to_owned(),
            bridge: "br-fwtest".to_owned(),
            container_ip: Ipv4Addr::new(10, 88, 0, 2),
            mapping: mapping.parse().unwrap(),
        };
        let web = forward("c0ffee", "8080:80");
        let dns = forward("c0ffee", "127.0.0.1:5353:53/udp");
        let other = forward("beef", "9090:90");

        assert_eq!(nft_rules("berthtest"), None);
        // Twice: idempotent.
        for _ in 0..2 {
            firewall.setup_network(&network).unwrap();
            firewall.setup_network(&internal).unwrap();
        }
        firewall
            .add_port_forwards(&[web.clone(), dns.clone()], true)
            .unwrap();
        firewall
            .add_port_forwards(&[web.clone(), dns.clone()], false)
            .unwrap();
        firewall.add_port_forward(&other).unwrap();
        let rules = nft_rules("berthtest").unwrap();
        let tagged = |comment: &str| rules.iter().filter(|(_, c)| c == comment).count();
        assert_eq!(tagged("berth"), 2, "{rules:?}");
        assert_eq!(tagged("berth:fwnet"), 6, "{rules:?}");
        assert_eq!(tagged("berth:fwinternal"), 4, "{rules:?}");
        assert_eq!(tagged("berth:c0ffee 0.0.0.0:8080/tcp"), 2, "{rules:?}");
        assert_eq!(tagged("berth:c0ffee 127.0.0.1:5353/udp"), 2, "{rules:?}");
        assert_eq!(tagged("berth:beef 0.0.0.0:9090/tcp"), 2, "{rules:?}");
        // What nft reads back is what the rules say (the kernel accepted
        // the expressions as meant, not merely as bytes).
        let text = nft_text("berthtest");
        for expected in [
            "type nat hook prerouting priority dstnat; policy accept;",
            "type filter hook prerouting priority raw; policy accept;",
            "fib daddr type local ip daddr != 127.0.0.0/8 jump published comment \"berth\"",
            "fib daddr type local jump published comment \"berth\"",
            "ip saddr 10.88.0.0/24 oifname != \"br-fwtest\" masquerade comment \"berth:fwnet\"",
            "oifname \"br-fwtest\" ct state established,related accept comment \"berth:fwnet\"",
            "ip saddr 10.88.0.0/24 oifname \"br-fwtest\" ct status dnat masquerade comment \"berth:fwnet\"",
            "iifname \"br-fwtest\" ip daddr 127.0.0.0/8 drop comment \"berth:fwnet\"",
            "iifname != \"br-fwint\" oifname \"br-fwint\" drop comment \"berth:fwinternal\"",
            "tcp dport 8080 dnat to 10.88.0.2:80 comment \"berth:c0ffee 0.0.0.0:8080/tcp\"",
            "ip daddr 127.0.0.1 udp dport 5353 dnat to 10.88.0.2:53 comment \"berth:c0ffee 127.0.0.1:5353/udp\"",
            "ip daddr 10.88.0.2 oifname \"br-fwtest\" tcp dport 80 accept comment \"berth:c0ffee 0.0.0.0:8080/tcp\"",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }

        // One port of one container goes, the rest stays; twice is fine.
        firewall.remove_port_forward(&dns).unwrap();
        firewall.remove_port_forward(&dns).unwrap();
        let rules = nft_rules("berthtest").unwrap();
        assert!(!rules.iter().any(|(_, c)| c.contains("5353")), "{rules:?}");
        assert_eq!(rules.len(), 2 + 6 + 4 + 2 + 2);
        firewall
            .remove_port_forwards(&[web.clone(), other.clone()])
            .unwrap();
        firewall.teardown_network(&internal).unwrap();
        let rules = nft_rules("berthtest").unwrap();
        assert_eq!(rules.len(), 2 + 6, "{rules:?}");
        // The last network takes the table with it.
        firewall.teardown_network(&network).unwrap();
        firewall.teardown_network(&network).unwrap();
        assert_eq!(nft_rules("berthtest"), None, "{}", nft_text("berthtest"));
        firewall
            .remove_port_forwards(std::slice::from_ref(&web))
            .unwrap();
        // Ports without a table (flushed by hand): the table and chains
        // are made for them; a network teardown then drops the emptied
        // table.
        firewall
            .add_port_forwards(std::slice::from_ref(&web), true)
            .unwrap();
        assert_eq!(nft_rules("berthtest").unwrap().len(), 2);
        firewall.remove_port_forward(&web).unwrap();
        assert_eq!(nft_rules("berthtest"), Some(Vec::new()));
        firewall.teardown_network(&network).unwrap();
        assert_eq!(nft_rules("berthtest"), None, "{}", nft_text("berthtest"));
        // The foreign table was not touched.
        assert!(nft_text("other").contains("counter"));
    });
    assert_eq!(HostState::capture(), before);
}

#[test]
fn nftables_ipv6_rules_live_in_an_ip6_table_that_goes_with_the_last_of_them() {
    if skip_unless_root("nftables_ipv6_rules_live_in_an_ip6_table_that_goes_with_the_last_of_them")
    {
        return;
    }
    if Command::new("nft").arg("-v").output().is_err() {
        eprintln!("skipping: no nft binary to read the rules back");
        return;
    }
    let before = HostState::capture();
    let host = fake_host();
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().to_owned();
    in_ns(&host, move || {
        let firewall = NftablesFirewall::new("berthtest6", &lock_dir);
        let dual = NetworkConfig {
            ipv6_subnet: Some("fd00:88::/64".parse().unwrap()),
            ipv6_gateway: Some("fd00:88::1".parse().unwrap()),
            ..test_network("fwsix", "10.86.0.0/24", "br-fwsix")
        };
        let isolated = NetworkConfig {
            internal: true,
            ipv6_subnet: Some("fd00:89::/64".parse().unwrap()),
            ipv6_gateway: Some("fd00:89::1".parse().unwrap()),
            ..test_network("fwsixint", "10.85.0.0/24", "br-fwsixint")
        };
        let plain = test_network("fwfour", "10.84.0.0/24", "br-fwfour");
        // A port of a container on the dual-stack network: IPv4 only.
        let web = PortForward {
            owner: "c0ffee".to_owned(),
            network: "fwsix".to_owned(),
            bridge: "br-fwsix".to_owned(),
            container_ip: Ipv4Addr::new(10, 86, 0, 2),
            mapping: "8080:80".parse().unwrap(),
        };

        // An IPv4-only network makes no ip6 table.
        firewall.setup_network(&plain).unwrap();
        assert_eq!(nft_family_rules("ip6", "berthtest6"), None);
        assert!(!firewall.table6_exists().unwrap());
        // Twice: idempotent.
        for _ in 0..2 {
            firewall.setup_network(&dual).unwrap();
            firewall.setup_network(&isolated).unwrap();
        }
        firewall.add_port_forward(&web).unwrap();
        let rules = nft_family_rules("ip6", "berthtest6").unwrap();
        let tagged = |comment: &str| rules.iter().filter(|(_, c)| c == comment).count();
        assert_eq!(tagged("berth:fwsix"), 3, "{rules:?}");
        assert_eq!(tagged("berth:fwsixint"), 3, "{rules:?}");
        assert_eq!(rules.len(), 6, "{rules:?}");
        assert_eq!(firewall.installed_rules6().unwrap().len(), 6);
        // The IPv4 side is unchanged by IPv6: the same rules as before.
        let rules4 = nft_rules("berthtest6").unwrap();
        let tagged4 = |comment: &str| rules4.iter().filter(|(_, c)| c == comment).count();
        assert_eq!(tagged4("berth:fwsix"), 6, "{rules4:?}");
        assert_eq!(tagged4("berth:fwsixint"), 4, "{rules4:?}");
        assert_eq!(tagged4("berth:c0ffee 0.0.0.0:8080/tcp"), 2, "{rules4:?}");
        // What nft reads back is what the rules say.
        let text = nft_family_text("ip6", "berthtest6");
        for expected in [
            "type nat hook postrouting priority srcnat; policy accept;",
            "type filter hook forward priority filter; policy accept;",
            "ip6 saddr fd00:88::/64 oifname != \"br-fwsix\" masquerade comment \"berth:fwsix\"",
            "oifname \"br-fwsix\" ct state established,related accept comment \"berth:fwsix\"",
            "iifname \"br-fwsix\" accept comment \"berth:fwsix\"",
            "iifname \"br-fwsixint\" oifname \"br-fwsixint\" accept comment \"berth:fwsixint\"",
            "iifname \"br-fwsixint\" oifname != \"br-fwsixint\" drop comment \"berth:fwsixint\"",
            "iifname != \"br-fwsixint\" oifname \"br-fwsixint\" drop comment \"berth:fwsixint\"",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("dnat"), "{text}");

        // A port going touches no IPv6 rule.
        firewall.remove_port_forward(&web).unwrap();
        assert_eq!(nft_family_rules("ip6", "berthtest6").unwrap().len(), 6);
        // A network's teardown takes exactly its rules; twice is fine.
        firewall.teardown_network(&isolated).unwrap();
        firewall.teardown_network(&isolated).unwrap();
        let rules = nft_family_rules("ip6", "berthtest6").unwrap();
        assert!(rules.iter().all(|(_, c)| c == "berth:fwsix"), "{rules:?}");
        assert_eq!(rules.len(), 3);
        // The last IPv6 network takes the ip6 table, though the ip table
        // stays for the IPv4 network.
        firewall.teardown_network(&dual).unwrap();
        assert_eq!(
            nft_family_rules("ip6", "berthtest6"),
            None,
            "{}",
            nft_family_text("ip6", "berthtest6")
        );
        assert!(nft_rules("berthtest6")
            .unwrap()
            .iter()
            .any(|(_, c)| c == "berth:fwfour"));
        // An ip6 table left with empty chains goes with the next network
        // teardown, and a missing ip table does not stop that.
        firewall.setup_network(&dual).unwrap();
        let flushed = Command::new("nft")
            .args(["flush table ip6 berthtest6; delete table ip berthtest6"])
            .status()
            .unwrap();
        assert!(flushed.success());
        firewall.teardown_network(&plain).unwrap();
        assert_eq!(nft_family_rules("ip6", "berthtest6"), None);
        assert_eq!(nft_rules("berthtest6"), None);
        firewall.teardown_network(&dual).unwrap();
    });
    assert_eq!(HostState::capture(), before);
}

#[test]
fn ipv6_rules_of_either_backend_go_with_a_teardown_by_the_other() {
    if skip_unless_root("ipv6_rules_of_either_backend_go_with_a_teardown_by_the_other") {
        return;
    }
    let have = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("ip6tables") || !have("nft") {
        eprintln!("skipping: no ip6tables or nft");
        return;
    }
    let before = HostState::capture();
    let host = fake_host();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("networks");
    in_ns(&host, move || {
        let dual = NetworkConfig {
            ipv6_subnet: Some("fd00:87::/64".parse().unwrap()),
            ipv6_gateway: Some("fd00:87::1".parse().unwrap()),
            ..test_network("fwswitch", "10.83.0.0/24", "br-fwswitch")
        };
        let old = HostFirewall::new(FirewallKind::Iptables, "berthtest7", &state);
        old.setup_network(&dual).unwrap();
        let saved = saved_rules("ip6tables-save");
        assert!(
            saved.contains("-s fd00:87::/64 ! -o br-fwswitch") && saved.contains("MASQUERADE"),
            "{saved}"
        );
        // The backend switched to nftables: its teardown still finds the
        // ip6tables rules, and its own ip6 table has none to leave.
        let new = HostFirewall::new(FirewallKind::Nftables, "berthtest7", &state);
        new.teardown_network(&dual).unwrap();
        let saved = saved_rules("ip6tables-save");
        assert!(!saved.to_lowercase().contains("berth"), "{saved}");
        let saved = saved_rules("iptables-save");
        assert!(!saved.to_lowercase().contains("berth"), "{saved}");
        assert_eq!(nft_family_rules("ip6", "berthtest7"), None);
        // And the other way round: nftables' IPv6 rules go with an
        // iptables teardown.
        new.setup_network(&dual).unwrap();
        assert_eq!(nft_family_rules("ip6", "berthtest7").unwrap().len(), 3);
        old.teardown_network(&dual).unwrap();
        assert_eq!(nft_family_rules("ip6", "berthtest7"), None);
        assert_eq!(nft_rules("berthtest7"), None);
        // Under ip6tables' FORWARD policy DROP (as docker sets it) the
        // nftables backend accepts the network's IPv6 traffic there too,
        // and takes that back with the network.
        let policy = |program: &str, verdict: &str| {
            let status = Command::new(program)
                .args(["-w", "-P", "FORWARD", verdict])
                .status()
                .unwrap();
            assert!(status.success(), "{program} -P FORWARD {verdict}");
        };
        policy("ip6tables", "DROP");
        new.setup_network(&dual).unwrap();
        let saved = saved_rules("ip6tables-save");
        assert_eq!(count(&saved, "berth:fwswitch"), 2, "{saved}");
        assert!(saved.contains("-A FORWARD -i br-fwswitch"), "{saved}");
        new.teardown_network(&dual).unwrap();
        let saved = saved_rules("ip6tables-save");
        assert!(!saved.to_lowercase().contains("berth"), "{saved}");
        assert_eq!(nft_family_rules("ip6", "berthtest7"), None);
        policy("ip6tables", "ACCEPT");
    });
    assert_eq!(HostState::capture(), before);
}
