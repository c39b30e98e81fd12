//! The token endpoint (`/auth`), per the Docker token spec
//! (distribution `docs/spec/auth/token.md`): authenticate, decide each scope with the ACL,
//! sign. A partial or empty grant is not an error; the registry route answers
//! `insufficient_scope` later, which is what clients expect.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::body::Body;
use crate::error::{json_response, Code, Failure, OAuthError, RegistryError};
use crate::percent::form_decode;
use crate::runtime::Runtime;

use super::authorize::{decide, identify, unavailable, Login};
use super::challenge::{parse_authorization, Credential};
use super::scope::Scope;
use super::Secret;

/// A form body larger than this is not a token request.
const FORM_LIMIT: usize = 64 * 1024;

#[derive(Serialize)]
struct TokenResponse<'a> {
    token: &'a str,
    /// The OAuth2 name; docker's and containerd's POST flows read only this one.
    access_token: &'a str,
    expires_in: u64,
    issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    /// OAuth2: the scope granted (POST only).
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

/// The parameters of a token request, from the query (GET) or the form (POST).
#[derive(Default)]
struct Params {
    service: Option<String>,
    scopes: Vec<String>,
    account: Option<String>,
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<Secret>,
    refresh_token: Option<Secret>,
    /// `offline_token=true` (GET) or `access_type=offline` (POST).
    offline: bool,
}

impl Params {
    fn parse(encoded: &str) -> Params {
        let mut p = Params::default();
        for pair in encoded.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(k), Some(v)) = (form_decode(k), form_decode(v)) else {
                continue;
            };
            match k.as_str() {
                "service" => p.service = Some(v),
                "scope" => p.scopes.push(v),
                "account" => p.account = Some(v),
                "grant_type" => p.grant_type = Some(v),
                "username" => p.username = Some(v),
                "password" => p.password = Some(Secret::new(v)),
                "refresh_token" => p.refresh_token = Some(Secret::new(v)),
                "offline_token" => p.offline |= v == "true",
                "access_type" => p.offline |= v == "offline",
                _ => {}
            }
        }
        p
    }
}

fn bad_request(message: &str) -> RegistryError {
    RegistryError::new(Code::Unsupported, message)
        .with_status(StatusCode::BAD_REQUEST)
        .with_details(message)
}

/// A token request's answer, and who was authenticated (for the access log).
pub struct Answered {
    pub account: Option<String>,
    pub response: Response<Body>,
}

/// Answers a token request.
pub async fn handle(rt: &Runtime, req: Request<Incoming>, client_ip: IpAddr) -> Answered {
    match serve(rt, req, client_ip).await {
        Ok((account, response)) => Answered {
            account: Some(account),
            response,
        },
        Err(e) => Answered {
            account: None,
            response: e.into_response(),
        },
    }
}

async fn serve(
    rt: &Runtime,
    req: Request<Incoming>,
    client_ip: IpAddr,
) -> Result<(String, Response<Body>), Failure> {
    let credential = parse_authorization(req.headers().get(hyper::header::AUTHORIZATION));
    let post = *req.method() == Method::POST;
    let params = match *req.method() {
        Method::GET | Method::HEAD => Params::parse(req.uri().query().unwrap_or("")),
        Method::POST => Params::parse(&read_form(req).await?),
        _ => {
            return Err(RegistryError::new(
                Code::Unsupported,
                "the token endpoint takes GET or POST",
            )
            .into())
        }
    };
    // docker sends several `scope` parameters; OAuth2 clients one, space-separated.
    let mut scopes = Vec::new();
    for s in &params.scopes {
        scopes.extend(Scope::parse_list(s).map_err(|e| bad_request(&e.to_string()))?);
    }
    let service = rt.tokens.service();
    if let Some(asked) = params.service.as_deref().filter(|s| *s != service) {
        return Err(
            bad_request(&format!("this token service is {service:?}, not {asked:?}")).into(),
        );
    }
    let login = login(post, &params, credential)?;
    // docker_auth: an `account` that is not the authenticated user is refused.
    if let (Some(asked), Login::Password { user, .. }) = (&params.account, &login) {
        if asked != user {
            return Err(bad_request("user and account are not the same").into());
        }
    }
    let identity = match identify(rt, &login, client_ip).await {
        Ok(identity) => identity,
        Err(refused) => {
            return Err(match refused.answer() {
                Ok(e) => e.into(),
                // RFC 6749 5.2: a refresh token that is stale, revoked or whose account
                // expired is an `invalid_grant`.
                Err(e) if post && matches!(login, Login::Refresh(_)) => {
                    OAuthError::new("invalid_grant", e.to_string()).into()
                }
                Err(e) => RegistryError::login_refused(e.to_string(), service).into(),
            });
        }
    };

    if scopes.is_empty() {
        // `docker login` asks for no scope: there is no decision to audit, but the login
        // is worth a line (who, from where, through which backend).
        tracing::info!(
            target: "regate::audit",
            client = %client_ip,
            account = %identity.account,
            backend = %identity.backend,
            offline = params.offline,
            "login"
        );
    }
    let access = decide(rt, &identity, client_ip, &scopes)
        .await
        .map_err(unavailable)?;
    let granted: Vec<String> = access
        .iter()
        .filter(|a| !a.actions.is_empty())
        .map(|a| format!("{}:{}:{}", a.resource_type, a.name, a.actions.join(",")))
        .collect();
    let issued = rt.tokens.issue(&identity.account, access).map_err(|e| {
        tracing::error!(error = %e, "signing a token failed");
        RegistryError::new(Code::Unknown, "could not sign the token")
    })?;
    rt.metrics.tokens_issued.fetch_add(1, Relaxed);

    // Offline access: docker login asks with `offline_token=true` and then keeps only the
    // refresh token; OAuth2 clients ask with `access_type=offline`. A refresh grant gets
    // the same refresh token back (oauth.md). Not for a named credential (`rgt_…`): a
    // refresh token outlives it (it is bound to the account's password), so a revoked CI
    // token would keep working in every docker that logged in with it; without one,
    // docker keeps the credential and each login asks whether it still stands.
    let refresh_token = match &login {
        Login::Refresh(token) if params.offline => Some(token.expose().to_owned()),
        Login::Password { password, .. }
            if password
                .expose()
                .starts_with(crate::auth::credentials::PREFIX) =>
        {
            None
        }
        Login::Password { .. } if params.offline && !identity.account.is_empty() => rt
            .users
            .fingerprint(&identity.account)
            .and_then(|fpr| rt.tokens.issue_refresh(&identity.account, &fpr).ok()),
        _ => None,
    };
    let account = identity.account;
    Ok((
        account,
        json_response(
            StatusCode::OK,
            &TokenResponse {
                token: &issued.token,
                access_token: &issued.token,
                expires_in: issued.expires_in,
                issued_at: rfc3339(issued.issued_at),
                refresh_token: refresh_token.as_deref(),
                scope: post.then(|| granted.join(" ")),
            },
        ),
    ))
}

/// Which grant a request makes. GET: Basic credentials or none (an empty user name with
/// a refresh token as password is containerd's fallback for identity tokens). POST
/// (OAuth2): `grant_type` says.
fn login(post: bool, params: &Params, credential: Credential) -> Result<Login, OAuthError> {
    let basic = match credential {
        Credential::Basic { user, password } => Some((user, password)),
        _ => None,
    };
    if !post {
        return Ok(match basic {
            Some((user, password)) if user.is_empty() && password.expose().contains('.') => {
                Login::Refresh(password)
            }
            Some((user, password)) => Login::Password { user, password },
            None => Login::Anonymous,
        });
    }
    match params.grant_type.as_deref() {
        Some("password") => {
            let (user, password) = match (&params.username, basic) {
                (Some(user), _) => (
                    user.clone(),
                    params.password.clone().unwrap_or_else(|| Secret::new("")),
                ),
                (None, Some(b)) => b,
                (None, None) => {
                    return Err(OAuthError::new(
                        "invalid_request",
                        "username and password are required",
                    ))
                }
            };
            Ok(Login::Password { user, password })
        }
        Some("refresh_token") => match &params.refresh_token {
            Some(token) => Ok(Login::Refresh(token.clone())),
            None => Err(OAuthError::new(
                "invalid_request",
                "refresh_token is required",
            )),
        },
        // Clients that get a 400 here (containerd) fall back to GET; never 405.
        _ => Err(OAuthError::new(
            "unsupported_grant_type",
            "grant_type must be password or refresh_token",
        )),
    }
}

async fn read_form(req: Request<Incoming>) -> Result<String, RegistryError> {
    let body = Limited::new(req.into_body(), FORM_LIMIT)
        .collect()
        .await
        .map_err(|_| bad_request("the form body is unreadable or larger than 64 KiB"))?;
    let bytes: Bytes = body.to_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| bad_request("the form body is not UTF-8"))
}

fn rfc3339(t: SystemTime) -> String {
    let t: time::OffsetDateTime = t.into();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_form_use_the_strict_decoder() {
        // Go (docker_auth, registry:2) skips a pair it cannot decode; a lenient decoder
        // kept `%+1` as text and so read a service nobody sent.
        let p = Params::parse("service=Docker+registry%+1&scope=repository%3Aa%3Apull");
        assert_eq!(p.service, None);
        assert_eq!(p.scopes, ["repository:a:pull"]);
        let p = Params::parse("account=al%zzice&username=bob&password=p%2Bw+d");
        assert_eq!(p.account, None);
        assert_eq!(p.username.as_deref(), Some("bob"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("p+w d"));
    }
}
