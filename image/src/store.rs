//! The on-disk image store: content-addressed blobs, layers unpacked once
//! and shared, images keyed by id, and a tag index.
//!
//! Layout below the root (every directory 0700, every file 0600):
//!
//! ```text
//! .lock                       flock(2)ed while anything below changes
//! tmp/<pid>-<nanos>-<n>       work in progress (blobs being written, layers
//!                             being extracted, trees being deleted)
//! blobs/sha256/<hex>          manifests, configs and compressed layer blobs,
//!                             as received (a store of an older berth also
//!                             has uncompressed ones)
//! layers/<chain-id hex>/diff/ a layer's files: one overlay lowerdir
//! layers/<chain-id hex>/layer.json
//! layers/<chain-id hex>/tar-split.zst
//!                             the rest of an uncompressed layer blob
//!                             (headers, padding): with diff/ it gives the
//!                             blob back, byte for byte
//! layers/<chain-id hex>/replaced/<n>
//!                             files the layer's own tar replaced later
//! l/<short>                   -> ../layers/<chain-id hex>/diff (short lowerdirs)
//! images/<id hex>.json        an image: its manifest and layer chain
//! repositories.json           tags: full reference -> image id
//! ```
//!
//! Everything appears by a rename: a blob is written to `tmp/` while it is
//! hashed and renamed into `blobs/` once its digest and size are right; a
//! layer is extracted into `tmp/` and renamed into `layers/` with its
//! record inside; an image record is written (temp file, fsync, rename)
//! only after all its blobs and layers are in place. So a process killed at
//! any point leaves either nothing or unreferenced content, which
//! [`ImageStore::gc`] removes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::image::{Config, ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::digest::sha256_hex_of;
use crate::extract::remove_tree;
use crate::{ImageError, ImageId, Reference};

/// One layer of an image, unpacked in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:` chain id: the layer and everything below it.
    pub chain_id: String,
    /// `sha256:` digest of the uncompressed layer tar.
    pub diff_id: String,
    /// `sha256:` digest of the layer blob as stored (possibly compressed).
    pub blob_digest: String,
    /// The layer's directory: an overlay lowerdir.
    pub dir: PathBuf,
    /// Its short link below the store root (`l/<name>`), a shorter path to
    /// the same directory for overlay's option string.
    pub link: String,
    /// Bytes of regular file content in the layer.
    pub size: u64,
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// The image's id, the digest of its config.
    pub id: ImageId,
    /// `sha256:` digest of its manifest.
    pub manifest_digest: String,
    /// The image config: how containers of it run, its history.
    pub config: ImageConfiguration,
    /// Its layers, bottom first.
    pub layers: Vec<Layer>,
    /// The references that point at it, sorted.
    pub tags: Vec<Reference>,
    /// When it was stored, in unix seconds.
    pub added: u64,
}

impl Image {
    /// The layer directories as overlay wants its `lowerdir` list: topmost
    /// first.
    pub fn lower_dirs(&self) -> Vec<PathBuf> {
        self.layers.iter().rev().map(|l| l.dir.clone()).collect()
    }

    /// The layers' short links relative to the store root (`l/<name>`),
    /// topmost first: with the store root as working directory these keep
    /// overlay's option string short for images with many layers.
    pub fn lower_links(&self) -> Vec<String> {
        self.layers.iter().rev().map(|l| l.link.clone()).collect()
    }

    /// Bytes of regular file content in all its layers.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// The run config (entrypoint, command, environment, ...); empty when
    /// the image has none.
    pub fn run_config(&self) -> Config {
        self.config.config().clone().unwrap_or_default()
    }

    /// When the image was created, as its config says (RFC 3339).
    pub fn created(&self) -> Option<&str> {
        self.config.created().as_deref()
    }
}

/// What `layers/<chain hex>/layer.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LayerRecord {
    pub(crate) chain_id: String,
    pub(crate) diff_id: String,
    pub(crate) parent: Option<String>,
    pub(crate) blob_digest: String,
    pub(crate) blob_size: u64,
    pub(crate) blob_media_type: String,
    /// Bytes of the uncompressed layer tar.
    pub(crate) diff_size: u64,
    /// Bytes of regular file content.
    pub(crate) size: u64,
    pub(crate) link: String,
}

/// What `images/<id hex>.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    pub(crate) id: String,
    pub(crate) manifest_digest: String,
    /// Chain ids, bottom first.
    pub(crate) layers: Vec<String>,
    pub(crate) added: u64,
    /// Ids the image had in a store of the previous format (containers made
    /// then still name them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) previous_ids: Vec<String>,
}

/// What `repositories.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct TagIndex {
    /// Full reference -> image id hex.
    pub(crate) tags: BTreeMap<String, String>,
}

/// What [`ImageStore::gc`] and [`ImageStore::remove_image`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The images removed.
    pub images: Vec<ImageId>,
    /// References removed with them.
    pub untagged: Vec<Reference>,
    /// Layers no image used any more.
    pub layers: usize,
    /// Blobs no image used any more.
    pub blobs: usize,
    /// Bytes of files deleted.
    pub bytes: u64,
}

/// A directory of images.
///
/// Safe to use from several threads and processes at once: changes are
/// made under an exclusive `flock` of `<root>/.lock`; readers see either
/// the old or the new state of every file.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

pub(crate) fn unique_suffix() -> String {
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

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn mkdir_private(path: &Path) -> Result<(), ImageError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| ImageError::io("create directory", path, e))
}

pub(crate) fn fsync_dir(path: &Path) -> Result<(), ImageError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| ImageError::io("fsync directory", path, e))
}

/// Write `bytes` to `path` atomically: temp file, fsync, rename, fsync dir.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    berth_state::replace_file(path, bytes, berth_state::Durability::Full)
        .map_err(|e| ImageError::io("write", path, e))
}

pub(crate) fn to_json(value: &impl Serialize, path: &Path) -> Result<Vec<u8>, ImageError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| ImageError::Metadata {
        path: path.to_owned(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ImageError> {
    let bytes = fs::read(path).map_err(|e| ImageError::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| ImageError::Metadata {
        path: path.to_owned(),
        source,
    })
}

/// Whether a process with this id still exists.
pub(crate) fn pid_alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// The pid that made a `tmp/` entry (`<pid>-...`) or a temp file of
/// `replace_file` (`.<name>.tmp.<pid>.<n>`).
fn owner_pid(name: &str) -> Option<i32> {
    let pid = if let Some(rest) = name.strip_prefix('.') {
        rest.split(".tmp.").nth(1)?.split('.').next()?
    } else {
        name.split('-').next()?
    };
    pid.parse::<i32>().ok().filter(|pid| *pid > 0)
}

/// Apparent size of the files of a tree (not following symlinks).
pub(crate) fn tree_bytes(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return if meta.is_file() { meta.size() } else { 0 };
    }
    fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| tree_bytes(&e.path())).sum())
        .unwrap_or(0)
}

/// The short link name of a layer: 26 characters stay unique (104 bits)
/// and let about 150 layers fit in overlay's one-page option string.
pub(crate) fn link_name(chain_hex: &str) -> String {
    chain_hex[..26].to_owned()
}

impl ImageStore {
    /// Open the store rooted at `root` (e.g. `/var/lib/berth/images`),
    /// creating it with mode 0700 if missing. Leftovers of processes that
    /// died are removed, and a store of the previous format (one flattened
    /// layer per name) is converted, keeping every image.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let store = ImageStore { root: root.into() };
        for dir in [
            store.root.clone(),
            store.tmp_dir(),
            store.blobs_dir(),
            store.layers_dir(),
            store.links_dir(),
            store.images_dir(),
        ] {
            mkdir_private(&dir)?;
        }
        store.remove_stale_tmp();
        store.migrate()?;
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of short layer links ([`Layer::link`] is relative to
    /// the store root and starts with this directory's name).
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("l")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub(crate) fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    fn tags_path(&self) -> PathBuf {
        self.root.join("repositories.json")
    }

    /// The path of the blob `digest` (`sha256:<hex>` only).
    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        let hex = sha256_hex_of(digest, "the store")?;
        Ok(self.blobs_dir().join(hex))
    }

    pub(crate) fn layer_dir(&self, chain_id: &str) -> Result<PathBuf, ImageError> {
        let hex = sha256_hex_of(chain_id, "the store")?;
        Ok(self.layers_dir().join(hex))
    }

    fn image_path(&self, id: &ImageId) -> PathBuf {
        self.images_dir().join(format!("{}.json", id.hex()))
    }

    pub(crate) fn lock(&self) -> Result<berth_state::FileLock, ImageError> {
        let path = self.root.join(".lock");
        berth_state::FileLock::exclusive(&path).map_err(|e| ImageError::io("lock", &path, e))
    }

    /// A fresh directory below `tmp/`, named after this process so that a
    /// later run can tell it is abandoned.
    pub(crate) fn new_tmp(&self) -> Result<PathBuf, ImageError> {
        loop {
            let path = self.tmp_dir().join(unique_suffix());
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ImageError::io("create directory", &path, e)),
            }
        }
    }

    /// Remove `tmp/` entries and temp files of processes that died;
    /// returns the bytes freed.
    fn remove_stale_tmp(&self) -> u64 {
        let mut freed = 0;
        let mut stale = Vec::new();
        if let Ok(entries) = fs::read_dir(self.tmp_dir()) {
            stale.extend(entries.flatten().map(|e| e.path()));
        }
        for dir in [self.root.clone(), self.images_dir()] {
            if let Ok(entries) = fs::read_dir(&dir) {
                stale.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
                        .map(|e| e.path()),
                );
            }
        }
        for path in stale {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if owner_pid(&name).is_some_and(|pid| !pid_alive(pid)) {
                freed += tree_bytes(&path);
                let removed = match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_dir() => remove_tree(&path),
                    _ => fs::remove_file(&path).map_err(|e| ImageError::io("remove", &path, e)),
                };
                if removed.is_err() {
                    freed -= tree_bytes(&path).min(freed);
                }
            }
        }
        freed
    }

    // ---- records -------------------------------------------------------

    pub(crate) fn read_tags(&self) -> Result<TagIndex, ImageError> {
        let path = self.tags_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| ImageError::Metadata { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TagIndex::default()),
            Err(e) => Err(ImageError::io("read", &path, e)),
        }
    }

    pub(crate) fn write_tags(&self, index: &TagIndex) -> Result<(), ImageError> {
        let path = self.tags_path();
        write_atomic(&path, &to_json(index, &path)?)
    }

    pub(crate) fn read_image_record(&self, id: &ImageId) -> Result<ImageRecord, ImageError> {
        let path = self.image_path(id);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| ImageError::Metadata { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ImageError::NotFound {
                name: id.to_string(),
            }),
            Err(e) => Err(ImageError::io("read", &path, e)),
        }
    }

    pub(crate) fn write_image_record(&self, record: &ImageRecord) -> Result<(), ImageError> {
        let id = ImageId::parse(&record.id).ok_or_else(|| ImageError::InvalidImage {
            origin: "the store".to_owned(),
            reason: format!("bad image id {:?}", record.id),
        })?;
        let path = self.image_path(&id);
        write_atomic(&path, &to_json(record, &path)?)
    }

    /// The ids of all image records.
    pub(crate) fn image_ids(&self) -> Result<Vec<ImageId>, ImageError> {
        let dir = self.images_dir();
        let entries = fs::read_dir(&dir).map_err(|e| ImageError::io("read directory", &dir, e))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::io("read directory", &dir, e))?;
            let name = entry.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(ImageId::parse)
            {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    pub(crate) fn read_layer_record(&self, chain_id: &str) -> Result<LayerRecord, ImageError> {
        read_json(&self.layer_dir(chain_id)?.join("layer.json"))
    }

    /// Whether the layer is complete in the store (its record is written
    /// inside the directory before the directory is renamed into place).
    pub(crate) fn has_layer(&self, chain_id: &str) -> Result<bool, ImageError> {
        let path = self.layer_dir(chain_id)?.join("layer.json");
        Ok(path.is_file())
    }

    /// Make `l/<link>` point at the layer's directory (idempotent).
    pub(crate) fn ensure_link(&self, record: &LayerRecord) -> Result<(), ImageError> {
        let hex = sha256_hex_of(&record.chain_id, "the store")?;
        let link = self.links_dir().join(&record.link);
        let target = PathBuf::from("../layers").join(hex).join("diff");
        match fs::read_link(&link) {
            Ok(existing) if existing == target => return Ok(()),
            Ok(_) => {
                fs::remove_file(&link).map_err(|e| ImageError::io("remove", &link, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("read link", &link, e)),
        }
        std::os::unix::fs::symlink(&target, &link)
            .map_err(|e| ImageError::io("create link", &link, e))
    }

    fn image_of(&self, record: ImageRecord, tags: &TagIndex) -> Result<Image, ImageError> {
        let id = ImageId::parse(&record.id).ok_or_else(|| ImageError::InvalidImage {
            origin: "the store".to_owned(),
            reason: format!("bad image id {:?}", record.id),
        })?;
        let config_path = self.blob_path(&id.digest())?;
        let config_bytes =
            fs::read(&config_path).map_err(|e| ImageError::io("read", &config_path, e))?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|source| ImageError::Metadata {
                path: config_path,
                source,
            })?;
        let mut layers = Vec::with_capacity(record.layers.len());
        for chain_id in &record.layers {
            let layer = self.read_layer_record(chain_id)?;
            layers.push(Layer {
                dir: self.layer_dir(chain_id)?.join("diff"),
                link: format!("l/{}", layer.link),
                chain_id: layer.chain_id,
                diff_id: layer.diff_id,
                blob_digest: layer.blob_digest,
                size: layer.size,
            });
        }
        let mut image_tags: Vec<Reference> = tags
            .tags
            .iter()
            .filter(|(_, target)| **target == record.id)
            .filter_map(|(reference, _)| Reference::parse(reference).ok())
            .collect();
        image_tags.sort();
        Ok(Image {
            id,
            manifest_digest: record.manifest_digest,
            config,
            layers,
            tags: image_tags,
            added: record.added,
        })
    }

    pub(crate) fn read_manifest(
        &self,
        image: &Image,
    ) -> Result<(ImageManifest, Vec<u8>), ImageError> {
        let path = self.blob_path(&image.manifest_digest)?;
        let bytes = fs::read(&path).map_err(|e| ImageError::io("read", &path, e))?;
        let manifest = serde_json::from_slice(&bytes)
            .map_err(|source| ImageError::Metadata { path, source })?;
        Ok((manifest, bytes))
    }

    // ---- lookups -------------------------------------------------------

    /// The image with id `id`.
    pub fn get(&self, id: &ImageId) -> Result<Image, ImageError> {
        let record = self.read_image_record(id)?;
        self.image_of(record, &self.read_tags()?)
    }

    /// The image that `text` names: a reference (`busybox`,
    /// `localhost/deb:12`, `name@sha256:...`), a full image id
    /// (`sha256:<hex>` or `<hex>`), or a unique prefix of an id, tried in
    /// that order as docker does.
    pub fn resolve(&self, text: &str) -> Result<Image, ImageError> {
        let tags = self.read_tags()?;
        if let Some(id) = ImageId::parse(text) {
            match self.read_image_record(&id) {
                Ok(record) => return self.image_of(record, &tags),
                Err(ImageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            if let Some(record) =
                self.find_record(|r| r.previous_ids.iter().any(|p| p == id.hex()))?
            {
                return self.image_of(record, &tags);
            }
            return Err(ImageError::NotFound {
                name: text.to_owned(),
            });
        }
        let bare_hex = text.strip_prefix("sha256:").unwrap_or(text);
        let is_prefix = !bare_hex.is_empty()
            && bare_hex.len() < 64
            && bare_hex
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if let Ok(reference) = Reference::parse(text) {
            if let Some(id) = tags.tags.get(&reference.to_string()) {
                let id = ImageId::parse(id).ok_or_else(|| ImageError::NotFound {
                    name: text.to_owned(),
                })?;
                return self.get(&id);
            }
            if let Some(digest) = reference.digest() {
                let name = reference.name();
                let wanted = digest.to_owned();
                let found = self.find_record(|r| r.manifest_digest == wanted)?;
                if let Some(record) = found {
                    let image = self.image_of(record, &tags)?;
                    // Only an image that has this repository.
                    if image.tags.iter().any(|t| t.name() == name) || image.tags.is_empty() {
                        return Ok(image);
                    }
                }
            }
        } else if !is_prefix {
            // Neither a reference nor an id: say why it is not a reference.
            Reference::parse(text)?;
        }
        if is_prefix {
            let matches: Vec<ImageId> = self
                .image_ids()?
                .into_iter()
                .filter(|id| id.hex().starts_with(bare_hex))
                .collect();
            match matches.as_slice() {
                [id] => return self.get(id),
                [] => {}
                many => {
                    return Err(ImageError::AmbiguousId {
                        prefix: text.to_owned(),
                        count: many.len(),
                    })
                }
            }
        }
        Err(ImageError::NotFound {
            name: text.to_owned(),
        })
    }

    fn find_record(
        &self,
        wanted: impl Fn(&ImageRecord) -> bool,
    ) -> Result<Option<ImageRecord>, ImageError> {
        for id in self.image_ids()? {
            match self.read_image_record(&id) {
                Ok(record) if wanted(&record) => return Ok(Some(record)),
                Ok(_) | Err(ImageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// All images, newest first.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let tags = self.read_tags()?;
        let mut images = Vec::new();
        for id in self.image_ids()? {
            match self.read_image_record(&id) {
                Ok(record) => images.push(self.image_of(record, &tags)?),
                // Removed since the directory was read.
                Err(ImageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        images.sort_by(|a, b| b.added.cmp(&a.added).then_with(|| a.id.cmp(&b.id)));
        Ok(images)
    }

    // ---- tags ----------------------------------------------------------

    /// Point `reference` at the image `id` (moving it from another image,
    /// which then keeps its other tags or becomes untagged).
    pub fn tag(&self, id: &ImageId, reference: &Reference) -> Result<(), ImageError> {
        let _lock = self.lock()?;
        self.read_image_record(id)?;
        self.tag_locked(id, std::slice::from_ref(reference))
    }

    pub(crate) fn tag_locked(
        &self,
        id: &ImageId,
        references: &[Reference],
    ) -> Result<(), ImageError> {
        if references.is_empty() {
            return Ok(());
        }
        let mut index = self.read_tags()?;
        for reference in references {
            index
                .tags
                .insert(reference.to_string(), id.hex().to_owned());
        }
        self.write_tags(&index)
    }

    /// Remove `reference`; returns the image it pointed at. The image
    /// itself stays (untagged if that was its last tag) until removed or
    /// collected.
    pub fn untag(&self, reference: &Reference) -> Result<ImageId, ImageError> {
        let _lock = self.lock()?;
        let mut index = self.read_tags()?;
        let target =
            index
                .tags
                .remove(&reference.to_string())
                .ok_or_else(|| ImageError::NotFound {
                    name: reference.to_string(),
                })?;
        self.write_tags(&index)?;
        ImageId::parse(&target).ok_or_else(|| ImageError::NotFound {
            name: reference.to_string(),
        })
    }

    // ---- removal -------------------------------------------------------

    /// Remove the image `id`, and the layers and blobs no other image
    /// uses. An image that still has tags is refused with
    /// [`ImageError::ImageTagged`] unless `force`, which removes its tags
    /// too. The caller checks first that no container uses the image.
    pub fn remove_image(&self, id: &ImageId, force: bool) -> Result<Removed, ImageError> {
        let _lock = self.lock()?;
        self.read_image_record(id)?;
        let mut index = self.read_tags()?;
        let tags: Vec<String> = index
            .tags
            .iter()
            .filter(|(_, target)| *target == id.hex())
            .map(|(reference, _)| reference.clone())
            .collect();
        if !tags.is_empty() && !force {
            return Err(ImageError::ImageTagged {
                id: id.to_string(),
                tags: tags
                    .iter()
                    .filter_map(|t| Reference::parse(t).ok())
                    .map(|t| t.familiar())
                    .collect(),
            });
        }
        let mut removed = Removed::default();
        if !tags.is_empty() {
            for tag in &tags {
                index.tags.remove(tag);
            }
            self.write_tags(&index)?;
            removed.untagged = tags
                .iter()
                .filter_map(|t| Reference::parse(t).ok())
                .collect();
        }
        self.remove_record(id, &mut removed)?;
        self.sweep(&mut removed)?;
        Ok(removed)
    }

    fn remove_record(&self, id: &ImageId, removed: &mut Removed) -> Result<(), ImageError> {
        let path = self.image_path(id);
        removed.bytes += tree_bytes(&path);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("remove", &path, e)),
        }
        fsync_dir(&self.images_dir())?;
        removed.images.push(id.clone());
        Ok(())
    }

    /// Remove every untagged image for which `keep` is false (the caller
    /// keeps the images its containers use), then every layer, blob and
    /// link no remaining image uses, and what killed processes left in
    /// `tmp/`. Returns what was removed.
    pub fn gc(&self, keep: &dyn Fn(&ImageId) -> bool) -> Result<Removed, ImageError> {
        let _lock = self.lock()?;
        let index = self.read_tags()?;
        let tagged: HashSet<&str> = index.tags.values().map(String::as_str).collect();
        let mut removed = Removed::default();
        for id in self.image_ids()? {
            if !tagged.contains(id.hex()) && !keep(&id) {
                self.remove_record(&id, &mut removed)?;
            }
        }
        // Tags of images that are gone (a record removed by hand).
        let ids: HashSet<String> = self
            .image_ids()?
            .iter()
            .map(|i| i.hex().to_owned())
            .collect();
        let dangling: Vec<String> = index
            .tags
            .iter()
            .filter(|(_, target)| !ids.contains(*target))
            .map(|(reference, _)| reference.clone())
            .collect();
        if !dangling.is_empty() {
            let mut index = index;
            for reference in &dangling {
                index.tags.remove(reference);
            }
            self.write_tags(&index)?;
        }
        self.sweep(&mut removed)?;
        removed.bytes += self.remove_stale_tmp();
        Ok(removed)
    }

    /// Move a layer directory out of `layers/` (atomic), then delete it.
    fn remove_layer_dir(&self, path: &Path, removed: &mut Removed) -> Result<(), ImageError> {
        let trash = self.tmp_dir().join(unique_suffix());
        fs::rename(path, &trash).map_err(|e| ImageError::io("rename", path, e))?;
        removed.bytes += tree_bytes(&trash);
        remove_tree(&trash)
    }

    /// Under the lock: delete layers, blobs and links that no image record
    /// names. Work still in `tmp/` is not touched.
    fn sweep(&self, removed: &mut Removed) -> Result<(), ImageError> {
        let mut layers = BTreeSet::new();
        let mut blobs = BTreeSet::new();
        for id in self.image_ids()? {
            let record = match self.read_image_record(&id) {
                Ok(record) => record,
                Err(ImageError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            blobs.insert(id.hex().to_owned());
            if let Ok(hex) = sha256_hex_of(&record.manifest_digest, "the store") {
                blobs.insert(hex.to_owned());
            }
            for chain_id in &record.layers {
                if let Ok(hex) = sha256_hex_of(chain_id, "the store") {
                    layers.insert(hex.to_owned());
                }
                if let Ok(layer) = self.read_layer_record(chain_id) {
                    if let Ok(hex) = sha256_hex_of(&layer.blob_digest, "the store") {
                        blobs.insert(hex.to_owned());
                    }
                }
            }
        }
        let layers_dir = self.layers_dir();
        let entries = fs::read_dir(&layers_dir)
            .map_err(|e| ImageError::io("read directory", &layers_dir, e))?;
        let mut aliases = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if layers.contains(&name) || crate::migrate::is_legacy_layer(&path) {
                // In use, or not converted yet (conversion runs at open).
                continue;
            }
            if crate::migrate::is_legacy_alias(&path) {
                aliases.push(path);
                continue;
            }
            self.remove_layer_dir(&path, removed)?;
            removed.layers += 1;
        }
        // An alias of a converted layer goes with the layer.
        for path in aliases {
            if !path.join("rootfs").exists() {
                self.remove_layer_dir(&path, removed)?;
            }
        }
        fsync_dir(&layers_dir)?;
        let blobs_dir = self.blobs_dir();
        let entries = fs::read_dir(&blobs_dir)
            .map_err(|e| ImageError::io("read directory", &blobs_dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if blobs.contains(&name) {
                continue;
            }
            let path = entry.path();
            removed.bytes += tree_bytes(&path);
            fs::remove_file(&path).map_err(|e| ImageError::io("remove", &path, e))?;
            removed.blobs += 1;
        }
        let links_dir = self.links_dir();
        let entries = fs::read_dir(&links_dir)
            .map_err(|e| ImageError::io("read directory", &links_dir, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            // A link whose layer is gone.
            if !path.exists() {
                fs::remove_file(&path).map_err(|e| ImageError::io("remove", &path, e))?;
            }
        }
        Ok(())
    }
}
