//! docker_auth's `acl_xorm`: rules in the SQL table `xorm_acl_entry`, asked after the static
//! `acl` for a scope it has no rule for. The whole list is read at once and kept for
//! `cache_ttl` (docker_auth reloads it on a ticker of that period); regate reads it again
//! on the first token request after that, at once after a change made through this
//! process (the admin API), and on PostgreSQL at once after a `NOTIFY regate_acl` (which
//! `regate acl` and every regate's admin API send). Any other change counts within
//! `cache_ttl`.
//!
//! A row that cannot be used (not JSON, an unknown key, an invalid regex or address) is
//! skipped with an error in the log naming its `seq`; docker_auth instead refuses the
//! whole list and keeps the old one. A database that does not answer leaves the list
//! last read in force, as in docker_auth (a warning each time); with no list read yet,
//! the token request gets 503.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use sqlx::postgres::PgListener;
use std::time::{Duration, Instant};

use super::backend::{Authorizer, AuthzError, BoxFuture, Decided};
use crate::acl::{self, Acl, RawEntry};
use crate::sql::{parse_entry, Database, RuleRow};

/// After a failed read, the list in force is used for this long before the database is
/// asked again: a database that is down is not asked by every token request.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// A validated `acl_xorm` section.
#[derive(Debug, Clone)]
pub struct AclXormConfig {
    pub database: crate::sql::Settings,
    /// How long the rules read are used before they are read again.
    pub cache_ttl: Duration,
}

/// The `xorm_acl_entry` authorizer.
pub struct SqlRules {
    db: Arc<Database>,
    ttl: Duration,
    loaded: RwLock<Option<Arc<Loaded>>>,
    /// Moves on at each change made here: a list read before it is stale.
    generation: AtomicU64,
    /// One read at a time; holds when the last one failed.
    reading: tokio::sync::Mutex<Option<Instant>>,
    /// Dropped with this: the PostgreSQL listener stops.
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// The list as last read.
pub struct Loaded {
    pub acl: Acl,
    /// Each compiled rule's row: `seq` and the text, for the audit log and `explain`.
    pub rows: Vec<RuleRow>,
    /// Rows skipped, with why.
    pub skipped: Vec<(RuleRow, String)>,
    at: Instant,
    generation: u64,
}

impl Loaded {
    /// How a rule is named in the audit log and `explain`: `acl_xorm seq 20 (comment)`.
    pub fn rule_name(&self, index: usize) -> String {
        let seq = match self.rows.get(index).and_then(|r| r.seq) {
            Some(seq) => format!("seq {seq}"),
            None => "seq NULL".to_owned(),
        };
        match self.acl.comment(index) {
            Some(c) => format!("acl_xorm {seq} ({c})"),
            None => format!("acl_xorm {seq}"),
        }
    }
}

impl SqlRules {
    pub fn new(db: Arc<Database>, ttl: Duration) -> SqlRules {
        SqlRules {
            db,
            ttl,
            loaded: RwLock::new(None),
            generation: AtomicU64::new(0),
            reading: tokio::sync::Mutex::new(None),
            stop: Mutex::new(None),
        }
    }

    /// On PostgreSQL, reads the rules again as soon as a writer announces a change
    /// (`NOTIFY regate_acl`: `regate acl` and the admin API send it; after a change in SQL,
    /// send it yourself), not only after `cache_ttl`. A listener holds one connection of
    /// the pool; a lost one is made again, and the rules are read again then, since a
    /// notice may have been missed. Needs a tokio runtime; elsewhere nothing happens.
    pub fn listen(self: &Arc<Self>) {
        let (Some(pool), Ok(handle)) = (
            self.db.postgres().cloned(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop);
        let rules = Arc::downgrade(self);
        let invalidate = move || match rules.upgrade() {
            Some(r) => {
                r.invalidate();
                true
            }
            None => false,
        };
        handle.spawn(async move {
            let mut listener = None;
            loop {
                let step = async {
                    let l = match &mut listener {
                        Some(l) => l,
                        None => {
                            let mut l = PgListener::connect_with(&pool).await?;
                            l.listen(crate::sql::CHANNEL).await?;
                            listener.insert(l)
                        }
                    };
                    // `None`: the connection was lost (and is made again).
                    l.try_recv().await.map(|n| n.is_some())
                };
                let outcome = tokio::select! {
                    _ = &mut stopped => return,
                    outcome = step => outcome,
                };
                match outcome {
                    Ok(_) => {
                        if !invalidate() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!("acl_xorm: listening for rule changes: {e}");
                        listener = None;
                        tokio::select! {
                            _ = &mut stopped => return,
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        }
                    }
                }
            }
        });
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// The next token request reads the list again (after a change made here).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn last(&self) -> Option<Arc<Loaded>> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The list, if it is young enough (within the TTL, or read since `since`) and no
    /// change was made here since it was read.
    fn fresh(&self, since: Option<Instant>) -> Option<Arc<Loaded>> {
        let l = self.last()?;
        let current = l.generation == self.generation.load(Ordering::Acquire);
        let young = l.at.elapsed() < self.ttl || since.is_some_and(|s| l.at >= s);
        (current && young).then_some(l)
    }

    /// The list in force: kept, or read again when older than `cache_ttl`.
    pub async fn current(&self) -> Result<Arc<Loaded>, AuthzError> {
        if let Some(l) = self.fresh(None) {
            return Ok(l);
        }
        let asked = Instant::now();
        let mut reading = self.reading.lock().await;
        // Another request may have read it while this one waited.
        if let Some(l) = self.fresh(Some(asked)) {
            return Ok(l);
        }
        if let (Some(failed), Some(last)) = (*reading, self.last()) {
            if failed.elapsed() < RETRY_AFTER_FAILURE {
                return Ok(last);
            }
        }
        let generation = self.generation.load(Ordering::Acquire);
        match self.db.rules().await {
            Ok(rows) => {
                *reading = None;
                let previous = self.last();
                let loaded = Arc::new(compile(rows, previous.as_deref(), generation));
                *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Some(loaded.clone());
                Ok(loaded)
            }
            Err(e) => {
                *reading = Some(Instant::now());
                match self.last() {
                    Some(last) => {
                        tracing::warn!(
                            "acl_xorm: the rules could not be read again ({e}); the {} rule(s) read {:?} ago stay in force",
                            last.rows.len(),
                            last.at.elapsed()
                        );
                        Ok(last)
                    }
                    None => Err(AuthzError {
                        backend: "acl_xorm".to_owned(),
                        message: format!("the rules could not be read: {e}"),
                    }),
                }
            }
        }
    }
}

fn empty() -> Acl {
    Acl::compile(&[]).unwrap_or_else(|_| unreachable!("an empty list compiles"))
}

/// Compiles the rows that can be used; the others are logged (when the list changed since
/// `previous`, so an unchanged bad row is not logged at every read).
fn compile(rows: Vec<RuleRow>, previous: Option<&Loaded>, generation: u64) -> Loaded {
    let mut entries: Vec<RawEntry> = Vec::new();
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    for row in rows {
        let checked = parse_entry(&row.entry).and_then(|entry| {
            Acl::compile(std::slice::from_ref(&entry))
                .map(|_| entry)
                .map_err(|errors| {
                    errors
                        .iter()
                        .map(|e| format!("{}: {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
        });
        match checked {
            Ok(entry) => {
                entries.push(entry);
                kept.push(row);
            }
            Err(why) => skipped.push((row, why)),
        }
    }
    let changed = previous.is_none_or(|p| p.rows != kept || p.skipped.len() != skipped.len());
    if changed {
        for (row, why) in &skipped {
            let seq = row.seq.map_or("NULL".to_owned(), |s| s.to_string());
            tracing::error!(
                seq = %seq,
                "acl_xorm: xorm_acl_entry row with seq {seq} is skipped: {why}"
            );
        }
        tracing::info!(
            rules = kept.len(),
            skipped = skipped.len(),
            "acl_xorm: rules read"
        );
    }
    let acl = Acl::compile(&entries).unwrap_or_else(|_| empty());
    Loaded {
        acl,
        rows: kept,
        skipped,
        at: Instant::now(),
        generation,
    }
}

impl Authorizer for SqlRules {
    fn name(&self) -> &str {
        "acl_xorm"
    }

    fn authorize<'a>(
        &'a self,
        request: &'a acl::Request<'a>,
    ) -> BoxFuture<'a, Result<Option<Decided>, AuthzError>> {
        Box::pin(async move {
            let loaded = self.current().await?;
            let decision = loaded.acl.authorize(request);
            Ok(decision.rule.map(|i| Decided {
                actions: decision.actions,
                rule: loaded.rule_name(i),
            }))
        })
    }
}
