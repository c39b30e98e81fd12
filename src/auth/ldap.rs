//! docker_auth's `ldap_auth`: an account that is neither in `users` nor in the htpasswd
//! file is looked up in an LDAP directory. Its entry is searched for (as the service
//! account `bind_dn`, anonymously, or as the user), the password is checked by binding as
//! that entry, and attributes and group memberships become the account's labels.
//!
//! The directory is a service of its own that can be slow or gone, so one deadline
//! (`timeout`) covers a whole login: waiting for a connection, connecting, every bind and
//! search. Past it the login is "unavailable" (503 from `/auth`), never a hang. Connections
//! are pooled up to `pool_size` and bound again before each use. A successful login is
//! remembered for `cache_ttl` under a keyed hash of the account and password (no password
//! is kept), so a pull of many layers asks the directory once.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapError};
use tokio::sync::Semaphore;

use crate::acl::Labels;
use crate::metrics::Metrics;

use super::backend::{Authenticator, BoxFuture, Described, Verdict};
use super::identity::{AuthnError, Backend, Identity};
use super::{CredentialKey, Secret};

mod conn;
mod setup;
mod text;

pub use setup::SetupError;
use setup::{client_tls, read_bind_password};
pub use text::{cn_of, escape_filter_value, expand};

#[cfg(test)]
mod tests;

/// A connection idle in the pool longer than this is closed rather than reused:
/// directories and firewalls drop idle connections silently after a few minutes.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain LDAP: passwords cross the network in clear text.
    None,
    /// Plain LDAP upgraded with the StartTLS operation before anything else is sent.
    StartTls,
    /// LDAPS: TLS from the first byte.
    Always,
}

/// A validated `ldap_auth` section.
#[derive(Debug, Clone)]
pub struct LdapConfig {
    /// `ldap://HOST:PORT` or `ldaps://HOST:PORT`.
    pub url: String,
    pub tls: TlsMode,
    pub insecure_tls_skip_verify: bool,
    /// PEM roots to check the directory's certificate against; `None`: the system's.
    pub ca_certificate: Option<PathBuf>,
    pub bind_dn: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    /// The first bind is as the user (`bind_dn` with `${account}`), not a service account.
    pub initial_bind_as_user: bool,
    pub base: String,
    /// With `${account}`, replaced by the escaped account name.
    pub filter: String,
    pub labels: Vec<LabelMap>,
    pub group_search: Option<GroupSearch>,
    pub connect_timeout: Duration,
    /// The whole login, from waiting for a connection to the last search.
    pub timeout: Duration,
    pub pool_size: usize,
    /// Zero: every login asks the directory.
    pub cache_ttl: Duration,
}

/// One `labels` entry: an attribute of the user's entry becomes a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    pub label: String,
    pub attribute: String,
    /// Keep only the first `CN` of a DN value (`cn=devs,ou=groups,...` -> `devs`).
    pub parse_cn: bool,
    pub lower_case: bool,
}

/// regate's `group_search`: the groups whose filter matches the user's DN, as a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSearch {
    pub base: String,
    /// With `${dn}` and/or `${account}`, each replaced by its escaped value.
    pub filter: String,
    pub attribute: String,
    pub label: String,
    pub parse_cn: bool,
    pub lower_case: bool,
}

/// Why the directory could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{step}: {source}")]
    Ldap {
        step: &'static str,
        #[source]
        source: LdapError,
    },
    #[error("{step}: the directory answered result code {rc} {text:?}")]
    Refused {
        step: &'static str,
        rc: u32,
        text: String,
    },
    #[error("with initial_bind_as_user the entry can only be read with the user's password")]
    NeedsPassword,
}

impl DirectoryError {
    /// Whether the connection itself failed (rather than the directory saying no): on a
    /// pooled connection, worth one more try on a new one.
    fn is_transport(&self) -> bool {
        matches!(self, DirectoryError::Ldap { .. })
    }
}

/// What the directory says about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The filter matches no entry, or more than one (a login never picks among several).
    NoSuchAccount,
    WrongPassword,
    Found {
        dn: String,
        labels: Labels,
    },
}

struct Idle {
    ldap: Ldap,
    since: Instant,
}

/// The directory client: a pool of connections, and the cache of successful logins.
pub struct Directory {
    config: LdapConfig,
    bind_password: Option<Secret>,
    tls: Option<Arc<rustls::ClientConfig>>,
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
    cache: Option<moka::sync::Cache<[u8; 32], Arc<Labels>>>,
    cache_key: CredentialKey,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// Reads the bind password and CA files; connects to nothing yet (the directory may
    /// be down when regate starts, and `users` still work then).
    pub fn new(config: LdapConfig, metrics: Arc<Metrics>) -> Result<Directory, SetupError> {
        let bind_password = match (&config.bind_password_file, config.initial_bind_as_user) {
            (Some(path), false) => Some(read_bind_password(path)?),
            _ => None,
        };
        let tls = client_tls(&config)?;
        let cache = (!config.cache_ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(config.cache_ttl)
                .build()
        });
        Ok(Directory {
            permits: Semaphore::new(config.pool_size.max(1)),
            idle: Mutex::new(Vec::new()),
            config,
            bind_password,
            tls,
            cache,
            cache_key: CredentialKey::generate(),
            metrics,
        })
    }

    /// Checks an account and password against the directory. Unknown account or wrong
    /// password: `BadCredentials`; no answer in time or a directory error:
    /// `DirectoryUnavailable`, with the cause in the log.
    pub async fn authenticate(
        &self,
        account: &str,
        password: &Secret,
    ) -> Result<Identity, AuthnError> {
        // An empty password makes a simple bind "unauthenticated" (RFC 4513 section
        // 5.1.2), which many directories answer with success: it must never get there
        // (`judge` refuses it first).
        match self.judge(account, password).await {
            Verdict::Accepted(identity) => Ok(identity),
            Verdict::Refused(e) => Err(e),
            Verdict::NoMatch => Err(AuthnError::BadCredentials),
        }
    }

    /// The chain's question: as [`Directory::authenticate`], but an account the directory
    /// does not have is no match (the next backend may have it), as in docker_auth.
    async fn judge(&self, account: &str, password: &Secret) -> Verdict {
        if account.is_empty() || password.expose().is_empty() {
            return Verdict::Refused(AuthnError::BadCredentials);
        }
        let key = self.cache_key(account, password);
        if let Some(labels) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            self.metrics.credential_cache_hits.fetch_add(1, Relaxed);
            return Verdict::Accepted(identity(account, (*labels).clone()));
        }
        self.metrics.credential_cache_misses.fetch_add(1, Relaxed);
        match self.lookup(account, Some(password)).await {
            Ok(Lookup::Found { labels, .. }) => {
                if let Some(cache) = &self.cache {
                    cache.insert(key, Arc::new(labels.clone()));
                }
                Verdict::Accepted(identity(account, labels))
            }
            Ok(Lookup::WrongPassword) => Verdict::Refused(AuthnError::BadCredentials),
            Ok(Lookup::NoSuchAccount) => Verdict::NoMatch,
            Err(e) => {
                tracing::warn!(
                    directory = %self.config.url,
                    account,
                    "the LDAP directory could not check a login: {e}"
                );
                Verdict::Refused(AuthnError::DirectoryUnavailable)
            }
        }
    }

    /// Whether this login succeeded within `cache_ttl` (no directory round trip).
    pub fn is_known(&self, account: &str, password: &Secret) -> bool {
        let key = self.cache_key(account, password);
        self.cache.as_ref().is_some_and(|c| c.contains_key(&key))
    }

    /// The account's entry and labels, with the password checked when given (`regate
    /// explain` asks without one), within the `timeout`; nothing cached.
    pub async fn lookup(
        &self,
        account: &str,
        password: Option<&Secret>,
    ) -> Result<Lookup, DirectoryError> {
        if password.is_some_and(|p| p.expose().is_empty()) {
            return Ok(Lookup::WrongPassword);
        }
        if account.is_empty() {
            return Ok(Lookup::NoSuchAccount);
        }
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, self.ask(account, password))
            .await
            .map_err(|_| DirectoryError::Timeout(timeout))?
    }

    /// One login on a pooled connection; a pooled connection the server has closed in the
    /// meantime gets one more try on a new one. A connection whose login failed, or was
    /// cut off by the deadline, is dropped, never pooled in an unknown state.
    async fn ask(
        &self,
        account: &str,
        password: Option<&Secret>,
    ) -> Result<Lookup, DirectoryError> {
        let _permit = self.permits.acquire().await;
        let (mut ldap, reused) = match self.pooled() {
            Some(ldap) => (ldap, true),
            None => (self.connect().await?, false),
        };
        let result = match self.ask_on(&mut ldap, account, password).await {
            Err(e) if reused && e.is_transport() => {
                tracing::debug!("a pooled LDAP connection failed ({e}); trying a new one");
                ldap = self.connect().await?;
                self.ask_on(&mut ldap, account, password).await
            }
            other => other,
        };
        if result.is_ok() {
            self.give_back(ldap);
        }
        result
    }

    /// A keyed hash of the account and password: a changed password never hits an old
    /// entry, and no password is kept.
    fn cache_key(&self, account: &str, password: &Secret) -> [u8; 32] {
        self.cache_key.tag(&[account, password.expose()])
    }
}

impl Authenticator for Directory {
    fn backend(&self) -> Backend {
        Backend::LdapAuth
    }

    fn authenticate<'a>(
        &'a self,
        account: &'a str,
        password: &'a Secret,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(self.judge(account, password))
    }

    fn is_known(&self, account: &str, password: &Secret) -> bool {
        Directory::is_known(self, account, password)
    }

    fn describe<'a>(
        &'a self,
        account: &'a str,
        password: Option<&'a Secret>,
    ) -> BoxFuture<'a, Described> {
        Box::pin(async move {
            let found = |dn: String, labels, ok| Described::Found {
                labels,
                entry: (!dn.is_empty()).then_some(dn),
                password_ok: ok,
            };
            match self.lookup(account, password).await {
                Ok(Lookup::Found { dn, labels }) => found(dn, labels, password.map(|_| true)),
                Ok(Lookup::NoSuchAccount) => Described::NoMatch,
                // The labels the account gets with the right password, when they can be
                // read without it.
                Ok(Lookup::WrongPassword) => match self.lookup(account, None).await {
                    Ok(Lookup::Found { dn, labels }) => found(dn, labels, Some(false)),
                    _ => found(String::new(), Labels::new(), Some(false)),
                },
                Err(e) => Described::Unavailable(e.to_string()),
            }
        })
    }

    /// An account it does not have costs the binds of a wrong password (`conn.rs`).
    fn pays_for_unknown(&self) -> bool {
        true
    }
}

fn identity(account: &str, labels: Labels) -> Identity {
    Identity {
        account: account.to_owned(),
        labels,
        acl: None,
        backend: Backend::LdapAuth,
    }
}
