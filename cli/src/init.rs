//! The container's init: the child side of `berth run`. It waits until the
//! parent has put it in place, builds the root filesystem inside its own
//! mount namespace, and execs the user's command, which becomes PID 1.
//!
//! It runs in a clone of the berth process (see `berth_ns::spawn`), so it
//! is ordinary Rust, but single-threaded and with nothing to return to: it
//! either execs or reports a failure over the channel and exits.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use berth_fs::OverlayRootfs;
use berth_ns::Channel;
use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use serde::{Deserialize, Serialize};

use crate::exit::{BERTH_FAILED, CANNOT_INVOKE, NOT_FOUND};
use crate::tty;

/// Parent to init: one message per protocol step.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToInit {
    /// The parent has placed the child (namespaces now; cgroups and network
    /// before this message once they exist): go on and exec.
    Start,
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
    pub hostname: String,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub tty: bool,
    pub interactive: bool,
    pub cgroup_namespace: bool,
}

struct InitFailure {
    code: i32,
    message: String,
}

fn setup_error(step: &str) -> impl FnOnce(String) -> InitFailure + '_ {
    move |cause| InitFailure {
        code: BERTH_FAILED,
        message: format!("{step}: {cause}"),
    }
}

/// Run the init; returns the exit code only on failure (success execs).
pub fn run(spec: &InitSpec, channel: Channel<FromInit, ToInit>) -> i32 {
    let failure = match setup_and_exec(spec, &channel) {
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
    // Die with the parent: a foreground container must not outlive the
    // berth that owns its terminal and record.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| setup_error("set parent-death signal")(e.to_string()))?;
    match channel.recv() {
        Ok(Some(ToInit::Start)) => {}
        // The parent is gone (or broken): nothing to do but leave.
        Ok(None) | Err(_) => std::process::exit(BERTH_FAILED),
    }
    if spec.cgroup_namespace {
        // After the parent placed us in our cgroup, so that the namespace's
        // root is the container's own cgroup.
        unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| setup_error("create cgroup namespace")(e.to_string()))?;
    }
    berth_net::set_link_up("lo").map_err(|e| setup_error("network")(e.to_string()))?;
    nix::unistd::sethostname(&spec.hostname)
        .map_err(|e| setup_error("set hostname")(e.to_string()))?;

    let target = &spec.rootfs.target;
    berth_fs::make_mounts_private().map_err(|e| setup_error("rootfs")(e.to_string()))?;
    spec.rootfs
        .mount()
        .map_err(|e| setup_error("rootfs")(e.to_string()))?;
    berth_fs::mount_kernel_filesystems(target).map_err(|e| setup_error("rootfs")(e.to_string()))?;
    berth_fs::pivot_root(target).map_err(|e| setup_error("rootfs")(e.to_string()))?;

    if spec.tty {
        let terminal = tty::open_in_container().map_err(setup_error("allocate a terminal"))?;
        channel
            .send_with_fd(&FromInit::Terminal, terminal.master.as_fd())
            .map_err(|e| setup_error("send the terminal")(e.to_string()))?;
        drop(terminal.master);
        tty::make_controlling(terminal.slave, spec.interactive)
            .map_err(setup_error("attach the terminal"))?;
    } else if !spec.interactive {
        // docker gives a container without -i an empty stdin.
        let null = std::fs::File::open("/dev/null")
            .map_err(|e| setup_error("open /dev/null")(e.to_string()))?;
        nix::unistd::dup2_stdin(null.as_fd())
            .map_err(|e| setup_error("redirect stdin")(e.to_string()))?;
    }

    if let Some(dir) = &spec.workdir {
        let dir = berth_fs::ensure_dir_in_root(Path::new("/"), dir)
            .map_err(|e| setup_error("working directory")(e.to_string()))?;
        std::env::set_current_dir(&dir)
            .map_err(|e| setup_error("working directory")(format!("{}: {e}", dir.display())))?;
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

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
