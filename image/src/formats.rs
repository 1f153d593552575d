//! Image archives: reading docker archives (`docker save`, `podman save`),
//! OCI archives and OCI layout directories as [`ImageSource`]s, and
//! writing docker and OCI archives of images in the store.
//!
//! An archive is read by random access: a tar file is indexed once (entry
//! name -> offset and size) and each blob is read in place, by several
//! threads at once. A tar that comes as a stream, or compressed, is first
//! spooled (decompressed) to a file in the store's `tmp/`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};

use crate::compression::{decompressed, peek_compression, Compression};
use crate::digest::{read_verified, sha256_hex, sha256_hex_of, HashingReader};
use crate::ingest::{oci_digest, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
use crate::store::unique_suffix;
use crate::{Image, ImageError, ImageSource, ImageStore, Progress, Reference, TargetPlatform};

/// The annotation of an OCI index entry that names the image.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's (and docker's) annotation with the full image name.
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Links followed inside an archive before giving up.
const MAX_LINK_DEPTH: usize = 8;
/// The largest `index.json`/`manifest.json` read.
const MAX_INDEX_SIZE: u64 = 4 << 20;

fn describe_platform(platform: &oci_spec::image::Platform) -> String {
    let mut text = format!("{}/{}", platform.os(), platform.architecture());
    if let Some(variant) = platform.variant() {
        text.push('/');
        text.push_str(variant);
    }
    text
}

/// Where the files of an archive are: a directory, or entries of a tar
/// file read in place.
#[derive(Debug)]
enum Container {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        file: File,
        /// Normalized name -> what is there.
        entries: HashMap<String, TarEntry>,
    },
}

#[derive(Debug, Clone)]
enum TarEntry {
    File {
        offset: u64,
        size: u64,
    },
    /// A symlink (target relative to its directory) or hard link (target
    /// from the archive root), already made absolute within the archive.
    Link(String),
}

/// `a/./b/` -> `a/b`; `None` when it has `..` or is empty.
fn normalize_name(name: &str) -> Option<String> {
    let mut parts = Vec::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?.to_owned()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A file of an archive opened for reading, and its size.
type Opened<'a> = (Box<dyn Read + Send + 'a>, u64);

/// A reader of `size` bytes at `offset` of a shared file.
struct Section<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Container {
    fn describe(&self) -> String {
        match self {
            Container::Dir(path) | Container::Tar { path, .. } => path.display().to_string(),
        }
    }

    fn index_tar(path: &Path) -> Result<Self, ImageError> {
        let archive_err = |source: io::Error| ImageError::Archive {
            origin: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
        let mut entries = HashMap::new();
        {
            let mut archive = tar::Archive::new(&file);
            for entry in archive.entries_with_seek().map_err(archive_err)? {
                let entry = entry.map_err(archive_err)?;
                let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let Some(name) = normalize_name(&raw) else {
                    continue;
                };
                let header = entry.header();
                let kind = header.entry_type();
                let value = if kind.is_file() {
                    TarEntry::File {
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    }
                } else if kind.is_symlink() || kind.is_hard_link() {
                    let Some(target) = entry.link_name_bytes() else {
                        continue;
                    };
                    let target = String::from_utf8_lossy(&target).into_owned();
                    let joined = if kind.is_symlink() && !target.starts_with('/') {
                        match name.rsplit_once('/') {
                            Some((dir, _)) => format!("{dir}/{target}"),
                            None => target,
                        }
                    } else {
                        target
                    };
                    match normalize_name(&joined) {
                        Some(target) => TarEntry::Link(target),
                        None => continue,
                    }
                } else {
                    continue;
                };
                entries.insert(name, value);
            }
        }
        Ok(Container::Tar {
            path: path.to_owned(),
            file,
            entries,
        })
    }

    /// The file `name` (a normalized path within the archive) and its
    /// size, `None` when absent.
    fn open(&self, name: &str) -> Result<Option<Opened<'_>>, ImageError> {
        match self {
            Container::Dir(root) => {
                // Names are built from validated digests or fixed names, but
                // a directory is still never left.
                let Some(name) = normalize_name(name) else {
                    return Ok(None);
                };
                let path = root.join(&name);
                match File::open(&path) {
                    Ok(file) => {
                        let meta = file
                            .metadata()
                            .map_err(|e| ImageError::io("stat", &path, e))?;
                        if !meta.is_file() {
                            return Ok(None);
                        }
                        Ok(Some((Box::new(file), meta.len())))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(ImageError::io("open", &path, e)),
                }
            }
            Container::Tar { file, entries, .. } => {
                let mut name = name.to_owned();
                for _ in 0..MAX_LINK_DEPTH {
                    match entries.get(&name) {
                        None => return Ok(None),
                        Some(TarEntry::Link(target)) => name = target.clone(),
                        Some(TarEntry::File { offset, size }) => {
                            return Ok(Some((
                                Box::new(Section {
                                    file,
                                    pos: *offset,
                                    end: offset + size,
                                }),
                                *size,
                            )))
                        }
                    }
                }
                Ok(None)
            }
        }
    }

    fn has(&self, name: &str) -> bool {
        matches!(self.open(name), Ok(Some(_)))
    }

    /// Read all of a small file (an index, a config) of at most `limit`
    /// bytes.
    fn read_small(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, ImageError> {
        let Some((reader, size)) = self.open(name)? else {
            return Ok(None);
        };
        if size > limit {
            return Err(ImageError::TooLarge {
                what: "archive file",
                digest: name.to_owned(),
                origin: self.describe(),
                size,
                limit,
            });
        }
        let mut bytes = Vec::new();
        reader
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(|source| ImageError::Archive {
                origin: format!("{}: {name}", self.describe()),
                source,
            })?;
        Ok(Some(bytes))
    }
}

fn blob_name(digest: &str, origin: &str) -> Result<String, ImageError> {
    Ok(format!("blobs/sha256/{}", sha256_hex_of(digest, origin)?))
}

/// One image of an archive or OCI layout.
#[derive(Debug)]
pub struct ArchiveImage {
    container: Arc<Container>,
    manifest: ImageManifest,
    manifest_bytes: Option<Vec<u8>>,
    /// Descriptor digest -> file name in the archive.
    files: HashMap<String, String>,
}

impl ImageSource for ArchiveImage {
    fn describe(&self) -> String {
        self.container.describe()
    }

    fn manifest(&self) -> &ImageManifest {
        &self.manifest
    }

    fn manifest_bytes(&self) -> Option<&[u8]> {
        self.manifest_bytes.as_deref()
    }

    fn open_blob(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send + '_>, ImageError> {
        let digest = descriptor.digest().to_string();
        let name = match self.files.get(&digest) {
            Some(name) => name.clone(),
            None => blob_name(&digest, &self.describe())?,
        };
        match self.container.open(&name)? {
            Some((reader, _)) => Ok(reader),
            None => Err(ImageError::InvalidImage {
                origin: self.describe(),
                reason: format!("blob {digest} ({name}) is missing"),
            }),
        }
    }
}

/// `manifest.json` of a docker archive: one entry per image.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The images of an archive with the names it gives them.
pub type ArchiveImages = Vec<(ArchiveImage, Vec<Reference>)>;

/// Open the image archive or OCI layout at `path`: a directory (OCI
/// layout), or a tar file (docker archive or OCI archive, told apart by
/// content). The tar must be uncompressed; see [`ImageStore::load_path`]
/// for compressed ones. Images of an index are resolved to `platform`.
pub fn open_archive(path: &Path, platform: &TargetPlatform) -> Result<ArchiveImages, ImageError> {
    let container = if path.is_dir() {
        Container::Dir(path.to_owned())
    } else {
        Container::index_tar(path)?
    };
    read_container(Arc::new(container), platform)
}

fn read_container(
    container: Arc<Container>,
    platform: &TargetPlatform,
) -> Result<ArchiveImages, ImageError> {
    if container.has("index.json") && container.has("oci-layout") {
        read_oci_layout(container, platform)
    } else if container.has("manifest.json") {
        read_docker_archive(container)
    } else {
        Err(ImageError::UnknownArchiveFormat {
            origin: container.describe(),
        })
    }
}

fn parse_names(names: &[String], origin: &str) -> Result<Vec<Reference>, ImageError> {
    names
        .iter()
        .map(|name| {
            Reference::parse(name).map_err(|e| ImageError::InvalidImage {
                origin: origin.to_owned(),
                reason: e.to_string(),
            })
        })
        .collect()
}

fn read_docker_archive(container: Arc<Container>) -> Result<ArchiveImages, ImageError> {
    let origin = container.describe();
    let invalid = |reason: String| ImageError::InvalidImage {
        origin: origin.clone(),
        reason,
    };
    let bytes = container
        .read_small("manifest.json", MAX_INDEX_SIZE)?
        .ok_or_else(|| invalid("manifest.json is missing".to_owned()))?;
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("manifest.json: {e}")))?;
    let mut images = Vec::new();
    for entry in entries {
        let config_name = normalize_name(&entry.config)
            .ok_or_else(|| invalid(format!("bad config name {:?}", entry.config)))?;
        let config_bytes = container
            .read_small(&config_name, MAX_CONFIG_SIZE)?
            .ok_or_else(|| invalid(format!("config {config_name} is missing")))?;
        let config_digest = format!("sha256:{}", sha256_hex(&config_bytes));
        let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(format!("config {config_name}: {e}")))?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != entry.layers.len() {
            return Err(invalid(format!(
                "image {config_digest} lists {} layers but its config {} diff_ids",
                entry.layers.len(),
                diff_ids.len()
            )));
        }
        let mut files = HashMap::new();
        files.insert(config_digest.clone(), config_name);
        let mut layers = Vec::new();
        for (name, diff_id) in entry.layers.iter().zip(diff_ids) {
            let name =
                normalize_name(name).ok_or_else(|| invalid(format!("bad layer name {name:?}")))?;
            let (mut reader, size) = container
                .open(&name)?
                .ok_or_else(|| invalid(format!("layer {name} is missing")))?;
            let mut head = [0u8; 6];
            let n = crate::compression::read_head(&mut reader, &mut head).map_err(|source| {
                ImageError::Archive {
                    origin: format!("{origin}: {name}"),
                    source,
                }
            })?;
            let (digest, media_type) = match Compression::detect(&head[..n]) {
                // Uncompressed, as docker and podman write them: the blob's
                // digest is its diff_id, which the store checks.
                Compression::None => (diff_id.clone(), MediaType::ImageLayer),
                compressed => {
                    let (reader, _) = container
                        .open(&name)?
                        .ok_or_else(|| invalid(format!("layer {name} is missing")))?;
                    let mut hashing = HashingReader::new(reader);
                    io::copy(&mut hashing, &mut io::sink()).map_err(|source| {
                        ImageError::Archive {
                            origin: format!("{origin}: {name}"),
                            source,
                        }
                    })?;
                    let (hex, _) = hashing.finish();
                    let media_type = match compressed {
                        Compression::Zstd => MediaType::ImageLayerZstd,
                        Compression::Gzip => MediaType::ImageLayerGzip,
                        _ => MediaType::Other("application/vnd.oci.image.layer.v1.tar+xz".into()),
                    };
                    (format!("sha256:{hex}"), media_type)
                }
            };
            let digest_value: oci_spec::image::Digest = digest
                .parse()
                .map_err(|e| invalid(format!("layer {name}: digest {digest:?}: {e}")))?;
            files.insert(digest.clone(), name);
            layers.push(Descriptor::new(media_type, size, digest_value));
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config_bytes.len() as u64,
                oci_digest(config_digest.trim_start_matches("sha256:"))?,
            ))
            .layers(layers)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let names = parse_names(entry.repo_tags.as_deref().unwrap_or_default(), &origin)?;
        images.push((
            ArchiveImage {
                container: container.clone(),
                manifest,
                manifest_bytes: None,
                files,
            },
            names,
        ));
    }
    Ok(images)
}

fn is_index(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json"
    )
}

/// The name an OCI index entry gives its image: containerd's full name,
/// or a `ref.name` that is a full reference (a bare tag like `latest` says
/// nothing about the repository).
fn names_of(descriptor: &Descriptor) -> Option<Reference> {
    let annotations = descriptor.annotations().as_ref()?;
    if let Some(name) = annotations.get(ANNOTATION_CONTAINERD_NAME) {
        if let Ok(reference) = Reference::parse(name) {
            return Some(reference);
        }
    }
    let name = annotations.get(ANNOTATION_REF_NAME)?;
    if name.contains('/') || name.contains(':') {
        return Reference::parse(name).ok();
    }
    None
}

fn read_index(
    container: &Container,
    descriptor: &Descriptor,
    origin: &str,
) -> Result<ImageIndex, ImageError> {
    let digest = descriptor.digest().to_string();
    let name = blob_name(&digest, origin)?;
    let (reader, _) = container
        .open(&name)?
        .ok_or_else(|| ImageError::InvalidImage {
            origin: origin.to_owned(),
            reason: format!("index {digest} is missing"),
        })?;
    let bytes = read_verified(
        reader,
        "index",
        &digest,
        descriptor.size(),
        MAX_MANIFEST_SIZE,
        origin,
    )?;
    serde_json::from_slice(&bytes).map_err(|e| ImageError::InvalidImage {
        origin: origin.to_owned(),
        reason: format!("index {digest}: {e}"),
    })
}

/// The entry of `candidates` for `platform`; entries without a platform
/// match anything.
fn pick_platform(
    candidates: Vec<Descriptor>,
    platform: &TargetPlatform,
    origin: &str,
) -> Result<Vec<Descriptor>, ImageError> {
    let mut available = Vec::new();
    let mut matching = Vec::new();
    for descriptor in candidates {
        match descriptor.platform() {
            Some(p) if !platform.matches(p) => available.push(describe_platform(p)),
            _ => matching.push(descriptor),
        }
    }
    if matching.is_empty() && !available.is_empty() {
        return Err(ImageError::NoMatchingPlatform {
            origin: origin.to_owned(),
            wanted: platform.to_string(),
            available,
        });
    }
    // Several entries for the one platform (variants): the first, as docker.
    if matching.iter().filter(|d| d.platform().is_some()).count() > 1 {
        let first = matching
            .iter()
            .position(|d| d.platform().is_some())
            .unwrap_or(0);
        let keep = matching.swap_remove(first);
        matching.retain(|d| d.platform().is_none());
        matching.insert(0, keep);
    }
    Ok(matching)
}

fn read_oci_layout(
    container: Arc<Container>,
    platform: &TargetPlatform,
) -> Result<ArchiveImages, ImageError> {
    let origin = container.describe();
    let invalid = |reason: String| ImageError::InvalidImage {
        origin: origin.clone(),
        reason,
    };
    let bytes = container
        .read_small("index.json", MAX_INDEX_SIZE)?
        .ok_or_else(|| invalid("index.json is missing".to_owned()))?;
    let index: ImageIndex =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("index.json: {e}")))?;
    // Top-level entries with the same name but other platforms form a
    // multi-platform image: group by name before picking.
    let mut by_name: BTreeMap<Option<String>, (Option<Reference>, Vec<Descriptor>)> =
        BTreeMap::new();
    for descriptor in index.manifests() {
        let name = names_of(descriptor);
        by_name
            .entry(name.as_ref().map(Reference::to_string))
            .or_insert_with(|| (name.clone(), Vec::new()))
            .1
            .push(descriptor.clone());
    }
    // Manifest digest -> (manifest descriptor, names).
    let mut manifests: BTreeMap<String, (Descriptor, Vec<Reference>)> = BTreeMap::new();
    for (_, (name, descriptors)) in by_name {
        for mut descriptor in pick_platform(descriptors, platform, &origin)? {
            // Follow nested indexes down to one manifest.
            for _ in 0..MAX_LINK_DEPTH {
                if !is_index(descriptor.media_type().as_ref()) {
                    break;
                }
                let nested = read_index(&container, &descriptor, &origin)?;
                descriptor = pick_platform(nested.manifests().clone(), platform, &origin)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| invalid(format!("index {} is empty", descriptor.digest())))?;
            }
            let entry = manifests
                .entry(descriptor.digest().to_string())
                .or_insert_with(|| (descriptor.clone(), Vec::new()));
            if let Some(name) = &name {
                if !entry.1.contains(name) {
                    entry.1.push(name.clone());
                }
            }
        }
    }
    let mut images = Vec::new();
    for (digest, (descriptor, names)) in manifests {
        let name = blob_name(&digest, &origin)?;
        let (reader, _) = container
            .open(&name)?
            .ok_or_else(|| invalid(format!("manifest {digest} is missing")))?;
        let bytes = read_verified(
            reader,
            "manifest",
            &digest,
            descriptor.size(),
            MAX_MANIFEST_SIZE,
            &origin,
        )?;
        let manifest: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("manifest {digest}: {e}")))?;
        images.push((
            ArchiveImage {
                container: container.clone(),
                manifest,
                manifest_bytes: Some(bytes),
                files: HashMap::new(),
            },
            names,
        ));
    }
    if images.is_empty() {
        return Err(invalid("its index.json lists no image".to_owned()));
    }
    Ok(images)
}

/// Removes a spooled file when dropped.
struct Spooled(PathBuf);

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl ImageStore {
    /// Load the images of a docker archive, OCI archive (possibly
    /// compressed: gzip, zstd, xz) read from a stream, e.g. stdin. The
    /// stream is spooled to the store's `tmp/` first. Returns each image
    /// with the names the archive gives it, which are tagged. Images of a
    /// multi-platform index are resolved to `platform`. All index entries
    /// of the archive are checked before any image is stored; an image
    /// whose layers turn out bad is not stored, but the images before it
    /// in the archive stay.
    pub fn load(
        &self,
        reader: &mut dyn Read,
        platform: &TargetPlatform,
        progress: &dyn Fn(Progress),
    ) -> Result<Vec<(Image, Vec<Reference>)>, ImageError> {
        let spooled = self.spool(reader, "<stream>")?;
        let container = Container::index_tar(&spooled.0)?;
        self.load_container(Arc::new(container), platform, progress)
    }

    /// Load the images of an archive file or OCI layout directory at
    /// `path`; see [`ImageStore::load`]. Images of a multi-platform index
    /// are resolved to `platform`.
    pub fn load_path(
        &self,
        path: &Path,
        platform: &TargetPlatform,
        progress: &dyn Fn(Progress),
    ) -> Result<Vec<(Image, Vec<Reference>)>, ImageError> {
        if path.is_dir() {
            return self.load_container(
                Arc::new(Container::Dir(path.to_owned())),
                platform,
                progress,
            );
        }
        let file = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
        let mut reader = BufReader::new(file);
        let compression =
            peek_compression(&mut reader).map_err(|e| ImageError::io("read", path, e))?;
        if compression == Compression::None {
            drop(reader);
            let container = Container::index_tar(path)?;
            return self.load_container(Arc::new(container), platform, progress);
        }
        let spooled = self.spool(&mut reader, &path.display().to_string())?;
        let container = Container::index_tar(&spooled.0)?;
        self.load_container(Arc::new(container), platform, progress)
    }

    fn load_container(
        &self,
        container: Arc<Container>,
        platform: &TargetPlatform,
        progress: &dyn Fn(Progress),
    ) -> Result<Vec<(Image, Vec<Reference>)>, ImageError> {
        // Every image's index entries are checked before any is stored.
        let images = read_container(container, platform)?;
        let mut loaded = Vec::new();
        for (source, names) in images {
            let image = self.add_image(&source, &names, progress)?;
            loaded.push((image, names));
        }
        Ok(loaded)
    }

    /// Decompress `reader` (by content) into a new file in `tmp/`.
    fn spool(&self, reader: &mut dyn Read, origin: &str) -> Result<Spooled, ImageError> {
        let path = self.tmp_dir().join(unique_suffix());
        let spooled = Spooled(path.clone());
        let mut file = File::options()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| ImageError::io("create", &path, e))?;
        let (_, mut stream) = decompressed(reader).map_err(|source| ImageError::Archive {
            origin: origin.to_owned(),
            source,
        })?;
        io::copy(&mut stream, &mut file).map_err(|source| ImageError::Archive {
            origin: origin.to_owned(),
            source,
        })?;
        file.rewind()
            .map_err(|e| ImageError::io("seek", &path, e))?;
        Ok(spooled)
    }

    /// Write `images` to `out` as a docker archive, the layout `docker
    /// save` writes and `docker load`/`podman load` read: `manifest.json`,
    /// `repositories`, `<config hex>.json`, and one uncompressed
    /// `<diff_id hex>/layer.tar` per layer (with `VERSION` and `json`).
    /// Each image is listed under the names given with it.
    pub fn save_docker_archive(
        &self,
        images: &[(&Image, &[Reference])],
        out: &mut dyn Write,
    ) -> Result<(), ImageError> {
        let mut tar = ArchiveWriter::new(out);
        let mut manifest = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut written = HashSet::new();
        for (image, names) in images {
            let source = self.source(image)?;
            let config_digest = image.id.digest();
            let config_name = format!("{}.json", image.id.hex());
            if written.insert(config_name.clone()) {
                let config = source.manifest().config().clone();
                let reader = source.open_blob(&config)?;
                tar.file(&config_name, config.size(), reader, &config_digest)?;
            }
            let mut layer_names = Vec::new();
            let mut parent: Option<String> = None;
            for (record, descriptor) in source
                .layer_records()
                .iter()
                .zip(source.manifest().layers())
            {
                let hex = record.diff_id.trim_start_matches("sha256:").to_owned();
                let name = format!("{hex}/layer.tar");
                if written.insert(name.clone()) {
                    tar.dir(&hex)?;
                    tar.bytes(&format!("{hex}/VERSION"), b"1.0")?;
                    let mut json = serde_json::json!({ "id": hex });
                    if let Some(parent) = &parent {
                        json["parent"] = parent.clone().into();
                    }
                    tar.bytes(&format!("{hex}/json"), json.to_string().as_bytes())?;
                    let (_, stream) =
                        decompressed(source.open_blob(descriptor)?).map_err(|source| {
                            ImageError::Archive {
                                origin: format!("layer {}", record.blob_digest),
                                source,
                            }
                        })?;
                    tar.file(&name, record.diff_size, stream, &record.diff_id)?;
                }
                layer_names.push(name);
                parent = Some(hex);
            }
            for name in names.iter() {
                if let (Some(tag), Some(top)) = (name.tag(), &parent) {
                    repositories
                        .entry(name.familiar_name())
                        .or_default()
                        .insert(tag.to_owned(), top.clone());
                }
            }
            manifest.push(DockerManifestEntry {
                config: config_name,
                repo_tags: Some(
                    names
                        .iter()
                        .filter(|n| n.tag().is_some())
                        .map(|n| {
                            let mut plain = n.familiar_name();
                            plain.push(':');
                            plain.push_str(n.tag().unwrap_or_default());
                            plain
                        })
                        .collect(),
                ),
                layers: layer_names,
            });
        }
        tar.bytes("manifest.json", &json_bytes(&manifest)?)?;
        tar.bytes("repositories", &json_bytes(&repositories)?)?;
        tar.finish()
    }

    /// Write `images` to `out` as an OCI archive (a tar of an OCI image
    /// layout): `oci-layout`, `index.json` with one entry per name (its
    /// full reference in the `org.opencontainers.image.ref.name` and
    /// `io.containerd.image.name` annotations; one entry without a name
    /// for an image given none), and every blob as stored.
    pub fn save_oci_archive(
        &self,
        images: &[(&Image, &[Reference])],
        out: &mut dyn Write,
    ) -> Result<(), ImageError> {
        let mut tar = ArchiveWriter::new(out);
        tar.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        tar.dir("blobs")?;
        tar.dir("blobs/sha256")?;
        let mut written = HashSet::new();
        let mut entries = Vec::new();
        for (image, names) in images {
            let source = self.source(image)?;
            let manifest_bytes = source.manifest_bytes().unwrap_or_default().to_vec();
            let mut blob = |digest: &str, size: u64, reader: Box<dyn Read + Send + '_>| {
                let name = blob_name(digest, "the store")?;
                if written.insert(name.clone()) {
                    tar.file(&name, size, reader, digest)?;
                }
                Ok::<(), ImageError>(())
            };
            let config = source.manifest().config().clone();
            blob(
                config.digest().as_ref(),
                config.size(),
                source.open_blob(&config)?,
            )?;
            for layer in source.manifest().layers() {
                blob(
                    layer.digest().as_ref(),
                    layer.size(),
                    source.open_blob(layer)?,
                )?;
            }
            blob(
                source.manifest_digest(),
                manifest_bytes.len() as u64,
                Box::new(io::Cursor::new(manifest_bytes.clone())),
            )?;
            let media_type = source
                .manifest()
                .media_type()
                .clone()
                .unwrap_or(MediaType::ImageManifest);
            let descriptor = Descriptor::new(
                media_type,
                manifest_bytes.len() as u64,
                oci_digest(source.manifest_digest().trim_start_matches("sha256:"))?,
            );
            if names.is_empty() {
                entries.push(descriptor.clone());
            }
            for name in names.iter() {
                let mut named = descriptor.clone();
                named.set_annotations(Some(
                    [
                        (ANNOTATION_REF_NAME.to_owned(), name.to_string()),
                        (ANNOTATION_CONTAINERD_NAME.to_owned(), name.to_string()),
                    ]
                    .into_iter()
                    .collect(),
                ));
                entries.push(named);
            }
        }
        let index = oci_spec::image::ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(entries)
            .build()
            .map_err(|e| ImageError::InvalidImage {
                origin: "the store".to_owned(),
                reason: e.to_string(),
            })?;
        tar.bytes("index.json", &json_bytes(&index)?)?;
        tar.finish()
    }
}

fn json_bytes(value: &impl Serialize) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value).map_err(|e| ImageError::InvalidImage {
        origin: "the store".to_owned(),
        reason: e.to_string(),
    })
}

/// A tar writer for archives: fixed metadata (root, 0644/0755, mtime 0)
/// so the same images give the same bytes.
struct ArchiveWriter<'a> {
    builder: tar::Builder<&'a mut dyn Write>,
}

fn write_err(source: io::Error) -> ImageError {
    ImageError::Archive {
        origin: "<archive being written>".to_owned(),
        source,
    }
}

impl<'a> ArchiveWriter<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        ArchiveWriter {
            builder: tar::Builder::new(out),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(size);
        header
    }

    fn dir(&mut self, name: &str) -> Result<(), ImageError> {
        let mut header = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.builder
            .append_data(&mut header, format!("{name}/"), io::empty())
            .map_err(write_err)
    }

    fn bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let mut header = Self::header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        self.builder
            .append_data(&mut header, name, bytes)
            .map_err(write_err)
    }

    /// Append `size` bytes of `reader`; a reader with fewer or more bytes
    /// is an error naming `digest` (the archive would be corrupt).
    fn file(
        &mut self,
        name: &str,
        size: u64,
        reader: impl Read,
        digest: &str,
    ) -> Result<(), ImageError> {
        let mut header = Self::header(tar::EntryType::Regular, 0o644, size);
        let mut exact = ExactLength {
            inner: reader,
            remaining: size,
        };
        self.builder
            .append_data(&mut header, name, &mut exact)
            .map_err(|source| ImageError::Archive {
                origin: format!("<archive being written, at {name} ({digest})>"),
                source,
            })?;
        let mut probe = [0u8; 1];
        match exact.inner.read(&mut probe) {
            Ok(0) => Ok(()),
            Ok(_) => Err(ImageError::Archive {
                origin: format!("<archive being written, at {name} ({digest})>"),
                source: io::Error::new(io::ErrorKind::InvalidData, "content longer than its size"),
            }),
            Err(source) => Err(ImageError::Archive {
                origin: format!("<archive being written, at {name} ({digest})>"),
                source,
            }),
        }
    }

    fn finish(self) -> Result<(), ImageError> {
        self.builder
            .into_inner()
            .and_then(|out| out.flush())
            .map_err(write_err)
    }
}

/// Exactly `remaining` bytes: end of file early is an error.
struct ExactLength<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactLength<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "content shorter than its size",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
