//! cgroup v1, v2 and hybrid hierarchies for berth: discover which hierarchy
//! has which controller, place a container's cgroup (below the caller's own
//! cgroup, or at a path from each hierarchy's root), apply the OCI runtime
//! spec's resources (memory and swap, CPU weight, quota, real-time and idle,
//! cpuset, pids, block I/O, huge pages, network class and priorities,
//! devices, raw cgroup v2 files), freeze and thaw, list and signal its
//! processes, read stats and OOM kills, remove.
//!
//! Every host path comes in as a parameter: [`Hierarchies::discover`] takes
//! the text of /proc/self/mountinfo and /proc/self/cgroup and a filesystem
//! root, so tests can build a fake tree in a temporary directory. The mount
//! table parser is public ([`mountinfo`]) for tools that need the same
//! answers.
//!
//! On a hybrid host (v1 controllers plus a cgroup2 mount) each controller is
//! used on whichever hierarchy really has it: a v1 mount naming it, or the
//! cgroup2 mount when it is bound there.
//!
//! ```
//! use berth_cgroup::{Cgroup, Controller, Hierarchies, Layout, Resources, SwapLimit, Version};
//! # fn main() -> Result<(), berth_cgroup::CgroupError> {
//! let root = tempfile::tempdir().unwrap();
//! let unified = root.path().join("sys/fs/cgroup");
//! std::fs::create_dir_all(&unified).unwrap();
//! std::fs::write(unified.join("cgroup.controllers"), "cpuset cpu memory pids\n").unwrap();
//!
//! let mountinfo = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
//! let hierarchies = Hierarchies::discover(mountinfo, "0::/user.slice\n", root.path())?;
//! assert_eq!(hierarchies.layout(), Layout::Unified);
//! assert_eq!(hierarchies.placement(Controller::Memory), Some(Version::V2));
//!
//! // Relative: below the caller's own cgroup, here
//! // /sys/fs/cgroup/user.slice/ctrs/c1 (`/ctrs/c1` would be from the root).
//! let cgroup = Cgroup::create_at(&hierarchies, "ctrs/c1")?;
//! let dir = unified.join("user.slice/ctrs/c1");
//! std::fs::write(dir.join("memory.swap.max"), "max").unwrap(); // the kernel's file
//! cgroup.apply(&Resources {
//!     memory_limit: Some(64 << 20),
//!     memory_swap: Some(SwapLimit::Total(96 << 20)),
//!     ..Resources::default()
//! })?;
//! assert_eq!(std::fs::read_to_string(dir.join("memory.max")).unwrap(), "67108864");
//! // cgroup v2 limits swap alone: memory+swap minus memory.
//! assert_eq!(std::fs::read_to_string(dir.join("memory.swap.max")).unwrap(), "33554432");
//! # Ok(())
//! # }
//! ```
//!
//! On a real host: `Hierarchies::from_host()?`, [`Hierarchies::check`] the
//! resources before creating anything, then [`Cgroup::create_at`] (or
//! [`Cgroup::create`] for `<own cgroup>/berth/<id>`), [`Cgroup::apply`],
//! [`Cgroup::add_task`] (or [`join_self`]) for the container's init before
//! it runs user code, and [`Cgroup::remove`] when it is gone. On a host with
//! a cgroup2 mount, [`Cgroup::open_unified_dir`] gives what clone3(2) with
//! `CLONE_INTO_CGROUP` takes for the init to be born in its cgroup2
//! directory; [`Cgroup::add_task_v1`] or [`Cgroup::v1_self_attach_files`]
//! then place it on the v1 hierarchies only. Keep the
//! [`Cgroup`] (it is serde-serializable) in the container's record to reach
//! it again from another process.

mod cgroup;
mod controller;
mod cpu_list;
mod error;
mod fsio;
mod hierarchy;
pub mod mountinfo;
mod parse;
mod resources;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use cgroup::{join_self, Cgroup, HierarchyDir, Stats, BERTH_CGROUP};
pub use controller::devices::{DeviceAccess, DeviceRule, DeviceType};
pub use cpu_list::{parse_cpu_list, CpuList};
pub use error::{CgroupError, Result};
pub use hierarchy::{Hierarchies, Hierarchy};
pub use nix::sys::signal::Signal;
pub use parse::{parse_cpus, parse_memory_size};
pub use resources::{
    blkio_weight_to_io_weight, shares_to_weight, BlockIo, CpuQuota, DeviceRate, DeviceWeight,
    HugepageLimit, NetPriority, Resources, SwapLimit,
};

/// How cgroups are mounted on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Only cgroup2 (e.g. a systemd host in unified mode).
    Unified,
    /// Only v1 hierarchies.
    Legacy,
    /// v1 controller hierarchies plus a cgroup2 mount, some controllers
    /// possibly bound to the v2 side.
    Hybrid,
}

/// A cgroup hierarchy's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Version {
    /// cgroup v1 (filesystem type `cgroup`).
    V1,
    /// cgroup v2 (filesystem type `cgroup2`).
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Unified => "unified (cgroup v2 only)",
            Layout::Legacy => "legacy (cgroup v1 only)",
            Layout::Hybrid => "hybrid (cgroup v1 controllers and a cgroup2 mount)",
        })
    }
}

/// The controllers berth uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Controller {
    /// Memory limit, usage and OOM kills.
    Memory,
    /// CPU shares/weight and quota.
    Cpu,
    /// CPU usage accounting (v2: cpu.stat, always present).
    Cpuacct,
    /// CPUs and memory nodes.
    Cpuset,
    /// Number of tasks.
    Pids,
    /// Freezing (v2: cgroup.freeze, always present).
    Freezer,
    /// Device access (v1 whitelist; v2 uses BPF, always available).
    Devices,
    /// Block I/O weights and throttling (v1 `blkio`, v2 `io`).
    Blkio,
    /// Huge page limits.
    Hugetlb,
    /// Network class id for traffic control (cgroup v1 only).
    NetCls,
    /// Network priority per interface (cgroup v1 only).
    NetPrio,
}

impl Controller {
    /// Every controller berth uses.
    pub const ALL: [Controller; 11] = [
        Controller::Memory,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Cpuset,
        Controller::Pids,
        Controller::Freezer,
        Controller::Devices,
        Controller::Blkio,
        Controller::Hugetlb,
        Controller::NetCls,
        Controller::NetPrio,
    ];

    /// The kernel's name for it on cgroup v1 (mount options,
    /// /proc/self/cgroup).
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Pids => "pids",
            Controller::Freezer => "freezer",
            Controller::Devices => "devices",
            Controller::Blkio => "blkio",
            Controller::Hugetlb => "hugetlb",
            Controller::NetCls => "net_cls",
            Controller::NetPrio => "net_prio",
        }
    }

    /// The name in cgroup v2's `cgroup.controllers`, for the controllers
    /// that are bound to v2 there; `None` for those that every v2 cgroup
    /// has implicitly (see [`implicit_on_v2`](Self::implicit_on_v2)) and
    /// for those that do not exist on v2 (net_cls, net_prio).
    pub fn v2_name(self) -> Option<&'static str> {
        match self {
            Controller::Memory => Some("memory"),
            Controller::Cpu => Some("cpu"),
            Controller::Cpuset => Some("cpuset"),
            Controller::Pids => Some("pids"),
            Controller::Blkio => Some("io"),
            Controller::Hugetlb => Some("hugetlb"),
            Controller::Cpuacct
            | Controller::Freezer
            | Controller::Devices
            | Controller::NetCls
            | Controller::NetPrio => None,
        }
    }

    /// Whether every v2 cgroup has it without enabling it in
    /// `cgroup.subtree_control`.
    pub fn implicit_on_v2(self) -> bool {
        matches!(
            self,
            Controller::Cpuacct | Controller::Freezer | Controller::Devices
        )
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Controller::Blkio => f.write_str("blkio (cgroup v2: io)"),
            other => f.write_str(other.name()),
        }
    }
}
