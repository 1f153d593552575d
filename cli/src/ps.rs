//! `berth ps`: docker's columns, placeholders, filters and limits.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::bail;
use berth_state::{ContainerRecord, Status, Timestamp};
use serde_json::json;

use crate::args::PsArgs;
use crate::container::{self, status_text};
use crate::format::{to_value, with_label_method, Fields, Format};
use crate::inspect::state_word;
use crate::paths::Paths;
use crate::table::{human_duration, human_size};

/// docker's default `ps` table.
const DEFAULT_TABLE: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

/// The column titles of docker's placeholders.
const HEADER: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("State", "STATE"),
    ("LocalVolumes", "LOCAL VOLUMES"),
];

pub fn ps(paths: &Paths, args: &PsArgs) -> anyhow::Result<()> {
    let filters = Filters::parse(&args.filter)?;
    let format = match (args.quiet, args.format.as_deref()) {
        (true, _) => Format::parse("{{.ID}}", "", Fields::Fixed)?,
        (false, Some(text)) if !text.trim().is_empty() && text.trim() != "table" => {
            Format::parse(text, DEFAULT_TABLE, Fields::Fixed)?
        }
        _ if args.size => Format::parse(
            &format!("{DEFAULT_TABLE}\t{{{{.Size}}}}"),
            "",
            Fields::Fixed,
        )?,
        _ => Format::parse(DEFAULT_TABLE, DEFAULT_TABLE, Fields::Fixed)?,
    };
    let store = paths.containers()?;
    let (mut records, broken) = container::list_with_broken(&store)?;
    // Newest first, like docker.
    records.sort_by_key(|r| std::cmp::Reverse(r.created));
    let limit = if args.latest {
        Some(1)
    } else {
        args.last
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
    };
    let all = args.all || limit.is_some() || filters.shows_stopped();
    let images = paths.images()?;
    let resolve_image = |name: &str| images.resolve(name).ok().map(|i| i.id.hex().to_owned());
    let mut selected = Vec::new();
    for record in &records {
        if !(all || record.is_active()) || !filters.matches(record, &records, &resolve_image)? {
            continue;
        }
        selected.push(record);
        if limit.is_some_and(|n| selected.len() >= n) {
            break;
        }
    }
    let now = Timestamp::now();
    let mut items: Vec<gotmpl::Value> = selected
        .iter()
        .map(|record| {
            let size = args.size.then(|| {
                let written = tree_size(&store.layer_dir(&record.id).join("upper"));
                let image = images
                    .resolve(&record.image_id)
                    .map(|i| i.size())
                    .unwrap_or(0);
                (written, image)
            });
            let item = row(record, now, args.no_trunc, size);
            with_label_method(to_value(&item), record.labels.clone())
        })
        .collect();
    // Records that cannot be read are listed (with -a), never hide the
    // rest; a filter cannot say anything about them.
    if args.all && filters.is_empty() && limit.is_none() {
        for broken in broken {
            let id = if args.no_trunc {
                broken.id.clone()
            } else {
                broken.id.chars().take(12).collect()
            };
            let mut item = json!({});
            for (field, _) in HEADER {
                item[*field] = json!("");
            }
            item["ID"] = json!(id);
            item["Status"] = json!("Broken record (berth rm -f removes it)");
            items.push(with_label_method(to_value(&item), BTreeMap::new()));
        }
    }
    let text = format.render(HEADER, &items)?;
    crate::exit::write_stdout(&text)
}

/// One container as docker's `ps` placeholders show it.
fn row(
    record: &ContainerRecord,
    now: Timestamp,
    no_trunc: bool,
    size: Option<(u64, u64)>,
) -> serde_json::Value {
    let id = if no_trunc {
        record.id.clone()
    } else {
        record.short_id().to_owned()
    };
    let command = if no_trunc {
        format!("\"{}\"", record.command.join(" "))
    } else {
        command_text(&record.command)
    };
    let endpoint = crate::network::endpoint_of(record);
    let ports = endpoint
        .as_ref()
        .filter(|_| record.is_active())
        .map(|e| ports_text(&e.ports))
        .unwrap_or_default();
    let networks = match &endpoint {
        Some(e) => e.network.clone(),
        None if record.network_mode.is_empty() => String::new(),
        None => record.network_mode.clone(),
    };
    let labels: Vec<String> = record
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mounts: Vec<String> = record
        .volumes
        .iter()
        .filter_map(|v| v.split(':').next())
        .map(|source| {
            if no_trunc {
                source.to_owned()
            } else {
                source.chars().take(15).collect()
            }
        })
        .collect();
    let local_volumes = record
        .volumes
        .iter()
        .filter(|v| !v.starts_with('/'))
        .count();
    let size = size
        .map(|(written, image)| {
            format!(
                "{} (virtual {})",
                human_size(written),
                human_size(written + image)
            )
        })
        .unwrap_or_default();
    json!({
        "ID": id,
        "Image": record.image,
        "Command": command,
        "CreatedAt": docker_date(record.created),
        "RunningFor": format!("{} ago", human_duration(record.created.until(now))),
        "Ports": ports,
        "Status": status_text(record, now),
        "Size": size,
        "Names": record.name,
        "Labels": labels.join(","),
        "Mounts": mounts.join(","),
        "Networks": networks,
        "State": state_word(record),
        "LocalVolumes": local_volumes.to_string(),
    })
}

/// docker's PORTS column, as its `DisplayablePorts` makes it: sorted by
/// container port; mappings whose host port equals the container port
/// are grouped into runs per address and protocol
/// (`0.0.0.0:8000-8002->8000-8002/tcp`) and come first, the others follow
/// one by one (`0.0.0.0:8080->80/tcp, 127.0.0.1:5353->53/udp`).
pub fn ports_text(ports: &[berth_net::PortMapping]) -> String {
    let mut sorted: Vec<&berth_net::PortMapping> = ports.iter().collect();
    sorted.sort_by_key(|p| {
        (
            p.container_port,
            p.host_ip.to_string(),
            p.host_port,
            p.protocol,
        )
    });
    // (address, protocol) -> runs of equal host and container ports, in
    // the order the keys first appear.
    type Runs = Vec<(u16, u16)>;
    let mut groups: Vec<((String, berth_net::Protocol), Runs)> = Vec::new();
    let mut singles = Vec::new();
    for port in sorted {
        if port.host_port != port.container_port {
            singles.push(format!(
                "{}->{}/{}",
                port.host_binding(),
                port.container_port,
                port.protocol
            ));
            continue;
        }
        let key = (port.host_ip.to_string(), port.protocol);
        let current = port.container_port;
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, runs)) => match runs.last_mut() {
                Some((_, last)) if last.checked_add(1) == Some(current) => *last = current,
                _ => runs.push((current, current)),
            },
            None => groups.push((key, vec![(current, current)])),
        }
    }
    // docker emits a run when the next one of its key starts, and each
    // key's last run at the end.
    let mut finished = Vec::new();
    let mut last_runs = Vec::new();
    for ((address, protocol), runs) in &groups {
        let text = |(first, last): (u16, u16)| {
            let range = if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            };
            format!("{address}:{range}->{range}/{protocol}")
        };
        let (last, earlier) = runs.split_last().expect("a group has a run");
        finished.extend(earlier.iter().map(|run| text(*run)));
        last_runs.push(text(*last));
    }
    finished
        .into_iter()
        .chain(last_runs)
        .chain(singles)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Go's default time printing, as docker's `.CreatedAt`:
/// `2026-11-21 21:30:55 +0000 UTC`.
pub fn docker_date(time: Timestamp) -> String {
    let text = time.to_string();
    let (date, clock) = text.split_once('T').unwrap_or((&text, ""));
    let clock = clock.split(['.', 'Z']).next().unwrap_or_default();
    format!("{date} {clock} +0000 UTC")
}

/// The bytes of the regular files and links under `dir` (a container's
/// write layer), without following links; unreadable parts count as 0.
pub fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => tree_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// docker's COMMAND column: quoted, cut to 20 characters with an ellipsis.
fn command_text(command: &[String]) -> String {
    let full = command.join(" ");
    let cut: String = if full.chars().count() > 20 {
        full.chars().take(19).chain(std::iter::once('…')).collect()
    } else {
        full
    };
    format!("\"{cut}\"")
}

/// `--filter KEY=VALUE` as docker's `ps` has them: values of one key are
/// alternatives, different keys must all match.
#[derive(Debug, Default)]
struct Filters {
    by_key: BTreeMap<String, Vec<String>>,
}

const STATUSES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

impl Filters {
    fn parse(given: &[String]) -> anyhow::Result<Self> {
        let mut filters = Filters::default();
        for text in given {
            let Some((key, value)) = text.split_once('=') else {
                bail!("bad format of filter {text:?} (expected name=value)");
            };
            let key = key.trim().to_lowercase();
            match key.as_str() {
                "status" if !STATUSES.contains(&value) => bail!(
                    "invalid filter 'status={value}': use one of {}",
                    STATUSES.join(", ")
                ),
                "exited" if value.parse::<i32>().is_err() => {
                    bail!("invalid filter 'exited={value}': give an exit code")
                }
                "publish" if parse_port_filter(value).is_none() => {
                    bail!("invalid filter 'publish={value}': use PORT[/tcp|/udp]")
                }
                "status" | "exited" | "name" | "label" | "ancestor" | "id" | "before" | "since"
                | "network" | "volume" | "publish" => {}
                _ => bail!("invalid filter '{key}'"),
            }
            filters
                .by_key
                .entry(key)
                .or_default()
                .push(value.to_owned());
        }
        Ok(filters)
    }

    fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// A filter on the state or exit code looks at stopped containers
    /// without `-a`.
    fn shows_stopped(&self) -> bool {
        self.by_key.contains_key("status") || self.by_key.contains_key("exited")
    }

    fn matches(
        &self,
        record: &ContainerRecord,
        all: &[ContainerRecord],
        resolve_image: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<bool> {
        for (key, values) in &self.by_key {
            let mut any = false;
            for value in values {
                any |= match key.as_str() {
                    "status" => state_word(record) == value,
                    "exited" => {
                        record.status == Status::Exited
                            && record.exit_code.map(|c| c.to_string()).as_deref()
                                == Some(value.as_str())
                    }
                    "name" => name_matches(&record.name, value),
                    "id" => record.id.starts_with(value.as_str()),
                    "label" => match value.split_once('=') {
                        Some((k, v)) => record.labels.get(k).is_some_and(|l| l == v),
                        None => record.labels.contains_key(value.as_str()),
                    },
                    "ancestor" => {
                        record.image == *value
                            || record.image == format!("{value}:latest")
                            || resolve_image(value).is_some_and(|id| id == record.image_id)
                    }
                    "network" => {
                        crate::network::endpoint_of(record).is_some_and(|e| e.network == *value)
                            || record.network_mode == *value
                            || crate::network::connections_of(record)
                                .iter()
                                .any(|c| c.network == *value)
                    }
                    "volume" => {
                        record.volumes.iter().any(|v| {
                            let mut parts = v.split(':');
                            parts.next() == Some(value.as_str())
                                || parts.next() == Some(value.as_str())
                        }) || record.mounts.iter().any(|m| {
                            m.name.as_deref() == Some(value.as_str())
                                || m.destination == *value
                                || m.source == *value
                        })
                    }
                    "publish" => {
                        let wanted = parse_port_filter(value);
                        record
                            .publish
                            .iter()
                            .filter_map(|p| berth_net::parse_publish(p).ok())
                            .flatten()
                            .any(|m| Some((m.container_port, m.protocol)) == wanted)
                    }
                    "before" | "since" => {
                        let other = reference_point(all, value)?;
                        if key == "before" {
                            record.created < other.created
                        } else {
                            record.created > other.created
                        }
                    }
                    _ => false,
                };
            }
            if !any {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The container `before=`/`since=` name: by name first, then by id or
/// a unique id prefix (a name like `db` is also a hex prefix).
fn reference_point<'a>(
    all: &'a [ContainerRecord],
    query: &str,
) -> anyhow::Result<&'a ContainerRecord> {
    if let Some(named) = all.iter().find(|r| r.name == query) {
        return Ok(named);
    }
    let mut by_id = all.iter().filter(|r| r.id.starts_with(query));
    match (by_id.next(), by_id.next()) {
        (Some(one), None) => Ok(one),
        (Some(_), Some(_)) => bail!("{query:?} is the start of several container ids"),
        (None, _) => bail!("no such container: {query}"),
    }
}

/// `publish=PORT[/PROTO]`: a container-side port with a host binding, as
/// docker's filter matches the keys of `HostConfig.PortBindings`.
fn parse_port_filter(text: &str) -> Option<(u16, berth_net::Protocol)> {
    let (port, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
    let protocol = match protocol {
        "tcp" => berth_net::Protocol::Tcp,
        "udp" => berth_net::Protocol::Udp,
        _ => return None,
    };
    Some((port.parse().ok()?, protocol))
}

/// docker matches `name=` as a regular expression against the name; the
/// forms people use are a part of the name and `^/name$` (or `^name$`).
fn name_matches(name: &str, pattern: &str) -> bool {
    let (start, rest) = match pattern.strip_prefix('^') {
        Some(rest) => (true, rest.strip_prefix('/').unwrap_or(rest)),
        None => (false, pattern.strip_prefix('/').unwrap_or(pattern)),
    };
    let (end, body) = match rest.strip_suffix('$') {
        Some(body) => (true, body),
        None => (false, rest),
    };
    match (start, end) {
        (true, true) => name == body,
        (true, false) => name.starts_with(body),
        (false, true) => name.ends_with(body),
        (false, false) => name.contains(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_commands_are_cut() {
        assert_eq!(command_text(&["sh".into()]), "\"sh\"");
        let long: Vec<String> = ["sh", "-c", "echo hello world; sleep 100"]
            .map(String::from)
            .to_vec();
        assert_eq!(command_text(&long), "\"sh -c echo hello wo…\"");
    }

    fn record(name: &str, status: Status, created: u64) -> ContainerRecord {
        let mut record = ContainerRecord::new(
            format!("{name:0<12}").replace(|c: char| !c.is_ascii_hexdigit(), "0") + &"0".repeat(52),
            name.into(),
            "busybox".into(),
        );
        record.created = Timestamp::from_unix(created, 0);
        record.command = vec!["sleep".into(), "100".into()];
        record.status = status;
        match status {
            Status::Running => {
                record.started_at = Some(Timestamp::from_unix(created + 1, 0));
            }
            Status::Exited => {
                record.exit_code = Some(3);
                record.finished_at = Some(Timestamp::from_unix(created + 60, 0));
            }
            _ => {}
        }
        record
    }

    /// docker's default table, with the PORTS column.
    #[test]
    fn table_output() {
        let now = Timestamp::from_unix(1_795_300_000, 0);
        let mut web = record("abc", Status::Running, 1_795_296_655);
        web.network = Some(json!({
            "network": "bridge", "container_id": web.id, "ip": "172.17.0.2",
            "prefix_len": 16, "gateway": "172.17.0.1", "mac": "02:42:ac:11:00:02",
            "bridge": "berth0", "host_veth": "v", "container_ifname": "eth0",
            "ports": [{"host_port": 8080, "container_port": 80, "protocol": "tcp"}],
        }));
        let done = record("def", Status::Exited, 1_795_290_000);
        let items: Vec<_> = [&web, &done]
            .iter()
            .map(|r| to_value(&row(r, now, false, None)))
            .collect();
        let format = Format::parse(DEFAULT_TABLE, DEFAULT_TABLE, Fields::Fixed).unwrap();
        insta::assert_snapshot!(format.render(HEADER, &items).unwrap());
        let custom =
            Format::parse(r"table {{.ID}}\t{{.Status}}\t{{.State}}", "", Fields::Fixed).unwrap();
        insta::assert_snapshot!("ps_custom_table", custom.render(HEADER, &items).unwrap());
    }

    #[test]
    fn filters_select_like_dockers() {
        let mut running = record("a1", Status::Running, 10);
        running.labels.insert("tier".into(), "web".into());
        running.publish = vec!["8080:80".into()];
        running.volumes = vec!["/srv:/data:ro".into()];
        running.network_mode = "none".into();
        // Its id starts like another container's name: the name wins.
        running.id = format!("b2ff{}", "0".repeat(60));
        let exited = record("b2", Status::Exited, 20);
        let created = record("c3", Status::Created, 30);
        let all = vec![running.clone(), exited.clone(), created.clone()];
        let no_images = |_: &str| None;
        let pick = |filters: &[&str]| -> Vec<String> {
            let filters =
                Filters::parse(&filters.iter().map(|f| f.to_string()).collect::<Vec<_>>()).unwrap();
            all.iter()
                .filter(|r| filters.matches(r, &all, &no_images).unwrap())
                .map(|r| r.name.clone())
                .collect()
        };
        assert_eq!(pick(&["status=running"]), ["a1"]);
        assert_eq!(pick(&["status=running", "status=created"]), ["a1", "c3"]);
        assert_eq!(pick(&["exited=3"]), ["b2"]);
        assert_eq!(pick(&["exited=0"]), Vec::<String>::new());
        assert_eq!(pick(&["label=tier"]), ["a1"]);
        assert_eq!(pick(&["label=tier=web"]), ["a1"]);
        assert_eq!(pick(&["label=tier=db"]), Vec::<String>::new());
        assert_eq!(pick(&["name=2"]), ["b2"]);
        assert_eq!(pick(&["name=^/c3$"]), ["c3"]);
        assert_eq!(pick(&["name=^c$"]), Vec::<String>::new());
        assert_eq!(pick(&["id=b20"]), ["b2"]);
        assert_eq!(pick(&["ancestor=busybox"]), ["a1", "b2", "c3"]);
        assert_eq!(pick(&["ancestor=alpine"]), Vec::<String>::new());
        assert_eq!(pick(&["since=a1"]), ["b2", "c3"]);
        assert_eq!(pick(&["before=c3", "status=exited"]), ["b2"]);
        assert_eq!(pick(&["before=b2"]), ["a1"]);
        assert_eq!(pick(&["publish=80"]), ["a1"]);
        assert_eq!(pick(&["publish=80/udp"]), Vec::<String>::new());
        assert_eq!(pick(&["publish=8080"]), Vec::<String>::new());
        assert_eq!(pick(&["volume=/data"]), ["a1"]);
        assert_eq!(pick(&["volume=/srv"]), ["a1"]);
        assert_eq!(pick(&["network=none"]), ["a1"]);
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in [
            "status=sleeping",
            "colour=red",
            "exited=x",
            "nokey",
            "publish=http",
        ] {
            let error = Filters::parse(&[bad.to_owned()]).unwrap_err();
            assert!(!error.to_string().contains('\n'), "{bad}");
        }
    }

    fn published(specs: &[&str]) -> Vec<berth_net::PortMapping> {
        specs
            .iter()
            .flat_map(|spec| berth_net::parse_publish(spec).unwrap())
            .collect()
    }

    #[test]
    fn ports_read_like_dockers() {
        assert_eq!(
            ports_text(&published(&["8080:80", "53:53/udp"])),
            "0.0.0.0:53->53/udp, 0.0.0.0:8080->80/tcp"
        );
        assert_eq!(
            ports_text(&published(&["127.0.0.1:8080:80", "5353:53/udp"])),
            "0.0.0.0:5353->53/udp, 127.0.0.1:8080->80/tcp"
        );
        // Runs of equal host and container ports are grouped, per address
        // and protocol; a gap starts a new run.
        assert_eq!(
            ports_text(&published(&[
                "9000-9002:9000-9002",
                "9004:9004",
                "9000:9000/udp",
                "127.0.0.1:9001:9001",
                "8000-8001:80-81",
            ])),
            "0.0.0.0:9000-9002->9000-9002/tcp, 0.0.0.0:9004->9004/tcp, \
             0.0.0.0:9000->9000/udp, 127.0.0.1:9001->9001/tcp, \
             0.0.0.0:8000->80/tcp, 0.0.0.0:8001->81/tcp"
        );
        assert_eq!(ports_text(&[]), "");
    }

    #[test]
    fn created_at_reads_like_go() {
        assert_eq!(
            docker_date(Timestamp::from_unix(1_795_296_655, 5)),
            "2026-11-21 21:30:55 +0000 UTC"
        );
    }
}
