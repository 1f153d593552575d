//! memory: limit, swap, reservation, swappiness, the OOM killer switch,
//! usage and OOM kills.

use std::path::Path;

use super::Dir;
use crate::error::{CgroupError, Result};
use crate::fsio;
use crate::resources::SwapLimit;

/// v1 reports "no limit" as PAGE_COUNTER_MAX pages, about 2^63; anything
/// this large is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// Set the memory limit and the limit of memory plus swap.
///
/// `swap` `None` with a limit: swap may not add to the limit, where the
/// kernel accounts swap at all. `Total(t)`: v1 `memory.memsw.limit_in_bytes`
/// is `t`; v2 `memory.swap.max` is `t - limit` (validated: a limit is given
/// and `t >= limit`). A swap limit the kernel cannot apply (no swap
/// accounting) is an error, except "no swap beyond the limit".
pub(crate) fn set_limit_and_swap(
    dir: Dir,
    limit: Option<u64>,
    swap: Option<SwapLimit>,
) -> Result<()> {
    match dir {
        Dir::V1(path) => set_v1(path, limit, swap),
        Dir::V2(path) => set_v2(path, limit, swap),
    }
}

fn set_v1(path: &Path, limit: Option<u64>, swap: Option<SwapLimit>) -> Result<()> {
    let limit_file = path.join("memory.limit_in_bytes");
    let memsw = path.join("memory.memsw.limit_in_bytes");
    let memsw_value = match (swap, limit) {
        (Some(SwapLimit::Unlimited), _) => Some(-1i128),
        (Some(SwapLimit::Total(total)), _) => Some(i128::from(total)),
        (None, Some(limit)) => Some(i128::from(limit)),
        (None, None) => None,
    };
    let memsw_value = match memsw_value {
        Some(_) if !memsw.exists() => {
            let harmless = match swap {
                None | Some(SwapLimit::Unlimited) => true,
                Some(SwapLimit::Total(total)) => Some(total) == limit,
            };
            if !harmless {
                return Err(CgroupError::KernelLacks {
                    setting: "swap limit",
                    path: memsw,
                });
            }
            None
        }
        other => other,
    };
    let write_limit = || match limit {
        Some(bytes) => fsio::write(&limit_file, &bytes.to_string()),
        None => Ok(()),
    };
    let Some(memsw_value) = memsw_value else {
        return write_limit();
    };
    // The kernel keeps memory.limit_in_bytes <= memory.memsw.limit_in_bytes
    // at every step: when the new memory+swap limit is at least the current
    // memory limit, it goes first; otherwise the memory limit does.
    let current_limit = fsio::read_u64_opt(&limit_file)?.unwrap_or(u64::MAX);
    let memsw_first = memsw_value < 0 || memsw_value >= i128::from(current_limit);
    let write_memsw = || fsio::write(&memsw, &memsw_value.to_string());
    if memsw_first {
        write_memsw()?;
        write_limit()
    } else {
        write_limit()?;
        write_memsw()
    }
}

fn set_v2(path: &Path, limit: Option<u64>, swap: Option<SwapLimit>) -> Result<()> {
    if let Some(bytes) = limit {
        fsio::write(&path.join("memory.max"), &bytes.to_string())?;
    }
    let swap_value = match (swap, limit) {
        (Some(SwapLimit::Unlimited), _) => "max".to_owned(),
        (Some(SwapLimit::Total(total)), Some(limit)) => total.saturating_sub(limit).to_string(),
        (None, Some(_)) => "0".to_owned(),
        (Some(SwapLimit::Total(_)), None) | (None, None) => return Ok(()),
    };
    let file = path.join("memory.swap.max");
    if file.exists() {
        fsio::write(&file, &swap_value)
    } else if swap_value == "0" || swap_value == "max" {
        // No swap accounting: nothing to hold back or to lift.
        Ok(())
    } else {
        Err(CgroupError::KernelLacks {
            setting: "swap limit",
            path: file,
        })
    }
}

/// The soft limit (v1) or protection (v2) in bytes.
pub(crate) fn set_reservation(dir: Dir, bytes: u64) -> Result<()> {
    let file = match dir {
        Dir::V1(path) => path.join("memory.soft_limit_in_bytes"),
        Dir::V2(path) => path.join("memory.low"),
    };
    fsio::write(&file, &bytes.to_string())
}

/// v1 only: cgroup v2 has no swappiness of its own.
pub(crate) fn set_swappiness(dir: Dir, swappiness: u64) -> Result<()> {
    match dir {
        Dir::V1(path) => fsio::write(&path.join("memory.swappiness"), &swappiness.to_string()),
        Dir::V2(_) => Ok(()),
    }
}

/// v1 only: cgroup v2 cannot turn the OOM killer off.
pub(crate) fn set_oom_kill_disable(dir: Dir, disable: bool) -> Result<()> {
    match dir {
        Dir::V1(path) => fsio::write(
            &path.join("memory.oom_control"),
            if disable { "1" } else { "0" },
        ),
        Dir::V2(_) => Ok(()),
    }
}

/// Current usage in bytes; `None` if the cgroup has no memory files.
pub(crate) fn usage(dir: Dir) -> Result<Option<u64>> {
    let file = match dir {
        Dir::V1(_) => "memory.usage_in_bytes",
        Dir::V2(_) => "memory.current",
    };
    fsio::read_u64_opt(&dir.path().join(file))
}

/// The highest usage seen, in bytes (v2: `memory.peak`, kernel 5.19 or
/// later); `None` where the kernel does not say.
pub(crate) fn max_usage(dir: Dir) -> Result<Option<u64>> {
    let file = match dir {
        Dir::V1(_) => "memory.max_usage_in_bytes",
        Dir::V2(_) => "memory.peak",
    };
    fsio::read_u64_opt(&dir.path().join(file))
}

/// How often usage hit the limit (v1 `memory.failcnt`, v2 `max` of
/// memory.events).
pub(crate) fn limit_hits(dir: Dir) -> Result<Option<u64>> {
    match dir {
        Dir::V1(path) => fsio::read_u64_opt(&path.join("memory.failcnt")),
        Dir::V2(path) => fsio::read_keyed_opt(&path.join("memory.events"), "max"),
    }
}

/// Memory plus swap in use, in bytes (v1 `memory.memsw.usage_in_bytes`; v2
/// `memory.current` plus `memory.swap.current`); `None` without swap
/// accounting.
pub(crate) fn swap_usage(dir: Dir) -> Result<Option<u64>> {
    match dir {
        Dir::V1(path) => fsio::read_u64_opt(&path.join("memory.memsw.usage_in_bytes")),
        Dir::V2(path) => {
            let swap = fsio::read_u64_opt(&path.join("memory.swap.current"))?;
            let memory = fsio::read_u64_opt(&path.join("memory.current"))?;
            Ok(swap.zip(memory).map(|(swap, memory)| swap + memory))
        }
    }
}

/// The limit in bytes; `None` when there is none.
pub(crate) fn limit(dir: Dir) -> Result<Option<u64>> {
    match dir {
        Dir::V1(path) => Ok(fsio::read_u64_opt(&path.join("memory.limit_in_bytes"))?
            .filter(|&limit| limit < V1_UNLIMITED)),
        Dir::V2(path) => fsio::read_max_opt(&path.join("memory.max")),
    }
}

/// How many processes the OOM killer killed in this cgroup (0 when the
/// kernel does not count them here).
pub(crate) fn oom_kill_count(dir: Dir) -> Result<u64> {
    let file = match dir {
        Dir::V1(path) => path.join("memory.oom_control"),
        Dir::V2(path) => path.join("memory.events"),
    };
    Ok(fsio::read_keyed_opt(&file, "oom_kill")?.unwrap_or(0))
}
