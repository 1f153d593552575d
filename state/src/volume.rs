//! Named volumes: directories that outlive the containers using them.
//!
//! Layout (docker's `local` driver): `<dir>/<name>/_data` is what containers
//! mount, `<dir>/<name>/volume.json` the record. A volume appears whole or
//! not at all: it is made under a hidden name and renamed into place, under
//! the store's lock.
//!
//! The store does not know containers: whether a volume is in use is the
//! caller's question (it owns the container records).

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{write_atomic, FileLock, StateError, Timestamp};

const RECORD_FILE: &str = "volume.json";
const DATA_DIR: &str = "_data";
const LOCK_FILE: &str = ".lock";
/// A record is a few hundred bytes; a larger one is damage.
const MAX_RECORD_SIZE: u64 = 1 << 20;
/// The one driver berth has.
pub const LOCAL_DRIVER: &str = "local";

/// Everything that can go wrong with volumes.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("invalid volume name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("no such volume: {name}")]
    NotFound { name: String },
    #[error("invalid volume option {option:?}: {reason}")]
    InvalidOption { option: String, reason: String },
    #[error("volume driver {driver:?} is not supported: berth only has the \"local\" driver")]
    UnknownDriver { driver: String },
    #[error("volume {name} already exists with different {what}")]
    Conflict { name: String, what: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt volume record: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

fn io(path: &Path, source: std::io::Error) -> VolumeError {
    VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// docker's rule for local volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (at
/// least two characters), which keeps `/`, `..` and empty names out; at
/// most 255 bytes, so that the name is one path component.
pub fn validate_volume_name(name: &str) -> Result<(), VolumeError> {
    let invalid = |reason| {
        Err(VolumeError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > 255 {
        return invalid("it is longer than 255 bytes");
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok {
        return invalid("only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
    }
    if name.len() < 2 {
        return invalid("names must be at least two characters");
    }
    Ok(())
}

/// What the local driver's `--opt` options ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeBacking {
    /// A plain directory: `<store>/<name>/_data`.
    Directory,
    /// `type=tmpfs`: a tmpfs with the `o=` options (each container that
    /// mounts the volume gets one, see [`VolumeRecord::backing`]).
    Tmpfs { options: Vec<String> },
    /// `type=none,o=bind,device=/path`: a host directory.
    Bind { device: PathBuf },
}

/// One volume's record, stored as its `volume.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub driver: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `--opt` as given (`type`, `device`, `o`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub created_at: Timestamp,
    /// Made for one container (`-v /path`, an image's VOLUME), not named
    /// by the user: `volume prune` removes these by default, `rm -v` with
    /// their container.
    #[serde(default)]
    pub anonymous: bool,
}

impl VolumeRecord {
    /// What the options ask for (checked when the volume was created).
    pub fn backing(&self) -> Result<VolumeBacking, VolumeError> {
        parse_local_options(&self.options)
    }
}

/// docker's local driver options: `type` (`tmpfs`, or `none` with
/// `o=bind`), `device`, `o`. Anything else is refused, as docker does.
pub fn parse_local_options(
    options: &BTreeMap<String, String>,
) -> Result<VolumeBacking, VolumeError> {
    let invalid = |option: &str, reason: &str| VolumeError::InvalidOption {
        option: option.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(key) = options
        .keys()
        .find(|k| !matches!(k.as_str(), "type" | "device" | "o"))
    {
        return Err(invalid(key, "the local driver takes type, device and o"));
    }
    let typ = options.get("type").map(String::as_str);
    let o: Vec<String> = options
        .get("o")
        .map(|o| {
            o.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let device = options.get("device");
    match typ {
        None if device.is_none() && o.is_empty() => Ok(VolumeBacking::Directory),
        Some("tmpfs") => {
            if o.iter().any(|opt| opt.contains('\0')) {
                return Err(invalid("o", "it contains a NUL byte"));
            }
            Ok(VolumeBacking::Tmpfs { options: o })
        }
        Some("none") | None if o.iter().any(|opt| opt == "bind" || opt == "rbind") => {
            let device = device.ok_or_else(|| invalid("device", "o=bind needs device=/path"))?;
            let path = PathBuf::from(device);
            if !path.is_absolute() {
                return Err(invalid(
                    "device",
                    "the bind device must be an absolute path",
                ));
            }
            Ok(VolumeBacking::Bind { device: path })
        }
        Some(other) => Err(invalid(
            "type",
            &format!("berth supports type=tmpfs and type=none,o=bind, not {other:?}"),
        )),
        None => Err(invalid(
            "o",
            "without type=, only o=bind (with device=/path) is supported",
        )),
    }
}

/// What a new volume is made with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewVolume {
    pub name: String,
    /// `None`: local.
    pub driver: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub anonymous: bool,
}

/// The volume store: one directory per volume below `dir`.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    dir: PathBuf,
}

/// Exclusive hold on the volume store; released when dropped.
#[derive(Debug)]
pub struct VolumeLock {
    _lock: FileLock,
}

impl VolumeStore {
    /// Open (creating, mode 0700) the store at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, VolumeError> {
        let dir = dir.into();
        crate::ensure_private_dir(&dir)?;
        Ok(VolumeStore { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the volume's files are (what containers mount for a plain
    /// directory volume). The name must be valid.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name).join(DATA_DIR)
    }

    /// The host path a container mounts for `record` (`_data`, or a bind
    /// volume's device; for a tmpfs volume the `_data` directory, which is
    /// what docker shows as its Mountpoint).
    pub fn mountpoint(&self, record: &VolumeRecord) -> PathBuf {
        match record.backing() {
            Ok(VolumeBacking::Bind { device }) => device,
            _ => self.data_dir(&record.name),
        }
    }

    /// Take the store-wide lock (blocking).
    pub fn lock(&self) -> Result<VolumeLock, VolumeError> {
        let path = self.dir.join(LOCK_FILE);
        let lock = FileLock::exclusive(&path).map_err(|e| io(&path, e))?;
        Ok(VolumeLock { _lock: lock })
    }

    /// Create the volume, or return the existing one of that name (as
    /// docker does for `volume create` and for `-v NAME:/path`); the
    /// `bool` is true when it was made now. Labels or options that differ
    /// from an existing volume's are [`VolumeError::Conflict`] (only when
    /// some were given).
    pub fn create(&self, new: &NewVolume) -> Result<(VolumeRecord, bool), VolumeError> {
        validate_volume_name(&new.name)?;
        let lock = self.lock()?;
        self.create_locked(&lock, new)
    }

    /// [`VolumeStore::create`] under a lock the caller holds (so that it
    /// can record the volume's user before anyone may remove it).
    pub fn create_locked(
        &self,
        _lock: &VolumeLock,
        new: &NewVolume,
    ) -> Result<(VolumeRecord, bool), VolumeError> {
        validate_volume_name(&new.name)?;
        let driver = new.driver.as_deref().unwrap_or(LOCAL_DRIVER);
        if driver != LOCAL_DRIVER {
            return Err(VolumeError::UnknownDriver {
                driver: driver.to_owned(),
            });
        }
        parse_local_options(&new.options)?;
        match self.get(&new.name) {
            Ok(existing) => {
                if !new.options.is_empty() && new.options != existing.options {
                    return Err(VolumeError::Conflict {
                        name: new.name.clone(),
                        what: "options",
                    });
                }
                if !new.labels.is_empty() && new.labels != existing.labels {
                    return Err(VolumeError::Conflict {
                        name: new.name.clone(),
                        what: "labels",
                    });
                }
                return Ok((existing, false));
            }
            Err(VolumeError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let record = VolumeRecord {
            name: new.name.clone(),
            driver: LOCAL_DRIVER.to_owned(),
            labels: new.labels.clone(),
            options: new.options.clone(),
            created_at: Timestamp::now(),
            anonymous: new.anonymous,
        };
        let staging = self.dir.join(format!(".{}.new", new.name));
        let _ = fs::remove_dir_all(&staging);
        let result = (|| {
            DirBuilder::new()
                .mode(0o700)
                .create(&staging)
                .map_err(|e| io(&staging, e))?;
            let data = staging.join(DATA_DIR);
            // docker's _data: root's, 0755 (a container's non-root user
            // reads it; the store dir above keeps others out of the host).
            DirBuilder::new()
                .mode(0o755)
                .create(&data)
                .map_err(|e| io(&data, e))?;
            let json =
                serde_json::to_vec_pretty(&record).map_err(|source| VolumeError::Corrupt {
                    path: staging.join(RECORD_FILE),
                    source,
                })?;
            write_atomic(&staging.join(RECORD_FILE), &json)?;
            let target = self.dir.join(&new.name);
            fs::rename(&staging, &target).map_err(|e| io(&target, e))
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        Ok((record, true))
    }

    /// One volume's record.
    pub fn get(&self, name: &str) -> Result<VolumeRecord, VolumeError> {
        validate_volume_name(name)?;
        let path = self.dir.join(name).join(RECORD_FILE);
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(VolumeError::NotFound {
                    name: name.to_owned(),
                })
            }
            Err(e) => return Err(io(&path, e)),
        };
        let mut text = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, MAX_RECORD_SIZE + 1),
            &mut text,
        )
        .map_err(|e| io(&path, e))?;
        if text.len() as u64 > MAX_RECORD_SIZE {
            return Err(io(
                &path,
                std::io::Error::new(ErrorKind::InvalidData, "volume record too large"),
            ));
        }
        serde_json::from_slice(&text).map_err(|source| VolumeError::Corrupt { path, source })
    }

    /// Every volume, by name. Entries that are not volumes (hidden staging
    /// directories, foreign files) are skipped; a broken record is an
    /// error naming it.
    pub fn list(&self) -> Result<Vec<VolumeRecord>, VolumeError> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)
            .map_err(|e| io(&self.dir, e))?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| validate_volume_name(n).is_ok())
            .collect();
        names.sort();
        let mut list = Vec::new();
        for name in names {
            match self.get(&name) {
                Ok(record) => list.push(record),
                // Removed meanwhile, or a directory that is no volume.
                Err(VolumeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(list)
    }

    /// Remove the volume and its data (never following a symlink out of
    /// it; a bind volume's device is left alone). It is first renamed to a
    /// hidden name, so that it vanishes at once even if deleting its files
    /// takes long or fails.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.get(name)?;
        let lock = self.lock()?;
        self.remove_locked(&lock, name)
    }

    /// [`VolumeStore::remove`] under a lock the caller holds (so that no
    /// container can start using the volume between the caller's check
    /// that none does and the removal).
    pub fn remove_locked(&self, _lock: &VolumeLock, name: &str) -> Result<(), VolumeError> {
        self.get(name)?;
        let dir = self.dir.join(name);
        let doomed = self.dir.join(format!(".{name}.removing"));
        let _ = fs::remove_dir_all(&doomed);
        fs::rename(&dir, &doomed).map_err(|e| io(&dir, e))?;
        fs::remove_dir_all(&doomed).map_err(|e| io(&doomed, e))
    }

    /// Whether the volume's `_data` holds nothing.
    pub fn is_empty(&self, name: &str) -> Result<bool, VolumeError> {
        let data = self.data_dir(name);
        let mut entries = fs::read_dir(&data).map_err(|e| io(&data, e))?;
        Ok(entries.next().is_none())
    }

    /// Bytes the volume's `_data` takes on disk (allocated blocks, each
    /// inode once; not crossing into other filesystems).
    pub fn disk_usage(&self, name: &str) -> Result<u64, VolumeError> {
        disk_usage(&self.data_dir(name))
    }
}

/// Allocated bytes below `dir`, hard links counted once, staying on `dir`'s
/// filesystem, never following symlinks.
pub fn disk_usage(dir: &Path) -> Result<u64, VolumeError> {
    let top = fs::symlink_metadata(dir).map_err(|e| io(dir, e))?;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let entries = match fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&current, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io(&current, e))?;
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != top.dev() {
                continue;
            }
            if seen.insert(meta.ino()) {
                total += meta.blocks() * 512;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> NewVolume {
        NewVolume {
            name: name.into(),
            ..NewVolume::default()
        }
    }

    #[test]
    fn names_follow_docker() {
        for good in ["data", "a1", "my_vol.2-x", &"a".repeat(255)] {
            assert!(validate_volume_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a",
            "..",
            ".",
            "a/b",
            "../x",
            "/abs",
            "-a",
            "_a",
            ".a",
            "a b",
            "a\0b",
            "é1",
            &"a".repeat(256),
        ] {
            assert!(
                matches!(
                    validate_volume_name(bad),
                    Err(VolumeError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn create_get_list_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(tmp.path().join("volumes")).unwrap();
        let mut new = named("data");
        new.labels.insert("k".into(), "v".into());
        let (record, created) = store.create(&new).unwrap();
        assert!(created);
        assert_eq!(record.driver, "local");
        assert!(store.data_dir("data").is_dir());
        assert!(store.is_empty("data").unwrap());
        // Again: the same volume, not a new one.
        let (again, created) = store.create(&named("data")).unwrap();
        assert!(!created);
        assert_eq!(again, record);
        let mut other = named("data");
        other.labels.insert("k".into(), "different".into());
        assert!(matches!(
            store.create(&other),
            Err(VolumeError::Conflict { what: "labels", .. })
        ));
        fs::write(store.data_dir("data").join("f"), vec![1u8; 10_000]).unwrap();
        assert!(!store.is_empty("data").unwrap());
        assert!(store.disk_usage("data").unwrap() >= 10_000);
        store.create(&named("zz")).unwrap();
        // Foreign entries are not volumes.
        fs::create_dir(tmp.path().join("volumes/.hidden")).unwrap();
        let names: Vec<String> = store.list().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["data", "zz"]);
        store.remove("data").unwrap();
        assert!(matches!(
            store.get("data"),
            Err(VolumeError::NotFound { .. })
        ));
        assert!(!tmp.path().join("volumes/data").exists());
        assert!(matches!(
            store.remove("data"),
            Err(VolumeError::NotFound { .. })
        ));
    }

    #[test]
    fn bad_names_create_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(tmp.path().join("volumes")).unwrap();
        for bad in ["../escape", "a/b", ".."] {
            assert!(store.create(&named(bad)).is_err(), "{bad}");
            assert!(store.get(bad).is_err());
            assert!(store.remove(bad).is_err());
        }
        let mut entries: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        entries.retain(|n| n != LOCK_FILE);
        assert!(entries.is_empty(), "{entries:?}");
        assert!(!tmp.path().join("escape").exists());
    }

    #[test]
    fn removal_does_not_follow_symlinks_out() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        let store = VolumeStore::open(tmp.path().join("volumes")).unwrap();
        store.create(&named("vol")).unwrap();
        std::os::unix::fs::symlink(&outside, store.data_dir("vol").join("link")).unwrap();
        store.remove("vol").unwrap();
        assert!(outside.join("keep").exists());
    }

    #[test]
    fn local_driver_options() {
        let opts = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            parse_local_options(&opts(&[])).unwrap(),
            VolumeBacking::Directory
        );
        assert_eq!(
            parse_local_options(&opts(&[
                ("type", "tmpfs"),
                ("device", "tmpfs"),
                ("o", "size=64m,uid=1000")
            ]))
            .unwrap(),
            VolumeBacking::Tmpfs {
                options: vec!["size=64m".into(), "uid=1000".into()]
            }
        );
        assert_eq!(
            parse_local_options(&opts(&[
                ("type", "none"),
                ("o", "bind"),
                ("device", "/srv")
            ]))
            .unwrap(),
            VolumeBacking::Bind {
                device: "/srv".into()
            }
        );
        for bad in [
            opts(&[("size", "1g")]),
            opts(&[("type", "nfs")]),
            opts(&[("o", "bind")]),
            opts(&[("type", "none"), ("o", "bind"), ("device", "rel")]),
            opts(&[("device", "/dev/sda")]),
        ] {
            assert!(parse_local_options(&bad).is_err(), "{bad:?}");
        }
        let tmp = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(tmp.path().join("volumes")).unwrap();
        let mut new = named("bad");
        new.options = opts(&[("colour", "red")]);
        assert!(matches!(
            store.create(&new),
            Err(VolumeError::InvalidOption { .. })
        ));
        new.options.clear();
        new.driver = Some("nfs".into());
        assert!(matches!(
            store.create(&new),
            Err(VolumeError::UnknownDriver { .. })
        ));
        assert!(store.list().unwrap().is_empty());
    }
}
