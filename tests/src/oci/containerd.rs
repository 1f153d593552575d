//! containerd 1.6 as a private daemon, driven with `ctr`.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{
    cgroup_leftovers, output_ok, output_within, panic_on_leaks, runtime_leftovers,
    settle_and_force, write_busybox_oci_archive, CgroupParent, OciRuntime, BUSYBOX_IMAGE, SETTLE,
};
use crate::{
    describe, process_alive, stdout, wait_status_with_timeout, wait_until, NetSandbox,
    COMMAND_TIMEOUT,
};

/// The containerd namespace the tests use.
pub const CONTAINERD_NAMESPACE: &str = "berth-test";

/// A containerd daemon of our own: root, state, socket and the runtime's
/// state in a temporary directory, no CRI plugin, in a network namespace
/// of its own, with [`BUSYBOX_IMAGE`] imported into
/// [`CONTAINERD_NAMESPACE`]. Containers run with the given runtime
/// through containerd's runc shim.
///
/// containerd 1.6 still puts its shims' sockets in `/run/containerd/s`.
#[derive(Debug)]
pub struct Containerd {
    dir: TempDir,
    daemon: Option<Child>,
    runtime: OciRuntime,
    cgroup_parent: CgroupParent,
    netns: NetSandbox,
}

impl Containerd {
    /// Start the daemon and import the image.
    pub fn new(runtime: OciRuntime) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-containerd-")
            .tempdir()
            .expect("create containerd's directory");
        let mut containerd = Containerd {
            dir,
            daemon: None,
            runtime,
            cgroup_parent: CgroupParent::new("containerd"),
            netns: NetSandbox::new(),
        };
        containerd.start();
        let archive = containerd.dir.path().join("busybox.oci.tar");
        write_busybox_oci_archive(&archive);
        let mut import = containerd.ctr(["image", "import"]);
        import.arg(&archive);
        output_ok(import);
        containerd
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// The daemon's gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.path("containerd.sock")
    }

    /// The runtime's `--root` as the shim passes it (the shim adds the
    /// namespace).
    pub fn runtime_root(&self) -> PathBuf {
        self.path("runtime").join(CONTAINERD_NAMESPACE)
    }

    /// Where the tests may put files (e.g. `--log-uri` targets).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn runtime(&self) -> &OciRuntime {
        &self.runtime
    }

    pub fn cgroup_parent(&self) -> &CgroupParent {
        &self.cgroup_parent
    }

    fn start(&mut self) {
        for sub in ["root", "state", "opt", "runtime", "fifo"] {
            fs::create_dir_all(self.path(sub)).expect("create containerd's directories");
        }
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = self.path("root").display(),
            state = self.path("state").display(),
            socket = self.socket().display(),
            opt = self.path("opt").display(),
        );
        let config_path = self.path("config.toml");
        fs::write(&config_path, config).expect("write containerd's config");
        let log = fs::File::create(self.path("containerd.log")).expect("create containerd.log");
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(&config_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log);
        self.netns.enter(&mut cmd);
        self.daemon = Some(cmd.spawn().expect("start containerd"));
        let ready = wait_until(Duration::from_secs(20), || {
            if self.daemon_exited() {
                return true;
            }
            self.socket().exists()
                && output_within(self.ctr(["version"]), COMMAND_TIMEOUT)
                    .is_ok_and(|o| o.status.success())
        });
        let log = fs::read_to_string(self.path("containerd.log")).unwrap_or_default();
        assert!(
            ready && !self.daemon_exited(),
            "containerd did not come up; its log:\n{log}"
        );
    }

    fn daemon_exited(&mut self) -> bool {
        self.daemon
            .as_mut()
            .is_some_and(|d| !matches!(d.try_wait(), Ok(None)))
    }

    /// `ctr --address SOCK -n berth-test ARGS...`, output piped.
    pub fn ctr<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.socket())
            .args(["--namespace", CONTAINERD_NAMESPACE])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.netns.enter(&mut cmd);
        cmd
    }

    /// Run `ctr ARGS...` to the end.
    pub fn output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        output_within(self.ctr(args), COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Run `ctr ARGS...`, assert it succeeded, return its stdout.
    pub fn run_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        stdout(&output_ok(self.ctr(args)))
    }

    /// `ctr run` with the runtime under this containerd, its state root,
    /// a cgroup below ours and private FIFOs, then `FLAGS IMAGE ID COMMAND`.
    pub fn run_cmd(&self, flags: &[&str], id: &str, command: &[&str]) -> Command {
        let mut cmd = self.ctr(["run", "--runc-binary"]);
        cmd.arg(self.runtime.path())
            .arg("--runc-root")
            .arg(self.path("runtime"))
            .arg("--fifo-dir")
            .arg(self.path("fifo"))
            .arg("--cgroup")
            .arg(format!("{}/{id}", self.cgroup_parent.path()))
            .args(flags)
            .arg(BUSYBOX_IMAGE)
            .arg(id)
            .args(command);
        cmd
    }

    /// [`Containerd::run_cmd`] to the end.
    pub fn run(&self, flags: &[&str], id: &str, command: &[&str]) -> Output {
        output_within(self.run_cmd(flags, id, command), COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ctr task exec --fifo-dir <ours> --exec-id EXEC_ID ID COMMAND`.
    pub fn exec_cmd(&self, id: &str, exec_id: &str, command: &[&str]) -> Command {
        let mut cmd = self.ctr(["task", "exec", "--fifo-dir"]);
        cmd.arg(self.path("fifo"))
            .args(["--exec-id", exec_id, id])
            .args(command);
        cmd
    }

    /// The ids `ctr task ls -q` / `ctr container ls -q` print.
    pub fn ids(&self, kind: &str) -> Vec<String> {
        self.run_ok([kind, "ls", "-q"])
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// PIDs of the runc shims serving this daemon (their command line
    /// names its socket).
    pub fn shims(&self) -> Vec<i32> {
        let socket = self.socket().to_string_lossy().into_owned();
        crate::processes_using(&socket, &[])
            .into_iter()
            .map(|(pid, _)| pid)
            .filter(|&pid| {
                fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                    exe.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("containerd-shim"))
                })
            })
            .collect()
    }

    /// Kill and delete every task, remove every container; returns what
    /// failed.
    fn remove_containers(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut try_ctr = |args: &[&str]| match output_within(self.ctr(args), COMMAND_TIMEOUT) {
            Ok(out) if out.status.success() => {}
            Ok(out) => problems.push(format!(
                "`ctr {}` failed\n{}",
                args.join(" "),
                describe(&out)
            )),
            Err(e) => problems.push(e),
        };
        let listed = |kind: &str| -> Vec<String> {
            output_within(self.ctr([kind, "ls", "-q"]), COMMAND_TIMEOUT)
                .map(|o| stdout(&o).split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        for task in listed("task") {
            // A stopped task refuses SIGKILL; delete --force covers both.
            let _ = output_within(
                self.ctr(["task", "kill", "--signal", "SIGKILL", &task]),
                COMMAND_TIMEOUT,
            );
            try_ctr(&["task", "delete", "--force", &task]);
        }
        for container in listed("container") {
            try_ctr(&["container", "rm", &container]);
        }
        problems
    }

    /// Stop the daemon (SIGTERM, then SIGKILL), then kill the shims it
    /// left and remove their sockets; returns the shims that were left.
    fn stop(&mut self) -> Vec<String> {
        if let Some(mut daemon) = self.daemon.take() {
            crate::kill(daemon.id() as i32, libc::SIGTERM);
            if wait_status_with_timeout(&mut daemon, Duration::from_secs(10)).is_none() {
                let _ = daemon.kill();
                let _ = daemon.wait();
            }
        }
        let mut left = Vec::new();
        let mut shims = self.shims();
        wait_until(SETTLE, || {
            shims = self.shims();
            shims.is_empty()
        });
        for pid in shims {
            let sockets = listening_sockets(pid);
            left.push(format!(
                "shim {pid} ({}) with sockets {sockets:?}",
                fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                    .unwrap_or_default()
            ));
            crate::kill(pid, libc::SIGKILL);
            wait_until(SETTLE, || !process_alive(pid));
            for socket in sockets {
                let _ = fs::remove_file(socket);
            }
        }
        left
    }

    /// Everything the runtime, the shims or containerd left, cleaned up
    /// by force.
    fn remove_all(&mut self) -> Vec<String> {
        // Once stopped (by `assert_clean`), ctr could only time out.
        let mut problems = if self.daemon.is_some() {
            self.remove_containers()
        } else {
            Vec::new()
        };
        problems.extend(self.stop());
        let runtime_root = self.runtime_root();
        if runtime_root.exists() {
            problems.extend(runtime_leftovers(
                &self.runtime,
                Some(&runtime_root),
                self.dir.path(),
            ));
        }
        problems.extend(settle_and_force(self.dir.path()));
        problems.extend(cgroup_leftovers(&self.cgroup_parent, &[]));
        problems
    }

    /// Remove every task and container, stop containerd, then assert
    /// that nothing is left: no shim, process or mount, no container the
    /// runtime still lists, no cgroup. The daemon is gone afterwards.
    pub fn assert_clean(mut self) {
        let problems = self.remove_all();
        panic_on_leaks(
            &format!("containerd with {}", self.runtime.name()),
            &problems,
        );
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let problems = self.remove_all();
        if !std::thread::panicking() {
            panic_on_leaks(
                &format!("containerd with {}", self.runtime.name()),
                &problems,
            );
        }
    }
}

/// The paths of the listening unix sockets process `pid` holds (from
/// /proc/net/unix, matched by inode).
fn listening_sockets(pid: i32) -> Vec<PathBuf> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            link.to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    // Num RefCount Protocol Flags Type St Inode Path; St 01 = listening.
    fs::read_to_string(format!("/proc/{pid}/net/unix"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (state, inode, path) = (fields.get(5)?, fields.get(6)?, fields.get(7)?);
            (*state == "01" && inodes.iter().any(|i| i == inode) && path.starts_with('/'))
                .then(|| PathBuf::from(path))
        })
        .collect()
}
