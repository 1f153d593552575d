//! containerd 1.6 (through its runc v2 shim) running containers with the
//! OCI runtime under test: `berth-runtime`, or `$BERTH_OCI_RUNTIME`.
//!
//! Each scenario runs on a private containerd with runc and on one with
//! the runtime under test; each run checks what is right on its own, then
//! the two results must be equal, and each containerd must end clean (no
//! shim, task, mount, cgroup or runtime state left).
//!
//! `cargo build -p cli && cargo test -p berth-e2e --test oci_containerd`,
//! as root; the tests may run in parallel (each containerd is private).

use std::fmt::Debug;
use std::fs;
use std::time::Duration;

use berth_e2e::oci::{compare_runtimes, label, Containerd, BUSYBOX_IMAGE};
use berth_e2e::{describe, process_alive, require_root, stderr, stdout, wait_until};

/// Long enough for a slow VM; a passing step takes well under a second.
const STEP: Duration = Duration::from_secs(20);

fn compare<T: PartialEq + Debug>(scenario: impl Fn(&Containerd) -> T) {
    compare_runtimes(scenario);
}

/// `ctr task ls` as (id, pid, status) rows.
fn tasks(containerd: &Containerd) -> Vec<(String, i32, String)> {
    containerd
        .run_ok(["task", "ls"])
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((
                fields.first()?.to_string(),
                fields.get(1)?.parse().ok()?,
                fields.get(2)?.to_string(),
            ))
        })
        .collect()
}

fn task_status(containerd: &Containerd, id: &str) -> Option<String> {
    tasks(containerd)
        .into_iter()
        .find(|(task, _, _)| task == id)
        .map(|(_, _, status)| status)
}

#[test]
fn imported_image_runs_with_output_and_exit_code() {
    require_root!();
    compare(|containerd| {
        let images = containerd.run_ok(["image", "ls", "--quiet"]);
        assert!(
            images.lines().any(|l| l == BUSYBOX_IMAGE),
            "{}: image ls shows {images:?}",
            label(containerd)
        );

        let hi = containerd.run(&["--rm"], "hi", &["sh", "-c", "echo hi; exit 3"]);
        assert_eq!(
            (hi.status.code(), stdout(&hi).as_str()),
            (Some(3), "hi\n"),
            "{}\n{}",
            label(containerd),
            describe(&hi)
        );

        // The shim hands the runtime its listening socket as fd 3; the
        // container must get only its stdio (ls's own directory is 3).
        let fds = containerd.run(&["--rm"], "fds", &["ls", "/proc/self/fd"]);
        assert_eq!(
            stdout(&fds),
            "0\n1\n2\n3\n",
            "{}: open files in the container\n{}",
            label(containerd),
            describe(&fds)
        );

        let missing = containerd.run(&["--rm"], "missing", &["no-such-command"]);
        assert!(
            !missing.status.success() && stderr(&missing).contains("no-such-command"),
            "{}: a missing command\n{}",
            label(containerd),
            describe(&missing)
        );
        (
            hi.status.code(),
            stdout(&hi),
            stdout(&fds),
            missing.status.code(),
        )
    });
}

/// A shell that says it started, then counts (into /data/n) until
/// SIGTERM, on which it exits 7.
const SERVICE: &str = "trap 'echo got-term; exit 7' TERM; echo started; i=0; \
     while :; do i=$((i+1)); echo $i > /data/n.tmp; mv /data/n.tmp /data/n; sleep 0.05; done";

#[test]
fn detached_task_exec_pause_kill_delete_and_rm() {
    require_root!();
    compare(|containerd| {
        let log = containerd.dir().join("bg.log");
        let log_uri = format!("file://{}", log.display());
        let data = tempfile::tempdir().expect("host directory");
        let mount = format!(
            "type=bind,src={},dst=/data,options=rbind:rw",
            data.path().display()
        );
        let count = || -> u64 {
            fs::read_to_string(data.path().join("n"))
                .ok()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        };
        let run = containerd.run(
            &["-d", "--log-uri", &log_uri, "--mount", &mount],
            "bg",
            &["sh", "-c", SERVICE],
        );
        assert!(run.status.success(), "{}", describe(&run));
        let logged = |text: &str| {
            wait_until(STEP, || {
                fs::read_to_string(&log).is_ok_and(|l| l.contains(text))
            })
        };
        assert!(
            logged("started\n"),
            "{}: no output logged",
            label(containerd)
        );

        let (_, pid, status) = tasks(containerd)
            .into_iter()
            .find(|(id, _, _)| id == "bg")
            .unwrap_or_else(|| panic!("{}: bg not in task ls", label(containerd)));
        assert_eq!(status, "RUNNING", "{}", label(containerd));
        assert!(process_alive(pid), "task pid {pid} is not alive");
        containerd.cgroup_parent().assert_holds(pid);

        // `task ps` is the runtime's `ps --format json`.
        let ps = containerd.run_ok(["task", "ps", "bg"]);
        assert!(
            ps.lines()
                .skip(1)
                .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
            "{}: task ps does not list pid {pid}:\n{ps}",
            label(containerd)
        );

        // exec joins the container: its PID 1 is the service's shell.
        let exec = containerd.exec_cmd(
            "bg",
            "probe",
            &["sh", "-c", "echo from-exec; cat /proc/1/comm; exit 5"],
        );
        let exec = berth_e2e::run_command(exec);
        assert_eq!(exec.status.code(), Some(5), "{}", describe(&exec));
        assert_eq!(stdout(&exec), "from-exec\nsh\n", "{}", describe(&exec));

        // pause really freezes: the counter stops, and moves on after resume.
        assert!(wait_until(STEP, || count() > 0), "the counter never ran");
        containerd.run_ok(["task", "pause", "bg"]);
        let paused = task_status(containerd, "bg");
        let frozen_at = count();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            count(),
            frozen_at,
            "{}: the counter moved while paused",
            label(containerd)
        );
        containerd.run_ok(["task", "resume", "bg"]);
        let resumed = task_status(containerd, "bg");
        assert_eq!(
            (paused.as_deref(), resumed.as_deref()),
            (Some("PAUSED"), Some("RUNNING")),
            "{}",
            label(containerd)
        );
        assert!(
            wait_until(STEP, || count() > frozen_at),
            "{}: the counter did not move after resume",
            label(containerd)
        );

        // SIGTERM through the runtime; the trap exits 7.
        containerd.run_ok(["task", "kill", "bg"]);
        let stopped = wait_until(STEP, || {
            task_status(containerd, "bg").as_deref() == Some("STOPPED")
        });
        assert!(
            stopped,
            "{}: task did not stop on SIGTERM",
            label(containerd)
        );
        assert!(
            logged("got-term\n"),
            "{}: SIGTERM not seen",
            label(containerd)
        );
        let delete = containerd.output(["task", "delete", "bg"]);
        assert!(delete.status.success(), "{}", describe(&delete));
        assert!(
            stderr(&delete).contains("exit code 7"),
            "{}: task delete does not report exit code 7\n{}",
            label(containerd),
            describe(&delete)
        );
        containerd.run_ok(["container", "rm", "bg"]);
        assert_eq!(containerd.ids("task"), Vec::<String>::new());
        assert_eq!(containerd.ids("container"), Vec::<String>::new());
        (status, stdout(&exec), paused, resumed)
    });
}
