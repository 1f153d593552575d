//! docker cp's rules for where a copy lands, as a pure function.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::CopyError;

/// What the destination path names before the copy (symlinks followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Nothing.
    Missing,
    /// A directory.
    Directory,
    /// Anything else.
    Other,
}

/// Where a copy lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    /// The existing directory the copy is written into.
    pub into: String,
    /// The name of the copied entry in `into`; `None`: the source is a
    /// directory whose contents go straight into `into`.
    pub name: Option<OsString>,
}

/// Whether `path` ends with `/.` (docker: "the contents of the directory").
pub fn names_contents(path: &str) -> bool {
    path == "." || path.ends_with("/.")
}

/// `true` if `path` must name a directory (a trailing `/` or `/.`).
pub fn names_a_directory(path: &str) -> bool {
    path.ends_with('/') || names_contents(path)
}

/// The last component of `path`, ignoring trailing slashes; `None` for the
/// root (and for `.`/`..` endings, which are resolved, not named).
fn last_name(path: &str) -> Option<OsString> {
    let trimmed = path.trim_end_matches('/');
    let name = trimmed.rsplit('/').next().unwrap_or("");
    (!name.is_empty() && name != "." && name != "..").then(|| OsString::from(name))
}

/// The directory `path` is in (`/` for a name at the top, `.` for a bare
/// relative name).
fn parent_of(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(0) => "/".to_owned(),
        Some(i) => trimmed[..i].to_owned(),
        None if path.starts_with('/') => "/".to_owned(),
        None => ".".to_owned(),
    }
}

/// docker cp's rules:
///
/// - a source ending with `/` or `/.` must be a directory;
/// - destination is a directory: the source goes into it under its own
///   name, or, for `SRC/.`, the source directory's contents do;
/// - destination is another file: a file replaces it; a directory is an
///   error; a trailing `/` on it is an error;
/// - destination is missing: it is created as a copy of the source (a
///   directory with the source's contents, or a file), in its parent,
///   which must exist; a file source with a destination ending in `/` is an
///   error (the directory must exist).
pub fn plan_copy(
    source: &str,
    source_is_dir: bool,
    dest: &str,
    existing: Existing,
) -> Result<CopyPlan, CopyError> {
    if !source_is_dir && names_a_directory(source) {
        return Err(CopyError::NotADirectory {
            path: PathBuf::from(source),
        });
    }
    let source_name = if names_contents(source) {
        None
    } else {
        last_name(source)
    };
    match existing {
        Existing::Directory => Ok(CopyPlan {
            into: dest.to_owned(),
            name: source_name,
        }),
        Existing::Other if source_is_dir => Err(CopyError::DirectoryOntoFile {
            path: PathBuf::from(dest),
        }),
        Existing::Other | Existing::Missing if names_a_directory(dest) => {
            Err(if existing == Existing::Missing && !source_is_dir {
                CopyError::DestinationDirectoryMissing {
                    path: PathBuf::from(dest),
                }
            } else if existing == Existing::Missing {
                // A directory source: the destination is made.
                return Ok(CopyPlan {
                    into: parent_of(dest),
                    name: last_name(dest).or(source_name),
                });
            } else {
                CopyError::NotADirectory {
                    path: PathBuf::from(dest),
                }
            })
        }
        Existing::Other | Existing::Missing => Ok(CopyPlan {
            into: parent_of(dest),
            name: last_name(dest).or(source_name),
        }),
    }
}

/// `path` made absolute against `cwd` (host paths given relative).
pub fn absolute_from(cwd: &Path, path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        let mut joined = cwd.to_string_lossy().into_owned();
        if !joined.ends_with('/') {
            joined.push('/');
        }
        joined.push_str(path);
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(source: &str, dir: bool, dest: &str, existing: Existing) -> Result<CopyPlan, String> {
        plan_copy(source, dir, dest, existing).map_err(|e| e.to_string())
    }

    fn into(dir: &str, name: Option<&str>) -> Result<CopyPlan, String> {
        Ok(CopyPlan {
            into: dir.to_owned(),
            name: name.map(OsString::from),
        })
    }

    #[test]
    fn a_file_onto_a_missing_path_becomes_that_path() {
        assert_eq!(
            plan("/etc/hosts", false, "/tmp/h", Existing::Missing),
            into("/tmp", Some("h"))
        );
        assert_eq!(
            plan("/etc/hosts", false, "h", Existing::Missing),
            into(".", Some("h"))
        );
    }

    #[test]
    fn a_file_onto_a_missing_dir_path_is_refused() {
        let err = plan("/etc/hosts", false, "/tmp/new/", Existing::Missing).unwrap_err();
        assert!(err.contains("must exist"), "{err}");
    }

    #[test]
    fn a_file_replaces_a_file_and_goes_into_a_directory() {
        assert_eq!(
            plan("/etc/hosts", false, "/tmp/h", Existing::Other),
            into("/tmp", Some("h"))
        );
        assert_eq!(
            plan("/etc/hosts", false, "/tmp", Existing::Directory),
            into("/tmp", Some("hosts"))
        );
        assert!(plan("/etc/hosts", false, "/tmp/h/", Existing::Other)
            .unwrap_err()
            .contains("not a directory"));
    }

    #[test]
    fn a_file_source_with_a_trailing_slash_is_refused() {
        for source in ["/etc/hosts/", "/etc/hosts/."] {
            let err = plan(source, false, "/tmp", Existing::Directory).unwrap_err();
            assert!(err.contains("not a directory"), "{source}: {err}");
        }
    }

    #[test]
    fn a_directory_goes_into_a_directory_or_its_contents_do() {
        assert_eq!(
            plan("/data", true, "/tmp", Existing::Directory),
            into("/tmp", Some("data"))
        );
        assert_eq!(
            plan("/data/", true, "/tmp", Existing::Directory),
            into("/tmp", Some("data"))
        );
        assert_eq!(
            plan("/data/.", true, "/tmp", Existing::Directory),
            into("/tmp", None)
        );
        assert_eq!(
            plan("/", true, "/tmp", Existing::Directory),
            into("/tmp", None)
        );
    }

    #[test]
    fn a_directory_onto_a_missing_path_is_created_there() {
        assert_eq!(
            plan("/data", true, "/tmp/copy", Existing::Missing),
            into("/tmp", Some("copy"))
        );
        assert_eq!(
            plan("/data/.", true, "/tmp/copy/", Existing::Missing),
            into("/tmp", Some("copy"))
        );
    }

    #[test]
    fn a_directory_onto_a_file_is_refused() {
        let err = plan("/data", true, "/tmp/file", Existing::Other).unwrap_err();
        assert!(err.contains("cannot copy a directory to a file"), "{err}");
    }

    #[test]
    fn relative_host_paths_are_made_absolute() {
        assert_eq!(absolute_from(Path::new("/home/u"), "x/y"), "/home/u/x/y");
        assert_eq!(absolute_from(Path::new("/"), "x"), "/x");
        assert_eq!(absolute_from(Path::new("/home/u"), "/abs"), "/abs");
    }
}
