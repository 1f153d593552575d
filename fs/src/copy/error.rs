//! What can go wrong while copying a tree.

use std::io;
use std::path::PathBuf;

use crate::FsError;

/// A copy between two trees (a container's and the host's, or a tar
/// stream) failed. Paths are the ones the user knows: the path inside the
/// container, or the host path, never `/proc/PID/root/...`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// The path does not exist.
    #[error("no such file or directory: {path}")]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },

    /// A path that must be a directory (it ends with `/` or `/.`, or a
    /// directory is copied into it) is something else.
    #[error("not a directory: {path}")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },

    /// A directory cannot replace an existing file.
    #[error("cannot copy a directory to a file: {path}")]
    DirectoryOntoFile {
        /// The existing file.
        path: PathBuf,
    },

    /// A file, link or device cannot replace an existing directory.
    #[error("cannot overwrite directory {path} with a non-directory")]
    NonDirectoryOntoDirectory {
        /// The existing directory.
        path: PathBuf,
    },

    /// The destination ends with `/` but does not exist, and the source is
    /// not a directory (docker: the destination directory must exist).
    #[error("the destination directory must exist: {path}")]
    DestinationDirectoryMissing {
        /// The destination as given.
        path: PathBuf,
    },

    /// A path could not be resolved inside its root.
    #[error("cannot resolve {path}: {source}")]
    Resolve {
        /// The path as the user knows it.
        path: PathBuf,
        /// What the resolver said.
        source: FsError,
    },

    /// One step on one entry failed (`stat`, `open`, `read`, `create`,
    /// `chown`, ...).
    #[error("cannot {step} {path}: {source}")]
    Entry {
        /// What was being done.
        step: &'static str,
        /// The entry, as the user knows it.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// An entry kept changing type while it was being copied.
    #[error("{path} kept changing while it was being copied")]
    Unstable {
        /// The entry.
        path: PathBuf,
    },

    /// A name in a tar stream is absolute after `..`, or otherwise unusable.
    #[error("unsafe path in the archive: {name:?}")]
    UnsafeArchivePath {
        /// The name as the archive has it.
        name: String,
    },

    /// The tar stream could not be read.
    #[error("cannot read the archive: {source}")]
    ReadArchive {
        /// The underlying error.
        source: io::Error,
    },

    /// The tar stream could not be written.
    #[error("cannot write the archive: {source}")]
    WriteArchive {
        /// The underlying error.
        source: io::Error,
    },
}

impl CopyError {
    pub(crate) fn entry(step: &'static str, path: impl Into<PathBuf>, source: nix::Error) -> Self {
        CopyError::Entry {
            step,
            path: path.into(),
            source: source.into(),
        }
    }

    pub(crate) fn entry_io(
        step: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> Self {
        CopyError::Entry {
            step,
            path: path.into(),
            source,
        }
    }
}
