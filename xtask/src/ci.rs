//! `cargo xtask ci`: the README's test command and what `.ci/run` calls.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cargo::cargo_command;
use crate::e2e::{self, Build, Place};
use crate::vm::CgroupVersion;

/// Per VM boot; the whole CI must stay under 30 minutes on 2 cores.
const E2E_TIMEOUT: Duration = Duration::from_secs(900);

/// What the VMs run: an emulated guest is 10-100x slower per exec, so they
/// get the tests whose outcome depends on the kernel's cgroup layout
/// (limits, freezer, OOM, device cgroup: v1 rules vs v2 eBPF) plus a smoke
/// test of each subsystem; the host runs everything.
const VM_SUITE: &[&str] = &[
    // checkpoint.rs, all of it: criu works on the VMs' kernel (not on
    // every host's).
    "checkpoint",
    // limits.rs, all of it: every controller on v1 and v2.
    "oom_killed",
    "succeeds_under_the_limit",
    "pids_limit",
    "cpuset_cpus",
    "cpu_shares",
    "cpus_half",
    "pause_freezes",
    "no_cgroup_remains",
    "bad_limits",
    "negative_limit",
    // One each of the rest.
    "the_command_is_pid_1",
    "exit_codes_follow_docker",
    "run_d_returns_at_once",
    "ps_tells_the_truth_after_the_monitor_is_sigkilled",
    "exec_joins_the_containers_namespaces_and_cgroup",
    "only_the_default_devices_exist",
    "capabilities_are_dockers_default_set",
    "containers_on_one_network_reach_each_other",
    "published_port_is_reachable",
    "interactive_shell_on_a_terminal",
    // The reaping init (a fork in the runtime's init) and mount options
    // (tmpfs size/mode, propagation) as each kernel does them.
    "init_reaps_zombies_and_forwards_signals",
    "mount_and_tmpfs_options_reach_the_container",
    // The OCI runtime (berth-runtime) on each layout: lifecycle, a limit
    // that really kills, every process/linux setting, the console socket
    // ("pause_freezes" above also picks its pause test and podman's), and
    // one real engine (containerd) driving it.
    "runtime_create_waits_for_start",
    "runtime_memory_limit_really_kills",
    "runtime_applies_the_process_and_linux_settings",
    "runtime_sends_the_terminal_over_the_console_socket",
    "imported_image_runs_with_output_and_exit_code",
    // User namespaces: ID-mapped image layers under overlay as each
    // kernel does them (6.1 in the VMs).
    "userns_uidmap_makes_root_an_unprivileged_host_user",
    "userns_commit_export_and_cp",
];

/// One finished step for the summary table.
#[derive(Debug)]
struct StepTiming {
    name: String,
    duration: Duration,
    outcome: &'static str,
    /// Extra facts for the summary, e.g. a VM's boot-to-first-test time.
    note: String,
}

#[derive(Debug, Default)]
struct Steps {
    done: Vec<StepTiming>,
}

impl Steps {
    /// Runs one step between `==>` lines; its error ends the CI run.
    /// The step returns a note for the summary (or an empty one).
    fn run(&mut self, name: &str, step: impl FnOnce() -> Result<String>) -> Result<()> {
        println!("==> {name}");
        let started = Instant::now();
        let result = step();
        let duration = started.elapsed();
        let outcome = if result.is_ok() { "ok" } else { "FAILED" };
        println!("==> {name} ({:.1} s) {outcome}", duration.as_secs_f64());
        let (result, note) = match result {
            Ok(note) => (Ok(()), note),
            Err(err) => (Err(err), String::new()),
        };
        self.done.push(StepTiming {
            name: name.to_owned(),
            duration,
            outcome,
            note,
        });
        result.with_context(|| format!("CI step `{name}` failed"))
    }

    fn skip(&mut self, name: &str, why: &str) {
        println!("==> {name}: skipped ({why})");
        self.done.push(StepTiming {
            name: name.to_owned(),
            duration: Duration::ZERO,
            outcome: "skipped",
            note: why.to_owned(),
        });
    }

    fn print_summary(&self, total: Duration) {
        let width = self
            .done
            .iter()
            .map(|step| step.name.len())
            .max()
            .unwrap_or(0);
        println!("\n==> summary");
        for step in &self.done {
            println!(
                "    {:<width$}  {:>7.1} s  {:<7} {}",
                step.name,
                step.duration.as_secs_f64(),
                step.outcome,
                step.note
            );
        }
        println!("    {:<width$}  {:>7.1} s", "total", total.as_secs_f64());
    }
}

fn cargo_step(args: &[&str]) -> Result<String> {
    let status = cargo_command()
        .args(args)
        .status()
        .with_context(|| format!("starting cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(String::new())
}

pub fn run() -> Result<()> {
    let started = Instant::now();
    let mut steps = Steps::default();
    let result = run_steps(&mut steps);
    steps.print_summary(started.elapsed());
    result
}

fn run_steps(steps: &mut Steps) -> Result<()> {
    steps.run("cargo fmt --all --check", || {
        cargo_step(&["fmt", "--all", "--check"])
    })?;
    steps.run(
        "cargo clippy --workspace --all-targets -- -D warnings",
        || {
            cargo_step(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
        },
    )?;
    steps.run("cargo test", || cargo_step(&["test"]))?;

    let places = [
        Place::Host,
        Place::Vm(CgroupVersion::V2),
        Place::Vm(CgroupVersion::V1),
    ];
    if !nix::unistd::geteuid().is_root() {
        let why = "the e2e suite needs root: run `sudo cargo xtask ci`";
        for place in places {
            steps.skip(&format!("e2e on the {place}"), why);
        }
        // A CI that silently skips its privileged tests would pass for the
        // wrong reason.
        if std::env::var_os("CI").is_some() {
            bail!("CI is set but not running as root, so the e2e suite could not run");
        }
        return Ok(());
    }

    let mut build = None;
    steps.run("e2e: build berth and the tests", || {
        build = Some(Build::run()?);
        Ok(String::new())
    })?;
    let build = build.context("the e2e build step produced nothing")?;
    for place in places {
        steps.run(&format!("e2e on the {place}"), || {
            let filter: Vec<String> = match place {
                Place::Host => Vec::new(),
                Place::Vm(_) => VM_SUITE.iter().map(|s| s.to_string()).collect(),
            };
            let outcome = e2e::run_at(&build, place, &filter, E2E_TIMEOUT)?;
            if !outcome.succeeded {
                bail!("the e2e suite failed on the {place}");
            }
            Ok(outcome
                .boot_to_first_test
                .map(|boot| format!("boot to first test {:.1} s", boot.as_secs_f64()))
                .unwrap_or_default())
        })?;
    }
    Ok(())
}
