//! The mounts of an OCI runtime spec (`"mounts": [...]`), one at a time,
//! inside the container's rootfs.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, FileStat, Mode};
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};
use nix::sys::statvfs::fstatvfs;

use crate::kernel::open_kernel_mount_point;
use crate::options::{
    current_mount_flags, describe_flags, describe_propagation, parse_mount_options,
    set_attrs_recursive, MountOptions, RecursiveAttrs, ATIME_FLAGS, LOCKED_FLAGS,
};
use crate::resolve::{
    bind_mount_fds, fd_path, is_dir, open_at_root, open_trusted_dir, proc_fd_path, Create, Resolver,
};
use crate::volume::{clean_components, kind};
use crate::FsError;

/// One entry of a spec's `mounts`, in this crate's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where, inside the container (absolute; a relative one is taken
    /// from `/`). Resolved inside the rootfs when mounted.
    pub destination: String,
    /// The filesystem type (`proc`, `tmpfs`, `devpts`, `cgroup`, ...);
    /// `bind` (or a `bind`/`rbind` option, whatever the type) makes a bind
    /// mount.
    pub fstype: Option<String>,
    /// For a bind mount, the host path to bind (absolute); otherwise the
    /// source string mount(2) is given (the type's name if `None`).
    pub source: Option<PathBuf>,
    /// The options, as [`crate::parse_mount_options`] reads them.
    pub options: Vec<String>,
}

impl MountEntry {
    fn new(destination: &str, fstype: &str, source: &str, options: &[&str]) -> Self {
        Self {
            destination: destination.to_owned(),
            fstype: Some(fstype.to_owned()),
            source: Some(PathBuf::from(source)),
            options: options.iter().map(|&o| o.to_owned()).collect(),
        }
    }
}

/// The kernel filesystems every container gets, as docker's default spec
/// lists them (and in its order): /proc, a 64 MiB tmpfs /dev, /dev/pts (a
/// new devpts instance), read-only /sys, /dev/mqueue and a 64 MiB /dev/shm.
///
/// docker's list also has `/sys/fs/cgroup`; add [`default_cgroup_mount`]
/// after /sys where the container should see its cgroup.
pub fn default_mounts() -> Vec<MountEntry> {
    vec![
        MountEntry::new("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        MountEntry::new(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        MountEntry::new(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        MountEntry::new(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        MountEntry::new(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        MountEntry::new(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    ]
}

/// docker's `/sys/fs/cgroup` entry: a read-only `cgroup` mount (cgroup2,
/// see [`mount_entry`]), nosuid, noexec, nodev.
pub fn default_cgroup_mount() -> MountEntry {
    MountEntry::new(
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &["ro", "nosuid", "noexec", "nodev"],
    )
}

/// Files inside /proc that may be mounted over (the ones lxcfs emulates;
/// runc's list), relative to the root.
const PROC_FILES_ALLOWED: &[&str] = &[
    "proc/cpuinfo",
    "proc/diskstats",
    "proc/meminfo",
    "proc/stat",
    "proc/swaps",
    "proc/uptime",
    "proc/loadavg",
    "proc/slabinfo",
    "proc/sys/kernel/ns_last_pid",
    "proc/sys/crypto/fips_enabled",
];

/// Whether something may be mounted on `rel` (the mount point's real path
/// relative to the root): not on the root itself; on /proc only a procfs;
/// inside /proc only over the files lxcfs emulates.
fn check_mount_point(rel: &Path, mounts_a_procfs: bool) -> Result<(), &'static str> {
    if rel.as_os_str().is_empty() {
        return Err("it is the root of the container itself");
    }
    if rel == Path::new("proc") {
        return if mounts_a_procfs {
            Ok(())
        } else {
            Err("only a procfs can be mounted on /proc")
        };
    }
    if rel.starts_with("proc") && !PROC_FILES_ALLOWED.iter().any(|f| rel == Path::new(f)) {
        return Err("it is inside /proc");
    }
    Ok(())
}

/// The mount point's path relative to the root, as the kernel reports
/// them (so symlinks are already resolved).
fn real_relative_path(
    root: &OwnedFd,
    rootfs: &Path,
    destination: &str,
    target: &OwnedFd,
) -> Result<PathBuf, FsError> {
    let real_root = fd_path(root)?;
    let real = fd_path(target)?;
    match real.strip_prefix(&real_root) {
        Ok(rel) if real.is_absolute() => Ok(rel.to_path_buf()),
        _ => Err(FsError::OutsideRoot {
            root: rootfs.to_path_buf(),
            path: destination.to_owned(),
            resolved: real,
        }),
    }
}

/// `/proc`, `/sys` and `/dev`: mount points that must be real directories
/// (a symlink there has redirected mounts before: CVE-2019-19921).
fn is_kernel_destination(destination: &str) -> bool {
    matches!(
        clean_components(destination).as_slice(),
        ["proc"] | ["sys"] | ["dev"]
    )
}

/// Mount one spec mount inside `rootfs` (the container's rootfs, before
/// [`crate::pivot_root`]; or `/` after it), in the container's own mount
/// namespace. Needs `/proc/self/fd`.
///
/// The destination is resolved inside `rootfs` as [`crate::open_in_root`]
/// does (image symlinks followed as if `rootfs` were `/`, never out of it;
/// /proc magic links refused); missing components are created (0755), the
/// last one as an empty file when a bind mount's source is not a directory.
/// Mounting on the rootfs itself, on /proc (except a procfs), or inside
/// /proc (except the files lxcfs emulates) is refused
/// ([`FsError::ForbiddenMountPoint`]). For `proc` and `sysfs` mounts, and
/// for the destinations `/proc`, `/sys` and `/dev`, every component must be
/// a real directory: a symlink is [`FsError::MountPointIsSymlink`]. Every
/// mount goes through an `O_PATH` handle of the mount point
/// (`/proc/self/fd/N`), so a symlink swapped in after resolution is not
/// followed.
///
/// A bind mount (type `bind`, or a `bind`/`rbind` option with any type)
/// opens its source (an absolute host path) first, bind-mounts it (`rbind`:
/// with the mounts below it), checks that the mount point now shows the
/// source, then, if the options name any flag (`ro`, `nosuid`, `rw`, ...),
/// remounts it `MS_BIND | MS_REMOUNT` with exactly those flags; when the
/// kernel refuses because the source's flags are locked (a mount from a
/// more privileged namespace), the remount is retried keeping the locked
/// flags, unless the options ask to clear one of them
/// ([`FsError::LockedMountFlags`]).
///
/// Any other type is mounted fresh with the options' flags and data. A
/// tmpfs on a directory that already existed starts with that directory's
/// mode (a `mode=` option overrides it), as runc does. `cgroup` mounts
/// cgroup2 (this crate does not mount cgroup v1 hierarchies; on a kernel
/// without cgroup2 that is [`FsError::CgroupV2Unavailable`]).
///
/// Then the propagation options are applied in order, then the recursive
/// attributes (`rro`, `rnosuid`, ...) with mount_setattr(2)
/// `AT_RECURSIVE` (Linux 5.12+).
///
/// A read-only mount is read-only at once, so mount points and device
/// nodes below it must exist before (runc delays `ro` of tmpfs and /dev
/// until the end instead). Mounts made before an error are not undone: they
/// vanish with the mount namespace.
pub fn mount_entry(rootfs: &Path, entry: &MountEntry) -> Result<(), FsError> {
    let invalid = |reason: String| FsError::InvalidMount {
        destination: entry.destination.clone(),
        reason,
    };
    let mut options = parse_mount_options(&entry.options)?;
    let fstype = entry.fstype.as_deref().filter(|t| !t.is_empty());
    if fstype == Some("bind") {
        options.flags |= MsFlags::MS_BIND;
    }
    if entry.destination.contains('\0') {
        return Err(invalid("it contains a NUL byte".into()));
    }
    if options.copy_up && (fstype != Some("tmpfs") || options.is_bind()) {
        return Err(invalid("tmpcopyup is only for a tmpfs".into()));
    }
    if options.copy_into_source && !options.is_bind() {
        return Err(invalid("copyup is only for a bind mount".into()));
    }
    if clean_components(&entry.destination).is_empty() {
        return Err(invalid("nothing can be mounted on the root itself".into()));
    }
    let root = open_trusted_dir(rootfs)?;
    if options.is_bind() {
        mount_bind(&root, rootfs, entry, &options)
    } else {
        let fstype = fstype.ok_or_else(|| invalid("it has no filesystem type".into()))?;
        mount_filesystem(&root, rootfs, entry, fstype, &options)
    }
}

/// A `cgroup` mount where cgroup v1 hierarchies are in use: a tmpfs at
/// the entry's destination holding, for each `(name, directory)` of
/// `views`, a bind of that (host) directory, as runc mounts it for a
/// container on a v1 or hybrid host: the container's own cgroup on each
/// hierarchy, so that a program finds its limits where it looks
/// (`memory/memory.limit_in_bytes`). The entry's `ro`, `nosuid`, `nodev`
/// and `noexec` apply to the tmpfs and every bind (one recursive
/// mount_setattr(2)). The destination is resolved like any
/// [`mount_entry`]; the binds go into the fresh tmpfs, which nothing else
/// can have touched. A view name must be a single path component.
pub fn mount_cgroup_view(
    rootfs: &Path,
    entry: &MountEntry,
    views: &[(String, PathBuf)],
) -> Result<(), FsError> {
    let options = parse_mount_options(&entry.options)?;
    let invalid = |reason: String| FsError::InvalidMount {
        destination: entry.destination.clone(),
        reason,
    };
    if let Some((name, _)) = views.iter().find(|(name, _)| {
        name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".."
    }) {
        return Err(invalid(format!(
            "{name:?} is not a name for a cgroup hierarchy"
        )));
    }
    let tmpfs = MountEntry {
        destination: entry.destination.clone(),
        fstype: Some("tmpfs".into()),
        source: Some(PathBuf::from("cgroup")),
        options: vec!["mode=755".into()],
    };
    mount_entry(rootfs, &tmpfs)?;
    let root = open_trusted_dir(rootfs)?;
    let dir = reopen(&root, rootfs, &entry.destination)?;
    let dir_path = proc_fd_path(&dir);
    let shown = shown(rootfs, &entry.destination);
    for (name, source) in views {
        let target = dir_path.join(name);
        nix::unistd::mkdir(&target, Mode::from_bits_truncate(0o755)).map_err(|e| {
            FsError::CreateDir {
                path: shown.join(name),
                source: e.into(),
            }
        })?;
        mount(
            Some(source.as_path()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|source| FsError::Mount {
            target: shown.join(name),
            fstype: "bind".into(),
            source,
        })?;
    }
    let mut attrs = RecursiveAttrs::default();
    for (flag, attr) in [
        (MsFlags::MS_RDONLY, RecursiveAttrs::RDONLY),
        (MsFlags::MS_NOSUID, RecursiveAttrs::NOSUID),
        (MsFlags::MS_NODEV, RecursiveAttrs::NODEV),
        (MsFlags::MS_NOEXEC, RecursiveAttrs::NOEXEC),
    ] {
        if options.flags.contains(flag) {
            attrs.set |= attr;
        }
    }
    if !attrs.is_empty() {
        // The mount on `dir_path` now (the handle names what is below it).
        let mounted = reopen(&root, rootfs, &entry.destination)?;
        crate::options::set_attrs_recursive(&mounted, attrs).map_err(|source| {
            FsError::SetAttributes {
                target: shown.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

fn shown(rootfs: &Path, destination: &str) -> PathBuf {
    rootfs.join(destination.trim_start_matches('/'))
}

fn stat(fd: &OwnedFd, shown: &Path) -> Result<FileStat, FsError> {
    fstat(fd).map_err(|e| FsError::Stat {
        path: shown.to_path_buf(),
        source: e.into(),
    })
}

/// Look the mount point up again (after mounting on it, the old handle
/// names what is underneath); kernel destinations without following
/// symlinks, like the first time.
fn reopen(root: &OwnedFd, rootfs: &Path, destination: &str) -> Result<OwnedFd, FsError> {
    if is_kernel_destination(destination) {
        open_kernel_mount_point(root, rootfs, destination, false)
    } else {
        open_at_root(root, rootfs, destination, Create::Nothing, Resolver::Auto)
    }
}

fn mount_bind(
    root: &OwnedFd,
    rootfs: &Path,
    entry: &MountEntry,
    options: &MountOptions,
) -> Result<(), FsError> {
    let destination = entry.destination.as_str();
    let shown = shown(rootfs, destination);
    let source = match &entry.source {
        Some(source) if source.is_absolute() => source,
        Some(source) => {
            return Err(FsError::InvalidMount {
                destination: destination.to_owned(),
                reason: format!("the bind mount source {} is not absolute", source.display()),
            })
        }
        None => {
            return Err(FsError::InvalidMount {
                destination: destination.to_owned(),
                reason: "a bind mount needs a source".into(),
            })
        }
    };
    // The host side is trusted: symlinks in it are followed.
    let src = open(source, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
        FsError::Open {
            path: source.clone(),
            source: e,
        }
    })?;
    let src_st = stat(&src, source)?;
    let src_is_dir = is_dir(&src_st);

    let target = if is_kernel_destination(destination) {
        open_kernel_mount_point(root, rootfs, destination, true)?
    } else {
        let create = if src_is_dir {
            Create::Dir
        } else {
            Create::File
        };
        open_at_root(root, rootfs, destination, create, Resolver::Auto)?
    };
    let target_is_dir = is_dir(&stat(&target, &shown)?);
    if target_is_dir != src_is_dir {
        return Err(FsError::VolumeKindMismatch {
            host: source.clone(),
            host_kind: kind(src_is_dir),
            target: shown,
            target_kind: kind(target_is_dir),
        });
    }
    let source_is_procfs = fstatfs(&src).is_ok_and(|s| s.filesystem_type() == PROC_SUPER_MAGIC);
    let rel = real_relative_path(root, rootfs, destination, &target)?;
    check_mount_point(&rel, source_is_procfs).map_err(|reason| FsError::ForbiddenMountPoint {
        target: shown.clone(),
        reason,
    })?;

    if options.copy_into_source && src_is_dir {
        copy_into_empty_source(&src, source, &target, &shown)?;
    }
    let recursive = options.flags.contains(MsFlags::MS_REC);
    bind_mount_fds(&src, &target, recursive, &shown)?;
    drop(target);

    let mounted = reopen(root, rootfs, destination)?;
    let st = stat(&mounted, &shown)?;
    if (st.st_dev, st.st_ino) != (src_st.st_dev, src_st.st_ino) {
        return Err(FsError::MountPointMoved { target: shown });
    }
    remount_bind(&mounted, &shown, options)?;
    apply_propagation_and_attributes(&mounted, &shown, options)
}

/// `copyup`: fill the (host) source directory with the content of the
/// rootfs directory it is about to cover, if the source is empty and the
/// mount point already had something in it (docker's copy-up of a new
/// volume). The mount point was resolved inside the rootfs; its entries
/// are copied without following any symlink.
fn copy_into_empty_source(
    src: &OwnedFd,
    source: &Path,
    target: &OwnedFd,
    shown: &Path,
) -> Result<(), FsError> {
    let source_dir = crate::copy_up::reopen_dir(src, source)?;
    let covered = crate::copy_up::reopen_dir(target, shown)?;
    let is_empty = |fd: &OwnedFd, path: &Path| -> Result<bool, FsError> {
        let dir = nix::dir::Dir::openat(
            fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::Open {
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut empty = true;
        for entry in dir {
            let entry = entry.map_err(|e| FsError::Stat {
                path: path.to_path_buf(),
                source: e.into(),
            })?;
            if !matches!(entry.file_name().to_bytes(), b"." | b"..") {
                empty = false;
                break;
            }
        }
        Ok(empty)
    };
    if !is_empty(&source_dir, source)? || is_empty(&covered, shown)? {
        return Ok(());
    }
    crate::copy_up::copy_tree(&covered, &source_dir, source)?;
    // The volume's root takes the covered directory's owner and mode, as
    // docker's copy-up does.
    let st = stat(&covered, shown)?;
    nix::unistd::fchown(
        &source_dir,
        Some(nix::unistd::Uid::from_raw(st.st_uid)),
        Some(nix::unistd::Gid::from_raw(st.st_gid)),
    )
    .and_then(|()| {
        nix::sys::stat::fchmod(&source_dir, Mode::from_bits_truncate(st.st_mode & 0o7777))
    })
    .map_err(|e| FsError::CopyUp {
        path: source.to_path_buf(),
        step: "chown".into(),
        source: e.into(),
    })
}

/// Give a fresh bind mount the flags its options name (a bind mount
/// starts with its source's flags whatever mount(2) was told).
fn remount_bind(mounted: &OwnedFd, shown: &Path, options: &MountOptions) -> Result<(), FsError> {
    let wanted = options.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if wanted.is_empty() && options.cleared.is_empty() {
        return Ok(());
    }
    let target = proc_fd_path(mounted);
    let remount = |flags: MsFlags| {
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .map_err(|source| FsError::Remount {
            target: shown.to_path_buf(),
            flags: describe_flags(wanted),
            source,
        })
    };
    // First exactly what was asked for, as `mount --bind -o` would.
    let first_error = match remount(wanted) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    // Then keep the flags the kernel may have locked, as runc does; but
    // never silently keep one the options turn off.
    let current = current_mount_flags(
        fstatvfs(mounted)
            .map_err(|e| FsError::Stat {
                path: shown.to_path_buf(),
                source: e.into(),
            })?
            .flags(),
    );
    let cannot_clear = current & options.cleared & LOCKED_FLAGS;
    if !cannot_clear.is_empty() {
        return Err(FsError::LockedMountFlags {
            target: shown.to_path_buf(),
            flags: describe_flags(cannot_clear),
        });
    }
    // An atime mode cannot be changed on a locked mount, and asking for a
    // different one would silently give the old one.
    if wanted.intersects(ATIME_FLAGS) && wanted & ATIME_FLAGS != current & ATIME_FLAGS {
        return Err(first_error);
    }
    remount(wanted | (current & LOCKED_FLAGS))
}

fn mount_filesystem(
    root: &OwnedFd,
    rootfs: &Path,
    entry: &MountEntry,
    fstype: &str,
    options: &MountOptions,
) -> Result<(), FsError> {
    let destination = entry.destination.as_str();
    let shown = shown(rootfs, destination);
    let kernel_fs = matches!(fstype, "proc" | "sysfs");
    let open_target = |create: bool| {
        if kernel_fs || is_kernel_destination(destination) {
            open_kernel_mount_point(root, rootfs, destination, create)
        } else {
            let create = if create { Create::Dir } else { Create::Nothing };
            open_at_root(root, rootfs, destination, create, Resolver::Auto)
        }
    };
    let (target, existed) = match open_target(false) {
        Ok(fd) => (fd, true),
        Err(FsError::Resolve {
            source: Errno::ENOENT,
            ..
        }) => (open_target(true)?, false),
        Err(e) => return Err(e),
    };
    let target_st = stat(&target, &shown)?;
    if !is_dir(&target_st) {
        return Err(FsError::NotADirectory { path: shown });
    }
    let rel = real_relative_path(root, rootfs, destination, &target)?;
    check_mount_point(&rel, fstype == "proc").map_err(|reason| FsError::ForbiddenMountPoint {
        target: shown.clone(),
        reason,
    })?;

    let mut data = options.data.clone();
    if fstype == "tmpfs" && existed {
        // The directory the tmpfs hides keeps its permissions (an image's
        // /tmp stays 1777), unless a mode= that comes later says otherwise.
        let mode = format!("mode={:04o}", target_st.st_mode & 0o7777);
        data = if data.is_empty() {
            mode
        } else {
            format!("{mode},{data}")
        };
    }
    let kernel_type = if fstype == "cgroup" {
        "cgroup2"
    } else {
        fstype
    };
    let source = entry
        .source
        .as_deref()
        .unwrap_or_else(|| Path::new(kernel_type));
    let data = (!data.is_empty()).then_some(data.as_str());
    let target_path = proc_fd_path(&target);
    // Copied into while writable; made read-only afterwards.
    let copy_up_readonly = options.copy_up && options.flags.contains(MsFlags::MS_RDONLY);
    let mut flags = options.flags;
    if copy_up_readonly {
        flags.remove(MsFlags::MS_RDONLY);
    }
    // The directory the tmpfs will cover, still reachable through this
    // handle once it is covered.
    let covered = if options.copy_up && existed {
        Some(crate::copy_up::reopen_dir(&target, &shown)?)
    } else {
        None
    };
    match mount(Some(source), &target_path, Some(kernel_type), flags, data) {
        Ok(()) => {}
        Err(Errno::ENODEV) if kernel_type == "cgroup2" => {
            return Err(FsError::CgroupV2Unavailable { target: shown })
        }
        Err(source) => {
            return Err(FsError::Mount {
                target: shown,
                fstype: fstype.to_owned(),
                source,
            })
        }
    }
    if let Some(covered) = covered {
        let fresh = reopen(root, rootfs, destination)?;
        let fresh = crate::copy_up::reopen_dir(&fresh, &shown)?;
        let st = stat(&covered, &shown)?;
        crate::copy_up::copy_tree(&covered, &fresh, &shown)?;
        nix::unistd::fchown(
            &fresh,
            Some(nix::unistd::Uid::from_raw(st.st_uid)),
            Some(nix::unistd::Gid::from_raw(st.st_gid)),
        )
        .map_err(|source| FsError::CopyUp {
            path: shown.clone(),
            step: "chown".into(),
            source: source.into(),
        })?;
        if copy_up_readonly {
            mount(
                None::<&str>,
                &proc_fd_path(&reopen(root, rootfs, destination)?),
                None::<&str>,
                options.flags | MsFlags::MS_REMOUNT,
                data,
            )
            .map_err(|source| FsError::Mount {
                target: shown.clone(),
                fstype: fstype.to_owned(),
                source,
            })?;
        }
    }
    if options.propagation.is_empty() && options.recursive.is_empty() {
        return Ok(());
    }
    let before = fd_path(&target)?;
    drop(target);
    let mounted = reopen(root, rootfs, destination)?;
    if fd_path(&mounted)? != before {
        return Err(FsError::MountPointMoved { target: shown });
    }
    apply_propagation_and_attributes(&mounted, &shown, options)
}

/// The options' propagation changes in order, then the recursive
/// attributes, on the mount `mounted` is the root of.
fn apply_propagation_and_attributes(
    mounted: &OwnedFd,
    shown: &Path,
    options: &MountOptions,
) -> Result<(), FsError> {
    let target = proc_fd_path(mounted);
    for &propagation in &options.propagation {
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            propagation,
            None::<&str>,
        )
        .map_err(|source| FsError::Propagation {
            target: shown.to_path_buf(),
            propagation: describe_propagation(propagation),
            source,
        })?;
    }
    if !options.recursive.is_empty() {
        set_attrs_recursive(mounted, options.recursive).map_err(|source| {
            FsError::SetAttributes {
                target: shown.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn entry(
        destination: &str,
        fstype: Option<&str>,
        source: Option<&str>,
        options: &[&str],
    ) -> MountEntry {
        MountEntry {
            destination: destination.into(),
            fstype: fstype.map(Into::into),
            source: source.map(Into::into),
            options: options.iter().map(|&o| o.into()).collect(),
        }
    }

    #[test]
    fn mount_points_in_and_on_proc() {
        let ok = |p: &str, procfs: bool| check_mount_point(Path::new(p), procfs);
        assert!(ok("", false).is_err());
        assert!(ok("", true).is_err());
        assert!(ok("proc", true).is_ok());
        assert_eq!(
            ok("proc", false),
            Err("only a procfs can be mounted on /proc")
        );
        assert_eq!(ok("proc/sys", false), Err("it is inside /proc"));
        assert_eq!(ok("proc/self/fd", true), Err("it is inside /proc"));
        assert!(ok("proc/cpuinfo", false).is_ok());
        assert!(ok("proc/sys/kernel/ns_last_pid", false).is_ok());
        assert!(ok("processes", false).is_ok());
        assert!(ok("sys/fs/cgroup", false).is_ok());
        assert!(ok("dev/shm", false).is_ok());
        assert!(ok("data/proc", false).is_ok());
    }

    #[test]
    fn kernel_destinations() {
        for d in ["/proc", "/sys", "/dev", "/dev/", "proc", "//sys/."] {
            assert!(is_kernel_destination(d), "{d}");
        }
        for d in ["/dev/pts", "/sys/fs/cgroup", "/procs", "/data"] {
            assert!(!is_kernel_destination(d), "{d}");
        }
    }

    #[test]
    fn the_default_list_is_docker_s() {
        let mounts = default_mounts();
        let destinations: Vec<&str> = mounts.iter().map(|m| m.destination.as_str()).collect();
        assert_eq!(
            destinations,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/dev/mqueue",
                "/dev/shm"
            ]
        );
        for m in &mounts {
            let options = parse_mount_options(&m.options).unwrap();
            assert!(options.flags.contains(MsFlags::MS_NOSUID), "{m:?}");
            assert!(!options.is_bind());
        }
        let sys = parse_mount_options(&mounts[3].options).unwrap();
        assert!(sys.flags.contains(MsFlags::MS_RDONLY));
        let cgroup = default_cgroup_mount();
        assert_eq!(cgroup.fstype.as_deref(), Some("cgroup"));
        assert!(parse_mount_options(&cgroup.options)
            .unwrap()
            .flags
            .contains(MsFlags::MS_RDONLY));
    }

    // The errors below all come before any mount(2), so no root is needed.

    #[test]
    fn malformed_entries_are_refused() {
        let rootfs = tempfile::tempdir().unwrap();
        let r = rootfs.path();
        let reason = |e: &MountEntry| match mount_entry(r, e) {
            Err(FsError::InvalidMount { reason, .. }) => reason,
            other => panic!("{e:?}: {other:?}"),
        };
        assert!(reason(&entry("/", Some("tmpfs"), None, &[])).contains("root itself"));
        assert!(reason(&entry("/a/..", Some("tmpfs"), None, &[])).contains("root itself"));
        assert!(reason(&entry("/x", None, None, &[])).contains("no filesystem type"));
        assert!(reason(&entry("/x", Some("bind"), None, &[])).contains("needs a source"));
        assert!(
            reason(&entry("/x", Some("none"), Some("rel"), &["rbind"])).contains("not absolute")
        );
        assert!(reason(&entry("/x\0", Some("tmpfs"), None, &[])).contains("NUL"));
        assert!(matches!(
            mount_entry(r, &entry("/x", Some("proc"), None, &["tmpcopyup"])),
            Err(FsError::InvalidMount { .. })
        ));
        // Nothing was created for them.
        assert_eq!(std::fs::read_dir(r).unwrap().count(), 0);
    }

    #[test]
    fn symlinked_kernel_destinations_are_refused() {
        let rootfs = tempfile::tempdir().unwrap();
        let r = rootfs.path();
        let elsewhere = tempfile::tempdir().unwrap();
        symlink(elsewhere.path(), r.join("proc")).unwrap();
        symlink("/etc", r.join("dev")).unwrap();
        std::fs::create_dir(r.join("real")).unwrap();
        symlink("/real", r.join("sys")).unwrap();
        for e in [
            entry("/proc", Some("proc"), Some("proc"), &[]),
            entry("/dev", Some("tmpfs"), None, &[]),
            entry("/sys", Some("sysfs"), None, &["ro"]),
            // A procfs anywhere must sit on real directories too.
            entry("/sys/x", Some("proc"), None, &[]),
        ] {
            let err = mount_entry(r, &e).unwrap_err();
            assert!(
                matches!(err, FsError::MountPointIsSymlink { .. }),
                "{e:?}: {err:?}"
            );
        }
        assert!(!Path::new("/etc/x").exists());
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn forbidden_mount_points_are_refused_before_mounting() {
        let rootfs = tempfile::tempdir().unwrap();
        let r = rootfs.path();
        std::fs::create_dir_all(r.join("proc/sys")).unwrap();
        symlink("/proc", r.join("p")).unwrap();
        for e in [
            entry("/proc", Some("tmpfs"), None, &[]),
            entry("/p/sys", Some("tmpfs"), None, &[]),
            entry("/proc", Some("bind"), Some("/tmp"), &["rbind"]),
        ] {
            let err = mount_entry(r, &e).unwrap_err();
            assert!(
                matches!(err, FsError::ForbiddenMountPoint { .. }),
                "{e:?}: {err:?}"
            );
        }
        // A symlink to the root is the root.
        symlink("/", r.join("top")).unwrap();
        let err = mount_entry(r, &entry("/top", Some("tmpfs"), None, &[])).unwrap_err();
        assert!(
            matches!(err, FsError::ForbiddenMountPoint { reason, .. } if reason.contains("root")),
            "{err:?}"
        );
    }

    #[test]
    fn bind_kinds_must_match() {
        let rootfs = tempfile::tempdir().unwrap();
        let r = rootfs.path();
        let host = tempfile::tempdir().unwrap();
        let file = host.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::create_dir(r.join("dir")).unwrap();
        std::fs::write(r.join("file"), b"").unwrap();
        let err =
            mount_entry(r, &entry("/dir", Some("bind"), file.to_str(), &["rbind"])).unwrap_err();
        assert!(matches!(err, FsError::VolumeKindMismatch { .. }), "{err:?}");
        let err =
            mount_entry(r, &entry("/file", None, host.path().to_str(), &["bind"])).unwrap_err();
        assert!(matches!(err, FsError::VolumeKindMismatch { .. }), "{err:?}");
        let err = mount_entry(
            r,
            &entry(
                "/missing",
                Some("bind"),
                Some("/nonexistent/berth-fs-test-missing"),
                &[],
            ),
        )
        .unwrap_err();
        assert!(matches!(err, FsError::Open { .. }), "{err:?}");
    }
}
