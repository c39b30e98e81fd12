//! How many connections regate holds open at once (`server.max_connections`), and the
//! file-descriptor limit that number comes from.
//!
//! At the cap, the accept loop stops accepting until a connection closes: clients wait in
//! the kernel's listen queue and are served, in order, as slots free. The alternative,
//! accepting and closing at once (what nginx does when `worker_connections` run out), turns
//! a busy moment into errors: docker and containerd retry a refused layer fetch a few times
//! at most, a TLS client pays a handshake for nothing, and idle keep-alive connections (the
//! usual reason the cap is reached) free their slots by themselves within
//! `Timeouts::request_head`. A held client costs regate nothing but a queue entry; once the
//! queue (the listen backlog) is full the kernel drops SYNs and clients retry them, which is
//! the backpressure TCP already has.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// The default cap's floor: what a machine with a small file limit still gets (accepts past
/// its file limit then fail and are retried, and the start-up log says so).
pub const MIN_DEFAULT: usize = 16_384;
/// How often, at most, the log says the cap is reached while it stays reached.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// The cap of the `/metrics` listener (`server.metrics_addr`), apart from the clients' so
/// that the numbers can be read when clients hold every slot, which is when one wants them.
pub const METRICS_LISTENER: usize = 64;

/// Raises this process's soft limit on open files to its hard limit, as nginx's
/// `worker_rlimit_nofile` does (most systems start services at 1,024 soft, with a hard limit
/// hundreds of times that: every connection is a descriptor, a proxied request two).
/// Returns the soft limit now in force (`None`: unlimited or unknown).
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(
                from = ?limit.current,
                to = ?limit.maximum,
                "raised the open files limit to its hard limit"
            ),
            // macOS refuses an unlimited soft limit (OPEN_MAX): keep what there was.
            Err(e) => tracing::warn!(
                error = %e,
                "could not raise the open files limit from {:?} to {:?}",
                limit.current,
                limit.maximum
            ),
        }
    }
    getrlimit(Resource::Nofile).current
}

/// `server.max_connections` when not set: half the open files allowed (a proxied request
/// holds a second descriptor, to the registry; the rest is room for the upstream pool, the
/// cache and the logs), and never under [`MIN_DEFAULT`].
pub fn default_max(open_files: Option<u64>) -> usize {
    let half = open_files.map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX));
    // A semaphore holds at most `Semaphore::MAX_PERMITS`; no machine gets near it.
    half.clamp(MIN_DEFAULT, Semaphore::MAX_PERMITS)
}

/// The slots of one or more listeners (the main and the redirect listener share theirs),
/// with the numbers `/metrics` shows about them.
pub struct Cap {
    slots: Arc<Semaphore>,
    max: usize,
    /// What the log calls the cap.
    name: &'static str,
    /// `None`: the numbers are not the clients' (the `/metrics` listener's own cap).
    metrics: Option<Arc<Metrics>>,
    warned: Mutex<Warned>,
}

/// The log line's rate limit.
#[derive(Default)]
struct Warned {
    last: Option<Instant>,
    /// Connections held since the last line.
    held: u64,
}

/// A connection's slot: freed (and counted) when the connection ends.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Option<Arc<Metrics>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.connections_open.fetch_sub(1, Relaxed);
        }
    }
}

impl Cap {
    /// The clients' cap: `server.max_connections`.
    pub fn clients(max: usize, metrics: Arc<Metrics>) -> Cap {
        metrics.connections_max.store(max as u64, Relaxed);
        Cap::new(max, "server.max_connections", Some(metrics))
    }

    /// The `/metrics` listener's cap.
    pub fn metrics_listener() -> Cap {
        Cap::new(METRICS_LISTENER, "the metrics listener's", None)
    }

    fn new(max: usize, name: &'static str, metrics: Option<Arc<Metrics>>) -> Cap {
        Cap {
            slots: Arc::new(Semaphore::new(max)),
            max,
            name,
            metrics,
            warned: Mutex::default(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A free slot now, or `None` when every one is taken (the cap is reached).
    pub fn try_take(&self) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(self.slot(permit))
    }

    /// Waits for a slot to free.
    pub async fn take(&self) -> Slot {
        let permit = self.slots.clone().acquire_owned().await;
        // The semaphore is never closed.
        self.slot(permit.expect("the connection semaphore is never closed"))
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        if let Some(m) = &self.metrics {
            m.connections_open.fetch_add(1, Relaxed);
        }
        Slot {
            _permit: permit,
            metrics: self.metrics.clone(),
        }
    }

    /// The accept loop found every slot taken.
    pub fn reached(&self) {
        if let Some(m) = &self.metrics {
            m.connection_cap_reached.fetch_add(1, Relaxed);
        }
        self.say(0);
    }

    /// A connection that waited in the listen queue for a slot was accepted.
    pub fn held(&self) {
        if let Some(m) = &self.metrics {
            m.connections_held.fetch_add(1, Relaxed);
        }
        self.say(1);
    }

    /// The warning, once per [`WARN_EVERY`] at most, with what happened since the last.
    fn say(&self, held: u64) {
        let Ok(mut w) = self.warned.lock() else {
            return;
        };
        w.held += held;
        let now = Instant::now();
        if w.last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            return;
        }
        let since = std::mem::take(&mut w.held);
        w.last = Some(now);
        drop(w);
        let max = self.max;
        tracing::warn!(
            max,
            held_since_last_warning = since,
            "connection cap reached: {max} connections open ({}); new connections wait in the listen queue until one closes (raise the cap, or the open files limit it derives from)",
            self.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_half_the_open_files_and_at_least_16384() {
        assert_eq!(default_max(Some(1024)), MIN_DEFAULT);
        assert_eq!(default_max(Some(20_000)), MIN_DEFAULT);
        assert_eq!(default_max(Some(1_048_576)), 524_288);
        assert_eq!(default_max(None), Semaphore::MAX_PERMITS);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let soft = raise_open_files_limit();
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(soft, now.current);
        assert_eq!(now.current, now.maximum);
    }

    #[test]
    fn slots_are_counted_while_held() {
        let metrics = Arc::new(Metrics::default());
        let cap = Cap::clients(2, metrics.clone());
        let a = cap.try_take().unwrap();
        let _b = cap.try_take().unwrap();
        assert!(cap.try_take().is_none());
        cap.reached();
        assert_eq!(metrics.connections_open.load(Relaxed), 2);
        drop(a);
        assert_eq!(metrics.connections_open.load(Relaxed), 1);
        let _c = cap.try_take().unwrap();
        cap.held();
        assert_eq!(metrics.connection_cap_reached.load(Relaxed), 1);
        assert_eq!(metrics.connections_held.load(Relaxed), 1);
        let text = metrics.render();
        assert!(text.contains("regate_connections_open 2\n"), "{text}");
        assert!(text.contains("regate_connections_max 2\n"), "{text}");
        assert!(text.contains("regate_connections_held_total 1\n"), "{text}");
        assert!(
            text.contains("regate_connection_cap_reached_total 1\n"),
            "{text}"
        );
    }
}
