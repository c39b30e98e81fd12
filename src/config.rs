//! Loads a config file: raw serde structs (`raw.rs`) become a validated [`Config`]; every
//! error names the file, line, column and key (`locate.rs` finds keys after parsing).

mod env;
mod hints;
mod ldap;
mod locate;
mod raw;
mod values;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use hints::edit_distance;
use hints::yaml_error;
pub use locate::{display as display_path, Seg};
pub(crate) use locate::{key, locate};
use raw::RawConfig;
use values::{parse_expiry, parse_listen, parse_upstream, read_htpasswd};

use crate::acl::{Acl, Labels};
use crate::auth::keys::KidFormat;
use crate::auth::users::{is_bcrypt, Backend, Robot, User};

/// A validated configuration. Loading it touches no file but the config itself; key and
/// certificate files are read when the gateway is built from it.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    /// A plain-HTTP listener that redirects everything to HTTPS.
    pub redirect_listen: Option<SocketAddr>,
    /// A plain-HTTP listener for `/metrics` alone; `None`: `/metrics` is on the main
    /// listener, for loopback callers only.
    pub metrics_listen: Option<SocketAddr>,
    pub tls: Option<TlsFiles>,
    pub tls13_only: bool,
    pub hsts: bool,
    /// Whether HTTP Basic credentials are accepted on registry routes.
    pub basic_auth: bool,
    pub real_ip: Option<RealIp>,
    pub token: TokenConfig,
    pub users: HashMap<String, User>,
    pub acl: Arc<Acl>,
    pub upstream: hyper::Uri,
    /// How long the registry may take to answer a complete request.
    pub upstream_read_timeout: Duration,
    /// The CA that signed an https registry's certificate (the system's roots if `None`).
    pub upstream_ca: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// A registry:2-style htpasswd file of more users (bcrypt only).
    pub htpasswd: Option<PathBuf>,
    /// docker_auth's `ldap_auth`: the directory asked about accounts `users` lacks.
    pub ldap: Option<crate::auth::ldap::LdapConfig>,
    pub audit_log: AuditLog,
    pub warnings: Vec<String>,
}

/// Where the audit log (one JSON line per token decision and per write) goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditLog {
    Stdout,
    Stderr,
    Off,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// docker_auth's `real_ip_header` / `real_ip_pos`: the client address comes from a header
/// a trusted proxy in front sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealIp {
    pub header: String,
    pub position: i64,
    /// `server.trusted_proxies`: the peers whose header counts; `None` (not set): any
    /// peer's, as docker_auth does (`regate check` warns).
    pub trusted: Option<Vec<crate::acl::IpNet>>,
}

impl RealIp {
    /// Whether the header of a request from `peer` names the client.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted
            .as_ref()
            .map_or(true, |nets| nets.iter().any(|n| n.contains(peer)))
    }
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub issuer: String,
    pub service: String,
    pub realm: Option<String>,
    pub expiration: Duration,
    pub refresh_expiration: Duration,
    pub kid_format: KidFormat,
    /// The signing certificate and key; `None`: generated in `data_dir`.
    pub key: Option<TlsFiles>,
}

/// What went wrong, and where: `file:line:column: key: message`, and a hint when one helps.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub position: Option<(usize, usize)>,
    pub key: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Builds errors located in one source text.
struct Errors<'a> {
    file: &'a Path,
    src: &'a str,
}

impl Errors<'_> {
    fn at(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            position: locate(self.src, path),
            key: (!path.is_empty()).then(|| display_path(path)),
            message: message.into(),
            hint: None,
        }
    }
}

impl Config {
    /// Reads and validates the config file, with `REGATE_*` overrides from the
    /// environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_source(path).map(|(config, _)| config)
    }

    /// As [`Config::load`], also returning the file's text (for lints that point at it).
    pub fn load_with_source(path: &Path) -> Result<(Config, String), ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            position: None,
            key: None,
            message: format!("cannot read the config: {e}"),
            hint: None,
        })?;
        let config = Config::parse_with_env(path, &src, std::env::vars())?;
        Ok((config, src))
    }

    /// Parses and validates `src` as the contents of `path` (relative paths in it are
    /// resolved against `path`'s folder), without environment overrides.
    pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(path, src, std::iter::empty())
    }

    /// As [`Config::parse`], with `REGATE_*` overrides from `vars`.
    pub fn parse_with_env(
        path: &Path,
        src: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut raw: RawConfig = if src.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml::from_str(src).map_err(|e| yaml_error(path, &e))?
        };
        let applied = env::apply(&mut raw, vars).map_err(|(var, message)| ConfigError {
            file: path.to_owned(),
            position: None,
            key: Some(format!("environment {var}")),
            message,
            hint: None,
        })?;
        let mut config = validate(path, src, raw).map_err(|mut e| {
            // A value may come from the environment: say so, or the operator looks for
            // it in the file.
            if let Some(key) = &e.key {
                let vars = applied.behind(key, e.position.is_some());
                if !vars.is_empty() {
                    let note = format!("set from the environment by {}", vars.join(", "));
                    e.hint = Some(match e.hint.take() {
                        Some(h) => format!("{h}; {note}"),
                        None => note,
                    });
                }
            }
            e
        })?;
        config.warnings.extend(applied.warnings);
        Ok(config)
    }
}

fn validate(path: &Path, src: &str, raw: RawConfig) -> Result<Config, ConfigError> {
    let err = Errors { file: path, src };
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };
    let mut warnings = Vec::new();

    if let Some(section) = raw.unsupported_sections().first() {
        let mut e = err.at(
            &[key(section)],
            "this docker_auth section is not implemented by regate",
        );
        e.hint = Some(
            "regate authenticates with `users`, `htpasswd` and `ldap_auth`, and authorizes with the static `acl`; remove the section or keep docker_auth for it".into(),
        );
        return Err(e);
    }

    let server = raw.server.unwrap_or_default();
    let srv = |k: &str| [key("server"), key(k)];
    if let Some(net) = server.net.as_deref().filter(|n| *n != "tcp") {
        return Err(err.at(
            &srv("net"),
            format!("`{net}` listeners are not supported; use tcp"),
        ));
    }
    if server
        .path_prefix
        .as_deref()
        .is_some_and(|p| !p.is_empty() && p != "/")
    {
        return Err(err.at(
            &srv("path_prefix"),
            "a path prefix is not supported: registry clients always use /v2/ at the root",
        ));
    }
    if server.letsencrypt.is_some() {
        return Err(err.at(
            &srv("letsencrypt"),
            "Let's Encrypt is not supported; give `certificate` and `key` (see `regate cert init`)",
        ));
    }
    for ignored in [
        (
            "tls_curve_preferences",
            server.tls_curve_preferences.is_some(),
        ),
        ("tls_cipher_suites", server.tls_cipher_suites.is_some()),
    ] {
        if ignored.1 {
            warnings.push(format!(
                "server.{} is ignored: rustls offers only modern curves and AEAD cipher suites",
                ignored.0
            ));
        }
    }
    let addr = server.addr.as_deref().unwrap_or(":5000");
    let listen = parse_listen(addr).map_err(|m| err.at(&srv("addr"), m))?;
    let tls = match (&server.certificate, &server.key) {
        (Some(c), Some(k)) => Some(TlsFiles {
            certificate: resolve(c),
            key: resolve(k),
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(err.at(
                &srv("certificate"),
                "`certificate` is set but `key` is not; give both for HTTPS, or neither",
            ))
        }
        (None, Some(_)) => {
            return Err(err.at(
                &srv("key"),
                "`key` is set but `certificate` is not; give both for HTTPS, or neither",
            ))
        }
    };
    let redirect_listen = match &server.http_redirect_addr {
        None => None,
        Some(_) if tls.is_none() => {
            return Err(err.at(
                &srv("http_redirect_addr"),
                "redirecting to HTTPS needs HTTPS: set `certificate` and `key`",
            ))
        }
        Some(a) => Some(parse_listen(a).map_err(|m| err.at(&srv("http_redirect_addr"), m))?),
    };
    let metrics_listen = match &server.metrics_addr {
        None => None,
        Some(a) => Some(parse_listen(a).map_err(|m| err.at(&srv("metrics_addr"), m))?),
    };
    let basic_auth = match server.basic_auth.as_deref() {
        None | Some("auto") => tls.is_some(),
        Some("on") => true,
        Some("off") => false,
        Some(other) => {
            return Err(err.at(
                &srv("basic_auth"),
                format!("`{other}` is not auto (HTTPS only), on or off"),
            ))
        }
    };
    if basic_auth && tls.is_none() {
        warnings.push("server.basic_auth is on without HTTPS: passwords cross the network in clear text on every request".into());
    }
    let tls13_only = match server.tls_min_version.as_deref() {
        None | Some("TLS12") | Some("tls12") | Some("1.2") => false,
        Some("TLS13") | Some("tls13") | Some("1.3") => true,
        Some(other) => {
            return Err(err.at(
                &srv("tls_min_version"),
                format!(
                "`{other}` is not a TLS version regate offers; use TLS12 (the default) or TLS13"
            ),
            ))
        }
    };
    let trusted = match &server.trusted_proxies {
        None => None,
        Some(list) => {
            let mut nets = Vec::with_capacity(list.len());
            for (i, raw) in list.iter().enumerate() {
                let net = crate::acl::IpNet::parse(raw.trim()).ok_or_else(|| {
                    err.at(
                        &[key("server"), key("trusted_proxies"), Seg::Index(i)],
                        format!("`{raw}` is not an address or CIDR block (10.0.0.0/8, ::1)"),
                    )
                })?;
                nets.push(net);
            }
            Some(nets)
        }
    };
    let real_ip = match server.real_ip_header {
        Some(header) => {
            if trusted.is_none() {
                warnings.push(format!("server.real_ip_header ({header}) is believed from any peer: a client that reaches regate directly chooses its own address for `ip` rules and the login throttle; list the proxies in front in server.trusted_proxies"));
            }
            Some(RealIp {
                header,
                position: server.real_ip_pos.unwrap_or(0),
                trusted,
            })
        }
        None => {
            if trusted.is_some() {
                warnings.push("server.trusted_proxies is ignored without server.real_ip_header: the client address is the connection's".into());
            }
            None
        }
    };

    let token = raw.token.unwrap_or_default();
    let tok = |k: &str| [key("token"), key(k)];
    if token.disable_legacy_key_id == Some(true) {
        return Err(err.at(&tok("disable_legacy_key_id"), "RFC 7638 key IDs (registry v3) are not supported yet; tokens use libtrust key IDs and carry x5c, which registry 2.x and 3.x both accept"));
    }
    let expiration = match token.expiration {
        None => 300,
        Some(s) if s > 0 => s as u64,
        Some(s) => {
            return Err(err.at(
                &tok("expiration"),
                format!("{s} is not a positive number of seconds"),
            ))
        }
    };
    let kid_format = match token.kid_format.as_deref() {
        None | Some("libtrust") => KidFormat::Libtrust,
        Some("rfc7638") => KidFormat::Rfc7638,
        Some(other) => {
            return Err(err.at(
                &tok("kid_format"),
                format!("`{other}` is not libtrust (registry 2.x) or rfc7638 (registry v3)"),
            ))
        }
    };
    let refresh_expiration = match token.refresh_expiration {
        None => 30 * 24 * 3600,
        Some(s) if s > 0 => s as u64,
        Some(s) => {
            return Err(err.at(
                &tok("refresh_expiration"),
                format!("{s} is not a positive number of seconds"),
            ))
        }
    };
    if expiration < 60 {
        warnings.push(format!("token.expiration is {expiration}s: clients treat a token as valid for at least 60s (token spec)"));
    }
    let token_key = match (&token.certificate, &token.key) {
        (Some(c), Some(k)) => Some(TlsFiles {
            certificate: resolve(c),
            key: resolve(k),
        }),
        (None, None) => tls.clone(), // docker_auth signs with the server's pair when token has none
        (Some(_), None) => {
            return Err(err.at(&tok("certificate"), "`certificate` is set but `key` is not"))
        }
        (None, Some(_)) => return Err(err.at(&tok("key"), "`key` is set but `certificate` is not")),
    };
    let service = token
        .service
        .unwrap_or_else(|| "Docker registry".to_owned());
    if let Some(realm) = &token.realm {
        let ok = realm
            .parse::<hyper::Uri>()
            .is_ok_and(|u| u.scheme().is_some() && u.authority().is_some());
        if !ok {
            return Err(err.at(
                &tok("realm"),
                "the realm must be an absolute URL (clients do not resolve a relative one)",
            ));
        }
    }
    let token = TokenConfig {
        issuer: token.issuer.unwrap_or_else(|| "regate".to_owned()),
        service,
        realm: token.realm,
        expiration: Duration::from_secs(expiration),
        refresh_expiration: Duration::from_secs(refresh_expiration),
        kid_format,
        key: token_key,
    };

    let mut users = HashMap::new();
    for (name, user) in raw.users.unwrap_or_default() {
        let user = user.unwrap_or_default();
        let at = |k: &str| [key("users"), key(&name), key(k)];
        let password_hash = match (name.is_empty(), user.password) {
            (true, Some(_)) => {
                return Err(err.at(
                    &at("password"),
                    "the anonymous entry \"\" takes no password",
                ))
            }
            (true, None) => None,
            (false, None) => {
                let mut e = err.at(&[key("users"), key(&name)], "this user has no password");
                e.hint = Some("docker_auth lets such a user in with any password; regate refuses. Add a bcrypt hash from `regate hash-password` or `htpasswd -nB`".into());
                return Err(e);
            }
            (false, Some(p)) if is_bcrypt(&p) => Some(p),
            (false, Some(_)) => {
                let mut e = err.at(&at("password"), "not a bcrypt hash");
                e.hint = Some("make one with `regate hash-password` or `htpasswd -nB USER`".into());
                return Err(e);
            }
        };
        users.insert(
            name,
            User {
                password_hash,
                labels: user.labels.unwrap_or_else(Labels::new),
                robot: None,
                backend: Backend::Users,
            },
        );
    }

    for (name, robot) in raw.robots.unwrap_or_default() {
        let at = |k: &str| vec![key("robots"), key(&name), key(k)];
        if users.contains_key(&name) {
            return Err(err.at(&[key("robots"), key(&name)], "a user has this name already"));
        }
        let secret = match robot.secret {
            Some(s) if is_bcrypt(&s) => s,
            Some(_) => {
                return Err(err.at(
                    &at("secret"),
                    "not a bcrypt hash (make one with `regate hash-password`)",
                ))
            }
            None => {
                return Err(err.at(
                    &[key("robots"), key(&name)],
                    "a robot needs a `secret` (bcrypt)",
                ))
            }
        };
        let expires = match robot.expires.as_deref() {
            None => None,
            Some(text) => Some(parse_expiry(text).ok_or_else(|| {
                err.at(
                    &at("expires"),
                    format!("`{text}` is not YYYY-MM-DD or an RFC 3339 time"),
                )
            })?),
        };
        let entries = robot.acl.unwrap_or_default();
        let acl = Acl::compile(&entries).map_err(|e| {
            let mut path = at("acl");
            path.push(Seg::Index(e.index));
            path.extend(e.field.split('.').map(key));
            err.at(&path, e.message.clone())
        })?;
        if entries.is_empty() {
            warnings.push(format!(
                "robot {name} has no `acl`: it can log in but is granted nothing"
            ));
        }
        users.insert(
            name,
            User {
                password_hash: Some(secret),
                labels: robot.labels.unwrap_or_default(),
                robot: Some(Robot {
                    expires,
                    acl: Arc::new(acl),
                }),
                backend: Backend::Robots,
            },
        );
    }

    let ldap = match raw.ldap_auth {
        Some(section) => Some(ldap::validate(section, &err, &resolve, &mut warnings)?),
        None => None,
    };

    let htpasswd = raw.htpasswd.as_deref().map(resolve);
    if let Some(file) = &htpasswd {
        for (name, hash) in read_htpasswd(file)? {
            // A user in `users` wins over the same name in the file (it has labels).
            users.entry(name).or_insert(User {
                password_hash: Some(hash),
                labels: Labels::new(),
                robot: None,
                backend: Backend::Htpasswd,
            });
        }
    }

    let entries = raw.acl.unwrap_or_else(|| {
        warnings.push("no `acl`: every request is denied".into());
        Vec::new()
    });
    let acl = Acl::compile(&entries).map_err(|e| {
        let mut path = vec![key("acl"), Seg::Index(e.index)];
        path.extend(e.field.split('.').map(key));
        err.at(&path, e.message.clone())
    })?;

    let up = raw.upstream.unwrap_or_default();
    let Some(url) = up.url else {
        let mut e = err.at(
            &[key("upstream")],
            "`upstream.url` is required: the registry:2 regate forwards to",
        );
        e.hint = Some("for example:\n    upstream:\n      url: http://127.0.0.1:5000".into());
        return Err(e);
    };
    let upstream = parse_upstream(&url).map_err(|m| err.at(&[key("upstream"), key("url")], m))?;
    let upstream_read_timeout = match up.read_timeout {
        None => Duration::from_secs(900),
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        Some(s) => {
            return Err(err.at(
                &[key("upstream"), key("read_timeout")],
                format!("{s} is not a positive number of seconds"),
            ))
        }
    };

    let upstream_ca = up.ca_certificate.as_deref().map(resolve);
    if upstream_ca.is_some() && upstream.scheme_str() != Some("https") {
        return Err(err.at(
            &[key("upstream"), key("ca_certificate")],
            "`ca_certificate` is set but the registry is reached over plain http",
        ));
    }

    let data_dir = raw
        .data_dir
        .as_deref()
        .map(resolve)
        .unwrap_or_else(|| base.join("data"));
    let audit_log = match raw.audit_log.as_deref() {
        None | Some("stdout") => AuditLog::Stdout,
        Some("stderr") => AuditLog::Stderr,
        Some("off") => AuditLog::Off,
        Some(path) => AuditLog::File(resolve(path)),
    };

    Ok(Config {
        path: path.to_owned(),
        listen,
        redirect_listen,
        metrics_listen,
        tls,
        tls13_only,
        basic_auth,
        hsts: server.hsts.unwrap_or(false),
        real_ip,
        token,
        users,
        acl: Arc::new(acl),
        upstream,
        upstream_read_timeout,
        upstream_ca,
        data_dir,
        htpasswd,
        ldap,
        audit_log,
        warnings,
    })
}

#[cfg(test)]
pub(crate) mod tests;
