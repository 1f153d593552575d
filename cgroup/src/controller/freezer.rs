//! freezer: stop every task of a cgroup (v1 freezer.state, v2 cgroup.freeze)
//! and wait until the kernel says they are.

use std::time::{Duration, Instant};

use super::Dir;
use crate::error::{CgroupError, Result};
use crate::{fsio, Controller};

/// Freeze (`true`) or thaw (`false`) and wait until the kernel reports it.
pub(crate) fn set_frozen(dir: Dir, frozen: bool) -> Result<()> {
    match dir {
        Dir::V1(path) => {
            let file = path.join("freezer.state");
            let wanted = if frozen { "FROZEN" } else { "THAWED" };
            fsio::write(&file, wanted)?;
            let mut last_write = Instant::now();
            let done = fsio::wait_until(fsio::WAIT_LIMIT, || {
                if fsio::read(&file)?.trim() == wanted {
                    return Ok(true);
                }
                // A task that raced with the freeze may need another push.
                if last_write.elapsed() > Duration::from_millis(50) {
                    fsio::write(&file, wanted)?;
                    last_write = Instant::now();
                }
                Ok(false)
            })?;
            if done {
                return Ok(());
            }
            if frozen {
                // Do not leave a half-frozen cgroup behind.
                let _ = fsio::write(&file, "THAWED");
            }
            Err(CgroupError::Timeout {
                what: if frozen { "FROZEN" } else { "THAWED" },
                path: file,
                seconds: fsio::WAIT_LIMIT.as_secs(),
            })
        }
        Dir::V2(path) => {
            let file = path.join("cgroup.freeze");
            if !file.exists() {
                return Err(CgroupError::ControllerMissing {
                    controller: Controller::Freezer,
                });
            }
            fsio::write(&file, if frozen { "1" } else { "0" })?;
            let events = path.join("cgroup.events");
            let wanted = u64::from(frozen);
            let done = fsio::wait_until(fsio::WAIT_LIMIT, || {
                let text = fsio::read(&events)?;
                Ok(fsio::keyed_value(&events, &text, "frozen")? == Some(wanted))
            })?;
            if done {
                return Ok(());
            }
            if frozen {
                let _ = fsio::write(&file, "0");
            }
            Err(CgroupError::Timeout {
                what: if frozen { "frozen 1" } else { "frozen 0" },
                path: events,
                seconds: fsio::WAIT_LIMIT.as_secs(),
            })
        }
    }
}

/// Whether the cgroup is frozen now.
pub(crate) fn is_frozen(dir: Dir) -> Result<bool> {
    match dir {
        Dir::V1(path) => Ok(fsio::read(&path.join("freezer.state"))?.trim() == "FROZEN"),
        Dir::V2(path) => {
            let events = path.join("cgroup.events");
            let text = fsio::read(&events)?;
            Ok(fsio::keyed_value(&events, &text, "frozen")? == Some(1))
        }
    }
}
