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
//!    refusing rootfs entries that are symlinks;
//! 4. [`pivot_root`]: enter the rootfs and drop the host's mounts;
//! 5. [`ensure_dir_in_root`]: create the working directory (`-w`) without
//!    following symlinks out of the root.
//!
//! Every mount is made inside the caller's mount namespace and vanishes with
//! it; nothing here touches the host's mount namespace (once step 1 is done).
//!
//! ```no_run
//! use std::path::{Path, PathBuf};
//! use berth_fs::{
//!     ensure_dir_in_root, make_mounts_private, mount_kernel_filesystems, pivot_root,
//!     OverlayRootfs,
//! };
//!
//! # fn main() -> Result<(), berth_fs::FsError> {
//! // In the container's init, after clone(CLONE_NEWNS | ...):
//! make_mounts_private()?;
//! let c = Path::new("/var/lib/berth/containers/0123abcd");
//! let rootfs = OverlayRootfs {
//!     lower: vec![PathBuf::from("/var/lib/berth/layers/top"), PathBuf::from("/var/lib/berth/layers/base")],
//!     upper: c.join("upper"),
//!     work: c.join("work"),
//!     target: c.join("merged"),
//! };
//! rootfs.mount()?;
//! mount_kernel_filesystems(&rootfs.target)?;
//! pivot_root(&rootfs.target)?;
//! let cwd = ensure_dir_in_root(Path::new("/"), "/srv/app")?;
//! std::env::set_current_dir(&cwd).expect("chdir");
//! // ... then execve the user's command.
//! # Ok(())
//! # }
//! ```

mod error;
mod kernel;
mod pivot;
mod resolve;
mod union;

pub use error::FsError;
pub use kernel::mount_kernel_filesystems;
pub use pivot::{make_mounts_private, pivot_root};
pub use resolve::ensure_dir_in_root;
pub use union::{detect_union_fs, detect_union_fs_at, OverlayRootfs, UnionFs, PROC_FILESYSTEMS};
