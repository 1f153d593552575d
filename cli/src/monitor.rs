//! Detached containers (`run -d`): a small monitor process becomes the
//! parent of the container's PID 1. It records the exit code, copies the
//! output into the container's log, and cleans up when the container ends.
//! The CLI returns as soon as the command is running.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use anyhow::bail;
use berth_state::{ContainerRecord, ContainerStore};
use nix::fcntl::OFlag;
use nix::unistd::{fork, ForkResult};

use crate::exit::CodedError;
use crate::paths::Paths;
use crate::run::{
    block_relayed_signals, launch, open_log, restart_plan, supervise_to_the_end, LaunchPlan,
    RemoveOnFailure,
};
use crate::supervise::Attachment;
use std::time::{Duration, Instant};

/// Fork the monitor and let it start the container; the init's error
/// (with its exit code) on failure.
pub fn start_detached(
    paths: &Paths,
    store: &ContainerStore,
    record: ContainerRecord,
    plan: LaunchPlan,
    mut guard: RemoveOnFailure<'_>,
) -> anyhow::Result<()> {
    let (ready_read, ready_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // SAFETY: berth is single-threaded here, so the child's copy of the
    // process is consistent; it never returns into the caller's code.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(ready_read);
            let code = monitor(paths, store, record, plan, guard, ready_write);
            std::process::exit(code);
        }
        ForkResult::Parent { .. } => {
            drop(ready_write);
            // The monitor owns the container now, including its cleanup.
            guard.armed = false;
            let mut report = String::new();
            std::fs::File::from(ready_read).read_to_string(&mut report)?;
            match report.split_once(' ') {
                Some(("ok", _)) => Ok(()),
                Some(("error", rest)) => {
                    let (code, message) = rest.split_once(' ').unwrap_or(("125", rest));
                    Err(CodedError {
                        code: code.parse().unwrap_or(125),
                        message: message.trim_end().to_owned(),
                    }
                    .into())
                }
                _ => bail!(
                    "the monitor of container {} died while starting it",
                    record.short_id()
                ),
            }
        }
    }
}

/// The monitor's life; returns its own exit code.
fn monitor(
    paths: &Paths,
    store: &ContainerStore,
    mut record: ContainerRecord,
    plan: LaunchPlan,
    mut guard: RemoveOnFailure<'_>,
    ready: OwnedFd,
) -> i32 {
    // Leave the CLI's session and terminal: the monitor must survive the
    // shell that started it, and must not hold its terminal open.
    let _ = nix::unistd::setsid();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(null.as_fd());
        let _ = nix::unistd::dup2_stdout(null.as_fd());
    }
    let mut ready = std::fs::File::from(ready);
    let started = (|| {
        let (signals, restore) = block_relayed_signals()?;
        let launched = launch(paths, store, &mut record, plan)?;
        let log = open_log(store, &record)?;
        Ok::<_, anyhow::Error>((signals, restore, launched, log))
    })();
    let (mut signals, _restore, launched, mut log) = match started {
        Ok(started) => started,
        Err(error) => {
            let failure = crate::exit::Failure::from(error);
            let _ = write!(ready, "error {} {}", failure.code, failure.message);
            drop(guard);
            return failure.code;
        }
    };
    guard.armed = false;
    let _ = write!(ready, "ok {}", launched.pid());
    drop(ready);
    // The monitor lives as long as the container: give back the heap the
    // CLI used before the fork.
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    // From now on errors can only be logged to the container's log: the
    // CLI is gone and stderr is still the user's terminal, so it is closed.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stderr(null.as_fd());
    }
    let attach = Attachment {
        echo: false,
        forward_stdin: false,
        forward_signals: false,
    };
    let mut launched = launched;
    let mut delay = FIRST_RESTART_DELAY;
    loop {
        let started = Instant::now();
        if supervise_to_the_end(
            paths,
            store,
            &record,
            launched,
            &mut signals,
            &mut log,
            &attach,
        )
        .is_err()
        {
            return 1;
        }
        // `finish` decided, by the policy, whether it starts again.
        match store.load(&record.id) {
            Ok(current) if current.restarting => record = current,
            _ => return 0,
        }
        if started.elapsed() >= RESTART_DELAY_RESET_AFTER {
            delay = FIRST_RESTART_DELAY;
        }
        if !wait_unless_stopped(store, &record.id, delay) {
            return 0;
        }
        delay = (delay * 2).min(MAX_RESTART_DELAY);
        let relaunched = restart_plan(paths, store, &record, false)
            .and_then(|plan| launch(paths, store, &mut record, plan));
        launched = match relaunched {
            Ok(launched) => launched,
            Err(error) => {
                let message = format!("berth: cannot restart the container: {error:#}\n");
                let _ = log.write(berth_state::Stream::Stderr, message.as_bytes());
                let _ = log.flush();
                let _ = store.update(&record.id, |r| {
                    r.restarting = false;
                    r.monitor_pid = None;
                    r.monitor_start_time = None;
                });
                return 1;
            }
        };
    }
}

/// docker's restart backoff: 100 ms, doubled at each restart up to a
/// minute, back to 100 ms after a run of at least 10 s.
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);
const RESTART_DELAY_RESET_AFTER: Duration = Duration::from_secs(10);

/// Sleep out the backoff, watching the record: false (and the record no
/// longer restarting) if the user stopped or removed the container.
fn wait_unless_stopped(store: &ContainerStore, id: &str, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        match store.load(id) {
            Ok(record) if record.manually_stopped => {
                let _ = store.update(id, |r| {
                    r.restarting = false;
                    r.monitor_pid = None;
                    r.monitor_start_time = None;
                });
                return false;
            }
            Ok(_) => {}
            Err(_) => return false,
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}
