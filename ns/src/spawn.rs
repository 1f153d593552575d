use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
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
    let (pid, channel, _) = spawn_with_channel_in(namespaces, None, child)?;
    Ok((pid, channel))
}

/// Where a child that was asked to start in a cgroup started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Birthplace {
    /// In the cgroup2 directory it was given: it never ran anywhere else
    /// on the cgroup2 hierarchy (cgroup v1 hierarchies are not concerned).
    GivenCgroup,
    /// In its parent's cgroups, because the kernel cannot place a child
    /// at its birth (before Linux 5.7, or clone3 refused by a seccomp
    /// filter, as a container engine's default profile does) or because
    /// no cgroup was given: the caller moves it.
    ParentsCgroups,
}

/// [`spawn_with_channel`], the child born in the cgroup2 directory
/// `cgroup` (an `O_PATH` or read-only descriptor of it) when one is given:
/// clone3(2) with `CLONE_INTO_CGROUP`. Moving a process into a cgroup2
/// cgroup afterwards (a write to `cgroup.procs`) takes the kernel's
/// cgroup_threadgroup_rwsem for writing, which waits for an RCU grace
/// period (several milliseconds); a child born there never moves. Where
/// the kernel cannot do that, the child starts in the parent's cgroups,
/// as with [`spawn_with_channel`], and the [`Birthplace`] says so. A
/// cgroup the kernel refuses for another reason (not a cgroup2 directory,
/// one whose subtree has controllers enabled, no permission) is an error.
#[allow(clippy::type_complexity)]
pub fn spawn_with_channel_in<ToChild, ToParent>(
    namespaces: &[Namespace],
    cgroup: Option<BorrowedFd<'_>>,
    child: impl FnOnce(Channel<ToParent, ToChild>) -> i32,
) -> Result<(Pid, Channel<ToChild, ToParent>, Birthplace), NsError>
where
    ToChild: Serialize + DeserializeOwned,
    ToParent: Serialize + DeserializeOwned,
{
    let (parent_end, child_end) = channel::<ToChild, ToParent>()?;
    let (cloned, birthplace) = match cgroup {
        Some(cgroup) => match clone_into_cgroup(namespaces, cgroup) {
            Ok(cloned) => (cloned, Birthplace::GivenCgroup),
            Err(CloneIntoCgroup::Unsupported) => {
                (clone_process(namespaces)?, Birthplace::ParentsCgroups)
            }
            Err(CloneIntoCgroup::Failed(source)) => {
                return Err(NsError::CloneIntoCgroup {
                    namespaces: Namespace::describe(namespaces),
                    source,
                })
            }
        },
        None => (clone_process(namespaces)?, Birthplace::ParentsCgroups),
    };
    match cloned {
        Cloned::Child => {
            // The child's copy of the parent's end: closed, so that the
            // child sees end-of-file when the parent dies.
            drop(parent_end);
            exit_with(|| child(child_end))
        }
        Cloned::Parent(pid) => {
            drop(child_end);
            Ok((pid, parent_end, birthplace))
        }
    }
}

/// Which side of a clone this process is.
enum Cloned {
    Child,
    Parent(Pid),
}

fn clone_flags(namespaces: &[Namespace]) -> CloneFlags {
    namespaces
        .iter()
        .fold(CloneFlags::empty(), |acc, ns| acc | ns.clone_flag())
}

/// clone(2) into new `namespaces`, with fork semantics.
fn clone_process(namespaces: &[Namespace]) -> Result<Cloned, NsError> {
    let clone_flags =
        clone_flags(namespaces).bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
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

/// The kernel's `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2,
/// Linux 5.7): every field is a 64-bit value, whatever the architecture.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Not (yet) in libc for every target; the kernel's value since 5.7.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

enum CloneIntoCgroup {
    /// The kernel has no clone3 (before 5.3, or a seccomp filter answers
    /// for it) or no CLONE_INTO_CGROUP (5.3 to 5.6: the flag is unknown and
    /// the longer argument structure too big).
    Unsupported,
    Failed(Errno),
}

/// clone3(2) with fork semantics into new `namespaces`, the child born in
/// the cgroup2 directory `cgroup`.
fn clone_into_cgroup(
    namespaces: &[Namespace],
    cgroup: BorrowedFd<'_>,
) -> Result<Cloned, CloneIntoCgroup> {
    let mut args = CloneArgs {
        flags: clone_flags(namespaces).bits() as u32 as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        // A descriptor is never negative.
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM and without a stack (stack and
    // stack_size 0) behaves like fork(2): the child continues on a private
    // copy of this stack. `args` is a valid, initialised clone_args of the
    // size given, which the kernel only reads. The caller guarantees the
    // process is single-threaded, so no lock can be copied in a held state.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => match Errno::last() {
            // EPERM too: some seccomp profiles refuse clone3 that way; a
            // genuine permission error comes back again from clone(2).
            Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL | Errno::EPERM => {
                Err(CloneIntoCgroup::Unsupported)
            }
            errno => Err(CloneIntoCgroup::Failed(errno)),
        },
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
