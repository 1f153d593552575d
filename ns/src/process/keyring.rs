use std::ffi::CString;

use nix::errno::Errno;

use crate::NsError;

/// Give the calling process a new session keyring named `name` (replacing
/// the one it inherited), as runc gives each container its own: keys the
/// host's session holds are then out of the container's reach, and keys
/// the container adds stay in its own keyring. Returns the keyring's
/// serial number, or `None` when the kernel has no keyrings or a seccomp
/// filter forbids keyctl(2) (`ENOSYS`, `EPERM`): like runc, the container
/// then runs without one.
///
/// If a keyring named `name` already exists and the caller may search it,
/// the kernel joins that one instead: use a name unique to the container
/// (runc uses `_ses.<container id>`). Everything the process starts
/// afterwards shares the keyring.
pub fn join_new_session_keyring(name: &str) -> Result<Option<i32>, NsError> {
    let error = |source| NsError::Keyring {
        name: name.to_owned(),
        source,
    };
    let c_name = CString::new(name).map_err(|_| error(Errno::EINVAL))?;
    // SAFETY: KEYCTL_JOIN_SESSION_KEYRING reads the NUL-terminated name,
    // which lives for the call, and changes only the caller's keyrings.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            libc::KEYCTL_JOIN_SESSION_KEYRING as libc::c_long,
            c_name.as_ptr(),
        )
    };
    match Errno::result(ret) {
        Ok(serial) => Ok(Some(serial as i32)),
        Err(Errno::ENOSYS | Errno::EPERM) => Ok(None),
        Err(source) => Err(error(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_a_nul_is_refused() {
        let err = join_new_session_keyring("_ses.a\0b").unwrap_err();
        assert!(
            matches!(
                &err,
                NsError::Keyring {
                    source: Errno::EINVAL,
                    ..
                }
            ),
            "{err}"
        );
    }
}
