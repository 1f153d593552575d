use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::StateError;

/// Replace `path` with `contents` so that a reader sees either the old or
/// the new file, never a torn one, even across a crash: write a temp file
/// beside it, fsync it, rename it over `path`, fsync the directory.
/// The file is created 0600: records may hold secrets passed with `-e`.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StateError> {
    replace_file(path, contents, true)
}

/// As [`write_atomic`], but without the final fsync of the directory: a
/// reader still sees the old or the new file, never a torn one, but after
/// a crash the old version may come back. For updates whose loss is
/// harmless (a status that berth re-derives from the live processes),
/// it saves a journal commit on every container start.
pub(crate) fn replace_file(path: &Path, contents: &[u8], sync_dir: bool) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.tmp.{}.{seq}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| StateError::io(&tmp, e))?;
        file.write_all(contents)
            .map_err(|e| StateError::io(&tmp, e))?;
        file.sync_all().map_err(|e| StateError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| StateError::io(path, e))?;
        if !sync_dir {
            return Ok(());
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StateError::io(dir, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["state.json"]);
    }

    #[test]
    fn reports_the_path_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/state.json");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert!(err.to_string().contains("missing-dir"), "{err}");
    }
}
