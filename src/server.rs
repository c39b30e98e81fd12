//! Listening: accept, TLS handshake (with a timeout), HTTP/1.1 and HTTP/2 on one port,
//! graceful shutdown. All server knobs live in [`connection_builder`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::body::Body;
use crate::gateway::Conn;
use crate::timeouts::Timeouts;

/// `AsyncWrite` for a wrapper that changes only how its IO is read (framing.rs follows
/// the requests, park.rs replays bytes): every write goes to `$field` as it is.
macro_rules! write_through {
    ($wrapper:ident, $field:ident) => {
        impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<T> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.$field).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.$field).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.$field.is_write_vectored()
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.$field).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.$field).poll_shutdown(cx)
            }
        }
    };
}
use write_through;

pub mod cap;
mod coalesce;
mod framing;
mod park;
pub mod proxy_protocol;
use cap::Cap;
use coalesce::Coalesce;
use framing::{Conflicts, Framed};

/// The `server` section, validated (`config/server.rs` reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// docker_auth's `path_prefix`, without a trailing `/` (`""`: none): regate's own
    /// routes (`/auth`, the pages) live under it; the registry API stays at `/v2/`.
    pub path_prefix: String,
    pub listen: SocketAddr,
    /// A plain-HTTP listener that redirects everything to HTTPS.
    pub redirect_listen: Option<SocketAddr>,
    /// A plain-HTTP listener for `/metrics` alone; `None`: `/metrics` is on the main
    /// listener, for loopback callers only.
    pub metrics_listen: Option<SocketAddr>,
    /// `None`: plain HTTP.
    pub tls: Option<crate::tls::ServerTls>,
    /// `Strict-Transport-Security` on HTTPS answers.
    pub hsts: bool,
    /// Whether HTTP Basic credentials are accepted on registry routes.
    pub basic_auth: bool,
    pub real_ip: Option<RealIp>,
    /// `server.proxy_protocol`: the peers (`trusted_proxies`) whose PROXY header names the
    /// client; `None`: off.
    pub proxy_protocol: Option<Arc<[crate::acl::IpNet]>>,
    /// `server.max_connections`; `None`: derived at start from the open files limit
    /// ([`cap::default_max`]).
    pub max_connections: Option<usize>,
}

/// docker_auth's `real_ip_header` / `real_ip_pos`: the client address comes from a header
/// a trusted proxy in front sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealIp {
    pub header: String,
    pub position: i64,
    /// `server.trusted_proxies`: the peers whose header counts; `None` (not set): any
    /// peer's, as docker_auth does (`regate check` warns).
    pub trusted: Option<Vec<crate::acl::IpNet>>,
}

impl RealIp {
    /// Whether the header of a request from `peer` names the client.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(peer)))
    }
}

/// What answers the requests of one connection.
pub trait Handler: Clone + Send + Sync + 'static {
    type Future: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static;
    fn call(&self, req: Request<Incoming>, conn: Conn) -> Self::Future;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request<Incoming>, Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    type Future = Fut;
    fn call(&self, req: Request<Incoming>, conn: Conn) -> Fut {
        self(req, conn)
    }
}

/// The most an HTTP/1 connection buffers, a request head included (hyper's default is
/// ~400 KiB): with 4,096 clients each holding a part-sent head, memory stays under
/// 256 MiB instead of 1.6 GiB. A longer head is refused with 431; real registry clients
/// send a few KiB (the bearer token is the largest part). Bodies stream through in pieces
/// either way.
const MAX_HEAD_BUFFER: usize = 64 * 1024;

/// The HTTP/1 and HTTP/2 builders of a connection whose version is not known yet (a plain
/// connection starting like HTTP/2's preface) or is HTTP/2, and the HTTP/1 builder of a
/// connection that is HTTP/1 (park.rs parks it between requests).
pub struct Builders {
    auto: auto::Builder<TokioExecutor>,
    http1: hyper::server::conn::http1::Builder,
}

pub fn connection_builder(timeouts: &Timeouts) -> Builders {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.request_head)
        .max_buf_size(MAX_HEAD_BUFFER)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        // Large windows: a blob over HTTP/2 is not held to 64 KiB in flight.
        .initial_stream_window_size(4 * 1024 * 1024)
        .initial_connection_window_size(8 * 1024 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.request_head)
        .max_buf_size(MAX_HEAD_BUFFER)
        // The buffer's size alone lets a longer head through when it arrives in large
        // reads (a connection that waited for its first bytes reads them all at once).
        .max_header_size(MAX_HEAD_BUFFER)
        .keep_alive(true);
    Builders {
        auto: builder,
        http1,
    }
}

/// Accepts until `shutdown` turns true, then waits for open connections to finish (up to
/// `timeouts.drain`). `proxy_protocol`: the peers whose PROXY header is read
/// (proxy_protocol.rs). At most `cap.max()` connections are open at once; past it,
/// accepting waits for one to close (cap.rs says why).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: impl Handler,
    timeouts: Timeouts,
    proxy_protocol: Option<Arc<[crate::acl::IpNet]>>,
    cap: Arc<Cap>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(connection_builder(&timeouts));
    let graceful = GracefulShutdown::new();
    // HTTP/1 connections are not hyper connections the graceful shutdown knows (park.rs
    // ends them and makes new ones): each holds a receiver of this channel, and the drain
    // waits for the last to go.
    let (live, _) = watch::channel(());
    loop {
        let (permit, waited) = match cap.try_take() {
            Some(slot) => (slot, false),
            None => {
                cap.reached();
                tokio::select! {
                    slot = cap.take() => (slot, true),
                    _ = shutdown.changed() => break,
                }
            }
        };
        // A connection ready at once after a wait for a slot was held in the listen queue.
        let ready = if waited {
            listener.accept().now_or_never()
        } else {
            None
        };
        let accepted = match ready {
            Some(a) => {
                if a.is_ok() {
                    cap.held();
                }
                a
            }
            None => tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.changed() => break,
            },
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off and carry on, never stop
                // serving on an accept error.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let handler = handler.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let proxy_protocol = proxy_protocol.clone();
        let held = (live.subscribe(), shutdown.clone());
        // The task's future is what an idle connection costs: the parts of serving that
        // are large (a handshake, a hyper connection) are boxed while they run.
        tokio::spawn(async move {
            let _permit = permit;
            let mut stream = stream;
            // Before TLS: the balancer's header comes first on the wire.
            let peer = match &proxy_protocol {
                None => peer,
                Some(trusted) => {
                    match Box::pin(proxy_protocol::accept(
                        &mut stream,
                        peer,
                        trusted,
                        timeouts.handshake,
                    ))
                    .await
                    {
                        Ok(client) => client,
                        Err(e) => {
                            tracing::info!(%peer, "connection closed: {e}");
                            return;
                        }
                    }
                }
            };
            serve_connection(
                stream, peer, tls, handler, &builder, &timeouts, watcher, held,
            )
            .await;
        });
    }
    drop(listener);
    let drained = async {
        graceful.shutdown().await;
        live.closed().await;
    };
    if tokio::time::timeout(timeouts.drain, drained).await.is_err() {
        let drain = timeouts.drain;
        tracing::warn!("connections still open after {drain:?}; closing them");
    }
}

/// `held`: a receiver of `serve`'s `live` channel, kept while the connection is open, and
/// the shutdown signal.
#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    handler: impl Handler,
    builders: &Builders,
    timeouts: &Timeouts,
    watcher: hyper_util::server::graceful::Watcher,
    held: (watch::Receiver<()>, watch::Receiver<bool>),
) {
    let (_live, shutdown) = held;
    let builder = &builders.auto;
    let conn = Conn {
        peer,
        https: tls.is_some(),
        conflicting_framing: false,
    };
    // hyper's header timeout starts once it knows the connection is HTTP/1; before that the
    // auto builder waits for the first bytes (HTTP/1 or the HTTP/2 preface) without a limit,
    // and HTTP/2 has no header timeout at all. So a connection must bring its first request
    // within `timeouts.request_head` of being ready, whatever it speaks, or it is dropped.
    let first_request = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = first_request.clone();
    // HTTP/1 requests with both Content-Length and Transfer-Encoding, which hyper hides
    // (framing.rs); h2 has no such headers to conflict (its frames carry the length).
    let conflicts = Arc::new(std::sync::OnceLock::<Arc<Conflicts>>::new());
    let found = conflicts.clone();
    let requests = std::sync::atomic::AtomicU64::new(0);
    let service = service_fn(move |req: Request<Incoming>| {
        seen.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut conn = conn;
        if let Some(c) = found.get() {
            // hyper hands over an HTTP/1 connection's requests one at a time, in order.
            let target = req.uri().path_and_query().map_or("", |p| p.as_str());
            let index = requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            conn.conflicting_framing = c.take(index, req.method().as_str(), target);
        }
        handler.call(req, conn)
    });
    let head = timeouts.request_head;
    let result = match tls {
        Some(acceptor) => {
            let handshake = Box::pin(tokio::time::timeout(
                timeouts.handshake,
                acceptor.accept(stream),
            ));
            // Boxed: rustls' session is over a KiB, and this task holds it while the
            // connection lives (a pointer is what an idle connection's task keeps).
            let stream = match handshake.await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // RFC 8737 3: the CA's TLS-ALPN-01 validation only looks at the certificate
            // and sends nothing more; it is done once the handshake is.
            if stream.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) {
                tracing::debug!(%peer, "ACME validation handshake answered");
                return;
            }
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                Box::pin(drive(
                    Coalesce::new(stream),
                    builder,
                    service,
                    head,
                    &first_request,
                    watcher,
                ))
                .await
            } else {
                // HTTP/1 (by ALPN, or no ALPN): hyper's header timeout covers the first
                // request as every later one.
                let io = framed(stream, &conflicts);
                let served = park::serve_h1(io, &builders.http1, service, head, shutdown);
                Some(served.await.map_err(Into::into))
            }
        }
        // Plain HTTP: HTTP/1, parked between requests; h2 with prior knowledge, or what
        // might become its preface, goes to the auto builder (Framed then stops following).
        None => match first_bytes(&stream, head).await {
            None => None,
            Some(First::Http1) => {
                let io = framed(stream, &conflicts);
                let served = park::serve_h1(io, &builders.http1, service, head, shutdown);
                Some(served.await.map_err(Into::into))
            }
            Some(First::Other) => {
                Box::pin(drive(
                    framed(stream, &conflicts),
                    builder,
                    service,
                    head,
                    &first_request,
                    watcher,
                ))
                .await
            }
        },
    };
    match result {
        Some(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
        None => tracing::debug!(%peer, "no request within {head:?}; dropped"),
        Some(Ok(())) => {}
    }
}

enum First {
    Http1,
    /// HTTP/2's preface, or bytes that may still become it.
    Other,
}

/// What a plain connection's first bytes say it speaks, without reading them; `None`: it
/// closed, or sent nothing within `limit`.
async fn first_bytes(stream: &TcpStream, limit: Duration) -> Option<First> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    let n = match tokio::time::timeout(limit, stream.peek(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => n,
        _ => return None,
    };
    if PREFACE.starts_with(&buf[..n]) {
        Some(First::Other)
    } else {
        Some(First::Http1)
    }
}

/// `io` with its HTTP/1 requests followed, and where to ask about them.
fn framed<T>(io: T, slot: &std::sync::OnceLock<Arc<Conflicts>>) -> Framed<T> {
    let (io, conflicts) = Framed::new(io);
    let _ = slot.set(conflicts);
    io
}

/// Serves one connection's requests over `io` until it ends (`None`: no first request
/// within `head`).
async fn drive<I, S>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    service: S,
    head: Duration,
    first_request: &std::sync::atomic::AtomicBool,
    watcher: hyper_util::server::graceful::Watcher,
) -> Option<Result<(), Box<dyn std::error::Error + Send + Sync>>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection(TokioIo::new(io), service);
    first_request_within(head, first_request, watcher.watch(conn.into_owned())).await
}

/// Runs `conn` to its end, or drops it (closing the connection) if `seen` is still false
/// once `limit` has passed.
async fn first_request_within<T>(
    limit: Duration,
    seen: &std::sync::atomic::AtomicBool,
    conn: impl Future<Output = T>,
) -> Option<T> {
    tokio::pin!(conn);
    tokio::select! {
        done = &mut conn => return Some(done),
        _ = tokio::time::sleep(limit) => {}
    }
    if !seen.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    Some(conn.await)
}
