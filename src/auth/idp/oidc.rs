//! OpenID Connect (`oidc_auth`) and Google (`google_auth`, an OpenID provider too): the
//! issuer's discovery document, its signing keys (JWKS; refetched when a token names a
//! key not seen yet, at most every `KEYS_REFETCH`), the authorization code flow with
//! `state`, `nonce` and PKCE (S256), the id_token verified (signature, `iss`, `aud`,
//! `azp`, `exp`, `nbf`, `nonce`), and the check again by refresh grant and UserInfo.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::http::{Answer, Auth};
use super::tokendb::Tokens;
use super::{labels_from, Client, Flow, IdTokenError, IdpError, Kind, Record, Settings};
use crate::acl::Labels;

mod keys;

use keys::KeySet;

/// A failed discovery is not asked again sooner (a page of sign-in clicks while the
/// issuer is down makes one request, not one each).
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);
/// A discovery document is read again after a day.
const DISCOVERY_MAX_AGE: Duration = Duration::from_secs(86_400);

/// What regate reads of `/.well-known/openid-configuration`.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
}

enum Flavor {
    Oidc {
        user_claim: String,
        labels_claims: Vec<String>,
    },
    Google {
        domain: Option<String>,
    },
}

#[derive(Default)]
struct Discovered {
    doc: Option<(Arc<Discovery>, Instant)>,
    failed: Option<(Instant, IdpError)>,
}

pub struct Oidc {
    issuer: String,
    scopes: Vec<String>,
    flavor: Flavor,
    discovery: Mutex<Discovered>,
    keys: Mutex<KeySet>,
}

impl Oidc {
    pub fn new(settings: &Settings) -> Oidc {
        let (issuer, scopes, flavor) = match &settings.kind {
            Kind::Oidc {
                issuer,
                user_claim,
                labels_claims,
                scopes,
            } => (
                issuer.clone(),
                scopes.clone(),
                Flavor::Oidc {
                    user_claim: user_claim.clone(),
                    labels_claims: labels_claims.clone(),
                },
            ),
            Kind::Google { issuer, domain } => (
                issuer.clone(),
                vec!["openid".to_owned(), "email".to_owned()],
                Flavor::Google {
                    domain: domain.clone(),
                },
            ),
            _ => unreachable!("an OpenID section"),
        };
        Oidc {
            issuer,
            scopes,
            flavor,
            discovery: Mutex::default(),
            keys: Mutex::default(),
        }
    }

    pub async fn warm(&self, client: &Client) -> Result<(), IdpError> {
        let d = self.discovery(client).await?;
        let mut keys = self.keys.lock().await;
        if keys.fetched.is_none() {
            *keys = self.fetch_keys(client, &d).await?;
        }
        Ok(())
    }

    async fn discovery(&self, client: &Client) -> Result<Arc<Discovery>, IdpError> {
        let mut d = self.discovery.lock().await;
        if let Some((doc, at)) = &d.doc {
            if at.elapsed() < DISCOVERY_MAX_AGE {
                return Ok(doc.clone());
            }
        }
        if let (None, Some((at, e))) = (&d.doc, &d.failed) {
            if at.elapsed() < DISCOVERY_RETRY {
                return Err(e.clone());
            }
        }
        match self.fetch_discovery(client).await {
            Ok(doc) => {
                let doc = Arc::new(doc);
                d.doc = Some((doc.clone(), Instant::now()));
                d.failed = None;
                Ok(doc)
            }
            // A document read before still serves while a new read fails.
            Err(e) => match &d.doc {
                Some((doc, _)) => Ok(doc.clone()),
                None => {
                    d.failed = Some((Instant::now(), e.clone()));
                    Err(e)
                }
            },
        }
    }

    async fn fetch_discovery(&self, client: &Client) -> Result<Discovery, IdpError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let answer = client
            .http
            .get(&url, Auth::None, "application/json")
            .await?;
        if !answer.status.is_success() {
            let status = answer.status.as_u16();
            let e = format!(
                "{url} answered HTTP {status}: is `{}` the issuer's URL?",
                self.issuer
            );
            return Err(match answer.status.is_client_error() {
                true => IdpError::Misconfigured(e),
                false => IdpError::Unreachable(e),
            });
        }
        let doc: Discovery = answer
            .json()
            .map_err(|e| IdpError::Misconfigured(format!("{url}: {e}")))?;
        // OpenID Connect Discovery 4.3: the document is the configured issuer's own.
        if doc.issuer.trim_end_matches('/') != self.issuer.trim_end_matches('/') {
            return Err(IdpError::Misconfigured(format!(
                "{url} names the issuer `{}`, not the configured `{}`",
                doc.issuer, self.issuer
            )));
        }
        Ok(doc)
    }

    pub async fn authorize_url(&self, client: &Client, flow: &Flow) -> Result<String, IdpError> {
        let d = self.discovery(client).await?;
        let challenge = flow.challenge();
        let scope = self.scopes.join(" ");
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &client.id),
            ("scope", &scope),
            ("state", &flow.state),
            ("nonce", &flow.nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ];
        if let Some(uri) = &flow.redirect_uri {
            params.push(("redirect_uri", uri));
        }
        if let Flavor::Google { domain } = &self.flavor {
            // A refresh token, which Google gives only with consent asked each time.
            params.push(("access_type", "offline"));
            params.push(("prompt", "consent"));
            if let Some(domain) = domain {
                params.push(("hd", domain));
            }
        }
        let sep = if d.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!(
            "{}{sep}{}",
            d.authorization_endpoint,
            crate::percent::form(&params)
        ))
    }

    pub async fn finish(
        &self,
        client: &Client,
        code: &str,
        flow: &Flow,
    ) -> Result<Record, IdpError> {
        let d = self.discovery(client).await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", flow.verifier.as_str()),
        ];
        if let Some(uri) = &flow.redirect_uri {
            form.push(("redirect_uri", uri));
        }
        let tokens = self.token_request(client, &d, form).await?;
        let id_token = tokens.id_token.clone().ok_or(IdTokenError::Absent)?;
        let claims = self
            .verify(client, &d, &id_token, Some(&flow.nonce))
            .await?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (account, labels) = self.account(&claims)?;
        Ok(Record::new(account, subject, tokens, labels))
    }

    /// A token request (a code, or a refresh token) with the client's credentials: HTTP
    /// Basic, unless the provider says it takes them only in the form.
    async fn token_request(
        &self,
        client: &Client,
        d: &Discovery,
        mut form: Vec<(&str, &str)>,
    ) -> Result<Tokens, IdpError> {
        let methods = &d.token_endpoint_auth_methods_supported;
        let basic = methods.is_empty()
            || methods.iter().any(|m| m == "client_secret_basic")
            || !methods.iter().any(|m| m == "client_secret_post");
        let auth = if basic {
            Auth::Client(&client.id, &client.secret)
        } else {
            form.push(("client_id", &client.id));
            form.push(("client_secret", client.secret.expose()));
            Auth::None
        };
        let answer = client
            .http
            .post_form(&d.token_endpoint, auth, &form)
            .await?;
        tokens_of(&answer, "token endpoint")
    }

    /// address, the Workspace domain) checked.
    fn account(&self, claims: &Map<String, Value>) -> Result<(String, Labels), IdpError> {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let verified = match claims.get("email_verified") {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) => Some(s == "true"),
            _ => None,
        };
        match &self.flavor {
            Flavor::Oidc {
                user_claim,
                labels_claims,
            } => {
                let account = text(user_claim).ok_or_else(|| {
                    IdpError::Misconfigured(format!(
                        "the provider's answer has no `{user_claim}` claim to name the account by (user_claim): is a scope that gives it in `scopes`?"
                    ))
                })?;
                if user_claim == "email" && verified == Some(false) {
                    return Err(IdpError::NotAllowed(format!(
                        "the provider has not verified the e-mail address {account}, so it cannot name an account here"
                    )));
                }
                Ok((account.to_owned(), labels_from(claims, labels_claims)))
            }
            Flavor::Google { domain } => {
                let email = text("email").ok_or_else(|| {
                    IdpError::Misconfigured("Google's answer has no e-mail address".to_owned())
                })?;
                if verified != Some(true) {
                    return Err(IdpError::NotAllowed(format!(
                        "Google has not verified the e-mail address {email}"
                    )));
                }
                // The hosted domain (`hd`), not the address: anyone can make a Google
                // account with an address at any domain.
                if let Some(domain) = domain {
                    let hd = text("hd");
                    if hd.map(str::to_ascii_lowercase) != Some(domain.to_ascii_lowercase()) {
                        let is = match hd {
                            Some(hd) => format!("an account of {hd}"),
                            None => "not a Google Workspace account".to_owned(),
                        };
                        return Err(IdpError::NotAllowed(format!(
                            "only accounts of the Google Workspace domain {domain} may sign in here, and {email} is {is}"
                        )));
                    }
                }
                Ok((email.to_owned(), Labels::new()))
            }
        }
    }

    /// The check again: the refresh token exchanged for a new access token (and id_token),
    /// UserInfo asked with it; the same subject and account, labels as they are now.
    pub async fn revalidate(&self, client: &Client, record: &Record) -> Result<Record, IdpError> {
        let d = self.discovery(client).await?;
        let Some(refresh) = record.refresh_token.as_deref() else {
            return Err(IdpError::Refused(
                "the provider gave no refresh token at sign-in, so the account cannot be checked again: sign in again".to_owned(),
            ));
        };
        let form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh)];
        let tokens = self.token_request(client, &d, form).await?;
        let same = |claims: &Map<String, Value>, from: &str| {
            let sub = claims.get("sub").and_then(Value::as_str);
            if sub == Some(record.subject.as_str()) {
                Ok(())
            } else {
                Err(IdpError::Refused(format!(
                    "the provider's {from} is about another subject than the one signed in"
                )))
            }
        };
        let mut claims = Map::new();
        if let Some(raw) = &tokens.id_token {
            let fresh = self.verify(client, &d, raw, None).await?;
            same(&fresh, "new id_token")?;
            claims.extend(fresh);
        }
        if let Some(url) = &d.userinfo_endpoint {
            let answer = client
                .http
                .get(url, Auth::Bearer(&tokens.access_token), "application/json")
                .await?;
            match answer.status.as_u16() {
                200 => {}
                401 | 403 => {
                    return Err(IdpError::Refused(format!(
                        "UserInfo refused the new access token (HTTP {})",
                        answer.status.as_u16()
                    )))
                }
                status => {
                    return Err(IdpError::Unreachable(format!(
                        "UserInfo answered HTTP {status}"
                    )))
                }
            }
            let info: Map<String, Value> = answer.json().map_err(IdpError::Unreachable)?;
            same(&info, "UserInfo")?;
            claims.extend(info);
        }
        let labels = if claims.is_empty() {
            record.labels.clone()
        } else {
            let (account, labels) = self.account(&claims)?;
            if account != record.account {
                return Err(IdpError::Refused(format!(
                    "the provider now names this account {account}"
                )));
            }
            labels
        };
        Ok(Record {
            access_token: tokens.access_token,
            token_type: tokens.token_type,
            // A provider that rotates refresh tokens sends a new one; others keep theirs.
            refresh_token: tokens
                .refresh_token
                .or_else(|| record.refresh_token.clone()),
            expires_in: tokens.expires_in,
            labels,
            ..record.clone()
        })
    }
}

/// A token endpoint's answer: the tokens, or why not (its OAuth2 error is the provider's
/// "no"; a server error or nonsense is the provider being unable to answer).
pub(super) fn tokens_of(answer: &Answer, what: &str) -> Result<Tokens, IdpError> {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        #[serde(default)]
        error_description: Option<String>,
    }
    let status = answer.status.as_u16();
    if answer.status.is_success() {
        // GitHub answers errors with 200.
        if let Ok(e) = answer.json::<OAuthError>() {
            return Err(refused(what, &e.error, e.error_description.as_deref()));
        }
        return answer
            .json::<Tokens>()
            .map_err(|e| IdpError::Unreachable(format!("the {what}: {e}")));
    }
    match (status, answer.json::<OAuthError>()) {
        (400..=499, Ok(e)) => Err(refused(what, &e.error, e.error_description.as_deref())),
        _ => Err(IdpError::Unreachable(format!(
            "the {what} answered HTTP {status}"
        ))),
    }
}

fn refused(what: &str, error: &str, description: Option<&str>) -> IdpError {
    let mut text = format!("the {what} refused: {error}");
    if let Some(d) = description.filter(|d| !d.is_empty()) {
        text.push_str(&format!(" ({d})"));
    }
    IdpError::Refused(text)
}

#[cfg(test)]
mod tests;
