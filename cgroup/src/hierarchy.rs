//! Hierarchy discovery: which cgroup filesystems are mounted where, which
//! controller lives on which of them, and where the calling process sits in
//! each.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::controller::cpuset::{self, Kind};
use crate::controller::Dir;
use crate::error::{CgroupError, Result};
use crate::mountinfo::parse_mount_table;
use crate::resources::Resources;
use crate::{fsio, Controller, Layout, Version};

/// v1 controller names as they appear in mount options and /proc/self/cgroup.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "debug",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// How a named v1 hierarchy shows in mount options and /proc/self/cgroup.
const NAME_PREFIX: &str = "name=";

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    version: Version,
    mount_point: PathBuf,
    mount_root: PathBuf,
    controllers: Vec<String>,
    own_cgroup: Option<PathBuf>,
}

impl Hierarchy {
    /// cgroup v1 or v2.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Where the hierarchy is mounted, including the filesystem root prefix
    /// given to [`Hierarchies::discover`].
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// v1: the controllers named in the mount options (and `name=...` for a
    /// named hierarchy); v2: the content of `cgroup.controllers` at the
    /// mount, i.e. the controllers bound to v2.
    pub fn controllers(&self) -> &[String] {
        &self.controllers
    }

    /// The calling process's cgroup in this hierarchy, as in
    /// /proc/self/cgroup (e.g. `/user.slice/session-1.scope`).
    pub fn own_cgroup(&self) -> Option<&Path> {
        self.own_cgroup.as_deref()
    }

    /// The name of a named v1 hierarchy (`systemd` for a mount with
    /// `name=systemd`): a hierarchy that groups processes, with or without
    /// controllers. `None` for other hierarchies.
    pub fn name(&self) -> Option<&str> {
        self.controllers
            .iter()
            .find_map(|c| c.strip_prefix(NAME_PREFIX))
    }

    fn has(&self, name: &str) -> bool {
        self.controllers.iter().any(|c| c == name)
    }

    /// The directory of cgroup `cgroup` (a path inside the hierarchy, as in
    /// /proc/self/cgroup) on the mounted filesystem.
    pub fn dir_of(&self, cgroup: &Path) -> Result<PathBuf> {
        let not_reachable = || CgroupError::NotReachable {
            cgroup: cgroup.to_owned(),
            mount_point: self.mount_point.clone(),
        };
        let relative = cgroup
            .strip_prefix(&self.mount_root)
            .map_err(|_| not_reachable())?;
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(not_reachable());
        }
        Ok(self.mount_point.join(relative))
    }
}

/// All cgroup hierarchies of a host, and on which of them each controller
/// is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchies {
    layout: Layout,
    hierarchies: Vec<Hierarchy>,
    placement: BTreeMap<Controller, usize>,
}

impl Hierarchies {
    /// Discover the hierarchies of the running host, from
    /// /proc/self/mountinfo and /proc/self/cgroup.
    pub fn from_host() -> Result<Self> {
        let mountinfo = fsio::read(Path::new("/proc/self/mountinfo"))?;
        let own = fsio::read(Path::new("/proc/self/cgroup"))?;
        Self::discover(&mountinfo, &own, Path::new("/"))
    }

    /// Discover the hierarchies from the text of /proc/self/mountinfo (or
    /// /proc/self/mounts) and of /proc/self/cgroup. Every mount point is
    /// taken below `fs_root` (`/` on a real host, a temporary directory in
    /// tests); the cgroup2 mount's `cgroup.controllers` is read there.
    pub fn discover(mounts: &str, proc_self_cgroup: &str, fs_root: &Path) -> Result<Self> {
        let own = parse_proc_self_cgroup(proc_self_cgroup);
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for mount in parse_mount_table(mounts) {
            let version = match mount.fs_type.as_str() {
                "cgroup" => Version::V1,
                "cgroup2" => Version::V2,
                _ => continue,
            };
            let mount_point = under_root(fs_root, &mount.mount_point);
            let controllers: Vec<String> = match version {
                Version::V1 => mount
                    .options()
                    .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with(NAME_PREFIX))
                    .map(str::to_owned)
                    .collect(),
                Version::V2 => fsio::read_opt(&mount_point.join("cgroup.controllers"))?
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
            };
            // A v1 mount with neither a controller nor a name is one this
            // code does not know; named ones (`name=systemd`) are kept.
            if version == Version::V1 && controllers.is_empty() {
                continue;
            }
            let own_cgroup = own
                .iter()
                .find(|line| match version {
                    Version::V2 => line.id == "0" && line.controllers.is_empty(),
                    Version::V1 => line.controllers.iter().any(|c| controllers.contains(c)),
                })
                .map(|line| PathBuf::from(&line.path));
            let hierarchy = Hierarchy {
                version,
                mount_point,
                mount_root: mount.root,
                controllers,
                own_cgroup,
            };
            // The same hierarchy mounted twice (bind mounts): keep one,
            // preferring a mount of the whole hierarchy.
            if let Some(existing) = hierarchies.iter_mut().find(|h| {
                h.version == version
                    && (version == Version::V2 || h.controllers == hierarchy.controllers)
            }) {
                if existing.mount_root != Path::new("/") && hierarchy.mount_root == Path::new("/") {
                    *existing = hierarchy;
                }
                continue;
            }
            hierarchies.push(hierarchy);
        }

        let v2 = hierarchies.iter().position(|h| h.version == Version::V2);
        let v1_with_controllers = hierarchies.iter().any(|h| {
            h.version == Version::V1 && h.controllers.iter().any(|c| !c.starts_with(NAME_PREFIX))
        });
        let layout = match (v1_with_controllers, v2.is_some()) {
            (true, true) => Layout::Hybrid,
            (true, false) => Layout::Legacy,
            (false, true) => Layout::Unified,
            (false, false) => {
                return Err(CgroupError::NoCgroupFs {
                    source_name: "/proc/self/mountinfo".into(),
                })
            }
        };

        let mut placement = BTreeMap::new();
        for controller in Controller::ALL {
            let v1 = hierarchies
                .iter()
                .position(|h| h.version == Version::V1 && h.has(controller.name()));
            let on_v2 = v2.filter(|&i| {
                controller.implicit_on_v2()
                    || controller
                        .v2_name()
                        .is_some_and(|name| hierarchies[i].has(name))
            });
            if let Some(index) = v1.or(on_v2) {
                placement.insert(controller, index);
            }
        }
        Ok(Self {
            layout,
            hierarchies,
            placement,
        })
    }

    /// Unified, Legacy or Hybrid.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Every cgroup hierarchy mounted (named v1 hierarchies such as
    /// `name=systemd` included).
    pub fn hierarchies(&self) -> &[Hierarchy] {
        &self.hierarchies
    }

    /// The hierarchy that has `controller`: a v1 mount naming it, or the
    /// cgroup2 mount when the controller is bound to v2 (freezer, cpuacct
    /// and devices need no binding on v2: cgroup.freeze, cpu.stat and BPF
    /// device filters are always there).
    pub fn hierarchy_of(&self, controller: Controller) -> Option<&Hierarchy> {
        self.placement
            .get(&controller)
            .map(|&index| &self.hierarchies[index])
    }

    /// Which cgroup version `controller` is used with on this host, if any.
    pub fn placement(&self, controller: Controller) -> Option<Version> {
        self.hierarchy_of(controller).map(Hierarchy::version)
    }

    /// Check `resources` against this host before creating anything: the
    /// values must be valid, every controller they need must exist (as
    /// [`Cgroup::apply`] says), a setting of one cgroup version only must
    /// find its controller there, and the CPUs and memory nodes must be
    /// available to the caller's own cgroup. [`Cgroup::apply`] checks the
    /// same again (against the container's parent cgroup).
    ///
    /// [`Cgroup::apply`]: crate::Cgroup::apply
    pub fn check(&self, resources: &Resources) -> Result<()> {
        let has_v2 = self.hierarchies.iter().any(|h| h.version == Version::V2);
        resources.check_against(
            |controller| self.placement(controller),
            has_v2,
            self.layout == Layout::Unified,
        )?;
        for (list, kind) in [
            (&resources.cpuset_cpus, Kind::Cpus),
            (&resources.cpuset_mems, Kind::Mems),
        ] {
            let (Some(list), Some(hierarchy)) = (list, self.hierarchy_of(Controller::Cpuset))
            else {
                continue;
            };
            let own = hierarchy
                .own_cgroup()
                .ok_or_else(|| CgroupError::NoOwnCgroup {
                    mount_point: hierarchy.mount_point.clone(),
                })?;
            let own_dir = hierarchy.dir_of(own)?;
            let start = match hierarchy.version {
                Version::V1 => Dir::V1(&own_dir),
                Version::V2 => Dir::V2(&own_dir),
            };
            let (available, from) = cpuset::available(start, &hierarchy.mount_point, kind)?;
            cpuset::check(list, kind, &available, &from)?;
        }
        Ok(())
    }

    /// The cgroup2 hierarchy, if one is mounted (on a hybrid host, next
    /// to the v1 ones).
    pub fn unified(&self) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.version == Version::V2)
    }

    pub(crate) fn index_of(&self, controller: Controller) -> Option<usize> {
        self.placement.get(&controller).copied()
    }
}

fn under_root(fs_root: &Path, mount_point: &Path) -> PathBuf {
    fs_root.join(mount_point.strip_prefix("/").unwrap_or(mount_point))
}

struct OwnLine {
    id: String,
    controllers: Vec<String>,
    path: String,
}

/// /proc/self/cgroup: `N:controllers:/path` per v1 hierarchy, `0::/path`
/// for v2.
fn parse_proc_self_cgroup(text: &str) -> Vec<OwnLine> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.to_owned();
            let controllers = parts
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            let path = parts.next()?.trim_end().to_owned();
            Some(OwnLine {
                id,
                controllers,
                path,
            })
        })
        .collect()
}

/// Read the controllers a v2 cgroup offers to its children.
pub(crate) fn read_controller_list(path: &Path) -> Result<Vec<String>> {
    Ok(fsio::read_opt(path)?
        .unwrap_or_default()
        .split_whitespace()
        .map(|c| c.trim_start_matches('+').to_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_cgroup_lines() {
        let lines = parse_proc_self_cgroup("2:cpu,cpuacct:/a:b\n0::/\n");
        assert_eq!(lines[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(lines[0].path, "/a:b");
        assert!(lines[1].controllers.is_empty());
    }
}
