//! berth-fs: the container's root filesystem.
//!
//! The container's init process (single-threaded, root, in its own mount
//! namespace but still seeing the host's filesystem) uses this crate to
//! assemble its rootfs and enter it:
//!
//! 1. [`make_mounts_private`]: nothing mounted afterwards propagates back to
//!    the host;
//! 2. [`OverlayRootfs::mount`]: image layers + the container's writable
//!    layer, with overlay (or aufs where the kernel has only aufs);
//! 3. [`mount_kernel_filesystems`]: /proc, read-only /sys and a minimal /dev,
//!    refusing rootfs entries that are symlinks, and checking that the
//!    resulting /dev/null is the null device;
//! 4. [`mount_volumes`]: `-v HOST:CONTAINER[:ro]` bind mounts (parsed by
//!    [`parse_volume`]; host sides created beforehand, in the parent, by
//!    [`prepare_volume_sources`]), mount points resolved inside the rootfs
//!    and mounted through file descriptors;
//! 5. [`pivot_root`]: enter the rootfs and drop the host's mounts;
//! 6. [`enter_workdir`]: create and enter the working directory (`-w`)
//!    through a descriptor, then check that the kernel agrees it is inside
//!    the root. `berth exec -w` calls it too, once it has joined the
//!    container's mount namespace and root.
//!
//! # From an OCI runtime spec
//!
//! A runtime that follows a `config.json` uses the spec-shaped pieces
//! instead, in runc's order, converting the spec into this crate's own
//! types ([`MountEntry`], [`DeviceNode`]; option strings are parsed here by
//! [`parse_mount_options`]):
//!
//! 1. [`set_rootfs_propagation`] (`linux.rootfsPropagation`, see
//!    [`propagation_flags`]), then [`bind_onto_itself`] (or an
//!    [`OverlayRootfs`]) so the rootfs is a mount point;
//! 2. [`mount_entry`] for each of `mounts`, in order ([`default_mounts`] is
//!    docker's list, for an engine that writes the spec);
//! 3. on a fresh /dev: [`create_default_devices`] and [`create_dev_symlinks`];
//!    then [`create_devices`] for `linux.devices` (bind-mounted from the host
//!    in a user namespace);
//! 4. [`pivot_root`], or [`move_root`] where pivot_root(2) cannot be used;
//!    then [`finish_rootfs_propagation`];
//! 5. [`readonly_paths`] and [`mask_paths`] with `linux.readonlyPaths` and
//!    `linux.maskedPaths` (with `/` as the root), and
//!    [`remount_root_readonly`] for `root.readonly`.
//!
//! ```no_run
//! use std::path::Path;
//! use berth_fs::{
//!     bind_onto_itself, create_default_devices, create_dev_symlinks, default_mounts,
//!     finish_rootfs_propagation, mask_paths, mount_entry, pivot_root, propagation_flags,
//!     remount_root_readonly, set_rootfs_propagation, MountEntry,
//! };
//!
//! # fn main() -> Result<(), berth_fs::FsError> {
//! let rootfs = Path::new("/run/bundle/rootfs");
//! let propagation = propagation_flags("rslave");
//! set_rootfs_propagation(rootfs, propagation)?;
//! bind_onto_itself(rootfs)?;
//! let mut mounts = default_mounts();
//! mounts.push(MountEntry {
//!     destination: "/data".into(),
//!     fstype: Some("bind".into()),
//!     source: Some("/srv/data".into()),
//!     options: vec!["rbind".into(), "ro".into(), "nosuid".into()],
//! });
//! for entry in &mounts {
//!     mount_entry(rootfs, entry)?;
//! }
//! create_default_devices(rootfs, false)?;
//! create_dev_symlinks(rootfs)?;
//! pivot_root(rootfs)?;
//! finish_rootfs_propagation(propagation)?;
//! mask_paths(Path::new("/"), &["/proc/kcore", "/sys/firmware"])?;
//! remount_root_readonly()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Paths inside the container root
//!
//! Every path that comes from the image or the user and is used before the
//! container starts is resolved with [`open_in_root`] ([`resolve_in_root`],
//! [`ensure_dir_in_root`]): openat2(2) with `RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS`, or an equivalent component walk on kernels
//! before 5.6. Symlinks in the image are followed as if the rootfs were `/`
//! (an image's `/data -> /etc` means the image's /etc, never the host's),
//! `..` stops at the root, /proc magic links such as `/proc/self/fd/N` are
//! refused, missing directories are created inside the root only, and the
//! result is a descriptor, so nothing can be swapped between the check and
//! the use.
//!
//! Every mount is made inside the caller's mount namespace and vanishes with
//! it; nothing here touches the host's mount namespace (once step 1 is done).
//! Every descriptor opened here is close-on-exec.
//!
//! ```no_run
//! use std::path::{Path, PathBuf};
//! use berth_fs::{
//!     enter_workdir, make_mounts_private, mount_kernel_filesystems, mount_volumes,
//!     parse_volume, pivot_root, prepare_volume_sources, OverlayRootfs,
//! };
//!
//! # fn main() -> Result<(), berth_fs::FsError> {
//! // In the parent, before creating the container:
//! let volumes = vec![parse_volume("/srv/data:/data")?, parse_volume("/srv/conf:/etc/app:ro")?];
//! prepare_volume_sources(&volumes)?;
//!
//! // In the container's init, after clone(CLONE_NEWNS | ...):
//! make_mounts_private()?;
//! let c = Path::new("/var/lib/berth/containers/0123abcd");
//! let rootfs = OverlayRootfs {
//!     lower: vec![PathBuf::from("/var/lib/berth/layers/top"), PathBuf::from("/var/lib/berth/layers/base")],
//!     upper: c.join("upper"),
//!     work: c.join("work"),
//!     target: c.join("merged"),
//!     volatile: false,
//! };
//! rootfs.mount()?;
//! mount_kernel_filesystems(&rootfs.target)?;
//! mount_volumes(&rootfs.target, &volumes)?;
//! pivot_root(&rootfs.target)?;
//! enter_workdir("/srv/app")?;
//! // ... then close the descriptors above 2 and execve the user's command.
//! # Ok(())
//! # }
//! ```

pub mod copy;
mod copy_up;
mod devices;
mod diff;
mod error;
mod kernel;
mod masked;
mod mounts;
mod options;
mod pivot;
mod resolve;
mod union;
mod volume;

pub use devices::{
    create_default_devices, create_dev_symlinks, create_devices, default_devices, DeviceKind,
    DeviceNode,
};
pub use diff::{layer_changes, Change, ChangeKind, DiffError};
pub use error::FsError;
pub use kernel::mount_kernel_filesystems;
pub use masked::{mask_paths, readonly_paths, DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};
pub use mounts::{
    default_cgroup_mount, default_mounts, mount_cgroup_view, mount_entry, MountEntry,
};
pub use options::{parse_mount_options, propagation_flags, MountOptions, RecursiveAttrs};
pub use pivot::{
    bind_onto_itself, chroot_root, finish_rootfs_propagation, make_mounts_private, move_root,
    pivot_root, remount_root_readonly, set_mount_propagation, set_rootfs_propagation,
    unmount_below,
};
pub use resolve::{
    ensure_dir_in_root, enter_workdir, open_in_root, resolve_in_root, Create, MAX_SYMLINKS,
};
pub use union::{
    detect_union_fs, detect_union_fs_at, settle_volatile_layer, OverlayRootfs, UnionFs,
    PROC_FILESYSTEMS,
};
pub use volume::{mount_volumes, parse_volume, prepare_volume_sources, Volume};
