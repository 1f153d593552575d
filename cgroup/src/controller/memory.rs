//! memory: limit (with swap held to it), usage, OOM kills.

use super::Dir;
use crate::error::Result;
use crate::fsio;

/// v1 reports "no limit" as PAGE_COUNTER_MAX pages, about 2^63; anything
/// this large is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// Set the memory limit; swap may not add to it (v1: memory+swap limit equal
/// to it, v2: no swap), when the kernel accounts swap at all.
pub(crate) fn set_limit(dir: Dir, bytes: u64) -> Result<()> {
    let value = bytes.to_string();
    match dir {
        Dir::V1(path) => {
            let limit = path.join("memory.limit_in_bytes");
            let memsw = path.join("memory.memsw.limit_in_bytes");
            if !memsw.exists() {
                return fsio::write(&limit, &value);
            }
            // memory.limit_in_bytes <= memory.memsw.limit_in_bytes at all
            // times: raise memsw first, lower it last.
            let current_memsw = fsio::read_u64_opt(&memsw)?.unwrap_or(u64::MAX);
            if bytes > current_memsw {
                fsio::write(&memsw, &value)?;
                fsio::write(&limit, &value)
            } else {
                fsio::write(&limit, &value)?;
                fsio::write(&memsw, &value)
            }
        }
        Dir::V2(path) => {
            fsio::write(&path.join("memory.max"), &value)?;
            let swap = path.join("memory.swap.max");
            if swap.exists() {
                fsio::write(&swap, "0")?;
            }
            Ok(())
        }
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

/// The limit in bytes; `None` when there is none.
pub(crate) fn limit(dir: Dir) -> Result<Option<u64>> {
    match dir {
        Dir::V1(path) => Ok(fsio::read_u64_opt(&path.join("memory.limit_in_bytes"))?
            .filter(|&limit| limit < V1_UNLIMITED)),
        Dir::V2(path) => {
            let file = path.join("memory.max");
            match fsio::read_opt(&file)? {
                Some(text) if text.trim() == "max" => Ok(None),
                Some(text) => fsio::parse_u64(&file, &text).map(Some),
                None => Ok(None),
            }
        }
    }
}

/// How many processes the OOM killer killed in this cgroup (0 when the
/// kernel does not count them here).
pub(crate) fn oom_kill_count(dir: Dir) -> Result<u64> {
    let file = match dir {
        Dir::V1(path) => path.join("memory.oom_control"),
        Dir::V2(path) => path.join("memory.events"),
    };
    match fsio::read_opt(&file)? {
        Some(text) => Ok(fsio::keyed_value(&file, &text, "oom_kill")?.unwrap_or(0)),
        None => Ok(0),
    }
}
