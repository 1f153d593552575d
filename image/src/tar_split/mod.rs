//! Tar-split metadata: a layer tar kept as its unpacked files plus
//! everything else of the tar, so that it can be written out again byte
//! for byte without keeping a second copy of its content (docker's
//! tar-split, in a format of our own).
//!
//! While a layer's uncompressed tar stream is extracted, a
//! [`TarSplitRecorder`] sits between the stream and the tar reader: every
//! byte that is not the content of a regular file (headers, PAX and GNU
//! extension records, padding, the end-of-archive blocks and whatever
//! follows them) is kept verbatim, and each regular file's content is kept
//! only as its path in the layer and its length. A file the layer's own
//! tar replaces or deletes later (a duplicate name, a whiteout of an
//! earlier entry) is hard-linked into `replaced/` first, so its content is
//! still there.
//!
//! [`TarSplitReader`] joins them again when the layer is saved, hashing
//! what it gives: a stream whose sha256 is not the layer's diff_id (a file
//! of the unpacked layer was changed) ends in an error, never in a
//! different layer.
//!
//! The metadata file is a zstd stream of records:
//!
//! ```text
//! b'S' <u64 LE length> <bytes>                 bytes of the tar, verbatim
//! b'F' <u64 LE length> <u32 LE n> <n bytes>    content of the file at this
//!                                               path of the layer (or of
//!                                               replaced/<file number>)
//! ```
//!
//! Files are numbered from 0 in the order of their `F` records.

mod rebuild;
mod record;

pub(crate) use rebuild::TarSplitReader;
pub(crate) use record::TarSplitRecorder;

use nix::fcntl::OFlag;

/// The metadata file, next to the layer's `diff/` directory.
pub(crate) const TAR_SPLIT_FILE: &str = "tar-split.zst";
/// Files the layer's tar replaced after writing them, by file number.
pub(crate) const REPLACED_DIR: &str = "replaced";

const SEGMENT: u8 = b'S';
const FILE: u8 = b'F';
/// Verbatim bytes are written out in records of at most this size.
const SEGMENT_LIMIT: usize = 256 << 10;
/// The metadata is mostly tar headers: level 3 shrinks them ~20x at a cost
/// that does not show next to hashing the layer.
const ZSTD_LEVEL: i32 = 3;

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);
