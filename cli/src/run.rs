//! `berth run`: create a container from an image and run it in the
//! foreground, passing its exit code through.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::{bail, Context};
use berth_fs::OverlayRootfs;
use berth_image::{Image, ImageStore};
use berth_ns::{channel, Channel, Namespace};
use berth_state::{generate_id, generate_name, ContainerRecord, ContainerStore, StateError};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::args::RunArgs;
use crate::exit::{status_code, CodedError};
use crate::init::{self, FromInit, InitSpec, ToInit};
use crate::paths::Paths;
use crate::tty;

/// The image berth can build by itself from the host's static busybox.
const DEFAULT_IMAGE: &str = "busybox";

/// Signals berth relays to the container (SIGCHLD and SIGWINCH are for
/// berth itself).
const RELAYED_SIGNALS: [Signal; 8] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCHLD,
];

pub fn run(paths: &Paths, args: RunArgs) -> anyhow::Result<i32> {
    let images = paths.images()?;
    let image = resolve_image(&images, &args.image)?;
    let command = if args.command.is_empty() {
        image.config.cmd.clone()
    } else {
        args.command.clone()
    };
    if command.is_empty() {
        bail!(
            "no command specified: image {} has no default command, give one after the image name",
            image.name
        );
    }
    let containers = paths.containers()?;
    let id = generate_id();
    let mut record = ContainerRecord::new(id.clone(), String::new(), image.name.clone());
    record.image_id = image.id.clone();
    record.command = command;
    record.hostname = match &args.hostname {
        Some(h) => validate_hostname(h)?,
        None => record.short_id().to_owned(),
    };
    record.env = build_env(&image.config.env, &args.env, &record.hostname, args.tty)?;
    record.workdir = args
        .workdir
        .clone()
        .or_else(|| image.config.workdir.clone());
    if let Some(dir) = &record.workdir {
        if !dir.starts_with('/') {
            bail!("the working directory {dir:?} is invalid: it must be an absolute path");
        }
    }
    record.tty = args.tty;
    record.interactive = args.interactive;
    record.auto_remove = args.rm;
    create_record(&containers, &mut record, args.name.as_deref())?;

    // From here on a failure must take the container away again.
    let mut guard = RemoveOnFailure {
        store: &containers,
        id: &id,
        armed: true,
    };
    let dir = containers.container_dir(&id);
    let rootfs = prepare_layer_dirs(&dir, &image)?;
    let spec = InitSpec {
        rootfs,
        hostname: record.hostname.clone(),
        command: record.command.clone(),
        env: record.env.clone(),
        workdir: record.workdir.clone(),
        tty: args.tty,
        interactive: args.interactive,
        cgroup_namespace: Namespace::Cgroup.is_supported(Path::new("/proc")),
    };
    let code = start_and_wait(&containers, &mut record, &spec)?;
    guard.armed = false;
    if args.rm {
        containers
            .remove(&id)
            .with_context(|| format!("cannot remove container {id}"))?;
    }
    Ok(code)
}

/// Removes a half-made container (record and directory) unless disarmed.
struct RemoveOnFailure<'a> {
    store: &'a ContainerStore,
    id: &'a str,
    armed: bool,
}

impl Drop for RemoveOnFailure<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.store.remove(self.id) {
                eprintln!("berth: cleaning up container {} also failed: {e}", self.id);
            }
        }
    }
}

fn resolve_image(images: &ImageStore, name: &str) -> anyhow::Result<Image> {
    let bare = name.strip_suffix(":latest").unwrap_or(name);
    match images.get(bare) {
        Ok(image) => Ok(image),
        Err(berth_image::ImageError::NotFound { .. }) if bare == DEFAULT_IMAGE => images
            .ensure_busybox(DEFAULT_IMAGE)
            .context("cannot build the default busybox image"),
        Err(berth_image::ImageError::NotFound { .. }) => {
            bail!("unable to find image {name:?}: import it first with `berth image import FILE {bare}`")
        }
        Err(e) => Err(e).with_context(|| format!("cannot read image {name:?}")),
    }
}

fn validate_hostname(name: &str) -> anyhow::Result<String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid {
        bail!("invalid hostname {name:?}: use letters, digits, '-' and '.', at most 64 characters");
    }
    Ok(name.to_owned())
}

/// The container's environment: the image's, then berth's defaults for
/// what is missing, then `-e` (KEY=VALUE, or KEY to copy berth's own).
fn build_env(
    image_env: &[String],
    flags: &[String],
    hostname: &str,
    tty: bool,
) -> anyhow::Result<Vec<String>> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |entry: String| {
        let key = entry.split('=').next().unwrap_or_default().to_owned();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(entry);
    };
    set(format!(
        "PATH={}",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ));
    for entry in image_env {
        set(entry.clone());
    }
    set(format!("HOSTNAME={hostname}"));
    if tty {
        set("TERM=xterm".into());
    }
    for flag in flags {
        match flag.split_once('=') {
            Some(("", _)) => bail!("invalid environment variable {flag:?}: the name is empty"),
            Some(_) => set(flag.clone()),
            None if flag.is_empty() => {
                bail!("invalid environment variable \"\": the name is empty")
            }
            None => {
                if let Ok(value) = std::env::var(flag) {
                    set(format!("{flag}={value}"));
                }
            }
        }
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push("HOME=/root".into());
    }
    Ok(env)
}

/// Store the record under the requested name, or a generated one (retrying
/// the rare collision).
fn create_record(
    store: &ContainerStore,
    record: &mut ContainerRecord,
    name: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(name) = name {
        record.name = name.to_owned();
        return store.create(record).map_err(Into::into);
    }
    for _ in 0..16 {
        record.name = generate_name();
        match store.create(record) {
            Err(StateError::NameInUse { .. }) => continue,
            other => return other.map_err(Into::into),
        }
    }
    bail!("could not generate a free container name; pass --name")
}

/// The container's write layer: `upper` and `work` for overlay and the
/// `rootfs` mount point, all inside the container's private directory.
fn prepare_layer_dirs(dir: &Path, image: &Image) -> anyhow::Result<OverlayRootfs> {
    let rootfs = OverlayRootfs {
        lower: vec![image.rootfs.clone()],
        upper: dir.join("upper"),
        work: dir.join("work"),
        target: dir.join("rootfs"),
    };
    for path in [&rootfs.upper, &rootfs.work, &rootfs.target] {
        // The upper dir's mode becomes the mode of the container's "/".
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    Ok(rootfs)
}

/// Clone the init, put it in place, let it exec, and wait for it to end;
/// returns docker's exit code. Records the progress in `record`.
fn start_and_wait(
    store: &ContainerStore,
    record: &mut ContainerRecord,
    spec: &InitSpec,
) -> anyhow::Result<i32> {
    let namespaces = [
        Namespace::Uts,
        Namespace::Ipc,
        Namespace::Pid,
        Namespace::Net,
        Namespace::Mount,
    ];
    // The cgroup namespace is created by the init itself, after it has been
    // placed in its cgroup (see InitSpec::cgroup_namespace).
    // Block the relayed signals before the clone so none is lost; the init
    // unblocks them before exec.
    let mut relayed = SigSet::empty();
    for signal in RELAYED_SIGNALS {
        relayed.add(signal);
    }
    let mut previous_mask = SigSet::empty();
    nix::sys::signal::sigprocmask(
        SigmaskHow::SIG_BLOCK,
        Some(&relayed),
        Some(&mut previous_mask),
    )?;
    let _restore_mask = RestoreMask(previous_mask);
    let mut signals = SignalFd::with_flags(&relayed, SfdFlags::SFD_CLOEXEC)?;

    let (parent, child): (Channel<ToInit, FromInit>, Channel<FromInit, ToInit>) = channel()?;
    let parent_fd = std::os::fd::AsRawFd::as_raw_fd(&parent);
    let pid = berth_ns::spawn(&namespaces, move || {
        // The parent's end must not stay open in the child, or the child
        // would never see end-of-file if berth died.
        // SAFETY: closing a descriptor number this process owns a copy of;
        // the `parent` value that owns it is never used in the child.
        unsafe { libc::close(parent_fd) };
        init::run(spec, child)
    })?;

    let mut reaped = ChildGuard { pid, reaped: false };
    record.mark_running(
        pid.as_raw(),
        berth_state::process_start_time(Path::new("/proc"), pid.as_raw()),
    );
    store.save(record)?;
    parent.send(&ToInit::Start)?;

    let mut terminal = None;
    loop {
        match parent.recv_with_fd()? {
            None => break, // the init exec'd the command
            Some((FromInit::Terminal, fd)) => terminal = fd,
            Some((FromInit::Failed { code, message }, _)) => {
                let _ = waitpid(pid, None);
                reaped.reaped = true;
                return Err(CodedError { code, message }.into());
            }
        }
    }
    drop(parent);

    let status = match terminal {
        Some(master) => tty::relay(master, spec.interactive, &mut signals, pid)?,
        None if spec.tty => bail!("the container did not send its terminal"),
        None => wait_relaying_signals(&mut signals, pid)?,
    };
    reaped.reaped = true;
    let code = status_code(status).unwrap_or(125);
    *record = store.update(&record.id, |r| r.mark_exited(code))?;
    Ok(code)
}

/// Wait for `child` to end, forwarding every relayed signal to it.
fn wait_relaying_signals(signals: &mut SignalFd, child: Pid) -> anyhow::Result<WaitStatus> {
    loop {
        let status = waitpid(child, Some(WaitPidFlag::WNOHANG))?;
        if !matches!(status, WaitStatus::StillAlive) {
            return Ok(status);
        }
        let Some(info) = signals.read_signal()? else {
            continue;
        };
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGCHLD | Signal::SIGWINCH) | Err(_) => {}
            Ok(signal) => {
                let _ = kill(child, signal);
            }
        }
    }
}

struct RestoreMask(SigSet);

impl Drop for RestoreMask {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// Kills and reaps the init if berth leaves early through an error.
struct ChildGuard {
    pid: Pid,
    reaped: bool,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_layers_image_defaults_and_flags() {
        std::env::set_var("BERTH_TEST_COPIED", "from-host");
        let env = build_env(
            &["PATH=/bin".into(), "A=image".into()],
            &[
                "A=flag".into(),
                "B=x=y".into(),
                "BERTH_TEST_COPIED".into(),
                "BERTH_TEST_UNSET_VAR".into(),
            ],
            "host1",
            true,
        )
        .unwrap();
        assert_eq!(
            env,
            [
                "PATH=/bin",
                "HOSTNAME=host1",
                "TERM=xterm",
                "A=flag",
                "B=x=y",
                "BERTH_TEST_COPIED=from-host",
                "HOME=/root"
            ]
        );
        assert!(build_env(&[], &["=x".into()], "h", false).is_err());
    }

    #[test]
    fn hostnames_are_checked() {
        assert!(validate_hostname("web-1.example").is_ok());
        for bad in ["", "a_b", "-a", "a..b", &"x".repeat(65)] {
            assert!(validate_hostname(bad).is_err(), "{bad}");
        }
    }
}
