//! `tmpcopyup`: a new tmpfs gets a copy of the directory it covers (what
//! podman asks for `--read-only`'s writable /run, /tmp and /var/tmp, so
//! that an image's files there are not lost).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::AT_FDCWD;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::UtimensatFlags;
use nix::sys::stat::{fchmodat, fstatat, mkdirat, mknodat, FchmodatFlags, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, symlinkat, Gid, Uid};

use crate::FsError;

/// Copy everything in the directory `from` into the directory `to`
/// (types, modes, owners, link targets, extended attributes of files and
/// directories; device nodes and fifos too), never following a symlink.
/// `shown` names `to` in errors.
///
/// `to` may be a directory other containers can reach (a volume): every
/// entry is created exclusively and then changed only through a descriptor
/// opened without following symlinks, so an entry swapped for a symlink
/// meanwhile makes the copy fail instead of touching what it points to.
pub(crate) fn copy_tree(from: &OwnedFd, to: &OwnedFd, shown: &Path) -> Result<(), FsError> {
    let fail = |what: &str, name: &std::ffi::OsStr, source: nix::Error| FsError::CopyUp {
        path: shown.join(name),
        step: what.to_owned(),
        source: source.into(),
    };
    let listing = Dir::openat(
        from,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail("list", std::ffi::OsStr::new("."), e))?;
    for entry in listing {
        let entry = entry.map_err(|e| fail("list", std::ffi::OsStr::new("."), e))?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let os_name = std::ffi::OsStr::from_bytes(name.to_bytes());
        let st = fstatat(from, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| fail("stat", os_name, e))?;
        let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
        let kind = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
        let owner = (Uid::from_raw(st.st_uid), Gid::from_raw(st.st_gid));
        let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        // The copy, open, for its owner, mode and attributes.
        let made: OwnedFd = match kind {
            SFlag::S_IFDIR => {
                mkdirat(to, name, Mode::from_bits_truncate(0o700))
                    .map_err(|e| fail("mkdir", os_name, e))?;
                let sub_from = openat(from, name, dir_flags, Mode::empty())
                    .map_err(|e| fail("open", os_name, e))?;
                let sub_to = openat(to, name, dir_flags, Mode::empty())
                    .map_err(|e| fail("open", os_name, e))?;
                copy_tree(&sub_from, &sub_to, &shown.join(os_name))?;
                copy_xattrs(&sub_from, &sub_to).map_err(|e| fail("xattr", os_name, e))?;
                sub_to
            }
            SFlag::S_IFREG => {
                let src = openat(
                    from,
                    name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| fail("open", os_name, e))?;
                let dst = openat(
                    to,
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| fail("create", os_name, e))?;
                copy_xattrs(&src, &dst).map_err(|e| fail("xattr", os_name, e))?;
                let mut src = std::fs::File::from(src);
                let mut dst = std::fs::File::from(dst);
                io::copy(&mut src, &mut dst).map_err(|e| FsError::CopyUp {
                    path: shown.join(os_name),
                    step: "copy".into(),
                    source: e,
                })?;
                OwnedFd::from(dst)
            }
            SFlag::S_IFLNK => {
                let target = readlinkat(from, name).map_err(|e| fail("readlink", os_name, e))?;
                symlinkat(target.as_os_str(), to, name).map_err(|e| fail("symlink", os_name, e))?;
                fchownat(
                    to,
                    name,
                    Some(owner.0),
                    Some(owner.1),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| fail("chown", os_name, e))?;
                continue;
            }
            _ => {
                mknodat(to, name, kind, Mode::from_bits_truncate(0o600), st.st_rdev)
                    .map_err(|e| fail("mknod", os_name, e))?;
                openat(
                    to,
                    name,
                    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| fail("open", os_name, e))?
            }
        };
        // The descriptor is the entry made above (O_NOFOLLOW), whatever
        // its name points to now. Mode after owner: chown clears set-id
        // bits.
        fchownat(
            &made,
            "",
            Some(owner.0),
            Some(owner.1),
            AtFlags::AT_EMPTY_PATH,
        )
        .map_err(|e| fail("chown", os_name, e))?;
        let through = format!("/proc/self/fd/{}", made.as_raw_fd());
        fchmodat(
            AT_FDCWD,
            through.as_str(),
            mode,
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| fail("chmod", os_name, e))?;
        // Last, after the writes and the copies below a directory.
        nix::sys::stat::utimensat(
            AT_FDCWD,
            through.as_str(),
            &TimeSpec::new(st.st_atime, st.st_atime_nsec),
            &TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
            UtimensatFlags::FollowSymlink,
        )
        .map_err(|e| fail("utimes", os_name, e))?;
    }
    Ok(())
}

/// Copy the extended attributes of one open file to another. A
/// filesystem without xattrs on either side is no error (there is nothing
/// to keep, or nowhere to keep it).
fn copy_xattrs(from: &OwnedFd, to: &OwnedFd) -> Result<(), nix::Error> {
    let mut names = vec![0u8; 4096];
    // SAFETY: the buffer is valid and writable for its full length.
    let len = unsafe { libc::flistxattr(from.as_raw_fd(), names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        return match Errno::last() {
            Errno::ENOTSUP | Errno::ERANGE => Ok(()),
            e => Err(e),
        };
    }
    names.truncate(len as usize);
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(c_name) = std::ffi::CString::new(name) else {
            continue;
        };
        let mut value = vec![0u8; 65536];
        // SAFETY: c_name is NUL-terminated; the buffer is valid for its length.
        let got = unsafe {
            libc::fgetxattr(
                from.as_raw_fd(),
                c_name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if got < 0 {
            continue;
        }
        // SAFETY: c_name is NUL-terminated; value holds `got` valid bytes.
        let set = unsafe {
            libc::fsetxattr(
                to.as_raw_fd(),
                c_name.as_ptr(),
                value.as_ptr().cast(),
                got as usize,
                0,
            )
        };
        if set < 0 {
            match Errno::last() {
                // Not kept where the target filesystem cannot hold it (a
                // trusted.* name, a security label it refuses).
                Errno::ENOTSUP | Errno::EPERM | Errno::EINVAL => {}
                e => return Err(e),
            }
        }
    }
    Ok(())
}

/// A directory handle for reading, from an `O_PATH` one (which may name
/// a directory that a mount now covers: the handle still reaches it).
pub(crate) fn reopen_dir(path_fd: &OwnedFd, shown: &Path) -> Result<OwnedFd, FsError> {
    let proc_path = format!("/proc/self/fd/{}", path_fd.as_fd().as_raw_fd());
    nix::fcntl::open(
        proc_path.as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| FsError::Open {
        path: shown.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn dir_fd(path: &Path) -> OwnedFd {
        nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn copies_types_modes_links_and_xattrs() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        std::fs::create_dir_all(from.join("sub")).unwrap();
        std::fs::create_dir(&to).unwrap();
        std::fs::write(from.join("sub/file"), b"content").unwrap();
        let old = std::fs::File::options()
            .write(true)
            .open(from.join("sub/file"))
            .unwrap();
        old.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .unwrap();
        std::fs::set_permissions(
            from.join("sub/file"),
            std::fs::Permissions::from_mode(0o4751),
        )
        .unwrap();
        std::fs::set_permissions(from.join("sub"), std::fs::Permissions::from_mode(0o1750))
            .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.join("link")).unwrap();
        nix::unistd::mkfifo(&from.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        let file_name =
            std::ffi::CString::new(from.join("sub/file").as_os_str().as_bytes()).unwrap();
        // SAFETY: both strings are NUL-terminated; the value is 4 valid bytes.
        let xattr = unsafe {
            libc::setxattr(
                file_name.as_ptr(),
                c"user.berth".as_ptr(),
                b"kept".as_ptr().cast(),
                4,
                0,
            )
        } == 0;

        copy_tree(&dir_fd(&from), &dir_fd(&to), &to).unwrap();

        let meta = |p: &str| std::fs::symlink_metadata(to.join(p)).unwrap();
        assert_eq!(std::fs::read(to.join("sub/file")).unwrap(), b"content");
        assert_eq!(
            meta("sub/file").mtime(),
            std::fs::metadata(from.join("sub/file")).unwrap().mtime()
        );
        assert_eq!(meta("sub/file").permissions().mode() & 0o7777, 0o4751);
        assert_eq!(meta("sub").permissions().mode() & 0o7777, 0o1750);
        assert_eq!(
            std::fs::read_link(to.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert!(meta("link").file_type().is_symlink());
        assert_eq!(meta("fifo").permissions().mode() & 0o7777, 0o640);
        assert_eq!(meta("fifo").uid(), std::fs::metadata(&from).unwrap().uid());
        // tmpfs has user xattrs since 6.6; other test dirs usually too.
        if xattr {
            let copied =
                std::ffi::CString::new(to.join("sub/file").as_os_str().as_bytes()).unwrap();
            let mut value = [0u8; 16];
            // SAFETY: NUL-terminated strings; the buffer is valid for 16 bytes.
            let len = unsafe {
                libc::getxattr(
                    copied.as_ptr(),
                    c"user.berth".as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            assert_eq!(len, 4, "the xattr was not copied");
            assert_eq!(&value[..4], b"kept");
        }
    }
}
