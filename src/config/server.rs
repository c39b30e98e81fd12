//! `server:` -> [`server::Settings`]: docker_auth's listener keys, and regate's redirect
//! listener and Basic-credential switch.

use std::net::{SocketAddr, ToSocketAddrs};

use serde::Deserialize;

use super::keys::{Key, Kind};
use super::{key, Cx, Failed, Seg};
use crate::server::{RealIp, Settings};
use crate::tls::{Curve, ServerTls, TlsFiles};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    addr: Option<String>,
    net: Option<String>,
    path_prefix: Option<String>,
    certificate: Option<String>,
    key: Option<String>,
    hsts: Option<bool>,
    tls_min_version: Option<String>,
    tls_curve_preferences: Option<Vec<String>>,
    tls_cipher_suites: Option<serde::de::IgnoredAny>,
    letsencrypt: Option<serde::de::IgnoredAny>,
    real_ip_header: Option<String>,
    real_ip_pos: Option<i64>,
    trusted_proxies: Option<Vec<String>>,
    http_redirect_addr: Option<String>,
    metrics_addr: Option<String>,
    basic_auth: Option<String>,
}

pub(super) const KEYS: &[Key] = &[
    Key::scalar("addr", ":5000", "`HOST:PORT` or `:PORT` to listen on"),
    Key::scalar("net", "tcp", "docker_auth's listener type; only `tcp`"),
    Key::scalar(
        "path_prefix",
        "",
        "docker_auth's prefix for its own routes: `/auth`, the sign-in and web pages move under it (`/registry/auth`); the registry API stays at `/v2/`",
    ),
    Key::scalar(
        "certificate",
        "",
        "server certificate (PEM); with `key`: HTTPS",
    ),
    Key::scalar("key", "", "the certificate's private key (PEM)"),
    Key::scalar(
        "hsts",
        "false",
        "send `Strict-Transport-Security` over HTTPS",
    ),
    Key::scalar("tls_min_version", "TLS12", "`TLS12` or `TLS13`"),
    Key::with(
        "tls_curve_preferences",
        Kind::List,
        "`[X25519, P256, P384]`",
        "the key-exchange groups offered, in order: `X25519`, `P256`, `P384` (or Go's numbers)",
    ),
    Key::with(
        "tls_cipher_suites",
        Kind::List,
        "",
        "accepted; rustls offers only AEAD suites (a warning)",
    ),
    Key::new(
        "letsencrypt",
        Kind::Refused("give `certificate` and `key` (see `regate cert init`)"),
    ),
    Key::scalar(
        "real_ip_header",
        "",
        "take the client address from this header (set by a proxy in front)",
    ),
    Key::scalar(
        "real_ip_pos",
        "0",
        "which address of that header; negative counts from the end",
    ),
    Key::with(
        "trusted_proxies",
        Kind::List,
        "— (any peer)",
        "addresses or CIDR blocks (`[10.0.0.0/8, \"::1\"]`, nginx's `set_real_ip_from`) whose `real_ip_header` counts; from any other peer the header is ignored and the connection's address is the client's, for `ip` rules, the login throttle and the logs. Not set with `real_ip_header` set: believed from anyone, as docker_auth does, and `regate check` warns",
    ),
    Key::scalar(
        "http_redirect_addr",
        "off",
        "a plain-HTTP listener that only redirects to HTTPS",
    ),
    Key::scalar(
        "metrics_addr",
        "",
        "a plain-HTTP listener (e.g. `127.0.0.1:9090`) that serves `/metrics` and nothing else; then the main listener serves `/metrics` to nobody. Not set: `/metrics` on the main listener answers loopback callers only",
    ),
    Key::scalar(
        "basic_auth",
        "auto",
        "HTTP Basic credentials on registry routes: `auto` (HTTPS only), `on`, `off`",
    ),
];

pub(super) fn build(raw: RawServer, cx: &mut Cx<'_>) -> Result<Settings, Failed> {
    let at = |k: &'static str| ["server", k];
    if let Some(net) = raw.net.as_deref().filter(|n| *n != "tcp") {
        return cx.fail(
            &at("net"),
            format!("`{net}` listeners are not supported; use tcp"),
        );
    }
    let path_prefix = match raw.path_prefix.as_deref() {
        None | Some("") | Some("/") => String::new(),
        Some(p) => {
            let p = p.trim_end_matches('/');
            let clean = p.starts_with('/')
                && !p.contains("//")
                && p.split('/').skip(1).all(|s| {
                    !s.is_empty()
                        && s != "."
                        && s != ".."
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
                });
            if !clean {
                return cx.fail(
                    &at("path_prefix"),
                    format!("`{p}` is not a path like /registry (letters, digits, - . _ ~)"),
                );
            }
            if p == "/v2" || p.starts_with("/v2/") {
                return cx.fail(
                    &at("path_prefix"),
                    "the prefix cannot be /v2: registry clients use /v2/ at the root",
                );
            }
            p.to_owned()
        }
    };
    if raw.letsencrypt.is_some() {
        return cx.fail(
            &at("letsencrypt"),
            "Let's Encrypt is not supported; give `certificate` and `key` (see `regate cert init`)",
        );
    }
    if raw.tls_cipher_suites.is_some() {
        cx.warn("server.tls_cipher_suites is ignored: rustls offers only AEAD cipher suites with forward secrecy");
    }
    let mut curves = Vec::new();
    for (i, name) in raw.tls_curve_preferences.iter().flatten().enumerate() {
        match Curve::parse(name) {
            Ok(c) if !curves.contains(&c) => curves.push(c),
            Ok(_) => {}
            Err(m) => {
                let path = [key("server"), key("tls_curve_preferences"), Seg::Index(i)];
                return Err(cx.fail_at(&path, m));
            }
        }
    }
    let addr = raw.addr.as_deref().unwrap_or(":5000");
    let listen = parse_listen(addr).or_else(|m| cx.fail(&at("addr"), m))?;
    let files = match (&raw.certificate, &raw.key) {
        (Some(c), Some(k)) => Some(TlsFiles {
            certificate: cx.resolve(c),
            key: cx.resolve(k),
        }),
        (None, None) => None,
        (Some(_), None) => {
            return cx.fail(
                &at("certificate"),
                "`certificate` is set but `key` is not; give both for HTTPS, or neither",
            )
        }
        (None, Some(_)) => {
            return cx.fail(
                &at("key"),
                "`key` is set but `certificate` is not; give both for HTTPS, or neither",
            )
        }
    };
    let redirect_listen = match &raw.http_redirect_addr {
        None => None,
        Some(_) if files.is_none() => {
            return cx.fail(
                &at("http_redirect_addr"),
                "redirecting to HTTPS needs HTTPS: set `certificate` and `key`",
            )
        }
        Some(a) => Some(parse_listen(a).or_else(|m| cx.fail(&at("http_redirect_addr"), m))?),
    };
    let metrics_listen = match &raw.metrics_addr {
        None => None,
        Some(a) => Some(parse_listen(a).or_else(|m| cx.fail(&at("metrics_addr"), m))?),
    };
    let basic_auth = match raw.basic_auth.as_deref() {
        None | Some("auto") => files.is_some(),
        Some("on") => true,
        Some("off") => false,
        Some(other) => {
            return cx.fail(
                &at("basic_auth"),
                format!("`{other}` is not auto (HTTPS only), on or off"),
            )
        }
    };
    if basic_auth && files.is_none() {
        cx.warn("server.basic_auth is on without HTTPS: passwords cross the network in clear text on every request");
    }
    let tls13_only = match raw.tls_min_version.as_deref() {
        None | Some("TLS12") | Some("tls12") | Some("1.2") => false,
        Some("TLS13") | Some("tls13") | Some("1.3") => true,
        Some(other) => {
            return cx.fail(
                &at("tls_min_version"),
                format!(
                    "`{other}` is not a TLS version regate offers; use TLS12 (the default) or TLS13"
                ),
            )
        }
    };
    let real_ip = real_ip(raw.real_ip_header, raw.real_ip_pos, raw.trusted_proxies, cx)?;
    Ok(Settings {
        path_prefix,
        listen,
        redirect_listen,
        metrics_listen,
        tls: files.map(|files| ServerTls {
            files,
            tls13_only,
            curves,
        }),
        hsts: raw.hsts.unwrap_or(false),
        basic_auth,
        real_ip,
    })
}

/// docker_auth's `real_ip_header`, believed from `trusted_proxies` only (when listed).
fn real_ip(
    header: Option<String>,
    position: Option<i64>,
    proxies: Option<Vec<String>>,
    cx: &mut Cx<'_>,
) -> Result<Option<RealIp>, Failed> {
    let trusted = match proxies {
        None => None,
        Some(list) => {
            let mut nets = Vec::with_capacity(list.len());
            for (i, raw) in list.iter().enumerate() {
                match crate::acl::IpNet::parse(raw.trim()) {
                    Some(net) => nets.push(net),
                    None => {
                        let path = [key("server"), key("trusted_proxies"), Seg::Index(i)];
                        let m =
                            format!("`{raw}` is not an address or CIDR block (10.0.0.0/8, ::1)");
                        return Err(cx.fail_at(&path, m));
                    }
                }
            }
            Some(nets)
        }
    };
    Ok(match header {
        Some(header) => {
            if trusted.is_none() {
                cx.warn(format!("server.real_ip_header ({header}) is believed from any peer: a client that reaches regate directly chooses its own address for `ip` rules and the login throttle; list the proxies in front in server.trusted_proxies"));
            }
            Some(RealIp {
                header,
                position: position.unwrap_or(0),
                trusted,
            })
        }
        None => {
            if trusted.is_some() {
                cx.warn("server.trusted_proxies is ignored without server.real_ip_header: the client address is the connection's");
            }
            None
        }
    })
}

/// docker_auth's `addr`: `HOST:PORT`, or `:PORT` for every interface (Go's form).
fn parse_listen(addr: &str) -> Result<SocketAddr, String> {
    let full = if addr.starts_with(':') {
        format!("[::]{addr}")
    } else {
        addr.to_owned()
    };
    full.to_socket_addrs()
        .map_err(|e| format!("`{addr}` is not HOST:PORT or :PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("`{addr}` resolves to no address"))
}

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    super::keys::assert_keys_match::<RawServer>(KEYS);
}
