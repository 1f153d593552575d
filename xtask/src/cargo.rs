//! Driving cargo: where the workspace and its target dir are, and building
//! the `berth` binary and the privileged test executables.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The cargo that runs us (`cargo xtask` sets `CARGO`), so a toolchain
/// override applies to the nested builds too.
pub fn cargo_command() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Paths of the workspace as cargo sees them.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub target_dir: PathBuf,
}

impl Workspace {
    pub fn locate() -> Result<Self> {
        let output = cargo_command()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .stderr(Stdio::inherit())
            .output()
            .context("running `cargo metadata`")?;
        if !output.status.success() {
            bail!("`cargo metadata` failed ({})", output.status);
        }
        let metadata: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("parsing `cargo metadata` output")?;
        let path_field = |name: &str| -> Result<PathBuf> {
            metadata[name]
                .as_str()
                .map(PathBuf::from)
                .with_context(|| format!("`cargo metadata` has no {name}"))
        };
        Ok(Self {
            root: path_field("workspace_root")?,
            target_dir: path_field("target_directory")?,
        })
    }

    /// Scratch space of the xtask itself (VM kernel, initramfs, run dirs).
    pub fn xtask_dir(&self) -> PathBuf {
        self.target_dir.join("xtask")
    }
}

/// Runs a cargo build whose stdout is JSON messages and returns the
/// `executable` of every compiler artifact that `keep` accepts.
/// Diagnostics are rendered to stderr as usual, so build errors stay readable.
fn build_executables(
    args: &[&str],
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Result<Vec<PathBuf>> {
    let description = format!("cargo {}", args.join(" "));
    let mut child = cargo_command()
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{description}`"))?;
    let stdout = child.stdout.take().context("cargo stdout was not piped")?;
    let mut executables = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.with_context(|| format!("reading `{description}` output"))?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" || !keep(&message) {
            continue;
        }
        if let Some(executable) = message["executable"].as_str() {
            executables.push(PathBuf::from(executable));
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{description}`"))?;
    if !status.success() {
        bail!("`{description}` failed ({status})");
    }
    Ok(executables)
}

/// `cargo build -p cli`; returns the absolute path of the `berth` binary.
pub fn build_berth() -> Result<PathBuf> {
    let executables = build_executables(&["build", "-p", "cli"], |message| {
        message["target"]["name"] == "berth"
    })?;
    executables
        .into_iter()
        .next()
        .context("`cargo build -p cli` produced no `berth` executable")
}

/// `cargo test -p berth-e2e --no-run`; returns every test executable.
pub fn build_e2e_tests() -> Result<Vec<PathBuf>> {
    build_executables(&["test", "-p", "berth-e2e", "--no-run"], |message| {
        message["profile"]["test"] == true
    })
}

/// A short display form: the path relative to the workspace root if inside it.
pub fn display_path(path: &Path, workspace: &Workspace) -> String {
    path.strip_prefix(&workspace.root)
        .unwrap_or(path)
        .display()
        .to_string()
}
