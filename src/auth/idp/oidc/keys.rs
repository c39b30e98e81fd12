//! An id_token's checks: the issuer's signing keys (its JWKS, read again for a key it
//! had not published, at most every `KEYS_REFETCH`), the JWT's header read before any key
//! is chosen (no `none`, no HMAC), and the claims jsonwebtoken verifies (signature, `iss`,
//! `aud`, `exp`, `nbf`) with what it does not (`azp`, `nonce`).

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Discovery, Oidc};
use crate::auth::idp::http::Auth;
use crate::auth::idp::{Client, IdTokenError, IdpError};

/// Keys are read again after an hour on the next use.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// A token signed by a key not in the set reads the set again, at most this often: a
/// provider that rotated its keys is followed, a stream of forged `kid`s costs it one
/// request per interval.
pub const KEYS_REFETCH: Duration = Duration::from_secs(10);
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY: u64 = 60;

#[derive(Default)]
pub(super) struct KeySet {
    pub keys: Vec<Key>,
    pub fetched: Option<Instant>,
}

#[derive(Clone)]
pub(super) struct Key {
    kid: Option<String>,
    /// The key's `alg`, when it names one.
    alg: Option<String>,
    family: Family,
    key: DecodingKey,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Okp,
}

/// The family of keys an algorithm verifies with; `None` for the HMAC ones, which an
/// id_token must not use here (their key would be the client secret).
fn family(alg: Algorithm) -> Option<Family> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(Family::Rsa),
        ES256 | ES384 => Some(Family::Ec),
        EdDSA => Some(Family::Okp),
        HS256 | HS384 | HS512 => None,
    }
}

impl Oidc {
    pub(super) async fn fetch_keys(
        &self,
        client: &Client,
        d: &Discovery,
    ) -> Result<KeySet, IdpError> {
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<Value>,
        }
        let answer = client
            .http
            .get(&d.jwks_uri, Auth::None, "application/json")
            .await?;
        if !answer.status.is_success() {
            return Err(IdpError::Unreachable(format!(
                "the provider's keys ({}) answered HTTP {}",
                d.jwks_uri,
                answer.status.as_u16()
            )));
        }
        let set: Set = answer
            .json()
            .map_err(|e| IdpError::Unreachable(format!("the provider's keys: {e}")))?;
        let keys = set.keys.into_iter().filter_map(key_of).collect();
        Ok(KeySet {
            keys,
            fetched: Some(Instant::now()),
        })
    }

    /// The keys that may have signed a token of `alg` naming `kid`: read again when the
    /// set is old, or when none fits and the last read is older than `KEYS_REFETCH`.
    async fn keys_for(
        &self,
        client: &Client,
        d: &Discovery,
        kid: Option<&str>,
        alg: Algorithm,
        name: &str,
    ) -> Result<Vec<DecodingKey>, IdpError> {
        let fits = |set: &KeySet| -> Vec<DecodingKey> {
            set.keys
                .iter()
                .filter(|k| Some(k.family) == family(alg))
                .filter(|k| k.alg.as_deref().is_none_or(|a| a == name))
                .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
                .map(|k| k.key.clone())
                .collect()
        };
        let mut set = self.keys.lock().await;
        let stale = set.fetched.is_none_or(|at| at.elapsed() >= KEYS_MAX_AGE);
        if stale {
            match self.fetch_keys(client, d).await {
                Ok(fresh) => *set = fresh,
                Err(e) if set.keys.is_empty() => return Err(e),
                Err(e) => tracing::warn!("{}: keeping the keys read before: {e}", self.issuer),
            }
        }
        let found = fits(&set);
        if !found.is_empty() {
            return Ok(found);
        }
        if set.fetched.is_some_and(|at| at.elapsed() >= KEYS_REFETCH) {
            *set = self.fetch_keys(client, d).await?;
            tracing::info!(
                "{}: read the provider's keys again for a key it had not published before",
                self.issuer
            );
            let found = fits(&set);
            if !found.is_empty() {
                return Ok(found);
            }
        }
        Err(IdTokenError::UnknownKey.into())
    }

    /// The claims of a valid id_token; `nonce`, when given, must be the one sent.
    pub(super) async fn verify(
        &self,
        client: &Client,
        d: &Discovery,
        raw: &str,
        nonce: Option<&str>,
    ) -> Result<Map<String, Value>, IdpError> {
        let (alg, name, kid) = header(raw)?;
        let keys = self.keys_for(client, d, kid.as_deref(), alg, &name).await?;
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&d.issuer]);
        validation.set_audience(&[&client.id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY;
        let mut outcome = Err(IdTokenError::BadSignature);
        for key in &keys {
            outcome = jsonwebtoken::decode::<Map<String, Value>>(raw, key, &validation)
                .map(|t| t.claims)
                .map_err(|e| id_token_error(e.kind()));
            if !matches!(outcome, Err(IdTokenError::BadSignature)) {
                break;
            }
        }
        let claims = outcome?;
        // OpenID Connect Core 3.1.3.7: with several audiences, the party it was issued to
        // must be this client.
        if let Some(Value::Array(aud)) = claims.get("aud") {
            let azp = claims.get("azp").and_then(Value::as_str);
            if aud.len() > 1 && azp != Some(client.id.as_str()) {
                return Err(IdTokenError::WrongAudience.into());
            }
        }
        if let Some(nonce) = nonce {
            if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
                return Err(IdTokenError::NonceMismatch.into());
            }
        }
        Ok(claims)
    }
}

/// A JWK regate can verify with: RSA, EC or OKP, for signatures.
pub(super) fn key_of(v: Value) -> Option<Key> {
    if v.get("use")
        .and_then(Value::as_str)
        .is_some_and(|u| u != "sig")
    {
        return None;
    }
    let kid = v.get("kid").and_then(Value::as_str).map(str::to_owned);
    let alg = v.get("alg").and_then(Value::as_str).map(str::to_owned);
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(v).ok()?;
    use jsonwebtoken::jwk::AlgorithmParameters::*;
    let family = match &jwk.algorithm {
        RSA(_) => Family::Rsa,
        EllipticCurve(_) => Family::Ec,
        OctetKeyPair(_) => Family::Okp,
        OctetKey(_) => return None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid,
        alg,
        family,
        key,
    })
}

/// A JWT's algorithm (and its name) and `kid`, read before any key is chosen.
fn header(raw: &str) -> Result<(Algorithm, String, Option<String>), IdTokenError> {
    use base64::Engine;
    let parts: Vec<&str> = raw.split('.').collect();
    if parts.len() != 3 {
        return Err(IdTokenError::Malformed);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[0].trim_end_matches('='))
        .map_err(|_| IdTokenError::Malformed)?;
    let header: Value = serde_json::from_slice(&bytes).map_err(|_| IdTokenError::Malformed)?;
    let name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(IdTokenError::Malformed)?;
    if name.eq_ignore_ascii_case("none") || parts[2].is_empty() {
        return Err(IdTokenError::Unsigned);
    }
    let alg: Algorithm = name
        .parse()
        .map_err(|_| IdTokenError::Algorithm(name.to_owned()))?;
    if family(alg).is_none() {
        return Err(IdTokenError::Algorithm(name.to_owned()));
    }
    let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
    Ok((alg, name.to_owned(), kid))
}

fn id_token_error(kind: &jsonwebtoken::errors::ErrorKind) -> IdTokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature | K::InvalidAlgorithm | K::InvalidEcdsaKey | K::InvalidRsaKey(_) => {
            IdTokenError::BadSignature
        }
        K::ExpiredSignature => IdTokenError::Expired,
        K::ImmatureSignature => IdTokenError::NotYetValid,
        K::InvalidIssuer => IdTokenError::WrongIssuer,
        K::InvalidAudience => IdTokenError::WrongAudience,
        K::MissingRequiredClaim(c) => IdTokenError::Missing(c.clone()),
        _ => IdTokenError::Malformed,
    }
}
