//! Slows password guessing: failures are counted per account and per client address;
//! past a few, each further failure locks that key for a doubling time (1 s, 2 s, 4 s, ...
//! up to 5 minutes) during which token requests get 429 without a bcrypt check. A success
//! clears the account's count. State outlives config reloads.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures allowed before locking starts: a typo or two never locks anyone out.
const FREE_PER_ACCOUNT: u32 = 5;
/// An address may fail more often across accounts (a CI runner with several robots).
const FREE_PER_ADDRESS: u32 = 20;
const MAX_LOCK: Duration = Duration::from_secs(300);
/// Counts are forgotten after this long without a failure.
const MEMORY: Duration = Duration::from_secs(900);

#[derive(Default)]
struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
}

pub struct Throttle {
    entries: moka::sync::Cache<String, Arc<Mutex<Entry>>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            entries: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(MEMORY)
                .build(),
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

    pub fn failed(&self, account: &str, ip: IpAddr) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_free_failures_and_clears_on_success() {
        let t = Throttle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..FREE_PER_ACCOUNT {
            assert!(t.check("bob", ip).is_none());
            t.failed("bob", ip);
        }
        assert!(t.check("bob", ip).is_none(), "five typos lock nothing");
        t.failed("bob", ip);
        let wait = t.check("bob", ip).expect("locked");
        assert!(wait <= Duration::from_secs(1));
        t.failed("bob", ip);
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
            t.failed(&format!("user{i}"), ip);
        }
        assert!(t.check("someone-else", ip).is_some());
        assert!(t
            .check("someone-else", "10.0.0.10".parse().unwrap())
            .is_none());
    }
}
