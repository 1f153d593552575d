use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{Namespace, NsError};

/// The file of sysctl `key` below `proc_sys` (pass "/proc/sys"):
/// `net.ipv4.ip_forward` is `<proc_sys>/net/ipv4/ip_forward`. A key with
/// an empty component (`net..ipv4`, which also rules out `..`), a `/` or a
/// NUL is [`NsError::InvalidSysctl`]: it could name a file elsewhere.
pub fn sysctl_path(proc_sys: &Path, key: &str) -> Result<PathBuf, NsError> {
    let invalid = |reason| NsError::InvalidSysctl {
        key: key.to_owned(),
        reason,
    };
    if key.contains('/') {
        return Err(invalid("it contains '/'"));
    }
    if key.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    let mut path = proc_sys.to_path_buf();
    for component in key.split('.') {
        if component.is_empty() {
            return Err(invalid("it has an empty component"));
        }
        path.push(component);
    }
    Ok(path)
}

/// Whether a container whose own (not the host's) namespaces are
/// `own_namespaces` may set sysctl `key`, by runc's rules: only sysctls
/// that the kernel keeps per namespace, and only when that namespace is
/// the container's:
///
/// - `kernel.msg*`, `kernel.sem`, `kernel.sem_next_id`, `kernel.shm*` and
///   `fs.mqueue.*` need the IPC namespace;
/// - `net.*` needs the network namespace;
/// - `kernel.hostname` and `kernel.domainname` need the UTS namespace
///   (runc refuses `kernel.hostname` too, since the spec has a hostname
///   field; that is for the caller to decide);
/// - every other sysctl would change the host: refused.
///
/// A pure function, so that a spec can be refused before anything is
/// made. Refusals are [`NsError::SysctlNotAllowed`], a malformed key
/// [`NsError::InvalidSysctl`].
pub fn validate_sysctl(key: &str, own_namespaces: &[Namespace]) -> Result<(), NsError> {
    sysctl_path(Path::new(""), key)?;
    let needs = |namespace: Namespace, reason: &'static str| {
        if own_namespaces.contains(&namespace) {
            Ok(())
        } else {
            Err(NsError::SysctlNotAllowed {
                key: key.to_owned(),
                reason,
            })
        }
    };
    let ipc = key.starts_with("kernel.msg")
        || key.starts_with("kernel.shm")
        || key == "kernel.sem"
        || key == "kernel.sem_next_id"
        || key.starts_with("fs.mqueue.");
    if ipc {
        needs(Namespace::Ipc, "it needs the container's own IPC namespace")
    } else if key.starts_with("net.") {
        needs(
            Namespace::Net,
            "it needs the container's own network namespace",
        )
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        needs(Namespace::Uts, "it needs the container's own UTS namespace")
    } else {
        Err(NsError::SysctlNotAllowed {
            key: key.to_owned(),
            reason: "it is not namespaced and would change the host",
        })
    }
}

/// Write each `(key, value)` sysctl to its file below `proc_sys` (pass
/// "/proc/sys"; see [`sysctl_path`]), in order. The files must exist: a
/// sysctl the kernel does not have is an error naming its path. The
/// kernel resolves `net.*` files in the writer's network namespace, so
/// call it in the container's process, after it is in its namespaces;
/// check the keys first with [`validate_sysctl`].
pub fn write_sysctls(proc_sys: &Path, sysctls: &[(String, String)]) -> Result<(), NsError> {
    for (key, value) in sysctls {
        let path = sysctl_path(proc_sys, key)?;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut file| file.write_all(value.as_bytes()));
        written.map_err(|source| NsError::Sysctl {
            key: key.clone(),
            path,
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_paths_below_proc_sys() {
        assert_eq!(
            sysctl_path(Path::new("/proc/sys"), "net.ipv4.ip_forward").unwrap(),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path(Path::new("/x"), "kernel.shm_rmid_forced").unwrap(),
            Path::new("/x/kernel/shm_rmid_forced")
        );
    }

    #[test]
    fn keys_that_could_leave_proc_sys_are_refused() {
        for bad in [
            "",
            "net..ipv4",
            "..",
            "net.ipv4...",
            ".net.ipv4",
            "net.ipv4.",
            "net/ipv4/ip_forward",
            "net.ipv4.conf.eth0/100.forwarding",
            "net.ipv4\0.x",
        ] {
            let err = sysctl_path(Path::new("/proc/sys"), bad).unwrap_err();
            assert!(
                matches!(&err, NsError::InvalidSysctl { key, .. } if key == bad),
                "{bad:?}: {err}"
            );
            assert!(
                validate_sysctl(bad, &Namespace::JOIN_ORDER).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sysctls_are_allowed_only_in_their_own_namespace() {
        let cases = [
            ("kernel.msgmax", Namespace::Ipc),
            ("kernel.msgmnb", Namespace::Ipc),
            ("kernel.sem", Namespace::Ipc),
            ("kernel.sem_next_id", Namespace::Ipc),
            ("kernel.shmmax", Namespace::Ipc),
            ("kernel.shm_rmid_forced", Namespace::Ipc),
            ("fs.mqueue.msg_max", Namespace::Ipc),
            ("net.ipv4.ip_forward", Namespace::Net),
            ("net.core.somaxconn", Namespace::Net),
            ("kernel.domainname", Namespace::Uts),
            ("kernel.hostname", Namespace::Uts),
        ];
        for (key, namespace) in cases {
            validate_sysctl(key, &[namespace]).unwrap();
            let others: Vec<Namespace> = Namespace::JOIN_ORDER
                .into_iter()
                .filter(|n| *n != namespace)
                .collect();
            let err = validate_sysctl(key, &others).unwrap_err();
            assert!(
                matches!(&err, NsError::SysctlNotAllowed { key: k, .. } if k == key),
                "{key}: {err}"
            );
        }
        for host_wide in [
            "kernel.panic",
            "kernel.semaphore",
            "vm.overcommit_memory",
            "fs.file-max",
            "kernel.hostnamex",
            "network.x",
        ] {
            let err = validate_sysctl(host_wide, &Namespace::JOIN_ORDER).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "sysctl {host_wide} is not allowed: it is not namespaced and would change the host"
                )
            );
        }
    }

    #[test]
    fn values_are_written_to_existing_files() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("net/ipv4")).unwrap();
        std::fs::create_dir_all(tmp.path().join("kernel")).unwrap();
        std::fs::write(tmp.path().join("net/ipv4/ip_forward"), "").unwrap();
        std::fs::write(tmp.path().join("kernel/domainname"), "").unwrap();
        write_sysctls(
            tmp.path(),
            &[
                ("net.ipv4.ip_forward".into(), "1".into()),
                ("kernel.domainname".into(), "example.org".into()),
            ],
        )
        .unwrap();
        let read = |p: &str| std::fs::read_to_string(tmp.path().join(p)).unwrap();
        assert_eq!(read("net/ipv4/ip_forward"), "1");
        assert_eq!(read("kernel/domainname"), "example.org");

        let err = write_sysctls(tmp.path(), &[("net.ipv4.nope".into(), "1".into())]).unwrap_err();
        assert!(
            matches!(&err, NsError::Sysctl { path, .. } if *path == tmp.path().join("net/ipv4/nope")),
            "{err}"
        );
        assert!(!tmp.path().join("net/ipv4/nope").exists());
    }
}
