//! Where berth keeps things, all below one root (`--root`, `BERTH_ROOT`).

use std::path::PathBuf;

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

    pub fn containers(&self) -> anyhow::Result<ContainerStore> {
        self.ensure_root()?;
        let dir = self.root.join("containers");
        ContainerStore::open(&dir)
            .with_context(|| format!("cannot open the container store {}", dir.display()))
    }

    pub fn images(&self) -> anyhow::Result<ImageStore> {
        self.ensure_root()?;
        let dir = self.root.join("images");
        ImageStore::open(&dir)
            .with_context(|| format!("cannot open the image store {}", dir.display()))
    }

    /// The runtime that runs this root's containers: its state (one
    /// directory per running container) lives below the root too.
    pub fn runtime(&self) -> Runtime {
        Runtime::new(self.root.join("runtime"))
    }

    /// Network records, IPAM state and the firewall lock.
    pub fn networks_dir(&self) -> PathBuf {
        self.root.join("networks")
    }

    /// The root holds every container's files: only root may enter it.
    pub fn ensure_root(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .with_context(|| format!("cannot create the state root {}", self.root.display()))
    }
}
