//! Who a caller turned out to be, and why a login failed: the types every login backend
//! (static users, the htpasswd file, robots, LDAP) and every consumer (the token endpoint,
//! `explain`, the ACL) share, kept below all of them.

use std::sync::Arc;

use crate::acl::{Acl, Labels};

/// Which backend vouched for an account, named as the config section it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The `users` list, the anonymous `""` entry included.
    Users,
    /// The `htpasswd` file.
    Htpasswd,
    Robots,
    /// The LDAP directory of `ldap_auth`.
    LdapAuth,
    /// The identity providers: credentials their sign-ins gave.
    GoogleAuth,
    GithubAuth,
    OidcAuth,
    GitlabAuth,
    /// An external program (`ext_auth`).
    ExtAuth,
    /// The SQL table `xorm_user` (`xorm_auth`).
    XormAuth,
}

impl Backend {
    /// The backend a config section names.
    pub fn from_section(section: &str) -> Option<Backend> {
        [
            Backend::Users,
            Backend::Htpasswd,
            Backend::Robots,
            Backend::LdapAuth,
            Backend::GoogleAuth,
            Backend::GithubAuth,
            Backend::OidcAuth,
            Backend::GitlabAuth,
            Backend::ExtAuth,
            Backend::XormAuth,
        ]
        .into_iter()
        .find(|b| b.section() == section)
    }

    /// The config section, as written in the file.
    pub fn section(self) -> &'static str {
        match self {
            Backend::Users => "users",
            Backend::Htpasswd => "htpasswd",
            Backend::Robots => "robots",
            Backend::LdapAuth => "ldap_auth",
            Backend::GoogleAuth => "google_auth",
            Backend::GithubAuth => "github_auth",
            Backend::OidcAuth => "oidc_auth",
            Backend::GitlabAuth => "gitlab_auth",
            Backend::ExtAuth => "ext_auth",
            Backend::XormAuth => "xorm_auth",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.section())
    }
}

/// An authenticated caller, as the ACL sees it. Anonymous is account `""`.
#[derive(Debug, Clone)]
pub struct Identity {
    pub account: String,
    pub labels: Labels,
    /// A robot's own rules, used instead of the global ACL.
    pub acl: Option<Arc<Acl>>,
    /// Which backend said yes.
    pub backend: Backend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("incorrect username or password")]
    BadCredentials,
    /// What a client is told says nothing of the config; [`AuthnError::detail`] does, for
    /// the log.
    #[error("authentication required")]
    AnonymousDisabled,
    #[error("this robot account has expired")]
    Expired,
    #[error("the refresh token is no longer valid; log in again")]
    StaleRefresh,
    /// Too many password checks are running and waiting (the bcrypt pool is full):
    /// nobody looked at the password (429, try again shortly).
    #[error("too many logins are being checked; try again shortly")]
    Busy,
    /// The LDAP directory did not answer in time, or answered with an error: nobody can
    /// say whether the password is right (503, not 401).
    #[error("the user directory (LDAP) is unavailable; try again later")]
    DirectoryUnavailable,
    /// An identity provider no longer vouches for the account (a revoked sign-in, a user
    /// removed from the organization): its credentials stop until it signs in again.
    #[error("the identity provider no longer vouches for this account; sign in again in the browser for a new password")]
    ProviderRefused,
    /// The identity provider could not be asked about an account whose last check ran
    /// out, beyond its `outage_grace` (503, not 401: the credential may be good).
    #[error("the identity provider cannot be reached to check this account; try again later")]
    ProviderUnavailable,
    /// The SQL database of `xorm_auth` did not answer in time, failed, or holds a row it
    /// cannot read: 503, as for the directory.
    #[error("the user database is unavailable; try again later")]
    DatabaseUnavailable,
    /// The `ext_auth` program failed (an exit code other than 0, 1 or 2, a crash, no
    /// answer within its time limit, output that is not its JSON): 503.
    #[error("the external authenticator failed; try again later")]
    ProgramFailed,
}

impl AuthnError {
    /// The reason for the operator's log, which may name the config.
    pub fn detail(&self) -> String {
        match self {
            AuthnError::AnonymousDisabled => {
                "anonymous access is not enabled (no \"\" entry in users)".to_owned()
            }
            e => e.to_string(),
        }
    }

    /// Whether the backend could not say (503): the password may be right, so the attempt
    /// is neither a failure for the throttle nor a reason to ask for another password.
    pub fn is_unavailable(self) -> bool {
        matches!(
            self,
            AuthnError::DirectoryUnavailable
                | AuthnError::DatabaseUnavailable
                | AuthnError::ProgramFailed
                | AuthnError::ProviderUnavailable
        )
    }
}
