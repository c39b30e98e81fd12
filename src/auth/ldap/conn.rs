//! One login on one connection to the directory: connecting (TLS as configured), binding,
//! searching for the account and its groups, and the pool the connections return to.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};

use super::text::{attribute, convert, push_unique};
use super::{
    escape_filter_value, expand, Directory, DirectoryError, GroupSearch, Idle, Lookup, TlsMode,
    MAX_IDLE,
};
use crate::acl::Labels;
use crate::auth::Secret;
use crate::metrics::Metrics;

impl Directory {
    pub(super) fn pooled(&self) -> Option<Ldap> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut conn) = idle.pop() {
            if conn.since.elapsed() < MAX_IDLE && !conn.ldap.is_closed() {
                return Some(conn.ldap);
            }
        }
        None
    }

    pub(super) fn give_back(&self, ldap: Ldap) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.config.pool_size {
            idle.push(Idle {
                ldap,
                since: Instant::now(),
            });
        }
    }

    pub(super) async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.config.connect_timeout)
            .set_starttls(self.config.tls == TlsMode::StartTls)
            .set_no_tls_verify(self.config.insecure_tls_skip_verify);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.config.url)
            .await
            .map_err(|source| DirectoryError::Ldap {
                step: "connect",
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!("LDAP connection closed: {e}");
            }
        });
        Ok(ldap)
    }

    pub(super) async fn ask_on(
        &self,
        ldap: &mut Ldap,
        account: &str,
        password: Option<&Secret>,
    ) -> Result<Lookup, DirectoryError> {
        let c = &self.config;
        let t = c.timeout;
        // The first bind also clears whoever the previous login on a pooled connection
        // was bound as: searches never run with a stranger's rights.
        if c.initial_bind_as_user {
            let password = password.ok_or(DirectoryError::NeedsPassword)?;
            let template = c.bind_dn.as_deref().unwrap_or_default();
            let dn = expand(template, &[("${account}", &ldap3::dn_escape(account))]);
            if !bind(
                ldap,
                t,
                "bind as the user",
                &dn,
                password.expose(),
                &self.metrics,
            )
            .await?
            {
                return Ok(Lookup::WrongPassword);
            }
        } else {
            self.bind_service(ldap).await?;
        }

        let filter = expand(&c.filter, &[("${account}", &escape_filter_value(account))]);
        let attributes = self.user_attributes();
        // Two entries are enough to know the filter is ambiguous.
        let result = ldap
            .with_timeout(t)
            .with_search_options(SearchOptions::default().sizelimit(2))
            .search(&c.base, Scope::Subtree, &filter, attributes)
            .await
            .map_err(|source| DirectoryError::Ldap {
                step: "search for the account",
                source,
            })?;
        let (entries, status) = (result.0, result.1);
        const SIZE_LIMIT_EXCEEDED: u32 = 4;
        if status.rc != 0 && status.rc != SIZE_LIMIT_EXCEEDED {
            return Err(DirectoryError::Refused {
                step: "search for the account",
                rc: status.rc,
                text: status.text,
            });
        }
        let mut entries: Vec<SearchEntry> =
            entries.into_iter().map(SearchEntry::construct).collect();
        if entries.len() > 1 {
            tracing::warn!(
                account,
                filter = %c.filter,
                "ldap_auth.filter matches more than one entry for this account; refusing the login"
            );
            return self.no_such_account(ldap, password).await;
        }
        let Some(entry) = entries.pop().filter(|e| !e.dn.is_empty()) else {
            return self.no_such_account(ldap, password).await;
        };

        if let (Some(password), false) = (password, c.initial_bind_as_user) {
            if !bind(
                ldap,
                t,
                "bind as the user",
                &entry.dn,
                password.expose(),
                &self.metrics,
            )
            .await?
            {
                return Ok(Lookup::WrongPassword);
            }
            if c.group_search.is_some() {
                // Groups are read with the service account's rights, as the entry was.
                self.bind_service(ldap).await?;
            }
        }

        let mut labels = self.labels_of(&entry);
        if let Some(groups) = &c.group_search {
            let names = self.groups_of(ldap, groups, &entry.dn, account).await?;
            let values = labels.entry(groups.label.clone()).or_default();
            for name in names {
                push_unique(values, name);
            }
            if values.is_empty() {
                labels.remove(&groups.label);
            }
        }
        Ok(Lookup::Found {
            dn: entry.dn,
            labels,
        })
    }

    /// An account the search did not find, for a login with a password: one bind more
    /// (as a DN under `base` that no entry has, with the password given), whose answer
    /// is not read. A wrong password for a real account costs the directory a bind as
    /// that account after the search; without this, an unknown account would answer one
    /// round trip sooner and so tell an attacker which accounts exist. The directory
    /// checks no password for a DN it does not hold, so what is equalled is the round
    /// trip, which is most of a bind's cost from here.
    pub(super) async fn no_such_account(
        &self,
        ldap: &mut Ldap,
        password: Option<&Secret>,
    ) -> Result<Lookup, DirectoryError> {
        if let Some(password) = password {
            let c = &self.config;
            let dn = format!("cn=regate-no-such-account,{}", c.base);
            let _ = bind(
                ldap,
                c.timeout,
                "bind as the user",
                &dn,
                password.expose(),
                &self.metrics,
            )
            .await;
        }
        Ok(Lookup::NoSuchAccount)
    }

    /// Binds as `bind_dn`, or anonymously without one.
    pub(super) async fn bind_service(&self, ldap: &mut Ldap) -> Result<(), DirectoryError> {
        let (dn, password) = match (&self.config.bind_dn, &self.bind_password) {
            (Some(dn), Some(password)) => (dn.as_str(), password.expose()),
            _ => ("", ""),
        };
        let step = if dn.is_empty() {
            "anonymous bind"
        } else {
            "bind as bind_dn"
        };
        self.metrics.ldap_binds.fetch_add(1, Relaxed);
        let result = ldap
            .with_timeout(self.config.timeout)
            .simple_bind(dn, password)
            .await
            .map_err(|source| DirectoryError::Ldap { step, source })?;
        if result.rc != 0 {
            // A rejected service account is the config's fault, not the user's.
            return Err(DirectoryError::Refused {
                step,
                rc: result.rc,
                text: result.text,
            });
        }
        Ok(())
    }

    pub(super) async fn groups_of(
        &self,
        ldap: &mut Ldap,
        groups: &GroupSearch,
        dn: &str,
        account: &str,
    ) -> Result<Vec<String>, DirectoryError> {
        let filter = expand(
            &groups.filter,
            &[
                ("${dn}", &escape_filter_value(dn)),
                ("${account}", &escape_filter_value(account)),
            ],
        );
        let step = "group search";
        let result = ldap
            .with_timeout(self.config.timeout)
            .search(
                &groups.base,
                Scope::Subtree,
                &filter,
                vec![groups.attribute.as_str()],
            )
            .await
            .map_err(|source| DirectoryError::Ldap { step, source })?;
        if result.1.rc != 0 {
            return Err(DirectoryError::Refused {
                step,
                rc: result.1.rc,
                text: result.1.text,
            });
        }
        let mut names = Vec::new();
        for entry in result.0.into_iter().map(SearchEntry::construct) {
            for value in attribute(&entry, &groups.attribute) {
                push_unique(
                    &mut names,
                    convert(value, groups.parse_cn, groups.lower_case),
                );
            }
        }
        Ok(names)
    }

    /// The attributes `labels` reads; none (`1.1`, RFC 4511) when it reads none.
    pub(super) fn user_attributes(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in &self.config.labels {
            if !out.iter().any(|a| a.eq_ignore_ascii_case(&m.attribute)) {
                out.push(&m.attribute);
            }
        }
        if out.is_empty() {
            out.push("1.1");
        }
        out
    }

    pub(super) fn labels_of(&self, entry: &SearchEntry) -> Labels {
        let mut labels = Labels::new();
        for m in &self.config.labels {
            let values = attribute(entry, &m.attribute);
            if values.is_empty() {
                continue; // docker_auth: an attribute the entry lacks gives no label
            }
            let out = labels.entry(m.label.clone()).or_default();
            for value in values {
                push_unique(out, convert(value, m.parse_cn, m.lower_case));
            }
        }
        labels
    }
}

/// A simple bind: `Ok(true)` bound, `Ok(false)` the credentials were refused, `Err` the
/// directory could not say.
pub(super) async fn bind(
    ldap: &mut Ldap,
    timeout: Duration,
    step: &'static str,
    dn: &str,
    password: &str,
    metrics: &Metrics,
) -> Result<bool, DirectoryError> {
    // Checked by the callers too; an empty DN or password is an anonymous or
    // unauthenticated bind, never a login.
    if dn.is_empty() || password.is_empty() {
        return Ok(false);
    }
    metrics.ldap_binds.fetch_add(1, Relaxed);
    let result = ldap
        .with_timeout(timeout)
        .simple_bind(dn, password)
        .await
        .map_err(|source| DirectoryError::Ldap { step, source })?;
    match result.rc {
        0 => Ok(true),
        // invalidCredentials, inappropriateAuthentication, insufficientAccessRights,
        // unwillingToPerform (a locked or expired account on most servers),
        // constraintViolation (OpenLDAP's password policy).
        49 | 48 | 50 | 53 | 19 => Ok(false),
        rc => Err(DirectoryError::Refused {
            step,
            rc,
            text: result.text,
        }),
    }
}
