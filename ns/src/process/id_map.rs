use std::fmt;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Capability, NsError};

/// The most lines the kernel takes in a uid_map or gid_map (since Linux
/// 4.15).
pub const MAX_ID_MAP_LINES: usize = 340;

/// One line of a user namespace's uid_map or gid_map: the `size` ids from
/// `container_id` inside the namespace are the ids from `host_id` in the
/// parent namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

impl IdMap {
    /// Whether the ranges `[a, a + a_size)` and `[b, b + b_size)` meet.
    fn ranges_overlap(a: u32, a_size: u32, b: u32, b_size: u32) -> bool {
        let (a, b) = (u64::from(a), u64::from(b));
        a < b + u64::from(b_size) && b < a + u64::from(a_size)
    }

    /// Whether the range of `first` and `size` ends past the last valid id
    /// (`u32::MAX` itself means "no id").
    fn ends_past_last_id(first: u32, size: u32) -> bool {
        u64::from(first) + u64::from(size) > u64::from(u32::MAX)
    }
}

/// As a map file line would say it: `container_id host_id size`.
impl fmt::Display for IdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.container_id, self.host_id, self.size)
    }
}

/// Check user and group id mappings as the kernel will: each list has
/// 1 to [`MAX_ID_MAP_LINES`] lines, no line is empty (size 0) or runs past
/// the last id, and within a list no two lines overlap, inside the
/// namespace or outside. Mistakes are [`NsError::InvalidIdMap`] naming the
/// list and the lines.
pub fn validate_id_maps(uid_maps: &[IdMap], gid_maps: &[IdMap]) -> Result<(), NsError> {
    validate_list("uid", uid_maps)?;
    validate_list("gid", gid_maps)
}

fn validate_list(kind: &'static str, maps: &[IdMap]) -> Result<(), NsError> {
    let invalid = |reason: String| NsError::InvalidIdMap { kind, reason };
    if maps.is_empty() {
        return Err(invalid(
            "none given; a user namespace needs at least one".into(),
        ));
    }
    if maps.len() > MAX_ID_MAP_LINES {
        return Err(invalid(format!(
            "{} lines, the kernel takes at most {MAX_ID_MAP_LINES}",
            maps.len()
        )));
    }
    for (i, map) in maps.iter().enumerate() {
        if map.size == 0 {
            return Err(invalid(format!("\"{map}\" maps no ids (size 0)")));
        }
        if IdMap::ends_past_last_id(map.container_id, map.size)
            || IdMap::ends_past_last_id(map.host_id, map.size)
        {
            return Err(invalid(format!(
                "\"{map}\" runs past the last id ({})",
                u32::MAX - 1
            )));
        }
        for other in &maps[..i] {
            let side = if IdMap::ranges_overlap(
                map.container_id,
                map.size,
                other.container_id,
                other.size,
            ) {
                "inside the namespace"
            } else if IdMap::ranges_overlap(map.host_id, map.size, other.host_id, other.size) {
                "outside the namespace"
            } else {
                continue;
            };
            return Err(invalid(format!("\"{other}\" and \"{map}\" overlap {side}")));
        }
    }
    Ok(())
}

/// Write the id maps of the user namespace of process `pid` (a child made
/// with [`crate::Namespace::User`], waiting until this is done) to
/// `<proc_root>/PID/uid_map` and `gid_map`, after [`validate_id_maps`].
///
/// A writer without CAP_SETGID may only map its own gid, and only once
/// setgroups(2) is denied in the namespace: in that case (and only then)
/// `deny` is written to `<proc_root>/PID/setgroups` first, so that the
/// namespace's processes can keep using setgroups(2) whenever the writer
/// is privileged. The maps can be written once per namespace.
pub fn write_id_maps(
    proc_root: &Path,
    pid: i32,
    uid_maps: &[IdMap],
    gid_maps: &[IdMap],
) -> Result<(), NsError> {
    validate_id_maps(uid_maps, gid_maps)?;
    let may_set_groups = crate::capabilities::capget()?.effective & Capability::Setgid.mask() != 0;
    write_validated_id_maps(proc_root, pid, uid_maps, gid_maps, !may_set_groups)
}

fn write_validated_id_maps(
    proc_root: &Path,
    pid: i32,
    uid_maps: &[IdMap],
    gid_maps: &[IdMap],
    deny_setgroups: bool,
) -> Result<(), NsError> {
    let dir = proc_root.join(pid.to_string());
    write_whole(&dir.join("uid_map"), &map_file_text(uid_maps))?;
    if deny_setgroups {
        write_whole(&dir.join("setgroups"), "deny")?;
    }
    write_whole(&dir.join("gid_map"), &map_file_text(gid_maps))
}

fn map_file_text(maps: &[IdMap]) -> String {
    maps.iter().map(|map| format!("{map}\n")).collect()
}

/// Write `text` in a single write(2): the kernel takes a map file's
/// content only whole, in one call.
fn write_whole(path: &Path, text: &str) -> Result<(), NsError> {
    let error = |source| NsError::IdMap {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(error)?;
    let written = file.write(text.as_bytes()).map_err(error)?;
    if written != text.len() {
        return Err(error(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("only {written} of {} bytes written", text.len()),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(container_id: u32, host_id: u32, size: u32) -> IdMap {
        IdMap {
            container_id,
            host_id,
            size,
        }
    }

    fn reason(result: Result<(), NsError>) -> String {
        match result {
            Err(NsError::InvalidIdMap { kind, reason }) => format!("{kind}: {reason}"),
            other => panic!("expected InvalidIdMap, got {other:?}"),
        }
    }

    #[test]
    fn good_maps_pass() {
        let maps = [map(0, 100_000, 65_536), map(65_536, 0, 1)];
        validate_id_maps(&maps, &maps).unwrap();
        // Adjacent ranges do not overlap; the whole id space is fine.
        validate_id_maps(&[map(0, 0, 10), map(10, 10, 10)], &[map(0, 0, u32::MAX)]).unwrap();
        let many: Vec<IdMap> = (0..MAX_ID_MAP_LINES as u32)
            .map(|i| map(i, i + 1000, 1))
            .collect();
        validate_id_maps(&many, &many).unwrap();
    }

    #[test]
    fn bad_maps_are_named() {
        let ok = [map(0, 1000, 1)];
        assert_eq!(
            reason(validate_id_maps(&[], &ok)),
            "uid: none given; a user namespace needs at least one"
        );
        assert_eq!(
            reason(validate_id_maps(&ok, &[map(0, 1000, 1), map(5, 2000, 0)])),
            "gid: \"5 2000 0\" maps no ids (size 0)"
        );
        assert_eq!(
            reason(validate_id_maps(&[map(0, 100, 10), map(9, 200, 10)], &ok)),
            "uid: \"0 100 10\" and \"9 200 10\" overlap inside the namespace"
        );
        assert_eq!(
            reason(validate_id_maps(&ok, &[map(0, 100, 10), map(20, 95, 10)])),
            "gid: \"0 100 10\" and \"20 95 10\" overlap outside the namespace"
        );
        assert_eq!(
            reason(validate_id_maps(&[map(1, 0, u32::MAX)], &ok)),
            "uid: \"1 0 4294967295\" runs past the last id (4294967294)"
        );
        assert!(reason(validate_id_maps(&ok, &[map(0, u32::MAX, 1)])).contains("runs past"));
        let too_many: Vec<IdMap> = (0..=MAX_ID_MAP_LINES as u32)
            .map(|i| map(i, i + 1000, 1))
            .collect();
        assert_eq!(
            reason(validate_id_maps(&too_many, &ok)),
            "uid: 341 lines, the kernel takes at most 340"
        );
    }

    #[test]
    fn maps_are_written_below_proc_root() {
        for deny_setgroups in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("42");
            std::fs::create_dir(&dir).unwrap();
            for file in ["uid_map", "gid_map", "setgroups"] {
                std::fs::write(dir.join(file), "").unwrap();
            }
            let uids = [map(0, 100_000, 65_536), map(65_536, 0, 1)];
            let gids = [map(0, 200_000, 1000)];
            write_validated_id_maps(tmp.path(), 42, &uids, &gids, deny_setgroups).unwrap();
            let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
            assert_eq!(read("uid_map"), "0 100000 65536\n65536 0 1\n");
            assert_eq!(read("gid_map"), "0 200000 1000\n");
            let expected = if deny_setgroups { "deny" } else { "" };
            assert_eq!(read("setgroups"), expected);
        }
    }

    #[test]
    fn invalid_maps_are_not_written() {
        let tmp = tempfile::tempdir().unwrap();
        let err = write_id_maps(tmp.path(), 42, &[map(0, 0, 0)], &[map(0, 0, 1)]).unwrap_err();
        assert!(
            matches!(err, NsError::InvalidIdMap { kind: "uid", .. }),
            "{err}"
        );
        let err = write_id_maps(tmp.path(), 42, &[map(0, 0, 1)], &[map(0, 0, 1)]).unwrap_err();
        assert!(
            matches!(&err, NsError::IdMap { path, .. } if *path == tmp.path().join("42/uid_map")),
            "{err}"
        );
    }
}
