//! A container's cgroup across every hierarchy it needs.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::controller::cpuset::Kind;
use crate::controller::{cpu, cpuacct, cpuset, devices, freezer, memory, pids, Dir};
use crate::error::{CgroupError, Result};
use crate::hierarchy::{read_controller_list, Hierarchies};
use crate::resources::Resources;
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
}

impl HierarchyDir {
    /// The version of the hierarchy.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The container's cgroup directory, e.g.
    /// `/sys/fs/cgroup/memory/berth/<id>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The controllers berth uses on this hierarchy.
    pub fn controllers(&self) -> &[Controller] {
        &self.controllers
    }

    fn dir(&self) -> Dir<'_> {
        match self.version {
            Version::V1 => Dir::V1(&self.path),
            Version::V2 => Dir::V2(&self.path),
        }
    }
}

/// Memory, CPU and process counts of a cgroup. A field is `None` when the
/// host (or this cgroup) lacks the controller; `memory_limit` is also `None`
/// when there is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Memory in use, in bytes (page cache included, like the kernel counts).
    pub memory_usage: Option<u64>,
    /// The memory limit in bytes.
    pub memory_limit: Option<u64>,
    /// CPU time used, in nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    /// Number of tasks.
    pub pids_current: Option<u64>,
}

/// A container's cgroup: one directory on each hierarchy that has a
/// controller berth uses (and on the cgroup2 mount, when there is one).
///
/// It serializes (serde) to the list of its directories, so that a later
/// process (`berth rm`, `stats`, `pause`) can get it back from the
/// container's record even when it runs in another cgroup than the one that
/// created it; [`Cgroup::open`] recomputes the same paths from the caller's
/// own cgroup instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    id: String,
    dirs: Vec<HierarchyDir>,
}

impl Cgroup {
    /// Create the cgroup of container `id` on every hierarchy it needs:
    /// `<own cgroup>/berth/<id>`, or `<parent>/<id>` when `parent` is given
    /// (`/a/b` from the hierarchy's root, `a/b` below the caller's own
    /// cgroup). An existing directory is reused. On v1 cpuset the new
    /// cgroups get their parent's CPUs and memory nodes; on v2 the memory and
    /// pids controllers are enabled for it when that is allowed (other
    /// controllers when [`apply`](Self::apply) needs them). No process is
    /// moved.
    pub fn create(hierarchies: &Hierarchies, id: &str, parent: Option<&str>) -> Result<Self> {
        let cgroup = Self::open(hierarchies, id, parent)?;
        let mut made: Vec<&Path> = Vec::new();
        for dir in &cgroup.dirs {
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
                    .map(|path| remove_tree(path))
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
            if let Some(dir) = cgroup.find(controller) {
                if dir.version == Version::V2 {
                    let _ = enable_v2(dir, controller);
                }
            }
        }
        Ok(cgroup)
    }

    /// The cgroup of container `id` as [`create`](Self::create) with the
    /// same arguments (and the same own cgroup) made it, without touching
    /// the filesystem.
    pub fn open(hierarchies: &Hierarchies, id: &str, parent: Option<&str>) -> Result<Self> {
        validate_id(id)?;
        let parent = parent.map(validate_parent).transpose()?;
        let mut dirs = Vec::new();
        for (index, hierarchy) in hierarchies.hierarchies().iter().enumerate() {
            let controllers: Vec<Controller> = Controller::ALL
                .into_iter()
                .filter(|&c| hierarchies.index_of(c) == Some(index))
                .collect();
            if hierarchy.version() == Version::V1 && controllers.is_empty() {
                continue;
            }
            let own = hierarchy
                .own_cgroup()
                .ok_or_else(|| CgroupError::NoOwnCgroup {
                    mount_point: hierarchy.mount_point().to_owned(),
                })?;
            let base = match &parent {
                None => own.join(BERTH_CGROUP),
                Some(parent) if parent.is_absolute() => parent.clone(),
                Some(parent) => own.join(parent),
            };
            dirs.push(HierarchyDir {
                version: hierarchy.version(),
                mount_point: hierarchy.mount_point().to_owned(),
                path: hierarchy.dir_of(&base.join(id))?,
                controllers,
            });
        }
        Ok(Self {
            id: id.to_owned(),
            dirs,
        })
    }

    /// The container id this cgroup was made for.
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

    /// Set the limits of `resources` that are `Some`. A limit whose
    /// controller the host lacks is an error naming it, and a CPU or memory
    /// node the parent cgroup does not have is an error naming it.
    ///
    /// Device rules go where the devices controller is: on cgroup v1
    /// `devices.deny` `a` then each rule to `devices.allow` (the cgroup
    /// must have no child cgroups yet); on cgroup v2 a BPF device program
    /// attached to the cgroup (with `BPF_F_ALLOW_MULTI`: calling this again
    /// adds a program, and a device must then pass both).
    pub fn apply(&self, resources: &Resources) -> Result<()> {
        if let Some(bytes) = resources.memory_limit {
            memory::set_limit(self.writable(Controller::Memory)?.dir(), bytes)?;
        }
        if let Some(shares) = resources.cpu_shares {
            cpu::set_shares(self.writable(Controller::Cpu)?.dir(), shares)?;
        }
        if let Some(quota) = resources.cpu_quota {
            cpu::set_quota(self.writable(Controller::Cpu)?.dir(), quota)?;
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
        if let Some(rules) = &resources.devices {
            devices::set_rules(self.writable(Controller::Devices)?.dir(), rules)?;
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

    /// Freeze every process of the cgroup; returns once the kernel reports
    /// the cgroup frozen.
    pub fn freeze(&self) -> Result<()> {
        freezer::set_frozen(self.writable(Controller::Freezer)?.dir(), true)
    }

    /// Thaw the cgroup; returns once the kernel reports it thawed.
    pub fn thaw(&self) -> Result<()> {
        freezer::set_frozen(self.writable(Controller::Freezer)?.dir(), false)
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> Result<bool> {
        freezer::is_frozen(self.writable(Controller::Freezer)?.dir())
    }

    /// Memory, CPU and pids figures (see [`Stats`] for what `None` means).
    pub fn stats(&self) -> Result<Stats> {
        let with = |controller: Controller| self.find(controller).map(HierarchyDir::dir);
        let memory_dir = with(Controller::Memory);
        Ok(Stats {
            memory_usage: memory_dir.map(memory::usage).transpose()?.flatten(),
            memory_limit: memory_dir.map(memory::limit).transpose()?.flatten(),
            cpu_usage_ns: with(Controller::Cpuacct)
                .map(cpuacct::usage_ns)
                .transpose()?
                .flatten(),
            pids_current: with(Controller::Pids)
                .map(pids::current)
                .transpose()?
                .flatten(),
        })
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

    /// Every process in the cgroup (and in cgroups below it) on any
    /// hierarchy, in ascending order; a cgroup that is gone has none.
    pub fn pids(&self) -> Result<Vec<libc::pid_t>> {
        let mut all = BTreeSet::new();
        for dir in &self.dirs {
            collect_pids(&dir.path, &mut all)?;
        }
        Ok(all.into_iter().collect())
    }

    /// Kill whatever still runs in the cgroup, wait (at most 5 s) until it
    /// is empty, and remove its directory on every hierarchy. A cgroup that
    /// is already gone is fine; the shared `berth` parent stays.
    pub fn remove(&self) -> Result<()> {
        let kill_result = self.kill_all();
        let emptied = fsio::wait_until(fsio::WAIT_LIMIT, || {
            let remaining = self.pids()?;
            if remaining.is_empty() {
                return Ok(true);
            }
            let _ = self.signal_all(&remaining);
            Ok(false)
        })?;
        if !emptied {
            let first = kill_result.err().unwrap_or(CgroupError::Timeout {
                what: "the cgroup to become empty",
                path: self
                    .dirs
                    .first()
                    .map(|d| d.path.clone())
                    .unwrap_or_default(),
                seconds: fsio::WAIT_LIMIT.as_secs(),
            });
            return Err(first);
        }
        let mut first_error = None;
        for dir in &self.dirs {
            if let Err(e) = remove_tree(&dir.path) {
                first_error.get_or_insert(e);
            }
            // Leave no trace once the last container is gone: the shared
            // `berth` parent goes too when empty. rmdir refuses a cgroup
            // that still has children, so a concurrent container is safe
            // (and its create recreates the parent if it just vanished).
            if let Some(parent) = dir.path.parent().filter(|p| p.ends_with(BERTH_CGROUP)) {
                let _ = std::fs::remove_dir(parent);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// cgroup.kill where the kernel has it; otherwise freeze, SIGKILL every
    /// process, thaw (so that nothing forks while we kill).
    fn kill_all(&self) -> Result<()> {
        if let Some(unified) = self.dirs.iter().find(|d| d.version == Version::V2) {
            let file = unified.path.join("cgroup.kill");
            if file.exists() {
                return fsio::write(&file, "1");
            }
        }
        let pids = self.pids()?;
        if pids.is_empty() {
            return Ok(());
        }
        let frozen = self.freeze().is_ok();
        let result = self.signal_all(&self.pids()?);
        if frozen {
            self.thaw()?;
        }
        result
    }

    fn signal_all(&self, pids: &[libc::pid_t]) -> Result<()> {
        for &pid in pids {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(source) => {
                    return Err(CgroupError::Kill {
                        pid,
                        path: self
                            .dirs
                            .first()
                            .map(|d| d.path.clone())
                            .unwrap_or_default(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

/// Enable `controller` for the children of every cgroup from the v2 mount
/// down to `dir`'s parent, where it is not yet enabled.
fn enable_v2(dir: &HierarchyDir, controller: Controller) -> Result<()> {
    let Some(parent) = dir.path.parent() else {
        return Ok(());
    };
    for level in fsio::chain(&dir.mount_point, parent) {
        let file = level.join("cgroup.subtree_control");
        if read_controller_list(&file)?
            .iter()
            .any(|c| c == controller.name())
        {
            continue;
        }
        let value = format!("+{}", controller.name());
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

fn collect_pids(dir: &Path, all: &mut BTreeSet<libc::pid_t>) -> Result<()> {
    let file = dir.join("cgroup.procs");
    let Some(text) = fsio::read_opt(&file)? else {
        return Ok(());
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let pid = line.trim().parse().map_err(|_| CgroupError::Parse {
            path: file.clone(),
            content: line.to_owned(),
        })?;
        all.insert(pid);
    }
    for child in child_dirs(dir)? {
        collect_pids(&child, all)?;
    }
    Ok(())
}

fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_owned(),
                source,
            })
        }
    };
    Ok(entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect())
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

/// rmdir `dir` and any cgroups below it, deepest first; gone is fine, busy
/// (tasks still exiting) is retried for a while.
fn remove_tree(dir: &Path) -> Result<()> {
    for child in child_dirs(dir)? {
        remove_tree(&child)?;
    }
    let mut last_error = None;
    let removed = fsio::wait_until(fsio::WAIT_LIMIT, || match fs::remove_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            last_error = Some(e);
            Ok(false)
        }
        Err(source) => Err(CgroupError::RemoveDir {
            path: dir.to_owned(),
            source,
        }),
    })?;
    match (removed, last_error) {
        (true, _) => Ok(()),
        (false, source) => Err(CgroupError::RemoveDir {
            path: dir.to_owned(),
            source: source.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)),
        }),
    }
}

fn validate_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        Some("it is empty")
    } else if id == "." || id == ".." {
        Some("it is a relative directory name")
    } else if id.contains('/') || id.contains('\0') {
        Some("it contains '/' or NUL")
    } else if id.len() > 255 {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CgroupError::InvalidName {
            name: id.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn validate_parent(parent: &str) -> Result<PathBuf> {
    let invalid = |reason| CgroupError::InvalidName {
        name: parent.to_owned(),
        reason,
    };
    let path = PathBuf::from(parent);
    if parent.is_empty() || parent.contains('\0') {
        return Err(invalid("it is empty or contains NUL"));
    }
    if parent.split('/').any(|part| part == "." || part == "..")
        || path.components().any(|c| matches!(c, Component::Prefix(_)))
    {
        return Err(invalid("it contains '.' or '..'"));
    }
    Ok(path)
}

/// Move the calling (single-threaded) process into a cgroup through the
/// files [`Cgroup::self_attach_files`] returned, by writing "0" (itself).
pub fn join_self(files: &[PathBuf]) -> Result<()> {
    for file in files {
        fsio::write(file, "0")?;
    }
    Ok(())
}
