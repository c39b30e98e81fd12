//! Environment overrides in registry:2's style: `REGATE_TOKEN_ISSUER` sets `token.issuer`.
//! Every scalar key has one, so a compose file can set the common settings without
//! editing the config file.

use super::raw::{RawConfig, RawServer, RawToken, RawUpstream};

/// The overrides: variable, key, and how to set it.
type Setter = fn(&mut RawConfig, &str) -> Result<(), String>;

fn server(raw: &mut RawConfig) -> &mut RawServer {
    raw.server.get_or_insert_with(RawServer::default)
}

fn token(raw: &mut RawConfig) -> &mut RawToken {
    raw.token.get_or_insert_with(RawToken::default)
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
        "REGATE_SERVER_HTTP_REDIRECT_ADDR",
        "server.http_redirect_addr",
        |r, v| {
            server(r).http_redirect_addr = Some(v.into());
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
];

/// Variables the command line reads itself, not config keys.
const CLI: &[&str] = &["REGATE_CONFIG", "REGATE_LOG"];

/// Applies every `REGATE_*` override in `vars`; returns warnings for unknown ones.
pub fn apply(
    raw: &mut RawConfig,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, (String, String)> {
    let mut warnings = Vec::new();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("REGATE_") && !CLI.contains(&k.as_str()))
        .collect();
    vars.sort();
    for (name, value) in vars {
        match OVERRIDES.iter().find(|(var, _, _)| *var == name) {
            Some((_, key, set)) => {
                set(raw, &value).map_err(|m| (format!("{name} (for {key})"), m))?
            }
            None => warnings.push(format!(
                "environment variable {name} is not a regate setting; ignored"
            )),
        }
    }
    Ok(warnings)
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
        let warnings = apply(
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
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("REGATE_TYPO"));
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
