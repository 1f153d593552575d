//! berth-image's registry client against a real registry (Debian's
//! docker-registry) holding images that skopeo pushed: every blob read
//! back and checked against the manifest's digests and sizes. Needs no
//! root; skipped when docker-registry, skopeo or htpasswd are missing.

use std::io::Read;
use std::time::Duration;

use berth_e2e::registry::{http_get, sha256_digest, OciLayout, Push, SampleImage, TestRegistry};
use berth_e2e::require_registry_tools;
use berth_image::auth::{self, Credentials};
use berth_image::{
    ImageError, ImageSource, Login, PullOptions, RegistryError, RegistryReference, RegistrySource,
};

fn reference(registry: &TestRegistry, repository: &str, tag: &str) -> RegistryReference {
    RegistryReference {
        registry: registry.address().to_owned(),
        repository: repository.to_owned(),
        tag: Some(tag.to_owned()),
        digest: None,
    }
}

fn options(login: Option<Login>) -> PullOptions {
    PullOptions {
        login,
        timeout: Duration::from_secs(10),
        ..PullOptions::default()
    }
}

/// Reads the config and every layer through the source and checks each
/// against its descriptor's sha256 and size; returns the config bytes.
fn read_and_verify_every_blob(source: &RegistrySource) -> Vec<u8> {
    let manifest = source.manifest();
    let mut config = Vec::new();
    for descriptor in std::iter::once(manifest.config()).chain(manifest.layers()) {
        let mut blob = Vec::new();
        source
            .open_blob(descriptor)
            .unwrap_or_else(|e| panic!("open {}: {e}", descriptor.digest()))
            .read_to_end(&mut blob)
            .unwrap_or_else(|e| panic!("read {}: {e}", descriptor.digest()));
        assert_eq!(
            blob.len() as u64,
            descriptor.size(),
            "{}",
            descriptor.digest()
        );
        assert_eq!(
            sha256_digest(&blob),
            descriptor.digest().to_string(),
            "the bytes of {} do not match its digest",
            descriptor.digest()
        );
        if descriptor == manifest.config() {
            config = blob;
        }
    }
    assert_eq!(config, source.config_bytes());
    config
}

fn registry_error(result: Result<RegistrySource, ImageError>) -> RegistryError {
    match result {
        Err(ImageError::Registry(error)) => error,
        Err(other) => panic!("not a registry error: {other}"),
        Ok(source) => panic!("{} opened", source.describe()),
    }
}

fn architecture_of(config: &[u8]) -> String {
    let config: serde_json::Value = serde_json::from_slice(config).expect("the config is JSON");
    config["architecture"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn pulls_a_multi_layer_image_anonymously_as_oci_and_docker_schema2() {
    require_registry_tools!();
    let registry = TestRegistry::start();
    let image = SampleImage::busybox_layers("amd64");
    let mut layout = OciLayout::new();
    layout.add_image("base", &image);
    registry.push(&layout, "base", "test/base:oci", Push::default());
    registry.push(
        &layout,
        "base",
        "test/base:docker",
        Push {
            docker_format: true,
            ..Push::default()
        },
    );

    // Pushed unchanged: the very manifest we made.
    let source =
        RegistrySource::open(&reference(&registry, "test/base", "oci"), &options(None)).unwrap();
    assert_eq!(source.manifest_bytes(), Some(&image.manifest[..]));
    assert_eq!(source.manifest_digest(), image.manifest_digest());
    assert_eq!(source.reference_digest(), image.manifest_digest());
    assert_eq!(source.manifest().layers().len(), 3);
    assert_eq!(read_and_verify_every_blob(&source), image.config);

    // Converted by skopeo to docker's media types.
    let source =
        RegistrySource::open(&reference(&registry, "test/base", "docker"), &options(None)).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(source.manifest_bytes().unwrap()).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(source.manifest().layers().len(), 3);
    let config = read_and_verify_every_blob(&source);
    assert_eq!(architecture_of(&config), "amd64");

    // By digest, as `repo@sha256:...`.
    let by_digest = RegistryReference {
        tag: None,
        digest: Some(image.manifest_digest()),
        ..reference(&registry, "test/base", "")
    };
    let source = RegistrySource::open(&by_digest, &options(None)).unwrap();
    assert_eq!(source.manifest_digest(), image.manifest_digest());

    // Layers read in parallel, as the store reads them.
    std::thread::scope(|scope| {
        let readers: Vec<_> = source
            .manifest()
            .layers()
            .iter()
            .map(|layer| {
                let source = &source;
                scope.spawn(move || {
                    let mut blob = Vec::new();
                    source
                        .open_blob(layer)
                        .unwrap()
                        .read_to_end(&mut blob)
                        .unwrap();
                    sha256_digest(&blob) == layer.digest().to_string()
                })
            })
            .collect();
        for reader in readers {
            assert!(reader.join().unwrap());
        }
    });

    let error = registry_error(RegistrySource::open(
        &reference(&registry, "test/base", "missing"),
        &options(None),
    ));
    assert!(
        matches!(error, RegistryError::ManifestUnknown { .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("manifest unknown") && text.contains(registry.address()),
        "{text}"
    );
}

#[test]
fn pulls_with_basic_auth_and_refuses_wrong_or_missing_credentials() {
    require_registry_tools!();
    let registry = TestRegistry::start_with_basic_auth("tester", "correct:horse");
    let image = SampleImage::busybox_layers("amd64");
    let mut layout = OciLayout::new();
    layout.add_image("base", &image);
    registry.push(&layout, "base", "private/base:1", Push::default());
    let target = reference(&registry, "private/base", "1");

    let error = registry_error(RegistrySource::open(&target, &options(None)));
    assert!(
        matches!(error, RegistryError::AuthenticationRequired { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("authentication required"),
        "{error}"
    );
    let wrong = Login::new("tester", "wrong:horse");
    let error = registry_error(RegistrySource::open(&target, &options(Some(wrong.clone()))));
    assert!(
        matches!(error, RegistryError::CredentialsRefused { .. }),
        "{error}"
    );

    // The login as `berth login` would store it, read back from the file.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("auth.json");
    let right = Login::new("tester", "correct:horse");
    auth::verify_login(registry.address(), &right, &options(None)).unwrap();
    let error = auth::verify_login(registry.address(), &wrong, &options(None)).unwrap_err();
    assert!(
        matches!(error, RegistryError::CredentialsRefused { .. }),
        "{error}"
    );
    auth::login(&file, registry.address(), &right.username, &right.password).unwrap();
    let login = Credentials::load(&[&file])
        .unwrap()
        .get(registry.address())
        .cloned();
    assert_eq!(login.as_ref(), Some(&right));

    let source = RegistrySource::open(&target, &options(login)).unwrap();
    assert_eq!(source.manifest_digest(), image.manifest_digest());
    assert_eq!(read_and_verify_every_blob(&source), image.config);
}

#[test]
fn manifest_lists_resolve_to_linux_amd64_or_the_asked_platform() {
    require_registry_tools!();
    let registry = TestRegistry::start();
    let amd64 = SampleImage::busybox_layers("amd64");
    let arm64 = SampleImage::tiny("arm64");
    let ppc = SampleImage::tiny("ppc64le");
    let mut layout = OciLayout::new();
    let index = layout.add_index("multi", &[&arm64, &amd64]);
    layout.add_index("no-amd64", &[&arm64, &ppc]);
    let all = Push {
        all: true,
        ..Push::default()
    };
    registry.push(&layout, "multi", "test/multi:oci", all);
    registry.push(
        &layout,
        "multi",
        "test/multi:docker",
        Push {
            docker_format: true,
            ..all
        },
    );
    registry.push(&layout, "no-amd64", "test/multi:no-amd64", all);

    let source =
        RegistrySource::open(&reference(&registry, "test/multi", "oci"), &options(None)).unwrap();
    assert_eq!(source.reference_digest(), sha256_digest(&index));
    assert_eq!(source.manifest_digest(), amd64.manifest_digest());
    assert_eq!(read_and_verify_every_blob(&source), amd64.config);

    let source = RegistrySource::open(
        &reference(&registry, "test/multi", "docker"),
        &options(None),
    )
    .unwrap();
    // What the tag names is a docker manifest list now.
    let (status, list) = http_get(
        registry.address(),
        "/v2/test/multi/manifests/docker",
        Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    )
    .expect("the registry answers");
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
    assert_eq!(
        list["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert_eq!(
        architecture_of(&read_and_verify_every_blob(&source)),
        "amd64"
    );

    let arm = PullOptions {
        platform: "linux/arm64".parse().unwrap(),
        ..options(None)
    };
    let source = RegistrySource::open(&reference(&registry, "test/multi", "oci"), &arm).unwrap();
    assert_eq!(source.manifest_digest(), arm64.manifest_digest());
    assert_eq!(read_and_verify_every_blob(&source), arm64.config);

    let error = registry_error(RegistrySource::open(
        &reference(&registry, "test/multi", "no-amd64"),
        &options(None),
    ));
    match &error {
        RegistryError::NoMatchingPlatform {
            wanted, available, ..
        } => {
            assert_eq!(wanted, "linux/amd64");
            assert_eq!(available, &["linux/arm64", "linux/ppc64le"]);
        }
        other => panic!("expected no matching platform, got {other}"),
    }
}

#[test]
fn a_stopped_registry_is_a_clear_error_within_the_timeout() {
    require_registry_tools!();
    let registry = TestRegistry::start();
    let target = reference(&registry, "test/base", "1");
    // SIGSTOP: the port still accepts connections (the kernel's backlog)
    // but nothing answers.
    let pid = registry.pid() as i32;
    assert!(berth_e2e::kill(pid, libc::SIGSTOP));
    let started = std::time::Instant::now();
    let result = RegistrySource::open(
        &target,
        &PullOptions {
            timeout: Duration::from_secs(1),
            ..PullOptions::default()
        },
    );
    let elapsed = started.elapsed();
    assert!(berth_e2e::kill(pid, libc::SIGCONT));
    let error = registry_error(result);
    assert!(matches!(error, RegistryError::Timeout { .. }), "{error}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert!(error.to_string().contains(registry.address()), "{error}");
}
