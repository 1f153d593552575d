//! berth as an OCI runtime, driven by real clients: podman (through
//! conmon) and containerd (through its runc shim).
//!
//! - [`runtime_under_test`]: `berth-runtime`, a link to the berth binary
//!   (`argv[0]` selects runc's command line), or `$BERTH_OCI_RUNTIME`;
//!   [`reference_runtime`] is Debian's runc, to compare against.
//! - [`Podman`]: podman with private storage, configuration and state in a
//!   temporary directory, run inside its own network namespace, with a
//!   local busybox image ([`BUSYBOX_IMAGE`]); containers go below a
//!   [`CgroupParent`] under this process's own cgroup.
//! - [`Containerd`]: a private containerd daemon (temporary root, state and
//!   socket), driven with `ctr`.
//!
//! Both clean up on drop and check, in `assert_clean`, that nothing the
//! runtime made is left: processes, mounts, cgroups, runtime state.
//!
//! ```no_run
//! use berth_e2e::oci::{runtime_under_test, Podman, BUSYBOX_IMAGE};
//! let podman = Podman::new(runtime_under_test());
//! let out = podman.run(["--rm", BUSYBOX_IMAGE, "echo", "hi"]);
//! assert_eq!(berth_e2e::stdout(&out), "hi\n");
//! podman.assert_clean();
//! ```

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{
    berth_bin, command_line, describe, stdout, wait_output_within, wait_until, Leaks,
    COMMAND_TIMEOUT,
};

mod cgroup;
mod containerd;
mod image;
mod podman;

pub use cgroup::CgroupParent;
pub use containerd::{Containerd, CONTAINERD_NAMESPACE};
pub use image::{write_busybox_oci_archive, BUSYBOX_IMAGE};
pub use podman::Podman;

/// An engine that drives an OCI runtime (podman, containerd), private to
/// one test, for [`compare_runtimes`].
pub trait Engine: Sized {
    /// How assertion messages name it ("podman", "containerd").
    const NAME: &'static str;
    /// A fresh private engine using `runtime`.
    fn start(runtime: OciRuntime) -> Self;
    /// The runtime it uses.
    fn oci_runtime(&self) -> &OciRuntime;
    /// Remove what it made and check that nothing is left.
    fn finish(self);
}

impl Engine for Podman {
    const NAME: &'static str = "podman";
    fn start(runtime: OciRuntime) -> Self {
        Podman::new(runtime)
    }
    fn oci_runtime(&self) -> &OciRuntime {
        self.runtime()
    }
    fn finish(self) {
        self.assert_clean();
    }
}

impl Engine for Containerd {
    const NAME: &'static str = "containerd";
    fn start(runtime: OciRuntime) -> Self {
        Containerd::new(runtime)
    }
    fn oci_runtime(&self) -> &OciRuntime {
        self.runtime()
    }
    fn finish(self) {
        self.assert_clean();
    }
}

/// Run `scenario` on a fresh engine with runc, then on one with the
/// runtime under test, each left clean; the two results must be equal.
pub fn compare_runtimes<E: Engine, T: PartialEq + std::fmt::Debug>(scenario: impl Fn(&E) -> T) {
    // First, so that a runtime that cannot work fails at once.
    let under_test = runtime_under_test();
    let on = |runtime: OciRuntime| {
        let engine = E::start(runtime);
        let result = scenario(&engine);
        engine.finish();
        result
    };
    let reference = on(reference_runtime());
    let name = under_test.name().to_owned();
    let result = on(under_test);
    assert_eq!(
        result,
        reference,
        "{} with {name} (left) and with runc (right) differ",
        E::NAME
    );
}

/// "ENGINE with RUNTIME" for assertion messages.
pub fn label<E: Engine>(engine: &E) -> String {
    format!("{} with {}", E::NAME, engine.oci_runtime().name())
}

/// Set to a runc-compatible binary (e.g. /usr/sbin/runc, /usr/bin/crun)
/// to run the OCI tests against it instead of berth-runtime.
pub const RUNTIME_ENV: &str = "BERTH_OCI_RUNTIME";

/// The name under which the berth binary speaks runc's command line.
pub const RUNTIME_NAME: &str = "berth-runtime";

/// How long a client gets to tear a container down before the leak
/// checks look.
const SETTLE: Duration = Duration::from_secs(5);

/// A runc-compatible binary that clients are told to use.
#[derive(Debug)]
pub struct OciRuntime {
    path: PathBuf,
    /// Holds the `berth-runtime` link; removed with it.
    _link_dir: Option<TempDir>,
}

/// The runtime under test: `$BERTH_OCI_RUNTIME` if set, else a
/// `berth-runtime` link to [`berth_bin`] in a temporary directory that
/// lives as long as the returned value.
///
/// Panics, saying what to do, when the runtime does not answer
/// `--version` the way runc does (berth without its runtime grammar).
pub fn runtime_under_test() -> OciRuntime {
    let runtime = match std::env::var_os(RUNTIME_ENV) {
        Some(path) => OciRuntime {
            path: PathBuf::from(path),
            _link_dir: None,
        },
        None => {
            let dir = tempfile::Builder::new()
                .prefix("berth-runtime-")
                .tempdir()
                .expect("create a directory for the berth-runtime link");
            let link = dir.path().join(RUNTIME_NAME);
            std::os::unix::fs::symlink(berth_bin(), &link)
                .unwrap_or_else(|e| panic!("link {}: {e}", link.display()));
            OciRuntime {
                path: link,
                _link_dir: Some(dir),
            }
        }
    };
    runtime.assert_speaks_runc_grammar();
    runtime
}

/// runc, the runtime every client is known to work with: the outputs of
/// the runtime under test are compared with its outputs.
pub fn reference_runtime() -> OciRuntime {
    let path = ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("runc not found: apt-get install runc");
    let runtime = OciRuntime {
        path,
        _link_dir: None,
    };
    runtime.assert_speaks_runc_grammar();
    runtime
}

/// One container as `RUNTIME list --format json` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeContainer {
    pub id: String,
    pub status: String,
    pub bundle: PathBuf,
}

impl OciRuntime {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file name clients see (and podman matches its feature lists
    /// against): `berth-runtime`, `runc`, `crun`.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// `RUNTIME [--root ROOT] ARGS...`, output piped.
    pub fn cmd<I, S>(&self, root: Option<&Path>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.path);
        if let Some(root) = root {
            cmd.arg("--root").arg(root);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// The containers in the runtime's state directory (`root`, or the
    /// runtime's default): `RUNTIME list --format json`.
    pub fn containers(&self, root: Option<&Path>) -> Result<Vec<RuntimeContainer>, String> {
        let cmd = self.cmd(root, ["list", "--format", "json"]);
        let line = command_line(&cmd);
        let output = output_within(cmd, COMMAND_TIMEOUT)?;
        if !output.status.success() {
            return Err(format!("`{line}` failed\n{}", describe(&output)));
        }
        // runc prints `null` for an empty list.
        let list: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("`{line}` did not print JSON ({e})\n{}", describe(&output)))?;
        Ok(list
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| RuntimeContainer {
                id: c["id"].as_str().unwrap_or_default().to_owned(),
                status: c["status"].as_str().unwrap_or_default().to_owned(),
                bundle: PathBuf::from(c["bundle"].as_str().unwrap_or_default()),
            })
            .collect())
    }

    /// Clients show the runtime's `--version` and nothing works if it
    /// fails: a berth that does not know its runtime name yet fails here,
    /// with a message instead of a pile of confusing client errors.
    fn assert_speaks_runc_grammar(&self) {
        let cmd = self.cmd(None, ["--version"]);
        let output = output_within(cmd, COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        let first_line = stdout(&output)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        if output.status.success() && first_line.contains("version") {
            return;
        }
        let what = if self.name() == RUNTIME_NAME {
            format!(
                "{} (a link to the berth binary) does not speak runc's command line yet",
                self.path.display()
            )
        } else {
            format!("{} does not answer like runc", self.path.display())
        };
        panic!(
            "{what}: `{} --version` should succeed and print \"... version ...\" first\n{}\n\
             To run the OCI client tests against another runtime, set \
             {RUNTIME_ENV}=/usr/sbin/runc (or /usr/bin/crun).",
            self.name(),
            describe(&output)
        );
    }
}

/// Run `cmd` to the end, or give up after `timeout` (killing it); never
/// panics, so that it can run in `Drop`.
pub fn output_within(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let line = command_line(&cmd);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{line}`: {e}"))?;
    wait_output_within(child, timeout).map_err(|killed| {
        format!(
            "`{line}` did not finish within {timeout:?}; stderr so far:\n{}",
            String::from_utf8_lossy(&killed.stderr)
        )
    })
}

/// Run `cmd`, panic (with everything it printed) unless it succeeds.
fn output_ok(cmd: Command) -> Output {
    let line = command_line(&cmd);
    let output = output_within(cmd, COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "`{line}` failed\n{}",
        describe(&output)
    );
    output
}

// ---------------------------------------------------------------------
// Leak checks shared by both clients.
// ---------------------------------------------------------------------

/// The processes and mounts that still mention `root`, once they had
/// `SETTLE` to go away; those left are killed and detached by force, and
/// returned as "what: ..." lines.
fn settle_and_force(root: &Path) -> Vec<String> {
    let root = root.to_string_lossy();
    let mut leaks = Leaks::under(&root);
    wait_until(SETTLE, || {
        leaks = Leaks::under(&root);
        leaks.is_empty()
    });
    if !leaks.is_empty() {
        leaks.force_cleanup();
        // Killed processes take a moment to be gone.
        wait_until(SETTLE, || Leaks::under(&root).processes.is_empty());
    }
    leaks
        .to_string()
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Containers the runtime still has in `root` (its default if None) whose
/// bundle is under `dir`: a leak; they are deleted by force.
fn runtime_leftovers(runtime: &OciRuntime, root: Option<&Path>, dir: &Path) -> Vec<String> {
    let containers = match runtime.containers(root) {
        Ok(containers) => containers,
        Err(e) => return vec![e],
    };
    let mut left = Vec::new();
    for container in containers.iter().filter(|c| c.bundle.starts_with(dir)) {
        left.push(format!(
            "{} still lists container {} ({}, bundle {})",
            runtime.name(),
            container.id,
            container.status,
            container.bundle.display()
        ));
        let _ = output_within(
            runtime.cmd(root, ["delete", "--force", &container.id]),
            COMMAND_TIMEOUT,
        );
    }
    left
}

/// Cgroups below `parent` other than the `allowed` names: containers the
/// runtime did not remove.
fn cgroup_leftovers(parent: &CgroupParent, allowed: &[&str]) -> Vec<String> {
    let mut left = Vec::new();
    wait_until(SETTLE, || {
        left = parent
            .descendants()
            .into_iter()
            .filter(|d| {
                !d.file_name()
                    .is_some_and(|n| allowed.iter().any(|a| n == *a))
            })
            .map(|d| format!("cgroup {}", d.display()))
            .collect();
        left.is_empty()
    });
    left
}

fn panic_on_leaks(what: &str, leaks: &[String]) {
    if leaks.is_empty() {
        return;
    }
    let mut text = String::new();
    for leak in leaks {
        let _ = writeln!(text, "  {leak}");
    }
    panic!("{what} left things behind:\n{text}");
}
