//! Placement by path and the OCI runtime spec's resources against fake
//! cgroup trees (no root needed): which file gets which value, on cgroup v1
//! (a v1 only host, and the v1 side of this hybrid host), on cgroup v2, and
//! what is refused where.
//!
//! A fake file keeps only the last value written to it; where the kernel
//! takes one line per write (io.max, blkio.throttle.*), each line is
//! applied and checked on its own.

use std::collections::BTreeMap;
use std::fs;

use berth_cgroup::{
    BlockIo, Cgroup, CgroupError, Controller, CpuQuota, DeviceRate, DeviceWeight, HugepageLimit,
    NetPriority, Resources, SwapLimit, Version,
};

mod fake;
use fake::*;

/// The kernel makes these files when it makes a cgroup; a fake tree needs
/// them written where the code checks that they exist.
fn kernel_files(fake: &Fake, dir: &str, names: &[&str]) {
    for name in names {
        fake.write(&format!("{dir}/{name}"), "");
    }
}

fn unified_dirs(cgroup: &Cgroup) -> Vec<&std::path::Path> {
    cgroup
        .dirs()
        .iter()
        .filter(|d| d.version() == Version::V2)
        .map(|d| d.path())
        .collect()
}

#[test]
fn create_at_relative_is_below_the_own_cgroup_of_each_hierarchy() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let cgroup = Cgroup::create_at(&h, "ctrs/c1").unwrap();
    assert_eq!(cgroup.id(), "c1");
    // berth's own memory cgroup is /process_api/abc; at the root elsewhere.
    assert_eq!(
        cgroup.path_of(Controller::Memory).unwrap(),
        fake.path("sys/fs/cgroup/memory/process_api/abc/ctrs/c1")
    );
    assert_eq!(
        cgroup.path_of(Controller::Blkio).unwrap(),
        fake.path("sys/fs/cgroup/blkio/ctrs/c1")
    );
    assert_eq!(
        unified_dirs(&cgroup),
        [fake.path("sys/fs/cgroup/unified/ctrs/c1")]
    );
    for dir in cgroup.dirs() {
        assert!(dir.path().is_dir(), "{}", dir.path().display());
    }
    assert_eq!(Cgroup::open_at(&h, "ctrs/c1").unwrap(), cgroup);
    // create/open(id, parent) are the same placement.
    assert_eq!(Cgroup::open(&h, "c1", Some("ctrs")).unwrap(), cgroup);
    assert_eq!(
        Cgroup::open(&h, "c1", None).unwrap(),
        Cgroup::open_at(&h, "berth/c1").unwrap()
    );
}

#[test]
fn create_at_absolute_is_from_each_hierarchy_root() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let cgroup = Cgroup::create_at(&h, "/machine/c1").unwrap();
    assert_eq!(
        cgroup.path_of(Controller::Memory).unwrap(),
        fake.path("sys/fs/cgroup/memory/machine/c1")
    );
    assert_eq!(
        cgroup.path_of(Controller::Pids).unwrap(),
        fake.path("sys/fs/cgroup/pids/machine/c1")
    );
    assert!(fake.path("sys/fs/cgroup/unified/machine/c1").is_dir());
    assert_eq!(Cgroup::open(&h, "c1", Some("/machine")).unwrap(), cgroup);
}

#[test]
fn bad_and_systemd_paths_are_refused_before_anything_is_made() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    for bad in ["", "/", "../escape", "a/../../b", "/a/./b", "a\0b"] {
        let err = Cgroup::create_at(&h, bad).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidName { .. }),
            "{bad:?}: {err}"
        );
    }
    let err = Cgroup::create_at(&h, "system.slice:berth:c1").unwrap_err();
    assert!(matches!(err, CgroupError::SystemdPath { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("only cgroupfs paths are supported"),
        "{err}"
    );
    for hierarchy in ["memory/process_api/abc", "pids", "unified"] {
        let dir = fake.path(&format!("sys/fs/cgroup/{hierarchy}"));
        let made: Vec<_> = fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name())
                    .collect()
            })
            .unwrap_or_default();
        assert!(made.is_empty(), "{hierarchy}: {made:?}");
    }
}

#[test]
fn memory_swap_reservation_swappiness_and_oom_on_v1() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    let dir = "sys/fs/cgroup/memory/process_api/abc/c1";
    kernel_files(&fake, dir, &["memory.memsw.limit_in_bytes"]);
    let resources = Resources {
        memory_limit: Some(64 << 20),
        memory_swap: Some(SwapLimit::Total(96 << 20)),
        memory_reservation: Some(32 << 20),
        memory_swappiness: Some(10),
        oom_kill_disable: Some(true),
        ..Resources::default()
    };
    h.check(&resources).unwrap();
    cgroup.apply(&resources).unwrap();
    let read = |name: &str| fake.read(&format!("{dir}/{name}"));
    assert_eq!(read("memory.limit_in_bytes"), "67108864");
    // OCI's swap is memory+swap, as v1 takes it.
    assert_eq!(read("memory.memsw.limit_in_bytes"), "100663296");
    assert_eq!(read("memory.soft_limit_in_bytes"), "33554432");
    assert_eq!(read("memory.swappiness"), "10");
    assert_eq!(read("memory.oom_control"), "1");

    cgroup
        .apply(&Resources {
            memory_swap: Some(SwapLimit::Unlimited),
            oom_kill_disable: Some(false),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(read("memory.memsw.limit_in_bytes"), "-1");
    assert_eq!(read("memory.oom_control"), "0");
    // The memory limit was left alone.
    assert_eq!(read("memory.limit_in_bytes"), "67108864");
}

#[test]
fn swap_limit_without_swap_accounting() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    let dir = "sys/fs/cgroup/memory/process_api/abc/c1";
    // No memory.memsw.* files: the kernel does not account swap.
    let err = cgroup
        .apply(&Resources {
            memory_limit: Some(64 << 20),
            memory_swap: Some(SwapLimit::Total(96 << 20)),
            ..Resources::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::KernelLacks {
                setting: "swap limit",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("memory.memsw.limit_in_bytes"),
        "{err}"
    );
    // "No swap" and "unlimited swap" need nothing from the kernel.
    for swap in [SwapLimit::Total(64 << 20), SwapLimit::Unlimited] {
        cgroup
            .apply(&Resources {
                memory_limit: Some(64 << 20),
                memory_swap: Some(swap),
                ..Resources::default()
            })
            .unwrap();
    }
    assert_eq!(
        fake.read(&format!("{dir}/memory.limit_in_bytes")),
        "67108864"
    );
    assert!(!fake
        .path(&format!("{dir}/memory.memsw.limit_in_bytes"))
        .exists());
}

#[test]
fn memory_swap_and_reservation_on_v2() {
    let fake = unified_host("/");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/\n");
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    let dir = "sys/fs/cgroup/c1";
    kernel_files(&fake, dir, &["memory.swap.max"]);
    cgroup
        .apply(&Resources {
            memory_limit: Some(64 << 20),
            memory_swap: Some(SwapLimit::Total(96 << 20)),
            memory_reservation: Some(16 << 20),
            // cgroup v2 has neither: ignored, as runc does.
            memory_swappiness: Some(10),
            oom_kill_disable: Some(true),
            ..Resources::default()
        })
        .unwrap();
    let read = |name: &str| fake.read(&format!("{dir}/{name}"));
    assert_eq!(read("memory.max"), "67108864");
    // v2 limits swap alone: memory+swap minus memory.
    assert_eq!(read("memory.swap.max"), "33554432");
    assert_eq!(read("memory.low"), "16777216");
    assert!(!fake.path(&format!("{dir}/memory.swappiness")).exists());
    assert!(!fake.path(&format!("{dir}/memory.oom_control")).exists());
    assert_eq!(fake.read("sys/fs/cgroup/cgroup.subtree_control"), "+memory");

    cgroup
        .apply(&Resources {
            memory_limit: Some(64 << 20),
            memory_swap: Some(SwapLimit::Unlimited),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(read("memory.swap.max"), "max");
    cgroup
        .apply(&Resources {
            memory_limit: Some(64 << 20),
            memory_swap: Some(SwapLimit::Total(64 << 20)),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(read("memory.swap.max"), "0");

    // Without swap accounting only "no swap" and "unlimited" pass.
    fs::remove_file(fake.path(&format!("{dir}/memory.swap.max"))).unwrap();
    let err = cgroup
        .apply(&Resources {
            memory_limit: Some(64 << 20),
            memory_swap: Some(SwapLimit::Total(65 << 20)),
            ..Resources::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("memory.swap.max"), "{err}");
    cgroup
        .apply(&Resources {
            memory_limit: Some(64 << 20),
            memory_swap: Some(SwapLimit::Total(64 << 20)),
            ..Resources::default()
        })
        .unwrap();
}

#[test]
fn invalid_values_are_refused_before_anything_is_written() {
    let fake = unified_host("/");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/\n");
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    let cases = [
        Resources {
            memory_limit: Some(64 << 20),
            memory_swap: Some(SwapLimit::Total(32 << 20)),
            ..Resources::default()
        },
        Resources {
            memory_limit: Some(64 << 20),
            memory_swappiness: Some(101),
            ..Resources::default()
        },
        Resources {
            memory_limit: Some(64 << 20),
            block_io: Some(BlockIo {
                weight: Some(5),
                ..BlockIo::default()
            }),
            ..Resources::default()
        },
        Resources {
            memory_limit: Some(64 << 20),
            unified: BTreeMap::from([("../memory.max".to_owned(), "1".to_owned())]),
            ..Resources::default()
        },
    ];
    for resources in cases {
        let err = cgroup.apply(&resources).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidValue { .. }),
            "{resources:?}: {err}"
        );
        assert!(h.check(&resources).is_err());
        assert!(!fake.path("sys/fs/cgroup/c1/memory.max").exists());
    }
}

#[test]
fn cpu_period_realtime_and_idle_on_v1() {
    let fake = full_v1_host();
    let h = fake.discover(FULL_V1_MOUNTS, FULL_V1_OWN);
    let cgroup = Cgroup::create_at(&h, "/c1").unwrap();
    let dir = "sys/fs/cgroup/cpu,cpuacct/c1";
    kernel_files(
        &fake,
        dir,
        &["cpu.rt_runtime_us", "cpu.rt_period_us", "cpu.idle"],
    );
    let resources = Resources {
        cpu_quota: Some(CpuQuota {
            quota_us: 50_000,
            period_us: 250_000,
        }),
        cpu_rt_runtime_us: Some(20_000),
        cpu_rt_period_us: Some(500_000),
        cpu_idle: Some(true),
        ..Resources::default()
    };
    h.check(&resources).unwrap();
    cgroup.apply(&resources).unwrap();
    let read = |name: &str| fake.read(&format!("{dir}/{name}"));
    assert_eq!(read("cpu.cfs_period_us"), "250000");
    assert_eq!(read("cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu.rt_runtime_us"), "20000");
    assert_eq!(read("cpu.rt_period_us"), "500000");
    assert_eq!(read("cpu.idle"), "1");

    // A kernel without cpu.idle (before 5.15) is told, not ignored.
    fs::remove_file(fake.path(&format!("{dir}/cpu.idle"))).unwrap();
    let err = cgroup
        .apply(&Resources {
            cpu_idle: Some(false),
            ..Resources::default()
        })
        .unwrap_err();
    assert!(
        matches!(err, CgroupError::KernelLacks { .. }) && err.to_string().contains("cpu.idle"),
        "{err}"
    );
}

#[test]
fn cpu_on_v2_has_no_realtime_but_idle_and_any_period() {
    let fake = unified_host("/");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/\n");
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    let dir = "sys/fs/cgroup/c1";
    let realtime = Resources {
        cpu_shares: Some(512),
        cpu_rt_runtime_us: Some(10_000),
        ..Resources::default()
    };
    let err = h.check(&realtime).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::NeedsVersion {
                version: Version::V1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("real-time"), "{err}");
    assert!(cgroup.apply(&realtime).is_err());
    // Refused before the shares were written.
    assert!(!fake.path(&format!("{dir}/cpu.weight")).exists());

    kernel_files(&fake, dir, &["cpu.idle"]);
    cgroup
        .apply(&Resources {
            cpu_quota: Some(CpuQuota {
                quota_us: 20_000,
                period_us: 40_000,
            }),
            cpu_idle: Some(true),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(fake.read(&format!("{dir}/cpu.max")), "20000 40000");
    assert_eq!(fake.read(&format!("{dir}/cpu.idle")), "1");
}

#[test]
fn blkio_on_v1_with_cfq() {
    let fake = full_v1_host();
    let h = fake.discover(FULL_V1_MOUNTS, FULL_V1_OWN);
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    let dir = "sys/fs/cgroup/blkio/c1";
    kernel_files(
        &fake,
        dir,
        &[
            "blkio.weight",
            "blkio.weight_device",
            "blkio.leaf_weight",
            "blkio.leaf_weight_device",
        ],
    );
    cgroup
        .apply(&Resources {
            block_io: Some(BlockIo {
                weight: Some(300),
                leaf_weight: Some(200),
                device_weights: vec![DeviceWeight {
                    major: 8,
                    minor: 0,
                    weight: Some(500),
                    leaf_weight: Some(50),
                }],
                ..BlockIo::default()
            }),
            ..Resources::default()
        })
        .unwrap();
    let read = |name: &str| fake.read(&format!("{dir}/{name}"));
    assert_eq!(read("blkio.weight"), "300");
    assert_eq!(read("blkio.leaf_weight"), "200");
    assert_eq!(read("blkio.weight_device"), "8:0 500");
    assert_eq!(read("blkio.leaf_weight_device"), "8:0 50");
    assert!(!fake.path(&format!("{dir}/blkio.bfq.weight")).exists());

    let rate = DeviceRate {
        major: 8,
        minor: 16,
        rate: 1 << 20,
    };
    for (file, block_io) in [
        (
            "blkio.throttle.read_bps_device",
            BlockIo {
                throttle_read_bps: vec![rate],
                ..BlockIo::default()
            },
        ),
        (
            "blkio.throttle.write_bps_device",
            BlockIo {
                throttle_write_bps: vec![rate],
                ..BlockIo::default()
            },
        ),
        (
            "blkio.throttle.read_iops_device",
            BlockIo {
                throttle_read_iops: vec![rate],
                ..BlockIo::default()
            },
        ),
        (
            "blkio.throttle.write_iops_device",
            BlockIo {
                throttle_write_iops: vec![rate],
                ..BlockIo::default()
            },
        ),
    ] {
        cgroup
            .apply(&Resources {
                block_io: Some(block_io),
                ..Resources::default()
            })
            .unwrap();
        assert_eq!(read(file), "8:16 1048576", "{file}");
    }
}

#[test]
fn blkio_on_v1_with_bfq_and_without_weights() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    let dir = "sys/fs/cgroup/blkio/c1";
    let weights = Resources {
        block_io: Some(BlockIo {
            weight: Some(300),
            device_weights: vec![DeviceWeight {
                major: 8,
                minor: 0,
                weight: Some(700),
                leaf_weight: None,
            }],
            ..BlockIo::default()
        }),
        ..Resources::default()
    };
    // Neither CFQ nor BFQ files: the weight cannot be set.
    let err = cgroup.apply(&weights).unwrap_err();
    assert!(
        matches!(err, CgroupError::KernelLacks { .. }) && err.to_string().contains("blkio.weight"),
        "{err}"
    );
    // BFQ only, as on this host.
    kernel_files(&fake, dir, &["blkio.bfq.weight", "blkio.bfq.weight_device"]);
    cgroup.apply(&weights).unwrap();
    assert_eq!(fake.read(&format!("{dir}/blkio.bfq.weight")), "300");
    assert_eq!(
        fake.read(&format!("{dir}/blkio.bfq.weight_device")),
        "8:0 700"
    );
    // CFQ's leaf weight is not there with BFQ.
    let err = cgroup
        .apply(&Resources {
            block_io: Some(BlockIo {
                leaf_weight: Some(100),
                ..BlockIo::default()
            }),
            ..Resources::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("blkio.leaf_weight"), "{err}");
}

#[test]
fn io_on_v2_weights_and_max() {
    let fake = unified_host("/");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/\n");
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    let dir = "sys/fs/cgroup/c1";
    let read = |name: &str| fake.read(&format!("{dir}/{name}"));
    let weight = |weight| Resources {
        block_io: Some(BlockIo {
            weight: Some(weight),
            ..BlockIo::default()
        }),
        ..Resources::default()
    };
    // Without BFQ: io.weight, converted from 10..=1000 to 1..=10000.
    kernel_files(&fake, dir, &["io.weight"]);
    cgroup.apply(&weight(500)).unwrap();
    assert_eq!(read("io.weight"), "4950");
    assert_eq!(fake.read("sys/fs/cgroup/cgroup.subtree_control"), "+io");
    cgroup
        .apply(&Resources {
            block_io: Some(BlockIo {
                device_weights: vec![DeviceWeight {
                    major: 8,
                    minor: 0,
                    weight: Some(1000),
                    leaf_weight: None,
                }],
                ..BlockIo::default()
            }),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(read("io.weight"), "8:0 10000");
    // With BFQ: io.bfq.weight, as given.
    kernel_files(&fake, dir, &["io.bfq.weight"]);
    cgroup.apply(&weight(500)).unwrap();
    assert_eq!(read("io.bfq.weight"), "500");
    assert_eq!(read("io.weight"), "8:0 10000");

    for (line, block_io) in [
        (
            "8:16 rbps=1048576",
            BlockIo {
                throttle_read_bps: vec![DeviceRate {
                    major: 8,
                    minor: 16,
                    rate: 1 << 20,
                }],
                ..BlockIo::default()
            },
        ),
        (
            "8:16 wbps=2048",
            BlockIo {
                throttle_write_bps: vec![DeviceRate {
                    major: 8,
                    minor: 16,
                    rate: 2048,
                }],
                ..BlockIo::default()
            },
        ),
        (
            "8:16 riops=100",
            BlockIo {
                throttle_read_iops: vec![DeviceRate {
                    major: 8,
                    minor: 16,
                    rate: 100,
                }],
                ..BlockIo::default()
            },
        ),
        // 0 lifts the limit, as on v1.
        (
            "8:16 wiops=max",
            BlockIo {
                throttle_write_iops: vec![DeviceRate {
                    major: 8,
                    minor: 16,
                    rate: 0,
                }],
                ..BlockIo::default()
            },
        ),
    ] {
        cgroup
            .apply(&Resources {
                block_io: Some(block_io),
                ..Resources::default()
            })
            .unwrap();
        assert_eq!(read("io.max"), line);
    }

    let leaf = Resources {
        block_io: Some(BlockIo {
            leaf_weight: Some(100),
            ..BlockIo::default()
        }),
        ..Resources::default()
    };
    for err in [
        h.check(&leaf).unwrap_err(),
        cgroup.apply(&leaf).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                CgroupError::NeedsVersion {
                    version: Version::V1,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn hugetlb_on_v2_of_a_hybrid_host_and_on_v1() {
    // This host binds hugetlb to cgroup2.
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    assert_eq!(h.placement(Controller::Hugetlb), Some(Version::V2));
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    let dir = "sys/fs/cgroup/unified/c1";
    kernel_files(
        &fake,
        dir,
        &["hugetlb.2MB.max", "hugetlb.2MB.rsvd.max", "hugetlb.1GB.max"],
    );
    cgroup
        .apply(&Resources {
            hugepage_limits: vec![
                HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 8 << 20,
                },
                HugepageLimit {
                    page_size: "1GB".into(),
                    limit: 0,
                },
            ],
            ..Resources::default()
        })
        .unwrap();
    let read = |name: &str| fake.read(&format!("{dir}/{name}"));
    assert_eq!(read("hugetlb.2MB.max"), "8388608");
    assert_eq!(read("hugetlb.2MB.rsvd.max"), "8388608");
    assert_eq!(read("hugetlb.1GB.max"), "0");
    // No rsvd file for 1GB pages (an older kernel): none made.
    assert!(!fake.path(&format!("{dir}/hugetlb.1GB.rsvd.max")).exists());
    assert_eq!(
        fake.read("sys/fs/cgroup/unified/cgroup.subtree_control"),
        "+hugetlb"
    );
    // A page size this machine does not have.
    let err = cgroup
        .apply(&Resources {
            hugepage_limits: vec![HugepageLimit {
                page_size: "16MB".into(),
                limit: 1,
            }],
            ..Resources::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("hugetlb.16MB.max"), "{err}");

    let fake = full_v1_host();
    let h = fake.discover(FULL_V1_MOUNTS, FULL_V1_OWN);
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    let dir = "sys/fs/cgroup/hugetlb/c1";
    kernel_files(
        &fake,
        dir,
        &[
            "hugetlb.2MB.limit_in_bytes",
            "hugetlb.2MB.rsvd.limit_in_bytes",
        ],
    );
    cgroup
        .apply(&Resources {
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(
        fake.read(&format!("{dir}/hugetlb.2MB.limit_in_bytes")),
        "4194304"
    );
    assert_eq!(
        fake.read(&format!("{dir}/hugetlb.2MB.rsvd.limit_in_bytes")),
        "4194304"
    );
}

fn network() -> Resources {
    Resources {
        net_class_id: Some(0x100001),
        net_priorities: vec![NetPriority {
            interface: "eth0".into(),
            priority: 5,
        }],
        ..Resources::default()
    }
}

#[test]
fn network_class_and_priorities_on_v1() {
    let fake = full_v1_host();
    let h = fake.discover(FULL_V1_MOUNTS, FULL_V1_OWN);
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    h.check(&network()).unwrap();
    cgroup.apply(&network()).unwrap();
    let dir = "sys/fs/cgroup/net_cls,net_prio/c1";
    assert_eq!(fake.read(&format!("{dir}/net_cls.classid")), "1048577");
    assert_eq!(fake.read(&format!("{dir}/net_prio.ifpriomap")), "eth0 5");
}

#[test]
fn network_settings_are_skipped_on_v2_only_and_missing_on_hybrid() {
    let fake = unified_host("/");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/\n");
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    h.check(&network()).unwrap();
    cgroup.apply(&network()).unwrap();
    assert!(!fake.path("sys/fs/cgroup/c1/net_cls.classid").exists());

    // This hybrid host has v1 controllers but no net_cls mount.
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    for err in [
        h.check(&network()).unwrap_err(),
        cgroup.apply(&network()).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                CgroupError::ControllerMissing {
                    controller: Controller::NetCls
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn missing_blkio_and_hugetlb_are_named() {
    let h = Fake::new().discover(LEGACY_MOUNTS, LEGACY_OWN);
    for (resources, missing) in [
        (
            Resources {
                block_io: Some(BlockIo {
                    weight: Some(100),
                    ..BlockIo::default()
                }),
                ..Resources::default()
            },
            Controller::Blkio,
        ),
        (
            Resources {
                hugepage_limits: vec![HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 0,
                }],
                ..Resources::default()
            },
            Controller::Hugetlb,
        ),
    ] {
        let err = h.check(&resources).unwrap_err();
        assert!(
            matches!(err, CgroupError::ControllerMissing { controller } if controller == missing),
            "{err}"
        );
        let err = Cgroup::open_at(&h, "c1")
            .unwrap()
            .apply(&resources)
            .unwrap_err();
        assert!(
            matches!(err, CgroupError::ControllerMissing { controller } if controller == missing),
            "{err}"
        );
    }
}

#[test]
fn unified_files_on_v2_and_hybrid_but_not_v1_only() {
    let fake = unified_host("/");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/\n");
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    let dir = "sys/fs/cgroup/c1";
    kernel_files(&fake, dir, &["memory.high", "io.max", "cgroup.max.depth"]);
    let unified = BTreeMap::from([
        ("memory.high".to_owned(), "50000000".to_owned()),
        // One line per write; the fake file keeps the last.
        ("io.max".to_owned(), "8:0 rbps=1\n8:16 wbps=2\n".to_owned()),
        ("cgroup.max.depth".to_owned(), "3".to_owned()),
    ]);
    let resources = Resources {
        unified,
        ..Resources::default()
    };
    h.check(&resources).unwrap();
    cgroup.apply(&resources).unwrap();
    assert_eq!(fake.read(&format!("{dir}/memory.high")), "50000000");
    assert_eq!(fake.read(&format!("{dir}/io.max")), "8:16 wbps=2");
    assert_eq!(fake.read(&format!("{dir}/cgroup.max.depth")), "3");
    // The files' controllers were enabled for the cgroup (in key order, io
    // then memory: the fake file keeps the last).
    assert_eq!(fake.read("sys/fs/cgroup/cgroup.subtree_control"), "+memory");
    // A file the cgroup does not have.
    let err = cgroup
        .apply(&Resources {
            unified: BTreeMap::from([("memory.nonsense".to_owned(), "1".to_owned())]),
            ..Resources::default()
        })
        .unwrap_err();
    assert!(
        matches!(err, CgroupError::KernelLacks { .. })
            && err.to_string().contains("c1/memory.nonsense"),
        "{err}"
    );

    // Hybrid: the cgroup2 side of the cgroup.
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    kernel_files(
        &fake,
        "sys/fs/cgroup/unified/c1",
        &["cgroup.max.descendants"],
    );
    cgroup
        .apply(&Resources {
            unified: BTreeMap::from([("cgroup.max.descendants".to_owned(), "5".to_owned())]),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(
        fake.read("sys/fs/cgroup/unified/c1/cgroup.max.descendants"),
        "5"
    );

    // v1 only: refused.
    let fake = full_v1_host();
    let h = fake.discover(FULL_V1_MOUNTS, FULL_V1_OWN);
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    let resources = Resources {
        unified: BTreeMap::from([("memory.high".to_owned(), "1".to_owned())]),
        ..Resources::default()
    };
    for err in [
        h.check(&resources).unwrap_err(),
        cgroup.apply(&resources).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                CgroupError::NeedsVersion {
                    version: Version::V2,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn more_stats_v1_and_v2() {
    let fake = full_v1_host();
    let h = fake.discover(FULL_V1_MOUNTS, FULL_V1_OWN);
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    for (file, value) in [
        ("memory/c1/memory.usage_in_bytes", "4096"),
        ("memory/c1/memory.max_usage_in_bytes", "8192"),
        ("memory/c1/memory.limit_in_bytes", "1048576"),
        ("memory/c1/memory.failcnt", "7"),
        ("memory/c1/memory.memsw.usage_in_bytes", "12288"),
        ("cpu,cpuacct/c1/cpuacct.usage", "3000"),
        ("cpu,cpuacct/c1/cpuacct.usage_user", "2000"),
        ("cpu,cpuacct/c1/cpuacct.usage_sys", "1000"),
        ("pids/c1/pids.current", "2"),
        ("pids/c1/pids.max", "max"),
    ] {
        fake.write(&format!("sys/fs/cgroup/{file}"), &format!("{value}\n"));
    }
    let stats = cgroup.stats().unwrap();
    assert_eq!(
        (
            stats.memory_usage,
            stats.memory_max_usage,
            stats.memory_limit,
            stats.memory_limit_hits,
            stats.memory_swap_usage
        ),
        (Some(4096), Some(8192), Some(1 << 20), Some(7), Some(12288))
    );
    assert_eq!(
        (stats.cpu_usage_ns, stats.cpu_user_ns, stats.cpu_system_ns),
        (Some(3000), Some(2000), Some(1000))
    );
    assert_eq!((stats.pids_current, stats.pids_limit), (Some(2), None));

    let fake = unified_host("/");
    let h = fake.discover(UNIFIED_MOUNTINFO, "0::/\n");
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    for (file, value) in [
        ("memory.current", "4096"),
        ("memory.peak", "8192"),
        ("memory.max", "max"),
        ("memory.events", "low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n"),
        ("memory.swap.current", "100"),
        ("cpu.stat", "usage_usec 30\nuser_usec 20\nsystem_usec 10\n"),
        ("pids.current", "1"),
        ("pids.max", "64"),
    ] {
        fake.write(&format!("sys/fs/cgroup/c1/{file}"), &format!("{value}\n"));
    }
    let stats = cgroup.stats().unwrap();
    assert_eq!(
        (
            stats.memory_usage,
            stats.memory_max_usage,
            stats.memory_limit,
            stats.memory_limit_hits,
            stats.memory_swap_usage
        ),
        (Some(4096), Some(8192), None, Some(3), Some(4196))
    );
    assert_eq!(
        (stats.cpu_usage_ns, stats.cpu_user_ns, stats.cpu_system_ns),
        (Some(30_000), Some(20_000), Some(10_000))
    );
    assert_eq!((stats.pids_current, stats.pids_limit), (Some(1), Some(64)));
}

#[test]
fn processes_of_every_hierarchy_and_nested_cgroup() {
    let fake = hybrid_host();
    let h = fake.discover(HYBRID_MOUNTINFO, HYBRID_OWN);
    let cgroup = Cgroup::create_at(&h, "c1").unwrap();
    fake.write("sys/fs/cgroup/pids/c1/cgroup.procs", "30\n10\n");
    fake.write("sys/fs/cgroup/pids/c1/inner/cgroup.procs", "20\n");
    fake.write("sys/fs/cgroup/unified/c1/cgroup.procs", "10\n40\n");
    assert_eq!(cgroup.processes().unwrap(), [10, 20, 30, 40]);
    fake.write("sys/fs/cgroup/unified/c1/cgroup.procs", "x\n");
    let err = cgroup.processes().unwrap_err();
    assert!(err.to_string().contains("unified/c1/cgroup.procs"), "{err}");
}
