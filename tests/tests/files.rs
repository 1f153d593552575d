//! Files in and out of containers: `cp` (both ways, running and stopped,
//! tar streams, hostile symlinks and races), `diff`, and the prune family
//! with `system df`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_e2e::{assert_berth_error, describe, noise, require_root, Berth};
use sha2::{Digest, Sha256};

/// What a tree holds, entry by entry: type, mode, owner, content digest
/// or link target; and which paths share an inode.
#[derive(Debug, PartialEq)]
struct TreeShape {
    entries: BTreeMap<PathBuf, String>,
    hardlinks: Vec<Vec<PathBuf>>,
}

fn shape(dir: &Path, owners: bool) -> TreeShape {
    let mut entries = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            let rel = path
                .strip_prefix(dir)
                .expect("below the tree")
                .to_path_buf();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let ft = meta.file_type();
            let what = if ft.is_symlink() {
                format!(
                    "link -> {}",
                    fs::read_link(&path).expect("readlink").display()
                )
            } else if ft.is_dir() {
                todo.push(path.clone());
                "dir".to_owned()
            } else if ft.is_file() {
                let digest = Sha256::digest(fs::read(&path).expect("read"));
                inodes.entry(meta.ino()).or_default().push(rel.clone());
                format!("file {} {digest:x}", meta.len())
            } else {
                "other".to_owned()
            };
            let owner = if owners {
                format!(" {}:{}", meta.uid(), meta.gid())
            } else {
                String::new()
            };
            let mode = if ft.is_symlink() {
                0
            } else {
                meta.mode() & 0o7777
            };
            entries.insert(rel, format!("{what} {mode:o}{owner}"));
        }
    }
    let mut hardlinks: Vec<Vec<PathBuf>> = inodes
        .into_values()
        .filter(|paths| paths.len() > 1)
        .map(|mut paths| {
            paths.sort();
            paths
        })
        .collect();
    hardlinks.sort();
    TreeShape { entries, hardlinks }
}

/// A tree with nested directories, modes (setuid, 0600, a read-only
/// directory), owners, symlinks (relative, absolute, dangling), a hard
/// link pair and a 100 MB file.
fn make_tree(dir: &Path) {
    fs::create_dir_all(dir.join("a/b/c")).unwrap();
    fs::write(dir.join("a/b/c/deep.txt"), "deep\n").unwrap();
    fs::write(dir.join("big.bin"), noise(100 << 20, 7)).unwrap();
    fs::write(dir.join("setuid"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(dir.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(dir.join("secret"), "s").unwrap();
    fs::set_permissions(dir.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(dir.join("owned"), "o").unwrap();
    std::os::unix::fs::lchown(dir.join("owned"), Some(1234), Some(5678)).unwrap();
    symlink("a/b/c/deep.txt", dir.join("rel-link")).unwrap();
    symlink("/etc/passwd", dir.join("abs-link")).unwrap();
    symlink("missing", dir.join("dangling")).unwrap();
    std::os::unix::fs::lchown(dir.join("dangling"), Some(42), Some(43)).unwrap();
    fs::write(dir.join("a/first"), "shared inode").unwrap();
    fs::hard_link(dir.join("a/first"), dir.join("a/b/second")).unwrap();
    fs::create_dir(dir.join("ro")).unwrap();
    fs::write(dir.join("ro/inside"), "in").unwrap();
    fs::set_permissions(dir.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
}

/// Every (uid, gid) found in a tree, itself included.
fn owners(dir: &Path) -> std::collections::BTreeSet<(u32, u32)> {
    let mut found = std::collections::BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        found.insert((meta.uid(), meta.gid()));
        if meta.is_dir() {
            todo.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    found
}

fn start_sleeper(berth: &Berth, name: &str) {
    berth.run_ok([
        "run", "-d", "--pull", "never", "--net", "none", "--name", name, "busybox", "sleep", "600",
    ]);
}

#[test]
fn cp_round_trips_a_tree_through_running_and_stopped_containers() {
    require_root!();
    let berth = Berth::new();
    let host = tempfile::tempdir().unwrap();
    let tree = host.path().join("tree");
    make_tree(&tree);
    let original = shape(&tree, true);

    start_sleeper(&berth, "live");
    berth.run_ok([
        "run", "--pull", "never", "--net", "none", "--name", "dead", "busybox", "true",
    ]);
    for container in ["live", "dead"] {
        berth.run_ok([
            "cp",
            "-a",
            tree.to_str().unwrap(),
            &format!("{container}:/tmp"),
        ]);
        let out = host.path().join(format!("out-{container}"));
        fs::create_dir(&out).unwrap();
        berth.run_ok([
            "cp",
            "-a",
            &format!("{container}:/tmp/tree"),
            out.to_str().unwrap(),
        ]);
        assert_eq!(
            shape(&out.join("tree"), true),
            original,
            "through {container}"
        );

        // Without -a: root's inside the container, the invoking user's
        // (root here) on the host.
        berth.run_ok(["cp", tree.to_str().unwrap(), &format!("{container}:/plain")]);
        let plain = host.path().join(format!("plain-{container}"));
        berth.run_ok([
            "cp",
            &format!("{container}:/plain"),
            plain.to_str().unwrap(),
        ]);
        assert_eq!(shape(&plain, false), shape(&tree, false));
        assert_eq!(owners(&plain), [(0, 0)].into(), "{container}");
    }
    // What went into the stopped container is in its write layer.
    let stopped_copy = berth
        .container_dirs()
        .into_iter()
        .map(|d| d.join("upper/tmp/tree/owned"))
        .find(|p| p.exists())
        .expect("the stopped container's write layer has the copy");
    assert_eq!(fs::metadata(stopped_copy).unwrap().uid(), 1234);
    berth.assert_clean();
}

#[test]
fn cp_streams_tar_both_ways() {
    require_root!();
    let berth = Berth::new();
    let host = tempfile::tempdir().unwrap();
    let tree = host.path().join("tree");
    fs::create_dir_all(tree.join("d")).unwrap();
    fs::write(tree.join("d/f"), "streamed").unwrap();
    symlink("d/f", tree.join("l")).unwrap();
    start_sleeper(&berth, "s");

    // tar of the host tree into the container through stdin.
    let tar = std::process::Command::new("tar")
        .args(["-C", host.path().to_str().unwrap(), "-cf", "-", "tree"])
        .output()
        .expect("tar");
    let mut child = berth
        .cmd(["cp", "-", "s:/tmp"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn berth cp -");
    child.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        berth.run_ok(["exec", "s", "cat", "/tmp/tree/l"]),
        "streamed"
    );

    // And out as a tar on stdout, read back by tar.
    let output = berth.output(["cp", "s:/tmp/tree", "-"]);
    assert!(output.status.success(), "{}", describe(&output));
    let unpacked = host.path().join("unpacked");
    fs::create_dir(&unpacked).unwrap();
    let mut tar = std::process::Command::new("tar")
        .args(["-C", unpacked.to_str().unwrap(), "-xf", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    tar.stdin.take().unwrap().write_all(&output.stdout).unwrap();
    assert!(tar.wait().unwrap().success());
    assert_eq!(shape(&unpacked.join("tree"), false), shape(&tree, false));

    // A stream into something that is not a directory is refused.
    let output = berth.output(["cp", "-", "s:/etc/passwd"]);
    assert_berth_error(&output, 125);
    berth.assert_clean();
}

#[test]
fn cp_resolves_container_symlinks_and_dotdot_inside_the_container() {
    require_root!();
    let berth = Berth::new();
    let tag = format!("berth-e2e-cp-canary-{}", std::process::id());
    let host = tempfile::tempdir().unwrap();
    let payload = host.path().join(&tag);
    fs::write(&payload, "payload").unwrap();
    berth.run_ok([
        "run", "-d", "--pull", "never", "--net", "none", "--name", "h", "busybox", "sh", "-c",
        "rm -rf /data; ln -s / /data; ln -s ../../../../.. /up; echo container > /etc/marker; sleep 600",
    ]);
    berth.run_ok([
        "run",
        "--pull",
        "never",
        "--net",
        "none",
        "--name",
        "h2",
        "busybox",
        "sh",
        "-c",
        "ln -s / /data; ln -s ../../../../.. /up; echo container > /etc/marker",
    ]);
    for container in ["h", "h2"] {
        for dest in ["/data", "/up/tmp", "/data/../../../../tmp/", "../../../.."] {
            berth.run_ok([
                "cp",
                payload.to_str().unwrap(),
                &format!("{container}:{dest}"),
            ]);
        }
        // Reads too: the container's file, not the host's.
        let out = berth.output(["cp", &format!("{container}:/data/../../etc/marker"), "-"]);
        assert!(out.status.success(), "{}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("container\n"));
    }
    assert!(
        !Path::new("/").join(&tag).exists(),
        "cp wrote to the host's /"
    );
    assert!(
        !Path::new("/tmp").join(&tag).exists(),
        "cp wrote to the host's /tmp"
    );
    assert_eq!(
        berth.run_ok(["exec", "h", "cat", &format!("/{tag}")]),
        "payload"
    );
    assert_eq!(
        berth.run_ok(["exec", "h", "cat", &format!("/tmp/{tag}")]),
        "payload"
    );
    berth.assert_clean();
}

#[test]
fn cp_while_the_container_swaps_directories_for_symlinks() {
    require_root!();
    let berth = Berth::new();
    let tag = format!("berth-e2e-swap-{}", std::process::id());
    // On the host: a directory and a secret at /tmp/<tag>.
    let canary = Path::new("/tmp").join(&tag);
    fs::create_dir_all(&canary).unwrap();
    fs::write(canary.join("secret"), "host secret").unwrap();
    let host = tempfile::tempdir().unwrap();
    let payload = host.path().join("payload");
    fs::write(&payload, "payload").unwrap();
    // In the container: the same names, swapped again and again between a
    // real directory and a symlink to `/`.
    let script = format!(
        "mkdir -p /d/tmp/{tag} && echo container > /d/tmp/{tag}/secret && \
         while true; do mv /d /d.real; ln -s / /d; rm /d; mv /d.real /d; done"
    );
    berth.run_ok([
        "run", "-d", "--pull", "never", "--net", "none", "--name", "swap", "busybox", "sh", "-c",
        &script,
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut rounds, mut reads, mut writes) = (0, 0, 0);
    while Instant::now() < deadline && (rounds < 150 || reads == 0 || writes == 0) {
        rounds += 1;
        let into = berth.output([
            "cp",
            payload.to_str().unwrap(),
            &format!("swap:/d/tmp/{tag}/"),
        ]);
        writes += usize::from(into.status.success());
        let out = berth.output(["cp", &format!("swap:/d/tmp/{tag}/secret"), "-"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("host secret"),
            "cp read the host's file through the container's symlink"
        );
        reads += usize::from(text.contains("container\n"));
    }
    // The race was run: copies went through while the swapping went on.
    assert!(
        reads > 0 && writes > 0,
        "{rounds} rounds: {reads} reads, {writes} writes"
    );
    let names: Vec<_> = fs::read_dir(&canary)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    fs::remove_dir_all(&canary).unwrap();
    assert_eq!(names, ["secret"], "cp wrote into the host's /tmp/{tag}");
    berth.assert_clean();
}

#[test]
fn cp_reaches_the_volumes_of_running_and_stopped_containers() {
    require_root!();
    let berth = Berth::new();
    let host = tempfile::tempdir().unwrap();
    let volume = host.path().join("volume");
    fs::create_dir(&volume).unwrap();
    fs::write(volume.join("from-host"), "host side").unwrap();
    let bind = format!("{}:/vol", volume.display());
    berth.run_ok([
        "run", "-d", "--pull", "never", "--net", "none", "-v", &bind, "--name", "live", "busybox",
        "sleep", "600",
    ]);
    berth.run_ok([
        "run", "--pull", "never", "--net", "none", "-v", &bind, "--name", "dead", "busybox", "true",
    ]);
    let payload = host.path().join("payload");
    fs::write(&payload, "payload").unwrap();
    for container in ["live", "dead"] {
        berth.run_ok([
            "cp",
            payload.to_str().unwrap(),
            &format!("{container}:/vol/{container}"),
        ]);
        assert_eq!(
            fs::read_to_string(volume.join(container)).unwrap(),
            "payload"
        );
        let out = berth.output(["cp", &format!("{container}:/vol/from-host"), "-"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("host side"));
    }
    berth.assert_clean();
}

#[test]
fn cp_refuses_what_docker_refuses() {
    require_root!();
    let berth = Berth::new();
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("file");
    fs::write(&file, "x").unwrap();
    berth.run_ok([
        "run", "--pull", "never", "--net", "none", "--name", "c", "busybox", "true",
    ]);
    let cases: [&[&str]; 7] = [
        &["cp", "c:/nope", "/tmp"],
        &["cp", file.to_str().unwrap(), "c:/nodir/"],
        &["cp", "c:/etc/passwd/", host.path().to_str().unwrap()],
        &["cp", "c:/etc", file.to_str().unwrap()],
        &["cp", "a", "b"],
        &["cp", "c:/a", "c:/b"],
        &["cp", "nosuch:/a", "/tmp"],
    ];
    for args in cases {
        let out = berth.output(args);
        let line = assert_berth_error(&out, 125);
        assert!(!line.is_empty(), "{args:?}");
    }
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
    berth.assert_clean();
}

#[test]
fn diff_lists_added_changed_and_deleted_paths() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run",
        "--pull",
        "never",
        "--net",
        "none",
        "--name",
        "d",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /new/sub && echo f > /new/sub/f && echo x >> /etc/passwd && rm /bin/true",
    ]);
    assert_eq!(
        berth.run_ok(["diff", "d"]),
        "C /bin\nD /bin/true\nC /etc\nC /etc/passwd\nA /new\nA /new/sub\nA /new/sub/f\n"
    );
    let out = berth.output(["diff", "nosuch"]);
    assert_berth_error(&out, 125);
    berth.assert_clean();
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn prune_removes_exactly_what_is_unused() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["network", "create", "--subnet", "10.231.1.0/24", "used"]);
    berth.run_ok(["network", "create", "--subnet", "10.231.2.0/24", "idle"]);
    berth.run_ok([
        "run", "-d", "--pull", "never", "--net", "used", "--name", "up", "busybox", "sleep", "600",
    ]);
    let keep = berth.run_ok([
        "run", "-d", "--pull", "never", "--net", "none", "--label", "keep=1", "--name", "kept",
        "busybox", "true",
    ]);
    let gone = berth.run_ok([
        "run",
        "-d",
        "--pull",
        "never",
        "--net",
        "none",
        "--name",
        "gone",
        "busybox",
        "sh",
        "-c",
        "echo 12345 > /file",
    ]);
    berth.run_ok(["wait", "kept", "gone"]);

    let df = berth.run_ok(["system", "df"]);
    assert!(
        df.lines()
            .any(|l| l.split_whitespace().take(3).eq(["Containers", "3", "1"])),
        "{df}"
    );

    // No -f and no "y" on stdin: nothing goes.
    let out = berth.output(["container", "prune"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(berth.container_ids().len(), 3);

    let out = berth.run_ok(["container", "prune", "-f", "--filter", "label!=keep"]);
    assert_eq!(
        lines(&out),
        [
            "Deleted Containers:",
            gone.trim(),
            "",
            "Total reclaimed space: 6B"
        ]
    );
    let out = berth.run_ok(["container", "prune", "-f", "--filter", "until=1h"]);
    assert_eq!(
        lines(&out),
        ["Total reclaimed space: 0B"],
        "kept is younger than an hour"
    );
    let out = berth.run_ok(["container", "prune", "-f"]);
    assert!(out.contains(keep.trim()), "{out}");
    assert_eq!(
        berth.container_ids().len(),
        1,
        "the running container stays"
    );

    let out = berth.run_ok(["network", "prune", "-f"]);
    assert_eq!(lines(&out), ["Deleted Networks:", "idle", ""]);
    let out = berth.run_ok(["image", "prune", "-a", "-f"]);
    assert_eq!(
        lines(&out),
        ["Total reclaimed space: 0B"],
        "busybox is in use"
    );

    berth.run_ok(["rm", "-f", "up"]);
    let out = berth.run_ok(["system", "prune", "-a", "-f"]);
    assert!(out.contains("Deleted Networks:\nused\n"), "{out}");
    assert!(out.contains("untagged: busybox:latest"), "{out}");
    assert!(berth.run_ok(["images", "-q"]).trim().is_empty());
    let out = berth.output(["system", "prune", "-f", "--filter", "color=red"]);
    assert_berth_error(&out, 125);
    berth.assert_clean();
}
