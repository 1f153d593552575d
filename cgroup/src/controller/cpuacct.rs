//! cpuacct: CPU time used (v1 cpuacct.usage*; v2 cpu.stat, which every v2
//! cgroup has).

use super::Dir;
use crate::error::Result;
use crate::fsio;

/// CPU time in nanoseconds: in total, in user mode, in the kernel. A
/// figure is `None` when the cgroup has no file for it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuUsage {
    pub(crate) total_ns: Option<u64>,
    pub(crate) user_ns: Option<u64>,
    pub(crate) system_ns: Option<u64>,
}

pub(crate) fn usage(dir: Dir) -> Result<CpuUsage> {
    match dir {
        Dir::V1(path) => Ok(CpuUsage {
            total_ns: fsio::read_u64_opt(&path.join("cpuacct.usage"))?,
            user_ns: fsio::read_u64_opt(&path.join("cpuacct.usage_user"))?,
            system_ns: fsio::read_u64_opt(&path.join("cpuacct.usage_sys"))?,
        }),
        Dir::V2(path) => {
            let file = path.join("cpu.stat");
            let Some(text) = fsio::read_opt(&file)? else {
                return Ok(CpuUsage::default());
            };
            let usec = |key| -> Result<Option<u64>> {
                Ok(fsio::keyed_value(&file, &text, key)?.map(|usec| usec.saturating_mul(1000)))
            };
            Ok(CpuUsage {
                total_ns: usec("usage_usec")?,
                user_ns: usec("user_usec")?,
                system_ns: usec("system_usec")?,
            })
        }
    }
}
