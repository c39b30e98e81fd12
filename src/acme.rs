//! Certificates from an ACME CA: docker_auth's `server.letsencrypt` (Let's Encrypt by
//! default, any RFC 8555 CA with `directory_url`).
//!
//! ```text
//! start : cache_dir (0700) -> the cached certificate, if any, serves at once
//! run   : every `check_every` -> due? (none, another host or CA, last third of its life)
//!           -> order (order.rs: account, TLS-ALPN-01 on the HTTPS listener, finalize)
//!           -> saved (0600), swapped in for new handshakes; open connections keep theirs
//!         failed -> logged, counted; the current certificate keeps serving; retried
//!                   after 1 min, doubling up to 1 h
//! ```
//!
//! The validation is TLS-ALPN-01 (RFC 8737), as Go's autocert (and so docker_auth) does:
//! the CA connects to port 443 of `host` offering ALPN `acme-tls/1` and must be shown a
//! certificate carrying the key authorization (`tls::Certificates` serves it). It needs no
//! second listener and no port 80.

mod order;
mod store;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::tls::Certificates;
use store::Store;
pub use store::{describe, Held};

/// Let's Encrypt's production directory: `server.letsencrypt.directory_url`'s default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// `server.letsencrypt`, validated (`config/server.rs` reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The one DNS name the certificate is for.
    pub host: String,
    /// The account's contact, if given (the CA's expiry and policy mail goes there).
    pub email: Option<String>,
    /// Holds the account key and the certificate with its key (`store.rs`).
    pub cache_dir: PathBuf,
    pub directory_url: String,
    /// The CA (PEM) of the ACME server's own HTTPS certificate; the system's roots if not
    /// set.
    pub ca_certificate: Option<PathBuf>,
    pub renewal: Renewal,
}

/// When to renew, and how soon to try again after a failure. Not configuration keys: the
/// defaults are the behaviour; the fields exist so tests need not wait out real hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// How often the certificate is looked at.
    pub check_every: Duration,
    /// Renew in the last 1/N of the certificate's lifetime: 3 renews a 90-day certificate
    /// 30 days before it expires (Let's Encrypt's advice), and a 6-day one 2 days before.
    /// 1 renews at every check.
    pub renew_in_last: u32,
    /// After a failed attempt the next waits this long, doubling with each further failure
    /// up to `retry_most` (and never longer than `check_every`).
    pub retry_first: Duration,
    pub retry_most: Duration,
}

impl Default for Renewal {
    fn default() -> Renewal {
        Renewal {
            check_every: Duration::from_secs(12 * 3600),
            renew_in_last: 3,
            retry_first: Duration::from_secs(60),
            retry_most: Duration::from_secs(3600),
        }
    }
}

impl Renewal {
    /// How long to wait after `failures` failed attempts in a row (at least one).
    fn retry_after(&self, failures: u32) -> Duration {
        let doubled = self
            .retry_first
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        doubled.min(self.retry_most).min(self.check_every)
    }

    /// When a certificate valid from `not_before` to `not_after` is due for renewal.
    pub fn due_at(&self, not_before: SystemTime, not_after: SystemTime) -> SystemTime {
        let lifetime = not_after.duration_since(not_before).unwrap_or_default();
        not_after - lifetime / self.renew_in_last.max(1)
    }
}

/// Why a new certificate is needed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    NoCertificate,
    /// The cached certificate does not name `host` (the setting changed).
    OtherHost,
    /// The cached certificate came from another CA's directory (staging, then production).
    OtherCa(String),
    /// In the last part of its lifetime (or past it).
    Renewal {
        expires: SystemTime,
    },
}

impl std::fmt::Display for Due {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Due::NoCertificate => f.write_str("no certificate yet"),
            Due::OtherHost => f.write_str("the cached certificate is for another host"),
            Due::OtherCa(url) => write!(f, "the cached certificate came from {url}"),
            Due::Renewal { expires } => write!(f, "it expires {}", rfc3339(*expires)),
        }
    }
}

/// Whether `held` (the certificate being served) must be replaced at `now`; one function
/// decides, at start, at every check and in `regate check`.
pub fn due(held: Option<&Held>, settings: &Settings, now: SystemTime) -> Option<Due> {
    let Some(held) = held else {
        return Some(Due::NoCertificate);
    };
    if !held
        .names
        .iter()
        .any(|n| n.eq_ignore_ascii_case(&settings.host))
    {
        return Some(Due::OtherHost);
    }
    // A certificate docker_auth (autocert) left in the cache has no record of its CA:
    // it is trusted to be from the configured one.
    if let Some(from) = held
        .directory
        .as_ref()
        .filter(|d| **d != settings.directory_url)
    {
        return Some(Due::OtherCa(from.clone()));
    }
    let at = settings.renewal.due_at(held.not_before, held.not_after);
    (now >= at).then_some(Due::Renewal {
        expires: held.not_after,
    })
}

/// Why ACME could not start, or one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Ca(#[from] crate::tls::CaError),
    #[error("{0}")]
    Protocol(#[from] instant_acme::Error),
    #[error("the CA offers no tls-alpn-01 validation for {0}")]
    NoTlsAlpn(String),
    #[error("the authorization for {name} is {status:?}")]
    Authorization {
        name: String,
        status: instant_acme::AuthorizationStatus,
    },
    /// The CA's own words about why its validation failed.
    #[error("the CA could not validate {name}: {problem}")]
    Invalid {
        name: String,
        problem: instant_acme::Problem,
    },
    #[error("the CA could not validate {0} and gave no reason")]
    InvalidWithoutReason(String),
    #[error("the order is {0:?} instead of ready")]
    Order(instant_acme::OrderStatus),
    #[error("making a key or request: {0}")]
    Key(#[from] rcgen::Error),
    #[error("the challenge certificate's key: {0}")]
    ChallengeKey(#[source] rustls::Error),
    #[error("the issued certificate does not load: {0}")]
    Issued(#[from] crate::tls::TlsError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Obtains and renews the server certificate in the background.
pub struct Acme {
    settings: Settings,
    certs: Arc<Certificates>,
    metrics: Arc<Metrics>,
    store: Store,
    /// What is being served.
    held: Option<Held>,
    client: order::Client,
}

/// One attempt (account, order, validation, issuance) that takes longer is abandoned.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);

impl Acme {
    /// Opens `cache_dir` (made 0700 if missing) and serves the certificate cached there,
    /// if any, before the listener opens. Fails when `cache_dir` cannot be made or the
    /// ACME server's CA cannot be read.
    pub fn start(
        settings: &Settings,
        certs: Arc<Certificates>,
        metrics: Arc<Metrics>,
    ) -> Result<Acme, AcmeError> {
        let store = Store::open(&settings.cache_dir)?;
        let client = order::Client::new(settings)?;
        metrics.acme_enabled.store(true, Relaxed);
        let held = match store.load(&settings.host) {
            Ok(Some((key, held))) => {
                certs.replace(key);
                metrics
                    .acme_certificate_expiry
                    .store(unix(held.not_after), Relaxed);
                tracing::info!(
                    host = %settings.host,
                    serial = %held.serial,
                    expires = %rfc3339(held.not_after),
                    file = %store.certificate_path(&settings.host).display(),
                    "serving the cached certificate"
                );
                Some(held)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(host = %settings.host, "the cached certificate is not used: {e}");
                None
            }
        };
        if held.is_none() {
            tracing::warn!(
                host = %settings.host,
                directory = %settings.directory_url,
                "no certificate for {} in {} yet: obtaining one now; until it arrives every TLS handshake fails",
                settings.host,
                settings.cache_dir.display()
            );
        }
        Ok(Acme {
            settings: settings.clone(),
            certs,
            metrics,
            store,
            held,
            client,
        })
    }

    /// Checks now and then every `check_every` (sooner after a failure) until shutdown.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            let wait = tokio::select! {
                wait = self.check(&mut failures) => wait,
                _ = shutdown.changed() => return,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Renews if due; returns how long to wait before the next check.
    async fn check(&mut self, failures: &mut u32) -> Duration {
        self.metrics.acme_checks.fetch_add(1, Relaxed);
        let renewal = self.settings.renewal;
        let Some(why) = due(self.held.as_ref(), &self.settings, SystemTime::now()) else {
            return renewal.check_every;
        };
        tracing::info!(host = %self.settings.host, "requesting a certificate: {why}");
        let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, self.renew());
        let result = match attempt.await {
            Ok(result) => result,
            Err(_) => Err(AcmeError::Timeout(ATTEMPT_TIMEOUT)),
        };
        match result {
            Ok(held) => {
                *failures = 0;
                self.metrics
                    .acme_certificates_obtained
                    .fetch_add(1, Relaxed);
                self.metrics
                    .acme_certificate_expiry
                    .store(unix(held.not_after), Relaxed);
                tracing::info!(
                    host = %self.settings.host,
                    serial = %held.serial,
                    expires = %rfc3339(held.not_after),
                    renews = %rfc3339(renewal.due_at(held.not_before, held.not_after)),
                    "new certificate obtained and serving"
                );
                self.held = Some(held);
                renewal.check_every
            }
            Err(e) => {
                *failures += 1;
                self.metrics.acme_renewal_failures.fetch_add(1, Relaxed);
                // A fresh account and directory next time: the failure may be theirs.
                self.client.forget_account();
                let wait = renewal.retry_after(*failures);
                let serving = match &self.held {
                    Some(held) => format!(
                        "the current certificate (serial {}, expires {}) keeps serving",
                        held.serial,
                        rfc3339(held.not_after)
                    ),
                    None => "there is no certificate yet: TLS handshakes keep failing".to_owned(),
                };
                tracing::error!(
                    host = %self.settings.host,
                    directory = %self.settings.directory_url,
                    "obtaining a certificate failed: {}; {serving}; next attempt in {wait:?}",
                    with_causes(&e)
                );
                wait
            }
        }
    }

    /// One attempt: obtain, save, serve.
    async fn renew(&mut self) -> Result<Held, AcmeError> {
        let issued = self
            .client
            .obtain(&self.settings, &self.store, &self.certs)
            .await?;
        let path = self.store.save(&self.settings, &issued)?;
        let (key, held) = self
            .store
            .load(&self.settings.host)?
            .ok_or_else(|| AcmeError::Io {
                path,
                source: std::io::ErrorKind::NotFound.into(),
            })?;
        self.certs.replace(key);
        Ok(held)
    }
}

/// What `regate check` says about the ACME settings: nothing is written or contacted.
pub fn inspect(settings: &Settings) -> Result<Vec<String>, AcmeError> {
    crate::tls::client_config(settings.ca_certificate.as_deref())?;
    let mut notes = Vec::new();
    let dir = &settings.cache_dir;
    if !dir.exists() {
        notes.push(format!(
            "letsencrypt: {} does not exist; `serve` makes it (0700)",
            dir.display()
        ));
    } else if !dir.is_dir() {
        return Err(AcmeError::Io {
            path: dir.clone(),
            source: std::io::ErrorKind::NotADirectory.into(),
        });
    }
    let held = match Store::at(dir).load(&settings.host) {
        Ok(loaded) => loaded.map(|(_, held)| held),
        Err(e) => {
            notes.push(format!(
                "letsencrypt: the cached certificate is not used: {e}"
            ));
            None
        }
    };
    if let Some(h) = &held {
        notes.push(format!(
            "letsencrypt: cached certificate for {}: serial {}, expires {}, renewed from {}",
            settings.host,
            h.serial,
            rfc3339(h.not_after),
            rfc3339(settings.renewal.due_at(h.not_before, h.not_after))
        ));
    }
    if let Some(why) = due(held.as_ref(), settings, SystemTime::now()) {
        notes.push(format!(
            "letsencrypt: `serve` requests a certificate for {} from {} at start ({why})",
            settings.host, settings.directory_url
        ));
    }
    Ok(notes)
}

/// The whole chain: hyper's top error says little ("client error (Connect)"); the cause
/// is at the bottom ("Connection refused"). Layers that repeat the one below are skipped.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.ends_with(&said) {
            text = format!("{text}: {said}");
        }
        cause = c.source();
    }
    text
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn rfc3339(t: SystemTime) -> String {
    let t: time::OffsetDateTime = t.into();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t}"))
}

#[cfg(test)]
mod tests;
