//! The [`Store`] replicas share: Redis (`shared_state.redis`), through redis-rs's
//! `ConnectionManager`, which keeps one multiplexed connection and reconnects by itself.
//!
//! Redis down must stop nothing but what cannot work without it: every call fails fast
//! with [`StoreError::Unavailable`] (the callers fall back: the login throttle to this
//! replica's own counts), and after a failure Redis is not asked again for a second, so a
//! stopped Redis costs a login one refused connection, not a timeout each. The first call
//! after that second tries again; when it works, sharing resumes. Both changes are logged
//! once and shown in `/metrics` (`regate_shared_state_up`).
//!
//! Every key is stored under `regate:`, so the Redis the registries use for their blob
//! descriptor cache can hold regate's state too without a clash.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use super::{Store, StoreError, Subscription};
use crate::metrics::Metrics;
use crate::BoxFuture;

/// What every key regate keeps in Redis starts with.
const NAMESPACE: &str = "regate:";
/// How long one command (or a connection attempt) may take before Redis counts as down.
const TIMEOUT: Duration = Duration::from_secs(1);
/// After a failure, how long calls fail at once without asking Redis.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often a subscription's connection is pinged: a connection that died without a
/// word (a balancer, a network partition) ends the subscription within this and 1 s.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// Messages received and not yet taken, per subscription.
const BACKLOG: usize = 4096;

/// `shared_state.redis`, validated (`config/shared_state.rs` reads it).
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub db: i64,
    /// Redis 6 ACL user; `None`: the default user.
    pub username: Option<String>,
    /// The password, read at start from this file (never written in the config).
    pub password_file: Option<PathBuf>,
    /// `rediss://`: TLS, checked against `ca_certificate` or the system's roots.
    pub tls: bool,
    pub ca_certificate: Option<PathBuf>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is not here, only its file; still, print the address alone.
        write!(f, "Settings({self})")
    }
}

impl std::fmt::Display for Settings {
    /// `redis://host:port/db`, for logs: no password, whatever the config held.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        write!(f, "{scheme}://{host}:{}/{}", self.port, self.db)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Client(#[source] redis::RedisError),
}

/// Whether Redis answered last time, and when to ask again after it did not.
struct Health {
    up: bool,
    retry_at: Option<Instant>,
}

pub struct RedisStore {
    client: redis::Client,
    manager: tokio::sync::Mutex<Option<ConnectionManager>>,
    health: Mutex<Health>,
    name: String,
    /// Redis's channels are the server's, not a database's: each carries the database
    /// number, so deployments sharing one Redis through different `db`s hear only their own.
    db: i64,
    metrics: Arc<Metrics>,
}

impl RedisStore {
    /// A store on the Redis `settings` name; reads the password file now, connects at the
    /// first call (a Redis that is down at start delays nothing).
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> Result<RedisStore, SetupError> {
        // redis-rs asks rustls for the process's default provider: ring, as everywhere else.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| SetupError::File {
                path: path.clone(),
                source,
            })
        };
        let mut redis = RedisConnectionInfo::default().set_db(settings.db);
        if let Some(user) = &settings.username {
            redis = redis.set_username(user);
        }
        if let Some(path) = &settings.password_file {
            let bytes = read(path)?;
            let text = String::from_utf8_lossy(&bytes);
            // A file ends with a newline more often than a password does.
            redis = redis.set_password(text.trim_end_matches(['\n', '\r']));
        }
        let addr = match settings.tls {
            false => ConnectionAddr::Tcp(settings.host.clone(), settings.port),
            true => ConnectionAddr::TcpTls {
                host: settings.host.clone(),
                port: settings.port,
                insecure: false,
                tls_params: None,
            },
        };
        let info = addr
            .into_connection_info()
            .map_err(SetupError::Client)?
            .set_redis_settings(redis);
        let client = match (&settings.ca_certificate, settings.tls) {
            (Some(ca), true) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(read(ca)?),
                },
            ),
            _ => redis::Client::open(info),
        }
        .map_err(SetupError::Client)?;
        metrics.shared_state_enabled.store(true, Relaxed);
        Ok(RedisStore {
            client,
            manager: tokio::sync::Mutex::new(None),
            health: Mutex::new(Health {
                up: true,
                retry_at: None,
            }),
            name: settings.to_string(),
            db: settings.db,
            metrics,
        })
    }

    /// The connection, made at the first call; `Err` at once while Redis is held down.
    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let held_down =
            || StoreError::Unavailable(format!("{} did not answer a moment ago", self.name));
        // Whether this call was picked to try again after a failure.
        let picked = {
            let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
            match health.retry_at {
                None => false,
                Some(at) if Instant::now() < at => return Err(held_down()),
                // This call is the one that tries; the others keep failing fast meanwhile.
                Some(_) => {
                    health.retry_at = Some(Instant::now() + RETRY_AFTER);
                    true
                }
            }
        };
        let mut slot = self.manager.lock().await;
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        // Queued behind a first connection attempt that failed: fail as it did, rather
        // than try again at once.
        let down = self.health.lock().is_ok_and(|h| !h.up);
        if down && !picked {
            return Err(held_down());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(TIMEOUT);
        let made = tokio::time::timeout(
            3 * TIMEOUT,
            self.client.get_connection_manager_with_config(config),
        )
        .await;
        match made {
            Ok(Ok(manager)) => {
                *slot = Some(manager.clone());
                Ok(manager)
            }
            Ok(Err(e)) => Err(self.failed(&e.to_string())),
            Err(_) => Err(self.failed("no connection within 3 s")),
        }
    }

    /// Records a failure: logged when Redis goes from up to down.
    fn failed(&self, why: &str) -> StoreError {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health.retry_at = Some(Instant::now() + RETRY_AFTER);
        self.metrics.shared_state_errors.fetch_add(1, Relaxed);
        if health.up {
            health.up = false;
            self.metrics.shared_state_up.store(0, Relaxed);
            tracing::warn!(
                redis = %self.name,
                "the shared state cannot be reached ({why}): this replica counts logins on its own and keeps serving; it tries again every second"
            );
        }
        StoreError::Unavailable(format!("{}: {why}", self.name))
    }

    fn worked(&self) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health.retry_at = None;
        if !health.up {
            health.up = true;
            tracing::warn!(redis = %self.name, "the shared state answers again: sharing resumes");
        }
        self.metrics.shared_state_up.store(1, Relaxed);
    }

    /// Runs one command with the connection, under [`TIMEOUT`].
    async fn run<T, F, Fut>(&self, command: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        match tokio::time::timeout(TIMEOUT, command(conn)).await {
            Ok(Ok(value)) => {
                self.worked();
                Ok(value)
            }
            Ok(Err(e)) => Err(self.failed(&e.to_string())),
            Err(_) => Err(self.failed("no answer within 1 s")),
        }
    }
}

fn key(k: &str) -> String {
    format!("{NAMESPACE}{k}")
}

impl RedisStore {
    fn channel(&self, name: &str) -> String {
        format!("{NAMESPACE}{}:{name}", self.db)
    }

    /// A connection of its own subscribed to `channel` (a subscribed connection can do
    /// nothing else), read by a task that hands each message over, pings Redis every
    /// [`KEEPALIVE`], and ends when Redis stops answering or the receiver is dropped.
    async fn listen(&self, channel: String) -> Result<Subscription, StoreError> {
        let connected = tokio::time::timeout(3 * TIMEOUT, async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => return Err(self.failed(&e.to_string())),
            Err(_) => return Err(self.failed("no subscription within 3 s")),
        };
        self.worked();
        let (mut sink, mut messages) = pubsub.split();
        let (tx, rx) = tokio::sync::mpsc::channel(BACKLOG);
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut ping = tokio::time::interval(KEEPALIVE);
            ping.tick().await;
            loop {
                tokio::select! {
                    message = messages.next() => {
                        let Some(message) = message else { return };
                        if tx.send(message.get_payload_bytes().to_vec()).await.is_err() {
                            return;
                        }
                    }
                    _ = ping.tick() => {
                        let answer = tokio::time::timeout(TIMEOUT, sink.ping::<redis::Value>()).await;
                        if !matches!(answer, Ok(Ok(_))) {
                            return;
                        }
                    }
                    () = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }
}

/// `prefix` with the glob characters of SCAN's MATCH escaped.
fn pattern(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + NAMESPACE.len() + 1);
    for c in key(prefix).chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('*');
    out
}

fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

/// INCRBY and a new time to live, in one step.
const ADD: &str = "local n = redis.call('INCRBY', KEYS[1], ARGV[1]) \
                   redis.call('PEXPIRE', KEYS[1], ARGV[2]) return n";

impl Store for RedisStore {
    fn get<'a>(&'a self, k: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(self.run(move |mut c| async move { c.get(key(k)).await }))
    }

    fn put<'a>(
        &'a self,
        k: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.run(move |mut c| async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key(k)).arg(value);
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(millis(ttl));
            }
            cmd.query_async::<()>(&mut c).await
        }))
    }

    fn delete<'a>(&'a self, k: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.run(move |mut c| async move { c.del::<_, ()>(key(k)).await }))
    }

    fn add<'a>(
        &'a self,
        k: &'a str,
        delta: i64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(self.run(move |mut c| async move {
            redis::cmd("EVAL")
                .arg(ADD)
                .arg(1)
                .arg(key(k))
                .arg(delta)
                .arg(millis(ttl))
                .query_async::<i64>(&mut c)
                .await
        }))
    }

    fn put_new<'a>(
        &'a self,
        k: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.run(move |mut c| async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key(k)).arg(value).arg("NX");
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(millis(ttl));
            }
            // "OK" when set, nil when the key was there.
            let set: Option<String> = cmd.query_async(&mut c).await?;
            Ok(set.is_some())
        }))
    }

    fn keys<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(self.run(move |mut c| async move {
            let mut out = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern(prefix))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut c)
                    .await?;
                out.extend(
                    batch
                        .into_iter()
                        .filter_map(|k| k.strip_prefix(NAMESPACE).map(str::to_owned)),
                );
                if next == 0 {
                    return Ok(out);
                }
                cursor = next;
            }
        }))
    }

    fn shared(&self) -> bool {
        true
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        message: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let channel = self.channel(channel);
        Box::pin(
            self.run(move |mut c| async move { c.publish::<_, _, ()>(channel, message).await }),
        )
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Option<Subscription>, StoreError>> {
        Box::pin(async move { self.listen(self.channel(channel)).await.map(Some) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_match_pattern_escapes_globs_and_logs_name_no_password() {
        assert_eq!(pattern("cred:a*b?:"), "regate:cred:a\\*b\\?:*");
        let s = Settings {
            host: "::1".into(),
            port: 6380,
            db: 2,
            username: None,
            password_file: Some("/run/secrets/redis".into()),
            tls: true,
            ca_certificate: None,
        };
        assert_eq!(s.to_string(), "rediss://[::1]:6380/2");
        assert_eq!(format!("{s:?}"), "Settings(rediss://[::1]:6380/2)");
    }
}
