//! The container's side: the init cloned by `create`, and the process
//! cloned by `exec`. Both are clones of the runtime's own process, so this
//! is ordinary Rust, single-threaded, with nothing to return to: it either
//! execs the spec's process or reports why not over the channel and exits.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use berth_ns::{Channel, Namespace};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::stat::Mode;
use oci_spec::runtime::{Hook, Process, Spec};
use serde::{Deserialize, Serialize};

use super::convert::Namespaces;
use super::hooks::{run_hooks, HookPoint};
use super::{tty, CANNOT_INVOKE, DEFAULT_PATH, NOT_FOUND, RUNTIME_FAILED};

/// Runtime to container process: one message per protocol step.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToInit {
    /// The process has been placed (cgroup created, user-namespace maps
    /// written): move into the cgroup through these files (empty: already
    /// placed by the runtime) and go on. `views` are the container's cgroup
    /// directories on a host with cgroup v1 hierarchies, by the name a
    /// `cgroup` mount shows each under (what `/sys/fs/cgroup` shows in the
    /// container); empty on a cgroup v2 host, where cgroup2 is mounted.
    Start {
        cgroup: Vec<PathBuf>,
        views: Vec<(String, PathBuf)>,
    },
    /// The runtime ran its hooks for a container whose mounts are ready;
    /// `state` is the container's state for the container's own hooks.
    HooksDone { state: String },
}

/// Container process to runtime.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromInit {
    /// Carries the master side of the process's new terminal as an fd.
    Terminal,
    /// Mounts are done, the root not yet pivoted: the runtime may run its
    /// prestart/createRuntime hooks now and answer with `HooksDone`.
    MountsReady,
    /// Fully set up; the init now waits for `start` on the exec fifo.
    Created,
    /// Setup failed; `code` is docker's exit code for it.
    Failed { code: i32, message: String },
}

pub(crate) type InitChannel = Channel<FromInit, ToInit>;

/// Descriptors that become the process's stdin, stdout and stderr (`None`:
/// keep the runtime's own). Raw numbers: they are inherited through the
/// clone and stay open in the runtime until the clone is made.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StdioFds {
    pub stdin: Option<RawFd>,
    pub stdout: Option<RawFd>,
    pub stderr: Option<RawFd>,
}

/// What the init needs besides the spec, prepared before the clone.
#[derive(Debug)]
pub(crate) struct InitPlan<'a> {
    pub spec: &'a Spec,
    pub rootfs: PathBuf,
    pub namespaces: Namespaces,
    /// The exec fifo, opened `O_PATH` before the pivot and reopened for
    /// writing through /proc/self/fd when everything is ready.
    pub fifo: PathBuf,
    /// Die with the creating process (an engine that supervises the
    /// container in-process); a runc-style `create` exits instead.
    pub die_with_parent: bool,
    pub no_pivot: bool,
    /// The name of the container's own session keyring (`None`: keep the
    /// runtime's).
    pub session_keyring: Option<String>,
    pub process: ProcessPlan,
    /// The runtime runs prestart/createRuntime hooks in the middle of the
    /// setup (and the init runs createContainer/startContainer ones).
    pub hooks_handshake: bool,
    pub create_container_hooks: Vec<Hook>,
    pub start_container_hooks: Vec<Hook>,
    /// The engine's overlay root, from the spec's annotation (`None`: the
    /// root is `rootfs` as it is).
    pub overlay: Option<berth_fs::OverlayRootfs>,
    /// The runtime mounts that overlay in the init's mount namespace
    /// itself (a new user namespace: only the host's root may ID-map the
    /// image layers), so the init must not.
    pub overlay_mounted_by_runtime: bool,
}

/// How the process's stdio, descriptors and capabilities are arranged
/// (worked out by the runtime before the clone).
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcessPlan {
    pub capabilities: berth_ns::CapabilitySets,
    pub stdio: StdioFds,
    /// Descriptors 3 .. 3+N stay open into the process (runc's
    /// --preserve-fds).
    pub preserve_fds: u32,
    /// The spec's seccomp filter, compiled by the runtime before the clone.
    pub seccomp: Option<berth_ns::seccomp::CompiledFilter>,
}

/// A failed step: what it was, and docker's code for it.
pub(crate) struct InitFailure {
    code: i32,
    message: String,
}

/// Tags a failed setup step with what it was, as the runtime's own
/// failure (125).
pub(crate) trait InitStep<T> {
    fn step(self, what: &str) -> Result<T, InitFailure>;
}

impl<T, E: std::fmt::Display> InitStep<T> for Result<T, E> {
    fn step(self, what: &str) -> Result<T, InitFailure> {
        self.map_err(|e| InitFailure {
            code: RUNTIME_FAILED,
            message: format!("{what}: {e}"),
        })
    }
}

fn failure(code: i32, message: impl Into<String>) -> InitFailure {
    InitFailure {
        code,
        message: message.into(),
    }
}

/// The init's life; returns its exit code (only on failure: success execs).
pub(crate) fn run_init(plan: &InitPlan<'_>, channel: InitChannel) -> i32 {
    report(setup_init(plan, &channel), channel)
}

/// Report a failure to the runtime (if it still listens) and on stderr
/// (which a runc-style caller such as conmon collects), and return its code.
fn report(result: Result<Infallible, InitFailure>, channel: InitChannel) -> i32 {
    let failure = match result {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    let sent = channel.send(&FromInit::Failed {
        code: failure.code,
        message: failure.message.clone(),
    });
    if sent.is_err() {
        eprintln!("berth-runtime: {}", failure.message);
    }
    failure.code
}

/// Block until the runtime says Start; returns the cgroup files to join
/// and the cgroup views.
fn wait_for_start(channel: &InitChannel) -> (Vec<PathBuf>, Vec<(String, PathBuf)>) {
    match channel.recv() {
        Ok(Some(ToInit::Start { cgroup, views })) => (cgroup, views),
        // The runtime is gone (or broken): nothing to do but leave.
        _ => std::process::exit(RUNTIME_FAILED),
    }
}

fn setup_init(plan: &InitPlan<'_>, channel: &InitChannel) -> Result<Infallible, InitFailure> {
    if plan.die_with_parent {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).step("set the parent-death signal")?;
    }
    let (cgroup, cgroup_views) = wait_for_start(channel);
    // Opened first: after the pivot the host path is out of sight, and in
    // a new user namespace only the host's root (which this process still
    // is, until the next step) may enter the runtime's private directory.
    let fifo = nix::fcntl::open(&plan.fifo, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .step("open the exec fifo")?;
    if plan.namespaces.creates(Namespace::User) {
        // The maps are written: become the namespace's root (until now the
        // host's root, which the maps leave out), so that what the init
        // creates is owned by a mapped user.
        become_namespace_root().step("become root in the user namespace")?;
    }
    // Before anything of the container runs, so every byte it allocates
    // is charged to it.
    berth_cgroup::join_self(&cgroup).step("join the container's cgroup")?;
    join_namespaces(&plan.namespaces.joined())?;
    let namespaces = &plan.namespaces;
    if namespaces.creates(Namespace::Cgroup) {
        // After joining the cgroup, so the namespace's root is the
        // container's own cgroup.
        unshare(CloneFlags::CLONE_NEWCGROUP).step("create the cgroup namespace")?;
    }
    if namespaces.creates(Namespace::Net) {
        berth_net::set_link_up("lo").step("bring up the loopback interface")?;
    }
    if namespaces.has(Namespace::Uts) {
        if let Some(hostname) = plan.spec.hostname().as_deref() {
            nix::unistd::sethostname(hostname).step("set the hostname")?;
        }
        if let Some(domainname) = plan.spec.domainname().as_deref() {
            set_domainname(domainname).step("set the domain name")?;
        }
    }
    let linux = plan.spec.linux().as_ref();
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        let mut entries: Vec<(String, String)> =
            sysctl.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        entries.sort();
        berth_ns::process::write_sysctls(Path::new("/proc/sys"), &entries).step("sysctl")?;
    }

    // The container has a mount namespace (`create` checked); one joined
    // by path is set up like a new one, as runc does.
    super::rootfs::prepare(plan, &cgroup_views)?;
    let mut hook_state = oci_spec::runtime::State::default();
    if plan.hooks_handshake {
        channel
            .send(&FromInit::MountsReady)
            .step("report the mounts")?;
        let state = match channel.recv() {
            Ok(Some(ToInit::HooksDone { state })) => state,
            _ => std::process::exit(RUNTIME_FAILED),
        };
        hook_state = serde_json::from_str(&state).step("read the container state")?;
        run_hooks(
            &plan.create_container_hooks,
            HookPoint::CreateContainer,
            &hook_state,
        )
        .step("hooks")?;
    }
    super::rootfs::enter(plan)?;
    let process = plan
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| failure(RUNTIME_FAILED, "the spec has no process"))?;
    if let Some(name) = &plan.session_keyring {
        berth_ns::process::join_new_session_keyring(name).step("create the session keyring")?;
    }
    let prepared = prepare_process(process, &plan.process, channel)?;
    channel.send(&FromInit::Created).step("report created")?;
    let started = wait_for_start_signal(&fifo)?;
    // Part of `start`, before the process runs: `start` goes on (to the
    // poststart hooks) only when they are done.
    run_hooks(
        &plan.start_container_hooks,
        HookPoint::StartContainer,
        &hook_state,
    )
    .step("hooks")?;
    std::io::Write::write_all(&mut &started, b"0").step("write the exec fifo")?;
    if wants_reaping_init(plan.spec) {
        return Err(prepared.exec_under_reaping_init(&plan.process));
    }
    Err(prepared.exec(&plan.process))
}

fn wants_reaping_init(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(super::REAPING_INIT_ANNOTATION))
        .is_some_and(|value| value == "true")
}

/// The exec fifo: opening it for writing blocks until `start` opens it for
/// reading; one byte written to it then tells `start` that the init goes
/// on to exec.
fn wait_for_start_signal(fifo: &OwnedFd) -> Result<std::fs::File, InitFailure> {
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let file = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags_cloexec()
            .open(&path)
        {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other.step("open the exec fifo for writing")?,
        }
    };
    Ok(file)
}

trait OpenCloexec {
    fn custom_flags_cloexec(&mut self) -> &mut Self;
}

impl OpenCloexec for std::fs::OpenOptions {
    fn custom_flags_cloexec(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::custom_flags(self, libc::O_CLOEXEC)
    }
}

/// setns into each namespace given by path (user first, mount last). The
/// PID namespace is joined by the runtime before the clone (it applies to
/// children only).
fn join_namespaces(joined: &[(Namespace, PathBuf)]) -> Result<(), InitFailure> {
    let joined: Vec<(Namespace, PathBuf)> = joined
        .iter()
        .filter(|(kind, _)| *kind != Namespace::Pid)
        .cloned()
        .collect();
    berth_ns::join_paths(&joined).step("join the container's namespaces")
}

fn become_namespace_root() -> nix::Result<()> {
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
}

fn set_domainname(name: &str) -> nix::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, which
    // setdomainname only reads.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    Errno::result(ret).map(drop)
}

/// The process, ready to exec: every check that can fail with a clear
/// message has been made.
pub(crate) struct PreparedProcess {
    program: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    shown: String,
    /// Load the plan's seccomp filter as the last step before exec.
    seccomp_at_exec: bool,
}

/// Inside the container (after the pivot, or after joining a running
/// container): terminal or stdio, working directory, rlimits, OOM score,
/// user, capabilities, no_new_privs, umask, and the program looked up in
/// the process's PATH.
pub(crate) fn prepare_process(
    process: &Process,
    plan: &ProcessPlan,
    channel: &InitChannel,
) -> Result<PreparedProcess, InitFailure> {
    if process.terminal().unwrap_or(false) {
        let terminal = tty::open_in_container().step("allocate a terminal")?;
        if let Some(size) = process.console_size() {
            tty::set_window_size(
                terminal.master.as_fd(),
                size.height() as u16,
                size.width() as u16,
            );
        }
        channel
            .send_with_fd(&FromInit::Terminal, terminal.master.as_fd())
            .step("send the terminal")?;
        drop(terminal.master);
        tty::make_controlling(terminal.slave).step("attach the terminal")?;
    } else {
        // A session of its own, as with a terminal (and as runc does):
        // the caller's session lies outside the container, which would
        // make its processes impossible to checkpoint, and its terminal's
        // signals are the engine's to relay.
        let _ = nix::unistd::setsid();
        let stdio = plan.stdio;
        for (fd, target) in [(stdio.stdin, 0), (stdio.stdout, 1), (stdio.stderr, 2)] {
            if let Some(fd) = fd {
                // SAFETY: the runtime created these descriptors before the
                // clone; this process's copies stay open until exec.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                // SAFETY: dup2 onto a standard stream number; no memory.
                Errno::result(unsafe { libc::dup2(fd.as_raw_fd(), target) })
                    .step("redirect stdio")?;
            }
        }
        reopen_dev_null();
    }

    let cwd = process.cwd().to_string_lossy().into_owned();
    if !cwd.starts_with('/') {
        return Err(failure(
            RUNTIME_FAILED,
            format!("the working directory {cwd:?} must be an absolute path"),
        ));
    }
    berth_fs::enter_workdir(&cwd).step("working directory")?;

    if let Some(rlimits) = process.rlimits() {
        let limits = rlimits
            .iter()
            .map(|r| {
                berth_ns::process::Rlimit::parse(r.typ().to_string().as_str(), r.soft(), r.hard())
            })
            .collect::<Result<Vec<_>, _>>()
            .step("rlimits")?;
        berth_ns::process::set_rlimits(&limits).step("rlimits")?;
    }
    if let Some(score) = process.oom_score_adj() {
        berth_ns::process::set_oom_score_adj(Path::new("/proc"), score).step("oomScoreAdj")?;
    }

    let program = lookup_program(process)?;
    let no_new_privileges = process.no_new_privileges().unwrap_or(false);
    if let Some(filter) = plan.seccomp.as_ref().filter(|_| !no_new_privileges) {
        // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which
        // becoming a non-root user or the capability drop takes away: load
        // it now (as runc does; the profile must then allow those steps).
        filter.load().step("seccomp")?;
    }
    let user = process.user();
    let groups: Vec<u32> = user.additional_gids().clone().unwrap_or_default();
    berth_ns::process::set_user(user.uid(), user.gid(), &groups).step("set the user")?;
    if let Some(umask) = user.umask() {
        berth_ns::process::set_umask(umask).step("umask")?;
    }
    if no_new_privileges {
        berth_ns::capabilities::set_no_new_privs().step("no_new_privs")?;
    }
    berth_ns::capabilities::apply_sets(&plan.capabilities).step("capabilities")?;
    Ok(PreparedProcess {
        // With no_new_privs it is loaded last, just before exec, so the
        // profile need not allow the runtime's own remaining steps.
        seccomp_at_exec: no_new_privileges && plan.seccomp.is_some(),
        ..program
    })
}

/// The process's argv[0] found as execvp(3) would, in the PATH of its own
/// environment: 127 when nowhere, 126 when found but not executable.
fn lookup_program(process: &Process) -> Result<PreparedProcess, InitFailure> {
    let args = process.args().clone().unwrap_or_default();
    let Some(program) = args.first().cloned() else {
        return Err(failure(RUNTIME_FAILED, "the process has no args"));
    };
    let env = process.env().clone().unwrap_or_default();
    let to_cstrings = |items: &[String]| -> Result<Vec<CString>, InitFailure> {
        items
            .iter()
            .map(|s| CString::new(s.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| {
                failure(
                    RUNTIME_FAILED,
                    "command and environment must not contain NUL bytes",
                )
            })
    };
    let c_args = to_cstrings(&args)?;
    let c_env = to_cstrings(&env)?;
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(&program)]
    } else {
        let path = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| Path::new(dir).join(&program))
            .collect()
    };
    let mut worst = Errno::ENOENT;
    for candidate in candidates {
        match executable(&candidate) {
            Ok(()) => {
                return Ok(PreparedProcess {
                    program: CString::new(candidate.as_os_str().as_encoded_bytes())
                        .step("program path")?,
                    args: c_args,
                    env: c_env,
                    shown: program,
                    seccomp_at_exec: false,
                })
            }
            Err(Errno::ENOENT | Errno::ENOTDIR) => {}
            Err(errno) => worst = errno,
        }
    }
    Err(exec_failure(&program, worst))
}

/// Whether `path` is a file this process may execute.
fn executable(path: &Path) -> Result<(), Errno> {
    let st = nix::sys::stat::stat(path)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return Err(Errno::EACCES);
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK)
}

fn exec_failure(program: &str, errno: Errno) -> InitFailure {
    match errno {
        Errno::ENOENT if program.contains('/') => failure(
            NOT_FOUND,
            format!("exec: {program:?}: no such file or directory"),
        ),
        Errno::ENOENT => failure(
            NOT_FOUND,
            format!("exec: {program:?}: executable file not found in $PATH"),
        ),
        errno => failure(
            CANNOT_INVOKE,
            format!("exec: {program:?}: {}", errno.desc().to_lowercase()),
        ),
    }
}

impl PreparedProcess {
    /// Close what the runtime opened, undo its signal setup, exec. Returns
    /// only on failure.
    pub(crate) fn exec(self, plan: &ProcessPlan) -> InitFailure {
        restore_signal_defaults();
        // Everything the runtime opened must stay out of the container:
        // mark every descriptor above the preserved ones close-on-exec. The
        // channel stays usable until the exec itself, so an exec failure
        // can still be reported.
        let first = 3u32.saturating_add(plan.preserve_fds);
        // SAFETY: close_range only changes descriptor flags; no memory is
        // involved.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if let Some(filter) = plan.seccomp.as_ref().filter(|_| self.seccomp_at_exec) {
            if let Err(e) = filter.load() {
                return failure(RUNTIME_FAILED, format!("seccomp: {e}"));
            }
        }
        let errno = match nix::unistd::execve(&self.program, &self.args, &self.env) {
            Err(errno) => errno,
            Ok(never) => match never {},
        };
        exec_failure(&self.shown, errno)
    }
}

impl PreparedProcess {
    /// [`super::REAPING_INIT_ANNOTATION`]: fork; the child execs the
    /// process (and reports an exec failure as a plain init would), this
    /// process stays PID 1 to reap and forward signals. Returns only if
    /// the fork fails.
    fn exec_under_reaping_init(self, plan: &ProcessPlan) -> InitFailure {
        // Blocked before the fork, so that no signal sent between the fork
        // and the wait is lost; the child unblocks them before its exec.
        let all = SigSet::all();
        if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None) {
            return failure(RUNTIME_FAILED, format!("block signals for the init: {e}"));
        }
        // SAFETY: the init is single-threaded (a clone of the runtime
        // taken before any thread), so the child's copy is consistent.
        match unsafe { nix::unistd::fork() } {
            Err(e) => failure(RUNTIME_FAILED, format!("fork the init's child: {e}")),
            Ok(nix::unistd::ForkResult::Child) => self.exec(plan),
            Ok(nix::unistd::ForkResult::Parent { child }) => reap_and_forward(child),
        }
    }
}

/// PID 1 of a container run with a reaping init: hold nothing of the
/// runtime's (so that the channel and the exec fifo see the child's exec,
/// not this process), forward signals to the child, reap every process
/// that is re-parented here, and leave with the child's status.
fn reap_and_forward(child: nix::unistd::Pid) -> ! {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    // This process is a copy of the engine: the container must not read
    // its memory (non-dumpable: /proc/1/mem, environ and exe are root's
    // alone), nor its command line and environment, which are the host's.
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::prctl::set_name(c"init");
    wipe_arguments_and_environment();
    // SAFETY: close_range only closes descriptors; the init holds nothing
    // it needs above stdio (it never writes to the channel again).
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let all = SigSet::all();
    loop {
        let signal = match all.wait() {
            Ok(signal) => signal,
            Err(_) => continue,
        };
        if signal != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(child, signal);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => std::process::exit(code),
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                    std::process::exit(128 + signal as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// Overwrite the memory that /proc/PID/cmdline and environ show with
/// "init" and zeros (setproctitle's way; the Rust runtime does not read
/// argv or environ again after start-up).
fn wipe_arguments_and_environment() {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name, which may hold spaces: arg_start is
    // field 48, arg_end 49, env_start 50, env_end 51 (proc(5)).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return;
    };
    let fields: Vec<usize> = rest
        .split_whitespace()
        .skip(45)
        .take(4)
        .filter_map(|f| f.parse().ok())
        .collect();
    let [arg_start, arg_end, env_start, env_end] = fields[..] else {
        return;
    };
    for (start, end) in [(arg_start, arg_end), (env_start, env_end)] {
        if start == 0 || end <= start {
            continue;
        }
        // SAFETY: the kernel reports these ranges as this process's own
        // argument and environment strings, mapped writable on its stack;
        // nothing in this single-threaded process reads them any more.
        unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) };
    }
    if arg_end > arg_start + 4 {
        // SAFETY: as above; the range is longer than the five bytes written.
        unsafe {
            std::ptr::copy_nonoverlapping(c"init".as_ptr().cast::<u8>(), arg_start as *mut u8, 5)
        };
    }
}

/// Undo what the runtime's own process set up, which exec would otherwise
/// pass on: blocked signals (an engine blocks them to forward them), and
/// the SIGPIPE disposition that the Rust runtime sets to "ignore".
fn restore_signal_defaults() {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // SAFETY: installing SIG_DFL runs no handler code; no other thread exists.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// The process cloned by `exec`: it joins the running container (cgroup
/// first, while its paths are still the host's, then the namespaces) and
/// starts the spec's process there. It is already in the container's PID
/// namespace (the runtime joined it before the clone).
pub(crate) fn run_exec(
    joined: &[(Namespace, PathBuf)],
    process: &Process,
    plan: &ProcessPlan,
    channel: InitChannel,
) -> i32 {
    let result = (|| {
        // No one in the container may ptrace this process or open its
        // /proc entries while it still holds host state.
        nix::sys::prctl::set_dumpable(false).step("set non-dumpable")?;
        let (cgroup, _) = wait_for_start(&channel);
        berth_cgroup::join_self(&cgroup).step("join the container's cgroup")?;
        join_namespaces(joined)?;
        let prepared = prepare_process(process, plan, &channel)?;
        Err(prepared.exec(plan))
    })();
    report(result, channel)
}

/// A descriptor number kept open into a clone (stdio handed to `create`).
pub(crate) fn raw(fd: &Option<OwnedFd>) -> Option<RawFd> {
    fd.as_ref().map(AsRawFd::as_raw_fd)
}

/// A standard stream that is the host's /dev/null (an engine's usual
/// stdin) becomes the container's own /dev/null, as runc does: the
/// process then holds no file of the host's mounts, which a checkpoint
/// could not take along. Without a /dev/null in the container, it stays.
fn reopen_dev_null() {
    use nix::sys::stat::fstat;
    let Ok(null) = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return;
    };
    let Ok(own) = fstat(&null) else { return };
    for fd in 0..3 {
        // SAFETY: 0, 1 and 2 are the process's standard streams, open or
        // not; only stat'ed and replaced here.
        let stream = unsafe { BorrowedFd::borrow_raw(fd) };
        let Ok(stat) = fstat(stream) else { continue };
        let is_null = stat.st_mode & libc::S_IFMT == libc::S_IFCHR && stat.st_rdev == own.st_rdev;
        if is_null {
            // SAFETY: dup2 onto a standard stream number; no memory.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}
