//! The HTTP side of the OCI distribution API (v2), read-only: GET of
//! `/v2/`, manifests and blobs, with the authentication dance of docker
//! registries (a 401 with a `WWW-Authenticate` challenge, then a bearer
//! token from the named token service, or basic auth) and bounded time,
//! redirects and body sizes.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::RwLock;
use std::time::Duration;

use base64::Engine as _;
use ureq::config::RedirectAuthHeaders;
use ureq::http::{header, Response};
use ureq::tls::TlsConfig;
use ureq::{Agent, Body, Proxy};

use super::challenge::{parse_challenges, Challenge};
use super::{PullOptions, RegistryError};
use crate::auth::Login;

/// Error bodies and token responses are small; a registry that sends
/// more is not read further.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;
const TOKEN_BODY_LIMIT: u64 = 1024 * 1024;

/// What a request is about, for URLs, token scopes and errors.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// `/v2/`: is this a registry, are the credentials right.
    Ping,
    Manifest {
        repository: &'a str,
        reference: &'a str,
    },
    Blob {
        repository: &'a str,
        digest: &'a str,
    },
}

impl Target<'_> {
    fn path(&self) -> String {
        match self {
            Target::Ping => "/v2/".to_owned(),
            Target::Manifest {
                repository,
                reference,
            } => format!("/v2/{repository}/manifests/{reference}"),
            Target::Blob { repository, digest } => format!("/v2/{repository}/blobs/{digest}"),
        }
    }

    fn repository(&self) -> &str {
        match self {
            Target::Ping => "",
            Target::Manifest { repository, .. } | Target::Blob { repository, .. } => repository,
        }
    }
}

/// A connection to one registry, shared by the threads that read its
/// blobs. The authorization header it has earned is reused by every
/// request, and earned again when the registry stops accepting it.
#[derive(Debug)]
pub(crate) struct RegistryClient {
    agent: Agent,
    /// The registry as the caller named it, for errors.
    registry: String,
    /// `scheme://host[:port]` of the API.
    base_url: String,
    login: Option<Login>,
    authorization: RwLock<Option<String>>,
    timeout: Duration,
    max_redirects: u32,
}

impl RegistryClient {
    pub fn new(registry: &str, options: &PullOptions) -> Result<Self, RegistryError> {
        let loopback = RegistryHost::parse(registry)?.is_loopback();
        // As docker does: registries on this machine are plain HTTP and
        // never go through a proxy; everything else is HTTPS.
        Self::with_https(registry, options, !loopback)
    }

    /// [`RegistryClient::new`] with the scheme chosen by the caller (tests
    /// reach an HTTPS server on loopback with it).
    pub(crate) fn with_https(
        registry: &str,
        options: &PullOptions,
        https: bool,
    ) -> Result<Self, RegistryError> {
        let host = RegistryHost::parse(registry)?;
        let loopback = host.is_loopback();
        let scheme = if https { "https" } else { "http" };
        let timeout = Some(options.timeout);
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(options.max_redirects)
            .redirect_auth_headers(RedirectAuthHeaders::SameHost)
            .user_agent(options.user_agent.as_str())
            .timeout_resolve(timeout)
            .timeout_connect(timeout)
            .timeout_send_request(timeout)
            .timeout_recv_response(timeout)
            .timeout_per_read(timeout)
            .tls_config(
                TlsConfig::builder()
                    .disable_verification(!options.tls_verify)
                    .build(),
            )
            .proxy(if loopback {
                None
            } else {
                Proxy::try_from_env()
            })
            .build();
        Ok(RegistryClient {
            agent: config.into(),
            registry: registry.to_owned(),
            base_url: format!("{scheme}://{}", host.api_host()),
            login: options.login.clone(),
            authorization: RwLock::new(None),
            timeout: options.timeout,
            max_redirects: options.max_redirects,
        })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// GET `target`, authenticating when the registry asks to. Returns
    /// a response with a 2xx status; every other status is an error.
    pub fn get(
        &self,
        target: Target<'_>,
        accept: Option<&str>,
    ) -> Result<Response<Body>, RegistryError> {
        let url = format!("{}{}", self.base_url, target.path());
        let mut authenticated = false;
        loop {
            let mut request = self.agent.get(&url);
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            let authorization = self.current_authorization();
            if let Some(authorization) = &authorization {
                request = request.header(header::AUTHORIZATION, authorization.as_str());
            }
            let response = request
                .call()
                .map_err(|error| self.transport_error(&url, error))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status.as_u16() == 401 && !authenticated {
                let challenges: Vec<String> = response
                    .headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                    .collect();
                if !challenges.is_empty() {
                    self.authenticate(&challenges, target)?;
                    authenticated = true;
                    continue;
                }
            }
            return Err(self.status_error(target, &url, response));
        }
    }

    fn current_authorization(&self) -> Option<String> {
        match self.authorization.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_authorization(&self, value: String) {
        let mut guard = match self.authorization.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Some(value);
    }

    /// Answers the registry's challenge: a bearer token from its token
    /// service (with basic credentials when there are some), or basic
    /// credentials themselves.
    fn authenticate(&self, headers: &[String], target: Target<'_>) -> Result<(), RegistryError> {
        let unsupported = || RegistryError::UnsupportedChallenge {
            registry: self.registry.clone(),
            challenge: headers.join(", "),
        };
        let challenges: Vec<Challenge> = headers
            .iter()
            .filter_map(|header| parse_challenges(header))
            .flatten()
            .collect();
        let pick = |scheme: &str| challenges.iter().find(|c| c.scheme == scheme);
        if let Some(bearer) = pick("bearer") {
            let realm = bearer.param("realm").ok_or_else(unsupported)?;
            let token = self.fetch_token(realm, bearer, target)?;
            self.set_authorization(format!("Bearer {token}"));
            return Ok(());
        }
        if pick("basic").is_some() {
            let Some(login) = &self.login else {
                return Err(self.authentication_required(target));
            };
            self.set_authorization(login.basic_authorization());
            return Ok(());
        }
        Err(unsupported())
    }

    fn fetch_token(
        &self,
        realm: &str,
        challenge: &Challenge,
        target: Target<'_>,
    ) -> Result<String, RegistryError> {
        let realm_url: ureq::http::Uri =
            realm
                .parse()
                .map_err(|_| RegistryError::UnsupportedChallenge {
                    registry: self.registry.clone(),
                    challenge: format!("Bearer realm={realm:?}"),
                })?;
        let realm_is_loopback = realm_url
            .host()
            .and_then(|host| RegistryHost::parse(host).ok())
            .is_some_and(|host| host.is_loopback());
        match realm_url.scheme_str() {
            Some("https") => {}
            Some("http") if self.login.is_none() || realm_is_loopback => {}
            Some("http") => {
                return Err(RegistryError::InsecureTokenRealm {
                    registry: self.registry.clone(),
                    realm: realm.to_owned(),
                })
            }
            _ => {
                return Err(RegistryError::UnsupportedChallenge {
                    registry: self.registry.clone(),
                    challenge: format!("Bearer realm={realm:?}"),
                })
            }
        }
        let mut request = self.agent.get(realm);
        if let Some(service) = challenge.param("service") {
            request = request.query("service", service);
        }
        let own_scope = match target {
            Target::Ping => None,
            Target::Manifest { repository, .. } | Target::Blob { repository, .. } => {
                Some(format!("repository:{repository}:pull"))
            }
        };
        if let Some(scope) = challenge.param("scope").map(str::to_owned).or(own_scope) {
            request = request.query("scope", scope);
        }
        if let Some(login) = &self.login {
            request = request
                .query("account", &login.username)
                .header(header::AUTHORIZATION, login.basic_authorization());
        }
        let response = request
            .call()
            .map_err(|error| self.transport_error(realm, error))?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            if let (Some(login), 401 | 403) = (&self.login, status) {
                return Err(RegistryError::CredentialsRefused {
                    registry: self.registry.clone(),
                    username: login.username.clone(),
                    status,
                });
            }
            return Err(RegistryError::TokenRefused {
                registry: self.registry.clone(),
                realm: realm.to_owned(),
                status,
                message: error_message(response),
            });
        }
        let invalid = |reason: String| RegistryError::InvalidToken {
            registry: self.registry.clone(),
            realm: realm.to_owned(),
            reason,
        };
        let body = self.read_limited(response, TOKEN_BODY_LIMIT, realm, |limit| {
            invalid(format!("the response is larger than {limit} bytes"))
        })?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|error| invalid(error.to_string()))?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| invalid("no token in the response".to_owned()))?;
        // It goes into a header: refuse what would split or corrupt it.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "the token has characters a header cannot hold".to_owned(),
            ));
        }
        Ok(token)
    }

    /// Reads a whole (small) body; `too_large` makes the error for a body
    /// longer than `limit`.
    pub fn read_limited(
        &self,
        response: Response<Body>,
        limit: u64,
        what: &str,
        too_large: impl FnOnce(u64) -> RegistryError,
    ) -> Result<Vec<u8>, RegistryError> {
        match response
            .into_body()
            .into_with_config()
            .limit(limit)
            .read_to_vec()
        {
            Ok(body) => Ok(body),
            Err(ureq::Error::BodyExceedsLimit(limit)) => Err(too_large(limit)),
            Err(error) => Err(self.transport_error(what, error)),
        }
    }

    fn authentication_required(&self, target: Target<'_>) -> RegistryError {
        match &self.login {
            Some(login) => RegistryError::CredentialsRefused {
                registry: self.registry.clone(),
                username: login.username.clone(),
                status: 401,
            },
            None => RegistryError::AuthenticationRequired {
                registry: self.registry.clone(),
                repository: target.repository().to_owned(),
            },
        }
    }

    fn status_error(
        &self,
        target: Target<'_>,
        url: &str,
        response: Response<Body>,
    ) -> RegistryError {
        let status = response.status().as_u16();
        let registry = self.registry.clone();
        match (status, target) {
            (401, _) => self.authentication_required(target),
            (403, _) => RegistryError::Denied {
                registry,
                repository: target.repository().to_owned(),
                message: error_message(response),
            },
            (
                404,
                Target::Manifest {
                    repository,
                    reference,
                },
            ) => RegistryError::ManifestUnknown {
                registry,
                repository: repository.to_owned(),
                reference: reference.to_owned(),
                message: error_message(response),
            },
            (404, Target::Blob { repository, digest }) => RegistryError::BlobUnknown {
                registry,
                repository: repository.to_owned(),
                digest: digest.to_owned(),
            },
            _ => RegistryError::Http {
                registry,
                url: url.to_owned(),
                status,
                message: error_message(response),
            },
        }
    }

    /// The error for a request that got no HTTP answer, or whose body
    /// broke off.
    pub fn transport_error(&self, url: &str, error: ureq::Error) -> RegistryError {
        match error {
            ureq::Error::Timeout(phase) => RegistryError::Timeout {
                registry: self.registry.clone(),
                url: url.to_owned(),
                phase: phase.to_string(),
                after: self.timeout,
            },
            ureq::Error::Io(error) if error.kind() == io::ErrorKind::TimedOut => {
                RegistryError::Timeout {
                    registry: self.registry.clone(),
                    url: url.to_owned(),
                    phase: "read".to_owned(),
                    after: self.timeout,
                }
            }
            ureq::Error::TooManyRedirects => RegistryError::TooManyRedirects {
                registry: self.registry.clone(),
                url: url.to_owned(),
                limit: self.max_redirects,
            },
            other => RegistryError::Unreachable {
                registry: self.registry.clone(),
                url: url.to_owned(),
                source: Box::new(other),
            },
        }
    }

    /// The error for a blob body that broke off, as an `io::Error` (the
    /// kind kept, the registry's error inside).
    pub fn body_error(&self, digest: &str, error: io::Error) -> io::Error {
        let kind = error.kind();
        // Unwraps the ureq error (a timeout) that the body reader wrapped.
        let error = self.transport_error(&format!("blob {digest}"), ureq::Error::from(error));
        let kind = match error {
            RegistryError::Timeout { .. } => io::ErrorKind::TimedOut,
            _ => kind,
        };
        io::Error::new(kind, error)
    }
}

/// What a registry said in an error response: the codes and messages of
/// an OCI error envelope, or the start of the body.
fn error_message(response: Response<Body>) -> String {
    let body = response
        .into_body()
        .into_with_config()
        .limit(ERROR_BODY_LIMIT)
        .read_to_vec()
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<EnvelopeError>,
    }
    #[derive(serde::Deserialize)]
    struct EnvelopeError {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(&body) {
        if !envelope.errors.is_empty() {
            return envelope
                .errors
                .iter()
                .map(
                    |error| match (error.code.is_empty(), error.message.is_empty()) {
                        (false, false) => format!("{}: {}", error.code, error.message),
                        (false, true) => error.code.clone(),
                        _ => error.message.clone(),
                    },
                )
                .collect::<Vec<_>>()
                .join("; ");
        }
    }
    let text = String::from_utf8_lossy(&body);
    let text: String = text.trim().chars().take(200).collect();
    if text.is_empty() {
        "no details".to_owned()
    } else {
        text.replace(['\n', '\r'], " ")
    }
}

impl Login {
    /// The value of a basic `Authorization` header for this login.
    pub(crate) fn basic_authorization(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// A registry's `host[:port]`, checked.
#[derive(Debug)]
pub(crate) struct RegistryHost<'a> {
    host: &'a str,
    port: Option<&'a str>,
}

impl<'a> RegistryHost<'a> {
    pub fn parse(registry: &'a str) -> Result<Self, RegistryError> {
        let invalid = |reason: &str| RegistryError::InvalidReference {
            reference: registry.to_owned(),
            reason: reason.to_owned(),
        };
        let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
            let (address, rest) = rest
                .split_once(']')
                .ok_or_else(|| invalid("an IPv6 address without its closing ]"))?;
            address
                .parse::<Ipv6Addr>()
                .map_err(|_| invalid("not an IPv6 address in brackets"))?;
            let port = match rest {
                "" => None,
                _ => Some(
                    rest.strip_prefix(':')
                        .ok_or_else(|| invalid("text after the IPv6 address"))?,
                ),
            };
            (&registry[..address.len() + 2], port)
        } else {
            match registry.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (registry, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("no registry host"));
        }
        if !host.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(invalid("a registry host has only letters, digits, . and -"));
        }
        if let Some(port) = port {
            if port.parse::<u16>().map_or(true, |port| port == 0) {
                return Err(invalid("the registry port is not a number from 1 to 65535"));
            }
        }
        Ok(RegistryHost { host, port })
    }

    /// `localhost`, 127.0.0.0/8 or `[::1]`.
    pub fn is_loopback(&self) -> bool {
        if self.host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        if let Ok(address) = self.host.parse::<Ipv4Addr>() {
            return address.is_loopback();
        }
        self.host
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|address| address.parse::<Ipv6Addr>().ok())
            .is_some_and(|address| address.is_loopback())
    }

    /// The host that serves the API: Docker Hub's name differs from the
    /// one in image references.
    fn api_host(&self) -> String {
        let host = match self.host {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            other => other,
        };
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }
}
