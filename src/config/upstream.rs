//! `upstream:` (regate's own section) -> [`proxy::Settings`]: the registry:2 to forward to.

use std::time::Duration;

use serde::Deserialize;

use super::keys::Key;
use super::{Cx, Failed};
use crate::proxy::Settings;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    url: Option<OneOrMany>,
    read_timeout: Option<i64>,
    ca_certificate: Option<String>,
}

/// One URL, or a list (nginx's `upstream` block of servers).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

pub(super) const KEYS: &[Key] = &[
    Key::scalar(
        "url",
        "none: required",
        "the registry:2 to forward to: `http://HOST:PORT`, or `https://HOST:PORT` for a registry serving TLS itself (its `http.tls`; nginx's `proxy_pass https://`), reached over verified TLS only. A list spreads requests over several registries sharing storage and `http.secret`: one that refuses connections is left out for a while, and a request it refused goes to another",
    ),
    Key::scalar(
        "read_timeout",
        "900",
        "seconds the registry may stay silent: before answering a complete request (then 504), or in the middle of a body (then the transfer is cut); nginx's `proxy_read_timeout`",
    ),
    Key::scalar(
        "ca_certificate",
        "the system's roots",
        "the CA (PEM) that signed an https registry's certificate (nginx's `proxy_ssl_trusted_certificate`); read at start",
    ),
];

pub(super) fn build(raw: RawUpstream, cx: &mut Cx<'_>) -> Result<Settings, Failed> {
    let Some(url) = raw.url else {
        return cx.fail_hint(
            &["upstream"],
            "`upstream.url` is required: the registry:2 regate forwards to",
            "for example:\n    upstream:\n      url: http://127.0.0.1:5000",
        );
    };
    let listed = match url {
        OneOrMany::One(u) => vec![u],
        OneOrMany::Many(list) => list,
    };
    if listed.is_empty() {
        return cx.fail(&["upstream", "url"], "the list of registries is empty");
    }
    let mut urls = Vec::with_capacity(listed.len());
    for (i, u) in listed.iter().enumerate() {
        let path = match listed.len() {
            1 => vec![super::key("upstream"), super::key("url")],
            _ => vec![
                super::key("upstream"),
                super::key("url"),
                super::Seg::Index(i),
            ],
        };
        match parse_url(u) {
            Ok(url) if urls.contains(&url) => {
                return Err(cx.fail_at(&path, format!("`{u}` is listed twice")))
            }
            Ok(url) => urls.push(url),
            Err(m) => return Err(cx.fail_at(&path, m)),
        }
    }
    let https = urls[0].scheme_str() == Some("https");
    if urls
        .iter()
        .any(|u| (u.scheme_str() == Some("https")) != https)
    {
        return cx.fail(
            &["upstream", "url"],
            "the registries mix http and https; they are replicas of one registry, reached the same way",
        );
    }
    let url = urls[0].clone();
    let read_timeout = match raw.read_timeout {
        None => Duration::from_secs(900),
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        Some(s) => {
            return cx.fail(
                &["upstream", "read_timeout"],
                format!("{s} is not a positive number of seconds"),
            )
        }
    };
    let ca_certificate = raw.ca_certificate.as_deref().map(|p| cx.resolve(p));
    if ca_certificate.is_some() && url.scheme_str() != Some("https") {
        return cx.fail(
            &["upstream", "ca_certificate"],
            "`ca_certificate` is set but the registry is reached over plain http",
        );
    }
    Ok(Settings {
        urls,
        read_timeout,
        ca_certificate,
    })
}

fn parse_url(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(format!(
                "`{url}` needs a scheme: http://HOST:PORT or https://HOST:PORT"
            ))
        }
    }
    if uri.authority().is_none() {
        return Err(format!("`{url}` has no host"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!(
            "`{url}` has a path; registry:2 serves /v2/ at its root"
        ));
    }
    Ok(uri)
}

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    super::keys::assert_keys_match::<RawUpstream>(KEYS);
}
