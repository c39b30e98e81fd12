//! Revoked refresh tokens, kept in the state store so every replica refuses them: an
//! account's "revoked before" time (every refresh token it held until then: a lost laptop,
//! a departed colleague) and single tokens by their `jti`. Each entry lives as long as a
//! token it revokes could, and no longer.
//!
//! Asked on a refresh grant only (a login), never on the hot path. With the shared state
//! down, this replica judges with what it has seen itself (the revocations it made or read
//! lately) and says so in the log and `/metrics`: a refresh token revoked elsewhere during
//! the outage works here until the store is back. Failing closed instead would stop every
//! `docker pull` of users logged in with an identity token for as long as Redis is down.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::state::{counter, Store, StoreError};

pub struct Revocations {
    store: Arc<dyn Store>,
    /// What this replica revoked or read, by store key: the fallback.
    seen: moka::sync::Cache<String, u64>,
    metrics: Arc<Metrics>,
}

fn account_key(account: &str) -> String {
    format!(
        "revoked:account:{}",
        data_encoding::HEXLOWER.encode(account.as_bytes())
    )
}

fn token_key(jti: &str) -> String {
    format!("revoked:jti:{jti}")
}

impl Revocations {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Revocations {
        Revocations {
            store,
            seen: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(30 * 24 * 3600))
                .build(),
            metrics,
        }
    }

    /// Every refresh token of `account` issued up to `at` (Unix seconds) is refused from
    /// now on; `lifetime` is `token.refresh_expiration` (none older can be alive after it).
    pub async fn revoke_account(
        &self,
        account: &str,
        at: u64,
        lifetime: Duration,
    ) -> Result<(), StoreError> {
        let key = account_key(account);
        self.seen.insert(key.clone(), at);
        self.store
            .put(&key, at.to_string().into_bytes(), Some(lifetime))
            .await
    }

    /// One refresh token, by its `jti`, until it expires (`exp`, Unix seconds).
    pub async fn revoke_token(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        let key = token_key(jti);
        self.seen.insert(key.clone(), exp);
        let left = exp.saturating_sub(crate::auth::token::unix_now()).max(1);
        self.store
            .put(&key, b"1".to_vec(), Some(Duration::from_secs(left)))
            .await
    }

    /// Whether a refresh token of `account` with this `jti`, issued at `iat`, is revoked.
    pub async fn is_revoked(&self, account: &str, jti: &str, iat: u64) -> bool {
        let (akey, tkey) = (account_key(account), token_key(jti));
        let shared = async {
            let before = self.store.get(&akey).await?;
            let token = self.store.get(&tkey).await?;
            Ok::<_, StoreError>((before.map(|v| counter(&v).max(0) as u64), token.is_some()))
        };
        let (before, token) = match shared.await {
            Ok((before, token)) => {
                if let Some(b) = before {
                    self.seen.insert(akey, b);
                }
                (before, token)
            }
            Err(e) => {
                self.metrics
                    .revocation_local_fallbacks
                    .fetch_add(1, Relaxed);
                tracing::warn!("refresh-token revocations: the shared state cannot be read ({e}); judged with this replica's own");
                (self.seen.get(&akey), self.seen.contains_key(&tkey))
            }
        };
        // A token of the revocation's own second goes too (iat has second precision): one
        // logged in again that second logs in once more.
        token || before.is_some_and(|b| iat <= b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_account_or_one_token_revoked_on_one_replica_is_refused_by_another() {
        let store: Arc<dyn Store> = Arc::new(crate::state::Local::memory());
        let a = Revocations::new(store.clone(), Arc::default());
        let b = Revocations::new(store, Arc::default());
        let day = Duration::from_secs(86400);
        assert!(!b.is_revoked("alice", "j1", 100).await);
        a.revoke_account("alice", 200, day).await.unwrap();
        assert!(b.is_revoked("alice", "j1", 100).await, "issued before");
        assert!(!b.is_revoked("alice", "j2", 300).await, "issued after");
        assert!(!b.is_revoked("bob", "j3", 100).await);
        a.revoke_token("j4", crate::auth::token::unix_now() + 60)
            .await
            .unwrap();
        assert!(b.is_revoked("bob", "j4", 500).await);
    }
}
