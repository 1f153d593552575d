//! Container records for berth: one JSON file per container, written
//! atomically (temp file, fsync, rename, fsync of the directory) and guarded
//! by a store-wide lock so that concurrent `berth` processes never lose an
//! update or hand out one name twice.
//!
//! ```no_run
//! use berth_state::{ContainerRecord, ContainerStore, generate_id};
//!
//! let store = ContainerStore::open("/var/lib/berth/containers")?;
//! let record = ContainerRecord::new(generate_id(), "web".into(), "busybox".into());
//! store.create(&record)?;
//! let found = store.find("web")?;
//! assert_eq!(found.id, record.id);
//! # Ok::<(), berth_state::StateError>(())
//! ```

mod atomic;
mod liveness;
mod log;
mod names;
mod private_dir;
mod record;
mod store;
mod time;
mod volume;

pub use atomic::{replace_file, write_atomic, Durability, FileLock};
pub use liveness::{is_same_process, process_start_time};
pub use log::{read_log, read_log_from, LogEntry, LogLimits, LogWriter, Stream};
pub use names::{generate_id, generate_name, validate_name};
pub use private_dir::{ensure_private_dir, make_searchable};
pub use record::{
    CheckpointMark, ContainerRecord, IdMaps, IdRange, Limits, MountPoint, RestartPolicy, Status,
};
pub use store::{BrokenRecord, ContainerStore, StoreLock};
pub use time::Timestamp;
pub use volume::{
    disk_usage, parse_local_options, validate_volume_name, NewVolume, VolumeBacking, VolumeError,
    VolumeLock, VolumeRecord, VolumeStore, LOCAL_DRIVER,
};

use std::path::PathBuf;

/// Everything that can go wrong with container records.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt container record: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid container name {name:?}: names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")]
    InvalidName { name: String },
    #[error("the container name {name:?} is already in use by container {id}; remove it or choose another name")]
    NameInUse { name: String, id: String },
    #[error("no such container: {query}")]
    NotFound { query: String },
    #[error("container id prefix {query:?} is ambiguous: it matches {count} containers")]
    Ambiguous { query: String, count: usize },
    #[error("{path}: container record larger than {max} bytes")]
    RecordTooLarge { path: PathBuf, max: u64 },
    /// A container whose record cannot be read; `rm -f` removes it.
    #[error("container {id} has a broken record: {reason}")]
    Broken { id: String, reason: String },
    /// A state directory another user could tamper with.
    #[error(
        "refusing to use {path}: {reason}; it must be owned by this user and writable only by it"
    )]
    Insecure { path: PathBuf, reason: String },
}

impl StateError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StateError::Io {
            path: path.into(),
            source,
        }
    }
}
