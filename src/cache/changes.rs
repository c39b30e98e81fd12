//! What a forwarded write changes for the cache, and how an answer the registry gave
//! before such a change is kept from being cached after it.
//!
//! Each repository has two generation counters (in one of [`STRIPES`] shared slots, so
//! the memory is fixed however many repositories there are): one moves when a manifest
//! is pushed or deleted (its tags may point elsewhere), one when an object is deleted. A
//! cached entry carries the generation read *before* its request went to the registry,
//! and counts only while that is still the current one. So an answer the registry gave
//! before a write, arriving after it, is never believed; and a write that completed
//! before a request started is seen by the registry when it answers that request. Two
//! repositories sharing a slot only cost each other a few misses.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use super::Kind;

const STRIPES: usize = 1024;

/// A change a write made, that cached answers must not outlive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A manifest was pushed or deleted: the repository's tags may point elsewhere.
    Tags { repository: String },
    /// An object was deleted from a repository.
    Deleted {
        repository: String,
        kind: Kind,
        digest: String,
    },
}

/// Where this process's changes go besides its own cache. [`Alone`] keeps them here;
/// with a shared state, `shared.rs` publishes them there and hands what the other
/// replicas publish to [`super::Cache::apply`]. A change that does not get through is
/// seen by the others within the tag TTL and the object TTL ([`super::Settings`]).
pub trait Replicas: Send + Sync {
    fn publish(&self, change: &Change);
}

/// One regate, or replicas that do not share state: nothing to tell anyone.
pub struct Alone;

impl Replicas for Alone {
    fn publish(&self, _: &Change) {}
}

pub(super) struct Generations {
    tags: Box<[AtomicU64]>,
    deletes: Box<[AtomicU64]>,
}

/// The generations of one repository at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    pub tags: u64,
    pub deletes: u64,
}

impl Generations {
    pub fn new() -> Generations {
        let slots = || (0..STRIPES).map(|_| AtomicU64::new(0)).collect();
        Generations {
            tags: slots(),
            deletes: slots(),
        }
    }

    pub fn seen(&self, repository: &str) -> Seen {
        let i = stripe(repository);
        Seen {
            tags: self.tags[i].load(SeqCst),
            deletes: self.deletes[i].load(SeqCst),
        }
    }

    pub fn tags_changed(&self, repository: &str) {
        self.tags[stripe(repository)].fetch_add(1, SeqCst);
    }

    pub fn deleted(&self, repository: &str) {
        self.deletes[stripe(repository)].fetch_add(1, SeqCst);
    }

    /// Every repository changed: nothing read before now counts after it.
    pub fn all_changed(&self) {
        for slot in self.tags.iter().chain(self.deletes.iter()) {
            slot.fetch_add(1, SeqCst);
        }
    }
}

/// FNV-1a: fixed, so a slot is the same in every process (a shared store can use it).
fn stripe(repository: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in repository.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % STRIPES as u64) as usize
}
