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
mod tests;
