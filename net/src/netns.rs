//! Entering network namespaces for just as long as it takes.
//!
//! Namespace membership is per thread on Linux, so the helpers here run a
//! closure on a short-lived thread that `setns`es into the target
//! namespace and then ends: the calling thread never changes namespace.
//! Sockets opened by the closure stay bound to that namespace after the
//! thread is gone, which is how berth talks netlink to a container's
//! namespace from the host (netavark does the same).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

/// The network namespace file of process `pid` under `proc_root`
/// (normally `/proc`).
pub fn netns_path(proc_root: &Path, pid: u32) -> PathBuf {
    proc_root.join(pid.to_string()).join("ns/net")
}

/// Open a network namespace file (e.g. `/proc/<pid>/ns/net` or
/// `/run/netns/<name>`); the namespace lives at least as long as the fd.
pub fn open_netns(path: &Path) -> io::Result<OwnedFd> {
    let file = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(OwnedFd::from(file))
}

/// Run `f` on a new thread inside the network namespace `netns`, and
/// return its result. The calling thread's namespace is untouched; a
/// panic in `f` is propagated.
pub fn run_in_netns<T, F>(netns: BorrowedFd<'_>, f: F) -> Result<T, nix::Error>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)?;
            Ok(f())
        });
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
