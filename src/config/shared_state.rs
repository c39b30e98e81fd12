//! `shared_state:` (regate's own section) -> [`state::RedisSettings`]: the Redis replicas
//! share their state in (the login throttle, refresh-token revocations, web sessions and
//! the token DB). Without it each regate keeps that state to itself.

use serde::Deserialize;

use super::keys::{Key, Kind};
use super::{Cx, Failed};
use crate::state::RedisSettings;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSharedState {
    redis: Option<RawRedis>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    addr: Option<String>,
    url: Option<String>,
    db: Option<i64>,
    username: Option<String>,
    password_file: Option<String>,
    tls: Option<bool>,
    ca_certificate: Option<String>,
}

const REDIS_KEYS: &[Key] = &[
    Key::scalar(
        "addr",
        "",
        "`HOST:PORT` (6379 when the port is left out) of the Redis every replica uses; or `url`",
    ),
    Key::scalar(
        "url",
        "",
        "`redis://[USER@]HOST[:PORT][/DB]`, or `rediss://` for TLS; instead of `addr` (no password in it: `password_file`)",
    ),
    Key::scalar("db", "0", "the Redis database number"),
    Key::scalar(
        "username",
        "",
        "a Redis 6 ACL user; not set: the default user",
    ),
    Key::scalar(
        "password_file",
        "",
        "a file holding Redis's password (`requirepass`), read at start; never logged",
    ),
    Key::scalar(
        "tls",
        "false",
        "reach Redis over TLS (`rediss://`), checked against `ca_certificate` or the system's roots",
    ),
    Key::scalar(
        "ca_certificate",
        "the system's roots",
        "the CA (PEM) of Redis's TLS certificate",
    ),
];

pub(super) const KEYS: &[Key] = &[Key::new("redis", Kind::Section(REDIS_KEYS))];

pub(super) fn build(raw: RawSharedState, cx: &mut Cx<'_>) -> Result<Option<RedisSettings>, Failed> {
    let Some(raw) = raw.redis else {
        return Ok(None);
    };
    let at = |k: &'static str| ["shared_state", "redis", k];
    let (host, port, url_db, url_user, url_tls) = match (&raw.addr, &raw.url) {
        (Some(_), Some(_)) => {
            return cx.fail(&at("url"), "`addr` and `url` are both set; keep one")
        }
        (None, None) => {
            return cx.fail_hint(
                &["shared_state", "redis"],
                "`addr` or `url` is required: the Redis the replicas share",
                "for example `addr: redis:6379`",
            )
        }
        (Some(addr), None) => {
            let (host, port) = host_port(addr).or_else(|m| cx.fail(&at("addr"), m))?;
            (host, port, None, None, false)
        }
        (None, Some(url)) => parse_url(url).or_else(|m| cx.fail(&at("url"), m))?,
    };
    let db = match (raw.db, url_db) {
        (Some(a), Some(b)) if a != b => {
            return cx.fail(
                &at("db"),
                format!("`db` is {a} but `url` names database {b}; keep one"),
            )
        }
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => 0,
    };
    if db < 0 {
        return cx.fail(&at("db"), format!("{db} is not a database number"));
    }
    let tls = match (raw.tls, url_tls) {
        (Some(false), true) => {
            return cx.fail(
                &at("tls"),
                "`tls: false` but the url is `rediss://`; keep one",
            )
        }
        (Some(t), _) => t,
        (None, t) => t,
    };
    let ca_certificate = raw.ca_certificate.as_deref().map(|p| cx.resolve(p));
    if ca_certificate.is_some() && !tls {
        return cx.fail(
            &at("ca_certificate"),
            "`ca_certificate` is set but Redis is reached without TLS (`tls: true` or `rediss://`)",
        );
    }
    let username = match (raw.username, url_user) {
        (Some(a), Some(b)) if a != b => {
            return cx.fail(&at("username"), "`username` and the url's user differ")
        }
        (a, b) => a.or(b),
    };
    if raw.password_file.is_none() {
        cx.warn("shared_state.redis has no password_file: anyone who reaches that Redis can read sessions and unlock throttled accounts; set Redis's `requirepass` and give its file here");
    }
    Ok(Some(RedisSettings {
        host,
        port,
        db,
        username,
        password_file: raw.password_file.as_deref().map(|p| cx.resolve(p)),
        tls,
        ca_certificate,
    }))
}

/// `HOST:PORT`, `HOST`, `[::1]:PORT`.
fn host_port(addr: &str) -> Result<(String, u16), String> {
    let addr = addr.trim();
    let (host, port) = match addr.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{addr}`: no `]` after an IPv6 address"))?;
            (host, after.strip_prefix(':'))
        }
        None => match addr.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (addr, None),
        },
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(format!("`{addr}` is not HOST:PORT"));
    }
    let port = match port {
        None => 6379,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{p}` in `{addr}` is not a port"))?,
    };
    Ok((host.to_owned(), port))
}

type Parsed = (String, u16, Option<i64>, Option<String>, bool);

/// `redis://[USER@]HOST[:PORT][/DB]` or `rediss://...`; a password in it is refused (it
/// would be in every copy of the config, and in `regate check`'s errors).
fn parse_url(url: &str) -> Result<Parsed, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("rediss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("redis://") {
        (false, r)
    } else {
        return Err("the url must start with redis:// or rediss://".to_owned());
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hp)) => {
            if userinfo.contains(':') {
                return Err("the url holds a password: put it in `password_file` (a file only regate reads), and the url without it".to_owned());
            }
            (Some(userinfo.to_owned()).filter(|u| !u.is_empty()), hp)
        }
        None => (None, authority),
    };
    let (host, port) = host_port(hostport)?;
    let db = match path.trim_end_matches('/') {
        "" => None,
        d => Some(
            d.parse::<i64>()
                .map_err(|_| format!("`/{d}` is not a database number"))?,
        ),
    };
    Ok((host, port, db, user, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_urls() {
        assert_eq!(host_port("redis").unwrap(), ("redis".into(), 6379));
        assert_eq!(
            host_port("10.0.0.5:6380").unwrap(),
            ("10.0.0.5".into(), 6380)
        );
        assert_eq!(host_port("[::1]:7000").unwrap(), ("::1".into(), 7000));
        assert!(host_port("redis:none").is_err());
        let (h, p, db, user, tls) = parse_url("rediss://regate@cache.internal:6380/3").unwrap();
        assert_eq!(
            (h.as_str(), p, db, user.as_deref(), tls),
            ("cache.internal", 6380, Some(3), Some("regate"), true)
        );
        let e = parse_url("redis://:hunter2@redis:6379").unwrap_err();
        assert!(e.contains("password_file") && !e.contains("hunter2"), "{e}");
        assert!(parse_url("http://redis").is_err());
    }
}

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    super::keys::assert_keys_match::<RawSharedState>(KEYS);
    super::keys::assert_keys_match::<RawRedis>(REDIS_KEYS);
}
