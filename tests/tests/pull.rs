//! `berth pull`, `login`, `logout` and `run --pull` against a real
//! registry (Debian's docker-registry on 127.0.0.1) holding images that
//! skopeo pushed. Skipped without root or without the registry tools.
//!
//! The registry listens on the host's loopback, so the commands that talk
//! to it run in the host's network namespace (not the test's sandbox);
//! containers run with `--net none`, which touches no host network.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::registry::{sha256_digest, OciLayout, Push, SampleImage, SampleLayer, TestRegistry};
use berth_e2e::{
    assert_berth_error, command_line, describe, kill, noise, require_registry_tools, require_root,
    run_command, stderr, stdout, wait_until, Berth, KillOnDrop, Pty, TarBuilder,
};

/// `berth --root <root> ARGS...` in the host's network namespace, with
/// no credentials but berth's own (`HOME` empty, no docker config).
fn host_cmd<I, S>(berth: &Berth, home: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(berth.bin());
    cmd.arg("--root")
        .arg(berth.root())
        .args(args)
        .env_remove("BERTH_ROOT")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn host_ok<I, S>(berth: &Berth, home: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let cmd = host_cmd(berth, home, args);
    let line = command_line(&cmd);
    let output = run_command(cmd);
    assert!(
        output.status.success(),
        "`{line}` failed\n{}",
        describe(&output)
    );
    output
}

/// `login` with the password on stdin.
fn login(berth: &Berth, home: &Path, server: &str, user: &str, password: &str) -> Output {
    use std::io::Write;
    let mut cmd = host_cmd(
        berth,
        home,
        ["login", "-u", user, "--password-stdin", server],
    );
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn berth login");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    berth_e2e::wait_with_timeout(child, Duration::from_secs(60))
}

/// A registry holding the three-layer busybox image as `app:1`.
fn registry_with_app(registry: TestRegistry) -> (TestRegistry, SampleImage) {
    let image = SampleImage::busybox_layers("amd64");
    let mut layout = OciLayout::new();
    layout.add_image("app", &image);
    registry.push(&layout, "app", "app:1", Push::default());
    (registry, image)
}

/// The files the sample image's layers leave: the second layer's motd,
/// `/etc/obsolete` deleted, `/opaque` holding only its new file.
const LAYERS_CHECK: &str =
    "cat /etc/motd; test -e /etc/obsolete || echo obsolete-gone; ls /opaque; wc -c < /data/noise";
const LAYERS_SEEN: &str = "second layer\nobsolete-gone\nnew\n1048576\n";

#[test]
fn pulled_images_run_and_a_second_pull_is_up_to_date() {
    require_root!();
    require_registry_tools!();
    let (registry, image) = registry_with_app(TestRegistry::start());
    let berth = Berth::new();
    let home = tempfile::tempdir().expect("home");
    let reference = format!("{}/app:1", registry.address());

    let output = host_ok(&berth, home.path(), ["pull", &reference]);
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "1: Pulling from {}/app".replace("{}", registry.address())
    );
    for layer in &image.layers {
        let short = &sha256_digest(&layer.blob)["sha256:".len()..][..12];
        assert!(
            lines.contains(&format!("{short}: Pull complete").as_str()),
            "{short} not reported:\n{out}"
        );
    }
    assert!(
        !out.contains('\x1b'),
        "no terminal codes off a terminal:\n{out}"
    );
    let n = lines.len();
    assert_eq!(lines[n - 3], format!("Digest: {}", image.manifest_digest()));
    assert_eq!(
        lines[n - 2],
        format!("Status: Downloaded newer image for {reference}")
    );
    assert_eq!(lines[n - 1], reference);

    let seen = berth.run_ok([
        "run",
        "--rm",
        "--net",
        "none",
        &reference,
        "sh",
        "-c",
        LAYERS_CHECK,
    ]);
    assert_eq!(seen, LAYERS_SEEN);

    let again = stdout(&host_ok(&berth, home.path(), ["image", "pull", &reference]));
    assert!(
        again.contains(&format!("Status: Image is up to date for {reference}\n")),
        "{again}"
    );
    assert_eq!(again.matches(": Already exists\n").count(), 3, "{again}");
    let quiet = stdout(&host_ok(&berth, home.path(), ["pull", "-q", &reference]));
    assert_eq!(quiet, format!("{reference}\n"));

    // REPOSITORY and TAG columns.
    let listed = berth.run_ok(["images"]);
    let (repository, tag) = reference.rsplit_once(':').expect("a tagged reference");
    assert!(
        listed.lines().any(|line| {
            let mut columns = line.split_whitespace();
            columns.next() == Some(repository) && columns.next() == Some(tag)
        }),
        "images:\n{listed}"
    );

    // An output that cannot be written is one error, not a panic.
    let mut full = host_cmd(&berth, home.path(), ["pull", "-q", &reference]);
    full.stdout(std::fs::File::create("/dev/full").expect("open /dev/full"));
    let line = assert_berth_error(&run_command(full), 125);
    assert!(line.contains("output"), "{line}");

    // By digest: the same image.
    let by_digest = format!("{}/app@{}", registry.address(), image.manifest_digest());
    let out = stdout(&host_ok(&berth, home.path(), ["pull", &by_digest]));
    assert!(out.ends_with(&format!("{by_digest}\n")), "{out}");
    let seen = berth.run_ok([
        "run",
        "--rm",
        "--net",
        "none",
        &by_digest,
        "cat",
        "/etc/motd",
    ]);
    assert_eq!(seen, "second layer\n");
    berth.assert_clean();
}

#[test]
fn basic_auth_registries_need_a_login_and_logout_forgets_it() {
    require_root!();
    require_registry_tools!();
    let (registry, _image) =
        registry_with_app(TestRegistry::start_with_basic_auth("alice", "s3cret"));
    let berth = Berth::new();
    let home = tempfile::tempdir().expect("home");
    let server = registry.address().to_owned();
    let reference = format!("{server}/app:1");

    let anonymous = run_command(host_cmd(&berth, home.path(), ["pull", &reference]));
    let line = assert_berth_error(&anonymous, 125);
    assert!(line.contains(&server), "{line}");

    let wrong = login(&berth, home.path(), &server, "alice", "wrong");
    assert_berth_error(&wrong, 125);
    assert!(
        !berth.root().join("auth.json").exists() || {
            let text = std::fs::read_to_string(berth.root().join("auth.json")).expect("read");
            !text.contains(&server)
        }
    );

    let right = login(&berth, home.path(), &server, "alice", "s3cret");
    assert!(right.status.success(), "{}", describe(&right));
    assert_eq!(stdout(&right), "Login Succeeded\n");
    let mode = std::fs::metadata(berth.root().join("auth.json"))
        .expect("auth.json written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "auth.json mode {mode:o}");

    let pulled = stdout(&host_ok(&berth, home.path(), ["pull", &reference]));
    assert!(pulled.ends_with(&format!("{reference}\n")), "{pulled}");

    let out = stdout(&host_ok(&berth, home.path(), ["logout", &server]));
    assert_eq!(out, format!("Removing login credentials for {server}\n"));
    let again = run_command(host_cmd(&berth, home.path(), ["pull", &reference]));
    assert_berth_error(&again, 125);
    let out = stdout(&host_ok(&berth, home.path(), ["logout", &server]));
    assert_eq!(out, format!("Not logged in to {server}\n"));

    // Without a terminal there is nobody to ask for a password.
    let no_tty = run_command(host_cmd(
        &berth,
        home.path(),
        ["login", "-u", "alice", &server],
    ));
    assert_berth_error(&no_tty, 125);
    berth.assert_clean();
}

#[test]
fn run_pulls_missing_images_unless_told_never() {
    require_root!();
    require_registry_tools!();
    let (registry, _image) = registry_with_app(TestRegistry::start());
    let berth = Berth::new();
    let home = tempfile::tempdir().expect("home");
    let reference = format!("{}/app:1", registry.address());

    let never = run_command(host_cmd(
        &berth,
        home.path(),
        [
            "run", "--pull", "never", "--rm", "--net", "none", &reference, "true",
        ],
    ));
    let line = assert_berth_error(&never, 125);
    assert!(line.contains(&reference), "{line}");

    let output = host_ok(
        &berth,
        home.path(),
        [
            "run",
            "--rm",
            "--net",
            "none",
            &reference,
            "sh",
            "-c",
            LAYERS_CHECK,
        ],
    );
    assert_eq!(stdout(&output), LAYERS_SEEN);
    let err = stderr(&output);
    assert!(
        err.starts_with(&format!("Unable to find image '{reference}' locally\n")),
        "{err}"
    );
    assert!(err.contains("Status: Downloaded newer image"), "{err}");

    // A failed implicit pull: docker's two lines, no container made.
    let missing = format!("{}/nothere:1", registry.address());
    let output = run_command(host_cmd(
        &berth,
        home.path(),
        ["run", "--rm", "--net", "none", &missing, "true"],
    ));
    let err = stderr(&output);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        output.status.code() == Some(125)
            && lines.len() == 2
            && lines[0] == format!("Unable to find image '{missing}' locally")
            && lines[1].starts_with("berth: cannot pull "),
        "{}",
        describe(&output)
    );
    assert!(berth.container_ids().is_empty());

    // Present now: no pull, even with never.
    let output = host_ok(
        &berth,
        home.path(),
        [
            "run",
            "--pull",
            "never",
            "--rm",
            "--net",
            "none",
            &reference,
            "cat",
            "/etc/motd",
        ],
    );
    assert_eq!(stdout(&output), "second layer\n");
    assert_eq!(stderr(&output), "");

    // The built-in busybox is never pulled, whatever --pull says.
    let output = berth.run_ok([
        "run", "--pull", "always", "--rm", "--net", "none", "busybox", "echo", "ok",
    ]);
    assert_eq!(output, "ok\n");
    berth.assert_clean();
}

#[test]
fn manifest_lists_resolve_to_linux_amd64_or_the_platform_asked_for() {
    require_root!();
    require_registry_tools!();
    let registry = TestRegistry::start();
    let amd64 = SampleImage::busybox_layers("amd64");
    let arm64 = SampleImage::tiny("arm64");
    let ppc = SampleImage::tiny("ppc64le");
    let mut layout = OciLayout::new();
    let index = layout.add_index("multi", &[&arm64, &amd64, &ppc]);
    registry.push(
        &layout,
        "multi",
        "multi:1",
        Push {
            all: true,
            docker_format: false,
        },
    );
    let berth = Berth::new();
    let home = tempfile::tempdir().expect("home");
    let reference = format!("{}/multi:1", registry.address());

    let out = stdout(&host_ok(&berth, home.path(), ["pull", &reference]));
    assert!(
        out.contains(&format!("Digest: {}\n", sha256_digest(&index))),
        "the digest shown is the list's:\n{out}"
    );
    let seen = berth.run_ok([
        "run",
        "--rm",
        "--net",
        "none",
        &reference,
        "sh",
        "-c",
        LAYERS_CHECK,
    ]);
    assert_eq!(seen, LAYERS_SEEN);

    host_ok(
        &berth,
        home.path(),
        ["pull", "--platform", "linux/arm64", &reference],
    );
    let store = berth_image::ImageStore::open(berth.root().join("images")).expect("open store");
    let image = store.resolve(&reference).expect("tagged");
    assert_eq!(image.manifest_digest, arm64.manifest_digest());

    let missing = run_command(host_cmd(
        &berth,
        home.path(),
        ["pull", "--platform", "linux/s390x", &reference],
    ));
    let line = assert_berth_error(&missing, 125);
    assert!(line.contains("s390x"), "{line}");
    berth.assert_clean();
}

#[test]
fn a_registry_that_hangs_gives_a_one_line_error_in_bounded_time() {
    require_root!();
    require_registry_tools!();
    let (registry, _image) = registry_with_app(TestRegistry::start());
    let berth = Berth::new();
    let home = tempfile::tempdir().expect("home");
    let reference = format!("{}/app:1", registry.address());
    let pid = registry.pid() as i32;
    assert!(kill(pid, libc::SIGSTOP));
    let started = Instant::now();
    let output = run_command(host_cmd(&berth, home.path(), ["pull", &reference]));
    let took = started.elapsed();
    assert!(kill(pid, libc::SIGCONT));
    let line = assert_berth_error(&output, 125);
    assert!(line.contains("did not answer"), "{line}");
    assert!(took < Duration::from_secs(75), "took {took:?}");
    berth.assert_clean();
}

/// Every regular file below `dir` with at least one byte.
fn has_partial_data(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        match entry.metadata() {
            Ok(meta) if meta.is_dir() => has_partial_data(&path),
            Ok(meta) => meta.is_file() && meta.len() > 0,
            Err(_) => false,
        }
    })
}

#[test]
fn a_pull_killed_midway_leaves_a_usable_store() {
    require_root!();
    require_registry_tools!();
    let registry = TestRegistry::start();
    let big = TarBuilder::new()
        .dir("data", 0o755)
        .file("data/big", 0o644, &noise(96 << 20, 5))
        .finish();
    let base = SampleImage::busybox_layers("amd64");
    let mut layers = base.layers.clone();
    layers.push(SampleLayer::from_tar(big, false));
    let image = SampleImage::new("amd64", layers);
    let mut layout = OciLayout::new();
    layout.add_image("big", &image);
    registry.push(&layout, "big", "big:1", Push::default());
    drop(layout);
    let berth = Berth::new();
    let home = tempfile::tempdir().expect("home");
    let reference = format!("{}/big:1", registry.address());

    let mut pull = KillOnDrop(
        host_cmd(&berth, home.path(), ["pull", &reference])
            .spawn()
            .expect("spawn berth pull"),
    );
    let tmp = berth.root().join("images/tmp");
    let midway = wait_until(Duration::from_secs(60), || has_partial_data(&tmp));
    // Hold the registry still so that the pull is surely not finished.
    let registry_pid = registry.pid() as i32;
    assert!(kill(registry_pid, libc::SIGSTOP));
    assert!(kill(pull.0.id() as i32, libc::SIGKILL));
    let status = pull.wait(Duration::from_secs(10));
    assert!(kill(registry_pid, libc::SIGCONT));
    assert!(midway, "no data arrived in {}", tmp.display());
    assert!(!status.success(), "the pull was killed: {status:?}");

    let listed = berth.run_ok(["images"]);
    assert!(
        !listed.contains(&reference),
        "a half pull is no image:\n{listed}"
    );
    let out = stdout(&host_ok(&berth, home.path(), ["pull", &reference]));
    assert!(out.ends_with(&format!("{reference}\n")), "{out}");
    let seen = berth.run_ok([
        "run",
        "--rm",
        "--net",
        "none",
        &reference,
        "sh",
        "-c",
        "wc -c < /data/big; cat /etc/motd",
    ]);
    assert_eq!(seen, format!("{}\nsecond layer\n", 96 << 20));
    berth.run_ok(["image", "rm", &reference]);
    assert!(!berth.run_ok(["images"]).contains(&reference));
    berth.assert_clean();
}

#[test]
fn on_a_terminal_login_prompts_without_echo_and_pull_redraws_layer_lines() {
    require_root!();
    require_registry_tools!();
    let (registry, image) =
        registry_with_app(TestRegistry::start_with_basic_auth("alice", "s3cret"));
    let berth = Berth::new();
    let home = tempfile::tempdir().expect("home");
    let server = registry.address().to_owned();
    let reference = format!("{server}/app:1");

    let mut pty = Pty::new(24, 80);
    let mut login = pty.spawn(host_cmd(&berth, home.path(), ["login", &server]));
    pty.expect("Username: ", Duration::from_secs(30));
    pty.send(b"alice\n");
    pty.expect("Password: ", Duration::from_secs(30));
    pty.send(b"s3cret\n");
    pty.expect("Login Succeeded", Duration::from_secs(30));
    assert!(login.wait(Duration::from_secs(30)).success());
    assert!(
        !pty.transcript().contains("s3cret"),
        "the password was echoed:\n{}",
        pty.transcript()
    );

    let mut pty = Pty::new(24, 80);
    let mut pull = pty.spawn(host_cmd(&berth, home.path(), ["pull", &reference]));
    pty.expect(
        &format!("Status: Downloaded newer image for {reference}"),
        Duration::from_secs(60),
    );
    assert!(pull.wait(Duration::from_secs(30)).success());
    let shown = pty.transcript();
    for layer in &image.layers {
        let short = &sha256_digest(&layer.blob)["sha256:".len()..][..12];
        assert!(
            shown.contains(&format!("{short}: Pulling fs layer"))
                && shown.contains(&format!("\r\x1b[2K{short}: Pull complete\r")),
            "{short}'s line is not redrawn in place:\n{shown:?}"
        );
    }
    berth.assert_clean();
}
