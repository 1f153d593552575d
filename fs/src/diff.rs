//! What a container changed: its overlay write layer compared with the
//! image's layers below it (`berth diff`), in docker's terms and order.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode};

/// How a path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// `A`: new in the write layer.
    Added,
    /// `C`: there below, changed (or replaced) in the write layer.
    Changed,
    /// `D`: removed (an overlay whiteout).
    Deleted,
}

impl ChangeKind {
    /// docker's letter.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path, absolute inside the container (`/etc/passwd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// Where.
    pub path: PathBuf,
}

/// Reading a layer failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {step} {path}: {source}")]
pub struct DiffError {
    /// What was being done.
    pub step: &'static str,
    /// The host path.
    pub path: PathBuf,
    /// The underlying error.
    pub source: io::Error,
}

fn fail<'a>(step: &'static str, path: &'a Path) -> impl Fn(Errno) -> DiffError + 'a {
    move |e| DiffError {
        step,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// An overlay whiteout: a character device 0/0.
fn is_whiteout(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// `trusted.overlay.opaque` (or the `user.` one of unprivileged mounts)
/// is `y`: the directory hides everything below it in lower layers.
fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| {
            let name = std::ffi::CString::new(*name).expect("no NUL in a constant");
            let mut value = [0u8; 4];
            // SAFETY: `dir` is an open descriptor, `name` a NUL-terminated
            // string and `value` a buffer of the length passed.
            let n = unsafe {
                libc::fgetxattr(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            n == 1 && value[0] == b'y'
        })
}

/// One directory level of a lower layer (`None`: not there, or not a
/// directory, in that layer).
type LowerDirs = Vec<Option<OwnedFd>>;

/// What `name` is in the lower layers (topmost first): the first layer that
/// has it decides; a whiteout there means it does not exist.
fn in_lower(lowers: &LowerDirs, name: &OsStr) -> Option<FileStat> {
    for dir in lowers.iter().flatten() {
        match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_whiteout(&st) => return None,
            Ok(st) => return Some(st),
            Err(_) => {}
        }
    }
    None
}

fn sorted_names(dir: &mut Dir, path: &Path) -> Result<Vec<OsString>, DiffError> {
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(fail("list", path))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The changes of the write layer `upper` over `lowers` (topmost first),
/// in docker's order: a depth-first walk with names sorted, a directory
/// before what is in it, and the parent of an added or deleted entry
/// reported as changed just before it (once).
///
/// A directory whose size, mode and modification time equal the lower
/// one's is not reported by itself. An opaque directory (removed and made
/// again) is reported as changed, and everything in it as added.
///
/// `hidden` paths (absolute inside the container) are the engine's own
/// mount points (`/etc/hosts` and the like, made in the write layer so
/// that something can be mounted on them): they are left out, and so is a
/// directory that only changed by getting one.
pub fn layer_changes(
    upper: &Path,
    lowers: &[PathBuf],
    hidden: &[PathBuf],
) -> Result<Vec<Change>, DiffError> {
    let mut dir = Dir::open(upper, DIR_FLAGS, Mode::empty()).map_err(fail("open", upper))?;
    let lower_dirs: LowerDirs = lowers
        .iter()
        .map(|l| open(l.as_path(), DIR_FLAGS, Mode::empty()).ok())
        .collect();
    let mut walk = Walk {
        upper,
        changes: Vec::new(),
        reported_dirs: Vec::new(),
        hidden,
    };
    walk.directory(&mut dir, &lower_dirs, Path::new("/"))?;
    Ok(walk.changes)
}

struct Walk<'a> {
    upper: &'a Path,
    changes: Vec<Change>,
    /// Directories already reported (so a parent is reported once).
    reported_dirs: Vec<PathBuf>,
    hidden: &'a [PathBuf],
}

impl Walk<'_> {
    fn host(&self, path: &Path) -> PathBuf {
        self.upper.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn report(&mut self, kind: ChangeKind, path: &Path) {
        if matches!(kind, ChangeKind::Added | ChangeKind::Deleted) {
            if let Some(parent) = path.parent().filter(|p| *p != Path::new("/")) {
                if !self.reported_dirs.iter().any(|d| d == parent) {
                    self.changes.push(Change {
                        kind: ChangeKind::Changed,
                        path: parent.to_path_buf(),
                    });
                    self.reported_dirs.push(parent.to_path_buf());
                }
            }
        }
        self.changes.push(Change {
            kind,
            path: path.to_path_buf(),
        });
    }

    fn directory(
        &mut self,
        dir: &mut Dir,
        lowers: &LowerDirs,
        path: &Path,
    ) -> Result<(), DiffError> {
        let names = sorted_names(dir, &self.host(path))?;
        let fd = dir.as_fd();
        for name in &names {
            let child = path.join(name);
            if self.hidden.contains(&child) {
                continue;
            }
            let st = match fstatat(fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(fail("stat", &self.host(&child))(e)),
            };
            if is_whiteout(&st) {
                self.report(ChangeKind::Deleted, &child);
                continue;
            }
            let lower = in_lower(lowers, name);
            if !is_dir(&st) {
                let kind = match lower {
                    Some(_) => ChangeKind::Changed,
                    None => ChangeKind::Added,
                };
                self.report(kind, &child);
                continue;
            }
            let mut sub = match Dir::openat(fd, name.as_os_str(), DIR_FLAGS, Mode::empty()) {
                Ok(sub) => sub,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(fail("open", &self.host(&child))(e)),
            };
            let opaque = is_opaque(sub.as_fd());
            // Reported only because its time or size changed: the change
            // that says so, if it turns out to be only a hidden entry's.
            let mut only_touched = None;
            match &lower {
                None => self.report(ChangeKind::Added, &child),
                Some(below) => {
                    let same_mode = is_dir(below) && below.st_mode == st.st_mode;
                    let same = same_mode
                        && below.st_size == st.st_size
                        && below.st_mtime == st.st_mtime
                        && below.st_mtime_nsec == st.st_mtime_nsec;
                    if opaque || !same {
                        self.report(ChangeKind::Changed, &child);
                        self.reported_dirs.push(child.clone());
                        if same_mode && !opaque {
                            only_touched = Some(self.changes.len());
                        }
                    }
                }
            }
            if lower.is_none() {
                self.reported_dirs.push(child.clone());
            }
            // What lies below this directory in each lower layer; nothing,
            // below an opaque one.
            let sub_lowers: LowerDirs = if opaque {
                Vec::new()
            } else {
                lowers
                    .iter()
                    .map(|l| {
                        l.as_ref().and_then(|l| {
                            openat(l, name.as_os_str(), DIR_FLAGS, Mode::empty()).ok()
                        })
                    })
                    .collect()
            };
            self.directory(&mut sub, &sub_lowers, &child)?;
            let holds_hidden = self
                .hidden
                .iter()
                .any(|h| h.parent() == Some(child.as_path()));
            if holds_hidden && only_touched == Some(self.changes.len()) {
                self.changes.pop();
                self.reported_dirs.retain(|d| *d != child);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn letters(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
            .collect()
    }

    #[test]
    fn additions_changes_and_parents_in_walk_order() {
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        let upper = tmp.path().join("upper");
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::create_dir_all(lower.join("usr/bin")).unwrap();
        fs::write(lower.join("etc/passwd"), "root").unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::create_dir_all(upper.join("new/deep")).unwrap();
        fs::write(upper.join("etc/passwd"), "root\nx").unwrap();
        fs::write(upper.join("etc/added"), "a").unwrap();
        fs::write(upper.join("new/deep/file"), "f").unwrap();
        // usr exactly as below: a copied-up directory with nothing changed.
        fs::create_dir_all(upper.join("usr")).unwrap();
        let st = fs::metadata(lower.join("usr")).unwrap();
        fs::set_permissions(upper.join("usr"), st.permissions()).unwrap();
        let mtime = nix::sys::time::TimeSpec::new(
            std::os::unix::fs::MetadataExt::mtime(&st),
            std::os::unix::fs::MetadataExt::mtime_nsec(&st),
        );
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &upper.join("usr"),
            &mtime,
            &mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        // Sizes of directories differ with their entries; only compare when
        // the test's filesystem gives both the same.
        let same_size = fs::metadata(upper.join("usr")).unwrap().len() == st.len();

        let changes = layer_changes(&upper, &[lower], &[]).unwrap();
        let mut expected = vec![
            "C /etc",
            "A /etc/added",
            "C /etc/passwd",
            "A /new",
            "A /new/deep",
            "A /new/deep/file",
        ];
        if !same_size {
            expected.push("C /usr");
        }
        assert_eq!(letters(&changes), expected);
    }

    #[test]
    fn engine_mount_points_are_hidden_with_the_touch_they_gave_their_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        let upper = tmp.path().join("upper");
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::create_dir_all(lower.join("var")).unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::create_dir_all(upper.join("var")).unwrap();
        fs::write(upper.join("etc/resolv.conf"), "").unwrap();
        fs::write(upper.join("var/resolv.conf"), "").unwrap();
        fs::set_permissions(
            upper.join("etc"),
            fs::metadata(lower.join("etc")).unwrap().permissions(),
        )
        .unwrap();
        let hidden = [PathBuf::from("/etc/resolv.conf")];
        let changes = layer_changes(&upper, std::slice::from_ref(&lower), &hidden).unwrap();
        // /var's new file is a change like any other.
        assert_eq!(letters(&changes), ["C /var", "A /var/resolv.conf"]);

        fs::write(upper.join("etc/motd"), "hi").unwrap();
        let changes = layer_changes(&upper, &[lower], &hidden).unwrap();
        assert_eq!(
            letters(&changes),
            ["C /etc", "A /etc/motd", "C /var", "A /var/resolv.conf"]
        );
    }

    #[test]
    fn whiteouts_are_deletions_and_their_parent_changes() {
        if !nix::unistd::getuid().is_root() {
            eprintln!("skipped: making a 0/0 character device needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        let upper = tmp.path().join("upper");
        fs::create_dir_all(lower.join("bin")).unwrap();
        fs::write(lower.join("bin/true"), "").unwrap();
        fs::write(lower.join("top"), "").unwrap();
        fs::create_dir_all(upper.join("bin")).unwrap();
        for path in [upper.join("bin/true"), upper.join("top")] {
            nix::sys::stat::mknod(&path, nix::sys::stat::SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
        }
        let changes = layer_changes(&upper, &[lower], &[]).unwrap();
        assert_eq!(letters(&changes), ["C /bin", "D /bin/true", "D /top"]);
    }

    #[test]
    fn an_opaque_directory_is_changed_and_its_entries_added() {
        if !nix::unistd::getuid().is_root() {
            eprintln!("skipped: trusted.* xattrs need root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        let upper = tmp.path().join("upper");
        fs::create_dir_all(lower.join("data")).unwrap();
        fs::write(lower.join("data/old"), "").unwrap();
        fs::write(lower.join("data/kept-name"), "").unwrap();
        fs::create_dir_all(upper.join("data")).unwrap();
        fs::write(upper.join("data/kept-name"), "").unwrap();
        let path = std::ffi::CString::new(upper.join("data").as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated path, name and a 1-byte value.
        let rc = unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        if rc != 0 {
            eprintln!("skipped: the temp filesystem has no trusted xattrs");
            return;
        }
        let changes = layer_changes(&upper, &[lower], &[]).unwrap();
        assert_eq!(letters(&changes), ["C /data", "A /data/kept-name"]);
    }
}
