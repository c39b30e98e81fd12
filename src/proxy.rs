//! Forwards an authorized request to registry:2 and streams the answer back. Bodies pass
//! through as they arrive, both ways: a blob of any size costs a few buffers of memory.

mod backends;
mod client_body;

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Request, Response, StatusCode, Uri};

use backends::Backends;
use client_body::{client_fault, ClientBody};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{self, Body};
use crate::error::{Code, RegistryError};
use crate::metrics::Metrics;
use crate::timeouts::Timeouts;

/// Headers that describe one connection, not the message (RFC 9110 7.6.1), plus the
/// forwarding headers regate sets itself: a client must not choose what the registry
/// believes about scheme and host, or it could steer the registry's `Location`s.
const STRIPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
];

/// Where a request came from, as regate tells the registry.
pub struct Origin {
    pub client_ip: IpAddr,
    pub https: bool,
}

/// The `upstream` section, validated (`config/upstream.rs` reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `http://HOST:PORT` or `https://HOST:PORT`: one registry, or replicas of one
    /// (sharing storage and `http.secret`), all of one scheme.
    pub urls: Vec<Uri>,
    /// How long the registry may stay silent (nginx's `proxy_read_timeout`).
    pub read_timeout: Duration,
    /// The CA that signed an https registry's certificate (the system's roots if `None`).
    pub ca_certificate: Option<std::path::PathBuf>,
}

/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, ClientBody>,
    /// Shared by the clones, as the pool is: one view of which registry refused.
    backends: Arc<Backends>,
    /// How long the registry may take to answer once it has the whole request (nginx's
    /// `proxy_read_timeout`, 900 s in the distribution recipe).
    read_timeout: Duration,
    /// How long a client's request body may stay silent ([`Timeouts::client_body_idle`]).
    body_idle: Duration,
}

/// The most one read from the registry takes. A blob comes in reads this large (hyper grows
/// its buffer up to here while reads fill it): against hyper's ~400 KiB default, a 1 GiB
/// GET measured +9-12% (level with a bare TCP relay) for about 2 MiB more memory per blob
/// streaming at that moment (8 streams: peak RSS +24 MiB instead of +8 MiB).
const UPSTREAM_READ_BUFFER: usize = 1 << 20;

impl Upstream {
    /// A pooled client for the registry at `base`: plain HTTP, or HTTPS checked against
    /// the certificates in `ca` (the system's roots without it); HTTP/1.1 either way, as
    /// nginx's recipe speaks to the registry. Fails only when those roots cannot be read.
    /// Of `timeouts`, it uses the connect timeout and the client body's.
    pub fn new(settings: &Settings, timeouts: &Timeouts) -> Result<Upstream, crate::tls::CaError> {
        let backends = Arc::new(Backends::new(&settings.urls));
        let base = &settings.urls[0];
        let read_timeout = settings.read_timeout;
        let ca = settings.ca_certificate.as_deref();
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeouts.upstream_connect));
        http.set_keepalive(Some(Duration::from_secs(60)));
        http.enforce_http(false);
        // The scheme is the config's, fixed at start: an https upstream is never reached
        // in plain text, and a plain one needs no roots.
        let https = base.scheme_str() == Some("https");
        let tls = if https {
            crate::tls::client_config(ca)?
        } else {
            crate::tls::client_config_without_roots()
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let connector = if https {
            builder.https_only()
        } else {
            builder.https_or_http()
        }
        .enable_http1()
        .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .http1_max_buf_size(UPSTREAM_READ_BUFFER)
            .build(connector);
        Ok(Upstream {
            client,
            backends,
            read_timeout,
            body_idle: timeouts.client_body_idle,
        })
    }

    /// The registries, as configured.
    pub fn bases(&self) -> Vec<&Uri> {
        self.backends.list.iter().map(|b| &b.base).collect()
    }

    /// Whether a registry answers HTTP on `/v2/` (200 or 401 both count) within `limit`:
    /// over the same pool, TLS and certificate check as the requests it serves. With
    /// several, one that answers is enough (the others are named in the log).
    pub async fn answers(&self, limit: Duration) -> Result<StatusCode, String> {
        let mut reasons = Vec::new();
        for backend in &self.backends.list {
            match self.answers_at(&backend.base, limit).await {
                Ok(status) => {
                    backend.worked();
                    for r in &reasons {
                        tracing::warn!("/readyz: {r}");
                    }
                    return Ok(status);
                }
                Err(e) => {
                    if self.backends.list.len() > 1 {
                        backend.refused();
                    }
                    reasons.push(format!("{}: {e}", backend.base));
                }
            }
        }
        Err(reasons.join("; "))
    }

    async fn answers_at(&self, base: &Uri, limit: Duration) -> Result<StatusCode, String> {
        let uri = format!("{base}v2/")
            .parse::<Uri>()
            .map_err(|e| e.to_string())?;
        let req = Request::get(uri)
            .body(ClientBody::new(
                body::empty(),
                self.body_idle,
                Arc::default(),
            ))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(limit, self.client.request(req)).await {
            Err(_) => Err(format!("no answer within {limit:?}")),
            Ok(Err(e)) => {
                // The whole chain: hyper's top error says little ("client error
                // (Connect)"); the cause is at the bottom ("Connection refused").
                let mut text = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    text = format!("{text}: {c}");
                    cause = c.source();
                }
                Err(text)
            }
            Ok(Ok(resp)) if resp.status().is_server_error() => {
                Err(format!("it answered {}", resp.status()))
            }
            Ok(Ok(resp)) => Ok(resp.status()),
        }
    }

    /// A bodiless request of regate's own to the registry (the web pages read through
    /// it): `path_and_query` already checked against what the caller may do, `bearer`
    /// the token minted for exactly that. The answer's body is the registry's stream;
    /// a registry silent for `read_timeout` fails it.
    pub async fn send(
        &self,
        method: hyper::Method,
        path_and_query: &str,
        bearer: &str,
        accept: &[&str],
    ) -> Result<Response<Incoming>, RegistryError> {
        let base = &self.backends.pick().base;
        let uri = Uri::builder()
            .scheme(base.scheme_str().unwrap_or("http"))
            .authority(base.authority().map(|a| a.as_str()).unwrap_or_default())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| RegistryError::new(Code::Unknown, "could not build the upstream URL"))?;
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {bearer}"));
        for a in accept {
            req = req.header(hyper::header::ACCEPT, *a);
        }
        let req = req
            .body(ClientBody::new(
                body::empty(),
                self.body_idle,
                Arc::default(),
            ))
            .map_err(|_| RegistryError::new(Code::Unknown, "could not build the upstream URL"))?;
        match tokio::time::timeout(self.read_timeout, self.client.request(req)).await {
            Err(_) => Err(RegistryError::new(
                Code::Unavailable,
                "the registry behind this gateway did not answer in time",
            )
            .with_status(StatusCode::GATEWAY_TIMEOUT)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "upstream request failed");
                Err(upstream_error(&e))
            }
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// Sends `req` to the registry with `path_and_query` (already checked) and returns the
    /// registry's response with its body streaming.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        path_and_query: &str,
        origin: &Origin,
        metrics: &Arc<Metrics>,
    ) -> Result<Response<Body>, RegistryError> {
        let counted = metrics.clone();
        let received = req.extensions().get::<body::Received>().cloned();
        let sent = Arc::new(tokio::sync::Notify::new());
        let mut req = req.map(|b| {
            ClientBody::new(
                body::stream(b).on_end(move |n| {
                    counted.bytes_from_clients.fetch_add(n, Relaxed);
                    if let Some(received) = received {
                        received.0.fetch_add(n, Relaxed);
                    }
                }),
                self.body_idle,
                sent.clone(),
            )
        });
        let bodiless = hyper::body::Body::is_end_stream(req.body());
        let host = request_host(&req);
        // The registry talks HTTP/1.1 to us whatever the client spoke.
        *req.version_mut() = hyper::Version::HTTP_11;
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        if let Some(host) = &host {
            // `Host` with its port: the registry builds its absolute `Location`s from it.
            headers.insert(HOST, host.clone());
            headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
        }
        let proto = if origin.https { "https" } else { "http" };
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(proto),
        );
        if let Ok(ip) = HeaderValue::from_str(&origin.client_ip.to_string()) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), ip.clone());
            headers.insert(HeaderName::from_static("x-real-ip"), ip);
        }
        let (parts, body) = req.into_parts();
        // The body waits in `slot` until a connection takes it: a registry that refuses
        // the connection has had no byte of it, so it can go to another.
        let slot = body.slot.clone();
        let mut body = Some(body);
        let (method, headers) = (parts.method, parts.headers);

        let started = Instant::now();
        let mut tried = 0;
        let resp = loop {
            let backend = self.backends.pick();
            let uri = Uri::builder()
                .scheme(backend.base.scheme_str().unwrap_or("http"))
                .authority(
                    backend
                        .base
                        .authority()
                        .map(|a| a.as_str())
                        .unwrap_or_default(),
                )
                .path_and_query(path_and_query)
                .build()
                .map_err(|_| {
                    RegistryError::new(Code::Unknown, "could not build the upstream URL")
                })?;
            let body = body
                .take()
                .unwrap_or_else(|| ClientBody::from_slot(&slot, &sent));
            let mut attempt = Request::new(body);
            *attempt.method_mut() = method.clone();
            *attempt.uri_mut() = uri;
            *attempt.version_mut() = hyper::Version::HTTP_11;
            *attempt.headers_mut() = headers.clone();
            tried += 1;
            let resp = self.try_once(attempt, bodiless, &sent).await?;
            match resp {
                Err(e) if e.is_connect() => {
                    if self.backends.list.len() > 1 {
                        backend.refused();
                    }
                    let untouched = slot.lock().ok().is_some_and(|s| s.is_some());
                    if untouched && tried < self.backends.list.len() {
                        metrics.upstream_retries.fetch_add(1, Relaxed);
                        tracing::warn!(upstream = %backend.base, error = %e, "registry refused the connection; trying another");
                        continue;
                    }
                    break Err(e);
                }
                other => {
                    if other.is_ok() {
                        backend.worked();
                    }
                    break other;
                }
            }
        };
        let resp = resp.map_err(|e| match client_fault(&e) {
            Some(fault) => {
                tracing::info!(error = %fault, "request body failed; not forwarded whole");
                fault.to_registry_error()
            }
            None => {
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "upstream request failed");
                upstream_error(&e)
            }
        })?;
        metrics.upstream(started.elapsed());
        let (mut parts, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // A registry that stops sending mid-body ends the response (the client sees a cut
        // transfer) instead of holding the connection forever.
        let body = body::stream(incoming).idle_timeout(self.read_timeout);
        Ok(Response::from_parts(parts, body))
    }
}

impl Upstream {
    /// One try at one registry: its answer or its error, or 504 when it stays silent for
    /// `read_timeout` once it has the whole request.
    async fn try_once(
        &self,
        req: Request<ClientBody>,
        bodiless: bool,
        sent: &tokio::sync::Notify,
    ) -> Result<Result<Response<Incoming>, hyper_util::client::legacy::Error>, RegistryError> {
        // The registry's answer may take as long as the client takes to send; the clock
        // for a registry that never answers starts once the request is all there.
        let answer = self.client.request(req);
        let silence = async {
            if !bodiless {
                sent.notified().await;
            }
            tokio::time::sleep(self.read_timeout).await;
        };
        tokio::select! {
            resp = answer => Ok(resp),
            _ = silence => {
                tracing::warn!(timeout = ?self.read_timeout, "the registry did not answer in time");
                Err(RegistryError::new(
                    Code::Unavailable,
                    "the registry behind this gateway did not answer in time",
                )
                .with_status(StatusCode::GATEWAY_TIMEOUT))
            }
        }
    }
}

fn upstream_error(e: &hyper_util::client::legacy::Error) -> RegistryError {
    if e.is_connect() {
        RegistryError::new(
            Code::Unavailable,
            "the registry behind this gateway is not reachable",
        )
    } else {
        RegistryError::new(
            Code::Unavailable,
            "the registry behind this gateway failed to answer",
        )
        .with_status(StatusCode::BAD_GATEWAY)
    }
}

/// The host the client addressed: `Host` for HTTP/1, `:authority` for HTTP/2.
pub fn request_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(h) = req.headers().get(HOST) {
        return Some(h.clone());
    }
    req.uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the `Connection` header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in STRIPPED {
        headers.remove(*name);
    }
}
