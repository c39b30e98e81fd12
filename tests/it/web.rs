//! The web pages' frame over raw HTTP: sign-in through the same throttled path as `/auth`,
//! the session cookie, CSRF on every form that changes state, sign-out ending the session
//! in the store, the headers every page carries, and `server.path_prefix`. (The pages
//! themselves are driven in a real browser by the UI tests.)

use crate::common::*;
use hyper::Method;

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const HTML: (&str, &str) = ("accept", "text/html");

fn cookie_of(resp: &Resp) -> String {
    let set = resp.header("set-cookie").expect("a session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    set.split(';').next().unwrap().to_owned()
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..at + 43].to_owned()
}

async fn sign_in(base: &str, user: &str, password: &str) -> Resp {
    let body = format!("username={user}&password={password}&next=%2F");
    http(
        Method::POST,
        &format!("{base}/ui/login"),
        &[FORM],
        body.into_bytes(),
    )
    .await
}

#[tokio::test]
async fn sign_in_session_csrf_and_sign_out() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();

    // A browser at `/` is sent to sign in; a load balancer still gets registry:2's `{}`.
    let resp = get(&format!("{base}/"), &[HTML]).await;
    assert_eq!(resp.status, 303);
    assert_eq!(resp.header("location"), Some("/ui/login"));
    let lb = get(&format!("{base}/"), &[]).await;
    assert_eq!((lb.status.as_u16(), &lb.body[..]), (200, &b"{}"[..]));

    let form = get(&format!("{base}/ui/login"), &[HTML]).await;
    assert_eq!(form.status, 200);
    let csp = form.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(form.header("x-frame-options"), Some("DENY"));
    assert_eq!(form.header("cache-control"), Some("no-store"));
    let text = String::from_utf8_lossy(&form.body);
    assert!(
        text.contains("<label for=\"password\">Password</label>"),
        "{text}"
    );
    assert!(!text.contains("<script>"), "no inline script");

    // A wrong password: the form again, a 401, no cookie.
    let wrong = sign_in(&base, "alice", "nope").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    assert!(String::from_utf8_lossy(&wrong.body).contains("not right"));

    let ok = sign_in(&base, "alice", "alice-pw").await;
    assert_eq!(ok.status, 303, "{}", String::from_utf8_lossy(&ok.body));
    assert_eq!(ok.header("location"), Some("/"));
    let cookie = cookie_of(&ok);
    let home = get(&format!("{base}/"), &[HTML, ("cookie", &cookie)]).await;
    assert_eq!(home.status, 200);
    let page = String::from_utf8_lossy(&home.body).into_owned();
    assert!(
        page.contains("Signed in as <strong>alice</strong>"),
        "{page}"
    );

    // Signing out needs the session's CSRF token and a same-site request.
    let out = format!("{base}/ui/logout");
    let forged = http(
        Method::POST,
        &out,
        &[FORM, ("cookie", &cookie)],
        b"csrf=forged".to_vec(),
    )
    .await;
    assert_eq!(forged.status, 403);
    let csrf = csrf_of(&page);
    let body = format!("csrf={csrf}").into_bytes();
    let cross = http(
        Method::POST,
        &out,
        &[
            FORM,
            ("cookie", &cookie),
            ("origin", "https://evil.example"),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(cross.status, 403);
    // Still signed in after both refusals.
    let still = get(&format!("{base}/"), &[HTML, ("cookie", &cookie)]).await;
    assert_eq!(still.status, 200);
    let done = http(Method::POST, &out, &[FORM, ("cookie", &cookie)], body).await;
    assert_eq!(done.status, 303);
    assert!(done.header("set-cookie").unwrap().contains("Max-Age=0"));
    // The session is gone from the store: the old cookie signs in nobody.
    let after = get(&format!("{base}/"), &[HTML, ("cookie", &cookie)]).await;
    assert_eq!(after.status, 303);

    // A forged cookie, an unknown page, a robot.
    let fake = "regate_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(
        get(&format!("{base}/"), &[HTML, ("cookie", fake)])
            .await
            .status,
        303
    );
    let missing = get(&format!("{base}/ui/nothing-here"), &[HTML]).await;
    assert_eq!(missing.status, 404);
    assert!(String::from_utf8_lossy(&missing.body).contains("There is no such page."));
}

#[tokio::test]
async fn pages_and_the_token_endpoint_under_a_path_prefix() {
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let config = seed_config(&registry.url(), &dir.path().join("data"))
        .replace("server:\n", "server:\n  path_prefix: /registry\n");
    assert!(config.contains("path_prefix"));
    let gateway = Gateway::start_in(dir, &config).await;
    let base = gateway.url();

    // docker_auth's routes move under the prefix; the registry API stays at /v2/.
    let token = get(
        &format!("{base}/registry/auth?service=Docker+registry"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(token.status, 200);
    assert_eq!(get(&format!("{base}/auth"), &[]).await.status, 404);
    let challenge = get(&format!("{base}/v2/"), &[]).await;
    assert_eq!(challenge.status, 401);
    let realm = challenge.header("www-authenticate").unwrap();
    assert!(realm.contains("/registry/auth\""), "{realm}");

    let home = get(&format!("{base}/registry/"), &[HTML]).await;
    assert_eq!(home.status, 303);
    assert_eq!(home.header("location"), Some("/registry/ui/login"));
    let ok = sign_in(&format!("{base}/registry"), "alice", "alice-pw").await;
    assert_eq!(ok.status, 303);
    assert_eq!(ok.header("location"), Some("/registry/"));
    assert!(ok.header("set-cookie").unwrap().contains("Path=/registry"));
    let css = get(&format!("{base}/registry/static/app.css"), &[]).await;
    assert_eq!(css.status, 200);
    assert!(css.header("etag").is_some());
}
