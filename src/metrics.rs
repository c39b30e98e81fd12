//! Counters for `/metrics`, in the Prometheus text format. Plain atomics: reading them
//! costs a request nothing it would notice.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the upstream latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub tokens_issued: AtomicU64,
    pub scopes_granted: AtomicU64,
    pub scopes_denied: AtomicU64,
    pub auth_failures: AtomicU64,
    pub throttled: AtomicU64,
    pub bytes_from_clients: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    pub token_cache_hits: AtomicU64,
    pub token_cache_misses: AtomicU64,
    pub credential_cache_hits: AtomicU64,
    pub credential_cache_misses: AtomicU64,
    pub ldap_binds: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub cache_stored: AtomicU64,
    pub cache_refused: AtomicU64,
    upstream_buckets: [AtomicU64; BUCKETS.len()],
    upstream_count: AtomicU64,
    upstream_micros: AtomicU64,
}

impl Metrics {
    pub fn request(&self, route: &'static str, status: u16) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((route, status)).or_default() += 1;
        }
    }

    /// Time to the upstream's response head.
    pub fn upstream(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.upstream_buckets) {
            if secs <= *bound {
                count.fetch_add(1, Relaxed);
            }
        }
        self.upstream_count.fetch_add(1, Relaxed);
        self.upstream_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            );
        };
        counter(
            "regate_tokens_issued_total",
            "Tokens signed by /auth.",
            self.tokens_issued.load(Relaxed),
        );
        counter(
            "regate_token_scopes_granted_total",
            "Requested scopes granted at least one action.",
            self.scopes_granted.load(Relaxed),
        );
        counter(
            "regate_token_scopes_denied_total",
            "Requested scopes granted nothing.",
            self.scopes_denied.load(Relaxed),
        );
        counter(
            "regate_authentication_failures_total",
            "Token requests with wrong credentials.",
            self.auth_failures.load(Relaxed),
        );
        counter(
            "regate_throttled_total",
            "Token requests refused by the login throttle.",
            self.throttled.load(Relaxed),
        );
        counter(
            "regate_bytes_from_clients_total",
            "Request body bytes forwarded to the registry.",
            self.bytes_from_clients.load(Relaxed),
        );
        counter(
            "regate_bytes_to_clients_total",
            "Response body bytes sent to clients.",
            self.bytes_to_clients.load(Relaxed),
        );
        counter(
            "regate_token_cache_hits_total",
            "Bearer tokens found verified in the cache.",
            self.token_cache_hits.load(Relaxed),
        );
        counter(
            "regate_token_cache_misses_total",
            "Bearer tokens verified by signature.",
            self.token_cache_misses.load(Relaxed),
        );
        counter(
            "regate_credential_cache_hits_total",
            "Passwords found verified in the cache.",
            self.credential_cache_hits.load(Relaxed),
        );
        counter(
            "regate_credential_cache_misses_total",
            "Passwords checked with bcrypt.",
            self.credential_cache_misses.load(Relaxed),
        );
        counter(
            "regate_ldap_binds_total",
            "Binds sent to the LDAP directory (service account, users, unknown accounts).",
            self.ldap_binds.load(Relaxed),
        );
        counter(
            "regate_cache_hits_total",
            "Manifest and blob requests answered from the edge cache.",
            self.cache_hits.load(Relaxed),
        );
        counter(
            "regate_cache_misses_total",
            "Manifest and blob requests the edge cache could have answered but sent to the registry.",
            self.cache_misses.load(Relaxed),
        );
        counter(
            "regate_cache_stored_total",
            "Registry answers kept in the edge cache after their digest matched.",
            self.cache_stored.load(Relaxed),
        );
        counter(
            "regate_cache_refused_total",
            "Registry answers not cached because their body did not match their digest.",
            self.cache_refused.load(Relaxed),
        );

        out.push_str("# HELP regate_requests_total Requests by route kind and status.\n# TYPE regate_requests_total counter\n");
        if let Ok(map) = self.requests.lock() {
            for ((route, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "regate_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP regate_upstream_seconds Time to the registry's response head.\n# TYPE regate_upstream_seconds histogram\n");
        for (bound, count) in BUCKETS.iter().zip(&self.upstream_buckets) {
            let _ = writeln!(
                out,
                "regate_upstream_seconds_bucket{{le=\"{bound}\"}} {}",
                count.load(Relaxed)
            );
        }
        let count = self.upstream_count.load(Relaxed);
        let _ = writeln!(out, "regate_upstream_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "regate_upstream_seconds_sum {}",
            self.upstream_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "regate_upstream_seconds_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.request("manifest", 200);
        m.request("manifest", 200);
        m.request("base", 401);
        m.upstream(Duration::from_millis(3));
        m.tokens_issued.fetch_add(1, Relaxed);
        let text = m.render();
        assert!(text.contains("regate_requests_total{route=\"manifest\",status=\"200\"} 2\n"));
        assert!(text.contains("regate_requests_total{route=\"base\",status=\"401\"} 1\n"));
        assert!(text.contains("regate_upstream_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("regate_upstream_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("regate_upstream_seconds_count 1\n"));
        assert!(text.contains("regate_tokens_issued_total 1\n"));
    }
}
