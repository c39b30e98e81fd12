//! Who is asking and what they may do: credentials, the scope grammar, the challenge,
//! tokens, and the token endpoint that ties them together.

pub mod authorize;
pub mod challenge;
pub mod endpoint;
pub mod keys;
pub mod ldap;
pub mod scope;
pub mod throttle;
pub mod token;
pub mod users;

use std::fmt;

/// A password or token: usable, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
