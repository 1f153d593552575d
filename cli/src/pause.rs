//! `berth pause`, `berth unpause` and `berth stats`: the container's cgroup
//! at work while it runs.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_state::{ContainerRecord, ContainerStore, Status};

use crate::args::{ContainersArgs, StatsArgs};
use crate::container::{find, for_each_container, list};
use crate::limits;
use crate::paths::Paths;
use crate::table::render;

fn cgroup_of(record: &ContainerRecord) -> anyhow::Result<berth_cgroup::Cgroup> {
    limits::of(record).with_context(|| format!("container {} has no cgroup", record.name))
}

pub fn pause(paths: &Paths, args: &ContainersArgs) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    Ok(for_each_container(&store, &args.containers, |record| {
        match record.status {
            Status::Running => {}
            Status::Paused => bail!("container {} is already paused", record.name),
            _ => bail!("container {} is not running", record.name),
        }
        cgroup_of(&record)?.freeze()?;
        store.update(&record.id, |r| r.status = Status::Paused)?;
        Ok(())
    }))
}

pub fn unpause(paths: &Paths, args: &ContainersArgs) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    Ok(for_each_container(&store, &args.containers, |record| {
        if record.status != Status::Paused {
            bail!("container {} is not paused", record.name);
        }
        thaw(&store, &record)
    }))
}

fn thaw(store: &ContainerStore, record: &ContainerRecord) -> anyhow::Result<()> {
    cgroup_of(record)?.thaw()?;
    store.update(&record.id, |r| {
        if r.status == Status::Paused {
            r.status = Status::Running;
        }
    })?;
    Ok(())
}

/// A frozen process does not act on signals: stop, kill and rm thaw a
/// paused container first (as docker does), and also one the record calls
/// running whose cgroup is frozen (a `commit` killed while it held the
/// container still).
pub fn thaw_for_signal(store: &ContainerStore, record: &ContainerRecord) -> anyhow::Result<()> {
    if record.status == Status::Paused || is_left_frozen(store, record) {
        thaw(store, record)?;
    }
    Ok(())
}

/// A running container whose cgroup is frozen although nobody paused it
/// and no live `commit` holds it (see [`FreezeGuard`]).
pub fn is_left_frozen(store: &ContainerStore, record: &ContainerRecord) -> bool {
    record.status == Status::Running
        && !FreezeGuard::holder_alive(store, record)
        && crate::limits::of(record).is_some_and(|cgroup| cgroup.is_frozen().unwrap_or(false))
}

/// `exec` and `ps` of a container a killed `commit` left frozen: thaw it
/// (it would hang an exec and look running while it is not).
pub fn recover_left_frozen(store: &ContainerStore, record: &ContainerRecord) {
    if is_left_frozen(store, record) {
        let _ = thaw(store, record);
    }
}

/// A running container held frozen for a consistent snapshot (docker
/// commit's default --pause). The holder's pid and start time are written
/// beside the record, so that a holder killed with SIGKILL is noticed and
/// the container thawed by the next command; SIGINT, SIGTERM and SIGHUP are
/// held back while frozen, so they cannot end berth before it thaws.
pub struct FreezeGuard {
    cgroup: berth_cgroup::Cgroup,
    marker: std::path::PathBuf,
    blocked: nix::sys::signal::SigSet,
}

impl FreezeGuard {
    const MARKER: &'static str = "frozen-by";

    /// Freeze a running container; `None` when it is not running or has
    /// no cgroup (nothing to hold still).
    pub fn freeze(
        store: &ContainerStore,
        record: &ContainerRecord,
    ) -> anyhow::Result<Option<FreezeGuard>> {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal};
        let Some(cgroup) = limits::of(record).filter(|_| record.status == Status::Running) else {
            return Ok(None);
        };
        let mut blocked = SigSet::empty();
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            blocked.add(signal);
        }
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None)?;
        let pid = std::process::id();
        let start = berth_state::process_start_time(std::path::Path::new("/proc"), pid as i32)
            .unwrap_or_default();
        let marker = store.container_dir(&record.id).join(Self::MARKER);
        let guard = FreezeGuard {
            cgroup,
            marker,
            blocked,
        };
        berth_state::replace_file(
            &guard.marker,
            format!("{pid} {start}").as_bytes(),
            berth_state::Durability::Volatile,
        )
        .with_context(|| format!("cannot write {}", guard.marker.display()))?;
        guard.cgroup.freeze()?;
        Ok(Some(guard))
    }

    /// Whether a live process holds this container frozen.
    fn holder_alive(store: &ContainerStore, record: &ContainerRecord) -> bool {
        let marker = store.container_dir(&record.id).join(Self::MARKER);
        let Ok(text) = std::fs::read_to_string(marker) else {
            return false;
        };
        let mut fields = text.split_whitespace().map(str::parse::<u64>);
        match (fields.next(), fields.next()) {
            (Some(Ok(pid)), Some(Ok(start))) => {
                berth_state::is_same_process(std::path::Path::new("/proc"), pid as i32, Some(start))
            }
            _ => false,
        }
    }
}

impl Drop for FreezeGuard {
    fn drop(&mut self) {
        let _ = self.cgroup.thaw();
        let _ = std::fs::remove_file(&self.marker);
        // A signal that came while frozen is delivered now.
        let _ = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
            Some(&self.blocked),
            None,
        );
    }
}

struct Sample {
    cpu_ns: Option<u64>,
    at: Instant,
}

fn sample(cgroup: &berth_cgroup::Cgroup) -> (berth_cgroup::Stats, Sample) {
    let stats = cgroup.stats().unwrap_or_default();
    let at = Instant::now();
    (
        stats,
        Sample {
            cpu_ns: stats.cpu_usage_ns,
            at,
        },
    )
}

/// docker's `stats` table: CPU over the sampling interval, memory against
/// the limit (or the host's memory when unlimited), process count.
pub fn stats(paths: &Paths, args: &StatsArgs) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    let host_memory = host_memory_bytes();
    loop {
        let records: Vec<ContainerRecord> = if args.containers.is_empty() {
            list(&store)?
                .into_iter()
                .filter(|r| r.is_active())
                .collect()
        } else {
            args.containers
                .iter()
                .map(|q| find(&store, q))
                .collect::<anyhow::Result<_>>()?
        };
        let cgroups: Vec<Option<berth_cgroup::Cgroup>> = records.iter().map(limits::of).collect();
        let first: Vec<Option<Sample>> = cgroups
            .iter()
            .map(|c| c.as_ref().map(|c| sample(c).1))
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let mut rows = Vec::new();
        for ((record, cgroup), before) in records.iter().zip(&cgroups).zip(&first) {
            let (Some(cgroup), Some(before)) = (cgroup, before) else {
                rows.push(vec![
                    record.short_id().into(),
                    record.name.clone(),
                    "--".into(),
                    "-- / --".into(),
                    "--".into(),
                    "--".into(),
                ]);
                continue;
            };
            let (stats, after) = sample(cgroup);
            let cpu = match (before.cpu_ns, after.cpu_ns) {
                (Some(a), Some(b)) => {
                    let wall = after.at.duration_since(before.at).as_nanos().max(1) as f64;
                    format!("{:.2}%", b.saturating_sub(a) as f64 / wall * 100.0)
                }
                _ => "--".into(),
            };
            let usage = stats.memory_usage.unwrap_or(0);
            let limit = stats
                .memory_limit
                .unwrap_or(host_memory)
                .min(host_memory.max(1));
            rows.push(vec![
                record.short_id().into(),
                record.name.clone(),
                cpu,
                format!("{} / {}", binary_size(usage), binary_size(limit)),
                format!("{:.2}%", usage as f64 / limit.max(1) as f64 * 100.0),
                stats.pids_current.map_or("--".into(), |p| p.to_string()),
            ]);
        }
        let table = render(
            &[
                "CONTAINER ID",
                "NAME",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "PIDS",
            ],
            &rows,
        );
        if args.no_stream {
            print!("{table}");
            return Ok(0);
        }
        // Redraw in place, as docker does.
        print!("\x1b[2J\x1b[H{table}");
        use std::io::Write;
        std::io::stdout().flush()?;
    }
}

fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(u64::MAX, |kib| kib * 1024)
}

/// docker prints memory in binary units: "1.5MiB / 64MiB".
fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit]).replace(".00", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_sizes() {
        assert_eq!(binary_size(512), "512B");
        assert_eq!(binary_size(64 << 20), "64MiB");
        assert_eq!(binary_size(1536 * 1024), "1.50MiB");
    }
}
