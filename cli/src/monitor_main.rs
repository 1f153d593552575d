//! `berth-monitor`: the small program that watches a detached container
//! (see [`cli::monitor_handoff`]). berth's monitor process executes it once
//! the container runs; it relays the container's output to its log and to
//! attach clients until PID 1 exits, then executes berth again to record
//! the end. Not meant to be run by hand.

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use berth_state::{LogWriter, Stream};
use cli::attach_server::AttachServer;
use cli::monitor_handoff::{ContainerEnd, DnsHandoff, RelayOutput, RelayPlan, FINISH_ENTRY};
use cli::supervise::{supervise, Attachment, Output, RELAYED_SIGNALS};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

fn main() -> ExitCode {
    // One malloc arena: the DNS responder's threads would otherwise each
    // touch an arena of their own, paid per container.
    // SAFETY: mallopt only changes the allocator's tuning; it is called
    // before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let plan = match RelayPlan::parse(&args) {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("berth-monitor: {error:#} (it is started by berth, not by hand)");
            return ExitCode::from(125);
        }
    };
    let started = Instant::now();
    let end = watch(&plan);
    // The published ports are free again once the container is gone,
    // before berth records its end (as berth's own monitor does).
    for fd in &plan.held {
        let _ = nix::unistd::close(*fd);
    }
    let finish = plan.finish(end, started.elapsed());
    let mut argv = vec![plan.berth.clone().into_os_string(), FINISH_ENTRY.into()];
    argv.extend(finish.to_args());
    // Not std's Command: it would unblock the signals berth relays, and
    // a pending one would then kill berth before it records the end.
    let error = exec(&argv);
    log_line(
        &plan,
        &format!(
            "berth: cannot record the end of the container: {} {error}\n",
            plan.berth.display()
        ),
    );
    ExitCode::from(1)
}

/// Relay until the container's PID 1 exits; how it ended. If relaying
/// fails, the container is stopped (as berth's own monitor does) and the
/// failure written to its log.
fn watch(plan: &RelayPlan) -> ContainerEnd {
    let pid = Pid::from_raw(plan.pid);
    match relay(plan, pid) {
        Ok(end) => end,
        Err(error) => {
            log_line(plan, &format!("berth: the monitor failed: {error:#}\n"));
            let _ = kill(pid, Signal::SIGKILL);
            loop {
                match waitpid(pid, None) {
                    Ok(status) => {
                        if let Some(end) = ContainerEnd::from_wait_status(status) {
                            break end;
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    // Not our child (any more): nothing else to learn.
                    Err(_) => break ContainerEnd::Signaled(Signal::SIGKILL as i32),
                }
            }
        }
    }
}

fn relay(plan: &RelayPlan, pid: Pid) -> anyhow::Result<ContainerEnd> {
    let output = match plan.output {
        RelayOutput::Terminal(fd) => Output::Terminal(inherited(fd)?),
        RelayOutput::Pipes {
            stdout,
            stderr,
            stdin,
        } => Output::Pipes {
            stdout: inherited(stdout)?,
            stderr: inherited(stderr)?,
            stdin: stdin.map(inherited).transpose()?,
        },
    };
    // berth blocked these before it started the container (and the mask
    // survives the exec): a SIGCHLD since then is pending, not lost.
    let mut relayed = SigSet::empty();
    for signal in RELAYED_SIGNALS {
        relayed.add(signal);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&relayed), None)?;
    let mut signals = SignalFd::with_flags(&relayed, SfdFlags::SFD_CLOEXEC)?;
    let mut log = LogWriter::open(&plan.log, plan.log_limits)
        .with_context(|| format!("cannot open the log {}", plan.log.display()))?;
    // Without the socket the container still runs; only attach is lost.
    let mut server = AttachServer::listen(&plan.container_dir).ok();
    // Served until the container ended. Without it the container still
    // runs; its DNS queries fail.
    let _dns = plan
        .dns
        .as_ref()
        .and_then(|dns| match serve_dns(plan, dns) {
            Ok(serving) => Some(serving),
            Err(error) => {
                log_line(plan, &format!("berth: the DNS responder: {error:#}\n"));
                None
            }
        });
    let attach = Attachment {
        echo: false,
        forward_stdin: false,
        forward_signals: false,
    };
    let status = supervise(
        pid,
        output,
        &mut signals,
        Some(&mut log),
        &attach,
        server.as_mut(),
    )?;
    ContainerEnd::from_wait_status(status).context("the container's PID 1 did not end")
}

fn serve_dns(plan: &RelayPlan, dns: &DnsHandoff) -> anyhow::Result<berth_net::dns::Serving> {
    let socket = std::net::UdpSocket::from(inherited(dns.socket)?);
    let hosts = plan.container_dir.join("hosts");
    let responder = berth_net::dns::Responder::new(socket, hosts, dns.upstreams.clone())
        .with_search_domains(dns.search_domains.clone());
    Ok(responder.spawn()?)
}

/// A descriptor berth handed over, kept from what berth is executed with
/// next.
fn inherited(fd: RawFd) -> anyhow::Result<OwnedFd> {
    if fd <= 2 {
        anyhow::bail!("descriptor {fd} is a standard stream, not the container's");
    }
    // Checked open before it is owned, so a wrong number fails here.
    // SAFETY: F_SETFD on a number only changes that descriptor's flags
    // (or fails with EBADF when it is not open); no memory is involved.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        anyhow::bail!(
            "descriptor {fd} was not handed over: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: the descriptor is open (checked above) and was handed to this
    // process for this use alone: nothing else in it owns or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A line in the container's log: the only place a detached monitor can
/// report to.
fn log_line(plan: &RelayPlan, line: &str) {
    if let Ok(mut log) = LogWriter::open(&plan.log, plan.log_limits) {
        let _ = log.write(Stream::Stderr, line.as_bytes());
        let _ = log.flush();
    }
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// execv(argv[0], argv), keeping the signal mask; returns only on failure.
fn exec(argv: &[OsString]) -> String {
    let argv: Result<Vec<CString>, _> = argv
        .iter()
        .map(|arg| CString::new(arg.as_bytes()))
        .collect();
    let argv = match argv {
        Ok(argv) if !argv.is_empty() => argv,
        _ => return "has a NUL byte in its arguments".to_owned(),
    };
    match nix::unistd::execv(&argv[0], &argv) {
        Err(error) => error.to_string(),
        Ok(never) => match never {},
    }
}
