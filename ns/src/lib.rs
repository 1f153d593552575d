//! Linux namespaces and process attributes for starting a container's
//! process: start a child in new namespaces (the user namespace included)
//! with a typed parent/child channel (with file-descriptor passing) to
//! synchronise the two, join existing namespaces, and set up what an OCI
//! runtime spec asks of the process: capabilities
//! ([`capabilities`]), user and groups, umask, rlimits, OOM score,
//! sysctls, session keyring and user-namespace id maps ([`process`]).
//!
//! ```no_run
//! use berth_ns::process::{write_id_maps, IdMap};
//! use berth_ns::{spawn_with_channel, Channel, Namespace};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! enum ToChild { Go }
//! #[derive(Serialize, Deserialize)]
//! enum ToParent { Ready }
//!
//! let namespaces = [Namespace::User, Namespace::Uts, Namespace::Pid];
//! let (pid, channel) = spawn_with_channel(&namespaces, |channel: Channel<ToParent, ToChild>| {
//!     // In the child: wait until the parent has set it up.
//!     match channel.recv() {
//!         Ok(Some(ToChild::Go)) => 0,
//!         _ => 1,
//!     }
//! })?;
//! let map = [IdMap { container_id: 0, host_id: 100_000, size: 65_536 }];
//! write_id_maps("/proc".as_ref(), pid.as_raw(), &map, &map)?;
//! channel.send(&ToChild::Go)?;
//! # Ok::<(), berth_ns::NsError>(())
//! ```

pub mod capabilities;
mod channel;
mod error;
mod namespace;
pub mod process;
pub mod sealed;
pub mod seccomp;
mod spawn;

pub use capabilities::{Capability, CapabilitySet, CapabilitySets};
pub use channel::{channel, Channel};
pub use error::NsError;
pub use namespace::{join, join_paths, Namespace};
pub use spawn::{spawn, spawn_with_channel, spawn_with_channel_in, Birthplace};
