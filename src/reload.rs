//! Live changes: the config file, the server certificate and the token key are watched
//! (and SIGHUP forces a look). A change is loaded and validated in full, then swapped in at
//! once; open connections and transfers in flight keep going. A change that fails to load
//! is refused with a log line, and what was serving keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::runtime::Runtime;
use crate::tls::{self, Certificates};

/// How often the watched files are looked at: a few `stat` calls.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Runtime(#[from] crate::Error),
    #[error("server certificate: {0}")]
    Tls(#[from] tls::TlsError),
}

/// What the files looked like when last loaded.
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(paths: &[PathBuf]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        })
        .collect()
}

/// The files whose change means a reload.
fn watched(config: &Config) -> Vec<PathBuf> {
    let mut paths = vec![config.path.clone()];
    paths.extend(config.htpasswd.clone());
    if let Some(ldap) = &config.ldap {
        paths.extend(ldap.bind_password_file.clone());
        paths.extend(ldap.ca_certificate.clone());
    }
    for p in &config.idp {
        if let crate::auth::idp::ClientSecret::File(path) = &p.client_secret {
            paths.push(path.clone());
        }
    }
    paths.extend(config.token.previous_certificates.iter().cloned());
    let server = config.server.tls.as_ref().and_then(|t| t.files());
    for files in [server, config.token.key.as_ref()].into_iter().flatten() {
        paths.push(files.certificate.clone());
        paths.push(files.key.clone());
    }
    paths
}

#[derive(Clone)]
pub struct Reloader {
    gateway: Arc<Gateway>,
    certs: Option<Arc<Certificates>>,
}

impl Reloader {
    pub fn new(gateway: Arc<Gateway>, certs: Option<Arc<Certificates>>) -> Reloader {
        Reloader { gateway, certs }
    }

    /// Loads the config file again and swaps everything in, or changes nothing.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let current = self.gateway.runtime();
        let config = Config::load(&current.config.path)?;
        let old = &current.config;
        for (what, changed) in [
            ("server.addr", config.server.listen != old.server.listen),
            (
                "server.metrics_addr",
                config.server.metrics_listen != old.server.metrics_listen,
            ),
            (
                "server.max_connections",
                config.server.max_connections != old.server.max_connections,
            ),
            ("upstream.url", config.upstream.urls != old.upstream.urls),
            ("shared_state", config.shared_state != old.shared_state),
            ("cache", config.cache != old.cache),
            (
                "upstream.ca_certificate",
                config.upstream.ca_certificate != old.upstream.ca_certificate,
            ),
            (
                "the token DB's file (level_token_db.path)",
                config.token_db != old.token_db,
            ),
            (
                "HTTPS on or off",
                config.server.tls.is_some() != old.server.tls.is_some(),
            ),
            (
                "server.letsencrypt",
                config.server.tls.as_ref().and_then(|t| t.acme())
                    != old.server.tls.as_ref().and_then(|t| t.acme()),
            ),
            (
                "server.tls_min_version or tls_curve_preferences",
                config
                    .server
                    .tls
                    .as_ref()
                    .map(|t| (t.tls13_only, &t.curves))
                    != old.server.tls.as_ref().map(|t| (t.tls13_only, &t.curves)),
            ),
        ] {
            if changed {
                tracing::warn!("{what} changed: that takes a restart; the rest is reloaded");
            }
        }
        // Both halves are loaded before either is swapped in.
        // A certificate from files is read again; one from ACME is the renewal's business,
        // and a change between the two waits for the restart.
        let files = |c: &Config| c.server.tls.as_ref().and_then(|t| t.files()).cloned();
        let new_cert = match (files(&config), files(old), &self.certs) {
            (Some(files), Some(_), Some(_)) => Some(tls::load_certified_key(&files)?),
            _ => None,
        };
        let runtime = Runtime::build(config, current.lasting())?;
        if let (Some(cert), Some(certs)) = (new_cert, &self.certs) {
            certs.replace(cert);
        }
        for w in &runtime.config.warnings {
            tracing::warn!("{}: {w}", runtime.config.path.display());
        }
        self.gateway.swap(runtime);
        Ok(())
    }

    /// Polls the watched files until shutdown; `hup` asks for a reload now.
    pub async fn run(self, mut hup: watch::Receiver<()>, mut shutdown: watch::Receiver<bool>) {
        let mut last = stamp(&watched(&self.gateway.runtime().config));
        let mut ticker = tokio::time::interval(POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = ticker.tick() => false,
                r = hup.changed() => r.is_ok(),
                _ = shutdown.changed() => return,
            };
            let paths = watched(&self.gateway.runtime().config);
            let now = stamp(&paths);
            if !forced && now == last {
                continue;
            }
            let path = display(&paths[0]);
            // Which files changed, named in the log line ("SIGHUP" when none did).
            let changed = match forced && now == last {
                true => "SIGHUP".to_owned(),
                false => changed_files(&paths, &last, &now),
            };
            // Reading, parsing and checking a big config (100,000 users: a second or so)
            // is blocking work: off the runtime's threads, so requests never wait on it.
            let reloader = self.clone();
            let reloaded = match tokio::task::spawn_blocking(move || reloader.reload()).await {
                Ok(result) => result,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled: the runtime is shutting down.
                Err(_) => return,
            };
            last = match reloaded {
                Ok(()) => {
                    tracing::info!(config = %path, changed = %changed, "configuration reloaded");
                    // The new config may watch other files.
                    stamp(&watched(&self.gateway.runtime().config))
                }
                Err(e) => {
                    self.gateway.runtime().metrics.reload_failed();
                    tracing::error!(
                        config = %path,
                        changed = %changed,
                        "configuration NOT reloaded, the previous one keeps serving: {e}"
                    );
                    // Reported once, not every second; retried when a file changes again.
                    now
                }
            };
        }
    }
}

/// The files whose stamp differs, by name, comma-separated.
fn changed_files(paths: &[PathBuf], before: &Stamp, now: &Stamp) -> String {
    let names: Vec<String> = paths
        .iter()
        .zip(now)
        .enumerate()
        .filter(|(i, (_, stamp))| before.get(*i) != Some(stamp))
        .map(|(_, (p, _))| display(p))
        .collect();
    match names.is_empty() {
        true => "the list of watched files".to_owned(),
        false => names.join(", "),
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_names_the_files_that_changed() {
        let paths = [
            PathBuf::from("/etc/regate/regate.yml"),
            PathBuf::from("/etc/regate/htpasswd"),
            PathBuf::from("/etc/regate/server.crt"),
        ];
        let t = |s| Some((SystemTime::UNIX_EPOCH + Duration::from_secs(s), 10));
        let before = vec![t(1), t(1), t(1)];
        let now = vec![t(1), t(2), t(3)];
        assert_eq!(
            changed_files(&paths, &before, &now),
            "/etc/regate/htpasswd, /etc/regate/server.crt"
        );
        // A file that appeared counts; a list that grew names the new one.
        let before = vec![t(1), None];
        let now = vec![t(1), t(5), t(5)];
        assert_eq!(
            changed_files(&paths, &before, &now),
            "/etc/regate/htpasswd, /etc/regate/server.crt"
        );
    }
}
