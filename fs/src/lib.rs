//! berth-fs (in progress).
