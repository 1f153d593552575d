//! berth-net (in progress).
