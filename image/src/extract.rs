//! Safe, in-process extraction of a tar (or gzip-compressed tar) stream.
//!
//! Every entry is created relative to a directory file descriptor that was
//! reached by opening each parent component with `O_NOFOLLOW|O_DIRECTORY`,
//! so a symlink planted by the archive is never followed, and names with a
//! `..` component are refused. Directory metadata is applied at the end,
//! deepest first, so that a read-only directory can still be filled.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use sha2::{Digest, Sha256};
use tar::EntryType;

use crate::ImageError;

/// What an extraction produced.
#[derive(Debug)]
pub(crate) struct Extracted {
    /// Hex sha256 of the (decompressed) tar stream.
    pub(crate) sha256: String,
    /// Bytes of regular file content written.
    pub(crate) size: u64,
}

/// Extract a tar stream (plain or gzip, detected by its magic bytes) into
/// `dest`, which must not exist yet; its parent must.
///
/// Ownership, mode bits (setuid, setgid, sticky included), mtimes,
/// symlinks, hard links, fifos and device nodes are preserved. A leading `/`
/// is stripped from entry names (`/etc/x` lands in `dest/etc/x`). Entries
/// whose name has a `..` component, that would be written through a symlink
/// or a non-directory, and hard links whose target is not an earlier entry
/// of the archive are refused with [`ImageError::UnsafeEntry`]. Whiteout
/// files (`.wh.*`) are not created.
///
/// When not running as root, ownership is not changed and character and
/// block devices are skipped.
///
/// On any error `dest` is removed and nothing of the archive is left.
pub fn extract(reader: impl Read, dest: &Path) -> Result<(), ImageError> {
    extract_archive(reader, dest, "<stream>").map(|_| ())
}

pub(crate) fn extract_archive(
    reader: impl Read,
    dest: &Path,
    origin: &str,
) -> Result<Extracted, ImageError> {
    DirBuilder::new()
        .mode(0o700)
        .create(dest)
        .map_err(|e| ImageError::io("create directory", dest, e))?;
    match extract_into(reader, dest, origin) {
        Ok(extracted) => Ok(extracted),
        Err(error) => match remove_tree(dest) {
            Ok(()) => Err(error),
            Err(cleanup) => Err(ImageError::CleanupFailed {
                error: Box::new(error),
                cleanup: Box::new(cleanup),
            }),
        },
    }
}

/// Remove a directory tree without following symlinks, making directories
/// writable first if that is what stops the removal. A missing path is not
/// an error.
pub(crate) fn remove_tree(path: &Path) -> Result<(), ImageError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path);
            match fs::remove_dir_all(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(ImageError::io("remove directory tree", path, e)),
            }
        }
        Err(e) => Err(ImageError::io("remove directory tree", path, e)),
    }
}

/// Best effort: give the owner rwx on every directory below `path`. Only
/// called on trees this crate created inside its private (0700) store.
fn make_dirs_writable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            make_dirs_writable(&entry.path());
        }
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A reader that hashes and counts what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Wrap `reader` in a gzip decoder if it starts with the gzip magic bytes.
fn decompressed<'r>(
    mut reader: impl Read + 'r,
    origin: &str,
) -> Result<Box<dyn Read + 'r>, ImageError> {
    let mut magic = [0u8; 2];
    let mut filled = 0;
    while filled < magic.len() {
        match reader.read(&mut magic[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ImageError::Archive {
                    origin: origin.to_owned(),
                    source,
                })
            }
        }
    }
    let head = io::Cursor::new(magic[..filled].to_vec());
    let stream = head.chain(reader);
    if magic[..filled] == GZIP_MAGIC {
        Ok(Box::new(MultiGzDecoder::new(stream)))
    } else {
        Ok(Box::new(stream))
    }
}

fn extract_into(reader: impl Read, dest: &Path, origin: &str) -> Result<Extracted, ImageError> {
    let archive_err = |source: io::Error| ImageError::Archive {
        origin: origin.to_owned(),
        source,
    };
    let stream = HashingReader {
        inner: decompressed(reader, origin)?,
        hasher: Sha256::new(),
        count: 0,
    };
    let mut extractor = Extractor::new(dest)?;
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries().map_err(archive_err)? {
        let entry = entry.map_err(archive_err)?;
        extractor.entry(entry, origin)?;
    }
    // Read what follows the end-of-archive blocks too, so the digest covers
    // the whole stream and a gzip trailer (CRC) is checked.
    let mut stream = archive.into_inner();
    io::copy(&mut stream, &mut io::sink()).map_err(archive_err)?;
    if stream.count == 0 {
        return Err(archive_err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "empty archive",
        )));
    }
    extractor.finish()?;
    let digest = stream.hasher.finalize();
    Ok(Extracted {
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        size: extractor.size,
    })
}

/// Ownership, mode and time of an entry.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Option<i64>,
}

impl Meta {
    const IMPLICIT_DIR: Meta = Meta {
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: None,
    };
}

struct Extractor<'a> {
    dest: &'a Path,
    root: OwnedFd,
    is_root: bool,
    /// Directory metadata applied by `finish`, keyed by relative components
    /// (the empty key is `dest` itself).
    dirs: HashMap<Vec<OsString>, Meta>,
    size: u64,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl<'a> Extractor<'a> {
    fn new(dest: &'a Path) -> Result<Self, ImageError> {
        let root = nix::fcntl::open(dest, DIR_FLAGS, Mode::empty())
            .map_err(|e| ImageError::errno("open directory", dest, e))?;
        let mut dirs = HashMap::new();
        dirs.insert(Vec::new(), Meta::IMPLICIT_DIR);
        Ok(Extractor {
            dest,
            root,
            is_root: nix::unistd::geteuid().is_root(),
            dirs,
            size: 0,
        })
    }

    /// Give a just-created entry (not followed if it is a symlink) the
    /// archive's owner; only root can, elsewhere the extractor's own stays.
    fn chown_entry(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        meta: Meta,
        path: &Path,
    ) -> Result<(), ImageError> {
        if !self.is_root {
            return Ok(());
        }
        fchownat(
            parent,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| ImageError::errno("change owner of", path, e))
    }

    fn full_path(&self, comps: &[OsString]) -> PathBuf {
        let mut path = self.dest.to_path_buf();
        path.extend(comps);
        path
    }

    fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        origin: &str,
    ) -> Result<(), ImageError> {
        let archive_err = |source: io::Error| ImageError::Archive {
            origin: origin.to_owned(),
            source,
        };
        let raw_bytes = entry.path_bytes().into_owned();
        let raw = String::from_utf8_lossy(&raw_bytes).into_owned();
        let comps = normalize(Path::new(OsStr::from_bytes(&raw_bytes)), &raw, "name")?;
        let meta = entry_meta(&mut entry, &raw).map_err(archive_err)?;
        let kind = entry.header().entry_type();

        // Whiteouts only mean something between layers; do not create them.
        if let Some(last) = comps.last() {
            if let Some(hidden) = last.as_bytes().strip_prefix(b".wh.") {
                if hidden != b".wh..opq" && !hidden.is_empty() && hidden != b"." && hidden != b".."
                {
                    self.whiteout(&comps[..comps.len() - 1], OsStr::from_bytes(hidden), &raw)?;
                }
                return Ok(());
            }
        }

        match kind {
            EntryType::Directory => self.directory(comps, meta, &raw),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                if raw_bytes.ends_with(b"/") {
                    self.directory(comps, meta, &raw)
                } else {
                    self.regular(&comps, meta, &raw, &mut entry, origin)
                }
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| ImageError::unsafe_entry(&raw, "symlink without a target"))?
                    .into_owned();
                self.symlink(&comps, meta, &raw, OsStr::from_bytes(&target))
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| ImageError::unsafe_entry(&raw, "hard link without a target"))?
                    .into_owned();
                self.hardlink(&comps, &raw, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let dev = if kind == EntryType::Fifo {
                    0
                } else {
                    let header = entry.header();
                    let major = header.device_major().map_err(archive_err)?;
                    let minor = header.device_minor().map_err(archive_err)?;
                    nix::sys::stat::makedev(
                        u64::from(major.unwrap_or(0)),
                        u64::from(minor.unwrap_or(0)),
                    )
                };
                let kind = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                self.node(&comps, meta, &raw, kind, dev)
            }
            // PAX/GNU long-name headers are consumed by the tar crate;
            // anything else (global headers, volume labels...) has no file.
            _ => Ok(()),
        }
    }

    /// Open the directory `comps` (relative to dest) without following any
    /// symlink; missing components are created when `create` is set.
    fn open_dir(
        &mut self,
        comps: &[OsString],
        raw: &str,
        create: bool,
    ) -> Result<OwnedFd, ImageError> {
        let mut fd = self
            .root
            .try_clone()
            .map_err(|e| ImageError::io("duplicate descriptor of", self.dest, e))?;
        for (i, comp) in comps.iter().enumerate() {
            let prefix = &comps[..=i];
            match openat(&fd, comp.as_os_str(), DIR_FLAGS, Mode::empty()) {
                Ok(next) => fd = next,
                Err(Errno::ENOENT) if create => {
                    mkdirat(&fd, comp.as_os_str(), Mode::from_bits_truncate(0o700)).map_err(
                        |e| ImageError::errno("create directory", self.full_path(prefix), e),
                    )?;
                    self.dirs.insert(prefix.to_vec(), Meta::IMPLICIT_DIR);
                    fd = openat(&fd, comp.as_os_str(), DIR_FLAGS, Mode::empty()).map_err(|e| {
                        ImageError::errno("open directory", self.full_path(prefix), e)
                    })?;
                }
                Err(Errno::ENOENT) => {
                    return Err(ImageError::unsafe_entry(
                        raw,
                        format!("{} does not exist in the layer", display(prefix)),
                    ))
                }
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    let what = match fstatat(&fd, comp.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Ok(st) if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits() => {
                            "a symlink; writing through links is not allowed"
                        }
                        _ => "not a directory",
                    };
                    return Err(ImageError::unsafe_entry(
                        raw,
                        format!("{} is {what}", display(prefix)),
                    ));
                }
                Err(e) => {
                    return Err(ImageError::errno(
                        "open directory",
                        self.full_path(prefix),
                        e,
                    ))
                }
            }
        }
        Ok(fd)
    }

    /// Open the parent of `comps` (creating it) and make room for the last
    /// component: an existing non-directory is unlinked (never followed), an
    /// existing directory is removed unless `keep_dir`. Returns the parent
    /// and whether an existing directory was kept.
    fn prepare(
        &mut self,
        comps: &[OsString],
        raw: &str,
        keep_dir: bool,
    ) -> Result<(OwnedFd, bool), ImageError> {
        let (name, parents) = comps
            .split_last()
            .ok_or_else(|| ImageError::unsafe_entry(raw, "names the layer root itself"))?;
        let parent = self.open_dir(parents, raw, true)?;
        let kept = self.clear(&parent, comps, name, keep_dir)?;
        Ok((parent, kept))
    }

    fn clear(
        &mut self,
        parent: &OwnedFd,
        comps: &[OsString],
        name: &OsStr,
        keep_dir: bool,
    ) -> Result<bool, ImageError> {
        match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(ImageError::errno("stat", self.full_path(comps), e)),
            Ok(st) if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() => {
                if keep_dir {
                    return Ok(true);
                }
                // The parents were just opened without following links and
                // the tree is private to this extraction, so the path is
                // the directory we looked at; remove_dir_all never follows
                // symlinks.
                remove_tree(&self.full_path(comps))?;
                self.dirs.retain(|k, _| !k.starts_with(comps));
                Ok(false)
            }
            Ok(_) => {
                unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| ImageError::errno("remove", self.full_path(comps), e))?;
                Ok(false)
            }
        }
    }

    fn whiteout(
        &mut self,
        parents: &[OsString],
        hidden: &OsStr,
        raw: &str,
    ) -> Result<(), ImageError> {
        let parent = self.open_dir(parents, raw, true)?;
        let mut comps = parents.to_vec();
        comps.push(hidden.to_owned());
        self.clear(&parent, &comps, hidden, false).map(drop)
    }

    fn directory(&mut self, comps: Vec<OsString>, meta: Meta, raw: &str) -> Result<(), ImageError> {
        if !comps.is_empty() {
            let (parent, kept) = self.prepare(&comps, raw, true)?;
            if !kept {
                let name = comps.last().map(OsString::as_os_str).unwrap_or_default();
                mkdirat(&parent, name, Mode::from_bits_truncate(0o700)).map_err(|e| {
                    ImageError::errno("create directory", self.full_path(&comps), e)
                })?;
            }
        }
        self.dirs.insert(comps, meta);
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        comps: &[OsString],
        meta: Meta,
        raw: &str,
        entry: &mut tar::Entry<'_, R>,
        origin: &str,
    ) -> Result<(), ImageError> {
        let (parent, _) = self.prepare(comps, raw, false)?;
        let path = self.full_path(comps);
        let name = comps.last().map(OsString::as_os_str).unwrap_or_default();
        let fd = openat(
            &parent,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| ImageError::errno("create file", &path, e))?;
        let mut file = File::from(fd);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ImageError::Archive {
                        origin: origin.to_owned(),
                        source,
                    })
                }
            };
            file.write_all(&buf[..n])
                .map_err(|e| ImageError::io("write", &path, e))?;
            self.size += n as u64;
        }
        self.apply_fd(&file, meta, &path)
    }

    /// chown (as root), chmod and set the mtime of an open file or directory.
    fn apply_fd(
        &self,
        fd: &impl std::os::fd::AsFd,
        meta: Meta,
        path: &Path,
    ) -> Result<(), ImageError> {
        if self.is_root {
            fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| ImageError::errno("change owner of", path, e))?;
        }
        // After chown, which clears setuid/setgid bits.
        fchmod(fd, Mode::from_bits_truncate(meta.mode & 0o7777))
            .map_err(|e| ImageError::errno("change mode of", path, e))?;
        if let Some(mtime) = meta.mtime {
            let t = TimeSpec::new(mtime, 0);
            futimens(fd, &t, &t).map_err(|e| ImageError::errno("set times of", path, e))?;
        }
        Ok(())
    }

    fn symlink(
        &mut self,
        comps: &[OsString],
        meta: Meta,
        raw: &str,
        target: &OsStr,
    ) -> Result<(), ImageError> {
        let (parent, _) = self.prepare(comps, raw, false)?;
        let path = self.full_path(comps);
        let name = comps.last().map(OsString::as_os_str).unwrap_or_default();
        // The target is stored as-is: it is resolved inside the container.
        symlinkat(target, &parent, name)
            .map_err(|e| ImageError::errno("create symlink", &path, e))?;
        self.chown_entry(&parent, name, meta, &path)?;
        if let Some(mtime) = meta.mtime {
            let t = TimeSpec::new(mtime, 0);
            utimensat(&parent, name, &t, &t, UtimensatFlags::NoFollowSymlink)
                .map_err(|e| ImageError::errno("set times of", &path, e))?;
        }
        Ok(())
    }

    fn hardlink(&mut self, comps: &[OsString], raw: &str, target: &[u8]) -> Result<(), ImageError> {
        let target_raw = String::from_utf8_lossy(target).into_owned();
        let tcomps = normalize(
            Path::new(OsStr::from_bytes(target)),
            raw,
            "hard link target",
        )?;
        let (tname, tparents) = tcomps.split_last().ok_or_else(|| {
            ImageError::unsafe_entry(
                raw,
                format!("hard link target {target_raw:?} is the layer root"),
            )
        })?;
        if tcomps == comps {
            return Ok(());
        }
        let tparent = self.open_dir(tparents, raw, false).map_err(|e| match e {
            ImageError::UnsafeEntry { entry, reason } => ImageError::UnsafeEntry {
                entry,
                reason: format!("hard link target {target_raw:?}: {reason}"),
            },
            other => other,
        })?;
        match fstatat(&tparent, tname.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => {
                return Err(ImageError::unsafe_entry(
                    raw,
                    format!(
                        "hard link target {target_raw:?} is not an earlier entry of this archive"
                    ),
                ))
            }
            Err(e) => return Err(ImageError::errno("stat", self.full_path(&tcomps), e)),
            Ok(st) if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() => {
                return Err(ImageError::unsafe_entry(
                    raw,
                    format!("hard link target {target_raw:?} is a directory"),
                ))
            }
            Ok(_) => {}
        }
        let (parent, _) = self.prepare(comps, raw, false)?;
        let name = comps.last().map(OsString::as_os_str).unwrap_or_default();
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        linkat(&tparent, tname.as_os_str(), &parent, name, AtFlags::empty())
            .map_err(|e| ImageError::errno("create hard link", self.full_path(comps), e))
    }

    fn node(
        &mut self,
        comps: &[OsString],
        meta: Meta,
        raw: &str,
        kind: SFlag,
        dev: u64,
    ) -> Result<(), ImageError> {
        if kind != SFlag::S_IFIFO && !self.is_root {
            // Only root may create device nodes; rootless runtimes skip them too.
            return Ok(());
        }
        let (parent, _) = self.prepare(comps, raw, false)?;
        let path = self.full_path(comps);
        let name = comps.last().map(OsString::as_os_str).unwrap_or_default();
        mknodat(&parent, name, kind, Mode::from_bits_truncate(0o600), dev)
            .map_err(|e| ImageError::errno("create device node", &path, e))?;
        self.chown_entry(&parent, name, meta, &path)?;
        // We just created it in a directory reached without following links:
        // it is not a symlink, so following is harmless here.
        fchmodat(
            &parent,
            name,
            Mode::from_bits_truncate(meta.mode & 0o7777),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| ImageError::errno("change mode of", &path, e))?;
        if let Some(mtime) = meta.mtime {
            let t = TimeSpec::new(mtime, 0);
            utimensat(&parent, name, &t, &t, UtimensatFlags::NoFollowSymlink)
                .map_err(|e| ImageError::errno("set times of", &path, e))?;
        }
        Ok(())
    }

    /// Apply directory metadata, deepest first, so that a directory made
    /// read-only (or non-searchable) does not stop its children.
    fn finish(&mut self) -> Result<(), ImageError> {
        let mut dirs: Vec<_> = std::mem::take(&mut self.dirs).into_iter().collect();
        dirs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        for (comps, meta) in dirs {
            let path = self.full_path(&comps);
            let fd = match comps.split_last() {
                None => self
                    .root
                    .try_clone()
                    .map_err(|e| ImageError::io("duplicate descriptor of", &path, e))?,
                Some((name, parents)) => {
                    // A directory replaced by a later entry is simply skipped.
                    let Ok(parent) = self.open_dir(parents, "", false) else {
                        continue;
                    };
                    match openat(&parent, name.as_os_str(), DIR_FLAGS, Mode::empty()) {
                        Ok(fd) => fd,
                        Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                        Err(e) => return Err(ImageError::errno("open directory", &path, e)),
                    }
                }
            };
            self.apply_fd(&fd, meta, &path)?;
        }
        Ok(())
    }
}

fn display(comps: &[OsString]) -> String {
    let path: PathBuf = comps.iter().collect();
    format!("{:?}", path.display().to_string())
}

/// Turn an entry name into components below the layer root: a leading `/`
/// and `.` components are dropped, `..` is refused.
fn normalize(path: &Path, raw: &str, what: &str) -> Result<Vec<OsString>, ImageError> {
    let mut comps = Vec::new();
    for comp in path.components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(c) => comps.push(c.to_owned()),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ImageError::unsafe_entry(
                    raw,
                    format!(
                        "{what} {:?} has a \"..\" component",
                        path.display().to_string()
                    ),
                ))
            }
        }
    }
    Ok(comps)
}

/// Mode, owner and mtime of an entry, PAX records taking precedence.
fn entry_meta<R: Read>(entry: &mut tar::Entry<'_, R>, raw: &str) -> io::Result<Meta> {
    let header = entry.header();
    let old = header.as_old();
    // Like Go's archive/tar, an empty numeric field reads as 0.
    let numeric = |value: io::Result<u64>, raw_field: &[u8]| match value {
        Err(_) if raw_field.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        other => other,
    };
    let mode = u32::try_from(numeric(header.mode().map(u64::from), &old.mode)?).unwrap_or(0);
    let mut uid = numeric(header.uid(), &old.uid)?;
    let mut gid = numeric(header.gid(), &old.gid)?;
    let mut mtime = numeric(header.mtime(), &old.mtime)?;
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let value = ext.value().ok();
            let int = |v: Option<&str>| v.and_then(|v| v.split('.').next()?.parse::<u64>().ok());
            match ext.key() {
                Ok("uid") => uid = int(value).unwrap_or(uid),
                Ok("gid") => gid = int(value).unwrap_or(gid),
                Ok("mtime") => mtime = int(value).unwrap_or(mtime),
                _ => {}
            }
        }
    }
    let id = |v: u64, what: &str| {
        u32::try_from(v).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("entry {raw:?}: {what} {v} out of range"),
            )
        })
    };
    Ok(Meta {
        mode,
        uid: id(uid, "uid")?,
        gid: id(gid, "gid")?,
        mtime: Some(i64::try_from(mtime).unwrap_or(i64::MAX)),
    })
}
