use std::fs::File;
use std::io::Read;

use crate::StateError;

/// Names become path components and DNS-ish host names, so they are held to
/// docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`. That excludes `/`, `..` as
/// a whole name, and anything that could escape the state directory.
pub fn validate_name(name: &str) -> Result<(), StateError> {
    let mut chars = name.chars();
    let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128;
    if valid {
        Ok(())
    } else {
        Err(StateError::InvalidName {
            name: name.to_owned(),
        })
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // getrandom(2) never fails for small reads once the pool is seeded; fall
    // back to /dev/urandom on an exotic kernel.
    // SAFETY: buf is a valid, writable buffer of exactly N bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), N, 0) };
    if n != N as isize {
        if let Ok(mut f) = File::open("/dev/urandom") {
            let _ = f.read_exact(&mut buf);
        }
    }
    buf
}

/// A new container id: 64 lowercase hex digits, like docker's.
pub fn generate_id() -> String {
    random_bytes::<32>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "clever", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid",
    "merry", "nimble", "proud", "quiet", "rapid", "serene", "sharp", "steady", "swift", "tender",
    "vivid", "wise", "witty", "zealous",
];
const NOUNS: &[&str] = &[
    "albatross",
    "beacon",
    "cormorant",
    "dinghy",
    "ferry",
    "galleon",
    "harbor",
    "jetty",
    "keel",
    "lighthouse",
    "mooring",
    "narwhal",
    "pelican",
    "quay",
    "rudder",
    "schooner",
    "tugboat",
    "wharf",
    "anchor",
    "buoy",
    "capstan",
    "dory",
    "frigate",
    "gull",
];

/// A default container name in docker's `adjective_noun` style. The caller
/// retries on the rare collision (the store refuses duplicate names).
pub fn generate_name() -> String {
    let [a, b, c] = random_bytes::<3>();
    let adjective = ADJECTIVES[a as usize % ADJECTIVES.len()];
    let noun = NOUNS[b as usize % NOUNS.len()];
    format!("{adjective}_{noun}_{}", c % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_docker_style_names() {
        for name in ["web", "a", "Web_1", "db.prod-2", "0abc"] {
            validate_name(name).unwrap();
        }
    }

    #[test]
    fn refuses_names_that_could_escape_or_confuse() {
        for name in [
            "",
            "../../etc",
            "..",
            ".hidden",
            "-x",
            "_x",
            "a/b",
            "a b",
            "é",
            "a\0b",
        ] {
            assert!(validate_name(name).is_err(), "{name:?} accepted");
        }
        assert!(validate_name(&"a".repeat(129)).is_err());
    }

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let a = generate_id();
        let b = generate_id();
        assert_eq!(a.len(), 64);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn generated_names_are_valid() {
        for _ in 0..50 {
            validate_name(&generate_name()).unwrap();
        }
    }
}
