//! Safe, in-process extraction of a tar stream.
//!
//! Every entry is created relative to a directory file descriptor that was
//! reached by opening each parent component with `O_NOFOLLOW|O_DIRECTORY`,
//! so a symlink planted by the archive is never followed, and names with a
//! `..` component are refused. Directory metadata is applied at the end,
//! deepest first, so that a read-only directory can still be filled.
//!
//! Whiteouts (`.wh.NAME`, `.wh..wh..opq`) are either applied inside the
//! tree being extracted (a flattened root filesystem) or turned into
//! overlayfs whiteouts (a layer of a layered image): a 0:0 character
//! device for `.wh.NAME`, and the `overlay.opaque` extended attribute on
//! the directory for `.wh..wh..opq`.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr, OsString};
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use tar::EntryType;

use crate::compression::decompressed;
use crate::digest::HashingReader;
use crate::tar_split::TarSplitRecorder;
use crate::ImageError;

/// The prefix that marks a whiteout entry in a layer tar.
pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
/// The whiteout entry that makes its directory opaque.
pub(crate) const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// What to do with whiteout entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whiteouts {
    /// Delete the named entry from the tree being extracted; create nothing.
    Apply,
    /// Create overlayfs whiteouts and opaque markers, for a layer that is
    /// mounted above others.
    Overlay,
}

/// How to extract.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExtractOptions {
    pub(crate) whiteouts: Whiteouts,
    /// Refuse an archive whose top level has `manifest.json` or
    /// `oci-layout`: an image archive given as a root filesystem.
    pub(crate) refuse_image_archives: bool,
}

/// Extract a tar stream (plain, gzip, zstd or xz, detected by its magic
/// bytes) into `dest`, which must not exist yet; its parent must.
///
/// Ownership, mode bits (setuid, setgid, sticky included), mtimes,
/// symlinks, hard links, fifos and device nodes are preserved. A leading `/`
/// is stripped from entry names (`/etc/x` lands in `dest/etc/x`). Entries
/// whose name has a `..` component, that would be written through a symlink
/// or a non-directory, and hard links whose target is not an earlier entry
/// of the archive are refused with [`ImageError::UnsafeEntry`]. A whiteout
/// file (`.wh.NAME`) removes `NAME` from what was extracted before it and
/// is not created itself; one naming `.` or `..` is refused.
///
/// When not running as root, ownership is not changed and character and
/// block devices are skipped.
///
/// On any error `dest` is removed and nothing of the archive is left.
pub fn extract(reader: impl Read, dest: &Path) -> Result<(), ImageError> {
    let options = ExtractOptions {
        whiteouts: Whiteouts::Apply,
        refuse_image_archives: false,
    };
    extract_archive(reader, dest, "<stream>", options)
}

/// Extract a layer tar (as [`crate::write_diff_tar`] writes one) into
/// `dest` as an overlay layer directory: whiteout files become overlayfs
/// whiteouts and opaque markers, for a layer mounted above others (a
/// container's write layer brought back). As safe as [`extract`].
pub fn extract_diff(reader: impl Read, dest: &Path) -> Result<(), ImageError> {
    let options = ExtractOptions {
        whiteouts: Whiteouts::Overlay,
        refuse_image_archives: false,
    };
    extract_archive(reader, dest, "<layer>", options)
}

/// [`extract`] with options.
fn extract_archive(
    reader: impl Read,
    dest: &Path,
    origin: &str,
    options: ExtractOptions,
) -> Result<(), ImageError> {
    let archive_err = |source: io::Error| ImageError::Archive {
        origin: origin.to_owned(),
        source,
    };
    let (_, stream) = decompressed(reader).map_err(archive_err)?;
    let mut stream = HashingReader::new(stream);
    extract_tar(&mut stream, dest, origin, options, None)?;
    // Read what follows the end-of-archive blocks too, so that a
    // compressed stream's trailer (its checksum) is checked.
    let cleanup = |error| match remove_tree(dest) {
        Ok(()) => error,
        Err(cleanup) => ImageError::CleanupFailed {
            error: Box::new(error),
            cleanup: Box::new(cleanup),
        },
    };
    if let Err(e) = io::copy(&mut stream, &mut io::sink()) {
        return Err(cleanup(archive_err(e)));
    }
    if stream.count == 0 {
        return Err(cleanup(archive_err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "empty archive",
        ))));
    }
    Ok(())
}

/// Extract the tar stream `reader` (already decompressed) into `dest`,
/// which must not exist yet, reading up to the end-of-archive marker; the
/// caller reads whatever follows. Returns the bytes of regular file
/// content written. On error `dest` is removed.
///
/// With `split`, whose reader `reader` must be, the layer's tar-split
/// metadata is recorded: the extractor tells it where each regular file's
/// content is, and what it removes again.
pub(crate) fn extract_tar(
    reader: &mut dyn Read,
    dest: &Path,
    origin: &str,
    options: ExtractOptions,
    split: Option<&TarSplitRecorder>,
) -> Result<u64, ImageError> {
    DirBuilder::new()
        .mode(0o700)
        .create(dest)
        .map_err(|e| ImageError::io("create directory", dest, e))?;
    match extract_into(reader, dest, origin, options, split) {
        Ok(size) => Ok(size),
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

fn extract_into(
    reader: &mut dyn Read,
    dest: &Path,
    origin: &str,
    options: ExtractOptions,
    split: Option<&TarSplitRecorder>,
) -> Result<u64, ImageError> {
    let archive_err = |source: io::Error| ImageError::Archive {
        origin: origin.to_owned(),
        source,
    };
    let mut extractor = Extractor::new(dest, options, split.cloned())?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(archive_err)? {
        let entry = entry.map_err(archive_err)?;
        extractor.entry(entry, origin)?;
    }
    extractor.finish()?;
    Ok(extractor.size)
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
    root: Rc<OwnedFd>,
    /// The directory `open_dir` opened last, and its components.
    last_dir: Option<(Vec<OsString>, Rc<OwnedFd>)>,
    is_root: bool,
    options: ExtractOptions,
    /// Directory metadata applied by `finish`, keyed by relative components
    /// (the empty key is `dest` itself).
    dirs: HashMap<Vec<OsString>, Meta>,
    size: u64,
    /// Records the tar-split metadata of a stored layer.
    split: Option<TarSplitRecorder>,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl<'a> Extractor<'a> {
    fn new(
        dest: &'a Path,
        options: ExtractOptions,
        split: Option<TarSplitRecorder>,
    ) -> Result<Self, ImageError> {
        let root = nix::fcntl::open(dest, DIR_FLAGS, Mode::empty())
            .map_err(|e| ImageError::errno("open directory", dest, e))?;
        let mut dirs = HashMap::new();
        dirs.insert(Vec::new(), Meta::IMPLICIT_DIR);
        Ok(Extractor {
            dest,
            root: Rc::new(root),
            last_dir: None,
            is_root: nix::unistd::geteuid().is_root(),
            options,
            dirs,
            size: 0,
            split,
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

        if self.options.refuse_image_archives {
            if let [only] = comps.as_slice() {
                let marker = only.to_string_lossy();
                if matches!(&*marker, "manifest.json" | "oci-layout") {
                    return Err(ImageError::IsImageArchive {
                        origin: origin.to_owned(),
                        marker: marker.into_owned(),
                    });
                }
            }
        }
        if let Some(last) = comps.last() {
            if let Some(hidden) = last.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
                let parents = &comps[..comps.len() - 1];
                if last.as_bytes() == OPAQUE_WHITEOUT.as_bytes() {
                    return self.opaque(parents, &raw);
                }
                if hidden.is_empty() || hidden == b"." || hidden == b".." {
                    return Err(ImageError::unsafe_entry(
                        &raw,
                        "a whiteout must name an entry of its directory",
                    ));
                }
                return self.whiteout(parents, OsStr::from_bytes(hidden), meta, &raw);
            }
        }

        match kind {
            EntryType::Directory => self.directory(comps, meta, &raw),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                if raw_bytes.ends_with(b"/") {
                    self.directory(comps, meta, &raw)
                } else {
                    // A sparse entry's bytes in the tar are not its file's
                    // content: the tar-split keeps them verbatim.
                    let plain = kind != EntryType::GNUSparse;
                    self.regular(&comps, meta, &raw, &mut entry, origin, plain)
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
    ///
    /// The last directory opened is kept: entries of one directory mostly
    /// follow one another, and starting from it saves opening every
    /// component again. It is dropped whenever a directory is removed.
    fn open_dir(
        &mut self,
        comps: &[OsString],
        raw: &str,
        create: bool,
    ) -> Result<Rc<OwnedFd>, ImageError> {
        let (mut fd, start) = match &self.last_dir {
            Some((cached, fd)) if comps.starts_with(cached) => (fd.clone(), cached.len()),
            _ => (self.root.clone(), 0),
        };
        if start == comps.len() {
            return Ok(fd);
        }
        for (i, comp) in comps.iter().enumerate().skip(start) {
            let prefix = &comps[..=i];
            match openat(&*fd, comp.as_os_str(), DIR_FLAGS, Mode::empty()) {
                Ok(next) => fd = Rc::new(next),
                Err(Errno::ENOENT) if create => {
                    mkdirat(&*fd, comp.as_os_str(), Mode::from_bits_truncate(0o700)).map_err(
                        |e| ImageError::errno("create directory", self.full_path(prefix), e),
                    )?;
                    self.dirs.insert(prefix.to_vec(), Meta::IMPLICIT_DIR);
                    let next =
                        openat(&*fd, comp.as_os_str(), DIR_FLAGS, Mode::empty()).map_err(|e| {
                            ImageError::errno("open directory", self.full_path(prefix), e)
                        })?;
                    fd = Rc::new(next);
                }
                Err(Errno::ENOENT) => {
                    return Err(ImageError::unsafe_entry(
                        raw,
                        format!("{} does not exist in the layer", display(prefix)),
                    ))
                }
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    let what = match fstatat(&*fd, comp.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
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
        self.last_dir = Some((comps.to_vec(), fd.clone()));
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
    ) -> Result<(Rc<OwnedFd>, bool), ImageError> {
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
                // Also drop the cached descriptor, which may be below it.
                self.last_dir = None;
                if let Some(split) = &self.split {
                    split.removing(comps, true)?;
                }
                remove_tree(&self.full_path(comps))?;
                self.dirs.retain(|k, _| !k.starts_with(comps));
                Ok(false)
            }
            Ok(_) => {
                if let Some(split) = &self.split {
                    split.removing(comps, false)?;
                }
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
        meta: Meta,
        raw: &str,
    ) -> Result<(), ImageError> {
        let parent = self.open_dir(parents, raw, true)?;
        let mut comps = parents.to_vec();
        comps.push(hidden.to_owned());
        self.clear(&parent, &comps, hidden, false)?;
        if self.options.whiteouts == Whiteouts::Apply {
            return Ok(());
        }
        // overlayfs's whiteout: a character device 0:0, which the kernel
        // lets unprivileged users create too (Linux 5.8).
        let path = self.full_path(&comps);
        mknodat(
            &parent,
            hidden,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .map_err(|e| ImageError::errno("create whiteout", &path, e))?;
        self.chown_entry(&parent, hidden, meta, &path)?;
        if let Some(mtime) = meta.mtime {
            let t = TimeSpec::new(mtime, 0);
            utimensat(&parent, hidden, &t, &t, UtimensatFlags::NoFollowSymlink)
                .map_err(|e| ImageError::errno("set times of", &path, e))?;
        }
        Ok(())
    }

    /// `.wh..wh..opq`: the directory hides what lower layers have in it.
    /// overlayfs reads `trusted.overlay.opaque` (only root may set it), or
    /// `user.overlay.opaque` on mounts with `userxattr` (unprivileged).
    fn opaque(&mut self, parents: &[OsString], raw: &str) -> Result<(), ImageError> {
        if self.options.whiteouts == Whiteouts::Apply {
            // Everything before it in this tree came from this same layer.
            return Ok(());
        }
        let dir = self.open_dir(parents, raw, true)?;
        let name: &CStr = if self.is_root {
            c"trusted.overlay.opaque"
        } else {
            c"user.overlay.opaque"
        };
        // SAFETY: `dir` is an open descriptor borrowed for the call, `name`
        // is a NUL-terminated C string, and the value is a one-byte buffer
        // whose length is passed with it.
        let rc =
            unsafe { libc::fsetxattr(dir.as_raw_fd(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
        if rc != 0 {
            return Err(ImageError::errno(
                "mark opaque (set overlay.opaque on)",
                self.full_path(parents),
                Errno::last(),
            ));
        }
        Ok(())
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
        plain: bool,
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
        let split = self.split.as_ref().filter(|_| plain);
        if let Some(split) = split {
            split.begin_file(comps);
        }
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
        if let Some(split) = split {
            split.end_file()?;
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
        let whiteout = kind == SFlag::S_IFCHR && dev == 0;
        if kind != SFlag::S_IFIFO && !whiteout && !self.is_root {
            // Only root may create device nodes; rootless runtimes skip them
            // too. overlayfs whiteouts (0:0) are allowed to anyone.
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

    /// Apply directory metadata, every directory after all below it, so
    /// that a directory made read-only (or non-searchable) does not stop
    /// its children.
    ///
    /// The directories are taken in reverse name order (a directory comes
    /// after everything below it), walking with a stack of open
    /// directories from the root: each is opened once, whatever the depth
    /// (opening each from the root would be quadratic in the depth).
    fn finish(&mut self) -> Result<(), ImageError> {
        use std::os::fd::AsFd;
        let mut dirs: Vec<_> = std::mem::take(&mut self.dirs).into_iter().collect();
        dirs.sort_by(|a, b| b.0.cmp(&a.0));
        // The open directories from the root down: (name, descriptor).
        let mut open: Vec<(OsString, OwnedFd)> = Vec::new();
        for (comps, meta) in dirs {
            let path = self.full_path(&comps);
            let shared = open
                .iter()
                .zip(&comps)
                .take_while(|((name, _), comp)| name == *comp)
                .count();
            open.truncate(shared);
            let mut reachable = true;
            for comp in &comps[shared..] {
                let parent = match open.last() {
                    Some((_, fd)) => fd.as_fd(),
                    None => self.root.as_fd(),
                };
                match openat(parent, comp.as_os_str(), DIR_FLAGS, Mode::empty()) {
                    Ok(fd) => open.push((comp.clone(), fd)),
                    // A directory replaced by a later entry is simply skipped.
                    Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => {
                        reachable = false;
                        break;
                    }
                    Err(e) => return Err(ImageError::errno("open directory", &path, e)),
                }
            }
            if !reachable {
                continue;
            }
            let fd = match open.last() {
                Some((_, fd)) => fd.as_fd(),
                None => self.root.as_fd(),
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
