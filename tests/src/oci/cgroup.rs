//! Every container below this process's own cgroup: one parent cgroup
//! per client instance, checked and removed by the tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::SETTLE;
use crate::wait_until;

/// A cgroup path (the same on every hierarchy) below this process's own
/// cgroup, for one client instance to put its containers under. Dropping
/// it removes the whole subtree (it must be empty of processes by then).
#[derive(Debug)]
pub struct CgroupParent {
    path: String,
}

impl CgroupParent {
    /// `<own cgroup>/berth-<label>-<pid>-<n>`. Panics when this process's
    /// cgroups on the various hierarchies are not all on one path (then
    /// no single parent is below all of them).
    pub fn new(label: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let own = own_cgroup_path();
        let name = format!(
            "berth-{label}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        CgroupParent {
            path: format!("{}/{name}", own.trim_end_matches('/')),
        }
    }

    /// The absolute cgroup path (what `--cgroup-parent` gets).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// This cgroup's directory on every mounted hierarchy (existing or not).
    pub fn dirs(&self) -> Vec<PathBuf> {
        cgroup_mount_points()
            .into_iter()
            .map(|mount| mount.join(self.path.trim_start_matches('/')))
            .collect()
    }

    /// Every existing directory below this cgroup, on any hierarchy,
    /// deepest first.
    pub fn descendants(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for entry in entries.filter_map(Result::ok) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&entry.path(), out);
                    out.push(entry.path());
                }
            }
        }
        let mut out = Vec::new();
        for dir in self.dirs() {
            walk(&dir, &mut out);
        }
        out
    }

    /// Assert that every cgroup of process `pid` is this one or below it.
    pub fn assert_holds(&self, pid: i32) {
        let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"));
        let prefix = format!("{}/", self.path);
        for line in cgroups.lines() {
            let path = line.splitn(3, ':').nth(2).unwrap_or_default();
            assert!(
                path == self.path || path.starts_with(&prefix),
                "process {pid} is in {line:?}, not below {}:\n{cgroups}",
                self.path
            );
        }
    }

    /// Remove the subtree, deepest first; returns what could not be removed.
    pub fn remove(&self) -> Vec<String> {
        let mut failed = Vec::new();
        let mut dirs = self.descendants();
        dirs.extend(self.dirs().into_iter().filter(|d| d.is_dir()));
        for dir in dirs {
            if let Err(e) = fs::remove_dir(&dir) {
                failed.push(format!("cgroup {}: rmdir: {e}", dir.display()));
            }
        }
        failed
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        // A cgroup that still has processes cannot go: they get a moment
        // to exit (a container being killed).
        let mut failed = Vec::new();
        wait_until(SETTLE, || {
            failed = self.remove();
            failed.is_empty()
        });
    }
}

/// This process's cgroup path, valid on every hierarchy: the deepest of
/// the paths in /proc/self/cgroup, which must have every other one as an
/// ancestor (e.g. `/` on all but the memory hierarchy is fine).
fn own_cgroup_path() -> String {
    let cgroups = fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    let paths: Vec<&str> = cgroups
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .collect();
    let deepest = paths.iter().copied().max_by_key(|p| p.len()).unwrap_or("/");
    for path in &paths {
        let ancestor = *path == "/"
            || *path == deepest
            || deepest.starts_with(&format!("{}/", path.trim_end_matches('/')));
        assert!(
            ancestor,
            "this process's cgroups are not on one path ({path} vs {deepest}), so the \
             clients' single --cgroup-parent cannot be below all of them:\n{cgroups}"
        );
    }
    deepest.to_owned()
}

/// Mount points of the cgroup hierarchies (v1 and v2).
fn cgroup_mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fs_type = line.split(" - ").nth(1)?.split_whitespace().next()?;
            if fs_type != "cgroup" && fs_type != "cgroup2" {
                return None;
            }
            line.split(' ').nth(4).map(PathBuf::from)
        })
        .collect()
}
