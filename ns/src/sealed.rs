//! Run from a sealed in-memory copy of the program (CVE-2019-5736).
//!
//! A process that joins a container's namespaces (`berth exec`) can be
//! seen from inside the container until it execs the user's command. If it
//! still runs the host's binary, a container process with enough privilege
//! (CAP_SYS_PTRACE) can open `/proc/PID/exe` and, once the binary is no
//! longer busy, overwrite berth on the host. Re-executing from a sealed
//! memfd makes `/proc/PID/exe` a read-only anonymous copy: writing to it
//! fails, and it leads nowhere on the host's filesystem.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::NsError;

/// Name of the memfd; `/proc/self/exe` then reads `/memfd:<name> (deleted)`.
const MEMFD_NAME: &std::ffi::CStr = c"berth-sealed";

/// Whether this process already runs from the sealed copy.
pub fn is_sealed_copy() -> bool {
    std::fs::read_link("/proc/self/exe").is_ok_and(|exe| {
        exe.as_os_str()
            .as_bytes()
            .starts_with(b"/memfd:berth-sealed")
    })
}

fn error(step: &'static str) -> impl FnOnce(std::io::Error) -> NsError {
    move |source| NsError::Sealed { step, source }
}

/// Re-execute the current program, with the same arguments and
/// environment, from a sealed memfd copy of itself. Returns at once if the
/// process already runs from one; otherwise it only returns on failure.
pub fn reexec_from_sealed_copy() -> Result<(), NsError> {
    if is_sealed_copy() {
        restore_process_name();
        return Ok(());
    }
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
    let errno = match nix::unistd::fexecve(&copy, &args, &env) {
        Err(errno) => errno,
        Ok(never) => match never {},
    };
    Err(error("execute the copy")(errno.into()))
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
}
