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
    berth_ns::sealed::reexec_from_sealed_copy()?;
    let store = paths.containers()?;
    let record = find(&store, &args.container)?;
    crate::pause::recover_left_frozen(&store, &record);
    match record.status {
        Status::Running if is_alive(&record) => {}
        Status::Paused => bail!("container {} is paused: unpause it first", record.name),
        _ => bail!("container {} is not running", record.name),
    }
    let runtime = paths.runtime();
    let spec = runtime.spec(&record.id).map_err(coded)?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args.command.clone()));
    let env = process.env().clone().unwrap_or_default();
    process.set_env(Some(merge_env(env, &args.env)?));
    if let Some(dir) = &args.workdir {
        process.set_cwd(PathBuf::from(dir));
    }
    process.set_terminal(Some(args.tty));
    let console_size = crate::supervise::user_terminal()
        .and_then(cli::runtime::tty::window_size)
        .filter(|_| args.tty)
        .map(crate::container_spec::console_size);
    process.set_console_size(console_size);
    let stdin = if args.interactive || args.tty {
        None
    } else {
        Some(OwnedFd::from(
            std::fs::File::open("/dev/null").context("cannot open /dev/null")?,
        ))
    };
    let options = ExecOptions {
        stdio: Stdio {
            stdin,
            ..Stdio::default()
        },
        ..ExecOptions::default()
    };
    let (mut signals, _restore_mask) = block_relayed_signals()?;
    let executing = runtime.exec(&record.id, &process, options).map_err(coded)?;
    let guard = ChildGuard::new(executing.pid);
    let status = match executing.terminal {
        Some(master) => {
            let attach = Attachment {
                echo: true,
                forward_stdin: args.interactive,
                forward_signals: true,
            };
            supervise(
                executing.pid,
                Output::Terminal(master),
                &mut signals,
                None,
                &attach,
            )?
        }
        None => crate::supervise::wait_forwarding_signals(executing.pid, &mut signals)?,
    };
    guard.reaped.set(true);
    Ok(status_code(status).unwrap_or(crate::exit::BERTH_FAILED))
}
