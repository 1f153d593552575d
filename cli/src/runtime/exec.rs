//! Running another process in a container: join its cgroup and every
//! namespace its init is in, then start the given spec process there.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use berth_ns::Namespace;
use nix::unistd::Pid;
use oci_spec::runtime::Process;

use super::convert::{compile_seccomp, Namespaces};
use super::init::{self, ProcessPlan, ToInit};
use super::lifecycle::{
    attach_to_cgroup, await_exec, with_pid_namespace, write_pid_file, wrong_status, Stdio,
};
use super::state::Status;
use super::{Result, Runtime};

/// How `exec` runs, beyond the process spec.
#[derive(Debug, Default)]
pub struct ExecOptions {
    pub stdio: Stdio,
    /// Descriptors 3 .. 3+N of the caller stay open into the process.
    pub preserve_fds: u32,
    /// Write the process's PID here once it runs.
    pub pid_file: Option<PathBuf>,
}

/// A process that `exec` started (a child of the calling process).
#[derive(Debug)]
pub struct Executing {
    pub pid: Pid,
    /// The master side of its terminal, when `process.terminal` asked for one.
    pub terminal: Option<OwnedFd>,
}

impl Runtime {
    /// Start `process` in the running container `id`. The caller should run
    /// from a copy of its binary that the container cannot reach (see
    /// `berth_ns::sealed`): the new process is visible to the container
    /// before it execs.
    pub fn exec(&self, id: &str, process: &Process, options: ExecOptions) -> Result<Executing> {
        let file = self.load(id)?;
        match self.status_of(&file) {
            Status::Running | Status::Created => {}
            status => {
                return Err(wrong_status(
                    id,
                    status,
                    "cannot exec in a container that is not running",
                ))
            }
        }
        let proc_ns = self.proc_root.join(file.pid.to_string()).join("ns");
        let namespaces = Namespaces::from_spec(&file.spec)?;
        let joined: Vec<(Namespace, PathBuf)> = Namespace::JOIN_ORDER
            .iter()
            .filter(|kind| namespaces.has(**kind))
            .map(|kind| (*kind, proc_ns.join(kind.proc_name())))
            .collect();
        let plan = ProcessPlan {
            capabilities: super::convert::capability_sets(process.capabilities().as_ref())?,
            stdio: options.stdio.raw(),
            preserve_fds: options.preserve_fds,
            seccomp: compile_seccomp(&file.spec, &self.seccomp_cache())?,
        };
        let pid_namespace = joined
            .iter()
            .find(|(kind, _)| *kind == Namespace::Pid)
            .map(|(_, path)| path.clone());
        // Born in the container's cgroup2 directory, as its init was (see
        // `Runtime::create`).
        let unified_dir = match &file.cgroup {
            Some(cgroup) => cgroup.open_unified_dir()?,
            None => None,
        };
        let (pid, channel, birthplace) = with_pid_namespace(pid_namespace.as_deref(), || {
            berth_ns::spawn_with_channel_in(
                &[],
                unified_dir.as_ref().map(|fd| fd.as_fd()),
                |channel| init::run_exec(&joined, process, &plan, channel),
            )
        })??;
        drop(unified_dir);
        drop(options.stdio);
        let guard = KillUnlessDisarmed(Some(pid));
        let cgroup = match &file.cgroup {
            Some(cgroup) => {
                attach_to_cgroup(cgroup, pid, birthplace, namespaces.has(Namespace::User))?
            }
            None => Vec::new(),
        };
        channel.send(&ToInit::Start {
            cgroup,
            views: Vec::new(),
        })?;
        let terminal = await_exec(&channel, pid)?;
        if let Some(path) = &options.pid_file {
            write_pid_file(path, pid.as_raw())?;
        }
        guard.disarm();
        Ok(Executing { pid, terminal })
    }
}

/// Kills and reaps a process that was not fully started.
struct KillUnlessDisarmed(Option<Pid>);

impl KillUnlessDisarmed {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillUnlessDisarmed {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}
