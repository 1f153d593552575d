//! Fake cgroup trees in a temporary directory, and the mount tables of the
//! layouts they stand for (shared by the test files that use them).

#![allow(dead_code)] // Each test file uses a part.

use std::fs;
use std::path::PathBuf;

use berth_cgroup::Hierarchies;
use tempfile::TempDir;

/// A fake filesystem root.
pub struct Fake {
    root: TempDir,
}

impl Fake {
    pub fn new() -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative.trim_start_matches('/'))
    }

    pub fn write(&self, relative: &str, content: &str) {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    pub fn read(&self, relative: &str) -> String {
        let path = self.path(relative);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn discover(&self, mountinfo: &str, own: &str) -> Hierarchies {
        Hierarchies::discover(mountinfo, own, self.root.path()).unwrap()
    }
}

/// The mount table of the hybrid development host: one v1 mount per
/// controller, cgroup2 at /sys/fs/cgroup/unified.
pub const HYBRID_MOUNTINFO: &str = "\
23 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

pub const HYBRID_OWN: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/abc
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

/// A pure v1 host as /proc/self/mounts shows it, cpu and cpuacct combined.
pub const LEGACY_MOUNTS: &str = "\
tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,xattr,name=systemd 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,nosuid,nodev,noexec,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,nosuid,nodev,noexec,relatime,freezer 0 0
";

pub const LEGACY_OWN: &str = "\
5:freezer:/
4:cpuset:/
3:memory:/user.slice
2:cpu,cpuacct:/user.slice
1:name=systemd:/user.slice/session-1.scope
";

pub const UNIFIED_MOUNTINFO: &str =
    "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n";

pub fn hybrid_host() -> Fake {
    let fake = Fake::new();
    fake.write("sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n");
    fake.write("sys/fs/cgroup/cpuset/cpuset.cpus", "0-3\n");
    fake.write("sys/fs/cgroup/cpuset/cpuset.effective_cpus", "0-3\n");
    fake.write("sys/fs/cgroup/cpuset/cpuset.mems", "0\n");
    fake.write("sys/fs/cgroup/memory/process_api/abc/cgroup.procs", "1\n");
    fake
}

pub fn unified_host(own: &str) -> Fake {
    let fake = Fake::new();
    fake.write(
        "sys/fs/cgroup/cgroup.controllers",
        "cpuset cpu io memory pids\n",
    );
    fake.write("sys/fs/cgroup/cpuset.cpus.effective", "0-3\n");
    fake.write("sys/fs/cgroup/cpuset.mems.effective", "0\n");
    fs::create_dir_all(fake.path(&format!("sys/fs/cgroup{own}"))).unwrap();
    fake
}

/// A v1 only host with every controller berth uses, net_cls and net_prio
/// mounted together as systemd does; the caller sits at each root.
pub const FULL_V1_MOUNTS: &str = "\
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,cpuset 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,freezer 0 0
cgroup /sys/fs/cgroup/devices cgroup rw,devices 0 0
cgroup /sys/fs/cgroup/blkio cgroup rw,blkio 0 0
cgroup /sys/fs/cgroup/hugetlb cgroup rw,hugetlb 0 0
cgroup /sys/fs/cgroup/net_cls,net_prio cgroup rw,net_cls,net_prio 0 0
";

pub const FULL_V1_OWN: &str = "\
9:net_cls,net_prio:/
8:hugetlb:/
7:blkio:/
6:devices:/
5:freezer:/
4:pids:/
3:cpuset:/
2:memory:/
1:cpu,cpuacct:/
";

pub fn full_v1_host() -> Fake {
    let fake = Fake::new();
    fake.write("sys/fs/cgroup/cpuset/cpuset.cpus", "0-3\n");
    fake.write("sys/fs/cgroup/cpuset/cpuset.mems", "0\n");
    fake
}
