//! Slows password guessing: failures are counted per account and per client address;
//! past a few, each further failure locks that key for a doubling time (1 s, 2 s, 4 s, ...
//! up to 5 minutes) during which token requests get 429 without a bcrypt check. A success
//! clears the account's count. State outlives config reloads.
//!
//! A guess is a *different* wrong password: the same one again within [`REPEAT_WINDOW`]
//! counts once. Clients resend a refused credential on their own (containerd tries the
//! OAuth2 POST, then the GET with the same password; a CI job with a stale password
//! retries every few seconds), and that must not lock the account's owner out. Repeats are
//! recognised by a keyed hash of account and password; no password is kept.
//!
//! An attempt is counted when it starts, not when bcrypt has answered: [`Throttle::begin`]
//! reserves it against both keys and the [`Attempt`] it returns is settled as a success or
//! a failure (or released, when it ends without a verdict). Otherwise concurrent guesses
//! all pass the check before the first failure is counted: 300 at once from one address
//! all reached bcrypt although the address is allowed 20.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{CredentialKey, Secret};
use crate::state::Store;

mod shared;

/// Failures allowed before locking starts: a typo or two never locks anyone out.
const FREE_PER_ACCOUNT: u32 = 5;
/// An address may fail more often across accounts (a CI runner with several robots).
const FREE_PER_ADDRESS: u32 = 20;
const MAX_LOCK: Duration = Duration::from_secs(300);
/// Counts are forgotten after this long without a failure.
const MEMORY: Duration = Duration::from_secs(900);
/// The same wrong password for the same account counts once in this long.
const REPEAT_WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
    /// Attempts begun and not yet settled.
    in_flight: u32,
}

impl Entry {
    /// How long an attempt must wait, if it may not start now: a lock, or as many
    /// attempts in flight as could, all failing, reach the lock (the next one waits for
    /// their verdicts). Past the free failures one attempt at a time goes through.
    fn wait(&self, free: u32, now: Instant) -> Option<Duration> {
        if let Some(t) = self.locked_until.filter(|t| *t > now) {
            return Some(t - now);
        }
        let room = self.in_flight == 0 || self.failures + self.in_flight <= free;
        (!room).then_some(IN_FLIGHT_WAIT)
    }

    fn fail(&mut self, free: u32) {
        self.failures += 1;
        if let Some(lock) = lock_for(self.failures, free) {
            self.locked_until = Some(Instant::now() + lock);
        }
    }
}

/// How long `failures` lock a key allowed `free` of them: past the free ones, 1 s, then
/// doubling up to MAX_LOCK. One rule for this replica's counts and the shared ones.
fn lock_for(failures: u32, free: u32) -> Option<Duration> {
    (failures > free).then(|| {
        let k = (failures - free - 1).min(16);
        Duration::from_secs(1u64 << k).min(MAX_LOCK)
    })
}

/// What a caller refused for attempts in flight is told to wait: about one bcrypt check.
const IN_FLIGHT_WAIT: Duration = Duration::from_millis(500);

pub struct Throttle {
    entries: moka::sync::Cache<String, Arc<Mutex<Entry>>>,
    /// Keyed hashes of the (account, wrong password) pairs seen within REPEAT_WINDOW.
    recent: moka::sync::Cache<[u8; 32], ()>,
    key: CredentialKey,
    /// The counts replicas share; `None`: this replica's alone. While the shared state is
    /// down, attempts are counted here, and locks counted here hold either way.
    shared: Option<shared::Shared>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            entries: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(MEMORY)
                .build(),
            recent: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(REPEAT_WINDOW)
                .build(),
            key: CredentialKey::generate(),
            shared: None,
        }
    }
}

fn account_key(account: &str) -> String {
    format!("a:{account}")
}

fn address_key(ip: IpAddr) -> String {
    format!("i:{ip}")
}

/// A login attempt counted against its account and address until it is settled.
/// Dropped unsettled (the client went away, the directory could not answer, bcrypt was
/// too busy), it counts nothing.
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    account: String,
    ip: IpAddr,
    /// The account's entry and the address's; `None` for a repeat of a password refused
    /// within REPEAT_WINDOW, which cannot add a failure and so reserves nothing.
    reserved: Option<[(Arc<Mutex<Entry>>, u32); 2]>,
    /// Counted in the shared state instead.
    shared: Option<shared::Reservation>,
}

impl Throttle {
    /// A throttle whose counts live in `store`, shared with the replicas that use it.
    pub fn shared(store: Arc<dyn Store>, metrics: Arc<crate::metrics::Metrics>) -> Throttle {
        Throttle {
            shared: Some(shared::Shared::new(store, metrics)),
            ..Throttle::default()
        }
    }

    /// Starts a login attempt for `account` with `password` from `ip`, or says how long
    /// to wait: the account or the address is locked, or has as many attempts in flight as
    /// it may.
    ///
    /// `known`: the credential was verified lately (a cache hit, no bcrypt): it is no
    /// guess and reserves nothing, so a client sending the right password on many
    /// requests at once is never held back; locks still apply.
    ///
    /// With a shared state, the attempt is counted there; when it cannot be reached, here.
    pub async fn begin(
        &self,
        account: &str,
        password: &Secret,
        ip: IpAddr,
        known: bool,
    ) -> Result<Attempt<'_>, Duration> {
        let Some(shared) = &self.shared else {
            return self.begin_local(account, password, ip, known);
        };
        // A lock counted here during an outage of the shared state still holds.
        if let Some(wait) = self.local_lock(account, ip) {
            return Err(wait);
        }
        match shared.begin(account, password, ip, known).await {
            Ok(Ok(reservation)) => {
                shared.note(true);
                Ok(Attempt {
                    throttle: self,
                    account: account.to_owned(),
                    ip,
                    reserved: None,
                    shared: Some(reservation),
                })
            }
            Ok(Err(wait)) => {
                shared.note(true);
                Err(wait)
            }
            Err(_) => {
                shared.note(false);
                shared
                    .metrics
                    .throttle_local_fallbacks
                    .fetch_add(1, Relaxed);
                self.begin_local(account, password, ip, known)
            }
        }
    }

    /// How long this replica's own counts lock the account or the address.
    fn local_lock(&self, account: &str, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        [account_key(account), address_key(ip)]
            .iter()
            .filter_map(|k| self.entries.get(k))
            .filter_map(|e| e.lock().ok().and_then(|e| e.locked_until))
            .filter(|t| *t > now)
            .map(|t| t - now)
            .max()
    }

    /// [`Throttle::begin`] with this replica's counts only.
    pub fn begin_local(
        &self,
        account: &str,
        password: &Secret,
        ip: IpAddr,
        known: bool,
    ) -> Result<Attempt<'_>, Duration> {
        let now = Instant::now();
        let keys = [
            (account_key(account), FREE_PER_ACCOUNT),
            (address_key(ip), FREE_PER_ADDRESS),
        ];
        let entries = keys.map(|(k, free)| (self.entries.get_with(k, Arc::default), free));
        // Both entries are looked at and reserved under their locks, account first, so
        // two attempts cannot both take the last place.
        let Ok(mut account_entry) = entries[0].0.lock() else {
            return Err(IN_FLIGHT_WAIT);
        };
        let Ok(mut address_entry) = entries[1].0.lock() else {
            return Err(IN_FLIGHT_WAIT);
        };
        let locked = [
            account_entry
                .locked_until
                .filter(|t| *t > now)
                .map(|t| t - now),
            address_entry
                .locked_until
                .filter(|t| *t > now)
                .map(|t| t - now),
        ];
        if let Some(wait) = locked.into_iter().flatten().max() {
            return Err(wait);
        }
        let repeat = known || self.recent.contains_key(&self.tag(account, password));
        if repeat {
            return Ok(Attempt {
                throttle: self,
                account: account.to_owned(),
                ip,
                reserved: None,
                shared: None,
            });
        }
        let wait = [
            account_entry.wait(FREE_PER_ACCOUNT, now),
            address_entry.wait(FREE_PER_ADDRESS, now),
        ];
        if let Some(wait) = wait.into_iter().flatten().max() {
            return Err(wait);
        }
        account_entry.in_flight += 1;
        address_entry.in_flight += 1;
        drop((account_entry, address_entry));
        Ok(Attempt {
            throttle: self,
            account: account.to_owned(),
            ip,
            reserved: Some(entries),
            shared: None,
        })
    }

    fn tag(&self, account: &str, password: &Secret) -> [u8; 32] {
        self.key.tag(&[account, password.expose()])
    }
}

impl Attempt<'_> {
    /// A right password clears its account; the address keeps its count, so one known
    /// password does not reset a spray across other accounts.
    pub async fn succeeded(mut self) {
        self.release();
        self.throttle
            .entries
            .invalidate(&account_key(&self.account));
        if let Some(reservation) = self.shared.take() {
            if let Err(e) = reservation.succeeded().await {
                tracing::warn!(
                    "login throttle: a right password could not clear the shared count: {e}"
                );
            }
        }
    }

    /// A refused login: counted against the account and the address, unless it repeats
    /// one refused within REPEAT_WINDOW.
    pub async fn failed(mut self, password: &Secret) {
        if let Some(reservation) = self.shared.take() {
            if reservation.failed().await.is_ok() {
                return;
            }
            // The shared state went away meanwhile: counted here, not lost.
            if let Ok(attempt) = self
                .throttle
                .begin_local(&self.account, password, self.ip, false)
            {
                attempt.fail_here(password);
            }
            return;
        }
        self.fail_here(password);
    }

    fn fail_here(mut self, password: &Secret) {
        let tag = self.throttle.tag(&self.account, password);
        let first_time = self.throttle.recent.entry(tag).or_insert(()).is_fresh();
        if let Some(reserved) = self.reserved.take() {
            for (entry, free) in reserved {
                if let Ok(mut e) = entry.lock() {
                    e.in_flight = e.in_flight.saturating_sub(1);
                    if first_time {
                        e.fail(free);
                    }
                }
            }
        }
    }

    fn release(&mut self) {
        for (entry, _) in self.reserved.take().into_iter().flatten() {
            if let Ok(mut e) = entry.lock() {
                e.in_flight = e.in_flight.saturating_sub(1);
            }
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guess(i: u32) -> Secret {
        Secret::new(format!("guess-{i}"))
    }

    /// One attempt, refused.
    fn fail(t: &Throttle, account: &str, password: &Secret, ip: IpAddr) {
        t.begin_local(account, password, ip, false)
            .expect("not locked")
            .fail_here(password);
    }

    #[tokio::test]
    async fn locks_after_the_free_failures_and_clears_on_success() {
        let t = Throttle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for i in 0..FREE_PER_ACCOUNT {
            fail(&t, "bob", &guess(i), ip);
        }
        t.begin_local("bob", &guess(99), ip, false)
            .expect("five typos lock nothing");
        fail(&t, "bob", &guess(100), ip);
        let wait = t
            .begin_local("bob", &guess(1000), ip, false)
            .err()
            .expect("locked");
        assert!(wait <= Duration::from_secs(1));
        // Another account from another address is not affected.
        assert!(t
            .begin_local("alice", &guess(0), "10.0.0.2".parse().unwrap(), false)
            .is_ok());
        t.entries
            .get(&account_key("bob"))
            .unwrap()
            .lock()
            .unwrap()
            .locked_until = None;
        fail(&t, "bob", &guess(101), ip);
        assert!(
            t.begin_local("bob", &guess(1000), ip, false).err().unwrap() > Duration::from_secs(1),
            "the lock doubles"
        );
        t.entries
            .get(&account_key("bob"))
            .unwrap()
            .lock()
            .unwrap()
            .locked_until = None;
        t.begin_local("bob", &guess(7), "10.0.0.3".parse().unwrap(), false)
            .unwrap()
            .succeeded()
            .await;
        assert!(t
            .begin_local("bob", &guess(8), "10.0.0.3".parse().unwrap(), false)
            .is_ok());
    }

    #[test]
    fn an_address_spraying_many_accounts_is_locked() {
        let t = Throttle::default();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        for i in 0..=FREE_PER_ADDRESS {
            fail(&t, &format!("user{i}"), &guess(0), ip);
        }
        assert!(t.begin_local("someone-else", &guess(1), ip, false).is_err());
        assert!(t
            .begin_local(
                "someone-else",
                &guess(1),
                "10.0.0.10".parse().unwrap(),
                false
            )
            .is_ok());
    }

    #[test]
    fn the_same_wrong_password_again_is_not_another_guess() {
        let t = Throttle::default();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let stale = Secret::new("last-years-password");
        for _ in 0..50 {
            fail(&t, "ci", &stale, ip);
        }
        assert!(
            t.begin_local("ci", &guess(0), ip, false).is_ok(),
            "a retrying client locks nothing"
        );
        // The same password for another account is a guess there.
        fail(&t, "cj", &stale, ip);
        // Different passwords are guesses, each counted (the stale one counted once).
        for i in 0..FREE_PER_ACCOUNT {
            fail(&t, "ci", &guess(i), ip);
        }
        assert!(t.begin_local("ci", &guess(1000), ip, false).is_err());
    }

    /// 300 guesses begun at once from one address, before any verdict: only as many go
    /// through as could fail before the address locks (20 free + the one that locks it);
    /// the rest are told to wait. As each is settled, the count holds.
    #[test]
    fn concurrent_guesses_are_counted_when_they_start() {
        let t = Throttle::default();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let passwords: Vec<Secret> = (0..300).map(guess).collect();
        let started: Vec<Attempt<'_>> = (0..300)
            .filter_map(|i| {
                t.begin_local(&format!("user{i}"), &passwords[i as usize], ip, false)
                    .ok()
            })
            .collect();
        assert_eq!(started.len() as u32, FREE_PER_ADDRESS + 1);
        for (i, attempt) in started.into_iter().enumerate() {
            attempt.fail_here(&passwords[i]);
        }
        let wait = t
            .begin_local("late", &guess(999), ip, false)
            .err()
            .expect("locked now");
        assert!(
            wait > IN_FLIGHT_WAIT,
            "the lock itself, not a wait for verdicts"
        );
        // One account: at most its 5 free + 1 at once.
        let t = Throttle::default();
        let at_once: Vec<_> = (0..50)
            .filter_map(|i| {
                t.begin_local("bob", &passwords[i], "10.0.0.8".parse().unwrap(), false)
                    .ok()
            })
            .collect();
        assert_eq!(at_once.len() as u32, FREE_PER_ACCOUNT + 1);
    }

    #[test]
    fn an_attempt_without_a_verdict_counts_nothing() {
        let t = Throttle::default();
        let ip: IpAddr = "10.0.0.11".parse().unwrap();
        for i in 0..100 {
            // Begun and dropped: the client went away, the directory did not answer.
            let attempt = t
                .begin_local("bob", &guess(i), ip, false)
                .expect("nothing counted");
            drop(attempt);
        }
        let e = t.entries.get(&account_key("bob")).unwrap();
        let e = e.lock().unwrap();
        assert_eq!((e.failures, e.in_flight), (0, 0));
    }

    /// Two replicas sharing one store (a `Local` stands in for Redis: same trait).
    fn replicas() -> (Throttle, Throttle, Arc<crate::metrics::Metrics>) {
        let store: Arc<dyn Store> = Arc::new(crate::state::Local::memory());
        let metrics = Arc::new(crate::metrics::Metrics::default());
        (
            Throttle::shared(store.clone(), metrics.clone()),
            Throttle::shared(store, metrics.clone()),
            metrics,
        )
    }

    async fn fail_shared(t: &Throttle, account: &str, password: &Secret, ip: IpAddr) {
        t.begin(account, password, ip, false)
            .await
            .expect("not locked")
            .failed(password)
            .await;
    }

    #[tokio::test]
    async fn replicas_sharing_a_store_count_as_one() {
        let (a, b, _) = replicas();
        let ip: IpAddr = "10.1.0.1".parse().unwrap();
        // Different wrong passwords spread over both: the sixth locks on both.
        for i in 0..=FREE_PER_ACCOUNT {
            let t = if i % 2 == 0 { &a } else { &b };
            fail_shared(t, "bob", &guess(i), ip).await;
        }
        assert!(a.begin("bob", &guess(50), ip, false).await.is_err());
        assert!(b.begin("bob", &guess(51), ip, false).await.is_err());
        // The same stale password on both counts once; a right one clears both.
        let (c, d, _) = replicas();
        let stale = Secret::new("last-years-password");
        for _ in 0..3 {
            fail_shared(&c, "ci", &stale, ip).await;
            fail_shared(&d, "ci", &stale, ip).await;
        }
        // The stale password counted once: four more guesses leave one free.
        for i in 0..FREE_PER_ACCOUNT - 1 {
            fail_shared(&c, "ci", &guess(i), ip).await;
        }
        d.begin("ci", &guess(99), ip, false)
            .await
            .expect("one free failure left")
            .succeeded()
            .await;
        // Cleared everywhere: five free failures again on the other replica.
        for i in 10..10 + FREE_PER_ACCOUNT {
            fail_shared(&c, "ci", &guess(i), ip).await;
        }
        assert!(c.begin("ci", &guess(100), ip, false).await.is_ok());
    }

    #[tokio::test]
    async fn concurrent_guesses_on_two_replicas_are_bounded_together() {
        let (a, b, _) = replicas();
        let ip: IpAddr = "10.1.0.7".parse().unwrap();
        let passwords: Vec<Secret> = (0..100).map(guess).collect();
        let mut started = Vec::new();
        for (i, p) in passwords.iter().enumerate() {
            let t = if i % 2 == 0 { &a } else { &b };
            if let Ok(attempt) = t.begin(&format!("user{i}"), p, ip, false).await {
                started.push(attempt);
            }
        }
        assert_eq!(started.len() as u32, FREE_PER_ADDRESS + 1);
    }

    /// A store that is always down.
    struct Down;
    impl Store for Down {
        fn get<'a>(
            &'a self,
            _: &'a str,
        ) -> crate::auth::backend::BoxFuture<'a, Result<Option<Vec<u8>>, crate::state::StoreError>>
        {
            Box::pin(async { Err(crate::state::StoreError::Unavailable("down".into())) })
        }
        fn put<'a>(
            &'a self,
            _: &'a str,
            _: Vec<u8>,
            _: Option<Duration>,
        ) -> crate::auth::backend::BoxFuture<'a, Result<(), crate::state::StoreError>> {
            Box::pin(async { Err(crate::state::StoreError::Unavailable("down".into())) })
        }
        fn delete<'a>(
            &'a self,
            _: &'a str,
        ) -> crate::auth::backend::BoxFuture<'a, Result<(), crate::state::StoreError>> {
            Box::pin(async { Err(crate::state::StoreError::Unavailable("down".into())) })
        }
        fn add<'a>(
            &'a self,
            _: &'a str,
            _: i64,
            _: Duration,
        ) -> crate::auth::backend::BoxFuture<'a, Result<i64, crate::state::StoreError>> {
            Box::pin(async { Err(crate::state::StoreError::Unavailable("down".into())) })
        }
        fn put_new<'a>(
            &'a self,
            _: &'a str,
            _: Vec<u8>,
            _: Option<Duration>,
        ) -> crate::auth::backend::BoxFuture<'a, Result<bool, crate::state::StoreError>> {
            Box::pin(async { Err(crate::state::StoreError::Unavailable("down".into())) })
        }
        fn keys<'a>(
            &'a self,
            _: &'a str,
        ) -> crate::auth::backend::BoxFuture<'a, Result<Vec<String>, crate::state::StoreError>>
        {
            Box::pin(async { Err(crate::state::StoreError::Unavailable("down".into())) })
        }
    }

    #[tokio::test]
    async fn with_the_shared_state_down_this_replica_counts_alone() {
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let t = Throttle::shared(Arc::new(Down), metrics.clone());
        let ip: IpAddr = "10.1.0.9".parse().unwrap();
        for i in 0..=FREE_PER_ACCOUNT {
            fail_shared(&t, "bob", &guess(i), ip).await;
        }
        assert!(
            t.begin("bob", &guess(99), ip, false).await.is_err(),
            "locked here"
        );
        assert_eq!(
            metrics.throttle_local_fallbacks.load(Relaxed),
            u64::from(FREE_PER_ACCOUNT) + 1
        );
    }
}
