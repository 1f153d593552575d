//! The `exec` scenario (issue 16): `berth exec C true` into a running
//! container beside `crun exec ID true` and `runc exec ID true` into an
//! equivalent one (the same busybox rootfs running `sleep 3600`, the same
//! namespaces: a network namespace with only `lo`).
//!
//! One container per tool is started detached and untimed; then every
//! round runs one exec per tool, the order rotated each round, after the
//! namespace holds nothing but those containers (berth's monitor and the
//! `sleep`s). Each exec is timed wall clock and CPU (user + sys of the
//! tool and everything it waited for, from `getrusage(RUSAGE_CHILDREN)`
//! around the wait). The table gives the median of the per-round paired
//! ratios against crun; exec.tsv keeps every sample.
//!
//! berth must keep its CVE-2019-5736 protection while doing it: an
//! untimed probe looks at what a live `berth exec` runs from
//! (`/proc/PID/exe`): a detached read-only overlay of berth's directory
//! (as runc 1.2) or a sealed memfd copy, never the host's binary.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::resource::UsageWho;

use super::latency::exit_code;
use super::report::{median, median_paired_ratio};
use super::system::{cpu_time, display_command, processes, quiet, reap_zombies, settle_sparing};
use super::throughput::Capture;
use super::{BundleKind, Runner, Section, Settings, Tool};

/// The name of berth's target container (its --root is the bench's own).
const BERTH_TARGET: &str = "bench-exec-target";

/// One timed exec.
#[derive(Debug, Clone)]
struct ExecSample {
    round: usize,
    tool: Tool,
    exit_code: i32,
    wall: Duration,
    /// user + sys of the tool and its waited-for descendants.
    cpu: Duration,
}

/// The running container of one tool and how to exec into it.
struct Target {
    tool: Tool,
    /// berth: the container name; crun/runc: our id.
    id: String,
}

impl Target {
    fn exec(&self, runner: &Runner, args: &[&str]) -> Command {
        let mut command = if self.tool.is_berth() {
            runner.berth_tool_command(self.tool)
        } else {
            runner.runtime_command(self.tool)
        };
        command.arg("exec").arg(&self.id).args(args);
        command
    }
}

/// Run `command` (stdio on /dev/null) and wait for it with `waitpid(-1)`,
/// reaping orphans as init would; wall time and the CPU of what was
/// reaped meanwhile (the command and its waited-for descendants).
pub(super) fn timed(command: &mut Command) -> Result<(ExitStatus, Duration, Duration)> {
    use nix::sys::wait::{waitpid, WaitStatus};
    let description = display_command(command);
    let before = cpu_time(UsageWho::RUSAGE_CHILDREN)?;
    let started = Instant::now();
    let child = quiet(command)
        .spawn()
        .with_context(|| format!("starting `{description}`"))?;
    let pid = child.id() as i32;
    let status = loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(done, code)) if done.as_raw() == pid => {
                break ExitStatus::from_raw((code & 0xff) << 8);
            }
            Ok(WaitStatus::Signaled(done, signal, _)) if done.as_raw() == pid => {
                break ExitStatus::from_raw(signal as i32);
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(err) => bail!("waiting for `{description}`: {err}"),
        }
    };
    let wall = started.elapsed();
    let after = cpu_time(UsageWho::RUSAGE_CHILDREN)?;
    Ok((status, wall, after.saturating_sub(before)))
}

/// Start the tool's detached `sleep 3600` container and check (untimed)
/// that an exec into it works; an error says why the tool cannot here.
fn start_target(runner: &Runner, capture: &Capture, tool: Tool) -> Result<Target> {
    let target = if tool.is_berth() {
        let mut command = runner.berth_tool_command(tool);
        command.args([
            "run",
            "-d",
            "--pull",
            "never",
            "--net",
            "none",
            "--name",
            BERTH_TARGET,
            "busybox",
            "sleep",
            "3600",
        ]);
        let outcome = capture.run(&mut command)?;
        if !outcome.status.success() {
            bail!("{}", outcome.failure());
        }
        Target {
            tool,
            id: BERTH_TARGET.to_owned(),
        }
    } else {
        let id = format!("{}exec-{}", runner.work.id_prefix(), tool.name());
        let mut command = runner.runtime_command(tool);
        command
            .args(["run", "-d", "--bundle"])
            .arg(runner.work.bundle(tool, BundleKind::LongSleep))
            .arg(&id);
        let outcome = capture.run(&mut command)?;
        if !outcome.status.success() {
            bail!("{}", outcome.failure());
        }
        Target { tool, id }
    };
    // Untimed: does exec work at all?
    let (status, _, _) = timed(&mut target.exec(runner, &["true"]))?;
    if !status.success() {
        bail!(
            "`{}` failed ({status})",
            display_command(&target.exec(runner, &["true"]))
        );
    }
    Ok(target)
}

/// What a live `berth exec` runs from: readlink and filesystem of
/// /proc/PID/exe while it waits for `sleep 1` in the container.
fn berth_exec_protection(runner: &Runner, target: &Target) -> String {
    let Ok(mut child) = quiet(&mut target.exec(runner, &["sleep", "1"])).spawn() else {
        return "could not start `berth exec ... sleep 1`".to_owned();
    };
    std::thread::sleep(Duration::from_millis(400));
    let exe = format!("/proc/{}/exe", child.id());
    let link = fs::read_link(&exe).map_or_else(
        |err| format!("unreadable ({err})"),
        |path| path.display().to_string(),
    );
    let kind = match nix::sys::statfs::statfs(exe.as_str()) {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC => {
            let read_only = nix::sys::statvfs::statvfs(exe.as_str())
                .is_ok_and(|fs| fs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
            if read_only {
                "a read-only overlay (not attached anywhere)"
            } else {
                "a WRITABLE overlay"
            }
        }
        Ok(_) if link.starts_with("/memfd:berth-sealed") => "a sealed memfd copy",
        Ok(_) if link == runner.berth.display().to_string() => "THE HOST'S BINARY (no protection)",
        Ok(_) => "something else",
        Err(_) => "unknown (exe not stat-able)",
    };
    let _ = child.wait();
    reap_zombies();
    format!("{kind}: /proc/PID/exe -> `{link}`")
}

pub(super) fn measure(settings: &Settings, runner: &Runner) -> Result<Section> {
    let capture = Capture::new(&runner.work.runtime_state())?;
    let mut targets = Vec::new();
    let mut notes = Vec::new();
    for &tool in &settings.tools {
        if tool == Tool::BerthBaseline {
            continue; // one berth row: the binary under test
        }
        if !runner.tool_present(tool) {
            notes.push(format!("{}: not installed, skipped", tool.name()));
            continue;
        }
        match start_target(runner, &capture, tool) {
            Ok(target) => targets.push(target),
            Err(err) => notes.push(format!("{}: fails here, skipped ({err:#})", tool.name())),
        }
    }
    capture.remove();
    if !targets.iter().any(|target| target.tool == Tool::Berth) {
        bail!("berth exec cannot run here: {}", notes.join("; "));
    }
    let protection = targets
        .iter()
        .find(|target| target.tool == Tool::Berth)
        .map(|target| berth_exec_protection(runner, target))
        .unwrap_or_default();
    // What is up now (monitors, the sleeps) stays up; a round waits for
    // anything else to be gone.
    reap_zombies();
    let spared: Vec<u32> = processes().into_iter().map(|(pid, _)| pid).collect();

    eprintln!(
        "xtask: exec: {} tools x ({} warm-up + {} measured) rounds",
        targets.len(),
        settings.warmup,
        settings.runs
    );
    let mut samples = Vec::new();
    for round in 0..settings.warmup + settings.runs {
        for offset in 0..targets.len() {
            let target = &targets[(round + offset) % targets.len()];
            settle_sparing(&spared);
            let (status, wall, cpu) = timed(&mut target.exec(runner, &["true"]))?;
            if round >= settings.warmup {
                samples.push(ExecSample {
                    round: round - settings.warmup,
                    tool: target.tool,
                    exit_code: exit_code(Some(status)),
                    wall,
                    cpu,
                });
            }
        }
    }
    let commands: Vec<String> = targets
        .iter()
        .map(|target| display_command(&target.exec(runner, &["true"])))
        .collect();

    // Untimed: the containers go (the stage also removes whatever is left).
    for target in &targets {
        let mut command = if target.tool.is_berth() {
            let mut command = runner.berth_tool_command(target.tool);
            command.args(["rm", "-f", &target.id]);
            command
        } else {
            let mut command = runner.runtime_command(target.tool);
            command.args(["delete", "-f", &target.id]);
            command
        };
        let _ = quiet(&mut command).status();
    }
    reap_zombies();

    let failed = samples.iter().filter(|s| s.exit_code != 0).count();
    let tools: Vec<Tool> = targets.iter().map(|target| target.tool).collect();
    let mut markdown = render(settings, &tools, &samples, &protection, &notes);
    markdown.push_str("Commands:\n\n");
    for command in commands {
        let _ = writeln!(markdown, "    {command}");
    }
    markdown.push('\n');
    Ok(Section {
        markdown,
        raw: Some(("exec.tsv", raw_tsv(&samples))),
        failure: (failed > 0).then(|| format!("{failed} exec(s) did not exit 0")),
    })
}

/// Median over rounds of `tool / against`, on `value` of samples from the
/// same round that both exited 0.
fn paired(
    samples: &[ExecSample],
    tool: Tool,
    against: Tool,
    value: fn(&ExecSample) -> f64,
) -> Option<f64> {
    let of = |which: Tool| {
        samples
            .iter()
            .filter(move |s| s.tool == which && s.exit_code == 0)
            .map(|s| (s.round, value(s)))
    };
    median_paired_ratio(of(tool), of(against))
}

fn wall_ms(sample: &ExecSample) -> f64 {
    sample.wall.as_secs_f64() * 1000.0
}

fn cpu_ms(sample: &ExecSample) -> f64 {
    sample.cpu.as_secs_f64() * 1000.0
}

fn render(
    settings: &Settings,
    tools: &[Tool],
    samples: &[ExecSample],
    protection: &str,
    notes: &[String],
) -> String {
    let mut out = String::from("## exec: `exec CONTAINER true` into a running container\n\n");
    let _ = writeln!(
        out,
        "{} measured rounds after {} warm-up, one exec per tool and round, order rotated; before each exec nothing runs but the containers. Wall and CPU (user+sys of the tool and what it waited for) in ms; ratios are the median of per-round paired ratios. Raw samples: exec.tsv.\n",
        settings.runs, settings.warmup
    );
    out.push_str("| tool | ok/runs | wall min | wall median | wall p95 | CPU median | wall vs crun | wall vs runc | CPU vs crun |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let ratio = |tool, against, value| {
        if tool == against || !tools.contains(&against) {
            return "-".to_owned();
        }
        paired(samples, tool, against, value).map_or("-".to_owned(), |r| format!("{r:.2}x"))
    };
    for &tool in tools {
        let of_tool: Vec<&ExecSample> = samples.iter().filter(|s| s.tool == tool).collect();
        let ok: Vec<&&ExecSample> = of_tool.iter().filter(|s| s.exit_code == 0).collect();
        let walls: Vec<f64> = ok.iter().map(|s| wall_ms(s)).collect();
        let cpus: Vec<f64> = ok.iter().map(|s| cpu_ms(s)).collect();
        let Some(stats) = super::report::Stats::of(&walls) else {
            let _ = writeln!(
                out,
                "| {} | 0/{} | | | | | | | |",
                tool.name(),
                of_tool.len()
            );
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {}/{} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            tool.name(),
            ok.len(),
            of_tool.len(),
            stats.min,
            stats.median,
            stats.p95,
            median(&cpus).unwrap_or(f64::NAN),
            ratio(tool, Tool::Crun, wall_ms),
            ratio(tool, Tool::Runc, wall_ms),
            ratio(tool, Tool::Crun, cpu_ms),
        );
    }
    let _ = writeln!(
        out,
        "\nTarget: berth at most 1.00x crun exec. berth's CVE-2019-5736 protection (a live `berth exec`): {protection}\n"
    );
    for note in notes {
        let _ = writeln!(out, "- {note}");
    }
    if !notes.is_empty() {
        out.push('\n');
    }
    out
}

fn raw_tsv(samples: &[ExecSample]) -> String {
    let mut text = String::from("round\ttool\texit_code\twall_us\tcpu_us\n");
    for s in samples {
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}",
            s.round,
            s.tool.name(),
            s.exit_code,
            s.wall.as_micros(),
            s.cpu.as_micros()
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_ratio_pairs_rounds_and_skips_failures() {
        let sample = |round, tool, millis: u64, exit_code| ExecSample {
            round,
            tool,
            exit_code,
            wall: Duration::from_millis(millis),
            cpu: Duration::from_millis(millis / 2),
        };
        let samples = [
            sample(0, Tool::Crun, 10, 0),
            sample(0, Tool::Berth, 5, 0),
            sample(1, Tool::Crun, 20, 0),
            sample(1, Tool::Berth, 30, 0),
            sample(2, Tool::Crun, 10, 1),
            sample(2, Tool::Berth, 100, 0),
            sample(3, Tool::Berth, 100, 0),
        ];
        // Rounds 0 and 1 only: ratios 0.5 and 1.5.
        assert_eq!(
            paired(&samples, Tool::Berth, Tool::Crun, wall_ms),
            Some(1.0)
        );
        assert_eq!(paired(&samples, Tool::Berth, Tool::Runc, wall_ms), None);
        let tsv = raw_tsv(&samples);
        assert_eq!(tsv.lines().count(), samples.len() + 1);
        assert!(tsv.contains("1\tberth\t0\t30000\t15000"));
    }
}
