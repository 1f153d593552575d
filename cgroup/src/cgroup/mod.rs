//! A container's cgroup across every hierarchy it needs.

mod path;
mod processes;
mod stats;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use stats::Stats;

use crate::controller::cpuset::Kind;
use crate::controller::{blkio, cpu, cpuset, devices, hugetlb, memory, net, pids, Dir};
use crate::error::{CgroupError, Result};
use crate::hierarchy::{read_controller_list, Hierarchies};
use crate::resources::{BlockIo, Resources};
use crate::{fsio, Controller, Version};

/// The name of the cgroup, below berth's own, that holds every container's
/// cgroup (shared by all containers, never removed by berth).
pub const BERTH_CGROUP: &str = "berth";

/// The container's cgroup directory on one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HierarchyDir {
    version: Version,
    mount_point: PathBuf,
    path: PathBuf,
    controllers: Vec<Controller>,
    /// Absent from records written before named hierarchies were joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

impl HierarchyDir {
    /// The version of the hierarchy.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Where the hierarchy is mounted.
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// The container's cgroup directory, e.g.
    /// `/sys/fs/cgroup/memory/berth/<id>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The controllers berth uses on this hierarchy (none on a named
    /// hierarchy such as `name=systemd`).
    pub fn controllers(&self) -> &[Controller] {
        &self.controllers
    }

    /// The hierarchy's name when it is a named v1 hierarchy (`systemd` for
    /// `name=systemd`); see [`Hierarchy::name`](crate::Hierarchy::name).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn dir(&self) -> Dir<'_> {
        match self.version {
            Version::V1 => Dir::V1(&self.path),
            Version::V2 => Dir::V2(&self.path),
        }
    }
}

/// A container's cgroup: one directory on each hierarchy that has a
/// controller berth uses, on each named v1 hierarchy (`name=systemd`:
/// processes only, no limits, as runc places them) and on the cgroup2
/// mount when there is one.
///
/// It serializes (serde) to the list of its directories, so that a later
/// process (`rm`, `stats`, `pause`) can get it back from the container's
/// record even when it runs in another cgroup than the one that created
/// it; [`Cgroup::open_at`] recomputes the same paths from the caller's own
/// cgroup instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    id: String,
    dirs: Vec<HierarchyDir>,
}

impl Cgroup {
    /// Create the cgroup at `path` on every hierarchy it needs (see
    /// [`open_at`](Self::open_at) for where that is). Missing parents are
    /// made; an existing directory is reused. On v1 cpuset the new cgroups
    /// get their parent's CPUs and memory nodes; on v2 the memory and pids
    /// controllers are enabled for it when that is allowed (other
    /// controllers when [`apply`](Self::apply) needs them). No process is
    /// moved. If making a directory fails, the ones made are removed.
    pub fn create_at(hierarchies: &Hierarchies, path: &str) -> Result<Self> {
        let cgroup = Self::open_at(hierarchies, path)?;
        cgroup.make_dirs()?;
        Ok(cgroup)
    }

    /// The cgroup at `path` on every hierarchy berth uses (named v1
    /// hierarchies included), without touching
    /// the filesystem. A path with a leading `/` is taken from each
    /// hierarchy's root (`/machine/c1`, as runc does with a cgroupfs
    /// `cgroupsPath`); a relative one from the caller's own cgroup in each
    /// hierarchy (`berth/c1` is `<own cgroup>/berth/c1`), so that the
    /// caller's cgroup stays in charge. `..`, `.` and NUL are refused, and
    /// so is systemd's `slice:prefix:name` form
    /// ([`CgroupError::SystemdPath`]).
    pub fn open_at(hierarchies: &Hierarchies, path: &str) -> Result<Self> {
        let place = path::parse(path)?;
        let mut dirs = Vec::new();
        for (index, hierarchy) in hierarchies.hierarchies().iter().enumerate() {
            let controllers: Vec<Controller> = Controller::ALL
                .into_iter()
                .filter(|&c| hierarchies.index_of(c) == Some(index))
                .collect();
            if hierarchy.version() == Version::V1
                && controllers.is_empty()
                && hierarchy.name().is_none()
            {
                continue;
            }
            let cgroup = if place.from_root {
                Path::new("/").join(&place.relative)
            } else {
                let own = hierarchy
                    .own_cgroup()
                    .ok_or_else(|| CgroupError::NoOwnCgroup {
                        mount_point: hierarchy.mount_point().to_owned(),
                    })?;
                own.join(&place.relative)
            };
            dirs.push(HierarchyDir {
                version: hierarchy.version(),
                mount_point: hierarchy.mount_point().to_owned(),
                path: hierarchy.dir_of(&cgroup)?,
                controllers,
                name: hierarchy.name().map(str::to_owned),
            });
        }
        Ok(Self {
            id: place.leaf,
            dirs,
        })
    }

    /// Create the cgroup of container `id`: `<own cgroup>/berth/<id>`, or
    /// `<parent>/<id>` when `parent` is given (`/a/b` from the hierarchy's
    /// root, `a/b` below the caller's own cgroup). As
    /// [`create_at`](Self::create_at) otherwise.
    pub fn create(hierarchies: &Hierarchies, id: &str, parent: Option<&str>) -> Result<Self> {
        Self::create_at(hierarchies, &child_path(id, parent)?)
    }

    /// The cgroup of container `id` as [`create`](Self::create) with the
    /// same arguments (and the same own cgroup) made it, without touching
    /// the filesystem.
    pub fn open(hierarchies: &Hierarchies, id: &str, parent: Option<&str>) -> Result<Self> {
        Self::open_at(hierarchies, &child_path(id, parent)?)
    }

    fn make_dirs(&self) -> Result<()> {
        let mut made: Vec<&Path> = Vec::new();
        for dir in &self.dirs {
            let existed = dir.path.is_dir();
            let result = make_dir(&dir.path).and_then(|()| {
                if dir.version == Version::V1 && dir.controllers.contains(&Controller::Cpuset) {
                    cpuset::inherit_v1(&dir.mount_point, &dir.path)?;
                }
                Ok(())
            });
            if !existed {
                made.push(&dir.path);
            }
            if let Err(first) = result {
                let cleanup = made
                    .iter()
                    .map(|path| processes::remove_tree(path))
                    .fold(Ok(()), Result::and);
                return Err(match cleanup {
                    Ok(()) => first,
                    Err(cleanup) => CgroupError::WithCleanup {
                        first: Box::new(first),
                        cleanup: Box::new(cleanup),
                    },
                });
            }
        }
        // For stats; limits that need them fail clearly in apply().
        for controller in [Controller::Memory, Controller::Pids] {
            if let Some(dir) = self.find(controller) {
                if dir.version == Version::V2 {
                    let _ = enable_v2(dir, controller);
                }
            }
        }
        Ok(())
    }

    /// The last component of the cgroup's path (the container id for
    /// [`create`](Self::create)).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The cgroup's directory on each hierarchy.
    pub fn dirs(&self) -> &[HierarchyDir] {
        &self.dirs
    }

    /// The directory on the hierarchy that has `controller`.
    pub fn path_of(&self, controller: Controller) -> Option<&Path> {
        self.find(controller).map(HierarchyDir::path)
    }

    fn find(&self, controller: Controller) -> Option<&HierarchyDir> {
        self.dirs
            .iter()
            .find(|d| d.controllers.contains(&controller))
    }

    fn unified_dir(&self) -> Option<&HierarchyDir> {
        self.dirs.iter().find(|d| d.version == Version::V2)
    }

    /// The directory for `controller`, its v2 controller enabled.
    fn writable(&self, controller: Controller) -> Result<&HierarchyDir> {
        let dir = self
            .find(controller)
            .ok_or(CgroupError::ControllerMissing { controller })?;
        if dir.version == Version::V2 && !controller.implicit_on_v2() {
            enable_v2(dir, controller)?;
        }
        Ok(dir)
    }

    /// Set the settings of `resources` that are present. Before anything is
    /// written, the values are checked, every controller they need must be
    /// there ([`CgroupError::ControllerMissing`] names it; net_cls and
    /// net_prio settings are skipped on a cgroup v2 only host, which has no
    /// such controllers), and a setting of one cgroup version only must find
    /// its controller on that version ([`CgroupError::NeedsVersion`]). A CPU
    /// or memory node the parent cgroup does not have is an error naming it.
    ///
    /// Device rules go where the devices controller is: on cgroup v1
    /// `devices.deny` `a` then each rule to `devices.allow` (the cgroup
    /// must have no child cgroups yet); on cgroup v2 a BPF device program
    /// attached to the cgroup (with `BPF_F_ALLOW_MULTI`: calling this again
    /// adds a program, and a device must then pass both). The `unified`
    /// files are written last.
    pub fn apply(&self, resources: &Resources) -> Result<()> {
        resources.check_against(
            |controller| self.find(controller).map(HierarchyDir::version),
            self.unified_dir().is_some(),
            self.is_v2_only(),
        )?;
        if resources.memory_limit.is_some() || resources.memory_swap.is_some() {
            memory::set_limit_and_swap(
                self.writable(Controller::Memory)?.dir(),
                resources.memory_limit,
                resources.memory_swap,
            )?;
        }
        if let Some(bytes) = resources.memory_reservation {
            memory::set_reservation(self.writable(Controller::Memory)?.dir(), bytes)?;
        }
        if let Some(swappiness) = resources.memory_swappiness {
            memory::set_swappiness(self.writable(Controller::Memory)?.dir(), swappiness)?;
        }
        if let Some(disable) = resources.oom_kill_disable {
            memory::set_oom_kill_disable(self.writable(Controller::Memory)?.dir(), disable)?;
        }
        if let Some(shares) = resources.cpu_shares {
            cpu::set_shares(self.writable(Controller::Cpu)?.dir(), shares)?;
        }
        if let Some(quota) = resources.cpu_quota {
            cpu::set_quota(self.writable(Controller::Cpu)?.dir(), quota)?;
        }
        if resources.wants_cpu_realtime() {
            cpu::set_realtime(
                self.writable(Controller::Cpu)?.dir(),
                resources.cpu_rt_runtime_us,
                resources.cpu_rt_period_us,
            )?;
        }
        if let Some(idle) = resources.cpu_idle {
            cpu::set_idle(self.writable(Controller::Cpu)?.dir(), idle)?;
        }
        for (list, kind) in [
            (&resources.cpuset_cpus, Kind::Cpus),
            (&resources.cpuset_mems, Kind::Mems),
        ] {
            if let Some(list) = list {
                let dir = self.writable(Controller::Cpuset)?;
                cpuset::set(dir.dir(), &dir.mount_point, kind, list)?;
            }
        }
        if let Some(max) = resources.pids_limit {
            pids::set_max(self.writable(Controller::Pids)?.dir(), max)?;
        }
        if let Some(block_io) = resources
            .block_io
            .as_ref()
            .filter(|b| **b != BlockIo::default())
        {
            blkio::set(self.writable(Controller::Blkio)?.dir(), block_io)?;
        }
        if !resources.hugepage_limits.is_empty() {
            hugetlb::set(
                self.writable(Controller::Hugetlb)?.dir(),
                &resources.hugepage_limits,
            )?;
        }
        if let (Some(class_id), Some(dir)) = (resources.net_class_id, self.find(Controller::NetCls))
        {
            net::set_class_id(&dir.path, class_id)?;
        }
        if let (false, Some(dir)) = (
            resources.net_priorities.is_empty(),
            self.find(Controller::NetPrio),
        ) {
            net::set_priorities(&dir.path, &resources.net_priorities)?;
        }
        if let Some(rules) = &resources.devices {
            devices::set_rules(self.writable(Controller::Devices)?.dir(), rules)?;
        }
        if !resources.unified.is_empty() {
            self.apply_unified(&resources.unified)?;
        }
        Ok(())
    }

    /// Whether every directory is on cgroup v2 (a unified host).
    fn is_v2_only(&self) -> bool {
        self.dirs.iter().all(|d| d.version == Version::V2)
    }

    /// Write cgroup v2 files as given, enabling the controller a file
    /// belongs to first when it is one of [`Controller`]'s. Multi-line
    /// values are written line by line (the kernel takes one line per write
    /// for files such as io.max).
    fn apply_unified(&self, unified: &BTreeMap<String, String>) -> Result<()> {
        let dir = self.unified_dir().ok_or(CgroupError::NeedsVersion {
            setting: "unified (cgroup v2) settings",
            version: Version::V2,
        })?;
        for (key, value) in unified {
            let prefix = key.split('.').next().unwrap_or_default();
            let controller = Controller::ALL
                .into_iter()
                .find(|c| c.v2_name() == Some(prefix));
            if let Some(controller) = controller {
                enable_v2(dir, controller)?;
            }
            let file = dir.path.join(key);
            if !file.exists() {
                return Err(CgroupError::KernelLacks {
                    setting: "unified (cgroup v2) setting",
                    path: file,
                });
            }
            if value.contains('\n') {
                for line in value.lines().filter(|l| !l.trim().is_empty()) {
                    fsio::write(&file, line)?;
                }
            } else {
                fsio::write(&file, value)?;
            }
        }
        Ok(())
    }

    /// Move process `pid` (with all its threads) into the cgroup on every
    /// hierarchy.
    pub fn add_task(&self, pid: libc::pid_t) -> Result<()> {
        let value = pid.to_string();
        for dir in &self.dirs {
            fsio::write(&dir.path.join("cgroup.procs"), &value)?;
        }
        Ok(())
    }

    /// The files through which a single-threaded process moves itself into
    /// this cgroup with [`join_self`]: `tasks` on v1, `cgroup.procs` on v2.
    ///
    /// Why a process should move itself: on v1, writing another process's
    /// PID to `cgroup.procs` takes the global cgroup_threadgroup_rwsem for
    /// writing, which waits for an RCU grace period (~10 ms per attach on
    /// this kind of host); a thread writing "0" (itself) to `tasks` skips
    /// that lock. For a single-threaded process, moving its one thread is
    /// moving the process.
    pub fn self_attach_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|dir| match dir.version {
                Version::V1 => dir.path.join("tasks"),
                Version::V2 => dir.path.join("cgroup.procs"),
            })
            .collect()
    }

    /// The cgroup's directory on the cgroup2 hierarchy, if it has one,
    /// opened `O_PATH` (it grants nothing but naming the directory): what
    /// clone3(2) with `CLONE_INTO_CGROUP` takes to start a child there.
    pub fn open_unified_dir(&self) -> Result<Option<OwnedFd>> {
        let Some(dir) = self.unified_dir() else {
            return Ok(None);
        };
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir.path)
            .map_err(|source| CgroupError::OpenDir {
                path: dir.path.clone(),
                source,
            })?;
        Ok(Some(opened.into()))
    }

    /// [`self_attach_files`](Self::self_attach_files) for a process that
    /// was born in the cgroup's cgroup2 directory (see
    /// [`open_unified_dir`](Self::open_unified_dir)): the cgroup v1 ones
    /// only.
    pub fn v1_self_attach_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .filter(|dir| dir.version == Version::V1)
            .map(|dir| dir.path.join("tasks"))
            .collect()
    }

    /// [`add_task`](Self::add_task) on the cgroup v1 hierarchies only, for
    /// a process that was born in the cgroup's cgroup2 directory.
    pub fn add_task_v1(&self, pid: libc::pid_t) -> Result<()> {
        let value = pid.to_string();
        for dir in self.dirs.iter().filter(|dir| dir.version == Version::V1) {
            fsio::write(&dir.path.join("cgroup.procs"), &value)?;
        }
        Ok(())
    }
}

/// `<parent or berth>/<id>`, the id checked to be one component.
fn child_path(id: &str, parent: Option<&str>) -> Result<String> {
    path::validate_name(id)?;
    let parent = parent.unwrap_or(BERTH_CGROUP);
    if parent.is_empty() {
        return Err(CgroupError::InvalidName {
            name: parent.to_owned(),
            reason: "it is empty",
        });
    }
    Ok(format!("{}/{id}", parent.trim_end_matches('/')))
}

/// Enable `controller` for the children of every cgroup from the v2 mount
/// down to `dir`'s parent, where it is not yet enabled.
fn enable_v2(dir: &HierarchyDir, controller: Controller) -> Result<()> {
    let (Some(parent), Some(name)) = (dir.path.parent(), controller.v2_name()) else {
        return Ok(());
    };
    for level in fsio::chain(&dir.mount_point, parent) {
        let file = level.join("cgroup.subtree_control");
        if read_controller_list(&file)?.iter().any(|c| c == name) {
            continue;
        }
        let value = format!("+{name}");
        match fsio::write_raw(&file, &value) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(CgroupError::SubtreeControlBusy {
                    controller,
                    path: file,
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(CgroupError::ControllerNotDelegated {
                    controller,
                    path: level.join("cgroup.controllers"),
                })
            }
            Err(source) => {
                return Err(CgroupError::Write {
                    path: file,
                    value,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// mkdir -p, retried when another berth removes the shared parent between
/// our mkdirs (an empty `berth` parent may be cleaned up at any time).
fn make_dir(path: &Path) -> Result<()> {
    let mut attempts = 0;
    loop {
        match fs::create_dir_all(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => attempts += 1,
            Err(source) => {
                return Err(CgroupError::CreateDir {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
}

/// Move the calling (single-threaded) process into a cgroup through the
/// files [`Cgroup::self_attach_files`] returned, by writing "0" (itself).
pub fn join_self(files: &[PathBuf]) -> Result<()> {
    for file in files {
        fsio::write(file, "0")?;
    }
    Ok(())
}
