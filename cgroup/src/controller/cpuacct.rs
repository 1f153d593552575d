//! cpuacct: CPU time used (v1 cpuacct.usage; v2 `usage_usec` of cpu.stat,
//! which every v2 cgroup has).

use super::Dir;
use crate::error::Result;
use crate::fsio;

/// CPU time in nanoseconds; `None` if the cgroup has no such file.
pub(crate) fn usage_ns(dir: Dir) -> Result<Option<u64>> {
    match dir {
        Dir::V1(path) => fsio::read_u64_opt(&path.join("cpuacct.usage")),
        Dir::V2(path) => {
            let file = path.join("cpu.stat");
            match fsio::read_opt(&file)? {
                Some(text) => Ok(fsio::keyed_value(&file, &text, "usage_usec")?
                    .map(|usec| usec.saturating_mul(1000))),
                None => Ok(None),
            }
        }
    }
}
