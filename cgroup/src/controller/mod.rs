//! One module per controller, each with its cgroup v1 and v2 forms. The
//! seam between the two is [`Dir`]: the container's cgroup directory on the
//! hierarchy that has the controller, tagged with that hierarchy's version.

use std::path::Path;

pub(crate) mod blkio;
pub(crate) mod cpu;
pub(crate) mod cpuacct;
pub(crate) mod cpuset;
pub(crate) mod devices;
pub(crate) mod freezer;
pub(crate) mod hugetlb;
pub(crate) mod memory;
pub(crate) mod net;
pub(crate) mod pids;

/// A cgroup directory on a v1 or on the v2 hierarchy.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dir<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

impl<'a> Dir<'a> {
    pub(crate) fn path(self) -> &'a Path {
        match self {
            Dir::V1(path) | Dir::V2(path) => path,
        }
    }
}
