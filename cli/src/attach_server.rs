//! The supervisor's side of `berth attach`: the process that watches a
//! container (its monitor, or a foreground `run`) listens on `attach.sock`
//! in the container's directory and serves any number of clients at once:
//! each gets the output as it is written to the log, and may send input,
//! the end of its input and window sizes. Both directions are frames: one
//! byte of kind, four bytes of length (big endian), the payload.
//!
//! In the library so that the small detached monitor (`berth-monitor`)
//! serves clients without the rest of berth.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_state::Stream;

pub const SOCKET_NAME: &str = "attach.sock";

/// Output to a client.
pub const FRAME_STDOUT: u8 = 1;
pub const FRAME_STDERR: u8 = 2;
/// From a client: input, the end of input, a window size (rows, cols as
/// two big-endian u16).
pub const FRAME_STDIN: u8 = 10;
pub const FRAME_STDIN_CLOSED: u8 = 11;
pub const FRAME_RESIZE: u8 = 12;

/// A frame larger than this is not one berth sends.
const MAX_FRAME: usize = 1 << 20;

/// A client slower than this to take output is disconnected rather than
/// allowed to stall the container.
const CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// A path for `connect`/`bind` that fits in a socket address however
/// deep the container's directory is: through a descriptor of the
/// directory.
pub fn socket_address(dir: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{SOCKET_NAME}", dir.as_raw_fd()))
}

pub fn open_dir(container_dir: &Path) -> std::io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        container_dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    Ok(fd)
}

pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(kind);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A frame longer than any berth sends: the peer is not a berth.
#[derive(Debug, thiserror::Error)]
#[error("a frame of {len} bytes is longer than berth sends ({MAX_FRAME})")]
pub struct OversizedFrame {
    pub len: usize,
}

/// Complete frames out of a byte stream read in arbitrary pieces.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    pub bytes: Vec<u8>,
}

impl FrameBuffer {
    /// The next complete frame; `Err` for a frame no berth sends.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, OversizedFrame> {
        if self.bytes.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.bytes[1], self.bytes[2], self.bytes[3], self.bytes[4]])
            as usize;
        if len > MAX_FRAME {
            return Err(OversizedFrame { len });
        }
        if self.bytes.len() < 5 + len {
            return Ok(None);
        }
        let kind = self.bytes[0];
        let payload = self.bytes[5..5 + len].to_vec();
        self.bytes.drain(..5 + len);
        Ok(Some((kind, payload)))
    }
}

/// What a client asked the supervisor to do.
#[derive(Debug)]
pub enum ClientRequest {
    Input(Vec<u8>),
    CloseInput,
    Resize(u16, u16),
}

#[derive(Debug)]
struct Client {
    stream: UnixStream,
    incoming: FrameBuffer,
}

/// The supervisor's side: the listening socket and its clients.
#[derive(Debug)]
pub struct AttachServer {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Client>,
}

impl AttachServer {
    /// Listen for clients of the container whose directory is
    /// `container_dir` (a stale socket of an earlier run is replaced).
    pub fn listen(container_dir: &Path) -> std::io::Result<Self> {
        let dir = open_dir(container_dir)?;
        let address = socket_address(&dir);
        let _ = std::fs::remove_file(&address);
        let listener = UnixListener::bind(&address)?;
        // Only root may attach (connecting needs write permission).
        std::fs::set_permissions(
            &address,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        listener.set_nonblocking(true)?;
        Ok(AttachServer {
            listener,
            path: container_dir.join(SOCKET_NAME),
            clients: Vec::new(),
        })
    }

    /// Descriptors to poll: the listener first, then each client.
    pub fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd())
            .chain(self.clients.iter().map(|c| c.stream.as_fd()))
            .collect()
    }

    /// Handle readiness of the descriptors [`Self::poll_fds`] gave (in
    /// that order); returns the clients' requests.
    pub fn service(&mut self, ready: &[bool]) -> Vec<ClientRequest> {
        let mut requests = Vec::new();
        let mut gone = Vec::new();
        for (i, client) in self.clients.iter_mut().enumerate() {
            if !ready.get(i + 1).copied().unwrap_or(false) {
                continue;
            }
            let mut buf = [0u8; 4096];
            match client.stream.read(&mut buf) {
                Ok(0) => gone.push(i),
                Ok(n) => {
                    client.incoming.bytes.extend_from_slice(&buf[..n]);
                    loop {
                        match client.incoming.next_frame() {
                            Ok(Some((FRAME_STDIN, data))) => {
                                requests.push(ClientRequest::Input(data))
                            }
                            Ok(Some((FRAME_STDIN_CLOSED, _))) => {
                                requests.push(ClientRequest::CloseInput)
                            }
                            Ok(Some((FRAME_RESIZE, size))) if size.len() == 4 => {
                                requests.push(ClientRequest::Resize(
                                    u16::from_be_bytes([size[0], size[1]]),
                                    u16::from_be_bytes([size[2], size[3]]),
                                ))
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(OversizedFrame { .. }) => {
                                gone.push(i);
                                break;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => gone.push(i),
            }
        }
        for i in gone.into_iter().rev() {
            self.clients.remove(i);
        }
        if ready.first().copied().unwrap_or(false) {
            while let Ok((stream, _)) = self.listener.accept() {
                if stream.set_nonblocking(false).is_ok()
                    && stream.set_write_timeout(Some(CLIENT_SEND_TIMEOUT)).is_ok()
                    && stream.set_read_timeout(Some(CLIENT_SEND_TIMEOUT)).is_ok()
                {
                    self.clients.push(Client {
                        stream,
                        incoming: FrameBuffer::default(),
                    });
                }
            }
        }
        requests
    }

    /// Give output to every client; one that cannot take it is dropped.
    pub fn broadcast(&mut self, stream: Stream, bytes: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let kind = if stream == Stream::Stderr {
            FRAME_STDERR
        } else {
            FRAME_STDOUT
        };
        let frame = encode(kind, bytes);
        self.clients
            .retain_mut(|client| client.stream.write_all(&frame).is_ok());
    }
}

impl Drop for AttachServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
