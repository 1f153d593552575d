//! Extended attributes that travel with a copy: `user.*` and file
//! capabilities (`security.capability`, so a copied `ping` keeps
//! `cap_net_raw`). Others stay behind: `trusted.*` is where overlayfs keeps
//! its own bookkeeping (opaque directories, redirects), SELinux labels and
//! ACLs belong to the destination's policy.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// (name, value) pairs; names without their NUL.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Whether an attribute named `name` is copied.
pub(crate) fn travels(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name == b"security.capability"
}

/// Filesystems without extended attributes (or without that namespace).
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

/// The attributes of `fd` that travel.
pub(crate) fn read(fd: BorrowedFd<'_>) -> io::Result<Xattrs> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: `fd` is open; the buffer is valid for `names.len()` bytes.
        let n = unsafe { libc::flistxattr(fd.as_raw_fd(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if names.len() < (1 << 20) => names.resize(names.len() * 4, 0),
            _ if unsupported(&e) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !travels(name) {
            continue;
        }
        let mut c_name = name.to_vec();
        c_name.push(0);
        let mut value = vec![0u8; 256];
        loop {
            // SAFETY: `c_name` is NUL-terminated; the buffer is valid for
            // `value.len()` bytes.
            let n = unsafe {
                libc::fgetxattr(
                    fd.as_raw_fd(),
                    c_name.as_ptr().cast(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if n >= 0 {
                value.truncate(n as usize);
                out.push((name.to_vec(), value));
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) if value.len() < (1 << 20) => value.resize(value.len() * 4, 0),
                // Removed since it was listed.
                _ if unsupported(&e) => break,
                _ => return Err(e),
            }
        }
    }
    Ok(out)
}

/// Set `xattrs` on `fd` (after its owner: chown drops file capabilities).
/// A destination without extended attributes is not an error.
pub(crate) fn write(fd: BorrowedFd<'_>, xattrs: &Xattrs) -> io::Result<()> {
    for (name, value) in xattrs {
        if !travels(name) || name.contains(&0) {
            continue;
        }
        let mut c_name = name.clone();
        c_name.push(0);
        // SAFETY: `c_name` is NUL-terminated; `value` is valid for its length.
        let rc = unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                c_name.as_ptr().cast(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if !unsupported(&e) {
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn user_attributes_travel_and_trusted_ones_stay() {
        assert!(travels(b"user.mime_type"));
        assert!(travels(b"security.capability"));
        assert!(!travels(b"trusted.overlay.opaque"));
        assert!(!travels(b"security.selinux"));
        assert!(!travels(b"system.posix_acl_access"));

        let tmp = tempfile::tempdir().unwrap();
        let a = std::fs::File::create(tmp.path().join("a")).unwrap();
        let b = std::fs::File::create(tmp.path().join("b")).unwrap();
        let set = vec![(b"user.color".to_vec(), b"blue".to_vec())];
        write(a.as_fd(), &set).unwrap();
        let got = read(a.as_fd()).unwrap();
        if got.is_empty() {
            eprintln!("skipped: the temp filesystem keeps no user xattrs");
            return;
        }
        assert_eq!(got, set);
        write(b.as_fd(), &got).unwrap();
        assert_eq!(read(b.as_fd()).unwrap(), set);
    }
}
