//! `ldap_auth` as written -> [`LdapConfig`]: docker_auth's keys with its defaults (LDAPS
//! when the port is 636), regate's additions with theirs, and every mistake that would
//! otherwise show up as a failed login reported at load time instead.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::keys::{Key, Kind};
use super::{Cx, Failed};
use crate::auth::ldap::{expand, GroupSearch, LabelMap, LdapConfig, TlsMode};

/// `ldap_auth`: docker_auth's keys (`addr` ... `labels`), then regate's own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLdap {
    addr: Option<String>,
    tls: Option<String>,
    insecure_tls_skip_verify: Option<bool>,
    ca_certificate: Option<String>,
    bind_dn: Option<String>,
    bind_password_file: Option<String>,
    initial_bind_as_user: Option<bool>,
    base: Option<String>,
    filter: Option<String>,
    labels: Option<BTreeMap<String, RawLdapLabel>>,
    group_search: Option<RawGroupSearch>,
    connect_timeout: Option<f64>,
    timeout: Option<f64>,
    pool_size: Option<i64>,
    cache_ttl: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdapLabel {
    attribute: Option<String>,
    parse_cn: Option<bool>,
    lower_case: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroupSearch {
    base: Option<String>,
    filter: Option<String>,
    attribute: Option<String>,
    label: Option<String>,
    parse_cn: Option<bool>,
    lower_case: Option<bool>,
}

const LABEL_KEYS: &[Key] = &[
    Key::scalar(
        "attribute",
        "",
        "the entry's attribute the label's values come from",
    ),
    Key::scalar(
        "parse_cn",
        "false",
        "keep only the CN of a DN value (`memberOf`)",
    ),
    Key::scalar("lower_case", "false", "lower-case the values"),
];

const GROUP_SEARCH_KEYS: &[Key] = &[
    Key::scalar("base", "", "the DN to search for groups under"),
    Key::scalar(
        "filter",
        "(member=${dn})",
        "the group filter, with `${dn}` or `${account}`",
    ),
    Key::scalar(
        "attribute",
        "cn",
        "the group attribute that becomes the label",
    ),
    Key::scalar("label", "group", "the label's name"),
    Key::scalar("parse_cn", "false", "keep only the CN of a DN value"),
    Key::scalar("lower_case", "false", "lower-case the values"),
];

pub(super) const KEYS: &[Key] = &[
    Key::scalar("addr", "", "`HOST:PORT` of the directory"),
    Key::scalar(
        "tls",
        "none (always on port 636)",
        "`none`, `starttls` or `always`",
    ),
    Key::scalar(
        "insecure_tls_skip_verify",
        "false",
        "do not check the directory's certificate (a warning)",
    ),
    Key::scalar(
        "ca_certificate",
        "the system's roots",
        "the CA (PEM) of the directory's certificate",
    ),
    Key::scalar("bind_dn", "", "the service account that searches"),
    Key::scalar(
        "bind_password_file",
        "",
        "a file holding `bind_dn`'s password",
    ),
    Key::scalar(
        "initial_bind_as_user",
        "false",
        "bind as the user (`bind_dn` with `${account}`) instead",
    ),
    Key::scalar("base", "", "the DN to search for accounts under"),
    Key::scalar(
        "filter",
        "",
        "the account search, with `${account}` (RFC 4515-escaped)",
    ),
    Key::new("labels", Kind::Named(LABEL_KEYS)),
    Key::new("group_search", Kind::Section(GROUP_SEARCH_KEYS)),
    Key::scalar(
        "connect_timeout",
        "3",
        "seconds to open a connection (TCP and TLS)",
    ),
    Key::scalar(
        "timeout",
        "5",
        "seconds the directory has for one login, all steps together",
    ),
    Key::scalar("pool_size", "8", "connections to the directory at most"),
    Key::scalar(
        "cache_ttl",
        "60",
        "seconds a successful login is remembered; 0: never",
    ),
];

const DEFAULT_CONNECT_TIMEOUT: f64 = 3.0;
const DEFAULT_TIMEOUT: f64 = 5.0;
const DEFAULT_POOL_SIZE: i64 = 8;
const DEFAULT_CACHE_TTL: f64 = 60.0;

pub(super) fn build(raw: RawLdap, cx: &mut Cx<'_>) -> Result<LdapConfig, Failed> {
    let Some(addr) = raw.addr.filter(|a| !a.trim().is_empty()) else {
        return cx.fail_hint(
            &["ldap_auth"],
            "`addr` is required: the directory's HOST:PORT",
            "for example `addr: ldap.example.com:389` (or :636 for LDAPS)",
        );
    };
    let (scheme, host, port) = parse_addr(&addr).or_else(|m| fail(cx, "addr", m))?;
    let tls = match raw.tls.as_deref() {
        None | Some("") => match (scheme, port) {
            (Some("ldaps"), _) | (None, Some(636)) => TlsMode::Always,
            _ => TlsMode::None,
        },
        Some("none") => TlsMode::None,
        Some("starttls") => TlsMode::StartTls,
        Some("always") => TlsMode::Always,
        Some(other) => {
            return fail(
                cx,
                "tls",
                format!("`{other}` is not none, starttls or always (LDAPS)"),
            )
        }
    };
    match (scheme, tls) {
        (Some("ldaps"), TlsMode::None | TlsMode::StartTls) => {
            return fail(
                cx,
                "tls",
                "an ldaps:// address is TLS from the first byte: use `tls: always`",
            )
        }
        (Some("ldap"), TlsMode::Always) => {
            return fail(
                cx,
                "tls",
                "`tls: always` is LDAPS: write the address as ldaps://HOST:PORT or HOST:PORT",
            )
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
        return fail(cx, "addr", format!("`{addr}` is not HOST:PORT"));
    }

    let insecure = raw.insecure_tls_skip_verify.unwrap_or(false);
    // docker_auth's examples leave unused keys empty (`bind_dn:`, `ca_certificate: ""`).
    let ca_certificate = raw
        .ca_certificate
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(|p| cx.resolve(p));
    if tls == TlsMode::None {
        if ca_certificate.is_some() || insecure {
            cx.warn("ldap_auth.ca_certificate and insecure_tls_skip_verify apply only with `tls: starttls` or `always`");
        }
        if !is_loopback(host) {
            cx.warn(format!("ldap_auth.tls is none: passwords cross the network to {host} in clear text; use `tls: starttls` or `always`"));
        }
    } else if insecure {
        cx.warn("ldap_auth.insecure_tls_skip_verify is on: the directory's certificate is not checked, so anyone in the path can read passwords");
    }

    let initial_bind_as_user = raw.initial_bind_as_user.unwrap_or(false);
    let bind_dn = raw.bind_dn.filter(|d| !d.is_empty());
    let bind_password_file = raw
        .bind_password_file
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(|p| cx.resolve(p));
    if initial_bind_as_user {
        match &bind_dn {
            Some(dn) if dn.contains("${account}") => {}
            _ => return fail(cx, "bind_dn", "with `initial_bind_as_user` the first bind is as the user: `bind_dn` must hold ${account}, e.g. uid=${account},ou=people,dc=example,dc=org"),
        }
        if bind_password_file.is_some() {
            cx.warn("ldap_auth.bind_password_file is unused with initial_bind_as_user (the user's own password binds)");
        }
    } else {
        match (&bind_dn, &bind_password_file) {
            (Some(_), None) => {
                return fail(
                    cx,
                    "bind_dn",
                    "`bind_dn` needs `bind_password_file`, the file holding its password",
                )
            }
            (None, Some(_)) => {
                return fail(
                    cx,
                    "bind_password_file",
                    "`bind_password_file` without `bind_dn`: whose password is it?",
                )
            }
            _ => {}
        }
    }

    let base = match raw.base {
        Some(b) if !b.trim().is_empty() => b,
        _ => {
            return cx.fail(
                &["ldap_auth"],
                "`base` is required: the DN to search for accounts under, e.g. ou=people,dc=example,dc=org",
            )
        }
    };
    let Some(filter) = raw.filter.filter(|f| !f.trim().is_empty()) else {
        return cx.fail(
            &["ldap_auth"],
            "`filter` is required, e.g. (&(objectClass=person)(uid=${account}))",
        );
    };
    if !filter.contains("${account}") {
        return fail(
            cx,
            "filter",
            "the filter must hold ${account}: without it every login finds the same entry",
        );
    }
    check_filter(&filter, &[("${account}", "x")]).or_else(|m| fail(cx, "filter", m))?;

    let mut labels = Vec::new();
    for (label, map) in raw.labels.unwrap_or_default() {
        let path = ["ldap_auth", "labels", label.as_str()];
        let Some(attribute) = map.attribute.filter(|a| !a.is_empty()) else {
            return cx.fail(
                &path,
                "a label needs `attribute`: the attribute of the user's entry it comes from",
            );
        };
        if label.is_empty() {
            return cx.fail(&path, "a label needs a name");
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
            let at = ["ldap_auth", "group_search", "filter"];
            let Some(base) = g.base.filter(|b| !b.trim().is_empty()) else {
                return cx.fail(
                    &["ldap_auth", "group_search"],
                    "`base` is required: the DN to search for groups under",
                );
            };
            let filter = g.filter.unwrap_or_else(|| "(member=${dn})".to_owned());
            if !filter.contains("${dn}") && !filter.contains("${account}") {
                return cx.fail(
                    &at,
                    "the filter must hold ${dn} (the user's entry) or ${account}, e.g. (member=${dn})",
                );
            }
            check_filter(&filter, &[("${dn}", "x"), ("${account}", "x")])
                .or_else(|m| cx.fail(&at, m))?;
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

    let seconds = |cx: &mut Cx<'_>, k: &str, v: Option<f64>, default: f64, zero_ok: bool| {
        let v = v.unwrap_or(default);
        let ok = v.is_finite() && (v > 0.0 || zero_ok && v == 0.0) && v < 86_400.0;
        if ok {
            Ok(Duration::from_secs_f64(v))
        } else {
            fail(
                cx,
                k,
                format!("{v} is not a number of seconds regate takes"),
            )
        }
    };
    let connect_timeout = seconds(
        cx,
        "connect_timeout",
        raw.connect_timeout,
        DEFAULT_CONNECT_TIMEOUT,
        false,
    )?;
    let timeout = seconds(cx, "timeout", raw.timeout, DEFAULT_TIMEOUT, false)?;
    if connect_timeout > timeout {
        cx.warn(format!("ldap_auth.connect_timeout ({connect_timeout:?}) is longer than timeout ({timeout:?}), which bounds a whole login"));
    }
    let cache_ttl = seconds(cx, "cache_ttl", raw.cache_ttl, DEFAULT_CACHE_TTL, true)?;
    let pool_size = match raw.pool_size.unwrap_or(DEFAULT_POOL_SIZE) {
        n @ 1..=256 => n as usize,
        n => {
            return fail(
                cx,
                "pool_size",
                format!("{n} is not a number of connections from 1 to 256"),
            )
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

fn fail<T>(cx: &mut Cx<'_>, k: &str, message: impl Into<String>) -> Result<T, Failed> {
    cx.fail(&["ldap_auth", k], message)
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

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    use super::keys::assert_keys_match;
    assert_keys_match::<RawLdap>(KEYS);
    assert_keys_match::<RawLdapLabel>(LABEL_KEYS);
    assert_keys_match::<RawGroupSearch>(GROUP_SEARCH_KEYS);
}
