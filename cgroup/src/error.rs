//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

use crate::Controller;

/// Everything that can go wrong while discovering, creating, limiting,
/// freezing, reading or removing cgroups. Every variant names the path or
/// the controller it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// No cgroup (v1) or cgroup2 filesystem is mounted.
    #[error(
        "no cgroup filesystem is mounted (nothing of type cgroup or cgroup2 in {source_name})"
    )]
    NoCgroupFs {
        /// Where the mount table came from (e.g. `/proc/self/mountinfo`).
        source_name: String,
    },
    /// /proc/self/cgroup has no line for a mounted hierarchy.
    #[error("/proc/self/cgroup has no entry for the cgroup hierarchy mounted at {mount_point}")]
    NoOwnCgroup {
        /// The hierarchy's mount point.
        mount_point: PathBuf,
    },
    /// A cgroup path lies outside the part of a hierarchy that is mounted
    /// (e.g. inside a container that sees only a sub-tree).
    #[error("cgroup {cgroup} is not reachable through the mount at {mount_point}")]
    NotReachable {
        /// The cgroup path inside the hierarchy.
        cgroup: PathBuf,
        /// The mount point that does not show it.
        mount_point: PathBuf,
    },
    /// The host has no usable hierarchy for a controller.
    #[error(
        "this host has no {controller} cgroup controller (neither a cgroup v1 mount with it nor \
         cgroup2 with it in cgroup.controllers); drop the option that needs it"
    )]
    ControllerMissing {
        /// The controller that is missing.
        controller: Controller,
    },
    /// A controller exists but is not offered to this cgroup (cgroup v2:
    /// absent from the parent's `cgroup.controllers`).
    #[error("the {controller} cgroup controller is not available in {path}")]
    ControllerNotDelegated {
        /// The controller.
        controller: Controller,
        /// The `cgroup.controllers` file that lacks it.
        path: PathBuf,
    },
    /// cgroup v2 refused to enable a controller for children of a cgroup
    /// that has processes of its own.
    #[error(
        "cannot enable the {controller} controller in {path}: that cgroup has processes of its own \
         and cgroup v2 lets only cgroups without processes hand controllers to children; place the \
         cgroup below one that has no processes of its own"
    )]
    SubtreeControlBusy {
        /// The controller.
        controller: Controller,
        /// The `cgroup.subtree_control` file that refused the write.
        path: PathBuf,
    },
    /// Reading a cgroup file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Opening a cgroup's directory failed.
    #[error("opening cgroup {path}: {source}")]
    OpenDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing a cgroup file failed.
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The cause.
        source: io::Error,
    },
    /// Creating a cgroup directory failed.
    #[error("creating cgroup {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Removing a cgroup directory failed.
    #[error("removing cgroup {path}: {source}")]
    RemoveDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A cgroup file holds something we cannot parse.
    #[error("unexpected content in {path}: {content:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Its content (or the offending part).
        content: String,
    },
    /// A requested CPU (or memory node) does not exist or is not available
    /// to the parent cgroup.
    #[error(
        "{kind} {index} is not available on this machine (available: {available}, from {path})"
    )]
    CpuUnavailable {
        /// "CPU" or "memory node".
        kind: &'static str,
        /// The first requested index that is missing.
        index: u32,
        /// What the parent cgroup offers, in list syntax.
        available: String,
        /// The file the available set was read from.
        path: PathBuf,
    },
    /// A name or path that cannot name a cgroup.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A cgroup path in systemd's `slice:prefix:name` form, which only a
    /// systemd cgroup manager understands.
    #[error(
        "cgroup path {path:?} is in systemd's slice:prefix:name form; only cgroupfs paths are \
         supported: /a/b (from each hierarchy's root) or a/b (below the caller's own cgroup)"
    )]
    SystemdPath {
        /// The path as given.
        path: String,
    },
    /// A setting needs a cgroup file that this kernel (or this cgroup) does
    /// not have.
    #[error(
        "cannot set the {setting}: {path} does not exist (the kernel lacks the feature, or its \
         controller is not enabled for this cgroup)"
    )]
    KernelLacks {
        /// The setting ("swap limit", "cpu idle", ...).
        setting: &'static str,
        /// The file that is missing.
        path: PathBuf,
    },
    /// A setting that exists on only one cgroup version, on a host that
    /// uses the other one for it.
    #[error(
        "the {setting} needs cgroup {version}, which this host does not use for it; drop the setting"
    )]
    NeedsVersion {
        /// The setting ("cpu real-time runtime", "unified settings", ...).
        setting: &'static str,
        /// The version it needs.
        version: crate::Version,
    },
    /// User input (a size, a CPU count, a CPU list) that does not parse.
    #[error("invalid {what} {input:?}: {reason}")]
    InvalidValue {
        /// What was being parsed ("memory size", "CPU count", ...).
        what: &'static str,
        /// The input.
        input: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Waiting for the kernel (freeze, cgroup empty) took too long.
    #[error("timed out after {seconds} s waiting for {what} in {path}")]
    Timeout {
        /// What we waited for.
        what: &'static str,
        /// The cgroup.
        path: PathBuf,
        /// How long we waited.
        seconds: u64,
    },
    /// Sending a signal to a process of the cgroup failed.
    #[error("killing pid {pid} of cgroup {path}: {source}")]
    Kill {
        /// The process.
        pid: i32,
        /// The cgroup it was in.
        path: PathBuf,
        /// The cause.
        source: nix::errno::Errno,
    },
    /// Loading or attaching the cgroup v2 device program failed.
    #[error("cannot install the device filter (BPF) on cgroup {path}: {step}: {source}{}",
        if log.is_empty() { String::new() } else { format!("; verifier log:\n{log}") })]
    DeviceFilter {
        /// The cgroup directory.
        path: PathBuf,
        /// What failed ("load the program", "attach the program", ...).
        step: &'static str,
        /// The errno of bpf(2) (or of opening the directory).
        source: nix::errno::Errno,
        /// The kernel verifier's log, when loading failed.
        log: String,
    },
    /// Cleanup after a failure failed too; both are reported.
    #[error("{first}; cleaning up afterwards also failed: {cleanup}")]
    WithCleanup {
        /// The original error.
        first: Box<CgroupError>,
        /// The error of the cleanup.
        cleanup: Box<CgroupError>,
    },
}

/// Result with [`CgroupError`].
pub type Result<T, E = CgroupError> = std::result::Result<T, E>;
