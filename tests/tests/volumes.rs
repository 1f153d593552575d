//! Volumes: named and anonymous volumes, copy-up from the image, `--mount`,
//! `--tmpfs`, `--volumes-from`, `volume ls|inspect|rm|prune`, and the
//! hostile inputs (names that would leave the store, unknown `--mount`
//! keys, an image whose mount point is a symlink to `/`).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_e2e::{
    assert_berth_error, assert_target_error, describe, require_root, run_command, stdout, Berth,
};

/// `berth run --rm --net none --pull never ARGS...`.
fn run_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["run", "--net", "none", "--pull", "never"];
    all.extend_from_slice(args);
    all
}

fn volume_names(berth: &Berth) -> Vec<String> {
    let mut names: Vec<String> = berth
        .run_ok(["volume", "ls", "-q"])
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

fn data_dir(berth: &Berth, name: &str) -> PathBuf {
    berth.root().join("volumes").join(name).join("_data")
}

/// The store's entries besides its lock file.
fn volume_store_entries(berth: &Berth) -> Vec<PathBuf> {
    let mut entries = berth.entries("volumes");
    entries.retain(|e| !e.ends_with(".lock"));
    entries
}

#[test]
fn a_named_volume_outlives_its_container_and_is_seen_by_the_next() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(run_args(&[
        "--name",
        "writer",
        "-v",
        "shared-data:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/file",
    ]));
    assert_eq!(volume_names(&berth), ["shared-data"]);
    berth.run_ok(["rm", "-v", "writer"]);
    assert_eq!(
        volume_names(&berth),
        ["shared-data"],
        "rm -v removed a named volume"
    );
    let out = berth.run_ok(run_args(&[
        "--rm",
        "-v",
        "shared-data:/elsewhere:ro",
        "busybox",
        "sh",
        "-c",
        "cat /elsewhere/file; echo x > /elsewhere/other 2>/dev/null || echo read-only",
    ]));
    assert_eq!(out, "kept\nread-only\n");
    // inspect: docker's shape, the Mountpoint is where the file is.
    let inspect: serde_json::Value =
        serde_json::from_str(&berth.run_ok(["volume", "inspect", "shared-data"])).expect("json");
    let volume = &inspect[0];
    assert_eq!(volume["Name"], "shared-data");
    assert_eq!(volume["Driver"], "local");
    assert_eq!(volume["Scope"], "local");
    assert!(volume["CreatedAt"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let mountpoint = PathBuf::from(volume["Mountpoint"].as_str().expect("Mountpoint"));
    assert_eq!(mountpoint, data_dir(&berth, "shared-data"));
    assert_eq!(
        fs::read_to_string(mountpoint.join("file")).ok().as_deref(),
        Some("kept\n")
    );
    berth.run_ok(["volume", "rm", "shared-data"]);
    assert!(volume_names(&berth).is_empty());
    assert!(!mountpoint.exists());
    berth.assert_clean();
}

#[test]
fn an_empty_volume_is_filled_from_the_image_directory_it_covers() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(run_args(&["--rm", "busybox", "true"]));
    let layer = berth.layer_rootfses().remove(0);

    // /bin: the busybox binary (its mode) and the applet symlinks.
    let out = berth.run_ok(run_args(&[
        "--rm",
        "-v",
        "bins:/bin",
        "busybox",
        "sh",
        "-c",
        "echo ran",
    ]));
    assert_eq!(out, "ran\n");
    let bins = data_dir(&berth, "bins");
    let image_busybox = fs::metadata(layer.join("bin/busybox")).expect("image busybox");
    let copied = fs::metadata(bins.join("busybox")).expect("busybox copied into the volume");
    assert_eq!(copied.len(), image_busybox.len());
    assert_eq!(copied.mode(), image_busybox.mode());
    assert_eq!(
        (copied.uid(), copied.gid()),
        (image_busybox.uid(), image_busybox.gid())
    );
    let sh = fs::symlink_metadata(bins.join("sh")).expect("sh copied");
    assert!(sh.file_type().is_symlink(), "the applet link became a file");
    assert_eq!(
        fs::read_link(bins.join("sh")).expect("readlink"),
        fs::read_link(layer.join("bin/sh")).expect("image readlink")
    );

    // /etc: the image's files, byte for byte, with their modes; the
    // volume's root takes the directory's mode. Then a changed volume is
    // not filled again.
    berth.run_ok(run_args(&[
        "--rm",
        "-v",
        "etc:/etc",
        "busybox",
        "sh",
        "-c",
        "echo changed > /etc/passwd",
    ]));
    let etc = data_dir(&berth, "etc");
    assert_eq!(
        fs::read_to_string(etc.join("passwd")).expect("passwd"),
        "changed\n"
    );
    assert_eq!(
        fs::read(etc.join("group")).expect("group"),
        fs::read(layer.join("etc/group")).expect("image group")
    );
    assert_eq!(
        fs::metadata(&etc).expect("etc").mode(),
        fs::metadata(layer.join("etc")).expect("image etc").mode()
    );
    let out = berth.run_ok(run_args(&[
        "--rm",
        "-v",
        "etc:/etc",
        "busybox",
        "cat",
        "/etc/passwd",
    ]));
    assert_eq!(out, "changed\n", "a volume with content was filled again");

    // nocopy: stays empty.
    berth.run_ok(run_args(&[
        "--rm",
        "-v",
        "empty:/etc:nocopy",
        "busybox",
        "true",
    ]));
    assert_eq!(
        copied_files(&data_dir(&berth, "empty")),
        Vec::<String>::new()
    );
    // --mount volume-nocopy too.
    berth.run_ok(run_args(&[
        "--rm",
        "--mount",
        "type=volume,src=empty2,dst=/etc,volume-nocopy",
        "busybox",
        "true",
    ]));
    assert_eq!(
        copied_files(&data_dir(&berth, "empty2")),
        Vec::<String>::new()
    );
    berth.assert_clean();
}

/// The entries of a volume over /etc, except the mount points berth made
/// in it for its /etc/hosts, /etc/resolv.conf and /etc/hostname binds (as
/// docker makes them too).
fn copied_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["hosts", "resolv.conf", "hostname"].contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

/// The mountinfo line of `target` in a container's output.
fn mountinfo_line<'a>(out: &'a str, target: &str) -> &'a str {
    out.lines()
        .find(|l| l.split(' ').nth(4) == Some(target))
        .unwrap_or_else(|| panic!("no mount on {target}:\n{out}"))
}

#[test]
fn mount_and_tmpfs_options_reach_the_container() {
    require_root!();
    let berth = Berth::new();
    let host = tempfile::tempdir().expect("tempdir");
    fs::write(host.path().join("hello"), "hi\n").expect("write");
    let bind_ro = format!(
        "type=bind,source={},target=/ro,readonly,bind-propagation=rshared",
        host.path().display()
    );
    let bind_slave = format!(
        "type=bind,src={},dst=/slave,bind-propagation=rslave",
        host.path().display()
    );
    let out = berth.run_ok(run_args(&[
        "--rm",
        "--mount",
        &bind_ro,
        "--mount",
        &bind_slave,
        "--mount",
        "type=tmpfs,destination=/scratch,tmpfs-size=2m,tmpfs-mode=1770",
        "--tmpfs",
        "/run:size=3m,mode=700,exec",
        "--mount",
        "type=volume,target=/vol,ro",
        "busybox",
        "sh",
        "-c",
        "cat /proc/self/mountinfo; cat /ro/hello",
    ]));
    let ro = mountinfo_line(&out, "/ro");
    assert!(ro.split(' ').nth(5).unwrap_or("").starts_with("ro"), "{ro}");
    assert!(ro.contains(" shared:"), "rshared not applied: {ro}");
    let slave = mountinfo_line(&out, "/slave");
    assert!(!slave.contains(" shared:"), "rslave not applied: {slave}");
    assert!(
        slave.split(' ').nth(5).unwrap_or("").starts_with("rw"),
        "{slave}"
    );
    let scratch = mountinfo_line(&out, "/scratch");
    assert!(
        scratch.contains(" tmpfs ")
            && scratch.contains("size=2048k")
            && scratch.contains("mode=1770"),
        "{scratch}"
    );
    assert!(
        scratch.contains("noexec") && scratch.contains("nosuid"),
        "{scratch}"
    );
    let run = mountinfo_line(&out, "/run");
    assert!(
        run.contains("size=3072k") && run.contains("mode=700"),
        "{run}"
    );
    assert!(
        !run.split(' ').nth(5).unwrap_or("").contains("noexec"),
        "exec not applied: {run}"
    );
    let vol = mountinfo_line(&out, "/vol");
    assert!(
        vol.split(' ').nth(5).unwrap_or("").starts_with("ro"),
        "{vol}"
    );
    assert!(out.ends_with("hi\n"), "{out}");
    // The anonymous volume went with --rm.
    assert!(volume_names(&berth).is_empty());

    // A tmpfs-backed named volume gets its size.
    berth.run_ok([
        "volume",
        "create",
        "--opt",
        "type=tmpfs",
        "--opt",
        "device=tmpfs",
        "--opt",
        "o=size=4m",
        "fast",
    ]);
    let out = berth.run_ok(run_args(&[
        "--rm",
        "-v",
        "fast:/fast",
        "busybox",
        "cat",
        "/proc/self/mountinfo",
    ]));
    let fast = mountinfo_line(&out, "/fast");
    assert!(
        fast.contains(" tmpfs ") && fast.contains("size=4096k"),
        "{fast}"
    );
    berth.assert_clean();
}

#[test]
fn a_volume_in_use_cannot_be_removed() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["volume", "create", "--label", "team=a", "busy"]);
    let out = berth.output(run_args(&[
        "--name",
        "user",
        "-v",
        "busy:/busy",
        "busybox",
        "true",
    ]));
    assert!(out.status.success(), "{}", describe(&out));
    // Stopped, but it still uses the volume.
    let out = berth.output(["volume", "rm", "busy"]);
    let line = assert_target_error(&out);
    assert!(line.contains("in use"), "{line}");
    assert_eq!(volume_names(&berth), ["busy"]);
    // -f does not force it either (as docker).
    assert_target_error(&berth.output(["volume", "rm", "-f", "busy"]));
    // -f is quiet about a missing one.
    let out = berth.output(["volume", "rm", "-f", "no-such-volume"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_target_error(&berth.output(["volume", "rm", "no-such-volume"]));
    // The filters see it as in use.
    assert_eq!(
        berth.run_ok(["volume", "ls", "-q", "--filter", "dangling=false"]),
        "busy\n"
    );
    assert_eq!(
        berth.run_ok(["volume", "ls", "-q", "--filter", "dangling=true"]),
        ""
    );
    assert_eq!(
        berth.run_ok(["volume", "ls", "-q", "--filter", "label=team=a"]),
        "busy\n"
    );
    berth.run_ok(["rm", "user"]);
    assert_eq!(berth.run_ok(["volume", "rm", "busy"]), "busy\n");
    // A running container's volume, anonymous or named, cannot go either.
    berth.run_ok(run_args(&[
        "-d",
        "--name",
        "runner",
        "-v",
        "live:/live",
        "-v",
        "/anon",
        "busybox",
        "sleep",
        "60",
    ]));
    assert_eq!(volume_names(&berth).len(), 2);
    for name in volume_names(&berth) {
        assert_target_error(&berth.output(["volume", "rm", &name]));
    }
    let out = berth.run_ok(["volume", "prune", "-a", "-f"]);
    assert_eq!(out, "Total reclaimed space: 0B\n");
    berth.run_ok(["rm", "-f", "-v", "runner"]);
    assert_eq!(volume_names(&berth), ["live"]);
    berth.assert_clean();
}

#[test]
fn anonymous_volumes_go_with_rm_v_and_rm_flag_named_ones_stay() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(run_args(&[
        "--name",
        "a",
        "-v",
        "/anon",
        "-v",
        "keep-me:/named",
        "busybox",
        "true",
    ]));
    let names = volume_names(&berth);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit())),
        "no anonymous volume with a 64-hex name: {names:?}"
    );
    // The record lists both mounts, docker-shaped.
    let record = berth.inspect("a");
    let mounts = record["mounts"].as_array().expect("mounts");
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    let named = mounts
        .iter()
        .find(|m| m["Destination"] == "/named")
        .expect("/named");
    assert_eq!(named["Type"], "volume");
    assert_eq!(named["Name"], "keep-me");
    assert_eq!(named["Driver"], "local");
    assert_eq!(named["RW"], true);
    berth.run_ok(["rm", "-v", "a"]);
    assert_eq!(volume_names(&berth), ["keep-me"]);

    // Without -v the anonymous volume stays (dangling), as in docker.
    berth.run_ok(run_args(&["--name", "b", "-v", "/anon", "busybox", "true"]));
    berth.run_ok(["rm", "b"]);
    assert_eq!(volume_names(&berth).len(), 2);
    let dangling = berth.run_ok(["volume", "ls", "-q", "--filter", "dangling=true"]);
    assert_eq!(dangling.lines().count(), 2, "{dangling}");
    berth.run_ok(["volume", "prune", "-f", "-a"]);

    // --rm: the anonymous volume goes when the container does.
    berth.run_ok(run_args(&[
        "--rm",
        "-v",
        "/anon",
        "-v",
        "keep-me:/named",
        "busybox",
        "true",
    ]));
    assert_eq!(volume_names(&berth), ["keep-me"]);
    assert_eq!(volume_store_entries(&berth).len(), 1);
    berth.assert_clean();
}

#[test]
fn image_volumes_become_anonymous_volumes_filled_from_the_image() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(run_args(&[
        "--name",
        "seed",
        "busybox",
        "sh",
        "-c",
        "mkdir /data && echo seeded > /data/seed",
    ]));
    berth.run_ok(["commit", "--change", "VOLUME /data", "seed", "withvol"]);
    berth.run_ok(["rm", "seed"]);
    let out = berth.run_ok(run_args(&["--name", "c", "withvol", "cat", "/data/seed"]));
    assert_eq!(out, "seeded\n");
    let names = volume_names(&berth);
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(
        fs::read_to_string(data_dir(&berth, &names[0]).join("seed"))
            .ok()
            .as_deref(),
        Some("seeded\n")
    );
    // A -v on the same path replaces the image's VOLUME.
    berth.run_ok(run_args(&["--rm", "-v", "mine:/data", "withvol", "true"]));
    assert_eq!(volume_names(&berth).len(), 2);
    berth.run_ok(["rm", "-v", "c"]);
    assert_eq!(volume_names(&berth), ["mine"]);
    berth.assert_clean();
}

#[test]
fn volumes_from_mounts_another_containers_volumes() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(run_args(&[
        "--name",
        "source",
        "-v",
        "common:/common",
        "-v",
        "/scratch",
        "busybox",
        "sh",
        "-c",
        "echo one > /common/f; echo two > /scratch/f",
    ]));
    let out = berth.run_ok(run_args(&[
        "--rm",
        "--volumes-from",
        "source:ro",
        "busybox",
        "sh",
        "-c",
        "cat /common/f /scratch/f; echo x > /common/g 2>/dev/null || echo read-only",
    ]));
    assert_eq!(out, "one\ntwo\nread-only\n");
    // The --rm container did not take source's anonymous volume with it.
    assert_eq!(volume_names(&berth).len(), 2);
    let out = berth.output(run_args(&[
        "--rm",
        "--volumes-from",
        "source:rx",
        "busybox",
        "true",
    ]));
    assert_berth_error(&out, 125);
    let out = berth.output(run_args(&[
        "--rm",
        "--volumes-from",
        "no-such",
        "busybox",
        "true",
    ]));
    assert_berth_error(&out, 125);
    berth.run_ok(["rm", "-v", "source"]);
    assert_eq!(volume_names(&berth), ["common"]);
    berth.assert_clean();
}

#[test]
fn relative_and_home_bind_sources_resolve_like_docker() {
    require_root!();
    let berth = Berth::new();
    let cwd = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = berth.cmd(run_args(&[
        "--rm",
        "-v",
        "./made:/rel",
        "-v",
        "~/in-home:/home-dir",
        "busybox",
        "sh",
        "-c",
        "echo r > /rel/f; echo h > /home-dir/f",
    ]));
    cmd.current_dir(cwd.path()).env("HOME", home.path());
    let out = run_command(cmd);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        fs::read_to_string(cwd.path().join("made/f"))
            .ok()
            .as_deref(),
        Some("r\n")
    );
    assert_eq!(
        fs::read_to_string(home.path().join("in-home/f"))
            .ok()
            .as_deref(),
        Some("h\n")
    );
    // A bare word is a volume name, not a directory.
    let mut cmd = berth.cmd(run_args(&["--rm", "-v", "made:/x", "busybox", "true"]));
    cmd.current_dir(cwd.path());
    assert!(run_command(cmd).status.success());
    assert_eq!(volume_names(&berth), ["made"]);
    berth.assert_clean();
}

#[test]
fn volume_prune_removes_exactly_the_unused_ones() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["volume", "create", "named-unused"]);
    berth.run_ok(["volume", "create", "--label", "keep=yes", "labelled-unused"]);
    berth.run_ok(run_args(&[
        "--name",
        "holder",
        "-v",
        "named-used:/a",
        "-v",
        "/anon-used",
        "busybox",
        "true",
    ]));
    berth.run_ok(run_args(&[
        "--name",
        "gone",
        "-v",
        "/anon-unused",
        "busybox",
        "sh",
        "-c",
        "head -c 100000 /dev/zero > /anon-unused/file",
    ]));
    let anon_used = berth.inspect("holder")["anonymous_volumes"][0]
        .as_str()
        .expect("holder's anonymous volume")
        .to_owned();
    let anon_unused = berth.inspect("gone")["anonymous_volumes"][0]
        .as_str()
        .expect("gone's anonymous volume")
        .to_owned();
    berth.run_ok(["rm", "gone"]);

    // Default: anonymous and unused only.
    let out = berth.run_ok(["volume", "prune", "-f"]);
    assert!(out.starts_with("Deleted Volumes:\n"), "{out}");
    assert!(out.contains(&format!("\n{anon_unused}\n")), "{out}");
    assert_eq!(out.lines().filter(|l| l.len() == 64).count(), 1, "{out}");
    let reclaimed = out.lines().last().unwrap_or_default();
    assert!(
        reclaimed.starts_with("Total reclaimed space: ") && !reclaimed.ends_with(" 0B"),
        "{out}"
    );
    let mut expected = vec![
        anon_used.clone(),
        "labelled-unused".to_owned(),
        "named-unused".to_owned(),
        "named-used".to_owned(),
    ];
    expected.sort();
    assert_eq!(volume_names(&berth), expected);

    // -a with a label filter: only the unused named ones that match.
    let out = berth.run_ok(["volume", "prune", "-f", "-a", "--filter", "label!=keep"]);
    assert!(
        out.contains("named-unused") && !out.contains("labelled"),
        "{out}"
    );
    // -a: every unused one; nothing in use.
    let out = berth.run_ok(["volume", "prune", "-a", "-f"]);
    assert!(out.contains("labelled-unused"), "{out}");
    let mut expected = vec![anon_used, "named-used".to_owned()];
    expected.sort();
    assert_eq!(volume_names(&berth), expected);
    // Nothing left to prune.
    assert_eq!(
        berth.run_ok(["volume", "prune", "-a", "-f"]),
        "Total reclaimed space: 0B\n"
    );
    berth.assert_clean();
}

/// The names in the host's `/` and `/etc`, to see that a hostile run
/// created nothing there (not /tmp: other jobs on the machine use it).
fn host_top_level() -> Vec<String> {
    let mut names: Vec<String> = ["/", "/etc"]
        .iter()
        .flat_map(|dir| {
            fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn hostile_volume_names_and_mount_keys_are_refused_and_create_nothing() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(run_args(&["--rm", "busybox", "true"]));
    let before = root_tree(&berth);
    let escape = format!("berth-e2e-escape-{}", std::process::id());
    let up = format!("../../../../tmp/{escape}");
    let cases: Vec<Vec<String>> = vec![
        vec!["volume".into(), "create".into(), up.clone()],
        vec!["volume".into(), "create".into(), "a/b".into()],
        vec!["volume".into(), "create".into(), "..".into()],
        vec![
            "volume".into(),
            "create".into(),
            "--opt".into(),
            "colour=red".into(),
            "vx".into(),
        ],
        vec![
            "volume".into(),
            "create".into(),
            "-d".into(),
            "nfs".into(),
            "vx".into(),
        ],
        vec!["volume".into(), "inspect".into(), "../x".into()],
        vec!["volume".into(), "rm".into(), "../x".into()],
    ];
    for args in &cases {
        let out = berth.output(args);
        assert!(
            !out.status.success(),
            "{args:?} succeeded\n{}",
            describe(&out)
        );
        assert_berth_error(&out, out.status.code().unwrap_or(125));
    }
    let runs: Vec<Vec<&str>> = vec![
        vec!["-v", "a/b:/d"],
        vec!["-v", "..:/d:nocopy,bogus"],
        vec!["-v", "x..y/z:/d"],
        vec!["--mount", "type=volume,source=../x,target=/d"],
        vec!["--mount", "type=volume,source=a/b,target=/d"],
        vec!["--mount", "type=bind,source=/tmp,target=/d,colour=red"],
        vec!["--mount", "type=volume,target=/d,volume-driver=nfs"],
        vec!["--mount", "type=tmpfs,target=/d,bind-propagation=shared"],
        vec!["--mount", "type=bind,source=/no/such/dir,target=/d"],
        vec!["--tmpfs", "/d:bogus"],
        vec!["-v", "ok-name:/d", "-v", "/other:/d"],
        vec![
            "-v",
            "ok-name:/d",
            "--mount",
            "type=volume,target=/e,colour=red",
        ],
    ];
    for flags in &runs {
        let mut args = vec!["--rm"];
        args.extend_from_slice(flags);
        args.extend(["busybox", "true"]);
        let out = berth.output(run_args(&args));
        let line = assert_berth_error(&out, 125);
        assert!(!line.contains('\n'));
    }
    let out = berth.output(run_args(&[
        "--rm",
        "--mount",
        "type=bind,source=/tmp,target=/d,colour=red",
        "busybox",
        "true",
    ]));
    assert!(
        assert_berth_error(&out, 125).contains("colour"),
        "the error does not name the key"
    );
    assert!(!Path::new("/tmp").join(&escape).exists());
    assert!(!berth.root().join("x").exists());
    assert!(volume_names(&berth).is_empty());
    assert!(
        volume_store_entries(&berth).is_empty(),
        "{:?}",
        volume_store_entries(&berth)
    );
    assert_same_tree(&before, &root_tree(&berth), "a refused command");
    berth.assert_clean();
}

/// The state root's paths, without the volume store's lock file (made by
/// the first command that takes it, whatever it then refuses).
fn root_tree(berth: &Berth) -> Vec<PathBuf> {
    let mut tree = berth.tree();
    tree.retain(|p| p != Path::new("volumes/.lock"));
    tree
}

/// Assert that two root trees are the same, showing only the difference.
fn assert_same_tree(before: &[PathBuf], after: &[PathBuf], what: &str) {
    let added: Vec<&PathBuf> = after.iter().filter(|p| !before.contains(p)).collect();
    let removed: Vec<&PathBuf> = before.iter().filter(|p| !after.contains(p)).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "{what} changed the state root: added {added:?}, removed {removed:?}"
    );
}

/// Import a copy of the busybox image whose `/data` is a symlink to `/`.
fn import_data_to_root(berth: &Berth) {
    berth.run_ok(run_args(&["--rm", "busybox", "true"]));
    let layer = berth.layer_rootfses().remove(0);
    let work = tempfile::tempdir().expect("tempdir");
    let rootfs = work.path().join("rootfs");
    let out = Command::new("cp")
        .arg("-a")
        .arg(&layer)
        .arg(&rootfs)
        .output()
        .expect("cp");
    assert!(out.status.success(), "{}", describe(&out));
    std::os::unix::fs::symlink("/", rootfs.join("data")).expect("symlink");
    let tar = work.path().join("image.tar");
    let out = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .output()
        .expect("tar");
    assert!(out.status.success(), "{}", describe(&out));
    berth.run_ok([
        "image",
        "import",
        tar.to_str().expect("utf-8"),
        "data-to-root",
    ]);
}

#[test]
fn a_mount_target_that_is_a_symlink_to_root_is_refused_and_the_host_untouched() {
    require_root!();
    let berth = Berth::new();
    import_data_to_root(&berth);
    let host = tempfile::tempdir().expect("tempdir");
    fs::write(host.path().join("marker"), "m").expect("write");
    fs::set_permissions(host.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let bind = format!("type=bind,source={},target=/data", host.path().display());
    let host_before = host_top_level();
    let root_before = root_tree(&berth);
    let cases: Vec<Vec<&str>> = vec![
        vec!["-v", "evil-vol:/data"],
        vec!["-v", "/data"],
        vec!["--tmpfs", "/data"],
        vec!["--mount", &bind],
        vec!["--mount", "type=volume,src=evil2,dst=/data/"],
    ];
    for flags in &cases {
        let mut args = vec!["--rm"];
        args.extend_from_slice(flags);
        args.extend(["data-to-root", "true"]);
        let out = berth.output(run_args(&args));
        let line = assert_berth_error(&out, 125);
        assert!(line.contains("/data"), "{line}");
        // Nothing made: no container, no volume (named or anonymous).
        assert!(berth.container_ids().is_empty(), "{flags:?}");
        assert!(
            volume_names(&berth).is_empty(),
            "{flags:?}: {:?}",
            volume_names(&berth)
        );
    }
    assert_eq!(host_top_level(), host_before, "the host's / changed");
    assert_eq!(
        fs::read_dir(host.path()).expect("ls").count(),
        1,
        "the bind source was written to"
    );
    assert_same_tree(&root_before, &root_tree(&berth), "a refused run");
    // Through the symlink deeper down is fine: it stays inside the rootfs.
    let out = berth.run_ok(run_args(&[
        "--rm",
        "-v",
        "deep:/data/tmp/deep",
        "data-to-root",
        "sh",
        "-c",
        "echo in > /tmp/deep/f; cat /data/tmp/deep/f",
    ]));
    assert_eq!(out, "in\n");
    assert_eq!(
        fs::read_to_string(data_dir(&berth, "deep").join("f"))
            .ok()
            .as_deref(),
        Some("in\n")
    );
    assert_eq!(host_top_level(), host_before);
    assert!(stdout(&berth.output(["volume", "ls", "-q"])).contains("deep"));
    berth.assert_clean();
}

/// Unmounts (lazily) a mount the test made on the host.
struct HostMount(PathBuf);

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn bind_nonrecursive_leaves_out_the_mounts_below_the_source() {
    require_root!();
    let berth = Berth::new();
    let host = tempfile::tempdir().expect("tempdir");
    let sub = host.path().join("sub");
    fs::create_dir(&sub).expect("mkdir");
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "berth-e2e-sub"])
        .arg(&sub)
        .output()
        .expect("mount");
    assert!(out.status.success(), "{}", describe(&out));
    let _unmount = HostMount(sub.clone());
    fs::write(sub.join("on-the-submount"), "x").expect("write");
    let show = "ls /h/sub";
    for (flags, expected) in [
        ("", "on-the-submount\n"),
        (",bind-nonrecursive", ""),
        (",bind-nonrecursive=false", "on-the-submount\n"),
    ] {
        let mount = format!("type=bind,src={},dst=/h{flags}", host.path().display());
        let out = berth.run_ok(run_args(&[
            "--rm", "--mount", &mount, "busybox", "sh", "-c", show,
        ]));
        assert_eq!(out, expected, "--mount {mount}");
    }
    berth.assert_clean();
}

#[test]
fn system_prune_volumes_df_and_cp_see_volumes() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(run_args(&[
        "--name",
        "writer",
        "-v",
        "keep:/named",
        "-v",
        "/anon",
        "busybox",
        "sh",
        "-c",
        "echo in-volume > /named/file; head -c 100000 /dev/zero > /anon/zeros",
    ]));
    // The container is stopped: cp reaches its named volume through its
    // record's mounts.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("file");
    berth.run_ok(["cp", "writer:/named/file", copy.to_str().expect("utf-8")]);
    assert_eq!(fs::read_to_string(&copy).expect("copied"), "in-volume\n");
    let df = berth.run_ok(["system", "df"]);
    let row = df
        .lines()
        .find(|l| l.starts_with("Local Volumes"))
        .expect("volumes row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[2..4], ["2", "2"], "two volumes, both used: {row}");
    let verbose = berth.run_ok(["system", "df", "-v"]);
    assert!(verbose.contains("keep"), "{verbose}");

    berth.run_ok(["rm", "writer"]);
    // Without --volumes nothing of them goes; with it the anonymous one.
    berth.run_ok(["system", "prune", "-f"]);
    assert_eq!(volume_names(&berth).len(), 2);
    let out = berth.run_ok(["system", "prune", "-f", "--volumes"]);
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert_eq!(volume_names(&berth), ["keep"], "the named volume stays");
    berth.run_ok(["volume", "rm", "keep"]);
    berth.assert_clean();
}
