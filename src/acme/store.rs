//! `cache_dir`, laid out as Go's autocert (docker_auth) lays it out, so a docker_auth
//! cache keeps serving after the move and is renewed from there (no new order: Let's
//! Encrypt limits duplicate certificates to five a week):
//!
//! | file | holds |
//! |---|---|
//! | `HOST` | the certificate's private key, then the chain (PEM), 0600: autocert's format |
//! | `HOST+directory` | the directory URL of the CA that issued it (regate's own) |
//! | `regate-acme-account.json` | the ACME account: its URL and private key, 0600 |
//!
//! autocert's own account key (`acme_account+key`) is left alone: regate registers an
//! account of its own.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::AccountCredentials;
use rustls::sign::CertifiedKey;

use super::{AcmeError, Settings};
use crate::files::{private_dir, write_private};
use crate::tls::{load_certified_key, TlsFiles};

const ACCOUNT: &str = "regate-acme-account.json";

/// The certificate being served, as far as renewal cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Upper-case hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The CA's directory, when regate obtained it (autocert does not say).
    pub directory: Option<String>,
}

/// What the CA issued: the key made for it and the chain it sent (PEM).
pub struct Issued {
    pub key_pem: String,
    pub chain_pem: String,
    pub directory: String,
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// `dir`, made 0700 if missing (docker_auth insisted it exist; regate makes it), or
    /// closed to others if open: it holds private keys.
    pub fn open(dir: &Path) -> Result<Store, AcmeError> {
        private_dir(dir).map_err(|source| AcmeError::Io {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Store::at(dir))
    }

    /// `dir` as it is, for reading only.
    pub fn at(dir: &Path) -> Store {
        Store {
            dir: dir.to_owned(),
        }
    }

    pub fn certificate_path(&self, host: &str) -> PathBuf {
        self.dir.join(host)
    }

    fn directory_path(&self, host: &str) -> PathBuf {
        self.dir.join(format!("{host}+directory"))
    }

    /// The cached certificate for `host` and what renewal needs to know of it; `None`
    /// when there is none.
    pub fn load(&self, host: &str) -> Result<Option<(CertifiedKey, Held)>, AcmeError> {
        let path = self.certificate_path(host);
        if !path.exists() {
            return Ok(None);
        }
        // One file holds both: the chain's blocks and the key's are told apart by type.
        let files = TlsFiles {
            certificate: path.clone(),
            key: path.clone(),
        };
        let key = load_certified_key(&files)?;
        let leaf = key.end_entity_cert().map_err(|e| {
            AcmeError::Issued(crate::tls::TlsError::Key {
                path: path.clone(),
                source: e,
            })
        })?;
        let mut held = describe(leaf.as_ref()).ok_or_else(|| AcmeError::Io {
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, "not an X.509 certificate"),
        })?;
        held.directory = fs::read_to_string(self.directory_path(host))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        Ok(Some((key, held)))
    }

    /// Saves what the CA issued for `settings.host`, replacing the previous certificate at
    /// once (a new file renamed over the old): a crash never leaves half a file.
    pub fn save(&self, settings: &Settings, issued: &Issued) -> Result<PathBuf, AcmeError> {
        let path = self.certificate_path(&settings.host);
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| AcmeError::Io { path, source }
        };
        let fresh = self.dir.join(format!("{}.new", settings.host));
        let contents = format!("{}{}", issued.key_pem, issued.chain_pem);
        write_private(&fresh, contents.as_bytes()).map_err(io_err(&fresh))?;
        let directory = self.directory_path(&settings.host);
        fs::write(&directory, format!("{}\n", issued.directory)).map_err(io_err(&directory))?;
        fs::rename(&fresh, &path).map_err(io_err(&path))?;
        Ok(path)
    }

    /// The account registered with `directory`, if one was.
    pub fn account(&self, directory: &str) -> Option<AccountCredentials> {
        #[derive(serde::Deserialize)]
        struct Registered {
            directory: Option<String>,
        }
        let json = fs::read(self.dir.join(ACCOUNT)).ok()?;
        let registered: Registered = serde_json::from_slice(&json).ok()?;
        if registered.directory.as_deref() != Some(directory) {
            return None;
        }
        serde_json::from_slice(&json).ok()
    }

    pub fn save_account(&self, credentials: &AccountCredentials) -> Result<(), AcmeError> {
        let path = self.dir.join(ACCOUNT);
        let json = serde_json::to_vec_pretty(credentials).map_err(|e| AcmeError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        write_private(&path, &json).map_err(|source| AcmeError::Io { path, source })
    }
}

/// Serial, names and validity of a DER certificate.
pub fn describe(der: &[u8]) -> Option<Held> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let time = |t: x509_parser::time::ASN1Time| {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = name {
                names.push(d.to_string());
            }
        }
    }
    // DER pads a serial whose first bit is set with a zero byte; openssl does not print it.
    let raw = cert.tbs_certificate.raw_serial();
    let significant = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    let serial = raw[significant..]
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    Some(Held {
        serial,
        names,
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        directory: None,
    })
}
