//! Checkpoint and restore of a running container with CRIU (runc's
//! `checkpoint` and `restore`, see [`super::criu`] for how criu is driven).
//!
//! What criu does not dump, berth provides again on restore, as runc does:
//! - the root filesystem: criu's root is the same overlay (or the bundle's
//!   rootfs) mounted on `<state dir>/criu-root` for the restore only;
//! - bind mounts from the host (volumes, /etc/hosts, cgroup views): dumped
//!   as external mounts keyed by their destination, given their (new)
//!   sources on restore;
//! - the network namespace: external (its addresses and links belong to
//!   the engine's network), restored into the namespace the caller
//!   prepared, or a fresh one with loopback up;
//! - the cgroup: created with the spec's limits before criu runs, and criu
//!   is placed in it, so every restored process starts there;
//! - stdio pipes: the new ones take the place of the old (`inherit_fd`
//!   keyed by the old pipes' names, saved in `descriptors.json`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_cgroup::{Cgroup, Controller, Version};
use berth_ns::Namespace;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::convert::{self, Namespaces};
use super::criu::{self, Message, RequestType, CG_MODE_SOFT};
use super::lifecycle::{cgroup_views, write_pid_file, Stdio};
use super::state::{self, ContainerFile, Status};
use super::{Result, Runtime, RuntimeError};

/// Where the old stdio's names are kept in the images directory (as runc).
const DESCRIPTORS_FILE: &str = "descriptors.json";
/// criu's key for the network namespace it leaves to the caller.
const NETNS_KEY: &str = "extRootNetNS";
/// criu's log files, in the work directory.
pub const DUMP_LOG: &str = "dump.log";
pub const RESTORE_LOG: &str = "restore.log";

/// How [`Runtime::checkpoint`] runs.
#[derive(Debug, Clone, Default)]
pub struct CheckpointOptions {
    /// Where criu writes the images (created, mode 0700).
    pub images_dir: PathBuf,
    /// Where criu writes its log (default: the images directory).
    pub work_dir: Option<PathBuf>,
    /// Keep the container running after the checkpoint.
    pub leave_running: bool,
    /// Dump established TCP connections (they must then be restored too).
    pub tcp_established: bool,
    /// Dump file locks.
    pub file_locks: bool,
}

/// How [`Runtime::restore`] runs.
#[derive(Debug, Default)]
pub struct RestoreOptions {
    /// The images of a checkpoint.
    pub images_dir: PathBuf,
    /// Where criu writes its log (default: the images directory).
    pub work_dir: Option<PathBuf>,
    /// The new stdin, stdout and stderr; `None` gives the caller's own.
    pub stdio: Stdio,
    /// The network namespace to restore into; without one, the spec's
    /// (by path), else a fresh namespace with only loopback, up.
    pub network_namespace: Option<OwnedFd>,
    pub tcp_established: bool,
    pub file_locks: bool,
    /// Write the init's PID here once the container runs.
    pub pid_file: Option<PathBuf>,
}

/// A restored, running container.
#[derive(Debug)]
pub struct Restored {
    /// Its init: a child of the calling process.
    pub pid: Pid,
    /// The master side of a new terminal, when the container had one.
    pub terminal: Option<OwnedFd>,
    pub cgroup: Option<Cgroup>,
}

/// A network namespace of its own with loopback up (what a container's
/// init makes for itself), for restoring a container into.
pub fn fresh_network_namespace() -> Result<OwnedFd> {
    // A thread can have its own network namespace; it ends with it, the
    // descriptor keeps the namespace alive.
    let make = || -> Result<OwnedFd> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| RuntimeError::system("create a network namespace", e))?;
        berth_net::set_link_up("lo")
            .map_err(|e| RuntimeError::invalid(format!("bring up loopback: {e}")))?;
        let path = Path::new("/proc/thread-self/ns/net");
        std::fs::File::open(path)
            .map(OwnedFd::from)
            .map_err(|e| RuntimeError::io(path, e))
    };
    std::thread::scope(|scope| scope.spawn(make).join()).unwrap_or_else(|_| {
        Err(RuntimeError::invalid(
            "the thread making a network namespace panicked",
        ))
    })
}

/// Mounts of the spec that come from outside the container (binds), as
/// (destination, source): criu cannot dump them, it records where they
/// were; cgroup views (hybrid and v1 hosts) count as binds of the
/// container's cgroup directories.
fn external_mounts(spec: &Spec, bundle: &Path, cgroup: Option<&Cgroup>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let views = cgroup.map(cgroup_views).unwrap_or_default();
    for mount in spec.mounts().iter().flatten() {
        let destination = mount.destination().to_string_lossy().into_owned();
        let options = mount.options().clone().unwrap_or_default();
        let is_bind = mount.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        if is_bind {
            let source = mount
                .source()
                .as_ref()
                .map(|s| bundle.join(s))
                .unwrap_or_default();
            out.push((destination, source.to_string_lossy().into_owned()));
        } else if mount.typ().as_deref() == Some("cgroup") {
            for (name, dir) in &views {
                let view = Path::new(&destination).join(name);
                out.push((
                    view.to_string_lossy().into_owned(),
                    dir.to_string_lossy().into_owned(),
                ));
            }
        }
    }
    out
}

fn ext_mount(key: &str, value: &str) -> Message {
    let mut map = Message::default();
    map.string(1, key).string(2, value);
    map
}

/// `/proc/PID/cgroup` as (controllers, path) pairs ("" for cgroup v2).
fn cgroups_of(proc_root: &Path, pid: i32) -> Result<Vec<(String, String)>> {
    let path = proc_root.join(format!("{pid}/cgroup"));
    let text = std::fs::read_to_string(&path).map_err(|e| RuntimeError::io(&path, e))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            Some((controllers.to_owned(), path.to_owned()))
        })
        .collect())
}

/// The cgroup directory criu freezes the container with.
fn freezer_dir(cgroup: &Cgroup) -> Option<&Path> {
    cgroup.path_of(Controller::Freezer).or_else(|| {
        cgroup
            .dirs()
            .iter()
            .find(|d| d.version() == Version::V2)
            .map(|d| d.path())
    })
}

fn create_private_dir(path: &Path) -> Result<std::fs::File> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| RuntimeError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| RuntimeError::io(path, e))?;
    std::fs::File::open(path).map_err(|e| RuntimeError::io(path, e))
}

fn refuse_unsupported(namespaces: &Namespaces) -> Result<()> {
    if !namespaces.has(Namespace::Mount) {
        return Err(RuntimeError::invalid(
            "checkpoint/restore needs a container with its own mount namespace",
        ));
    }
    if namespaces.has(Namespace::User) {
        return Err(RuntimeError::invalid(
            "checkpoint/restore of a container in a user namespace is not supported",
        ));
    }
    Ok(())
}

impl Runtime {
    /// Checkpoint container `id` (running or paused) into
    /// `options.images_dir`. `images_complete` runs once criu has written
    /// every image and before it ends the container (unless
    /// `leave_running`); if it fails, or the caller dies before it returns,
    /// criu lets the container run on.
    pub fn checkpoint(
        &self,
        id: &str,
        options: &CheckpointOptions,
        images_complete: impl FnOnce() -> std::result::Result<(), String>,
    ) -> Result<()> {
        let file = self.load(id)?;
        match self.status_of(&file) {
            Status::Running | Status::Paused => {}
            status => {
                return Err(super::lifecycle::wrong_status(
                    id,
                    status,
                    "only a running or paused container can be checkpointed",
                ))
            }
        }
        let namespaces = Namespaces::from_spec(&file.spec)?;
        refuse_unsupported(&namespaces)?;
        let images = create_private_dir(&options.images_dir)?;
        let work_path = options.work_dir.as_ref().unwrap_or(&options.images_dir);
        let work = create_private_dir(work_path)?;

        // The names of the init's stdio (e.g. "pipe:[1234]"): a restore
        // puts new pipes in their place.
        let descriptors: Vec<String> = (0..3)
            .map(|fd| {
                std::fs::read_link(self.proc_root.join(format!("{}/fd/{fd}", file.pid)))
                    .map(|target| target.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        let descriptors_path = options.images_dir.join(DESCRIPTORS_FILE);
        let json = serde_json::to_vec(&descriptors).unwrap_or_default();
        std::fs::write(&descriptors_path, json)
            .map_err(|e| RuntimeError::io(&descriptors_path, e))?;

        let mut opts = Message::default();
        // criu opens the images and work directories through the caller's
        // descriptors (/proc/<caller>/fd/N).
        opts.int(1, images.as_raw_fd())
            .int(2, file.pid)
            .flag(3, options.leave_running)
            .flag(5, options.tcp_established)
            .flag(8, options.file_locks)
            .int(9, 4)
            .string(10, DUMP_LOG)
            .flag(12, true)
            .int(17, work.as_raw_fd())
            .uint(34, CG_MODE_SOFT)
            .flag(50, true);
        for (destination, _) in external_mounts(&file.spec, &file.bundle, file.cgroup.as_ref()) {
            opts.message(23, &ext_mount(&destination, &destination));
        }
        if namespaces.has(Namespace::Net) {
            let path = self.proc_root.join(format!("{}/ns/net", file.pid));
            let inode = std::fs::metadata(&path)
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .map_err(|e| RuntimeError::io(&path, e))?;
            opts.string(37, &format!("net[{inode}]:{NETNS_KEY}"));
        }
        if let Some(dir) = file.cgroup.as_ref().and_then(freezer_dir) {
            opts.string(44, &dir.to_string_lossy());
        }
        let mut images_complete = Some(images_complete);
        let response = criu::session(
            &[],
            work_path,
            |_| Ok(criu::request(RequestType::Dump, Some(&opts))),
            |notice, _| match notice.notify_script.as_deref() {
                Some("post-dump") => images_complete.take().map_or(Ok(()), |done| done()),
                _ => Ok(()),
            },
        )?;
        if !response.success {
            return Err(RuntimeError::Criu {
                reason: criu::reason_from_log(work_path, DUMP_LOG, &response),
            });
        }
        Ok(())
    }

    /// Restore container `id` from a checkpoint of a container created
    /// from `spec` (paths relative to `bundle`). On failure nothing of it
    /// is left.
    pub fn restore(
        &self,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        options: RestoreOptions,
    ) -> Result<Restored> {
        state::validate_id(id)?;
        convert::refuse_unsupported(spec)?;
        let namespaces = Namespaces::from_spec(spec)?;
        refuse_unsupported(&namespaces)?;
        let descriptors_path = options.images_dir.join(DESCRIPTORS_FILE);
        let descriptors: Vec<String> = std::fs::read(&descriptors_path)
            .map_err(|e| RuntimeError::io(&descriptors_path, e))
            .and_then(|bytes| {
                serde_json::from_slice(&bytes).map_err(|source| RuntimeError::CorruptState {
                    path: descriptors_path.clone(),
                    source,
                })
            })?;
        let (resources, hierarchies) = super::lifecycle::checked_resources(spec)?;
        let rootfs = state::rootfs_path(bundle, spec);
        let overlay = super::rootfs::overlay_request(spec)
            .map_err(|e| RuntimeError::invalid(format!("the rootfs overlay annotation: {e}")))?;
        let images = std::fs::File::open(&options.images_dir)
            .map_err(|e| RuntimeError::io(&options.images_dir, e))?;
        let work_path = options
            .work_dir
            .clone()
            .unwrap_or_else(|| options.images_dir.clone());
        let work = create_private_dir(&work_path)?;
        let network = match (namespaces.has(Namespace::Net), options.network_namespace) {
            (false, _) => None,
            (true, Some(fd)) => Some(fd),
            (true, None) => match namespaces
                .joined()
                .into_iter()
                .find(|(kind, _)| *kind == Namespace::Net)
            {
                Some((_, path)) => Some(
                    std::fs::File::open(&path)
                        .map(OwnedFd::from)
                        .map_err(|e| RuntimeError::io(&path, e))?,
                ),
                None => Some(fresh_network_namespace()?),
            },
        };

        let dir = self.new_container_dir(id)?;
        let mut unwind = super::lifecycle::Unwind {
            dir: &dir,
            pid: None,
            cgroup: None,
            host_mounts_below: None,
            armed: true,
        };
        let cgroup = Cgroup::create_at(&hierarchies, &convert::cgroup_path(spec, id))?;
        unwind.cgroup = Some(cgroup.clone());
        cgroup.apply(&resources)?;

        // criu's root must be a mount point whose parent is not
        // overmounted (runc's rule): the container's root, mounted again
        // below the state directory, private, for the restore only.
        // Beside the state directory, never in it: removing a half-made
        // container's directory must not walk into a mounted root.
        let criu_root = self.root.join(format!("criu-root@{id}"));
        std::fs::create_dir(&criu_root).map_err(|e| RuntimeError::io(&criu_root, e))?;
        let _root_mount =
            RootMount::mount(&criu_root, overlay.map(|o| o.onto(&criu_root)), &rootfs)?;

        let stdio_fds: [Option<BorrowedFd<'_>>; 3] = [
            options.stdio.stdin.as_ref().map(|f| f.as_fd()),
            options.stdio.stdout.as_ref().map(|f| f.as_fd()),
            options.stdio.stderr.as_ref().map(|f| f.as_fd()),
        ];
        // SAFETY: 0, 1 and 2 stay open for the whole call (the caller's
        // stdio); they are only lent to criu.
        let own = |fd| unsafe { BorrowedFd::borrow_raw(fd) };
        // Descriptors criu itself gets, as 4, 5, ...
        let mut inherit: Vec<BorrowedFd<'_>> = Vec::new();
        let mut opts = Message::default();
        opts.int(1, images.as_raw_fd())
            .flag(5, options.tcp_established)
            .flag(6, true)
            .flag(8, options.file_locks)
            .int(9, 4)
            .string(10, RESTORE_LOG)
            .flag(12, true)
            .string(13, &criu_root.to_string_lossy())
            .int(17, work.as_raw_fd())
            .flag(26, true)
            .uint(34, CG_MODE_SOFT)
            .flag(50, true);
        if let Some(network) = &network {
            let mut entry = Message::default();
            entry
                .string(1, NETNS_KEY)
                .int(2, 3 + inherit.len() as i32 + 1);
            inherit.push(network.as_fd());
            opts.message(27, &entry);
        }
        for (index, name) in descriptors.iter().enumerate().take(3) {
            if !name.starts_with("pipe:") {
                continue;
            }
            let fd = stdio_fds[index].unwrap_or_else(|| own(index as i32));
            let mut entry = Message::default();
            entry.string(1, name).int(2, 3 + inherit.len() as i32 + 1);
            inherit.push(fd);
            opts.message(27, &entry);
        }
        for (destination, source) in external_mounts(spec, bundle, Some(&cgroup)) {
            opts.message(23, &ext_mount(&destination, &source));
        }
        let mut terminal = None;
        let response = criu::session(
            &inherit,
            &work_path,
            |criu_pid| {
                cgroup.add_task(criu_pid)?;
                // Below where criu now is: the container's new cgroup.
                for (controllers, path) in cgroups_of(&self.proc_root, criu_pid)? {
                    let mut root = Message::default();
                    if !controllers.is_empty() {
                        root.string(1, &controllers);
                    }
                    root.string(2, &path);
                    opts.message(25, &root);
                }
                Ok(criu::request(RequestType::Restore, Some(&opts)))
            },
            |notice, fd| {
                if notice.notify_script.as_deref() == Some("orphan-pts-master") {
                    terminal = fd;
                }
                Ok(())
            },
        )?;
        if !response.success {
            return Err(RuntimeError::Criu {
                reason: criu::reason_from_log(&work_path, RESTORE_LOG, &response),
            });
        }
        let pid = response
            .restored_pid
            .filter(|pid| *pid > 0)
            .map(Pid::from_raw)
            .ok_or_else(|| RuntimeError::Criu {
                reason: "criu restored no process".into(),
            })?;
        unwind.pid = Some(pid);
        let file = ContainerFile {
            id: id.to_owned(),
            bundle: bundle.to_path_buf(),
            pid: pid.as_raw(),
            pid_start_time: berth_state::process_start_time(&self.proc_root, pid.as_raw()),
            created: state::now_rfc3339(),
            cgroup: Some(cgroup.clone()),
            spec: spec.clone(),
        };
        self.save(&file)?;
        if let Some(path) = &options.pid_file {
            write_pid_file(path, pid.as_raw())?;
        }
        drop(options.stdio);
        unwind.armed = false;
        Ok(Restored {
            pid,
            terminal,
            cgroup: Some(cgroup),
        })
    }
}

/// The container's root on `target` in the runtime's mount namespace,
/// private (nothing propagates to or from the host's mounts), unmounted
/// and removed when dropped: criu's restored namespace has its own copy.
struct RootMount<'a> {
    target: &'a Path,
}

impl<'a> RootMount<'a> {
    fn mount(
        target: &'a Path,
        overlay: Option<berth_fs::OverlayRootfs>,
        rootfs: &Path,
    ) -> Result<Self> {
        use nix::mount::{mount, MsFlags};
        match overlay {
            Some(overlay) => overlay.mount()?,
            None => mount(
                Some(rootfs),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| RuntimeError::system(format!("bind {}", rootfs.display()), e))?,
        }
        let mounted = RootMount { target };
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| RuntimeError::system(format!("make {} private", target.display()), e))?;
        Ok(mounted)
    }
}

impl Drop for RootMount<'_> {
    fn drop(&mut self) {
        if nix::mount::umount2(self.target, nix::mount::MntFlags::MNT_DETACH).is_ok() {
            let _ = std::fs::remove_dir(self.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_are_external_mounts_with_sources_from_the_bundle() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
                "mounts":[
                  {"destination":"/proc","type":"proc","source":"proc"},
                  {"destination":"/etc/hosts","type":"bind","source":"hosts","options":["rbind","ro"]},
                  {"destination":"/data","source":"/var/vol","options":["bind"]},
                  {"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup"}
                ]}"#,
        )
        .unwrap();
        let mounts = external_mounts(&spec, Path::new("/b"), None);
        assert_eq!(
            mounts,
            vec![
                ("/etc/hosts".to_owned(), "/b/hosts".to_owned()),
                ("/data".to_owned(), "/var/vol".to_owned()),
            ]
        );
    }
}
