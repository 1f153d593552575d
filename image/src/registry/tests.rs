//! The client against small in-process HTTP servers on 127.0.0.1 that
//! play a registry (well-behaved or not). No root, no network beyond
//! loopback. The real registry is exercised by the e2e crate.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::Digest as _;

use super::*;
use crate::auth::{verify_login, Login};

/// One request as the fake registry saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: String,
    headers: HashMap<String, String>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// What the fake registry does with a request.
enum Reply {
    Send {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Keep the connection open and say nothing.
    Hang,
    /// Announce `length` bytes, send `body`, then stall.
    Stall { length: u64, body: Vec<u8> },
}

impl Reply {
    fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::status(200, body)
    }

    fn status(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply::Send {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Send { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A one-thread-per-connection HTTP/1.1 server that closes every
/// connection after one response.
struct FakeRegistry {
    port: u16,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeRegistry {
    fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let acceptor = {
            let stop = stop.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut workers = Vec::new();
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (handler, seen, stop) = (handler.clone(), seen.clone(), stop.clone());
                    workers.push(std::thread::spawn(move || {
                        serve(stream, &*handler, &seen, &stop)
                    }));
                }
                for worker in workers {
                    let _ = worker.join();
                }
            })
        };
        FakeRegistry {
            port,
            stop,
            seen,
            acceptor: Some(acceptor),
        }
    }

    fn registry(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor up so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn serve(stream: TcpStream, handler: &Handler, seen: &Mutex<Vec<Seen>>, stop: &AtomicBool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let target = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let request = Seen {
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
    };
    seen.lock().unwrap().push(request.clone());
    let mut stream = stream;
    let hang = |stop: &AtomicBool| {
        let started = Instant::now();
        while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    match handler(&request) {
        Reply::Send {
            status,
            headers,
            body,
        } => {
            let mut head = format!("HTTP/1.1 {status} Whatever\r\nConnection: close\r\n");
            let framed = headers.iter().any(|(name, _)| {
                name.eq_ignore_ascii_case("content-length")
                    || name.eq_ignore_ascii_case("transfer-encoding")
            });
            if !framed {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
        Reply::Hang => hang(stop),
        Reply::Stall { length, body } => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
            hang(stop);
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// A small image: its manifest, config and two layers, by digest.
struct TestImage {
    manifest: Vec<u8>,
    blobs: HashMap<String, Vec<u8>>,
    layers: Vec<Vec<u8>>,
}

fn test_image(architecture: &str) -> TestImage {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": architecture, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}, "config": {}
    }))
    .unwrap();
    let layers: Vec<Vec<u8>> = vec![
        format!("first layer of {architecture}").into_bytes(),
        vec![7u8; 200_000],
    ];
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(&config), "size": config.len()},
        "layers": layers.iter().map(|layer| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256(layer), "size": layer.len()
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let mut blobs = HashMap::new();
    blobs.insert(sha256(&config), config);
    for layer in &layers {
        blobs.insert(sha256(layer), layer.clone());
    }
    TestImage {
        manifest,
        blobs,
        layers,
    }
}

/// Serves `image` as `app:1.0` (and by its manifest digest).
fn serve_image(image: &TestImage, seen: &Seen) -> Reply {
    let manifest_digest = sha256(&image.manifest);
    match seen.path.as_str() {
        "/v2/app/manifests/1.0" => Reply::ok(image.manifest.clone())
            .header("Content-Type", OCI_MANIFEST)
            .header("Docker-Content-Digest", &manifest_digest),
        path if path == format!("/v2/app/manifests/{manifest_digest}") => {
            Reply::ok(image.manifest.clone()).header("Content-Type", OCI_MANIFEST)
        }
        path => match path
            .strip_prefix("/v2/app/blobs/")
            .and_then(|digest| image.blobs.get(digest))
        {
            Some(blob) => Reply::ok(blob.clone()),
            None => Reply::status(
                404,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            ),
        },
    }
}

fn reference(registry: &str, tag: &str) -> RegistryReference {
    RegistryReference {
        registry: registry.to_owned(),
        repository: "app".to_owned(),
        tag: Some(tag.to_owned()),
        digest: None,
    }
}

fn quick() -> PullOptions {
    PullOptions {
        timeout: Duration::from_millis(500),
        ..PullOptions::default()
    }
}

fn registry_error(error: ImageError) -> RegistryError {
    match error {
        ImageError::Registry(error) => error,
        other => panic!("not a registry error: {other}"),
    }
}

fn read_all(source: &RegistrySource, descriptor: &Descriptor) -> Vec<u8> {
    let mut bytes = Vec::new();
    source
        .open_blob(descriptor)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

#[test]
fn anonymous_pull_reads_manifest_config_and_layers() {
    let image = Arc::new(test_image("amd64"));
    let server = {
        let image = image.clone();
        FakeRegistry::start(move |seen| serve_image(&image, seen))
    };
    let source = RegistrySource::open(&reference(&server.registry(), "1.0"), &quick()).unwrap();
    assert_eq!(source.manifest_bytes(), Some(&image.manifest[..]));
    assert_eq!(source.manifest_digest(), sha256(&image.manifest));
    assert_eq!(source.reference_digest(), sha256(&image.manifest));
    assert_eq!(source.manifest().layers().len(), 2);
    for (descriptor, expected) in source.manifest().layers().iter().zip(&image.layers) {
        assert_eq!(&read_all(&source, descriptor), expected);
    }
    let config = read_all(&source, source.manifest().config());
    assert_eq!(config, source.config_bytes());
    assert_eq!(source.describe(), format!("{}/app:1.0", server.registry()));

    let seen = server.seen();
    let manifest_request = seen
        .iter()
        .find(|s| s.path == "/v2/app/manifests/1.0")
        .unwrap();
    let accept = manifest_request.header("accept").unwrap();
    for media_type in [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ] {
        assert!(accept.contains(media_type), "{accept}");
    }
    assert!(seen.iter().all(|s| s.header("authorization").is_none()));
    // The config was fetched once, at open, and then served from memory.
    let config_path = format!("/v2/app/blobs/{}", source.manifest().config().digest());
    assert_eq!(seen.iter().filter(|s| s.path == config_path).count(), 1);

    // By digest too.
    let by_digest = RegistryReference {
        tag: None,
        digest: Some(sha256(&image.manifest)),
        ..reference(&server.registry(), "")
    };
    RegistrySource::open(&by_digest, &quick()).unwrap();
}

#[test]
fn blobs_are_read_in_parallel_threads() {
    let image = Arc::new(test_image("amd64"));
    let server = {
        let image = image.clone();
        FakeRegistry::start(move |seen| serve_image(&image, seen))
    };
    let source = RegistrySource::open(&reference(&server.registry(), "1.0"), &quick()).unwrap();
    std::thread::scope(|scope| {
        let readers: Vec<_> = source
            .manifest()
            .layers()
            .iter()
            .map(|layer| scope.spawn(|| read_all(&source, layer)))
            .collect();
        for (reader, expected) in readers.into_iter().zip(&image.layers) {
            assert_eq!(&reader.join().unwrap(), expected);
        }
    });
}

/// A registry that wants `Bearer good-token`, handed out by its token
/// service to alice:secret only.
fn token_registry(image: Arc<TestImage>, port_slot: Arc<Mutex<u16>>) -> FakeRegistry {
    FakeRegistry::start(move |seen| {
        let port = *port_slot.lock().unwrap();
        if seen.path == "/token" {
            let alice = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice:secret")
            );
            return match seen.header("authorization") {
                Some(value) if value == alice => Reply::ok(r#"{"token":"good-token"}"#),
                Some(_) => Reply::status(401, r#"{"details":"wrong password"}"#),
                None => Reply::ok(r#"{"access_token":"anonymous-token"}"#),
            };
        }
        if seen.header("authorization") != Some("Bearer good-token") {
            let scope = seen
                .path
                .strip_prefix("/v2/")
                .and_then(|rest| {
                    rest.split_once("/manifests/")
                        .or(rest.split_once("/blobs/"))
                })
                .map(|(repository, _)| format!(",scope=\"repository:{repository}:pull\""))
                .unwrap_or_default();
            return Reply::status(401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake"{scope}"#),
            );
        }
        if seen.path == "/v2/" {
            return Reply::ok("{}");
        }
        serve_image(&image, seen)
    })
}

#[test]
fn bearer_tokens_are_fetched_with_the_login_and_reused() {
    let image = Arc::new(test_image("amd64"));
    let port = Arc::new(Mutex::new(0));
    let server = token_registry(image.clone(), port.clone());
    *port.lock().unwrap() = server.port;
    let options = PullOptions {
        login: Some(Login::new("alice", "secret")),
        ..quick()
    };
    let source = RegistrySource::open(&reference(&server.registry(), "1.0"), &options).unwrap();
    for (descriptor, expected) in source.manifest().layers().iter().zip(&image.layers) {
        assert_eq!(&read_all(&source, descriptor), expected);
    }
    let seen = server.seen();
    let token_requests: Vec<&Seen> = seen.iter().filter(|s| s.path == "/token").collect();
    assert_eq!(token_requests.len(), 1, "{seen:?}");
    let query = &token_requests[0].query;
    assert!(query.contains("service=fake"), "{query}");
    assert!(query.contains("scope=repository%3Aapp%3Apull"), "{query}");
    assert!(query.contains("account=alice"), "{query}");

    // Anonymous: the anonymous token does not open the repository.
    let error = registry_error(
        RegistrySource::open(&reference(&server.registry(), "1.0"), &quick()).unwrap_err(),
    );
    assert!(
        matches!(error, RegistryError::AuthenticationRequired { ref repository, .. } if repository == "app"),
        "{error}"
    );
    assert!(
        error.to_string().contains("authentication required"),
        "{error}"
    );

    // A wrong password is refused by the token service.
    let wrong = PullOptions {
        login: Some(Login::new("alice", "guess")),
        ..quick()
    };
    let error = registry_error(
        RegistrySource::open(&reference(&server.registry(), "1.0"), &wrong).unwrap_err(),
    );
    assert!(
        matches!(error, RegistryError::CredentialsRefused { status: 401, ref username, .. } if username == "alice"),
        "{error}"
    );

    // verify_login says the same through /v2/.
    verify_login(&server.registry(), &Login::new("alice", "secret"), &quick()).unwrap();
    let error =
        verify_login(&server.registry(), &Login::new("alice", "guess"), &quick()).unwrap_err();
    assert!(
        matches!(error, RegistryError::CredentialsRefused { .. }),
        "{error}"
    );
}

#[test]
fn credentials_are_not_sent_to_a_plain_http_token_service_elsewhere() {
    let server = FakeRegistry::start(|_| {
        Reply::status(401, "").header(
            "WWW-Authenticate",
            r#"Bearer realm="http://auth.invalid/token",service="fake""#,
        )
    });
    let options = PullOptions {
        login: Some(Login::new("alice", "secret")),
        ..quick()
    };
    let error = registry_error(
        RegistrySource::open(&reference(&server.registry(), "1.0"), &options).unwrap_err(),
    );
    assert!(
        matches!(error, RegistryError::InsecureTokenRealm { .. }),
        "{error}"
    );
}

/// A registry with basic auth for bob:hunter2.
fn basic_registry(image: Arc<TestImage>) -> FakeRegistry {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bob:hunter2")
    );
    FakeRegistry::start(move |seen| {
        if seen.header("authorization") != Some(expected.as_str()) {
            return Reply::status(401, "").header("WWW-Authenticate", r#"Basic realm="fake""#);
        }
        if seen.path == "/v2/" {
            return Reply::ok("{}");
        }
        serve_image(&image, seen)
    })
}

#[test]
fn basic_auth_is_answered_with_the_login() {
    let image = Arc::new(test_image("amd64"));
    let server = basic_registry(image.clone());
    let options = PullOptions {
        login: Some(Login::new("bob", "hunter2")),
        ..quick()
    };
    let source = RegistrySource::open(&reference(&server.registry(), "1.0"), &options).unwrap();
    assert_eq!(
        read_all(&source, &source.manifest().layers()[1]),
        image.layers[1]
    );

    let error = registry_error(
        RegistrySource::open(&reference(&server.registry(), "1.0"), &quick()).unwrap_err(),
    );
    assert!(
        matches!(error, RegistryError::AuthenticationRequired { .. }),
        "{error}"
    );
    let wrong = PullOptions {
        login: Some(Login::new("bob", "hunter3")),
        ..quick()
    };
    let error = registry_error(
        RegistrySource::open(&reference(&server.registry(), "1.0"), &wrong).unwrap_err(),
    );
    assert!(
        matches!(error, RegistryError::CredentialsRefused { .. }),
        "{error}"
    );

    verify_login(&server.registry(), &Login::new("bob", "hunter2"), &quick()).unwrap();
    let error = verify_login(&server.registry(), &Login::new("bob", "x"), &quick()).unwrap_err();
    assert!(
        matches!(error, RegistryError::CredentialsRefused { .. }),
        "{error}"
    );
}

#[test]
fn missing_manifests_and_blobs_are_named() {
    let image = Arc::new(test_image("amd64"));
    let server = {
        let image = image.clone();
        FakeRegistry::start(move |seen| {
            if seen.path.contains("/blobs/") && !seen.path.ends_with(&sha256(&image.layers[0])) {
                return Reply::status(404, "");
            }
            serve_image(&image, seen)
        })
    };
    let error = registry_error(
        RegistrySource::open(&reference(&server.registry(), "2.0"), &quick()).unwrap_err(),
    );
    assert!(
        matches!(error, RegistryError::ManifestUnknown { ref reference, .. } if reference == "2.0"),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("manifest unknown") && text.contains("HTTP 404"),
        "{text}"
    );
    assert!(text.contains(&server.registry()), "{text}");

    // The config is missing: open fails naming the blob.
    let error = registry_error(
        RegistrySource::open(&reference(&server.registry(), "1.0"), &quick()).unwrap_err(),
    );
    assert!(
        matches!(error, RegistryError::BlobUnknown { .. }),
        "{error}"
    );
}

#[test]
fn a_registry_that_never_answers_times_out() {
    let server = FakeRegistry::start(|_| Reply::Hang);
    let started = Instant::now();
    let error = registry_error(
        RegistrySource::open(&reference(&server.registry(), "1.0"), &quick()).unwrap_err(),
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(error, RegistryError::Timeout { .. }), "{error}");
    assert!(error.to_string().contains(&server.registry()), "{error}");
}

#[test]
fn a_blob_that_stalls_part_way_times_out() {
    let image = Arc::new(test_image("amd64"));
    let stalled = sha256(&image.layers[1]);
    let server = {
        let image = image.clone();
        FakeRegistry::start(move |seen| {
            if seen.path.ends_with(&stalled) {
                return Reply::Stall {
                    length: image.layers[1].len() as u64,
                    body: image.layers[1][..1000].to_vec(),
                };
            }
            serve_image(&image, seen)
        })
    };
    let source = RegistrySource::open(&reference(&server.registry(), "1.0"), &quick()).unwrap();
    let started = Instant::now();
    let mut reader = source.open_blob(&source.manifest().layers()[1]).unwrap();
    let mut bytes = Vec::new();
    let error = reader.read_to_end(&mut bytes).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
    assert!(error.to_string().contains("did not answer"), "{error}");
    assert_eq!(bytes.len(), 1000);
}

#[test]
fn redirect_loops_are_cut_and_redirects_to_storage_are_followed() {
    let image = Arc::new(test_image("amd64"));
    // Blob storage on another host name of this machine: the registry's
    // credentials must not follow the redirect there.
    let storage = {
        let image = image.clone();
        FakeRegistry::start(move |seen| {
            let digest = seen.path.trim_start_matches("/storage/");
            match image.blobs.get(digest) {
                Some(blob) => Reply::ok(blob.clone()),
                None => Reply::status(404, ""),
            }
        })
    };
    let looping = sha256(&image.layers[0]);
    let storage_port = storage.port;
    let server = {
        let image = image.clone();
        basic_auth_redirecting(image, looping.clone(), storage_port)
    };
    let options = PullOptions {
        login: Some(Login::new("bob", "hunter2")),
        ..quick()
    };
    let source = RegistrySource::open(&reference(&server.registry(), "1.0"), &options).unwrap();
    assert_eq!(
        read_all(&source, &source.manifest().layers()[1]),
        image.layers[1]
    );
    let storage_requests = storage.seen();
    assert!(!storage_requests.is_empty());
    assert!(
        storage_requests
            .iter()
            .all(|s| s.header("authorization").is_none()),
        "{storage_requests:?}"
    );

    let error = match source.open_blob(&source.manifest().layers()[0]) {
        Err(error) => registry_error(error),
        Ok(_) => panic!("a redirect loop was followed"),
    };
    assert!(
        matches!(error, RegistryError::TooManyRedirects { limit: 10, .. }),
        "{error}"
    );
}

/// Basic auth for bob:hunter2; the `looping` blob redirects to itself,
/// the others to `localhost:storage_port`.
fn basic_auth_redirecting(
    image: Arc<TestImage>,
    looping: String,
    storage_port: u16,
) -> FakeRegistry {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bob:hunter2")
    );
    FakeRegistry::start(move |seen| {
        if seen.header("authorization") != Some(expected.as_str()) {
            return Reply::status(401, "").header("WWW-Authenticate", r#"Basic realm="fake""#);
        }
        match seen.path.strip_prefix("/v2/app/blobs/") {
            Some(digest) if digest == looping => {
                Reply::status(307, "").header("Location", &seen.path)
            }
            Some(digest) if image.layers.iter().any(|layer| sha256(layer) == digest) => {
                Reply::status(307, "").header(
                    "Location",
                    &format!("http://localhost:{storage_port}/storage/{digest}"),
                )
            }
            _ => serve_image(&image, seen),
        }
    })
}

#[test]
fn blob_lengths_beyond_the_declared_size_are_refused_or_cut() {
    let image = Arc::new(test_image("amd64"));
    let huge = sha256(&image.layers[0]);
    let chunked = sha256(&image.layers[1]);
    let server = {
        let image = image.clone();
        FakeRegistry::start(move |seen| {
            if seen.path.ends_with(&huge) {
                // Announces far more than declared; the body is never read.
                return Reply::ok(Vec::new()).header("Content-Length", "1099511627776");
            }
            if seen.path.ends_with(&chunked) {
                // No length at all and more bytes than declared.
                let mut body = image.layers[1].clone();
                body.extend_from_slice(b"trailing garbage");
                let mut chunked_body = format!("{:x}\r\n", body.len()).into_bytes();
                chunked_body.extend_from_slice(&body);
                chunked_body.extend_from_slice(b"\r\n0\r\n\r\n");
                return Reply::Send {
                    status: 200,
                    headers: vec![("Transfer-Encoding".to_owned(), "chunked".to_owned())],
                    body: chunked_body,
                };
            }
            serve_image(&image, seen)
        })
    };
    let source = RegistrySource::open(&reference(&server.registry(), "1.0"), &quick()).unwrap();
    let error = match source.open_blob(&source.manifest().layers()[0]) {
        Err(error) => registry_error(error),
        Ok(_) => panic!("a blob larger than declared was accepted"),
    };
    assert!(
        matches!(
            error,
            RegistryError::BlobSizeMismatch {
                actual: 1099511627776,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        read_all(&source, &source.manifest().layers()[1]),
        image.layers[1]
    );
}

fn index_of(entries: &[(&TestImage, &str)]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": entries.iter().map(|(image, platform)| {
            let parts: Vec<&str> = platform.split('/').collect();
            serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": sha256(&image.manifest),
                "size": image.manifest.len(),
                "platform": {"os": parts[0], "architecture": parts[1]},
            })
        }).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[test]
fn manifest_lists_resolve_to_the_wanted_platform() {
    let amd64 = test_image("amd64");
    let arm64 = test_image("arm64");
    let list = index_of(&[(&arm64, "linux/arm64"), (&amd64, "linux/amd64")]);
    let arm_only = index_of(&[(&arm64, "linux/arm64")]);
    let images = Arc::new([amd64, arm64]);
    let server = {
        let images = images.clone();
        FakeRegistry::start(move |seen| match seen.path.as_str() {
            "/v2/app/manifests/multi" => Reply::ok(list.clone()),
            "/v2/app/manifests/arm" => Reply::ok(arm_only.clone()),
            path => {
                for image in images.iter() {
                    if path == format!("/v2/app/manifests/{}", sha256(&image.manifest))
                        || path.starts_with("/v2/app/blobs/")
                            && image.blobs.contains_key(&path["/v2/app/blobs/".len()..])
                    {
                        return serve_image(image, seen);
                    }
                }
                Reply::status(404, "")
            }
        })
    };
    let source = RegistrySource::open(&reference(&server.registry(), "multi"), &quick()).unwrap();
    assert_eq!(source.manifest_digest(), sha256(&images[0].manifest));
    assert_ne!(source.reference_digest(), source.manifest_digest());
    assert_eq!(
        read_all(&source, &source.manifest().layers()[0]),
        images[0].layers[0]
    );

    let arm = PullOptions {
        platform: "linux/arm64".parse().unwrap(),
        ..quick()
    };
    let source = RegistrySource::open(&reference(&server.registry(), "multi"), &arm).unwrap();
    assert_eq!(source.manifest_digest(), sha256(&images[1].manifest));

    let error = registry_error(
        RegistrySource::open(&reference(&server.registry(), "arm"), &quick()).unwrap_err(),
    );
    assert!(
        matches!(error, RegistryError::NoMatchingPlatform { ref available, .. } if available == &["linux/arm64"]),
        "{error}"
    );
    assert!(error.to_string().contains("linux/amd64"), "{error}");
}

#[test]
fn manifests_with_wrong_digests_are_refused() {
    let image = Arc::new(test_image("amd64"));
    let other = test_image("other");
    let wrong_digest = sha256(&other.manifest);
    let server = {
        let image = image.clone();
        let wrong_digest = wrong_digest.clone();
        FakeRegistry::start(move |seen| match seen.path.as_str() {
            // The registry announces a digest its bytes do not have.
            "/v2/app/manifests/lying" => {
                Reply::ok(image.manifest.clone()).header("Docker-Content-Digest", &wrong_digest)
            }
            // Whatever is asked for, the same manifest comes back.
            path if path.starts_with("/v2/app/manifests/") => Reply::ok(image.manifest.clone()),
            _ => serve_image(&image, seen),
        })
    };
    let by_digest = RegistryReference {
        tag: None,
        digest: Some(wrong_digest.clone()),
        ..reference(&server.registry(), "")
    };
    for reference in [by_digest, reference(&server.registry(), "lying")] {
        let error = registry_error(RegistrySource::open(&reference, &quick()).unwrap_err());
        assert!(
            matches!(error, RegistryError::DigestMismatch { what: "manifest", ref expected, .. } if *expected == wrong_digest),
            "{error}"
        );
    }
}

#[test]
fn a_config_with_a_wrong_digest_is_refused() {
    let mut image = test_image("amd64");
    let config_digest = image
        .blobs
        .keys()
        .find(|digest| !image.layers.iter().any(|layer| sha256(layer) == **digest))
        .unwrap()
        .clone();
    let config = image.blobs.get_mut(&config_digest).unwrap();
    let last = config.len() - 2;
    config[last] = b' ';
    let image = Arc::new(image);
    let server = FakeRegistry::start(move |seen| serve_image(&image, seen));
    let error = registry_error(
        RegistrySource::open(&reference(&server.registry(), "1.0"), &quick()).unwrap_err(),
    );
    assert!(
        matches!(
            error,
            RegistryError::DigestMismatch {
                what: "image config",
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn oversized_schema1_and_foreign_manifests_are_refused() {
    let schema1 = br#"{"schemaVersion": 1, "name": "app", "tag": "1.0", "fsLayers": []}"#.to_vec();
    let artifact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json",
                   "digest": sha256(b"{}"), "size": 2},
        "layers": []
    }))
    .unwrap();
    let big_config = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(b"{}"), "size": 1u64 << 40},
        "layers": []
    }))
    .unwrap();
    let server = FakeRegistry::start(move |seen| match seen.path.as_str() {
        "/v2/app/manifests/huge" => Reply::ok(vec![b' '; 5 * 1024 * 1024]),
        "/v2/app/manifests/big-config" => Reply::ok(big_config.clone()),
        "/v2/app/manifests/old" => Reply::ok(schema1.clone()),
        "/v2/app/manifests/chart" => Reply::ok(artifact.clone()),
        _ => Reply::status(404, ""),
    });
    let open = |tag: &str| {
        registry_error(
            RegistrySource::open(&reference(&server.registry(), tag), &quick()).unwrap_err(),
        )
    };
    let error = open("huge");
    assert!(
        matches!(error, RegistryError::ManifestTooLarge { .. }),
        "{error}"
    );
    let error = open("big-config");
    assert!(
        matches!(error, RegistryError::ConfigTooLarge { .. }),
        "{error}"
    );
    let error = open("old");
    assert!(
        matches!(error, RegistryError::InvalidManifest { ref reason, .. } if reason.contains("schema 1")),
        "{error}"
    );
    let error = open("chart");
    assert!(
        matches!(error, RegistryError::InvalidManifest { ref reason, .. } if reason.contains("not a container image")),
        "{error}"
    );
}

#[test]
fn bad_references_are_refused_before_any_request() {
    let cases = [
        RegistryReference {
            repository: "App".to_owned(),
            ..reference("127.0.0.1:1", "1.0")
        },
        RegistryReference {
            repository: "app/../x".to_owned(),
            ..reference("127.0.0.1:1", "1.0")
        },
        reference("127.0.0.1:1", "-tag"),
        reference("127.0.0.1:1", "a/b"),
        reference("127.0.0.1:99999", "1.0"),
        reference("bad host", "1.0"),
        reference("", "1.0"),
        RegistryReference {
            digest: Some("sha256:short".to_owned()),
            ..reference("127.0.0.1:1", "1.0")
        },
    ];
    for case in cases {
        let error = registry_error(RegistrySource::open(&case, &quick()).unwrap_err());
        assert!(
            matches!(error, RegistryError::InvalidReference { .. }),
            "{case}: {error}"
        );
    }
}

#[test]
fn loopback_registries_are_plain_http_and_others_https() {
    for (registry, loopback) in [
        ("localhost:5000", true),
        ("LOCALHOST", true),
        ("127.0.0.1:5000", true),
        ("127.9.8.7", true),
        ("[::1]:5000", true),
        ("[::1]", true),
        ("registry.example:5000", false),
        ("10.0.0.1:5000", false),
        ("[fe80::1]:5000", false),
        ("docker.io", false),
    ] {
        assert_eq!(
            client::RegistryHost::parse(registry).unwrap().is_loopback(),
            loopback,
            "{registry}"
        );
    }
    for bad in ["[::1", "[nonsense]:5", "[::1]x", "host:0", "host:port"] {
        assert!(client::RegistryHost::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn references_print_as_docker_does() {
    let mut reference = reference("127.0.0.1:5000", "1.0");
    assert_eq!(reference.to_string(), "127.0.0.1:5000/app:1.0");
    assert_eq!(reference.manifest_reference(), "1.0");
    reference.digest = Some(format!("sha256:{}", "a".repeat(64)));
    assert_eq!(
        reference.manifest_reference(),
        reference.digest.as_deref().unwrap()
    );
    reference.tag = None;
    reference.digest = None;
    assert_eq!(reference.manifest_reference(), "latest");
}

/// A self-signed certificate for 127.0.0.1 made by the openssl command,
/// as (certificate PEM, key PEM); `None` when openssl is not installed.
fn self_signed_certificate(dir: &std::path::Path) -> Option<(Vec<u8>, Vec<u8>)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    assert!(status.success(), "openssl req failed");
    Some((std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()))
}

#[test]
fn https_certificates_are_checked_unless_tls_verify_is_off() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed_certificate(dir.path()) else {
        eprintln!("skipped: needs the openssl command");
        return;
    };
    let certs = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let config = Arc::new(config);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let registry = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    // Two connections: the refused handshake, then the accepted ping.
    let server = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for _ in 0..2 {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let mut request = Vec::new();
            let mut byte = [0u8];
            while !request.ends_with(b"\r\n\r\n") {
                match tls.read(&mut byte) {
                    Ok(1) => request.push(byte[0]),
                    _ => break,
                }
            }
            if request.is_empty() {
                continue;
            }
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
            requests.push(String::from_utf8_lossy(&request).into_owned());
        }
        requests
    });

    let verified = client::RegistryClient::with_https(&registry, &quick(), true).unwrap();
    let error = verified.get(Target::Ping, None).unwrap_err();
    assert!(
        matches!(error, RegistryError::Unreachable { .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("https://") && text.contains("certificate"),
        "{text}"
    );

    let unverified = PullOptions {
        tls_verify: false,
        ..quick()
    };
    let client = client::RegistryClient::with_https(&registry, &unverified, true).unwrap();
    client.get(Target::Ping, None).unwrap();
    let requests = server.join().unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].starts_with("GET /v2/ "), "{requests:?}");
}
