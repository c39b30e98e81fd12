//! `xorm_auth` and `acl_xorm` as written -> [`sql::Settings`] (and the rules' cache TTL):
//! docker_auth's `database_type` and `conn_string`, read as its Go drivers read them
//! (`sql/dsn.rs`), plus regate's `timeout` and `pool_size`. SQLite with no `conn_string`
//! is a file in `data_dir`: the first step from the static `users` needs no server.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::keys::Key;
use super::{Cx, Failed};
use crate::auth::acl_xorm::AclXormConfig;
use crate::sql::{dsn, Settings, Target};

/// The SQLite file `xorm_auth`/`acl_xorm` use when `conn_string` names none.
pub const DEFAULT_SQLITE_FILE: &str = "regate.sqlite3";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawXormAuth {
    database_type: Option<String>,
    conn_string: Option<String>,
    timeout: Option<f64>,
    pool_size: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAclXorm {
    database_type: Option<String>,
    conn_string: Option<String>,
    cache_ttl: Option<String>,
    timeout: Option<f64>,
    pool_size: Option<i64>,
}

const DATABASE_TYPE: Key = Key::scalar(
    "database_type",
    "",
    "`sqlite3`, `postgres` or `mysql` (MySQL and MariaDB)",
);
const CONN_STRING: Key = Key::scalar(
    "conn_string",
    "sqlite3: `<data_dir>/regate.sqlite3`",
    "as docker_auth takes it: a file (sqlite3), a `postgres://` URL or `key=value` pairs, `USER:PASSWORD@tcp(HOST:PORT)/DB` (mysql)",
);
const TIMEOUT: Key = Key::scalar(
    "timeout",
    "5",
    "seconds a query may take, waiting for a connection included; then 503",
);
const POOL_SIZE: Key = Key::scalar("pool_size", "4", "connections to the database at most");

pub(super) const AUTH_KEYS: &[Key] = &[DATABASE_TYPE, CONN_STRING, TIMEOUT, POOL_SIZE];

pub(super) const ACL_KEYS: &[Key] = &[
    DATABASE_TYPE,
    CONN_STRING,
    Key::scalar(
        "cache_ttl",
        "10s",
        "how long the rules read are used before they are read again: a Go duration (`1m`, `30s`) or seconds; 0: every token request reads them",
    ),
    TIMEOUT,
    POOL_SIZE,
];

const DEFAULT_TIMEOUT: f64 = 5.0;
const DEFAULT_POOL_SIZE: i64 = 4;
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);

pub(super) fn build_auth(
    raw: RawXormAuth,
    data_dir: &Path,
    cx: &mut Cx<'_>,
) -> Result<Settings, Failed> {
    let section = "xorm_auth";
    database(
        section,
        raw.database_type,
        raw.conn_string,
        raw.timeout,
        raw.pool_size,
        data_dir,
        cx,
    )
}

pub(super) fn build_acl(
    raw: RawAclXorm,
    data_dir: &Path,
    cx: &mut Cx<'_>,
) -> Result<AclXormConfig, Failed> {
    let section = "acl_xorm";
    let cache_ttl = match raw.cache_ttl.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_CACHE_TTL,
        Some(text) => match duration(text) {
            Ok((d, note)) => {
                if let Some(note) = note {
                    cx.warn(format!("acl_xorm.cache_ttl: {note}"));
                }
                d
            }
            Err(m) => return cx.fail(&[section, "cache_ttl"], m),
        },
    };
    let database = database(
        section,
        raw.database_type,
        raw.conn_string,
        raw.timeout,
        raw.pool_size,
        data_dir,
        cx,
    )?;
    if database.engine() == crate::sql::Engine::Postgres && database.pool_size < 2 {
        cx.warn("acl_xorm.pool_size 1 on PostgreSQL: the listener for rule changes holds that connection, and reading the rules waits for it; use 2 or more");
    }
    Ok(AclXormConfig {
        database,
        cache_ttl,
    })
}

fn database(
    section: &str,
    database_type: Option<String>,
    conn_string: Option<String>,
    timeout: Option<f64>,
    pool_size: Option<i64>,
    data_dir: &Path,
    cx: &mut Cx<'_>,
) -> Result<Settings, Failed> {
    let Some(kind) = database_type.filter(|t| !t.trim().is_empty()) else {
        return cx.fail_hint(
            &[section],
            "`database_type` is required",
            "sqlite3 (a file, no server), postgres or mysql",
        );
    };
    let conn = conn_string.unwrap_or_default();
    let at = [section, "conn_string"];
    let mut warnings = Vec::new();
    let target = match kind.trim() {
        "sqlite3" | "sqlite" => {
            let options = if conn.trim().is_empty() {
                Ok(sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(data_dir.join(DEFAULT_SQLITE_FILE))
                    .create_if_missing(true))
            } else {
                dsn::sqlite(conn.trim(), |p| cx.resolve(p), &mut warnings)
            };
            options.map(Target::Sqlite)
        }
        "postgres" | "postgresql" => match conn.trim() {
            "" => return cx.fail(&at, "`conn_string` is required for postgres, e.g. postgres://USER:PASSWORD@HOST:5432/DATABASE?sslmode=disable"),
            c => dsn::postgres(c).map(Target::Postgres),
        },
        "mysql" | "mariadb" => match conn.trim() {
            "" => return cx.fail(&at, "`conn_string` is required for mysql, e.g. USER:PASSWORD@tcp(HOST:3306)/DATABASE"),
            c => dsn::mysql(c).map(Target::Mysql),
        },
        other => {
            return cx.fail_hint(
                &[section, "database_type"],
                format!("`{other}` is not a database regate speaks"),
                "sqlite3, postgres or mysql (MariaDB too)",
            )
        }
    };
    for w in warnings {
        cx.warn(format!("{section}.conn_string: {w}"));
    }
    let target = target.or_else(|m| cx.fail(&at, m))?;
    let timeout = match timeout.unwrap_or(DEFAULT_TIMEOUT) {
        t if t.is_finite() && t > 0.0 && t < 3600.0 => Duration::from_secs_f64(t),
        t => {
            return cx.fail(
                &[section, "timeout"],
                format!("{t} is not a number of seconds regate takes"),
            )
        }
    };
    let pool_size = match pool_size.unwrap_or(DEFAULT_POOL_SIZE) {
        n @ 1..=256 => n as u32,
        n => {
            return cx.fail(
                &[section, "pool_size"],
                format!("{n} is not a number of connections from 1 to 256"),
            )
        }
    };
    Ok(Settings::new(target, &conn, timeout, pool_size))
}

/// A `cache_ttl`: a Go duration (`1m30s`, `500ms`) or a bare number of seconds. docker_auth
/// reads a bare number as nanoseconds (Go's `time.Duration`): a number that only makes sense
/// so (a million or more) is read as nanoseconds too, with a note.
pub fn duration(text: &str) -> Result<(Duration, Option<String>), String> {
    let bad = || {
        format!(
            "`{text}` is not a duration: write it as Go does (`1m`, `30s`, `1h30m`) or as seconds"
        )
    };
    if let Ok(n) = text.replace('_', "").parse::<f64>() {
        if !n.is_finite() || n < 0.0 {
            return Err(bad());
        }
        if n >= 1e6 {
            let d = Duration::from_nanos(n as u64);
            return Ok((
                d,
                Some(format!(
                    "{text} is read as nanoseconds ({d:?}), as docker_auth reads a bare number; write `{}s` to say it plainly",
                    d.as_secs()
                )),
            ));
        }
        return Ok((Duration::from_secs_f64(n), None));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, after) = rest.split_at(digits);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(value * scale).map_err(|_| bad())?;
        rest = next;
    }
    Ok((total, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_are_the_structs() {
        super::super::keys::assert_keys_match::<RawXormAuth>(AUTH_KEYS);
        super::super::keys::assert_keys_match::<RawAclXorm>(ACL_KEYS);
    }

    #[test]
    fn cache_ttls_as_go_writes_them_or_seconds() {
        let d = |t: &str| duration(t).map(|(d, _)| d);
        assert_eq!(d("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("30"), Ok(Duration::from_secs(30)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        // docker_auth's nanoseconds.
        let (ns, note) = duration("60000000000").unwrap();
        assert_eq!(ns, Duration::from_secs(60));
        assert!(note.is_some());
        assert!(d("1 minute").is_err());
        assert!(d("5x").is_err());
        assert!(d("-1").is_err());
    }
}
