//! `berth run`: exit codes, environment, working directory, stdin.

use std::fs;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use berth_e2e::{assert_berth_error, describe, require_root, stdout, wait_until, Berth};

#[test]
fn exit_codes_follow_docker() {
    require_root!();
    let berth = Berth::new();
    let cases: [(&[&str], i32); 4] = [
        (&["true"], 0),
        (&["sh", "-c", "exit 3"], 3),
        (&["/etc/passwd"], 126),
        (&["nosuchcmd"], 127),
    ];
    for (command, code) in cases {
        let mut args = vec!["run", "busybox"];
        args.extend_from_slice(command);
        let out = berth.output(&args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "`berth run busybox {}`\n{}",
            command.join(" "),
            describe(&out)
        );
        if code >= 126 {
            // The user learns why, in one line.
            assert_berth_error(&out, code);
        }
    }
    berth.assert_clean();
}

#[test]
fn pid_1_killed_from_the_host_gives_137() {
    require_root!();
    let berth = Berth::new();
    let mut run = berth.spawn([
        "run",
        "--name",
        "victim",
        "busybox",
        "sh",
        "-c",
        "exec sleep 30",
    ]);
    // Wait until PID 1 is the sleep itself (the exec happened).
    let mut pid = 0;
    let running = wait_until(Duration::from_secs(20), || {
        let out = berth.output(["inspect", "victim"]);
        if !out.status.success() {
            return false;
        }
        let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let Some(p) = record[0]["State"]["Pid"].as_i64().filter(|&p| p > 0) else {
            return false;
        };
        pid = p as i32;
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
    });
    assert!(
        running,
        "the container never showed a running `sleep` (pid {pid})"
    );
    assert_eq!(berth.inspect("victim")["status"], "running");
    assert!(berth_e2e::kill(pid, libc::SIGKILL), "kill -9 {pid}");
    let status = run.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(137), "berth's exit status for SIGKILL");
    let record = berth.inspect("victim");
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["exit_code"], 137, "{record}");
    let ps = berth.run_ok(["ps", "-a"]);
    assert!(ps.contains("Exited (137)"), "ps -a:\n{ps}");
    berth.assert_clean();
}

#[test]
fn environment_values_are_visible() {
    require_root!();
    let berth = Berth::new();
    let mut cmd = berth.cmd([
        "run",
        "-e",
        "A=1",
        "-e",
        "B",
        "-e",
        "C",
        "-e",
        "D=x=y z",
        "busybox",
        "sh",
        "-c",
        "echo \"A=$A B=$B C=${C-unset} D=$D\"",
    ]);
    cmd.env("B", "from berth").env_remove("C");
    let out = berth_e2e::run_command(cmd);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out).trim(), "A=1 B=from berth C=unset D=x=y z");

    // berth's own environment does not leak in otherwise.
    let mut cmd = berth.cmd([
        "run",
        "busybox",
        "sh",
        "-c",
        "echo ${BERTH_E2E_SECRET-absent}",
    ]);
    cmd.env("BERTH_E2E_SECRET", "leaked");
    let out = berth_e2e::run_command(cmd);
    assert_eq!(stdout(&out).trim(), "absent", "{}", describe(&out));
    berth.assert_clean();
}

#[test]
fn workdir_is_created_and_entered() {
    require_root!();
    let berth = Berth::new();
    let out = berth.run_ok([
        "run",
        "-w",
        "/some/dir",
        "busybox",
        "sh",
        "-c",
        "pwd; echo x > here; ls /some/dir",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["/some/dir", "here"],
        "{out}"
    );
    for layer in berth.layer_rootfses() {
        assert!(
            !layer.join("some").exists(),
            "the working directory was created in the image layer {}",
            layer.display()
        );
    }
    berth.assert_clean();
}

#[test]
fn interactive_passes_piped_stdin() {
    require_root!();
    let berth = Berth::new();
    let mut cmd = berth.cmd(["run", "-i", "busybox", "cat"]);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn berth");
    child
        .stdin
        .take()
        .expect("stdin pipe")
        .write_all(b"hi\nthere\n")
        .expect("write stdin");
    let out = berth_e2e::wait_with_timeout(child, Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "hi\nthere\n");
    berth.assert_clean();
}

#[test]
fn without_interactive_stdin_is_empty() {
    require_root!();
    let berth = Berth::new();
    let mut cmd = berth.cmd(["run", "busybox", "sh", "-c", "cat; echo done"]);
    // The pipe stays open and empty: if berth passed it on, cat would wait.
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn berth");
    let stdin = child.stdin.take();
    let out = berth_e2e::wait_with_timeout(child, Duration::from_secs(20));
    drop(stdin);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "done\n");
    berth.assert_clean();
}

#[test]
fn entrypoint_flag_replaces_the_images_entrypoint_and_cmd() {
    require_root!();
    let berth = Berth::new();
    // busybox's CMD is `sh`: --entrypoint drops it.
    let out = berth.output([
        "run",
        "--rm",
        "--net",
        "none",
        "--entrypoint",
        "echo",
        "busybox",
    ]);
    assert_eq!(stdout(&out), "\n", "{}", describe(&out));
    let out = berth.output([
        "run",
        "--rm",
        "--net",
        "none",
        "--entrypoint",
        "echo",
        "busybox",
        "hi",
        "there",
    ]);
    assert_eq!(stdout(&out), "hi there\n", "{}", describe(&out));
    // "" removes the entrypoint: the arguments are the whole command.
    let out = berth.output([
        "run",
        "--rm",
        "--net",
        "none",
        "--entrypoint",
        "",
        "busybox",
        "echo",
        "plain",
    ]);
    assert_eq!(stdout(&out), "plain\n", "{}", describe(&out));
    berth.assert_clean();
}

#[test]
fn docker_process_flags_take_effect() {
    require_root!();
    let berth = Berth::new();
    let env_file = berth.root().join("env");
    std::fs::write(&env_file, "# settings\nA=from-file\nB=from-file\n").unwrap();
    let env_file = env_file.to_str().unwrap().to_owned();
    let out = berth.output([
        "run",
        "--rm",
        "--net",
        "none",
        "-u",
        "nobody",
        "--group-add",
        "10",
        "--read-only",
        "--env-file",
        &env_file,
        "-e",
        "B=from-flag",
        "--ulimit",
        "nofile=123:456",
        "--shm-size",
        "1m",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "--oom-score-adj",
        "300",
        "-l",
        "team=infra",
        "busybox",
        "sh",
        "-c",
        "id -u; id -G; echo $A $B; ulimit -n; ulimit -Hn; df -k /dev/shm | tail -1; \
         cat /proc/sys/net/ipv4/ip_forward /proc/self/oom_score_adj; \
         touch /x 2>/dev/null && echo root-writable || echo root-read-only",
    ]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 9, "{}", describe(&out));
    assert_eq!(lines[0], "65534", "nobody from the image's /etc/passwd");
    assert!(lines[1].split(' ').any(|g| g == "10"), "{text}");
    assert_eq!(lines[2], "from-file from-flag");
    assert_eq!((lines[3], lines[4]), ("123", "456"));
    assert!(
        lines[5].split_whitespace().nth(1) == Some("1024"),
        "/dev/shm of 1m: {text}"
    );
    assert_eq!((lines[6], lines[7]), ("1", "300"));
    assert_eq!(lines[8], "root-read-only");

    // Labels and the stop signal are on the record.
    berth.run_ok([
        "run",
        "-d",
        "--net",
        "none",
        "--name",
        "labelled",
        "-l",
        "team=infra",
        "--stop-signal",
        "USR1",
        "busybox",
        "sleep",
        "60",
    ]);
    let record = berth.inspect("labelled");
    assert_eq!(record["labels"]["team"], "infra", "{record}");
    assert_eq!(record["stop_signal"], "USR1", "{record}");
    berth.run_ok(["rm", "-f", "labelled"]);

    // Bad input: one line, 125, nothing made.
    for bad in [
        &["-u", "ghost"][..],
        &["--ulimit", "nofile=9:1"],
        &["--ulimit", "bogus=1"],
        &["--shm-size", "lots"],
        &["--sysctl", "kernel.shmmax"],
        &["--sysctl", "vm.swappiness=1"],
        &["--oom-score-adj", "5000"],
        &["--env-file", "/no/such/file"],
    ] {
        let mut args = vec!["run", "--rm", "--net", "none"];
        args.extend_from_slice(bad);
        args.extend(["busybox", "true"]);
        assert_berth_error(&berth.output(&args), 125);
    }
    berth.assert_clean();
}

#[test]
fn version_and_info_describe_berth_and_the_host() {
    require_root!();
    let berth = Berth::new();
    let version = berth.run_ok(["version"]);
    assert!(
        version.contains(" Version:") && version.contains("OCI runtime spec"),
        "{version}"
    );
    berth.run_ok(["run", "--net", "none", "--name", "done", "busybox", "true"]);
    berth.run_ok([
        "run", "-d", "--net", "none", "--name", "up", "busybox", "sleep", "60",
    ]);
    let info = berth.run_ok(["info"]);
    for line in [
        "Containers: 2",
        " Running: 1",
        " Stopped: 1",
        "Images: 1",
        "Storage Driver: overlay",
    ] {
        assert!(info.lines().any(|l| l == line), "{line:?} in\n{info}");
    }
    assert!(
        info.contains(&format!("Berth Root Dir: {}", berth.root().display())),
        "{info}"
    );
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(info.contains(kernel.trim()), "{info}");
    berth.run_ok(["rm", "-f", "up", "done"]);
    berth.assert_clean();
}

#[test]
fn exec_user_detach_and_privileged() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run", "-d", "--net", "none", "--name", "target", "busybox", "sleep", "60",
    ]);
    assert_eq!(
        berth.run_ok(["exec", "-u", "nobody", "target", "id", "-u"]),
        "65534\n"
    );
    assert_eq!(
        berth.run_ok(["exec", "-u", "1000:10", "target", "id", "-g"]),
        "10\n"
    );
    let caps = |args: &[&str]| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        all.extend(["target", "grep", "CapEff", "/proc/self/status"]);
        u64::from_str_radix(
            berth
                .run_ok(&all)
                .trim()
                .trim_start_matches("CapEff:")
                .trim(),
            16,
        )
        .unwrap()
    };
    assert!(caps(&["--privileged"]).count_ones() > caps(&[]).count_ones());
    // -d returns while the process goes on in the container: here it
    // waits for a gate that is only opened after exec -d returned (an
    // exec -d that waited for it would never return).
    berth.run_ok([
        "exec",
        "-d",
        "target",
        "sh",
        "-c",
        "while [ ! -e /tmp/gate ]; do sleep 0.05; done; touch /tmp/detached",
    ]);
    berth.run_ok(["exec", "target", "touch", "/tmp/gate"]);
    assert!(wait_until(Duration::from_secs(10), || {
        berth
            .output(["exec", "target", "test", "-e", "/tmp/detached"])
            .status
            .success()
    }));
    assert_berth_error(&berth.output(["exec", "-u", "ghost", "target", "id"]), 125);
    berth.run_ok(["rm", "-f", "target"]);
    berth.assert_clean();
}

#[test]
fn pid_ipc_and_uts_namespaces_can_be_shared() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run", "-d", "--net", "none", "--name", "first", "busybox", "sleep", "60",
    ]);
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--net", "none"];
        all.extend_from_slice(args);
        berth.run_ok(&all)
    };
    // --pid container:C sees C's sleep as PID 1.
    let ps = run(&[
        "--pid",
        "container:first",
        "busybox",
        "ps",
        "-o",
        "pid,args",
    ]);
    assert!(ps.lines().any(|l| l.trim() == "1 sleep 60"), "{ps}");
    // --pid host sees the host's init and more.
    let host_pids = run(&[
        "--pid",
        "host",
        "busybox",
        "sh",
        "-c",
        "ls -d /proc/[0-9]* | wc -l",
    ]);
    assert!(host_pids.trim().parse::<u32>().unwrap() > 5, "{host_pids}");
    // --ipc container:C shares C's IPC namespace.
    let theirs = berth.run_ok(["exec", "first", "readlink", "/proc/self/ns/ipc"]);
    let ours = run(&[
        "--ipc",
        "container:first",
        "busybox",
        "readlink",
        "/proc/self/ns/ipc",
    ]);
    assert_eq!(ours, theirs);
    // --uts host: the host's name, untouched.
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        run(&["--uts", "host", "busybox", "hostname"]).trim(),
        host.trim()
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host
    );
    for bad in [
        &["--pid", "bogus"][..],
        &["--pid", "container:nobody-here"],
        &["--uts", "container:first"],
        &["--ipc", "none-such"],
    ] {
        let mut args = vec!["run", "--rm", "--net", "none"];
        args.extend_from_slice(bad);
        args.extend(["busybox", "true"]);
        assert_berth_error(&berth.output(&args), 125);
    }
    berth.run_ok(["rm", "-f", "first"]);
    berth.assert_clean();
}

#[test]
fn add_host_and_dns_flags_write_the_containers_etc_files() {
    require_root!();
    let berth = Berth::new();
    let out = berth.run_ok([
        "run",
        "--rm",
        "--net",
        "none",
        "--add-host",
        "db:192.0.2.7",
        "--add-host",
        "v6:[2001:db8::1]",
        "--dns",
        "192.0.2.53",
        "--dns-search",
        "a.example",
        "--dns-option",
        "ndots:3",
        "busybox",
        "sh",
        "-c",
        "cat /etc/hosts /etc/resolv.conf",
    ]);
    for line in [
        "192.0.2.7\tdb",
        "2001:db8::1\tv6",
        "nameserver 192.0.2.53",
        "search a.example",
        "options ndots:3",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in\n{out}");
    }
    assert_eq!(out.matches("nameserver").count(), 1, "only ours: {out}");
    for bad in [
        &["--add-host", "nope"][..],
        &["--add-host", "x:300.1.1.1"],
        &["--dns", "resolver"],
    ] {
        let mut args = vec!["run", "--rm", "--net", "none"];
        args.extend_from_slice(bad);
        args.extend(["busybox", "true"]);
        assert_berth_error(&berth.output(&args), 125);
    }
    berth.assert_clean();
}

/// The memory and CPU flags reach the container's cgroup (read back
/// through its own read-only cgroup view, v1 or v2 names).
#[test]
fn memory_swap_reservation_and_cfs_flags_reach_the_cgroup() {
    require_root!();
    let berth = Berth::new();
    let script = "cat /sys/fs/cgroup/memory/memory.soft_limit_in_bytes \
                  /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes \
                  /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us \
                  2>/dev/null || cat /sys/fs/cgroup/memory.low /sys/fs/cgroup/memory.swap.max \
                  /sys/fs/cgroup/cpu.max";
    let out = berth.run_ok([
        "run",
        "--rm",
        "--net",
        "none",
        "-m",
        "32m",
        "--memory-swap",
        "64m",
        "--memory-reservation",
        "16m",
        "--cpu-period",
        "50000",
        "--cpu-quota",
        "25000",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    let values: Vec<&str> = out.split_whitespace().collect();
    let v1 = ["16777216", "67108864", "25000", "50000"];
    // v2: memory.low, memory.swap.max (swap alone: 64m - 32m), cpu.max.
    let v2 = ["16777216", "33554432", "25000", "50000"];
    assert!(values == v1 || values == v2, "{out}");
    for bad in [
        &["--memory-swap", "64m"][..],
        &["-m", "64m", "--memory-swap", "32m"],
        &["-m", "16m", "--memory-reservation", "32m"],
        &["--cpus", "1", "--cpu-quota", "50000"],
        &["--cpu-period", "10"],
    ] {
        let mut args = vec!["run", "--rm", "--net", "none"];
        args.extend_from_slice(bad);
        args.extend(["busybox", "true"]);
        assert_berth_error(&berth.output(&args), 125);
    }
    berth.assert_clean();
}

#[test]
fn device_flag_adds_a_host_device_with_its_access() {
    require_root!();
    if !std::path::Path::new("/dev/fuse").exists() {
        eprintln!("skipped: no /dev/fuse on this host");
        return;
    }
    let berth = Berth::new();
    let open_for_write = "exec 3>/dev/fuse && echo opened";
    let plain = berth.output([
        "run",
        "--rm",
        "--net",
        "none",
        "busybox",
        "sh",
        "-c",
        "test -c /dev/fuse && echo present",
    ]);
    assert!(
        !stdout(&plain).contains("present"),
        "no /dev/fuse by default"
    );
    let given = berth.run_ok([
        "run",
        "--rm",
        "--net",
        "none",
        "--device",
        "/dev/fuse",
        "busybox",
        "sh",
        "-c",
        "ls -l /dev/fuse; exec 3>/dev/fuse && echo opened",
    ]);
    assert!(
        given.contains("10, 229") && given.contains("opened"),
        "{given}"
    );
    let moved = berth.run_ok([
        "run",
        "--rm",
        "--net",
        "none",
        "--device",
        "/dev/fuse:/dev/myfuse",
        "busybox",
        "ls",
        "/dev/myfuse",
    ]);
    assert_eq!(moved, "/dev/myfuse\n");
    let read_only = berth.output([
        "run",
        "--rm",
        "--net",
        "none",
        "--device",
        "/dev/fuse:/dev/fuse:r",
        "busybox",
        "sh",
        "-c",
        open_for_write,
    ]);
    assert!(
        !stdout(&read_only).contains("opened"),
        "{}",
        describe(&read_only)
    );
    for bad in [
        "/etc/passwd",
        "/dev/nonexistent",
        "relative",
        "/dev/fuse:/x:rwx",
    ] {
        assert_berth_error(
            &berth.output(["run", "--rm", "--device", bad, "busybox", "true"]),
            125,
        );
    }
    berth.assert_clean();
}

#[test]
fn stop_signal_and_stop_timeout() {
    require_root!();
    let berth = Berth::new();
    let trap = "trap 'exit 7' USR1; while true; do sleep 0.1; done";
    berth.run_ok([
        "run", "-d", "--net", "none", "--name", "trapper", "busybox", "sh", "-c", trap,
    ]);
    berth.run_ok(["stop", "-s", "USR1", "trapper"]);
    assert_eq!(berth.inspect("trapper")["exit_code"], 7);
    berth.run_ok(["rm", "trapper"]);

    // The container's own stop signal is used by a plain stop.
    berth.run_ok([
        "run",
        "-d",
        "--net",
        "none",
        "--name",
        "own",
        "--stop-signal",
        "USR1",
        "busybox",
        "sh",
        "-c",
        trap,
    ]);
    berth.run_ok(["stop", "own"]);
    assert_eq!(berth.inspect("own")["exit_code"], 7);
    berth.run_ok(["rm", "own"]);

    // A process that ignores SIGTERM is killed after --stop-timeout.
    berth.run_ok([
        "run",
        "-d",
        "--net",
        "none",
        "--name",
        "stubborn",
        "--stop-timeout",
        "1",
        "busybox",
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 0.1; done",
    ]);
    let started = std::time::Instant::now();
    berth.run_ok(["stop", "stubborn"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(berth.inspect("stubborn")["exit_code"], 137);
    berth.run_ok(["rm", "stubborn"]);
    assert_berth_error(
        &berth.output(["run", "--rm", "--stop-signal", "NOPE", "busybox", "true"]),
        125,
    );
    berth.assert_clean();
}

#[test]
fn rename_wait_port_and_top() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run",
        "-d",
        "--net",
        "none",
        "--name",
        "before",
        "busybox",
        "sh",
        "-c",
        "sleep 1; exit 3",
    ]);
    berth.run_ok(["rename", "before", "after"]);
    assert!(berth.run_ok(["ps", "-a"]).contains("after"));
    assert_berth_error(&berth.output(["rename", "before", "x"]), 125);
    let top = berth.run_ok(["top", "after"]);
    assert!(top.starts_with("UID") && top.contains("sleep 1"), "{top}");
    assert_eq!(berth.run_ok(["wait", "after"]), "3\n");
    assert_berth_error(&berth.output(["top", "after"]), 125);
    berth.run_ok([
        "run", "-d", "--net", "none", "--name", "other", "busybox", "sleep", "60",
    ]);
    assert_berth_error(&berth.output(["rename", "after", "other"]), 125);
    assert_berth_error(&berth.output(["rename", "after", "bad/name"]), 125);
    // --net none publishes nothing.
    assert_eq!(berth.run_ok(["port", "other"]), "");
    assert_berth_error(&berth.output(["port", "other", "80"]), 125);
    // On the (sandboxed) default bridge: the published ports.
    berth.run_ok([
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "18080:80",
        "-p",
        "18053:53/udp",
        "busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(
        berth.run_ok(["port", "web"]),
        "53/udp -> 0.0.0.0:18053\n80/tcp -> 0.0.0.0:18080\n"
    );
    assert_eq!(berth.run_ok(["port", "web", "53/udp"]), "0.0.0.0:18053\n");
    berth.run_ok(["rm", "-f", "after", "other", "web"]);
    berth.assert_clean();
}
