//! A container's life beyond one run: create/start/restart, restart
//! policies, attach, and --init.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_e2e::{assert_berth_error, require_root, stdout, wait_until, Berth, Pty};

const STEP: Duration = Duration::from_secs(20);

fn status(berth: &Berth, name: &str) -> String {
    berth.inspect(name)["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn pid_of(berth: &Berth, name: &str) -> i64 {
    berth.inspect(name)["pid"].as_i64().unwrap_or(0)
}

#[test]
fn create_then_start_keeps_the_write_layer_name_and_id() {
    require_root!();
    let berth = Berth::new();
    let id = berth
        .run_ok([
            "create",
            "--net",
            "none",
            "--name",
            "twice",
            "busybox",
            "sh",
            "-c",
            "echo run >> /runs; cat /runs; exit 3",
        ])
        .trim()
        .to_owned();
    assert_eq!(id.len(), 64, "create prints the id: {id}");
    assert_eq!(status(&berth, "twice"), "created");
    let ps = berth.run_ok(["ps", "-a"]);
    assert!(ps.contains("Created"), "{ps}");

    let first = berth.output(["start", "-a", "twice"]);
    assert_eq!(
        first.status.code(),
        Some(3),
        "start -a passes the exit code on"
    );
    assert_eq!(stdout(&first), "run\n");
    // Started again: the same write layer, so the file has two lines.
    let second = berth.output(["start", "-a", "twice"]);
    assert_eq!(second.status.code(), Some(3));
    assert_eq!(stdout(&second), "run\nrun\n");
    assert_eq!(berth.inspect("twice")["id"], id.as_str());

    // In the background, start prints the name and the log grows.
    assert_eq!(berth.run_ok(["start", "twice"]).trim(), "twice");
    assert!(wait_until(STEP, || status(&berth, "twice") == "exited"));
    let logs = berth.run_ok(["logs", "twice"]);
    assert!(logs.ends_with("run\nrun\nrun\n"), "{logs}");
    assert_eq!(berth.inspect("twice")["exit_code"], 3);
    berth.run_ok(["rm", "twice"]);
    berth.assert_clean();
}

#[test]
fn start_of_a_stopped_container_on_the_bridge_gets_its_ports_again() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run", "-d", "--name", "web", "-p", "18089:80", "busybox", "httpd", "-f", "-p", "80",
    ]);
    berth.run_ok(["stop", "-t", "1", "web"]);
    assert_eq!(status(&berth, "web"), "exited");
    berth.run_ok(["start", "web"]);
    assert_eq!(status(&berth, "web"), "running");
    let ports = berth.run_ok(["port", "web"]);
    assert!(ports.contains("18089"), "{ports}");
    berth.run_ok(["restart", "-t", "1", "web"]);
    assert_eq!(status(&berth, "web"), "running");
    berth.run_ok(["rm", "-f", "web"]);
    berth.assert_clean();
}

#[test]
fn restart_policy_retries_with_growing_delays_then_stops() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run",
        "-d",
        "--net",
        "none",
        "--name",
        "flaky",
        "--restart",
        "on-failure:3",
        "busybox",
        "sh",
        "-c",
        "cut -d' ' -f1 /proc/uptime; exit 1",
    ]);
    assert!(
        wait_until(STEP, || {
            let record = berth.inspect("flaky");
            record["status"] == "exited" && record["restarting"] == false
        }),
        "{}",
        berth.inspect("flaky")
    );
    let record = berth.inspect("flaky");
    assert_eq!(record["restart_count"], 3);
    assert_eq!(record["exit_code"], 1);
    let logs = berth.run_ok(["logs", "flaky"]);
    let times: Vec<f64> = logs.lines().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(times.len(), 4, "one run and three restarts: {logs}");
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // docker's backoff: 100 ms, then doubled.
    assert!(gaps[0] >= 0.09, "{gaps:?}");
    assert!(
        gaps[1] > gaps[0] && gaps[2] > gaps[1] && gaps[2] >= 0.39,
        "delays grow: {gaps:?}"
    );
    // It stays stopped.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(berth.inspect("flaky")["restart_count"], 3);
    berth.run_ok(["rm", "flaky"]);
    berth.assert_clean();
}

#[test]
fn always_restarts_until_stopped_and_unless_stopped_stays_stopped() {
    require_root!();
    let berth = Berth::new();
    for (name, policy) in [("forever", "always"), ("unless", "unless-stopped")] {
        berth.run_ok([
            "run",
            "-d",
            "--net",
            "none",
            "--name",
            name,
            "--restart",
            policy,
            "busybox",
            "sh",
            "-c",
            "sleep 0.2",
        ]);
    }
    // A clean exit is restarted too.
    assert!(wait_until(STEP, || berth.inspect("forever")
        ["restart_count"]
        .as_u64()
        .is_some_and(|n| n >= 2)));
    let ps = berth.run_ok(["ps", "-a"]);
    assert!(
        ps.contains("Up") || ps.contains("Restarting"),
        "a restarting container shows as such: {ps}"
    );
    for name in ["forever", "unless"] {
        berth.run_ok(["stop", "-t", "1", name]);
    }
    std::thread::sleep(Duration::from_secs(1));
    for name in ["forever", "unless"] {
        let record = berth.inspect(name);
        assert_eq!(record["status"], "exited", "{name} stays stopped");
        assert_eq!(record["restarting"], false);
    }
    // What a boot does: start what the policies want running. A stopped
    // `always` container comes back; a stopped `unless-stopped` one not.
    let started = berth.run_ok(["start", "--all"]);
    assert_eq!(started.trim(), "forever", "{started}");
    assert_eq!(status(&berth, "forever"), "running");
    assert_eq!(status(&berth, "unless"), "exited");
    let bad = berth.output(["start", "--all", "--filter", "restart=sometimes"]);
    assert_berth_error(&bad, 125);
    berth.run_ok(["rm", "-f", "forever", "unless"]);
    berth.assert_clean();
}

#[test]
fn a_container_whose_monitor_died_comes_back_with_start_all() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run",
        "-d",
        "--net",
        "none",
        "--name",
        "survivor",
        "--restart",
        "unless-stopped",
        "busybox",
        "sleep",
        "100",
    ]);
    // A reboot, as far as the record can tell: every process is gone.
    let record = berth.inspect("survivor");
    for key in ["monitor_pid", "pid"] {
        let pid = record[key].as_i64().expect(key) as i32;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(wait_until(STEP, || status(&berth, "survivor") == "exited"));
    let started = berth.run_ok(["start", "--all", "--filter", "restart=unless-stopped"]);
    assert_eq!(started.trim(), "survivor");
    assert_eq!(status(&berth, "survivor"), "running");
    berth.run_ok(["rm", "-f", "survivor"]);
    berth.assert_clean();
}

#[test]
fn restart_gives_a_new_process_in_the_same_container() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run",
        "-d",
        "--net",
        "none",
        "--name",
        "again",
        "busybox",
        "sh",
        "-c",
        "echo up >> /ups; trap 'exit 0' TERM; while true; do sleep 0.1; done",
    ]);
    let before = pid_of(&berth, "again");
    assert_eq!(
        berth.run_ok(["restart", "-t", "5", "again"]).trim(),
        "again"
    );
    let after = pid_of(&berth, "again");
    assert!(after > 0 && after != before, "{before} -> {after}");
    let count = berth.run_ok(["exec", "again", "wc", "-l", "/ups"]);
    assert!(count.trim_start().starts_with('2'), "{count}");
    berth.run_ok(["rm", "-f", "again"]);
    berth.assert_clean();
}

#[test]
fn attach_round_trip_through_a_real_pty() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run", "-d", "-it", "--net", "none", "--name", "shell", "busybox", "sh",
    ]);

    let mut pty = Pty::new(30, 90);
    let mut client = pty.spawn(berth.cmd(["attach", "shell"]));
    pty.send(b"echo hel''lo; stty size\r");
    pty.expect("hello", STEP);
    pty.expect("30 90", STEP);
    // Ctrl-P Ctrl-Q leaves the container running.
    pty.send(b"\x10\x11");
    pty.expect("read escape sequence", STEP);
    assert_eq!(
        client.wait(STEP).code(),
        Some(1),
        "docker's code for a detach"
    );
    assert_eq!(status(&berth, "shell"), "running");

    let pty = Pty::new(30, 90);
    let mut client = pty.spawn(berth.cmd(["attach", "--detach-keys", "ctrl-a,d", "shell"]));
    pty.send(b"exit 4\r");
    assert_eq!(
        client.wait(STEP).code(),
        Some(4),
        "attach passes the exit code on"
    );
    assert_eq!(status(&berth, "shell"), "exited");
    berth.run_ok(["rm", "shell"]);
    berth.assert_clean();
}

#[test]
fn attach_without_a_terminal_relays_input_and_output() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run",
        "-d",
        "-i",
        "--net",
        "none",
        "--name",
        "reader",
        "busybox",
        "sh",
        "-c",
        "read line; echo got $line; echo oops >&2; exit 2",
    ]);
    let mut client = berth
        .cmd(["attach", "reader"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn attach");
    client
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hi\n")
        .expect("write");
    let out = berth_e2e::wait_with_timeout(client, STEP);
    assert_eq!(out.status.code(), Some(2), "{}", berth_e2e::describe(&out));
    assert_eq!(stdout(&out), "got hi\n");
    assert!(berth_e2e::stderr(&out).contains("oops"));
    let not_running = berth.output(["attach", "reader"]);
    assert_berth_error(&not_running, 125);
    berth.run_ok(["rm", "reader"]);
    berth.assert_clean();
}

/// Zombies left in the container: processes in state Z.
fn zombies(berth: &Berth, name: &str) -> usize {
    let out = berth.run_ok([
        "exec",
        name,
        "sh",
        "-c",
        "grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l",
    ]);
    out.trim().parse().expect("a count")
}

#[test]
fn init_reaps_zombies_and_forwards_signals() {
    require_root!();
    let berth = Berth::new();
    // An orphan re-parented to PID 1 and exiting there: `sleep` as PID 1
    // never waits for it, the init does.
    let orphan = "sh -c 'sleep 0.2 & exit'; exec sleep 100";
    for (name, init) in [("plain", false), ("reaped", true)] {
        let mut args = vec!["run", "-d", "--net", "none", "--name", name];
        if init {
            args.push("--init");
        }
        args.extend(["busybox", "sh", "-c", orphan]);
        berth.run_ok(args);
    }
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        zombies(&berth, "plain"),
        1,
        "a plain PID 1 leaves the zombie"
    );
    assert_eq!(zombies(&berth, "reaped"), 0, "--init reaps it");
    let pid1 = berth.run_ok(["exec", "reaped", "cat", "/proc/1/cmdline"]);
    assert_eq!(
        pid1.trim_end_matches('\0'),
        "init",
        "the host's command line is not shown"
    );

    // SIGTERM reaches `sleep` through the init (a PID 1 `sleep` would
    // ignore it and wait out the grace period).
    let started = Instant::now();
    berth.run_ok(["stop", "-t", "20", "reaped"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(berth.inspect("reaped")["exit_code"], 143);
    berth.run_ok(["rm", "-f", "plain", "reaped"]);
    berth.assert_clean();
}

#[test]
fn bad_lifecycle_input_is_one_line_and_creates_nothing() {
    require_root!();
    let berth = Berth::new();
    for args in [
        vec!["create", "--restart", "sometimes", "busybox", "true"],
        vec![
            "run",
            "-d",
            "--restart",
            "always",
            "--rm",
            "busybox",
            "true",
        ],
        vec!["run", "--restart", "always", "busybox", "true"],
        vec!["create", "--restart", "on-failure:x", "busybox", "true"],
    ] {
        let out = berth.output(&args);
        let message = assert_berth_error(&out, 125);
        assert!(message.contains("restart"), "{args:?}: {message}");
    }
    assert!(berth.container_ids().is_empty());
    for args in [
        vec!["start", "nosuch"],
        vec!["attach", "nosuch"],
        vec!["restart", "nosuch"],
        vec!["attach", "--detach-keys", "alt-x", "nosuch"],
    ] {
        let out = berth.output(&args);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(berth_e2e::stderr(&out).lines().count(), 1, "{args:?}");
    }
    berth.assert_clean();
}
