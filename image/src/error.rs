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
    /// The text is not an image reference in docker's grammar.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },

    /// No image of that reference or id is in the store.
    #[error("image {name:?} not found")]
    NotFound {
        /// The reference or id that was looked up.
        name: String,
    },

    /// An id prefix matches more than one image.
    #[error("image id prefix {prefix:?} is ambiguous: it matches {count} images")]
    AmbiguousId {
        /// The prefix as given.
        prefix: String,
        /// How many images it matches.
        count: usize,
    },

    /// The image still has tags and removal was not forced.
    #[error("image {id} is tagged as {}; untag it first or force the removal", tags.join(", "))]
    ImageTagged {
        /// The image's id.
        id: String,
        /// Its tags, in familiar form.
        tags: Vec<String>,
    },

    /// Content read for a digest hashes to something else.
    #[error("{what} {expected} from {origin}: content has digest {actual}")]
    DigestMismatch {
        /// What the content is ("layer", "config", "manifest", "uncompressed layer").
        what: &'static str,
        /// Where it came from (the source's description).
        origin: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },

    /// Content has another size than its descriptor says (a truncated blob
    /// or one with data beyond its end).
    #[error("{what} {digest} from {origin}: {actual} bytes read, {expected} declared")]
    SizeMismatch {
        /// What the content is.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// Where it came from.
        origin: String,
        /// The declared size.
        expected: u64,
        /// The size read (at most one byte past the declared size).
        actual: u64,
    },

    /// A descriptor declares a size above what the store accepts.
    #[error(
        "{what} {digest} from {origin}: declared size {size} exceeds the limit of {limit} bytes"
    )]
    TooLarge {
        /// What the content is.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// Where it came from.
        origin: String,
        /// The declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// A manifest, config or archive index is malformed or inconsistent.
    #[error("invalid image {origin}: {reason}")]
    InvalidImage {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        reason: String,
    },

    /// An image index has no manifest for the wanted platform.
    #[error("{origin} has no image for {wanted} (it has: {})", if available.is_empty() { "none".to_owned() } else { available.join(", ") })]
    NoMatchingPlatform {
        /// Where the index came from.
        origin: String,
        /// The platform looked for, `os/architecture[/variant]`.
        wanted: String,
        /// The platforms the index has.
        available: Vec<String>,
    },

    /// A tar given as a root filesystem is an image archive (docker or OCI).
    #[error("{origin} is an image archive ({marker} at its top), not a root filesystem; load it as an image instead")]
    IsImageArchive {
        /// The archive.
        origin: String,
        /// The entry that gave it away (`manifest.json`, `oci-layout`).
        marker: String,
    },

    /// An archive given to load is neither a docker nor an OCI archive.
    #[error("{origin} is neither a docker archive (manifest.json) nor an OCI layout (oci-layout, index.json)")]
    UnknownArchiveFormat {
        /// The archive.
        origin: String,
    },

    /// A blob the store needs is missing and cannot be made again.
    #[error("blob {digest} of image {image} is missing from the store")]
    BlobMissing {
        /// The blob's digest.
        digest: String,
        /// The image that needs it.
        image: String,
    },

    /// A config change instruction could not be understood.
    #[error("invalid change {change:?}: {reason}")]
    InvalidChange {
        /// The instruction as given.
        change: String,
        /// What is wrong with it.
        reason: String,
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
