use nix::sched::CloneFlags;
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{channel, Channel, Namespace, NsError};

/// Start a child process in new `namespaces` that runs `child` and exits
/// with its return value; returns the child's PID (as seen from here).
///
/// This is clone(2) with fork semantics (no shared memory, no new stack):
/// the child gets a copy of this process and so can run ordinary Rust code
/// before it execs. Call it only while the process is single-threaded:
/// another thread's locks would be copied held, and unlike glibc's fork(3)
/// a raw clone does not even make malloc's own locks safe. The child is
/// reaped by the caller (SIGCHLD is its exit signal). A panic in `child`
/// exits with 125.
///
/// With [`Namespace::User`] the child starts with no uid or gid mapping
/// (it is nobody, with every capability in its new namespace): it must
/// wait until the parent has written them with
/// [`crate::process::write_id_maps`]. [`spawn_with_channel`] gives it the
/// channel to wait on.
pub fn spawn(namespaces: &[Namespace], child: impl FnOnce() -> i32) -> Result<Pid, NsError> {
    match clone_process(namespaces)? {
        Cloned::Child => exit_with(child),
        Cloned::Parent(pid) => Ok(pid),
    }
}

/// [`spawn`] with a channel between parent and child: `child` gets its
/// end, the parent gets the child's PID and the other end. Each process
/// holds only its own end (the other is closed on both sides), so either
/// reads end-of-file when the other exits, or when the child execs (the
/// ends are close-on-exec).
///
/// ```no_run
/// use berth_ns::{spawn_with_channel, Channel, Namespace};
///
/// let (pid, parent) = spawn_with_channel(&[Namespace::Uts], |child: Channel<String, u32>| {
///     match child.recv() {
///         Ok(Some(code)) => code as i32,
///         _ => 1,
///     }
/// })?;
/// parent.send(&7)?;
/// # let _ = (pid, parent.recv());
/// # Ok::<(), berth_ns::NsError>(())
/// ```
#[allow(clippy::type_complexity)]
pub fn spawn_with_channel<ToChild, ToParent>(
    namespaces: &[Namespace],
    child: impl FnOnce(Channel<ToParent, ToChild>) -> i32,
) -> Result<(Pid, Channel<ToChild, ToParent>), NsError>
where
    ToChild: Serialize + DeserializeOwned,
    ToParent: Serialize + DeserializeOwned,
{
    let (parent_end, child_end) = channel::<ToChild, ToParent>()?;
    match clone_process(namespaces)? {
        Cloned::Child => {
            // The child's copy of the parent's end: closed, so that the
            // child sees end-of-file when the parent dies.
            drop(parent_end);
            exit_with(|| child(child_end))
        }
        Cloned::Parent(pid) => {
            drop(child_end);
            Ok((pid, parent_end))
        }
    }
}

/// Which side of a clone this process is.
enum Cloned {
    Child,
    Parent(Pid),
}

/// clone(2) into new `namespaces`, with fork semantics.
fn clone_process(namespaces: &[Namespace]) -> Result<Cloned, NsError> {
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
        0 => Ok(Cloned::Child),
        pid => Ok(Cloned::Parent(Pid::from_raw(pid as i32))),
    }
}

/// In the child: run `body` and exit with its code (125 if it panics).
fn exit_with(body: impl FnOnce() -> i32) -> ! {
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(125);
    // SAFETY: _exit ends the child without running the parent's atexit
    // handlers or flushing its copied stdio buffers twice.
    unsafe { libc::_exit(code) }
}

/// For tests, which run in a multi-threaded harness: run `body` in a
/// child made by glibc's fork(3) (single-threaded, with malloc usable),
/// where it may [`spawn`]; returns its exit code.
#[cfg(test)]
pub(crate) fn in_single_threaded_child(body: impl FnOnce() -> i32) -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    // SAFETY: the child runs only `body` and then `_exit`s, never
    // returning into the harness; glibc's fork makes malloc usable in it.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => exit_with(body),
        nix::unistd::ForkResult::Parent { child } => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => code,
            other => panic!("the test child ended with {other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};

    /// Run `body` where spawning is safe; its assertions fail the test.
    fn single_threaded(body: impl FnOnce()) {
        let code = in_single_threaded_child(|| {
            body();
            0
        });
        assert_eq!(code, 0, "the test's child failed (see its panic above)");
    }

    #[test]
    fn child_runs_and_its_code_is_returned() {
        single_threaded(|| {
            let pid = spawn(&[], || 7).unwrap();
            assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 7));
        });
    }

    #[test]
    fn a_panicking_child_exits_125() {
        single_threaded(|| {
            let pid = spawn(&[], || panic!("on purpose")).unwrap();
            assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 125));
        });
    }

    #[test]
    fn child_in_new_uts_namespace_has_its_own_hostname() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let before = nix::unistd::gethostname().unwrap();
        single_threaded(|| {
            let pid = spawn(&[Namespace::Uts], || {
                i32::from(nix::unistd::sethostname("berth-ns-test").is_err())
            })
            .unwrap();
            assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 0));
        });
        assert_eq!(nix::unistd::gethostname().unwrap(), before);
    }

    #[test]
    fn channel_ends_are_held_by_one_process_each() {
        single_threaded(|| {
            let (pid, parent) = spawn_with_channel(&[], |child: Channel<String, u32>| {
                let Ok(Some(n)) = child.recv() else { return 1 };
                if child.send(&format!("got {n}")).is_err() {
                    return 2;
                }
                // End-of-file once the parent drops its end: the child's
                // copy of it was closed at the start.
                match child.recv() {
                    Ok(None) => 0,
                    _ => 3,
                }
            })
            .unwrap();
            parent.send(&5).unwrap();
            assert_eq!(parent.recv().unwrap(), Some("got 5".to_owned()));
            drop(parent);
            assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 0));

            // And the other way: the child's exit is end-of-file for the
            // parent, which holds no copy of the child's end.
            let (pid, parent) = spawn_with_channel(&[], |_child: Channel<(), ()>| 0).unwrap();
            assert_eq!(parent.recv().unwrap(), None);
            assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 0));
        });
    }
}
