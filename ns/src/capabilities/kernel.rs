//! The calling process's capabilities as the kernel holds them: read them,
//! and set all five sets in the order that keeps the privilege to do so.

use nix::errno::Errno;

use super::{Capability, CapabilitySet, CapabilitySets};
use crate::NsError;

/// The highest capability number the running kernel knows (its
/// `/proc/sys/kernel/cap_last_cap`), found with `PR_CAPBSET_READ`, which
/// works without /proc and fails only for numbers past the last: a binary
/// search, done once per process (a container's init inherits the answer
/// from the runtime, and its every syscall is filtered by then).
pub fn kernel_last_cap() -> u8 {
    static LAST: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| {
        let known = |cap: u8| {
            // SAFETY: PR_CAPBSET_READ only reads the caller's bounding set;
            // the unused arguments are passed as 0 as prctl(2) asks.
            unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) >= 0 }
        };
        // Invariant: `low` is known (0 always is), `high` is not.
        let (mut low, mut high) = (0u8, 64u8);
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if known(middle) {
                low = middle;
            } else {
                high = middle;
            }
        }
        low
    })
}

/// The calling process's bounding set: the most any process it starts can
/// have. A container cannot be given more than its runtime itself may hold.
pub fn current_bounding_set() -> CapabilitySet {
    let mut set = CapabilitySet::EMPTY;
    for cap in Capability::ALL {
        if in_bounding_set(cap.index()).unwrap_or(false) {
            set.insert(cap);
        }
    }
    set
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets in two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The effective, permitted and inheritable masks of the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThreadCapabilities {
    pub(crate) effective: u64,
    pub(crate) permitted: u64,
    pub(crate) inheritable: u64,
}

/// capget(2) on the calling thread.
pub(crate) fn capget() -> Result<ThreadCapabilities, NsError> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are properly laid out for version 3, which
    // takes exactly two data structs; both outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    Errno::result(ret).map_err(|source| NsError::Capabilities {
        step: "capget".into(),
        source,
    })?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(ThreadCapabilities {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

/// capset(2) on the calling thread.
fn capset(caps: ThreadCapabilities, step: &str) -> Result<(), NsError> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |mask: u64| (mask as u32, (mask >> 32) as u32);
    let (e0, e1) = split(caps.effective);
    let (p0, p1) = split(caps.permitted);
    let (i0, i1) = split(caps.inheritable);
    let data = [
        CapData {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        CapData {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: header and data are properly laid out for version 3 (two
    // data structs); the kernel only reads data and may write the header's
    // version; both outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    Errno::result(ret)
        .map(drop)
        .map_err(|source| NsError::Capabilities {
            step: step.to_owned(),
            source,
        })
}

/// Whether capability number `cap` is in the bounding set.
fn in_bounding_set(cap: u8) -> Result<bool, NsError> {
    // SAFETY: PR_CAPBSET_READ only reads the caller's bounding set.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) };
    Errno::result(ret)
        .map(|r| r == 1)
        .map_err(|source| NsError::Capabilities {
            step: format!("read {} of the bounding set", describe(cap)),
            source,
        })
}

/// One `PR_CAP_AMBIENT` operation on capability number `cap`.
fn ambient(operation: libc::c_int, cap: u8) -> Result<libc::c_int, Errno> {
    // SAFETY: PR_CAP_AMBIENT reads or changes only the caller's ambient
    // set; the unused arguments are 0 as prctl(2) requires.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            operation as libc::c_ulong,
            libc::c_ulong::from(cap),
            0,
            0,
        )
    };
    Errno::result(ret)
}

fn describe(cap: u8) -> String {
    Capability::from_index(cap).map_or_else(|| format!("capability {cap}"), |c| c.to_string())
}

/// The mask of every capability numbered 0 to `last`.
fn mask_up_to(last: u8) -> u64 {
    if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    }
}

/// Give the calling process exactly the capabilities of `set`, with
/// docker's semantics, for the program it is about to execve(2): the
/// bounding, effective and permitted sets become `set`, the inheritable
/// and ambient sets empty (see [`CapabilitySets::only`] and
/// [`apply_sets`]).
///
/// After execve(2) a process running as uid 0 gets `permitted = effective
/// = bounding | inheritable` (the kernel treats root's files as having
/// every file capability), which is why the bounding set is reduced and
/// the inheritable set emptied (CVE-2022-29162: an inheritable capability
/// that is not in the bounding set still comes back on execve).
pub fn apply(set: &CapabilitySet) -> Result<(), NsError> {
    apply_sets(&CapabilitySets::only(*set))
}

/// Give the calling process the five capability sets of `sets`, for the
/// program it is about to execve(2). Call it last, after everything that
/// needs more privileges, and after [`crate::process::set_user`] (a uid
/// change clears the ambient set). In runc's order:
///
/// 1. the effective set is raised to the permitted set, so that the steps
///    below work after a change to a non-root uid (which empties the
///    effective set but, with `set_user`, keeps the permitted one);
/// 2. every capability not in `sets.bounding` is dropped from the bounding
///    set (`PR_CAPBSET_DROP`, for every capability up to the kernel's last
///    one, including those this crate has no name for), so it cannot come
///    back through execve or file capabilities; this needs CAP_SETPCAP;
/// 3. capset(2): effective, permitted and inheritable as asked;
/// 4. the ambient set is cleared, then each capability of `sets.ambient`
///    that is also permitted and inheritable is raised
///    (`PR_CAP_AMBIENT_RAISE`; the kernel refuses the others, and runc
///    leaves them out too). Ambient capabilities are what a non-root
///    program keeps across execve.
///
/// Capabilities the running kernel does not know are left out of every
/// set. The result is read back and any difference is
/// [`NsError::CapabilitiesMismatch`]. Sets can only shrink: asking for a
/// capability the process does not hold is an error of the step that
/// needed it. Capabilities are per thread: call it in the single thread
/// that execs.
pub fn apply_sets(sets: &CapabilitySets) -> Result<(), NsError> {
    let last = kernel_last_cap();
    let known = mask_up_to(last);
    let bounding = sets.bounding.bits() & known;
    let wanted = ThreadCapabilities {
        effective: sets.effective.bits() & known,
        permitted: sets.permitted.bits() & known,
        inheritable: sets.inheritable.bits() & known,
    };
    let ambient_wanted = sets.ambient.bits() & wanted.permitted & wanted.inheritable & known;

    let current = capget()?;
    if current.effective != current.permitted {
        capset(
            ThreadCapabilities {
                effective: current.permitted,
                ..current
            },
            "raise the effective set to the permitted set",
        )?;
    }

    for cap in 0..=last {
        if bounding & (1 << cap) != 0 || !in_bounding_set(cap)? {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP changes only the caller's bounding set;
        // the unused arguments are 0.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        Errno::result(ret).map_err(|source| NsError::Capabilities {
            step: format!("drop {} from the bounding set", describe(cap)),
            source,
        })?;
    }

    capset(wanted, "capset")?;

    let has_ambient_set = match ambient(libc::PR_CAP_AMBIENT_CLEAR_ALL, 0) {
        Ok(_) => true,
        // Before Linux 4.3 there is no ambient set: nothing to clear.
        Err(Errno::EINVAL) if ambient_wanted == 0 => false,
        Err(source) => {
            return Err(NsError::Capabilities {
                step: "clear the ambient set".into(),
                source,
            })
        }
    };
    for cap in (0..=last).filter(|cap| ambient_wanted & (1 << cap) != 0) {
        ambient(libc::PR_CAP_AMBIENT_RAISE, cap).map_err(|source| NsError::Capabilities {
            step: format!("raise {} in the ambient set", describe(cap)),
            source,
        })?;
    }

    let found = capget()?;
    let mut found_bounding = 0u64;
    let mut found_ambient = 0u64;
    for cap in 0..=last {
        if in_bounding_set(cap)? {
            found_bounding |= 1 << cap;
        }
        if has_ambient_set
            && ambient(libc::PR_CAP_AMBIENT_IS_SET, cap).map_err(|source| {
                NsError::Capabilities {
                    step: format!("read {} of the ambient set", describe(cap)),
                    source,
                }
            })? == 1
        {
            found_ambient |= 1 << cap;
        }
    }
    if (found, found_bounding, found_ambient) != (wanted, bounding, ambient_wanted) {
        let describe_sets = |caps: ThreadCapabilities, bounding: u64, ambient: u64| {
            format!(
                "bounding {bounding:#018x}, effective {:#018x}, permitted {:#018x}, \
                 inheritable {:#018x}, ambient {ambient:#018x}",
                caps.effective, caps.permitted, caps.inheritable
            )
        };
        return Err(NsError::CapabilitiesMismatch {
            expected: describe_sets(wanted, bounding, ambient_wanted),
            found: describe_sets(found, found_bounding, found_ambient),
        });
    }
    Ok(())
}

/// Set `no_new_privs` (`PR_SET_NO_NEW_PRIVS`) for the calling process and
/// everything it execs: setuid/setgid bits and file capabilities no longer
/// grant anything (docker's `no-new-privileges`, the OCI
/// `process.noNewPrivileges`). It cannot be unset.
pub fn set_no_new_privs() -> Result<(), NsError> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes the value 1 and zeros; it only
    // changes a flag of the calling process.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    Errno::result(ret)
        .map(drop)
        .map_err(|source| NsError::NoNewPrivs { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_knows_at_least_the_classic_capabilities() {
        // CAP_AUDIT_READ (37) is in every kernel since 3.16.
        assert!(kernel_last_cap() >= 37);
        // The binary search finds what the kernel says, where /proc shows it.
        if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap") {
            assert_eq!(Some(kernel_last_cap()), text.trim().parse().ok());
        }
    }

    #[test]
    fn masks_up_to_a_capability() {
        assert_eq!(mask_up_to(0), 1);
        assert_eq!(mask_up_to(40), 0x0000_01ff_ffff_ffff);
        assert_eq!(mask_up_to(63), u64::MAX);
    }

    #[test]
    fn own_capabilities_are_readable() {
        let caps = capget().unwrap();
        // The effective set is always within the permitted set.
        assert_eq!(caps.effective & !caps.permitted, 0);
    }
}
