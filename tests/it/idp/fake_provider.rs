//! What a broken or hostile provider sends, from the FAKE provider (`fake.rs`), and the
//! answers nobody should accept (replayed, forged, from another browser): each a page
//! that says so, and no credential.

use super::*;

/// A listener that takes connections and never answers: a provider that hangs.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (url, task)
}

/// A sign-in over plain HTTP, following the redirects with the browser's cookie: the
/// final page's status and text.
async fn raw_sign_in(site: &str) -> (u16, String) {
    let start = get(&format!("{site}/oidc_auth"), &[]).await;
    assert_eq!(start.status, 303);
    let cookie = start
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let to_provider = start.header("location").unwrap().to_owned();
    let back = get(&to_provider, &[]).await;
    let callback = back
        .header("location")
        .expect("the provider's redirect")
        .to_owned();
    let page = get(&callback, &[("cookie", &cookie)]).await;
    (
        page.status.as_u16(),
        String::from_utf8_lossy(&page.body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_answers_get_a_clear_page_and_no_credential() {
    setup();
    let shots = shots("bad_answers");
    let work = tempfile::tempdir().unwrap();
    let fake = fake::Fake::start().await;
    let (hole, _hole) = black_hole().await;
    let port = free_port("127.0.0.1");
    let site = format!("http://127.0.0.1:{port}");
    let config = format!(
        r#"server: {{addr: "127.0.0.1:{port}"}}
data_dir: "{data}"
upstream: {{url: "http://127.0.0.1:9"}}
oidc_auth:
  issuer: "{issuer}"
  redirect_url: "{site}/oidc_auth"
  client_id: {client}
  client_secret: {secret}
  http_timeout: 2
google_auth:
  client_id: google-client
  client_secret: google-secret
  issuer: "{hole}"
  http_timeout: 1
"#,
        data = work.path().join("data").display(),
        issuer = fake.url,
        client = fake::CLIENT,
        secret = fake::SECRET,
    );
    let gateway = Gateway::start(&config).await;
    let mode = |m: &str| json!({"goto": format!("{}/__mode?m={m}", fake.url)});
    let reason = |name: &str| {
        let mut v = vec![
            json!({"waitForSelector": "#reason"}),
            json!({"text": "#reason", "as": name}),
        ];
        v.extend(look(&shots, name));
        v
    };
    let bad_modes = [
        "wrong-aud",
        "wrong-iss",
        "expired",
        "unsigned",
        "bad-signature",
        "nonce",
        "unknown-kid",
        "deny",
        "hang",
    ];
    let parts = vec![
        // The control: the fake's good answer makes a password.
        vec![
            mode("good"),
            json!({"goto": format!("{site}/oidc_auth")}),
            json!({"waitForSelector": "#password-title"}),
            json!({"url": true, "as": "good-url"}),
        ],
        look(&shots, "0-good"),
    ];
    let run_steps = {
        let mut s = parts;
        // The same answer again (the browser loads the callback URL once more).
        s.push(vec![json!({"evaluate": "location.reload()"})]);
        s.push(reason("replayed"));
        for m in bad_modes {
            s.push(vec![mode(m), json!({"goto": format!("{site}/oidc_auth")})]);
            s.push(reason(m));
        }
        s.push(vec![
            json!({"goto": format!("{site}/oidc_auth?code=abc&state=forged")}),
        ]);
        s.push(reason("forged-state"));
        s.push(vec![json!({"goto": format!("{site}/oidc_auth?code=abc")})]);
        s.push(reason("no-state"));
        // Begun in this browser, finished in another (no cookie).
        s.push(vec![
            mode("hold"),
            json!({"goto": format!("{site}/oidc_auth")}),
            json!({"waitForSelector": "#back"}),
            json!({"clearCookies": true}),
            json!({"click": "#back"}),
        ]);
        s.push(reason("other-browser"));
        // A provider that takes the connection and never answers.
        s.push(vec![json!({"goto": format!("{site}/google_auth")})]);
        s.push(reason("unreachable"));
        steps(s)
    };
    let run = browser(&shots, "bad-answers", run_steps).await;
    let said = |name: &str| text(&run, name).to_owned();
    let expect = [
        ("replayed", "This sign-in was finished already"),
        ("wrong-aud", "it is meant for another application"),
        (
            "wrong-iss",
            "it was issued by someone else than the configured issuer",
        ),
        ("expired", "it has expired"),
        ("unsigned", "it is not signed"),
        (
            "bad-signature",
            "its signature does not match the provider's key",
        ),
        (
            "nonce",
            "it does not answer this sign-in (the nonce differs)",
        ),
        (
            "unknown-kid",
            "it is signed with a key the provider does not publish",
        ),
        (
            "deny",
            "did not sign you in (access_denied: The user said no)",
        ),
        ("hang", "did not answer within 2 s (http_timeout)"),
        ("forged-state", "This sign-in is not one begun here"),
        ("no-state", "carries no `state`"),
        ("other-browser", "This sign-in was begun in another browser"),
        ("unreachable", "did not answer within 1 s (http_timeout)"),
    ];
    for (name, words) in expect {
        let reason = said(name);
        assert!(reason.contains(words), "{name}: {reason}");
    }
    for name in ["wrong-aud", "unsigned", "nonce", "deny"] {
        assert!(
            said(name).contains("No password was made"),
            "{name}: {}",
            said(name)
        );
    }
    // Only the answers that passed the state and browser checks reached the token
    // endpoint: the good one and each bad mode but `deny`.
    assert_eq!(fake.token_requests(), 1 + bad_modes.len() as u32 - 1);

    // The provider refuses a code used already, under a fresh state of this browser.
    let good_url = said("good-url");
    let old_code = good_url
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let run = browser(
        &shots,
        "code-replayed",
        steps(vec![
            vec![
                mode("hold"),
                json!({"goto": format!("{site}/oidc_auth")}),
                json!({"waitForSelector": "#back"}),
                json!({"evaluate": format!(
                    "location.href = document.getElementById('back').href.replace(/([?&])code=[^&]*/, '$1code={old_code}')"
                )}),
            ],
            reason("code-replayed"),
        ]),
    )
    .await;
    let replayed = text(&run, "code-replayed");
    assert!(
        replayed.contains("refused the sign-in") && replayed.contains("invalid_grant"),
        "{replayed}"
    );

    // The provider rotates its key: regate reads its keys again (once the last read is a
    // few seconds old) and the sign-in works.
    fake_mode(&fake, "rotated").await;
    let fetches = fake.jwks_fetches();
    eventually("a sign-in with the provider's new key", POLL, || async {
        match raw_sign_in(&site).await {
            (200, page) if page.contains("password-title") => Ok(()),
            (status, page) => Err(format!("{status}: {}", page.len())),
        }
    })
    .await;
    assert!(fake.jwks_fetches() > fetches, "the keys were read again");
    // A stream of unknown keys reads the keys at most once per 10 s.
    fake_mode(&fake, "unknown-kid").await;
    let (before, started) = (fake.jwks_fetches(), std::time::Instant::now());
    for _ in 0..5 {
        let (status, page) = raw_sign_in(&site).await;
        assert_eq!(status, 502);
        assert!(page.contains("does not publish"), "{page}");
    }
    let windows = started.elapsed().as_secs() / 10 + 1;
    assert!(
        u64::from(fake.jwks_fetches() - before) <= windows,
        "{} reads for 5 unknown keys in {windows} window(s)",
        fake.jwks_fetches() - before
    );

    // Two passwords, for the two good answers; none for anything else.
    let made = credentials(&gateway.server, "alice@example.com").await;
    assert_eq!(made.len(), 2, "{made:?}");
    gateway.server.shutdown().await;
}

async fn fake_mode(fake: &fake::Fake, m: &str) {
    let resp = get(&format!("{}/__mode?m={m}", fake.url), &[]).await;
    assert_eq!(resp.status, 200);
}
