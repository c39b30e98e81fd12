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
    /// `server.letsencrypt` is on: the ACME lines below are rendered.
    pub acme_enabled: std::sync::atomic::AtomicBool,
    pub acme_checks: AtomicU64,
    pub acme_certificates_obtained: AtomicU64,
    pub acme_renewal_failures: AtomicU64,
    /// The served certificate's notAfter, in Unix seconds; 0: none yet.
    pub acme_certificate_expiry: AtomicU64,
    /// `shared_state` is configured: the lines about it are rendered.
    pub shared_state_enabled: std::sync::atomic::AtomicBool,
    /// 1 while the last call to the shared state worked.
    pub shared_state_up: AtomicU64,
    pub shared_state_errors: AtomicU64,
    /// Login attempts counted by this replica alone because the shared state was down.
    pub throttle_local_fallbacks: AtomicU64,
    /// Refresh grants judged without the shared revocations (the shared state was down).
    pub revocation_local_fallbacks: AtomicU64,
    config: Mutex<Option<ConfigStamp>>,
    pub reload_failures: AtomicU64,
    /// 1 when the last reload worked (or none was tried), 0 after a refused one.
    pub last_reload_ok: AtomicU64,
    /// Requests sent to another registry after one refused the connection.
    pub upstream_retries: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub cache_stored: AtomicU64,
    pub cache_refused: AtomicU64,
    /// Cache changes other replicas published, applied here.
    pub cache_changes_received: AtomicU64,
    /// This replica's cache changes the shared state did not take (it was down, or too
    /// many were waiting): the others see them within the cache's TTLs instead.
    pub cache_changes_unsent: AtomicU64,
    /// Client connections open now (the main and redirect listeners).
    pub connections_open: AtomicU64,
    /// `server.max_connections` in force.
    pub connections_max: AtomicU64,
    /// Times the accept loop found every slot taken and stopped accepting.
    pub connection_cap_reached: AtomicU64,
    /// Connections accepted after waiting in the listen queue for a slot.
    pub connections_held: AtomicU64,
    upstream_buckets: [AtomicU64; BUCKETS.len()],
    upstream_count: AtomicU64,
    upstream_micros: AtomicU64,
}

/// The configuration running: a digest of its file and when it was loaded.
struct ConfigStamp {
    sha256: String,
    loaded: u64,
}

impl Metrics {
    /// A configuration was loaded (at start, or by a reload).
    pub fn config_loaded(&self, sha256: &str) {
        let loaded = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Ok(mut c) = self.config.lock() {
            *c = Some(ConfigStamp {
                sha256: sha256.to_owned(),
                loaded,
            });
        }
        self.last_reload_ok.store(1, Relaxed);
    }

    /// A reload was refused: the previous configuration keeps running.
    pub fn reload_failed(&self) {
        self.reload_failures.fetch_add(1, Relaxed);
        self.last_reload_ok.store(0, Relaxed);
    }

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
        counter(
            "regate_cache_changes_received_total",
            "Pushes and deletes other replicas made, applied to this replica's edge cache.",
            self.cache_changes_received.load(Relaxed),
        );
        counter(
            "regate_cache_changes_unsent_total",
            "Pushes and deletes through this replica the shared state did not pass on (the others see them within the cache's TTLs).",
            self.cache_changes_unsent.load(Relaxed),
        );
        counter(
            "regate_config_reload_failures_total",
            "Reloads refused (a file that did not load); the previous configuration kept running.",
            self.reload_failures.load(Relaxed),
        );
        counter(
            "regate_upstream_retries_total",
            "Requests sent to another registry after one refused the connection.",
            self.upstream_retries.load(Relaxed),
        );
        counter(
            "regate_connection_cap_reached_total",
            "Times every connection slot (server.max_connections) was taken and accepting paused until one closed.",
            self.connection_cap_reached.load(Relaxed),
        );
        counter(
            "regate_connections_held_total",
            "Connections that waited in the listen queue for a slot because server.max_connections were open.",
            self.connections_held.load(Relaxed),
        );
        let shared = self.shared_state_enabled.load(Relaxed);
        if shared {
            counter(
                "regate_shared_state_errors_total",
                "Calls to the shared state (Redis) that failed or were not tried while it was down.",
                self.shared_state_errors.load(Relaxed),
            );
            counter(
                "regate_throttle_local_fallbacks_total",
                "Login attempts counted by this replica alone because the shared state was down.",
                self.throttle_local_fallbacks.load(Relaxed),
            );
            counter(
                "regate_refresh_revocation_local_fallbacks_total",
                "Refresh grants checked against this replica's revocations only because the shared state was down.",
                self.revocation_local_fallbacks.load(Relaxed),
            );
        }
        if self.acme_enabled.load(Relaxed) {
            counter(
                "regate_acme_checks_total",
                "Looks at whether the ACME certificate is due for renewal.",
                self.acme_checks.load(Relaxed),
            );
            counter(
                "regate_acme_certificates_obtained_total",
                "Certificates obtained from the ACME CA (the first and each renewal).",
                self.acme_certificates_obtained.load(Relaxed),
            );
            counter(
                "regate_acme_renewal_failures_total",
                "Attempts to obtain a certificate from the ACME CA that failed; the current certificate kept serving.",
                self.acme_renewal_failures.load(Relaxed),
            );
            let expiry = self.acme_certificate_expiry.load(Relaxed);
            // No line before the first certificate: 0 would read as expired in 1970.
            if expiry > 0 {
                let _ = write!(
                    out,
                    "# HELP regate_acme_certificate_expiry_timestamp_seconds When the served certificate expires (Unix time).\n# TYPE regate_acme_certificate_expiry_timestamp_seconds gauge\nregate_acme_certificate_expiry_timestamp_seconds {expiry}\n"
                );
            }
        }

        let mut gauge = |name: &str, help: &str, value: &dyn std::fmt::Display, labels: &str| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{labels} {value}\n"
            );
        };
        if shared {
            gauge(
                "regate_shared_state_up",
                "1 when the last call to the shared state (Redis) worked, 0 while it is down.",
                &self.shared_state_up.load(Relaxed),
                "",
            );
        }
        gauge(
            "regate_connections_open",
            "Client connections open now.",
            &self.connections_open.load(Relaxed),
            "",
        );
        gauge(
            "regate_connections_max",
            "The most client connections held open at once (server.max_connections).",
            &self.connections_max.load(Relaxed),
            "",
        );
        gauge(
            "regate_config_last_reload_successful",
            "1 when the last reload worked (or none was tried), 0 when it was refused.",
            &self.last_reload_ok.load(Relaxed),
            "",
        );
        if let Some(c) = self.config.lock().ok().as_deref().and_then(Option::as_ref) {
            gauge(
                "regate_config_info",
                "The configuration running: sha256 of its file (replicas with one file show one value).",
                &1,
                &format!("{{sha256=\"{}\"}}", c.sha256),
            );
            gauge(
                "regate_config_loaded_timestamp_seconds",
                "When the running configuration was loaded (Unix time).",
                &c.loaded,
                "",
            );
        }

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
        assert!(
            !text.contains("regate_shared_state_up"),
            "no shared state, no line"
        );
    }

    #[test]
    fn the_running_config_and_a_refused_reload_show() {
        let m = Metrics::default();
        m.config_loaded("ab12");
        let text = m.render();
        assert!(
            text.contains("regate_config_info{sha256=\"ab12\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("regate_config_last_reload_successful 1\n"));
        assert!(text.contains("regate_config_loaded_timestamp_seconds "));
        m.reload_failed();
        let text = m.render();
        assert!(text.contains("regate_config_reload_failures_total 1\n"));
        assert!(text.contains("regate_config_last_reload_successful 0\n"));
        assert!(
            text.contains("regate_config_info{sha256=\"ab12\"} 1\n"),
            "the old one runs"
        );
    }
}
