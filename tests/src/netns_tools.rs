//! Tools the networking tests share: commands in a test's network
//! namespaces, HTTP from inside one, and the firewall and networks berth
//! leaves in its sandbox.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::{describe, stdout, Berth, NetSandbox};

/// Run a program to the end, asserting success; returns stdout.
pub fn sh_ok(mut cmd: Command) -> String {
    let line = crate::command_line(&cmd);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{line}`: {e}"));
    assert!(out.status.success(), "`{line}` failed\n{}", describe(&out));
    stdout(&out)
}

/// `ip ARGS...` inside `ns`, asserting success.
pub fn ip(ns: &NetSandbox, args: &[&str]) -> String {
    sh_ok(ns.command("ip", args))
}

/// The pid of the process holding `ns` open (from its /proc path).
pub fn holder_pid(ns: &NetSandbox) -> String {
    ns.path()
        .components()
        .nth(2)
        .and_then(|c| c.as_os_str().to_str())
        .expect("/proc/PID/ns/net")
        .to_owned()
}

/// Run `f` on a thread that has joined the network namespace `ns` (setns
/// only changes the calling thread).
pub fn in_netns<T: Send + 'static>(ns: PathBuf, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let file =
            std::fs::File::open(&ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
        // SAFETY: setns only reads the fd, which stays open during the call.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("the thread in the namespace panicked")
}

/// `GET /index.html` over HTTP/1.0 to `addr` from inside `ns`; the whole
/// response.
pub fn http_get(ns: PathBuf, addr: SocketAddr) -> std::io::Result<String> {
    in_netns(ns, move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })
}

/// [`http_get`] until it answers (the server inside a just-started
/// container may not be listening yet); panics after `within`.
pub fn http_get_eventually(ns: &NetSandbox, addr: SocketAddr, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        match http_get(ns.path(), addr) {
            Ok(response) if !response.is_empty() => return response,
            other => assert!(
                Instant::now() < deadline,
                "no HTTP answer from {addr} within {within:?}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sandbox's firewall rules: its `iptables-save` without comments
/// and packet counters, then berth's nftables table, if any (`nft list
/// table ip berth`, one rule per line). Whichever backend berth uses
/// (`BERTH_FIREWALL`), its rules are in here.
pub fn iptables(berth: &Berth) -> String {
    let out = sh_ok(berth.netns().command("iptables-save", [] as [&str; 0]));
    let mut lines: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(at)) => l[..at].to_owned(),
            _ => l.to_owned(),
        })
        .collect();
    lines.extend(nft_table(berth.netns()));
    lines.join("\n")
}

/// berth's nftables table in `ns` (`nft list table ip berth`), trimmed
/// lines; empty when there is none (or no `nft`).
pub fn nft_table(ns: &NetSandbox) -> Vec<String> {
    match ns.command("nft", ["list", "table", "ip", "berth"]).output() {
        Ok(out) if out.status.success() => stdout(&out)
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// The firewall backend berth uses in the tests: `BERTH_FIREWALL` when
/// set (the tests pass it on), else nftables where `nft` shows the kernel
/// has it.
pub fn firewall_backend() -> &'static str {
    match std::env::var("BERTH_FIREWALL").as_deref() {
        Ok("iptables") => "iptables",
        Ok("nftables") => "nftables",
        _ => {
            let probe = crate::NetSandbox::new();
            let works = probe
                .command("nft", ["list", "tables"])
                .output()
                .is_ok_and(|o| o.status.success());
            if works {
                "nftables"
            } else {
                "iptables"
            }
        }
    }
}

/// Whether berth's rules hold the loopback guard (drop from `bridge` to
/// 127.0.0.0/8) in `rules` (from [`iptables`]).
pub fn has_loopback_guard(rules: &str, bridge: &str) -> bool {
    rules.lines().any(|l| {
        (l.starts_with("-A PREROUTING -d 127.0.0.0/8 -i ") && l.contains(bridge))
            || (l.starts_with(&format!("iifname \"{bridge}\" ip daddr 127.0.0.0/8 drop")))
    })
}

/// Delete the loopback guard of `bridge` (network `network`) behind
/// berth's back, whichever backend made it.
pub fn delete_loopback_guard(berth: &Berth, bridge: &str, network: &str) {
    let host = berth.netns();
    if firewall_backend() == "iptables" {
        let comment = format!("berth:{network}");
        let guard = [
            "-t",
            "raw",
            "-D",
            "PREROUTING",
            "-d",
            "127.0.0.0/8",
            "-i",
            bridge,
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            "DROP",
        ];
        sh_ok(host.command("iptables", guard));
        return;
    }
    let listing = sh_ok(host.command("nft", ["-a", "list", "chain", "ip", "berth", "guard"]));
    let handle = listing
        .lines()
        .find(|l| l.contains(&format!("iifname \"{bridge}\"")))
        .and_then(|l| l.rsplit("# handle ").next())
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| panic!("no guard for {bridge}:\n{listing}"));
    sh_ok(host.command(
        "nft",
        ["delete", "rule", "ip", "berth", "guard", "handle", &handle],
    ));
}

/// `berth network create --subnet SUBNET NAME`.
pub fn create_network(berth: &Berth, name: &str, subnet: &str) {
    berth.run_ok(["network", "create", "--subnet", subnet, name]);
}

/// `berth network inspect NAME` (first element).
pub fn network_inspect(berth: &Berth, name: &str) -> serde_json::Value {
    let out = berth.run_ok(["network", "inspect", name]);
    let value: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`network inspect {name}` is not JSON ({e}):\n{out}"));
    value.get(0).cloned().unwrap_or(value)
}

/// Output of `berth exec C ARGS...`.
pub fn exec(berth: &Berth, container: &str, args: &[&str]) -> Output {
    let mut all = vec!["exec", container];
    all.extend_from_slice(args);
    berth.output(all)
}
