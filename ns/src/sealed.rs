//! Run from a sealed view of the program (CVE-2019-5736).
//!
//! A process that joins a container's namespaces (`berth exec`) can be
//! seen from inside the container until it execs the user's command. If it
//! still runs the host's binary, a container process with enough privilege
//! (CAP_SYS_PTRACE) can open `/proc/PID/exe` and, once the binary is no
//! longer busy, overwrite berth on the host. So the process re-executes
//! itself from a view nothing can write, as runc 1.2 does:
//!
//! - a private, read-only, lower-layers-only overlay of the program's
//!   directory (fsopen/fsmount, never attached anywhere): no copy, the page
//!   cache is shared, and no remount can make a layer-only overlay
//!   writable;
//! - else (no overlay or new mount API, no privilege) a sealed memfd copy.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::NsError;

/// Name of the memfd; `/proc/self/exe` then reads `/memfd:<name> (deleted)`.
const MEMFD_NAME: &std::ffi::CStr = c"berth-sealed";

/// Whether this process already runs from a sealed view: the memfd copy,
/// or a read-only overlay mount that is not attached in this mount
/// namespace (which is what [`reexec_from_sealed_copy`] makes).
pub fn is_sealed_copy() -> bool {
    let memfd = std::fs::read_link("/proc/self/exe").is_ok_and(|exe| {
        exe.as_os_str()
            .as_bytes()
            .starts_with(b"/memfd:berth-sealed")
    });
    memfd || runs_from_detached_readonly_overlay()
}

fn runs_from_detached_readonly_overlay() -> bool {
    let exe = c"/proc/self/exe";
    let overlay = nix::sys::statfs::statfs(exe)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC);
    let read_only = nix::sys::statvfs::statvfs(exe)
        .is_ok_and(|fs| fs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    if !overlay || !read_only {
        return false;
    }
    // SAFETY: statx is plain old data; all zeroes is a valid value.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a buffer that outlive the call.
    let result = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            exe.as_ptr(),
            0,
            libc::STATX_MNT_ID,
            &mut stat,
        )
    };
    if result != 0 || stat.stx_mask & libc::STATX_MNT_ID == 0 {
        return false;
    }
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let id = stat.stx_mnt_id.to_string();
    !mountinfo
        .lines()
        .any(|line| line.split(' ').next() == Some(id.as_str()))
}

fn error(step: &'static str) -> impl FnOnce(std::io::Error) -> NsError {
    move |source| NsError::Sealed { step, source }
}

/// Re-execute the current program, with the same arguments and
/// environment, from a sealed view of itself (see the module
/// documentation). `empty_dir` is a directory of the caller's (created if
/// missing, 0700) that the overlay needs as its second, bottom layer.
/// Returns at once if the process already runs from a sealed view;
/// otherwise it only returns on failure.
pub fn reexec_from_sealed_copy(empty_dir: &Path) -> Result<(), NsError> {
    if is_sealed_copy() {
        restore_process_name();
        return Ok(());
    }
    let program = match sealed_overlay(empty_dir) {
        Ok(program) => program,
        Err(_) => memfd_copy()?,
    };
    let to_cstrings = |items: Vec<OsString>| -> Result<Vec<CString>, NsError> {
        items
            .into_iter()
            .map(|item| CString::new(item.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|e| error("build the arguments")(std::io::Error::other(e)))
    };
    let args = to_cstrings(std::env::args_os().collect())?;
    let env = to_cstrings(
        std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                kv
            })
            .collect(),
    )?;
    // fexecve of a close-on-exec descriptor works for a binary (not a
    // script): the kernel has loaded it before it closes the descriptor.
    let errno = match nix::unistd::fexecve(&program, &args, &env) {
        Err(errno) => errno,
        Ok(never) => match never {},
    };
    Err(error("execute the sealed program")(errno.into()))
}

/// The program, opened `O_PATH` through a private read-only overlay whose
/// layers are its directory and `empty_dir` (overlay needs two lower
/// layers to run without an upper one).
fn sealed_overlay(empty_dir: &Path) -> Result<OwnedFd, NsError> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(error("read /proc/self/exe"))?;
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) else {
        return Err(error("find the program")(std::io::Error::other(
            "no directory",
        )));
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(empty_dir)
        .map_err(error("create the overlay's empty layer"))?;
    let escape = |path: &Path| {
        let text = path.as_os_str().as_bytes();
        let mut out = Vec::with_capacity(text.len());
        for &b in text {
            if b == b'\\' || b == b':' || b == b',' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out
    };
    // The program's directory on top, so nothing in the empty layer can
    // mask the program.
    let mut lower = escape(dir);
    lower.push(b':');
    lower.extend(escape(empty_dir));
    let lower =
        CString::new(lower).map_err(|e| error("name the layers")(std::io::Error::other(e)))?;
    let sys = |what: &'static str, ret: libc::c_long| -> Result<libc::c_long, NsError> {
        if ret < 0 {
            Err(error(what)(std::io::Error::last_os_error()))
        } else {
            Ok(ret)
        }
    };
    // SAFETY: a NUL-terminated filesystem name and flags; the result is a
    // new descriptor owned below.
    let context = sys("fsopen overlay", unsafe {
        libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC)
    })?;
    // SAFETY: fsopen returned a fresh descriptor nothing else owns.
    let context = unsafe { OwnedFd::from_raw_fd(context as i32) };
    let set = |key: &std::ffi::CStr, value: &std::ffi::CStr| {
        // SAFETY: `context` is open; key and value are NUL-terminated and
        // outlive the call.
        unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                context.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        }
    };
    sys("configure the overlay's layers", set(c"lowerdir", &lower))?;
    // Inode-number mapping across filesystems is of no use here and
    // warns in the kernel log when the layers differ.
    let _ = set(c"xino", c"off");
    // SAFETY: `context` is open; no key or value is passed.
    sys("create the overlay", unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    // SAFETY: `context` holds a created superblock; the result is a new
    // descriptor owned below.
    let mount = sys("mount the overlay", unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            context.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
    })?;
    // SAFETY: fsmount returned a fresh descriptor nothing else owns.
    let mount = unsafe { OwnedFd::from_raw_fd(mount as i32) };
    open_program(mount.as_fd(), name)
}

fn open_program(mount: BorrowedFd<'_>, name: &std::ffi::OsStr) -> Result<OwnedFd, NsError> {
    nix::fcntl::openat(
        mount,
        name,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| error("open the program in the overlay")(e.into()))
}

// linux/mount.h
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;

/// A sealed memfd copy of the program.
fn memfd_copy() -> Result<OwnedFd, NsError> {
    // SAFETY: memfd_create takes a valid NUL-terminated name and flags; the
    // returned descriptor is owned by us from here on.
    let raw = unsafe {
        libc::memfd_create(
            MEMFD_NAME.as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if raw < 0 {
        return Err(error("memfd_create")(std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let memfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut copy = File::from(memfd);
    let mut original = File::open("/proc/self/exe").map_err(error("open /proc/self/exe"))?;
    std::io::copy(&mut original, &mut copy).map_err(error("copy the program"))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS on our own memfd with valid seal flags.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(error("seal the copy")(std::io::Error::last_os_error()));
    }
    Ok(OwnedFd::from(copy))
}

/// After fexecve the kernel names the process after the descriptor
/// ("3"): give it back the program's name, so that `ps` and `top` show
/// what it is.
fn restore_process_name() {
    let Some(argv0) = std::env::args_os().next() else {
        return;
    };
    let path = std::path::PathBuf::from(argv0);
    let Some(name) = path.file_name() else { return };
    // The kernel keeps 15 bytes and a NUL.
    let bytes: Vec<u8> = name.as_bytes().iter().copied().take(15).collect();
    if let Ok(name) = CString::new(bytes) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16
        // bytes, which `name` is.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_is_not_a_sealed_copy() {
        assert!(!is_sealed_copy());
    }

    /// The overlay view of the program: the same bytes, on a read-only
    /// overlay that no path in this mount namespace reaches, and not
    /// writable even by root.
    #[test]
    fn the_sealed_overlay_shows_the_program_read_only_and_detached() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: fsopen(\"overlay\") needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let program = sealed_overlay(&tmp.path().join("empty")).unwrap();
        let path = format!("/proc/self/fd/{}", program.as_raw_fd());
        let fs = nix::sys::statfs::statfs(path.as_str()).unwrap();
        assert_eq!(
            fs.filesystem_type(),
            nix::sys::statfs::OVERLAYFS_SUPER_MAGIC
        );
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        let sealed = std::fs::read(&path).unwrap();
        assert_eq!(sealed, std::fs::read("/proc/self/exe").unwrap());
        // Not attached anywhere: its mount is in no mountinfo line.
        let link = std::fs::read_link(&path).unwrap();
        let name = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(link, Path::new("/").join(name.file_name().unwrap()));
    }
}
