//! Giving memory the process freed back to the system.
//!
//! glibc's malloc keeps freed memory in its arenas, and only the top of a heap is ever
//! returned by itself. Two things free a lot at once below memory still in use:
//! - a config load: 100,000 users parse into a tree of small allocations, 80-odd MiB, freed
//!   once the users are built (the tree lies below the users built from it);
//! - connections going idle: each busy HTTP/1 connection holds 20-odd KiB of hyper buffers,
//!   freed when it is parked (`server::park`). Thousands of docker nodes that opened their
//!   connections together go idle together, and without a trim the process keeps that
//!   high-water mark for as long as they stay connected.
//!
//! `malloc_trim(0)` returns every free page of every arena (with `madvise`), whatever lies
//! above it. Other allocators (and other systems) return memory their own way: nothing to
//! do there.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;
use std::thread::{self, Thread};
use std::time::Duration;

/// Returns the free pages of the allocator's arenas to the system, where that is glibc.
pub fn give_back_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes no pointers; it walks glibc's own free lists, each arena
    // under its lock, and touches no memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How many more connections must be idle than at the last trim before another one: a
/// handful going idle and busy again (any steady load) never trims, a wave of them does.
const WAVE: usize = 256;

/// How long the trimming thread lets a wave build before it trims, and again while the
/// wave is still rising: at most a few trims a second, and one after the wave ends.
const SETTLE: Duration = Duration::from_millis(200);

/// Connections idle now (parked), process-wide: the allocator is process-wide too.
static IDLE: AtomicUsize = AtomicUsize::new(0);

/// `IDLE` when memory was last trimmed (lowered as connections wake).
static TRIMMED_AT: AtomicUsize = AtomicUsize::new(0);

/// The thread that trims, started by the first wave (`None`: it could not be started, and
/// nothing is trimmed).
static TRIMMER: OnceLock<Option<Thread>> = OnceLock::new();

/// A connection counted as idle while this lives: made when it parks, dropped when it
/// resumes or closes. A wave of these (`WAVE` more than at the last trim) gives what the
/// busy connections held back to the system.
pub struct Idle(());

impl Idle {
    pub fn begin() -> Idle {
        let now = IDLE.fetch_add(1, Relaxed) + 1;
        if now >= TRIMMED_AT.load(Relaxed) + WAVE {
            if let Some(trimmer) = TRIMMER.get_or_init(start_trimmer) {
                trimmer.unpark();
            }
        }
        Idle(())
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        let now = IDLE.fetch_sub(1, Relaxed) - 1;
        TRIMMED_AT.fetch_min(now, Relaxed);
    }
}

fn start_trimmer() -> Option<Thread> {
    let started = thread::Builder::new()
        .name("regate-trim".into())
        .spawn(|| loop {
            thread::park();
            // Trim while the wave rises, and once more after it stops.
            loop {
                let before = IDLE.load(Relaxed);
                thread::sleep(SETTLE);
                TRIMMED_AT.store(IDLE.load(Relaxed), Relaxed);
                give_back_freed();
                if IDLE.load(Relaxed) <= before {
                    break;
                }
            }
        });
    match started {
        Ok(handle) => Some(handle.thread().clone()),
        Err(e) => {
            tracing::warn!(error = %e, "memory trimming thread not started: idle connections keep their buffers' memory");
            None
        }
    }
}
