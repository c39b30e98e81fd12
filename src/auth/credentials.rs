//! Named credentials: passwords regate makes for an account (a CI token a user creates on
//! the web pages, the password an identity-provider sign-in shows), each with a name, an
//! optional end, and revocable one by one. They are what `docker login -u ACCOUNT -p
//! rgt_…` checks.
//!
//! A credential is 160 random bits (`rgt_` + base32), so it is stored as a SHA-256, not a
//! bcrypt: nothing can be guessed from a fast hash of a random value, and a login does not
//! pay bcrypt. The `rgt_` prefix tells it from any password, so the backend is asked first
//! and says "no match" at once for anything else: a static user with a CI token still logs
//! in with the token, and a password never reaches this store.
//!
//! Who an account is when it logs in with a credential (its labels, whether it still
//! exists) is its source's to say: the static users for their own accounts, an identity
//! provider (which revalidates the account there) for its. Until a source registers, the
//! labels kept with the credential count.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::backend::{Authenticator, BoxFuture, Verdict};
use super::identity::{AuthnError, Backend, Identity};
use super::Secret;
use crate::acl::Labels;
use crate::state::{Store, StoreError};

/// What every credential starts with.
pub const PREFIX: &str = "rgt_";

/// One credential as kept (no secret: a hash of it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credential {
    pub id: String,
    pub account: String,
    /// What the user called it ("laptop", "ci-deploy").
    pub name: String,
    /// The backend that vouched for the account when it was made (`users`,
    /// `ldap_auth`, `oidc_auth`, ...): the one that says who the account is now.
    pub source: String,
    /// The account's labels when it was made.
    pub labels: Labels,
    /// Seconds since the epoch.
    pub created: u64,
    pub expires: Option<u64>,
    /// Hex SHA-256 of the credential.
    pub hash: String,
}

/// Who an account is now, as the backend it came from says: its labels, or `None` when the
/// account is gone there (its credentials stop working).
pub trait Source: Send + Sync {
    fn current<'a>(
        &'a self,
        account: &'a str,
        kept: &'a Labels,
    ) -> BoxFuture<'a, Result<Option<Labels>, AuthnError>>;
}

/// The credential store, and the login backend that checks them.
pub struct Credentials {
    store: Arc<dyn Store>,
    sources: HashMap<String, Arc<dyn Source>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hash(secret: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The account hex-encoded in keys: any name, and no account's prefix is another's.
fn prefix_of(account: &str) -> String {
    format!(
        "cred:{}:",
        data_encoding::HEXLOWER.encode(account.as_bytes())
    )
}

fn key(account: &str, id: &str) -> String {
    format!("{}{id}", prefix_of(account))
}

impl Credentials {
    pub fn new(store: Arc<dyn Store>) -> Credentials {
        Credentials {
            store,
            sources: HashMap::new(),
        }
    }

    /// Lets `section` say who its accounts are now.
    pub fn with_source(mut self, section: &str, source: Arc<dyn Source>) -> Credentials {
        self.sources.insert(section.to_owned(), source);
        self
    }

    /// Makes a credential for `account` (which `source` vouched for); the secret is
    /// returned once, and kept nowhere.
    pub async fn issue(
        &self,
        identity: &Identity,
        name: &str,
        expires: Option<SystemTime>,
    ) -> Result<(Secret, Credential), StoreError> {
        use ring::rand::SecureRandom;
        let rng = ring::rand::SystemRandom::new();
        let mut bytes = [0u8; 20];
        rng.fill(&mut bytes)
            .map_err(|_| StoreError::Unavailable("no randomness".into()))?;
        let secret = format!(
            "{PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&bytes).to_lowercase()
        );
        let mut id = [0u8; 6];
        rng.fill(&mut id)
            .map_err(|_| StoreError::Unavailable("no randomness".into()))?;
        let credential = Credential {
            id: data_encoding::HEXLOWER.encode(&id),
            account: identity.account.clone(),
            name: name.to_owned(),
            source: identity.backend.section().to_owned(),
            labels: identity.labels.clone(),
            created: now(),
            expires: expires
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            hash: hash(&secret),
        };
        let ttl = credential
            .expires
            .map(|e| std::time::Duration::from_secs(e.saturating_sub(now()) + 86_400));
        let bytes = serde_json::to_vec(&credential).unwrap_or_default();
        self.store
            .put(&key(&credential.account, &credential.id), bytes, ttl)
            .await?;
        Ok((Secret::new(secret), credential))
    }

    /// An account's credentials, oldest first.
    pub async fn list(&self, account: &str) -> Result<Vec<Credential>, StoreError> {
        let mut out = Vec::new();
        for k in self.store.keys(&prefix_of(account)).await? {
            if let Some(bytes) = self.store.get(&k).await? {
                if let Ok(c) = serde_json::from_slice::<Credential>(&bytes) {
                    if c.account == account {
                        out.push(c);
                    }
                }
            }
        }
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(out)
    }

    /// Revokes one credential of `account`; whether it was there.
    pub async fn revoke(&self, account: &str, id: &str) -> Result<bool, StoreError> {
        let k = key(account, id);
        let there = self.store.get(&k).await?.is_some();
        self.store.delete(&k).await?;
        Ok(there)
    }

    async fn judge(&self, account: &str, password: &Secret) -> Verdict {
        let secret = password.expose();
        if !secret.starts_with(PREFIX) {
            return Verdict::NoMatch;
        }
        let wanted = hash(secret);
        let list = match self.list(account).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!("the credential store could not be read: {e}");
                return Verdict::Refused(AuthnError::DirectoryUnavailable);
            }
        };
        // Compared in full whatever matches first: all of an account's hashes are read.
        let found = list.into_iter().fold(None, |found, c| {
            let same = c.hash.len() == wanted.len()
                && c.hash
                    .bytes()
                    .zip(wanted.bytes())
                    .fold(0u8, |d, (x, y)| d | (x ^ y))
                    == 0;
            if same {
                Some(c)
            } else {
                found
            }
        });
        let Some(credential) = found else {
            return Verdict::Refused(AuthnError::BadCredentials);
        };
        if credential.expires.is_some_and(|e| now() >= e) {
            return Verdict::Refused(AuthnError::Expired);
        }
        let labels = match self.sources.get(&credential.source) {
            Some(source) => match source.current(account, &credential.labels).await {
                Ok(Some(labels)) => labels,
                Ok(None) => return Verdict::Refused(AuthnError::BadCredentials),
                Err(e) => return Verdict::Refused(e),
            },
            None => credential.labels.clone(),
        };
        Verdict::Accepted(Identity {
            account: account.to_owned(),
            labels,
            acl: None,
            backend: Backend::from_section(&credential.source).unwrap_or(Backend::Users),
        })
    }
}

impl Authenticator for Credentials {
    fn backend(&self) -> Backend {
        Backend::Users
    }

    fn authenticate<'a>(
        &'a self,
        account: &'a str,
        password: &'a Secret,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(self.judge(account, password))
    }

    // Not `is_known`: a wrong `rgt_…` is a guess like any other, and the throttle counts
    // it. Not `pays_for_unknown`: its "no match" (not a credential) costs nothing.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Local;

    fn alice() -> Identity {
        Identity {
            account: "alice".into(),
            labels: [("team".to_owned(), vec!["web".to_owned()])].into(),
            acl: None,
            backend: Backend::Users,
        }
    }

    #[tokio::test]
    async fn issue_check_list_revoke_expire() {
        let creds = Credentials::new(Arc::new(Local::memory()));
        let (laptop, kept) = creds.issue(&alice(), "laptop", None).await.unwrap();
        assert!(laptop.expose().starts_with(PREFIX));
        assert_eq!(laptop.expose().len(), 36);
        assert!(!kept.hash.contains(&laptop.expose()[4..]));
        let (ci, _) = creds.issue(&alice(), "ci", None).await.unwrap();
        let ok = |v: Verdict| matches!(v, Verdict::Accepted(i) if i.account == "alice" && i.labels["team"] == ["web"]);
        assert!(ok(creds.judge("alice", &laptop).await));
        assert!(ok(creds.judge("alice", &ci).await));
        // Another account's name with alice's credential: refused.
        assert!(matches!(creds.judge("bob", &ci).await, Verdict::Refused(_)));
        // A password that is no credential is not this backend's business.
        assert!(matches!(
            creds.judge("alice", &Secret::new("hunter2")).await,
            Verdict::NoMatch
        ));
        assert!(matches!(
            creds.judge("alice", &Secret::new("rgt_nope")).await,
            Verdict::Refused(AuthnError::BadCredentials)
        ));
        let names: Vec<String> = creds
            .list("alice")
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names.len(), 2);
        assert!(creds.revoke("alice", &kept.id).await.unwrap());
        assert!(matches!(
            creds.judge("alice", &laptop).await,
            Verdict::Refused(_)
        ));
        assert!(
            ok(creds.judge("alice", &ci).await),
            "revoking one leaves the other"
        );
        let past = SystemTime::now() - std::time::Duration::from_secs(10);
        let (old, _) = creds.issue(&alice(), "old", Some(past)).await.unwrap();
        assert!(matches!(
            creds.judge("alice", &old).await,
            Verdict::Refused(AuthnError::Expired)
        ));
    }

    #[tokio::test]
    async fn the_source_says_who_the_account_is_now() {
        struct Gone;
        impl Source for Gone {
            fn current<'a>(
                &'a self,
                _: &'a str,
                _: &'a Labels,
            ) -> BoxFuture<'a, Result<Option<Labels>, AuthnError>> {
                Box::pin(std::future::ready(Ok(None)))
            }
        }
        let creds =
            Credentials::new(Arc::new(Local::memory())).with_source("users", Arc::new(Gone));
        let (secret, _) = creds.issue(&alice(), "laptop", None).await.unwrap();
        assert!(matches!(
            creds.judge("alice", &secret).await,
            Verdict::Refused(AuthnError::BadCredentials)
        ));
    }
}
