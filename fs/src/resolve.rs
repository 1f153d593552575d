//! Resolving paths inside a container root without ever leaving it.
//!
//! Two resolvers with the same semantics:
//!
//! - openat2(2) with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` (Linux 5.6+):
//!   the kernel treats the root handle as `/` for absolute symlinks and
//!   `..`, and refuses /proc magic links with ELOOP;
//! - where openat2 is missing (ENOSYS), a walk one component at a time with
//!   `openat(O_PATH|O_NOFOLLOW)`, expanding symlinks by hand relative to
//!   the root (at most [`MAX_SYMLINKS`]), keeping a stack of directory
//!   handles so that `..` is never asked of the kernel and stops at the
//!   root, and refusing every symlink that lives on procfs (magic or not).
//!
//! Creation ([`Create`]) is built on top: look the path up; if a component
//! is missing, find the deepest prefix that resolves, create the next
//! component there with mkdirat(2) (or an `O_CREAT|O_EXCL|O_NOFOLLOW`
//! file), and look again. Every lookup starts from the root handle, so a
//! symlink swapped in concurrently is still resolved inside the root; a
//! dangling symlink is followed (its target is created, inside the root).

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{open, openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};
use nix::unistd::{chdir, fchdir};

use crate::FsError;

/// The most symlinks one resolution follows (the kernel's MAXSYMLINKS).
pub const MAX_SYMLINKS: u32 = 40;

/// How often openat2(2) is retried when it reports a concurrent rename or
/// mount (EAGAIN) or is interrupted.
const OPENAT2_RETRIES: u32 = 32;

/// Upper bound on lookups+creations in one [`open_in_root`] (each step
/// creates a component, follows a dangling symlink or loses a race).
const MAX_CREATE_STEPS: u32 = 4096;

/// Set once openat2(2) returned ENOSYS: use the component walk from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// What [`open_in_root`] creates when (part of) the path is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Nothing: a missing component is an error (ENOENT).
    Nothing,
    /// Every missing component, the last one included, as a directory
    /// (mode 0755, less the umask); the result must be a directory.
    Dir,
    /// Missing components as directories (0755) and the last one as an
    /// empty regular file (0644, less the umask). An existing last
    /// component is opened whatever it is.
    File,
}

/// Which resolver to use (the walk is forced in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolver {
    /// openat2(2), or the walk if the kernel has no openat2.
    Auto,
    /// Always the component walk.
    #[cfg_attr(not(test), allow(dead_code))]
    Walk,
}

/// Flags for a directory handle that is only used as an anchor for *at
/// calls and mount targets.
const DIR_PATH: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

/// Open a directory we trust (the rootfs path itself, chosen by berth).
pub(crate) fn open_trusted_dir(path: &Path) -> Result<OwnedFd, FsError> {
    open(path, DIR_PATH, Mode::empty()).map_err(|source| FsError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// What `name` in `dir` is, when it is not a directory we can open.
fn not_a_dir_error(dir: impl std::os::fd::AsFd, name: &str, shown: &Path) -> FsError {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st)
            if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK =>
        {
            FsError::SymlinkInPath {
                path: shown.to_path_buf(),
            }
        }
        Ok(_) => FsError::NotADirectory {
            path: shown.to_path_buf(),
        },
        Err(source) => FsError::Open {
            path: shown.to_path_buf(),
            source,
        },
    }
}

/// Open the directory `name` (a single component) below `dir` without
/// following a symlink; if it is missing and `create` is true, create it
/// with mode 0755 first. `shown` is the full path, for errors.
pub(crate) fn open_child_dir(
    dir: &OwnedFd,
    name: &str,
    shown: &Path,
    create: bool,
) -> Result<OwnedFd, FsError> {
    debug_assert!(!name.is_empty() && !name.contains('/') && name != "." && name != "..");
    let flags = DIR_PATH | OFlag::O_NOFOLLOW;
    let mut created = false;
    loop {
        match openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if create && !created => {
                match mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => created = true,
                    Err(e) => {
                        return Err(FsError::CreateDir {
                            path: shown.to_path_buf(),
                            source: e.into(),
                        })
                    }
                }
            }
            // O_NOFOLLOW on a symlink gives ELOOP, or, with O_PATH, the
            // link itself, which O_DIRECTORY turns into ENOTDIR.
            Err(Errno::ENOTDIR | Errno::ELOOP) => return Err(not_a_dir_error(dir, name, shown)),
            Err(source) => {
                return Err(FsError::Open {
                    path: shown.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// `true` if `st` is a directory.
pub(crate) fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn is_symlink(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// `true` if the handle is on a procfs (whose symlinks may be magic).
fn on_procfs(fd: &OwnedFd) -> bool {
    // If fstatfs fails, assume the worst.
    fstatfs(fd).map_or(true, |st| st.filesystem_type() == PROC_SUPER_MAGIC)
}

/// `/proc/self/fd/N` for a handle we hold: how mount(2) and readlink(2)
/// reach what the handle refers to.
pub(crate) fn proc_fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Bind-mount what handle `source` refers to onto what handle `target`
/// refers to (recursively with `recursive`), both reached through
/// `/proc/self/fd`, so no path is looked up again between check and mount.
/// `shown` names the target in the error.
pub(crate) fn bind_mount_fds(
    source: &OwnedFd,
    target: &OwnedFd,
    recursive: bool,
    shown: &Path,
) -> Result<(), FsError> {
    let mut flags = nix::mount::MsFlags::MS_BIND;
    if recursive {
        flags |= nix::mount::MsFlags::MS_REC;
    }
    nix::mount::mount(
        Some(&proc_fd_path(source)),
        &proc_fd_path(target),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(|source| FsError::Mount {
        target: shown.to_path_buf(),
        fstype: "bind".into(),
        source,
    })
}

/// The path the kernel reports for a handle (relative to our root).
pub(crate) fn fd_path(fd: &OwnedFd) -> Result<PathBuf, FsError> {
    let link = proc_fd_path(fd);
    std::fs::read_link(&link).map_err(|source| FsError::ReadLink { path: link, source })
}

/// Look `path` up below `root`, treating `root` as `/`, creating nothing.
pub(crate) fn lookup(root: &OwnedFd, path: &OsStr, resolver: Resolver) -> Result<OwnedFd, Errno> {
    if resolver == Resolver::Auto && !NO_OPENAT2.load(Ordering::Relaxed) {
        match openat2_in_root(root, path) {
            Err(Errno::ENOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            other => return other,
        }
    }
    walk_in_root(root, path)
}

/// openat2(root, path, O_PATH|O_CLOEXEC, RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS).
fn openat2_in_root(root: &OwnedFd, path: &OsStr) -> Result<OwnedFd, Errno> {
    let path = if path.is_empty() {
        OsStr::new(".")
    } else {
        path
    };
    let c_path = CString::new(path.as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: open_how is a plain C struct of integers; all-zero is valid
    // (no flags, mode 0, no resolve flags). It is #[non_exhaustive] in libc,
    // hence zeroed() and field assignments rather than a literal.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    for _ in 0..OPENAT2_RETRIES {
        // SAFETY: `c_path` is NUL-terminated and `how` is an initialised
        // open_how whose exact size we pass; both outlive the call and the
        // kernel keeps no pointer to them. `root` is an open descriptor.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c_path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if ret >= 0 {
            // SAFETY: openat2 returned a new descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) });
        }
        match Errno::last() {
            Errno::EAGAIN | Errno::EINTR => continue,
            e => return Err(e),
        }
    }
    Err(Errno::EAGAIN)
}

/// Push the components of `path` to the front of `todo`, in order. A
/// trailing slash becomes a final "." (so that it requires a directory).
fn push_front_path(todo: &mut VecDeque<OsString>, path: &[u8]) {
    let mut parts: Vec<OsString> = path
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .map(|p| OsString::from_vec(p.to_vec()))
        .collect();
    if path.ends_with(b"/") && !parts.is_empty() {
        parts.push(".".into());
    }
    for part in parts.into_iter().rev() {
        todo.push_front(part);
    }
}

/// The openat2-less resolver: one component at a time, `O_NOFOLLOW`,
/// symlinks expanded by hand relative to `root`, `..` popped off a stack of
/// handles (so it never climbs above `root`, even if a directory is moved
/// meanwhile), every symlink on procfs refused with ELOOP.
fn walk_in_root(root: &OwnedFd, path: &OsStr) -> Result<OwnedFd, Errno> {
    let mut todo = VecDeque::new();
    push_front_path(&mut todo, path.as_bytes());
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let mut leaf: Option<OwnedFd> = None;
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if leaf.is_some() {
            // Something follows a component that is not a directory.
            return Err(Errno::ENOTDIR);
        }
        match name.as_bytes() {
            b"." => continue,
            b".." => {
                dirs.pop();
                continue;
            }
            _ => {}
        }
        let dir = dirs.last().unwrap_or(root);
        let fd = openat(
            dir,
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = fstat(&fd)?;
        if is_dir(&st) {
            dirs.push(fd);
        } else if is_symlink(&st) {
            if on_procfs(dir) {
                return Err(Errno::ELOOP);
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Errno::ELOOP);
            }
            let target = readlinkat(&fd, "")?;
            let target = target.as_bytes();
            if target.is_empty() {
                return Err(Errno::ENOENT);
            }
            if target.starts_with(b"/") {
                dirs.clear();
            }
            push_front_path(&mut todo, target);
        } else {
            leaf = Some(fd);
        }
    }
    match leaf.or_else(|| dirs.pop()) {
        Some(fd) => Ok(fd),
        None => openat(
            root,
            ".",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ),
    }
}

/// `root` joined with `path` taken as relative, for messages.
fn shown(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn resolve_error(root: &Path, path: &str, errno: Errno) -> FsError {
    match errno {
        // EXDEV: the kernel caught a jump out of the root (a magic link).
        Errno::ELOOP | Errno::EXDEV => FsError::UnsafeLink {
            root: root.to_path_buf(),
            path: path.to_owned(),
        },
        source => FsError::Resolve {
            root: root.to_path_buf(),
            path: path.to_owned(),
            source,
        },
    }
}

/// Open `path` inside the directory handle `root` as if `root` were `/`,
/// creating what `create` says; `shown_root` names `root` in errors.
pub(crate) fn open_at_root(
    root: &OwnedFd,
    shown_root: &Path,
    path: &str,
    create: Create,
    resolver: Resolver,
) -> Result<OwnedFd, FsError> {
    if path.contains('\0') {
        return Err(FsError::InvalidPath {
            path: path.to_owned(),
        });
    }
    let err = |e| resolve_error(shown_root, path, e);
    // The path being looked up: `path`, rewritten when a dangling symlink
    // is followed.
    let mut current: Vec<u8> = path.as_bytes().to_vec();
    let mut links = 0;
    for _ in 0..MAX_CREATE_STEPS {
        match lookup(root, OsStr::from_bytes(&current), resolver) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if create != Create::Nothing => {}
            Err(e) => return Err(err(e)),
        }
        let comps: Vec<&[u8]> = current
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        let joined = |parts: &[&[u8]]| -> Vec<u8> {
            let mut out = Vec::new();
            for p in parts {
                out.push(b'/');
                out.extend_from_slice(p);
            }
            if out.is_empty() {
                out.push(b'/');
            }
            out
        };
        // The deepest prefix that exists; the root always does.
        let Some((i, parent)) = (0..comps.len()).rev().find_map(|i| {
            lookup(root, OsStr::from_bytes(&joined(&comps[..i])), resolver)
                .ok()
                .map(|fd| (i, fd))
        }) else {
            return Err(err(Errno::ENOENT));
        };
        let name = OsStr::from_bytes(comps[i]);
        if name == "." || name == ".." {
            // Only after a non-directory, which lookup reports as ENOTDIR;
            // seen here only if the tree changed under us.
            return Err(err(Errno::ENOENT));
        }
        let created_path = || shown_root.join(OsStr::from_bytes(&joined(&comps[..=i])[1..]));
        let last = i + 1 == comps.len();
        let made = if last && create == Create::File {
            openat(
                &parent,
                name,
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .map(drop)
            .map_err(|e| (e, true))
        } else {
            mkdirat(&parent, name, Mode::from_bits_truncate(0o755)).map_err(|e| (e, false))
        };
        match made {
            Ok(()) => continue,
            Err((Errno::EEXIST, _)) => {}
            Err((source, true)) => {
                return Err(FsError::CreateFile {
                    path: created_path(),
                    source,
                })
            }
            Err((source, false)) => {
                return Err(FsError::CreateDir {
                    path: created_path(),
                    source: source.into(),
                })
            }
        }
        // It exists, yet looking it up failed with ENOENT: a dangling
        // symlink (or the tree changed under us: look again). Follow it by
        // rewriting the path; the next lookup starts from the root again.
        if on_procfs(&parent) {
            return Err(err(Errno::ELOOP));
        }
        let target = match readlinkat(&parent, name) {
            Ok(target) => target.into_vec(),
            Err(Errno::EINVAL) => continue,
            Err(e) => return Err(err(e)),
        };
        links += 1;
        if links > MAX_SYMLINKS || target.is_empty() {
            return Err(err(if target.is_empty() {
                Errno::ENOENT
            } else {
                Errno::ELOOP
            }));
        }
        let mut next = if target.starts_with(b"/") {
            Vec::new()
        } else {
            joined(&comps[..i])
        };
        next.push(b'/');
        next.extend_from_slice(&target);
        for rest in &comps[i + 1..] {
            next.push(b'/');
            next.extend_from_slice(rest);
        }
        current = next;
    }
    Err(err(Errno::ELOOP))
}

/// Open `path` inside `root` as if `root` were `/` and return an
/// `O_PATH|O_CLOEXEC` handle of what it names.
///
/// Symlinks are followed, but absolute ones and `..` are resolved relative
/// to `root`, never above it (openat2 `RESOLVE_IN_ROOT`, or the equivalent
/// walk on kernels before 5.6); /proc magic links (`/proc/self/fd/N`,
/// `/proc/PID/root`, ...) and more than [`MAX_SYMLINKS`] symlinks are
/// refused with [`FsError::UnsafeLink`]. What is missing is created as
/// `create` says, always inside `root` (a dangling symlink is followed and
/// its target created). With [`Create::Dir`], a result that is not a
/// directory is [`FsError::NotADirectory`].
///
/// The handle can be used with `fchdir`, the `*at` calls, or as a mount
/// target through `/proc/self/fd/N`; unlike a path, it cannot be redirected
/// by a symlink swapped in afterwards.
pub fn open_in_root(root: &Path, path: &str, create: Create) -> Result<OwnedFd, FsError> {
    open_in_root_with(root, path, create, Resolver::Auto)
}

pub(crate) fn open_in_root_with(
    root: &Path,
    path: &str,
    create: Create,
    resolver: Resolver,
) -> Result<OwnedFd, FsError> {
    let root_fd = open_trusted_dir(root)?;
    let fd = open_at_root(&root_fd, root, path, create, resolver)?;
    if create == Create::Dir {
        let st = fstat(&fd).map_err(|e| FsError::Stat {
            path: shown(root, path),
            source: e.into(),
        })?;
        if !is_dir(&st) {
            return Err(FsError::NotADirectory {
                path: shown(root, path),
            });
        }
    }
    Ok(fd)
}

/// [`open_in_root`] creating nothing: an `O_PATH` handle of `path` inside
/// `root`, symlinks followed without leaving `root`, magic links refused.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<OwnedFd, FsError> {
    open_in_root(root, path, Create::Nothing)
}

/// Create (if missing) the directory `path` inside `root` and return its
/// real path (below `root`).
///
/// Resolution as in [`open_in_root`] with [`Create::Dir`]: symlinks in the
/// image are followed as if `root` were `/` (so `/data -> /etc` gives
/// `<root>/etc`), `..` stops at `root`, /proc magic links such as
/// `/proc/self/fd/N` are refused, and nothing is ever created outside
/// `root`. The path is read back from `/proc/self/fd`, so /proc must be
/// mounted. To change into a working directory, prefer [`enter_workdir`],
/// which changes directory through the handle instead of a path.
pub fn ensure_dir_in_root(root: &Path, path: &str) -> Result<PathBuf, FsError> {
    let root_fd = open_trusted_dir(root)?;
    let fd = open_at_root(&root_fd, root, path, Create::Dir, Resolver::Auto)?;
    let st = fstat(&fd).map_err(|e| FsError::Stat {
        path: shown(root, path),
        source: e.into(),
    })?;
    if !is_dir(&st) {
        return Err(FsError::NotADirectory {
            path: shown(root, path),
        });
    }
    let real_root = fd_path(&root_fd)?;
    let real = fd_path(&fd)?;
    match real.strip_prefix(&real_root) {
        Ok(rel) if real.is_absolute() => Ok(root.join(rel)),
        _ => Err(FsError::OutsideRoot {
            root: root.to_path_buf(),
            path: path.to_owned(),
            resolved: real,
        }),
    }
}

/// Change into the working directory `path` of a container whose root is
/// the caller's `/` (after [`crate::pivot_root`], or after joining a running
/// container's mount namespace and root), creating it (0755) if missing.
///
/// The directory is resolved as by [`open_in_root`] in `/` ([`Create::Dir`]:
/// image symlinks followed inside the root, /proc magic links such as
/// `/proc/self/fd/N` refused), entered with fchdir(2) through the handle,
/// and then checked: getcwd(3) must return an absolute path (not
/// `(unreachable)...`) that names the same inode. Returns that path. On a
/// failed check the caller is moved back to `/` and
/// [`FsError::WorkdirOutsideRoot`] is returned.
pub fn enter_workdir(path: &str) -> Result<PathBuf, FsError> {
    let root = Path::new("/");
    let dir = open_in_root(root, path, Create::Dir)?;
    let dir_st = fstat(&dir).map_err(|e| FsError::Stat {
        path: shown(root, path),
        source: e.into(),
    })?;
    fchdir(&dir).map_err(|source| FsError::Chdir {
        path: shown(root, path),
        source,
    })?;
    let escaped = |cwd: String| {
        // Best effort: do not stay in a directory we just judged unsafe.
        let _ = chdir("/");
        FsError::WorkdirOutsideRoot {
            path: path.to_owned(),
            cwd,
        }
    };
    let cwd = match nix::unistd::getcwd() {
        Ok(cwd) => cwd,
        Err(e) => return Err(escaped(format!("error: {e}"))),
    };
    if !cwd.is_absolute() {
        return Err(escaped(cwd.display().to_string()));
    }
    match nix::sys::stat::stat(&cwd) {
        Ok(st) if st.st_dev == dir_st.st_dev && st.st_ino == dir_st.st_ino => Ok(cwd),
        _ => Err(escaped(cwd.display().to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{symlink, MetadataExt};

    const BOTH: [Resolver; 2] = [Resolver::Auto, Resolver::Walk];

    /// (dev, ino) of what a handle refers to.
    fn id_fd(fd: &OwnedFd) -> (u64, u64) {
        let st = fstat(fd).unwrap();
        (st.st_dev, st.st_ino)
    }

    /// (dev, ino) of a path (not following a final symlink).
    fn id_path(p: &Path) -> (u64, u64) {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.dev(), m.ino())
    }

    fn open(root: &Path, path: &str, create: Create, r: Resolver) -> Result<OwnedFd, FsError> {
        open_in_root_with(root, path, create, r)
    }

    #[test]
    fn absolute_symlink_resolves_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir(r.join("etc")).unwrap();
        symlink("/etc", r.join("data")).unwrap();
        for resolver in BOTH {
            let fd = open(r, "/data", Create::Nothing, resolver).unwrap();
            assert_eq!(id_fd(&fd), id_path(&r.join("etc")), "{resolver:?}");
            assert_ne!(id_fd(&fd), id_path(Path::new("/etc")));
        }
        // The public API agrees and reports the real path.
        let fd = resolve_in_root(r, "data").unwrap();
        assert_eq!(id_fd(&fd), id_path(&r.join("etc")));
        assert_eq!(ensure_dir_in_root(r, "/data").unwrap(), r.join("etc"));
    }

    #[test]
    fn dotdot_links_clamp_at_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::create_dir(r.join("etc")).unwrap();
        symlink("../../../../..", r.join("a/b/up")).unwrap();
        for resolver in BOTH {
            let fd = open(r, "a/b/up", Create::Nothing, resolver).unwrap();
            assert_eq!(id_fd(&fd), id_path(r), "{resolver:?}");
            let fd = open(r, "/a/b/up/etc", Create::Nothing, resolver).unwrap();
            assert_eq!(id_fd(&fd), id_path(&r.join("etc")), "{resolver:?}");
            let fd = open(r, "/../../..", Create::Nothing, resolver).unwrap();
            assert_eq!(id_fd(&fd), id_path(r), "{resolver:?}");
            let fd = open(r, "", Create::Nothing, resolver).unwrap();
            assert_eq!(id_fd(&fd), id_path(r), "{resolver:?}");
        }
        assert_eq!(ensure_dir_in_root(r, "/../../x/../y").unwrap(), r.join("y"));
        assert_eq!(ensure_dir_in_root(r, "/").unwrap(), r);
        assert_eq!(ensure_dir_in_root(r, "a/b/up/z").unwrap(), r.join("z"));
    }

    #[test]
    fn missing_components_are_created_inside_the_root() {
        for resolver in BOTH {
            let root = tempfile::tempdir().unwrap();
            let r = root.path();
            std::fs::create_dir(r.join("etc")).unwrap();
            symlink("/etc", r.join("data")).unwrap();
            let name = format!("berth-test-{}-{resolver:?}", std::process::id());
            let fd = open(r, &format!("/data/{name}/sub"), Create::Dir, resolver).unwrap();
            assert_eq!(id_fd(&fd), id_path(&r.join("etc").join(&name).join("sub")));
            assert!(!Path::new("/etc").join(&name).exists());
            // Idempotent.
            let again = open(r, &format!("/data/{name}/sub"), Create::Dir, resolver).unwrap();
            assert_eq!(id_fd(&again), id_fd(&fd));
            // mkdir -p semantics for "..".
            open(r, "/n/m/../o", Create::Dir, resolver).unwrap();
            assert!(r.join("n/m").is_dir() && r.join("n/o").is_dir());
        }
    }

    #[test]
    fn dangling_symlinks_are_created_inside_the_root() {
        for resolver in BOTH {
            let root = tempfile::tempdir().unwrap();
            let outside = tempfile::tempdir().unwrap();
            let r = root.path();
            let escape = format!("../../../..{}/x", outside.path().display());
            symlink(&escape, r.join("rel")).unwrap();
            symlink(outside.path().join("y"), r.join("abs")).unwrap();
            open(r, "/rel/sub", Create::Dir, resolver).unwrap();
            assert!(r
                .join(outside.path().strip_prefix("/").unwrap())
                .join("x/sub")
                .is_dir());
            open(r, "/abs", Create::File, resolver).unwrap();
            let inside = r.join(outside.path().strip_prefix("/").unwrap()).join("y");
            assert!(inside.is_file(), "{resolver:?}");
            assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        }
    }

    #[test]
    fn file_target_is_created_empty() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let fd = open_in_root(r, "/etc/conf/app.toml", Create::File).unwrap();
        let meta = std::fs::metadata(r.join("etc/conf/app.toml")).unwrap();
        assert!(meta.is_file() && meta.len() == 0);
        assert_eq!(id_fd(&fd), (meta.dev(), meta.ino()));
        // An existing directory is returned as is; the caller checks.
        let fd = open_in_root(r, "/etc", Create::File).unwrap();
        assert!(is_dir(&fstat(&fd).unwrap()));
    }

    #[test]
    fn magic_links_are_refused() {
        // The host's /proc is a real procfs: resolving /proc/self/fd/N in
        // "/" meets a magic link.
        let dir = tempfile::tempdir().unwrap();
        let held = open_trusted_dir(dir.path()).unwrap();
        let path = format!("/proc/self/fd/{}", held.as_raw_fd());
        for resolver in BOTH {
            let err = open(Path::new("/"), &path, Create::Nothing, resolver).unwrap_err();
            assert!(
                matches!(err, FsError::UnsafeLink { .. }),
                "{resolver:?}: {err:?}"
            );
            let err = open(Path::new("/"), &format!("{path}/x"), Create::Dir, resolver);
            assert!(matches!(err, Err(FsError::UnsafeLink { .. })), "{err:?}");
        }
        assert!(!dir.path().join("x").exists());
        let err = ensure_dir_in_root(Path::new("/"), &path).unwrap_err();
        assert!(err.to_string().contains("magic link"), "{err}");
        // /proc/self/cwd and /proc/1/root too.
        for p in ["/proc/self/cwd", "/proc/self/root/etc"] {
            assert!(matches!(
                resolve_in_root(Path::new("/"), p),
                Err(FsError::UnsafeLink { .. })
            ));
        }
    }

    #[test]
    fn symlink_loops_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        symlink("b", r.join("a")).unwrap();
        symlink("a", r.join("b")).unwrap();
        // A chain of exactly MAX_SYMLINKS links is fine, one more is not.
        std::fs::create_dir(r.join("end")).unwrap();
        symlink("end", r.join(format!("l{MAX_SYMLINKS}"))).unwrap();
        for i in 1..MAX_SYMLINKS {
            symlink(format!("l{}", i + 1), r.join(format!("l{i}"))).unwrap();
        }
        symlink("l1", r.join("l0")).unwrap();
        for resolver in BOTH {
            for create in [Create::Nothing, Create::Dir] {
                assert!(matches!(
                    open(r, "a/x", create, resolver),
                    Err(FsError::UnsafeLink { .. })
                ));
            }
            let fd = open(r, "l1", Create::Nothing, resolver).unwrap();
            assert_eq!(id_fd(&fd), id_path(&r.join("end")), "{resolver:?}");
            assert!(
                matches!(
                    open(r, "l0", Create::Nothing, resolver),
                    Err(FsError::UnsafeLink { .. })
                ),
                "{resolver:?}"
            );
        }
    }

    #[test]
    fn files_in_the_middle_are_not_directories() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::write(r.join("f"), b"").unwrap();
        for resolver in BOTH {
            let err = open(r, "/f/x", Create::Dir, resolver).unwrap_err();
            assert!(
                matches!(
                    err,
                    FsError::Resolve {
                        source: Errno::ENOTDIR,
                        ..
                    }
                ),
                "{resolver:?}: {err:?}"
            );
            let err = open(r, "/f/", Create::Nothing, resolver).unwrap_err();
            assert!(matches!(
                err,
                FsError::Resolve {
                    source: Errno::ENOTDIR,
                    ..
                }
            ));
            let err = open(r, "/f", Create::Dir, resolver).unwrap_err();
            assert!(
                matches!(err, FsError::NotADirectory { ref path } if *path == r.join("f")),
                "{err:?}"
            );
            assert!(matches!(
                open(r, "/missing", Create::Nothing, resolver),
                Err(FsError::Resolve {
                    source: Errno::ENOENT,
                    ..
                })
            ));
        }
    }

    #[test]
    fn walk_refuses_every_procfs_symlink() {
        // Documented limitation of the fallback: it cannot tell magic links
        // from plain ones on procfs, so it refuses both.
        assert!(matches!(
            open(
                Path::new("/"),
                "/proc/self",
                Create::Nothing,
                Resolver::Walk
            ),
            Err(FsError::UnsafeLink { .. })
        ));
        open(Path::new("/"), "/proc/1", Create::Nothing, Resolver::Walk).unwrap();
    }

    #[test]
    fn nul_is_invalid() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            ensure_dir_in_root(root.path(), "a\0b"),
            Err(FsError::InvalidPath { .. })
        ));
    }
}
