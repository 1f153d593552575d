//! What the runtime remembers of a container, and its status derived from
//! the facts (is the init alive, is the fifo still there, is the cgroup
//! frozen) rather than from a stored word that a crash could leave stale.

use std::path::{Path, PathBuf};

use berth_cgroup::Cgroup;
use oci_spec::runtime::{ContainerState, Spec, State};
use serde::{Deserialize, Serialize};

use super::{Result, Runtime, RuntimeError};

/// The version of the runtime spec berth implements.
pub const OCI_VERSION: &str = "1.2.0";

const STATE_FILE: &str = "state.json";
pub(crate) const EXEC_FIFO: &str = "exec.fifo";

/// A container's status: the spec's four, plus runc's `paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    /// As the spec's state says it (a paused container is running).
    pub fn spec_state(self) -> ContainerState {
        match self {
            Status::Creating => ContainerState::Creating,
            Status::Created => ContainerState::Created,
            Status::Running | Status::Paused => ContainerState::Running,
            Status::Stopped => ContainerState::Stopped,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// `<root>/<id>/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContainerFile {
    pub id: String,
    pub bundle: PathBuf,
    /// The init (PID 1 of the container), as seen from the runtime.
    pub pid: i32,
    /// Its start time (/proc/PID/stat), so a recycled PID is never taken
    /// for the container.
    pub pid_start_time: Option<u64>,
    /// RFC 3339, UTC.
    pub created: String,
    pub cgroup: Option<Cgroup>,
    pub spec: Spec,
}

/// runc's rule for ids: they become directory and cgroup names.
pub fn validate_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        Some("it is empty")
    } else if id == "." || id == ".." {
        Some("it is a relative directory name")
    } else if id.len() > 1024 {
        Some("it is longer than 1024 bytes")
    } else if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'))
    {
        Some("only letters, digits, '_', '+', '-' and '.' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(RuntimeError::InvalidId {
            id: id.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

impl Runtime {
    pub(crate) fn load(&self, id: &str) -> Result<ContainerFile> {
        validate_id(id)?;
        let path = self.container_dir(id).join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::NotFound { id: id.to_owned() })
            }
            Err(e) => return Err(RuntimeError::io(path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| RuntimeError::CorruptState { path, source })
    }

    /// Written once, when the init reports that it is set up. Runtime state
    /// dies with the container (or a reboot): no fsync.
    pub(crate) fn save(&self, file: &ContainerFile) -> Result<()> {
        let path = self.container_dir(&file.id).join(STATE_FILE);
        let bytes = serde_json::to_vec(file).map_err(|source| RuntimeError::CorruptState {
            path: path.clone(),
            source,
        })?;
        berth_state::replace_file(&path, &bytes, berth_state::Durability::Volatile)
            .map_err(|e| RuntimeError::io(path, e))
    }

    /// The container's status as the runtime spec defines it.
    pub(crate) fn status_of(&self, file: &ContainerFile) -> Status {
        if !berth_state::is_same_process(&self.proc_root, file.pid, file.pid_start_time) {
            return Status::Stopped;
        }
        if self.container_dir(&file.id).join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        match &file.cgroup {
            Some(cgroup) if cgroup.is_frozen().unwrap_or(false) => Status::Paused,
            _ => Status::Running,
        }
    }

    /// The status of container `id`, derived from the live process.
    pub fn status(&self, id: &str) -> Result<Status> {
        let file = self.load(id)?;
        Ok(self.status_of(&file))
    }

    /// The spec's state of container `id` (what `state` prints and hooks
    /// read on stdin).
    pub fn state(&self, id: &str) -> Result<State> {
        let file = self.load(id)?;
        Ok(self.oci_state(&file, self.status_of(&file)))
    }

    pub(crate) fn oci_state(&self, file: &ContainerFile, status: Status) -> State {
        let mut state = State::default();
        state
            .set_version(OCI_VERSION.to_owned())
            .set_id(file.id.clone())
            .set_status(status.spec_state())
            .set_pid((status != Status::Stopped).then_some(file.pid))
            .set_bundle(file.bundle.clone())
            .set_annotations(file.spec.annotations().clone());
        state
    }

    /// Details runc's `state` and `list` print beside the spec's fields.
    pub fn details(&self, id: &str) -> Result<Details> {
        let file = self.load(id)?;
        let status = self.status_of(&file);
        Ok(Details {
            status,
            state: self.oci_state(&file, status),
            created: file.created.clone(),
            rootfs: rootfs_path(&file.bundle, &file.spec),
            owner: "root".to_owned(),
        })
    }

    /// The ids of every container this runtime knows (sorted).
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RuntimeError::io(&self.root, e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().join(STATE_FILE).is_file())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// A container's state plus what runc's `state`/`list` also show.
#[derive(Debug, Clone)]
pub struct Details {
    /// The status, `paused` included (the spec's state says `running`).
    pub status: Status,
    pub state: State,
    pub created: String,
    pub rootfs: PathBuf,
    pub owner: String,
}

/// `root.path` of the spec, relative to the bundle unless absolute.
pub(crate) fn rootfs_path(bundle: &Path, spec: &Spec) -> PathBuf {
    let path = spec
        .root()
        .as_ref()
        .map(|root| root.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    if path.is_absolute() {
        path
    } else {
        bundle.join(path)
    }
}

/// Now in RFC 3339 with nanoseconds, as runc writes `created`.
pub(crate) fn now_rfc3339() -> String {
    berth_state::Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_runc() {
        for good in ["abc", "a.b-c_d+e", "0123456789abcdef"] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a\0b"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rootfs_is_relative_to_the_bundle() {
        let mut spec = Spec::default();
        assert_eq!(rootfs_path(Path::new("/b"), &spec), Path::new("/b/rootfs"));
        let mut root = oci_spec::runtime::Root::default();
        root.set_path(PathBuf::from("/abs/root"));
        spec.set_root(Some(root));
        assert_eq!(rootfs_path(Path::new("/b"), &spec), Path::new("/abs/root"));
    }
}
