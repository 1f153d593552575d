//! Networking (issue 6): bridge networks, IPAM, veths, NAT and port
//! mapping, driven through the real binary.
//!
//! Every berth command runs inside the test's private network namespace
//! (the [`Berth`] sandbox), which plays "the host". Outside clients and
//! upstream hosts are more namespaces made here ([`NetSandbox`]), joined
//! to the sandbox by veth pairs created inside it. No packet goes anywhere
//! but loopback and these namespaces.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_e2e::netns_tools::{
    create_network, exec, holder_pid, http_get, http_get_eventually, in_netns, ip, iptables,
    network_inspect,
};
use berth_e2e::{
    assert_berth_error, describe, kill, noise, require_root, stderr, stdout, wait_until,
    wait_with_timeout, Berth, NetSandbox,
};

/// Long enough for a slow VM; passing steps take milliseconds.
const STEP: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------

/// Create a veth pair `here` (in `a`, with `addr_a`) <-> `there` (moved
/// into `b`, with `addr_b`), both up.
fn veth(a: &NetSandbox, here: &str, addr_a: &str, b: &NetSandbox, there: &str, addr_b: &str) {
    ip(
        a,
        &["link", "add", here, "type", "veth", "peer", "name", there],
    );
    ip(a, &["link", "set", there, "netns", &holder_pid(b)]);
    ip(a, &["addr", "add", addr_a, "dev", here]);
    ip(a, &["link", "set", here, "up"]);
    ip(b, &["addr", "add", addr_b, "dev", there]);
    ip(b, &["link", "set", there, "up"]);
}

/// A container command serving `body` as /index.html with busybox httpd
/// on port 80, logging each request (-v) to the container's log.
fn httpd(body: &str) -> Vec<String> {
    vec![
        "busybox".into(),
        "sh".into(),
        "-c".into(),
        format!("mkdir /www && echo {body} > /www/index.html && exec httpd -f -v -p 80 -h /www"),
    ]
}

/// The `network` object of a container's record.
fn endpoint(berth: &Berth, container: &str) -> serde_json::Value {
    let record = berth.inspect(container);
    let net = record["network"].clone();
    assert!(
        net.is_object(),
        "inspect {container} has no network object:\n{record:#}"
    );
    net
}

/// A container's IPv4 address (from inspect).
fn ip_of(berth: &Berth, container: &str) -> Ipv4Addr {
    let net = endpoint(berth, container);
    net["ip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no ip for {container}: {net:#}"))
}

/// Ids of the containers `network inspect NAME` lists.
fn network_containers(berth: &Berth, name: &str) -> Vec<String> {
    network_inspect(berth, name)["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// NAME column of `berth network ls`.
fn network_names(berth: &Berth) -> Vec<String> {
    berth
        .run_ok(["network", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

/// Names of the links in the sandbox (`ip -j link`), sorted.
fn links(berth: &Berth) -> Vec<String> {
    let out = ip(berth.netns(), &["-j", "link"]);
    let value: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j link: {e}\n{out}"));
    let mut names: Vec<String> = value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Lines of `iptables-save` in the sandbox that mention one of `ids`.
fn rules_naming(berth: &Berth, ids: &[String]) -> Vec<String> {
    iptables(berth)
        .lines()
        .filter(|l| ids.iter().any(|id| l.contains(id.as_str())))
        .map(str::to_owned)
        .collect()
}

/// The network state (every file under `<root>/networks`, lock files
/// left out, with its contents) and the entries of `<root>/containers`
/// and `<root>/images` (not their insides: a running container's rootfs
/// is there): a failed command must leave this unchanged.
fn files(berth: &Berth) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.insert(path.clone(), Vec::new());
                walk(&path, out);
            } else if !path.to_string_lossy().ends_with(".lock") {
                out.insert(path.clone(), fs::read(&path).unwrap_or_default());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&berth.root().join("networks"), &mut out);
    for sub in ["containers", "images", "images/layers", "images/tmp"] {
        for entry in berth.entries(sub) {
            out.insert(entry, Vec::new());
        }
    }
    out
}

/// Everything a networking command can change: state files, links,
/// firewall, containers, networks.
#[derive(Debug, PartialEq)]
struct Snapshot {
    files: BTreeMap<PathBuf, Vec<u8>>,
    links: Vec<String>,
    iptables: String,
    containers: Vec<String>,
    networks: Vec<String>,
}

fn snapshot(berth: &Berth) -> Snapshot {
    Snapshot {
        files: files(berth),
        links: links(berth),
        iptables: iptables(berth),
        containers: berth.container_ids(),
        networks: network_names(berth),
    }
}

/// What differs between two snapshots (None: nothing).
fn differences(before: &Snapshot, after: &Snapshot) -> Option<String> {
    if before == after {
        return None;
    }
    let mut diff = String::new();
    let keys: std::collections::BTreeSet<&PathBuf> =
        before.files.keys().chain(after.files.keys()).collect();
    for k in keys {
        let (a, b) = (before.files.get(k), after.files.get(k));
        if a != b {
            diff += &format!(
                "  file {}: {:?} -> {:?}\n",
                k.display(),
                a.map(|d| String::from_utf8_lossy(d).into_owned()),
                b.map(|d| String::from_utf8_lossy(d).into_owned())
            );
        }
    }
    if before.links != after.links {
        diff += &format!("  links: {:?} -> {:?}\n", before.links, after.links);
    }
    if before.iptables != after.iptables {
        diff += &format!(
            "  iptables-save before:\n{}\n  after:\n{}\n",
            before.iptables, after.iptables
        );
    }
    if before.containers != after.containers {
        diff += &format!(
            "  containers: {:?} -> {:?}\n",
            before.containers, after.containers
        );
    }
    if before.networks != after.networks {
        diff += &format!(
            "  networks: {:?} -> {:?}\n",
            before.networks, after.networks
        );
    }
    Some(diff)
}

/// Assert two snapshots are equal, naming what differs.
fn assert_same(before: &Snapshot, after: &Snapshot, what: &str) {
    if let Some(diff) = differences(before, after) {
        panic!("{what} changed the state:\n{diff}");
    }
}

/// Run `berth ARGS`; Ok(the error line) when it failed with exit 125 and
/// one `berth: ` line and left the state unchanged, else Err(why).
fn try_rejected(berth: &Berth, args: &[&str]) -> Result<String, String> {
    let what = format!("`berth {}`", args.join(" "));
    let before = snapshot(berth);
    let out = berth.output(args);
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    if out.status.code() != Some(125) || lines.len() != 1 || !lines[0].starts_with("berth: ") {
        return Err(format!(
            "{what}: expected exit 125 and one `berth: ` line\n{}",
            describe(&out)
        ));
    }
    match differences(&before, &snapshot(berth)) {
        Some(diff) => Err(format!(
            "{what} failed ({}) but changed the state:\n{diff}",
            lines[0]
        )),
        None => Ok(lines[0].to_owned()),
    }
}

/// [`try_rejected`], panicking on Err.
fn rejected(berth: &Berth, args: &[&str]) -> String {
    try_rejected(berth, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Poll until the sandbox's links are exactly `want` (veths of removed
/// containers may take a moment to go).
fn assert_links_settle(berth: &Berth, want: &[String], what: &str) {
    let mut now = Vec::new();
    let settled = wait_until(STEP, || {
        now = links(berth);
        now == want
    });
    assert!(
        settled,
        "{what}: links {now:?}, expected {want:?} (veths left behind?)"
    );
}

/// A container's full id (tracked for the leak checks).
fn run_d(berth: &Berth, args: &[&str]) -> String {
    berth.run_detached(args)
}

// ---------------------------------------------------------------------
// Containers talking to each other; inspect, network ls/inspect
// ---------------------------------------------------------------------

#[test]
fn containers_on_one_network_reach_each_other_by_ip_and_name() {
    require_root!();
    let berth = Berth::new();
    create_network(&berth, "talk", "10.81.7.0/24");
    let first = run_d(
        &berth,
        &["--name", "first", "--net", "talk", "busybox", "sleep", "60"],
    );
    let second = run_d(
        &berth,
        &[
            "--name",
            "second",
            "--network",
            "talk",
            "busybox",
            "sleep",
            "60",
        ],
    );
    let (ip1, ip2) = (ip_of(&berth, "first"), ip_of(&berth, "second"));
    assert_ne!(ip1, ip2);

    // The second one started knows the first by name.
    let hosts = stdout(&exec(&berth, "second", &["cat", "/etc/hosts"]));
    let maps = |ip: Ipv4Addr, name: &str| {
        hosts.lines().any(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some(ip.to_string().as_str()) && words.any(|w| w == name)
        })
    };
    assert!(
        maps(ip1, "first"),
        "/etc/hosts of second does not map first to {ip1}:\n{hosts}"
    );
    assert!(
        maps(ip2, "second"),
        "/etc/hosts of second does not name itself:\n{hosts}"
    );
    let hostname = stdout(&exec(&berth, "second", &["cat", "/etc/hostname"]));
    assert_eq!(hostname.trim(), &second[..12], "/etc/hostname");
    // The one loopback nameserver that works inside: the embedded
    // server of a user-defined network, which knows the other container.
    let resolv = stdout(&exec(&berth, "second", &["cat", "/etc/resolv.conf"]));
    let servers: Vec<&str> = resolv
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("nameserver "))
        .collect();
    assert_eq!(servers, ["127.0.0.11"], "{resolv}");
    // An IPv4-only network: no IPv6 on the container's interface, not even
    // a link-local address (docker's choice: nothing multicast to flood).
    let v6 = stdout(&exec(
        &berth,
        "second",
        &["ip", "-6", "addr", "show", "dev", "eth0"],
    ));
    assert!(
        v6.trim().is_empty(),
        "eth0 has IPv6 on an IPv4-only network:\n{v6}"
    );
    let looked_up = exec(&berth, "second", &["nslookup", "first"]);
    assert!(
        looked_up.status.success() && stdout(&looked_up).contains(&format!("Address: {ip1}")),
        "{}",
        describe(&looked_up)
    );

    for (from, to) in [
        ("second", "first".to_owned()),
        ("second", ip1.to_string()),
        ("first", ip2.to_string()),
    ] {
        let out = exec(&berth, from, &["ping", "-c", "1", "-W", "5", &to]);
        assert!(
            out.status.success(),
            "{from} cannot ping {to}\n{}",
            describe(&out)
        );
    }

    // inspect: IP, MAC, network, gateway, bridge, veth.
    let net = endpoint(&berth, "first");
    assert_eq!(net["network"], "talk");
    assert_eq!(net["gateway"], "10.81.7.1");
    assert_eq!(net["prefix_len"], 24);
    let octets = ip1.octets();
    let mac = format!(
        "02:42:{:02x}:{:02x}:{:02x}:{:02x}",
        octets[0], octets[1], octets[2], octets[3]
    );
    assert_eq!(net["mac"], mac.as_str(), "{net:#}");
    let veth = net["host_veth"].as_str().unwrap_or_default().to_owned();
    assert!(veth.starts_with("vb"), "{net:#}");
    let bridge = net["bridge"].as_str().unwrap_or_default().to_owned();
    let now = links(&berth);
    assert!(
        now.contains(&veth) && now.contains(&bridge),
        "{veth} and {bridge} not in {now:?}"
    );
    // The container really has that address and MAC on eth0.
    let addr = stdout(&exec(&berth, "first", &["ip", "addr", "show", "eth0"]));
    assert!(
        addr.contains(&format!("{ip1}/24")) && addr.contains(&mac),
        "eth0 of first:\n{addr}"
    );

    // network ls and network inspect.
    let ls = berth.run_ok(["network", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.contains("talk") && l.contains("10.81.7.0/24") && l.contains("bridge")),
        "network ls:\n{ls}"
    );
    let mut listed = network_containers(&berth, "talk");
    listed.sort();
    let mut want = vec![first.clone(), second.clone()];
    want.sort();
    assert_eq!(listed, want, "network inspect talk");

    // In use: refused, one line, network still there.
    let out = berth.output(["network", "rm", "talk"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.lines().count() == 1 && err.starts_with("berth: "),
        "network rm of a network in use: one `berth: ` line\n{}",
        describe(&out)
    );
    assert!(network_names(&berth).contains(&"talk".to_owned()));

    berth.run_ok(["rm", "-f", "first", "second"]);
    berth.run_ok(["network", "rm", "talk"]);
    assert!(!network_names(&berth).contains(&"talk".to_owned()));
    assert!(!links(&berth).contains(&bridge), "bridge {bridge} left");
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// Port mapping
// ---------------------------------------------------------------------

#[test]
fn published_port_is_reachable_from_the_host_and_an_outside_client() {
    require_root!();
    let berth = Berth::new();
    let host = berth.netns();
    // An outside client, joined to the host by a veth.
    let client = NetSandbox::new();
    veth(
        host,
        "bt-out",
        "10.82.0.1/24",
        &client,
        "bt-client",
        "10.82.0.2/24",
    );
    // The default network (created on first use).
    let mut args = vec![
        "--name".to_owned(),
        "web".into(),
        "-p".into(),
        "8080:80".into(),
    ];
    args.extend(httpd("hello-from-web"));
    let id = berth.run_detached(&args);
    let net = endpoint(&berth, "web");
    assert_eq!(net["network"], "bridge", "{net:#}");
    assert_eq!(
        net["ports"],
        serde_json::json!([{"host_port": 8080, "container_port": 80, "protocol": "tcp"}]),
        "{net:#}"
    );
    let gateway: Ipv4Addr = net["gateway"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .expect("gateway");

    // From the host, through two of its own non-loopback addresses.
    for addr in [gateway, Ipv4Addr::new(10, 82, 0, 1)] {
        let response = http_get_eventually(host, SocketAddr::from((addr, 8080)), STEP);
        assert!(
            response.contains("hello-from-web"),
            "host -> {addr}:8080 answered:\n{response}"
        );
    }
    // From the outside client.
    let response = http_get_eventually(&client, SocketAddr::from(([10, 82, 0, 1], 8080)), STEP);
    assert!(
        response.contains("hello-from-web"),
        "client -> 10.82.0.1:8080 answered:\n{response}"
    );
    // The container saw the client itself (DNAT, no source rewriting).
    let mut log = String::new();
    let seen = wait_until(STEP, || {
        let out = berth.output(["logs", "web"]);
        log = stdout(&out) + &stderr(&out);
        log.contains("10.82.0.2")
    });
    assert!(seen, "the container's log does not show the client:\n{log}");

    // And through loopback, as docker's (tests/tests/ports.rs has more).
    let loopback = http_get_eventually(host, SocketAddr::from(([127, 0, 0, 1], 8080)), STEP);
    assert!(
        loopback.contains("hello-from-web"),
        "127.0.0.1:8080 answered:\n{loopback}"
    );

    berth.run_ok(["rm", "-f", &id]);
    assert!(
        rules_naming(&berth, std::slice::from_ref(&id)).is_empty(),
        "rules left for the removed container:\n{}",
        iptables(&berth)
    );
    // The port is gone with it.
    let gone = http_get(host.path(), SocketAddr::from((gateway, 8080)));
    assert!(gone.is_err(), "{gateway}:8080 still answers: {gone:?}");
    // docker: the default network cannot be removed.
    let out = berth.output(["network", "rm", "bridge"]);
    assert!(!out.status.success(), "{}", describe(&out));
    berth.assert_clean();
}

#[test]
fn freed_host_port_and_address_are_reusable_at_once() {
    require_root!();
    let berth = Berth::new();
    create_network(&berth, "reuse", "10.83.0.0/24");
    let args = |body: &str| {
        let mut args: Vec<String> = ["--net", "reuse", "-p", "8081:80"]
            .map(String::from)
            .to_vec();
        args.extend(httpd(body));
        args
    };
    let one = berth.run_detached(args("one"));
    let ip_one = ip_of(&berth, &one);
    berth.run_ok(["rm", "-f", &one]);
    let two = berth.run_detached(args("two"));
    let ip_two = ip_of(&berth, &two);
    // (Addresses are handed out next-fit: reuse of this very address is
    // checked on a /30, in wide_and_tiny_networks.)
    assert_eq!(
        ip_two.octets()[..3],
        [10, 83, 0],
        "{ip_two} (freed: {ip_one})"
    );
    let response = http_get_eventually(
        berth.netns(),
        SocketAddr::from(([10, 83, 0, 1], 8081)),
        STEP,
    );
    assert!(response.contains("two"), "8081 answered:\n{response}");
    berth.run_ok(["rm", "-f", &two]);
    berth.run_ok(["network", "rm", "reuse"]);
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// NAT to the outside
// ---------------------------------------------------------------------

#[test]
fn masquerade_rewrites_the_source_to_the_host_address() {
    require_root!();
    let berth = Berth::new();
    let host = berth.netns();
    // A fake upstream host: link 10.84.0.0/30, service address 10.85.0.1
    // on its own lo, reached from the host by a route.
    let upstream = NetSandbox::new();
    veth(
        host,
        "bt-up",
        "10.84.0.1/30",
        &upstream,
        "bt-upstream",
        "10.84.0.2/30",
    );
    ip(&upstream, &["addr", "add", "10.85.0.1/32", "dev", "lo"]);
    ip(host, &["route", "add", "10.85.0.0/24", "via", "10.84.0.2"]);
    // So that a missing MASQUERADE shows up as the wrong source (rather
    // than as a timeout), upstream could answer the container directly.
    ip(
        &upstream,
        &["route", "add", "10.86.0.0/24", "via", "10.84.0.1"],
    );
    create_network(&berth, "out", "10.86.0.0/24");

    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn({
        let ns = upstream.path();
        move || {
            in_netns(ns, move || {
                let listener = TcpListener::bind("10.85.0.1:9000").expect("bind upstream");
                listener.set_nonblocking(true).expect("nonblocking");
                tx.send(()).expect("signal");
                let deadline = Instant::now() + STEP;
                loop {
                    match listener.accept() {
                        Ok((mut conn, peer)) => {
                            conn.set_nonblocking(false).expect("blocking");
                            conn.set_read_timeout(Some(STEP)).expect("timeout");
                            let mut got = String::new();
                            let _ = conn.read_to_string(&mut got);
                            return Some((peer, got));
                        }
                        Err(_) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(_) => return None,
                    }
                }
            })
        }
    });
    rx.recv_timeout(STEP)
        .expect("the upstream server is listening");
    let out = berth.output([
        "run",
        "--rm",
        "--net",
        "out",
        "busybox",
        "sh",
        "-c",
        "echo hello-upstream | nc -w 5 10.85.0.1 9000",
    ]);
    let seen = server.join().expect("server thread");
    assert!(
        out.status.success(),
        "the container's nc failed\n{}",
        describe(&out)
    );
    let (peer, got) = seen.expect("upstream got no connection from the container");
    assert_eq!(got.trim(), "hello-upstream");
    assert_eq!(
        peer.ip().to_string(),
        "10.84.0.1",
        "upstream saw {peer}, not the host's address (the container's address leaked?)"
    );
    berth.run_ok(["network", "rm", "out"]);
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// Concurrency and cleanup
// ---------------------------------------------------------------------

#[test]
fn thirty_parallel_runs_get_distinct_addresses_and_leave_nothing() {
    require_root!();
    const N: u16 = 30;
    let berth = Berth::new();
    create_network(&berth, "many", "10.87.0.0/24");
    let links_before = links(&berth);
    let rules_before = iptables(&berth);

    let children: Vec<_> = (0..N)
        .map(|i| {
            let port = format!("{}:80", 20000 + i);
            let mut cmd = berth.cmd([
                "run", "-d", "--net", "many", "-p", &port, "busybox", "sleep", "60",
            ]);
            cmd.spawn().expect("spawn berth run")
        })
        .collect();
    let ids: Vec<String> = children
        .into_iter()
        .map(|child| {
            let out = wait_with_timeout(child, Duration::from_secs(180));
            assert!(
                out.status.success(),
                "a parallel run failed\n{}",
                describe(&out)
            );
            let id = stdout(&out).trim().to_owned();
            berth.track(&id);
            id
        })
        .collect();

    let mut ips: Vec<Ipv4Addr> = ids.iter().map(|id| ip_of(&berth, id)).collect();
    ips.sort();
    let count = ips.len();
    ips.dedup();
    assert_eq!(ips.len(), count, "duplicate addresses handed out: {ips:?}");
    for ip in &ips {
        assert!(
            ip.octets()[..3] == [10, 87, 0] && ![0, 1, 255].contains(&ip.octets()[3]),
            "{ip} is not a host address of 10.87.0.0/24 other than the gateway"
        );
    }
    let mut listed = network_containers(&berth, "many");
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want, "network inspect many");
    let rules = iptables(&berth);
    for (i, id) in ids.iter().enumerate() {
        let port = (20000 + i).to_string();
        assert!(
            rules.lines().any(|l| l.to_uppercase().contains("DNAT")
                && l.contains(&port)
                && l.contains(id.as_str())),
            "no DNAT rule for {id} (port {port}):\n{rules}"
        );
    }
    assert_eq!(
        links(&berth).iter().filter(|l| l.starts_with("vb")).count(),
        usize::from(N)
    );

    // Remove them all, in parallel too.
    let removers: Vec<_> = ids
        .iter()
        .map(|id| berth.cmd(["rm", "-f", id]).spawn().expect("spawn berth rm"))
        .collect();
    for child in removers {
        let out = wait_with_timeout(child, Duration::from_secs(180));
        assert!(
            out.status.success(),
            "a parallel rm failed\n{}",
            describe(&out)
        );
    }
    assert!(
        network_containers(&berth, "many").is_empty(),
        "leases left: {:#}",
        network_inspect(&berth, "many")
    );
    assert_links_settle(&berth, &links_before, "after removing all 30");
    let rules_after = iptables(&berth);
    assert!(
        rules_naming(&berth, &ids).is_empty(),
        "rules of removed containers left:\n{rules_after}"
    );
    assert_eq!(rules_after, rules_before, "iptables-save before and after");
    // A freed host port can be published again.
    let again = run_d(
        &berth,
        &["--net", "many", "-p", "20000:80", "busybox", "sleep", "60"],
    );
    assert_eq!(ip_of(&berth, &again).octets()[..3], [10, 87, 0]);
    berth.run_ok(["rm", "-f", &again]);
    berth.run_ok(["network", "rm", "many"]);
    berth.assert_clean();
}

#[test]
fn killed_networked_run_leaves_nothing_after_rm_f() {
    require_root!();
    let berth = Berth::new();
    // A /30 holds one container: a leaked lease shows as "full".
    create_network(&berth, "crash", "10.88.0.0/30");
    let probe = || {
        let id = run_d(
            &berth,
            &["--net", "crash", "-p", "8090:80", "busybox", "true"],
        );
        berth.run_ok(["rm", "-f", &id]);
    };
    let links_before = links(&berth);
    let rules_before = iptables(&berth);

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    // None: kill once the container is running; Some(ms): kill that early.
    let mut moments: Vec<Option<u64>> = vec![None];
    moments.extend(noise(4, seed).iter().map(|b| Some(u64::from(*b) % 51)));
    for (i, moment) in moments.into_iter().enumerate() {
        let name = format!("crash{i}");
        let what = format!("kill -9 of `berth run --name {name}` at {moment:?} ms (seed {seed})");
        let mut run = berth.spawn([
            "run", "--name", &name, "--net", "crash", "-p", "8090:80", "busybox", "sleep", "60",
        ]);
        match moment {
            Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
            None => {
                let started = wait_until(STEP, || {
                    let out = berth.output(["inspect", &name]);
                    out.status.success() && stdout(&out).contains("\"running\"")
                });
                assert!(started, "{what}: the container never ran");
            }
        }
        kill(run.0.id() as i32, libc::SIGKILL);
        run.wait(STEP);
        // `rm -f` of the name must clean up whatever berth left.
        let out = berth.output(["rm", "-f", &name]);
        eprintln!("{what}: rm -f: {}", describe(&out).replace('\n', " "));
        if !out.status.success() {
            // Killed before the container was recorded: fine, if nothing
            // else is left either (checked below).
            assert!(
                stderr(&out).contains(&name),
                "{what}: rm -f failed oddly\n{}",
                describe(&out)
            );
        }
        assert!(
            berth.container_ids().is_empty(),
            "{what}: containers left: {}",
            berth.run_ok(["ps", "-a"])
        );
        assert!(
            network_containers(&berth, "crash").is_empty(),
            "{what}: leases left: {:#}",
            network_inspect(&berth, "crash")
        );
        assert_links_settle(&berth, &links_before, &what);
        assert_eq!(iptables(&berth), rules_before, "{what}: iptables-save");
        // The address and the host port can be taken again.
        probe();
    }
    berth.run_ok(["network", "rm", "crash"]);
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// Sizes: /16 and /30
// ---------------------------------------------------------------------

#[test]
fn wide_and_tiny_networks() {
    require_root!();
    let berth = Berth::new();
    create_network(&berth, "wide", "10.90.0.0/16");
    let id = run_d(&berth, &["--net", "wide", "busybox", "sleep", "60"]);
    assert_eq!(ip_of(&berth, &id), Ipv4Addr::new(10, 90, 0, 2));
    let out = exec(&berth, &id, &["ping", "-c", "1", "-W", "5", "10.90.0.1"]);
    assert!(out.status.success(), "ping the gateway\n{}", describe(&out));
    assert_eq!(endpoint(&berth, &id)["prefix_len"], 16);

    // A /30 has one address besides the gateway.
    create_network(&berth, "tiny", "10.91.0.0/30");
    let only = run_d(&berth, &["--net", "tiny", "busybox", "sleep", "60"]);
    assert_eq!(ip_of(&berth, &only), Ipv4Addr::new(10, 91, 0, 2));
    let line = rejected(&berth, &["run", "--net", "tiny", "busybox", "true"]);
    assert!(
        line.contains("tiny") || line.contains("10.91.0.0/30"),
        "{line}"
    );
    assert!(line.contains("full") || line.contains("no free"), "{line}");
    rejected(
        &berth,
        &[
            "run", "-d", "--name", "late", "--net", "tiny", "-p", "8099:80", "busybox", "true",
        ],
    );
    // Freed, it is taken again at once.
    berth.run_ok(["rm", "-f", &only]);
    let next = run_d(&berth, &["--net", "tiny", "busybox", "sleep", "60"]);
    assert_eq!(ip_of(&berth, &next), Ipv4Addr::new(10, 91, 0, 2));
    berth.run_ok(["rm", "-f", &id, &next]);
    berth.run_ok(["network", "rm", "wide", "tiny"]);
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// none and host
// ---------------------------------------------------------------------

#[test]
fn net_none_has_only_lo_and_net_host_sees_the_host() {
    require_root!();
    let berth = Berth::new();
    let out = berth.run_ok([
        "run", "--rm", "--net", "none", "busybox", "ip", "-o", "link",
    ]);
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(str::trim))
        .collect();
    assert_eq!(names, ["lo"], "--net none:\n{out}");
    let record_links = links(&berth);
    assert_eq!(record_links, ["lo"], "--net none made links in the host");

    // The "host" is the sandbox: give it a recognisable link (a veth:
    // the dummy driver may be missing).
    ip(
        berth.netns(),
        &[
            "link",
            "add",
            "bt-hostonly",
            "type",
            "veth",
            "peer",
            "name",
            "bt-hostpeer",
        ],
    );
    ip(
        berth.netns(),
        &["addr", "add", "10.92.0.1/24", "dev", "bt-hostonly"],
    );
    let out = berth.run_ok([
        "run", "--rm", "--net", "host", "busybox", "ip", "-o", "addr",
    ]);
    assert!(
        out.contains("bt-hostonly") && out.contains("10.92.0.1/24"),
        "--net host does not see the host's links:\n{out}"
    );
    assert!(
        iptables(&berth).lines().all(|l| !l.contains("berth")),
        "none/host made firewall rules:\n{}",
        iptables(&berth)
    );
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------

#[test]
fn bad_network_input_is_one_line_and_changes_nothing() {
    require_root!();
    let berth = Berth::new();
    create_network(&berth, "taken", "10.93.0.0/24");
    create_network(&berth, "other", "10.94.0.0/24");
    let holder = run_d(
        &berth,
        &[
            "--name", "holder", "--net", "taken", "-p", "8082:80", "busybox", "sleep", "60",
        ],
    );

    let cases: &[(&[&str], &str)] = &[
        (
            &["network", "create", "--subnet", "10.93.0.128/25", "overlap"],
            "10.93",
        ),
        (
            &["network", "create", "--subnet", "10.0.0.0/8", "overlap"],
            "10.0.0.0/8",
        ),
        (
            &["network", "create", "--subnet", "10.95.0.0/33", "badcidr"],
            "10.95.0.0/33",
        ),
        (
            &["network", "create", "--subnet", "banana", "badcidr"],
            "banana",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.95.0.0/24",
                "--gateway",
                "10.96.0.1",
                "gw",
            ],
            "10.96.0.1",
        ),
        (
            &["network", "create", "--subnet", "10.95.0.0/24", "taken"],
            "taken",
        ),
        (&["run", "--net", "nosuch", "busybox", "true"], "nosuch"),
        (
            &["run", "--net", "taken", "-p", "8082:80", "busybox", "true"],
            "8082",
        ),
        (
            &[
                "run", "-d", "--net", "other", "-p", "8082:81", "busybox", "sleep", "5",
            ],
            "8082",
        ),
        (
            &["run", "--net", "taken", "-p", "70000:80", "busybox", "true"],
            "70000",
        ),
        (
            &["run", "--net", "taken", "-p", "abc", "busybox", "true"],
            "abc",
        ),
        (
            &[
                "run", "--net", "taken", "-p", "8083:80", "-p", "8083:81", "busybox", "true",
            ],
            "8083",
        ),
        (
            &["run", "--net", "none", "-p", "80:80", "busybox", "true"],
            "none",
        ),
    ];
    for (args, mention) in cases {
        let line = rejected(&berth, args);
        assert!(
            line.contains(mention),
            "`berth {}`: the error does not mention {mention:?}: {line}",
            args.join(" ")
        );
    }

    // Removing a network in use: refused (non-zero, one line), kept.
    let before = snapshot(&berth);
    let out = berth.output(["network", "rm", "taken"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.lines().count() == 1 && err.starts_with("berth: ") && err.contains("taken"),
        "network rm of a network in use\n{}",
        describe(&out)
    );
    assert_same(&before, &snapshot(&berth), "`berth network rm taken`");

    // The holder still works on its port afterwards.
    assert_eq!(network_containers(&berth, "taken"), [holder.as_str()]);
    berth.run_ok(["rm", "-f", &holder]);
    berth.run_ok(["network", "rm", "taken", "other"]);
    berth.assert_clean();
}

#[test]
fn port_errors_say_it_once() {
    require_root!();
    let berth = Berth::new();
    for bad in ["70000:80", "abc", "80:0", "80:80/sctp"] {
        let out = berth.output(["run", "--net", "none", "-p", bad, "busybox", "true"]);
        let line = assert_berth_error(&out, 125);
        assert_eq!(
            line.matches(bad).count(),
            1,
            "the error should name {bad:?} once: {line}"
        );
    }
    berth.assert_clean();
}

#[test]
fn rejected_runs_do_not_create_the_default_network() {
    require_root!();
    let berth = Berth::new();
    run_d(
        &berth,
        &["--name", "named", "--net", "none", "busybox", "sleep", "60"],
    );
    let mut failures = Vec::new();
    for args in [
        &["run", "-p", "70000:80", "busybox", "true"][..],
        &["run", "--pull", "never", "nosuchimage", "true"],
        &["run", "--name", "named", "busybox", "true"],
        &["run", "-p", "8084:80", "-p", "8084:81", "busybox", "true"],
    ] {
        if let Err(e) = try_rejected(&berth, args) {
            failures.push(e);
            // Back to no default network for the next case.
            let _ = berth.output(["network", "rm", "bridge"]);
        }
    }
    berth.assert_clean();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn network_container_mode_shares_the_other_containers_stack_and_names() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run",
        "-d",
        "--name",
        "holder",
        "busybox",
        "sh",
        "-c",
        "echo shared > /index.html; exec httpd -f -p 127.0.0.1:8080 -h /",
    ]);
    let holder = berth.inspect("holder");
    let hostname = holder["hostname"].as_str().expect("hostname").to_owned();
    let holder_ip = endpoint(&berth, "holder")["ip"]
        .as_str()
        .expect("ip")
        .to_owned();
    let joiner = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network", "container:holder"];
        all.extend(args);
        berth.run_ok(all)
    };
    // Its loopback is the holder's: the server on 127.0.0.1 answers.
    let page = joiner(&["busybox", "wget", "-qO-", "http://127.0.0.1:8080/"]);
    assert_eq!(page, "shared\n");
    let addresses = joiner(&["busybox", "ip", "-4", "addr", "show", "eth0"]);
    assert!(addresses.contains(&holder_ip), "{addresses}");
    assert_eq!(joiner(&["busybox", "hostname"]).trim(), hostname);
    let hosts = joiner(&["busybox", "cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&holder_ip),
        "the holder's /etc/hosts: {hosts}"
    );

    for bad in [
        vec![
            "run",
            "--rm",
            "--network",
            "container:holder",
            "-p",
            "8081:80",
            "busybox",
            "true",
        ],
        vec![
            "run",
            "--rm",
            "--network",
            "container:holder",
            "-h",
            "x",
            "busybox",
            "true",
        ],
        vec![
            "run",
            "--rm",
            "--network",
            "container:nosuch",
            "busybox",
            "true",
        ],
    ] {
        assert_berth_error(&berth.output(&bad), 125);
    }
    berth.run_ok(["stop", "-t", "1", "holder"]);
    let stopped = berth.output([
        "run",
        "--rm",
        "--network",
        "container:holder",
        "busybox",
        "true",
    ]);
    let message = assert_berth_error(&stopped, 125);
    assert!(message.contains("not running"), "{message}");
    berth.run_ok(["rm", "holder"]);
    berth.assert_clean();
}

#[test]
fn publish_all_and_bare_container_ports_get_free_host_ports() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["run", "--net", "none", "--name", "base", "busybox", "true"]);
    berth.run_ok([
        "commit",
        "-c",
        "EXPOSE 80",
        "-c",
        "EXPOSE 9999/udp",
        "base",
        "exposed",
    ]);
    let mut args: Vec<String> = ["run", "-d", "--name", "web", "-P", "-p", "7070"]
        .map(String::from)
        .to_vec();
    let mut command = httpd("published-all");
    command[0] = "exposed".into();
    args.extend(command);
    berth.run_ok(&args);
    let ports = berth.run_ok(["port", "web"]);
    let host_port = |spec: &str| -> u16 {
        let line = ports
            .lines()
            .find(|l| l.starts_with(&format!("{spec} -> ")))
            .unwrap_or_else(|| panic!("{spec} is not published: {ports}"));
        line.rsplit(':').next().unwrap().parse().expect("a port")
    };
    let (web, udp, extra) = (
        host_port("80/tcp"),
        host_port("9999/udp"),
        host_port("7070/tcp"),
    );
    // The range of the namespace berth ran in (a host may set its own).
    let range = in_netns(berth.netns().path(), || {
        fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").expect("range")
    });
    let bounds: Vec<u16> = range
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    for port in [web, udp, extra] {
        assert!(
            (bounds[0]..=bounds[1]).contains(&port),
            "{port} is an ephemeral port ({range})"
        );
    }
    assert_ne!(web, extra);
    let gateway: Ipv4Addr = endpoint(&berth, "web")["gateway"]
        .as_str()
        .expect("gateway")
        .parse()
        .expect("an address");
    let response = http_get_eventually(berth.netns(), SocketAddr::from((gateway, web)), STEP);
    assert!(response.contains("published-all"), "{response}");
    berth.run_ok(["rm", "-f", "web", "base"]);
    berth.run_ok(["rmi", "exposed"]);
    berth.assert_clean();
}

#[test]
fn a_host_port_a_host_process_listens_on_is_refused() {
    require_root!();
    let berth = Berth::new();
    // A service of the host's (inside the test's namespace) on 18095.
    let listener = in_netns(berth.netns().path(), || {
        TcpListener::bind(("0.0.0.0", 18095)).expect("bind 18095")
    });
    let out = berth.output([
        "run", "--name", "thief", "-p", "18095:80", "busybox", "true",
    ]);
    let message = assert_berth_error(&out, 125);
    assert!(
        message.contains("18095") && message.contains("in use"),
        "{message}"
    );
    assert!(berth.container_ids().is_empty(), "nothing is left of it");
    drop(listener);
    // Once the service is gone the port can be published. (A child that
    // another test thread forked meanwhile holds a copy of the listener
    // until it execs: the port is free once that is over.)
    let free = wait_until(STEP, || {
        in_netns(berth.netns().path(), || {
            TcpListener::bind(("0.0.0.0", 18095)).is_ok()
        })
    });
    assert!(
        free,
        "port 18095 stayed bound after the listener was dropped"
    );
    berth.run_ok(["run", "--rm", "-p", "18095:80", "busybox", "true"]);
    berth.assert_clean();
}
