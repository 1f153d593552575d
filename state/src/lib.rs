//! berth-state (in progress).
