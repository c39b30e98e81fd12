//! Filling the cache from a registry answer on its way to the client: the body passes
//! through untouched while a copy is kept, and once the last byte has passed the copy is
//! checked against its digest; only a copy that matches is handed on to be cached.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};

use super::store::{Entry, Key, Object, Tag};
use super::{tag_key, Cache, Keep, Lookup, Reference};
use crate::body::{Body, BoxError};

/// What the copy goes to once complete and matching its digest.
pub(super) type Done = Box<dyn FnOnce(Bytes) + Send>;
/// What a copy that does not match goes to.
pub(super) type Refused = Box<dyn FnOnce() + Send>;

/// `sha256:<64 hex>` or `sha512:<128 hex>`, lower case as the registry writes them: the
/// digests the cache can check. Anything else is not cached.
pub fn checkable(digest: &str) -> bool {
    let hex = |h: &str, n: usize| {
        h.len() == n
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match digest.split_once(':') {
        Some(("sha256", h)) => hex(h, 64),
        Some(("sha512", h)) => hex(h, 128),
        _ => false,
    }
}

/// Whether `body` is what `digest` (a [`checkable`] one) names.
pub fn matches(digest: &str, body: &[u8]) -> bool {
    let (algorithm, hex) = match digest.split_once(':') {
        Some(("sha256", h)) => (&ring::digest::SHA256, h),
        Some(("sha512", h)) => (&ring::digest::SHA512, h),
        _ => return false,
    };
    let sum = ring::digest::digest(algorithm, body);
    let mut out = String::with_capacity(hex.len());
    for b in sum.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out == hex
}

/// Bytes of copies being filled at once, with a limit: many concurrent misses of large
/// objects pass through without a copy rather than each holding one.
pub(super) struct Filling {
    used: AtomicU64,
    limit: u64,
}

impl Filling {
    pub fn new(limit: u64) -> Filling {
        Filling {
            used: AtomicU64::new(0),
            limit,
        }
    }

    /// Reserves `bytes` for a copy, if that stays within the limit.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Reserved> {
        let mut used = self.used.load(SeqCst);
        loop {
            let next = used.checked_add(bytes).filter(|n| *n <= self.limit)?;
            match self.used.compare_exchange(used, next, SeqCst, SeqCst) {
                Ok(_) => {
                    return Some(Reserved {
                        filling: self.clone(),
                        bytes,
                    })
                }
                Err(now) => used = now,
            }
        }
    }

    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.used.load(SeqCst)
    }
}

pub(super) struct Reserved {
    filling: Arc<Filling>,
    bytes: u64,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.filling.used.fetch_sub(self.bytes, SeqCst);
    }
}

/// The registry's body, copied as it passes. Nothing is held back from the client: the
/// copy is checked after the last byte went by, and a body that ends short, fails, or
/// runs longer than announced is not cached.
pub(super) struct Tee {
    inner: Body,
    copy: BytesMut,
    expected: usize,
    digest: String,
    done: Option<(Done, Refused)>,
    _reserved: Reserved,
}

impl Tee {
    /// `None` when the copy would not fit in what [`Filling`] allows now.
    pub fn new(
        inner: Body,
        expected: u64,
        digest: String,
        filling: &Arc<Filling>,
        done: Done,
        refused: Refused,
    ) -> Result<Tee, Body> {
        let Some(reserved) = filling.reserve(expected) else {
            return Err(inner);
        };
        Ok(Tee {
            inner,
            copy: BytesMut::with_capacity(expected as usize),
            expected: expected as usize,
            digest,
            done: Some((done, refused)),
            _reserved: reserved,
        })
    }

    fn finish(&mut self) {
        let Some((done, refused)) = self.done.take() else {
            return;
        };
        if self.copy.len() != self.expected {
            return;
        }
        let copy = std::mem::take(&mut self.copy).freeze();
        if matches(&self.digest, &copy) {
            done(copy);
        } else {
            refused();
        }
    }
}

impl hyper::body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if this.copy.len() + data.len() <= this.expected {
                        this.copy.extend_from_slice(data);
                    } else {
                        this.done = None;
                    }
                }
                // hyper stops polling a body of known length once it is complete, so the
                // last byte is the end.
                if this.copy.len() == this.expected {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => this.done = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}

impl Cache {
    /// What to do with a body once read: keep it (and the tag's digest) if it matches,
    /// count and log it if not.
    pub(super) fn keeper(&self, lookup: Lookup, keep: &Keep) -> (Done, Refused) {
        let Some(store) = self.store.clone() else {
            return (Box::new(|_| {}), Box::new(|| {}));
        };
        let done = {
            let metrics = self.metrics.clone();
            let generations = self.generations.clone();
            let (digest, media_type, headers) = (
                keep.digest.clone(),
                keep.media_type.clone(),
                keep.headers.clone(),
            );
            Box::new(move |bytes: Bytes| {
                let object = Object {
                    headers,
                    body: bytes,
                    media_type,
                    deletes: lookup.seen.deletes,
                };
                store.insert(
                    Key::Object {
                        repository: lookup.repository.as_str().into(),
                        kind: lookup.kind,
                        digest: digest.as_str().into(),
                    },
                    Entry::Object(Arc::new(object)),
                );
                // Already stale: do not replace what a later request may have put there.
                let current = generations.seen(&lookup.repository).tags;
                if let (Reference::Tag(tag), true) =
                    (&lookup.reference, current == lookup.seen.tags)
                {
                    store.insert(
                        tag_key(&lookup, tag),
                        Entry::Tag(Arc::new(Tag {
                            digest: digest.into(),
                            tags: lookup.seen.tags,
                        })),
                    );
                }
                metrics.cache_stored.fetch_add(1, Relaxed);
            }) as Done
        };
        let refused = {
            let metrics = self.metrics.clone();
            let digest = keep.digest.clone();
            Box::new(move || {
                metrics.cache_refused.fetch_add(1, Relaxed);
                tracing::warn!(
                    %digest,
                    "the registry's answer does not match its digest; not cached"
                );
            }) as Refused
        };
        (done, refused)
    }
}
