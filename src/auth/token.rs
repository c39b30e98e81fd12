//! Docker registry tokens: issued in the form registry:2 accepts
//! (distribution `docs/spec/auth/jwt.md`, verified against v2.8 `registry/auth/token`), and
//! verified the way registry:2 verifies them, with verified tokens cached.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::{PublicKey, SigningKey};
use super::scope::Scope;
use crate::metrics::Metrics;

/// registry:2 allows this much clock skew on `exp` and `nbf` (`token.go` `Leeway`).
pub const LEEWAY_SECS: u64 = 60;
/// `nbf` is set this far in the past so a registry whose clock runs behind still takes the
/// token at once (cesanta/docker_auth issue 41).
const NBF_MARGIN_SECS: u64 = 10;

/// The `token` section, validated (`config/token.rs` reads it).
#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    pub service: String,
    /// The realm URL in challenges; `None`: this gateway's `/auth` at the client's host.
    pub realm: Option<String>,
    pub expiration: Duration,
    pub refresh_expiration: Duration,
    pub kid_format: super::keys::KidFormat,
    /// The signing certificate and key; `None`: generated in `data_dir`.
    pub key: Option<crate::tls::TlsFiles>,
    /// Certificates of keys signed with before a rotation: their tokens (and refresh
    /// tokens) are still accepted until they expire; nothing new is signed with them.
    pub previous_certificates: Vec<std::path::PathBuf>,
}

/// One entry of the `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    /// A string: registry 2.8 fails to decode an array `aud`.
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    #[serde(default)]
    access: Vec<Access>,
}

/// A refresh token (OAuth2 `offline` access): a JWT of ours whose audience is not the
/// registry's service, so neither regate's routes nor a token-checking registry:2 take it
/// as an access token.
#[derive(Debug, Serialize, Deserialize)]
struct RefreshClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    iat: u64,
    jti: String,
    /// The fingerprint of the account's secret when the token was made.
    fpr: String,
}

/// What a verified refresh token says.
pub struct Refresh {
    pub account: String,
    pub fingerprint: String,
    pub jti: String,
    pub issued_at: u64,
    pub expires_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("signing the token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("token signed by untrusted key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

/// A token that passed verification.
#[derive(Debug)]
pub struct Verified {
    pub subject: String,
    /// `(type, name)` -> actions, merged as registry:2's `accessSet` merges them.
    access: HashMap<(String, String), Vec<String>>,
    expires_at: u64,
}

impl Verified {
    /// What a grant made here and now (Basic credentials on a route) amounts to.
    pub fn new(subject: String, access: Vec<Access>) -> Verified {
        Verified {
            subject,
            access: merge(access),
            expires_at: unix_now() + 60,
        }
    }

    /// The records of `required` this token does not grant (empty: it covers them all).
    /// An action is granted by itself or by `*` (registry `util.go` `actionSet.contains`).
    pub fn missing<'a>(&self, required: &'a [Scope]) -> Vec<&'a Scope> {
        required
            .iter()
            .filter(|scope| {
                let granted = self
                    .access
                    .get(&(scope.resource_type.clone(), scope.name.clone()));
                !scope
                    .actions
                    .iter()
                    .all(|a| granted.is_some_and(|g| g.iter().any(|x| x == a || x == "*")))
            })
            .collect()
    }
}

/// `(type, name)` -> actions, merged as registry:2's `accessSet` merges them.
fn merge(entries: Vec<Access>) -> HashMap<(String, String), Vec<String>> {
    let mut access: HashMap<(String, String), Vec<String>> = HashMap::new();
    for entry in entries {
        access
            .entry((entry.resource_type, entry.name))
            .or_default()
            .extend(entry.actions);
    }
    access
}

/// A token as the token endpoint returns it.
pub struct Issued {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: SystemTime,
}

/// Issues and verifies tokens for one issuer, service and key.
pub struct Tokens {
    key: Arc<SigningKey>,
    issuer: String,
    service: String,
    expiration: Duration,
    validation: Validation,
    refresh_validation: Validation,
    refresh_expiration: Duration,
    header: Header,
    /// Keys from before a rotation, with their validations (access, refresh).
    previous: Vec<(PublicKey, Validation, Validation)>,
    cache: moka::sync::Cache<[u8; 32], Arc<Verified>>,
    metrics: Arc<Metrics>,
}

struct UntilExpiry;

impl moka::Expiry<[u8; 32], Arc<Verified>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Verified>,
        _now: Instant,
    ) -> Option<Duration> {
        // Never longer than the token itself is good for (its `exp` plus the leeway
        // registry:2 grants).
        let until = value.expires_at + LEEWAY_SECS;
        Some(Duration::from_secs(until.saturating_sub(unix_now())))
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Tokens {
    pub fn new(
        key: Arc<SigningKey>,
        issuer: &str,
        service: &str,
        expiration: Duration,
        refresh_expiration: Duration,
        metrics: Arc<Metrics>,
    ) -> Tokens {
        // An allow-list of exactly the signing key's algorithm: never `none`, never HS*,
        // never an RS/ES swap.
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[service]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let mut refresh_validation = validation.clone();
        refresh_validation.set_audience(&[refresh_audience(service)]);
        let mut header = Header::new(key.algorithm);
        header.kid = Some(key.kid.clone());
        header.x5c = Some(key.x5c.clone());
        Tokens {
            key,
            issuer: issuer.to_owned(),
            service: service.to_owned(),
            expiration,
            validation,
            refresh_validation,
            refresh_expiration,
            header,
            previous: Vec::new(),
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .expire_after(UntilExpiry)
                .build(),
            metrics,
        }
    }

    /// Also accepts tokens signed by `keys` (`token.previous_certificates`), each with
    /// its own algorithm.
    pub fn with_previous(mut self, keys: Vec<PublicKey>) -> Tokens {
        self.previous = keys
            .into_iter()
            .map(|k| {
                let mut access = self.validation.clone();
                access.algorithms = vec![k.algorithm];
                let mut refresh = self.refresh_validation.clone();
                refresh.algorithms = vec![k.algorithm];
                (k, access, refresh)
            })
            .collect();
        self
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The public signing keys as a JWKS document: the current one first, then those
    /// from before a rotation (registry v3 must keep accepting their tokens too).
    pub fn jwks(&self) -> serde_json::Value {
        let mut doc = self.key.jwks();
        if let Some(keys) = doc["keys"].as_array_mut() {
            for (k, _, _) in &self.previous {
                let mut jwk = k.jwk.clone();
                jwk.insert("kid".into(), k.thumbprint.clone().into());
                jwk.insert("use".into(), "sig".into());
                let alg = match k.algorithm {
                    jsonwebtoken::Algorithm::ES384 => "ES384",
                    jsonwebtoken::Algorithm::RS256 => "RS256",
                    _ => "ES256",
                };
                jwk.insert("alg".into(), alg.into());
                keys.push(serde_json::Value::Object(jwk));
            }
        }
        doc
    }

    /// The key and validation for a token whose header names `kid`: the current key, or
    /// one from before a rotation.
    fn verifier(
        &self,
        kid: Option<&str>,
        refresh: bool,
    ) -> Result<(&jsonwebtoken::DecodingKey, &Validation), TokenError> {
        let kid = kid.ok_or(TokenError::UnknownKey)?;
        if kid == self.key.kid {
            let v = if refresh {
                &self.refresh_validation
            } else {
                &self.validation
            };
            return Ok((&self.key.decoding, v));
        }
        self.previous
            .iter()
            .find(|(k, _, _)| k.is(kid))
            .map(|(k, access, refresh_v)| (&k.decoding, if refresh { refresh_v } else { access }))
            .ok_or(TokenError::UnknownKey)
    }

    pub fn issue(&self, account: &str, access: Vec<Access>) -> Result<Issued, TokenError> {
        let issued_at = SystemTime::now();
        let now = issued_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: account.to_owned(),
            aud: self.service.clone(),
            exp: now + self.expiration.as_secs(),
            nbf: now.saturating_sub(NBF_MARGIN_SECS),
            iat: now,
            jti: random_id(),
            access,
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.key.encoding)
            .map_err(TokenError::Sign)?;
        Ok(Issued {
            token,
            expires_in: self.expiration.as_secs(),
            issued_at,
        })
    }

    /// Verifies a token (signature by our key, algorithm, `iss`, `aud`, `exp`/`nbf` with
    /// registry:2's leeway); a verified token is cached by its hash until it expires.
    pub fn verify(&self, token: &str) -> Result<Arc<Verified>, TokenError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        if let Some(hit) = self.cache.get(&key) {
            // The cache may hold an entry a moment past its expiry; never serve one.
            if unix_now() <= hit.expires_at + LEEWAY_SECS {
                self.metrics.token_cache_hits.fetch_add(1, Relaxed);
                return Ok(hit);
            }
        }
        self.metrics.token_cache_misses.fetch_add(1, Relaxed);
        let header = jsonwebtoken::decode_header(token).map_err(TokenError::Invalid)?;
        let (decoding, validation) = self.verifier(header.kid.as_deref(), false)?;
        let data = jsonwebtoken::decode::<Claims>(token, decoding, validation)
            .map_err(TokenError::Invalid)?;
        let claims = data.claims;
        let verified = Arc::new(Verified {
            subject: claims.sub,
            access: merge(claims.access),
            expires_at: claims.exp,
        });
        self.cache.insert(key, verified.clone());
        Ok(verified)
    }
}

fn refresh_audience(service: &str) -> String {
    format!("{service} (refresh)")
}

impl Tokens {
    /// A refresh token for `account`, valid until the refresh expiration or until the
    /// account's secret changes (`fingerprint`).
    pub fn issue_refresh(&self, account: &str, fingerprint: &str) -> Result<String, TokenError> {
        let now = unix_now();
        let claims = RefreshClaims {
            iss: self.issuer.clone(),
            sub: account.to_owned(),
            aud: refresh_audience(&self.service),
            exp: now + self.refresh_expiration.as_secs(),
            iat: now,
            jti: random_id(),
            fpr: fingerprint.to_owned(),
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key.encoding).map_err(TokenError::Sign)
    }

    pub fn verify_refresh(&self, token: &str) -> Result<Refresh, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(TokenError::Invalid)?;
        let (decoding, validation) = self.verifier(header.kid.as_deref(), true)?;
        let data = jsonwebtoken::decode::<RefreshClaims>(token, decoding, validation)
            .map_err(TokenError::Invalid)?;
        Ok(Refresh {
            account: data.claims.sub,
            fingerprint: data.claims.fpr,
            jti: data.claims.jti,
            issued_at: data.claims.iat,
            expires_at: data.claims.exp,
        })
    }
}

/// 128 random bits, hex: the `jti`.
fn random_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // SystemRandom only fails when the OS has no entropy source at all.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
