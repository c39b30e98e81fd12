//! Bounds bcrypt work. A password check is ~50-250 ms of one core, run on the blocking
//! pool; without a bound, a spray of logins (300 connections of unknown users) held 300
//! threads and every core, and starved everything else regate does (manifest HEADs fell
//! from 1,018 to 15 req/s). At most [`Pool::permits`] checks run at once (about one per
//! core), a bounded number wait for a turn, and the rest are refused at once (429, try
//! again shortly), which costs nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

/// Waiting checks per running one: a login that waits behind a full queue waits about
/// this many bcrypt checks (~0.5 s at cost 10).
const WAITING_PER_PERMIT: usize = 8;

/// The bcrypt checks running and waiting, shared by every runtime (it outlives reloads).
pub struct Pool {
    running: Arc<Semaphore>,
    permits: usize,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// bcrypt is busy: this check was neither run nor queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl Default for Pool {
    /// One check per core the process may use.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Pool::new(cores, cores * WAITING_PER_PERMIT)
    }
}

impl Pool {
    pub fn new(permits: usize, max_waiting: usize) -> Pool {
        Pool {
            running: Arc::new(Semaphore::new(permits.max(1))),
            permits: permits.max(1),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// Checks that may run at once.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Runs `check` on the blocking pool when a turn comes, or refuses at once when the
    /// queue is full. A caller that goes away while waiting leaves the queue.
    pub async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let permit = match self.running.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let queued = self
                    .waiting
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < self.max_waiting).then_some(n + 1)
                    });
                if queued.is_err() {
                    return Err(Busy);
                }
                let _leave = Leave(&self.waiting);
                self.running
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Busy)?
            }
        };
        tokio::task::spawn_blocking(move || {
            let out = check();
            // The turn ends when bcrypt does, even if the caller stopped waiting.
            drop(permit);
            out
        })
        .await
        .map_err(|_| Busy)
    }

    /// Checks waiting for a turn now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Two running, three waiting: the sixth is refused at once; as turns end, waiting
    /// checks run, and a refused caller can come back. Blocked on channels, not timed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_a_few_queues_a_few_and_refuses_the_rest() {
        let pool = Arc::new(Pool::new(2, 3));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let (started_tx, started) = mpsc::channel::<()>();
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let pool = pool.clone();
            let gate = gate.clone();
            let started_tx = started_tx.clone();
            tasks.push(tokio::spawn(async move {
                pool.run(move || {
                    started_tx.send(()).unwrap();
                    gate.lock().unwrap().recv().unwrap();
                })
                .await
            }));
        }
        // Two checks run (and block); three wait.
        for _ in 0..2 {
            started.recv_timeout(Duration::from_secs(30)).unwrap();
        }
        while pool.waiting() < 3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            pool.run(|| ()).await,
            Err(Busy),
            "queue full: refused at once"
        );
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(()));
        }
        assert_eq!(pool.waiting(), 0);
        assert_eq!(pool.run(|| 7).await, Ok(7));
    }
}
