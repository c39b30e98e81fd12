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
use hyper::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::acl;
use crate::body::Body;
use crate::error::{json_response, Code, RegistryError};
use crate::Runtime;

use super::challenge::{parse_authorization, Credential};
use super::scope::Scope;
use super::token::Access;
use super::users::{AuthnError, Identity};
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
                _ => {}
            }
        }
        p
    }
}

fn form_decode(s: &str) -> Option<String> {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

fn bad_request(message: &str) -> RegistryError {
    RegistryError::new(Code::Unsupported, message)
        .with_status(StatusCode::BAD_REQUEST)
        .with_details(message)
}

/// Answers a token request; `account` is set to whoever was authenticated.
pub async fn handle(
    rt: &Runtime,
    req: Request<Incoming>,
    client_ip: IpAddr,
    account: &mut Option<String>,
) -> Response<Body> {
    match serve(rt, req, client_ip, account).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn serve(
    rt: &Runtime,
    req: Request<Incoming>,
    client_ip: IpAddr,
    account: &mut Option<String>,
) -> Result<Response<Body>, RegistryError> {
    let credential = parse_authorization(req.headers().get(hyper::header::AUTHORIZATION));
    let params = match *req.method() {
        Method::GET | Method::HEAD => Params::parse(req.uri().query().unwrap_or("")),
        Method::POST => {
            let form = read_form(req).await?;
            let params = Params::parse(&form);
            // OAuth2 (oauth.md): only the password grant is served; clients that get a 400
            // here (containerd) fall back to GET with Basic credentials.
            if params.grant_type.as_deref() != Some("password") {
                return Ok(oauth_error(
                    "unsupported_grant_type",
                    "only grant_type=password is supported",
                ));
            }
            params
        }
        _ => {
            return Err(RegistryError::new(
                Code::Unsupported,
                "the token endpoint takes GET or POST",
            ))
        }
    };
    // docker sends several `scope` parameters; OAuth2 clients one, space-separated.
    let mut scopes = Vec::new();
    for s in &params.scopes {
        scopes.extend(Scope::parse_list(s).map_err(|e| bad_request(&e.to_string()))?);
    }
    let service = rt.tokens.service();
    if let Some(asked) = params.service.as_deref().filter(|s| *s != service) {
        return Err(bad_request(&format!(
            "this token service is {service:?}, not {asked:?}"
        )));
    }

    let (name, password) = match (&credential, &params.username) {
        (Credential::Basic { user, password }, _) => (Some(user.clone()), password.clone()),
        (_, Some(user)) => (
            Some(user.clone()),
            params.password.clone().unwrap_or_else(|| Secret::new("")),
        ),
        _ => (None, Secret::new("")),
    };
    // docker_auth: an `account` that is not the authenticated user is refused.
    if let (Some(account), Some(user)) = (&params.account, &name) {
        if account != user {
            return Err(bad_request("user and account are not the same"));
        }
    }
    if let Some(user) = name.as_deref().filter(|u| !u.is_empty()) {
        if let Some(wait) = rt.throttle.check(user, client_ip) {
            rt.metrics.throttled.fetch_add(1, Relaxed);
            tracing::info!(
                target: "regate::audit",
                client = %client_ip,
                account = user,
                outcome = "throttled",
                retry_after_secs = wait.as_secs() + 1,
                "token refused"
            );
            return Ok(throttled(wait));
        }
    }
    let identity = match &name {
        Some(user) => rt.users.authenticate(user, &password).await,
        None => rt.users.anonymous(),
    };
    let identity = match identity {
        Ok(identity) => {
            rt.throttle.succeeded(&identity.account);
            identity
        }
        Err(e) => {
            rt.metrics.auth_failures.fetch_add(1, Relaxed);
            if let Some(user) = name.as_deref().filter(|u| !u.is_empty()) {
                rt.throttle.failed(user, client_ip);
            }
            tracing::info!(
                target: "regate::audit",
                client = %client_ip,
                account = name.as_deref().unwrap_or(""),
                outcome = "authentication_failed",
                reason = %e,
                "token refused"
            );
            return Ok(authn_failed(e, service));
        }
    };

    *account = Some(identity.account.clone());
    let access = decide(rt, &identity, client_ip, &scopes);
    let issued = rt.tokens.issue(&identity.account, access).map_err(|e| {
        tracing::error!(error = %e, "signing a token failed");
        RegistryError::new(Code::Unknown, "could not sign the token")
    })?;
    rt.metrics.tokens_issued.fetch_add(1, Relaxed);
    let issued_at = rfc3339(issued.issued_at);
    Ok(json_response(
        StatusCode::OK,
        &TokenResponse {
            token: &issued.token,
            access_token: &issued.token,
            expires_in: issued.expires_in,
            issued_at,
        },
    ))
}

/// One ACL decision per requested scope; every scope is listed in the token, with no
/// actions where denied (docker_auth does the same).
fn decide(rt: &Runtime, identity: &Identity, client_ip: IpAddr, scopes: &[Scope]) -> Vec<Access> {
    let service = rt.tokens.service();
    scopes
        .iter()
        .map(|scope| {
            // A request for `*` on a repository (skopeo delete) is a request for
            // everything: ask the ACL for each action too, so a rule listing pull, push
            // and delete grants them. `registry:catalog:*` stays literal: registry:2
            // wants the `*` itself there.
            let mut requested = scope.actions.clone();
            if scope.resource_type == "repository" && requested.iter().any(|a| a == "*") {
                for a in ["pull", "push", "delete"] {
                    if !requested.iter().any(|r| r == a) {
                        requested.push(a.to_owned());
                    }
                }
            }
            let request = acl::Request {
                account: &identity.account,
                labels: &identity.labels,
                ip: Some(client_ip),
                service,
                resource_type: &scope.resource_type,
                name: &scope.name,
                actions: &requested,
            };
            let explanation = rt.acl.explain(&request);
            let decision = explanation.decision;
            let rule = decision
                .rule
                .map(|i| {
                    format!(
                        "acl[{i}]{}",
                        rt.acl
                            .comment(i)
                            .map(|c| format!(" ({c})"))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "no rule matched".to_owned());
            tracing::info!(
                target: "regate::audit",
                client = %client_ip,
                account = %identity.account,
                scope = %scope,
                granted = %decision.actions.join(","),
                rule = %rule,
                "token decision"
            );
            let counter = if decision.actions.is_empty() {
                &rt.metrics.scopes_denied
            } else {
                &rt.metrics.scopes_granted
            };
            counter.fetch_add(1, Relaxed);
            Access {
                resource_type: scope.resource_type.clone(),
                name: scope.name.clone(),
                actions: decision.actions,
            }
        })
        .collect()
}

async fn read_form(req: Request<Incoming>) -> Result<String, RegistryError> {
    let body = Limited::new(req.into_body(), FORM_LIMIT)
        .collect()
        .await
        .map_err(|_| bad_request("the form body is unreadable or larger than 64 KiB"))?;
    let bytes: Bytes = body.to_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| bad_request("the form body is not UTF-8"))
}

fn throttled(wait: std::time::Duration) -> Response<Body> {
    let message = "too many failed logins; try again later";
    let mut resp = RegistryError::new(Code::TooManyRequests, message)
        .with_details(message)
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&(wait.as_secs() + 1).to_string()) {
        resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    resp
}

fn authn_failed(e: AuthnError, service: &str) -> Response<Body> {
    let mut resp = RegistryError::new(Code::Unauthorized, e.to_string())
        .with_details(e.to_string())
        .into_response();
    let challenge = format!("Basic realm={service:?}");
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    resp
}

/// RFC 6749 error body, for the OAuth2 POST form.
fn oauth_error(code: &str, description: &str) -> Response<Body> {
    let mut resp = json_response(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({"error": code, "error_description": description}),
    );
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn rfc3339(t: SystemTime) -> String {
    let t: time::OffsetDateTime = t.into();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
