//! Where a cgroup goes: the cgroupfs paths that `create_at` and `open_at`
//! take, checked before anything is made.

use std::path::PathBuf;

use crate::error::{CgroupError, Result};

/// A checked cgroupfs path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupPath {
    /// Taken from each hierarchy's root (`/a/b`), not from the caller's own
    /// cgroup (`a/b`).
    pub(crate) from_root: bool,
    /// The path's components, joined (never empty, no `.` or `..`).
    pub(crate) relative: PathBuf,
    /// The last component.
    pub(crate) leaf: String,
}

/// Check a cgroupfs path: not empty, no NUL, no `.` or `..` component,
/// components of at most 255 bytes, and not systemd's `slice:prefix:name`.
pub(crate) fn parse(path: &str) -> Result<CgroupPath> {
    let invalid = |reason| CgroupError::InvalidName {
        name: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("it is empty"));
    }
    if path.contains('\0') {
        return Err(invalid("it contains NUL"));
    }
    if !path.contains('/') && path.matches(':').count() == 2 {
        return Err(CgroupError::SystemdPath {
            path: path.to_owned(),
        });
    }
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if components.iter().any(|&c| c == "." || c == "..") {
        return Err(invalid("it contains '.' or '..'"));
    }
    if components.iter().any(|c| c.len() > 255) {
        return Err(invalid("a component is longer than 255 bytes"));
    }
    let Some(leaf) = components.last() else {
        return Err(invalid("it names no cgroup below the hierarchy's root"));
    };
    Ok(CgroupPath {
        from_root: path.starts_with('/'),
        relative: components.iter().collect(),
        leaf: (*leaf).to_owned(),
    })
}

/// A single path component naming one cgroup (a container id).
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it is a relative directory name")
    } else if name.contains('/') || name.contains('\0') {
        Some("it contains '/' or NUL")
    } else if name.len() > 255 {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CgroupError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_and_relative_paths() {
        let absolute = parse("/machine//ctr/").unwrap();
        assert!(absolute.from_root);
        assert_eq!(absolute.relative, PathBuf::from("machine/ctr"));
        assert_eq!(absolute.leaf, "ctr");
        let relative = parse("berth/c1").unwrap();
        assert!(!relative.from_root);
        assert_eq!(relative.relative, PathBuf::from("berth/c1"));
        // Colons are fine in cgroupfs names.
        assert_eq!(parse("/a:b:c").unwrap().leaf, "a:b:c");
        assert_eq!(parse("x:y").unwrap().leaf, "x:y");
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in [
            "",
            "/",
            "//",
            "..",
            "a/../b",
            "/a/./b",
            "a\0b",
            &"x".repeat(256),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                matches!(err, CgroupError::InvalidName { .. }),
                "{bad:?}: {err}"
            );
        }
        let err = parse("system.slice:docker:abc").unwrap_err();
        assert!(matches!(err, CgroupError::SystemdPath { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("only cgroupfs paths are supported"),
            "{err}"
        );
        assert!(matches!(
            parse(":libpod:abc").unwrap_err(),
            CgroupError::SystemdPath { .. }
        ));
    }

    #[test]
    fn names() {
        validate_name("c1").unwrap();
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
