//! Device nodes and the standard symlinks in the container's /dev.

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, major, makedev, minor, mknodat, FileStat, Mode, SFlag};
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::kernel::open_kernel_mount_point;
use crate::resolve::{
    bind_mount_fds, open_at_root, open_trusted_dir, proc_fd_path, Create, Resolver,
};
use crate::volume::clean_components;
use crate::FsError;

/// What kind of special file a device node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A character device (OCI types `c` and `u`).
    Char,
    /// A block device (OCI type `b`).
    Block,
    /// A named pipe (OCI type `p`); it has no device number.
    Fifo,
}

impl DeviceKind {
    fn file_type(self) -> SFlag {
        match self {
            Self::Char => SFlag::S_IFCHR,
            Self::Block => SFlag::S_IFBLK,
            Self::Fifo => SFlag::S_IFIFO,
        }
    }
}

/// One entry of a spec's `linux.devices`, in this crate's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Where, inside the container (`/dev/fuse`). Also the host path a
    /// node is bind-mounted from when it cannot be created.
    pub path: String,
    /// Character, block or fifo.
    pub kind: DeviceKind,
    /// The device's major number (ignored for a fifo).
    pub major: u64,
    /// The device's minor number (ignored for a fifo).
    pub minor: u64,
    /// Permission bits (the spec's default is 0666); file type bits are
    /// ignored.
    pub file_mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl DeviceNode {
    fn char_device(path: &str, major: u64, minor: u64) -> Self {
        Self {
            path: path.to_owned(),
            kind: DeviceKind::Char,
            major,
            minor,
            file_mode: 0o666,
            uid: 0,
            gid: 0,
        }
    }

    fn rdev(&self) -> u64 {
        match self.kind {
            DeviceKind::Fifo => 0,
            DeviceKind::Char | DeviceKind::Block => makedev(self.major, self.minor),
        }
    }
}

/// The devices every container has (runc's set): /dev/null, random, full,
/// tty, zero and urandom, character devices 0666 owned by root.
pub fn default_devices() -> Vec<DeviceNode> {
    vec![
        DeviceNode::char_device("/dev/null", 1, 3),
        DeviceNode::char_device("/dev/random", 1, 8),
        DeviceNode::char_device("/dev/full", 1, 7),
        DeviceNode::char_device("/dev/tty", 5, 0),
        DeviceNode::char_device("/dev/zero", 1, 5),
        DeviceNode::char_device("/dev/urandom", 1, 9),
    ]
}

/// [`create_devices`] with [`default_devices`]. A device the spec lists
/// too can be created afterwards with [`create_devices`]: its mode and
/// owner then win.
pub fn create_default_devices(rootfs: &Path, bind_from_host: bool) -> Result<(), FsError> {
    create_devices(rootfs, &default_devices(), bind_from_host)
}

/// Create each device node inside `rootfs` (before [`crate::pivot_root`];
/// or `/` after it). Needs `/proc/self/fd`.
///
/// The node's parent directories are resolved inside `rootfs` as
/// [`crate::open_in_root`] does (created 0755 if missing); a node below
/// `/dev` additionally needs `/dev` to be a real directory, not a symlink
/// ([`FsError::MountPointIsSymlink`]). `/dev/ptmx` is skipped: it is a
/// link to the devpts instance's ptmx ([`create_dev_symlinks`]).
///
/// Without `bind_from_host`, the node is made with mknod(2), then checked
/// through an `O_PATH|O_NOFOLLOW` handle to be the asked-for type and
/// device number, and given `file_mode` (whatever the umask) and
/// `uid`:`gid`. A node that already exists is accepted if it is that same
/// device (and given the mode and owner), else [`FsError::DeviceMismatch`].
/// If mknod(2) is not permitted (EPERM, as in a user namespace), the node
/// is bind-mounted as below.
///
/// With `bind_from_host` (a container in a user namespace cannot mknod),
/// an empty file is created at the node's path (or the existing node is
/// used) and the host's node at the same path, checked to be the asked-for
/// device, is bind-mounted on it; it keeps the host's mode and owner.
pub fn create_devices(
    rootfs: &Path,
    devices: &[DeviceNode],
    bind_from_host: bool,
) -> Result<(), FsError> {
    if devices.is_empty() {
        return Ok(());
    }
    let root = open_trusted_dir(rootfs)?;
    for node in devices {
        create_device(&root, rootfs, node, bind_from_host)?;
    }
    Ok(())
}

fn create_device(
    root: &OwnedFd,
    rootfs: &Path,
    node: &DeviceNode,
    bind_from_host: bool,
) -> Result<(), FsError> {
    let invalid = |reason: &str| FsError::InvalidDevice {
        path: node.path.clone(),
        reason: reason.to_owned(),
    };
    if node.path.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    let components = clean_components(&node.path);
    let Some((name, parents)) = components.split_last() else {
        return Err(invalid("it names the root"));
    };
    if components == ["dev", "ptmx"] {
        return Ok(());
    }
    let shown = rootfs.join(components.join("/"));
    if parents.first() == Some(&"dev") {
        open_kernel_mount_point(root, rootfs, "/dev", true)?;
    }
    let parent = open_at_root(
        root,
        rootfs,
        &format!("/{}", parents.join("/")),
        Create::Dir,
        Resolver::Auto,
    )?;
    if bind_from_host {
        return bind_device(&parent, name, node, &shown);
    }
    let mode = Mode::from_bits_truncate(node.file_mode & 0o7777);
    match mknodat(&parent, *name, node.kind.file_type(), mode, node.rdev()) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(Errno::EPERM) => return bind_device(&parent, name, node, &shown),
        Err(source) => {
            return Err(FsError::Mknod {
                path: shown,
                source,
            })
        }
    }
    let fd = openat(
        &parent,
        *name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| FsError::Open {
        path: shown.clone(),
        source,
    })?;
    check_device(&stat(&fd, &shown)?, node, &shown)?;
    // mknod(2) applied the umask; chmod through the handle's magic link
    // (fchmod does not take an O_PATH descriptor).
    std::fs::set_permissions(
        proc_fd_path(&fd),
        std::fs::Permissions::from_mode(node.file_mode & 0o7777),
    )
    .map_err(|source| FsError::Chmod {
        path: shown.clone(),
        source,
    })?;
    fchownat(
        &fd,
        "",
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
        AtFlags::AT_EMPTY_PATH,
    )
    .map_err(|source| FsError::Chown {
        path: shown,
        source,
    })
}

fn stat(fd: &OwnedFd, shown: &Path) -> Result<FileStat, FsError> {
    fstat(fd).map_err(|e| FsError::Stat {
        path: shown.to_path_buf(),
        source: e.into(),
    })
}

/// What a file is, for [`FsError::DeviceMismatch`].
fn describe(st: &FileStat) -> String {
    let numbers = format!("{}:{}", major(st.st_rdev), minor(st.st_rdev));
    match st.st_mode & libc::S_IFMT {
        libc::S_IFCHR => format!("char device {numbers}"),
        libc::S_IFBLK => format!("block device {numbers}"),
        libc::S_IFIFO => "a fifo".to_owned(),
        libc::S_IFLNK => "a symlink".to_owned(),
        libc::S_IFREG => "a regular file".to_owned(),
        libc::S_IFDIR => "a directory".to_owned(),
        _ => "a special file".to_owned(),
    }
}

/// `st` must be the device `node` asks for.
fn check_device(st: &FileStat, node: &DeviceNode, shown: &Path) -> Result<(), FsError> {
    let same_type = st.st_mode & libc::S_IFMT == node.kind.file_type().bits();
    let same_number = node.kind == DeviceKind::Fifo || st.st_rdev == node.rdev();
    if same_type && same_number {
        Ok(())
    } else {
        Err(FsError::DeviceMismatch {
            path: shown.to_path_buf(),
            found: describe(st),
        })
    }
}

/// Bind-mount the host's node at `node.path` onto `name` in `parent`
/// (an empty file created for it if missing).
fn bind_device(
    parent: &OwnedFd,
    name: &str,
    node: &DeviceNode,
    shown: &Path,
) -> Result<(), FsError> {
    let host_path = PathBuf::from(&node.path);
    let host =
        open(&host_path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(|source| {
            FsError::Open {
                path: host_path.clone(),
                source,
            }
        })?;
    check_device(&stat(&host, &host_path)?, node, &host_path)?;

    // O_WRONLY|O_CREAT|O_EXCL only ever creates, so an existing node (a
    // tty, a fifo) is never opened for real; that one is opened O_PATH.
    let target = match openat(
        parent,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::EEXIST) => {
            let fd = openat(
                parent,
                name,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|source| FsError::Open {
                path: shown.to_path_buf(),
                source,
            })?;
            let st = stat(&fd, shown)?;
            if matches!(st.st_mode & libc::S_IFMT, libc::S_IFLNK | libc::S_IFDIR) {
                return Err(FsError::DeviceMismatch {
                    path: shown.to_path_buf(),
                    found: describe(&st),
                });
            }
            fd
        }
        Err(source) => {
            return Err(FsError::CreateFile {
                path: shown.to_path_buf(),
                source,
            })
        }
    };
    bind_mount_fds(&host, &target, false, shown)
}

/// The links in /dev: name, target.
const DEV_SYMLINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Create the standard links in `<rootfs>/dev` (runc's set): `fd ->
/// /proc/self/fd`, `stdin`, `stdout`, `stderr -> /proc/self/fd/0..2`,
/// `core -> /proc/kcore` if the container's /proc (mounted already) has a
/// kcore, and `ptmx -> pts/ptmx` (replacing whatever `ptmx` was, so that
/// the container's own devpts instance is used).
///
/// `<rootfs>/dev` must be a real directory ([`FsError::MountPointIsSymlink`]
/// otherwise; created if missing); a link that already exists is left as
/// it is (except `ptmx`).
pub fn create_dev_symlinks(rootfs: &Path) -> Result<(), FsError> {
    let root = open_trusted_dir(rootfs)?;
    let dev = open_kernel_mount_point(&root, rootfs, "/dev", true)?;
    let dev_path = rootfs.join("dev");
    let link = |name: &str, target: &str| match symlinkat(target, &dev, name) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(FsError::Symlink {
            path: dev_path.join(name),
            target: target.into(),
            source: e.into(),
        }),
    };
    for &(name, target) in DEV_SYMLINKS {
        link(name, target)?;
    }
    // /proc/kcore exists only with CONFIG_PROC_KCORE.
    let kcore = open_at_root(
        &root,
        rootfs,
        "/proc/kcore",
        Create::Nothing,
        Resolver::Auto,
    );
    if kcore.is_ok_and(|fd| fstatfs(&fd).is_ok_and(|s| s.filesystem_type() == PROC_SUPER_MAGIC)) {
        link("core", "/proc/kcore")?;
    }
    match unlinkat(&dev, "ptmx", UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => {
            return Err(FsError::Symlink {
                path: dev_path.join("ptmx"),
                target: "pts/ptmx".into(),
                source: e.into(),
            })
        }
    }
    link("ptmx", "pts/ptmx")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn defaults_are_runc_s() {
        let devices = default_devices();
        let names: Vec<&str> = devices.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "/dev/null",
                "/dev/random",
                "/dev/full",
                "/dev/tty",
                "/dev/zero",
                "/dev/urandom"
            ]
        );
        for d in &devices {
            assert_eq!(
                (d.kind, d.file_mode, d.uid, d.gid),
                (DeviceKind::Char, 0o666, 0, 0)
            );
        }
        assert_eq!(devices[0].rdev(), makedev(1, 3));
        assert_eq!(devices[3].rdev(), makedev(5, 0));
    }

    #[test]
    fn bad_paths_are_refused() {
        let rootfs = tempfile::tempdir().unwrap();
        for path in ["/", "", "/..", "/dev/\0"] {
            let node = DeviceNode {
                path: path.into(),
                ..DeviceNode::char_device("", 1, 3)
            };
            assert!(
                matches!(
                    create_devices(rootfs.path(), &[node], false),
                    Err(FsError::InvalidDevice { .. })
                ),
                "{path:?}"
            );
        }
    }

    #[test]
    fn ptmx_is_left_to_the_symlinks() {
        let rootfs = tempfile::tempdir().unwrap();
        create_devices(
            rootfs.path(),
            &[DeviceNode::char_device("/dev/ptmx", 5, 2)],
            false,
        )
        .unwrap();
        assert!(!rootfs.path().join("dev").exists());
    }

    #[test]
    fn a_symlinked_dev_is_refused() {
        let rootfs = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        symlink(elsewhere.path(), rootfs.path().join("dev")).unwrap();
        let err = create_default_devices(rootfs.path(), false).unwrap_err();
        assert!(
            matches!(err, FsError::MountPointIsSymlink { .. }),
            "{err:?}"
        );
        let err = create_dev_symlinks(rootfs.path()).unwrap_err();
        assert!(
            matches!(err, FsError::MountPointIsSymlink { .. }),
            "{err:?}"
        );
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_existing_fifo_of_another_kind_is_a_mismatch() {
        // mknod of a fifo needs no privilege, so this runs as anyone.
        let rootfs = tempfile::tempdir().unwrap();
        let fifo = DeviceNode {
            path: "/run/pipe".into(),
            kind: DeviceKind::Fifo,
            major: 0,
            minor: 0,
            file_mode: 0o640,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        };
        create_devices(rootfs.path(), std::slice::from_ref(&fifo), false).unwrap();
        let meta = std::fs::symlink_metadata(rootfs.path().join("run/pipe")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        // Again: accepted, mode re-applied.
        let again = DeviceNode {
            file_mode: 0o600,
            ..fifo.clone()
        };
        create_devices(rootfs.path(), &[again], false).unwrap();
        let meta = std::fs::metadata(rootfs.path().join("run/pipe")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        // A regular file where a fifo is asked for.
        std::fs::write(rootfs.path().join("run/file"), b"").unwrap();
        let err = create_devices(
            rootfs.path(),
            &[DeviceNode {
                path: "/run/file".into(),
                ..fifo
            }],
            false,
        )
        .unwrap_err();
        assert!(
            matches!(err, FsError::DeviceMismatch { ref found, .. } if found == "a regular file"),
            "{err:?}"
        );
    }

    #[test]
    fn dev_symlinks_without_proc() {
        let rootfs = tempfile::tempdir().unwrap();
        let dev = rootfs.path().join("dev");
        std::fs::create_dir(&dev).unwrap();
        std::fs::write(dev.join("ptmx"), b"").unwrap();
        symlink("/elsewhere", dev.join("stdin")).unwrap();
        create_dev_symlinks(rootfs.path()).unwrap();
        let link = |n: &str| std::fs::read_link(dev.join(n)).unwrap();
        assert_eq!(link("fd"), Path::new("/proc/self/fd"));
        assert_eq!(link("stdout"), Path::new("/proc/self/fd/1"));
        assert_eq!(link("stderr"), Path::new("/proc/self/fd/2"));
        // Existing links are kept; ptmx is replaced.
        assert_eq!(link("stdin"), Path::new("/elsewhere"));
        assert_eq!(link("ptmx"), Path::new("pts/ptmx"));
        // No procfs in this rootfs, so no core link.
        assert!(std::fs::symlink_metadata(dev.join("core")).is_err());
        // Idempotent.
        create_dev_symlinks(rootfs.path()).unwrap();
    }
}
