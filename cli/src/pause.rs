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
/// paused container first (as docker does).
pub fn thaw_for_signal(store: &ContainerStore, record: &ContainerRecord) -> anyhow::Result<()> {
    if record.status == Status::Paused {
        thaw(store, record)?;
    }
    Ok(())
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
