//! Linux namespaces for berth: start a child process in new namespaces,
//! join the namespaces of a running process, and a typed parent/child
//! channel (with file-descriptor passing) to synchronise the two.
//!
//! ```no_run
//! use berth_ns::{channel, spawn, Channel, Namespace};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! enum ToChild { Go }
//! #[derive(Serialize, Deserialize)]
//! enum ToParent { Ready }
//!
//! let (parent, child): (Channel<ToChild, ToParent>, Channel<ToParent, ToChild>) = channel()?;
//! let pid = spawn(&[Namespace::Uts, Namespace::Pid], move || {
//!     // In the child: wait for the parent, then do the work.
//!     match child.recv() {
//!         Ok(Some(ToChild::Go)) => 0,
//!         _ => 1,
//!     }
//! })?;
//! parent.send(&ToChild::Go)?;
//! # let _ = pid;
//! # Ok::<(), berth_ns::NsError>(())
//! ```

pub mod capabilities;
mod channel;
mod namespace;
mod process;
pub mod sealed;

pub use capabilities::{Capability, CapabilitySet};
pub use channel::{channel, Channel};
pub use namespace::{join, Namespace};
pub use process::spawn;

use std::path::PathBuf;

/// Everything that can go wrong here, each naming what it was about.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("cannot create a process in new {namespaces} namespaces: {source}")]
    Clone {
        namespaces: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot open namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot join namespace {path}: {source}")]
    Join {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("sync channel: {op}: {source}")]
    Channel {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("cannot run from a sealed copy of the program: {step}: {source}")]
    Sealed {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("sync channel: malformed message: {source}")]
    Message {
        #[source]
        source: serde_json::Error,
    },
    /// A `--cap-add`/`--cap-drop` name that is no capability.
    #[error(
        "unknown capability {name:?} (expected a name such as NET_ADMIN or CAP_NET_ADMIN, or ALL)"
    )]
    UnknownCapability { name: String },
    /// A step of [`capabilities::apply`] failed.
    #[error("cannot set the capabilities: {step}: {source}")]
    Capabilities {
        step: String,
        #[source]
        source: nix::Error,
    },
    /// After [`capabilities::apply`], the kernel reports other sets than
    /// asked for.
    #[error("capabilities not applied: wanted {expected} (inheritable 0), the kernel has {found}")]
    CapabilitiesMismatch { expected: String, found: String },
    /// `PR_SET_NO_NEW_PRIVS` failed.
    #[error("cannot set no_new_privs: {source}")]
    NoNewPrivs {
        #[source]
        source: nix::Error,
    },
}
