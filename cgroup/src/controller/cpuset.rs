//! cpuset: the CPUs and memory nodes a container may use.

use std::path::{Path, PathBuf};

use super::Dir;
use crate::cpu_list::CpuList;
use crate::error::{CgroupError, Result};
use crate::fsio;

/// CPUs or memory nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Cpus,
    Mems,
}

impl Kind {
    fn file(self) -> &'static str {
        match self {
            Kind::Cpus => "cpuset.cpus",
            Kind::Mems => "cpuset.mems",
        }
    }

    /// The files that say what a cgroup can really use, best first.
    fn effective_files(self, dir: Dir) -> [&'static str; 2] {
        match (dir, self) {
            (Dir::V1(_), Kind::Cpus) => ["cpuset.effective_cpus", "cpuset.cpus"],
            (Dir::V1(_), Kind::Mems) => ["cpuset.effective_mems", "cpuset.mems"],
            (Dir::V2(_), Kind::Cpus) => ["cpuset.cpus.effective", "cpuset.cpus"],
            (Dir::V2(_), Kind::Mems) => ["cpuset.mems.effective", "cpuset.mems"],
        }
    }

    pub(crate) fn noun(self) -> &'static str {
        match self {
            Kind::Cpus => "CPU",
            Kind::Mems => "memory node",
        }
    }
}

/// A new v1 cpuset cgroup starts with empty `cpuset.cpus` and `cpuset.mems`
/// and no task can join it: fill every empty one on the way from the
/// hierarchy's mount point down to `leaf` from its parent.
pub(crate) fn inherit_v1(mount_point: &Path, leaf: &Path) -> Result<()> {
    for kind in [Kind::Cpus, Kind::Mems] {
        let mut inherited: Option<String> = None;
        for dir in fsio::chain(mount_point, leaf) {
            let file = dir.join(kind.file());
            let value = fsio::read_opt(&file)?.unwrap_or_default();
            let value = value.trim();
            if !value.is_empty() {
                inherited = Some(value.to_owned());
            } else if let Some(parent_value) = &inherited {
                fsio::write(&file, parent_value)?;
            }
        }
    }
    Ok(())
}

/// What cgroup `start` offers to a child: its effective set, looking further
/// up (to `top`) where a level has none.
pub(crate) fn available(start: Dir, top: &Path, kind: Kind) -> Result<(CpuList, PathBuf)> {
    for ancestor in start.path().ancestors() {
        for name in kind.effective_files(start) {
            let file = ancestor.join(name);
            if let Some(text) = fsio::read_opt(&file)? {
                let list = CpuList::parse_kernel(&text).ok_or_else(|| CgroupError::Parse {
                    path: file.clone(),
                    content: text.clone(),
                })?;
                if !list.is_empty() {
                    return Ok((list, file));
                }
            }
        }
        if ancestor == top {
            break;
        }
    }
    Err(CgroupError::Read {
        path: top.join(kind.effective_files(start)[0]),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}

/// Check that `available` has every number of `list`.
pub(crate) fn check(list: &CpuList, kind: Kind, available: &CpuList, from: &Path) -> Result<()> {
    match list.first_missing_from(available) {
        Some(index) => Err(CgroupError::CpuUnavailable {
            kind: kind.noun(),
            index,
            available: available.to_string(),
            path: from.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Check `list` against what the parent offers, then write it.
pub(crate) fn set(dir: Dir, top: &Path, kind: Kind, list: &CpuList) -> Result<()> {
    let parent = dir.path().parent().unwrap_or(top);
    let parent = match dir {
        Dir::V1(_) => Dir::V1(parent),
        Dir::V2(_) => Dir::V2(parent),
    };
    let (available, from) = available(parent, top, kind)?;
    check(list, kind, &available, &from)?;
    fsio::write(&dir.path().join(kind.file()), &list.to_string())
}
