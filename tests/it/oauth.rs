//! The OAuth2 side of the token endpoint, over raw HTTP against regate in front of Debian's
//! docker-registry: `POST /auth` with every grant and error, offline access and refresh
//! tokens (issued, reused, refused as access tokens, and dead after a password change or a
//! user's removal in a hot-reloaded config), and robot accounts (their own ACL, their
//! expiry, pushing with skopeo).

use std::time::{Duration, SystemTime};

use crate::common::*;
use hyper::Method;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

fn text(r: &Resp) -> String {
    format!("{} {}", r.status, String::from_utf8_lossy(&r.body))
}

/// `POST /auth` with this exact body.
async fn post_raw(base: &str, body: &str, headers: &[(&str, &str)]) -> Resp {
    let mut all = vec![FORM];
    all.extend_from_slice(headers);
    http(
        Method::POST,
        &format!("{base}/auth"),
        &all,
        body.as_bytes().to_vec(),
    )
    .await
}

/// `POST /auth` with these fields, form-encoded.
async fn post_form(base: &str, fields: &[(&str, &str)]) -> Resp {
    post_raw(base, &encode(fields), &[]).await
}

fn encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The OAuth2 error of a 400 answer.
fn oauth_error(r: &Resp) -> String {
    assert_eq!(r.status, 400, "{}", text(r));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert!(
        body["error_description"].is_string(),
        "an error_description: {body}"
    );
    body["error"].as_str().expect("an `error`").to_owned()
}

/// The `access` claim of a token as `type:name:actions` strings.
fn access(token: &str) -> Vec<String> {
    claims(token)["access"]
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

/// A GET token request; the whole response.
async fn get_token(base: &str, query: &str, auth: Option<&str>) -> Resp {
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
    get(&format!("{base}/auth?{query}"), &headers).await
}

/// Waits until the watcher has picked up the file (it polls every second).
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..60 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn status_of_basic(base: &str, user: &str, pw: &str) -> u16 {
    get_token(base, "service=Docker%20registry", Some(&basic(user, pw)))
        .await
        .status
        .as_u16()
}

/// A refresh token for `user` from `POST access_type=offline`.
async fn offline_login(base: &str, user: &str, pw: &str) -> String {
    let r = post_form(
        base,
        &[
            ("grant_type", "password"),
            ("username", user),
            ("password", pw),
            ("service", SERVICE),
            ("client_id", "regate-test"),
            ("access_type", "offline"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    r.json()["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a refresh_token: {}", text(&r)))
        .to_owned()
}

async fn refresh_grant(base: &str, refresh: &str, scope: &str) -> Resp {
    post_form(
        base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("service", SERVICE),
            ("client_id", "regate-test"),
            ("scope", scope),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn password_grant_with_every_form_of_scope() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    let wanted = "repository:alice/app:pull,push repository:library/app:pull,push";
    // alice owns alice/*, and may only pull elsewhere: the denied push is left out.
    let granted = "repository:alice/app:pull,push repository:library/app:pull";

    // The scope space-joined in one field, as OAuth2 clients (containerd) send it.
    let r = post_form(
        &base,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-pw"),
            ("service", SERVICE),
            ("client_id", "regate-test"),
            ("scope", wanted),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    let body = r.json();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(body["token"], token, "token and access_token are the same");
    assert_eq!(body["expires_in"], 900);
    assert!(body["issued_at"].is_string(), "{body}");
    assert_eq!(body["scope"], granted);
    assert!(body.get("refresh_token").is_none(), "not asked: {body}");
    let c = claims(token);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], SERVICE);
    assert_eq!(
        access(token),
        [
            "repository:alice/app:pull,push",
            "repository:library/app:pull"
        ]
    );

    // The same with `+` for the space, as HTML forms encode it.
    let r = post_raw(
        &base,
        "grant_type=password&username=alice&password=alice-pw&service=Docker+registry&scope=repository%3Aalice%2Fapp%3Apull%2Cpush+repository%3Alibrary%2Fapp%3Apull%2Cpush",
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["scope"], granted);

    // Repeated `scope` fields, as docker sends them; and the password in Basic
    // credentials instead of the form.
    let r = post_raw(
        &base,
        &encode(&[
            ("grant_type", "password"),
            ("service", SERVICE),
            ("scope", "repository:alice/app:pull,push"),
            ("scope", "repository:library/app:pull,push"),
        ]),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let body = r.json();
    assert_eq!(body["scope"], granted);
    assert_eq!(claims(body["token"].as_str().unwrap())["sub"], "alice");

    // No scope: a token for /v2/ only, and an empty `scope`.
    let r = post_form(
        &base,
        &[
            ("grant_type", "password"),
            ("username", "admin"),
            ("password", "admin-pw"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["scope"], "");
    // A user the ACL gives nothing: 200 all the same, nothing granted.
    let r = post_form(
        &base,
        &[
            ("grant_type", "password"),
            ("username", "test"),
            ("password", "test-pw"),
            ("scope", "repository:library/app:pull"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["scope"], "");
    assert_eq!(
        access(r.json()["token"].as_str().unwrap()),
        ["repository:library/app:"]
    );

    // The token works on the registry route it covers.
    let r = get(
        &format!("{base}/v2/alice/app/tags/list"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(r.status, 404, "the registry answers: {}", text(&r));
    assert!(String::from_utf8_lossy(&r.body).contains("NAME_UNKNOWN"));

    // GET answers carry no `scope` (docker's token response has none).
    let r = get_token(
        &base,
        "service=Docker%20registry&scope=repository:alice/app:pull",
        Some(&basic("alice", "alice-pw")),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.json().get("scope").is_none(), "{}", text(&r));

    // A wrong password, on POST: refused, and never a 405 (containerd would not fall back).
    let r = post_form(
        &base,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "wrong"),
            ("scope", "repository:alice/app:pull"),
        ],
    )
    .await;
    assert_eq!(r.status, 401, "{}", text(&r));
    assert!(
        String::from_utf8_lossy(&r.body).contains("incorrect username or password"),
        "{}",
        text(&r)
    );
    // An unknown user likewise.
    let r = post_form(
        &base,
        &[
            ("grant_type", "password"),
            ("username", "nobody"),
            ("password", "alice-pw"),
        ],
    )
    .await;
    assert_eq!(r.status, 401, "{}", text(&r));

    // Requests the endpoint refuses before authenticating anyone.
    let r = post_form(&base, &[("grant_type", "password")]).await;
    assert_eq!(oauth_error(&r), "invalid_request");
    let r = post_form(
        &base,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-pw"),
            ("service", "elsewhere"),
        ],
    )
    .await;
    assert_eq!(r.status, 400, "another service: {}", text(&r));
    let r = post_form(
        &base,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-pw"),
            ("account", "admin"),
        ],
    )
    .await;
    assert_eq!(r.status, 400, "account is not the user: {}", text(&r));
    let r = post_form(
        &base,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-pw"),
            ("scope", "repository:foo"),
        ],
    )
    .await;
    assert_eq!(r.status, 400, "a malformed scope: {}", text(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_grants_get_400_not_405() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    for body in [
        encode(&[
            ("grant_type", "client_credentials"),
            ("client_id", "x"),
            ("client_secret", "y"),
        ]),
        encode(&[("grant_type", "authorization_code"), ("code", "abc")]),
        encode(&[("grant_type", "")]),
        // No grant_type at all (a GET-style request sent as POST), and no body.
        encode(&[("username", "alice"), ("password", "alice-pw")]),
        String::new(),
    ] {
        let r = post_raw(&base, &body, &[]).await;
        assert_eq!(oauth_error(&r), "unsupported_grant_type", "body {body:?}");
    }
    // Unsupported even with good Basic credentials.
    let r = post_raw(
        &base,
        "grant_type=implicit",
        &[("authorization", &basic("admin", "admin-pw"))],
    )
    .await;
    assert_eq!(oauth_error(&r), "unsupported_grant_type");
    // A refresh grant without its token.
    let r = post_form(&base, &[("grant_type", "refresh_token")]).await;
    assert_eq!(oauth_error(&r), "invalid_request");
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_access_issues_refresh_tokens_that_are_reused() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    let alice = basic("alice", "alice-pw");

    // GET: docker login's `offline_token=true`.
    let r = get_token(
        &base,
        "account=alice&client_id=docker&offline_token=true&service=Docker+registry",
        Some(&alice),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let from_get = r.json()["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a refresh_token: {}", text(&r)))
        .to_owned();
    // Without it, no refresh token; anonymous gets none even when asking.
    let r = get_token(&base, "service=Docker+registry", Some(&alice)).await;
    assert!(r.json().get("refresh_token").is_none(), "{}", text(&r));
    let r = get_token(&base, "service=Docker+registry&offline_token=true", None).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(r.json().get("refresh_token").is_none(), "{}", text(&r));

    // POST: OAuth2's `access_type=offline`; without it, none.
    let from_post = offline_login(&base, "alice", "alice-pw").await;
    let r = post_form(
        &base,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-pw"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.json().get("refresh_token").is_none(), "{}", text(&r));

    for refresh in [&from_get, &from_post] {
        // Not an access token: its audience is not the registry's service.
        let c = claims(refresh);
        assert_eq!(c["sub"], "alice");
        assert_ne!(c["aud"], SERVICE);
        assert!(c.get("access").is_none(), "{c}");
        let lifetime = c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap();
        assert!(lifetime > 900, "outlives the access tokens: {c}");

        // The refresh grant: a token for the asked scope, decided by the ACL.
        let r = refresh_grant(
            &base,
            refresh,
            "repository:alice/app:pull,push repository:library/app:push",
        )
        .await;
        assert_eq!(r.status, 200, "{}", text(&r));
        let body = r.json();
        assert_eq!(body["scope"], "repository:alice/app:pull,push");
        assert!(body.get("refresh_token").is_none(), "not asked: {body}");
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(claims(token)["sub"], "alice");
        assert_eq!(
            access(token),
            ["repository:alice/app:pull,push", "repository:library/app:"]
        );
        let r = get(
            &format!("{base}/v2/alice/app/tags/list"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(r.status, 404, "the registry answers: {}", text(&r));

        // Asked for offline access again, the same refresh token comes back.
        let r = post_form(
            &base,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("access_type", "offline"),
                ("client_id", "docker"),
                ("service", SERVICE),
                ("scope", "repository:alice/app:pull"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{}", text(&r));
        assert_eq!(r.json()["refresh_token"], refresh.as_str());
        assert_eq!(r.json()["scope"], "repository:alice/app:pull");

        // containerd's GET fallback for an identity token: Basic with an empty user.
        let r = get_token(
            &base,
            "service=Docker+registry&scope=repository:alice/app:pull",
            Some(&basic("", refresh)),
        )
        .await;
        assert_eq!(r.status, 200, "{}", text(&r));
        let token = r.json()["token"].as_str().unwrap().to_owned();
        assert_eq!(claims(&token)["sub"], "alice");
        assert_eq!(access(&token), ["repository:alice/app:pull"]);

        // Never an access token on registry routes.
        for path in ["/v2/", "/v2/alice/app/tags/list"] {
            let r = get(
                &format!("{base}{path}"),
                &[("authorization", &format!("Bearer {refresh}"))],
            )
            .await;
            assert_eq!(r.status, 401, "{path}: {}", text(&r));
            let challenge = r.header("www-authenticate").unwrap_or("");
            assert!(
                challenge.ends_with(r#"error="invalid_token""#),
                "{path}: {challenge}"
            );
        }
    }

    // Tokens that are no refresh token of ours: invalid_grant on POST, 401 on GET.
    let access_token = token(&base, Some(("alice", "alice-pw")), &[]).await;
    // The signature with one character in its middle changed.
    let sig_at = from_post.rfind('.').unwrap() + 20;
    let mut forged = from_post.clone();
    let was = &from_post[sig_at..sig_at + 1];
    forged.replace_range(sig_at..sig_at + 1, if was == "A" { "B" } else { "A" });
    let other = Seed::start().await;
    let foreign = offline_login(&other.gateway.url(), "alice", "alice-pw").await;
    for bad in [
        "garbage",
        "a.b.c",
        access_token.as_str(),
        forged.as_str(),
        foreign.as_str(),
    ] {
        let r = refresh_grant(&base, bad, "repository:alice/app:pull").await;
        assert_eq!(oauth_error(&r), "invalid_grant", "refresh token {bad:?}");
        if bad.contains('.') {
            let r = get_token(&base, "service=Docker+registry", Some(&basic("", bad))).await;
            assert_eq!(r.status, 401, "{bad:?}: {}", text(&r));
        }
    }
    // An access token is not a refresh token even on GET.
    let r = get_token(
        &base,
        "service=Docker+registry",
        Some(&basic("", &access_token)),
    )
    .await;
    assert_eq!(r.status, 401, "{}", text(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_tokens_die_with_a_password_change_or_the_user() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    let path = seed.gateway.dir.path().join("regate.yml");
    let original = std::fs::read_to_string(&path).unwrap();

    let alice_refresh = offline_login(&base, "alice", "alice-pw").await;
    let hussein_refresh = offline_login(&base, "hussein", "hussein-pw").await;
    for r in [&alice_refresh, &hussein_refresh] {
        let resp = refresh_grant(&base, r, "repository:library/app:pull").await;
        assert_eq!(resp.status, 200, "{}", text(&resp));
    }

    // alice gets a new password (hot reload).
    let old_hash = original
        .lines()
        .skip_while(|l| !l.contains("\"alice\":"))
        .nth(1)
        .and_then(|l| l.split('"').nth(1))
        .unwrap()
        .to_owned();
    assert!(old_hash.starts_with("$2"), "{old_hash}");
    let changed = original.replacen(&old_hash, &bcrypt("alice-new-pw"), 1);
    std::fs::write(&path, &changed).unwrap();
    assert!(
        eventually(async || status_of_basic(&base, "alice", "alice-pw").await == 401).await,
        "the old password stops working"
    );
    assert_eq!(status_of_basic(&base, "alice", "alice-new-pw").await, 200);

    let r = refresh_grant(&base, &alice_refresh, "repository:library/app:pull").await;
    assert_eq!(oauth_error(&r), "invalid_grant");
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("log in again"),
        "{}",
        text(&r)
    );
    let r = get_token(
        &base,
        "service=Docker+registry",
        Some(&basic("", &alice_refresh)),
    )
    .await;
    assert_eq!(r.status, 401, "{}", text(&r));
    // Others' refresh tokens are untouched; a new login gives a working one.
    let r = refresh_grant(&base, &hussein_refresh, "repository:library/app:pull").await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let alice_new = offline_login(&base, "alice", "alice-new-pw").await;
    let r = refresh_grant(&base, &alice_new, "repository:alice/app:pull").await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["scope"], "repository:alice/app:pull");

    // hussein is removed.
    let start = changed.find("  \"hussein\":\n").unwrap();
    let end = start + changed[start..].find("  \"alice\":\n").unwrap();
    let removed = format!("{}{}", &changed[..start], &changed[end..]);
    assert!(!removed.contains("hussein"), "{removed}");
    std::fs::write(&path, &removed).unwrap();
    assert!(
        eventually(async || status_of_basic(&base, "hussein", "hussein-pw").await == 401).await,
        "hussein is gone"
    );
    let r = refresh_grant(&base, &hussein_refresh, "repository:library/app:pull").await;
    assert_eq!(oauth_error(&r), "invalid_grant");
    // alice's new refresh token survives the reload.
    let r = refresh_grant(&base, &alice_new, "repository:alice/app:pull").await;
    assert_eq!(r.status, 200, "{}", text(&r));
}

/// The `robots:` section: `ci-builder` (pushes to team/*, pulls ${labels:team}/*),
/// `old-bot` (expired), `today-bot` (expires at the end of today, UTC) and
/// `yesterday-bot`.
fn robots_yaml() -> String {
    let today = time::OffsetDateTime::now_utc().date();
    let yesterday = today.previous_day().unwrap();
    let acl = "    acl:\n      - match: {name: \"team/*\"}\n        actions: [pull, push]\n";
    format!(
        r#"robots:
  ci-builder:
    secret: "{ci}"
    expires: "2099-12-31"
    labels: {{team: [ci]}}
    acl:
      - match: {{name: "team/*"}}
        actions: [pull, push]
      - match: {{name: "${{labels:team}}/*"}}
        actions: [pull]
  old-bot:
    secret: "{old}"
    expires: "2020-01-01"
{acl}  today-bot:
    secret: "{old}"
    expires: "{today}"
{acl}  yesterday-bot:
    secret: "{old}"
    expires: "{yesterday}"
{acl}"#,
        ci = bcrypt("ci-secret"),
        old = bcrypt("bot-secret"),
    )
}

/// The seed's config plus `extra` (top-level sections), regate in front of a registry.
async fn seed_with(extra: &str) -> Seed {
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let config = seed_config(&registry.url(), &dir.path().join("data")) + extra;
    let gateway = Gateway::start_in(dir, &config).await;
    Seed { registry, gateway }
}

#[tokio::test(flavor = "multi_thread")]
async fn robots_get_only_their_own_acl_and_expire() {
    let seed = seed_with(&robots_yaml()).await;
    let base = seed.gateway.url();
    let robot = basic("ci-builder", "ci-secret");

    // GET and POST alike; the global ACL (any account pulls anything, owns
    // ${account}/*) is not consulted for a robot.
    let r = get_token(
        &base,
        "service=Docker+registry&scope=repository:team/app:pull,push&scope=repository:ci/tools:pull,push&scope=repository:other/app:pull&scope=repository:ci-builder/app:pull,push",
        Some(&robot),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&token)["sub"], "ci-builder");
    assert_eq!(
        access(&token),
        [
            "repository:team/app:pull,push",
            "repository:ci/tools:pull",
            "repository:other/app:",
            "repository:ci-builder/app:",
        ]
    );
    let r = post_form(
        &base,
        &[
            ("grant_type", "password"),
            ("username", "ci-builder"),
            ("password", "ci-secret"),
            ("service", SERVICE),
            ("access_type", "offline"),
            (
                "scope",
                "repository:team/app:pull,push repository:other/app:pull",
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["scope"], "repository:team/app:pull,push");
    // A robot's refresh token works like a user's, with the robot's rules.
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let r = refresh_grant(
        &base,
        &refresh,
        "repository:team/app:push repository:library/app:pull",
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["scope"], "repository:team/app:push");

    // A wrong secret.
    let r = get_token(
        &base,
        "service=Docker+registry",
        Some(&basic("ci-builder", "wrong")),
    )
    .await;
    assert_eq!(r.status, 401, "{}", text(&r));

    // Expired: by date, by yesterday's date; today's date is still good (through the
    // end of the UTC day).
    for bot in ["old-bot", "yesterday-bot"] {
        for r in [
            get_token(
                &base,
                "service=Docker+registry&scope=repository:team/app:pull",
                Some(&basic(bot, "bot-secret")),
            )
            .await,
            post_form(
                &base,
                &[
                    ("grant_type", "password"),
                    ("username", bot),
                    ("password", "bot-secret"),
                    ("scope", "repository:team/app:pull"),
                ],
            )
            .await,
        ] {
            assert_eq!(r.status, 401, "{bot}: {}", text(&r));
            assert!(
                String::from_utf8_lossy(&r.body).contains("this robot account has expired"),
                "{bot}: {}",
                text(&r)
            );
        }
        // A wrong secret says nothing about the expiry.
        let r = get_token(&base, "service=Docker+registry", Some(&basic(bot, "nope"))).await;
        assert_eq!(r.status, 401);
        assert!(
            !String::from_utf8_lossy(&r.body).contains("expired"),
            "{bot}: {}",
            text(&r)
        );
    }
    assert_eq!(status_of_basic(&base, "today-bot", "bot-secret").await, 200);

    // Pushing with skopeo: within the ACL, and outside it.
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("image");
    oci_image(&image, 1, 41);
    let authfile = work.path().join("auth.json");
    let host = seed.gateway.host();
    let copy = |target: String, creds: &'static str| {
        let (authfile, image, host) = (authfile.clone(), image.clone(), host.clone());
        blocking(move || {
            skopeo(
                &authfile,
                &[
                    "copy",
                    "--dest-tls-verify=false",
                    "--dest-creds",
                    creds,
                    &format!("oci:{}:latest", image.display()),
                    &format!("docker://{host}/{target}"),
                ],
            )
        })
    };
    let (ok, out) = copy("team/app:v1".into(), "ci-builder:ci-secret").await;
    assert!(ok, "a robot pushes where its ACL allows: {out}");
    assert!(seed.registry.has_repository("team/app"));
    for target in ["other/app:v1", "ci/tools:v1", "ci-builder/app:v1"] {
        let (ok, out) = copy(target.into(), "ci-builder:ci-secret").await;
        assert!(!ok, "a robot must not push to {target}: {out}");
        let name = target.split(':').next().unwrap();
        assert!(!seed.registry.has_repository(name), "{target}");
    }
    let (ok, out) = copy("team/app:v2".into(), "old-bot:bot-secret").await;
    assert!(!ok, "an expired robot must not push: {out}");
    assert!(out.contains("expired"), "{out}");
    let (ok, out) = copy("team/app:v3".into(), "today-bot:bot-secret").await;
    assert!(ok, "today-bot is good through the day: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_robot_stops_working_when_it_expires() {
    let registry = Registry::start(None);
    let lifetime = Duration::from_secs(3);
    let ends = SystemTime::now() + lifetime;
    let rfc3339 = time::OffsetDateTime::from(ends)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let robots = format!(
        "robots:\n  brief-bot:\n    secret: \"{}\"\n    expires: \"{rfc3339}\"\n    acl:\n      - match: {{name: \"team/*\"}}\n        actions: [pull, push]\n",
        bcrypt("bot-secret")
    );
    let dir = tempfile::tempdir().unwrap();
    let config = seed_config(&registry.url(), &dir.path().join("data")) + robots.as_str();
    let gw = Gateway::start_in(dir, &config).await;
    let base = gw.url();

    let query = "service=Docker+registry&scope=repository:team/app:pull,push";
    let bot = basic("brief-bot", "bot-secret");
    let r = get_token(&base, &format!("{query}&offline_token=true"), Some(&bot)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let r = refresh_grant(&base, &refresh, "repository:team/app:pull").await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(
        SystemTime::now() < ends,
        "the test ran too slowly to see the robot alive"
    );

    if let Ok(left) = ends.duration_since(SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(200)).await;
    }
    // The password was verified and cached before; the cache must not outlive the robot.
    let r = get_token(&base, query, Some(&bot)).await;
    assert_eq!(r.status, 401, "{}", text(&r));
    assert!(
        String::from_utf8_lossy(&r.body).contains("this robot account has expired"),
        "{}",
        text(&r)
    );
    let r = post_form(
        &base,
        &[
            ("grant_type", "password"),
            ("username", "brief-bot"),
            ("password", "bot-secret"),
        ],
    )
    .await;
    assert_eq!(r.status, 401, "{}", text(&r));
    // Its refresh token is dead too: 401 on GET (containerd's fallback), and on POST
    // OAuth2's invalid_grant, as for any refresh token that is no longer good.
    let r = get_token(&base, query, Some(&basic("", &refresh))).await;
    assert_eq!(r.status, 401, "{}", text(&r));
    let r = refresh_grant(&base, &refresh, "repository:team/app:pull").await;
    assert_eq!(oauth_error(&r), "invalid_grant");
}
