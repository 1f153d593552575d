//! A real registry for pull tests, and images pushed to it by real tools.
//!
//! - [`TestRegistry`]: Debian's `docker-registry` (docker distribution)
//!   on 127.0.0.1 with a free port, its storage and config in a temp
//!   directory, optionally behind htpasswd basic auth; killed by PID and
//!   its directory removed on drop.
//! - [`SampleImage`] and [`OciLayout`]: images made here from local
//!   material (the host's static busybox, tars written by hand, noise),
//!   written as an OCI image layout that [`TestRegistry::push`] copies
//!   into the registry with `skopeo copy`.
//! - [`require_registry_tools!`]: skip, saying why, when the tools are
//!   not installed.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::{command_line, describe, make_busybox_rootfs, noise, run_command, KillOnDrop};

/// The programs the registry tests run.
const TOOLS: &[(&str, &str)] = &[
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
    ("htpasswd", "apache2-utils"),
];

/// How long a freshly started registry may take to answer.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the registry tests cannot run on this machine (a tool is not
/// installed), or `None` when they can.
pub fn registry_tools_missing() -> Option<String> {
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(program, package)| format!("{program} (apt-get install {package})"))
        .collect();
    (!missing.is_empty()).then(|| format!("registry tests need {}", missing.join(", ")))
}

/// Return early from the current test, saying why, unless
/// docker-registry, skopeo and htpasswd are installed.
#[macro_export]
macro_rules! require_registry_tools {
    () => {
        if let Some(why) = $crate::registry::registry_tools_missing() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// A running `docker-registry serve` on 127.0.0.1.
#[derive(Debug)]
pub struct TestRegistry {
    /// Field order: the process dies before its directory is removed.
    process: KillOnDrop,
    address: String,
    login: Option<(String, String)>,
    dir: TempDir,
}

impl TestRegistry {
    /// A registry that anyone may pull from and push to.
    pub fn start() -> TestRegistry {
        Self::start_with(None)
    }

    /// A registry behind basic auth (htpasswd, bcrypt) for one user.
    pub fn start_with_basic_auth(username: &str, password: &str) -> TestRegistry {
        Self::start_with(Some((username.to_owned(), password.to_owned())))
    }

    fn start_with(login: Option<(String, String)>) -> TestRegistry {
        let dir = tempfile::tempdir().expect("create the registry's directory");
        let auth = match &login {
            Some((username, password)) => {
                let mut htpasswd = Command::new("htpasswd");
                htpasswd
                    .args(["-Bbn", username, password])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let output = run_command(htpasswd);
                assert!(
                    output.status.success(),
                    "htpasswd failed\n{}",
                    describe(&output)
                );
                let file = dir.path().join("htpasswd");
                fs::write(&file, &output.stdout).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: test-registry\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        // The port is free when asked, but another process may take it
        // before the registry binds it: then try another.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let address = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: {address}\n  secret: test-only-secret\n\
                     {auth}",
                    dir.path().join("data").display()
                ),
            )
            .expect("write the registry config");
            let log_path = dir.path().join("registry.log");
            let log = fs::File::create(&log_path).expect("create the registry log");
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup the log"))
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let mut process = KillOnDrop(child);
            let answered = crate::wait_until(STARTUP_TIMEOUT, || {
                matches!(process.0.try_wait(), Ok(Some(_)))
                    || http_status(&address, "/v2/").is_some()
            });
            let exited = matches!(process.0.try_wait(), Ok(Some(_)));
            if answered && !exited {
                return TestRegistry {
                    process,
                    address,
                    login,
                    dir,
                };
            }
            drop(process);
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            failures.push(format!("on {address}: {log}"));
            if !log.contains("address already in use") {
                break;
            }
        }
        panic!("docker-registry did not start:\n{}", failures.join("\n"));
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The user and password of a registry with basic auth.
    pub fn login(&self) -> Option<(&str, &str)> {
        self.login
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str()))
    }

    /// The process id of the registry, for tests that stop or pause it.
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// What the registry has logged (warnings and errors).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `skopeo copy` the image (or index, with `all`) named `name` in
    /// `layout` to `repository:tag` here, as OCI or, with `docker_format`,
    /// as docker schema 2 (manifest list for an index).
    pub fn push(&self, layout: &OciLayout, name: &str, repository_tag: &str, push: Push) {
        let mut skopeo = Command::new("skopeo");
        skopeo.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if push.all {
            skopeo.arg("--all");
        }
        if push.docker_format {
            skopeo.args(["--format", "v2s2"]);
        } else {
            // Otherwise skopeo compresses the plain tar layers, which
            // changes the manifest.
            skopeo.arg("--preserve-digests");
        }
        if let Some((user, password)) = self.login() {
            skopeo.arg(format!("--dest-creds={user}:{password}"));
        }
        skopeo
            .arg(format!("oci:{}:{name}", layout.dir().display()))
            .arg(format!("docker://{}/{repository_tag}", self.address))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let line = command_line(&skopeo);
        let output = run_command(skopeo);
        assert!(
            output.status.success(),
            "`{line}` failed\n{}\n--- registry log ---\n{}",
            describe(&output),
            self.log()
        );
    }
}

/// How [`TestRegistry::push`] copies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Push {
    /// Every image of an index, and the index itself.
    pub all: bool,
    /// Convert to docker schema 2 (media types, manifest list; plain tar
    /// layers are compressed). Without it the manifests are kept byte
    /// for byte.
    pub docker_format: bool,
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The status of `GET path` on `address` over plain HTTP, or `None` when
/// nothing answers.
pub fn http_status(address: &str, path: &str) -> Option<u16> {
    http_get(address, path, None).map(|(status, _)| status)
}

/// `GET path` on `address` over plain HTTP (HTTP/1.0, so the body ends
/// with the connection), with an `Accept` header when given: the status
/// and the body, or `None` when nothing answers.
pub fn http_get(address: &str, path: &str, accept: Option<&str>) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\n{accept}\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let status = std::str::from_utf8(response.get(9..12)?)
        .ok()?
        .parse()
        .ok()?;
    let body_at = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((status, response.split_off(body_at)))
}

/// `sha256:` and the hex digest of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// One layer blob as stored (tar or tar+gzip), with its media type.
#[derive(Debug, Clone)]
pub struct SampleLayer {
    pub media_type: &'static str,
    pub blob: Vec<u8>,
    /// The digest of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
}

impl SampleLayer {
    /// A layer from an uncompressed tar, gzipped when `gzip`.
    pub fn from_tar(tar: Vec<u8>, gzip: bool) -> SampleLayer {
        let diff_id = sha256_digest(&tar);
        if !gzip {
            return SampleLayer {
                media_type: "application/vnd.oci.image.layer.v1.tar",
                blob: tar,
                diff_id,
            };
        }
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&tar).expect("gzip a layer");
        SampleLayer {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
            blob: encoder.finish().expect("gzip a layer"),
            diff_id,
        }
    }
}

/// An OCI image (manifest, config, layers) built in memory.
#[derive(Debug, Clone)]
pub struct SampleImage {
    pub architecture: String,
    pub layers: Vec<SampleLayer>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl SampleImage {
    /// An image of `layers` for linux/`architecture`, running `sh`.
    pub fn new(architecture: &str, layers: Vec<SampleLayer>) -> SampleImage {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": architecture,
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["sh"],
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|layer| &layer.diff_id).collect::<Vec<_>>(),
            },
        }))
        .expect("serialize a config");
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256_digest(&config),
                "size": config.len(),
            },
            "layers": layers.iter().map(|layer| serde_json::json!({
                "mediaType": layer.media_type,
                "digest": sha256_digest(&layer.blob),
                "size": layer.blob.len(),
            })).collect::<Vec<_>>(),
        }))
        .expect("serialize a manifest");
        SampleImage {
            architecture: architecture.to_owned(),
            layers,
            config,
            manifest,
        }
    }

    /// A runnable three-layer image: the host's static busybox with
    /// `/etc/obsolete` and `/opaque/old` (tar+gzip); a layer that changes
    /// `/etc/motd`, deletes `/etc/obsolete` (whiteout) and makes
    /// `/opaque` opaque (plain tar); 1 MiB of noise in `/data/noise`
    /// (tar+gzip).
    pub fn busybox_layers(architecture: &str) -> SampleImage {
        let work = tempfile::tempdir().expect("create a directory for a rootfs");
        let rootfs = work.path().join("rootfs");
        make_busybox_rootfs(&rootfs);
        fs::write(rootfs.join("etc/motd"), "first layer\n").expect("write motd");
        fs::write(rootfs.join("etc/obsolete"), "deleted above\n").expect("write obsolete");
        fs::create_dir(rootfs.join("opaque")).expect("mkdir opaque");
        fs::write(rootfs.join("opaque/old"), "hidden above\n").expect("write opaque/old");
        let tar_path = work.path().join("base.tar");
        let mut tar = Command::new("tar");
        tar.stderr(Stdio::piped())
            .args(["--numeric-owner", "--sort=name", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar_path)
            .arg(".");
        let output = run_command(tar);
        assert!(output.status.success(), "tar failed\n{}", describe(&output));
        let base = fs::read(&tar_path).expect("read the base layer");

        let changes = crate::TarBuilder::new()
            .dir("etc", 0o755)
            .file("etc/motd", 0o644, b"second layer\n")
            .file("etc/.wh.obsolete", 0o644, b"")
            .dir("opaque", 0o755)
            .file("opaque/.wh..wh..opq", 0o644, b"")
            .file("opaque/new", 0o644, b"only this\n")
            .finish();
        let data = crate::TarBuilder::new()
            .dir("data", 0o755)
            .file("data/noise", 0o644, &noise(1024 * 1024, 11))
            .finish();
        SampleImage::new(
            architecture,
            vec![
                SampleLayer::from_tar(base, true),
                SampleLayer::from_tar(changes, false),
                SampleLayer::from_tar(data, true),
            ],
        )
    }

    /// A one-layer image with a single file naming its architecture: the
    /// other platforms of a manifest list.
    pub fn tiny(architecture: &str) -> SampleImage {
        let tar = crate::TarBuilder::new()
            .file("architecture", 0o644, architecture.as_bytes())
            .finish();
        SampleImage::new(architecture, vec![SampleLayer::from_tar(tar, true)])
    }

    pub fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    pub fn config_digest(&self) -> String {
        sha256_digest(&self.config)
    }
}

/// An OCI image layout directory (blobs/, index.json, oci-layout) in a
/// temp directory: the local material `skopeo copy` pushes.
#[derive(Debug)]
pub struct OciLayout {
    dir: TempDir,
    entries: Vec<serde_json::Value>,
}

impl Default for OciLayout {
    fn default() -> Self {
        Self::new()
    }
}

impl OciLayout {
    pub fn new() -> OciLayout {
        let dir = tempfile::tempdir().expect("create a layout directory");
        fs::create_dir_all(dir.path().join("blobs/sha256")).expect("mkdir blobs");
        fs::write(
            dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("write oci-layout");
        let layout = OciLayout {
            dir,
            entries: Vec::new(),
        };
        layout.write_index();
        layout
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds `image` under `name`.
    pub fn add_image(&mut self, name: &str, image: &SampleImage) {
        self.write_image_blobs(image);
        self.entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.manifest_digest(),
            "size": image.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }));
        self.write_index();
    }

    /// Adds an image index of `images` (each for linux and its
    /// architecture) under `name`; returns the index's bytes.
    pub fn add_index(&mut self, name: &str, images: &[&SampleImage]) -> Vec<u8> {
        for image in images {
            self.write_image_blobs(image);
        }
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": images.iter().map(|image| serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": image.manifest_digest(),
                "size": image.manifest.len(),
                "platform": {"os": "linux", "architecture": image.architecture},
            })).collect::<Vec<_>>(),
        }))
        .expect("serialize an index");
        self.write_blob(&index);
        self.entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": sha256_digest(&index),
            "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }));
        self.write_index();
        index
    }

    fn write_image_blobs(&self, image: &SampleImage) {
        self.write_blob(&image.manifest);
        self.write_blob(&image.config);
        for layer in &image.layers {
            self.write_blob(&layer.blob);
        }
    }

    fn write_blob(&self, data: &[u8]) {
        fs::write(self.blob_path(&sha256_digest(data)), data).expect("write a blob");
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn write_index(&self) {
        let index = serde_json::json!({"schemaVersion": 2, "manifests": self.entries});
        fs::write(
            self.dir.path().join("index.json"),
            serde_json::to_vec(&index).expect("serialize index.json"),
        )
        .expect("write index.json");
    }
}
