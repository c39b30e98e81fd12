//! The client regate talks to identity providers with: HTTPS against the system's roots (or
//! plain HTTP where the config says so, for a provider on the same host), a whole-request
//! deadline (`http_timeout`: connecting, sending and reading the answer together), answers
//! of at most 1 MiB, and no redirect followed: a provider's endpoints answer where its
//! discovery document or its API documentation says, and a 3xx is an answer to judge
//! (GitHub's organization check answers 302 to "not a member you may see").

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::auth::Secret;

/// An answer larger than this is not one a provider gives to these requests.
const LIMIT: usize = 1 << 20;

/// What providers see as the client (GitHub's API refuses requests without one).
const AGENT: &str = concat!("regate/", env!("CARGO_PKG_VERSION"));

/// Why a request got no usable answer. The message names the provider's host, never a
/// token or a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    #[error("{host} did not answer within {seconds} s (http_timeout)")]
    Timeout { host: String, seconds: u64 },
    #[error("{host} cannot be reached: {cause}")]
    Unreachable { host: String, cause: String },
    #[error("{host} sent an answer larger than 1 MiB")]
    TooLarge { host: String },
    #[error("`{0}` is not a URL regate can ask")]
    BadUrl(String),
}

/// A provider's answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON of type `T`, or why not (the body itself is not quoted: it may
    /// hold a token).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let kind = self
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no content type");
            format!(
                "an answer that is not the JSON expected ({kind}, HTTP {}: {e})",
                self.status.as_u16()
            )
        })
    }
}

/// How a request proves who is asking.
pub enum Auth<'a> {
    None,
    /// `Authorization: Bearer TOKEN` (an access token).
    Bearer(&'a str),
    /// `Authorization: Basic` with the client's id and secret, each form-encoded first
    /// (RFC 6749 2.3.1).
    Client(&'a str, &'a Secret),
}

pub struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl Http {
    /// A client whose every request ends after `timeout`. Fails only when the system's
    /// roots cannot be read.
    pub fn new(timeout: Duration) -> Result<Http, crate::tls::CaError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        http.enforce_http(false);
        let tls = crate::tls::client_config(None)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Http { client, timeout })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub async fn get(&self, url: &str, auth: Auth<'_>, accept: &str) -> Result<Answer, HttpError> {
        self.send(Method::GET, url, auth, accept, None).await
    }

    /// POSTs a form (`application/x-www-form-urlencoded`).
    pub async fn post_form(
        &self,
        url: &str,
        auth: Auth<'_>,
        form: &[(&str, &str)],
    ) -> Result<Answer, HttpError> {
        let body = crate::percent::form(form);
        self.send(Method::POST, url, auth, "application/json", Some(body))
            .await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        auth: Auth<'_>,
        accept: &str,
        form: Option<String>,
    ) -> Result<Answer, HttpError> {
        let uri: Uri = url.parse().map_err(|_| HttpError::BadUrl(url.to_owned()))?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| HttpError::BadUrl(url.to_owned()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(HttpError::BadUrl(url.to_owned()));
        }
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(USER_AGENT, AGENT)
            .header(ACCEPT, accept);
        match auth {
            Auth::None => {}
            Auth::Bearer(token) => {
                let value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| HttpError::BadUrl(url.to_owned()))?;
                req = req.header(AUTHORIZATION, sensitive(value));
            }
            Auth::Client(id, secret) => {
                use base64::Engine;
                let pair = format!(
                    "{}:{}",
                    crate::percent::form_encode(id),
                    crate::percent::form_encode(secret.expose())
                );
                let value = HeaderValue::from_str(&format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
                .map_err(|_| HttpError::BadUrl(url.to_owned()))?;
                req = req.header(AUTHORIZATION, sensitive(value));
            }
        }
        let body = match form {
            Some(text) => {
                req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                Full::new(Bytes::from(text))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req
            .body(body)
            .map_err(|_| HttpError::BadUrl(url.to_owned()))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| HttpError::Unreachable {
                    host: host.clone(),
                    cause: cause(&e),
                })?;
            let (head, body) = resp.into_parts();
            let body = Limited::new(body, LIMIT)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        HttpError::TooLarge { host: host.clone() }
                    } else {
                        HttpError::Unreachable {
                            host: host.clone(),
                            cause: format!("the answer broke off: {e}"),
                        }
                    }
                })?
                .to_bytes();
            Ok(Answer {
                status: head.status,
                headers: head.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(HttpError::Timeout {
                host,
                seconds: self.timeout.as_secs_f64().ceil() as u64,
            }),
        }
    }
}

fn sensitive(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// The innermost cause of a client error ("connection refused"), which the outer ones
/// ("client error (Connect)") only wrap.
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// The URL of the `rel="next"` page in a `Link` header (GitHub's and GitLab's paging).
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(hyper::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| {
            let (url, params) = part.split_once(';')?;
            let next = params
                .split(';')
                .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
            let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
            next.then(|| url.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_is_read_from_link() {
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::LINK,
            HeaderValue::from_static(
                "<https://api.github.com/user/teams?page=2>; rel=\"next\", <https://api.github.com/user/teams?page=5>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("https://api.github.com/user/teams?page=2")
        );
        headers.insert(
            hyper::header::LINK,
            HeaderValue::from_static("<https://x/?page=1>; rel=\"prev\""),
        );
        assert_eq!(next_link(&headers), None);
    }

    #[tokio::test]
    async fn a_silent_provider_is_a_timeout_and_a_closed_port_unreachable() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        // Accepts and never answers.
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let http = Http::new(Duration::from_millis(300)).unwrap();
        let e = http
            .get(&format!("http://{addr}/x"), Auth::None, "application/json")
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("http_timeout"), "{e}");
        hold.abort();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let e = http
            .get(&format!("http://{addr}/x"), Auth::None, "application/json")
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Unreachable { .. }), "{e}");
    }
}
