//! Pseudo-terminals the way docker does `-t`: the terminal is allocated
//! inside the container (from its own devpts instance, so `tty` inside
//! names a device the container can see), its master side is passed to
//! berth, which puts the user's terminal in raw mode and relays bytes and
//! window-size changes until the container ends.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{isatty, read, Pid};

/// Both sides of a freshly allocated terminal.
pub struct Terminal {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Open a new terminal from `/dev/ptmx` of the current root (call it after
/// pivot_root, inside the container).
pub fn open_in_container() -> Result<Terminal, String> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| format!("/dev/ptmx: {e}"))?;
    grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let name = ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(Terminal {
        master: master.into(),
        slave: slave.into(),
    })
}

/// Make `slave` the controlling terminal of a new session and the
/// process's stdio (stdin only with `-i`; otherwise stdin is /dev/null).
pub fn make_controlling(slave: OwnedFd, interactive: bool) -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: TIOCSCTTY takes an int argument and touches no memory of ours.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(format!("TIOCSCTTY: {}", Errno::last()));
    }
    if interactive {
        nix::unistd::dup2_stdin(&slave).map_err(|e| format!("dup2: {e}"))?;
    } else {
        let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        nix::unistd::dup2_stdin(&null).map_err(|e| format!("dup2: {e}"))?;
    }
    nix::unistd::dup2_stdout(&slave).map_err(|e| format!("dup2: {e}"))?;
    nix::unistd::dup2_stderr(&slave).map_err(|e| format!("dup2: {e}"))?;
    Ok(())
}

/// The user's terminal in raw mode; restored when dropped, so that every
/// way out of berth (exit, error) gives the terminal back as it was.
pub struct RawMode<'fd> {
    fd: BorrowedFd<'fd>,
    saved: Termios,
}

impl<'fd> RawMode<'fd> {
    /// `None` when `fd` is not a terminal (nothing to change).
    pub fn enter(fd: BorrowedFd<'fd>) -> Option<Self> {
        let saved = tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

/// Give the container's terminal the size of the user's.
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    // SAFETY: winsize is plain old data; zero is a valid value.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes into the winsize we own.
    if unsafe { libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0 {
        // SAFETY: TIOCSWINSZ reads the winsize we own.
        unsafe { libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    }
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

/// Relay between the user's terminal and the container's until the
/// container's PID 1 exits; returns how it ended. Signals berth receives
/// (collected by `signals`) are forwarded to the container, except
/// SIGWINCH, which resizes the container's terminal.
pub fn relay(
    master: OwnedFd,
    forward_stdin: bool,
    signals: &mut SignalFd,
    child: Pid,
) -> anyhow::Result<WaitStatus> {
    let user_terminal = if isatty(stdin()).unwrap_or(false) {
        Some(stdin())
    } else if isatty(stdout()).unwrap_or(false) {
        Some(stdout())
    } else {
        None
    };
    if let Some(fd) = user_terminal {
        copy_window_size(fd, master.as_fd());
    }
    let _raw = if forward_stdin {
        RawMode::enter(stdin())
    } else {
        None
    };
    let mut stdin_open = forward_stdin;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut fds = vec![
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(anyhow::anyhow!("poll: {e}")),
            Ok(_) => {}
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (master_ready, signal_ready, stdin_ready) = (ready(0), ready(1), ready(2));
        drop(fds);
        if master_ready {
            match read(&master, &mut buf) {
                Ok(0) | Err(Errno::EIO) => return Ok(waitpid(child, None)?),
                Ok(n) => write_all(stdout(), &buf[..n])?,
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => return Err(anyhow::anyhow!("read from the container's terminal: {e}")),
            }
        }
        if stdin_ready {
            match read(stdin(), &mut buf) {
                Ok(0) | Err(Errno::EIO) => stdin_open = false,
                Ok(n) => write_all(master.as_fd(), &buf[..n])?,
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => return Err(anyhow::anyhow!("read from stdin: {e}")),
            }
        }
        if signal_ready {
            if let Some(info) = signals.read_signal()? {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGWINCH) => {
                        if let Some(fd) = user_terminal {
                            copy_window_size(fd, master.as_fd());
                        }
                    }
                    Ok(Signal::SIGCHLD) => {
                        let status = waitpid(child, Some(WaitPidFlag::WNOHANG))?;
                        if !matches!(status, WaitStatus::StillAlive) {
                            drain(&master, &mut buf)?;
                            return Ok(status);
                        }
                    }
                    Ok(signal) => {
                        let _ = kill(child, signal);
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

/// Copy what the container wrote before it exited and is still buffered.
fn drain(master: &OwnedFd, buf: &mut [u8]) -> anyhow::Result<()> {
    fcntl(master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    loop {
        match read(master, buf) {
            Ok(0) => return Ok(()),
            Ok(n) => write_all(stdout(), &buf[..n])?,
            Err(Errno::EINTR) => {}
            Err(_) => return Ok(()),
        }
    }
}
