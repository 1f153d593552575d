//! The busybox image both clients run, as an OCI archive (an image
//! layout in a tar) built here: no registry is reachable.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{host_busybox, make_busybox_rootfs, TarBuilder};

/// The image both clients get, imported from [`write_busybox_oci_archive`].
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:latest";

/// Write an OCI archive (image layout in a tar) of a busybox image named
/// [`BUSYBOX_IMAGE`]: the root of [`make_busybox_rootfs`] with every
/// applet linked, one uncompressed layer. Both `podman load` and
/// `ctr image import` read it.
pub fn write_busybox_oci_archive(path: &Path) {
    let work = tempfile::tempdir().expect("create a directory for the image layer");
    let rootfs = work.path().join("rootfs");
    make_busybox_rootfs(&rootfs);
    link_all_applets(&rootfs);
    let layer_path = work.path().join("layer.tar");
    let status = Command::new("tar")
        .args(["--numeric-owner", "--sort=name", "-C"])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer_path)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(status.success(), "tar of the busybox root failed");
    let layer = fs::read(&layer_path).expect("read the layer");

    let layer_digest = sha256_digest(&layer);
    let config = serde_json::json!({
        "architecture": oci_architecture(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    })
    .to_string();
    let config_digest = sha256_digest(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    })
    .to_string();
    let manifest_digest = sha256_digest(manifest.as_bytes());
    // podman takes the name from `ref.name` when it is a full reference;
    // containerd reads its own annotation.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "org.opencontainers.image.ref.name": BUSYBOX_IMAGE,
                "io.containerd.image.name": BUSYBOX_IMAGE,
            },
        }],
    })
    .to_string();

    let blob = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let archive = TarBuilder::new()
        .file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)
        .file("index.json", 0o644, index.as_bytes())
        .dir("blobs", 0o755)
        .dir("blobs/sha256", 0o755)
        .file(&blob(&manifest_digest), 0o644, manifest.as_bytes())
        .file(&blob(&config_digest), 0o644, config.as_bytes())
        .file(&blob(&layer_digest), 0o644, &layer)
        .finish();
    fs::write(path, archive).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Link every applet of the rootfs's busybox in /bin (the tests use dd,
/// ip, seq, grep, touch...), plus the directories a system image has.
fn link_all_applets(rootfs: &Path) {
    let bin = rootfs.join("bin");
    // The host's copy, not the one just written: a fork in another test
    // thread may still hold the new file's write descriptor (ETXTBSY).
    let list = Command::new(host_busybox())
        .arg("--list")
        .output()
        .expect("busybox --list");
    assert!(list.status.success(), "busybox --list failed");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = bin.join(applet);
        if applet.is_empty() || applet == "busybox" || link.symlink_metadata().is_ok() {
            continue;
        }
        std::os::unix::fs::symlink("busybox", &link)
            .unwrap_or_else(|e| panic!("link {}: {e}", link.display()));
    }
    for dir in ["root", "proc", "sys", "dev", "run", "var/tmp"] {
        fs::create_dir_all(rootfs.join(dir)).expect("mkdir in the rootfs");
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))
        .expect("chmod /tmp");
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// The image platform's architecture name for this machine.
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
