//! One request, start to finish: classify, authorize, then answer or forward.
//!
//! ```text
//! route::classify
//!   Token endpoint : auth::endpoint (users -> acl -> token::issue)
//!   /v2 redirect   : 301 /v2/
//!   Registry route : token::verify (cached) -> access covers route?
//!                      yes -> cache::answer (GET/HEAD of a manifest or small blob)
//!                             or proxy::forward (streamed; cache::admit keeps what it may)
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
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::auth::challenge::Challenge;
use crate::auth::endpoint;
use crate::body::Body;
use crate::cache::{self, Cache};
use crate::error::{self, json_response, Code, RegistryError};
use crate::proxy::{Origin, Upstream};
use crate::route::{self, Classified, RepoKind, Route};
use crate::runtime::Runtime;

mod access;
mod pages;

use access::{covered, grant, Asked, Grant};
use pages::{client_ip, metrics_for, metrics_response, realm, redirect};
pub use pages::{metrics_only, redirect_to_https, NOT_READY};

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
    /// The web pages' registry reader and caches (the same client as `upstream`).
    pages: crate::web::Pages,
    /// Manifests and small blobs, answered in the forward step (after the grant): it
    /// outlives reloads, as the upstream does; shared with the other replicas' through
    /// the shared state, when there is one.
    cache: Arc<Cache>,
    /// `/metrics` has a listener of its own (`server.metrics_addr`, fixed at start like
    /// the other listeners): the main one does not serve it to anyone.
    metrics_elsewhere: bool,
}

impl Gateway {
    /// Fails only when an https registry's roots cannot be read.
    pub fn new(runtime: Runtime) -> Result<Gateway, crate::tls::CaError> {
        let config = &runtime.config;
        let upstream = Upstream::new(&config.upstream, &config.timeouts)?;
        let cache = cache::shared(
            &config.cache,
            runtime.metrics.clone(),
            runtime.state.clone(),
        );
        let metrics_elsewhere = config.server.metrics_listen.is_some();
        let pages = crate::web::Pages::new(upstream.clone());
        Ok(Gateway {
            runtime: ArcSwap::from_pointee(runtime),
            upstream,
            pages,
            cache,
            metrics_elsewhere,
        })
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
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
        let classified = route::classify_in(
            req.uri().path(),
            req.uri().query(),
            &rt.config.server.path_prefix,
        );
        let kind = classified.route.kind();
        let path_for_log = req.uri().path().to_owned();
        let received = crate::body::Received::default();
        let mut req = req;
        req.extensions_mut().insert(received.clone());
        let Served {
            account,
            response: mut resp,
        } = self.dispatch(&rt, req, classified, conn, client_ip).await;
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
        let cache = resp.extensions().get::<cache::Hit>().map(|_| "hit");
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
                    cache,
                    // Both ways: a push's bytes come in, a pull's go out.
                    bytes_in = received.get(),
                    bytes_out = bytes,
                    millis = started.elapsed().as_millis() as u64,
                    "request"
                );
            })
        }))
    }

    /// Answers a request: regate's own pages, the token endpoint, or a registry route.
    async fn dispatch(
        &self,
        rt: &Runtime,
        req: Request<Incoming>,
        classified: Classified,
        conn: Conn,
        client_ip: IpAddr,
    ) -> Served {
        if conn.conflicting_framing {
            // RFC 9112 6.3: a request smuggling attempt, or a broken client; either way
            // nothing in it is trusted, not even where its body ends. hyper closes the
            // connection after this answer (it turns keep-alive off for such a request).
            let e = RegistryError::new(
                Code::Unsupported,
                "Content-Length and Transfer-Encoding together",
            )
            .with_status(StatusCode::BAD_REQUEST)
            .closing();
            return Served::nobody(e.into_response());
        }
        let response = match &classified.route {
            Route::Token => {
                let answered = endpoint::handle(rt, req, client_ip).await;
                return Served {
                    account: answered.account,
                    response: answered.response,
                };
            }
            Route::Base | Route::Catalog | Route::Repository { .. } => {
                return self.registry(rt, req, classified, conn, client_ip).await
            }
            Route::Redirect(location) => redirect(location),
            Route::NotFound => error::not_found(),
            Route::BadRequest => RegistryError::new(Code::Unsupported, "malformed request path")
                .with_status(StatusCode::BAD_REQUEST)
                .into_response(),
            Route::InvalidName(_) => {
                RegistryError::new(Code::NameInvalid, "invalid repository name").into_response()
            }
            // A browser at `/` gets the pages (without a prefix, they start there).
            Route::Root
                if rt.config.ui.enabled
                    && rt.config.server.path_prefix.is_empty()
                    && crate::web::wants_html(&req) =>
            {
                crate::web::handle(rt, &self.pages, req, "/", client_ip, conn.https).await
            }
            Route::Page(path) => {
                let path = path.clone();
                crate::web::handle(rt, &self.pages, req, &path, client_ip, conn.https).await
            }
            Route::Api(path) => {
                let challenge = Challenge {
                    realm: realm(rt, &req, conn.https),
                    service: rt.tokens.service().to_owned(),
                    scopes: Vec::new(),
                    error: None,
                };
                let path = path.clone();
                let (account, response) =
                    crate::api::handle(rt, req, &path, client_ip, challenge).await;
                return Served { account, response };
            }
            Route::Root | Route::Healthz => json_response(StatusCode::OK, &serde_json::json!({})),
            Route::Readyz => self.readiness().await,
            Route::Metrics if !self.metrics_elsewhere && metrics_for(conn.peer.ip(), &req) => {
                metrics_response(rt)
            }
            // Not for this caller: as if there were no such page.
            Route::Metrics => error::not_found(),
            Route::Jwks => json_response(StatusCode::OK, &rt.tokens.jwks()),
        };
        Served::nobody(response)
    }

    /// A registry route: what it asks, who asks (a token, or Basic credentials), whether
    /// that covers it; then forward it, or say why not.
    async fn registry(
        &self,
        rt: &Runtime,
        req: Request<Incoming>,
        classified: Classified,
        conn: Conn,
        client_ip: IpAddr,
    ) -> Served {
        let asked = match Asked::of(&req, &classified) {
            Ok(asked) => asked,
            Err(e) => return Served::nobody(e.into_response()),
        };
        let challenge = Challenge {
            realm: realm(rt, &req, conn.https),
            service: rt.tokens.service().to_owned(),
            scopes: asked.required.clone(),
            error: None,
        };
        let grant = match grant(rt, &req, &asked, client_ip, &challenge).await {
            Ok(grant) => grant,
            Err(e) => return Served::nobody(e.into_response()),
        };
        let account = grant.verified.subject.clone();
        let forwarded = match covered(&grant, &asked, &classified.route, client_ip, &challenge) {
            Ok(query) => {
                let origin = Origin {
                    client_ip,
                    https: conn.https,
                };
                self.forward(rt, req, grant, &classified, query, &origin, &account)
                    .await
            }
            Err(e) => Err(e),
        };
        Served {
            response: forwarded.unwrap_or_else(RegistryError::into_response),
            account: Some(account),
        }
    }

    /// Answers an authorized request from the cache, or sends it to the registry; audits a
    /// write, and tells the cache what it changed.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        rt: &Runtime,
        mut req: Request<Incoming>,
        grant: Grant,
        classified: &Classified,
        query: Option<String>,
        origin: &Origin,
        account: &str,
    ) -> Result<Response<Body>, RegistryError> {
        // Only here, after the grant covered the request: the cache never decides who may
        // read what.
        let lookup = self
            .cache
            .lookup(req.method(), &classified.route, req.headers());
        if let Some(resp) = lookup.as_ref().and_then(|l| self.cache.answer(l)) {
            return Ok(resp);
        }
        if lookup.as_ref().is_some_and(Cache::fetches_body) {
            *req.method_mut() = hyper::Method::GET;
        }
        // Dropped (the change made) once the registry has answered, before the client
        // hears the answer: a pull after a push never sees the old tag.
        let _written = self.cache.write(req.method(), &classified.route);
        if let Some(bearer) = grant.upstream_bearer {
            // A registry that checks tokens itself needs one, not the password.
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {bearer}")) {
                req.headers_mut().insert(hyper::header::AUTHORIZATION, v);
            }
        }
        let path_and_query = match query.as_deref() {
            Some(q) if !q.is_empty() => format!("{}?{q}", classified.path),
            _ => classified.path.clone(),
        };
        let write = audited_write(req.method(), &classified.route);
        let resp = self
            .upstream
            .forward(req, &path_and_query, origin, &rt.metrics)
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
                client = %origin.client_ip,
                account,
                action,
                repository,
                reference,
                digest,
                status = resp.status().as_u16(),
                "write forwarded"
            );
        }
        Ok(match lookup {
            Some(lookup) => self.cache.admit(lookup, resp).await,
            None => resp,
        })
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
                    upstream = ?self.upstream.bases(),
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

/// What dispatch made of a request: the answer, and who asked (for the access log).
struct Served {
    account: Option<String>,
    response: Response<Body>,
}

impl Served {
    /// An answer given before anyone was authenticated.
    fn nobody(response: Response<Body>) -> Served {
        Served {
            account: None,
            response,
        }
    }
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
