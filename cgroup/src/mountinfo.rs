//! The kernel's mount tables: /proc/self/mountinfo and /proc/self/mounts.
//!
//! Hierarchy discovery reads them to find the cgroup mounts; the parser is
//! public so that other tools ask this one place instead of keeping their
//! own.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One mount, from a line of /proc/self/mountinfo (`36 35 98:0 /mnt1 /mnt2
/// rw,noatime master:1 - ext3 /dev/root rw,errors=continue`) or of
/// /proc/self/mounts (`cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0`).
/// Octal escapes (`\040` for a space) are undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The directory of the filesystem that is mounted (a cgroup hierarchy
    /// mounted from one of its cgroups shows that cgroup); `/` for a line
    /// of /proc/self/mounts, which does not say.
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The filesystem type (`cgroup`, `cgroup2`, `ext4`, ...).
    pub fs_type: String,
    /// The mount source (a device, or a name such as `cgroup`).
    pub source: String,
    /// Per-mount options (`rw,nosuid,relatime`).
    pub mount_options: String,
    /// Per-superblock options; a v1 cgroup mount names its controllers
    /// here (`rw,cpu,cpuacct`). Empty for a line of /proc/self/mounts,
    /// which lists all options in `mount_options`.
    pub super_options: String,
}

impl MountEntry {
    /// Parse one line of either table; `None` for a line that is neither.
    pub fn parse(line: &str) -> Option<Self> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let Some(separator) = fields.iter().position(|f| *f == "-") {
            if separator >= 6 {
                return Some(Self {
                    root: unescape(fields[3]),
                    mount_point: unescape(fields[4]),
                    fs_type: fields.get(separator + 1)?.to_string(),
                    source: fields.get(separator + 2).unwrap_or(&"").to_string(),
                    mount_options: fields[5].to_owned(),
                    super_options: fields.get(separator + 3).unwrap_or(&"").to_string(),
                });
            }
        }
        if fields.len() >= 4 {
            return Some(Self {
                root: PathBuf::from("/"),
                mount_point: unescape(fields[1]),
                fs_type: fields[2].to_owned(),
                source: unescape(fields[0]).to_string_lossy().into_owned(),
                mount_options: fields[3].to_owned(),
                super_options: String::new(),
            });
        }
        None
    }

    /// Every option, per-mount then per-superblock.
    pub fn options(&self) -> impl Iterator<Item = &str> {
        self.mount_options
            .split(',')
            .chain(self.super_options.split(','))
            .filter(|option| !option.is_empty())
    }
}

/// Every mount of a mount table (lines that parse as neither format are
/// skipped).
pub fn parse_mount_table(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(MountEntry::parse).collect()
}

/// Undo the octal escapes (`\040` for a space) of the mount tables.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_both_formats() {
        let info = MountEntry::parse(
            "35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid shared:9 - cgroup cgroup rw,memory",
        )
        .unwrap();
        assert_eq!(
            info,
            MountEntry {
                root: "/".into(),
                mount_point: "/sys/fs/cgroup/memory".into(),
                fs_type: "cgroup".into(),
                source: "cgroup".into(),
                mount_options: "rw,nosuid".into(),
                super_options: "rw,memory".into(),
            }
        );
        assert!(info.options().any(|o| o == "memory"));
        assert!(info.options().any(|o| o == "nosuid"));
        let mounts = MountEntry::parse("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0").unwrap();
        assert_eq!(
            (mounts.root.to_str(), mounts.fs_type.as_str()),
            (Some("/"), "cgroup2")
        );
        assert_eq!(mounts.options().collect::<Vec<_>>(), ["rw", "nosuid"]);
        assert!(MountEntry::parse("garbage").is_none());
    }

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape("a\\040b\\134c"), PathBuf::from("a b\\c"));
        assert_eq!(unescape("trailing\\04"), PathBuf::from("trailing\\04"));
        // Bytes that are not UTF-8 survive.
        assert_eq!(
            unescape("x\\377").into_os_string().into_vec(),
            b"x\xff".to_vec()
        );
        let table = parse_mount_table(
            "40 31 0:32 /docker/x /sys/fs/cgroup/my\\040memory rw - cgroup cgroup rw,memory\n\n",
        );
        assert_eq!(table.len(), 1);
        assert_eq!(table[0].root, PathBuf::from("/docker/x"));
        assert_eq!(
            table[0].mount_point,
            PathBuf::from("/sys/fs/cgroup/my memory")
        );
    }
}
