use std::path::PathBuf;

/// Everything that can go wrong here, each naming what it was about.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("cannot create a process in new {namespaces} namespaces: {source}")]
    Clone {
        namespaces: String,
        #[source]
        source: nix::Error,
    },
    #[error(
        "cannot create a process in new {namespaces} namespaces in the cgroup given: {source}"
    )]
    CloneIntoCgroup {
        namespaces: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot open namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// setns(2) failed; `EINVAL` when the file is not a namespace of the
    /// expected kind.
    #[error("cannot join {kind} namespace {path}: {source}")]
    Join {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("sync channel: {op}: {source}")]
    Channel {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("cannot run from a sealed copy of the program: {step}: {source}")]
    Sealed {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("sync channel: malformed message: {source}")]
    Message {
        #[source]
        source: serde_json::Error,
    },
    /// A capability name for [`crate::capabilities::resolve`] that is no
    /// capability.
    #[error(
        "unknown capability {name:?} (expected a name such as NET_ADMIN or CAP_NET_ADMIN, or ALL)"
    )]
    UnknownCapability { name: String },
    /// A name in a spec's capability list that is not a capability name at
    /// all (as opposed to one this kernel does not know, which is left
    /// out).
    #[error("{name:?} is not a capability name (expected a kernel name such as CAP_NET_ADMIN)")]
    InvalidCapabilityName { name: String },
    /// A step of [`crate::capabilities::apply_sets`] failed.
    #[error("cannot set the capabilities: {step}: {source}")]
    Capabilities {
        step: String,
        #[source]
        source: nix::Error,
    },
    /// After [`crate::capabilities::apply_sets`], the kernel reports other
    /// sets than asked for.
    #[error("capabilities not applied: wanted {expected}; the kernel has {found}")]
    CapabilitiesMismatch { expected: String, found: String },
    /// `PR_SET_NO_NEW_PRIVS` failed.
    #[error("cannot set no_new_privs: {source}")]
    NoNewPrivs {
        #[source]
        source: nix::Error,
    },
    /// A step of [`crate::process::set_user`] failed.
    #[error("cannot change the user: {step}: {source}")]
    User {
        step: String,
        #[source]
        source: nix::Error,
    },
    /// A umask with bits other than the permission bits (0o777).
    #[error("invalid umask {umask:#o} (expected at most 0o777)")]
    InvalidUmask { umask: u32 },
    /// An rlimit type that is none of `RLIMIT_AS` ... `RLIMIT_STACK`.
    #[error("unknown rlimit type {name:?} (expected a name such as RLIMIT_NOFILE)")]
    UnknownRlimit { name: String },
    /// An rlimit whose soft limit is above its hard limit.
    #[error("invalid {resource}: soft limit {soft} is above hard limit {hard}")]
    InvalidRlimit {
        resource: &'static str,
        soft: u64,
        hard: u64,
    },
    #[error("cannot set {resource} to soft {soft}, hard {hard}: {source}")]
    Rlimit {
        resource: &'static str,
        soft: u64,
        hard: u64,
        #[source]
        source: nix::Error,
    },
    #[error("cannot set the OOM score adjustment to {value} in {path}: {source}")]
    OomScoreAdj {
        value: i32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A sysctl key that cannot name a file below /proc/sys.
    #[error("invalid sysctl name {key:?}: {reason}")]
    InvalidSysctl { key: String, reason: &'static str },
    /// A sysctl that would change the host rather than the container.
    #[error("sysctl {key} is not allowed: {reason}")]
    SysctlNotAllowed { key: String, reason: &'static str },
    #[error("cannot set sysctl {key} in {path}: {source}")]
    Sysctl {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot join a new session keyring {name:?}: {source}")]
    Keyring {
        name: String,
        #[source]
        source: nix::Error,
    },
    /// User or group id mappings that the kernel would refuse.
    #[error("invalid {kind} mappings: {reason}")]
    InvalidIdMap { kind: &'static str, reason: String },
    #[error("cannot write {path}: {source}")]
    IdMap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
