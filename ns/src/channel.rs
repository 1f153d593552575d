use std::io::{IoSlice, IoSliceMut};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::NsError;

/// Largest message the channel carries; protocol messages are small.
const MAX_MESSAGE: usize = 64 * 1024;

/// One end of a parent/child channel: sends `Out` messages, receives `In`
/// messages. A `SOCK_SEQPACKET` socket, so each message arrives whole, and
/// `SOCK_CLOEXEC`, so the end held by a child that execs closes by itself
/// (the other side then reads end-of-file, meaning "exec succeeded").
#[derive(Debug)]
pub struct Channel<Out, In> {
    socket: OwnedFd,
    _types: PhantomData<fn(Out) -> In>,
}

/// A connected pair of channel ends: give the first to one process and the
/// second to the other, and drop each in the process that does not use it.
#[allow(clippy::type_complexity)]
pub fn channel<A, B>() -> Result<(Channel<A, B>, Channel<B, A>), NsError>
where
    A: Serialize + DeserializeOwned,
    B: Serialize + DeserializeOwned,
{
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|source| NsError::Channel {
        op: "socketpair",
        source,
    })?;
    Ok((Channel::from_fd(a), Channel::from_fd(b)))
}

impl<Out: Serialize, In: DeserializeOwned> Channel<Out, In> {
    fn from_fd(socket: OwnedFd) -> Self {
        Channel {
            socket,
            _types: PhantomData,
        }
    }

    /// Send one message.
    pub fn send(&self, message: &Out) -> Result<(), NsError> {
        self.send_message(message, None)
    }

    /// Send one message together with a file descriptor (SCM_RIGHTS); the
    /// receiver gets its own copy of the descriptor.
    pub fn send_with_fd(&self, message: &Out, fd: BorrowedFd<'_>) -> Result<(), NsError> {
        self.send_message(message, Some(fd.as_raw_fd()))
    }

    fn send_message(&self, message: &Out, fd: Option<RawFd>) -> Result<(), NsError> {
        let bytes = serde_json::to_vec(message).map_err(|source| NsError::Message { source })?;
        let iov = [IoSlice::new(&bytes)];
        let fds = fd.map(|fd| [fd]);
        let cmsgs: Vec<ControlMessage<'_>> = fds
            .as_ref()
            .map(|f| ControlMessage::ScmRights(f))
            .into_iter()
            .collect();
        loop {
            match sendmsg::<()>(
                self.socket.as_raw_fd(),
                &iov,
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(nix::Error::EINTR) => continue,
                Err(source) => return Err(NsError::Channel { op: "send", source }),
                Ok(_) => return Ok(()),
            }
        }
    }

    /// Receive one message; `None` when the other end is closed (it exited
    /// or exec'd).
    pub fn recv(&self) -> Result<Option<In>, NsError> {
        Ok(self.recv_with_fd()?.map(|(message, _)| message))
    }

    /// Receive one message and the descriptor sent with it, if any. The
    /// descriptor arrives close-on-exec.
    pub fn recv_with_fd(&self) -> Result<Option<(In, Option<OwnedFd>)>, NsError> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut cmsg_space = nix::cmsg_space!([RawFd; 1]);
        let (len, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::Error::EINTR) => continue,
                Err(source) => {
                    return Err(NsError::Channel {
                        op: "receive",
                        source,
                    })
                }
                Ok(msg) => {
                    let mut fd = None;
                    for cmsg in msg.cmsgs().map_err(|source| NsError::Channel {
                        op: "receive",
                        source,
                    })? {
                        if let ControlMessageOwned::ScmRights(fds) = cmsg {
                            for raw in fds {
                                // SAFETY: the kernel just installed `raw` in
                                // our table for us; nothing else owns it.
                                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    break (msg.bytes, fd);
                }
            }
        };
        if len == 0 {
            return Ok(None);
        }
        let message =
            serde_json::from_slice(&buf[..len]).map_err(|source| NsError::Message { source })?;
        Ok(Some((message, fd)))
    }
}

impl<Out, In> AsRawFd for Channel<Out, In> {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Ping {
        Hello(String),
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Pong {
        Ack { n: u32 },
    }

    #[test]
    fn messages_and_fds_cross() {
        let (a, b): (Channel<Ping, Pong>, Channel<Pong, Ping>) = channel().unwrap();
        a.send(&Ping::Hello("hi".into())).unwrap();
        assert_eq!(b.recv().unwrap(), Some(Ping::Hello("hi".into())));

        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"passed").unwrap();
        b.send_with_fd(&Pong::Ack { n: 1 }, file.as_fd()).unwrap();
        let (msg, fd) = a.recv_with_fd().unwrap().unwrap();
        assert_eq!(msg, Pong::Ack { n: 1 });
        let mut received = std::fs::File::from(fd.unwrap());
        received.rewind().unwrap();
        let mut text = String::new();
        received.read_to_string(&mut text).unwrap();
        assert_eq!(text, "passed");
    }

    #[test]
    fn closed_peer_reads_as_none() {
        let (a, b): (Channel<Ping, Pong>, Channel<Pong, Ping>) = channel().unwrap();
        drop(b);
        assert_eq!(a.recv().unwrap(), None);
    }
}
