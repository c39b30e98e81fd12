//! `server:` -> [`server::Settings`]: docker_auth's listener keys (with `letsencrypt`:
//! [`acme::Settings`]), and regate's redirect listener and Basic-credential switch.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use serde::Deserialize;

use super::keys::{Key, Kind};
use super::{key, Cx, Failed, Seg};
use crate::acme;
use crate::server::{RealIp, Settings};
use crate::tls::{CertSource, Curve, ServerTls, TlsFiles};

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
    letsencrypt: Option<RawLetsEncrypt>,
    real_ip_header: Option<String>,
    real_ip_pos: Option<i64>,
    trusted_proxies: Option<Vec<String>>,
    proxy_protocol: Option<bool>,
    http_redirect_addr: Option<String>,
    metrics_addr: Option<String>,
    basic_auth: Option<String>,
    max_connections: Option<u64>,
}

/// docker_auth's `letsencrypt` (`host`, `email`, `cache_dir`), then regate's own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLetsEncrypt {
    host: Option<String>,
    email: Option<String>,
    cache_dir: Option<String>,
    directory_url: Option<String>,
    ca_certificate: Option<String>,
}

const LETSENCRYPT_KEYS: &[Key] = &[
    Key::scalar(
        "host",
        "",
        "the DNS name to get a certificate for (Let's Encrypt validates it on port 443 of that name)",
    ),
    Key::scalar(
        "email",
        "",
        "the ACME account's contact, for the CA's expiry and policy mail",
    ),
    Key::scalar(
        "cache_dir",
        "`<data_dir>/letsencrypt`",
        "holds the account key and the certificate (0600; made 0700 if missing); docker_auth's cache is reused",
    ),
    Key::scalar(
        "directory_url",
        "Let's Encrypt",
        "the ACME CA's directory (regate); Let's Encrypt's staging: `https://acme-staging-v02.api.letsencrypt.org/directory`",
    ),
    Key::scalar(
        "ca_certificate",
        "the system's roots",
        "the CA (PEM) of the ACME server's own HTTPS certificate (regate), for a private CA such as pebble or step-ca",
    ),
];

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
    Key::new("letsencrypt", Kind::Section(LETSENCRYPT_KEYS)),
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
        "proxy_protocol",
        "false",
        "read the PROXY protocol header (v1 or v2: haproxy `send-proxy-v2`, a TCP load balancer) from the peers of `trusted_proxies` (required with it): its client address counts for `ip` rules, the throttle and the logs; optional from them (health checks), and a header from any other peer closes the connection",
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
    Key::scalar(
        "max_connections",
        "half the open files limit, at least 16384",
        "client connections open at once (regate); past it new ones wait in the listen queue until one closes (`regate_connections_held_total`, a warning a minute at most). regate raises its soft open files limit to the hard one at start, as nginx's `worker_rlimit_nofile`",
    ),
];

/// `data_dir` holds `letsencrypt.cache_dir` when that is not set.
pub(super) fn build(raw: RawServer, data_dir: &Path, cx: &mut Cx<'_>) -> Result<Settings, Failed> {
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
    if raw.letsencrypt.is_some() && (raw.certificate.is_some() || raw.key.is_some()) {
        let which = if raw.certificate.is_some() {
            "certificate"
        } else {
            "key"
        };
        return cx.fail(
            &at("letsencrypt"),
            format!("`letsencrypt` and `{which}` are both set; keep one: `certificate` and `key` to serve your own pair (docker_auth then ignored `letsencrypt`), or `letsencrypt` for certificates from the ACME CA"),
        );
    }
    let source = match (&raw.certificate, &raw.key) {
        (Some(c), Some(k)) => Some(CertSource::Files(TlsFiles {
            certificate: cx.resolve(c),
            key: cx.resolve(k),
        })),
        (None, None) => match raw.letsencrypt {
            Some(le) => Some(CertSource::Acme(Box::new(letsencrypt(
                le, data_dir, listen, cx,
            )?))),
            None => None,
        },
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
    let redirect_listen =
        match &raw.http_redirect_addr {
            None => None,
            Some(_) if source.is_none() => return cx.fail(
                &at("http_redirect_addr"),
                "redirecting to HTTPS needs HTTPS: set `certificate` and `key`, or `letsencrypt`",
            ),
            Some(a) => Some(parse_listen(a).or_else(|m| cx.fail(&at("http_redirect_addr"), m))?),
        };
    let metrics_listen = match &raw.metrics_addr {
        None => None,
        Some(a) => Some(parse_listen(a).or_else(|m| cx.fail(&at("metrics_addr"), m))?),
    };
    let basic_auth = match raw.basic_auth.as_deref() {
        None | Some("auto") => source.is_some(),
        Some("on") => true,
        Some("off") => false,
        Some(other) => {
            return cx.fail(
                &at("basic_auth"),
                format!("`{other}` is not auto (HTTPS only), on or off"),
            )
        }
    };
    if basic_auth && source.is_none() {
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
    let trusted = trusted_proxies(raw.trusted_proxies, cx)?;
    let proxy_protocol = match (raw.proxy_protocol.unwrap_or(false), &trusted) {
        (false, _) => None,
        (true, Some(nets)) => Some(nets.clone().into()),
        (true, None) => {
            return cx.fail_hint(
                &at("proxy_protocol"),
                "`proxy_protocol` needs `trusted_proxies`: the balancers whose PROXY header is believed",
                "for example `trusted_proxies: [10.0.0.0/8]`, the addresses your balancer connects from",
            )
        }
    };
    if trusted.is_some() && raw.real_ip_header.is_none() && proxy_protocol.is_none() {
        cx.warn("server.trusted_proxies is ignored without server.real_ip_header or server.proxy_protocol: the client address is the connection's");
    }
    let real_ip = real_ip(raw.real_ip_header, raw.real_ip_pos, trusted, cx);
    let max_connections = match raw.max_connections {
        None => None,
        Some(n @ 1..=MAX_CONNECTIONS) => Some(n as usize),
        Some(n) => {
            return cx.fail(
                &at("max_connections"),
                format!("{n}: it must be from 1 to {MAX_CONNECTIONS}"),
            )
        }
    };
    Ok(Settings {
        path_prefix,
        listen,
        redirect_listen,
        metrics_listen,
        tls: source.map(|source| ServerTls {
            source,
            tls13_only,
            curves,
        }),
        hsts: raw.hsts.unwrap_or(false),
        basic_auth,
        real_ip,
        proxy_protocol,
        max_connections,
    })
}

/// The most `max_connections` may say: what one semaphore holds (2^61 - 1 on 64 bits) is
/// far past any file limit; a round bound reads better in the error.
const MAX_CONNECTIONS: u64 = 1 << 30;

/// `letsencrypt` -> [`acme::Settings`]. docker_auth turned it on with `email` and took
/// any name a client asked for without `host`; regate needs `host` (it gets the
/// certificate at start, not at a client's first handshake) and takes `email` as optional.
fn letsencrypt(
    raw: RawLetsEncrypt,
    data_dir: &Path,
    listen: SocketAddr,
    cx: &mut Cx<'_>,
) -> Result<acme::Settings, Failed> {
    let at = |k: &'static str| ["server", "letsencrypt", k];
    let Some(host) = raw.host.filter(|h| !h.trim().is_empty()) else {
        return cx.fail_hint(
            &["server", "letsencrypt"],
            "`host` is required: the DNS name to get a certificate for",
            "for example `host: registry.example.com`",
        );
    };
    let host = host.trim().to_ascii_lowercase();
    if let Err(m) = check_host(&host) {
        return cx.fail(&at("host"), m);
    }
    let email = raw
        .email
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty());
    if let Some(e) = &email {
        let looks_like_mail = e
            .split_once('@')
            .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
            && !e.contains(char::is_whitespace);
        if !looks_like_mail {
            return cx.fail(&at("email"), format!("`{e}` is not a mail address"));
        }
    }
    let directory_url = raw
        .directory_url
        .unwrap_or_else(|| acme::LETS_ENCRYPT.to_owned());
    let https = directory_url
        .parse::<hyper::Uri>()
        .is_ok_and(|u| u.scheme_str() == Some("https") && u.authority().is_some());
    if !https {
        return cx.fail(
            &at("directory_url"),
            format!("`{directory_url}` is not an https:// URL (ACME is spoken over HTTPS only)"),
        );
    }
    if listen.port() != 443 && listen.port() != 0 {
        cx.warn(format!("server.letsencrypt: the CA validates {host} by connecting to its port 443 (TLS-ALPN-01), and regate listens on {}: port 443 of {host} must reach it (a port forward)", listen.port()));
    }
    Ok(acme::Settings {
        host,
        email,
        cache_dir: raw
            .cache_dir
            .as_deref()
            .map(|d| cx.resolve(d))
            .unwrap_or_else(|| data_dir.join("letsencrypt")),
        directory_url,
        ca_certificate: raw.ca_certificate.as_deref().map(|p| cx.resolve(p)),
        renewal: acme::Renewal::default(),
    })
}

/// A DNS name a CA can validate with TLS-ALPN-01: no wildcard, address, port or scheme.
fn check_host(host: &str) -> Result<(), String> {
    if host.contains("://") || host.contains('/') {
        return Err(format!(
            "`{host}` is a URL; give the name alone (registry.example.com)"
        ));
    }
    if host.starts_with("*.") {
        return Err(format!("`{host}` is a wildcard: those need a DNS validation, which regate does not do; give the name clients use"));
    }
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return Err(format!(
            "`{host}` is an address; give the DNS name clients use"
        ));
    }
    if host.contains(':') {
        return Err(format!(
            "`{host}` has a port; give the name alone (the CA validates on port 443)"
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!("`{host}` is not a DNS name"));
    }
    Ok(())
}

/// docker_auth's `real_ip_header`, believed from `trusted_proxies` only (when listed).
/// `server.trusted_proxies`: addresses or CIDR blocks.
fn trusted_proxies(
    proxies: Option<Vec<String>>,
    cx: &mut Cx<'_>,
) -> Result<Option<Vec<crate::acl::IpNet>>, Failed> {
    let Some(list) = proxies else {
        return Ok(None);
    };
    let mut nets = Vec::with_capacity(list.len());
    for (i, raw) in list.iter().enumerate() {
        match crate::acl::IpNet::parse(raw.trim()) {
            Some(net) => nets.push(net),
            None => {
                let path = [key("server"), key("trusted_proxies"), Seg::Index(i)];
                let m = format!("`{raw}` is not an address or CIDR block (10.0.0.0/8, ::1)");
                return Err(cx.fail_at(&path, m));
            }
        }
    }
    Ok(Some(nets))
}

/// docker_auth's `real_ip_header`, believed from `trusted_proxies` only (when listed).
fn real_ip(
    header: Option<String>,
    position: Option<i64>,
    trusted: Option<Vec<crate::acl::IpNet>>,
    cx: &mut Cx<'_>,
) -> Option<RealIp> {
    let header = header?;
    if trusted.is_none() {
        cx.warn(format!("server.real_ip_header ({header}) is believed from any peer: a client that reaches regate directly chooses its own address for `ip` rules and the login throttle; list the proxies in front in server.trusted_proxies"));
    }
    Some(RealIp {
        header,
        position: position.unwrap_or(0),
        trusted,
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
    super::keys::assert_keys_match::<RawLetsEncrypt>(LETSENCRYPT_KEYS);
}
