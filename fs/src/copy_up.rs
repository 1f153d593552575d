//! `tmpcopyup`: a new tmpfs gets a copy of the directory it covers (what
//! podman asks for `--read-only`'s writable /run, /tmp and /var/tmp, so
//! that an image's files there are not lost).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmodat, fstatat, mkdirat, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, Gid, Uid};

use crate::FsError;

/// Copy everything in the directory `from` into the directory `to`
/// (types, modes, owners, link targets; device nodes and fifos too),
/// never following a symlink. `shown` names `to` in errors.
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
        let os_name = std::ffi::OsStr::new(std::str::from_utf8(name.to_bytes()).unwrap_or("?"));
        let st = fstatat(from, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| fail("stat", os_name, e))?;
        let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
        let kind = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
        match kind {
            SFlag::S_IFDIR => {
                mkdirat(to, name, Mode::from_bits_truncate(0o700))
                    .map_err(|e| fail("mkdir", os_name, e))?;
                let dir_flags =
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let sub_from = openat(from, name, dir_flags, Mode::empty())
                    .map_err(|e| fail("open", os_name, e))?;
                let sub_to = openat(to, name, dir_flags, Mode::empty())
                    .map_err(|e| fail("open", os_name, e))?;
                copy_tree(&sub_from, &sub_to, &shown.join(os_name))?;
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
                let mut src = std::fs::File::from(src);
                let mut dst = std::fs::File::from(dst);
                io::copy(&mut src, &mut dst).map_err(|e| FsError::CopyUp {
                    path: shown.join(os_name),
                    step: "copy".into(),
                    source: e,
                })?;
            }
            SFlag::S_IFLNK => {
                let target = readlinkat(from, name).map_err(|e| fail("readlink", os_name, e))?;
                symlinkat(target.as_os_str(), to, name).map_err(|e| fail("symlink", os_name, e))?;
            }
            _ => {
                mknodat(to, name, kind, mode, st.st_rdev).map_err(|e| fail("mknod", os_name, e))?;
            }
        }
        fchownat(
            to,
            name,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| fail("chown", os_name, e))?;
        if kind != SFlag::S_IFLNK {
            // After the chown, which clears set-id bits.
            // (Not a symlink: this fresh tmpfs is ours alone.)
            fchmodat(to, name, mode, FchmodatFlags::FollowSymlink)
                .map_err(|e| fail("chmod", os_name, e))?;
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
