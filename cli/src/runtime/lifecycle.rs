//! create, start, kill, delete, pause, resume and ps.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_cgroup::{Cgroup, Hierarchies};
use berth_ns::{Birthplace, Channel, Namespace};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::convert::{self, Namespaces};
use super::hooks::{hooks_at, run_hooks, HookPoint};
use super::init::{self, FromInit, InitPlan, ProcessPlan, StdioFds, ToInit};
use super::state::{self, ContainerFile, Status, EXEC_FIFO};
use super::{Result, Runtime, RuntimeError};

/// Descriptors for the process's stdin, stdout and stderr; `None` keeps
/// the caller's own (as a runc-style `create` does: conmon and the shims
/// hand the container its stdio that way).
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

impl Stdio {
    pub(crate) fn raw(&self) -> StdioFds {
        StdioFds {
            stdin: init::raw(&self.stdin),
            stdout: init::raw(&self.stdout),
            stderr: init::raw(&self.stderr),
        }
    }
}

/// How `create` runs, beyond what the spec says.
#[derive(Debug, Default)]
pub struct CreateOptions {
    pub stdio: Stdio,
    /// Write the init's PID here once the container is created.
    pub pid_file: Option<PathBuf>,
    /// Descriptors 3 .. 3+N of the caller stay open into the container.
    pub preserve_fds: u32,
    /// Enter the root with MS_MOVE and chroot instead of pivot_root (for
    /// roots on a ramfs, where pivot_root is impossible).
    pub no_pivot: bool,
    /// Keep the caller's session keyring instead of a new one.
    pub no_new_keyring: bool,
    /// The container's init dies with the calling process: for an engine
    /// that supervises it in-process. A runc-style `create` returns and
    /// leaves the container to its caller (a subreaper).
    pub die_with_parent: bool,
}

/// A created container whose init waits for `start`, as returned to the
/// process that created it.
#[derive(Debug)]
pub struct Created {
    runtime: Runtime,
    id: String,
    pid: Pid,
    terminal: Option<OwnedFd>,
    channel: Channel<ToInit, FromInit>,
    file: ContainerFile,
}

impl Created {
    /// The init's PID (a child of the calling process).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The master side of the container's terminal, when the spec asked
    /// for one (`process.terminal`).
    pub fn take_terminal(&mut self) -> Option<OwnedFd> {
        self.terminal.take()
    }

    /// The cgroup the container was placed in.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.file.cgroup.as_ref()
    }

    /// Start the container's process and wait until it has exec'd its
    /// command (or report why it could not, with docker's exit code).
    pub fn start(self) -> Result<()> {
        self.runtime.open_exec_fifo(&self.file)?;
        await_exec(&self.channel, self.pid)?;
        self.runtime.after_start(&self.file);
        Ok(())
    }
}

/// Wait for the process behind `channel` to exec (the channel closes on
/// exec) or fail (its reason arrives; the process is then reaped).
/// Returns the terminal it sent on the way, if any.
pub(crate) fn await_exec(channel: &Channel<ToInit, FromInit>, pid: Pid) -> Result<Option<OwnedFd>> {
    let mut terminal = None;
    loop {
        match channel.recv_with_fd()? {
            None => return Ok(terminal),
            Some((FromInit::Terminal, fd)) => terminal = fd,
            Some((FromInit::Failed { code, message }, _)) => {
                let _ = waitpid(pid, None);
                return Err(RuntimeError::Process { code, message });
            }
            Some((other, _)) => {
                return Err(RuntimeError::Process {
                    code: super::RUNTIME_FAILED,
                    message: format!("unexpected message from the container: {other:?}"),
                })
            }
        }
    }
}

/// Kills and reaps a half-made container's process, and removes its
/// cgroup and directory, unless disarmed.
pub(super) struct Unwind<'a> {
    pub dir: &'a Path,
    pub pid: Option<Pid>,
    pub cgroup: Option<Cgroup>,
    /// The rootfs of a container without a mount namespace, whose mounts
    /// are in the runtime's.
    pub host_mounts_below: Option<&'a Path>,
    pub armed: bool,
}

impl Drop for Unwind<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        if let Some(cgroup) = &self.cgroup {
            let _ = cgroup.remove();
        }
        if let Some(rootfs) = self.host_mounts_below {
            let _ = berth_fs::unmount_below(rootfs);
        }
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

impl Runtime {
    /// Compiled seccomp programs: a name no container id can have ('@').
    pub(crate) fn seccomp_cache(&self) -> PathBuf {
        self.root.join("seccomp@cache")
    }

    /// The directories of the engine's transient (`--rm`) containers (see
    /// [`berth_state::ContainerStore::create_transient`]): this root's
    /// directory is the tmpfs they belong on.
    pub fn transient_containers(&self) -> PathBuf {
        self.root.join("containers@transient")
    }

    /// The empty bottom layer of the read-only overlay a process that
    /// enters a container re-executes from (see
    /// [`berth_ns::sealed::reexec_from_sealed_copy`]).
    pub fn sealed_exec_layer(&self) -> PathBuf {
        self.root.join("empty@layer")
    }

    /// The directory of a new container `id`, made (mode 0700) or
    /// [`RuntimeError::Exists`].
    pub(super) fn new_container_dir(&self, id: &str) -> Result<PathBuf> {
        self.ensure_root()?;
        let dir = self.container_dir(id);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(RuntimeError::Exists { id: id.to_owned() })
            }
            Err(e) => Err(RuntimeError::io(&dir, e)),
        }
    }

    fn ensure_root(&self) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|e| RuntimeError::io(&self.root, e))
    }

    /// Mount the engine's overlay `union` in the mount namespace of
    /// the init `pid` (waiting for Start, its ID maps written), with the
    /// image layers ID-mapped through its user namespace. The init cannot:
    /// ID-mapping a mount of the host's filesystem takes the host's root,
    /// and an overlay mounted from inside the user namespace could not use
    /// the layers' `trusted.` whiteout attributes. A thread of the runtime
    /// enters that namespace for the mounts and ends with them.
    fn mount_idmapped_overlay(
        &self,
        pid: nix::unistd::Pid,
        union: &berth_fs::OverlayRootfs,
    ) -> Result<()> {
        let ns = |name: &str| {
            let path = self.proc_root.join(format!("{pid}/ns/{name}"));
            std::fs::File::open(&path).map_err(|e| RuntimeError::io(&path, e))
        };
        let (userns, mntns) = (ns("user")?, ns("mnt")?);
        let mount = || -> Result<()> {
            use nix::sched::{setns, unshare, CloneFlags};
            // A thread shares its filesystem context (root, cwd) with the
            // others until it unshares it; setns needs it unshared.
            unshare(CloneFlags::CLONE_FS)
                .map_err(|e| RuntimeError::system("unshare the thread's filesystem context", e))?;
            setns(mntns.as_fd(), CloneFlags::CLONE_NEWNS)
                .map_err(|e| RuntimeError::system("enter the container's mount namespace", e))?;
            union.mount_idmapped(userns.as_fd())?;
            Ok(())
        };
        std::thread::scope(|scope| scope.spawn(mount).join()).unwrap_or_else(|_| {
            Err(RuntimeError::invalid(
                "the thread mounting the root filesystem panicked",
            ))
        })
    }

    /// Create container `id` from `spec` (paths in it relative to
    /// `bundle`): its init is set up and waits for [`Created::start`] or
    /// [`Runtime::start`]. On failure nothing of it is left.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        options: CreateOptions,
    ) -> Result<Created> {
        state::validate_id(id)?;
        convert::refuse_unsupported(spec)?;
        let namespaces = Namespaces::from_spec(spec)?;
        let overlay = super::rootfs::overlay_request(spec)
            .map_err(|e| RuntimeError::invalid(format!("the rootfs overlay annotation: {e}")))?;
        // Without a mount namespace the container's mounts land in the
        // runtime's own (as with runc, which chroots): `delete` takes them
        // away again. What would change the host's mounts themselves is
        // refused.
        if !namespaces.has(Namespace::Mount) {
            let linux = spec.linux().as_ref();
            if linux
                .and_then(|l| l.rootfs_propagation().as_deref())
                .is_some_and(|p| !p.is_empty())
            {
                return Err(RuntimeError::invalid(
                    "rootfsPropagation needs a mount namespace (it would change the host's mounts)",
                ));
            }
            if overlay.is_some() {
                return Err(RuntimeError::invalid(
                    "the engine's overlay root needs a mount namespace",
                ));
            }
        }
        if spec.process().is_none() {
            return Err(RuntimeError::invalid("the spec has no process"));
        }
        let linux = spec.linux().as_ref();
        let (resources, hierarchies) = checked_resources(spec)?;
        let cgroup_path = convert::cgroup_path(spec, id);
        let rootfs = state::rootfs_path(bundle, spec);
        let mounts_root = rootfs.clone();
        if !rootfs.is_dir() {
            return Err(RuntimeError::invalid(format!(
                "the root {} is not a directory",
                rootfs.display()
            )));
        }

        let dir = self.new_container_dir(id)?;
        let mut unwind = Unwind {
            dir: &dir,
            pid: None,
            cgroup: None,
            host_mounts_below: (!namespaces.has(Namespace::Mount)).then_some(mounts_root.as_path()),
            armed: true,
        };
        let fifo = dir.join(EXEC_FIFO);
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622))
            .map_err(|e| RuntimeError::system(format!("mkfifo {}", fifo.display()), e))?;
        // Whatever user the process becomes must be able to open it.
        std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o622))
            .map_err(|e| RuntimeError::io(&fifo, e))?;

        let prestart: Vec<_> = hooks_at(spec, HookPoint::Prestart)
            .into_iter()
            .chain(hooks_at(spec, HookPoint::CreateRuntime))
            .collect();
        let create_container_hooks = hooks_at(spec, HookPoint::CreateContainer);
        let start_container_hooks = hooks_at(spec, HookPoint::StartContainer);
        let overlay = overlay.map(|request| request.onto(&rootfs));
        let overlay_mounted_by_runtime = overlay.is_some() && namespaces.creates(Namespace::User);
        let plan = InitPlan {
            overlay,
            overlay_mounted_by_runtime,
            spec,
            rootfs,
            namespaces: namespaces.clone(),
            fifo,
            die_with_parent: options.die_with_parent,
            no_pivot: options.no_pivot,
            session_keyring: (!options.no_new_keyring).then(|| format!("_ses.{id}")),
            process: ProcessPlan {
                capabilities: convert::capability_sets(
                    spec.process()
                        .as_ref()
                        .and_then(|p| p.capabilities().as_ref()),
                )?,
                stdio: options.stdio.raw(),
                preserve_fds: options.preserve_fds,
                seccomp: convert::compile_seccomp(spec, &self.seccomp_cache())?,
            },
            hooks_handshake: !prestart.is_empty()
                || !create_container_hooks.is_empty()
                || !start_container_hooks.is_empty(),
            create_container_hooks,
            start_container_hooks,
        };

        let pid_namespace = namespaces
            .joined()
            .into_iter()
            .find(|(kind, _)| *kind == Namespace::Pid)
            .map(|(_, path)| path);
        // The cgroup is made and limited before the init exists, so that
        // the init is born in it on the cgroup2 hierarchy (see
        // `spawn_with_channel_in`): moving it there afterwards would wait
        // for an RCU grace period. runc and crun make it before the
        // container's process too; the spec only orders the hooks.
        let cgroup = Cgroup::create_at(&hierarchies, &cgroup_path)?;
        unwind.cgroup = Some(cgroup.clone());
        cgroup.apply(&resources)?;
        let unified_dir = cgroup.open_unified_dir()?;
        let spawned = with_pid_namespace(pid_namespace.as_deref(), || {
            berth_ns::spawn_with_channel_in(
                &namespaces.new_ones(),
                unified_dir.as_ref().map(|fd| fd.as_fd()),
                |channel| init::run_init(&plan, channel),
            )
        })?;
        drop(unified_dir);
        let (pid, channel, birthplace) = spawned?;
        unwind.pid = Some(pid);
        drop(options.stdio);

        if namespaces.creates(Namespace::User) {
            let linux = linux.ok_or_else(|| RuntimeError::invalid("no linux section"))?;
            let maps = |list: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
                list.iter()
                    .flatten()
                    .map(|m| berth_ns::process::IdMap {
                        container_id: m.container_id(),
                        host_id: m.host_id(),
                        size: m.size(),
                    })
                    .collect::<Vec<_>>()
            };
            berth_ns::process::write_id_maps(
                &self.proc_root,
                pid.as_raw(),
                &maps(linux.uid_mappings()),
                &maps(linux.gid_mappings()),
            )?;
        }
        if let (Some(overlay), true) = (&plan.overlay, plan.overlay_mounted_by_runtime) {
            self.mount_idmapped_overlay(pid, overlay)?;
        }
        let attach_files = attach_to_cgroup(
            &cgroup,
            pid,
            birthplace,
            namespaces.creates(Namespace::User),
        )?;

        let mut file = ContainerFile {
            id: id.to_owned(),
            bundle: bundle.to_path_buf(),
            pid: pid.as_raw(),
            pid_start_time: berth_state::process_start_time(&self.proc_root, pid.as_raw()),
            created: state::now_rfc3339(),
            cgroup: Some(cgroup.clone()),
            spec: spec.clone(),
        };
        channel.send(&ToInit::Start {
            cgroup: attach_files,
            views: cgroup_views(&cgroup),
        })?;
        let mut terminal = None;
        loop {
            match channel.recv_with_fd()? {
                Some((FromInit::Terminal, fd)) => terminal = fd,
                Some((FromInit::MountsReady, _)) => {
                    let state = self.oci_state(&file, Status::Creating);
                    run_hooks(&prestart, HookPoint::CreateRuntime, &state)?;
                    let mut state = state;
                    state.set_status(oci_spec::runtime::ContainerState::Created);
                    channel.send(&ToInit::HooksDone {
                        state: serde_json::to_string(&state).unwrap_or_default(),
                    })?;
                }
                Some((FromInit::Created, _)) => break,
                Some((FromInit::Failed { code, message }, _)) => {
                    return Err(RuntimeError::Process { code, message })
                }
                None => {
                    return Err(RuntimeError::Process {
                        code: super::RUNTIME_FAILED,
                        message: "the container's init died while it was set up".into(),
                    })
                }
            }
        }
        file.created = state::now_rfc3339();
        self.save(&file)?;
        if let Some(path) = &options.pid_file {
            write_pid_file(path, pid.as_raw())?;
        }
        unwind.armed = false;
        Ok(Created {
            runtime: self.clone(),
            id: id.to_owned(),
            pid,
            terminal,
            channel,
            file,
        })
    }

    /// Start a created container (the runc-style `start`, from another
    /// process than the one that created it).
    pub fn start(&self, id: &str) -> Result<()> {
        let file = self.load(id)?;
        match self.status_of(&file) {
            Status::Created => {}
            status => {
                return Err(wrong_status(
                    id,
                    status,
                    "only a created container can be started",
                ))
            }
        }
        self.open_exec_fifo(&file)?;
        self.after_start(&file);
        Ok(())
    }

    /// Let the init go: open the fifo it blocks on, take its byte, remove
    /// the fifo (the container is "running" from then on).
    fn open_exec_fifo(&self, file: &ContainerFile) -> Result<()> {
        let path = self.container_dir(&file.id).join(EXEC_FIFO);
        let fifo: OwnedFd = nix::fcntl::open(
            &path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RuntimeError::system(format!("open {}", path.display()), e))?;
        loop {
            let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(0) | Err(nix::Error::EINTR) => {
                    if !berth_state::is_same_process(&self.proc_root, file.pid, file.pid_start_time)
                    {
                        return Err(RuntimeError::Process {
                            code: super::RUNTIME_FAILED,
                            message: format!("container {} ended before it was started", file.id),
                        });
                    }
                }
                Ok(_) => break,
                Err(e) => return Err(RuntimeError::system("poll the exec fifo", e)),
            }
        }
        let mut byte = [0u8; 1];
        let read = std::fs::File::from(fifo)
            .read(&mut byte)
            .map_err(|e| RuntimeError::io(&path, e))?;
        let _ = std::fs::remove_file(&path);
        if read == 0 {
            return Err(RuntimeError::Process {
                code: super::RUNTIME_FAILED,
                message: format!("container {} ended before it was started", file.id),
            });
        }
        Ok(())
    }

    /// Poststart hooks: a failure is a warning (the container runs).
    fn after_start(&self, file: &ContainerFile) {
        let hooks = hooks_at(&file.spec, HookPoint::Poststart);
        if hooks.is_empty() {
            return;
        }
        let state = self.oci_state(file, Status::Running);
        if let Err(e) = run_hooks(&hooks, HookPoint::Poststart, &state) {
            eprintln!("berth-runtime: warning: {e}");
        }
    }

    /// Send `signal` to the container's init, or with `all` to every
    /// process in its cgroup.
    pub fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<()> {
        let file = self.load(id)?;
        let status = self.status_of(&file);
        if status == Status::Stopped && !all {
            return Err(wrong_status(id, status, "container not running"));
        }
        let cgroup = file.cgroup.as_ref();
        if all {
            if let Some(cgroup) = cgroup {
                cgroup.kill_all(signal)?;
            }
        } else {
            match kill(Pid::from_raw(file.pid), signal) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(e) => {
                    return Err(RuntimeError::system(
                        format!("send {signal} to container {id}"),
                        e,
                    ))
                }
            }
        }
        // A frozen process acts on no signal, not even SIGKILL on cgroup v1.
        if status == Status::Paused && signal == Signal::SIGKILL {
            if let Some(cgroup) = cgroup {
                cgroup.thaw()?;
            }
        }
        Ok(())
    }

    /// Delete container `id`: its processes (a running one only with
    /// `force`), cgroup and state. Poststop hooks run last. With `force`,
    /// what a create killed half-way left is removed too (and the container
    /// is still reported as not found).
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let file = match self.load(id) {
            Ok(file) => file,
            Err(RuntimeError::NotFound { .. }) => {
                // A create that was killed before it finished leaves a
                // directory without state: it goes, and the container still
                // counts as unknown (its cgroup, if any, is its creator's
                // to find).
                let dir = self.container_dir(id);
                if force && dir.is_dir() {
                    std::fs::remove_dir_all(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
                }
                return Err(RuntimeError::NotFound { id: id.to_owned() });
            }
            Err(e) => return Err(e),
        };
        let status = self.status_of(&file);
        match status {
            Status::Stopped => {}
            Status::Created => self.kill_and_wait(&file)?,
            _ if force => self.kill_and_wait(&file)?,
            _ => {
                return Err(wrong_status(
                    id,
                    status,
                    "cannot delete a running container: stop it first or use --force",
                ))
            }
        }
        if let Some(cgroup) = &file.cgroup {
            cgroup.remove()?;
        }
        if !Namespaces::from_spec(&file.spec)?.has(Namespace::Mount) {
            // Its mounts are in the runtime's namespace, below its root.
            berth_fs::unmount_below(&state::rootfs_path(&file.bundle, &file.spec))?;
        }
        let dir = self.container_dir(id);
        std::fs::remove_dir_all(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
        let hooks = hooks_at(&file.spec, HookPoint::Poststop);
        if !hooks.is_empty() {
            let state = self.oci_state(&file, Status::Stopped);
            if let Err(e) = run_hooks(&hooks, HookPoint::Poststop, &state) {
                eprintln!("berth-runtime: warning: {e}");
            }
        }
        Ok(())
    }

    fn kill_and_wait(&self, file: &ContainerFile) -> Result<()> {
        if let Some(cgroup) = &file.cgroup {
            let _ = cgroup.kill_all(Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(file.pid), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while berth_state::is_same_process(&self.proc_root, file.pid, file.pid_start_time) {
            if Instant::now() >= deadline {
                return Err(RuntimeError::Process {
                    code: super::RUNTIME_FAILED,
                    message: format!("container {} did not die after SIGKILL", file.id),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Freeze every process of the container.
    pub fn pause(&self, id: &str) -> Result<()> {
        let file = self.load(id)?;
        match self.status_of(&file) {
            Status::Running => {}
            status => {
                return Err(wrong_status(
                    id,
                    status,
                    "only a running container can be paused",
                ))
            }
        }
        Ok(require_cgroup(&file)?.freeze()?)
    }

    /// Thaw a paused container.
    pub fn resume(&self, id: &str) -> Result<()> {
        let file = self.load(id)?;
        match self.status_of(&file) {
            Status::Paused => {}
            status => return Err(wrong_status(id, status, "the container is not paused")),
        }
        Ok(require_cgroup(&file)?.thaw()?)
    }

    /// The PIDs (as seen by the runtime) of the container's processes.
    pub fn processes(&self, id: &str) -> Result<Vec<i32>> {
        let file = self.load(id)?;
        match &file.cgroup {
            Some(cgroup) => Ok(cgroup.processes()?),
            None => Ok(Vec::new()),
        }
    }

    /// The spec the container was created from.
    pub fn spec(&self, id: &str) -> Result<Spec> {
        Ok(self.load(id)?.spec)
    }

    /// The container's cgroup.
    pub fn cgroup(&self, id: &str) -> Result<Option<Cgroup>> {
        Ok(self.load(id)?.cgroup)
    }
}

/// Put the process `pid`, born in `birthplace`, into `cgroup` on the
/// hierarchies it is not in yet. Returns the files through which it must
/// move itself (see [`berth_cgroup::join_self`]): a single-threaded process
/// moving itself into a v1 cgroup skips the global lock that a move by
/// another process takes. A process in a new user namespace cannot write
/// the host's cgroup files: it is placed from here.
pub(super) fn attach_to_cgroup(
    cgroup: &Cgroup,
    pid: Pid,
    birthplace: Birthplace,
    in_user_namespace: bool,
) -> Result<Vec<PathBuf>> {
    let born_in_unified = birthplace == Birthplace::GivenCgroup;
    Ok(match (in_user_namespace, born_in_unified) {
        (true, true) => {
            cgroup.add_task_v1(pid.as_raw())?;
            Vec::new()
        }
        (true, false) => {
            cgroup.add_task(pid.as_raw())?;
            Vec::new()
        }
        (false, true) => cgroup.v1_self_attach_files(),
        (false, false) => cgroup.self_attach_files(),
    })
}

/// The spec's resources (device rules included) and the host's
/// hierarchies, checked to be able to enforce them.
pub(super) fn checked_resources(spec: &Spec) -> Result<(berth_cgroup::Resources, Hierarchies)> {
    let linux = spec.linux().as_ref();
    let mut resources = convert::resources(linux.and_then(|l| l.resources().as_ref()))?;
    resources.devices = convert::device_cgroup(spec)?;
    let hierarchies = Hierarchies::from_host()?;
    hierarchies.check(&resources)?;
    Ok((resources, hierarchies))
}

/// The container's directory on each cgroup v1 hierarchy (and on the
/// unified one of a hybrid host), named as the host names its mount point:
/// what a `cgroup` mount in the container shows. Empty on a cgroup v2 host.
pub(super) fn cgroup_views(cgroup: &Cgroup) -> Vec<(String, PathBuf)> {
    let dirs = cgroup.dirs();
    if dirs
        .iter()
        .all(|d| d.version() == berth_cgroup::Version::V2)
    {
        return Vec::new();
    }
    dirs.iter()
        .filter_map(|dir| {
            let name = dir.mount_point().file_name()?.to_str()?.to_owned();
            Some((name, dir.path().to_path_buf()))
        })
        .collect()
}

fn require_cgroup(file: &ContainerFile) -> Result<&Cgroup> {
    file.cgroup
        .as_ref()
        .ok_or_else(|| RuntimeError::invalid(format!("container {} has no cgroup", file.id)))
}

pub(crate) fn wrong_status(id: &str, status: Status, refused: &'static str) -> RuntimeError {
    RuntimeError::WrongStatus {
        id: id.to_owned(),
        status: status.to_string(),
        refused,
    }
}

/// Atomically, as runc does: a reader never sees an empty pid file.
pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    berth_state::replace_file(
        path,
        pid.to_string().as_bytes(),
        berth_state::Durability::Volatile,
    )
    .map_err(|e| RuntimeError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| RuntimeError::io(path, e))
}

/// Run `spawn` with the PID namespace for children set to `path` (the
/// spec joins an existing PID namespace), restoring the caller's after.
pub(crate) fn with_pid_namespace<T>(path: Option<&Path>, spawn: impl FnOnce() -> T) -> Result<T> {
    let Some(path) = path else {
        return Ok(spawn());
    };
    let own = std::fs::File::open("/proc/self/ns/pid_for_children")
        .map_err(|e| RuntimeError::io("/proc/self/ns/pid_for_children", e))?;
    let target = std::fs::File::open(path).map_err(|e| RuntimeError::io(path, e))?;
    nix::sched::setns(target.as_fd(), nix::sched::CloneFlags::CLONE_NEWPID).map_err(|e| {
        RuntimeError::system(format!("join the PID namespace {}", path.display()), e)
    })?;
    let result = spawn();
    nix::sched::setns(own.as_fd(), nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(|e| RuntimeError::system("return to the runtime's PID namespace", e))?;
    let _ = own.as_raw_fd();
    Ok(result)
}
