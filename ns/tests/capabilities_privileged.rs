//! Capabilities for real, in forked children (capabilities are per process,
//! so the test harness keeps its own). Needs root; skips otherwise.

mod common;

use berth_ns::capabilities::{apply, apply_sets, resolve, set_no_new_privs, CapabilitySets};
use berth_ns::process::set_user;
use berth_ns::{Capability, CapabilitySet};
use common::{
    expect_field, expect_masks, field, in_child, mask, own_status, skip_unless_root as skip,
    status_after_exec,
};
use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};

/// Docker's default set as /proc/PID/status prints it.
const DEFAULT_MASK: u64 = 0x0000_0000_a804_25fb;

/// CapInh and CapAmb are 0, the three others are `expected`.
fn check_status(status: &str, expected: u64, what: &str) -> Result<(), String> {
    let sets = [
        ("CapInh", 0),
        ("CapAmb", 0),
        ("CapPrm", expected),
        ("CapEff", expected),
        ("CapBnd", expected),
    ];
    expect_masks(status, &sets, what)
}

/// Make every capability inheritable and SYS_ADMIN ambient first, the way a
/// careless parent could leave them: apply must clear both.
fn poison_inheritable_and_ambient() -> Result<(), String> {
    let status = own_status()?;
    let permitted = mask(&status, "CapPrm")?;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data: [[u32; 3]; 2] = [
        [permitted as u32, permitted as u32, permitted as u32],
        [
            (permitted >> 32) as u32,
            (permitted >> 32) as u32,
            (permitted >> 32) as u32,
        ],
    ];
    // SAFETY: version 3 header and two {effective, permitted, inheritable}
    // structs of u32, alive for the call.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    Errno::result(ret).map_err(|e| format!("capset: {e}"))?;
    let sys_admin = Capability::SysAdmin.index() as libc::c_ulong;
    // SAFETY: raises one ambient capability of the calling process.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            sys_admin,
            0,
            0,
        )
    };
    Errno::result(ret).map_err(|e| format!("ambient raise: {e}"))?;
    let status = own_status()?;
    if mask(&status, "CapInh")? == 0 || mask(&status, "CapAmb")? == 0 {
        return Err(format!("poisoning did not work:\n{status}"));
    }
    Ok(())
}

#[test]
fn default_set_is_applied_and_survives_exec() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("owned");
    std::fs::write(&file, b"").unwrap();
    in_child(|| {
        // A UTS namespace of its own, so that a sethostname that wrongly
        // succeeds changes nothing on the host.
        unshare(CloneFlags::CLONE_NEWUTS).map_err(|e| format!("unshare: {e}"))?;
        poison_inheritable_and_ambient()?;

        let set = resolve(&[], &[], false).map_err(|e| e.to_string())?;
        if set.bits() != DEFAULT_MASK {
            return Err(format!("default set is {:#x}", set.bits()));
        }
        apply(&set).map_err(|e| e.to_string())?;

        let status = own_status()?;
        check_status(&status, DEFAULT_MASK, "after apply")?;

        // CAP_SYS_ADMIN is gone: sethostname fails.
        match nix::unistd::sethostname("berth-cap-test") {
            Err(Errno::EPERM) => {}
            other => return Err(format!("sethostname without CAP_SYS_ADMIN: {other:?}")),
        }
        // CAP_CHOWN is kept: chown to another uid works.
        std::os::unix::fs::chown(&file, Some(1), Some(1)).map_err(|e| format!("chown: {e}"))?;

        // What the container's command really gets, after execve as root.
        let status = status_after_exec()?;
        check_status(&status, DEFAULT_MASK, "after execve")?;
        Ok(())
    });
}

#[test]
fn cap_add_and_drop_reach_the_kernel() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("owned");
    std::fs::write(&file, b"").unwrap();
    in_child(|| {
        let set =
            resolve(&["NET_ADMIN".into()], &["ALL".into()], false).map_err(|e| e.to_string())?;
        apply(&set).map_err(|e| e.to_string())?;
        let want = CapabilitySet::from_iter([Capability::NetAdmin]).bits();
        let status = own_status()?;
        check_status(&status, want, "NET_ADMIN only")?;
        // Without CAP_CHOWN, chown to another uid fails.
        match std::os::unix::fs::chown(&file, Some(1), None) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
            other => Err(format!("chown without CAP_CHOWN: {other:?}")),
        }
    });
}

#[test]
fn no_new_privs_is_set() {
    if skip() {
        return;
    }
    in_child(|| {
        set_no_new_privs().map_err(|e| e.to_string())?;
        let status = status_after_exec()?;
        match field(&status, "NoNewPrivs")? {
            "1" => Ok(()),
            other => Err(format!("NoNewPrivs {other} after exec")),
        }
    });
}

/// The five sets of a spec, applied as runc does after a change to a
/// non-root user: what is asked lands in each set, ambient only where
/// permitted and inheritable allow it, and the ambient capability is what
/// the user's program keeps across execve.
#[test]
fn five_sets_after_a_uid_change() {
    if skip() {
        return;
    }
    in_child(|| {
        // Its own network namespace, for the privileged-port bind below.
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare: {e}"))?;
        let set = |caps: &[Capability]| caps.iter().copied().collect::<CapabilitySet>();
        use Capability::{Chown, Kill, NetBindService};
        let sets = CapabilitySets {
            bounding: set(&[Chown, Kill, NetBindService]),
            effective: set(&[NetBindService]),
            permitted: set(&[Kill, NetBindService]),
            inheritable: set(&[NetBindService]),
            // KILL is not inheritable: it cannot be ambient.
            ambient: set(&[Kill, NetBindService]),
        };
        set_user(1000, 1001, &[2000, 2001]).map_err(|e| e.to_string())?;
        apply_sets(&sets).map_err(|e| e.to_string())?;

        let bounding = sets.bounding.bits();
        let bind = NetBindService.mask();
        let status = own_status()?;
        expect_field(&status, "Uid", "1000 1000 1000 1000", "after apply_sets")?;
        expect_field(&status, "Gid", "1001 1001 1001 1001", "after apply_sets")?;
        expect_field(&status, "Groups", "2000 2001", "after apply_sets")?;
        let expected = [
            ("CapBnd", bounding),
            ("CapPrm", Kill.mask() | bind),
            ("CapEff", bind),
            ("CapInh", bind),
            ("CapAmb", bind),
        ];
        expect_masks(&status, &expected, "after apply_sets")?;

        // The effective NET_BIND_SERVICE works for a non-root uid.
        std::net::TcpListener::bind("0.0.0.0:80").map_err(|e| format!("bind port 80: {e}"))?;

        // A non-root program without file capabilities keeps exactly the
        // ambient set.
        let status = status_after_exec()?;
        expect_field(&status, "Uid", "1000 1000 1000 1000", "after execve")?;
        let expected = [
            ("CapBnd", bounding),
            ("CapPrm", bind),
            ("CapEff", bind),
            ("CapInh", bind),
            ("CapAmb", bind),
        ];
        expect_masks(&status, &expected, "after execve")
    });
}

/// Without capabilities asked for, a non-root process ends with none at
/// all, before and after execve.
#[test]
fn empty_sets_leave_nothing() {
    if skip() {
        return;
    }
    in_child(|| {
        set_user(1000, 1000, &[]).map_err(|e| e.to_string())?;
        apply_sets(&CapabilitySets::default()).map_err(|e| e.to_string())?;
        let nothing = [
            ("CapBnd", 0),
            ("CapPrm", 0),
            ("CapEff", 0),
            ("CapInh", 0),
            ("CapAmb", 0),
        ];
        expect_masks(&own_status()?, &nothing, "after apply_sets")?;
        expect_masks(&status_after_exec()?, &nothing, "after execve")
    });
}
