//! Resource limits (issue 4): memory, pids, cpuset, cpu shares, --cpus,
//! pause/unpause, cgroup removal, stats, and refused limit values. Every
//! test checks a real effect, on whichever cgroup layout the host has.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_e2e::{
    assert_berth_error, cgroup_dirs, cgroup_layout, container_cpu_time, describe,
    find_cgroups_named, ps_rows, require_root, stdout, wait_until, Berth,
};

/// Long enough for a slow VM.
const STEP: Duration = Duration::from_secs(20);

/// The two CPU-ratio tests measure CPU time; they must not compete with
/// each other for the machine's (possibly two) CPUs.
static CPU_TESTS: Mutex<()> = Mutex::new(());

/// busybox allocates one buffer of `bs` bytes: 64 MiB.
const ALLOCATE_64M: [&str; 5] = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"];

/// A busy loop with no forks (a shell builtin loop).
const BUSY: [&str; 3] = ["sh", "-c", "while :; do :; done"];

fn run_args<'a>(head: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    head.iter().chain(tail).copied().collect()
}

#[test]
fn a_container_over_its_memory_limit_is_oom_killed_and_recorded() {
    require_root!();
    let berth = Berth::new();
    eprintln!("cgroup layout: {:?}", cgroup_layout());
    let out = berth.output(run_args(
        &["run", "--name", "small", "-m", "32m", "busybox"],
        &ALLOCATE_64M,
    ));
    assert_eq!(
        out.status.code(),
        Some(137),
        "64 MiB in a 32 MiB container\n{}",
        describe(&out)
    );
    let record = berth.inspect("small");
    berth.id_of("small");
    assert_eq!(record["status"], "exited", "{record:#}");
    assert_eq!(record["exit_code"], 137, "{record:#}");
    assert_eq!(record["oom_killed"], true, "{record:#}");
    assert_eq!(record["limits"]["memory"], 32 * 1024 * 1024, "{record:#}");
    let ps = berth.ps_status(true, "small").expect("small in ps -a");
    assert!(ps.starts_with("Exited (137)"), "ps -a status: {ps}");

    // Detached: the monitor records it.
    berth.run_detached(run_args(
        &["--name", "small-bg", "-m", "32m", "busybox"],
        &ALLOCATE_64M,
    ));
    let record = berth.wait_for_status("small-bg", "exited", STEP);
    assert_eq!(record["exit_code"], 137, "{record:#}");
    assert_eq!(record["oom_killed"], true, "{record:#}");

    // A child is killed, PID 1 survives and exits on its own: the OOM
    // kill is still recorded (docker's OOMKilled), with PID 1's code.
    let script = format!("{}; echo child=$?; exit 3", ALLOCATE_64M.join(" "));
    let out = berth.output([
        "run",
        "--name",
        "small-child",
        "-m",
        "32m",
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(stdout(&out), "child=137\n", "{}", describe(&out));
    let record = berth.inspect("small-child");
    assert_eq!(record["exit_code"], 3, "{record:#}");
    assert_eq!(record["oom_killed"], true, "{record:#}");
    berth.assert_clean();
}

#[test]
fn the_same_allocation_succeeds_under_the_limit_and_without_one() {
    require_root!();
    let berth = Berth::new();
    for (name, limit) in [("roomy", Some("128m")), ("unlimited", None)] {
        let mut args = vec!["run", "--name", name];
        if let Some(limit) = limit {
            args.extend(["-m", limit]);
        }
        args.push("busybox");
        args.extend(ALLOCATE_64M);
        let out = berth.output(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}\n{}", describe(&out));
        let record = berth.inspect(name);
        berth.id_of(name);
        assert_eq!(record["exit_code"], 0, "{record:#}");
        assert_eq!(record["oom_killed"], false, "{record:#}");
    }
    berth.assert_clean();
}

/// The shell forks `sleep`s in a subshell until fork fails (busybox sh
/// gives up at the first failed fork), then counts the processes in the
/// container with builtins only (a glob over /proc).
const FORK_LOOP: &str = "(for i in $(seq 20); do sleep 30 & done) 2>/dev/null; \
     n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo procs=$n";

fn procs_after_fork_loop(berth: &Berth, limit: Option<&str>) -> u32 {
    let mut args = vec!["run", "--rm"];
    if let Some(limit) = limit {
        args.extend(["--pids-limit", limit]);
    }
    args.extend(["busybox", "sh", "-c", FORK_LOOP]);
    let out = berth.output(&args);
    assert_eq!(out.status.code(), Some(0), "{args:?}\n{}", describe(&out));
    let text = stdout(&out);
    text.trim()
        .strip_prefix("procs=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output of the fork loop\n{}", describe(&out)))
}

#[test]
fn pids_limit_caps_a_fork_loop() {
    require_root!();
    let berth = Berth::new();
    // Without a limit the 20 sleeps all start (plus the shell itself).
    let free = procs_after_fork_loop(&berth, None);
    assert!(free >= 21, "without a limit only {free} processes ran");
    let capped = procs_after_fork_loop(&berth, Some("10"));
    assert!(
        (2..=10).contains(&capped),
        "--pids-limit 10: {capped} processes in the container"
    );
    berth.assert_clean();
}

#[test]
fn cpuset_cpus_pins_the_container() {
    require_root!();
    let berth = Berth::new();
    let out = berth.run_ok([
        "run",
        "--name",
        "pinned",
        "--cpuset-cpus",
        "0",
        "busybox",
        "grep",
        "Cpus_allowed_list",
        "/proc/self/status",
    ]);
    let value = out.split(':').nth(1).map(str::trim);
    assert_eq!(value, Some("0"), "inside: {out}");
    berth.id_of("pinned");
    berth.assert_clean();
}

/// CPU time of each container over the same `window`.
fn cpu_over_window(berth: &Berth, names: &[&str], window: Duration) -> Vec<Duration> {
    let records: Vec<_> = names.iter().map(|n| berth.inspect(n)).collect();
    for record in &records {
        assert_eq!(record["status"], "running", "{record:#}");
    }
    let before: Vec<Duration> = records.iter().map(container_cpu_time).collect();
    std::thread::sleep(window);
    let after: Vec<Duration> = records.iter().map(container_cpu_time).collect();
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.saturating_sub(*b))
        .collect()
}

#[test]
fn cpu_shares_split_a_shared_cpu_one_to_two() {
    require_root!();
    let _serial = CPU_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let berth = Berth::new();
    for (name, shares) in [("light", "512"), ("heavy", "1024")] {
        berth.run_detached(run_args(
            &[
                "--name",
                name,
                "--cpuset-cpus",
                "0",
                "--cpu-shares",
                shares,
                "busybox",
            ],
            &BUSY,
        ));
    }
    // Let both loops get going, then measure. Other load on the machine
    // (it may be shared) can skew one window: take up to three.
    std::thread::sleep(Duration::from_millis(300));
    let window = Duration::from_secs(3);
    let mut tries = Vec::new();
    let used = loop {
        let used = cpu_over_window(&berth, &["light", "heavy"], window);
        let ratio = used[0].as_secs_f64() / used[1].as_secs_f64().max(1e-9);
        eprintln!(
            "light {:?}, heavy {:?} over {window:?}: ratio {ratio:.3}",
            used[0], used[1]
        );
        tries.push(format!("{:?} : {:?} (ratio {ratio:.3})", used[0], used[1]));
        if (0.4..=0.6).contains(&ratio) {
            break used;
        }
        assert!(
            tries.len() < 3,
            "shares 512:1024 on one CPU gave {tries:?}, want a ratio of 0.5 +/- 20% \
             (load: {})",
            load_average()
        );
    };
    // Both were pinned to CPU 0: together at most one CPU.
    let total = (used[0] + used[1]).as_secs_f64() / window.as_secs_f64();
    assert!(
        total <= 1.1,
        "two containers on --cpuset-cpus 0 used {total:.2} CPUs"
    );
    berth.run_ok(["rm", "-f", "light", "heavy"]);
    berth.assert_clean();
}

#[test]
fn cpus_half_gives_a_busy_loop_half_a_cpu() {
    require_root!();
    let _serial = CPU_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let berth = Berth::new();
    berth.run_detached(run_args(
        &["--name", "half", "--cpus", "0.5", "busybox"],
        &BUSY,
    ));
    std::thread::sleep(Duration::from_millis(300));
    let window = Duration::from_secs(3);
    // More than 0.6 CPU means the cap does not hold: fail at once. Less
    // than 0.4 may be another load on a shared machine: up to three windows.
    let mut tries = Vec::new();
    loop {
        let used = cpu_over_window(&berth, &["half"], window)[0];
        let share = used.as_secs_f64() / window.as_secs_f64();
        eprintln!("--cpus 0.5: {used:?} over {window:?} = {share:.3} CPU");
        tries.push(format!("{share:.3}"));
        assert!(
            share <= 0.6,
            "--cpus 0.5 busy loop used {share:.3} CPU (want 0.5 +/- 20%)"
        );
        if share >= 0.4 {
            break;
        }
        assert!(
            tries.len() < 3,
            "--cpus 0.5 busy loop got only {tries:?} CPU in three {window:?} windows \
             (want 0.5 +/- 20%; load: {})",
            load_average()
        );
    }
    berth.run_ok(["rm", "-f", "half"]);
    berth.assert_clean();
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn read_counter(file: &Path) -> Option<u64> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// The counter's value once two reads agree (the container rewrites the
/// file, so a read may catch it empty).
fn stable_counter(file: &Path) -> u64 {
    let mut value = None;
    assert!(
        wait_until(STEP, || {
            value = read_counter(file);
            value.is_some()
        }),
        "no counter in {}",
        file.display()
    );
    value.unwrap_or_default()
}

#[test]
fn pause_freezes_a_counter_and_unpause_resumes_it() {
    require_root!();
    let berth = Berth::new();
    let vol = tempfile::tempdir().expect("volume dir");
    let counter = vol.path().join("counter");
    berth.run_detached([
        "--name",
        "counting",
        "-v",
        &format!("{}:/data", vol.path().display()),
        "busybox",
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo $i > /data/counter; sleep 0.02; done",
    ]);
    let first = stable_counter(&counter);
    assert!(
        wait_until(STEP, || read_counter(&counter).is_some_and(|v| v > first)),
        "the counter does not advance"
    );

    berth.run_ok(["pause", "counting"]);
    assert_eq!(berth.status_of("counting"), "paused");
    let ps = berth
        .ps_status(false, "counting")
        .expect("a paused container is listed by ps");
    assert!(
        ps.contains("Paused"),
        "ps status of a paused container: {ps}"
    );
    let frozen = stable_counter(&counter);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        read_counter(&counter),
        Some(frozen),
        "the counter advanced while paused"
    );

    berth.run_ok(["unpause", "counting"]);
    assert_eq!(berth.status_of("counting"), "running");
    assert!(
        wait_until(STEP, || read_counter(&counter).is_some_and(|v| v > frozen)),
        "the counter did not resume after unpause"
    );
    let ps = berth.ps_status(false, "counting").expect("listed");
    assert!(
        ps.starts_with("Up") && !ps.contains("Paused"),
        "ps status after unpause: {ps}"
    );
    // A paused container can be removed by force.
    berth.run_ok(["pause", "counting"]);
    berth.run_ok(["rm", "-f", "counting"]);
    berth.assert_clean();
}

/// The cgroup directories of a running container, each asserted to exist.
fn live_cgroups(berth: &Berth, name: &str) -> Vec<PathBuf> {
    let record = berth.inspect(name);
    let dirs = cgroup_dirs(&record);
    assert!(
        !dirs.is_empty(),
        "no cgroup dirs in the record:\n{record:#}"
    );
    for dir in &dirs {
        assert!(
            dir.is_dir(),
            "{} does not exist while {name} runs",
            dir.display()
        );
    }
    dirs
}

fn assert_cgroups_gone(id: &str, dirs: &[PathBuf], how: &str) {
    let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "after {how}: cgroup dirs left: {left:?}");
    let found = find_cgroups_named(&[id.to_owned()]);
    assert!(found.is_empty(), "after {how}: found {found:?}");
}

#[test]
fn no_cgroup_remains_after_rm_rm_f_or_a_rm_run() {
    require_root!();
    let berth = Berth::new();

    // Stopped, then rm.
    let id = berth.run_detached(["--name", "plain", "-m", "64m", "busybox", "sleep", "100"]);
    let dirs = live_cgroups(&berth, "plain");
    // `stats --no-stream` shows it, with a process count.
    let stats = berth.run_ok(["stats", "--no-stream"]);
    let row = ps_rows(&stats)
        .into_iter()
        .find(|r| r.get(1).map(String::as_str) == Some("plain"))
        .unwrap_or_else(|| panic!("no row for the running container:\n{stats}"));
    let pids: u64 = row
        .last()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("PIDS is not a number in {row:?}\n{stats}"));
    assert!(pids >= 1, "PIDS {pids}\n{stats}");
    assert!(
        stats.lines().next().is_some_and(|h| h.contains("PIDS")),
        "stats header:\n{stats}"
    );
    let one = berth.run_ok(["stats", "--no-stream", "plain"]);
    assert_eq!(ps_rows(&one).len(), 1, "stats of one container:\n{one}");
    berth.run_ok(["kill", "plain"]);
    berth.wait_for_status("plain", "exited", STEP);
    berth.run_ok(["rm", "plain"]);
    assert_cgroups_gone(&id, &dirs, "rm");

    // Running, then rm -f.
    let id = berth.run_detached(["--name", "forced", "busybox", "sleep", "100"]);
    let dirs = live_cgroups(&berth, "forced");
    berth.run_ok(["rm", "-f", "forced"]);
    assert_cgroups_gone(&id, &dirs, "rm -f");

    // A foreground --rm run, held open until the test lets it end.
    let gate = tempfile::tempdir().expect("gate dir");
    let mut run = berth.spawn([
        "run",
        "--rm",
        "--name",
        "auto",
        "-v",
        &format!("{}:/gate", gate.path().display()),
        "busybox",
        "sh",
        "-c",
        "while [ ! -e /gate/go ]; do sleep 0.02; done",
    ]);
    assert!(
        wait_until(STEP, || {
            berth.output(["inspect", "auto"]).status.success()
                && berth.status_of("auto") == "running"
        }),
        "the --rm container never ran"
    );
    let id = berth.id_of("auto");
    let dirs = live_cgroups(&berth, "auto");
    fs::write(gate.path().join("go"), "").expect("open the gate");
    let status = run.wait(STEP);
    assert_eq!(status.code(), Some(0));
    assert_berth_error(&berth.output(["inspect", "auto"]), 125);
    assert_cgroups_gone(&id, &dirs, "a --rm run");
    berth.assert_clean();
}

#[test]
fn bad_limits_are_refused_and_create_nothing() {
    require_root!();
    let berth = Berth::new();
    // Build the image first, so that a refused run cannot excuse changes.
    berth.run_ok(["run", "--rm", "busybox", "true"]);
    let before = berth.tree();
    let parent = format!("berth-e2e-bad-{}", std::process::id());
    let cases: [&[&str]; 5] = [
        &["-m", "10x"],
        &["-m", "0"],
        &["--cpus", "-1"],
        &["--cpuset-cpus", "99"],
        &["--pids-limit", "abc"],
    ];
    let mut failures = Vec::new();
    for case in cases {
        for with_parent in [false, true] {
            let mut args = vec!["run"];
            if with_parent {
                // A parent of our own, so that any cgroup berth made for
                // the refused container can be found (relative to berth's
                // own cgroup, i.e. this test's).
                args.extend(["--cgroup-parent", &parent]);
            }
            args.extend(case);
            args.extend(["busybox", "true"]);
            let started = Instant::now();
            let out = berth.output(&args);
            if !is_one_line_error(&out, 125) {
                failures.push(format!("{args:?}\n{}", describe(&out)));
            }
            assert!(started.elapsed() < STEP);
            let ids = berth.container_ids();
            if !ids.is_empty() {
                failures.push(format!("{args:?} created containers {ids:?}"));
                berth.run_ok(
                    ["rm", "-f"]
                        .iter()
                        .copied()
                        .chain(ids.iter().map(String::as_str)),
                );
            }
            if berth.tree() != before {
                failures.push(format!("{args:?} changed the state root"));
            }
            let cgroups = find_cgroups_named(std::slice::from_ref(&parent));
            if !cgroups.is_empty() {
                failures.push(format!("{args:?} made cgroups {cgroups:?}"));
                remove_cgroup_trees(&cgroups);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    berth.assert_clean();
}

/// Negative numbers are values, not options: `-m -1` must not be read as
/// an unknown flag `-1` (a multi-line usage error). docker takes
/// `--pids-limit -1` as "unlimited"; either that or one clear line.
#[test]
fn negative_limit_values_get_one_clear_line() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["run", "--rm", "busybox", "true"]);
    let before = berth.tree();
    let mut failures = Vec::new();
    let cases: [&[&str]; 5] = [
        &["-m", "-1"],
        &["--cpu-shares", "-5"],
        &["-c", "-5"],
        &["--cpuset-cpus", "-1"],
        &["--cpus", "-0.5"],
    ];
    for case in cases {
        let mut args = vec!["run", "--rm"];
        args.extend(case);
        args.extend(["busybox", "true"]);
        let out = berth.output(&args);
        if !is_one_line_error(&out, 125) {
            failures.push(format!("{args:?}\n{}", describe(&out)));
        }
        if berth.tree() != before || !berth.container_ids().is_empty() {
            failures.push(format!("{args:?} left something behind"));
        }
    }
    // --pids-limit -1: unlimited (as in docker) or refused in one line.
    let out = berth.output([
        "run",
        "--rm",
        "--pids-limit",
        "-1",
        "busybox",
        "sh",
        "-c",
        FORK_LOOP,
    ]);
    let unlimited = out.status.success() && stdout(&out).trim() == "procs=21";
    if !unlimited && !is_one_line_error(&out, 125) {
        failures.push(format!("--pids-limit -1\n{}", describe(&out)));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    berth.assert_clean();
}

/// What [`assert_berth_error`] asserts, as a test.
fn is_one_line_error(out: &std::process::Output, code: i32) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    out.status.code() == Some(code) && lines.len() == 1 && lines[0].starts_with("berth: ")
}

/// rmdir cgroup directories and whatever is below them, deepest first.
fn remove_cgroup_trees(dirs: &[PathBuf]) {
    fn remove(dir: &Path) {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.filter_map(Result::ok) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&entry.path());
                }
            }
        }
        let _ = fs::remove_dir(dir);
    }
    for dir in dirs {
        remove(dir);
    }
}
