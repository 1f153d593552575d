//! berth-cgroup (in progress).
