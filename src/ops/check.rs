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
    providers(&config, &mut report);
    backends(&config, &mut report);
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

/// Each identity provider as `serve` builds it (its client secret read), and what it
/// publishes read (an OpenID issuer's discovery document and keys), from a thread of its
/// own with a small runtime: `check` is synchronous, and may be called inside a runtime.
fn providers(config: &Config, report: &mut Report) {
    if let Some(file) = &config.token_db {
        report.notes.push(format!(
            "token DB (identity providers' tokens, credentials, sessions): {}",
            file.display()
        ));
    }
    for settings in &config.idp {
        let section = settings.backend;
        let store: std::sync::Arc<dyn crate::state::Store> =
            std::sync::Arc::new(crate::state::Local::memory());
        let provider = match crate::auth::idp::Provider::new(settings.clone(), store) {
            Ok(p) => p,
            Err(e) => {
                report.errors.push(e.to_string());
                continue;
            }
        };
        let run = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(provider.warm())
                .map_err(|e| e.to_string())
        };
        match std::thread::scope(|s| s.spawn(run).join()) {
            Ok(Ok(())) => report.notes.push(format!(
                "{section}: signs in with {} at {}",
                provider.label(),
                provider.route()
            )),
            Ok(Err(e)) => report.errors.push(format!("{section}: {e}")),
            Err(_) => report.errors.push(format!("{section}: the check failed")),
        }
    }
}

/// Where the SQL sections and the programs are (nothing is connected to or run: the
/// conn strings and commands were checked when the config loaded).
fn backends(config: &Config, report: &mut Report) {
    if let Some(db) = &config.xorm_auth {
        report.notes.push(format!(
            "xorm_auth: accounts in {} (table xorm_user, made at first use if missing)",
            db.target.describe()
        ));
    }
    if let Some(acl) = &config.acl_xorm {
        report.notes.push(format!(
            "acl_xorm: rules in {} (table xorm_acl_entry), read again every {:?}",
            acl.database.target.describe(),
            acl.cache_ttl
        ));
    }
    for (section, program) in [
        ("ext_auth", &config.ext_auth),
        ("ext_authz", &config.ext_authz),
    ] {
        if let Some(p) = program {
            report.notes.push(format!(
                "{section}: runs {} (at most {} at once, each killed after {:?})",
                p.command.display(),
                p.concurrency,
                p.timeout
            ));
        }
    }
    if let Some(c) = &config.casbin_authz {
        report.notes.push(format!(
            "casbin_authz: model {}, policy {}",
            c.model_path.display(),
            c.policy_path.display()
        ));
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
