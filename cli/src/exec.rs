//! `berth exec`: run another process in a running container, joining all
//! its namespaces, with the container's environment plus `-e`.

use std::path::Path;

use anyhow::bail;
use berth_ns::{channel, Channel, Namespace};
use berth_state::Status;
use nix::sched::{setns, CloneFlags};

use crate::args::ExecArgs;
use crate::container::{find, is_alive};
use crate::exit::status_code;
use crate::init::{self, FromInit, ProcessSpec, ToInit};
use crate::paths::Paths;
use crate::run::{await_exec, block_relayed_signals, merge_env, ChildGuard};
use crate::supervise::{supervise, Attachment, Output};

/// Namespaces the exec'd process joins itself; the PID namespace is joined
/// by berth before the clone (it applies to children only).
const JOINED: [Namespace; 5] = [
    Namespace::Cgroup,
    Namespace::Ipc,
    Namespace::Uts,
    Namespace::Net,
    Namespace::Mount,
];

pub fn exec(paths: &Paths, args: &ExecArgs) -> anyhow::Result<i32> {
    // The process that enters the container must not be the host's binary
    // (CVE-2019-5736): start over from a sealed in-memory copy.
    berth_ns::sealed::reexec_from_sealed_copy()?;
    let store = paths.containers()?;
    let record = find(&store, &args.container)?;
    let pid = match record.pid {
        Some(pid) if record.status == Status::Running && is_alive(&record) => pid,
        _ if record.status == Status::Paused => {
            bail!("container {} is paused: unpause it first", record.name)
        }
        _ => bail!("container {} is not running", record.name),
    };
    let process = ProcessSpec {
        command: args.command.clone(),
        env: merge_env(record.env.clone(), &args.env)?,
        workdir: args.workdir.clone().or_else(|| record.workdir.clone()),
        tty: args.tty,
        interactive: args.interactive,
        output_pipes: None,
        capabilities: container_capabilities(&record)?,
        no_new_privileges: record.no_new_privileges,
    };
    let (mut signals, _restore_mask) = block_relayed_signals()?;
    let pid_ns_path = format!("/proc/{pid}/ns/pid");
    let pid_ns =
        std::fs::File::open(&pid_ns_path).map_err(|e| anyhow::anyhow!("{pid_ns_path}: {e}"))?;
    setns(&pid_ns, CloneFlags::CLONE_NEWPID)
        .map_err(|e| anyhow::anyhow!("join {pid_ns_path}: {e}"))?;
    let namespaces: Vec<Namespace> = JOINED
        .into_iter()
        .filter(|ns| ns.is_supported(Path::new("/proc")))
        .collect();

    let (parent, child): (Channel<ToInit, FromInit>, Channel<FromInit, ToInit>) = channel()?;
    let parent_fd = std::os::fd::AsRawFd::as_raw_fd(&parent);
    let child_pid = berth_ns::spawn(&[], || {
        // SAFETY: closing this process's copy of the parent's end; the
        // `parent` value is never used in the child.
        unsafe { libc::close(parent_fd) };
        init::run_exec(pid, &namespaces, &process, child)
    })?;
    let guard = ChildGuard::new(child_pid);
    // The child moves itself into the container's cgroup before it runs
    // anything, so the limits hold for exec'd processes too.
    let cgroup = crate::limits::of(&record)
        .map(|c| c.self_attach_files())
        .unwrap_or_default();
    parent.send(&ToInit::Start { cgroup })?;
    let terminal = await_exec(&parent, &guard)?;
    let status = match terminal {
        Some(master) => {
            let attach = Attachment {
                echo: true,
                forward_stdin: args.interactive,
                forward_signals: true,
            };
            supervise(
                child_pid,
                Output::Terminal(master),
                &mut signals,
                None,
                &attach,
            )?
        }
        None => crate::supervise::wait_forwarding_signals(child_pid, &mut signals)?,
    };
    guard.reaped.set(true);
    Ok(status_code(status).unwrap_or(crate::exit::BERTH_FAILED))
}

/// The capabilities the container's own processes have, for exec'd ones.
fn container_capabilities(
    record: &berth_state::ContainerRecord,
) -> anyhow::Result<Option<berth_ns::CapabilitySet>> {
    if record.privileged {
        return Ok(None);
    }
    Ok(Some(match &record.capabilities {
        Some(names) => names.iter().map(|n| n.parse()).collect::<Result<_, _>>()?,
        None => berth_ns::CapabilitySet::docker_default(),
    }))
}
