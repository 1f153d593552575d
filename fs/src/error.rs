//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while assembling or entering a rootfs.
///
/// There is one variant per step, and each names the path it was about, so a
/// failure says exactly which step failed and on what.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// Making the mount tree private (`MS_REC|MS_PRIVATE` on `/`) failed.
    #[error("cannot make the mounts under {path} private: {source}")]
    MakePrivate {
        /// The mount point whose propagation was changed (`/`).
        path: PathBuf,
        /// The errno returned by mount(2).
        source: nix::Error,
    },

    /// A directory's filesystem cannot be ID-mapped on this kernel (e.g.
    /// tmpfs before Linux 6.3), so a user namespace cannot see it owned
    /// by its own ids.
    #[error("cannot give a user namespace {path}: its filesystem does not support ID-mapped mounts on this kernel ({source})")]
    IdMapUnsupported {
        /// The directory.
        path: PathBuf,
        /// The errno of mount_setattr(2).
        source: nix::Error,
    },

    /// A mount(2) call failed.
    #[error("cannot mount {fstype} on {target}: {source}")]
    Mount {
        /// Where the filesystem was to be mounted.
        target: PathBuf,
        /// The filesystem type (`overlay`, `proc`, ...; `bind` for bind mounts).
        fstype: String,
        /// The errno returned by mount(2).
        source: nix::Error,
    },

    /// /proc/filesystems (or the file given instead) could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFilesystems {
        /// The file that was read.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// The kernel has neither overlay nor aufs.
    #[error(
        "the kernel offers neither overlay nor aufs (per /proc/filesystems); \
         load the overlay module (modprobe overlay)"
    )]
    NoUnionFs,

    /// An overlay rootfs was asked for without any lower layer.
    #[error("cannot mount a union rootfs on {target}: the image has no layer")]
    NoLowerLayers {
        /// The mount target.
        target: PathBuf,
    },

    /// A layer, upper or work path cannot be passed in mount options.
    #[error("cannot use {path} as a union filesystem branch: {reason}")]
    UnusableBranchPath {
        /// The offending path.
        path: PathBuf,
        /// Why it cannot be used.
        reason: &'static str,
    },

    /// The mount option string would exceed the kernel's one-page limit.
    #[error(
        "cannot mount the union rootfs on {target}: the mount options are {len} bytes, \
         more than the kernel accepts ({max}); the image has too many layers or their \
         paths are too long"
    )]
    MountOptionsTooLong {
        /// The mount target.
        target: PathBuf,
        /// Length of the option string.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// `tmpcopyup` (or a volume's `copyup`) could not copy an entry into
    /// the new tmpfs (or the empty volume).
    #[error("cannot copy {path} into place ({step}): {source}")]
    CopyUp {
        /// The entry, as it is in the new tmpfs.
        path: PathBuf,
        /// What failed (stat, copy, chown, ...).
        step: String,
        /// The underlying error.
        source: io::Error,
    },

    /// A path could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// The errno returned by open(2)/openat(2).
        source: nix::Error,
    },

    /// The filesystem of a path could not be synced.
    #[error("cannot sync the filesystem of {path}: {source}")]
    Sync {
        /// The path.
        path: PathBuf,
        /// The errno returned by syncfs(2).
        source: nix::Error,
    },

    /// The marker a volatile overlay mount left could not be removed.
    #[error("cannot remove overlay's volatile marker {path}: {source}")]
    RemoveMarker {
        /// The marker directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A path could not be stat'ed.
    #[error("cannot stat {path}: {source}")]
    Stat {
        /// The path.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// An entry of the rootfs that something is mounted on is a symlink.
    #[error("rootfs {entry} is a symlink: refusing to mount over it ({path})")]
    MountPointIsSymlink {
        /// The entry inside the rootfs (`/proc`, `/sys`, `/dev`).
        entry: String,
        /// The full host path.
        path: PathBuf,
    },

    /// A path that must be a directory is something else.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },

    /// A component of a path inside the container root is a symlink.
    #[error(
        "{path} is a symlink: refusing to follow it (it could lead out of the container root)"
    )]
    SymlinkInPath {
        /// The path up to and including the symlink.
        path: PathBuf,
    },

    /// A path inside the container root contains something that is not a
    /// plain name (e.g. a NUL byte).
    #[error("invalid path {path:?} inside the container root")]
    InvalidPath {
        /// The path as given.
        path: String,
    },

    /// mknod(2) failed.
    #[error("cannot create device node {path}: {source}")]
    Mknod {
        /// The device node.
        path: PathBuf,
        /// The errno returned by mknod(2).
        source: nix::Error,
    },

    /// Setting the permissions of a file failed.
    #[error("cannot set the permissions of {path}: {source}")]
    Chmod {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// symlink(2) failed.
    #[error("cannot create symlink {path} -> {target}: {source}")]
    Symlink {
        /// The link being created.
        path: PathBuf,
        /// What it points to.
        target: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// chdir(2)/fchdir(2) failed.
    #[error("cannot change directory to {path}: {source}")]
    Chdir {
        /// The directory.
        path: PathBuf,
        /// The errno.
        source: nix::Error,
    },

    /// pivot_root(2) failed.
    #[error("cannot pivot_root into {path}: {source}")]
    PivotRoot {
        /// The new root.
        path: PathBuf,
        /// The errno.
        source: nix::Error,
    },

    /// Making the old root a slave mount (before detaching it) failed.
    #[error("cannot make the old root (previously {path}) a slave mount: {source}")]
    MakeOldRootSlave {
        /// The old root, as it was named before pivot_root (`/`).
        path: PathBuf,
        /// The errno.
        source: nix::Error,
    },

    /// Detaching the old root failed.
    #[error("cannot detach the old root (previously {path}): {source}")]
    UnmountOldRoot {
        /// The old root, as it was named before pivot_root (`/`).
        path: PathBuf,
        /// The errno.
        source: nix::Error,
    },

    /// A path could not be resolved inside a container root.
    #[error("cannot resolve {path} inside {root}: {source}")]
    Resolve {
        /// The root the path is relative to.
        root: PathBuf,
        /// The path, as given (relative to `root`).
        path: String,
        /// The errno of openat2(2) (or of the component walk).
        source: nix::Error,
    },

    /// Resolving a path inside a container root met a /proc magic link or
    /// too many symlinks (ELOOP): refused.
    #[error(
        "refusing to resolve {path} inside {root}: it goes through a /proc magic link \
         (such as /proc/self/fd/N) or through more than 40 symlinks"
    )]
    UnsafeLink {
        /// The root the path is relative to.
        root: PathBuf,
        /// The path, as given (relative to `root`).
        path: String,
    },

    /// A path resolved to somewhere that is not below the root it was
    /// resolved in.
    #[error("{path} resolved to {resolved}, which is outside {root}")]
    OutsideRoot {
        /// The root.
        root: PathBuf,
        /// The path, as given.
        path: String,
        /// Where it ended up.
        resolved: PathBuf,
    },

    /// A file could not be created.
    #[error("cannot create file {path}: {source}")]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// The errno.
        source: nix::Error,
    },

    /// The path behind a file descriptor could not be read from
    /// /proc/self/fd.
    #[error("cannot read the path of {path}: {source}")]
    ReadLink {
        /// The /proc/self/fd/N link.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// After changing into the working directory, the kernel reports a
    /// current directory that is not a reachable path inside the root.
    #[error("working directory {path} is not inside the container root (getcwd: {cwd})")]
    WorkdirOutsideRoot {
        /// The working directory, as given.
        path: String,
        /// What getcwd(3) returned (or its error).
        cwd: String,
    },

    /// A `-v` specification is malformed.
    #[error("invalid volume {spec:?}: {reason}")]
    InvalidVolume {
        /// The specification as given (`HOST:CONTAINER[:ro|rw]`).
        spec: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Two volumes have the same container path.
    #[error("duplicate volume mount point {target}")]
    DuplicateVolumeTarget {
        /// The container path.
        target: String,
    },

    /// A volume's host path is a directory and its mount point is not, or
    /// the other way round.
    #[error("cannot mount {host} ({host_kind}) on {target} ({target_kind})")]
    VolumeKindMismatch {
        /// The host path.
        host: PathBuf,
        /// "a directory" or "a file".
        host_kind: &'static str,
        /// The mount point inside the rootfs.
        target: PathBuf,
        /// "a directory" or "a file".
        target_kind: &'static str,
    },

    /// A volume's mount point resolved into the container's /proc or /sys.
    #[error("refusing to mount a volume on {target}: it is inside the container's {fs}")]
    VolumeTargetForbidden {
        /// The mount point inside the rootfs.
        target: PathBuf,
        /// "procfs" or "sysfs".
        fs: &'static str,
    },

    /// After the bind mount, the volume's mount point no longer resolves to
    /// the volume (something moved it).
    #[error("the volume mount point {target} changed while the volume was mounted on it")]
    VolumeTargetMoved {
        /// The mount point inside the rootfs.
        target: PathBuf,
    },

    /// Making a volume read-only failed.
    #[error("cannot make the volume at {target} read-only: {source}")]
    ReadOnly {
        /// The mount point inside the rootfs.
        target: PathBuf,
        /// The errno of mount_setattr(2) or mount(2).
        source: nix::Error,
    },

    /// A volume is still writable after being made read-only.
    #[error("the volume at {target} is still writable after the read-only remount")]
    StillWritable {
        /// The mount point inside the rootfs.
        target: PathBuf,
    },

    /// The container's /dev/null is not the null device.
    #[error("{path} is not the null device (char 1:3) but {found}: refusing this rootfs")]
    NotNullDevice {
        /// The full path of /dev/null inside the rootfs.
        path: PathBuf,
        /// What it is instead.
        found: String,
    },

    /// A masked or read-only path that cannot be one.
    #[error("invalid masked or read-only path {path:?}: {reason}")]
    InvalidProtectedPath {
        /// The path as given.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A masked path does not show /dev/null (or an empty read-only tmpfs)
    /// after it was masked.
    #[error("masking {path} did not take effect: it is {found} afterwards")]
    MaskNotApplied {
        /// The path inside the rootfs.
        path: PathBuf,
        /// What it is instead.
        found: String,
    },

    /// Making a path read-only failed.
    #[error("cannot make {path} read-only: {source}")]
    ReadOnlyPath {
        /// The path inside the rootfs.
        path: PathBuf,
        /// The errno of mount_setattr(2) or mount(2).
        source: nix::Error,
    },

    /// A path is still writable after being made read-only.
    #[error("{path} is still writable after the read-only remount")]
    PathStillWritable {
        /// The path inside the rootfs.
        path: PathBuf,
    },

    /// A path no longer resolves to the same file after being bind-mounted
    /// onto itself (something moved it).
    #[error("{path} changed while it was being made read-only")]
    PathMoved {
        /// The path inside the rootfs.
        path: PathBuf,
    },

    /// A mount option that is malformed or not supported.
    #[error("invalid mount option {option:?}: {reason}")]
    InvalidMountOption {
        /// The option as given.
        option: String,
        /// Why it was refused.
        reason: String,
    },

    /// A mount entry that cannot be mounted as described.
    #[error("invalid mount on {destination:?}: {reason}")]
    InvalidMount {
        /// The mount's destination, as given.
        destination: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A mount point resolved to a place nothing may be mounted on.
    #[error("refusing to mount on {target}: {reason}")]
    ForbiddenMountPoint {
        /// The mount point, inside the root.
        target: PathBuf,
        /// Why.
        reason: &'static str,
    },

    /// A `cgroup` mount was asked for on a kernel without cgroup2.
    #[error(
        "cannot mount a cgroup filesystem on {target}: the kernel has no cgroup2, \
         and cgroup v1 hierarchies cannot be mounted in a container"
    )]
    CgroupV2Unavailable {
        /// The mount point.
        target: PathBuf,
    },

    /// A bind mount could not be remounted with the requested flags.
    #[error("cannot apply the mount flags {flags} to the bind mount on {target}: {source}")]
    Remount {
        /// The mount point.
        target: PathBuf,
        /// The flags asked for.
        flags: String,
        /// The errno of mount(2).
        source: nix::Error,
    },

    /// A bind mount's source has flags the kernel locks (they were set in
    /// a more privileged mount namespace) and the mount asks to clear them.
    #[error("cannot clear the locked mount flags {flags} of the bind mount on {target}")]
    LockedMountFlags {
        /// The mount point.
        target: PathBuf,
        /// The locked flags that were asked to be cleared.
        flags: String,
    },

    /// mount_setattr(2) failed.
    #[error("cannot change the recursive mount attributes of {target}: {source}")]
    SetAttributes {
        /// The mount point.
        target: PathBuf,
        /// The errno (ENOSYS before Linux 5.12).
        source: nix::Error,
    },

    /// Changing a mount's propagation failed.
    #[error("cannot make {target} {propagation}: {source}")]
    Propagation {
        /// The mount point.
        target: PathBuf,
        /// The propagation asked for (`rslave`, `shared`, ...).
        propagation: String,
        /// The errno of mount(2).
        source: nix::Error,
    },

    /// A device node that is not something that can be created.
    #[error("invalid device {path:?}: {reason}")]
    InvalidDevice {
        /// The device's path, as given.
        path: String,
        /// Why.
        reason: String,
    },

    /// A device node exists and is not the device asked for.
    #[error("{path} exists and is {found}, not the device asked for")]
    DeviceMismatch {
        /// The device node, inside the root.
        path: PathBuf,
        /// What is there instead.
        found: String,
    },

    /// Changing the owner of a file failed.
    #[error("cannot change the owner of {path}: {source}")]
    Chown {
        /// The file.
        path: PathBuf,
        /// The errno of fchownat(2).
        source: nix::Error,
    },

    /// Moving the rootfs mount onto `/` failed.
    #[error("cannot move the mount {path} onto /: {source}")]
    MoveRoot {
        /// The rootfs.
        path: PathBuf,
        /// The errno of mount(2).
        source: nix::Error,
    },

    /// chroot(2) failed.
    #[error("cannot chroot into {path}: {source}")]
    Chroot {
        /// The new root.
        path: PathBuf,
        /// The errno.
        source: nix::Error,
    },

    /// Detaching (or covering) a mount failed.
    #[error("cannot unmount {path}: {source}")]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// The errno.
        source: nix::Error,
    },

    /// The mount table could not be read.
    #[error("cannot read the mount table {path}: {source}")]
    ReadMountInfo {
        /// The mountinfo file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// After a mount, its mount point no longer resolves to the new mount
    /// (something moved it).
    #[error("the mount point {target} changed while something was mounted on it")]
    MountPointMoved {
        /// The mount point, inside the root.
        target: PathBuf,
    },
}
