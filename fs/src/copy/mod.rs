//! Copying trees into and out of a container root (`berth cp`), safely.
//!
//! Every path inside a root is resolved with [`crate::open_in_root`]'s
//! resolver (openat2 `RESOLVE_IN_ROOT`): a container's symlinks, absolute or
//! with `..`, are followed as if the root were `/` and never reach the
//! host. Below the resolved source, the tree is walked through directory
//! handles with `O_NOFOLLOW`, so a directory that a running container swaps
//! for a symlink mid-copy is copied as that symlink, never followed. On the
//! writing side each parent is looked up again from the destination
//! directory's handle with `RESOLVE_IN_ROOT`, each entry is created with
//! `O_EXCL`/`O_NOFOLLOW` relative to it, and owners, modes and times are set
//! through descriptors (or with `AT_SYMLINK_NOFOLLOW`): whatever a
//! container does meanwhile, writes land inside the destination.
//!
//! The same walk feeds either a directory ([`copy_tree`]) or a tar stream
//! ([`archive_tree`]); [`extract_archive`] unpacks a tar stream through
//! the same safe writer. Symlinks, hard links (within the copy), modes
//! (setuid included), owners, times, device nodes and fifos are kept;
//! sockets are left out. [`plan_copy`] holds docker cp's rules for where
//! the copy lands.
//!
//! ```no_run
//! use std::path::Path;
//! use berth_fs::copy::{copy_tree, plan_copy, Existing, Ownership, TreeRoot};
//!
//! # fn main() -> Result<(), berth_fs::copy::CopyError> {
//! // `berth cp C:/etc/app /srv/backup` for a running container:
//! let container = TreeRoot::open(Path::new("/proc/4242/root"), "c1:")?;
//! let host = TreeRoot::open(Path::new("/"), "")?;
//! let source = container.source("/etc/app", false)?;
//! let plan = plan_copy("/etc/app", source.is_dir(), "/srv/backup", host.existing("/srv/backup")?)?;
//! let into = host.directory(&plan.into)?;
//! copy_tree(&source, plan.name.as_deref(), &into, Ownership::Fixed { uid: 0, gid: 0 })?;
//! # Ok(())
//! # }
//! ```

mod error;
mod plan;
mod sink;
mod source;
mod xattr;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::fstat;

pub use error::CopyError;
pub use plan::{absolute_from, names_a_directory, names_contents, plan_copy, CopyPlan, Existing};

use crate::resolve::{open_at_root, open_trusted_dir, Resolver};
use crate::{Create, FsError};
use sink::{DirSink, Sink, TarSink};
use source::{unpack, At, TreeWalker};

/// Whose files the copies are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// The source's uid and gid (docker cp `-a`, and tar streams).
    FromSource,
    /// These (docker cp without `-a`: the container's root inside a
    /// container, the invoking user on the host).
    Fixed {
        /// The owner.
        uid: u32,
        /// The group.
        gid: u32,
    },
    /// The source's uid and gid through id maps, for a container in a
    /// user namespace (its ids in, host ids out, or the reverse): ranges
    /// of (first source id, first id written, count). An id no range
    /// holds becomes 65534, as the kernel shows it.
    Mapped {
        /// The uid ranges.
        uid: Vec<[u32; 3]>,
        /// The gid ranges.
        gid: Vec<[u32; 3]>,
    },
}

impl Ownership {
    /// The owner written for a source entry owned by `uid`:`gid`.
    pub fn owner_of(&self, uid: u32, gid: u32) -> (u32, u32) {
        let through = |ranges: &[[u32; 3]], id: u32| {
            ranges
                .iter()
                .find(|[from, _, count]| id >= *from && id - *from < *count)
                .map_or(65534, |[from, to, _]| to + (id - from))
        };
        match self {
            Ownership::FromSource => (uid, gid),
            Ownership::Fixed { uid, gid } => (*uid, *gid),
            Ownership::Mapped {
                uid: uids,
                gid: gids,
            } => (through(uids, uid), through(gids, gid)),
        }
    }
}

/// A directory that paths are resolved in as if it were `/`: a container's
/// root (`/proc/PID/root` of a running one, or its mounted rootfs), or the
/// host's `/`.
#[derive(Debug)]
pub struct TreeRoot {
    fd: OwnedFd,
    /// How paths in this root are shown to the user (`c1:` gives
    /// `c1:/etc/x`; empty for the host).
    label: String,
}

/// What a copy reads: one entry inside a [`TreeRoot`], already resolved.
#[derive(Debug)]
pub struct CopySource {
    /// The entry's parent and name, or (empty name) the entry itself.
    dir: OwnedFd,
    name: std::ffi::OsString,
    is_dir: bool,
    shown: PathBuf,
}

/// An existing directory that a copy writes into.
#[derive(Debug)]
pub struct CopyDest {
    fd: OwnedFd,
    shown: PathBuf,
}

/// The last component of `path`, unless the path must be followed to the
/// end (the root, a trailing `/`, `.` or `..`).
fn split_last(path: &str) -> Option<(&str, &str)> {
    if path.ends_with('/') {
        return None;
    }
    let (parent, name) = match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    };
    (!name.is_empty() && name != "." && name != "..").then_some((parent, name))
}

impl TreeRoot {
    /// Open `path` (trusted: chosen by the engine) as a root; `label`
    /// prefixes paths in errors.
    pub fn open(path: &Path, label: impl Into<String>) -> Result<Self, CopyError> {
        let fd = open_trusted_dir(path).map_err(|source| CopyError::Resolve {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(TreeRoot {
            fd,
            label: label.into(),
        })
    }

    fn shown(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("{}{}", self.label, path))
    }

    fn resolve_error(&self, path: &str, source: FsError) -> CopyError {
        match source {
            FsError::Resolve {
                source: Errno::ENOENT,
                ..
            } => CopyError::NotFound {
                path: self.shown(path),
            },
            FsError::Resolve {
                source: Errno::ENOTDIR,
                ..
            } => CopyError::NotADirectory {
                path: self.shown(path),
            },
            source => CopyError::Resolve {
                path: self.shown(path),
                source,
            },
        }
    }

    fn resolve(&self, path: &str) -> Result<OwnedFd, CopyError> {
        open_at_root(
            &self.fd,
            Path::new(&self.label),
            path,
            Create::Nothing,
            Resolver::Auto,
        )
        .map_err(|e| self.resolve_error(path, e))
    }

    /// What `path` names, symlinks followed inside the root.
    pub fn existing(&self, path: &str) -> Result<Existing, CopyError> {
        match self.resolve(path) {
            Ok(fd) => {
                let st =
                    fstat(fd.as_fd()).map_err(|e| CopyError::entry("stat", self.shown(path), e))?;
                Ok(if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    Existing::Directory
                } else {
                    Existing::Other
                })
            }
            Err(CopyError::NotFound { .. }) => Ok(Existing::Missing),
            Err(e) => Err(e),
        }
    }

    /// The entry `path` as a copy source. Its directories are followed
    /// inside the root; its last component is copied as it is (a symlink
    /// as a symlink) unless `follow_link` (docker cp `-L`) or the path
    /// ends with `/`, `/.` or `..`.
    pub fn source(&self, path: &str, follow_link: bool) -> Result<CopySource, CopyError> {
        let shown = self.shown(path);
        let (dir, name) = match split_last(path) {
            Some((parent, name)) if !follow_link => {
                let dir = self.resolve(if parent.is_empty() { "/" } else { parent })?;
                // Only its presence is checked here; the walk looks again.
                match nix::sys::stat::fstatat(
                    dir.as_fd(),
                    name,
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    Ok(_) => {}
                    Err(Errno::ENOENT) => return Err(CopyError::NotFound { path: shown }),
                    Err(e) => return Err(CopyError::entry("stat", shown, e)),
                }
                (dir, std::ffi::OsString::from(name))
            }
            _ => (self.resolve(path)?, std::ffi::OsString::new()),
        };
        let at = At {
            dir: dir.as_fd(),
            name: &name,
        };
        let is_dir = source_is_dir(at, &shown)?;
        Ok(CopySource {
            dir,
            name,
            is_dir,
            shown,
        })
    }

    /// The existing directory `path` (symlinks followed inside the root),
    /// to copy into.
    pub fn directory(&self, path: &str) -> Result<CopyDest, CopyError> {
        let fd = self.resolve(path)?;
        let st = fstat(fd.as_fd()).map_err(|e| CopyError::entry("stat", self.shown(path), e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(CopyError::NotADirectory {
                path: self.shown(path),
            });
        }
        Ok(CopyDest {
            fd,
            shown: self.shown(path),
        })
    }
}

fn source_is_dir(at: At<'_>, shown: &Path) -> Result<bool, CopyError> {
    let st = if at.name.is_empty() {
        fstat(at.dir)
    } else {
        nix::sys::stat::fstatat(at.dir, at.name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
    }
    .map_err(|e| CopyError::entry("stat", shown, e))?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

impl CopySource {
    /// Whether the source is a directory (a symlink is not, unless it was
    /// followed).
    pub fn is_dir(&self) -> bool {
        self.is_dir
    }

    fn at(&self) -> At<'_> {
        At {
            dir: self.dir.as_fd(),
            name: &self.name,
        }
    }

    /// Walk into `sink`: the source itself as `name`, or, without a name,
    /// the source directory's entries at the top.
    fn walk(&self, name: Option<&OsStr>, sink: &mut impl Sink) -> Result<u64, CopyError> {
        let mut walker = TreeWalker::new(sink);
        match name {
            Some(name) => walker.entry(self.at(), Path::new(name), &self.shown)?,
            None => {
                if !self.is_dir {
                    return Err(CopyError::NotADirectory {
                        path: self.shown.clone(),
                    });
                }
                let at = self.at();
                let mut dir = match at.name.is_empty() {
                    true => nix::dir::Dir::openat(
                        at.dir,
                        ".",
                        nix::fcntl::OFlag::O_RDONLY
                            | nix::fcntl::OFlag::O_DIRECTORY
                            | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    ),
                    false => nix::dir::Dir::openat(
                        at.dir,
                        at.name,
                        nix::fcntl::OFlag::O_RDONLY
                            | nix::fcntl::OFlag::O_DIRECTORY
                            | nix::fcntl::OFlag::O_NOFOLLOW
                            | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    ),
                }
                .map_err(|e| CopyError::entry("open", &self.shown, e))?;
                walker.children(&mut dir, Path::new(""), &self.shown)?;
            }
        }
        Ok(walker.bytes)
    }
}

impl CopyDest {
    /// The directory as shown to the user.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    fn sink(&self, ownership: Ownership) -> Result<DirSink, CopyError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| CopyError::entry_io("open", &self.shown, e))?;
        Ok(DirSink::new(fd, self.shown.clone(), ownership))
    }
}

/// Copy `source` into the directory `into`, as `name` (or, with `None`,
/// the source directory's contents straight into `into`). Returns the
/// bytes of file content copied.
pub fn copy_tree(
    source: &CopySource,
    name: Option<&OsStr>,
    into: &CopyDest,
    ownership: Ownership,
) -> Result<u64, CopyError> {
    let mut sink = into.sink(ownership)?;
    source.walk(name, &mut sink)
}

/// Write `source` as a tar stream to `out`, its entries named `name/...`
/// (or, with `None`, the directory's entries at the top), owned as
/// `ownership` says. Returns the bytes of file content archived.
pub fn archive_tree(
    source: &CopySource,
    name: Option<&OsStr>,
    out: impl Write,
    ownership: Ownership,
) -> Result<u64, CopyError> {
    let mut sink = TarSink::new(out, ownership);
    let bytes = source.walk(name, &mut sink)?;
    let mut out = sink.finish()?;
    out.flush()
        .map_err(|source| CopyError::WriteArchive { source })?;
    Ok(bytes)
}

/// Unpack the tar stream `input` into the directory `into`. Member names
/// are taken relative to `into` (`..` is refused), and nothing is written
/// outside it, whatever symlinks the archive or the directory holds.
pub fn extract_archive(
    input: impl Read,
    into: &CopyDest,
    ownership: Ownership,
) -> Result<u64, CopyError> {
    let mut sink = into.sink(ownership)?;
    unpack(input, &mut sink)
}

#[cfg(test)]
mod tests;
