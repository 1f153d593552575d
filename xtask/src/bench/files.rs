//! The `cp` scenario (issue 14's speed row): `berth cp` of a 1 GiB tree
//! out of a container beside the floor, `tar -C upper -cf - . | tar -xf -`
//! on the same data, rounds interleaved.
//!
//! The tree (1 GiB: twelve 80 MiB files and 4,000 files of 8 KiB in 8
//! directories, pseudo-random bytes) is put into the write layer of a
//! stopped container (`berth cp` then mounts its rootfs privately), and
//! copied into a running one with `berth cp` (timed too, beside the same
//! floor), which is then copied out through `/proc/PID/root`. Before every
//! timed copy the page cache is written back (`sync`), so neither side pays
//! for the other's writes; the source stays cached for both.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::report::median;
use super::system::{find_in_path, quiet, run_checked};
use super::{Runner, Section, Settings};

/// 1 GiB: twelve 80 MiB files and 4,000 of 8 KiB.
const TREE: TreeShape = TreeShape {
    big_files: 12,
    big_file_bytes: 80 << 20,
    small_dirs: 8,
    small_files_per_dir: 500,
    small_file_bytes: 8 << 10,
    seed: 11,
};

/// Pseudo-random bytes (xorshift), incompressible and different per seed.
pub(super) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The shape of a tree of pseudo-random files: a few big ones and many
/// small ones in a few directories (the `cp` and `commit` scenarios').
pub(super) struct TreeShape {
    pub big_files: usize,
    pub big_file_bytes: usize,
    pub small_dirs: usize,
    pub small_files_per_dir: usize,
    pub small_file_bytes: usize,
    /// Different trees get different bytes.
    pub seed: u64,
}

impl TreeShape {
    pub fn files(&self) -> usize {
        self.big_files + self.small_dirs * self.small_files_per_dir
    }
}

/// Write `shape` into `dir`; the bytes written.
pub(super) fn write_tree(dir: &Path, shape: &TreeShape) -> Result<u64> {
    let mut bytes = 0;
    let block = noise(1 << 20, shape.seed);
    for i in 0..shape.big_files {
        let path = dir.join(format!("big-{i:02}.bin"));
        let mut file =
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        // Each MiB rotated differently, so no two are alike: nothing for a
        // compressor to find.
        for m in 0..(shape.big_file_bytes >> 20) {
            let shift = (i * 131 + m * 7) % block.len();
            file.write_all(&block[shift..])?;
            file.write_all(&block[..shift])?;
        }
        bytes += shape.big_file_bytes as u64;
    }
    for d in 0..shape.small_dirs {
        let sub = dir.join(format!("small-{d}"));
        fs::create_dir_all(&sub)?;
        for f in 0..shape.small_files_per_dir {
            let seed = (d * shape.small_files_per_dir + f) as u64 + shape.seed;
            fs::write(
                sub.join(format!("f{f:04}")),
                noise(shape.small_file_bytes, seed),
            )?;
        }
        bytes += (shape.small_files_per_dir * shape.small_file_bytes) as u64;
    }
    Ok(bytes)
}

/// Milliseconds a command took (after writing back the page cache).
fn timed(command: &mut Command) -> Result<f64> {
    run_checked(quiet(&mut Command::new("sync")))?;
    let start = Instant::now();
    run_checked(quiet(command))?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

fn tar_pipe(from: &Path, to: &Path) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("tar -C \"$1\" -cf - . | tar -C \"$2\" -xf -")
        .arg("sh")
        .arg(from)
        .arg(to);
    command
}

pub(super) fn fresh_dir(path: &Path) -> Result<PathBuf> {
    let _ = fs::remove_dir_all(path);
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// The one container directory below `root` whose record names `name`.
pub(super) fn container_dir(root: &Path, name: &str) -> Result<PathBuf> {
    for entry in fs::read_dir(root.join("containers"))? {
        let dir = entry?.path();
        let config = fs::read_to_string(dir.join("config.json")).unwrap_or_default();
        let record: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
        if record["name"] == name {
            return Ok(dir);
        }
    }
    bail!("no container {name} below {}", root.display())
}

pub(super) fn measure(settings: &Settings, runner: &Runner) -> Result<Section> {
    if find_in_path("tar").is_none() {
        bail!("the cp scenario needs tar");
    }
    let base = runner.work.root.join("cp-bench");
    let root = base.join("root");
    let berth = |args: &[&str]| {
        let mut command = Command::new(&runner.berth);
        command.arg("--root").arg(&root).args(args);
        command
    };
    let src = fresh_dir(&base.join("src"))?;
    let bytes = write_tree(&src, &TREE)?;
    run_checked(quiet(&mut berth(&[
        "run", "--pull", "never", "--net", "none", "--name", "stopped", "busybox", "true",
    ])))?;
    let upper = container_dir(&root, "stopped")?.join("upper");
    let data = fresh_dir(&upper.join("data"))?;
    run_checked(quiet(&mut tar_pipe(&src, &data)))?;
    run_checked(quiet(&mut berth(&[
        "run", "-d", "--pull", "never", "--net", "none", "--name", "live", "busybox", "sleep",
        "3600",
    ])))?;

    let rounds = settings.rounds.clamp(1, 5);
    let mut raw = String::from("round\tcase\tmillis\n");
    // [berth out of stopped, berth out of running, berth into running, tar]
    let mut rows: Vec<[f64; 4]> = Vec::new();
    // Round 0 warms up (caches, the first overlay mount) and is not kept.
    for round in 0..=rounds {
        let out = |name: &str| base.join(format!("out-{name}"));
        let mut row = [0.0; 4];
        // The order rotates so that no case always follows the same one.
        for step in 0..3 {
            let case = (step + round) % 3;
            let (slot, name, millis) = match case {
                0 => (
                    0,
                    "berth cp out of stopped",
                    timed(&mut berth(&[
                        "cp",
                        "stopped:/data/.",
                        fresh_dir(&out("stopped"))?.to_str().unwrap_or_default(),
                    ]))?,
                ),
                1 => {
                    // Into the running container first (its own row), then out.
                    let _ = timed(&mut berth(&["exec", "live", "rm", "-rf", "/data"]));
                    let into = timed(&mut berth(&[
                        "cp",
                        &format!("{}/.", src.display()),
                        "live:/data",
                    ]))?;
                    let _ = writeln!(raw, "{round}\tberth cp into running\t{into:.1}");
                    row[2] = into;
                    let millis = timed(&mut berth(&[
                        "cp",
                        "live:/data/.",
                        fresh_dir(&out("live"))?.to_str().unwrap_or_default(),
                    ]))?;
                    (1, "berth cp out of running", millis)
                }
                _ => (
                    3,
                    "tar | tar",
                    timed(&mut tar_pipe(&data, &fresh_dir(&out("tar"))?))?,
                ),
            };
            let _ = writeln!(raw, "{round}\t{name}\t{millis:.1}");
            row[slot] = millis;
        }
        for name in ["stopped", "live", "tar"] {
            let _ = fs::remove_dir_all(out(name));
        }
        if round > 0 {
            rows.push(row);
        }
    }
    let _ = run_checked(quiet(&mut berth(&["rm", "-f", "live", "stopped"])));
    let _ = fs::remove_dir_all(&base);

    let column =
        |i: usize| median(&rows.iter().map(|r| r[i]).collect::<Vec<_>>()).unwrap_or(f64::NAN);
    let ratio = |i: usize| {
        median(&rows.iter().map(|r| r[i] / r[3]).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    let mut out = String::from("## cp: a 1 GiB tree out of (and into) a container\n\n");
    let _ = writeln!(
        out,
        "{rounds} rounds after a warm-up round, {} MiB in {} files ({} of {} MiB), page cache written back before each copy.\n",
        bytes >> 20,
        TREE.files(),
        TREE.big_files,
        TREE.big_file_bytes >> 20
    );
    let _ = writeln!(
        out,
        "| case | median ms | ratio to tar \\| tar (median of rounds) |\n|---|---:|---:|"
    );
    for (i, name) in [
        (0, "berth cp C:/data/. DIR (stopped container)"),
        (1, "berth cp C:/data/. DIR (running container)"),
        (2, "berth cp DIR/. C:/data (running container)"),
    ] {
        let _ = writeln!(out, "| {name} | {:.0} | {:.2}x |", column(i), ratio(i));
    }
    let _ = writeln!(
        out,
        "| tar -C upper -cf - . \\| tar -xf - | {:.0} | |\n",
        column(3)
    );
    Ok(Section {
        markdown: out,
        raw: Some(("cp.tsv", raw)),
        failure: None,
    })
}
