//! What every privileged fs test needs: run a closure in a forked child
//! inside a new private mount namespace, and prove afterwards that no mount
//! leaked into the test's own namespace.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use berth_fs::make_mounts_private;
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult};

/// Mount points listed in a /proc/PID/mountinfo text.
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect()
}

/// Run `f` in a forked child in a new private mount namespace, fail the
/// test with its message if it fails, and check that no mount under `base`
/// is left in the test's mount namespace.
pub fn in_mount_namespace(base: &Path, f: impl FnOnce() -> Result<(), String>) {
    let (read_end, write_end) = pipe().unwrap();
    // SAFETY: the child only runs `f` and then `_exit`s, never returning
    // into the test harness; glibc makes malloc usable after fork even
    // though the harness is multi-threaded.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(read_end);
            let body = || -> Result<(), String> {
                unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
                make_mounts_private().map_err(|e| e.to_string())?;
                f()
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body))
                .unwrap_or_else(|_| Err("panicked".into()));
            let code = match result {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = File::from(write_end).write_all(msg.as_bytes());
                    1
                }
            };
            // SAFETY: _exit skips the destructors (e.g. the TempDir) that
            // belong to the parent.
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
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = base.to_str().unwrap();
    for mp in mount_points(&mountinfo) {
        assert!(!mp.starts_with(prefix), "leaked mount {mp}");
    }
}
