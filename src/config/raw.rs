//! The config file as written: docker_auth's `auth_config.yml` keys, plus regate's own
//! (`upstream`, `token.service`, `token.realm`, `data_dir`). Unknown keys are errors, so a
//! misspelt or mis-indented key is reported instead of silently ignored (docker_auth's
//! YAML parser ignores them).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::acl;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: Option<RawServer>,
    pub token: Option<RawToken>,
    pub users: Option<BTreeMap<String, Option<RawUser>>>,
    /// regate: robot accounts for CI, each with its own rules and an expiry date.
    pub robots: Option<BTreeMap<String, RawRobot>>,
    pub acl: Option<Vec<acl::RawEntry>>,
    pub upstream: Option<RawUpstream>,
    pub data_dir: Option<String>,
    /// regate: where audit lines (JSON) go: `stdout` (default), `stderr`, `off`, or a file.
    pub audit_log: Option<String>,
    /// regate: a file of `user:bcrypt` lines, as registry:2's htpasswd auth reads.
    pub htpasswd: Option<String>,
    /// docker_auth's LDAP backend, tried after `users` and `htpasswd`.
    pub ldap_auth: Option<RawLdap>,
    // docker_auth sections regate does not implement: accepted by the parser only so the
    // error can say exactly that, with the line.
    pub ext_auth: Option<serde_yaml::Value>,
    pub google_auth: Option<serde_yaml::Value>,
    pub github_auth: Option<serde_yaml::Value>,
    pub oidc_auth: Option<serde_yaml::Value>,
    pub gitlab_auth: Option<serde_yaml::Value>,
    pub mongo_auth: Option<serde_yaml::Value>,
    pub xorm_auth: Option<serde_yaml::Value>,
    pub plugin_authn: Option<serde_yaml::Value>,
    pub acl_mongo: Option<serde_yaml::Value>,
    pub acl_xorm: Option<serde_yaml::Value>,
    pub ext_authz: Option<serde_yaml::Value>,
    pub plugin_authz: Option<serde_yaml::Value>,
    pub casbin_authz: Option<serde_yaml::Value>,
}

impl RawConfig {
    /// The docker_auth sections present that regate does not implement.
    pub fn unsupported_sections(&self) -> Vec<&'static str> {
        let sections = [
            ("ext_auth", self.ext_auth.is_some()),
            ("google_auth", self.google_auth.is_some()),
            ("github_auth", self.github_auth.is_some()),
            ("oidc_auth", self.oidc_auth.is_some()),
            ("gitlab_auth", self.gitlab_auth.is_some()),
            ("mongo_auth", self.mongo_auth.is_some()),
            ("xorm_auth", self.xorm_auth.is_some()),
            ("plugin_authn", self.plugin_authn.is_some()),
            ("acl_mongo", self.acl_mongo.is_some()),
            ("acl_xorm", self.acl_xorm.is_some()),
            ("ext_authz", self.ext_authz.is_some()),
            ("plugin_authz", self.plugin_authz.is_some()),
            ("casbin_authz", self.casbin_authz.is_some()),
        ];
        sections
            .into_iter()
            .filter(|(_, present)| *present)
            .map(|(name, _)| name)
            .collect()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub addr: Option<String>,
    pub net: Option<String>,
    pub path_prefix: Option<String>,
    pub certificate: Option<String>,
    pub key: Option<String>,
    pub hsts: Option<bool>,
    pub tls_min_version: Option<String>,
    pub tls_curve_preferences: Option<serde_yaml::Value>,
    pub tls_cipher_suites: Option<serde_yaml::Value>,
    pub letsencrypt: Option<serde_yaml::Value>,
    pub real_ip_header: Option<String>,
    pub real_ip_pos: Option<i64>,
    /// regate: the peers (addresses or CIDR blocks) whose `real_ip_header` counts, as
    /// nginx's `set_real_ip_from`.
    pub trusted_proxies: Option<Vec<String>>,
    /// regate: a plain-HTTP listener that only redirects to HTTPS.
    pub http_redirect_addr: Option<String>,
    /// regate: a plain-HTTP listener for `/metrics` alone (e.g. `127.0.0.1:9090`).
    pub metrics_addr: Option<String>,
    /// regate: HTTP Basic credentials on registry routes: `auto` (HTTPS only), `on`, `off`.
    pub basic_auth: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub issuer: Option<String>,
    pub expiration: Option<i64>,
    pub certificate: Option<String>,
    pub key: Option<String>,
    pub disable_legacy_key_id: Option<bool>,
    /// regate: the service name in challenges and the tokens' `aud`.
    pub service: Option<String>,
    /// regate: the realm URL in challenges; by default built from the request's host.
    pub realm: Option<String>,
    /// regate: seconds a refresh token (docker login's identity token) stays valid.
    pub refresh_expiration: Option<i64>,
    /// regate: `libtrust` (registry 2.x, default) or `rfc7638` (registry v3, JWKS).
    pub kid_format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub password: Option<String>,
    pub labels: Option<acl::Labels>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRobot {
    /// bcrypt of the robot's secret.
    pub secret: Option<String>,
    /// `YYYY-MM-DD` (valid through that day, UTC) or an RFC 3339 time.
    pub expires: Option<String>,
    pub labels: Option<acl::Labels>,
    pub acl: Option<Vec<acl::RawEntry>>,
}

/// `ldap_auth`: docker_auth's keys (`addr` ... `labels`), then regate's own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLdap {
    pub addr: Option<String>,
    /// `none`, `starttls` or `always` (LDAPS).
    pub tls: Option<String>,
    pub insecure_tls_skip_verify: Option<bool>,
    pub ca_certificate: Option<String>,
    pub bind_dn: Option<String>,
    pub bind_password_file: Option<String>,
    /// Bind as the user (`bind_dn` with `${account}`) instead of a service account.
    pub initial_bind_as_user: Option<bool>,
    pub base: Option<String>,
    pub filter: Option<String>,
    pub labels: Option<BTreeMap<String, RawLdapLabel>>,
    /// regate: groups found by a search for the user's DN, as a label.
    pub group_search: Option<RawGroupSearch>,
    /// regate: seconds to open a connection (TCP and TLS).
    pub connect_timeout: Option<f64>,
    /// regate: seconds the directory has for one login, all steps together.
    pub timeout: Option<f64>,
    /// regate: connections to the directory at most.
    pub pool_size: Option<i64>,
    /// regate: seconds a successful login is remembered; 0: never.
    pub cache_ttl: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLdapLabel {
    pub attribute: Option<String>,
    pub parse_cn: Option<bool>,
    pub lower_case: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroupSearch {
    pub base: Option<String>,
    pub filter: Option<String>,
    pub attribute: Option<String>,
    pub label: Option<String>,
    pub parse_cn: Option<bool>,
    pub lower_case: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<String>,
    /// regate: seconds the registry may take to answer a complete request.
    pub read_timeout: Option<i64>,
    /// regate: the CA (PEM) that signed an https registry's certificate; the system's
    /// roots when unset.
    pub ca_certificate: Option<String>,
}

/// Every key the file may hold, by section, for "did you mean" and "belongs under" hints.
pub const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "server",
            "token",
            "users",
            "robots",
            "acl",
            "upstream",
            "data_dir",
            "audit_log",
            "htpasswd",
            "ext_auth",
            "google_auth",
            "github_auth",
            "oidc_auth",
            "gitlab_auth",
            "ldap_auth",
            "mongo_auth",
            "xorm_auth",
            "plugin_authn",
            "acl_mongo",
            "acl_xorm",
            "ext_authz",
            "plugin_authz",
            "casbin_authz",
        ],
    ),
    (
        "server",
        &[
            "addr",
            "net",
            "path_prefix",
            "certificate",
            "key",
            "hsts",
            "tls_min_version",
            "tls_curve_preferences",
            "tls_cipher_suites",
            "letsencrypt",
            "real_ip_header",
            "real_ip_pos",
            "trusted_proxies",
            "http_redirect_addr",
            "metrics_addr",
            "basic_auth",
        ],
    ),
    (
        "token",
        &[
            "issuer",
            "expiration",
            "certificate",
            "key",
            "disable_legacy_key_id",
            "service",
            "realm",
            "refresh_expiration",
            "kid_format",
        ],
    ),
    ("users.<name>", &["password", "labels"]),
    ("robots.<name>", &["secret", "expires", "labels", "acl"]),
    ("acl[]", &["match", "actions", "comment"]),
    (
        "acl[].match",
        &["account", "type", "name", "service", "ip", "labels"],
    ),
    ("upstream", &["url", "read_timeout", "ca_certificate"]),
    (
        "ldap_auth",
        &[
            "addr",
            "tls",
            "insecure_tls_skip_verify",
            "ca_certificate",
            "bind_dn",
            "bind_password_file",
            "initial_bind_as_user",
            "base",
            "filter",
            "labels",
            "group_search",
            "connect_timeout",
            "timeout",
            "pool_size",
            "cache_ttl",
        ],
    ),
    (
        "ldap_auth.labels.<name>",
        &["attribute", "parse_cn", "lower_case"],
    ),
    (
        "ldap_auth.group_search",
        &[
            "base",
            "filter",
            "attribute",
            "label",
            "parse_cn",
            "lower_case",
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys serde knows for a struct, read from its "unknown field" error.
    fn serde_keys<T: serde::de::DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
        let e = serde_yaml::from_str::<T>("zzz_not_a_key: 1")
            .unwrap_err()
            .to_string();
        let list = e.split("expected ").nth(1).unwrap();
        // "`a`, `b` or `c`": the quoted words.
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    fn known(section: &str) -> Vec<String> {
        let (_, keys) = KNOWN_KEYS.iter().find(|(s, _)| *s == section).unwrap();
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn the_hint_table_lists_every_key_serde_accepts() {
        let mut pairs = [
            ("", serde_keys::<RawConfig>()),
            ("server", serde_keys::<RawServer>()),
            ("token", serde_keys::<RawToken>()),
            ("users.<name>", serde_keys::<RawUser>()),
            ("robots.<name>", serde_keys::<RawRobot>()),
            ("acl[]", serde_keys::<acl::RawEntry>()),
            ("acl[].match", serde_keys::<acl::RawMatch>()),
            ("upstream", serde_keys::<RawUpstream>()),
            ("ldap_auth", serde_keys::<RawLdap>()),
            ("ldap_auth.labels.<name>", serde_keys::<RawLdapLabel>()),
            ("ldap_auth.group_search", serde_keys::<RawGroupSearch>()),
        ];
        for (section, keys) in pairs.iter_mut() {
            let mut known = known(section);
            known.sort();
            keys.sort();
            assert_eq!(*keys, known, "KNOWN_KEYS for {section:?}");
        }
    }
}
