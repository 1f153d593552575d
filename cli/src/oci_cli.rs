//! `berth-runtime`: runc's command line over the runtime library, for
//! engines that drive an OCI runtime (podman via conmon, containerd's runc
//! shim, CRI-O). The binary takes this grammar when its file name is
//! `berth-runtime` (a link to `berth`).
//!
//! Conventions are runc's: exit 1 on failure with the error on stderr and,
//! with `--log-format json`, as a JSON line in the `--log` file (which the
//! shims read to report the error).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use cli::runtime::{CreateOptions, ExecOptions, Runtime, RuntimeError};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use oci_spec::runtime::{Process, Spec};

/// The name under which the binary speaks this grammar.
pub const PROGRAM_NAME: &str = "berth-runtime";

const DEFAULT_ROOT: &str = "/run/berth-runtime";

#[derive(Debug, Parser)]
#[command(
    name = "berth-runtime",
    // runc's shape ("runc version X" then "spec: Y"): engines show it.
    version = concat!("version ", env!("CARGO_PKG_VERSION"), "\nspec: ", "1.2.0"),
    about = "berth's OCI runtime, with runc's command line",
    disable_help_subcommand = true
)]
struct RuntimeCli {
    /// Where container state is kept.
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Also write errors (and debug output) to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of the --log file: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    /// Debug output.
    #[arg(long, global = true)]
    debug: bool,
    /// Use systemd to manage cgroups (not supported: berth writes cgroupfs).
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility: berth decides rootless mode itself.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    #[command(subcommand)]
    command: RuntimeCommand,
}

#[derive(Debug, Subcommand)]
enum RuntimeCommand {
    /// Create a container from a bundle; it waits for `start`.
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Create and start a container, and wait for it unless --detach.
    Run(RunArgs),
    /// Print the state of a container as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to a container's init.
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container and everything it made.
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Run a new process in a container.
    Exec(ExecArgs),
    /// Freeze a container's processes.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List a container's processes.
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        /// ps(1) options (accepted, table output is berth's own).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List containers.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print what this runtime supports, as the spec's features JSON.
    Features,
    /// Write a default config.json into the bundle.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Checkpoint a running container with CRIU (it ends unless
    /// --leave-running).
    Checkpoint(CheckpointArgs),
    /// Restore a container from a CRIU checkpoint.
    Restore(RestoreArgs),
}

/// What runc's checkpoint and restore share.
#[derive(Debug, Args)]
struct CriuArgs {
    /// Directory of the checkpoint's images
    #[arg(long, default_value = "checkpoint")]
    image_path: PathBuf,
    /// Directory for criu's log (default: the image path)
    #[arg(long)]
    work_path: Option<PathBuf>,
    #[arg(long)]
    tcp_established: bool,
    #[arg(long)]
    file_locks: bool,
    /// Accepted for runc compatibility: berth-runtime always creates the
    /// container's cgroup itself and has criu restore below it (soft).
    #[arg(long)]
    manage_cgroups_mode: Option<String>,
    /// Not supported (refused): external unix sockets
    #[arg(long)]
    ext_unix_sk: bool,
    /// Not supported (refused): a job of a shell outside the container
    #[arg(long)]
    shell_job: bool,
    /// Not supported (refused)
    #[arg(long)]
    empty_ns: Option<String>,
    /// Not supported (refused)
    #[arg(long)]
    auto_dedup: bool,
    /// Not supported (refused)
    #[arg(long)]
    lazy_pages: bool,
}

impl CriuArgs {
    fn refuse_unsupported(&self) -> anyhow::Result<()> {
        for (given, flag) in [
            (self.ext_unix_sk, "--ext-unix-sk"),
            (self.shell_job, "--shell-job"),
            (self.empty_ns.is_some(), "--empty-ns"),
            (self.auto_dedup, "--auto-dedup"),
            (self.lazy_pages, "--lazy-pages"),
        ] {
            if given {
                bail!("{flag} is not supported by {PROGRAM_NAME}");
            }
        }
        Ok(())
    }

    fn image_path(&self) -> anyhow::Result<PathBuf> {
        Ok(std::path::absolute(&self.image_path)?)
    }

    fn work_path(&self) -> anyhow::Result<Option<PathBuf>> {
        Ok(self
            .work_path
            .as_ref()
            .map(std::path::absolute)
            .transpose()?)
    }
}

#[derive(Debug, Args)]
struct CheckpointArgs {
    #[command(flatten)]
    criu: CriuArgs,
    /// Keep the container running after the checkpoint
    #[arg(long)]
    leave_running: bool,
    /// Not supported (refused): iterative migration
    #[arg(long)]
    pre_dump: bool,
    /// Not supported (refused): iterative migration
    #[arg(long)]
    parent_path: Option<PathBuf>,
    /// Not supported (refused)
    #[arg(long)]
    page_server: Option<String>,
    id: String,
}

#[derive(Debug, Args)]
struct RestoreArgs {
    #[command(flatten)]
    criu: CriuArgs,
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Return once the container runs instead of waiting for it
    #[arg(short, long)]
    detach: bool,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility (the restored init is always a
    /// child of the caller)
    #[arg(long)]
    no_subreaper: bool,
    /// Accepted for runc compatibility (criu enters the root itself)
    #[arg(long)]
    no_pivot: bool,
    /// Not supported (refused): no LSM is supported
    #[arg(long)]
    lsm_profile: Option<String>,
    /// Not supported (refused): no LSM is supported
    #[arg(long)]
    lsm_mount_context: Option<String>,
    id: String,
}

#[derive(Debug, Args)]
struct CreateArgs {
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[arg(long)]
    console_socket: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    #[arg(long)]
    no_pivot: bool,
    #[arg(long)]
    no_new_keyring: bool,
    id: String,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    create: CreateArgs,
    #[arg(short, long)]
    detach: bool,
    /// Keep the container after it exits.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// A JSON process spec to run (instead of COMMAND).
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(short, long)]
    detach: bool,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[arg(long)]
    console_socket: Option<PathBuf>,
    #[arg(short, long)]
    tty: bool,
    #[arg(long)]
    cwd: Option<String>,
    #[arg(short, long)]
    env: Vec<String>,
    /// UID[:GID]
    #[arg(short, long)]
    user: Option<String>,
    /// Add a capability to the process's bounding, effective and permitted sets.
    #[arg(short, long)]
    cap: Vec<String>,
    #[arg(long)]
    no_new_privs: bool,
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// Accepted for compatibility (SELinux/AppArmor are not supported).
    #[arg(long)]
    process_label: Option<String>,
    #[arg(long)]
    apparmor: Option<String>,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Entry point for the `berth-runtime` grammar; returns the exit code.
pub fn main() -> u8 {
    let cli = match RuntimeCli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    let log = Logger {
        path: cli.log.clone(),
        json: cli.log_format == "json",
    };
    match dispatch(cli) {
        Ok(code) => u8::try_from(code).unwrap_or(1),
        Err(error) => {
            let message = crate::exit::one_line(&error);
            log.error(&message);
            1
        }
    }
}

struct Logger {
    path: Option<PathBuf>,
    json: bool,
}

impl Logger {
    fn error(&self, message: &str) {
        eprintln!("{PROGRAM_NAME}: {message}");
        let Some(path) = &self.path else { return };
        let line = if self.json {
            serde_json::json!({
                "level": "error",
                "msg": message,
                "time": berth_state::Timestamp::now().to_string(),
            })
            .to_string()
        } else {
            format!("level=error msg={message:?}")
        };
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

fn dispatch(cli: RuntimeCli) -> anyhow::Result<i32> {
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup is not supported: berth manages cgroups through cgroupfs; configure the engine's cgroup manager as cgroupfs");
    }
    let runtime = Runtime::new(&cli.root);
    match cli.command {
        RuntimeCommand::Create(args) => create(&runtime, &args).map(|_| 0),
        RuntimeCommand::Start { id } => runtime.start(&id).map(|()| 0).map_err(Into::into),
        RuntimeCommand::Run(args) => run(&runtime, &args),
        RuntimeCommand::State { id } => state(&runtime, &id),
        RuntimeCommand::Kill { all, id, signal } => {
            let signal = parse_signal(&signal)?;
            runtime.kill(&id, signal, all)?;
            Ok(0)
        }
        RuntimeCommand::Delete { force, id } => match runtime.delete(&id, force) {
            Ok(()) => Ok(0),
            // As runc: deleting what is gone already succeeds with --force.
            Err(RuntimeError::NotFound { .. }) if force => Ok(0),
            Err(e) => Err(e.into()),
        },
        RuntimeCommand::Exec(args) => exec(&runtime, args),
        RuntimeCommand::Pause { id } => runtime.pause(&id).map(|()| 0).map_err(Into::into),
        RuntimeCommand::Resume { id } => runtime.resume(&id).map(|()| 0).map_err(Into::into),
        RuntimeCommand::Ps { format, id, .. } => ps(&runtime, &id, &format),
        RuntimeCommand::List { format, quiet } => list(&runtime, &format, quiet),
        RuntimeCommand::Features => {
            print_json(&features())?;
            Ok(0)
        }
        RuntimeCommand::Spec { bundle } => write_default_spec(&bundle).map(|()| 0),
        RuntimeCommand::Checkpoint(args) => checkpoint(&runtime, &args),
        RuntimeCommand::Restore(args) => restore(&runtime, &args),
    }
}

fn checkpoint(runtime: &Runtime, args: &CheckpointArgs) -> anyhow::Result<i32> {
    args.criu.refuse_unsupported()?;
    for (given, flag) in [
        (args.pre_dump, "--pre-dump"),
        (args.parent_path.is_some(), "--parent-path"),
        (args.page_server.is_some(), "--page-server"),
    ] {
        if given {
            bail!("{flag} is not supported by {PROGRAM_NAME}");
        }
    }
    let options = cli::runtime::CheckpointOptions {
        images_dir: args.criu.image_path()?,
        work_dir: args.criu.work_path()?,
        leave_running: args.leave_running,
        tcp_established: args.criu.tcp_established,
        file_locks: args.criu.file_locks,
    };
    runtime.checkpoint(&args.id, &options, || Ok(()))?;
    Ok(0)
}

fn restore(runtime: &Runtime, args: &RestoreArgs) -> anyhow::Result<i32> {
    args.criu.refuse_unsupported()?;
    for (given, flag) in [
        (args.lsm_profile.is_some(), "--lsm-profile"),
        (args.lsm_mount_context.is_some(), "--lsm-mount-context"),
    ] {
        if given {
            bail!("{flag} is not supported by {PROGRAM_NAME}");
        }
    }
    let bundle = std::path::absolute(&args.bundle)
        .with_context(|| format!("bundle {}", args.bundle.display()))?;
    let spec = load_spec(&bundle)?;
    // Before the container exists, so that no SIGCHLD can be missed.
    let signals = forwarded_signals()?;
    let options = cli::runtime::RestoreOptions {
        images_dir: args.criu.image_path()?,
        work_dir: args.criu.work_path()?,
        tcp_established: args.criu.tcp_established,
        file_locks: args.criu.file_locks,
        pid_file: args
            .pid_file
            .as_ref()
            .map(std::path::absolute)
            .transpose()?,
        ..cli::runtime::RestoreOptions::default()
    };
    let restored = runtime.restore(&args.id, &bundle, &spec, options)?;
    if let Some(master) = &restored.terminal {
        let sent = match &args.console_socket {
            Some(socket) => send_console(socket, master),
            None => Err(anyhow::anyhow!(
                "the container has a terminal: --console-socket is required"
            )),
        };
        if let Err(e) = sent {
            let _ = runtime.delete(&args.id, true);
            return Err(e);
        }
    }
    if args.detach {
        return Ok(0);
    }
    let status = wait_forwarding_signals(restored.pid, &signals)?;
    runtime.delete(&args.id, true)?;
    Ok(exit_code(status))
}

fn load_spec(bundle: &Path) -> anyhow::Result<Spec> {
    let path = bundle.join("config.json");
    Spec::load(&path).map_err(|source| RuntimeError::Spec { path, source }.into())
}

fn create(runtime: &Runtime, args: &CreateArgs) -> anyhow::Result<cli::runtime::Created> {
    let bundle = std::path::absolute(&args.bundle)
        .with_context(|| format!("bundle {}", args.bundle.display()))?;
    let spec = load_spec(&bundle)?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal && args.console_socket.is_none() {
        bail!("the spec asks for a terminal: --console-socket is required");
    }
    let options = CreateOptions {
        pid_file: args
            .pid_file
            .as_ref()
            .map(std::path::absolute)
            .transpose()?,
        preserve_fds: args.preserve_fds,
        no_pivot: args.no_pivot,
        no_new_keyring: args.no_new_keyring,
        ..CreateOptions::default()
    };
    let mut created = runtime.create(&args.id, &bundle, &spec, options)?;
    if let (Some(socket), Some(master)) = (&args.console_socket, created.take_terminal()) {
        if let Err(e) = send_console(socket, &master) {
            let _ = runtime.delete(&args.id, true);
            return Err(e);
        }
    }
    Ok(created)
}

/// runc's console-socket protocol: connect to the socket and send the
/// terminal's master side as SCM_RIGHTS.
fn send_console(socket: &Path, master: &OwnedFd) -> anyhow::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("connect to the console socket {}", socket.display()))?;
    let name = b"/dev/ptmx";
    let iov = [std::io::IoSlice::new(name)];
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .with_context(|| format!("send the terminal to {}", socket.display()))?;
    Ok(())
}

fn run(runtime: &Runtime, args: &RunArgs) -> anyhow::Result<i32> {
    let id = args.create.id.clone();
    // Before the container exists, so that no signal (SIGCHLD above all)
    // can come before it is collected.
    let signals = forwarded_signals()?;
    let created = create(runtime, &args.create)?;
    let pid = created.pid();
    created.start()?;
    if args.detach {
        return Ok(0);
    }
    let status = wait_forwarding_signals(pid, &signals)?;
    if !args.keep {
        runtime.delete(&id, true)?;
    }
    Ok(exit_code(status))
}

fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
        _ => 1,
    }
}

/// Block the signals a foreground `run` or `exec` passes on (and
/// SIGCHLD), to be read from the returned signalfd. The container's process
/// unblocks them before it execs.
fn forwarded_signals() -> anyhow::Result<nix::sys::signalfd::SignalFd> {
    use nix::sys::signal::{SigSet, SigmaskHow};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut forwarded = SigSet::empty();
    for signal in cli::supervise::RELAYED_SIGNALS {
        forwarded.add(signal);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), None)?;
    Ok(SignalFd::with_flags(&forwarded, SfdFlags::SFD_CLOEXEC)?)
}

/// Wait for `pid` (a child), passing on the signals this process gets.
fn wait_forwarding_signals(
    pid: nix::unistd::Pid,
    signals: &nix::sys::signalfd::SignalFd,
) -> anyhow::Result<WaitStatus> {
    loop {
        match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG))? {
            WaitStatus::StillAlive => {}
            status => return Ok(status),
        }
        if let Some(info) = signals.read_signal()? {
            let signal = Signal::try_from(info.ssi_signo as i32)?;
            if signal != Signal::SIGCHLD {
                let _ = nix::sys::signal::kill(pid, signal);
            }
        }
    }
}

fn state(runtime: &Runtime, id: &str) -> anyhow::Result<i32> {
    print_json(&state_json(runtime, id)?)?;
    Ok(0)
}

/// runc's state JSON: the spec's fields plus rootfs, created and owner.
fn state_json(runtime: &Runtime, id: &str) -> anyhow::Result<serde_json::Value> {
    let details = runtime.details(id)?;
    let state = &details.state;
    Ok(serde_json::json!({
        "ociVersion": state.version(),
        "id": state.id(),
        "pid": state.pid().unwrap_or(0),
        "status": details.status.to_string(),
        "bundle": state.bundle(),
        "rootfs": details.rootfs,
        "created": details.created,
        "annotations": state.annotations().clone().unwrap_or_default(),
        "owner": details.owner,
    }))
}

fn exec(runtime: &Runtime, args: ExecArgs) -> anyhow::Result<i32> {
    // The new process is visible to the container before it execs: it must
    // not run the host's binary (CVE-2019-5736).
    berth_ns::sealed::reexec_from_sealed_copy(&runtime.sealed_exec_layer())?;
    let process = exec_process(runtime, &args)?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal && args.console_socket.is_none() {
        bail!("a terminal needs --console-socket");
    }
    let options = ExecOptions {
        preserve_fds: args.preserve_fds,
        pid_file: args
            .pid_file
            .as_ref()
            .map(std::path::absolute)
            .transpose()?,
        ..ExecOptions::default()
    };
    let signals = forwarded_signals()?;
    let mut executing = runtime.exec(&args.id, &process, options)?;
    if let (Some(socket), Some(master)) = (&args.console_socket, executing.terminal.take()) {
        send_console(socket, &master)?;
    }
    if args.detach {
        return Ok(0);
    }
    Ok(exit_code(wait_forwarding_signals(executing.pid, &signals)?))
}

/// The process for `exec`: from --process, or the container's own process
/// with the command and flags given here.
fn exec_process(runtime: &Runtime, args: &ExecArgs) -> anyhow::Result<Process> {
    if let Some(path) = &args.process {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the process {}", path.display()))?;
        return serde_json::from_str(&text)
            .with_context(|| format!("parse the process {}", path.display()));
    }
    if args.command.is_empty() {
        bail!("exec needs a command (or --process FILE)");
    }
    let spec = runtime.spec(&args.id)?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(args.tty));
    process.set_console_size(None);
    if let Some(cwd) = &args.cwd {
        process.set_cwd(PathBuf::from(cwd));
    }
    if !args.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        for entry in &args.env {
            let key = entry.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(entry.clone());
        }
        process.set_env(Some(env));
    }
    if let Some(user) = &args.user {
        let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
        let mut spec_user = process.user().clone();
        spec_user.set_uid(
            uid.parse()
                .with_context(|| format!("invalid --user {user:?}"))?,
        );
        spec_user.set_gid(
            gid.parse()
                .with_context(|| format!("invalid --user {user:?}"))?,
        );
        process.set_user(spec_user);
    }
    if args.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if !args.cap.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        for name in &args.cap {
            let cap: oci_spec::runtime::Capability =
                serde_json::from_value(serde_json::Value::String(name.to_ascii_uppercase()))
                    .with_context(|| format!("unknown capability {name:?}"))?;
            for set in [
                caps.bounding().clone(),
                caps.effective().clone(),
                caps.permitted().clone(),
            ]
            .iter()
            .enumerate()
            {
                let mut list = set.1.clone().unwrap_or_default();
                list.insert(cap);
                match set.0 {
                    0 => caps.set_bounding(Some(list)),
                    1 => caps.set_effective(Some(list)),
                    _ => caps.set_permitted(Some(list)),
                };
            }
        }
        process.set_capabilities(Some(caps));
    }
    Ok(process)
}

fn ps(runtime: &Runtime, id: &str, format: &str) -> anyhow::Result<i32> {
    let pids = runtime.processes(id)?;
    match format {
        "json" => print_json(&pids)?,
        "table" => {
            let mut out = String::from("PID CMD\n");
            for pid in pids {
                let cmd = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                out.push_str(&format!("{pid} {}\n", cmd.trim_end()));
            }
            write_stdout(&out)?;
        }
        other => bail!("invalid format {other:?}: table or json"),
    }
    Ok(0)
}

fn list(runtime: &Runtime, format: &str, quiet: bool) -> anyhow::Result<i32> {
    let ids = runtime.list()?;
    if quiet {
        write_stdout(&ids.iter().map(|id| format!("{id}\n")).collect::<String>())?;
        return Ok(0);
    }
    let states: Vec<serde_json::Value> = ids
        .iter()
        .filter_map(|id| state_json(runtime, id).ok())
        .collect();
    match format {
        "json" => print_json(&states)?,
        "table" => {
            let mut out = String::from("ID PID STATUS BUNDLE CREATED OWNER\n");
            for s in &states {
                out.push_str(&format!(
                    "{} {} {} {} {} {}\n",
                    s["id"].as_str().unwrap_or_default(),
                    s["pid"],
                    s["status"].as_str().unwrap_or_default(),
                    s["bundle"].as_str().unwrap_or_default(),
                    s["created"].as_str().unwrap_or_default(),
                    s["owner"].as_str().unwrap_or_default(),
                ));
            }
            write_stdout(&out)?;
        }
        other => bail!("invalid format {other:?}: table or json"),
    }
    Ok(0)
}

/// The runtime spec's features document (runtime-spec features.md).
fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": cli::runtime::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "iversion", "lazytime", "loud", "mand", "noatime", "nodev", "nodiratime", "noexec",
            "noiversion", "nolazytime", "nomand", "norelatime", "nostrictatime", "nosuid",
            "nosymfollow", "private", "rbind", "rdev", "rexec", "relatime", "remount", "ro",
            "rprivate", "rro", "rrw", "rshared", "rslave", "runbindable", "rw", "shared",
            "silent", "slave", "strictatime", "suid", "symfollow", "sync", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": berth_ns::Capability::ALL.iter().map(|c| c.name()).collect::<Vec<_>>(),
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false },
            "seccomp": { "enabled": false },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": false } }
        },
        "annotations": {
            "org.opencontainers.runtime-spec.features": "berth-runtime"
        }
    })
}

/// runc's `spec`: a default config.json for a busybox-like rootfs.
fn write_default_spec(bundle: &Path) -> anyhow::Result<()> {
    let path = bundle.join("config.json");
    if path.exists() {
        bail!("File {} exists. Remove it first", path.display());
    }
    let mut spec = Spec::default();
    spec.set_version(cli::runtime::OCI_VERSION.to_owned());
    let text = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

fn parse_signal(text: &str) -> anyhow::Result<Signal> {
    cli::runtime::parse_signal(text).ok_or_else(|| anyhow::anyhow!("invalid signal {text:?}"))
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_stdout(&text)
}

/// Write to stdout; a closed pipe is not an error worth a panic.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("write to stdout"),
    }
}
