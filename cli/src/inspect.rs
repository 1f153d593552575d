//! `berth inspect`: containers in the shape of docker's `ContainerJSON`
//! (what scripts written for `docker inspect` read), images as
//! `image inspect` has them, and `--format` templates over either.

use std::collections::BTreeMap;

use anyhow::bail;
use berth_state::{ContainerRecord, RestartPolicy, Status, Timestamp};
use serde_json::{json, Value};

use crate::args::InspectArgs;
use crate::container::find;
use crate::format::{to_value, Fields, Format};
use crate::paths::Paths;

/// `berth inspect [--type container|image] [-f FORMAT] NAME...`: every
/// target is looked up before anything is printed, so a missing one
/// prints nothing but its error.
pub fn inspect(paths: &Paths, args: &InspectArgs) -> anyhow::Result<i32> {
    let kind = match args.kind.as_deref() {
        None | Some("") => None,
        Some(kind @ ("container" | "image")) => Some(kind),
        Some(other) => bail!("invalid --type {other:?}: use container or image"),
    };
    let format = args
        .format
        .as_deref()
        .map(|text| Format::parse(text, "", Fields::Open))
        .transpose()?;
    let store = paths.containers()?;
    let images = paths.images()?;
    let mut found = Vec::new();
    for target in &args.targets {
        let container = match kind {
            Some("image") => None,
            _ => match find(&store, target) {
                Ok(record) => Some(record),
                Err(e) => match e.downcast_ref::<berth_state::StateError>() {
                    Some(berth_state::StateError::NotFound { .. }) => None,
                    _ => return Err(e),
                },
            },
        };
        if let Some(record) = container {
            let dir = store.container_dir(&record.id);
            let spec = read_spec(&dir.join("spec.json"));
            let network_id = crate::network::endpoint_of(&record).and_then(|endpoint| {
                berth_net::NetworkStore::new(paths.networks_dir())
                    .get(&endpoint.network)
                    .ok()
                    .map(|n| n.id)
            });
            let mut value = container_json(&record, network_id.as_deref(), spec.as_ref());
            for (name, network) in crate::network::connected_networks_json(paths, &record) {
                value["NetworkSettings"]["Networks"][name] = network;
            }
            add_paths(&mut value, &record, &dir);
            if args.size {
                let written = crate::ps::tree_size(&store.layer_dir(&record.id).join("upper"));
                let image = images
                    .resolve(&record.image_id)
                    .map(|i| i.size())
                    .unwrap_or(0);
                value["SizeRw"] = json!(written);
                value["SizeRootFs"] = json!(written + image);
            }
            found.push(value);
            continue;
        }
        if kind != Some("container") {
            if let Ok(image) = images.resolve(target) {
                found.push(crate::images::inspect_json(&image));
                continue;
            }
        }
        match kind {
            Some(kind) => bail!("no such {kind}: {target}"),
            None => bail!("no such container or image: {target}"),
        }
    }
    let text = match format {
        Some(format) => {
            let items: Vec<_> = found.iter().map(to_value).collect();
            format.render(&[], &items)?
        }
        None => docker_indented(&Value::Array(found))? + "\n",
    };
    crate::exit::write_stdout(&text)?;
    Ok(0)
}

/// Where the container's files are on the host: its log and the
/// /etc files berth writes for it (none of its own for resolv.conf and
/// hosts when it shares another container's network).
fn add_paths(value: &mut Value, record: &ContainerRecord, dir: &std::path::Path) {
    value["LogPath"] = json!(dir.join("container.log"));
    let shares_network = record.network_mode.starts_with("container:");
    for (field, file) in [
        ("ResolvConfPath", "resolv.conf"),
        ("HostnamePath", "hostname"),
        ("HostsPath", "hosts"),
    ] {
        value[field] = if shares_network && file != "hostname" {
            json!("")
        } else {
            json!(dir.join(file))
        };
    }
}

/// JSON as docker's `inspect` prints it: indented by four spaces, each
/// object's fields in the order of docker's Go structs (the rest after
/// them, sorted), so the output reads like docker's side by side.
fn docker_indented(value: &Value) -> anyhow::Result<String> {
    let mut out = String::new();
    write_ordered(&mut out, value, &mut Vec::new(), 0)?;
    Ok(out)
}

/// Field order of docker's structs, by where the object sits.
fn field_order(path: &[String]) -> &'static [&'static str] {
    let names: Vec<&str> = path.iter().map(String::as_str).collect();
    match names.as_slice() {
        // The container and the image inspect objects.
        [_] => &[
            "Id",
            "RepoTags",
            "RepoDigests",
            "Created",
            "Path",
            "Args",
            "State",
            "Image",
            "ResolvConfPath",
            "HostnamePath",
            "HostsPath",
            "LogPath",
            "Name",
            "RestartCount",
            "Driver",
            "Platform",
            "HostConfig",
            "SizeRw",
            "SizeRootFs",
            "Mounts",
            "Author",
            "Config",
            "Architecture",
            "Os",
            "Size",
            "NetworkSettings",
            "RootFS",
        ],
        [_, "State"] => &[
            "Status",
            "Running",
            "Paused",
            "Restarting",
            "OOMKilled",
            "Dead",
            "Pid",
            "ExitCode",
            "Error",
            "StartedAt",
            "FinishedAt",
        ],
        [_, "Config"] => &[
            "Hostname",
            "Domainname",
            "User",
            "AttachStdin",
            "AttachStdout",
            "AttachStderr",
            "ExposedPorts",
            "Tty",
            "OpenStdin",
            "StdinOnce",
            "Env",
            "Cmd",
            "Image",
            "Volumes",
            "WorkingDir",
            "Entrypoint",
            "OnBuild",
            "Labels",
            "StopSignal",
            "StopTimeout",
        ],
        [_, "HostConfig"] => &[
            "Binds",
            "ContainerIDFile",
            "LogConfig",
            "NetworkMode",
            "PortBindings",
            "RestartPolicy",
            "AutoRemove",
            "CapAdd",
            "CapDrop",
            "Dns",
            "DnsOptions",
            "DnsSearch",
            "ExtraHosts",
            "IpcMode",
            "PidMode",
            "Privileged",
            "ReadonlyRootfs",
            "SecurityOpt",
            "UTSMode",
            "CgroupParent",
            "CpuShares",
            "Memory",
            "NanoCpus",
            "CpusetCpus",
            "CpusetMems",
            "PidsLimit",
            "Init",
            "UsernsMode",
            "IDMappings",
        ],
        [_, "HostConfig", "RestartPolicy"] => &["Name", "MaximumRetryCount"],
        [_, "HostConfig", "LogConfig"] => &["Type", "Config"],
        [_, "Mounts", _] => &[
            "Type",
            "Name",
            "Source",
            "Destination",
            "Driver",
            "Mode",
            "RW",
            "Propagation",
        ],
        [_, "NetworkSettings"] => &[
            "Bridge",
            "SandboxID",
            "Ports",
            "Gateway",
            "IPAddress",
            "IPPrefixLen",
            "MacAddress",
            "Networks",
            "GlobalIPv6Address",
            "GlobalIPv6PrefixLen",
            "IPv6Gateway",
        ],
        [_, "NetworkSettings", "Networks", _] => &[
            "Aliases",
            "MacAddress",
            "NetworkID",
            "EndpointID",
            "Gateway",
            "IPAddress",
            "IPPrefixLen",
            "GlobalIPv6Address",
            "GlobalIPv6PrefixLen",
            "IPv6Gateway",
        ],
        [_, "RootFS"] => &["Type", "Layers"],
        _ => &[],
    }
}

fn write_ordered(
    out: &mut String,
    value: &Value,
    path: &mut Vec<String>,
    depth: usize,
) -> anyhow::Result<()> {
    let indent = |depth: usize| "    ".repeat(depth);
    match value {
        Value::Object(map) if !map.is_empty() => {
            let order = field_order(path);
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| {
                (
                    order.iter().position(|o| o == k).unwrap_or(order.len()),
                    k.as_str(),
                )
            });
            out.push_str("{\n");
            for (i, key) in keys.iter().enumerate() {
                out.push_str(&indent(depth + 1));
                out.push_str(&serde_json::to_string(key)?);
                out.push_str(": ");
                path.push((*key).clone());
                write_ordered(out, &map[key.as_str()], path, depth + 1)?;
                path.pop();
                out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
            }
            out.push_str(&indent(depth));
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&indent(depth + 1));
                path.push(i.to_string());
                write_ordered(out, item, path, depth + 1)?;
                path.pop();
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&indent(depth));
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar)?),
    }
    Ok(())
}

/// The container's OCI spec as kept in its directory (for what the
/// record does not repeat: the user, a read-only root).
fn read_spec(path: &std::path::Path) -> Option<oci_spec::runtime::Spec> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// A time as Go's RFC 3339 with nanoseconds prints it (trailing zeros of
/// the fraction left out); docker's zero time when there is none.
pub fn go_time(time: Option<Timestamp>) -> String {
    let Some(time) = time else {
        return "0001-01-01T00:00:00Z".to_owned();
    };
    let text = time.to_string();
    match text.split_once('.') {
        Some((seconds, fraction)) => {
            let digits = fraction.trim_end_matches('Z').trim_end_matches('0');
            if digits.is_empty() {
                format!("{seconds}Z")
            } else {
                format!("{seconds}.{digits}Z")
            }
        }
        None => text,
    }
}

/// docker's State.Status word.
pub fn state_word(record: &ContainerRecord) -> &'static str {
    match record.status {
        Status::Exited if record.restarting => "restarting",
        Status::Created => "created",
        Status::Running => "running",
        Status::Paused => "paused",
        Status::Exited => "exited",
    }
}

/// `-v` entries as docker's Mounts.
fn mounts(volumes: &[String]) -> Vec<Value> {
    volumes
        .iter()
        .filter_map(|spec| {
            let mut parts = spec.splitn(3, ':');
            let (source, destination) = (parts.next()?, parts.next()?);
            let mode = parts.next().unwrap_or("");
            let read_only = mode.split(',').any(|m| m == "ro");
            Some(if source.starts_with('/') {
                json!({
                    "Type": "bind",
                    "Source": source,
                    "Destination": destination,
                    "Mode": mode,
                    "RW": !read_only,
                    "Propagation": "rprivate",
                })
            } else {
                json!({
                    "Type": "volume",
                    "Name": source,
                    "Source": "",
                    "Destination": destination,
                    "Driver": "local",
                    "Mode": mode,
                    "RW": !read_only,
                    "Propagation": "",
                })
            })
        })
        .collect()
}

/// docker's port map: `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}`;
/// `any_address` is what a binding on every address shows as HostIp
/// (`""` in HostConfig.PortBindings, `0.0.0.0` once published).
fn port_map<'a>(
    mappings: impl Iterator<Item = &'a berth_net::PortMapping>,
    any_address: &str,
) -> BTreeMap<String, Value> {
    let mut ports: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for mapping in mappings {
        let host_ip = if mapping.host_ip.is_unspecified() {
            any_address.to_owned()
        } else {
            mapping.host_ip.to_string()
        };
        ports
            .entry(format!("{}/{}", mapping.container_port, mapping.protocol))
            .or_default()
            .push(json!({"HostIp": host_ip, "HostPort": host_port_text(mapping)}));
    }
    ports
        .into_iter()
        .map(|(k, v)| (k, Value::Array(v)))
        .collect()
}

/// A binding's host port; none given (`-p 80`, 0 in the record) is
/// docker's "" (the engine picks one when the container starts), a range
/// to pick from is `8000-8010`.
fn host_port_text(mapping: &berth_net::PortMapping) -> String {
    match (mapping.host_port, mapping.host_port_end) {
        (0, _) => String::new(),
        (port, 0) => port.to_string(),
        (first, last) => format!("{first}-{last}"),
    }
}

/// The capabilities kept, against docker's default set: what was added
/// and what was dropped (names without `CAP_`, as the user gives them).
fn capability_changes(record: &ContainerRecord) -> (Value, Value) {
    let Some(kept) = record.capabilities.as_ref().filter(|_| !record.privileged) else {
        return (Value::Null, Value::Null);
    };
    let defaults: Vec<&str> = berth_ns::capabilities::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| c.name())
        .collect();
    let short = |name: &str| name.trim_start_matches("CAP_").to_owned();
    let added: Vec<String> = kept
        .iter()
        .filter(|c| !defaults.contains(&c.as_str()))
        .map(|c| short(c))
        .collect();
    let dropped: Vec<String> = defaults
        .iter()
        .filter(|d| !kept.iter().any(|c| c == *d))
        .map(|d| short(d))
        .collect();
    let list = |names: Vec<String>| {
        if names.is_empty() {
            Value::Null
        } else {
            json!(names)
        }
    };
    (list(added), list(dropped))
}

/// docker's `ContainerJSON` of a container, from its record, the id of the
/// network it is on, and its OCI spec.
pub fn container_json(
    record: &ContainerRecord,
    network_id: Option<&str>,
    spec: Option<&oci_spec::runtime::Spec>,
) -> Value {
    let endpoint = crate::network::endpoint_of(record);
    let running = record.is_active();
    let (path, args) = match record.command.split_first() {
        Some((path, args)) => (path.clone(), args.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let user = spec
        .and_then(|s| s.process().as_ref())
        .map(|p| (p.user().uid(), p.user().gid()))
        .filter(|&(uid, gid)| (uid, gid) != (0, 0))
        .map(|(uid, gid)| format!("{uid}:{gid}"))
        .unwrap_or_default();
    let read_only = spec
        .and_then(|s| s.root().as_ref())
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let published: Vec<berth_net::PortMapping> = record
        .publish
        .iter()
        .filter_map(|p| berth_net::parse_publish(p).ok())
        .flatten()
        .collect();
    let network_mode = if record.network_mode.is_empty() {
        "bridge"
    } else {
        record.network_mode.as_str()
    };
    let mut security_opt = Vec::new();
    if record.no_new_privileges {
        security_opt.push("no-new-privileges".to_owned());
    }
    if record.seccomp_profile.as_deref() == Some("unconfined") {
        security_opt.push("seccomp=unconfined".to_owned());
    }
    let (cap_add, cap_drop) = capability_changes(record);
    let namespace_mode = |kind: &str| {
        record
            .joined_namespaces
            .get(kind)
            .cloned()
            .unwrap_or_default()
    };
    let restart_retries = match record.restart_policy {
        RestartPolicy::OnFailure { max_retries } => max_retries,
        _ => 0,
    };
    let (ip, prefix, gateway, mac) = endpoint.as_ref().map_or_else(
        || (String::new(), 0, String::new(), String::new()),
        |e| {
            (
                e.ip.to_string(),
                e.prefix_len,
                e.gateway.to_string(),
                e.mac.to_string(),
            )
        },
    );
    // docker's empty values on a network without IPv6.
    let (ipv6, ipv6_prefix, ipv6_gateway) = endpoint.as_ref().map_or_else(
        || (String::new(), 0, String::new()),
        |e| {
            let text =
                |ip: Option<std::net::Ipv6Addr>| ip.map(|ip| ip.to_string()).unwrap_or_default();
            (
                text(e.ipv6),
                e.ipv6_prefix_len.unwrap_or(0),
                text(e.ipv6_gateway),
            )
        },
    );
    let networks: BTreeMap<String, Value> = endpoint
        .as_ref()
        .map(|e| {
            (
                e.network.clone(),
                json!({
                    "NetworkID": network_id.unwrap_or_default(),
                    "EndpointID": "",
                    "Aliases": record.network_aliases,
                    "Gateway": gateway,
                    "IPAddress": ip,
                    "IPPrefixLen": prefix,
                    "MacAddress": mac,
                    "GlobalIPv6Address": ipv6,
                    "GlobalIPv6PrefixLen": ipv6_prefix,
                    "IPv6Gateway": ipv6_gateway,
                }),
            )
        })
        .into_iter()
        .collect();
    let network_ports = endpoint
        .as_ref()
        .map(|e| port_map(e.ports.iter(), "0.0.0.0"))
        .unwrap_or_default();
    let log_config: BTreeMap<&str, String> = BTreeMap::from([
        ("max-size", record.log_limits.max_size.to_string()),
        ("max-file", record.log_limits.max_files.to_string()),
    ]);
    let id_mappings = record.id_maps.as_ref().map(|maps| {
        let lines = |ranges: &[berth_state::IdRange]| {
            ranges
                .iter()
                .map(|r| format!("{}:{}:{}", r.container_id, r.host_id, r.size))
                .collect::<Vec<_>>()
        };
        json!({"UidMap": lines(&maps.uid), "GidMap": lines(&maps.gid)})
    });
    json!({
        "Id": record.id,
        "Created": go_time(Some(record.created)),
        "Path": path,
        "Args": args,
        "State": {
            "Status": state_word(record),
            "Running": running,
            "Paused": record.status == Status::Paused,
            "Restarting": record.restarting,
            "OOMKilled": record.oom_killed,
            "Dead": false,
            "Pid": if running { record.pid.unwrap_or(0) } else { 0 },
            "ExitCode": record.exit_code.unwrap_or(0),
            "Error": "",
            "StartedAt": go_time(record.started_at),
            "FinishedAt": go_time(record.finished_at),
        },
        "Image": format!("sha256:{}", record.image_id),
        "Name": format!("/{}", record.name),
        "RestartCount": record.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {
            "Binds": if record.volumes.is_empty() { Value::Null } else { json!(record.volumes) },
            "LogConfig": {"Type": "json-file", "Config": log_config},
            "NetworkMode": network_mode,
            "PortBindings": port_map(published.iter(), ""),
            "RestartPolicy": {
                "Name": record.restart_policy.name(),
                "MaximumRetryCount": restart_retries,
            },
            "AutoRemove": record.auto_remove,
            "CapAdd": cap_add,
            "CapDrop": cap_drop,
            "Dns": record.dns,
            "DnsOptions": record.dns_options,
            "DnsSearch": record.dns_search,
            "ExtraHosts": if record.extra_hosts.is_empty() { Value::Null } else { json!(record.extra_hosts) },
            "IpcMode": namespace_mode("ipc"),
            "PidMode": namespace_mode("pid"),
            "UTSMode": namespace_mode("uts"),
            "Privileged": record.privileged,
            "ReadonlyRootfs": read_only,
            "SecurityOpt": if security_opt.is_empty() { Value::Null } else { json!(security_opt) },
            "CgroupParent": record.cgroup_parent.clone().unwrap_or_default(),
            "Memory": record.limits.memory.unwrap_or(0),
            "NanoCpus": record.limits.cpus.map_or(0, |cpus| (cpus * 1e9).round() as i64),
            "CpuShares": record.limits.cpu_shares.unwrap_or(0),
            "CpusetCpus": record.limits.cpuset_cpus.clone().unwrap_or_default(),
            "CpusetMems": record.limits.cpuset_mems.clone().unwrap_or_default(),
            "PidsLimit": record.limits.pids_limit,
            "Init": record.init,
            // docker's: "" for the host's; a mapped container's in
            // podman's words and form.
            "UsernsMode": if record.id_maps.is_some() { "private" } else { "" },
            "IDMappings": id_mappings,
        },
        "Mounts": if record.mounts.is_empty() {
            // A record from before `mounts`.
            json!(mounts(&record.volumes))
        } else {
            json!(record.mounts)
        },
        "Config": {
            "Hostname": record.hostname,
            "Domainname": "",
            "User": user,
            "AttachStdin": record.interactive && !record.detached,
            "AttachStdout": !record.detached,
            "AttachStderr": !record.detached,
            "Tty": record.tty,
            "OpenStdin": record.interactive,
            "StdinOnce": record.interactive && !record.detached,
            "Env": record.env,
            "Cmd": record.command,
            "Image": record.image,
            "Volumes": Value::Null,
            "WorkingDir": record.workdir.clone().unwrap_or_default(),
            "Entrypoint": Value::Null,
            "Labels": record.labels,
            "StopSignal": record.stop_signal.clone().unwrap_or_else(|| "SIGTERM".to_owned()),
            "StopTimeout": record.stop_timeout,
        },
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": "",
            "Ports": network_ports,
            "Gateway": gateway,
            "IPAddress": ip,
            "IPPrefixLen": prefix,
            "MacAddress": mac,
            "Networks": networks,
            "GlobalIPv6Address": ipv6,
            "GlobalIPv6PrefixLen": ipv6_prefix,
            "IPv6Gateway": ipv6_gateway,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A running container on the default network with one published
    /// port, a volume and a label, at fixed times.
    fn fixture() -> ContainerRecord {
        let mut record = ContainerRecord::new("ab".repeat(32), "web".into(), "busybox".into());
        record.image_id = "cd".repeat(32);
        record.created = Timestamp::from_unix(1_795_296_655, 123_400_000);
        record.command = vec!["sh".into(), "-c".into(), "httpd -f".into()];
        record.env = vec!["PATH=/bin".into()];
        record.hostname = "abababababab".into();
        record.detached = true;
        record.limits.memory = Some(64 << 20);
        record.limits.cpus = Some(0.5);
        record.volumes = vec!["/srv/data:/data:ro".into()];
        record.labels.insert("team".into(), "web".into());
        record.publish = vec![
            "8080:80".into(),
            "53/udp".into(),
            "127.0.0.1:9000-9001:90-91".into(),
            "7000-7010:70".into(),
        ];
        record.network_mode = "bridge".into();
        record.restart_policy = RestartPolicy::OnFailure { max_retries: 3 };
        record.capabilities = Some(
            berth_ns::capabilities::DEFAULT_CAPABILITIES
                .iter()
                .map(|c| c.name().to_owned())
                .filter(|c| c != "CAP_NET_RAW")
                .chain(["CAP_NET_ADMIN".to_owned()])
                .collect(),
        );
        record.network = Some(json!({
            "network": "bridge",
            "container_id": record.id,
            "ip": "172.17.0.2",
            "prefix_len": 16,
            "gateway": "172.17.0.1",
            "mac": "02:42:ac:11:00:02",
            "bridge": "berth0",
            "host_veth": "veth0",
            "container_ifname": "eth0",
            "ports": [
                {"host_port": 8080, "container_port": 80, "protocol": "tcp"},
                {"host_port": 32768, "container_port": 53, "protocol": "udp"},
                {"host_ip": "127.0.0.1", "host_port": 9000, "container_port": 90, "protocol": "tcp"},
                {"host_ip": "127.0.0.1", "host_port": 9001, "container_port": 91, "protocol": "tcp"},
                {"host_port": 7003, "container_port": 70, "protocol": "tcp"},
            ],
        }));
        record.mark_running(4242, Some(7));
        record.started_at = Some(Timestamp::from_unix(1_795_296_656, 0));
        record
    }

    /// The shape scripts read: a reviewed snapshot.
    #[test]
    fn container_shape() {
        let value = container_json(&fixture(), Some(&"ef".repeat(32)), None);
        insta::assert_json_snapshot!(value);
    }

    /// The printed JSON has docker's field order and four-space indent,
    /// and is the same JSON.
    #[test]
    fn printed_like_dockers_inspect() {
        let value = Value::Array(vec![container_json(&fixture(), None, None)]);
        let text = docker_indented(&value).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
        let top: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("        \"") && !l.starts_with("         "))
            .map(|l| l.trim().split('"').nth(1).unwrap())
            .collect();
        assert_eq!(
            top[..7],
            ["Id", "Created", "Path", "Args", "State", "Image", "Name"]
        );
        assert_eq!(top.last(), Some(&"NetworkSettings"));
        let state = text.find("\"Status\": \"running\"").unwrap();
        assert!(state < text.find("\"Pid\"").unwrap());
        assert!(text.starts_with("[\n    {\n        \"Id\": "), "{text}");
    }

    #[test]
    fn exited_containers_have_no_pid_and_their_exit_code() {
        let mut record = fixture();
        record.mark_exited(3);
        record.finished_at = Some(Timestamp::from_unix(1_795_296_700, 5));
        let value = container_json(&record, None, None);
        assert_eq!(value["State"]["Status"], "exited");
        assert_eq!(value["State"]["Running"], false);
        assert_eq!(value["State"]["Pid"], 0);
        assert_eq!(value["State"]["ExitCode"], 3);
        assert_eq!(
            value["State"]["FinishedAt"],
            "2026-11-21T21:31:40.000000005Z"
        );
    }

    #[test]
    fn times_read_as_go_prints_them() {
        assert_eq!(go_time(None), "0001-01-01T00:00:00Z");
        assert_eq!(
            go_time(Some(Timestamp::from_unix(1_795_296_655, 0))),
            "2026-11-21T21:30:55Z"
        );
        assert_eq!(
            go_time(Some(Timestamp::from_unix(1_795_296_655, 120_000_000))),
            "2026-11-21T21:30:55.12Z"
        );
    }

    /// `--format` templates from docker's documentation, over the shape.
    #[test]
    fn docker_documented_templates_over_the_shape() {
        let value = to_value(&container_json(&fixture(), None, None));
        let render = |template: &str| {
            Format::parse(template, "", Fields::Open)
                .unwrap()
                .render(&[], std::slice::from_ref(&value))
                .unwrap()
        };
        assert_eq!(render("{{.Name}} {{.State.Status}}"), "/web running\n");
        assert_eq!(
            render("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"),
            "172.17.0.2\n"
        );
        assert_eq!(render("{{.NetworkSettings.IPAddress}}"), "172.17.0.2\n");
        assert_eq!(render("{{json .Config.Env}}"), "[\"PATH=/bin\"]\n");
        assert_eq!(render(r#"{{index .Config.Labels "team"}}"#), "web\n");
        assert_eq!(
            render(r#"{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}"#),
            "8080\n"
        );
        assert_eq!(
            render("{{range $p, $conf := .NetworkSettings.Ports}}{{$p}} -> {{(index $conf 0).HostIp}}:{{(index $conf 0).HostPort}}, {{end}}"),
            "53/udp -> 0.0.0.0:32768, 70/tcp -> 0.0.0.0:7003, 80/tcp -> 0.0.0.0:8080, \
             90/tcp -> 127.0.0.1:9000, 91/tcp -> 127.0.0.1:9001, \n"
        );
        assert_eq!(
            render("{{.State.Pid}} {{.HostConfig.RestartPolicy.Name}}"),
            "4242 on-failure\n"
        );
        assert_eq!(render("{{json .HostConfig.CapAdd}}"), "[\"NET_ADMIN\"]\n");
    }
}
