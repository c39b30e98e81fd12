//! The login throttle's counts in the shared state, so replicas judge as one: a lock on A
//! holds on B, a right password on B clears A, and the same stale password sent to all of
//! them counts once. The same rules as this replica's own counts (throttle.rs), kept as
//! counters with expiry:
//!
//! | key | what | lives |
//! |---|---|---|
//! | `throttle:fail:{a,i}:K` | failures of an account (hex) or address | MEMORY from the last failure |
//! | `throttle:lock:{a,i}:K` | locked until (Unix ms) | the lock |
//! | `throttle:flight:{a,i}:K` | attempts begun, not settled | a minute from the last change (a replica killed mid-attempt leaks none for longer) |
//! | `throttle:seen:TAG` | a keyed hash of a refused (account, password) | REPEAT_WINDOW |
//! | `throttle:key` | the key of those hashes, made by the first replica | for good |
//!
//! A reservation is an atomic increment, then a look at the failures: of attempts racing on
//! several replicas each gets its own count, so no more start than could fail before the
//! lock, as in one process.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{lock_for, FREE_PER_ACCOUNT, FREE_PER_ADDRESS, IN_FLIGHT_WAIT, MEMORY, REPEAT_WINDOW};
use crate::auth::{CredentialKey, Secret};
use crate::state::{counter, Store, StoreError};

/// How long an unsettled reservation holds.
const FLIGHT_TTL: Duration = Duration::from_secs(60);
/// How long the hash key read from the store is used before it is read again (a Redis
/// that lost its data gets a new one, and every replica follows within this).
const KEY_TTL: Duration = Duration::from_secs(60);
const KEY: &str = "throttle:key";

pub(super) struct Shared {
    store: Arc<dyn Store>,
    pub(super) metrics: Arc<crate::metrics::Metrics>,
    key: Mutex<Option<(Arc<CredentialKey>, Instant)>>,
    /// This replica is counting on its own (the store failed); logged when it changes.
    falling_back: AtomicBool,
}

/// The account's and the address's keys, with how many failures each may have free.
pub(super) struct Keys {
    names: [(String, u32); 2],
}

impl Keys {
    fn new(account: &str, ip: IpAddr) -> Keys {
        let account = data_encoding::HEXLOWER.encode(account.as_bytes());
        Keys {
            names: [
                (format!("a:{account}"), FREE_PER_ACCOUNT),
                (format!("i:{ip}"), FREE_PER_ADDRESS),
            ],
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An attempt reserved in the store: settled there, or released when dropped.
pub(super) struct Reservation {
    store: Arc<dyn Store>,
    keys: Keys,
    /// `None`: a repeat or a known password, which reserves nothing.
    reserved: bool,
    tag: String,
}

impl Shared {
    pub(super) fn new(store: Arc<dyn Store>, metrics: Arc<crate::metrics::Metrics>) -> Shared {
        Shared {
            store,
            metrics,
            key: Mutex::new(None),
            falling_back: AtomicBool::new(false),
        }
    }

    /// The shared hash key, made by whichever replica asks first.
    async fn key(&self) -> Result<Arc<CredentialKey>, StoreError> {
        if let Some((key, at)) = self.key.lock().ok().and_then(|k| k.clone()) {
            if at.elapsed() < KEY_TTL {
                return Ok(key);
            }
        }
        let mut bytes = [0u8; 32];
        {
            use ring::rand::SecureRandom;
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| StoreError::Unavailable("no randomness".into()))?;
        }
        self.store.put_new(KEY, bytes.to_vec(), None).await?;
        let stored = self.store.get(KEY).await?.unwrap_or(bytes.to_vec());
        let key = Arc::new(CredentialKey::from_bytes(&stored));
        if let Ok(mut slot) = self.key.lock() {
            *slot = Some((key.clone(), Instant::now()));
        }
        Ok(key)
    }

    /// Whether the store answered; the change is logged once.
    pub(super) fn note(&self, worked: bool) -> bool {
        let was = self.falling_back.swap(!worked, Relaxed);
        if was && worked {
            tracing::warn!("login throttle: counting with the other replicas again");
        } else if !was && !worked {
            tracing::warn!("login throttle: the shared state is down; this replica counts logins on its own until it is back");
        }
        worked
    }

    /// Starts an attempt (see `Throttle::begin`): `Ok(Err(wait))` when it must wait,
    /// `Err` when the store cannot say.
    pub(super) async fn begin(
        &self,
        account: &str,
        password: &Secret,
        ip: IpAddr,
        known: bool,
    ) -> Result<Result<Reservation, Duration>, StoreError> {
        let keys = Keys::new(account, ip);
        let now = now_ms();
        let mut wait = Duration::ZERO;
        for (name, _) in &keys.names {
            let until = self.store.get(&format!("throttle:lock:{name}")).await?;
            let until = until.map_or(0, |v| counter(&v).max(0) as u64);
            wait = wait.max(Duration::from_millis(until.saturating_sub(now)));
        }
        if !wait.is_zero() {
            return Ok(Err(wait));
        }
        let key = self.key().await?;
        let tag = data_encoding::HEXLOWER.encode(&key.tag(&[account, password.expose()]));
        let repeat = known
            || self
                .store
                .get(&format!("throttle:seen:{tag}"))
                .await?
                .is_some();
        let mut reservation = Reservation {
            store: self.store.clone(),
            keys,
            reserved: false,
            tag,
        };
        if repeat {
            return Ok(Ok(reservation));
        }
        let mut room = true;
        let mut taken = 0;
        for (name, free) in &reservation.keys.names {
            let flight = format!("throttle:flight:{name}");
            let n = self.store.add(&flight, 1, FLIGHT_TTL).await?;
            taken += 1;
            let failures = match self.store.get(&format!("throttle:fail:{name}")).await {
                Ok(v) => v.map_or(0, |v| counter(&v)),
                Err(e) => {
                    reservation.release_first(taken).await;
                    return Err(e);
                }
            };
            room &= n <= 1 || failures + n - 1 <= i64::from(*free);
        }
        if !room {
            reservation.release_first(taken).await;
            return Ok(Err(IN_FLIGHT_WAIT));
        }
        reservation.reserved = true;
        Ok(Ok(reservation))
    }
}

impl Reservation {
    async fn release_first(&self, n: usize) {
        for (name, _) in self.keys.names.iter().take(n) {
            let _ = self
                .store
                .add(&format!("throttle:flight:{name}"), -1, FLIGHT_TTL)
                .await;
        }
    }

    async fn release(&mut self) {
        if std::mem::take(&mut self.reserved) {
            self.release_first(self.keys.names.len()).await;
        }
    }

    /// A right password: the account's count and lock go, everywhere.
    pub(super) async fn succeeded(mut self) -> Result<(), StoreError> {
        self.release().await;
        let (account, _) = &self.keys.names[0];
        self.store
            .delete(&format!("throttle:fail:{account}"))
            .await?;
        self.store.delete(&format!("throttle:lock:{account}")).await
    }

    /// A refused password: counted unless some replica saw it within REPEAT_WINDOW.
    pub(super) async fn failed(mut self) -> Result<(), StoreError> {
        self.release().await;
        let first_time = self
            .store
            .put_new(
                &format!("throttle:seen:{}", self.tag),
                b"1".to_vec(),
                Some(REPEAT_WINDOW),
            )
            .await?;
        if !first_time {
            return Ok(());
        }
        for (name, free) in &self.keys.names {
            let failures = self
                .store
                .add(&format!("throttle:fail:{name}"), 1, MEMORY)
                .await?;
            if let Some(lock) = lock_for(failures.max(0) as u32, *free) {
                let until = now_ms() + lock.as_millis() as u64;
                self.store
                    .put(
                        &format!("throttle:lock:{name}"),
                        until.to_string().into_bytes(),
                        Some(lock),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Dropped unsettled (the client went away): its places are given back.
        if !self.reserved {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let names: Vec<String> = self.keys.names.iter().map(|(n, _)| n.clone()).collect();
        handle.spawn(async move {
            for name in names {
                let _ = store
                    .add(&format!("throttle:flight:{name}"), -1, FLIGHT_TTL)
                    .await;
            }
        });
    }
}
