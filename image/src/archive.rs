//! Writing a directory tree, or the merged view of overlay layers, as a tar
//! stream, in-process and relative to directory file descriptors.
//!
//! Used by `commit` (the container's overlay `upper` over its image's
//! rootfs) and `image save` (one image's rootfs). The tree may belong to a
//! running container that changes it while it is read, so (SECURITY.md,
//! commit/cp row; CVE-2018-15664) no path is ever resolved from the host's
//! root: each layer's root is opened once, and every entry is reached with
//! `openat`/`fstatat` relative to its parent's descriptor, with
//! `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`. A symlink is archived as a symlink
//! and never followed; a directory is opened with `O_DIRECTORY|O_NOFOLLOW`;
//! a regular file is first opened with `O_PATH|O_NOFOLLOW`, checked to be a
//! regular file with `fstat`, and only then reopened for reading through
//! `/proc/self/fd`, so a name swapped to a symlink or to a device node
//! between the checks can neither make us read a host file nor open a
//! device (opening some devices has effects, e.g. a watchdog). An entry
//! that changes type between the checks is looked at again; one that
//! disappears is left out.
//!
//! # Merging overlay layers
//!
//! Rather than mounting the overlay in a private mount namespace (which
//! needs privileges, a fork and a mount per commit, and would read through
//! the kernel's merge of a possibly live upper dir anyway), the merge is
//! done in userspace, following Documentation/filesystems/overlayfs.rst
//! with `redirect_dir` and `metacopy` off (their defaults):
//!
//! - a name in a higher layer hides the same name in lower layers;
//! - a whiteout (a character device 0:0) deletes the name below and is not
//!   archived;
//! - a directory hides lower directories of the same name only if it is
//!   opaque (xattr `trusted.overlay.opaque` or `user.overlay.opaque` is
//!   `"y"`); otherwise the lower directories' entries show through, down to
//!   the first layer where the name is not a directory (which ends the
//!   merge there, as the kernel's lookup does);
//! - the merged root is the union of all layer roots.
//!
//! Extended attributes are not archived at all (the extractor does not
//! restore them), so overlay's internal `trusted.overlay.*` attributes never
//! reach an image.
//!
//! File contents are copied by the size seen when the file was opened: a
//! file that grows is cut there and one that shrinks is padded with zeros,
//! so the archive stays well-formed. For a consistent snapshot of a running
//! container, freeze it while committing (as `docker commit --pause` does).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use tar::{EntryType, Header};

use crate::extract::{OPAQUE_WHITEOUT, WHITEOUT_PREFIX};
use crate::ImageError;

/// The id the kernel shows for one a user namespace does not map.
const OVERFLOW_ID: u32 = 65534;

/// How often an entry that keeps changing type is looked at again.
const RETRIES: usize = 16;

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

const OPAQUE_XATTRS: [&CStr; 2] = [c"trusted.overlay.opaque", c"user.overlay.opaque"];

/// Write the directory tree `rootfs` to `out` as a tar archive.
///
/// Entries are sorted by name (bytewise) and their names are relative
/// (`./` for the root, `etc/`, `etc/passwd`, ...), so the same tree always
/// gives the same bytes. Mode bits (setuid, setgid and sticky included),
/// uid, gid and mtime (whole seconds) are kept; symlinks are stored as
/// symlinks with their target verbatim and never followed; files sharing an
/// inode become hard link entries to the first one archived; fifos and
/// character and block devices are stored as such; sockets are left out.
/// Extended attributes are not archived. The tree is walked with
/// descriptors and `O_NOFOLLOW` only (see the module documentation), so it
/// may be a directory that an untrusted process is changing.
///
/// [`crate::extract`] and [`crate::ImageStore::import`] read it back
/// exactly.
pub fn write_layer_tar(rootfs: &Path, out: impl Write) -> Result<(), ImageError> {
    Walker::new(out, false).run(&[rootfs])
}

/// Write one overlay layer directory (an image layer, or a container's
/// upper dir) to `out` as a layer tar in the image format: like
/// [`write_layer_tar`], except that overlayfs whiteouts (character devices
/// 0:0) become empty `.wh.NAME` files and an opaque directory is followed
/// by an empty `.wh..wh..opq` file inside it, as docker and podman write
/// layers. The same tree always gives the same bytes.
pub fn write_diff_tar(layer: &Path, out: impl Write) -> Result<(), ImageError> {
    write_diff_tar_as(layer, None, out)
}

/// [`write_diff_tar`] of the write layer of a container in a user
/// namespace: its files are owned by host ids, archived as the ids
/// `owners` maps them to in the container (65534 where it maps none, as
/// the kernel shows them).
pub fn write_diff_tar_as(
    layer: &Path,
    owners: Option<&berth_state::IdMaps>,
    out: impl Write,
) -> Result<(), ImageError> {
    let mut walker = Walker::new(out, false);
    walker.diff = true;
    walker.top_owners = owners.cloned();
    walker.run(&[layer])
}

/// Write the merged view of overlay layers to `out` as a tar archive, as
/// the overlay mount would show it, without mounting anything.
///
/// `layers` is topmost first: `[upper, image_rootfs]` for a container.
/// Whiteouts (character devices 0:0) delete the name in the layers below
/// and are not archived; opaque directories (`trusted.overlay.opaque` or
/// `user.overlay.opaque` = `"y"`) hide the layers below them. Otherwise
/// the archive is as described for [`write_layer_tar`].
pub fn write_merged_tar(layers: &[&Path], out: impl Write) -> Result<(), ImageError> {
    write_merged_tar_as(layers, None, out)
}

/// [`write_merged_tar`] for a container in a user namespace: the topmost
/// layer's owners are host ids, archived as in [`write_diff_tar_as`]; the
/// image layers below are not mapped.
pub fn write_merged_tar_as(
    layers: &[&Path],
    top_owners: Option<&berth_state::IdMaps>,
    out: impl Write,
) -> Result<(), ImageError> {
    let mut walker = Walker::new(out, true);
    walker.top_owners = top_owners.cloned();
    walker.run(layers)
}

/// One directory of one layer.
struct LayerDir {
    /// Index into `Walker::roots`.
    layer: usize,
    fd: OwnedFd,
}

/// What looking at one entry gave.
enum Outcome {
    /// Archived, or deliberately left out (whiteout, socket).
    Done,
    /// It disappeared meanwhile: left out.
    Vanished,
    /// It changed type between two checks: look again.
    Changed,
    /// A directory, archived; its entries come next, from these layers.
    Descend(Vec<LayerDir>),
}

/// A directory being archived: its layers and the names still to do.
struct Frame {
    dirs: Vec<LayerDir>,
    names: std::vec::IntoIter<(Vec<u8>, usize)>,
    /// Length of the walk's path up to this directory (ending with `/`).
    rel_len: usize,
}

struct Walker<W: Write> {
    builder: tar::Builder<W>,
    /// Interpret whiteouts and opaque directories.
    overlay: bool,
    /// Write whiteouts and opaque directories as `.wh.` entries.
    diff: bool,
    /// The layer roots, for error messages.
    roots: Vec<PathBuf>,
    /// (st_dev, st_ino) of archived non-directories with several links, and
    /// the name they were archived under.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Host ids of the topmost layer, archived as a container's ids.
    top_owners: Option<berth_state::IdMaps>,
    /// The layer of the entry being archived.
    entry_layer: usize,
}

fn is_type(st: &FileStat, kind: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

fn is_whiteout(st: &FileStat) -> bool {
    is_type(st, SFlag::S_IFCHR) && st.st_rdev == 0
}

fn write_error(source: io::Error) -> ImageError {
    ImageError::Archive {
        origin: "<archive being written>".to_owned(),
        source,
    }
}

/// An error adding the entry for `path`: a refused name or a failed write.
fn entry_error(path: &Path, source: io::Error) -> ImageError {
    ImageError::Archive {
        origin: format!("<archive being written, at {}>", path.display()),
        source,
    }
}

/// Whether the open directory `fd` is marked opaque by overlayfs.
fn is_opaque(fd: &OwnedFd, path: &Path) -> Result<bool, ImageError> {
    for name in OPAQUE_XATTRS {
        let mut value = [0u8; 8];
        // SAFETY: `fd` is an open descriptor borrowed for the call, `name`
        // is a NUL-terminated C string, and `value` is a writable buffer of
        // exactly the length passed; the kernel writes at most that much.
        let n = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n >= 0 {
            let n = usize::try_from(n).unwrap_or(0).min(value.len());
            if &value[..n] == b"y" {
                return Ok(true);
            }
            continue;
        }
        match Errno::last() {
            // Absent, unsupported by the filesystem, not visible to us
            // (trusted.* without CAP_SYS_ADMIN), or longer than "y".
            Errno::ENODATA | Errno::ENOTSUP | Errno::EPERM | Errno::EACCES | Errno::ERANGE => {}
            e => {
                return Err(ImageError::errno(
                    "read extended attribute of",
                    path.to_owned(),
                    e,
                ))
            }
        }
    }
    Ok(false)
}

/// Raise this process's soft limit of open files to its hard limit (as
/// container engines do at start): a walk holds descriptors for every
/// directory level it is in.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// The names in the open directory `fd`, without `.` and `..`.
fn list(fd: &OwnedFd, path: &Path) -> Result<Vec<Vec<u8>>, ImageError> {
    // A fresh open file description, so the walk's own descriptor keeps
    // no directory offset.
    let mut dir = nix::dir::Dir::openat(fd, c".", DIR_FLAGS, Mode::empty())
        .map_err(|e| ImageError::errno("open directory", path.to_owned(), e))?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(|e| ImageError::errno("read directory", path.to_owned(), e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Reads exactly `remaining` bytes from a file that may change size:
/// cut when it grew, padded with zeros when it shrank. A read error is
/// kept so that it can be told apart from an error writing the archive.
struct Exact<R> {
    inner: R,
    remaining: u64,
    eof: bool,
    error: Option<io::Error>,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let buf = &mut buf[..want];
        let n = if self.eof {
            buf.fill(0);
            want
        } else {
            match self.inner.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    buf.fill(0);
                    want
                }
                Ok(n) => n,
                // The caller (io::copy) retries.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    let kind = e.kind();
                    self.error = Some(e);
                    return Err(io::Error::new(kind, "reading the file failed"));
                }
            }
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl<W: Write> Walker<W> {
    fn new(out: W, overlay: bool) -> Self {
        Walker {
            builder: tar::Builder::new(out),
            overlay,
            diff: false,
            roots: Vec::new(),
            links: HashMap::new(),
            top_owners: None,
            entry_layer: 0,
        }
    }

    fn run(mut self, layers: &[&Path]) -> Result<(), ImageError> {
        if layers.is_empty() {
            return Err(ImageError::io(
                "archive",
                PathBuf::new(),
                io::Error::new(io::ErrorKind::InvalidInput, "no layer given"),
            ));
        }
        // A deep tree holds a descriptor per layer and level while it is
        // walked: allow as many as the hard limit does.
        raise_open_files_limit();
        self.roots = layers.iter().map(|p| p.to_path_buf()).collect();
        let mut dirs = Vec::with_capacity(layers.len());
        for (layer, root) in layers.iter().enumerate() {
            let fd = nix::fcntl::open(*root, DIR_FLAGS, Mode::empty())
                .map_err(|e| ImageError::errno("open directory", *root, e))?;
            dirs.push(LayerDir { layer, fd });
        }
        let st = fstat(&dirs[0].fd).map_err(|e| ImageError::errno("stat", layers[0], e))?;
        let mut header = new_header(&st, EntryType::Directory);
        self.append(&mut header, b"./", io::empty(), layers[0])?;
        // The kernel builds the merged root from all layers without a
        // lookup, so an opaque mark on the upper root is not consulted.
        self.walk(dirs)?;
        self.builder
            .into_inner()
            .and_then(|mut out| out.flush())
            .map_err(write_error)
    }

    fn host_path(&self, layer: usize, rel: &[u8]) -> PathBuf {
        let root = &self.roots[layer];
        if rel.is_empty() {
            root.clone()
        } else {
            root.join(OsStr::from_bytes(rel))
        }
    }

    /// Archive the entries of the root directory, whose layers are `dirs`,
    /// and everything below, depth first. The walk keeps its own stack of
    /// directories rather than recursing, so no depth of tree can overflow
    /// berth's stack; each directory deeper down holds one descriptor per
    /// layer until it is done.
    fn walk(&mut self, dirs: Vec<LayerDir>) -> Result<(), ImageError> {
        let mut rel = Vec::new();
        let names = self.merged_names(&dirs, &rel)?;
        let mut stack = vec![Frame {
            dirs,
            names,
            rel_len: 0,
        }];
        while let Some(frame) = stack.last_mut() {
            let Some((name, i)) = frame.names.next() else {
                stack.pop();
                continue;
            };
            rel.truncate(frame.rel_len);
            rel.extend_from_slice(&name);
            if let Some(dirs) = self.entry(&frame.dirs, i, &name, &mut rel)? {
                // `rel` now ends with the directory's `/`.
                let names = self.merged_names(&dirs, &rel)?;
                stack.push(Frame {
                    dirs,
                    names,
                    rel_len: rel.len(),
                });
            }
        }
        Ok(())
    }

    /// The names of the directory at `rel` (empty, or ending with `/`)
    /// whose visible layers are `dirs`, topmost first, sorted, each with
    /// the index of the topmost layer that has it.
    fn merged_names(
        &self,
        dirs: &[LayerDir],
        rel: &[u8],
    ) -> Result<std::vec::IntoIter<(Vec<u8>, usize)>, ImageError> {
        let mut names: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for (i, dir) in dirs.iter().enumerate() {
            for name in list(&dir.fd, &self.host_path(dir.layer, rel))? {
                names.entry(name).or_insert(i);
            }
        }
        Ok(names.into_iter().collect::<Vec<_>>().into_iter())
    }

    /// Archive one entry; `Some(layers)` for a directory whose entries are
    /// to follow.
    fn entry(
        &mut self,
        dirs: &[LayerDir],
        i: usize,
        name: &[u8],
        rel: &mut Vec<u8>,
    ) -> Result<Option<Vec<LayerDir>>, ImageError> {
        for _ in 0..RETRIES {
            match self.try_entry(dirs, i, name, rel)? {
                Outcome::Done | Outcome::Vanished => return Ok(None),
                Outcome::Descend(dirs) => return Ok(Some(dirs)),
                Outcome::Changed => continue,
            }
        }
        Err(ImageError::io(
            "archive",
            self.host_path(dirs[i].layer, rel),
            io::Error::other(format!(
                "it changed type {RETRIES} times while being archived"
            )),
        ))
    }

    fn try_entry(
        &mut self,
        dirs: &[LayerDir],
        i: usize,
        name: &[u8],
        rel: &mut Vec<u8>,
    ) -> Result<Outcome, ImageError> {
        let dir = &dirs[i];
        self.entry_layer = dir.layer;
        let name_os = OsStr::from_bytes(name);
        let path = self.host_path(dir.layer, rel);
        let st = match fstatat(&dir.fd, name_os, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(Outcome::Vanished),
            Err(e) => return Err(ImageError::errno("stat", path, e)),
        };
        if self.overlay && is_whiteout(&st) {
            return Ok(Outcome::Done);
        }
        if self.diff && is_whiteout(&st) {
            let mut header = new_header(&st, EntryType::Regular);
            header.set_mode(0o600);
            let mut marked = rel[..rel.len() - name.len()].to_vec();
            marked.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
            marked.extend_from_slice(name);
            self.append(&mut header, &marked, io::empty(), &path)?;
            return Ok(Outcome::Done);
        }
        if is_type(&st, SFlag::S_IFDIR) {
            return self.directory(dirs, i, name_os, rel);
        }
        if st.st_nlink > 1 {
            if let Some(target) = self.links.get(&(st.st_dev, st.st_ino)) {
                let target = target.clone();
                let mut header = new_header(&st, EntryType::Link);
                self.append_link(&mut header, rel, &target, &path)?;
                return Ok(Outcome::Done);
            }
        }
        let mut header;
        if is_type(&st, SFlag::S_IFREG) {
            return self.regular(&dir.fd, name_os, rel, &path);
        } else if is_type(&st, SFlag::S_IFLNK) {
            let target = match nix::fcntl::readlinkat(&dir.fd, name_os) {
                Ok(target) => target,
                Err(Errno::ENOENT) => return Ok(Outcome::Vanished),
                // Not a symlink any more.
                Err(Errno::EINVAL) => return Ok(Outcome::Changed),
                Err(e) => return Err(ImageError::errno("read symlink", path, e)),
            };
            header = new_header(&st, EntryType::Symlink);
            self.append_link(&mut header, rel, target.as_bytes(), &path)?;
        } else {
            let kind = if is_type(&st, SFlag::S_IFIFO) {
                EntryType::Fifo
            } else if is_type(&st, SFlag::S_IFCHR) {
                EntryType::Char
            } else if is_type(&st, SFlag::S_IFBLK) {
                EntryType::Block
            } else {
                // A socket: tar cannot hold it (nor does docker's).
                return Ok(Outcome::Done);
            };
            header = new_header(&st, kind);
            if kind != EntryType::Fifo {
                let major = u32::try_from(nix::sys::stat::major(st.st_rdev));
                let minor = u32::try_from(nix::sys::stat::minor(st.st_rdev));
                let (Ok(major), Ok(minor)) = (major, minor) else {
                    return Err(ImageError::io(
                        "archive",
                        path,
                        io::Error::other("device number out of range"),
                    ));
                };
                header.set_device_major(major).map_err(write_error)?;
                header.set_device_minor(minor).map_err(write_error)?;
            }
            self.append(&mut header, rel, io::empty(), &path)?;
        }
        self.remember_link(&st, rel);
        Ok(Outcome::Done)
    }

    fn remember_link(&mut self, st: &FileStat, rel: &[u8]) {
        if st.st_nlink > 1 {
            self.links.insert((st.st_dev, st.st_ino), rel.to_vec());
        }
    }

    /// Archive the directory `name` of `dirs[i]` and, below it, the merge
    /// of it and the same directory in lower layers.
    fn directory(
        &mut self,
        dirs: &[LayerDir],
        i: usize,
        name: &OsStr,
        rel: &mut Vec<u8>,
    ) -> Result<Outcome, ImageError> {
        let top = &dirs[i];
        let path = self.host_path(top.layer, rel);
        let fd = match openat(&top.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Outcome::Vanished),
            // Replaced by a symlink or a non-directory.
            Err(Errno::ELOOP | Errno::ENOTDIR) => return Ok(Outcome::Changed),
            Err(e) => return Err(ImageError::errno("open directory", path, e)),
        };
        let st = fstat(&fd).map_err(|e| ImageError::errno("stat", &path, e))?;
        let mut merged = vec![LayerDir {
            layer: top.layer,
            fd,
        }];
        if self.overlay && !is_opaque(&merged[0].fd, &path)? {
            for lower in &dirs[i + 1..] {
                let lower_path = self.host_path(lower.layer, rel);
                match openat(&lower.fd, name, DIR_FLAGS, Mode::empty()) {
                    Ok(fd) => {
                        let opaque = is_opaque(&fd, &lower_path)?;
                        merged.push(LayerDir {
                            layer: lower.layer,
                            fd,
                        });
                        if opaque {
                            break;
                        }
                    }
                    Err(Errno::ENOENT) => continue,
                    // A non-directory (or a whiteout) ends the merge.
                    Err(Errno::ELOOP | Errno::ENOTDIR) => break,
                    Err(e) => return Err(ImageError::errno("open directory", lower_path, e)),
                }
            }
        }
        rel.push(b'/');
        let mut header = new_header(&st, EntryType::Directory);
        self.append(&mut header, rel, io::empty(), &path)?;
        if self.diff && is_opaque(&merged[0].fd, &path)? {
            let mut header = new_header(&st, EntryType::Regular);
            header.set_mode(st.st_mode & 0o777);
            let mut marker = rel.clone();
            marker.extend_from_slice(OPAQUE_WHITEOUT.as_bytes());
            self.append(&mut header, &marker, io::empty(), &path)?;
        }
        Ok(Outcome::Descend(merged))
    }

    fn regular(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &[u8],
        path: &Path,
    ) -> Result<Outcome, ImageError> {
        let opath = match openat(
            dir,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Outcome::Vanished),
            Err(e) => return Err(ImageError::errno("open", path, e)),
        };
        let st = fstat(&opath).map_err(|e| ImageError::errno("stat", path, e))?;
        if !is_type(&st, SFlag::S_IFREG) {
            return Ok(Outcome::Changed);
        }
        if st.st_nlink > 1 && self.links.contains_key(&(st.st_dev, st.st_ino)) {
            // Became a link to an archived file meanwhile: start over.
            return Ok(Outcome::Changed);
        }
        // The O_PATH descriptor is known to be this regular file; reopening
        // it through its /proc magic link resolves no name of the tree.
        let proc_path = format!("/proc/self/fd/{}", opath.as_raw_fd());
        let fd = nix::fcntl::open(
            proc_path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| {
            ImageError::errno("reopen through /proc/self/fd (is /proc mounted?)", path, e)
        })?;
        let st2 = fstat(&fd).map_err(|e| ImageError::errno("stat", path, e))?;
        if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino) || !is_type(&st2, SFlag::S_IFREG) {
            return Ok(Outcome::Changed);
        }
        drop(opath);
        let size = u64::try_from(st2.st_size).unwrap_or(0);
        let mut header = new_header(&st2, EntryType::Regular);
        header.set_size(size);
        let mut data = Exact {
            inner: std::fs::File::from(fd),
            remaining: size,
            eof: false,
            error: None,
        };
        if let Err(e) = self.append(&mut header, rel, &mut data, path) {
            return Err(match data.error.take() {
                Some(read) => ImageError::io("read", path, read),
                None => e,
            });
        }
        self.remember_link(&st2, rel);
        Ok(Outcome::Done)
    }

    fn append(
        &mut self,
        header: &mut Header,
        rel: &[u8],
        data: impl Read,
        path: &Path,
    ) -> Result<(), ImageError> {
        if let (Some(owners), 0) = (&self.top_owners, self.entry_layer) {
            let container_id = |ranges: &[berth_state::IdRange], id: u64| {
                u32::try_from(id)
                    .ok()
                    .and_then(|id| berth_state::IdMaps::to_container(ranges, id))
                    .unwrap_or(OVERFLOW_ID)
            };
            let uid = container_id(&owners.uid, header.uid().unwrap_or(0));
            let gid = container_id(&owners.gid, header.gid().unwrap_or(0));
            header.set_uid(u64::from(uid));
            header.set_gid(u64::from(gid));
        }
        self.builder
            .append_data(header, Path::new(OsStr::from_bytes(rel)), data)
            .map_err(|e| entry_error(path, e))
    }

    /// Append a symlink or hard link entry whose link name is `target`
    /// verbatim (the tar crate's `set_link_name` would normalise it), with
    /// a GNU long-link entry first when it does not fit the header.
    fn append_link(
        &mut self,
        header: &mut Header,
        rel: &[u8],
        target: &[u8],
        path: &Path,
    ) -> Result<(), ImageError> {
        let field_len = header.as_old().linkname.len();
        if target.len() > field_len {
            let mut long = Header::new_gnu();
            let marker = b"././@LongLink";
            if let Some(gnu) = long.as_gnu_mut() {
                gnu.name[..marker.len()].copy_from_slice(marker);
            }
            long.set_entry_type(EntryType::GNULongLink);
            long.set_mode(0o644);
            long.set_uid(0);
            long.set_gid(0);
            long.set_mtime(0);
            long.set_size(target.len() as u64 + 1);
            long.set_cksum();
            self.builder
                .append(&long, target.chain(&[0u8][..]))
                .map_err(write_error)?;
        }
        let linkname = &mut header.as_old_mut().linkname;
        linkname.fill(0);
        let n = target.len().min(field_len);
        linkname[..n].copy_from_slice(&target[..n]);
        self.append(header, rel, io::empty(), path)
    }
}

/// A header with the type, mode, owner and mtime of `st`, size 0.
fn new_header(st: &FileStat, kind: EntryType) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(st.st_mode & 0o7777);
    header.set_uid(u64::from(st.st_uid));
    header.set_gid(u64::from(st.st_gid));
    header.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    header.set_size(0);
    header
}

#[cfg(test)]
mod deep_tree_tests {
    use std::os::fd::OwnedFd;

    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::{mkdirat, Mode};

    /// A chain of `depth` directories `d/d/d/...` below `root`, made
    /// relative to descriptors (the path is far longer than PATH_MAX).
    pub(crate) fn make_deep_tree(root: &std::path::Path, depth: usize) {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut dir: OwnedFd = nix::fcntl::open(root, flags, Mode::empty()).unwrap();
        for _ in 0..depth {
            mkdirat(&dir, "d", Mode::from_bits_truncate(0o755)).unwrap();
            dir = openat(&dir, "d", flags, Mode::empty()).unwrap();
        }
        std::fs::write(
            format!(
                "/proc/self/fd/{}/leaf",
                std::os::fd::AsRawFd::as_raw_fd(&dir)
            ),
            b"deep",
        )
        .unwrap();
    }

    #[test]
    fn a_tree_thousands_of_levels_deep_is_archived_without_recursion() {
        let dir = tempfile::tempdir().unwrap();
        make_deep_tree(dir.path(), 5000);
        let mut tar = Vec::new();
        // A test thread's stack is 2 MiB: a recursive walk overflows it
        // long before 5000 levels.
        super::write_diff_tar(dir.path(), &mut tar).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let entries = archive.entries().unwrap().count();
        // The root, 5000 directories and the leaf.
        assert_eq!(entries, 5002);
        // And back: extraction opens each directory a bounded number of
        // times (it opened every one from the root: 50 s at this depth).
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("tree");
        crate::extract::extract(&tar[..], &dest).unwrap();
        crate::extract::remove_tree(&dest).unwrap();
        crate::extract::remove_tree(dir.path()).unwrap();
    }
}

#[cfg(test)]
mod exact_tests {
    use super::Exact;
    use std::io::Read;

    fn read_all(data: &[u8], size: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut exact = Exact {
            inner: data,
            remaining: size,
            eof: false,
            error: None,
        };
        exact.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn a_file_that_changed_size_still_gives_its_stated_size() {
        assert_eq!(read_all(b"abcdef", 3), b"abc");
        assert_eq!(read_all(b"ab", 5), b"ab\0\0\0");
        assert_eq!(read_all(b"", 0), b"");
    }
}
