//! One request, start to finish: classify, authorize, then answer or forward.
//!
//! ```text
//! route::classify
//!   Token endpoint : auth::endpoint (users -> acl -> token::issue)
//!   /v2 redirect   : 301 /v2/
//!   Registry route : token::verify (cached) -> access covers route? -> proxy::forward
//!                    missing/invalid -> 401 challenge; insufficient -> 401 insufficient_scope
//!   every error    -> error::RegistryError::into_response
//! ```

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};

use crate::auth::authorize::{decide, identify, Login, Refused};
use crate::auth::challenge::{parse_authorization, Challenge, ChallengeError, Credential};
use crate::auth::endpoint;
use crate::auth::scope::Scope;
use crate::auth::token::Verified;
use crate::body::{self, Body};
use crate::error::{self, json_response, Code, RegistryError};
use crate::proxy::{self, Origin, Upstream};
use crate::route::{self, Classified, RepoKind, Route};
use crate::Runtime;

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

/// The connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub https: bool,
    /// The request came with both `Content-Length` and `Transfer-Encoding`
    /// (server/framing.rs): refused, and the connection closed after the answer.
    pub conflicting_framing: bool,
}

pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    upstream: Upstream,
    /// `/metrics` has a listener of its own (`server.metrics_addr`, fixed at start like
    /// the other listeners): the main one does not serve it to anyone.
    metrics_elsewhere: bool,
}

impl Gateway {
    /// Fails only when an https registry's roots cannot be read.
    pub fn new(runtime: Runtime) -> Result<Gateway, crate::tls::CaError> {
        let config = &runtime.config;
        let upstream = Upstream::new(&config.upstream)?;
        let metrics_elsewhere = config.server.metrics_listen.is_some();
        Ok(Gateway {
            runtime: ArcSwap::from_pointee(runtime),
            upstream,
            metrics_elsewhere,
        })
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Replaces users, rules and keys at once; requests already running keep the old set.
    pub fn swap(&self, runtime: Runtime) {
        self.runtime.store(Arc::new(runtime));
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Conn,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let method = req.method().clone();
        let version = req.version();
        let rt = self.runtime();
        let client_ip = client_ip(&rt, &req, conn.peer.ip());
        let classified = route::classify(req.uri().path(), req.uri().query());
        let kind = classified.route.kind();
        let path_for_log = req.uri().path().to_owned();
        let mut account = None;
        let mut resp = match self
            .dispatch(&rt, req, classified, conn, client_ip, &mut account)
            .await
        {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        };
        let headers = resp.headers_mut();
        if !headers.contains_key(&API_VERSION) {
            headers.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
        }
        if rt.config.server.hsts && conn.https {
            headers.insert(
                hyper::header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=63072000; includeSubDomains"),
            );
        }
        let status = resp.status().as_u16();
        rt.metrics.request(kind, status);
        // Logged when the body is done, so bytes and duration are the transfer's own.
        let metrics = rt.metrics.clone();
        Ok(resp.map(|body| {
            body.on_end(move |bytes| {
                metrics.bytes_to_clients.fetch_add(bytes, Relaxed);
                tracing::info!(
                    target: "regate::access",
                    client = %client_ip,
                    account = account.as_deref().unwrap_or("-"),
                    method = %method,
                    path = %path_for_log,
                    version = ?version,
                    route = kind,
                    status,
                    bytes,
                    millis = started.elapsed().as_millis() as u64,
                    "request"
                );
            })
        }))
    }

    async fn dispatch(
        &self,
        rt: &Runtime,
        req: Request<Incoming>,
        classified: Classified,
        conn: Conn,
        client_ip: IpAddr,
        account: &mut Option<String>,
    ) -> Result<Response<Body>, RegistryError> {
        if conn.conflicting_framing {
            // RFC 9112 6.3: a request smuggling attempt, or a broken client; either way
            // nothing in it is trusted, not even where its body ends. hyper closes the
            // connection after this answer (it turns keep-alive off for such a request).
            return Err(RegistryError::new(
                Code::Unsupported,
                "Content-Length and Transfer-Encoding together",
            )
            .with_status(StatusCode::BAD_REQUEST)
            .closing());
        }
        match &classified.route {
            Route::Token => return Ok(endpoint::handle(rt, req, client_ip, account).await),
            Route::Redirect(location) => return Ok(redirect(location)),
            Route::NotFound => return Ok(error::not_found()),
            Route::BadRequest => {
                return Err(
                    RegistryError::new(Code::Unsupported, "malformed request path")
                        .with_status(StatusCode::BAD_REQUEST),
                )
            }
            Route::InvalidName(_) => {
                return Err(RegistryError::new(
                    Code::NameInvalid,
                    "invalid repository name",
                ))
            }
            Route::Root | Route::Healthz => {
                return Ok(json_response(StatusCode::OK, &serde_json::json!({})))
            }
            Route::Readyz => return Ok(self.readiness().await),
            Route::Metrics if !self.metrics_elsewhere && metrics_for(conn.peer.ip(), &req) => {
                return Ok(metrics_response(rt))
            }
            // Not for this caller: as if there were no such page.
            Route::Metrics => return Ok(error::not_found()),
            Route::Jwks => return Ok(json_response(StatusCode::OK, &rt.tokens.jwks())),
            Route::Base | Route::Catalog | Route::Repository { .. } => {}
        }
        let method = req.method().clone();
        refuse_form_bodies(&req)?;
        let query = req.uri().query().map(str::to_owned);
        let from = route::query_param(query.as_deref(), "from").map_err(|e| {
            RegistryError::new(Code::Unsupported, e.to_string())
                .with_status(StatusCode::BAD_REQUEST)
        })?;
        let from = from.filter(|f| !f.is_empty());
        if let Some(f) = &from {
            if !route::valid_name(f) {
                return Err(RegistryError::new(
                    Code::NameInvalid,
                    "invalid repository name in `from`",
                ));
            }
        }
        let required = classified
            .route
            .required_access(&method, from.as_deref())
            .unwrap_or_default();
        let mut forward_query = query;

        let challenge = |error: Option<ChallengeError>| Challenge {
            realm: realm(rt, &req, conn.https),
            service: rt.tokens.service().to_owned(),
            scopes: required.clone(),
            error,
        };
        let credential = parse_authorization(req.headers().get(hyper::header::AUTHORIZATION));
        let (grant, upstream_bearer) = match credential {
            Credential::Bearer(token) => match rt.tokens.verify(token.expose()) {
                Ok(verified) => (verified, None),
                Err(e) => {
                    tracing::info!(client = %client_ip, error = %e, "token refused");
                    let challenge = challenge(Some(ChallengeError::InvalidToken));
                    return Err(RegistryError::unauthorized(challenge));
                }
            },
            Credential::Basic { user, password } if rt.config.server.basic_auth => {
                basic_grant(rt, user, password, client_ip, &required)
                    .await
                    .map_err(|e| {
                        e.unwrap_or_else(|| RegistryError::unauthorized(challenge(None)))
                    })?
            }
            Credential::None | Credential::Basic { .. } => {
                return Err(RegistryError::unauthorized(challenge(None)));
            }
        };
        *account = Some(grant.subject.clone());
        let missing = grant.missing(&required);
        if !missing.is_empty() {
            // A cross-repository mount the caller may not read from is a plain upload (OCI
            // distribution spec: "SHOULD return a 202"), instead of registry:2's 401 for
            // the whole request.
            let upload_start = matches!(
                classified.route,
                Route::Repository {
                    kind: RepoKind::UploadStart,
                    ..
                }
            );
            let only_source = missing.len() == 1
                && from.as_ref().is_some_and(|f| missing[0].name == *f)
                && upload_start
                && method == Method::POST;
            if only_source {
                forward_query = forward_query.map(|q| without_mount(&q));
            } else {
                tracing::info!(
                    client = %client_ip,
                    account = %grant.subject,
                    missing = %missing.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" "),
                    "insufficient scope"
                );
                if upstream_bearer.is_some() {
                    // Basic credentials: no token dance to retry, so say it plainly.
                    return Err(RegistryError::new(
                        Code::Denied,
                        "requested access to the resource is denied",
                    ));
                }
                let challenge = challenge(Some(ChallengeError::InsufficientScope));
                return Err(RegistryError::unauthorized(challenge));
            }
        }
        let mut req = req;
        if let Some(bearer) = upstream_bearer {
            // A registry that checks tokens itself needs one, not the password.
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {bearer}")) {
                req.headers_mut().insert(hyper::header::AUTHORIZATION, v);
            }
        }

        let path_and_query = match forward_query.as_deref() {
            Some(q) if !q.is_empty() => format!("{}?{q}", classified.path),
            _ => classified.path.clone(),
        };
        let origin = Origin {
            client_ip,
            https: conn.https,
        };
        let write = audited_write(&method, &classified.route);
        let resp = self
            .upstream
            .forward(req, &path_and_query, &origin, &rt.metrics)
            .await?;
        if let Some((action, repository, reference)) = write {
            let digest = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(reference);
            tracing::info!(
                target: "regate::audit",
                event = "write",
                client = %client_ip,
                account = account.as_deref().unwrap_or(""),
                action,
                repository,
                reference,
                digest,
                status = resp.status().as_u16(),
                "write forwarded"
            );
        }
        Ok(resp)
    }

    /// 200 when the registry answers `GET /v2/` (any status below 500, 401 included)
    /// within 2 s, through the same client as every request (so a refused certificate of
    /// an https registry shows here too); 503 otherwise. Anyone may ask, so the answer
    /// names no cause (the cause holds addresses, certificate names, the registry's own
    /// words): the log has it.
    async fn readiness(&self) -> Response<Body> {
        match self
            .upstream
            .answers(std::time::Duration::from_secs(2))
            .await
        {
            Ok(_) => json_response(StatusCode::OK, &serde_json::json!({"upstream": "up"})),
            Err(reason) => {
                tracing::warn!(
                    upstream = %self.upstream.base(),
                    %reason,
                    "/readyz: the registry is not ready"
                );
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"upstream": "down", "reason": NOT_READY}),
                )
            }
        }
    }
}

/// HTTP Basic credentials on a registry route (`curl -u`): authenticated and decided per
/// request through the same ACL, then a short token minted for the registry. `Err(None)`
/// means "answer with the plain challenge".
async fn basic_grant(
    rt: &Runtime,
    user: String,
    password: crate::auth::Secret,
    client_ip: IpAddr,
    required: &[Scope],
) -> Result<(Arc<Verified>, Option<String>), Option<RegistryError>> {
    let login = Login::Password { user, password };
    let identity = match identify(rt, &login, client_ip).await {
        Ok(identity) => identity,
        Err(Refused::Throttled(wait)) => {
            return Err(Some(
                RegistryError::new(
                    Code::TooManyRequests,
                    "too many failed logins; try again later",
                )
                .with_retry_after(wait),
            ))
        }
        Err(Refused::Authn(e @ crate::auth::identity::AuthnError::Busy)) => {
            return Err(Some(
                RegistryError::new(Code::TooManyRequests, e.to_string())
                    .with_retry_after(std::time::Duration::ZERO),
            ))
        }
        Err(Refused::Authn(e @ crate::auth::identity::AuthnError::DirectoryUnavailable)) => {
            return Err(Some(RegistryError::new(Code::Unavailable, e.to_string())))
        }
        Err(Refused::Authn(_)) => return Err(None),
    };
    let access = decide(rt, &identity, client_ip, required);
    let token = rt
        .tokens
        .issue(&identity.account, access.clone())
        .map_err(|_| Some(RegistryError::new(Code::Unknown, "could not sign a token")))?;
    Ok((
        Arc::new(Verified::new(identity.account, access)),
        Some(token.token),
    ))
}

/// Registry writes worth an audit line: a manifest put (a tag or digest published) and
/// any delete.
fn audited_write<'a>(
    method: &Method,
    route: &'a Route,
) -> Option<(&'static str, &'a str, &'a str)> {
    let Route::Repository { name, kind } = route else {
        return None;
    };
    match (method, kind) {
        (&Method::PUT, RepoKind::Manifest(reference)) => Some(("push_manifest", name, reference)),
        (&Method::DELETE, RepoKind::Manifest(reference)) => {
            Some(("delete_manifest", name, reference))
        }
        (&Method::DELETE, RepoKind::Blob(digest)) => Some(("delete_blob", name, digest)),
        _ => None,
    }
}

/// `/readyz`'s one reason, whatever the cause (the log has the cause).
pub const NOT_READY: &str = "the registry does not answer; the cause is in regate's log";

/// Whether `/metrics` on the main listener answers this caller, when no
/// `server.metrics_addr` is set: a loopback peer (a local Prometheus or agent, `curl
/// localhost`), and not a request a proxy on the same host passed on (any forwarding
/// header), which would be the world's. Anyone else gets the 404 of a page that is not
/// there. Counters of logins, failures and traffic help an attacker time a guess.
pub fn metrics_for<B>(peer: IpAddr, req: &Request<B>) -> bool {
    let loopback = match peer {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    let forwarded = [
        "forwarded",
        "x-forwarded-for",
        "x-real-ip",
        "x-forwarded-host",
    ]
    .iter()
    .any(|h| req.headers().contains_key(*h));
    loopback && !forwarded
}

/// The only answer of the `server.metrics_addr` listener: `/metrics`, else 404.
pub async fn metrics_only(
    gateway: Arc<Gateway>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let resp = match req.uri().path() {
        "/metrics" => metrics_response(&gateway.runtime()),
        _ => error::not_found(),
    };
    Ok(resp)
}

fn metrics_response(rt: &Runtime) -> Response<Body> {
    let mut resp = Response::new(body::full(rt.metrics.render()));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// The caller's address: the connection's, or docker_auth's `real_ip_header` when set and
/// the connection comes from one of `server.trusted_proxies` (nginx's `set_real_ip_from`):
/// from anyone else the header is the client's own claim, and ignored.
fn client_ip<B>(rt: &Runtime, req: &Request<B>, peer: IpAddr) -> IpAddr {
    let Some(real) = rt.config.server.real_ip.as_ref().filter(|r| r.trusts(peer)) else {
        return peer;
    };
    let Some(value) = req
        .headers()
        .get(real.header.as_str())
        .and_then(|v| v.to_str().ok())
    else {
        return peer;
    };
    let parts: Vec<&str> = value.split(',').map(str::trim).collect();
    let index = if real.position < 0 {
        parts.len() as i64 + real.position
    } else {
        real.position
    };
    usize::try_from(index)
        .ok()
        .and_then(|i| parts.get(i))
        .and_then(|p| p.parse().ok())
        .unwrap_or(peer)
}

/// `token.realm`, or this gateway's own `/auth` at the host the client used.
fn realm<B>(rt: &Runtime, req: &Request<B>, https: bool) -> String {
    if let Some(realm) = &rt.config.token.realm {
        return realm.clone();
    }
    let scheme = if https { "https" } else { "http" };
    let host = proxy::request_host(req)
        .and_then(|h| h.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{scheme}://{host}/auth")
}

/// The plain-HTTP listener's only answer: the same URL on HTTPS (308 keeps the method).
pub async fn redirect_to_https(
    req: Request<Incoming>,
    https_port: u16,
) -> Result<Response<Body>, Infallible> {
    let host = proxy::request_host(&req)
        .and_then(|h| h.to_str().ok().map(str::to_owned))
        .unwrap_or_default();
    // Drop the port the client used for HTTP: `[::1]:80` -> `[::1]`, `host:80` -> `host`.
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host.as_str(),
    };
    let authority = if https_port == 443 {
        name.to_owned()
    } else {
        format!("{name}:{https_port}")
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut resp = redirect(&format!("https://{authority}{path}"));
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    }
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    Ok(resp)
}

fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

/// registry:2 reads `from` with Go's `FormValue`, which also parses url-encoded and
/// multipart bodies: a form body could name a mount source regate never saw. No registry
/// client sends one, so it is refused.
fn refuse_form_bodies<B>(req: &Request<B>) -> Result<(), RegistryError> {
    let Some(ct) = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "application/x-www-form-urlencoded" || media == "multipart/form-data" {
        return Err(RegistryError::new(
            Code::Unsupported,
            "form bodies are not accepted on registry routes",
        )
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    Ok(())
}

/// The query without `mount` and `from`, byte-exact otherwise.
fn without_mount(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map(|(k, _)| k).unwrap_or(pair);
            let k = route::form_decode(k);
            k.as_deref() != Some("mount") && k.as_deref() != Some("from")
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_the_main_listener_are_for_local_unforwarded_callers() {
        let plain = Request::new(());
        let mut forwarded = Request::new(());
        forwarded
            .headers_mut()
            .insert("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
        for (peer, req, allowed) in [
            ("127.0.0.1", &plain, true),
            ("127.8.9.10", &plain, true),
            ("::1", &plain, true),
            ("::ffff:127.0.0.1", &plain, true),
            ("127.0.0.1", &forwarded, false),
            ("10.0.0.1", &plain, false),
            ("192.0.2.1", &plain, false),
            ("2001:db8::1", &plain, false),
        ] {
            assert_eq!(metrics_for(peer.parse().unwrap(), req), allowed, "{peer}");
        }
    }
}
