//! Discovery, create, apply, stats, freeze and remove against fake cgroup
//! trees in a temporary directory (no root needed).

use std::fs;
use std::path::{Path, PathBuf};

use berth_cgroup::{
    parse_cpu_list, Cgroup, CgroupError, Controller, CpuQuota, DeviceRule, Hierarchies, Layout,
    Resources, Version,
};

mod fake;
use fake::*;

#[test]
fn discovers_this_hybrid_host() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    assert_eq!(h.layout(), Layout::Hybrid);
    for controller in Controller::ALL {
        let expected = match controller {
            // Bound to cgroup2 on this host (its cgroup.controllers).
            Controller::Hugetlb => Some(Version::V2),
            // Not mounted at all.
            Controller::NetCls | Controller::NetPrio => None,
            _ => Some(Version::V1),
        };
        assert_eq!(h.placement(controller), expected, "{controller}");
    }
    assert_eq!(
        h.unified().unwrap().mount_point(),
        fake.path("sys/fs/cgroup/unified")
    );
    let memory = h.hierarchy_of(Controller::Memory).unwrap();
    assert_eq!(memory.mount_point(), fake.path("sys/fs/cgroup/memory"));
    assert_eq!(memory.own_cgroup(), Some(Path::new("/process_api/abc")));
    let unified = h
        .hierarchies()
        .iter()
        .find(|h| h.version() == Version::V2)
        .unwrap();
    assert_eq!(unified.controllers(), ["hugetlb"]);
    assert_eq!(unified.own_cgroup(), Some(Path::new("/")));
    // The named systemd hierarchy is listed, with the caller's place in it.
    let systemd = h
        .hierarchies()
        .iter()
        .find(|h| h.name() == Some("systemd"))
        .unwrap();
    assert_eq!(systemd.controllers(), ["name=systemd"]);
    assert_eq!(systemd.mount_point(), fake.path("sys/fs/cgroup/systemd"));
    assert_eq!(systemd.own_cgroup(), Some(Path::new("/")));
    assert_eq!(memory.name(), None);
}

#[test]
fn hybrid_host_with_controllers_bound_to_v2() {
    // pids and memory are not mounted as v1: they are bound to cgroup2.
    let fake = Fake::new();
    fake.write("sys/fs/cgroup/unified/cgroup.controllers", "memory pids\n");
    let mountinfo: String = HYBRID_MOUNTINFO
        .lines()
        .filter(|l| !l.contains("rw,pids") && !l.contains("rw,memory"))
        .map(|l| format!("{l}\n"))
        .collect();
    let h = fake.discover(&mountinfo, HYBRID_OWN);
    assert_eq!(h.layout(), Layout::Hybrid);
    assert_eq!(h.placement(Controller::Pids), Some(Version::V2));
    assert_eq!(h.placement(Controller::Memory), Some(Version::V2));
    assert_eq!(h.placement(Controller::Cpu), Some(Version::V1));
    assert_eq!(h.placement(Controller::Freezer), Some(Version::V1));

    let cgroup = Cgroup::create(&h, "c1", None).unwrap();
    cgroup
        .apply(&Resources {
            pids_limit: Some(10),
            memory_limit: Some(1 << 25),
            cpu_shares: Some(512),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(fake.read("sys/fs/cgroup/unified/berth/c1/pids.max"), "10");
    assert_eq!(
        fake.read("sys/fs/cgroup/unified/berth/c1/memory.max"),
        "33554432"
    );
    assert_eq!(fake.read("sys/fs/cgroup/cpu/berth/c1/cpu.shares"), "512");
    assert!(!fake.path("sys/fs/cgroup/pids/berth").exists());
    // The unified side got the controllers enabled from its root down.
    assert!(fake
        .read("sys/fs/cgroup/unified/berth/cgroup.subtree_control")
        .starts_with('+'));
    assert!(fake
        .read("sys/fs/cgroup/unified/cgroup.subtree_control")
        .starts_with('+'));
}

#[test]
fn discovers_legacy_host_from_proc_mounts() {
    let fake = Fake::new();
    let h = fake.discover(LEGACY_MOUNTS, LEGACY_OWN);
    assert_eq!(h.layout(), Layout::Legacy);
    let cpu = h.hierarchy_of(Controller::Cpu).unwrap();
    assert_eq!(cpu.mount_point(), fake.path("sys/fs/cgroup/cpu,cpuacct"));
    assert_eq!(cpu, h.hierarchy_of(Controller::Cpuacct).unwrap());
    assert_eq!(cpu.own_cgroup(), Some(Path::new("/user.slice")));
    assert_eq!(h.placement(Controller::Pids), None);
    assert_eq!(h.placement(Controller::Devices), None);
    assert_eq!(h.placement(Controller::Freezer), Some(Version::V1));
}

#[test]
fn discovers_unified_host() {
    let fake = unified_host("/user.slice/s.scope");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/user.slice/s.scope\n");
    assert_eq!(h.layout(), Layout::Unified);
    for controller in Controller::ALL {
        let expected = match controller {
            // Not in cgroup.controllers; net_cls and net_prio are v1 only.
            Controller::Hugetlb | Controller::NetCls | Controller::NetPrio => None,
            _ => Some(Version::V2),
        };
        assert_eq!(h.placement(controller), expected, "{controller}");
    }
    // A controller not bound to v2 is missing.
    fake.write("sys/fs/cgroup/cgroup.controllers", "memory pids\n");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/\n");
    assert_eq!(h.placement(Controller::Cpuset), None);
    assert_eq!(h.placement(Controller::Freezer), Some(Version::V2));
}

#[test]
fn no_cgroup_filesystem_is_an_error() {
    let err = Hierarchies::discover("proc /proc proc rw 0 0\n", "", Path::new("/nonexistent"))
        .unwrap_err();
    assert!(matches!(err, CgroupError::NoCgroupFs { .. }), "{err}");
}

#[test]
fn mount_of_a_subtree_and_escaped_mount_points() {
    // Inside a container: the hierarchy's /docker/x is mounted, with a
    // space in the mount point.
    let fake = Fake::new();
    let mountinfo =
        "40 31 0:32 /docker/x /sys/fs/cgroup/my\\040memory rw - cgroup cgroup rw,memory\n";
    let h = fake.discover(mountinfo, "4:memory:/docker/x\n");
    let memory = h.hierarchy_of(Controller::Memory).unwrap();
    assert_eq!(memory.mount_point(), fake.path("sys/fs/cgroup/my memory"));
    let cgroup = Cgroup::open(&h, "c1", None).unwrap();
    assert_eq!(
        cgroup.path_of(Controller::Memory).unwrap(),
        fake.path("sys/fs/cgroup/my memory/berth/c1")
    );
    // A parent outside the mounted subtree cannot be reached.
    let err = Cgroup::open(&h, "c1", Some("/elsewhere")).unwrap_err();
    assert!(matches!(err, CgroupError::NotReachable { .. }), "{err}");
}

#[test]
fn create_and_apply_on_hybrid_host_write_v1_files() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let cgroup = Cgroup::create(&h, "c1", None).unwrap();
    let memory = "sys/fs/cgroup/memory/process_api/abc/berth/c1";
    assert_eq!(
        cgroup.path_of(Controller::Memory).unwrap(),
        fake.path(memory)
    );
    // One directory per hierarchy with a controller of ours, plus unified
    // and the named systemd hierarchy.
    let made: Vec<PathBuf> = cgroup.dirs().iter().map(|d| d.path().to_owned()).collect();
    assert_eq!(made.len(), 10, "{made:?}");
    for dir in &made {
        assert!(dir.is_dir(), "{}", dir.display());
    }
    assert!(fake.path("sys/fs/cgroup/unified/berth/c1").is_dir());
    assert!(fake.path("sys/fs/cgroup/blkio/berth/c1").is_dir());
    let systemd = fake.path("sys/fs/cgroup/systemd/berth/c1");
    assert!(systemd.is_dir());
    let named: Vec<_> = cgroup
        .dirs()
        .iter()
        .filter(|d| d.name().is_some())
        .collect();
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].name(), Some("systemd"));
    assert_eq!(named[0].path(), systemd);
    assert!(named[0].controllers().is_empty());
    assert!(cgroup.self_attach_files().contains(&systemd.join("tasks")));
    // The kernel would create this one with mkdir; swap is accounted.
    fake.write(
        &format!("{memory}/memory.memsw.limit_in_bytes"),
        "9223372036854771712\n",
    );

    cgroup
        .apply(&Resources {
            memory_limit: Some(64 << 20),
            cpu_shares: Some(512),
            cpu_quota: Some(CpuQuota::from_cpus(0.5).unwrap()),
            cpuset_cpus: Some(parse_cpu_list("1-2").unwrap()),
            cpuset_mems: Some(parse_cpu_list("0").unwrap()),
            pids_limit: Some(10),
            devices: Some(DeviceRule::docker_defaults()),
            ..Resources::default()
        })
        .unwrap();
    // Deny all, then the allow rules one by one (the fake file keeps the
    // last); the v2 side gets no BPF program on this host.
    assert_eq!(
        fake.read("sys/fs/cgroup/devices/berth/c1/devices.deny"),
        "a"
    );
    assert_eq!(
        fake.read("sys/fs/cgroup/devices/berth/c1/devices.allow"),
        "c 136:* rwm"
    );
    assert_eq!(h.placement(Controller::Devices), Some(Version::V1));
    assert_eq!(
        fake.read(&format!("{memory}/memory.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(
        fake.read(&format!("{memory}/memory.memsw.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(fake.read("sys/fs/cgroup/cpu/berth/c1/cpu.shares"), "512");
    assert_eq!(
        fake.read("sys/fs/cgroup/cpu/berth/c1/cpu.cfs_period_us"),
        "100000"
    );
    assert_eq!(
        fake.read("sys/fs/cgroup/cpu/berth/c1/cpu.cfs_quota_us"),
        "50000"
    );
    assert_eq!(
        fake.read("sys/fs/cgroup/cpuset/berth/c1/cpuset.cpus"),
        "1-2"
    );
    assert_eq!(fake.read("sys/fs/cgroup/cpuset/berth/c1/cpuset.mems"), "0");
    assert_eq!(fake.read("sys/fs/cgroup/pids/berth/c1/pids.max"), "10");

    cgroup.add_task(4242).unwrap();
    for dir in &made {
        assert_eq!(
            fs::read_to_string(dir.join("cgroup.procs")).unwrap(),
            "4242"
        );
    }

    // Reopening from the same inputs finds the same directories.
    assert_eq!(Cgroup::open(&h, "c1", None).unwrap(), cgroup);
}

#[test]
fn memory_limit_without_swap_accounting() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let cgroup = Cgroup::create(&h, "c1", None).unwrap();
    cgroup
        .apply(&Resources {
            memory_limit: Some(1000 << 10),
            ..Resources::default()
        })
        .unwrap();
    let memory = "sys/fs/cgroup/memory/process_api/abc/berth/c1";
    assert_eq!(
        fake.read(&format!("{memory}/memory.limit_in_bytes")),
        "1024000"
    );
    assert!(!fake
        .path(&format!("{memory}/memory.memsw.limit_in_bytes"))
        .exists());
}

#[test]
fn v1_cpuset_cgroups_inherit_cpus_and_mems() {
    let fake = hybrid_host();
    // berth runs in /a on cpuset; /a has its own, narrower set.
    fake.write("sys/fs/cgroup/cpuset/a/cpuset.cpus", "2-3\n");
    fake.write("sys/fs/cgroup/cpuset/a/cpuset.mems", "\n");
    let own = HYBRID_OWN.replace("3:cpuset:/", "3:cpuset:/a");
    let h = fake.discover(HYBRID_MOUNTINFO, &own);
    Cgroup::create(&h, "c1", None).unwrap();
    assert_eq!(fake.read("sys/fs/cgroup/cpuset/a/berth/cpuset.cpus"), "2-3");
    assert_eq!(
        fake.read("sys/fs/cgroup/cpuset/a/berth/c1/cpuset.cpus"),
        "2-3"
    );
    // An empty level takes the nearest non-empty ancestor's value.
    assert_eq!(fake.read("sys/fs/cgroup/cpuset/a/cpuset.mems"), "0");
    assert_eq!(
        fake.read("sys/fs/cgroup/cpuset/a/berth/c1/cpuset.mems"),
        "0"
    );
}

#[test]
fn cpuset_is_checked_against_the_parent() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let cgroup = Cgroup::create(&h, "c1", None).unwrap();
    let err = cgroup
        .apply(&Resources {
            cpuset_cpus: Some(parse_cpu_list("0-2,99").unwrap()),
            ..Resources::default()
        })
        .unwrap_err();
    match &err {
        CgroupError::CpuUnavailable {
            kind,
            index,
            available,
            ..
        } => {
            assert_eq!((*kind, *index, available.as_str()), ("CPU", 99, "0-3"));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("CPU 99 is not available"), "{err}");
}

#[test]
fn create_and_apply_on_unified_host_enable_controllers() {
    let fake = unified_host("/user.slice/s.scope");
    // The root already hands out memory and pids.
    fake.write("sys/fs/cgroup/cgroup.subtree_control", "memory pids\n");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/user.slice/s.scope\n");
    let cgroup = Cgroup::create(&h, "c1", None).unwrap();
    assert_eq!(cgroup.dirs().len(), 1);
    let leaf = "sys/fs/cgroup/user.slice/s.scope/berth/c1";
    assert!(fake.path(leaf).is_dir());
    // Not rewritten where already enabled.
    assert_eq!(
        fake.read("sys/fs/cgroup/cgroup.subtree_control"),
        "memory pids\n"
    );

    fake.write(&format!("{leaf}/memory.swap.max"), "max\n");
    cgroup
        .apply(&Resources {
            memory_limit: Some(32 << 20),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(fake.read(&format!("{leaf}/memory.max")), "33554432");
    assert_eq!(fake.read(&format!("{leaf}/memory.swap.max")), "0");

    cgroup
        .apply(&Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(CpuQuota::from_cpus(1.5).unwrap()),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(fake.read(&format!("{leaf}/cpu.weight")), "20");
    assert_eq!(fake.read(&format!("{leaf}/cpu.max")), "150000 100000");
    // cpu was enabled at every level from the root to the berth cgroup
    // (a fake file keeps only the last write).
    for level in [
        "",
        "/user.slice",
        "/user.slice/s.scope",
        "/user.slice/s.scope/berth",
    ] {
        assert_eq!(
            fake.read(&format!("sys/fs/cgroup{level}/cgroup.subtree_control")),
            "+cpu",
            "{level}"
        );
    }

    cgroup
        .apply(&Resources {
            cpuset_cpus: Some(parse_cpu_list("3").unwrap()),
            pids_limit: Some(7),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(fake.read(&format!("{leaf}/cpuset.cpus")), "3");
    assert_eq!(fake.read(&format!("{leaf}/pids.max")), "7");
}

#[test]
fn cgroup_parent_absolute_and_relative() {
    let fake = unified_host("/user.slice/s.scope");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/user.slice/s.scope\n");
    let absolute = Cgroup::create(&h, "c1", Some("/mine/ctrs")).unwrap();
    assert_eq!(
        absolute.dirs()[0].path(),
        fake.path("sys/fs/cgroup/mine/ctrs/c1")
    );
    let relative = Cgroup::open(&h, "c1", Some("sub")).unwrap();
    assert_eq!(
        relative.dirs()[0].path(),
        fake.path("sys/fs/cgroup/user.slice/s.scope/sub/c1")
    );
    for bad in ["../up", "/a/../b", "a/./b", ""] {
        let err = Cgroup::open(&h, "c1", Some(bad)).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidName { .. }),
            "{bad}: {err}"
        );
    }
    for bad in ["", ".", "..", "a/b"] {
        let err = Cgroup::open(&h, bad, None).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidName { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn missing_controller_is_named() {
    let fake = Fake::new();
    let h = fake.discover(LEGACY_MOUNTS, LEGACY_OWN);
    let cgroup = Cgroup::create(&h, "c1", None).unwrap();
    let err = cgroup
        .apply(&Resources {
            pids_limit: Some(5),
            ..Resources::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::ControllerMissing {
                controller: Controller::Pids
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("no pids cgroup controller"),
        "{err}"
    );
}

#[test]
fn write_failure_names_the_file() {
    let fake = unified_host("/");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/\n");
    let cgroup = Cgroup::create(&h, "c1", None).unwrap();
    // A directory where the file should be: the write fails.
    fs::create_dir(fake.path("sys/fs/cgroup/berth/c1/pids.max")).unwrap();
    let err = cgroup
        .apply(&Resources {
            pids_limit: Some(5),
            ..Resources::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("berth/c1/pids.max"), "{err}");
}

#[test]
fn stats_and_oom_kills_v1() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let cgroup = Cgroup::create(&h, "c1", None).unwrap();
    let memory = "sys/fs/cgroup/memory/process_api/abc/berth/c1";
    fake.write(&format!("{memory}/memory.usage_in_bytes"), "4096\n");
    fake.write(
        &format!("{memory}/memory.limit_in_bytes"),
        "9223372036854771712\n",
    );
    fake.write(
        &format!("{memory}/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    fake.write(
        "sys/fs/cgroup/cpuacct/berth/c1/cpuacct.usage",
        "123456789\n",
    );
    fake.write("sys/fs/cgroup/pids/berth/c1/pids.current", "3\n");
    let stats = cgroup.stats().unwrap();
    assert_eq!(stats.memory_usage, Some(4096));
    assert_eq!(stats.memory_limit, None);
    assert_eq!(stats.cpu_usage_ns, Some(123_456_789));
    assert_eq!(stats.pids_current, Some(3));
    assert_eq!(cgroup.oom_kill_count().unwrap(), 2);
    fake.write(&format!("{memory}/memory.limit_in_bytes"), "1048576\n");
    assert_eq!(cgroup.stats().unwrap().memory_limit, Some(1 << 20));
}

#[test]
fn stats_and_oom_kills_v2() {
    let fake = unified_host("/");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/\n");
    let cgroup = Cgroup::create(&h, "c1", None).unwrap();
    let leaf = "sys/fs/cgroup/berth/c1";
    fake.write(&format!("{leaf}/memory.current"), "8192\n");
    fake.write(&format!("{leaf}/memory.max"), "max\n");
    fake.write(
        &format!("{leaf}/memory.events"),
        "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n",
    );
    fake.write(
        &format!("{leaf}/cpu.stat"),
        "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
    );
    let stats = cgroup.stats().unwrap();
    assert_eq!(stats.memory_usage, Some(8192));
    assert_eq!(stats.memory_limit, None);
    assert_eq!(stats.cpu_usage_ns, Some(2_500_000));
    assert_eq!(stats.pids_current, None);
    assert_eq!(cgroup.oom_kill_count().unwrap(), 1);
}

#[test]
fn freeze_and_thaw_v1_and_v2() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let cgroup = Cgroup::create(&h, "c1", None).unwrap();
    cgroup.freeze().unwrap();
    assert_eq!(
        fake.read("sys/fs/cgroup/freezer/berth/c1/freezer.state"),
        "FROZEN"
    );
    assert!(cgroup.is_frozen().unwrap());
    cgroup.thaw().unwrap();
    assert_eq!(
        fake.read("sys/fs/cgroup/freezer/berth/c1/freezer.state"),
        "THAWED"
    );

    let fake = unified_host("/");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/\n");
    let cgroup = Cgroup::create(&h, "c1", None).unwrap();
    let leaf = "sys/fs/cgroup/berth/c1";
    fake.write(&format!("{leaf}/cgroup.freeze"), "0\n");
    fake.write(&format!("{leaf}/cgroup.events"), "populated 1\nfrozen 1\n");
    cgroup.freeze().unwrap();
    assert_eq!(fake.read(&format!("{leaf}/cgroup.freeze")), "1");
    assert!(cgroup.is_frozen().unwrap());
    fake.write(&format!("{leaf}/cgroup.events"), "populated 1\nfrozen 0\n");
    cgroup.thaw().unwrap();
    assert_eq!(fake.read(&format!("{leaf}/cgroup.freeze")), "0");
}

#[test]
fn remove_tolerates_missing_cgroups_and_keeps_a_berth_parent_in_use() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    // Never created: nothing to do.
    Cgroup::open(&h, "ghost", None).unwrap().remove().unwrap();

    // Another container keeps the shared parent busy.
    let _other = Cgroup::create(&h, "c2", None).unwrap();
    let cgroup = Cgroup::create(&h, "c1", None).unwrap();
    // Real cgroupfs directories vanish with their files; fake ones need
    // emptying first.
    for dir in cgroup.dirs() {
        for entry in fs::read_dir(dir.path()).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
    }
    // A cgroup the container made below its own is removed too.
    fs::create_dir(fake.path("sys/fs/cgroup/pids/berth/c1/nested")).unwrap();
    // One hierarchy's directory is already gone, the named one's too.
    fs::remove_dir(fake.path("sys/fs/cgroup/cpu/berth/c1")).unwrap();
    fs::remove_dir(fake.path("sys/fs/cgroup/systemd/berth/c1")).unwrap();
    assert!(cgroup.processes().unwrap().is_empty());
    cgroup.remove().unwrap();
    for dir in cgroup.dirs() {
        assert!(!dir.path().exists(), "{}", dir.path().display());
        assert!(dir.path().parent().unwrap().is_dir());
    }
    // Twice is fine.
    cgroup.remove().unwrap();
}

#[test]
fn failed_create_leaves_nothing_behind() {
    let fake = hybrid_host();
    // The pids hierarchy's berth parent is a file: mkdir below it fails.
    fake.write("sys/fs/cgroup/pids/berth", "");
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let err = Cgroup::create(&h, "c1", None).unwrap_err();
    // (The fake cpuset directory cannot be removed: it holds the copied
    // cpuset files, which the kernel would drop with it.)
    assert!(err.to_string().contains("pids/berth/c1"), "{err}");
    assert!(!fake.path("sys/fs/cgroup/cpu/berth/c1").exists());
    assert!(!fake
        .path("sys/fs/cgroup/memory/process_api/abc/berth/c1")
        .exists());
}

#[test]
fn check_before_creating_anything() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let good = Resources {
        memory_limit: Some(1 << 20),
        cpuset_cpus: Some(parse_cpu_list("0-3").unwrap()),
        pids_limit: Some(3),
        ..Resources::default()
    };
    h.check(&good).unwrap();
    let bad = Resources {
        cpuset_cpus: Some(parse_cpu_list("2,7").unwrap()),
        ..Resources::default()
    };
    let err = h.check(&bad).unwrap_err();
    assert!(
        matches!(err, CgroupError::CpuUnavailable { index: 7, .. }),
        "{err}"
    );
    assert!(!fake.path("sys/fs/cgroup/cpuset/berth").exists());

    let legacy = Fake::new().discover(LEGACY_MOUNTS, LEGACY_OWN);
    let err = legacy
        .check(&Resources {
            pids_limit: Some(1),
            ..Resources::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::ControllerMissing {
                controller: Controller::Pids
            }
        ),
        "{err}"
    );

    // v2: a scope without cpuset files of its own; the root's set counts.
    let fake = unified_host("/user.slice/s.scope");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/user.slice/s.scope\n");
    h.check(&Resources {
        cpuset_cpus: Some(parse_cpu_list("3").unwrap()),
        ..Resources::default()
    })
    .unwrap();
    let err = h
        .check(&Resources {
            cpuset_mems: Some(parse_cpu_list("1").unwrap()),
            ..Resources::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("memory node 1"), "{err}");
}

#[test]
fn named_hierarchy_holds_the_processes_but_no_limits() {
    let fake = Fake::new();
    let h = fake.discover(LEGACY_MOUNTS, LEGACY_OWN);
    let systemd = h
        .hierarchies()
        .iter()
        .find(|h| h.name() == Some("systemd"))
        .unwrap();
    assert_eq!(
        systemd.own_cgroup(),
        Some(Path::new("/user.slice/session-1.scope"))
    );
    let cgroup = Cgroup::create(&h, "c1", None).unwrap();
    // Below the caller's own place in the named hierarchy, like the others.
    let parent = fake.path("sys/fs/cgroup/systemd/user.slice/session-1.scope/berth");
    let dir = parent.join("c1");
    assert!(dir.is_dir());
    assert!(cgroup
        .dirs()
        .iter()
        .any(|d| d.path() == dir && d.name() == Some("systemd") && d.version() == Version::V1));
    assert!(cgroup.self_attach_files().contains(&dir.join("tasks")));

    // Limits never go there: only the files of the controllers' dirs.
    cgroup
        .apply(&Resources {
            memory_limit: Some(1 << 25),
            cpu_shares: Some(512),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);

    cgroup.add_task(4242).unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("cgroup.procs")).unwrap(),
        "4242"
    );
    for other in cgroup.dirs() {
        fs::write(other.path().join("cgroup.procs"), "").unwrap();
    }
    fs::write(dir.join("cgroup.procs"), "4242\n").unwrap();
    assert_eq!(cgroup.processes().unwrap(), [4242]);

    // A record written before named hierarchies were joined still reads.
    let json = serde_json::to_string(&cgroup).unwrap();
    assert!(json.contains(r#""name":"systemd""#), "{json}");
    let old = json.replace(r#","name":"systemd""#, "");
    let old: Cgroup = serde_json::from_str(&old).unwrap();
    assert!(old.dirs().iter().all(|d| d.name().is_none()));
    assert_eq!(serde_json::from_str::<Cgroup>(&json).unwrap(), cgroup);

    // Fake cgroupfs directories need emptying before rmdir.
    for other in cgroup.dirs() {
        for entry in fs::read_dir(other.path()).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
    }
    cgroup.remove().unwrap();
    assert!(!dir.exists());
    assert!(
        parent.is_dir(),
        "the shared parent stays, as docker's /docker"
    );
    let removed = Cgroup::remove_empty_parent(&h).unwrap();
    assert!(removed.contains(&parent), "{removed:?}");
    assert!(!parent.exists(), "removed once asked and empty");
    assert!(Cgroup::remove_empty_parent(&h).unwrap().is_empty());
    assert!(fake
        .path("sys/fs/cgroup/systemd/user.slice/session-1.scope")
        .is_dir());
}
