//! Directories only their owner may change: berth's state root and stores.
//!
//! A state directory that someone else owns, or may write, lets that user
//! swap records (naming any PID for `stop` to kill) or layers under root's
//! feet. So such a directory is refused, and one that is merely readable
//! by others is closed to 0700 (0711 where it was searchable).

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::StateError;

/// Create `path` (mode 0700, with missing parents) or check an existing
/// one: it must be a real directory (not a symlink) owned by the caller's
/// effective user and writable by nobody else; any other permission bits
/// are cleared to 0700.
pub fn ensure_private_dir(path: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| StateError::io(path, e))?;
    let meta = fs::symlink_metadata(path).map_err(|e| StateError::io(path, e))?;
    let refuse = |reason: String| {
        Err(StateError::Insecure {
            path: path.to_path_buf(),
            reason,
        })
    };
    if !meta.is_dir() {
        return refuse("it is not a directory (a symlink?)".to_owned());
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return refuse(format!("it is owned by uid {}, not {euid}", meta.uid()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return refuse(format!("others may write to it (mode {mode:04o})"));
    }
    // Search-only bits (0711) are kept: a container in a user namespace
    // is given a way to its own files through berth's directories (see
    // `make_searchable`), never a listing.
    let closed = if mode & 0o044 == 0 {
        0o700 | (mode & 0o011)
    } else {
        0o700
    };
    if mode != closed {
        fs::set_permissions(path, fs::Permissions::from_mode(closed))
            .map_err(|e| StateError::io(path, e))?;
    }
    Ok(())
}

/// Let every user search (but not list or change) the directory `path`,
/// owned by the caller: mode 0711. A process of a container whose root is
/// an unprivileged host user must reach its own mount sources under
/// berth's private directories.
pub fn make_searchable(path: &Path) -> Result<(), StateError> {
    let meta = fs::symlink_metadata(path).map_err(|e| StateError::io(path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o011 != 0o011 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o011))
            .map_err(|e| StateError::io(path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_dir_is_made_checked_and_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o700);

        // Readable by others: closed.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);

        // Writable by others or the group: refused, left as it is.
        for open in [0o777, 0o770, 0o703] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(open)).unwrap();
            let err = ensure_private_dir(&dir).unwrap_err();
            assert!(
                matches!(err, StateError::Insecure { .. }),
                "{open:o}: {err}"
            );
            assert!(err.to_string().contains("may write"), "{err}");
            assert_eq!(mode(&dir), open);
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();

        // Searchable by others (for a remapped container's root): kept.
        make_searchable(&dir).unwrap();
        assert_eq!(mode(&dir), 0o711);
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o711);

        // A symlink to a directory is not the directory.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(matches!(
            ensure_private_dir(&link),
            Err(StateError::Insecure { .. })
        ));
    }

    #[test]
    fn a_dir_owned_by_someone_else_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let err = ensure_private_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    }
}
