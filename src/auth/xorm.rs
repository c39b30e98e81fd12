//! docker_auth's `xorm_auth`: accounts in the SQL table `xorm_user`, asked after the static
//! users, the external program and LDAP. Every login reads the account's newest row, so a
//! user added, changed or removed in the database counts from the next login on, with no
//! reload. bcrypt runs on the shared, bounded pool, and only when this account, password
//! and stored hash were not verified within the cache TTL (a keyed hash, no password kept).
//!
//! As docker_auth: an empty name or password is no match, and so is a name without a row;
//! a row whose password differs refuses. Unlike docker_auth, a row whose `password_hash`
//! is not bcrypt is refused with an error in the log naming the row (docker_auth's
//! bcrypt call fails the same way, silently), and a database that does not answer is a
//! 503, not a 500.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::backend::{Authenticator, BoxFuture, Described, Verdict};
use super::identity::{AuthnError, Backend, Identity};
use super::pool::Pool;
use super::users::{is_bcrypt, verify_password};
use super::{CredentialKey, Secret};
use crate::acl::Labels;
use crate::metrics::Metrics;
use crate::sql::{parse_labels, Database, UserRow};

/// The `xorm_user` login backend.
pub struct SqlUsers {
    db: Arc<Database>,
    pool: Arc<Pool>,
    /// Keyed hash of (account, password) -> keyed hash of the stored hash it matched.
    cache: moka::sync::Cache<[u8; 32], [u8; 32]>,
    cache_key: CredentialKey,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for SqlUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlUsers")
            .field("database", &self.db.describe())
            .finish_non_exhaustive()
    }
}

/// What the table says about an account and password.
enum Found {
    Nobody,
    Account {
        row: UserRow,
        labels: Labels,
        password_ok: Option<bool>,
    },
}

impl SqlUsers {
    pub fn new(
        db: Arc<Database>,
        pool: Arc<Pool>,
        cache_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> SqlUsers {
        SqlUsers {
            db,
            pool,
            cache: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(cache_ttl)
                .build(),
            cache_key: CredentialKey::generate(),
            metrics,
        }
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// Reads the account's newest row and, with a password, checks it.
    async fn find(&self, account: &str, password: Option<&Secret>) -> Result<Found, AuthnError> {
        let row = match self.db.newest_user(account).await {
            Ok(Some(row)) => row,
            Ok(None) => return Ok(Found::Nobody),
            Err(e) => {
                tracing::warn!(
                    account,
                    "xorm_auth: the user database could not check a login: {e}"
                );
                return Err(AuthnError::DatabaseUnavailable);
            }
        };
        let labels = match parse_labels(row.labels.as_deref()) {
            Ok(labels) => labels,
            Err(e) => {
                tracing::error!(
                    account,
                    row = row.id,
                    "xorm_auth: xorm_user row {} has labels regate cannot read: {e}",
                    row.id
                );
                return Err(AuthnError::DatabaseUnavailable);
            }
        };
        if !is_bcrypt(&row.password_hash) {
            tracing::error!(
                account,
                row = row.id,
                "xorm_auth: xorm_user row {} has a password_hash that is not bcrypt; the login is refused (set one with `regate user passwd`)",
                row.id
            );
            return Ok(Found::Account {
                row,
                labels,
                password_ok: password.map(|_| false),
            });
        }
        let Some(password) = password else {
            return Ok(Found::Account {
                row,
                labels,
                password_ok: None,
            });
        };
        let key = self.cache_key.tag(&[account, password.expose()]);
        let stored = self.cache_key.tag(&[&row.password_hash]);
        let ok = if self.cache.get(&key) == Some(stored) {
            self.metrics.credential_cache_hits.fetch_add(1, Relaxed);
            true
        } else {
            let hash = row.password_hash.clone();
            let given = password.clone();
            let ok = self
                .pool
                .run(move || verify_password(&hash, &given))
                .await
                .map_err(|_| AuthnError::Busy)?;
            self.metrics.credential_cache_misses.fetch_add(1, Relaxed);
            if ok {
                self.cache.insert(key, stored);
            }
            ok
        };
        Ok(Found::Account {
            row,
            labels,
            password_ok: Some(ok),
        })
    }

    async fn judge(&self, account: &str, password: &Secret) -> Verdict {
        if account.is_empty() || password.expose().is_empty() {
            return Verdict::NoMatch;
        }
        match self.find(account, Some(password)).await {
            Err(e) => Verdict::Refused(e),
            Ok(Found::Nobody) => Verdict::NoMatch,
            Ok(Found::Account {
                labels,
                password_ok: Some(true),
                ..
            }) => Verdict::Accepted(Identity {
                account: account.to_owned(),
                labels,
                acl: None,
                backend: Backend::XormAuth,
            }),
            Ok(Found::Account { .. }) => Verdict::Refused(AuthnError::BadCredentials),
        }
    }
}

impl Authenticator for SqlUsers {
    fn backend(&self) -> Backend {
        Backend::XormAuth
    }

    fn authenticate<'a>(
        &'a self,
        account: &'a str,
        password: &'a Secret,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(self.judge(account, password))
    }

    /// Verified lately (the row may have changed since: the login reads it again).
    fn is_known(&self, account: &str, password: &Secret) -> bool {
        self.cache
            .contains_key(&self.cache_key.tag(&[account, password.expose()]))
    }

    fn describe<'a>(
        &'a self,
        account: &'a str,
        password: Option<&'a Secret>,
    ) -> BoxFuture<'a, Described> {
        Box::pin(async move {
            if account.is_empty() {
                return Described::NoMatch;
            }
            match self.find(account, password).await {
                Ok(Found::Nobody) => Described::NoMatch,
                Ok(Found::Account {
                    row,
                    labels,
                    password_ok,
                }) => Described::Found {
                    labels,
                    entry: Some(format!("xorm_user row {}", row.id)),
                    password_ok,
                },
                Err(e) => Described::Unavailable(e.to_string()),
            }
        })
    }
}

/// A named credential of an `xorm_auth` account: the account's labels now, or nobody once
/// its rows are gone.
impl super::credentials::Source for SqlUsers {
    fn current<'a>(
        &'a self,
        account: &'a str,
        _kept: &'a Labels,
    ) -> BoxFuture<'a, Result<Option<Labels>, AuthnError>> {
        Box::pin(async move {
            match self.find(account, None).await? {
                Found::Nobody => Ok(None),
                Found::Account { labels, .. } => Ok(Some(labels)),
            }
        })
    }
}
