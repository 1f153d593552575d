//! pids: the maximum number of tasks, and how many there are.

use super::Dir;
use crate::error::Result;
use crate::fsio;

pub(crate) fn set_max(dir: Dir, max: u64) -> Result<()> {
    fsio::write(&dir.path().join("pids.max"), &max.to_string())
}

pub(crate) fn current(dir: Dir) -> Result<Option<u64>> {
    fsio::read_u64_opt(&dir.path().join("pids.current"))
}

/// The limit; `None` when there is none (`max`).
pub(crate) fn max(dir: Dir) -> Result<Option<u64>> {
    fsio::read_max_opt(&dir.path().join("pids.max"))
}
