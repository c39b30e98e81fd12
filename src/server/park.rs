//! Idle HTTP/1 keep-alive connections without hyper's state (issue #20 item 1).
//!
//! hyper keeps an HTTP/1 connection's read buffer (8 to 16 KiB once it has read), its
//! header write buffer (8 KiB, allocated up front) and its connection state for as long as
//! the connection lives, idle or not: with thousands of docker and containerd nodes holding
//! keep-alive connections that was most of regate's memory (35 KiB per idle connection,
//! nginx 0.8). So once a response is done and nothing else has come for `PARK_AFTER`
//! (50 ms; at most twice that, as the timer is not moved on every request), the
//! connection is *parked*: hyper is told to stop (`graceful_shutdown` while idle closes
//! nothing the client sees: the response went out with keep-alive, and
//! `poll_without_shutdown` hands the socket back unclosed), everything hyper held is freed,
//! and the connection waits for its socket to become readable holding nothing but the
//! socket (and, over TLS, rustls' session). The hyper connection lives in a box of its own
//! while it serves, so a parked connection's task is small too. The next request resumes it
//! in a fresh hyper connection, with any bytes hyper had read already (a pipelined or
//! part-sent head) replayed first. Freed is not yet given back: glibc keeps what a wave of
//! connections going idle together freed, so parking counts the connection idle
//! (`memory::Idle`), and a wave of them trims the allocator. Measured with 4,000 idle
//! connections (`benches/run.sh --connections-only`, two runs): 3.8-3.9 KiB each over
//! plain HTTP, 10.6-10.7 over TLS.
//!
//! What hyper decided stays decided: a request or response with `Connection: close` (or an
//! HTTP/1.0 request without keep-alive) ends the connection instead of parking it, and a
//! connection hyper ends itself (an error, the client's close) is closed. A parked
//! connection is closed after `idle` without a byte, as hyper's header timeout closes an
//! idle one (`Timeouts::request_head`), and at shutdown.
//!
//! Over TLS the socket's readiness does not show what rustls has already decrypted (a
//! pipelined request in the same record as the last one): such a connection resumes at
//! once instead of waiting (`Parkable::pending`).

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use super::framing::Framed;
use crate::body::Body;

/// What the service wrapper tells the loop: requests begun and answered, and whether
/// either side asked for the connection to close.
#[derive(Default)]
struct Counts {
    started: AtomicU64,
    finished: AtomicU64,
    close: AtomicBool,
}

/// Counts a request as finished when dropped: with its response's body (written, or
/// abandoned), or with the handler's future if no response came.
struct Finished(Arc<Counts>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Relaxed);
    }
}

/// A response body that counts its request finished when hyper is done with it.
pub struct Tracked {
    body: Body,
    _finished: Finished,
}

impl HttpBody for Tracked {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Whether a head says the connection ends after this message.
fn says_close(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    })
}

fn keeps_alive_1_0(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("keep-alive"))
        })
    })
}

/// A request's answer: the handler's future, then its response with a `Tracked` body.
/// Its request counts as finished when this is dropped unanswered, or with the body.
pub struct Answer<F> {
    /// Boxed: hyper's `poll_without_shutdown` needs the future `Unpin`. The handler's future
    /// is a few KiB and is moved once, into this box (an `async` block around it, boxed,
    /// copied it four times a request).
    answer: Pin<Box<F>>,
    finished: Option<Finished>,
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(response) = std::task::ready!(self.answer.as_mut().poll(cx));
        let finished = self
            .finished
            .take()
            .expect("an answer is not polled again once it is ready");
        if says_close(response.headers()) {
            finished.0.close.store(true, Relaxed);
        }
        Poll::Ready(Ok(response.map(|body| Tracked {
            body,
            _finished: finished,
        })))
    }
}

/// `service` with its requests counted (shared, and its futures boxed: hyper's
/// `poll_without_shutdown` needs both `Unpin`).
fn counted<S>(
    service: S,
    counts: Arc<Counts>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<Tracked>,
    Error = Infallible,
    Future = Answer<S::Future>,
> + Unpin
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let service = Arc::new(service);
    hyper::service::service_fn(move |req: Request<Incoming>| {
        counts.started.fetch_add(1, Relaxed);
        let closes = says_close(req.headers())
            || (req.version() == Version::HTTP_10 && !keeps_alive_1_0(req.headers()));
        if closes {
            counts.close.store(true, Relaxed);
        }
        Answer {
            answer: Box::pin(service.call(req)),
            finished: Some(Finished(counts.clone())),
        }
    })
}

/// An HTTP/1 connection's IO that can wait for its next request without hyper.
pub trait Parkable: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Resolves when the socket has something to read (or has closed).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;

    /// Whether something already read from the socket waits to be read (rustls' decrypted
    /// bytes, or the peer's close): then the connection must not wait for the socket.
    fn pending(&mut self) -> bool;

    /// Lets go of buffers it does not need while idle.
    fn shrink(&mut self);
}

impl Parkable for Framed<TcpStream> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.get_ref().readable()
    }

    fn pending(&mut self) -> bool {
        false
    }

    fn shrink(&mut self) {
        Framed::shrink(self);
    }
}

impl Parkable for Framed<Box<TlsStream<TcpStream>>> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.get_ref().get_ref().0.readable()
    }

    fn pending(&mut self) -> bool {
        // Processes records already received (none, usually); an error or a close is
        // hyper's to see on its next read.
        match self.get_mut().get_mut().1.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
            Err(_) => true,
        }
    }

    fn shrink(&mut self) {
        Framed::shrink(self);
    }
}

/// How long a connection stays idle in hyper before it is parked (up to twice this: see
/// `session`'s timer): a client sending its next request at once (a pull's next blob, any
/// load test) keeps hyper's connection and pays nothing, one that waits longer costs a few
/// KiB instead of 30 while it waits.
const PARK_AFTER: Duration = Duration::from_millis(50);

/// How a hyper connection over a parkable IO ended.
enum Ended<I, S> {
    /// Idle: the IO, what hyper had read and not used, and the service, to resume with.
    Parked(I, Bytes, S),
    /// Closed (or to be closed): nothing to resume.
    Closed,
}

/// Serves an HTTP/1 connection, parking it between requests. `idle`: how long a parked
/// connection waits for a byte; `shutdown` turning true ends it (a request in flight
/// first).
pub async fn serve_h1<I, S>(
    io: I,
    builder: &http1::Builder,
    service: S,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    I: Parkable,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let counts = Arc::new(Counts::default());
    let mut service = counted(service, counts.clone());
    let mut io = io;
    let mut replay = Bytes::new();
    loop {
        // Boxed: the hyper connection is allocated while it serves, and freed when parked.
        let ended = Box::pin(session(
            io,
            replay,
            builder,
            service,
            &counts,
            &mut shutdown,
        ));
        let (mut parked, kept) = match ended.await? {
            // An empty `Bytes` from hyper still holds hyper's whole read buffer (8 KiB or
            // more): only a non-empty one is kept, or a parked connection would keep what
            // parking is meant to free.
            Ended::Parked(io, rest, service) => {
                replay = if rest.is_empty() { Bytes::new() } else { rest };
                (io, service)
            }
            Ended::Closed => return Ok(()),
        };
        service = kept;
        if !replay.is_empty() || parked.pending() {
            io = parked;
            continue;
        }
        parked.shrink();
        let _idle = crate::memory::Idle::begin();
        tokio::select! {
            ready = parked.readable() => {
                if ready.is_err() {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep(idle) => {
                let _ = parked.shutdown().await;
                return Ok(());
            }
            _ = stopped(&mut shutdown) => {
                let _ = parked.shutdown().await;
                return Ok(());
            }
        }
        io = parked;
    }
}

/// One hyper connection over `io` (after `replay`), until it ends or goes idle.
async fn session<I, S>(
    io: I,
    replay: Bytes,
    builder: &http1::Builder,
    service: S,
    counts: &Counts,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Ended<I, S>, hyper::Error>
where
    I: Parkable,
    S: Service<Request<Incoming>, Response = Response<Tracked>, Error = Infallible> + Unpin,
    S::Future: Unpin,
{
    let mut conn = builder.serve_connection(TokioIo::new(Rewind::new(replay, io)), service);
    let answered_before = counts.finished.load(Relaxed);
    let mut parking = false;
    let mut stopping = false;
    // The answer count when the grace timer was last set. The timer is not moved on every
    // answer (a clock read and a timer-wheel update per request): when it fires, the
    // connection parks if no answer came since it was set, and it is set again otherwise.
    // So a connection parks after PARK_AFTER to twice that idle.
    let mut armed_at = answered_before;
    let ended = {
        let stop = stopped(shutdown);
        let grace = tokio::time::sleep(PARK_AFTER);
        tokio::pin!(stop, grace);
        poll_fn(|cx| {
            if !stopping && stop.as_mut().poll(cx).is_ready() {
                stopping = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
            let polled = conn.poll_without_shutdown(cx);
            // Idle: a response done on this hyper connection, none in flight, and hyper
            // waiting for the next head. Stopping now loses nothing (module doc).
            let finished = counts.finished.load(Relaxed);
            if polled.is_pending()
                && !parking
                && !stopping
                && !counts.close.load(Relaxed)
                && finished > answered_before
                && counts.started.load(Relaxed) == finished
            {
                while grace.as_mut().poll(cx).is_ready() {
                    if armed_at == finished {
                        parking = true;
                        Pin::new(&mut conn).graceful_shutdown();
                        return conn.poll_without_shutdown(cx);
                    }
                    armed_at = finished;
                    grace
                        .as_mut()
                        .reset(tokio::time::Instant::now() + PARK_AFTER);
                }
            }
            polled
        })
        .await
    };
    let parts = conn.into_parts();
    ended?;
    let (mut io, rest) = parts.io.into_inner().into_parts();
    if !parking || stopping || counts.close.load(Relaxed) {
        let _ = io.shutdown().await;
        return Ok(Ended::Closed);
    }
    // What hyper read and did not use came before what the replay still held.
    let replay = if rest.is_empty() {
        parts.read_buf
    } else {
        [parts.read_buf, rest].concat().into()
    };
    Ok(Ended::Parked(io, replay, parts.service))
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(drop);
}

/// `inner` with `prefix` read first: bytes hyper read before it was stopped.
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    fn new(prefix: Bytes, inner: T) -> Rewind<T> {
        Rewind { prefix, inner }
    }

    fn into_parts(self) -> (T, Bytes) {
        (self.inner, self.prefix)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

super::write_through!(Rewind, inner);
