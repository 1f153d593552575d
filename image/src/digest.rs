//! sha256 digests: image ids, hashing readers, and the checks every blob
//! goes through.

use std::fmt;
use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use crate::reference::is_full_hex_id;
use crate::ImageError;

/// An image's id: the sha256 digest of its config blob, as docker and
/// podman define it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(String);

impl ImageId {
    /// From `sha256:<64 hex>` or the 64 hex digits alone.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        is_full_hex_id(hex).then(|| ImageId(hex.to_owned()))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, as `docker images` shows them.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    /// `sha256:<hex>`.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.0)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

pub(crate) fn hex_of(hasher: Sha256) -> String {
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(bytes);
    hex_of(hasher)
}

/// The 64 hex digits of a `sha256:` digest, or an error naming it: the
/// store only keeps sha256 content, and a hex string is the only thing a
/// digest may contribute to a path.
pub(crate) fn sha256_hex_of<'a>(digest: &'a str, origin: &str) -> Result<&'a str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if is_full_hex_id(hex) => Ok(hex),
        _ => Err(ImageError::InvalidImage {
            origin: origin.to_owned(),
            reason: format!("digest {digest:?} is not sha256: and 64 lowercase hex digits"),
        }),
    }
}

/// A reader that hashes and counts what passes through it.
pub(crate) struct HashingReader<R> {
    pub(crate) inner: R,
    pub(crate) hasher: Sha256,
    pub(crate) count: u64,
}

impl<R> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub(crate) fn finish(self) -> (String, u64) {
        (hex_of(self.hasher), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Read all of a small blob (a manifest, a config, an index), at most
/// `limit` bytes, and check its size and digest.
pub(crate) fn read_verified(
    mut reader: impl Read,
    what: &'static str,
    digest: &str,
    size: u64,
    limit: u64,
    origin: &str,
) -> Result<Vec<u8>, ImageError> {
    check_size(what, digest, size, limit, origin)?;
    let mut bytes = Vec::new();
    (&mut reader)
        .take(size + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ImageError::Archive {
            origin: format!("{origin}: {what} {digest}"),
            source,
        })?;
    verify(what, digest, size, &bytes, origin)?;
    Ok(bytes)
}

/// Check a blob already in memory against its descriptor's digest and size.
pub(crate) fn verify(
    what: &'static str,
    digest: &str,
    size: u64,
    bytes: &[u8],
    origin: &str,
) -> Result<(), ImageError> {
    if bytes.len() as u64 != size {
        return Err(ImageError::SizeMismatch {
            what,
            digest: digest.to_owned(),
            origin: origin.to_owned(),
            expected: size,
            actual: bytes.len() as u64,
        });
    }
    let actual = format!("sha256:{}", sha256_hex(bytes));
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            what,
            origin: origin.to_owned(),
            expected: digest.to_owned(),
            actual,
        });
    }
    Ok(())
}

pub(crate) fn check_size(
    what: &'static str,
    digest: &str,
    size: u64,
    limit: u64,
    origin: &str,
) -> Result<(), ImageError> {
    if size > limit {
        return Err(ImageError::TooLarge {
            what,
            digest: digest.to_owned(),
            origin: origin.to_owned(),
            size,
            limit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids() {
        let hex = "a".repeat(64);
        let id = ImageId::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(ImageId::parse(&hex), Some(id.clone()));
        assert_eq!(id.short(), "aaaaaaaaaaaa");
        assert_eq!(id.to_string(), format!("sha256:{hex}"));
        assert_eq!(ImageId::parse("sha256:abc"), None);
        assert_eq!(ImageId::parse(&"A".repeat(64)), None);
    }

    #[test]
    fn small_blobs_are_verified() {
        let digest = format!("sha256:{}", sha256_hex(b"abc"));
        assert_eq!(
            read_verified(&b"abc"[..], "config", &digest, 3, 10, "t").unwrap(),
            b"abc"
        );
        assert!(matches!(
            read_verified(&b"ab"[..], "config", &digest, 3, 10, "t"),
            Err(ImageError::SizeMismatch { actual: 2, .. })
        ));
        assert!(matches!(
            read_verified(&b"abcd"[..], "config", &digest, 3, 10, "t"),
            Err(ImageError::SizeMismatch { actual: 4, .. })
        ));
        assert!(matches!(
            read_verified(&b"abd"[..], "config", &digest, 3, 10, "t"),
            Err(ImageError::DigestMismatch { .. })
        ));
        assert!(matches!(
            read_verified(&b"abc"[..], "config", &digest, u64::MAX, 10, "t"),
            Err(ImageError::TooLarge { .. })
        ));
    }
}
