//! Images: import a real root filesystem, list, remove.

use std::path::Path;
use std::process::Command;

use berth_e2e::{
    assert_berth_error, assert_target_error, describe, make_busybox_rootfs, require_root, Berth,
};

/// `tar -cf FILE -C DIR .` (with `z` for .tar.gz) using the host's tar.
fn tar_dir(dir: &Path, file: &Path, gzip: bool) {
    let out = Command::new("tar")
        .arg(if gzip { "-czf" } else { "-cf" })
        .arg(file)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .output()
        .expect("run tar");
    assert!(out.status.success(), "tar failed\n{}", describe(&out));
}

#[test]
fn imported_tar_and_tar_gz_images_run() {
    require_root!();
    let berth = Berth::new();
    let work = tempfile::tempdir().expect("tempdir");
    let rootfs = work.path().join("rootfs");
    make_busybox_rootfs(&rootfs);
    std::fs::write(rootfs.join("etc/marker"), "imported image\n").expect("marker");
    let tar = work.path().join("mybox.tar");
    let tgz = work.path().join("mybox.tar.gz");
    tar_dir(&rootfs, &tar, false);
    tar_dir(&rootfs, &tgz, true);

    berth.run_ok(["image", "import", tar.to_str().expect("utf-8"), "mybox"]);
    berth.run_ok(["image", "import", tgz.to_str().expect("utf-8"), "mybox-gz"]);
    for image in ["mybox", "mybox-gz"] {
        let out = berth.run_ok([
            "run",
            "--rm",
            image,
            "sh",
            "-c",
            "cat /etc/marker; echo sum=$((40+2)); ls -l /bin/sh",
        ]);
        assert!(
            out.starts_with("imported image\nsum=42\n"),
            "{image}:\n{out}"
        );
        assert!(
            out.contains("/bin/sh -> busybox"),
            "{image}: symlinks kept:\n{out}"
        );
    }
    // The imported busybox keeps its mode.
    let out = berth.run_ok(["run", "--rm", "mybox", "sh", "-c", "ls -l /bin/busybox"]);
    assert!(out.starts_with("-rwxr-xr-x"), "mode of /bin/busybox: {out}");
    berth.assert_clean();
}

#[test]
fn image_rm_is_refused_while_a_container_uses_it() {
    require_root!();
    let berth = Berth::new();
    let work = tempfile::tempdir().expect("tempdir");
    let rootfs = work.path().join("rootfs");
    make_busybox_rootfs(&rootfs);
    let tar = work.path().join("used.tar");
    tar_dir(&rootfs, &tar, false);
    berth.run_ok(["image", "import", tar.to_str().expect("utf-8"), "used"]);
    let layers = berth.layer_rootfses();
    assert_eq!(layers.len(), 1, "one layer for one image: {layers:?}");

    berth.run_ok(["run", "--name", "user", "used", "true"]);
    let out = berth.output(["image", "rm", "used"]);
    let line = assert_target_error(&out);
    assert!(
        line.contains("used"),
        "the error names the image or container: {line}"
    );
    assert!(
        berth.run_ok(["images"]).contains("used"),
        "the image went away"
    );
    assert!(layers[0].exists(), "the layer went away");
    // The container still runs from it.
    berth.run_ok(["run", "--rm", "used", "true"]);

    berth.run_ok(["rm", "user"]);
    berth.run_ok(["image", "rm", "used"]);
    assert!(
        !berth.run_ok(["images"]).contains("used"),
        "image still listed"
    );
    assert!(
        !layers[0].exists(),
        "the layer is still there after image rm"
    );
    assert_berth_error(&berth.output(["run", "--rm", "used", "true"]), 125);
    assert_target_error(&berth.output(["image", "rm", "used"]));
    berth.assert_clean();
}

#[test]
fn images_lists_name_id_created_size() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["run", "--rm", "busybox", "true"]);
    let out = berth.run_ok(["images"]);
    let mut lines = out.lines();
    let header = lines.next().expect("a header");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"],
        "images header"
    );
    let row = lines.next().expect("the busybox image");
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns.get(..2), Some(&["busybox", "latest"][..]), "{out}");
    assert!(row.contains(" ago "), "CREATED as docker says it: {row}");
    let id = columns.get(2).expect("an id");
    assert!(
        id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "short id: {row}"
    );
    let size = columns.last().expect("a size");
    assert!(
        size.ends_with("MB") || size.ends_with("kB"),
        "size with a unit: {row}"
    );
    let at = header.find("SIZE").expect("SIZE");
    assert!(
        row.get(at..).is_some_and(|s| s.trim() == *size),
        "SIZE column misaligned:\n{out}"
    );
    assert!(lines.next().is_none(), "one image, one row:\n{out}");
    berth.assert_clean();
}
