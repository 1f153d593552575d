//! `berth volume create|ls|inspect|rm|prune`, and what the other commands
//! ask about volumes: which containers use one, and removing a container's
//! anonymous volumes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;

use anyhow::{bail, Context};
use berth_state::{ContainerRecord, NewVolume, VolumeError, VolumeLock, VolumeRecord, VolumeStore};

use crate::args::{VolumeCommand, VolumeCreateArgs, VolumeLsArgs, VolumePruneArgs, VolumeRmArgs};
use crate::paths::Paths;

pub fn command(paths: &Paths, command: &VolumeCommand) -> anyhow::Result<i32> {
    match command {
        VolumeCommand::Create(args) => create(paths, args),
        VolumeCommand::Ls(args) => list(paths, args),
        VolumeCommand::Inspect { volumes } => inspect(paths, volumes),
        VolumeCommand::Rm(args) => remove(paths, args),
        VolumeCommand::Prune(args) => prune(paths, args),
    }
}

/// The volume store of this root (`<root>/volumes`).
pub fn store(paths: &Paths) -> anyhow::Result<VolumeStore> {
    paths.ensure_root()?;
    let dir = paths.root().join("volumes");
    VolumeStore::open(&dir)
        .with_context(|| format!("cannot open the volume store {}", dir.display()))
}

/// `KEY=VALUE` pairs (a bare KEY has an empty value).
pub fn key_values(flag: &str, entries: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for entry in entries {
        let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
        if key.is_empty() {
            bail!("invalid {flag} {entry:?}: the key is empty");
        }
        map.insert(key.to_owned(), value.to_owned());
    }
    Ok(map)
}

fn create(paths: &Paths, args: &VolumeCreateArgs) -> anyhow::Result<i32> {
    let store = store(paths)?;
    let new = NewVolume {
        name: args.name.clone().unwrap_or_else(berth_state::generate_id),
        driver: Some(args.driver.clone()),
        labels: key_values("--label", &args.label)?,
        options: key_values("--opt", &args.opt)?,
        anonymous: false,
    };
    let (volume, _) = store.create(&new)?;
    crate::exit::write_stdout(&format!("{}\n", volume.name))?;
    Ok(0)
}

/// Which containers (ids) use each volume, stopped ones too.
pub fn users(paths: &Paths) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    volume_users(&paths.containers()?)
}

/// [`users`] from a container store.
pub fn volume_users(
    containers: &berth_state::ContainerStore,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in containers.list()? {
        for name in volume_names(&record) {
            map.entry(name).or_default().push(record.id.clone());
        }
    }
    Ok(map)
}

fn volume_names(record: &ContainerRecord) -> BTreeSet<String> {
    record
        .mounts
        .iter()
        .filter(|m| m.kind == "volume")
        .filter_map(|m| m.name.clone())
        .chain(record.anonymous_volumes.iter().cloned())
        .collect()
}

/// A `--filter` of `volume ls` / `volume prune`.
#[derive(Debug, PartialEq)]
enum Filter {
    Name(String),
    Label {
        key: String,
        value: Option<String>,
        negate: bool,
    },
    Dangling(bool),
    Driver(String),
}

fn parse_filter(text: &str, allowed: &[&str]) -> anyhow::Result<Filter> {
    let (key, value) = text
        .split_once('=')
        .with_context(|| format!("invalid filter {text:?}: use KEY=VALUE"))?;
    let label = |negate: bool| {
        let (k, v) = match value.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (value.to_owned(), None),
        };
        Filter::Label {
            key: k,
            value: v,
            negate,
        }
    };
    let filter = match key {
        "name" => Filter::Name(value.to_owned()),
        "label" => label(false),
        "label!" => label(true),
        "dangling" => Filter::Dangling(match value {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => bail!("invalid filter {text:?}: dangling is true or false"),
        }),
        "driver" => Filter::Driver(value.to_owned()),
        _ => bail!("invalid filter {key:?}"),
    };
    let name = if key == "label!" { "label" } else { key };
    if !allowed.contains(&name) {
        bail!("invalid filter {key:?}");
    }
    Ok(filter)
}

impl Filter {
    fn matches(&self, volume: &VolumeRecord, in_use: bool) -> bool {
        match self {
            Filter::Name(part) => volume.name.contains(part.as_str()),
            Filter::Label { key, value, negate } => {
                let found = match (volume.labels.get(key), value) {
                    (Some(v), Some(want)) => v == want,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                found != *negate
            }
            Filter::Dangling(dangling) => in_use != *dangling,
            Filter::Driver(driver) => &volume.driver == driver,
        }
    }
}

/// docker: filters of one key are alternatives, different keys must all
/// hold.
fn matches_all(filters: &[Filter], volume: &VolumeRecord, in_use: bool) -> bool {
    let mut by_kind: std::collections::HashMap<std::mem::Discriminant<Filter>, Vec<&Filter>> =
        std::collections::HashMap::new();
    for f in filters {
        by_kind
            .entry(std::mem::discriminant(f))
            .or_default()
            .push(f);
    }
    by_kind.values().all(|group| match group[0] {
        // Negated labels each must hold.
        Filter::Label { negate: true, .. } => group.iter().all(|f| f.matches(volume, in_use)),
        _ => group.iter().any(|f| f.matches(volume, in_use)),
    })
}

fn list(paths: &Paths, args: &VolumeLsArgs) -> anyhow::Result<i32> {
    let filters = args
        .filter
        .iter()
        .map(|f| parse_filter(f, &["name", "label", "dangling", "driver"]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let store = store(paths)?;
    let users = users(paths)?;
    let volumes: Vec<VolumeRecord> = store
        .list()?
        .into_iter()
        .filter(|v| matches_all(&filters, v, users.contains_key(&v.name)))
        .collect();
    let out = if args.quiet {
        volumes.iter().map(|v| format!("{}\n", v.name)).collect()
    } else {
        let rows: Vec<Vec<String>> = volumes
            .iter()
            .map(|v| vec![v.driver.clone(), v.name.clone()])
            .collect();
        crate::table::render(&["DRIVER", "VOLUME NAME"], &rows)
    };
    crate::exit::write_stdout(&out)?;
    Ok(0)
}

/// docker's `volume inspect` shape.
pub fn inspect_json(store: &VolumeStore, volume: &VolumeRecord) -> serde_json::Value {
    let or_null = |map: &BTreeMap<String, String>| {
        if map.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!(map)
        }
    };
    serde_json::json!({
        "CreatedAt": volume.created_at,
        "Driver": volume.driver,
        "Labels": or_null(&volume.labels),
        "Mountpoint": store.mountpoint(volume),
        "Name": volume.name,
        "Options": or_null(&volume.options),
        "Scope": "local",
    })
}

fn inspect(paths: &Paths, names: &[String]) -> anyhow::Result<i32> {
    let store = store(paths)?;
    let mut out = Vec::new();
    let mut failed = false;
    for name in names {
        match store.get(name) {
            Ok(volume) => out.push(inspect_json(&store, &volume)),
            Err(e) => {
                eprintln!("berth: {e}");
                failed = true;
            }
        }
    }
    crate::exit::write_stdout(&format!("{}\n", serde_json::to_string_pretty(&out)?))?;
    Ok(i32::from(failed))
}

/// Remove one volume unless a container (running or not) uses it.
fn remove_unused(
    store: &VolumeStore,
    lock: &VolumeLock,
    users: &BTreeMap<String, Vec<String>>,
    name: &str,
) -> anyhow::Result<()> {
    if let Some(ids) = users.get(name) {
        let short: Vec<&str> = ids.iter().map(|id| &id[..id.len().min(12)]).collect();
        bail!(
            "cannot remove volume {name}: it is in use by container {}; remove the container first",
            short.join(", ")
        );
    }
    store.remove_locked(lock, name)?;
    Ok(())
}

fn remove(paths: &Paths, args: &VolumeRmArgs) -> anyhow::Result<i32> {
    let store = store(paths)?;
    // Held from the check to the removal: no `run` can start using a
    // volume in between.
    let lock = store.lock()?;
    let users = users(paths)?;
    let mut failed = false;
    for name in &args.volumes {
        match remove_unused(&store, &lock, &users, name) {
            Ok(()) => crate::exit::write_stdout(&format!("{name}\n"))?,
            Err(e)
                if args.force
                    && matches!(
                        e.downcast_ref::<VolumeError>(),
                        Some(VolumeError::NotFound { .. })
                    ) => {}
            Err(e) => {
                eprintln!("berth: {}", crate::exit::one_line(&e));
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

/// Remove the unused volumes: anonymous ones, or with `all` named ones
/// too, that match every `filters` entry (`label=`, `label!=`). Returns
/// the names removed and the bytes they took. For `volume prune` and
/// `system prune --volumes`.
pub fn prune_volumes(
    paths: &Paths,
    all: bool,
    filters: &[String],
) -> anyhow::Result<(Vec<String>, u64)> {
    let filters = filters
        .iter()
        .map(|f| parse_filter(f, &["label"]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let store = store(paths)?;
    let lock = store.lock()?;
    let users = users(paths)?;
    let mut removed = Vec::new();
    let mut bytes = 0;
    for volume in store.list()? {
        if users.contains_key(&volume.name)
            || !(all || volume.anonymous)
            || !matches_all(&filters, &volume, false)
        {
            continue;
        }
        let size = store.disk_usage(&volume.name).unwrap_or(0);
        store.remove_locked(&lock, &volume.name)?;
        bytes += size;
        removed.push(volume.name);
    }
    Ok((removed, bytes))
}

fn prune(paths: &Paths, args: &VolumePruneArgs) -> anyhow::Result<i32> {
    if !args.force && std::io::stdin().is_terminal() {
        let what = if args.all {
            "all local volumes"
        } else {
            "anonymous local volumes"
        };
        eprint!(
            "WARNING! This will remove {what} not used by at least one container.\n\
             Are you sure you want to continue? [y/N] "
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let (removed, bytes) = prune_volumes(paths, args.all, &args.filter)?;
    let mut out = String::new();
    if !removed.is_empty() {
        out.push_str("Deleted Volumes:\n");
        for name in &removed {
            out.push_str(name);
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "Total reclaimed space: {}\n",
        crate::table::human_size(bytes)
    ));
    crate::exit::write_stdout(&out)?;
    Ok(0)
}

/// Remove a removed container's anonymous volumes (`rm -v`, `--rm`),
/// except those another container still uses (through `--volumes-from`).
/// Failures are reported, not fatal: the container is gone already.
pub fn remove_anonymous(paths: &Paths, record: &ContainerRecord) {
    if record.anonymous_volumes.is_empty() {
        return;
    }
    let result = (|| {
        let store = store(paths)?;
        let lock = store.lock()?;
        let users = users(paths)?;
        for name in &record.anonymous_volumes {
            let others = users
                .get(name)
                .is_some_and(|ids| ids.iter().any(|id| id != &record.id));
            if others {
                continue;
            }
            match store.remove_locked(&lock, name) {
                Ok(()) | Err(VolumeError::NotFound { .. }) => {}
                Err(e) => return Err(anyhow::Error::new(e)),
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!(
            "berth: cannot remove the volumes of container {}: {}",
            record.name,
            crate::exit::one_line(&e)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(name: &str, labels: &[(&str, &str)]) -> VolumeRecord {
        VolumeRecord {
            name: name.into(),
            driver: "local".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            options: BTreeMap::new(),
            created_at: berth_state::Timestamp::from_unix(0, 0),
            anonymous: false,
        }
    }

    fn f(text: &str) -> Filter {
        parse_filter(text, &["name", "label", "dangling", "driver"]).unwrap()
    }

    #[test]
    fn filters_as_docker() {
        let v = volume("web-data", &[("env", "prod"), ("team", "")]);
        assert!(matches_all(&[f("name=data")], &v, false));
        assert!(!matches_all(&[f("name=cache")], &v, false));
        // Two names: either.
        assert!(matches_all(&[f("name=cache"), f("name=web")], &v, false));
        assert!(matches_all(&[f("label=env")], &v, false));
        assert!(matches_all(&[f("label=env=prod")], &v, false));
        assert!(!matches_all(&[f("label=env=dev")], &v, false));
        assert!(matches_all(&[f("label!=env=dev")], &v, false));
        assert!(!matches_all(&[f("label!=team")], &v, false));
        assert!(matches_all(&[f("dangling=true")], &v, false));
        assert!(!matches_all(&[f("dangling=true")], &v, true));
        assert!(matches_all(&[f("dangling=false")], &v, true));
        // Different keys: both.
        assert!(!matches_all(
            &[f("name=web"), f("dangling=false")],
            &v,
            false
        ));
        assert!(matches_all(&[f("driver=local")], &v, false));
        for bad in ["colour=red", "dangling=maybe", "name"] {
            assert!(
                parse_filter(bad, &["name", "label", "dangling", "driver"]).is_err(),
                "{bad}"
            );
        }
        assert!(parse_filter("name=x", &["label"]).is_err());
    }

    #[test]
    fn inspect_has_docker_shape() {
        let tmp = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(tmp.path().join("volumes")).unwrap();
        let value = inspect_json(&store, &volume("data", &[]));
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "CreatedAt",
                "Driver",
                "Labels",
                "Mountpoint",
                "Name",
                "Options",
                "Scope"
            ]
        );
        assert_eq!(value["Labels"], serde_json::Value::Null);
        assert_eq!(value["Scope"], "local");
        assert_eq!(
            value["Mountpoint"],
            store.data_dir("data").to_string_lossy().as_ref()
        );
        assert_eq!(value["CreatedAt"], "1970-01-01T00:00:00.000000000Z");
    }
}
