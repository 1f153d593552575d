//! Commands on existing containers: `rm`, `inspect`, and the liveness
//! check that keeps records honest.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_state::{is_same_process, ContainerRecord, ContainerStore, Status};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::args::{InspectArgs, RmArgs};
use crate::paths::Paths;

/// Exit code recorded for a container whose end berth did not see (its
/// berth or monitor was killed): docker's choice for the same situation.
const UNKNOWN_EXIT: i32 = 255;

/// Whether the record's PID 1 is still the live process it started as.
pub fn is_alive(record: &ContainerRecord) -> bool {
    match record.pid {
        Some(pid) => is_same_process(Path::new("/proc"), pid, record.pid_start_time),
        None => false,
    }
}

/// A record that claims a live container whose process is gone is
/// corrected (so `ps` never shows a dead container as running).
pub fn refresh(store: &ContainerStore, record: ContainerRecord) -> anyhow::Result<ContainerRecord> {
    if !record.is_active() || is_alive(&record) {
        return Ok(record);
    }
    Ok(store.update(&record.id, |r| {
        if r.is_active() && !is_alive(r) {
            r.mark_exited(UNKNOWN_EXIT);
        }
    })?)
}

/// All containers, with stale records corrected.
pub fn list(store: &ContainerStore) -> anyhow::Result<Vec<ContainerRecord>> {
    store
        .list()?
        .into_iter()
        .map(|r| refresh(store, r))
        .collect()
}

pub fn find(store: &ContainerStore, query: &str) -> anyhow::Result<ContainerRecord> {
    refresh(store, store.find(query)?)
}

pub fn rm(paths: &Paths, args: &RmArgs) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    let mut failed = false;
    for query in &args.containers {
        match remove_one(&store, query, args.force) {
            Ok(_) => println!("{query}"),
            Err(e) => {
                eprintln!("berth: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

fn remove_one(store: &ContainerStore, query: &str, force: bool) -> anyhow::Result<ContainerRecord> {
    let record = find(store, query)?;
    if record.is_active() {
        if !force {
            bail!(
                "cannot remove container {}: it is running; stop it first or use `berth rm -f`",
                record.name
            );
        }
        kill_and_wait(&record)?;
    }
    store
        .remove(&record.id)
        .with_context(|| format!("cannot remove container {}", record.name))?;
    Ok(record)
}

/// SIGKILL the container's PID 1 (which takes the whole PID namespace with
/// it) and wait until it is gone.
fn kill_and_wait(record: &ContainerRecord) -> anyhow::Result<()> {
    let Some(pid) = record.pid else { return Ok(()) };
    if !is_alive(record) {
        return Ok(());
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_alive(record) {
        if Instant::now() > deadline {
            bail!(
                "container {} (pid {pid}) did not die after SIGKILL",
                record.name
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

pub fn inspect(paths: &Paths, args: &InspectArgs) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    let images = paths.images()?;
    let mut out = Vec::new();
    for target in &args.targets {
        match find(&store, target) {
            Ok(record) => out.push(serde_json::to_value(&record)?),
            Err(container_err) => match images.get(target) {
                Ok(image) => out.push(serde_json::json!({
                    "Name": image.name,
                    "Id": image.id,
                    "Rootfs": image.rootfs,
                    "Size": image.size,
                    "Created": image.created,
                    "Config": image.config,
                })),
                Err(_) => match container_err.downcast_ref::<berth_state::StateError>() {
                    Some(berth_state::StateError::NotFound { .. }) => {
                        bail!("no such container or image: {target}")
                    }
                    _ => return Err(container_err),
                },
            },
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}

/// docker's STATUS column.
pub fn status_text(record: &ContainerRecord, now: berth_state::Timestamp) -> String {
    use crate::table::human_duration;
    match record.status {
        Status::Created => "Created".into(),
        Status::Running | Status::Paused => {
            let since = record.started_at.unwrap_or(record.created);
            let up = format!("Up {}", human_duration(since.until(now)));
            if record.status == Status::Paused {
                format!("{up} (Paused)")
            } else {
                up
            }
        }
        Status::Exited => {
            let ago = record
                .finished_at
                .map(|t| human_duration(t.until(now)))
                .unwrap_or_default();
            format!(
                "Exited ({}) {ago} ago",
                record.exit_code.unwrap_or(UNKNOWN_EXIT)
            )
        }
    }
}
