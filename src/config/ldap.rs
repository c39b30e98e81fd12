//! `ldap_auth` as written -> [`LdapConfig`]: docker_auth's keys with its defaults (LDAPS
//! when the port is 636), regate's additions with theirs, and every mistake that would
//! otherwise show up as a failed login reported at load time instead.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::RawLdap;
use super::{key, ConfigError, Errors};
use crate::auth::ldap::{expand, GroupSearch, LabelMap, LdapConfig, TlsMode};

const DEFAULT_CONNECT_TIMEOUT: f64 = 3.0;
const DEFAULT_TIMEOUT: f64 = 5.0;
const DEFAULT_POOL_SIZE: i64 = 8;
const DEFAULT_CACHE_TTL: f64 = 60.0;

pub(super) fn validate(
    raw: RawLdap,
    err: &Errors<'_>,
    resolve: &dyn Fn(&str) -> PathBuf,
    warnings: &mut Vec<String>,
) -> Result<LdapConfig, ConfigError> {
    let fail = |k: &str, message: String| err.at(&[key("ldap_auth"), key(k)], message);

    let Some(addr) = raw.addr.filter(|a| !a.trim().is_empty()) else {
        let mut e = err.at(
            &[key("ldap_auth")],
            "`addr` is required: the directory's HOST:PORT",
        );
        e.hint = Some("for example `addr: ldap.example.com:389` (or :636 for LDAPS)".into());
        return Err(e);
    };
    let (scheme, host, port) = parse_addr(&addr).map_err(|m| fail("addr", m))?;
    let tls = match raw.tls.as_deref() {
        None | Some("") => match (scheme, port) {
            (Some("ldaps"), _) | (None, Some(636)) => TlsMode::Always,
            _ => TlsMode::None,
        },
        Some("none") => TlsMode::None,
        Some("starttls") => TlsMode::StartTls,
        Some("always") => TlsMode::Always,
        Some(other) => {
            return Err(fail(
                "tls",
                format!("`{other}` is not none, starttls or always (LDAPS)"),
            ))
        }
    };
    match (scheme, tls) {
        (Some("ldaps"), TlsMode::None | TlsMode::StartTls) => {
            return Err(fail(
                "tls",
                "an ldaps:// address is TLS from the first byte: use `tls: always`".into(),
            ))
        }
        (Some("ldap"), TlsMode::Always) => {
            return Err(fail(
                "tls",
                "`tls: always` is LDAPS: write the address as ldaps://HOST:PORT or HOST:PORT"
                    .into(),
            ))
        }
        _ => {}
    }
    let port = port.unwrap_or(if tls == TlsMode::Always { 636 } else { 389 });
    let url = format!(
        "{}://{host}:{port}",
        if tls == TlsMode::Always {
            "ldaps"
        } else {
            "ldap"
        }
    );
    if url.parse::<hyper::Uri>().is_err() {
        return Err(fail("addr", format!("`{addr}` is not HOST:PORT")));
    }

    let insecure = raw.insecure_tls_skip_verify.unwrap_or(false);
    // docker_auth's examples leave unused keys empty (`bind_dn:`, `ca_certificate: ""`).
    let ca_certificate = raw
        .ca_certificate
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(resolve);
    if tls == TlsMode::None {
        if ca_certificate.is_some() || insecure {
            warnings.push("ldap_auth.ca_certificate and insecure_tls_skip_verify apply only with `tls: starttls` or `always`".into());
        }
        if !is_loopback(host) {
            warnings.push(format!("ldap_auth.tls is none: passwords cross the network to {host} in clear text; use `tls: starttls` or `always`"));
        }
    } else if insecure {
        warnings.push("ldap_auth.insecure_tls_skip_verify is on: the directory's certificate is not checked, so anyone in the path can read passwords".into());
    }

    let initial_bind_as_user = raw.initial_bind_as_user.unwrap_or(false);
    let bind_dn = raw.bind_dn.filter(|d| !d.is_empty());
    let bind_password_file = raw
        .bind_password_file
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(resolve);
    if initial_bind_as_user {
        match &bind_dn {
            Some(dn) if dn.contains("${account}") => {}
            _ => return Err(fail("bind_dn", "with `initial_bind_as_user` the first bind is as the user: `bind_dn` must hold ${account}, e.g. uid=${account},ou=people,dc=example,dc=org".into())),
        }
        if bind_password_file.is_some() {
            warnings.push("ldap_auth.bind_password_file is unused with initial_bind_as_user (the user's own password binds)".into());
        }
    } else {
        match (&bind_dn, &bind_password_file) {
            (Some(_), None) => {
                return Err(fail(
                    "bind_dn",
                    "`bind_dn` needs `bind_password_file`, the file holding its password".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(fail(
                    "bind_password_file",
                    "`bind_password_file` without `bind_dn`: whose password is it?".into(),
                ))
            }
            _ => {}
        }
    }

    let base = match raw.base {
        Some(b) if !b.trim().is_empty() => b,
        _ => {
            return Err(err.at(
                &[key("ldap_auth")],
                "`base` is required: the DN to search for accounts under, e.g. ou=people,dc=example,dc=org",
            ))
        }
    };
    let Some(filter) = raw.filter.filter(|f| !f.trim().is_empty()) else {
        return Err(err.at(
            &[key("ldap_auth")],
            "`filter` is required, e.g. (&(objectClass=person)(uid=${account}))",
        ));
    };
    if !filter.contains("${account}") {
        return Err(fail(
            "filter",
            "the filter must hold ${account}: without it every login finds the same entry".into(),
        ));
    }
    check_filter(&filter, &[("${account}", "x")]).map_err(|m| fail("filter", m))?;

    let mut labels = Vec::new();
    for (label, map) in raw.labels.unwrap_or_default() {
        let path = [key("ldap_auth"), key("labels"), key(&label)];
        let Some(attribute) = map.attribute.filter(|a| !a.is_empty()) else {
            return Err(err.at(
                &path,
                "a label needs `attribute`: the attribute of the user's entry it comes from",
            ));
        };
        if label.is_empty() {
            return Err(err.at(&path, "a label needs a name"));
        }
        labels.push(LabelMap {
            label,
            attribute,
            parse_cn: map.parse_cn.unwrap_or(false),
            lower_case: map.lower_case.unwrap_or(false),
        });
    }

    let group_search = match raw.group_search {
        None => None,
        Some(g) => {
            let at = |k: &str, m: &str| err.at(&[key("ldap_auth"), key("group_search"), key(k)], m);
            let Some(base) = g.base.filter(|b| !b.trim().is_empty()) else {
                return Err(err.at(
                    &[key("ldap_auth"), key("group_search")],
                    "`base` is required: the DN to search for groups under",
                ));
            };
            let filter = g.filter.unwrap_or_else(|| "(member=${dn})".to_owned());
            if !filter.contains("${dn}") && !filter.contains("${account}") {
                return Err(at(
                    "filter",
                    "the filter must hold ${dn} (the user's entry) or ${account}, e.g. (member=${dn})",
                ));
            }
            check_filter(&filter, &[("${dn}", "x"), ("${account}", "x")])
                .map_err(|m| at("filter", &m))?;
            Some(GroupSearch {
                base,
                filter,
                attribute: g.attribute.unwrap_or_else(|| "cn".to_owned()),
                label: g.label.unwrap_or_else(|| "group".to_owned()),
                parse_cn: g.parse_cn.unwrap_or(false),
                lower_case: g.lower_case.unwrap_or(false),
            })
        }
    };

    let seconds = |k: &str, v: Option<f64>, default: f64, zero_ok: bool| {
        let v = v.unwrap_or(default);
        let ok = v.is_finite() && (v > 0.0 || zero_ok && v == 0.0) && v < 86_400.0;
        if ok {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(fail(
                k,
                format!("{v} is not a number of seconds regate takes"),
            ))
        }
    };
    let connect_timeout = seconds(
        "connect_timeout",
        raw.connect_timeout,
        DEFAULT_CONNECT_TIMEOUT,
        false,
    )?;
    let timeout = seconds("timeout", raw.timeout, DEFAULT_TIMEOUT, false)?;
    if connect_timeout > timeout {
        warnings.push(format!("ldap_auth.connect_timeout ({connect_timeout:?}) is longer than timeout ({timeout:?}), which bounds a whole login"));
    }
    let cache_ttl = seconds("cache_ttl", raw.cache_ttl, DEFAULT_CACHE_TTL, true)?;
    let pool_size = match raw.pool_size.unwrap_or(DEFAULT_POOL_SIZE) {
        n @ 1..=256 => n as usize,
        n => {
            return Err(fail(
                "pool_size",
                format!("{n} is not a number of connections from 1 to 256"),
            ))
        }
    };

    Ok(LdapConfig {
        url,
        tls,
        insecure_tls_skip_verify: insecure,
        ca_certificate,
        bind_dn,
        bind_password_file,
        initial_bind_as_user,
        base,
        filter,
        labels,
        group_search,
        connect_timeout,
        timeout,
        pool_size,
        cache_ttl,
    })
}

/// `HOST:PORT`, `HOST`, `[V6]:PORT`, or an `ldap://` / `ldaps://` URL (regate) ->
/// (scheme, host, port).
fn parse_addr(addr: &str) -> Result<(Option<&'static str>, &str, Option<u16>), String> {
    let (scheme, rest) = if let Some(r) = addr.strip_prefix("ldaps://") {
        (Some("ldaps"), r)
    } else if let Some(r) = addr.strip_prefix("ldap://") {
        (Some("ldap"), r)
    } else if addr.contains("://") {
        return Err(format!("`{addr}`: the scheme is ldap:// or ldaps://"));
    } else {
        (None, addr)
    };
    let rest = rest.trim_end_matches('/');
    let bad = || format!("`{addr}` is not HOST:PORT");
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (inner, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        (&rest[..inner.len() + 2], port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.contains(['/', '?', '@', ' ']) {
        return Err(bad());
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?),
    };
    Ok((scheme, host, port))
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the filter parses once its placeholders hold plain values.
fn check_filter(filter: &str, vars: &[(&str, &str)]) -> Result<(), String> {
    ldap3::parse_filter(expand(filter, vars))
        .map(|_| ())
        .map_err(|_| format!("`{filter}` is not an LDAP search filter (RFC 4515), e.g. (&(objectClass=person)(uid=${{account}}))"))
}
