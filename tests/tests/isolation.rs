//! The namespaces of `berth run`: UTS, PID, mount and network isolation.

use std::fs;

use berth_e2e::{host_hostname, require_root, Berth};

#[test]
fn hostname_is_the_short_id_or_the_one_given_and_the_host_keeps_its_own() {
    require_root!();
    let berth = Berth::new();
    let host_before = host_hostname();

    let out = berth.run_ok(["run", "--name", "h1", "busybox", "hostname"]);
    let id = berth.inspect("h1")["id"]
        .as_str()
        .expect("inspect has an id")
        .to_owned();
    assert_eq!(id.len(), 64, "full id: {id}");
    assert_eq!(out.trim(), &id[..12], "default hostname is the short id");

    let out = berth.run_ok([
        "run",
        "-h",
        "web1",
        "busybox",
        "sh",
        "-c",
        "hostname; cat /proc/sys/kernel/hostname; cat /etc/hostname",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.get(..2), Some(&["web1", "web1"][..]), "{out}");

    // Setting it inside does not reach the host either (it takes
    // CAP_SYS_ADMIN, which a container lacks by default, as in docker).
    let denied = berth.output(["run", "busybox", "hostname", "changed-inside"]);
    assert!(
        !denied.status.success(),
        "sethostname worked without CAP_SYS_ADMIN"
    );
    berth.run_ok([
        "run",
        "--cap-add",
        "SYS_ADMIN",
        "busybox",
        "hostname",
        "changed-inside",
    ]);
    assert_eq!(host_hostname(), host_before, "the host's hostname changed");
    berth.assert_clean();
}

#[test]
fn the_command_is_pid_1_and_sees_only_its_own_processes() {
    require_root!();
    let berth = Berth::new();
    // `; true` keeps sh from exec'ing ps as its last command.
    let out = berth.run_ok(["run", "busybox", "sh", "-c", "echo $$; ps; true"]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"), "`echo $$` is not 1:\n{out}");
    let header = lines.next().unwrap_or_default();
    assert!(header.trim_start().starts_with("PID"), "ps header: {out}");
    let pids: Vec<u32> = lines
        .map(|l| {
            l.split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("ps line without a pid: {l:?}\n{out}"))
        })
        .collect();
    // sh (PID 1) and the ps it forked: nothing of the host.
    assert_eq!(pids.len(), 2, "ps inside sees more than sh and ps:\n{out}");
    assert_eq!(pids[0], 1, "{out}");
    assert!(
        pids[1] < 10,
        "ps's own pid is small in a new namespace:\n{out}"
    );

    // /proc agrees: a glob (no child process) finds only PID 1 itself.
    let out = berth.run_ok([
        "run",
        "busybox",
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do echo $p; done; true",
    ]);
    assert_eq!(out.trim(), "/proc/1", "processes visible in /proc");
    berth.assert_clean();
}

/// The host's mount points that a container must not see.
fn host_mount_points() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect()
}

/// The `major:minor` and source of the host's root file system.
fn host_root_device() -> (String, String) {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let line = info
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .expect("the host has a / mount");
    let fields: Vec<&str> = line.split(' ').collect();
    let dash = fields
        .iter()
        .position(|f| *f == "-")
        .expect("mountinfo separator");
    (fields[2].to_owned(), fields[dash + 2].to_owned())
}

#[test]
fn host_mounts_are_invisible() {
    require_root!();
    let berth = Berth::new();
    let out = berth.run_ok(["run", "busybox", "cat", "/proc/self/mountinfo"]);
    let (host_dev, host_source) = host_root_device();
    // Mount points any container has, which the host has too.
    let own = [
        "/",
        "/proc",
        "/sys",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
    ];
    let host_points = host_mount_points();
    let mut root_fstype = None;
    for line in out.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields
            .iter()
            .position(|f| *f == "-")
            .unwrap_or_else(|| panic!("not a mountinfo line: {line:?}"));
        let (dev, point, fstype, source) =
            (fields[2], fields[4], fields[dash + 1], fields[dash + 2]);
        if point == "/" {
            root_fstype = Some(fstype.to_owned());
        }
        // The container's own /etc files, which berth writes in its
        // directory on the host and bind-mounts, as docker does.
        if ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"].contains(&point) {
            continue;
        }
        // Its read-only view of its own cgroups (docker's too): binds of
        // the container's cgroup directories, checked in security.rs.
        if point == "/sys/fs/cgroup" || point.starts_with("/sys/fs/cgroup/") {
            continue;
        }
        for hidden in ["/work", "/boot", "/home", "/mnt"] {
            assert!(
                point != hidden && !point.starts_with(&format!("{hidden}/")),
                "host mount {point} visible in the container:\n{out}"
            );
        }
        assert!(
            own.contains(&point) || !host_points.iter().any(|h| h == point),
            "host mount point {point} visible in the container:\n{out}"
        );
        assert!(
            dev != host_dev && source != host_source,
            "a mount of the host's root device ({host_dev} {host_source}) is visible:\n{line}\n{out}"
        );
    }
    assert_eq!(
        root_fstype.as_deref(),
        Some("overlay"),
        "the container's / is not its overlay:\n{out}"
    );
    // And the host directories are not reachable by path either.
    let out = berth.run_ok([
        "run",
        "busybox",
        "sh",
        "-c",
        "ls -d /work /boot /tmp/berth-e2e-* 2>/dev/null; true",
    ]);
    assert_eq!(out.trim(), "", "host paths reachable in the container");
    berth.assert_clean();
}

#[test]
fn the_network_namespace_has_only_loopback_and_it_is_up() {
    require_root!();
    let berth = Berth::new();
    // The default bridge network adds eth0, nothing else of the host's.
    let out = berth.run_ok(["run", "busybox", "ls", "/sys/class/net"]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["eth0", "lo"],
        "interfaces in a container on the default network"
    );
    let out = berth.run_ok(["run", "--net", "none", "busybox", "ls", "/sys/class/net"]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["lo"],
        "interfaces in the container"
    );
    let out = berth.run_ok([
        "run",
        "--net",
        "none",
        "busybox",
        "sh",
        "-c",
        "tail -n +3 /proc/net/dev | cut -d: -f1; cat /sys/class/net/lo/flags",
    ]);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines.first(), Some(&"lo"), "/proc/net/dev: {out}");
    assert_eq!(lines.len(), 2, "more than lo in /proc/net/dev: {out}");
    let flags = u32::from_str_radix(lines[1].trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("lo flags {:?}: {e}", lines[1]));
    assert_eq!(
        flags & libc::IFF_UP as u32,
        libc::IFF_UP as u32,
        "lo is not up (flags {flags:#x})"
    );
    berth.assert_clean();
}
