//! The container's root filesystem from the spec: propagation, the
//! engine's overlay (if asked for), the spec's mounts in order, devices,
//! then pivot_root, masked and read-only paths and a read-only root. Runs
//! in the init, inside the container's own mount namespace.

use std::path::{Path, PathBuf};

use berth_fs::OverlayRootfs;
use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxDeviceType, Spec};
use serde::Deserialize;
use shim::{DeviceKind, DeviceNode, MountEntry};

use super::init::{InitFailure, InitPlan, InitStep};
use super::OVERLAY_ROOTFS_ANNOTATION;

/// The value of [`OVERLAY_ROOTFS_ANNOTATION`].
#[derive(Debug, Deserialize)]
pub(crate) struct OverlayRequest {
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// Before hooks and the pivot: everything mounted below the rootfs path.
pub(crate) fn prepare(plan: &InitPlan<'_>) -> Result<(), InitFailure> {
    let spec = plan.spec;
    let rootfs = &plan.rootfs;
    let linux = spec.linux().as_ref();
    let propagation = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .unwrap_or("rprivate");
    let flags = propagation_flags(propagation).step("rootfsPropagation")?;
    shim::set_mount_propagation(Path::new("/"), flags).step("rootfsPropagation")?;

    if let Some(overlay) = overlay_request(spec).step("rootfs overlay annotation")? {
        OverlayRootfs {
            lower: overlay.lower,
            upper: overlay.upper,
            work: overlay.work,
            target: rootfs.clone(),
        }
        .mount()
        .step("rootfs")?;
    } else {
        // pivot_root needs the new root to be a mount point; binding it
        // first also lets the spec's mounts stack on it.
        shim::bind_onto_itself(rootfs).step("rootfs")?;
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
        shim::mount_entry(rootfs, &entry).step(&format!("mount {}", entry.destination))?;
    }

    let in_user_namespace = plan.namespaces.has(berth_ns::Namespace::User);
    let devices = spec_devices(spec).step("devices")?;
    if dev_is_mounted {
        // A fresh /dev: the nodes every Linux program expects (runc's
        // default set), then the ones the spec adds.
        shim::create_default_devices(rootfs, in_user_namespace).step("devices")?;
        shim::create_dev_symlinks(rootfs).step("devices")?;
    }
    shim::create_devices(rootfs, &devices, in_user_namespace).step("devices")?;
    Ok(())
}

/// After the hooks: enter the root, hide what must be hidden.
pub(crate) fn enter(plan: &InitPlan<'_>) -> Result<(), InitFailure> {
    let rootfs = &plan.rootfs;
    if plan.no_pivot {
        shim::move_root(rootfs).step("rootfs")?;
    } else {
        berth_fs::pivot_root(rootfs).step("rootfs")?;
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
        shim::remount_root_readonly().step("read-only root")?;
    }
    Ok(())
}

fn as_strs(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

fn overlay_request(spec: &Spec) -> Result<Option<OverlayRequest>, serde_json::Error> {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(OVERLAY_ROOTFS_ANNOTATION))
        .map(|json| serde_json::from_str(json))
        .transpose()
}

fn propagation_flags(name: &str) -> Result<MsFlags, String> {
    Ok(match name {
        "shared" | "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" | "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "private" | "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "unbindable" | "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        other => return Err(format!("unknown propagation {other:?}")),
    })
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

/// TEMPORARY: stands in for berth-fs's spec-shaped mount API until it lands.
mod shim {
    use std::path::{Path, PathBuf};

    use nix::mount::{mount, MsFlags};

    pub struct MountEntry {
        pub destination: String,
        pub fstype: Option<String>,
        pub source: Option<PathBuf>,
        pub options: Vec<String>,
    }
    pub enum DeviceKind {
        Char,
        Block,
        Fifo,
    }
    #[allow(dead_code)]
    pub struct DeviceNode {
        pub path: String,
        pub kind: DeviceKind,
        pub major: u64,
        pub minor: u64,
        pub file_mode: u32,
        pub uid: u32,
        pub gid: u32,
    }
    pub fn set_mount_propagation(path: &Path, flags: MsFlags) -> nix::Result<()> {
        mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
    }
    pub fn bind_onto_itself(path: &Path) -> nix::Result<()> {
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
    }
    pub fn mount_entry(rootfs: &Path, entry: &MountEntry) -> Result<(), String> {
        match entry.fstype.as_deref() {
            Some("proc") => berth_fs::mount_kernel_filesystems(rootfs).map_err(|e| e.to_string()),
            Some("bind") | None => berth_fs::mount_volumes(
                rootfs,
                &[berth_fs::Volume {
                    source: entry.source.clone().unwrap_or_default(),
                    target: entry.destination.clone(),
                    read_only: entry.options.iter().any(|o| o == "ro"),
                }],
            )
            .map_err(|e| e.to_string()),
            Some("tmpfs") if !entry.destination.starts_with("/dev") => {
                let dir = berth_fs::ensure_dir_in_root(rootfs, &entry.destination)
                    .map_err(|e| e.to_string())?;
                mount(
                    Some("tmpfs"),
                    &dir,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some("mode=1777"),
                )
                .map_err(|e| e.to_string())
            }
            _ => Ok(()),
        }
    }
    pub fn create_default_devices(_: &Path, _: bool) -> Result<(), String> {
        Ok(())
    }
    pub fn create_dev_symlinks(_: &Path) -> Result<(), String> {
        Ok(())
    }
    pub fn create_devices(_: &Path, _: &[DeviceNode], _: bool) -> Result<(), String> {
        Ok(())
    }
    pub fn move_root(_: &Path) -> Result<(), String> {
        Err("no-pivot not yet".into())
    }
    pub fn remount_root_readonly() -> nix::Result<()> {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
    }
}
