//! A request body on its way to the registry: the client's stream, kept for a retry on
//! another registry until a connection takes it, cut off when it stalls, its failures
//! marked as the client's (a 4xx, not the registry's 5xx).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::StatusCode;

use crate::body::{self, Body};
use crate::error::{Code, RegistryError};

/// Why a forwarded request body failed on the client's side: not the registry's fault, so
/// not a 5xx.
#[derive(Debug, thiserror::Error)]
pub(super) enum ClientFault {
    #[error("the client sent no request body data for {0:?}")]
    Stalled(Duration),
    #[error("the client's request body was malformed or cut short: {0}")]
    Read(#[source] body::BoxError),
}

impl ClientFault {
    pub(super) fn to_registry_error(&self) -> RegistryError {
        let (status, message) = match self {
            ClientFault::Stalled(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "the request body stalled; the upload was cut off",
            ),
            ClientFault::Read(_) => (
                StatusCode::BAD_REQUEST,
                "the request body was malformed or cut short",
            ),
        };
        RegistryError::new(Code::Unsupported, message).with_status(status)
    }
}

/// The client fault behind a failed upstream request, if that is what failed it.
pub(super) fn client_fault(e: &hyper_util::client::legacy::Error) -> Option<&ClientFault> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(fault) = err.downcast_ref::<ClientFault>() {
            return Some(fault);
        }
        source = err.source();
    }
    None
}

/// A request body on its way to the registry: the client's stream, with its failures marked
/// as the client's and a stall cut off after `idle` of silence. It waits in `slot` until
/// the first poll, which only a connection that was made does: after a refused connection
/// it is still there for the next registry.
pub(super) struct ClientBody {
    pub(super) slot: Arc<std::sync::Mutex<Option<Body>>>,
    inner: Option<Body>,
    /// Told when the whole body has been sent.
    sent: Arc<tokio::sync::Notify>,
}

impl ClientBody {
    pub(super) fn new(inner: Body, idle: Duration, sent: Arc<tokio::sync::Notify>) -> ClientBody {
        ClientBody {
            slot: Arc::new(std::sync::Mutex::new(Some(inner.idle_timeout(idle)))),
            inner: None,
            sent,
        }
    }

    /// The same body again, for the next registry.
    pub(super) fn from_slot(
        slot: &Arc<std::sync::Mutex<Option<Body>>>,
        sent: &Arc<tokio::sync::Notify>,
    ) -> ClientBody {
        ClientBody {
            slot: slot.clone(),
            inner: None,
            sent: sent.clone(),
        }
    }

    /// Looks at the body, wherever it waits.
    fn peek<T>(&self, f: impl FnOnce(&Body) -> T, none: T) -> T {
        match &self.inner {
            Some(b) => f(b),
            None => match self.slot.lock().ok().as_deref().and_then(Option::as_ref) {
                Some(b) => f(b),
                None => none,
            },
        }
    }
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = ClientFault;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientFault>>> {
        let this = self.get_mut();
        if this.inner.is_none() {
            this.inner = this.slot.lock().ok().and_then(|mut s| s.take());
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                // hyper stops polling once a body of known length is complete, so the end
                // is either `None` or a frame after which the body reports its end.
                if frame.is_none() || hyper::body::Body::is_end_stream(inner) {
                    // notify_one keeps the permit if nobody waits yet.
                    this.sent.notify_one();
                }
                Poll::Ready(frame.map(|f| {
                    f.map_err(|e| match e.downcast::<body::Stalled>() {
                        Ok(stalled) => ClientFault::Stalled(stalled.0),
                        Err(e) => ClientFault::Read(e),
                    })
                }))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.peek(hyper::body::Body::is_end_stream, true)
    }

    fn size_hint(&self) -> SizeHint {
        self.peek(hyper::body::Body::size_hint, SizeHint::with_exact(0))
    }
}
