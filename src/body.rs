//! The one body type regate's responses (and forwarded requests) carry: a stream passed
//! through untouched from the other side, or a small buffer regate wrote itself. A body can
//! carry a tap that counts the bytes as they pass and reports once the body is done, which
//! is how the access log and the byte counters see a transfer's true size without ever
//! holding it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};

type OnEnd = Box<dyn FnOnce(u64) + Send>;

pub struct Body {
    inner: Inner,
    bytes: u64,
    on_end: Option<OnEnd>,
}

enum Inner {
    Stream(Incoming),
    Buffer(Option<Bytes>),
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    let bytes: Bytes = bytes.into();
    Body::new(Inner::Buffer((!bytes.is_empty()).then_some(bytes)))
}

pub fn empty() -> Body {
    Body::new(Inner::Buffer(None))
}

pub fn stream(incoming: Incoming) -> Body {
    Body::new(Inner::Stream(incoming))
}

impl Body {
    fn new(inner: Inner) -> Body {
        Body {
            inner,
            bytes: 0,
            on_end: None,
        }
    }

    /// Calls `f` with the number of body bytes that passed, when the body is finished or
    /// dropped (a client that went away mid-transfer included).
    pub fn on_end(mut self, f: impl FnOnce(u64) + Send + 'static) -> Body {
        self.on_end = Some(Box::new(f));
        self
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
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = match &mut self.inner {
            Inner::Stream(incoming) => Pin::new(incoming).poll_frame(cx),
            Inner::Buffer(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Stream(incoming) => incoming.is_end_stream(),
            Inner::Buffer(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Stream(incoming) => incoming.size_hint(),
            Inner::Buffer(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
