//! Entering the rootfs with pivot_root(2).

use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, fchdir};

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
/// of [`crate::mount_kernel_filesystems`] come along) so that it is a mount
/// point even if it was a plain directory. Then, as runc does:
/// `fchdir(rootfs)`, `pivot_root(".", ".")` (the old root ends up stacked on
/// top of the new one, so no put_old directory is ever created in the
/// container's writable layer), `fchdir(old root)`, make the old root
/// `MS_SLAVE|MS_REC` so the detach cannot propagate to the host,
/// `umount2(".", MNT_DETACH)`, and `chdir("/")`.
///
/// Needs a mount namespace of its own whose mounts are not shared (see
/// [`make_mounts_private`]).
pub fn pivot_root(rootfs: &Path) -> Result<(), FsError> {
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|source| FsError::Mount {
        target: rootfs.to_path_buf(),
        fstype: "bind".into(),
        source,
    })?;

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
