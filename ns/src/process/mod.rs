//! What a container's process is given before it execs, as an OCI runtime
//! spec describes it: user and groups, umask, rlimits, OOM score
//! adjustment, sysctls, its own session keyring, and the id maps of its
//! user namespace (written by the parent).
//!
//! The order matters. In the child, before execve(2): sysctls, the session
//! keyring, rlimits and the OOM score while still privileged, then
//! [`set_user`], then [`crate::capabilities::apply_sets`] (which needs the
//! capabilities `set_user` keeps), then exec.
//!
//! ```no_run
//! use std::path::Path;
//! use berth_ns::capabilities::{apply_sets, CapabilitySets};
//! use berth_ns::process::{
//!     join_new_session_keyring, set_oom_score_adj, set_rlimits, set_umask, set_user,
//!     validate_sysctl, write_sysctls, Rlimit,
//! };
//! use berth_ns::{CapabilitySet, Namespace};
//!
//! let sysctls = [("net.ipv4.ip_forward".to_owned(), "1".to_owned())];
//! // Before cloning: refuse a spec whose sysctls would change the host.
//! for (key, _) in &sysctls {
//!     validate_sysctl(key, &[Namespace::Net, Namespace::Ipc, Namespace::Uts])?;
//! }
//! // In the container's process:
//! write_sysctls(Path::new("/proc/sys"), &sysctls)?;
//! join_new_session_keyring("_ses.my-container")?;
//! set_rlimits(&[Rlimit::parse("RLIMIT_NOFILE", 1024, 1024)?])?;
//! set_oom_score_adj(Path::new("/proc"), 500)?;
//! set_user(1000, 1000, &[10])?;
//! set_umask(0o022)?;
//! apply_sets(&CapabilitySets::only(CapabilitySet::docker_default()))?;
//! // ... execve
//! # Ok::<(), berth_ns::NsError>(())
//! ```

mod id_map;
mod keyring;
mod limits;
mod sysctl;
mod user;

pub use id_map::{validate_id_maps, write_id_maps, IdMap, MAX_ID_MAP_LINES};
pub use keyring::join_new_session_keyring;
pub use limits::{set_oom_score_adj, set_rlimits, Rlimit, RlimitResource};
pub use sysctl::{sysctl_path, validate_sysctl, write_sysctls};
pub use user::{set_umask, set_user};
