//! cpu: relative weight (v1 shares, v2 weight), the CFS quota, real-time
//! bandwidth (v1 only) and SCHED_IDLE for the whole cgroup.

use super::Dir;
use crate::error::{CgroupError, Result};
use crate::fsio;
use crate::resources::{shares_to_weight, CpuQuota};
use crate::Version;

pub(crate) fn set_shares(dir: Dir, shares: u64) -> Result<()> {
    match dir {
        Dir::V1(path) => fsio::write(&path.join("cpu.shares"), &shares.to_string()),
        Dir::V2(path) => fsio::write(
            &path.join("cpu.weight"),
            &shares_to_weight(shares).to_string(),
        ),
    }
}

pub(crate) fn set_quota(dir: Dir, quota: CpuQuota) -> Result<()> {
    match dir {
        Dir::V1(path) => {
            // The period first: the quota is checked against it.
            fsio::write(
                &path.join("cpu.cfs_period_us"),
                &quota.period_us.to_string(),
            )?;
            fsio::write(&path.join("cpu.cfs_quota_us"), &quota.quota_us.to_string())
        }
        Dir::V2(path) => fsio::write(
            &path.join("cpu.max"),
            &format!("{} {}", quota.quota_us, quota.period_us),
        ),
    }
}

/// v1 `cpu.rt_period_us` and `cpu.rt_runtime_us`. The kernel checks each
/// against the other (and the runtime against the parent's), so a period
/// it refuses is tried again after the runtime, as runc does.
pub(crate) fn set_realtime(
    dir: Dir,
    runtime_us: Option<i64>,
    period_us: Option<u64>,
) -> Result<()> {
    let Dir::V1(path) = dir else {
        return Err(CgroupError::NeedsVersion {
            setting: "cpu real-time runtime and period",
            version: Version::V1,
        });
    };
    let runtime_file = path.join("cpu.rt_runtime_us");
    let period_file = path.join("cpu.rt_period_us");
    for file in [&runtime_file, &period_file] {
        if !file.exists() {
            return Err(CgroupError::KernelLacks {
                setting: "cpu real-time runtime and period",
                path: file.clone(),
            });
        }
    }
    let mut period_pending = None;
    if let Some(period) = period_us {
        let value = period.to_string();
        match fsio::write_raw(&period_file, &value) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && runtime_us.is_some() => {
                period_pending = Some(value);
            }
            Err(source) => {
                return Err(CgroupError::Write {
                    path: period_file,
                    value,
                    source,
                })
            }
        }
    }
    if let Some(runtime) = runtime_us {
        fsio::write(&runtime_file, &runtime.to_string())?;
    }
    match period_pending {
        Some(value) => fsio::write(&period_file, &value),
        None => Ok(()),
    }
}

/// `cpu.idle` (kernel 5.15 or later, on v1 and v2).
pub(crate) fn set_idle(dir: Dir, idle: bool) -> Result<()> {
    let file = dir.path().join("cpu.idle");
    if !file.exists() {
        return Err(CgroupError::KernelLacks {
            setting: "cpu idle setting",
            path: file,
        });
    }
    fsio::write(&file, if idle { "1" } else { "0" })
}
