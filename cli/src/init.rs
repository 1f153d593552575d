//! The container's init: the child side of `berth run`. It waits until the
//! parent has put it in place, builds the root filesystem inside its own
//! mount namespace, and execs the user's command, which becomes PID 1.
//!
//! It runs in a clone of the berth process (see `berth_ns::spawn`), so it
//! is ordinary Rust, but single-threaded and with nothing to return to: it
//! either execs or reports a failure over the channel and exits.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use berth_fs::OverlayRootfs;
use berth_ns::{CapabilitySet, Channel, Namespace};
use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use serde::{Deserialize, Serialize};

use crate::exit::{BERTH_FAILED, CANNOT_INVOKE, NOT_FOUND};
use crate::tty;

/// Parent to init: one message per protocol step.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToInit {
    /// The parent has made the container's cgroup and connected its
    /// network: move into the cgroup (through these files, see
    /// `berth_cgroup::Cgroup::self_attach_files`), then go on and exec.
    Start { cgroup: Vec<PathBuf> },
    /// The parent has sized the terminal it received: go on, so the
    /// command never sees a 0x0 terminal.
    TerminalReady,
}

/// Init to parent.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromInit {
    /// Carries the master side of the container's terminal as an fd.
    Terminal,
    /// Setup or exec failed; `code` is docker's exit code for it.
    Failed { code: i32, message: String },
}

/// Everything the init needs, prepared by the parent before the clone.
#[derive(Debug)]
pub struct InitSpec {
    pub rootfs: OverlayRootfs,
    pub volumes: Vec<berth_fs::Volume>,
    /// Where and how the parent places the init before it may start.
    pub hierarchies: berth_cgroup::Hierarchies,
    pub resources: berth_cgroup::Resources,
    pub hostname: String,
    pub cgroup_namespace: bool,
    /// `--privileged`: /proc and /sys are left unmasked.
    pub privileged: bool,
    /// The parent connects the init's network namespace before Start.
    pub network: crate::network::NetworkMode,
    pub process: ProcessSpec,
}

/// The process to start inside the container: the init's command, or one
/// started by `berth exec`.
#[derive(Debug)]
pub struct ProcessSpec {
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub tty: bool,
    pub interactive: bool,
    /// Write ends of the pipes that become the command's stdout and stderr
    /// (without `-t`; `None` keeps berth's own); inherited through the clone.
    pub output_pipes: Option<(RawFd, RawFd)>,
    /// Capabilities the command keeps (`None`: all, for --privileged).
    pub capabilities: Option<CapabilitySet>,
    pub no_new_privileges: bool,
}

struct InitFailure {
    code: i32,
    message: String,
}

/// Tags a failed setup step with what it was, as berth's own failure (125).
trait InitStep<T> {
    fn step(self, what: &str) -> Result<T, InitFailure>;
}

impl<T, E: std::fmt::Display> InitStep<T> for Result<T, E> {
    fn step(self, what: &str) -> Result<T, InitFailure> {
        self.map_err(|e| InitFailure {
            code: BERTH_FAILED,
            message: format!("{what}: {e}"),
        })
    }
}

/// Run the init; returns the exit code only on failure (success execs).
pub fn run(spec: &InitSpec, channel: Channel<FromInit, ToInit>) -> i32 {
    report(setup_and_exec(spec, &channel), channel)
}

/// Run a process joining the namespaces of the container whose PID 1 is
/// `pid` (`berth exec`). This process must already be in the container's
/// PID namespace (created after the parent's setns of it).
pub fn run_exec(
    pid: i32,
    namespaces: &[Namespace],
    process: &ProcessSpec,
    channel: Channel<FromInit, ToInit>,
) -> i32 {
    let result = (|| {
        // No one in the container may ptrace this process or open its
        // /proc entries while it still holds host state.
        nix::sys::prctl::set_dumpable(false).step("set non-dumpable")?;
        // The cgroup first: its paths are the host's, before the setns.
        let cgroup = wait_for_start(&channel);
        berth_cgroup::join_self(&cgroup).step("join the container's cgroup")?;
        berth_ns::join(Path::new("/proc"), pid, namespaces).step("join the container")?;
        start_process(process, &channel)
    })();
    report(result, channel)
}

/// Block until the parent says Start; returns the cgroup files to join.
fn wait_for_start(channel: &Channel<FromInit, ToInit>) -> Vec<PathBuf> {
    match channel.recv() {
        Ok(Some(ToInit::Start { cgroup })) => cgroup,
        // The parent is gone (or broken): nothing to do but leave.
        _ => std::process::exit(BERTH_FAILED),
    }
}

fn report(result: Result<Infallible, InitFailure>, channel: Channel<FromInit, ToInit>) -> i32 {
    let failure = match result {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    let _ = channel.send(&FromInit::Failed {
        code: failure.code,
        message: failure.message,
    });
    failure.code
}

fn setup_and_exec(
    spec: &InitSpec,
    channel: &Channel<FromInit, ToInit>,
) -> Result<Infallible, InitFailure> {
    // Die with the parent: a container must not outlive the berth process
    // (foreground run or monitor) that records its exit.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).step("set the parent-death signal")?;
    let cgroup = wait_for_start(channel);
    // Before anything of the container runs, so every byte it allocates
    // is charged to it.
    berth_cgroup::join_self(&cgroup).step("join the container's cgroup")?;
    if spec.cgroup_namespace {
        // After the parent placed us in our cgroup, so that the namespace's
        // root is the container's own cgroup.
        unshare(CloneFlags::CLONE_NEWCGROUP).step("create the cgroup namespace")?;
    }
    if spec.network.has_own_namespace() {
        berth_net::set_link_up("lo").step("network")?;
    }
    nix::unistd::sethostname(&spec.hostname).step("set the hostname")?;

    let target = &spec.rootfs.target;
    berth_fs::make_mounts_private().step("rootfs")?;
    spec.rootfs.mount().step("rootfs")?;
    berth_fs::mount_kernel_filesystems(target).step("rootfs")?;
    berth_fs::mount_volumes(target, &spec.volumes).step("volumes")?;
    if !spec.privileged {
        berth_fs::readonly_paths(target, berth_fs::DEFAULT_READONLY_PATHS)
            .step("read-only paths")?;
        berth_fs::mask_paths(target, berth_fs::DEFAULT_MASKED_PATHS).step("masked paths")?;
    }
    berth_fs::pivot_root(target).step("rootfs")?;
    start_process(&spec.process, channel)
}

/// Inside the container's root: attach stdio (a new terminal, or pipes),
/// enter the working directory and exec.
fn start_process(
    spec: &ProcessSpec,
    channel: &Channel<FromInit, ToInit>,
) -> Result<Infallible, InitFailure> {
    if spec.tty {
        let terminal = tty::open_in_container().step("allocate a terminal")?;
        channel
            .send_with_fd(&FromInit::Terminal, terminal.master.as_fd())
            .step("send the terminal")?;
        drop(terminal.master);
        match channel.recv() {
            Ok(Some(ToInit::TerminalReady)) => {}
            _ => std::process::exit(BERTH_FAILED),
        }
        tty::make_controlling(terminal.slave).step("attach the terminal")?;
    } else {
        if !spec.interactive {
            // docker gives a container without -i an empty stdin.
            let null = std::fs::File::open("/dev/null").step("open /dev/null")?;
            nix::unistd::dup2_stdin(null.as_fd()).step("redirect stdin")?;
        }
        if let Some((out, err)) = spec.output_pipes {
            // SAFETY: the parent created these pipes before the clone and
            // this process's copies stay open until exec closes them.
            let (out, err) = unsafe { (BorrowedFd::borrow_raw(out), BorrowedFd::borrow_raw(err)) };
            nix::unistd::dup2_stdout(out).step("redirect stdout")?;
            nix::unistd::dup2_stderr(err).step("redirect stderr")?;
        }
    }

    match &spec.workdir {
        Some(dir) => berth_fs::enter_workdir(dir)
            .map(drop)
            .step("working directory")?,
        // Never keep a working directory from before the pivot or setns.
        None => std::env::set_current_dir("/").step("working directory /")?,
    }
    if spec.no_new_privileges {
        berth_ns::capabilities::set_no_new_privs().step("no-new-privileges")?;
    }
    if let Some(capabilities) = &spec.capabilities {
        berth_ns::capabilities::apply(capabilities).step("capabilities")?;
    }

    restore_signal_defaults();
    // Everything berth opened must stay out of the container: mark every
    // descriptor above stderr close-on-exec. The channel stays usable until
    // the exec itself, so an exec failure can still be reported.
    // SAFETY: close_range only changes descriptor flags; no memory is involved.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    Err(exec_command(&spec.command, &spec.env))
}

/// Undo what berth's own process set up, which exec would otherwise pass
/// on: blocked signals (the parent blocks them to forward them), and the
/// SIGPIPE disposition that the Rust runtime sets to "ignore".
fn restore_signal_defaults() {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // SAFETY: installing SIG_DFL runs no handler code; no other thread exists.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// PATH when neither the image nor `-e` sets one (docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// exec `command` with `env`, searching PATH (from `env`) as execvp does.
/// Returns only on failure, with docker's code: 127 not found, 126 found
/// but not executable.
fn exec_command(command: &[String], env: &[String]) -> InitFailure {
    let program = &command[0];
    let to_cstrings = |items: &[String]| -> Result<Vec<CString>, InitFailure> {
        items
            .iter()
            .map(|s| CString::new(s.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| InitFailure {
                code: BERTH_FAILED,
                message: "command and environment must not contain NUL bytes".into(),
            })
    };
    let (args, envp) = match (to_cstrings(command), to_cstrings(env)) {
        (Ok(args), Ok(envp)) => (args, envp),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        let path = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| Path::new(dir).join(program))
            .collect()
    };
    // As execvp: remember a "found but cannot run" error over "not here".
    let mut worst = Errno::ENOENT;
    for candidate in &candidates {
        let Ok(path) = CString::new(candidate.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        let errno = match nix::unistd::execve(&path, &args, &envp) {
            Err(errno) => errno,
            Ok(never) => match never {},
        };
        if !matches!(errno, Errno::ENOENT | Errno::ENOTDIR) {
            worst = errno;
        }
    }
    match worst {
        Errno::ENOENT if program.contains('/') => InitFailure {
            code: NOT_FOUND,
            message: format!("exec: {program:?}: no such file or directory"),
        },
        Errno::ENOENT => InitFailure {
            code: NOT_FOUND,
            message: format!("exec: {program:?}: executable file not found in $PATH"),
        },
        errno => InitFailure {
            code: CANNOT_INVOKE,
            message: format!("exec: {program:?}: {}", errno.desc().to_lowercase()),
        },
    }
}
