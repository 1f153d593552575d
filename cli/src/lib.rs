//! berth's container runtime as a library: an OCI runtime spec
//! (`config.json`) plus a state directory in, a running container out.
//!
//! The `berth` engine (images, networks, the docker-style command line)
//! builds a spec and hands it to [`runtime::Runtime`]; the same binary
//! under the name `berth-runtime` speaks runc's command line over the
//! same code, so podman, containerd and CRI engines can use it. Other tools
//! can link this library directly:
//!
//! ```no_run
//! use cli::runtime::{CreateOptions, Runtime};
//!
//! let runtime = Runtime::new("/run/my-engine/runtime");
//! let spec = oci_spec::runtime::Spec::load("/bundles/web/config.json")?;
//! let created = runtime.create("web", "/bundles/web".as_ref(), &spec, CreateOptions::default())?;
//! created.start()?; // the container's process execs now
//! let state = runtime.state("web")?;
//! println!("{:?} {:?}", state.status(), state.pid());
//! runtime.kill("web", nix::sys::signal::Signal::SIGTERM, false)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod attach_server;
pub mod monitor_handoff;
pub mod runtime;
pub mod supervise;
