//! Environment overrides in registry:2's style: `REGATE_TOKEN_ISSUER` sets `token.issuer`.
//! Every scalar key has one, so a compose file can set the common settings without
//! editing the config file.

use super::raw::{RawConfig, RawLdap, RawServer, RawToken, RawUpstream};

/// The overrides: variable, key, and how to set it.
type Setter = fn(&mut RawConfig, &str) -> Result<(), String>;

fn server(raw: &mut RawConfig) -> &mut RawServer {
    raw.server.get_or_insert_with(RawServer::default)
}

fn token(raw: &mut RawConfig) -> &mut RawToken {
    raw.token.get_or_insert_with(RawToken::default)
}

fn ldap(raw: &mut RawConfig) -> &mut RawLdap {
    raw.ldap_auth.get_or_insert_with(RawLdap::default)
}

fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("`{v}` is not true or false")),
    }
}

fn integer(v: &str) -> Result<i64, String> {
    v.parse()
        .map_err(|_| format!("`{v}` is not a whole number"))
}

fn seconds(v: &str) -> Result<f64, String> {
    v.parse()
        .map_err(|_| format!("`{v}` is not a number of seconds"))
}

pub const OVERRIDES: &[(&str, &str, Setter)] = &[
    ("REGATE_SERVER_ADDR", "server.addr", |r, v| {
        server(r).addr = Some(v.into());
        Ok(())
    }),
    ("REGATE_SERVER_CERTIFICATE", "server.certificate", |r, v| {
        server(r).certificate = Some(v.into());
        Ok(())
    }),
    ("REGATE_SERVER_KEY", "server.key", |r, v| {
        server(r).key = Some(v.into());
        Ok(())
    }),
    ("REGATE_SERVER_HSTS", "server.hsts", |r, v| {
        server(r).hsts = Some(boolean(v)?);
        Ok(())
    }),
    (
        "REGATE_SERVER_TLS_MIN_VERSION",
        "server.tls_min_version",
        |r, v| {
            server(r).tls_min_version = Some(v.into());
            Ok(())
        },
    ),
    (
        "REGATE_SERVER_REAL_IP_HEADER",
        "server.real_ip_header",
        |r, v| {
            server(r).real_ip_header = Some(v.into());
            Ok(())
        },
    ),
    ("REGATE_SERVER_REAL_IP_POS", "server.real_ip_pos", |r, v| {
        server(r).real_ip_pos = Some(integer(v)?);
        Ok(())
    }),
    (
        "REGATE_SERVER_TRUSTED_PROXIES",
        "server.trusted_proxies",
        |r, v| {
            // A list: comma-separated, as nginx's and most tools' environment forms.
            server(r).trusted_proxies = Some(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
            Ok(())
        },
    ),
    (
        "REGATE_SERVER_HTTP_REDIRECT_ADDR",
        "server.http_redirect_addr",
        |r, v| {
            server(r).http_redirect_addr = Some(v.into());
            Ok(())
        },
    ),
    (
        "REGATE_SERVER_METRICS_ADDR",
        "server.metrics_addr",
        |r, v| {
            server(r).metrics_addr = Some(v.into());
            Ok(())
        },
    ),
    ("REGATE_SERVER_BASIC_AUTH", "server.basic_auth", |r, v| {
        server(r).basic_auth = Some(v.into());
        Ok(())
    }),
    ("REGATE_TOKEN_KID_FORMAT", "token.kid_format", |r, v| {
        token(r).kid_format = Some(v.into());
        Ok(())
    }),
    ("REGATE_TOKEN_ISSUER", "token.issuer", |r, v| {
        token(r).issuer = Some(v.into());
        Ok(())
    }),
    ("REGATE_TOKEN_EXPIRATION", "token.expiration", |r, v| {
        token(r).expiration = Some(integer(v)?);
        Ok(())
    }),
    ("REGATE_TOKEN_CERTIFICATE", "token.certificate", |r, v| {
        token(r).certificate = Some(v.into());
        Ok(())
    }),
    ("REGATE_TOKEN_KEY", "token.key", |r, v| {
        token(r).key = Some(v.into());
        Ok(())
    }),
    ("REGATE_TOKEN_SERVICE", "token.service", |r, v| {
        token(r).service = Some(v.into());
        Ok(())
    }),
    (
        "REGATE_TOKEN_REFRESH_EXPIRATION",
        "token.refresh_expiration",
        |r, v| {
            token(r).refresh_expiration = Some(integer(v)?);
            Ok(())
        },
    ),
    ("REGATE_TOKEN_REALM", "token.realm", |r, v| {
        token(r).realm = Some(v.into());
        Ok(())
    }),
    ("REGATE_UPSTREAM_URL", "upstream.url", |r, v| {
        r.upstream.get_or_insert_with(RawUpstream::default).url = Some(v.into());
        Ok(())
    }),
    (
        "REGATE_UPSTREAM_READ_TIMEOUT",
        "upstream.read_timeout",
        |r, v| {
            r.upstream
                .get_or_insert_with(RawUpstream::default)
                .read_timeout = Some(integer(v)?);
            Ok(())
        },
    ),
    (
        "REGATE_UPSTREAM_CA_CERTIFICATE",
        "upstream.ca_certificate",
        |r, v| {
            r.upstream
                .get_or_insert_with(RawUpstream::default)
                .ca_certificate = Some(v.into());
            Ok(())
        },
    ),
    ("REGATE_DATA_DIR", "data_dir", |r, v| {
        r.data_dir = Some(v.into());
        Ok(())
    }),
    ("REGATE_AUDIT_LOG", "audit_log", |r, v| {
        r.audit_log = Some(v.into());
        Ok(())
    }),
    ("REGATE_HTPASSWD", "htpasswd", |r, v| {
        r.htpasswd = Some(v.into());
        Ok(())
    }),
    // The directory's scalar keys; setting one makes an `ldap_auth` section if the file
    // has none (it must then be completed, by the file or by more variables).
    ("REGATE_LDAP_AUTH_ADDR", "ldap_auth.addr", |r, v| {
        ldap(r).addr = Some(v.into());
        Ok(())
    }),
    ("REGATE_LDAP_AUTH_TLS", "ldap_auth.tls", |r, v| {
        ldap(r).tls = Some(v.into());
        Ok(())
    }),
    (
        "REGATE_LDAP_AUTH_INSECURE_TLS_SKIP_VERIFY",
        "ldap_auth.insecure_tls_skip_verify",
        |r, v| {
            ldap(r).insecure_tls_skip_verify = Some(boolean(v)?);
            Ok(())
        },
    ),
    (
        "REGATE_LDAP_AUTH_CA_CERTIFICATE",
        "ldap_auth.ca_certificate",
        |r, v| {
            ldap(r).ca_certificate = Some(v.into());
            Ok(())
        },
    ),
    ("REGATE_LDAP_AUTH_BIND_DN", "ldap_auth.bind_dn", |r, v| {
        ldap(r).bind_dn = Some(v.into());
        Ok(())
    }),
    (
        "REGATE_LDAP_AUTH_BIND_PASSWORD_FILE",
        "ldap_auth.bind_password_file",
        |r, v| {
            ldap(r).bind_password_file = Some(v.into());
            Ok(())
        },
    ),
    (
        "REGATE_LDAP_AUTH_INITIAL_BIND_AS_USER",
        "ldap_auth.initial_bind_as_user",
        |r, v| {
            ldap(r).initial_bind_as_user = Some(boolean(v)?);
            Ok(())
        },
    ),
    ("REGATE_LDAP_AUTH_BASE", "ldap_auth.base", |r, v| {
        ldap(r).base = Some(v.into());
        Ok(())
    }),
    ("REGATE_LDAP_AUTH_FILTER", "ldap_auth.filter", |r, v| {
        ldap(r).filter = Some(v.into());
        Ok(())
    }),
    (
        "REGATE_LDAP_AUTH_CONNECT_TIMEOUT",
        "ldap_auth.connect_timeout",
        |r, v| {
            ldap(r).connect_timeout = Some(seconds(v)?);
            Ok(())
        },
    ),
    ("REGATE_LDAP_AUTH_TIMEOUT", "ldap_auth.timeout", |r, v| {
        ldap(r).timeout = Some(seconds(v)?);
        Ok(())
    }),
    (
        "REGATE_LDAP_AUTH_POOL_SIZE",
        "ldap_auth.pool_size",
        |r, v| {
            ldap(r).pool_size = Some(integer(v)?);
            Ok(())
        },
    ),
    (
        "REGATE_LDAP_AUTH_CACHE_TTL",
        "ldap_auth.cache_ttl",
        |r, v| {
            ldap(r).cache_ttl = Some(seconds(v)?);
            Ok(())
        },
    ),
];

/// Variables the command line reads itself, not config keys.
const CLI: &[&str] = &["REGATE_CONFIG", "REGATE_LOG"];

/// What [`apply`] did: the overrides it set, and warnings for unknown variables.
#[derive(Debug, Default)]
pub struct Applied {
    /// (variable, key) for each override set.
    pub set: Vec<(String, &'static str)>,
    pub warnings: Vec<String>,
}

impl Applied {
    /// The variables behind an error at `key`: the one that set it; or, when the file
    /// does not have the key (`in_file` false), those that set keys in its section.
    pub fn behind(&self, key: &str, in_file: bool) -> Vec<&str> {
        let section = |k: &str| k.split('.').next().unwrap_or("").to_owned();
        let exact: Vec<&str> = self
            .set
            .iter()
            .filter(|(_, k)| *k == key)
            .map(|(v, _)| v.as_str())
            .collect();
        if !exact.is_empty() || in_file {
            return exact;
        }
        self.set
            .iter()
            .filter(|(_, k)| section(k) == section(key))
            .map(|(v, _)| v.as_str())
            .collect()
    }
}

/// Applies every `REGATE_*` override in `vars`; warns about unknown ones.
pub fn apply(
    raw: &mut RawConfig,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Applied, (String, String)> {
    let mut applied = Applied::default();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("REGATE_") && !CLI.contains(&k.as_str()))
        .collect();
    vars.sort();
    for (name, value) in vars {
        match OVERRIDES.iter().find(|(var, _, _)| *var == name) {
            Some((_, key, set)) => {
                set(raw, &value).map_err(|m| (format!("{name} (for {key})"), m))?;
                applied.set.push((name, key));
            }
            None => applied.warnings.push(format!(
                "environment variable {name} is not a regate setting; ignored"
            )),
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn overrides_set_nested_keys() {
        let mut raw = RawConfig::default();
        let applied = apply(
            &mut raw,
            vars(&[
                ("REGATE_TOKEN_ISSUER", "from env"),
                ("REGATE_TOKEN_EXPIRATION", "600"),
                ("REGATE_SERVER_HSTS", "true"),
                ("REGATE_UPSTREAM_URL", "http://registry:5000"),
                ("REGATE_CONFIG", "/config/regate.yml"),
                ("HOME", "/root"),
                ("REGATE_TYPO", "x"),
            ]),
        )
        .unwrap();
        let token = raw.token.unwrap();
        assert_eq!(token.issuer.as_deref(), Some("from env"));
        assert_eq!(token.expiration, Some(600));
        assert_eq!(raw.server.unwrap().hsts, Some(true));
        assert_eq!(
            raw.upstream.unwrap().url.as_deref(),
            Some("http://registry:5000")
        );
        assert_eq!(applied.warnings.len(), 1);
        assert!(applied.warnings[0].contains("REGATE_TYPO"));
        assert_eq!(applied.behind("server", false), ["REGATE_SERVER_HSTS"]);
        assert_eq!(applied.behind("server.hsts", true), ["REGATE_SERVER_HSTS"]);
        assert!(applied.behind("server.addr", true).is_empty());
    }

    #[test]
    fn the_directory_is_set_from_the_environment_too() {
        let mut raw = RawConfig::default();
        apply(
            &mut raw,
            vars(&[
                ("REGATE_LDAP_AUTH_ADDR", "ldap.example.com:636"),
                ("REGATE_LDAP_AUTH_TLS", "always"),
                ("REGATE_LDAP_AUTH_BIND_PASSWORD_FILE", "/run/secrets/ldap"),
                ("REGATE_LDAP_AUTH_TIMEOUT", "2.5"),
                ("REGATE_LDAP_AUTH_POOL_SIZE", "4"),
            ]),
        )
        .unwrap();
        let ldap = raw.ldap_auth.unwrap();
        assert_eq!(ldap.addr.as_deref(), Some("ldap.example.com:636"));
        assert_eq!(ldap.tls.as_deref(), Some("always"));
        assert_eq!(
            ldap.bind_password_file.as_deref(),
            Some("/run/secrets/ldap")
        );
        assert_eq!(ldap.timeout, Some(2.5));
        assert_eq!(ldap.pool_size, Some(4));
        let (name, _) = apply(
            &mut RawConfig::default(),
            vars(&[("REGATE_LDAP_AUTH_CACHE_TTL", "a while")]),
        )
        .unwrap_err();
        assert_eq!(name, "REGATE_LDAP_AUTH_CACHE_TTL (for ldap_auth.cache_ttl)");
    }

    #[test]
    fn trusted_proxies_are_a_comma_separated_list() {
        let mut raw = RawConfig::default();
        apply(
            &mut raw,
            vars(&[("REGATE_SERVER_TRUSTED_PROXIES", "10.0.0.0/8, ::1,")]),
        )
        .unwrap();
        assert_eq!(
            raw.server.unwrap().trusted_proxies.unwrap(),
            ["10.0.0.0/8", "::1"]
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let mut raw = RawConfig::default();
        let (name, message) =
            apply(&mut raw, vars(&[("REGATE_TOKEN_EXPIRATION", "soon")])).unwrap_err();
        assert_eq!(name, "REGATE_TOKEN_EXPIRATION (for token.expiration)");
        assert!(message.contains("soon"));
    }

    #[test]
    fn every_override_names_a_known_key() {
        for (var, key, _) in OVERRIDES {
            let expected = format!("REGATE_{}", key.replace('.', "_").to_uppercase());
            assert_eq!(*var, expected);
        }
    }
}
