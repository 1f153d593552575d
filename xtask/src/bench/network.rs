//! The `network` scenario: what a network costs `berth run`, and the IPAM
//! allocator alone.
//!
//! - Latency: `berth run --rm [NET FLAGS] busybox true` with `--net none`,
//!   the default bridge, `--net benchnet` and `--net benchnet -p 8080:80`,
//!   where benchnet is a network the bench creates (`network create --subnet
//!   10.123.0.0/24`) and removes afterwards (its bridge and iptables rules
//!   live in our private network namespace). The cold procedure of the
//!   latency scenarios: cases interleaved round-robin, order rotated every
//!   round, before each run no stray process and `--gap-ms` idle. Reported:
//!   the extra milliseconds over `--net none` (difference of medians, and
//!   the median of the per-round differences).
//! - Parallel starts (issue 15): `--count` (50) `berth run -d busybox
//!   sleep 3600` started at once, on benchnet and with `--net none`, rounds
//!   interleaved (order swapped every round), each batch timed until the
//!   last `run -d` returned, with its CPU time (the `run -d` processes,
//!   and the monitors and containers they left running); then all removed
//!   (`rm -f`, in parallel) and, before the next batch, no process left
//!   and the kernel done deleting the veths. Reported: the median of the
//!   per-round ratios network / none, wall and CPU.
//! - IPAM, through the `berth_net` API in a scratch dir (plain files, no
//!   privilege needed): every address of a /16 in one transaction and one
//!   commit, then with 100, 1,000 and 10,000 leases held, 200 (50 with
//!   --quick) calls of `Ipam::allocate` and then of `Ipam::release`, one
//!   transaction and commit each: the per-call cost and whether it grows
//!   with the leases held. `--scenarios ipam` runs this part alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_net::{parse_subnet, AddressPool, Ipam, IpamError};

use super::latency::{exit_code, time_run};
use super::report::{median, Stats};
use super::system::{cpu_time, display_command, probe, quiet, settle, ProbeResult};
use super::{Runner, Section, Settings, Tool, WorkDir};

/// The network the scenario creates and removes.
pub(super) const BENCH_NETWORK: &str = "benchnet";
const BENCH_SUBNET: &str = "10.123.0.0/24";
const PUBLISH: &str = "8080:80";

/// The IPAM timing's /16 and how often the one-transaction fill is repeated.
const IPAM_SUBNET: &str = "10.200.0.0/16";
const IPAM_FILL_REPEATS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NetCase {
    None,
    DefaultBridge,
    Network,
    NetworkPublish,
}

impl NetCase {
    const ALL: [NetCase; 4] = [
        NetCase::None,
        NetCase::DefaultBridge,
        NetCase::Network,
        NetCase::NetworkPublish,
    ];

    fn label(self) -> String {
        match self {
            NetCase::None => "--net none".to_owned(),
            NetCase::DefaultBridge => "default bridge (no --net)".to_owned(),
            NetCase::Network => format!("--net {BENCH_NETWORK}"),
            NetCase::NetworkPublish => format!("--net {BENCH_NETWORK} -p {PUBLISH}"),
        }
    }

    fn slug(self) -> &'static str {
        match self {
            NetCase::None => "none",
            NetCase::DefaultBridge => "bridge",
            NetCase::Network => "net",
            NetCase::NetworkPublish => "net-publish",
        }
    }

    fn command(self, runner: &Runner) -> Command {
        let mut command = runner.berth_command();
        command.args(["run", "--rm"]);
        match self {
            NetCase::None => {
                command.args(["--net", "none"]);
            }
            NetCase::DefaultBridge => {}
            NetCase::Network => {
                command.args(["--net", BENCH_NETWORK]);
            }
            NetCase::NetworkPublish => {
                command.args(["--net", BENCH_NETWORK, "-p", PUBLISH]);
            }
        }
        command.args(["busybox", "true"]);
        command
    }
}

#[derive(Debug, Clone)]
struct NetSample {
    round: usize,
    case: NetCase,
    exit_code: i32,
    elapsed: Duration,
    leftover: bool,
}

impl NetSample {
    fn millis(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1000.0
    }
}

pub(super) fn measure(settings: &Settings, runner: &Runner) -> Result<Section> {
    if !settings.tools.contains(&Tool::Berth) {
        bail!("the network scenario measures berth: leave berth in --tools");
    }
    let mut out = String::new();
    let mut raw = String::from("kind\tround\tcase\texit_code\tmicros\tleftover\tcpu_micros\n");
    let latency = network_latency(settings, runner, &mut out, &mut raw);
    // The IPAM timing stands alone: report it even if the runs failed.
    let ipam = time_ipam(settings, &runner.work, &mut out, &mut raw);
    let failure = match (latency, ipam) {
        (Ok(()), Ok(())) => None,
        (Err(err), _) | (_, Err(err)) => {
            // Keep what was measured; say what failed.
            let _ = writeln!(out, "**Network scenario incomplete:** {err:#}\n");
            Some(format!("{err:#}"))
        }
    };
    Ok(Section {
        markdown: out,
        raw: Some(("network.tsv", raw)),
        failure,
    })
}

fn network_latency(
    settings: &Settings,
    runner: &Runner,
    out: &mut String,
    raw: &mut String,
) -> Result<()> {
    let _ = writeln!(
        out,
        "## Network: `berth run --rm [--net ...] busybox true` (ms; cases interleaved round-robin, order rotated each round; before every run no stray process and {} ms idle)\n",
        settings.gap.as_millis()
    );
    let create_started = Instant::now();
    let created = probe(runner.berth_command().args([
        "network",
        "create",
        "--subnet",
        BENCH_SUBNET,
        BENCH_NETWORK,
    ]));
    let create_ms = create_started.elapsed().as_secs_f64() * 1000.0;
    if let ProbeResult::Failed(line) = &created {
        let _ = writeln!(
            out,
            "`berth network create --subnet {BENCH_SUBNET} {BENCH_NETWORK}` failed: {line}\n"
        );
        bail!("creating network {BENCH_NETWORK}: {line}");
    }
    let measured = measure_cases(settings, runner, out, raw)
        .and_then(|()| parallel_starts(settings, runner, out, raw));
    let removed_started = Instant::now();
    let removed = probe(
        runner
            .berth_command()
            .args(["network", "rm", BENCH_NETWORK]),
    );
    let _ = writeln!(
        out,
        "Set-up and tear-down (untimed for the table): `berth network create --subnet {BENCH_SUBNET} {BENCH_NETWORK}` {create_ms:.0} ms; `berth network rm {BENCH_NETWORK}` {:.0} ms, {} (refused while a lease is held, so ok means every run gave its address and port back).\n",
        removed_started.elapsed().as_secs_f64() * 1000.0,
        removed.describe()
    );
    measured?;
    if let ProbeResult::Failed(line) = removed {
        bail!("removing network {BENCH_NETWORK}: {line}");
    }
    Ok(())
}

fn measure_cases(
    settings: &Settings,
    runner: &Runner,
    out: &mut String,
    raw: &mut String,
) -> Result<()> {
    let mut cases = Vec::new();
    let mut skipped = BTreeMap::new();
    for case in NetCase::ALL {
        match probe(&mut case.command(runner)) {
            ProbeResult::Ok => cases.push(case),
            ProbeResult::Failed(line) => {
                skipped.insert(case, format!("fails here, skipped ({line})"));
            }
        }
        remove_leftovers(runner);
    }
    if !cases.contains(&NetCase::None) {
        bail!("`berth run --rm --net none busybox true` fails here");
    }
    let total = cases.len() * (settings.warmup + settings.runs);
    eprintln!("xtask: network: {total} runs");
    let mut samples = Vec::new();
    for round in 0..settings.warmup + settings.runs {
        for offset in 0..cases.len() {
            let case = cases[(round + offset) % cases.len()];
            settle();
            std::thread::sleep(settings.gap);
            let (status, elapsed) = time_run(&mut case.command(runner));
            let leftover = remove_leftovers(runner);
            if round >= settings.warmup {
                samples.push(NetSample {
                    round: round - settings.warmup,
                    case,
                    exit_code: exit_code(status),
                    elapsed,
                    leftover,
                });
            }
        }
    }
    for sample in &samples {
        let _ = writeln!(
            raw,
            "run\t{}\t{}\t{}\t{}\t{}",
            sample.round,
            sample.case.slug(),
            sample.exit_code,
            sample.elapsed.as_micros(),
            u8::from(sample.leftover)
        );
    }
    render_cases(out, runner, &cases, &skipped, &samples);
    Ok(())
}

/// After a `run --rm`: anything left in the store is removed (and counted).
fn remove_leftovers(runner: &Runner) -> bool {
    runner.remove_all(Tool::Berth) > 0
}

fn render_cases(
    out: &mut String,
    runner: &Runner,
    cases: &[NetCase],
    skipped: &BTreeMap<NetCase, String>,
    samples: &[NetSample],
) {
    out.push_str("| case | ok/runs | min | median | p95 | max | extra over --net none (medians) | median of paired extras |\n|---|---|---|---|---|---|---|---|\n");
    let ok_millis = |case: NetCase| -> BTreeMap<usize, f64> {
        samples
            .iter()
            .filter(|sample| sample.case == case && sample.exit_code == 0)
            .map(|sample| (sample.round, sample.millis()))
            .collect()
    };
    let none = ok_millis(NetCase::None);
    let none_stats = Stats::of(&none.values().copied().collect::<Vec<_>>());
    for case in NetCase::ALL {
        if let Some(reason) = skipped.get(&case) {
            let _ = writeln!(
                out,
                "| {} | {} | | | | | | |",
                case.label(),
                reason.replace('|', "\\|")
            );
            continue;
        }
        if !cases.contains(&case) {
            continue;
        }
        let runs = samples.iter().filter(|sample| sample.case == case).count();
        let leftovers = samples
            .iter()
            .filter(|sample| sample.case == case && sample.leftover)
            .count();
        let millis = ok_millis(case);
        let mut ok_text = format!("{}/{runs}", millis.len());
        if leftovers > 0 {
            let _ = write!(ok_text, " ({leftovers} left state behind!)");
        }
        let Some(stats) = Stats::of(&millis.values().copied().collect::<Vec<_>>()) else {
            let _ = writeln!(out, "| {} | {ok_text} | | | | | | |", case.label());
            continue;
        };
        let (extra, paired) = if case == NetCase::None {
            ("-".to_owned(), "-".to_owned())
        } else {
            let extra = none_stats.map_or("-".to_owned(), |none| {
                format!("{:+.2} ms", stats.median - none.median)
            });
            let differences: Vec<f64> = millis
                .iter()
                .filter_map(|(round, ms)| Some(ms - none.get(round)?))
                .collect();
            let paired = median(&differences).map_or("-".to_owned(), |ms| format!("{ms:+.2} ms"));
            (extra, paired)
        };
        let _ = writeln!(
            out,
            "| {} | {ok_text} | {:.2} | {:.2} | {:.2} | {:.2} | {extra} | {paired} |",
            case.label(),
            stats.min,
            stats.median,
            stats.p95,
            stats.max
        );
    }
    out.push_str("\nTarget (issue 6): `--net NET -p` under 10 ms extra over `--net none` (podman's bridge path: ~190 ms extra). \"paired\": median over rounds of the case's run minus the `--net none` run of the same round.\n\nCommands:\n\n");
    write_commands(
        out,
        cases
            .iter()
            .map(|case| (case.label(), case.command(runner))),
    );
}

// ---------------------------------------------------------------------------
// Parallel starts
// ---------------------------------------------------------------------------

/// Issue 15's target for the parallel row: at most this many times the
/// time of the same starts with `--net none`.
const PARALLEL_TARGET: f64 = 1.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParallelCase {
    None,
    Network,
}

impl ParallelCase {
    const ALL: [ParallelCase; 2] = [ParallelCase::None, ParallelCase::Network];

    fn label(self) -> String {
        match self {
            ParallelCase::None => "--net none".to_owned(),
            ParallelCase::Network => format!("--net {BENCH_NETWORK}"),
        }
    }

    fn slug(self) -> &'static str {
        match self {
            ParallelCase::None => "parallel-none",
            ParallelCase::Network => "parallel-net",
        }
    }

    fn command(self, runner: &Runner) -> Command {
        let net = match self {
            ParallelCase::None => "none",
            ParallelCase::Network => BENCH_NETWORK,
        };
        let mut command = runner.berth_command();
        command.args(["run", "-d", "--net", net, "busybox", "sleep", "3600"]);
        command
    }
}

/// One batch of parallel starts.
#[derive(Debug, Clone)]
struct Batch {
    round: usize,
    case: ParallelCase,
    wall: Duration,
    cpu: Duration,
    /// Starts that failed (their first stderr line in `errors`).
    failed: usize,
    errors: Vec<String>,
}

/// `--count` starts at once per case and round, `--runs / 3` rounds (at
/// least 2), the cases' order swapped every round.
fn parallel_starts(
    settings: &Settings,
    runner: &Runner,
    out: &mut String,
    raw: &mut String,
) -> Result<()> {
    let count = settings.count;
    let rounds = (settings.runs / 3).max(2);
    let scratch = runner.work.runtime_state();
    eprintln!("xtask: network: {rounds} rounds of {count} parallel starts per case");
    let mut batches = Vec::new();
    for round in 0..rounds {
        for offset in 0..ParallelCase::ALL.len() {
            let case = ParallelCase::ALL[(round + offset) % ParallelCase::ALL.len()];
            settle();
            wait_for_veths_to_go();
            std::thread::sleep(settings.gap);
            let (batch, ids) = start_batch(runner, case, count, round, &scratch)?;
            batches.push(batch);
            let removals = ids
                .iter()
                .map(|id| {
                    let mut command = runner.berth_command();
                    command.args(["rm", "-f", id]);
                    command
                })
                .collect();
            let failures =
                super::scale::run_in_parallel(removals, super::scale::PARALLEL_REMOVALS, &scratch)?;
            if let Some(failure) = failures.first() {
                bail!("removing the parallel batch: {failure}");
            }
            remove_leftovers(runner);
        }
    }
    settle();
    wait_for_veths_to_go();
    for batch in &batches {
        let _ = writeln!(
            raw,
            "parallel\t{}\t{}\t{}\t{}\t{}\t{}",
            batch.round,
            batch.case.slug(),
            i32::from(batch.failed > 0),
            batch.wall.as_micros(),
            batch.failed,
            batch.cpu.as_micros()
        );
    }
    render_parallel(out, runner, count, &batches);
    Ok(())
}

/// Start `count` containers of `case` at once and wait until every `run
/// -d` returned: the batch, and the ids of the containers started.
fn start_batch(
    runner: &Runner,
    case: ParallelCase,
    count: usize,
    round: usize,
    scratch: &std::path::Path,
) -> Result<(Batch, Vec<String>)> {
    use nix::sys::wait::{waitpid, WaitStatus};
    let children_cpu = || cpu_time(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
    let cpu_before = children_cpu()?;
    let started = Instant::now();
    let mut running = BTreeMap::new();
    for index in 0..count {
        let stdout = scratch.join(format!("parallel-{index}.stdout"));
        let stderr = scratch.join(format!("parallel-{index}.stderr"));
        let create = |path: &std::path::Path| {
            fs::File::create(path).with_context(|| format!("creating {}", path.display()))
        };
        let child = case
            .command(runner)
            .stdin(std::process::Stdio::null())
            .stdout(create(&stdout)?)
            .stderr(create(&stderr)?)
            .spawn()
            .context("starting berth run -d")?;
        running.insert(child.id(), (stdout, stderr));
    }
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    // waitpid(-1): also reaps whatever orphan ends meanwhile (we are PID 1).
    while !running.is_empty() {
        let (pid, success) = match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, code == 0),
            Ok(WaitStatus::Signaled(pid, _, _)) => (pid, false),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => bail!("waiting for the parallel starts: {err}"),
        };
        let Some((stdout, stderr)) = running.remove(&(pid.as_raw() as u32)) else {
            continue;
        };
        let id = fs::read_to_string(&stdout).unwrap_or_default();
        let message = fs::read_to_string(&stderr).unwrap_or_default();
        let _ = fs::remove_file(&stdout);
        let _ = fs::remove_file(&stderr);
        if success && !id.trim().is_empty() {
            ids.push(id.trim().to_owned());
        } else {
            errors.push(message.lines().next().unwrap_or("").trim().to_owned());
        }
    }
    let wall = started.elapsed();
    // The `run -d` processes (reaped), and what they left running: the
    // monitors and the containers, all of this namespace but us.
    let cpu = children_cpu()?.saturating_sub(cpu_before) + running_cpu();
    let batch = Batch {
        round,
        case,
        wall,
        cpu,
        failed: errors.len(),
        errors,
    };
    Ok((batch, ids))
}

/// CPU time of every process of our PID namespace but us: its own (from
/// schedstat, in ns) and that of its children it reaped (clock ticks).
fn running_cpu() -> Duration {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = u64::try_from(unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    let mut total = Duration::ZERO;
    for (pid, _) in super::system::processes() {
        if pid == 1 {
            continue;
        }
        let own = fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let reaped = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|text| reaped_ticks(&text))
            .unwrap_or(0);
        total += Duration::from_nanos(own) + Duration::from_millis(reaped * 1000 / ticks);
    }
    total
}

/// The CPU time, in clock ticks, of the children a process reaped:
/// cutime + cstime (fields 16 and 17 of `/proc/PID/stat`, counted after
/// the command's closing parenthesis, since the command may hold spaces
/// and parentheses).
fn reaped_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // The first field after the parenthesis is the state, field 3.
    let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
    Some(field(16)? + field(17)?)
}

/// The kernel deletes a container's veth pair with its network namespace,
/// after the container is gone: wait (at most 30 s) until no veth of
/// berth's (`vb...`) is left, so that one batch's teardown does not slow
/// the next.
fn wait_for_veths_to_go() {
    let deadline = Instant::now() + Duration::from_secs(30);
    let any_left = || network_links().iter().any(|link| link.starts_with("vb"));
    while any_left() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The network interfaces of our network namespace, from /proc/net/dev
/// (which follows the reader's namespace; /sys/class/net shows the
/// namespace of whoever mounted /sys, here the host's).
pub(super) fn network_links() -> Vec<String> {
    fs::read_to_string("/proc/net/dev")
        .map(|text| interface_names(&text))
        .unwrap_or_default()
}

/// The interface names of a /proc/net/dev text (two header lines, then
/// `name: counters...`).
fn interface_names(text: &str) -> Vec<String> {
    text.lines()
        .skip(2)
        .filter_map(|line| Some(line.split_once(':')?.0.trim().to_owned()))
        .filter(|name| !name.is_empty())
        .collect()
}

fn render_parallel(out: &mut String, runner: &Runner, count: usize, batches: &[Batch]) {
    let _ = writeln!(
        out,
        "## Network: {count} parallel `berth run -d ... busybox sleep 3600` (ms until the last returned; CPU: the `run -d` processes and the monitors and containers they started; rounds interleaved, order swapped every round; then `rm -f` of all, and before each batch no process and no veth left)\n"
    );
    out.push_str("| case | batches ok | wall median | wall min / max | CPU median | wall / --net none (median of paired rounds) | CPU / --net none (paired) |\n|---|---|---|---|---|---|---|\n");
    let ok = |case: ParallelCase| -> BTreeMap<usize, &Batch> {
        batches
            .iter()
            .filter(|batch| batch.case == case && batch.failed == 0)
            .map(|batch| (batch.round, batch))
            .collect()
    };
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let none = ok(ParallelCase::None);
    let mut verdict = None;
    for case in ParallelCase::ALL {
        let done = ok(case);
        let total = batches.iter().filter(|batch| batch.case == case).count();
        let walls: Vec<f64> = done.values().map(|batch| ms(batch.wall)).collect();
        let cpus: Vec<f64> = done.values().map(|batch| ms(batch.cpu)).collect();
        let Some(wall) = Stats::of(&walls) else {
            let _ = writeln!(out, "| {} | 0/{total} | | | | | |", case.label());
            continue;
        };
        let cpu = median(&cpus).unwrap_or(f64::NAN);
        let (wall_ratio, cpu_ratio) = if case == ParallelCase::None {
            ("-".to_owned(), "-".to_owned())
        } else {
            let paired = |of: fn(&Batch) -> Duration| -> Option<f64> {
                let ratios: Vec<f64> = done
                    .iter()
                    .filter_map(|(round, batch)| Some(ms(of(batch)) / ms(of(none.get(round)?))))
                    .collect();
                median(&ratios)
            };
            let wall_ratio = paired(|batch| batch.wall);
            verdict = wall_ratio;
            let show = |ratio: Option<f64>| ratio.map_or("-".to_owned(), |r| format!("{r:.2}x"));
            (show(wall_ratio), show(paired(|batch| batch.cpu)))
        };
        let _ = writeln!(
            out,
            "| {} | {}/{total} | {:.0} | {:.0} / {:.0} | {cpu:.0} | {wall_ratio} | {cpu_ratio} |",
            case.label(),
            done.len(),
            wall.median,
            wall.min,
            wall.max,
        );
    }
    let _ = writeln!(
        out,
        "\nTarget (issue 15): {count} parallel `run -d` on one network at most {PARALLEL_TARGET}x the same with `--net none`: {}.",
        match verdict {
            Some(ratio) if ratio <= PARALLEL_TARGET => "met",
            Some(_) => "NOT met",
            None => "not measured",
        }
    );
    let errors: Vec<String> =
        batches
            .iter()
            .flat_map(|batch| {
                batch.errors.iter().take(3).map(move |error| {
                    format!("round {} {}: {error}", batch.round, batch.case.label())
                })
            })
            .take(5)
            .collect();
    if !errors.is_empty() {
        out.push_str("\nFailed starts (at most 5):\n\n");
        for error in errors {
            let _ = writeln!(out, "- {}", error.replace('|', "\\|"));
        }
    }
    out.push_str("\nCommands (each batch: all started at once):\n\n");
    write_commands(
        out,
        ParallelCase::ALL
            .iter()
            .map(|case| (case.label(), case.command(runner))),
    );
}

/// The measured commands, one indented line each (markdown code), then a
/// blank line.
fn write_commands(out: &mut String, commands: impl Iterator<Item = (String, Command)>) {
    for (label, command) in commands {
        let _ = writeln!(out, "    {label}: {}", display_command(&command));
    }
    out.push('\n');
}

/// Remove the bench network if it is still there (a failed run); true if
/// it was.
pub(super) fn remove_bench_network(runner: &Runner) -> bool {
    let exists = quiet(
        runner
            .berth_command()
            .args(["network", "inspect", BENCH_NETWORK]),
    )
    .status()
    .is_ok_and(|status| status.success());
    if exists {
        let _ = quiet(
            runner
                .berth_command()
                .args(["network", "rm", BENCH_NETWORK]),
        )
        .status();
    }
    exists
}

// ---------------------------------------------------------------------------
// IPAM
// ---------------------------------------------------------------------------

/// An owner name as long as a container id, so that the state file has
/// its real size.
fn owner(index: usize) -> String {
    format!("{index:064x}")
}

fn bench_pool() -> Result<AddressPool> {
    let (subnet, gateway) =
        parse_subnet(IPAM_SUBNET, None).with_context(|| format!("parsing {IPAM_SUBNET}"))?;
    Ok(AddressPool::new("ipambench", subnet, gateway)?)
}

/// One /16 fill: (allocations, time allocating, time committing, CPU
/// time of both).
fn fill_in_one_transaction(
    ipam: &Ipam,
    pool: &AddressPool,
) -> Result<(usize, Duration, Duration, Duration)> {
    let cpu = own_cpu_time();
    let started = Instant::now();
    let mut txn = ipam.transaction()?;
    let mut allocated = 0;
    loop {
        match txn.allocate(pool, &owner(allocated)) {
            Ok(_) => allocated += 1,
            Err(IpamError::Full { .. }) => break,
            Err(err) => return Err(err.into()),
        }
    }
    let allocating = started.elapsed();
    let committing = Instant::now();
    txn.commit()?;
    let committing = committing.elapsed();
    Ok((allocated, allocating, committing, own_cpu_time() - cpu))
}

fn time_ipam(
    settings: &Settings,
    work: &WorkDir,
    out: &mut String,
    raw: &mut String,
) -> Result<()> {
    let pool = bench_pool()?;
    // Every host address but the gateway: 2^16 - network - broadcast - gateway.
    let expected = (1usize << (32 - pool.subnet.prefix_len())) - 3;
    let _ = writeln!(
        out,
        "## IPAM (`berth_net::Ipam` API, state in a scratch dir on {}; owners are 64-character ids; xtask's build profile)\n",
        crate::mounts::filesystem_of(&work.root).unwrap_or_else(|_| "?".to_owned())
    );
    out.push_str("| operation | result | time |\n|---|---|---|\n");
    // The single calls first: the fills create and delete 131,066 records
    // each, which a file system may make the next creations pay for.
    for held in IPAM_HELD {
        time_calls_at(settings, work, &pool, held, out, raw)?;
    }
    let mut fills = Vec::new();
    for repeat in 0..IPAM_FILL_REPEATS {
        let dir = work.ipam_dir(&format!("fill-{repeat}"));
        let ipam = Ipam::new(&dir);
        let (allocated, allocating, committing, cpu) = fill_in_one_transaction(&ipam, &pool)?;
        // The state as read back: every lease there, all distinct.
        let leases = ipam.leases(&pool.network)?;
        let distinct: BTreeSet<_> = leases.iter().map(|lease| lease.ip).collect();
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        if allocated != expected || leases.len() != expected || distinct.len() != expected {
            bail!(
                "IPAM fill of {IPAM_SUBNET}: {allocated} allocated, {} leases read back, {} distinct; expected {expected}",
                leases.len(),
                distinct.len()
            );
        }
        let _ = writeln!(
            raw,
            "ipam-fill\t{repeat}\t{IPAM_SUBNET}\t0\t{}\t{}",
            (allocating + committing).as_micros(),
            allocating.as_micros()
        );
        fills.push((allocating, committing, cpu));
    }
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let totals: Vec<f64> = fills.iter().map(|(a, c, _)| ms(*a + *c)).collect();
    let cpus: Vec<f64> = fills.iter().map(|(_, _, cpu)| ms(*cpu)).collect();
    let best = fills
        .iter()
        .min_by(|x, y| ms(x.0 + x.1).total_cmp(&ms(y.0 + y.1)))
        .copied()
        .unwrap_or_default();
    let total = median(&totals).unwrap_or(f64::NAN);
    let cpu = median(&cpus).unwrap_or(f64::NAN);
    let _ = writeln!(
        out,
        "| every address of a /16 ({IPAM_SUBNET}) in one transaction + one commit | {expected} leases, all distinct, read back | median {total:.0} ms of {IPAM_FILL_REPEATS}, CPU {cpu:.0} ms (best: {:.0} ms allocating = {:.2} µs each, {:.0} ms committing); target < 1000 ms: {} |",
        ms(best.0),
        ms(best.0) * 1000.0 / expected as f64,
        ms(best.1),
        if total < 1000.0 { "met" } else { "NOT met" }
    );
    out.push_str("\nPer call: wall time of each call, and the CPU time (user + system, getrusage) of all calls / calls. Target: at most 1 ms per call at 10,000 held, and no growth with the leases held. The scratch dirs are removed afterwards. Raw: network.tsv (ipam.tsv with --scenarios ipam; kind ipam-*; micros; for ipam-allocate/ipam-release the case column is the leases held).\n\n");
    Ok(())
}

/// Leases held when single-call allocation and release are timed.
const IPAM_HELD: [usize; 3] = [100, 1_000, 10_000];

/// User + system CPU time of this process so far.
fn own_cpu_time() -> Duration {
    cpu_time(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap_or(Duration::ZERO)
}

/// With `held` leases (made in one transaction), `settings.ipam_single_commits`
/// calls of `Ipam::allocate` (lock, allocate, commit) each, then as many of
/// `Ipam::release`: one row.
fn time_calls_at(
    settings: &Settings,
    work: &WorkDir,
    pool: &AddressPool,
    held: usize,
    out: &mut String,
    raw: &mut String,
) -> Result<()> {
    let dir = work.ipam_dir(&format!("held-{held}"));
    let ipam = Ipam::new(&dir);
    let mut txn = ipam.transaction()?;
    for index in 0..held {
        txn.allocate(pool, &owner(index))?;
    }
    txn.commit()?;
    let calls = settings.ipam_single_commits;
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let timed = |release: bool| -> Result<(Vec<f64>, f64)> {
        let mut per_call = Vec::with_capacity(calls);
        let cpu = own_cpu_time();
        for index in held..held + calls {
            let call = Instant::now();
            if release {
                ipam.release(&pool.network, &owner(index))?
                    .with_context(|| format!("IPAM: {} had no lease to release", owner(index)))?;
            } else {
                ipam.allocate(pool, &owner(index))?;
            }
            per_call.push(ms(call.elapsed()));
        }
        Ok((per_call, ms(own_cpu_time() - cpu) / calls as f64))
    };
    let (allocations, allocation_cpu) = timed(false)?;
    let leases_then = ipam.leases(&pool.network)?.len();
    let (releases, release_cpu) = timed(true)?;
    let leases_after = ipam.leases(&pool.network)?.len();
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    if leases_then != held + calls || leases_after != held {
        bail!("IPAM at {held} held: {leases_then} leases after {calls} allocations, {leases_after} after as many releases");
    }
    for (kind, samples) in [("allocate", &allocations), ("release", &releases)] {
        for (index, millis) in samples.iter().enumerate() {
            let _ = writeln!(
                raw,
                "ipam-{kind}\t{index}\t{held}\t0\t{:.0}\t",
                millis * 1000.0
            );
        }
    }
    let allocation = Stats::of(&allocations).context("no allocation timed")?;
    let release = Stats::of(&releases).context("no release timed")?;
    let _ = writeln!(
        out,
        "| one `Ipam::allocate`, then one `Ipam::release` (each: lock, change, commit) with {held} leases held | {calls} calls each | allocate: median {:.3} ms, p95 {:.3}, max {:.3}, CPU {allocation_cpu:.3} ms/call; release: median {:.3} ms, p95 {:.3}, CPU {release_cpu:.3} ms/call |",
        allocation.median, allocation.p95, allocation.max, release.median, release.p95,
    );
    Ok(())
}

/// `--scenarios ipam`: the IPAM rows alone, on the host (plain files in a
/// scratch dir under $TMPDIR; no berth binary, no namespaces).
pub(super) fn ipam_alone(settings: &Settings, out_dir: &std::path::Path) -> Result<()> {
    let work = WorkDir::create()?;
    let mut out = String::new();
    let mut raw = String::from("kind\tround\tcase\texit_code\tmicros\tleftover\n");
    let result = time_ipam(settings, &work, &mut out, &mut raw);
    fs::remove_dir_all(&work.root).with_context(|| format!("removing {}", work.root.display()))?;
    result?;
    print!("{out}");
    fs::write(out_dir.join("ipam.md"), &out)?;
    fs::write(out_dir.join("ipam.tsv"), &raw)?;
    println!("xtask: results in {}", out_dir.join("ipam.md").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_come_from_proc_net_dev() {
        let text = "Inter-|   Receive                            |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\nvb0123456789abc: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n";
        assert_eq!(interface_names(text), ["lo", "vb0123456789abc"]);
        assert!(network_links().iter().any(|link| link == "lo"));
    }

    #[test]
    fn reaped_cpu_comes_from_cutime_and_cstime() {
        // tpgid -1 (no terminal) and a command with a space and a ')'.
        let stat = "4242 (berth (x) y) S 1 4242 4242 0 -1 4194560 120 7 0 0 3 4 11 22 20 0 1 0 9999 1000000 200 18446744073709551615";
        assert_eq!(reaped_ticks(stat), Some(33));
        assert_eq!(reaped_ticks("4242 (cut short) S 1"), None);
    }

    /// The /16 fill is also a correctness check; run it small and unprivileged.
    #[test]
    fn fill_hands_out_every_host_address_once() {
        let dir =
            std::env::temp_dir().join(format!("berth-bench-ipam-test-{}", std::process::id()));
        let ipam = Ipam::new(&dir);
        let (subnet, gateway) = parse_subnet("10.9.0.0/24", None).unwrap();
        let pool = AddressPool::new("t", subnet, gateway).unwrap();
        let (allocated, _, _, _) = fill_in_one_transaction(&ipam, &pool).unwrap();
        let leases = ipam.leases("t").unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(allocated, 253);
        assert_eq!(leases.len(), 253);
        assert_eq!(owner(1).len(), 64);
    }
}
