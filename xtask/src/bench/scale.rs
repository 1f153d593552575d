//! The `scale` scenario: `--scale N` (500) detached `sleep 3600`
//! containers on one host, berth on its default bridge network beside crun
//! on the same bundle content.
//!
//! Per tool, once, with one untimed container of the tool running
//! throughout (berth's network is up, as on a host that runs containers):
//! the N starts one after another, each timed (the 1st
//! against the Nth, and the first ten against the last ten: does a start
//! get slower with the containers already running?), then the listing with
//! N records (`berth ps -a`, `crun list`; the median of a few), for berth
//! the PSS of each monitor while all run, then the removal of all N in
//! parallel (`berth rm -f ID` / `crun delete -f ID`, one process per
//! container, [`PARALLEL_REMOVALS`] at a time), timed; then what is left:
//! processes, network links, iptables rules, cgroups (named after one of
//! the N: the hierarchies are the host's) and mounts that were not there
//! before the first start.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::report::median;
use super::system::{cgroup_dirs, display_command, processes, settle, settle_sparing};
use super::throughput::{monitor_pss, Capture};
use super::{BundleKind, Runner, Section, Settings, Tool};

/// Removals running at once: parallel like a script's `xargs -P`, bounded
/// so that the machine is not swamped by N berth processes at a time.
pub(super) const PARALLEL_REMOVALS: usize = 16;

/// Listings timed per tool (the median is reported).
const LISTINGS: usize = 5;

#[derive(Debug, Default)]
struct ToolRun {
    tool_label: &'static str,
    starts: Vec<Duration>,
    listings: Vec<Duration>,
    listed: usize,
    monitors_pss_kib: Vec<u64>,
    remove_all: Duration,
    left: Leftovers,
    errors: Vec<String>,
}

/// What the host has that it did not have before the first start.
#[derive(Debug, Default)]
struct Leftovers {
    processes: Vec<String>,
    links: Vec<String>,
    rules: Vec<String>,
    cgroups: Vec<String>,
    mounts: Vec<String>,
}

impl Leftovers {
    fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.links.is_empty()
            && self.rules.is_empty()
            && self.cgroups.is_empty()
            && self.mounts.is_empty()
    }

    fn describe(&self) -> String {
        if self.is_empty() {
            return "nothing".to_owned();
        }
        let mut parts = Vec::new();
        for (what, items) in [
            ("processes", &self.processes),
            ("links", &self.links),
            ("iptables rules", &self.rules),
            ("cgroups", &self.cgroups),
            ("mounts", &self.mounts),
        ] {
            if !items.is_empty() {
                let shown: Vec<&str> = items.iter().take(3).map(String::as_str).collect();
                parts.push(format!("{} {what} ({} ...)", items.len(), shown.join(", ")));
            }
        }
        parts.join("; ")
    }
}

/// The host's state that containers add to (inside the bench's sandbox).
#[derive(Debug)]
struct Snapshot {
    processes: BTreeSet<String>,
    links: BTreeSet<String>,
    rules: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    mounts: BTreeSet<String>,
}

impl Snapshot {
    fn take() -> Self {
        let processes = processes()
            .into_iter()
            .filter(|(pid, _)| *pid != 1)
            .map(|(pid, command)| format!("{pid} {command}"))
            .collect();
        // Our namespace's, not the host's (/sys is the host's mount).
        let links = super::network::network_links().into_iter().collect();
        // Rules and chains, without the packet counters.
        let rules = Command::new("iptables-save")
            .stderr(Stdio::null())
            .output()
            .map(|output| {
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .filter(|line| !line.starts_with('#'))
                    .map(|line| match line.split_once(" [") {
                        Some((chain, _)) if line.starts_with(':') => chain.to_owned(),
                        _ => line.to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cgroups = cgroup_dirs()
            .into_iter()
            .map(|dir| dir.display().to_string())
            .collect();
        let mounts = fs::read_to_string("/proc/self/mountinfo")
            .map(|table| {
                table
                    .lines()
                    .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Snapshot {
            processes,
            links,
            rules,
            cgroups,
            mounts,
        }
    }

    /// What is here and was not `before`. The cgroup hierarchies are the
    /// host's (not private to the sandbox, and other berths on the host
    /// come and go in them): only cgroups named after one of `ours` count.
    fn added_since(&self, before: &Snapshot, ours: &[String]) -> Leftovers {
        let added = |now: &BTreeSet<String>, then: &BTreeSet<String>| -> Vec<String> {
            now.difference(then).cloned().collect()
        };
        let mut cgroups = added(&self.cgroups, &before.cgroups);
        cgroups.retain(|dir| {
            Path::new(dir).components().any(|part| {
                ours.iter()
                    .any(|id| part.as_os_str() == std::ffi::OsStr::new(id))
            })
        });
        Leftovers {
            processes: added(&self.processes, &before.processes),
            links: added(&self.links, &before.links),
            rules: added(&self.rules, &before.rules),
            cgroups,
            mounts: added(&self.mounts, &before.mounts),
        }
    }
}

pub(super) fn measure(settings: &Settings, runner: &Runner) -> Result<Section> {
    let count = settings.scale;
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for tool in [Tool::Berth, Tool::Crun] {
        if !settings.tools.contains(&tool) {
            continue;
        }
        if !runner.tool_present(tool) {
            skipped.push(format!("{}: not installed, skipped", tool.name()));
            continue;
        }
        eprintln!("xtask: scale: {count} {} containers", tool.name());
        runs.push(one_tool(runner, tool, count)?);
        settle();
    }
    if runs.is_empty() {
        bail!("no tool to measure: {}", skipped.join("; "));
    }
    let failed = runs
        .iter()
        .filter(|run| !run.errors.is_empty() || !run.left.is_empty())
        .count();
    Ok(Section {
        markdown: render(runner, count, &runs, &skipped),
        raw: Some(("scale.tsv", raw_tsv(&runs))),
        failure: (failed > 0)
            .then(|| format!("{failed} tool(s) failed or left something behind (see Errors)")),
    })
}

fn start_command(runner: &Runner, tool: Tool, id: &str) -> Command {
    if tool.is_berth() {
        let mut command = runner.berth_command();
        command.args(["run", "-d", "busybox", "sleep", "3600"]);
        command
    } else {
        let mut command = runner.runtime_command(tool);
        command
            .args(["run", "-d", "--bundle"])
            .arg(runner.work.bundle(tool, BundleKind::LongSleep))
            .arg(id);
        command
    }
}

fn list_command(runner: &Runner, tool: Tool) -> Command {
    if tool.is_berth() {
        let mut command = runner.berth_command();
        command.args(["ps", "-a"]);
        command
    } else {
        let mut command = runner.runtime_command(tool);
        command.arg("list");
        command
    }
}

fn remove_command(runner: &Runner, tool: Tool, id: &str) -> Command {
    if tool.is_berth() {
        let mut command = runner.berth_command();
        command.args(["rm", "-f", id]);
        command
    } else {
        let mut command = runner.runtime_command(tool);
        command.args(["delete", "-f", id]);
        command
    }
}

fn one_tool(runner: &Runner, tool: Tool, count: usize) -> Result<ToolRun> {
    let capture = Capture::new(&runner.work.runtime_state())?;
    let mut run = ToolRun {
        tool_label: if tool.is_berth() {
            "berth (bridge)"
        } else {
            tool.name()
        },
        ..ToolRun::default()
    };
    // One untimed container runs throughout, as on a host that already runs
    // containers: berth makes its bridge and rules with the first container
    // on the network (and removes them with the last), which is neither the
    // 1st start's cost nor a leftover of the N.
    let first_id = format!("{}scale-{}-first", runner.work.id_prefix(), tool.name());
    let first = capture.run(&mut start_command(runner, tool, &first_id))?;
    if !first.status.success() {
        bail!("{}: {}", tool.name(), first.failure());
    }
    let first_id = if tool.is_berth() {
        first.stdout.trim().to_owned()
    } else {
        first_id
    };
    // What runs now is the first container (and berth's monitor of it):
    // waiting for quiet spares it.
    std::thread::sleep(Duration::from_millis(200));
    let first_processes: Vec<u32> = processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| *pid != 1)
        .collect();
    settle_sparing(&first_processes);
    let before = Snapshot::take();

    let mut ids = Vec::new();
    for index in 0..count {
        let our_id = format!("{}scale-{}-{index}", runner.work.id_prefix(), tool.name());
        let started = Instant::now();
        let outcome = capture.run(&mut start_command(runner, tool, &our_id))?;
        let took = started.elapsed();
        if !outcome.status.success() {
            run.errors.push(outcome.failure());
            break;
        }
        run.starts.push(took);
        ids.push(if tool.is_berth() {
            outcome.stdout.trim().to_owned()
        } else {
            our_id
        });
    }

    for _ in 0..LISTINGS {
        let started = Instant::now();
        let listing = capture.run(&mut list_command(runner, tool))?;
        run.listings.push(started.elapsed());
        if !listing.status.success() {
            run.errors.push(listing.failure());
            break;
        }
        // A header line, then one line per container.
        run.listed = listing.stdout.lines().count().saturating_sub(1);
    }

    if tool.is_berth() && !ids.is_empty() {
        match monitor_pss(runner, &capture, &ids) {
            Ok(pss) => run.monitors_pss_kib = pss,
            Err(err) => run
                .errors
                .push(format!("reading the monitors' PSS: {err:#}")),
        }
    }

    let started = Instant::now();
    let failures = run_in_parallel(
        ids.iter()
            .map(|id| remove_command(runner, tool, id))
            .collect(),
        PARALLEL_REMOVALS,
        &runner.work.runtime_state(),
    )?;
    run.remove_all = started.elapsed();
    run.errors.extend(failures);
    settle_sparing(&first_processes);
    // The kernel deletes the veths with the namespaces, after the
    // containers are gone: give it time before calling a link left over.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = Snapshot::take();
    while !after.links.is_subset(&before.links) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = Snapshot::take();
    }
    run.left = after.added_since(&before, &ids);
    let last = capture.run(&mut remove_command(runner, tool, &first_id))?;
    if !last.status.success() {
        run.errors.push(last.failure());
    }
    capture.remove();
    if !run.left.is_empty() {
        runner.remove_all(tool);
    }
    Ok(run)
}

/// Run `commands`, at most `parallel` at a time; the failures (one line
/// each). stderr goes to a file per command in `scratch`. Every child is
/// waited for with `waitpid(-1)`, which also reaps the orphans reparented
/// to us (we are PID 1 of the sandbox).
pub(super) fn run_in_parallel(
    commands: Vec<Command>,
    parallel: usize,
    scratch: &Path,
) -> Result<Vec<String>> {
    use nix::sys::wait::{waitpid, WaitStatus};
    let mut pending = commands.into_iter().enumerate();
    let mut running: HashMap<u32, (String, std::path::PathBuf)> = HashMap::new();
    let mut failures = Vec::new();
    loop {
        while running.len() < parallel {
            let Some((index, mut command)) = pending.next() else {
                break;
            };
            let description = display_command(&command);
            let stderr_path = scratch.join(format!("scale-{index}.stderr"));
            let stderr = fs::File::create(&stderr_path)
                .with_context(|| format!("creating {}", stderr_path.display()))?;
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .with_context(|| format!("starting `{description}`"))?;
            running.insert(child.id(), (description, stderr_path));
        }
        if running.is_empty() {
            return Ok(failures);
        }
        let (pid, success, status) = match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, code == 0, format!("exit {code}")),
            Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, false, format!("{signal}")),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => bail!("waiting for the removals: {err}"),
        };
        let Some((description, stderr_path)) = running.remove(&(pid.as_raw() as u32)) else {
            continue;
        };
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        let _ = fs::remove_file(&stderr_path);
        if !success {
            let line = stderr.lines().next().unwrap_or("").trim().to_owned();
            failures.push(format!("`{description}`: {line} ({status})"));
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn median_millis(durations: &[Duration]) -> f64 {
    median(&durations.iter().copied().map(millis).collect::<Vec<_>>()).unwrap_or(f64::NAN)
}

fn render(runner: &Runner, count: usize, runs: &[ToolRun], skipped: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Scale: {count} detached `sleep 3600` containers (berth on its default bridge network), started one after another, listed, removed in parallel ({PARALLEL_REMOVALS} at a time); one more container of the tool runs throughout, untimed\n"
    );
    out.push_str("| tool | started | 1st start ms | Nth start ms | Nth / 1st | median of the first / last fifth ms | last fifth / first fifth | list ms (N+1 records, median of 5) | listed | monitor PSS per container KiB (median / max) | monitors total MiB | remove all ms | left after remove |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for run in runs {
        let first = run.starts.first().copied().map(millis).unwrap_or(f64::NAN);
        let last = run.starts.last().copied().map(millis).unwrap_or(f64::NAN);
        // A fifth of the starts (100 of 500): single starts follow the
        // machine's load more than the number of containers.
        let window = (run.starts.len() / 5).max(1).min(run.starts.len());
        let head = median_millis(&run.starts[..window]);
        let tail = median_millis(&run.starts[run.starts.len() - window..]);
        let pss: Vec<f64> = run.monitors_pss_kib.iter().map(|kib| *kib as f64).collect();
        let (per, max, total) = match median(&pss) {
            Some(per) => (
                format!("{per:.0}"),
                format!("{:.0}", pss.iter().copied().fold(0.0, f64::max)),
                format!("{:.1}", pss.iter().sum::<f64>() / 1024.0),
            ),
            None => ("-".to_owned(), "-".to_owned(), "- (no monitor)".to_owned()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {first:.1} | {last:.1} | {:.2}x | {head:.1} / {tail:.1} | {:.2}x | {:.1} | {} | {per} / {max} | {total} | {:.0} | {} |",
            run.tool_label,
            run.starts.len(),
            last / first,
            tail / head,
            median_millis(&run.listings),
            run.listed,
            millis(run.remove_all),
            run.left.describe(),
        );
    }
    for reason in skipped {
        let _ = writeln!(out, "| {reason} | | | | | | | | | | | | |");
    }
    out.push('\n');
    let errors: Vec<String> = runs
        .iter()
        .flat_map(|run| {
            run.errors
                .iter()
                .take(5)
                .map(move |error| format!("{}: {error}", run.tool_label))
        })
        .collect();
    if !errors.is_empty() {
        out.push_str("Errors (at most 5 per tool):\n\n");
        for error in errors {
            let _ = writeln!(out, "- {}", error.replace('|', "\\|"));
        }
        out.push('\n');
    }
    out.push_str("Targets (issue 16): the Nth `run -d` at most 1.3x the 1st (read off the medians of the last and first fifth of the starts: one start alone varies with the load by more than that), `ps -a` with N records under 50 ms, monitor PSS at most 256 KiB per container, nothing left after the removal. \"left after remove\": processes, links, iptables rules and chains, cgroups and mounts present after the removal that were not before the first start. Raw data: scale.tsv (every start).\n\nCommands (ID: ours for crun, the one `berth run -d` printed):\n\n");
    for tool in [Tool::Berth, Tool::Crun] {
        if runs
            .iter()
            .any(|run| run.tool_label.starts_with(tool.name()))
        {
            let _ = writeln!(
                out,
                "    {}: {} ; {} ; {} (one per container, {PARALLEL_REMOVALS} at a time)",
                tool.name(),
                display_command(&start_command(runner, tool, "ID")),
                display_command(&list_command(runner, tool)),
                display_command(&remove_command(runner, tool, "ID")),
            );
        }
    }
    out.push('\n');
    out
}

fn raw_tsv(runs: &[ToolRun]) -> String {
    let mut text = String::from("tool\tindex\tstart_ms\n");
    for run in runs {
        for (index, start) in run.starts.iter().enumerate() {
            let _ = writeln!(text, "{}\t{index}\t{:.2}", run.tool_label, millis(*start));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn leftovers_are_what_was_added() {
        let before = Snapshot {
            processes: set(&["1 init"]),
            links: set(&["lo", "berth0"]),
            rules: set(&[":BERTH", "-A BERTH -j RETURN"]),
            cgroups: set(&["/sys/fs/cgroup/pids/berth"]),
            mounts: set(&["/"]),
        };
        let after = Snapshot {
            processes: set(&["1 init"]),
            links: set(&["lo", "berth0", "veth1"]),
            rules: set(&[":BERTH", "-A BERTH -j RETURN"]),
            cgroups: set(&[]),
            mounts: set(&["/", "/merged"]),
        };
        let ours = ["7".repeat(64)];
        let mut after = after;
        after
            .cgroups
            .insert(format!("/sys/fs/cgroup/pids/berth/{}", ours[0]));
        after
            .cgroups
            .insert(format!("/sys/fs/cgroup/pids/berth/{}", "8".repeat(64)));
        let left = after.added_since(&before, &ours);
        assert_eq!(left.links, ["veth1"]);
        assert_eq!(left.mounts, ["/merged"]);
        assert_eq!(
            left.cgroups,
            [format!("/sys/fs/cgroup/pids/berth/{}", ours[0])]
        );
        assert!(left.rules.is_empty());
        assert!(!left.is_empty());
        assert!(left.describe().contains("1 links"), "{}", left.describe());
        assert!(before.added_since(&before, &ours).is_empty());
        assert_eq!(before.added_since(&before, &ours).describe(), "nothing");
    }
}
