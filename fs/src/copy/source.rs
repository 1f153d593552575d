//! Where copied entries come from: a directory tree walked through
//! descriptors, or a tar stream.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{open, openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};

use super::sink::{Content, Meta, Sink, Special};
use super::CopyError;
use crate::resolve::proc_fd_path;

/// How often an entry that changes type under us is looked at again.
const RETRIES: u32 = 8;

pub(crate) fn meta_of(st: &FileStat) -> Meta {
    Meta {
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: (st.st_mtime, st.st_mtime_nsec),
        rdev: st.st_rdev,
        size: u64::try_from(st.st_size).unwrap_or(0),
        xattrs: Vec::new(),
    }
}

fn file_type(st: &FileStat) -> u32 {
    st.st_mode & libc::S_IFMT
}

/// One entry, named relative to a directory handle; an empty name means
/// the handle itself (a source found by following its symlink).
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub dir: BorrowedFd<'a>,
    pub name: &'a OsStr,
}

impl At<'_> {
    fn stat(&self) -> nix::Result<FileStat> {
        if self.name.is_empty() {
            fstat(self.dir)
        } else {
            fstatat(self.dir, self.name, AtFlags::AT_SYMLINK_NOFOLLOW)
        }
    }

    fn open_dir(&self) -> nix::Result<Dir> {
        let name = if self.name.is_empty() {
            OsStr::new(".")
        } else {
            self.name
        };
        let fd = openat(
            self.dir,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Dir::from_fd(fd)
    }

    /// Opened for reading without following a symlink and without blocking
    /// on a fifo that was swapped in (the caller checks what it got).
    fn open_file(&self) -> nix::Result<OwnedFd> {
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        if self.name.is_empty() {
            let owned = self.dir.try_clone_to_owned().map_err(|_| Errno::EMFILE)?;
            open(proc_fd_path(&owned).as_path(), flags, Mode::empty())
        } else {
            openat(
                self.dir,
                self.name,
                flags | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
        }
    }

    fn read_link(&self) -> nix::Result<OsString> {
        readlinkat(self.dir, self.name)
    }
}

/// Walks a tree depth first (names sorted, so output is reproducible),
/// feeding a [`Sink`]. Every child is opened relative to its parent's
/// handle with `O_NOFOLLOW`, so a symlink swapped in during the walk is
/// never followed: it is copied as a symlink.
pub(crate) struct TreeWalker<'s, S: Sink> {
    sink: &'s mut S,
    /// (st_dev, st_ino) of multiply linked files already written, and the
    /// path they were written under.
    links: HashMap<(u64, u64), PathBuf>,
    pub(crate) bytes: u64,
}

impl<'s, S: Sink> TreeWalker<'s, S> {
    pub(crate) fn new(sink: &'s mut S) -> Self {
        TreeWalker {
            sink,
            links: HashMap::new(),
            bytes: 0,
        }
    }

    /// Copy the entry `at` as `rel`; `shown` names it in errors.
    pub(crate) fn entry(&mut self, at: At<'_>, rel: &Path, shown: &Path) -> Result<(), CopyError> {
        for _ in 0..RETRIES {
            let st = match at.stat() {
                Ok(st) => st,
                // Removed while we were looking: nothing to copy.
                Err(Errno::ENOENT) => return Ok(()),
                Err(e) => return Err(CopyError::entry("stat", shown, e)),
            };
            let meta = meta_of(&st);
            let done = match file_type(&st) {
                libc::S_IFDIR => self.directory(at, &st, rel, shown)?,
                libc::S_IFREG => self.regular(at, &st, rel, shown)?,
                libc::S_IFLNK => match at.read_link() {
                    Ok(target) => {
                        self.sink.symlink(rel, &meta, &target)?;
                        true
                    }
                    Err(Errno::ENOENT) => return Ok(()),
                    // No longer a symlink: look again.
                    Err(Errno::EINVAL) => false,
                    Err(e) => return Err(CopyError::entry("read the link", shown, e)),
                },
                libc::S_IFCHR => self.special(rel, &meta, Special::Char)?,
                libc::S_IFBLK => self.special(rel, &meta, Special::Block)?,
                libc::S_IFIFO => self.special(rel, &meta, Special::Fifo)?,
                // Sockets cannot be copied (tar leaves them out too).
                _ => true,
            };
            if done {
                return Ok(());
            }
        }
        Err(CopyError::Unstable {
            path: shown.to_path_buf(),
        })
    }

    fn special(&mut self, rel: &Path, meta: &Meta, kind: Special) -> Result<bool, CopyError> {
        self.sink.special(rel, meta, kind)?;
        Ok(true)
    }

    /// `false`: it is no longer a directory (look again).
    fn directory(
        &mut self,
        at: At<'_>,
        st: &FileStat,
        rel: &Path,
        shown: &Path,
    ) -> Result<bool, CopyError> {
        let mut dir = match at.open_dir() {
            Ok(dir) => dir,
            Err(Errno::ENOENT) => return Ok(true),
            Err(Errno::ELOOP | Errno::ENOTDIR) => return Ok(false),
            Err(e) => return Err(CopyError::entry("open", shown, e)),
        };
        let opened = fstat(dir.as_fd()).map_err(|e| CopyError::entry("stat", shown, e))?;
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) {
            return Ok(false);
        }
        let mut meta = meta_of(&opened);
        meta.xattrs = super::xattr::read(dir.as_fd())
            .map_err(|e| CopyError::entry_io("read the extended attributes of", shown, e))?;
        if !rel.as_os_str().is_empty() {
            self.sink.directory(rel, &meta)?;
        }
        self.children(&mut dir, rel, shown)?;
        if !rel.as_os_str().is_empty() {
            self.sink.finish_directory(rel, &meta)?;
        }
        Ok(true)
    }

    /// The entries of an open directory, each as `rel/name`.
    pub(crate) fn children(
        &mut self,
        dir: &mut Dir,
        rel: &Path,
        shown: &Path,
    ) -> Result<(), CopyError> {
        let mut names: Vec<OsString> = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| CopyError::entry("list", shown, e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        names.sort();
        let fd = dir.as_fd();
        for name in &names {
            let at = At { dir: fd, name };
            self.entry(at, &rel.join(name), &shown.join(name))?;
        }
        Ok(())
    }

    /// `false`: it is no longer a regular file (look again).
    fn regular(
        &mut self,
        at: At<'_>,
        st: &FileStat,
        rel: &Path,
        shown: &Path,
    ) -> Result<bool, CopyError> {
        let meta = meta_of(st);
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&key) {
                self.sink.hardlink(rel, &meta, first)?;
                return Ok(true);
            }
        }
        let file = match at.open_file() {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => return Ok(true),
            Err(Errno::ELOOP | Errno::ENXIO) => return Ok(false),
            Err(e) => return Err(CopyError::entry("open", shown, e)),
        };
        let opened = fstat(file.as_fd()).map_err(|e| CopyError::entry("stat", shown, e))?;
        if file_type(&opened) != libc::S_IFREG || (opened.st_dev, opened.st_ino) != key {
            return Ok(false);
        }
        let mut meta = meta_of(&opened);
        meta.xattrs = super::xattr::read(file.as_fd())
            .map_err(|e| CopyError::entry_io("read the extended attributes of", shown, e))?;
        let more_links = opened.st_nlink > 1;
        self.bytes += self
            .sink
            .file(rel, &meta, Content::File(&file), more_links)?;
        if more_links {
            self.links.insert(key, rel.to_path_buf());
        }
        Ok(true)
    }
}

/// A tar member's name as a relative path: leading `/` and `./` dropped,
/// `..` refused (the sink would keep it inside anyway; an archive that
/// tries is not one to unpack).
fn archive_path(raw: &[u8]) -> Result<Option<PathBuf>, CopyError> {
    let path = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(CopyError::UnsafeArchivePath {
                    name: String::from_utf8_lossy(raw).into_owned(),
                })
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

fn header_meta(
    header: &tar::Header,
    read: impl Fn(std::io::Error) -> CopyError,
) -> Result<Meta, CopyError> {
    // Only device entries carry numbers (elsewhere the fields may be blank).
    let (major, minor) = match header.entry_type() {
        tar::EntryType::Char | tar::EntryType::Block => (
            header.device_major().map_err(&read)?.unwrap_or(0),
            header.device_minor().map_err(&read)?.unwrap_or(0),
        ),
        _ => (0, 0),
    };
    Ok(Meta {
        mode: header.mode().map_err(&read)? & 0o7777,
        uid: u32::try_from(header.uid().map_err(&read)?).unwrap_or(0),
        gid: u32::try_from(header.gid().map_err(&read)?).unwrap_or(0),
        mtime: (
            i64::try_from(header.mtime().map_err(&read)?).unwrap_or(0),
            0,
        ),
        rdev: libc::makedev(major, minor),
        size: header.size().map_err(&read)?,
        xattrs: Vec::new(),
    })
}

/// Feed a tar stream to a sink; directories get their modes and times
/// once everything below them is written (deepest first).
pub(crate) fn unpack(input: impl Read, sink: &mut impl Sink) -> Result<u64, CopyError> {
    let read = |source| CopyError::ReadArchive { source };
    let mut archive = tar::Archive::new(input);
    let mut directories: Vec<(PathBuf, Meta)> = Vec::new();
    let mut bytes = 0;
    for entry in archive.entries().map_err(read)? {
        let mut entry = entry.map_err(read)?;
        let Some(path) = archive_path(&entry.path_bytes())? else {
            continue;
        };
        let mut meta = header_meta(entry.header(), read)?;
        if let Some(extensions) = entry.pax_extensions().map_err(read)? {
            for extension in extensions {
                let extension = extension.map_err(read)?;
                if let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    if super::xattr::travels(name) {
                        meta.xattrs
                            .push((name.to_vec(), extension.value_bytes().to_vec()));
                    }
                }
            }
        }
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                sink.directory(&path, &meta)?;
                directories.push((path, meta));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                bytes += sink.file(&path, &meta, Content::Stream(&mut entry), false)?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                sink.symlink(&path, &meta, OsStr::from_bytes(&target))?;
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let Some(first) = archive_path(&target)? else {
                    return Err(CopyError::UnsafeArchivePath {
                        name: String::from_utf8_lossy(&target).into_owned(),
                    });
                };
                sink.hardlink(&path, &meta, &first)?;
            }
            tar::EntryType::Char => sink.special(&path, &meta, Special::Char)?,
            tar::EntryType::Block => sink.special(&path, &meta, Special::Block)?,
            tar::EntryType::Fifo => sink.special(&path, &meta, Special::Fifo)?,
            // PAX/GNU extension headers are read by the tar crate itself;
            // anything else (sparse, volume labels) is not a file to make.
            _ => {}
        }
    }
    directories.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
    for (path, meta) in &directories {
        sink.finish_directory(path, meta)?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::archive_path;
    use std::path::PathBuf;

    #[test]
    fn archive_names_are_made_relative_and_dotdot_refused() {
        assert_eq!(archive_path(b"./a/b").unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(
            archive_path(b"/etc/x").unwrap(),
            Some(PathBuf::from("etc/x"))
        );
        assert_eq!(archive_path(b"./").unwrap(), None);
        assert!(archive_path(b"a/../../x").is_err());
        assert!(archive_path(b"../x").is_err());
    }
}
