//! Volumes: host directories (or files) bind-mounted into the container.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, Mode};
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC, SYSFS_MAGIC};
use nix::sys::statvfs::{fstatvfs, FsFlags};

use crate::options::{current_mount_flags, set_attrs_recursive, RecursiveAttrs, LOCKED_FLAGS};
use crate::resolve::{
    bind_mount_fds, is_dir, open_at_root, open_trusted_dir, proc_fd_path, Create, Resolver,
};
use crate::FsError;

/// One `-v HOST:CONTAINER[:ro|rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The host path (absolute); created as a directory if missing.
    pub source: PathBuf,
    /// The path inside the container (absolute, not `/`), lexically
    /// cleaned by [`parse_volume`]. Resolved inside the rootfs when mounted.
    pub target: String,
    /// `:ro`: the mount is read-only (recursively where the kernel has
    /// mount_setattr(2)).
    pub read_only: bool,
}

/// `path`'s components with `.`, empty ones and `..` resolved lexically
/// (`..` never climbs above `/`).
pub(crate) fn clean_components(path: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    parts
}

/// Parse docker's `-v HOST:CONTAINER[:ro|rw]`.
///
/// HOST must be an absolute path (berth has no named or anonymous
/// volumes), CONTAINER an absolute path other than `/` (it is cleaned
/// lexically: `/a/./b/` is `/a/b`), and the only options are `ro` and `rw`
/// (the default). Errors are [`FsError::InvalidVolume`] with a reason.
pub fn parse_volume(spec: &str) -> Result<Volume, FsError> {
    let bad = |reason: String| FsError::InvalidVolume {
        spec: spec.to_owned(),
        reason,
    };
    if spec.contains('\0') {
        return Err(bad("it contains a NUL byte".into()));
    }
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, ctr, option) =
        match parts.as_slice() {
            [_] => return Err(bad(
                "expected HOST:CONTAINER[:ro|rw] (named and anonymous volumes are not supported)"
                    .into(),
            )),
            [host, ctr] => (*host, *ctr, None),
            [host, ctr, option] => (*host, *ctr, Some(*option)),
            _ => return Err(bad("too many ':' (expected HOST:CONTAINER[:ro|rw])".into())),
        };
    if host.is_empty() {
        return Err(bad(
            "the host path is empty; it must be an absolute path".into()
        ));
    }
    if !host.starts_with('/') {
        return Err(bad(format!(
            "the host path {host:?} is not absolute (named volumes are not supported; \
             give an absolute host path)"
        )));
    }
    if ctr.is_empty() {
        return Err(bad("the container path is empty".into()));
    }
    if !ctr.starts_with('/') {
        return Err(bad(format!("the container path {ctr:?} is not absolute")));
    }
    let parts = clean_components(ctr);
    if parts.is_empty() {
        return Err(bad("the container path cannot be /".into()));
    }
    let read_only = match option {
        None | Some("rw") => false,
        Some("ro") => true,
        Some("") => return Err(bad("empty option after ':' (expected ro or rw)".into())),
        Some(other) => {
            return Err(bad(format!(
                "unknown option {other:?} (only ro and rw are supported)"
            )))
        }
    };
    Ok(Volume {
        source: PathBuf::from(host),
        target: format!("/{}", parts.join("/")),
        read_only,
    })
}

/// The checks that do not depend on the filesystem: absolute paths, no
/// `/` target, no two volumes on the same container path.
fn check_volumes(volumes: &[Volume]) -> Result<(), FsError> {
    let mut seen = HashSet::new();
    for v in volumes {
        let spec = || format!("{}:{}", v.source.display(), v.target);
        if !v.source.is_absolute() {
            return Err(FsError::InvalidVolume {
                spec: spec(),
                reason: "the host path is not absolute".into(),
            });
        }
        let parts = clean_components(&v.target);
        if !v.target.starts_with('/') || parts.is_empty() {
            return Err(FsError::InvalidVolume {
                spec: spec(),
                reason: "the container path must be absolute and not /".into(),
            });
        }
        let cleaned = format!("/{}", parts.join("/"));
        if !seen.insert(cleaned.clone()) {
            return Err(FsError::DuplicateVolumeTarget { target: cleaned });
        }
    }
    Ok(())
}

/// Create the host side of every volume that is missing, as a directory
/// (mode 0755, parents too), after checking the list as
/// [`mount_volumes`] will. Call it in the parent before creating the
/// container, so that errors surface before anything is started. An
/// existing source (directory, file, or symlink to one) is left alone.
pub fn prepare_volume_sources(volumes: &[Volume]) -> Result<(), FsError> {
    check_volumes(volumes)?;
    for v in volumes {
        match std::fs::metadata(&v.source) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&v.source)
                .map_err(|source| FsError::CreateDir {
                    path: v.source.clone(),
                    source,
                })?,
            Err(source) => {
                return Err(FsError::Stat {
                    path: v.source.clone(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Bind-mount every volume into `rootfs` (the container's rootfs, before
/// [`crate::pivot_root`], after [`crate::mount_kernel_filesystems`]), in
/// the container's own mount namespace with private mounts
/// ([`crate::make_mounts_private`]).
///
/// Volumes are mounted parents first (by the depth of their container
/// path, as docker does). For each:
///
/// 1. the host source is opened `O_PATH` (it must exist: see
///    [`prepare_volume_sources`]);
/// 2. the target is resolved inside `rootfs` as if it were `/`
///    ([`crate::open_in_root`]: image symlinks such as `/data -> /etc` are
///    followed to `<rootfs>/etc`, never to the host's, magic links
///    refused), missing components created (0755), the last one as an empty
///    file if the source is not a directory; a directory source on a file
///    target (or the reverse) is [`FsError::VolumeKindMismatch`], a target
///    inside the container's procfs or sysfs is
///    [`FsError::VolumeTargetForbidden`];
/// 3. `mount(/proc/self/fd/SRC, /proc/self/fd/TARGET, MS_BIND|MS_REC)`:
///    the mount goes through the two handles, never through a path that
///    could be swapped for a symlink;
/// 4. the target is resolved again and must now be the source's inode
///    ([`FsError::VolumeTargetMoved`] otherwise);
/// 5. for `:ro`, mount_setattr(2) `MOUNT_ATTR_RDONLY` with `AT_RECURSIVE`
///    (submounts of the source become read-only too); on kernels before
///    5.12, `MS_BIND|MS_REMOUNT|MS_RDONLY` keeping the mount's
///    nosuid/nodev/noexec/atime flags (read with statvfs), which covers the
///    top mount only. The mount must then report `ST_RDONLY`.
///
/// Needs `/proc/self/fd` (the host's /proc is still visible at that point).
/// Mounts made before an error are not undone: they vanish with the mount
/// namespace.
pub fn mount_volumes(rootfs: &Path, volumes: &[Volume]) -> Result<(), FsError> {
    check_volumes(volumes)?;
    if volumes.is_empty() {
        return Ok(());
    }
    let root = open_trusted_dir(rootfs)?;
    let mut ordered: Vec<&Volume> = volumes.iter().collect();
    ordered.sort_by_key(|v| clean_components(&v.target).len());
    for v in ordered {
        mount_volume(&root, rootfs, v)?;
    }
    Ok(())
}

pub(crate) fn kind(dir: bool) -> &'static str {
    if dir {
        "a directory"
    } else {
        "a file"
    }
}

fn mount_volume(root: &OwnedFd, rootfs: &Path, v: &Volume) -> Result<(), FsError> {
    let shown = rootfs.join(v.target.trim_start_matches('/'));
    let stat_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: Errno| FsError::Stat {
            path,
            source: e.into(),
        }
    };

    let src =
        open(&v.source, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(|source| {
            FsError::Open {
                path: v.source.clone(),
                source,
            }
        })?;
    let src_st = fstat(&src).map_err(stat_err(&v.source))?;
    let src_is_dir = is_dir(&src_st);
    let create = if src_is_dir {
        Create::Dir
    } else {
        Create::File
    };

    let target = open_at_root(root, rootfs, &v.target, create, Resolver::Auto)?;
    let target_st = fstat(&target).map_err(stat_err(&shown))?;
    if is_dir(&target_st) != src_is_dir {
        return Err(FsError::VolumeKindMismatch {
            host: v.source.clone(),
            host_kind: kind(src_is_dir),
            target: shown,
            target_kind: kind(!src_is_dir),
        });
    }
    let fs_type = fstatfs(&target)
        .map_err(stat_err(&shown))?
        .filesystem_type();
    for (magic, name) in [(PROC_SUPER_MAGIC, "procfs"), (SYSFS_MAGIC, "sysfs")] {
        if fs_type == magic {
            return Err(FsError::VolumeTargetForbidden {
                target: shown,
                fs: name,
            });
        }
    }

    bind_mount_fds(&src, &target, true, &shown)?;
    drop(target);

    // The old handle names the directory under the new mount; look the
    // path up again to get the mount itself, and check it is the volume.
    let mounted = open_at_root(root, rootfs, &v.target, Create::Nothing, Resolver::Auto)?;
    let st = fstat(&mounted).map_err(stat_err(&shown))?;
    if (st.st_dev, st.st_ino) != (src_st.st_dev, src_st.st_ino) {
        return Err(FsError::VolumeTargetMoved { target: shown });
    }
    if v.read_only {
        make_read_only(&mounted, &shown)?;
    }
    Ok(())
}

pub(crate) fn make_read_only(mnt: &OwnedFd, shown: &Path) -> Result<(), FsError> {
    let ro_err = |source| FsError::ReadOnly {
        target: shown.to_path_buf(),
        source,
    };
    let read_only = RecursiveAttrs {
        set: RecursiveAttrs::RDONLY,
        clear: 0,
    };
    match set_attrs_recursive(mnt, read_only) {
        Ok(()) => {}
        Err(Errno::ENOSYS) => {
            // Keep the flags the kernel may have locked (nosuid, nodev,
            // noexec, the atime mode).
            let current = current_mount_flags(fstatvfs(mnt).map_err(ro_err)?.flags());
            mount(
                None::<&str>,
                &proc_fd_path(mnt),
                None::<&str>,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | (current & LOCKED_FLAGS),
                None::<&str>,
            )
            .map_err(ro_err)?;
        }
        Err(e) => return Err(ro_err(e)),
    }
    let flags = fstatvfs(mnt).map_err(ro_err)?.flags();
    if !flags.contains(FsFlags::ST_RDONLY) {
        return Err(FsError::StillWritable {
            target: shown.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(spec: &str) -> String {
        match parse_volume(spec) {
            Err(FsError::InvalidVolume { spec: s, reason }) => {
                assert_eq!(s, spec);
                reason
            }
            other => panic!("{spec:?}: {other:?}"),
        }
    }

    #[test]
    fn good_specs() {
        assert_eq!(
            parse_volume("/srv/data:/data").unwrap(),
            Volume {
                source: "/srv/data".into(),
                target: "/data".into(),
                read_only: false
            }
        );
        let v = parse_volume("/srv/data:/var//lib/./x/:ro").unwrap();
        assert_eq!(v.target, "/var/lib/x");
        assert!(v.read_only);
        assert!(!parse_volume("/a:/b:rw").unwrap().read_only);
        assert_eq!(parse_volume("/a:/b/../c").unwrap().target, "/c");
    }

    #[test]
    fn bad_specs() {
        assert!(reason("data:/data").contains("not absolute"));
        assert!(reason("./data:/data").contains("not absolute"));
        assert!(reason(":/data").contains("empty"));
        assert!(reason("").contains("expected HOST:CONTAINER"));
        assert!(reason("/data").contains("expected HOST:CONTAINER"));
        assert!(reason("a:b:c:d").contains("too many"));
        assert!(reason("/a:/b:c:d").contains("too many"));
        assert!(reason("/a:/b:rx").contains("unknown option \"rx\""));
        assert!(reason("/a:/b:").contains("empty option"));
        assert!(reason("/a:").contains("container path is empty"));
        assert!(reason("/a:b").contains("not absolute"));
        assert!(reason("/a:/").contains("cannot be /"));
        assert!(reason("/a:/x/..").contains("cannot be /"));
        assert!(reason("/a\0:/b").contains("NUL"));
        let msg = parse_volume("rel:/data").unwrap_err().to_string();
        assert!(
            msg.starts_with("invalid volume \"rel:/data\": the host path \"rel\" is not absolute"),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_targets_are_refused() {
        let a = parse_volume("/a:/data").unwrap();
        let b = parse_volume("/b:/data/").unwrap();
        assert!(matches!(
            prepare_volume_sources(&[a.clone(), b]),
            Err(FsError::DuplicateVolumeTarget { ref target }) if target == "/data"
        ));
        let rel = Volume {
            source: "rel".into(),
            ..a
        };
        assert!(matches!(
            mount_volumes(Path::new("/nonexistent"), &[rel]),
            Err(FsError::InvalidVolume { .. })
        ));
    }

    #[test]
    fn sources_are_created() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("a/b");
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let vols = [
            parse_volume(&format!("{}:/x", src.display())).unwrap(),
            parse_volume(&format!("{}:/y:ro", file.display())).unwrap(),
        ];
        prepare_volume_sources(&vols).unwrap();
        assert!(src.is_dir());
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
        prepare_volume_sources(&vols).unwrap();
    }
}
