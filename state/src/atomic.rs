//! Crash-safe file replacement and an exclusive file lock: the two
//! primitives every berth store (containers, images, networks, IPAM) is
//! built on, kept here once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::{Flock, FlockArg};

use crate::StateError;

/// How much of a replacement must survive a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The new contents, and the rename: file and directory are fsynced.
    Full,
    /// The file is the old or the new one (its data is synced before the
    /// rename), but the rename itself may be lost: for state that berth
    /// re-derives or that a reboot makes stale anyway (a container's
    /// status, address leases). Saves a journal commit.
    Data,
    /// No sync at all: readers still never see a torn file, but a crash of
    /// the machine may leave the old one or none. For state that dies with
    /// the machine anyway (a running container's runtime state).
    Volatile,
}

/// Replace `path` with `contents` so that a reader sees either the old or
/// the new file, never a torn one: write a temp file beside it, sync it,
/// rename it over `path` (and with [`Durability::Full`] sync the
/// directory). The file is created 0600.
pub fn replace_file(path: &Path, contents: &[u8], durability: Durability) -> io::Result<()> {
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
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
        match durability {
            Durability::Full => file.sync_all()?,
            // The data and the size: all a reader needs.
            Durability::Data => file.sync_data()?,
            Durability::Volatile => {}
        }
        fs::rename(&tmp, path)?;
        if durability == Durability::Full {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// [`replace_file`] with [`Durability::Full`], the error naming `path`.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StateError> {
    replace_file(path, contents, Durability::Full).map_err(|e| StateError::io(path, e))
}

/// An exclusive `flock` on a lock file, released when dropped. flock locks
/// belong to the open file description, so two threads of one process
/// that each take the lock exclude each other too.
#[derive(Debug)]
pub struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Block until the exclusive lock on `path` (created 0600 if missing)
    /// is held.
    pub fn exclusive(path: &Path) -> io::Result<Self> {
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
        Ok(FileLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        replace_file(&path, b"three", Durability::Data).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["state.json"]);
    }

    #[test]
    fn reports_the_path_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/state.json");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert!(err.to_string().contains("missing-dir"), "{err}");
    }

    #[test]
    fn the_lock_excludes_other_holders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        let held = FileLock::exclusive(&path).unwrap();
        let file = File::open(&path).unwrap();
        assert!(Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err());
        drop(held);
        let file = File::open(&path).unwrap();
        assert!(Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok());
    }
}
