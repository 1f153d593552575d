//! /proc, /sys and /dev inside the container's rootfs.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, major, makedev, minor, mknod, Mode, SFlag};

use crate::resolve::{open_child_dir, open_trusted_dir};
use crate::FsError;

/// Character devices created in the container's /dev: name, major, minor.
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Symlinks created in the container's /dev: name, target.
const DEV_SYMLINKS: &[(&str, &str)] = &[
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Mount the kernel filesystems a container expects, below `rootfs`:
///
/// - `/proc`: proc (nosuid, nodev, noexec);
/// - `/sys`: sysfs, read-only (nosuid, nodev, noexec);
/// - `/dev`: tmpfs (mode 755, 64 MiB, nosuid) holding the character devices
///   null zero full random urandom tty (0666), `/dev/pts` (a new devpts
///   instance, ptmxmode=0666, mode=0620, gid=5) with `/dev/ptmx ->
///   pts/ptmx`, `/dev/shm` (tmpfs 1777, 64 MiB, nosuid nodev noexec),
///   `/dev/mqueue` (mqueue) and the links `fd`, `stdin`, `stdout`, `stderr`
///   into `/proc/self/fd`.
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
    let proc_dir = open_mount_point(&root, rootfs, "proc")?;
    let sys_dir = open_mount_point(&root, rootfs, "sys")?;
    let dev_dir = open_mount_point(&root, rootfs, "dev")?;

    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_at(&proc_dir, &rootfs.join("proc"), "proc", hardened, None)?;
    mount_at(
        &sys_dir,
        &rootfs.join("sys"),
        "sysfs",
        hardened | MsFlags::MS_RDONLY,
        None,
    )?;
    mount_at(
        &dev_dir,
        &rootfs.join("dev"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    populate_dev(&rootfs.join("dev"))?;

    // Belt and braces: what the container will see as /dev/null (through
    // the mount we just made, not the image's /dev) is the null device.
    let dev = openat(
        &root,
        "dev",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| FsError::Open {
        path: rootfs.join("dev"),
        source,
    })?;
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

/// Check that `<rootfs>/<name>` is a real directory (creating it if
/// missing) and open it without following symlinks.
pub(crate) fn open_mount_point(
    root: &OwnedFd,
    rootfs: &Path,
    name: &str,
) -> Result<OwnedFd, FsError> {
    let path = rootfs.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(FsError::MountPointIsSymlink {
                entry: format!("/{name}"),
                path,
            })
        }
        Ok(meta) if !meta.is_dir() => return Err(FsError::NotADirectory { path }),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(FsError::Stat { path, source }),
    }
    open_child_dir(root, name, &path, true).map_err(|e| match e {
        // Swapped for a symlink between the check and the open.
        FsError::SymlinkInPath { path } => FsError::MountPointIsSymlink {
            entry: format!("/{name}"),
            path,
        },
        other => other,
    })
}

/// Mount a fresh instance of `fstype` on the directory held by `dir`
/// (through its /proc/self/fd magic link); `shown` is its path for errors.
fn mount_at(
    dir: &OwnedFd,
    shown: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), FsError> {
    let target = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    mount_fs(&target, shown, fstype, flags, data)
}

fn mount_fs(
    target: &Path,
    shown: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), FsError> {
    mount(Some(fstype), target, Some(fstype), flags, data).map_err(|source| FsError::Mount {
        target: shown.to_path_buf(),
        fstype: fstype.to_owned(),
        source,
    })
}

/// Fill the container's fresh /dev tmpfs. Everything here is inside our own
/// tmpfs, so plain paths are safe.
fn populate_dev(dev: &Path) -> Result<(), FsError> {
    for &(name, major, minor) in DEVICES {
        let path = dev.join(name);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|source| FsError::Mknod {
            path: path.clone(),
            source,
        })?;
        // mknod(2) applies the umask.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .map_err(|source| FsError::Chmod { path, source })?;
    }

    let no_exec = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    let hardened = no_exec | MsFlags::MS_NODEV;
    let submounts: [(&str, &str, MsFlags, Option<&str>); 3] = [
        (
            "pts",
            "devpts",
            no_exec,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        ("shm", "tmpfs", hardened, Some("mode=1777,size=65536k")),
        ("mqueue", "mqueue", hardened, None),
    ];
    for (name, fstype, flags, data) in submounts {
        let path = dev.join(name);
        std::fs::create_dir(&path).map_err(|source| FsError::CreateDir {
            path: path.clone(),
            source,
        })?;
        mount_fs(&path, &path, fstype, flags, data)?;
    }

    for &(name, target) in DEV_SYMLINKS {
        let path = dev.join(name);
        symlink(target, &path).map_err(|source| FsError::Symlink {
            path,
            target: target.into(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn check(rootfs: &Path, name: &str) -> Result<OwnedFd, FsError> {
        let root = open_trusted_dir(rootfs).unwrap();
        open_mount_point(&root, rootfs, name)
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
        symlink("/nonexistent", rootfs.path().join("dev")).unwrap();
        assert!(matches!(
            check(rootfs.path(), "dev"),
            Err(FsError::MountPointIsSymlink { .. })
        ));
        assert!(!Path::new("/nonexistent").exists());
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
