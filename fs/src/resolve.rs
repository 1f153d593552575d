//! Opening directories one component at a time, never following a symlink.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};

use crate::FsError;

/// Flags for a directory handle that is only used as an anchor for *at
/// calls and mount targets.
const DIR_PATH: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

/// Open a directory we trust (the rootfs path itself, chosen by berth).
pub(crate) fn open_trusted_dir(path: &Path) -> Result<OwnedFd, FsError> {
    open(path, DIR_PATH, Mode::empty()).map_err(|source| FsError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// What `name` in `dir` is, when it is not a directory we can open.
fn not_a_dir_error(dir: impl AsFd, name: &str, shown: &Path) -> FsError {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st)
            if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK =>
        {
            FsError::SymlinkInPath {
                path: shown.to_path_buf(),
            }
        }
        Ok(_) => FsError::NotADirectory {
            path: shown.to_path_buf(),
        },
        Err(source) => FsError::Open {
            path: shown.to_path_buf(),
            source,
        },
    }
}

/// Open the directory `name` (a single component) below `dir` without
/// following a symlink; if it is missing and `create` is true, create it
/// with mode 0755 first. `shown` is the full path, for errors.
pub(crate) fn open_child_dir(
    dir: &OwnedFd,
    name: &str,
    shown: &Path,
    create: bool,
) -> Result<OwnedFd, FsError> {
    debug_assert!(!name.is_empty() && !name.contains('/') && name != "." && name != "..");
    let flags = DIR_PATH | OFlag::O_NOFOLLOW;
    let mut created = false;
    loop {
        match openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if create && !created => {
                match mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => created = true,
                    Err(e) => {
                        return Err(FsError::CreateDir {
                            path: shown.to_path_buf(),
                            source: e.into(),
                        })
                    }
                }
            }
            // O_NOFOLLOW on a symlink gives ELOOP, or, with O_PATH, the
            // link itself, which O_DIRECTORY turns into ENOTDIR.
            Err(Errno::ENOTDIR | Errno::ELOOP) => return Err(not_a_dir_error(dir, name, shown)),
            Err(source) => {
                return Err(FsError::Open {
                    path: shown.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Create (if missing) the directory `path` inside `root` and return its
/// full path, walking one component at a time from `root` with
/// `O_NOFOLLOW|O_DIRECTORY` and creating missing components with mode 0755.
///
/// `path` is taken relative to `root` whether or not it starts with `/`;
/// `.` is ignored and `..` is resolved lexically and never climbs above
/// `root` (as docker does for `-w`). A component that is a symlink is
/// refused with [`FsError::SymlinkInPath`], one that is not a directory
/// with [`FsError::NotADirectory`]: nothing is ever created outside `root`.
pub fn ensure_dir_in_root(root: &Path, path: &str) -> Result<PathBuf, FsError> {
    if path.contains('\0') {
        return Err(FsError::InvalidPath {
            path: path.to_owned(),
        });
    }
    let mut parts: Vec<&str> = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    let mut dir = open_trusted_dir(root)?;
    let mut shown = root.to_path_buf();
    for name in parts {
        shown.push(name);
        dir = open_child_dir(&dir, name, &shown, true)?;
    }
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn creates_missing_components() {
        let root = tempfile::tempdir().unwrap();
        let got = ensure_dir_in_root(root.path(), "/srv/app/./work").unwrap();
        assert_eq!(got, root.path().join("srv/app/work"));
        assert!(got.is_dir());
        // Idempotent.
        assert_eq!(
            ensure_dir_in_root(root.path(), "srv/app/work").unwrap(),
            got
        );
    }

    #[test]
    fn dotdot_never_climbs_above_the_root() {
        let root = tempfile::tempdir().unwrap();
        let got = ensure_dir_in_root(root.path(), "/../../x/../y").unwrap();
        assert_eq!(got, root.path().join("y"));
        assert_eq!(ensure_dir_in_root(root.path(), "/").unwrap(), root.path());
    }

    #[test]
    fn symlink_pointing_outside_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), root.path().join("data")).unwrap();
        let err = ensure_dir_in_root(root.path(), "/data/sub").unwrap_err();
        assert!(
            matches!(err, FsError::SymlinkInPath { ref path } if *path == root.path().join("data"))
        );
        assert!(!outside.path().join("sub").exists());
        // An absolute symlink and one made of ".." are refused too, even
        // as the last component.
        std::fs::create_dir(root.path().join("a")).unwrap();
        symlink("../../../..", root.path().join("a/up")).unwrap();
        assert!(matches!(
            ensure_dir_in_root(root.path(), "a/up"),
            Err(FsError::SymlinkInPath { .. })
        ));
        symlink("/proc/self/fd/3", root.path().join("a/abs")).unwrap();
        assert!(matches!(
            ensure_dir_in_root(root.path(), "a/abs/x"),
            Err(FsError::SymlinkInPath { .. })
        ));
    }

    #[test]
    fn file_component_is_not_a_directory() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), b"").unwrap();
        let err = ensure_dir_in_root(root.path(), "/f/x").unwrap_err();
        assert!(
            matches!(err, FsError::NotADirectory { ref path } if *path == root.path().join("f"))
        );
    }

    #[test]
    fn nul_is_invalid() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            ensure_dir_in_root(root.path(), "a\0b"),
            Err(FsError::InvalidPath { .. })
        ));
    }
}
