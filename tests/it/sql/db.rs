//! A database under test as the config names it, and the tests' own connection to it, to
//! write rows as docker_auth writes them.

use std::time::Duration;

use sqlx::Row;

use super::servers::{Mariadb, Postgres};

/// A database under test, and the tests' own connection to it.
pub enum Db {
    Sqlite(std::path::PathBuf),
    Postgres(Postgres),
    Mariadb(Mariadb),
}

pub enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
    Mysql(sqlx::MySqlPool),
}

impl Db {
    /// The section's keys, as a docker_auth config names the database.
    pub fn section(&self) -> String {
        match self {
            Db::Sqlite(file) => format!(
                "{{database_type: sqlite3, conn_string: \"{}\"}}",
                file.display()
            ),
            Db::Postgres(pg) => {
                format!("{{database_type: postgres, conn_string: \"{}\"}}", pg.url())
            }
            Db::Mariadb(my) => {
                format!("{{database_type: mysql, conn_string: \"{}\"}}", my.dsn())
            }
        }
    }

    pub fn secret(&self) -> Option<&str> {
        match self {
            Db::Sqlite(_) => None,
            Db::Postgres(pg) => Some(&pg.password),
            Db::Mariadb(my) => Some(&my.password),
        }
    }

    pub async fn connect(&self) -> Raw {
        match self {
            Db::Sqlite(file) => Raw::Sqlite(
                sqlx::SqlitePool::connect_with(
                    sqlx::sqlite::SqliteConnectOptions::new()
                        .filename(file)
                        .busy_timeout(Duration::from_secs(30)),
                )
                .await
                .unwrap(),
            ),
            Db::Postgres(pg) => Raw::Postgres(sqlx::PgPool::connect(&pg.url()).await.unwrap()),
            Db::Mariadb(my) => Raw::Mysql(sqlx::MySqlPool::connect(&my.url()).await.unwrap()),
        }
    }
}

impl Raw {
    /// A user row as docker_auth's xorm writes it.
    pub async fn insert_user(&self, name: &str, hash: &str, labels: Option<&str>) {
        match self {
            Raw::Sqlite(p) => sqlx::query(
                "INSERT INTO xorm_user (username, password_hash, labels) VALUES (?, ?, ?)",
            )
            .bind(name)
            .bind(hash)
            .bind(labels)
            .execute(p)
            .await
            .map(|_| ()),
            Raw::Postgres(p) => sqlx::query(
                "INSERT INTO xorm_user (username, password_hash, labels) VALUES ($1, $2, CAST($3 AS JSON))",
            )
            .bind(name)
            .bind(hash)
            .bind(labels)
            .execute(p)
            .await
            .map(|_| ()),
            Raw::Mysql(p) => sqlx::query(
                "INSERT INTO xorm_user (username, password_hash, labels) VALUES (?, ?, ?)",
            )
            .bind(name)
            .bind(hash)
            .bind(labels)
            .execute(p)
            .await
            .map(|_| ()),
        }
        .unwrap()
    }

    /// A rule row as docker_auth's xorm writes it.
    pub async fn insert_rule(&self, entry: &str, seq: i64) {
        match self {
            Raw::Sqlite(p) => {
                sqlx::query("INSERT INTO xorm_acl_entry (acl_entry, seq) VALUES (?, ?)")
                    .bind(entry)
                    .bind(seq)
                    .execute(p)
                    .await
                    .map(|_| ())
            }
            Raw::Postgres(p) => sqlx::query(
                "INSERT INTO xorm_acl_entry (acl_entry, seq) VALUES (CAST($1 AS JSON), $2)",
            )
            .bind(entry)
            .bind(seq)
            .execute(p)
            .await
            .map(|_| ()),
            Raw::Mysql(p) => {
                sqlx::query("INSERT INTO xorm_acl_entry (acl_entry, seq) VALUES (?, ?)")
                    .bind(entry)
                    .bind(seq)
                    .execute(p)
                    .await
                    .map(|_| ())
            }
        }
        .unwrap()
    }

    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match self {
            Raw::Sqlite(p) => sqlx::query(&sql)
                .fetch_one(p)
                .await
                .unwrap()
                .get::<i64, _>(0),
            Raw::Postgres(p) => sqlx::query(&sql)
                .fetch_one(p)
                .await
                .unwrap()
                .get::<i64, _>(0),
            Raw::Mysql(p) => sqlx::query(&sql)
                .fetch_one(p)
                .await
                .unwrap()
                .get::<i64, _>(0),
        }
    }
}
