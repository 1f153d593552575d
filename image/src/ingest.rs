//! Bringing images into the store: from an [`ImageSource`] (a registry, an
//! archive), from a plain root filesystem tar, from a container's upper
//! directory (commit), and the default busybox image.
//!
//! Every layer goes through one pass: the blob is hashed, decompressed (by
//! content), the uncompressed stream is hashed too (its `diff_id`) and
//! extracted into a temp directory at the same time. A compressed blob is
//! written to a temp file as it is read; of an uncompressed one only the
//! tar-split metadata is written (see [`crate::tar_split`]): the unpacked
//! files are the rest of it. Only when both digests and the size match does
//! anything get renamed into the store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use oci_spec::image::{
    Config, Descriptor, HistoryBuilder, ImageConfiguration, ImageManifest, MediaType, RootFs,
};
use sha2::{Digest as _, Sha256};

use crate::busybox::{find_static_busybox, write_busybox_tar};
use crate::compression::{decompressed, Compression};
use crate::digest::{check_size, hex_of, read_verified, sha256_hex, sha256_hex_of};
use crate::extract::{extract_tar, remove_tree, ExtractOptions, Whiteouts};
use crate::pipe::pipe_through;
use crate::store::{fsync_dir, link_name, now, unique_suffix, ImageRecord, LayerRecord};
use crate::tar_split::TarSplitRecorder;
use crate::{write_diff_tar_as, Image, ImageError, ImageId, ImageSource, ImageStore, Reference};

/// The largest manifest accepted (containerd's bound).
pub(crate) const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// The largest image config accepted.
pub(crate) const MAX_CONFIG_SIZE: u64 = 8 << 20;
/// The largest layer blob accepted.
pub(crate) const MAX_LAYER_SIZE: u64 = 64 << 30;
/// overlayfs stacks at most 500 lower layers.
pub(crate) const MAX_LAYERS: usize = 500;
/// Layers read at the same time. More than the cores: a layer is one
/// worker's from start to end, so with fewer workers than layers the last
/// ones run alone on an otherwise idle machine (5 layers on 4 workers and
/// 2 cores: the fifth took a fifth of the load's time by itself).
const PARALLEL_LAYERS: usize = 8;
/// Progress is reported every this many bytes of a layer.
const PROGRESS_STEP: u64 = 1 << 20;

/// What [`ImageStore::add_image`] reports while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A layer is already in the store and is shared.
    LayerExists {
        /// The layer blob's digest.
        digest: String,
    },
    /// Bytes of a layer blob read so far.
    LayerBytes {
        /// The layer blob's digest.
        digest: String,
        /// Bytes read.
        done: u64,
        /// Bytes declared.
        total: u64,
    },
    /// A layer was read, verified and extracted.
    LayerDone {
        /// The layer blob's digest.
        digest: String,
    },
}

/// Which stream of a layer is its blob (what a manifest names).
///
/// An uncompressed blob is never stored as a copy: the layer's unpacked
/// files plus its tar-split metadata give it back byte for byte (see
/// [`crate::tar_split`]). A compressed blob as received is stored: no
/// compressor gives the same bytes again, and its digest is part of the
/// image's manifest digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeepBlob {
    /// The bytes as received (possibly compressed): a pulled layer keeps
    /// its digest.
    AsReceived,
    /// The uncompressed tar: imported root filesystems and generated
    /// layers, whose digest is then their diff_id.
    Uncompressed,
}

/// What a layer must hash to, when known in advance.
#[derive(Debug, Clone, Copy, Default)]
struct Expected<'a> {
    /// The blob's digest and size.
    blob: Option<(&'a str, u64)>,
    /// The uncompressed tar's digest.
    diff_id: Option<&'a str>,
}

/// How one layer is to be read.
struct StageJob<'a> {
    expected: Expected<'a>,
    keep: KeepBlob,
    /// The source's description, for errors.
    origin: &'a str,
    /// Set when another layer failed: stop early.
    cancel: &'a AtomicBool,
    /// Called with the blob bytes read so far.
    on_bytes: &'a dyn Fn(u64),
    options: ExtractOptions,
}

/// What one pass over the uncompressed stream gave.
struct Unpacked {
    /// Bytes of regular file content.
    size: u64,
    /// `None` when the stream was not compressed: the blob's digest.
    diff_hex: Option<String>,
    diff_size: u64,
}

/// A layer extracted and verified in `tmp/`, not yet in the store.
#[derive(Debug)]
struct StagedLayer {
    /// The temp directory: `diff/`, and `blob` (a compressed blob as
    /// received) or the tar-split metadata inside.
    tmp: PathBuf,
    /// Whether `blob` is there.
    has_blob: bool,
    blob_hex: String,
    blob_size: u64,
    diff_hex: String,
    diff_size: u64,
    size: u64,
}

impl StagedLayer {
    fn blob_path(&self) -> PathBuf {
        self.tmp.join("blob")
    }
}

/// A reader that writes what passes through to a file (optionally) while
/// hashing and counting it, stops after `limit` bytes, and gives up when
/// `cancel` is set.
struct Tee<'a, R> {
    inner: R,
    file: Option<BufWriter<File>>,
    /// `None` when another reader hashes the same bytes already.
    hasher: Option<Sha256>,
    count: u64,
    /// Read at most this many bytes (one past the declared size, to notice
    /// a blob that is too long).
    limit: u64,
    eof: bool,
    cancel: &'a AtomicBool,
    on_bytes: &'a dyn Fn(u64),
    reported: u64,
    /// An error writing the file, kept apart from read errors.
    write_error: Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            // Not ErrorKind::Interrupted: readers above retry on that.
            return Err(io::Error::other("stopped: another layer failed"));
        }
        let room = usize::try_from(self.limit - self.count.min(self.limit)).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        if want == 0 {
            return Ok(0);
        }
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            self.eof = true;
            return Ok(0);
        }
        if let Some(file) = &mut self.file {
            if let Err(e) = file.write_all(&buf[..n]) {
                let kind = e.kind();
                self.write_error = Some(e);
                return Err(io::Error::new(kind, "writing the blob failed"));
            }
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.count += n as u64;
        if self.count - self.reported >= PROGRESS_STEP {
            self.reported = self.count;
            (self.on_bytes)(self.count);
        }
        Ok(n)
    }
}

pub(crate) fn create_file(path: &Path) -> Result<File, ImageError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| ImageError::io("create", path, e))
}

fn finish_file(file: Option<BufWriter<File>>, path: &Path) -> Result<(), ImageError> {
    if let Some(file) = file {
        // Made durable with everything staged by one syncfs.
        file.into_inner()
            .map_err(|e| ImageError::io("write", path, e.into_error()))?;
    }
    Ok(())
}

/// The RFC 3339 form of the current time, as image configs carry it.
fn created_now() -> String {
    berth_state::Timestamp::now().to_string()
}

/// The host's architecture in GOARCH terms, as image configs name it.
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// How an image made in the store (import, commit, busybox) is described.
pub(crate) struct NewImage {
    pub(crate) config: Option<Config>,
    pub(crate) created: String,
    pub(crate) author: Option<String>,
    pub(crate) comment: Option<String>,
    pub(crate) created_by: Option<String>,
}

/// How [`ImageStore::commit`] describes the new image.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// The new image's run config; the base image's when `None`.
    pub config: Option<Config>,
    /// The author (`docker commit -a`).
    pub author: Option<String>,
    /// The history comment (`docker commit -m`).
    pub comment: Option<String>,
    /// What made the layer, for the history (e.g. the container's command).
    pub created_by: Option<String>,
    /// The reference to tag the new image with.
    pub tag: Option<Reference>,
    /// The container's user namespace, whose host ids the write layer's
    /// files are owned by (`None`: the host's).
    pub owners: Option<berth_state::IdMaps>,
}

impl ImageStore {
    /// Extract and verify one layer read from `raw` into a new `tmp/`
    /// directory. On error nothing is left.
    fn stage_layer(
        &self,
        raw: &mut dyn Read,
        job: &StageJob<'_>,
    ) -> Result<StagedLayer, ImageError> {
        let tmp = self.new_tmp()?;
        let result = self.stage_into(&tmp, raw, job);
        if result.is_err() {
            let _ = remove_tree(&tmp);
        }
        result
    }

    fn stage_into(
        &self,
        tmp: &Path,
        raw: &mut dyn Read,
        job: &StageJob<'_>,
    ) -> Result<StagedLayer, ImageError> {
        let StageJob {
            expected,
            keep,
            origin,
            cancel,
            on_bytes,
            options,
        } = *job;
        let blob_path = tmp.join("blob");
        let what_digest = expected.blob.map_or("<new layer>", |(d, _)| d).to_owned();
        let archive_err = |source: io::Error| ImageError::Archive {
            origin: format!("{origin}: layer {what_digest}"),
            source,
        };
        // Large reads from the source whatever size the tar reader asks.
        let mut raw = io::BufReader::with_capacity(1 << 20, raw);
        // Whether the blob is compressed decides what is kept, before a
        // byte of it is consumed.
        let mut head = [0u8; 6];
        let head_len = crate::compression::read_head(&mut raw, &mut head).map_err(archive_err)?;
        let compressed = Compression::detect(&head[..head_len]) != Compression::None;
        let keep_blob = keep == KeepBlob::AsReceived && compressed;
        let raw_file = if keep_blob {
            Some(BufWriter::with_capacity(
                256 << 10,
                create_file(&blob_path)?,
            ))
        } else {
            None
        };
        let diff_dir = tmp.join("diff");
        let split = if keep_blob {
            None
        } else {
            Some(TarSplitRecorder::create(tmp, &diff_dir)?)
        };
        let mut raw_tee = Tee {
            inner: io::Cursor::new(head[..head_len].to_vec()).chain(raw),
            file: raw_file,
            hasher: Some(Sha256::new()),
            count: 0,
            limit: expected
                .blob
                .map_or(u64::MAX, |(_, size)| size.saturating_add(1)),
            eof: false,
            cancel,
            on_bytes,
            reported: 0,
            write_error: None,
        };
        let no_progress = |_| {};
        let extracted = (|| -> Result<Unpacked, ImageError> {
            let (compression, stream) = decompressed(&mut raw_tee).map_err(archive_err)?;
            let mut diff_tee = Tee {
                inner: stream,
                file: None,
                // Uncompressed, both streams are the same bytes: hash once.
                hasher: (compression != Compression::None).then(Sha256::new),
                count: 0,
                limit: u64::MAX,
                eof: false,
                cancel,
                on_bytes: &no_progress,
                reported: 0,
                write_error: None,
            };
            let size = match &split {
                Some(split) => {
                    let mut recording = split.reader(&mut diff_tee);
                    let extracted =
                        extract_tar(&mut recording, &diff_dir, origin, options, Some(split));
                    // The rest of the uncompressed stream (tar padding,
                    // trailer) is part of the layer tar too.
                    let drained = extracted.and_then(|size| {
                        io::copy(&mut recording, &mut io::sink())
                            .map(|_| size)
                            .map_err(archive_err)
                    });
                    match (drained, split.take_error()) {
                        (_, Some(e)) => return Err(e),
                        (result, None) => result?,
                    }
                }
                None => {
                    let size = extract_tar(&mut diff_tee, &diff_dir, origin, options, None)?;
                    // The rest of the uncompressed stream (tar padding, trailer).
                    io::copy(&mut diff_tee, &mut io::sink()).map_err(archive_err)?;
                    size
                }
            };
            let diff_size = diff_tee.count;
            let diff_hex = diff_tee.hasher.map(hex_of);
            Ok(Unpacked {
                size,
                diff_hex,
                diff_size,
            })
        })();
        if let Some(e) = raw_tee.write_error.take() {
            return Err(ImageError::io("write", &blob_path, e));
        }
        if cancel.load(Ordering::Relaxed) {
            if let Err(e) = extracted {
                return Err(e);
            }
        }
        // Whatever follows in the blob counts for its digest and size; when
        // extraction failed, a wrong digest or size is the better error.
        let drained = io::copy(&mut raw_tee, &mut io::sink());
        let blob_size = raw_tee.count;
        let raw_file = raw_tee.file.take();
        let blob_hex = raw_tee.hasher.take().map(hex_of).unwrap_or_default();
        if let Some((digest, size)) = expected.blob {
            if blob_size != size && (raw_tee.eof || blob_size > size) {
                return Err(ImageError::SizeMismatch {
                    what: "layer",
                    digest: digest.to_owned(),
                    origin: origin.to_owned(),
                    expected: size,
                    actual: blob_size,
                });
            }
            if drained.is_ok() && format!("sha256:{blob_hex}") != digest {
                return Err(ImageError::DigestMismatch {
                    what: "layer",
                    origin: origin.to_owned(),
                    expected: digest.to_owned(),
                    actual: format!("sha256:{blob_hex}"),
                });
            }
        }
        let Unpacked {
            size,
            diff_hex,
            diff_size,
        } = extracted?;
        let diff_hex = diff_hex.unwrap_or_else(|| blob_hex.clone());
        drained.map_err(archive_err)?;
        if diff_size == 0 {
            return Err(archive_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "empty layer stream",
            )));
        }
        if let Some(diff_id) = expected.diff_id {
            if format!("sha256:{diff_hex}") != diff_id {
                return Err(ImageError::DigestMismatch {
                    what: "uncompressed layer",
                    origin: origin.to_owned(),
                    expected: diff_id.to_owned(),
                    actual: format!("sha256:{diff_hex}"),
                });
            }
        }
        finish_file(raw_file, &blob_path)?;
        if let Some(split) = &split {
            split.finish()?;
        }
        let (blob_hex, blob_size) = match keep {
            KeepBlob::AsReceived => (blob_hex, blob_size),
            KeepBlob::Uncompressed => (diff_hex.clone(), diff_size),
        };
        Ok(StagedLayer {
            tmp: tmp.to_owned(),
            has_blob: keep_blob,
            blob_hex,
            blob_size,
            diff_hex,
            diff_size,
            size,
        })
    }

    /// Write a small blob (manifest, config) to `tmp/` and return its path.
    fn stage_bytes(&self, bytes: &[u8]) -> Result<PathBuf, ImageError> {
        let path = self.tmp_dir().join(unique_suffix());
        let mut file = create_file(&path)?;
        let written = file
            .write_all(bytes)
            .map_err(|e| ImageError::io("write", &path, e));
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(path)
    }

    /// Move a verified temp blob into `blobs/` (dropping it when the store
    /// has it already).
    fn commit_blob(&self, staged: &Path, hex: &str) -> Result<(), ImageError> {
        let target = self.blobs_dir().join(hex);
        if target.exists() {
            let _ = fs::remove_file(staged);
            return Ok(());
        }
        fs::rename(staged, &target).map_err(|e| ImageError::io("rename", staged, e))
    }

    /// Write the record of a staged layer into its directory (before the
    /// lock is taken: the record is in place when the directory appears).
    fn prepare_layer(
        &self,
        staged: &StagedLayer,
        chain_id: &str,
        parent: Option<&str>,
        media_type: &str,
    ) -> Result<LayerRecord, ImageError> {
        let chain_hex = sha256_hex_of(chain_id, "the store")?;
        let record = LayerRecord {
            chain_id: chain_id.to_owned(),
            diff_id: format!("sha256:{}", staged.diff_hex),
            parent: parent.map(str::to_owned),
            blob_digest: format!("sha256:{}", staged.blob_hex),
            blob_size: staged.blob_size,
            blob_media_type: media_type.to_owned(),
            diff_size: staged.diff_size,
            size: staged.size,
            link: link_name(chain_hex),
        };
        let path = staged.tmp.join("layer.json");
        let bytes = crate::store::to_json(&record, &path)?;
        // Made durable with everything staged by one syncfs.
        berth_state::replace_file(&path, &bytes, berth_state::Durability::Volatile)
            .map_err(|e| ImageError::io("write", &path, e))?;
        Ok(record)
    }

    /// Everything written below `tmp/` reaches the disk before any of it
    /// is renamed into the store: one syncfs rather than an fsync per file.
    fn sync_staged(&self) -> Result<(), ImageError> {
        let tmp = self.tmp_dir();
        let dir = File::open(&tmp).map_err(|e| ImageError::io("open", &tmp, e))?;
        nix::unistd::syncfs(&dir).map_err(|e| ImageError::errno("syncfs", &tmp, e))
    }

    /// Under the lock: move a staged, synced layer with its record into
    /// `layers/` (or drop it when the layer is there already), with its
    /// blob and link.
    fn commit_layer(
        &self,
        staged: &StagedLayer,
        record: &LayerRecord,
    ) -> Result<LayerRecord, ImageError> {
        let chain_hex = sha256_hex_of(&record.chain_id, "the store")?.to_owned();
        if staged.has_blob {
            self.commit_blob(&staged.blob_path(), &staged.blob_hex)?;
        }
        let layer_dir = self.layers_dir().join(&chain_hex);
        if self.has_layer(&record.chain_id)? {
            remove_tree(&staged.tmp)?;
            let existing = self.read_layer_record(&record.chain_id)?;
            self.ensure_link(&existing)?;
            return Ok(existing);
        }
        // Records are in place before the rename, so a directory without
        // one is not a layer of this store: move it out of the way.
        if layer_dir.exists() {
            let trash = self.tmp_dir().join(unique_suffix());
            fs::rename(&layer_dir, &trash).map_err(|e| ImageError::io("rename", &layer_dir, e))?;
            remove_tree(&trash)?;
        }
        fs::rename(&staged.tmp, &layer_dir)
            .map_err(|e| ImageError::io("rename", &staged.tmp, e))?;
        self.ensure_link(record)?;
        Ok(record.clone())
    }

    /// Store the image that `source` provides and point `tags` at it.
    ///
    /// The manifest and config are checked first (sizes bounded, digests
    /// sha256, one `diff_id` per layer, Linux); then the layers the store
    /// does not have yet are read in parallel, each verified (blob digest
    /// and size, `diff_id`) while it is extracted. Layers and blobs already
    /// in the store are shared. Any mismatch is one typed error naming the
    /// digest, and leaves the store as it was. `progress` is called from
    /// this thread only.
    pub fn add_image(
        &self,
        source: &dyn ImageSource,
        tags: &[Reference],
        progress: &dyn Fn(Progress),
    ) -> Result<Image, ImageError> {
        let origin = source.describe();
        let manifest = source.manifest();
        let manifest_bytes = match source.manifest_bytes() {
            Some(bytes) => {
                // The bytes are what is kept; the parsed manifest is what is
                // read. They must say the same.
                let parsed: Result<ImageManifest, _> = serde_json::from_slice(bytes);
                if parsed.as_ref().ok() != Some(manifest) {
                    return Err(ImageError::InvalidImage {
                        origin,
                        reason: "its manifest bytes do not match its manifest".to_owned(),
                    });
                }
                bytes.to_vec()
            }
            None => serde_json::to_vec(manifest).map_err(|e| ImageError::InvalidImage {
                origin: origin.clone(),
                reason: format!("cannot serialize its manifest: {e}"),
            })?,
        };
        if manifest_bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(ImageError::TooLarge {
                what: "manifest",
                digest: format!("sha256:{}", sha256_hex(&manifest_bytes)),
                origin,
                size: manifest_bytes.len() as u64,
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let manifest_digest = format!("sha256:{}", sha256_hex(&manifest_bytes));
        let (config_bytes, config) = read_config(source, manifest, &origin)?;
        let diff_ids = check_image(manifest, &config, &origin)?;
        let chain_ids = chain_ids(&diff_ids);
        let config_hex = sha256_hex_of(manifest.config().digest().as_ref(), &origin)?.to_owned();

        // A concurrent removal may take a layer that was found present;
        // then the layers are looked at again.
        for _ in 0..3 {
            let missing: Vec<usize> = (0..chain_ids.len())
                .filter(|&i| !self.has_layer(&chain_ids[i]).unwrap_or(false))
                .collect();
            for (i, descriptor) in manifest.layers().iter().enumerate() {
                if !missing.contains(&i) {
                    progress(Progress::LayerExists {
                        digest: descriptor.digest().to_string(),
                    });
                }
            }
            let staged =
                self.stage_layers(source, manifest, &diff_ids, &missing, &origin, progress)?;
            let mut small_blobs: Vec<PathBuf> = Vec::new();
            let prepared = (|| -> Result<Vec<LayerRecord>, ImageError> {
                let records = staged
                    .iter()
                    .map(|(i, layer)| {
                        let parent = i.checked_sub(1).map(|p| chain_ids[p].as_str());
                        let media_type = manifest.layers()[*i].media_type().to_string();
                        self.prepare_layer(layer, &chain_ids[*i], parent, &media_type)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                small_blobs.push(self.stage_bytes(&manifest_bytes)?);
                small_blobs.push(self.stage_bytes(&config_bytes)?);
                self.sync_staged()?;
                Ok(records)
            })();
            let records = match prepared {
                Ok(records) => records,
                Err(e) => {
                    for path in small_blobs {
                        let _ = fs::remove_file(path);
                    }
                    for (_, layer) in staged {
                        let _ = remove_tree(&layer.tmp);
                    }
                    return Err(e);
                }
            };
            let (manifest_tmp, config_tmp) = (small_blobs[0].clone(), small_blobs[1].clone());
            let _lock = self.lock()?;
            let gone = (0..chain_ids.len())
                .filter(|i| !missing.contains(i))
                .any(|i| !self.has_layer(&chain_ids[i]).unwrap_or(false));
            if gone {
                for (_, layer) in staged {
                    let _ = remove_tree(&layer.tmp);
                }
                let _ = fs::remove_file(manifest_tmp);
                let _ = fs::remove_file(config_tmp);
                continue;
            }
            for ((_, layer), record) in staged.iter().zip(&records) {
                self.commit_layer(layer, record)?;
            }
            for chain_id in &chain_ids {
                self.ensure_link(&self.read_layer_record(chain_id)?)?;
            }
            self.commit_blob(&manifest_tmp, sha256_hex_of(&manifest_digest, &origin)?)?;
            self.commit_blob(&config_tmp, &config_hex)?;
            fsync_dir(&self.blobs_dir())?;
            fsync_dir(&self.layers_dir())?;
            let id = ImageId::parse(&config_hex).ok_or_else(|| ImageError::InvalidImage {
                origin: origin.clone(),
                reason: "bad config digest".to_owned(),
            })?;
            self.record_image(&id, &manifest_digest, &chain_ids, Vec::new())?;
            self.tag_locked(&id, tags)?;
            drop(_lock);
            return self.get(&id);
        }
        Err(ImageError::InvalidImage {
            origin,
            reason: "its layers kept being removed by another process while it was stored"
                .to_owned(),
        })
    }

    /// Write the image record unless the image is there already (an image
    /// id is its config digest: same id, same image).
    pub(crate) fn record_image(
        &self,
        id: &ImageId,
        manifest_digest: &str,
        chain_ids: &[String],
        previous_ids: Vec<String>,
    ) -> Result<(), ImageError> {
        match self.read_image_record(id) {
            Ok(mut existing) => {
                if previous_ids
                    .iter()
                    .any(|p| !existing.previous_ids.contains(p))
                {
                    existing.previous_ids.extend(previous_ids);
                    existing.previous_ids.sort();
                    existing.previous_ids.dedup();
                    self.write_image_record(&existing)?;
                }
                Ok(())
            }
            Err(ImageError::NotFound { .. }) => self.write_image_record(&ImageRecord {
                id: id.hex().to_owned(),
                manifest_digest: manifest_digest.to_owned(),
                layers: chain_ids.to_vec(),
                added: now(),
                previous_ids,
            }),
            Err(e) => Err(e),
        }
    }

    /// Read and extract the layers at `indices` in parallel threads.
    fn stage_layers(
        &self,
        source: &dyn ImageSource,
        manifest: &ImageManifest,
        diff_ids: &[String],
        indices: &[usize],
        origin: &str,
        progress: &dyn Fn(Progress),
    ) -> Result<Vec<(usize, StagedLayer)>, ImageError> {
        if indices.is_empty() {
            return Ok(Vec::new());
        }
        let cancel = AtomicBool::new(false);
        let next = AtomicUsize::new(0);
        // The layer that failed first: the others stop because of it.
        let first_failure = AtomicUsize::new(usize::MAX);
        let (tx, rx) = mpsc::channel::<(usize, Event)>();
        enum Event {
            Bytes(u64),
            Done(Result<StagedLayer, ImageError>),
        }
        let options = ExtractOptions {
            whiteouts: Whiteouts::Overlay,
            refuse_image_archives: false,
        };
        let mut results: Vec<(usize, Result<StagedLayer, ImageError>)> = Vec::new();
        std::thread::scope(|scope| {
            let workers = indices.len().min(PARALLEL_LAYERS);
            for _ in 0..workers {
                let tx = tx.clone();
                let (cancel, next, first_failure) = (&cancel, &next, &first_failure);
                scope.spawn(move || loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = indices.get(k) else { break };
                    if cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let descriptor = &manifest.layers()[i];
                    let digest = descriptor.digest().to_string();
                    let size = descriptor.size();
                    let txb = tx.clone();
                    let on_bytes = move |n| {
                        let _ = txb.send((i, Event::Bytes(n)));
                    };
                    let result = source.open_blob(descriptor).and_then(|mut raw| {
                        self.stage_layer(
                            &mut raw,
                            &StageJob {
                                expected: Expected {
                                    blob: Some((&digest, size)),
                                    diff_id: Some(&diff_ids[i]),
                                },
                                keep: KeepBlob::AsReceived,
                                origin,
                                cancel,
                                on_bytes: &on_bytes,
                                options,
                            },
                        )
                    });
                    if result.is_err() {
                        let _ = first_failure.compare_exchange(
                            usize::MAX,
                            i,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                        cancel.store(true, Ordering::SeqCst);
                    }
                    let _ = tx.send((i, Event::Done(result)));
                });
            }
            drop(tx);
            for (i, event) in rx {
                let descriptor = &manifest.layers()[i];
                match event {
                    Event::Bytes(done) => progress(Progress::LayerBytes {
                        digest: descriptor.digest().to_string(),
                        done,
                        total: descriptor.size(),
                    }),
                    Event::Done(result) => {
                        if result.is_ok() {
                            progress(Progress::LayerDone {
                                digest: descriptor.digest().to_string(),
                            });
                        }
                        results.push((i, result));
                    }
                }
            }
        });
        let failed = first_failure.load(Ordering::SeqCst);
        let mut error: Option<ImageError> = None;
        let mut staged = Vec::new();
        for (i, result) in results {
            match result {
                Ok(layer) => staged.push((i, layer)),
                Err(e) if i == failed => error = Some(e),
                // Stopped because of the first failure.
                Err(_) => {}
            }
        }
        if error.is_none() && staged.len() < indices.len() {
            error = Some(ImageError::InvalidImage {
                origin: origin.to_owned(),
                reason: "a layer was not read".to_owned(),
            });
        }
        if let Some(error) = error {
            for (_, layer) in staged {
                let _ = remove_tree(&layer.tmp);
            }
            return Err(error);
        }
        Ok(staged)
    }

    /// Store a single-layer image made from a tar stream (a root
    /// filesystem, a generated layer) and tag it.
    pub(crate) fn add_single_layer(
        &self,
        reader: &mut dyn Read,
        origin: &str,
        new: NewImage,
        tags: &[Reference],
        options: ExtractOptions,
    ) -> Result<Image, ImageError> {
        self.add_layer_on(None, reader, origin, new, tags, options)
    }

    /// Store an image of `base`'s layers (none for `None`) plus one layer
    /// read from `reader`, with the config `new` describes.
    fn add_layer_on(
        &self,
        base: Option<&Image>,
        reader: &mut dyn Read,
        origin: &str,
        new: NewImage,
        tags: &[Reference],
        options: ExtractOptions,
    ) -> Result<Image, ImageError> {
        let cancel = AtomicBool::new(false);
        let staged = self.stage_layer(
            reader,
            &StageJob {
                expected: Expected::default(),
                keep: KeepBlob::Uncompressed,
                origin,
                cancel: &cancel,
                on_bytes: &|_| {},
                options,
            },
        )?;
        let result = self.add_staged_on(base, &staged, new, tags, origin);
        let _ = remove_tree(&staged.tmp);
        result
    }

    fn add_staged_on(
        &self,
        base: Option<&Image>,
        staged: &StagedLayer,
        new: NewImage,
        tags: &[Reference],
        origin: &str,
    ) -> Result<Image, ImageError> {
        let diff_id = format!("sha256:{}", staged.diff_hex);
        let (mut config, mut layers) = match base {
            Some(base) => {
                let (manifest, _) = self.read_manifest(base)?;
                (base.config.clone(), manifest.layers().clone())
            }
            None => {
                let mut config = ImageConfiguration::default();
                config.set_architecture(host_architecture().into());
                config.set_os(oci_spec::image::Os::Linux);
                (config, Vec::new())
            }
        };
        let mut diff_ids = config.rootfs().diff_ids().clone();
        diff_ids.push(diff_id.clone());
        let mut rootfs = RootFs::default();
        rootfs.set_diff_ids(diff_ids.clone());
        config.set_rootfs(rootfs);
        if let Some(run) = new.config {
            config.set_config(Some(run));
        }
        config.set_created(Some(new.created.clone()));
        if new.author.is_some() {
            config.set_author(new.author.clone());
        }
        let mut history = config.history().clone().unwrap_or_default();
        let mut entry = HistoryBuilder::default().created(new.created.clone());
        if let Some(author) = &new.author {
            entry = entry.author(author.clone());
        }
        if let Some(comment) = &new.comment {
            entry = entry.comment(comment.clone());
        }
        if let Some(created_by) = &new.created_by {
            entry = entry.created_by(created_by.clone());
        }
        history.push(entry.build().map_err(|e| ImageError::InvalidImage {
            origin: origin.to_owned(),
            reason: e.to_string(),
        })?);
        config.set_history(Some(history));
        let config_bytes = serde_json::to_vec(&config).map_err(|e| ImageError::InvalidImage {
            origin: origin.to_owned(),
            reason: format!("cannot serialize the config: {e}"),
        })?;
        let config_hex = sha256_hex(&config_bytes);
        layers.push(Descriptor::new(
            MediaType::ImageLayer,
            staged.blob_size,
            oci_digest(&staged.blob_hex)?,
        ));
        let manifest = oci_spec::image::ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config_bytes.len() as u64,
                oci_digest(&config_hex)?,
            ))
            .layers(layers)
            .build()
            .map_err(|e| ImageError::InvalidImage {
                origin: origin.to_owned(),
                reason: e.to_string(),
            })?;
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| ImageError::InvalidImage {
                origin: origin.to_owned(),
                reason: format!("cannot serialize the manifest: {e}"),
            })?;
        let manifest_hex = sha256_hex(&manifest_bytes);
        let chain_ids = chain_ids(&diff_ids);
        let manifest_tmp = self.stage_bytes(&manifest_bytes)?;
        let parent = chain_ids.len().checked_sub(2).map(|p| chain_ids[p].clone());
        let top = chain_ids.last().cloned().unwrap_or_default();
        let config_tmp = self.stage_bytes(&config_bytes).and_then(|config_tmp| {
            self.prepare_layer(
                staged,
                &top,
                parent.as_deref(),
                MediaType::ImageLayer.as_ref(),
            )
            .and_then(|record| self.sync_staged().map(|()| (config_tmp, record)))
        });
        let (config_tmp, record) = match config_tmp {
            Ok(done) => done,
            Err(e) => {
                let _ = fs::remove_file(&manifest_tmp);
                return Err(e);
            }
        };
        let _lock = self.lock()?;
        if let Some(base) = base {
            // The base must still be whole: its layers are the new image's.
            for layer in &base.layers {
                if !self.has_layer(&layer.chain_id)? {
                    let _ = fs::remove_file(&manifest_tmp);
                    let _ = fs::remove_file(&config_tmp);
                    return Err(ImageError::NotFound {
                        name: base.id.to_string(),
                    });
                }
            }
        }
        self.commit_layer(staged, &record)?;
        self.commit_blob(&manifest_tmp, &manifest_hex)?;
        self.commit_blob(&config_tmp, &config_hex)?;
        fsync_dir(&self.blobs_dir())?;
        fsync_dir(&self.layers_dir())?;
        let id = ImageId::parse(&config_hex).ok_or_else(|| ImageError::InvalidImage {
            origin: origin.to_owned(),
            reason: "bad config digest".to_owned(),
        })?;
        self.record_image(
            &id,
            &format!("sha256:{manifest_hex}"),
            &chain_ids,
            Vec::new(),
        )?;
        self.tag_locked(&id, tags)?;
        drop(_lock);
        self.get(&id)
    }

    /// Import a root filesystem tar file (plain, gzip, zstd or xz, by
    /// content) as a one-layer image with no run config (like `docker
    /// import`), tagged `reference` when given. An image archive (docker
    /// or OCI) is refused with [`ImageError::IsImageArchive`].
    pub fn import(
        &self,
        archive: &Path,
        reference: Option<&Reference>,
    ) -> Result<Image, ImageError> {
        let file = File::open(archive).map_err(|e| ImageError::io("open", archive, e))?;
        self.import_reader(
            &mut io::BufReader::new(file),
            &archive.display().to_string(),
            reference,
            None,
        )
    }

    /// [`ImageStore::import`] from a stream; `origin` names it in errors
    /// and in the history; `config` is the run config to give the image.
    pub fn import_reader(
        &self,
        reader: &mut dyn Read,
        origin: &str,
        reference: Option<&Reference>,
        config: Option<Config>,
    ) -> Result<Image, ImageError> {
        let created = created_now();
        self.add_single_layer(
            reader,
            origin,
            NewImage {
                config,
                created,
                author: None,
                comment: Some(format!("Imported from {origin}")),
                created_by: None,
            },
            reference.map(std::slice::from_ref).unwrap_or_default(),
            ExtractOptions {
                whiteouts: Whiteouts::Overlay,
                refuse_image_archives: true,
            },
        )
    }

    /// Make a new image of `base`'s layers plus one layer holding
    /// `upper` (a container's overlay upper dir: its whiteouts and opaque
    /// directories become `.wh.` entries), with a config derived from the
    /// base's as `options` say, and a history entry.
    ///
    /// The upper dir is archived in-process by descriptor without following
    /// any symlink (see [`crate::write_diff_tar`]) and streamed straight into the
    /// new layer. Works on a live upper dir; freeze the container first for
    /// a consistent snapshot.
    pub fn commit(
        &self,
        base: &Image,
        upper: &Path,
        options: &CommitOptions,
    ) -> Result<Image, ImageError> {
        let origin = format!("<commit of {}>", upper.display());
        let new = NewImage {
            config: options.config.clone(),
            created: created_now(),
            author: options.author.clone(),
            comment: options.comment.clone(),
            created_by: options.created_by.clone(),
        };
        let tags = options.tag.as_slice();
        let extract = ExtractOptions {
            whiteouts: Whiteouts::Overlay,
            refuse_image_archives: false,
        };
        pipe_through(
            |out| write_diff_tar_as(upper, options.owners.as_ref(), out),
            |reader| self.add_layer_on(Some(base), reader, &origin, new, tags, extract),
        )
    }

    /// The image `reference`, built first from the host's static busybox
    /// (see [`write_busybox_tar`]) if the store does not have it. The image
    /// is reproducible: the same busybox binary gives the same image id.
    pub fn ensure_busybox(&self, reference: &Reference) -> Result<Image, ImageError> {
        match self.resolve(&reference.to_string()) {
            Err(ImageError::NotFound { .. }) => {}
            other => return other,
        }
        let busybox = find_static_busybox().ok_or(ImageError::NoStaticBusybox)?;
        let mut tar = Vec::new();
        write_busybox_tar(&busybox, &mut tar)?;
        let created = berth_state::Timestamp::from_unix(crate::busybox::MTIME, 0).to_string();
        let config = oci_spec::image::ConfigBuilder::default()
            .cmd(vec!["sh".to_owned()])
            .env(vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            ])
            .build()
            .map_err(|e| ImageError::InvalidImage {
                origin: "busybox".to_owned(),
                reason: e.to_string(),
            })?;
        self.add_single_layer(
            &mut &tar[..],
            &format!("<busybox image from {}>", busybox.display()),
            NewImage {
                config: Some(config),
                created,
                author: None,
                comment: Some("static busybox of the host".to_owned()),
                created_by: None,
            },
            std::slice::from_ref(reference),
            ExtractOptions {
                whiteouts: Whiteouts::Overlay,
                refuse_image_archives: false,
            },
        )
    }
}

pub(crate) fn oci_digest(hex: &str) -> Result<oci_spec::image::Digest, ImageError> {
    format!("sha256:{hex}")
        .parse()
        .map_err(|e: oci_spec::OciSpecError| ImageError::InvalidImage {
            origin: "the store".to_owned(),
            reason: e.to_string(),
        })
}

/// The chain ids of a stack of layers: the first layer's is its diff_id,
/// each next one is `sha256(parent chain id + " " + diff_id)`.
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => format!(
                "sha256:{}",
                sha256_hex(format!("{parent} {diff_id}").as_bytes())
            ),
        };
        chain.push(next);
    }
    chain
}

/// Read, verify and parse the config blob the manifest names.
fn read_config(
    source: &dyn ImageSource,
    manifest: &ImageManifest,
    origin: &str,
) -> Result<(Vec<u8>, ImageConfiguration), ImageError> {
    let descriptor = manifest.config();
    let digest = descriptor.digest().to_string();
    sha256_hex_of(&digest, origin)?;
    check_size(
        "config",
        &digest,
        descriptor.size(),
        MAX_CONFIG_SIZE,
        origin,
    )?;
    let reader = source.open_blob(descriptor)?;
    let bytes = read_verified(
        reader,
        "config",
        &digest,
        descriptor.size(),
        MAX_CONFIG_SIZE,
        origin,
    )?;
    let config = serde_json::from_slice(&bytes).map_err(|e| ImageError::InvalidImage {
        origin: origin.to_owned(),
        reason: format!("config {digest}: {e}"),
    })?;
    Ok((bytes, config))
}

/// Check that manifest and config describe one Linux image whose layers
/// the store can take; returns the diff_ids.
fn check_image(
    manifest: &ImageManifest,
    config: &ImageConfiguration,
    origin: &str,
) -> Result<Vec<String>, ImageError> {
    let invalid = |reason: String| ImageError::InvalidImage {
        origin: origin.to_owned(),
        reason,
    };
    let config_type = manifest.config().media_type().to_string();
    if !matches!(
        config_type.as_str(),
        "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json"
    ) {
        return Err(invalid(format!(
            "its config has media type {config_type:?}, not an image config"
        )));
    }
    if config.os() != &oci_spec::image::Os::Linux {
        return Err(invalid(format!(
            "it is an image for {}, not linux",
            config.os()
        )));
    }
    let layers = manifest.layers();
    if layers.len() > MAX_LAYERS {
        return Err(invalid(format!(
            "{} layers, more than the {MAX_LAYERS} overlayfs can stack",
            layers.len()
        )));
    }
    let diff_ids = config.rootfs().diff_ids();
    if config.rootfs().typ() != "layers" {
        return Err(invalid(format!(
            "rootfs type {:?} is not \"layers\"",
            config.rootfs().typ()
        )));
    }
    if diff_ids.len() != layers.len() {
        return Err(invalid(format!(
            "its manifest has {} layers but its config {} diff_ids",
            layers.len(),
            diff_ids.len()
        )));
    }
    for diff_id in diff_ids {
        sha256_hex_of(diff_id, origin)?;
    }
    for layer in layers {
        let digest = layer.digest().to_string();
        sha256_hex_of(&digest, origin)?;
        check_size("layer", &digest, layer.size(), MAX_LAYER_SIZE, origin)?;
        let media_type = layer.media_type().to_string();
        if !media_type.contains("tar") {
            return Err(invalid(format!(
                "layer {digest} has media type {media_type:?}, not a layer tar"
            )));
        }
    }
    Ok(diff_ids.clone())
}
