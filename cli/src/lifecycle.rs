//! Starting containers again: `start` (of a created or stopped container,
//! attached or in the background, or every container a restart policy
//! wants running after a reboot) and `restart`.

use anyhow::bail;
use berth_state::{ContainerRecord, ContainerStore, RestartPolicy};

use crate::args::{RestartArgs, StartArgs};
use crate::paths::Paths;
use crate::run::{restart_plan, RemoveOnFailure};

pub fn start(paths: &Paths, args: &StartArgs) -> anyhow::Result<i32> {
    crate::run::require_root()?;
    let store = paths.containers()?;
    let queries = if args.all {
        let policies = args
            .filter
            .iter()
            .map(|f| parse_restart_filter(f))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let records = crate::container::list(&store)?;
        records
            .into_iter()
            .filter(|r| wanted_after_reboot(r, &policies))
            .map(|r| r.name)
            .collect()
    } else {
        if !args.filter.is_empty() {
            bail!("--filter selects containers for --all: give --all, or name the containers");
        }
        if args.containers.is_empty() {
            bail!("name the containers to start, or give --all");
        }
        args.containers.clone()
    };
    if args.attach || args.interactive {
        let [query] = queries.as_slice() else {
            bail!("you cannot start and attach multiple containers at once");
        };
        let record = crate::container::find(&store, query)?;
        if record.is_active() {
            return crate::attach::attach_running(&store, &record, args.interactive, None);
        }
        return start_attached(paths, &store, record, args.interactive);
    }
    Ok(crate::container::for_each_container(
        &store,
        &queries,
        |record| start_in_background(paths, &store, record),
    ))
}

/// `--filter restart=POLICY` (repeatable) for `start --all`.
fn parse_restart_filter(filter: &str) -> anyhow::Result<RestartPolicy> {
    filter
        .strip_prefix("restart=")
        .and_then(RestartPolicy::parse)
        .filter(|p| *p != RestartPolicy::No)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "invalid --filter {filter:?}: start --all takes restart=always, \
                 restart=unless-stopped or restart=on-failure"
            )
        })
}

/// What a docker daemon starts when it comes up: stopped containers whose
/// policy (one of `policies`, any if none given) says they should run:
/// `always`, and `unless-stopped` or `on-failure` ones the user did not stop
/// (`on-failure` only if it had not exited cleanly).
fn wanted_after_reboot(record: &ContainerRecord, policies: &[RestartPolicy]) -> bool {
    let policy = record.restart_policy;
    let selected = if policies.is_empty() {
        policy != RestartPolicy::No
    } else {
        policies.iter().any(|p| p.name() == policy.name())
    };
    if !selected || record.is_active() || record.restarting {
        return false;
    }
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::Always => true,
        RestartPolicy::UnlessStopped => !record.manually_stopped,
        RestartPolicy::OnFailure { .. } => {
            !record.manually_stopped && record.exit_code.is_some_and(|c| c != 0)
        }
    }
}

/// A user's start: what a crashed run left (runtime state, cgroup,
/// address) is released, and the policy counts afresh and applies again.
pub(crate) fn reset_for_start(
    paths: &Paths,
    store: &ContainerStore,
    record: &ContainerRecord,
    detached: bool,
) -> anyhow::Result<ContainerRecord> {
    crate::limits::release(paths, record)?;
    crate::network::release(paths, &record.id, true)?;
    Ok(store.update(&record.id, |r| {
        r.manually_stopped = false;
        // A start (or restore) ends what a checkpoint left.
        r.checkpoint = None;
        r.restart_count = 0;
        r.restarting = false;
        r.detached = detached;
    })?)
}

/// Start under a monitor (docker's `start` without `-a`).
pub fn start_in_background(
    paths: &Paths,
    store: &ContainerStore,
    record: ContainerRecord,
) -> anyhow::Result<()> {
    if record.is_active() {
        return Ok(());
    }
    if record.restarting {
        // Its policy's monitor is about to start it.
        return Ok(());
    }
    let record = reset_for_start(paths, store, &record, true)?;
    let plan = restart_plan(paths, store, &record, false)?;
    let guard = RemoveOnFailure::disarmed(paths, store, &record.id);
    crate::monitor::start_detached(paths, store, record, plan, guard)
}

/// `start -a [-i]`: run it attached to this terminal, as a foreground
/// `run` does, and pass its exit code on.
fn start_attached(
    paths: &Paths,
    store: &ContainerStore,
    record: ContainerRecord,
    interactive: bool,
) -> anyhow::Result<i32> {
    let record = reset_for_start(paths, store, &record, false)?;
    let plan = restart_plan(paths, store, &record, interactive && record.interactive)?;
    let guard = RemoveOnFailure::disarmed(paths, store, &record.id);
    crate::run::foreground(paths, store, record, plan, guard)
}

/// `berth restart`: stop (if running), then start in the background.
pub fn restart(paths: &Paths, args: &RestartArgs) -> anyhow::Result<i32> {
    crate::run::require_root()?;
    let store = paths.containers()?;
    Ok(crate::container::for_each_container(
        &store,
        &args.containers,
        |record| {
            let auto_remove = record.auto_remove && record.is_active();
            let id = record.id.clone();
            let record = if auto_remove {
                // As docker: a `--rm` container is restarted, not removed by
                // its stop; only the end of the run that follows removes it.
                store.update(&id, |r| r.auto_remove = false)?
            } else {
                record
            };
            let stopped =
                crate::container::stop_container(&store, record, args.signal.as_deref(), args.time);
            let stopped = if auto_remove {
                keep_for_restart(&store, &id, stopped)?
            } else {
                stopped?
            };
            start_in_background(paths, &store, stopped)
        },
    ))
}

/// After the stop of a `--rm` container being restarted, whose end its
/// monitor recorded without removing it: `--rm` again for the run that
/// follows, and its write layer, mounted volatile, made mountable again.
fn keep_for_restart(
    store: &ContainerStore,
    id: &str,
    stopped: anyhow::Result<ContainerRecord>,
) -> anyhow::Result<ContainerRecord> {
    // `--rm` again whatever the stop did: a container still running is
    // removed at its end, as before the restart.
    let restored = store.update(id, |r| r.auto_remove = true);
    stopped?;
    let record = restored?;
    crate::container_spec::keep_volatile_layer(store, &record)?;
    Ok(record)
}
