//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the image store.
///
/// Every I/O error names the path it was about; an archive entry that is
/// refused names the entry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The image name does not match `[a-z0-9][a-z0-9_.-]*(:[A-Za-z0-9_.-]+)?`.
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// No image of that name is in the store.
    #[error("image {name:?} not found (see `berth images`)")]
    NotFound {
        /// The name that was looked up.
        name: String,
    },

    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("create directory", "write", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The archive could not be read (not a tar or gzip stream, truncated,
    /// corrupt) or written.
    #[error("archive {origin}: {source}")]
    Archive {
        /// The archive file, or `<stream>` when it came from a reader.
        origin: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An archive entry tried to escape the layer or to write through a
    /// link; nothing of the archive was kept.
    #[error("refused archive entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's name as stored in the archive.
        entry: String,
        /// Why it was refused.
        reason: String,
    },

    /// A metadata file of the store could not be parsed or written.
    #[error("image metadata {}: {source}", path.display())]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// No statically linked busybox was found on the host.
    #[error(
        "no statically linked busybox found on this host to build the default image; \
         install it with `apt-get install busybox-static` (Debian/Ubuntu)"
    )]
    NoStaticBusybox,

    /// `busybox --list-full` could not be run or gave no applets.
    #[error("listing the applets of {}: {reason}", path.display())]
    BusyboxApplets {
        /// The busybox binary.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// Pulling from a registry failed.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),

    /// A registry credentials file could not be used.
    #[error(transparent)]
    Credentials(#[from] crate::auth::CredentialsError),

    /// An operation failed, and removing what it had made failed too.
    #[error("{error}; cleaning up also failed: {cleanup}")]
    CleanupFailed {
        /// The original error.
        error: Box<ImageError>,
        /// The error of the cleanup.
        cleanup: Box<ImageError>,
    },
}

impl ImageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn errno(op: &'static str, path: impl Into<PathBuf>, errno: nix::Error) -> Self {
        Self::io(op, path, io::Error::from(errno))
    }

    pub(crate) fn unsafe_entry(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        ImageError::UnsafeEntry {
            entry: entry.into(),
            reason: reason.into(),
        }
    }
}
