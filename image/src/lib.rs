//! berth-image (in progress).
