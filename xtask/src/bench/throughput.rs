//! The `throughput` scenario (peer-bench.sh's "throughput" section): per
//! round and tool, `--count` detached `sleep 60` containers started one
//! after another, then listed, then force-removed, each phase timed.
//!
//! - berth: `run -d --net none busybox sleep 60` (and a second row on the
//!   default bridge network), `ps -q`, one `rm -f ID...` for all of them.
//! - crun/runc: `run -d --bundle SLEEP ID`, `list`, `delete -f ID` each
//!   (they take one id at a time).
//!
//! Tools are interleaved over the rounds, the order rotated every round.
//! While the containers are up (untimed) we count the helper processes (all
//! but the `sleep` payloads and us) and, for berth, read each monitor's PSS
//! from /proc/PID/smaps_rollup (the monitor is the parent of the PID 1
//! `berth inspect` shows).
//!
//! We are PID 1 of the namespace, so what the tools leave running is
//! reparented to us: berth's monitors, crun's and runc's container inits.
//! Every command here is waited for with `waitpid(-1)`, which also reaps
//! those orphans as they exit, as init would on a real host (a zombie
//! monitor would look alive to a `kill(pid, 0)` check).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::report::median;
use super::system::{display_command, processes, settle};
use super::{BundleKind, Runner, Section, Settings, Tool};

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Row {
    /// `berth run -d --net none`.
    BerthNone,
    /// `berth run -d` on the default bridge network.
    BerthBridge,
    Crun,
    Runc,
}

impl Row {
    fn label(self) -> &'static str {
        match self {
            Row::BerthNone => "berth --net none",
            Row::BerthBridge => "berth (bridge)",
            Row::Crun => "crun",
            Row::Runc => "runc",
        }
    }

    /// For container ids: no spaces.
    fn slug(self) -> &'static str {
        match self {
            Row::BerthNone => "berth-none",
            Row::BerthBridge => "berth-bridge",
            Row::Crun => "crun",
            Row::Runc => "runc",
        }
    }

    fn tool(self) -> Tool {
        match self {
            Row::BerthNone | Row::BerthBridge => Tool::Berth,
            Row::Crun => Tool::Crun,
            Row::Runc => Tool::Runc,
        }
    }

    /// Starts one detached container; `id` is ours for crun/runc, berth
    /// makes its own and prints it.
    fn start(self, runner: &Runner, id: &str) -> Command {
        match self {
            Row::BerthNone | Row::BerthBridge => {
                let mut command = runner.berth_command();
                command.args(["run", "-d"]);
                if self == Row::BerthNone {
                    command.args(["--net", "none"]);
                }
                command.args(["busybox", "sleep", "60"]);
                command
            }
            Row::Crun | Row::Runc => {
                let mut command = runner.runtime_command(self.tool());
                command
                    .args(["run", "-d", "--bundle"])
                    .arg(runner.work.bundle(self.tool(), BundleKind::Sleep))
                    .arg(id);
                command
            }
        }
    }

    fn list(self, runner: &Runner) -> Command {
        match self {
            Row::BerthNone | Row::BerthBridge => {
                let mut command = runner.berth_command();
                command.args(["ps", "-q"]);
                command
            }
            Row::Crun | Row::Runc => {
                let mut command = runner.runtime_command(self.tool());
                command.arg("list");
                command
            }
        }
    }

    /// The delete commands for `ids`: one for berth, one per id otherwise.
    fn delete(self, runner: &Runner, ids: &[String]) -> Vec<Command> {
        match self {
            Row::BerthNone | Row::BerthBridge => {
                let mut command = runner.berth_command();
                command.args(["rm", "-f"]).args(ids);
                vec![command]
            }
            Row::Crun | Row::Runc => ids
                .iter()
                .map(|id| {
                    let mut command = runner.runtime_command(self.tool());
                    command.args(["delete", "-f", id]);
                    command
                })
                .collect(),
        }
    }

    /// Does this `list` output show `id`? `berth ps -q` prints short ids
    /// (a prefix), crun/runc `list` a table whose first column is the id.
    fn listed(self, output: &str, id: &str) -> bool {
        output.lines().any(|line| {
            let first = line.split_whitespace().next().unwrap_or_default();
            match self {
                Row::BerthNone | Row::BerthBridge => !first.is_empty() && id.starts_with(first),
                Row::Crun | Row::Runc => first == id,
            }
        })
    }
}

/// One tool's round.
#[derive(Debug, Clone)]
struct Round {
    round: usize,
    row: Row,
    start: Duration,
    list: Duration,
    delete: Duration,
    started: usize,
    listed: usize,
    /// Ours still listed after the delete phase (then removed, untimed).
    left: usize,
    /// Processes in our PID namespace while all were up, besides the
    /// `sleep` payloads and us; their summed RSS and PSS.
    helpers: usize,
    helpers_rss_kib: u64,
    helpers_pss_kib: u64,
    /// PSS of each container's monitor (berth), KiB.
    monitors_pss_kib: Vec<u64>,
    /// The first failure of the round, if any.
    error: Option<String>,
}

impl Round {
    fn total(&self) -> Duration {
        self.start + self.list + self.delete
    }
}

pub(super) fn measure(settings: &Settings, runner: &Runner) -> Result<Section> {
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let candidates = [
        (Row::BerthNone, Tool::Berth),
        (Row::BerthBridge, Tool::Berth),
        (Row::Crun, Tool::Crun),
        (Row::Runc, Tool::Runc),
    ];
    for (row, tool) in candidates {
        if !settings.tools.contains(&tool) {
            continue;
        }
        if !runner.tool_present(tool) {
            skipped.push(format!("{}: not installed, skipped", row.label()));
            continue;
        }
        // One untimed container first: does it work at all here?
        match one_round(runner, row, 0, 1, "probe") {
            Ok(round) if round.error.is_none() && round.started == 1 && round.left == 0 => {
                rows.push(row);
            }
            Ok(round) => skipped.push(format!(
                "{}: fails here, skipped ({})",
                row.label(),
                round
                    .error
                    .unwrap_or_else(|| "left its container behind".to_owned())
            )),
            Err(err) => skipped.push(format!("{}: fails here, skipped ({err:#})", row.label())),
        }
    }
    if rows.is_empty() {
        bail!(
            "no tool can run detached containers here: {}",
            skipped.join("; ")
        );
    }
    eprintln!(
        "xtask: throughput: {} containers x {} tools x {} round(s)",
        settings.count,
        rows.len(),
        settings.rounds
    );
    let mut rounds = Vec::new();
    for round in 0..settings.rounds {
        for offset in 0..rows.len() {
            let row = rows[(round + offset) % rows.len()];
            rounds.push(one_round(runner, row, round, settings.count, "r")?);
        }
    }
    let failed = rounds.iter().filter(|round| round.error.is_some()).count();
    Ok(Section {
        markdown: render(settings, runner, &rows, &skipped, &rounds),
        raw: Some(("throughput.tsv", raw_tsv(&rounds))),
        failure: (failed > 0).then(|| format!("{failed} round(s) with errors (see Errors)")),
    })
}

/// Start `count` containers, list, (untimed) look at the helpers, delete,
/// check that the list is empty again.
fn one_round(runner: &Runner, row: Row, round: usize, count: usize, tag: &str) -> Result<Round> {
    settle();
    let capture = Capture::new(&runner.work.runtime_state())?;
    let mut ids = Vec::new();
    let mut error = None;
    let started_at = Instant::now();
    for index in 0..count {
        let our_id = format!(
            "{}tp-{}-{tag}{round}-{index}",
            runner.work.id_prefix(),
            row.slug()
        );
        let outcome = capture.run(&mut row.start(runner, &our_id))?;
        if outcome.status.success() {
            ids.push(match row.tool() {
                Tool::Berth | Tool::BerthBaseline => outcome.stdout.trim().to_owned(),
                Tool::Crun | Tool::Runc => our_id,
            });
        } else if error.is_none() {
            error = Some(outcome.failure());
        }
    }
    let start = started_at.elapsed();

    let listed_at = Instant::now();
    let listing = capture.run(&mut row.list(runner))?;
    let list = listed_at.elapsed();
    if !listing.status.success() && error.is_none() {
        error = Some(listing.failure());
    }
    let listed = ids
        .iter()
        .filter(|id| row.listed(&listing.stdout, id))
        .count();

    // Untimed: who else is running while all are up, and what they hold.
    let (helpers, helpers_rss_kib, helpers_pss_kib) = helper_processes();
    let monitors_pss_kib = if row.tool() == Tool::Berth && !ids.is_empty() {
        monitor_pss(runner, &capture, &ids).unwrap_or_else(|err| {
            error.get_or_insert(format!("reading the monitors' PSS: {err:#}"));
            Vec::new()
        })
    } else {
        Vec::new()
    };

    let deleted_at = Instant::now();
    for mut command in row.delete(runner, &ids) {
        let outcome = capture.run(&mut command)?;
        if !outcome.status.success() && error.is_none() {
            error = Some(outcome.failure());
        }
    }
    let delete = deleted_at.elapsed();

    let after = capture.run(&mut row.list(runner))?;
    let left = ids
        .iter()
        .filter(|id| row.listed(&after.stdout, id))
        .count();
    if left > 0 {
        error.get_or_insert(format!("{left} container(s) still listed after the delete"));
        runner.remove_all(row.tool());
    }
    capture.remove();
    Ok(Round {
        round,
        row,
        start,
        list,
        delete,
        started: ids.len(),
        listed,
        left,
        helpers,
        helpers_rss_kib,
        helpers_pss_kib,
        monitors_pss_kib,
        error,
    })
}

/// stdout and stderr of a command, through files on our tmpfs rather than
/// pipes: a detached container (crun's, with no terminal) inherits its
/// runtime's stdio, and a pipe it holds would never reach end-of-file.
pub(super) struct Capture {
    stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
}

pub(super) struct Outcome {
    pub(super) status: ExitStatus,
    pub(super) stdout: String,
    stderr: String,
    command: String,
}

impl Outcome {
    pub(super) fn failure(&self) -> String {
        let line = self
            .stderr
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("")
            .trim();
        format!("`{}`: {line} ({})", self.command, self.status)
    }
}

impl Capture {
    pub(super) fn new(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Capture {
            stdout: dir.join("throughput.stdout"),
            stderr: dir.join("throughput.stderr"),
        })
    }

    pub(super) fn run(&self, command: &mut Command) -> Result<Outcome> {
        let description = display_command(command);
        let create = |path: &Path| {
            fs::File::create(path).with_context(|| format!("creating {}", path.display()))
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(create(&self.stdout)?)
            .stderr(create(&self.stderr)?)
            .spawn()
            .with_context(|| format!("starting `{description}`"))?;
        let status = wait_reaping(child.id())?;
        Ok(Outcome {
            status,
            stdout: fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: fs::read_to_string(&self.stderr).unwrap_or_default(),
            command: description,
        })
    }

    pub(super) fn remove(&self) {
        let _ = fs::remove_file(&self.stdout);
        let _ = fs::remove_file(&self.stderr);
    }
}

/// Wait for `pid` with `waitpid(-1)`, reaping whichever orphans exit
/// meanwhile (see the module docs).
fn wait_reaping(pid: u32) -> Result<ExitStatus> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(done, code)) if done.as_raw() as u32 == pid => {
                return Ok(ExitStatus::from_raw((code & 0xff) << 8));
            }
            Ok(WaitStatus::Signaled(done, signal, _)) if done.as_raw() as u32 == pid => {
                return Ok(ExitStatus::from_raw(signal as i32));
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(err) => bail!("waiting for process {pid}: {err}"),
        }
    }
}

/// (count, summed VmRSS KiB, summed PSS KiB) of the processes in our PID
/// namespace other than us and the `sleep` payloads.
fn helper_processes() -> (usize, u64, u64) {
    let mut count = 0;
    let mut rss = 0;
    let mut pss = 0;
    for (pid, _) in processes() {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if pid == 1 || comm.trim() == "sleep" {
            continue;
        }
        count += 1;
        rss += kib_field(&format!("/proc/{pid}/status"), "VmRSS:").unwrap_or(0);
        pss += kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:").unwrap_or(0);
    }
    (count, rss, pss)
}

/// `Name:   1234 kB` from a /proc file.
pub(super) fn kib_field(path: &str, name: &str) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(name))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The PSS of each container's monitor: the parent of its PID 1 (the
/// `State.Pid` of `berth inspect ID...`), from /proc/PID/smaps_rollup.
pub(super) fn monitor_pss(runner: &Runner, capture: &Capture, ids: &[String]) -> Result<Vec<u64>> {
    let outcome = capture.run(runner.berth_command().arg("inspect").args(ids))?;
    if !outcome.status.success() {
        bail!("{}", outcome.failure());
    }
    let records: Value =
        serde_json::from_str(&outcome.stdout).context("parsing `berth inspect` output")?;
    let records = records
        .as_array()
        .context("`berth inspect` did not print a JSON array")?;
    let mut pss = Vec::new();
    for record in records {
        let pid = record["State"]["Pid"]
            .as_u64()
            .with_context(|| format!("no State.Pid in the record of {}", record["Id"]))?;
        let monitor = parent_of(pid)
            .with_context(|| format!("no parent of PID 1 {pid} of {}", record["Id"]))?;
        pss.push(
            kib_field(&format!("/proc/{monitor}/smaps_rollup"), "Pss:")
                .with_context(|| format!("no Pss in /proc/{monitor}/smaps_rollup"))?,
        );
    }
    Ok(pss)
}

/// The parent process of `pid`, from /proc/PID/stat.
fn parent_of(pid: u64) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (in parentheses) may hold spaces: count after it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn render(
    settings: &Settings,
    runner: &Runner,
    rows: &[Row],
    skipped: &[String],
    rounds: &[Round],
) -> String {
    let count = settings.count;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Throughput: {count} detached `sleep 60` containers, start all -> list -> delete all (ms; median over {} round(s), tools interleaved, order rotated)\n",
        settings.rounds
    );
    out.push_str("| tool | start all | per start | list | delete all | per delete | total | total / crun | paired total / crun | started/listed/left per round | helper procs / RSS / PSS while up |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    let of_row = |row: Row| rounds.iter().filter(move |round| round.row == row);
    let median_of = |row: Row, field: &dyn Fn(&Round) -> f64| {
        median(&of_row(row).map(field).collect::<Vec<_>>())
    };
    let crun_total = median_of(Row::Crun, &|round| millis(round.total()));
    let crun_by_round: BTreeMap<usize, f64> = of_row(Row::Crun)
        .map(|round| (round.round, millis(round.total())))
        .collect();
    for &row in rows {
        let start = median_of(row, &|round| millis(round.start)).unwrap_or(f64::NAN);
        let list = median_of(row, &|round| millis(round.list)).unwrap_or(f64::NAN);
        let delete = median_of(row, &|round| millis(round.delete)).unwrap_or(f64::NAN);
        let total = median_of(row, &|round| millis(round.total())).unwrap_or(f64::NAN);
        let ratio = crun_total.map_or("-".to_owned(), |crun| format!("{:.2}x", total / crun));
        let paired: Vec<f64> = of_row(row)
            .filter_map(|round| Some(millis(round.total()) / crun_by_round.get(&round.round)?))
            .collect();
        let paired = median(&paired).map_or("-".to_owned(), |ratio| format!("{ratio:.2}x"));
        let counts: Vec<String> = of_row(row)
            .map(|round| format!("{}/{}/{}", round.started, round.listed, round.left))
            .collect();
        let helpers = median_of(row, &|round| round.helpers as f64).unwrap_or(f64::NAN);
        let rss = median_of(row, &|round| round.helpers_rss_kib as f64).unwrap_or(f64::NAN);
        let pss = median_of(row, &|round| round.helpers_pss_kib as f64).unwrap_or(f64::NAN);
        let _ = writeln!(
            out,
            "| {} | {start:.0} | {:.1} | {list:.1} | {delete:.0} | {:.1} | {total:.0} | {ratio} | {paired} | {} | {helpers:.0} / {:.1} MiB / {:.1} MiB |",
            row.label(),
            start / count as f64,
            delete / count as f64,
            counts.join(" "),
            rss / 1024.0,
            pss / 1024.0,
        );
    }
    for reason in skipped {
        let _ = writeln!(out, "| {reason} | | | | | | | | | | |");
    }
    out.push('\n');
    for &row in rows.iter().filter(|row| row.tool() == Tool::Berth) {
        let per_monitor: Vec<f64> = of_row(row)
            .flat_map(|round| round.monitors_pss_kib.iter().map(|kib| *kib as f64))
            .collect();
        let totals: Vec<f64> = of_row(row)
            .filter(|round| !round.monitors_pss_kib.is_empty())
            .map(|round| round.monitors_pss_kib.iter().sum::<u64>() as f64)
            .collect();
        if let (Some(per), Some(total)) = (median(&per_monitor), median(&totals)) {
            let max = per_monitor.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(
                out,
                "{}: monitor PSS (one monitor per container, /proc/PID/smaps_rollup while all {count} are up) median {per:.0} KiB per monitor (max {max:.0}; target <= 256 KiB, conmon ~367 KiB), {total:.0} KiB ({:.1} MiB) for all {count} (median over rounds); {} samples.\n",
                row.label(),
                total / 1024.0,
                per_monitor.len()
            );
        }
    }
    let errors: Vec<String> = rounds
        .iter()
        .filter_map(|round| {
            let error = round.error.as_ref()?;
            Some(format!(
                "{} round {}: {error}",
                round.row.label(),
                round.round
            ))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "Errors:\n");
        for error in errors {
            let _ = writeln!(out, "- {}", error.replace('|', "\\|"));
        }
        out.push('\n');
    }
    out.push_str("\"helper procs\": every process in the benchmark's PID namespace but the `sleep` payloads and the benchmark itself (berth: the monitors; crun/runc `run -d` leave none, the container init is reparented to PID 1). \"paired\": median over rounds of the tool's total / crun's total in the same round. Raw data: throughput.tsv.\n\nCommands (ID: ours for crun/runc, the one `berth run -d` printed):\n\n");
    for &row in rows {
        let _ = writeln!(
            out,
            "    {}: {} ; {} ; {}",
            row.label(),
            display_command(&row.start(runner, "ID")),
            display_command(&row.list(runner)),
            match row.tool() {
                Tool::Berth | Tool::BerthBaseline => row
                    .delete(runner, &["ID...".to_owned()])
                    .first()
                    .map(display_command)
                    .unwrap_or_default(),
                Tool::Crun | Tool::Runc => row
                    .delete(runner, &["ID".to_owned()])
                    .first()
                    .map(|command| format!("{} (one per container)", display_command(command)))
                    .unwrap_or_default(),
            }
        );
    }
    out.push('\n');
    out
}

fn raw_tsv(rounds: &[Round]) -> String {
    let mut text = String::from(
        "round\ttool\tstart_ms\tlist_ms\tdelete_ms\ttotal_ms\tstarted\tlisted\tleft\thelpers\thelpers_rss_kib\thelpers_pss_kib\tmonitors_pss_kib\terror\n",
    );
    for round in rounds {
        let monitors: Vec<String> = round.monitors_pss_kib.iter().map(u64::to_string).collect();
        let _ = writeln!(
            text,
            "{}\t{}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            round.round,
            round.row.slug(),
            millis(round.start),
            millis(round.list),
            millis(round.delete),
            millis(round.total()),
            round.started,
            round.listed,
            round.left,
            round.helpers,
            round.helpers_rss_kib,
            round.helpers_pss_kib,
            monitors.join(","),
            round
                .error
                .as_deref()
                .unwrap_or("")
                .replace(['\t', '\n'], " ")
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_matches_short_ids_and_table_rows() {
        let id = "c527f182f9aaa5c7f7aa1693a1a50d00020f0b5bd8eaf457667fc5f1168d97fc";
        assert!(Row::BerthNone.listed("0123\nc527f182f9aa\n", id));
        assert!(!Row::BerthNone.listed("\n0123abcd\n", id));
        let table = "NAME PID STATUS\nbench-x-1 42 running\nbench-x-10 43 running\n";
        assert!(Row::Crun.listed(table, "bench-x-1"));
        assert!(!Row::Crun.listed(table, "bench-x-2"));
    }

    #[test]
    fn parents_come_from_proc() {
        let own = u64::from(std::process::id());
        let parent = u64::from(std::os::unix::process::parent_id());
        assert_eq!(parent_of(own), Some(parent));
        assert_eq!(parent_of(u64::MAX), None);
    }

    #[test]
    fn kib_fields_from_proc_files() {
        let own = kib_field("/proc/self/status", "VmRSS:");
        assert!(own.is_some_and(|kib| kib > 0), "{own:?}");
        assert_eq!(kib_field("/proc/self/status", "NoSuchField:"), None);
    }
}
