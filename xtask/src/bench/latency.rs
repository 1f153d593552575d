//! The latency scenarios, `plain` and `limits`: start-to-exit of one `true`
//! container per run, every tool on the same footing, in the cold/paced and
//! the warm/back-to-back regimes (see the parent module's docs).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_cgroup::Hierarchies;

use super::report::{ProbeTable, Report};
use super::system::{
    display_command, is_unknown_flag_error, limits_in, probe, processes, quiet, settle, ProbeResult,
};
use super::{BundleKind, Regime, Runner, Scenario, Settings, Tool};

/// `--memory 64m` and `--cpus 1` as the OCI runtimes get them.
pub(super) const MEMORY_LIMIT_BYTES: u64 = 64 * 1024 * 1024;
pub(super) const CPU_PERIOD_US: u64 = 100_000;
pub(super) const CPU_QUOTA_US: u64 = 100_000;
/// The berth flags for the same limits.
pub(super) const BERTH_LIMIT_FLAGS: [&str; 4] = ["-m", "64m", "--cpus", "1"];
/// Warm regime: measured back-to-back runs per burst (see measure_warm).
pub(super) const WARM_BURST: usize = 5;

/// One row of the tables: a tool running one scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Case {
    pub(super) scenario: Scenario,
    pub(super) tool: Tool,
}

impl Case {
    pub(super) fn label(self) -> String {
        match self.scenario {
            Scenario::Limits => format!("{} + limits", self.tool.name()),
            _ => self.tool.name().to_owned(),
        }
    }

    /// The crun case of the same scenario: what ratios are taken against.
    pub(super) fn baseline(self) -> Case {
        self.with_tool(Tool::Crun)
    }

    pub(super) fn with_tool(self, tool: Tool) -> Case {
        Case {
            scenario: self.scenario,
            tool,
        }
    }
}

/// One measured run.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    pub(super) regime: Regime,
    pub(super) round: usize,
    pub(super) case: Case,
    pub(super) id: String,
    pub(super) exit_code: i32,
    pub(super) elapsed: Duration,
    pub(super) leftover: bool,
}

impl Sample {
    pub(super) fn ok(&self) -> bool {
        self.exit_code == 0
    }

    pub(super) fn millis(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1000.0
    }
}

impl Runner {
    /// The measured command: create, start, wait for and delete one container.
    fn command(&self, case: Case, id: &str) -> Command {
        self.command_with_bundle(
            case,
            id,
            match case.scenario {
                Scenario::Limits => BundleKind::Limits,
                _ => BundleKind::Plain,
            },
        )
    }

    fn command_with_bundle(&self, case: Case, id: &str, kind: BundleKind) -> Command {
        match case.tool {
            Tool::Berth | Tool::BerthBaseline => {
                let mut command = self.berth_tool_command(case.tool);
                // The namespaces crun's and runc's bundles get: a network
                // namespace with only `lo`. What berth's default bridge
                // adds is the network scenario's row.
                command.args(["run", "--rm", "--net", "none"]);
                if case.scenario == Scenario::Limits {
                    command.args(BERTH_LIMIT_FLAGS);
                }
                command.arg("busybox");
                match kind {
                    BundleKind::LimitsProbe => command.args(["sleep", "1"]),
                    BundleKind::Sleep => command.args(["sleep", "60"]),
                    BundleKind::LongSleep => command.args(["sleep", "3600"]),
                    BundleKind::Plain | BundleKind::Limits => command.arg("true"),
                };
                command
            }
            Tool::Crun | Tool::Runc => {
                let mut command = self.runtime_command(case.tool);
                command
                    .arg("run")
                    .arg("--bundle")
                    .arg(self.work.bundle(case.tool, kind))
                    .arg(id);
                command
            }
        }
    }

    /// Untimed, after a run: is the container still there? If so, remove it.
    fn remove_leftover(&self, case: Case, id: &str) -> bool {
        if case.tool.is_berth() {
            return self.remove_all(case.tool) > 0;
        }
        let exists = quiet(self.runtime_command(case.tool).args(["state", id]))
            .status()
            .is_ok_and(|status| status.success());
        if exists {
            let _ = quiet(self.runtime_command(case.tool).args(["delete", "-f", id])).status();
        }
        exists
    }
}

/// The tools of the latency scenarios that can run here; the others get a
/// probe row saying so.
fn tools_present(settings: &Settings, runner: &Runner) -> Vec<Tool> {
    settings
        .tools
        .iter()
        .copied()
        .filter(|tool| runner.tool_present(*tool))
        .collect()
}

/// One untimed run of every latency case with the host's cgroup layout as
/// it is, before the namespace stage hides the cgroup2 mount.
pub(super) fn host_view_probes(settings: &Settings, runner: &Runner, probes: &mut ProbeTable) {
    let present = tools_present(settings, runner);
    for tool in settings.tools.iter().filter(|tool| !present.contains(tool)) {
        probes.add(
            format!("{} (host layout)", tool.name()),
            "not installed, skipped".to_owned(),
        );
    }
    for scenario in settings.latency_scenarios() {
        for &tool in &present {
            let case = Case { scenario, tool };
            let id = runner.work.container_id(case, "host-view", 0);
            let result = probe(&mut runner.command(case, &id));
            runner.remove_leftover(case, &id);
            probes.add(
                format!("{} `true`, host cgroup layout", case.label()),
                result.describe(),
            );
        }
    }
}

/// Probes in the bench layout (does each case run, do the limits apply),
/// then the regimes. The samples and the prose go to the report.
pub(super) fn measure(
    settings: &Settings,
    runner: &Runner,
    report: &mut Report,
    probes: &mut ProbeTable,
) -> Result<()> {
    let tools_present = tools_present(settings, runner);
    // Which cases can run in the bench view, and do the limits really apply?
    let mut cases = Vec::new();
    let mut skipped = BTreeMap::new();
    for scenario in settings.latency_scenarios() {
        for &tool in &settings.tools {
            let case = Case { scenario, tool };
            if !tools_present.contains(&tool) {
                skipped.insert(case, format!("{}: not installed, skipped", tool.name()));
                continue;
            }
            let id = runner.work.container_id(case, "probe", 0);
            let result = probe(&mut runner.command(case, &id));
            runner.remove_leftover(case, &id);
            let mut verdict = result.describe();
            match (&result, scenario) {
                (ProbeResult::Failed(line), Scenario::Limits)
                    if tool.is_berth() && is_unknown_flag_error(line) =>
                {
                    skipped.insert(
                        case,
                        format!("{}: limits not supported, skipped", tool.name()),
                    );
                    verdict = format!("flags rejected ({line})");
                }
                (ProbeResult::Failed(line), _) => {
                    skipped.insert(
                        case,
                        format!("{}: fails here, skipped ({line})", tool.name()),
                    );
                }
                (ProbeResult::Ok, Scenario::Limits) => {
                    let id = runner.work.container_id(case, "limits-probe", 0);
                    let seen = observe_limits(&mut runner.command_with_bundle(
                        case,
                        &id,
                        BundleKind::LimitsProbe,
                    ));
                    runner.remove_leftover(case, &id);
                    verdict = match seen {
                        Ok(seen) if seen.matches_request() => format!("ok, applied: {seen}"),
                        Ok(seen) => {
                            skipped.insert(
                                case,
                                format!("{}: limits not applied, skipped ({seen})", tool.name()),
                            );
                            format!("limits NOT applied: {seen}")
                        }
                        Err(err) => {
                            skipped.insert(
                                case,
                                format!("{}: limits unverifiable, skipped ({err:#})", tool.name()),
                            );
                            format!("cannot verify limits: {err:#}")
                        }
                    };
                }
                (ProbeResult::Ok, _) => {}
            }
            if !skipped.contains_key(&case) {
                cases.push(case);
            }
            probes.add(format!("{} `true`, bench layout", case.label()), verdict);
        }
    }
    for message in skipped.values() {
        eprintln!("xtask: {message}");
    }
    report.skipped = skipped;
    report.cases.clone_from(&cases);
    report.commands = cases
        .iter()
        .map(|case| (*case, display_command(&runner.command(*case, "ID"))))
        .collect();
    if cases.is_empty() {
        bail!("no case can run here");
    }

    for &regime in &settings.regimes {
        let total = cases.len() * (settings.warmup + settings.runs);
        eprintln!("xtask: {} regime: {total} runs", regime.name());
        let measured = match regime {
            Regime::Cold => measure_cold(settings, runner, &cases),
            Regime::Warm => measure_warm(settings, runner, &cases),
        };
        report.samples.extend(measured);
    }
    Ok(())
}

/// Round-robin over the cases, order rotated every round, each run preceded
/// by an idle system: no stray process, then `gap` of nothing.
fn measure_cold(settings: &Settings, runner: &Runner, cases: &[Case]) -> Vec<Sample> {
    let mut samples = Vec::new();
    for round in 0..settings.warmup + settings.runs {
        for offset in 0..cases.len() {
            let case = cases[(round + offset) % cases.len()];
            let id = runner.work.container_id(case, "cold", round);
            settle();
            std::thread::sleep(settings.gap);
            let (status, elapsed) = time_run(&mut runner.command(case, &id));
            let leftover = runner.remove_leftover(case, &id);
            if round >= settings.warmup {
                samples.push(Sample {
                    regime: Regime::Cold,
                    round: round - settings.warmup,
                    case,
                    id,
                    exit_code: exit_code(status),
                    elapsed,
                    leftover,
                });
            }
        }
    }
    samples
}

/// Back to back: each run starts within microseconds of the previous one's
/// exit. Done in short bursts per case, the cases rotated round-robin like
/// the cold rounds, so that load from elsewhere on the machine (which comes
/// and goes over seconds) falls on every case alike instead of on whichever
/// case ran during a busy stretch. Each burst starts with unmeasured
/// lead-in runs, which pay the cold cost. Leftovers are swept per burst.
fn measure_warm(settings: &Settings, runner: &Runner, cases: &[Case]) -> Vec<Sample> {
    let lead_in = settings.warmup.max(1);
    let bursts = settings.runs.div_ceil(WARM_BURST);
    let mut samples = Vec::new();
    for burst in 0..bursts {
        let measured = WARM_BURST.min(settings.runs - burst * WARM_BURST);
        for offset in 0..cases.len() {
            let case = cases[(burst + offset) % cases.len()];
            settle();
            let mut batch = Vec::new();
            for index in 0..lead_in + measured {
                let id =
                    runner
                        .work
                        .container_id(case, "warm", burst * (lead_in + WARM_BURST) + index);
                let (status, elapsed) = time_run(&mut runner.command(case, &id));
                if index >= lead_in {
                    batch.push(Sample {
                        regime: Regime::Warm,
                        // Run i of burst b pairs with crun's run i of burst b.
                        round: burst * WARM_BURST + index - lead_in,
                        case,
                        id,
                        exit_code: exit_code(status),
                        elapsed,
                        leftover: false,
                    });
                }
            }
            if runner.remove_all(case.tool) > 0 {
                // Which run left it is unknown here; mark the burst.
                for sample in &mut batch {
                    sample.leftover = true;
                }
            }
            samples.extend(batch);
        }
    }
    samples
}

/// Start-to-exit of the tool process. stdio on /dev/null, as a script
/// would run it; spawning costs the same for every tool.
pub(super) fn time_run(command: &mut Command) -> (Option<ExitStatus>, Duration) {
    let started = Instant::now();
    let status = quiet(command).status().ok();
    (status, started.elapsed())
}

pub(super) fn exit_code(status: Option<ExitStatus>) -> i32 {
    match status {
        Some(status) => status
            .code()
            .or_else(|| status.signal().map(|signal| 128 + signal))
            .unwrap_or(-1),
        None => -1, // could not even be started
    }
}

/// The limits the runtime put on a container, read from its cgroup while
/// it runs `sleep 1`.
#[derive(Debug)]
pub(super) struct ObservedLimits {
    pub(super) memory_bytes: String,
    pub(super) cpu_quota: String,
    pub(super) cgroup: String,
}

impl ObservedLimits {
    pub(super) fn matches_request(&self) -> bool {
        let quota_ok = self.cpu_quota == CPU_QUOTA_US.to_string()
            || self.cpu_quota == format!("{CPU_QUOTA_US} {CPU_PERIOD_US}");
        self.memory_bytes == MEMORY_LIMIT_BYTES.to_string() && quota_ok
    }
}

impl std::fmt::Display for ObservedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory {} B, cpu quota {} (cgroup {})",
            self.memory_bytes, self.cpu_quota, self.cgroup
        )
    }
}

/// The limits the probe's container got, as this mount namespace sees the
/// cgroup hierarchies.
fn observe_limits(command: &mut Command) -> Result<ObservedLimits> {
    let mut child = quiet(command)
        .spawn()
        .context("starting the limits probe")?;
    let observed = wait_for_sleeper().and_then(|pid| {
        let membership = fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        limits_in(&Hierarchies::discover(
            &mountinfo,
            &membership,
            Path::new("/"),
        )?)
    });
    let status = child.wait().context("waiting for the limits probe")?;
    let observed = observed?;
    if !status.success() {
        bail!("the limits probe failed ({status})");
    }
    Ok(observed)
}

/// The container's `sleep 1`: our PID namespace holds only the probe run,
/// so the one `sleep` in it is the container's (argv[0] is `sleep` for
/// berth, `/bin/sleep` for the bundles).
fn wait_for_sleeper() -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sleeper = processes().into_iter().find(|(_, cmdline)| {
            let mut words = cmdline.split(' ');
            let program = words.next().unwrap_or_default();
            Path::new(program)
                .file_name()
                .is_some_and(|name| name == "sleep")
                && words.eq(["1"])
        });
        if let Some((pid, _)) = sleeper {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            bail!("the container's `sleep 1` never showed up");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
