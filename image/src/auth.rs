//! Registry credentials in docker's `config.json` format, the format
//! docker, podman, skopeo and buildah all read:
//!
//! ```json
//! { "auths": { "registry.example:5000": { "auth": "<base64 of user:password>" } } }
//! ```
//!
//! [`Credentials::load`] reads several such files (the first that has a
//! registry wins); [`login`] and [`logout`] change one file atomically,
//! keeping everything else in it; [`verify_login`] asks the registry
//! whether a user name and password are right before they are stored.
//!
//! ```
//! use berth_image::auth::{self, Credentials};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let file = dir.path().join("auth.json");
//! auth::login(&file, "registry.example:5000", "alice", "s3cret")?;
//!
//! let credentials = Credentials::load(&[&file])?;
//! let login = credentials.get("registry.example:5000").expect("stored");
//! assert_eq!(login.username, "alice");
//!
//! assert!(auth::logout(&file, "registry.example:5000")?);
//! assert!(Credentials::load(&[&file])?.get("registry.example:5000").is_none());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use berth_state::{replace_file, Durability, FileLock};

use crate::registry::{self, PullOptions, RegistryError};

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The user name.
    pub username: String,
    /// The password (or an access token used as one).
    pub password: String,
}

impl Login {
    /// A login from a user name and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Login {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A credentials file could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// Reading, writing or locking the file failed.
    #[error("{op} credentials file {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The file is not JSON of docker's config format.
    #[error("credentials file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// One registry's entry cannot be used.
    #[error("credentials file {}: entry for {registry}: {reason}", path.display())]
    InvalidEntry {
        /// The file.
        path: PathBuf,
        /// The entry's key.
        registry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl CredentialsError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        CredentialsError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// The logins found in one or more credentials files.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// (normalized registry, login), earlier files first.
    logins: Vec<(String, Login)>,
}

impl Credentials {
    /// The files container tools read, in order of precedence:
    /// `$REGISTRY_AUTH_FILE` when set, then `own_file` (the calling
    /// tool's own file, where [`login`] writes), then docker's
    /// (`$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`).
    pub fn standard_paths(own_file: &Path) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if let Some(file) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|f| !f.is_empty()) {
            paths.push(PathBuf::from(file));
        }
        paths.push(own_file.to_owned());
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            paths.push(Path::new(&dir).join("config.json"));
        } else if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            paths.push(Path::new(&home).join(".docker/config.json"));
        }
        paths
    }

    /// Reads `paths` in order; a missing file is skipped, an unreadable
    /// or malformed one is an error. Entries with only an identity token
    /// (OAuth refresh tokens) or naming a repository rather than a
    /// registry are not used.
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Self, CredentialsError> {
        let mut credentials = Credentials::default();
        for path in paths {
            let path = path.as_ref();
            let Some(config) = read_config(path)? else {
                continue;
            };
            let Some(auths) = config.get("auths").and_then(|auths| auths.as_object()) else {
                continue;
            };
            for (key, entry) in auths {
                let Some(registry) = normalize_key(key) else {
                    continue;
                };
                if let Some(login) = parse_entry(path, key, entry)? {
                    credentials.logins.push((registry, login));
                }
            }
        }
        Ok(credentials)
    }

    /// The login for `registry` (`host[:port]`; Docker Hub by any of its
    /// names), from the first file that has one.
    pub fn get(&self, registry: &str) -> Option<&Login> {
        let registry = normalize_registry(registry);
        self.logins
            .iter()
            .find(|(key, _)| *key == registry)
            .map(|(_, login)| login)
    }
}

/// Stores `username` and `password` for `registry` in `path` (created
/// 0600, its directory 0700, if missing), replacing the file atomically
/// and keeping its other entries and settings.
pub fn login(
    path: &Path,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<(), CredentialsError> {
    update_config(path, |auths| {
        let registry = normalize_registry(registry);
        auths.retain(|key, _| normalize_key(key).as_deref() != Some(registry.as_str()));
        let pair = format!("{username}:{password}");
        auths.insert(
            storage_key(&registry),
            serde_json::json!({ "auth": base64::engine::general_purpose::STANDARD.encode(pair) }),
        );
        true
    })
    .map(|_| ())
}

/// Removes `registry`'s login from `path`. Returns whether there was one.
pub fn logout(path: &Path, registry: &str) -> Result<bool, CredentialsError> {
    update_config(path, |auths| {
        let registry = normalize_registry(registry);
        let before = auths.len();
        auths.retain(|key, _| normalize_key(key).as_deref() != Some(registry.as_str()));
        auths.len() != before
    })
}

/// Checks `login` against `registry` by asking its `/v2/` endpoint (with
/// a token from its token service when it uses them). Succeeds when the
/// registry lets the user in, or needs no login at all.
pub fn verify_login(
    registry: &str,
    login: &Login,
    options: &PullOptions,
) -> Result<(), RegistryError> {
    let options = PullOptions {
        login: Some(login.clone()),
        ..options.clone()
    };
    registry::ping(registry, &options)
}

/// Reads `path` as a JSON object; `None` when it does not exist.
fn read_config(
    path: &Path,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, CredentialsError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(CredentialsError::io("read", path, error)),
    };
    // An empty file is what some tools leave behind after a logout.
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(serde_json::Map::new()));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| CredentialsError::Parse {
            path: path.to_owned(),
            source,
        })
}

/// Read-modify-write of `path`'s `auths` under a lock beside it; the file
/// is written only when `change` says it changed something.
fn update_config(
    path: &Path,
    change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>) -> bool,
) -> Result<bool, CredentialsError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| CredentialsError::io("create the directory of", path, error))?;
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let lock_path = dir.join(format!(".{file_name}.lock"));
    let _lock = FileLock::exclusive(&lock_path)
        .map_err(|error| CredentialsError::io("lock", &lock_path, error))?;

    let mut config = read_config(path)?.unwrap_or_default();
    let auths = config
        .entry("auths")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    let Some(auths) = auths.as_object_mut() else {
        return Err(CredentialsError::InvalidEntry {
            path: path.to_owned(),
            registry: "auths".to_owned(),
            reason: "\"auths\" is not an object",
        });
    };
    if !change(auths) {
        return Ok(false);
    }
    let mut bytes =
        serde_json::to_vec_pretty(&config).map_err(|source| CredentialsError::Parse {
            path: path.to_owned(),
            source,
        })?;
    bytes.push(b'\n');
    replace_file(path, &bytes, Durability::Full)
        .map_err(|error| CredentialsError::io("write", path, error))?;
    Ok(true)
}

fn parse_entry(
    path: &Path,
    key: &str,
    entry: &serde_json::Value,
) -> Result<Option<Login>, CredentialsError> {
    let invalid = |reason| CredentialsError::InvalidEntry {
        path: path.to_owned(),
        registry: key.to_owned(),
        reason,
    };
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(|value| value.as_str())
            .filter(|value| !value.is_empty())
    };
    if let Some(auth) = field("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| invalid("\"auth\" is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid("\"auth\" is not UTF-8"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| invalid("\"auth\" is not user:password"))?;
        return Ok(Some(Login::new(username, password)));
    }
    match (field("username"), field("password")) {
        (Some(username), Some(password)) => Ok(Some(Login::new(username, password))),
        _ => Ok(None),
    }
}

/// The registry a key of `auths` is for: `host[:port]`, or a URL as old
/// docker versions wrote (`https://index.docker.io/v1/`). Keys naming a
/// repository (`host/namespace`) are not registry-wide and give `None`.
fn normalize_key(key: &str) -> Option<String> {
    let (without_scheme, had_scheme) = match key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    {
        Some(rest) => (rest, true),
        None => (key, false),
    };
    let (host, path) = without_scheme
        .split_once('/')
        .unwrap_or((without_scheme, ""));
    if !had_scheme && !path.is_empty() {
        return None;
    }
    Some(normalize_registry(host))
}

/// One spelling per registry: lower-case, Docker Hub as `docker.io`.
fn normalize_registry(registry: &str) -> String {
    let registry = registry.to_ascii_lowercase();
    match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => registry,
    }
}

/// The key a login is stored under: what docker itself writes.
fn storage_key(registry: &str) -> String {
    match registry {
        "docker.io" => "https://index.docker.io/v1/".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn login_writes_0600_keeps_other_settings_and_logout_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/auth.json");
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(
            &file,
            r#"{"auths": {"other.example": {"auth": "Ym9iOnB3"}}, "credsStore": "pass"}"#,
        )
        .unwrap();
        login(&file, "Registry.Example:5000", "alice", "pa:ss").unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let written: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        assert_eq!(written["credsStore"], "pass");
        assert_eq!(
            written["auths"]["registry.example:5000"]["auth"],
            base64::engine::general_purpose::STANDARD.encode("alice:pa:ss")
        );

        let credentials = Credentials::load(&[&file]).unwrap();
        assert_eq!(
            credentials.get("registry.example:5000"),
            Some(&Login::new("alice", "pa:ss"))
        );
        assert_eq!(
            credentials.get("other.example"),
            Some(&Login::new("bob", "pw"))
        );
        assert_eq!(credentials.get("third.example"), None);

        // A second login replaces the first.
        login(&file, "registry.example:5000", "carol", "x").unwrap();
        let credentials = Credentials::load(&[&file]).unwrap();
        assert_eq!(
            credentials.get("registry.example:5000").unwrap().username,
            "carol"
        );

        assert!(logout(&file, "registry.example:5000").unwrap());
        assert!(!logout(&file, "registry.example:5000").unwrap());
        let credentials = Credentials::load(&[&file]).unwrap();
        assert_eq!(credentials.get("registry.example:5000"), None);
        assert_eq!(
            credentials.get("other.example"),
            Some(&Login::new("bob", "pw"))
        );
        // Nothing but the file and its lock.
        let mut names: Vec<String> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".auth.json.lock", "auth.json"]);
    }

    #[test]
    fn login_creates_a_private_directory_and_logout_of_nothing_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("new/dir/auth.json");
        assert!(!logout(&file, "registry.example").unwrap());
        assert!(!file.exists());
        login(&file, "registry.example", "u", "p").unwrap();
        let mode = fs::metadata(dir.path().join("new/dir"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn the_first_file_wins_and_docker_hub_has_one_name() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.json");
        let second = dir.path().join("second.json");
        let missing = dir.path().join("missing.json");
        fs::write(
            &first,
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "aHViOjE="},
                          "quay.example/team": {"auth": "dGVhbTox"},
                          "token.example": {"identitytoken": "abc"}}}"#,
        )
        .unwrap();
        fs::write(
            &second,
            r#"{"auths": {"docker.io": {"auth": "bGF0ZXI6Mg=="},
                          "quay.example": {"username": "plain", "password": "3"}}}"#,
        )
        .unwrap();
        let credentials = Credentials::load(&[&missing, &first, &second]).unwrap();
        for name in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            assert_eq!(
                credentials.get(name),
                Some(&Login::new("hub", "1")),
                "{name}"
            );
        }
        // The repository-scoped entry is not used for the whole registry.
        assert_eq!(
            credentials.get("quay.example"),
            Some(&Login::new("plain", "3"))
        );
        assert_eq!(credentials.get("token.example"), None);

        login(&second, "docker.io", "new", "4").unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&fs::read(&second).unwrap()).unwrap();
        let keys: Vec<&String> = written["auths"].as_object().unwrap().keys().collect();
        assert!(
            keys.contains(&&"https://index.docker.io/v1/".to_owned()),
            "{keys:?}"
        );
        assert!(!keys.contains(&&"docker.io".to_owned()), "{keys:?}");
    }

    #[test]
    fn broken_files_and_entries_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        fs::write(&file, "{not json").unwrap();
        let error = Credentials::load(&[&file]).unwrap_err();
        assert!(matches!(error, CredentialsError::Parse { .. }), "{error}");
        assert!(error.to_string().contains("auth.json"), "{error}");
        assert!(login(&file, "r.example", "u", "p").is_err());

        fs::write(
            &file,
            r#"{"auths": {"r.example": {"auth": "bm9jb2xvbg=="}}}"#,
        )
        .unwrap();
        let error = Credentials::load(&[&file]).unwrap_err();
        assert!(
            matches!(error, CredentialsError::InvalidEntry { ref registry, .. } if registry == "r.example"),
            "{error}"
        );
        fs::write(&file, r#"{"auths": {"r.example": {"auth": "***"}}}"#).unwrap();
        assert!(Credentials::load(&[&file]).is_err());

        // An empty file is an empty configuration.
        fs::write(&file, "\n").unwrap();
        assert!(Credentials::load(&[&file])
            .unwrap()
            .get("r.example")
            .is_none());
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let text = format!("{:?}", Login::new("alice", "hunter2"));
        assert!(
            text.contains("alice") && !text.contains("hunter2"),
            "{text}"
        );
    }

    #[test]
    fn standard_paths_put_the_own_file_before_dockers() {
        let own = Path::new("/state/auth.json");
        let paths = Credentials::standard_paths(own);
        let own_at = paths.iter().position(|p| p == own).unwrap();
        if let Some(docker_at) = paths.iter().position(|p| p.ends_with("config.json")) {
            assert!(own_at < docker_at, "{paths:?}");
        }
    }
}
