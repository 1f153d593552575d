//! Images: import, list, tag, remove, prune, load and save (with podman
//! and skopeo on the other side), history, inspect, export.

use std::path::Path;
use std::process::Command;

use berth_e2e::oci::{reference_runtime, Podman};
use berth_e2e::{
    assert_berth_error, assert_target_error, describe, make_busybox_rootfs, require_root, stdout,
    Berth, Pty,
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
    // Gone locally; never looked for in a registry.
    assert_berth_error(
        &berth.output(["run", "--rm", "--pull", "never", "used", "true"]),
        125,
    );
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

/// What the layered test images hold, as `sh -c` inside them prints it:
/// a changed file, a deleted file (whiteout), a directory removed and made
/// again in a later layer (opaque directory).
const SHOW_FILES: &str =
    "cat /keep; ls /gone 2>/dev/null || echo no-gone; find /data | sort; cat /data/b";
const EXPECTED_FILES: &str = "changed\nno-gone\n/data\n/data/b\nb\n";

/// A private podman (runc) with `localhost/built:1` made from local
/// material only: `podman import` of a busybox root, then `podman build`
/// with RUN steps that add, change and delete files and replace a
/// directory.
fn podman_with_built_image(work: &Path) -> Podman {
    let podman = Podman::new(reference_runtime());
    let rootfs = work.join("rootfs");
    make_busybox_rootfs(&rootfs);
    let tar = work.join("base.tar");
    tar_dir(&rootfs, &tar, false);
    podman.run_ok([
        "import".as_ref(),
        tar.as_os_str(),
        "localhost/base:1".as_ref(),
    ]);
    let context = work.join("context");
    std::fs::create_dir_all(&context).expect("build context");
    std::fs::write(
        context.join("Containerfile"),
        "FROM localhost/base:1\n\
         RUN mkdir -p /data/old && echo a > /data/old/a && echo keep > /keep && echo gone > /gone\n\
         RUN echo changed > /keep && rm /gone && rm -rf /data && mkdir /data && echo b > /data/b\n",
    )
    .expect("Containerfile");
    podman.run_ok([
        "build".as_ref(),
        "--network".as_ref(),
        "none".as_ref(),
        "--cgroup-parent".as_ref(),
        podman.cgroup_parent().path().as_ref(),
        "-t".as_ref(),
        "localhost/built:1".as_ref(),
        context.as_os_str(),
    ]);
    podman
}

#[test]
fn podman_archives_load_and_run() {
    require_root!();
    let berth = Berth::new();
    let work = tempfile::tempdir().expect("tempdir");
    let podman = podman_with_built_image(work.path());
    for format in ["docker-archive", "oci-archive"] {
        let archive = work.path().join(format!("built.{format}.tar"));
        podman.run_ok([
            "save".as_ref(),
            "--format".as_ref(),
            format.as_ref(),
            "-o".as_ref(),
            archive.as_os_str(),
            "localhost/built:1".as_ref(),
        ]);
        let loaded = berth.run_ok(["load", "-i", archive.to_str().expect("utf-8")]);
        assert_eq!(loaded, "Loaded image: localhost/built:1\n", "{format}");
        let out = berth.run_ok(["run", "--rm", "localhost/built:1", "sh", "-c", SHOW_FILES]);
        assert_eq!(out, EXPECTED_FILES, "{format}: the files of podman's image");
        // The same image id podman has: the config is kept byte for byte.
        let podman_id = podman.run_ok([
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            "localhost/built:1",
        ]);
        let inspected: serde_json::Value =
            serde_json::from_str(&berth.run_ok(["image", "inspect", "localhost/built:1"]))
                .expect("inspect json");
        assert_eq!(
            inspected[0]["Id"].as_str(),
            Some(format!("sha256:{}", podman_id.trim()).as_str()),
            "{format}"
        );
        berth.run_ok(["rmi", "localhost/built:1"]);
    }
    // From stdin, compressed.
    let archive = work.path().join("built.docker-archive.tar");
    let gz = work.path().join("built.tar.gz");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", archive.display(), gz.display()))
        .output()
        .expect("gzip");
    assert!(out.status.success(), "{}", describe(&out));
    let mut load = berth.cmd(["load"]);
    load.stdin(std::fs::File::open(&gz).expect("open gz"));
    let out = load.output().expect("berth load");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "Loaded image: localhost/built:1\n");
    podman.assert_clean();
    berth.assert_clean();
}

#[test]
fn saved_images_load_and_run_in_podman_and_skopeo_reads_them() {
    require_root!();
    let berth = Berth::new();
    let work = tempfile::tempdir().expect("tempdir");
    // Two commits: files added, changed and deleted, then a directory
    // replaced.
    berth.run_ok([
        "run",
        "--name",
        "one",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /data/old && echo a > /data/old/a && echo keep > /keep && echo gone > /gone",
    ]);
    berth.run_ok(["commit", "one", "localhost/step:1"]);
    berth.run_ok([
        "run",
        "--name",
        "two",
        "localhost/step:1",
        "sh",
        "-c",
        "echo changed > /keep && rm /gone && rm -rf /data && mkdir /data && echo b > /data/b",
    ]);
    berth.run_ok([
        "commit",
        "-c",
        "CMD [\"cat\", \"/keep\"]",
        "two",
        "localhost/ours:2",
    ]);
    berth.run_ok(["rm", "one", "two"]);
    assert_eq!(
        berth.run_ok(["run", "--rm", "localhost/ours:2", "sh", "-c", SHOW_FILES]),
        EXPECTED_FILES
    );
    let inspected: serde_json::Value =
        serde_json::from_str(&berth.run_ok(["image", "inspect", "localhost/ours:2"]))
            .expect("inspect json");
    let layers = inspected[0]["RootFS"]["Layers"]
        .as_array()
        .expect("layers")
        .clone();
    assert_eq!(layers.len(), 3, "busybox and two commits: {inspected}");

    let podman = Podman::new(reference_runtime());
    for format in ["docker-archive", "oci-archive"] {
        let archive = work.path().join(format!("ours.{format}.tar"));
        berth.run_ok([
            "save",
            "--format",
            format,
            "-o",
            archive.to_str().expect("utf-8"),
            "localhost/ours:2",
        ]);
        let skopeo = Command::new("skopeo")
            .args(["inspect", "--raw", "--config"])
            .arg(format!("{format}:{}", archive.display()))
            .env("TMPDIR", work.path())
            .output()
            .expect("skopeo");
        assert!(skopeo.status.success(), "{}", describe(&skopeo));
        let config: serde_json::Value =
            serde_json::from_slice(&skopeo.stdout).expect("skopeo's config json");
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::Value::Array(layers.clone()),
            "{format}"
        );
        assert_eq!(
            config["config"]["Cmd"],
            serde_json::json!(["cat", "/keep"]),
            "{format}"
        );

        podman.run_ok(["load".as_ref(), "-i".as_ref(), archive.as_os_str()]);
        let out = podman.run(["--rm", "localhost/ours:2", "sh", "-c", SHOW_FILES]);
        assert_eq!(stdout(&out), EXPECTED_FILES, "{format}\n{}", describe(&out));
        let out = podman.run(["--rm", "localhost/ours:2"]);
        assert_eq!(
            stdout(&out),
            "changed\n",
            "{format}: the image's CMD\n{}",
            describe(&out)
        );
        podman.run_ok(["rmi", "localhost/ours:2"]);
    }
    let skopeo = Command::new("skopeo")
        .arg("inspect")
        .arg(format!(
            "docker-archive:{}",
            work.path().join("ours.docker-archive.tar").display()
        ))
        .env("TMPDIR", work.path())
        .output()
        .expect("skopeo");
    assert!(skopeo.status.success(), "{}", describe(&skopeo));
    let summary: serde_json::Value = serde_json::from_slice(&skopeo.stdout).expect("json");
    assert_eq!(
        summary["Layers"].as_array().map(Vec::len),
        Some(3),
        "{summary}"
    );
    assert_eq!(summary["Architecture"], inspected[0]["Architecture"]);
    podman.assert_clean();
    berth.assert_clean();
}

#[test]
fn a_corrupt_or_truncated_archive_is_refused_and_changes_nothing() {
    require_root!();
    let berth = Berth::new();
    let work = tempfile::tempdir().expect("tempdir");
    berth.run_ok(["run", "--rm", "busybox", "true"]);
    let good = work.path().join("good.tar");
    berth.run_ok(["tag", "busybox", "localhost/other:1"]);
    berth.run_ok([
        "save",
        "-o",
        good.to_str().expect("utf-8"),
        "localhost/other:1",
    ]);
    // Nothing of the archive stays in the store: every layer is read.
    berth.run_ok(["rmi", "localhost/other:1"]);
    berth.run_ok(["rmi", "busybox"]);
    let images_before = berth.run_ok(["images"]);
    let tree_before = berth.tree();
    let bytes = std::fs::read(&good).expect("read archive");
    let truncated = work.path().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let garbage = work.path().join("garbage.tar");
    std::fs::write(&garbage, b"not an archive at all").expect("write");
    // A layer whose bytes changed: its digest no longer matches.
    let flipped = work.path().join("flipped.tar");
    let mut changed = bytes.clone();
    let layer = changed
        .windows(10)
        .position(|w| w == b"/layer.tar")
        .expect("a layer in the archive");
    // Well inside the busybox binary of the layer.
    let at = layer + 512 + 100_000;
    changed[at] = !changed[at];
    std::fs::write(&flipped, &changed).expect("write");
    for archive in [&truncated, &garbage, &flipped] {
        let out = berth.output(["load", "-i", archive.to_str().expect("utf-8")]);
        assert_berth_error(&out, 125);
        assert_eq!(
            berth.run_ok(["images"]),
            images_before,
            "{}",
            archive.display()
        );
        let mut load = berth.cmd(["load"]);
        load.stdin(std::fs::File::open(archive).expect("open"));
        let out = load.output().expect("berth load");
        let line = assert_berth_error(&out, 125);
        assert!(
            !line.contains(berth.root().to_str().expect("utf-8")),
            "the error names the store's spooled copy, not stdin: {line}"
        );
        assert_eq!(
            berth.run_ok(["images"]),
            images_before,
            "{}",
            archive.display()
        );
    }
    assert_eq!(berth.tree(), tree_before, "a refused load left files");
    // An image archive is not a root filesystem.
    let out = berth.output(["image", "import", good.to_str().expect("utf-8"), "x"]);
    let line = assert_berth_error(&out, 125);
    assert!(line.contains("berth load"), "{line}");
    berth.assert_clean();
}

#[test]
fn tag_rmi_and_prune_round_trip() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["run", "--rm", "busybox", "true"]);
    berth.run_ok(["tag", "busybox", "localhost/deb:12"]);
    berth.run_ok(["tag", "localhost/deb:12", "other"]);
    let out = berth.run_ok(["images"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let mut names: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("busybox", "latest"),
            ("localhost/deb", "12"),
            ("other", "latest")
        ],
        "{out}"
    );
    assert!(rows.iter().all(|r| r[2] == rows[0][2]), "one image: {out}");
    let id = rows[0][2].to_owned();
    assert_eq!(berth.run_ok(["images", "-q"]), format!("{id}\n"));
    assert_eq!(
        berth.run_ok(["images", "-q", "localhost/deb"]),
        format!("{id}\n")
    );
    assert_eq!(berth.run_ok(["images", "-q", "nothing"]), "");
    // By id while several names point at it: refused without -f.
    assert_target_error(&berth.output(["rmi", &id]));
    // One name of several: untagged only.
    assert_eq!(berth.run_ok(["rmi", "other"]), "Untagged: other:latest\n");
    assert_eq!(
        berth.run_ok(["image", "rm", "localhost/deb:12"]),
        "Untagged: localhost/deb:12\n"
    );
    // The last name while a container uses the image: refused; -f untags.
    berth.run_ok(["run", "--name", "user", "busybox", "true"]);
    let line = assert_target_error(&berth.output(["rmi", "busybox"]));
    assert!(line.contains("user"), "{line}");
    assert_eq!(
        berth.run_ok(["rmi", "-f", "busybox"]),
        "Untagged: busybox:latest\n"
    );
    let out = berth.run_ok(["images"]);
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().take(2).eq(["<none>", "<none>"])),
        "{out}"
    );
    // Pinned by the container: prune keeps it, even with -a.
    let out = berth.run_ok(["image", "prune", "-a", "-f"]);
    assert_eq!(out, "Total reclaimed space: 0B\n");
    berth.run_ok(["rm", "user"]);
    let out = berth.run_ok(["image", "prune", "-f"]);
    assert!(
        out.starts_with("Deleted Images:\ndeleted: sha256:"),
        "{out}"
    );
    assert!(out.contains(&id), "{out}");
    assert!(
        out.lines()
            .last()
            .is_some_and(|l| l.starts_with("Total reclaimed space: ") && !l.ends_with(" 0B")),
        "{out}"
    );
    assert_eq!(berth.run_ok(["images", "-q"]), "");
    assert!(berth.layer_rootfses().is_empty(), "layers left");
    // -a removes unused tagged images too; dangling-only keeps them.
    berth.run_ok(["run", "--rm", "busybox", "true"]);
    assert_eq!(
        berth.run_ok(["image", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );
    let out = berth.run_ok(["image", "prune", "-a", "-f"]);
    assert!(out.contains("untagged: busybox:latest\n"), "{out}");
    assert_eq!(berth.run_ok(["images", "-q"]), "");
    // And rmi of an image with one name deletes it.
    berth.run_ok(["run", "--rm", "busybox", "true"]);
    let out = berth.run_ok(["rmi", "busybox"]);
    assert!(
        out.starts_with("Untagged: busybox:latest\nDeleted: sha256:"),
        "{out}"
    );
    assert_target_error(&berth.output(["rmi", "busybox"]));
    berth.assert_clean();
}

#[test]
fn history_and_inspect_have_docker_shapes() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run",
        "--name",
        "c",
        "-e",
        "MODE=x",
        "-w",
        "/tmp",
        "busybox",
        "sh",
        "-c",
        "echo hi > /hi",
    ]);
    let id = berth.run_ok([
        "commit",
        "-m",
        "said hi",
        "-a",
        "Jane <jane@example.com>",
        "-c",
        "EXPOSE 8080",
        "-c",
        "LABEL k=v",
        "-c",
        "STOPSIGNAL SIGINT",
        "c",
        "localhost/hi:1",
    ]);
    let id = id.trim();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    berth.run_ok(["rm", "c"]);

    let out = berth.run_ok(["history", "localhost/hi:1"]);
    let mut lines = out.lines();
    let header = lines.next().expect("header");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    );
    let top = lines.next().expect("the commit");
    assert!(top.starts_with(&id["sha256:".len()..][..12]), "{out}");
    assert!(top.contains("said hi") && top.contains(" ago "), "{out}");
    assert!(top.contains("sh -c echo hi > /hi"), "{out}");
    let base = lines.next().expect("the base");
    assert!(base.starts_with("<missing>"), "{out}");
    assert!(lines.next().is_none(), "{out}");
    assert_eq!(
        berth.run_ok(["history", "-q", "localhost/hi:1"]).trim(),
        &id["sha256:".len()..][..12]
    );
    let full = berth.run_ok(["history", "--no-trunc", "localhost/hi:1"]);
    assert!(full.contains(id), "{full}");

    let inspected: serde_json::Value =
        serde_json::from_str(&berth.run_ok(["image", "inspect", "localhost/hi:1"])).expect("json");
    let image = &inspected[0];
    assert_eq!(image["Id"], id);
    assert_eq!(image["RepoTags"], serde_json::json!(["localhost/hi:1"]));
    assert_eq!(image["Author"], "Jane <jane@example.com>");
    assert_eq!(image["Os"], "linux");
    assert!(image["Architecture"]
        .as_str()
        .is_some_and(|a| !a.is_empty()));
    assert!(
        image["Created"].as_str().is_some_and(|c| c.ends_with('Z')),
        "{image}"
    );
    assert!(image["Size"].as_u64().is_some_and(|s| s > 0));
    let config = &image["Config"];
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["sh", "-c", "echo hi > /hi"])
    );
    assert_eq!(config["WorkingDir"], "/tmp");
    assert!(
        config["Env"]
            .as_array()
            .is_some_and(|e| e.iter().any(|v| v == "MODE=x")),
        "{config}"
    );
    assert_eq!(config["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(config["Labels"], serde_json::json!({"k": "v"}));
    assert_eq!(config["StopSignal"], "SIGINT");
    assert_eq!(image["RootFS"]["Type"], "layers");
    assert_eq!(image["RootFS"]["Layers"].as_array().map(Vec::len), Some(2));
    // `inspect` falls back to images with the same shape.
    let plain: serde_json::Value =
        serde_json::from_str(&berth.run_ok(["inspect", "localhost/hi:1"])).expect("json");
    assert_eq!(plain, inspected);
    assert_berth_error(&berth.output(["image", "inspect", "nothing"]), 125);
    berth.assert_clean();
}

#[test]
fn export_writes_the_merged_filesystem() {
    require_root!();
    let berth = Berth::new();
    let work = tempfile::tempdir().expect("tempdir");
    berth.run_ok([
        "run",
        "--name",
        "c",
        "busybox",
        "sh",
        "-c",
        "echo new > /new; rm /bin/ls; mkdir /d",
    ]);
    let tar = work.path().join("c.tar");
    berth.run_ok(["export", "-o", tar.to_str().expect("utf-8"), "c"]);
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .expect("tar -tf");
    let names: Vec<String> = stdout(&listing)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_owned())
        .collect();
    for wanted in ["new", "d", "bin/sh", "bin/busybox"] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing: {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n == "bin/ls"),
        "a deleted file is exported"
    );
    assert!(
        !names.iter().any(|n| n.contains(".wh.")),
        "a whiteout is exported"
    );
    // To stdout when it is not a terminal.
    let out = berth.cmd(["export", "c"]).output().expect("export");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        out.stdout,
        std::fs::read(&tar).expect("read"),
        "the same archive"
    );
    berth.run_ok(["rm", "c"]);
    berth.assert_clean();
}

#[test]
fn save_refuses_a_terminal_and_prune_asks_on_one() {
    require_root!();
    let berth = Berth::new();
    let step = std::time::Duration::from_secs(20);
    berth.run_ok(["run", "--rm", "busybox", "true"]);
    berth.run_ok(["tag", "busybox", "spare"]);
    berth.run_ok(["rmi", "busybox"]);

    let mut pty = Pty::new(24, 80);
    let mut save = pty.spawn(berth.cmd(["save", "spare"]));
    pty.expect("berth: cowardly refusing to save to a terminal", step);
    let status = save.0.wait().expect("wait for save");
    assert_eq!(status.code(), Some(125));

    // Answered no: nothing goes.
    let mut prune = pty.spawn(berth.cmd(["image", "prune", "-a"]));
    pty.expect("Are you sure you want to continue? [y/N] ", step);
    pty.send(b"n\r");
    assert!(prune.0.wait().expect("wait for prune").success());
    assert_eq!(berth.run_ok(["images", "-q"]).lines().count(), 1);
    // Answered yes: the unused image goes.
    let mut prune = pty.spawn(berth.cmd(["image", "prune", "-a"]));
    pty.expect("Are you sure you want to continue? [y/N] ", step);
    pty.send(b"y\r");
    pty.expect("Total reclaimed space: ", step);
    assert!(prune.0.wait().expect("wait for prune").success());
    assert_eq!(berth.run_ok(["images", "-q"]), "");
    berth.assert_clean();
}

/// Hold-out 6: a container pins its image by id. Importing or committing
/// onto its image's name moves the name; the container keeps running,
/// restarting and committing from the layers it was made from, and the old
/// image stays until nothing uses it.
#[test]
fn a_name_moved_to_a_new_image_leaves_containers_on_theirs() {
    require_root!();
    let berth = Berth::new();
    let work = tempfile::tempdir().expect("tempdir");
    let import = |marker: &str| {
        let rootfs = work.path().join(marker);
        make_busybox_rootfs(&rootfs);
        std::fs::write(rootfs.join("marker"), marker).expect("marker");
        let tar = work.path().join(format!("{marker}.tar"));
        tar_dir(&rootfs, &tar, false);
        berth.run_ok(["image", "import", tar.to_str().expect("utf-8"), "app"]);
    };
    import("one");
    berth.run_ok([
        "run", "-d", "--net", "none", "--name", "pinned", "app", "sleep", "60",
    ]);
    import("two");
    berth.run_ok(["commit", "pinned", "app"]);
    // The name now means the commit of the first image; the second
    // import lost its name and nothing uses it.
    let marker = |container: &str| berth.run_ok(["exec", container, "cat", "/marker"]);
    assert_eq!(marker("pinned"), "one");
    berth.run_ok(["restart", "-t", "1", "pinned"]);
    assert_eq!(marker("pinned"), "one", "a restart keeps the pinned image");
    assert_eq!(
        berth.run_ok(["run", "--rm", "--net", "none", "app", "cat", "/marker"]),
        "one",
        "the commit took its base from the container's image, not the name's"
    );
    berth.run_ok(["rm", "-f", "pinned"]);
    // The first image lost its name to the commit but is still the
    // commit's base; the second is dangling and prune removes it.
    berth.run_ok(["image", "prune", "-f"]);
    assert_eq!(
        berth.run_ok(["run", "--rm", "--net", "none", "app", "cat", "/marker"]),
        "one"
    );
    berth.run_ok(["rmi", "app"]);
    berth.run_ok(["image", "prune", "-a", "-f"]);
    assert!(
        berth.layer_rootfses().is_empty(),
        "{:?}",
        berth.layer_rootfses()
    );
    berth.assert_clean();
}

/// The layer tars of a docker archive (`manifest.json`'s `Layers`),
/// unpacked with the host's tar into `scratch`.
fn archive_layers(archive: &Path, scratch: &Path) -> Vec<Vec<u8>> {
    std::fs::create_dir_all(scratch).expect("scratch dir");
    let out = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(scratch)
        .output()
        .expect("run tar");
    assert!(out.status.success(), "tar failed\n{}", describe(&out));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch.join("manifest.json")).expect("read"))
            .expect("manifest.json");
    manifest[0]["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|name| std::fs::read(scratch.join(name.as_str().expect("name"))).expect("layer"))
        .collect()
}

#[test]
fn save_gives_back_the_imported_tar_and_refuses_a_changed_layer() {
    require_root!();
    let berth = Berth::new();
    let work = tempfile::tempdir().expect("tempdir");
    let rootfs = work.path().join("rootfs");
    make_busybox_rootfs(&rootfs);
    std::fs::write(rootfs.join("etc/marker"), "original\n").expect("marker");
    std::fs::hard_link(rootfs.join("etc/marker"), rootfs.join("etc/marker.link"))
        .expect("hard link");
    let tar = work.path().join("rootfs.tar");
    tar_dir(&rootfs, &tar, false);
    berth.run_ok([
        "image",
        "import",
        tar.to_str().expect("utf-8"),
        "localhost/split:1",
    ]);

    // The store keeps no copy of the tar, yet save gives it back byte for
    // byte (GNU tar's headers and 10 KiB blocking included).
    let saved = work.path().join("saved.tar");
    let saved_arg = saved.to_str().expect("utf-8");
    berth.run_ok(["save", "-o", saved_arg, "localhost/split:1"]);
    let original = std::fs::read(&tar).expect("read tar");
    assert!(
        archive_layers(&saved, &work.path().join("unpacked")) == vec![original],
        "the saved layer is the imported tar"
    );
    std::fs::remove_file(&saved).expect("remove");

    // A file of the unpacked layer changed behind berth's back: save
    // refuses in one line and leaves no archive.
    let layers = berth.root().join("images/layers");
    let marker = std::fs::read_dir(&layers)
        .expect("layers")
        .filter_map(Result::ok)
        .map(|e| e.path().join("diff/etc/marker"))
        .find(|p| p.is_file())
        .expect("the imported layer");
    std::fs::write(&marker, "tampered\n").expect("tamper");
    let out = berth.output(["save", "-o", saved_arg, "localhost/split:1"]);
    let line = assert_berth_error(&out, 125);
    assert!(
        line.contains("changed after the image was stored"),
        "{line}"
    );
    assert!(!saved.exists(), "no archive left behind");
    std::fs::write(&marker, "original\n").expect("restore");
    berth.run_ok(["save", "-o", saved_arg, "localhost/split:1"]);
    std::fs::remove_file(&saved).expect("remove");

    // GNU sparse entries (kept verbatim), and PAX headers with long names
    // and extended attributes, come back byte for byte too.
    let odd = work.path().join("odd");
    let deep = odd.join(format!("{}/{}", "d".repeat(90), "n".repeat(90)));
    std::fs::create_dir_all(&deep).expect("mkdir");
    std::fs::write(deep.join("file"), "behind a long name\n").expect("write");
    let sparse = std::fs::File::create(odd.join("sparse")).expect("create");
    sparse.set_len(4 << 20).expect("hole");
    nix::sys::uio::pwrite(&sparse, b"data after a hole", 3 << 20).expect("pwrite");
    drop(sparse);
    let with_xattr = odd.join("with-xattr");
    std::fs::write(&with_xattr, "x\n").expect("write");
    let path = std::ffi::CString::new(with_xattr.to_str().expect("utf-8")).expect("path");
    // SAFETY: both names are NUL-terminated C strings and the value is a
    // buffer whose length is passed with it.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"user.berth-test".as_ptr(),
            b"kept".as_ptr().cast(),
            4,
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
    for (name, flags) in [
        ("gnu-sparse", vec!["--format=gnu", "--sparse"]),
        ("pax-xattrs", vec!["--format=pax", "--xattrs"]),
    ] {
        let tar = work.path().join(format!("{name}.tar"));
        let out = Command::new("tar")
            .args(&flags)
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&odd)
            .arg(".")
            .output()
            .expect("run tar");
        assert!(out.status.success(), "tar failed\n{}", describe(&out));
        let image = format!("localhost/{name}:1");
        berth.run_ok(["image", "import", tar.to_str().expect("utf-8"), &image]);
        berth.run_ok(["save", "-o", saved_arg, &image]);
        let original = std::fs::read(&tar).expect("read tar");
        assert!(
            archive_layers(&saved, &work.path().join(name)) == vec![original],
            "{name}: the saved layer is the imported tar"
        );
        std::fs::remove_file(&saved).expect("remove");
    }
    berth.assert_clean();
}
