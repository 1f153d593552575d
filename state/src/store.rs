use std::fs::{self, DirBuilder};
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::{validate_name, write_atomic, ContainerRecord, Durability, FileLock, StateError};

const RECORD_FILE: &str = "config.json";
const LOCK_FILE: &str = ".lock";

/// The directory of container records: `<dir>/<id>/config.json`, one
/// directory per container, which is also where the container's write
/// layer and other per-container files live.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    dir: PathBuf,
}

/// Exclusive hold on the store; released when dropped.
#[derive(Debug)]
pub struct StoreLock {
    _lock: FileLock,
}

impl ContainerStore {
    /// Open (creating, mode 0700) the store at `dir`; refused when another
    /// user owns it or may write to it (see [`crate::ensure_private_dir`]).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StateError> {
        let dir = dir.into();
        crate::ensure_private_dir(&dir)?;
        Ok(ContainerStore { dir })
    }

    /// Directory holding everything of container `id`.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join(RECORD_FILE)
    }

    /// Take the store-wide lock (blocking). Hold it across a
    /// read-check-write sequence that must not interleave with another
    /// berth process.
    pub fn lock(&self) -> Result<StoreLock, StateError> {
        let path = self.dir.join(LOCK_FILE);
        let lock = FileLock::exclusive(&path).map_err(|e| StateError::io(&path, e))?;
        Ok(StoreLock { _lock: lock })
    }

    /// Add a new container. Fails if its name is invalid or taken. The
    /// container directory appears complete or not at all: it is filled
    /// under a hidden name and renamed into place.
    pub fn create(&self, record: &ContainerRecord) -> Result<(), StateError> {
        validate_name(&record.name)?;
        let _lock = self.lock()?;
        if let Some(other) = self.list()?.into_iter().find(|r| r.name == record.name) {
            return Err(StateError::NameInUse {
                name: record.name.clone(),
                id: other.id,
            });
        }
        let staging = self.dir.join(format!(".{}.new", record.id));
        let result = (|| {
            DirBuilder::new()
                .mode(0o700)
                .create(&staging)
                .map_err(|e| StateError::io(&staging, e))?;
            write_atomic(&staging.join(RECORD_FILE), &to_json(record))?;
            let target = self.container_dir(&record.id);
            fs::rename(&staging, &target).map_err(|e| StateError::io(&target, e))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result
    }

    /// Read one record by full id.
    pub fn load(&self, id: &str) -> Result<ContainerRecord, StateError> {
        let path = self.record_path(id);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => StateError::NotFound {
                query: id.to_owned(),
            },
            _ => StateError::io(&path, e),
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Overwrite a record atomically. Updates are not forced to disk with a
    /// directory fsync: after a crash an older version may come back, which
    /// is harmless because every status claim is checked against the live
    /// processes (see [`crate::is_same_process`]) before it is believed.
    pub fn save(&self, record: &ContainerRecord) -> Result<(), StateError> {
        let path = self.record_path(&record.id);
        crate::replace_file(&path, &to_json(record), Durability::Data)
            .map_err(|e| StateError::io(&path, e))
    }

    /// Read-modify-write one record under the store lock, so concurrent
    /// updaters (a monitor recording an exit, `ps` repairing a stale
    /// record) never overwrite each other.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord, StateError> {
        let _lock = self.lock()?;
        let mut record = self.load(id)?;
        change(&mut record);
        self.save(&record)?;
        Ok(record)
    }

    /// Every container, oldest first. Hidden entries (half-created or
    /// half-removed containers) are skipped; so are directories whose
    /// record is missing.
    pub fn list(&self) -> Result<Vec<ContainerRecord>, StateError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| StateError::io(&self.dir, e))?;
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StateError::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            if id.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            match self.load(id) {
                Ok(record) => records.push(record),
                Err(StateError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        records.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        Ok(records)
    }

    /// Find a container by exact name, full id, or unique id prefix.
    pub fn find(&self, query: &str) -> Result<ContainerRecord, StateError> {
        let not_found = || StateError::NotFound {
            query: query.to_owned(),
        };
        if query.is_empty() {
            return Err(not_found());
        }
        let records = self.list()?;
        if let Some(r) = records.iter().find(|r| r.id == query || r.name == query) {
            return Ok(r.clone());
        }
        let mut matches = records.into_iter().filter(|r| r.id.starts_with(query));
        match (matches.next(), matches.count()) {
            (Some(r), 0) => Ok(r),
            (Some(_), more) => Err(StateError::Ambiguous {
                query: query.to_owned(),
                count: more + 1,
            }),
            (None, _) => Err(not_found()),
        }
    }

    /// Delete a container's directory and record. Idempotent. The directory
    /// is first renamed to a hidden name, so a crash half-way leaves nothing
    /// that looks like a container; leftovers are swept by the next remove.
    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        let dir = self.container_dir(id);
        let doomed = self.dir.join(format!(".{id}.removing"));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(StateError::io(&dir, e)),
        }
        remove_tree(&doomed)?;
        remove_tree(&self.dir.join(format!(".{id}.new")))
    }

    /// Path of the store directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn remove_tree(path: &Path) -> Result<(), StateError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StateError::io(path, e)),
    }
}

fn to_json(record: &ContainerRecord) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(record).expect("records always serialize");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate_id, Status};
    use std::os::unix::fs::PermissionsExt;

    fn store() -> (tempfile::TempDir, ContainerStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(dir.path().join("containers")).unwrap();
        (dir, store)
    }

    fn record(name: &str) -> ContainerRecord {
        ContainerRecord::new(generate_id(), name.into(), "busybox".into())
    }

    #[test]
    fn store_dir_is_private() {
        let (_tmp, store) = store();
        let mode = fs::metadata(store.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn create_load_update_remove() {
        let (_tmp, store) = store();
        let mut r = record("web");
        r.env = vec!["A=1".into()];
        store.create(&r).unwrap();
        assert_eq!(store.load(&r.id).unwrap(), r);
        let updated = store.update(&r.id, |r| r.mark_exited(3)).unwrap();
        assert_eq!(updated.status, Status::Exited);
        assert_eq!(store.load(&r.id).unwrap().exit_code, Some(3));
        store.remove(&r.id).unwrap();
        store.remove(&r.id).unwrap();
        assert!(matches!(
            store.load(&r.id),
            Err(StateError::NotFound { .. })
        ));
        assert_eq!(
            fs::read_dir(store.dir()).unwrap().count(),
            1,
            "only .lock remains"
        );
    }

    #[test]
    fn names_are_unique_and_validated() {
        let (_tmp, store) = store();
        store.create(&record("web")).unwrap();
        assert!(matches!(
            store.create(&record("web")),
            Err(StateError::NameInUse { .. })
        ));
        assert!(matches!(
            store.create(&record("../../etc")),
            Err(StateError::InvalidName { .. })
        ));
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn find_by_name_id_and_prefix() {
        let (_tmp, store) = store();
        let mut a = record("alpha");
        a.id = format!("abc1{}", &a.id[4..]);
        let mut b = record("beta");
        b.id = format!("abc2{}", &b.id[4..]);
        store.create(&a).unwrap();
        store.create(&b).unwrap();
        assert_eq!(store.find("alpha").unwrap().id, a.id);
        assert_eq!(store.find(&b.id).unwrap().name, "beta");
        assert_eq!(store.find("abc1").unwrap().id, a.id);
        assert!(matches!(
            store.find("abc"),
            Err(StateError::Ambiguous { count: 2, .. })
        ));
        assert!(matches!(
            store.find("zzz"),
            Err(StateError::NotFound { .. })
        ));
        assert!(matches!(store.find(""), Err(StateError::NotFound { .. })));
    }

    #[test]
    fn half_made_and_corrupt_entries() {
        let (_tmp, store) = store();
        fs::create_dir(store.dir().join(".deadbeef.new")).unwrap();
        fs::create_dir(store.dir().join("deadbeef")).unwrap();
        assert!(store.list().unwrap().is_empty());
        store.remove("deadbeef").unwrap();
        assert_eq!(fs::read_dir(store.dir()).unwrap().count(), 0);

        let r = record("x");
        store.create(&r).unwrap();
        fs::write(store.container_dir(&r.id).join(RECORD_FILE), b"{").unwrap();
        let err = store.list().unwrap_err();
        assert!(err.to_string().contains(&r.id), "{err}");
    }

    #[test]
    fn concurrent_creates_never_share_a_name() {
        let (_tmp, store) = store();
        let winners: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| store.create(&record("same")).is_ok() as usize))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(winners, 1);
        assert_eq!(store.list().unwrap().len(), 1);
    }
}
