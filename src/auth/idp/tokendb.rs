//! The token DB: per section and account, the provider's tokens, the account's labels, and
//! until when the last check at the provider holds. docker_auth's record
//! (`{token_type, access_token, refresh_token, valid_until, labels}` under `t:USER`), kept
//! in regate's state store under `tokendb:SECTION:HEX(ACCOUNT)`; no password is in it
//! (credentials are kept apart, as hashes).
//!
//! A check that has run out is made again by the first login that needs it, one at a
//! time per account: two logins racing must not both spend a refresh token that the
//! provider rotates (GitLab's), or the second would find it spent.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};

use super::{now, IdpError, Kind, Settings};
use crate::acl::Labels;
use crate::auth::identity::{AuthnError, Backend};
use crate::state::{Store, StoreError};

/// What regate keeps for an account signed in with a provider.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub account: String,
    /// The provider's own id for the account (OpenID `sub`, GitHub's or GitLab's user
    /// id): a later answer about another id is not about this account.
    pub subject: String,
    pub token_type: String,
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// How long the access token lives, as the provider said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    pub labels: Labels,
    /// When the provider last vouched for the account (seconds since the epoch).
    #[serde(default)]
    pub checked: u64,
    /// Until when that holds.
    #[serde(default)]
    pub valid_until: u64,
    /// Why the provider said no at the last check: every login is refused at once (no
    /// call to the provider) until the account signs in again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("account", &self.account)
            .field("subject", &self.subject)
            .field("labels", &self.labels)
            .field("checked", &self.checked)
            .field("valid_until", &self.valid_until)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl Record {
    /// A fresh record from a provider's answer (not yet stamped with its validity).
    pub fn new(account: String, subject: String, tokens: Tokens, labels: Labels) -> Record {
        Record {
            account,
            subject,
            token_type: tokens.token_type,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            expires_in: tokens.expires_in,
            labels,
            checked: 0,
            valid_until: 0,
            refused: None,
        }
    }

    /// For `regate explain`: when it was checked and until when.
    pub fn describe(&self) -> String {
        match &self.refused {
            Some(why) => format!("refused at the last check ({why}); signs in again to get back"),
            None => format!(
                "last checked {}, next check after {}",
                when(self.checked),
                when(self.valid_until)
            ),
        }
    }
}

/// A time for people: `2026-12-04 14:02 UTC`.
pub fn when(seconds: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(seconds as i64) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => seconds.to_string(),
    }
}

/// A provider's token answer, as far as regate keeps it.
#[derive(Clone, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    #[serde(default = "bearer")]
    pub token_type: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// A number, or (some providers) a number in a string.
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub id_token: Option<String>,
}

fn lenient_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64))
        }
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn bearer() -> String {
    "Bearer".to_owned()
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

pub struct TokenDb {
    section: Backend,
    store: Arc<dyn Store>,
    /// One check at a time per account.
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl TokenDb {
    pub fn new(section: Backend, store: Arc<dyn Store>) -> TokenDb {
        TokenDb {
            section,
            store,
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, account: &str) -> String {
        format!(
            "tokendb:{}:{}",
            self.section,
            data_encoding::HEXLOWER.encode(account.as_bytes())
        )
    }

    pub async fn get(&self, account: &str) -> Result<Option<Record>, StoreError> {
        Ok(self
            .store
            .get(&self.key(account))
            .await?
            .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
            .filter(|r| r.account == account))
    }

    pub async fn put(&self, record: &Record) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        self.store
            .put(&self.key(&record.account), bytes, None)
            .await
    }

    pub async fn delete(&self, account: &str) -> Result<(), StoreError> {
        self.store.delete(&self.key(account)).await
    }

    /// Marks a record as checked now, valid for as long as the section says: until the
    /// access token ends (OpenID Connect, Google; less a margin, as docker_auth's 30 s),
    /// or `revalidate_after` (GitHub, GitLab).
    pub fn stamp(&self, mut record: Record, settings: &Settings) -> Record {
        let now = now();
        let holds = match settings.kind {
            Kind::Oidc { .. } | Kind::Google { .. } => {
                let lifetime = record.expires_in.unwrap_or(3600);
                lifetime - lifetime.min(30).min(lifetime / 2)
            }
            Kind::Github { .. } | Kind::Gitlab { .. } => settings.revalidate_after.as_secs(),
        };
        record.checked = now;
        record.valid_until = now + holds;
        record.refused = None;
        record
    }

    fn lock(&self, account: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = locks.get(account).and_then(Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, w| w.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(account.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// The account's labels now: as kept while the last check holds; else checked again
    /// by `revalidate`. A provider that cannot be reached keeps the account working for
    /// `outage_grace` past its last check (logged); a provider that says no ends it until
    /// the account signs in again.
    pub async fn current<F, Fut>(
        &self,
        account: &str,
        settings: &Settings,
        revalidate: F,
    ) -> Result<Labels, AuthnError>
    where
        F: FnOnce(Record) -> Fut,
        Fut: Future<Output = Result<Record, IdpError>>,
    {
        let unavailable = |e: StoreError| {
            tracing::warn!("{}: the token DB cannot be read: {e}", self.section);
            AuthnError::ProviderUnavailable
        };
        let valid = |r: &Record| r.refused.is_none() && now() < r.valid_until;
        match self.get(account).await.map_err(unavailable)? {
            None => return Err(AuthnError::ProviderRefused),
            Some(r) if r.refused.is_some() => return Err(AuthnError::ProviderRefused),
            Some(r) if valid(&r) => return Ok(r.labels),
            Some(_) => {}
        }
        let lock = self.lock(account);
        let _held = lock.lock().await;
        // Another login may have checked while this one waited.
        let record = match self.get(account).await.map_err(unavailable)? {
            None => return Err(AuthnError::ProviderRefused),
            Some(r) if r.refused.is_some() => return Err(AuthnError::ProviderRefused),
            Some(r) if valid(&r) => return Ok(r.labels),
            Some(r) => r,
        };
        match revalidate(record.clone()).await {
            Ok(checked) => {
                self.put(&checked).await.map_err(unavailable)?;
                tracing::info!(
                    target: "regate::audit",
                    backend = %self.section,
                    account,
                    "identity provider vouched for the account again"
                );
                Ok(checked.labels)
            }
            Err(e @ (IdpError::Unreachable(_) | IdpError::Misconfigured(_))) => {
                let until = record.valid_until + settings.outage_grace.as_secs();
                if now() < until {
                    tracing::warn!(
                        backend = %self.section,
                        account,
                        "the identity provider cannot check the account ({e}); it keeps working until {} (outage_grace)",
                        when(until)
                    );
                    Ok(record.labels)
                } else {
                    tracing::error!(
                        backend = %self.section,
                        account,
                        "the identity provider cannot check the account ({e}), and its outage_grace is over: logins are refused until it answers"
                    );
                    Err(AuthnError::ProviderUnavailable)
                }
            }
            Err(e) => {
                tracing::info!(
                    target: "regate::audit",
                    backend = %self.section,
                    account,
                    reason = %e,
                    "identity provider no longer vouches for the account"
                );
                let refused = Record {
                    refused: Some(e.to_string()),
                    ..record
                };
                self.put(&refused).await.map_err(unavailable)?;
                Err(AuthnError::ProviderRefused)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::idp::ClientSecret;
    use crate::auth::Secret;
    use crate::state::Local;
    use std::time::Duration;

    fn settings(grace: u64) -> Settings {
        Settings {
            backend: Backend::GithubAuth,
            kind: Kind::Github {
                organization: None,
                web: "https://github.com".into(),
                api: "https://api.github.com".into(),
            },
            client_id: "id".into(),
            client_secret: ClientSecret::Inline(Secret::new("s")),
            redirect_url: None,
            registry_url: None,
            http_timeout: Duration::from_secs(1),
            revalidate_after: Duration::from_secs(3600),
            outage_grace: Duration::from_secs(grace),
            token_db: None,
        }
    }

    fn alice() -> Record {
        let tokens = Tokens {
            access_token: "gho_secret".into(),
            token_type: "bearer".into(),
            refresh_token: None,
            expires_in: None,
            id_token: None,
        };
        let labels = [("teams".to_owned(), vec!["web".to_owned()])].into();
        Record::new("alice".into(), "1".into(), tokens, labels)
    }

    #[tokio::test]
    async fn valid_outage_and_refusal() {
        let db = TokenDb::new(Backend::GithubAuth, Arc::new(Local::memory()));
        let s = settings(3600);
        assert_eq!(
            db.current("alice", &s, |_| async { unreachable!() }).await,
            Err(AuthnError::ProviderRefused),
            "no record: sign in first"
        );
        let record = db.stamp(alice(), &s);
        db.put(&record).await.unwrap();
        // Valid: the provider is not asked.
        let labels = db
            .current("alice", &s, |_| async { panic!("asked while valid") })
            .await
            .unwrap();
        assert_eq!(labels["teams"], ["web"]);
        assert!(!format!("{record:?}").contains("gho_secret"));

        // Run out; the provider is down: kept within the grace, refused past it.
        let expired = Record {
            valid_until: now() - 10,
            ..record.clone()
        };
        db.put(&expired).await.unwrap();
        let down = |_: Record| async { Err(IdpError::Unreachable("down".into())) };
        assert!(db.current("alice", &s, down).await.is_ok());
        assert_eq!(
            db.current("alice", &settings(5), down).await,
            Err(AuthnError::ProviderUnavailable)
        );

        // Checked again: new labels kept, and valid again.
        let checked = |mut r: Record| {
            r.labels = [("teams".to_owned(), vec!["ops".to_owned()])].into();
            let r = TokenDb::new(Backend::GithubAuth, Arc::new(Local::memory())).stamp(r, &s);
            async move { Ok(r) }
        };
        assert_eq!(
            db.current("alice", &s, checked).await.unwrap()["teams"],
            ["ops"]
        );
        assert!(db.get("alice").await.unwrap().unwrap().valid_until > now());

        // The provider says no: refused, and not asked again until a new sign-in.
        db.put(&expired).await.unwrap();
        let no = |_: Record| async { Err(IdpError::NotAllowed("not in acme".into())) };
        assert_eq!(
            db.current("alice", &s, no).await,
            Err(AuthnError::ProviderRefused)
        );
        assert_eq!(
            db.current("alice", &s, |_| async { panic!("asked after a no") })
                .await,
            Err(AuthnError::ProviderRefused)
        );
        assert!(db
            .get("alice")
            .await
            .unwrap()
            .unwrap()
            .describe()
            .contains("not in acme"));
    }
}
