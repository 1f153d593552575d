//! A layer tar made again from its unpacked files and tar-split metadata.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use sha2::{Digest as _, Sha256};

use super::{DIR_FLAGS, FILE, REPLACED_DIR, SEGMENT, TAR_SPLIT_FILE};
use crate::digest::hex_of;
use crate::ImageError;

/// What the reader is in the middle of.
enum Part {
    /// Between records.
    Next,
    /// Verbatim bytes, this many still to come from the metadata.
    Segment(u64),
    /// A file's content, this many bytes still to come from it.
    File {
        file: File,
        path: PathBuf,
        remaining: u64,
    },
    /// The end was reached and the digest checked.
    Done,
}

/// The layer tar made again from a layer directory and its tar-split
/// metadata, checked against the layer's diff_id as it is read.
pub(crate) struct TarSplitReader {
    records: zstd::stream::read::Decoder<'static, BufReader<File>>,
    metadata: PathBuf,
    layer: PathBuf,
    /// The layer's `diff/`, opened without following links.
    root: OwnedFd,
    replaced: PathBuf,
    /// The layer's directory, which has `diff/` and `replaced/`.
    layer_dir: OwnedFd,
    /// The directory of the last file read, relative to `root` (`None`
    /// for `root` itself).
    last_dir: Option<(Vec<u8>, Option<OwnedFd>)>,
    /// Numbers of the files found in `replaced/`.
    replaced_files: HashSet<u64>,
    files: u64,
    part: Part,
    hasher: BackgroundHasher,
    diff_id: String,
}

/// Bytes handed to the hashing thread at a time.
const HASH_CHUNK: usize = 1 << 20;

/// sha256 on another thread: the caller's reads and writes (the save) and
/// the hashing run side by side instead of one after the other.
struct BackgroundHasher {
    /// Bytes not handed over yet.
    pending: Vec<u8>,
    /// Full chunks go out here; emptied ones come back on `recycled`.
    chunks: Option<mpsc::SyncSender<Vec<u8>>>,
    recycled: mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<String>>,
}

impl BackgroundHasher {
    fn new() -> Self {
        let (chunks, incoming) = mpsc::sync_channel::<Vec<u8>>(2);
        let (give_back, recycled) = mpsc::channel::<Vec<u8>>();
        let thread = std::thread::spawn(move || {
            let mut hasher = Sha256::new();
            for mut chunk in incoming {
                hasher.update(&chunk);
                chunk.clear();
                // The reader may be gone already.
                let _ = give_back.send(chunk);
            }
            hex_of(hasher)
        });
        BackgroundHasher {
            pending: Vec::with_capacity(HASH_CHUNK),
            chunks: Some(chunks),
            recycled,
            thread: Some(thread),
        }
    }

    fn update(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= HASH_CHUNK {
            let next = self
                .recycled
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(HASH_CHUNK));
            let full = std::mem::replace(&mut self.pending, next);
            self.send(full)?;
        }
        Ok(())
    }

    fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        let sent = self.chunks.as_ref().map(|chunks| chunks.send(chunk));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(io::Error::other("the hashing thread ended early")),
        }
    }

    /// The sha256 hex of everything given.
    fn finish(&mut self) -> io::Result<String> {
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            self.send(rest)?;
        }
        // Closing the channel ends the thread's loop.
        self.chunks = None;
        self.thread
            .take()
            .ok_or_else(|| io::Error::other("the layer was hashed already"))?
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))
    }
}

fn corrupt(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("tar-split metadata {} is corrupt: {what}", path.display()),
    )
}

impl TarSplitReader {
    /// Open the layer whose directory (with `diff/` and the metadata file)
    /// is `dir` and whose uncompressed tar has the digest `diff_id`.
    /// `None` when it has no metadata (a layer stored by an older berth,
    /// which kept its blob instead).
    pub(crate) fn open(dir: &Path, diff_id: &str) -> Result<Option<Self>, ImageError> {
        let metadata = dir.join(TAR_SPLIT_FILE);
        let file = match File::open(&metadata) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io("open", &metadata, e)),
        };
        let records = zstd::stream::read::Decoder::new(file)
            .map_err(|e| ImageError::io("read", &metadata, e))?;
        let layer = dir.join("diff");
        let root = nix::fcntl::open(&layer, DIR_FLAGS, Mode::empty())
            .map_err(|e| ImageError::errno("open directory", &layer, e))?;
        let replaced = dir.join(REPLACED_DIR);
        let layer_dir = nix::fcntl::open(dir, DIR_FLAGS, Mode::empty())
            .map_err(|e| ImageError::errno("open directory", dir, e))?;
        let mut replaced_files = HashSet::new();
        match fs::read_dir(&replaced) {
            Ok(entries) => {
                for entry in entries {
                    let entry =
                        entry.map_err(|e| ImageError::io("read directory", &replaced, e))?;
                    if let Some(number) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                        replaced_files.insert(number);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("read directory", &replaced, e)),
        }
        Ok(Some(TarSplitReader {
            records,
            metadata,
            layer,
            root,
            replaced,
            layer_dir,
            last_dir: None,
            replaced_files,
            files: 0,
            part: Part::Next,
            hasher: BackgroundHasher::new(),
            diff_id: diff_id.to_owned(),
        }))
    }

    /// Read the next record's header; `false` at the end of the metadata.
    fn next_record(&mut self) -> io::Result<bool> {
        let mut tag = [0u8; 1];
        loop {
            match self.records.read(&mut tag) {
                Ok(0) => return Ok(false),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut length = [0u8; 8];
        self.records
            .read_exact(&mut length)
            .map_err(|_| corrupt(&self.metadata, "a record is cut short"))?;
        let length = u64::from_le_bytes(length);
        match tag[0] {
            SEGMENT => self.part = Part::Segment(length),
            FILE => {
                let mut n = [0u8; 4];
                self.records
                    .read_exact(&mut n)
                    .map_err(|_| corrupt(&self.metadata, "a record is cut short"))?;
                let n = u32::from_le_bytes(n) as usize;
                if n > 1 << 20 {
                    return Err(corrupt(&self.metadata, "a path is too long"));
                }
                let mut path = vec![0u8; n];
                self.records
                    .read_exact(&mut path)
                    .map_err(|_| corrupt(&self.metadata, "a record is cut short"))?;
                let number = self.files;
                self.files += 1;
                let (file, path) = if self.replaced_files.contains(&number) {
                    let name = number.to_string();
                    let full = self.replaced.join(&name);
                    let dir = open_dir(&self.layer_dir, REPLACED_DIR.as_bytes(), &full)?;
                    let dir = dir.as_ref().unwrap_or(&self.layer_dir);
                    (open_regular(dir, name.as_bytes(), &full)?, full)
                } else {
                    let full = self.layer.join(OsStr::from_bytes(&path));
                    let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
                        Some(at) => (&path[..at], &path[at + 1..]),
                        None => (&path[..0], &path[..]),
                    };
                    // Files of one directory mostly follow one another:
                    // its descriptor is kept from one to the next.
                    let cached = matches!(&self.last_dir, Some((rel, _)) if rel == parent);
                    if !cached {
                        self.last_dir =
                            Some((parent.to_vec(), open_dir(&self.root, parent, &full)?));
                    }
                    let dir = match &self.last_dir {
                        Some((_, Some(fd))) => fd,
                        _ => &self.root,
                    };
                    (open_regular(dir, name, &full)?, full)
                };
                self.part = Part::File {
                    file,
                    path,
                    remaining: length,
                };
            }
            _ => return Err(corrupt(&self.metadata, "unknown record")),
        }
        Ok(true)
    }

    fn check_digest(&mut self) -> io::Result<()> {
        let actual = format!("sha256:{}", self.hasher.finish()?);
        if actual != self.diff_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the unpacked layer {} no longer gives its layer tar {} (it gives {actual}): \
                     a file of it was changed after the image was stored",
                    self.layer.display(),
                    self.diff_id
                ),
            ));
        }
        Ok(())
    }
}

/// A file of a stored layer is not what was stored.
fn changed(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} {what}: the layer was changed after the image was stored",
            path.display()
        ),
    )
}

fn with_path(path: &Path, e: nix::errno::Errno) -> io::Error {
    io::Error::new(
        io::Error::from(e).kind(),
        format!("{}: {}", path.display(), e.desc()),
    )
}

/// Open the directory `rel` below `root` without following any symlink
/// (`path` names the file wanted in it, for errors); `None` for the root
/// itself.
fn open_dir(root: &OwnedFd, rel: &[u8], path: &Path) -> io::Result<Option<OwnedFd>> {
    let mut dir: Option<OwnedFd> = None;
    for comp in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        let comp = OsStr::from_bytes(comp);
        let next = match &dir {
            Some(fd) => openat(fd, comp, DIR_FLAGS, Mode::empty()),
            None => openat(root, comp, DIR_FLAGS, Mode::empty()),
        };
        dir = Some(next.map_err(|e| match e {
            Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR => {
                changed(path, "is missing or below a symlink now")
            }
            e => with_path(path, e),
        })?);
    }
    Ok(dir)
}

/// Open the regular file `name` of the directory `dir` for reading without
/// following a symlink (`path` is the same file, for errors); anything but
/// a regular file is an error.
///
/// Opened for reading straight away, without the `O_PATH` step
/// [`crate::write_layer_tar`] takes for trees a container can change: a
/// stored layer is in the store's private (0700) directory and only ever an
/// overlay lowerdir, which no container writes to; a fifo or device there
/// could only have been put by root, and `O_NONBLOCK` keeps even that from
/// blocking. That step was most of the time of saving a layer of many
/// small files.
fn open_regular(dir: &OwnedFd, name: &[u8], path: &Path) -> io::Result<File> {
    if name.is_empty() || name.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a file of the layer", path.display()),
        ));
    }
    let fd = openat(
        dir,
        OsStr::from_bytes(name),
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT => changed(path, "is missing"),
        Errno::ELOOP => changed(path, "is a symlink now"),
        e => with_path(path, e),
    })?;
    let st = fstat(&fd).map_err(|e| with_path(path, e))?;
    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
        return Err(changed(path, "is no longer a regular file"));
    }
    Ok(File::from(fd))
}

impl Read for TarSplitReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = match &mut self.part {
                Part::Done => return Ok(0),
                Part::Next => {
                    if !self.next_record()? {
                        self.part = Part::Done;
                        self.check_digest()?;
                        return Ok(0);
                    }
                    continue;
                }
                Part::Segment(0) => {
                    self.part = Part::Next;
                    continue;
                }
                Part::Segment(remaining) => {
                    let want = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    let n = self.records.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(corrupt(&self.metadata, "a record is cut short"));
                    }
                    *remaining -= n as u64;
                    n
                }
                Part::File { remaining: 0, .. } => {
                    self.part = Part::Next;
                    continue;
                }
                Part::File {
                    file,
                    path,
                    remaining,
                } => {
                    let want = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    let n = file.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(changed(path, "is shorter than it was"));
                    }
                    *remaining -= n as u64;
                    n
                }
            };
            self.hasher.update(&buf[..n])?;
            return Ok(n);
        }
    }
}
