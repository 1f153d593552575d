//! Resource limits: from docker's flags to cgroup settings, and the
//! container's cgroup across its life (create and attach at start, freeze
//! for pause, stats, OOM and removal at the end).

use anyhow::Context;
use berth_cgroup::{Cgroup, CpuQuota, Hierarchies, Resources};
use berth_state::{ContainerRecord, Limits};

use crate::args::RunArgs;

/// docker refuses memory limits below 6 MB.
const MIN_MEMORY: u64 = 6 * 1024 * 1024;

/// Parse the limit flags of `run`; nothing is created here, so bad input
/// leaves nothing behind.
pub fn parse(args: &RunArgs) -> anyhow::Result<(Resources, Limits)> {
    let mut resources = Resources::default();
    let mut limits = Limits::default();
    if let Some(text) = &args.memory {
        let bytes = berth_cgroup::parse_memory_size(text).context("--memory")?;
        // docker's floor: below this the container cannot even start.
        if bytes < MIN_MEMORY {
            anyhow::bail!("invalid --memory {text:?}: the minimum memory limit is 6MB");
        }
        resources.memory_limit = Some(bytes);
        limits.memory = Some(bytes);
    }
    if let Some(text) = &args.cpu_shares {
        let shares = text
            .parse::<u64>()
            .ok()
            .filter(|s| (2..=262_144).contains(s))
            .with_context(|| {
                format!("invalid --cpu-shares {text:?}: it must be a number from 2 to 262144")
            })?;
        resources.cpu_shares = Some(shares);
        limits.cpu_shares = Some(shares);
    }
    if let Some(text) = &args.cpus {
        let cpus = berth_cgroup::parse_cpus(text).context("--cpus")?;
        let online = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus > online as f64 {
            anyhow::bail!("invalid --cpus {text:?}: the range of CPUs is from 0.01 to {online}.00");
        }
        resources.cpu_quota = Some(CpuQuota::from_cpus(cpus)?);
        limits.cpus = Some(cpus);
    }
    if let Some(text) = &args.cpuset_cpus {
        resources.cpuset_cpus = Some(berth_cgroup::parse_cpu_list(text).context("--cpuset-cpus")?);
        limits.cpuset_cpus = Some(text.clone());
    }
    if let Some(text) = &args.cpuset_mems {
        resources.cpuset_mems = Some(berth_cgroup::parse_cpu_list(text).context("--cpuset-mems")?);
        limits.cpuset_mems = Some(text.clone());
    }
    // docker's device allow-list, unless --privileged gives every device.
    if !args.privileged {
        resources.devices = Some(berth_cgroup::DeviceRule::docker_defaults());
    }
    // docker: 0 and -1 mean unlimited.
    if let Some(text) = args
        .pids_limit
        .as_deref()
        .filter(|t| !matches!(*t, "0" | "-1"))
    {
        let n: u64 = text.parse().ok().filter(|&n| n > 0).with_context(|| {
            format!(
                "invalid --pids-limit {text:?}: it must be a positive number (or -1 for no limit)"
            )
        })?;
        resources.pids_limit = Some(n);
        limits.pids_limit = Some(n);
    }
    Ok((resources, limits))
}

/// The host's cgroup hierarchies, checked against what `resources` needs
/// (a missing controller or CPU is an error before anything is made).
pub fn hierarchies_for(resources: &Resources) -> anyhow::Result<Hierarchies> {
    let hierarchies = Hierarchies::from_host().context("cannot read the host's cgroups")?;
    hierarchies.check(resources)?;
    Ok(hierarchies)
}

/// Create the container's cgroup and apply the limits (the init then
/// moves itself in, see `Cgroup::self_attach_files`); on failure nothing of
/// the cgroup remains.
pub fn place(
    hierarchies: &Hierarchies,
    record: &mut ContainerRecord,
    resources: &Resources,
) -> anyhow::Result<Cgroup> {
    let cgroup = Cgroup::create(hierarchies, &record.id, record.cgroup_parent.as_deref())?;
    if let Err(error) = cgroup.apply(resources) {
        let _ = cgroup.remove();
        return Err(error.into());
    }
    record.cgroup = Some(serde_json::to_value(&cgroup)?);
    Ok(cgroup)
}

/// The cgroup a record names, if any.
pub fn of(record: &ContainerRecord) -> Option<Cgroup> {
    record
        .cgroup
        .as_ref()
        .and_then(|value| serde_json::from_value(value.clone()).ok())
}

/// Whether the container's cgroup saw an OOM kill.
pub fn oom_killed(record: &ContainerRecord) -> bool {
    of(record)
        .and_then(|c| c.oom_kill_count().ok())
        .is_some_and(|n| n > 0)
}

/// Remove the container's cgroup (killing anything left in it). A record
/// without one may belong to a berth killed between creating the cgroup
/// and recording it: the cgroup is then found where berth creates them.
pub fn release(record: &ContainerRecord) -> anyhow::Result<()> {
    let cgroup = match of(record) {
        Some(cgroup) => cgroup,
        None => {
            let Ok(hierarchies) = Hierarchies::from_host() else {
                return Ok(());
            };
            Cgroup::open(&hierarchies, &record.id, record.cgroup_parent.as_deref())?
        }
    };
    cgroup
        .remove()
        .with_context(|| format!("cannot remove the cgroup of container {}", record.name))
}
