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

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{CredentialKey, Secret};

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
}

pub struct Throttle {
    entries: moka::sync::Cache<String, Arc<Mutex<Entry>>>,
    /// Keyed hashes of the (account, wrong password) pairs seen within REPEAT_WINDOW.
    recent: moka::sync::Cache<[u8; 32], ()>,
    key: CredentialKey,
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
        }
    }
}

fn account_key(account: &str) -> String {
    format!("a:{account}")
}

fn address_key(ip: IpAddr) -> String {
    format!("i:{ip}")
}

impl Throttle {
    /// How long the caller must wait, if either its account or its address is locked.
    pub fn check(&self, account: &str, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        [account_key(account), address_key(ip)]
            .iter()
            .filter_map(|k| self.entries.get(k))
            .filter_map(|e| {
                let e = e.lock().ok()?;
                e.locked_until.filter(|t| *t > now).map(|t| t - now)
            })
            .max()
    }

    /// Counts a refused login, unless it repeats one refused within REPEAT_WINDOW.
    pub fn failed(&self, account: &str, password: &Secret, ip: IpAddr) {
        if !self.first_time(account, password) {
            return;
        }
        for (key, free) in [
            (account_key(account), FREE_PER_ACCOUNT),
            (address_key(ip), FREE_PER_ADDRESS),
        ] {
            let entry = self.entries.get_with(key, Arc::default);
            if let Ok(mut e) = entry.lock() {
                e.failures += 1;
                if e.failures > free {
                    let k = (e.failures - free - 1).min(16);
                    let lock = Duration::from_secs(1u64 << k).min(MAX_LOCK);
                    e.locked_until = Some(Instant::now() + lock);
                }
            };
        }
    }

    /// A right password clears its account; the address keeps its count, so one known
    /// password does not reset a spray across other accounts.
    pub fn succeeded(&self, account: &str) {
        self.entries.invalidate(&account_key(account));
    }

    /// Whether this account and password were not refused within REPEAT_WINDOW.
    fn first_time(&self, account: &str, password: &Secret) -> bool {
        let tag = self.key.tag(&[account, password.expose()]);
        self.recent.entry(tag).or_insert(()).is_fresh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guess(i: u32) -> Secret {
        Secret::new(format!("guess-{i}"))
    }

    #[test]
    fn locks_after_the_free_failures_and_clears_on_success() {
        let t = Throttle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for i in 0..FREE_PER_ACCOUNT {
            assert!(t.check("bob", ip).is_none());
            t.failed("bob", &guess(i), ip);
        }
        assert!(t.check("bob", ip).is_none(), "five typos lock nothing");
        t.failed("bob", &guess(100), ip);
        let wait = t.check("bob", ip).expect("locked");
        assert!(wait <= Duration::from_secs(1));
        t.failed("bob", &guess(101), ip);
        assert!(
            t.check("bob", ip).unwrap() > Duration::from_secs(1),
            "the lock doubles"
        );
        // Another account from another address is not affected.
        assert!(t.check("alice", "10.0.0.2".parse().unwrap()).is_none());
        t.succeeded("bob");
        assert!(t.check("bob", "10.0.0.3".parse().unwrap()).is_none());
    }

    #[test]
    fn an_address_spraying_many_accounts_is_locked() {
        let t = Throttle::default();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        for i in 0..=FREE_PER_ADDRESS {
            t.failed(&format!("user{i}"), &guess(0), ip);
        }
        assert!(t.check("someone-else", ip).is_some());
        assert!(t
            .check("someone-else", "10.0.0.10".parse().unwrap())
            .is_none());
    }

    #[test]
    fn the_same_wrong_password_again_is_not_another_guess() {
        let t = Throttle::default();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let stale = Secret::new("last-years-password");
        for _ in 0..50 {
            t.failed("ci", &stale, ip);
        }
        assert!(
            t.check("ci", ip).is_none(),
            "a retrying client locks nothing"
        );
        // The same password for another account is a guess there.
        t.failed("cj", &stale, ip);
        // Different passwords are guesses, each counted.
        for i in 0..=FREE_PER_ACCOUNT {
            t.failed("ci", &guess(i), ip);
        }
        assert!(t.check("ci", ip).is_some());
    }
}
