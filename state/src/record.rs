use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The record and write layer exist; the init process has not started
    /// the user's command yet (or berth died before it could).
    Created,
    Running,
    Paused,
    Exited,
}

/// Everything berth knows about one container; stored as its `config.json`.
///
/// New fields must be `#[serde(default)]` so that records written by an
/// older berth stay readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub image_id: String,
    /// The command as executed: entrypoint/cmd already resolved.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub interactive: bool,
    /// `--rm`: remove the container when it exits.
    #[serde(default)]
    pub auto_remove: bool,
    pub created: Timestamp,
    pub status: Status,
    /// Host PID of the container's PID 1 while it runs.
    #[serde(default)]
    pub pid: Option<i32>,
    /// Start time of `pid` (field 22 of /proc/PID/stat, in clock ticks since
    /// boot): a reused PID has a different start time, so a stale record is
    /// never mistaken for a live container.
    #[serde(default)]
    pub pid_start_time: Option<u64>,
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    /// `-d`: started in the background under a monitor process.
    #[serde(default)]
    pub detached: bool,
    /// The process that is the parent of PID 1 and records its exit: the
    /// monitor of a detached container, or the foreground `berth run`.
    #[serde(default)]
    pub monitor_pid: Option<i32>,
    #[serde(default)]
    pub monitor_start_time: Option<u64>,
    /// Volumes as given with `-v` (HOST:CONTAINER[:ro]).
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub log_limits: crate::LogLimits,
    /// Resource limits as the user gave them.
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub cgroup_parent: Option<String>,
    /// `--privileged`: all capabilities and devices, nothing masked.
    #[serde(default)]
    pub privileged: bool,
    /// The capabilities the container's processes keep (names like
    /// CAP_CHOWN); `exec` gives its processes the same. `None` in records
    /// written before berth dropped capabilities.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    #[serde(default)]
    pub no_new_privileges: bool,
    /// `--security-opt seccomp=`: `unconfined`, or the profile's JSON as
    /// it was when the container was created; `None` for the engine's
    /// default profile.
    #[serde(default)]
    pub seccomp_profile: Option<String>,
    /// The signal `stop` sends first (the image's StopSignal); `None`:
    /// SIGTERM.
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL (`--stop-timeout`); `None`: 10.
    #[serde(default)]
    pub stop_timeout: Option<u64>,
    /// Labels (the image's, as docker copies them to its containers).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--add-host NAME:IP` entries for /etc/hosts.
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// `--dns`, `--dns-search`, `--dns-option`: /etc/resolv.conf settings
    /// that replace the host's of their kind.
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub dns_search: Vec<String>,
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// The container's cgroup as the code that created it serialized it
    /// (for berth: `berth_cgroup::Cgroup`), so that any later command can
    /// find and remove it even if berth's own cgroup has changed.
    #[serde(default)]
    pub cgroup: Option<serde_json::Value>,
    /// `--net`: bridge (default), a network name, none or host.
    #[serde(default)]
    pub network_mode: String,
    /// The container's connection as the network code serialized it (for
    /// berth: `berth_net::Endpoint`: address, MAC, network, ports).
    #[serde(default)]
    pub network: Option<serde_json::Value>,
    /// `-p` as given: published again each time the container starts.
    #[serde(default)]
    pub publish: Vec<String>,
    /// `--pid`/`--ipc`/`--uts` modes naming another container
    /// (`container:NAME`), by namespace ("pid", "ipc", "uts"): resolved to
    /// that container's namespace again at each start.
    #[serde(default)]
    pub joined_namespaces: std::collections::BTreeMap<String, String>,
    /// `--init`: a reaping init is PID 1.
    #[serde(default)]
    pub init: bool,
    /// `--restart`: what the monitor does when the container exits.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Restarts done by the policy since the user last started it.
    #[serde(default)]
    pub restart_count: u32,
    /// The policy is waiting to start the container again (its monitor,
    /// `monitor_pid`, is alive and will).
    #[serde(default)]
    pub restarting: bool,
    /// Stopped by the user (`stop`, `kill`): `unless-stopped` and
    /// `always` leave it stopped until the user starts it again.
    #[serde(default)]
    pub manually_stopped: bool,
    /// What is mounted into the container besides its image (volumes,
    /// binds, tmpfs), in docker's `Mounts` shape.
    #[serde(default)]
    pub mounts: Vec<MountPoint>,
    /// Volumes made for this container alone (`-v /path`, the image's
    /// VOLUMEs): removed with it by `rm -v` and `--rm`.
    #[serde(default)]
    pub anonymous_volumes: Vec<String>,
    /// `--network-alias`: more names of the container on its main network.
    #[serde(default)]
    pub network_aliases: Vec<String>,
    /// Networks joined besides the main one (`network connect`), as the
    /// network code serialized them (for berth: the network, its aliases,
    /// a requested address and, while connected, the endpoint).
    #[serde(default)]
    pub connections: Vec<serde_json::Value>,
    /// `--ip`: the address asked for on the main network.
    #[serde(default)]
    pub requested_ip: Option<String>,
    /// The container's user namespace (`None`: the host's): how its uids
    /// and gids map to the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_maps: Option<IdMaps>,
    /// `--mac-address`: the MAC of its interface on the main network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// Set when a checkpoint ended the container: its end is then neither
    /// a reason to restart it nor to remove it (`--rm`), and a restore
    /// takes its address again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointMark>,
}

/// When a checkpoint ended a container, and the address it had.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMark {
    pub at: Timestamp,
    #[serde(default)]
    pub ip: Option<String>,
}

/// A user namespace's uid and gid maps.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IdMaps {
    pub uid: Vec<IdRange>,
    pub gid: Vec<IdRange>,
}

/// `size` ids from `container_id` in the container are `host_id`.. on the
/// host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

impl IdMaps {
    /// The host id that container id `id` maps to through `ranges`.
    pub fn to_host(ranges: &[IdRange], id: u32) -> Option<u32> {
        ranges
            .iter()
            .find(|r| id >= r.container_id && id - r.container_id < r.size)
            .map(|r| r.host_id + (id - r.container_id))
    }

    /// The container id that host id `id` is, through `ranges`.
    pub fn to_container(ranges: &[IdRange], id: u32) -> Option<u32> {
        ranges
            .iter()
            .find(|r| id >= r.host_id && id - r.host_id < r.size)
            .map(|r| r.container_id + (id - r.host_id))
    }

    /// The host uid and gid of the container's root.
    pub fn root(&self) -> Option<(u32, u32)> {
        Some((Self::to_host(&self.uid, 0)?, Self::to_host(&self.gid, 0)?))
    }
}

/// docker's `--restart` policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "name")]
pub enum RestartPolicy {
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max_retries` times (0:
    /// without limit).
    OnFailure {
        max_retries: u32,
    },
    Always,
    UnlessStopped,
}

impl RestartPolicy {
    /// Parse docker's syntax: `no`, `on-failure[:N]`, `always`,
    /// `unless-stopped`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once(':') {
            None => match text {
                "no" | "" => Some(RestartPolicy::No),
                "on-failure" => Some(RestartPolicy::OnFailure { max_retries: 0 }),
                "always" => Some(RestartPolicy::Always),
                "unless-stopped" => Some(RestartPolicy::UnlessStopped),
                _ => None,
            },
            Some(("on-failure", n)) => n
                .parse()
                .ok()
                .map(|max_retries| RestartPolicy::OnFailure { max_retries }),
            Some(_) => None,
        }
    }

    /// docker's name (`on-failure` without the count).
    pub fn name(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::OnFailure { max_retries } if *max_retries > 0 => {
                write!(f, "on-failure:{max_retries}")
            }
            other => f.write_str(other.name()),
        }
    }
}

/// One entry of docker's `Mounts` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountPoint {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The volume's name (volumes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The host path (empty for a tmpfs).
    pub source: String,
    pub destination: String,
    /// The volume's driver (volumes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The mode text as given (`ro`, `rw`, ...; empty when none).
    #[serde(default)]
    pub mode: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    /// Bind propagation (`rprivate` by default; empty for the others).
    #[serde(default)]
    pub propagation: String,
}

/// Resource limits of a container (`None`: not limited).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub memory: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub cpus: Option<f64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids_limit: Option<u64>,
}

impl ContainerRecord {
    /// A fresh record in the `Created` state; the caller fills in the rest.
    pub fn new(id: String, name: String, image: String) -> Self {
        ContainerRecord {
            id,
            name,
            image,
            image_id: String::new(),
            command: Vec::new(),
            env: Vec::new(),
            hostname: String::new(),
            workdir: None,
            tty: false,
            interactive: false,
            auto_remove: false,
            created: Timestamp::now(),
            status: Status::Created,
            pid: None,
            pid_start_time: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            oom_killed: false,
            detached: false,
            monitor_pid: None,
            monitor_start_time: None,
            volumes: Vec::new(),
            log_limits: crate::LogLimits::default(),
            limits: Limits::default(),
            cgroup_parent: None,
            privileged: false,
            capabilities: None,
            no_new_privileges: false,
            seccomp_profile: None,
            stop_signal: None,
            stop_timeout: None,
            labels: Default::default(),
            extra_hosts: Vec::new(),
            dns: Vec::new(),
            dns_search: Vec::new(),
            dns_options: Vec::new(),
            cgroup: None,
            network_mode: String::new(),
            network: None,
            publish: Vec::new(),
            joined_namespaces: Default::default(),
            init: false,
            restart_policy: RestartPolicy::No,
            restart_count: 0,
            restarting: false,
            manually_stopped: false,
            mounts: Vec::new(),
            anonymous_volumes: Vec::new(),
            network_aliases: Vec::new(),
            connections: Vec::new(),
            requested_ip: None,
            id_maps: None,
            mac_address: None,
            checkpoint: None,
        }
    }

    /// The first 12 hex digits, as `ps` shows them.
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    /// Record that the container's PID 1 started.
    pub fn mark_running(&mut self, pid: i32, pid_start_time: Option<u64>) {
        self.status = Status::Running;
        self.restarting = false;
        self.pid = Some(pid);
        self.pid_start_time = pid_start_time;
        self.started_at = Some(Timestamp::now());
    }

    /// Record that the container ended with `exit_code` (docker's numbering:
    /// 128+N for a death by signal N).
    pub fn mark_exited(&mut self, exit_code: i32) {
        self.status = Status::Exited;
        self.pid = None;
        self.pid_start_time = None;
        self.monitor_pid = None;
        self.monitor_start_time = None;
        self.exit_code = Some(exit_code);
        self.finished_at = Some(Timestamp::now());
    }

    /// Whether the restart policy starts the container again after it
    /// ended with `exit_code` (docker's rules: `on-failure` only after a
    /// failure and within its count; never after the user stopped it).
    pub fn restart_wanted(&self, exit_code: i32) -> bool {
        if self.manually_stopped || self.auto_remove || self.checkpoint.is_some() {
            return false;
        }
        match self.restart_policy {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { max_retries } => {
                exit_code != 0 && (max_retries == 0 || self.restart_count < max_retries)
            }
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }

    /// Whether the record claims a live process (running or paused).
    pub fn is_active(&self) -> bool {
        matches!(self.status, Status::Running | Status::Paused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record is read by people (`berth inspect`) and other tools: its
    /// JSON shape is a reviewed snapshot.
    #[test]
    fn record_json_shape() {
        let mut record = ContainerRecord::new("ab".repeat(32), "web".into(), "busybox".into());
        record.created = Timestamp::from_unix(1_795_296_655, 0);
        record.command = vec!["sh".into()];
        record.env = vec!["PATH=/bin".into()];
        record.hostname = "abababababab".into();
        record.limits.memory = Some(64 << 20);
        record.mark_running(42, Some(7));
        record.started_at = Some(Timestamp::from_unix(1_795_296_656, 0));
        record.mounts = vec![MountPoint {
            kind: "volume".into(),
            name: Some("data".into()),
            source: "/var/lib/berth/volumes/data/_data".into(),
            destination: "/data".into(),
            driver: Some("local".into()),
            mode: "z".into(),
            rw: true,
            propagation: String::new(),
        }];
        record.anonymous_volumes = vec!["cd".repeat(32)];
        let range = |host_id| IdRange {
            container_id: 0,
            host_id,
            size: 65536,
        };
        record.id_maps = Some(IdMaps {
            uid: vec![range(100_000)],
            gid: vec![range(200_000)],
        });
        insta::assert_json_snapshot!(record);
    }

    #[test]
    fn records_from_older_versions_still_load() {
        let old = r#"{"id":"x","name":"n","image":"busybox","created":"2026-11-21T21:30:55Z","status":"exited"}"#;
        let record: ContainerRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.status, Status::Exited);
        assert_eq!(record.log_limits, crate::LogLimits::default());
    }

    #[test]
    fn restart_policies_parse_as_docker_writes_them() {
        assert_eq!(RestartPolicy::parse("no"), Some(RestartPolicy::No));
        assert_eq!(
            RestartPolicy::parse("on-failure:3"),
            Some(RestartPolicy::OnFailure { max_retries: 3 })
        );
        assert_eq!(
            RestartPolicy::parse("on-failure"),
            Some(RestartPolicy::OnFailure { max_retries: 0 })
        );
        assert_eq!(RestartPolicy::parse("always"), Some(RestartPolicy::Always));
        assert_eq!(
            RestartPolicy::parse("unless-stopped"),
            Some(RestartPolicy::UnlessStopped)
        );
        for bad in ["sometimes", "on-failure:x", "always:2", "on-failure:-1"] {
            assert_eq!(RestartPolicy::parse(bad), None, "{bad}");
        }
        assert_eq!(
            RestartPolicy::OnFailure { max_retries: 3 }.to_string(),
            "on-failure:3"
        );
    }

    #[test]
    fn restart_follows_the_policy_and_the_user() {
        let mut record = ContainerRecord::new("a".repeat(64), "c".into(), "busybox".into());
        assert!(!record.restart_wanted(1));
        record.restart_policy = RestartPolicy::OnFailure { max_retries: 2 };
        assert!(record.restart_wanted(1));
        assert!(!record.restart_wanted(0));
        record.restart_count = 2;
        assert!(!record.restart_wanted(1));
        record.restart_policy = RestartPolicy::Always;
        assert!(record.restart_wanted(0));
        record.manually_stopped = true;
        assert!(!record.restart_wanted(0));
    }
}
