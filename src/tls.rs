//! HTTPS: the rustls server configuration and a certificate that can be replaced while
//! connections stay open (renewal without a restart); and the client configuration regate
//! uses to reach an HTTPS registry or LDAPS directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// A certificate (chain) and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// HTTPS as the `server` section asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub source: CertSource,
    /// `tls_min_version: TLS13`.
    pub tls13_only: bool,
    /// docker_auth's `tls_curve_preferences`, in order; empty: rustls's default.
    pub curves: Vec<Curve>,
}

/// Where the server certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// `certificate` and `key`: files the operator renews (watched and reloaded).
    Files(TlsFiles),
    /// `letsencrypt`: obtained and renewed by regate itself (`acme.rs`).
    Acme(Box<crate::acme::Settings>),
}

impl ServerTls {
    /// The certificate and key files, when the certificate comes from files.
    pub fn files(&self) -> Option<&TlsFiles> {
        match &self.source {
            CertSource::Files(files) => Some(files),
            CertSource::Acme(_) => None,
        }
    }

    /// The ACME settings, when regate obtains the certificate itself.
    pub fn acme(&self) -> Option<&crate::acme::Settings> {
        match &self.source {
            CertSource::Files(_) => None,
            CertSource::Acme(settings) => Some(settings),
        }
    }
}

/// The ALPN protocol of a TLS-ALPN-01 validation handshake (RFC 8737): the CA's
/// connection offers only this, checks the certificate it is shown, and closes.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The key-exchange groups regate's TLS library (rustls with ring) offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    X25519,
    P256,
    P384,
}

impl Curve {
    /// A name as docker_auth (Go's `tls.CurveID`) writes it, or its number.
    pub fn parse(name: &str) -> Result<Curve, String> {
        match name {
            "X25519" | "x25519" | "29" => Ok(Curve::X25519),
            "P256" | "P-256" | "p256" | "secp256r1" | "23" => Ok(Curve::P256),
            "P384" | "P-384" | "p384" | "secp384r1" | "24" => Ok(Curve::P384),
            "P521" | "P-521" | "p521" | "secp521r1" | "25" => Err(format!(
                "`{name}` is not offered by regate's TLS library (rustls with ring): use X25519, P256 or P384"
            )),
            _ => Err(format!("`{name}` is not a curve: X25519, P256 or P384")),
        }
    }

    fn group(self) -> &'static dyn rustls::crypto::SupportedKxGroup {
        use rustls::crypto::ring::kx_group;
        match self {
            Curve::X25519 => kx_group::X25519,
            Curve::P256 => kx_group::SECP256R1,
            Curve::P384 => kx_group::SECP384R1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: no PEM certificate in the file")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no private key in the file")]
    NoKey { path: PathBuf },
    #[error("{path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the key {key} does not belong to the certificate {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
}

/// Reads a certificate chain and its key, and checks that they belong together.
pub fn load_certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        fs::read(path).map_err(|source| TlsError::Io {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(&files.certificate)?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.certificate.clone(),
        });
    }
    let key_pem = read(&files.key)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey {
            path: files.key.clone(),
        })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        CertifiedKey::from_der(chain, key, &provider).map_err(|source| match source {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                cert: files.certificate.clone(),
                key: files.key.clone(),
            },
            source => TlsError::Key {
                path: files.key.clone(),
                source,
            },
        })?;
    Ok(certified)
}

/// Serves whichever certificate was loaded last; a reload or a renewal swaps it for new
/// handshakes only. While an ACME order waits for its TLS-ALPN-01 validation, the CA's
/// handshake (ALPN `acme-tls/1` only) is shown the challenge certificate instead.
#[derive(Debug)]
pub struct Certificates {
    /// `None` until an ACME CA has issued the first certificate: handshakes fail meanwhile.
    current: ArcSwapOption<CertifiedKey>,
    challenge: ArcSwapOption<Challenge>,
}

/// The certificate a TLS-ALPN-01 validation of `name` must see.
#[derive(Debug)]
struct Challenge {
    name: String,
    key: Arc<CertifiedKey>,
}

impl Certificates {
    pub fn new(key: CertifiedKey) -> Arc<Certificates> {
        let certs = Certificates::empty();
        certs.replace(key);
        certs
    }

    /// No certificate yet (ACME, nothing cached): every handshake fails until
    /// [`Certificates::replace`].
    pub fn empty() -> Arc<Certificates> {
        Arc::new(Certificates {
            current: ArcSwapOption::empty(),
            challenge: ArcSwapOption::empty(),
        })
    }

    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Some(Arc::new(key)));
    }

    /// Shows `key` to TLS-ALPN-01 handshakes for `name` until [`Certificates::clear_challenge`].
    pub fn set_challenge(&self, name: &str, key: CertifiedKey) {
        self.challenge.store(Some(Arc::new(Challenge {
            name: name.to_ascii_lowercase(),
            key: Arc::new(key),
        })));
    }

    pub fn clear_challenge(&self) {
        self.challenge.store(None);
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737 3: the validation offers `acme-tls/1` alone and names the identifier
        // in SNI. A client offering it beside a real protocol negotiates the real one
        // (server_config lists it last) and is served as usual.
        let validation = hello.alpn().is_some_and(|mut offered| {
            offered.next() == Some(ACME_TLS_ALPN) && offered.next().is_none()
        });
        if !validation {
            return self.current.load_full();
        }
        // Another name gets no certificate (the handshake fails), as does a validation
        // when no order is waiting.
        let sni = hello.server_name()?;
        let challenge = self.challenge.load_full()?;
        sni.eq_ignore_ascii_case(&challenge.name)
            .then(|| challenge.key.clone())
    }
}

/// TLS 1.2 and 1.3 (or 1.3 only), the curves asked for, ALPN `h2` then `http/1.1` (and
/// `acme-tls/1` with ACME).
pub fn server_config(certs: Arc<Certificates>, settings: &ServerTls) -> Arc<ServerConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !settings.curves.is_empty() {
        provider.kx_groups = settings.curves.iter().map(|c| c.group()).collect();
    }
    let provider = Arc::new(provider);
    let versions: &[&rustls::SupportedProtocolVersion] = if settings.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if settings.acme().is_some() {
        // Last: rustls picks the first of its own list the client offers, so only a
        // client offering nothing else (the CA's validation) gets it.
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    Arc::new(config)
}

/// Why the roots for a TLS client could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read ca_certificate {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("ca_certificate {0} holds no PEM certificate rustls accepts")]
    NoCertificate(PathBuf),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A rustls client that trusts the certificates in `ca` (PEM), or the system's roots.
pub fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, CaError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = fs::read(path).map_err(|source| CaError::Read {
                path: path.to_owned(),
                source,
            })?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(CaError::NoCertificate(path.to_owned()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    with_roots(roots).map_err(CaError::from)
}

/// A client that trusts nothing, for a plain-http registry (never used to connect).
pub fn client_config_without_roots() -> rustls::ClientConfig {
    with_roots(rustls::RootCertStore::empty()).expect("ring supports the default versions")
}

fn with_roots(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handshake in memory between regate's server config and a client offering `offer`.
    fn handshake(server_curves: Vec<Curve>, offer: Curve) -> Result<(), rustls::Error> {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["regate.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            certificate: dir.path().join("s.crt"),
            key: dir.path().join("s.key"),
        };
        fs::write(&files.certificate, cert.pem()).unwrap();
        fs::write(&files.key, key.serialize_pem()).unwrap();
        let settings = ServerTls {
            source: CertSource::Files(files.clone()),
            tls13_only: false,
            curves: server_curves,
        };
        let certs = Certificates::new(load_certified_key(&files).unwrap());
        let mut server = rustls::ServerConnection::new(server_config(certs, &settings)).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let mut provider = rustls::crypto::ring::default_provider();
        provider.kx_groups = vec![offer.group()];
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client = rustls::ClientConnection::new(
            Arc::new(client_config),
            "regate.test".try_into().unwrap(),
        )
        .unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets()?;
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish")
    }

    #[test]
    fn curve_preferences_are_honoured() {
        assert!(handshake(vec![], Curve::X25519).is_ok());
        assert!(handshake(vec![Curve::P384], Curve::P384).is_ok());
        assert!(handshake(vec![Curve::P384], Curve::X25519).is_err());
        assert!(handshake(vec![Curve::P256, Curve::X25519], Curve::P384).is_err());
        assert!(Curve::parse("P521").unwrap_err().contains("not offered"));
        assert_eq!(Curve::parse("29"), Ok(Curve::X25519));
    }
}
