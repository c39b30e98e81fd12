//! Forwards an authorized request to registry:2 and streams the answer back. Bodies pass
//! through as they arrive, both ways: a blob of any size costs a few buffers of memory.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{self, Body};
use crate::error::{Code, RegistryError};
use crate::metrics::Metrics;

/// A TCP connect to the registry that takes longer than this fails the request with 503
/// instead of hanging it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

pub struct Upstream {
    client: Client<HttpConnector, Body>,
    base: Uri,
}

impl Upstream {
    pub fn new(base: Uri) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Upstream { client, base }
    }

    pub fn base(&self) -> &Uri {
        &self.base
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
        let mut req = req.map(|b| {
            body::stream(b).on_end(move |n| {
                counted.bytes_from_clients.fetch_add(n, Relaxed);
            })
        });
        let host = request_host(&req);
        let uri = Uri::builder()
            .scheme(self.base.scheme_str().unwrap_or("http"))
            .authority(
                self.base
                    .authority()
                    .map(|a| a.as_str())
                    .unwrap_or_default(),
            )
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| RegistryError::new(Code::Unknown, "could not build the upstream URL"))?;
        *req.uri_mut() = uri;
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

        let started = Instant::now();
        let resp = self.client.request(req).await.map_err(|e| {
            tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "upstream request failed");
            upstream_error(&e)
        })?;
        metrics.upstream(started.elapsed());
        let (mut parts, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body::stream(incoming)))
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
