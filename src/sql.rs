//! docker_auth's SQL tables, as its xorm mapping made them (`authn/xorm_authn.go`,
//! `authz/acl_xorm.go`), so a database docker_auth used works as it is:
//!
//! - `xorm_user`: `id` (primary key, autoincrement), `username`, `password_hash` (bcrypt),
//!   `labels` (JSON text of `{"label": ["value", ...]}`). No unique index: the newest row
//!   of a username (the highest `id`) is the account.
//! - `xorm_acl_entry`: `acl_entry` (one ACL entry as JSON, Go's field names `Match`,
//!   `Actions`, `Comment`) and `seq` (the order). No primary key.
//!
//! Each table is created, when missing, the first time it is needed. Every value travels
//! as a bound parameter, never inside the SQL text. One SQL text per database: sqlx's
//! `Any` driver refuses PostgreSQL `json` columns and does not rewrite `?` to `$1`.

pub mod dsn;
mod rules;
mod users;

use std::time::Duration;

use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};
use tokio::sync::OnceCell;

pub use dsn::Target;
pub use rules::{entry_json, parse_entry, place, position, renumber, Placement, RuleRow, CHANNEL};
pub use users::{labels_json, parse_labels, UserRow, UserSummary};

/// docker_auth's `database_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
    Mysql,
}

impl Engine {
    /// docker_auth's (xorm's) name.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite3",
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }
}

/// A validated `xorm_auth` or `acl_xorm` connection.
#[derive(Clone)]
pub struct Settings {
    pub target: Target,
    /// The conn string as written, to tell two sections naming one database (they share
    /// a pool). Never printed.
    conn: String,
    /// Each query (waiting for a connection included) gets this long; past it the login
    /// or token request that needed it gets 503.
    pub timeout: Duration,
    pub pool_size: u32,
}

impl Settings {
    pub fn new(target: Target, conn: &str, timeout: Duration, pool_size: u32) -> Settings {
        Settings {
            target,
            conn: conn.to_owned(),
            timeout,
            pool_size,
        }
    }

    pub fn engine(&self) -> Engine {
        match self.target {
            Target::Sqlite(_) => Engine::Sqlite,
            Target::Postgres(_) => Engine::Postgres,
            Target::Mysql(_) => Engine::Mysql,
        }
    }

    /// Whether `other` names the same database.
    pub fn same_database(&self, other: &Settings) -> bool {
        self.engine() == other.engine()
            && match (&self.target, &other.target) {
                (Target::Sqlite(a), Target::Sqlite(b)) => a.get_filename() == b.get_filename(),
                _ => self.conn == other.conn,
            }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("target", &self.target.describe())
            .field("timeout", &self.timeout)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// Why the database did not answer. The message names the database (never the
/// password) and the cause.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("{database}: no answer within {timeout:?}")]
    Timeout { database: String, timeout: Duration },
    #[error("{database}: {source}")]
    Query {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{database}: cannot make its folder: {source}")]
    Folder {
        database: String,
        #[source]
        source: std::io::Error,
    },
}

/// The connections, made when first needed: regate starts, and static users log in, while
/// the database is down.
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    Mysql(MySqlPool),
}

/// Runs the same code on whichever pool this is: the SQL differs per database (it is
/// chosen before), the calls do not. (sqlx's own `Any` pool dispatches the same way.)
macro_rules! each_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::sql::Pool::Sqlite($p) => $body,
            $crate::sql::Pool::Postgres($p) => $body,
            $crate::sql::Pool::Mysql($p) => $body,
        }
    };
}
pub(crate) use each_pool;

/// One database, its pool, and whether each table is known to exist.
pub struct Database {
    settings: Settings,
    pub(crate) pool: Pool,
    users_ready: OnceCell<()>,
    rules_ready: OnceCell<()>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("target", &self.settings.target.describe())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// A pool that connects when first used (no I/O here).
    pub fn open(settings: &Settings) -> Database {
        let size = settings.pool_size.max(1);
        let timeout = settings.timeout;
        let pool = match &settings.target {
            Target::Sqlite(o) => Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(size)
                    .acquire_timeout(timeout)
                    // A writer (regate user add, another regate) holds the file briefly;
                    // wait for it rather than fail.
                    .connect_lazy_with(o.clone().busy_timeout(timeout)),
            ),
            Target::Postgres(o) => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(size)
                    .acquire_timeout(timeout)
                    // `CREATE TABLE IF NOT EXISTS` would otherwise log a notice.
                    .connect_lazy_with(o.clone().options([("client_min_messages", "warning")])),
            ),
            Target::Mysql(o) => Pool::Mysql(
                MySqlPoolOptions::new()
                    .max_connections(size)
                    .acquire_timeout(timeout)
                    .connect_lazy_with(o.clone()),
            ),
        };
        Database {
            settings: settings.clone(),
            pool,
            users_ready: OnceCell::new(),
            rules_ready: OnceCell::new(),
        }
    }

    pub fn engine(&self) -> Engine {
        self.settings.engine()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Where it is, without the password.
    pub fn describe(&self) -> String {
        self.settings.target.describe()
    }

    /// The PostgreSQL pool, to listen on (`None` on the other databases).
    pub fn postgres(&self) -> Option<&PgPool> {
        match &self.pool {
            Pool::Postgres(p) => Some(p),
            _ => None,
        }
    }

    /// Runs `work` within the timeout, naming the database in its error.
    pub(crate) async fn timed<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, SqlError> {
        match tokio::time::timeout(self.settings.timeout, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(self.query_error(source)),
            Err(_) => Err(SqlError::Timeout {
                database: self.describe(),
                timeout: self.settings.timeout,
            }),
        }
    }

    pub(crate) fn query_error(&self, source: sqlx::Error) -> SqlError {
        let source = match source {
            // A pool that gave up waiting says so without the database's name.
            sqlx::Error::PoolTimedOut => {
                return SqlError::Timeout {
                    database: self.describe(),
                    timeout: self.settings.timeout,
                }
            }
            other => other,
        };
        SqlError::Query {
            database: self.describe(),
            source,
        }
    }

    /// `xorm_user`, created if missing (once per process; a failure is tried again).
    pub(crate) async fn users_table(&self) -> Result<(), SqlError> {
        self.users_ready
            .get_or_try_init(|| self.create(users::create_table(self.engine())))
            .await
            .map(|_| ())
    }

    /// `xorm_acl_entry`, created if missing.
    pub(crate) async fn rules_table(&self) -> Result<(), SqlError> {
        self.rules_ready
            .get_or_try_init(|| self.create(rules::create_table(self.engine())))
            .await
            .map(|_| ())
    }

    async fn create(&self, sql: &'static str) -> Result<(), SqlError> {
        if let Target::Sqlite(o) = &self.settings.target {
            // SQLite makes the file, not its folder (data_dir on a first start), and makes
            // it readable by all: it holds password hashes, so it starts as an empty file
            // (an empty database to SQLite) of its owner's only.
            let file = o.get_filename();
            let folder = |source| SqlError::Folder {
                database: self.describe(),
                source,
            };
            if let Some(dir) = file.parent() {
                if !dir.as_os_str().is_empty() && !dir.exists() {
                    crate::files::private_dir(dir).map_err(folder)?;
                }
            }
            if !file.exists() {
                crate::files::write_private(file, b"").map_err(folder)?;
            }
        }
        self.timed(async {
            each_pool!(&self.pool, p => sqlx::query(sql).execute(p).await.map(|_| ()))
        })
        .await
    }
}
