//! The command line, docker's words and flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "A container engine: run programs in isolated Linux containers",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Directory for all of berth's state (images, containers).
    #[arg(
        long,
        global = true,
        env = "BERTH_ROOT",
        default_value = "/var/lib/berth"
    )]
    pub root: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new container
    Run(Box<RunArgs>),
    /// List containers
    Ps(PsArgs),
    /// Remove one or more containers
    Rm(RmArgs),
    /// Fetch the output of a container
    Logs(LogsArgs),
    /// Run a command in a running container
    Exec(ExecArgs),
    /// Stop running containers (SIGTERM or the image's StopSignal, then SIGKILL after a grace period)
    Stop(StopArgs),
    /// Send a signal to running containers
    Kill(KillArgs),
    /// Create a new image from a container's filesystem
    Commit(CommitArgs),
    /// Pause all processes in containers
    Pause(ContainersArgs),
    /// Resume paused containers
    Unpause(ContainersArgs),
    /// Show containers' resource usage
    Stats(StatsArgs),
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Show the stored record of containers or images as JSON
    Inspect(InspectArgs),
    /// List images
    Images(ImagesArgs),
    /// Show berth's version
    Version(VersionArgs),
    /// Rename a container
    Rename {
        #[arg(value_name = "CONTAINER")]
        container: String,
        #[arg(value_name = "NEW_NAME")]
        new_name: String,
    },
    /// Block until containers stop, then print their exit codes
    Wait {
        #[arg(required = true, value_name = "CONTAINER")]
        containers: Vec<String>,
    },
    /// List a container's published ports
    Port {
        #[arg(value_name = "CONTAINER")]
        container: String,
        #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
        private: Option<String>,
    },
    /// Show a container's processes
    Top {
        #[arg(value_name = "CONTAINER")]
        container: String,
    },
    /// Show what berth runs on and what it holds
    Info(InfoArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag {
        #[arg(value_name = "SOURCE_IMAGE[:TAG]")]
        source: String,
        #[arg(value_name = "TARGET_IMAGE[:TAG]")]
        target: String,
    },
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Load images from a tar archive or STDIN
    Load(LoadArgs),
    /// Save images to a tar archive (streamed to STDOUT by default)
    Save(SaveArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Export a container's filesystem as a tar archive
    Export(ExportArgs),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Log in to a registry
    Login(LoginArgs),
    /// Log out from a registry
    Logout(LogoutArgs),
    /// Create a new container (as `run` does) without starting it
    Create(Box<RunArgs>),
    /// Start created or stopped containers
    Start(StartArgs),
    /// Restart containers
    Restart(RestartArgs),
    /// Attach this terminal to a running container's input and output
    Attach(AttachArgs),
    /// Print a shell completion script (e.g. `berth completion bash >
    /// /etc/bash_completion.d/berth`)
    Completion {
        #[arg(value_enum, value_name = "SHELL")]
        shell: CompletionShell,
    },
    /// Manage volumes
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Copy files/folders between a container and the local filesystem
    Cp(CpArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff {
        #[arg(value_name = "CONTAINER")]
        container: String,
    },
    /// Manage containers
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Manage berth
    #[command(subcommand)]
    System(SystemCommand),
    /// Checkpoint a running container with CRIU (its processes, memory and
    /// write layer); it ends unless --leave-running
    Checkpoint(CheckpointArgs),
    /// Restore a checkpointed container, in place or from an exported
    /// checkpoint (--import)
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// Keep the container running after the checkpoint
    #[arg(short = 'R', long)]
    pub leave_running: bool,
    /// Also write the checkpoint, with the container's write layer, to
    /// this archive (tar.gz) for a restore in another state root or host
    #[arg(short, long, value_name = "FILE")]
    pub export: Option<PathBuf>,
    /// Checkpoint established TCP connections
    #[arg(long)]
    pub tcp_established: bool,
    /// Checkpoint file locks
    #[arg(long)]
    pub file_locks: bool,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Make a new container from this exported checkpoint (tar.gz)
    #[arg(short, long, value_name = "FILE")]
    pub import: Option<PathBuf>,
    /// Name of the container made by --import (default: the original's)
    #[arg(short, long)]
    pub name: Option<String>,
    /// Keep the checkpoint after restoring (to restore it again)
    #[arg(short, long)]
    pub keep: bool,
    /// Restore established TCP connections
    #[arg(long)]
    pub tcp_established: bool,
    /// Restore file locks
    #[arg(long)]
    pub file_locks: bool,
    /// Take any free address on the network instead of the checkpointed one
    #[arg(long)]
    pub ignore_static_ip: bool,
    #[arg(value_name = "CONTAINER", required_unless_present = "import")]
    pub container: Option<String>,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Format the output with a Go template (e.g. '{{.Client.Version}}'), or json
    #[arg(short, long, value_name = "FORMAT")]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Format the output with a Go template (e.g. '{{.KernelVersion}}'), or json
    #[arg(short, long, value_name = "FORMAT")]
    pub format: Option<String>,
}

/// The shells `berth completion` writes scripts for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach to the container's output (and pass its exit code on)
    #[arg(short, long)]
    pub attach: bool,
    /// Attach the container's input too
    #[arg(short, long)]
    pub interactive: bool,
    /// Start every stopped container whose restart policy wants it running
    /// (after a reboot); narrow with --filter restart=POLICY
    #[arg(long)]
    pub all: bool,
    /// With --all: restart=always|unless-stopped|on-failure (repeatable)
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
    #[arg(value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Seconds to wait for the container to stop before killing it
    #[arg(short, long)]
    pub time: Option<u64>,
    /// Signal to send first (default: the container's stop signal)
    #[arg(short, long, value_name = "SIGNAL")]
    pub signal: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not attach this terminal's input
    #[arg(long)]
    pub no_stdin: bool,
    /// Key sequence that detaches and leaves the container running
    /// (default ctrl-p,ctrl-q)
    #[arg(long, value_name = "KEYS")]
    pub detach_keys: Option<String>,
    /// Accepted as docker's: signals are passed on to a container without
    /// a terminal (a terminal passes them as keys)
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Debug, Args)]
#[command(trailing_var_arg = true, disable_help_flag = true)]
pub struct RunArgs {
    /// Print help (`-h` is --hostname, as in docker)
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Keep STDIN open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Run in the background and print the container id
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Bind mount a volume (HOST:CONTAINER[:ro], or NAME:CONTAINER, or CONTAINER)
    #[arg(short, long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub volume: Vec<String>,
    /// Memory limit (e.g. 512m, 1g; units b, k, m, g)
    #[arg(short, long, value_name = "SIZE", allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// CPU shares (relative weight; default 1024)
    #[arg(
        short = 'c',
        long,
        alias = "cpushare",
        value_name = "N",
        allow_hyphen_values = true
    )]
    pub cpu_shares: Option<String>,
    /// Number of CPUs the container may use (e.g. 0.5)
    #[arg(long, value_name = "DECIMAL", allow_negative_numbers = true)]
    pub cpus: Option<String>,
    /// CPUs the container may run on (e.g. 0-2,4)
    #[arg(
        long,
        alias = "cpuset",
        value_name = "LIST",
        allow_hyphen_values = true
    )]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use (e.g. 0)
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    pub cpuset_mems: Option<String>,
    /// Maximum number of processes in the container (0 or -1: unlimited)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<String>,
    /// cgroup to create the container's cgroup under (absolute, or relative
    /// to berth's own cgroup)
    #[arg(long, value_name = "PATH")]
    pub cgroup_parent: Option<String>,
    /// Add Linux capabilities (e.g. NET_ADMIN, or ALL)
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities (e.g. CHOWN, or ALL)
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Give the container every capability and device, unmasked /proc and /sys
    #[arg(long)]
    pub privileged: bool,
    /// Security options: no-new-privileges[:true|false]
    #[arg(long, value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Connect the container to a network: bridge (default), a network's
    /// name, none (only loopback) or host
    #[arg(
        long = "net",
        alias = "network",
        value_name = "NETWORK",
        default_value = "bridge"
    )]
    pub net: String,
    /// Publish a container's port on the host
    /// ([[IP:][HOSTPORT[-END]]:]CTRPORT[-END][/tcp|/udp]; without HOSTPORT
    /// a free one is chosen)
    #[arg(short, long = "publish", value_name = "[IP:]HOSTPORT:CTRPORT")]
    pub publish: Vec<String>,
    /// Log options: max-size=SIZE (e.g. 10m), max-file=N
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub log_opt: Vec<String>,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Container host name (default: the short container id)
    #[arg(long, short = 'h')]
    pub hostname: Option<String>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Overwrite the image's entrypoint ("" removes it)
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// User to run as: name|uid[:group|gid], looked up in the image
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Additional group to run with (name in the image, or gid)
    #[arg(long, value_name = "GROUP")]
    pub group_add: Vec<String>,
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    pub read_only: bool,
    /// Read environment variables from a file (KEY=VALUE lines)
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Set a label on the container (KEY=VALUE)
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Set a resource limit: NAME=SOFT[:HARD] (e.g. nofile=1024:2048)
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub ulimit: Vec<String>,
    /// Size of /dev/shm (e.g. 64m)
    #[arg(long, value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Set a namespaced kernel parameter (KEY=VALUE)
    #[arg(long, value_name = "KEY=VALUE")]
    pub sysctl: Vec<String>,
    /// Tune the container's OOM preference (-1000 to 1000)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub oom_score_adj: Option<i32>,
    /// Signal to stop the container (default SIGTERM or the image's)
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// PID namespace: host, or container:NAME|ID to share another's
    #[arg(long, value_name = "MODE")]
    pub pid: Option<String>,
    /// IPC namespace: private, shareable, host, or container:NAME|ID
    #[arg(long, value_name = "MODE")]
    pub ipc: Option<String>,
    /// UTS namespace: host
    #[arg(long, value_name = "MODE")]
    pub uts: Option<String>,
    /// Add a line to /etc/hosts (NAME:IP)
    #[arg(long, value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// Set a DNS server in /etc/resolv.conf
    #[arg(long, value_name = "IP")]
    pub dns: Vec<String>,
    /// Set a DNS search domain
    #[arg(long, value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// Set a DNS resolver option (e.g. ndots:2)
    #[arg(long, value_name = "OPTION")]
    pub dns_option: Vec<String>,
    /// Memory plus swap limit (-1: unlimited swap; needs --memory)
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Memory soft limit
    #[arg(long, value_name = "SIZE")]
    pub memory_reservation: Option<String>,
    /// CPU CFS period in microseconds
    #[arg(long, value_name = "US")]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota in microseconds per period
    #[arg(long, value_name = "US", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// Add a host device: HOST[:CONTAINER][:PERMISSIONS] (permissions from rwm)
    #[arg(long, value_name = "DEVICE")]
    pub device: Vec<String>,
    /// Seconds `stop` waits before killing (default 10)
    #[arg(long, value_name = "SECONDS")]
    pub stop_timeout: Option<u64>,
    /// Pull the image before running: missing, always or never
    #[arg(
        long,
        value_name = "POLICY",
        default_value = "missing",
        value_parser = ["missing", "always", "never"]
    )]
    pub pull: String,
    /// Restart policy: no, on-failure[:N], always or unless-stopped
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    /// Run a small init as PID 1 that reaps zombies and forwards signals
    #[arg(long)]
    pub init: bool,
    /// Publish every port the image exposes on a free host port
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// Image to start from
    pub image: String,
    /// Command and arguments (default: the image's command)
    #[arg(allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// Attach a filesystem mount (type=bind|volume|tmpfs,source=...,target=...)
    #[arg(long, value_name = "MOUNT")]
    pub mount: Vec<String>,
    /// Mount a tmpfs directory (PATH[:size=64m,mode=1777,...])
    #[arg(long, value_name = "PATH[:OPTIONS]")]
    pub tmpfs: Vec<String>,
    /// Mount the volumes of another container (CONTAINER[:ro|:rw])
    #[arg(long, value_name = "CONTAINER")]
    pub volumes_from: Vec<String>,
    /// Add a network-scoped alias for the container (user-defined networks)
    #[arg(long = "network-alias", alias = "net-alias", value_name = "ALIAS")]
    pub network_alias: Vec<String>,
    /// IPv4 address on its network, e.g. 10.10.0.50 (user-defined networks)
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,
    /// User namespace: host (none), auto[:size=N] (a free block of the
    /// berth user's /etc/subuid and /etc/subgid ranges)
    #[arg(long, value_name = "MODE")]
    pub userns: Option<String>,
    /// Map container uids to host uids (CONTAINER_ID:HOST_ID:SIZE), in a
    /// user namespace
    #[arg(long, value_name = "MAP")]
    pub uidmap: Vec<String>,
    /// Map container gids to host gids (CONTAINER_ID:HOST_ID:SIZE; default:
    /// as --uidmap)
    #[arg(long, value_name = "MAP")]
    pub gidmap: Vec<String>,
    /// Container MAC address on its network, e.g. 92:d0:c6:0a:29:33
    #[arg(long = "mac-address", value_name = "MAC")]
    pub mac_address: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output until the container stops
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" for all)
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// Show each line's time (RFC 3339 with nanoseconds)
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show lines since a time: RFC 3339 (2026-01-02T15:04:05Z), unix
    /// seconds, or a duration before now (10m, 1h30m)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Show lines until a time (same forms as --since)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// Keep STDIN open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as: name|uid[:group|gid], looked up in the container
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Run in the background (output discarded)
    #[arg(short, long)]
    pub detach: bool,
    /// Give the process every capability
    #[arg(long)]
    pub privileged: bool,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    #[arg(required = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait for the container to stop before killing it
    /// (default: the container's --stop-timeout, else 10)
    #[arg(short, long)]
    pub time: Option<u64>,
    /// Signal to send first (default: the container's stop signal)
    #[arg(short, long, value_name = "SIGNAL")]
    pub signal: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send (name like KILL or SIGTERM, or number)
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network
    Create(NetworkCreateArgs),
    /// List networks
    #[command(alias = "list")]
    Ls,
    /// Show networks and the containers on them as JSON
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks no running container uses
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove all unused networks
    Prune(FilteredPruneArgs),
    /// Connect a container to a network
    Connect(NetworkConnectArgs),
    /// Disconnect a container from a network
    Disconnect(NetworkDisconnectArgs),
}

#[derive(Debug, Args)]
pub struct NetworkConnectArgs {
    /// Add a network-scoped alias for the container
    #[arg(long, value_name = "ALIAS")]
    pub alias: Vec<String>,
    /// IPv4 address (default: the next free one)
    #[arg(long)]
    pub ip: Option<String>,
    pub network: String,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Debug, Args)]
pub struct NetworkDisconnectArgs {
    /// Force the container to disconnect from a network
    #[arg(short, long)]
    pub force: bool,
    pub network: String,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Debug, Args)]
pub struct NetworkCreateArgs {
    /// Network driver
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR form, e.g. 10.10.0.0/24 (default: the first free
    /// one of 172.17-31.0.0/16, then 192.168.0.0/16 in /20s, that no
    /// other network and no host address or route uses); once more for
    /// an IPv6 subnet with --ipv6, e.g. fd00:1::/64
    #[arg(long)]
    pub subnet: Vec<String>,
    /// Gateway address (default: the subnet's first address)
    #[arg(long)]
    pub gateway: Option<String>,
    pub name: String,
    /// Restrict external access: containers reach each other only
    #[arg(long)]
    pub internal: bool,
    /// Set metadata on the network (KEY=VALUE)
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Allocate container addresses from a sub-range of the subnet (CIDR)
    #[arg(long = "ip-range", value_name = "CIDR")]
    pub ip_range: Option<String>,
    /// Enable IPv6 (needs an IPv6 --subnet)
    #[arg(long)]
    pub ipv6: bool,
}

#[derive(Debug, Args)]
pub struct ContainersArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one sample and exit
    #[arg(long)]
    pub no_stream: bool,
    /// Containers (default: all running)
    #[arg(value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Commit message
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author (e.g. "Jane Doe <jane@example.com>")
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply a Dockerfile instruction to the image's config (CMD,
    /// ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, STOPSIGNAL, VOLUME)
    #[arg(short, long, value_name = "INSTRUCTION")]
    pub change: Vec<String>,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub image: Option<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    /// Only display container ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Format the output: table, table TEMPLATE, json, or a Go template
    /// (placeholders .ID .Image .Command .CreatedAt .RunningFor .Ports
    /// .Status .Size .Names .Labels .Label .Mounts .Networks .State)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Filter: status=, name=, label=KEY[=VALUE], ancestor=, id=,
    /// exited=CODE, before=, since=, network=, volume=, publish=PORT[/PROTO]
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Show the N most recently created containers (all states)
    #[arg(short = 'n', long, value_name = "N", allow_negative_numbers = true)]
    pub last: Option<i64>,
    /// Show the most recently created container (all states)
    #[arg(short, long)]
    pub latest: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Show the size of each container's write layer
    #[arg(short, long)]
    pub size: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a running container (kills it)
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
    /// Remove the anonymous volumes of the containers too
    #[arg(short, long)]
    pub volumes: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true, value_name = "CONTAINER|IMAGE")]
    pub targets: Vec<String>,
    /// Only look for this kind of object: container or image
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Format the output with a Go template (e.g. '{{.State.Pid}}'), or json
    #[arg(short, long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Add SizeRw (the write layer) and SizeRootFs (with the image) to containers
    #[arg(short, long)]
    pub size: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import a .tar or .tar.gz root filesystem as an image
    Import { file: PathBuf, name: String },
    /// List images
    #[command(alias = "ls")]
    List(ImagesArgs),
    /// Remove one or more images
    #[command(alias = "remove")]
    Rm(RmiArgs),
    /// Save images to a tar archive (streamed to STDOUT by default)
    Save(SaveArgs),
    /// Load images from a tar archive or STDIN
    Load(LoadArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag {
        #[arg(value_name = "SOURCE_IMAGE[:TAG]")]
        source: String,
        #[arg(value_name = "TARGET_IMAGE[:TAG]")]
        target: String,
    },
    /// Show the history of an image
    History(HistoryArgs),
    /// Show images' details as JSON
    Inspect {
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Remove unused images
    Prune(PruneArgs),
    /// Download an image from a registry
    Pull(PullArgs),
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only show image ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Show all images (berth has no intermediate images: the same list)
    #[arg(short, long)]
    pub all: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
    /// Format the output: table, table TEMPLATE, json, or a Go template
    /// (placeholders .ID .Repository .Tag .Digest .CreatedSince .CreatedAt .Size)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Filter: dangling=true|false, reference=PATTERN, label=KEY[=VALUE],
    /// before=IMAGE, since=IMAGE
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Force removal of the image: untag it even while a container uses it
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from a tar archive file (or OCI layout directory) instead of STDIN
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Accepted as docker's: it hides the progress, which berth does not draw
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to a file instead of STDOUT
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Archive format: docker-archive or oci-archive
    #[arg(long, default_value = "docker-archive")]
    pub format: String,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image ids
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Provide filter values (e.g. "until=24h", "label=key=value")
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to a file instead of STDOUT
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Platform of a multi-platform image (os/arch[/variant])
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Check the registry's TLS certificate (HTTPS registries)
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub tls_verify: bool,
    /// Print only the image reference
    #[arg(short, long)]
    pub quiet: bool,
    /// Image to pull ([REGISTRY/]NAME[:TAG|@DIGEST])
    #[arg(value_name = "NAME[:TAG|@DIGEST]")]
    pub image: String,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin)
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
    /// Check the registry's TLS certificate (HTTPS registries)
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub tls_verify: bool,
    /// Registry (default: docker.io)
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry (default: docker.io)
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume
    Create(VolumeCreateArgs),
    /// List volumes
    #[command(alias = "list")]
    Ls(VolumeLsArgs),
    /// Show volumes' details as JSON
    Inspect {
        #[arg(required = true, value_name = "VOLUME")]
        volumes: Vec<String>,
    },
    /// Remove one or more volumes
    #[command(alias = "remove")]
    Rm(VolumeRmArgs),
    /// Remove unused volumes (anonymous ones only, unless --all)
    Prune(VolumePruneArgs),
}

#[derive(Debug, Args)]
pub struct VolumeCreateArgs {
    /// Volume driver (only "local")
    #[arg(short, long, default_value = "local")]
    pub driver: String,
    /// Set metadata on the volume (KEY=VALUE)
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Driver options (type=tmpfs, device=..., o=...)
    #[arg(short, long = "opt", value_name = "KEY=VALUE")]
    pub opt: Vec<String>,
    /// The volume's name (default: a generated one)
    #[arg(value_name = "VOLUME")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct VolumeLsArgs {
    /// Only display volume names
    #[arg(short, long)]
    pub quiet: bool,
    /// Filter: name=TEXT, label=KEY[=VALUE], dangling=true|false, driver=local
    #[arg(short, long, value_name = "FILTER")]
    pub filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VolumeRmArgs {
    /// Do not fail when a volume does not exist
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true, value_name = "VOLUME")]
    pub volumes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VolumePruneArgs {
    /// Remove all unused volumes, named ones too
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Filter: label=KEY[=VALUE], label!=KEY[=VALUE]
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short, long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// Suppress progress output during copy
    #[arg(short, long)]
    pub quiet: bool,
    /// CONTAINER:SRC_PATH, a host path, or - (a tar stream on STDIN)
    #[arg(value_name = "SRC")]
    pub source: String,
    /// CONTAINER:DEST_PATH, a host path, or - (a tar stream on STDOUT)
    #[arg(value_name = "DEST")]
    pub destination: String,
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Remove all stopped containers
    Prune(FilteredPruneArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(CpArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff {
        #[arg(value_name = "CONTAINER")]
        container: String,
    },
}

#[derive(Debug, Args)]
pub struct FilteredPruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Provide filter values (e.g. "until=24h", "label=key=value")
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Remove unused data
    Prune(SystemPruneArgs),
    /// Show berth disk usage
    Df(DfArgs),
}

#[derive(Debug, Args)]
pub struct SystemPruneArgs {
    /// Remove all unused images not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Provide filter values (e.g. "until=24h", "label=key=value")
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Prune anonymous volumes no container uses too
    #[arg(long)]
    pub volumes: bool,
}

#[derive(Debug, Args)]
pub struct DfArgs {
    /// Show detailed information on space usage
    #[arg(short, long)]
    pub verbose: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The help text is user-visible output: a change to it is a reviewed
    /// snapshot diff.
    #[test]
    fn help_texts() {
        let mut cli = Cli::command();
        insta::assert_snapshot!("help", cli.render_help().to_string());
        for name in ["run", "exec", "logs", "stop", "ps"] {
            let sub = cli.find_subcommand_mut(name).unwrap();
            insta::assert_snapshot!(format!("help_{name}"), sub.render_help().to_string());
        }
    }

    #[test]
    fn docker_aliases_parse() {
        let cli = Cli::try_parse_from([
            "berth",
            "run",
            "--cpushare",
            "512",
            "--cpuset",
            "0",
            "-h",
            "web",
            "-dit",
            "busybox",
            "sh",
            "-c",
            "x",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.cpu_shares.as_deref(), Some("512"));
        assert_eq!(run.cpuset_cpus.as_deref(), Some("0"));
        assert_eq!(run.hostname.as_deref(), Some("web"));
        assert!(run.detach && run.interactive && run.tty);
        assert_eq!(run.command, ["sh", "-c", "x"]);
    }

    #[test]
    fn options_after_the_image_belong_to_the_command() {
        let cli = Cli::try_parse_from(["berth", "run", "busybox", "ls", "-la", "--rm"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert!(!run.rm);
        assert_eq!(run.command, ["ls", "-la", "--rm"]);
    }
}
