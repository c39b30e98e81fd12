//! `xorm_user`: the accounts of `xorm_auth`. docker_auth reads the newest row of a username
//! (`WHERE username = ? ORDER BY id DESC`); regate reads and writes the same way.
//!
//! Usernames compare byte for byte on every database: MySQL's default collations would
//! otherwise let `ALICE` or `alice ` log in with alice's password under another account
//! name (and past alice's failure count), so MySQL compares `BINARY`.

use sqlx::Row;

use super::{each_pool, Database, Engine, SqlError};
use crate::acl::Labels;

/// The newest row of a username.
#[derive(Clone)]
pub struct UserRow {
    pub id: i64,
    pub password_hash: String,
    /// The `labels` column as stored (JSON text, or NULL).
    pub labels: Option<String>,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("password_hash", &"<redacted>")
            .field("labels", &self.labels)
            .finish()
    }
}

/// An account as `regate user list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserSummary {
    pub name: String,
    /// The newest row's id.
    pub id: i64,
    /// The newest row's labels, or the error that kept them from being read.
    pub labels: Result<Labels, String>,
    /// Rows of this name in all (older ones are shadowed by the newest).
    pub rows: usize,
}

pub(super) fn create_table(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => {
            "CREATE TABLE IF NOT EXISTS xorm_user (id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, username TEXT NOT NULL, password_hash TEXT NOT NULL, labels TEXT NULL)"
        }
        Engine::Postgres => {
            "CREATE TABLE IF NOT EXISTS xorm_user (id BIGSERIAL PRIMARY KEY, username VARCHAR(128) NOT NULL, password_hash VARCHAR(128) NOT NULL, labels JSON NULL)"
        }
        Engine::Mysql => {
            "CREATE TABLE IF NOT EXISTS xorm_user (id BIGINT PRIMARY KEY AUTO_INCREMENT NOT NULL, username VARCHAR(128) NOT NULL, password_hash VARCHAR(128) NOT NULL, labels TEXT NULL) DEFAULT CHARSET=utf8mb4"
        }
    }
}

/// The SQL of each statement, per database. Columns are cast to one type each, so a table
/// docker_auth made with other integer or text types reads the same.
struct Sql {
    newest: &'static str,
    all: &'static str,
    insert: &'static str,
    set_password: &'static str,
    set_labels: &'static str,
    delete: &'static str,
}

fn sql(engine: Engine) -> &'static Sql {
    match engine {
        Engine::Sqlite => &Sql {
            newest: "SELECT CAST(id AS INTEGER), password_hash, labels FROM xorm_user WHERE username = ? ORDER BY id DESC LIMIT 1",
            all: "SELECT CAST(id AS INTEGER), username, labels FROM xorm_user ORDER BY id DESC",
            insert: "INSERT INTO xorm_user (username, password_hash, labels) VALUES (?, ?, ?)",
            set_password: "UPDATE xorm_user SET password_hash = ? WHERE id = ?",
            set_labels: "UPDATE xorm_user SET labels = ? WHERE id = ?",
            delete: "DELETE FROM xorm_user WHERE username = ?",
        },
        Engine::Postgres => &Sql {
            newest: "SELECT CAST(id AS BIGINT), CAST(password_hash AS TEXT), CAST(labels AS TEXT) FROM xorm_user WHERE username = $1 ORDER BY id DESC LIMIT 1",
            all: "SELECT CAST(id AS BIGINT), CAST(username AS TEXT), CAST(labels AS TEXT) FROM xorm_user ORDER BY id DESC",
            insert: "INSERT INTO xorm_user (username, password_hash, labels) VALUES ($1, $2, CAST($3 AS JSON))",
            set_password: "UPDATE xorm_user SET password_hash = $1 WHERE id = $2",
            set_labels: "UPDATE xorm_user SET labels = CAST($1 AS JSON) WHERE id = $2",
            delete: "DELETE FROM xorm_user WHERE username = $1",
        },
        Engine::Mysql => &Sql {
            newest: "SELECT CAST(id AS SIGNED), CAST(password_hash AS CHAR), CAST(labels AS CHAR) FROM xorm_user WHERE BINARY username = ? ORDER BY id DESC LIMIT 1",
            all: "SELECT CAST(id AS SIGNED), CAST(username AS CHAR), CAST(labels AS CHAR) FROM xorm_user ORDER BY id DESC",
            insert: "INSERT INTO xorm_user (username, password_hash, labels) VALUES (?, ?, ?)",
            set_password: "UPDATE xorm_user SET password_hash = ? WHERE id = ?",
            set_labels: "UPDATE xorm_user SET labels = ? WHERE id = ?",
            delete: "DELETE FROM xorm_user WHERE BINARY username = ?",
        },
    }
}

/// The `labels` column's text as labels: NULL, empty and `null` are none.
pub fn parse_labels(text: Option<&str>) -> Result<Labels, String> {
    match text.map(str::trim) {
        None | Some("") | Some("null") => Ok(Labels::new()),
        Some(json) => {
            // Go's map[string][]string: a null list is no values.
            let raw: std::collections::BTreeMap<String, Option<Vec<String>>> =
                serde_json::from_str(json)
                    .map_err(|e| format!("labels are not a JSON object of string lists ({e})"))?;
            Ok(raw
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect())
        }
    }
}

/// Labels as docker_auth writes them (`{"k":["v"]}`); none is `{}`.
pub fn labels_json(labels: &Labels) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned())
}

impl Database {
    /// The newest row of `username`, as docker_auth's login reads it.
    pub async fn newest_user(&self, username: &str) -> Result<Option<UserRow>, SqlError> {
        self.users_table().await?;
        let sql = sql(self.engine()).newest;
        self.timed(async {
            each_pool!(&self.pool, p => {
                let row = sqlx::query(sql).bind(username).fetch_optional(p).await?;
                row.map(|r| -> Result<UserRow, sqlx::Error> {
                    Ok(UserRow {
                        id: r.try_get(0)?,
                        password_hash: r.try_get(1)?,
                        labels: r.try_get(2)?,
                    })
                })
                .transpose()
            })
        })
        .await
    }

    /// Every account (its newest row), by name.
    pub async fn users(&self) -> Result<Vec<UserSummary>, SqlError> {
        self.users_table().await?;
        let sql = sql(self.engine()).all;
        let rows: Vec<(i64, String, Option<String>)> = self
            .timed(async {
                each_pool!(&self.pool, p => {
                    let rows = sqlx::query(sql).fetch_all(p).await?;
                    rows.iter()
                        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                })
            })
            .await?;
        let mut out: std::collections::BTreeMap<String, UserSummary> = Default::default();
        // Newest first: the first row seen of a name is its account.
        for (id, name, labels) in rows {
            out.entry(name.clone())
                .and_modify(|u| u.rows += 1)
                .or_insert_with(|| UserSummary {
                    name,
                    id,
                    labels: parse_labels(labels.as_deref()),
                    rows: 1,
                });
        }
        Ok(out.into_values().collect())
    }

    /// A new row for `username`.
    pub async fn insert_user(
        &self,
        username: &str,
        password_hash: &str,
        labels: &Labels,
    ) -> Result<(), SqlError> {
        self.users_table().await?;
        let sql = sql(self.engine()).insert;
        let labels = labels_json(labels);
        self.timed(async {
            each_pool!(&self.pool, p => sqlx::query(sql)
                .bind(username)
                .bind(password_hash)
                .bind(&labels)
                .execute(p)
                .await
                .map(|_| ()))
        })
        .await
    }

    /// Sets the password hash of the newest row of `username`; `false` when there is none.
    pub async fn set_password(&self, username: &str, hash: &str) -> Result<bool, SqlError> {
        let Some(row) = self.newest_user(username).await? else {
            return Ok(false);
        };
        let sql = sql(self.engine()).set_password;
        self.timed(async {
            each_pool!(&self.pool, p => sqlx::query(sql).bind(hash).bind(row.id).execute(p).await.map(|_| ()))
        })
        .await?;
        Ok(true)
    }

    /// Sets the labels of the newest row of `username`; `false` when there is none.
    pub async fn set_labels(&self, username: &str, labels: &Labels) -> Result<bool, SqlError> {
        let Some(row) = self.newest_user(username).await? else {
            return Ok(false);
        };
        let sql = sql(self.engine()).set_labels;
        let labels = labels_json(labels);
        self.timed(async {
            each_pool!(&self.pool, p => sqlx::query(sql).bind(&labels).bind(row.id).execute(p).await.map(|_| ()))
        })
        .await?;
        Ok(true)
    }

    /// Deletes every row of `username` (an older row left behind would become the account);
    /// how many there were.
    pub async fn delete_user(&self, username: &str) -> Result<u64, SqlError> {
        self.users_table().await?;
        let sql = sql(self.engine()).delete;
        self.timed(async {
            each_pool!(&self.pool, p => sqlx::query(sql)
                .bind(username)
                .execute(p)
                .await
                .map(|r| r.rows_affected()))
        })
        .await
    }
}
