//! Resource limits: from docker's flags to cgroup settings, and the
//! container's cgroup across its life (create and attach at start, freeze
//! for pause, stats, OOM and removal at the end).

use anyhow::Context;
use berth_cgroup::{Cgroup, CpuQuota, Hierarchies};
use berth_state::{ContainerRecord, Limits};
use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxPids, LinuxResources,
};

use cli::runtime::RuntimeError;

use crate::args::RunArgs;
use crate::paths::Paths;

/// docker refuses memory limits below 6 MB.
const MIN_MEMORY: u64 = 6 * 1024 * 1024;

/// The limit flags of `run` as the spec's cgroup resources (and the
/// record's summary of them). Nothing is created here, so bad input leaves
/// nothing behind; the runtime checks them against the host's cgroups.
pub fn parse(args: &RunArgs) -> anyhow::Result<(LinuxResources, Limits)> {
    let mut resources = LinuxResources::default();
    let mut limits = Limits::default();
    if let Some(text) = &args.memory {
        let bytes = berth_cgroup::parse_memory_size(text).context("--memory")?;
        // docker's floor: below this the container cannot even start.
        if bytes < MIN_MEMORY {
            anyhow::bail!("invalid --memory {text:?}: the minimum memory limit is 6MB");
        }
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(bytes as i64));
        resources.set_memory(Some(memory));
        limits.memory = Some(bytes);
    }
    if let Some(text) = &args.memory_swap {
        let Some(limit) = limits.memory else {
            anyhow::bail!("invalid --memory-swap {text:?}: it needs --memory as well");
        };
        let swap = if text == "-1" {
            -1
        } else {
            let bytes = berth_cgroup::parse_memory_size(text).context("--memory-swap")?;
            if bytes < limit {
                anyhow::bail!(
                    "invalid --memory-swap {text:?}: it must be at least --memory (memory plus swap)"
                );
            }
            bytes as i64
        };
        let mut memory = resources.memory().unwrap_or_default();
        memory.set_swap(Some(swap));
        resources.set_memory(Some(memory));
    }
    if let Some(text) = &args.memory_reservation {
        let bytes = berth_cgroup::parse_memory_size(text).context("--memory-reservation")?;
        if limits.memory.is_some_and(|limit| bytes > limit) {
            anyhow::bail!("invalid --memory-reservation {text:?}: it must be below --memory");
        }
        let mut memory = resources.memory().unwrap_or_default();
        memory.set_reservation(Some(bytes as i64));
        resources.set_memory(Some(memory));
    }
    let mut cpu = LinuxCpu::default();
    let mut cpu_set = false;
    if let Some(text) = &args.cpu_shares {
        let shares = text
            .parse::<u64>()
            .ok()
            .filter(|s| (2..=262_144).contains(s))
            .with_context(|| {
                format!("invalid --cpu-shares {text:?}: it must be a number from 2 to 262144")
            })?;
        cpu.set_shares(Some(shares));
        cpu_set = true;
        limits.cpu_shares = Some(shares);
    }
    if let Some(text) = &args.cpus {
        let cpus = berth_cgroup::parse_cpus(text).context("--cpus")?;
        let online = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus > online as f64 {
            anyhow::bail!("invalid --cpus {text:?}: the range of CPUs is from 0.01 to {online}.00");
        }
        let quota = CpuQuota::from_cpus(cpus)?;
        cpu.set_quota(Some(quota.quota_us as i64));
        cpu.set_period(Some(quota.period_us));
        cpu_set = true;
        limits.cpus = Some(cpus);
    }
    if args.cpus.is_some() && (args.cpu_period.is_some() || args.cpu_quota.is_some()) {
        anyhow::bail!("--cpus and --cpu-period/--cpu-quota cannot be used together");
    }
    if let Some(period) = args.cpu_period {
        if !(1_000..=1_000_000).contains(&period) {
            anyhow::bail!("invalid --cpu-period {period}: it must be from 1000 to 1000000 (us)");
        }
        cpu.set_period(Some(period));
        cpu_set = true;
    }
    if let Some(quota) = args.cpu_quota {
        if quota != -1 && quota < 1_000 {
            anyhow::bail!("invalid --cpu-quota {quota}: it must be at least 1000 (us), or -1");
        }
        cpu.set_quota(Some(quota));
        cpu_set = true;
    }
    if let Some(text) = &args.cpuset_cpus {
        berth_cgroup::parse_cpu_list(text).context("--cpuset-cpus")?;
        cpu.set_cpus(Some(text.clone()));
        cpu_set = true;
        limits.cpuset_cpus = Some(text.clone());
    }
    if let Some(text) = &args.cpuset_mems {
        berth_cgroup::parse_cpu_list(text).context("--cpuset-mems")?;
        cpu.set_mems(Some(text.clone()));
        cpu_set = true;
        limits.cpuset_mems = Some(text.clone());
    }
    if cpu_set {
        resources.set_cpu(Some(cpu));
    }
    // docker's device allow-list, unless --privileged gives every device.
    resources.set_devices(Some(device_rules(args.privileged)));
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
        let mut pids = LinuxPids::default();
        pids.set_limit(n as i64);
        resources.set_pids(Some(pids));
        limits.pids_limit = Some(n);
    }
    Ok((resources, limits))
}

/// The device cgroup rules: deny everything, then docker's default
/// devices (or everything, for --privileged).
fn device_rules(privileged: bool) -> Vec<LinuxDeviceCgroup> {
    let rule = |allow: bool, typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>| {
        let mut rule = LinuxDeviceCgroup::default();
        rule.set_allow(allow);
        rule.set_typ(Some(typ));
        rule.set_major(major);
        rule.set_minor(minor);
        rule.set_access(Some("rwm".to_owned()));
        rule
    };
    let mut rules = vec![rule(false, LinuxDeviceType::A, None, None)];
    if privileged {
        rules.push(rule(true, LinuxDeviceType::A, None, None));
        return rules;
    }
    for device in berth_cgroup::DeviceRule::docker_defaults() {
        rules.push(rule(
            true,
            LinuxDeviceType::C,
            device.major.map(i64::from),
            device.minor.map(i64::from),
        ));
    }
    rules
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

/// Take the container's processes, cgroup and runtime state away (the
/// runtime's delete). A record the runtime does not know may belong to a
/// berth killed before the runtime finished creating it: its cgroup is then
/// found where berth creates them.
pub fn release(paths: &Paths, record: &ContainerRecord) -> anyhow::Result<()> {
    match paths.runtime().delete(&record.id, true) {
        Ok(()) => return Ok(()),
        Err(RuntimeError::NotFound { .. }) => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot remove container {}", record.name))
        }
    }
    let Ok(hierarchies) = Hierarchies::from_host() else {
        return Ok(());
    };
    let cgroup = Cgroup::open(&hierarchies, &record.id, record.cgroup_parent.as_deref())?;
    cgroup
        .remove()
        .with_context(|| format!("cannot remove the cgroup of container {}", record.name))
}
