use std::fs::{self, DirBuilder};
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::{validate_name, ContainerRecord, Durability, FileLock, StateError};

const RECORD_FILE: &str = "config.json";

/// How much of a record must survive a crash of the machine. A `--rm`
/// container dies with the machine (nothing restarts it, and its record
/// exists only to be removed), so its record is never synced: a crash can
/// lose at most a record that was about to go anyway, and the fsyncs were
/// most of the disk work of a short `run --rm`. Every other record's
/// creation is durable and its updates keep their data (see
/// [`ContainerStore::save`]).
fn record_durability(record: &ContainerRecord) -> Durability {
    if record.auto_remove {
        Durability::Volatile
    } else {
        Durability::Data
    }
}
/// A record is a few KiB (a custom seccomp profile makes it tens); a larger
/// one is damage, not read into memory.
const MAX_RECORD_SIZE: u64 = 4 << 20;
const LOCK_FILE: &str = ".lock";
/// `<dir>/.names/<name>`: a symlink to the id holding the name, so that a
/// create or rename checks one name instead of reading every record. A
/// link is made before its record and checked against it when read, so a
/// link left by a crash (or a remove) never holds a name.
const NAME_INDEX: &str = ".names";

/// Beside the transient containers' directories (or in the store's own,
/// for a store without one): the exit codes of removed `--rm` containers,
/// one file per id, for `wait`.
const EXITS_DIR: &str = ".exits";

/// How long the exit code of a removed `--rm` container is kept (podman
/// keeps them as long): for a `wait` that looks after the removal.
const EXIT_KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// In the exits directory: when old exit codes were last dropped.
const EXITS_PRUNED: &str = ".pruned";
const EXITS_PRUNED_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// `<dir>/.<id>.layer`: the write layer of a transient container, on
/// disk beside the link to its directory (see [`ContainerStore::create_transient`]).
const LAYER_SUFFIX: &str = ".layer";

/// The directory of container records: `<dir>/<id>/config.json`, one
/// directory per container, which is also where the container's write
/// layer and other per-container files live.
///
/// A transient container (`--rm`: nothing of it outlives it, nor a
/// reboot) keeps its directory in the store's transient directory, a tmpfs
/// like runc's and crun's state, and `<dir>/<id>` is a symlink to it; only
/// its write layer, which can grow large, stays on disk in
/// `<dir>/.<id>.layer` ([`ContainerStore::layer_dir`]). Creating and deleting
/// files on a tmpfs costs a fraction of a disk filesystem's, and a short
/// `run --rm` makes a dozen of them.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    dir: PathBuf,
    transient: Option<PathBuf>,
}

/// A container whose record cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenRecord {
    /// The container's id (its directory's name).
    pub id: String,
    /// Why its record cannot be read.
    pub reason: String,
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
        Ok(ContainerStore {
            dir,
            transient: None,
        })
    }

    /// Keep transient containers' directories in `dir` (made private,
    /// mode 0700, by the first such container; normally on a tmpfs): see
    /// [`ContainerStore::create_transient`].
    pub fn with_transient_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.transient = Some(dir.into());
        self
    }

    /// Directory holding everything of container `id` (for a transient
    /// container, a link to its directory in the transient directory).
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Where container `id`'s write layer lives: its own directory, or for
    /// a transient container `<dir>/.<id>.layer` on disk. One `lstat`.
    pub fn layer_dir(&self, id: &str) -> PathBuf {
        let dir = self.container_dir(id);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => self.transient_layer(id),
            _ => dir,
        }
    }

    fn transient_layer(&self, id: &str) -> PathBuf {
        self.dir.join(format!(".{id}{LAYER_SUFFIX}"))
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
        self.create_in_place(record, false)
    }

    /// [`Self::create`] for a container that nothing keeps once it ends: its
    /// directory goes to the transient directory (when the store has one)
    /// and its write layer to `<dir>/.<id>.layer`; `<dir>/<id>`, a symlink to
    /// the directory, made last, publishes it. After a reboot the link
    /// dangles and the next create sweeps it and the layer away.
    pub fn create_transient(&self, record: &ContainerRecord) -> Result<(), StateError> {
        self.create_in_place(record, self.transient.is_some())
    }

    fn create_in_place(&self, record: &ContainerRecord, transient: bool) -> Result<(), StateError> {
        validate_name(&record.name)?;
        let _lock = self.lock()?;
        self.sweep_leftovers();
        if let Some(other) = self.name_holder(&record.name)? {
            return Err(StateError::NameInUse {
                name: record.name.clone(),
                id: other,
            });
        }
        self.link_name(&record.name, &record.id)?;
        if transient {
            return self.create_transient_dirs(record);
        }
        let staging = self.dir.join(format!(".{}.new", record.id));
        let result = (|| {
            DirBuilder::new()
                .mode(0o700)
                .create(&staging)
                .map_err(|e| StateError::io(&staging, e))?;
            let path = staging.join(RECORD_FILE);
            let durability = match record_durability(record) {
                Durability::Volatile => Durability::Volatile,
                _ => Durability::Full,
            };
            crate::replace_file(&path, &to_json(record), durability)
                .map_err(|e| StateError::io(&path, e))?;
            let target = self.container_dir(&record.id);
            fs::rename(&staging, &target).map_err(|e| StateError::io(&target, e))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result
    }

    /// The transient directory, its record, the layer directory on disk,
    /// then the link that makes it a container; undone on failure.
    fn create_transient_dirs(&self, record: &ContainerRecord) -> Result<(), StateError> {
        let Some(transient) = &self.transient else {
            unreachable!("only called with a transient directory");
        };
        let target = transient.join(&record.id);
        let layer = self.transient_layer(&record.id);
        let link = self.container_dir(&record.id);
        crate::ensure_private_dir(transient)?;
        let result = (|| {
            for dir in [&target, &layer] {
                DirBuilder::new()
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| StateError::io(dir, e))?;
            }
            let path = target.join(RECORD_FILE);
            crate::replace_file(&path, &to_json(record), Durability::Volatile)
                .map_err(|e| StateError::io(&path, e))?;
            std::os::unix::fs::symlink(&target, &link).map_err(|e| StateError::io(&link, e))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&target);
            let _ = fs::remove_dir_all(&layer);
        }
        result
    }

    fn exits_dir(&self) -> PathBuf {
        self.transient.as_ref().unwrap_or(&self.dir).join(EXITS_DIR)
    }

    /// Keep the exit code of `id`, a `--rm` container about to be removed,
    /// for [`Self::exit_code_of_removed`] (a `wait` that asks after the
    /// removal, as docker's daemon answers it); codes older than five
    /// minutes are dropped here. Not synced: on the transient directory's
    /// tmpfs, and a waiter does not outlive the machine.
    pub fn keep_exit_code(&self, id: &str, code: i32) -> Result<(), StateError> {
        let dir = self.exits_dir();
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => self.drop_old_exit_codes(&dir),
            Err(e) => return Err(StateError::io(&dir, e)),
        }
        let path = dir.join(exit_file_name(id)?);
        crate::replace_file(&path, format!("{code}\n").as_bytes(), Durability::Volatile)
            .map_err(|e| StateError::io(&path, e))
    }

    /// The exit code [`Self::keep_exit_code`] kept for `id`, if any.
    pub fn exit_code_of_removed(&self, id: &str) -> Option<i32> {
        let path = self.exits_dir().join(exit_file_name(id).ok()?);
        fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Best effort: one left now goes with a later call. At most once a
    /// minute (a `.pruned` file's age says when it last ran), so that a
    /// burst of ends does not read the directory once per end.
    fn drop_old_exit_codes(&self, dir: &Path) {
        let marker = dir.join(EXITS_PRUNED);
        let pruned_lately = fs::metadata(&marker)
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age < EXITS_PRUNED_EVERY);
        if pruned_lately || fs::write(&marker, b"").is_err() {
            return;
        }
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let old = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age > EXIT_KEPT_FOR);
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Read one record by full id.
    pub fn load(&self, id: &str) -> Result<ContainerRecord, StateError> {
        let path = self.record_path(id);
        let not_found = |e: std::io::Error| match e.kind() {
            ErrorKind::NotFound => StateError::NotFound {
                query: id.to_owned(),
            },
            _ => StateError::io(&path, e),
        };
        let mut file = fs::File::open(&path).map_err(not_found)?;
        // Sized from the file, so that it is read in one call rather than
        // in a dozen growing ones (`ps` reads every record).
        let size = file.metadata().map_or(0, |m| m.len().min(MAX_RECORD_SIZE));
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0) + 1);
        std::io::Read::read_to_end(
            &mut std::io::Read::take(&mut file, MAX_RECORD_SIZE + 1),
            &mut bytes,
        )
        .map_err(|e| StateError::io(&path, e))?;
        if bytes.len() as u64 > MAX_RECORD_SIZE {
            return Err(StateError::RecordTooLarge {
                path,
                max: MAX_RECORD_SIZE,
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Overwrite a record atomically. Updates are not forced to disk with a
    /// directory fsync: after a crash an older version may come back, which
    /// is harmless because every status claim is checked against the live
    /// processes (see [`crate::is_same_process`]) before it is believed.
    pub fn save(&self, record: &ContainerRecord) -> Result<(), StateError> {
        let path = self.record_path(&record.id);
        crate::replace_file(&path, &to_json(record), record_durability(record))
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
    /// record is missing, and records that cannot be read (see
    /// [`ContainerStore::broken`]): one damaged record never hides the
    /// others.
    pub fn list(&self) -> Result<Vec<ContainerRecord>, StateError> {
        Ok(self.scan()?.0)
    }

    /// The containers whose record exists but cannot be read (corrupt,
    /// empty, too large), with why, so that they can be shown and removed.
    pub fn broken(&self) -> Result<Vec<BrokenRecord>, StateError> {
        Ok(self.scan()?.1)
    }

    /// [`Self::list`] and [`Self::broken`] from one pass over the store.
    pub fn list_with_broken(
        &self,
    ) -> Result<(Vec<ContainerRecord>, Vec<BrokenRecord>), StateError> {
        self.scan()
    }

    fn scan(&self) -> Result<(Vec<ContainerRecord>, Vec<BrokenRecord>), StateError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| StateError::io(&self.dir, e))?;
        let mut records = Vec::new();
        let mut broken = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StateError::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            // The entry's own type (no stat per container): a directory,
            // or a transient container's link.
            if id.starts_with('.')
                || !entry
                    .file_type()
                    .is_ok_and(|kind| kind.is_dir() || kind.is_symlink())
            {
                continue;
            }
            match self.load(id) {
                Ok(record) => records.push(record),
                Err(StateError::NotFound { .. }) => continue,
                Err(e @ (StateError::Corrupt { .. } | StateError::RecordTooLarge { .. })) => broken
                    .push(BrokenRecord {
                        id: id.to_owned(),
                        reason: e.to_string(),
                    }),
                Err(e) => return Err(e),
            }
        }
        records.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        broken.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((records, broken))
    }

    /// Find a container by exact name, full id, or unique id prefix.
    pub fn find(&self, query: &str) -> Result<ContainerRecord, StateError> {
        let not_found = || StateError::NotFound {
            query: query.to_owned(),
        };
        if query.is_empty() {
            return Err(not_found());
        }
        // A full id or a name is one record to read, not all of them.
        let full_id = query.len() == 64 && query.bytes().all(|b| b.is_ascii_hexdigit());
        if full_id {
            if let Ok(record) = self.load(query) {
                return Ok(record);
            }
        }
        if validate_name(query).is_ok() {
            let link = self.dir.join(NAME_INDEX).join(query);
            if let Some(record) = fs::read_link(&link)
                .ok()
                .and_then(|id| self.load(id.to_str()?).ok())
                .filter(|record| record.name == query)
            {
                return Ok(record);
            }
        }
        let (records, broken) = self.scan()?;
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
            (None, _) => match broken.into_iter().find(|b| b.id.starts_with(query)) {
                // Only its id is known: say so, so `rm -f` can still remove it.
                Some(b) => Err(StateError::Broken {
                    id: b.id,
                    reason: b.reason,
                }),
                None => Err(not_found()),
            },
        }
    }

    /// Delete a container's directory and record. Idempotent. The directory
    /// is first renamed to a hidden name, so a crash half-way leaves nothing
    /// that looks like a container; leftovers are swept by the next remove.
    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        let name = self.load(id).ok().map(|record| record.name);
        let dir = self.container_dir(id);
        let doomed = self.dir.join(format!(".{id}.removing"));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(StateError::io(&dir, e)),
        }
        self.remove_entry(&doomed, id)?;
        remove_tree(&self.dir.join(format!(".{id}.new")))?;
        if let Some(name) = name {
            // Under the lock: a create may be taking the name over now.
            let _lock = self.lock()?;
            self.unlink_name(&name, id);
        }
        Ok(())
    }

    /// Delete a container's (hidden) entry: a directory, or a transient
    /// container's link, whose directory and layer go first so that a
    /// crash half-way leaves the link for the next sweep. A link is only
    /// followed into this store's transient directory.
    fn remove_entry(&self, entry: &Path, id: &str) -> Result<(), StateError> {
        let Ok(target) = fs::read_link(entry) else {
            return remove_tree(entry);
        };
        if let Some(transient) = &self.transient {
            if target == transient.join(id) {
                remove_tree(&target)?;
            }
        }
        remove_tree(&self.transient_layer(id))?;
        match fs::remove_file(entry) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(StateError::io(entry, e)),
            _ => Ok(()),
        }
    }

    /// Give container `id` a new name, refused when invalid or taken.
    pub fn rename(&self, id: &str, new_name: &str) -> Result<ContainerRecord, StateError> {
        validate_name(new_name)?;
        let _lock = self.lock()?;
        if let Some(other) = self.name_holder(new_name)?.filter(|other| other != id) {
            return Err(StateError::NameInUse {
                name: new_name.to_owned(),
                id: other,
            });
        }
        let mut record = self.load(id)?;
        let old_name = std::mem::replace(&mut record.name, new_name.to_owned());
        self.link_name(new_name, id)?;
        self.save(&record)?;
        if old_name != new_name {
            self.unlink_name(&old_name, id);
        }
        Ok(record)
    }

    /// The id of the container named `name`, if any. Called under the
    /// lock; builds the index from the records on first use (a store
    /// written before it existed).
    fn name_holder(&self, name: &str) -> Result<Option<String>, StateError> {
        let index = self.dir.join(NAME_INDEX);
        if !index.is_dir() {
            self.build_name_index(&index)?;
        }
        let Ok(id) = fs::read_link(index.join(name)) else {
            return Ok(None);
        };
        let Some(id) = id.to_str() else {
            return Ok(None);
        };
        Ok(match self.load(id) {
            Ok(record) if record.name == name => Some(id.to_owned()),
            _ => None,
        })
    }

    /// Link every record's name, in a hidden directory renamed into place
    /// once complete.
    fn build_name_index(&self, index: &Path) -> Result<(), StateError> {
        let staging = self.dir.join(format!("{NAME_INDEX}.new"));
        remove_tree(&staging)?;
        DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(|e| StateError::io(&staging, e))?;
        for record in self.list()? {
            let link = staging.join(&record.name);
            std::os::unix::fs::symlink(&record.id, &link).map_err(|e| StateError::io(&link, e))?;
        }
        fs::rename(&staging, index).map_err(|e| StateError::io(index, e))
    }

    /// Point `name` at `id` (replacing a stale link). Under the lock.
    fn link_name(&self, name: &str, id: &str) -> Result<(), StateError> {
        let index = self.dir.join(NAME_INDEX);
        let staging = index.join(format!(".{name}.{id}"));
        let link = index.join(name);
        let _ = fs::remove_file(&staging);
        std::os::unix::fs::symlink(id, &staging)
            .and_then(|()| fs::rename(&staging, &link))
            .map_err(|e| StateError::io(&link, e))
    }

    /// Drop the link of `name` if it still points at `id`. Under the lock;
    /// best effort (a link left over holds nothing, see [`NAME_INDEX`]).
    fn unlink_name(&self, name: &str, id: &str) {
        let link = self.dir.join(NAME_INDEX).join(name);
        if fs::read_link(&link).is_ok_and(|target| target.as_os_str() == id) {
            let _ = fs::remove_file(&link);
        }
    }

    /// Finish what killed commands left: `.<id>.new` and a `.<id>.layer`
    /// without its link (a create, which holds the lock this runs under,
    /// so none is in progress), `.<id>.removing` (a remove; deleting it
    /// twice is harmless), and the links of transient containers whose
    /// directory a reboot took. Best effort: a leftover that cannot go now
    /// goes next time.
    fn sweep_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        // A reboot empties the transient directory's tmpfs, and the first
        // transient container after it makes the directory again (after
        // this sweep): one check for all links, none per container.
        let rebooted = self.transient.as_ref().is_some_and(|dir| !dir.exists());
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name
                .strip_prefix('.')
                .and_then(|rest| rest.strip_suffix(".removing"))
            {
                let _ = self.remove_entry(&entry.path(), id);
            } else if name.starts_with('.') && name.ends_with(".new") {
                let _ = fs::remove_dir_all(entry.path());
            } else if let Some(id) = name
                .strip_prefix('.')
                .and_then(|rest| rest.strip_suffix(LAYER_SUFFIX))
            {
                // A layer without its link: a create killed before the
                // link was made.
                if fs::symlink_metadata(self.container_dir(id)).is_err() {
                    let _ = fs::remove_dir_all(entry.path());
                }
            } else if rebooted
                && !name.starts_with('.')
                && entry.file_type().is_ok_and(|t| t.is_symlink())
            {
                // A transient container from before a reboot: nothing of
                // it is left to run.
                let _ = self.remove_entry(&entry.path(), name);
            }
        }
    }

    /// Path of the store directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `id` as a file name: one component, no hidden or temporary name.
fn exit_file_name(id: &str) -> Result<&str, StateError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(StateError::NotFound {
            query: id.to_owned(),
        });
    }
    Ok(id)
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
            2,
            "only .lock and the name index remain"
        );
        assert_eq!(
            fs::read_dir(store.dir().join(NAME_INDEX)).unwrap().count(),
            0,
            "the name's link went with the record"
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
        // Left out of the list, reported as broken, naming its file.
        assert!(store.list().unwrap().is_empty());
        let broken = store.broken().unwrap();
        assert_eq!(broken[0].id, r.id);
        assert!(broken[0].reason.contains(&r.id), "{}", broken[0].reason);
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

    #[test]
    fn broken_records_never_hide_the_others_and_can_be_found_by_id() {
        let (_dir, store) = store();
        let good = record("good");
        store.create(&good).unwrap();
        let mut ids = Vec::new();
        for (name, content) in [
            ("garbage", b"{not json".to_vec()),
            ("empty", Vec::new()),
            ("huge", vec![b' '; (MAX_RECORD_SIZE + 1) as usize]),
        ] {
            let bad = record(name);
            store.create(&bad).unwrap();
            fs::write(store.record_path(&bad.id), content).unwrap();
            ids.push(bad.id);
        }
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "good");
        let broken = store.broken().unwrap();
        assert_eq!(broken.len(), 3);
        assert!(broken.iter().any(|b| b.reason.contains("larger than")));
        for id in &ids {
            match store.find(&id[..12]) {
                Err(StateError::Broken { id: found, .. }) => assert_eq!(&found, id),
                other => panic!("{other:?}"),
            }
            store.remove(id).unwrap();
        }
        assert!(store.broken().unwrap().is_empty());
        assert_eq!(store.find("good").unwrap().id, good.id);
    }

    #[test]
    fn leftovers_of_killed_commands_are_swept_by_the_next_create() {
        let (_dir, store) = store();
        for leftover in [".abc.new", ".def.removing"] {
            let dir = store.dir().join(leftover).join("upper/deep");
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("file"), "x").unwrap();
        }
        store.create(&record("next")).unwrap();
        let names: Vec<String> = fs::read_dir(store.dir())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".lock" && n != NAME_INDEX)
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn names_are_held_through_the_index_and_stale_links_hold_nothing() {
        let (_dir, store) = store();
        // A store from before the index: it is built from the records.
        let old = record("old");
        let staged = store.dir().join(&old.id);
        fs::create_dir_all(&staged).unwrap();
        fs::write(staged.join(RECORD_FILE), to_json(&old)).unwrap();
        assert!(matches!(
            store.create(&record("old")),
            Err(StateError::NameInUse { id, .. }) if id == old.id
        ));
        // A link whose record is gone (a crash after linking) or was
        // renamed holds nothing.
        let index = store.dir().join(NAME_INDEX);
        std::os::unix::fs::symlink(generate_id(), index.join("ghost")).unwrap();
        store.create(&record("ghost")).unwrap();
        let renamed = store.rename(&old.id, "new-name").unwrap();
        assert_eq!(renamed.name, "new-name");
        assert!(!index.join("old").exists());
        let again = record("old");
        store.create(&again).unwrap();
        assert!(matches!(
            store.rename(&again.id, "new-name"),
            Err(StateError::NameInUse { id, .. }) if id == old.id
        ));
        // Removing one container leaves the others' names held.
        store.remove(&old.id).unwrap();
        store.create(&record("new-name")).unwrap();
        assert!(store.create(&record("ghost")).is_err());
        assert!(store.create(&record("old")).is_err());
    }

    #[test]
    fn exit_codes_of_removed_containers_are_kept_for_a_while() {
        let (tmp, transient) = transient_store();
        fs::create_dir(tmp.path().join("run")).unwrap();
        let id = generate_id();
        assert_eq!(transient.exit_code_of_removed(&id), None);
        transient.keep_exit_code(&id, 137).unwrap();
        assert_eq!(transient.exit_code_of_removed(&id), Some(137));
        // Beside the transient containers, not among the store's entries.
        assert!(tmp.path().join("run").join(EXITS_DIR).join(&id).is_file());
        assert!(transient.list().unwrap().is_empty());
        // Five minutes on, the next one drops it.
        let old = fs::File::options()
            .write(true)
            .open(tmp.path().join("run").join(EXITS_DIR).join(&id))
            .unwrap();
        old.set_modified(std::time::SystemTime::now() - 2 * EXIT_KEPT_FOR)
            .unwrap();
        // Pruned at most once a minute: the last time was long ago too.
        let marker = tmp.path().join("run").join(EXITS_DIR).join(EXITS_PRUNED);
        fs::write(&marker, b"").unwrap();
        fs::File::options()
            .write(true)
            .open(&marker)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - 2 * EXITS_PRUNED_EVERY)
            .unwrap();
        let next = generate_id();
        transient.keep_exit_code(&next, 0).unwrap();
        assert_eq!(transient.exit_code_of_removed(&id), None);
        assert_eq!(transient.exit_code_of_removed(&next), Some(0));
        // Within the minute after a pruning, the next end does not read
        // the directory again: an old code waits for a later one.
        fs::File::options()
            .write(true)
            .open(tmp.path().join("run").join(EXITS_DIR).join(&next))
            .unwrap()
            .set_modified(std::time::SystemTime::now() - 2 * EXIT_KEPT_FOR)
            .unwrap();
        transient.keep_exit_code(&generate_id(), 1).unwrap();
        assert_eq!(transient.exit_code_of_removed(&next), Some(0));
        // An id is one plain component.
        assert!(transient.keep_exit_code("../x", 1).is_err());
        assert_eq!(transient.exit_code_of_removed("../x"), None);
        // A store without a transient directory keeps them in its own.
        let (_plain_tmp, plain) = store();
        plain.keep_exit_code(&id, 3).unwrap();
        assert_eq!(plain.exit_code_of_removed(&id), Some(3));
        assert!(plain.list().unwrap().is_empty());
    }

    fn transient_store() -> (tempfile::TempDir, ContainerStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(dir.path().join("containers"))
            .unwrap()
            .with_transient_dir(dir.path().join("run"));
        (dir, store)
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".lock" && n != NAME_INDEX)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn transient_containers_live_in_the_transient_dir_with_their_layer_on_disk() {
        let (dir, store) = transient_store();
        let kept = record("kept");
        store.create(&kept).unwrap();
        let mut gone = record("gone");
        gone.auto_remove = true;
        store.create_transient(&gone).unwrap();

        let link = store.container_dir(&gone.id);
        let target = dir.path().join("run").join(&gone.id);
        assert_eq!(fs::read_link(&link).unwrap(), target);
        assert!(target.join(RECORD_FILE).is_file());
        let layer = store.layer_dir(&gone.id);
        assert_eq!(layer, store.dir().join(format!(".{}.layer", gone.id)));
        assert!(layer.is_dir());
        assert_eq!(store.layer_dir(&kept.id), store.container_dir(&kept.id));

        // Read, listed, found and updated through the link like any other.
        assert_eq!(store.find("gone").unwrap().id, gone.id);
        let names: Vec<String> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["kept", "gone"]);
        store.update(&gone.id, |r| r.pid = Some(42)).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), target);
        assert_eq!(store.load(&gone.id).unwrap().pid, Some(42));

        store.remove(&gone.id).unwrap();
        assert!(!target.exists() && !layer.exists());
        assert!(fs::symlink_metadata(&link).is_err());
        assert_eq!(entries(store.dir()), vec![kept.id.clone()]);
        assert!(entries(&dir.path().join("run")).is_empty());
        assert!(
            store.create(&record("gone")).is_ok(),
            "the name is free again"
        );
    }

    #[test]
    fn without_a_transient_dir_transient_containers_are_ordinary() {
        let (_dir, store) = store();
        let r = record("plain");
        store.create_transient(&r).unwrap();
        assert!(store.container_dir(&r.id).is_dir());
        assert_eq!(store.layer_dir(&r.id), store.container_dir(&r.id));
        store.remove(&r.id).unwrap();
        assert!(!store.container_dir(&r.id).exists());
    }

    #[test]
    fn what_a_reboot_or_a_kill_leaves_of_transient_containers_is_swept() {
        let (dir, store) = transient_store();
        // A remove killed after its rename, and a create killed before its link.
        let removing = record("removing");
        store.create_transient(&removing).unwrap();
        let doomed = store.dir().join(format!(".{}.removing", removing.id));
        fs::rename(store.container_dir(&removing.id), &doomed).unwrap();
        fs::create_dir_all(store.dir().join(".feed.layer/upper")).unwrap();
        let alive = record("alive");
        store.create_transient(&alive).unwrap();
        store.create(&record("next")).unwrap();
        assert_eq!(store.list().unwrap().len(), 2);
        assert_eq!(entries(&dir.path().join("run")), vec![alive.id.clone()]);
        assert!(!doomed.exists() && !store.dir().join(".feed.layer").exists());

        // A reboot: the tmpfs is empty, the links and layers are left.
        fs::write(store.layer_dir(&alive.id).join("big"), "data").unwrap();
        fs::remove_dir_all(dir.path().join("run")).unwrap();
        assert_eq!(
            store.list().unwrap().len(),
            1,
            "a dangling link is no container"
        );
        let after = record("after");
        store.create_transient(&after).unwrap();
        let names: Vec<String> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["next", "after"]);
        assert!(!store.dir().join(format!(".{}.layer", alive.id)).exists());
        assert!(fs::symlink_metadata(store.container_dir(&alive.id)).is_err());
        assert_eq!(entries(&dir.path().join("run")), vec![after.id.clone()]);
    }

    #[test]
    fn a_link_is_never_followed_out_of_the_transient_dir() {
        let (dir, store) = transient_store();
        let elsewhere = dir.path().join("precious");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join(RECORD_FILE), to_json(&record("fake"))).unwrap();
        let id = generate_id();
        std::os::unix::fs::symlink(&elsewhere, store.container_dir(&id)).unwrap();
        store.remove(&id).unwrap();
        assert!(
            elsewhere.join(RECORD_FILE).is_file(),
            "outside files are kept"
        );
        assert!(fs::symlink_metadata(store.container_dir(&id)).is_err());
    }
}
