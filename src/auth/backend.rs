//! Login and authorization backends, and the chains that ask them in docker_auth's order
//! (`server/server.go`): the first backend that gives an answer other than "no match"
//! decides; every backend saying "no match" is a refusal.
//!
//! Authentication: the static `users` (with `htpasswd` and `robots`) first, then the
//! others as configured (the identity providers, `ldap_auth`, and the backends still to
//! come: external programs, SQL). Authorization: the static `acl` first (a robot only its own
//! rules), then the others (SQL rules, external programs, casbin).

use std::sync::Arc;

use super::identity::{AuthnError, Backend, Identity};
use super::users::Users;
use super::Secret;
use crate::acl;

pub use crate::BoxFuture;

/// What one login backend says about an account and password.
#[derive(Debug)]
pub enum Verdict {
    /// It holds the account, and the password is right.
    Accepted(Identity),
    /// It does not hold the account: the next backend is asked.
    NoMatch,
    /// It holds the account and refuses (a wrong password, an expired robot), or cannot
    /// say (unavailable): final, as in docker_auth.
    Refused(AuthnError),
}

/// A login backend: static users, the LDAP directory, ...
pub trait Authenticator: Send + Sync {
    /// Which config section it is, for the audit log and `explain`.
    fn backend(&self) -> Backend;

    /// Judges an account (never `""`: anonymous is the static users' to judge) and its
    /// password.
    fn authenticate<'a>(&'a self, account: &'a str, password: &'a Secret)
        -> BoxFuture<'a, Verdict>;

    /// Whether it verified this account and password lately: a login that costs no
    /// password check, and so is no guess (the throttle reserves nothing for it).
    fn is_known(&self, _account: &str, _password: &Secret) -> bool {
        false
    }

    /// For `regate explain`: what it knows of the account (labels, where it is), checking
    /// the password when one is given. By default it knows nobody.
    fn describe<'a>(
        &'a self,
        _account: &'a str,
        _password: Option<&'a Secret>,
    ) -> BoxFuture<'a, Described> {
        Box::pin(std::future::ready(Described::NoMatch))
    }

    /// Whether its "no match" already cost what a wrong password costs, so the chain
    /// need not spend a bcrypt on an unknown name to hide that it is unknown.
    fn pays_for_unknown(&self) -> bool {
        false
    }
}

/// What a backend knows of an account, for `regate explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Described {
    Found {
        labels: crate::acl::Labels,
        /// Where it holds the account (an LDAP entry's DN), when it says.
        entry: Option<String>,
        /// Whether the password given is right; `None` when none was given.
        password_ok: Option<bool>,
    },
    NoMatch,
    /// It could not be asked (the cause).
    Unavailable(String),
}

/// The login backends in order: regate's named credentials (they say "no match" at once
/// for anything that is not one), the static users, then the rest.
pub struct Logins {
    users: Arc<Users>,
    chain: Vec<Arc<dyn Authenticator>>,
    /// The identity providers among them, for their sign-in pages.
    providers: Vec<Arc<super::idp::Provider>>,
}

impl Logins {
    /// `chain`: every backend in the order asked (the static users among them).
    pub fn new(users: Arc<Users>, chain: Vec<Arc<dyn Authenticator>>) -> Logins {
        Logins {
            users,
            chain,
            providers: Vec::new(),
        }
    }

    /// Names the identity providers of the chain, whose pages sign people in.
    pub fn with_providers(mut self, providers: Vec<Arc<super::idp::Provider>>) -> Logins {
        self.providers = providers;
        self
    }

    /// The identity providers, in docker_auth's order.
    pub fn providers(&self) -> &[Arc<super::idp::Provider>] {
        &self.providers
    }

    /// The static users (anonymous access, refresh tokens, names for `explain`).
    pub fn users(&self) -> &Arc<Users> {
        &self.users
    }

    /// Every backend, in the order they are asked.
    pub fn backends(&self) -> impl Iterator<Item = &dyn Authenticator> {
        self.chain.iter().map(|b| &**b)
    }

    /// Asks each backend in turn; the first that knows the account decides. An account
    /// no backend knows is refused after costing what a wrong password costs.
    pub async fn authenticate(
        &self,
        account: &str,
        password: &Secret,
    ) -> Result<Identity, AuthnError> {
        if account.is_empty() {
            return self.users.anonymous();
        }
        let mut paid = false;
        for backend in self.backends() {
            match backend.authenticate(account, password).await {
                Verdict::Accepted(identity) => return Ok(identity),
                Verdict::Refused(e) => return Err(e),
                Verdict::NoMatch => paid |= backend.pays_for_unknown(),
            }
        }
        if !paid {
            self.users.check_unknown(password).await?;
        }
        Err(AuthnError::BadCredentials)
    }

    /// Whether any backend verified this account and password lately.
    pub fn is_known(&self, account: &str, password: &Secret) -> bool {
        self.backends().any(|b| b.is_known(account, password))
    }
}

/// An authorization backend after the static `acl`: SQL rules, external programs, ...
pub trait Authorizer: Send + Sync {
    /// Its config section, named in the audit log.
    fn name(&self) -> &str;

    /// Decides one scope: the actions granted, or `None` for "no match" (the next
    /// authorizer is asked; when none decides, the scope is denied).
    fn authorize<'a>(
        &'a self,
        request: &'a acl::Request<'a>,
    ) -> BoxFuture<'a, Result<Option<Decided>, AuthzError>>;
}

/// An authorizer's decision on one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Granted, sorted; empty is a denial that ends the search.
    pub actions: Vec<String>,
    /// What decided, for the audit log (`acl_xorm row 7`, `ext_authz`).
    pub rule: String,
}

/// An authorizer that could not decide (a database down, a program that failed): the
/// token request is answered 503, as docker_auth answers such an error with 500.
#[derive(Debug, thiserror::Error)]
#[error("{backend}: {message}")]
pub struct AuthzError {
    pub backend: String,
    pub message: String,
}
