//! `regate revoke-refresh`: refused refresh tokens (docker login's identity tokens) on
//! every replica, through the shared state they read on each refresh grant.

use std::sync::Arc;

use crate::auth::revoked::Revocations;
use crate::auth::token::{unix_now, Tokens};
use crate::config::Config;
use crate::state::{RedisStore, Store};

/// What to revoke.
pub enum What {
    /// Every refresh token the account holds now.
    Account(String),
    /// One token, as the client holds it.
    Token(String),
}

/// Writes the revocation to the shared state; a line saying what was done.
pub async fn revoke(config: &Config, what: What) -> Result<String, String> {
    let Some(redis) = &config.shared_state else {
        return Err("revoking needs `shared_state`: without it each regate keeps its state in its own memory, out of this command's reach (a user's changed password makes their refresh tokens stale at once)".to_owned());
    };
    let metrics = Arc::default();
    let store: Arc<dyn Store> =
        Arc::new(RedisStore::new(redis, Arc::clone(&metrics)).map_err(|e| e.to_string())?);
    let revocations = Revocations::new(store, metrics.clone());
    match what {
        What::Account(account) => {
            revocations
                .revoke_account(&account, unix_now(), config.token.refresh_expiration)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "revoked every refresh token of {account:?} issued until now, on every replica using {redis}"
            ))
        }
        What::Token(token) => {
            let key = crate::signing_key(config).map_err(|e| format!("token key: {e}"))?;
            let previous = crate::runtime::previous_keys(config).map_err(|e| e.to_string())?;
            let tokens = Tokens::new(
                Arc::new(key),
                &config.token.issuer,
                &config.token.service,
                config.token.expiration,
                config.token.refresh_expiration,
                metrics,
            )
            .with_previous(previous);
            let refresh = tokens
                .verify_refresh(token.trim())
                .map_err(|e| format!("not a refresh token regate would accept: {e}"))?;
            revocations
                .revoke_token(&refresh.jti, refresh.expires_at)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "revoked one refresh token of {:?}, on every replica using {redis}",
                refresh.account
            ))
        }
    }
}
