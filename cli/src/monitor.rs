//! Detached containers (`run -d`): a small monitor process becomes the
//! parent of the container's PID 1. It records the exit code, copies the
//! output into the container's log, and cleans up when the container ends.
//! The CLI returns as soon as the command is running.
//!
//! The monitor is a fork of the CLI that starts the container, then
//! executes `berth-monitor` in its place for the long watch (see
//! [`cli::monitor_handoff`]), which hands the ended container back to
//! [`finish_entry`].

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_state::{ContainerRecord, ContainerStore, LogWriter};
use cli::monitor_handoff::{
    DnsHandoff, FinishPlan, RelayOutput, RelayPlan, FINISH_ENTRY, MONITOR_PROGRAM,
};
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::signalfd::SignalFd;
use nix::unistd::{fork, ForkResult, Pid};

use crate::exit::CodedError;
use crate::paths::Paths;
use crate::run::{
    block_relayed_signals, finish, launch, log_path, open_log, restart_plan, supervise_to_the_end,
    LaunchPlan, Launched, RemoveOnFailure,
};
use crate::supervise::{Attachment, Output};

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
    let (mut signals, _restore, launched, log) = match started {
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
    // From now on errors can only be logged to the container's log: the
    // CLI is gone and stderr is still the user's terminal, so it is closed.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stderr(null.as_fd());
    }
    watch(
        paths,
        store,
        record,
        launched,
        &mut signals,
        log,
        FIRST_RESTART_DELAY,
    )
}

/// Watch the running container until it ends for good (restarting it as
/// its policy says); returns the monitor's exit code. The watching is
/// handed to `berth-monitor` when it is installed; this process watches
/// only without it.
fn watch(
    paths: &Paths,
    store: &ContainerStore,
    mut record: ContainerRecord,
    mut launched: Launched,
    signals: &mut SignalFd,
    mut log: LogWriter,
    mut delay: Duration,
) -> i32 {
    let attach = Attachment {
        echo: false,
        forward_stdin: false,
        forward_signals: false,
    };
    loop {
        hand_over(paths, store, &record, &launched, delay);
        // The monitor lives as long as the container: give back the heap
        // the CLI used before the fork.
        // SAFETY: malloc_trim only returns free heap memory to the kernel.
        unsafe { libc::malloc_trim(0) };
        let started = Instant::now();
        if supervise_to_the_end(paths, store, &record, launched, signals, &mut log, &attach)
            .is_err()
        {
            return 1;
        }
        match relaunch(
            paths,
            store,
            &mut record,
            started.elapsed(),
            &mut delay,
            &mut log,
        ) {
            Relaunch::Running(next) => launched = next,
            Relaunch::Ended => return 0,
            Relaunch::Failed => return 1,
        }
    }
}

enum Relaunch {
    Running(Launched),
    /// Its policy does not start it again, or the user stopped it.
    Ended,
    Failed,
}

/// After `finish` recorded the end: start the container again if its
/// policy asked for it, after the backoff (`delay`, doubled for the next
/// time; back to the first after a run of `ran` long enough).
fn relaunch(
    paths: &Paths,
    store: &ContainerStore,
    record: &mut ContainerRecord,
    ran: Duration,
    delay: &mut Duration,
    log: &mut LogWriter,
) -> Relaunch {
    match store.load(&record.id) {
        Ok(current) if current.restarting => *record = current,
        _ => return Relaunch::Ended,
    }
    if ran >= RESTART_DELAY_RESET_AFTER {
        *delay = FIRST_RESTART_DELAY;
    }
    if !wait_unless_stopped(store, &record.id, *delay) {
        return Relaunch::Ended;
    }
    *delay = (*delay * 2).min(MAX_RESTART_DELAY);
    let relaunched = restart_plan(paths, store, record, false)
        .and_then(|plan| launch(paths, store, record, plan));
    match relaunched {
        Ok(launched) => Relaunch::Running(launched),
        Err(error) => {
            let message = format!("berth: cannot restart the container: {error:#}\n");
            let _ = log.write(berth_state::Stream::Stderr, message.as_bytes());
            let _ = log.flush();
            let _ = store.update(&record.id, |r| {
                r.restarting = false;
                r.monitor_pid = None;
                r.monitor_start_time = None;
            });
            Relaunch::Failed
        }
    }
}

/// Execute `berth-monitor` (next to this binary) in this process to watch
/// the launched container: the process stays the parent of its PID 1 and
/// keeps every descriptor not marked close-on-exec, but sheds the CLI's
/// memory. Returns only if that cannot be done (not installed, the exec
/// failed): then this process watches.
fn hand_over(
    paths: &Paths,
    store: &ContainerStore,
    record: &ContainerRecord,
    launched: &Launched,
    delay: Duration,
) {
    let Ok(berth) = std::env::current_exe() else {
        return;
    };
    let program = berth.with_file_name(MONITOR_PROGRAM);
    if nix::unistd::access(&program, nix::unistd::AccessFlags::X_OK).is_err() {
        return;
    }
    let handed: Vec<BorrowedFd<'_>>;
    let output = match &launched.output {
        Output::Terminal(fd) => {
            handed = vec![fd.as_fd()];
            RelayOutput::Terminal(fd.as_raw_fd())
        }
        Output::Pipes {
            stdout,
            stderr,
            stdin,
        } => {
            handed = [Some(stdout), Some(stderr), stdin.as_ref()]
                .into_iter()
                .flatten()
                .map(|fd| fd.as_fd())
                .collect();
            RelayOutput::Pipes {
                stdout: stdout.as_raw_fd(),
                stderr: stderr.as_raw_fd(),
                stdin: stdin.as_ref().map(|fd| fd.as_raw_fd()),
            }
        }
    };
    let Ok(root) = std::path::absolute(paths.root()) else {
        return;
    };
    let mut handed = handed;
    handed.extend(launched.held_ports.iter().map(|held| held.socket.as_fd()));
    handed.extend(launched.dns.iter().map(|dns| dns.socket().as_fd()));
    let plan = RelayPlan {
        pid: launched.pid().as_raw(),
        container_dir: store.container_dir(&record.id),
        log: log_path(store, &record.id),
        log_limits: record.log_limits,
        output,
        berth,
        root,
        id: record.id.clone(),
        restart_delay: delay,
        held: launched
            .held_ports
            .iter()
            .map(|held| held.socket.as_raw_fd())
            .collect(),
        dns: launched.dns.as_ref().map(|dns| DnsHandoff {
            socket: dns.socket().as_raw_fd(),
            upstreams: dns.upstreams().to_vec(),
            search_domains: dns.search_domains().to_vec(),
        }),
    };
    let mut argv = vec![program.clone().into_os_string()];
    argv.extend(plan.to_args());
    let Ok(argv) = argv
        .iter()
        .map(|arg| CString::new(arg.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    for fd in &handed {
        let _ = fcntl(*fd, FcntlArg::F_SETFD(FdFlag::empty()));
    }
    // execv, not std's Command: the blocked signals (a pending SIGCHLD)
    // must stay blocked across the exec.
    let _ = nix::unistd::execv(&argv[0], &argv);
    for fd in &handed {
        let _ = fcntl(*fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
}

/// `berth __monitor-finish ...`: `berth-monitor` hands back a container
/// whose PID 1 ended. Record the end, release what it held and carry out
/// its restart policy, as berth's own monitor does; returns the exit code.
pub fn finish_entry(args: &[std::ffi::OsString]) -> i32 {
    match finish_handed_back(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("berth: {error:#}");
            125
        }
    }
}

fn finish_handed_back(args: &[std::ffi::OsString]) -> anyhow::Result<i32> {
    let plan = FinishPlan::parse(args)
        .with_context(|| format!("{FINISH_ENTRY} is berth's own (its monitor's) command"))?;
    let paths = Paths::new(plan.root.clone());
    let store = paths.containers()?;
    let mut record = store.load(&plan.id)?;
    // Only the container's monitor may say how it ended.
    if record.monitor_pid != Some(std::process::id() as i32) {
        bail!(
            "{FINISH_ENTRY}: this process is not the monitor of container {}",
            record.short_id()
        );
    }
    let (mut signals, _restore) = block_relayed_signals()?;
    let pid = Pid::from_raw(record.pid.unwrap_or(0));
    finish(&paths, &store, &plan.id, plan.end.wait_status(pid));
    let mut log = open_log(&store, &record)?;
    let mut delay = plan.restart_delay;
    let launched = match relaunch(&paths, &store, &mut record, plan.ran, &mut delay, &mut log) {
        Relaunch::Running(launched) => launched,
        Relaunch::Ended => return Ok(0),
        Relaunch::Failed => return Ok(1),
    };
    Ok(watch(
        &paths,
        &store,
        record,
        launched,
        &mut signals,
        log,
        delay,
    ))
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
