//! The admin API: `xorm_auth`'s accounts and `acl_xorm`'s rules as JSON, under
//! `{path_prefix}/api/v1/`, for the web pages and scripts. Callers authenticate as on
//! registry routes (a Bearer token from `/auth`, or Basic credentials where
//! `server.basic_auth` allows them), and the ACL decides, as for any scope:
//!
//! | request | scope |
//! |---|---|
//! | `GET /api/v1/users` | `regate:users:read` |
//! | `POST /api/v1/users` `{"name", "password", "labels"?}` | `regate:users:write` |
//! | `PUT /api/v1/users/NAME/password` `{"password"}` | `regate:users:write` |
//! | `PUT /api/v1/users/NAME/labels` `{"labels"}` | `regate:users:write` |
//! | `DELETE /api/v1/users/NAME` | `regate:users:write` |
//! | `GET /api/v1/acl` | `regate:acl:read` |
//! | `POST /api/v1/acl` `{"rule", "before"?, "after"?}` | `regate:acl:write` |
//! | `DELETE /api/v1/acl/SEQ` | `regate:acl:write` |
//! | `POST /api/v1/acl/SEQ/move` `{"before"}` or `{"after"}` | `regate:acl:write` |
//!
//! so `match: {account: admin, type: regate}, actions: ["*"]` makes an administrator.
//! A body must be sent as `application/json`: a browser sends that cross-site only after a
//! CORS preflight regate never answers (as it does for PUT and DELETE), so another site
//! cannot drive a signed-in browser here. Errors are registry-style JSON (`{"errors": [{"code", "message"}]}`); every change
//! is in the audit log with who made it.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;

use crate::accounts::{Accounts, Actor, ManageError, RawEntryView};
use crate::acl::Labels;
use crate::auth::authorize::{decide, identify, Login};
use crate::auth::challenge::{parse_authorization, Challenge, Credential};
use crate::auth::identity::Identity;
use crate::auth::scope::Scope;
use crate::auth::Secret;
use crate::body::Body;
use crate::error::{json_response, Code, RegistryError};
use crate::runtime::Runtime;
use crate::sql::Placement;

/// The largest request body taken.
const BODY_MAX: usize = 64 * 1024;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    ListUsers,
    AddUser,
    SetPassword(String),
    SetLabels(String),
    DeleteUser(String),
    ListRules,
    AddRule,
    DeleteRule(i64),
    MoveRule(i64),
}

impl Op {
    /// The request at `path` (after `/api`), or why there is none.
    pub fn parse(method: &Method, path: &str) -> Result<Op, StatusCode> {
        let rest = path.strip_prefix("/v1/").ok_or(StatusCode::NOT_FOUND)?;
        let (collection, item) = match rest.split_once('/') {
            Some((c, i)) => (c, Some(i)),
            None => (rest, None),
        };
        let op = match (collection, item, method) {
            ("users", None | Some(""), &Method::GET) => Op::ListUsers,
            ("users", None | Some(""), &Method::POST) => Op::AddUser,
            ("users", Some(i), m) => {
                if let Some(name) = i.strip_suffix("/password") {
                    match *m {
                        Method::PUT => Op::SetPassword(name.to_owned()),
                        _ => return Err(StatusCode::METHOD_NOT_ALLOWED),
                    }
                } else if let Some(name) = i.strip_suffix("/labels") {
                    match *m {
                        Method::PUT => Op::SetLabels(name.to_owned()),
                        _ => return Err(StatusCode::METHOD_NOT_ALLOWED),
                    }
                } else {
                    match *m {
                        Method::DELETE => Op::DeleteUser(i.to_owned()),
                        _ => return Err(StatusCode::METHOD_NOT_ALLOWED),
                    }
                }
            }
            ("acl", None | Some(""), &Method::GET) => Op::ListRules,
            ("acl", None | Some(""), &Method::POST) => Op::AddRule,
            ("acl", Some(i), m) => {
                let (seq, tail) = match i.split_once('/') {
                    Some((s, t)) => (s, Some(t)),
                    None => (i, None),
                };
                let seq: i64 = seq.parse().map_err(|_| StatusCode::NOT_FOUND)?;
                match (tail, m) {
                    (None, &Method::DELETE) => Op::DeleteRule(seq),
                    (Some("move"), &Method::POST) => Op::MoveRule(seq),
                    (None | Some("move"), _) => return Err(StatusCode::METHOD_NOT_ALLOWED),
                    _ => return Err(StatusCode::NOT_FOUND),
                }
            }
            ("users" | "acl", _, _) => return Err(StatusCode::METHOD_NOT_ALLOWED),
            _ => return Err(StatusCode::NOT_FOUND),
        };
        Ok(op)
    }

    /// The scope the ACL must grant.
    pub fn scope(&self) -> Scope {
        let (name, action) = match self {
            Op::ListUsers => ("users", "read"),
            Op::AddUser | Op::SetPassword(_) | Op::SetLabels(_) | Op::DeleteUser(_) => {
                ("users", "write")
            }
            Op::ListRules => ("acl", "read"),
            Op::AddRule | Op::DeleteRule(_) | Op::MoveRule(_) => ("acl", "write"),
        };
        Scope::new("regate", name, &[action])
    }

    fn writes(&self) -> bool {
        !matches!(self, Op::ListUsers | Op::ListRules)
    }
}

/// Serves a request under `{prefix}/api` (`path` is what follows `/api`).
pub async fn handle(
    rt: &Runtime,
    req: Request<Incoming>,
    path: &str,
    client_ip: IpAddr,
    challenge: Challenge,
) -> (Option<String>, Response<Body>) {
    let op = match Op::parse(req.method(), path) {
        Ok(op) => op,
        Err(StatusCode::METHOD_NOT_ALLOWED) => {
            return (
                None,
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    Code::Unsupported,
                    "this method is not served here",
                )
                .into_response(),
            )
        }
        Err(_) => return (None, crate::error::not_found()),
    };
    let scope = op.scope();
    let challenge = Challenge {
        scopes: vec![scope.clone()],
        ..challenge
    };
    let caller = match caller(rt, &req, client_ip, &scope, &challenge).await {
        Ok(caller) => caller,
        Err(e) => return (None, e.into_response()),
    };
    // DELETE needs no body, and a browser never sends it (or PUT) cross-site without a
    // preflight; a POST it does, unless it is JSON.
    if op.writes() && req.method() != Method::DELETE && !is_json(&req) {
        return (
            Some(caller.clone()),
            error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::Unsupported,
                "send the body as application/json",
            )
            .into_response(),
        );
    }
    let body = match Limited::new(req.into_body(), BODY_MAX).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return (
                Some(caller.clone()),
                error(
                    StatusCode::BAD_REQUEST,
                    Code::Unsupported,
                    "the body could not be read (at most 64 KiB)",
                )
                .into_response(),
            )
        }
    };
    let actor = Actor {
        name: caller.clone(),
        via: "api",
        client: Some(client_ip),
    };
    (Some(caller), answer(rt, &actor, op, body).await)
}

/// For a caller already signed in (the web pages): the ACL decides as for a request that
/// came with credentials, then the request is answered.
pub async fn handle_for(
    rt: &Runtime,
    identity: &Identity,
    client_ip: IpAddr,
    method: &Method,
    path: &str,
    body: Bytes,
) -> Response<Body> {
    let op = match Op::parse(method, path) {
        Ok(op) => op,
        Err(status) => return error(status, Code::Unsupported, "no such request").into_response(),
    };
    match granted(rt, identity, client_ip, &op.scope()).await {
        Ok(true) => {}
        Ok(false) => return denied(),
        Err(e) => return e.into_response(),
    }
    let actor = Actor {
        name: identity.account.clone(),
        via: "api",
        client: Some(client_ip),
    };
    answer(rt, &actor, op, body).await
}

/// Who is asking, if the ACL grants them `scope`.
async fn caller(
    rt: &Runtime,
    req: &Request<Incoming>,
    client_ip: IpAddr,
    scope: &Scope,
    challenge: &Challenge,
) -> Result<String, RegistryError> {
    match parse_authorization(req.headers().get(hyper::header::AUTHORIZATION)) {
        Credential::Bearer(token) => {
            let verified = rt.tokens.verify(token.expose()).map_err(|_| {
                RegistryError::unauthorized(
                    challenge.with_error(crate::auth::challenge::ChallengeError::InvalidToken),
                )
            })?;
            if !verified.missing(std::slice::from_ref(scope)).is_empty() {
                return Err(RegistryError::unauthorized(challenge.with_error(
                    crate::auth::challenge::ChallengeError::InsufficientScope,
                )));
            }
            Ok(verified.subject.clone())
        }
        Credential::Basic { user, password } if rt.config.server.basic_auth => {
            let login = Login::Password { user, password };
            let identity =
                identify(rt, &login, client_ip).await.map_err(|refused| {
                    match refused.answer() {
                        Ok(e) => e,
                        Err(_) => RegistryError::unauthorized(challenge.clone()),
                    }
                })?;
            match granted(rt, &identity, client_ip, scope).await? {
                true => Ok(identity.account),
                false => Err(RegistryError::new(
                    Code::Denied,
                    "requested access to the resource is denied",
                )),
            }
        }
        Credential::None | Credential::Basic { .. } => {
            Err(RegistryError::unauthorized(challenge.clone()))
        }
    }
}

/// Whether the ACL (and the authorizers after it) grant `identity` the scope.
async fn granted(
    rt: &Runtime,
    identity: &Identity,
    client_ip: IpAddr,
    scope: &Scope,
) -> Result<bool, RegistryError> {
    let access = decide(rt, identity, client_ip, std::slice::from_ref(scope))
        .await
        .map_err(crate::auth::authorize::unavailable)?;
    Ok(access
        .first()
        .is_some_and(|a| scope.actions.iter().all(|want| a.actions.contains(want))))
}

fn is_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    password: String,
    #[serde(default)]
    labels: Labels,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Password {
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetLabels {
    labels: Labels,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRule {
    rule: RawEntryView,
    before: Option<i64>,
    after: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Move {
    before: Option<i64>,
    after: Option<i64>,
}

fn placement(before: Option<i64>, after: Option<i64>) -> Result<Placement, RegistryError> {
    crate::ops::accounts::placement(before, after)
        .map_err(|m| error(StatusCode::BAD_REQUEST, Code::Unsupported, &m))
}

fn parse<'a, T: Deserialize<'a>>(body: &'a Bytes) -> Result<T, RegistryError> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            Code::Unsupported,
            &format!("the body is not what this request takes: {e}"),
        )
    })
}

/// Carries out an authorized request.
async fn answer(rt: &Runtime, actor: &Actor, op: Op, body: Bytes) -> Response<Body> {
    match run(rt, actor, op, body).await {
        Ok((status, value)) => json_response(status, &value),
        Err(e) => e.into_response(),
    }
}

async fn run(
    rt: &Runtime,
    actor: &Actor,
    op: Op,
    body: Bytes,
) -> Result<(StatusCode, serde_json::Value), RegistryError> {
    let accounts = Accounts::of(rt);
    let done = |status: StatusCode, value: serde_json::Value| Ok((status, value));
    match op {
        Op::ListUsers => {
            let users = accounts.users().await.map_err(failed)?;
            let list: Vec<serde_json::Value> = users
                .into_iter()
                .map(|u| match u.labels {
                    Ok(labels) => serde_json::json!({"name": u.name, "labels": labels}),
                    Err(e) => serde_json::json!({"name": u.name, "labels": {}, "error": e}),
                })
                .collect();
            done(StatusCode::OK, serde_json::json!({ "users": list }))
        }
        Op::AddUser => {
            let new: NewUser = parse(&body)?;
            let password = Secret::new(new.password);
            accounts
                .add_user(actor, &new.name, &password, &new.labels)
                .await
                .map_err(failed)?;
            done(StatusCode::CREATED, serde_json::json!({"name": new.name}))
        }
        Op::SetPassword(name) => {
            let p: Password = parse(&body)?;
            accounts
                .set_password(actor, &name, &Secret::new(p.password))
                .await
                .map_err(failed)?;
            done(StatusCode::OK, serde_json::json!({"name": name}))
        }
        Op::SetLabels(name) => {
            let l: SetLabels = parse(&body)?;
            accounts
                .set_labels(actor, &name, &l.labels)
                .await
                .map_err(failed)?;
            done(
                StatusCode::OK,
                serde_json::json!({"name": name, "labels": l.labels}),
            )
        }
        Op::DeleteUser(name) => {
            accounts.delete_user(actor, &name).await.map_err(failed)?;
            done(StatusCode::OK, serde_json::json!({"name": name}))
        }
        Op::ListRules => {
            let rules = accounts.rules().await.map_err(failed)?;
            done(StatusCode::OK, serde_json::json!({ "rules": rules }))
        }
        Op::AddRule => {
            let new: NewRule = parse(&body)?;
            let at = placement(new.before, new.after)?;
            let seq = accounts
                .add_rule(actor, &new.rule.into(), at)
                .await
                .map_err(failed)?;
            done(StatusCode::CREATED, serde_json::json!({"seq": seq}))
        }
        Op::DeleteRule(seq) => {
            accounts.delete_rule(actor, seq).await.map_err(failed)?;
            done(StatusCode::OK, serde_json::json!({"seq": seq}))
        }
        Op::MoveRule(seq) => {
            let m: Move = parse(&body)?;
            let at = placement(m.before, m.after)?;
            if at == Placement::End {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    Code::Unsupported,
                    "say where: {\"before\": SEQ} or {\"after\": SEQ}",
                ));
            }
            let new = accounts.move_rule(actor, seq, at).await.map_err(failed)?;
            done(StatusCode::OK, serde_json::json!({"seq": new}))
        }
    }
}

/// A failed change as an answer; a database that failed is in the log, not the answer.
fn failed(e: ManageError) -> RegistryError {
    match e {
        ManageError::NotConfigured(m) => error(StatusCode::NOT_FOUND, Code::Unsupported, m),
        ManageError::Invalid(m) => error(StatusCode::BAD_REQUEST, Code::Unsupported, &m),
        ManageError::NotFound(m) => error(StatusCode::NOT_FOUND, Code::NameUnknown, &m),
        ManageError::Exists(m) => error(StatusCode::CONFLICT, Code::Unsupported, &m),
        ManageError::Busy => RegistryError::new(Code::TooManyRequests, e.to_string())
            .with_retry_after(std::time::Duration::from_secs(1)),
        ManageError::Database(db) => {
            tracing::error!("admin API: {db}");
            RegistryError::new(
                Code::Unavailable,
                "the database could not be reached; try again later",
            )
        }
    }
}

fn denied() -> Response<Body> {
    RegistryError::new(Code::Denied, "requested access to the resource is denied").into_response()
}

fn error(status: StatusCode, code: Code, message: &str) -> RegistryError {
    RegistryError::new(code, message).with_status(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_their_scopes() {
        let p = |m: Method, path: &str| Op::parse(&m, path);
        assert_eq!(p(Method::GET, "/v1/users"), Ok(Op::ListUsers));
        assert_eq!(p(Method::POST, "/v1/users"), Ok(Op::AddUser));
        assert_eq!(
            p(Method::PUT, "/v1/users/a@b.c/password"),
            Ok(Op::SetPassword("a@b.c".into()))
        );
        assert_eq!(
            p(Method::PUT, "/v1/users/alice/labels"),
            Ok(Op::SetLabels("alice".into()))
        );
        assert_eq!(
            p(Method::DELETE, "/v1/users/alice"),
            Ok(Op::DeleteUser("alice".into()))
        );
        assert_eq!(p(Method::DELETE, "/v1/acl/20"), Ok(Op::DeleteRule(20)));
        assert_eq!(p(Method::POST, "/v1/acl/20/move"), Ok(Op::MoveRule(20)));
        assert_eq!(p(Method::GET, "/v1/acl/x"), Err(StatusCode::NOT_FOUND));
        assert_eq!(
            p(Method::PATCH, "/v1/users"),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(p(Method::GET, "/v2/users"), Err(StatusCode::NOT_FOUND));
        assert_eq!(Op::AddRule.scope().to_string(), "regate:acl:write");
        assert_eq!(Op::ListUsers.scope().to_string(), "regate:users:read");
    }
}
