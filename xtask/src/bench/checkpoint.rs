//! The `checkpoint` scenario: checkpoint and restore of a container with
//! 256 MiB of touched memory, `berth checkpoint` + `berth restore` beside
//! `podman container checkpoint` + `podman container restore` with runc
//! (and with berth-runtime), the same busybox image and workload, rounds
//! interleaved with the order rotated.
//!
//! The workload: `dd if=/dev/zero bs=256M count=1 | sleep` — dd reads
//! 256 MiB of zeros into one buffer (every page touched) and then blocks
//! for ever writing it to a pipe nobody reads. A round starts timing once
//! the dd's resident set has reached the full size.
//!
//! criu 3.17 does not work on every kernel (6.18 fails `criu check`); where
//! it does not, `cargo xtask bench` runs the whole invocation in the
//! project's cgroup v2 VM (see [`super::host`]).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::engines::{
    remove_cgroup_parents, write_busybox_archive, MaskedDirs, Podman, BERTH_RUNTIME, IMAGE,
};
use super::report::median;
use super::system::{find_in_path, run_checked, settle};
use super::{Runner, Section, Settings};

/// The memory the workload touches.
const TOUCHED: u64 = 256 << 20;
const WORKLOAD: &str = "dd if=/dev/zero bs=256M count=1 | sleep 1000000";

/// Who checkpoints and restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Berth,
    PodmanRunc,
    PodmanBerthRuntime,
}

impl Engine {
    const ALL: [Engine; 3] = [
        Engine::Berth,
        Engine::PodmanRunc,
        Engine::PodmanBerthRuntime,
    ];

    fn label(self) -> &'static str {
        match self {
            Engine::Berth => "berth checkpoint / restore",
            Engine::PodmanRunc => "podman container checkpoint / restore --runtime runc",
            Engine::PodmanBerthRuntime => "podman ... --runtime berth-runtime",
        }
    }
}

#[derive(Debug, Clone)]
struct Sample {
    round: usize,
    engine: Engine,
    checkpoint: Duration,
    restore: Duration,
}

/// Whether criu can work here (`criu check`).
pub(super) fn criu_works() -> bool {
    Command::new("criu")
        .arg("check")
        .output()
        .is_ok_and(|output| output.status.success())
}

pub(super) fn measure(settings: &Settings, runner: &Runner) -> Result<Section> {
    for tool in ["criu", "podman", "conmon", "runc"] {
        if find_in_path(tool).is_none() {
            bail!("the checkpoint scenario needs {tool} (apt-get install criu podman runc)");
        }
    }
    // Not `criu check` here: in the bench's PID namespace it fails checks
    // a dump of a container below it does not need; the host stage chose
    // a machine where criu works.
    // criu binds sockets on loopback (its own checks), which the bench's
    // fresh network namespace has down.
    run_checked(Command::new("ip").args(["link", "set", "lo", "up"]))?;
    // Short: podman refuses a runroot longer than 50 characters.
    let base = runner.work.root.join("ck");
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let masks = MaskedDirs::mount()?;
    let result = measure_in(settings, runner, &base);
    let unmounted = masks.unmount();
    let _ = fs::remove_dir_all(&base);
    let section = result?;
    unmounted?;
    Ok(section)
}

fn measure_in(settings: &Settings, runner: &Runner, base: &Path) -> Result<Section> {
    let bin = base.join("bin");
    fs::create_dir_all(&bin)?;
    let berth_runtime = bin.join(BERTH_RUNTIME);
    std::os::unix::fs::symlink(&runner.berth, &berth_runtime)
        .with_context(|| format!("linking {}", berth_runtime.display()))?;
    let runc = find_in_path("runc").context("runc")?;
    let archive = base.join("busybox.oci.tar");
    write_busybox_archive(runner, &base.join("layout"), &archive)?;
    let cgroup_parent = format!("/{}", runner.work.id_prefix());
    let podman = Podman::new(&base.join("p"), &archive, &cgroup_parent, &runc)?;
    let result = measure_rounds(settings, runner, &podman, &runc, &berth_runtime);
    let mut failures = podman.remove_all();
    failures.extend(remove_cgroup_parents(&[&podman.cgroup_parent]));
    let samples = result?;
    let mut section = Section {
        markdown: render(settings.rounds, &samples),
        raw: Some(("checkpoint.tsv", raw(&samples))),
        failure: None,
    };
    if !failures.is_empty() {
        section.failure = Some(failures.join("; "));
    }
    Ok(section)
}

fn measure_rounds(
    settings: &Settings,
    runner: &Runner,
    podman: &Podman,
    runc: &Path,
    berth_runtime: &Path,
) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for round in 0..settings.rounds {
        for offset in 0..Engine::ALL.len() {
            let engine = Engine::ALL[(round + offset) % Engine::ALL.len()];
            let name = format!("{}ck{round}", runner.work.id_prefix());
            let sample = match engine {
                Engine::Berth => one_berth_round(runner, &name)?,
                Engine::PodmanRunc => one_podman_round(podman, runc, &name)?,
                Engine::PodmanBerthRuntime => one_podman_round(podman, berth_runtime, &name)?,
            };
            eprintln!(
                "xtask: checkpoint round {round}: {}: checkpoint {:.0} ms, restore {:.0} ms",
                engine.label(),
                sample.0.as_secs_f64() * 1000.0,
                sample.1.as_secs_f64() * 1000.0
            );
            samples.push(Sample {
                round,
                engine,
                checkpoint: sample.0,
                restore: sample.1,
            });
            settle();
        }
    }
    Ok(samples)
}

/// The time `command` took; an error with its output if it failed.
fn timed(command: &mut Command) -> Result<Duration> {
    let started = Instant::now();
    run_checked(command)?;
    Ok(started.elapsed())
}

fn one_berth_round(runner: &Runner, name: &str) -> Result<(Duration, Duration)> {
    run_checked(runner.berth_command().args([
        "run", "-d", "--net", "none", "--name", name, "busybox", "sh", "-c", WORKLOAD,
    ]))?;
    let result = (|| {
        wait_for_touched_memory()?;
        let checkpoint = timed(runner.berth_command().args(["checkpoint", name]))?;
        let restore = timed(runner.berth_command().args(["restore", name]))?;
        wait_for_touched_memory()?;
        Ok((checkpoint, restore))
    })();
    run_checked(runner.berth_command().args(["rm", "-f", name]))?;
    result
}

fn one_podman_round(podman: &Podman, runtime: &Path, name: &str) -> Result<(Duration, Duration)> {
    run_checked(
        podman
            .command(runtime)
            .args([
                "run",
                "-d",
                "--network",
                "none",
                "--name",
                name,
                "--cgroup-parent",
            ])
            .arg(&podman.cgroup_parent)
            .args([IMAGE, "sh", "-c", WORKLOAD]),
    )?;
    let result = (|| {
        wait_for_touched_memory()?;
        let checkpoint = timed(
            podman
                .command(runtime)
                .args(["container", "checkpoint", name]),
        )?;
        let restore = timed(podman.command(runtime).args(["container", "restore", name]))?;
        wait_for_touched_memory()?;
        Ok((checkpoint, restore))
    })();
    run_checked(podman.command(runtime).args(["rm", "-f", "-t", "0", name]))?;
    result
}

/// Wait until a `dd` process (the workload's, the only one in the bench's
/// PID namespace) holds the whole buffer in memory.
fn wait_for_touched_memory() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if dd_resident_bytes().is_some_and(|rss| rss >= TOUCHED) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the workload's dd did not reach {} MiB resident",
                TOUCHED >> 20
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn dd_resident_bytes() -> Option<u64> {
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let dir: PathBuf = entry.path();
        let is_dd = fs::read_to_string(dir.join("comm")).is_ok_and(|comm| comm.trim() == "dd");
        let Some(status) = is_dd
            .then(|| fs::read_to_string(dir.join("status")).ok())
            .flatten()
        else {
            continue;
        };
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        return Some(kib * 1024);
    }
    None
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn render(rounds: usize, samples: &[Sample]) -> String {
    let mut out =
        String::from("## checkpoint: 256 MiB of touched memory, checkpoint + restore\n\n");
    let _ = writeln!(
        out,
        "{rounds} rounds, engines interleaved (order rotated); the workload `{WORKLOAD}` in busybox, no network; each engine's own state root.\n"
    );
    out.push_str("| engine | checkpoint (median ms) | restore (median ms) | both (median ms) | both / podman+runc (median of paired ratios) |\n|---|---|---|---|---|\n");
    let of = |engine: Engine| -> Vec<&Sample> {
        samples.iter().filter(|s| s.engine == engine).collect()
    };
    let total = |s: &Sample| millis(s.checkpoint + s.restore);
    for engine in Engine::ALL {
        let mine = of(engine);
        if mine.is_empty() {
            continue;
        }
        let median_of = |values: Vec<f64>| median(&values).unwrap_or(f64::NAN);
        let checkpoint = median_of(mine.iter().map(|s| millis(s.checkpoint)).collect());
        let restore = median_of(mine.iter().map(|s| millis(s.restore)).collect());
        let both = median_of(mine.iter().map(|s| total(s)).collect());
        let ratios: Vec<f64> = mine
            .iter()
            .filter_map(|s| {
                samples
                    .iter()
                    .find(|o| o.round == s.round && o.engine == Engine::PodmanRunc)
                    .map(|o| total(s) / total(o))
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} | {checkpoint:.0} | {restore:.0} | {both:.0} | {:.2}x |",
            engine.label(),
            median_of(ratios)
        );
    }
    out.push('\n');
    out
}

fn raw(samples: &[Sample]) -> String {
    let mut out = String::from("round\tengine\tcheckpoint_ms\trestore_ms\n");
    for s in samples {
        let _ = writeln!(
            out,
            "{}\t{:?}\t{:.1}\t{:.1}",
            s.round,
            s.engine,
            millis(s.checkpoint),
            millis(s.restore)
        );
    }
    out
}
