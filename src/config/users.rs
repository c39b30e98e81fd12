//! `users:`, `robots:` and `htpasswd:` -> the accounts regate knows by name: docker_auth's
//! static users, robot accounts for CI (regate), and a registry:2-style htpasswd file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::keys::{Key, Kind};
use super::yaml::{self, Node, Value};
use super::{acl, key, read_error, ConfigError, Cx, Failed};
use crate::acl::{Acl, Labels, RawEntry};
use crate::auth::identity::Backend;
use crate::auth::users::{is_bcrypt, Robot, User};

/// `users:` as a whole, for its type error only: [`build`] reads the users one by one.
type RawUsers = BTreeMap<String, Option<RawUser>>;
pub(super) type RawRobots = BTreeMap<String, RawRobot>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    password: Option<String>,
    /// Not yet [`Labels`]: a BTreeMap's first node is ~550 bytes, 55 MiB over 100,000
    /// users held at once here; `build` turns each into Labels and keeps one per set.
    labels: Option<HashMap<String, Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRobot {
    /// bcrypt of the robot's secret.
    secret: Option<String>,
    /// `YYYY-MM-DD` (valid through that day, UTC) or an RFC 3339 time.
    expires: Option<String>,
    labels: Option<Labels>,
    acl: Option<Vec<RawEntry>>,
}

pub(super) const USER_KEYS: &[Key] = &[
    Key::scalar(
        "password",
        "",
        "bcrypt hash (`regate hash-password`, `htpasswd -nB`); none only for `\"\"`",
    ),
    Key::with(
        "labels",
        Kind::Free,
        "",
        "label: [values] the ACL can match",
    ),
];

pub(super) const ROBOT_KEYS: &[Key] = &[
    Key::scalar("secret", "", "bcrypt hash of the robot's secret"),
    Key::scalar(
        "expires",
        "never",
        "`YYYY-MM-DD` (through that day, UTC) or an RFC 3339 time",
    ),
    Key::with(
        "labels",
        Kind::Free,
        "",
        "label: [values] the robot's rules can match",
    ),
    Key::with(
        "acl",
        Kind::Items(acl::KEYS),
        "`[]`",
        "the robot's only rules, written as `acl` entries",
    ),
];

/// The accounts by name, and the htpasswd file (watched for changes).
pub(super) fn build(
    users: Option<&Node>,
    robots: Option<RawRobots>,
    htpasswd: Option<&str>,
    cx: &mut Cx<'_>,
) -> Result<(HashMap<String, User>, Option<PathBuf>), Failed> {
    let mut out = HashMap::new();
    let mut failed = None;
    // One copy of each distinct label set: a set is a few hundred bytes (a BTreeMap node),
    // and 100,000 users in a few teams have a few sets.
    let mut sets: HashSet<Arc<Labels>> = HashSet::new();
    let mut share = |labels: Arc<Labels>| match sets.get(&*labels) {
        Some(same) => same.clone(),
        None => {
            sets.insert(labels.clone());
            labels
        }
    };
    // Each user is read from the tree, checked and kept before the next is read: the
    // file's form of a user lives only while its own is made.
    let entries: &[(yaml::Key, Node)] = match users {
        None => &[],
        Some(Node {
            value: Value::Map(entries),
            ..
        }) => entries,
        Some(node) if node.is_null() => &[],
        Some(node) => {
            // Not a mapping: the reader's own words for what was found.
            let at = [key("users")];
            if let Err(e) = yaml::from_node_at::<RawUsers>(node, &at, &node.origin) {
                failed = Some(cx.push(read_error(cx, e)));
            }
            &[]
        }
    };
    out.reserve(entries.len());
    for (k, node) in entries {
        let at = [key("users"), key(&k.name)];
        let user = match yaml::from_node_at::<Option<RawUser>>(node, &at, &k.origin) {
            Ok(user) => user,
            Err(e) => {
                failed = Some(cx.push(read_error(cx, e)));
                continue;
            }
        };
        match static_user(&k.name, user.unwrap_or_default(), cx) {
            Ok(mut user) => {
                user.labels = share(user.labels);
                out.insert(k.name.clone(), user);
            }
            Err(f) => failed = Some(f),
        }
    }
    for (name, robot) in robots.unwrap_or_default() {
        if out.contains_key(&name) {
            failed = Some(cx.fail_at(&[key("robots"), key(&name)], "a user has this name already"));
            continue;
        }
        match robot_user(&name, robot, cx) {
            Ok(mut user) => {
                user.labels = share(user.labels);
                out.insert(name, user);
            }
            Err(f) => failed = Some(f),
        }
    }
    let htpasswd = htpasswd.map(|p| cx.resolve(p));
    if let Some(file) = &htpasswd {
        match read_htpasswd(file) {
            Ok(entries) => {
                let none = share(Arc::default());
                for (name, hash) in entries {
                    // A user in `users` wins over the same name in the file (it has labels).
                    out.entry(name).or_insert(User {
                        password_hash: Some(hash),
                        labels: none.clone(),
                        robot: None,
                        backend: Backend::Htpasswd,
                    });
                }
            }
            Err(e) => failed = Some(cx.push(e)),
        }
    }
    match failed {
        Some(f) => Err(f),
        None => Ok((out, htpasswd)),
    }
}

fn static_user(name: &str, user: RawUser, cx: &mut Cx<'_>) -> Result<User, Failed> {
    let at = |k: &'static str| ["users", name, k];
    let password_hash = match (name.is_empty(), user.password) {
        (true, Some(_)) => {
            return cx.fail(
                &at("password"),
                "the anonymous entry \"\" takes no password",
            )
        }
        (true, None) => None,
        (false, None) => {
            return cx.fail_hint(&["users", name], "this user has no password", "docker_auth lets such a user in with any password; regate refuses. Add a bcrypt hash from `regate hash-password` or `htpasswd -nB`")
        }
        (false, Some(p)) if is_bcrypt(&p) => Some(p),
        (false, Some(_)) => {
            return cx.fail_hint(
                &at("password"),
                "not a bcrypt hash",
                "make one with `regate hash-password` or `htpasswd -nB USER`",
            )
        }
    };
    Ok(User {
        password_hash,
        labels: Arc::new(user.labels.unwrap_or_default().into_iter().collect()),
        robot: None,
        backend: Backend::Users,
    })
}

fn robot_user(name: &str, robot: RawRobot, cx: &mut Cx<'_>) -> Result<User, Failed> {
    let at = |k: &'static str| ["robots", name, k];
    let secret = match robot.secret {
        Some(s) if is_bcrypt(&s) => s,
        Some(_) => {
            return cx.fail(
                &at("secret"),
                "not a bcrypt hash (make one with `regate hash-password`)",
            )
        }
        None => return cx.fail(&["robots", name], "a robot needs a `secret` (bcrypt)"),
    };
    let expires = match robot.expires.as_deref() {
        None => None,
        Some(text) => match parse_expiry(text) {
            Some(t) => Some(t),
            None => {
                return cx.fail(
                    &at("expires"),
                    format!("`{text}` is not YYYY-MM-DD or an RFC 3339 time"),
                )
            }
        },
    };
    let entries = robot.acl.unwrap_or_default();
    let prefix = [key("robots"), key(name), key("acl")];
    let acl: Acl = acl::compile(&entries, &prefix, cx)?;
    if entries.is_empty() {
        cx.warn(format!(
            "robot {name} has no `acl`: it can log in but is granted nothing"
        ));
    }
    Ok(User {
        password_hash: Some(secret),
        labels: Arc::new(robot.labels.unwrap_or_default()),
        robot: Some(Robot {
            expires,
            acl: Arc::new(acl),
        }),
        backend: Backend::Robots,
    })
}

/// A robot's end: through the given day (UTC), or at an exact RFC 3339 time.
fn parse_expiry(text: &str) -> Option<std::time::SystemTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t.into());
    }
    let mut parts = text.splitn(3, '-').map(|p| p.parse::<i32>().ok());
    let (Some(Some(y)), Some(Some(m)), Some(Some(d))) = (parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let month = time::Month::try_from(u8::try_from(m).ok()?).ok()?;
    let day = time::Date::from_calendar_date(y, month, u8::try_from(d).ok()?).ok()?;
    let end = day.next_day()?.midnight().assume_utc();
    Some(end.into())
}

/// `user:hash` lines, as `htpasswd -B` writes and registry:2's htpasswd auth reads;
/// blank lines and `#` comments skipped. Errors name the file and line.
fn read_htpasswd(file: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let fail = |line: usize, message: String| ConfigError {
        position: Some((line, 1)),
        ..ConfigError::file(file, message)
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| ConfigError::file(file, format!("cannot read the htpasswd file: {e}")))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            return Err(fail(i + 1, "not a `user:hash` line".into()));
        };
        if name.is_empty() {
            return Err(fail(i + 1, "empty user name".into()));
        }
        if !is_bcrypt(hash) {
            let mut e = fail(i + 1, format!("the hash of `{name}` is not bcrypt"));
            e.hint = Some("registry:2 and regate take bcrypt only: `htpasswd -B`".into());
            return Err(e);
        }
        out.push((name.to_owned(), hash.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    super::keys::assert_keys_match::<RawUser>(USER_KEYS);
    super::keys::assert_keys_match::<RawRobot>(ROBOT_KEYS);
}
