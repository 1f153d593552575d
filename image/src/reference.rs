//! Image references in docker's grammar:
//! `[registry[:port]/]path[:tag][@algorithm:hex]`.
//!
//! A reference is normalized the way docker normalizes it: a name without a
//! registry is on `docker.io`, a one-component name there is below
//! `library/`, and a reference without tag or digest means `:latest`. The
//! full form ([`Display`](std::fmt::Display)) is what the store keys tags
//! by; [`Reference::familiar`] is the short form people type and read.

use std::fmt;
use std::str::FromStr;

use crate::ImageError;

/// The registry of names without one.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const OFFICIAL_REPOSITORY_PREFIX: &str = "library/";
/// The tag of references that name neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// Docker's bound on the length of a name (registry and path).
const MAX_NAME_LENGTH: usize = 255;
const MAX_TAG_LENGTH: usize = 128;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parse and normalize `text`: `busybox` becomes
    /// `docker.io/library/busybox:latest`, `localhost/deb:12` stays as it
    /// is, `host:5000/a/b` is on registry `host:5000`.
    ///
    /// The first path component is a registry when it contains `.` or `:`,
    /// or is `localhost` (docker's rule). Repository paths are lowercase
    /// components of `[a-z0-9]` joined by `.`, `_`, `__` or dashes, split
    /// by `/`; tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; digests are
    /// `sha256:` and 64 lowercase hex digits. Nothing that could act as a
    /// path (`..`, an empty component, a leading `/`) is accepted.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        let invalid = |reason: &str| ImageError::InvalidReference {
            reference: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(invalid("empty reference"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest).map_err(|r| invalid(&r))?;
                (rest, Some(digest.to_owned()))
            }
            None => (text, None),
        };
        // A tag follows the last ':' that comes after the last '/'; a ':'
        // before it belongs to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(&rest[i + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(|r| invalid(&r))?;
        }
        if name.is_empty() {
            return Err(invalid("empty name"));
        }
        if name.len() > MAX_NAME_LENGTH {
            return Err(invalid("name longer than 255 characters"));
        }
        let (registry, path) = split_registry(name);
        if let Some(registry) = registry {
            check_registry(registry).map_err(|r| invalid(&r))?;
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        check_path(path).map_err(|r| invalid(&r))?;
        let mut registry = registry.unwrap_or(DEFAULT_REGISTRY).to_owned();
        if registry == LEGACY_DEFAULT_REGISTRY {
            registry = DEFAULT_REGISTRY.to_owned();
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("{OFFICIAL_REPOSITORY_PREFIX}{path}")
        } else {
            path.to_owned()
        };
        if registry == DEFAULT_REGISTRY && is_full_hex_id(path) {
            return Err(invalid(
                "a 64-digit hexadecimal name is an image id, not a repository",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host, with its port when it has one: `docker.io`,
    /// `localhost`, `host:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path below the registry: `library/busybox`, `deb`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, `None` only for a reference by digest alone.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:...`) when the reference names one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with `tag` and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ImageError> {
        check_tag(tag).map_err(|reason| ImageError::InvalidReference {
            reference: format!("{}:{tag}", self.name()),
            reason,
        })?;
        Ok(Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_owned()),
            digest: None,
        })
    }

    /// The same repository with `digest` and no tag.
    pub fn with_digest(&self, digest: &str) -> Result<Self, ImageError> {
        check_digest(digest).map_err(|reason| ImageError::InvalidReference {
            reference: format!("{}@{digest}", self.name()),
            reason,
        })?;
        Ok(Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_owned()),
        })
    }

    /// The repository as docker shows it: without `docker.io/` and
    /// `library/` (`busybox`, `user/app`, `localhost/deb`).
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix(OFFICIAL_REPOSITORY_PREFIX)
                .filter(|rest| !rest.contains('/'))
                .unwrap_or(&self.repository)
                .to_owned()
        } else {
            self.name()
        }
    }

    /// The short form for display: `busybox:latest`, `localhost/deb:12`,
    /// `user/app@sha256:...`.
    pub fn familiar(&self) -> String {
        let mut text = self.familiar_name();
        self.push_tag_and_digest(&mut text);
        text
    }

    fn push_tag_and_digest(&self, text: &mut String) {
        if let Some(tag) = &self.tag {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            text.push('@');
            text.push_str(digest);
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.name();
        self.push_tag_and_digest(&mut text);
        f.write_str(&text)
    }
}

impl FromStr for Reference {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Reference::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Docker's `splitDockerDomain`: the first component is a registry when
/// it has a `.` or a `:`, is `localhost`, or has uppercase letters (which
/// a repository path never has).
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

pub(crate) fn is_full_hex_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        // An IPv6 literal: [::1] or [::1]:5000.
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("registry {registry:?}: unclosed '['"))?;
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(format!("registry {registry:?}: invalid IPv6 address"));
        }
        match after {
            "" => return Ok(()),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(format!("registry {registry:?}: junk after ']'")),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err(format!("registry {registry:?}: empty host"));
        }
        for component in host.split('.') {
            let valid = !component.is_empty()
                && component
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !component.starts_with('-')
                && !component.ends_with('-');
            if !valid {
                return Err(format!(
                    "registry {registry:?}: invalid host component {component:?}"
                ));
            }
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
            return Err(format!("registry {registry:?}: invalid port {port:?}"));
        }
    }
    Ok(())
}

/// `component ('/' component)*` with `component = [a-z0-9]+ (sep [a-z0-9]+)*`
/// and `sep = '.' | '_' | '__' | '-'+`.
fn check_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err("empty path component (leading, trailing or double '/')".to_owned());
        }
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return Err(format!(
                "path component {component:?} must start and end with a lowercase letter or digit"
            ));
        }
        let mut i = 0;
        while i < bytes.len() {
            if alnum(bytes[i]) {
                i += 1;
                continue;
            }
            // A separator run between two alphanumeric runs.
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let valid = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
            if !valid {
                return Err(format!(
                    "path component {component:?} has an invalid separator {sep:?}"
                ));
            }
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    match chars.next() {
        None => return Err("empty tag".to_owned()),
        Some(c) if word(c) => {}
        Some(_) => {
            return Err(format!(
                "tag {tag:?} must start with a letter, digit or '_'"
            ))
        }
    }
    if tag.len() > MAX_TAG_LENGTH {
        return Err(format!("tag longer than {MAX_TAG_LENGTH} characters"));
    }
    if !chars.all(|c| word(c) || c == '.' || c == '-') {
        return Err(format!(
            "tag {tag:?} may only contain letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

fn check_digest(digest: &str) -> Result<(), String> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if is_full_hex_id(hex) => Ok(()),
        Some(("sha256", _)) => Err(format!(
            "digest {digest:?} must be sha256: and 64 lowercase hexadecimal digits"
        )),
        Some((algorithm, _)) => Err(format!("unsupported digest algorithm {algorithm:?}")),
        None => Err(format!("digest {digest:?} has no algorithm")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    fn full(text: &str) -> String {
        Reference::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .to_string()
    }

    #[test]
    fn docker_normalization_examples() {
        // From docker's reference/normalize_test.go.
        for (given, expected) in [
            ("docker/docker", "docker.io/docker/docker:latest"),
            ("library/debian", "docker.io/library/debian:latest"),
            ("debian", "docker.io/library/debian:latest"),
            ("docker.io/docker/docker", "docker.io/docker/docker:latest"),
            ("docker.io/library/debian", "docker.io/library/debian:latest"),
            ("docker.io/debian", "docker.io/library/debian:latest"),
            ("index.docker.io/docker/docker", "docker.io/docker/docker:latest"),
            ("index.docker.io/library/debian", "docker.io/library/debian:latest"),
            ("index.docker.io/debian", "docker.io/library/debian:latest"),
            ("127.0.0.1:5000/docker/docker", "127.0.0.1:5000/docker/docker:latest"),
            ("127.0.0.1:5000/library/debian", "127.0.0.1:5000/library/debian:latest"),
            ("127.0.0.1:5000/debian", "127.0.0.1:5000/debian:latest"),
            ("192.168.0.1/docker/docker", "192.168.0.1/docker/docker:latest"),
            ("thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest"),
            ("localhost/deb:12", "localhost/deb:12"),
            ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("debian:12.5-slim", "docker.io/library/debian:12.5-slim"),
            ("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080"),
            ("foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com:8080"),
            ("a-b--c/d__e.f", "docker.io/a-b--c/d__e.f:latest"),
            ("[::1]:5000/app", "[::1]:5000/app:latest"),
        ] {
            assert_eq!(full(given), expected, "{given}");
        }
    }

    #[test]
    fn tags_and_digests() {
        let by_digest = Reference::parse(&format!("busybox@sha256:{HEX}")).unwrap();
        assert_eq!(by_digest.tag(), None);
        assert_eq!(by_digest.digest(), Some(&*format!("sha256:{HEX}")));
        assert_eq!(
            by_digest.to_string(),
            format!("docker.io/library/busybox@sha256:{HEX}")
        );
        let both = Reference::parse(&format!("host:5000/a/b:v1@sha256:{HEX}")).unwrap();
        assert_eq!(both.registry(), "host:5000");
        assert_eq!(both.repository(), "a/b");
        assert_eq!(both.tag(), Some("v1"));
        assert_eq!(both.familiar(), format!("host:5000/a/b:v1@sha256:{HEX}"));
    }

    #[test]
    fn familiar_forms() {
        for (given, familiar) in [
            ("busybox", "busybox:latest"),
            ("docker.io/library/busybox:latest", "busybox:latest"),
            ("user/app:1", "user/app:1"),
            ("localhost/deb:12", "localhost/deb:12"),
            ("quay.io/a/b", "quay.io/a/b:latest"),
            ("docker.io/library/a/b", "library/a/b:latest"),
        ] {
            assert_eq!(Reference::parse(given).unwrap().familiar(), familiar);
        }
        let reference = Reference::parse("localhost/deb:12").unwrap();
        assert_eq!(reference.registry(), "localhost");
        assert_eq!(reference.repository(), "deb");
        assert_eq!(reference.tag(), Some("12"));
        assert_eq!(reference.familiar_name(), "localhost/deb");
    }

    #[test]
    fn round_trips_through_its_full_form() {
        for given in ["busybox", "localhost/deb:12", "host:5000/a/b:x", "a/b/c/d"] {
            let once = Reference::parse(given).unwrap();
            assert_eq!(Reference::parse(&once.to_string()).unwrap(), once);
            assert_eq!(Reference::parse(&once.familiar()).unwrap(), once);
        }
    }

    #[test]
    fn refuses_what_docker_refuses_and_paths() {
        // Docker's reference_test.go failures, plus path-like names.
        let long_tag = "a".repeat(129);
        let long_name = format!("{}/b", "a".repeat(255));
        for given in [
            "",
            ":justtag",
            "@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "repo@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "validname@invaliddigest:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "Uppercase:tag",
            "test:5000/Uppercase/lowercase:tag",
            "aa/asdf$$^/aa",
            "a/a/a/a/",
            "/a",
            "a//b",
            "../x",
            "a/../b",
            "./a",
            "a/./b",
            "..",
            "a:..",
            "a:.x",
            "a:-x",
            "a b",
            "a\0b",
            "-a",
            "a-",
            "a...b",
            "a___b",
            "a:b:c",
            "host:port/a",
            "ho_st.com/a",
            &format!("a:{long_tag}"),
            &long_name,
            HEX,
        ] {
            let err = Reference::parse(given).expect_err(given);
            assert!(
                matches!(err, ImageError::InvalidReference { .. }),
                "{given}: {err}"
            );
        }
        // Uppercase in the registry is allowed, as in docker.
        assert_eq!(full("Example.com/a"), "Example.com/a:latest");
        assert_eq!(full("test:5000/a/b"), "test:5000/a/b:latest");
    }

    #[test]
    fn with_tag_and_digest() {
        let reference = Reference::parse("localhost/deb:12").unwrap();
        assert_eq!(
            reference.with_tag("13").unwrap().to_string(),
            "localhost/deb:13"
        );
        assert!(reference.with_tag("..").is_err());
        let digest = format!("sha256:{HEX}");
        assert_eq!(
            reference.with_digest(&digest).unwrap().to_string(),
            format!("localhost/deb@{digest}")
        );
    }
}
