//! Images pulled from a registry over the OCI distribution API (v2).
//!
//! [`RegistrySource::open`] resolves a reference to one image manifest
//! (choosing the wanted platform's entry when the reference names a
//! manifest list or OCI index), fetches the image config, and then serves
//! the image's blobs as streaming HTTP GETs: it is an [`ImageSource`] that
//! the store reads (and verifies) like any other.
//!
//! Anonymous pulls, bearer tokens (the registry's 401 challenge names a
//! token service) and basic auth are supported. Registries on
//! `localhost`, 127.0.0.0/8 and `[::1]` are reached over plain HTTP, all
//! others over HTTPS ([`PullOptions::tls_verify`] turns off certificate
//! checks). Every connect and every read is bounded by
//! [`PullOptions::timeout`].
//!
//! ```no_run
//! use std::io::Read;
//!
//! use berth_image::{ImageSource, PullOptions, RegistryReference, RegistrySource};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let reference = RegistryReference {
//!     registry: "127.0.0.1:5000".to_owned(),
//!     repository: "tools/app".to_owned(),
//!     tag: Some("1.0".to_owned()),
//!     digest: None,
//! };
//! let source = RegistrySource::open(&reference, &PullOptions::default())?;
//! for layer in source.manifest().layers() {
//!     let mut blob = Vec::new();
//!     source.open_blob(layer)?.read_to_end(&mut blob)?;
//!     println!("{}: {} bytes", layer.digest(), blob.len());
//! }
//! # Ok(())
//! # }
//! ```

mod blob;
mod challenge;
mod client;
mod error;
mod platform;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io::Read;
use std::str::FromStr;
use std::time::Duration;

use oci_spec::image::{Descriptor, Digest, DigestAlgorithm, ImageIndex, ImageManifest};
use sha2::Digest as _;
use ureq::http::header;

pub use error::RegistryError;
pub use platform::TargetPlatform;

use self::blob::BlobReader;
use self::client::{RegistryClient, RegistryHost, Target};
use crate::auth::Login;
use crate::{ImageError, ImageSource};

/// Manifests larger than this are refused before they are read in full
/// (docker and containerd use the same bound).
const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;

/// An image config larger than this is refused; it is held in memory.
const CONFIG_LIMIT: u64 = 16 * 1024 * 1024;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Where an image is in a registry: `registry/repository`, and a tag or
/// a digest (a digest wins when there are both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryReference {
    /// `host[:port]`, e.g. `registry.example:5000`, `127.0.0.1:5000`, or
    /// `docker.io` for Docker Hub.
    pub registry: String,
    /// The repository path, e.g. `library/busybox`.
    pub repository: String,
    /// A tag; `latest` when neither tag nor digest is given.
    pub tag: Option<String>,
    /// A manifest digest (`sha256:...`): the manifest must have it.
    pub digest: Option<String>,
}

impl RegistryReference {
    /// The tag or digest that the manifest is fetched by.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    fn validate(&self) -> Result<Option<Digest>, RegistryError> {
        let invalid = |reason: &str| RegistryError::InvalidReference {
            reference: self.to_string(),
            reason: reason.to_owned(),
        };
        RegistryHost::parse(&self.registry)?;
        let component_ok = |component: &str| {
            !component.is_empty()
                && component
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && component
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
        };
        if !self.repository.split('/').all(component_ok) {
            return Err(invalid(
                "a repository is /-separated lowercase names of letters, digits, . _ and -",
            ));
        }
        if let Some(tag) = &self.tag {
            let tag_ok = tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && tag
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !tag_ok {
                return Err(invalid(
                    "a tag is up to 128 letters, digits, . _ and -, not starting with . or -",
                ));
            }
        }
        self.digest
            .as_deref()
            .map(|digest| {
                Digest::from_str(digest).map_err(|_| invalid("the digest is not algorithm:hex"))
            })
            .transpose()
    }
}

impl fmt::Display for RegistryReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Which image of a manifest list to take (default `linux/amd64`).
    pub platform: TargetPlatform,
    /// Credentials for the registry; anonymous when `None`.
    pub login: Option<Login>,
    /// Check the certificates of HTTPS registries (default true).
    /// Loopback registries are plain HTTP either way.
    pub tls_verify: bool,
    /// Bound on connecting and on each wait for data (default 30 s).
    pub timeout: Duration,
    /// Redirects followed per request (default 10).
    pub max_redirects: u32,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: TargetPlatform::default(),
            login: None,
            tls_verify: true,
            timeout: Duration::from_secs(30),
            max_redirects: 10,
            user_agent: concat!("berth-image/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// One image in a registry, resolved to a single platform, whose blobs
/// are read over HTTP on demand.
#[derive(Debug)]
pub struct RegistrySource {
    client: RegistryClient,
    reference: RegistryReference,
    reference_digest: String,
    manifest: ImageManifest,
    manifest_bytes: Vec<u8>,
    manifest_digest: String,
    config_digest: Digest,
    config_bytes: Vec<u8>,
}

impl RegistrySource {
    /// Resolves `reference` to one image manifest for
    /// `options.platform` and fetches its config.
    ///
    /// A manifest fetched by digest (the reference's, or a manifest
    /// list's entry) must have that digest; one fetched by tag must have
    /// the digest the registry announces, if it announces one.
    pub fn open(
        reference: &RegistryReference,
        options: &PullOptions,
    ) -> Result<RegistrySource, ImageError> {
        Ok(Self::open_registry(reference, options)?)
    }

    fn open_registry(
        reference: &RegistryReference,
        options: &PullOptions,
    ) -> Result<RegistrySource, RegistryError> {
        let wanted_digest = reference.validate()?;
        let client = RegistryClient::new(&reference.registry, options)?;
        let repository = reference.repository.as_str();
        let fetched = fetch_manifest(
            &client,
            repository,
            reference.manifest_reference(),
            wanted_digest.as_ref(),
        )?;
        let reference_digest = fetched.digest.clone();
        let (manifest_bytes, manifest_digest) = match fetched.kind {
            ManifestKind::Image => (fetched.bytes, fetched.digest),
            ManifestKind::Index => {
                let invalid = |reason: String| RegistryError::InvalidManifest {
                    registry: reference.registry.clone(),
                    repository: repository.to_owned(),
                    reference: reference.manifest_reference().to_owned(),
                    reason,
                };
                let index: ImageIndex = serde_json::from_slice(&fetched.bytes)
                    .map_err(|error| invalid(format!("not a valid manifest list: {error}")))?;
                let entry =
                    platform::select_manifest(&index, &options.platform).map_err(|available| {
                        RegistryError::NoMatchingPlatform {
                            registry: reference.registry.clone(),
                            repository: repository.to_owned(),
                            reference: reference.manifest_reference().to_owned(),
                            wanted: options.platform.to_string(),
                            available,
                        }
                    })?;
                let entry_digest = entry.digest().to_string();
                if entry.size() > MANIFEST_LIMIT {
                    return Err(RegistryError::ManifestTooLarge {
                        registry: reference.registry.clone(),
                        repository: repository.to_owned(),
                        reference: entry_digest,
                        limit: MANIFEST_LIMIT,
                    });
                }
                let platform_manifest =
                    fetch_manifest(&client, repository, &entry_digest, Some(entry.digest()))?;
                if platform_manifest.kind != ManifestKind::Image {
                    return Err(invalid(format!(
                        "its entry {entry_digest} is a manifest list, not an image"
                    )));
                }
                (platform_manifest.bytes, platform_manifest.digest)
            }
        };
        let invalid = |reason: String| RegistryError::InvalidManifest {
            registry: reference.registry.clone(),
            repository: repository.to_owned(),
            reference: manifest_digest.clone(),
            reason,
        };
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|error| invalid(format!("not a valid image manifest: {error}")))?;
        let config = manifest.config();
        let config_type = config.media_type().to_string();
        if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
            return Err(invalid(format!(
                "not a container image (its config is of type {config_type})"
            )));
        }
        let config_bytes = fetch_config(&client, repository, config)?;
        Ok(RegistrySource {
            client,
            reference: reference.clone(),
            reference_digest,
            config_digest: config.digest().clone(),
            manifest,
            manifest_bytes,
            manifest_digest,
            config_bytes,
        })
    }

    /// The reference the image was opened by.
    pub fn reference(&self) -> &RegistryReference {
        &self.reference
    }

    /// The digest of what the reference names: the manifest list's when
    /// it named one (what docker prints as the pulled digest), otherwise
    /// the image manifest's.
    pub fn reference_digest(&self) -> &str {
        &self.reference_digest
    }

    /// The digest of the image manifest.
    pub fn manifest_digest(&self) -> &str {
        &self.manifest_digest
    }

    /// The image config as the registry sent it (its digest verified).
    pub fn config_bytes(&self) -> &[u8] {
        &self.config_bytes
    }
}

impl ImageSource for RegistrySource {
    fn describe(&self) -> String {
        self.reference.to_string()
    }

    fn manifest(&self) -> &ImageManifest {
        &self.manifest
    }

    fn manifest_bytes(&self) -> Option<&[u8]> {
        Some(&self.manifest_bytes)
    }

    fn open_blob(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send + '_>, ImageError> {
        if descriptor.digest() == &self.config_digest
            && descriptor.size() == self.config_bytes.len() as u64
        {
            return Ok(Box::new(&self.config_bytes[..]));
        }
        let digest = descriptor.digest().to_string();
        let response = self.client.get(
            Target::Blob {
                repository: &self.reference.repository,
                digest: &digest,
            },
            None,
        )?;
        check_content_length(&self.client, &response, &digest, descriptor.size())?;
        Ok(Box::new(BlobReader {
            client: &self.client,
            body: response.into_body().into_reader(),
            digest,
            remaining: descriptor.size(),
        }))
    }
}

/// Asks the registry's `/v2/` endpoint, with `options.login`, whether it
/// lets us in: the login check of [`crate::auth::verify_login`].
pub(crate) fn ping(registry: &str, options: &PullOptions) -> Result<(), RegistryError> {
    let client = RegistryClient::new(registry, options)?;
    client.get(Target::Ping, None)?;
    Ok(())
}

/// Refuses a blob whose announced length is not the declared one (the
/// bytes would be wrong anyway; a huge announced length is a registry
/// trying to fill the disk).
fn check_content_length(
    client: &RegistryClient,
    response: &ureq::http::Response<ureq::Body>,
    digest: &str,
    declared: u64,
) -> Result<(), RegistryError> {
    let announced = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    match announced {
        Some(actual) if actual != declared => Err(RegistryError::BlobSizeMismatch {
            registry: client.registry().to_owned(),
            digest: digest.to_owned(),
            declared,
            actual,
        }),
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ManifestKind {
    Image,
    Index,
}

#[derive(Debug)]
struct FetchedManifest {
    bytes: Vec<u8>,
    digest: String,
    kind: ManifestKind,
}

/// GETs a manifest by tag or digest, bounded in size, and checks its
/// digest: against `expected` when it was asked for by digest, else
/// against the digest the registry announces.
fn fetch_manifest(
    client: &RegistryClient,
    repository: &str,
    reference: &str,
    expected: Option<&Digest>,
) -> Result<FetchedManifest, RegistryError> {
    let accept = [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ]
    .join(", ");
    let target = Target::Manifest {
        repository,
        reference,
    };
    let too_large = |limit| RegistryError::ManifestTooLarge {
        registry: client.registry().to_owned(),
        repository: repository.to_owned(),
        reference: reference.to_owned(),
        limit,
    };
    let response = client.get(target, Some(&accept))?;
    let content_type = header_text(&response, header::CONTENT_TYPE);
    let announced = header_text(
        &response,
        header::HeaderName::from_static("docker-content-digest"),
    )
    .and_then(|digest| Digest::from_str(&digest).ok());
    let bytes = client.read_limited(response, MANIFEST_LIMIT, reference, too_large)?;

    let expected = expected.or(announced.as_ref());
    let digest = match expected {
        Some(expected) => {
            let actual = digest_of(expected.algorithm(), &bytes, expected)?;
            if actual != expected.as_ref() {
                return Err(RegistryError::DigestMismatch {
                    registry: client.registry().to_owned(),
                    repository: repository.to_owned(),
                    what: "manifest",
                    expected: expected.to_string(),
                    actual,
                });
            }
            actual
        }
        None => sha256_digest(&bytes),
    };
    let kind = manifest_kind(content_type.as_deref(), &bytes).map_err(|reason| {
        RegistryError::InvalidManifest {
            registry: client.registry().to_owned(),
            repository: repository.to_owned(),
            reference: reference.to_owned(),
            reason,
        }
    })?;
    Ok(FetchedManifest {
        bytes,
        digest,
        kind,
    })
}

/// GETs the image config into memory and checks its digest.
fn fetch_config(
    client: &RegistryClient,
    repository: &str,
    config: &Descriptor,
) -> Result<Vec<u8>, RegistryError> {
    let digest = config.digest().to_string();
    let declared = config.size();
    let size_error = |actual| RegistryError::BlobSizeMismatch {
        registry: client.registry().to_owned(),
        digest: digest.clone(),
        declared,
        actual,
    };
    if declared > CONFIG_LIMIT {
        return Err(RegistryError::ConfigTooLarge {
            registry: client.registry().to_owned(),
            digest,
            size: declared,
            limit: CONFIG_LIMIT,
        });
    }
    let response = client.get(
        Target::Blob {
            repository,
            digest: &digest,
        },
        None,
    )?;
    check_content_length(client, &response, &digest, declared)?;
    let bytes = client.read_limited(response, declared, &digest, |_| size_error(declared + 1))?;
    let actual = digest_of(config.digest().algorithm(), &bytes, config.digest())?;
    if actual != digest {
        return Err(RegistryError::DigestMismatch {
            registry: client.registry().to_owned(),
            repository: repository.to_owned(),
            what: "image config",
            expected: digest,
            actual,
        });
    }
    Ok(bytes)
}

fn header_text(
    response: &ureq::http::Response<ureq::Body>,
    name: header::HeaderName,
) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Whether `bytes` is an image manifest or a list of them, by media type
/// (the JSON's own, else the response's) or, lacking one, by shape.
fn manifest_kind(content_type: Option<&str>, bytes: &[u8]) -> Result<ManifestKind, String> {
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|error| format!("not JSON: {error}"))?;
    let object = json
        .as_object()
        .ok_or_else(|| "not a JSON object".to_owned())?;
    match object.get("schemaVersion").and_then(|v| v.as_u64()) {
        Some(2) => {}
        Some(1) => {
            return Err("docker image manifest schema 1 is deprecated and not supported".to_owned())
        }
        Some(other) => return Err(format!("unknown schemaVersion {other}")),
        None => return Err("no schemaVersion".to_owned()),
    }
    let media_type = object
        .get("mediaType")
        .and_then(|v| v.as_str())
        .or_else(|| content_type.map(|t| t.split(';').next().unwrap_or(t).trim()))
        .unwrap_or("");
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(ManifestKind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Ok(ManifestKind::Index),
        _ if object.contains_key("manifests") => Ok(ManifestKind::Index),
        _ if object.contains_key("layers") => Ok(ManifestKind::Image),
        other => Err(format!("unsupported manifest type {other:?}")),
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}

/// The digest of `bytes` with `algorithm`, as `algorithm:hex`.
fn digest_of(
    algorithm: &DigestAlgorithm,
    bytes: &[u8],
    named_by: &Digest,
) -> Result<String, RegistryError> {
    let value = match algorithm {
        DigestAlgorithm::Sha256 => hex(&sha2::Sha256::digest(bytes)),
        DigestAlgorithm::Sha384 => hex(&sha2::Sha384::digest(bytes)),
        DigestAlgorithm::Sha512 => hex(&sha2::Sha512::digest(bytes)),
        _ => {
            return Err(RegistryError::UnsupportedDigest {
                digest: named_by.to_string(),
            })
        }
    };
    Ok(format!("{algorithm}:{value}"))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}
