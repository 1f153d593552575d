//! podman 4, private in every way a test can make it.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use super::{
    cgroup_leftovers, output_ok, output_within, panic_on_leaks, runtime_leftovers,
    settle_and_force, write_busybox_oci_archive, CgroupParent, OciRuntime, RUNTIME_NAME,
};
use crate::{describe, stdout, NetSandbox, COMMAND_TIMEOUT};

/// podman's run root below its directory: a short name, because podman
/// refuses a runroot path longer than 50 characters.
const RUNROOT: &str = "rr";

/// podman with everything private: storage, state, configuration, locks
/// and networks in a temporary directory, its network stack (bridge,
/// veths, firewall rules) in a network namespace of its own, containers
/// below a [`CgroupParent`], and [`BUSYBOX_IMAGE`](super::BUSYBOX_IMAGE) loaded.
///
/// podman itself still touches two machine-wide places that it hard-codes:
/// `/run/containers/networks` (netavark's run directory) and
/// `/var/lib/containers/cache` (the image copy cache); and it makes
/// `/run/netns` a shared mount, as `ip netns add` does.
#[derive(Debug)]
pub struct Podman {
    dir: TempDir,
    storage_driver: &'static str,
    runtime: OciRuntime,
    cgroup_parent: CgroupParent,
    netns: NetSandbox,
}

impl Podman {
    /// A private podman that runs containers with `runtime`.
    pub fn new(runtime: OciRuntime) -> Self {
        let mut podman = Podman {
            dir: tempfile::Builder::new()
                .prefix("berth-podman-")
                .tempdir()
                .expect("create podman's directory"),
            storage_driver: "overlay",
            runtime,
            cgroup_parent: CgroupParent::new("podman"),
            netns: NetSandbox::new(),
        };
        podman.write_config();
        let archive = podman.dir.path().join("busybox.oci.tar");
        write_busybox_oci_archive(&archive);
        let load = |podman: &Podman| {
            let mut cmd = podman.cmd(["load", "-i"]);
            cmd.arg(&archive);
            output_within(cmd, COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
        };
        let mut loaded = load(&podman);
        if !loaded.status.success() {
            // Some file systems cannot hold overlay's upper directories.
            eprintln!(
                "podman load with the overlay driver failed, trying vfs\n{}",
                describe(&loaded)
            );
            podman.storage_driver = "vfs";
            for sub in ["root", RUNROOT] {
                let dir = podman.dir.path().join(sub);
                let _ = fs::remove_dir_all(&dir);
                fs::create_dir_all(&dir).expect("recreate podman's storage");
            }
            loaded = load(&podman);
        }
        assert!(
            loaded.status.success(),
            "podman load of the busybox image failed\n{}",
            describe(&loaded)
        );
        podman
    }

    /// The runtime podman is told to use.
    pub fn runtime(&self) -> &OciRuntime {
        &self.runtime
    }

    /// Where podman keeps everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cgroup its containers go below.
    pub fn cgroup_parent(&self) -> &CgroupParent {
        &self.cgroup_parent
    }

    /// The network namespace podman runs in.
    pub fn netns(&self) -> &NetSandbox {
        &self.netns
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn write_config(&self) {
        for sub in ["root", RUNROOT, "tmp", "networks", "volumes"] {
            fs::create_dir_all(self.path(sub)).expect("create podman's directories");
        }
        let (nofile, nproc) = container_rlimits();
        // What has no command-line flag. Runtimes named in
        // runtime_supports_json get `--log FILE --log-format json` (podman
        // matches the binary's file name): berth-runtime too, like runc.
        // conmon passes CONTAINERS_CONF on to podman's cleanup command.
        let containers_conf = format!(
            r#"[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]

[engine]
events_logfile_path = "{events}"
image_copy_tmp_dir = "{tmp}"
lock_type = "file"
pull_policy = "never"
runtime_supports_json = ["crun", "runc", "kata", "runsc", "krun", "{RUNTIME_NAME}"]

[network]
network_backend = "netavark"
"#,
            events = self.path("events.log").display(),
            tmp = self.path("tmp").display(),
        );
        fs::write(self.path("containers.conf"), containers_conf).expect("write containers.conf");
        let storage_conf = format!(
            "[storage]\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            self.path("root").display(),
            self.path(RUNROOT).display()
        );
        fs::write(self.path("storage.conf"), storage_conf).expect("write storage.conf");
        // No registry is reachable: never look one up.
        fs::write(
            self.path("registries.conf"),
            "unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n",
        )
        .expect("write registries.conf");
    }

    /// `podman <private globals> ARGS...`, in podman's network namespace,
    /// stdin empty, output piped.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path(RUNROOT))
            .arg("--tmpdir")
            .arg(self.path("tmp"))
            .arg("--volumepath")
            .arg(self.path("volumes"))
            .arg("--network-config-dir")
            .arg(self.path("networks"))
            .args(["--storage-driver", self.storage_driver])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .arg("--runtime")
            .arg(self.runtime.path())
            .args(args)
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .env("TMPDIR", self.path("tmp"))
            .env_remove("CONTAINER_HOST")
            .env_remove("CONTAINER_CONNECTION")
            // conmon inherits it, and writes an `oom` file there.
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.netns.enter(&mut cmd);
        cmd
    }

    /// Run `podman ARGS...` to the end.
    pub fn output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        output_within(self.cmd(args), COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Run `podman ARGS...`, assert it succeeded, return its stdout.
    pub fn run_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        stdout(&output_ok(self.cmd(args)))
    }

    /// `podman run --cgroup-parent <ours> ARGS...` (not started).
    pub fn run_cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.cmd(["run", "--cgroup-parent", self.cgroup_parent.path()]);
        cmd.args(args);
        cmd
    }

    /// `podman run --cgroup-parent <ours> ARGS...` to the end.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        output_within(self.run_cmd(args), COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `podman inspect --format FORMAT CONTAINER`, trimmed.
    pub fn inspect(&self, container: &str, format: &str) -> String {
        self.run_ok(["inspect", "--format", format, container])
            .trim()
            .to_owned()
    }

    /// Remove every container and everything podman mounted; returns what
    /// the runtime or podman left behind (and cleaned up by force).
    fn remove_all(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match output_within(
            self.cmd(["rm", "--all", "--force", "--time", "0"]),
            COMMAND_TIMEOUT,
        ) {
            Ok(out) if !out.status.success() => {
                problems.push(format!("`podman rm -af` failed\n{}", describe(&out)));
            }
            Err(e) => problems.push(e),
            Ok(_) => {}
        }
        problems.extend(runtime_leftovers(&self.runtime, None, self.dir.path()));
        problems.extend(settle_and_force(self.dir.path()));
        // podman moves conmon into `<parent>/conmon` and leaves it.
        problems.extend(cgroup_leftovers(&self.cgroup_parent, &["conmon"]));
        problems
    }

    /// Remove every container, then assert that nothing is left: no
    /// process or mount of this podman, no container the runtime still
    /// lists, no container cgroup.
    pub fn assert_clean(&self) {
        panic_on_leaks(
            &format!("podman with {}", self.runtime.name()),
            &self.remove_all(),
        );
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let problems = self.remove_all();
        if !std::thread::panicking() {
            panic_on_leaks(&format!("podman with {}", self.runtime.name()), &problems);
        }
    }
}

/// The rlimits containers get: podman defaults to 1048576 for both, which
/// a runtime cannot set when podman's own limits are lower (no
/// CAP_SYS_RESOURCE, e.g. in a sandbox). podman lowers its own nproc to
/// kernel.pid_max when it can, and its children inherit what it has.
fn container_rlimits() -> (u64, u64) {
    use nix::sys::resource::{getrlimit, Resource};
    let (_, nofile) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit NOFILE");
    let (_, nproc) = getrlimit(Resource::RLIMIT_NPROC).expect("getrlimit NPROC");
    let pid_max: u64 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u64::MAX);
    (nofile.min(1 << 20), nproc.min(pid_max))
}
