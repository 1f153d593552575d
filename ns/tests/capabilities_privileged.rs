//! Capabilities for real, in forked children (capabilities are per process,
//! so the test harness keeps its own). Needs root; skips otherwise.

use std::fs::File;
use std::io::{Read, Write};

use berth_ns::capabilities::{apply, resolve, set_no_new_privs};
use berth_ns::{Capability, CapabilitySet};
use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, geteuid, pipe, ForkResult};

/// Docker's default set as /proc/PID/status prints it.
const DEFAULT_MASK: u64 = 0x0000_0000_a804_25fb;

/// Run `body` in a forked child; panic with its message if it fails.
fn in_child(body: impl FnOnce() -> Result<(), String>) {
    let (read_end, write_end) = pipe().unwrap();
    // SAFETY: the child only runs `body` and then `_exit`s, never returning
    // into the test harness; glibc makes malloc usable after fork even
    // though the harness is multi-threaded.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(read_end);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body))
                .unwrap_or_else(|_| Err("panicked".into()));
            let code = match result {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = File::from(write_end).write_all(msg.as_bytes());
                    1
                }
            };
            // SAFETY: _exit skips the destructors that belong to the parent.
            unsafe { libc::_exit(code) };
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut msg = String::new();
            File::from(read_end).read_to_string(&mut msg).unwrap();
            let status = waitpid(child, None).unwrap();
            assert_eq!(status, WaitStatus::Exited(child, 0), "child failed: {msg}");
        }
    }
}

/// The value of `key:` in a /proc/PID/status text, as a hex mask or text.
fn field<'a>(status: &'a str, key: &str) -> Result<&'a str, String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
        .ok_or_else(|| format!("no {key} in:\n{status}"))
}

fn mask(status: &str, key: &str) -> Result<u64, String> {
    let text = field(status, key)?;
    u64::from_str_radix(text, 16).map_err(|e| format!("{key}: {text:?}: {e}"))
}

/// CapInh and CapAmb are 0, the three others are `expected`.
fn check_status(status: &str, expected: u64, what: &str) -> Result<(), String> {
    for (key, want) in [
        ("CapInh", 0),
        ("CapAmb", 0),
        ("CapPrm", expected),
        ("CapEff", expected),
        ("CapBnd", expected),
    ] {
        let got = mask(status, key)?;
        if got != want {
            return Err(format!("{what}: {key} is {got:016x}, expected {want:016x}"));
        }
    }
    Ok(())
}

fn skip() -> bool {
    if !geteuid().is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    false
}

/// Make every capability inheritable and SYS_ADMIN ambient first, the way a
/// careless parent could leave them: apply must clear both.
fn poison_inheritable_and_ambient() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
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
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
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

        let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
        check_status(&status, DEFAULT_MASK, "after apply")?;

        // CAP_SYS_ADMIN is gone: sethostname fails.
        match nix::unistd::sethostname("berth-cap-test") {
            Err(Errno::EPERM) => {}
            other => return Err(format!("sethostname without CAP_SYS_ADMIN: {other:?}")),
        }
        // CAP_CHOWN is kept: chown to another uid works.
        std::os::unix::fs::chown(&file, Some(1), Some(1)).map_err(|e| format!("chown: {e}"))?;

        // What the container's command really gets, after execve as root.
        let out = std::process::Command::new("/bin/cat")
            .arg("/proc/self/status")
            .output()
            .map_err(|e| format!("cat: {e}"))?;
        let status = String::from_utf8_lossy(&out.stdout);
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
        let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
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
        let out = std::process::Command::new("/bin/cat")
            .arg("/proc/self/status")
            .output()
            .map_err(|e| format!("cat: {e}"))?;
        let status = String::from_utf8_lossy(&out.stdout);
        match field(&status, "NoNewPrivs")? {
            "1" => Ok(()),
            other => Err(format!("NoNewPrivs {other} after exec")),
        }
    });
}
