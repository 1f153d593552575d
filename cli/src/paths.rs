//! Where berth keeps things, all below one root (`--root`, `BERTH_ROOT`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use berth_image::ImageStore;
use berth_state::ContainerStore;
use cli::runtime::Runtime;

#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    pub fn new(root: PathBuf) -> Self {
        Paths { root }
    }

    /// The root directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn containers(&self) -> anyhow::Result<ContainerStore> {
        self.ensure_root()?;
        let dir = self.root.join("containers");
        let store = ContainerStore::open(&dir)
            .with_context(|| format!("cannot open the container store {}", dir.display()))?;
        // Only a path: reading the store must not make the runtime's
        // directory (`store_record` does, for a transient container).
        let runtime = Runtime::new(self.runtime_link());
        Ok(store.with_transient_dir(runtime.transient_containers()))
    }

    pub fn images(&self) -> anyhow::Result<ImageStore> {
        self.ensure_root()?;
        let dir = self.root.join("images");
        ImageStore::open(&dir)
            .with_context(|| format!("cannot open the image store {}", dir.display()))
    }

    /// The runtime that runs this root's containers. Its state (one
    /// directory per container: the spec, the init's PID, the exec fifo)
    /// dies with the containers at a reboot, so it lives below
    /// [`RUNTIME_STATE`] (as runc's and crun's do below /run, normally a
    /// tmpfs, where file creation costs a fraction of a journaled
    /// filesystem's on every `run`), in a directory of this root's own that
    /// `<root>/runtime` links to.
    pub fn runtime(&self) -> Runtime {
        let link = self.runtime_link();
        if let Ok(target) = std::fs::read_link(&link) {
            // After a reboot the tmpfs directory is gone: make it again.
            if !target.is_dir() {
                let _ = make_private_dir(&target);
            }
        } else if self.ensure_root().is_ok() {
            let target = runtime_state_dir(&self.root);
            if make_private_dir(&target).is_ok() {
                let _ = std::os::unix::fs::symlink(&target, &link);
            }
        }
        // Without /run (or the link), the state stays below the root.
        Runtime::new(link)
    }

    /// `<root>/runtime`: the link to the runtime's state below /run.
    fn runtime_link(&self) -> PathBuf {
        self.root.join("runtime")
    }

    /// Network records, IPAM state and the firewall lock.
    pub fn networks_dir(&self) -> PathBuf {
        self.root.join("networks")
    }

    /// The root holds every container's files: only root may enter it,
    /// and one that others own or may write is refused.
    pub fn ensure_root(&self) -> anyhow::Result<()> {
        berth_state::ensure_private_dir(&self.root)
            .with_context(|| format!("cannot use the state root {}", self.root.display()))
    }
}

/// Where berth keeps runtime state (normally on tmpfs).
pub const RUNTIME_STATE: &str = "/run/berth/runtime";

/// This root's runtime-state directory: named after the root's canonical
/// path, so that two roots never share one.
fn runtime_state_dir(root: &Path) -> PathBuf {
    use sha2::Digest;
    use std::os::unix::ffi::OsStrExt;
    let canonical = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_bytes());
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Path::new(RUNTIME_STATE).join(name)
}

fn make_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}
