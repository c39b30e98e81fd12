//! What regate answers itself beside the registry's routes: health, metrics, the `/v2`
//! and HTTPS redirects, and what it derives from a request (the client's address, the
//! realm).

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};

use super::{Gateway, API_VERSION};
use crate::body::{self, Body};
use crate::error;
use crate::proxy;
use crate::runtime::Runtime;

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

pub(super) fn metrics_response(rt: &Runtime) -> Response<Body> {
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
pub(super) fn client_ip<B>(rt: &Runtime, req: &Request<B>, peer: IpAddr) -> IpAddr {
    let Some(real) = rt.config.server.real_ip.as_ref().filter(|r| r.trusts(peer)) else {
        return peer;
    };
    // Several lines of the header are one list, in order (RFC 9110 5.3): haproxy's
    // `option forwardfor` adds its own line after the client's rather than appending.
    let values: Vec<&str> = req
        .headers()
        .get_all(real.header.as_str())
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return peer;
    }
    let parts: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
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
pub(super) fn realm<B>(rt: &Runtime, req: &Request<B>, https: bool) -> String {
    if let Some(realm) = &rt.config.token.realm {
        return realm.clone();
    }
    let scheme = if https { "https" } else { "http" };
    let host = proxy::request_host(req)
        .and_then(|h| h.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{scheme}://{host}{}/auth", rt.config.server.path_prefix)
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

pub(super) fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
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
