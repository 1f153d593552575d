//! The one place where an image and `run`'s flags become an OCI runtime
//! spec: everything the runtime will do for the container is in it.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use berth_state::{ContainerRecord, ContainerStore};

use berth_ns::{Capability, CapabilitySet};
use cli::runtime::{OVERLAY_ROOTFS_ANNOTATION, REAPING_INIT_ANNOTATION};
use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCapabilities, LinuxIdMapping, LinuxIdMappingBuilder,
    LinuxNamespace, LinuxNamespaceType, LinuxResources, Mount, PosixRlimit, PosixRlimitBuilder,
    PosixRlimitType, Process, Root, Spec, User,
};

/// The parts of a container that the spec is built from.
#[derive(Debug)]
pub struct ContainerPlan<'a> {
    pub id: &'a str,
    pub hostname: &'a str,
    pub command: &'a [String],
    pub env: &'a [String],
    pub workdir: Option<&'a str>,
    pub tty: bool,
    /// The user's terminal size, given to the container's terminal.
    pub console_size: Option<(u16, u16)>,
    /// The image's layers, topmost first (overlay's lowerdir order).
    pub layers: &'a [PathBuf],
    /// Its write layer and root mount point, from [`layer_dirs`].
    pub layer_dirs: &'a [PathBuf; 3],
    /// Binds: /etc files and `-v` volumes, in mount order.
    pub volumes: &'a [berth_fs::Volume],
    pub capabilities: &'a CapabilitySet,
    pub privileged: bool,
    pub no_new_privileges: bool,
    /// `--security-opt seccomp=` as recorded (`None`: the default profile).
    pub seccomp_profile: Option<&'a str>,
    /// Its own network namespace (false: the host's).
    pub own_network: bool,
    /// Its own cgroup namespace (where the kernel has them).
    pub cgroup_namespace: bool,
    pub resources: LinuxResources,
    pub cgroup_parent: Option<&'a str>,
    /// docker's process and filesystem flags (`-u`, `--read-only`, ...).
    pub extras: &'a Extras,
    /// `-v`, `--mount`, `--tmpfs`, `--volumes-from` and the image's
    /// VOLUMEs (see [`crate::mounts`]), mounted after the binds above.
    pub mounts: &'a [Mount],
    /// Its own user namespace with these maps (`None`: the host's).
    pub id_maps: Option<&'a berth_state::IdMaps>,
    /// `--rm`: the container's write layer goes with it.
    pub auto_remove: bool,
}

/// What docker's flags beyond the basics put in the spec.
#[derive(Debug, Default, Clone)]
pub struct Extras {
    /// `-u` resolved in the image (root when `None`), plus `--group-add`.
    pub user: Option<crate::user::ResolvedUser>,
    pub read_only: bool,
    /// `--ulimit`: (RLIMIT_ name, soft, hard).
    pub rlimits: Vec<(String, u64, u64)>,
    /// `--shm-size` in bytes.
    pub shm_size: Option<u64>,
    pub sysctl: std::collections::HashMap<String, String>,
    pub oom_score_adj: Option<i32>,
    /// `--pid/--ipc/--uts host|container:C`: the host's namespace (`None`)
    /// or another container's (its path) instead of a new one.
    pub shared: Vec<(LinuxNamespaceType, Option<PathBuf>)>,
    /// `--device`: the device node to make and the cgroup access it gets.
    pub devices: Vec<(oci_spec::runtime::LinuxDevice, String)>,
    /// `--init`: the runtime's reaping init is PID 1.
    pub init: bool,
}

/// The container's write layer: overlay's upper and work dirs (on disk,
/// see [`ContainerStore::layer_dir`]) and the mount point of its root, in
/// the container's own directory.
pub fn layer_dirs(store: &ContainerStore, id: &str) -> [PathBuf; 3] {
    let layer = store.layer_dir(id);
    [
        layer.join("upper"),
        layer.join("work"),
        store.container_dir(id).join("rootfs"),
    ]
}

/// Keep the write layer of a `--rm` container that ended but stays (to be
/// restored after a checkpoint, or started again by `restart`): its overlay
/// was mounted volatile, so the layer is synced and made mountable again.
pub fn keep_volatile_layer(store: &ContainerStore, record: &ContainerRecord) -> anyhow::Result<()> {
    let [upper, work, _] = layer_dirs(store, &record.id);
    berth_fs::settle_volatile_layer(&upper, &work)
        .with_context(|| format!("cannot keep the files of container {}", record.name))
}

/// Point a container's spec at its write layer and root mount point
/// `[upper, work, rootfs]` (an imported checkpoint's spec names the old
/// container's).
pub fn relocate_layer(spec: &mut Spec, [upper, work, rootfs]: &[PathBuf; 3]) -> anyhow::Result<()> {
    if let Some(root) = spec.root_mut() {
        root.set_path(rootfs.clone());
    }
    let Some(overlay) = spec
        .annotations_mut()
        .as_mut()
        .and_then(|a| a.get_mut(OVERLAY_ROOTFS_ANNOTATION))
    else {
        return Ok(());
    };
    let mut value: serde_json::Value =
        serde_json::from_str(overlay).context("the spec's overlay annotation is corrupt")?;
    value["upper"] = serde_json::json!(upper);
    value["work"] = serde_json::json!(work);
    *overlay = value.to_string();
    Ok(())
}

pub fn build(plan: &ContainerPlan<'_>) -> anyhow::Result<Spec> {
    let [upper, work, rootfs] = plan.layer_dirs.clone();
    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_owned());
    let mut root = Root::default();
    root.set_path(rootfs);
    root.set_readonly(Some(plan.extras.read_only));
    spec.set_root(Some(root));
    spec.set_hostname(Some(plan.hostname.to_owned()));
    spec.set_domainname(None);
    // The write layer of a `--rm` container goes with it: no sync of the
    // disk when its overlay is unmounted (see `OverlayRootfs::volatile`).
    let overlay = serde_json::json!({
        "lower": plan.layers,
        "upper": upper,
        "work": work,
        "volatile": plan.auto_remove,
    });
    let mut annotations =
        HashMap::from([(OVERLAY_ROOTFS_ANNOTATION.to_owned(), overlay.to_string())]);
    if plan.extras.init {
        annotations.insert(REAPING_INIT_ANNOTATION.to_owned(), "true".to_owned());
    }
    spec.set_annotations(Some(annotations));
    spec.set_process(Some(process(plan)));
    spec.set_mounts(Some(mounts(
        plan.volumes,
        plan.mounts,
        plan.extras.shm_size,
    )));
    spec.set_hooks(None);

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if plan.own_network {
        namespaces.push(LinuxNamespaceType::Network);
    }
    if plan.cgroup_namespace {
        namespaces.push(LinuxNamespaceType::Cgroup);
    }
    if plan.id_maps.is_some() {
        namespaces.push(LinuxNamespaceType::User);
    }
    let namespaces: Vec<LinuxNamespace> = namespaces
        .into_iter()
        .filter_map(|typ| {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(typ);
            match plan.extras.shared.iter().find(|(t, _)| *t == typ) {
                // --pid host and the like: the host's namespace.
                Some((_, None)) => return None,
                // --pid container:C and the like: C's namespace.
                Some((_, Some(path))) => {
                    ns.set_path(Some(path.clone()));
                }
                None => {}
            }
            Some(ns)
        })
        .collect();
    let (masked, readonly) = if plan.privileged {
        (Vec::new(), Vec::new())
    } else {
        let owned = |list: &[&str]| list.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        (
            owned(berth_fs::DEFAULT_MASKED_PATHS),
            owned(berth_fs::DEFAULT_READONLY_PATHS),
        )
    };
    let mut linux = LinuxBuilder::default()
        // Nothing mounted on the host reaches the container afterwards, and
        // nothing the container mounts reaches the host.
        .rootfs_propagation("rprivate")
        .namespaces(namespaces)
        .resources(plan.resources.clone())
        .masked_paths(masked)
        .readonly_paths(readonly)
        .build()?;
    if let Some(maps) = plan.id_maps {
        let oci = |ranges: &[berth_state::IdRange]| -> anyhow::Result<Vec<LinuxIdMapping>> {
            ranges
                .iter()
                .map(|r| {
                    LinuxIdMappingBuilder::default()
                        .container_id(r.container_id)
                        .host_id(r.host_id)
                        .size(r.size)
                        .build()
                        .map_err(Into::into)
                })
                .collect()
        };
        linux.set_uid_mappings(Some(oci(&maps.uid)?));
        linux.set_gid_mappings(Some(oci(&maps.gid)?));
    }
    if !plan.extras.sysctl.is_empty() {
        linux.set_sysctl(Some(plan.extras.sysctl.clone()));
    }
    if !plan.extras.devices.is_empty() {
        linux.set_devices(Some(
            plan.extras.devices.iter().map(|(d, _)| d.clone()).collect(),
        ));
        let mut resources = linux.resources().clone().unwrap_or_default();
        let mut rules = resources.devices().clone().unwrap_or_default();
        for (device, access) in &plan.extras.devices {
            let mut rule = oci_spec::runtime::LinuxDeviceCgroup::from(device);
            rule.set_access(Some(access.clone()));
            rules.push(rule);
        }
        resources.set_devices(Some(rules));
        linux.set_resources(Some(resources));
    }
    let capabilities = if plan.privileged {
        CapabilitySet::all()
    } else {
        *plan.capabilities
    };
    linux.set_seccomp(crate::seccomp::for_container(
        plan.seccomp_profile,
        plan.privileged,
        &capabilities,
    )?);
    // Without --cgroup-parent the runtime's own place (below berth's own
    // cgroup) is right.
    if let Some(parent) = plan.cgroup_parent {
        linux.set_cgroups_path(Some(PathBuf::from(format!(
            "{}/{}",
            parent.trim_end_matches('/'),
            plan.id
        ))));
    }
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// The runtime spec version these specs follow: the runtime's.
const OCI_VERSION: &str = cli::runtime::OCI_VERSION;

fn process(plan: &ContainerPlan<'_>) -> Process {
    let mut process = Process::default();
    process.set_terminal(Some(plan.tty));
    process.set_console_size(plan.console_size.filter(|_| plan.tty).map(console_size));
    let mut user = User::default();
    if let Some(resolved) = &plan.extras.user {
        user.set_uid(resolved.uid);
        user.set_gid(resolved.gid);
        user.set_additional_gids(Some(resolved.additional_gids.clone()));
    }
    process.set_user(user);
    process.set_args(Some(plan.command.to_vec()));
    process.set_env(Some(plan.env.to_vec()));
    process.set_cwd(PathBuf::from(plan.workdir.unwrap_or("/")));
    process.set_no_new_privileges(Some(plan.no_new_privileges));
    // docker sets no rlimits of its own: the container inherits berth's,
    // except those given with --ulimit.
    let rlimits: Vec<PosixRlimit> = plan
        .extras
        .rlimits
        .iter()
        .filter_map(|(name, soft, hard)| {
            let typ: PosixRlimitType =
                serde_json::from_value(serde_json::Value::String(name.clone())).ok()?;
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(*soft)
                .hard(*hard)
                .build()
                .ok()
        })
        .collect();
    process.set_rlimits((!rlimits.is_empty()).then_some(rlimits));
    process.set_oom_score_adj(plan.extras.oom_score_adj);
    let set = if plan.privileged {
        CapabilitySet::all()
    } else {
        *plan.capabilities
    };
    process.set_capabilities(Some(capabilities(set)));
    process
}

/// A terminal size for the spec's `consoleSize`.
pub fn console_size((rows, cols): (u16, u16)) -> oci_spec::runtime::Box {
    oci_spec::runtime::BoxBuilder::default()
        .height(u64::from(rows))
        .width(u64::from(cols))
        .build()
        .unwrap_or_default()
}

/// docker's semantics as the five sets: what the container's root keeps
/// is bounding = effective = permitted; nothing inheritable or ambient
/// (CVE-2022-29162).
pub fn capabilities(set: CapabilitySet) -> LinuxCapabilities {
    let list: Capabilities = set.iter().filter_map(to_spec_capability).collect();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(list.clone()));
    caps.set_effective(Some(list.clone()));
    caps.set_permitted(Some(list));
    caps.set_inheritable(Some(Capabilities::new()));
    caps.set_ambient(Some(Capabilities::new()));
    caps
}

fn to_spec_capability(cap: Capability) -> Option<oci_spec::runtime::Capability> {
    serde_json::from_value(serde_json::Value::String(cap.name().to_owned())).ok()
}

/// docker's default mounts (berth-fs's lists), then the binds in order,
/// then the container's own mounts.
fn mounts(volumes: &[berth_fs::Volume], own: &[Mount], shm_size: Option<u64>) -> Vec<Mount> {
    let mount = crate::mounts::oci_mount;
    // docker's list, and its read-only view of the container's own cgroup
    // (so that a program sees its limits).
    let mut list: Vec<Mount> = berth_fs::default_mounts()
        .into_iter()
        .chain([berth_fs::default_cgroup_mount()])
        .map(|entry| {
            let fstype = entry.fstype.unwrap_or_default();
            let source = entry
                .source
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| fstype.clone());
            let mut options = entry.options;
            if let Some(size) = shm_size.filter(|_| entry.destination == "/dev/shm") {
                options.retain(|o| !o.starts_with("size="));
                options.push(format!("size={size}"));
            }
            mount(&entry.destination, &fstype, &source, options)
        })
        .collect();
    for volume in volumes {
        let mut options = vec!["rbind".to_owned(), "rprivate".to_owned()];
        if volume.read_only {
            options.push("ro".to_owned());
        }
        list.push(mount(
            &volume.target,
            "bind",
            &volume.source.to_string_lossy(),
            options,
        ));
    }
    // docker mounts its /etc files and the user's mounts parents first (a
    // volume on /etc must not hide the /etc/hosts bind), in order within
    // one depth (a user's own /etc/hosts comes after berth's, and wins).
    let defaults = list.len() - volumes.len();
    let mut binds = list.split_off(defaults);
    binds.extend(own.iter().cloned());
    binds.sort_by_key(|m| {
        m.destination()
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .count()
    });
    list.extend(binds);
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_run_becomes_this_spec() {
        let layers = [PathBuf::from("/var/lib/berth/images/layers/abc/rootfs")];
        let volumes = [
            berth_fs::Volume {
                source: PathBuf::from("/var/lib/berth/containers/c1/hosts"),
                target: "/etc/hosts".into(),
                read_only: false,
            },
            berth_fs::Volume {
                source: PathBuf::from("/srv/data"),
                target: "/data".into(),
                read_only: true,
            },
        ];
        let (resources, _) = crate::limits::parse(
            &<crate::args::Cli as clap::Parser>::try_parse_from([
                "berth",
                "run",
                "-m",
                "64m",
                "--cpus",
                "0.5",
                "--pids-limit",
                "20",
                "busybox",
            ])
            .map(|cli| match cli.command {
                crate::args::Command::Run(args) => *args,
                _ => unreachable!("parsed a run"),
            })
            .unwrap(),
        )
        .unwrap();
        let range = |host_id| berth_state::IdRange {
            container_id: 0,
            host_id,
            size: 65536,
        };
        let id_maps = berth_state::IdMaps {
            uid: vec![range(100_000)],
            gid: vec![range(200_000)],
        };
        let spec = build(&ContainerPlan {
            id_maps: Some(&id_maps),
            auto_remove: false,
            id: "c1",
            hostname: "c1host",
            command: &["sh".into(), "-c".into(), "echo hi".into()],
            env: &["PATH=/bin".into(), "HOME=/root".into()],
            workdir: Some("/srv"),
            tty: true,
            console_size: Some((24, 80)),
            layers: &layers,
            layer_dirs: &[
                "/var/lib/berth/containers/c1/upper".into(),
                "/var/lib/berth/containers/c1/work".into(),
                "/var/lib/berth/containers/c1/rootfs".into(),
            ],
            volumes: &volumes,
            capabilities: &CapabilitySet::docker_default(),
            privileged: false,
            no_new_privileges: true,
            seccomp_profile: Some("unconfined"),
            extras: &Extras::default(),
            mounts: &[],
            own_network: true,
            cgroup_namespace: true,
            resources,
            cgroup_parent: Some("/ci/jobs"),
        })
        .unwrap();
        // Capability sets are sets: sorted, so the snapshot is stable.
        let mut value = serde_json::to_value(&spec).unwrap();
        for set in value["process"]["capabilities"]
            .as_object_mut()
            .unwrap()
            .values_mut()
        {
            set.as_array_mut()
                .unwrap()
                .sort_by_key(|c| c.as_str().unwrap_or_default().to_owned());
        }
        insta::assert_json_snapshot!(value);
    }
}
