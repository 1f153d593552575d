//! User-defined networks (issue 15): subnets chosen clear of the host's
//! addresses and routes, `--internal`, live `network connect` /
//! `disconnect`, names and aliases that resolve whenever a container
//! joined, and state roots that keep to their own bridges.
//!
//! As in `network.rs`, every berth command runs inside the test's private
//! network namespace (the [`Berth`] sandbox, "the host"); an "outside"
//! host is another namespace made here, joined to the sandbox by a veth
//! pair. No packet leaves these namespaces.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use berth_e2e::netns_tools::{
    exec, firewall_backend, holder_pid, ip, ip6tables, iptables, network_inspect,
    outside_namespace, FakeDns,
};
use berth_e2e::{describe, require_root, stderr, stdout, wait_until, Berth, NetSandbox};

/// Long enough for a slow VM; passing steps take milliseconds.
const STEP: Duration = Duration::from_secs(20);

/// Names of the links in `ns`, sorted.
fn links(ns: &NetSandbox) -> Vec<String> {
    let out = ip(ns, &["-j", "link"]);
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

/// The subnet `network inspect` reports.
fn subnet_of(berth: &Berth, network: &str) -> String {
    network_inspect(berth, network)["subnet"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Whether `from` gets an answer to one ping of `to`.
fn pings(berth: &Berth, from: &str, to: &str) -> bool {
    exec(berth, from, &["ping", "-c", "1", "-W", "2", to])
        .status
        .success()
}

/// Assert that `args` fails with one `berth: ` line; returns it.
fn one_line_error(berth: &Berth, args: &[&str]) -> String {
    let out = berth.output(args);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.lines().count() == 1 && err.starts_with("berth: "),
        "`berth {}`: expected one `berth: ` line\n{}",
        args.join(" "),
        describe(&out)
    );
    err.trim_end().to_owned()
}

/// `docker inspect`'s NetworkSettings.Networks of a container.
fn networks_of(berth: &Berth, container: &str) -> serde_json::Value {
    let out = berth.run_ok([
        "inspect",
        "--type",
        "container",
        "-f",
        "{{json .NetworkSettings.Networks}}",
        container,
    ]);
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("Networks of {container}: {e}\n{out}"))
}

// ---------------------------------------------------------------------
// network create without --subnet
// ---------------------------------------------------------------------

#[test]
fn network_create_without_subnet_avoids_host_addresses_and_other_networks() {
    require_root!();
    let berth = Berth::new();
    let host = berth.netns();
    // Something else on "the host" already uses 172.18.5.0/24: another
    // engine's bridge with an address there.
    ip(host, &["link", "add", "other0", "type", "bridge"]);
    ip(host, &["addr", "add", "172.18.5.1/24", "dev", "other0"]);
    ip(host, &["link", "set", "other0", "up"]);

    berth.run_ok(["network", "create", "first"]);
    // 172.17 is the default network's; 172.18 overlaps the host's.
    assert_eq!(subnet_of(&berth, "first"), "172.19.0.0/16");
    assert_eq!(network_inspect(&berth, "first")["gateway"], "172.19.0.1");
    berth.run_ok(["network", "create", "second"]);
    assert_eq!(subnet_of(&berth, "second"), "172.20.0.0/16");
    // A route (not only an address) counts too.
    ip(host, &["route", "add", "172.21.0.0/16", "dev", "other0"]);
    berth.run_ok(["network", "create", "third"]);
    assert_eq!(subnet_of(&berth, "third"), "172.22.0.0/16");

    // An explicit subnet over another network is refused, one line.
    let err = one_line_error(
        &berth,
        &["network", "create", "--subnet", "172.20.3.0/24", "clash"],
    );
    assert!(err.contains("overlaps"), "{err}");

    // So is an explicit one over an address or route of the host.
    let err = one_line_error(
        &berth,
        &["network", "create", "--subnet", "172.18.0.0/16", "onhost"],
    );
    assert!(err.contains("host"), "{err}");
    assert!(!stdout(&berth.output(["network", "ls"])).contains("onhost"));

    // The chosen network works: a container on it reaches its gateway.
    berth.run_detached(["--name", "c", "--net", "first", "busybox", "sleep", "60"]);
    assert!(pings(&berth, "c", "172.19.0.1"), "gateway of first");
    berth.run_ok(["rm", "-f", "c"]);

    // A host where docker0 holds 172.17.0.0/16: the default network,
    // made on first use, takes the next free pool instead.
    ip(host, &["link", "add", "docker0", "type", "bridge"]);
    ip(host, &["addr", "add", "172.17.0.1/16", "dev", "docker0"]);
    berth.run_detached(["--name", "d", "busybox", "sleep", "60"]);
    assert_eq!(subnet_of(&berth, "bridge"), "172.23.0.0/16");
    assert!(pings(&berth, "d", "172.23.0.1"), "gateway of bridge");
    berth.run_ok(["rm", "-f", "d"]);

    let bridges: Vec<String> = ["first", "second", "third"]
        .iter()
        .map(|n| {
            network_inspect(&berth, n)["bridge"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    berth.run_ok(["network", "rm", "first", "second", "third"]);
    let left = links(host);
    assert!(
        bridges.iter().all(|b| !left.contains(b)),
        "bridges {bridges:?} left: {left:?}"
    );
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// --internal
// ---------------------------------------------------------------------

#[test]
fn internal_network_reaches_its_containers_but_not_the_outside() {
    require_root!();
    let berth = Berth::new();
    let host = berth.netns();
    // The "outside": another namespace, routed through the sandbox.
    let outside = NetSandbox::new();
    ip(
        host,
        &[
            "link", "add", "up0", "type", "veth", "peer", "name", "down0",
        ],
    );
    ip(
        host,
        &["link", "set", "down0", "netns", &holder_pid(&outside)],
    );
    ip(host, &["addr", "add", "10.99.0.1/24", "dev", "up0"]);
    ip(host, &["link", "set", "up0", "up"]);
    ip(&outside, &["addr", "add", "10.99.0.2/24", "dev", "down0"]);
    ip(&outside, &["link", "set", "down0", "up"]);

    berth.run_ok([
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.82.0.0/24",
        "inside",
    ]);
    berth.run_ok(["network", "create", "--subnet", "10.83.0.0/24", "open"]);
    assert_eq!(network_inspect(&berth, "inside")["internal"], true);
    for (name, net) in [("a", "inside"), ("b", "inside"), ("c", "open")] {
        berth.run_detached(["--name", name, "--net", net, "busybox", "sleep", "60"]);
    }
    // The outside is reachable from an ordinary network...
    assert!(
        pings(&berth, "c", "10.99.0.2"),
        "c (open) cannot reach the outside"
    );
    // ...but not from the internal one, which has no route out.
    assert!(
        !pings(&berth, "a", "10.99.0.2"),
        "a (internal) reached the outside"
    );
    let routes = stdout(&exec(&berth, "a", &["ip", "route"]));
    assert!(
        !routes.contains("default"),
        "internal: a default route\n{routes}"
    );
    // Its containers reach each other, by address and by name.
    assert!(pings(&berth, "a", "b"), "a cannot reach b by name");
    assert!(pings(&berth, "b", "a"), "b cannot reach a by name");

    // Publishing on an internal network is refused before anything runs.
    let err = one_line_error(
        &berth,
        &[
            "run", "--rm", "--pull", "never", "--net", "inside", "-p", "8080:80", "busybox", "true",
        ],
    );
    assert!(err.contains("internal"), "{err}");

    berth.run_ok(["rm", "-f", "a", "b", "c"]);
    berth.run_ok(["network", "rm", "inside", "open"]);
    let rules = iptables(&berth);
    assert!(
        !rules.contains("berth:inside") && !rules.contains("berth:open"),
        "rules left:\n{rules}"
    );
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// Two state roots on one host
// ---------------------------------------------------------------------

/// `berth --root <other's root> ARGS...` run in `host`'s sandbox: a second
/// state root on the same "host".
fn second_root(host: &Berth, other: &Berth, args: &[&str]) -> Output {
    let mut cmd = Command::new(other.bin());
    cmd.arg("--root")
        .arg(other.root())
        .args(args)
        .env_remove("BERTH_ROOT")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    host.netns().enter(&mut cmd);
    berth_e2e::run_command(cmd)
}

fn second_root_ok(host: &Berth, other: &Berth, args: &[&str]) -> String {
    let out = second_root(host, other, args);
    assert!(
        out.status.success(),
        "`berth --root B {}` failed\n{}",
        args.join(" "),
        describe(&out)
    );
    stdout(&out)
}

/// The recorded endpoint (`network` object) of a container of `root`.
fn endpoint_in(host: &Berth, root: &Berth, container: &str) -> serde_json::Value {
    let id = second_root_ok(
        host,
        root,
        &["inspect", "--type", "container", "-f", "{{.Id}}", container],
    );
    let path: PathBuf = root
        .root()
        .join("containers")
        .join(id.trim())
        .join("config.json");
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
    )
    .expect("json");
    record["network"].clone()
}

#[test]
fn two_state_roots_get_their_own_bridges_and_leave_each_other_alone() {
    require_root!();
    let a = Berth::new();
    let b = Berth::new();
    let run = ["run", "-d", "--pull", "never", "busybox", "sleep", "60"];
    let mut run_a = run.to_vec();
    run_a.splice(2..2, ["--name", "a1"]);
    let mut run_b = run.to_vec();
    run_b.splice(2..2, ["--name", "b1"]);
    second_root_ok(&a, &a, &run_a);
    second_root_ok(&a, &b, &run_b);
    let (ea, eb) = (endpoint_in(&a, &a, "a1"), endpoint_in(&a, &b, "b1"));
    assert_ne!(ea["bridge"], eb["bridge"], "{ea:#}\n{eb:#}");
    assert_ne!(ea["ip"], eb["ip"], "{ea:#}\n{eb:#}");
    assert_ne!(ea["mac"], eb["mac"], "{ea:#}\n{eb:#}");
    let ip_a: Ipv4Addr = ea["ip"].as_str().unwrap().parse().unwrap();
    let ip_b: Ipv4Addr = eb["ip"].as_str().unwrap().parse().unwrap();
    let prefix_a = ea["prefix_len"].as_u64().unwrap() as u32;
    let mask = u32::MAX << (32 - prefix_a);
    assert_ne!(
        u32::from(ip_a) & mask,
        u32::from(ip_b) & mask,
        "the roots' default networks overlap: {ip_a} and {ip_b}"
    );
    // Each bridge is marked with its owner.
    let bridge_a = ea["bridge"].as_str().unwrap().to_owned();
    let details = ip(a.netns(), &["-d", "link", "show", &bridge_a]);
    assert!(
        details.contains(&a.root().join("networks").display().to_string()),
        "bridge {bridge_a} does not name its root:\n{details}"
    );

    // B removes all it has: A's container keeps its network.
    second_root_ok(&a, &b, &["rm", "-f", "b1"]);
    second_root_ok(
        &a,
        &b,
        &["network", "create", "--subnet", "10.84.0.0/24", "mine"],
    );
    second_root_ok(&a, &b, &["network", "rm", "mine"]);
    second_root_ok(&a, &b, &["network", "prune", "-f"]);
    let out = second_root(&a, &b, &["network", "rm", "bridge"]);
    assert!(
        !out.status.success(),
        "the default network was removed\n{}",
        describe(&out)
    );
    let gateway_a = ea["gateway"].as_str().unwrap().to_owned();
    let ping = second_root(
        &a,
        &a,
        &["exec", "a1", "ping", "-c", "1", "-W", "2", &gateway_a],
    );
    assert!(
        ping.status.success(),
        "a1 lost its network\n{}",
        describe(&ping)
    );
    assert!(
        links(a.netns()).contains(&bridge_a),
        "bridge {bridge_a} removed"
    );

    second_root_ok(&a, &a, &["rm", "-f", "a1"]);
    let settled = wait_until(STEP, || {
        !links(a.netns()).iter().any(|l| l.starts_with("vb"))
    });
    assert!(settled, "veths left: {:?}", links(a.netns()));
    a.assert_clean();
}

// ---------------------------------------------------------------------
// Live names
// ---------------------------------------------------------------------

/// Whether `container`'s /etc/hosts maps `name` to some address.
fn hosts_names(berth: &Berth, container: &str, name: &str) -> bool {
    let hosts = stdout(&exec(berth, container, &["cat", "/etc/hosts"]));
    hosts
        .lines()
        .any(|l| l.split_whitespace().skip(1).any(|w| w == name))
}

#[test]
fn a_container_started_later_resolves_from_one_started_earlier_until_it_goes() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["network", "create", "--subnet", "10.85.0.0/24", "talk"]);
    berth.run_detached(["--name", "early", "--net", "talk", "busybox", "sleep", "60"]);
    berth.run_detached([
        "--name",
        "later",
        "--net",
        "talk",
        "--network-alias",
        "cache",
        "--network-alias",
        "kv",
        "busybox",
        "sleep",
        "60",
    ]);
    // Started before `later` existed, `early` knows it by name and alias.
    for name in ["later", "cache", "kv"] {
        assert!(pings(&berth, "early", name), "early cannot reach {name}");
    }
    assert!(pings(&berth, "later", "early"), "later cannot reach early");
    // inspect shows the aliases.
    let networks = networks_of(&berth, "later");
    assert_eq!(
        networks["talk"]["Aliases"],
        serde_json::json!(["cache", "kv"])
    );

    // Gone with the container.
    berth.run_ok(["rm", "-f", "later"]);
    assert!(
        !hosts_names(&berth, "early", "later") && !hosts_names(&berth, "early", "cache"),
        "early still names the removed container"
    );
    // Aliases need a user-defined network, as in docker.
    let err = one_line_error(
        &berth,
        &[
            "run",
            "--rm",
            "--pull",
            "never",
            "--network-alias",
            "x",
            "busybox",
            "true",
        ],
    );
    assert!(err.contains("user-defined"), "{err}");

    berth.run_ok(["rm", "-f", "early"]);
    berth.run_ok(["network", "rm", "talk"]);
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// network connect / disconnect
// ---------------------------------------------------------------------

/// The IPv4 addresses on `ifname` inside `container` (none when it has no
/// such interface).
fn addresses_on(berth: &Berth, container: &str, ifname: &str) -> Vec<String> {
    let out = exec(
        berth,
        container,
        &["ip", "-4", "-o", "addr", "show", "dev", ifname],
    );
    stdout(&out)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next().map(str::to_owned)
        })
        .collect()
}

#[test]
fn connect_and_disconnect_running_and_stopped_containers() {
    require_root!();
    let berth = Berth::new();
    let links_before = links(berth.netns());
    berth.run_ok(["network", "create", "--subnet", "10.86.0.0/24", "front"]);
    berth.run_ok(["network", "create", "--subnet", "10.87.0.0/24", "back"]);
    let app = berth.run_detached(["--name", "app", "--net", "front", "busybox", "sleep", "60"]);
    berth.run_detached(["--name", "db", "--net", "back", "busybox", "sleep", "60"]);
    assert!(addresses_on(&berth, "app", "eth1").is_empty());
    assert!(!pings(&berth, "app", "db"), "app reached db before connect");

    // Live: a new interface, the asked-for address, names both ways.
    berth.run_ok([
        "network",
        "connect",
        "--alias",
        "store",
        "--ip",
        "10.87.0.50",
        "back",
        "app",
    ]);
    assert_eq!(addresses_on(&berth, "app", "eth1"), ["10.87.0.50/24"]);
    assert!(
        pings(&berth, "app", "db"),
        "app cannot reach db after connect"
    );
    assert!(pings(&berth, "db", "app"), "db cannot reach app by name");
    assert!(pings(&berth, "db", "store"), "db cannot reach app's alias");
    // The main network's route out is untouched.
    let routes = stdout(&exec(&berth, "app", &["ip", "route"]));
    assert!(
        routes.contains("default via 10.86.0.1 dev eth0"),
        "{routes}"
    );
    let networks = networks_of(&berth, "app");
    assert_eq!(networks["back"]["IPAddress"], "10.87.0.50", "{networks:#}");
    assert_eq!(networks["back"]["Aliases"], serde_json::json!(["store"]));
    assert_eq!(networks["front"]["Gateway"], "10.86.0.1", "{networks:#}");
    let on_back = berth.run_ok(["ps", "-q", "--no-trunc", "--filter", "network=back"]);
    assert!(
        on_back.contains(&app),
        "ps --filter network=back:\n{on_back}"
    );
    let extra_veth = format!("vb{}x1", &app[..10]);
    assert!(links(berth.netns()).contains(&extra_veth));

    // Refusals: one line each, nothing changed.
    for (args, says) in [
        (
            vec!["network", "connect", "back", "app"],
            "already connected",
        ),
        (
            vec!["network", "connect", "--ip", "10.86.0.2", "front", "db"],
            "in use",
        ),
        (vec!["network", "connect", "nosuch", "app"], "not found"),
        (vec!["network", "disconnect", "back", "db2"], "db2"),
        (vec!["network", "rm", "back"], "connected"),
    ] {
        let err = one_line_error(&berth, &args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(addresses_on(&berth, "app", "eth1"), ["10.87.0.50/24"]);

    // Live disconnect: the interface, the veth, the name and the lease go.
    berth.run_ok(["network", "disconnect", "back", "app"]);
    assert!(addresses_on(&berth, "app", "eth1").is_empty());
    let routes = stdout(&exec(&berth, "app", &["ip", "route"]));
    assert!(
        !routes.contains("10.87.0.0/24"),
        "a route to back is left:\n{routes}"
    );
    assert!(!hosts_names(&berth, "db", "app"), "db still names app");
    assert!(
        !hosts_names(&berth, "app", "db"),
        "app still names db:\n{}",
        stdout(&exec(&berth, "app", &["cat", "/etc/hosts"]))
    );
    assert!(!links(berth.netns()).contains(&extra_veth));
    assert_eq!(
        networks_of(&berth, "app").as_object().map(|o| o.len()),
        Some(1)
    );
    // The freed address can be taken again at once.
    berth.run_ok(["network", "connect", "--ip", "10.87.0.50", "back", "app"]);
    berth.run_ok(["network", "disconnect", "back", "app"]);

    // A created container: recorded now, joined at start.
    berth.run_ok([
        "create", "--pull", "never", "--name", "late", "--net", "front", "busybox", "sleep", "60",
    ]);
    berth.run_ok(["network", "connect", "back", "late"]);
    berth.run_ok(["start", "late"]);
    let on_back = addresses_on(&berth, "late", "eth1");
    assert!(
        on_back.len() == 1 && on_back[0].starts_with("10.87.0."),
        "late on back: {on_back:?}"
    );
    assert!(pings(&berth, "db", "late"), "db cannot reach late");
    // Stopped and started again: the connection stays.
    berth.run_ok(["stop", "-t", "1", "late"]);
    berth.run_ok(["start", "late"]);
    assert_eq!(addresses_on(&berth, "late", "eth1").len(), 1);

    berth.run_ok(["rm", "-f", "app", "db", "late"]);
    berth.run_ok(["network", "rm", "front", "back"]);
    let settled = wait_until(STEP, || links(berth.netns()) == links_before);
    assert!(settled, "links left: {:?}", links(berth.netns()));
    // No lease, port claim or owner index left in the IPAM store.
    let ipam = berth.root().join("networks/ipam");
    assert!(ipam.join("ipam.lock").exists(), "no IPAM store at {ipam:?}");
    let left: Vec<String> = ["owners", "ports", "v4/front/leases", "v4/back/leases"]
        .iter()
        .filter_map(|dir| std::fs::read_dir(ipam.join(dir)).ok())
        .flatten()
        .map(|entry| entry.unwrap().path().display().to_string())
        .collect();
    assert!(left.is_empty(), "IPAM records left: {left:?}");
    berth.assert_clean();
}

#[test]
fn parallel_starts_and_an_exit_keep_every_hosts_file_complete() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["network", "create", "--subnet", "10.88.0.0/24", "crowd"]);
    let names: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    std::thread::scope(|scope| {
        for name in &names {
            let berth = &berth;
            scope.spawn(move || {
                berth.run_detached(["--name", name, "--net", "crowd", "busybox", "sleep", "60"]);
            });
        }
    });
    // Whatever order they started in, each knows all the others.
    for me in &names {
        for other in names.iter().filter(|n| *n != me) {
            assert!(
                hosts_names(&berth, me, other),
                "{me} does not name {other}:\n{}",
                stdout(&exec(&berth, me, &["cat", "/etc/hosts"]))
            );
        }
    }
    // One that exits on its own leaves the others' files.
    berth.run_detached(["--name", "brief", "--net", "crowd", "busybox", "sleep", "1"]);
    assert!(hosts_names(&berth, "m0", "brief"));
    let gone = wait_until(STEP, || !hosts_names(&berth, "m0", "brief"));
    assert!(gone, "m0 still names the exited container");

    let mut rm = vec!["rm", "-f", "brief"];
    rm.extend(names.iter().map(String::as_str));
    berth.run_ok(rm);
    berth.run_ok(["network", "rm", "crowd"]);
    berth.assert_clean();
}

#[test]
fn run_ip_takes_the_asked_address_and_refuses_a_taken_one() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["network", "create", "--subnet", "10.89.0.0/24", "fixed"]);
    berth.run_detached([
        "--name",
        "pinned",
        "--net",
        "fixed",
        "--ip",
        "10.89.0.77",
        "busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(addresses_on(&berth, "pinned", "eth0"), ["10.89.0.77/24"]);
    assert_eq!(
        networks_of(&berth, "pinned")["fixed"]["IPAddress"],
        "10.89.0.77"
    );
    // Taken, outside the subnet, or on the default network: one line each.
    for (args, says) in [
        (vec!["--net", "fixed", "--ip", "10.89.0.77"], "in use"),
        (vec!["--net", "fixed", "--ip", "10.90.0.5"], "10.89.0.0/24"),
        (vec!["--ip", "172.17.0.9"], "user defined"),
    ] {
        let mut run = vec!["run", "--rm", "--pull", "never"];
        run.extend(args.iter().copied());
        run.extend(["busybox", "true"]);
        let err = one_line_error(&berth, &run);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(
        pings(&berth, "pinned", "10.89.0.1"),
        "pinned lost its network"
    );
    // Stopped and started again, it gets the same address.
    berth.run_ok(["stop", "-t", "1", "pinned"]);
    berth.run_ok(["start", "pinned"]);
    assert_eq!(addresses_on(&berth, "pinned", "eth0"), ["10.89.0.77/24"]);
    berth.run_ok(["rm", "-f", "pinned"]);
    berth.run_ok(["network", "rm", "fixed"]);
    berth.assert_clean();
}

#[test]
fn network_labels_are_kept_and_select_what_prune_removes() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "network", "create", "--label", "tier=web", "--label", "x", "labelled",
    ]);
    berth.run_ok(["network", "create", "plain"]);
    let labels = &network_inspect(&berth, "labelled")["labels"];
    assert_eq!(labels, &serde_json::json!({"tier": "web", "x": ""}));
    berth.run_ok(["network", "prune", "-f", "--filter", "label=tier=web"]);
    let ls = berth.run_ok(["network", "ls"]);
    assert!(!ls.contains("labelled") && ls.contains("plain"), "{ls}");
    berth.run_ok(["network", "rm", "plain"]);
    berth.assert_clean();
}

#[test]
fn ip_range_hands_out_addresses_from_the_range_and_ip_may_leave_it() {
    require_root!();
    let berth = Berth::new();
    // Outside the subnet, or not a CIDR: one line, no network left.
    for range in ["10.92.0.0/24", "10.91.0.300/28"] {
        let err = one_line_error(
            &berth,
            &[
                "network",
                "create",
                "--subnet",
                "10.91.0.0/24",
                "--ip-range",
                range,
                "ranged",
            ],
        );
        assert!(err.contains("range"), "{range}: {err}");
    }
    assert!(!berth.run_ok(["network", "ls"]).contains("ranged"));
    berth.run_ok([
        "network",
        "create",
        "--subnet",
        "10.91.0.0/24",
        "--ip-range",
        "10.91.0.200/30",
        "ranged",
    ]);
    let config = &network_inspect(&berth, "ranged")["IPAM"]["Config"][0];
    assert_eq!(config["Subnet"], "10.91.0.0/24");
    assert_eq!(config["IPRange"], "10.91.0.200/30");
    for name in ["r1", "r2"] {
        berth.run_detached(["--name", name, "--net", "ranged", "busybox", "sleep", "60"]);
    }
    assert_eq!(addresses_on(&berth, "r1", "eth0"), ["10.91.0.200/24"]);
    assert_eq!(addresses_on(&berth, "r2", "eth0"), ["10.91.0.201/24"]);
    // `--ip` may name an address of the subnet outside the range.
    berth.run_detached([
        "--name",
        "outside",
        "--net",
        "ranged",
        "--ip",
        "10.91.0.9",
        "busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(addresses_on(&berth, "outside", "eth0"), ["10.91.0.9/24"]);
    assert!(pings(&berth, "outside", "10.91.0.201"));
    berth.run_ok(["rm", "-f", "r1", "r2", "outside"]);
    berth.run_ok(["network", "rm", "ranged"]);
    berth.assert_clean();
}

#[test]
fn mac_address_is_set_inside_shown_by_inspect_and_unique_on_a_network() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["network", "create", "--subnet", "10.93.0.0/24", "macs"]);
    let mac = "92:d0:c6:0a:29:33";
    berth.run_detached([
        "--name",
        "m1",
        "--net",
        "macs",
        "--mac-address",
        "92:D0:C6:0A:29:33",
        "busybox",
        "sleep",
        "60",
    ]);
    let inside = stdout(&exec(&berth, "m1", &["cat", "/sys/class/net/eth0/address"]));
    assert_eq!(inside.trim(), mac);
    let shown = berth.run_ok(["inspect", "-f", "{{.NetworkSettings.MacAddress}}", "m1"]);
    assert_eq!(shown.trim(), mac);
    assert_eq!(networks_of(&berth, "m1")["macs"]["MacAddress"], mac);

    // The same MAC on the same network, a bad one, or one on --net none:
    // one line each, nothing left behind.
    for (args, says) in [
        (vec!["--net", "macs", "--mac-address", mac], "in use"),
        (
            vec!["--net", "macs", "--mac-address", "01:00:5e:00:00:01"],
            "multicast",
        ),
        (
            vec!["--net", "macs", "--mac-address", "92:d0:c6"],
            "--mac-address",
        ),
        (
            vec!["--net", "none", "--mac-address", "92:d0:c6:0a:29:34"],
            "conflicting",
        ),
    ] {
        let mut run = vec!["run", "--rm", "--pull", "never"];
        run.extend(args.iter().copied());
        run.extend(["busybox", "true"]);
        let err = one_line_error(&berth, &run);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(berth.container_ids().len(), 1);

    // The address works (ARP with the chosen MAC), and a restart keeps it.
    berth.run_detached(["--name", "m2", "--net", "macs", "busybox", "sleep", "60"]);
    let m1_ip = networks_of(&berth, "m1")["macs"]["IPAddress"]
        .as_str()
        .expect("m1's address")
        .to_owned();
    assert!(pings(&berth, "m2", &m1_ip), "m2 cannot reach m1");
    berth.run_ok(["stop", "-t", "1", "m1"]);
    berth.run_ok(["start", "m1"]);
    let inside = stdout(&exec(&berth, "m1", &["cat", "/sys/class/net/eth0/address"]));
    assert_eq!(inside.trim(), mac);
    // Two runs racing for one MAC: exactly one gets it.
    let racers: Vec<Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["r1", "r2"]
            .map(|name| {
                let berth = &berth;
                scope.spawn(move || {
                    berth.output([
                        "run",
                        "-d",
                        "--pull",
                        "never",
                        "--name",
                        name,
                        "--net",
                        "macs",
                        "--mac-address",
                        "92:d0:c6:0a:29:40",
                        "busybox",
                        "sleep",
                        "60",
                    ])
                })
            })
            .into_iter()
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won = racers.iter().filter(|o| o.status.success()).count();
    assert_eq!(
        won,
        1,
        "{}",
        racers.iter().map(describe).collect::<Vec<_>>().join("\n")
    );
    let lost = racers.iter().find(|o| !o.status.success()).unwrap();
    assert!(stderr(lost).contains("in use"), "{}", describe(lost));
    let winner = if racers[0].status.success() {
        "r1"
    } else {
        "r2"
    };
    berth.run_ok(["rm", "-f", winner]);
    assert_eq!(berth.container_ids().len(), 2, "the loser left nothing");

    // docker 25's long form of --network.
    berth.run_detached([
        "--name",
        "m3",
        "--network",
        "name=macs,mac-address=92:d0:c6:0a:29:35,alias=third",
        "busybox",
        "sleep",
        "60",
    ]);
    let inside = stdout(&exec(&berth, "m3", &["cat", "/sys/class/net/eth0/address"]));
    assert_eq!(inside.trim(), "92:d0:c6:0a:29:35");
    assert!(pings(&berth, "m2", "third"), "m3's alias does not resolve");
    berth.run_ok(["rm", "-f", "m1", "m2", "m3"]);
    berth.run_ok(["network", "rm", "macs"]);
    berth.assert_clean();
}

/// `berth run -d --name NAME --net NET busybox sleep 60` with the host's
/// resolver files at `stub` and `upstream`.
fn run_with_resolvers(berth: &Berth, name: &str, net: &str, stub: &Path, upstream: &Path) {
    let mut cmd = berth.cmd([
        "run", "-d", "--pull", "never", "--name", name, "--net", net, "busybox", "sleep", "60",
    ]);
    cmd.env("BERTH_RESOLV_CONF", stub)
        .env("BERTH_UPSTREAM_RESOLV_CONF", upstream);
    let out = berth_e2e::run_command(cmd);
    assert!(out.status.success(), "run {name}\n{}", describe(&out));
}

/// `container`'s address on `network`, as inspect reports it.
fn ip_of_on(berth: &Berth, container: &str, network: &str) -> String {
    networks_of(berth, container)[network]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("{container} has no address on {network}"))
        .to_owned()
}

/// `nslookup NAME` in `container` (busybox's asks DNS, never /etc/hosts):
/// the address it printed for the name, if any.
fn dns_lookup(berth: &Berth, container: &str, name: &str) -> Option<String> {
    let out = exec(berth, container, &["nslookup", name]);
    let text = stdout(&out);
    // busybox: "Name:\tNAME\nAddress: IP" after the server's lines.
    let answer = text.split_once("Name:")?.1;
    answer
        .lines()
        .find_map(|l| l.trim().strip_prefix("Address:"))
        .map(|ip| ip.trim().to_owned())
        .filter(|_| out.status.success())
}

#[test]
fn the_embedded_dns_answers_the_networks_names_live_and_relays_the_rest_upstream() {
    require_root!();
    let berth = Berth::new();
    // The fake upstream resolver, in a namespace of its own that only the
    // test's "host" routes to; it knows one name.
    let upstream_ns = outside_namespace(&berth, "dns", "10.98.0.1/24", "10.98.0.53/24");
    ip(
        &upstream_ns,
        &["route", "add", "default", "via", "10.98.0.1"],
    );
    let dns = FakeDns::start(
        &upstream_ns,
        Ipv4Addr::new(10, 98, 0, 53),
        &[("upstream-only.test", Ipv4Addr::new(10, 98, 0, 99))],
    );
    // The host runs a loopback stub (systemd-resolved's 127.0.0.53) whose
    // own configuration names the fake upstream.
    let files = tempfile::tempdir().unwrap();
    let stub = files.path().join("resolv.conf");
    let upstream = files.path().join("upstream-resolv.conf");
    std::fs::write(
        &stub,
        "nameserver 127.0.0.53\noptions edns0\nsearch corp.test\n",
    )
    .unwrap();
    std::fs::write(&upstream, "nameserver 10.98.0.53\n").unwrap();

    berth.run_ok(["network", "create", "--subnet", "10.94.0.0/24", "dnsnet"]);
    run_with_resolvers(&berth, "asker", "dnsnet", &stub, &upstream);
    berth.run_detached([
        "--name", "peer", "--net", "dnsnet", "busybox", "sleep", "60",
    ]);
    // docker's file: the embedded server, the host's search and options
    // (plus ndots:0), the servers it relays to in a comment.
    let resolv = stdout(&exec(&berth, "asker", &["cat", "/etc/resolv.conf"]));
    assert!(resolv.starts_with("nameserver 127.0.0.11\n"), "{resolv}");
    assert!(resolv.contains("# ExtServers: [10.98.0.53]"), "{resolv}");
    assert_eq!(resolv.matches("nameserver").count(), 1, "{resolv}");
    assert!(
        resolv.contains("search corp.test") && resolv.contains("options edns0 ndots:0"),
        "{resolv}"
    );

    // The network's names are answered by the embedded server, not asked
    // upstream: one started after the asker, then gone with it.
    let peer_ip = ip_of_on(&berth, "peer", "dnsnet");
    assert_eq!(dns_lookup(&berth, "asker", "peer"), Some(peer_ip));
    berth.run_detached([
        "--name",
        "late",
        "--net",
        "dnsnet",
        "--network-alias",
        "cache",
        "busybox",
        "sleep",
        "60",
    ]);
    let late_ip = ip_of_on(&berth, "late", "dnsnet");
    assert_eq!(dns_lookup(&berth, "asker", "late"), Some(late_ip.clone()));
    assert_eq!(dns_lookup(&berth, "asker", "cache"), Some(late_ip));
    assert!(
        !dns.asked
            .lock()
            .unwrap()
            .iter()
            .any(|n| ["peer", "late", "cache"].contains(&n.as_str())),
        "a network name was asked upstream: {:?}",
        dns.asked.lock().unwrap()
    );
    berth.run_ok(["rm", "-f", "late"]);
    assert_eq!(dns_lookup(&berth, "asker", "late"), None);

    // Any other name goes to the host's upstream server.
    assert_eq!(
        dns_lookup(&berth, "asker", "upstream-only.test").as_deref(),
        Some("10.98.0.99")
    );
    assert!(dns
        .asked
        .lock()
        .unwrap()
        .iter()
        .any(|n| n == "upstream-only.test"));
    assert_eq!(dns_lookup(&berth, "asker", "nowhere.test"), None);
    assert!(
        pings(&berth, "asker", "peer"),
        "asker cannot reach peer by name"
    );

    // An internal network's server answers its own names and relays
    // nothing: no name leaves it.
    berth.run_ok([
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.95.0.0/24",
        "quiet",
    ]);
    run_with_resolvers(&berth, "hermit", "quiet", &stub, &upstream);
    let asked_before = dns.asked.lock().unwrap().len();
    assert_eq!(
        dns_lookup(&berth, "hermit", "hermit"),
        Some(ip_of_on(&berth, "hermit", "quiet"))
    );
    assert_eq!(dns_lookup(&berth, "hermit", "upstream-only.test"), None);
    assert_eq!(dns.asked.lock().unwrap().len(), asked_before);

    // No upstream file: docker's defaults are named (never contacted).
    let missing = files.path().join("no-such-file");
    run_with_resolvers(&berth, "fallback", "dnsnet", &stub, &missing);
    let resolv = stdout(&exec(&berth, "fallback", &["cat", "/etc/resolv.conf"]));
    assert!(
        resolv.contains("# ExtServers: [8.8.8.8 8.8.4.4]")
            && !resolv.contains("nameserver 8.")
            && !resolv.contains("nameserver 127.0.0.53"),
        "{resolv}"
    );

    // On the default network: the host's servers, as docker has it.
    let mut cmd = berth.cmd([
        "run",
        "--rm",
        "--pull",
        "never",
        "busybox",
        "cat",
        "/etc/resolv.conf",
    ]);
    cmd.env("BERTH_RESOLV_CONF", &stub)
        .env("BERTH_UPSTREAM_RESOLV_CONF", &upstream);
    let out = berth_e2e::run_command(cmd);
    assert!(
        stdout(&out).contains("nameserver 10.98.0.53\n") && !stdout(&out).contains("127.0.0.11"),
        "{}",
        describe(&out)
    );

    berth.run_ok(["rm", "-f", "asker", "peer", "fallback", "hermit"]);
    berth.run_ok(["network", "rm", "dnsnet", "quiet"]);
    drop(dns);
    berth.assert_clean();
}

/// The global IPv6 addresses on `ifname` in `container`.
fn addresses6_on(berth: &Berth, container: &str, ifname: &str) -> Vec<String> {
    let out = exec(
        berth,
        container,
        &[
            "ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "global",
        ],
    );
    stdout(&out)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet6")?;
            words.next().map(str::to_owned)
        })
        .collect()
}

#[test]
fn ipv6_networks_give_dual_stack_addresses_names_and_reachability() {
    require_root!();
    let berth = Berth::new();
    for (args, says) in [
        (vec!["--ipv6", "v6only"], "IPv6 --subnet"),
        (vec!["--subnet", "fd00:7::/64", "noflag"], "--ipv6"),
        (
            vec!["--ipv6", "--subnet", "fd00:7::/48", "wide"],
            "fd00:7::/48",
        ),
    ] {
        let mut create = vec!["network", "create"];
        create.extend(args.iter().copied());
        let err = one_line_error(&berth, &create);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    berth.run_ok([
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "fd00:7::/64",
        "--subnet",
        "10.95.0.0/24",
        "six",
    ]);
    let network = network_inspect(&berth, "six");
    assert_eq!(network["EnableIPv6"], true);
    assert_eq!(network["IPAM"]["Config"][0]["Subnet"], "10.95.0.0/24");
    assert_eq!(network["IPAM"]["Config"][1]["Subnet"], "fd00:7::/64");
    assert_eq!(network["IPAM"]["Config"][1]["Gateway"], "fd00:7::1");
    // The bridge has the gateway address.
    let bridge = network["bridge"].as_str().expect("bridge").to_owned();
    let on_bridge = ip(berth.netns(), &["-6", "-o", "addr", "show", "dev", &bridge]);
    assert!(on_bridge.contains("fd00:7::1/64"), "{on_bridge}");

    berth.run_detached(["--name", "a6", "--net", "six", "busybox", "sleep", "60"]);
    berth.run_detached(["--name", "b6", "--net", "six", "busybox", "sleep", "60"]);
    assert_eq!(addresses_on(&berth, "a6", "eth0"), ["10.95.0.2/24"]);
    assert_eq!(addresses6_on(&berth, "a6", "eth0"), ["fd00:7::2/64"]);
    assert_eq!(addresses6_on(&berth, "b6", "eth0"), ["fd00:7::3/64"]);
    let b6 = &networks_of(&berth, "b6")["six"];
    assert_eq!(b6["GlobalIPv6Address"], "fd00:7::3");
    assert_eq!(b6["GlobalIPv6PrefixLen"], 64);
    assert_eq!(b6["IPv6Gateway"], "fd00:7::1");
    let shown = berth.run_ok([
        "inspect",
        "-f",
        "{{.NetworkSettings.GlobalIPv6Address}}",
        "a6",
    ]);
    assert_eq!(shown.trim(), "fd00:7::2");
    // The default route over IPv6 goes through the bridge.
    let routes = stdout(&exec(
        &berth,
        "a6",
        &["ip", "-6", "route", "show", "default"],
    ));
    assert!(routes.contains("via fd00:7::1"), "{routes}");
    // Names: b6's IPv6 address is in a6's /etc/hosts.
    let hosts = stdout(&exec(&berth, "a6", &["cat", "/etc/hosts"]));
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with("fd00:7::3\t") && l.contains("b6")),
        "{hosts}"
    );
    // Reachability over IPv6: the other container and the gateway.
    for target in ["fd00:7::3", "fd00:7::1"] {
        let out = exec(&berth, "a6", &["ping", "-c", "1", "-W", "2", target]);
        assert!(out.status.success(), "a6 -> {target}\n{}", describe(&out));
    }
    // Out of the network over IPv6: MASQUERADEd to the host's address
    // towards an outside namespace that has no route back to fd00:7::/64.
    let outside = outside_namespace(&berth, "v6", "10.99.0.1/24", "10.99.0.2/24");
    ip(
        berth.netns(),
        &[
            "-6",
            "addr",
            "add",
            "fd00:99::1/64",
            "dev",
            "bt-v6",
            "nodad",
        ],
    );
    ip(
        &outside,
        &[
            "-6",
            "addr",
            "add",
            "fd00:99::2/64",
            "dev",
            "bc-v6",
            "nodad",
        ],
    );
    let out = exec(&berth, "a6", &["ping", "-c", "1", "-W", "2", "fd00:99::2"]);
    assert!(out.status.success(), "a6 -> outside\n{}", describe(&out));
    // In the backend in use, and only there.
    let rules = ip6tables(&berth);
    let in_iptables =
        rules.contains("-A BERTH-POSTROUTING -s fd00:7::/64 ! -o ") && rules.contains("MASQUERADE");
    let in_nftables = rules.contains(&format!(
        "ip6 saddr fd00:7::/64 oifname != \"{bridge}\" masquerade comment \"berth:six\""
    ));
    match firewall_backend() {
        "iptables" => assert!(in_iptables && !in_nftables, "{rules}"),
        _ => assert!(in_nftables && !in_iptables, "{rules}"),
    }
    // `network connect` to the IPv6 network gives an eth1 with both
    // families; `disconnect` gives both leases back.
    berth.run_ok(["network", "create", "--subnet", "10.96.5.0/24", "four"]);
    berth.run_detached(["--name", "d4", "--net", "four", "busybox", "sleep", "60"]);
    assert!(addresses6_on(&berth, "d4", "eth0").is_empty());
    berth.run_ok(["network", "connect", "six", "d4"]);
    let connected = addresses6_on(&berth, "d4", "eth1");
    assert_eq!(connected.len(), 1, "{connected:?}");
    assert!(connected[0].starts_with("fd00:7::"), "{connected:?}");
    let out = exec(&berth, "d4", &["ping", "-c", "1", "-W", "2", "fd00:7::2"]);
    assert!(out.status.success(), "d4 -> a6\n{}", describe(&out));
    berth.run_ok(["network", "disconnect", "six", "d4"]);
    berth.run_ok(["rm", "-f", "d4"]);
    berth.run_ok(["network", "rm", "four"]);
    // Leases are given back: a new container takes b6's address.
    berth.run_ok(["rm", "-f", "b6"]);
    berth.run_detached(["--name", "c6", "--net", "six", "busybox", "sleep", "60"]);
    assert_eq!(addresses6_on(&berth, "c6", "eth0").len(), 1);
    berth.run_ok(["rm", "-f", "a6", "c6"]);
    berth.run_ok(["network", "rm", "six"]);
    let left = ip(berth.netns(), &["-o", "link"]);
    assert!(!left.contains(&bridge), "{left}");
    let rules = ip6tables(&berth);
    assert!(!rules.to_lowercase().contains("berth"), "{rules}");
    drop(outside);
    berth.assert_clean();
}
