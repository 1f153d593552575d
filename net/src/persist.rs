//! Small persistence helpers shared by the IPAM and network stores:
//! atomic file replacement and an exclusive advisory lock.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::{Flock, FlockArg};

/// Create `dir` (and its parents) with mode 0700 if it is missing.
pub(crate) fn ensure_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Replace `path` with `contents` so that a reader sees either the old or
/// the new file, never a torn one, even across a crash: write a temp file
/// beside it, fsync it, rename it over `path`, fsync the directory.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    replace_file(path, contents, true)
}

/// Like [`write_atomic`], but without the directory fsync: after a crash
/// of the machine the file is the old or the new one (its data was synced
/// before the rename), and the rename itself may be lost. For state that
/// a reboot makes stale anyway (address leases: every container is dead
/// then, and its leases are given back by `rm`), this halves the cost.
pub(crate) fn replace_file_data_synced(path: &Path, contents: &[u8]) -> io::Result<()> {
    replace_file(path, contents, false)
}

fn replace_file(path: &Path, contents: &[u8], sync_dir: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.tmp.{}.{seq}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        file.write_all(contents)?;
        if sync_dir {
            file.sync_all()?;
        } else {
            // The data and the size, which is all a reader needs.
            file.sync_data()?;
        }
        fs::rename(&tmp, path)?;
        if sync_dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An exclusive `flock` on a lock file, released when dropped. flock
/// locks belong to the open file description, so two threads of one
/// process that each take the lock exclude each other too.
#[derive(Debug)]
pub(crate) struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Block until the exclusive lock on `path` (created 0600 if missing)
    /// is held.
    pub(crate) fn exclusive(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io::Error::from(errno))?;
        Ok(Self { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        replace_file_data_synced(&path, b"three").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
