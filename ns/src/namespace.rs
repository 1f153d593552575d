use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::NsError;

/// A kind of Linux namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    User,
    Cgroup,
    Ipc,
    Uts,
    Net,
    Pid,
    Mount,
}

impl Namespace {
    /// The order in which namespaces must be joined: user first (it grants
    /// the rights for the others), mount last (it changes how later
    /// /proc paths resolve).
    pub const JOIN_ORDER: [Namespace; 7] = [
        Namespace::User,
        Namespace::Cgroup,
        Namespace::Ipc,
        Namespace::Uts,
        Namespace::Net,
        Namespace::Pid,
        Namespace::Mount,
    ];

    pub fn clone_flag(self) -> CloneFlags {
        match self {
            Namespace::User => CloneFlags::CLONE_NEWUSER,
            Namespace::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            Namespace::Ipc => CloneFlags::CLONE_NEWIPC,
            Namespace::Uts => CloneFlags::CLONE_NEWUTS,
            Namespace::Net => CloneFlags::CLONE_NEWNET,
            Namespace::Pid => CloneFlags::CLONE_NEWPID,
            Namespace::Mount => CloneFlags::CLONE_NEWNS,
        }
    }

    /// The entry name under /proc/PID/ns/.
    pub fn proc_name(self) -> &'static str {
        match self {
            Namespace::User => "user",
            Namespace::Cgroup => "cgroup",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
            Namespace::Net => "net",
            Namespace::Pid => "pid",
            Namespace::Mount => "mnt",
        }
    }

    /// Whether the kernel has this namespace type, judged by the entry in
    /// `<proc_root>/self/ns/` (pass "/proc").
    pub fn is_supported(self, proc_root: &Path) -> bool {
        proc_root.join("self/ns").join(self.proc_name()).exists()
    }

    pub(crate) fn describe(namespaces: &[Namespace]) -> String {
        let names: Vec<_> = namespaces.iter().map(|n| n.proc_name()).collect();
        names.join(",")
    }
}

/// Join the namespaces of process `pid` (through `<proc_root>/PID/ns/`), as
/// [`join_paths`] does.
pub fn join(proc_root: &Path, pid: i32, namespaces: &[Namespace]) -> Result<(), NsError> {
    let dir = proc_root.join(pid.to_string()).join("ns");
    let paths: Vec<(Namespace, PathBuf)> = namespaces
        .iter()
        .map(|&ns| (ns, dir.join(ns.proc_name())))
        .collect();
    join_paths(&paths)
}

/// Join the namespace at each path (a `/proc/PID/ns/*` file or a bind
/// mount of one, as in an OCI spec's `namespaces[].path`), in
/// [`Namespace::JOIN_ORDER`]: user first, mount last. Every file is opened
/// before the first setns(2), since joining the mount namespace changes
/// what later paths resolve to; each setns checks that the file is a
/// namespace of the kind it is listed as (`EINVAL` otherwise).
///
/// Joining a PID namespace affects only children created afterwards. The
/// calling process must be single-threaded for the user and mount
/// namespaces, and a process cannot join the user namespace it is already
/// in (`EINVAL`).
pub fn join_paths(namespaces: &[(Namespace, PathBuf)]) -> Result<(), NsError> {
    let mut ordered: Vec<&(Namespace, PathBuf)> = namespaces.iter().collect();
    ordered.sort_by_key(|(ns, _)| Namespace::JOIN_ORDER.iter().position(|n| n == ns));
    let mut opened: Vec<(Namespace, &Path, File)> = Vec::new();
    for (ns, path) in ordered {
        let file = File::open(path).map_err(|source| NsError::Open {
            path: path.clone(),
            source,
        })?;
        opened.push((*ns, path, file));
    }
    for (ns, path, file) in &opened {
        setns(file.as_fd(), ns.clone_flag()).map_err(|source| NsError::Join {
            kind: ns.proc_name(),
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_namespace_has_a_distinct_flag_and_name() {
        let flags: Vec<_> = Namespace::JOIN_ORDER
            .iter()
            .map(|n| n.clone_flag().bits())
            .collect();
        let mut dedup = flags.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), flags.len());
        assert_eq!(Namespace::JOIN_ORDER.last(), Some(&Namespace::Mount));
    }

    #[test]
    fn support_is_read_from_proc() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("self/ns")).unwrap();
        std::fs::write(dir.join("self/ns/uts"), "").unwrap();
        assert!(Namespace::Uts.is_supported(dir));
        assert!(!Namespace::Cgroup.is_supported(dir));
    }

    #[test]
    fn join_names_the_missing_path() {
        let err = join(Path::new("/nonexistent-proc"), 1, &[Namespace::Net]).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-proc/1/ns/net"),
            "{err}"
        );
    }

    #[test]
    fn join_paths_names_the_missing_path_before_joining_anything() {
        // The user namespace is listed last but opened (and would be
        // joined) first; the missing uts file fails before any setns.
        let err = join_paths(&[
            (Namespace::Uts, PathBuf::from("/nonexistent-ns/uts")),
            (Namespace::User, PathBuf::from("/proc/self/ns/user")),
        ])
        .unwrap_err();
        assert!(
            matches!(&err, NsError::Open { path, .. } if path == Path::new("/nonexistent-ns/uts")),
            "{err}"
        );
    }
}
