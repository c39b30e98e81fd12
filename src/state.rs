//! State regate keeps beyond one request, which several replicas must share to agree: the
//! identity providers' token DB (credentials and provider tokens), web sessions, revoked
//! refresh tokens, login-throttle counts. One trait, [`Store`]; [`Local`] keeps it in
//! this process (and, for what must survive a restart, in a file); a Redis store shares
//! it between replicas.
//!
//! Keys are namespaced strings (`tokendb:oidc:alice`, `session:…`); values are bytes the
//! caller serializes (JSON). Nothing on the hot path (token verification, blob streaming)
//! asks a store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::BoxFuture;

mod redis_store;
pub use redis_store::{RedisStore, Settings as RedisSettings, SetupError as RedisSetupError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a store file regate wrote: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// The shared store cannot be reached.
    #[error("the shared store is unavailable: {0}")]
    Unavailable(String),
}

/// Shared state: bytes by key, with an optional time to live.
pub trait Store: Send + Sync {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;

    /// Sets `key`; with `ttl`, it is gone that long after.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Adds `delta` (which may be negative) to the counter at `key`, made at 0 if missing,
    /// and makes it live `ttl` from now; the new value. Atomic: two replicas adding at
    /// once both count. Counters are decimal text, as Redis keeps them.
    fn add<'a>(
        &'a self,
        key: &'a str,
        delta: i64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<i64, StoreError>>;

    /// Adds one to the counter at `key` (see [`Store::add`]); the new count.
    fn incr<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move { self.add(key, 1, ttl).await.map(|n| n.max(0) as u64) })
    }

    /// Sets `key` only if it is not set; whether it was set. Atomic: of replicas racing
    /// for the same key, one wins.
    fn put_new<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The keys that start with `prefix`, in no particular order.
    fn keys<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;

    /// Whether other replicas share this store, so that what one publishes reaches them.
    fn shared(&self) -> bool {
        false
    }

    /// Sends `message` to the replicas listening on `channel` now (nothing is kept for
    /// those that are not). A store no one else reads has no one to tell.
    fn publish<'a>(
        &'a self,
        _channel: &'a str,
        _message: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Listens on `channel`: the messages replicas publish there from now on, until the
    /// receiver ends, when the connection was lost (messages may have been missed; listen
    /// again). `None`: no other replica shares this store.
    fn subscribe<'a>(
        &'a self,
        _channel: &'a str,
    ) -> BoxFuture<'a, Result<Option<Subscription>, StoreError>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// What [`Store::subscribe`] hands over: the messages, in the order they were published.
pub type Subscription = tokio::sync::mpsc::Receiver<Vec<u8>>;

/// A value and when it goes (seconds since the epoch).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    value: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<u64>,
}

/// This process's store: a map, written whole to `file` (when given) after each change,
/// through a new file renamed over the old, so a crash leaves the old or the new one.
/// Right for what one regate keeps: credentials and sessions of its users, not millions of
/// keys.
pub struct Local {
    entries: Mutex<HashMap<String, Entry>>,
    file: Option<PathBuf>,
    /// The second expired entries were last dropped.
    swept: std::sync::atomic::AtomicU64,
}

impl Local {
    /// A store that lives as long as the process.
    pub fn memory() -> Local {
        Local {
            entries: Mutex::new(HashMap::new()),
            file: None,
            swept: Default::default(),
        }
    }

    /// A store kept in `file` (0600, its folder made 0700 if missing), loaded now.
    pub fn file(path: &Path) -> Result<Local, StoreError> {
        let io = |source| StoreError::File {
            path: path.to_owned(),
            source,
        };
        let entries = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.to_owned(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    crate::files::private_dir(dir).map_err(io)?;
                }
                HashMap::new()
            }
            Err(e) => return Err(io(e)),
        };
        Ok(Local {
            entries: Mutex::new(entries),
            file: Some(path.to_owned()),
            swept: Default::default(),
        })
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Runs `change` on the live entries (the expired ones dropped first), then saves.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut HashMap<String, Entry>) -> T,
    ) -> Result<T, StoreError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Local::now();
        // The expired entries go once a second, not at every change: the login throttle
        // changes a few keys per attempt, and a spray must not cost a pass over all of
        // them each time. Until then, an expired entry is treated as absent.
        let swept = self.swept.swap(now, std::sync::atomic::Ordering::Relaxed);
        if swept != now {
            entries.retain(|_, e| live(e, now));
        }
        let out = change(&mut entries);
        if let Some(path) = &self.file {
            let bytes = serde_json::to_vec(&*entries).unwrap_or_default();
            crate::files::write_private_atomically(path, &bytes).map_err(|source| {
                StoreError::File {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        Ok(out)
    }

    fn read<T>(&self, read: impl FnOnce(&HashMap<String, Entry>, u64) -> T) -> T {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        read(&entries, Local::now())
    }
}

/// A counter's value: decimal text (0 when it is not one).
pub fn counter(value: &[u8]) -> i64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn live(entry: &Entry, now: u64) -> bool {
    entry.expires.is_none_or(|t| t > now)
}

impl Store for Local {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        let value = self.read(|entries, now| {
            entries
                .get(key)
                .filter(|e| live(e, now))
                .map(|e| e.value.clone())
        });
        Box::pin(std::future::ready(Ok(value)))
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let expires = ttl.map(|t| Local::now() + t.as_secs().max(1));
        let done = self.change(|entries| {
            entries.insert(key.to_owned(), Entry { value, expires });
        });
        Box::pin(std::future::ready(done))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let done = self.change(|entries| {
            entries.remove(key);
        });
        Box::pin(std::future::ready(done))
    }

    fn add<'a>(
        &'a self,
        key: &'a str,
        delta: i64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<i64, StoreError>> {
        let expires = Some(Local::now() + ttl.as_secs().max(1));
        let counted = self.change(|entries| {
            let entry = entries.entry(key.to_owned()).or_insert(Entry {
                value: b"0".to_vec(),
                expires,
            });
            let was = match live(entry, Local::now()) {
                true => counter(&entry.value),
                false => 0,
            };
            let count = was + delta;
            entry.value = count.to_string().into_bytes();
            entry.expires = expires;
            count
        });
        Box::pin(std::future::ready(counted))
    }

    fn put_new<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let expires = ttl.map(|t| Local::now() + t.as_secs().max(1));
        let done = self.change(|entries| match entries.get(key) {
            Some(e) if live(e, Local::now()) => false,
            _ => {
                entries.insert(key.to_owned(), Entry { value, expires });
                true
            }
        });
        Box::pin(std::future::ready(done))
    }

    fn keys<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        let keys = self.read(|entries, now| {
            entries
                .iter()
                .filter(|(k, e)| k.starts_with(prefix) && live(e, now))
                .map(|(k, _)| k.clone())
                .collect()
        });
        Box::pin(std::future::ready(Ok(keys)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_counters_prefixes_and_expiry() {
        let store = Local::memory();
        store.put("a:1", b"one".to_vec(), None).await.unwrap();
        store.put("a:2", b"two".to_vec(), None).await.unwrap();
        store.put("b:1", b"b".to_vec(), None).await.unwrap();
        assert_eq!(
            store.get("a:1").await.unwrap().as_deref(),
            Some(&b"one"[..])
        );
        let mut keys = store.keys("a:").await.unwrap();
        keys.sort();
        assert_eq!(keys, ["a:1", "a:2"]);
        store.delete("a:1").await.unwrap();
        assert_eq!(store.get("a:1").await.unwrap(), None);
        for n in 1..=3 {
            assert_eq!(store.incr("c", Duration::from_secs(60)).await.unwrap(), n);
        }
        // An entry past its time is gone (set in the past by hand: no waiting).
        store.entries.lock().unwrap().get_mut("c").unwrap().expires = Some(1);
        assert_eq!(store.get("c").await.unwrap(), None);
        assert_eq!(store.incr("c", Duration::from_secs(60)).await.unwrap(), 1);
        assert_eq!(
            store.add("c", -1, Duration::from_secs(60)).await.unwrap(),
            0
        );
        assert_eq!(store.get("c").await.unwrap().as_deref(), Some(&b"0"[..]));
        let ttl = Some(Duration::from_secs(60));
        assert!(store.put_new("n", b"1".to_vec(), ttl).await.unwrap());
        assert!(!store.put_new("n", b"2".to_vec(), ttl).await.unwrap());
        assert_eq!(store.get("n").await.unwrap().as_deref(), Some(&b"1"[..]));
        store.entries.lock().unwrap().get_mut("n").unwrap().expires = Some(1);
        assert!(store.put_new("n", b"3".to_vec(), ttl).await.unwrap());
    }

    #[tokio::test]
    async fn a_file_store_survives_a_restart_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("tokens.json");
        let store = Local::file(&path).unwrap();
        store.put("k", b"v".to_vec(), None).await.unwrap();
        drop(store);
        let again = Local::file(&path).unwrap();
        assert_eq!(again.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        std::fs::write(&path, b"not json").unwrap();
        assert!(matches!(
            Local::file(&path),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
