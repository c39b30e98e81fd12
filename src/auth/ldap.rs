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

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions};
use tokio::sync::Semaphore;

use crate::acl::Labels;
use crate::metrics::Metrics;

use super::identity::{AuthnError, Backend, Identity};
use super::{CredentialKey, Secret};

mod setup;
mod text;

pub use setup::SetupError;
use setup::{client_tls, read_bind_password};
use text::{attribute, convert, push_unique};
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
        // 5.1.2), which many directories answer with success: it must never get there.
        if account.is_empty() || password.expose().is_empty() {
            return Err(AuthnError::BadCredentials);
        }
        let key = self.cache_key(account, password);
        if let Some(labels) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            self.metrics.credential_cache_hits.fetch_add(1, Relaxed);
            return Ok(identity(account, (*labels).clone()));
        }
        self.metrics.credential_cache_misses.fetch_add(1, Relaxed);
        match self.lookup(account, Some(password)).await {
            Ok(Lookup::Found { labels, .. }) => {
                if let Some(cache) = &self.cache {
                    cache.insert(key, Arc::new(labels.clone()));
                }
                Ok(identity(account, labels))
            }
            Ok(Lookup::NoSuchAccount | Lookup::WrongPassword) => Err(AuthnError::BadCredentials),
            Err(e) => {
                tracing::warn!(
                    directory = %self.config.url,
                    account,
                    "the LDAP directory could not check a login: {e}"
                );
                Err(AuthnError::DirectoryUnavailable)
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

    fn pooled(&self) -> Option<Ldap> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut conn) = idle.pop() {
            if conn.since.elapsed() < MAX_IDLE && !conn.ldap.is_closed() {
                return Some(conn.ldap);
            }
        }
        None
    }

    fn give_back(&self, ldap: Ldap) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.config.pool_size {
            idle.push(Idle {
                ldap,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.config.connect_timeout)
            .set_starttls(self.config.tls == TlsMode::StartTls)
            .set_no_tls_verify(self.config.insecure_tls_skip_verify);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.config.url)
            .await
            .map_err(|source| DirectoryError::Ldap {
                step: "connect",
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!("LDAP connection closed: {e}");
            }
        });
        Ok(ldap)
    }

    async fn ask_on(
        &self,
        ldap: &mut Ldap,
        account: &str,
        password: Option<&Secret>,
    ) -> Result<Lookup, DirectoryError> {
        let c = &self.config;
        let t = c.timeout;
        // The first bind also clears whoever the previous login on a pooled connection
        // was bound as: searches never run with a stranger's rights.
        if c.initial_bind_as_user {
            let password = password.ok_or(DirectoryError::NeedsPassword)?;
            let template = c.bind_dn.as_deref().unwrap_or_default();
            let dn = expand(template, &[("${account}", &ldap3::dn_escape(account))]);
            if !bind(
                ldap,
                t,
                "bind as the user",
                &dn,
                password.expose(),
                &self.metrics,
            )
            .await?
            {
                return Ok(Lookup::WrongPassword);
            }
        } else {
            self.bind_service(ldap).await?;
        }

        let filter = expand(&c.filter, &[("${account}", &escape_filter_value(account))]);
        let attributes = self.user_attributes();
        // Two entries are enough to know the filter is ambiguous.
        let result = ldap
            .with_timeout(t)
            .with_search_options(SearchOptions::default().sizelimit(2))
            .search(&c.base, Scope::Subtree, &filter, attributes)
            .await
            .map_err(|source| DirectoryError::Ldap {
                step: "search for the account",
                source,
            })?;
        let (entries, status) = (result.0, result.1);
        const SIZE_LIMIT_EXCEEDED: u32 = 4;
        if status.rc != 0 && status.rc != SIZE_LIMIT_EXCEEDED {
            return Err(DirectoryError::Refused {
                step: "search for the account",
                rc: status.rc,
                text: status.text,
            });
        }
        let mut entries: Vec<SearchEntry> =
            entries.into_iter().map(SearchEntry::construct).collect();
        if entries.len() > 1 {
            tracing::warn!(
                account,
                filter = %c.filter,
                "ldap_auth.filter matches more than one entry for this account; refusing the login"
            );
            return self.no_such_account(ldap, password).await;
        }
        let Some(entry) = entries.pop().filter(|e| !e.dn.is_empty()) else {
            return self.no_such_account(ldap, password).await;
        };

        if let (Some(password), false) = (password, c.initial_bind_as_user) {
            if !bind(
                ldap,
                t,
                "bind as the user",
                &entry.dn,
                password.expose(),
                &self.metrics,
            )
            .await?
            {
                return Ok(Lookup::WrongPassword);
            }
            if c.group_search.is_some() {
                // Groups are read with the service account's rights, as the entry was.
                self.bind_service(ldap).await?;
            }
        }

        let mut labels = self.labels_of(&entry);
        if let Some(groups) = &c.group_search {
            let names = self.groups_of(ldap, groups, &entry.dn, account).await?;
            let values = labels.entry(groups.label.clone()).or_default();
            for name in names {
                push_unique(values, name);
            }
            if values.is_empty() {
                labels.remove(&groups.label);
            }
        }
        Ok(Lookup::Found {
            dn: entry.dn,
            labels,
        })
    }

    /// An account the search did not find, for a login with a password: one bind more
    /// (as a DN under `base` that no entry has, with the password given), whose answer
    /// is not read. A wrong password for a real account costs the directory a bind as
    /// that account after the search; without this, an unknown account would answer one
    /// round trip sooner and so tell an attacker which accounts exist. The directory
    /// checks no password for a DN it does not hold, so what is equalled is the round
    /// trip, which is most of a bind's cost from here.
    async fn no_such_account(
        &self,
        ldap: &mut Ldap,
        password: Option<&Secret>,
    ) -> Result<Lookup, DirectoryError> {
        if let Some(password) = password {
            let c = &self.config;
            let dn = format!("cn=regate-no-such-account,{}", c.base);
            let _ = bind(
                ldap,
                c.timeout,
                "bind as the user",
                &dn,
                password.expose(),
                &self.metrics,
            )
            .await;
        }
        Ok(Lookup::NoSuchAccount)
    }

    /// Binds as `bind_dn`, or anonymously without one.
    async fn bind_service(&self, ldap: &mut Ldap) -> Result<(), DirectoryError> {
        let (dn, password) = match (&self.config.bind_dn, &self.bind_password) {
            (Some(dn), Some(password)) => (dn.as_str(), password.expose()),
            _ => ("", ""),
        };
        let step = if dn.is_empty() {
            "anonymous bind"
        } else {
            "bind as bind_dn"
        };
        self.metrics.ldap_binds.fetch_add(1, Relaxed);
        let result = ldap
            .with_timeout(self.config.timeout)
            .simple_bind(dn, password)
            .await
            .map_err(|source| DirectoryError::Ldap { step, source })?;
        if result.rc != 0 {
            // A rejected service account is the config's fault, not the user's.
            return Err(DirectoryError::Refused {
                step,
                rc: result.rc,
                text: result.text,
            });
        }
        Ok(())
    }

    async fn groups_of(
        &self,
        ldap: &mut Ldap,
        groups: &GroupSearch,
        dn: &str,
        account: &str,
    ) -> Result<Vec<String>, DirectoryError> {
        let filter = expand(
            &groups.filter,
            &[
                ("${dn}", &escape_filter_value(dn)),
                ("${account}", &escape_filter_value(account)),
            ],
        );
        let step = "group search";
        let result = ldap
            .with_timeout(self.config.timeout)
            .search(
                &groups.base,
                Scope::Subtree,
                &filter,
                vec![groups.attribute.as_str()],
            )
            .await
            .map_err(|source| DirectoryError::Ldap { step, source })?;
        if result.1.rc != 0 {
            return Err(DirectoryError::Refused {
                step,
                rc: result.1.rc,
                text: result.1.text,
            });
        }
        let mut names = Vec::new();
        for entry in result.0.into_iter().map(SearchEntry::construct) {
            for value in attribute(&entry, &groups.attribute) {
                push_unique(
                    &mut names,
                    convert(value, groups.parse_cn, groups.lower_case),
                );
            }
        }
        Ok(names)
    }

    /// The attributes `labels` reads; none (`1.1`, RFC 4511) when it reads none.
    fn user_attributes(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in &self.config.labels {
            if !out.iter().any(|a| a.eq_ignore_ascii_case(&m.attribute)) {
                out.push(&m.attribute);
            }
        }
        if out.is_empty() {
            out.push("1.1");
        }
        out
    }

    fn labels_of(&self, entry: &SearchEntry) -> Labels {
        let mut labels = Labels::new();
        for m in &self.config.labels {
            let values = attribute(entry, &m.attribute);
            if values.is_empty() {
                continue; // docker_auth: an attribute the entry lacks gives no label
            }
            let out = labels.entry(m.label.clone()).or_default();
            for value in values {
                push_unique(out, convert(value, m.parse_cn, m.lower_case));
            }
        }
        labels
    }

    /// A keyed hash of the account and password: a changed password never hits an old
    /// entry, and no password is kept.
    fn cache_key(&self, account: &str, password: &Secret) -> [u8; 32] {
        self.cache_key.tag(&[account, password.expose()])
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

/// A simple bind: `Ok(true)` bound, `Ok(false)` the credentials were refused, `Err` the
/// directory could not say.
async fn bind(
    ldap: &mut Ldap,
    timeout: Duration,
    step: &'static str,
    dn: &str,
    password: &str,
    metrics: &Metrics,
) -> Result<bool, DirectoryError> {
    // Checked by the callers too; an empty DN or password is an anonymous or
    // unauthenticated bind, never a login.
    if dn.is_empty() || password.is_empty() {
        return Ok(false);
    }
    metrics.ldap_binds.fetch_add(1, Relaxed);
    let result = ldap
        .with_timeout(timeout)
        .simple_bind(dn, password)
        .await
        .map_err(|source| DirectoryError::Ldap { step, source })?;
    match result.rc {
        0 => Ok(true),
        // invalidCredentials, inappropriateAuthentication, insufficientAccessRights,
        // unwillingToPerform (a locked or expired account on most servers),
        // constraintViolation (OpenLDAP's password policy).
        49 | 48 | 50 | 53 | 19 => Ok(false),
        rc => Err(DirectoryError::Refused {
            step,
            rc,
            text: result.text,
        }),
    }
}
