use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::{Namespace, NsError};

/// Start a child process in new `namespaces` that runs `child` and exits
/// with its return value; returns the child's PID (as seen from here).
///
/// This is clone(2) with fork semantics (no shared memory, no new stack):
/// the child gets a copy of this process and so can run ordinary Rust code
/// before it execs. Call it only while the process is single-threaded, as
/// with fork: another thread's locks would be copied held. The child is
/// reaped by the caller (SIGCHLD is its exit signal).
pub fn spawn(namespaces: &[Namespace], child: impl FnOnce() -> i32) -> Result<Pid, NsError> {
    let flags = namespaces
        .iter()
        .fold(CloneFlags::empty(), |acc, ns| acc | ns.clone_flag());
    let clone_flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: raw clone without CLONE_VM and with a null stack behaves like
    // fork(2): the child continues on a private copy of this stack. The
    // caller guarantees the process is single-threaded, so no lock can be
    // copied in a held state.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            clone_flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match ret {
        -1 => Err(NsError::Clone {
            namespaces: Namespace::describe(namespaces),
            source: nix::Error::last(),
        }),
        0 => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(125);
            // SAFETY: _exit ends the child without running the parent's
            // atexit handlers or flushing its copied stdio buffers twice.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(Pid::from_raw(pid as i32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};

    #[test]
    fn child_runs_and_its_code_is_returned() {
        let pid = spawn(&[], || 7).unwrap();
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 7));
    }

    #[test]
    fn child_in_new_uts_namespace_has_its_own_hostname() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let before = nix::unistd::gethostname().unwrap();
        let pid = spawn(&[Namespace::Uts], || {
            i32::from(nix::unistd::sethostname("berth-ns-test").is_err())
        })
        .unwrap();
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 0));
        assert_eq!(nix::unistd::gethostname().unwrap(), before);
    }
}
