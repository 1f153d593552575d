//! Bad input: one clear line on stderr, exit 125, and nothing created.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_e2e::{assert_berth_error, noise, require_root, Berth, TarBuilder};

/// Run `args`, expect berth's failure (125, one `berth: ` line), and check
/// the state root is exactly as before. Returns the error line.
fn fails_cleanly(berth: &Berth, args: &[&str]) -> String {
    let before = berth.tree();
    let images_before = image_names(berth);
    let out = berth.output(args);
    let line = assert_berth_error(&out, 125);
    assert_eq!(
        berth.tree(),
        before,
        "`berth {}` left files behind",
        args.join(" ")
    );
    assert_eq!(
        image_names(berth),
        images_before,
        "`berth {}` changed the images",
        args.join(" ")
    );
    line
}

/// NAME and ID of each image `berth images` lists.
fn image_names(berth: &Berth) -> Vec<String> {
    berth
        .run_ok(["images"])
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// A Berth whose store directories already exist (so that a failing
/// command is compared against a settled tree), with the busybox image.
fn warmed_up() -> Berth {
    let berth = Berth::new();
    berth.run_ok(["run", "--rm", "busybox", "true"]);
    berth
}

#[test]
fn unknown_image() {
    require_root!();
    let berth = warmed_up();
    // Not looked for in a registry (tests reach no registry but their own).
    let line = fails_cleanly(&berth, &["run", "--pull", "never", "nosuchimage", "true"]);
    assert!(
        line.contains("nosuchimage"),
        "the error names the image: {line}"
    );
    fails_cleanly(
        &berth,
        &[
            "run",
            "--rm",
            "--pull",
            "never",
            "--name",
            "x",
            "nosuchimage",
        ],
    );
    berth.assert_clean();
}

#[test]
fn invalid_container_names_are_refused() {
    require_root!();
    let berth = warmed_up();
    let parent = berth
        .root()
        .parent()
        .expect("root has a parent")
        .to_path_buf();
    let etc_existed = parent.join("etc").exists();
    for name in [
        "../../etc",
        "a b",
        "",
        "-dash",
        "a/b",
        ".hidden",
        "ü",
        "x\ny",
    ] {
        // `--name=VALUE`, so that a leading dash is a value, not a flag.
        fails_cleanly(
            &berth,
            &["run", &format!("--name={name}"), "busybox", "true"],
        );
    }
    assert_eq!(
        parent.join("etc").exists(),
        etc_existed,
        "a name escaped the state dir"
    );
    assert!(berth.container_ids().is_empty());
    berth.assert_clean();
}

#[test]
fn duplicate_names_are_refused() {
    require_root!();
    let berth = warmed_up();
    berth.run_ok(["run", "--name", "dup", "busybox", "true"]);
    let line = fails_cleanly(&berth, &["run", "--name", "dup", "busybox", "true"]);
    assert!(line.contains("dup"), "the error names the name: {line}");
    assert_eq!(berth.container_ids().len(), 1);
    // The name is free again once the container is removed.
    berth.run_ok(["rm", "dup"]);
    berth.run_ok(["run", "--rm", "--name", "dup", "busybox", "true"]);
    berth.assert_clean();
}

#[test]
fn corrupt_archives_are_refused() {
    require_root!();
    let berth = warmed_up();
    let dir = tempfile::tempdir().expect("tempdir");
    let valid = TarBuilder::new()
        .dir("bin", 0o755)
        .file("bin/data", 0o644, &noise(3000, 7))
        .finish();
    let mut gz_junk = vec![0x1f, 0x8b, 0x08, 0x00];
    gz_junk.extend(noise(2000, 11));
    let cases: [(&str, Vec<u8>); 4] = [
        ("random.tar", noise(10 * 1024, 42)),
        // The header says 3000 bytes of data, the file ends before that.
        ("truncated.tar", valid[..1536].to_vec()),
        ("junk.tar.gz", gz_junk),
        ("empty.tar", Vec::new()),
    ];
    for (file, bytes) in cases {
        let path = dir.path().join(file);
        fs::write(&path, bytes).expect("write archive");
        let name = file.replace('.', "-");
        fails_cleanly(
            &berth,
            &["image", "import", path.to_str().expect("utf-8 path"), &name],
        );
        assert!(
            !berth.run_ok(["images"]).contains(&name),
            "{file} became an image"
        );
    }
    berth.assert_clean();
}

/// Everything under `dir`: relative path, size, link count, content.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read_dir").filter_map(Result::ok) {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).expect("stat");
            let content = if meta.is_file() {
                fs::read(&path).expect("read")
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.push((
                path.strip_prefix(dir).expect("prefix").to_path_buf(),
                meta.len(),
                meta.nlink(),
                content,
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn escaping_archives_are_refused_and_touch_nothing_outside() {
    require_root!();
    let berth = warmed_up();
    let outside = tempfile::Builder::new()
        .prefix("berth-e2e-outside-")
        .tempdir()
        .expect("tempdir");
    let outside_path = outside.path().to_str().expect("utf-8 path").to_owned();
    let secret = format!("{outside_path}/secret");
    fs::write(&secret, "host secret\n").expect("write secret");
    let up = "../".repeat(16);
    let rel_outside = format!("{up}{}", outside_path.trim_start_matches('/'));
    let before = snapshot(outside.path());

    let ordinary = || {
        TarBuilder::new()
            .dir("etc", 0o755)
            .file("etc/ok", 0o644, b"fine\n")
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            ordinary().file("../escape", 0o644, b"escaped\n").finish(),
        ),
        (
            "deep dotdot",
            ordinary()
                .file(&format!("{rel_outside}/escape"), 0o644, b"escaped\n")
                .finish(),
        ),
        (
            "inner dotdot",
            ordinary()
                .file("etc/../../escape", 0o644, b"escaped\n")
                .finish(),
        ),
        (
            "symlink to absolute dir, then write through it",
            ordinary()
                .symlink("a", &outside_path)
                .file("a/pwned", 0o644, b"pwned\n")
                .finish(),
        ),
        (
            "symlink to relative escape, then write through it",
            ordinary()
                .symlink("b", &rel_outside)
                .file("b/pwned", 0o644, b"pwned\n")
                .finish(),
        ),
        (
            "hardlink to an absolute host path",
            ordinary().hardlink("h", &secret).finish(),
        ),
        (
            "hardlink to an absolute host path, then write to it",
            ordinary()
                .hardlink("h", &secret)
                .file("h", 0o644, b"overwritten\n")
                .finish(),
        ),
        (
            "hardlink through ..",
            ordinary()
                .hardlink("h", &format!("{rel_outside}/secret"))
                .finish(),
        ),
    ];
    let archives = tempfile::tempdir().expect("tempdir");
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let path = archives.path().join(format!("escape{i}.tar"));
        fs::write(&path, bytes).expect("write archive");
        let name = format!("escape{i}");
        let before_tree = berth.tree();
        let out = berth.output(["image", "import", path.to_str().expect("utf-8"), &name]);
        assert_eq!(
            snapshot(outside.path()),
            before,
            "{what}: the directory outside the layer changed"
        );
        assert!(
            !Path::new(&berth.root().join("images/escape")).exists()
                && !berth.root().join("escape").exists()
                && !berth
                    .root()
                    .parent()
                    .expect("parent")
                    .join("escape")
                    .exists(),
            "{what}: a file escaped the layer"
        );
        assert_eq!(
            out.status.code(),
            Some(125),
            "{what}: the archive was not refused\n{}",
            berth_e2e::describe(&out)
        );
        assert_berth_error(&out, 125);
        assert_eq!(berth.tree(), before_tree, "{what}: files left behind");
        assert!(
            !berth.run_ok(["images"]).contains(&name),
            "{what}: became an image"
        );
    }
    berth.assert_clean();
}

#[test]
fn an_entry_over_an_earlier_link_replaces_the_link_not_its_target() {
    require_root!();
    let berth = warmed_up();
    let outside = tempfile::Builder::new()
        .prefix("berth-e2e-outside-")
        .tempdir()
        .expect("tempdir");
    let secret = outside.path().join("secret");
    fs::write(&secret, "host secret\n").expect("write secret");
    let secret = secret.to_str().expect("utf-8").to_owned();
    let before = snapshot(outside.path());
    // A valid archive (a later entry replaces an earlier one), as long as
    // the file is written in place of the link, never through it.
    let archive = TarBuilder::new()
        .symlink("s", &secret)
        .file("s", 0o644, b"in the layer\n")
        .finish();
    let path = outside.path().join("relink.tar");
    fs::write(&path, archive).expect("write archive");
    let out = berth.output(["image", "import", path.to_str().expect("utf-8"), "relink"]);
    fs::remove_file(&path).expect("rm archive");
    assert_eq!(
        snapshot(outside.path()),
        before,
        "the link's target outside the layer changed"
    );
    if out.status.success() {
        let layers = berth.layer_rootfses();
        let s = layers
            .iter()
            .map(|l| l.join("s"))
            .find(|s| s.symlink_metadata().is_ok())
            .expect("the imported layer has s");
        assert_eq!(fs::read_to_string(&s).expect("read s"), "in the layer\n");
        assert!(
            s.symlink_metadata().expect("stat").is_file(),
            "s is still a link"
        );
        berth.run_ok(["image", "rm", "relink"]);
    } else {
        assert_berth_error(&out, 125);
    }
    berth.assert_clean();
}

#[test]
fn absolute_entry_names_stay_inside_the_layer() {
    require_root!();
    let berth = warmed_up();
    let outside = tempfile::Builder::new()
        .prefix("berth-e2e-outside-")
        .tempdir()
        .expect("tempdir");
    let outside_path = outside.path().to_str().expect("utf-8").to_owned();
    let before = snapshot(outside.path());
    let archive = TarBuilder::new()
        .dir("etc", 0o755)
        .file(&format!("{outside_path}/abs"), 0o644, b"absolute\n")
        .finish();
    let archives = tempfile::tempdir().expect("tempdir");
    let path = archives.path().join("absolute.tar");
    fs::write(&path, archive).expect("write archive");
    let out = berth.output(["image", "import", path.to_str().expect("utf-8"), "absolute"]);
    assert_eq!(
        snapshot(outside.path()),
        before,
        "the absolute name was written on the host"
    );
    // SECURITY.md: refuse it, or neutralise it (like docker and GNU tar,
    // drop the leading `/`, so it lands inside the layer).
    if out.status.success() {
        let inside = format!("{}/abs", outside_path.trim_start_matches('/'));
        let landed = berth
            .layer_rootfses()
            .iter()
            .any(|l| fs::read(l.join(&inside)).is_ok_and(|c| c == b"absolute\n"));
        assert!(
            landed,
            "the absolute entry is not at /{inside} in the layer"
        );
        berth.run_ok(["image", "rm", "absolute"]);
    } else {
        assert_berth_error(&out, 125);
    }
    berth.assert_clean();
}

/// A state root or store that another user owns or may write is refused
/// (such a user could swap in a record naming any PID for `stop` to kill);
/// one that is merely readable by others is closed to 0700.
#[test]
fn a_state_root_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["ps", "-a"]);
    let containers = berth.root().join("containers");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;

    std::os::unix::fs::chown(&containers, Some(65534), None).unwrap();
    let out = berth.output(["ps", "-a"]);
    assert_berth_error(&out, 125);
    assert!(String::from_utf8_lossy(&out.stderr).contains("owned by uid 65534"));
    std::os::unix::fs::chown(&containers, Some(0), None).unwrap();

    fs::set_permissions(&containers, fs::Permissions::from_mode(0o777)).unwrap();
    assert_berth_error(&berth.output(["ps", "-a"]), 125);
    assert_eq!(mode(&containers), 0o777, "left as it was");

    fs::set_permissions(&containers, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(berth.root(), fs::Permissions::from_mode(0o755)).unwrap();
    berth.run_ok(["ps", "-a"]);
    assert_eq!(mode(&containers), 0o700);
    assert_eq!(mode(berth.root()), 0o700);
    berth.assert_clean();
}

/// One corrupt record never locks the engine: `ps -a` lists the others
/// and shows the broken one, `run` still works, and `rm -f` removes the
/// broken container, killing its still-running process through the
/// runtime's own state.
#[test]
fn a_corrupt_record_is_shown_and_removed_without_hiding_the_others() {
    require_root!();
    let berth = Berth::new();
    let keep = berth.run_ok([
        "run", "-d", "--net", "none", "--name", "keep", "busybox", "sleep", "60",
    ]);
    let victim = berth.run_ok(["run", "-d", "--net", "none", "busybox", "sleep", "60"]);
    let (keep, victim) = (keep.trim().to_owned(), victim.trim().to_owned());
    let record = berth
        .root()
        .join("containers")
        .join(&victim)
        .join("config.json");
    let pid = berth.inspect(&victim)["pid"].as_i64().unwrap();
    for garbage in [&b"{not json"[..], &b""[..], &vec![b' '; 5 << 20][..]] {
        fs::write(&record, garbage).unwrap();
        let ps = berth.run_ok(["ps", "-a"]);
        assert!(ps.contains("keep"), "{ps}");
        assert!(
            ps.contains(&victim[..12]) && ps.contains("Broken record"),
            "{ps}"
        );
    }
    let out = berth.output(["rm", &victim[..12]]);
    assert_berth_error(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("rm -f"));
    berth.run_ok(["run", "--rm", "--net", "none", "busybox", "true"]);
    berth.run_ok(["rm", "-f", &victim[..12]]);
    assert!(!berth.run_ok(["ps", "-a"]).contains(&victim[..12]));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")),
        "the broken container's process was killed"
    );
    berth.run_ok(["rm", "-f", &keep]);
    berth.assert_clean();
}

/// The freezer file berth uses for a container's cgroup: v1's
/// freezer.state where the freezer controller is on v1 (hybrid hosts too),
/// else v2's cgroup.freeze.
fn freezer_files(id: &str) -> Vec<PathBuf> {
    let all = all_freezer_files(id);
    let v1: Vec<PathBuf> = all
        .iter()
        .filter(|f| f.ends_with("freezer.state"))
        .cloned()
        .collect();
    if v1.is_empty() {
        all
    } else {
        v1
    }
}

fn all_freezer_files(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in walkdir_cgroups(Path::new("/sys/fs/cgroup"), 0) {
        if entry.file_name().is_some_and(|n| n == id) {
            for file in ["freezer.state", "cgroup.freeze"] {
                if entry.join(file).exists() {
                    found.push(entry.join(file));
                }
            }
        }
    }
    found
}

fn walkdir_cgroups(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if depth > 8 {
        return out;
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.path());
            out.extend(walkdir_cgroups(&entry.path(), depth + 1));
        }
    }
    out
}

/// A container a killed `commit` left frozen (its cgroup frozen, the
/// record still "running", no live holder) is thawed by the next `ps` or
/// `exec`, and `stop` works.
#[test]
fn a_container_left_frozen_by_a_killed_commit_recovers() {
    require_root!();
    let berth = Berth::new();
    let id = berth.run_ok(["run", "-d", "--net", "none", "busybox", "sleep", "60"]);
    let id = id.trim().to_owned();
    let files = freezer_files(&id);
    assert!(!files.is_empty(), "no freezer for {id}");
    for file in &files {
        let frozen = if file.ends_with("freezer.state") {
            "FROZEN"
        } else {
            "1"
        };
        fs::write(file, frozen).unwrap();
    }
    berth.run_ok(["ps"]);
    for file in &files {
        let state = fs::read_to_string(file).unwrap();
        assert!(
            state.trim() == "THAWED" || state.trim() == "0",
            "{}: {state}",
            file.display()
        );
    }
    for file in &files {
        let frozen = if file.ends_with("freezer.state") {
            "FROZEN"
        } else {
            "1"
        };
        fs::write(file, frozen).unwrap();
    }
    let out = berth.output(["exec", &id, "echo", "alive"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alive\n", "{out:?}");
    berth.run_ok(["stop", "-t", "1", &id]);
    berth.run_ok(["rm", &id]);
    berth.assert_clean();
}

/// Output that cannot be written is never a panic: a full device is one
/// line and 125, a reader that went away ends berth quietly (141, as a
/// shell reports SIGPIPE).
#[test]
fn unwritable_output_is_one_line_or_a_quiet_exit_never_a_panic() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run", "--net", "none", "--name", "printed", "busybox", "true",
    ]);
    for args in [&["ps", "-a"][..], &["images"], &["inspect", "printed"]] {
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = berth.cmd(args).stdout(full).output().unwrap();
        let line = assert_berth_error(&out, 125);
        assert!(line.contains("No space left"), "{line}");

        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let out = berth
            .cmd(args)
            .stdout(std::process::Stdio::from(writer))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(141), "{args:?}: {out:?}");
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    berth.run_ok(["rm", "printed"]);
    berth.assert_clean();
}

#[test]
fn usage_errors_are_one_line_naming_the_flag_once() {
    require_root!();
    let berth = Berth::new();
    for (args, names) in [
        (
            &["run", "--frobnicate", "busybox", "true"][..],
            "--frobnicate",
        ),
        (&["ps", "--bogus"][..], "--bogus"),
        (&["frobnicate"][..], "frobnicate"),
        (&["run", "--restart=always"][..], "IMAGE"),
        (&["run", "-m"][..], "--memory"),
    ] {
        let out = berth.output(args);
        let message = assert_berth_error(&out, 125);
        assert_eq!(
            message.matches(names).count(),
            1,
            "{args:?} names {names} once: {message}"
        );
        assert!(!message.contains("tip:"), "{message}");
    }
    assert!(berth.container_ids().is_empty());
    berth.assert_clean();
}
