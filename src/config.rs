//! Loads a config file: the YAML becomes a tree that remembers where each value was written
//! (`yaml.rs`), `REGATE_*` variables are set into it (`env.rs`), and each section is read
//! and validated by its own file into the type of the code that uses it:
//!
//! | section | file | becomes |
//! |---|---|---|
//! | `server` | `server.rs` | [`crate::server::Settings`] (`letsencrypt`: [`crate::acme::Settings`]) |
//! | `token` | `token.rs` | [`crate::auth::token::Settings`] |
//! | `users`, `robots`, `htpasswd` | `users.rs` | [`crate::auth::users::User`]s |
//! | `acl` | `acl.rs` | [`crate::acl::Acl`] |
//! | `ldap_auth` | `ldap.rs` | [`crate::auth::ldap::LdapConfig`] |
//! | `google_auth`, `github_auth`, `oidc_auth`, `gitlab_auth` | `google.rs`, `github.rs`, `oidc.rs`, `gitlab.rs` (shared keys: `idp.rs`) | [`crate::auth::idp::Settings`] |
//! | `xorm_auth`, `acl_xorm` | `xorm.rs` | [`crate::sql::Settings`], [`crate::auth::acl_xorm::AclXormConfig`] |
//! | `ext_auth`, `ext_authz` | `ext.rs` | [`crate::auth::ext::Program`] |
//! | `casbin_authz` | `casbin.rs` | [`crate::auth::casbin::CasbinConfig`] |
//! | `upstream` | `upstream.rs` | [`crate::proxy::Settings`] |
//! | `shared_state` | `shared_state.rs` | [`crate::state::RedisSettings`] |
//! | `cache` | `cache.rs` | [`crate::cache::Settings`] |
//!
//! Every error names the file, line, column and key, or the variable that set the value;
//! every section is checked, so one run reports every error.

mod acl;
mod cache;
mod casbin;
mod env;
mod error;
mod ext;
mod github;
mod gitlab;
mod google;
mod idp;
pub mod keys;
mod ldap;
mod oidc;
mod server;
mod shared_state;
mod token;
mod ui;
mod upstream;
mod users;
pub mod xorm;
pub mod yaml;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::acl::Acl;
use crate::auth::ldap::LdapConfig;
use crate::auth::users::User;
pub use error::{ConfigError, Document};
pub(crate) use error::{Cx, Failed};
use keys::{Key, Kind};
pub use yaml::{display as display_path, key, Node, Seg};

/// A validated configuration. Loading it touches no file but the config itself and the
/// htpasswd file; key and certificate files are read when the gateway is built from it.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub server: crate::server::Settings,
    pub token: crate::auth::token::Settings,
    /// `users`, `robots` and the `htpasswd` file's users, by name.
    /// Shared with the login backend, not copied: 100,000 users are 20-odd MiB.
    pub users: Arc<HashMap<String, User>>,
    /// A registry:2-style htpasswd file of more users (bcrypt only).
    pub htpasswd: Option<PathBuf>,
    pub acl: Arc<Acl>,
    /// docker_auth's `ldap_auth`: the directory asked about accounts `users` lacks.
    pub ldap: Option<LdapConfig>,
    /// The identity providers (`google_auth`, `github_auth`, `oidc_auth`, `gitlab_auth`),
    /// in docker_auth's order.
    pub idp: Vec<crate::auth::idp::Settings>,
    /// The file the state store (the providers' token DB, credentials, web sessions) is
    /// kept in; `None`: in memory (no provider is configured).
    pub token_db: Option<PathBuf>,
    /// docker_auth's `ext_auth`: a program asked about accounts `users` lacks.
    pub ext_auth: Option<crate::auth::ext::Program>,
    /// docker_auth's `xorm_auth`: accounts in the SQL table `xorm_user`.
    pub xorm_auth: Option<crate::sql::Settings>,
    /// docker_auth's `acl_xorm`: rules in the SQL table `xorm_acl_entry`.
    pub acl_xorm: Option<crate::auth::acl_xorm::AclXormConfig>,
    /// docker_auth's `ext_authz`: a program asked about scopes the `acl` has no rule for.
    pub ext_authz: Option<crate::auth::ext::Program>,
    /// docker_auth's `casbin_authz`.
    pub casbin_authz: Option<crate::auth::casbin::CasbinConfig>,
    pub upstream: crate::proxy::Settings,
    pub ui: crate::web::Settings,
    /// `shared_state.redis`: where replicas share their state; `None`: this process only.
    pub shared_state: Option<crate::state::RedisSettings>,
    pub cache: crate::cache::Settings,
    pub data_dir: PathBuf,
    pub audit_log: AuditLog,
    pub warnings: Vec<String>,
    /// Not read from the file: the defaults, shorter in tests.
    pub timeouts: crate::timeouts::Timeouts,
    /// SHA-256 of the file as read (hex): replicas running one file show one digest in
    /// `/metrics`.
    pub digest: String,
}

/// Where the audit log (one JSON line per token decision and per write) goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditLog {
    Stdout,
    Stderr,
    Off,
    File(PathBuf),
}

/// The file as written: each section is read by its own file's struct.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Option<server::RawServer>,
    token: Option<token::RawToken>,
    /// Read user by user from the tree by [`users::build`] (with 100,000 users, a second
    /// copy of them all at once is 50-odd MiB of peak that stays with the process).
    users: Option<serde::de::IgnoredAny>,
    robots: Option<users::RawRobots>,
    htpasswd: Option<String>,
    acl: Option<Vec<crate::acl::RawEntry>>,
    ldap_auth: Option<ldap::RawLdap>,
    google_auth: Option<google::RawGoogle>,
    github_auth: Option<github::RawGithub>,
    oidc_auth: Option<oidc::RawOidc>,
    gitlab_auth: Option<gitlab::RawGitlab>,
    ext_auth: Option<ext::RawExt>,
    xorm_auth: Option<xorm::RawXormAuth>,
    acl_xorm: Option<xorm::RawAclXorm>,
    ext_authz: Option<ext::RawExt>,
    casbin_authz: Option<casbin::RawCasbin>,
    upstream: Option<upstream::RawUpstream>,
    ui: Option<ui::RawUi>,
    shared_state: Option<shared_state::RawSharedState>,
    cache: Option<cache::RawCache>,
    data_dir: Option<String>,
    audit_log: Option<String>,
}

const REFUSED: &str = "regate authenticates with `users`, `htpasswd`, `ext_auth`, `ldap_auth`, `xorm_auth` and the identity providers (`google_auth`, `github_auth`, `oidc_auth`, `gitlab_auth`), and authorizes with the static `acl`, `acl_xorm`, `ext_authz` and `casbin_authz`; remove the section or keep docker_auth for it";

/// MongoDB cannot be run where regate is built and tested, so its backends are refused;
/// the SQL ones hold the same data.
const MONGO: &str = "no MongoDB backend: use `xorm_auth` / `acl_xorm` (sqlite3, postgres or mysql), which hold the same data. To move across, export each user document as a row of `xorm_user` (username, password_hash = its bcrypt `password`, labels = its `labels` as JSON) and each ACL document as a row of `xorm_acl_entry` (acl_entry = the entry as JSON, seq = its `seq`), e.g. `mongoexport --jsonArray` and an INSERT per document, or `regate user add` / `regate acl add`";

/// Every key the file may hold.
pub const KEYS: &[Key] = &[
    Key::new("server", Kind::Section(server::KEYS)),
    Key::new("token", Kind::Section(token::KEYS)),
    Key::new("users", Kind::Named(users::USER_KEYS)),
    Key::new("robots", Kind::Named(users::ROBOT_KEYS)),
    Key::scalar(
        "htpasswd",
        "off",
        "a registry:2-style bcrypt htpasswd file of more users",
    ),
    Key::new("acl", Kind::Items(acl::KEYS)),
    Key::new("ldap_auth", Kind::Section(ldap::KEYS)),
    Key::new("google_auth", Kind::Section(google::KEYS)),
    Key::new("github_auth", Kind::Section(github::KEYS)),
    Key::new("oidc_auth", Kind::Section(oidc::KEYS)),
    Key::new("gitlab_auth", Kind::Section(gitlab::KEYS)),
    Key::new("ext_auth", Kind::Section(ext::KEYS)),
    Key::new("xorm_auth", Kind::Section(xorm::AUTH_KEYS)),
    Key::new("acl_xorm", Kind::Section(xorm::ACL_KEYS)),
    Key::new("ext_authz", Kind::Section(ext::KEYS)),
    Key::new("casbin_authz", Kind::Section(casbin::KEYS)),
    Key::new("upstream", Kind::Section(upstream::KEYS)),
    Key::new("ui", Kind::Section(ui::KEYS)),
    Key::new("shared_state", Kind::Section(shared_state::KEYS)),
    Key::new("cache", Kind::Section(cache::KEYS)),
    Key::scalar(
        "data_dir",
        "`<config folder>/data`",
        "where a generated token key is kept",
    ),
    Key::scalar(
        "audit_log",
        "stdout",
        "`stdout`, `stderr`, `off` or a file: the JSON audit log",
    ),
    Key::new("mongo_auth", Kind::Refused(MONGO)),
    Key::new("plugin_authn", Kind::Refused(REFUSED)),
    Key::new("acl_mongo", Kind::Refused(MONGO)),
    Key::new("plugin_authz", Kind::Refused(REFUSED)),
];

impl Config {
    /// Reads and validates the config file, with `REGATE_*` overrides from the
    /// environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let loaded = Config::load_document(path).map(|(config, _)| config);
        // The file, its tree and the sections' raw forms are freed by now: with many
        // users, several times what is kept (see `crate::memory`).
        crate::memory::give_back_freed();
        loaded
    }

    /// As [`Config::load`], also returning the parsed file (for lints that point at it).
    pub fn load_document(path: &Path) -> Result<(Config, Document), ConfigError> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::file(path, format!("cannot read the config: {e}")))?;
        Config::parse_document(path, &src, std::env::vars())
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
        Config::parse_document(path, src, vars).map(|(config, _)| config)
    }

    /// As [`Config::parse_with_env`], also returning the parsed file.
    pub fn parse_document(
        path: &Path,
        src: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, Document), ConfigError> {
        let parsed = parse_apart(src).map_err(|e| syntax_error(path, e))?;
        let mut root = parsed.root;
        let env_warnings = env::apply(&mut root, vars);
        let doc = Document {
            file: path.to_owned(),
            root,
        };
        let mut cx = Cx::new(path, &doc.root);
        for e in parsed.duplicates {
            cx.push(syntax_error(path, e));
        }
        // Foreign whitespace comes before what YAML makes of it: the first such line ends
        // the reading, as a syntax error does.
        let pasted: Vec<ConfigError> = yaml::foreign_whitespace(src)
            .into_iter()
            .map(|e| syntax_error(path, e))
            .collect();
        let broken = match pasted.first() {
            Some(first) => Some((first.position, pasted)),
            None => parsed
                .broken
                .map(|e| syntax_error(path, e))
                .map(|e| (e.position, vec![e])),
        };
        let config = read(&mut cx, broken.is_some());
        let Cx {
            mut warnings,
            mut errors,
            ..
        } = cx;
        // In file order, as a compiler reports; errors without a line (the environment's)
        // last.
        errors.sort_by_key(|e| e.position.unwrap_or((usize::MAX, 0)));
        // Past a syntax error the file was not read: what is missing there is not missing.
        if let Some((at, broken)) = broken {
            errors.retain(|e| e.position.is_some() && e.position < at);
            errors.extend(broken);
        }
        match config {
            Ok(mut config) if errors.is_empty() => {
                // (A syntax error is always among the errors.)
                warnings.extend(env_warnings);
                config.warnings = warnings;
                let digest = ring::digest::digest(&ring::digest::SHA256, src.as_bytes());
                config.digest = data_encoding::HEXLOWER.encode(digest.as_ref());
                Ok((config, doc))
            }
            _ => {
                let mut errors = errors.into_iter();
                let mut first = errors
                    .next()
                    .unwrap_or_else(|| ConfigError::file(path, "the config is not valid"));
                first.also = errors.collect();
                Err(first)
            }
        }
    }
}

/// [`Node::parse_all`] on a thread of its own. glibc gives a new thread an arena of its own:
/// the tree (80-odd MiB of small allocations for 100,000 users) and the parser's scratch
/// then lie apart from what is built from them. In one arena the users' strings fill the
/// holes the parser's scratch left all through the tree, and pin nearly every page of it
/// once it is freed (with malloc_trim, 87 MiB of RSS added against 23 apart, measured);
/// apart, the tree's pages go back whole ([`crate::memory`]). Without a thread to spare,
/// it parses here.
fn parse_apart(src: &str) -> Result<yaml::Parsed, yaml::SyntaxError> {
    std::thread::scope(|s| {
        let thread = std::thread::Builder::new()
            .name("config-parse".into())
            // As deep as the main thread's stack allows (a reload runs on a 2 MiB one).
            .stack_size(8 << 20)
            .spawn_scoped(s, || Node::parse_all(src));
        match thread {
            Ok(parsing) => parsing
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => Node::parse_all(src),
        }
    })
}

fn syntax_error(file: &Path, e: yaml::SyntaxError) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        position: Some(e.position),
        key: (!e.path.is_empty()).then(|| display_path(&e.path)),
        message: e.message,
        hint: None,
        also: Vec::new(),
    }
}

/// A serde error from reading a section, located, with the hint for an unknown key.
fn read_error(cx: &Cx<'_>, e: yaml::Error) -> ConfigError {
    let mut out = cx.error(&e.path, e.message);
    // The key that was not understood is the place to look, not its section.
    if let Some(origin) = &e.origin {
        if origin.position().is_some() {
            out.position = origin.position();
        }
    }
    if let Some((field, expected)) = &e.unknown {
        let mut path = e.path.clone();
        path.push(key(field));
        let value = cx.doc.find(&path);
        let hint = unknown_key_hint(&e.path, field, expected, value);
        out.hint = match (hint, out.hint.take()) {
            (Some(h), Some(env)) => Some(format!("{h}; {env}")),
            (h, env) => h.or(env),
        };
    }
    out
}

/// For an unknown key: the closest known one, or the section it belongs to when it stands
/// at the wrong level (a paste that lost its indentation), or, for a name whose value has
/// a user's or a rule's keys, the list it belongs in.
fn unknown_key_hint(
    section: &[Seg],
    field: &str,
    expected: &[&str],
    value: Option<&Node>,
) -> Option<String> {
    if let Some(best) = keys::closest(field, expected.iter().copied()) {
        return Some(format!("did you mean `{best}`?"));
    }
    let keys_of = |node: &Node| match &node.value {
        yaml::Value::Map(entries) => entries.iter().map(|(k, _)| k.name.clone()).collect(),
        _ => Vec::new(),
    };
    let value_keys: Vec<String> = value.map(keys_of).unwrap_or_default();
    let all_in = |list: &[Key]| {
        !value_keys.is_empty() && value_keys.iter().all(|k| list.iter().any(|l| l.name == k))
    };
    if all_in(users::USER_KEYS) {
        return Some(format!(
            "`{field}` looks like a user: user names belong under `users:`, indented below it"
        ));
    }
    if all_in(users::ROBOT_KEYS) {
        return Some(format!(
            "`{field}` looks like a robot: robots belong under `robots:`, indented below it"
        ));
    }
    let here = display_path(section);
    let homes = keys::sections_with(KEYS, field);
    let home = homes.first()?;
    let at = if here.is_empty() {
        "the top level".to_owned()
    } else {
        format!("`{here}`")
    };
    Some(format!(
        "`{field}` is a key of `{home}`, but it stands at {at}: was the indentation lost? Keys of a section are indented under it"
    ))
}

/// The top-level mapping without the keys `drop` names.
fn without(doc: &Node, drop: impl Fn(&str) -> bool) -> Node {
    let mut doc = doc.clone();
    if let yaml::Value::Map(entries) = &mut doc.value {
        entries.retain(|(k, _)| !drop(&k.name));
    }
    doc
}

/// Reads every section; errors are recorded in `cx`. In a `broken` file (one YAML could
/// not read to the end) only what is written is checked, not what is missing: the rest of
/// the file may well have it.
fn read(cx: &mut Cx<'_>, broken: bool) -> Result<Config, Failed> {
    // docker_auth sections regate does not implement: each one is an error that says so,
    // and the rest of the file is still read.
    let mut refused = false;
    for key in KEYS {
        if let (Kind::Refused(hint), Some(_)) = (&key.kind, cx.doc.get(key.name)) {
            refused = true;
            let _: Result<(), _> = cx.fail_hint(
                &[key.name],
                "this docker_auth section is not implemented by regate",
                *hint,
            );
        }
    }
    let without_refused;
    let doc = if refused {
        without_refused = without(cx.doc, |name| {
            KEYS.iter()
                .any(|k| k.name == name && matches!(k.kind, Kind::Refused(_)))
        });
        &without_refused
    } else {
        cx.doc
    };
    let raw: RawConfig = match yaml::from_node(doc) {
        Ok(raw) => raw,
        Err(e) => {
            let e = read_error(cx, e);
            return Err(cx.push(e));
        }
    };
    if broken {
        return Err(Failed);
    }
    let data_dir = raw
        .data_dir
        .as_deref()
        .map(|p| cx.resolve(p))
        .unwrap_or_else(|| cx.resolve("data"));
    // Each section on its own, so one run reports every section's error.
    let server = server::build(raw.server.unwrap_or_default(), &data_dir, cx);
    let server_tls = server.as_ref().ok().and_then(|s| s.tls.as_ref());
    let token = token::build(raw.token.unwrap_or_default(), server_tls, cx);
    let users_node = raw.users.and(cx.doc.get("users"));
    let users = users::build(users_node, raw.robots, raw.htpasswd.as_deref(), cx);
    let other_authorizers =
        raw.acl_xorm.is_some() || raw.ext_authz.is_some() || raw.casbin_authz.is_some();
    let acl = acl::build(raw.acl, other_authorizers, cx);
    let ldap = raw.ldap_auth.map(|l| ldap::build(l, cx)).transpose();
    // The sign-in routes move under the prefix, and a redirect URL must point there.
    let prefix = server
        .as_ref()
        .map(|s| s.path_prefix.clone())
        .unwrap_or_default();
    // docker_auth's order: Google, GitHub, OpenID Connect, GitLab.
    let providers = [
        raw.google_auth.map(|r| google::build(r, &prefix, cx)),
        raw.github_auth.map(|r| github::build(r, &prefix, cx)),
        raw.oidc_auth.map(|r| oidc::build(r, &prefix, cx)),
        raw.gitlab_auth.map(|r| gitlab::build(r, &prefix, cx)),
    ]
    .into_iter()
    .flatten()
    .collect::<Result<Vec<_>, Failed>>();
    let ext_auth = raw
        .ext_auth
        .map(|e| ext::build("ext_auth", e, cx))
        .transpose();
    let xorm_auth = raw
        .xorm_auth
        .map(|x| xorm::build_auth(x, &data_dir, cx))
        .transpose();
    let acl_xorm = raw
        .acl_xorm
        .map(|x| xorm::build_acl(x, &data_dir, cx))
        .transpose();
    let ext_authz = raw
        .ext_authz
        .map(|e| ext::build("ext_authz", e, cx))
        .transpose();
    let casbin_authz = raw.casbin_authz.map(|c| casbin::build(c, cx)).transpose();
    let upstream = upstream::build(raw.upstream.unwrap_or_default(), cx);
    let ui = ui::build(raw.ui.unwrap_or_default(), cx);
    let cache = cache::build(raw.cache.unwrap_or_default(), cx);
    let shared_state = shared_state::build(raw.shared_state.unwrap_or_default(), cx);
    if let (Ok(Some(_)), Ok(token)) = (&shared_state, &token) {
        if token.key.is_none() {
            cx.warn(format!("shared_state is set, so several replicas run, but no token key is configured: each replica generates its own in data_dir ({}) unless all share that folder, and a token from one is then refused by the others; give every replica the same token.certificate and token.key (`regate cert init` makes a pair)", data_dir.display()));
        }
    }
    let audit_log = match raw.audit_log.as_deref() {
        None | Some("stdout") => AuditLog::Stdout,
        Some("stderr") => AuditLog::Stderr,
        Some("off") => AuditLog::Off,
        Some(path) => AuditLog::File(cx.resolve(path)),
    };
    let (users, htpasswd) = users?;
    let users = Arc::new(users);
    let providers = providers?;
    let token_db = idp::store_file(&providers, &data_dir, cx);
    Ok(Config {
        path: cx.file().to_owned(),
        server: server?,
        token: token?,
        users,
        htpasswd,
        acl: acl?,
        ldap: ldap?,
        idp: providers,
        token_db,
        ext_auth: ext_auth?,
        xorm_auth: xorm_auth?,
        acl_xorm: acl_xorm?,
        ext_authz: ext_authz?,
        casbin_authz: casbin_authz?,
        upstream: upstream?,
        ui: ui?,
        shared_state: shared_state?,
        cache: cache?,
        data_dir,
        audit_log,
        warnings: Vec::new(),
        timeouts: Default::default(),
        digest: String::new(),
    })
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    let kept: Vec<Key> = KEYS
        .iter()
        .filter(|k| !matches!(k.kind, Kind::Refused(_)))
        .map(|k| Key::new(k.name, Kind::Scalar))
        .collect();
    keys::assert_keys_match::<RawConfig>(&kept);
}
