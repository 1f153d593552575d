//! Commands on existing containers: `rm`, `inspect`, and the liveness
//! check that keeps records honest.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_state::{is_same_process, ContainerRecord, ContainerStore, StateError, Status};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::args::{KillArgs, RmArgs, StopArgs};
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
pub fn monitor_alive(record: &ContainerRecord) -> bool {
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
    if record.restarting && !record.is_active() && !monitor_alive(&record) {
        // The monitor that was to start it again is gone (a reboot).
        return Ok(store.update(&record.id, |r| {
            if !r.is_active() && !monitor_alive(r) {
                r.restarting = false;
                r.monitor_pid = None;
            }
        })?);
    }
    if !record.is_active() || is_alive(&record) {
        return Ok(record);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while monitor_alive(&record) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        match store.load(&record.id) {
            Ok(current) if !current.is_active() => return Ok(current),
            Ok(_) => {}
            Err(StateError::NotFound { .. }) if record.auto_remove => {
                return removed_by_its_monitor(store, record);
            }
            Err(e) => return Err(e.into()),
        }
    }
    // The monitor (or the foreground `run`) is gone, and the kernel killed
    // PID 1 with it (its parent-death signal is SIGKILL): record that, give
    // back what the container held, and carry out its --rm.
    let ended = match store.update(&record.id, |r| {
        if r.is_active() && !is_alive(r) {
            r.mark_exited(KILLED_WITH_ITS_MONITOR);
        }
    }) {
        Ok(ended) => ended,
        Err(StateError::NotFound { .. }) if record.auto_remove => {
            return removed_by_its_monitor(store, record);
        }
        Err(e) => return Err(e.into()),
    };
    let paths = Paths::new(store.dir().parent().unwrap_or(store.dir()).to_path_buf());
    if let Err(e) = crate::limits::release(&paths, &ended) {
        eprintln!("berth: {e:#}");
    }
    if let Err(e) = crate::network::release(&paths, &ended.id, true) {
        eprintln!("berth: {e:#}");
    }
    if ended.auto_remove {
        remove_at_its_end(
            &paths,
            store,
            &ended,
            ended.exit_code.unwrap_or(UNKNOWN_EXIT),
        )?;
    }
    Ok(ended)
}

/// Carry out the `--rm` of a container that ended with `code`: keep the code
/// of a detached one for a `wait` that asks after the removal (a foreground
/// run reports it itself), remove it, then its anonymous volumes.
pub fn remove_at_its_end(
    paths: &Paths,
    store: &ContainerStore,
    record: &ContainerRecord,
    code: i32,
) -> Result<(), StateError> {
    if record.detached {
        if let Err(e) = store.keep_exit_code(&record.id, code) {
            eprintln!(
                "berth: cannot keep the exit code of container {}: {e}",
                record.name
            );
        }
    }
    store.remove(&record.id)?;
    crate::volume::remove_anonymous(paths, record);
    Ok(())
}

/// A `--rm` container's monitor removes it as soon as it ends, perhaps
/// before the caller (`stop`, `rm -f`) looked again: done once the monitor
/// is, with what it left finished here; its exit code is the one the monitor
/// kept (see `ContainerStore::keep_exit_code`).
fn removed_by_its_monitor(
    store: &ContainerStore,
    mut record: ContainerRecord,
) -> anyhow::Result<ContainerRecord> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while monitor_alive(&record) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    store
        .remove(&record.id)
        .with_context(|| format!("cannot remove container {}", record.name))?;
    record.mark_exited(
        store
            .exit_code_of_removed(&record.id)
            .unwrap_or(UNKNOWN_EXIT),
    );
    Ok(record)
}

/// 128 + SIGKILL: how a container ends when its monitor dies.
const KILLED_WITH_ITS_MONITOR: i32 = 137;

/// Wait (at most `limit`, if given) until `record`'s container has ended,
/// and give the code it ended with: `None` if it still runs at the limit,
/// 255 for an end without a code. A `--rm` container removed at its end
/// gives the code its monitor kept (`ContainerStore::keep_exit_code`).
pub fn wait_for_exit(
    store: &ContainerStore,
    mut record: ContainerRecord,
    limit: Option<Duration>,
) -> anyhow::Result<Option<i32>> {
    let deadline = limit.map(|limit| Instant::now() + limit);
    while record.is_active() {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
        let current = match store.load(&record.id) {
            Ok(current) => current,
            Err(StateError::NotFound { .. }) if record.auto_remove => {
                return store
                    .exit_code_of_removed(&record.id)
                    .map(Some)
                    .with_context(|| {
                        format!(
                            "container {} was removed at its end (--rm) and its exit code is gone",
                            record.name
                        )
                    });
            }
            Err(e) => return Err(e.into()),
        };
        record = refresh(store, current)?;
    }
    Ok(Some(record.exit_code.unwrap_or(UNKNOWN_EXIT)))
}

/// A record that [`refresh`] removed (its container had --rm).
fn removed(store: &ContainerStore, record: &ContainerRecord) -> bool {
    record.auto_remove && !record.is_active() && !store.container_dir(&record.id).exists()
}

/// All containers, with stale records corrected (and any left frozen by a
/// killed commit thawed).
pub fn list(store: &ContainerStore) -> anyhow::Result<Vec<ContainerRecord>> {
    corrected(store, store.list()?)
}

/// [`list`], and the records that cannot be read, from one pass over the
/// store (`ps -a` shows both).
pub fn list_with_broken(
    store: &ContainerStore,
) -> anyhow::Result<(Vec<ContainerRecord>, Vec<berth_state::BrokenRecord>)> {
    let (records, broken) = store.list_with_broken()?;
    Ok((corrected(store, records)?, broken))
}

fn corrected(
    store: &ContainerStore,
    records: Vec<ContainerRecord>,
) -> anyhow::Result<Vec<ContainerRecord>> {
    records
        .into_iter()
        .map(|r| {
            crate::pause::recover_left_frozen(store, &r);
            refresh(store, r)
        })
        .filter(|r| !r.as_ref().is_ok_and(|r| removed(store, r)))
        .collect()
}

pub fn find(store: &ContainerStore, query: &str) -> anyhow::Result<ContainerRecord> {
    let record = refresh(store, store.find(query)?)?;
    if removed(store, &record) {
        // Gone with --rm just now: as if it had never been found.
        return Ok(store.find(query)?);
    }
    Ok(record)
}

pub fn rm(paths: &Paths, args: &RmArgs) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    Ok(for_each_query(&args.containers, |query| {
        match find(&store, query) {
            Ok(record) => {
                let removed = remove_one(paths, &store, record.clone(), args.force);
                if removed.is_ok() && args.volumes {
                    crate::volume::remove_anonymous(paths, &record);
                }
                removed
            }
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
    if record.is_active() || record.restarting {
        if !force {
            let state = if record.restarting {
                "restarting"
            } else {
                "running"
            };
            bail!(
                "cannot remove container {}: it is {state}; stop it first or use `berth rm -f`",
                record.name
            );
        }
        if let Some(running) = mark_manually_stopped(store, &record.id)? {
            crate::pause::thaw_for_signal(store, &running)?;
            kill_and_wait(&running)?;
            // Let the monitor record the end and release what it holds.
            refresh(store, running)?;
        }
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
        stop_container(&store, record, args.signal.as_deref(), args.time).map(drop)
    }))
}

/// Stop one container (also one that its restart policy is about to
/// start again) and keep its policy from starting it; returns the record
/// as it ended. Stopping a stopped container is not an error (docker).
pub fn stop_container(
    store: &ContainerStore,
    record: ContainerRecord,
    signal: Option<&str>,
    grace: Option<u64>,
) -> anyhow::Result<ContainerRecord> {
    let signal = match signal.or(record.stop_signal.as_deref()) {
        Some(name) => parse_signal(name)?,
        None => Signal::SIGTERM,
    };
    let Some(record) = mark_manually_stopped(store, &record.id)? else {
        return Ok(record);
    };
    crate::pause::thaw_for_signal(store, &record)?;
    signal_container(&record, signal)?;
    let grace = grace.or(record.stop_timeout).unwrap_or(10);
    if !wait_until_dead(&record, Duration::from_secs(grace)) {
        kill_and_wait(&record)?;
    }
    refresh(store, record)
}

/// Record that the user stopped the container, so that its restart
/// policy leaves it stopped; `Some(record)` if it is running and must
/// be signalled. A container between two policy restarts is waited for:
/// its monitor either gives up (it sees the mark) or has just started it.
fn mark_manually_stopped(
    store: &ContainerStore,
    id: &str,
) -> anyhow::Result<Option<ContainerRecord>> {
    let current = store.load(id)?;
    if !current.is_active() && !current.restarting {
        return Ok(None);
    }
    let mut record = store.update(id, |r| r.manually_stopped = true)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if record.is_active() {
            return Ok(Some(refresh(store, record)?).filter(|r| r.is_active()));
        }
        if !record.restarting || !monitor_alive(&record) || Instant::now() >= deadline {
            if record.restarting {
                store.update(id, |r| r.restarting = false)?;
            }
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
        record = store.load(id)?;
    }
}

/// `berth kill`: send a signal (default SIGKILL) to PID 1.
pub fn kill_containers(paths: &Paths, args: &KillArgs) -> anyhow::Result<i32> {
    let signal = parse_signal(&args.signal)?;
    let store = paths.containers()?;
    Ok(for_each_container(&store, &args.containers, |record| {
        require_running(&record)?;
        // A container killed to end it is one the user stopped (its
        // policy leaves it stopped); a signal to make it reload (HUP,
        // USR1, ...) is not.
        let stop_signal = record
            .stop_signal
            .as_deref()
            .and_then(cli::runtime::parse_signal);
        let ends_it = matches!(
            signal,
            Signal::SIGKILL | Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT
        ) || Some(signal) == stop_signal;
        let record = if ends_it {
            store.update(&record.id, |r| r.manually_stopped = true)?
        } else {
            record
        };
        crate::pause::thaw_for_signal(&store, &record)?;
        signal_container(&record, signal)
    }))
}

/// `kill -s` and `--signal`: a name or a number.
pub fn parse_signal(text: &str) -> anyhow::Result<Signal> {
    cli::runtime::parse_signal(text)
        .ok_or_else(|| anyhow::anyhow!("invalid signal {text:?}: use a name like TERM or a number"))
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
        Status::Exited if record.restarting => {
            let ago = record
                .finished_at
                .map(|t| human_duration(t.until(now)))
                .unwrap_or_default();
            format!(
                "Restarting ({}) {ago} ago",
                record.exit_code.unwrap_or(UNKNOWN_EXIT)
            )
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
