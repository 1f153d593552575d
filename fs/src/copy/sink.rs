//! Where copied entries go: a directory (through descriptors, never a
//! path that a symlink could redirect) or a tar stream.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fstatat, futimens, mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::{CopyError, Ownership};
use crate::resolve::{open_at_root, proc_fd_path, Resolver};
use crate::Create;

/// What one entry carries besides its content.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    /// Permission bits (with setuid, setgid, sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Device number of a device node.
    pub rdev: u64,
    /// Content size of a regular file.
    pub size: u64,
    /// Extended attributes that travel (see [`super::xattr`]).
    pub xattrs: super::xattr::Xattrs,
}

/// Content of a regular file.
pub(crate) enum Content<'a> {
    /// An open file: the kernel copies it (copy_file_range, sendfile).
    File(&'a File),
    /// A stream (a tar entry).
    Stream(&'a mut dyn Read),
}

/// A device node or fifo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    Char,
    Block,
    Fifo,
}

/// Receives a tree, parents before children. Paths are relative, never
/// empty, without `.` or `..`.
pub(crate) trait Sink {
    /// A directory (its contents follow, then [`Sink::finish_directory`]).
    fn directory(&mut self, path: &Path, meta: &Meta) -> Result<(), CopyError>;
    /// Everything below `path` is written: its mode, owner and times now.
    fn finish_directory(&mut self, path: &Path, meta: &Meta) -> Result<(), CopyError>;
    /// A regular file; `more_links`: later [`Sink::hardlink`]s may name it.
    /// Returns the bytes written.
    fn file(
        &mut self,
        path: &Path,
        meta: &Meta,
        content: Content<'_>,
        more_links: bool,
    ) -> Result<u64, CopyError>;
    fn symlink(&mut self, path: &Path, meta: &Meta, target: &OsStr) -> Result<(), CopyError>;
    /// Another name for the file written earlier as `first`.
    fn hardlink(&mut self, path: &Path, meta: &Meta, first: &Path) -> Result<(), CopyError>;
    fn special(&mut self, path: &Path, meta: &Meta, kind: Special) -> Result<(), CopyError>;
}

fn timespec((sec, nsec): (i64, i64)) -> TimeSpec {
    TimeSpec::new(sec, nsec)
}

/// Writes entries below a directory handle. Every parent is looked up from
/// that handle with `RESOLVE_IN_ROOT` (so even a symlink swapped in by a
/// running container resolves inside the destination directory), every
/// entry is created with `O_EXCL`/`O_NOFOLLOW`-style calls relative to its
/// parent's handle, and owners, modes and times are set through
/// descriptors or with `AT_SYMLINK_NOFOLLOW`.
pub(crate) struct DirSink {
    root: OwnedFd,
    shown: PathBuf,
    ownership: Ownership,
    /// The last parent looked up (consecutive entries share it).
    parent: Option<(PathBuf, OwnedFd)>,
    /// Files that more names will point at, held open so that a hard link
    /// is made to the very file written (never re-looked up by path).
    linkable: HashMap<PathBuf, File>,
}

impl std::fmt::Debug for DirSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirSink")
            .field("shown", &self.shown)
            .finish()
    }
}

impl DirSink {
    pub(crate) fn new(root: OwnedFd, shown: PathBuf, ownership: Ownership) -> Self {
        DirSink {
            root,
            shown,
            ownership,
            parent: None,
            linkable: HashMap::new(),
        }
    }

    fn shown(&self, path: &Path) -> PathBuf {
        self.shown.join(path)
    }

    fn owner(&self, meta: &Meta) -> (u32, u32) {
        self.ownership.owner_of(meta.uid, meta.gid)
    }

    /// The handle of `path`'s parent (created if missing) and its name.
    fn parent(&mut self, path: &Path) -> Result<(BorrowedFd<'_>, OsString), CopyError> {
        let name = path
            .file_name()
            .ok_or_else(|| CopyError::UnsafeArchivePath {
                name: path.to_string_lossy().into_owned(),
            })?
            .to_owned();
        let parent = path.parent().unwrap_or(Path::new(""));
        if parent.as_os_str().is_empty() {
            return Ok((self.root.as_fd(), name));
        }
        let cached = matches!(&self.parent, Some((p, _)) if p == parent);
        if !cached {
            let text =
                parent
                    .to_str()
                    .map(str::to_owned)
                    .ok_or_else(|| CopyError::UnsafeArchivePath {
                        name: parent.to_string_lossy().into_owned(),
                    })?;
            let fd = open_at_root(&self.root, &self.shown, &text, Create::Dir, Resolver::Auto)
                .map_err(|source| CopyError::Resolve {
                    path: self.shown(parent),
                    source,
                })?;
            self.parent = Some((parent.to_path_buf(), fd));
        }
        let fd = &self.parent.as_ref().expect("parent just cached").1;
        Ok((fd.as_fd(), name))
    }

    /// Make room for a new non-directory entry `name` in `dir`: an existing
    /// non-directory is removed, an existing directory is an error.
    fn clear(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<(), CopyError> {
        match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                Err(CopyError::NonDirectoryOntoDirectory {
                    path: shown.to_path_buf(),
                })
            }
            Ok(_) => match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(CopyError::entry("replace", shown, e)),
            },
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(CopyError::entry("stat", shown, e)),
        }
    }

    /// Owner and times of a non-directory that has no open handle.
    fn finish_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        shown: &Path,
    ) -> Result<(), CopyError> {
        let (uid, gid) = self.owner(meta);
        fchownat(
            dir,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| CopyError::entry("chown", shown, e))?;
        let mtime = timespec(meta.mtime);
        utimensat(dir, name, &mtime, &mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| CopyError::entry("set the times of", shown, e))
    }
}

/// Owner, then mode (chown clears setuid bits), then times, on a handle.
fn finish_fd(
    fd: BorrowedFd<'_>,
    owner: (u32, u32),
    meta: &Meta,
    shown: &Path,
) -> Result<(), CopyError> {
    fchown(
        fd,
        Some(Uid::from_raw(owner.0)),
        Some(Gid::from_raw(owner.1)),
    )
    .map_err(|e| CopyError::entry("chown", shown, e))?;
    fchmod(fd, Mode::from_bits_truncate(meta.mode & 0o7777))
        .map_err(|e| CopyError::entry("chmod", shown, e))?;
    super::xattr::write(fd, &meta.xattrs)
        .map_err(|e| CopyError::entry_io("set the extended attributes of", shown, e))?;
    let mtime = timespec(meta.mtime);
    futimens(fd, &mtime, &mtime).map_err(|e| CopyError::entry("set the times of", shown, e))
}

impl Sink for DirSink {
    fn directory(&mut self, path: &Path, _meta: &Meta) -> Result<(), CopyError> {
        let shown = self.shown(path);
        let (dir, name) = self.parent(path)?;
        // Owner-writable until finish_directory, so its contents can be made.
        match mkdirat(dir, name.as_os_str(), Mode::from_bits_truncate(0o700)) {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => {
                match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(()),
                    // A file (or a symlink) where a directory goes: replaced,
                    // as tar does; a symlink is never followed.
                    Ok(_) => {
                        unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
                            .map_err(|e| CopyError::entry("replace", &shown, e))?;
                        mkdirat(dir, name.as_os_str(), Mode::from_bits_truncate(0o700))
                            .map_err(|e| CopyError::entry("create", &shown, e))
                    }
                    Err(e) => Err(CopyError::entry("stat", &shown, e)),
                }
            }
            Err(e) => Err(CopyError::entry("create", &shown, e)),
        }
    }

    fn finish_directory(&mut self, path: &Path, meta: &Meta) -> Result<(), CopyError> {
        let shown = self.shown(path);
        let owner = self.owner(meta);
        let (dir, name) = self.parent(path)?;
        let fd = openat(
            dir,
            name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| CopyError::entry("open", &shown, e))?;
        finish_fd(fd.as_fd(), owner, meta, &shown)
    }

    fn file(
        &mut self,
        path: &Path,
        meta: &Meta,
        content: Content<'_>,
        more_links: bool,
    ) -> Result<u64, CopyError> {
        let shown = self.shown(path);
        let owner = self.owner(meta);
        let (dir, name) = self.parent(path)?;
        let create = || {
            openat(
                dir,
                name.as_os_str(),
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        };
        let fd = match create() {
            Err(Errno::EEXIST) => {
                Self::clear(dir, &name, &shown)?;
                create()
            }
            other => other,
        }
        .map_err(|e| CopyError::entry("create", &shown, e))?;
        let mut file = File::from(fd);
        let written = match content {
            Content::File(source) => io::copy(&mut source.take(meta.size), &mut file),
            Content::Stream(source) => io::copy(source, &mut file),
        }
        .map_err(|e| CopyError::entry_io("write", &shown, e))?;
        finish_fd(file.as_fd(), owner, meta, &shown)?;
        if more_links {
            self.linkable.insert(path.to_path_buf(), file);
        }
        Ok(written)
    }

    fn symlink(&mut self, path: &Path, meta: &Meta, target: &OsStr) -> Result<(), CopyError> {
        let shown = self.shown(path);
        let (dir, name) = self.parent(path)?;
        match symlinkat(target, dir, name.as_os_str()) {
            Err(Errno::EEXIST) => {
                Self::clear(dir, &name, &shown)?;
                symlinkat(target, dir, name.as_os_str())
            }
            other => other,
        }
        .map_err(|e| CopyError::entry("create", &shown, e))?;
        // Borrow rules: look the parent up again (it is cached).
        let (dir, name) = self.parent(path)?;
        let dir = dir
            .try_clone_to_owned()
            .map_err(|e| CopyError::entry_io("open", &shown, e))?;
        self.finish_at(dir.as_fd(), &name, meta, &shown)
    }

    fn hardlink(&mut self, path: &Path, meta: &Meta, first: &Path) -> Result<(), CopyError> {
        let shown = self.shown(path);
        // The file written under `first` (held open), or, for a link to a
        // file that was there before (a tar stream's), that file looked up
        // inside the destination without following its last component.
        let held: OwnedFd = match self.linkable.get(first) {
            Some(file) => file
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| CopyError::entry_io("open", &shown, e))?,
            None => {
                let first_shown = self.shown(first);
                let (dir, first_name) = self.parent(first)?;
                openat(
                    dir,
                    first_name.as_os_str(),
                    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| CopyError::entry("open", first_shown, e))?
            }
        };
        let (dir, name) = self.parent(path)?;
        let link = || {
            // Through our own descriptor: /proc/self/fd/N is followed to
            // the file itself, wherever it is now.
            linkat(
                nix::fcntl::AT_FDCWD,
                proc_fd_path(&held).as_path(),
                dir,
                name.as_os_str(),
                AtFlags::AT_SYMLINK_FOLLOW,
            )
        };
        match link() {
            Err(Errno::EEXIST) => {
                Self::clear(dir, &name, &shown)?;
                link()
            }
            other => other,
        }
        .map_err(|e| CopyError::entry("link", &shown, e))?;
        let _ = meta;
        Ok(())
    }

    fn special(&mut self, path: &Path, meta: &Meta, kind: Special) -> Result<(), CopyError> {
        let shown = self.shown(path);
        let (dir, name) = self.parent(path)?;
        let sflag = match kind {
            Special::Char => SFlag::S_IFCHR,
            Special::Block => SFlag::S_IFBLK,
            Special::Fifo => SFlag::S_IFIFO,
        };
        let mode = Mode::from_bits_truncate(meta.mode & 0o7777);
        let make = || mknodat(dir, name.as_os_str(), sflag, mode, meta.rdev as libc::dev_t);
        match make() {
            Err(Errno::EEXIST) => {
                Self::clear(dir, &name, &shown)?;
                make()
            }
            other => other,
        }
        .map_err(|e| CopyError::entry("create", &shown, e))?;
        let (dir, name) = self.parent(path)?;
        let dir = dir
            .try_clone_to_owned()
            .map_err(|e| CopyError::entry_io("open", &shown, e))?;
        self.finish_at(dir.as_fd(), &name, meta, &shown)?;
        // mknod applied the umask. Without following a symlink: a running
        // container may have swapped one in, and it would be followed from
        // the host's root.
        nix::sys::stat::fchmodat(
            &dir,
            name.as_os_str(),
            mode,
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        )
        .map_err(|e| CopyError::entry("chmod", &shown, e))
    }
}

/// Reads exactly `size` bytes: a file that shrank while it was archived is
/// padded with zeros (the header already promised `size`), one that grew
/// is cut.
struct Exactly<R> {
    inner: io::Take<R>,
    left: u64,
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            buf[..want].fill(0);
            n = want;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes entries as a tar stream (GNU long names, PAX where needed).
pub(crate) struct TarSink<W: Write> {
    builder: tar::Builder<W>,
    ownership: Ownership,
}

impl<W: Write> std::fmt::Debug for TarSink<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarSink").finish()
    }
}

impl<W: Write> TarSink<W> {
    pub(crate) fn new(out: W, ownership: Ownership) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Complete);
        TarSink { builder, ownership }
    }

    pub(crate) fn finish(self) -> Result<W, CopyError> {
        self.builder
            .into_inner()
            .map_err(|source| CopyError::WriteArchive { source })
    }

    /// Extended attributes as PAX `SCHILY.xattr.NAME` records (GNU tar's
    /// and docker's form), just before the entry they belong to.
    fn xattrs(&mut self, meta: &Meta) -> Result<(), CopyError> {
        let records: Vec<(String, &[u8])> = meta
            .xattrs
            .iter()
            .filter_map(|(name, value)| {
                let name = std::str::from_utf8(name).ok()?;
                Some((format!("SCHILY.xattr.{name}"), value.as_slice()))
            })
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
            .map_err(write_error)
    }

    fn header(&self, kind: tar::EntryType, meta: &Meta, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(meta.mode & 0o7777);
        let (uid, gid) = self.ownership.owner_of(meta.uid, meta.gid);
        header.set_uid(u64::from(uid));
        header.set_gid(u64::from(gid));
        header.set_mtime(u64::try_from(meta.mtime.0).unwrap_or(0));
        header.set_size(size);
        header
    }
}

fn write_error(source: io::Error) -> CopyError {
    CopyError::WriteArchive { source }
}

impl<W: Write> Sink for TarSink<W> {
    fn directory(&mut self, path: &Path, meta: &Meta) -> Result<(), CopyError> {
        self.xattrs(meta)?;
        let mut header = self.header(tar::EntryType::Directory, meta, 0);
        let mut name = path.as_os_str().as_bytes().to_vec();
        name.push(b'/');
        self.builder
            .append_data(
                &mut header,
                Path::new(OsStr::from_bytes(&name)),
                io::empty(),
            )
            .map_err(write_error)
    }

    fn finish_directory(&mut self, _path: &Path, _meta: &Meta) -> Result<(), CopyError> {
        Ok(())
    }

    fn file(
        &mut self,
        path: &Path,
        meta: &Meta,
        content: Content<'_>,
        _more_links: bool,
    ) -> Result<u64, CopyError> {
        self.xattrs(meta)?;
        let mut header = self.header(tar::EntryType::Regular, meta, meta.size);
        let reader: Box<dyn Read + '_> = match content {
            Content::File(file) => Box::new(Exactly {
                inner: file.take(meta.size),
                left: meta.size,
            }),
            Content::Stream(stream) => Box::new(Exactly {
                inner: stream.take(meta.size),
                left: meta.size,
            }),
        };
        self.builder
            .append_data(&mut header, path, reader)
            .map_err(write_error)?;
        Ok(meta.size)
    }

    fn symlink(&mut self, path: &Path, meta: &Meta, target: &OsStr) -> Result<(), CopyError> {
        let mut header = self.header(tar::EntryType::Symlink, meta, 0);
        self.builder
            .append_link(&mut header, path, Path::new(target))
            .map_err(write_error)
    }

    fn hardlink(&mut self, path: &Path, meta: &Meta, first: &Path) -> Result<(), CopyError> {
        let mut header = self.header(tar::EntryType::Link, meta, 0);
        self.builder
            .append_link(&mut header, path, first)
            .map_err(write_error)
    }

    fn special(&mut self, path: &Path, meta: &Meta, kind: Special) -> Result<(), CopyError> {
        let entry_type = match kind {
            Special::Char => tar::EntryType::Char,
            Special::Block => tar::EntryType::Block,
            Special::Fifo => tar::EntryType::Fifo,
        };
        let mut header = self.header(entry_type, meta, 0);
        if kind != Special::Fifo {
            let dev = meta.rdev as libc::dev_t;
            header
                .set_device_major(libc::major(dev))
                .and_then(|()| header.set_device_minor(libc::minor(dev)))
                .map_err(write_error)?;
        }
        self.builder
            .append_data(&mut header, path, io::empty())
            .map_err(write_error)
    }
}
