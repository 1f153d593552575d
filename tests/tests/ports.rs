//! Published ports like docker's (issue 15): reachable on 127.0.0.1, from
//! other containers and from the container itself through a host address
//! (hairpin), bound to one host address (`-p IP:HOST:CTR`, `-p IP::CTR`),
//! ranges, UDP, and the refusals, driven through the real binary.
//!
//! As in `network.rs`, every berth command runs inside the test's private
//! network namespace (the [`Berth`] sandbox), which plays "the host";
//! outside clients are more namespaces made here ([`NetSandbox`]). No
//! packet goes anywhere but loopback and these namespaces. Nothing here
//! depends on the real host's `ip_forward` or `route_localnet`: the
//! sandbox is a fresh namespace, and the assertions are about traffic.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_e2e::netns_tools::{
    create_network, delete_loopback_guard, exec, has_loopback_guard, holder_pid, http_get,
    http_get_eventually, in_netns, ip, iptables,
};
use berth_e2e::{assert_berth_error, describe, require_root, stderr, stdout, Berth, NetSandbox};

/// Long enough for a slow VM; passing steps take milliseconds.
const STEP: Duration = Duration::from_secs(20);

/// An outside client joined to the host by a veth pair: `host_addr` on
/// the host's end (`bt-<name>`), `client_addr` in the client.
fn outside_client(berth: &Berth, name: &str, host_addr: &str, client_addr: &str) -> NetSandbox {
    berth_e2e::netns_tools::outside_namespace(berth, name, host_addr, client_addr)
}

/// Assert that `addr` does not answer from `ns` (refused or silent).
fn assert_no_answer(ns: &NetSandbox, addr: SocketAddr, what: &str) {
    let answer = http_get(ns.path(), addr);
    assert!(
        !matches!(&answer, Ok(text) if !text.is_empty()),
        "{what}: {addr} answered: {answer:?}"
    );
}

/// busybox httpd serving `body` as /index.html on each of `ports`.
fn httpd(body: &str, ports: &[u16]) -> Vec<String> {
    let (last, others) = ports.split_last().expect("a port");
    let mut script = format!("mkdir -p /www && echo {body} > /www/index.html");
    for port in others {
        script += &format!(" && httpd -p {port} -h /www");
    }
    script += &format!(" && exec httpd -f -v -p {last} -h /www");
    vec!["busybox".into(), "sh".into(), "-c".into(), script]
}

/// `berth run -d --name NAME ARGS... COMMAND...`; the full id.
fn run_d(berth: &Berth, name: &str, args: &[&str], command: Vec<String>) -> String {
    let mut all: Vec<String> = vec!["--name".into(), name.into()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    all.extend(command);
    berth.run_detached(&all)
}

/// The gateway of a container's network (from its record).
fn gateway_of(berth: &Berth, container: &str) -> Ipv4Addr {
    berth.inspect(container)["network"]["gateway"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no gateway for {container}"))
}

/// Lines of the sandbox's rules that mention `id`.
fn rules_naming(berth: &Berth, id: &str) -> Vec<String> {
    iptables(berth)
        .lines()
        .filter(|l| l.contains(id))
        .map(str::to_owned)
        .collect()
}

/// `wget` of `url` inside `container` until it prints `body`.
fn wget_in_eventually(berth: &Berth, container: &str, url: &str, body: &str) {
    let deadline = Instant::now() + STEP;
    loop {
        let out = exec(berth, container, &["wget", "-q", "-O", "-", url]);
        if stdout(&out).contains(body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{container}: wget {url} did not get {body:?}\n{}",
            describe(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A sysctl of the sandbox (e.g. `net/ipv4/conf/all/route_localnet`).
fn sysctl(berth: &Berth, key: &str) -> String {
    let path = format!("/proc/sys/{key}");
    in_netns(berth.netns().path(), move || {
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    })
    .trim()
    .to_owned()
}

#[test]
fn published_ports_answer_on_localhost_and_to_containers_through_host_addresses() {
    require_root!();
    let berth = Berth::new();
    let host = berth.netns();
    let _client = outside_client(&berth, "lh", "10.86.0.1/24", "10.86.0.2/24");
    let route_localnet_all = sysctl(&berth, "net/ipv4/conf/all/route_localnet");
    let route_localnet_default = sysctl(&berth, "net/ipv4/conf/default/route_localnet");
    create_network(&berth, "hairpin", "10.96.0.0/24");

    let web = run_d(
        &berth,
        "web",
        &["--net", "hairpin", "-p", "18080:80"],
        httpd("served-by-web", &[80]),
    );
    let gateway = gateway_of(&berth, "web");

    // From the host through loopback, as docker's.
    let response = http_get_eventually(host, SocketAddr::from(([127, 0, 0, 1], 18080)), STEP);
    assert!(response.contains("served-by-web"), "{response}");
    // `localhost` by name (it may name ::1 first, which is refused: the
    // client goes on to 127.0.0.1, as with any service on IPv4 only).
    let by_name = in_netns(host.path(), || -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("localhost", 18080))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    });
    assert!(
        matches!(&by_name, Ok(text) if text.contains("served-by-web")),
        "localhost:18080 answered {by_name:?}"
    );
    // route_localnet is on for berth's bridge only.
    let bridge = berth.inspect("web")["network"]["bridge"]
        .as_str()
        .expect("bridge")
        .to_owned();
    assert_eq!(
        sysctl(&berth, &format!("net/ipv4/conf/{bridge}/route_localnet")),
        "1"
    );
    assert_eq!(
        sysctl(&berth, "net/ipv4/conf/all/route_localnet"),
        route_localnet_all
    );
    // Other interfaces keep what they had (the namespace's default).
    assert_eq!(
        sysctl(&berth, "net/ipv4/conf/bt-lh/route_localnet"),
        route_localnet_default
    );

    // From another container on the bridge, through the gateway address
    // and through another address of the host (hairpin).
    let other = run_d(
        &berth,
        "other",
        &["--net", "hairpin"],
        vec!["busybox".into(), "sleep".into(), "300".into()],
    );
    for address in [gateway.to_string(), "10.86.0.1".to_owned()] {
        let url = format!("http://{address}:18080/index.html");
        wget_in_eventually(&berth, "other", &url, "served-by-web");
    }
    // The container itself, through the host's addresses.
    for address in [gateway.to_string(), "10.86.0.1".to_owned()] {
        let url = format!("http://{address}:18080/index.html");
        wget_in_eventually(&berth, "web", &url, "served-by-web");
    }
    // The server saw the loopback client as the bridge's address.
    let logs = berth.output(["logs", "web"]);
    let log = stdout(&logs) + &stderr(&logs);
    assert!(log.contains(&gateway.to_string()), "{log}");

    // A container cannot reach the host's loopback services through the
    // bridge, route_localnet notwithstanding: the raw table drops such
    // packets (checked as a rule: sending them needs a crafted route).
    let guard = has_loopback_guard(&iptables(&berth), &bridge);
    assert!(
        guard,
        "no loopback guard for {bridge}:\n{}",
        iptables(&berth)
    );

    berth.run_ok(["rm", "-f", "web", "other"]);
    for id in [&web, &other] {
        assert!(rules_naming(&berth, id).is_empty(), "{}", iptables(&berth));
    }
    assert_no_answer(host, SocketAddr::from(([127, 0, 0, 1], 18080)), "after rm");
    berth.run_ok(["network", "rm", "hairpin"]);
    let rules = iptables(&berth);
    assert!(!rules.to_lowercase().contains("berth"), "{rules}");
    berth.assert_clean();
}

#[test]
fn a_port_bound_to_one_host_address_answers_there_only() {
    require_root!();
    let berth = Berth::new();
    let host = berth.netns();
    let client = outside_client(&berth, "ip", "10.87.0.1/24", "10.87.0.2/24");
    let loopback = Ipv4Addr::LOCALHOST;
    let outside = Ipv4Addr::new(10, 87, 0, 1);
    create_network(&berth, "bound", "10.97.0.0/24");

    let lo_only = run_d(
        &berth,
        "lo-only",
        &["--net", "bound", "-p", "127.0.0.1:18081:80"],
        httpd("loopback-only", &[80]),
    );
    let gateway = gateway_of(&berth, "lo-only");
    let response = http_get_eventually(host, SocketAddr::from((loopback, 18081)), STEP);
    assert!(response.contains("loopback-only"), "{response}");
    assert_no_answer(host, SocketAddr::from((gateway, 18081)), "the gateway");
    assert_no_answer(
        host,
        SocketAddr::from((outside, 18081)),
        "the host's address",
    );
    assert_no_answer(
        &client,
        SocketAddr::from((outside, 18081)),
        "an outside client",
    );

    // The same host port on another address is another binding.
    let outside_only = run_d(
        &berth,
        "outside-only",
        &["--net", "bound", "-p", "10.87.0.1:18081:80"],
        httpd("outside-only", &[80]),
    );
    let response = http_get_eventually(&client, SocketAddr::from((outside, 18081)), STEP);
    assert!(response.contains("outside-only"), "{response}");
    let response = http_get_eventually(host, SocketAddr::from((loopback, 18081)), STEP);
    assert!(response.contains("loopback-only"), "{response}");
    // ...but on every address it clashes with both.
    let out = berth.output(["run", "--net", "bound", "-p", "18081:80", "busybox", "true"]);
    let line = assert_berth_error(&out, 125);
    assert!(line.contains("18081"), "{line}");

    // `IP::CTR`: any free port, on that address.
    berth.run_detached([
        "--name",
        "lo-any",
        "--net",
        "bound",
        "-p",
        "127.0.0.1::80",
        "busybox",
        "sleep",
        "300",
    ]);
    let port = berth.run_ok(["port", "lo-any", "80"]);
    assert!(port.starts_with("127.0.0.1:"), "{port}");
    let chosen: u16 = port.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert!(chosen >= 1024, "{port}");

    // docker's shapes: port, ps, inspect.
    assert_eq!(
        berth.run_ok(["port", "lo-only"]),
        "80/tcp -> 127.0.0.1:18081\n"
    );
    assert_eq!(
        berth
            .run_ok([
                "ps",
                "--filter",
                "name=only",
                "--format",
                "{{.Names}} {{.Ports}}"
            ])
            .lines()
            .collect::<std::collections::BTreeSet<_>>(),
        [
            "lo-only 127.0.0.1:18081->80/tcp",
            "outside-only 10.87.0.1:18081->80/tcp",
        ]
        .into()
    );
    let bindings = berth.run_ok([
        "inspect",
        "-f",
        "{{json .HostConfig.PortBindings}} {{json .NetworkSettings.Ports}}",
        "lo-only",
    ]);
    assert_eq!(
        bindings.trim(),
        r#"{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"18081"}]} {"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"18081"}]}"#
    );

    let ids = berth.container_ids();
    berth.run_ok(["rm", "-f", "lo-only", "outside-only", "lo-any"]);
    for id in ids.iter().chain([&lo_only, &outside_only]) {
        assert!(rules_naming(&berth, id).is_empty(), "{}", iptables(&berth));
    }
    berth.run_ok(["network", "rm", "bound"]);
    berth.assert_clean();
}

#[test]
fn port_ranges_map_pairwise_or_take_a_free_port_of_the_range() {
    require_root!();
    let berth = Berth::new();
    let host = berth.netns();

    create_network(&berth, "ranges", "10.98.0.0/24");
    let ranged = run_d(
        &berth,
        "ranged",
        &["--net", "ranges", "-p", "18100-18102:80-82"],
        httpd("in-range", &[81, 82, 80]),
    );
    for port in 18100..=18102 {
        let response = http_get_eventually(host, SocketAddr::from(([127, 0, 0, 1], port)), STEP);
        assert!(response.contains("in-range"), "{port}: {response}");
    }
    assert_eq!(
        berth.run_ok(["port", "ranged"]),
        "80/tcp -> 0.0.0.0:18100\n81/tcp -> 0.0.0.0:18101\n82/tcp -> 0.0.0.0:18102\n"
    );
    assert_eq!(
        berth.run_ok(["ps", "--format", "{{.Ports}}"]).trim(),
        "0.0.0.0:18100->80/tcp, 0.0.0.0:18101->81/tcp, 0.0.0.0:18102->82/tcp"
    );

    // One container port, a host range: a free port of it. 18110 is in
    // use by a host process, so the first container gets 18111 and the
    // range is then exhausted.
    let listener = in_netns(host.path(), || {
        TcpListener::bind(("0.0.0.0", 18110)).expect("bind 18110")
    });
    let picked = run_d(
        &berth,
        "picked",
        &["--net", "ranges", "-p", "18110-18111:80"],
        httpd("picked", &[80]),
    );
    assert_eq!(berth.run_ok(["port", "picked", "80"]), "0.0.0.0:18111\n");
    let response = http_get_eventually(host, SocketAddr::from(([127, 0, 0, 1], 18111)), STEP);
    assert!(response.contains("picked"), "{response}");
    let out = berth.output([
        "run",
        "--net",
        "ranges",
        "-p",
        "18110-18111:80",
        "busybox",
        "true",
    ]);
    let line = assert_berth_error(&out, 125);
    assert!(line.contains("18110-18111"), "{line}");
    drop(listener);

    // UDP, a range bound to loopback: datagrams reach the container.
    let udp = run_d(
        &berth,
        "udp",
        &["--net", "ranges", "-p", "127.0.0.1:18120-18121:53-54/udp"],
        vec!["busybox".into(), "sleep".into(), "300".into()],
    );
    assert_eq!(
        berth.run_ok(["port", "udp"]),
        "53/udp -> 127.0.0.1:18120\n54/udp -> 127.0.0.1:18121\n"
    );
    let pid = berth.inspect("udp")["pid"].as_i64().expect("a running pid");
    let container_ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let receiver = in_netns(container_ns, || {
        let socket = UdpSocket::bind(("0.0.0.0", 54)).expect("bind 54 in the container");
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        socket
    });
    let mut received = None;
    let deadline = Instant::now() + STEP;
    while received.is_none() && Instant::now() < deadline {
        in_netns(host.path(), || {
            let sender = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
            sender.send_to(b"datagram", ("127.0.0.1", 18121)).unwrap();
        });
        let mut buffer = [0u8; 64];
        if let Ok((len, _)) = receiver.recv_from(&mut buffer) {
            received = Some(buffer[..len].to_vec());
        }
    }
    assert_eq!(received.as_deref(), Some(&b"datagram"[..]));
    drop(receiver);

    let ids = [ranged, picked, udp];
    berth.run_ok(["rm", "-f", "ranged", "picked", "udp"]);
    for id in &ids {
        assert!(rules_naming(&berth, id).is_empty(), "{}", iptables(&berth));
    }
    // The whole range is free again.
    berth.run_ok([
        "run",
        "--rm",
        "--net",
        "ranges",
        "-p",
        "18100-18102:80-82",
        "busybox",
        "true",
    ]);
    berth.run_ok(["network", "rm", "ranges"]);
    berth.assert_clean();
}

#[test]
fn bad_publish_forms_are_refused_in_one_line_and_leave_nothing() {
    require_root!();
    let berth = Berth::new();
    // The network is set up already, so that a refusal after it was
    // prepared shows as a change of the rules too.
    create_network(&berth, "refusals", "10.99.0.0/24");
    berth.run_ok(["run", "--rm", "--net", "refusals", "busybox", "true"]);
    let rules_before = iptables(&berth);
    for (bad, mention) in [
        ("18000-18001:80-82", "range"),
        ("18000:80-81", "range"),
        ("18002-18000:80", "18002-18000"),
        ("[::1]:18000:80", "IPv6"),
        ("::1:18000:80", "IPv6"),
        ("localhost:18000:80", "localhost"),
        ("1.2.3:18000:80", "1.2.3"),
        ("127.0.0.1:18000:80/sctp", "sctp"),
        ("192.0.2.1:18000:80", "192.0.2.1"),
    ] {
        let out = berth.output([
            "run", "--name", "bad", "--net", "refusals", "-p", bad, "busybox", "true",
        ]);
        let line = assert_berth_error(&out, 125);
        assert!(
            line.contains(mention),
            "-p {bad}: the error does not mention {mention:?}: {line}"
        );
        assert!(
            berth.container_ids().is_empty(),
            "-p {bad}: a container is left"
        );
        assert_eq!(
            iptables(&berth),
            rules_before,
            "-p {bad}: the rules changed"
        );
    }
    // A host port given twice on overlapping addresses, in one run.
    let out = berth.output([
        "run",
        "--net",
        "refusals",
        "-p",
        "127.0.0.1:18000:80",
        "-p",
        "18000:81",
        "busybox",
        "true",
    ]);
    let line = assert_berth_error(&out, 125);
    assert!(line.contains("18000/tcp is given twice"), "{line}");
    // ...while the same port on two distinct addresses is fine.
    berth.run_ok([
        "run",
        "--rm",
        "--net",
        "refusals",
        "-p",
        "127.0.0.1:18000:80",
        "-p",
        "10.99.0.1:18000:81",
        "busybox",
        "true",
    ]);
    berth.run_ok(["network", "rm", "refusals"]);
    berth.assert_clean();
}

/// `berth run` killed with SIGKILL while its container runs with every
/// new form of `-p`: `rm -f` removes every rule, and the ports and
/// ranges can be published again at once.
#[test]
fn killed_run_with_bound_and_ranged_ports_leaves_no_rule_after_rm_f() {
    require_root!();
    let berth = Berth::new();
    create_network(&berth, "killed", "10.100.0.0/24");
    let rules_before = iptables(&berth);
    let publish = [
        "-p",
        "127.0.0.1:18140:80",
        "-p",
        "18141-18142:81-82/udp",
        "-p",
        "18150-18159:83",
    ];
    let mut args = vec!["run", "--name", "victim", "--net", "killed"];
    args.extend(publish);
    args.extend(["busybox", "sleep", "60"]);
    let mut run = berth.spawn(&args);
    let running = berth_e2e::wait_until(STEP, || {
        let out = berth.output(["inspect", "-f", "{{.State.Status}}", "victim"]);
        stdout(&out).trim() == "running"
    });
    assert!(running, "the container never ran");
    let id = berth.id_of("victim");
    assert!(
        !rules_naming(&berth, &id).is_empty(),
        "no rules while running"
    );
    berth_e2e::kill(run.0.id() as i32, libc::SIGKILL);
    run.wait(STEP);
    berth.run_ok(["rm", "-f", "victim"]);
    assert_eq!(iptables(&berth), rules_before, "rules left after rm -f");
    let mut again = vec!["run", "--rm", "--net", "killed"];
    again.extend(publish);
    again.extend(["busybox", "true"]);
    berth.run_ok(&again);
    berth.run_ok(["network", "rm", "killed"]);
    berth.assert_clean();
}

/// route_localnet on the bridge (for published ports on 127.0.0.1) must
/// not let a container reach the host's loopback-only services: a
/// namespace on the bridge that routes 127.0.0.1 to its gateway (what a
/// container with NET_ADMIN can set up) gets nowhere, and gets through
/// once berth's guard rule is taken away (so the attack here is real).
#[test]
fn containers_cannot_reach_the_hosts_loopback_services_through_the_bridge() {
    require_root!();
    let berth = Berth::new();
    let host = berth.netns();
    create_network(&berth, "guarded", "10.101.0.0/24");
    berth.run_detached([
        "--name",
        "publisher",
        "--net",
        "guarded",
        "-p",
        "18160:80",
        "busybox",
        "sleep",
        "300",
    ]);
    let bridge = berth.inspect("publisher")["network"]["bridge"]
        .as_str()
        .expect("bridge")
        .to_owned();
    // A service of the host's on loopback only.
    let _service = in_netns(host.path(), || {
        TcpListener::bind(("127.0.0.1", 18161)).expect("bind 127.0.0.1:18161")
    });

    let rogue = NetSandbox::new();
    ip(
        host,
        &[
            "link", "add", "bt-rogue", "type", "veth", "peer", "name", "rg-in",
        ],
    );
    ip(
        host,
        &["link", "set", "rg-in", "netns", &holder_pid(&rogue)],
    );
    ip(host, &["link", "set", "bt-rogue", "master", &bridge, "up"]);
    // Without loopback addresses of its own, 127.0.0.1 is routed to the
    // gateway.
    ip(&rogue, &["addr", "flush", "dev", "lo"]);
    ip(&rogue, &["addr", "add", "10.101.0.200/24", "dev", "rg-in"]);
    ip(&rogue, &["link", "set", "rg-in", "up"]);
    ip(
        &rogue,
        &[
            "route",
            "add",
            "127.0.0.1/32",
            "via",
            "10.101.0.1",
            "dev",
            "rg-in",
        ],
    );
    in_netns(rogue.path(), || {
        fs::write("/proc/sys/net/ipv4/conf/rg-in/route_localnet", "1\n").expect("sysctl")
    });
    let attempt = || {
        in_netns(rogue.path(), || {
            let target = SocketAddr::from(([127, 0, 0, 1], 18161));
            TcpStream::connect_timeout(&target, Duration::from_secs(2)).map(drop)
        })
    };
    assert!(
        attempt().is_err(),
        "a namespace on the bridge reached the host's 127.0.0.1:18161"
    );

    delete_loopback_guard(&berth, &bridge, "guarded");
    assert!(
        attempt().is_ok(),
        "without the guard the rogue namespace should get through: the test's attack is not real"
    );

    ip(host, &["link", "del", "bt-rogue"]);
    berth.run_ok(["rm", "-f", "publisher"]);
    berth.run_ok(["network", "rm", "guarded"]);
    let rules = iptables(&berth);
    assert!(!rules.to_lowercase().contains("berth"), "{rules}");
    berth.assert_clean();
}

/// Whether a host process (in the sandbox) can bind `port` on `ip`.
fn host_can_bind(berth: &Berth, ip: Ipv4Addr, port: u16, udp: bool) -> bool {
    in_netns(berth.netns().path(), move || {
        if udp {
            UdpSocket::bind((ip, port)).is_ok()
        } else {
            TcpListener::bind((ip, port)).is_ok()
        }
    })
}

#[test]
fn published_ports_are_held_against_host_binds_while_the_container_runs() {
    require_root!();
    let berth = Berth::new();
    let host = berth.netns();
    create_network(&berth, "held", "10.97.0.0/24");
    let any = Ipv4Addr::UNSPECIFIED;
    let lo = Ipv4Addr::LOCALHOST;
    run_d(
        &berth,
        "web",
        &["--net", "held", "-p", "18281:80", "-p", "18282:53/udp"],
        httpd("held-web", &[80]),
    );
    // Still served on localhost (DNAT runs before the held socket).
    let response = http_get_eventually(host, SocketAddr::from(([127, 0, 0, 1], 18281)), STEP);
    assert!(response.contains("held-web"), "{response}");
    for ip in [any, lo] {
        assert!(!host_can_bind(&berth, ip, 18281, false), "tcp {ip}:18281");
        assert!(!host_can_bind(&berth, ip, 18282, true), "udp {ip}:18282");
    }
    // Another port is not held.
    assert!(host_can_bind(&berth, any, 18283, false));

    // Stopped: released. Taken by a host process meanwhile: start refuses
    // in one line and holds nothing.
    berth.run_ok(["stop", "-t", "1", "web"]);
    assert!(host_can_bind(&berth, any, 18281, false));
    assert!(host_can_bind(&berth, any, 18282, true));
    let squatter = in_netns(host.path(), || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, 18281))
    })
    .expect("bind the stopped container's port");
    let out = berth.output(["start", "web"]);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.lines().count() == 1 && err.contains("18281"),
        "{}",
        describe(&out)
    );
    assert!(
        host_can_bind(&berth, any, 18282, true),
        "udp kept after a failed start"
    );
    drop(squatter);
    // (A child another test thread forked meanwhile may hold a copy of
    // the squatter until it execs.)
    assert!(
        berth_e2e::wait_until(STEP, || host_can_bind(&berth, any, 18281, false)),
        "the squatter's port stayed bound"
    );
    // Started again: held again.
    berth.run_ok(["start", "web"]);
    assert!(!host_can_bind(&berth, any, 18281, false));
    assert!(!host_can_bind(&berth, lo, 18282, true));
    let response = http_get_eventually(host, SocketAddr::from(([127, 0, 0, 1], 18281)), STEP);
    assert!(response.contains("held-web"), "{response}");

    berth.run_ok(["rm", "-f", "web"]);
    assert!(host_can_bind(&berth, any, 18281, false));
    assert!(host_can_bind(&berth, any, 18282, true));
    berth.run_ok(["network", "rm", "held"]);
    berth.assert_clean();
}
