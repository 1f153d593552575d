//! The container's root filesystem from the spec: propagation, the
//! engine's overlay (if asked for), the spec's mounts in order, devices,
//! then pivot_root, masked and read-only paths and a read-only root. Runs
//! in the init, inside the container's own mount namespace.

use std::path::{Path, PathBuf};

use berth_fs::{DeviceKind, DeviceNode, MountEntry, OverlayRootfs};
use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxDeviceType, Spec};
use serde::Deserialize;

use super::init::{InitFailure, InitPlan, InitStep};
use super::OVERLAY_ROOTFS_ANNOTATION;

/// The value of [`OVERLAY_ROOTFS_ANNOTATION`].
#[derive(Debug, Deserialize)]
pub(crate) struct OverlayRequest {
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// See [`OverlayRootfs::volatile`] (absent: not volatile).
    #[serde(default)]
    pub volatile: bool,
}

impl OverlayRequest {
    /// The union this asks for, mounted on `rootfs`.
    pub(crate) fn onto(self, rootfs: &Path) -> OverlayRootfs {
        OverlayRootfs {
            lower: self.lower,
            upper: self.upper,
            work: self.work,
            target: rootfs.to_path_buf(),
            volatile: self.volatile,
        }
    }
}

/// Before hooks and the pivot: everything mounted below the rootfs path.
pub(crate) fn prepare(
    plan: &InitPlan<'_>,
    cgroup_views: &[(String, PathBuf)],
) -> Result<(), InitFailure> {
    let spec = plan.spec;
    let rootfs = &plan.rootfs;
    // In the runtime's mount namespace (the spec has none) the host's
    // propagation stays as it is.
    if !shares_the_runtimes_mounts(plan) {
        let propagation = rootfs_propagation(spec).step("rootfsPropagation")?;
        berth_fs::set_rootfs_propagation(rootfs, propagation).step("rootfsPropagation")?;
    }

    if let Some(overlay) = &plan.overlay {
        // With a new user namespace it is there already (see
        // `Runtime::mount_idmapped_overlay`).
        if !plan.overlay_mounted_by_runtime {
            overlay.mount().step("rootfs")?;
        }
    } else {
        // pivot_root needs the new root to be a mount point; binding it
        // first also lets the spec's mounts stack on it.
        berth_fs::bind_onto_itself(rootfs).step("rootfs")?;
    }

    let mounts = spec.mounts().clone().unwrap_or_default();
    let mut dev_is_mounted = false;
    for mount in &mounts {
        let entry = MountEntry {
            destination: mount.destination().to_string_lossy().into_owned(),
            fstype: mount.typ().clone(),
            source: mount.source().clone(),
            options: mount.options().clone().unwrap_or_default(),
        };
        dev_is_mounted |= entry.destination.trim_end_matches('/') == "/dev";
        if entry.fstype.as_deref() == Some("cgroup") && !cgroup_views.is_empty() {
            berth_fs::mount_cgroup_view(rootfs, &entry, cgroup_views)
        } else {
            berth_fs::mount_entry(rootfs, &entry)
        }
        .step(&format!("mount {}", entry.destination))?;
    }

    let in_user_namespace = plan.namespaces.has(berth_ns::Namespace::User);
    let devices = spec_devices(spec).step("devices")?;
    if dev_is_mounted {
        // A fresh /dev: the nodes every Linux program expects (runc's
        // default set), then the ones the spec adds.
        berth_fs::create_default_devices(rootfs, in_user_namespace).step("devices")?;
        berth_fs::create_dev_symlinks(rootfs).step("devices")?;
    }
    berth_fs::create_devices(rootfs, &devices, in_user_namespace).step("devices")?;
    Ok(())
}

/// After the hooks: enter the root, hide what must be hidden.
pub(crate) fn enter(plan: &InitPlan<'_>) -> Result<(), InitFailure> {
    let rootfs = &plan.rootfs;
    if shares_the_runtimes_mounts(plan) {
        berth_fs::chroot_root(rootfs).step("rootfs")?;
    } else {
        if plan.no_pivot {
            berth_fs::move_root(rootfs).step("rootfs")?;
        } else {
            berth_fs::pivot_root(rootfs).step("rootfs")?;
        }
        let propagation = rootfs_propagation(plan.spec).step("rootfsPropagation")?;
        berth_fs::finish_rootfs_propagation(propagation).step("rootfsPropagation")?;
    }
    let root = Path::new("/");
    let linux = plan.spec.linux().as_ref();
    let readonly: Vec<String> = linux
        .and_then(|l| l.readonly_paths().clone())
        .unwrap_or_default();
    let masked: Vec<String> = linux
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default();
    berth_fs::readonly_paths(root, &as_strs(&readonly)).step("read-only paths")?;
    berth_fs::mask_paths(root, &as_strs(&masked)).step("masked paths")?;
    let readonly_root = plan
        .spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    if readonly_root {
        berth_fs::remount_root_readonly().step("read-only root")?;
    }
    Ok(())
}

/// A spec without a mount namespace: the container's mounts go into the
/// runtime's, below its root, and it is entered with chroot (as runc
/// does); `delete` unmounts them.
fn shares_the_runtimes_mounts(plan: &InitPlan<'_>) -> bool {
    !plan.namespaces.has(berth_ns::Namespace::Mount)
}

fn as_strs(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

pub(crate) fn overlay_request(spec: &Spec) -> Result<Option<OverlayRequest>, serde_json::Error> {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(OVERLAY_ROOTFS_ANNOTATION))
        .map(|json| serde_json::from_str(json))
        .transpose()
}

/// `linux.rootfsPropagation` as mount flags (`None`: runc's default,
/// rslave).
fn rootfs_propagation(spec: &Spec) -> Result<Option<MsFlags>, String> {
    match spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
    {
        None | Some("") => Ok(None),
        Some(name) => berth_fs::propagation_flags(name)
            .map(Some)
            .ok_or_else(|| format!("unknown propagation {name:?}")),
    }
}

/// `linux.devices` in berth-fs's terms.
fn spec_devices(spec: &Spec) -> Result<Vec<DeviceNode>, String> {
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    list.iter()
        .map(|device| {
            let kind = match device.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
                LinuxDeviceType::B => DeviceKind::Block,
                LinuxDeviceType::P => DeviceKind::Fifo,
                LinuxDeviceType::A => {
                    return Err(format!(
                        "device {}: type \"a\" is only for cgroup rules",
                        device.path().display()
                    ))
                }
            };
            Ok(DeviceNode {
                path: device.path().to_string_lossy().into_owned(),
                kind,
                major: device.major() as u64,
                minor: device.minor() as u64,
                file_mode: device.file_mode().unwrap_or(0o666),
                uid: device.uid().unwrap_or(0),
                gid: device.gid().unwrap_or(0),
            })
        })
        .collect()
}
