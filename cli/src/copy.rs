//! `berth cp`: copy files between a container and the host (or a tar
//! stream), with docker's rules. The safe part (resolution inside the
//! container's root, the walk, the writers) is `berth_fs::copy`; this file
//! finds the container's root and applies docker's conventions.

use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use berth_fs::copy::{
    absolute_from, archive_tree, copy_tree, extract_archive, names_contents, plan_copy, Ownership,
    TreeRoot,
};
use berth_state::{ContainerRecord, IdRange};

use crate::args::CpArgs;
use crate::paths::Paths;

/// One side of `berth cp`.
#[derive(Debug, PartialEq, Eq)]
enum Side {
    /// `-`: a tar stream on standard input or output.
    Stream,
    /// A host path.
    Host(String),
    /// `CONTAINER:PATH` (the path relative to the container's `/`).
    Container { container: String, path: String },
}

/// docker's split: a path that starts with `/` or `.` is the host's (so
/// `./a:b` is a file), otherwise `NAME:PATH` names a container.
fn parse_side(arg: &str) -> Side {
    if arg == "-" {
        return Side::Stream;
    }
    if arg.starts_with('/') || arg.starts_with('.') {
        return Side::Host(arg.to_owned());
    }
    match arg.split_once(':') {
        Some((container, path)) if !container.is_empty() => {
            let path = if path.starts_with('/') {
                path.to_owned()
            } else {
                format!("/{path}")
            };
            Side::Container {
                container: container.to_owned(),
                path,
            }
        }
        _ => Side::Host(arg.to_owned()),
    }
}

/// A container's root for the length of a copy: a running container's
/// through `/proc/PID/root` (its mount namespace, volumes included), a
/// stopped one's rootfs and volumes mounted in a mount namespace of
/// berth's own, which vanishes with it.
struct ContainerRoot {
    root: TreeRoot,
    /// The rootfs mounted for a stopped container, unmounted on drop.
    mounted: Option<PathBuf>,
}

impl Drop for ContainerRoot {
    fn drop(&mut self) {
        if let Some(target) = &self.mounted {
            let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn open_container_root(paths: &Paths, record: &ContainerRecord) -> anyhow::Result<ContainerRoot> {
    // Errors name the container in their context (see `cp`).
    let label = "";
    if let (true, Some(pid)) = (crate::container::is_alive(record), record.pid) {
        let root = TreeRoot::open(&PathBuf::from(format!("/proc/{pid}/root")), label)
            .with_context(|| format!("cannot enter container {}", record.name))?;
        return Ok(ContainerRoot {
            root,
            mounted: None,
        });
    }
    let containers = paths.containers()?;
    let images = paths.images()?;
    let image = images
        .resolve(&record.image_id)
        .with_context(|| format!("the image of container {} is gone", record.name))?;
    let dir = containers.container_dir(&record.id);
    let [upper, work, target] = crate::container_spec::layer_dirs(&containers, &record.id);
    let mut volumes = crate::network::EtcFiles::new(&dir).volumes();
    if record.mounts.is_empty() {
        // A record from before `mounts`: its `-v` were host binds.
        for spec in &record.volumes {
            volumes.push(berth_fs::parse_volume(spec)?);
        }
    }
    // Binds and volumes (a tmpfs has nothing to copy while stopped).
    for mount in record.mounts.iter().filter(|m| !m.source.is_empty()) {
        volumes.push(berth_fs::Volume {
            source: PathBuf::from(&mount.source),
            target: mount.destination.clone(),
            read_only: !mount.rw,
        });
    }
    // Only this process sees what is mounted from here on.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("cannot make a private mount namespace to mount the stopped container's files")?;
    berth_fs::make_mounts_private()?;
    berth_fs::OverlayRootfs {
        lower: image
            .lower_links()
            .iter()
            .map(|link| images.root().join(link))
            .collect(),
        upper,
        work,
        target: target.clone(),
        volatile: false,
    }
    .mount()
    .with_context(|| format!("cannot mount the files of container {}", record.name))?;
    let mounted = ContainerRoot {
        // Set before anything else can fail, so the mount is undone.
        root: TreeRoot::open(&target, label)?,
        mounted: Some(target.clone()),
    };
    berth_fs::mount_volumes(&target, &volumes)
        .with_context(|| format!("cannot mount the volumes of container {}", record.name))?;
    Ok(mounted)
}

/// Who owns what `cp` writes on the host without `-a`: whoever runs it.
fn invoking_user() -> Ownership {
    Ownership::Fixed {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
    }
}

/// Who owns what `cp` writes into a container: without `-a` its root
/// user, with `-a` the source's ids, as host ids where the container has
/// a user namespace.
fn ownership_in(record: &ContainerRecord, archive: bool) -> Ownership {
    let Some(maps) = &record.id_maps else {
        return if archive {
            Ownership::FromSource
        } else {
            Ownership::Fixed { uid: 0, gid: 0 }
        };
    };
    let ranges = |list: &[IdRange]| {
        list.iter()
            .map(|r| [r.container_id, r.host_id, r.size])
            .collect()
    };
    match (archive, maps.root()) {
        (false, Some((uid, gid))) => Ownership::Fixed { uid, gid },
        _ => Ownership::Mapped {
            uid: ranges(&maps.uid),
            gid: ranges(&maps.gid),
        },
    }
}

/// The ids a container's files keep on the way out (`-a`, tar streams):
/// as the container sees them.
fn ownership_out(record: &ContainerRecord) -> Ownership {
    match &record.id_maps {
        None => Ownership::FromSource,
        Some(maps) => {
            let ranges = |list: &[IdRange]| {
                list.iter()
                    .map(|r| [r.host_id, r.container_id, r.size])
                    .collect()
            };
            Ownership::Mapped {
                uid: ranges(&maps.uid),
                gid: ranges(&maps.gid),
            }
        }
    }
}

pub fn cp(paths: &Paths, args: &CpArgs) -> anyhow::Result<i32> {
    let source = parse_side(&args.source);
    let dest = parse_side(&args.destination);
    // The bytes copied, and where to (empty for a stream).
    let (copied, to) = match (source, dest) {
        (Side::Container { container, path }, other @ (Side::Host(_) | Side::Stream)) => {
            let record = crate::container::find(&paths.containers()?, &container)?;
            let root = open_container_root(paths, &record)?;
            let to = match &other {
                Side::Host(path) => path.clone(),
                _ => String::new(),
            };
            let copied = copy_out(&root.root, &path, other, args, ownership_out(&record))
                .with_context(|| format!("cannot copy {container}:{path}"))?;
            (copied, to)
        }
        (other @ (Side::Host(_) | Side::Stream), Side::Container { container, path }) => {
            let record = crate::container::find(&paths.containers()?, &container)?;
            let root = open_container_root(paths, &record)?;
            let owner = ownership_in(&record, args.archive);
            let copied = copy_in(&root.root, other, &path, args, owner)
                .with_context(|| format!("cannot copy to {container}:{path}"))?;
            (copied, format!("{container}:{path}"))
        }
        (Side::Container { .. }, Side::Container { .. }) => {
            bail!("copying between containers is not supported")
        }
        _ => bail!("must specify at least one container source"),
    };
    // docker reports this only to a person watching.
    if !args.quiet && !to.is_empty() && std::io::stderr().is_terminal() {
        eprintln!(
            "Successfully copied {} to {to}",
            crate::table::human_size(copied)
        );
    }
    Ok(0)
}

fn host_root() -> anyhow::Result<(TreeRoot, PathBuf)> {
    let cwd = std::env::current_dir().context("cannot find the current directory")?;
    Ok((TreeRoot::open(Path::new("/"), "")?, cwd))
}

/// Out of the container: to a host path, or as a tar stream to stdout.
fn copy_out(
    root: &TreeRoot,
    path: &str,
    to: Side,
    args: &CpArgs,
    kept: Ownership,
) -> anyhow::Result<u64> {
    let source = root.source(path, args.follow_link)?;
    let contents = names_contents(path) || path.trim_end_matches('/').is_empty();
    match to {
        Side::Stream => {
            if !source.is_dir() && berth_fs::copy::names_a_directory(path) {
                bail!(berth_fs::copy::CopyError::NotADirectory { path: path.into() });
            }
            let name = (!contents).then(|| stream_name(path));
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("cowardly refusing to write a tar stream to a terminal: redirect the output");
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            let written = archive_tree(&source, name.as_deref().map(OsStr::new), &mut out, kept)
                .map_err(anyhow::Error::from)
                .and_then(|n| Ok(out.flush().map(|()| n)?));
            exit_if_reader_left(&written);
            Ok(written?)
        }
        Side::Host(dest) => {
            let (host, cwd) = host_root()?;
            let dest = absolute_from(&cwd, &dest);
            let plan = plan_copy(path, source.is_dir(), &dest, host.existing(&dest)?)?;
            let into = host.directory(&plan.into)?;
            let owner = if args.archive { kept } else { invoking_user() };
            Ok(copy_tree(&source, plan.name.as_deref(), &into, owner)?)
        }
        Side::Container { .. } => unreachable!("two containers are refused before"),
    }
}

/// The name of the top entry in a tar stream: the source's last component.
fn stream_name(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "..")
        .unwrap_or(".")
        .to_owned()
}

/// Into the container: from a host path, or a tar stream on stdin that is
/// unpacked into the (existing) destination directory.
fn copy_in(
    root: &TreeRoot,
    from: Side,
    path: &str,
    args: &CpArgs,
    owner: Ownership,
) -> anyhow::Result<u64> {
    match from {
        Side::Stream => {
            let into = root.directory(path)?;
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("cowardly refusing to read a tar stream from a terminal: redirect the input");
            }
            Ok(extract_archive(
                std::io::BufReader::with_capacity(1 << 20, stdin.lock()),
                &into,
                owner,
            )?)
        }
        Side::Host(host_path) => {
            let (host, cwd) = host_root()?;
            let host_path = absolute_from(&cwd, &host_path);
            let source = host.source(&host_path, args.follow_link)?;
            let plan = plan_copy(&host_path, source.is_dir(), path, root.existing(path)?)?;
            let into = root.directory(&plan.into)?;
            Ok(copy_tree(&source, plan.name.as_deref(), &into, owner)?)
        }
        Side::Container { .. } => unreachable!("two containers are refused before"),
    }
}

/// A reader that went away (`berth cp C:/x - | head -c1`) ends berth as
/// every other output does: quietly, 141.
fn exit_if_reader_left<T>(result: &anyhow::Result<T>) {
    if let Err(e) = result {
        let closed = e.chain().any(|cause| {
            let io =
                cause
                    .downcast_ref::<std::io::Error>()
                    .or_else(|| match cause.downcast_ref::<berth_fs::copy::CopyError>() {
                        Some(berth_fs::copy::CopyError::WriteArchive { source }) => Some(source),
                        _ => None,
                    });
            io.is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if closed {
            std::process::exit(crate::exit::CLOSED_PIPE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_side, stream_name, Side};

    fn container(name: &str, path: &str) -> Side {
        Side::Container {
            container: name.into(),
            path: path.into(),
        }
    }

    #[test]
    fn arguments_split_like_docker() {
        assert_eq!(parse_side("-"), Side::Stream);
        assert_eq!(parse_side("c1:/etc/hosts"), container("c1", "/etc/hosts"));
        assert_eq!(parse_side("c1:etc"), container("c1", "/etc"));
        assert_eq!(parse_side("c1:"), container("c1", "/"));
        assert_eq!(parse_side("/tmp/a:b"), Side::Host("/tmp/a:b".into()));
        assert_eq!(parse_side("./a:b"), Side::Host("./a:b".into()));
        assert_eq!(parse_side("file"), Side::Host("file".into()));
        assert_eq!(parse_side(":x"), Side::Host(":x".into()));
    }

    #[test]
    fn streams_are_named_after_the_source() {
        assert_eq!(stream_name("/etc/app/"), "app");
        assert_eq!(stream_name("/etc/hosts"), "hosts");
        assert_eq!(stream_name("/"), ".");
    }
}
