//! What the scenarios share about the system: processes (spawning, probing,
//! waiting for quiet, reaping), mounts, and the cgroup hierarchies (limit
//! files, removing our leftovers).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_cgroup::{Controller, Hierarchies, Version};

use super::latency::ObservedLimits;
use crate::mounts::mount_table;

// ---------------------------------------------------------------------------
// Waiting for quiet
// ---------------------------------------------------------------------------

/// Wait (at most 10 s) until this PID namespace holds nothing but us, reaping
/// zombies reparented to us: a run must not pay for its predecessor's exit.
pub(super) fn settle() {
    settle_sparing(&[]);
}

/// [`settle`], with the processes `spared` (a daemon the scenario keeps
/// running) allowed to stay.
pub(super) fn settle_sparing(spared: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        reap_zombies();
        let busy = processes()
            .iter()
            .filter(|(pid, _)| *pid != 1 && !spared.contains(pid))
            .count();
        if busy == 0 {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("xtask: settle: {busy} stray processes still running after 10 s");
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub(super) fn reap_zombies() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    // Only called between runs, when no Command of ours is outstanding.
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

// ---------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub(super) enum ProbeResult {
    Ok,
    Failed(String),
}

impl ProbeResult {
    pub(super) fn describe(&self) -> String {
        match self {
            ProbeResult::Ok => "ok".to_owned(),
            ProbeResult::Failed(line) => format!("fails: {line}"),
        }
    }
}

/// One untimed run, keeping the first line of the error.
pub(super) fn probe(command: &mut Command) -> ProbeResult {
    match command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(output) if output.status.success() => ProbeResult::Ok,
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let line = stderr
                .lines()
                .find(|line| !line.trim().is_empty())
                .unwrap_or("");
            ProbeResult::Failed(format!("{} ({})", line.trim(), output.status))
        }
        Err(err) => ProbeResult::Failed(format!("cannot start: {err}")),
    }
}

/// clap's wording for an unknown flag: berth does not have -m/--cpus yet.
pub(super) fn is_unknown_flag_error(line: &str) -> bool {
    line.contains("unexpected argument")
        || line.contains("unrecognized")
        || line.contains("unknown option")
}

// ---------------------------------------------------------------------------
// Cgroups: layout, limit files, our leftovers.
// ---------------------------------------------------------------------------

pub(super) fn mounts_below(dir: &Path) -> Result<Vec<String>> {
    Ok(mount_table()?
        .into_iter()
        .filter(|mount| mount.mount_point.starts_with(dir))
        .map(|mount| mount.mount_point.display().to_string())
        .collect())
}

/// The memory limit and cpu quota of the cgroups of the process whose
/// /proc/PID/cgroup `cgroups` was discovered with, each read on the
/// hierarchy that has the controller.
pub(super) fn limits_in(cgroups: &Hierarchies) -> Result<ObservedLimits> {
    let own_dir = |controller: Controller| -> Result<(Version, PathBuf, PathBuf)> {
        let hierarchy = cgroups
            .hierarchy_of(controller)
            .with_context(|| format!("no {controller} controller mounted"))?;
        let own = hierarchy
            .own_cgroup()
            .with_context(|| format!("no {controller} line in /proc/PID/cgroup"))?;
        Ok((hierarchy.version(), own.to_owned(), hierarchy.dir_of(own)?))
    };
    let read = |path: PathBuf| -> Result<String> {
        Ok(fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_owned())
    };
    let (memory_version, memory_cgroup, memory_dir) = own_dir(Controller::Memory)?;
    let (cpu_version, _, cpu_dir) = own_dir(Controller::Cpu)?;
    Ok(ObservedLimits {
        memory_bytes: read(memory_dir.join(match memory_version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        }))?,
        cpu_quota: read(cpu_dir.join(match cpu_version {
            Version::V1 => "cpu.cfs_quota_us",
            Version::V2 => "cpu.max",
        }))?,
        cgroup: match memory_version {
            Version::V1 => format!("memory:{}", memory_cgroup.display()),
            Version::V2 => memory_cgroup.display().to_string(),
        },
    })
}

/// Unmount the cgroup2 hierarchy in our mount namespace and put an empty
/// tmpfs in its place. Only the unmount is needed for crun; the tmpfs stops
/// crun's v1 code from making `unified/ID` directories (with a cgroup.procs
/// file) on the host's /sys/fs/cgroup tmpfs below the hidden mount point,
/// where nothing on the host could see or remove them. crun leaves them
/// behind (a plain directory holding a file cannot be rmdir'ed), one page
/// each: the throughput scenario alone makes hundreds, hence 64 MiB (used
/// only as filled, gone with the namespace).
pub(super) fn hide_unified_hierarchy(mount_point: &Path) -> Result<()> {
    nix::mount::umount2(mount_point, nix::mount::MntFlags::empty()).with_context(|| {
        format!(
            "unmounting {} in the private mount namespace",
            mount_point.display()
        )
    })?;
    mount_tmpfs(mount_point, "berth-bench-no-cgroup2", "mode=0755,size=64m")
}

pub(super) fn mount_tmpfs(target: &Path, source: &str, options: &str) -> Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(options),
    )
    .with_context(|| format!("mounting a tmpfs on {}", target.display()))
}

/// Every cgroup directory of every mounted hierarchy (and nothing on the
/// tmpfs around them), bounded in depth: containers sit a few levels down
/// at most.
pub(super) fn cgroup_dirs() -> Vec<PathBuf> {
    const MAX_DEPTH: usize = 6;
    let Ok(cgroups) = Hierarchies::from_host() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut pending: Vec<(PathBuf, usize)> = cgroups
        .hierarchies()
        .iter()
        .map(|hierarchy| (hierarchy.mount_point().to_owned(), 0))
        .collect();
    while let Some((dir, depth)) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) && depth < MAX_DEPTH {
                pending.push((entry.path(), depth + 1));
                found.push(entry.path());
            }
        }
    }
    found
}

/// rmdir every cgroup whose name starts with `prefix`, deepest first;
/// returns those that would not go.
pub(super) fn remove_cgroups_named(prefix: &str) -> Vec<String> {
    let mut dirs: Vec<PathBuf> = cgroup_dirs()
        .into_iter()
        .filter(|dir| {
            dir.ancestors().any(|ancestor| {
                ancestor
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with(prefix))
            })
        })
        .collect();
    dirs.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
    dirs.into_iter()
        .filter(|dir| fs::remove_dir(dir).is_err() && dir.exists())
        .map(|dir| dir.display().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// Small process helpers
// ---------------------------------------------------------------------------

pub(super) fn quiet(command: &mut Command) -> &mut Command {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

pub(super) fn run_checked(command: &mut Command) -> Result<()> {
    let description = display_command(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting `{description}`"))?;
    if !output.status.success() {
        bail!(
            "`{description}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

pub(super) fn stdout_lines(command: &mut Command) -> Vec<String> {
    command
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn berth_container_ids(berth: &Path, root: &Path) -> Vec<String> {
    stdout_lines(
        Command::new(berth)
            .arg("--root")
            .arg(root)
            .args(["ps", "-a", "-q"]),
    )
}

pub(super) fn display_command(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// (pid, command line) of every live process visible in /proc; zombies and
/// kernel threads (empty command line) are not counted.
pub(super) fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            if cmdline.is_empty() {
                return None;
            }
            let words: Vec<String> = cmdline
                .split(|byte| *byte == 0)
                .filter(|word| !word.is_empty())
                .map(|word| String::from_utf8_lossy(word).into_owned())
                .collect();
            Some((pid, words.join(" ")))
        })
        .collect()
}

pub(super) fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// User + system CPU time from `getrusage(who)`: this process's own
/// (`RUSAGE_SELF`) or that of the children it reaped (`RUSAGE_CHILDREN`).
pub(super) fn cpu_time(who: nix::sys::resource::UsageWho) -> Result<Duration> {
    let usage = nix::sys::resource::getrusage(who).context("getrusage")?;
    let duration = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    Ok(duration(usage.user_time()) + duration(usage.system_time()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_where_each_controller_is() {
        let root = std::env::temp_dir().join(format!("berth-bench-test-{}", std::process::id()));
        let memory = root.join("sys/fs/cgroup/memory");
        let cpu = root.join("sys/fs/cgroup/cpu");
        fs::create_dir_all(memory.join("a/ctr")).unwrap();
        fs::create_dir_all(cpu.join("ctr")).unwrap();
        fs::write(memory.join("a/ctr/memory.limit_in_bytes"), "67108864\n").unwrap();
        fs::write(cpu.join("ctr/cpu.cfs_quota_us"), "100000\n").unwrap();
        let mountinfo = "\
            36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory\n\
            37 25 0:32 / /sys/fs/cgroup/cpu rw,relatime shared:15 - cgroup cgroup rw,cpu\n\
            38 25 0:33 / /sys/fs/cgroup/unified rw,relatime shared:16 - cgroup2 cgroup2 rw\n";
        let seen = Hierarchies::discover(mountinfo, "4:memory:/a/ctr\n1:cpu:/ctr\n0::/\n", &root)
            .map_err(anyhow::Error::from)
            .and_then(|cgroups| limits_in(&cgroups));
        fs::remove_dir_all(&root).unwrap();
        let seen = seen.unwrap();
        assert!(seen.matches_request(), "{seen}");
        assert_eq!(seen.cgroup, "memory:/a/ctr");
    }
}
