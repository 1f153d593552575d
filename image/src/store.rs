//! The on-disk image store.
//!
//! Layout below the root (every directory 0700, every file 0600):
//!
//! ```text
//! .lock                    flock(2)ed while layers or names change
//! tmp/<pid>-<nanos>-<n>/   imports in progress and layers being deleted
//! layers/<id>/rootfs/      the read-only layer (overlay lowerdir)
//! layers/<id>/layer.json   {"id", "size"}
//! names/<name>.json        {"name", "id", "size", "created", "config"}
//! ```
//!
//! A layer appears by renaming a fully extracted `tmp/` directory into
//! `layers/`; names are written to a temp file, fsynced and renamed. Layers
//! are shared by names with the same content and deleted with the last name.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::archive::{write_layer_tar, write_merged_tar};
use crate::busybox::{find_static_busybox, write_busybox_tar};
use crate::extract::{extract_archive, remove_tree};
use crate::{validate_image_name, ImageError};

/// How a container of an image is run unless the user says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// Default command; empty for imported archives (like `docker import`).
    pub cmd: Vec<String>,
    /// Default environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Default working directory inside the container.
    pub workdir: Option<String>,
}

impl ImageConfig {
    /// The config of the default busybox image: `sh` with a standard `PATH`.
    pub fn busybox() -> Self {
        ImageConfig {
            cmd: vec!["sh".to_owned()],
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            ],
            workdir: None,
        }
    }
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Its name, e.g. `busybox` or `app:1.0`.
    pub name: String,
    /// 64 hex digits: sha256 of the (decompressed) tar archive.
    pub id: String,
    /// The read-only layer directory, to be used as overlay lowerdir.
    pub rootfs: PathBuf,
    /// Bytes of regular file content in the layer.
    pub size: u64,
    /// When the name was imported, in unix seconds.
    pub created: u64,
    /// Default command, environment and working directory.
    pub config: ImageConfig,
}

/// What `names/<name>.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct NameRecord {
    name: String,
    id: String,
    size: u64,
    created: u64,
    #[serde(default)]
    config: ImageConfig,
}

#[derive(Debug, Serialize, Deserialize)]
struct LayerRecord {
    id: String,
    size: u64,
}

/// A directory of images: layers plus a name index.
///
/// Safe to use from several threads and processes at once: changes to the
/// index and to layers are made under an exclusive `flock` of `<root>/.lock`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{:x}-{}",
        std::process::id(),
        nanos,
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mkdir_private(path: &Path) -> Result<(), ImageError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| ImageError::io("create directory", path, e))
}

fn fsync_dir(path: &Path) -> Result<(), ImageError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| ImageError::io("fsync directory", path, e))
}

/// Write `bytes` to `path` atomically: temp file, fsync, rename, fsync dir.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    berth_state::replace_file(path, bytes, berth_state::Durability::Full)
        .map_err(|e| ImageError::io("write", path, e))
}

fn to_json(value: &impl Serialize, path: &Path) -> Result<Vec<u8>, ImageError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| ImageError::Metadata {
        path: path.to_owned(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Bytes per message between `commit`'s archive writer and its import.
const CHUNK: usize = 256 * 1024;
/// Messages in flight: bounds `commit`'s memory to a few MiB.
const PIPE_CHUNKS: usize = 8;

enum Chunk {
    Data(Vec<u8>),
    /// The archive was written completely.
    End,
}

/// The writing end of an in-process pipe. A channel rather than pipe(2):
/// no descriptors, and no SIGPIPE when the reading side gives up.
struct ChunkWriter {
    tx: SyncSender<Chunk>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(Chunk::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the import stopped reading"))
    }

    /// Flush and mark the end: only then does the reader see end of file.
    fn end(mut self) -> Result<(), ImageError> {
        let archive_err = |source: io::Error| ImageError::Archive {
            origin: "<commit>".to_owned(),
            source,
        };
        self.send().map_err(archive_err)?;
        self.tx.send(Chunk::End).map_err(|_| {
            archive_err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the import stopped reading",
            ))
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The reading end: end of file only after [`Chunk::End`], an error if the
/// writer went away without it (so a failed archive is never imported as a
/// truncated one).
struct ChunkReader {
    rx: Receiver<Chunk>,
    chunk: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Chunk::Data(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Chunk::End) => self.ended = true,
                Err(_) => {
                    return Err(io::Error::other(
                        "writing the archive of the container's layers failed",
                    ))
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Whether a process with this id still exists.
fn pid_alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

impl ImageStore {
    /// Open the store rooted at `root` (e.g. `/var/lib/berth/images`),
    /// creating it with mode 0700 if missing. Leftovers of imports whose
    /// process died are removed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let store = ImageStore { root: root.into() };
        for dir in [
            store.root.clone(),
            store.tmp_dir(),
            store.layers_dir(),
            store.names_dir(),
        ] {
            mkdir_private(&dir)?;
        }
        store.remove_stale_tmp();
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn names_dir(&self) -> PathBuf {
        self.root.join("names")
    }

    fn name_path(&self, name: &str) -> PathBuf {
        self.names_dir().join(format!("{name}.json"))
    }

    fn layer_dir(&self, id: &str) -> PathBuf {
        self.layers_dir().join(id)
    }

    /// Best effort: remove `tmp/` entries left by processes that died.
    fn remove_stale_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|pid| pid.parse::<i32>().ok());
            if pid.is_some_and(|pid| pid > 0 && !pid_alive(pid)) {
                let _ = remove_tree(&entry.path());
            }
        }
    }

    fn lock(&self) -> Result<berth_state::FileLock, ImageError> {
        let path = self.root.join(".lock");
        berth_state::FileLock::exclusive(&path).map_err(|e| ImageError::io("lock", &path, e))
    }

    fn new_tmp(&self) -> Result<PathBuf, ImageError> {
        loop {
            let path = self.tmp_dir().join(unique_suffix());
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ImageError::io("create directory", &path, e)),
            }
        }
    }

    /// Import a `.tar` or `.tar.gz` file (gzip is detected by its magic
    /// bytes) as `name`, replacing any image of that name. Imported images
    /// have an empty config (no default command), like `docker import`.
    pub fn import(&self, archive: &Path, name: &str) -> Result<Image, ImageError> {
        validate_image_name(name)?;
        let file = File::open(archive).map_err(|e| ImageError::io("open", archive, e))?;
        self.import_inner(
            io::BufReader::new(file),
            name,
            ImageConfig::default(),
            &archive.display().to_string(),
        )
    }

    /// Import a plain or gzip-compressed tar stream as `name`; see
    /// [`ImageStore::import`].
    pub fn import_reader(&self, reader: impl Read, name: &str) -> Result<Image, ImageError> {
        self.import_reader_with_config(reader, name, ImageConfig::default())
    }

    /// Import a tar stream as `name` with the given config (for `commit`).
    pub fn import_reader_with_config(
        &self,
        reader: impl Read,
        name: &str,
        config: ImageConfig,
    ) -> Result<Image, ImageError> {
        validate_image_name(name)?;
        self.import_inner(reader, name, config, "<stream>")
    }

    fn import_inner(
        &self,
        reader: impl Read,
        name: &str,
        config: ImageConfig,
        origin: &str,
    ) -> Result<Image, ImageError> {
        let tmp = self.new_tmp()?;
        let result = self.import_into(reader, name, config, origin, &tmp);
        // After success the directory was renamed into layers/ (or the
        // layer already existed and this copy is dropped).
        let cleanup = remove_tree(&tmp);
        match (result, cleanup) {
            (Ok(image), _) => Ok(image),
            (Err(error), Ok(())) => Err(error),
            (Err(error), Err(cleanup)) => Err(ImageError::CleanupFailed {
                error: Box::new(error),
                cleanup: Box::new(cleanup),
            }),
        }
    }

    fn import_into(
        &self,
        reader: impl Read,
        name: &str,
        config: ImageConfig,
        origin: &str,
        tmp: &Path,
    ) -> Result<Image, ImageError> {
        let extracted = extract_archive(reader, &tmp.join("rootfs"), origin)?;
        let layer_json = tmp.join("layer.json");
        let layer = LayerRecord {
            id: extracted.sha256.clone(),
            size: extracted.size,
        };
        write_atomic(&layer_json, &to_json(&layer, &layer_json)?)?;
        // Make the layer's files durable before it becomes visible.
        let dir = File::open(tmp).map_err(|e| ImageError::io("open directory", tmp, e))?;
        nix::unistd::syncfs(&dir).map_err(|e| ImageError::errno("syncfs", tmp, e))?;

        let _lock = self.lock()?;
        let layer_dir = self.layer_dir(&layer.id);
        match fs::symlink_metadata(&layer_dir) {
            Ok(_) => {} // Same content already stored: share it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::rename(tmp, &layer_dir).map_err(|e| ImageError::io("rename", tmp, e))?;
                fsync_dir(&self.layers_dir())?;
            }
            Err(e) => return Err(ImageError::io("stat", &layer_dir, e)),
        }
        let previous = match self.read_record(name) {
            Ok(record) => Some(record),
            Err(ImageError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let record = NameRecord {
            name: name.to_owned(),
            id: layer.id,
            size: layer.size,
            created: now(),
            config,
        };
        let path = self.name_path(name);
        let written = to_json(&record, &path).and_then(|bytes| write_atomic(&path, &bytes));
        if let Err(e) = written {
            if previous.is_none() && !self.is_referenced(&record.id)? {
                self.remove_layer(&record.id)?;
            }
            return Err(e);
        }
        if let Some(previous) = previous {
            if previous.id != record.id && !self.is_referenced(&previous.id)? {
                self.remove_layer(&previous.id)?;
            }
        }
        Ok(self.image_of(record))
    }

    fn image_of(&self, record: NameRecord) -> Image {
        Image {
            rootfs: self.layer_dir(&record.id).join("rootfs"),
            name: record.name,
            id: record.id,
            size: record.size,
            created: record.created,
            config: record.config,
        }
    }

    fn read_record(&self, name: &str) -> Result<NameRecord, ImageError> {
        let path = self.name_path(name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound {
                    name: name.to_owned(),
                })
            }
            Err(e) => return Err(ImageError::io("read", &path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Metadata { path, source })
    }

    fn records(&self) -> Result<Vec<NameRecord>, ImageError> {
        let dir = self.names_dir();
        let entries = fs::read_dir(&dir).map_err(|e| ImageError::io("read directory", &dir, e))?;
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::io("read directory", &dir, e))?;
            let file_name = entry.file_name();
            let Some(name) = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|n| validate_image_name(n).is_ok())
            else {
                continue; // temp files and strangers
            };
            match self.read_record(name) {
                Ok(record) => records.push(record),
                // Removed since the directory was read.
                Err(ImageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(records)
    }

    fn is_referenced(&self, id: &str) -> Result<bool, ImageError> {
        Ok(self.records()?.iter().any(|r| r.id == id))
    }

    /// Move the layer out of `layers/` (atomic), then delete it.
    fn remove_layer(&self, id: &str) -> Result<(), ImageError> {
        let layer_dir = self.layer_dir(id);
        let trash = self.tmp_dir().join(unique_suffix());
        match fs::rename(&layer_dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ImageError::io("rename", &layer_dir, e)),
        }
        fsync_dir(&self.layers_dir())?;
        remove_tree(&trash)
    }

    /// The image called `name`, or [`ImageError::NotFound`].
    pub fn get(&self, name: &str) -> Result<Image, ImageError> {
        validate_image_name(name)?;
        self.read_record(name).map(|r| self.image_of(r))
    }

    /// All images, sorted by name.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let mut images: Vec<Image> = self
            .records()?
            .into_iter()
            .map(|r| self.image_of(r))
            .collect();
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    /// Remove the name `name`, and its layer if no other name uses it.
    /// The caller checks first that no container uses the image.
    pub fn remove(&self, name: &str) -> Result<(), ImageError> {
        validate_image_name(name)?;
        let _lock = self.lock()?;
        let record = self.read_record(name)?;
        let path = self.name_path(name);
        fs::remove_file(&path).map_err(|e| ImageError::io("remove", &path, e))?;
        fsync_dir(&self.names_dir())?;
        if !self.is_referenced(&record.id)? {
            self.remove_layer(&record.id)?;
        }
        Ok(())
    }

    /// Make the merged view of overlay `layers` (topmost first:
    /// `[upper, image_rootfs]` of a container) a new image `name` with
    /// `config`, replacing any image of that name.
    ///
    /// The layers are archived with [`write_merged_tar`] (whiteouts and
    /// opaque directories applied, nothing mounted, no symlink followed) in
    /// a thread and streamed straight into the import, so the image gets
    /// its own content-addressed layer and nothing is staged on disk twice.
    /// Works on a live upper dir; freeze the container first for a
    /// consistent snapshot.
    pub fn commit(
        &self,
        layers: &[&Path],
        name: &str,
        config: ImageConfig,
    ) -> Result<Image, ImageError> {
        validate_image_name(name)?;
        let (tx, rx) = mpsc::sync_channel(PIPE_CHUNKS);
        std::thread::scope(|scope| {
            let writer = scope.spawn(move || {
                let mut out = ChunkWriter {
                    tx,
                    buf: Vec::with_capacity(CHUNK),
                };
                write_merged_tar(layers, &mut out).and_then(|()| out.end())
            });
            let reader = ChunkReader {
                rx,
                chunk: Vec::new(),
                pos: 0,
                ended: false,
            };
            // The reader is dropped when the import returns, which stops
            // the writer if the import failed first.
            let imported = self.import_inner(reader, name, config, "<commit>");
            let written = match writer.join() {
                Ok(written) => written,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            match (imported, written) {
                (Ok(image), Ok(())) => Ok(image),
                // The end marker is sent last, after which nothing fails.
                (Ok(_), Err(error)) => Err(error),
                (Err(error), Ok(())) => Err(error),
                // The writer stopped because the import had given up.
                (Err(error), Err(ImageError::Archive { source, .. }))
                    if source.kind() == io::ErrorKind::BrokenPipe =>
                {
                    Err(error)
                }
                // The import failed because the writer did: its error says why.
                (Err(_), Err(error)) => Err(error),
            }
        })
    }

    /// Write the image `name` to `out` as a tar archive (see
    /// [`write_layer_tar`]) that [`ImageStore::import`] reads back. The
    /// config is not included, as with `docker export`.
    pub fn save(&self, name: &str, out: impl Write) -> Result<(), ImageError> {
        let image = self.get(name)?;
        write_layer_tar(&image.rootfs, out)
    }

    /// The image `name`, built first from the host's static busybox (see
    /// [`write_busybox_tar`]) if the store does not have it.
    pub fn ensure_busybox(&self, name: &str) -> Result<Image, ImageError> {
        match self.get(name) {
            Err(ImageError::NotFound { .. }) => {}
            other => return other,
        }
        let busybox = find_static_busybox().ok_or(ImageError::NoStaticBusybox)?;
        let mut tar = Vec::new();
        write_busybox_tar(&busybox, &mut tar)?;
        self.import_inner(
            Cursor::new(tar),
            name,
            ImageConfig::busybox(),
            &format!("<busybox image from {}>", busybox.display()),
        )
    }
}
