//! `regate user` and `regate acl`: `xorm_auth`'s accounts and `acl_xorm`'s rules changed
//! from a shell, against the database the config names, through the same functions as the
//! admin API ([`crate::accounts`]). Passwords come from a prompt or stdin, never from the
//! command line (where `ps` and shell history would show them).

use std::fmt::Write as _;

use crate::accounts::{Accounts, Actor, ManageError, RawEntryView};
use crate::acl::{Labels, RawEntry, RawMatch};
use crate::auth::Secret;
use crate::config::Config;
use crate::sql::Placement;

/// What `regate user` does.
pub enum UserCommand {
    Add {
        name: String,
        labels: Labels,
    },
    Passwd {
        name: String,
    },
    Del {
        name: String,
    },
    List {
        json: bool,
    },
    /// Sets each label given to exactly its values; removes the others named.
    Label {
        name: String,
        set: Labels,
        remove: Vec<String>,
    },
}

/// What `regate acl` does.
pub enum AclCommand {
    List { json: bool },
    Add { entry: RawEntry, at: Placement },
    Del { seq: i64 },
    Move { seq: i64, at: Placement },
    Renumber,
}

/// Who runs the command: the operating-system user (the one `sudo` came from).
pub fn actor() -> Actor {
    let name = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    Actor {
        name: format!("cli:{name}"),
        via: "cli",
        client: None,
    }
}

/// Runs a `regate user` command; its output. `password` is asked only when needed.
pub async fn user(
    config: &Config,
    command: UserCommand,
    password: impl FnOnce() -> Result<Secret, String>,
) -> Result<String, String> {
    let accounts = Accounts::for_config(config);
    let actor = actor();
    let text = |e: ManageError| e.to_string();
    match command {
        UserCommand::Add { name, labels } => {
            // Before the prompt: no password typed for a name that is taken.
            if accounts.labels(&name).await.is_ok() {
                return Err(format!(
                    "user {name:?} exists; `regate user passwd` changes the password"
                ));
            }
            let password = password()?;
            accounts
                .add_user(&actor, &name, &password, &labels)
                .await
                .map_err(text)?;
            Ok(format!("added user {name:?}\n"))
        }
        UserCommand::Passwd { name } => {
            // Before the prompt: no password typed for a name that is not there.
            accounts.labels(&name).await.map_err(text)?;
            let password = password()?;
            accounts
                .set_password(&actor, &name, &password)
                .await
                .map_err(text)?;
            Ok(format!("changed the password of {name:?}\n"))
        }
        UserCommand::Del { name } => {
            let rows = accounts.delete_user(&actor, &name).await.map_err(text)?;
            Ok(format!("deleted user {name:?} ({rows} row(s))\n"))
        }
        UserCommand::List { json } => {
            let users = accounts.users().await.map_err(text)?;
            if json {
                let list: Vec<serde_json::Value> = users
                    .iter()
                    .map(|u| match &u.labels {
                        Ok(l) => serde_json::json!({"name": u.name, "labels": l, "rows": u.rows}),
                        Err(e) => serde_json::json!({"name": u.name, "error": e, "rows": u.rows}),
                    })
                    .collect();
                return Ok(format!("{:#}\n", serde_json::Value::from(list)));
            }
            let mut out = String::new();
            for u in &users {
                let labels = match &u.labels {
                    Ok(l) if l.is_empty() => String::new(),
                    Ok(l) => format!("  {}", labels_text(l)),
                    Err(e) => format!("  (labels unreadable: {e})"),
                };
                let shadowed = match u.rows {
                    1 => String::new(),
                    n => format!("  ({} older row(s) ignored)", n - 1),
                };
                let _ = writeln!(out, "{}{labels}{shadowed}", u.name);
            }
            if users.is_empty() {
                out.push_str("(no users)\n");
            }
            Ok(out)
        }
        UserCommand::Label { name, set, remove } => {
            let mut labels = accounts.labels(&name).await.map_err(text)?;
            for key in &remove {
                labels.remove(key);
            }
            labels.extend(set);
            accounts
                .set_labels(&actor, &name, &labels)
                .await
                .map_err(text)?;
            Ok(format!("{name}: {}\n", labels_text(&labels)))
        }
    }
}

/// Runs a `regate acl` command; its output.
pub async fn acl(config: &Config, command: AclCommand) -> Result<String, String> {
    let accounts = Accounts::for_config(config);
    let actor = actor();
    let text = |e: ManageError| e.to_string();
    match command {
        AclCommand::List { json } => {
            let rules = accounts.rules().await.map_err(text)?;
            if json {
                return serde_json::to_string_pretty(&rules)
                    .map(|s| s + "\n")
                    .map_err(|e| e.to_string());
            }
            let mut out = String::new();
            for r in &rules {
                let seq = r.seq.map_or("NULL".to_owned(), |s| s.to_string());
                match (&r.rule, &r.error) {
                    (Some(rule), _) => {
                        let _ = writeln!(out, "{seq:>6}  {}", rule_text(rule));
                    }
                    (None, error) => {
                        let _ = writeln!(
                            out,
                            "{seq:>6}  SKIPPED ({}): {}",
                            error.as_deref().unwrap_or("unreadable"),
                            r.text.as_deref().unwrap_or("")
                        );
                    }
                }
            }
            let mut seqs: Vec<Option<i64>> = rules.iter().map(|r| r.seq).collect();
            seqs.sort();
            let repeated = seqs.windows(2).any(|w| w[0] == w[1]);
            if seqs.contains(&None) || repeated {
                out.push_str("note: some rules have no seq, or share one: their order is the database's; `regate acl renumber` gives each its own\n");
            }
            if rules.is_empty() {
                out.push_str("(no rules)\n");
            }
            Ok(out)
        }
        AclCommand::Add { entry, at } => {
            let seq = accounts.add_rule(&actor, &entry, at).await.map_err(text)?;
            Ok(format!("added rule seq {seq}\n"))
        }
        AclCommand::Del { seq } => {
            accounts.delete_rule(&actor, seq).await.map_err(text)?;
            Ok(format!("deleted rule seq {seq}\n"))
        }
        AclCommand::Move { seq, at } => {
            let new = accounts.move_rule(&actor, seq, at).await.map_err(text)?;
            Ok(format!("moved rule seq {seq}: now seq {new}\n"))
        }
        AclCommand::Renumber => {
            let n = accounts.renumber(&actor).await.map_err(text)?;
            Ok(format!("numbered {n} rule(s) 10, 20, 30, ...\n"))
        }
    }
}

/// `k=v1|v2 k2=v`.
fn labels_text(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.join("|")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A rule on one line, as the config file would hold it.
fn rule_text(rule: &RawEntryView) -> String {
    let mut out = format!(
        "match: {}  actions: {}",
        serde_json::to_string(&rule.match_).unwrap_or_default(),
        serde_json::to_string(&rule.actions).unwrap_or_default()
    );
    if let Some(c) = &rule.comment {
        let _ = write!(out, "  comment: {c:?}");
    }
    out
}

/// The rule `regate acl add` was given: the match fields, `--label K=PATTERN`s, actions
/// (comma-separated, `*` for everything asked) and a comment.
#[allow(clippy::too_many_arguments)]
pub fn entry(
    account: Option<String>,
    type_: Option<String>,
    name: Option<String>,
    service: Option<String>,
    ip: Option<String>,
    labels: &[String],
    actions: &str,
    comment: Option<String>,
) -> Result<RawEntry, String> {
    let mut label_patterns = std::collections::BTreeMap::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("--label {l:?} is not KEY=PATTERN"))?;
        label_patterns.insert(k.to_owned(), v.to_owned());
    }
    let actions: Vec<String> = actions
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(RawEntry {
        match_: RawMatch {
            account,
            type_,
            name,
            service,
            ip,
            labels: (!label_patterns.is_empty()).then_some(label_patterns),
        },
        actions,
        comment,
    })
}

/// `--before SEQ` / `--after SEQ` (neither: the end).
pub fn placement(before: Option<i64>, after: Option<i64>) -> Result<Placement, String> {
    match (before, after) {
        (Some(_), Some(_)) => Err("--before or --after, not both".to_owned()),
        (Some(s), None) => Ok(Placement::Before(s)),
        (None, Some(s)) => Ok(Placement::After(s)),
        (None, None) => Ok(Placement::End),
    }
}
