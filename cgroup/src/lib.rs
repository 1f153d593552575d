//! cgroup v1, v2 and hybrid hierarchies for berth. This crate starts with
//! layout detection; controllers arrive with the resource-limit work.
//!
//! ```
//! use berth_cgroup::{detect_layout, Layout};
//! let mounts = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n";
//! assert_eq!(detect_layout(mounts), Layout::Unified);
//! ```

/// How cgroups are mounted on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Only cgroup2 (e.g. a systemd host in unified mode).
    Unified,
    /// Only v1 hierarchies.
    Legacy,
    /// v1 controller hierarchies plus a cgroup2 mount.
    Hybrid,
    /// No cgroup filesystem mounted at all.
    None,
}

/// Classify the layout from the text of /proc/self/mounts.
pub fn detect_layout(mounts: &str) -> Layout {
    let fstypes: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let v1 = fstypes.contains(&"cgroup");
    let v2 = fstypes.contains(&"cgroup2");
    match (v1, v2) {
        (true, true) => Layout::Hybrid,
        (true, false) => Layout::Legacy,
        (false, true) => Layout::Unified,
        (false, false) => Layout::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_host_is_recognised() {
        let mounts = "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(detect_layout(mounts), Layout::Hybrid);
        assert_eq!(
            detect_layout("cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"),
            Layout::Legacy
        );
        assert_eq!(detect_layout("proc /proc proc rw 0 0\n"), Layout::None);
    }
}
