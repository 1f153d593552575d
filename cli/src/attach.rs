//! `berth attach`: connect this terminal to a running container's stdio,
//! as a client of the supervisor's socket ([`cli::attach_server`]).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use anyhow::{bail, Context};
use berth_state::{ContainerRecord, ContainerStore};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use cli::attach_server::{
    encode, open_dir, socket_address, FrameBuffer, FRAME_RESIZE, FRAME_STDERR, FRAME_STDIN,
    FRAME_STDIN_CLOSED,
};

use crate::args::AttachArgs;
use crate::paths::Paths;

/// docker's default detach sequence: Ctrl-P Ctrl-Q.
const DEFAULT_DETACH_KEYS: &[u8] = &[0x10, 0x11];

/// How long `attach` waits, once the container's output has ended, for its
/// end to be recorded (its monitor does that right away).
const ATTACH_END_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `--detach-keys`: docker's syntax, comma-separated `ctrl-X` or single
/// characters (e.g. `ctrl-p,ctrl-q`, `ctrl-a,d`).
pub fn parse_detach_keys(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut keys = Vec::new();
    for key in text.split(',') {
        let byte = match key.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => {
                let c = c.as_bytes()[0].to_ascii_lowercase();
                match c {
                    b'a'..=b'z' => c - b'a' + 1,
                    b'@' => 0,
                    b'[' => 27,
                    b'\\' => 28,
                    b']' => 29,
                    b'^' => 30,
                    b'_' => 31,
                    _ => bail!("invalid --detach-keys {text:?}: unknown key {key:?}"),
                }
            }
            _ if key.len() == 1 => key.as_bytes()[0],
            _ => bail!(
                "invalid --detach-keys {text:?}: use keys like ctrl-p,ctrl-q (ctrl-a..ctrl-z, \
                 ctrl-@, ctrl-[, ctrl-\\, ctrl-], ctrl-^, ctrl-_, or single characters)"
            ),
        };
        keys.push(byte);
    }
    Ok(keys)
}

/// Watches typed input for the detach sequence; bytes of a partial match
/// are held back until it fails (docker does the same).
struct DetachWatch {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachWatch {
    /// The bytes to send on; `None` when the sequence is complete.
    fn filter(&mut self, input: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len());
        for &byte in input {
            if self.keys.is_empty() {
                out.push(byte);
            } else if byte == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return None;
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if byte == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(byte);
                }
            }
        }
        Some(out)
    }
}

pub fn attach(paths: &Paths, args: &AttachArgs) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    let record = crate::container::find(&store, &args.container)?;
    let detach_keys = args
        .detach_keys
        .as_deref()
        .map(parse_detach_keys)
        .transpose()?;
    if !record.is_active() {
        bail!(
            "cannot attach to container {}: it is not running (start it with `berth start -a`)",
            record.name
        );
    }
    if record.status == berth_state::Status::Paused {
        bail!(
            "cannot attach to container {}: it is paused; unpause it first",
            record.name
        );
    }
    attach_running(&store, &record, !args.no_stdin, detach_keys)
}

/// Relay this terminal to a running container until it exits (its exit
/// code is returned) or the user types the detach keys (1, as docker).
pub fn attach_running(
    store: &ContainerStore,
    record: &ContainerRecord,
    with_stdin: bool,
    detach_keys: Option<Vec<u8>>,
) -> anyhow::Result<i32> {
    let dir = open_dir(&store.container_dir(&record.id))
        .with_context(|| format!("cannot attach to container {}", record.name))?;
    let mut socket = UnixStream::connect(socket_address(&dir)).with_context(|| {
        format!(
            "cannot attach to container {}: its supervisor does not answer",
            record.name
        )
    })?;
    let stdin = std::io::stdin();
    let stdin_fd = stdin.as_fd();
    let stdin_is_tty = nix::unistd::isatty(stdin_fd).unwrap_or(false);
    let forward_stdin = with_stdin && record.interactive;
    if forward_stdin && record.tty && !stdin_is_tty {
        bail!("the input device is not a TTY: attach to a container with -t from a terminal");
    }
    let _raw = (forward_stdin && record.tty)
        .then(|| cli::runtime::tty::RawMode::enter(stdin_fd))
        .flatten();
    // Signals: the window size follows this terminal; without a terminal
    // the usual ones are passed on to the container (docker's sig-proxy).
    let mut relayed = SigSet::empty();
    relayed.add(Signal::SIGWINCH);
    if !record.tty {
        for signal in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            relayed.add(signal);
        }
    }
    let mut previous = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&relayed), Some(&mut previous))?;
    let _restore = crate::run::RestoreMask::new(previous);
    let signals = SignalFd::with_flags(&relayed, SfdFlags::SFD_CLOEXEC)?;
    let send_size = |socket: &mut UnixStream| {
        if let Some((rows, cols)) =
            crate::supervise::user_terminal().and_then(cli::runtime::tty::window_size)
        {
            let mut size = rows.to_be_bytes().to_vec();
            size.extend_from_slice(&cols.to_be_bytes());
            let _ = socket.write_all(&encode(FRAME_RESIZE, &size));
        }
    };
    if record.tty {
        send_size(&mut socket);
    }
    let mut watch = DetachWatch {
        keys: if record.tty || detach_keys.is_some() {
            detach_keys.unwrap_or_else(|| DEFAULT_DETACH_KEYS.to_vec())
        } else {
            Vec::new()
        },
        matched: 0,
    };
    let mut incoming = FrameBuffer::default();
    let mut stdin_open = forward_stdin;
    let mut buf = vec![0u8; 16 * 1024];
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    loop {
        let mut fds = vec![
            PollFd::new(socket.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
        }
        let Some(ready) = crate::supervise::wait_ready(fds)? else {
            continue;
        };
        if ready[0] {
            let n = match socket.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if n == 0 {
                break;
            }
            incoming.bytes.extend_from_slice(&buf[..n]);
            while let Ok(Some((kind, data))) = incoming.next_frame() {
                // A reader of ours that went away must not end the relay
                // with an error: the closed pipe is reported like any other.
                let written = if kind == FRAME_STDERR {
                    stderr
                        .lock()
                        .write_all(&data)
                        .and_then(|()| stderr.lock().flush())
                } else {
                    stdout
                        .lock()
                        .write_all(&data)
                        .and_then(|()| stdout.lock().flush())
                };
                if let Err(e) = written {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(crate::exit::CLOSED_PIPE);
                    }
                    return Err(e).context("cannot write the output");
                }
            }
        }
        if ready[1] {
            if let Some(info) = signals.read_signal()? {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGWINCH) => send_size(&mut socket),
                    Ok(signal) => {
                        if let Some(pid) = record.pid.filter(|_| crate::container::is_alive(record))
                        {
                            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        if stdin_open && ready.get(2).copied().unwrap_or(false) {
            match nix::unistd::read(stdin_fd, &mut buf) {
                Ok(0) | Err(Errno::EIO) => {
                    stdin_open = false;
                    let _ = socket.write_all(&encode(FRAME_STDIN_CLOSED, &[]));
                }
                Ok(n) => match watch.filter(&buf[..n]) {
                    Some(data) => {
                        if !data.is_empty()
                            && socket.write_all(&encode(FRAME_STDIN, &data)).is_err()
                        {
                            break;
                        }
                    }
                    None => {
                        drop(_raw);
                        eprintln!("\r\nread escape sequence");
                        return Ok(1);
                    }
                },
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => bail!("read stdin: {e}"),
            }
        }
    }
    // The supervisor closes the connection when the container ends and
    // records the exit right after (for a `--rm` one, keeps the code and
    // removes it): its code, once recorded.
    let ended = crate::container::wait_for_exit(store, record.clone(), Some(ATTACH_END_LIMIT))?;
    Ok(ended.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cli::attach_server::FRAME_STDOUT;

    #[test]
    fn detach_keys_parse_as_docker_writes_them() {
        assert_eq!(
            parse_detach_keys("ctrl-p,ctrl-q").unwrap(),
            vec![0x10, 0x11]
        );
        assert_eq!(parse_detach_keys("ctrl-a,d").unwrap(), vec![1, b'd']);
        assert_eq!(parse_detach_keys("ctrl-@,ctrl-_").unwrap(), vec![0, 31]);
        for bad in ["ctrl-", "ctrl-pq", "alt-x", "ab", ""] {
            assert!(parse_detach_keys(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn detach_sequence_is_held_back_and_released_on_mismatch() {
        let mut watch = DetachWatch {
            keys: vec![0x10, 0x11],
            matched: 0,
        };
        assert_eq!(watch.filter(b"ab\x10").unwrap(), b"ab");
        // Not the sequence after all: the held byte goes out first.
        assert_eq!(watch.filter(b"c").unwrap(), b"\x10c");
        assert_eq!(watch.filter(b"x\x10").unwrap(), b"x");
        assert!(watch.filter(b"\x11").is_none());
    }

    #[test]
    fn frames_survive_arbitrary_splits() {
        let mut stream = encode(FRAME_STDOUT, b"hello");
        stream.extend(encode(FRAME_RESIZE, &[0, 24, 0, 80]));
        let mut buffer = FrameBuffer::default();
        let mut frames = Vec::new();
        for byte in stream {
            buffer.bytes.push(byte);
            while let Ok(Some(frame)) = buffer.next_frame() {
                frames.push(frame);
            }
        }
        assert_eq!(
            frames,
            vec![
                (FRAME_STDOUT, b"hello".to_vec()),
                (FRAME_RESIZE, vec![0, 24, 0, 80])
            ]
        );
        let mut hostile = FrameBuffer {
            bytes: encode(FRAME_STDIN, &[]),
        };
        hostile.bytes[1] = 0xff;
        assert!(hostile.next_frame().is_err());
    }
}
