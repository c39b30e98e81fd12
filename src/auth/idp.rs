//! Signing in with an identity provider: docker_auth's `oidc_auth`, `google_auth`,
//! `github_auth` and `gitlab_auth`. A browser signs in at the provider (authorization code
//! with `state`, `nonce` and PKCE); regate keeps the provider's tokens in its token DB (the
//! state store) and gives the user a named credential (`rgt_…`, `auth::credentials`) for
//! `docker login`. Each time such a credential logs in, the provider is asked again when
//! the account's last check has run out: OpenID Connect and Google by a refresh grant and
//! UserInfo when the access token expires, GitHub and GitLab every `revalidate_after`.
//!
//! ```text
//! /oidc_auth (GET)            -> flow (state, nonce, PKCE) in the store -> 303 provider
//! /oidc_auth?code=&state=     -> flow taken once -> code exchanged -> id_token verified
//!                                (JWKS, iss, aud, exp, nonce) -> account, labels -> token DB
//!                                -> credential issued, web session begun -> password page
//! docker login -p rgt_…       -> credentials -> Source::current (this) -> still valid, or
//!                                revalidated at the provider (one at a time per account)
//! ```
//!
//! The code flow is regate's own (`oidc.rs`, with jsonwebtoken for the id_token): the
//! openidconnect crate would add ~81 crates and a second crypto stack, and does not refetch
//! a provider's rotated keys.

mod flow;
mod github;
mod gitlab;
pub mod http;
mod oidc;
mod tokendb;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use flow::{Flow, Taken, LIFETIME as FLOW_LIFETIME};
pub use tokendb::{when, Record};

use super::backend::{Authenticator, BoxFuture, Described, Verdict};
use super::credentials::Source;
use super::identity::{AuthnError, Backend};
use super::Secret;
use crate::acl::Labels;
use crate::state::Store;

/// One of the four sections, validated (`config/oidc.rs`, `google.rs`, `github.rs`,
/// `gitlab.rs` read them).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which section: `oidc_auth`, `google_auth`, `github_auth` or `gitlab_auth`.
    pub backend: Backend,
    pub kind: Kind,
    pub client_id: String,
    pub client_secret: ClientSecret,
    /// Where the provider sends the browser back (`redirect_url`, GitLab's
    /// `redirect_uri`); `None`: this site's own `/…_auth` as the browser reached it
    /// (Google), or the callback registered at GitHub.
    pub redirect_url: Option<String>,
    /// The registry's name in the `docker login` commands; `None`: the host the browser
    /// used.
    pub registry_url: Option<String>,
    pub http_timeout: Duration,
    /// GitHub and GitLab: how long a check at the provider holds.
    pub revalidate_after: Duration,
    /// How long past its last check an account keeps working while the provider cannot be
    /// reached (it never does once the provider says no).
    pub outage_grace: Duration,
    /// `level_token_db.path` (or docker_auth's older `token_db`).
    pub token_db: Option<PathBuf>,
}

impl Settings {
    /// The labels its accounts can have: `labels_claims`, GitHub's `teams` (with an
    /// organization), GitLab's `groups`.
    pub fn label_names(&self) -> Vec<String> {
        match &self.kind {
            Kind::Oidc { labels_claims, .. } => labels_claims.clone(),
            Kind::Github {
                organization: Some(_),
                ..
            } => vec!["teams".to_owned()],
            Kind::Gitlab { .. } => vec!["groups".to_owned()],
            _ => Vec::new(),
        }
    }
}

/// What only one kind of provider has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Oidc {
        issuer: String,
        /// The claim that names the account (`email`).
        user_claim: String,
        /// Claims whose values become labels of the same name.
        labels_claims: Vec<String>,
        scopes: Vec<String>,
    },
    Google {
        /// `https://accounts.google.com`, or a stand-in's.
        issuer: String,
        /// Only accounts of this Google Workspace domain (the `hd` claim).
        domain: Option<String>,
    },
    Github {
        /// Only members of this organization; their team slugs become `teams`.
        organization: Option<String>,
        web: String,
        api: String,
    },
    Gitlab {
        /// Only members of this group (or of a group below it).
        group: Option<String>,
        web: String,
        api: String,
    },
}

/// The client secret, as written or in a file (read when the runtime is built).
#[derive(Debug, Clone)]
pub enum ClientSecret {
    Inline(Secret),
    File(PathBuf),
}

/// A provider section that cannot be used as configured.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{section}.client_secret_file: cannot read {path}: {source}")]
    SecretFile {
        section: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{section}.client_secret_file: {path} is empty")]
    EmptySecret {
        section: &'static str,
        path: PathBuf,
    },
    #[error("{section}: {source}")]
    Roots {
        section: &'static str,
        #[source]
        source: crate::tls::CaError,
    },
}

/// Why a sign-in or a check at the provider did not give an account. Messages name
/// hosts, accounts and reasons, never a token or a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdpError {
    /// The provider could not be asked: down, too slow, a server error, an answer that is
    /// not what its API gives.
    #[error("{0}")]
    Unreachable(String),
    /// The provider said no to regate's request: a code used already or expired, a
    /// revoked token, an account that is gone.
    #[error("{0}")]
    Refused(String),
    #[error("the id_token is not valid: {0}")]
    IdToken(#[from] IdTokenError),
    /// Signed in, but not an account this section lets in.
    #[error("{0}")]
    NotAllowed(String),
    /// The provider and the config disagree (its discovery document names another
    /// issuer).
    #[error("{0}")]
    Misconfigured(String),
}

impl From<http::HttpError> for IdpError {
    fn from(e: http::HttpError) -> IdpError {
        IdpError::Unreachable(e.to_string())
    }
}

/// What is wrong with an id_token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("it is not signed")]
    Unsigned,
    #[error("it is not a JWT")]
    Malformed,
    #[error("it is signed with {0}, which regate does not accept for id_tokens")]
    Algorithm(String),
    #[error("it is signed with a key the provider does not publish")]
    UnknownKey,
    #[error("its signature does not match the provider's key")]
    BadSignature,
    #[error("it was issued by someone else than the configured issuer")]
    WrongIssuer,
    #[error("it is meant for another application (aud is not this client_id)")]
    WrongAudience,
    #[error("it has expired")]
    Expired,
    #[error("it is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("the provider sent none")]
    Absent,
    #[error("it does not answer this sign-in (the nonce differs)")]
    NonceMismatch,
    #[error("it lacks the `{0}` claim")]
    Missing(String),
}

/// A completed sign-in: who, with what labels, and the provider's tokens to keep.
#[derive(Debug)]
pub struct SignedIn {
    pub record: Record,
}

/// The provider's client credentials and the HTTP client to reach it.
pub(crate) struct Client {
    pub http: http::Http,
    pub id: String,
    pub secret: Secret,
}

enum Proto {
    Oidc(Box<oidc::Oidc>),
    Github(github::Github),
    Gitlab(gitlab::Gitlab),
}

/// One configured provider: its sign-in flow, and the source its accounts' credentials
/// ask who the account is now.
pub struct Provider {
    pub settings: Settings,
    client: Client,
    proto: Proto,
    db: tokendb::TokenDb,
}

impl Provider {
    /// Reads the client secret and builds the client; reaches nothing until a sign-in or
    /// a check needs the provider.
    pub fn new(settings: Settings, store: Arc<dyn Store>) -> Result<Provider, SetupError> {
        let section = settings.backend.section();
        let secret = match &settings.client_secret {
            ClientSecret::Inline(s) => s.clone(),
            ClientSecret::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| SetupError::SecretFile {
                        section,
                        path: path.clone(),
                        source,
                    })?;
                // docker_auth trims the file, so a trailing newline is not part of it.
                let text = text.trim();
                if text.is_empty() {
                    return Err(SetupError::EmptySecret {
                        section,
                        path: path.clone(),
                    });
                }
                Secret::new(text)
            }
        };
        let http = http::Http::new(settings.http_timeout)
            .map_err(|source| SetupError::Roots { section, source })?;
        let proto = match &settings.kind {
            Kind::Oidc { .. } | Kind::Google { .. } => {
                Proto::Oidc(Box::new(oidc::Oidc::new(&settings)))
            }
            Kind::Github { .. } => Proto::Github(github::Github::new(&settings)),
            Kind::Gitlab { .. } => Proto::Gitlab(gitlab::Gitlab::new(&settings)),
        };
        Ok(Provider {
            client: Client {
                http,
                id: settings.client_id.clone(),
                secret,
            },
            proto,
            db: tokendb::TokenDb::new(settings.backend, store),
            settings,
        })
    }

    pub fn backend(&self) -> Backend {
        self.settings.backend
    }

    /// The page that starts and finishes its sign-in, under the prefix: `/oidc_auth`, ...
    pub fn route(&self) -> String {
        format!("/{}", self.settings.backend.section())
    }

    /// The provider's name for people: "Google", "GitHub", "GitLab", or the issuer's host.
    pub fn label(&self) -> String {
        match &self.settings.kind {
            Kind::Google { .. } => "Google".to_owned(),
            Kind::Github { .. } => "GitHub".to_owned(),
            Kind::Gitlab { .. } => "GitLab".to_owned(),
            Kind::Oidc { issuer, .. } => issuer
                .parse::<hyper::Uri>()
                .ok()
                .and_then(|u| u.authority().map(|a| a.to_string()))
                .unwrap_or_else(|| issuer.clone()),
        }
    }

    /// Reads what the provider publishes about itself (OpenID discovery and keys), so a
    /// config that names an unreachable issuer is known at start, not at the first
    /// sign-in. GitHub and GitLab publish nothing to read.
    pub async fn warm(&self) -> Result<(), IdpError> {
        match &self.proto {
            Proto::Oidc(o) => o.warm(&self.client).await,
            _ => Ok(()),
        }
    }

    /// Where to send the browser to sign in.
    pub async fn authorize_url(&self, flow: &Flow) -> Result<String, IdpError> {
        match &self.proto {
            Proto::Oidc(o) => o.authorize_url(&self.client, flow).await,
            Proto::Github(g) => Ok(g.authorize_url(&self.client, flow)),
            Proto::Gitlab(g) => Ok(g.authorize_url(&self.client, flow)),
        }
    }

    /// Finishes a sign-in: the code exchanged, the answer verified, the account and its
    /// labels read, the section's restrictions checked; the tokens kept in the token DB.
    pub async fn finish(&self, code: &str, flow: &Flow) -> Result<SignedIn, IdpError> {
        let record = match &self.proto {
            Proto::Oidc(o) => o.finish(&self.client, code, flow).await?,
            Proto::Github(g) => g.finish(&self.client, code, flow).await?,
            Proto::Gitlab(g) => g.finish(&self.client, code, flow).await?,
        };
        let record = self.db.stamp(record, &self.settings);
        self.db
            .put(&record)
            .await
            .map_err(|e| IdpError::Unreachable(format!("the token DB: {e}")))?;
        Ok(SignedIn { record })
    }

    /// What the token DB holds for an account.
    pub async fn record(&self, account: &str) -> Option<Record> {
        self.db.get(account).await.ok().flatten()
    }

    /// Forgets an account's provider tokens (its last credential is gone).
    pub async fn forget(&self, account: &str) {
        let _ = self.db.delete(account).await;
    }

    /// Asks the provider again about an account whose check ran out.
    async fn revalidate(&self, record: &Record) -> Result<Record, IdpError> {
        let checked = match &self.proto {
            Proto::Oidc(o) => o.revalidate(&self.client, record).await?,
            Proto::Github(g) => g.revalidate(&self.client, record).await?,
            Proto::Gitlab(g) => g.revalidate(&self.client, record).await?,
        };
        Ok(self.db.stamp(checked, &self.settings))
    }

    /// Who an account is now: its kept labels while its last check holds, else what the
    /// provider says (once at a time per account; see `tokendb.rs`).
    async fn current_labels(&self, account: &str) -> Result<Labels, AuthnError> {
        self.db
            .current(account, &self.settings, |record| async move {
                self.revalidate(&record).await
            })
            .await
    }
}

impl Source for Provider {
    fn current<'a>(
        &'a self,
        account: &'a str,
        _kept: &'a Labels,
    ) -> BoxFuture<'a, Result<Option<Labels>, AuthnError>> {
        Box::pin(async move { self.current_labels(account).await.map(Some) })
    }
}

impl Authenticator for Provider {
    fn backend(&self) -> Backend {
        self.settings.backend
    }

    /// Its accounts log in with the credentials it gave them (`rgt_…`), which the
    /// credentials backend ahead of it in the chain judges: any other password is not its
    /// to judge (a provider password never reaches regate).
    fn authenticate<'a>(&'a self, _: &'a str, _: &'a Secret) -> BoxFuture<'a, Verdict> {
        Box::pin(std::future::ready(Verdict::NoMatch))
    }

    fn describe<'a>(
        &'a self,
        account: &'a str,
        _password: Option<&'a Secret>,
    ) -> BoxFuture<'a, Described> {
        Box::pin(async move {
            match self.db.get(account).await {
                Ok(Some(record)) => Described::Found {
                    entry: Some(format!(
                        "signed in with {} ({}); {}",
                        self.label(),
                        self.settings.backend,
                        record.describe()
                    )),
                    labels: record.labels,
                    password_ok: None,
                },
                Ok(None) => Described::NoMatch,
                Err(e) => Described::Unavailable(format!("the token DB: {e}")),
            }
        })
    }
}

/// Values of the claims `names` in `claims`: a list of strings, or one string.
pub(crate) fn labels_from(
    claims: &serde_json::Map<String, serde_json::Value>,
    names: &[String],
) -> Labels {
    let mut labels = Labels::new();
    for name in names {
        let values: Vec<String> = match claims.get(name) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            Some(serde_json::Value::String(s)) if !s.is_empty() => vec![s.clone()],
            _ => Vec::new(),
        };
        if !values.is_empty() {
            labels.insert(name.clone(), values);
        }
    }
    labels
}

/// 32 random bytes, base64url (43 characters): states, nonces, PKCE verifiers.
pub(crate) fn random() -> String {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    // The OS's randomness; without it there is no safe state or verifier to make.
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system provides randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// base64url of the SHA-256 of `text`: store keys that do not hold the value they stand
/// for (a state, a browser's cookie).
pub(crate) fn digest(text: &str) -> String {
    use base64::Engine;
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
