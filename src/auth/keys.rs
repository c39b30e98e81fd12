//! The token signing key: loading a docker_auth key pair, generating one on first start,
//! and the key ID registry:2 looks tokens up by.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rustls_pemfile::Item;
use x509_parser::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: no PEM certificate in the file")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not an X.509 certificate: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("{path}: no private key (PKCS#8, PKCS#1 RSA or SEC1 EC PEM) in the file")]
    NoKey { path: PathBuf },
    #[error("{path}: key type not supported for tokens (use RSA, or EC P-256/P-384)")]
    Unsupported { path: PathBuf },
    #[error("{key}: this private key does not belong to the certificate {cert}")]
    Mismatch { key: PathBuf, cert: PathBuf },
    #[error("{path}: unreadable private key: {source}")]
    BadKey {
        path: PathBuf,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("generating the token key: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The key regate signs tokens with, and everything a token header says about it.
pub struct SigningKey {
    pub algorithm: Algorithm,
    /// The `kid` tokens carry: the libtrust key ID, or the RFC 7638 thumbprint.
    pub kid: String,
    /// registry 2.x looks the verifying certificate up by this.
    pub libtrust_kid: String,
    /// RFC 7638 JWK thumbprint: registry v3 looks keys up by this.
    pub thumbprint: String,
    /// The public key as a JWK (RFC 7517), without `kid`.
    pub jwk: serde_json::Map<String, serde_json::Value>,
    /// The certificate chain, base64 DER, for the `x5c` header.
    pub x5c: Vec<String>,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    pub certificate_path: PathBuf,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("certificate_path", &self.certificate_path)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The public half of a token key, from its certificate: what verifying needs, and what
/// a JWKS document shows.
pub struct PublicKey {
    pub algorithm: Algorithm,
    pub libtrust_kid: String,
    pub thumbprint: String,
    pub jwk: serde_json::Map<String, serde_json::Value>,
    pub chain: Vec<Vec<u8>>,
    pub decoding: DecodingKey,
}

impl PublicKey {
    /// Whether a token header's `kid` names this key (in either format).
    pub fn is(&self, kid: &str) -> bool {
        kid == self.libtrust_kid || kid == self.thumbprint
    }

    /// Reads the first certificate of a PEM file.
    pub fn from_certificate(cert_path: &Path) -> Result<PublicKey, KeyError> {
        let cert_pem = read(cert_path)?;
        let chain: Vec<Vec<u8>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .filter_map(Result::ok)
            .map(|c| c.to_vec())
            .collect();
        let leaf = chain.first().ok_or_else(|| KeyError::NoCertificate {
            path: cert_path.to_owned(),
        })?;
        let bad_cert = |message: String| KeyError::BadCertificate {
            path: cert_path.to_owned(),
            message,
        };
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| bad_cert(e.to_string()))?;
        let spki = cert.public_key();
        let unsupported = || KeyError::Unsupported {
            path: cert_path.to_owned(),
        };
        let b64u = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (algorithm, decoding, jwk) = match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                let unsigned = |b: &[u8]| {
                    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
                    b64u.encode(&b[start..])
                };
                // RFC 7638 member order: e, kty, n.
                let jwk = serde_json::json!({
                    "e": unsigned(rsa.exponent),
                    "kty": "RSA",
                    "n": unsigned(rsa.modulus),
                });
                (
                    Algorithm::RS256,
                    DecodingKey::from_rsa_der(&spki.subject_public_key.data),
                    jwk,
                )
            }
            Ok(x509_parser::public_key::PublicKey::EC(_)) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok());
                let (algorithm, crv, size) = match curve {
                    Some(oid) if oid == x509_parser::oid_registry::OID_EC_P256 => {
                        (Algorithm::ES256, "P-256", 32)
                    }
                    Some(oid) if oid == x509_parser::oid_registry::OID_NIST_EC_P384 => {
                        (Algorithm::ES384, "P-384", 48)
                    }
                    _ => return Err(unsupported()),
                };
                // The key's own point (uncompressed: 04 || X || Y, each of the field
                // size), not the curve's generator that registry v3.0.0 hashed.
                let point = &spki.subject_public_key.data;
                if point.len() != 1 + 2 * size || point[0] != 4 {
                    return Err(unsupported());
                }
                // RFC 7638 member order: crv, kty, x, y.
                let jwk = serde_json::json!({
                    "crv": crv,
                    "kty": "EC",
                    "x": b64u.encode(&point[1..1 + size]),
                    "y": b64u.encode(&point[1 + size..]),
                });
                (algorithm, DecodingKey::from_ec_der(point), jwk)
            }
            _ => return Err(unsupported()),
        };
        let libtrust_kid = libtrust_key_id(spki.raw);
        let thumbprint = jwk_thumbprint(&jwk);
        let jwk = match jwk {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        Ok(PublicKey {
            algorithm,
            libtrust_kid,
            thumbprint,
            jwk,
            chain,
            decoding,
        })
    }
}

impl SigningKey {
    /// Loads a certificate (chain) and its private key, as docker_auth's
    /// `token.certificate` / `token.key`, and proves they belong together.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<SigningKey, KeyError> {
        let PublicKey {
            algorithm,
            libtrust_kid,
            thumbprint,
            jwk,
            chain,
            decoding,
        } = PublicKey::from_certificate(cert_path)?;
        let encoding = load_private_key(key_path, algorithm)?;

        // A key that does not match its certificate would sign tokens nobody accepts;
        // refuse it at load rather than at the first push.
        let probe = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(algorithm),
            &serde_json::json!({"probe": true, "exp": u32::MAX}),
            &encoding,
        )
        .map_err(|source| KeyError::BadKey {
            path: key_path.to_owned(),
            source,
        })?;
        let mut validation = jsonwebtoken::Validation::new(algorithm);
        validation.validate_aud = false;
        if jsonwebtoken::decode::<serde_json::Value>(&probe, &decoding, &validation).is_err() {
            return Err(KeyError::Mismatch {
                key: key_path.to_owned(),
                cert: cert_path.to_owned(),
            });
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(SigningKey {
            algorithm,
            kid: libtrust_kid.clone(),
            libtrust_kid,
            thumbprint,
            jwk,
            x5c: chain.iter().map(|c| b64.encode(c)).collect(),
            encoding,
            decoding,
            certificate_path: cert_path.to_owned(),
        })
    }

    /// Loads the generated key from `dir`, making it first if it is not there yet.
    /// Returns the key and whether it was just made.
    ///
    /// Replicas sharing `dir` (one volume for all) must end up with one key: the look and
    /// the making happen under an exclusive lock on `dir/token.lock` (flock: also across
    /// hosts on NFSv4), and each file is written beside its place and renamed over it, so
    /// nobody reads half a key or a key with another's certificate. A folder that cannot
    /// hold the lock (mounted read-only) is read as it is, when both files are there.
    pub fn load_or_generate(dir: &Path) -> Result<(SigningKey, bool), KeyError> {
        let cert = dir.join("token.crt");
        let key = dir.join("token.key");
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Io { path, source }
        };
        if !dir.exists() {
            private_dir(dir).map_err(io_err(dir))?;
        }
        let lock_path = dir.join("token.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path);
        let _held = match lock {
            Ok(file) => {
                file.lock().map_err(io_err(&lock_path))?;
                Some(file)
            }
            Err(_) if cert.exists() && key.exists() => None,
            Err(e) => return Err(io_err(&lock_path)(e)),
        };
        if cert.exists() && key.exists() {
            return Ok((SigningKey::load(&cert, &key)?, false));
        }
        generate(dir, &cert, &key)?;
        Ok((SigningKey::load(&cert, &key)?, true))
        // The lock goes with `_held`, once the pair is read.
    }
}

/// Which key ID tokens carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KidFormat {
    /// libtrust's (registry 2.x, docker_auth's default).
    #[default]
    Libtrust,
    /// The RFC 7638 JWK thumbprint (registry v3, and JWKS documents).
    Rfc7638,
}

impl SigningKey {
    pub fn with_kid_format(mut self, format: KidFormat) -> SigningKey {
        self.kid = match format {
            KidFormat::Libtrust => self.libtrust_kid.clone(),
            KidFormat::Rfc7638 => self.thumbprint.clone(),
        };
        self
    }

    /// The public key as a JWKS document (RFC 7517), in the form registry v3's
    /// `auth.token.jwks` reads.
    pub fn jwks(&self) -> serde_json::Value {
        let mut jwk = self.jwk.clone();
        jwk.insert("kid".into(), self.kid.clone().into());
        jwk.insert("use".into(), "sig".into());
        let alg = match self.algorithm {
            Algorithm::ES384 => "ES384",
            Algorithm::RS256 => "RS256",
            _ => "ES256",
        };
        jwk.insert("alg".into(), alg.into());
        serde_json::json!({ "keys": [jwk] })
    }
}

/// A fresh ES256 key and a self-signed certificate for it: ES256 signs an order of
/// magnitude faster than RSA, and registry:2 accepts it (libtrust `ec_key.go`).
fn generate(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), KeyError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Io { path, source }
    };
    private_dir(dir).map_err(io_err(dir))?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "regate token signer");
    let cert = params.self_signed(&key)?;
    // The key first: a pair is complete once the certificate is there, and both are only
    // looked at under the lock anyway.
    crate::files::write_private_atomically(key_path, key.serialize_pem().as_bytes())
        .map_err(io_err(key_path))?;
    crate::files::write_atomically(cert_path, cert.pem().as_bytes()).map_err(io_err(cert_path))?;
    Ok(())
}

use crate::files::private_dir;
pub use crate::files::write_private;

fn load_private_key(path: &Path, algorithm: Algorithm) -> Result<EncodingKey, KeyError> {
    let pem = read(path)?;
    let bad = |source| KeyError::BadKey {
        path: path.to_owned(),
        source,
    };
    let rsa = matches!(algorithm, Algorithm::RS256);
    for item in rustls_pemfile::read_all(&mut pem.as_slice()).filter_map(Result::ok) {
        let key = match item {
            Item::Pkcs8Key(k) if rsa => {
                EncodingKey::from_rsa_pem(&reencode("PRIVATE KEY", k.secret_pkcs8_der()))
            }
            Item::Pkcs8Key(k) => Ok(EncodingKey::from_ec_der(k.secret_pkcs8_der())),
            Item::Pkcs1Key(k) if rsa => Ok(EncodingKey::from_rsa_der(k.secret_pkcs1_der())),
            Item::Sec1Key(k) if !rsa => Ok(EncodingKey::from_ec_der(&sec1_to_pkcs8(
                k.secret_sec1_der(),
                algorithm,
            ))),
            _ => continue,
        };
        return key.map_err(bad);
    }
    Err(KeyError::NoKey {
        path: path.to_owned(),
    })
}

fn reencode(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

/// Wraps an `EC PRIVATE KEY` (SEC1, as `openssl ecparam -genkey` writes) in PKCS#8, the
/// only form the signer takes: `SEQUENCE { 0, SEQUENCE { ecPublicKey, curve }, OCTET STRING }`.
fn sec1_to_pkcs8(sec1: &[u8], algorithm: Algorithm) -> Vec<u8> {
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    let curve = if algorithm == Algorithm::ES384 {
        P384
    } else {
        P256
    };
    let alg_id = der(0x30, &[EC_PUBLIC_KEY, curve].concat());
    let body = [&[0x02, 0x01, 0x00][..], &alg_id, &der(0x04, sec1)].concat();
    der(0x30, &body)
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// RFC 7638: SHA-256 of the JWK's required members, sorted, without whitespace, in
/// base64url. serde_json's map keeps keys sorted, which is exactly that canonical form.
pub fn jwk_thumbprint(jwk: &serde_json::Value) -> String {
    let canonical = serde_json::to_vec(jwk).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &canonical);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// libtrust's key ID (docker/libtrust `util.go` `keyIDFromCryptoKey`): SHA-256 of the DER
/// SubjectPublicKeyInfo, first 240 bits, base32, in twelve groups of four. registry:2.x
/// finds the verifying certificate by it.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    let b32 = data_encoding::BASE32_NOPAD.encode(&digest.as_ref()[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests;
