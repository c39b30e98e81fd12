//! What a configuration becomes at run time: the users and their caches, the token signer,
//! the ACL, and what outlives a reload (metrics, the login throttle, the bcrypt pool). A
//! reload builds a new [`Runtime`] and swaps it in whole.

use std::sync::Arc;

use crate::auth::acl_xorm::SqlRules;
use crate::auth::backend::{Authenticator, Authorizer, Logins};
use crate::auth::credentials::Credentials;
use crate::auth::keys::{KeyError, SigningKey};
use crate::auth::token::Tokens;
use crate::auth::users::Users;
use crate::auth::xorm::SqlUsers;
use crate::config::Config;
use crate::sql::Database;
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
    /// `xorm_auth`'s accounts, for `regate user` and the admin API.
    pub sql_users: Option<Arc<SqlUsers>>,
    /// `acl_xorm`'s rules, for `regate acl` and the admin API.
    pub sql_rules: Option<Arc<SqlRules>>,
    pub tokens: Tokens,
    pub acl: Arc<acl::Acl>,
    pub metrics: Arc<metrics::Metrics>,
    pub throttle: Arc<auth::throttle::Throttle>,
    pub bcrypt: Arc<auth::pool::Pool>,
    /// State kept beyond a request (web sessions, ...): this process's, or shared.
    pub state: Arc<dyn Store>,
    pub revocations: Arc<auth::revoked::Revocations>,
    pub verified: Arc<auth::users::Verified>,
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
    /// Credentials bcrypt has verified lately (see [`auth::users::Verified`]).
    pub verified: Arc<auth::users::Verified>,
}

fn verified() -> Arc<auth::users::Verified> {
    Arc::new(auth::users::Verified::new(CREDENTIAL_CACHE_TTL))
}

impl Lasting {
    /// What a first start carries: the state store the config names: Redis, shared with
    /// the other replicas, under `shared_state` (the login throttle and refresh-token
    /// revocations count there too); else a file when an identity provider is configured
    /// (its token DB and credentials must outlive a restart); else memory.
    pub fn for_config(config: &Config) -> Result<Lasting, Error> {
        if let Some(redis) = &config.shared_state {
            let metrics: Arc<metrics::Metrics> = Arc::default();
            let store: Arc<dyn Store> =
                Arc::new(crate::state::RedisStore::new(redis, metrics.clone())?);
            tracing::info!(redis = %redis, "shared state: login throttle, refresh-token revocations, sessions and the token DB are kept there");
            return Ok(Lasting {
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
                verified: verified(),
            });
        }
        let Some(path) = &config.token_db else {
            return Ok(Lasting::default());
        };
        // A docker_auth LevelDB folder: regate's own file goes inside it (the LevelDB is
        // not read; its users sign in once more).
        let file = if path.is_dir() {
            path.join("regate-tokens.json")
        } else {
            path.clone()
        };
        tracing::info!(file = %file.display(), "token DB (identity providers' tokens, credentials, sessions)");
        let metrics: Arc<metrics::Metrics> = Arc::default();
        let state: Arc<dyn Store> = Arc::new(Local::file(&file)?);
        Ok(Lasting {
            revocations: Arc::new(auth::revoked::Revocations::new(
                state.clone(),
                metrics.clone(),
            )),
            metrics,
            throttle: Arc::default(),
            bcrypt: Arc::default(),
            state,
            verified: verified(),
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
            verified: verified(),
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
            verified,
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
        let sql_users = sql_users(&config, &metrics, &bcrypt);
        let logins = Arc::new(logins_with(
            &config,
            metrics.clone(),
            bcrypt.clone(),
            state.clone(),
            sql_users.clone(),
            verified.clone(),
        )?);
        let users = logins.users().clone();
        let sql_rules = sql_rules(&config, sql_users.as_ref().map(|u| u.database()));
        if let Some(rules) = &sql_rules {
            rules.listen();
        }
        let authorizers = authorizers(&config, sql_rules.clone())?;
        metrics.config_loaded(&config.digest);
        Ok(Runtime {
            acl: config.acl.clone(),
            authorizers,
            sql_users,
            sql_rules,
            users,
            logins,
            tokens,
            config,
            metrics,
            throttle,
            bcrypt,
            state,
            revocations,
            verified,
        })
    }

    pub fn lasting(&self) -> Lasting {
        Lasting {
            metrics: self.metrics.clone(),
            throttle: self.throttle.clone(),
            bcrypt: self.bcrypt.clone(),
            state: self.state.clone(),
            revocations: self.revocations.clone(),
            verified: self.verified.clone(),
        }
    }
}

/// `xorm_auth`'s login backend, if configured (connected when first asked).
pub fn sql_users(
    config: &Config,
    metrics: &Arc<metrics::Metrics>,
    bcrypt: &Arc<auth::pool::Pool>,
) -> Option<Arc<SqlUsers>> {
    config.xorm_auth.as_ref().map(|settings| {
        Arc::new(SqlUsers::new(
            Arc::new(Database::open(settings)),
            bcrypt.clone(),
            CREDENTIAL_CACHE_TTL,
            metrics.clone(),
        ))
    })
}

/// `acl_xorm`'s rules, if configured; on `xorm_auth`'s database (one pool) when both
/// name the same one.
pub fn sql_rules(config: &Config, users_db: Option<&Arc<Database>>) -> Option<Arc<SqlRules>> {
    config.acl_xorm.as_ref().map(|acl| {
        let db = match users_db {
            Some(db) if db.settings().same_database(&acl.database) => db.clone(),
            _ => Arc::new(Database::open(&acl.database)),
        };
        Arc::new(SqlRules::new(db, acl.cache_ttl))
    })
}

/// The authorizers asked after the static `acl`, in docker_auth's order: `acl_xorm`,
/// `ext_authz`, `casbin_authz`.
pub fn authorizers(
    config: &Config,
    sql_rules: Option<Arc<SqlRules>>,
) -> Result<Vec<Arc<dyn Authorizer>>, Error> {
    let mut out: Vec<Arc<dyn Authorizer>> = Vec::new();
    if let Some(rules) = sql_rules {
        out.push(rules);
    }
    if let Some(program) = &config.ext_authz {
        out.push(Arc::new(auth::ext::ExtAuthz::new(program.clone())));
    }
    if let Some(casbin) = &config.casbin_authz {
        out.push(Arc::new(
            auth::casbin::Casbin::load(casbin).map_err(Error::Casbin)?,
        ));
    }
    Ok(out)
}

/// The login backends a config names, in docker_auth's order: regate's named credentials
/// (which match only what is one), the static users (with `htpasswd` and `robots`), then
/// `ext_auth`, the identity providers (`google_auth`, `github_auth`, `oidc_auth`,
/// `gitlab_auth`), `ldap_auth` and `xorm_auth`. `regate explain` asks the same chain.
/// Reads the files they need (the directory's bind password and CA, the providers' client
/// secrets); connects to nothing until a login needs it.
pub fn logins(
    config: &Config,
    metrics: Arc<metrics::Metrics>,
    bcrypt: Arc<auth::pool::Pool>,
    state: Arc<dyn Store>,
) -> Result<Logins, Error> {
    let sql_users = sql_users(config, &metrics, &bcrypt);
    logins_with(config, metrics, bcrypt, state, sql_users, verified())
}

/// [`logins`] with `xorm_auth`'s backend made already.
fn logins_with(
    config: &Config,
    metrics: Arc<metrics::Metrics>,
    bcrypt: Arc<auth::pool::Pool>,
    state: Arc<dyn Store>,
    sql_users: Option<Arc<SqlUsers>>,
    verified: Arc<auth::users::Verified>,
) -> Result<Logins, Error> {
    let users = Arc::new(
        Users::new(config.users.clone(), CREDENTIAL_CACHE_TTL, metrics.clone())
            .with_pool(bcrypt)
            .with_verified(verified),
    );
    let providers = config
        .idp
        .iter()
        .map(|s| auth::idp::Provider::new(s.clone(), state.clone()).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    // A credential names its account, and the backend it came from says who that account
    // is now: the static users, the SQL table, or the provider (which checks with it again).
    let mut credentials = Credentials::new(state)
        .with_source("users", users.clone())
        .with_source("htpasswd", users.clone());
    if let Some(sql) = &sql_users {
        credentials = credentials.with_source("xorm_auth", sql.clone());
    }
    for p in &providers {
        credentials = credentials.with_source(p.backend().section(), p.clone());
    }
    let mut chain: Vec<Arc<dyn Authenticator>> = vec![Arc::new(credentials), users.clone()];
    if let Some(program) = &config.ext_auth {
        chain.push(Arc::new(auth::ext::ExtAuth::new(program.clone())));
    }
    chain.extend(
        providers
            .iter()
            .map(|p| p.clone() as Arc<dyn Authenticator>),
    );
    if let Some(ldap) = &config.ldap {
        chain.push(Arc::new(auth::ldap::Directory::new(ldap.clone(), metrics)?));
    }
    if let Some(sql) = sql_users {
        chain.push(sql);
    }
    Ok(Logins::new(users, chain).with_providers(providers))
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
