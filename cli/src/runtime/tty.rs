//! Pseudo-terminals the way docker does `-t`: the terminal is allocated
//! inside the container (from its own devpts instance, so `tty` inside
//! names a device the container can see), its master side is passed to
//! berth, which puts the user's terminal in raw mode and relays bytes and
//! window-size changes until the container ends.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

/// Both sides of a freshly allocated terminal.
#[derive(Debug)]
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
/// process's stdin, stdout and stderr (as docker does for `-t`, with or
/// without `-i`: `-i` only decides whether the user's keys reach it).
pub fn make_controlling(slave: OwnedFd) -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: TIOCSCTTY takes an int argument and touches no memory of ours.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(format!("TIOCSCTTY: {}", Errno::last()));
    }
    nix::unistd::dup2_stdin(&slave).map_err(|e| format!("dup2: {e}"))?;
    nix::unistd::dup2_stdout(&slave).map_err(|e| format!("dup2: {e}"))?;
    nix::unistd::dup2_stderr(&slave).map_err(|e| format!("dup2: {e}"))?;
    Ok(())
}

/// The user's terminal in raw mode; restored when dropped, so that every
/// way out of berth (exit, error) gives the terminal back as it was.
#[derive(Debug)]
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

/// Set the window size of the terminal `fd` (the spec's `consoleSize`).
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we own.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) };
}

/// The window size of the terminal `fd`, if it is one: (rows, columns).
pub fn window_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain old data; zero is a valid value.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes into the winsize we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0 {
        Some((size.ws_row, size.ws_col))
    } else {
        None
    }
}
