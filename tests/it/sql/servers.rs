//! The databases the SQL tests run against: PostgreSQL (Debian's `postgresql`) and MariaDB
//! (Debian's `mariadb-server`), each started here on a free loopback port with a throwaway
//! data folder and a password, stopped on drop; and a SQLite file. Tests reach them with
//! sqlx directly, to write rows as docker_auth would.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, child: &mut Child, log: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if ready() {
            return;
        }
        let gone = child.try_wait().ok().flatten();
        if gone.is_some() || std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not start ({gone:?}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The newest PostgreSQL's program folder.
fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (Debian's postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL version in /usr/lib/postgresql")
}

/// A PostgreSQL server run as the `postgres` user (it refuses root).
pub struct Postgres {
    pub port: u16,
    pub password: String,
    child: Child,
    dir: TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = pg_bin();
        let dir = tempfile::tempdir().unwrap();
        let password = "pg s3cret/pw".to_owned();
        std::fs::write(dir.path().join("pw"), &password).unwrap();
        run(Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path()));
        let data = dir.path().join("data");
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-N",
            ])
            .arg(format!("--pwfile={}", dir.path().join("pw").display())));
        let port = free_port();
        let log = dir.path().join("postgres.log");
        let log_file = std::fs::File::create(&log).unwrap();
        run(Command::new("chown").arg("postgres").arg(&log));
        let mut child = Command::new("runuser")
            // A group of its own: killing it takes postgres and its backends too.
            .process_group(0)
            .args(["-u", "postgres", "--"])
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let socket = dir.path().to_owned();
        wait_for("postgres", &mut child, &log, || {
            Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
                && socket.join(format!(".s.PGSQL.{port}")).exists()
        });
        Postgres {
            port,
            password,
            child,
            dir,
        }
    }

    /// lib/pq's URL form, as docker_auth users write it.
    pub fn url(&self) -> String {
        let pw: String = self
            .password
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!(
            "postgres://postgres:{pw}@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// Stops it at once (a database that goes away).
    pub fn kill(&mut self) {
        // runuser, postgres and its backends: the whole group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The postmaster itself (runuser does not pass a kill on).
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")) {
            if let Some(pid) = pid.lines().next() {
                let _ = Command::new("kill")
                    .args(["-KILL", pid.trim()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A MariaDB server (as root, which `--user=root` allows) with a database `regate` and a
/// user with a password.
pub struct Mariadb {
    pub port: u16,
    pub password: String,
    child: Child,
    dir: TempDir,
}

impl Mariadb {
    pub fn start() -> Mariadb {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        run(Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--skip-test-db",
                "--auth-root-authentication-method=socket",
            ]));
        let port = free_port();
        let socket = dir.path().join("sock");
        let log = dir.path().join("err.log");
        let mut child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--user=root", "--bind-address=127.0.0.1", "--skip-log-bin"])
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .args(["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let client = |sql: &str| {
            Command::new("mariadb")
                .arg("--no-defaults")
                .arg("-S")
                .arg(&socket)
                .args(["-u", "root", "-e", sql])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        wait_for("mariadbd", &mut child, &log, || client("SELECT 1"));
        let password = "my s3cret@pw".to_owned();
        assert!(client(&format!(
            "CREATE DATABASE regate; CREATE USER 'regate'@'127.0.0.1' IDENTIFIED BY '{password}'; GRANT ALL ON regate.* TO 'regate'@'127.0.0.1';"
        )));
        Mariadb {
            port,
            password,
            child,
            dir,
        }
    }

    /// go-sql-driver's DSN, as docker_auth users write it.
    pub fn dsn(&self) -> String {
        format!(
            "regate:{}@tcp(127.0.0.1:{})/regate?charset=utf8&parseTime=true",
            self.password, self.port
        )
    }

    /// A URL for sqlx (the tests' own connection).
    pub fn url(&self) -> String {
        format!(
            "mysql://regate:{}@127.0.0.1:{}/regate",
            self.password.replace(' ', "%20").replace('@', "%40"),
            self.port
        )
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.kill();
    }
}
