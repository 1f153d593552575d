//! `berth run`: create a container from an image and run it in the
//! foreground, passing its exit code through.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{bail, Context};
use oci_spec::runtime::LinuxNamespaceType;
use std::os::fd::OwnedFd;

use berth_image::{Image, ImageStore};
use berth_state::{
    generate_id, generate_name, ContainerRecord, ContainerStore, LogLimits, LogWriter,
    RestartPolicy, StateError,
};
use cli::runtime::{CreateOptions, RuntimeError, Stdio};
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::args::RunArgs;
use crate::exit::{status_code, CodedError};
use crate::paths::Paths;
use crate::supervise::{supervise, Attachment, Output, RELAYED_SIGNALS};
use cli::runtime::DEFAULT_PATH;

/// The image berth can build by itself from the host's static busybox.
const DEFAULT_IMAGE: &str = "busybox";

pub fn run(paths: &Paths, mut args: RunArgs) -> anyhow::Result<i32> {
    require_root()?;
    crate::network::expand_network_option(&mut args)?;
    let containers = paths.containers()?;
    if args.restart.as_deref().is_some_and(|p| p != "no") && !args.detach {
        bail!("--restart needs -d: berth restarts containers that run in the background");
    }
    let (record, launch, guard) = create_container(paths, &containers, &args)?;
    if args.detach {
        crate::monitor::start_detached(paths, &containers, record.clone(), launch, guard)?;
        println!("{}", record.id);
        Ok(0)
    } else {
        foreground(paths, &containers, record, launch, guard)
    }
}

/// `berth create`: the container as `run` makes it, left in the Created
/// state for `start`.
pub fn create(paths: &Paths, mut args: RunArgs) -> anyhow::Result<i32> {
    require_root()?;
    crate::network::expand_network_option(&mut args)?;
    let containers = paths.containers()?;
    let (record, _launch, mut guard) = create_container(paths, &containers, &args)?;
    guard.armed = false;
    println!("{}", record.id);
    Ok(0)
}

/// Image + flags -> the container's record, write layer and OCI spec
/// (kept as `spec.json` in its directory for every later start), and the
/// plan to launch it now. Until the guard is disarmed, a failure takes the
/// container away again.
fn create_container<'a>(
    paths: &'a Paths,
    containers: &'a ContainerStore,
    args: &RunArgs,
) -> anyhow::Result<(ContainerRecord, LaunchPlan, RemoveOnFailure<'a>)> {
    let restart_policy = match &args.restart {
        None => RestartPolicy::No,
        Some(text) => RestartPolicy::parse(text).with_context(|| {
            format!("invalid --restart {text:?}: use no, on-failure[:N], always or unless-stopped")
        })?,
    };
    if restart_policy != RestartPolicy::No && args.rm {
        bail!("conflicting options: --restart and --rm (a removed container cannot restart)");
    }
    let images = paths.images()?;
    let image = resolve_image(paths, &images, &args.image, &args.pull)?;
    let config = image.run_config();
    let command = command_line(
        args.entrypoint.as_deref(),
        config.entrypoint().as_deref().unwrap_or_default(),
        config.cmd().as_deref().unwrap_or_default(),
        &args.command,
    );
    if command.is_empty() {
        bail!(
            "no command specified: image {} has no default command, give one after the image name",
            args.image
        );
    }
    let id = generate_id();
    let mut record = ContainerRecord::new(id.clone(), String::new(), args.image.clone());
    record.image_id = image.id.hex().to_owned();
    record.command = command;
    record.hostname = match &args.hostname {
        Some(h) => validate_hostname(h)?,
        None => record.short_id().to_owned(),
    };
    let mut extras = extras(paths, args, &image)?;
    let mut publish = args.publish.clone();
    let on_a_bridge =
        !matches!(args.net.as_str(), "none" | "host") && !args.net.starts_with("container:");
    if args.publish_all && on_a_bridge {
        publish.extend(exposed_ports_to_publish(
            config.exposed_ports().as_deref().unwrap_or_default(),
            &args.publish,
        )?);
    }
    let mut network = crate::network::plan(paths, &args.net, &publish)?;
    if let crate::network::NetworkMode::Container {
        netns, hostname, ..
    } = &network
    {
        // docker: the other container's network comes with its name and
        // its /etc/hosts and resolv.conf.
        for (given, flag) in [
            (args.hostname.is_some(), "--hostname"),
            (!args.add_host.is_empty(), "--add-host"),
            (!args.dns.is_empty(), "--dns"),
        ] {
            if given {
                bail!("conflicting options: {flag} and --network {}", args.net);
            }
        }
        record.hostname = hostname.clone();
        extras
            .shared
            .push((LinuxNamespaceType::Network, Some(netns.clone())));
        let target = args.net.trim_start_matches("container:");
        record
            .joined_namespaces
            .insert("net".to_owned(), target.to_owned());
    }
    record.init = args.init;
    record.restart_policy = restart_policy;
    for (kind, mode) in [("pid", &args.pid), ("ipc", &args.ipc), ("uts", &args.uts)] {
        if let Some(target) = mode.as_deref().and_then(|m| m.strip_prefix("container:")) {
            record
                .joined_namespaces
                .insert(kind.to_owned(), target.to_owned());
        }
    }
    record.stop_signal = args
        .stop_signal
        .clone()
        .or_else(|| config.stop_signal().clone());
    if let Some(signal) = &record.stop_signal {
        crate::container::parse_signal(signal)
            .with_context(|| format!("the image's StopSignal {signal:?}"))?;
    }
    record.labels = config
        .labels()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    for entry in &args.add_host {
        crate::network::parse_extra_host(entry)?;
    }
    for server in &args.dns {
        server
            .parse::<std::net::IpAddr>()
            .with_context(|| format!("invalid --dns {server:?}: not an IP address"))?;
    }
    record.stop_timeout = args.stop_timeout;
    record.extra_hosts = args.add_host.clone();
    record.dns = args.dns.clone();
    record.dns_search = args.dns_search.clone();
    record.dns_options = args.dns_option.clone();
    for label in &args.label {
        let (key, value) = label.split_once('=').unwrap_or((label, ""));
        if key.is_empty() {
            bail!("invalid label {label:?}: the key is empty");
        }
        record.labels.insert(key.to_owned(), value.to_owned());
    }
    let image_env = config.env().clone().unwrap_or_default();
    let mut env_flags = Vec::new();
    for file in &args.env_file {
        env_flags.extend(read_env_file(file)?);
    }
    env_flags.extend(args.env.iter().cloned());
    record.env = build_env(&image_env, &env_flags, &record.hostname, args.tty)?;
    record.workdir = args
        .workdir
        .clone()
        .or_else(|| config.working_dir().clone());
    if let Some(dir) = &record.workdir {
        if !dir.starts_with('/') {
            bail!("the working directory {dir:?} is invalid: it must be an absolute path");
        }
    }
    record.tty = args.tty;
    record.interactive = args.interactive;
    record.auto_remove = args.rm;
    record.detached = args.detach;
    record.log_limits = parse_log_options(&args.log_opt)?;
    let (resources, limits) = crate::limits::parse(args)?;
    record.limits = limits;
    record.cgroup_parent = args.cgroup_parent.clone();
    let capabilities =
        berth_ns::capabilities::resolve(&args.cap_add, &args.cap_drop, args.privileged)?;
    record.privileged = args.privileged;
    record.capabilities = Some(capabilities.iter().map(|c| c.name().to_owned()).collect());
    (record.no_new_privileges, record.seccomp_profile) =
        parse_security_options(&args.security_opt)?;
    record.network_mode = args.net.clone();
    record.network_aliases = crate::network::check_aliases(&args.net, &args.network_alias)?;
    record.requested_ip = crate::network::check_requested_ip(paths, &args.net, args.ip.as_deref())?;
    record.mac_address = crate::network::check_mac_address(&args.net, args.mac_address.as_deref())?;
    record.publish = publish;
    let userns_request = crate::userns::request(
        args.userns.as_deref(),
        &args.uidmap,
        &args.gidmap,
        crate::userns::remap_setting().as_deref(),
    )?;
    if userns_request != crate::userns::Request::Host {
        refuse_host_sharing_in_a_user_namespace(args)?;
    }
    let (id_maps, _userns_lock) = crate::userns::resolve(
        paths,
        containers,
        &userns_request,
        &crate::userns::SubIdFiles::from_env(),
    )?;
    record.id_maps = id_maps;
    let image_volumes = config.volumes().clone().unwrap_or_default();
    let mut mounts = crate::mounts::for_run(paths, containers, args, &image_volumes)?;
    if let Some(root) = record.id_maps.as_ref().and_then(|m| m.root()) {
        mounts.prepare_for_mapped_root(paths, root)?;
    }
    record.volumes = args.volume.clone();
    record.mounts = std::mem::take(&mut mounts.record);
    record.anonymous_volumes = mounts.anonymous.clone();
    create_record(paths, containers, &mut record, args.name.as_deref())?;
    // The record names its volumes now: they are in use.
    mounts.created.unlock();

    // From here on a failure must take the container away again.
    let guard = RemoveOnFailure {
        paths,
        store: containers,
        id: id.clone(),
        armed: true,
        volumes: std::mem::take(&mut mounts.created),
    };
    let dir = containers.container_dir(&id);
    let layer_dirs = crate::container_spec::layer_dirs(containers, &id);
    prepare_layer_dirs(&layer_dirs)?;
    // /etc/hosts, resolv.conf and hostname first, so that a user's -v can
    // still replace one of them.
    crate::network::prepare(paths, &mut network)?;
    let etc_files = crate::network::EtcFiles::for_mode(&dir, &network);
    if !network.shares_another_container() {
        etc_files.write(&record, None, &[])?;
    }
    let volumes = etc_files.volumes();
    if let Some(root) = record.id_maps.as_ref().and_then(|m| m.root()) {
        let [upper, _work, rootfs] = layer_dirs.clone();
        let mut owned = vec![upper, rootfs];
        if !network.shares_another_container() {
            owned.extend(volumes.iter().map(|v| v.source.clone()));
        }
        crate::userns::prepare_container_dir(paths, &dir, &owned, root)?;
    }
    let console_size = crate::supervise::user_terminal().and_then(cli::runtime::tty::window_size);
    let spec = crate::container_spec::build(&crate::container_spec::ContainerPlan {
        id: &id,
        hostname: &record.hostname,
        command: &record.command,
        env: &record.env,
        workdir: record.workdir.as_deref(),
        tty: args.tty,
        console_size,
        // The store's short links, so that deep images fit in overlay's
        // option page (berth-fs falls back to paths relative to l/).
        layers: &image
            .lower_links()
            .iter()
            .map(|link| images.root().join(link))
            .collect::<Vec<_>>(),
        layer_dirs: &layer_dirs,
        volumes: &volumes,
        capabilities: &capabilities,
        privileged: args.privileged,
        no_new_privileges: record.no_new_privileges,
        seccomp_profile: record.seccomp_profile.as_deref(),
        own_network: network.has_own_namespace(),
        cgroup_namespace: berth_ns::Namespace::Cgroup.is_supported(Path::new("/proc")),
        resources,
        cgroup_parent: args.cgroup_parent.as_deref(),
        extras: &extras,
        mounts: &mounts.oci,
        id_maps: record.id_maps.as_ref(),
        auto_remove: record.auto_remove,
    })?;
    save_spec(&dir, &spec)?;
    let launch = LaunchPlan {
        spec,
        network,
        forward_stdin: args.interactive && !args.detach,
        restore: None,
    };
    Ok((record, launch, guard))
}

/// A user namespace cannot own the host's namespaces, nor another
/// container's, nor every device: docker asks for `--userns=host` then.
fn refuse_host_sharing_in_a_user_namespace(args: &RunArgs) -> anyhow::Result<()> {
    let modes = [
        ("--network", Some(args.net.as_str())),
        ("--pid", args.pid.as_deref()),
        ("--ipc", args.ipc.as_deref()),
        ("--uts", args.uts.as_deref()),
    ];
    for (flag, mode) in modes {
        if let Some(mode) = mode.filter(|m| *m == "host" || m.starts_with("container:")) {
            bail!("conflicting options: {flag} {mode} and a user namespace (add --userns=host)");
        }
    }
    if args.privileged {
        bail!("conflicting options: --privileged and a user namespace (add --userns=host)");
    }
    Ok(())
}

/// `-P`: the image's ExposedPorts (`80/tcp`, `53/udp`, `8080`) not
/// already published with `-p`, each on a free host port.
fn exposed_ports_to_publish(
    exposed: &[String],
    published: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut already = Vec::new();
    for spec in published {
        for mapping in berth_net::parse_publish(spec)? {
            already.push((mapping.container_port, mapping.protocol));
        }
    }
    let mut ports = Vec::new();
    for entry in exposed {
        let mappings = berth_net::parse_publish(entry)
            .with_context(|| format!("the image's ExposedPorts entry {entry:?}"))?;
        for mapping in mappings {
            let key = (mapping.container_port, mapping.protocol);
            if !already.contains(&key) {
                already.push(key);
                ports.push(format!("{}/{}", mapping.container_port, mapping.protocol));
            }
        }
    }
    Ok(ports)
}

/// The spec a container was created with, kept for its later starts.
pub(crate) const SPEC_FILE: &str = "spec.json";

pub(crate) fn save_spec(
    container_dir: &Path,
    spec: &oci_spec::runtime::Spec,
) -> anyhow::Result<()> {
    let path = container_dir.join(SPEC_FILE);
    let json = serde_json::to_vec(spec)?;
    // Private like the record: the spec names host paths and the user's
    // environment.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, &json))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn load_spec(container_dir: &Path) -> anyhow::Result<oci_spec::runtime::Spec> {
    // A spec is tens of KiB; a bigger file is not one berth wrote.
    const MAX: u64 = 4 << 20;
    let path = container_dir.join(SPEC_FILE);
    let file =
        std::fs::File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut json = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX + 1), &mut json)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if json.len() as u64 > MAX {
        bail!("{} is too large to be a container spec", path.display());
    }
    serde_json::from_slice(&json).with_context(|| format!("{} is corrupt", path.display()))
}

/// The plan to start an existing (created or stopped) container again:
/// its stored spec with the namespaces of other containers it joins
/// looked up anew, and its network planned and prepared from the record
/// (`--net`, `-p`), /etc files rewritten.
pub fn restart_plan(
    paths: &Paths,
    store: &ContainerStore,
    record: &ContainerRecord,
    forward_stdin: bool,
) -> anyhow::Result<LaunchPlan> {
    let dir = store.container_dir(&record.id);
    let mut spec = load_spec(&dir)?;
    if let Some(namespaces) = spec
        .linux_mut()
        .as_mut()
        .and_then(|linux| linux.namespaces_mut().as_mut())
    {
        for namespace in namespaces.iter_mut() {
            let kind = namespace.typ();
            let name = match kind {
                LinuxNamespaceType::Pid => "pid",
                LinuxNamespaceType::Ipc => "ipc",
                LinuxNamespaceType::Uts => "uts",
                LinuxNamespaceType::Network => "net",
                _ => continue,
            };
            if let Some(target) = record.joined_namespaces.get(name) {
                namespace.set_path(Some(namespace_of_container(paths, target, kind)?));
            }
        }
    }
    if record.tty && forward_stdin {
        let size = crate::supervise::user_terminal().and_then(cli::runtime::tty::window_size);
        if let Some(process) = spec.process_mut() {
            process.set_console_size(size.map(crate::container_spec::console_size));
        }
    }
    let mut network = crate::network::plan(paths, &record.network_mode, &record.publish)?;
    crate::network::prepare(paths, &mut network)?;
    if !network.shares_another_container() {
        crate::network::EtcFiles::new(&dir).write(record, None, &[])?;
    }
    Ok(LaunchPlan {
        spec,
        network,
        forward_stdin,
        restore: None,
    })
}

/// A container ready to launch: its spec, and the network the engine
/// connects between the runtime's create and start.
#[derive(Debug)]
pub struct LaunchPlan {
    pub spec: oci_spec::runtime::Spec,
    pub network: crate::network::NetworkMode,
    /// Copy berth's stdin to the container (`-i` in the foreground).
    pub forward_stdin: bool,
    /// Restore the container from a checkpoint instead of starting its
    /// process anew.
    pub restore: Option<crate::checkpoint::RestoreRequest>,
}

pub fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("berth needs root to create containers: run it as root or with sudo");
    }
    Ok(())
}

/// Run the container attached to this terminal and pass its exit code on.
pub fn foreground(
    paths: &Paths,
    store: &ContainerStore,
    mut record: ContainerRecord,
    plan: LaunchPlan,
    mut guard: RemoveOnFailure<'_>,
) -> anyhow::Result<i32> {
    let (mut signals, _restore_mask) = block_relayed_signals()?;
    let forward_stdin = plan.forward_stdin;
    let launched = launch(paths, store, &mut record, plan)?;
    guard.armed = false;
    let mut log = open_log(store, &record)?;
    let attach = Attachment {
        echo: true,
        forward_stdin,
        forward_signals: true,
    };
    supervise_to_the_end(
        paths,
        store,
        &record,
        launched,
        &mut signals,
        &mut log,
        &attach,
    )
}

/// Relay the running container until its PID 1 exits, then record the end
/// and release what it held ([`finish`]); returns docker's exit code. The
/// foreground `run` and a detached container's monitor both end this way.
pub fn supervise_to_the_end(
    paths: &Paths,
    store: &ContainerStore,
    record: &ContainerRecord,
    launched: Launched,
    signals: &mut SignalFd,
    log: &mut LogWriter,
    attach: &Attachment,
) -> anyhow::Result<i32> {
    // Without the socket the container still runs; only attach is lost.
    let mut server =
        cli::attach_server::AttachServer::listen(&store.container_dir(&record.id)).ok();
    let pid = launched.pid();
    // Without its thread the container still runs; its DNS queries fail.
    let dns = launched.dns.and_then(|responder| match responder.spawn() {
        Ok(serving) => Some(serving),
        Err(error) => {
            let _ = log.write(
                berth_state::Stream::Stderr,
                format!("berth: {error}\n").as_bytes(),
            );
            None
        }
    });
    let status = supervise(
        pid,
        launched.output,
        signals,
        Some(log),
        attach,
        server.as_mut(),
    );
    drop(server);
    // Its socket would keep the ended container's network namespace.
    drop(dns);
    // The ports are free for the host again before the end is recorded.
    drop(launched.held_ports);
    launched.child.reaped.set(status.is_ok());
    Ok(finish(paths, store, &record.id, status?))
}

/// The container's log file (also read by `berth logs`).
pub fn log_path(store: &ContainerStore, id: &str) -> std::path::PathBuf {
    store.container_dir(id).join("container.log")
}

pub fn open_log(store: &ContainerStore, record: &ContainerRecord) -> anyhow::Result<LogWriter> {
    Ok(LogWriter::open(
        log_path(store, &record.id),
        record.log_limits,
    )?)
}

/// Record how the container ended and release what it held; returns
/// docker's exit code. With `--rm` the container is removed.
pub fn finish(paths: &Paths, store: &ContainerStore, id: &str, status: WaitStatus) -> i32 {
    let code = status_code(status).unwrap_or(crate::exit::BERTH_FAILED);
    let record = match store.load(id) {
        Ok(record) => record,
        Err(e) => {
            eprintln!("berth: cannot record the exit of container {id}: {e}");
            return code;
        }
    };
    // Read before the cgroup goes away with the release.
    let oom_killed = crate::limits::oom_killed(&record);
    if let Err(e) = crate::limits::release(paths, &record) {
        eprintln!("berth: {e:#}");
    }
    if let Err(e) = crate::network::release(paths, id, true) {
        eprintln!("berth: {e:#}");
    }
    // With --rm nothing is left to record the exit in (unless a
    // checkpoint ended it: it is kept to be restored).
    let result = if record.auto_remove && record.checkpoint.is_none() {
        crate::container::remove_at_its_end(paths, store, &record, code)
    } else {
        store
            .update(id, |r| {
                let monitor = (r.monitor_pid, r.monitor_start_time);
                r.mark_exited(code);
                r.oom_killed = oom_killed;
                // Only a monitor outlives the container to start it again.
                r.restarting = false;
                if r.detached && r.restart_wanted(code) {
                    r.restarting = true;
                    r.restart_count += 1;
                    (r.monitor_pid, r.monitor_start_time) = monitor;
                }
            })
            .map(drop)
    };
    if let Err(e) = result {
        eprintln!("berth: cannot record the exit of container {id}: {e}");
    }
    code
}

/// `--security-opt no-new-privileges[:true|false]` (docker also accepts
/// `=` as the separator); returns whether no_new_privs is wanted.
/// `--security-opt`: no_new_privileges, and the seccomp choice as the
/// record keeps it.
fn parse_security_options(options: &[String]) -> anyhow::Result<(bool, Option<String>)> {
    let mut no_new_privileges = false;
    let mut seccomp = None;
    for option in options {
        let (key, value) = option.split_once([':', '=']).unwrap_or((option, "true"));
        match (key, value) {
            ("no-new-privileges", "true") => no_new_privileges = true,
            ("no-new-privileges", "false") => no_new_privileges = false,
            ("seccomp", value) => seccomp = Some(crate::seccomp::parse_choice(value)?),
            _ => bail!(
                "unsupported --security-opt {option:?}: berth supports \
                 no-new-privileges[:true|false] and seccomp=unconfined|PROFILE.json"
            ),
        }
    }
    Ok((no_new_privileges, seccomp))
}

/// `--log-opt max-size=10m --log-opt max-file=3`, docker's json-file options.
fn parse_log_options(options: &[String]) -> anyhow::Result<LogLimits> {
    let mut limits = LogLimits::default();
    for option in options {
        match option.split_once('=') {
            Some(("max-size", size)) => {
                limits.max_size = parse_size(size).filter(|&s| s > 0).with_context(|| {
                    format!(
                        "invalid --log-opt {option:?}: max-size must be a positive size like 10m"
                    )
                })?;
            }
            Some(("max-file", n)) => {
                let max = LogLimits::MAX_FILES;
                limits.max_files = n
                    .parse()
                    .ok()
                    .filter(|&n| n > 0 && n <= max)
                    .with_context(|| {
                        format!("invalid --log-opt {option:?}: max-file must be a number from 1 to {max}")
                    })?;
            }
            _ => bail!("unknown --log-opt {option:?}: supported are max-size=SIZE and max-file=N"),
        }
    }
    Ok(limits)
}

/// "512", "10k", "10m", "1g" (powers of 1024, as docker).
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text.as_str(), ""),
    };
    let multiplier: u64 = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(multiplier)
}

/// Removes a half-made container (network lease, record and directory,
/// the volumes made for it) unless disarmed.
pub struct RemoveOnFailure<'a> {
    pub paths: &'a Paths,
    pub store: &'a ContainerStore,
    pub id: String,
    pub armed: bool,
    /// Volumes made for this container (removed after it unless disarmed).
    pub volumes: crate::mounts::CreatedVolumes,
}

impl<'a> RemoveOnFailure<'a> {
    /// A guard that removes nothing: for a container that exists already
    /// (`start`), which a failed start must leave in place.
    pub fn disarmed(paths: &'a Paths, store: &'a ContainerStore, id: &str) -> Self {
        RemoveOnFailure {
            paths,
            store,
            id: id.to_owned(),
            armed: false,
            volumes: Default::default(),
        }
    }
}

impl Drop for RemoveOnFailure<'_> {
    fn drop(&mut self) {
        if !self.armed {
            self.volumes.keep();
        }
        if self.armed {
            if let Err(e) = crate::network::release(self.paths, &self.id, false) {
                eprintln!("berth: {e:#}");
            }
            if let Err(e) = self.store.remove(&self.id) {
                eprintln!("berth: cleaning up container {} also failed: {e}", self.id);
            }
        }
    }
}

/// The image to run: the built-in busybox is built locally (never pulled:
/// `run busybox` works offline); other images are pulled as `pull`
/// (`missing`, `always` or `never`) says, the pull's report on stderr.
fn resolve_image(
    paths: &Paths,
    images: &ImageStore,
    name: &str,
    pull: &str,
) -> anyhow::Result<Image> {
    let default = berth_image::Reference::parse(DEFAULT_IMAGE)?;
    let reference = berth_image::Reference::parse(name).ok();
    if reference.as_ref() == Some(&default) {
        return images
            .ensure_busybox(&default)
            .context("cannot build the default busybox image");
    }
    let local = match images.resolve(name) {
        Ok(image) => Some(image),
        Err(berth_image::ImageError::NotFound { .. }) => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read image {name:?}")),
    };
    match (pull, local) {
        ("never", None) => {
            let shown = reference.map_or_else(|| name.to_owned(), |r| r.familiar());
            bail!("no such image {shown} (--pull never: it is not pulled)")
        }
        ("always", _) | ("missing", None) => {
            let reference = crate::pull::parse_reference(name)?;
            if pull == "missing" {
                eprintln!("Unable to find image '{}' locally", reference.familiar());
            }
            let stderr = std::io::stderr();
            let settings = crate::pull::PullSettings {
                platform: berth_image::TargetPlatform::host(),
                tls_verify: true,
                terminal: std::io::IsTerminal::is_terminal(&stderr),
                quiet: false,
            };
            crate::pull::pull(paths, images, &reference, &settings, &mut stderr.lock())
        }
        (_, Some(image)) => Ok(image),
        (other, None) => bail!("invalid --pull policy {other:?}: use missing, always or never"),
    }
}

/// `--env-file`: KEY=VALUE lines (a bare KEY copies berth's own value);
/// blank lines and `#` comments are skipped, as docker does.
fn read_env_file(path: &Path) -> anyhow::Result<Vec<String>> {
    const MAX: u64 = 1 << 20;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the env file {}", path.display()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX + 1), &mut text)
        .with_context(|| {
            format!(
                "cannot read the env file {}: not UTF-8 text",
                path.display()
            )
        })?;
    if text.len() as u64 > MAX {
        bail!("the env file {} is larger than {MAX} bytes", path.display());
    }
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split('=').next().unwrap_or_default();
        if name.is_empty() || name.contains(char::is_whitespace) {
            bail!(
                "invalid env file {} line {}: {line:?} is not KEY=VALUE",
                path.display(),
                number + 1
            );
        }
        entries.push(line.to_owned());
    }
    Ok(entries)
}

/// `-u`, `--group-add`, `--read-only`, `--ulimit`, `--shm-size`,
/// `--sysctl`, `--oom-score-adj` checked and resolved for the spec.
/// The namespace file of a running container, for `--pid container:C`.
fn namespace_of_container(
    paths: &Paths,
    target: &str,
    kind: LinuxNamespaceType,
) -> anyhow::Result<std::path::PathBuf> {
    let store = paths.containers()?;
    let record = crate::container::find(&store, target)?;
    let pid = match record.pid {
        Some(pid) if record.is_active() && crate::container::is_alive(&record) => pid,
        _ => bail!("cannot join the namespaces of container {target}: it is not running"),
    };
    let name = match kind {
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Network => "net",
        _ => bail!("cannot share that namespace"),
    };
    Ok(std::path::PathBuf::from(format!("/proc/{pid}/ns/{name}")))
}

fn extras(
    paths: &Paths,
    args: &RunArgs,
    image: &berth_image::Image,
) -> anyhow::Result<crate::container_spec::Extras> {
    let layers = image.lower_dirs();
    let mut user = match &args.user {
        Some(spec) => Some(crate::user::resolve(spec, &layers)?),
        None => image
            .run_config()
            .user()
            .clone()
            .filter(|u| !u.is_empty())
            .map(|spec| crate::user::resolve(&spec, &layers))
            .transpose()
            .context("the image's User")?,
    };
    if !args.group_add.is_empty() {
        let resolved = user.get_or_insert(crate::user::ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
        });
        for group in &args.group_add {
            let gid = crate::user::resolve(&format!("0:{group}"), &layers)
                .with_context(|| format!("--group-add {group}"))?
                .gid;
            if !resolved.additional_gids.contains(&gid) {
                resolved.additional_gids.push(gid);
            }
        }
    }
    let mut rlimits = Vec::new();
    for ulimit in &args.ulimit {
        rlimits.push(parse_ulimit(ulimit)?);
    }
    let shm_size = args
        .shm_size
        .as_deref()
        .map(|size| {
            parse_size(size)
                .filter(|&s| s > 0)
                .with_context(|| format!("invalid --shm-size {size:?}: use a size like 64m"))
        })
        .transpose()?;
    let mut sysctl = std::collections::HashMap::new();
    for entry in &args.sysctl {
        let Some((key, value)) = entry.split_once('=') else {
            bail!("invalid --sysctl {entry:?}: use KEY=VALUE");
        };
        let mut own = vec![berth_ns::Namespace::Ipc, berth_ns::Namespace::Uts];
        if args.net != "host" {
            own.push(berth_ns::Namespace::Net);
        }
        berth_ns::process::validate_sysctl(key, &own)
            .with_context(|| format!("invalid --sysctl {entry:?}"))?;
        sysctl.insert(key.to_owned(), value.to_owned());
    }
    if let Some(score) = args.oom_score_adj {
        if !(-1000..=1000).contains(&score) {
            bail!("invalid --oom-score-adj {score}: it must be between -1000 and 1000");
        }
    }
    let mut shared = Vec::new();
    for (flag, value, kind, modes) in [
        (
            "--pid",
            &args.pid,
            LinuxNamespaceType::Pid,
            &["host", "container:"][..],
        ),
        (
            "--ipc",
            &args.ipc,
            LinuxNamespaceType::Ipc,
            &["host", "container:", "private", "shareable"],
        ),
        ("--uts", &args.uts, LinuxNamespaceType::Uts, &["host"]),
    ] {
        let Some(value) = value else { continue };
        match value.as_str() {
            "private" | "shareable" if modes.contains(&"private") => {}
            "host" => shared.push((kind, None)),
            other => match other.strip_prefix("container:") {
                Some(target) if modes.contains(&"container:") && !target.is_empty() => {
                    shared.push((kind, Some(namespace_of_container(paths, target, kind)?)));
                }
                _ => bail!(
                    "invalid {flag} {value:?}: use {}",
                    modes.join(", ").replace("container:", "container:NAME")
                ),
            },
        }
    }
    let devices = args
        .device
        .iter()
        .map(|spec| parse_device(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(crate::container_spec::Extras {
        devices,
        shared,
        user,
        read_only: args.read_only,
        rlimits,
        shm_size,
        sysctl,
        oom_score_adj: args.oom_score_adj,
        init: args.init,
    })
}

/// `--device HOST[:CONTAINER][:PERMISSIONS]`: the host node's type and
/// numbers, made at CONTAINER (default: the same path) with the access
/// given (default rwm).
fn parse_device(spec: &str) -> anyhow::Result<(oci_spec::runtime::LinuxDevice, String)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let parts: Vec<&str> = spec.split(':').collect();
    let is_access = |s: &str| !s.is_empty() && s.chars().all(|c| "rwm".contains(c));
    let (host, container, access) = match parts.as_slice() {
        [host] => (*host, *host, "rwm"),
        [host, last] if is_access(last) => (*host, *host, *last),
        [host, container] => (*host, *container, "rwm"),
        [host, container, access] if is_access(access) => (*host, *container, *access),
        _ => bail!("invalid --device {spec:?}: use HOST[:CONTAINER][:PERMISSIONS]"),
    };
    if !host.starts_with('/') || !container.starts_with('/') {
        bail!("invalid --device {spec:?}: device paths must be absolute");
    }
    let meta = std::fs::metadata(host)
        .with_context(|| format!("invalid --device {spec:?}: cannot stat {host}"))?;
    let kind = if meta.file_type().is_char_device() {
        oci_spec::runtime::LinuxDeviceType::C
    } else if meta.file_type().is_block_device() {
        oci_spec::runtime::LinuxDeviceType::B
    } else {
        bail!("invalid --device {spec:?}: {host} is not a device");
    };
    let rdev = meta.rdev();
    let device = oci_spec::runtime::LinuxDeviceBuilder::default()
        .path(container)
        .typ(kind)
        .major(nix::sys::stat::major(rdev) as i64)
        .minor(nix::sys::stat::minor(rdev) as i64)
        .file_mode(meta.mode() & 0o777)
        .uid(0u32)
        .gid(0u32)
        .build()?;
    Ok((device, access.to_owned()))
}

/// `--ulimit NAME=SOFT[:HARD]` (docker's names: nofile, nproc, core, ...;
/// -1 is unlimited) as (RLIMIT_NAME, soft, hard).
fn parse_ulimit(text: &str) -> anyhow::Result<(String, u64, u64)> {
    let invalid = || {
        anyhow::anyhow!("invalid --ulimit {text:?}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048")
    };
    let (name, values) = text.split_once('=').ok_or_else(invalid)?;
    const NAMES: [&str; 16] = [
        "as",
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ];
    if !NAMES.contains(&name) {
        bail!("invalid --ulimit {text:?}: unknown limit {name:?}");
    }
    let value = |v: &str| -> anyhow::Result<u64> {
        match v {
            "-1" | "unlimited" => Ok(u64::MAX),
            v => v.parse().map_err(|_| invalid()),
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((soft, hard)) => (value(soft)?, value(hard)?),
        None => (value(values)?, value(values)?),
    };
    if soft > hard {
        bail!("invalid --ulimit {text:?}: the soft limit is above the hard one");
    }
    Ok((format!("RLIMIT_{}", name.to_ascii_uppercase()), soft, hard))
}

/// docker's rule for the container's command line: the image's ENTRYPOINT
/// followed by the run arguments, or by the image's CMD when there are
/// none. `--entrypoint X` replaces the entrypoint with `X` and drops the
/// image's CMD (`""` removes the entrypoint).
fn command_line(
    entrypoint_flag: Option<&str>,
    image_entrypoint: &[String],
    image_cmd: &[String],
    args: &[String],
) -> Vec<String> {
    let (mut command, default_args) = match entrypoint_flag {
        Some("") => (Vec::new(), &[][..]),
        Some(program) => (vec![program.to_owned()], &[][..]),
        None => (image_entrypoint.to_vec(), image_cmd),
    };
    command.extend(
        if args.is_empty() { default_args } else { args }
            .iter()
            .cloned(),
    );
    command
}

fn validate_hostname(name: &str) -> anyhow::Result<String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid {
        bail!("invalid hostname {name:?}: use letters, digits, '-' and '.', at most 64 characters");
    }
    Ok(name.to_owned())
}

/// The container's environment: berth's default PATH, the image's, the
/// HOSTNAME (and TERM with `-t`), then `-e`, then HOME if still missing.
fn build_env(
    image_env: &[String],
    flags: &[String],
    hostname: &str,
    tty: bool,
) -> anyhow::Result<Vec<String>> {
    let mut env = vec![format!("PATH={DEFAULT_PATH}")];
    env = merge_env(env, image_env)?;
    let mut extra = vec![format!("HOSTNAME={hostname}")];
    if tty {
        extra.push("TERM=xterm".into());
    }
    env = merge_env(env, &extra)?;
    env = merge_env(env, flags)?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push("HOME=/root".into());
    }
    Ok(env)
}

/// Apply `-e` style entries to `env`: KEY=VALUE replaces KEY, a bare KEY
/// copies berth's own value (and is dropped if berth has none).
pub fn merge_env(mut env: Vec<String>, entries: &[String]) -> anyhow::Result<Vec<String>> {
    for entry in entries {
        let resolved = match entry.split_once('=') {
            Some(("", _)) => bail!("invalid environment variable {entry:?}: the name is empty"),
            Some(_) => entry.clone(),
            None if entry.is_empty() => {
                bail!("invalid environment variable \"\": the name is empty")
            }
            None => match std::env::var(entry) {
                Ok(value) => format!("{entry}={value}"),
                Err(_) => continue,
            },
        };
        let key = resolved.split('=').next().unwrap_or_default().to_owned();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(resolved);
    }
    Ok(env)
}

/// Store the record under the requested name, or a generated one (retrying
/// the rare collision).
fn create_record(
    paths: &Paths,
    store: &ContainerStore,
    record: &mut ContainerRecord,
    name: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(name) = name {
        record.name = name.to_owned();
        return match store_record(paths, store, record) {
            // Its holder may be a --rm container whose berth was killed:
            // looking it up carries that out, then the name may be free.
            Err(StateError::NameInUse { .. }) => {
                let _ = crate::container::find(store, name);
                store_record(paths, store, record).map_err(Into::into)
            }
            other => other.map_err(Into::into),
        };
    }
    for _ in 0..16 {
        record.name = generate_name();
        match store_record(paths, store, record) {
            Err(StateError::NameInUse { .. }) => continue,
            other => return other.map_err(Into::into),
        }
    }
    bail!("could not generate a free container name; pass --name")
}

/// The container's write layer (see [`crate::container_spec::layer_dirs`]).
fn prepare_layer_dirs(dirs: &[std::path::PathBuf; 3]) -> anyhow::Result<()> {
    for path in dirs {
        // The upper dir's mode becomes the mode of the container's "/".
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    Ok(())
}

/// Add `record` to the store: a `--rm` container as a transient one (its
/// files on the runtime's tmpfs, its write layer on disk), unless its root
/// is mapped (a user namespace's root could not reach that tmpfs).
pub(crate) fn store_record(
    paths: &Paths,
    store: &ContainerStore,
    record: &ContainerRecord,
) -> Result<(), StateError> {
    if record.auto_remove && record.id_maps.is_none() {
        // The runtime's directory, which the transient one is in (made
        // again after a reboot emptied /run).
        paths.runtime();
        store.create_transient(record)
    } else {
        store.create(record)
    }
}

/// Block the signals berth relays (and SIGCHLD) and collect them in a
/// signalfd. Done before the clone so that none is lost; the init unblocks
/// them before exec. The mask is restored when the guard drops.
pub fn block_relayed_signals() -> anyhow::Result<(SignalFd, RestoreMask)> {
    let mut relayed = SigSet::empty();
    for signal in RELAYED_SIGNALS {
        relayed.add(signal);
    }
    let mut previous = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&relayed), Some(&mut previous))?;
    let restore = RestoreMask(previous);
    let signals = SignalFd::with_flags(&relayed, SfdFlags::SFD_CLOEXEC)?;
    Ok((signals, restore))
}

/// A container whose command is running.
pub struct Launched {
    pub child: ChildGuard,
    pub output: Output,
    /// The published host ports, bound so that host processes cannot take
    /// them while the container runs (closed when it ends).
    pub held_ports: Vec<berth_net::HeldPort>,
    /// Its embedded DNS responder (user-defined networks), for whoever
    /// supervises it to serve until it ends.
    pub dns: Option<berth_net::dns::Responder>,
}

impl Launched {
    pub fn pid(&self) -> Pid {
        self.child.pid
    }
}

/// Create the container through the runtime, connect its network, record
/// it as running and start it. On success the command runs; on failure
/// the runtime has taken the container away again and the error carries
/// docker's exit code for it.
pub fn launch(
    paths: &Paths,
    store: &ContainerStore,
    record: &mut ContainerRecord,
    plan: LaunchPlan,
) -> anyhow::Result<Launched> {
    let runtime = paths.runtime();
    let tty = plan
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    // Without -t: a pipe per output stream, read by berth for the log.
    // Only the container may hold the write ends, so that end-of-file
    // means it closed its output.
    let (stdio, output_reads) = if tty {
        (Stdio::default(), None)
    } else {
        let (out_read, out_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (err_read, err_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // docker gives a container without -i an empty stdin; one with -i
        // a pipe that berth (or attach clients) write to.
        // Never berth's own stdin: the container could reopen a host file
        // through /proc/self/fd/0; berth relays it through a pipe.
        let (stdin, stdin_write) = if plan.forward_stdin || (record.detached && record.interactive)
        {
            let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            (Some(read), Some(write))
        } else {
            let null = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
            (Some(OwnedFd::from(null)), None)
        };
        let stdio = Stdio {
            stdin,
            stdout: Some(out_write),
            stderr: Some(err_write),
        };
        (stdio, Some((out_read, err_read, stdin_write)))
    };
    let bundle = store.container_dir(&record.id);
    if let Some(request) = &plan.restore {
        let (pid, terminal, held_ports) =
            crate::checkpoint::restore_process(paths, store, record, &plan, request, stdio)?;
        let guard = ChildGuard::new(pid);
        let dns = crate::network::embedded_dns(store, &plan.network, record, pid.as_raw())?;
        return launched(guard, terminal, output_reads, held_ports, dns);
    }
    let options = CreateOptions {
        stdio,
        die_with_parent: true,
        ..CreateOptions::default()
    };
    let mut created = runtime
        .create(&record.id, &bundle, &plan.spec, options)
        .map_err(coded)?;
    let pid = created.pid();
    let guard = ChildGuard::new(pid);
    let terminal = created.take_terminal();
    let started = (|| {
        if let Some(cgroup) = created.cgroup() {
            record.cgroup = Some(serde_json::to_value(cgroup)?);
        }
        // The DNS responder is bound by the attach, before the command
        // runs, so its first query is answered.
        let attached = crate::network::attach(paths, store, &plan.network, record, pid.as_raw())?;
        record_running(store, record, pid)?;
        created.start().map_err(coded)?;
        Ok((attached.held_ports, attached.dns))
    })();
    let (held_ports, dns) = match started {
        Ok(started) => started,
        Err(error) => {
            drop(guard);
            let _ = runtime.delete(&record.id, true);
            let _ = crate::network::release(paths, &record.id, false);
            return Err(error);
        }
    };
    launched(guard, terminal, output_reads, held_ports, dns)
}

/// The container's output read ends, as [`launch`] made them.
type OutputReads = Option<(OwnedFd, OwnedFd, Option<OwnedFd>)>;

fn launched(
    guard: ChildGuard,
    terminal: Option<OwnedFd>,
    output_reads: OutputReads,
    held_ports: Vec<berth_net::HeldPort>,
    dns: Option<berth_net::dns::Responder>,
) -> anyhow::Result<Launched> {
    let output = match (terminal, output_reads) {
        (Some(master), _) => Output::Terminal(master),
        (None, Some((stdout, stderr, stdin))) => Output::Pipes {
            stdout,
            stderr,
            stdin,
        },
        (None, None) => bail!("the container did not send its terminal"),
    };
    Ok(Launched {
        child: guard,
        output,
        held_ports,
        dns,
    })
}

/// Record the container as running as `pid`, under this process as its
/// monitor. Only what starting changes, under the store's lock: a `stop`,
/// `rename` or `update` meanwhile is kept, not saved over.
pub(crate) fn record_running(
    store: &ContainerStore,
    record: &mut ContainerRecord,
    pid: Pid,
) -> anyhow::Result<()> {
    let me = std::process::id() as i32;
    let proc_root = Path::new("/proc");
    let pid_start_time = berth_state::process_start_time(proc_root, pid.as_raw());
    let monitor_start_time = berth_state::process_start_time(proc_root, me);
    let (cgroup, network) = (record.cgroup.clone(), record.network.clone());
    *record = store.update(&record.id, |r| {
        r.cgroup = cgroup;
        r.network = network;
        r.mark_running(pid.as_raw(), pid_start_time);
        r.monitor_pid = Some(me);
        r.monitor_start_time = monitor_start_time;
    })?;
    Ok(())
}

/// A runtime error with docker's exit code kept for `main`.
pub fn coded(error: RuntimeError) -> anyhow::Error {
    match error {
        RuntimeError::Process { code, message } => CodedError { code, message }.into(),
        other => other.into(),
    }
}

pub struct RestoreMask(SigSet);

impl RestoreMask {
    /// Restore `previous` when dropped.
    pub fn new(previous: SigSet) -> Self {
        RestoreMask(previous)
    }
}

impl Drop for RestoreMask {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// Kills and reaps the init if berth leaves early through an error.
pub struct ChildGuard {
    pid: Pid,
    pub reaped: std::cell::Cell<bool>,
}

impl ChildGuard {
    pub fn new(pid: Pid) -> Self {
        ChildGuard {
            pid,
            reaped: std::cell::Cell::new(false),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !self.reaped.get() {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_layers_image_defaults_and_flags() {
        std::env::set_var("BERTH_TEST_COPIED", "from-host");
        let env = build_env(
            &["PATH=/bin".into(), "A=image".into()],
            &[
                "A=flag".into(),
                "B=x=y".into(),
                "BERTH_TEST_COPIED".into(),
                "BERTH_TEST_UNSET_VAR".into(),
            ],
            "host1",
            true,
        )
        .unwrap();
        assert_eq!(
            env,
            [
                "PATH=/bin",
                "HOSTNAME=host1",
                "TERM=xterm",
                "A=flag",
                "B=x=y",
                "BERTH_TEST_COPIED=from-host",
                "HOME=/root"
            ]
        );
        assert!(build_env(&[], &["=x".into()], "h", false).is_err());
    }

    #[test]
    fn ulimits_parse_as_in_docker() {
        assert_eq!(
            parse_ulimit("nofile=1024:2048").unwrap(),
            ("RLIMIT_NOFILE".to_owned(), 1024, 2048)
        );
        assert_eq!(parse_ulimit("core=-1").unwrap().2, u64::MAX);
        for bad in [
            "nofile",
            "nofile=",
            "bogus=1",
            "nofile=2:1",
            "nofile=a:b",
            "=1",
        ] {
            assert!(parse_ulimit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_files_skip_comments_and_refuse_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        std::fs::write(&file, "# comment\n\nA=1\n  B=two words\nHOME\n").unwrap();
        assert_eq!(
            read_env_file(&file).unwrap(),
            vec!["A=1", "B=two words", "HOME"]
        );
        std::fs::write(&file, "A=1\nnot a variable\n").unwrap();
        let err = read_env_file(&file).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        std::fs::write(&file, "=x\n").unwrap();
        assert!(read_env_file(&file).is_err());
        assert!(read_env_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn entrypoint_and_cmd_combine_as_in_docker() {
        let v = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let (ep, cmd) = (v(&["/init", "--flag"]), v(&["serve"]));
        assert_eq!(
            command_line(None, &ep, &cmd, &[]),
            v(&["/init", "--flag", "serve"])
        );
        assert_eq!(
            command_line(None, &ep, &cmd, &v(&["x"])),
            v(&["/init", "--flag", "x"])
        );
        assert_eq!(command_line(None, &[], &cmd, &[]), v(&["serve"]));
        assert_eq!(command_line(Some("sh"), &ep, &cmd, &[]), v(&["sh"]));
        assert_eq!(
            command_line(Some("sh"), &ep, &cmd, &v(&["-c", "x"])),
            v(&["sh", "-c", "x"])
        );
        assert_eq!(command_line(Some(""), &ep, &cmd, &v(&["ls"])), v(&["ls"]));
        assert!(command_line(Some(""), &ep, &cmd, &[]).is_empty());
    }

    #[test]
    fn security_options() {
        let nnp = |options: &[&str]| {
            let options: Vec<String> = options.iter().map(|o| (*o).to_owned()).collect();
            parse_security_options(&options).unwrap().0
        };
        assert!(!nnp(&[]));
        assert!(nnp(&["no-new-privileges"]));
        assert!(nnp(&["no-new-privileges:true"]));
        assert!(!nnp(&["no-new-privileges=false"]));
        assert_eq!(
            parse_security_options(&["seccomp=unconfined".into()]).unwrap(),
            (false, Some("unconfined".to_owned()))
        );
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile.json");
        std::fs::write(&profile, r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#).unwrap();
        let (_, chosen) =
            parse_security_options(&[format!("seccomp={}", profile.display())]).unwrap();
        assert!(chosen.unwrap().contains("SCMP_ACT_ALLOW"));
        std::fs::write(&profile, "not json").unwrap();
        assert!(parse_security_options(&[format!("seccomp={}", profile.display())]).is_err());
        assert!(parse_security_options(&["seccomp=/no/such/profile.json".into()]).is_err());
        assert!(parse_security_options(&["apparmor=x".into()]).is_err());
    }

    #[test]
    fn log_options_and_sizes() {
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("2GB"), Some(2 << 30));
        assert_eq!(parse_size("10x"), None);
        let limits = parse_log_options(&["max-size=1k".into(), "max-file=3".into()]).unwrap();
        assert_eq!(
            limits,
            LogLimits {
                max_size: 1024,
                max_files: 3
            }
        );
        assert!(parse_log_options(&["max-size=0".into()]).is_err());
        assert!(parse_log_options(&["colour=blue".into()]).is_err());
        assert!(parse_log_options(&["max-file=100".into()]).is_ok());
        for bad in [
            "max-file=101",
            "max-file=100000000",
            "max-file=0",
            "max-file=-1",
        ] {
            assert!(parse_log_options(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames_are_checked() {
        assert!(validate_hostname("web-1.example").is_ok());
        for bad in ["", "a_b", "-a", "a..b", &"x".repeat(65)] {
            assert!(validate_hostname(bad).is_err(), "{bad}");
        }
    }
}
