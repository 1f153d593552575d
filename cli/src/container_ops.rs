//! `berth rename`, `wait`, `port` and `top`: small questions and changes
//! about one container.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};

use crate::container::{find, wait_for_exit};
use crate::paths::Paths;
use crate::table::render;

/// `rename OLD NEW`: the name is the only thing that changes.
pub fn rename(paths: &Paths, container: &str, new_name: &str) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    let record = find(&store, container)?;
    store.rename(&record.id, new_name)?;
    Ok(0)
}

/// `wait C...`: block until each has stopped; print each exit code.
pub fn wait(paths: &Paths, containers: &[String]) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    let mut out = String::new();
    let mut failed = false;
    for query in containers {
        let result = (|| -> anyhow::Result<i32> {
            let record = match find(&store, query) {
                Ok(record) => record,
                // A `--rm` container removed at its end, asked for by its id.
                Err(e) => return store.exit_code_of_removed(query).ok_or(e),
            };
            Ok(wait_for_exit(&store, record, None)?.unwrap_or(crate::exit::BERTH_FAILED))
        })();
        match result {
            Ok(code) => {
                let _ = writeln!(out, "{code}");
            }
            Err(e) => {
                eprintln!("berth: {}", crate::exit::one_line(&e));
                failed = true;
            }
        }
    }
    print!("{out}");
    Ok(i32::from(failed))
}

/// `port C [PRIVATE[/PROTO]]`: the container's published ports, docker's
/// `80/tcp -> 0.0.0.0:8080` lines (`127.0.0.1:8080` when bound to one
/// address).
pub fn port(paths: &Paths, container: &str, private: Option<&str>) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    let record = find(&store, container)?;
    let endpoint: Option<berth_net::Endpoint> = record
        .network
        .clone()
        .map(serde_json::from_value)
        .transpose()
        .context("the container's network record")?;
    let mut ports = endpoint.map(|e| e.ports).unwrap_or_default();
    // docker sorts the lines naturally: by container port, protocol,
    // then host address and port.
    ports.sort_by_key(|p| (p.container_port, p.protocol, p.host_ip, p.host_port));
    let wanted = private.map(|p| {
        let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        (port.to_owned(), proto.to_owned())
    });
    let mut out = String::new();
    for mapping in &ports {
        let proto = mapping.protocol.to_string();
        if let Some((port, want_proto)) = &wanted {
            if *port != mapping.container_port.to_string() || *want_proto != proto {
                continue;
            }
            let _ = writeln!(out, "{}", mapping.host_binding());
            continue;
        }
        let _ = writeln!(
            out,
            "{}/{proto} -> {}",
            mapping.container_port,
            mapping.host_binding()
        );
    }
    if let (Some(p), true) = (private, out.is_empty()) {
        bail!("no public port '{p}' published for {container}");
    }
    print!("{out}");
    Ok(0)
}

/// `top C`: the container's processes, as `ps -ef` shows them.
pub fn top(paths: &Paths, container: &str) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    let record = find(&store, container)?;
    if !record.is_active() {
        bail!("container {} is not running", record.name);
    }
    let pids = paths
        .runtime()
        .processes(&record.id)
        .map_err(crate::run::coded)?;
    let proc_root = Path::new("/proc");
    let rows: Vec<Vec<String>> = pids
        .iter()
        .filter_map(|pid| {
            let dir = proc_root.join(pid.to_string());
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
                    .unwrap_or_default()
            };
            let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
            let command = if cmdline.is_empty() {
                format!("[{}]", field("Name:"))
            } else {
                String::from_utf8_lossy(&cmdline)
                    .trim_end_matches('\0')
                    .replace('\0', " ")
            };
            Some(vec![
                field("Uid:"),
                pid.to_string(),
                field("PPid:"),
                command,
            ])
        })
        .collect();
    print!("{}", render(&["UID", "PID", "PPID", "CMD"], &rows));
    Ok(0)
}
