//! `regate explain`: for an account and some scopes, which rule decides each scope, what it
//! grants, and why every earlier rule did not match (the token endpoint's log line says
//! the same in one line: [`crate::acl::Explanation::reason`]).
//!
//! Everything here is pure (bcrypt, and asking the LDAP directory about an account
//! `users` lacks, aside): the binary parses arguments and prints.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::SystemTime;

use serde::Serialize;

use crate::acl::{self, Acl, Explanation, Labels};
use crate::auth::identity::{AuthnError, Backend};
use crate::auth::scope::Scope;
use crate::auth::users;
use crate::auth::Secret;
use crate::config::Config;

mod ask;
#[cfg(test)]
mod tests;

use ask::{ask_authorizers, ask_backends, Asked};

/// What to explain.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// `""` for anonymous.
    pub account: &'a str,
    /// Checked against the user's bcrypt hash when given.
    pub password: Option<&'a Secret>,
    /// The client address; `None` and rules with `ip` do not match.
    pub ip: Option<IpAddr>,
    /// Labels to use instead of the user's own (`--label`).
    pub labels: Option<&'a Labels>,
    pub scopes: &'a [Scope],
}

/// Who the account is, as the token endpoint would see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Account {
    /// A named entry in `users` (or the htpasswd file).
    User,
    /// Not in `users`, found by a backend after it (`ext_auth`, `ldap_auth`, `xorm_auth`:
    /// `backend` says which).
    Directory,
    /// Not in `users`, and a backend after it could not be asked: a token request gets 503.
    DirectoryUnavailable,
    /// A robot in `robots`: judged by its own rules only.
    Robot,
    /// A robot past its `expires`: a token request gets 401.
    RobotExpired,
    /// Not in `users`: a token request gets 401.
    Unknown,
    /// `""` with the `"": {}` entry.
    Anonymous,
    /// `""` without it: a request without credentials gets 401.
    AnonymousDisabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Password {
    Correct,
    Wrong,
    /// No such user, so nothing to check against.
    NoUser,
    /// The LDAP directory could not be asked.
    NotChecked,
    /// Anonymous requests carry none.
    Anonymous,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub account: String,
    pub status: Account,
    /// The backend that holds the account, and so authenticates it: `users`, `htpasswd`,
    /// `robots` or `ldap_auth`; `None` when none does.
    pub backend: Option<Backend>,
    /// The account's entry in the LDAP directory.
    pub dn: Option<String>,
    /// Whether the LDAP directory was asked about the account.
    pub directory_asked: bool,
    /// Why the LDAP directory (or the backend `failed_backend` names) could not be asked.
    pub directory_error: Option<String>,
    /// The backend after `users` that could not be asked.
    pub failed_backend: Option<Backend>,
    /// The rules that judge the account: `acl`, or `robots.NAME.acl` for a robot.
    pub acl: String,
    pub labels: Labels,
    /// `users`, `ldap_auth`, `--label`, or `none` (an unknown account without `--label`).
    pub labels_from: &'static str,
    /// `None` when no password was given.
    pub password: Option<Password>,
    pub ip: Option<IpAddr>,
    pub service: String,
    /// Why a token request with this login is refused before any scope is decided
    /// (then nothing is granted); `None` when it gets a token.
    pub refused: Option<String>,
    pub scopes: Vec<ScopeReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScopeReport {
    /// As asked, e.g. `repository:alice/app:pull,push`.
    pub scope: String,
    /// The actions the ACL is asked for (a repository `*` adds pull, push and delete).
    pub requested: Vec<String>,
    /// The deciding rule, `None` when no rule matched.
    pub rule: Option<usize>,
    pub comment: Option<String>,
    /// The deciding rule's `actions` as written.
    pub rule_actions: Option<Vec<String>>,
    pub granted: Vec<String>,
    pub denied: Vec<String>,
    /// Every rule before the deciding one (or all, when none matched), with why it did not.
    pub skipped: Vec<Skipped>,
    /// What decided: `acl` (or `robots.NAME.acl`), an authorizer after it (`acl_xorm`,
    /// `ext_authz`, `casbin_authz`), or `None` when nothing did (denied).
    pub decided_by: Option<String>,
    /// The authorizer's own name for what decided (`acl_xorm seq 20 (comment)`).
    pub decided_rule: Option<String>,
    /// An authorizer that could not decide: a token request gets 503.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub rule: usize,
    pub comment: Option<String>,
    pub reason: String,
}

/// `--label k=v` arguments; a key given twice has both values.
pub fn parse_labels(args: &[String]) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for arg in args {
        let (k, v) = arg
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("label {arg:?} is not KEY=VALUE"))?;
        labels.entry(k.to_owned()).or_default().push(v.to_owned());
    }
    Ok(labels)
}

/// Decides each scope as the token endpoint would, and says why.
pub fn explain(config: &Config, input: &Input<'_>) -> Report {
    explain_at(config, input, SystemTime::now())
}

/// [`explain`] as if it were `now` (a robot's expiry is judged at it).
pub fn explain_at(config: &Config, input: &Input<'_>, now: SystemTime) -> Report {
    let user = config.users.get(input.account);
    let robot = user.and_then(|u| u.robot.as_ref());
    // docker_auth's order: only a name `users` lacks is the other backends'.
    let others = config.ldap.is_some()
        || !config.idp.is_empty()
        || config.ext_auth.is_some()
        || config.xorm_auth.is_some();
    let asked = match user {
        None if others && !input.account.is_empty() => {
            Some(ask_backends(config, input.account, input.password))
        }
        _ => None,
    };
    // The token endpoint's own decision for the account, as if the password were right
    // (the password is reported apart, below).
    let refused = user.and_then(|u| users::login_outcome(u, true, now).err());
    let status = match (input.account.is_empty(), user.is_some(), robot) {
        (false, _, Some(_)) if refused == Some(AuthnError::Expired) => Account::RobotExpired,
        (false, _, Some(_)) => Account::Robot,
        (false, true, None) => Account::User,
        (false, false, None) => match &asked {
            Some(Asked::Found { .. }) => Account::Directory,
            Some(Asked::Failed(..)) => Account::DirectoryUnavailable,
            Some(Asked::Missing) | None => Account::Unknown,
        },
        (true, true, _) => Account::Anonymous,
        (true, false, _) => Account::AnonymousDisabled,
    };
    let backend = match (user, &asked) {
        (Some(u), _) => Some(u.backend),
        (None, Some(Asked::Found { backend, .. })) => Some(*backend),
        _ => None,
    };
    // As the token endpoint does: a robot is judged by its own rules only.
    let (rules, acl_key): (&Acl, String) = match robot {
        Some(r) => (&r.acl, format!("robots.{}.acl", input.account)),
        None => (&config.acl, "acl".to_owned()),
    };
    let (labels, labels_from) = match (input.labels, user, &asked) {
        (Some(l), _, _) => (l.clone(), "--label"),
        (None, Some(u), _) => (Labels::clone(&u.labels), "users"),
        (
            None,
            None,
            Some(Asked::Found {
                labels, backend, ..
            }),
        ) => (labels.clone(), backend.section()),
        (None, None, _) => (Labels::new(), "none"),
    };
    let password = input.password.map(|p| match (status, user) {
        (Account::Anonymous | Account::AnonymousDisabled, _) => Password::Anonymous,
        (Account::Directory, _) => match &asked {
            Some(Asked::Found {
                password: Some(p), ..
            }) => *p,
            _ => Password::NotChecked,
        },
        (Account::DirectoryUnavailable, _) => Password::NotChecked,
        (_, Some(u)) => {
            let ok = u
                .password_hash
                .as_deref()
                .is_some_and(|h| users::verify_password(h, p));
            if ok {
                Password::Correct
            } else {
                Password::Wrong
            }
        }
        (_, None) => Password::NoUser,
    });
    let service = config.token.service.clone();
    let requested: Vec<Vec<String>> = input
        .scopes
        .iter()
        .map(crate::auth::authorize::requested_actions)
        .collect();
    let requests: Vec<acl::Request<'_>> = input
        .scopes
        .iter()
        .zip(&requested)
        .map(|(scope, requested)| acl::Request {
            account: input.account,
            labels: &labels,
            ip: input.ip,
            service: &service,
            resource_type: &scope.resource_type,
            name: &scope.name,
            actions: requested,
        })
        .collect();
    let explanations: Vec<Explanation> = requests.iter().map(|r| rules.explain(r)).collect();
    // As the token endpoint: a scope no rule matches goes to the authorizers after the
    // `acl` (a robot's own rules are its only ones).
    let unmatched: Vec<Option<acl::Request<'_>>> = requests
        .iter()
        .zip(&explanations)
        .map(|(r, e)| (e.decision.rule.is_none() && robot.is_none()).then_some(*r))
        .collect();
    let others_decided = match unmatched.iter().any(Option::is_some)
        && (config.acl_xorm.is_some()
            || config.ext_authz.is_some()
            || config.casbin_authz.is_some())
    {
        true => ask_authorizers(config, &unmatched),
        false => unmatched.iter().map(|_| None).collect(),
    };
    let scopes = input
        .scopes
        .iter()
        .zip(requested)
        .zip(explanations)
        .zip(others_decided)
        .map(|(((scope, requested), explanation), other)| {
            let mut report = scope_report(rules, scope, requested, explanation);
            if report.rule.is_some() {
                report.decided_by = Some(acl_key.clone());
            }
            match other {
                Some(Ok(Some(decided))) => {
                    report.granted = decided.actions;
                    report.denied = report
                        .requested
                        .iter()
                        .filter(|a| !report.granted.contains(a))
                        .filter(|a| !(*a == "*" && report.requested.len() > scope.actions.len()))
                        .cloned()
                        .collect();
                    report.decided_by = Some(
                        decided
                            .rule
                            .split(' ')
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                    report.decided_rule = Some(decided.rule);
                }
                Some(Err(e)) => report.error = Some(e),
                Some(Ok(None)) | None => {}
            }
            report
        })
        .collect();
    let directory_asked = asked.is_some();
    let (dn, directory_error, failed_backend) = match asked {
        Some(Asked::Found { dn, .. }) if !dn.is_empty() => (Some(dn), None, None),
        Some(Asked::Failed(b, e)) => (None, Some(e), Some(b)),
        _ => (None, None, None),
    };
    // What the token endpoint would answer the login itself: a refused login gets no
    // token, so no scope is granted, whatever the rules say (they are explained anyway).
    let refused = match (status, password) {
        (_, Some(Password::Wrong)) => Some("the password is wrong: a token request gets 401"),
        (Account::Unknown, _) => Some("no backend knows the account: a token request gets 401"),
        (Account::RobotExpired, _) => Some("the robot has expired: a token request gets 401"),
        (Account::AnonymousDisabled, _) => {
            Some("anonymous access is not enabled: a request without credentials gets 401")
        }
        (Account::DirectoryUnavailable, _) => {
            Some("the directory could not be asked: a token request gets 503")
        }
        _ => None,
    };
    let mut scopes: Vec<ScopeReport> = scopes;
    if refused.is_some() {
        for s in &mut scopes {
            let granted = std::mem::take(&mut s.granted);
            s.denied.extend(granted);
            s.denied.sort();
        }
    }
    Report {
        refused: refused.map(str::to_owned),
        account: input.account.to_owned(),
        status,
        backend,
        dn,
        directory_asked,
        directory_error,
        failed_backend,
        acl: acl_key,
        labels,
        labels_from,
        password,
        ip: input.ip,
        service,
        scopes,
    }
}

fn scope_report(
    acl: &Acl,
    scope: &Scope,
    requested: Vec<String>,
    explanation: Explanation,
) -> ScopeReport {
    let decision = explanation.decision;
    let granted = decision.actions;
    // A repository `*` stands for the three actions it was expanded to: report those.
    let star_expanded = requested.len() > scope.actions.len();
    let denied = requested
        .iter()
        .filter(|a| !(star_expanded && *a == "*"))
        .filter(|a| !granted.contains(a))
        .cloned()
        .collect();
    ScopeReport {
        scope: scope.to_string(),
        rule: decision.rule,
        comment: decision
            .rule
            .and_then(|i| acl.comment(i))
            .map(str::to_owned),
        rule_actions: decision
            .rule
            .and_then(|i| acl.entries().get(i))
            .map(|e| e.actions.clone()),
        granted,
        denied,
        skipped: explanation
            .skipped
            .into_iter()
            .map(|(rule, reason)| Skipped {
                rule,
                comment: acl.comment(rule).map(str::to_owned),
                reason,
            })
            .collect(),
        requested,
        decided_by: None,
        decided_rule: None,
        error: None,
    }
}

/// `acl[3] "comment"`, or `robots.ci.acl[3]`.
fn list(actions: &[String]) -> String {
    if actions.is_empty() {
        "(none)".to_owned()
    } else {
        actions.join(",")
    }
}

impl Report {
    /// Whether a token request would not get everything asked: the login is refused, or
    /// a scope is denied in part or whole (`regate explain` then exits 1).
    pub fn denies(&self) -> bool {
        self.refused.is_some() || self.scopes.iter().any(|s| !s.denied.is_empty())
    }

    /// Plain text: one fact a line, `key: value`, each scope's lines indented under it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let account = &self.account;
        let who = match self.status {
            Account::User if self.backend == Some(Backend::Htpasswd) => {
                format!("account: {account:?}: a user in the htpasswd file")
            }
            Account::User => format!("account: {account:?}: a user in `users`"),
            Account::Directory if self.backend != Some(Backend::LdapAuth) => format!(
                "account: {account:?}: not in `users`; an account of {}{}",
                self.backend.map_or("another backend", Backend::section),
                self.dn.as_deref().map(|dn| format!(": {dn}")).unwrap_or_default()
            ),
            Account::Directory => format!(
                "account: {account:?}: not in `users`; an entry in the LDAP directory (ldap_auth){}",
                self.dn.as_deref().map(|dn| format!(": {dn}")).unwrap_or_default()
            ),
            Account::DirectoryUnavailable
                if self.failed_backend.is_some_and(|b| b != Backend::LdapAuth) =>
            {
                format!(
                    "account: {account:?}: not in `users`, and {} could not be asked ({}): a token request gets 503; the ACL is explained anyway",
                    self.failed_backend.map_or("a backend", Backend::section),
                    self.directory_error.as_deref().unwrap_or("no answer")
                )
            }
            Account::DirectoryUnavailable => format!(
                "account: {account:?}: not in `users`, and the LDAP directory could not be asked ({}): a token request gets 503; the ACL is explained anyway",
                self.directory_error.as_deref().unwrap_or("no answer")
            ),
            Account::Robot => format!("account: {account:?}: a robot in `robots`, judged only by its own rules ({})", self.acl),
            Account::RobotExpired => format!("account: {account:?}: a robot past its `expires`: a token request gets 401 (this robot account has expired); its rules are explained anyway"),
            Account::Unknown if self.directory_asked => format!("account: {account:?}: no such user in `users`, nor known to the backends after it (`ldap_auth`, `ext_auth`, `xorm_auth`, an identity provider): a token request gets 401 (incorrect username or password); the ACL is explained anyway"),
            Account::Unknown => format!("account: {account:?}: no such user in `users`: a token request gets 401 (incorrect username or password); the ACL is explained anyway"),
            Account::Anonymous => "account: \"\" (anonymous): allowed by the \"\" entry in `users`".to_owned(),
            Account::AnonymousDisabled => "account: \"\" (anonymous): `users` has no \"\" entry, so a request without credentials gets 401 before the ACL; the ACL is explained anyway".to_owned(),
        };
        let _ = writeln!(out, "{who}");
        let labels = if self.labels.is_empty() {
            "(none)".to_owned()
        } else {
            self.labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.join("|")))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(out, "labels: {labels} (from {})", self.labels_from);
        if let Some(p) = self.password {
            let text = match p {
                Password::Correct if self.backend == Some(Backend::LdapAuth) => {
                    "correct: the LDAP directory (ldap_auth) accepted it"
                }
                Password::Correct if self.backend == Some(Backend::ExtAuth) => {
                    "correct: the external program (ext_auth) accepted it"
                }
                Password::Correct => "correct",
                Password::Wrong => {
                    "wrong: a token request gets 401 (incorrect username or password)"
                }
                Password::NoUser => "not checked: no such user",
                Password::NotChecked => "not checked: the LDAP directory could not be asked",
                Password::Anonymous => "not checked: anonymous requests carry no password",
            };
            let _ = writeln!(out, "password: {text}");
        }
        match self.ip {
            Some(ip) => {
                let _ = writeln!(out, "ip: {ip}");
            }
            None => {
                let _ = writeln!(
                    out,
                    "ip: (none given: rules with `ip` do not match; use --ip)"
                );
            }
        }
        let _ = writeln!(out, "service: {:?}", self.service);
        for s in &self.scopes {
            let _ = writeln!(out, "\nscope: {}", s.scope);
            let _ = writeln!(out, "  asks: {}", list(&s.requested));
            for k in &s.skipped {
                let name = acl::rule_name(&self.acl, k.rule, k.comment.as_deref());
                let _ = writeln!(out, "  {name}: no match: {}", k.reason);
            }
            match (s.rule, &s.rule_actions, &s.decided_rule, &s.error) {
                (Some(rule), Some(actions), _, _) => {
                    let name = acl::rule_name(&self.acl, rule, s.comment.as_deref());
                    let _ = writeln!(out, "  {name}: decides: actions {actions:?}");
                }
                (_, _, Some(other), _) => {
                    let _ = writeln!(out, "  {}: no rule matched", self.acl);
                    let _ = writeln!(out, "  {other}: decides");
                }
                (_, _, _, Some(e)) => {
                    let _ = writeln!(out, "  {}: no rule matched", self.acl);
                    let _ = writeln!(out, "  cannot decide: {e}: a token request gets 503");
                }
                _ => {
                    let _ = writeln!(out, "  no rule matched: denied by default");
                }
            }
            match &self.refused {
                Some(_) => {
                    let _ = writeln!(out, "  granted: (none: the login is refused)");
                }
                None => {
                    let _ = writeln!(out, "  granted: {}", list(&s.granted));
                }
            }
            let _ = writeln!(out, "  denied: {}", list(&s.denied));
        }
        out
    }
}
