//! Managing `xorm_auth`'s accounts and `acl_xorm`'s rules without SQL: the one place
//! `regate user`, `regate acl` and the admin API change them, so both check the same
//! things and write the same audit line (`regate::audit`, one per change, naming who
//! made it and how).

use std::net::IpAddr;
use std::sync::Arc;

use crate::acl::{Acl, Labels, RawEntry};
use crate::auth::acl_xorm::SqlRules;
use crate::auth::pool::Pool;
use crate::auth::Secret;
use crate::sql::{
    entry_json, parse_entry, place, position, renumber, Database, Placement, SqlError, UserSummary,
};

/// The bcrypt cost of a password set here (`regate hash-password`'s default).
pub const COST: u32 = 10;

/// bcrypt reads only the first 72 bytes of a password.
const PASSWORD_MAX: usize = 72;

/// Who made a change, for the audit log.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The account (API), or the operating-system user (CLI).
    pub name: String,
    /// `cli` or `api`.
    pub via: &'static str,
    pub client: Option<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// The section the change needs is not configured.
    #[error("{0}")]
    NotConfigured(&'static str),
    #[error(transparent)]
    Database(#[from] SqlError),
    /// The input is refused (400).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    /// Too many password hashes are being computed (429).
    #[error("too many password checks are running; try again shortly")]
    Busy,
}

/// A rule as listed: its `seq`, the entry as written, and whether regate can use it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleView {
    pub seq: Option<i64>,
    /// The entry, when it parses.
    pub rule: Option<RawEntryView>,
    /// The stored text, when it does not parse or compile.
    pub text: Option<String>,
    /// Why `acl_xorm` skips it.
    pub error: Option<String>,
}

/// An entry in the shape of the config file's `acl` items.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntryView {
    #[serde(rename = "match", default)]
    pub match_: MatchView,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

impl From<RawEntry> for RawEntryView {
    fn from(e: RawEntry) -> RawEntryView {
        let m = e.match_;
        RawEntryView {
            match_: MatchView {
                account: m.account,
                type_: m.type_,
                name: m.name,
                service: m.service,
                ip: m.ip,
                labels: m.labels,
            },
            actions: e.actions,
            comment: e.comment,
        }
    }
}

impl From<RawEntryView> for RawEntry {
    fn from(e: RawEntryView) -> RawEntry {
        let m = e.match_;
        RawEntry {
            match_: crate::acl::RawMatch {
                account: m.account,
                type_: m.type_,
                name: m.name,
                service: m.service,
                ip: m.ip,
                labels: m.labels,
            },
            actions: e.actions,
            comment: e.comment,
        }
    }
}

/// The SQL store, as configured.
#[derive(Clone)]
pub struct Accounts {
    users: Option<Arc<Database>>,
    rules: Option<Arc<Database>>,
    /// A running regate's rules, read again at once after a change.
    cache: Option<Arc<SqlRules>>,
    bcrypt: Arc<Pool>,
}

const NO_USERS: &str = "accounts live in SQL only with `xorm_auth` in the config (e.g. `xorm_auth: {database_type: sqlite3}`)";
const NO_RULES: &str = "rules live in SQL only with `acl_xorm` in the config (e.g. `acl_xorm: {database_type: sqlite3}`)";

impl Accounts {
    pub fn new(
        users: Option<Arc<Database>>,
        rules: Option<Arc<Database>>,
        cache: Option<Arc<SqlRules>>,
        bcrypt: Arc<Pool>,
    ) -> Accounts {
        Accounts {
            users,
            rules,
            cache,
            bcrypt,
        }
    }

    /// What a running regate manages.
    pub fn of(rt: &crate::runtime::Runtime) -> Accounts {
        Accounts::new(
            rt.sql_users.as_ref().map(|u| u.database().clone()),
            rt.sql_rules.as_ref().map(|r| r.database().clone()),
            rt.sql_rules.clone(),
            rt.bcrypt.clone(),
        )
    }

    /// What a config names, for a command run beside the server.
    pub fn for_config(config: &crate::config::Config) -> Accounts {
        let users = config
            .xorm_auth
            .as_ref()
            .map(|s| Arc::new(Database::open(s)));
        let rules = config.acl_xorm.as_ref().map(|a| match &users {
            Some(db) if db.settings().same_database(&a.database) => db.clone(),
            _ => Arc::new(Database::open(&a.database)),
        });
        Accounts::new(users, rules, None, Arc::default())
    }

    pub fn has_users(&self) -> bool {
        self.users.is_some()
    }

    pub fn has_rules(&self) -> bool {
        self.rules.is_some()
    }

    fn users_db(&self) -> Result<&Database, ManageError> {
        self.users
            .as_deref()
            .ok_or(ManageError::NotConfigured(NO_USERS))
    }

    fn rules_db(&self) -> Result<&Database, ManageError> {
        self.rules
            .as_deref()
            .ok_or(ManageError::NotConfigured(NO_RULES))
    }

    pub async fn users(&self) -> Result<Vec<UserSummary>, ManageError> {
        Ok(self.users_db()?.users().await?)
    }

    /// A new account; refused when the name has one already.
    pub async fn add_user(
        &self,
        actor: &Actor,
        name: &str,
        password: &Secret,
        labels: &Labels,
    ) -> Result<(), ManageError> {
        let db = self.users_db()?;
        check_name(name)?;
        check_labels(labels)?;
        let hash = self.hash(password).await?;
        if db.newest_user(name).await?.is_some() {
            return Err(ManageError::Exists(format!(
                "user {name:?} exists; `regate user passwd` changes the password"
            )));
        }
        db.insert_user(name, &hash, labels).await?;
        audit(actor, "user_add", name, None);
        Ok(())
    }

    pub async fn set_password(
        &self,
        actor: &Actor,
        name: &str,
        password: &Secret,
    ) -> Result<(), ManageError> {
        let db = self.users_db()?;
        let hash = self.hash(password).await?;
        if !db.set_password(name, &hash).await? {
            return Err(no_user(name));
        }
        audit(actor, "user_passwd", name, None);
        Ok(())
    }

    pub async fn set_labels(
        &self,
        actor: &Actor,
        name: &str,
        labels: &Labels,
    ) -> Result<(), ManageError> {
        let db = self.users_db()?;
        check_labels(labels)?;
        if !db.set_labels(name, labels).await? {
            return Err(no_user(name));
        }
        let text = crate::sql::labels_json(labels);
        audit(actor, "user_label", name, Some(&text));
        Ok(())
    }

    /// Removes every row of the name.
    pub async fn delete_user(&self, actor: &Actor, name: &str) -> Result<u64, ManageError> {
        let rows = self.users_db()?.delete_user(name).await?;
        if rows == 0 {
            return Err(no_user(name));
        }
        audit(actor, "user_del", name, None);
        Ok(rows)
    }

    /// The labels of an account now (for `regate user label`).
    pub async fn labels(&self, name: &str) -> Result<Labels, ManageError> {
        let row = self
            .users_db()?
            .newest_user(name)
            .await?
            .ok_or_else(|| no_user(name))?;
        crate::sql::parse_labels(row.labels.as_deref()).map_err(ManageError::Invalid)
    }

    pub async fn rules(&self) -> Result<Vec<RuleView>, ManageError> {
        let rows = self.rules_db()?.rules().await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let checked = parse_entry(&row.entry).and_then(|e| {
                    check_rule(&e).map_err(|m| m.to_string())?;
                    Ok(e)
                });
                match checked {
                    Ok(e) => RuleView {
                        seq: row.seq,
                        rule: Some(e.into()),
                        text: None,
                        error: None,
                    },
                    Err(why) => RuleView {
                        seq: row.seq,
                        rule: None,
                        text: Some(row.entry),
                        error: Some(why),
                    },
                }
            })
            .collect())
    }

    /// Adds a rule where `at` says; its `seq`.
    pub async fn add_rule(
        &self,
        actor: &Actor,
        entry: &RawEntry,
        at: Placement,
    ) -> Result<i64, ManageError> {
        check_rule(entry)?;
        let text = entry_json(entry);
        let seq = self
            .rules_db()?
            .rewrite_rules(|rows| {
                let (rows, seq) = place(rows, text.clone(), at)?;
                Ok::<_, String>((rows, seq))
            })
            .await?
            .map_err(ManageError::NotFound)?;
        self.changed();
        audit_rule(actor, "acl_add", seq, &text);
        Ok(seq)
    }

    pub async fn delete_rule(&self, actor: &Actor, seq: i64) -> Result<(), ManageError> {
        let text = self
            .rules_db()?
            .rewrite_rules(|mut rows| {
                let i = position(&rows, seq)?;
                let gone = rows.remove(i);
                Ok::<_, String>((rows, gone.entry))
            })
            .await?
            .map_err(ManageError::NotFound)?;
        self.changed();
        audit_rule(actor, "acl_del", seq, &text);
        Ok(())
    }

    /// Moves the rule with `seq` before or after another; its new `seq`.
    pub async fn move_rule(
        &self,
        actor: &Actor,
        seq: i64,
        at: Placement,
    ) -> Result<i64, ManageError> {
        if matches!(at, Placement::Before(s) | Placement::After(s) if s == seq) {
            return Err(ManageError::Invalid(
                "a rule cannot move next to itself".into(),
            ));
        }
        let (new_seq, text) = self
            .rules_db()?
            .rewrite_rules(|mut rows| {
                let i = position(&rows, seq)?;
                // The anchor must exist before the rule leaves its place.
                if let Placement::Before(s) | Placement::After(s) = at {
                    position(&rows, s)?;
                }
                let row = rows.remove(i);
                let (rows, new_seq) = place(rows, row.entry.clone(), at)?;
                Ok::<_, String>((rows, (new_seq, row.entry)))
            })
            .await?
            .map_err(ManageError::NotFound)?;
        self.changed();
        tracing::info!(
            target: "regate::audit",
            event = "acl_move",
            actor = %actor.name,
            via = actor.via,
            client = %client(actor),
            seq,
            new_seq,
            rule = %text,
            "rules changed"
        );
        Ok(new_seq)
    }

    /// Every rule numbered 10, 20, 30, ... in the order it has now.
    pub async fn renumber(&self, actor: &Actor) -> Result<usize, ManageError> {
        let n = self
            .rules_db()?
            .rewrite_rules(|mut rows| {
                renumber(&mut rows);
                let n = rows.len();
                Ok::<_, String>((rows, n))
            })
            .await?
            .map_err(ManageError::Invalid)?;
        self.changed();
        tracing::info!(
            target: "regate::audit",
            event = "acl_renumber",
            actor = %actor.name,
            via = actor.via,
            client = %client(actor),
            rules = n,
            "rules changed"
        );
        Ok(n)
    }

    fn changed(&self) {
        if let Some(cache) = &self.cache {
            cache.invalidate();
        }
    }

    async fn hash(&self, password: &Secret) -> Result<String, ManageError> {
        let p = password.expose();
        if p.is_empty() {
            return Err(ManageError::Invalid("empty password".into()));
        }
        if p.len() > PASSWORD_MAX {
            return Err(ManageError::Invalid(format!(
                "the password is {} bytes; bcrypt reads only the first {PASSWORD_MAX}",
                p.len()
            )));
        }
        let password = password.clone();
        self.bcrypt
            .run(move || bcrypt::hash(password.expose(), COST))
            .await
            .map_err(|_| ManageError::Busy)?
            .map_err(|e| ManageError::Invalid(e.to_string()))
    }
}

fn no_user(name: &str) -> ManageError {
    ManageError::NotFound(format!("no user {name:?} in xorm_user"))
}

/// A name a registry client can log in with: not empty, no `:` (Basic credentials end the
/// name there), no control characters or surrounding spaces, at most 128 bytes (the
/// column's size).
pub fn check_name(name: &str) -> Result<(), ManageError> {
    let why = if name.is_empty() {
        "an empty name is anonymous, which `users` decides"
    } else if name.len() > 128 {
        "longer than 128 bytes (docker_auth's column holds 128)"
    } else if name.contains(':') {
        "a `:` ends the name in HTTP Basic credentials"
    } else if name.chars().any(char::is_control) {
        "control characters"
    } else if name.trim() != name {
        "spaces around it"
    } else {
        return Ok(());
    };
    Err(ManageError::Invalid(format!("user name {name:?}: {why}")))
}

fn check_labels(labels: &Labels) -> Result<(), ManageError> {
    if labels.keys().any(|k| k.is_empty()) {
        return Err(ManageError::Invalid("a label needs a name".into()));
    }
    Ok(())
}

/// A rule regate can use, as the static `acl` checks its rules.
pub fn check_rule(entry: &RawEntry) -> Result<(), ManageError> {
    Acl::compile(std::slice::from_ref(entry))
        .map(|_| ())
        .map_err(|errors| {
            ManageError::Invalid(
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
}

fn audit(actor: &Actor, event: &'static str, account: &str, labels: Option<&str>) {
    tracing::info!(
        target: "regate::audit",
        event,
        actor = %actor.name,
        via = actor.via,
        client = %client(actor),
        account,
        labels,
        "account changed"
    );
}

fn audit_rule(actor: &Actor, event: &'static str, seq: i64, rule: &str) {
    tracing::info!(
        target: "regate::audit",
        event,
        actor = %actor.name,
        via = actor.via,
        client = %client(actor),
        seq,
        rule,
        "rules changed"
    );
}

fn client(actor: &Actor) -> String {
    actor
        .client
        .map_or_else(|| "-".to_owned(), |c| c.to_string())
}
