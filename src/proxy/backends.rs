//! The registries `upstream.url` lists, and which of them a request goes to.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hyper::Uri;

/// The registries requests are spread over: in turn, leaving out for a while one that
/// refused a connection (nginx's `max_fails=1 fail_timeout`), from 1 s doubling to 30 s
/// while it keeps refusing. With all of them out, the one due back first is tried.
pub(super) struct Backends {
    pub(super) list: Vec<Backend>,
    next: std::sync::atomic::AtomicUsize,
}

pub(super) struct Backend {
    pub(super) base: Uri,
    /// Unix ms until which it is left out; 0: in.
    out_until: std::sync::atomic::AtomicU64,
    /// Refusals in a row.
    refusals: std::sync::atomic::AtomicU32,
}

const OUT_FIRST: Duration = Duration::from_secs(1);
const OUT_MAX: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Backends {
    pub(super) fn new(urls: &[Uri]) -> Backends {
        Backends {
            list: urls
                .iter()
                .map(|u| Backend {
                    base: u.clone(),
                    out_until: Default::default(),
                    refusals: Default::default(),
                })
                .collect(),
            next: Default::default(),
        }
    }

    pub(super) fn pick(&self) -> &Backend {
        let n = self.list.len();
        let start = self.next.fetch_add(1, Relaxed);
        let now = now_ms();
        (0..n)
            .map(|i| &self.list[(start + i) % n])
            .find(|b| b.out_until.load(Relaxed) <= now)
            .unwrap_or_else(|| {
                self.list
                    .iter()
                    .min_by_key(|b| b.out_until.load(Relaxed))
                    .unwrap_or(&self.list[0])
            })
    }
}

impl Backend {
    pub(super) fn refused(&self) {
        let k = self.refusals.fetch_add(1, Relaxed).min(5);
        let out = (OUT_FIRST * (1u32 << k)).min(OUT_MAX);
        let was = self
            .out_until
            .swap(now_ms() + out.as_millis() as u64, Relaxed);
        if was == 0 {
            tracing::warn!(upstream = %self.base, "registry left out: it refused a connection; tried again in {out:?}");
        }
    }

    pub(super) fn worked(&self) {
        if self.out_until.swap(0, Relaxed) != 0 {
            tracing::info!(upstream = %self.base, "registry back in: it answered");
        }
        self.refusals.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_take_turns_and_one_that_refused_is_left_out() {
        let urls: Vec<Uri> = ["http://a:5000", "http://b:5000", "http://c:5000"]
            .iter()
            .map(|u| u.parse().unwrap())
            .collect();
        let b = Backends::new(&urls);
        let names = |n: usize| -> Vec<String> {
            (0..n)
                .map(|_| b.pick().base.host().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names(4), ["a", "b", "c", "a"]);
        b.list[1].refused();
        assert!(!names(6).contains(&"b".to_owned()), "b is out");
        b.list[1].worked();
        assert!(names(6).contains(&"b".to_owned()), "b is back");
        for backend in &b.list {
            backend.refused();
        }
        // All out: the one due back first is still tried, never none.
        b.list[2].out_until.store(1, Relaxed);
        assert_eq!(b.pick().base.host(), Some("c"));
    }
}
