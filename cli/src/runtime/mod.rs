//! The container runtime: create / start / state / kill / delete / exec /
//! pause / resume / ps of containers described by OCI runtime specs.
//!
//! A container lives in `<root>/<id>/`: `state.json` (what the runtime must
//! remember: the spec, the init's PID and start time, the cgroup) and,
//! between create and start, `exec.fifo`, on which the container's init
//! waits, fully set up, until `start` opens it. The status is derived from
//! those facts whenever it is asked for (a process that died, even by
//! SIGKILL together with whoever created it, is `stopped`), so nothing has
//! to be written when a container starts, pauses or ends.
//!
//! Process model: `create` clones the init into the new namespaces the spec
//! asks for; the creator places it in its cgroup (and writes user-namespace
//! maps) and lets it go on over a typed channel; the init joins namespaces
//! given by path, sets up the root filesystem from the spec's mounts,
//! pivots into it, prepares the process (terminal, user, capabilities,
//! rlimits...), reports `Created` and blocks on the fifo. `start` opens the
//! fifo and the init execs the user's command, which becomes PID 1.

pub mod checkpoint;
mod convert;
mod criu;
mod error;
mod exec;
mod hooks;
mod init;
mod lifecycle;
mod rootfs;
mod state;
pub mod tty;

pub use checkpoint::{CheckpointOptions, RestoreOptions, Restored};
pub use error::{Result, RuntimeError};
pub use exec::{ExecOptions, Executing};
pub use lifecycle::{CreateOptions, Created, Stdio};
pub use state::{validate_id, Details, Status, OCI_VERSION};

use std::path::{Path, PathBuf};

/// Exit code for a failure of the runtime itself (docker's 125).
pub const RUNTIME_FAILED: i32 = 125;
/// The process's command exists but cannot be invoked (126).
pub const CANNOT_INVOKE: i32 = 126;
/// The process's command was not found (127).
pub const NOT_FOUND: i32 = 127;

/// PATH for the process when its environment has none (docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Annotation by which an engine asks the runtime to mount the container's
/// root itself, inside the container's own mount namespace, as an overlay
/// (value: JSON `{"lower": [dirs], "upper": dir, "work": dir}`) on
/// `root.path`. The mount then never exists on the host, so nothing can
/// leak there; engines that prepare the rootfs themselves leave it out.
pub const OVERLAY_ROOTFS_ANNOTATION: &str = "run.berth.rootfs.overlay";

/// Annotation by which an engine asks for a reaping init as the
/// container's PID 1 (docker's `--init`; value `"true"`): the runtime's
/// own init process stays PID 1, forks the spec's process as its only
/// child, forwards every signal it gets to it, reaps every zombie and exits
/// with the child's status (128+N for a death by signal N, as tini). It is
/// built into the runtime, so no binary has to be mounted into the image.
pub const REAPING_INIT_ANNOTATION: &str = "run.berth.init";

/// A signal as people and engines write it: "KILL", "SIGKILL", "kill" or
/// "9" (podman and containerd's shims pass numbers).
pub fn parse_signal(text: &str) -> Option<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).ok();
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().ok()
}

/// A runtime keeping its containers' state below one directory.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    proc_root: PathBuf,
}

impl Runtime {
    /// A runtime whose state lives in `root` (created, mode 0700, on first
    /// use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Runtime {
            root: root.into(),
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// The directory holding the containers' state.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("KILL"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("sigterm"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("hup"), Some(Signal::SIGHUP));
        assert_eq!(parse_signal("15"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("999"), None);
    }
}
