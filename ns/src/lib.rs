//! berth-ns (in progress).
