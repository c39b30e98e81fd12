//! The entries and how moka holds them: their weight in bytes, and how long each lives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::HeaderMap;

use super::accept::Accept;
use super::{Kind, Settings};

pub(super) type Store = moka::sync::Cache<Key, Entry>;

/// A cache weighed in bytes, `max_bytes` in all; `None` when that is 0.
pub(super) fn build(settings: &Settings) -> Option<Store> {
    (settings.max_bytes > 0).then(|| {
        moka::sync::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(weigh)
            .expire_after(Lifetimes {
                tag: settings.tag_ttl,
                object: settings.object_ttl,
            })
            .build()
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Object {
        repository: Box<str>,
        kind: Kind,
        digest: Box<str>,
    },
    Tag {
        repository: Box<str>,
        tag: Box<str>,
        accept: Accept,
    },
}

#[derive(Clone)]
pub(super) enum Entry {
    Object(Arc<Object>),
    Tag(Arc<Tag>),
}

pub(super) struct Object {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The `Content-Type`'s media type: a manifest is served only to a request that
    /// accepts it.
    pub media_type: Box<str>,
    /// The repository's delete generation before the registry was asked.
    pub deletes: u64,
}

pub(super) struct Tag {
    pub digest: Box<str>,
    /// The repository's tag generation before the registry was asked.
    pub tags: u64,
}

/// An entry's weight in bytes: what it holds plus a fixed allowance for the key, the
/// maps and moka's own bookkeeping.
fn weigh(key: &Key, entry: &Entry) -> u32 {
    const OVERHEAD: usize = 256;
    let key = match key {
        Key::Object {
            repository, digest, ..
        } => repository.len() + digest.len(),
        Key::Tag {
            repository,
            tag,
            accept,
        } => repository.len() + tag.len() + accept.as_str().len(),
    };
    let entry = match entry {
        Entry::Object(o) => {
            let headers: usize = o
                .headers
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 32)
                .sum();
            o.body.len() + headers + o.media_type.len()
        }
        Entry::Tag(t) => t.digest.len(),
    };
    u32::try_from(OVERHEAD + key + entry).unwrap_or(u32::MAX)
}

/// Tags for `tag_ttl`, objects for `object_ttl`, both counted from when they were stored.
struct Lifetimes {
    tag: Duration,
    object: Duration,
}

impl Lifetimes {
    fn of(&self, entry: &Entry) -> Duration {
        match entry {
            Entry::Tag(_) => self.tag,
            Entry::Object(_) => self.object,
        }
    }
}

impl moka::Expiry<Key, Entry> for Lifetimes {
    fn expire_after_create(&self, _: &Key, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(self.of(entry))
    }

    fn expire_after_update(
        &self,
        _: &Key,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.of(entry))
    }
}
