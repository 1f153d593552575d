//! Container networking for berth. For now: bring a link up inside the
//! current network namespace (a fresh namespace has `lo` down, and
//! programs expect 127.0.0.1 to work). Bridges, veth pairs, IPAM and NAT
//! come with the networking work.
//!
//! ```no_run
//! // In a process that just entered a new network namespace:
//! berth_net::set_link_up("lo")?;
//! # Ok::<(), berth_net::NetError>(())
//! ```

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// Errors from network setup, naming the interface involved.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open a control socket: {source}")]
    Socket {
        #[source]
        source: nix::Error,
    },
    #[error("interface name {name:?} is too long")]
    NameTooLong { name: String },
    #[error("cannot {op} interface {name}: {source}")]
    Interface {
        name: String,
        op: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// Set interface `name` up (IFF_UP) in the calling process's network
/// namespace.
pub fn set_link_up(name: &str) -> Result<(), NetError> {
    let socket: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|source| NetError::Socket { source })?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= request.ifr_name.len() {
        return Err(NetError::NameTooLong {
            name: name.to_owned(),
        });
    }
    for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let interface_error = |op, source| NetError::Interface {
        name: name.to_owned(),
        op,
        source,
    };
    // SAFETY: SIOCGIFFLAGS reads the flags into the ifreq we own.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) };
    if rc < 0 {
        return Err(interface_error("read the flags of", nix::Error::last()));
    }
    // SAFETY: the kernel filled the flags member of the union above.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) };
    if rc < 0 {
        return Err(interface_error("bring up", nix::Error::last()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_overlong_names() {
        assert!(matches!(
            set_link_up("an-interface-name-far-too-long"),
            Err(NetError::NameTooLong { .. })
        ));
    }

    #[test]
    fn unknown_interface_is_named_in_the_error() {
        let err = set_link_up("nosuchif0").unwrap_err();
        assert!(err.to_string().contains("nosuchif0"), "{err}");
    }
}
