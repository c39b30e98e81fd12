//! Raw HTTP against regate in front of Debian's docker-registry: every status, header and
//! body the gateway core promises, byte for byte where registry:2 fixes the bytes.

use std::time::{Duration, Instant};

use crate::common::*;
use hyper::Method;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn challenge(seed: &Seed, rest: &str) -> String {
    format!(
        "Bearer realm=\"http://{}/auth\",service=\"Docker registry\"{rest}",
        seed.gateway.host()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn base_redirect_and_challenge() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();

    let r = get(&format!("{base}/v2"), &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/v2/"));
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    let r = get(&format!("{base}/v2/"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(challenge(&seed, "").as_str())
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert_eq!(
        r.json(),
        serde_json::json!({"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]})
    );

    // Any valid token opens /v2/, even one granting nothing; the registry answers.
    let anon = token(&base, None, &[]).await;
    let r = get(
        &format!("{base}/v2/"),
        &[("authorization", &format!("Bearer {anon}"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref(), b"{}");

    // Basic credentials are not a token: a plain challenge, no error.
    let r = get(
        &format!("{base}/v2/"),
        &[("authorization", &basic("admin", "admin-pw"))],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(challenge(&seed, "").as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_route_asks_for_what_registry_2_asks_for() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    let cases: &[(Method, String, &str)] = &[
        (
            Method::GET,
            "/v2/foo/bar/tags/list".into(),
            r#",scope="repository:foo/bar:pull""#,
        ),
        (
            Method::HEAD,
            "/v2/foo/manifests/latest".into(),
            r#",scope="repository:foo:pull""#,
        ),
        (
            Method::PUT,
            "/v2/foo/manifests/latest".into(),
            r#",scope="repository:foo:pull,push""#,
        ),
        (
            Method::DELETE,
            format!("/v2/foo/manifests/{DIGEST}"),
            r#",scope="repository:foo:delete""#,
        ),
        (
            Method::GET,
            format!("/v2/foo/blobs/{DIGEST}"),
            r#",scope="repository:foo:pull""#,
        ),
        (
            Method::POST,
            "/v2/foo/blobs/uploads/".into(),
            r#",scope="repository:foo:pull,push""#,
        ),
        (
            Method::POST,
            format!("/v2/foo/blobs/uploads/?mount={DIGEST}&from=other/repo"),
            r#",scope="repository:foo:pull,push repository:other/repo:pull""#,
        ),
        (
            Method::PATCH,
            "/v2/foo/blobs/uploads/abc-123".into(),
            r#",scope="repository:foo:pull,push""#,
        ),
        (
            Method::GET,
            "/v2/_catalog".into(),
            r#",scope="registry:catalog:*""#,
        ),
    ];
    for (method, path, scope) in cases {
        let r = http(method.clone(), &format!("{base}{path}"), &[], Vec::new()).await;
        assert_eq!(r.status, 401, "{method} {path}");
        assert_eq!(
            r.header("www-authenticate"),
            Some(challenge(&seed, scope).as_str()),
            "{method} {path}"
        );
    }
    // The detail lists each needed action, as registry:2's does.
    let r = http(
        Method::PUT,
        &format!("{base}/v2/foo/manifests/latest"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(
        r.json()["errors"][0]["detail"],
        serde_json::json!([
            {"Type":"repository","Class":"","Name":"foo","Action":"pull"},
            {"Type":"repository","Class":"","Name":"foo","Action":"push"}
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_and_insufficient_tokens() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    let url = format!("{base}/v2/library/app/tags/list");

    let r = get(&url, &[("authorization", "Bearer garbage")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            challenge(
                &seed,
                r#",scope="repository:library/app:pull",error="invalid_token""#
            )
            .as_str()
        )
    );

    // A genuine token for another repository, or for pull on a push.
    let other = token(
        &base,
        Some(("admin", "admin-pw")),
        &["repository:other:pull"],
    )
    .await;
    let r = get(&url, &[("authorization", &format!("Bearer {other}"))]).await;
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .ends_with(r#"error="insufficient_scope""#));

    let pull = token(
        &base,
        Some(("alice", "alice-pw")),
        &["repository:library/app:pull,push"],
    )
    .await;
    assert_eq!(
        claims(&pull)["access"][0]["actions"],
        serde_json::json!(["pull"])
    );
    let r = http(
        Method::POST,
        &format!("{base}/v2/library/app/blobs/uploads/"),
        &[("authorization", &format!("Bearer {pull}"))],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            challenge(
                &seed,
                r#",scope="repository:library/app:pull,push",error="insufficient_scope""#
            )
            .as_str()
        )
    );
    assert!(
        !seed.registry.has_repository("library/app"),
        "nothing unauthorized is forwarded"
    );

    // A repository token does not open the catalog.
    let admin = token(
        &base,
        Some(("admin", "admin-pw")),
        &["repository:library/app:pull"],
    )
    .await;
    let r = get(
        &format!("{base}/v2/_catalog"),
        &[("authorization", &format!("Bearer {admin}"))],
    )
    .await;
    assert_eq!(r.status, 401);
    let cat = token(&base, Some(("admin", "admin-pw")), &["registry:catalog:*"]).await;
    let r = get(
        &format!("{base}/v2/_catalog"),
        &[("authorization", &format!("Bearer {cat}"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"repositories": []}));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    let auth = |u: &str, p: &str| basic(u, p);

    // Wrong password, unknown user: 401 with a registry error body.
    for (u, p) in [("admin", "wrong"), ("nobody", "x")] {
        let r = get(
            &format!("{base}/auth?service=Docker%20registry"),
            &[("authorization", &auth(u, p))],
        )
        .await;
        assert_eq!(r.status, 401, "{u}");
        assert_eq!(r.json()["errors"][0]["code"], "UNAUTHORIZED");
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic "));
    }
    // `account` must be the authenticated user.
    let r = get(
        &format!("{base}/auth?service=Docker%20registry&account=root"),
        &[("authorization", &auth("admin", "admin-pw"))],
    )
    .await;
    assert_eq!(r.status, 400);
    // A malformed scope.
    let r = get(&format!("{base}/auth?scope=repository:foo"), &[]).await;
    assert_eq!(r.status, 400);

    // docker login: no scope, offline_token, client_id, account.
    let r = get(
        &format!(
            "{base}/auth?account=alice&client_id=docker&offline_token=true&service=Docker+registry"
        ),
        &[("authorization", &auth("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["token"], body["access_token"]);
    assert_eq!(body["expires_in"], 900);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    let c = claims(body["token"].as_str().unwrap());
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["aud"], SERVICE);
    assert_eq!(c["access"], serde_json::json!([]));

    // Repeated and space-separated scopes, a host:port name; every scope is listed, with
    // nothing where denied.
    let r = get(
        &format!(
            "{base}/auth?service=Docker%20registry&scope=repository:alice/app:pull,push&scope=repository:library/app:push%20repository:localhost:5000/x:pull&scope=registry:catalog:*"
        ),
        &[("authorization", &auth("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 200);
    let c = claims(r.json()["token"].as_str().unwrap());
    assert_eq!(
        c["access"],
        serde_json::json!([
            {"type":"repository","name":"alice/app","actions":["pull","push"]},
            {"type":"repository","name":"library/app","actions":[]},
            {"type":"repository","name":"localhost:5000/x","actions":["pull"]},
            {"type":"registry","name":"catalog","actions":[]}
        ])
    );

    // Anonymous: hello-world pull only ("" is in users).
    let t = token(
        &base,
        None,
        &["repository:hello-world:pull,push", "repository:other:pull"],
    )
    .await;
    let c = claims(&t);
    assert_eq!(c["sub"], "");
    assert_eq!(c["access"][0]["actions"], serde_json::json!(["pull"]));
    assert_eq!(c["access"][1]["actions"], serde_json::json!([]));

    // Another service than ours is refused rather than signed for nobody.
    let r = get(&format!("{base}/auth?service=elsewhere"), &[]).await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_needs_the_empty_user() {
    let registry = Registry::start(None);
    let config = format!(
        "server: {{addr: \"127.0.0.1:0\"}}\nupstream: {{url: \"{}\"}}\nusers:\n  bob: {{password: \"{}\"}}\nacl:\n  - match: {{}}\n    actions: [pull]\n",
        registry.url(),
        bcrypt("pw")
    );
    let gw = Gateway::start(&config).await;
    let r = get(&format!("{}/auth?scope=repository:x:pull", gw.url()), &[]).await;
    assert_eq!(r.status, 401);
    // The client hears no more than registry:2 would say; the reason is in the log.
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("authentication required"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_the_registry_would_not_route() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    let r = get(&format!("{base}/v1/_ping"), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body.as_ref(), b"404 page not found\n");
    let r = get(&format!("{base}/v2/Foo/bar/tags/list"), &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"][0]["code"], "NAME_INVALID");
    let r = get(&format!("{base}/v2/a/../b/tags/list?n=1"), &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/v2/b/tags/list?n=1"));
    let r = get(&format!("{base}/v2/foo/tags/list/"), &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/v2/foo/tags/list"));
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_bring_clients_back_through_regate() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    let t = admin_token(&base, "library/app").await;
    let r = http(
        Method::POST,
        &format!("{base}/v2/library/app/blobs/uploads/"),
        &[
            ("authorization", &format!("Bearer {t}")),
            // A client must not steer the registry's idea of scheme and host.
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "host=evil.example;proto=https"),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 202);
    let location = r.header("location").unwrap();
    assert!(
        location.starts_with(&format!(
            "http://{}/v2/library/app/blobs/uploads/",
            seed.gateway.host()
        )),
        "{location}"
    );
    assert!(location.contains("_state="));

    // Finish the upload through the Location, as a client does.
    let data = b"hello blob".to_vec();
    let digest = format!("sha256:{}", sha256_hex(&data));
    let r = http(
        Method::PUT,
        &format!("{location}&digest={digest}"),
        &[
            ("authorization", &format!("Bearer {t}")),
            ("content-type", "application/octet-stream"),
        ],
        data.clone(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let r = get(
        &format!("{base}/v2/library/app/blobs/{digest}"),
        &[("authorization", &format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref(), data.as_slice());
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_a_quick_503() {
    let mut registry = Registry::start(None);
    let url = registry.url();
    registry.kill();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&seed_config(&url, &dir.path().join("data"))).await;
    let base = gw.url();
    let t = token(&base, Some(("admin", "admin-pw")), &[]).await;
    let started = Instant::now();
    let r = get(
        &format!("{base}/v2/"),
        &[("authorization", &format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["errors"][0]["code"], "UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = get(&format!("{base}/readyz"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(get(&format!("{base}/healthz"), &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mount_source_the_caller_cannot_read_becomes_a_plain_upload() {
    let registry = Registry::start(None);
    let config = format!(
        "server: {{addr: \"127.0.0.1:0\"}}\nupstream: {{url: \"{}\"}}\nusers:\n  bob: {{password: \"{}\"}}\nacl:\n  - match: {{account: bob, name: \"bob/*\"}}\n    actions: [\"*\"]\n",
        registry.url(),
        bcrypt("pw")
    );
    let gw = Gateway::start(&config).await;
    let base = gw.url();
    let t = token(
        &base,
        Some(("bob", "pw")),
        &["repository:bob/app:pull,push", "repository:secret/app:pull"],
    )
    .await;
    let r = http(
        Method::POST,
        &format!("{base}/v2/bob/app/blobs/uploads/?mount={DIGEST}&from=secret/app"),
        &[("authorization", &format!("Bearer {t}"))],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 202, "an upload session, not a mount");
    assert!(r
        .header("location")
        .unwrap()
        .contains("/v2/bob/app/blobs/uploads/"));
    // Without push on the target it is still refused.
    let r = http(
        Method::POST,
        &format!("{base}/v2/secret/app/blobs/uploads/?mount={DIGEST}&from=bob/app"),
        &[("authorization", &format!("Bearer {t}"))],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(!registry.has_repository("secret/app"));
}

#[tokio::test(flavor = "multi_thread")]
async fn password_guessing_is_slow_and_blind() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    let auth_url = format!("{base}/auth?service=Docker%20registry");
    let try_login = |pw: &str| {
        let url = auth_url.clone();
        let credential = basic("alice", pw);
        async move { get(&url, &[("authorization", &credential)]).await }
    };
    let metric = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap()
            .parse()
            .unwrap()
    };

    // An unknown user costs a bcrypt check like a wrong password does.
    let m = String::from_utf8_lossy(&get(&format!("{base}/metrics"), &[]).await.body).into_owned();
    let before = metric(&m, "regate_credential_cache_misses_total");
    let r = get(&auth_url, &[("authorization", &basic("no-such-user", "x"))]).await;
    assert_eq!(r.status, 401);
    let m = String::from_utf8_lossy(&get(&format!("{base}/metrics"), &[]).await.body).into_owned();
    assert_eq!(
        metric(&m, "regate_credential_cache_misses_total"),
        before + 1
    );

    // One refused password sent again and again (a client retrying, a CI job with a stale
    // secret) is one guess, not ten: it does not lock the account's owner out.
    for _ in 0..10 {
        assert_eq!(try_login("stale").await.status, 401);
    }
    // Five typos are fine; then each further guess locks the account for a doubling time.
    for i in 0..5 {
        assert_eq!(try_login(&format!("wrong-{i}")).await.status, 401);
    }
    let r = try_login("wrong").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["errors"][0]["code"], "TOOMANYREQUESTS");
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        try_login("alice-pw").await.status,
        429,
        "even the right password waits"
    );
    // Other accounts are not locked by alice's guesser.
    assert_eq!(
        get(&auth_url, &[("authorization", &basic("admin", "admin-pw"))])
            .await
            .status,
        200
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        try_login("alice-pw").await.status,
        200,
        "a right password after the lock works"
    );
    assert_eq!(try_login("wrong").await.status, 401, "and clears the count");
    let m = String::from_utf8_lossy(&get(&format!("{base}/metrics"), &[]).await.body).into_owned();
    assert!(metric(&m, "regate_throttled_total") >= 2);
}
