//! User namespaces: `--uidmap`/`--gidmap`, `--userns=auto`, the engine's
//! remap (`BERTH_USERNS_REMAP`) and what a remapped container's root may
//! and may not do: it is root inside, an unprivileged user on the host;
//! the image layers on disk stay as they are (ID-mapped mounts, not
//! chowned copies); what it writes belongs to its mapped ids.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use berth_e2e::{assert_berth_error, describe, require_root, run_command, stdout, Berth};

const MAP: &str = "0:100000:65536";

/// `berth run ARGS...` without a network and never pulling.
fn run_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["run", "--net", "none", "--pull", "never"];
    all.extend_from_slice(args);
    all
}

/// Every path under `dir` whose owner is `uid` (not following links).
fn owned_by(dir: &Path, uid: u32) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() == uid {
            found.push(path.display().to_string());
        }
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                stack.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        }
    }
    found
}

/// A subordinate-id file for the berth user, as /etc/subuid would hold.
fn subid_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("subid");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn userns_uidmap_makes_root_an_unprivileged_host_user_and_leaves_the_image_alone() {
    require_root!();
    let berth = Berth::new();
    // A host file only the host's root may read, in a directory the
    // container's root may pass through.
    let host = tempfile::tempdir().unwrap();
    fs::set_permissions(host.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let secret = host.path().join("secret");
    fs::write(&secret, "top secret\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let bind = format!("{}:/secret", secret.display());

    let id = berth.run_ok(run_args(&[
        "-d",
        "--uidmap",
        MAP,
        "-v",
        &bind,
        "-v",
        "fresh:/data",
        "busybox",
        "sh",
        "-c",
        "touch /made /data/made; mkdir /dir; sleep 60",
    ]));
    let id = id.trim();
    let inside = berth.run_ok([
        "exec",
        id,
        "sh",
        "-c",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; stat -c '%u:%g' /bin/busybox / /made; \
         cat /secret 2>&1; echo cat=$?",
    ]);
    let lines: Vec<Vec<&str>> = inside
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0", "100000", "65536"], "{inside}");
    assert_eq!(lines[1], ["0", "100000", "65536"], "{inside}");
    assert_eq!(lines[2], ["0"], "root inside: {inside}");
    // The image's files, its root and what root made: all root's inside.
    assert_eq!(lines[3..6], [["0:0"], ["0:0"], ["0:0"]], "{inside}");
    assert!(
        !inside.contains("top secret"),
        "read a host root-only file: {inside}"
    );
    assert!(inside.contains("Permission denied"), "{inside}");
    assert!(inside.contains("cat=1"), "{inside}");

    // On the host: what it wrote is the mapped user's; the image layers
    // are unchanged (not one file handed to the mapped user).
    let upper = berth.root().join("containers").join(id).join("upper");
    for made in ["made", "dir"] {
        let meta = fs::metadata(upper.join(made)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (100000, 100000), "{made}");
    }
    let data = berth.root().join("volumes/fresh/_data");
    let meta = fs::metadata(data.join("made")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (100000, 100000));
    let layers = berth.root().join("images");
    assert!(
        owned_by(&layers, 100000).is_empty(),
        "{:?}",
        owned_by(&layers, 100000)
    );
    // Its processes run as the mapped user on the host.
    let pid = berth.inspect(id)["pid"].as_i64().unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "100000"),
        "{uid_line}"
    );
    assert_eq!(
        berth
            .run_ok([
                "inspect",
                "-f",
                "{{.HostConfig.UsernsMode}} {{json .HostConfig.IDMappings}}",
                id
            ])
            .trim(),
        r#"private {"GidMap":["0:100000:65536"],"UidMap":["0:100000:65536"]}"#
    );

    // A container without a user namespace still sees the image as is.
    let plain = berth.run_ok(run_args(&[
        "--rm",
        "busybox",
        "stat",
        "-c",
        "%u:%g",
        "/bin/busybox",
    ]));
    assert_eq!(plain.trim(), "0:0");
    berth.run_ok(["rm", "-f", "-v", id]);
    berth.run_ok(["volume", "rm", "fresh"]);
    berth.assert_clean();
}

#[test]
fn userns_commit_export_and_cp_give_the_containers_ids_not_the_hosts() {
    require_root!();
    let berth = Berth::new();
    let id = berth.run_ok(run_args(&[
        "-d",
        "--uidmap",
        MAP,
        "busybox",
        "sh",
        "-c",
        "mkdir /d; echo x > /d/f; chown 5:6 /d/f; touch /ready; sleep 60",
    ]));
    let id = id.trim();
    assert!(berth_e2e::wait_until(
        std::time::Duration::from_secs(10),
        || {
            berth
                .output(["exec", id, "test", "-e", "/ready"])
                .status
                .success()
        }
    ));
    // commit: the new image's layer holds the container's ids.
    berth.run_ok(["commit", id, "mapped:1"]);
    let listed = berth.run_ok(run_args(&[
        "--rm", "mapped:1", "stat", "-c", "%u:%g", "/d/f", "/d",
    ]));
    assert_eq!(
        listed.split_whitespace().collect::<Vec<_>>(),
        ["5:6", "0:0"]
    );
    // export: the write layer's ids mapped back, the image's as they are.
    let out = run_command({
        let mut cmd = berth.cmd(["export", id]);
        cmd.stdout(std::process::Stdio::piped());
        cmd
    });
    assert!(out.status.success(), "{}", describe(&out));
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    let mut owners = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        owners.insert(
            name,
            (entry.header().uid().unwrap(), entry.header().gid().unwrap()),
        );
    }
    assert_eq!(owners["d/f"], (5, 6));
    assert_eq!(owners["bin/busybox"], (0, 0));
    // cp in: the container's root owns it; cp -a out: the container's ids.
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("in"), "in").unwrap();
    let into = format!("{id}:/in");
    berth.run_ok(["cp", &host.path().join("in").display().to_string(), &into]);
    let owner = berth.run_ok(["exec", id, "stat", "-c", "%u:%g", "/in"]);
    assert_eq!(owner.trim(), "0:0");
    let from = format!("{id}:/d");
    berth.run_ok(["cp", "-a", &from, &host.path().display().to_string()]);
    let meta = fs::metadata(host.path().join("d/f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (5, 6));
    berth.run_ok(["rm", "-f", id]);
    berth.run_ok(["rmi", "mapped:1"]);
    berth.assert_clean();
}

#[test]
fn userns_auto_blocks_never_overlap_and_the_remap_setting_maps_every_container() {
    require_root!();
    let berth = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let subid = subid_file(dir.path(), "alice:100000:65536\nberth:300000:140000\n");
    let with_ranges = |args: &[&str]| {
        let mut cmd = berth.cmd(args);
        cmd.env("BERTH_SUBUID_FILE", &subid)
            .env("BERTH_SUBGID_FILE", &subid);
        cmd
    };
    let uid_map = |cmd| {
        let out = run_command(cmd);
        assert!(out.status.success(), "{}", describe(&out));
        stdout(&out)
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let first = berth_e2e::stdout(&run_command(with_ranges(&run_args(&[
        "-d",
        "--userns=auto",
        "busybox",
        "sleep",
        "60",
    ]))));
    let second = berth_e2e::stdout(&run_command(with_ranges(&run_args(&[
        "-d",
        "--userns=auto:size=1000",
        "busybox",
        "sleep",
        "60",
    ]))));
    let (first, second) = (first.trim(), second.trim());
    assert!(!first.is_empty() && !second.is_empty());
    assert_eq!(
        uid_map(berth.cmd(["exec", first, "cat", "/proc/self/uid_map"])),
        ["0", "300000", "65536"]
    );
    assert_eq!(
        uid_map(berth.cmd(["exec", second, "cat", "/proc/self/gid_map"])),
        ["0", "365536", "1000"]
    );
    // What is left (300000 + 140000 - 366536) is too small.
    let before = berth.container_ids();
    let out = run_command(with_ranges(&run_args(&[
        "--userns=auto:size=100000",
        "busybox",
        "true",
    ])));
    let line = assert_berth_error(&out, 125);
    assert!(line.contains("no free block of 100000 uids"), "{line}");
    assert_eq!(
        berth.container_ids(),
        before,
        "a refused run left a container"
    );

    // The engine-wide remap: every container gets the berth user's
    // ranges, unless it asks for the host's namespace.
    let remap = |args: &[&str]| {
        let mut cmd = with_ranges(args);
        cmd.env("BERTH_USERNS_REMAP", "default");
        cmd
    };
    assert_eq!(
        uid_map(remap(&run_args(&[
            "--rm",
            "busybox",
            "cat",
            "/proc/self/uid_map"
        ]))),
        ["0", "300000", "140000"]
    );
    assert_eq!(
        uid_map(remap(&run_args(&[
            "--rm",
            "--userns=host",
            "busybox",
            "cat",
            "/proc/self/uid_map"
        ]))),
        ["0", "0", "4294967295"]
    );
    let info = stdout(&run_command(remap(&["info"])));
    assert!(info.contains("userns"), "{info}");
    // The host's network cannot belong to a user namespace.
    let mut host_net = remap(&[
        "run", "--rm", "--pull", "never", "--net", "host", "busybox", "true",
    ]);
    host_net.env("BERTH_USERNS_REMAP", "default");
    let line = assert_berth_error(&run_command(host_net), 125);
    assert!(line.contains("--userns=host"), "{line}");
    // A user without ranges: one line naming the file.
    let mut nobody = with_ranges(&run_args(&["--rm", "busybox", "true"]));
    nobody.env("BERTH_USERNS_REMAP", "carol");
    let line = assert_berth_error(&run_command(nobody), 125);
    assert!(line.contains("\"carol\" has no subordinate ids"), "{line}");
    // A bind source the mapped root cannot reach: refused up front.
    let closed = tempfile::tempdir().unwrap();
    fs::set_permissions(closed.path(), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(closed.path().join("f"), "f").unwrap();
    let bind = format!("{}:/f", closed.path().join("f").display());
    let line = assert_berth_error(
        &berth.output(run_args(&[
            "--rm", "--uidmap", MAP, "-v", &bind, "busybox", "true",
        ])),
        125,
    );
    assert!(line.contains("is closed to its root"), "{line}");

    berth.run_ok(["rm", "-f", first, second]);
    assert_eq!(berth.container_ids(), Vec::<String>::new());
    berth.assert_clean();
}
