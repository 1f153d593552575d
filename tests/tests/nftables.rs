//! The nftables firewall backend (issue 15) through the real binary:
//! published ports, container-to-container traffic and outbound NAT with
//! docker's `iptables -P FORWARD DROP` present, no iptables program at
//! all, crash safety of the per-container transactions, and a switch of
//! backend between `run` and `rm`.
//!
//! Everything happens in the test's sandbox network namespace (the
//! "host") and namespaces made here (an outside client that also plays
//! the upstream server). berth's nftables state is read back with `nft`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Output;
use std::time::Duration;

use berth_e2e::netns_tools::{
    exec, holder_pid, http_get_eventually, in_netns, ip, iptables, nft_table, sh_ok,
};
use berth_e2e::{
    describe, kill, noise, require_root, run_command, stderr, stdout, Berth, NetSandbox,
};

const STEP: Duration = Duration::from_secs(20);

/// `berth ARGS...` with `BERTH_FIREWALL=backend` (and `PATH` when given).
fn berth_with(berth: &Berth, backend: &str, path: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = berth.cmd(args);
    cmd.env("BERTH_FIREWALL", backend);
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    run_command(cmd)
}

fn ok_with(berth: &Berth, backend: &str, args: &[&str]) -> String {
    let out = berth_with(berth, backend, None, args);
    assert!(
        out.status.success(),
        "berth {args:?} ({backend}) failed\n{}",
        describe(&out)
    );
    stdout(&out)
}

/// A client namespace wired to the sandbox: `10.96.0.1` on the host side,
/// `10.96.0.2` in the client.
fn outside_client(berth: &Berth) -> NetSandbox {
    let client = NetSandbox::new();
    let host = berth.netns();
    ip(
        host,
        &[
            "link", "add", "bt-nft", "type", "veth", "peer", "name", "bc-nft",
        ],
    );
    ip(
        host,
        &["link", "set", "bc-nft", "netns", &holder_pid(&client)],
    );
    ip(host, &["addr", "add", "10.96.0.1/24", "dev", "bt-nft"]);
    ip(host, &["link", "set", "bt-nft", "up"]);
    ip(&client, &["addr", "add", "10.96.0.2/24", "dev", "bc-nft"]);
    ip(&client, &["link", "set", "bc-nft", "up"]);
    client
}

/// A shell script serving `body` as /index.html on port 80.
fn httpd_script(body: &str) -> String {
    format!("mkdir /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www")
}

/// Whether the sandbox has an iptables program (for the FORWARD policy).
fn has_iptables(berth: &Berth) -> bool {
    berth
        .netns()
        .command("iptables", ["-w", "-S", "FORWARD"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Every line of the sandbox's rules (iptables and berth's nftables
/// table) that names `what`.
fn rules_naming(berth: &Berth, what: &str) -> Vec<String> {
    iptables(berth)
        .lines()
        .filter(|l| l.contains(what))
        .map(str::to_owned)
        .collect()
}

/// `nft list ruleset` in the sandbox mentions berth nowhere.
fn assert_no_berth_nft(berth: &Berth, what: &str) {
    let ruleset = sh_ok(berth.netns().command("nft", ["list", "ruleset"]));
    assert!(
        !ruleset.contains("berth"),
        "{what}: nftables still holds berth's rules:\n{ruleset}"
    );
}

#[test]
fn nftables_ports_and_nat_work_under_a_forward_drop_policy() {
    require_root!();
    let berth = Berth::new();
    let host = berth.netns();
    let forward_drop = has_iptables(&berth);
    if forward_drop {
        // What docker does to a host: only accepted traffic is forwarded.
        sh_ok(host.command("iptables", ["-w", "-P", "FORWARD", "DROP"]));
    } else {
        eprintln!("no iptables: testing without a FORWARD DROP policy");
    }
    let info = ok_with(&berth, "nftables", &["info"]);
    assert!(info.contains("Firewall Backend: nftables"), "{info}");
    let client = outside_client(&berth);
    ok_with(
        &berth,
        "nftables",
        &["network", "create", "--subnet", "10.95.0.0/24", "nftnet"],
    );
    let script = httpd_script("nft-web");
    let web = ok_with(
        &berth,
        "nftables",
        &[
            "run", "-d", "--name", "web", "--net", "nftnet", "-p", "18088:80", "busybox", "sh",
            "-c", &script,
        ],
    )
    .trim()
    .to_owned();

    // From outside, through the host's address.
    let answer = http_get_eventually(&client, SocketAddr::from(([10, 96, 0, 1], 18088)), STEP);
    assert!(answer.contains("nft-web"), "{answer}");
    // From the host itself, on localhost.
    let answer = http_get_eventually(host, SocketAddr::from(([127, 0, 0, 1], 18088)), STEP);
    assert!(answer.contains("nft-web"), "{answer}");

    // Container to container on the network, and to the outside
    // (MASQUERADEd: the upstream sees the host's address).
    let caller = ok_with(
        &berth,
        "nftables",
        &[
            "run", "-d", "--name", "caller", "--net", "nftnet", "busybox", "sleep", "60",
        ],
    )
    .trim()
    .to_owned();
    let web_ip = berth.inspect("web")["network"]["ip"]
        .as_str()
        .expect("web's address")
        .to_owned();
    let out = exec(
        &berth,
        "caller",
        &["wget", "-q", "-O", "-", &format!("http://{web_ip}/")],
    );
    assert!(stdout(&out).contains("nft-web"), "{}", describe(&out));

    let upstream = in_netns(client.path(), || {
        TcpListener::bind(SocketAddr::from(([10, 96, 0, 2], 18099))).expect("bind upstream")
    });
    let server = std::thread::spawn(move || {
        let (mut stream, peer) = upstream.accept().expect("accept");
        let mut request = [0u8; 512];
        let _ = stream.read(&mut request);
        let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\nupstream\n");
        peer
    });
    let out = exec(
        &berth,
        "caller",
        &["wget", "-q", "-O", "-", "http://10.96.0.2:18099/"],
    );
    assert!(stdout(&out).contains("upstream"), "{}", describe(&out));
    let peer = server.join().expect("upstream thread");
    assert_eq!(peer.ip(), Ipv4Addr::new(10, 96, 0, 1), "not masqueraded");

    // The rules are berth's nftables ones, tagged per container.
    let table = nft_table(host).join("\n");
    assert!(
        table.contains(&format!("berth:{web} 0.0.0.0:18088/tcp")),
        "{table}"
    );
    if forward_drop {
        let forward = sh_ok(host.command("iptables", ["-w", "-S", "FORWARD"]));
        assert!(forward.contains("-P FORWARD DROP"), "{forward}");
        assert!(forward.contains("berth:nftnet"), "{forward}");
    }

    ok_with(&berth, "nftables", &["rm", "-f", "web", "caller"]);
    for id in [&web, &caller] {
        assert!(rules_naming(&berth, id).is_empty(), "{}", iptables(&berth));
    }
    ok_with(&berth, "nftables", &["network", "rm", "nftnet"]);
    assert_no_berth_nft(&berth, "after network rm");
    let rules = iptables(&berth);
    assert!(!rules.contains("berth"), "{rules}");
    if forward_drop {
        let forward = sh_ok(host.command("iptables", ["-w", "-S", "FORWARD"]));
        assert!(
            forward.contains("-P FORWARD DROP"),
            "policy changed: {forward}"
        );
    }
    berth.assert_clean();
}

#[test]
fn nftables_needs_no_iptables_program() {
    require_root!();
    let berth = Berth::new();
    // An empty PATH: no iptables, no nft, nothing to run.
    let empty = tempfile::tempdir().expect("temp dir");
    let path = empty.path().to_str().expect("utf-8 path");
    let out = berth_with(
        &berth,
        "nftables",
        Some(path),
        &[
            "run", "--rm", "--pull", "never", "-p", "18089:80", "busybox", "true",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let table = nft_table(berth.netns()).join("\n");
    assert!(
        table.contains("masquerade comment \"berth:bridge\""),
        "{table}"
    );
    assert!(
        !table.contains("18089"),
        "the port outlived its container:\n{table}"
    );
    let out = berth_with(&berth, "nftables", Some(path), &["network", "ls"]);
    assert!(out.status.success(), "{}", describe(&out));
    // An unknown backend is one line, exit 125, nothing made.
    let out = berth_with(
        &berth,
        "pf",
        None,
        &[
            "run", "--rm", "--pull", "never", "--net", "bridge", "busybox", "true",
        ],
    );
    let err = berth_e2e::assert_berth_error(&out, 125);
    assert!(
        err.contains("BERTH_FIREWALL") && err.contains("pf"),
        "{err}"
    );
    berth.assert_clean();
}

#[test]
fn nftables_killed_attach_and_detach_leave_no_rule_after_rm_f() {
    require_root!();
    let berth = Berth::new();
    ok_with(
        &berth,
        "nftables",
        &["network", "create", "--subnet", "10.94.0.0/30", "nftcrash"],
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let moments = noise(6, seed);
    for (i, byte) in moments.iter().enumerate() {
        let name = format!("nc{i}");
        let ms = u64::from(*byte) % 60;
        // Even rounds: kill the run (attach); odd: kill its rm (detach).
        let what = format!("round {i}, kill after {ms} ms (seed {seed})");
        let mut args = vec![
            "run", "--name", &name, "--net", "nftcrash", "-p", "18090:80",
        ];
        if i % 2 == 1 {
            args.push("-d");
        }
        args.extend(["busybox", "sleep", "60"]);
        let mut cmd = berth.cmd(&args);
        cmd.env("BERTH_FIREWALL", "nftables");
        let mut run = berth_e2e::KillOnDrop(cmd.spawn().expect("spawn berth run"));
        if i % 2 == 0 {
            std::thread::sleep(Duration::from_millis(ms));
            kill(run.0.id() as i32, libc::SIGKILL);
            run.wait(STEP);
        } else {
            run.wait(STEP);
            let mut rm = berth.cmd(["rm", "-f", &name]);
            rm.env("BERTH_FIREWALL", "nftables");
            let mut rm = berth_e2e::KillOnDrop(rm.spawn().expect("spawn berth rm"));
            std::thread::sleep(Duration::from_millis(ms));
            kill(rm.0.id() as i32, libc::SIGKILL);
            rm.wait(STEP);
        }
        let out = berth_with(&berth, "nftables", None, &["rm", "-f", &name]);
        if !out.status.success() {
            assert!(
                stderr(&out).contains(&name),
                "{what}: rm -f failed oddly\n{}",
                describe(&out)
            );
        }
        assert!(berth.container_ids().is_empty(), "{what}: containers left");
        let table = nft_table(berth.netns());
        let left: Vec<&String> = table
            .iter()
            .filter(|l| l.contains("18090") || l.contains(&name))
            .collect();
        assert!(left.is_empty(), "{what}: rules left: {left:?}");
        eprintln!("{what}: clean");
    }
    // The network still works: the port can be published again.
    let id = ok_with(
        &berth,
        "nftables",
        &[
            "run", "-d", "--net", "nftcrash", "-p", "18090:80", "busybox", "sleep", "60",
        ],
    );
    ok_with(&berth, "nftables", &["rm", "-f", id.trim()]);
    ok_with(&berth, "nftables", &["network", "rm", "nftcrash"]);
    assert_no_berth_nft(&berth, "after network rm");
    berth.assert_clean();
}

#[test]
fn a_backend_switch_between_run_and_rm_leaves_no_rule_in_either() {
    require_root!();
    let berth = Berth::new();
    if !has_iptables(&berth) {
        eprintln!("skipping: no iptables program to switch to");
        return;
    }
    for (first, then) in [("iptables", "nftables"), ("nftables", "iptables")] {
        let network = format!("sw{first}");
        ok_with(
            &berth,
            first,
            &["network", "create", "--subnet", "10.93.0.0/24", &network],
        );
        let id = ok_with(
            &berth,
            first,
            &[
                "run", "-d", "--net", &network, "-p", "18091:80", "busybox", "sleep", "60",
            ],
        )
        .trim()
        .to_owned();
        // The rules are where the backend in use puts them.
        let in_nft = nft_table(berth.netns()).iter().any(|l| l.contains(&id));
        let saved = sh_ok(berth.netns().command("iptables-save", [] as [&str; 0]));
        let in_iptables = saved.contains(&id);
        assert_eq!(
            (in_iptables, in_nft),
            (first == "iptables", first == "nftables"),
            "{first}: rules of the container\n{}",
            iptables(&berth)
        );
        if first == "iptables" {
            // As an older berth (iptables only, no marker of it) left it:
            // iptables' nf_tables form shows berth's chain instead.
            let marker = berth.root().join("networks/firewall-iptables-used");
            assert!(marker.exists(), "no marker at {}", marker.display());
            let iptables_nft = saved.contains(":BERTH-DNAT")
                && berth
                    .netns()
                    .command("iptables", ["-V"])
                    .output()
                    .is_ok_and(|o| stdout(&o).contains("nf_tables"));
            if iptables_nft {
                std::fs::remove_file(&marker).expect("remove the marker");
            }
        }
        ok_with(&berth, then, &["rm", "-f", &id]);
        assert!(
            rules_naming(&berth, &id).is_empty(),
            "made by {first}, removed by {then}: left\n{}",
            iptables(&berth)
        );
        ok_with(&berth, then, &["network", "rm", &network]);
        let rules = iptables(&berth);
        assert!(!rules.contains("berth"), "{first} then {then}:\n{rules}");
        assert_no_berth_nft(&berth, &format!("{first} then {then}"));
    }
    berth.assert_clean();
}
