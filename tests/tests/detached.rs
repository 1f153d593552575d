//! Detached containers and their lifecycle (issue 5): run -d and its
//! monitor, ps, logs, exec, stop, kill, rm, volumes, commit, and the
//! truth told after crashes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_e2e::{
    assert_berth_error, assert_target_error, cgroup_dirs, describe, expect_line,
    find_cgroups_named, is_full_id, kill, line_reader, process_alive, ps_rows, require_root,
    stderr, stdout, wait_until, Berth, Pty,
};

/// Long enough for a slow VM; passing steps take milliseconds.
const STEP: Duration = Duration::from_secs(20);

/// A PID 1 that exits 0 at once on SIGTERM (so `stop` is quick).
const POLITE: [&str; 3] = [
    "sh",
    "-c",
    "trap 'exit 0' TERM; while :; do sleep 0.05; done",
];

/// `-v DIR:/gate` plus a command that waits for /gate/go, then runs `then`.
fn gated(gate: &Path, then: &str) -> Vec<String> {
    vec![
        "-v".into(),
        format!("{}:/gate", gate.display()),
        "busybox".into(),
        "sh".into(),
        "-c".into(),
        format!("while [ ! -e /gate/go ]; do sleep 0.02; done; {then}"),
    ]
}

fn open_gate(gate: &Path, name: &str) {
    fs::write(gate.join(name), "").expect("open the gate");
}

fn pid_of(record: &serde_json::Value, field: &str) -> i32 {
    record[field]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or_else(|| panic!("no {field} in the record:\n{record:#}"))
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

fn assert_dead_within(pid: i32, what: &str) {
    assert!(
        wait_until(STEP, || !process_alive(pid)),
        "{what} (pid {pid}) is still alive"
    );
}

/// The NAMES column (docker's last) of a `ps` table.
fn names_in(table: &str) -> Vec<String> {
    ps_rows(table)
        .into_iter()
        .filter_map(|row| row.last().cloned())
        .collect()
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------
// run -d, the monitor, ps
// ---------------------------------------------------------------------

#[test]
fn run_d_returns_at_once_and_the_exit_code_is_recorded_after_the_cli_has_gone() {
    require_root!();
    let berth = Berth::new();
    let gate = tempfile::tempdir().expect("gate");
    let mut args = vec!["--name".to_owned(), "seven".to_owned()];
    args.extend(gated(gate.path(), "sleep 0.3; exit 7"));
    // The container waits for the gate, so `run -d` returning at all
    // shows that it does not wait for the container.
    let id = berth.run_detached(&args);

    let record = berth.inspect("seven");
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["status"], "running", "{record:#}");
    let pid = pid_of(&record, "pid");
    let monitor = pid_of(&record, "monitor_pid");
    assert!(process_alive(pid) && process_alive(monitor), "{record:#}");
    assert_eq!(
        parent_of(pid),
        Some(monitor),
        "the monitor is not the parent of the container's PID 1"
    );
    let status = berth.ps_status(false, "seven").expect("listed by ps");
    assert!(status.starts_with("Up "), "ps status: {status}");

    open_gate(gate.path(), "go");
    let record = berth.wait_for_status("seven", "exited", STEP);
    assert_eq!(record["exit_code"], 7, "{record:#}");
    assert_eq!(record["oom_killed"], false, "{record:#}");
    assert!(!record["finished_at"].is_null(), "{record:#}");
    let status = berth.ps_status(true, "seven").expect("listed by ps -a");
    assert!(
        status.starts_with("Exited (7) ") && status.ends_with(" ago"),
        "ps -a status: {status}"
    );
    assert_eq!(berth.ps_status(false, "seven"), None, "ps lists it");
    // The monitor leaves with its container.
    assert_dead_within(monitor, "the monitor after its container exited");
    assert_dead_within(pid, "PID 1");
    berth.assert_clean();
}

/// `Name:   N kB` of /proc/PID/smaps_rollup.
fn smaps_kib(pid: i32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in smaps_rollup of {pid}:\n{text}"))
}

#[test]
fn a_detached_container_is_watched_by_the_small_monitor_which_hands_its_end_back() {
    require_root!();
    let berth = Berth::new();
    let id = berth.run_detached([
        "--name",
        "watched",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; trap 'exit 4' TERM; while :; do sleep 0.05; done",
    ]);
    let record = berth.inspect("watched");
    let pid = pid_of(&record, "pid");
    let monitor = pid_of(&record, "monitor_pid");
    let small = fs::canonicalize(berth.bin())
        .expect("the berth binary")
        .with_file_name("berth-monitor");
    assert!(
        wait_until(STEP, || fs::read_link(format!("/proc/{monitor}/exe"))
            .is_ok_and(|exe| exe == small)),
        "the monitor {monitor} does not run {}",
        small.display()
    );
    // Same process, so still the parent of PID 1 (its parent-death signal
    // and waitpid depend on it).
    assert_eq!(parent_of(pid), Some(monitor));
    // What only this monitor pays for (heap, stack, relocated data; its
    // code is shared with every other monitor): far less than a fork of
    // the whole CLI (about 870 KiB).
    let private = smaps_kib(monitor, "Private_Dirty");
    assert!(private < 256, "the monitor holds {private} KiB of its own");
    assert!(
        wait_until(STEP, || fs::read_to_string(berth.log_file(&id))
            .is_ok_and(|log| log.contains("out") && log.contains("err"))),
        "the small monitor did not log the output"
    );

    // The hand-back entry is refused to anyone but the container's monitor.
    let root = berth.root().display().to_string();
    let mut forged = std::process::Command::new(berth.bin());
    forged.args([
        "__monitor-finish",
        "--root",
        &root,
        "--id",
        &id,
        "--exited",
        "0",
        "--ran-ms",
        "1",
        "--restart-delay-ms",
        "100",
    ]);
    let output = forged.output().expect("run berth");
    assert_berth_error(&output, 125);
    assert_eq!(berth.status_of("watched"), "running");

    berth.run_ok(["stop", "watched"]);
    let record = berth.inspect("watched");
    assert_eq!(record["status"], "exited", "{record:#}");
    assert_eq!(record["exit_code"], 4, "{record:#}");
    assert_dead_within(monitor, "the monitor after its container exited");
    berth.run_ok(["rm", "watched"]);
    berth.assert_clean();
}

#[test]
fn a_short_detached_container_records_its_exit_code() {
    require_root!();
    let berth = Berth::new();
    let started = Instant::now();
    berth.run_detached([
        "--name",
        "quick",
        "busybox",
        "sh",
        "-c",
        "sleep 0.3; exit 7",
    ]);
    let took = started.elapsed();
    let record = berth.wait_for_status("quick", "exited", STEP);
    assert_eq!(record["exit_code"], 7, "{record:#}");
    eprintln!("run -d took {took:?}");
    let status = berth.ps_status(true, "quick").expect("listed by ps -a");
    assert!(status.starts_with("Exited (7) "), "ps -a status: {status}");
    berth.assert_clean();
}

#[test]
fn ps_lists_running_containers_and_a_lists_all() {
    require_root!();
    let berth = Berth::new();
    let up = berth.run_detached(["--name", "up", "busybox", "sleep", "100"]);
    let out = berth.output(["run", "--name", "done", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let done = berth.id_of("done");

    let ps = berth.run_ok(["ps"]);
    assert_eq!(names_in(&ps), ["up"], "ps:\n{ps}");
    let status = berth.ps_status(false, "up").expect("up");
    assert!(status.starts_with("Up "), "{status}");

    let all = berth.run_ok(["ps", "-a"]);
    let mut names = names_in(&all);
    names.sort();
    assert_eq!(names, ["done", "up"], "ps -a:\n{all}");
    let status = berth.ps_status(true, "done").expect("done");
    assert!(
        status.starts_with("Exited (3) ") && status.ends_with(" ago"),
        "{status}"
    );

    assert_eq!(lines(&berth.run_ok(["ps", "-q"])), [up[..12].to_owned()]);
    let mut ids = lines(&berth.run_ok(["ps", "-a", "-q"]));
    ids.sort();
    let mut want = vec![up[..12].to_owned(), done[..12].to_owned()];
    want.sort();
    assert_eq!(ids, want);
    berth.assert_clean();
}

#[test]
fn ps_tells_the_truth_after_the_monitor_is_sigkilled() {
    require_root!();
    let berth = Berth::new();
    let id = berth.run_detached(["--name", "orphan", "busybox", "sleep", "100"]);
    let record = berth.inspect("orphan");
    let pid = pid_of(&record, "pid");
    let monitor = pid_of(&record, "monitor_pid");
    let dirs = cgroup_dirs(&record);
    assert!(kill(monitor, libc::SIGKILL), "kill -9 the monitor");
    assert_dead_within(pid, "PID 1 after its monitor was killed");

    assert_eq!(
        berth.ps_status(false, "orphan"),
        None,
        "ps lists a dead container"
    );
    let status = berth.ps_status(true, "orphan").expect("ps -a lists it");
    assert!(status.starts_with("Exited ("), "ps -a status: {status}");
    assert_ne!(berth.status_of("orphan"), "running");

    let out = berth.run_ok(["rm", "-f", "orphan"]);
    assert_eq!(lines(&out), ["orphan"]);
    assert!(berth.container_ids().is_empty());
    let left: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
    assert!(find_cgroups_named(&[id]).is_empty());
    berth.assert_clean();
}

#[test]
fn ps_tells_the_truth_after_a_foreground_run_is_sigkilled() {
    require_root!();
    let berth = Berth::new();
    let mut run = berth.spawn(["run", "--name", "fg", "busybox", "sleep", "100"]);
    assert!(
        wait_until(STEP, || {
            berth.output(["inspect", "fg"]).status.success() && berth.status_of("fg") == "running"
        }),
        "the foreground container never ran"
    );
    let id = berth.id_of("fg");
    let record = berth.inspect("fg");
    let pid = pid_of(&record, "pid");
    let dirs = cgroup_dirs(&record);
    run.0.kill().expect("kill -9 berth run");
    run.wait(STEP);
    assert_dead_within(pid, "PID 1 after `berth run` was killed");

    assert_eq!(
        berth.ps_status(false, "fg"),
        None,
        "ps lists a dead container"
    );
    let status = berth.ps_status(true, "fg").expect("ps -a lists it");
    // The real end: the kernel killed PID 1 when its parent died.
    assert!(status.starts_with("Exited (137)"), "ps -a status: {status}");
    // What it held is given back as soon as berth notices, not at rm.
    let left: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups left after ps: {left:?}");

    berth.run_ok(["rm", "-f", "fg"]);
    assert!(find_cgroups_named(&[id]).is_empty());
    berth.assert_clean();
}

#[test]
fn a_sigkilled_foreground_run_rm_is_still_removed() {
    require_root!();
    let berth = Berth::new();
    let mut run = berth.spawn(["run", "--rm", "--name", "gone", "busybox", "sleep", "100"]);
    assert!(
        wait_until(STEP, || berth.output(["inspect", "gone"]).status.success()
            && berth.status_of("gone") == "running"),
        "the foreground container never ran"
    );
    let id = berth.id_of("gone");
    let record = berth.inspect("gone");
    let pid = pid_of(&record, "pid");
    let dirs = cgroup_dirs(&record);
    run.0.kill().expect("kill -9 berth run --rm");
    run.wait(STEP);
    assert_dead_within(pid, "PID 1 after `berth run --rm` was killed");
    // Its name is free for the next run at once.
    berth.run_ok(["run", "--rm", "--name", "gone", "busybox", "true"]);
    assert_eq!(berth.ps_status(true, "gone"), None, "--rm is carried out");
    assert!(berth.container_ids().is_empty());
    let left: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
    assert!(find_cgroups_named(&[id]).is_empty());
    berth.assert_clean();
}

#[test]
fn kill_9_of_run_d_at_any_moment_leaves_nothing_rm_f_cannot_clean() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["run", "--rm", "busybox", "true"]);
    // Our own cgroup parent, so that a cgroup of a half-made container
    // can be found even when no record names it.
    let parent = format!("berth-e2e-kill9-{}", std::process::id());
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80] {
        let mut run = berth.spawn([
            "run",
            "-d",
            "--cgroup-parent",
            &parent,
            "busybox",
            "sleep",
            "100",
        ]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = run.0.kill();
        run.wait(STEP);
        // Whatever ps -a says must be true.
        for short in berth.container_ids() {
            let record = berth.inspect(&short);
            berth.id_of(&short);
            if record["status"] == "running" {
                let pid = pid_of(&record, "pid");
                assert!(
                    process_alive(pid),
                    "kill -9 after {delay_ms} ms: ps says running, pid {pid} is dead\n{record:#}"
                );
            }
        }
    }
    let ids = berth.container_ids();
    if !ids.is_empty() {
        let mut args = vec!["rm".to_owned(), "-f".to_owned()];
        args.extend(ids);
        berth.run_ok(&args);
    }
    assert!(berth.container_ids().is_empty());
    // Only our (empty) parent directories may remain.
    let mut left = Vec::new();
    wait_until(Duration::from_secs(5), || {
        left = find_cgroups_named(std::slice::from_ref(&parent))
            .into_iter()
            .filter(|p| has_subdirs(p))
            .collect();
        left.is_empty()
    });
    for dir in find_cgroups_named(std::slice::from_ref(&parent)) {
        let _ = fs::remove_dir(&dir);
    }
    assert!(left.is_empty(), "cgroups left under {parent}: {left:?}");
    berth.assert_clean();
}

fn has_subdirs(dir: &Path) -> bool {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
}

// ---------------------------------------------------------------------
// logs
// ---------------------------------------------------------------------

const OUT_AND_ERR: &str = "echo out1; echo err1 >&2; echo out2";

fn assert_logs_split(berth: &Berth, name: &str) {
    let out = berth.output(["logs", name]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "out1\nout2\n", "logs {name}: stdout");
    assert_eq!(stderr(&out), "err1\n", "logs {name}: stderr");
}

#[test]
fn logs_of_foreground_and_detached_containers_keep_stdout_and_stderr_apart() {
    require_root!();
    let berth = Berth::new();
    let out = berth.output(["run", "--name", "fore", "busybox", "sh", "-c", OUT_AND_ERR]);
    assert_eq!(stdout(&out), "out1\nout2\n", "{}", describe(&out));
    assert_eq!(stderr(&out), "err1\n", "{}", describe(&out));
    assert_logs_split(&berth, "fore");
    let fore = berth.id_of("fore");
    let log = fs::read_to_string(berth.log_file(&fore)).expect("container.log");
    assert!(
        log.contains("\"stderr\"") && log.contains("\"stdout\""),
        "container.log:\n{log}"
    );

    berth.run_detached(["--name", "back", "busybox", "sh", "-c", OUT_AND_ERR]);
    berth.wait_for_status("back", "exited", STEP);
    assert_logs_split(&berth, "back");

    berth.run_ok([
        "run",
        "--name",
        "five",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo l$i; done",
    ]);
    assert_eq!(berth.run_ok(["logs", "--tail", "2", "five"]), "l4\nl5\n");
    assert_eq!(berth.run_ok(["logs", "five"]), "l1\nl2\nl3\nl4\nl5\n");
    berth.assert_clean();
}

#[test]
fn logs_f_follows_new_output_and_ends_with_the_container() {
    require_root!();
    let berth = Berth::new();
    let gate = tempfile::tempdir().expect("gate");
    let mut args = vec!["--name".to_owned(), "talker".to_owned()];
    args.extend(gated(
        gate.path(),
        "echo second; while [ ! -e /gate/end ]; do sleep 0.02; done; echo third",
    ));
    // Replace the plain wait with one that prints first.
    let script = args.last_mut().expect("script");
    *script = format!("echo first; {script}");
    berth.run_detached(&args);

    let mut follow = berth.spawn(["logs", "-f", "talker"]);
    let out = line_reader(follow.0.stdout.take().expect("piped stdout"));
    expect_line(&out, "first", STEP);
    open_gate(gate.path(), "go");
    expect_line(&out, "second", STEP);
    assert_eq!(berth.status_of("talker"), "running");
    assert!(
        follow.0.try_wait().expect("waitpid").is_none(),
        "logs -f ended while the container runs"
    );
    open_gate(gate.path(), "end");
    expect_line(&out, "third", STEP);
    let status = follow.wait(STEP);
    assert!(status.success(), "logs -f: {status}");
    berth.assert_clean();
}

#[test]
fn a_chatty_containers_log_stays_bounded() {
    require_root!();
    let berth = Berth::new();
    let chatter = "i=0; while [ $i -lt 3000 ]; do echo \"chatty line $i with some padding\"; \
                   i=$((i+1)); done";
    berth.run_ok([
        "run",
        "--name",
        "capped",
        "--log-opt",
        "max-size=10k",
        "busybox",
        "sh",
        "-c",
        chatter,
    ]);
    let id = berth.id_of("capped");
    let dir = berth.root().join("containers").join(&id);
    let total: u64 = fs::read_dir(&dir)
        .expect("container dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("container.log"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(
        total > 0 && total <= 12 * 1024,
        "max-size=10k, but the log files hold {total} bytes"
    );
    // The newest output is what is kept.
    let logs = berth.run_ok(["logs", "capped"]);
    assert_eq!(
        logs.lines().last(),
        Some("chatty line 2999 with some padding"),
        "{logs}"
    );
    // Without the option (default 10 MB) all ~110 KB are kept.
    berth.run_ok(["run", "--name", "uncapped", "busybox", "sh", "-c", chatter]);
    assert_eq!(berth.run_ok(["logs", "uncapped"]).lines().count(), 3000);
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// exec
// ---------------------------------------------------------------------

#[test]
fn exec_sees_the_run_environment_its_own_options_and_passes_the_exit_code() {
    require_root!();
    let berth = Berth::new();
    berth.run_detached([
        "--name",
        "ex",
        "-e",
        "FROM_RUN=one",
        "-w",
        "/etc",
        "busybox",
        "sleep",
        "100",
    ]);
    assert_eq!(
        berth.run_ok(["exec", "ex", "sh", "-c", "echo $FROM_RUN"]),
        "one\n"
    );
    assert_eq!(
        berth.run_ok([
            "exec",
            "-e",
            "FROM_EXEC=two",
            "ex",
            "sh",
            "-c",
            "echo $FROM_RUN $FROM_EXEC"
        ]),
        "one two\n"
    );
    assert_eq!(
        berth.run_ok([
            "exec",
            "-e",
            "FROM_RUN=over",
            "ex",
            "sh",
            "-c",
            "echo $FROM_RUN"
        ]),
        "over\n"
    );
    let out = berth.output(["exec", "ex", "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert_eq!(berth.run_ok(["exec", "-w", "/tmp", "ex", "pwd"]), "/tmp\n");
    let out = berth.output(["exec", "ex", "nosuchcmd"]);
    assert_eq!(out.status.code(), Some(127), "{}", describe(&out));
    // stdin is passed with -i.
    let mut cmd = berth.cmd(["exec", "-i", "ex", "cat"]);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn exec -i");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"through stdin\n").expect("write");
    }
    let out = berth_e2e::wait_with_timeout(child, STEP);
    assert_eq!(stdout(&out), "through stdin\n", "{}", describe(&out));
    assert_eq!(berth.status_of("ex"), "running");
    berth.assert_clean();
}

#[test]
fn exec_into_a_stopped_container_fails_cleanly() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["run", "--name", "gone", "busybox", "true"]);
    berth.id_of("gone");
    let before = berth.inspect("gone");
    let out = berth.output(["exec", "gone", "true"]);
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(code, 0, "{}", describe(&out));
    assert_berth_error(&out, code);
    assert_eq!(berth.inspect("gone"), before, "the record changed");
    let out = berth.output(["exec", "nosuchcontainer", "true"]);
    assert_berth_error(&out, out.status.code().unwrap_or(-1));
    berth.assert_clean();
}

#[test]
fn exec_t_gets_a_terminal() {
    require_root!();
    let berth = Berth::new();
    berth.run_detached(["--name", "termy", "busybox", "sleep", "100"]);
    let mut pty = Pty::new(30, 90);
    let mut exec =
        pty.spawn(berth.cmd(["exec", "-t", "termy", "sh", "-c", "tty; stty size; exit 3"]));
    pty.expect("/dev/pts/", STEP);
    pty.expect("30 90", STEP);
    let status = exec.wait(STEP);
    assert_eq!(status.code(), Some(3), "{}", pty.transcript());
    berth.assert_clean();
}

fn namespaces(pid: i32) -> Vec<(String, PathBuf)> {
    ["cgroup", "ipc", "mnt", "net", "pid", "uts"]
        .iter()
        .filter_map(|ns| {
            fs::read_link(format!("/proc/{pid}/ns/{ns}"))
                .ok()
                .map(|l| ((*ns).to_owned(), l))
        })
        .collect()
}

#[test]
fn exec_joins_the_containers_namespaces_and_cgroup() {
    require_root!();
    let berth = Berth::new();
    let id = berth.run_detached(["--name", "joined", "busybox", "sleep", "100"]);
    // PID 1 in the exec'd process's PID namespace is the container's command.
    let out = berth.run_ok(["exec", "joined", "cat", "/proc/1/cmdline"]);
    assert_eq!(out, "sleep\x00100\x00");
    assert_eq!(
        berth.run_ok(["exec", "joined", "hostname"]).trim(),
        &id[..12]
    );

    let init = pid_of(&berth.inspect("joined"), "pid");
    // A long exec'd command, found from the host by its namespace.
    let marker = format!(
        "{}.{}",
        40 + std::process::id() % 50,
        std::process::id() % 1000
    );
    let _exec = berth.spawn(["exec", "joined", "sleep", &marker]);
    let want_cmdline = format!("sleep\0{marker}\0");
    let init_pid_ns = fs::read_link(format!("/proc/{init}/ns/pid")).expect("ns/pid");
    let mut found = None;
    assert!(
        wait_until(STEP, || {
            found = fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .find(|p| {
                    fs::read(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|c| c == want_cmdline.as_bytes())
                        && fs::read_link(format!("/proc/{p}/ns/pid")).ok().as_ref()
                            == Some(&init_pid_ns)
                });
            found.is_some()
        }),
        "the exec'd `sleep {marker}` is not in the container's PID namespace"
    );
    let execd = found.unwrap_or_default();
    assert_eq!(namespaces(execd), namespaces(init), "namespaces differ");
    let cgroup_of =
        |pid: i32| fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let init_cgroups = cgroup_of(init);
    assert!(
        init_cgroups.lines().any(|l| l.ends_with(&id)),
        "PID 1's cgroups do not name the container:\n{init_cgroups}"
    );
    assert_eq!(
        cgroup_of(execd),
        init_cgroups,
        "the exec'd process is not in the container's cgroups"
    );
    berth.run_ok(["rm", "-f", "joined"]);
    assert_dead_within(execd, "the exec'd process after rm -f");
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// stop, kill
// ---------------------------------------------------------------------

#[test]
fn stop_kills_a_pid_1_that_ignores_sigterm_after_the_timeout() {
    require_root!();
    let berth = Berth::new();
    berth.run_detached([
        "--name",
        "stubborn",
        "busybox",
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 0.1; done",
    ]);
    // Give the shell time to set its trap.
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let out = berth.run_ok(["stop", "-t", "2", "stubborn"]);
    let took = started.elapsed();
    assert_eq!(lines(&out), ["stubborn"]);
    assert!(
        took >= Duration::from_millis(1800) && took <= Duration::from_secs(5),
        "stop -t 2 took {took:?}"
    );
    let record = berth.inspect("stubborn");
    assert_eq!(record["status"], "exited", "{record:#}");
    assert_eq!(record["exit_code"], 137, "{record:#}");
    let status = berth.ps_status(true, "stubborn").expect("listed");
    assert!(status.starts_with("Exited (137)"), "{status}");
    berth.assert_clean();
}

#[test]
fn stop_of_pid_1_with_and_without_a_term_handler() {
    require_root!();
    let berth = Berth::new();
    // `sleep` as PID 1 has no handler: SIGTERM is ignored, SIGKILL follows.
    berth.run_detached(["--name", "sleeper", "busybox", "sleep", "100"]);
    let started = Instant::now();
    berth.run_ok(["stop", "-t", "1", "sleeper"]);
    let took = started.elapsed();
    assert!(took <= Duration::from_secs(5), "stop -t 1 took {took:?}");
    assert_eq!(berth.inspect("sleeper")["exit_code"], 137);

    // A handler that exits: quick, with its own exit code, well before
    // the default 10 s.
    berth.run_detached(
        ["--name", "polite"]
            .into_iter()
            .chain(["busybox"])
            .chain(POLITE),
    );
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    berth.run_ok(["stop", "polite"]);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "stop of a polite PID 1 took {took:?}"
    );
    let record = berth.inspect("polite");
    assert_eq!(record["status"], "exited", "{record:#}");
    assert_eq!(record["exit_code"], 0, "{record:#}");
    berth.assert_clean();
}

#[test]
fn stop_of_an_exited_container_changes_nothing() {
    require_root!();
    let berth = Berth::new();
    let out = berth.output(["run", "--name", "over", "busybox", "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    berth.id_of("over");
    let before = berth.inspect("over");
    // docker: stopping a stopped container succeeds and changes nothing.
    assert_eq!(berth.run_ok(["stop", "over"]).trim(), "over");
    assert_eq!(berth.inspect("over"), before, "stop changed the record");
    let out = berth.output(["kill", "over"]);
    assert_target_error(&out);
    assert_eq!(berth.inspect("over"), before, "kill changed the record");
    let out = berth.output(["stop", "nosuchcontainer"]);
    assert_target_error(&out);
    berth.assert_clean();
}

#[test]
fn kill_delivers_the_signal_asked_for_and_sigkill_by_default() {
    require_root!();
    let berth = Berth::new();
    let dir = tempfile::tempdir().expect("volume");
    berth.run_detached([
        "--name",
        "signals",
        "-v",
        &format!("{}:/gate", dir.path().display()),
        "busybox",
        "sh",
        "-c",
        "trap 'echo usr1 >> /gate/got' USR1; touch /gate/ready; while :; do sleep 0.05; done",
    ]);
    assert!(wait_until(STEP, || dir.path().join("ready").exists()));
    assert_eq!(
        lines(&berth.run_ok(["kill", "-s", "USR1", "signals"])),
        ["signals"]
    );
    assert!(
        wait_until(STEP, || fs::read_to_string(dir.path().join("got"))
            .is_ok_and(|s| s == "usr1\n")),
        "the trap did not see SIGUSR1"
    );
    assert_eq!(berth.status_of("signals"), "running");
    berth.run_ok(["kill", "-s", "SIGUSR1", "signals"]);
    assert!(
        wait_until(STEP, || fs::read_to_string(dir.path().join("got"))
            .is_ok_and(|s| s == "usr1\nusr1\n")),
        "`-s SIGUSR1` was not delivered"
    );
    berth.run_ok(["kill", "signals"]);
    let record = berth.wait_for_status("signals", "exited", STEP);
    assert_eq!(record["exit_code"], 137, "{record:#}");
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// rm
// ---------------------------------------------------------------------

#[test]
fn rm_refuses_a_running_container_without_f() {
    require_root!();
    let berth = Berth::new();
    berth.run_detached(["--name", "busy", "busybox", "sleep", "100"]);
    let pid = pid_of(&berth.inspect("busy"), "pid");
    let out = berth.output(["rm", "busy"]);
    assert_target_error(&out);
    assert_eq!(berth.status_of("busy"), "running");
    assert!(process_alive(pid));

    // Several targets: the good ones are done, each failure is a line.
    berth.run_ok(["run", "--name", "idle", "busybox", "true"]);
    berth.id_of("idle");
    let out = berth.output(["rm", "idle", "nosuchcontainer"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(lines(&stdout(&out)), ["idle"], "{}", describe(&out));
    assert_target_error(&out);
    assert_berth_error(&berth.output(["inspect", "idle"]), 125);

    assert_eq!(lines(&berth.run_ok(["rm", "-f", "busy"])), ["busy"]);
    assert_dead_within(pid, "PID 1 after rm -f");
    assert!(berth.container_ids().is_empty());
    let out = berth.output(["rm", "busy"]);
    assert!(
        assert_target_error(&out).contains("busy"),
        "the error names the container"
    );
    berth.assert_clean();
}

#[test]
fn an_ambiguous_id_prefix_is_refused() {
    require_root!();
    let berth = Berth::new();
    // 17 ids always share a first hex digit; stop as soon as two do.
    let mut seen: Vec<String> = Vec::new();
    let digit = loop {
        let out = berth.run_ok(["run", "-d", "busybox", "true"]);
        let id = out.trim().to_owned();
        assert!(is_full_id(&id), "{out}");
        berth.track(&id);
        if let Some(other) = seen.iter().find(|s| s[..1] == id[..1]) {
            break other[..1].to_owned();
        }
        seen.push(id);
        assert!(seen.len() <= 16);
    };
    let count = berth.container_ids().len();
    let line = assert_berth_error(&berth.output(["inspect", &digit]), 125);
    assert!(line.contains("ambiguous"), "{line}");
    let out = berth.output(["rm", "-f", &digit]);
    assert_target_error(&out);
    assert_eq!(
        berth.container_ids().len(),
        count,
        "rm of an ambiguous prefix removed something"
    );
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// volumes
// ---------------------------------------------------------------------

#[test]
fn volumes_bind_host_directories_and_outlive_the_container() {
    require_root!();
    let berth = Berth::new();
    let host = tempfile::tempdir().expect("host dir");
    let missing = host.path().join("not/yet/there");
    let second = host.path().join("second");
    fs::create_dir(&second).expect("mkdir");
    fs::write(second.join("from-host"), "hello\n").expect("write");
    let out = berth.run_ok([
        "run",
        "--name",
        "vols",
        "-v",
        &format!("{}:/data", missing.display()),
        "-v",
        &format!("{}:/other", second.display()),
        "busybox",
        "sh",
        "-c",
        "echo inside > /data/file && cat /other/from-host && echo more > /other/new",
    ]);
    assert_eq!(out, "hello\n");
    assert!(missing.is_dir(), "the host directory was not created");
    berth.run_ok(["rm", "vols"]);
    assert_eq!(
        fs::read_to_string(missing.join("file")).ok().as_deref(),
        Some("inside\n")
    );
    assert_eq!(
        fs::read_to_string(second.join("new")).ok().as_deref(),
        Some("more\n")
    );

    // :ro is read-only inside, readable still.
    let out = berth.output([
        "run",
        "--rm",
        "-v",
        &format!("{}:/ro:ro", second.display()),
        "busybox",
        "sh",
        "-c",
        "cat /ro/from-host; echo x > /ro/written",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "hello\n", "{}", describe(&out));
    assert!(!second.join("written").exists(), "a write went through :ro");
    berth.assert_clean();
}

#[test]
fn bad_volume_specs_are_refused_and_create_nothing() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["run", "--rm", "busybox", "true"]);
    let before = berth.tree();
    let cwd = tempfile::tempdir().expect("cwd");
    // (`data:/data` is a named volume and `./data` a directory of the
    // current one since named volumes came: see volumes.rs.)
    for spec in ["a/b:/data", ":/data", "./data:relative", "..data:/data"] {
        let mut cmd = berth.cmd(["run", "-v", spec, "busybox", "true"]);
        cmd.current_dir(cwd.path());
        let out = berth_e2e::run_command(cmd);
        assert_berth_error(&out, 125);
        assert!(
            berth.container_ids().is_empty(),
            "-v {spec} created a container"
        );
        assert_eq!(berth.tree(), before, "-v {spec} changed the state root");
        let made: Vec<_> = fs::read_dir(cwd.path())
            .expect("cwd")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        assert!(made.is_empty(), "-v {spec} created {made:?}");
    }
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// commit, image save/import
// ---------------------------------------------------------------------

#[test]
fn the_seed_scenario_commit_a_container_and_run_the_image() {
    require_root!();
    let berth = Berth::new();
    let vol1 = tempfile::tempdir().expect("vol1");
    let vol2 = tempfile::tempdir().expect("vol2");
    let v = |dir: &tempfile::TempDir| format!("{}:/data", dir.path().display());
    let mut one = vec![
        "--name".to_owned(),
        "one".to_owned(),
        "-v".to_owned(),
        v(&vol1),
    ];
    one.push("busybox".into());
    one.extend(POLITE.map(String::from));
    berth.run_detached(&one);
    let mut two = vec![
        "--name".to_owned(),
        "two".to_owned(),
        "-v".to_owned(),
        v(&vol2),
    ];
    two.push("busybox".into());
    two.extend(POLITE.map(String::from));
    berth.run_detached(&two);

    berth.run_ok([
        "exec",
        "one",
        "sh",
        "-c",
        "echo in-volume > /data/v.txt && echo outside > /outside.txt",
    ]);
    assert_eq!(
        fs::read_to_string(vol1.path().join("v.txt"))
            .ok()
            .as_deref(),
        Some("in-volume\n")
    );
    // The other container's volume is its own.
    assert_eq!(berth.run_ok(["exec", "two", "ls", "-A", "/data"]), "");

    berth.run_ok(["commit", "one", "snap"]);
    berth.run_ok(["stop", "one"]);
    berth.run_ok(["rm", "one"]);
    let images = berth.run_ok(["images"]);
    assert!(images.lines().any(|l| l.starts_with("snap ")), "{images}");

    let out = berth.output([
        "run",
        "--rm",
        "snap",
        "sh",
        "-c",
        "cat /outside.txt; ls -A /data 2>/dev/null; cat /data/v.txt 2>/dev/null; true",
    ]);
    assert_eq!(
        stdout(&out),
        "outside\n",
        "the committed image must have /outside.txt and not the volume's file\n{}",
        describe(&out)
    );
    // The volume itself still holds the file.
    assert!(vol1.path().join("v.txt").is_file());
    assert_eq!(berth.status_of("two"), "running");

    // save -> remove -> load -> tag under a new name -> run.
    let tars = tempfile::tempdir().expect("tar dir");
    let tar = tars.path().join("snap.tar");
    berth.run_ok(["image", "save", "snap", "-o", &tar.to_string_lossy()]);
    assert!(
        fs::metadata(&tar).is_ok_and(|m| m.len() > 0),
        "no tar written"
    );
    berth.run_ok(["rmi", "snap"]);
    assert_eq!(
        berth.run_ok(["load", "-i", &tar.to_string_lossy()]),
        "Loaded image: snap:latest\n"
    );
    berth.run_ok(["tag", "snap", "snap-copy"]);
    assert_eq!(
        berth.run_ok(["run", "--rm", "snap-copy", "cat", "/outside.txt"]),
        "outside\n"
    );
    berth.run_ok(["rm", "-f", "two"]);
    berth.assert_clean();
}

#[test]
fn commit_works_on_an_exited_container() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run",
        "--name",
        "made",
        "busybox",
        "sh",
        "-c",
        "echo kept > /kept.txt",
    ]);
    berth.id_of("made");
    berth.run_ok(["commit", "made", "made-image"]);
    assert_eq!(
        berth.run_ok(["run", "--rm", "made-image", "cat", "/kept.txt"]),
        "kept\n"
    );
    berth.assert_clean();
}

// ---------------------------------------------------------------------
// many containers
// ---------------------------------------------------------------------

#[test]
fn twenty_detached_containers_are_started_listed_and_removed() {
    require_root!();
    let berth = Berth::new();
    let mut ids = Vec::new();
    let started = Instant::now();
    for _ in 0..20 {
        ids.push(berth.run_detached(["busybox", "sleep", "60"]));
    }
    let start_time = started.elapsed();
    let listed = lines(&berth.run_ok(["ps", "-q"]));
    assert_eq!(listed.len(), 20, "ps -q: {listed:?}");
    for id in &ids {
        assert!(listed.contains(&id[..12].to_owned()), "{id} not listed");
    }
    let mut pids = Vec::new();
    let mut dirs = Vec::new();
    for id in &ids {
        let record = berth.inspect(id);
        pids.push(pid_of(&record, "pid"));
        pids.push(pid_of(&record, "monitor_pid"));
        dirs.extend(cgroup_dirs(&record));
    }
    let started = Instant::now();
    let mut args = vec!["rm".to_owned(), "-f".to_owned()];
    args.extend(ids.iter().cloned());
    let removed = lines(&berth.run_ok(&args));
    let rm_time = started.elapsed();
    eprintln!("20 x run -d: {start_time:?}; rm -f of 20: {rm_time:?}");
    assert_eq!(removed.len(), 20, "rm -f printed {removed:?}");
    assert!(berth.container_ids().is_empty());
    for pid in pids {
        assert_dead_within(pid, "a process of a removed container");
    }
    let left: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
    assert!(find_cgroups_named(&ids).is_empty());
    berth.assert_clean();
}
