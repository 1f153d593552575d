//! `berth checkpoint` and `berth restore`: a running container's processes
//! saved by CRIU (through the runtime) and started again from there, in
//! place or, through an exported archive, in another state root.
//!
//! A checkpoint lives in the container's directory (`checkpoint/`, criu's
//! log in `criu/`). It is written to `checkpoint.tmp/` and renamed when
//! criu reports every image written, before criu ends the container: a
//! berth killed earlier leaves the container running and no checkpoint.
//!
//! An export is a gzip'd tar: `checkpoint/` (the images), `container.json`
//! (the record), `spec.json`, `rootfs-diff.tar` (the write layer, in the
//! image layer format) and `export.json` (where they came from, so that
//! paths in the spec can be moved to the importing root).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_state::{CheckpointMark, ContainerRecord, ContainerStore, Timestamp};
use cli::runtime::{CheckpointOptions, RestoreOptions, Stdio};
use nix::unistd::Pid;

use crate::args::{CheckpointArgs, RestoreArgs};
use crate::network::NetworkMode;
use crate::paths::Paths;
use crate::run::{coded, require_root, LaunchPlan, RemoveOnFailure};

/// The checkpoint's images, beside the container's write layer (on disk
/// also for a transient container: they are as large as its memory).
const CHECKPOINT_DIR: &str = "checkpoint";
/// Where they are written until complete.
const STAGING_DIR: &str = "checkpoint.tmp";
/// criu's logs.
const CRIU_DIR: &str = "criu";

const EXPORT_RECORD: &str = "container.json";
const EXPORT_SPEC: &str = "spec.json";
const EXPORT_LAYER: &str = "rootfs-diff.tar";
const EXPORT_ORIGIN: &str = "export.json";
/// The container's log, so that it goes on where it was.
const EXPORT_LOG: &str = "container.log";

/// What a restore needs besides the container's spec (carried to the
/// monitor, which restores the container as its child).
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub images_dir: PathBuf,
    pub work_dir: PathBuf,
    pub tcp_established: bool,
    pub file_locks: bool,
    /// The address to take again on its network (`None`: any).
    pub ip: Option<String>,
}

/// Where an exported checkpoint came from.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ExportOrigin {
    root: PathBuf,
    container_dir: PathBuf,
    id: String,
}

pub fn checkpoint(paths: &Paths, args: &CheckpointArgs) -> anyhow::Result<i32> {
    require_root()?;
    let store = paths.containers()?;
    let record = crate::container::find(&store, &args.container)?;
    if !record.is_active() {
        bail!("container {} is not running", record.name);
    }
    let dir = store.layer_dir(&record.id);
    let staging = dir.join(STAGING_DIR);
    let images = dir.join(CHECKPOINT_DIR);
    let work = dir.join(CRIU_DIR);
    remove_if_present(&staging)?;
    let options = CheckpointOptions {
        images_dir: staging.clone(),
        work_dir: Some(work.clone()),
        leave_running: args.leave_running,
        tcp_established: args.tcp_established,
        file_locks: args.file_locks,
    };
    let ip = crate::network::primary_ip(&record);
    let complete = || -> Result<(), String> {
        let finish = || -> anyhow::Result<()> {
            remove_if_present(&images)?;
            std::fs::rename(&staging, &images)
                .with_context(|| format!("cannot rename {}", staging.display()))?;
            if !args.leave_running {
                store.update(&record.id, |r| {
                    r.checkpoint = Some(CheckpointMark {
                        at: Timestamp::now(),
                        ip: ip.clone(),
                    })
                })?;
            }
            Ok(())
        };
        finish().map_err(|e| format!("{e:#}"))
    };
    let result = paths.runtime().checkpoint(&record.id, &options, complete);
    if let Err(error) = result {
        let _ = remove_if_present(&staging);
        bail!(
            "cannot checkpoint container {}: {error} (criu's log: {})",
            record.name,
            work.join(cli::runtime::checkpoint::DUMP_LOG).display()
        );
    }
    if !args.leave_running {
        wait_until_ended(&store, &record.id)?;
        // Kept to be restored.
        crate::container_spec::keep_volatile_layer(&store, &record)?;
    }
    if let Some(target) = &args.export {
        export(paths, &store, &record.id, target)?;
    }
    println!("{}", args.container);
    Ok(0)
}

/// The monitor records the end of the container it saw die.
fn wait_until_ended(store: &ContainerStore, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let record = store.load(id)?;
        if !record.is_active() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("container {} did not end after its checkpoint", record.name);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Write the checkpoint, record, spec and write layer of container `id`
/// to `target` (a temporary file renamed into place: nothing half-made).
fn export(paths: &Paths, store: &ContainerStore, id: &str, target: &Path) -> anyhow::Result<()> {
    let dir = store.container_dir(id);
    let record = store.load(id)?;
    let origin = ExportOrigin {
        root: paths.root().to_path_buf(),
        container_dir: dir.clone(),
        id: id.to_owned(),
    };
    let partial = PathBuf::from(format!("{}.partial", target.display()));
    let written = (|| -> anyhow::Result<()> {
        let file = std::fs::File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let gzip = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gzip);
        tar.follow_symlinks(false);
        tar.append_dir_all(CHECKPOINT_DIR, store.layer_dir(id).join(CHECKPOINT_DIR))?;
        let mut add = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o600);
            header.set_mtime(0);
            header.set_cksum();
            tar.append_data(&mut header, name, bytes)
        };
        add(EXPORT_RECORD, &serde_json::to_vec(&record)?)?;
        add(EXPORT_ORIGIN, &serde_json::to_vec(&origin)?)?;
        let spec = std::fs::read(dir.join(crate::run::SPEC_FILE))
            .with_context(|| format!("cannot read the spec of container {}", record.name))?;
        add(EXPORT_SPEC, &spec)?;
        let [upper, ..] = crate::container_spec::layer_dirs(store, id);
        let mut layer = Vec::new();
        berth_image::write_diff_tar(&upper, &mut layer)?;
        add(EXPORT_LAYER, &layer)?;
        if let Ok(log) = std::fs::read(crate::run::log_path(store, id)) {
            add(EXPORT_LOG, &log)?;
        }
        let gzip = tar.into_inner()?;
        let file = gzip.finish()?;
        file.sync_all()?;
        Ok(())
    })();
    match written {
        Ok(()) => std::fs::rename(&partial, target)
            .with_context(|| format!("cannot write {}", target.display())),
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            Err(error.context(format!("cannot export to {}", target.display())))
        }
    }
}

pub fn restore(paths: &Paths, args: &RestoreArgs) -> anyhow::Result<i32> {
    require_root()?;
    let store = paths.containers()?;
    let (record, guard) = match (&args.import, &args.container) {
        (Some(archive), _) => {
            let record = import(paths, &store, archive, args.name.as_deref())?;
            let mut guard = RemoveOnFailure::disarmed(paths, &store, &record.id);
            guard.armed = true;
            (record, guard)
        }
        (None, Some(container)) => {
            if args.name.is_some() {
                bail!("--name is for --import: a container is restored in place under its name");
            }
            let record = crate::container::find(&store, container)?;
            let guard = RemoveOnFailure::disarmed(paths, &store, &record.id);
            (record, guard)
        }
        (None, None) => bail!("restore needs a container or --import FILE"),
    };
    if record.is_active() {
        bail!("container {} is running", record.name);
    }
    let dir = store.layer_dir(&record.id);
    let images = dir.join(CHECKPOINT_DIR);
    if !images.is_dir() {
        bail!(
            "container {} has no checkpoint: make one with `berth checkpoint {}`",
            record.name,
            record.name
        );
    }
    let request = RestoreRequest {
        images_dir: images.clone(),
        work_dir: dir.join(CRIU_DIR),
        tcp_established: args.tcp_established,
        file_locks: args.file_locks,
        ip: if args.ignore_static_ip {
            None
        } else {
            record.checkpoint.as_ref().and_then(|mark| mark.ip.clone())
        },
    };
    let record = crate::lifecycle::reset_for_start(paths, &store, &record, true)?;
    let mut plan = crate::run::restart_plan(paths, &store, &record, false)?;
    plan.restore = Some(request);
    let name = record.name.clone();
    let id = record.id.clone();
    crate::monitor::start_detached(paths, &store, record, plan, guard)?;
    if !args.keep {
        if let Err(e) = remove_if_present(&images) {
            eprintln!("berth: {e:#}");
        }
    }
    println!("{}", if args.import.is_some() { &id } else { &name });
    Ok(0)
}

/// The process of a restore, in the monitor: the network first (the
/// container's address must exist for its sockets), then criu.
pub fn restore_process(
    paths: &Paths,
    store: &ContainerStore,
    record: &mut ContainerRecord,
    plan: &LaunchPlan,
    request: &RestoreRequest,
    stdio: Stdio,
) -> anyhow::Result<(Pid, Option<OwnedFd>, Vec<berth_net::HeldPort>)> {
    let netns: Option<OwnedFd> = match &plan.network {
        NetworkMode::Bridge { .. } => {
            Some(cli::runtime::checkpoint::fresh_network_namespace().map_err(coded)?)
        }
        _ => None,
    };
    let mut held_ports = Vec::new();
    if let Some(netns) = &netns {
        if record.requested_ip.is_none() {
            record.requested_ip = request.ip.clone();
        }
        held_ports = crate::network::attach_to(paths, store, &plan.network, record, netns.as_fd()).map_err(
            |e| match &request.ip {
                Some(ip) => e.context(format!(
                    "cannot take the container's address {ip} again (restore with --ignore-static-ip for another)"
                )),
                None => e,
            },
        )?;
    }
    let options = RestoreOptions {
        images_dir: request.images_dir.clone(),
        work_dir: Some(request.work_dir.clone()),
        stdio,
        network_namespace: netns,
        tcp_established: request.tcp_established,
        file_locks: request.file_locks,
        pid_file: None,
    };
    let bundle = store.container_dir(&record.id);
    let restored = match paths
        .runtime()
        .restore(&record.id, &bundle, &plan.spec, options)
    {
        Ok(restored) => restored,
        Err(error) => {
            let _ = crate::network::release(paths, &record.id, false);
            let log = request.work_dir.join(cli::runtime::checkpoint::RESTORE_LOG);
            return Err(coded(error).context(format!(
                "cannot restore container {} (criu's log: {})",
                record.name,
                log.display()
            )));
        }
    };
    if let Some(cgroup) = &restored.cgroup {
        record.cgroup = Some(serde_json::to_value(cgroup)?);
    }
    crate::run::record_running(store, record, restored.pid)?;
    store.update(&record.id, |r| r.checkpoint = None)?;
    Ok((restored.pid, restored.terminal, held_ports))
}

/// Make a container of this root from an exported checkpoint: its record
/// (new id; `name` or its own), write layer, spec (paths moved to this
/// root) and checkpoint images. The image it ran must be here.
fn import(
    paths: &Paths,
    store: &ContainerStore,
    archive: &Path,
    name: Option<&str>,
) -> anyhow::Result<ContainerRecord> {
    let file = std::fs::File::open(archive)
        .with_context(|| format!("cannot open {}", archive.display()))?;
    let unpacked = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(paths.root())
        .context("cannot make a directory to unpack the checkpoint in")?;
    let root = unpacked.path().join("export");
    berth_image::extract(file, &root)
        .with_context(|| format!("{} is not a berth checkpoint export", archive.display()))?;
    let read = |name: &str| -> anyhow::Result<Vec<u8>> {
        let path = root.join(name);
        std::fs::read(&path).with_context(|| {
            format!(
                "{} is not a berth checkpoint export: no {name}",
                archive.display()
            )
        })
    };
    let corrupt = |what: &str| format!("{}: its {what} is corrupt", archive.display());
    let old: ContainerRecord =
        serde_json::from_slice(&read(EXPORT_RECORD)?).with_context(|| corrupt(EXPORT_RECORD))?;
    let origin: ExportOrigin =
        serde_json::from_slice(&read(EXPORT_ORIGIN)?).with_context(|| corrupt(EXPORT_ORIGIN))?;
    let spec_text = String::from_utf8(read(EXPORT_SPEC)?).with_context(|| corrupt(EXPORT_SPEC))?;
    let layer = read(EXPORT_LAYER)?;
    if !root.join(CHECKPOINT_DIR).is_dir() {
        bail!(
            "{} is not a berth checkpoint export: no checkpoint",
            archive.display()
        );
    }
    let images = paths.images()?;
    images.resolve(&old.image_id).with_context(|| {
        format!(
            "the checkpoint's image {} is not here: pull or load it first",
            old.image
        )
    })?;

    let id = berth_state::generate_id();
    let mut record = ContainerRecord {
        id: id.clone(),
        ..old.clone()
    };
    record.status = berth_state::Status::Created;
    record.pid = None;
    record.pid_start_time = None;
    record.monitor_pid = None;
    record.monitor_start_time = None;
    record.cgroup = None;
    record.network = None;
    record.restarting = false;
    record.connections.clear();
    record.created = Timestamp::now();
    record.name = match name {
        Some(name) => name.to_owned(),
        None => old.name.clone(),
    };
    crate::run::store_record(paths, store, &record)
        .with_context(|| format!("cannot import container {}", record.name))?;
    let mut guard = RemoveOnFailure::disarmed(paths, store, &id);
    guard.armed = true;
    let dir = store.container_dir(&id);
    let layer_dirs = crate::container_spec::layer_dirs(store, &id);
    let [upper, work, rootfs] = &layer_dirs;
    berth_image::extract_diff(&layer[..], upper).with_context(|| corrupt(EXPORT_LAYER))?;
    for path in [work, rootfs] {
        std::fs::create_dir(path).with_context(|| format!("cannot create {}", path.display()))?;
    }
    // The spec names the old root's and container's paths: the same
    // places in this root.
    let moved = spec_text
        .replace(
            &*origin.container_dir.to_string_lossy(),
            &dir.to_string_lossy(),
        )
        .replace(
            &*origin.root.to_string_lossy(),
            &paths.root().to_string_lossy(),
        )
        .replace(&origin.id, &id);
    let mut spec: oci_spec::runtime::Spec =
        serde_json::from_str(&moved).with_context(|| corrupt(EXPORT_SPEC))?;
    // Where the layer lives depends on how the store keeps this container
    // (see `ContainerStore::create_transient`), not on where it was.
    crate::container_spec::relocate_layer(&mut spec, &layer_dirs)?;
    crate::run::save_spec(&dir, &spec)?;
    std::fs::rename(
        root.join(CHECKPOINT_DIR),
        store.layer_dir(&id).join(CHECKPOINT_DIR),
    )
    .context("cannot move the checkpoint into the container")?;
    if root.join(EXPORT_LOG).is_file() {
        let log = crate::run::log_path(store, &id);
        move_file(&root.join(EXPORT_LOG), &log)
            .with_context(|| format!("cannot write {}", log.display()))?;
    }
    guard.armed = false;
    Ok(record)
}

/// Rename `from` to `to`, or copy and remove it when they are on different
/// filesystems: a `--rm` container's files are on the runtime's tmpfs, an
/// unpacked export on the disk beside the store.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            std::fs::copy(from, to)?;
            std::fs::remove_file(from)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::move_file;

    /// Within one filesystem and, where /dev/shm is another one than the
    /// temporary directory, across two.
    #[test]
    fn move_file_renames_or_copies_across_filesystems() {
        let disk = tempfile::tempdir().unwrap();
        let from = disk.path().join("container.log");
        std::fs::write(&from, "line\n").unwrap();
        let to = disk.path().join("moved.log");
        move_file(&from, &to).unwrap();
        assert!(!from.exists());
        assert_eq!(std::fs::read_to_string(&to).unwrap(), "line\n");

        let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let other_device = |a: &std::path::Path, b: &std::path::Path| {
            std::fs::metadata(a).unwrap().dev() != std::fs::metadata(b).unwrap().dev()
        };
        if !other_device(disk.path(), shm.path()) {
            return;
        }
        let across = shm.path().join("container.log");
        move_file(&to, &across).unwrap();
        assert!(!to.exists(), "the source stays after a copy");
        assert_eq!(std::fs::read_to_string(&across).unwrap(), "line\n");
    }
}
