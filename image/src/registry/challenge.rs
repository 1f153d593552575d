//! `WWW-Authenticate` challenges (RFC 7235) as registries send them:
//! `Bearer realm="https://auth.example/token",service="registry",scope="repository:app:pull"`
//! or `Basic realm="registry"`.

use std::collections::BTreeMap;

/// One authentication challenge: a scheme and its parameters (names
/// lower-cased, values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// The scheme, lower-cased ("bearer", "basic").
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses one header value, which may hold several challenges
/// (`Basic realm="a", Bearer realm="b"`). Returns `None` when the value
/// is malformed.
pub(crate) fn parse_challenges(header: &str) -> Option<Vec<Challenge>> {
    let mut parser = Parser {
        rest: header.as_bytes(),
    };
    let mut challenges = Vec::new();
    loop {
        parser.skip_separators();
        if parser.rest.is_empty() {
            break;
        }
        let scheme = parser.token()?;
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: BTreeMap::new(),
        };
        // Parameters follow until the next `token SP` that is not `token=`.
        loop {
            parser.skip_separators();
            let checkpoint = parser.rest;
            let Some(name) = parser.token() else { break };
            parser.skip_spaces();
            if parser.peek() != Some(b'=') {
                // The next challenge's scheme.
                parser.rest = checkpoint;
                break;
            }
            parser.rest = &parser.rest[1..];
            parser.skip_spaces();
            let value = if parser.peek() == Some(b'"') {
                parser.quoted()?
            } else {
                parser.token()?
            };
            challenge.params.insert(name.to_ascii_lowercase(), value);
        }
        challenges.push(challenge);
    }
    (!challenges.is_empty()).then_some(challenges)
}

struct Parser<'a> {
    rest: &'a [u8],
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.rest = &self.rest[1..];
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.rest = &self.rest[1..];
        }
    }

    /// An RFC 7230 token (plus `/`, which token68 values such as base64
    /// may contain).
    fn token(&mut self) -> Option<String> {
        let len = self
            .rest
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(b))
            .count();
        if len == 0 {
            return None;
        }
        let (token, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(String::from_utf8_lossy(token).into_owned())
    }

    fn quoted(&mut self) -> Option<String> {
        let mut value = Vec::new();
        let mut bytes = self.rest[1..].iter().enumerate();
        while let Some((index, &byte)) = bytes.next() {
            match byte {
                b'"' => {
                    self.rest = &self.rest[index + 2..];
                    return Some(String::from_utf8_lossy(&value).into_owned());
                }
                b'\\' => value.push(*bytes.next()?.1),
                _ => value.push(byte),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_of_docker_hub() {
        let challenges = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(challenges.len(), 1);
        assert_eq!(challenges[0].scheme, "bearer");
        assert_eq!(
            challenges[0].param("realm"),
            Some("https://auth.docker.io/token")
        );
        assert_eq!(challenges[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            challenges[0].param("scope"),
            Some("repository:library/busybox:pull")
        );
    }

    #[test]
    fn several_challenges_tokens_and_escapes() {
        let challenges = parse_challenges(
            r#"Basic realm="a \"quoted\" realm", Bearer realm=x , error=invalid_token"#,
        )
        .unwrap();
        assert_eq!(challenges.len(), 2);
        assert_eq!(challenges[0].scheme, "basic");
        assert_eq!(challenges[0].param("realm"), Some(r#"a "quoted" realm"#));
        assert_eq!(challenges[1].scheme, "bearer");
        assert_eq!(challenges[1].param("realm"), Some("x"));
        assert_eq!(challenges[1].param("error"), Some("invalid_token"));
    }

    #[test]
    fn malformed_challenges_are_refused() {
        assert_eq!(parse_challenges(""), None);
        assert_eq!(parse_challenges(r#"Bearer realm="unterminated"#), None);
        assert_eq!(parse_challenges(r#"Bearer realm="#), None);
    }
}
