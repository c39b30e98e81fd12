//! The edge cache: manifests and small blobs kept in memory, by repository and digest, and
//! what each tag pointed to a moment ago.
//!
//! It sits in the forward step, after the caller's grant has been checked against what
//! the request needs (`gateway.rs`): a cached answer goes only to a request that would
//! have been forwarded, and the key holds the repository, so an object is never served
//! from a repository other than the one the registry gave it for (registry:2 answers 404
//! for a digest the repository does not link, whoever else has it).
//!
//! - **What is kept**: the registry's `200` answers to `GET`s of a manifest or blob whose
//!   `Content-Length` is at most `max_object_bytes`, headers as the registry sent them
//!   (`Date` aside, which the server sets), once the body has been checked against its
//!   digest (`fill.rs`). Nothing else: no error, no `404`, no redirect, no range.
//! - **Tags**: a `GET` or `HEAD` by tag records the digest the registry answered with,
//!   for `tag_ttl`, keyed by the media types the request accepts (`accept.rs`). A
//!   manifest's `HEAD` that misses is asked of the registry as a `GET`, so it fills too.
//! - **Writes**: a manifest `PUT` or `DELETE` and a blob `DELETE` move the repository's
//!   generations when they come back (`changes.rs`), so no answer older than the write
//!   counts after it; a `DELETE` also drops the object.
//! - **Bounded**: moka, weighed in bytes, `max_bytes` in all; copies being filled are
//!   bounded too.

mod accept;
mod changes;
mod fill;
mod shared;
mod store;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, DATE};
use hyper::{Method, Response, StatusCode};

use crate::body::{self, Body};
use crate::metrics::Metrics;
use crate::route::{RepoKind, Route};
use accept::Accept;
pub use changes::{Alone, Change, Replicas};
use changes::{Generations, Seen};
use fill::{Filling, Tee};
pub use shared::shared;
use store::{Entry, Key, Object, Store};

/// On unless configured off: a pull storm's manifests and configs fit many times over,
/// and regate's worst case stays near 100 MiB, inside common container limits.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Image configs and small layers.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 1 << 20;
/// How long a tag's digest is believed without asking the registry. A push through this
/// regate is seen at once; one through another replica (or straight to the registry)
/// within this.
pub const TAG_TTL: Duration = Duration::from_secs(5);
/// How long an object is kept at most. Its bytes never change (the digest is checked),
/// but a delete through another replica shows here only once it is gone.
pub const OBJECT_TTL: Duration = Duration::from_secs(300);

/// The `cache` section, validated (`config/cache.rs` reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The most memory the cache's entries weigh; 0: off.
    pub max_bytes: u64,
    pub max_object_bytes: u64,
    pub tag_ttl: Duration,
    pub object_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_bytes: DEFAULT_MAX_BYTES,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            tag_ttl: TAG_TTL,
            object_ttl: OBJECT_TTL,
        }
    }
}

/// A manifest or a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Manifest,
    Blob,
}

/// Marks a response the cache answered (the access log says so).
#[derive(Debug, Clone, Copy)]
pub struct Hit;

/// A `GET` or `HEAD` the cache may answer or fill: what it asks for, and the
/// repository's generations when it was looked up.
pub struct Lookup {
    head: bool,
    repository: String,
    kind: Kind,
    reference: Reference,
    accept: Accept,
    seen: Seen,
}

enum Reference {
    Digest(String),
    Tag(String),
}

/// What of a registry answer is kept, once its body matches.
struct Keep {
    digest: String,
    media_type: Box<str>,
    length: u64,
    headers: HeaderMap,
}

/// What the cache holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub entries: u64,
}

pub struct Cache {
    store: Option<Store>,
    max_object_bytes: u64,
    generations: Arc<Generations>,
    filling: Arc<Filling>,
    replicas: Box<dyn Replicas>,
    metrics: Arc<Metrics>,
}

impl Cache {
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> Cache {
        Cache::with_replicas(settings, metrics, Box::new(Alone))
    }

    pub fn with_replicas(
        settings: &Settings,
        metrics: Arc<Metrics>,
        replicas: Box<dyn Replicas>,
    ) -> Cache {
        let store = store::build(settings);
        // Copies in flight: a quarter of the cache, and at least one object's worth.
        let filling = (settings.max_bytes / 4).max(settings.max_object_bytes);
        Cache {
            store,
            max_object_bytes: settings.max_object_bytes,
            generations: Arc::new(Generations::new()),
            filling: Arc::new(Filling::new(filling)),
            replicas,
            metrics,
        }
    }

    /// The request as the cache sees it, if the cache may answer or fill it: a `GET` or
    /// `HEAD` of a manifest or blob, unconditional and whole (a `Range` or an
    /// `If-None-Match` goes to the registry, which answers them itself).
    pub fn lookup(&self, method: &Method, route: &Route, headers: &HeaderMap) -> Option<Lookup> {
        self.store.as_ref()?;
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return None,
        };
        let Route::Repository { name, kind } = route else {
            return None;
        };
        let conditional = [
            "range",
            "if-range",
            "if-match",
            "if-none-match",
            "if-modified-since",
            "if-unmodified-since",
        ]
        .iter()
        .any(|h| headers.contains_key(*h));
        if conditional {
            return None;
        }
        let (kind, reference) = match kind {
            RepoKind::Manifest(r) if r.contains(':') => {
                (Kind::Manifest, Reference::Digest(r.clone()))
            }
            RepoKind::Manifest(r) => (Kind::Manifest, Reference::Tag(r.clone())),
            RepoKind::Blob(d) => (Kind::Blob, Reference::Digest(d.clone())),
            _ => return None,
        };
        if matches!(&reference, Reference::Digest(d) if !fill::checkable(d)) {
            return None;
        }
        let accept = match kind {
            Kind::Manifest => Accept::of(headers),
            Kind::Blob => Accept::default(),
        };
        Some(Lookup {
            head,
            seen: self.generations.seen(name),
            repository: name.clone(),
            kind,
            reference,
            accept,
        })
    }

    /// The cached answer to `lookup`, if there is one that still counts.
    pub fn answer(&self, lookup: &Lookup) -> Option<Response<Body>> {
        let store = self.store.as_ref()?;
        let object = self.object(store, lookup);
        let Some(object) = object else {
            self.metrics.cache_misses.fetch_add(1, Relaxed);
            return None;
        };
        self.metrics.cache_hits.fetch_add(1, Relaxed);
        let body = if lookup.head {
            body::empty()
        } else {
            body::full(object.body.clone())
        };
        let mut resp = Response::new(body);
        *resp.headers_mut() = object.headers.clone();
        resp.extensions_mut().insert(Hit);
        Some(resp)
    }

    fn object(&self, store: &Store, l: &Lookup) -> Option<Arc<Object>> {
        let digest: Box<str> = match &l.reference {
            Reference::Digest(d) => d.as_str().into(),
            Reference::Tag(tag) => match store.get(&tag_key(l, tag)) {
                Some(Entry::Tag(t)) if t.tags == l.seen.tags => t.digest.clone(),
                _ => return None,
            },
        };
        let key = Key::Object {
            repository: l.repository.as_str().into(),
            kind: l.kind,
            digest,
        };
        let object = match store.get(&key) {
            Some(Entry::Object(o)) if o.deletes == l.seen.deletes => o,
            Some(_) => {
                // From before a delete in this repository's slot.
                store.invalidate(&key);
                return None;
            }
            None => return None,
        };
        if l.kind == Kind::Manifest && !l.accept.lists(&object.media_type) {
            return None;
        }
        Some(object)
    }

    /// Whether the registry is asked with a GET although the client asked HEAD: a
    /// manifest's HEAD, so that its answer fills the cache too (registry:2 serves HEAD
    /// and GET of a manifest with one handler and the same headers; the body is at most a
    /// few KiB). A HEAD-only storm (nodes that hold the image and check its tag) is then
    /// answered from memory after its first request.
    pub fn fetches_body(lookup: &Lookup) -> bool {
        lookup.head && lookup.kind == Kind::Manifest
    }

    /// The registry's answer to `lookup`, passed on; what of it can be cached is kept on
    /// the way: a `GET`'s body once it has passed whole and matched its digest; for a
    /// manifest's `HEAD` (asked as a GET, [`Cache::fetches_body`]) the body is read here
    /// and the client gets the headers.
    pub async fn admit(&self, lookup: Lookup, resp: Response<Body>) -> Response<Body> {
        let keep = self.keepable(&lookup, &resp);
        if Cache::fetches_body(&lookup) {
            return self.admit_head(lookup, resp, keep).await;
        }
        let Some(keep) = keep else {
            return resp;
        };
        if lookup.head {
            return resp;
        }
        let (parts, body) = resp.into_parts();
        let (done, refused) = self.keeper(lookup, &keep);
        let body = match Tee::new(body, keep.length, keep.digest, &self.filling, done, refused) {
            Ok(tee) => body::boxed(tee),
            Err(body) => body,
        };
        Response::from_parts(parts, body)
    }

    /// A manifest's HEAD answered by the registry's GET: the body read and kept (or
    /// dropped), the headers passed on.
    async fn admit_head(
        &self,
        lookup: Lookup,
        resp: Response<Body>,
        keep: Option<Keep>,
    ) -> Response<Body> {
        let (parts, body) = resp.into_parts();
        let length = header(&parts.headers, CONTENT_LENGTH.as_str())
            .and_then(|l| l.parse::<u64>().ok())
            .filter(|l| *l <= self.max_object_bytes);
        // A body of known, small length is read to its end (an error's too), so the
        // registry's connection goes back to the pool; anything else is dropped.
        let reserved = length.and_then(|l| self.filling.reserve(l));
        if let (Some(_reserved), Some(length)) = (reserved, length) {
            let read = http_body_util::Limited::new(body, length as usize);
            let bytes = http_body_util::BodyExt::collect(read)
                .await
                .ok()
                .map(|c| c.to_bytes());
            if let (Some(bytes), Some(keep)) = (bytes, keep) {
                if bytes.len() as u64 == keep.length {
                    let digest = keep.digest.clone();
                    let (done, refused) = self.keeper(lookup, &keep);
                    if fill::matches(&digest, &bytes) {
                        done(bytes);
                    } else {
                        refused();
                    }
                }
            }
        }
        Response::from_parts(parts, body::empty())
    }

    /// What of the registry's answer may be kept: a `200` naming a digest the cache can
    /// check (the one asked for, if one was), of a manifest type the request lists, with
    /// a length within `max_object_bytes`.
    fn keepable(&self, lookup: &Lookup, resp: &Response<Body>) -> Option<Keep> {
        self.store.as_ref()?;
        if resp.status() != StatusCode::OK {
            return None;
        }
        let headers = resp.headers();
        let digest = header(headers, "docker-content-digest").filter(|d| fill::checkable(d))?;
        if matches!(&lookup.reference, Reference::Digest(asked) if asked != digest) {
            return None;
        }
        let media_type = header(headers, CONTENT_TYPE.as_str())
            .map(accept::media_type)
            .unwrap_or("");
        // Not listed: the registry may have rewritten the manifest (or refuses to answer
        // it), so this answer is not the manifest's own.
        if lookup.kind == Kind::Manifest && !lookup.accept.lists(media_type) {
            return None;
        }
        let length = header(headers, CONTENT_LENGTH.as_str())
            .and_then(|l| l.parse::<u64>().ok())
            .filter(|l| *l <= self.max_object_bytes)?;
        let mut kept = headers.clone();
        kept.remove(DATE);
        Some(Keep {
            digest: digest.to_owned(),
            media_type: media_type.into(),
            length,
            headers: kept,
        })
    }

    /// What a registry write will change, as a guard: the change is made (and published)
    /// when the guard is dropped, that is once the registry has answered, or the request
    /// was abandoned, which may still have reached the registry.
    pub fn write(&self, method: &Method, route: &Route) -> Option<Written<'_>> {
        let Route::Repository { name, kind } = route else {
            return None;
        };
        let repository = name.clone();
        let changes = match (method, kind) {
            (&Method::PUT, RepoKind::Manifest(_)) => vec![Change::Tags { repository }],
            (&Method::DELETE, RepoKind::Manifest(reference)) => {
                let mut c = vec![Change::Tags {
                    repository: repository.clone(),
                }];
                if reference.contains(':') {
                    c.push(Change::Deleted {
                        repository,
                        kind: Kind::Manifest,
                        digest: reference.clone(),
                    });
                }
                c
            }
            (&Method::DELETE, RepoKind::Blob(digest)) => vec![Change::Deleted {
                repository,
                kind: Kind::Blob,
                digest: digest.clone(),
            }],
            _ => return None,
        };
        Some(Written {
            cache: self,
            changes,
        })
    }

    /// Makes a change here: a write this process forwarded, or one another replica
    /// published.
    pub fn apply(&self, change: &Change) {
        match change {
            Change::Tags { repository } => self.generations.tags_changed(repository),
            Change::Deleted {
                repository,
                kind,
                digest,
            } => {
                self.generations.deleted(repository);
                if let Some(store) = &self.store {
                    store.invalidate(&Key::Object {
                        repository: repository.as_str().into(),
                        kind: *kind,
                        digest: digest.as_str().into(),
                    });
                }
            }
        }
    }

    /// Forgets everything: what changed while this replica could not hear the others
    /// (the shared state was out of reach) is not known, so nothing cached is believed.
    pub fn forget_all(&self) {
        self.generations.all_changed();
        if let Some(store) = &self.store {
            store.invalidate_all();
        }
    }

    /// What the cache holds, after the pending evictions.
    pub fn usage(&self) -> Usage {
        match &self.store {
            Some(store) => {
                store.run_pending_tasks();
                Usage {
                    bytes: store.weighted_size(),
                    entries: store.entry_count(),
                }
            }
            None => Usage {
                bytes: 0,
                entries: 0,
            },
        }
    }
}

/// A forwarded write's changes, made when it is dropped.
pub struct Written<'a> {
    cache: &'a Cache,
    changes: Vec<Change>,
}

impl Drop for Written<'_> {
    fn drop(&mut self) {
        for change in &self.changes {
            self.cache.apply(change);
            self.cache.replicas.publish(change);
        }
    }
}

fn tag_key(lookup: &Lookup, tag: &str) -> Key {
    Key::Tag {
        repository: lookup.repository.as_str().into(),
        tag: tag.into(),
        accept: lookup.accept.clone(),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
}
