use std::path::PathBuf;

/// Everything the runtime can fail at, each naming what it was about.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("container {id} already exists")]
    Exists { id: String },
    #[error("container {id} does not exist")]
    NotFound { id: String },
    #[error("invalid spec: {reason}")]
    InvalidSpec { reason: String },
    #[error("cannot read the spec {path}: {source}")]
    Spec {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt container state: {source}")]
    CorruptState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// An operation that the container's status does not allow.
    #[error("container {id} is {status}: {refused}")]
    WrongStatus {
        id: String,
        status: String,
        refused: &'static str,
    },
    /// The container's process (init or exec'd) could not be set up or
    /// started; `code` is docker's exit code for it (125, 126 or 127).
    #[error("{message}")]
    Process { code: i32, message: String },
    #[error("{what}: {source}")]
    System {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("{hook} hook {path}: {reason}")]
    Hook {
        hook: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// CRIU failed or is missing; `reason` is criu's own (from its log).
    #[error("criu: {reason}")]
    Criu { reason: String },
    #[error(transparent)]
    Cgroup(#[from] berth_cgroup::CgroupError),
    #[error(transparent)]
    Namespace(#[from] berth_ns::NsError),
    #[error(transparent)]
    Filesystem(#[from] berth_fs::FsError),
}

impl RuntimeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn system(what: impl Into<String>, source: nix::Error) -> Self {
        RuntimeError::System {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        RuntimeError::InvalidSpec {
            reason: reason.into(),
        }
    }

    /// docker's exit code for this failure: the process's own 126/127, or
    /// 125 for everything the runtime itself failed at.
    pub fn exit_code(&self) -> i32 {
        match self {
            RuntimeError::Process { code, .. } => *code,
            _ => super::RUNTIME_FAILED,
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
