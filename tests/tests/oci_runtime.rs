//! `berth-runtime`, the OCI runtime with runc's command line, driven the
//! way an engine drives it: a bundle (config.json + rootfs), then create,
//! start, state, exec, pause, kill, delete. Every test checks real effects
//! inside the container and that nothing is left.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use berth_e2e::{
    describe, make_busybox_rootfs, require_root, run_command, stdout, wait_until, Berth,
    COMMAND_TIMEOUT,
};
use serde_json::{json, Value};

/// A runtime root, a `berth-runtime` link and bundles, all inside one
/// test's berth root (so its leak checks cover them).
struct RuntimeBench {
    berth: Berth,
    bin: PathBuf,
}

impl RuntimeBench {
    fn new() -> Self {
        let berth = Berth::new();
        let bin_dir = berth.root().join("bin");
        fs::create_dir_all(&bin_dir).unwrap();
        let bin = bin_dir.join("berth-runtime");
        std::os::unix::fs::symlink(berth.bin(), &bin).unwrap();
        RuntimeBench { berth, bin }
    }

    fn state_root(&self) -> PathBuf {
        self.berth.root().join("runtime-state")
    }

    /// `berth-runtime --root STATE ARGS...`, in the test's network sandbox.
    fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root").arg(self.state_root()).args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.berth.netns().enter(&mut cmd);
        cmd
    }

    fn output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        run_command(self.cmd(args))
    }

    fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let cmd = self.cmd(args);
        let shown = berth_e2e::command_line(&cmd);
        let out = run_command(cmd);
        assert!(out.status.success(), "{shown}\n{}", describe(&out));
        stdout(&out)
    }

    /// A bundle named `name` with a busybox rootfs and `config` as its
    /// config.json.
    fn bundle(&self, name: &str, config: &Value) -> PathBuf {
        let dir = self.berth.root().join("bundles").join(name);
        make_busybox_rootfs(&dir.join("rootfs"));
        for applet in ["hostname", "touch", "grep", "pwd", "ps", "dd", "wc", "tr"] {
            let link = dir.join("rootfs/bin").join(applet);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", link).unwrap();
            }
        }
        fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(config).unwrap(),
        )
        .unwrap();
        dir
    }

    /// `run --bundle BUNDLE ID` (foreground), tracked for the leak checks.
    fn run(&self, bundle: &Path, id: &str) -> Output {
        let mut cmd = self.cmd(["run", "--bundle"]);
        cmd.arg(bundle).arg(id);
        self.berth.track(id);
        run_command(cmd)
    }

    fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(["state", id])).expect("state prints JSON")
    }

    /// `create` with the container's stdout and stderr going to `log`.
    fn create(&self, id: &str, bundle: &Path, log: &Path, extra: &[&str]) {
        let file = fs::File::create(log).unwrap();
        let mut cmd = self.cmd(["create", "--bundle"]);
        cmd.arg(bundle).args(extra).arg(id);
        cmd.stdout(file.try_clone().unwrap()).stderr(file);
        let shown = berth_e2e::command_line(&cmd);
        let status = cmd.status().expect("run berth-runtime create");
        assert!(status.success(), "{shown}: {status}");
        self.berth.track(id);
    }
}

/// A full 64-hex id, as engines use (and as the leak checks track).
fn new_id() -> String {
    let uuid = || {
        fs::read_to_string("/proc/sys/kernel/random/uuid")
            .unwrap()
            .trim()
            .replace('-', "")
    };
    format!("{}{}", uuid(), uuid())
}

/// runc's `spec` output with `args` as the process (no terminal), in a
/// read-only root.
fn config(args: &[&str]) -> Value {
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "runtime-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
            ],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/timer_list",
                            "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

fn read_when(path: &Path, needle: &str) -> String {
    let mut text = String::new();
    let found = wait_until(COMMAND_TIMEOUT, || {
        text = fs::read_to_string(path).unwrap_or_default();
        text.contains(needle)
    });
    assert!(
        found,
        "{} never showed {needle:?}: {text:?}",
        path.display()
    );
    text
}

fn wait_for_status(bench: &RuntimeBench, id: &str, wanted: &str) {
    let mut last = Value::Null;
    let reached = wait_until(COMMAND_TIMEOUT, || {
        last = bench.state(id);
        last["status"] == wanted
    });
    assert!(reached, "{id} never became {wanted}: {last:#}");
}

#[test]
fn runtime_create_waits_for_start_then_state_kill_and_delete_clean_up() {
    require_root!();
    let bench = RuntimeBench::new();
    let id = new_id();
    let bundle = bench.bundle(
        "life",
        &config(&["sh", "-c", "echo started; exec sleep 600"]),
    );
    let log = bench.berth.root().join("life.log");
    let pid_file = bench.berth.root().join("life.pid");
    bench.create(
        &id,
        &bundle,
        &log,
        &["--pid-file", pid_file.to_str().unwrap()],
    );

    let state = bench.state(&id);
    assert_eq!(state["status"], "created", "{state:#}");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["bundle"], bundle.to_str().unwrap());
    let pid = state["pid"]
        .as_i64()
        .expect("a created container has a pid");
    assert_eq!(fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    // Created means set up and waiting: the command has not run.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(fs::read_to_string(&log).unwrap(), "", "ran before start");

    bench.ok(["start", &id]);
    read_when(&log, "started");
    assert_eq!(bench.state(&id)["status"], "running");
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sleep", "PID 1 is the user's command");

    // A second start is refused: only a created container starts.
    let again = bench.output(["start", &id]);
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));

    let refused = bench.output(["delete", &id]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("running"),
        "{}",
        describe(&refused)
    );

    bench.ok(["kill", &id, "KILL"]);
    wait_for_status(&bench, &id, "stopped");
    bench.ok(["delete", &id]);
    let gone = bench.output(["state", &id]);
    assert_eq!(gone.status.code(), Some(1), "{}", describe(&gone));
    assert!(!bench.state_root().join(&id).exists());
    bench.berth.assert_clean();
}

#[test]
fn runtime_run_passes_the_exit_code_and_removes_the_container() {
    require_root!();
    let bench = RuntimeBench::new();
    let id = new_id();
    let bundle = bench.bundle("run", &config(&["sh", "-c", "echo out; exit 3"]));
    let out = bench.run(&bundle, &id);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(bench.ok(["list", "-q"]), "");

    // A command that does not exist fails at create, with the reason.
    let missing = bench.bundle("missing", &config(&["no-such-command"]));
    let mut cmd = bench.cmd(["run", "--bundle"]);
    cmd.arg(&missing).arg(new_id());
    let out = run_command(cmd);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("executable file not found"),
        "{}",
        describe(&out)
    );
    assert_eq!(bench.ok(["list", "-q"]), "");
    bench.berth.assert_clean();
}

/// A spec without namespaces (the conformance suite's linux_ns_itype):
/// the container shares every namespace of the runtime, mount namespace
/// included, as runc runs it (mounts below its root in the runtime's
/// namespace, entered with chroot); `delete` takes those mounts away.
#[test]
fn runtime_without_namespaces_shares_the_runtimes_and_leaves_no_mount() {
    require_root!();
    let bench = RuntimeBench::new();
    let id = new_id();
    let mut spec = config(&[
        "sh",
        "-c",
        "for ns in mnt pid ipc uts net cgroup; do readlink /proc/self/ns/$ns; done; \
         touch /tmp/inside; ls /dev/null /proc/self/status",
    ]);
    spec["linux"]["namespaces"] = json!([]);
    spec.as_object_mut().unwrap().remove("hostname");
    let bundle = bench.bundle("no-namespaces", &spec);
    let out = bench.run(&bundle, &id);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let own = |ns: &str| fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
    for (i, ns) in ["mnt", "pid", "ipc", "uts"].iter().enumerate() {
        assert_eq!(Path::new(lines[i]), own(ns), "{ns}: {text}");
    }
    // The runtime runs in the test's network sandbox: the container too.
    let mut readlink = bench
        .berth
        .netns()
        .command("readlink", ["/proc/self/ns/net"]);
    readlink.stdout(Stdio::piped());
    let sandbox_net = run_command(readlink);
    assert_eq!(lines[4], stdout(&sandbox_net).trim(), "net: {text}");
    assert_eq!(Path::new(lines[5]), own("cgroup"), "cgroup: {text}");
    assert!(
        text.contains("/dev/null") && text.contains("/proc/self/status"),
        "{text}"
    );
    // Nothing it mounted (its /proc, /dev, /tmp...) is left in this
    // namespace, nor was the host's propagation changed.
    let rootfs = fs::canonicalize(bundle.join("rootfs")).unwrap();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains(rootfs.to_str().unwrap()))
        .collect();
    assert!(left.is_empty(), "mounts left: {left:#?}");
    assert!(
        !rootfs.join("tmp/inside").exists(),
        "/tmp was the container's tmpfs"
    );
    bench.berth.assert_clean();
}

#[test]
fn runtime_exec_joins_the_container_and_passes_exit_codes() {
    require_root!();
    let bench = RuntimeBench::new();
    let id = new_id();
    let bundle = bench.bundle("exec", &config(&["sleep", "600"]));
    let log = bench.berth.root().join("exec.log");
    bench.create(&id, &bundle, &log, &[]);
    bench.ok(["start", &id]);

    let out = bench.output(["exec", &id, "sh", "-c", "hostname; echo $$; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "runtime-test", "UTS namespace joined");
    assert_ne!(
        lines[1], "1",
        "not PID 1, but in the container's PID namespace"
    );
    assert!(lines[1].parse::<u32>().unwrap() < 100, "{text}");

    // --process: a whole process spec (env, cwd, user).
    let process = json!({
        "terminal": false,
        "user": {"uid": 1000, "gid": 1000},
        "args": ["sh", "-c", "echo $GREETING; pwd; id -u"],
        "env": ["PATH=/bin", "GREETING=hello"],
        "cwd": "/tmp"
    });
    let process_file = bench.berth.root().join("process.json");
    fs::write(&process_file, process.to_string()).unwrap();
    let out = bench.output(["exec", "--process", process_file.to_str().unwrap(), &id]);
    assert_eq!(stdout(&out), "hello\n/tmp\n1000\n", "{}", describe(&out));

    // -d with a pid file: the process runs on after exec returns.
    // (Its stdio must not be a pipe this test waits to close.)
    let pid_file = bench.berth.root().join("exec.pid");
    let mut detached = bench.cmd(["exec", "-d", "--pid-file", pid_file.to_str().unwrap()]);
    detached.args([id.as_str(), "sleep", "300"]);
    detached.stdout(Stdio::null()).stderr(Stdio::null());
    assert!(detached.status().unwrap().success());
    let pid: i32 = fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sleep");
    let ps: Vec<i64> = serde_json::from_str(&bench.ok(["ps", "--format", "json", &id])).unwrap();
    assert!(ps.contains(&i64::from(pid)), "{ps:?} lacks {pid}");
    assert_eq!(ps.len(), 2, "{ps:?}");

    bench.ok(["delete", "--force", &id]);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || {
            wait_until(Duration::from_secs(5), || {
                !Path::new(&format!("/proc/{pid}")).exists()
            })
        }
    );
    bench.berth.assert_clean();
}

#[test]
fn runtime_pause_freezes_and_resume_thaws() {
    require_root!();
    let bench = RuntimeBench::new();
    let id = new_id();
    let bundle = bench.bundle(
        "pause",
        &config(&[
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; done",
        ]),
    );
    let log = bench.berth.root().join("pause.log");
    bench.create(&id, &bundle, &log, &[]);
    bench.ok(["start", &id]);
    bench.ok(["pause", &id]);
    assert_eq!(bench.state(&id)["status"], "paused");
    let pid = bench.state(&id)["pid"].as_i64().unwrap();
    let counter = format!("/proc/{pid}/root/tmp/n");
    let before = fs::read_to_string(&counter).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fs::read_to_string(&counter).unwrap(), before, "frozen");
    bench.ok(["resume", &id]);
    assert_eq!(bench.state(&id)["status"], "running");
    assert!(wait_until(Duration::from_secs(5), || {
        fs::read_to_string(&counter).unwrap_or_default() != before
    }));
    bench.ok(["delete", "-f", &id]);
    bench.berth.assert_clean();
}

#[test]
fn runtime_state_says_stopped_after_the_init_is_sigkilled() {
    require_root!();
    let bench = RuntimeBench::new();
    let id = new_id();
    let bundle = bench.bundle("killed", &config(&["sleep", "600"]));
    let log = bench.berth.root().join("killed.log");
    bench.create(&id, &bundle, &log, &[]);
    let pid = bench.state(&id)["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for_status(&bench, &id, "stopped");
    let refused = bench.output(["start", &id]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    bench.ok(["delete", &id]);
    bench.berth.assert_clean();
}

#[test]
fn runtime_applies_the_process_and_linux_settings() {
    require_root!();
    let bench = RuntimeBench::new();
    let id = new_id();
    let script = "id; ulimit -n; cat /proc/self/oom_score_adj; hostname; \
                  grep -E '^(CapBnd|CapEff|CapInh|CapAmb|NoNewPrivs)' /proc/self/status; \
                  touch /rootfile 2>/dev/null && echo root-writable || echo root-readonly; \
                  cat /proc/sys/net/ipv4/ip_forward; pwd; echo $MARK; umask; \
                  cat /proc/timer_list 2>&1 | wc -c; ls /data; ls /unbindable";
    let mut spec = config(&["sh", "-c", script]);
    spec["process"]["user"] =
        json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 63});
    spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 321, "soft": 123}]);
    spec["process"]["oomScoreAdj"] = json!(500);
    spec["process"]["cwd"] = json!("/tmp");
    spec["process"]["env"] = json!(["PATH=/bin", "MARK=marked"]);
    spec["process"]["capabilities"] = json!({
        "bounding": ["CAP_KILL", "CAP_NET_RAW"],
        "effective": ["CAP_KILL"],
        "permitted": ["CAP_KILL"],
        "inheritable": ["CAP_KILL"],
        "ambient": ["CAP_KILL"]
    });
    spec["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    let data = bench.berth.root().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("shared-file"), "x").unwrap();
    spec["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "ro"]}),
    );
    // An unbindable mount survives entering the root (no recursive
    // self-bind of the root after the spec's mounts are made).
    spec["mounts"].as_array_mut().unwrap().push(json!(
        {"destination": "/unbindable", "type": "bind", "source": data, "options": ["bind", "unbindable"]}
    ));
    let bundle = bench.bundle("settings", &spec);
    let out = bench.run(&bundle, &id);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("uid=1000 gid=1000"), "{text}");
    assert!(
        lines[0].contains("groups=") && lines[0].contains("10") && lines[0].contains("20"),
        "{text}"
    );
    assert_eq!(lines[1], "123", "{text}");
    assert_eq!(lines[2], "500", "{text}");
    assert_eq!(lines[3], "runtime-test", "{text}");
    // CAP_KILL (5) and CAP_NET_RAW (13) bound; CAP_KILL survives the exec
    // of a non-root user only because it is ambient.
    assert_eq!(lines[4], "CapInh:\t0000000000000020", "{text}");
    assert_eq!(lines[5], "CapEff:\t0000000000000020", "{text}");
    assert_eq!(lines[6], "CapBnd:\t0000000000002020", "{text}");
    assert_eq!(lines[7], "CapAmb:\t0000000000000020", "{text}");
    assert_eq!(lines[8], "NoNewPrivs:\t1", "{text}");
    assert_eq!(lines[9], "root-readonly", "{text}");
    assert_eq!(
        lines[10], "1",
        "sysctl in the container's network namespace: {text}"
    );
    assert_eq!(lines[11], "/tmp", "{text}");
    assert_eq!(lines[12], "marked", "{text}");
    assert_eq!(lines[13], "0077", "{text}");
    assert_eq!(
        lines[14], "0",
        "masked /proc/timer_list reads empty: {text}"
    );
    assert_eq!(lines[15], "shared-file", "{text}");
    assert_eq!(lines[16], "shared-file", "{text}");
    bench.berth.assert_clean();
}

#[test]
fn runtime_runs_hooks_in_order_with_the_state_on_stdin() {
    require_root!();
    let bench = RuntimeBench::new();
    let id = new_id();
    let record = bench.berth.root().join("hooks");
    fs::create_dir_all(&record).unwrap();
    let order = record.join("order");
    let hook = |name: &str, target: &Path| {
        json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!(
                "read -r state; echo \"{name} $state\" | grep -o '^{name}\\|\"status\":\"[a-z]*\"' | tr '\\n' ' ' >> {t}; echo >> {t}",
                t = target.display())],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "timeout": 10
        })
    };
    let mut spec = config(&["sh", "-c", "echo ran"]);
    spec["root"]["readonly"] = json!(false);
    spec["hooks"] = json!({
        "prestart": [hook("prestart", &order)],
        "createRuntime": [hook("createRuntime", &order)],
        "createContainer": [hook("createContainer", &order)],
        "startContainer": [hook("startContainer", Path::new("/hooklog/order"))],
        "poststart": [hook("poststart", &order)],
        "poststop": [hook("poststop", &order)]
    });
    spec["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/hooklog", "type": "bind", "source": record, "options": ["rbind", "rw"]
    }));
    let bundle = bench.bundle("hooks", &spec);
    let log = bench.berth.root().join("hooks.log");
    bench.create(&id, &bundle, &log, &[]);
    let after_create = fs::read_to_string(&order).unwrap();
    assert_eq!(
        after_create,
        "prestart \"status\":\"creating\" \ncreateRuntime \"status\":\"creating\" \ncreateContainer \"status\":\"created\" \n",
        "hooks at create"
    );
    bench.ok(["start", &id]);
    read_when(&log, "ran");
    wait_for_status(&bench, &id, "stopped");
    bench.ok(["delete", &id]);
    let all = fs::read_to_string(&order).unwrap();
    let names: Vec<&str> = all
        .lines()
        .map(|l| l.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "{all}"
    );
    assert!(all.ends_with("poststop \"status\":\"stopped\" \n"), "{all}");
    bench.berth.assert_clean();
}

#[test]
fn runtime_sends_the_terminal_over_the_console_socket() {
    require_root!();
    let bench = RuntimeBench::new();
    let id = new_id();
    let mut spec = config(&["sh"]);
    spec["process"]["terminal"] = json!(true);
    spec["process"]["consoleSize"] = json!({"height": 33, "width": 111});
    let bundle = bench.bundle("tty", &spec);
    let socket = bench.berth.root().join("console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let log = bench.berth.root().join("tty.log");
    let mut create = bench.cmd(["create", "--console-socket"]);
    create.arg(&socket).arg("--bundle").arg(&bundle).arg(&id);
    create
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    let mut child = create.spawn().unwrap();
    bench.berth.track(&id);
    let (stream, _) = listener.accept().unwrap();
    let master = receive_fd(&stream);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "create: {status}: {}",
        fs::read_to_string(&log).unwrap()
    );
    bench.ok(["start", &id]);
    let mut terminal = fs::File::from(master);
    terminal
        .write_all(b"stty size; echo $((6*7))x; exit\n")
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let done = wait_until(COMMAND_TIMEOUT, || match terminal.read(&mut buf) {
        Ok(n) if n > 0 => {
            seen.extend_from_slice(&buf[..n]);
            String::from_utf8_lossy(&seen).contains("42x")
        }
        _ => true,
    });
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(done && text.contains("42x"), "{text:?}");
    assert!(text.contains("33 111"), "consoleSize applied: {text:?}");
    wait_for_status(&bench, &id, "stopped");
    bench.ok(["delete", &id]);
    bench.berth.assert_clean();
}

fn receive_fd(stream: &std::os::unix::net::UnixStream) -> OwnedFd {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .expect("recvmsg on the console socket");
    for cmsg in msg.cmsgs().expect("control messages") {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel just gave us this descriptor.
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no descriptor arrived on the console socket");
}

#[test]
fn runtime_memory_limit_really_kills() {
    require_root!();
    let bench = RuntimeBench::new();
    let id = new_id();
    let mut spec = config(&["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    spec["linux"]["resources"]["memory"] = json!({"limit": 32 * 1024 * 1024});
    let bundle = bench.bundle("oom", &spec);
    let out = bench.run(&bundle, &id);
    assert_eq!(out.status.code(), Some(137), "{}", describe(&out));
    bench.berth.assert_clean();
}

#[test]
fn runtime_errors_are_one_line_and_json_in_the_log() {
    require_root!();
    let bench = RuntimeBench::new();
    let log = bench.berth.root().join("runtime.log");
    let out = bench.output([
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "no-such-container",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    let line: Value = serde_json::from_str(fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"].as_str().unwrap().contains("no-such-container"),
        "{line}"
    );
    let bad_id = bench.output(["state", "../escape"]);
    assert_eq!(bad_id.status.code(), Some(1), "{}", describe(&bad_id));
    let features: Value = serde_json::from_str(&bench.ok(["features"])).unwrap();
    assert!(features["linux"]["namespaces"].as_array().unwrap().len() >= 7);
    assert!(bench.ok(["--version"]).contains("spec: 1.2.0"));
    bench.berth.assert_clean();
}

#[test]
fn runtime_user_namespace_maps_root_to_an_unprivileged_host_user() {
    require_root!();
    let bench = RuntimeBench::new();
    let id = new_id();
    let mut spec = config(&[
        "sh",
        "-c",
        "cat /proc/self/uid_map; id -u; touch /written-inside; cat /etc/host-secret; echo end",
    ]);
    spec["root"]["readonly"] = json!(false);
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    // A host file only the host's root may read, given to the container.
    let secret = bench.berth.root().join("host-secret");
    fs::write(&secret, "top secret\n").unwrap();
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    spec["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/etc/host-secret", "type": "bind", "source": secret, "options": ["rbind", "ro"]
    }));
    let bundle = bench.bundle("userns", &spec);
    let rootfs = bundle.join("rootfs");
    let chown = Command::new("chown")
        .args(["-R", "100000:100000"])
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(chown.success());
    let out = bench.run(&bundle, &id);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    let map: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"], "{text}");
    assert_eq!(text.lines().nth(1), Some("0"), "root inside: {text}");
    assert!(
        !text.contains("top secret"),
        "read a host root-only file: {text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        describe(&out)
    );
    // What root wrote inside belongs to the mapped user on the host.
    let meta = fs::metadata(rootfs.join("written-inside")).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            std::os::unix::fs::MetadataExt::gid(&meta)
        ),
        (100000, 100000)
    );
    bench.berth.assert_clean();
}

/// `linux.seccomp` is compiled and loaded: a denied call fails with the
/// profile's errno in the container's process and in an exec'd one, with
/// and without no_new_privs (then it must be loaded before the
/// capabilities are dropped), and the process shows seccomp mode 2.
#[test]
fn runtime_loads_the_specs_seccomp_filter() {
    require_root!();
    let bench = RuntimeBench::new();
    // mkdir fails with EXDEV ("Invalid cross-device link"), uname with
    // ENOSYS only for uname(2) itself; everything else is allowed.
    let seccomp = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18},
            {"names": ["no_such_call_in_any_kernel"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}
        ]
    });
    let script = "grep -E '^Seccomp:' /proc/self/status; mkdir /tmp/d 2>&1; \
                  touch /tmp/f && echo touch-ok; sleep 30";
    for no_new_privileges in [true, false] {
        let id = new_id();
        let mut spec = config(&["sh", "-c", script]);
        spec["process"]["noNewPrivileges"] = json!(no_new_privileges);
        spec["linux"]["seccomp"] = seccomp.clone();
        let bundle = bench.bundle(&format!("seccomp-{no_new_privileges}"), &spec);
        let log = bundle.join("out");
        let out_file = fs::File::create(&log).unwrap();
        let mut create = bench.cmd(["create", "--bundle", bundle.to_str().unwrap(), &id]);
        create
            .stdout(out_file.try_clone().unwrap())
            .stderr(out_file);
        let status = create.status().unwrap();
        assert!(
            status.success(),
            "create: {}",
            fs::read_to_string(&log).unwrap()
        );
        bench.ok(["start", &id]);
        let text = read_when(&log, "touch-ok");
        assert!(
            text.contains("Seccomp:\t2"),
            "nnp={no_new_privileges}: {text}"
        );
        assert!(
            text.contains("Invalid cross-device link"),
            "mkdir must fail with the profile's errno: {text}"
        );
        // An exec'd process gets the container's filter too.
        let exec = bench.output(["exec", &id, "sh", "-c", "mkdir /tmp/e"]);
        assert!(!exec.status.success(), "{}", describe(&exec));
        assert!(
            String::from_utf8_lossy(&exec.stderr).contains("Invalid cross-device link"),
            "{}",
            describe(&exec)
        );
        bench.ok(["exec", &id, "sh", "-c", "touch /tmp/g"]);
        bench.ok(["kill", &id, "KILL"]);
        wait_for_status(&bench, &id, "stopped");
        bench.ok(["delete", &id]);
    }
    // What cannot be honoured is refused, not run unconfined.
    let mut spec = config(&["true"]);
    spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_NOTIFY"});
    let bundle = bench.bundle("seccomp-notify", &spec);
    let out = bench.run(&bundle, &new_id());
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SCMP_ACT_NOTIFY"),
        "{}",
        describe(&out)
    );
    bench.berth.assert_clean();
}
