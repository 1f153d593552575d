//! The `images` scenario (issue 11's speed rows), side by side in one run:
//!
//! - pull of a ~200 MB, 5-layer image from a local `docker-registry` on
//!   127.0.0.1: `berth pull` into a fresh --root, `podman pull` into a fresh
//!   storage, and `skopeo copy` to a `dir:` plus `tar -xf` of its layers
//!   (the floor: download + unpack, nothing else);
//! - load of the same image as a docker-archive: `berth load -i` into a
//!   fresh --root on tmpfs, against `tar -xf` of its layer tars into
//!   tmpfs-backed dirs;
//! - `run --rm IMAGE true` on a 10-layer image against a 1-layer one.
//!
//! The image is made here from pseudo-random bytes (incompressible, so the
//! compressed and uncompressed sizes are alike), written as an OCI layout
//! and pushed with skopeo. Rounds interleave the tools; each row is the
//! median, ratios are medians of per-round ratios.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::report::median;
use super::system::{find_in_path, mount_tmpfs, quiet, run_checked};
use super::{Runner, Section, Settings};

/// Layers of the pulled image and bytes in each.
const BIG_LAYERS: usize = 5;
const BIG_LAYER_BYTES: usize = 40 << 20;

pub(super) fn measure(settings: &Settings, runner: &Runner) -> Result<Section> {
    for tool in ["docker-registry", "skopeo", "podman", "tar"] {
        if find_in_path(tool).is_none() {
            bail!(
                "the images scenario needs {tool} (apt-get install docker-registry skopeo podman)"
            );
        }
    }
    // The measuring stage runs in a private network namespace: the local
    // registry needs its loopback.
    berth_net::set_link_up("lo").context("bringing up lo for the local registry")?;
    let base = runner.work.root.join("images-bench");
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let rounds = settings.rounds.clamp(1, 5);
    let mut out = String::from("## images: pull, load, deep images\n\n");
    let mut raw = String::from("kind\tround\tcase\tmillis\n");

    let big = base.join("big-layout");
    let busybox = fs::read(runner.work.busybox_tar()).context("reading the busybox tar")?;
    write_layout(&big, &big_layers(), "bench/big:1")?;
    let registry = Registry::start(&base.join("registry"))?;
    let big_ref = format!("{}/bench/big:1", registry.address);
    run_checked(quiet(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}", big.display()),
        &format!("docker://{big_ref}"),
    ])))?;

    // Pull.
    let mut pulls: Vec<[f64; 3]> = Vec::new();
    for round in 0..rounds {
        let dir = base.join(format!("pull-{round}"));
        let berth_root = dir.join("berth");
        let berth = time(
            Command::new(&runner.berth)
                .arg("--root")
                .arg(&berth_root)
                .args(["pull", "-q", &big_ref]),
        )?;
        let podman_root = dir.join("podman");
        // podman refuses a runroot path longer than 50 characters.
        let podman_run = PathBuf::from(format!("/tmp/berth-bench-podman-{round}"));
        let podman = time(
            Command::new("podman")
                .arg("--root")
                .arg(podman_root.join("root"))
                .arg("--runroot")
                .arg(&podman_run)
                .args(["--storage-driver", "overlay", "--events-backend", "none"])
                .args(["pull", "-q", "--tls-verify=false", &big_ref]),
        )?;
        let floor = time_skopeo_and_tar(&big_ref, &dir.join("skopeo"))?;
        for (case, millis) in [("berth", berth), ("podman", podman), ("skopeo+tar", floor)] {
            let _ = writeln!(raw, "pull\t{round}\t{case}\t{millis:.1}");
        }
        pulls.push([berth, podman, floor]);
        remove_podman_storage(&podman_root, &podman_run);
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_dir_all(&podman_run);
    }

    // Load of a docker-archive, everything on tmpfs.
    let tmpfs = base.join("tmpfs");
    fs::create_dir_all(&tmpfs)?;
    mount_tmpfs(&tmpfs, "berth-bench-images", "mode=0700,size=2g")?;
    let archive = tmpfs.join("big.tar");
    run_checked(quiet(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}", big.display()),
        &format!("docker-archive:{}:bench/big:1", archive.display()),
    ])))?;
    let layer_tars = extract_layer_tars(&archive, &tmpfs.join("layer-tars"))?;
    let mut loads: Vec<[f64; 2]> = Vec::new();
    for round in 0..rounds {
        let root = tmpfs.join(format!("load-{round}"));
        let berth = time(
            Command::new(&runner.berth)
                .arg("--root")
                .arg(&root)
                .arg("load")
                .arg("-q")
                .arg("-i")
                .arg(&archive),
        )?;
        let untar = tmpfs.join(format!("untar-{round}"));
        let start = Instant::now();
        for (i, layer) in layer_tars.iter().enumerate() {
            let dest = untar.join(i.to_string());
            fs::create_dir_all(&dest)?;
            run_checked(
                Command::new("tar")
                    .arg("-xf")
                    .arg(layer)
                    .arg("-C")
                    .arg(&dest),
            )?;
        }
        let tar = start.elapsed().as_secs_f64() * 1000.0;
        let _ = writeln!(raw, "load\t{round}\tberth\t{berth:.1}");
        let _ = writeln!(raw, "load\t{round}\ttar -xf\t{tar:.1}");
        loads.push([berth, tar]);
        let _ = fs::remove_dir_all(&root);
        let _ = fs::remove_dir_all(&untar);
    }

    // run --rm on a 10-layer image against a 1-layer one (same content
    // plus nine small layers).
    let deep_root = tmpfs.join("deep-root");
    let mut deep_layers = vec![busybox.clone()];
    for i in 0..9 {
        deep_layers.push(tar_of(&[(format!("layer{i}/file"), vec![b'x'; 4096])])?);
    }
    for (name, layers) in [
        ("bench/flat:1", vec![busybox]),
        ("bench/deep:1", deep_layers),
    ] {
        let layout = base.join(name.replace(['/', ':'], "-"));
        write_layout(&layout, &layers, name)?;
        run_checked(quiet(
            Command::new(&runner.berth)
                .arg("--root")
                .arg(&deep_root)
                .arg("load")
                .arg("-i")
                .arg(&layout),
        ))?;
    }
    let mut runs: Vec<[f64; 2]> = Vec::new();
    for round in 0..(rounds * 10) {
        let mut pair = [0.0; 2];
        for (slot, image) in [(0, "bench/flat:1"), (1, "bench/deep:1")] {
            pair[slot] = time(
                Command::new(&runner.berth)
                    .arg("--root")
                    .arg(&deep_root)
                    .args(["run", "--rm", "--net", "none", image, "true"]),
            )?;
        }
        let _ = writeln!(raw, "run\t{round}\t1 layer\t{:.1}", pair[0]);
        let _ = writeln!(raw, "run\t{round}\t10 layers\t{:.1}", pair[1]);
        runs.push(pair);
    }
    let _ = fs::remove_dir_all(&deep_root);
    drop(registry);
    let _ = nix::mount::umount2(&tmpfs, nix::mount::MntFlags::MNT_DETACH);
    let _ = fs::remove_dir_all(&base);

    let column = |rows: &[f64]| median(rows).unwrap_or(f64::NAN);
    let ratio = |pairs: Vec<f64>| median(&pairs).unwrap_or(f64::NAN);
    let size_mb = (BIG_LAYERS * BIG_LAYER_BYTES) >> 20;
    let _ = writeln!(
        out,
        "{rounds} rounds, {BIG_LAYERS} layers of {} MiB ({size_mb} MiB), registry on 127.0.0.1.\n",
        BIG_LAYER_BYTES >> 20
    );
    let _ = writeln!(
        out,
        "| case | median ms | ratio (median of rounds) |\n|---|---:|---:|"
    );
    let _ = writeln!(
        out,
        "| berth pull | {:.0} | {:.2}x podman pull, {:.2}x skopeo copy + tar -xf |",
        column(&pulls.iter().map(|p| p[0]).collect::<Vec<_>>()),
        ratio(pulls.iter().map(|p| p[0] / p[1]).collect()),
        ratio(pulls.iter().map(|p| p[0] / p[2]).collect()),
    );
    let _ = writeln!(
        out,
        "| podman pull (overlay, fresh storage) | {:.0} | |",
        column(&pulls.iter().map(|p| p[1]).collect::<Vec<_>>())
    );
    let _ = writeln!(
        out,
        "| skopeo copy dir: + tar -xf | {:.0} | |",
        column(&pulls.iter().map(|p| p[2]).collect::<Vec<_>>())
    );
    let _ = writeln!(
        out,
        "| berth load -i docker-archive (tmpfs) | {:.0} | {:.2}x tar -xf of its layers |",
        column(&loads.iter().map(|l| l[0]).collect::<Vec<_>>()),
        ratio(loads.iter().map(|l| l[0] / l[1]).collect()),
    );
    let _ = writeln!(
        out,
        "| tar -xf of the layers (tmpfs) | {:.0} | |",
        column(&loads.iter().map(|l| l[1]).collect::<Vec<_>>())
    );
    let _ = writeln!(
        out,
        "| run --rm, 10-layer image | {:.1} | {:.2}x the 1-layer image |",
        column(&runs.iter().map(|r| r[1]).collect::<Vec<_>>()),
        ratio(runs.iter().map(|r| r[1] / r[0]).collect()),
    );
    let _ = writeln!(
        out,
        "| run --rm, 1-layer image | {:.1} | |\n",
        column(&runs.iter().map(|r| r[0]).collect::<Vec<_>>())
    );
    Ok(Section {
        markdown: out,
        raw: Some(("images.tsv", raw)),
        failure: None,
    })
}

/// Milliseconds a command took; it must succeed.
fn time(command: &mut Command) -> Result<f64> {
    let start = Instant::now();
    // stderr kept: run_checked quotes it when the command fails.
    run_checked(command.stdout(Stdio::null()))?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

fn time_skopeo_and_tar(reference: &str, dir: &Path) -> Result<f64> {
    let start = Instant::now();
    run_checked(quiet(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("dir:{}", dir.display()),
    ])))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json"))?)?;
    for (i, layer) in manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let hex = layer["digest"]
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
            .context("a layer digest in skopeo's manifest")?;
        let dest = dir.join(format!("layer-{i}"));
        fs::create_dir_all(&dest)?;
        run_checked(
            Command::new("tar")
                .arg("-xf")
                .arg(dir.join(hex))
                .arg("-C")
                .arg(&dest),
        )?;
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

/// The layer tars of a docker-archive, copied out (untimed).
fn extract_layer_tars(archive: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    run_checked(
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(dir),
    )?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json"))?)?;
    Ok(manifest[0]["Layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str())
        .map(|l| dir.join(l))
        .collect())
}

/// Pseudo-random, incompressible layers (xorshift: fast, reproducible).
fn big_layers() -> Vec<Vec<u8>> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..BIG_LAYERS)
        .map(|layer| {
            let files: Vec<(String, Vec<u8>)> = (0..8)
                .map(|file| {
                    let bytes = (0..BIG_LAYER_BYTES / 8 / 8)
                        .flat_map(|_| {
                            state ^= state << 13;
                            state ^= state >> 7;
                            state ^= state << 17;
                            state.to_le_bytes()
                        })
                        .collect();
                    (format!("data/layer{layer}/file{file}"), bytes)
                })
                .collect();
            tar_of(&files).unwrap_or_default()
        })
        .collect()
}

fn tar_of(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        builder.append_data(&mut header, name, &content[..])?;
    }
    Ok(builder.into_inner()?)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An OCI image layout at `dir` with `layers` (uncompressed tars, stored
/// gzip level 1) named `reference` (as `ref.name` and containerd's
/// `io.containerd.image.name`, which `ctr image import` reads).
pub(super) fn write_layout(dir: &Path, layers: &[Vec<u8>], reference: &str) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let put = |bytes: &[u8]| -> Result<(String, usize)> {
        let hex = sha256_hex(bytes);
        fs::write(blobs.join(&hex), bytes)?;
        Ok((format!("sha256:{hex}"), bytes.len()))
    };
    let mut diff_ids = Vec::new();
    let mut descriptors = Vec::new();
    for layer in layers {
        diff_ids.push(format!("sha256:{}", sha256_hex(layer)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(layer)?;
        let (digest, size) = put(&gz.finish()?)?;
        descriptors.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": size
        }));
    }
    let config = json!({
        "created": "2026-01-01T00:00:00Z",
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = put(&serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": descriptors,
    });
    let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest)?)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {
                "org.opencontainers.image.ref.name": reference,
                "io.containerd.image.name": reference,
            }
        }]
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

/// podman's overlay storage leaves mounts; its own reset removes them.
fn remove_podman_storage(root: &Path, run: &Path) {
    let _ = Command::new("podman")
        .arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(run)
        .args(["--storage-driver", "overlay", "system", "reset", "-f"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A docker-registry on a free 127.0.0.1 port, killed on drop.
struct Registry {
    child: Child,
    address: String,
}

impl Registry {
    fn start(dir: &Path) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let address = format!("127.0.0.1:{port}");
        fs::create_dir_all(dir.join("storage"))?;
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
                dir.join("storage").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting docker-registry")?;
        let registry = Registry { child, address };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.address).is_err() {
            if Instant::now() > deadline {
                bail!("docker-registry did not listen on {}", registry.address);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
