//! The processes of a cgroup: list, signal, freeze, and the removal that
//! kills them first.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{Cgroup, BERTH_CGROUP};
use crate::controller::freezer;
use crate::error::{CgroupError, Result};
use crate::{fsio, Controller, Hierarchies};

impl Cgroup {
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

    /// Every process in the cgroup and in the cgroups below it, on any
    /// hierarchy, in ascending order (for `ps` of a container); a cgroup
    /// that is gone has none.
    pub fn processes(&self) -> Result<Vec<libc::pid_t>> {
        let mut all = BTreeSet::new();
        for dir in &self.dirs {
            collect_pids(&dir.path, &mut all)?;
        }
        Ok(all.into_iter().collect())
    }

    /// Send `signal` to every process of the cgroup (and of the cgroups
    /// below it). SIGKILL goes through cgroup v2's `cgroup.kill` where the
    /// kernel has it (5.14 or later), which nothing can escape by forking.
    /// Otherwise the cgroup is frozen while each process is signalled, so
    /// that none forks in between, and thawed again unless it was frozen
    /// before (a paused container stays paused; after SIGKILL it is thawed
    /// so that its processes can die). Processes that are already gone
    /// are fine.
    pub fn kill_all(&self, signal: Signal) -> Result<()> {
        if signal == Signal::SIGKILL {
            if let Some(unified) = self.unified_dir() {
                let file = unified.path.join("cgroup.kill");
                if file.exists() {
                    return fsio::write(&file, "1");
                }
            }
        }
        if self.processes()?.is_empty() {
            return Ok(());
        }
        let was_frozen = self.is_frozen().unwrap_or(false);
        let froze = !was_frozen && self.freeze().is_ok();
        let result = self.signal_all(&self.processes()?, signal);
        if froze || (was_frozen && signal == Signal::SIGKILL) {
            self.thaw()?;
        }
        result
    }

    fn signal_all(&self, pids: &[libc::pid_t], signal: Signal) -> Result<()> {
        for &pid in pids {
            match kill(Pid::from_raw(pid), signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(source) => {
                    return Err(CgroupError::Kill {
                        pid,
                        path: self.first_path(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    fn first_path(&self) -> PathBuf {
        self.dirs
            .first()
            .map(|d| d.path.clone())
            .unwrap_or_default()
    }

    /// Kill whatever still runs in the cgroup, wait (at most 5 s) until it
    /// is empty, and remove its directory on every hierarchy, cgroups below
    /// it included. A cgroup that is already gone is fine. The shared
    /// `berth` parent stays, as docker's `/docker` does: making and removing
    /// it around every container cost each `run --rm` two cgroup mkdirs and
    /// an rmdir per hierarchy (about 27 syscalls on a v1 host, each cgroup
    /// mkdir allocating per-CPU state). [`Cgroup::remove_empty_parent`]
    /// removes it when nothing uses it.
    pub fn remove(&self) -> Result<()> {
        // By the time a container is removed its processes are usually
        // gone: then one rmdir per hierarchy is all there is to do, without
        // listing processes and child cgroups (twice each on cgroup v1).
        // rmdir refuses a cgroup that still has processes or children, so
        // the first refusal hands over to the full procedure below.
        if self.dirs.iter().all(|dir| remove_if_empty(&dir.path)) {
            return Ok(());
        }
        let kill_result = self.kill_all(Signal::SIGKILL);
        let emptied = fsio::wait_until(fsio::WAIT_LIMIT, || {
            let remaining = self.processes()?;
            if remaining.is_empty() {
                return Ok(true);
            }
            let _ = self.signal_all(&remaining, Signal::SIGKILL);
            Ok(false)
        })?;
        if !emptied {
            return Err(kill_result.err().unwrap_or(CgroupError::Timeout {
                what: "the cgroup to become empty",
                path: self.first_path(),
                seconds: fsio::WAIT_LIMIT.as_secs(),
            }));
        }
        let mut first_error = None;
        for dir in &self.dirs {
            if let Err(e) = remove_tree(&dir.path) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Remove the shared `berth` parent below the caller's own cgroup on
    /// every hierarchy where no container's cgroup is left in it (for
    /// `berth system prune` and test suites that leave a host as they found
    /// it); returns the directories removed. rmdir refuses a cgroup that
    /// still has children, so a concurrent container is safe, and its
    /// create makes the parent again if it just vanished.
    pub fn remove_empty_parent(hierarchies: &Hierarchies) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for dir in Self::open_at(hierarchies, BERTH_CGROUP)?.dirs {
            match fs::remove_dir(&dir.path) {
                Ok(()) => removed.push(dir.path),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EBUSY)) => {}
                Err(source) => {
                    return Err(CgroupError::RemoveDir {
                        path: dir.path,
                        source,
                    })
                }
            }
        }
        Ok(removed)
    }
}

/// rmdir `dir` if it has neither processes nor child cgroups; whether it
/// is gone now.
fn remove_if_empty(dir: &Path) -> bool {
    match fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
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

/// rmdir `dir` and any cgroups below it, deepest first; gone is fine, busy
/// (tasks still exiting) is retried for a while.
pub(super) fn remove_tree(dir: &Path) -> Result<()> {
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
