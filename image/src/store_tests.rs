//! Tests of the layered store: adding images from sources, sharing,
//! tags, lookups, removal and collection, hostile input, archives,
//! interrupted work and the conversion of the previous format. Driven by
//! images built in memory; none needs root (opaque directories need it to
//! be set as `trusted.overlay.opaque`, which is checked only as root).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndexBuilder, ImageManifest, ImageManifestBuilder,
    MediaType, PlatformBuilder, RootFs,
};
use tar::{EntryType, Header};

use crate::digest::sha256_hex;
use crate::{
    extract, write_merged_tar, Compression, ImageError, ImageId, ImageSource, ImageStore, Progress,
    Reference, TargetPlatform,
};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A layer tar: `(name, kind, data-or-link)`.
fn layer(entries: &[(&str, EntryType, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut header = Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(if *kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_mtime(1_000_000_000);
        let old = header.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        let body: &[u8] = match kind {
            EntryType::Symlink | EntryType::Link => {
                old.linkname = [0; 100];
                old.linkname[..data.len()].copy_from_slice(data.as_bytes());
                b""
            }
            _ => data.as_bytes(),
        };
        header.set_size(body.len() as u64);
        header.set_cksum();
        builder.append(&header, body).unwrap();
    }
    builder.into_inner().unwrap()
}

fn compress(bytes: &[u8], how: Compression) -> Vec<u8> {
    match how {
        Compression::None => bytes.to_vec(),
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(bytes).unwrap();
            gz.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(bytes, 1).unwrap(),
        Compression::Xz => {
            let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
            xz.write_all(bytes).unwrap();
            xz.finish().unwrap()
        }
    }
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// An image held in memory, as a registry would serve it.
#[derive(Debug, Clone)]
struct MemorySource {
    manifest: ImageManifest,
    manifest_bytes: Vec<u8>,
    blobs: HashMap<String, Vec<u8>>,
}

impl MemorySource {
    /// An image of `layers` (uncompressed tars) stored compressed as given.
    fn new(layers: &[(Vec<u8>, Compression)], cmd: &str) -> Self {
        let mut blobs = HashMap::new();
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, how) in layers {
            let blob = compress(tar, *how);
            let media_type = match how {
                Compression::Gzip => MediaType::ImageLayerGzip,
                Compression::Zstd => MediaType::ImageLayerZstd,
                _ => MediaType::ImageLayer,
            };
            descriptors.push(Descriptor::new(
                media_type,
                blob.len() as u64,
                digest_of(&blob).parse::<oci_spec::image::Digest>().unwrap(),
            ));
            diff_ids.push(digest_of(tar));
            blobs.insert(digest_of(&blob), blob);
        }
        let mut config = ImageConfiguration::default();
        config.set_os(oci_spec::image::Os::Linux);
        let mut rootfs = RootFs::default();
        rootfs.set_diff_ids(diff_ids);
        config.set_rootfs(rootfs);
        let mut run = oci_spec::image::Config::default();
        run.set_cmd(Some(vec![cmd.to_owned()]));
        config.set_config(Some(run));
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config_bytes.len() as u64,
                digest_of(&config_bytes)
                    .parse::<oci_spec::image::Digest>()
                    .unwrap(),
            ))
            .layers(descriptors)
            .build()
            .unwrap();
        blobs.insert(digest_of(&config_bytes), config_bytes);
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        MemorySource {
            manifest,
            manifest_bytes,
            blobs,
        }
    }

    /// Replace the manifest (and its bytes) with an edited one.
    fn edit_manifest(&mut self, edit: impl FnOnce(&mut ImageManifest)) {
        edit(&mut self.manifest);
        self.manifest_bytes = serde_json::to_vec(&self.manifest).unwrap();
    }

    fn layer_digest(&self, i: usize) -> String {
        self.manifest.layers()[i].digest().to_string()
    }
}

impl ImageSource for MemorySource {
    fn describe(&self) -> String {
        "<memory>".to_owned()
    }

    fn manifest(&self) -> &ImageManifest {
        &self.manifest
    }

    fn manifest_bytes(&self) -> Option<&[u8]> {
        Some(&self.manifest_bytes)
    }

    fn open_blob(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send + '_>, ImageError> {
        let blob = self
            .blobs
            .get(&descriptor.digest().to_string())
            .ok_or_else(|| ImageError::NotFound {
                name: descriptor.digest().to_string(),
            })?;
        Ok(Box::new(Cursor::new(blob.clone())))
    }
}

const DIR: EntryType = EntryType::Directory;
const FILE: EntryType = EntryType::Regular;

fn base_layers() -> Vec<(Vec<u8>, Compression)> {
    vec![
        (
            layer(&[
                ("etc/", DIR, ""),
                ("etc/motd", FILE, "hello\n"),
                ("etc/gone", FILE, "x"),
                ("opq/", DIR, ""),
                ("opq/old", FILE, "old"),
                ("keep/", DIR, ""),
                ("keep/a", FILE, "a"),
            ]),
            Compression::Gzip,
        ),
        (
            layer(&[
                ("etc/.wh.gone", FILE, ""),
                ("opq/", DIR, ""),
                ("opq/.wh..wh..opq", FILE, ""),
                ("opq/new", FILE, "new"),
                ("keep/b", FILE, "b"),
            ]),
            Compression::Zstd,
        ),
    ]
}

/// Relative path -> (kind, content) of every entry below `root`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let value = if meta.is_dir() {
                walk(root, &path, out);
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).unwrap().display())
            } else if meta.file_type().is_char_device() {
                format!("char {}", meta.rdev())
            } else {
                String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned()
            };
            out.insert(rel, value);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// What the store holds, for "unchanged" checks (the lock file aside).
fn snapshot(store: &ImageStore) -> BTreeMap<String, String> {
    let mut all = tree(store.root());
    all.remove(".lock");
    all
}

fn merged(image: &crate::Image, scratch: &Path) -> BTreeMap<String, String> {
    let lowers = image.lower_dirs();
    let lowers: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    let mut tar = Vec::new();
    write_merged_tar(&lowers, &mut tar).unwrap();
    let dest = scratch.join(format!("merged-{}", sha256_hex(&tar)));
    crate::extract::remove_tree(&dest).unwrap();
    extract(&tar[..], &dest).unwrap();
    tree(&dest)
}

fn reference(text: &str) -> Reference {
    Reference::parse(text).unwrap()
}

fn no_progress(_: Progress) {}

#[test]
fn layered_image_with_whiteouts_across_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let source = MemorySource::new(&base_layers(), "sh");
    let events = std::cell::RefCell::new(Vec::new());
    let image = store
        .add_image(&source, &[reference("app:1")], &|p| {
            events.borrow_mut().push(p)
        })
        .unwrap();
    assert_eq!(
        image.id.digest(),
        source.manifest.config().digest().to_string()
    );
    assert_eq!(image.manifest_digest, digest_of(&source.manifest_bytes));
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.tags, [reference("app:1")]);
    assert_eq!(image.run_config().cmd().as_deref().unwrap(), ["sh"]);
    let events = events.into_inner();
    for i in 0..2 {
        assert!(events.contains(&Progress::LayerDone {
            digest: source.layer_digest(i)
        }));
    }

    // The top layer holds the whiteout as overlay wants it.
    let top = tree(&image.lower_dirs()[0]);
    assert!(top["etc/gone"].starts_with("char 0"), "{top:?}");
    // Short links point at the layer directories.
    for (link, dir) in image.lower_links().iter().zip(image.lower_dirs()) {
        assert!(link.starts_with("l/") && link.len() == 28, "{link}");
        assert_eq!(
            fs::canonicalize(store.root().join(link)).unwrap(),
            fs::canonicalize(dir).unwrap()
        );
    }
    let view = merged(&image, tmp.path());
    assert_eq!(view["etc/motd"], "hello\n");
    assert!(!view.contains_key("etc/gone"));
    assert_eq!(view["keep/a"], "a");
    assert_eq!(view["keep/b"], "b");
    assert_eq!(view["opq/new"], "new");
    if is_root() {
        assert!(
            !view.contains_key("opq/old"),
            "opaque directory hides the lower one"
        );
    }

    // A second image on the same base shares its layers.
    let mut layers = base_layers();
    layers.push((layer(&[("extra", FILE, "x")]), Compression::Xz));
    let bigger = MemorySource::new(&layers, "sh");
    let events = std::cell::RefCell::new(Vec::new());
    let second = store
        .add_image(&bigger, &[reference("app:2")], &|p| {
            events.borrow_mut().push(p)
        })
        .unwrap();
    assert_eq!(second.layers[..2], image.layers[..]);
    let events = events.into_inner();
    assert!(events.contains(&Progress::LayerExists {
        digest: bigger.layer_digest(0)
    }));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Progress::LayerDone { .. }))
            .count(),
        1
    );
    assert_eq!(merged(&second, tmp.path())["extra"], "x");
    // Adding it again changes nothing.
    let before = snapshot(&store);
    store.add_image(&bigger, &[], &no_progress).unwrap();
    assert_eq!(snapshot(&store), before);
    assert!(fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn tags_lookups_and_removal() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let one = store
        .add_image(
            &MemorySource::new(&base_layers(), "one"),
            &[reference("localhost/deb:12")],
            &no_progress,
        )
        .unwrap();
    let two = store
        .add_image(
            &MemorySource::new(&base_layers(), "two"),
            &[reference("busybox")],
            &no_progress,
        )
        .unwrap();
    assert_ne!(one.id, two.id);
    assert_eq!(one.layers, two.layers, "same layers, other config");

    for text in [
        "localhost/deb:12",
        one.id.hex(),
        &one.id.to_string(),
        &one.id.hex()[..12],
        &format!("localhost/deb@{}", one.manifest_digest),
    ] {
        assert_eq!(store.resolve(text).unwrap().id, one.id, "{text}");
    }
    assert_eq!(store.resolve("busybox").unwrap().id, two.id);
    assert_eq!(
        store
            .resolve("docker.io/library/busybox:latest")
            .unwrap()
            .id,
        two.id
    );
    assert!(matches!(
        store.resolve("localhost/deb:13"),
        Err(ImageError::NotFound { .. })
    ));
    assert!(matches!(
        store.resolve("Bad/Name"),
        Err(ImageError::InvalidReference { .. })
    ));
    assert!(matches!(
        store.resolve("../etc"),
        Err(ImageError::InvalidReference { .. })
    ));

    // Retagging moves a name; the old image is then untagged.
    store.tag(&one.id, &reference("busybox")).unwrap();
    assert_eq!(store.resolve("busybox").unwrap().id, one.id);
    assert!(store.get(&two.id).unwrap().tags.is_empty());
    let listed: Vec<ImageId> = store.list().unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(listed.len(), 2);

    // Tagged images are not removed unless forced.
    match store.remove_image(&one.id, false) {
        Err(ImageError::ImageTagged { tags, .. }) => {
            assert_eq!(tags, ["busybox:latest", "localhost/deb:12"])
        }
        other => panic!("{other:?}"),
    }
    let removed = store.remove_image(&two.id, false).unwrap();
    assert_eq!(removed.images, std::slice::from_ref(&two.id));
    assert_eq!(removed.layers, 0, "layers are still used");
    assert_eq!(removed.blobs, 2, "config and manifest");
    assert_eq!(store.untag(&reference("busybox")).unwrap(), one.id);
    let removed = store.remove_image(&one.id, true).unwrap();
    assert_eq!(removed.untagged, [reference("localhost/deb:12")]);
    assert_eq!(removed.layers, 2);
    assert!(removed.bytes > 0);
    assert!(store.list().unwrap().is_empty());
    for dir in ["layers", "blobs/sha256", "l", "images", "tmp"] {
        assert!(
            fs::read_dir(store.root().join(dir))
                .unwrap()
                .next()
                .is_none(),
            "{dir} not empty"
        );
    }
}

#[test]
fn ambiguous_id_prefixes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let mut ids = Vec::new();
    // 17 ids over 16 possible first digits: at least two share one.
    for i in 0..17 {
        let source = MemorySource::new(
            &[(layer(&[("f", FILE, "x")]), Compression::None)],
            &format!("c{i}"),
        );
        ids.push(store.add_image(&source, &[], &no_progress).unwrap().id);
    }
    let shared = ids
        .iter()
        .find(|id| ids.iter().filter(|o| o.hex()[..1] == id.hex()[..1]).count() > 1)
        .unwrap();
    let count = ids
        .iter()
        .filter(|o| o.hex()[..1] == shared.hex()[..1])
        .count();
    match store.resolve(&shared.hex()[..1]) {
        Err(ImageError::AmbiguousId { count: n, .. }) => assert_eq!(n, count),
        other => panic!("{other:?}"),
    }
    for id in &ids {
        assert_eq!(store.resolve(id.short()).unwrap().id, *id);
    }
}

#[test]
fn gc_keeps_tagged_and_pinned_images_and_cleans_leftovers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let tagged = store
        .add_image(
            &MemorySource::new(&base_layers(), "a"),
            &[reference("kept")],
            &no_progress,
        )
        .unwrap();
    let pinned = store
        .add_image(
            &MemorySource::new(&[(layer(&[("p", FILE, "p")]), Compression::None)], "b"),
            &[],
            &no_progress,
        )
        .unwrap();
    let loose = store
        .add_image(
            &MemorySource::new(&[(layer(&[("l", FILE, "l")]), Compression::Gzip)], "c"),
            &[],
            &no_progress,
        )
        .unwrap();
    // What a process killed at various points leaves: a tmp dir of a dead
    // pid, a layer without an image, a blob without an image.
    let dead = store.root().join("tmp/2147483647-0-0/diff");
    fs::create_dir_all(&dead).unwrap();
    fs::write(dead.join("junk"), "junk").unwrap();
    let orphan_layer = store.root().join("layers").join("e".repeat(64));
    fs::create_dir_all(orphan_layer.join("diff")).unwrap();
    fs::write(
        store.root().join("blobs/sha256").join("f".repeat(64)),
        "orphan",
    )
    .unwrap();
    fs::write(
        store.root().join(".repositories.json.tmp.2147483647.0"),
        "{",
    )
    .unwrap();
    // Such a store still lists and resolves.
    assert_eq!(store.list().unwrap().len(), 3);

    let pinned_id = pinned.id.clone();
    let removed = store.gc(&|id| *id == pinned_id).unwrap();
    assert_eq!(removed.images, std::slice::from_ref(&loose.id));
    assert_eq!(removed.layers, 2, "the loose image's layer and the orphan");
    assert_eq!(
        removed.blobs, 4,
        "loose layer, config, manifest and the orphan"
    );
    assert!(removed.bytes > 0);
    assert!(!orphan_layer.exists());
    assert!(fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .next()
        .is_none());
    assert!(!store
        .root()
        .join(".repositories.json.tmp.2147483647.0")
        .exists());
    assert_eq!(store.get(&tagged.id).unwrap(), tagged);
    assert_eq!(store.get(&pinned.id).unwrap(), pinned);
    assert!(matches!(
        store.get(&loose.id),
        Err(ImageError::NotFound { .. })
    ));
    // The loose image can come back.
    store
        .add_image(
            &MemorySource::new(&[(layer(&[("l", FILE, "l")]), Compression::Gzip)], "c"),
            &[],
            &no_progress,
        )
        .unwrap();
    // Nothing else to collect when everything is kept.
    let again = store.gc(&|_| true).unwrap();
    assert_eq!((again.images.len(), again.layers, again.blobs), (0, 0, 0));
}

/// Adding `source` fails with an error `check` accepts, the store is
/// unchanged, and it still takes another image.
fn refused(source: &dyn ImageSource, check: impl Fn(&ImageError) -> bool) {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    store
        .add_image(
            &MemorySource::new(&[(layer(&[("base", FILE, "b")]), Compression::None)], "x"),
            &[reference("base")],
            &no_progress,
        )
        .unwrap();
    let before = snapshot(&store);
    let error = store
        .add_image(source, &[reference("evil")], &no_progress)
        .unwrap_err();
    assert!(check(&error), "unexpected error: {error:?}");
    assert!(!error.to_string().is_empty());
    assert_eq!(snapshot(&store), before, "store changed by {error}");
    assert_eq!(store.list().unwrap().len(), 1);
    store
        .add_image(
            &MemorySource::new(&base_layers(), "ok"),
            &[reference("ok")],
            &no_progress,
        )
        .unwrap();
    assert_eq!(store.list().unwrap().len(), 2);
}

#[test]
fn hostile_sources_are_refused_and_leave_the_store_unchanged() {
    let good = MemorySource::new(&base_layers(), "sh");
    let second = good.layer_digest(1);

    // A layer whose content does not match its digest.
    let mut tampered = good.clone();
    let blob = tampered.blobs.get_mut(&second).unwrap();
    let middle = blob.len() / 2;
    blob[middle] ^= 1;
    refused(
        &tampered,
        |e| matches!(e, ImageError::DigestMismatch { what: "layer", expected, .. } if *expected == second),
    );

    // Same bytes, declared size one larger: truncated.
    let mut truncated = good.clone();
    truncated.blobs.get_mut(&second).unwrap().pop();
    refused(
        &truncated,
        |e| matches!(e, ImageError::SizeMismatch { digest, .. } if *digest == second),
    );

    // Data beyond the declared size.
    let mut longer = good.clone();
    longer
        .blobs
        .get_mut(&second)
        .unwrap()
        .extend_from_slice(b"trailing");
    refused(
        &longer,
        |e| matches!(e, ImageError::SizeMismatch { digest, .. } if *digest == second),
    );

    // A huge declared size is refused before anything is read.
    let mut huge = good.clone();
    huge.edit_manifest(|m| {
        m.layers_mut()[1].set_size(u64::MAX);
    });
    refused(
        &huge,
        |e| matches!(e, ImageError::TooLarge { digest, .. } if *digest == second),
    );

    // A config that does not match its digest.
    let mut bad_config = good.clone();
    let config_digest = good.manifest.config().digest().to_string();
    bad_config.blobs.get_mut(&config_digest).unwrap()[0] = b' ';
    refused(
        &bad_config,
        |e| matches!(e, ImageError::DigestMismatch { what: "config", expected, .. } if *expected == config_digest),
    );

    // A layer whose uncompressed content is not the config's diff_id.
    let mut wrong_diff = MemorySource::new(&base_layers(), "sh");
    let other = compress(&layer(&[("other", FILE, "o")]), Compression::Gzip);
    let other_digest = digest_of(&other);
    wrong_diff.blobs.insert(other_digest.clone(), other.clone());
    wrong_diff.edit_manifest(|m| {
        m.layers_mut()[1] = Descriptor::new(
            MediaType::ImageLayerGzip,
            other.len() as u64,
            other_digest.parse::<oci_spec::image::Digest>().unwrap(),
        )
    });
    refused(&wrong_diff, |e| {
        matches!(
            e,
            ImageError::DigestMismatch {
                what: "uncompressed layer",
                ..
            }
        )
    });

    // Manifest bytes that say something else than the manifest read.
    let mut two_faced = good.clone();
    two_faced.manifest_bytes = MemorySource::new(&base_layers(), "other").manifest_bytes;
    refused(&two_faced, |e| matches!(e, ImageError::InvalidImage { .. }));

    // Among many layers read in parallel, the bad one is named.
    let mut many: Vec<(Vec<u8>, Compression)> = (0..8)
        .map(|i| {
            let content = format!("{i}").repeat(300_000);
            (
                layer(&[(&format!("f{i}"), FILE, &content)]),
                Compression::Gzip,
            )
        })
        .collect();
    many[5].0 = layer(&[("../escape", FILE, "x")]);
    refused(
        &MemorySource::new(&many, "sh"),
        |e| matches!(e, ImageError::UnsafeEntry { entry, .. } if entry == "../escape"),
    );

    // Manifest and config disagree on the number of layers.
    let mut missing_layer = good.clone();
    missing_layer.edit_manifest(|m| {
        m.layers_mut().pop();
    });
    refused(&missing_layer, |e| {
        matches!(e, ImageError::InvalidImage { .. })
    });

    // A digest that is not sha256 hex cannot name a path.
    let mut odd_digest = good.clone();
    odd_digest.edit_manifest(|m| {
        m.layers_mut()[0].set_digest(format!("sha512:{}", "a".repeat(128)).parse().unwrap());
    });
    refused(&odd_digest, |e| {
        matches!(e, ImageError::InvalidImage { .. })
    });

    // Escapes in a second layer: `..`, through a symlink of the first
    // layer's... own layer, and hard links out of the layer.
    for evil in [
        layer(&[("../escape", FILE, "x")]),
        layer(&[("a", EntryType::Symlink, "/etc"), ("a/passwd", FILE, "x")]),
        layer(&[("h", EntryType::Link, "../../etc/shadow")]),
        layer(&[("h", EntryType::Link, "etc/motd")]),
        layer(&[("etc/.wh..", FILE, "")]),
        layer(&[(".wh...", FILE, "")]),
    ] {
        let mut layers = base_layers();
        layers.push((evil, Compression::Gzip));
        refused(&MemorySource::new(&layers, "sh"), |e| {
            matches!(e, ImageError::UnsafeEntry { .. })
        });
    }

    // Not a tar at all.
    let mut layers = base_layers();
    layers.push((vec![0x42; 3000], Compression::Gzip));
    refused(&MemorySource::new(&layers, "sh"), |e| {
        matches!(e, ImageError::Archive { .. })
    });

    // An image for another OS.
    let mut windows = good.clone();
    let config_digest = good.manifest.config().digest().to_string();
    let mut config: ImageConfiguration =
        serde_json::from_slice(&good.blobs[&config_digest]).unwrap();
    config.set_os(oci_spec::image::Os::Windows);
    let bytes = serde_json::to_vec(&config).unwrap();
    let digest = digest_of(&bytes);
    windows.blobs.insert(digest.clone(), bytes.clone());
    windows.edit_manifest(|m| {
        m.set_config(Descriptor::new(
            MediaType::ImageConfig,
            bytes.len() as u64,
            digest.parse::<oci_spec::image::Digest>().unwrap(),
        ));
    });
    refused(&windows, |e| matches!(e, ImageError::InvalidImage { .. }));
}

#[test]
fn oci_archive_and_layout_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("a")).unwrap();
    let source = MemorySource::new(&base_layers(), "sh");
    let names = [reference("localhost/deb:12"), reference("busybox")];
    let image = store.add_image(&source, &names, &no_progress).unwrap();

    let mut archive = Vec::new();
    store
        .save_oci_archive(&[(&image, &names)], &mut archive)
        .unwrap();
    let file = tmp.path().join("oci.tar");
    fs::write(&file, &archive).unwrap();
    let other = ImageStore::open(tmp.path().join("b")).unwrap();
    let loaded = other
        .load_path(&file, &TargetPlatform::host(), &no_progress)
        .unwrap();
    assert_eq!(loaded.len(), 1);
    let (back, back_names) = &loaded[0];
    assert_eq!(back.id, image.id);
    assert_eq!(
        back.manifest_digest, image.manifest_digest,
        "manifest kept byte for byte"
    );
    let mut expected = names.to_vec();
    expected.sort();
    assert_eq!(back.tags, expected);
    assert_eq!(back_names.len(), 2);
    assert_eq!(merged(back, tmp.path()), merged(&image, tmp.path()));

    // The same as an OCI layout directory, gzip-compressed archive, and on
    // a stream.
    let layout = tmp.path().join("layout");
    fs::create_dir(&layout).unwrap();
    let mut unpacked = tar::Archive::new(&archive[..]);
    unpacked.unpack(&layout).unwrap();
    let third = ImageStore::open(tmp.path().join("c")).unwrap();
    assert_eq!(
        third
            .load_path(&layout, &TargetPlatform::host(), &no_progress)
            .unwrap()[0]
            .0
            .id,
        image.id
    );
    let gz = tmp.path().join("oci.tar.whatever");
    fs::write(&gz, compress(&archive, Compression::Gzip)).unwrap();
    let fourth = ImageStore::open(tmp.path().join("d")).unwrap();
    assert_eq!(
        fourth
            .load_path(&gz, &TargetPlatform::host(), &no_progress)
            .unwrap()[0]
            .0
            .id,
        image.id
    );
    let fifth = ImageStore::open(tmp.path().join("e")).unwrap();
    let zst = compress(&archive, Compression::Zstd);
    assert_eq!(
        fifth
            .load(&mut &zst[..], &TargetPlatform::host(), &no_progress)
            .unwrap()[0]
            .0
            .id,
        image.id
    );
    assert!(
        fs::read_dir(fifth.root().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "spool removed"
    );

    // An image archive given to import is refused, and nothing is kept.
    let before = snapshot(&store);
    match store.import(&file, None) {
        Err(ImageError::IsImageArchive { marker, .. }) => assert_eq!(marker, "oci-layout"),
        other => panic!("{other:?}"),
    }
    let mut docker = Vec::new();
    store
        .save_docker_archive(&[(&image, &names)], &mut docker)
        .unwrap();
    match store.import_reader(&mut &docker[..], "docker.tar", None, None) {
        Err(ImageError::IsImageArchive { marker, .. }) => assert_eq!(marker, "manifest.json"),
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot(&store), before);
}

#[test]
fn docker_archive_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("a")).unwrap();
    let names = [reference("localhost/deb:12")];
    let image = store
        .add_image(
            &MemorySource::new(&base_layers(), "sh"),
            &names,
            &no_progress,
        )
        .unwrap();
    let mut archive = Vec::new();
    store
        .save_docker_archive(&[(&image, &names)], &mut archive)
        .unwrap();
    let mut entries = BTreeMap::new();
    for entry in tar::Archive::new(&archive[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        entries.insert(name, data);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    let config_name = format!("{}.json", image.id.hex());
    assert_eq!(manifest[0]["Config"], config_name.as_str());
    assert_eq!(manifest[0]["RepoTags"][0], "localhost/deb:12");
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for (layer, diff_id) in layers.iter().zip(image.config.rootfs().diff_ids()) {
        // Uncompressed, named by diff_id, hashing to it.
        let name = layer.as_str().unwrap();
        assert_eq!(
            name,
            format!("{}/layer.tar", diff_id.trim_start_matches("sha256:"))
        );
        assert_eq!(digest_of(&entries[name]), *diff_id);
    }
    assert_eq!(digest_of(&entries[&config_name]), image.id.digest());
    let repositories: serde_json::Value = serde_json::from_slice(&entries["repositories"]).unwrap();
    assert!(repositories["localhost/deb"]["12"].is_string());

    // A docker archive whose layers are gzip-compressed (some tools write
    // them so) loads too.
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in &entries {
        let data = if name.ends_with("layer.tar") {
            compress(data, Compression::Gzip)
        } else {
            data.clone()
        };
        let mut header = Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, &data[..]).unwrap();
    }
    let compressed = builder.into_inner().unwrap();
    let other = ImageStore::open(tmp.path().join("b")).unwrap();
    let loaded = other
        .load(&mut &compressed[..], &TargetPlatform::host(), &no_progress)
        .unwrap();
    assert_eq!(loaded[0].0.id, image.id);
    assert_eq!(loaded[0].1, names);
    assert_eq!(merged(&loaded[0].0, tmp.path()), merged(&image, tmp.path()));
}

/// An OCI layout directory written by hand.
fn write_layout(dir: &Path, blobs: &[&[u8]], index: &[u8]) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for blob in blobs {
        fs::write(dir.join("blobs/sha256").join(sha256_hex(blob)), blob).unwrap();
    }
    fs::write(dir.join("index.json"), index).unwrap();
}

fn manifest_descriptor(bytes: &[u8], platform: Option<(&str, &str)>) -> Descriptor {
    let mut descriptor = Descriptor::new(
        MediaType::ImageManifest,
        bytes.len() as u64,
        digest_of(bytes).parse::<oci_spec::image::Digest>().unwrap(),
    );
    if let Some((os, arch)) = platform {
        descriptor.set_platform(Some(
            PlatformBuilder::default()
                .os(os)
                .architecture(arch)
                .build()
                .unwrap(),
        ));
    }
    descriptor
}

#[test]
fn hostile_layouts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let source = MemorySource::new(&base_layers(), "sh");
    let blobs: Vec<&[u8]> = source
        .blobs
        .values()
        .map(Vec::as_slice)
        .chain([source.manifest_bytes.as_slice()])
        .collect();
    let before = snapshot(&store);

    // The index names a manifest by a digest its content does not have.
    let wrong = tmp.path().join("wrong-digest");
    let mut descriptor = manifest_descriptor(&source.manifest_bytes, None);
    let fake = digest_of(b"something else");
    descriptor.set_digest(fake.parse::<oci_spec::image::Digest>().unwrap());
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .manifests(vec![descriptor])
        .build()
        .unwrap();
    write_layout(&wrong, &blobs, &serde_json::to_vec(&index).unwrap());
    fs::write(
        wrong
            .join("blobs/sha256")
            .join(fake.trim_start_matches("sha256:")),
        &source.manifest_bytes,
    )
    .unwrap();
    match store.load_path(&wrong, &TargetPlatform::host(), &no_progress) {
        Err(ImageError::DigestMismatch {
            what: "manifest",
            expected,
            ..
        }) => assert_eq!(expected, fake),
        other => panic!("{other:?}"),
    }

    // An index without the wanted platform.
    let multi = tmp.path().join("multi");
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .manifests(vec![
            manifest_descriptor(&source.manifest_bytes, Some(("linux", "arm64"))),
            manifest_descriptor(&source.manifest_bytes, Some(("linux", "s390x"))),
        ])
        .build()
        .unwrap();
    write_layout(&multi, &blobs, &serde_json::to_vec(&index).unwrap());
    let amd64 = "linux/amd64".parse::<TargetPlatform>().unwrap();
    match store.load_path(&multi, &amd64, &no_progress) {
        Err(ImageError::NoMatchingPlatform {
            wanted, available, ..
        }) => {
            assert_eq!(wanted, "linux/amd64");
            assert_eq!(available, ["linux/arm64", "linux/s390x"]);
        }
        other => panic!("{other:?}"),
    }
    // ... which resolves when asked for a platform it has.
    let arm = "linux/arm64".parse::<TargetPlatform>().unwrap();
    let loaded = store.load_path(&multi, &arm, &no_progress).unwrap();
    assert_eq!(loaded.len(), 1);
    store.remove_image(&loaded[0].0.id, true).unwrap();

    // A blob missing from the layout.
    let missing = tmp.path().join("missing");
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .manifests(vec![manifest_descriptor(&source.manifest_bytes, None)])
        .build()
        .unwrap();
    let without_layer: Vec<&[u8]> = blobs
        .iter()
        .copied()
        .filter(|b| digest_of(b) != source.layer_digest(1))
        .collect();
    write_layout(
        &missing,
        &without_layer,
        &serde_json::to_vec(&index).unwrap(),
    );
    assert!(matches!(
        store.load_path(&missing, &amd64, &no_progress),
        Err(ImageError::InvalidImage { .. })
    ));

    // Neither format.
    let neither = tmp.path().join("neither.tar");
    fs::write(&neither, layer(&[("etc/motd", FILE, "x")])).unwrap();
    assert!(matches!(
        store.load_path(&neither, &amd64, &no_progress),
        Err(ImageError::UnknownArchiveFormat { .. })
    ));
    assert_eq!(snapshot(&store), before);
}

/// A layer of a store written by an older berth, which kept uncompressed
/// blobs instead of tar-split metadata, and whose blob is now missing.
fn as_old_layer_without_blob(store: &ImageStore, image: &crate::Image) {
    let layer = &image.layers[0];
    let dir = store.layer_dir(&layer.chain_id).unwrap();
    fs::remove_file(dir.join(crate::tar_split::TAR_SPLIT_FILE)).unwrap();
    let blob = store.blob_path(&layer.blob_digest).unwrap();
    assert!(!blob.exists(), "no copy of an uncompressed layer is stored");
}

#[test]
fn a_missing_generated_blob_is_made_again() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let tar = layer(&[("etc/", DIR, ""), ("etc/motd", FILE, "hi")]);
    let image = store
        .import_reader(&mut &tar[..], "motd.tar", Some(&reference("motd")), None)
        .unwrap();
    let none: &[Reference] = &[];
    // An old layer without its blob: its blob is its uncompressed tar,
    // which is written again from the layer directory... only if that
    // gives the same bytes. A tar this crate wrote does.
    let mut generated = Vec::new();
    crate::write_diff_tar(&image.lower_dirs()[0], &mut generated).unwrap();
    let regenerated = store
        .import_reader(
            &mut &generated[..],
            "generated.tar",
            Some(&reference("generated")),
            None,
        )
        .unwrap();
    as_old_layer_without_blob(&store, &regenerated);
    let blob = store.blob_path(&regenerated.layers[0].blob_digest).unwrap();
    let mut again = Vec::new();
    store
        .save_docker_archive(&[(&regenerated, none)], &mut again)
        .unwrap();
    assert!(blob.is_file(), "blob made again");
    assert_eq!(
        digest_of(&fs::read(&blob).unwrap()),
        regenerated.layers[0].blob_digest
    );
    // A blob that cannot be made again is a typed error.
    if image.layers[0].blob_digest != regenerated.layers[0].blob_digest {
        as_old_layer_without_blob(&store, &image);
        assert!(matches!(
            store.save_oci_archive(&[(&image, none)], &mut Vec::new()),
            Err(ImageError::BlobMissing { .. })
        ));
    }
}

#[test]
fn the_previous_format_is_converted_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("images");
    // What the previous version left: two names on one layer, one on another.
    let layer_a = "a".repeat(64);
    let layer_b = "b".repeat(64);
    for (id, file, content) in [
        (&layer_a, "etc/motd", "old a\n"),
        (&layer_b, "bin/tool", "tool"),
    ] {
        let rootfs = root.join("layers").join(id).join("rootfs");
        fs::create_dir_all(rootfs.join(Path::new(file).parent().unwrap())).unwrap();
        fs::write(rootfs.join(file), content).unwrap();
        fs::write(
            root.join("layers").join(id).join("layer.json"),
            format!(r#"{{"id":"{id}","size":5}}"#),
        )
        .unwrap();
    }
    fs::create_dir_all(root.join("names")).unwrap();
    for (name, id) in [
        ("busybox", &layer_a),
        ("app:1.0", &layer_a),
        ("tool", &layer_b),
    ] {
        fs::write(
            root.join("names").join(format!("{name}.json")),
            format!(
                r#"{{"name":"{name}","id":"{id}","size":5,"created":1700000000,"config":{{"cmd":["sh"],"env":["A=1"],"workdir":"/w"}}}}"#
            ),
        )
        .unwrap();
    }
    // Interrupted once: a staging directory without files is dropped.
    fs::create_dir_all(
        root.join("layers")
            .join(format!("{}.migrating", "c".repeat(64))),
    )
    .unwrap();

    let store = ImageStore::open(&root).unwrap();
    assert!(!root.join("names").exists());
    let images = store.list().unwrap();
    assert_eq!(images.len(), 2, "same content, same image");
    let app = store.resolve("app:1.0").unwrap();
    assert_eq!(store.resolve("busybox").unwrap().id, app.id);
    let config = app.run_config();
    assert_eq!(config.cmd().as_deref().unwrap(), ["sh"]);
    assert_eq!(config.env().as_deref().unwrap(), ["A=1"]);
    assert_eq!(config.working_dir().as_deref(), Some("/w"));
    assert_eq!(app.created(), Some("2023-11-14T22:13:20.000000000Z"));
    assert_eq!(
        fs::read_to_string(app.lower_dirs()[0].join("etc/motd")).unwrap(),
        "old a\n"
    );
    // Old containers' lowerdir path still leads to the files, and the old
    // id still finds the image.
    let old_path = root.join("layers").join(&layer_a).join("rootfs/etc/motd");
    assert_eq!(fs::read_to_string(old_path).unwrap(), "old a\n");
    assert_eq!(store.resolve(&layer_a).unwrap().id, app.id);
    assert!(!root
        .join("layers")
        .join(format!("{}.migrating", "c".repeat(64)))
        .exists());

    // Opening again changes nothing; gc keeps the aliases of kept layers.
    let before = snapshot(&store);
    let store = ImageStore::open(&root).unwrap();
    assert_eq!(snapshot(&store), before);
    store.gc(&|_| false).unwrap();
    assert!(root.join("layers").join(&layer_a).join("rootfs").exists());
    // Saved and loaded, the converted image keeps its id.
    let mut saved = Vec::new();
    let none: &[Reference] = &[];
    store
        .save_docker_archive(&[(&app, none)], &mut saved)
        .unwrap();
    let other = ImageStore::open(tmp.path().join("other")).unwrap();
    assert_eq!(
        other
            .load(&mut &saved[..], &TargetPlatform::host(), &no_progress)
            .unwrap()[0]
            .0
            .id,
        app.id
    );
    // Removing the image removes the alias with the layer.
    let tool = store.resolve("tool").unwrap();
    store.remove_image(&tool.id, true).unwrap();
    assert!(!root.join("layers").join(&layer_b).exists());
}

#[test]
fn an_interrupted_conversion_is_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("images");
    let id = "d".repeat(64);
    let rootfs = root.join("layers").join(&id).join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    fs::write(rootfs.join("f"), "content").unwrap();
    fs::create_dir_all(root.join("names")).unwrap();
    let record = format!(r#"{{"name":"x","id":"{id}","size":7,"created":0}}"#);
    fs::write(root.join("names/x.json"), &record).unwrap();
    // First conversion, then put the name record back as if the process
    // had been killed before removing it.
    let store = ImageStore::open(&root).unwrap();
    let first = store.resolve("x").unwrap();
    fs::create_dir_all(root.join("names")).unwrap();
    fs::write(root.join("names/x.json"), &record).unwrap();
    let store = ImageStore::open(&root).unwrap();
    assert_eq!(store.resolve("x").unwrap(), first);
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(
        fs::read_to_string(first.lower_dirs()[0].join("f")).unwrap(),
        "content"
    );
}

#[test]
fn concurrent_adds_keep_the_store_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("images");
    let handles: Vec<_> = (0..3)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                let store = ImageStore::open(&root).unwrap();
                for i in 0..4 {
                    let content = format!("{}", i % 2);
                    let mut layers = base_layers();
                    layers.push((layer(&[("f", FILE, &content)]), Compression::None));
                    let source = MemorySource::new(&layers, &format!("t{t}-{i}"));
                    store
                        .add_image(
                            &source,
                            &[reference(&format!("t{t}:{i}")), reference("shared")],
                            &no_progress,
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let store = ImageStore::open(&root).unwrap();
    let images = store.list().unwrap();
    assert_eq!(images.len(), 12);
    assert_eq!(
        fs::read_dir(root.join("layers")).unwrap().count(),
        4,
        "2 base + 2 tops"
    );
    for image in &images {
        assert!(image.lower_dirs()[0].join("f").is_file());
    }
    assert_eq!(images.iter().filter(|i| !i.tags.is_empty()).count(), 12);
    assert!(fs::read_dir(root.join("tmp")).unwrap().next().is_none());
}

const KILL_STORE_ENV: &str = "BERTH_IMAGE_TEST_KILL_STORE";

/// Run by `killed_at_any_point_the_store_stays_usable` in a child process
/// (it does nothing when run on its own): adds, tags, untags and collects
/// images until it is killed.
#[test]
#[ignore = "run as a child process by killed_at_any_point_the_store_stays_usable"]
fn child_keeps_changing_the_store() {
    let Some(root) = std::env::var_os(KILL_STORE_ENV) else {
        return;
    };
    let store = ImageStore::open(PathBuf::from(root)).unwrap();
    for round in 0u64.. {
        let big: String = (0..200_000u64)
            .map(|i| char::from(b'a' + ((i * 7 + round) % 26) as u8))
            .collect();
        let mut layers = base_layers();
        layers.push((layer(&[("big", FILE, &big)]), Compression::Gzip));
        layers.push((
            layer(&[(&format!("f{round}"), FILE, "x")]),
            Compression::Zstd,
        ));
        let source = MemorySource::new(&layers, &format!("round {round}"));
        let name = reference(&format!("churn:{}", round % 3));
        store
            .add_image(&source, std::slice::from_ref(&name), &no_progress)
            .unwrap();
        if round % 2 == 1 {
            store.untag(&name).unwrap();
            store.gc(&|_| false).unwrap();
        }
    }
}

#[test]
fn killed_at_any_point_the_store_stays_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let exe = std::env::current_exe().unwrap();
    let mut churned = 0;
    for round in 0..8u64 {
        let mut child = std::process::Command::new(&exe)
            .args([
                "store_tests::child_keeps_changing_the_store",
                "--exact",
                "--ignored",
                "--test-threads=1",
            ])
            .env(KILL_STORE_ENV, &root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(40 + round * 37));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        child.wait().unwrap();

        // Whatever the child was doing: every listed image is whole.
        let store = ImageStore::open(&root).unwrap();
        let images = store.list().unwrap();
        churned += images
            .iter()
            .filter(|i| i.tags.iter().any(|t| t.repository() == "library/churn"))
            .count();
        for image in images {
            for dir in image.lower_dirs() {
                assert!(dir.is_dir(), "round {round}: {}", dir.display());
            }
            let resolved = store.resolve(image.id.hex()).unwrap();
            assert_eq!(resolved.id, image.id);
            let mut saved = Vec::new();
            let none: &[Reference] = &[];
            store
                .save_oci_archive(&[(&image, none)], &mut saved)
                .unwrap();
        }
        store.gc(&|_| false).unwrap();
        assert!(
            fs::read_dir(root.join("tmp")).unwrap().next().is_none(),
            "round {round}: gc left tmp entries"
        );
        for entry in fs::read_dir(root.join("layers")).unwrap().flatten() {
            assert!(
                entry.path().join("layer.json").is_file(),
                "round {round}: half-made layer {}",
                entry.path().display()
            );
        }
        store
            .add_image(
                &MemorySource::new(&base_layers(), "after"),
                &[reference("after")],
                &no_progress,
            )
            .unwrap();
    }
    assert!(churned > 0, "the child never got to store an image");
}
