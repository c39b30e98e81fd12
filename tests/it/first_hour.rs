//! What a new operator reads in the first hour: `docker login` leaves an audit line, the
//! access log counts bytes both ways, and a client is never told how the config is written.

use crate::common::*;
use hyper::Method;

#[tokio::test(flavor = "multi_thread")]
async fn a_login_is_audited_and_uploads_count_their_bytes() {
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let config = dir.path().join("regate.yml");
    // No `"": {}`: anonymous access is off.
    let text = seed_config(&registry.url(), &dir.path().join("data")).replace("  \"\": {}\n", "")
        + format!("audit_log: \"{}\"\n", audit.display()).as_str();
    assert!(!text.contains("\"\": {}"));
    std::fs::write(&config, text).unwrap();
    let regate = RegateProcess::start(&config, dir.path().join("regate.log"));
    let base = regate.url();

    // What `docker login` sends: a token request with no scope.
    let login = get(
        &format!("{base}/auth?service=Docker+registry&offline_token=true&client_id=docker"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(login.status, 200);

    // An upload of a known size.
    let t = token(
        &base,
        Some(("alice", "alice-pw")),
        &["repository:alice/app:pull,push"],
    )
    .await;
    let bearer = format!("Bearer {t}");
    let blob = noise(7, 50_000);
    let digest = format!("sha256:{}", sha256_hex(&blob));
    let start = http(
        Method::POST,
        &format!("{base}/v2/alice/app/blobs/uploads/"),
        &[("authorization", &bearer)],
        Vec::new(),
    )
    .await;
    assert_eq!(start.status, 202);
    let location = start.header("location").unwrap().to_owned();
    let put = http(
        Method::PUT,
        &format!("{location}&digest={digest}"),
        &[
            ("authorization", &bearer),
            ("content-type", "application/octet-stream"),
        ],
        blob,
    )
    .await;
    assert_eq!(put.status, 201);

    // Anonymous, with anonymous off: the client hears nothing of `users`; the log does.
    let anonymous = get(
        &format!("{base}/auth?service=Docker+registry&scope=repository:x:pull"),
        &[],
    )
    .await;
    assert_eq!(anonymous.status, 401);
    let body = String::from_utf8_lossy(&anonymous.body);
    assert!(!body.contains("users") && !body.contains("entry"), "{body}");

    // The lines are written when each body is done: poll for them.
    let mut audit_text = String::new();
    let mut log = String::new();
    for _ in 0..100 {
        audit_text = std::fs::read_to_string(&audit).unwrap_or_default();
        log = regate.log_text();
        if audit_text.contains("\"login\"")
            && audit_text.contains("authentication_failed")
            && log.contains("bytes_in=50000")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let lines: Vec<serde_json::Value> = audit_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let login = lines
        .iter()
        .find(|l| l["message"] == "login")
        .unwrap_or_else(|| panic!("docker login is audited:\n{audit_text}"));
    assert_eq!(login["account"], "alice");
    assert_eq!(login["backend"], "users");
    assert_eq!(login["offline"], true);
    assert!(
        log.lines().any(|l| l.contains("method=PUT")
            && l.contains("bytes_in=50000")
            && l.contains("bytes_out=0")),
        "the upload's access line counts what came in:\n{log}"
    );
    let refused = lines
        .iter()
        .find(|l| l["outcome"] == "authentication_failed" && l["account"] == "")
        .unwrap_or_else(|| panic!("the anonymous refusal is audited:\n{audit_text}"));
    assert!(refused["reason"]
        .as_str()
        .unwrap()
        .contains("no \"\" entry in users"));
}

/// The README's HTTPS section, followed as written: `cert init`, its complete config (only
/// the paths, the addresses and the password's hash swapped for the test's), then a login,
/// a push and a pull by a client that trusts nothing but the CA it printed.
#[tokio::test(flavor = "multi_thread")]
async fn the_readmes_https_config_starts_and_serves() {
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    cert_init(&certs, &["localhost", "127.0.0.1"]);
    let readme = include_str!("../../README.md");
    let start = readme
        .find("<!-- https-config: begin -->\n```yaml\n")
        .unwrap()
        + 36;
    let end = readme.find("```\n<!-- https-config: end -->").unwrap();
    let hash = bcrypt("s3cret-admin");
    let mut config = readme[start..end].to_owned();
    for (from, to) in [
        ("/etc/regate/certs", certs.to_str().unwrap()),
        ("\":443\"", "\"127.0.0.1:0\""),
        ("\":80\"", "\"127.0.0.1:0\""),
        (
            "$2y$10$REPLACE.WITH.THE.HASH.FROM.regate.hash-password.ABCDEFGHIJ",
            hash.as_str(),
        ),
        ("http://127.0.0.1:5000", registry.url().as_str()),
    ] {
        assert!(config.contains(from), "the README's config has {from}");
        config = config.replace(from, to);
    }
    let gateway = Gateway::start_in(dir, &config).await;
    let port = gateway.addr().port();
    let ca = ca_only_dir(&certs.join("ca.crt"));
    let auth = ca.path().join("auth.json");
    let image = tempfile::tempdir().unwrap();
    oci_image(image.path(), 1, 11);
    let dest = format!("docker://127.0.0.1:{port}/team/app:1.0");
    let cert_dir = ca.path().to_str().unwrap().to_owned();
    let src = format!("oci:{}", image.path().display());
    let auth2 = auth.clone();
    let (ok, out) = blocking(move || {
        skopeo(
            &auth2,
            &[
                "login",
                "--cert-dir",
                &cert_dir,
                "-u",
                "admin",
                "-p",
                "s3cret-admin",
                &format!("127.0.0.1:{port}"),
            ],
        )
    })
    .await;
    assert!(ok, "login: {out}");
    let cert_dir = ca.path().to_str().unwrap().to_owned();
    let (ok, out) =
        blocking(move || skopeo(&auth, &["copy", "--dest-cert-dir", &cert_dir, &src, &dest])).await;
    assert!(ok, "push: {out}");
    assert!(registry.has_repository("team/app"));
}

/// `regate check` reports every error and warning of a file in one run, as a compiler does,
/// and exits non-zero.
#[test]
fn check_reports_everything_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regate.yml");
    std::fs::write(
        &path,
        "server:\n  addr: \"no port\"\ntoken:\n  expiration: -1\nusers:\n  bob:\n    password: hunter2\n  bob:\n    password: again\nacl:\n  - match: {account: bobb}\n    actions: [pull]\nupstream: {url: http://127.0.0.1:5000}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
        .args(["check", "--config", path.to_str().unwrap()])
        .env_remove("REGATE_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    for key in [
        "server.addr",
        "token.expiration",
        "users.bob.password",
        "users.bob: `bob` is written twice",
    ] {
        assert!(errors.iter().any(|l| l.contains(key)), "{key} in\n{stderr}");
    }
    // In file order.
    let lines: Vec<usize> = errors
        .iter()
        .filter_map(|l| l.split(':').nth(2).and_then(|n| n.parse().ok()))
        .collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "{stderr}");
}
