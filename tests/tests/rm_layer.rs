//! The write layer of a `--rm` container dies with it: its overlay is
//! mounted `volatile` (no sync of the host's disk when it is unmounted at
//! the container's end), that of any other container is not.

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
    berth.run_ok(["rm", "-f", "kept"]);
    // Killed, a --rm container may be removed by its monitor before `rm`
    // gets to it: either way it goes.
    let _ = berth.output(["rm", "-f", "removed"]);
    assert!(
        wait_until(Duration::from_secs(10), || berth.container_ids().is_empty()),
        "left: {:?}",
        berth.container_ids()
    );
    berth.assert_clean();
}
