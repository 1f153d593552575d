//! cgroup v1, v2 and hybrid hierarchies for berth: discover which hierarchy
//! has which controller, create a container's cgroup below the caller's
//! own, limit memory, CPU (shares/weight and quota), cpuset and pids,
//! freeze and thaw, read stats and OOM kills, attach processes, remove.
//!
//! Every host path comes in as a parameter: [`Hierarchies::discover`] takes
//! the text of /proc/self/mountinfo and /proc/self/cgroup and a filesystem
//! root, so tests can build a fake tree in a temporary directory.
//!
//! On a hybrid host (v1 controllers plus a cgroup2 mount) each controller is
//! used on whichever hierarchy really has it: a v1 mount naming it, or the
//! cgroup2 mount when it is bound there.
//!
//! ```
//! use berth_cgroup::{parse_memory_size, Controller, Hierarchies, Layout, Resources, Version};
//! # fn main() -> Result<(), berth_cgroup::CgroupError> {
//! let root = tempfile::tempdir().unwrap();
//! let unified = root.path().join("sys/fs/cgroup");
//! std::fs::create_dir_all(&unified).unwrap();
//! std::fs::write(unified.join("cgroup.controllers"), "cpuset cpu memory pids\n").unwrap();
//!
//! let mountinfo = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
//! let hierarchies = Hierarchies::discover(mountinfo, "0::/\n", root.path())?;
//! assert_eq!(hierarchies.layout(), Layout::Unified);
//! assert_eq!(hierarchies.placement(Controller::Memory), Some(Version::V2));
//!
//! // `<own cgroup>/berth/<id>`, here /sys/fs/cgroup/berth/c1.
//! let cgroup = berth_cgroup::Cgroup::create(&hierarchies, "c1", None)?;
//! cgroup.apply(&Resources {
//!     memory_limit: Some(parse_memory_size("64m")?),
//!     ..Resources::default()
//! })?;
//! let memory_max = unified.join("berth/c1/memory.max");
//! assert_eq!(std::fs::read_to_string(memory_max).unwrap(), "67108864");
//! # Ok(())
//! # }
//! ```
//!
//! On a real host: `Hierarchies::from_host()?`, then [`Cgroup::create`],
//! [`Cgroup::apply`], [`Cgroup::add_task`] for the container's init before
//! it runs user code, and [`Cgroup::remove`] when it is gone. Keep the
//! [`Cgroup`] (it is serde-serializable) in the container's record to reach
//! it again from another process.

mod cgroup;
mod controller;
mod error;
mod fsio;
mod hierarchy;
mod resources;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use cgroup::{join_self, Cgroup, HierarchyDir, Stats, BERTH_CGROUP};
pub use controller::devices::{DeviceAccess, DeviceRule, DeviceType};
pub use error::{CgroupError, Result};
pub use hierarchy::{Hierarchies, Hierarchy};
pub use resources::{
    parse_cpu_list, parse_cpus, parse_memory_size, shares_to_weight, CpuList, CpuQuota, Resources,
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

/// The controllers berth uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
}

impl Controller {
    /// Every controller berth uses.
    pub const ALL: [Controller; 7] = [
        Controller::Memory,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Cpuset,
        Controller::Pids,
        Controller::Freezer,
        Controller::Devices,
    ];

    /// The kernel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Pids => "pids",
            Controller::Freezer => "freezer",
            Controller::Devices => "devices",
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
        f.write_str(self.name())
    }
}
