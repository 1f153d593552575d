//! Reading and writing cgroup files, with the path in every error.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{CgroupError, Result};

/// How long the kernel gets to freeze a cgroup or to empty it.
pub(crate) const WAIT_LIMIT: Duration = Duration::from_secs(5);

pub(crate) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Like [`read`], but a missing file is `None`.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

pub(crate) fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value)
}

pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    write_raw(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

pub(crate) fn parse_u64(path: &Path, text: &str) -> Result<u64> {
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        content: text.to_owned(),
    })
}

/// A number from a file; `None` when the file does not exist.
pub(crate) fn read_u64_opt(path: &Path) -> Result<Option<u64>> {
    read_opt(path)?
        .map(|text| parse_u64(path, &text))
        .transpose()
}

/// A number from a v2 file where `max` means no limit (memory.max,
/// pids.max): `None` for `max` or when the file does not exist.
pub(crate) fn read_max_opt(path: &Path) -> Result<Option<u64>> {
    match read_opt(path)? {
        Some(text) if text.trim() == "max" => Ok(None),
        Some(text) => parse_u64(path, &text).map(Some),
        None => Ok(None),
    }
}

/// The value of `key` in a flat keyed file; `None` when the file or the
/// key does not exist.
pub(crate) fn read_keyed_opt(path: &Path, key: &str) -> Result<Option<u64>> {
    match read_opt(path)? {
        Some(text) => keyed_value(path, &text, key),
        None => Ok(None),
    }
}

/// The value of `key` in a flat keyed file (`key value` per line), as in
/// memory.events, memory.oom_control, cpu.stat and cgroup.events.
pub(crate) fn keyed_value(path: &Path, text: &str, key: &str) -> Result<Option<u64>> {
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() == Some(key) {
            let value = fields.next().unwrap_or_default();
            return parse_u64(path, value).map(Some);
        }
    }
    Ok(None)
}

/// Poll `done` with a short back-off until it returns true or `limit`
/// passes; returns whether it became true.
pub(crate) fn wait_until(limit: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The directories from `top` down to `bottom`, both included; `bottom`
/// must lie below `top`.
pub(crate) fn chain(top: &Path, bottom: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![top.to_owned()];
    if let Ok(rest) = bottom.strip_prefix(top) {
        let mut current = top.to_owned();
        for component in rest.components() {
            current.push(component);
            dirs.push(current.clone());
        }
    }
    dirs
}
