//! The root mount: its propagation, entering it with pivot_root(2) (or
//! moving it onto `/` where pivot_root cannot be used), and making it
//! read-only.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{chdir, chroot, fchdir};

use crate::options::{current_mount_flags, describe_flags, describe_propagation, LOCKED_FLAGS};
use crate::FsError;

/// Make every mount in the calling process's mount namespace private
/// (`MS_REC|MS_PRIVATE` on `/`), so that nothing mounted afterwards
/// propagates back to the host. Call it first thing in a new mount
/// namespace.
pub fn make_mounts_private() -> Result<(), FsError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|source| FsError::MakePrivate {
        path: "/".into(),
        source,
    })
}

/// Make `rootfs` the root of the calling process's mount namespace and
/// drop every other mount.
///
/// `rootfs` is first bind-mounted onto itself (recursively, so the mounts
/// of [`crate::mount_kernel_filesystems`] come along) unless it already is
/// a mount point (a recursive bind would drop unbindable mounts below it).
/// Then, as runc does:
/// `fchdir(rootfs)`, `pivot_root(".", ".")` (the old root ends up stacked on
/// top of the new one, so no put_old directory is ever created in the
/// container's writable layer), `fchdir(old root)`, make the old root
/// `MS_SLAVE|MS_REC` so the detach cannot propagate to the host,
/// `umount2(".", MNT_DETACH)`, and `chdir("/")`.
///
/// Needs a mount namespace of its own whose mounts are not shared (see
/// [`make_mounts_private`]).
pub fn pivot_root(rootfs: &Path) -> Result<(), FsError> {
    ensure_mount_point(rootfs)?;

    let dir_flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let old_root = open("/", dir_flags, Mode::empty()).map_err(|source| FsError::Open {
        path: "/".into(),
        source,
    })?;
    let new_root = open(rootfs, dir_flags, Mode::empty()).map_err(|source| FsError::Open {
        path: rootfs.to_path_buf(),
        source,
    })?;

    fchdir(&new_root).map_err(|source| FsError::Chdir {
        path: rootfs.to_path_buf(),
        source,
    })?;
    nix::unistd::pivot_root(".", ".").map_err(|source| FsError::PivotRoot {
        path: rootfs.to_path_buf(),
        source,
    })?;
    // The kernel leaves "." on the old root today, but does not promise it.
    fchdir(&old_root).map_err(|source| FsError::Chdir {
        path: "/".into(),
        source,
    })?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|source| FsError::MakeOldRootSlave {
        path: "/".into(),
        source,
    })?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|source| FsError::UnmountOldRoot {
        path: "/".into(),
        source,
    })?;
    chdir("/").map_err(|source| FsError::Chdir {
        path: "/".into(),
        source,
    })
}

/// Enter `rootfs` as `/` with chroot(2), for a container that shares the
/// runtime's mount namespace (a spec without one, which runc also runs):
/// `rootfs` becomes a mount point first (so a read-only root remounts the
/// container's bind, never the host's root), then `chroot` and
/// `chdir("/")`. The host's mounts stay where they are; the mounts made
/// below `rootfs` stay in the host's namespace until
/// [`unmount_below`] takes them away.
pub fn chroot_root(rootfs: &Path) -> Result<(), FsError> {
    ensure_mount_point(rootfs)?;
    chdir(rootfs).map_err(|source| FsError::Chdir {
        path: rootfs.to_path_buf(),
        source,
    })?;
    nix::unistd::chroot(".").map_err(|source| FsError::Chroot {
        path: rootfs.to_path_buf(),
        source,
    })?;
    chdir("/").map_err(|source| FsError::Chdir {
        path: "/".into(),
        source,
    })
}

/// Unmount (detached) every mount at or below `dir` in the caller's mount
/// namespace, the deepest first: what a container without a mount
/// namespace of its own left in the runtime's. Returns how many went.
pub fn unmount_below(dir: &Path) -> Result<usize, FsError> {
    let dir = std::fs::canonicalize(dir).map_err(|source| FsError::Stat {
        path: dir.to_path_buf(),
        source,
    })?;
    let mountinfo_path = Path::new("/proc/self/mountinfo");
    let mut unmounted = 0;
    // Stacked mounts show one at a time: read again until none is left.
    loop {
        let mountinfo =
            std::fs::read_to_string(mountinfo_path).map_err(|source| FsError::ReadMountInfo {
                path: mountinfo_path.to_path_buf(),
                source,
            })?;
        let mut below: Vec<PathBuf> = parse_mountinfo(&mountinfo)
            .into_iter()
            .map(|(mount_point, _, _)| mount_point)
            .filter(|mount_point| mount_point.starts_with(&dir))
            .collect();
        if below.is_empty() {
            return Ok(unmounted);
        }
        below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        let before = unmounted;
        for mount_point in below {
            match umount2(&mount_point, MntFlags::MNT_DETACH) {
                Ok(()) => unmounted += 1,
                // Gone with its parent meanwhile.
                Err(Errno::EINVAL | Errno::ENOENT) => {}
                Err(source) => {
                    return Err(FsError::Unmount {
                        path: mount_point,
                        source,
                    })
                }
            }
        }
        if unmounted == before {
            // Listed but not unmountable from here: leave it be.
            return Ok(unmounted);
        }
    }
}

/// Change the propagation of the mount at `target` (`MS_PRIVATE`,
/// `MS_SHARED`, `MS_SLAVE` or `MS_UNBINDABLE`, with `MS_REC` for the mounts
/// below it too; see [`crate::propagation_flags`]).
pub fn set_mount_propagation(target: &Path, propagation: MsFlags) -> Result<(), FsError> {
    mount(
        None::<&str>,
        target,
        None::<&str>,
        propagation,
        None::<&str>,
    )
    .map_err(|source| FsError::Propagation {
        target: target.to_path_buf(),
        propagation: describe_propagation(propagation),
        source,
    })
}

/// Bind-mount `path` onto itself, with the mounts below it, so that it is
/// a mount point (pivot_root(2) and [`move_root`] need one).
pub fn bind_onto_itself(path: &Path) -> Result<(), FsError> {
    bind_onto_itself_with(path, MsFlags::MS_BIND | MsFlags::MS_REC)
}

/// [`bind_onto_itself`] unless `path` already is the root of a mount: a
/// recursive bind would leave out the unbindable mounts below it.
fn ensure_mount_point(path: &Path) -> Result<(), FsError> {
    if is_mount_root(path)? {
        return Ok(());
    }
    bind_onto_itself(path)
}

/// Whether `path` is the root of a mount (statx's STATX_ATTR_MOUNT_ROOT).
fn is_mount_root(path: &Path) -> Result<bool, FsError> {
    let stat_error = |source| FsError::Stat {
        path: path.to_path_buf(),
        source,
    };
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| stat_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: statx is plain old data; all zeroes is a valid value.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statx buffer that outlive the call.
    let result = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            0,
            &mut stat,
        )
    };
    if result != 0 {
        return Err(stat_error(std::io::Error::last_os_error()));
    }
    let mount_root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    Ok(stat.stx_attributes_mask & mount_root != 0 && stat.stx_attributes & mount_root != 0)
}

fn bind_onto_itself_with(path: &Path, flags: MsFlags) -> Result<(), FsError> {
    mount(Some(path), path, None::<&str>, flags, None::<&str>).map_err(|source| FsError::Mount {
        target: path.to_path_buf(),
        fstype: "bind".into(),
        source,
    })
}

/// `true` for a propagation that is applied to the new root only after
/// entering it ([`finish_rootfs_propagation`]).
fn applied_after_entering(propagation: MsFlags) -> bool {
    !propagation.intersects(MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE)
}

/// Prepare the mount tree for a container whose rootfs is `rootfs` and
/// whose spec asks for `propagation` (`linux.rootfsPropagation`, see
/// [`crate::propagation_flags`]; `None` for runc's default, `rslave`).
/// Call it first thing in the container's new mount namespace.
///
/// As runc does: `/` gets `propagation` (so `rslave` lets host mounts
/// appear in the container but none go back, `rprivate` cuts both ways,
/// `rshared` lets mounts flow both ways through shared bind mounts); then
/// the mount `rootfs` is on is made private (slave for a slave
/// propagation), because pivot_root(2) refuses a shared parent and a mount
/// below a shared one would reach the host's namespace. The new root
/// itself becomes shared or unbindable only once the container is in it:
/// [`finish_rootfs_propagation`] does that.
pub fn set_rootfs_propagation(rootfs: &Path, propagation: Option<MsFlags>) -> Result<(), FsError> {
    let propagation = propagation.unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    // A shared "/" keeps the mounts in their host peer groups, so that a
    // bind mount with shared propagation can reach the host, as asked.
    set_mount_propagation(Path::new("/"), propagation)?;
    let parent = if propagation.contains(MsFlags::MS_SLAVE) {
        MsFlags::MS_SLAVE
    } else {
        MsFlags::MS_PRIVATE
    };
    // The mount that holds rootfs: climb until mount(2) stops saying
    // EINVAL (not a mount point).
    let mut path = rootfs;
    loop {
        match mount(None::<&str>, path, None::<&str>, parent, None::<&str>) {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL) if path != Path::new("/") => {
                path = path.parent().unwrap_or(Path::new("/"));
            }
            Err(source) => {
                return Err(FsError::Propagation {
                    target: path.to_path_buf(),
                    propagation: describe_propagation(parent),
                    source,
                })
            }
        }
    }
}

/// After [`pivot_root`] or [`move_root`]: give `/` the shared or
/// unbindable propagation [`set_rootfs_propagation`] could not apply
/// before (private and slave ones are already in place: nothing to do).
pub fn finish_rootfs_propagation(propagation: Option<MsFlags>) -> Result<(), FsError> {
    match propagation {
        Some(p) if applied_after_entering(p) => set_mount_propagation(Path::new("/"), p),
        _ => Ok(()),
    }
}

/// The mounts of /proc/self/mountinfo text: (mount point, root of the
/// mount within its filesystem, filesystem type).
fn parse_mountinfo(text: &str) -> Vec<(PathBuf, String, String)> {
    text.lines()
        .filter_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            let mut fields = fields.split(' ');
            let root = unescape_mountinfo(fields.nth(3)?);
            let mount_point = unescape_mountinfo(fields.next()?);
            let fstype = rest.split(' ').next()?.to_owned();
            Some((PathBuf::from(mount_point), root, fstype))
        })
        .collect()
}

/// Undo mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Make `rootfs` the root of the calling process without pivot_root(2)
/// (for a rootfs on a filesystem that cannot be pivoted from, such as an
/// initramfs; runc's `--no-pivot`): bind `rootfs` onto itself, move that
/// mount onto `/` (`MS_MOVE`), `chroot(".")` and `chdir("/")`.
///
/// The host's mounts stay in the mount namespace underneath (unlike
/// [`pivot_root`], nothing is detached), so first, as runc does, every
/// whole procfs and sysfs mount outside `rootfs` is made a slave and
/// detached (or, where the kernel refuses, covered with an empty tmpfs):
/// the kernel lets a container mount a new procfs or sysfs only where a
/// full one is visible, and chroot(2) alone would leave the host's
/// reachable. After this, `/proc/self/fd` is the container's: mount the
/// container's /proc into `rootfs` before.
///
/// Needs a mount namespace of its own whose mounts are not shared.
pub fn move_root(rootfs: &Path) -> Result<(), FsError> {
    let rootfs = std::fs::canonicalize(rootfs).map_err(|source| FsError::Stat {
        path: rootfs.to_path_buf(),
        source,
    })?;
    ensure_mount_point(&rootfs)?;
    let mountinfo_path = Path::new("/proc/self/mountinfo");
    let mountinfo =
        std::fs::read_to_string(mountinfo_path).map_err(|source| FsError::ReadMountInfo {
            path: mountinfo_path.to_path_buf(),
            source,
        })?;
    for (mount_point, root, fstype) in parse_mountinfo(&mountinfo) {
        if root != "/" || !matches!(fstype.as_str(), "proc" | "sysfs") {
            continue;
        }
        if mount_point.starts_with(&rootfs) {
            continue;
        }
        // Never let the detach reach the host.
        match mount(
            None::<&str>,
            &mount_point,
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => {}
            // Gone with a parent detached before.
            Err(Errno::ENOENT) => continue,
            Err(source) => {
                return Err(FsError::Propagation {
                    target: mount_point,
                    propagation: "rslave".into(),
                    source,
                })
            }
        }
        match umount2(&mount_point, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            // Locked (a mount from a more privileged namespace): cover it.
            Err(Errno::EINVAL | Errno::EPERM) => mount(
                Some("tmpfs"),
                &mount_point,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|source| FsError::Unmount {
                path: mount_point.clone(),
                source,
            })?,
            Err(source) => {
                return Err(FsError::Unmount {
                    path: mount_point,
                    source,
                })
            }
        }
    }

    let new_root = open(
        &rootfs,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| FsError::Open {
        path: rootfs.clone(),
        source,
    })?;
    fchdir(&new_root).map_err(|source| FsError::Chdir {
        path: rootfs.clone(),
        source,
    })?;
    mount(
        Some(&rootfs),
        "/",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(|source| FsError::MoveRoot {
        path: rootfs.clone(),
        source,
    })?;
    chroot(".").map_err(|source| FsError::Chroot {
        path: rootfs.clone(),
        source,
    })?;
    chdir("/").map_err(|source| FsError::Chdir {
        path: "/".into(),
        source,
    })
}

/// Make the root mount read-only (the spec's `root.readonly`), after
/// [`pivot_root`] or [`move_root`]: `MS_BIND | MS_REMOUNT | MS_RDONLY` on
/// `/`, keeping its nosuid, nodev, noexec and atime flags (which the kernel
/// may have locked). Only the root mount changes: /proc, /dev, volumes
/// keep theirs. `/` must then report read-only
/// ([`FsError::PathStillWritable`] otherwise).
pub fn remount_root_readonly() -> Result<(), FsError> {
    let root = Path::new("/");
    let flags_of = || -> Result<FsFlags, FsError> {
        statvfs(root)
            .map(|st| st.flags())
            .map_err(|e| FsError::Stat {
                path: root.to_path_buf(),
                source: e.into(),
            })
    };
    let kept = current_mount_flags(flags_of()?) & LOCKED_FLAGS;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept;
    mount(None::<&str>, root, None::<&str>, flags, None::<&str>).map_err(|source| {
        FsError::Remount {
            target: root.to_path_buf(),
            flags: describe_flags(flags - MsFlags::MS_REMOUNT),
            source,
        }
    })?;
    if !flags_of()?.contains(FsFlags::ST_RDONLY) {
        return Err(FsError::PathStillWritable {
            path: root.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
23 1 0:22 / /sys rw,nosuid shared:2 - sysfs sysfs rw
80 23 0:22 /kernel /mnt/with\\040space rw master:3 - sysfs sysfs rw
81 1 0:40 / /tmp rw - tmpfs tmpfs rw,size=100k
broken line
";
        let mounts = parse_mountinfo(text);
        assert_eq!(
            mounts,
            vec![
                (PathBuf::from("/proc"), "/".into(), "proc".into()),
                (PathBuf::from("/sys"), "/".into(), "sysfs".into()),
                (
                    PathBuf::from("/mnt/with space"),
                    "/kernel".into(),
                    "sysfs".into()
                ),
                (PathBuf::from("/tmp"), "/".into(), "tmpfs".into()),
            ]
        );
        assert_eq!(unescape_mountinfo("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_mountinfo("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn which_propagations_wait_for_the_new_root() {
        assert!(applied_after_entering(MsFlags::MS_SHARED | MsFlags::MS_REC));
        assert!(applied_after_entering(MsFlags::MS_UNBINDABLE));
        assert!(!applied_after_entering(MsFlags::MS_SLAVE | MsFlags::MS_REC));
        assert!(!applied_after_entering(MsFlags::MS_PRIVATE));
    }
}
