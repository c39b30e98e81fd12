//! `ext_auth`, `ext_authz` and `casbin_authz` with real programs (`tests/ext/*.sh`) and
//! files, in docker_auth's order after the static users and rules and `acl_xorm`; what
//! `regate explain` says decided; and what `regate check` refuses.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{basic, bcrypt, get, RegateProcess};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ext")
        .join(name)
}

/// What `/auth` answers: the granted actions of the one scope, or the HTTP status.
async fn ask(base: &str, user: &str, password: &str, scope: &str) -> Result<String, u16> {
    let url = format!(
        "{base}/auth?service=Docker%20registry&scope={}",
        percent_encoding::utf8_percent_encode(scope, percent_encoding::NON_ALPHANUMERIC)
    );
    let auth = basic(user, password);
    let resp = get(&url, &[("authorization", &auth)]).await;
    if resp.status != 200 {
        return Err(resp.status.as_u16());
    }
    let token = resp.json()["token"].as_str().unwrap().to_owned();
    let claims = crate::common::claims(&token);
    let actions: Vec<&str> = claims["access"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    Ok(actions.join(","))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Whether process `pid` is still there (`kill -0`).
fn alive(pid: &str) -> bool {
    Command::new("kill")
        .args(["-0", pid.trim()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The chain: static users and `acl` first, then `ext_auth` and `xorm_auth`; `acl_xorm`,
/// then `ext_authz`.
fn chain_config(dir: &Path, calls: &Path) -> String {
    format!(
        r#"server: {{addr: "127.0.0.1:0"}}
data_dir: "{data}"
upstream: {{url: "http://127.0.0.1:9"}}
users:
  admin: {{password: "{pw}"}}
  grant: {{password: "{pw}"}}
  refuse: {{password: "{pw}"}}
  two: {{password: "{pw}"}}
  wait: {{password: "{pw}"}}
acl:
  - match: {{account: admin}}
    actions: ["*"]
ext_auth:
  command: {authn}
  args: ["{calls}"]
  timeout: 1
  concurrency: 2
xorm_auth: {{database_type: sqlite3}}
acl_xorm: {{database_type: sqlite3, cache_ttl: 0}}
ext_authz:
  command: {authz}
  args: ["{calls}"]
  timeout: 1
"#,
        data = dir.join("data").display(),
        pw = bcrypt("pw"),
        authn = script("authn.sh").display(),
        authz = script("authz.sh").display(),
        calls = calls.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_programs_as_docker_auth_runs_them() {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls.d");
    std::fs::create_dir(&calls).unwrap();
    let config = dir.path().join("regate.yml");
    std::fs::write(&config, chain_config(dir.path(), &calls)).unwrap();
    // One rule in SQL, for `grant`'s `sql/*` only.
    let (ok, out) = crate::common::run_with_deadline(
        Command::new(env!("CARGO_BIN_EXE_regate"))
            .env("REGATE_LOG", "warn")
            .args([
                "acl",
                "add",
                "--account",
                "grant",
                "--name",
                "sql/*",
                "--actions",
                "pull",
            ])
            .arg("--config")
            .arg(&config),
        b"",
        Duration::from_secs(60),
    );
    assert!(ok, "{out}");
    let gateway = RegateProcess::start(&config, dir.path().join("regate.log"));
    let base = gateway.url();
    let password = "p w\nx y";

    // ext_auth: exit 0 with labels, 1 refused, 2 no match (no backend after it has the
    // name: 401), anything else an error (503).
    let table: &[(&str, &str, Result<&str, u16>)] = &[
        ("ok", password, Ok("")),
        ("ok", "p w", Err(401)),
        ("plain", "anything", Ok("")),
        ("deny", "x", Err(401)),
        ("nomatch", "x", Err(401)),
        ("boom", password, Err(503)),
        ("garbage", "x", Err(503)),
        ("stall", "x", Err(503)),
        // The static users come first: the program never hears of them.
        ("admin", "pw", Ok("pull")),
    ];
    for (user, pw, want) in table {
        let got = ask(&base, user, pw, "repository:other/app:pull").await;
        assert_eq!(got.as_deref().map_err(|s| *s), *want, "{user}");
    }
    let heard = read(&calls.join("calls"));
    assert!(!heard.lines().any(|l| l == "admin"), "{heard}");
    // The labels it printed reached ext_authz, in docker_auth's AuthRequestInfo.
    let authz_in = read(&calls.join("authz.in"));
    assert!(
        authz_in.contains(r#"{"Account":"ok","Type":"repository","Name":"other/app","Service":"Docker registry","IP":"127.0.0.1","Actions":["pull"],"Labels":{"group":["devs"]}}"#),
        "{authz_in}"
    );
    // An answer is remembered: the same login again does not run it again.
    let before = read(&calls.join("calls"))
        .lines()
        .filter(|l| *l == "plain")
        .count();
    assert_eq!(
        ask(&base, "plain", "anything", "repository:a/b:pull")
            .await
            .as_deref(),
        Ok("")
    );
    let after = read(&calls.join("calls"))
        .lines()
        .filter(|l| *l == "plain")
        .count();
    assert_eq!((before, after), (1, 1));

    // The hung program was killed, and what it started with it.
    for file in ["hang.pid", "hang-child.pid"] {
        let pid = read(&calls.join(file));
        assert!(!pid.is_empty(), "{file} written");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while alive(&pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "{file}: {pid} still runs"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // At most `concurrency` (2) run at once; the others wait for a turn.
    let busy: Vec<_> = (0..6)
        .map(|i| {
            let base = base.clone();
            tokio::spawn(async move {
                ask(&base, &format!("busy{i}"), "x", "repository:a/b:pull").await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for b in busy {
        answers.push(b.await.unwrap());
    }
    let counts = read(&calls.join("concurrent"));
    let most = counts
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .max();
    assert!(
        most.is_some_and(|m| m <= 2),
        "at once: {counts:?}; answers {answers:?}"
    );

    // The password never reached the arguments or the environment, nor the log (the
    // program's stderr said it; the log has it blanked out).
    for entry in std::fs::read_dir(&calls).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("env.") || name.starts_with("argv.") {
            let text = read(&path);
            assert!(
                !text.contains("x y") && !text.contains("p w"),
                "{name}: {text}"
            );
        }
    }
    let log = gateway.log_text();
    assert!(
        log.contains("exit code 3") && log.contains("<redacted>"),
        "{log}"
    );
    assert!(!log.contains("x y") && !log.contains("p w"), "{log}");

    // ext_authz after acl_xorm: a scope acl_xorm decides never reaches the program; exit 0
    // grants what was asked, 1 nothing (a decision), anything else 503.
    let scopes: &[(&str, &str, Result<&str, u16>)] = &[
        ("grant", "repository:sql/app:pull,push", Ok("pull")),
        ("grant", "repository:other/app:pull,push", Ok("pull,push")),
        ("refuse", "repository:other/app:pull,push", Ok("")),
        ("two", "repository:other/app:pull", Err(503)),
        ("wait", "repository:other/app:pull", Err(503)),
    ];
    for (user, scope, want) in scopes {
        let got = ask(&base, user, "pw", scope).await;
        assert_eq!(got.as_deref().map_err(|s| *s), *want, "{user} {scope}");
    }
    assert!(!read(&calls.join("authz.in")).contains("sql/app"));

    // explain says which backend decided, as the token endpoint decides.
    let explain = |args: &[&str], stdin: &[u8]| {
        crate::common::run_with_deadline(
            Command::new(env!("CARGO_BIN_EXE_regate"))
                .env("REGATE_LOG", "warn")
                .arg("explain")
                .arg("--config")
                .arg(&config)
                .args(args),
            stdin,
            Duration::from_secs(60),
        )
    };
    let (ok, out) = explain(
        &[
            "--account",
            "grant",
            "--ip",
            "127.0.0.1",
            "repository:sql/app:pull",
            "repository:other/app:push",
        ],
        b"",
    );
    assert!(ok, "{out}");
    assert!(out.contains("acl_xorm seq 10: decides"), "{out}");
    assert!(out.contains("ext_authz: decides"), "{out}");
    let (ok, out) = explain(
        &["--account", "ok", "--password-stdin", "repository:x/y:pull"],
        password.as_bytes(),
    );
    // Nothing granted: explain exits 1, as for any denied scope.
    assert!(!ok, "{out}");
    assert!(out.contains("an account of ext_auth"), "{out}");
    assert!(out.contains("group=devs"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn casbin_decides_what_the_acl_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("regate.yml");
    std::fs::write(
        &config,
        format!(
            r#"server: {{addr: "127.0.0.1:0"}}
data_dir: "{data}"
upstream: {{url: "http://127.0.0.1:9"}}
users:
  admin: {{password: "{pw}"}}
  carla: {{password: "{pw}", labels: {{team: [dev, ops]}}}}
  dan: {{password: "{pw}", labels: {{team: [ops]}}}}
acl:
  - match: {{account: admin}}
    actions: ["*"]
casbin_authz:
  model_path: {model}
  policy_path: {policy}
"#,
            data = dir.path().join("data").display(),
            pw = bcrypt("pw"),
            model = script("model.conf").display(),
            policy = script("policy.csv").display(),
        ),
    )
    .unwrap();
    let gateway = RegateProcess::start(&config, dir.path().join("regate.log"));
    let base = gateway.url();
    let table: &[(&str, &str, &str)] = &[
        // The static rule decides for admin.
        (
            "admin",
            "repository:team/app:pull,push,delete",
            "delete,pull,push",
        ),
        // carla's role allows pull and push from loopback with label team=dev; delete only
        // from 10/8.
        ("carla", "repository:team/app:pull,push,delete", "pull,push"),
        ("carla", "repository:team/other:pull", ""),
        // dan lacks the role and the label.
        ("dan", "repository:team/app:pull", ""),
    ];
    for (user, scope, want) in table {
        assert_eq!(
            ask(&base, user, "pw", scope).await.as_deref(),
            Ok(*want),
            "{user} {scope}"
        );
    }
}

/// `regate check` refuses what cannot work: a program that is missing or not executable,
/// a conn string no driver reads, an unknown database, and MongoDB (with the way across).
#[test]
fn check_refuses_programs_and_databases_that_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "ext_auth: {command: /nonexistent/program}",
            "ext_auth.command",
        ),
        (
            "ext_auth: {command: no-such-program-anywhere}",
            "not found in PATH",
        ),
        (
            &format!(
                "ext_authz: {{command: {}}}",
                script("not-executable.sh").display()
            ),
            "not executable",
        ),
        (
            "xorm_auth: {database_type: mysql, conn_string: \"just words\"}",
            "xorm_auth.conn_string",
        ),
        (
            "acl_xorm: {database_type: postgres, conn_string: \"host=h bogus=1\"}",
            "acl_xorm.conn_string",
        ),
        (
            "xorm_auth: {database_type: mongodb}",
            "xorm_auth.database_type",
        ),
        (
            "acl_xorm: {database_type: sqlite3, cache_ttl: soon}",
            "acl_xorm.cache_ttl",
        ),
        ("mongo_auth: {collection: users}", "xorm_user"),
        (
            "casbin_authz: {model_path: nope.conf, policy_path: nope.csv}",
            "casbin_authz",
        ),
    ];
    for (section, want) in cases {
        let config = dir.path().join("regate.yml");
        std::fs::write(
            &config,
            format!("upstream: {{url: \"http://127.0.0.1:9\"}}\nacl: []\n{section}\n"),
        )
        .unwrap();
        let (ok, out) = crate::common::run_with_deadline(
            Command::new(env!("CARGO_BIN_EXE_regate"))
                .arg("check")
                .arg("--config")
                .arg(&config),
            b"",
            Duration::from_secs(60),
        );
        assert!(!ok && out.contains(want), "{section}: {out}");
        assert!(out.contains("regate.yml:3:"), "the line is named: {out}");
    }
}
