//! Operating regate: the audit log (JSON, one line per token decision and per write), the
//! access log, /metrics, /healthz and /readyz, and no secret in any log line.

use crate::common::*;
use hyper::Method;

#[tokio::test(flavor = "multi_thread")]
async fn audit_access_metrics_health_and_no_secrets_in_logs() {
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let config = dir.path().join("regate.yml");
    let text = seed_config(&registry.url(), &dir.path().join("data"))
        + format!("audit_log: \"{}\"\n", audit.display()).as_str();
    std::fs::write(&config, text).unwrap();
    let regate = RegateProcess::start(&config, dir.path().join("regate.log"));
    let base = regate.url();

    // A failed login, a token, a manifest push and a delete.
    let r = get(
        &format!("{base}/auth?service=Docker%20registry"),
        &[("authorization", &basic("alice", "wrong-secret-pw"))],
    )
    .await;
    assert_eq!(r.status, 401);
    let t = token(
        &base,
        Some(("admin", "admin-pw")),
        &["repository:ops/app:pull,push,delete"],
    )
    .await;
    let bearer = format!("Bearer {t}");
    let config_blob =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let config_digest = format!("sha256:{}", sha256_hex(&config_blob));
    let r = http(
        Method::POST,
        &format!("{base}/v2/ops/app/blobs/uploads/"),
        &[("authorization", &bearer)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 202);
    let location = r.header("location").unwrap().to_owned();
    let r = http(
        Method::PUT,
        &format!("{location}&digest={config_digest}"),
        &[
            ("authorization", &bearer),
            ("content-type", "application/octet-stream"),
        ],
        config_blob.clone(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_blob.len()},
        "layers": []
    }))
    .unwrap();
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));
    let r = http(
        Method::PUT,
        &format!("{base}/v2/ops/app/manifests/v1"),
        &[
            ("authorization", &bearer),
            ("content-type", "application/vnd.oci.image.manifest.v1+json"),
        ],
        manifest,
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = http(
        Method::DELETE,
        &format!("{base}/v2/ops/app/manifests/{manifest_digest}"),
        &[("authorization", &bearer)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 202);

    // Health and metrics.
    assert_eq!(get(&format!("{base}/healthz"), &[]).await.status, 200);
    assert_eq!(get(&format!("{base}/readyz"), &[]).await.status, 200);
    let m = get(&format!("{base}/metrics"), &[]).await;
    assert_eq!(m.status, 200);
    let metrics = String::from_utf8_lossy(&m.body).into_owned();
    for needle in [
        "regate_requests_total{route=\"manifest\",status=\"201\"} 1",
        "regate_requests_total{route=\"token\",status=\"401\"} 1",
        "regate_authentication_failures_total 1",
        "regate_tokens_issued_total 1",
        "regate_token_cache_hits_total",
        "regate_upstream_seconds_count",
        "regate_bytes_from_clients_total",
    ] {
        assert!(metrics.contains(needle), "{needle} in\n{metrics}");
    }

    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = audit_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failed = lines
        .iter()
        .find(|l| l["outcome"] == "authentication_failed")
        .expect("the failed login is audited");
    assert_eq!(failed["account"], "alice");
    let decision = lines
        .iter()
        .find(|l| l["message"] == "token decision")
        .expect("token decisions are audited");
    assert_eq!(decision["account"], "admin");
    assert_eq!(decision["scope"], "repository:ops/app:pull,push,delete");
    assert_eq!(decision["granted"], "delete,pull,push");
    assert!(decision["rule"].as_str().unwrap().starts_with("acl[0]"));
    assert!(decision["client"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1"));
    assert!(decision["timestamp"].is_string());
    let push = lines
        .iter()
        .find(|l| l["action"] == "push_manifest")
        .expect("the manifest put is audited");
    assert_eq!(push["repository"], "ops/app");
    assert_eq!(push["reference"], "v1");
    assert_eq!(push["digest"], manifest_digest.as_str());
    assert!(lines.iter().any(|l| l["action"] == "delete_manifest"));

    let log = regate.log_text();
    assert!(log.contains("regate::access"), "the access log is on");
    assert!(log.contains("status=201"), "{log}");
    // No password, token or key anywhere.
    let key = std::fs::read_to_string(dir.path().join("data/token.key")).unwrap();
    let key_body = key.lines().nth(1).unwrap();
    for (what, secret) in [
        ("password", "wrong-secret-pw"),
        ("password", "admin-pw"),
        ("token", t.as_str()),
        ("token part", t.split('.').nth(2).unwrap()),
        ("key", key_body),
    ] {
        assert!(!log.contains(secret), "a {what} is in the log");
        assert!(!audit_text.contains(secret), "a {what} is in the audit log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_overrides_configure_a_running_gateway() {
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    // No upstream and another issuer in the file: the environment supplies both.
    let text = seed_config("http://127.0.0.1:1", &dir.path().join("data"))
        .replace("upstream:\n  url: \"http://127.0.0.1:1\"\n", "");
    assert!(!text.contains("upstream"));
    let config = dir.path().join("regate.yml");
    std::fs::write(&config, text).unwrap();
    let url = registry.url();
    let regate = RegateProcess::start_with_env(
        &config,
        dir.path().join("regate.log"),
        &[
            ("REGATE_UPSTREAM_URL", url.as_str()),
            ("REGATE_TOKEN_ISSUER", "from-env"),
            ("REGATE_AUDIT_LOG", "off"),
        ],
    );
    let base = regate.url();
    let t = token(&base, Some(("admin", "admin-pw")), &[]).await;
    let payload = t.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], "from-env");
    let r = get(
        &format!("{base}/v2/"),
        &[("authorization", &format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(
        r.status, 200,
        "forwarded to the upstream the environment named"
    );
}
