//! The write layer of a `--rm` container dies with it: its overlay is
//! mounted `volatile` (no sync of the host's disk when it is unmounted at
//! the container's end), that of any other container is not; and its
//! directory is a transient one, on the runtime's tmpfs, with only the
//! write layer on disk.

use std::time::Duration;

use berth_e2e::{require_root, wait_until, Berth};

/// The per-superblock options of the container's root mount, as its init
/// sees it (/proc/PID/mountinfo of the init).
fn root_mount_options(berth: &Berth, name: &str) -> String {
    let pid = berth.run_ok(["inspect", "-f", "{{.State.Pid}}", name]);
    let mountinfo = std::fs::read_to_string(format!("/proc/{}/mountinfo", pid.trim())).unwrap();
    mountinfo
        .lines()
        .find(|line| line.split(' ').nth(4) == Some("/"))
        .and_then(|line| line.split_once(" - "))
        .map(|(_, after)| after.to_owned())
        .unwrap_or_else(|| panic!("no root mount in:\n{mountinfo}"))
}

fn is_volatile(options: &str) -> bool {
    // Linux 6.8 and later show `volatile` as `fsync=volatile`.
    options
        .split([',', ' '])
        .any(|o| o == "volatile" || o == "fsync=volatile")
}

#[test]
fn only_a_rm_containers_write_layer_is_volatile() {
    require_root!();
    let berth = Berth::new();
    let run = |name: &str, rm: bool| {
        let mut args = vec![
            "run", "-d", "--name", name, "--net", "none", "--pull", "never",
        ];
        if rm {
            args.push("--rm");
        }
        args.extend(["busybox", "sh", "-c", "echo x > /written; sleep 60"]);
        berth.run_ok(args);
    };
    run("removed", true);
    run("kept", false);
    let removed = root_mount_options(&berth, "removed");
    assert!(removed.starts_with("overlay "), "{removed}");
    assert!(is_volatile(&removed), "a --rm root: {removed}");
    let kept = root_mount_options(&berth, "kept");
    assert!(!is_volatile(&kept), "a kept root: {kept}");
    // What it writes is there for the container all the same.
    let written = berth.run_ok(["exec", "removed", "cat", "/written"]);
    assert_eq!(written.trim(), "x");
    // Its directory lives in the runtime's state (<root>/runtime is the
    // link to it below /run), its write layer on disk beside the link.
    let id_of = |name: &str| {
        berth
            .run_ok(["inspect", "-f", "{{.Id}}", name])
            .trim()
            .to_owned()
    };
    let (removed_id, kept_id) = (id_of("removed"), id_of("kept"));
    let containers = berth.root().join("containers");
    let link = std::fs::read_link(containers.join(&removed_id)).expect("a --rm container's link");
    assert_eq!(
        link,
        berth
            .root()
            .join("runtime/containers@transient")
            .join(&removed_id)
    );
    assert!(link.join("config.json").is_file() && link.join("hosts").is_file());
    let layer = containers.join(format!(".{removed_id}.layer"));
    assert_eq!(
        std::fs::read_to_string(layer.join("upper/written")).unwrap(),
        "x\n"
    );
    let kept_dir = std::fs::symlink_metadata(containers.join(&kept_id)).unwrap();
    assert!(kept_dir.is_dir(), "a kept container's directory is on disk");
    // `ps -s` and `diff` read the layer where it is.
    let diff = berth.run_ok(["diff", "removed"]);
    assert!(diff.lines().any(|l| l == "A /written"), "{diff}");
    berth.run_ok(["rm", "-f", "kept"]);
    // Killed, a --rm container is removed by its monitor, perhaps before
    // `rm` gets to it: either way `rm -f` succeeds.
    assert_eq!(berth.run_ok(["rm", "-f", "removed"]).trim(), "removed");
    berth.assert_clean_once_all_removed();
}

/// `rm -f` and `stop` of a running `--rm` container race its monitor,
/// which removes the container as soon as it ends: they must succeed
/// (exit 0, the name printed) whoever wins, as docker's do.
#[test]
fn rm_f_of_a_running_rm_container_succeeds_whoever_removes_it() {
    require_root!();
    let berth = Berth::new();
    for round in 0..5 {
        let name = format!("racer{round}");
        berth.run_ok([
            "run", "-d", "--rm", "--name", &name, "--net", "none", "--pull", "never", "busybox",
            "sleep", "60",
        ]);
        assert_eq!(berth.run_ok(["rm", "-f", &name]).trim(), name);
        // `stop` races the monitor the same way.
        berth.run_ok([
            "run", "-d", "--rm", "--name", &name, "--net", "none", "--pull", "never", "busybox",
            "sleep", "60",
        ]);
        assert_eq!(berth.run_ok(["stop", "-t", "1", &name]).trim(), name);
    }
    berth.assert_clean_once_all_removed();
    // Reading the store makes nothing: not the runtime's directory (a
    // command run after its root's cleanup would leave it behind).
    let runtime = std::fs::read_link(berth.root().join("runtime")).expect("the runtime link");
    std::fs::remove_dir_all(&runtime).expect("remove the runtime's directory");
    berth.run_ok(["ps", "-a"]);
    assert!(!runtime.exists(), "`ps` made {}", runtime.display());
}

/// docker restarts a `--rm` container in place: its stop for the restart
/// does not remove it, the files it wrote and its log stay, it is still a
/// `--rm` container, and its next end (a plain `stop`) removes it.
#[test]
fn restart_of_a_rm_container_keeps_it_until_its_next_end() {
    require_root!();
    let berth = Berth::new();
    let id = berth
        .run_ok([
            "run",
            "-d",
            "--rm",
            "--name",
            "again",
            "--net",
            "none",
            "--pull",
            "never",
            "busybox",
            "sh",
            "-c",
            "echo started; echo run >> /runs; sleep 60",
        ])
        .trim()
        .to_owned();
    assert!(
        wait_until(Duration::from_secs(10), || berth
            .run_ok(["logs", "again"])
            .contains("started")),
        "the container did not start"
    );
    assert_eq!(
        berth.run_ok(["restart", "-t", "1", "again"]).trim(),
        "again"
    );
    assert!(
        wait_until(Duration::from_secs(10), || berth
            .run_ok(["exec", "again", "cat", "/runs"])
            .lines()
            .count()
            == 2),
        "the restarted container did not run again on its own files"
    );
    let ids = berth.container_ids();
    assert!(
        ids.len() == 1 && id.starts_with(&ids[0]),
        "the same container: {ids:?}, started as {id}"
    );
    assert_eq!(
        berth.run_ok(["logs", "again"]).matches("started").count(),
        2,
        "its log goes on"
    );
    assert_eq!(
        berth
            .run_ok(["inspect", "--format", "{{.HostConfig.AutoRemove}}", "again"])
            .trim(),
        "true"
    );
    berth.run_ok(["stop", "-t", "1", "again"]);
    berth.assert_clean_once_all_removed();
}

/// `wait` of a `--rm` container prints the exit code it ended with, and
/// `attach` ends with it, as docker's do, though the container is removed
/// at that very end: its monitor keeps the code for a while.
#[test]
fn wait_and_attach_of_a_rm_container_give_its_exit_code() {
    require_root!();
    let berth = Berth::new();
    let start = |script: &str| {
        berth
            .run_ok([
                "run", "-d", "--rm", "--net", "none", "--pull", "never", "busybox", "sh", "-c",
                script,
            ])
            .trim()
            .to_owned()
    };
    let ending = start("sleep 1; exit 7");
    assert_eq!(berth.run_ok(["wait", &ending]).trim(), "7");
    let killed = start("sleep 60");
    let mut waiter = berth.spawn(["wait", &killed]);
    std::thread::sleep(Duration::from_millis(300));
    berth.run_ok(["kill", &killed]);
    let status = waiter.wait(Duration::from_secs(10));
    let mut printed = String::new();
    std::io::Read::read_to_string(waiter.0.stdout.as_mut().expect("piped"), &mut printed)
        .expect("the waiter's output");
    assert!(status.success(), "wait failed: {status}");
    assert_eq!(printed.trim(), "137");
    // `attach` ends with the container's code the same way.
    let attached = start("sleep 1; echo bye; exit 6");
    let output = berth.output(["attach", &attached]);
    assert_eq!(output.status.code(), Some(6), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("bye"));
    // Asked after the removal, the kept code is the answer too.
    let quick = start("exit 5");
    assert!(
        wait_until(Duration::from_secs(10), || berth.container_ids().is_empty()),
        "left: {:?}",
        berth.container_ids()
    );
    assert_eq!(berth.run_ok(["wait", &quick]).trim(), "5");
    berth.assert_clean();
}
