//! What a container mounts besides its image: `-v`, `--mount`, `--tmpfs`,
//! `--volumes-from` and the image's VOLUMEs all become one list of
//! [`MountRequest`]s, which [`resolve`] turns into OCI mounts (creating
//! the volumes it names) and the record's docker-shaped `Mounts`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use berth_state::{
    ContainerRecord, MountPoint, NewVolume, VolumeBacking, VolumeLock, VolumeRecord, VolumeStore,
};
use oci_spec::runtime::Mount;

use crate::paths::Paths;

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A host path.
    Bind {
        host: PathBuf,
        /// docker's default is rprivate.
        propagation: String,
        /// `bind-nonrecursive` makes it false.
        recursive: bool,
        /// `-v` creates a missing host directory; `--mount` refuses it.
        create_missing: bool,
    },
    /// A named volume, or (`name: None`) a new anonymous one.
    Volume {
        name: Option<String>,
        /// `nocopy`: an empty volume is not filled from the image.
        no_copy: bool,
        /// For a volume made now: `volume-opt`, `volume-label`,
        /// `volume-driver`.
        options: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
        driver: Option<String>,
    },
    /// A fresh tmpfs with these options (`size=`, `mode=`, flags).
    Tmpfs { options: Vec<String> },
}

/// One mount the container asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    pub source: MountSource,
    /// Absolute, lexically cleaned, not `/`.
    pub target: String,
    pub read_only: bool,
    /// The mode text for `Mounts` (`-v`'s third field).
    pub mode: String,
}

/// `target` cleaned (`/a/./b/` -> `/a/b`); refused if not absolute or `/`.
fn clean_target(target: &str) -> anyhow::Result<String> {
    if target.contains('\0') {
        bail!("the container path {target:?} contains a NUL byte");
    }
    if !target.starts_with('/') {
        bail!("the container path {target:?} is not absolute");
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    if parts.is_empty() {
        bail!("the container path cannot be /");
    }
    Ok(format!("/{}", parts.join("/")))
}

/// A host path as docker 23+ reads it: absolute; `.`/`..`-relative
/// against `cwd`; `~` against `home`. `None`: not a path (a volume name).
fn host_path(source: &str, cwd: &Path, home: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    if source.starts_with('/') {
        return Ok(Some(PathBuf::from(source)));
    }
    if source == "." || source == ".." || source.starts_with("./") || source.starts_with("../") {
        return Ok(Some(cwd.join(source)));
    }
    if source == "~" || source.starts_with("~/") {
        let home = home.context("cannot resolve ~: $HOME is not set")?;
        return Ok(Some(
            home.join(source.trim_start_matches('~').trim_start_matches('/')),
        ));
    }
    Ok(None)
}

/// The propagation modes docker accepts for binds.
const PROPAGATIONS: [&str; 6] = [
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// `-v [SOURCE:]TARGET[:OPTIONS]`.
pub fn parse_volume_flag(
    spec: &str,
    cwd: &Path,
    home: Option<&Path>,
) -> anyhow::Result<MountRequest> {
    parse_volume_inner(spec, cwd, home).with_context(|| format!("invalid volume {spec:?}"))
}

fn parse_volume_inner(spec: &str, cwd: &Path, home: Option<&Path>) -> anyhow::Result<MountRequest> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [source, target] => (Some(*source), *target, ""),
        [source, target, mode] => (Some(*source), *target, *mode),
        _ => bail!("too many ':' (expected [SOURCE:]TARGET[:OPTIONS])"),
    };
    let target = clean_target(target)?;
    let mut read_only = false;
    let mut no_copy = false;
    let mut propagation = None;
    let mut seen_rw = false;
    for option in mode.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" | "rw" => {
                if seen_rw {
                    bail!("ro and rw can be given only once");
                }
                seen_rw = true;
                read_only = option == "ro";
            }
            "nocopy" => no_copy = true,
            // SELinux relabelling and macOS consistency: nothing to do here.
            "z" | "Z" | "consistent" | "cached" | "delegated" => {}
            p if PROPAGATIONS.contains(&p) => propagation = Some(p.to_owned()),
            other => bail!(
                "unknown option {other:?} (ro, rw, nocopy, z, Z and the bind propagations \
                 private, rprivate, shared, rshared, slave, rslave are supported)"
            ),
        }
    }
    if !mode.is_empty() && mode.split(',').any(str::is_empty) {
        bail!("empty option in {mode:?}");
    }
    let source = match source {
        None => {
            if propagation.is_some() {
                bail!("propagation can only be set on a bind mount");
            }
            MountSource::Volume {
                name: None,
                no_copy,
                options: BTreeMap::new(),
                labels: BTreeMap::new(),
                driver: None,
            }
        }
        Some("") => bail!("the source is empty"),
        Some(source) => match host_path(source, cwd, home)? {
            Some(host) => {
                if no_copy {
                    bail!("nocopy is only for volumes, not for the bind of {source:?}");
                }
                MountSource::Bind {
                    host,
                    propagation: propagation.unwrap_or_else(|| "rprivate".into()),
                    recursive: true,
                    create_missing: true,
                }
            }
            None => {
                berth_state::validate_volume_name(source).map_err(|e| {
                    anyhow::anyhow!(
                        "{e} (a host directory must be given as an absolute path, or starting \
                         with ./ or ~/)"
                    )
                })?;
                if propagation.is_some() {
                    bail!("propagation can only be set on a bind mount");
                }
                MountSource::Volume {
                    name: Some(source.to_owned()),
                    no_copy,
                    options: BTreeMap::new(),
                    labels: BTreeMap::new(),
                    driver: None,
                }
            }
        },
    };
    Ok(MountRequest {
        source,
        target,
        read_only,
        mode: mode.to_owned(),
    })
}

/// docker's `--mount` fields: comma-separated, a field may be quoted with
/// `"` to hold commas (`"volume-opt=o=size=1m,uid=1"`).
fn split_fields(spec: &str) -> anyhow::Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    if quoted {
        bail!("unterminated quote");
    }
    fields.push(current);
    Ok(fields)
}

fn parse_bool(key: &str, value: Option<&str>) -> anyhow::Result<bool> {
    match value {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => bail!("invalid value {other:?} for {key}: use true or false"),
    }
}

/// `--mount type=bind|volume|tmpfs,source=...,target=...,...`.
pub fn parse_mount_flag(spec: &str, cwd: &Path) -> anyhow::Result<MountRequest> {
    parse_mount_inner(spec, cwd).with_context(|| format!("invalid --mount {spec:?}"))
}

fn parse_mount_inner(spec: &str, cwd: &Path) -> anyhow::Result<MountRequest> {
    if spec.contains('\0') {
        bail!("it contains a NUL byte");
    }
    let mut typ = None;
    let mut source = None;
    let mut target = None;
    let mut read_only = false;
    let mut propagation = None;
    let mut non_recursive = false;
    let mut tmpfs_size = None;
    let mut tmpfs_mode = None;
    let mut volume_options = BTreeMap::new();
    let mut volume_labels = BTreeMap::new();
    let mut volume_driver = None;
    let mut no_copy = false;
    // Which type each typed key belongs to, to refuse mixing.
    let mut typed_keys: Vec<(&'static str, String)> = Vec::new();
    for field in split_fields(spec)? {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (field.clone(), None),
        };
        let need = |v: Option<String>| v.with_context(|| format!("{key} needs a value"));
        match key.to_ascii_lowercase().as_str() {
            "type" => typ = Some(need(value)?),
            "source" | "src" => source = Some(need(value)?),
            "target" | "dst" | "destination" => target = Some(need(value)?),
            "readonly" | "ro" => read_only = parse_bool(&key, value.as_deref())?,
            "consistency" => {}
            "bind-propagation" => {
                let p = need(value)?;
                if !PROPAGATIONS.contains(&p.as_str()) {
                    bail!("invalid bind-propagation {p:?}: use one of {PROPAGATIONS:?}");
                }
                propagation = Some(p);
                typed_keys.push(("bind", key));
            }
            "bind-nonrecursive" => {
                non_recursive = parse_bool(&key, value.as_deref())?;
                typed_keys.push(("bind", key));
            }
            "tmpfs-size" => {
                let text = need(value)?;
                let size = crate::run::parse_size(&text)
                    .filter(|&s| s > 0)
                    .with_context(|| format!("invalid tmpfs-size {text:?}: use a size like 64m"))?;
                tmpfs_size = Some(size);
                typed_keys.push(("tmpfs", key));
            }
            "tmpfs-mode" => {
                let text = need(value)?;
                let mode = u32::from_str_radix(&text, 8)
                    .ok()
                    .filter(|&m| m <= 0o7777)
                    .with_context(|| {
                        format!("invalid tmpfs-mode {text:?}: use an octal mode like 1777")
                    })?;
                tmpfs_mode = Some(mode);
                typed_keys.push(("tmpfs", key));
            }
            "volume-opt" => {
                let text = need(value)?;
                let (k, v) = text
                    .split_once('=')
                    .with_context(|| format!("invalid volume-opt {text:?}: use KEY=VALUE"))?;
                volume_options.insert(k.to_owned(), v.to_owned());
                typed_keys.push(("volume", key));
            }
            "volume-label" => {
                let text = need(value)?;
                let (k, v) = text.split_once('=').unwrap_or((&text, ""));
                if k.is_empty() {
                    bail!("invalid volume-label {text:?}: the key is empty");
                }
                volume_labels.insert(k.to_owned(), v.to_owned());
                typed_keys.push(("volume", key));
            }
            "volume-driver" => {
                volume_driver = Some(need(value)?);
                typed_keys.push(("volume", key));
            }
            "volume-nocopy" => {
                no_copy = parse_bool(&key, value.as_deref())?;
                typed_keys.push(("volume", key));
            }
            _ => bail!("unknown key {key:?}"),
        }
    }
    let typ = typ.unwrap_or_else(|| "volume".to_owned());
    if let Some((_, key)) = typed_keys.iter().find(|(t, _)| *t != typ) {
        bail!("{key} cannot be used with type={typ}");
    }
    let target = clean_target(&target.context("a target is required (target=/path)")?)?;
    let source = match typ.as_str() {
        "bind" => {
            let given = source.context("type=bind needs a source")?;
            let host = host_path(&given, cwd, None)?
                .with_context(|| format!("the bind source {given:?} is not an absolute path"))?;
            MountSource::Bind {
                host,
                propagation: propagation.unwrap_or_else(|| "rprivate".into()),
                recursive: !non_recursive,
                create_missing: false,
            }
        }
        "volume" => {
            let name = match source {
                Some(name) if !name.is_empty() => {
                    berth_state::validate_volume_name(&name)?;
                    Some(name)
                }
                _ => None,
            };
            MountSource::Volume {
                name,
                no_copy,
                options: volume_options,
                labels: volume_labels,
                driver: volume_driver,
            }
        }
        "tmpfs" => {
            if source.is_some_and(|s| !s.is_empty()) {
                bail!("type=tmpfs takes no source");
            }
            let mut options = Vec::new();
            options.extend(tmpfs_size.map(|s| format!("size={s}")));
            options.extend(tmpfs_mode.map(|m| format!("mode={m:o}")));
            MountSource::Tmpfs { options }
        }
        other => bail!("unknown type {other:?}: use bind, volume or tmpfs"),
    };
    Ok(MountRequest {
        source,
        target,
        read_only,
        mode: String::new(),
    })
}

/// The tmpfs options `--tmpfs` accepts (docker's list).
const TMPFS_FLAGS: &[&str] = &[
    "ro",
    "rw",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "sync",
    "async",
    "dirsync",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "mand",
    "nomand",
];
const TMPFS_DATA: &[&str] = &[
    "size",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "nr_blocks",
    "mpol",
];

/// `--tmpfs /path[:OPTIONS]`.
pub fn parse_tmpfs_flag(spec: &str) -> anyhow::Result<MountRequest> {
    (|| {
        let (target, options) = spec.split_once(':').unwrap_or((spec, ""));
        let target = clean_target(target)?;
        let mut list = Vec::new();
        let mut read_only = false;
        for option in options.split(',').filter(|o| !o.is_empty()) {
            let key = option.split('=').next().unwrap_or_default();
            if option.contains('=') {
                if !TMPFS_DATA.contains(&key) {
                    bail!("unknown tmpfs option {option:?}");
                }
            } else if !TMPFS_FLAGS.contains(&option) {
                bail!("unknown tmpfs option {option:?}");
            }
            match option {
                "ro" => read_only = true,
                "rw" => read_only = false,
                _ => list.push(option.to_owned()),
            }
        }
        Ok(MountRequest {
            source: MountSource::Tmpfs { options: list },
            target,
            read_only,
            mode: String::new(),
        })
    })()
    .with_context(|| format!("invalid --tmpfs {spec:?}"))
}

/// `--volumes-from C[:ro|:rw]`: C's volumes and binds at the same paths
/// (its tmpfs mounts are its own), read-only or writable as C has them
/// unless the suffix says otherwise.
pub fn volumes_from(source: &ContainerRecord, mode: Option<&str>) -> Vec<MountRequest> {
    source
        .mounts
        .iter()
        .filter_map(|m| {
            let read_only = match mode {
                Some("ro") => true,
                Some("rw") => false,
                _ => !m.rw,
            };
            let from = match m.kind.as_str() {
                "volume" => MountSource::Volume {
                    name: Some(m.name.clone()?),
                    no_copy: true,
                    options: BTreeMap::new(),
                    labels: BTreeMap::new(),
                    driver: None,
                },
                "bind" => MountSource::Bind {
                    host: PathBuf::from(&m.source),
                    propagation: if m.propagation.is_empty() {
                        "rprivate".into()
                    } else {
                        m.propagation.clone()
                    },
                    recursive: true,
                    create_missing: false,
                },
                _ => return None,
            };
            Some(MountRequest {
                source: from,
                target: m.destination.clone(),
                read_only,
                mode: m.mode.clone(),
            })
        })
        .collect()
}

/// The image's VOLUMEs as anonymous volumes (filled from the image).
pub fn image_volumes(paths: &[String]) -> anyhow::Result<Vec<MountRequest>> {
    paths
        .iter()
        .map(|path| {
            Ok(MountRequest {
                source: MountSource::Volume {
                    name: None,
                    no_copy: false,
                    options: BTreeMap::new(),
                    labels: BTreeMap::new(),
                    driver: None,
                },
                target: clean_target(path)
                    .with_context(|| format!("the image's VOLUME {path:?}"))?,
                read_only: false,
                mode: String::new(),
            })
        })
        .collect()
}

/// Put the lists together, docker's precedence: the user's own mounts,
/// then `--volumes-from`, then the image's VOLUMEs, each only where no
/// earlier one has that target. Two of the user's own on one target are an
/// error.
pub fn combine(
    own: Vec<MountRequest>,
    from_containers: Vec<MountRequest>,
    from_image: Vec<MountRequest>,
) -> anyhow::Result<Vec<MountRequest>> {
    let mut list: Vec<MountRequest> = Vec::new();
    for request in own {
        if list.iter().any(|m| m.target == request.target) {
            bail!("duplicate mount point: {}", request.target);
        }
        list.push(request);
    }
    for request in from_containers.into_iter().chain(from_image) {
        if !list.iter().any(|m| m.target == request.target) {
            list.push(request);
        }
    }
    Ok(list)
}

/// `run`'s mounts: its `-v`, `--mount`, `--tmpfs` and `--volumes-from`
/// flags and the image's VOLUMEs, resolved (volumes made, `-v` host
/// directories created). Relative `-v` sources are taken from the current
/// directory, `~` from $HOME.
pub fn for_run(
    paths: &Paths,
    containers: &berth_state::ContainerStore,
    args: &crate::args::RunArgs,
    image_volume_paths: &[String],
) -> anyhow::Result<ResolvedMounts> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut own = Vec::new();
    for spec in &args.volume {
        own.push(parse_volume_flag(spec, &cwd, home.as_deref())?);
    }
    for spec in &args.mount {
        own.push(parse_mount_flag(spec, &cwd)?);
    }
    for spec in &args.tmpfs {
        own.push(parse_tmpfs_flag(spec)?);
    }
    let mut from = Vec::new();
    for spec in &args.volumes_from {
        let (container, mode) = match spec.rsplit_once(':') {
            Some((name, mode @ ("ro" | "rw"))) => (name, Some(mode)),
            Some((_, mode)) => {
                bail!("invalid --volumes-from {spec:?}: the mode {mode:?} is not ro or rw")
            }
            None => (spec.as_str(), None),
        };
        let source = crate::container::find(containers, container)
            .with_context(|| format!("--volumes-from {container}"))?;
        from.extend(volumes_from(&source, mode));
    }
    let list = combine(own, from, image_volumes(image_volume_paths)?)?;
    let store = crate::volume::store(paths)?;
    // Only a run that uses a volume must keep `volume rm` and `prune` away
    // until its record names it; the others (most) do not wait on the
    // lock, which parallel starts would otherwise take one at a time.
    let lock = if uses_volumes(&list) {
        Some(store.lock()?)
    } else {
        None
    };
    let mut resolved = resolve(&store, lock, &list)?;
    resolved.created.containers = Some(containers.clone());
    Ok(resolved)
}

/// Whether any of `requests` is a volume (made or used from the store).
fn uses_volumes(requests: &[MountRequest]) -> bool {
    requests
        .iter()
        .any(|m| matches!(m.source, MountSource::Volume { .. }))
}

/// The mounts ready for the spec and the record.
#[derive(Debug, Default)]
pub struct ResolvedMounts {
    /// In mount order (parents first).
    pub oci: Vec<Mount>,
    /// docker's `Mounts`.
    pub record: Vec<MountPoint>,
    /// The anonymous volumes made for this container.
    pub anonymous: Vec<String>,
    /// Every volume made now (removed again if the container is not made).
    pub created: CreatedVolumes,
}

impl ResolvedMounts {
    /// For a container whose root is host `uid`:`gid` (a user namespace):
    /// the way to each volume's data becomes searchable, and a volume made
    /// for it now becomes its root's, as with docker's userns-remap. A
    /// volume that existed before keeps its owner.
    pub fn prepare_for_mapped_root(
        &self,
        paths: &Paths,
        (uid, gid): (u32, u32),
    ) -> anyhow::Result<()> {
        let volumes: Vec<&MountPoint> = self.record.iter().filter(|p| p.kind == "volume").collect();
        let store = match volumes.is_empty() {
            true => None,
            false => Some(crate::volume::store(paths)?),
        };
        for point in &self.record {
            let source = Path::new(&point.source);
            let volume = point.name.as_deref().filter(|_| point.kind == "volume");
            match (volume, &store) {
                // In the store: berth's directories on the way open up.
                (Some(name), Some(store)) if source == store.data_dir(name) => {
                    for dir in [store.dir().to_path_buf(), store.dir().join(name)] {
                        berth_state::make_searchable(&dir)?;
                    }
                    if self.created.names.iter().any(|n| n == name) {
                        std::os::unix::fs::lchown(source, Some(uid), Some(gid)).with_context(
                            || format!("cannot give {} to the container's root", source.display()),
                        )?;
                    }
                }
                // A bind, or a volume bound to a host directory: the host's
                // directories are the user's to open.
                _ if point.kind != "tmpfs" => {
                    crate::userns::check_reachable(source, "the mount source", (uid, gid))?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Volumes made for a container that is not made yet: removed when
/// dropped (unless another container uses one by then), unless
/// [`CreatedVolumes::keep`] was called. Until [`CreatedVolumes::unlock`]
/// it holds the volume store's lock, so that no `volume rm` or `prune` can
/// take a volume between its making and the record that names it.
#[derive(Debug, Default)]
pub struct CreatedVolumes {
    store: Option<VolumeStore>,
    /// Whose records say which volumes are in use.
    containers: Option<berth_state::ContainerStore>,
    lock: Option<VolumeLock>,
    names: Vec<String>,
}

impl CreatedVolumes {
    /// The container exists now: its volumes stay.
    pub fn keep(&mut self) {
        self.names.clear();
        self.lock = None;
    }

    /// The container's record (naming its volumes) is stored: others may
    /// use the volume store again.
    pub fn unlock(&mut self) {
        self.lock = None;
    }
}

impl Drop for CreatedVolumes {
    fn drop(&mut self) {
        let Some(store) = &self.store else { return };
        if self.names.is_empty() {
            return;
        }
        let held = self.lock.take();
        let cleanup = || -> anyhow::Result<()> {
            let lock = match held {
                Some(lock) => lock,
                None => store.lock()?,
            };
            let users = match &self.containers {
                Some(containers) => crate::volume::volume_users(containers)?,
                None => Default::default(),
            };
            for name in &self.names {
                if !users.contains_key(name) {
                    store.remove_locked(&lock, name)?;
                }
            }
            Ok(())
        };
        if let Err(e) = cleanup() {
            eprintln!(
                "berth: cleaning up volumes {} also failed: {}",
                self.names.join(", "),
                crate::exit::one_line(&e)
            );
        }
    }
}

/// One OCI mount entry.
pub(crate) fn oci_mount(destination: &str, typ: &str, source: &str, options: Vec<String>) -> Mount {
    let mut mount = Mount::default();
    mount.set_destination(PathBuf::from(destination));
    mount.set_typ(Some(typ.to_owned()));
    mount.set_source(Some(PathBuf::from(source)));
    mount.set_options(Some(options));
    mount
}

/// docker's defaults for a tmpfs (`--tmpfs` and `type=tmpfs`), before the
/// user's options (a later `exec` wins over `noexec`).
const TMPFS_DEFAULTS: [&str; 3] = ["nosuid", "nodev", "noexec"];

/// Make the volumes the list names (a new anonymous one gets a 64-hex
/// name), create missing `-v` host directories, and build the OCI mounts
/// and the record's `Mounts`.
/// `lock` is the store's lock (needed when a request is a volume), held by
/// the result until [`CreatedVolumes::unlock`].
pub fn resolve(
    store: &VolumeStore,
    lock: Option<VolumeLock>,
    requests: &[MountRequest],
) -> anyhow::Result<ResolvedMounts> {
    let mut resolved = ResolvedMounts {
        created: CreatedVolumes {
            store: Some(store.clone()),
            containers: None,
            lock,
            names: Vec::new(),
        },
        ..ResolvedMounts::default()
    };
    // Parents before children, as docker mounts them.
    let mut ordered: Vec<&MountRequest> = requests.iter().collect();
    ordered.sort_by_key(|m| m.target.matches('/').count());
    for request in ordered {
        let ro = request.read_only.then(|| "ro".to_owned());
        match &request.source {
            MountSource::Bind {
                host,
                propagation,
                recursive,
                create_missing,
            } => {
                prepare_bind_source(host, *create_missing)?;
                let bind = if *recursive { "rbind" } else { "bind" };
                let mut options = vec![bind.to_owned(), propagation.clone()];
                options.extend(ro);
                let source = host.to_string_lossy();
                resolved
                    .oci
                    .push(oci_mount(&request.target, "bind", &source, options));
                resolved.record.push(MountPoint {
                    kind: "bind".into(),
                    name: None,
                    source: source.into_owned(),
                    destination: request.target.clone(),
                    driver: None,
                    mode: request.mode.clone(),
                    rw: !request.read_only,
                    propagation: propagation.clone(),
                });
            }
            MountSource::Volume {
                name,
                no_copy,
                options,
                labels,
                driver,
            } => {
                let anonymous = name.is_none();
                let new = NewVolume {
                    name: name.clone().unwrap_or_else(berth_state::generate_id),
                    driver: driver.clone(),
                    labels: labels.clone(),
                    options: options.clone(),
                    anonymous,
                };
                let lock = resolved
                    .created
                    .lock
                    .as_ref()
                    .context("the volume store is not locked")?;
                let (volume, created) = store.create_locked(lock, &new)?;
                if created {
                    resolved.created.names.push(volume.name.clone());
                }
                if anonymous {
                    resolved.anonymous.push(volume.name.clone());
                }
                resolved
                    .oci
                    .push(volume_mount(store, &volume, request, *no_copy)?);
                resolved.record.push(MountPoint {
                    kind: "volume".into(),
                    name: Some(volume.name.clone()),
                    source: store.mountpoint(&volume).to_string_lossy().into_owned(),
                    destination: request.target.clone(),
                    driver: Some(volume.driver.clone()),
                    mode: if request.mode.is_empty() {
                        "z".into()
                    } else {
                        request.mode.clone()
                    },
                    rw: !request.read_only,
                    propagation: String::new(),
                });
            }
            MountSource::Tmpfs { options } => {
                let mut list: Vec<String> = TMPFS_DEFAULTS.iter().map(|&o| o.to_owned()).collect();
                list.extend(options.iter().cloned());
                list.extend(ro);
                resolved
                    .oci
                    .push(oci_mount(&request.target, "tmpfs", "tmpfs", list));
                resolved.record.push(MountPoint {
                    kind: "tmpfs".into(),
                    name: None,
                    source: String::new(),
                    destination: request.target.clone(),
                    driver: None,
                    mode: request.mode.clone(),
                    rw: !request.read_only,
                    propagation: String::new(),
                });
            }
        }
    }
    Ok(resolved)
}

/// The spec's mount for one volume: a bind of its directory (filled from
/// the image when empty, unless `nocopy`), or a tmpfs for a tmpfs volume.
fn volume_mount(
    store: &VolumeStore,
    volume: &VolumeRecord,
    request: &MountRequest,
    no_copy: bool,
) -> anyhow::Result<Mount> {
    let ro = request.read_only.then(|| "ro".to_owned());
    Ok(match volume.backing()? {
        VolumeBacking::Tmpfs { options } => {
            let mut list = options;
            if !no_copy {
                list.push("tmpcopyup".into());
            }
            list.extend(ro);
            oci_mount(&request.target, "tmpfs", "tmpfs", list)
        }
        VolumeBacking::Directory | VolumeBacking::Bind { .. } => {
            let source = store.mountpoint(volume);
            if !source.is_dir() {
                bail!(
                    "volume {}: its directory {} is missing",
                    volume.name,
                    source.display()
                );
            }
            let mut list = vec!["rbind".to_owned(), "rprivate".to_owned()];
            if !no_copy {
                list.push("copyup".into());
            }
            list.extend(ro);
            oci_mount(&request.target, "bind", &source.to_string_lossy(), list)
        }
    })
}

/// A `-v` host directory that is missing is made (0755, parents too), as
/// docker does; for `--mount` it must exist.
fn prepare_bind_source(host: &Path, create_missing: bool) -> anyhow::Result<()> {
    match std::fs::metadata(host) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create_missing => {
            bail!("the bind source path {} does not exist", host.display())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(host)
                .with_context(|| format!("cannot create the volume source {}", host.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot use {}", host.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(spec: &str) -> anyhow::Result<MountRequest> {
        parse_volume_flag(spec, Path::new("/work/dir"), Some(Path::new("/home/me")))
    }

    fn m(spec: &str) -> anyhow::Result<MountRequest> {
        parse_mount_flag(spec, Path::new("/work/dir"))
    }

    fn err(result: anyhow::Result<MountRequest>) -> String {
        format!("{:#}", result.expect_err("should fail"))
    }

    fn volume(name: Option<&str>, no_copy: bool) -> MountSource {
        MountSource::Volume {
            name: name.map(str::to_owned),
            no_copy,
            options: BTreeMap::new(),
            labels: BTreeMap::new(),
            driver: None,
        }
    }

    fn bind(host: &str, propagation: &str, create_missing: bool) -> MountSource {
        MountSource::Bind {
            host: host.into(),
            propagation: propagation.into(),
            recursive: true,
            create_missing,
        }
    }

    #[test]
    fn volume_flags_as_docker_reads_them() {
        let r = v("data:/srv/./data/:ro").unwrap();
        assert_eq!(r.source, volume(Some("data"), false));
        assert_eq!(r.target, "/srv/data");
        assert!(r.read_only);
        assert_eq!(v("/anon").unwrap().source, volume(None, false));
        assert_eq!(
            v("data:/d:nocopy").unwrap().source,
            volume(Some("data"), true)
        );
        assert_eq!(
            v("/host:/d").unwrap().source,
            bind("/host", "rprivate", true)
        );
        assert_eq!(
            v("./rel:/d").unwrap().source,
            bind("/work/dir/./rel", "rprivate", true)
        );
        assert_eq!(
            v("../up:/d:rshared,ro").unwrap().source,
            bind("/work/dir/../up", "rshared", true)
        );
        assert_eq!(
            v("~/x:/d").unwrap().source,
            bind("/home/me/x", "rprivate", true)
        );
        assert_eq!(v(".:/d:z").unwrap().mode, "z");
    }

    #[test]
    fn bad_volume_flags_are_refused() {
        assert!(err(v("a/b:/d")).contains("invalid volume name"));
        assert!(err(v("..x:/d")).contains("invalid volume name"));
        assert!(err(v("data:rel")).contains("not absolute"));
        assert!(err(v("data:/")).contains("cannot be /"));
        assert!(err(v("data:/d:rx")).contains("unknown option \"rx\""));
        assert!(err(v("data:/d:ro,rw")).contains("only once"));
        assert!(err(v("data:/d:shared")).contains("bind mount"));
        assert!(err(v("/h:/d:nocopy")).contains("nocopy"));
        assert!(err(v(":/d")).contains("empty"));
        assert!(err(v("a:b:c:d")).contains("too many"));
        assert!(err(v("rel")).contains("not absolute"));
        assert!(err(v("data:/d:ro,")).contains("empty option"));
        assert!(err(v("data:/d\0x")).contains("NUL"));
    }

    #[test]
    fn mount_flags_as_docker_reads_them() {
        let r = m("type=bind,source=/h,target=/d,readonly,bind-propagation=rslave").unwrap();
        assert_eq!(r.source, bind("/h", "rslave", false));
        assert!(r.read_only);
        let r = m("type=bind,src=/h,dst=/d,ro=false,bind-nonrecursive").unwrap();
        assert!(!r.read_only);
        assert!(matches!(
            r.source,
            MountSource::Bind {
                recursive: false,
                ..
            }
        ));
        let r = m("type=tmpfs,destination=/t,tmpfs-size=64m,tmpfs-mode=1770").unwrap();
        assert_eq!(
            r.source,
            MountSource::Tmpfs {
                options: vec![format!("size={}", 64 << 20), "mode=1770".into()]
            }
        );
        let r = m("target=/v").unwrap();
        assert_eq!(r.source, volume(None, false));
        let r = m(
            "type=volume,source=cache,target=/c,volume-nocopy,volume-label=a=b,\
             \"volume-opt=o=size=1m,uid=1\",volume-opt=type=tmpfs",
        )
        .unwrap();
        let MountSource::Volume {
            name,
            no_copy,
            options,
            labels,
            ..
        } = r.source
        else {
            panic!("not a volume")
        };
        assert_eq!(name.as_deref(), Some("cache"));
        assert!(no_copy);
        assert_eq!(labels["a"], "b");
        assert_eq!(options["o"], "size=1m,uid=1");
        assert_eq!(options["type"], "tmpfs");
    }

    #[test]
    fn bad_mount_flags_name_the_problem() {
        assert!(
            err(m("type=bind,source=/h,target=/d,colour=red")).contains("unknown key \"colour\"")
        );
        assert!(err(m("type=bind,source=/h")).contains("target"));
        assert!(err(m("type=bind,target=/d")).contains("needs a source"));
        assert!(err(m("type=bind,source=rel,target=/d")).contains("not an absolute path"));
        assert!(err(m("type=tmpfs,source=x,target=/d")).contains("no source"));
        assert!(err(m("type=bind,source=/h,target=/d,tmpfs-size=1m")).contains("type=bind"));
        assert!(err(m("type=volume,target=/d,bind-propagation=shared")).contains("type=volume"));
        assert!(err(m("type=nfs,target=/d")).contains("unknown type"));
        assert!(err(m("type=volume,source=../x,target=/d")).contains("invalid volume name"));
        assert!(err(m("type=volume,source=a/b,target=/d")).contains("invalid volume name"));
        assert!(err(m("type=tmpfs,target=/d,tmpfs-mode=999")).contains("tmpfs-mode"));
        assert!(err(m("type=tmpfs,target=/d,tmpfs-size=lots")).contains("tmpfs-size"));
        assert!(err(m("type=bind,source=/h,target=/d,bind-propagation=up")).contains("propagation"));
        assert!(err(m("type=bind,source=/h,target=/d,readonly=maybe")).contains("maybe"));
        assert!(err(m("\"type=bind")).contains("quote"));
        let line = err(m("type=bind,source=/h,target=/d,colour=red"));
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn tmpfs_flags() {
        let r = parse_tmpfs_flag("/run:size=64m,mode=1777,noexec,ro").unwrap();
        assert_eq!(r.target, "/run");
        assert!(r.read_only);
        assert_eq!(
            r.source,
            MountSource::Tmpfs {
                options: vec!["size=64m".into(), "mode=1777".into(), "noexec".into()]
            }
        );
        assert!(parse_tmpfs_flag("/run").is_ok());
        assert!(parse_tmpfs_flag("run").is_err());
        assert!(parse_tmpfs_flag("/run:bogus").is_err());
        assert!(parse_tmpfs_flag("/run:shared").is_err());
        assert!(parse_tmpfs_flag("/run:colour=red").is_err());
    }

    #[test]
    fn precedence_and_duplicates() {
        let own = vec![v("a1:/data").unwrap(), parse_tmpfs_flag("/run").unwrap()];
        let image = image_volumes(&["/data".into(), "/var/lib/x/".into()]).unwrap();
        let list = combine(own, Vec::new(), image).unwrap();
        let targets: Vec<&str> = list.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(targets, ["/data", "/run", "/var/lib/x"]);
        assert_eq!(list[0].source, volume(Some("a1"), false));
        let dup = combine(
            vec![v("a1:/data").unwrap(), v("/h:/data/").unwrap()],
            Vec::new(),
            Vec::new(),
        );
        assert!(format!("{:#}", dup.unwrap_err()).contains("duplicate mount point: /data"));
    }

    #[test]
    fn resolve_makes_volumes_and_mounts() {
        let tmp = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(tmp.path().join("volumes")).unwrap();
        let host = tmp.path().join("made/by/run");
        let requests = vec![
            v("named:/data/sub").unwrap(),
            v("/anon").unwrap(),
            v(&format!("{}:/data:ro", host.display())).unwrap(),
            parse_tmpfs_flag("/run:size=1m,exec").unwrap(),
        ];
        let mut resolved = resolve(&store, Some(store.lock().unwrap()), &requests).unwrap();
        assert!(host.is_dir(), "a -v host directory is made");
        let targets: Vec<String> = resolved
            .oci
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect();
        assert_eq!(targets, ["/anon", "/data", "/run", "/data/sub"]);
        let options = |i: usize| resolved.oci[i].options().clone().unwrap();
        assert_eq!(options(0), ["rbind", "rprivate", "copyup"]);
        assert_eq!(options(1), ["rbind", "rprivate", "ro"]);
        assert_eq!(options(2), ["nosuid", "nodev", "noexec", "size=1m", "exec"]);
        assert_eq!(resolved.anonymous.len(), 1);
        assert_eq!(resolved.anonymous[0].len(), 64);
        let anon = store.get(&resolved.anonymous[0]).unwrap();
        assert!(anon.anonymous);
        assert_eq!(resolved.record[3].name.as_deref(), Some("named"));
        assert_eq!(resolved.record[3].mode, "z");
        assert_eq!(
            resolved.record[3].source,
            store.data_dir("named").to_string_lossy()
        );
        // Not kept: the volumes made go again.
        drop(resolved);
        assert!(store.list().unwrap().is_empty());

        let again = resolve(&store, Some(store.lock().unwrap()), &requests[..1]).unwrap();
        let mut created = again.created;
        created.keep();
        drop(created);
        assert_eq!(store.list().unwrap().len(), 1);
        let bad = vec![
            v("/x").unwrap(),
            m("type=bind,source=/no/such/dir,target=/y").unwrap(),
        ];
        assert!(resolve(&store, Some(store.lock().unwrap()), &bad).is_err());
        assert_eq!(
            store.list().unwrap().len(),
            1,
            "the anonymous volume stayed"
        );
        resolved = resolve(&store, Some(store.lock().unwrap()), &[]).unwrap();
        assert!(resolved.oci.is_empty());
    }

    #[test]
    fn only_runs_with_volumes_take_the_volume_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(tmp.path().join("volumes")).unwrap();
        let source = tmp.path().join("src");
        let binds = [
            v(&format!("{}:/srv", source.display())).unwrap(),
            parse_tmpfs_flag("/run").unwrap(),
        ];
        assert!(!uses_volumes(&binds) && !uses_volumes(&[]));
        assert!(uses_volumes(&[v("data:/data").unwrap()]));
        assert!(uses_volumes(&[v("/anonymous").unwrap()]));
        // Held by another process meanwhile: a run without volumes is
        // resolved all the same.
        let _held = store.lock().unwrap();
        let resolved = resolve(&store, None, &binds).unwrap();
        assert_eq!(resolved.oci.len(), 2);
        // A volume without the lock is refused, never made unguarded.
        assert!(resolve(&store, None, &[v("data:/data").unwrap()]).is_err());
    }

    #[test]
    fn a_made_volume_another_container_took_up_is_not_cleaned_up() {
        let tmp = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(tmp.path().join("volumes")).unwrap();
        let containers = berth_state::ContainerStore::open(tmp.path().join("containers")).unwrap();
        let mut resolved = resolve(
            &store,
            Some(store.lock().unwrap()),
            &[v("taken:/a").unwrap(), v("free:/b").unwrap()],
        )
        .unwrap();
        resolved.created.containers = Some(containers.clone());
        resolved.created.unlock();
        // Another container's record names "taken" before this one fails.
        let mut other =
            ContainerRecord::new(berth_state::generate_id(), "other".into(), "x".into());
        other.mounts = vec![resolved.record[0].clone()];
        containers.create(&other).unwrap();
        drop(resolved);
        let names: Vec<String> = store.list().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["taken"]);
    }
}
