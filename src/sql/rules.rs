//! `xorm_acl_entry`: the rules of `acl_xorm`, one JSON entry a row, in `seq` order.
//!
//! docker_auth orders by `seq` alone (`OrderBy("seq")`), so rows without one come where
//! the database puts NULLs: first on SQLite and MySQL, last on PostgreSQL. regate reads
//! them in that same order (an existing database keeps its meaning), and never writes a
//! NULL or a repeated `seq` itself.
//!
//! The entry is Go's JSON of docker_auth's `ACLEntry`: `{"Match": {"account": ...},
//! "Actions": [...], "Comment": ...}`. Go matches field names without regard to case, so
//! `match`/`actions`/`comment` read the same; label names inside `labels` are data, and
//! keep their case.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::{each_pool, Database, Engine, SqlError};
use crate::acl::{RawEntry, RawMatch};

/// One row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRow {
    pub seq: Option<i64>,
    /// The `acl_entry` column's text (NULL read as empty).
    pub entry: String,
}

/// Where a rule goes in the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    End,
    Before(i64),
    After(i64),
}

pub(super) fn create_table(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => {
            "CREATE TABLE IF NOT EXISTS xorm_acl_entry (acl_entry TEXT NULL, seq INTEGER NULL)"
        }
        Engine::Postgres => {
            "CREATE TABLE IF NOT EXISTS xorm_acl_entry (acl_entry JSON NULL, seq BIGINT NULL)"
        }
        Engine::Mysql => {
            "CREATE TABLE IF NOT EXISTS xorm_acl_entry (acl_entry TEXT NULL, seq BIGINT NULL) DEFAULT CHARSET=utf8mb4"
        }
    }
}

struct Sql {
    all: &'static str,
    /// Taken first in a rewrite, so two writers (regate acl and a running regate's API)
    /// never interleave: each reads the list the other left.
    lock: &'static str,
    delete_all: &'static str,
    insert: &'static str,
    /// How a rewrite's transaction begins.
    begin: Option<&'static str>,
    /// Tells listening regates the rules changed (sent when the transaction commits).
    notify: Option<&'static str>,
}

/// The PostgreSQL channel a rule change is announced on (`NOTIFY regate_acl`).
pub const CHANNEL: &str = "regate_acl";

fn sql(engine: Engine) -> &'static Sql {
    match engine {
        Engine::Sqlite => &Sql {
            all: "SELECT acl_entry, CAST(seq AS INTEGER) FROM xorm_acl_entry ORDER BY seq",
            // BEGIN IMMEDIATE takes the write lock before the first read.
            lock: "SELECT 1",
            delete_all: "DELETE FROM xorm_acl_entry",
            insert: "INSERT INTO xorm_acl_entry (acl_entry, seq) VALUES (?, ?)",
            begin: Some("BEGIN IMMEDIATE"),
            notify: None,
        },
        Engine::Postgres => &Sql {
            all: "SELECT CAST(acl_entry AS TEXT), CAST(seq AS BIGINT) FROM xorm_acl_entry ORDER BY seq",
            // Conflicts with itself and with writers, not with readers (logins go on).
            lock: "LOCK TABLE xorm_acl_entry IN SHARE ROW EXCLUSIVE MODE",
            delete_all: "DELETE FROM xorm_acl_entry",
            insert: "INSERT INTO xorm_acl_entry (acl_entry, seq) VALUES (CAST($1 AS JSON), $2)",
            begin: None,
            notify: Some("SELECT pg_notify('regate_acl', '')"),
        },
        Engine::Mysql => &Sql {
            all: "SELECT CAST(acl_entry AS CHAR), CAST(seq AS SIGNED) FROM xorm_acl_entry ORDER BY seq",
            // InnoDB locks every row and the gaps between (inserts too) for the
            // transaction.
            lock: "SELECT COUNT(*) FROM xorm_acl_entry FOR UPDATE",
            delete_all: "DELETE FROM xorm_acl_entry",
            insert: "INSERT INTO xorm_acl_entry (acl_entry, seq) VALUES (?, ?)",
            begin: None,
            notify: None,
        },
    }
}

impl Database {
    /// Every rule row, in docker_auth's order.
    pub async fn rules(&self) -> Result<Vec<RuleRow>, SqlError> {
        self.rules_table().await?;
        let sql = sql(self.engine()).all;
        self.timed(async {
            each_pool!(&self.pool, p => {
                let rows = sqlx::query(sql).fetch_all(p).await?;
                rows.iter()
                    .map(|r| {
                        Ok(RuleRow {
                            entry: r.try_get::<Option<String>, _>(0)?.unwrap_or_default(),
                            seq: r.try_get(1)?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            })
        })
        .await
    }

    /// Replaces the list by what `change` makes of it, in one transaction that holds the
    /// table against other writers: the rows are read, changed, and written back whole
    /// (the table has no key to address one row by). `change` refusing leaves it as it was.
    pub async fn rewrite_rules<T, E>(
        &self,
        change: impl FnOnce(Vec<RuleRow>) -> Result<(Vec<RuleRow>, T), E>,
    ) -> Result<Result<T, E>, SqlError> {
        self.rules_table().await?;
        let sql = sql(self.engine());
        self.timed(async {
            each_pool!(&self.pool, p => {
                let mut tx = match sql.begin {
                    Some(begin) => p.begin_with(begin).await?,
                    None => p.begin().await?,
                };
                sqlx::query(sql.lock).execute(&mut *tx).await?;
                let rows = sqlx::query(sql.all).fetch_all(&mut *tx).await?;
                let rows = rows
                    .iter()
                    .map(|r| {
                        Ok(RuleRow {
                            entry: r.try_get::<Option<String>, _>(0)?.unwrap_or_default(),
                            seq: r.try_get(1)?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()?;
                match change(rows) {
                    Err(e) => {
                        tx.rollback().await?;
                        Ok(Err(e))
                    }
                    Ok((new, out)) => {
                        sqlx::query(sql.delete_all).execute(&mut *tx).await?;
                        for row in &new {
                            sqlx::query(sql.insert)
                                .bind(&row.entry)
                                .bind(row.seq)
                                .execute(&mut *tx)
                                .await?;
                        }
                        if let Some(notify) = sql.notify {
                            sqlx::query(notify).execute(&mut *tx).await?;
                        }
                        tx.commit().await?;
                        Ok(Ok(out))
                    }
                }
            })
        })
        .await
    }
}

/// Reads one `acl_entry` as docker_auth (Go's `encoding/json`) would: field names in any
/// case, `null` for absent. Unlike Go, a key it does not know is an error: `team` or a
/// typo would otherwise drop a condition and widen the rule.
pub fn parse_entry(text: &str) -> Result<RawEntry, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("acl_entry is not JSON ({e})"))?;
    let Value::Object(top) = value else {
        return Err("acl_entry is not a JSON object".to_owned());
    };
    let mut entry = serde_json::Map::new();
    for (key, value) in top {
        let key = key.to_ascii_lowercase();
        let value = match (key.as_str(), value) {
            (_, Value::Null) => continue,
            ("match", Value::Object(m)) => {
                let mut fields = serde_json::Map::new();
                for (k, v) in m {
                    if !v.is_null() {
                        fields.insert(k.to_ascii_lowercase(), v);
                    }
                }
                Value::Object(fields)
            }
            (_, v) => v,
        };
        entry.insert(key, value);
    }
    serde_json::from_value(Value::Object(entry)).map_err(|e| format!("acl_entry: {e}"))
}

/// An entry as docker_auth writes it (Go's field names), so docker_auth reads what regate
/// wrote.
pub fn entry_json(entry: &RawEntry) -> String {
    #[derive(Serialize)]
    struct GoEntry<'a> {
        #[serde(rename = "Match")]
        m: GoMatch<'a>,
        #[serde(rename = "Actions")]
        actions: &'a [String],
        #[serde(rename = "Comment")]
        comment: &'a Option<String>,
    }
    #[derive(Serialize)]
    struct GoMatch<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        account: &'a Option<String>,
        #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
        type_: &'a Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: &'a Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ip: &'a Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        service: &'a Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        labels: &'a Option<BTreeMap<String, String>>,
    }
    let RawMatch {
        account,
        type_,
        name,
        service,
        ip,
        labels,
    } = &entry.match_;
    let go = GoEntry {
        m: GoMatch {
            account,
            type_,
            name,
            ip,
            service,
            labels,
        },
        actions: &entry.actions,
        comment: &entry.comment,
    };
    serde_json::to_string(&go).unwrap_or_default()
}

/// The list with `row` placed: `seq`s kept where they leave room, else every rule numbered
/// again in tens (rows without a `seq`, or sharing one, are numbered then too). The new
/// row's `seq` comes back with the list.
pub fn place(
    mut rows: Vec<RuleRow>,
    entry: String,
    at: Placement,
) -> Result<(Vec<RuleRow>, i64), String> {
    let index = match at {
        Placement::End => rows.len(),
        Placement::Before(seq) => position(&rows, seq)?,
        Placement::After(seq) => position(&rows, seq)? + 1,
    };
    rows.insert(index, RuleRow { seq: None, entry });
    let before = index.checked_sub(1).and_then(|i| rows[i].seq);
    let after = rows.get(index + 1).and_then(|r| r.seq);
    let orderly = orderly(&rows, index);
    let seq = match (before, after) {
        _ if !orderly => None,
        (None, None) if index == 0 && rows.len() == 1 => Some(10),
        (Some(b), None) if index + 1 == rows.len() => b.checked_add(10),
        (None, Some(a)) if index == 0 => a.checked_sub(10).filter(|s| *s >= 0),
        (Some(b), Some(a)) if a - b >= 2 => Some(b + (a - b) / 2),
        _ => None,
    };
    match seq {
        Some(seq) => {
            rows[index].seq = Some(seq);
            Ok((rows, seq))
        }
        None => {
            renumber(&mut rows);
            let seq = rows[index].seq.unwrap_or_default();
            Ok((rows, seq))
        }
    }
}

/// Whether every row but the one at `skip` has its own `seq`, in strictly rising order.
fn orderly(rows: &[RuleRow], skip: usize) -> bool {
    let mut last = None;
    for (i, row) in rows.iter().enumerate() {
        if i == skip {
            continue;
        }
        match (row.seq, last) {
            (None, _) => return false,
            (Some(s), Some(l)) if s <= l => return false,
            (Some(s), _) => last = Some(s),
        }
    }
    true
}

/// 10, 20, 30, ... in the list's order.
pub fn renumber(rows: &mut [RuleRow]) {
    for (i, row) in rows.iter_mut().enumerate() {
        row.seq = Some((i as i64 + 1) * 10);
    }
}

/// The index of the one row with `seq`.
pub fn position(rows: &[RuleRow], seq: i64) -> Result<usize, String> {
    let mut found = rows.iter().enumerate().filter(|(_, r)| r.seq == Some(seq));
    match (found.next(), found.next()) {
        (Some((i, _)), None) => Ok(i),
        (None, _) => Err(format!("no rule has seq {seq}")),
        (Some(_), Some(_)) => Err(format!(
            "several rules share seq {seq}; `regate acl renumber` gives each its own"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(seqs: &[Option<i64>]) -> Vec<RuleRow> {
        seqs.iter()
            .enumerate()
            .map(|(i, s)| RuleRow {
                seq: *s,
                entry: format!("r{i}"),
            })
            .collect()
    }

    fn seqs(rows: &[RuleRow]) -> Vec<Option<i64>> {
        rows.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn entries_read_as_go_reads_them() {
        let e = parse_entry(
            r#"{"Match":{"account":"alice","Labels":null,"name":"alice/*"},"Actions":["pull"],"Comment":null}"#,
        )
        .unwrap();
        assert_eq!(e.match_.account.as_deref(), Some("alice"));
        assert_eq!(e.actions, ["pull"]);
        assert_eq!(e.comment, None);
        let e = parse_entry(
            r#"{"match":{"ACCOUNT":"a","labels":{"Team":"x"}},"actions":["*"],"comment":"c"}"#,
        )
        .unwrap();
        assert_eq!(
            e.match_
                .labels
                .as_ref()
                .unwrap()
                .get("Team")
                .map(String::as_str),
            Some("x")
        );
        assert_eq!(e.comment.as_deref(), Some("c"));
        // Absent actions: an explicit deny, as for the static acl.
        assert!(parse_entry(r#"{"Match":{}}"#).unwrap().actions.is_empty());
        assert!(parse_entry(r#"{"Match":{"team":"x"},"Actions":[]}"#).is_err());
        assert!(parse_entry("[1]").is_err());
        assert!(parse_entry("not json").is_err());
    }

    #[test]
    fn entries_written_as_docker_auth_writes_them() {
        let e =
            parse_entry(r#"{"match":{"name":"x/*","account":"a"},"actions":["pull"]}"#).unwrap();
        assert_eq!(
            entry_json(&e),
            r#"{"Match":{"account":"a","name":"x/*"},"Actions":["pull"],"Comment":null}"#
        );
        let again = parse_entry(&entry_json(&e)).unwrap();
        assert_eq!(entry_json(&again), entry_json(&e));
    }

    #[test]
    fn placing_keeps_seqs_where_there_is_room() {
        let (r, seq) = place(Vec::new(), "n".into(), Placement::End).unwrap();
        assert_eq!((seqs(&r), seq), (vec![Some(10)], 10));
        let (r, seq) = place(rows(&[Some(10), Some(20)]), "n".into(), Placement::End).unwrap();
        assert_eq!((seqs(&r), seq), (vec![Some(10), Some(20), Some(30)], 30));
        let (r, seq) = place(
            rows(&[Some(10), Some(20)]),
            "n".into(),
            Placement::Before(20),
        )
        .unwrap();
        assert_eq!((seqs(&r), seq), (vec![Some(10), Some(15), Some(20)], 15));
        assert_eq!(r[1].entry, "n");
        let (r, seq) = place(
            rows(&[Some(10), Some(20)]),
            "n".into(),
            Placement::Before(10),
        )
        .unwrap();
        assert_eq!((seqs(&r), seq), (vec![Some(0), Some(10), Some(20)], 0));
        // No room: everything in tens again.
        let (r, seq) = place(rows(&[Some(1), Some(2)]), "n".into(), Placement::After(1)).unwrap();
        assert_eq!((seqs(&r), seq), (vec![Some(10), Some(20), Some(30)], 20));
        // NULL and repeated seqs are numbered on the first write.
        let (r, _) = place(rows(&[None, Some(5), Some(5)]), "n".into(), Placement::End).unwrap();
        assert_eq!(seqs(&r), vec![Some(10), Some(20), Some(30), Some(40)]);
        assert!(place(rows(&[Some(5), Some(5)]), "n".into(), Placement::Before(5)).is_err());
        assert!(place(rows(&[Some(5)]), "n".into(), Placement::After(6)).is_err());
    }
}
