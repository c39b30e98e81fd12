//! What the Activity page shows: the recent audit events of this process (pushes,
//! deletes, refused logins), and pulls and pushes counted per day. A tracing layer takes
//! them from the audit log's own events (`regate::audit`) and the access log's
//! (`regate::access`, for pulls), so the page says what the log says and no call site
//! writes twice.
//!
//! Kept in memory, bounded: the last [`CAPACITY`] events and [`DAYS`] days of counts.
//! After a restart the page starts empty (the audit log keeps everything); each replica
//! shows what it served. Writing every pull to a shared store would put a store write on
//! the registry's hot path, which nothing else there has.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{LazyLock, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Events kept.
pub const CAPACITY: usize = 5_000;
/// Days of counts kept.
pub const DAYS: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Push,
    Delete,
    RefusedLogin,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Kind::Push => "push",
            Kind::Delete => "delete",
            Kind::RefusedLogin => "refused-login",
        }
    }

    pub fn from_key(key: &str) -> Option<Kind> {
        [Kind::Push, Kind::Delete, Kind::RefusedLogin]
            .into_iter()
            .find(|k| k.key() == key)
    }
}

/// One thing that happened.
#[derive(Debug, Clone)]
pub struct Event {
    /// Seconds since the epoch.
    pub time: u64,
    pub kind: Kind,
    pub account: String,
    pub client: String,
    /// Push and delete: the repository and the tag or digest.
    pub repository: String,
    pub reference: String,
    /// What else the audit line says: the digest pushed, why a login was refused.
    pub detail: String,
}

/// Pulls and pushes of one UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Day {
    pub pulls: u64,
    pub pushes: u64,
}

pub struct Journal {
    started: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    events: VecDeque<Event>,
    /// Day number (seconds / 86400) -> counts.
    days: BTreeMap<u64, Day>,
}

static JOURNAL: LazyLock<Journal> = LazyLock::new(|| Journal {
    started: crate::auth::token::unix_now(),
    inner: Mutex::default(),
});

/// The process's journal.
pub fn journal() -> &'static Journal {
    &JOURNAL
}

impl Journal {
    /// When this process began keeping events.
    pub fn started(&self) -> u64 {
        self.started
    }

    fn record(&self, event: Option<Event>, day: Option<(u64, bool)>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(event) = event {
            if inner.events.len() == CAPACITY {
                inner.events.pop_front();
            }
            inner.events.push_back(event);
        }
        if let Some((time, pull)) = day {
            let today = time / 86_400;
            let counts = inner.days.entry(today).or_default();
            if pull {
                counts.pulls += 1;
            } else {
                counts.pushes += 1;
            }
            let oldest = today.saturating_sub(DAYS);
            inner.days.retain(|d, _| *d > oldest);
        }
    }

    /// The kept events, newest first, that `keep` accepts; at most `limit`.
    pub fn events(&self, keep: impl Fn(&Event) -> bool, limit: usize) -> (Vec<Event>, usize) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let matching: Vec<&Event> = inner.events.iter().rev().filter(|e| keep(e)).collect();
        let total = matching.len();
        (matching.into_iter().take(limit).cloned().collect(), total)
    }

    /// The counts of the `days` days up to and including `today` (a day number), oldest
    /// first, with days without any as zero.
    pub fn days(&self, today: u64, days: u64) -> Vec<(u64, Day)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (today.saturating_sub(days - 1)..=today)
            .map(|d| (d, inner.days.get(&d).copied().unwrap_or_default()))
            .collect()
    }

    /// Takes what it keeps from one log event (the layer's work, apart for tests).
    fn take(&self, target: &str, fields: &Fields) {
        let now = crate::auth::token::unix_now();
        let get = |k: &str| fields.0.get(k).cloned().unwrap_or_default();
        let tag_reference = |r: &str| !r.is_empty() && !r.contains(':');
        match target {
            "regate::audit" => {
                let action = get("action");
                let status = get("status");
                let (kind, counted) = match (get("message").as_str(), action.as_str()) {
                    ("login refused", _) => (Kind::RefusedLogin, false),
                    (_, "push_manifest") if status.starts_with('2') => {
                        // A manifest put by digest alone (each platform of a multi-arch
                        // push) is part of a push, not one: the tag is.
                        if !tag_reference(&get("reference")) {
                            return;
                        }
                        (Kind::Push, true)
                    }
                    (_, "delete_manifest" | "delete_blob") if status.starts_with('2') => {
                        (Kind::Delete, false)
                    }
                    _ => return,
                };
                let detail = match kind {
                    Kind::RefusedLogin => {
                        let reason = get("reason");
                        match get("outcome").as_str() {
                            "throttled" => "locked after repeated failures".to_owned(),
                            _ if !reason.is_empty() => reason,
                            other => other.replace('_', " "),
                        }
                    }
                    // A delete names its digest already; say where it came from.
                    Kind::Delete if get("via") == "web" => "from the web pages".to_owned(),
                    Kind::Delete => String::new(),
                    Kind::Push => get("digest"),
                };
                let event = Event {
                    time: now,
                    kind,
                    account: get("account"),
                    client: get("client"),
                    repository: get("repository"),
                    reference: get("reference"),
                    detail,
                };
                self.record(Some(event), counted.then_some((now, false)));
            }
            "regate::access" => {
                // A pull is a manifest asked for by tag that was there: docker and
                // containerd HEAD the tag, then GET by digest; skopeo GETs the tag. What
                // follows by digest (an index's platform images) is the same pull.
                let path = get("path");
                let by_tag = path
                    .rsplit_once("/manifests/")
                    .is_some_and(|(_, r)| tag_reference(r));
                let read = matches!(get("method").as_str(), "GET" | "HEAD");
                if read && get("route") == "manifest" && get("status") == "200" && by_tag {
                    self.record(None, Some((now, true)));
                }
            }
            _ => {}
        }
    }
}

/// A log event's fields, as text.
#[derive(Default)]
struct Fields(BTreeMap<&'static str, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

/// The tracing layer that feeds the journal; `regate serve` installs it beside the
/// logs, and a test that wants the Activity page installs it too.
pub struct Layer;

/// The layer, for `tracing_subscriber::registry().with(...)`.
pub fn layer() -> Layer {
    Layer
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if target != "regate::audit" && target != "regate::access" {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        journal().take(target, &fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&'static str, &str)]) -> Fields {
        Fields(pairs.iter().map(|(k, v)| (*k, v.to_string())).collect())
    }

    #[test]
    fn pushes_deletes_refusals_and_pulls_are_taken_from_the_logs() {
        let j = Journal {
            started: 0,
            inner: Mutex::default(),
        };
        let push = |reference: &str| {
            fields(&[
                ("message", "write forwarded"),
                ("action", "push_manifest"),
                ("account", "alice"),
                ("repository", "team/app"),
                ("reference", reference),
                ("digest", "sha256:d"),
                ("status", "201"),
            ])
        };
        j.take("regate::audit", &push("1.0"));
        j.take("regate::audit", &push("sha256:abc"));
        j.take(
            "regate::audit",
            &fields(&[
                ("message", "login refused"),
                ("account", "eve"),
                ("outcome", "authentication_failed"),
                ("reason", "incorrect username or password"),
            ]),
        );
        j.take(
            "regate::audit",
            &fields(&[("message", "token decision"), ("account", "alice")]),
        );
        let pull = |path: &str, status: &str| {
            fields(&[
                ("method", "GET"),
                ("route", "manifest"),
                ("path", path),
                ("status", status),
            ])
        };
        j.take("regate::access", &pull("/v2/team/app/manifests/1.0", "200"));
        j.take(
            "regate::access",
            &pull("/v2/team/app/manifests/sha256:abc", "200"),
        );
        j.take("regate::access", &pull("/v2/team/app/manifests/2.0", "404"));
        let mut head = pull("/v2/team/app/manifests/1.0", "200");
        head.0.insert("method", "HEAD".into());
        j.take("regate::access", &head);
        let (events, total) = j.events(|_| true, 10);
        assert_eq!(total, 2);
        assert_eq!(events[0].kind, Kind::RefusedLogin);
        assert_eq!(events[0].detail, "incorrect username or password");
        assert_eq!(
            (events[1].kind, events[1].reference.as_str()),
            (Kind::Push, "1.0")
        );
        let today = crate::auth::token::unix_now() / 86_400;
        let days = j.days(today, 3);
        assert_eq!(days.len(), 3);
        assert_eq!(
            days[2].1,
            Day {
                pulls: 2,
                pushes: 1
            }
        );
        assert_eq!(days[0].1, Day::default());
    }
}
