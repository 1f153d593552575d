//! hugetlb: limits on huge pages per page size (v1
//! `hugetlb.<size>.limit_in_bytes`, v2 `hugetlb.<size>.max`), and on the
//! pages reserved but not yet faulted in (`.rsvd`), where the kernel has
//! those (5.7 or later), so that a reservation cannot slip past the limit.

use super::Dir;
use crate::error::{CgroupError, Result};
use crate::fsio;
use crate::resources::HugepageLimit;

pub(crate) fn set(dir: Dir, limits: &[HugepageLimit]) -> Result<()> {
    for limit in limits {
        // The page size was validated: digits and KB/MB/GB, no path parts.
        let size = &limit.page_size;
        let (file, reserved) = match dir {
            Dir::V1(_) => (
                format!("hugetlb.{size}.limit_in_bytes"),
                format!("hugetlb.{size}.rsvd.limit_in_bytes"),
            ),
            Dir::V2(_) => (
                format!("hugetlb.{size}.max"),
                format!("hugetlb.{size}.rsvd.max"),
            ),
        };
        let file = dir.path().join(file);
        if !file.exists() {
            return Err(CgroupError::KernelLacks {
                setting: "huge page limit for that page size",
                path: file,
            });
        }
        let value = limit.limit.to_string();
        fsio::write(&file, &value)?;
        let reserved = dir.path().join(reserved);
        if reserved.exists() {
            fsio::write(&reserved, &value)?;
        }
    }
    Ok(())
}
