//! What can go wrong talking to a registry.

use std::time::Duration;

/// A registry refused, failed or misbehaved. Every variant names the
/// registry (`host[:port]` as the caller gave it) and, where there is one,
/// the repository and the manifest or blob it was about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The reference given to the client cannot name anything in a
    /// registry (bad characters, an empty repository, an unknown digest
    /// algorithm).
    #[error("invalid registry reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },

    /// A platform is not of the form `os/arch[/variant]`.
    #[error("invalid platform {platform:?}: expected os/arch[/variant], e.g. linux/amd64")]
    InvalidPlatform {
        /// The platform as given.
        platform: String,
    },

    /// The connection could not be made or broke off (DNS, refused, TLS).
    #[error("cannot reach registry {registry} ({url}): {source}")]
    Unreachable {
        /// The registry.
        registry: String,
        /// The URL being fetched.
        url: String,
        /// The transport's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The registry accepted the connection but did not answer in time.
    #[error("registry {registry} did not answer within {} s ({phase}) for {url}", after.as_secs_f64())]
    Timeout {
        /// The registry.
        registry: String,
        /// The URL being fetched.
        url: String,
        /// Which step timed out (connect, response, ...).
        phase: String,
        /// The timeout that ran out.
        after: Duration,
    },

    /// The registry (or the storage it sent us to) kept redirecting.
    #[error("registry {registry}: more than {limit} redirects for {url}")]
    TooManyRedirects {
        /// The registry.
        registry: String,
        /// The URL first asked for.
        url: String,
        /// How many redirects are followed.
        limit: u32,
    },

    /// The registry wants credentials and none were given.
    #[error("registry {registry}: authentication required for repository {repository} (HTTP 401)")]
    AuthenticationRequired {
        /// The registry.
        registry: String,
        /// The repository asked for (empty for the registry itself).
        repository: String,
    },

    /// The registry or its token service refused the given credentials.
    #[error(
        "registry {registry}: the credentials of user {username:?} were refused (HTTP {status})"
    )]
    CredentialsRefused {
        /// The registry.
        registry: String,
        /// The user name that was refused.
        username: String,
        /// The HTTP status of the refusal.
        status: u16,
    },

    /// The token service refused to give a token.
    #[error("registry {registry}: token service {realm} refused (HTTP {status}): {message}")]
    TokenRefused {
        /// The registry.
        registry: String,
        /// The token service URL.
        realm: String,
        /// The HTTP status.
        status: u16,
        /// What the service said, if anything.
        message: String,
    },

    /// The token service answered with something that is not a token.
    #[error("registry {registry}: token service {realm} sent no usable token: {reason}")]
    InvalidToken {
        /// The registry.
        registry: String,
        /// The token service URL.
        realm: String,
        /// What was wrong with it.
        reason: String,
    },

    /// The registry asks for an authentication scheme that is not
    /// supported, or a malformed challenge.
    #[error("registry {registry}: unsupported authentication challenge {challenge:?}")]
    UnsupportedChallenge {
        /// The registry.
        registry: String,
        /// The `WWW-Authenticate` header.
        challenge: String,
    },

    /// The registry names a token service reached over plain HTTP on
    /// another host: credentials are not sent there.
    #[error("registry {registry}: refusing to send credentials to token service {realm} over plain HTTP")]
    InsecureTokenRealm {
        /// The registry.
        registry: String,
        /// The token service URL.
        realm: String,
    },

    /// The registry refused access (HTTP 403).
    #[error("registry {registry}: access to repository {repository} denied (HTTP 403): {message}")]
    Denied {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// What the registry said.
        message: String,
    },

    /// The manifest (or the whole repository) does not exist.
    #[error(
        "registry {registry}: manifest unknown: {repository}:{reference} (HTTP 404): {message}"
    )]
    ManifestUnknown {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// The tag or digest asked for.
        reference: String,
        /// What the registry said.
        message: String,
    },

    /// A blob that the manifest names does not exist.
    #[error("registry {registry}: blob unknown: {repository}@{digest} (HTTP 404)")]
    BlobUnknown {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// The blob's digest.
        digest: String,
    },

    /// Any other unexpected HTTP status.
    #[error("registry {registry}: HTTP {status} for {url}: {message}")]
    Http {
        /// The registry.
        registry: String,
        /// The URL fetched.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What the registry said (its error codes and messages, or the
        /// start of the body).
        message: String,
    },

    /// A manifest is larger than any real manifest is.
    #[error("registry {registry}: manifest {repository}:{reference} is larger than {limit} bytes")]
    ManifestTooLarge {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// The tag or digest.
        reference: String,
        /// The limit.
        limit: u64,
    },

    /// The manifest cannot be used: not JSON of a known shape, a
    /// deprecated schema, an index inside an index.
    #[error("registry {registry}: manifest {repository}:{reference}: {reason}")]
    InvalidManifest {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// The tag or digest.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Content did not match the digest it was asked for by (a manifest
    /// fetched by digest, or the digest the registry itself announced).
    #[error(
        "registry {registry}: {what} of {repository} has digest {actual}, expected {expected}"
    )]
    DigestMismatch {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// What was fetched ("manifest", "image config").
        what: &'static str,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },

    /// A digest uses an algorithm this client cannot compute.
    #[error("unsupported digest algorithm in {digest}")]
    UnsupportedDigest {
        /// The digest.
        digest: String,
    },

    /// A manifest list or index has no image for the wanted platform.
    #[error(
        "registry {registry}: {repository}:{reference} has no image for {wanted} (it has: {})",
        if available.is_empty() { "no platform-specific images".to_owned() } else { available.join(", ") }
    )]
    NoMatchingPlatform {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// The tag or digest.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms the list has.
        available: Vec<String>,
    },

    /// The registry announced (or sent) a blob length other than the one
    /// its descriptor declares.
    #[error("registry {registry}: blob {digest} is {actual} bytes, {declared} expected")]
    BlobSizeMismatch {
        /// The registry.
        registry: String,
        /// The blob.
        digest: String,
        /// The size the descriptor declares.
        declared: u64,
        /// The size the registry announced.
        actual: u64,
    },

    /// The manifest declares an image config larger than any real one;
    /// configs are held in memory.
    #[error("registry {registry}: image config {digest} declares {size} bytes, more than {limit}")]
    ConfigTooLarge {
        /// The registry.
        registry: String,
        /// The config blob.
        digest: String,
        /// Its declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}
