//! Watching a running container: relay its output (to the user and to its
//! log), the user's input and signals, until its PID 1 exits. The same loop
//! serves `berth run` in the foreground and the monitor of a detached
//! container (in the library, so that the small `berth-monitor` runs
//! it); only what is attached differs.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::Context;
use berth_state::{LogWriter, Stream};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{isatty, read, Pid};

use crate::attach_server::{AttachServer, ClientRequest};
use crate::runtime::tty::{copy_window_size, RawMode};

/// Signals berth relays to the container (SIGCHLD and SIGWINCH are for
/// berth itself).
pub const RELAYED_SIGNALS: [Signal; 8] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCHLD,
];

/// Where the container's output comes from: its terminal (`-t`) or a pipe
/// per stream.
#[derive(Debug)]
pub enum Output {
    Terminal(OwnedFd),
    /// `stdin`: the write end of the container's stdin, held for attach
    /// clients (a detached `-i` container).
    Pipes {
        stdout: OwnedFd,
        stderr: OwnedFd,
        stdin: Option<OwnedFd>,
    },
}

/// What a supervisor is connected to.
#[derive(Debug)]
pub struct Attachment {
    /// Copy output to berth's own stdout/stderr (foreground runs).
    pub echo: bool,
    /// Copy berth's stdin to the container's terminal (`-it`).
    pub forward_stdin: bool,
    /// Forward the signals berth receives to the container's PID 1.
    pub forward_signals: bool,
}

fn stdin() -> BorrowedFd<'static> {
    // SAFETY: berth never closes its standard streams, so fd 0 stays valid
    // for the life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

fn stdout() -> BorrowedFd<'static> {
    // SAFETY: as for stdin: fd 1 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(1) }
}

fn stderr() -> BorrowedFd<'static> {
    // SAFETY: as for stdin: fd 2 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(2) }
}

fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> nix::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// berth's stdin or stdout, whichever is a terminal (for its size).
pub fn user_terminal() -> Option<BorrowedFd<'static>> {
    [stdin(), stdout()]
        .into_iter()
        .find(|fd| isatty(*fd).unwrap_or(false))
}

/// Wait until one of `fds` has something (input, or its end); which ones
/// did, in order. `None` when a signal interrupted the wait: poll again.
pub fn wait_ready(mut fds: Vec<PollFd<'_>>) -> anyhow::Result<Option<Vec<bool>>> {
    match poll(&mut fds, PollTimeout::NONE) {
        Err(Errno::EINTR) => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("poll: {e}")),
        Ok(_) => {}
    }
    Ok(Some(
        fds.iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect(),
    ))
}

struct Source {
    fd: OwnedFd,
    stream: Stream,
    open: bool,
}

/// Run the relay until `child` exits; returns how it ended.
pub fn supervise(
    child: Pid,
    output: Output,
    signals: &mut SignalFd,
    mut log: Option<&mut LogWriter>,
    attach: &Attachment,
    mut server: Option<&mut AttachServer>,
) -> anyhow::Result<WaitStatus> {
    let mut container_stdin = None;
    let (mut sources, terminal) = match output {
        Output::Terminal(fd) => {
            let copy = fd.try_clone().context("duplicate the terminal")?;
            (
                vec![Source {
                    fd,
                    stream: Stream::Stdout,
                    open: true,
                }],
                Some(copy),
            )
        }
        Output::Pipes {
            stdout,
            stderr,
            stdin,
        } => {
            container_stdin = stdin;
            (
                vec![
                    Source {
                        fd: stdout,
                        stream: Stream::Stdout,
                        open: true,
                    },
                    Source {
                        fd: stderr,
                        stream: Stream::Stderr,
                        open: true,
                    },
                ],
                None,
            )
        }
    };
    let user_terminal = user_terminal();
    let _raw = match (&terminal, attach.forward_stdin) {
        (Some(_), true) => RawMode::enter(stdin()),
        _ => None,
    };
    if let Some(pipe) = &container_stdin {
        // Input is queued and written as the container takes it, so that
        // a container not reading its input never stops its output relay.
        fcntl(pipe, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    }
    let mut stdin_open = attach.forward_stdin && (terminal.is_some() || container_stdin.is_some());
    // Input for the container's stdin pipe not written yet, and whether
    // the pipe is to be closed once it is (the input ended).
    let mut pending: Vec<u8> = Vec::new();
    let mut close_when_written = false;
    // Small on purpose: a detached container's monitor lives as long as
    // the container and its memory is paid per container.
    let mut buf = vec![0u8; 16 * 1024];
    let emit = |stream: Stream,
                bytes: &[u8],
                log: &mut Option<&mut LogWriter>,
                server: &mut Option<&mut AttachServer>|
     -> anyhow::Result<()> {
        if attach.echo {
            let target = if stream == Stream::Stdout {
                stdout()
            } else {
                stderr()
            };
            // The user going away (closed pipe) must not kill the container.
            let _ = write_all(target, bytes);
        }
        if let Some(server) = server {
            server.broadcast(stream, bytes);
        }
        if let Some(log) = log {
            log.write(stream, bytes)?;
        }
        Ok(())
    };

    let status = loop {
        let mut fds: Vec<PollFd> = Vec::with_capacity(4);
        let mut index_of_source = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            if source.open {
                index_of_source.push(i);
                fds.push(PollFd::new(source.fd.as_fd(), PollFlags::POLLIN));
            }
        }
        let signal_slot = fds.len();
        fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
        let stdin_slot = fds.len();
        // One queue's worth at a time: berth's stdin waits while the
        // container has not taken the last read.
        if stdin_open && pending.is_empty() {
            fds.push(PollFd::new(stdin(), PollFlags::POLLIN));
        }
        let pipe_slot = fds.len();
        if let (false, Some(pipe)) = (pending.is_empty(), &container_stdin) {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLOUT));
        }
        let server_slot = fds.len();
        if let Some(server) = &server {
            fds.extend(
                server
                    .poll_fds()
                    .into_iter()
                    .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
            );
        }
        let Some(ready) = wait_ready(fds)? else {
            continue;
        };

        for (slot, &i) in index_of_source.iter().enumerate() {
            if !ready[slot] {
                continue;
            }
            let source = &mut sources[i];
            match read(&source.fd, &mut buf) {
                // EIO: every holder of the terminal's other side is gone.
                Ok(0) | Err(Errno::EIO) => source.open = false,
                Ok(n) => emit(source.stream, &buf[..n], &mut log, &mut server)?,
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => return Err(anyhow::anyhow!("read the container's output: {e}")),
            }
        }
        let stdin_polled = stdin_open && stdin_slot < pipe_slot;
        if stdin_polled && ready.get(stdin_slot).copied().unwrap_or(false) {
            match read(stdin(), &mut buf) {
                Ok(0) | Err(Errno::EIO) => {
                    stdin_open = false;
                    close_when_written = true;
                }
                Ok(n) => match &terminal {
                    Some(terminal) => write_all(terminal.as_fd(), &buf[..n])?,
                    None => pending.extend_from_slice(&buf[..n]),
                },
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => return Err(anyhow::anyhow!("read stdin: {e}")),
            }
        }
        if let Some(server) = server.as_deref_mut() {
            for request in server.service(&ready[server_slot.min(ready.len())..]) {
                match request {
                    ClientRequest::Input(data) => match &terminal {
                        Some(terminal) => {
                            let _ = write_all(terminal.as_fd(), &data);
                        }
                        None if container_stdin.is_some() => pending.extend_from_slice(&data),
                        None => {}
                    },
                    ClientRequest::CloseInput => close_when_written = true,
                    ClientRequest::Resize(rows, cols) => {
                        if let Some(terminal) = &terminal {
                            crate::runtime::tty::set_window_size(terminal.as_fd(), rows, cols);
                        }
                    }
                }
            }
        }
        // Written now if it can be (also right after a read), else when
        // poll says the pipe has room.
        if let (false, Some(pipe)) = (pending.is_empty(), &container_stdin) {
            match nix::unistd::write(pipe, &pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                // The container closed its stdin: the rest has no reader.
                Err(_) => {
                    pending.clear();
                    container_stdin = None;
                    stdin_open = false;
                }
            }
        }
        if close_when_written && pending.is_empty() {
            container_stdin = None;
        }
        if ready[signal_slot] {
            if let Some(info) = signals.read_signal()? {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGWINCH) => {
                        if let (Some(user), Some(container)) = (user_terminal, &terminal) {
                            copy_window_size(user, container.as_fd());
                        }
                    }
                    Ok(Signal::SIGCHLD) => {}
                    Ok(signal) if attach.forward_signals => {
                        let _ = kill(child, signal);
                    }
                    _ => {}
                }
            }
        }
        // Checked every round, not only on SIGCHLD: signals of one kind
        // coalesce, and the check is one cheap syscall.
        let status = waitpid(child, Some(WaitPidFlag::WNOHANG))?;
        if !matches!(status, WaitStatus::StillAlive) {
            break status;
        }
    };
    // Output written just before the exit may still be buffered.
    for source in sources.iter_mut().filter(|s| s.open) {
        fcntl(&source.fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        loop {
            match read(&source.fd, &mut buf) {
                Ok(0) => break,
                Ok(n) => emit(source.stream, &buf[..n], &mut log, &mut server)?,
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
    }
    if let Some(log) = log {
        log.flush()?;
    }
    Ok(status)
}
