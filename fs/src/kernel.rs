//! /proc, /sys and /dev inside the container's rootfs.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, major, minor, Mode};

use crate::devices::{create_default_devices, create_dev_symlinks};
use crate::mounts::{default_mounts, mount_entry};
use crate::resolve::{open_child_dir, open_trusted_dir};
use crate::volume::clean_components;
use crate::FsError;

/// Mount the kernel filesystems a container expects below `rootfs`, the
/// way docker's default spec does: [`crate::default_mounts`] with
/// [`crate::mount_entry`], then [`crate::create_default_devices`] and
/// [`crate::create_dev_symlinks`]. That gives:
///
/// - `/proc`: proc (nosuid, nodev, noexec);
/// - `/sys`: sysfs, read-only (nosuid, nodev, noexec);
/// - `/dev`: tmpfs (mode 755, 64 MiB, nosuid) holding the character devices
///   null zero full random urandom tty (0666), `/dev/pts` (a new devpts
///   instance, ptmxmode=0666, mode=0620, gid=5) with `/dev/ptmx ->
///   pts/ptmx`, `/dev/shm` (tmpfs 1777, 64 MiB, nosuid nodev noexec),
///   `/dev/mqueue` (mqueue), the links `fd`, `stdin`, `stdout`, `stderr`
///   into `/proc/self/fd` and `core -> /proc/kcore` where the kernel has
///   one.
///
/// `<rootfs>/proc`, `/sys` and `/dev` are created (0755) if missing; if one
/// is a symlink or not a directory, nothing is mounted and
/// [`FsError::MountPointIsSymlink`] / [`FsError::NotADirectory`] is
/// returned. The mounts go through `O_PATH|O_NOFOLLOW` handles of those
/// directories, so a symlink swapped in after the check is not followed
/// either. This needs `/proc/self/fd` of the caller (the host's /proc is
/// still visible to the container's init at that point).
///
/// Finally `<rootfs>/dev/null` (now in the fresh tmpfs) must be the
/// character device 1:3, looked at without following a symlink, else
/// [`FsError::NotNullDevice`].
///
/// Must run in the container's own mount namespace: the mounts are not
/// undone on error, they vanish with the namespace.
pub fn mount_kernel_filesystems(rootfs: &Path) -> Result<(), FsError> {
    let root = open_trusted_dir(rootfs)?;
    // Check all three before mounting anything.
    for name in ["/proc", "/sys", "/dev"] {
        open_kernel_mount_point(&root, rootfs, name, true)?;
    }
    for entry in default_mounts() {
        mount_entry(rootfs, &entry)?;
    }
    create_default_devices(rootfs, false)?;
    create_dev_symlinks(rootfs)?;

    // Belt and braces: what the container will see as /dev/null (through
    // the mount we just made, not the image's /dev) is the null device.
    let dev = open_kernel_mount_point(&root, rootfs, "/dev", false)?;
    check_dev_null(&dev, &rootfs.join("dev/null"))
}

/// Check that `null` in the directory `dev` is the character device 1:3
/// (looked at through an `O_PATH|O_NOFOLLOW` handle, so a symlink is seen
/// as one); `shown` names it in errors.
pub(crate) fn check_dev_null(dev: &OwnedFd, shown: &Path) -> Result<(), FsError> {
    let fd = openat(
        dev,
        "null",
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| FsError::Open {
        path: shown.to_path_buf(),
        source,
    })?;
    let st = fstat(&fd).map_err(|e| FsError::Stat {
        path: shown.to_path_buf(),
        source: e.into(),
    })?;
    let found = match st.st_mode & libc::S_IFMT {
        libc::S_IFCHR if major(st.st_rdev) == 1 && minor(st.st_rdev) == 3 => return Ok(()),
        libc::S_IFCHR => format!("char device {}:{}", major(st.st_rdev), minor(st.st_rdev)),
        libc::S_IFLNK => "a symlink".to_owned(),
        libc::S_IFREG => "a regular file".to_owned(),
        libc::S_IFDIR => "a directory".to_owned(),
        libc::S_IFBLK => "a block device".to_owned(),
        _ => "a special file".to_owned(),
    };
    Err(FsError::NotNullDevice {
        path: shown.to_path_buf(),
        found,
    })
}

/// Open the directory `path` below `rootfs` (handle `root`) with every
/// component a real directory, never following a symlink: the mount points
/// /proc, /sys and /dev, and those of procfs and sysfs mounts. Missing
/// components are created (0755) if `create`. `..` is resolved lexically.
/// A symlink is [`FsError::MountPointIsSymlink`] (even a dangling one:
/// it is never replaced), a file [`FsError::NotADirectory`].
pub(crate) fn open_kernel_mount_point(
    root: &OwnedFd,
    rootfs: &Path,
    path: &str,
    create: bool,
) -> Result<OwnedFd, FsError> {
    let components = clean_components(path);
    let mut dir: Option<OwnedFd> = None;
    for (i, name) in components.iter().enumerate() {
        let entry = format!("/{}", components[..=i].join("/"));
        let shown = rootfs.join(&entry[1..]);
        let parent = dir.as_ref().unwrap_or(root);
        let child = open_child_dir(parent, name, &shown, create).map_err(|e| match e {
            FsError::SymlinkInPath { path } => FsError::MountPointIsSymlink {
                entry: entry.clone(),
                path,
            },
            FsError::Open {
                source: Errno::ENOENT,
                ..
            } => FsError::Resolve {
                root: rootfs.to_path_buf(),
                path: entry.clone(),
                source: Errno::ENOENT,
            },
            other => other,
        })?;
        dir = Some(child);
    }
    // The root itself is never a mount point here.
    dir.ok_or_else(|| FsError::InvalidPath {
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn check(rootfs: &Path, name: &str) -> Result<OwnedFd, FsError> {
        let root = open_trusted_dir(rootfs).unwrap();
        open_kernel_mount_point(&root, rootfs, name, true)
    }

    #[test]
    fn missing_mount_point_is_created() {
        let rootfs = tempfile::tempdir().unwrap();
        check(rootfs.path(), "proc").unwrap();
        let meta = std::fs::symlink_metadata(rootfs.path().join("proc")).unwrap();
        assert!(meta.is_dir());
    }

    #[test]
    fn existing_directory_is_accepted() {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("dev")).unwrap();
        check(rootfs.path(), "dev").unwrap();
    }

    #[test]
    fn symlinked_mount_point_is_refused() {
        let rootfs = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        symlink(elsewhere.path(), rootfs.path().join("proc")).unwrap();
        let err = check(rootfs.path(), "proc").unwrap_err();
        assert!(
            matches!(err, FsError::MountPointIsSymlink { ref entry, .. } if entry == "/proc"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("rootfs /proc is a symlink: refusing to mount over it"),
            "{err}"
        );
        // A dangling link (e.g. /dev -> /nonexistent) is refused, not replaced.
        let missing = elsewhere.path().join("missing");
        symlink(&missing, rootfs.path().join("dev")).unwrap();
        assert!(matches!(
            check(rootfs.path(), "dev"),
            Err(FsError::MountPointIsSymlink { .. })
        ));
        assert!(!missing.exists());
    }

    #[test]
    fn file_mount_point_is_refused() {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::write(rootfs.path().join("sys"), b"").unwrap();
        let err = check(rootfs.path(), "sys").unwrap_err();
        assert!(
            matches!(err, FsError::NotADirectory { ref path } if *path == rootfs.path().join("sys"))
        );
    }

    #[test]
    fn dev_null_must_be_char_1_3() {
        let dev = tempfile::tempdir().unwrap();
        let fd = open_trusted_dir(dev.path()).unwrap();
        let shown = dev.path().join("null");
        symlink("/etc/passwd", &shown).unwrap();
        let err = check_dev_null(&fd, &shown).unwrap_err();
        assert!(
            matches!(err, FsError::NotNullDevice { ref found, .. } if found == "a symlink"),
            "{err:?}"
        );
        std::fs::remove_file(&shown).unwrap();
        std::fs::write(&shown, b"").unwrap();
        assert!(matches!(
            check_dev_null(&fd, &shown),
            Err(FsError::NotNullDevice { ref found, .. }) if found == "a regular file"
        ));
        std::fs::remove_file(&shown).unwrap();
        assert!(matches!(
            check_dev_null(&fd, &shown),
            Err(FsError::Open { .. })
        ));
        // The host's own /dev/null passes.
        let host_dev = open_trusted_dir(Path::new("/dev")).unwrap();
        check_dev_null(&host_dev, Path::new("/dev/null")).unwrap();
    }

    #[test]
    fn nothing_is_mounted_when_a_later_entry_is_bad() {
        // /proc fine, /sys fine, /dev a symlink: the error comes before any
        // mount(2), so this works without root.
        let rootfs = tempfile::tempdir().unwrap();
        symlink("/etc", rootfs.path().join("dev")).unwrap();
        let err = mount_kernel_filesystems(rootfs.path()).unwrap_err();
        assert!(matches!(err, FsError::MountPointIsSymlink { ref entry, .. } if entry == "/dev"));
    }
}
