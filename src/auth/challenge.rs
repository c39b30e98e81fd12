//! The `WWW-Authenticate: Bearer` challenge registry:2 sends, and the `Authorization`
//! header as registry:2 reads it.

use std::fmt;

use base64::Engine;
use hyper::header::HeaderValue;

use super::scope::Scope;
use super::Secret;

/// Why a presented token was refused; absent when no token was presented at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeError {
    InvalidToken,
    InsufficientScope,
}

/// registry:2's challenge (distribution v2.8 `accesscontroller.go` `challengeParams`):
/// `Bearer realm="…",service="…"[,scope="…"][,error="…"]`, Go-quoted, no spaces after commas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub service: String,
    pub scopes: Vec<Scope>,
    pub error: Option<ChallengeError>,
}

impl Challenge {
    /// The same challenge, saying what was wrong with the token shown.
    pub fn with_error(&self, error: ChallengeError) -> Challenge {
        Challenge {
            error: Some(error),
            ..self.clone()
        }
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Bearer realm={},service={}",
            quote(&self.realm),
            quote(&self.service)
        )?;
        if !self.scopes.is_empty() {
            let list: Vec<String> = self.scopes.iter().map(Scope::to_string).collect();
            write!(f, ",scope={}", quote(&list.join(" ")))?;
        }
        match self.error {
            Some(ChallengeError::InvalidToken) => f.write_str(",error=\"invalid_token\""),
            Some(ChallengeError::InsufficientScope) => f.write_str(",error=\"insufficient_scope\""),
            None => Ok(()),
        }
    }
}

/// Go's `%q` for the characters that can reach a challenge.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What an `Authorization` header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    None,
    Bearer(Secret),
    Basic { user: String, password: Secret },
}

/// Reads `Authorization` the way registry:2 does for Bearer (split on one space into
/// exactly two parts, scheme case-insensitive; anything else counts as no token) and the
/// way Go's `BasicAuth` does for Basic.
pub fn parse_authorization(value: Option<&HeaderValue>) -> Credential {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return Credential::None;
    };
    let mut parts = value.split(' ');
    let (Some(scheme), Some(param), None) = (parts.next(), parts.next(), parts.next()) else {
        return Credential::None;
    };
    if scheme.eq_ignore_ascii_case("bearer") && !param.is_empty() {
        return Credential::Bearer(Secret::new(param));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(param)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        if let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            return Credential::Basic {
                user: user.to_owned(),
                password: Secret::new(password),
            };
        }
    }
    Credential::None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(scopes: &[&str], error: Option<ChallengeError>) -> String {
        Challenge {
            realm: "https://gw.example.test/auth".into(),
            service: "registry.test".into(),
            scopes: scopes.iter().map(|s| Scope::parse(s).unwrap()).collect(),
            error,
        }
        .to_string()
    }

    #[test]
    fn challenge_matches_registry_bytes() {
        assert_eq!(
            challenge(&[], None),
            r#"Bearer realm="https://gw.example.test/auth",service="registry.test""#
        );
        assert_eq!(
            challenge(
                &["repository:foo:pull,push", "repository:other/repo:pull"],
                None
            ),
            r#"Bearer realm="https://gw.example.test/auth",service="registry.test",scope="repository:foo:pull,push repository:other/repo:pull""#
        );
        assert_eq!(
            challenge(
                &["repository:foo:pull"],
                Some(ChallengeError::InsufficientScope)
            ),
            r#"Bearer realm="https://gw.example.test/auth",service="registry.test",scope="repository:foo:pull",error="insufficient_scope""#
        );
        assert_eq!(
            challenge(&[], Some(ChallengeError::InvalidToken)),
            r#"Bearer realm="https://gw.example.test/auth",service="registry.test",error="invalid_token""#
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    fn parse(s: &str) -> Credential {
        parse_authorization(Some(&HeaderValue::from_str(s).unwrap()))
    }

    #[test]
    fn authorization_like_registry() {
        assert_eq!(parse("Bearer abc"), Credential::Bearer(Secret::new("abc")));
        assert_eq!(parse("bearer abc"), Credential::Bearer(Secret::new("abc")));
        assert_eq!(parse("Bearer  abc"), Credential::None);
        assert_eq!(parse("Bearer"), Credential::None);
        assert_eq!(parse("Bearer a b"), Credential::None);
        assert_eq!(
            parse("Basic YWxpY2U6cHc6eA=="),
            Credential::Basic {
                user: "alice".into(),
                password: Secret::new("pw:x")
            }
        );
        assert_eq!(parse("Basic !!!"), Credential::None);
        assert_eq!(parse_authorization(None), Credential::None);
    }

    #[test]
    fn secrets_do_not_print() {
        let c = parse("Basic YWxpY2U6aHVudGVyMg==");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
