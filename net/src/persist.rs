//! Persistence for the IPAM and network stores, on berth-state's atomic
//! file replacement and exclusive lock.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use berth_state::Durability;
pub(crate) use berth_state::FileLock;

/// Create `dir` (and its parents) with mode 0700 if it is missing.
pub(crate) fn ensure_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Replace `path` atomically, file and rename durable.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    berth_state::replace_file(path, contents, Durability::Full)
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
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
