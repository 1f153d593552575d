//! Shared helpers for berth's privileged end-to-end tests.
//!
//! Every test file builds on the same few pieces:
//! - [`require_root!`]: skip (with a message) when not running as root;
//! - [`Berth`]: an isolated state root (`berth --root <tempdir>`) with
//!   helpers to run the real binary, and the leak checks that every test
//!   ends with ([`Berth::assert_clean`]);
//! - [`Pty`]: a pseudo-terminal pair to drive `berth run -t` like a user;
//! - [`TarBuilder`]: raw tar archives, including the malicious ones that
//!   the `tar` crate refuses to write;
//! - small process helpers (timeouts, background containers);
//! - [`registry`]: a real registry on 127.0.0.1 and images pushed to it,
//!   for pull tests.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use berth_cgroup::mountinfo::MountEntry;
use berth_cgroup::{Hierarchies, Layout};
use tempfile::TempDir;

pub mod netns_tools;
pub mod oci;
pub mod registry;

/// How long any single berth command may take before a test gives up on
/// it (generous: inside a slow emulated VM a run can take seconds).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// True when the tests run as root (euid 0), which they need.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Return early from the current test, saying why, unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// The `berth` binary under test: `$BERTH_BIN`, or the workspace's
/// `target/debug/berth`.
pub fn berth_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BERTH_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "BERTH_BIN={} does not exist: build it with `cargo build -p cli`",
            bin.display()
        );
        return bin;
    }
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/berth");
    assert!(
        bin.is_file(),
        "the berth binary was not found: set BERTH_BIN to its absolute path, \
         or build it at {} with `cargo build -p cli`",
        bin.display()
    );
    bin
}

/// A readable account of a finished command, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Assert that berth failed the way docker's convention says berth
/// failures look: exit code `code`, and exactly one line on stderr that
/// starts with `berth: `. Returns that line.
pub fn assert_berth_error(output: &Output, code: i32) -> String {
    let err = stderr(output);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        output.status.code() == Some(code)
            && lines.len() == 1
            && lines[0].starts_with("berth: ")
            && lines[0].len() > "berth: ".len(),
        "expected exit {code} and one stderr line starting with `berth: `\n{}",
        describe(output)
    );
    lines[0].to_owned()
}

/// [`assert_berth_error`] for commands that take several targets (`rm`,
/// `image rm`): docker ends those with 1 when any target failed; berth's
/// general failure code 125 is accepted too.
pub fn assert_target_error(output: &Output) -> String {
    let code = output.status.code();
    assert!(
        matches!(code, Some(1 | 125)),
        "expected exit 1 (or 125)\n{}",
        describe(output)
    );
    assert_berth_error(output, code.unwrap_or(1))
}

/// Wait for `child` at most `timeout`, collecting its piped stdout and
/// stderr; kills it (and fails the test) when the time is up.
pub fn wait_with_timeout(child: Child, timeout: Duration) -> Output {
    wait_output_within(child, timeout).unwrap_or_else(|killed| {
        panic!(
            "command did not finish within {timeout:?}; stderr so far:\n{}",
            String::from_utf8_lossy(&killed.stderr)
        )
    })
}

/// [`wait_with_timeout`] without the panic (for `Drop`): when the time is
/// up the child is killed, and `Err` has its stderr until then.
pub fn wait_output_within(mut child: Child, timeout: Duration) -> Result<Output, Output> {
    fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    match wait_status_with_timeout(&mut child, timeout) {
        Some(status) => Ok(Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        }),
        None => {
            let _ = child.kill();
            let status = child.wait().expect("waitpid");
            // stdout may be held open by a grandchild: not waited for.
            Err(Output {
                status,
                stdout: Vec::new(),
                stderr: err.join().unwrap_or_default(),
            })
        }
    }
}

/// `child.wait()` with a deadline; `None` if it is still running then.
pub fn wait_status_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Poll `condition` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child process that is killed and reaped if the test ends (or
/// panics) before it does.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Wait for the process at most `timeout`; panics if it is still
    /// running then.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        wait_status_with_timeout(&mut self.0, timeout)
            .unwrap_or_else(|| panic!("process {} still running after {timeout:?}", self.0.id()))
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// An isolated berth: its own state root in a temporary directory.
///
/// Dropping it removes every container (`berth rm -f`), and, unless the
/// test is already failing, checks that nothing leaked (see
/// [`Berth::leaks`]); whatever leaked is then cleaned up by force so that
/// one failing test does not spoil the machine for the next.
#[derive(Debug)]
pub struct Berth {
    root: TempDir,
    bin: PathBuf,
    /// Every berth command runs in this private network namespace, so the
    /// bridges, veths and iptables rules a test makes never touch the host
    /// and vanish with it. Dropped after the leak checks (field order).
    netns: NetSandbox,
}

/// A network namespace of its own (held open by a `sleep` process), with
/// `lo` up: the "host" as far as a test's containers are concerned.
#[derive(Debug)]
pub struct NetSandbox {
    holder: Child,
    netns: fs::File,
}

impl NetSandbox {
    pub fn new() -> Self {
        let mut holder = Command::new("unshare")
            .args(["--net", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start a network namespace holder (unshare)");
        let mine = fs::read_link("/proc/self/ns/net").expect("read my netns");
        let path = format!("/proc/{}/ns/net", holder.id());
        let ready = wait_until(Duration::from_secs(5), || {
            fs::read_link(&path).is_ok_and(|ns| ns != mine)
        });
        if !ready {
            let _ = holder.kill();
            panic!("unshare --net did not enter a new network namespace");
        }
        let netns = fs::File::open(&path).expect("open the sandbox netns");
        let sandbox = NetSandbox { holder, netns };
        let status = sandbox
            .command("ip", ["link", "set", "lo", "up"])
            .status()
            .expect("run ip");
        assert!(status.success(), "ip link set lo up failed in the sandbox");
        sandbox
    }

    /// Make `cmd` start inside this network namespace.
    pub fn enter(&self, cmd: &mut Command) {
        let fd = self.netns.as_raw_fd();
        // SAFETY: setns only reads the fd number, which stays open in the
        // forked child until exec; no allocation happens in the hook.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Any program, run inside the sandbox (e.g. `ip`, `wget`).
    pub fn command<I, S>(&self, program: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(program);
        cmd.args(args);
        self.enter(&mut cmd);
        cmd
    }

    /// Path of the namespace file, for `nsenter --net=PATH` or setns.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder.id()))
    }
}

impl Default for NetSandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetSandbox {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

impl Default for Berth {
    fn default() -> Self {
        Self::new()
    }
}

impl Berth {
    /// A fresh, empty state root under `$TMPDIR` (or /tmp).
    pub fn new() -> Self {
        let bin = berth_bin();
        let root = tempfile::Builder::new()
            .prefix("berth-e2e-")
            .tempdir()
            .expect("create a temporary state root");
        Berth {
            root,
            bin,
            netns: NetSandbox::new(),
        }
    }

    /// The network namespace berth runs in (the containers' "host").
    pub fn netns(&self) -> &NetSandbox {
        &self.netns
    }

    /// The state root (what `--root` gets).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The path of the binary under test.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// `berth --root <root> ARGS...`, stdin empty, stdout/stderr piped.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root")
            .arg(self.root())
            .args(args)
            .env_remove("BERTH_ROOT")
            // The engine's user-namespace settings come from each test.
            .env_remove("BERTH_USERNS_REMAP")
            .env_remove("BERTH_SUBUID_FILE")
            .env_remove("BERTH_SUBGID_FILE")
            // The host's resolvers unless a test names its own.
            .env_remove("BERTH_RESOLV_CONF")
            .env_remove("BERTH_UPSTREAM_RESOLV_CONF")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.netns.enter(&mut cmd);
        cmd
    }

    /// Run `berth ARGS...` to the end (with [`COMMAND_TIMEOUT`]).
    pub fn output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(self.cmd(args))
    }

    /// Run `berth ARGS...`, assert it succeeded, return its stdout.
    pub fn run_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let cmd = self.cmd(args);
        let line = command_line(&cmd);
        let output = run_command(cmd);
        assert!(
            output.status.success(),
            "`{line}` failed\n{}",
            describe(&output)
        );
        stdout(&output)
    }

    /// Start `berth ARGS...` in the background (stdin empty, output piped).
    pub fn spawn<I, S>(&self, args: I) -> KillOnDrop
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        KillOnDrop(self.cmd(args).spawn().expect("spawn berth"))
    }

    /// The ids `berth ps -a -q` prints.
    pub fn container_ids(&self) -> Vec<String> {
        self.run_ok(["ps", "-a", "-q"])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The stored record of one container (its `config.json`, which has
    /// more than docker's shape that `berth inspect` prints), read after
    /// `berth inspect` found it and brought it up to date.
    pub fn inspect(&self, container: &str) -> serde_json::Value {
        let id = self.run_ok(["inspect", "--type", "container", "-f", "{{.Id}}", container]);
        let path = self
            .root()
            .join("containers")
            .join(id.trim())
            .join("config.json");
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read the record of {container}: {e}"));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("the record of {container} is not JSON ({e}):\n{text}"))
    }

    /// Directory entries under `<root>/<sub>` (hidden files such as lock
    /// files left out); empty when the directory does not exist.
    pub fn entries(&self, sub: &str) -> Vec<PathBuf> {
        let mut entries: Vec<PathBuf> = match fs::read_dir(self.root().join(sub)) {
            Ok(dir) => dir
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .collect(),
            Err(_) => Vec::new(),
        };
        entries.sort();
        entries
    }

    /// The containers' private directories (`<root>/containers/<id>`).
    pub fn container_dirs(&self) -> Vec<PathBuf> {
        self.entries("containers")
    }

    /// The image layers' directories (`<root>/images/layers/*/diff`).
    pub fn layer_rootfses(&self) -> Vec<PathBuf> {
        self.entries("images/layers")
            .into_iter()
            .map(|l| l.join("diff"))
            .collect()
    }

    /// A snapshot of every path under the state root (relative), to check
    /// that a failed command created nothing.
    pub fn tree(&self) -> Vec<PathBuf> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                out.push(path.strip_prefix(base).unwrap_or(&path).to_path_buf());
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(base, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root(), self.root(), &mut out);
        out.sort();
        out
    }

    /// Remove every container of this root with `berth rm -f`; returns an
    /// error text if that failed.
    fn remove_all_containers(&self) -> Result<(), String> {
        let output = run_command(self.cmd(["ps", "-a", "-q"]));
        if !output.status.success() {
            return Err(format!("`berth ps -a -q` failed\n{}", describe(&output)));
        }
        let ids: Vec<String> = stdout(&output)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = vec!["rm".to_owned(), "-f".to_owned()];
        args.extend(ids);
        let output = run_command(self.cmd(&args));
        if !output.status.success() {
            return Err(format!("`berth rm -f` failed\n{}", describe(&output)));
        }
        Ok(())
    }

    /// What this root leaked: mounts in this mount namespace that mention
    /// the root, and processes that refer to it (command line, root
    /// directory, or mounts of their own mount namespace).
    pub fn leaks(&self) -> Leaks {
        Leaks::under(&self.root().to_string_lossy())
    }

    /// Wait (10 s at most) until `ps -a` lists no container, then
    /// [`Berth::assert_clean`]: a `--rm` container is removed by its
    /// monitor a moment after the command that ended it returned.
    pub fn assert_clean_once_all_removed(&self) {
        assert!(
            wait_until(Duration::from_secs(10), || self.container_ids().is_empty()),
            "left: {:?}",
            self.container_ids()
        );
        self.assert_clean();
    }

    /// Remove every container, then assert that nothing made by this test
    /// remains: no container directory, no temporary import left in the
    /// image store, no mount, no process.
    pub fn assert_clean(&self) {
        // Remember the ids of the containers still here, so that their
        // cgroups can be looked for once they are removed.
        for dir in self.container_dirs() {
            if let Some(id) = dir.file_name().and_then(|n| n.to_str()) {
                self.track(id);
            }
        }
        if let Err(e) = self.remove_all_containers() {
            panic!("cleaning up the containers failed: {e}");
        }
        let dirs = self.container_dirs();
        assert!(
            dirs.is_empty(),
            "container directories left after rm: {dirs:?}"
        );
        // Nor a transient container's layer, nor a half-made or
        // half-removed container (hidden names).
        let hidden: Vec<String> = fs::read_dir(self.root().join("containers"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') && n != ".lock" && n != ".names")
            .collect();
        assert!(
            hidden.is_empty(),
            "hidden container entries left: {hidden:?}"
        );
        let transient = self.entries("runtime/containers@transient");
        assert!(
            transient.is_empty(),
            "transient container directories left: {transient:?}"
        );
        let tmp = self.entries("images/tmp");
        assert!(tmp.is_empty(), "temporary image files left: {tmp:?}");
        // The runtime's state of every container (on tmpfs, linked from
        // <root>/runtime) goes with it; compiled seccomp programs and the
        // empty layer of exec's sealed overlay are shared by all.
        let mut runtime = self.entries("runtime");
        runtime.retain(|entry| !RUNTIME_SHARED.iter().any(|name| entry.ends_with(name)));
        assert!(runtime.is_empty(), "runtime state left: {runtime:?}");
        // A killed container's processes may take a moment to be reaped.
        let mut leaks = self.leaks();
        wait_until(Duration::from_secs(5), || {
            leaks = self.leaks();
            leaks.is_empty()
        });
        assert!(leaks.is_empty(), "berth leaked:\n{leaks}");
        // No cgroup of any container this test made, on any hierarchy,
        // and no monitor (or other process) still holding the root's files.
        self.assert_no_leftover_cgroups();
        self.assert_no_monitors();
    }
}

/// What a root's runtime-state directory holds for all its containers:
/// compiled seccomp programs, the empty layer of exec's sealed overlay and
/// the directory of transient (`--rm`) containers.
const RUNTIME_SHARED: [&str; 3] = ["seccomp@cache", "empty@layer", "containers@transient"];

impl Drop for Berth {
    fn drop(&mut self) {
        let removed = self.remove_all_containers();
        // The root's runtime-state directory lives on tmpfs outside the
        // root (see `berth`'s paths): it goes with the root.
        if let Ok(target) = fs::read_link(self.root().join("runtime")) {
            // What all containers share goes; a container's state left
            // there would keep the directory (and show as a leak).
            for name in RUNTIME_SHARED {
                let _ = fs::remove_dir_all(target.join(name));
            }
            let _ = fs::remove_dir(target);
        }
        let mut leaks = self.leaks();
        if !leaks.is_empty() {
            wait_until(Duration::from_secs(5), || {
                leaks = self.leaks();
                leaks.is_empty()
            });
        }
        if !leaks.is_empty() {
            leaks.force_cleanup();
        }
        if std::thread::panicking() {
            return;
        }
        if let Err(e) = removed {
            panic!("cleaning up the containers failed: {e}");
        }
        assert!(leaks.is_empty(), "berth leaked:\n{leaks}");
    }
}

/// What a test left behind.
#[derive(Debug, Default)]
pub struct Leaks {
    /// Lines of /proc/self/mountinfo.
    pub mounts: Vec<String>,
    /// (pid, why it counts).
    pub processes: Vec<(i32, String)>,
}

impl Leaks {
    /// The mounts (in this mount namespace) and processes that mention
    /// `root`: see [`Berth::leaks`].
    pub fn under(root: &str) -> Leaks {
        let mounts = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(root))
            .map(str::to_owned)
            .collect();
        Leaks {
            mounts,
            processes: processes_referring_to(root),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty() && self.processes.is_empty()
    }

    /// Kill the leaked processes and detach the leaked mounts, deepest
    /// first.
    pub fn force_cleanup(&self) {
        for (pid, _) in &self.processes {
            // SAFETY: kill has no memory effects; the pid was found to
            // refer to this test's own private state root.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let mut points: Vec<PathBuf> = self
            .mounts
            .iter()
            .filter_map(|l| MountEntry::parse(l))
            .map(|mount| mount.mount_point)
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for point in points {
            if let Ok(c) = std::ffi::CString::new(point.into_os_string().into_vec()) {
                // SAFETY: c is a valid NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

impl std::fmt::Display for Leaks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for m in &self.mounts {
            writeln!(f, "  mount: {m}")?;
        }
        for (pid, why) in &self.processes {
            writeln!(f, "  process {pid}: {why}")?;
        }
        Ok(())
    }
}

/// Processes (other than this one) whose command line or root directory
/// mentions `root`, or that live in another mount namespace whose mounts
/// mention it (a container's init after pivot_root).
fn processes_referring_to(root: &str) -> Vec<(i32, String)> {
    let own_pid = std::process::id() as i32;
    let own_mnt_ns = fs::read_link("/proc/self/ns/mnt").ok();
    let mut found = Vec::new();
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in proc_dir.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == own_pid {
            continue;
        }
        let base = entry.path();
        let cmdline = fs::read(base.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if cmdline.contains(root) {
            found.push((pid, format!("command line {:?}", cmdline.trim_end())));
            continue;
        }
        if let Ok(dir) = fs::read_link(base.join("root")) {
            if dir.to_string_lossy().contains(root) {
                found.push((pid, format!("root directory {}", dir.display())));
                continue;
            }
        }
        let mnt_ns = fs::read_link(base.join("ns/mnt")).ok();
        if mnt_ns.is_some() && mnt_ns != own_mnt_ns {
            let mounts = fs::read_to_string(base.join("mountinfo")).unwrap_or_default();
            if mounts.contains(root) {
                found.push((
                    pid,
                    format!(
                        "its mount namespace uses the root ({:?})",
                        cmdline.trim_end()
                    ),
                ));
            }
        }
    }
    found
}

/// Run a prepared command to the end with [`COMMAND_TIMEOUT`].
pub fn run_command(mut cmd: Command) -> Output {
    let line = command_line(&cmd);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
    wait_with_timeout(child, COMMAND_TIMEOUT)
}

/// `program arg arg...` for messages.
pub fn command_line(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// A pseudo-terminal pair; berth runs on the slave as if a user had
/// started it from a terminal emulator, the test types into the master.
#[derive(Debug)]
pub struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
    /// Everything read from the master so far.
    seen: Vec<u8>,
    /// How much of `seen` earlier `expect`s consumed.
    consumed: usize,
}

impl Pty {
    /// A new pair whose window is `rows` x `cols`.
    pub fn new(rows: u16, cols: u16) -> Self {
        use nix::fcntl::OFlag;
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .expect("posix_openpt");
        nix::pty::grantpt(&master).expect("grantpt");
        nix::pty::unlockpt(&master).expect("unlockpt");
        let name = nix::pty::ptsname_r(&master).expect("ptsname");
        let slave = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&name)
            .unwrap_or_else(|e| panic!("open {name}: {e}"));
        let master: OwnedFd = master.into();
        let flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL).expect("F_GETFL");
        nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .expect("F_SETFL");
        let pty = Pty {
            master,
            slave: slave.into(),
            seen: Vec::new(),
            consumed: 0,
        };
        pty.set_window_size(rows, cols);
        pty
    }

    /// Set the window size (TIOCSWINSZ on the master).
    pub fn set_window_size(&self, rows: u16, cols: u16) {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the winsize we own.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// The slave's terminal attributes (what a program sees on its tty).
    pub fn termios(&self) -> nix::sys::termios::Termios {
        nix::sys::termios::tcgetattr(self.slave.as_fd()).expect("tcgetattr")
    }

    /// Start `cmd` with the slave as its stdin, stdout, stderr and
    /// controlling terminal, in a new session.
    pub fn spawn(&self, mut cmd: Command) -> KillOnDrop {
        let fd = |f: &OwnedFd| Stdio::from(f.try_clone().expect("dup the pty slave"));
        cmd.stdin(fd(&self.slave))
            .stdout(fd(&self.slave))
            .stderr(fd(&self.slave));
        // SAFETY: the closure only makes async-signal-safe system calls
        // (setsid, ioctl) in the forked child before exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        KillOnDrop(cmd.spawn().expect("spawn on the pty"))
    }

    /// Type `bytes` into the terminal.
    pub fn send(&self, bytes: &[u8]) {
        let mut rest = bytes;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !rest.is_empty() {
            match nix::unistd::write(&self.master, rest) {
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {
                    assert!(
                        Instant::now() < deadline,
                        "the terminal does not take input"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("write to the pty master: {e}"),
            }
        }
    }

    /// Read what is available within `wait`; returns whether anything came.
    fn fill(&mut self, wait: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let millis = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(n) if n > 0 => {}
            _ => return false,
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(&self.master, &mut buf) {
            Ok(n) if n > 0 => {
                self.seen.extend_from_slice(&buf[..n]);
                true
            }
            _ => false,
        }
    }

    /// Read until `needle` appears in the output after what earlier calls
    /// consumed; returns the text up to and including it. Panics, showing
    /// everything seen, if it does not appear within `timeout`.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let fresh = &self.seen[self.consumed..];
            if let Some(at) = find(fresh, needle.as_bytes()) {
                let end = self.consumed + at + needle.len();
                let text = String::from_utf8_lossy(&self.seen[self.consumed..end]).into_owned();
                self.consumed = end;
                return text;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "{needle:?} did not appear on the terminal within {timeout:?}; it showed:\n{}",
                String::from_utf8_lossy(&self.seen)
            );
            self.fill((deadline - now).min(Duration::from_millis(100)));
        }
    }

    /// Everything the terminal showed so far.
    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Keep reading for `wait` (to collect late output).
    pub fn settle(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            self.fill(Duration::from_millis(20));
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Kinds of tar entries [`TarBuilder`] writes.
#[derive(Clone, Copy, Debug)]
enum EntryType {
    File,
    HardLink,
    Symlink,
    Dir,
}

/// Writes tar archives header by header (ustar), so a test can put any
/// name or link target in them, including the escaping ones.
#[derive(Debug, Default)]
pub struct TarBuilder {
    bytes: Vec<u8>,
}

impl TarBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A regular file.
    pub fn file(mut self, name: &str, mode: u32, data: &[u8]) -> Self {
        self.entry(name, EntryType::File, mode, "", data);
        self
    }

    /// A directory.
    pub fn dir(mut self, name: &str, mode: u32) -> Self {
        self.entry(name, EntryType::Dir, mode, "", &[]);
        self
    }

    /// A symbolic link `name -> target`.
    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        self.entry(name, EntryType::Symlink, 0o777, target, &[]);
        self
    }

    /// A hard link `name` to the archive path (or any path) `target`.
    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        self.entry(name, EntryType::HardLink, 0o644, target, &[]);
        self
    }

    /// The archive, with its two zero blocks at the end.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0u8; 1024]);
        self.bytes
    }

    fn entry(&mut self, name: &str, kind: EntryType, mode: u32, link: &str, data: &[u8]) {
        let mut header = [0u8; 512];
        let (name_field, prefix_field) = split_name(name);
        put(&mut header[0..100], name_field.as_bytes());
        put(&mut header[100..108], format!("{mode:07o}").as_bytes());
        put(&mut header[108..116], b"0000000"); // uid
        put(&mut header[116..124], b"0000000"); // gid
        put(
            &mut header[124..136],
            format!("{:011o}", data.len()).as_bytes(),
        );
        put(&mut header[136..148], b"14000000000"); // mtime
        header[156] = match kind {
            EntryType::File => b'0',
            EntryType::HardLink => b'1',
            EntryType::Symlink => b'2',
            EntryType::Dir => b'5',
        };
        assert!(link.len() <= 100, "link target too long for ustar: {link}");
        put(&mut header[157..257], link.as_bytes());
        put(&mut header[257..263], b"ustar\0");
        put(&mut header[263..265], b"00");
        put(&mut header[265..269], b"root");
        put(&mut header[297..301], b"root");
        put(&mut header[345..500], prefix_field.as_bytes());
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        put(&mut header[148..156], format!("{sum:06o}\0 ").as_bytes());
        self.bytes.extend_from_slice(&header);
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.resize(self.bytes.len() + pad, 0);
    }
}

/// ustar splits long names into a prefix (155) and a name (100).
fn split_name(name: &str) -> (&str, &str) {
    if name.len() <= 100 {
        return (name, "");
    }
    let cut = name[..name.len().min(156)]
        .rfind('/')
        .filter(|&i| name.len() - i - 1 <= 100)
        .unwrap_or_else(|| panic!("name too long for ustar: {name}"));
    (&name[cut + 1..], &name[..cut])
}

fn put(field: &mut [u8], value: &[u8]) {
    assert!(value.len() <= field.len(), "tar field overflow");
    field[..value.len()].copy_from_slice(value);
}

/// Build a minimal root filesystem directory around the host's static
/// busybox: /bin/busybox, applet links, /etc/passwd and /etc/group.
pub fn make_busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).expect("mkdir bin");
    fs::create_dir_all(dir.join("etc")).expect("mkdir etc");
    fs::create_dir_all(dir.join("tmp")).expect("mkdir tmp");
    fs::copy(host_busybox(), bin.join("busybox")).expect("copy busybox");
    for applet in ["sh", "cat", "echo", "ls", "true", "sleep", "id"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    fs::write(dir.join("etc/group"), "root:x:0:\n").expect("group");
}

/// The host's static busybox, which the test images copy.
pub fn host_busybox() -> &'static Path {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("no static busybox on the host: apt-get install busybox-static")
}

/// A small deterministic pseudo-random byte stream (xorshift), for
/// corrupt inputs that are the same on every run.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The processes below `pid` (children, grandchildren...), as (pid,
/// command line with spaces for NULs), found through /proc/PID/stat.
pub fn descendants(pid: i32) -> Vec<(i32, String)> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    for entry in fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
    {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The fields after the command name, which is in parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|f| f.parse().ok()) {
            parents.push((p, ppid));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, _) in parents.iter().filter(|(_, pp)| *pp == parent) {
            let cmdline = fs::read(format!("/proc/{child}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .trim_end()
                        .to_owned()
                })
                .unwrap_or_default();
            found.push((child, cmdline));
            frontier.push(child);
        }
    }
    found
}

/// Send `signal` to `pid` (from the host); true if it was delivered.
pub fn kill(pid: i32, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) touches no memory of ours.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// The host's hostname.
pub fn host_hostname() -> String {
    nix::unistd::gethostname()
        .expect("gethostname")
        .to_string_lossy()
        .into_owned()
}

// ---------------------------------------------------------------------
// Detached containers, cgroups and monitors (used by limits.rs and
// detached.rs). Added after the helpers above; nothing above depends on
// this section except `Berth::assert_clean`'s cgroup and monitor checks.
// ---------------------------------------------------------------------

/// Where the cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Container ids seen by each state root during this test process, so
/// that their cgroups can be looked for after the containers are gone.
static TRACKED_IDS: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

/// True for a full (64 hex digit) container id.
pub fn is_full_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Berth {
    /// Remember a full container id of this root for the leak checks.
    pub fn track(&self, id: &str) {
        if !is_full_id(id) {
            return;
        }
        let mut ids = TRACKED_IDS.lock().unwrap_or_else(|e| e.into_inner());
        let entry = (self.root().to_path_buf(), id.to_owned());
        if !ids.contains(&entry) {
            ids.push(entry);
        }
    }

    /// Every full id this root was seen to use.
    pub fn tracked_ids(&self) -> Vec<String> {
        let ids = TRACKED_IDS.lock().unwrap_or_else(|e| e.into_inner());
        ids.iter()
            .filter(|(root, _)| root == self.root())
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// `berth run -d ARGS...`: asserts it succeeded and printed a full
    /// id (and nothing else) on stdout; returns (and tracks) that id.
    pub fn run_detached<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.cmd(["run", "-d"]);
        cmd.args(args);
        let line = command_line(&cmd);
        let output = run_command(cmd);
        assert!(
            output.status.success(),
            "`{line}` failed\n{}",
            describe(&output)
        );
        let id = stdout(&output).trim().to_owned();
        assert!(
            is_full_id(&id),
            "`{line}` did not print a 64-hex container id\n{}",
            describe(&output)
        );
        self.track(&id);
        id
    }

    /// The full id of a container (by name or id), tracked.
    pub fn id_of(&self, container: &str) -> String {
        let record = self.inspect(container);
        let id = record["id"]
            .as_str()
            .unwrap_or_else(|| panic!("inspect {container}: no id in {record}"))
            .to_owned();
        self.track(&id);
        id
    }

    /// The `status` field of the record.
    pub fn status_of(&self, container: &str) -> String {
        self.inspect(container)["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Poll `inspect` until the status is `status`; returns the record.
    pub fn wait_for_status(
        &self,
        container: &str,
        status: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        let mut record = serde_json::Value::Null;
        let reached = wait_until(timeout, || {
            record = self.inspect(container);
            record["status"] == status
        });
        assert!(
            reached,
            "{container} did not become {status} within {timeout:?}; record:\n{record:#}"
        );
        record
    }

    /// The STATUS column of `berth ps` (`all`: `ps -a`) for the container
    /// named `name`, or None when it is not listed.
    pub fn ps_status(&self, all: bool, name: &str) -> Option<String> {
        let format = ["--format", "{{.Names}}\t{{.Status}}"];
        let out = if all {
            self.run_ok(["ps", "-a", format[0], format[1]])
        } else {
            self.run_ok(["ps", format[0], format[1]])
        };
        out.lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(listed, _)| *listed == name)
            .map(|(_, status)| status.to_owned())
    }

    /// A container's log file, `<root>/containers/<id>/container.log`.
    pub fn log_file(&self, id: &str) -> PathBuf {
        self.root()
            .join("containers")
            .join(id)
            .join("container.log")
    }

    /// Assert (waiting a little) that no cgroup directory named after a
    /// container of this root exists anywhere under /sys/fs/cgroup.
    pub fn assert_no_leftover_cgroups(&self) {
        let ids = self.tracked_ids();
        if ids.is_empty() {
            return;
        }
        let mut left = Vec::new();
        wait_until(Duration::from_secs(5), || {
            left = find_cgroups_named(&ids);
            left.is_empty()
        });
        assert!(
            left.is_empty(),
            "cgroups of removed containers are left: {left:?}"
        );
    }

    /// Assert (waiting a little) that no process other than this one still
    /// refers to this root: a monitor holding a container's log or state
    /// open, or with the root or a container id in its command line.
    pub fn assert_no_monitors(&self) {
        let root = self.root().to_string_lossy().into_owned();
        let ids = self.tracked_ids();
        let mut found = Vec::new();
        wait_until(Duration::from_secs(5), || {
            found = processes_using(&root, &ids);
            found.is_empty()
        });
        assert!(
            found.is_empty(),
            "processes (monitors?) of this root are still alive: {found:?}"
        );
    }
}

/// Rows of a docker-style table (header left out), split into columns at
/// runs of two or more spaces.
pub fn ps_rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// The cgroup directories a container record names (`cgroup.dirs[].path`).
pub fn cgroup_dirs(record: &serde_json::Value) -> Vec<PathBuf> {
    record["cgroup"]["dirs"]
        .as_array()
        .map(|dirs| {
            dirs.iter()
                .filter_map(|d| d["path"].as_str())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Directories under /sys/fs/cgroup (every hierarchy, links not
/// followed) whose name is one of `names`.
pub fn find_cgroups_named(names: &[String]) -> Vec<PathBuf> {
    fn walk(dir: &Path, names: &[String], out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            if names.iter().any(|n| entry.file_name() == n.as_str()) {
                out.push(path.clone());
            }
            walk(&path, names, out);
        }
    }
    let mut out = Vec::new();
    walk(Path::new(CGROUP_ROOT), names, &mut out);
    out
}

/// The cgroup layout of this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupLayout {
    /// Only cgroup2 (at /sys/fs/cgroup).
    V2,
    /// Only v1 hierarchies.
    V1,
    /// v1 controllers plus a cgroup2 mount (e.g. /sys/fs/cgroup/unified).
    Hybrid,
}

/// The layout of this host's cgroup hierarchies, as berth-cgroup finds it
/// (no cgroup filesystem at all counts as V2, where berth would look).
pub fn cgroup_layout() -> CgroupLayout {
    match Hierarchies::from_host().map(|cgroups| cgroups.layout()) {
        Ok(Layout::Hybrid) => CgroupLayout::Hybrid,
        Ok(Layout::Legacy) => CgroupLayout::V1,
        Ok(Layout::Unified) | Err(_) => CgroupLayout::V2,
    }
}

/// The fields of /proc/PID/stat after the command name.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// True while `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().map(String::as_str) != Some("Z"))
}

/// CPU time used by a process (utime + stime from /proc/PID/stat).
pub fn process_cpu_time(pid: i32) -> Option<Duration> {
    let fields = stat_fields(pid)?;
    // Fields after the name start at field 3 (state): utime is field 14.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    Some(Duration::from_nanos(
        (utime + stime) * 1_000_000_000 / ticks,
    ))
}

/// CPU time used by a running container, from its cgroup (v1
/// `cpuacct.usage`, else v2 `cpu.stat` usage_usec), falling back to its
/// PID 1's own CPU time.
pub fn container_cpu_time(record: &serde_json::Value) -> Duration {
    let dirs = record["cgroup"]["dirs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for dir in &dirs {
        let has = |c: &str| {
            dir["controllers"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|x| x == c))
        };
        if let (true, Some(path)) = (has("cpuacct"), dir["path"].as_str()) {
            if let Ok(text) = fs::read_to_string(Path::new(path).join("cpuacct.usage")) {
                if let Ok(ns) = text.trim().parse() {
                    return Duration::from_nanos(ns);
                }
            }
        }
    }
    for dir in &dirs {
        let v2 = dir["version"]
            .as_str()
            .is_some_and(|v| v.eq_ignore_ascii_case("v2"));
        if let (true, Some(path)) = (v2, dir["path"].as_str()) {
            let stat = fs::read_to_string(Path::new(path).join("cpu.stat")).unwrap_or_default();
            let usec = stat.lines().find_map(|l| {
                l.strip_prefix("usage_usec ")
                    .and_then(|v| v.trim().parse().ok())
            });
            if let Some(usec) = usec {
                return Duration::from_micros(usec);
            }
        }
    }
    let pid = record["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or_else(|| panic!("no cgroup cpu usage and no pid in {record:#}"));
    process_cpu_time(pid).unwrap_or_else(|| panic!("cannot read the CPU time of pid {pid}"))
}

/// Processes (other than this one) that have a file or directory under
/// `root` open (fd, cwd), or mention `root` or one of `ids` in their
/// command line: a container monitor of that root, for instance.
pub fn processes_using(root: &str, ids: &[String]) -> Vec<(i32, String)> {
    let own_pid = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in proc_dir.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == own_pid || !process_alive(pid) {
            continue;
        }
        let base = entry.path();
        let cmdline = fs::read(base.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if cmdline.contains(root) || ids.iter().any(|id| cmdline.contains(id.as_str())) {
            found.push((pid, format!("command line {:?}", cmdline.trim_end())));
            continue;
        }
        let mut links: Vec<PathBuf> = fs::read_dir(base.join("fd"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|fd| fs::read_link(fd.path()).ok())
            .collect();
        links.extend(fs::read_link(base.join("cwd")).ok());
        if let Some(path) = links.iter().find(|l| l.starts_with(root)) {
            found.push((
                pid,
                format!("{:?} holds {} open", cmdline.trim_end(), path.display()),
            ));
        }
    }
    found
}

/// Read the lines a child writes to its stdout on a thread; the
/// receiver gets each line as it comes.
pub fn line_reader<R: Read + Send + 'static>(pipe: R) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Wait for a line equal to `want` from [`line_reader`]; returns the
/// lines seen before it. Panics after `timeout`.
pub fn expect_line(
    lines: &std::sync::mpsc::Receiver<String>,
    want: &str,
    timeout: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line == want => return seen,
            Ok(line) => seen.push(line),
            Err(e) => panic!("line {want:?} did not come within {timeout:?} ({e}); saw {seen:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_builder_writes_archives_the_tar_program_reads() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("{}/file", "d".repeat(120));
        let archive = TarBuilder::new()
            .dir("a", 0o755)
            .file("a/f", 0o600, b"hello")
            .symlink("a/l", "f")
            .hardlink("a/h", "a/f")
            .file(&long, 0o644, b"x")
            .finish();
        let path = dir.path().join("t.tar");
        fs::write(&path, archive).unwrap();
        let out = Command::new("tar").arg("-tvf").arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        let listing = stdout(&out);
        for want in ["a/f", "a/l -> f", "a/h link to a/f", &long] {
            assert!(listing.contains(want), "{want} missing from:\n{listing}");
        }
    }
}
