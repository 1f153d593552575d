//! The container's root filesystem as a union of read-only image layers and
//! a per-container writable layer: overlay, or aufs where only aufs exists.

use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use crate::FsError;

/// Where the kernel lists the filesystems it supports.
pub const PROC_FILESYSTEMS: &str = "/proc/filesystems";

/// The kernel copies at most one page of mount data; the string must fit
/// with its terminating NUL.
const MAX_MOUNT_DATA: usize = 4095;

/// See [`OverlayRootfs::volatile`]; always last in the mount data.
const VOLATILE_OPTION: &[u8] = b",volatile";

/// Where overlay marks a work directory that a volatile mount used.
const VOLATILE_MARKER: &str = "work/incompat/volatile";

/// Make the writable layer of a volatile overlay (see
/// [`OverlayRootfs::volatile`]) mountable again once that mount is gone
/// (its container ended, e.g. by a checkpoint that keeps it to be
/// restored): sync the filesystem of `upper`, as the unmount of a
/// volatile overlay did not, then remove the marker overlay left in
/// `work`. Nothing to do for a layer that was not mounted volatile.
pub fn settle_volatile_layer(upper: &Path, work: &Path) -> Result<(), FsError> {
    let marker = work.join(VOLATILE_MARKER);
    if !marker.exists() {
        return Ok(());
    }
    let dir = nix::fcntl::open(
        upper,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|source| FsError::Open {
        path: upper.to_path_buf(),
        source,
    })?;
    nix::unistd::syncfs(&dir).map_err(|source| FsError::Sync {
        path: upper.to_path_buf(),
        source,
    })?;
    std::fs::remove_dir_all(&marker).map_err(|source| FsError::RemoveMarker {
        path: marker.clone(),
        source,
    })
}

/// A union filesystem the kernel offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnionFs {
    /// overlayfs (preferred).
    Overlay,
    /// aufs (older kernels carrying the aufs patches).
    Aufs,
}

impl UnionFs {
    /// The filesystem type as passed to mount(2).
    pub fn fstype(self) -> &'static str {
        match self {
            UnionFs::Overlay => "overlay",
            UnionFs::Aufs => "aufs",
        }
    }
}

/// Pick the union filesystem from the content of `/proc/filesystems`:
/// overlay if listed, else aufs, else [`FsError::NoUnionFs`].
pub fn detect_union_fs(proc_filesystems: &str) -> Result<UnionFs, FsError> {
    let mut has_aufs = false;
    for line in proc_filesystems.lines() {
        // "nodev\toverlay" or "\text4": the name is the last field.
        match line.split_whitespace().last() {
            Some("overlay") => return Ok(UnionFs::Overlay),
            Some("aufs") => has_aufs = true,
            _ => {}
        }
    }
    if has_aufs {
        Ok(UnionFs::Aufs)
    } else {
        Err(FsError::NoUnionFs)
    }
}

/// Read `path` (normally [`PROC_FILESYSTEMS`]) and call [`detect_union_fs`].
pub fn detect_union_fs_at(path: &Path) -> Result<UnionFs, FsError> {
    let content = std::fs::read_to_string(path).map_err(|source| FsError::ReadFilesystems {
        path: path.to_path_buf(),
        source,
    })?;
    detect_union_fs(&content)
}

/// A container root filesystem: read-only image layers under a writable
/// per-container layer, mounted on `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayRootfs {
    /// Read-only image layers, topmost first.
    pub lower: Vec<PathBuf>,
    /// The container's writable layer (created if missing).
    pub upper: PathBuf,
    /// overlay's work directory, on the same filesystem as `upper` (created
    /// if missing; unused with aufs).
    pub work: PathBuf,
    /// Mount point (created if missing).
    pub target: PathBuf,
    /// The writable layer dies with the container (`run --rm`): overlay's
    /// `volatile` option (Linux 5.10), which leaves out every sync of the
    /// upper filesystem, the one at unmount in particular: unmounting an
    /// overlay otherwise syncs the whole filesystem `upper` is on, however
    /// much other work has dirtied it. After a volatile mount overlay
    /// leaves a marker in `work` and refuses to mount the layer again (a
    /// crash may have lost its writes) until [`settle_volatile_layer`]
    /// took it away. Kernels without the option mount without it; aufs
    /// ignores it.
    pub volatile: bool,
}

impl OverlayRootfs {
    /// Mount the union with whatever the kernel offers (see
    /// [`detect_union_fs`]). If `/proc/filesystems` lists neither overlay nor
    /// aufs, overlay is still tried, because mounting it loads the module.
    pub fn mount(&self) -> Result<(), FsError> {
        match detect_union_fs_at(Path::new(PROC_FILESYSTEMS)) {
            Ok(kind) => self.mount_with(kind),
            Err(FsError::NoUnionFs) => match self.mount_with(UnionFs::Overlay) {
                Err(FsError::Mount {
                    source: Errno::ENODEV,
                    ..
                }) => Err(FsError::NoUnionFs),
                other => other,
            },
            Err(e) => Err(e),
        }
    }

    /// Mount the union (overlay) for a container in a user namespace:
    /// each lower layer is first covered, at its own path, by an ID-mapped
    /// mount through `userns`, so that the image's files, owned by ids 0..N
    /// on disk, belong to the container's ids 0..N; the layers on disk
    /// stay untouched and shared with every other container. The covering
    /// mounts are made in the caller's mount namespace: call this in the
    /// container's own one (they go with it, and overlay keeps private
    /// clones of its layers).
    pub fn mount_idmapped(&self, userns: BorrowedFd<'_>) -> Result<(), FsError> {
        let mut covered = std::collections::HashSet::new();
        for layer in &self.lower {
            // Layers may be reached through the store's short links; the
            // mount goes on the directory itself.
            let dir = std::fs::canonicalize(layer).map_err(|e| FsError::Open {
                path: layer.clone(),
                source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
            if covered.insert(dir.clone()) {
                crate::options::overmount_idmapped(&dir, userns).map_err(|source| {
                    if source == Errno::EINVAL {
                        FsError::IdMapUnsupported {
                            path: dir.clone(),
                            source,
                        }
                    } else {
                        FsError::Mount {
                            target: dir.clone(),
                            fstype: "idmapped bind".into(),
                            source,
                        }
                    }
                })?;
            }
        }
        self.mount_with(UnionFs::Overlay)
    }

    /// Mount the union with the given filesystem.
    ///
    /// When the lower layers' absolute paths do not fit in the one page
    /// of mount options (an image with many layers), overlay gets them
    /// relative to their deepest common parent, which the calling thread
    /// enters for the mount(2) call and leaves again (as docker's overlay2
    /// driver does).
    pub fn mount_with(&self, kind: UnionFs) -> Result<(), FsError> {
        let (data, base) = match self.mount_data(kind) {
            Err(FsError::MountOptionsTooLong { .. }) if kind == UnionFs::Overlay => {
                let base =
                    common_parent(&self.lower).ok_or_else(|| FsError::MountOptionsTooLong {
                        target: self.target.clone(),
                        len: self.mount_data_len(),
                        max: MAX_MOUNT_DATA,
                    })?;
                (self.relative_mount_data(&base)?, Some(base))
            }
            other => (other?, None),
        };
        let dirs: &[&PathBuf] = match kind {
            UnionFs::Overlay => &[&self.upper, &self.work, &self.target],
            UnionFs::Aufs => &[&self.upper, &self.target],
        };
        for dir in dirs {
            std::fs::create_dir_all(dir).map_err(|source| FsError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mount_union = || {
            let mount_data = |data: &OsString| {
                mount(
                    Some(kind.fstype()),
                    &self.target,
                    Some(kind.fstype()),
                    MsFlags::empty(),
                    Some(data.as_os_str()),
                )
            };
            let mounted = match mount_data(&data) {
                // A kernel before 5.10 does not know the option.
                Err(Errno::EINVAL) if self.volatile && kind == UnionFs::Overlay => {
                    let mut bytes = data.clone().into_vec();
                    bytes.truncate(bytes.len() - VOLATILE_OPTION.len());
                    mount_data(&OsString::from_vec(bytes))
                }
                other => other,
            };
            mounted.map_err(|source| FsError::Mount {
                target: self.target.clone(),
                fstype: kind.fstype().to_owned(),
                source,
            })
        };
        match base {
            None => mount_union(),
            Some(base) => in_directory(&base, mount_union),
        }
    }

    fn mount_data_len(&self) -> usize {
        self.lower
            .iter()
            .chain([&self.upper, &self.work])
            .map(|p| p.as_os_str().len() + 1)
            .sum::<usize>()
            + "lowerdir=,upperdir=,workdir=".len()
            + if self.volatile {
                VOLATILE_OPTION.len()
            } else {
                0
            }
    }

    /// overlay's options with the lower layers relative to `base` (their
    /// common parent); upper and work stay absolute.
    fn relative_mount_data(&self, base: &Path) -> Result<OsString, FsError> {
        let relative = OverlayRootfs {
            lower: self
                .lower
                .iter()
                .map(|l| {
                    l.strip_prefix(base)
                        .map(Path::to_path_buf)
                        .unwrap_or_default()
                })
                .collect(),
            ..self.clone()
        };
        for path in &relative.lower {
            // Checked like absolute ones, with "/" in front.
            check_branch_path(&Path::new("/").join(path))?;
        }
        let mut data: Vec<u8> = b"lowerdir=".to_vec();
        for (i, layer) in relative.lower.iter().enumerate() {
            if i > 0 {
                data.push(b':');
            }
            data.extend_from_slice(layer.as_os_str().as_bytes());
        }
        for (key, path) in [
            (&b",upperdir="[..], &self.upper),
            (&b",workdir="[..], &self.work),
        ] {
            check_branch_path(path)?;
            data.extend_from_slice(key);
            data.extend_from_slice(path.as_os_str().as_bytes());
        }
        if self.volatile {
            data.extend_from_slice(VOLATILE_OPTION);
        }
        if data.len() > MAX_MOUNT_DATA {
            return Err(FsError::MountOptionsTooLong {
                target: self.target.clone(),
                len: data.len(),
                max: MAX_MOUNT_DATA,
            });
        }
        Ok(OsString::from_vec(data))
    }
}

/// The deepest directory that contains every path of `paths` (none when
/// they share only `/` or one of them is the parent itself).
fn common_parent(paths: &[PathBuf]) -> Option<PathBuf> {
    let first = paths.first()?;
    let mut base = first.parent()?.to_path_buf();
    for path in paths {
        while !path.starts_with(&base) || path == &base {
            base = base.parent()?.to_path_buf();
        }
    }
    (base != Path::new("/")).then_some(base)
}

/// Run `f` with the calling thread's working directory at `dir`, then go
/// back to where it was.
fn in_directory<T>(dir: &Path, f: impl FnOnce() -> Result<T, FsError>) -> Result<T, FsError> {
    let chdir_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FsError::Chdir { path, source }
    };
    let previous = nix::fcntl::open(
        ".",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(chdir_error(Path::new(".")))?;
    nix::unistd::chdir(dir).map_err(chdir_error(dir))?;
    let result = f();
    nix::unistd::fchdir(&previous).map_err(chdir_error(Path::new(".")))?;
    result
}

impl OverlayRootfs {
    /// The option string passed to mount(2) for `kind`.
    ///
    /// overlay: `lowerdir=L1:L2,upperdir=U,workdir=W`;
    /// aufs: `br=U=rw:L1=ro+wh:L2=ro+wh` (the `+wh` makes aufs honour the
    /// whiteouts inside image layers, as docker's aufs driver does).
    pub fn mount_data(&self, kind: UnionFs) -> Result<OsString, FsError> {
        if self.lower.is_empty() {
            return Err(FsError::NoLowerLayers {
                target: self.target.clone(),
            });
        }
        for path in self.lower.iter().chain([&self.upper, &self.work]) {
            check_branch_path(path)?;
        }
        let mut data: Vec<u8> = Vec::new();
        match kind {
            UnionFs::Overlay => {
                data.extend_from_slice(b"lowerdir=");
                for (i, layer) in self.lower.iter().enumerate() {
                    if i > 0 {
                        data.push(b':');
                    }
                    data.extend_from_slice(layer.as_os_str().as_bytes());
                }
                data.extend_from_slice(b",upperdir=");
                data.extend_from_slice(self.upper.as_os_str().as_bytes());
                data.extend_from_slice(b",workdir=");
                data.extend_from_slice(self.work.as_os_str().as_bytes());
                if self.volatile {
                    data.extend_from_slice(VOLATILE_OPTION);
                }
            }
            UnionFs::Aufs => {
                data.extend_from_slice(b"br=");
                data.extend_from_slice(self.upper.as_os_str().as_bytes());
                data.extend_from_slice(b"=rw");
                for layer in &self.lower {
                    data.push(b':');
                    data.extend_from_slice(layer.as_os_str().as_bytes());
                    data.extend_from_slice(b"=ro+wh");
                }
            }
        }
        if data.len() > MAX_MOUNT_DATA {
            return Err(FsError::MountOptionsTooLong {
                target: self.target.clone(),
                len: data.len(),
                max: MAX_MOUNT_DATA,
            });
        }
        Ok(OsString::from_vec(data))
    }
}

/// Branch paths go into a `,`/`:`/`=`-separated option string: refuse those
/// that would be misparsed rather than escaping them.
fn check_branch_path(path: &Path) -> Result<(), FsError> {
    let bytes = path.as_os_str().as_bytes();
    let reason = if !path.is_absolute() {
        "the path must be absolute"
    } else if bytes
        .iter()
        .any(|b| matches!(b, b',' | b':' | b'=' | b'\\'))
    {
        "the path contains one of , : = \\"
    } else if bytes.iter().any(|b| b.is_ascii_control()) {
        "the path contains a control character"
    } else {
        return Ok(());
    };
    Err(FsError::UnusableBranchPath {
        path: path.to_path_buf(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERLAY_HOST: &str =
        "nodev\tsysfs\nnodev\ttmpfs\n\text3\n\text4\nnodev\toverlay\nnodev\tmqueue\n";

    #[test]
    fn overlay_is_detected() {
        assert_eq!(detect_union_fs(OVERLAY_HOST).unwrap(), UnionFs::Overlay);
    }

    #[test]
    fn overlay_is_preferred_over_aufs() {
        let s = "nodev\taufs\nnodev\toverlay\n";
        assert_eq!(detect_union_fs(s).unwrap(), UnionFs::Overlay);
    }

    #[test]
    fn aufs_when_no_overlay() {
        let s = "nodev\tsysfs\n\text4\nnodev\taufs\n";
        assert_eq!(detect_union_fs(s).unwrap(), UnionFs::Aufs);
    }

    #[test]
    fn neither_is_an_error() {
        let s = "nodev\tsysfs\n\text4\nnodev\toverlayfs_not_really\n";
        assert!(matches!(detect_union_fs(s), Err(FsError::NoUnionFs)));
        assert!(matches!(detect_union_fs(""), Err(FsError::NoUnionFs)));
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = detect_union_fs_at(Path::new("/nonexistent/filesystems")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/filesystems"),
            "{err}"
        );
    }

    fn rootfs() -> OverlayRootfs {
        OverlayRootfs {
            lower: vec!["/l/top".into(), "/l/base".into()],
            upper: "/c/upper".into(),
            work: "/c/work".into(),
            target: "/c/merged".into(),
            volatile: false,
        }
    }

    #[test]
    fn a_volatile_overlay_says_so_last_in_both_forms() {
        let volatile = OverlayRootfs {
            volatile: true,
            ..rootfs()
        };
        let data = volatile.mount_data(UnionFs::Overlay).unwrap();
        assert_eq!(
            data,
            "lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work,volatile"
        );
        let relative = volatile.relative_mount_data(Path::new("/l")).unwrap();
        assert_eq!(
            relative,
            "lowerdir=top:base,upperdir=/c/upper,workdir=/c/work,volatile"
        );
        // aufs has no such option.
        let aufs = volatile.mount_data(UnionFs::Aufs).unwrap();
        assert!(!aufs.to_string_lossy().contains("volatile"), "{aufs:?}");
    }

    #[test]
    fn overlay_options() {
        let data = rootfs().mount_data(UnionFs::Overlay).unwrap();
        assert_eq!(
            data,
            "lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work"
        );
    }

    #[test]
    fn aufs_options() {
        let data = rootfs().mount_data(UnionFs::Aufs).unwrap();
        assert_eq!(data, "br=/c/upper=rw:/l/top=ro+wh:/l/base=ro+wh");
    }

    #[test]
    fn bad_branch_paths_are_refused() {
        let mut r = rootfs();
        r.lower.push("/l/a:b".into());
        let err = r.mount_data(UnionFs::Overlay).unwrap_err();
        assert!(err.to_string().contains("/l/a:b"), "{err}");

        let mut r = rootfs();
        r.upper = "relative/upper".into();
        assert!(matches!(
            r.mount_data(UnionFs::Overlay),
            Err(FsError::UnusableBranchPath { .. })
        ));

        let mut r = rootfs();
        r.lower.clear();
        assert!(matches!(
            r.mount_data(UnionFs::Overlay),
            Err(FsError::NoLowerLayers { .. })
        ));
    }

    #[test]
    fn layers_go_relative_to_their_deepest_common_parent() {
        let layers: Vec<PathBuf> = ["/s/layers/aa/diff", "/s/layers/bb/diff", "/s/layers/c/diff"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(common_parent(&layers), Some(PathBuf::from("/s/layers")));
        assert_eq!(
            common_parent(&layers[..1]),
            Some(PathBuf::from("/s/layers/aa"))
        );
        assert_eq!(
            common_parent(&[PathBuf::from("/a/x"), PathBuf::from("/b/y")]),
            None,
            "only / in common"
        );
        let r = OverlayRootfs {
            lower: layers,
            ..rootfs()
        };
        let data = r.relative_mount_data(Path::new("/s/layers")).unwrap();
        assert_eq!(
            data,
            "lowerdir=aa/diff:bb/diff:c/diff,upperdir=/c/upper,workdir=/c/work"
        );
    }

    #[test]
    fn too_long_options_are_refused() {
        let mut r = rootfs();
        r.lower = (0..200)
            .map(|i| PathBuf::from(format!("/var/lib/berth/layers/{i:064}")))
            .collect();
        assert!(matches!(
            r.mount_data(UnionFs::Overlay),
            Err(FsError::MountOptionsTooLong { .. })
        ));
    }
}
