//! Layers kept as unpacked files plus tar-split metadata: loaded, saved
//! back byte for byte, checked against their diff_ids, no blob copy kept.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use tar::{EntryType, Header};

use crate::digest::sha256_hex;
use crate::tar_split::{REPLACED_DIR, TAR_SPLIT_FILE};
use crate::{Image, ImageError, ImageStore, TargetPlatform};

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Pseudo-random bytes (xorshift), so that nothing compresses them.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(1000);
    header.set_gid(1000);
    header.set_mtime(1_700_000_000);
    header.set_size(size);
    header
}

fn file(builder: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = header(EntryType::Regular, 0o644, data.len() as u64);
    builder.append_data(&mut h, name, data).unwrap();
}

fn link(builder: &mut tar::Builder<Vec<u8>>, kind: EntryType, name: &str, target: &str) {
    let mut h = header(kind, 0o777, 0);
    builder.append_link(&mut h, name, target).unwrap();
}

fn dir(builder: &mut tar::Builder<Vec<u8>>, name: &str) {
    let mut h = header(EntryType::Directory, 0o755, 0);
    builder.append_data(&mut h, name, std::io::empty()).unwrap();
}

/// A layer tar with everything a tar-split must give back: hard links,
/// symlinks, GNU long names, PAX records (long names, xattrs), empty files,
/// files without padding, a large file, whiteouts, an opaque directory, a
/// file and a directory replaced by later entries of the same tar, and
/// zero blocks after the end-of-archive marker (GNU tar's 10 KiB records).
fn rich_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    dir(&mut b, "etc/");
    file(&mut b, "etc/motd", b"hello\n");
    file(&mut b, "etc/empty", b"");
    file(&mut b, "etc/block", &[7u8; 1024]);
    link(&mut b, EntryType::Link, "etc/motd.hard", "etc/motd");
    link(&mut b, EntryType::Symlink, "etc/motd.sym", "/etc/motd");
    link(&mut b, EntryType::Symlink, "etc/dangling", "../nowhere");
    let long = format!("usr/share/{}/file.txt", "long-directory-name".repeat(8));
    file(&mut b, &long, b"behind a GNU long name\n");
    // PAX: a long name with a ustar header, and an extended attribute.
    let pax_name = format!("opt/{}", "p".repeat(150));
    b.append_pax_extensions([
        ("path", pax_name.as_bytes()),
        ("SCHILY.xattr.user.comment", &b"kept in the headers"[..]),
    ])
    .unwrap();
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::Regular);
    h.set_path("opt/short").unwrap();
    h.set_mode(0o600);
    h.set_size(3);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append(&h, &b"pax"[..]).unwrap();
    file(&mut b, "var/big", &noise(300 << 10, 0x1234_5678));
    file(&mut b, "var/zeros", &vec![0u8; 70_000]);
    // Whiteouts of lower layers' files, and an opaque directory.
    file(&mut b, "etc/.wh.shadow", b"");
    dir(&mut b, "srv/");
    file(&mut b, "srv/.wh..wh..opq", b"");
    // Replaced within the layer: the first contents are still needed.
    file(&mut b, "etc/dup", b"first version");
    file(&mut b, "etc/dup", b"second, longer version");
    dir(&mut b, "data/");
    file(&mut b, "data/inner", b"inside a directory that goes away");
    file(&mut b, "data/other", &noise(5000, 99));
    file(&mut b, "data", b"now a file");
    file(&mut b, "tmp/deleted", b"deleted by its own layer");
    file(&mut b, "tmp/.wh.deleted", b"");
    let mut tar = b.into_inner().unwrap();
    tar.resize(tar.len().div_ceil(10240) * 10240, 0);
    tar
}

fn second_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "etc/motd", b"changed in the second layer\n");
    file(&mut b, "etc/.wh.empty", b"");
    file(&mut b, "var/more", &noise(100 << 10, 7));
    b.into_inner().unwrap()
}

/// A docker archive (as `docker save` writes it) of `layers`.
fn docker_archive(layers: &[Vec<u8>], tag: &str) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| digest_of(l)).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["sh"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", sha256_hex(&config));
    let layer_names: Vec<String> = layers
        .iter()
        .map(|l| format!("{}/layer.tar", sha256_hex(l)))
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": layer_names,
    }]);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&config_name, &config);
    for (name, layer) in layer_names.iter().zip(layers) {
        add(name, layer);
    }
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap()
}

fn entries(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut entries = BTreeMap::new();
    for entry in tar::Archive::new(archive).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        entries.insert(name, data);
    }
    entries
}

fn load(store: &ImageStore, archive: &[u8]) -> Image {
    let loaded = store
        .load(&mut &archive[..], &TargetPlatform::host(), &|_| {})
        .unwrap();
    loaded.into_iter().next().unwrap().0
}

fn save_docker(store: &ImageStore, image: &Image) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    store.save_docker_archive(&[(image, &[])], &mut out)?;
    Ok(out)
}

/// The layer tars of a saved docker archive, bottom first.
fn saved_layers(saved: &[u8]) -> Vec<Vec<u8>> {
    let entries = entries(saved);
    let manifest: serde_json::Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| entries[name.as_str().unwrap()].clone())
        .collect()
}

fn files_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn loaded_layers_are_saved_back_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let layers = vec![rich_layer(), second_layer()];
    let image = load(&store, &docker_archive(&layers, "localhost/rich:1"));
    let diff_ids: Vec<String> = layers.iter().map(|l| digest_of(l)).collect();
    assert_eq!(image.config.rootfs().diff_ids(), &diff_ids);

    // The first layer's tar replaced three of its own files: they are kept
    // aside, and the unpacked layer shows the last versions.
    let first = store.layer_dir(&image.layers[0].chain_id).unwrap();
    assert_eq!(fs::read_dir(first.join(REPLACED_DIR)).unwrap().count(), 4);
    let top = &image.layers[0].dir;
    assert_eq!(
        fs::read(top.join("etc/dup")).unwrap(),
        b"second, longer version"
    );
    assert_eq!(fs::read(top.join("data")).unwrap(), b"now a file");
    // Deleted by its own layer: an overlay whiteout now.
    let deleted = fs::symlink_metadata(top.join("tmp/deleted")).unwrap();
    assert!(deleted.file_type().is_char_device());

    let saved = save_docker(&store, &image).unwrap();
    assert!(
        saved_layers(&saved) == layers,
        "the saved layer tars are the loaded ones, byte for byte"
    );
    // The OCI archive names the same blobs.
    let mut oci = Vec::new();
    store.save_oci_archive(&[(&image, &[])], &mut oci).unwrap();
    let blobs = entries(&oci);
    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        let name = format!("blobs/sha256/{}", diff_id.trim_start_matches("sha256:"));
        assert!(blobs[&name] == *layer, "{name}");
    }

    // Loaded into another store, the saved archive gives the same image.
    let other = ImageStore::open(tmp.path().join("other")).unwrap();
    assert_eq!(load(&other, &saved).id, image.id);
}

#[test]
fn the_store_keeps_no_copy_of_uncompressed_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let layers = vec![rich_layer(), second_layer()];
    let image = load(&store, &docker_archive(&layers, "localhost/rich:1"));
    let layer_bytes: u64 = layers.iter().map(|l| l.len() as u64).sum();
    // Only the manifest and the config are blobs.
    let blobs = files_bytes(&store.blobs_dir());
    assert!(
        blobs < 4096,
        "{blobs} bytes of blobs for {layer_bytes} of layers"
    );
    for layer in &image.layers {
        assert!(!store.blob_path(&layer.blob_digest).unwrap().exists());
        let split = store
            .layer_dir(&layer.chain_id)
            .unwrap()
            .join(TAR_SPLIT_FILE);
        let split_bytes = fs::metadata(&split).unwrap().len();
        assert!(
            split_bytes < 4096,
            "tar-split metadata of {split_bytes} bytes"
        );
    }

    // An imported compressed root filesystem keeps no copy either; its
    // blob is the uncompressed tar.
    let tar = rich_layer();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let imported = store
        .import_reader(&mut &gz[..], "rootfs.tar.gz", None, None)
        .unwrap();
    assert_eq!(imported.layers[0].blob_digest, digest_of(&tar));
    assert!(!store
        .blob_path(&imported.layers[0].blob_digest)
        .unwrap()
        .exists());
    assert!(saved_layers(&save_docker(&store, &imported).unwrap())[0] == tar);
}

#[test]
fn a_changed_unpacked_layer_fails_the_save_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let layers = vec![rich_layer(), second_layer()];
    let image = load(&store, &docker_archive(&layers, "localhost/rich:1"));
    let top = image.layers[0].dir.clone();
    let check = |what: &str| {
        let error = save_docker(&store, &image).expect_err(what).to_string();
        assert!(!error.contains('\n'), "{what}: one line: {error}");
        assert!(
            error.contains("changed after the image was stored"),
            "{what}: {error}"
        );
        let mut oci = Vec::new();
        assert!(
            store.save_oci_archive(&[(&image, &[])], &mut oci).is_err(),
            "{what}: oci archive"
        );
    };

    // Same size, other content: found by the digest at the end.
    let motd = top.join("etc/motd");
    fs::write(&motd, b"HELLO\n").unwrap();
    check("content changed");
    fs::write(&motd, b"hello\n").unwrap();
    assert!(save_docker(&store, &image).is_ok(), "restored");

    // Shorter.
    fs::write(&motd, b"hi\n").unwrap();
    check("file shortened");
    fs::write(&motd, b"hello\n").unwrap();

    // Replaced by a symlink to a host file: never followed.
    let big = top.join("var/big");
    let kept = fs::read(&big).unwrap();
    fs::remove_file(&big).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &big).unwrap();
    check("file replaced by a symlink");
    fs::remove_file(&big).unwrap();
    fs::write(&big, &kept).unwrap();

    // A file kept aside changed.
    let replaced = store
        .layer_dir(&image.layers[0].chain_id)
        .unwrap()
        .join(REPLACED_DIR);
    let aside = fs::read_dir(&replaced)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let original = fs::read(&aside).unwrap();
    let mut changed = original.clone();
    changed[0] ^= 1;
    fs::write(&aside, &changed).unwrap();
    check("replaced file changed");
    fs::write(&aside, &original).unwrap();

    assert!(saved_layers(&save_docker(&store, &image).unwrap()) == layers);
}

#[test]
fn layers_of_an_older_store_are_read_from_their_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let layers = vec![rich_layer()];
    let image = load(&store, &docker_archive(&layers, "localhost/old:1"));
    // What an older berth left: the blob, no tar-split metadata.
    let layer = &image.layers[0];
    fs::write(store.blob_path(&layer.blob_digest).unwrap(), &layers[0]).unwrap();
    let dir = store.layer_dir(&layer.chain_id).unwrap();
    fs::remove_file(dir.join(TAR_SPLIT_FILE)).unwrap();
    // The blob is what is read, whatever the unpacked files say.
    fs::write(layer.dir.join("etc/motd"), b"HELLO\n").unwrap();
    assert!(saved_layers(&save_docker(&store, &image).unwrap()) == layers);
    // The store opens again unchanged and still uses the blob.
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    assert!(store.blob_path(&layer.blob_digest).unwrap().exists());
    assert!(saved_layers(&save_docker(&store, &image).unwrap()) == layers);
}

#[test]
fn compressed_pulled_layers_keep_their_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    // An OCI archive whose layer is gzip-compressed, as a registry serves.
    let tar = second_layer();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let layout = tmp.path().join("layout");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let put = |bytes: &[u8]| {
        fs::write(layout.join("blobs/sha256").join(sha256_hex(bytes)), bytes).unwrap();
        digest_of(bytes)
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [digest_of(&tar)] },
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put(&config), "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": put(&gz), "size": gz.len(),
        }],
    }))
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": put(&manifest), "size": manifest.len(),
        }],
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let loaded = store
        .load_path(&layout, &TargetPlatform::host(), &|_| {})
        .unwrap();
    let image = &loaded[0].0;
    // Its digest is the manifest's: the compressed bytes are kept.
    assert_eq!(image.manifest_digest, digest_of(&manifest));
    assert_eq!(
        fs::read(store.blob_path(&digest_of(&gz)).unwrap()).unwrap(),
        gz
    );
    let dir = store.layer_dir(&image.layers[0].chain_id).unwrap();
    assert!(!dir.join(TAR_SPLIT_FILE).exists());
    let mut oci = Vec::new();
    store.save_oci_archive(&[(image, &[])], &mut oci).unwrap();
    let saved = entries(&oci);
    assert!(saved[&format!("blobs/sha256/{}", sha256_hex(&gz))] == gz);
    assert!(saved_layers(&save_docker(&store, image).unwrap())[0] == tar);
}
