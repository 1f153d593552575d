//! What a cgroup uses: memory, CPU time, tasks, OOM kills.

use serde::{Deserialize, Serialize};

use super::{Cgroup, HierarchyDir};
use crate::controller::{cpuacct, memory, pids};
use crate::error::{CgroupError, Result};
use crate::Controller;

/// Memory, CPU and task figures of a cgroup (what `events --stats` of an
/// OCI runtime reports). A field is `None` when the host (or this cgroup,
/// or this kernel) lacks the file it comes from; a limit is also `None`
/// when there is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Memory in use, in bytes (page cache included, like the kernel counts).
    pub memory_usage: Option<u64>,
    /// The highest memory use seen, in bytes (v1
    /// `memory.max_usage_in_bytes`, v2 `memory.peak`).
    #[serde(default)]
    pub memory_max_usage: Option<u64>,
    /// The memory limit in bytes.
    pub memory_limit: Option<u64>,
    /// How often memory use hit the limit (v1 `memory.failcnt`, v2 `max`
    /// in memory.events).
    #[serde(default)]
    pub memory_limit_hits: Option<u64>,
    /// Memory plus swap in use, in bytes; `None` without swap accounting.
    #[serde(default)]
    pub memory_swap_usage: Option<u64>,
    /// CPU time used, in nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    /// CPU time used in user mode, in nanoseconds.
    #[serde(default)]
    pub cpu_user_ns: Option<u64>,
    /// CPU time used in the kernel, in nanoseconds.
    #[serde(default)]
    pub cpu_system_ns: Option<u64>,
    /// Number of tasks.
    pub pids_current: Option<u64>,
    /// The limit on the number of tasks.
    #[serde(default)]
    pub pids_limit: Option<u64>,
}

impl Cgroup {
    /// Memory, CPU and task figures (see [`Stats`] for what `None` means).
    pub fn stats(&self) -> Result<Stats> {
        let with = |controller: Controller| self.find(controller).map(HierarchyDir::dir);
        let mut stats = Stats::default();
        if let Some(dir) = with(Controller::Memory) {
            stats.memory_usage = memory::usage(dir)?;
            stats.memory_max_usage = memory::max_usage(dir)?;
            stats.memory_limit = memory::limit(dir)?;
            stats.memory_limit_hits = memory::limit_hits(dir)?;
            stats.memory_swap_usage = memory::swap_usage(dir)?;
        }
        if let Some(dir) = with(Controller::Cpuacct) {
            let cpu = cpuacct::usage(dir)?;
            stats.cpu_usage_ns = cpu.total_ns;
            stats.cpu_user_ns = cpu.user_ns;
            stats.cpu_system_ns = cpu.system_ns;
        }
        if let Some(dir) = with(Controller::Pids) {
            stats.pids_current = pids::current(dir)?;
            stats.pids_limit = pids::max(dir)?;
        }
        Ok(stats)
    }

    /// How many times the kernel's OOM killer killed a process of this
    /// cgroup (v1 memory.oom_control, v2 memory.events `oom_kill`).
    pub fn oom_kill_count(&self) -> Result<u64> {
        let dir = self
            .find(Controller::Memory)
            .ok_or(CgroupError::ControllerMissing {
                controller: Controller::Memory,
            })?;
        memory::oom_kill_count(dir.dir())
    }
}
