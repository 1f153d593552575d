//! What a container may use, and the parsers for the CLI's flags.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::controller::devices::DeviceRule;
use crate::error::{CgroupError, Result};
use crate::{Controller, CpuList, Version};

/// Resource limits for a container's cgroup; `None` (or an empty list)
/// leaves a setting alone. The settings follow the OCI runtime spec's
/// `linux.resources`, in cgroup v1 terms where the two versions differ;
/// [`Cgroup::apply`](crate::Cgroup::apply) converts them for cgroup v2 the
/// way runc and crun do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes. Without [`memory_swap`](Self::memory_swap)
    /// swap may not add to it (v1: memory+swap limit equal to it, v2: no
    /// swap), where the kernel accounts swap.
    pub memory_limit: Option<u64>,
    /// The limit of memory and swap together (v1
    /// `memory.memsw.limit_in_bytes`; v2 `memory.swap.max` gets the part
    /// above [`memory_limit`](Self::memory_limit)).
    #[serde(default)]
    pub memory_swap: Option<SwapLimit>,
    /// Memory the kernel tries to leave to the cgroup under pressure, in
    /// bytes (v1 `memory.soft_limit_in_bytes`, v2 `memory.low`).
    #[serde(default)]
    pub memory_reservation: Option<u64>,
    /// How eagerly the kernel swaps the cgroup's pages, 0..=100 (v1
    /// `memory.swappiness`; cgroup v2 has no such setting and ignores it,
    /// as runc does).
    #[serde(default)]
    pub memory_swappiness: Option<u64>,
    /// `Some(true)` stops the OOM killer for the cgroup: its tasks wait for
    /// memory instead (v1 `memory.oom_control`; cgroup v2 cannot do this
    /// and ignores it, as runc and docker do).
    #[serde(default)]
    pub oom_kill_disable: Option<bool>,
    /// Relative CPU weight in docker's "shares" (2..=262144, 1024 is the
    /// default); converted to `cpu.weight` on cgroup v2.
    pub cpu_shares: Option<u64>,
    /// Hard CPU cap: a quota per period (any period the kernel accepts).
    pub cpu_quota: Option<CpuQuota>,
    /// Real-time CPU time per real-time period, in microseconds; -1 is no
    /// limit (v1 `cpu.rt_runtime_us`; cgroup v2 has none: an error there).
    #[serde(default)]
    pub cpu_rt_runtime_us: Option<i64>,
    /// The real-time period in microseconds (v1 `cpu.rt_period_us`).
    #[serde(default)]
    pub cpu_rt_period_us: Option<u64>,
    /// Run the cgroup's tasks as SCHED_IDLE (`cpu.idle`, kernel 5.15 or
    /// later).
    #[serde(default)]
    pub cpu_idle: Option<bool>,
    /// CPUs the container may run on.
    pub cpuset_cpus: Option<CpuList>,
    /// Memory nodes the container may allocate from (same list syntax).
    pub cpuset_mems: Option<CpuList>,
    /// Maximum number of processes (and threads).
    pub pids_limit: Option<u64>,
    /// Block I/O weights and throttling.
    #[serde(default)]
    pub block_io: Option<BlockIo>,
    /// Huge page limits, one per page size.
    #[serde(default)]
    pub hugepage_limits: Vec<HugepageLimit>,
    /// The class id tagged onto the cgroup's network packets (v1
    /// `net_cls.classid`; skipped on a cgroup v2 only host, which has no
    /// such controller).
    #[serde(default)]
    pub net_class_id: Option<u32>,
    /// Network priorities per interface (v1 `net_prio.ifpriomap`; skipped
    /// on a cgroup v2 only host).
    #[serde(default)]
    pub net_priorities: Vec<NetPriority>,
    /// Device access: `Some(rules)` denies every device except what the
    /// rules allow (mknod included; [`DeviceRule::docker_defaults`] for a
    /// normal container), `None` leaves it as inherited (a privileged
    /// container).
    #[serde(default)]
    pub devices: Option<Vec<DeviceRule>>,
    /// cgroup v2 files to write as they are, file name to value (the OCI
    /// spec's `unified`), after every other setting. Refused on a host
    /// without cgroup v2. A file's controller is enabled for the cgroup
    /// first when it is one berth knows.
    #[serde(default)]
    pub unified: BTreeMap<String, String>,
}

/// A limit on memory plus swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapLimit {
    /// Memory and swap together may not exceed this many bytes (the OCI
    /// spec's `memory.swap`); equal to the memory limit means no swap. It
    /// needs a memory limit.
    Total(u64),
    /// Swap is not limited.
    Unlimited,
}

/// Block I/O settings (the OCI spec's `blockIO`). Weights are in cgroup
/// v1's range 10..=1000; on cgroup v2 they go to `io.bfq.weight` as they
/// are when the BFQ scheduler is there, else to `io.weight` converted to
/// its range 1..=10000 ([`blkio_weight_to_io_weight`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockIo {
    /// The cgroup's weight (v1 `blkio.weight` or `blkio.bfq.weight`).
    #[serde(default)]
    pub weight: Option<u16>,
    /// The weight of the cgroup's own tasks against its children (v1
    /// `blkio.leaf_weight`, CFQ only; cgroup v2 has none: an error there).
    #[serde(default)]
    pub leaf_weight: Option<u16>,
    /// Weights for single devices.
    #[serde(default)]
    pub device_weights: Vec<DeviceWeight>,
    /// Read bytes per second per device (v1 `blkio.throttle.read_bps_device`,
    /// v2 `io.max` `rbps`).
    #[serde(default)]
    pub throttle_read_bps: Vec<DeviceRate>,
    /// Written bytes per second per device (`wbps` on v2).
    #[serde(default)]
    pub throttle_write_bps: Vec<DeviceRate>,
    /// Read operations per second per device (`riops` on v2).
    #[serde(default)]
    pub throttle_read_iops: Vec<DeviceRate>,
    /// Write operations per second per device (`wiops` on v2).
    #[serde(default)]
    pub throttle_write_iops: Vec<DeviceRate>,
}

/// A block I/O weight for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceWeight {
    /// The device's major number.
    pub major: u32,
    /// The device's minor number.
    pub minor: u32,
    /// Its weight, 10..=1000.
    #[serde(default)]
    pub weight: Option<u16>,
    /// Its leaf weight, 10..=1000 (cgroup v1 with CFQ only).
    #[serde(default)]
    pub leaf_weight: Option<u16>,
}

/// A throttling rate for one device; 0 removes the device's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRate {
    /// The device's major number.
    pub major: u32,
    /// The device's minor number.
    pub minor: u32,
    /// Bytes or operations per second.
    pub rate: u64,
}

/// A limit on huge pages of one size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugepageLimit {
    /// The page size as the kernel names it in file names: `2MB`, `1GB`,
    /// `64KB`.
    pub page_size: String,
    /// The limit in bytes.
    pub limit: u64,
}

/// The network priority of the cgroup's traffic on one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPriority {
    /// The interface name (e.g. `eth0`).
    pub interface: String,
    /// The priority.
    pub priority: u32,
}

impl Resources {
    /// Check the values that have a fixed valid range or form.
    fn validate(&self) -> Result<()> {
        let invalid = |what: &'static str, input: String, reason: &str| {
            Err(CgroupError::InvalidValue {
                what,
                input,
                reason: reason.to_owned(),
            })
        };
        if let Some(SwapLimit::Total(total)) = self.memory_swap {
            match self.memory_limit {
                None => {
                    return invalid(
                        "memory+swap limit",
                        total.to_string(),
                        "it needs a memory limit as well",
                    )
                }
                Some(memory) if total < memory => {
                    return invalid(
                        "memory+swap limit",
                        total.to_string(),
                        &format!("it is below the memory limit {memory}"),
                    )
                }
                Some(_) => {}
            }
        }
        if let Some(swappiness) = self.memory_swappiness.filter(|&s| s > 100) {
            return invalid(
                "memory swappiness",
                swappiness.to_string(),
                "must be 0..=100",
            );
        }
        if let Some(block_io) = &self.block_io {
            let weights = [block_io.weight, block_io.leaf_weight]
                .into_iter()
                .chain(
                    block_io
                        .device_weights
                        .iter()
                        .flat_map(|d| [d.weight, d.leaf_weight]),
                )
                .flatten();
            for weight in weights {
                if !(10..=1000).contains(&weight) {
                    return invalid("block I/O weight", weight.to_string(), "must be 10..=1000");
                }
            }
        }
        for limit in &self.hugepage_limits {
            if !is_page_size(&limit.page_size) {
                return invalid(
                    "huge page size",
                    limit.page_size.clone(),
                    "expected a number and KB, MB or GB, e.g. 2MB",
                );
            }
        }
        for priority in &self.net_priorities {
            let name = &priority.interface;
            if name.is_empty()
                || name.len() > 15
                || name.contains(|c: char| c.is_whitespace() || c == '/' || c == '\0')
            {
                return invalid(
                    "network interface name",
                    name.clone(),
                    "must be 1 to 15 characters without spaces or '/'",
                );
            }
        }
        for key in self.unified.keys() {
            let reason = if key.is_empty() || key == "." || key == ".." {
                Some("it names no file")
            } else if key.contains('/') || key.contains('\0') {
                Some("it must be a file name in the cgroup's directory (no '/' or NUL)")
            } else if !key.contains('.') {
                Some("expected CONTROLLER.SETTING, e.g. memory.high")
            } else {
                None
            };
            if let Some(reason) = reason {
                return invalid("cgroup v2 file name", key.clone(), reason);
            }
        }
        Ok(())
    }

    /// Check the values, and the controllers they need against where a
    /// host or a cgroup has them (`placement`; `has_v2`: there is a cgroup
    /// v2 hierarchy; `v2_only`: there is nothing else), before anything is
    /// written.
    pub(crate) fn check_against(
        &self,
        placement: impl Fn(Controller) -> Option<Version>,
        has_v2: bool,
        v2_only: bool,
    ) -> Result<()> {
        self.validate()?;
        for controller in self.controllers() {
            // net_cls and net_prio do not exist on cgroup v2 (programs match
            // a cgroup by its path there): skipped, as runc does.
            let v1_only = matches!(controller, Controller::NetCls | Controller::NetPrio);
            if placement(controller).is_none() && !(v1_only && v2_only) {
                return Err(CgroupError::ControllerMissing { controller });
            }
        }
        if self.wants_cpu_realtime() && placement(Controller::Cpu) != Some(Version::V1) {
            return Err(CgroupError::NeedsVersion {
                setting: "cpu real-time runtime and period",
                version: Version::V1,
            });
        }
        if self.wants_leaf_weight() && placement(Controller::Blkio) != Some(Version::V1) {
            return Err(CgroupError::NeedsVersion {
                setting: "block I/O leaf weight",
                version: Version::V1,
            });
        }
        if !self.unified.is_empty() && !has_v2 {
            return Err(CgroupError::NeedsVersion {
                setting: "unified (cgroup v2) settings",
                version: Version::V2,
            });
        }
        Ok(())
    }

    /// The controllers the settings that are present need.
    fn controllers(&self) -> Vec<Controller> {
        let block_io = self.block_io.as_ref();
        let needs = [
            (
                self.memory_limit.is_some()
                    || self.memory_swap.is_some()
                    || self.memory_reservation.is_some()
                    || self.memory_swappiness.is_some()
                    || self.oom_kill_disable.is_some(),
                Controller::Memory,
            ),
            (
                self.cpu_shares.is_some()
                    || self.cpu_quota.is_some()
                    || self.cpu_rt_runtime_us.is_some()
                    || self.cpu_rt_period_us.is_some()
                    || self.cpu_idle.is_some(),
                Controller::Cpu,
            ),
            (
                self.cpuset_cpus.is_some() || self.cpuset_mems.is_some(),
                Controller::Cpuset,
            ),
            (self.pids_limit.is_some(), Controller::Pids),
            (
                block_io.is_some_and(|b| *b != BlockIo::default()),
                Controller::Blkio,
            ),
            (!self.hugepage_limits.is_empty(), Controller::Hugetlb),
            (self.net_class_id.is_some(), Controller::NetCls),
            (!self.net_priorities.is_empty(), Controller::NetPrio),
            (self.devices.is_some(), Controller::Devices),
        ];
        needs
            .into_iter()
            .filter_map(|(needed, controller)| needed.then_some(controller))
            .collect()
    }

    /// Whether a real-time CPU setting is present (cgroup v1 only).
    pub(crate) fn wants_cpu_realtime(&self) -> bool {
        self.cpu_rt_runtime_us.is_some() || self.cpu_rt_period_us.is_some()
    }

    /// Whether a block I/O leaf weight is present (cgroup v1 only).
    pub(crate) fn wants_leaf_weight(&self) -> bool {
        self.block_io.as_ref().is_some_and(|b| {
            b.leaf_weight.is_some() || b.device_weights.iter().any(|d| d.leaf_weight.is_some())
        })
    }
}

/// `2MB`, `1GB`, `64KB`: what the kernel puts into hugetlb file names.
fn is_page_size(text: &str) -> bool {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "KB" | "MB" | "GB")
}

/// A CFS bandwidth limit: `quota_us` of CPU time every `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuQuota {
    /// Microseconds of CPU time per period (over all CPUs).
    pub quota_us: u64,
    /// The period in microseconds.
    pub period_us: u64,
}

impl CpuQuota {
    /// The period docker and the kernel use by default: 100 ms.
    pub const DEFAULT_PERIOD_US: u64 = 100_000;

    /// The quota for `cpus` CPUs (e.g. 0.5) with the default period.
    pub fn from_cpus(cpus: f64) -> Result<Self> {
        let invalid = |reason: &str| CgroupError::InvalidValue {
            what: "CPU count",
            input: cpus.to_string(),
            reason: reason.to_owned(),
        };
        if !cpus.is_finite() || cpus <= 0.0 {
            return Err(invalid("must be a number greater than 0"));
        }
        let quota = (cpus * Self::DEFAULT_PERIOD_US as f64).round();
        // The kernel's minimum quota is 1 ms.
        if quota < 1000.0 {
            return Err(invalid("must be at least 0.01"));
        }
        if quota > u64::MAX as f64 / 2.0 {
            return Err(invalid("is too large"));
        }
        Ok(Self {
            quota_us: quota as u64,
            period_us: Self::DEFAULT_PERIOD_US,
        })
    }
}

/// Convert a cgroup v1 block I/O weight (10..=1000) to cgroup v2
/// `io.weight` (1..=10000), the way runc and crun do:
/// `1 + (weight - 10) * 9999 / 990`, the weight clamped to 10..=1000.
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    let weight = u64::from(weight.clamp(10, 1000));
    1 + (weight - 10) * 9999 / 990
}

/// Convert cgroup v1 `cpu.shares` to cgroup v2 `cpu.weight`, the way runc
/// and crun do: `1 + ((shares - 2) * 9999) / 262142`, shares clamped to
/// 2..=262144 so the weight stays in 1..=10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_weights_become_io_weights() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(0), 1);
        assert_eq!(blkio_weight_to_io_weight(u16::MAX), 10_000);
    }

    #[test]
    fn page_sizes() {
        for good in ["2MB", "1GB", "64KB", "16384KB"] {
            assert!(is_page_size(good), "{good}");
        }
        for bad in [
            "", "MB", "2mb", "2M", "2MB/..", "../2MB", "2 MB", "2MBB", "x2MB",
        ] {
            assert!(!is_page_size(bad), "{bad}");
        }
    }

    #[test]
    fn values_are_validated() {
        let with = |change: &dyn Fn(&mut Resources)| {
            let mut resources = Resources::default();
            change(&mut resources);
            resources.validate()
        };
        assert!(with(&|r| r.memory_swap = Some(SwapLimit::Total(1 << 20))).is_err());
        assert!(with(&|r| {
            r.memory_limit = Some(2 << 20);
            r.memory_swap = Some(SwapLimit::Total(1 << 20));
        })
        .is_err());
        with(&|r| {
            r.memory_limit = Some(2 << 20);
            r.memory_swap = Some(SwapLimit::Total(2 << 20));
        })
        .unwrap();
        with(&|r| r.memory_swap = Some(SwapLimit::Unlimited)).unwrap();
        assert!(with(&|r| r.memory_swappiness = Some(101)).is_err());
        with(&|r| r.memory_swappiness = Some(100)).unwrap();
        for weight in [9, 1001] {
            assert!(with(&|r| {
                r.block_io = Some(BlockIo {
                    device_weights: vec![DeviceWeight {
                        major: 8,
                        minor: 0,
                        weight: None,
                        leaf_weight: Some(weight),
                    }],
                    ..BlockIo::default()
                })
            })
            .is_err());
        }
        assert!(with(&|r| r.hugepage_limits = vec![HugepageLimit {
            page_size: "../x".into(),
            limit: 1
        }])
        .is_err());
        for bad in ["", "eth 0", "a/b", "sixteen-chars-xx"] {
            assert!(
                with(&|r| r.net_priorities = vec![NetPriority {
                    interface: bad.into(),
                    priority: 1
                }])
                .is_err(),
                "{bad}"
            );
        }
        for bad in ["", "..", "../memory.max", "memory", "a/b.c"] {
            let err = with(&|r| {
                r.unified.insert(bad.into(), "1".into());
            })
            .unwrap_err();
            assert!(
                err.to_string().contains("cgroup v2 file name"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn shares_become_weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(512), 20);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        // Out of range shares are clamped, not turned into invalid weights.
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(shares_to_weight(1 << 40), 10_000);
    }
}
