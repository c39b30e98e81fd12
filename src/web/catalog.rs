//! The registry's catalog for the repository list: read page by page as registry:2 serves
//! it (`n`, `last`, the `Link` header), kept for [`FRESH`] and then served while a fresh
//! copy is read in the background, and filtered per reader by what the ACL lets them pull.
//!
//! registry:2 walks its whole storage tree for each catalog page, so the full list of a
//! registry with 10,000 repositories takes seconds to read (10 pages, each slower than
//! the last). The first page of the list must not wait for that: until the first full
//! read is done, each page shows what has arrived once it holds enough names for it, and
//! says that the count is not final.
//!
//! The catalog is the one thing the pages read with more than the reader's own rights
//! (`registry:catalog:*`, which most configs give nobody but admins): the names stay in
//! this cache, and only those `granted` lets the reader pull leave it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Limited};
use hyper::{Method, StatusCode};
use tokio::sync::watch;

use super::registry::{next_link, PAGE};
use crate::auth::authorize::granted;
use crate::auth::backend::AuthzError;
use crate::auth::identity::Identity;
use crate::auth::scope::Scope;
use crate::proxy::Upstream;

/// How long a full read of the catalog is served before a new one starts.
pub const FRESH: Duration = Duration::from_secs(30);
/// How long a page waits for the first read to hold enough names.
const WAIT: Duration = Duration::from_secs(20);

/// What is known of the catalog.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Top-level names first, then by namespace; each namespace's names together.
    pub names: Arc<Vec<String>>,
    /// All of the catalog (not the pages read so far of a first read).
    pub complete: bool,
    /// Unique to this snapshot: what a filtered list is cached under.
    pub generation: u64,
    pub taken: Option<Instant>,
    /// The last read failed (the names are the ones from before).
    pub error: Option<String>,
}

pub struct Catalog {
    tx: Arc<watch::Sender<Snapshot>>,
    reading: Arc<AtomicBool>,
    generations: Arc<AtomicU64>,
    /// (who, generation) -> the names they may pull.
    visible: moka::sync::Cache<(String, u64), Arc<Vec<String>>>,
}

impl Default for Catalog {
    fn default() -> Catalog {
        Catalog {
            tx: Arc::new(watch::Sender::new(Snapshot::default())),
            reading: Arc::default(),
            generations: Arc::default(),
            visible: moka::sync::Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }
}

impl Catalog {
    /// The catalog as known now; starts a read when there is none yet or it is stale
    /// (`token`: for `registry:catalog:*`, made only when a read starts).
    pub fn current(&self, upstream: &Upstream, token: impl FnOnce() -> Option<String>) -> Snapshot {
        let now = self.tx.borrow().clone();
        let stale = now.taken.is_none_or(|t| t.elapsed() > FRESH);
        if stale && !self.reading.swap(true, Ordering::AcqRel) {
            match token() {
                Some(token) => {
                    let read = Read {
                        tx: self.tx.clone(),
                        reading: self.reading.clone(),
                        generations: self.generations.clone(),
                        upstream: upstream.clone(),
                        token,
                        // A first read shows its pages as they come; a later one replaces
                        // the whole list at once.
                        partial: !now.complete,
                    };
                    tokio::spawn(read.run());
                }
                None => self.reading.store(false, Ordering::Release),
            }
        }
        now
    }

    /// The next snapshot after `seen`, or `None` when none comes by `deadline`.
    pub async fn next(&self, seen: &Snapshot, started: Instant) -> Option<Snapshot> {
        let mut rx = self.tx.subscribe();
        let wait = async {
            loop {
                {
                    let now = rx.borrow_and_update();
                    if now.generation != seen.generation {
                        return Some(now.clone());
                    }
                }
                rx.changed().await.ok()?;
            }
        };
        let left = WAIT.saturating_sub(started.elapsed());
        tokio::time::timeout(left, wait).await.ok().flatten()
    }

    /// The names of `snapshot` that `identity` may pull, decided as `/auth` decides.
    pub async fn visible(
        &self,
        rt: &crate::runtime::Runtime,
        identity: &Identity,
        client_ip: IpAddr,
        snapshot: &Snapshot,
    ) -> Result<Arc<Vec<String>>, AuthzError> {
        // The rules in force are part of the key: a reload decides anew.
        let who = format!(
            "{:p}\0{}\0{:?}\0{client_ip}",
            Arc::as_ptr(&rt.acl),
            identity.account,
            identity.labels
        );
        let key = (who, snapshot.generation);
        if let Some(hit) = self.visible.get(&key) {
            return Ok(hit);
        }
        let mut out = Vec::new();
        for chunk in snapshot.names.chunks(500) {
            let scopes: Vec<Scope> = chunk
                .iter()
                .map(|n| Scope::new("repository", n, &["pull"]))
                .collect();
            let decided = granted(rt, identity, client_ip, &scopes).await?;
            out.extend(
                decided
                    .into_iter()
                    .filter(|a| a.actions.iter().any(|x| x == "pull"))
                    .map(|a| a.name),
            );
            // 10,000 decisions are CPU work: let other requests run between chunks.
            tokio::task::yield_now().await;
        }
        let out = Arc::new(out);
        if snapshot.complete {
            self.visible.insert(key, out.clone());
        }
        Ok(out)
    }
}

/// One read of the whole catalog, in the background.
struct Read {
    tx: Arc<watch::Sender<Snapshot>>,
    reading: Arc<AtomicBool>,
    generations: Arc<AtomicU64>,
    upstream: Upstream,
    token: String,
    partial: bool,
}

impl Read {
    async fn run(self) {
        let started = Instant::now();
        let mut names: Vec<String> = Vec::new();
        let mut path = format!("/v2/_catalog?n={PAGE}");
        let mut failed = None;
        // A bound on pages, against a registry that links to itself forever.
        for _ in 0..100_000 {
            match self.page(&path).await {
                Ok((page, next)) => {
                    let more = !page.is_empty();
                    names.extend(page);
                    match next {
                        Some(next) if more => {
                            path = next;
                            if self.partial {
                                self.publish(names.clone(), false, None);
                            }
                        }
                        _ => break,
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            None => {
                tracing::debug!(
                    repositories = names.len(),
                    millis = started.elapsed().as_millis() as u64,
                    "read the registry's catalog"
                );
                self.publish(names, true, None);
            }
            Some(e) => {
                tracing::warn!(error = %e, "the web pages could not read the registry's catalog");
                let old = self.tx.borrow().clone();
                let kept = if self.partial {
                    names
                } else {
                    old.names.to_vec()
                };
                self.publish(kept, old.complete && !self.partial, Some(e));
            }
        }
        self.reading.store(false, Ordering::Release);
    }

    fn publish(&self, mut names: Vec<String>, complete: bool, error: Option<String>) {
        // Top-level names first, then each namespace's names together.
        names.sort_by(|a, b| (a.contains('/'), a).cmp(&(b.contains('/'), b)));
        names.dedup();
        let generation = self.generations.fetch_add(1, Ordering::AcqRel) + 1;
        self.tx.send_replace(Snapshot {
            names: Arc::new(names),
            complete,
            generation,
            // A failed read is retried by the next page view.
            taken: (complete && error.is_none()).then(Instant::now),
            error,
        });
    }

    /// One page of the catalog, and the path of the next.
    async fn page(&self, path: &str) -> Result<(Vec<String>, Option<String>), String> {
        #[derive(serde::Deserialize)]
        struct Page {
            repositories: Option<Vec<String>>,
        }
        let resp = self
            .upstream
            .send(Method::GET, path, &self.token, &["application/json"])
            .await
            .map_err(|e| e.message)?;
        if resp.status() != StatusCode::OK {
            return Err(format!("the registry answered {}", resp.status()));
        }
        let next = resp
            .headers()
            .get(hyper::header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link)
            // Only the catalog's own next page is ever asked for.
            .filter(|p| p.starts_with("/v2/_catalog?"));
        let body = Limited::new(resp.into_body(), 16 << 20)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let page: Page = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let names = page
            .repositories
            .unwrap_or_default()
            .into_iter()
            // A name regate would not route is not one a page can link to.
            .filter(|n| crate::route::valid_name(n))
            .collect();
        Ok((names, next))
    }
}
