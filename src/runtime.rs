//! What a configuration becomes at run time: the users and their caches, the token signer,
//! the ACL, and what outlives a reload (metrics, the login throttle, the bcrypt pool). A
//! reload builds a new [`Runtime`] and swaps it in whole.

use std::sync::Arc;

use crate::auth::backend::{Authenticator, Authorizer, Logins};
use crate::auth::credentials::Credentials;
use crate::auth::keys::{KeyError, SigningKey};
use crate::auth::token::Tokens;
use crate::auth::users::Users;
use crate::config::Config;
use crate::state::{Local, Store};
use crate::{acl, auth, metrics, Error};

/// How long a verified password is remembered (as a keyed hash) before bcrypt runs again.
const CREDENTIAL_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Everything a configuration becomes at run time; a reload builds a new one and swaps it
/// in whole.
pub struct Runtime {
    pub config: Config,
    /// The static users (anonymous access, refresh tokens).
    pub users: Arc<Users>,
    /// Every login backend in docker_auth's order, the static users first.
    pub logins: Arc<Logins>,
    /// The authorization backends asked after the static `acl`, in order.
    pub authorizers: Vec<Arc<dyn Authorizer>>,
    pub tokens: Tokens,
    pub acl: Arc<acl::Acl>,
    pub metrics: Arc<metrics::Metrics>,
    pub throttle: Arc<auth::throttle::Throttle>,
    pub bcrypt: Arc<auth::pool::Pool>,
    /// State kept beyond a request (web sessions, ...): this process's, or shared.
    pub state: Arc<dyn Store>,
    pub revocations: Arc<auth::revoked::Revocations>,
}

/// What a reload carries over from the runtime it replaces.
#[derive(Clone)]
pub struct Lasting {
    pub metrics: Arc<metrics::Metrics>,
    pub throttle: Arc<auth::throttle::Throttle>,
    /// The bound on bcrypt work: a reload must not open a second one.
    pub bcrypt: Arc<auth::pool::Pool>,
    pub state: Arc<dyn Store>,
    /// Revoked refresh tokens, in `state` (with what this replica saw, for an outage).
    pub revocations: Arc<auth::revoked::Revocations>,
}

impl Lasting {
    /// What a first start carries: the state store the config names (Redis, shared with
    /// the other replicas, under `shared_state`), in memory otherwise; with a shared
    /// store, the login throttle counts there.
    pub fn for_config(config: &Config) -> Result<Lasting, Error> {
        let Some(redis) = &config.shared_state else {
            return Ok(Lasting::default());
        };
        let metrics: Arc<metrics::Metrics> = Arc::default();
        let store: Arc<dyn Store> =
            Arc::new(crate::state::RedisStore::new(redis, metrics.clone())?);
        tracing::info!(redis = %redis, "shared state: login throttle, refresh-token revocations, sessions and the token DB are kept there");
        Ok(Lasting {
            throttle: Arc::new(auth::throttle::Throttle::shared(
                store.clone(),
                metrics.clone(),
            )),
            revocations: Arc::new(auth::revoked::Revocations::new(
                store.clone(),
                metrics.clone(),
            )),
            metrics,
            bcrypt: Arc::default(),
            state: store,
        })
    }
}

impl Default for Lasting {
    fn default() -> Lasting {
        let metrics: Arc<metrics::Metrics> = Arc::default();
        let state: Arc<dyn Store> = Arc::new(Local::memory());
        Lasting {
            revocations: Arc::new(auth::revoked::Revocations::new(
                state.clone(),
                metrics.clone(),
            )),
            metrics,
            throttle: Arc::default(),
            bcrypt: Arc::default(),
            state,
        }
    }
}

impl Runtime {
    /// Loads (or, with no key configured, generates) the token key and builds the rest.
    /// `lasting` carries over from the runtime this one replaces.
    pub fn build(config: Config, lasting: Lasting) -> Result<Runtime, Error> {
        let Lasting {
            metrics,
            throttle,
            bcrypt,
            state,
            revocations,
        } = lasting;
        let key = signing_key(&config)?;
        let tokens = Tokens::new(
            Arc::new(key),
            &config.token.issuer,
            &config.token.service,
            config.token.expiration,
            config.token.refresh_expiration,
            metrics.clone(),
        )
        .with_previous(previous_keys(&config)?);
        let logins = Arc::new(logins(
            &config,
            metrics.clone(),
            bcrypt.clone(),
            state.clone(),
        )?);
        let users = logins.users().clone();
        metrics.config_loaded(&config.digest);
        Ok(Runtime {
            acl: config.acl.clone(),
            authorizers: Vec::new(),
            users,
            logins,
            tokens,
            config,
            metrics,
            throttle,
            bcrypt,
            state,
            revocations,
        })
    }

    pub fn lasting(&self) -> Lasting {
        Lasting {
            metrics: self.metrics.clone(),
            throttle: self.throttle.clone(),
            bcrypt: self.bcrypt.clone(),
            state: self.state.clone(),
            revocations: self.revocations.clone(),
        }
    }
}

/// The login backends a config names, in docker_auth's order: regate's named credentials
/// (which match only what is one), the static users (with `htpasswd` and `robots`), then
/// `ldap_auth`. `regate explain` asks the same chain.
/// Reads the files they need (the directory's bind password and CA); connects to nothing
/// until a login needs it.
pub fn logins(
    config: &Config,
    metrics: Arc<metrics::Metrics>,
    bcrypt: Arc<auth::pool::Pool>,
    state: Arc<dyn Store>,
) -> Result<Logins, Error> {
    let users = Arc::new(
        Users::new(config.users.clone(), CREDENTIAL_CACHE_TTL, metrics.clone()).with_pool(bcrypt),
    );
    // A credential names its account, and the static users say who that account is now.
    let credentials = Credentials::new(state)
        .with_source("users", users.clone())
        .with_source("htpasswd", users.clone());
    let mut chain: Vec<Arc<dyn Authenticator>> = vec![Arc::new(credentials), users.clone()];
    if let Some(ldap) = &config.ldap {
        chain.push(Arc::new(auth::ldap::Directory::new(ldap.clone(), metrics)?));
    }
    Ok(Logins::new(users, chain))
}

/// The keys of `token.previous_certificates`, which still verify what they signed.
pub fn previous_keys(config: &Config) -> Result<Vec<crate::auth::keys::PublicKey>, KeyError> {
    config
        .token
        .previous_certificates
        .iter()
        .map(|p| crate::auth::keys::PublicKey::from_certificate(p))
        .collect()
}

/// The token signing key a config names, or, with none named, the one generated in
/// `data_dir` (made on first use), carrying the configured key ID format.
pub fn signing_key(config: &Config) -> Result<SigningKey, KeyError> {
    let key = match &config.token.key {
        Some(files) => SigningKey::load(&files.certificate, &files.key)?,
        None => {
            let (key, made) = SigningKey::load_or_generate(&config.data_dir)?;
            if made {
                tracing::info!(
                    certificate = %key.certificate_path.display(),
                    "generated a token signing key; a registry that checks tokens too needs this certificate as auth.token.rootcertbundle"
                );
            }
            key
        }
    };
    Ok(key.with_kid_format(config.token.kid_format))
}
