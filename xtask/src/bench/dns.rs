//! The `dns` scenario: how fast a container gets the address of another
//! container on its network by name from berth's embedded DNS server
//! (127.0.0.11, served by the asking container's monitor).
//!
//! Two detached containers on a network the bench creates; from inside the
//! first one's network namespace (this process enters it on a thread, so
//! the packets take the container's own loopback path to the server), one
//! `A` query at a time for the second one's name, each timed from send to
//! the answer: warm-up queries first, then `--rounds` x 200 kept. Reported:
//! the median, 90th and 99th percentile and the slowest, in microseconds.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::report::median;
use super::system::{quiet, run_checked};
use super::{Runner, Section, Settings};

const NETWORK: &str = "dnsbench";
const SUBNET: &str = "10.124.0.0/24";
const WARM_UP: usize = 100;
const PER_ROUND: usize = 200;

pub(super) fn measure(settings: &Settings, runner: &Runner) -> Result<Section> {
    let root = runner.work.root.join("dns-bench");
    let berth = |args: &[&str]| {
        let mut command = Command::new(&runner.berth);
        command.arg("--root").arg(&root).args(args);
        command
    };
    run_checked(quiet(&mut berth(&[
        "network", "create", "--subnet", SUBNET, NETWORK,
    ])))?;
    let measured = (|| {
        for name in ["asker", "target"] {
            run_checked(quiet(&mut berth(&[
                "run", "-d", "--pull", "never", "--net", NETWORK, "--name", name, "busybox",
                "sleep", "3600",
            ])))?;
        }
        let pid = inspect(&mut berth(&["inspect", "-f", "{{.State.Pid}}", "asker"]))?;
        let count = settings.rounds.max(1) * PER_ROUND;
        time_queries(&format!("/proc/{pid}/ns/net"), "target", count)
    })();
    let _ = quiet(&mut berth(&["rm", "-f", "asker", "target"])).status();
    let _ = quiet(&mut berth(&["network", "rm", NETWORK])).status();
    let mut samples = measured?;
    if samples.is_empty() {
        bail!("no query was timed");
    }
    samples.sort_by(f64::total_cmp);
    let percentile = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let markdown = format!(
        "## DNS: a container's name from berth's embedded server (127.0.0.11), asked from another container on its network\n\n\
         | queries | median | p90 | p99 | slowest |\n|---|---|---|---|---|\n\
         | {} | {:.0} us | {:.0} us | {:.0} us | {:.0} us |\n\n",
        samples.len(),
        median(&samples).unwrap_or_default(),
        percentile(0.90),
        percentile(0.99),
        percentile(1.0),
    );
    let raw = samples.iter().fold(String::from("micros\n"), |mut out, s| {
        out.push_str(&format!("{s:.1}\n"));
        out
    });
    Ok(Section {
        markdown,
        raw: Some(("dns.tsv", raw)),
        failure: None,
    })
}

fn inspect(command: &mut Command) -> Result<u32> {
    let out = command.output().context("berth inspect")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("berth inspect printed {text:?}"))
}

/// Round-trip times (microseconds) of `count` A queries for `name`, asked
/// one at a time from inside the network namespace `netns`.
fn time_queries(netns: &str, name: &str, count: usize) -> Result<Vec<f64>> {
    let namespace = berth_net::netns::open_netns(Path::new(netns))?;
    let socket = berth_net::netns::run_in_netns(namespace.as_fd(), || {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        socket.connect((berth_net::dns::EMBEDDED_DNS_ADDRESS, 53))?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok::<_, std::io::Error>(socket)
    })??;
    let mut samples = Vec::with_capacity(count);
    let mut buffer = [0u8; 512];
    for index in 0..WARM_UP + count {
        let id = (index as u16).to_be_bytes();
        let query = a_query(id, name);
        let started = Instant::now();
        socket.send(&query).context("send the query")?;
        let len = socket
            .recv(&mut buffer)
            .context("no answer from 127.0.0.11 within 2 s")?;
        let elapsed = started.elapsed();
        let answers = u16::from_be_bytes([buffer[6], buffer[7]]);
        if len < 12 || buffer[..2] != id || buffer[3] & 0x0f != 0 || answers != 1 {
            bail!("a bad answer for {name}: {:?}", &buffer[..len]);
        }
        if index >= WARM_UP {
            samples.push(elapsed.as_secs_f64() * 1e6);
        }
    }
    Ok(samples)
}

/// An `A` query for `name`, recursion desired.
fn a_query(id: [u8; 2], name: &str) -> Vec<u8> {
    let mut message = vec![id[0], id[1], 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        message.push(label.len() as u8);
        message.extend_from_slice(label.as_bytes());
    }
    message.extend_from_slice(&[0, 0, 1, 0, 1]);
    message
}
