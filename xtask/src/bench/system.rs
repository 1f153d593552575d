//! What the scenarios share about the system: processes (spawning, probing,
//! waiting for quiet, reaping), mounts, and the cgroup hierarchies (layout,
//! limit files, removing our leftovers).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::latency::ObservedLimits;

// ---------------------------------------------------------------------------
// Waiting for quiet
// ---------------------------------------------------------------------------

/// Wait (at most 10 s) until this PID namespace holds nothing but us, reaping
/// zombies reparented to us: a run must not pay for its predecessor's exit.
pub(super) fn settle() {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        reap_zombies();
        let busy = processes().iter().filter(|(pid, _)| *pid != 1).count();
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

#[derive(Debug)]
pub(super) struct Mount {
    pub(super) mount_point: PathBuf,
    pub(super) fs_type: String,
    pub(super) super_options: Vec<String>,
}

pub(super) fn read_mounts() -> Result<Vec<Mount>> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(mountinfo.lines().filter_map(parse_mountinfo_line).collect())
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
pub(super) fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let separator = fields.iter().position(|field| *field == "-")?;
    Some(Mount {
        mount_point: PathBuf::from(unescape_mount_path(fields.get(4)?)),
        fs_type: (*fields.get(separator + 1)?).to_owned(),
        super_options: fields
            .get(separator + 3)?
            .split(',')
            .map(str::to_owned)
            .collect(),
    })
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
pub(super) fn unescape_mount_path(raw: &str) -> String {
    raw.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// "ext4 (/dev/vda on /, rw,relatime,discard)": the mount holding `path`
/// (or the nearest existing ancestor), the last one mounted there winning.
pub(super) fn filesystem_of(path: &Path) -> Result<String> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(separator) = fields.iter().position(|field| *field == "-") else {
            continue;
        };
        let (Some(mount_point), Some(fs_type), Some(source), Some(options)) = (
            fields.get(4),
            fields.get(separator + 1),
            fields.get(separator + 2),
            fields.get(5),
        ) else {
            continue;
        };
        let mount_point = unescape_mount_path(mount_point);
        let depth = Path::new(&mount_point).components().count();
        if path.starts_with(&mount_point)
            && best
                .as_ref()
                .map_or(true, |(best_depth, _)| depth >= *best_depth)
        {
            best = Some((
                depth,
                format!("{fs_type} ({source} on {mount_point}, {options})"),
            ));
        }
    }
    best.map(|(_, description)| description)
        .with_context(|| format!("no mount holds {}", path.display()))
}

pub(super) fn mounts_below(dir: &Path) -> Result<Vec<String>> {
    Ok(read_mounts()?
        .into_iter()
        .filter(|mount| mount.mount_point.starts_with(dir))
        .map(|mount| mount.mount_point.display().to_string())
        .collect())
}

/// The cgroup hierarchies as mounted: v1 ones by controller, the cgroup2 one.
#[derive(Debug)]
pub(super) struct CgroupLayout {
    /// (mount point, controllers or name=...) per v1 hierarchy.
    pub(super) v1: Vec<(PathBuf, Vec<String>)>,
    pub(super) v2: Option<PathBuf>,
}

impl CgroupLayout {
    pub(super) fn read() -> Result<Self> {
        Ok(Self::from_mounts(&read_mounts()?))
    }

    pub(super) fn from_mounts(mounts: &[Mount]) -> Self {
        let v1 = mounts
            .iter()
            .filter(|mount| mount.fs_type == "cgroup")
            .map(|mount| {
                let controllers = mount
                    .super_options
                    .iter()
                    .filter(|option| {
                        !matches!(option.as_str(), "rw" | "ro") && !option.contains("relatime")
                    })
                    .cloned()
                    .collect();
                (mount.mount_point.clone(), controllers)
            })
            .collect();
        let v2 = mounts
            .iter()
            .find(|mount| mount.fs_type == "cgroup2")
            .map(|mount| mount.mount_point.clone());
        CgroupLayout { v1, v2 }
    }

    /// The cgroup2 mount of a hybrid layout (v1 hierarchies next to it).
    pub(super) fn hybrid_v2_mount(&self) -> Option<&Path> {
        self.v2.as_deref().filter(|_| !self.v1.is_empty())
    }

    pub(super) fn v1_mount_of(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(_, controllers)| controllers.iter().any(|c| c == controller))
            .map(|(mount_point, _)| mount_point.as_path())
    }

    /// Reads the memory limit and cpu quota of the cgroups a process is in,
    /// given its /proc/PID/cgroup, from whichever hierarchy has each
    /// controller (v1 first, as a hybrid host binds them there).
    pub(super) fn limits_of(&self, membership: &str) -> Result<ObservedLimits> {
        let path_in = |hierarchy: &str| {
            membership.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                let found = if hierarchy.is_empty() {
                    controllers.is_empty()
                } else {
                    controllers.split(',').any(|c| c == hierarchy)
                };
                found.then(|| path.trim_start_matches('/').to_owned())
            })
        };
        let read = |path: PathBuf| -> Result<String> {
            Ok(fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_owned())
        };
        if let (Some(memory_mount), Some(cpu_mount)) =
            (self.v1_mount_of("memory"), self.v1_mount_of("cpu"))
        {
            let memory_path = path_in("memory").context("no memory line in /proc/PID/cgroup")?;
            let cpu_path = path_in("cpu").context("no cpu line in /proc/PID/cgroup")?;
            return Ok(ObservedLimits {
                memory_bytes: read(
                    memory_mount
                        .join(&memory_path)
                        .join("memory.limit_in_bytes"),
                )?,
                cpu_quota: read(cpu_mount.join(&cpu_path).join("cpu.cfs_quota_us"))?,
                cgroup: format!("memory:/{memory_path}"),
            });
        }
        let v2 = self
            .v2
            .as_deref()
            .context("no memory/cpu controller mounted")?;
        let path = path_in("").context("no cgroup2 line in /proc/PID/cgroup")?;
        Ok(ObservedLimits {
            memory_bytes: read(v2.join(&path).join("memory.max"))?,
            cpu_quota: read(v2.join(&path).join("cpu.max"))?,
            cgroup: format!("/{path}"),
        })
    }
}

impl std::fmt::Display for CgroupLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v1: Vec<String> = self
            .v1
            .iter()
            .map(|(_, controllers)| controllers.join(","))
            .collect();
        let v2 = self.v2.as_ref().map(|mount| {
            let controllers =
                fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
            format!(
                "cgroup2 at {} with controllers [{}]",
                mount.display(),
                controllers.trim()
            )
        });
        match (v1.is_empty(), v2) {
            (true, Some(v2)) => write!(f, "unified (v2 only): {v2}"),
            (false, Some(v2)) => write!(f, "hybrid: v1 [{}] + {v2}", v1.join(" ")),
            (false, None) => write!(f, "legacy (v1 only): [{}]", v1.join(" ")),
            (true, None) => write!(f, "no cgroup filesystem mounted"),
        }
    }
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
    let Ok(layout) = CgroupLayout::read() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut pending: Vec<(PathBuf, usize)> = layout
        .v1
        .into_iter()
        .map(|(mount_point, _)| mount_point)
        .chain(layout.v2)
        .map(|mount_point| (mount_point, 0))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_layout_and_limits_from_fake_tree() {
        let line =
            "36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory";
        let mount = parse_mountinfo_line(line).unwrap();
        assert_eq!(mount.fs_type, "cgroup");
        assert_eq!(mount.super_options, ["rw", "memory"]);

        let root = std::env::temp_dir().join(format!("berth-bench-test-{}", std::process::id()));
        let memory = root.join("memory");
        let cpu = root.join("cpu");
        fs::create_dir_all(memory.join("a/ctr")).unwrap();
        fs::create_dir_all(cpu.join("ctr")).unwrap();
        fs::write(memory.join("a/ctr/memory.limit_in_bytes"), "67108864\n").unwrap();
        fs::write(cpu.join("ctr/cpu.cfs_quota_us"), "100000\n").unwrap();
        let layout = CgroupLayout {
            v1: vec![(memory, vec!["memory".into()]), (cpu, vec!["cpu".into()])],
            v2: Some(root.join("unified")),
        };
        assert_eq!(
            layout.hybrid_v2_mount(),
            Some(root.join("unified").as_path())
        );
        let seen = layout
            .limits_of("4:memory:/a/ctr\n1:cpu:/ctr\n0::/\n")
            .unwrap();
        fs::remove_dir_all(&root).unwrap();
        assert!(seen.matches_request(), "{seen}");
        assert_eq!(seen.cgroup, "memory:/a/ctr");
    }
}
