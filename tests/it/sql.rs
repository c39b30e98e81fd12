//! `xorm_auth` and `acl_xorm` against real databases: the same table of cases runs on
//! SQLite, PostgreSQL and MariaDB (started here, `sql/servers.rs`), with rows written as
//! docker_auth writes them, changed live with `regate user`/`regate acl` and the admin API,
//! attacked with SQL in names, and with the database gone.

mod db;
mod servers;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{basic, bcrypt, get, http, RegateProcess};
use db::{Db, Raw};
use hyper::Method;
use servers::{Mariadb, Postgres};

/// The access a token grants: `type:name:actions` per scope.
fn access(token: &str) -> Vec<String> {
    let claims = crate::common::claims(token);
    claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let actions: Vec<&str> = a["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            format!(
                "{}:{}:{}",
                a["type"].as_str().unwrap(),
                a["name"].as_str().unwrap(),
                actions.join(",")
            )
        })
        .collect()
}

/// What `/auth` answers `user`/`password` for `scope`: the granted actions, or the status.
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
    let granted = access(&token);
    Ok(granted[0].rsplit(':').next().unwrap().to_owned())
}

/// Polls until `ask` answers `want` (a change made elsewhere shows within `cache_ttl`);
/// fails with the last answer if it never does.
async fn eventually(base: &str, user: &str, password: &str, scope: &str, want: Result<&str, u16>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = ask(base, user, password, scope).await;
        if got.as_deref().map_err(|s| *s) == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{user} {scope}: still {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `regate` run as an operator runs it, with the password on stdin.
fn regate(config: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    crate::common::run_with_deadline(
        Command::new(env!("CARGO_BIN_EXE_regate"))
            .env("REGATE_LOG", "warn")
            .args(args)
            .arg("--config")
            .arg(config),
        stdin.as_bytes(),
        Duration::from_secs(60),
    )
}

const ALICE_PW: &str = "alice new pw";
const CAROL_PW: &str = "carol \"quoted\" pw";
const DAVE_PW: &str = "dave's pw";

/// The one scenario every database runs.
async fn scenario(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("regate.yml");
    let audit = dir.path().join("audit.log");
    std::fs::write(
        &config,
        format!(
            r#"server: {{addr: "127.0.0.1:0", basic_auth: "on"}}
token: {{issuer: "Auth Service", expiration: 900}}
data_dir: "{data}"
audit_log: "{audit}"
upstream: {{url: "http://127.0.0.1:9"}}
users:
  admin: {{password: "{admin}"}}
  sam: {{password: "{sam}", labels: {{team: [dev]}}}}
acl:
  - match: {{account: admin}}
    actions: ["*"]
    comment: admin can do anything
xorm_auth: {section}
acl_xorm: {section_ttl}
"#,
            data = dir.path().join("data").display(),
            audit = audit.display(),
            admin = bcrypt("admin pw"),
            sam = bcrypt("sam pw"),
            section = db.section(),
            section_ttl = db.section().replace('}', ", cache_ttl: 500ms}"),
        ),
    )
    .unwrap();
    let gateway = RegateProcess::start(&config, dir.path().join("regate.log"));
    let base = gateway.url();

    // No table yet: a login for a name `users` lacks creates xorm_user (and finds nobody).
    assert_eq!(
        ask(&base, "alice", "x", "repository:a/b:pull").await,
        Err(401)
    );
    // The first scope the static acl has no rule for reads (and so creates) the rules.
    assert_eq!(
        ask(&base, "sam", "sam pw", "repository:a/b:pull")
            .await
            .as_deref(),
        Ok("")
    );

    // Rows as docker_auth writes them.
    let raw = db.connect().await;
    raw.insert_user(
        "alice",
        &bcrypt("alice old pw"),
        Some(r#"{"team":["ops"]}"#),
    )
    .await;
    raw.insert_user("alice", &bcrypt("alice pw"), Some(r#"{"team":["dev"]}"#))
        .await;
    raw.insert_user("bob", &bcrypt("bob pw"), None).await;
    raw.insert_user("mallory", "plaintext-password", None).await;
    raw.insert_user("o'brien", &bcrypt("o pw"), Some("{}"))
        .await;
    raw.insert_rule(
        r#"{"Match":{"account":"alice","name":"alice/*"},"Actions":["*"],"Comment":"own namespace"}"#,
        10,
    )
    .await;
    raw.insert_rule(
        r#"{"Match":{"name":"/(unclosed/"},"Actions":["*"],"Comment":null}"#,
        15,
    )
    .await;
    raw.insert_rule(
        r#"{"match":{"labels":{"team":"dev"}},"actions":["pull"]}"#,
        20,
    )
    .await;
    raw.insert_rule(r#"{"Match":{"account":"bob"},"Actions":[]}"#, 30)
        .await;
    raw.insert_rule(
        r#"{"Match":{"account":"/^o'/"},"Actions":["pull","push"]}"#,
        40,
    )
    .await;

    // (user, password, scope, answer): granted actions, or the HTTP status.
    let table: &[(&str, &str, &str, Result<&str, u16>)] = &[
        // The newest row of a name is the account.
        (
            "alice",
            "alice pw",
            "repository:alice/app:pull,push",
            Ok("pull,push"),
        ),
        (
            "alice",
            "alice old pw",
            "repository:alice/app:pull",
            Err(401),
        ),
        // Its labels reach the rules (seq 20).
        (
            "alice",
            "alice pw",
            "repository:team/app:pull,push",
            Ok("pull"),
        ),
        // A matching rule that grants nothing ends the search (seq 30).
        ("bob", "bob pw", "repository:bob/app:pull", Ok("")),
        ("bob", "wrong", "repository:bob/app:pull", Err(401)),
        // A hash that is not bcrypt logs in nobody.
        (
            "mallory",
            "plaintext-password",
            "repository:m/app:pull",
            Err(401),
        ),
        ("nobody", "x", "repository:n/app:pull", Err(401)),
        // Quotes are data.
        (
            "o'brien",
            "o pw",
            "repository:o/app:pull,push",
            Ok("pull,push"),
        ),
        // SQL in names is a name nobody has.
        (
            "alice' --",
            "alice pw",
            "repository:alice/app:pull",
            Err(401),
        ),
        (
            "x' OR '1'='1",
            "x' OR '1'='1",
            "repository:a/app:pull",
            Err(401),
        ),
        (
            "alice'; DROP TABLE xorm_user; --",
            "x",
            "repository:a/app:pull",
            Err(401),
        ),
        // ... and in repository names, a name no rule has.
        (
            "sam",
            "sam pw",
            "repository:x');DROP/**/TABLE/**/xorm_acl_entry;--:pull",
            Ok("pull"),
        ),
        // Static users and rules first, untouched.
        (
            "admin",
            "admin pw",
            "repository:any/app:pull,push,delete",
            Ok("delete,pull,push"),
        ),
        ("sam", "sam pw", "repository:team/app:pull,push", Ok("pull")),
    ];
    for (user, password, scope, want) in table {
        // The rules read before the rows were written age out within cache_ttl.
        eventually(&base, user, password, scope, *want).await;
    }
    assert_eq!(raw.count("xorm_user").await, 5, "no row went");
    assert_eq!(raw.count("xorm_acl_entry").await, 5, "no rule went");
    let log = gateway.log_text();
    assert!(
        log.contains("row with seq 15 is skipped") && log.contains("unclosed"),
        "the bad rule is named in the log:\n{log}"
    );
    assert!(
        log.contains("xorm_user row 4") && log.contains("not bcrypt"),
        "the bad hash is named in the log:\n{log}"
    );

    // Changed from a shell: counts from the next login, no reload.
    let c = |args: &[&str], stdin: &str| regate(&config, args, stdin);
    let (ok, out) = c(
        &["user", "add", "carol", "--label", "team=dev"],
        &format!("{CAROL_PW}\n"),
    );
    assert!(ok, "{out}");
    assert_eq!(
        ask(&base, "carol", CAROL_PW, "repository:x/y:pull")
            .await
            .as_deref(),
        Ok("pull")
    );
    let (ok, out) = c(&["user", "add", "carol"], "other\n");
    assert!(!ok && out.contains("exists"), "{out}");
    let (ok, out) = c(&["user", "passwd", "alice"], ALICE_PW);
    assert!(ok, "{out}");
    assert_eq!(
        ask(&base, "alice", "alice pw", "repository:alice/a:pull").await,
        Err(401)
    );
    assert_eq!(
        ask(&base, "alice", ALICE_PW, "repository:alice/a:pull")
            .await
            .as_deref(),
        Ok("pull")
    );
    let (ok, out) = c(&["user", "del", "bob"], "");
    assert!(ok && out.contains("1 row"), "{out}");
    assert_eq!(
        ask(&base, "bob", "bob pw", "repository:bob/a:pull").await,
        Err(401)
    );
    // alice has two rows; the newest is her account.
    let (ok, out) = c(&["user", "list", "--json"], "");
    assert!(ok, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let alice = list
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap();
    assert_eq!(
        (alice["rows"].as_i64(), &alice["labels"]["team"][0]),
        (Some(2), &serde_json::json!("dev"))
    );

    // A rule from the shell: counts within cache_ttl.
    let (ok, out) = c(
        &[
            "acl",
            "add",
            "--account",
            "carol",
            "--name",
            "carol/*",
            "--actions",
            "pull,push",
            "--before",
            "20",
        ],
        "",
    );
    assert!(ok && out.contains("added rule seq"), "{out}");
    eventually(
        &base,
        "carol",
        CAROL_PW,
        "repository:carol/app:pull,push",
        Ok("pull,push"),
    )
    .await;
    let (ok, out) = c(&["acl", "list"], "");
    assert!(
        ok && out.contains("SKIPPED") && out.contains("carol/*"),
        "{out}"
    );
    let (ok, out) = c(&["acl", "add", "--name", "/(/", "--actions", "pull"], "");
    assert!(
        !ok && out.contains("match.name"),
        "a rule regate cannot use is refused: {out}"
    );

    // The admin API: the static admin may (its rule grants everything), alice may not.
    let admin = basic("admin", "admin pw");
    let json = [
        ("authorization", admin.as_str()),
        ("content-type", "application/json"),
    ];
    let resp = http(
        Method::POST,
        &format!("{base}/api/v1/users"),
        &json,
        serde_json::to_vec(
            &serde_json::json!({"name": "dave", "password": DAVE_PW, "labels": {"team": ["qa"]}}),
        )
        .unwrap(),
    )
    .await;
    assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
    let resp = get(&format!("{base}/api/v1/users"), &json[..1]).await;
    assert_eq!(resp.status, 200);
    let names: Vec<String> = resp.json()["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "dave") && !names.iter().any(|n| n == "bob"),
        "{names:?}"
    );
    // A rule added here counts at once (this process reads the rules again).
    let resp = http(
        Method::POST,
        &format!("{base}/api/v1/acl"),
        &json,
        serde_json::to_vec(&serde_json::json!({"rule": {"match": {"labels": {"team": "qa"}}, "actions": ["pull"]}, "after": 40})).unwrap(),
    )
    .await;
    assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
    let seq = resp.json()["seq"].as_i64().unwrap();
    assert_eq!(
        ask(&base, "dave", DAVE_PW, "repository:q/a:pull")
            .await
            .as_deref(),
        Ok("pull")
    );
    let resp = http(
        Method::DELETE,
        &format!("{base}/api/v1/acl/{seq}"),
        &json[..1],
        Vec::new(),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        ask(&base, "dave", DAVE_PW, "repository:q/a:pull")
            .await
            .as_deref(),
        Ok("")
    );
    // A Bearer token for the API's scope works as Basic does.
    let token =
        crate::common::token(&base, Some(("admin", "admin pw")), &["regate:acl:read"]).await;
    let bearer = format!("Bearer {token}");
    let resp = get(&format!("{base}/api/v1/acl"), &[("authorization", &bearer)]).await;
    assert_eq!(resp.status, 200);
    assert!(resp.json()["rules"].as_array().unwrap().len() >= 5);
    // ... and only for that scope.
    let resp = get(
        &format!("{base}/api/v1/users"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(resp.status, 401);
    assert!(resp
        .header("www-authenticate")
        .unwrap()
        .contains("regate:users:read"));
    // Not the admin: the ACL says no.
    let alice = basic("alice", ALICE_PW);
    let resp = get(
        &format!("{base}/api/v1/users"),
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(resp.status, 403);
    // A body that is not JSON is refused (a browser sends only that cross-site unasked).
    let resp = http(
        Method::POST,
        &format!("{base}/api/v1/users"),
        &[("authorization", &admin), ("content-type", "text/plain")],
        br#"{"name": "eve", "password": "p"}"#.to_vec(),
    )
    .await;
    assert_eq!(resp.status, 415);
    let resp = http(
        Method::DELETE,
        &format!("{base}/api/v1/users/nobody"),
        &json,
        Vec::new(),
    )
    .await;
    assert_eq!(resp.status, 404);

    // Every change is in the audit log, with who made it.
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    for event in ["user_add", "user_passwd", "user_del", "acl_add", "acl_del"] {
        assert!(audit_text.contains(event), "{event} audited:\n{audit_text}");
    }
    assert!(audit_text.contains(r#""actor":"admin""#), "{audit_text}");
    assert!(audit_text.contains(r#""via":"cli""#), "{audit_text}");

    // The database goes away: its logins get 503, static users still log in, and the
    // rules last read stay in force for them.
    drop(raw);
    let mut db = db;
    match &mut db {
        Db::Sqlite(file) => std::fs::write(file, b"this is not a database any more").unwrap(),
        Db::Postgres(pg) => pg.kill(),
        Db::Mariadb(my) => my.kill(),
    }
    eventually(&base, "carol", CAROL_PW, "repository:x/y:pull", Err(503)).await;
    assert_eq!(
        ask(&base, "admin", "admin pw", "repository:a/b:pull")
            .await
            .as_deref(),
        Ok("pull")
    );
    assert_eq!(
        ask(&base, "sam", "sam pw", "repository:team/app:pull")
            .await
            .as_deref(),
        Ok("pull")
    );
    let resp = get(&format!("{base}/api/v1/users"), &json[..1]).await;
    assert_eq!(resp.status, 503);
    assert_eq!(get(&format!("{base}/healthz"), &[]).await.status, 200);

    // No password or database secret in any log.
    let log = gateway.log_text() + audit_text.as_str();
    let mut secrets = vec![
        "alice pw",
        ALICE_PW,
        CAROL_PW,
        DAVE_PW,
        "bob pw",
        "sam pw",
        "admin pw",
        "plaintext-password",
    ];
    secrets.extend(db.secret());
    for secret in secrets {
        assert!(!log.contains(secret), "{secret:?} is in a log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_accounts_and_rules() {
    let dir = tempfile::tempdir().unwrap();
    scenario(Db::Sqlite(dir.path().join("auth.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_accounts_and_rules() {
    let pg = crate::common::blocking(Postgres::start).await;
    scenario(Db::Postgres(pg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_accounts_and_rules() {
    let my = crate::common::blocking(Mariadb::start).await;
    scenario(Db::Mariadb(my)).await;
}

/// On PostgreSQL a rule change counts at once, whatever `cache_ttl` says: `regate acl`
/// announces it (`NOTIFY regate_acl`), and so can whoever changes the table by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rule_changes_count_at_once() {
    let pg = crate::common::blocking(Postgres::start).await;
    let db = Db::Postgres(pg);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("regate.yml");
    std::fs::write(
        &config,
        format!(
            r#"server: {{addr: "127.0.0.1:0"}}
data_dir: "{data}"
upstream: {{url: "http://127.0.0.1:9"}}
users:
  sam: {{password: "{sam}", labels: {{team: [dev]}}}}
acl_xorm: {section}
"#,
            data = dir.path().join("data").display(),
            sam = bcrypt("sam pw"),
            section = db.section().replace('}', ", cache_ttl: 1h}"),
        ),
    )
    .unwrap();
    let gateway = RegateProcess::start(&config, dir.path().join("regate.log"));
    let base = gateway.url();
    // Read (and made) once: nothing for sam. With an hour's cache_ttl, only a notice can
    // change that.
    assert_eq!(
        ask(&base, "sam", "sam pw", "repository:a/b:pull")
            .await
            .as_deref(),
        Ok("")
    );
    let (ok, out) = regate(
        &config,
        &["acl", "add", "--label", "team=dev", "--actions", "pull"],
        "",
    );
    assert!(ok, "{out}");
    eventually(&base, "sam", "sam pw", "repository:a/b:pull", Ok("pull")).await;
    // By hand: the row, then the notice.
    let raw = db.connect().await;
    raw.insert_rule(r#"{"Match":{"name":"a/*"},"Actions":["pull","push"]}"#, 1)
        .await;
    if let Raw::Postgres(p) = &raw {
        sqlx::query("NOTIFY regate_acl").execute(p).await.unwrap();
    }
    eventually(
        &base,
        "sam",
        "sam pw",
        "repository:a/b:pull,push",
        Ok("pull,push"),
    )
    .await;
}
