use nix::errno::Errno;
use nix::sys::stat::Mode;
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

use crate::{Capability, NsError};

/// Make the calling process run as `uid`/`gid` (real, effective and saved
/// ids) with exactly `additional_gids` as its supplementary groups, the
/// way runc sets up `process.user`:
///
/// 1. setgroups(2); when the process is in a user namespace whose
///    setgroups(2) is denied (see [`crate::process::write_id_maps`]) and
///    no groups are asked for, this step is skipped (the kernel allows no
///    change to the groups there);
/// 2. setresgid(2);
/// 3. setresuid(2), with `PR_SET_KEEPCAPS` set around it, so that a change
///    from root to another uid keeps the permitted capabilities (the
///    effective set is emptied): [`crate::capabilities::apply_sets`],
///    called next, then sets the capabilities the program gets.
///
/// Needs CAP_SETGID and CAP_SETUID (in the process's user namespace).
pub fn set_user(uid: u32, gid: u32, additional_gids: &[u32]) -> Result<(), NsError> {
    set_supplementary_groups(additional_gids)?;
    let gid = Gid::from_raw(gid);
    setresgid(gid, gid, gid).map_err(|source| NsError::User {
        step: format!("setresgid({gid})"),
        source,
    })?;
    nix::sys::prctl::set_keepcaps(true).map_err(|source| NsError::User {
        step: "keep the capabilities across the uid change".into(),
        source,
    })?;
    let uid = Uid::from_raw(uid);
    let changed = setresuid(uid, uid, uid).map_err(|source| NsError::User {
        step: format!("setresuid({uid})"),
        source,
    });
    // The flag is for this one change; execve clears it anyway.
    let restored = nix::sys::prctl::set_keepcaps(false).map_err(|source| NsError::User {
        step: "clear the keep-capabilities flag".into(),
        source,
    });
    changed.and(restored)
}

fn set_supplementary_groups(gids: &[u32]) -> Result<(), NsError> {
    let groups: Vec<Gid> = gids.iter().copied().map(Gid::from_raw).collect();
    match setgroups(&groups) {
        Ok(()) => Ok(()),
        // With CAP_SETGID effective, EPERM can only mean that the user
        // namespace denies setgroups(2).
        Err(Errno::EPERM) if gids.is_empty() && holds_effective(Capability::Setgid)? => Ok(()),
        Err(source) => Err(NsError::User {
            step: format!("setgroups({gids:?})"),
            source,
        }),
    }
}

fn holds_effective(cap: Capability) -> Result<bool, NsError> {
    Ok(crate::capabilities::capget()?.effective & cap.mask() != 0)
}

/// Set the calling process's umask (the OCI `process.user.umask`); only
/// the permission bits (0o777) are valid.
pub fn set_umask(umask: u32) -> Result<(), NsError> {
    if umask & !0o777 != 0 {
        return Err(NsError::InvalidUmask { umask });
    }
    nix::sys::stat::umask(Mode::from_bits_truncate(umask as libc::mode_t));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::in_single_threaded_child;

    #[test]
    fn umask_is_set() {
        // In a child: the umask is process-wide and other tests create
        // files.
        let code = in_single_threaded_child(|| {
            if set_umask(0o027).is_err() {
                return 1;
            }
            let previous = nix::sys::stat::umask(Mode::empty());
            i32::from(previous.bits() != 0o027) * 2
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn umask_beyond_the_permission_bits_is_refused() {
        for bad in [0o1000, 0o4022, u32::MAX] {
            assert!(
                matches!(set_umask(bad), Err(NsError::InvalidUmask { umask }) if umask == bad),
                "{bad:#o}"
            );
        }
    }
}
