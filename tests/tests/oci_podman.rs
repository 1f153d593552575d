//! podman 4 (through conmon) running containers with the OCI runtime
//! under test: `berth-runtime`, or `$BERTH_OCI_RUNTIME` (e.g.
//! /usr/sbin/runc, /usr/bin/crun).
//!
//! Every scenario runs twice, on a private podman with runc and on one
//! with the runtime under test: each run checks what is right on its own,
//! then the two results must be equal.
//!
//! `cargo build -p cli && cargo test -p berth-e2e --test oci_podman`, as
//! root; the tests may run in parallel (each podman is private).

use std::fmt::Debug;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use berth_e2e::oci::{compare_runtimes, label, output_within, Podman, BUSYBOX_IMAGE};
use berth_e2e::{describe, process_alive, require_root, stdout, wait_until, Pty, COMMAND_TIMEOUT};

/// Long enough for a slow VM; a passing step takes well under a second.
const STEP: Duration = Duration::from_secs(20);

fn compare<T: PartialEq + Debug>(scenario: impl Fn(&Podman) -> T) {
    compare_runtimes(scenario);
}

#[test]
fn run_passes_output_and_exit_codes_through() {
    require_root!();
    compare(|podman| {
        let hi = podman.run(["--rm", BUSYBOX_IMAGE, "echo", "hi"]);
        assert_eq!(
            (hi.status.code(), stdout(&hi).as_str()),
            (Some(0), "hi\n"),
            "{}\n{}",
            label(podman),
            describe(&hi)
        );

        let three = podman.run([
            "--rm",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ]);
        assert_eq!(three.status.code(), Some(3), "{}", describe(&three));
        assert_eq!(stdout(&three), "out\n", "{}", describe(&three));
        assert!(
            berth_e2e::stderr(&three).contains("err\n"),
            "the container's stderr is not on podman's\n{}",
            describe(&three)
        );

        // podman's default seccomp profile is loaded (filter mode 2).
        let confined = podman.run([
            "--rm",
            BUSYBOX_IMAGE,
            "grep",
            "^Seccomp:",
            "/proc/self/status",
        ]);
        assert_eq!(
            stdout(&confined),
            "Seccomp:\t2\n",
            "{}\n{}",
            label(podman),
            describe(&confined)
        );

        // podman maps the runtime's error text to 127 / 126.
        let missing = podman.run(["--rm", BUSYBOX_IMAGE, "no-such-command"]);
        assert_eq!(
            missing.status.code(),
            Some(127),
            "{}: a missing command\n{}",
            label(podman),
            describe(&missing)
        );
        let not_executable = podman.run(["--rm", BUSYBOX_IMAGE, "/etc/passwd"]);
        assert_eq!(
            not_executable.status.code(),
            Some(126),
            "{}: a file that is not executable\n{}",
            label(podman),
            describe(&not_executable)
        );
        (
            stdout(&hi),
            three.status.code(),
            stdout(&three),
            missing.status.code(),
            not_executable.status.code(),
        )
    });
}

/// A shell that says it started, then waits, and exits 0 on SIGTERM.
const POLITE_SERVICE: &str =
    "trap 'echo got-term; exit 0' TERM; echo started; while :; do sleep 0.1; done";

#[test]
fn detached_container_ps_logs_exec_stop_rm() {
    require_root!();
    compare(|podman| {
        let run = podman.run([
            "-d",
            "--name",
            "bg",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            POLITE_SERVICE,
        ]);
        assert!(run.status.success(), "{}", describe(&run));
        let id = stdout(&run).trim().to_owned();
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "run -d printed {id:?}"
        );
        let logs_show =
            |text: &str| wait_until(STEP, || podman.run_ok(["logs", "bg"]).contains(text));
        assert!(
            logs_show("started\n"),
            "{}: no output in logs",
            label(podman)
        );

        let ps = podman.run_ok(["ps", "--format", "{{.Names}} {{.Command}}"]);
        assert!(
            ps.starts_with("bg sh -c "),
            "{}: ps shows {ps:?}",
            label(podman)
        );
        let running = podman.inspect("bg", "{{.State.Status}}");
        assert_eq!(running, "running", "{}", label(podman));
        let pid: i32 = podman
            .inspect("bg", "{{.State.Pid}}")
            .parse()
            .expect("a pid");
        assert!(process_alive(pid), "pid {pid} from inspect is not alive");
        podman.cgroup_parent().assert_holds(pid);

        // exec joins the container: its PID 1 is the service's shell.
        let exec = podman.output([
            "exec",
            "bg",
            "sh",
            "-c",
            "echo from-exec; cat /proc/1/comm; exit 5",
        ]);
        assert_eq!(exec.status.code(), Some(5), "{}", describe(&exec));
        assert_eq!(stdout(&exec), "from-exec\nsh\n", "{}", describe(&exec));

        // stdin reaches an exec'd process (`exec -i`).
        let mut cat = podman.cmd(["exec", "-i", "bg", "cat"]);
        cat.stdin(Stdio::piped());
        let mut child = cat.spawn().expect("spawn podman exec -i");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"piped in\n").expect("write to exec -i");
        drop(stdin);
        let cat = berth_e2e::wait_with_timeout(child, COMMAND_TIMEOUT);
        assert_eq!(stdout(&cat), "piped in\n", "{}", describe(&cat));

        // stop: SIGTERM through the runtime, which the trap turns into exit 0.
        podman.run_ok(["stop", "--time", "10", "bg"]);
        let state = podman.inspect("bg", "{{.State.Status}} {{.State.ExitCode}}");
        assert_eq!(state, "exited 0", "{}: after stop", label(podman));
        assert!(
            logs_show("got-term\n"),
            "{}: SIGTERM not seen",
            label(podman)
        );
        let logs = podman.run_ok(["logs", "bg"]);

        podman.run_ok(["rm", "bg"]);
        let left = podman.run_ok(["ps", "--all", "--quiet"]);
        assert_eq!(left, "", "{}: ps -a after rm", label(podman));
        (ps, running, stdout(&exec), state, logs)
    });
}

#[test]
fn interactive_terminal_through_the_console_socket() {
    require_root!();
    compare(|podman| {
        let mut pty = Pty::new(30, 100);
        let mut session = pty.spawn(podman.run_cmd(["-it", "--rm", BUSYBOX_IMAGE, "sh"]));
        pty.expect("# ", STEP);
        pty.send(b"tty; stty size\r");
        pty.expect("/dev/pts/0", STEP);
        pty.expect("30 100", STEP);
        pty.send(b"echo $((6*7))\r");
        pty.expect("42", STEP);
        pty.send(b"exit 3\r");
        let status = session.wait(STEP);
        assert_eq!(
            status.code(),
            Some(3),
            "{}: exit code of the shell; terminal:\n{}",
            label(podman),
            pty.transcript()
        );
        status.code()
    });
}

#[test]
fn preserved_file_descriptors_reach_the_container() {
    require_root!();
    compare(|podman| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("handed-over");
        fs::write(&path, "handed over\n").expect("write the file");
        let file = fs::File::open(&path).expect("open the file");
        let fd = file.as_raw_fd();
        let mut cmd = podman.run_cmd([
            "--rm",
            "--preserve-fds",
            "1",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            "cat <&3; ls /proc/self/fd",
        ]);
        // SAFETY: dup2 and fcntl only change fd numbers of the forked
        // child, where `file` stays open until exec.
        unsafe {
            cmd.pre_exec(move || {
                let done = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if done < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = output_within(cmd, COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        drop(file);
        // fd 4 is ls's own directory.
        assert_eq!(
            stdout(&out),
            "handed over\n0\n1\n2\n3\n4\n",
            "{}: --preserve-fds 1\n{}",
            label(podman),
            describe(&out)
        );
        stdout(&out)
    });
}

/// busybox allocates one buffer of `bs` bytes.
fn allocate(size: &str) -> [String; 5] {
    [
        "dd".into(),
        "if=/dev/zero".into(),
        "of=/dev/null".into(),
        format!("bs={size}"),
        "count=1".into(),
    ]
}

#[test]
fn memory_limit_kills_an_allocation_over_it() {
    require_root!();
    compare(|podman| {
        // --memory-swap too: with swap on the host podman would allow
        // twice the memory.
        let limited = [
            "--rm",
            "--memory",
            "32m",
            "--memory-swap",
            "32m",
            BUSYBOX_IMAGE,
        ];
        let over = podman.run(limited.iter().map(|s| s.to_string()).chain(allocate("64M")));
        assert_eq!(
            over.status.code(),
            Some(137),
            "{}: 64 MiB in a 32 MiB container\n{}",
            label(podman),
            describe(&over)
        );
        let under = podman.run(limited.iter().map(|s| s.to_string()).chain(allocate("8M")));
        assert_eq!(under.status.code(), Some(0), "{}", describe(&under));
        // The container sees its own limit (v1 and v2 file names).
        let seen = podman.run([
            "--rm",
            "--memory",
            "32m",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null \
             || cat /sys/fs/cgroup/memory.max",
        ]);
        assert_eq!(stdout(&seen), "33554432\n", "{}", describe(&seen));
        (over.status.code(), under.status.code(), stdout(&seen))
    });
}

/// The shell forks `sleep`s in a subshell until fork fails, then counts
/// the processes in the container with builtins only.
const FORK_LOOP: &str = "(for i in $(seq 20); do sleep 30 & done) 2>/dev/null; \
     n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo procs=$n";

#[test]
fn pids_limit_caps_a_fork_loop() {
    require_root!();
    compare(|podman| {
        let procs = |limit: &str| -> u32 {
            let out = podman.run([
                "--rm",
                "--pids-limit",
                limit,
                BUSYBOX_IMAGE,
                "sh",
                "-c",
                FORK_LOOP,
            ]);
            assert!(out.status.success(), "{}", describe(&out));
            stdout(&out)
                .trim()
                .strip_prefix("procs=")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no count\n{}", describe(&out)))
        };
        let capped = procs("10");
        assert!(
            capped <= 10,
            "{}: {capped} processes under --pids-limit 10",
            label(podman)
        );
        let roomy = procs("100");
        assert!(
            roomy > 20,
            "{}: only {roomy} processes under --pids-limit 100",
            label(podman)
        );
        (capped <= 10, roomy > 20)
    });
}

#[test]
fn bind_mounted_host_directory_round_trip() {
    require_root!();
    compare(|podman| {
        let host = tempfile::tempdir().expect("host directory");
        fs::write(host.path().join("in"), "from the host\n").expect("write in");
        let volume = format!("{}:/data", host.path().display());
        let out = podman.run([
            "--rm",
            "-v",
            &volume,
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            "cat /data/in && echo from the container > /data/out",
        ]);
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(stdout(&out), "from the host\n", "{}", describe(&out));
        let back = fs::read_to_string(host.path().join("out")).expect("read out");
        assert_eq!(back, "from the container\n", "{}", label(podman));
        (stdout(&out), back)
    });
}

/// The interface names `ip -o link` shows inside a container.
fn interfaces(podman: &Podman, network: Option<&str>) -> Vec<String> {
    let mut args = vec!["--rm"];
    if let Some(network) = network {
        args.extend(["--network", network]);
    }
    args.extend([BUSYBOX_IMAGE, "ip", "-o", "link"]);
    let out = podman.run(&args);
    assert!(out.status.success(), "{}", describe(&out));
    stdout(&out)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|name| name.trim().split('@').next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn network_none_and_the_default_bridge() {
    require_root!();
    compare(|podman| {
        let none = interfaces(podman, Some("none"));
        assert_eq!(none, ["lo"], "{}: --network none", label(podman));
        let bridged = interfaces(podman, None);
        assert_eq!(
            bridged,
            ["lo", "eth0"],
            "{}: default network",
            label(podman)
        );

        // eth0 has an address and reaches the bridge on podman's side
        // (inside this test's network namespace).
        let out = podman.run([
            "--rm",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            "ip -o -4 addr show eth0 | grep -q ' inet 10\\.88\\.' && \
             ping -c 1 -W 5 10.88.0.1 >/dev/null && echo reached",
        ]);
        assert_eq!(
            stdout(&out),
            "reached\n",
            "{}: eth0\n{}",
            label(podman),
            describe(&out)
        );
        (none, bridged, stdout(&out))
    });
}

#[test]
fn pause_freezes_the_container_until_unpause() {
    require_root!();
    compare(|podman| {
        let host = tempfile::tempdir().expect("host directory");
        let volume = format!("{}:/data", host.path().display());
        let counter = "i=0; while :; do i=$((i+1)); echo $i > /data/n.tmp; \
                       mv /data/n.tmp /data/n; sleep 0.05; done";
        let run = podman.run([
            "-d",
            "--name",
            "ticker",
            "-v",
            &volume,
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            counter,
        ]);
        assert!(run.status.success(), "{}", describe(&run));
        let count = || -> u64 {
            fs::read_to_string(host.path().join("n"))
                .ok()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        };
        assert!(wait_until(STEP, || count() > 0), "the counter never ran");

        podman.run_ok(["pause", "ticker"]);
        let paused = podman.inspect("ticker", "{{.State.Status}}");
        assert_eq!(paused, "paused", "{}", label(podman));
        let frozen_at = count();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            count(),
            frozen_at,
            "{}: the counter moved while paused",
            label(podman)
        );

        podman.run_ok(["unpause", "ticker"]);
        let running = podman.inspect("ticker", "{{.State.Status}}");
        assert_eq!(running, "running", "{}", label(podman));
        assert!(
            wait_until(STEP, || count() > frozen_at),
            "{}: the counter did not move after unpause",
            label(podman)
        );
        podman.run_ok(["rm", "--force", "--time", "0", "ticker"]);
        (paused, running)
    });
}

#[test]
fn user_option_sets_the_ids() {
    require_root!();
    compare(|podman| {
        let out = podman.run(["--rm", "--user", "1000:1000", BUSYBOX_IMAGE, "id"]);
        assert!(out.status.success(), "{}", describe(&out));
        let id = stdout(&out);
        assert!(
            id.starts_with("uid=1000") && id.contains(" gid=1000"),
            "{}: id printed {id:?}",
            label(podman)
        );
        let root = podman.run(["--rm", BUSYBOX_IMAGE, "id", "-u"]);
        assert_eq!(stdout(&root), "0\n", "{}", describe(&root));
        (id, stdout(&root))
    });
}

#[test]
fn read_only_root_with_writable_tmp() {
    require_root!();
    compare(|podman| {
        let out = podman.run([
            "--rm",
            "--read-only",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            "touch /x 2>&1; echo rc=$?; touch /tmp/y && echo tmp-writable",
        ]);
        let text = stdout(&out);
        assert!(
            text.contains("Read-only file system")
                && text.contains("rc=1\n")
                && text.ends_with("tmp-writable\n"),
            "{}: --read-only\n{}",
            label(podman),
            describe(&out)
        );
        let writable = podman.run(["--rm", BUSYBOX_IMAGE, "touch", "/x"]);
        assert!(writable.status.success(), "{}", describe(&writable));
        text
    });
}

/// The capability lines of /proc/self/status in a container.
fn capabilities(podman: &Podman, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--rm"];
    args.extend(extra);
    args.extend([BUSYBOX_IMAGE, "grep", "^Cap", "/proc/self/status"]);
    let out = podman.run(&args);
    assert!(out.status.success(), "{}", describe(&out));
    stdout(&out).lines().map(str::to_owned).collect()
}

#[test]
fn cap_drop_all_leaves_no_capabilities() {
    require_root!();
    compare(|podman| {
        let none = capabilities(podman, &["--cap-drop", "ALL"]);
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            let line = none.iter().find(|l| l.starts_with(set));
            assert_eq!(
                line.map(|l| l.split_whitespace().nth(1).unwrap_or_default()),
                Some("0000000000000000"),
                "{}: {set} with --cap-drop ALL: {none:?}",
                label(podman)
            );
        }
        // podman's default set: some, but not all (compared with runc's).
        let default = capabilities(podman, &[]);
        let effective = default.iter().find(|l| l.starts_with("CapEff")).cloned();
        assert!(
            effective
                .as_deref()
                .is_some_and(|l| !l.ends_with("0000000000000000")),
            "{}: no default capabilities: {default:?}",
            label(podman)
        );
        (none, default)
    });
}

/// podman's `container checkpoint` and `container restore` driving the
/// runtime's runc-style `checkpoint` and `restore` (CRIU): a counter goes
/// on from where it was. Only where criu works (the VMs).
#[test]
fn podman_checkpoint_and_restore_continue_a_counter() {
    require_root!();
    let check = std::process::Command::new("criu").arg("check").output();
    if !check.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: criu does not work on this kernel");
        return;
    }
    compare(|podman| {
        let numbers = || -> Vec<u64> {
            podman
                .run_ok(["logs", "ck"])
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        };
        let run = podman.run([
            "-d",
            "--network",
            "none",
            "--name",
            "ck",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done",
        ]);
        assert!(run.status.success(), "{}", describe(&run));
        assert!(
            wait_until(STEP, || numbers().len() >= 5),
            "{}: no count",
            label(podman)
        );
        podman.run_ok(["container", "checkpoint", "ck"]);
        let checkpointed = podman.inspect("ck", "{{.State.Status}}");
        let before = numbers();
        podman.run_ok(["container", "restore", "ck"]);
        let restored = podman.inspect("ck", "{{.State.Status}}");
        assert!(
            wait_until(STEP, || numbers().len() >= before.len() + 5),
            "{}: the restored counter does not count",
            label(podman)
        );
        let after = numbers();
        let last = *before.last().unwrap();
        let continued =
            after.starts_with(&before) && after[before.len()..].iter().all(|n| *n > last);
        assert!(
            continued,
            "{}: before {before:?}, after {after:?}",
            label(podman)
        );
        podman.run_ok(["rm", "-f", "ck"]);
        (checkpointed, restored, continued)
    });
}
