//! The edge cache across replicas: what a push or delete through one replica changes is
//! published in the shared state (Redis pub/sub) and applied by every other replica, so a
//! pull through any replica sees a new tag at once instead of after the tag TTL.
//!
//! - **Sent** in the order the writes completed, by one task per process from a bounded
//!   queue, after the registry answered (`Written`'s drop, as for this replica's cache).
//!   A change the shared state does not take (Redis down, the queue full) is counted in
//!   `regate_cache_changes_unsent_total`; the others then see it within the TTLs, as
//!   without shared state.
//! - **Received** by a task listening on the channel, applied as this replica's own
//!   writes are (`Cache::apply`), counted in `regate_cache_changes_received_total`. Each
//!   process marks what it sends with a random id and skips its own.
//! - **Missed**: while the subscription is down, changes pass unheard. Each time it is
//!   made again the cache forgets everything it held, and until then it falls back to the
//!   TTLs. The hot path never waits for Redis: it only queues.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Cache, Change, Replicas, Settings};
use crate::metrics::Metrics;
use crate::state::Store;

/// The channel's name in the shared state.
const CHANNEL: &str = "cache";
/// Changes waiting to be sent; past that, they are counted unsent.
const QUEUE: usize = 10_000;
/// How long to wait before listening again after the subscription was lost.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// What goes over the channel.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Message {
    /// The sending process's id.
    from: u64,
    change: Change,
}

/// The [`Replicas`] of a cache whose changes go through the shared state.
struct Publisher {
    queue: mpsc::Sender<Change>,
    metrics: Arc<Metrics>,
}

impl Replicas for Publisher {
    fn publish(&self, change: &Change) {
        if self.queue.try_send(change.clone()).is_err() {
            self.metrics.cache_changes_unsent.fetch_add(1, Relaxed);
        }
    }
}

/// The edge cache for `settings`: shared with the other replicas through `store` when it
/// is shared (and a runtime is there to run the tasks that send and listen), else this
/// process's alone. The tasks end when the cache is dropped.
pub fn shared(settings: &Settings, metrics: Arc<Metrics>, store: Arc<dyn Store>) -> Arc<Cache> {
    let off = settings.max_bytes == 0;
    let runtime = tokio::runtime::Handle::try_current();
    let (true, Ok(runtime)) = (store.shared() && !off, runtime) else {
        return Arc::new(Cache::new(settings, metrics));
    };
    let (queue, queued) = mpsc::channel(QUEUE);
    let publisher = Publisher {
        queue,
        metrics: metrics.clone(),
    };
    let cache = Arc::new(Cache::with_replicas(
        settings,
        metrics.clone(),
        Box::new(publisher),
    ));
    let from = process_id();
    runtime.spawn(send(queued, store.clone(), from, metrics.clone()));
    runtime.spawn(listen(Arc::downgrade(&cache), store, from, metrics));
    cache
}

fn process_id() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // Without randomness (it does not fail on Linux) the process id still tells most apart.
    match ring::rand::SystemRandom::new().fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => u64::from(std::process::id()),
    }
}

/// Sends the queued changes, in order; ends when the cache (the queue's sender) is gone.
async fn send(
    mut queued: mpsc::Receiver<Change>,
    store: Arc<dyn Store>,
    from: u64,
    metrics: Arc<Metrics>,
) {
    while let Some(change) = queued.recv().await {
        let message = serde_json::to_vec(&Message { from, change }).unwrap_or_default();
        if store.publish(CHANNEL, message).await.is_err() {
            metrics.cache_changes_unsent.fetch_add(1, Relaxed);
        }
    }
}

/// Applies what the other replicas send, listening again (and forgetting what may have
/// been missed) whenever the subscription is lost; ends when the cache is gone.
async fn listen(cache: Weak<Cache>, store: Arc<dyn Store>, from: u64, metrics: Arc<Metrics>) {
    let gone = || cache.strong_count() == 0;
    while !gone() {
        let mut messages = match store.subscribe(CHANNEL).await {
            Ok(Some(messages)) => messages,
            Ok(None) => return,
            Err(_) => {
                // The store logged it; the TTLs hold meanwhile.
                tokio::time::sleep(RESUBSCRIBE).await;
                continue;
            }
        };
        // Whatever changed before this moment may not have been heard.
        match cache.upgrade() {
            Some(cache) => cache.forget_all(),
            None => return,
        }
        loop {
            // Checked now and then, so a dropped cache's task does not linger.
            let next = tokio::time::timeout(RESUBSCRIBE, messages.recv()).await;
            let Some(cache) = cache.upgrade() else { return };
            match next {
                Ok(Some(bytes)) => {
                    if let Some(change) = received(&bytes, from) {
                        cache.apply(&change);
                        metrics.cache_changes_received.fetch_add(1, Relaxed);
                    }
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
        tracing::warn!("the edge cache no longer hears the other replicas: it relies on its TTLs until it does again");
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}

/// The change in a message another process sent; `None` for this process's own or a
/// message that is not one.
fn received(bytes: &[u8], from: u64) -> Option<Change> {
    let message: Message = serde_json::from_slice(bytes).ok()?;
    (message.from != from).then_some(message.change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Kind;

    #[test]
    fn messages_carry_the_change_and_skip_their_sender() {
        let change = Change::Deleted {
            repository: "team/app".into(),
            kind: Kind::Blob,
            digest: "sha256:abc".into(),
        };
        let bytes = serde_json::to_vec(&Message {
            from: 7,
            change: change.clone(),
        })
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"from":7,"change":{"change":"deleted","repository":"team/app","kind":"blob","digest":"sha256:abc"}}"#
        );
        assert_eq!(received(&bytes, 8), Some(change));
        assert_eq!(received(&bytes, 7), None, "its own");
        assert_eq!(received(b"{\"from\":1}", 8), None);
        assert_eq!(received(b"not json", 8), None);
    }

    #[test]
    fn without_a_shared_store_the_cache_is_alone() {
        let store: Arc<dyn Store> = Arc::new(crate::state::Local::memory());
        let cache = shared(&Settings::default(), Arc::default(), store);
        // No runtime, no shared store: nothing was spawned, the cache works as one.
        assert_eq!(cache.usage().entries, 0);
    }
}
