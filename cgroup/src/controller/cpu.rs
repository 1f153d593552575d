//! cpu: relative weight (v1 shares, v2 weight) and the CFS quota.

use super::Dir;
use crate::error::Result;
use crate::fsio;
use crate::resources::{shares_to_weight, CpuQuota};

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
