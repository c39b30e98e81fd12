//! `regate check`: the config loads (every error in it, in file order), the files it names
//! load as `serve` loads them (certificates, keys, the directory's bind password and CA, an
//! https registry's CA), and the lints find nothing that cannot work as written.

use std::path::Path;

use crate::config::Config;

use super::lint::{self, Warning};

/// What `check` found. Errors make the config unusable; warnings are things that load but
/// may not do what was meant; notes say what `serve` will do.
#[derive(Debug, Default)]
pub struct Report {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    /// The one-line summary of a config that loads.
    pub summary: Option<String>,
}

impl Report {
    /// Whether the run failed: any error, or any warning when `strict`.
    pub fn failed(&self, strict: bool) -> bool {
        !self.errors.is_empty() || strict && !self.warnings.is_empty()
    }
}

pub fn check(path: &Path) -> Report {
    let mut report = Report::default();
    let (config, lints) = match lint::load_and_lint(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            report.errors = e.all().map(|e| e.to_string()).collect();
            return report;
        }
    };
    report.warnings = config
        .warnings
        .iter()
        .map(|w| format!("{}: {w}", path.display()))
        .chain(lints.iter().map(Warning::to_string))
        .collect();
    files(&config, &mut report);
    robots(&config, &mut report);
    report.summary = Some(format!(
        "{}: {} ({} users, {} ACL rules, upstream {}, {} warning(s))",
        path.display(),
        if report.errors.is_empty() {
            "ok"
        } else {
            "NOT ok"
        },
        config.users.len(),
        config.acl.len(),
        config
            .upstream
            .urls
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        report.warnings.len()
    ));
    report
}

/// Key and certificate files are part of a config that works: read them as `serve` does.
/// The directory itself is not contacted.
fn files(config: &Config, report: &mut Report) {
    let mut error = |what: &str, e: &dyn std::fmt::Display| {
        report.errors.push(format!("{what}: {e}"));
    };
    match config.server.tls.as_ref().map(|t| &t.source) {
        Some(crate::tls::CertSource::Files(files)) => {
            if let Err(e) = crate::tls::load_certified_key(files) {
                error("server TLS", &e);
            }
        }
        // The CA is not contacted; its CA file, cache_dir and a cached certificate are read.
        Some(crate::tls::CertSource::Acme(settings)) => match crate::acme::inspect(settings) {
            Ok(notes) => report.notes.extend(notes),
            Err(e) => error("server.letsencrypt", &e),
        },
        None => {}
    }
    if let Some(ldap) = &config.ldap {
        if let Err(e) = crate::auth::ldap::Directory::new(ldap.clone(), Default::default()) {
            error("ldap_auth", &e);
        }
    }
    if let Some(ca) = &config.upstream.ca_certificate {
        if let Err(e) = crate::tls::client_config(Some(ca)) {
            error("upstream", &e);
        }
    }
    for cert in &config.token.previous_certificates {
        if let Err(e) = crate::auth::keys::PublicKey::from_certificate(cert) {
            error("token.previous_certificates", &e);
        }
    }
    // Redis is not contacted; its password file and CA are read, as `serve` reads them.
    if let Some(redis) = &config.shared_state {
        if let Err(e) = crate::state::RedisStore::new(redis, Default::default()) {
            error("shared_state.redis", &e);
        }
    }
    match &config.token.key {
        Some(files) => {
            if let Err(e) = crate::auth::keys::SigningKey::load(&files.certificate, &files.key) {
                error("token key", &e);
            }
        }
        None => report.notes.push(format!(
            "token key: none configured; `serve` uses (or generates) {}",
            config.data_dir.join("token.crt").display()
        )),
    }
}

/// Each robot and when it ends.
fn robots(config: &Config, report: &mut Report) {
    let mut robots: Vec<_> = config
        .users
        .iter()
        .filter_map(|(name, u)| u.robot.as_ref().map(|r| (name, r)))
        .collect();
    robots.sort_by_key(|(name, _)| *name);
    for (name, robot) in robots {
        let expires = match robot.expires {
            Some(t) => {
                // The same judgement a login makes.
                let state = if robot.expired_at(std::time::SystemTime::now()) {
                    " (EXPIRED)"
                } else {
                    ""
                };
                let t: time::OffsetDateTime = t.into();
                format!("expires {}{state}", t.date())
            }
            None => "never expires".to_owned(),
        };
        report.notes.push(format!(
            "robot {name}: {} rule(s), {expires}",
            robot.acl.len()
        ));
    }
}
