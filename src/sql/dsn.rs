//! docker_auth's `conn_string`s, as its Go drivers read them, made into sqlx's connection
//! options: a file path for SQLite (mattn/go-sqlite3), a URL or `key=value` pairs for
//! PostgreSQL (lib/pq), and go-sql-driver's DSN (`user:pass@tcp(host:3306)/db?...`) or a
//! `mysql://` URL for MySQL and MariaDB. A conn string that docker_auth took connects
//! regate to the same database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::sqlite::SqliteConnectOptions;

/// What a conn string names, ready to connect with.
#[derive(Clone)]
pub enum Target {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
    Mysql(MySqlConnectOptions),
}

impl Target {
    /// Where it connects, without the password: for logs and `regate check`.
    pub fn describe(&self) -> String {
        match self {
            Target::Sqlite(o) => format!("sqlite3 {}", o.get_filename().display()),
            Target::Postgres(o) => match o.get_socket() {
                Some(dir) => format!(
                    "postgres {}@{} (socket) database {}",
                    o.get_username(),
                    dir.display(),
                    o.get_database().unwrap_or("-")
                ),
                None => format!(
                    "postgres {}@{}:{} database {}",
                    o.get_username(),
                    o.get_host(),
                    o.get_port(),
                    o.get_database().unwrap_or("-")
                ),
            },
            Target::Mysql(o) => match o.get_socket() {
                Some(path) => format!(
                    "mysql {}@{} database {}",
                    o.get_username(),
                    path.display(),
                    o.get_database().unwrap_or("-")
                ),
                None => format!(
                    "mysql {}@{}:{} database {}",
                    o.get_username(),
                    o.get_host(),
                    o.get_port(),
                    o.get_database().unwrap_or("-")
                ),
            },
        }
    }
}

/// The options docker_auth's `conn_string` stands for. A SQLite path is resolved by
/// `resolve` (relative to the config's folder, as every path in the file); `warnings`
/// gets the options regate reads and ignores.
pub fn sqlite(
    conn: &str,
    resolve: impl Fn(&str) -> PathBuf,
    warnings: &mut Vec<String>,
) -> Result<SqliteConnectOptions, String> {
    // go-sqlite3 takes a path, or a `file:` URI with options after `?`.
    let (path, query) = match conn.strip_prefix("file:") {
        Some(rest) => match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        },
        None => match conn.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (conn, None),
        },
    };
    if path.is_empty() || path == ":memory:" {
        return Err(format!(
            "`{conn}` is not a database file: users and rules in memory would be gone at every restart; name a file, or leave conn_string out for one in data_dir"
        ));
    }
    let mut options = SqliteConnectOptions::new()
        .filename(resolve(path))
        .create_if_missing(true);
    for (key, value) in pairs(query.unwrap_or(""), '&')? {
        match (key.as_str(), value.as_str()) {
            ("mode", "ro") => options = options.read_only(true).create_if_missing(false),
            ("mode", "rw") => options = options.create_if_missing(false),
            ("mode", "rwc") => {}
            ("mode", other) => return Err(format!("mode={other}: regate takes ro, rw or rwc")),
            _ => warnings.push(format!(
                "conn_string option `{key}` is go-sqlite3's; regate ignores it"
            )),
        }
    }
    Ok(options)
}

/// lib/pq's two forms: `postgres://user:pass@host:port/db?sslmode=...` and
/// `host=... port=... user=... password=... dbname=... sslmode=...`. lib/pq's default
/// `sslmode` is `require` (TLS, certificate not checked), not libpq's `prefer`: kept, so a
/// conn string means what it meant to docker_auth.
pub fn postgres(conn: &str) -> Result<PgConnectOptions, String> {
    let conn = conn.trim();
    let url = conn.starts_with("postgres://") || conn.starts_with("postgresql://");
    let (options, sslmode_given) = if url {
        let given = conn
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("sslmode=")));
        let options = PgConnectOptions::from_str(conn).map_err(|e| {
            // sqlx's message can quote the URL, password and all.
            let _ = e;
            "not a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=disable)"
                .to_owned()
        })?;
        (options, given)
    } else {
        key_values(conn)?
    };
    let env_mode = std::env::var_os("PGSSLMODE").is_some();
    Ok(if sslmode_given || env_mode {
        options
    } else {
        options.ssl_mode(PgSslMode::Require)
    })
}

/// lib/pq's `key=value` form (values may be single-quoted, with `\'` and `\\`).
fn key_values(conn: &str) -> Result<(PgConnectOptions, bool), String> {
    let mut options = PgConnectOptions::new();
    let mut sslmode = false;
    for (key, value) in quoted_pairs(conn)? {
        options = match key.as_str() {
            "host" | "hostaddr" if value.starts_with('/') => options.socket(&value),
            "host" | "hostaddr" => options.host(&value),
            "port" => options.port(
                value
                    .parse()
                    .map_err(|_| format!("port={value} is not a port"))?,
            ),
            "user" => options.username(&value),
            "password" => options.password(&value),
            "dbname" => options.database(&value),
            "sslmode" => {
                sslmode = true;
                options.ssl_mode(
                    PgSslMode::from_str(&value)
                        .map_err(|_| format!("sslmode={value} is not a PostgreSQL sslmode"))?,
                )
            }
            "sslrootcert" => options.ssl_root_cert(&value),
            "sslcert" => options.ssl_client_cert(&value),
            "sslkey" => options.ssl_client_key(&value),
            "application_name" => options.application_name(&value),
            "connect_timeout" => options,
            other => return Err(format!("`{other}` is a conn_string key regate does not know; it takes host, port, user, password, dbname, sslmode, sslrootcert, sslcert, sslkey, application_name")),
        };
    }
    Ok((options, sslmode))
}

/// go-sql-driver/mysql's DSN `[user[:password]@][tcp[(host:port)]|unix[(path)]]/db[?params]`,
/// or a `mysql://` URL. go-sql-driver's default is no TLS (`tls=false`); `tls=true` checks
/// the server's certificate, `skip-verify` does not, `preferred` uses TLS when offered.
/// The driver's other parameters (`charset`, `parseTime`, `loc`, timeouts) shape Go values
/// and are ignored.
pub fn mysql(conn: &str) -> Result<MySqlConnectOptions, String> {
    let conn = conn.trim();
    if conn.starts_with("mysql://") || conn.starts_with("mariadb://") {
        return MySqlConnectOptions::from_str(conn)
            .map_err(|_| "not a MySQL URL (mysql://USER:PASSWORD@HOST:PORT/DATABASE)".to_owned());
    }
    let bad = || {
        "not a MySQL DSN: USER:PASSWORD@tcp(HOST:PORT)/DATABASE, as docker_auth (go-sql-driver) takes it"
            .to_owned()
    };
    // The database follows the last `/`; credentials end at the last `@` before it.
    let (head, db_and_params) = conn.rsplit_once('/').ok_or_else(bad)?;
    let (db, params) = match db_and_params.split_once('?') {
        Some((d, p)) => (d, p),
        None => (db_and_params, ""),
    };
    let (creds, address) = match head.rsplit_once('@') {
        Some((c, a)) => (Some(c), a),
        None => (None, head),
    };
    let mut options = MySqlConnectOptions::new().ssl_mode(MySqlSslMode::Disabled);
    if let Some(creds) = creds {
        let (user, password) = match creds.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (creds, None),
        };
        options = options.username(user);
        if let Some(p) = password {
            options = options.password(p);
        }
    }
    let (net, addr) = match address.split_once('(') {
        Some((net, rest)) => (net, Some(rest.strip_suffix(')').ok_or_else(bad)?)),
        None => (address, None),
    };
    match (net, addr) {
        ("" | "tcp", None) => {}
        ("tcp", Some(addr)) => {
            let (host, port) = split_host_port(addr).ok_or_else(bad)?;
            options = options.host(host);
            if let Some(port) = port {
                options = options.port(port);
            }
        }
        ("unix", Some(path)) => options = options.socket(Path::new(path)),
        ("unix", None) => options = options.socket("/tmp/mysql.sock"),
        _ => return Err(bad()),
    }
    if !db.is_empty() {
        options = options.database(db);
    }
    for (key, value) in pairs(params, '&')? {
        if key == "tls" {
            options = options.ssl_mode(match value.as_str() {
                "true" => MySqlSslMode::VerifyIdentity,
                "skip-verify" => MySqlSslMode::Required,
                "preferred" => MySqlSslMode::Preferred,
                "false" => MySqlSslMode::Disabled,
                other => {
                    return Err(format!(
                        "tls={other}: regate takes true, skip-verify, preferred or false"
                    ))
                }
            });
        }
    }
    Ok(options)
}

fn split_host_port(addr: &str) -> Option<(&str, Option<u16>)> {
    if let Some(v6) = addr.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if rest.is_empty() => None,
            None => return None,
        };
        return Some((host, port));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((addr, None)),
    }
}

/// `a=1&b=2` (percent-decoded).
fn pairs(query: &str, sep: char) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in query.split(sep).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            crate::percent::decode(s).ok_or_else(|| format!("`{s}` is not percent-encoded text"))
        };
        out.insert(decode(k)?, decode(v)?);
    }
    Ok(out)
}

/// lib/pq's `key=value key='quoted value'` pairs, in order.
fn quoted_pairs(conn: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = conn.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!(
                "`{key}` has no value: the conn string is a postgres:// URL or key=value pairs"
            ));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("the value of `{key}` has no closing quote")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    value.extend(chars.next());
                    continue;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_dsns_as_go_sql_driver_reads_them() {
        let o = mysql(
            "docker:p@ss:w0rd@tcp(db.example.com:3307)/docker_auth?charset=utf8&parseTime=true",
        )
        .unwrap();
        assert_eq!(o.get_username(), "docker");
        assert_eq!(o.get_host(), "db.example.com");
        assert_eq!(o.get_port(), 3307);
        assert_eq!(o.get_database(), Some("docker_auth"));
        assert!(matches!(o.get_ssl_mode(), MySqlSslMode::Disabled));
        let o = mysql("root@/auth?tls=true").unwrap();
        assert_eq!(o.get_username(), "root");
        assert!(matches!(o.get_ssl_mode(), MySqlSslMode::VerifyIdentity));
        let o = mysql("u:p@unix(/run/mysqld/mysqld.sock)/auth").unwrap();
        assert_eq!(
            o.get_socket().map(|p| p.as_path()),
            Some(Path::new("/run/mysqld/mysqld.sock"))
        );
        let o = mysql("u:p@tcp([::1]:3306)/auth").unwrap();
        assert_eq!(o.get_host(), "::1");
        assert!(mysql("mysql://u:p@h:3306/d").is_ok());
        assert!(mysql("just words").is_err());
        assert!(mysql("u:p@tcp(h:notaport)/d").is_err());
        assert!(mysql("u:p@tcp(h:1)/d?tls=maybe").is_err());
    }

    #[test]
    fn postgres_urls_and_key_values_as_lib_pq_reads_them() {
        let o = postgres(
            "host=db port=5433 user=docker password='a b\\'c' dbname=auth sslmode=disable",
        )
        .unwrap();
        assert_eq!(o.get_host(), "db");
        assert_eq!(o.get_port(), 5433);
        assert_eq!(o.get_username(), "docker");
        assert_eq!(o.get_database(), Some("auth"));
        assert!(matches!(o.get_ssl_mode(), PgSslMode::Disable));
        let o = postgres("postgres://u:p@h:5432/d?sslmode=disable").unwrap();
        assert!(matches!(o.get_ssl_mode(), PgSslMode::Disable));
        assert_eq!(o.get_database(), Some("d"));
        if std::env::var_os("PGSSLMODE").is_none() {
            // lib/pq's default, not libpq's.
            let o = postgres("postgres://u:p@h/d").unwrap();
            assert!(matches!(o.get_ssl_mode(), PgSslMode::Require));
        }
        assert!(postgres("host=db bogus=1").is_err());
        assert!(postgres("host=db password='open").is_err());
        // The message never repeats the password.
        let e = postgres("postgres://u:s3cret@h:notaport/d").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn sqlite_paths_and_file_uris() {
        let mut warnings = Vec::new();
        let resolve = |p: &str| Path::new("/etc/regate").join(p);
        let o = sqlite("users.db", resolve, &mut warnings).unwrap();
        assert_eq!(o.get_filename(), Path::new("/etc/regate/users.db"));
        let o = sqlite(
            "file:/var/lib/auth.db?cache=shared&mode=rwc",
            resolve,
            &mut warnings,
        )
        .unwrap();
        assert_eq!(o.get_filename(), Path::new("/var/lib/auth.db"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(sqlite(":memory:", resolve, &mut warnings).is_err());
        assert!(sqlite("a.db?mode=wat", resolve, &mut warnings).is_err());
    }
}
