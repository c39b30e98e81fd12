//! The one body type regate's responses (and forwarded requests) carry: a stream passed
//! through untouched from the other side, or a small buffer regate wrote itself. A body can
//! carry a tap that counts the bytes as they pass and reports once the body is done, which
//! is how the access log and the byte counters see a transfer's true size without ever
//! holding it. A stream can also carry an idle limit: a side that sends nothing for that
//! long ends the body with [`Stalled`], in either direction.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};

type OnEnd = Box<dyn FnOnce(u64) + Send>;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The other side sent nothing of the body for this long.
#[derive(Debug, thiserror::Error)]
#[error("no body data for {0:?}")]
pub struct Stalled(pub Duration);

pub struct Body {
    inner: Inner,
    bytes: u64,
    on_end: Option<OnEnd>,
    idle: Option<Idle>,
}

/// Runs only while the stream is waited on; any frame resets it.
struct Idle {
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
}

enum Inner {
    Stream(Incoming),
    Buffer(Option<Bytes>),
    /// Another body over one of these (the cache's copy of what passes).
    Boxed(Pin<Box<dyn hyper::body::Body<Data = Bytes, Error = BoxError> + Send>>),
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    let bytes: Bytes = bytes.into();
    Body::new(Inner::Buffer((!bytes.is_empty()).then_some(bytes)))
}

pub fn empty() -> Body {
    Body::new(Inner::Buffer(None))
}

/// How many bytes of a request's body went on to the registry, for the access log: put in
/// the request's extensions by the gateway, added to by the proxy as the body streams.
#[derive(Clone, Default)]
pub struct Received(pub std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Received {
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub fn stream(incoming: Incoming) -> Body {
    Body::new(Inner::Stream(incoming))
}

/// A body of another kind, behind a box.
pub fn boxed(
    body: impl hyper::body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
) -> Body {
    Body::new(Inner::Boxed(Box::pin(body)))
}

impl Body {
    fn new(inner: Inner) -> Body {
        Body {
            inner,
            bytes: 0,
            on_end: None,
            idle: None,
        }
    }

    /// Ends the body with [`Stalled`] when the stream sends nothing for `limit` while
    /// it is waited on: a slow transfer is never cut, a silent one is.
    pub fn idle_timeout(mut self, limit: Duration) -> Body {
        self.idle = Some(Idle {
            limit,
            timer: None,
            waiting: false,
        });
        self
    }

    /// Calls `f` with the number of body bytes that passed, when the body is finished or
    /// dropped (a client that went away mid-transfer included).
    pub fn on_end(mut self, f: impl FnOnce(u64) + Send + 'static) -> Body {
        self.on_end = Some(Box::new(f));
        self
    }
}

impl Idle {
    /// Starts the clock at the first wait after a frame; true once it has run out.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = tokio::time::Instant::now() + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.waiting {
            self.waiting = true;
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.bytes);
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.inner {
            Inner::Stream(incoming) => Pin::new(incoming).poll_frame(cx).map_err(BoxError::from),
            Inner::Buffer(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Boxed(body) => body.as_mut().poll_frame(cx),
        };
        let this = self.get_mut();
        match polled {
            Poll::Ready(frame) => {
                if let Some(idle) = &mut this.idle {
                    idle.waiting = false;
                }
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    this.bytes += data.map_or(0, |d| d.len() as u64);
                }
                Poll::Ready(frame)
            }
            Poll::Pending => match &mut this.idle {
                Some(idle) => {
                    if idle.poll_expired(cx) {
                        Poll::Ready(Some(Err(Box::new(Stalled(idle.limit)))))
                    } else {
                        Poll::Pending
                    }
                }
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Stream(incoming) => incoming.is_end_stream(),
            Inner::Buffer(bytes) => bytes.is_none(),
            Inner::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Stream(incoming) => incoming.size_hint(),
            Inner::Boxed(body) => body.size_hint(),
            Inner::Buffer(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
