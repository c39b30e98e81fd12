//! `regate check`'s lints: things a config that loads may still get wrong. Each finding is
//! a [`Warning`] located like a [`ConfigError`] (`file:line:column: key: message`).
//!
//! Every lint must be provable from the config alone: a warning that is sometimes wrong
//! teaches operators to ignore warnings. So shadowing is reported only when an earlier rule
//! provably matches everything a later one matches, and patterns with placeholders are
//! compared only when written identically.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::acl::{placeholders, Acl, Piece, RawEntry, RawMatch};
use crate::auth::users::User;
use crate::config::keys::closest;
use crate::config::{display_path, key, Config, ConfigError, Document, Seg};

mod patterns;
#[cfg(test)]
mod tests;

use patterns::{
    is_literal, missing_dollar, probe, regex_source, same_captures, suggest_placeholder, Probe,
};

/// One finding: `file:line:column: key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub position: Option<(usize, usize)>,
    /// e.g. `acl[1].match.account`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": {}: {}", self.key, self.message)
    }
}

/// Reads and validates the config at `path`, then lints it.
pub fn load_and_lint(path: &Path) -> Result<(Config, Vec<Warning>), ConfigError> {
    // The same loading as `serve`, environment overrides included.
    let (config, doc) = Config::load_document(path)?;
    let warnings = lint(&config, &doc);
    Ok((config, warnings))
}

/// Lints a loaded config; `doc` is the file it was read from (for line and column).
/// Warnings come in file order.
pub fn lint(config: &Config, doc: &Document) -> Vec<Warning> {
    // The global `acl` judges every account but robots; a robot only its own rules.
    let people: Vec<(&String, &User)> = config
        .users
        .iter()
        .filter(|(_, u)| u.robot.is_none())
        .collect();
    // The directory's accounts are not known offline; the labels it gives are.
    let directory_labels = config.ldap.iter().flat_map(|l| {
        l.labels
            .iter()
            .map(|m| m.label.clone())
            .chain(l.group_search.iter().map(|g| g.label.clone()))
    });
    // Nor are the identity providers' accounts; the labels they give are.
    let provider_labels = config.idp.iter().flat_map(|p| p.label_names());
    let mut global = Linter::new(
        config,
        doc,
        vec![key("acl")],
        &config.acl,
        None,
        people.iter().map(|(n, _)| n.to_string()).collect(),
        people
            .iter()
            .flat_map(|(_, u)| u.labels.keys().cloned())
            .chain(directory_labels)
            .chain(provider_labels)
            .collect(),
    );
    // Accounts (and their labels) may also come from a backend not known offline.
    global.directory = config.ldap.is_some()
        || !config.idp.is_empty()
        || config.ext_auth.is_some()
        || config.xorm_auth.is_some();
    let mut out = global.run();
    let mut robots: Vec<(&String, &User)> = config
        .users
        .iter()
        .filter(|(_, u)| u.robot.is_some())
        .collect();
    robots.sort_by_key(|(n, _)| *n);
    for (name, user) in robots {
        let Some(robot) = &user.robot else { continue };
        out.extend(
            Linter::new(
                config,
                doc,
                vec![key("robots"), key(name), key("acl")],
                &robot.acl,
                Some(name),
                vec![name.to_string()],
                user.labels.keys().cloned().collect(),
            )
            .run(),
        );
    }
    out.sort_by_key(|w| w.position.unwrap_or((usize::MAX, usize::MAX)));
    out
}

pub(super) const FIELDS: [&str; 4] = ["account", "type", "name", "service"];
const ACTIONS: [&str; 4] = ["pull", "push", "delete", "*"];

/// Lints one list of rules: the global `acl`, or one robot's.
struct Linter<'a> {
    config: &'a Config,
    doc: &'a Document,
    /// Where the list is: `acl`, or `robots.NAME.acl`.
    prefix: Vec<Seg>,
    acl: &'a Acl,
    /// The robot whose rules these are.
    robot: Option<&'a str>,
    /// The accounts these rules can judge.
    accounts: Vec<String>,
    /// The label keys those accounts have.
    label_keys: BTreeSet<String>,
    /// Accounts may also come from the LDAP directory, which is not known offline.
    directory: bool,
    /// Accounts may have labels not known offline (`ext_auth`, `xorm_auth`).
    any_labels: bool,
    /// `probe` results: the same pattern meets the same value once per pair of rules.
    probes: RefCell<HashMap<(String, String, String), bool>>,
    /// Per rule: it matches every request.
    match_all: Vec<bool>,
    out: Vec<Warning>,
}

pub(super) fn field_raw<'m>(m: &'m RawMatch, field: &str) -> Option<&'m str> {
    match field {
        "account" => m.account.as_deref(),
        "type" => m.type_.as_deref(),
        "name" => m.name.as_deref(),
        "service" => m.service.as_deref(),
        _ => None,
    }
}

impl<'a> Linter<'a> {
    fn new(
        config: &'a Config,
        doc: &'a Document,
        prefix: Vec<Seg>,
        acl: &'a Acl,
        robot: Option<&'a str>,
        mut accounts: Vec<String>,
        label_keys: BTreeSet<String>,
    ) -> Linter<'a> {
        accounts.sort();
        Linter {
            config,
            doc,
            prefix,
            acl,
            robot,
            accounts,
            label_keys,
            directory: false,
            any_labels: false,
            probes: RefCell::default(),
            match_all: Vec::new(),
            out: Vec::new(),
        }
    }

    fn run(mut self) -> Vec<Warning> {
        let entries = self.acl.entries();
        self.match_all = entries.iter().map(|e| self.matches_all(e)).collect();
        for (i, entry) in entries.iter().enumerate() {
            self.accounts(i, entry);
            self.service(i, entry);
            self.label_conditions(i, entry);
            self.placeholders(i, entry);
            self.actions(i, entry);
            self.reachability(i, entries);
        }
        self.out
    }

    /// `acl[i]` followed by `rest`.
    fn path(&self, i: usize, rest: &[&str]) -> Vec<Seg> {
        let mut path = self.prefix.clone();
        path.push(Seg::Index(i));
        path.extend(rest.iter().map(|k| key(k)));
        path
    }

    /// `acl[i]`, `robots.ci.acl[i]`.
    fn name(&self, i: usize) -> String {
        display_path(&self.path(i, &[]))
    }

    fn warn(&mut self, path: &[Seg], message: impl Into<String>) {
        self.out.push(Warning {
            file: self.config.path.clone(),
            position: self.doc.position(path),
            key: display_path(path),
            message: message.into(),
        });
    }

    fn line_of(&self, i: usize) -> Option<usize> {
        self.doc.position(&self.path(i, &[])).map(|(line, _)| line)
    }

    /// A rule for an account nobody can authenticate as never applies.
    fn accounts(&mut self, i: usize, entry: &RawEntry) {
        let Some(raw) = entry.match_.account.as_deref() else {
            return;
        };
        let path = self.path(i, &["match", "account"]);
        if raw.contains("${") {
            return; // depends on the request; the placeholder lints look at it
        }
        let literal = self.acl.literal_accounts().any(|(r, _)| r == i);
        if let Some(robot) = self.robot {
            if !self.probe(Probe::Field("account"), raw, robot) {
                self.warn(&path, format!("{raw:?} does not match {robot:?}, the only account a robot's own rules judge; the rule never applies"));
            }
        } else if literal && raw.is_empty() {
            if !self.config.users.contains_key("") {
                self.warn(&path, "a rule for anonymous requests (\"\") never applies: `users` has no \"\" entry, so a request without credentials is refused (401) before the ACL is consulted; add `\"\": {}` to users to allow anonymous access");
            }
        } else if literal {
            let robot = self
                .config
                .users
                .get(raw)
                .is_some_and(|u| u.robot.is_some());
            if robot {
                self.warn(&path, format!("{raw:?} is a robot account, judged only by its own rules (robots.{raw}.acl); the rule never applies"));
            } else if !self.config.users.contains_key(raw) && !self.directory {
                let message = match self.closest_user(raw) {
                    Some(best) => format!("no user {raw:?}; did you mean {best:?}?"),
                    None => format!("no user {raw:?}; the rule never applies"),
                };
                self.warn(&path, message);
            }
        } else if !self.directory
            && !self
                .accounts
                .iter()
                .any(|a| self.probe(Probe::Field("account"), raw, a))
        {
            self.warn(
                &path,
                format!("{raw:?} matches no user in `users`; the rule never applies"),
            );
        }
    }

    fn closest_user(&self, name: &str) -> Option<&str> {
        closest(
            name,
            self.accounts
                .iter()
                .filter(|a| !a.is_empty())
                .map(String::as_str),
        )
    }

    /// Every token request carries this gateway's `token.service`; another never matches.
    fn service(&mut self, i: usize, entry: &RawEntry) {
        let Some(raw) = entry.match_.service.as_deref() else {
            return;
        };
        if raw.contains("${") {
            return;
        }
        let service = &self.config.token.service;
        if !self.probe(Probe::Field("service"), raw, service) {
            self.warn(
                &self.path(i, &["match", "service"]),
                format!("{raw:?} does not match this gateway's service {service:?} (token.service), which every token request carries; the rule never applies"),
            );
        }
    }

    /// A label condition needs the label; if no user has it, the rule never applies.
    fn label_conditions(&mut self, i: usize, entry: &RawEntry) {
        for label in entry.match_.labels.iter().flat_map(|l| l.keys()) {
            if !self.any_labels && !self.label_keys.contains(label) {
                self.warn(
                    &self.path(i, &["match", "labels", label]),
                    format!("no user has a label {label:?}; the rule never applies"),
                );
            }
        }
    }

    /// Placeholders that cannot expand where they are written (docker_auth.md §1.1).
    fn placeholders(&mut self, i: usize, entry: &RawEntry) {
        let m = &entry.match_;
        let mut patterns: Vec<(Vec<&str>, &str, Option<&str>)> = FIELDS
            .iter()
            .filter_map(|f| Some((vec!["match", *f], field_raw(m, f)?, Some(*f))))
            .collect();
        for (label, raw) in m.labels.iter().flatten() {
            patterns.push((vec!["match", "labels", label.as_str()], raw, None));
        }
        for (keys, raw, field) in patterns {
            let path = self.path(i, &keys);
            for ph in placeholders(raw) {
                match (ph, field) {
                    (Ok(Piece::Label(k)), None) => self.warn(&path, format!("`${{labels:{k}}}` never expands in a label pattern (docker_auth substitutes labels only into account, type, name and service); it is matched as literal text")),
                    (Ok(Piece::Label(k)), Some(_)) if !self.any_labels && !self.label_keys.contains(&k) => self.warn(&path, format!("no user has a label {k:?}, so `${{labels:{k}}}` never expands; it is matched as literal text")),
                    (Ok(Piece::Var(v)), Some(f)) if v.key() == f => self.warn(&path, format!("`${{{f}}}` in match.{f} compares the {f} with itself: alone it always matches, with other text it never does; placeholders relate one field to another, e.g. name: \"${{account}}/*\"")),
                    (Err(inner), _) => {
                        let hint = suggest_placeholder(inner)
                            .map(|s| format!("; did you mean `${{{s}}}`?"))
                            .unwrap_or_default();
                        self.warn(&path, format!("`${{{inner}}}` is not a placeholder (account, type, name, service, labels:KEY, FIELD:N); it is matched as literal text{hint}"));
                    }
                    _ => {}
                }
            }
            for inner in missing_dollar(raw) {
                self.warn(&path, format!("`{{{inner}}}` lacks the `$` of a placeholder and is matched as literal text; write `${{{inner}}}`"));
            }
        }
    }

    fn actions(&mut self, i: usize, entry: &RawEntry) {
        let path = self.path(i, &["actions"]);
        let actions = &entry.actions;
        let has = |a: &str| actions.iter().any(|x| x == a);
        // regate's own resources take `read` (the Activity page, `regate:activity:read`)
        // and `write` (the admin API, `regate:acl:write`).
        let own = entry.match_.type_.as_deref() == Some("regate");
        let known = |a: &str| ACTIONS.contains(&a) || own && (a == "read" || a == "write");
        for unknown in actions.iter().filter(|a| !known(a.as_str())) {
            self.warn(&path, format!("{unknown:?} is not an action registry clients ask for (pull, push, delete, or \"*\"; read and write only on type regate); it grants nothing"));
        }
        let all = actions.len() == 1 && actions[0] == "*";
        if has("*") && !all {
            self.warn(&path, "beside other actions, \"*\" is not a wildcard: it grants only a request for \"*\" itself (registry:catalog:*); write [\"*\"] alone to grant whatever is asked");
        }
        if has("push") && !has("pull") && !all {
            self.warn(&path, "grants push without pull: docker push asks for pull,push and the registry needs pull to check blobs, so pushes fail; add \"pull\"");
        }
        if entry.match_.type_.as_deref() == Some("registry") && !actions.is_empty() && !has("*") {
            self.warn(&path, "the catalog (registry:catalog:*) asks for \"*\"; without it this rule grants nothing there");
        }
    }

    /// A match-all rule that is not last, or a rule an earlier rule always beats.
    fn reachability(&mut self, j: usize, entries: &[RawEntry]) {
        let entry = &entries[j];
        if self.match_all[j] {
            if j + 1 < entries.len() {
                let after = if j + 2 == entries.len() {
                    format!("{} never applies", self.name(j + 1))
                } else {
                    format!(
                        "{}..{} never apply",
                        self.name(j + 1),
                        self.name(entries.len() - 1)
                    )
                };
                self.warn(
                    &self.path(j, &["match"]),
                    format!("matches every request, so {after}: the first matching rule decides; a match-all rule belongs last"),
                );
            }
            return;
        }
        // After a match-all rule, which is reported once at itself, nothing more to say.
        if self.match_all[..j].contains(&true) {
            return;
        }
        let shadow = (0..j).find(|&i| self.covers(&entries[i], entry));
        if let Some(i) = shadow {
            let at = self
                .line_of(i)
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default();
            let comment = entries[i]
                .comment
                .as_deref()
                .map(|c| format!(" {c:?}"))
                .unwrap_or_default();
            let earlier = self.name(i);
            self.warn(
                &self.path(j, &[]),
                format!("never applies: {earlier}{comment}{at} matches every request this rule matches, and the first matching rule decides"),
            );
        }
    }

    fn matches_all(&self, e: &RawEntry) -> bool {
        let m = &e.match_;
        FIELDS
            .iter()
            .all(|f| field_raw(m, f).is_none_or(|raw| self.universal(f, raw)))
            && m.ip.is_none()
            && m.labels.as_ref().is_none_or(|l| l.is_empty())
    }

    /// Whether a pattern provably matches every value the field can take.
    fn universal(&self, field: &str, raw: &str) -> bool {
        let any_regex = regex_source(raw)
            .is_some_and(|s| [".*", "^.*", ".*$", "^.*$", "^", "$", ".*?"].contains(&s));
        any_regex
            || match field {
                // Resource types are [a-z0-9]+ (the scope grammar): no `/` for `*` to miss.
                "type" => raw == "*",
                // Every request carries token.service.
                "service" => {
                    !raw.contains("${")
                        && self.probe(Probe::Field("service"), raw, &self.config.token.service)
                }
                _ => false,
            }
    }

    /// Whether every request `later` matches is also matched by `earlier`.
    fn covers(&self, earlier: &RawEntry, later: &RawEntry) -> bool {
        let (a, b) = (&earlier.match_, &later.match_);
        let fields = FIELDS.iter().all(|f| match field_raw(a, f) {
            None => true,
            Some(pa) if self.universal(f, pa) => true,
            Some(pa) => field_raw(b, f).is_some_and(|pb| {
                self.pattern_covers(Probe::Field(f), pa, pb) && same_captures(pa, a, b)
            }),
        });
        let ip = match (&a.ip, &b.ip) {
            (None, _) => true,
            (Some(x), Some(y)) => x == y,
            (Some(_), None) => false,
        };
        let labels = a.labels.iter().flatten().all(|(k, pa)| {
            b.labels.as_ref().and_then(|l| l.get(k)).is_some_and(|pb| {
                self.pattern_covers(Probe::Label(k), pa, pb) && same_captures(pa, a, b)
            })
        });
        fields && ip && labels
    }

    /// `pa` matches everything `pb` matches: written the same, or `pb` is one literal
    /// value that `pa` (free of placeholders) matches.
    fn pattern_covers(&self, at: Probe<'_>, pa: &str, pb: &str) -> bool {
        if pa == pb {
            return true;
        }
        is_literal(pb) && !pa.contains("${") && self.probe(at, pa, pb)
    }

    fn probe(&self, at: Probe<'_>, pattern: &str, value: &str) -> bool {
        let place = match at {
            Probe::Field(f) => f.to_owned(),
            Probe::Label(k) => format!("labels.{k}"),
        };
        let key = (place, pattern.to_owned(), value.to_owned());
        if let Some(known) = self.probes.borrow().get(&key) {
            return *known;
        }
        let result = probe(at, pattern, value);
        self.probes.borrow_mut().insert(key, result);
        result
    }
}
