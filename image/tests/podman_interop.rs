//! Archives written by the store are read by real tools (podman, skopeo),
//! and archives they write are read by the store, layers and whiteouts
//! included. Needs root (whiteouts and opaque directories in the upper
//! dir), podman and skopeo; skipped with the reason otherwise. podman runs
//! with its own storage in a temp dir (vfs driver: nothing is mounted).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_image::{
    extract, write_merged_tar, CommitOptions, Image, ImageStore, Reference, TargetPlatform,
};

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root for whiteouts and opaque directories".into());
    }
    for tool in ["podman", "skopeo"] {
        let found = Command::new(tool).arg("--version").output();
        if !found.is_ok_and(|o| o.status.success()) {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("podman")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--storage-driver", "vfs", "--events-backend", "none"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

/// Relative path -> kind and content of everything below `root`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let value = if meta.is_dir() {
                walk(root, &path, out);
                format!("dir {:o}", meta.mode() & 0o7777)
            } else if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).unwrap().display())
            } else if meta.file_type().is_char_device() {
                format!("char {}", meta.rdev())
            } else {
                format!(
                    "{:o} {}",
                    meta.mode() & 0o7777,
                    String::from_utf8_lossy(&fs::read(&path).unwrap())
                )
            };
            out.insert(rel, value);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn merged(image: &Image, dest: &Path) -> BTreeMap<String, String> {
    let lowers = image.lower_dirs();
    let lowers: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    let mut tar = Vec::new();
    write_merged_tar(&lowers, &mut tar).unwrap();
    extract(&tar[..], dest).unwrap();
    tree(dest)
}

fn set_opaque(dir: &Path) {
    let path = CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: both strings are NUL-terminated and outlive the call; the
    // value is a one-byte buffer whose length is passed.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

fn base_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in [
        ("etc/motd", "hello\n"),
        ("gone", "to be deleted"),
        ("opq/old", "hidden by the opaque dir"),
        ("keep/a", "a"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_000_000_000);
        builder
            .append_data(&mut header, name, content.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn podman_and_skopeo_read_our_archives_and_we_read_theirs() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let podman = Podman {
        dir: tmp.path().join("podman"),
    };
    fs::create_dir_all(podman.dir.join("tmp")).unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let base = store
        .import_reader(&mut &base_tar()[..], "base.tar", None, None)
        .unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::write(upper.join("etc/motd"), "changed\n").unwrap();
    fs::write(upper.join("added"), "new file").unwrap();
    nix::sys::stat::mknod(
        &upper.join("gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    fs::create_dir(upper.join("opq")).unwrap();
    fs::write(upper.join("opq/new"), "fresh").unwrap();
    set_opaque(&upper.join("opq"));
    let name = Reference::parse("localhost/interop:1").unwrap();
    let mut run = oci_spec::image::Config::default();
    run.set_cmd(Some(vec!["/bin/true".into()]));
    let image = store
        .commit(
            &base,
            &upper,
            &CommitOptions {
                config: Some(run),
                tag: Some(name.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    let ours = merged(&image, &tmp.path().join("ours"));
    assert!(!ours.contains_key("gone") && !ours.contains_key("opq/old"));

    // Our docker archive: skopeo reads it, podman loads it and sees the
    // same layers, config and files.
    let docker_archive = tmp.path().join("ours-docker.tar");
    let names = [name.clone()];
    store
        .save_docker_archive(
            &[(&image, &names[..])],
            &mut fs::File::create(&docker_archive).unwrap(),
        )
        .unwrap();
    let inspected = Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}", docker_archive.display()))
        .output()
        .unwrap();
    assert!(
        inspected.status.success(),
        "{}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    let config: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(config["config"]["Cmd"][0], "/bin/true");
    podman.run(&["load", "-q", "-i", docker_archive.to_str().unwrap()]);
    let id = podman.run(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "localhost/interop:1",
    ]);
    assert_eq!(id.trim(), image.id.hex());
    let mounted = podman.run(&["image", "mount", "localhost/interop:1"]);
    assert_eq!(
        tree(Path::new(mounted.trim())),
        ours,
        "podman sees our files"
    );
    podman.run(&["image", "umount", "localhost/interop:1"]);

    // Our OCI archive too.
    let oci_archive = tmp.path().join("ours-oci.tar");
    store
        .save_oci_archive(
            &[(&image, &names[..])],
            &mut fs::File::create(&oci_archive).unwrap(),
        )
        .unwrap();
    let inspected = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", oci_archive.display()))
        .output()
        .unwrap();
    assert!(
        inspected.status.success(),
        "{}",
        String::from_utf8_lossy(&inspected.stderr)
    );

    // podman's archives, both formats, loaded into fresh stores.
    for format in ["docker-archive", "oci-archive"] {
        let theirs = tmp.path().join(format!("podman-{format}.tar"));
        podman.run(&[
            "save",
            "-q",
            "--format",
            format,
            "-o",
            theirs.to_str().unwrap(),
            "localhost/interop:1",
        ]);
        let other = ImageStore::open(tmp.path().join(format!("store-{format}"))).unwrap();
        let loaded = other
            .load_path(&theirs, &TargetPlatform::host(), &|_| {})
            .unwrap();
        assert_eq!(loaded.len(), 1, "{format}");
        let (back, back_names) = &loaded[0];
        if format == "docker-archive" {
            assert_eq!(back.id, image.id, "same config bytes, same id");
        }
        // podman rewrites the config for an OCI archive (other id), but the
        // layers are the same.
        assert_eq!(
            back.config.rootfs().diff_ids(),
            image.config.rootfs().diff_ids(),
            "{format}"
        );
        assert_eq!(
            back.run_config().cmd(),
            image.run_config().cmd(),
            "{format}"
        );
        assert_eq!(back_names, &names, "{format}");
        assert_eq!(
            merged(back, &tmp.path().join(format!("theirs-{format}"))),
            ours,
            "{format}"
        );
    }
}
