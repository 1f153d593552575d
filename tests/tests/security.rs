//! The defences of ../shared/SECURITY.md (issue 7), one test (at least) per
//! row, each written so that it fails when the defence is taken away.
//!
//! Every test drives the real binary as root against its own state root
//! and ends with `assert_clean`. Nothing here writes to the host's /proc or
//! /sys, and a probe that could damage a host file (a write through an
//! escaped path) only ever creates new, uniquely named files or opens
//! without truncating, so a broken defence shows up as a failed assertion,
//! not as a damaged machine.
//!
//! Rows and their tests:
//! - host binary (CVE-2019-5736) and exec (CVE-2016-9962):
//!   `exec_helper_never_exposes_the_host_binary_its_memory_or_its_fds`,
//!   `exec_helper_hides_the_host_binary_even_from_cap_sys_ptrace`;
//! - fd leaks (CVE-2024-21626): `only_stdio_reaches_the_container_in_run_exec_and_tty`,
//!   `workdir_through_proc_magic_links_is_refused_in_run_and_exec`;
//! - volumes (CVE-2021-30465, CVE-2024-45310):
//!   `volume_targets_are_resolved_inside_the_rootfs`;
//! - /proc and /dev (CVE-2019-19921, CVE-2025-31133):
//!   `rootfs_whose_proc_dev_or_sys_is_not_a_directory_is_refused`,
//!   `an_image_dev_null_symlink_never_reaches_the_host`;
//! - masked paths: `masked_and_read_only_paths`, `privileged_unmasks`;
//! - capabilities (CVE-2022-29162): `capabilities_are_dockers_default_set_in_run_and_exec`,
//!   `cap_add_cap_drop_and_no_new_privileges`;
//! - devices: `only_the_default_devices_exist_and_no_other_can_be_made_or_opened`;
//! - image import (zip slip, CVE-2021-32760): tests/bad_input.rs
//!   (`escaping_archives_are_refused_and_touch_nothing_outside`,
//!   `an_entry_over_an_earlier_link_replaces_the_link_not_its_target`,
//!   `absolute_entry_names_stay_inside_the_layer`) plus
//!   `image_import_never_writes_through_links_to_host_etc` here;
//! - commit/cp (CVE-2018-15664): `commit_archives_links_as_links_while_the_container_swaps_them`;
//! - port mapping (moby#45610, podman#11324): not here yet: berth does not
//!   wire container networking or `-p` so far; the test belongs with that
//!   work (after `rm`, `iptables-save` has no rule of the container, and
//!   a second container can take the freed port);
//! - state dirs (CVE-2021-41091): `state_dirs_and_records_are_private_to_root`;
//! - names: `names_and_references_cannot_be_paths`.

use std::collections::BTreeSet;
use std::fs;
use std::hash::Hasher;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use berth_e2e::{
    assert_berth_error, assert_target_error, describe, is_full_id, make_busybox_rootfs,
    require_root, run_command, stderr, stdout, wait_until, Berth, Pty, TarBuilder,
};

/// Long enough for a slow VM; passing steps take milliseconds.
const STEP: Duration = Duration::from_secs(20);

/// docker's default capability set, as /proc/PID/status shows it.
const DEFAULT_CAPS: &str = "00000000a80425fb";

/// The entries of a container's /dev (docker's defaults).
const DEFAULT_DEV: [&str; 14] = [
    "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
    "tty", "urandom", "zero",
];

// ---------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------

/// Import, as `name`, an image built from a busybox root filesystem
/// (every applet linked) after `tweak` changed it.
fn import_image(berth: &Berth, name: &str, tweak: impl FnOnce(&Path)) {
    let work = tempfile::tempdir().expect("tempdir");
    let rootfs = work.path().join("rootfs");
    make_busybox_rootfs(&rootfs);
    // The host's busybox, not the fresh copy: exec'ing a file just written
    // can fail with ETXTBSY while another test thread forks.
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox on the host");
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in stdout(&list).split_whitespace() {
        let link = rootfs.join("bin").join(applet);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink("busybox", link).expect("applet link");
        }
    }
    tweak(&rootfs);
    let tar = work.path().join(format!("{name}.tar"));
    let out = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .output()
        .expect("run tar");
    assert!(out.status.success(), "tar failed\n{}", describe(&out));
    berth.run_ok(["image", "import", tar.to_str().expect("utf-8"), name]);
}

fn symlink(target: &str, link: &Path) {
    if link.symlink_metadata().is_ok() {
        if link.is_dir() && !link.symlink_metadata().expect("stat").is_symlink() {
            fs::remove_dir_all(link).expect("rm dir");
        } else {
            fs::remove_file(link).expect("rm");
        }
    }
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

/// Entries of /etc, and (file, content, mtime, link count) of some files.
type EtcSnapshot = (BTreeSet<String>, Vec<(String, Vec<u8>, i64, u64)>);

/// What a test must find unchanged in the host's /etc: its entries, and
/// the content, mtime and link count of passwd, shadow and group.
fn host_etc() -> EtcSnapshot {
    let names = fs::read_dir("/etc")
        .expect("read /etc")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let files = ["passwd", "shadow", "group"]
        .iter()
        .filter_map(|f| {
            let path = Path::new("/etc").join(f);
            let meta = fs::metadata(&path).ok()?;
            Some((
                (*f).to_owned(),
                fs::read(&path).unwrap_or_default(),
                meta.mtime(),
                meta.nlink(),
            ))
        })
        .collect();
    (names, files)
}

/// A fingerprint of a file's content (SipHash with fixed keys).
fn fingerprint(path: &Path) -> (u64, u64) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    hasher.write(&bytes);
    (bytes.len() as u64, hasher.finish())
}

/// Lines of `berth logs C` (stdout of the container).
fn logs(berth: &Berth, container: &str) -> Vec<String> {
    berth
        .run_ok(["logs", container])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `-e PATH=...` with 20000 directories that do not exist: the exec helper
/// tries each one (execve, ENOENT) after it joined the container and
/// dropped to the container's capabilities, which keeps it in that state
/// for a while (~0.1 s) instead of microseconds, so a probe inside the
/// container can look at it. Under 128 KiB, the limit of one argument.
fn long_path_env() -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let base36 = |mut i: usize| {
        let mut s = Vec::new();
        loop {
            s.push(DIGITS[i % 36]);
            i /= 36;
            if i == 0 {
                break;
            }
        }
        s.reverse();
        String::from_utf8(s).expect("ascii")
    };
    let dirs: Vec<String> = (0..20_000).map(|i| format!("/{}", base36(i))).collect();
    format!("PATH={}", dirs.join(":"))
}

/// A script run by a container's PID 1: it watches /proc for processes
/// named `$1`, the binary's name (the exec helper, a clone of the berth
/// process, keeps that name until it execs) and tries what CVE-2019-5736 and CVE-2016-9962
/// did: open its /proc/PID/exe (read, then read-write without truncating
/// anything), open its /proc/PID/mem (which takes the same
/// PTRACE_MODE_ATTACH check as ptrace(PTRACE_ATTACH), so it stands in for
/// a ptrace that busybox cannot do), read its fd, root and cwd links.
/// Each success is printed (`still` checks, after the fact, that the
/// process had not become the user's program meanwhile: an exec'd
/// program is fair game); `seen PID` tells the helper was caught.
/// `exe-write` is printed whatever the process: no process of the
/// container may open the host's binary for writing.
const PROBE: &str = r#"name=$1
still() { read -r c2 2>/dev/null < $d/comm && [ "$c2" = "$name" ]; }
echo ready
while :; do
  for d in /proc/[0-9]*; do
    read -r c 2>/dev/null < $d/comm || continue
    [ "$c" = "$name" ] || continue
    p=${d#/proc/}
    case " $seen " in *" $p "*) continue;; esac
    seen="$seen $p"
    echo "seen $p"
    if true 2>/dev/null < $d/exe; then t=$(readlink $d/exe); still && echo "exe-read $p $t"; fi
    if true 2>/dev/null 3<> $d/exe; then echo "exe-write $p"; fi
    if true 2>/dev/null < $d/mem; then still && echo "mem $p"; fi
    for l in $d/root $d/cwd $d/fd/*; do
      t=$(readlink $l 2>/dev/null) && still && echo "link $l $t"
    done
  done
done
"#;

/// Run the probe (see [`PROBE`]) as a container with `run_args`, exec into
/// it at least 3 times (up to 12, until it caught a helper) and return
/// the probe's output lines.
fn probe_exec_helpers(berth: &Berth, run_args: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("probe.sh"), PROBE).expect("write probe");
    let volume = format!("{}:/probe:ro", dir.path().display());
    let mut args: Vec<&str> = vec!["--name", "probe", "-v", &volume];
    args.extend_from_slice(run_args);
    // The kernel's name for the process (comm): the binary's file name,
    // cut to 15 bytes.
    let comm: String = berth
        .bin()
        .file_name()
        .expect("binary name")
        .to_string_lossy()
        .chars()
        .take(15)
        .collect();
    args.extend(["busybox", "sh", "/probe/probe.sh", &comm]);
    berth.run_detached(&args);
    assert!(
        wait_until(STEP, || logs(berth, "probe").iter().any(|l| l == "ready")),
        "the probe did not start"
    );
    let path = long_path_env();
    let mut rounds = 0;
    loop {
        rounds += 1;
        // The command does not exist: the helper tries every directory of
        // PATH and exits 127 without ever becoming another program, so
        // every process the probe sees under the name `berth` is the helper.
        let out = berth.output(["exec", "-e", &path, "probe", "nosuch-command"]);
        assert_berth_error(&out, 127);
        let caught = logs(berth, "probe")
            .iter()
            .filter(|l| l.starts_with("seen "))
            .count();
        if (rounds >= 3 && caught > 0) || rounds >= 12 {
            break;
        }
    }
    // A last ordinary exec, which does become the user's program.
    berth.run_ok(["exec", "probe", "true"]);
    std::thread::sleep(Duration::from_millis(200));
    let lines = logs(berth, "probe");
    berth.run_ok(["rm", "-f", "probe"]);
    let caught = lines.iter().filter(|l| l.starts_with("seen ")).count();
    eprintln!("the probe caught {caught} exec helper(s) in {rounds} execs");
    assert!(
        caught > 0,
        "in {rounds} execs the probe never saw berth's exec helper inside the \
         container, so nothing was tested (is it no longer named `berth`, or \
         never visible in the container's PID namespace?); probe output:\n{}",
        lines.join("\n")
    );
    lines
}

/// The path of the binary under test, as /proc/PID/exe shows it.
fn canonical_bin(berth: &Berth) -> String {
    fs::canonicalize(berth.bin())
        .expect("canonicalize BERTH_BIN")
        .to_string_lossy()
        .into_owned()
}

/// Start `cmd` with two extra descriptors, 7 and 12, open on `file` and
/// without close-on-exec: what a careless caller (or berth itself) could
/// leave open; none may reach the container.
fn with_inherited_fds(mut cmd: Command, file: &fs::File) -> Command {
    let fd = file.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe and touches only descriptors.
    unsafe {
        cmd.pre_exec(move || {
            for target in [7, 12] {
                if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

/// Run a prepared berth command, assert success, return stdout.
fn ok(cmd: Command) -> String {
    let line = berth_e2e::command_line(&cmd);
    let out = run_command(cmd);
    assert!(out.status.success(), "`{line}` failed\n{}", describe(&out));
    stdout(&out)
}

/// The descriptor numbers in `ls -1` output between the markers.
fn fd_numbers(text: &str) -> Vec<String> {
    let begin = text.find("FDS-BEGIN").map_or(0, |i| i + "FDS-BEGIN".len());
    let end = text.find("FDS-END").unwrap_or(text.len());
    text[begin..end]
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A shell that lists its own descriptors (from a child `ls`, which has
/// its own; `; true` keeps sh from exec'ing ls).
const LIST_OWN_FDS: &str = "echo FDS-BEGIN; ls -1 /proc/$$/fd; echo FDS-END; true";

/// The mount options (field 6) of the mount at `point` in mountinfo text.
fn mount_options<'a>(mountinfo: &'a str, point: &str) -> Option<&'a str> {
    mountinfo
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(point))
        .and_then(|l| l.split(' ').nth(5))
}

/// `berth run --rm ARGS` output (not asserting success).
fn run_rm(berth: &Berth, args: &[&str]) -> Output {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    berth.output(all)
}

// ---------------------------------------------------------------------
// host binary (CVE-2019-5736) and exec (CVE-2016-9962)
// ---------------------------------------------------------------------

#[test]
fn exec_helper_never_exposes_the_host_binary_its_memory_or_its_fds() {
    require_root!();
    let berth = Berth::new();
    let before = fingerprint(berth.bin());
    // Default capabilities: once the helper dropped to the container's
    // set, only PR_SET_DUMPABLE=0 keeps the container's root (same uid,
    // same capabilities) from its /proc entries; without it every probe
    // below succeeds (checked by removing set_dumpable from init.rs).
    let lines = probe_exec_helpers(&berth, &[]);
    let bin = canonical_bin(&berth);
    let leaks: Vec<&String> = lines
        .iter()
        .filter(|l| {
            l.starts_with("exe-read ")
                || l.starts_with("exe-write ")
                || l.starts_with("mem ")
                || l.starts_with("link ")
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "the container reached berth's exec helper (host binary {bin}) while it \
         held host resources:\n{}",
        leaks
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        fingerprint(berth.bin()),
        before,
        "the berth binary changed during the execs"
    );
    berth.assert_clean();
}

#[test]
fn exec_helper_hides_the_host_binary_even_from_cap_sys_ptrace() {
    require_root!();
    let berth = Berth::new();
    let before = fingerprint(berth.bin());
    // With CAP_SYS_PTRACE (`--cap-add SYS_PTRACE`, common for debuggers)
    // PR_SET_DUMPABLE=0 no longer hides the helper's /proc entries. runc
    // still keeps its binary out of reach there (its init runs from a
    // sealed memfd copy); SECURITY.md asks the same of berth: the
    // process that enters the container runs from a sealed copy or is
    // never visible while it holds host resources. An fd to the binary is
    // step one of CVE-2019-5736: reopened for writing through
    // /proc/self/fd/N once no berth process runs (ETXTBSY is all that
    // stands in the way until then, and not every kernel gives it).
    let lines = probe_exec_helpers(&berth, &["--cap-add", "SYS_PTRACE"]);
    let bin = canonical_bin(&berth);
    let written: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("exe-write "))
        .collect();
    assert!(
        written.is_empty(),
        "the container opened the host's berth binary for writing: {written:?}"
    );
    assert_eq!(
        fingerprint(berth.bin()),
        before,
        "the berth binary changed during the execs"
    );
    let reached: Vec<&String> = lines
        .iter()
        .filter(|l| {
            l.starts_with("exe-read ")
                && l.split(' ')
                    .nth(2)
                    .is_some_and(|t| t.trim_end_matches(" (deleted)") == bin)
        })
        .collect();
    assert!(
        reached.is_empty(),
        "a container with CAP_SYS_PTRACE got an fd to the host's berth binary \
         ({bin}) through the exec helper's /proc/PID/exe:\n{}",
        reached
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// fd leaks (CVE-2024-21626)
// ---------------------------------------------------------------------

#[test]
fn only_stdio_reaches_the_container_in_run_exec_and_tty() {
    require_root!();
    let berth = Berth::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_path = dir.path().join("host-secret");
    fs::write(&secret_path, "host secret\n").expect("write");
    let secret = fs::File::open(&secret_path).expect("open");
    let stdio: Vec<String> = ["0", "1", "2"].map(str::to_owned).to_vec();

    // run (foreground), with fds 7 and 12 inherited from the caller.
    let cmd = with_inherited_fds(
        berth.cmd(["run", "--rm", "busybox", "sh", "-c", LIST_OWN_FDS]),
        &secret,
    );
    let out = ok(cmd);
    assert_eq!(fd_numbers(&out), stdio, "run: descriptors of PID 1:\n{out}");

    // run -d (through the monitor), then exec into it.
    let cmd = with_inherited_fds(
        berth.cmd(["run", "-d", "--name", "fds", "busybox", "sleep", "60"]),
        &secret,
    );
    let id = ok(cmd).trim().to_owned();
    berth.track(&id);
    let cmd = with_inherited_fds(
        berth.cmd([
            "exec",
            "fds",
            "sh",
            "-c",
            "echo FDS-BEGIN; ls -1 /proc/1/fd; echo FDS-END",
        ]),
        &secret,
    );
    let out = ok(cmd);
    assert_eq!(
        fd_numbers(&out),
        stdio,
        "run -d: descriptors of PID 1:\n{out}"
    );
    let cmd = with_inherited_fds(
        berth.cmd(["exec", "fds", "sh", "-c", LIST_OWN_FDS]),
        &secret,
    );
    let out = ok(cmd);
    assert_eq!(
        fd_numbers(&out),
        stdio,
        "exec: descriptors of the process:\n{out}"
    );
    // Nothing in the container has the secret open, whatever its number.
    let out = berth.run_ok([
        "exec",
        "fds",
        "sh",
        "-c",
        "ls -l /proc/[0-9]*/fd/ 2>/dev/null; true",
    ]);
    assert!(
        !out.contains("host-secret"),
        "a host file is open in the container:\n{out}"
    );

    // run -t and exec -t, on a terminal.
    for args in [
        vec!["run", "--rm", "-t", "busybox", "sh", "-c", LIST_OWN_FDS],
        vec!["exec", "-t", "fds", "sh", "-c", LIST_OWN_FDS],
    ] {
        let mut pty = Pty::new(24, 80);
        let mut child = pty.spawn(with_inherited_fds(berth.cmd(&args), &secret));
        pty.expect("FDS-BEGIN", STEP);
        let listed = pty.expect("FDS-END", STEP);
        let status = child.wait(STEP);
        assert!(status.success(), "{args:?}: {status}\n{}", pty.transcript());
        assert_eq!(
            fd_numbers(&listed),
            stdio,
            "{args:?}: descriptors on a terminal:\n{}",
            pty.transcript()
        );
    }
    berth.assert_clean();
}

#[test]
fn workdir_through_proc_magic_links_is_refused_in_run_and_exec() {
    require_root!();
    let berth = Berth::new();
    berth.run_detached(["--name", "wd", "busybox", "sleep", "60"]);
    // An ordinary working directory works (so the refusals below are not
    // just -w being broken).
    assert_eq!(
        berth
            .run_ok(["run", "--rm", "-w", "/tmp", "busybox", "pwd"])
            .trim(),
        "/tmp"
    );
    assert_eq!(
        berth.run_ok(["exec", "-w", "/etc", "wd", "pwd"]).trim(),
        "/etc"
    );
    // CVE-2024-21626: a leaked directory fd N made `-w /proc/self/fd/N`
    // the host's directory. Whatever berth holds open, the working
    // directory must not go through a /proc magic link.
    let mut dirs: Vec<String> = (3..=20).map(|n| format!("/proc/self/fd/{n}")).collect();
    dirs.extend(["/proc/self/cwd", "/proc/1/root", "/proc/self/root/.."].map(str::to_owned));
    for dir in &dirs {
        for args in [
            vec!["run", "--rm", "-w", dir.as_str(), "busybox", "pwd"],
            vec!["exec", "-w", dir.as_str(), "wd", "pwd"],
        ] {
            let out = berth.output(&args);
            // `/proc/self/root/..` and `/proc/self/cwd` may also resolve
            // inside the container, harmlessly: then pwd shows a path of
            // the container, which never contains the host's state root.
            if out.status.success() && !dir.contains("/fd/") && dir != "/proc/1/root" {
                let pwd = stdout(&out);
                assert!(
                    !pwd.contains("berth-e2e") && !pwd.contains("/work"),
                    "{args:?} reached a host directory: {pwd}"
                );
                continue;
            }
            assert_berth_error(&out, 125);
            assert!(
                stdout(&out).is_empty(),
                "{args:?} printed a working directory:\n{}",
                describe(&out)
            );
        }
    }
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// volumes (CVE-2021-30465, CVE-2024-45310)
// ---------------------------------------------------------------------

#[test]
fn volume_targets_are_resolved_inside_the_rootfs() {
    require_root!();
    let berth = Berth::new();
    let host_before = host_etc();
    let dangling = format!("/berth-e2e-dangling-{}", std::process::id());
    import_image(&berth, "data-abs", |r| symlink("/etc", &r.join("data")));
    import_image(&berth, "data-rel", |r| {
        symlink(&format!("{}etc", "../".repeat(20)), &r.join("data"));
    });
    import_image(&berth, "data-dangling", |r| {
        symlink(&dangling, &r.join("data"))
    });
    let volume = tempfile::tempdir().expect("tempdir");
    fs::write(volume.path().join("hello"), "from the volume\n").expect("write");
    let bind = format!("{}:/data", volume.path().display());

    for image in ["data-abs", "data-rel"] {
        // Resolved inside the rootfs, /data is the image's /etc: the
        // volume is mounted there (as docker does), never on the host's
        // /etc (in the container's mount namespace before pivot_root,
        // which the container would then not see at /data).
        let out = berth.run_ok([
            "run",
            "--rm",
            "-v",
            &bind,
            image,
            "sh",
            "-c",
            "cat /data/hello; cat /etc/hello; echo written > /data/written-inside; ls /data/",
        ]);
        assert!(
            out.starts_with("from the volume\nfrom the volume\n"),
            "{image}: the volume is not at the image's /data -> /etc:\n{out}"
        );
        assert_eq!(
            fs::read_to_string(volume.path().join("written-inside")).ok(),
            Some("written\n".to_owned()),
            "{image}: a write to /data did not land in the volume"
        );
        fs::remove_file(volume.path().join("written-inside")).expect("rm");
        assert_eq!(host_etc(), host_before, "{image}: the host's /etc changed");
    }

    // CVE-2024-45310: creating the mount point must not follow a dangling
    // link out of the rootfs (here to a path that does not exist on the
    // host either).
    let sub = format!("{}:/data/sub", volume.path().display());
    let out = berth.output([
        "run",
        "--rm",
        "-v",
        &sub,
        "data-dangling",
        "sh",
        "-c",
        &format!("cat {dangling}/sub/hello"),
    ]);
    assert!(
        !Path::new(&dangling).exists(),
        "berth created {dangling} on the host through the image's /data link"
    );
    if out.status.success() {
        assert_eq!(stdout(&out), "from the volume\n", "{}", describe(&out));
    } else {
        assert_berth_error(&out, 125);
    }
    assert_eq!(host_etc(), host_before, "the host's /etc changed");
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// /proc and /dev (CVE-2019-19921, CVE-2025-31133)
// ---------------------------------------------------------------------

#[test]
fn rootfs_whose_proc_dev_or_sys_is_not_a_directory_is_refused() {
    require_root!();
    let berth = Berth::new();
    let host_before = host_etc();
    type Tweak = fn(&Path);
    let cases: [(&str, Tweak); 5] = [
        ("proc-etc", |r| symlink("/etc", &r.join("proc"))),
        ("proc-rel", |r| {
            symlink("../../../../../../etc", &r.join("proc"))
        }),
        ("dev-etc", |r| symlink("/etc", &r.join("dev"))),
        ("sys-file", |r| {
            fs::write(r.join("sys"), "not a dir\n").expect("write")
        }),
        ("proc-file", |r| {
            fs::write(r.join("proc"), "not a dir\n").expect("write")
        }),
    ];
    for (image, tweak) in cases {
        import_image(&berth, image, tweak);
        let out = run_rm(&berth, &[image, "cat", "/etc/passwd"]);
        let line = assert_berth_error(&out, 125);
        assert!(
            stdout(&out).is_empty(),
            "{image}: the command ran\n{}",
            describe(&out)
        );
        eprintln!("{image}: {line}");
        assert_eq!(host_etc(), host_before, "{image}: the host's /etc changed");
    }
    berth.assert_clean();
}

#[test]
fn an_image_dev_null_symlink_never_reaches_the_host() {
    require_root!();
    let berth = Berth::new();
    let host_before = host_etc();
    // The image's /dev/null points at the host's /etc/passwd (and /dev/zero
    // at /etc/shadow); berth mounts its own /dev, and uses its own
    // /dev/null to mask paths (the bind source CVE-2025-31133 swapped).
    import_image(&berth, "devnull", |r| {
        fs::create_dir_all(r.join("dev")).expect("mkdir dev");
        symlink("/etc/passwd", &r.join("dev/null"));
        symlink("/etc/shadow", &r.join("dev/zero"));
    });
    let out = berth.run_ok([
        "run",
        "--rm",
        "devnull",
        "sh",
        "-c",
        "stat -c '%F %t:%T' /dev/null; echo x > /dev/null; echo y > /dev/zero; \
         wc -c < /dev/null; [ -e /proc/keys ] && stat -c 'keys %F %t:%T' /proc/keys; \
         wc -c < /proc/keys; true",
    ]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("character special file 1:3"),
        "/dev/null in the container:\n{out}"
    );
    assert_eq!(lines.next().map(str::trim), Some("0"), "{out}");
    if Path::new("/proc/keys").exists() {
        assert_eq!(
            lines.next(),
            Some("keys character special file 1:3"),
            "/proc/keys is not masked with the real /dev/null:\n{out}"
        );
        assert_eq!(lines.next().map(str::trim), Some("0"), "{out}");
    } else {
        eprintln!("note: this kernel has no /proc/keys; its mask is not checked");
    }
    assert_eq!(host_etc(), host_before, "the host's /etc changed");
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// masked and read-only paths
// ---------------------------------------------------------------------

/// Masked files (bound to /dev/null) and directories (empty read-only
/// tmpfs), docker's defaults.
const MASKED_FILES: [&str; 6] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/timer_stats",
];
const MASKED_DIRS: [&str; 5] = [
    "/proc/scsi",
    "/proc/acpi",
    "/proc/asound",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

#[test]
fn masked_and_read_only_paths() {
    require_root!();
    let berth = Berth::new();
    let mut checked = 0;
    for path in MASKED_FILES {
        if !Path::new(path).exists() {
            eprintln!("note: the host has no {path}: not checked");
            continue;
        }
        checked += 1;
        // /proc/kcore is the whole of the host's memory: not a byte of it.
        let out = berth.output([
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            &format!("stat -c '%F %t:%T' {path}; head -c 4096 {path} | wc -c"),
        ]);
        let text = stdout(&out);
        assert!(
            out.status.success() && text == "character special file 1:3\n0\n",
            "{path} is not masked with /dev/null\n{}",
            describe(&out)
        );
    }
    for path in MASKED_DIRS {
        if !Path::new(path).exists() {
            eprintln!("note: the host has no {path}: not checked");
            continue;
        }
        checked += 1;
        let out = berth.output([
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            &format!("ls -A {path}; touch {path}/x 2>/dev/null && echo WROTE; true"),
        ]);
        assert!(
            out.status.success() && stdout(&out).is_empty(),
            "{path} is not an empty read-only mask\n{}",
            describe(&out)
        );
    }
    assert!(checked > 0, "none of the masked paths exists on this host");

    // Read-only: /proc/sysrq-trigger (when the kernel has it), /proc/sys,
    // /sys. Each write below would change the host if it went through.
    let mut writes = vec![
        "echo x > /proc/sys/kernel/hostname".to_owned(),
        "echo 3 > /proc/sys/vm/drop_caches".to_owned(),
        "touch /sys/berth-e2e".to_owned(),
        "echo x > /sys/kernel/uevent_helper".to_owned(),
    ];
    if Path::new("/proc/sysrq-trigger").exists() {
        // `h` only prints help to the kernel log, should it go through.
        writes.push("echo h > /proc/sysrq-trigger".to_owned());
    } else {
        eprintln!("note: the host has no /proc/sysrq-trigger: not checked");
    }
    for write in &writes {
        let out = berth.output([
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            &format!("{write} && echo WROTE"),
        ]);
        let err = stderr(&out);
        assert!(
            !stdout(&out).contains("WROTE") && !out.status.success(),
            "`{write}` worked in the container\n{}",
            describe(&out)
        );
        assert!(
            err.contains("Read-only file system") || write.contains("sysrq"),
            "`{write}` failed, but not for being read-only\n{}",
            describe(&out)
        );
    }
    let info = berth.run_ok(["run", "--rm", "busybox", "cat", "/proc/self/mountinfo"]);
    for point in ["/sys", "/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"] {
        if point.starts_with("/proc/") && !Path::new(point).exists() {
            continue;
        }
        let options = mount_options(&info, point)
            .unwrap_or_else(|| panic!("no mount at {point} in the container:\n{info}"));
        assert!(
            options.split(',').any(|o| o == "ro"),
            "{point} is mounted {options}, not read-only:\n{info}"
        );
    }
    if Path::new("/proc/sysrq-trigger").exists() {
        let options = mount_options(&info, "/proc/sysrq-trigger").unwrap_or_default();
        assert!(
            options.split(',').any(|o| o == "ro"),
            "/proc/sysrq-trigger is not a read-only mount:\n{info}"
        );
    }
    // The same holds for a process that joins with exec.
    berth.run_detached(["--name", "m", "busybox", "sleep", "60"]);
    let out = berth.output([
        "exec",
        "m",
        "sh",
        "-c",
        "echo x > /proc/sys/kernel/hostname && echo WROTE; touch /sys/x && echo WROTE; \
         wc -c < /proc/keys 2>/dev/null; true",
    ]);
    assert!(
        !stdout(&out).contains("WROTE"),
        "exec: a read-only path was writable\n{}",
        describe(&out)
    );
    berth.assert_clean();
}

#[test]
fn privileged_unmasks() {
    require_root!();
    let berth = Berth::new();
    // Only looked at, never written: --privileged is the host.
    let info = berth.run_ok([
        "run",
        "--rm",
        "--privileged",
        "busybox",
        "cat",
        "/proc/self/mountinfo",
    ]);
    for path in MASKED_FILES.iter().chain(MASKED_DIRS.iter()) {
        assert!(
            mount_options(&info, path).is_none(),
            "--privileged still masks {path}:\n{info}"
        );
    }
    if Path::new("/proc/keys").exists() {
        let out = berth.run_ok([
            "run",
            "--rm",
            "--privileged",
            "busybox",
            "stat",
            "-c",
            "%F",
            "/proc/keys",
        ]);
        assert_eq!(out.trim(), "regular empty file", "/proc/keys: {out}");
    }
    // And without it, the same mount table has the masks (so the check
    // above can tell the difference).
    let info = berth.run_ok(["run", "--rm", "busybox", "cat", "/proc/self/mountinfo"]);
    let masked = MASKED_FILES
        .iter()
        .chain(MASKED_DIRS.iter())
        .filter(|p| Path::new(p).exists())
        .filter(|p| mount_options(&info, p).is_some())
        .count();
    assert!(masked > 0, "no masks in an ordinary container:\n{info}");
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// capabilities (CVE-2022-29162)
// ---------------------------------------------------------------------

/// The Cap* and NoNewPrivs lines of /proc/self/status, as (key, value).
fn cap_fields(status: &str) -> Vec<(String, String)> {
    status
        .lines()
        .filter(|l| l.starts_with("Cap") || l.starts_with("NoNewPrivs"))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn assert_caps(status: &str, set: &str, nnp: &str, what: &str) {
    let want: Vec<(String, String)> = [
        ("CapInh", "0000000000000000"),
        ("CapPrm", set),
        ("CapEff", set),
        ("CapBnd", set),
        ("CapAmb", "0000000000000000"),
        ("NoNewPrivs", nnp),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(cap_fields(status), want, "{what}:\n{status}");
}

const STATUS: [&str; 2] = ["cat", "/proc/self/status"];

#[test]
fn capabilities_are_dockers_default_set_in_run_and_exec() {
    require_root!();
    let berth = Berth::new();
    let mut args = vec!["run", "--rm", "busybox"];
    args.extend(STATUS);
    assert_caps(&berth.run_ok(&args), DEFAULT_CAPS, "0", "run");
    berth.run_detached(["--name", "caps", "busybox", "sleep", "60"]);
    let mut args = vec!["exec", "caps"];
    args.extend(STATUS);
    assert_caps(&berth.run_ok(&args), DEFAULT_CAPS, "0", "exec");
    // PID 1 of the detached container too.
    let out = berth.run_ok(["exec", "caps", "cat", "/proc/1/status"]);
    assert_caps(&out, DEFAULT_CAPS, "0", "run -d, PID 1");
    // A dropped capability really is gone: sethostname needs
    // CAP_SYS_ADMIN, chown CAP_CHOWN (which the default set has).
    let out = berth.output(["exec", "caps", "hostname", "changed"]);
    assert!(
        !out.status.success(),
        "sethostname worked\n{}",
        describe(&out)
    );
    berth.run_ok(["exec", "caps", "chown", "1", "/tmp"]);
    // Nor can a process regain one through the inheritable set and a
    // file capability: CapInh is 0 above, and the bounding set caps
    // what any execve can give.
    berth.assert_clean();
}

#[test]
fn cap_add_cap_drop_and_no_new_privileges() {
    require_root!();
    let berth = Berth::new();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(extra);
        args.push("busybox");
        args.extend(STATUS);
        berth.run_ok(&args)
    };
    assert_caps(
        &run(&["--cap-drop", "ALL", "--cap-add", "CHOWN"]),
        "0000000000000001",
        "0",
        "--cap-drop ALL --cap-add CHOWN",
    );
    assert_caps(
        &run(&["--cap-add", "SYS_ADMIN"]),
        "00000000a82425fb",
        "0",
        "--cap-add SYS_ADMIN (bit 21)",
    );
    assert_caps(
        &run(&["--cap-drop", "NET_RAW"]),
        "00000000a80405fb",
        "0",
        "--cap-drop NET_RAW (bit 13)",
    );
    assert_caps(
        &run(&["--security-opt", "no-new-privileges"]),
        DEFAULT_CAPS,
        "1",
        "--security-opt no-new-privileges",
    );
    // --privileged: whatever the host (this process) has.
    let own = fs::read_to_string("/proc/self/status").expect("status");
    let bounding = cap_fields(&own)
        .into_iter()
        .find(|(k, _)| k == "CapBnd")
        .map(|(_, v)| v)
        .expect("CapBnd");
    assert_caps(&run(&["--privileged"]), &bounding, "0", "--privileged");

    // What the sets allow: hostname needs CAP_SYS_ADMIN, chown CAP_CHOWN.
    let denied = run_rm(&berth, &["busybox", "hostname", "x"]);
    assert!(!denied.status.success(), "{}", describe(&denied));
    berth.run_ok([
        "run",
        "--rm",
        "--cap-add",
        "SYS_ADMIN",
        "busybox",
        "hostname",
        "x",
    ]);
    let denied = run_rm(
        &berth,
        &["--cap-drop", "CHOWN", "busybox", "chown", "1", "/tmp"],
    );
    assert!(!denied.status.success(), "{}", describe(&denied));

    // exec'd processes get the container's sets, not berth's.
    berth.run_detached([
        "--name",
        "few",
        "--security-opt",
        "no-new-privileges",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CHOWN",
        "busybox",
        "sleep",
        "60",
    ]);
    let mut args = vec!["exec", "few"];
    args.extend(STATUS);
    assert_caps(
        &berth.run_ok(&args),
        "0000000000000001",
        "1",
        "exec into few",
    );
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// devices
// ---------------------------------------------------------------------

/// Devices of the host that the host itself can open and a container
/// must not: (type letter, major, minor, description).
fn forbidden_host_devices() -> Vec<(char, u32, u32, String)> {
    let mut found = Vec::new();
    // The block device of the host's root file system (or, when / is not
    // on one, the first block device there is).
    let root = fs::metadata("/").expect("stat /").dev();
    let (major, minor) = (libc::major(root), libc::minor(root));
    if Path::new(&format!("/sys/dev/block/{major}:{minor}")).exists() {
        found.push((
            'b',
            major,
            minor,
            format!("the root block device {major}:{minor}"),
        ));
    } else if let Some(dev) = fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .find_map(|e| fs::read_to_string(e.path().join("dev")).ok())
    {
        if let Some((ma, mi)) = dev.trim().split_once(':') {
            if let (Ok(ma), Ok(mi)) = (ma.parse(), mi.parse()) {
                found.push(('b', ma, mi, format!("block device {ma}:{mi}")));
            }
        }
    }
    // Character devices outside the default list, opened harmlessly
    // (read-only, nothing read) when the host itself can open them.
    for (path, major, minor) in [
        ("/dev/kmsg", 1, 11),
        ("/dev/net/tun", 10, 200),
        ("/dev/fuse", 10, 229),
        ("/dev/loop-control", 10, 237),
    ] {
        let usable = fs::metadata(path)
            .is_ok_and(|m| m.rdev() == libc::makedev(major, minor) && fs::File::open(path).is_ok());
        if usable {
            found.push(('c', major, minor, path.to_owned()));
        }
    }
    found
}

#[test]
fn only_the_default_devices_exist_and_no_other_can_be_made_or_opened() {
    require_root!();
    let berth = Berth::new();
    let out = berth.run_ok(["run", "--rm", "busybox", "ls", "-A", "/dev"]);
    let listed: BTreeSet<&str> = out.split_whitespace().collect();
    let mut expected: BTreeSet<&str> = DEFAULT_DEV.into_iter().collect();
    // runc's (and so docker's) /dev/core -> /proc/kcore, where the kernel
    // has a kcore; the masked /proc/kcore behind it reads nothing.
    if Path::new("/proc/kcore").exists() {
        expected.insert("core");
        let core = berth.run_ok([
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "cat /dev/core | wc -c",
        ]);
        assert_eq!(core.trim(), "0", "/dev/core leads to the masked kcore");
    }
    assert_eq!(listed, expected, "/dev in the container");
    let out = run_rm(&berth, &["busybox", "mknod", "/dev/sda", "b", "8", "0"]);
    assert!(
        !out.status.success(),
        "mknod /dev/sda worked\n{}",
        describe(&out)
    );

    let devices = forbidden_host_devices();
    assert!(!devices.is_empty(), "no device of the host to try");
    let host_openable = devices.iter().filter(|d| d.0 == 'c').count();
    if host_openable == 0 {
        eprintln!("note: this host can open none of the character devices tried");
    }
    let mut script = String::new();
    for (i, (kind, major, minor, what)) in devices.iter().enumerate() {
        eprintln!("trying {what}");
        script.push_str(&format!(
            "if mknod /tmp/d{i} {kind} {major} {minor} 2>/dev/null; then echo MADE {i}; \
             if true 2>/dev/null < /tmp/d{i}; then echo OPENED {i}; fi; fi\n"
        ));
    }
    // Default capabilities (CAP_MKNOD among them), then the ones that
    // would open any device node otherwise: the device cgroup alone must
    // stop both the node and the open. (Not `--cap-add ALL`: berth asks
    // for every capability the kernel knows, which fails where berth
    // itself runs without some, as in a container.)
    let more = [
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "SYS_RAWIO",
        "--cap-add",
        "DAC_READ_SEARCH",
    ];
    for caps in [&[][..], &more[..]] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(caps);
        args.extend(["busybox", "sh", "-c", &script]);
        let out = berth.run_ok(&args);
        let made: Vec<&str> = out.lines().collect();
        assert!(
            made.is_empty(),
            "{caps:?}: devices of the host could be made or opened ({devices:?}):\n{out}"
        );
    }
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// image import (zip slip, CVE-2021-32760); see also tests/bad_input.rs
// ---------------------------------------------------------------------

#[test]
fn image_import_never_writes_through_links_to_host_etc() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["run", "--rm", "busybox", "true"]);
    let host_before = host_etc();
    let marker = format!("berth-e2e-zipslip-{}", std::process::id());
    let up = "../".repeat(20);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a -> /etc, then a/NEW",
            TarBuilder::new()
                .dir("bin", 0o755)
                .symlink("a", "/etc")
                .file(&format!("a/{marker}"), 0o644, b"escaped\n")
                .finish(),
        ),
        (
            "a -> ../../../etc, then a/NEW",
            TarBuilder::new()
                .dir("bin", 0o755)
                .symlink("a", &format!("{up}etc"))
                .file(&format!("a/{marker}"), 0o644, b"escaped\n")
                .finish(),
        ),
        (
            "d/ then d -> /etc, then d/NEW",
            TarBuilder::new()
                .dir("d", 0o755)
                .symlink("d", "/etc")
                .file(&format!("d/{marker}"), 0o644, b"escaped\n")
                .finish(),
        ),
        (
            "hardlink to /etc/shadow",
            TarBuilder::new()
                .dir("bin", 0o755)
                .hardlink("shadow", "/etc/shadow")
                .finish(),
        ),
        (
            "hardlink through ../ to /etc/passwd",
            TarBuilder::new()
                .dir("bin", 0o755)
                .hardlink("passwd", &format!("{up}etc/passwd"))
                .finish(),
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let shadow = fs::read("/etc/shadow").unwrap_or_default();
    let passwd = fs::read("/etc/passwd").unwrap_or_default();
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("zip{i}.tar"));
        fs::write(&path, bytes).expect("write archive");
        let name = format!("zip{i}");
        let out = berth.output(["image", "import", path.to_str().expect("utf-8"), &name]);
        assert!(
            !Path::new("/etc").join(&marker).exists(),
            "{what}: the archive wrote /etc/{marker} on the host"
        );
        assert_eq!(host_etc(), host_before, "{what}: the host's /etc changed");
        if out.status.success() {
            // Neutralised rather than refused: then nothing in the layer
            // is (or links to) the host's file.
            let record = berth.inspect(&name);
            let rootfs = PathBuf::from(record["Rootfs"].as_str().expect("Rootfs"));
            for f in ["shadow", "passwd"] {
                let inside = rootfs.join(f);
                if let Ok(meta) = fs::symlink_metadata(&inside) {
                    let host = fs::metadata(Path::new("/etc").join(f)).expect("stat");
                    assert!(
                        meta.ino() != host.ino() || meta.dev() != host.dev(),
                        "{what}: the layer's {f} is the host's file"
                    );
                    if meta.is_file() {
                        let content = fs::read(&inside).unwrap_or_default();
                        assert!(
                            content.is_empty() || (content != shadow && content != passwd),
                            "{what}: the layer holds the host's /etc/{f}"
                        );
                    }
                }
            }
            berth.run_ok(["image", "rm", &name]);
        } else {
            assert_berth_error(&out, 125);
        }
    }
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// commit (CVE-2018-15664)
// ---------------------------------------------------------------------

/// Every regular file under `dir` (links not followed), with its content.
fn regular_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                out.push((path.clone(), fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out
}

#[test]
fn commit_archives_links_as_links_while_the_container_swaps_them() {
    require_root!();
    let berth = Berth::new();
    // Links whose targets are host files when followed from outside the
    // container; a commit that follows any of them copies the host file.
    berth.run_detached([
        "--name",
        "swap",
        "busybox",
        "sh",
        "-c",
        "ln -s /etc/passwd /static; ln -s /etc /sdir; ln -s /etc/shadow /shadowlink; \
         echo ready; \
         while true; do ln -sfn /etc/passwd /x; rm -f /x; echo data > /x; rm -f /x; \
         ln -sfn /etc /y; rm -f /y; mkdir /y; echo data > /y/passwd; rm -rf /y; done",
    ]);
    assert!(
        wait_until(STEP, || logs(&berth, "swap").iter().any(|l| l == "ready")),
        "the container did not start"
    );
    let host_files: Vec<Vec<u8>> = ["/etc/passwd", "/etc/shadow", "/etc/group"]
        .iter()
        .filter_map(|f| fs::read(f).ok())
        .filter(|c| !c.is_empty())
        .collect();
    for round in 0..4 {
        let image = format!("swapped{round}");
        berth.run_ok(["commit", "swap", &image]);
        // The committed layer, unpacked from a saved archive: what the
        // commit archived, links included.
        let saved = tempfile::tempdir().expect("tempdir");
        let tar = saved.path().join("image.tar");
        berth.run_ok(["save", "-o", tar.to_str().expect("utf-8"), &image]);
        let listing = Command::new("tar")
            .arg("-tvf")
            .arg(&tar)
            .output()
            .expect("tar -tvf");
        assert!(listing.status.success(), "{}", describe(&listing));
        let unpack = |archive: &Path, into: &Path| {
            fs::create_dir_all(into).expect("mkdir");
            let out = Command::new("tar")
                .arg("-xf")
                .arg(archive)
                .arg("-C")
                .arg(into)
                .output()
                .expect("tar -xf");
            assert!(out.status.success(), "{}", describe(&out));
        };
        let archive = saved.path().join("archive");
        unpack(&tar, &archive);
        let manifest: serde_json::Value = serde_json::from_slice(
            &fs::read(archive.join("manifest.json")).expect("manifest.json"),
        )
        .expect("manifest json");
        let top = manifest[0]["Layers"]
            .as_array()
            .and_then(|l| l.last())
            .and_then(|l| l.as_str())
            .expect("layers");
        let rootfs = saved.path().join("layer");
        unpack(&archive.join(top), &rootfs);
        let top_listing = Command::new("tar")
            .arg("-tvf")
            .arg(archive.join(top))
            .output()
            .expect("tar -tvf");
        let top_listing = stdout(&top_listing);
        for (path, content) in regular_files(&rootfs) {
            assert!(
                !host_files.contains(&content),
                "{image}: {} holds a host file's content",
                path.display()
            );
        }
        for (link, target) in [
            ("static", "/etc/passwd"),
            ("sdir", "/etc"),
            ("shadowlink", "/etc/shadow"),
        ] {
            let got = fs::read_link(rootfs.join(link))
                .unwrap_or_else(|e| panic!("{image}: /{link} is not a link: {e}"));
            assert_eq!(got, Path::new(target), "{image}: /{link}");
        }
        for swapped in ["x", "y"] {
            let path = rootfs.join(swapped);
            if let Ok(meta) = fs::symlink_metadata(&path) {
                // Empty when the pause caught `echo data >` between its
                // open and its write.
                let written = |c: &[u8]| c.is_empty() || c == b"data\n";
                if meta.is_file() {
                    let c = fs::read(&path).unwrap_or_default();
                    assert!(written(&c), "{image}: /{swapped} holds {c:?}");
                } else if meta.is_dir() {
                    for (p, c) in regular_files(&path) {
                        assert!(written(&c), "{image}: {} holds {c:?}", p.display());
                    }
                } else {
                    assert!(meta.is_symlink(), "{image}: /{swapped} is {meta:?}");
                }
            }
        }
        // The saved layer keeps them as links too.
        assert!(
            top_listing.contains("static -> /etc/passwd") && top_listing.contains("sdir -> /etc"),
            "{image}: the saved layer does not keep the links:\n{top_listing}"
        );
    }
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// state dirs (CVE-2021-41091)
// ---------------------------------------------------------------------

/// Run `program args` as nobody (uid and gid 65534, no groups).
fn as_nobody(program: &str, args: &[&Path]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).uid(65534).gid(65534);
    // std drops supplementary groups (setgroups(0)) when root sets a uid.
    cmd.output().expect("run as nobody")
}

#[test]
fn state_dirs_and_records_are_private_to_root() {
    require_root!();
    let berth = Berth::new();
    let id = berth.run_detached([
        "--name",
        "st",
        "busybox",
        "sh",
        "-c",
        "echo logged; sleep 60",
    ]);
    assert!(wait_until(STEP, || logs(&berth, "st")
        .iter()
        .any(|l| l == "logged")));
    // Open the state root itself for traversal, as an administrator might
    // (or as /var/lib is): berth's own directories must still keep nobody
    // out, like docker's 0700/0701 ones since CVE-2021-41091.
    fs::set_permissions(berth.root(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let container = berth.root().join("containers").join(&id);
    let config = container.join("config.json");
    let log = berth.log_file(&id);
    for dir in [
        berth.root().join("containers"),
        berth.root().join("images"),
        container.clone(),
    ] {
        let out = as_nobody("ls", &[&dir]);
        assert!(
            !out.status.success() && stderr(&out).contains("ermission denied"),
            "nobody can list {}\n{}",
            dir.display(),
            describe(&out)
        );
    }
    for file in [&config, &log] {
        let out = as_nobody("cat", &[file]);
        assert!(
            !out.status.success(),
            "nobody can read {}\n{}",
            file.display(),
            describe(&out)
        );
        let mode = fs::metadata(file).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
    }
    // Everything berth made: directories 0700 (or tighter), files 0600,
    // except inside the container's filesystem (upper, work, rootfs) and
    // the image layers' root filesystems, which are the containers' own.
    let mut stack = vec![berth.root().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let path = entry.path();
            let name = entry.file_name();
            let mut meta = fs::symlink_metadata(&path).expect("stat");
            // <root>/runtime links to the root's runtime state below /run:
            // what it points to must be as private.
            if meta.file_type().is_symlink() && dir == berth.root() && name == "runtime" {
                meta = fs::metadata(&path).expect("stat the runtime state");
            }
            // A symlink's own mode is always 777 and grants nothing (the
            // image store's `l/` short links to layer directories): what
            // counts is the mode of the directories and files.
            if meta.file_type().is_symlink() {
                continue;
            }
            let inside_container = dir.starts_with(berth.root().join("containers"))
                && ["upper", "work", "rootfs"].contains(&name.to_str().unwrap_or(""));
            let layer_rootfs =
                dir.starts_with(berth.root().join("images/layers")) && name == "diff";
            // The /etc files bind-mounted into the container must be
            // readable by its non-root users (0644, as docker's); the
            // container's 0700 directory keeps others on the host out.
            let container_etc = dir.starts_with(berth.root().join("containers"))
                && ["hosts", "resolv.conf", "hostname"].contains(&name.to_str().unwrap_or(""));
            if inside_container || layer_rootfs || container_etc {
                continue;
            }
            let mode = meta.mode() & 0o777;
            assert_eq!(
                mode & 0o077,
                0,
                "{} is open to others (mode {mode:o})",
                path.display()
            );
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    // A state root berth creates itself is 0700 too.
    let parent = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(parent.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let fresh = parent.path().join("state");
    let out = run_command({
        let mut cmd = Command::new(berth.bin());
        cmd.arg("--root")
            .arg(&fresh)
            .args(["ps", "-a"])
            .env_remove("BERTH_ROOT")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    });
    assert!(out.status.success(), "{}", describe(&out));
    if fresh.exists() {
        let mode = fs::metadata(&fresh).expect("stat").mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "a new state root has mode {mode:o}");
        let out = as_nobody("ls", &[&fresh]);
        assert!(!out.status.success(), "nobody can list a new state root");
    }
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// names
// ---------------------------------------------------------------------

#[test]
fn names_and_references_cannot_be_paths() {
    require_root!();
    let berth = Berth::new();
    // `--name ../../etc` and friends (more in bad_input.rs).
    for name in ["../../etc", "a/b", "..", "."] {
        let out = berth.output(["run", &format!("--name={name}"), "busybox", "true"]);
        let line = assert_berth_error(&out, 125);
        assert!(
            line.contains("name"),
            "the error says what is wrong: {line}"
        );
    }
    assert!(berth.container_ids().is_empty(), "a container was created");
    let parent = berth.root().parent().expect("parent");
    assert!(!parent.join("etc").join("config.json").exists());

    // Ids are 64 hex digits and are the directory names.
    let id = berth.run_detached(["--name", "real", "busybox", "sleep", "60"]);
    assert!(is_full_id(&id), "{id}");
    let dirs = berth.container_dirs();
    assert_eq!(dirs.len(), 1);
    assert_eq!(
        dirs[0].file_name().and_then(|n| n.to_str()),
        Some(id.as_str())
    );

    // A reference that is a path to the container's directory is not a
    // name or an id prefix.
    for reference in [
        format!("../containers/{id}"),
        format!("{id}/.."),
        format!("./{id}"),
        "../images/names/busybox".to_owned(),
    ] {
        for args in [
            vec!["inspect", reference.as_str()],
            vec!["exec", reference.as_str(), "true"],
            vec!["logs", reference.as_str()],
            vec!["stop", reference.as_str()],
        ] {
            let out = berth.output(&args);
            assert!(!out.status.success(), "{args:?} worked\n{}", describe(&out));
            assert!(
                !stdout(&out).contains(&id),
                "{args:?} found the container\n{}",
                describe(&out)
            );
        }
        let out = berth.output(["rm", "-f", &reference]);
        assert_target_error(&out);
    }
    assert_eq!(berth.status_of("real"), "running");
    // Image names that are paths are refused...
    let before = berth.tree();
    for image in ["../../etc", "../names/x", "/abs", "a/../b"] {
        assert_berth_error(&berth.output(["commit", "real", image]), 125);
    }
    assert_eq!(berth.tree(), before, "a refused commit left something");
    // ...and a repository with a slash (valid, as in docker) names no
    // file: it is a key of the tag index, under the store only.
    berth.run_ok(["commit", "real", "a/b"]);
    assert!(berth.run_ok(["images", "a/b"]).contains("a/b "));
    assert!(!berth.root().join("a").exists() && !parent.join("a").exists());
    berth.run_ok(["rmi", "a/b"]);
    berth.assert_clean();
}

/// The container sees its own memory limit under /sys/fs/cgroup (cgroup v1
/// or v2 file names), and cannot raise it there: the view is read-only.
#[test]
fn the_cgroup_view_shows_the_limit_and_cannot_raise_it() {
    require_root!();
    let berth = Berth::new();
    let script = "f=/sys/fs/cgroup/memory/memory.limit_in_bytes; \
                  [ -e $f ] || f=/sys/fs/cgroup/memory.max; \
                  cat $f; echo 1073741824 > $f 2>/dev/null && echo raised || echo refused; cat $f";
    let out = berth.output(["run", "--rm", "-m", "32m", "busybox", "sh", "-c", script]);
    assert_eq!(
        stdout(&out),
        "33554432\nrefused\n33554432\n",
        "{}",
        describe(&out)
    );
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// seccomp: docker's default profile, unconfined, a profile of one's own
// ---------------------------------------------------------------------

/// The fixture's syscall probe, built static so it runs in busybox.
fn syscall_probe(berth: &Berth) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/syscall_probe.c");
    let binary = berth.root().join("syscall_probe");
    let out = Command::new("cc")
        .args(["-static", "-O", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("run cc");
    assert!(out.status.success(), "cc: {}", describe(&out));
    binary
}

fn probe_results(out: &Output) -> Vec<(String, i32)> {
    assert!(out.status.success(), "{}", describe(out));
    stdout(out)
        .lines()
        .map(|line| {
            let (name, errno) = line.split_once(' ').unwrap();
            (name.to_owned(), errno.parse().unwrap())
        })
        .collect()
}

#[test]
fn seccomp_default_profile_refuses_what_docker_refuses() {
    require_root!();
    let berth = Berth::new();
    let probe = syscall_probe(&berth);
    let mount = format!("{}:/probe:ro", probe.display());
    const EPERM: i32 = 1;

    // Default container: filter on; every probed call and new user or
    // mount namespaces end in EPERM, as with docker.
    let out = run_rm(
        &berth,
        &["--net", "none", "-v", &mount, "busybox", "/probe"],
    );
    let results = probe_results(&out);
    assert_eq!(results.len(), 9, "{}", describe(&out));
    for (call, errno) in &results {
        assert_eq!(*errno, EPERM, "{call} in a default container");
    }
    let out = run_rm(
        &berth,
        &[
            "--net",
            "none",
            "busybox",
            "sh",
            "-c",
            "grep '^Seccomp:' /proc/self/status; unshare -U true 2>&1; unshare -m true 2>&1; \
             mkdir /made && echo mkdir-ok",
        ],
    );
    let text = stdout(&out);
    assert!(text.starts_with("Seccomp:\t2\n"), "{text}");
    assert_eq!(
        text.matches("Operation not permitted").count(),
        2,
        "unshare -U and -m refused: {text}"
    );
    assert!(text.contains("mkdir-ok"), "{text}");

    // An exec'd process is confined the same way.
    let name = "seccomp-exec";
    berth.run_ok([
        "run", "-d", "--net", "none", "--name", name, "-v", &mount, "busybox", "sleep", "60",
    ]);
    let exec = berth.output(["exec", name, "/probe"]);
    for (call, errno) in probe_results(&exec) {
        assert_eq!(errno, EPERM, "{call} in an exec'd process");
    }
    berth.run_ok(["rm", "-f", name]);

    // unconfined: the calls reach the kernel, which fails them for their
    // bad arguments instead.
    let out = run_rm(
        &berth,
        &[
            "--net",
            "none",
            "--security-opt",
            "seccomp=unconfined",
            "-v",
            &mount,
            "busybox",
            "/probe",
        ],
    );
    let results = probe_results(&out);
    for reached in ["keyctl", "add_key", "perf_event_open", "io_uring_setup"] {
        let errno = results.iter().find(|(c, _)| c == reached).unwrap().1;
        assert_ne!(errno, EPERM, "{reached} reaches the kernel when unconfined");
    }

    // A profile of one's own: mkdir fails with the profile's errno (EXDEV).
    let profile = berth.root().join("deny-mkdir.json");
    fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18}]}"#,
    )
    .unwrap();
    let out = run_rm(
        &berth,
        &[
            "--net",
            "none",
            "--security-opt",
            &format!("seccomp={}", profile.display()),
            "busybox",
            "sh",
            "-c",
            "mkdir /made 2>&1; touch /file && echo touch-ok",
        ],
    );
    let text = stdout(&out);
    assert!(text.contains("Invalid cross-device link"), "{text}");
    assert!(text.contains("touch-ok"), "{text}");

    // A broken profile is one clear line, exit 125.
    fs::write(&profile, "{not json").unwrap();
    let out = run_rm(
        &berth,
        &[
            "--security-opt",
            &format!("seccomp={}", profile.display()),
            "busybox",
            "true",
        ],
    );
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&out));
    berth.assert_clean();
}

/// `exec` and `run` never hand the container berth's own descriptors:
/// through /proc/self/fd it could reopen the host files they point to
/// (here, truncate the file a user redirected the output to, or write
/// into the file given as input).
#[test]
fn exec_and_run_stdio_cannot_reopen_host_files() {
    require_root!();
    let berth = Berth::new();
    berth.run_detached(["--name", "target", "busybox", "sleep", "60"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input");
    let output = dir.path().join("output");
    let attack = "cat > /dev/null; echo first; \
                  echo pwned > /proc/self/fd/0; echo truncated > /proc/self/fd/1; true";
    for prefix in [
        vec!["exec", "-i", "target"],
        vec!["run", "--rm", "-i", "--net", "none", "busybox"],
    ] {
        fs::write(&input, "precious\n").expect("input");
        let mut args = prefix.clone();
        args.extend(["sh", "-c", attack]);
        let status = berth
            .cmd(&args)
            .stdin(fs::File::open(&input).expect("open input"))
            .stdout(fs::File::create(&output).expect("create output"))
            .status()
            .expect("run berth");
        assert!(status.success(), "{prefix:?}: {status}");
        assert_eq!(
            fs::read_to_string(&input).expect("input"),
            "precious\n",
            "{prefix:?} wrote into the host file given as input"
        );
        assert_eq!(
            fs::read_to_string(&output).expect("output"),
            "first\ntruncated\n",
            "{prefix:?} reopened the host file given as output"
        );
    }
    berth.run_ok(["rm", "-f", "target"]);
    berth.assert_clean();
}

/// `depth` directories `d/d/d...` below `dir` and a `leaf` file at the
/// bottom, made relative to descriptors (the path is far beyond PATH_MAX,
/// which a shell in the container cannot `cd` through, a program can).
fn make_deep_tree(dir: &Path, depth: usize) {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::{mkdirat, Mode};
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut fd = nix::fcntl::open(dir, flags, Mode::empty()).expect("open");
    for _ in 0..depth {
        mkdirat(&fd, "d", Mode::from_bits_truncate(0o755)).expect("mkdirat");
        fd = openat(&fd, "d", flags, Mode::empty()).expect("openat");
    }
    fs::write(format!("/proc/self/fd/{}/leaf", fd.as_raw_fd()), "bottom\n").expect("leaf");
}

/// How deep `d/d/d...` goes below `dir`, and the leaf's content there.
fn read_deep_tree(dir: &Path) -> (usize, String) {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut fd = nix::fcntl::open(dir, flags, Mode::empty()).expect("open");
    let mut depth = 0;
    while let Ok(next) = openat(&fd, "d", flags, Mode::empty()) {
        fd = next;
        depth += 1;
    }
    let leaf =
        fs::read_to_string(format!("/proc/self/fd/{}/leaf", fd.as_raw_fd())).unwrap_or_default();
    (depth, leaf)
}

/// A container can make its tree as deep as it likes: commit and export
/// walk it without recursion (a recursive walk overflowed berth's stack
/// at ~800 levels), and the committed layer is extracted with each
/// directory opened a bounded number of times (it was quadratic).
#[test]
fn commit_and_export_of_a_very_deep_tree() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["run", "--name", "deep", "--net", "none", "busybox", "true"]);
    let upper = berth.container_dirs()[0].join("upper");
    make_deep_tree(&upper, 3000);
    berth.run_ok(["commit", "deep", "deepimage"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("deep.tar");
    berth.run_ok(["export", "-o", archive.to_str().expect("utf-8"), "deep"]);
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&archive)
        .output()
        .expect("tar -tf");
    assert!(listing.status.success(), "{}", describe(&listing));
    let leaves = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|l| l.ends_with("/d/leaf"))
        .count();
    assert_eq!(leaves, 1, "the export holds the leaf 3000 levels down");
    // The committed image's top layer has the whole tree.
    let deepest = berth
        .layer_rootfses()
        .iter()
        .map(|layer| read_deep_tree(layer))
        .max()
        .expect("layers");
    assert_eq!(deepest, (3000, "bottom\n".to_owned()));
    berth.run_ok(["run", "--rm", "--net", "none", "deepimage", "ls", "/d"]);
    berth.run_ok(["rm", "deep"]);
    berth.run_ok(["rmi", "deepimage"]);
    berth.assert_clean();
}
