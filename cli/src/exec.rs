//! `berth exec`: run another process in a running container through the
//! runtime: the container's own process spec with the command, `-e`, `-w`
//! and `-t` of this call.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use anyhow::{bail, Context};
use berth_state::Status;
use cli::runtime::{ExecOptions, Stdio};

use crate::args::ExecArgs;
use crate::container::{find, is_alive};
use crate::exit::status_code;
use crate::paths::Paths;
use crate::run::{block_relayed_signals, coded, merge_env, ChildGuard};
use crate::supervise::{supervise, Attachment, Output};

pub fn exec(paths: &Paths, args: &ExecArgs) -> anyhow::Result<i32> {
    // The process that enters the container must not be the host's binary
    // (CVE-2019-5736): start over from a sealed in-memory copy.
    let runtime = paths.runtime();
    berth_ns::sealed::reexec_from_sealed_copy(&runtime.sealed_exec_layer())?;
    let store = paths.containers()?;
    let record = find(&store, &args.container)?;
    crate::pause::recover_left_frozen(&store, &record);
    match record.status {
        Status::Running if is_alive(&record) => {}
        Status::Paused => bail!("container {} is paused: unpause it first", record.name),
        _ => bail!("container {} is not running", record.name),
    }
    let spec = runtime.spec(&record.id).map_err(coded)?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args.command.clone()));
    let env = process.env().clone().unwrap_or_default();
    process.set_env(Some(merge_env(env, &args.env)?));
    if let Some(dir) = &args.workdir {
        process.set_cwd(PathBuf::from(dir));
    }
    if let Some(user) = &args.user {
        // Looked up in the running container's own files.
        let pid = record.pid.context("the container has no process")?;
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let resolved = crate::user::resolve(user, &[root])?;
        let mut spec_user = process.user().clone();
        spec_user.set_uid(resolved.uid);
        spec_user.set_gid(resolved.gid);
        spec_user.set_additional_gids(Some(resolved.additional_gids));
        process.set_user(spec_user);
    }
    if args.privileged {
        process.set_capabilities(Some(crate::container_spec::capabilities(
            berth_ns::CapabilitySet::all(),
        )));
    }
    let tty = args.tty && !args.detach;
    process.set_terminal(Some(tty));
    let console_size = crate::supervise::user_terminal()
        .and_then(cli::runtime::tty::window_size)
        .filter(|_| tty)
        .map(crate::container_spec::console_size);
    process.set_console_size(console_size);
    let null = || -> anyhow::Result<OwnedFd> {
        Ok(OwnedFd::from(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .context("cannot open /dev/null")?,
        ))
    };
    // Without a terminal, the process gets pipes that berth relays, never
    // berth's own descriptors: through /proc/self/fd it could reopen a
    // host file they point to.
    let relayed = !args.detach && !tty;
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC);
    let (stdin, stdin_write) = if args.interactive && relayed {
        let (read, write) = pipe()?;
        (Some(read), Some(write))
    } else if tty {
        (None, None)
    } else {
        (Some(null()?), None)
    };
    let (stdout, stderr, output_reads) = if args.detach {
        (Some(null()?), Some(null()?), None)
    } else if tty {
        (None, None, None)
    } else {
        let (out_read, out_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        (Some(out_write), Some(err_write), Some((out_read, err_read)))
    };
    let options = ExecOptions {
        stdio: Stdio {
            stdin,
            stdout,
            stderr,
        },
        ..ExecOptions::default()
    };
    let (mut signals, _restore_mask) = block_relayed_signals()?;
    let executing = runtime.exec(&record.id, &process, options).map_err(coded)?;
    if args.detach {
        // It runs on; when berth exits, the container's PID 1 adopts it.
        return Ok(0);
    }
    let guard = ChildGuard::new(executing.pid);
    let output = match (executing.terminal, output_reads) {
        (Some(master), _) => Output::Terminal(master),
        (None, Some((stdout, stderr))) => Output::Pipes {
            stdout,
            stderr,
            stdin: stdin_write,
        },
        (None, None) => bail!("the process in the container did not send its terminal"),
    };
    let attach = Attachment {
        echo: true,
        forward_stdin: args.interactive,
        forward_signals: true,
    };
    let status = supervise(executing.pid, output, &mut signals, None, &attach, None)?;
    guard.reaped.set(true);
    Ok(status_code(status).unwrap_or(crate::exit::BERTH_FAILED))
}
