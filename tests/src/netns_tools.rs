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
    let mut lines = rules_saved_by(berth, "iptables-save");
    lines.extend(nft_table(berth.netns()));
    lines.join("\n")
}

/// [`iptables`] for IPv6: `ip6tables-save`, then berth's `ip6` nftables
/// table, if any.
pub fn ip6tables(berth: &Berth) -> String {
    let mut lines = rules_saved_by(berth, "ip6tables-save");
    lines.extend(nft_table6(berth.netns()));
    lines.join("\n")
}

fn rules_saved_by(berth: &Berth, program: &str) -> Vec<String> {
    let out = sh_ok(berth.netns().command(program, [] as [&str; 0]));
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(at)) => l[..at].to_owned(),
            _ => l.to_owned(),
        })
        .collect()
}

/// berth's nftables table in `ns` (`nft list table ip berth`), trimmed
/// lines; empty when there is none (or no `nft`).
pub fn nft_table(ns: &NetSandbox) -> Vec<String> {
    nft_family_table(ns, "ip")
}

/// berth's IPv6 nftables table in `ns` (`nft list table ip6 berth`), as
/// [`nft_table`].
pub fn nft_table6(ns: &NetSandbox) -> Vec<String> {
    nft_family_table(ns, "ip6")
}

fn nft_family_table(ns: &NetSandbox, family: &str) -> Vec<String> {
    match ns
        .command("nft", ["list", "table", family, "berth"])
        .output()
    {
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

/// A namespace outside "the host" joined to it by a veth pair:
/// `host_addr` (CIDR) on the host's end (`bt-<name>`), `peer_addr` on
/// the other (`bc-<name>`).
pub fn outside_namespace(
    berth: &Berth,
    name: &str,
    host_addr: &str,
    peer_addr: &str,
) -> NetSandbox {
    let outside = NetSandbox::new();
    let (here, there) = (format!("bt-{name}"), format!("bc-{name}"));
    let host = berth.netns();
    ip(
        host,
        &["link", "add", &here, "type", "veth", "peer", "name", &there],
    );
    ip(
        host,
        &["link", "set", &there, "netns", &holder_pid(&outside)],
    );
    ip(host, &["addr", "add", host_addr, "dev", &here]);
    ip(host, &["link", "set", &here, "up"]);
    ip(&outside, &["addr", "add", peer_addr, "dev", &there]);
    ip(&outside, &["link", "set", &there, "up"]);
    outside
}

/// A tiny DNS server on UDP port 53 of an address in a test namespace:
/// it answers A queries for its names and NXDOMAIN for any other name
/// (an empty answer for other types of a known name). Stops when dropped.
#[derive(Debug)]
pub struct FakeDns {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Names asked for, in order (lower case, no trailing dot).
    pub asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeDns {
    /// Serve `records` (name, IPv4 address) on `listen`:53 inside `ns`.
    pub fn start(
        ns: &NetSandbox,
        listen: std::net::Ipv4Addr,
        records: &[(&str, std::net::Ipv4Addr)],
    ) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let records: Vec<(String, std::net::Ipv4Addr)> = records
            .iter()
            .map(|(name, ip)| (name.to_ascii_lowercase(), *ip))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let path = ns.path();
        let (stop_flag, log) = (stop.clone(), asked.clone());
        let thread = std::thread::spawn(move || {
            let socket = in_netns(path, move || std::net::UdpSocket::bind((listen, 53)))
                .expect("bind the fake DNS server");
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .expect("read timeout");
            let _ = ready_tx.send(());
            let mut buf = [0u8; 512];
            while !stop_flag.load(Ordering::Relaxed) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some((name, reply)) = dns_reply(&buf[..len], &records) {
                    log.lock().expect("log").push(name);
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the fake DNS server did not start");
        FakeDns {
            stop,
            thread: Some(thread),
            asked,
        }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The answer to one DNS query (RFC 1035 wire format): the name asked
/// and the reply, or `None` for a packet that is not a one-question query.
fn dns_reply(query: &[u8], records: &[(String, std::net::Ipv4Addr)]) -> Option<(String, Vec<u8>)> {
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let question_end = at + 4;
    let question = query.get(12..question_end)?;
    let qtype = u16::from_be_bytes([query[at], query[at + 1]]);
    let name = labels.join(".");
    let known = records.iter().find(|(n, _)| *n == name).map(|(_, ip)| *ip);
    let mut reply = Vec::with_capacity(question_end + 16);
    reply.extend_from_slice(&query[..2]);
    // QR, opcode 0, RD copied, RA; NXDOMAIN for a name it does not know.
    reply.push(0x80 | (query[2] & 0x01));
    reply.push(if known.is_some() { 0x80 } else { 0x83 });
    let answers: u16 = u16::from(known.is_some() && qtype == 1);
    reply.extend_from_slice(&[0, 1]);
    reply.extend_from_slice(&answers.to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if let (Some(ip), 1) = (known, answers) {
        // A pointer to the question's name, type A, class IN, TTL 60.
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some((name, reply))
}
