//! Masked and read-only paths: the parts of /proc and /sys that a container
//! must not read or write, hidden or frozen the way docker does it.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, major, minor, FileStat, Mode};
use nix::sys::statfs::{fstatfs, TMPFS_MAGIC};
use nix::sys::statvfs::{fstatvfs, FsFlags};

use crate::kernel::check_dev_null;
use crate::resolve::{
    bind_mount_fds, is_dir, open_at_root, open_trusted_dir, proc_fd_path, Create, Resolver,
};
use crate::volume::make_read_only;
use crate::FsError;

/// Docker's default masked paths: files get /dev/null mounted over them,
/// directories an empty read-only tmpfs.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's default read-only paths (/sys as a whole is already mounted
/// read-only by [`crate::mount_kernel_filesystems`]).
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// `root` joined with `path` taken as relative, for messages.
fn shown(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// A masked or read-only path must be absolute and name something below
/// the root.
fn check_path(path: &str) -> Result<(), FsError> {
    let invalid = |reason| FsError::InvalidProtectedPath {
        path: path.to_owned(),
        reason,
    };
    if path.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    if !path.starts_with('/') {
        return Err(invalid("it is not absolute"));
    }
    if !path
        .split('/')
        .any(|c| !c.is_empty() && c != "." && c != "..")
    {
        return Err(invalid("it is the root itself"));
    }
    Ok(())
}

fn stat(fd: &OwnedFd, shown: &Path) -> Result<FileStat, FsError> {
    fstat(fd).map_err(|e| FsError::Stat {
        path: shown.to_path_buf(),
        source: e.into(),
    })
}

/// `path` inside the container root, or `None` if it does not exist.
/// Resolved as [`crate::open_in_root`] does: symlinks stay inside the root,
/// magic links are refused. The root itself is refused.
fn lookup(
    root: &OwnedFd,
    root_st: &FileStat,
    rootfs: &Path,
    path: &str,
) -> Result<Option<(OwnedFd, FileStat)>, FsError> {
    let fd = match open_at_root(root, rootfs, path, Create::Nothing, Resolver::Auto) {
        Ok(fd) => fd,
        Err(FsError::Resolve {
            source: Errno::ENOENT,
            ..
        }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = stat(&fd, &shown(rootfs, path))?;
    if (st.st_dev, st.st_ino) == (root_st.st_dev, root_st.st_ino) {
        return Err(FsError::InvalidProtectedPath {
            path: path.to_owned(),
            reason: "it resolves to the root itself",
        });
    }
    Ok(Some((fd, st)))
}

/// An `O_PATH` handle of the rootfs's `/dev/null`, checked to be the
/// character device 1:3 through that very handle.
fn open_dev_null(root: &OwnedFd, rootfs: &Path) -> Result<OwnedFd, FsError> {
    let dev_path = rootfs.join("dev");
    let shown = dev_path.join("null");
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let dev = openat(root, "dev", flags | OFlag::O_DIRECTORY, Mode::empty()).map_err(|source| {
        FsError::Open {
            path: dev_path,
            source,
        }
    })?;
    let null = openat(&dev, "null", flags, Mode::empty()).map_err(|source| FsError::Open {
        path: shown.clone(),
        source,
    })?;
    let st = stat(&null, &shown)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFCHR
        && major(st.st_rdev) == 1
        && minor(st.st_rdev) == 3
    {
        return Ok(null);
    }
    // Describe what it is instead.
    check_dev_null(&dev, &shown)?;
    Err(FsError::NotNullDevice {
        path: shown,
        found: "a file that changed while it was checked".into(),
    })
}

/// Mask each of `masked` (absolute paths inside the container: the spec's
/// `linux.maskedPaths`, or [`DEFAULT_MASKED_PATHS`]) below `rootfs`, so that the container can
/// neither read nor write what is there:
///
/// - a directory gets an empty tmpfs mounted over it, read-only (and
///   nosuid, nodev, noexec);
/// - anything else (a file) gets the rootfs's own `/dev/null` bind-mounted
///   over it: reads give nothing, writes go nowhere. That `/dev/null` must
///   be the character device 1:3 (checked through the handle that is
///   mounted, [`FsError::NotNullDevice`] otherwise), which is what
///   [`crate::mount_kernel_filesystems`] creates;
/// - a path that does not exist is skipped (e.g. /proc/timer_stats on
///   recent kernels).
///
/// Run it in the container's mount namespace after
/// [`crate::mount_kernel_filesystems`], either before
/// [`crate::pivot_root`] (with `rootfs` the rootfs path, the host's /proc
/// still visible) or after it (with `rootfs` = `/`). Paths are resolved
/// inside `rootfs` like [`crate::open_in_root`] does (symlinks never lead
/// out of it, /proc magic links are refused) and mounted on through the
/// resulting handle (`/proc/self/fd/N`), so a symlink swapped in meanwhile
/// cannot redirect a mount to the host. Afterwards each path is looked up
/// again and must show /dev/null or a read-only tmpfs
/// ([`FsError::MaskNotApplied`] otherwise). A path that is not absolute or
/// names the root is [`FsError::InvalidProtectedPath`].
pub fn mask_paths<S: AsRef<str>>(rootfs: &Path, masked: &[S]) -> Result<(), FsError> {
    for path in masked {
        check_path(path.as_ref())?;
    }
    let root = open_trusted_dir(rootfs)?;
    let root_st = stat(&root, rootfs)?;
    let mut null: Option<OwnedFd> = None;
    for path in masked {
        let path = path.as_ref();
        let shown = shown(rootfs, path);
        let Some((target, st)) = lookup(&root, &root_st, rootfs, path)? else {
            continue;
        };
        let target_path = proc_fd_path(&target);
        let dir = is_dir(&st);
        if dir {
            mount(
                Some("tmpfs"),
                &target_path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=755"),
            )
            .map_err(|source| FsError::Mount {
                target: shown.clone(),
                fstype: "tmpfs".into(),
                source,
            })?;
        } else {
            if null.is_none() {
                null = Some(open_dev_null(&root, rootfs)?);
            }
            let null = null.as_ref().expect("opened above");
            bind_mount_fds(null, &target, false, &shown)?;
        }
        drop(target);
        check_masked(&root, &root_st, rootfs, path, dir)?;
    }
    Ok(())
}

/// After masking: `path` must now be /dev/null (a file) or an empty
/// read-only tmpfs (a directory).
fn check_masked(
    root: &OwnedFd,
    root_st: &FileStat,
    rootfs: &Path,
    path: &str,
    dir: bool,
) -> Result<(), FsError> {
    let shown = shown(rootfs, path);
    let not_applied = |found: String| FsError::MaskNotApplied {
        path: shown.clone(),
        found,
    };
    let Some((fd, st)) = lookup(root, root_st, rootfs, path)? else {
        return Err(not_applied("gone".into()));
    };
    if dir {
        let on_tmpfs = fstatfs(&fd).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC);
        let read_only = fstatvfs(&fd).is_ok_and(|s| s.flags().contains(FsFlags::ST_RDONLY));
        if !is_dir(&st) || !on_tmpfs || !read_only {
            return Err(not_applied("not an empty read-only tmpfs".into()));
        }
    } else if st.st_mode & libc::S_IFMT != libc::S_IFCHR
        || major(st.st_rdev) != 1
        || minor(st.st_rdev) != 3
    {
        return Err(not_applied(format!(
            "mode {:o}, device {}:{}",
            st.st_mode,
            major(st.st_rdev),
            minor(st.st_rdev)
        )));
    }
    Ok(())
}

/// Make each of `paths` (absolute paths inside the container: the spec's
/// `linux.readonlyPaths`, or [`DEFAULT_READONLY_PATHS`]) read-only below `rootfs`: the path is
/// bind-mounted onto itself (recursively) and the new mount made read-only
/// with mount_setattr(2) `MOUNT_ATTR_RDONLY | AT_RECURSIVE` (or, before
/// Linux 5.12, a `MS_BIND|MS_REMOUNT|MS_RDONLY` remount that keeps nosuid,
/// nodev and noexec); the mount must then report `ST_RDONLY`
/// ([`FsError::PathStillWritable`] otherwise). A path that does not exist
/// is skipped.
///
/// When and how to call it, and how paths are resolved, is as for
/// [`mask_paths`]. After the bind mount the path is looked up again and
/// must still be the same file ([`FsError::PathMoved`] otherwise).
pub fn readonly_paths<S: AsRef<str>>(rootfs: &Path, paths: &[S]) -> Result<(), FsError> {
    for path in paths {
        check_path(path.as_ref())?;
    }
    let root = open_trusted_dir(rootfs)?;
    let root_st = stat(&root, rootfs)?;
    for path in paths {
        let path = path.as_ref();
        let shown = shown(rootfs, path);
        let Some((target, st)) = lookup(&root, &root_st, rootfs, path)? else {
            continue;
        };
        bind_mount_fds(&target, &target, true, &shown)?;
        drop(target);
        // The old handle names the file under the new mount: look the path
        // up again to reach the mount itself.
        let Some((mounted, now)) = lookup(&root, &root_st, rootfs, path)? else {
            return Err(FsError::PathMoved { path: shown });
        };
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            return Err(FsError::PathMoved { path: shown });
        }
        make_read_only(&mounted, &shown).map_err(|e| match e {
            FsError::ReadOnly { target, source } => FsError::ReadOnlyPath {
                path: target,
                source,
            },
            FsError::StillWritable { target } => FsError::PathStillWritable { path: target },
            other => other,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_docker_s() {
        assert_eq!(DEFAULT_MASKED_PATHS.len(), 11);
        assert!(DEFAULT_MASKED_PATHS.contains(&"/proc/kcore"));
        assert!(DEFAULT_MASKED_PATHS.contains(&"/sys/firmware"));
        assert!(DEFAULT_READONLY_PATHS.contains(&"/proc/sysrq-trigger"));
        for path in DEFAULT_MASKED_PATHS.iter().chain(DEFAULT_READONLY_PATHS) {
            check_path(path).unwrap();
        }
    }

    #[test]
    fn bad_paths_are_refused_before_anything_is_mounted() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["proc/kcore", "", "/", "//./..", "/proc/\0"] {
            for result in [
                mask_paths(root.path(), &["/proc/kcore", bad]),
                readonly_paths(root.path(), &["/proc/sys", bad]),
            ] {
                assert!(
                    matches!(result, Err(FsError::InvalidProtectedPath { ref path, .. }) if path == bad),
                    "{bad:?}: {result:?}"
                );
            }
        }
        assert_eq!(
            mask_paths(root.path(), &["proc"]).unwrap_err().to_string(),
            "invalid masked or read-only path \"proc\": it is not absolute"
        );
    }

    #[test]
    fn missing_paths_are_skipped() {
        // Nothing exists, so nothing is mounted: this works without root.
        let root = tempfile::tempdir().unwrap();
        mask_paths(root.path(), DEFAULT_MASKED_PATHS).unwrap();
        readonly_paths(root.path(), DEFAULT_READONLY_PATHS).unwrap();
        // A spec's list, as owned strings.
        let from_spec = vec!["/proc/acpi".to_string(), "/opt/secret".to_string()];
        mask_paths(root.path(), &from_spec).unwrap();
        readonly_paths(root.path(), &from_spec).unwrap();
        mask_paths::<&str>(root.path(), &[]).unwrap();
    }

    #[test]
    fn a_link_to_the_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/", root.path().join("up")).unwrap();
        assert!(matches!(
            mask_paths(root.path(), &["/up"]),
            Err(FsError::InvalidProtectedPath { .. })
        ));
    }

    #[test]
    fn a_bad_dev_null_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("dev")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("dev/null")).unwrap();
        std::fs::write(root.path().join("secret"), b"x").unwrap();
        let err = mask_paths(root.path(), &["/secret"]).unwrap_err();
        assert!(
            matches!(err, FsError::NotNullDevice { ref found, .. } if found == "a symlink"),
            "{err:?}"
        );
    }
}
