//! Commands on existing containers: `rm`, `inspect`, and the liveness
//! check that keeps records honest.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_state::{is_same_process, ContainerRecord, ContainerStore, Status};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::args::{InspectArgs, KillArgs, RmArgs, StopArgs};
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

/// Whether the process that records this container's exit (its monitor,
/// or the foreground `berth run`) is alive.
fn monitor_alive(record: &ContainerRecord) -> bool {
    match record.monitor_pid {
        Some(pid) => is_same_process(Path::new("/proc"), pid, record.monitor_start_time),
        None => false,
    }
}

/// A record that claims a live container whose process is gone is
/// corrected (so `ps` never shows a dead container as running). If the
/// monitor is still alive it is about to record the real exit code: give
/// it a moment first.
pub fn refresh(store: &ContainerStore, record: ContainerRecord) -> anyhow::Result<ContainerRecord> {
    if !record.is_active() || is_alive(&record) {
        return Ok(record);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while monitor_alive(&record) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        let current = store.load(&record.id)?;
        if !current.is_active() {
            return Ok(current);
        }
    }
    Ok(store.update(&record.id, |r| {
        if r.is_active() && !is_alive(r) {
            r.mark_exited(UNKNOWN_EXIT);
        }
    })?)
}

/// All containers, with stale records corrected (and any left frozen by a
/// killed commit thawed).
pub fn list(store: &ContainerStore) -> anyhow::Result<Vec<ContainerRecord>> {
    store
        .list()?
        .into_iter()
        .map(|r| {
            crate::pause::recover_left_frozen(store, &r);
            refresh(store, r)
        })
        .collect()
}

pub fn find(store: &ContainerStore, query: &str) -> anyhow::Result<ContainerRecord> {
    refresh(store, store.find(query)?)
}

pub fn rm(paths: &Paths, args: &RmArgs) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    Ok(for_each_query(&args.containers, |query| {
        match find(&store, query) {
            Ok(record) => remove_one(paths, &store, record, args.force),
            Err(e) => match e.downcast_ref::<berth_state::StateError>() {
                Some(berth_state::StateError::Broken { id, .. }) if args.force => {
                    remove_broken(paths, &store, id)
                }
                Some(berth_state::StateError::Broken { id, .. }) => {
                    let hint = format!("remove it with `berth rm -f {id}`");
                    Err(e.context(hint))
                }
                _ => Err(e),
            },
        }
    }))
}

/// `rm -f` of a container whose record cannot be read: what the runtime
/// knows of it by id (its processes, cgroup, state), its addresses and
/// port rules, and its directory all go.
fn remove_broken(paths: &Paths, store: &ContainerStore, id: &str) -> anyhow::Result<()> {
    let runtime = paths.runtime();
    match runtime.delete(id, true) {
        Ok(()) | Err(cli::runtime::RuntimeError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    crate::network::release(paths, id, true)?;
    store.remove(id)?;
    Ok(())
}

pub(crate) fn remove_one(
    paths: &Paths,
    store: &ContainerStore,
    record: ContainerRecord,
    force: bool,
) -> anyhow::Result<()> {
    if record.is_active() {
        if !force {
            bail!(
                "cannot remove container {}: it is running; stop it first or use `berth rm -f`",
                record.name
            );
        }
        crate::pause::thaw_for_signal(store, &record)?;
        kill_and_wait(&record)?;
        // Let the monitor record the end and release what it holds.
        refresh(store, record.clone())?;
    }
    // A container whose monitor died still has its cgroup, address and
    // port rules.
    crate::limits::release(paths, &record)?;
    crate::network::release(paths, &record.id, true)?;
    store
        .remove(&record.id)
        .with_context(|| format!("cannot remove container {}", record.name))
}

/// SIGKILL the container's PID 1 (which takes the whole PID namespace with
/// it) and wait until it is gone.
fn kill_and_wait(record: &ContainerRecord) -> anyhow::Result<()> {
    signal_container(record, Signal::SIGKILL)?;
    if !wait_until_dead(record, Duration::from_secs(10)) {
        bail!("container {} did not die after SIGKILL", record.name);
    }
    Ok(())
}

/// Send `signal` to the container's PID 1, if it is still the process the
/// record names (never to a recycled PID).
fn signal_container(record: &ContainerRecord, signal: Signal) -> anyhow::Result<()> {
    match record.pid {
        Some(pid) if is_alive(record) => match kill(Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(e) => bail!("cannot send {signal} to container {}: {e}", record.name),
        },
        _ => Ok(()),
    }
}

/// Poll until PID 1 is gone; false on timeout.
fn wait_until_dead(record: &ContainerRecord, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_alive(record) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Run `action` on each named container, docker style: the name is printed
/// on success, an error line per failure, exit code 1 if any failed.
pub fn for_each_container(
    store: &ContainerStore,
    queries: &[String],
    mut action: impl FnMut(ContainerRecord) -> anyhow::Result<()>,
) -> i32 {
    for_each_query(queries, |query| find(store, query).and_then(&mut action))
}

/// Run `action` for each query, printing the query when it succeeds and
/// one error line when it fails (docker's output): 1 if any failed.
fn for_each_query(queries: &[String], mut action: impl FnMut(&str) -> anyhow::Result<()>) -> i32 {
    let mut failed = false;
    for query in queries {
        match action(query) {
            Ok(()) => println!("{query}"),
            Err(e) => {
                eprintln!("berth: {}", crate::exit::one_line(&e));
                failed = true;
            }
        }
    }
    i32::from(failed)
}

fn require_running(record: &ContainerRecord) -> anyhow::Result<()> {
    if !record.is_active() {
        bail!("container {} is not running", record.name);
    }
    Ok(())
}

/// `berth stop`: SIGTERM, wait up to the grace period, then SIGKILL; the
/// exit is recorded (by the container's monitor) before this returns.
pub fn stop(paths: &Paths, args: &StopArgs) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    Ok(for_each_container(&store, &args.containers, |record| {
        require_running(&record)?;
        crate::pause::thaw_for_signal(&store, &record)?;
        let signal = match args.signal.as_ref().or(record.stop_signal.as_ref()) {
            Some(name) => parse_signal(name)?,
            None => Signal::SIGTERM,
        };
        signal_container(&record, signal)?;
        let grace = args.time.or(record.stop_timeout).unwrap_or(10);
        if !wait_until_dead(&record, Duration::from_secs(grace)) {
            kill_and_wait(&record)?;
        }
        refresh(&store, record).map(drop)
    }))
}

/// `berth kill`: send a signal (default SIGKILL) to PID 1.
pub fn kill_containers(paths: &Paths, args: &KillArgs) -> anyhow::Result<i32> {
    let signal = parse_signal(&args.signal)?;
    let store = paths.containers()?;
    Ok(for_each_container(&store, &args.containers, |record| {
        require_running(&record)?;
        crate::pause::thaw_for_signal(&store, &record)?;
        signal_container(&record, signal)
    }))
}

/// `kill -s` and `--signal`: a name or a number.
pub fn parse_signal(text: &str) -> anyhow::Result<Signal> {
    cli::runtime::parse_signal(text)
        .ok_or_else(|| anyhow::anyhow!("invalid signal {text:?}: use a name like TERM or a number"))
}

pub fn inspect(paths: &Paths, args: &InspectArgs) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    let images = paths.images()?;
    let mut out = Vec::new();
    for target in &args.targets {
        match find(&store, target) {
            Ok(record) => out.push(serde_json::to_value(&record)?),
            Err(container_err) => match images.resolve(target) {
                Ok(image) => out.push(crate::images::inspect_json(&image)),
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
