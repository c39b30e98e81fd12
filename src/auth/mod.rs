//! Who is asking and what they may do: credentials, the scope grammar, the challenge,
//! tokens, and the token endpoint that ties them together.

pub mod acl_xorm;
pub mod authorize;
pub mod backend;
pub mod casbin;
pub mod challenge;
pub mod credentials;
pub mod endpoint;
pub mod ext;
pub mod identity;
pub mod idp;
pub mod keys;
pub mod ldap;
pub mod pool;
pub mod revoked;
pub mod scope;
pub mod throttle;
pub mod token;
pub mod users;
pub mod xorm;

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

/// A key made at start for keyed hashes of credentials: the credential caches and the
/// throttle recognise a user and password they saw without keeping the password.
pub struct CredentialKey(ring::hmac::Key);

impl CredentialKey {
    pub fn generate() -> CredentialKey {
        let rng = ring::rand::SystemRandom::new();
        // If the OS has no randomness the tags are still never shown anywhere; the key
        // only keeps passwords out of in-memory cache keys.
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"regate"));
        CredentialKey(key)
    }

    /// A key several replicas share (the login throttle's, kept in the shared state).
    pub fn from_bytes(bytes: &[u8]) -> CredentialKey {
        CredentialKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes))
    }

    /// HMAC-SHA256 of `parts`, each prefixed by its length so no two lists collide.
    pub fn tag(&self, parts: &[&str]) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.0);
        for part in parts {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}
