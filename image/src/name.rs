//! Image name validation.

use crate::ImageError;

/// Check that `name` is a valid image name: `[a-z0-9][a-z0-9_.-]*` with an
/// optional `:tag` of `[A-Za-z0-9_.-]+`.
///
/// Names are used as file names in the store, so anything that could act as
/// a path (`/`, `..`, `.`) is refused.
pub fn validate_image_name(name: &str) -> Result<(), ImageError> {
    let invalid = |reason| {
        Err(ImageError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.len() > 255 {
        return invalid("longer than 255 characters");
    }
    let (repo, tag) = match name.split_once(':') {
        Some((repo, tag)) => (repo, Some(tag)),
        None => (name, None),
    };
    let mut chars = repo.chars();
    match chars.next() {
        None => return invalid("empty name"),
        Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() => {}
        Some(_) => return invalid("must start with a lowercase letter or a digit"),
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c)) {
        return invalid("only lowercase letters, digits, '_', '.' and '-' are allowed");
    }
    if repo.contains("..") {
        return invalid("must not contain \"..\"");
    }
    if let Some(tag) = tag {
        if tag.is_empty() {
            return invalid("empty tag after ':'");
        }
        if !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return invalid("tag may only contain letters, digits, '_', '.' and '-'");
        }
        if tag == "." || tag.contains("..") {
            return invalid("tag must not be \".\" or contain \"..\"");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_docker_like_names() {
        for name in [
            "busybox",
            "busybox:latest",
            "my-app_2.0",
            "a",
            "0x:V1.2-rc_3",
        ] {
            assert!(validate_image_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn refuses_paths_and_oddities() {
        for name in [
            "", "../x", "..", ".", "a/b", "/etc", "Busybox", "-x", "_x", ".x", "a..b", "a:",
            "a:b:c", "a:..", "a:.", "a:b/c", "a b", "a\0", ":tag",
        ] {
            let err = validate_image_name(name).unwrap_err();
            assert!(matches!(err, ImageError::InvalidName { .. }), "{name}");
        }
        assert!(validate_image_name(&"a".repeat(256)).is_err());
    }
}
