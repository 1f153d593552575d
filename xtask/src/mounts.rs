//! This process's mount table, read with berth-cgroup's parser (the one
//! place that knows the format).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use berth_cgroup::mountinfo::{parse_mount_table, MountEntry};

/// Every mount of /proc/self/mountinfo, in mount order.
pub fn mount_table() -> Result<Vec<MountEntry>> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(parse_mount_table(&mountinfo))
}

/// "ext4 (/dev/vda on /, rw,relatime)": the mount holding `path` (or the
/// nearest existing ancestor), the last one mounted there winning.
pub fn filesystem_of(path: &Path) -> Result<String> {
    describe_filesystem_of(&mount_table()?, path)
}

fn describe_filesystem_of(mounts: &[MountEntry], path: &Path) -> Result<String> {
    mounts
        .iter()
        .filter(|mount| path.starts_with(&mount.mount_point))
        // max_by_key keeps the last of equals: the mount on top.
        .max_by_key(|mount| mount.mount_point.components().count())
        .map(|mount| {
            format!(
                "{} ({} on {}, {})",
                mount.fs_type,
                mount.source,
                mount.mount_point.display(),
                mount.mount_options
            )
        })
        .with_context(|| format!("no mount holds {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deepest_and_last_mount_holds_a_path() {
        let mounts = parse_mount_table(
            "1 0 8:1 / / rw,relatime - ext4 /dev/vda rw\n\
             2 1 0:5 / /var/lib\\040x rw - ext4 /dev/vdb rw\n\
             3 2 0:6 / /var/lib\\040x rw,nosuid - tmpfs tmp rw\n",
        );
        assert_eq!(
            describe_filesystem_of(&mounts, Path::new("/var/lib x/berth")).unwrap(),
            "tmpfs (tmp on /var/lib x, rw,nosuid)"
        );
        assert_eq!(
            describe_filesystem_of(&mounts, Path::new("/etc")).unwrap(),
            "ext4 (/dev/vda on /, rw,relatime)"
        );
        assert!(describe_filesystem_of(&[], Path::new("/etc")).is_err());
    }
}
