//! Signing in with an identity provider, for real: a real OpenID Provider (`oidc-provider`,
//! OpenID Certified, `tests/idp/provider.mjs`) and Debian's Chromium driving regate's pages
//! and the provider's login form; `docker login`, push and pull with the password the page
//! shows, through regate in front of the real registry; GitHub and GitLab through a
//! STAND-IN of their OAuth and REST APIs (`tests/idp/standin.mjs`: they cannot be reached
//! from here); a FAKE provider that answers wrongly on purpose (`tests/idp/fake.rs`) for
//! the id_tokens a real one never signs. Nothing here asserts how long anything takes:
//! where a state must come (a check at the provider), it is polled for.
//!
//! Screenshots of every page go to `target/tmp/idp-screenshots/TEST/`.

mod docker;
mod fake;
mod fake_provider;
mod harness;
mod standin;

use std::time::Duration;

use crate::common::*;
use harness::*;
use hyper::Method;
use serde_json::{json, Value};

const POLL: Duration = Duration::from_secs(120);

fn text<'a>(run: &'a Value, name: &str) -> &'a str {
    run["results"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no result `{name}`: {run:#}"))
}

/// Steps that take a screenshot and check accessibility (axe: nothing serious or
/// critical) of the page shown.
fn look(shots: &std::path::Path, name: &str) -> Vec<Value> {
    vec![
        json!({"axe": true, "as": format!("a11y-{name}"), "failOn": ["serious", "critical"]}),
        json!({"screenshot": shots.join(format!("{name}.png")), "fullPage": true}),
    ]
}

fn steps(parts: Vec<Vec<Value>>) -> Value {
    Value::Array(parts.into_iter().flatten().collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_in_a_browser_then_docker_push_and_pull_and_revalidation() {
    setup();
    ensure_hosts_entry(TLS_HOST);
    let shots = shots("oidc_docker");
    let work = tempfile::tempdir().unwrap();
    let (registry, dockerd) = tokio::join!(
        blocking(|| Registry::start(None)),
        blocking(docker::Dockerd::start)
    );
    let dockerd = dockerd.unwrap_or_else(|e| panic!("{e}"));
    let port = free_port("::1");
    let host = format!("{TLS_HOST}:{port}");
    let site = format!("https://{host}");
    // Access tokens live 10 s: regate checks again after 5 s.
    let provider = NodeServer::start(
        "provider.mjs",
        &json!({
            "accessTokenTTL": 10,
            "clients": [{"client_id": "regate", "client_secret": "oidc-secret",
                         "redirect_uris": [format!("{site}/oidc_auth")]}],
            "accounts": [{"id": "alice", "password": "alice-pw", "email": "alice@example.com",
                          "email_verified": true, "groups": ["devs"], "name": "Alice"}],
        }),
        work.path(),
    );
    let certs = work.path().join("certs");
    cert_init(&certs, &[TLS_HOST, "::1"]);
    let secret_file = work.path().join("oidc.secret");
    std::fs::write(&secret_file, "oidc-secret\n").unwrap();
    let tokens = work.path().join("state").join("tokens.json");
    let config = format!(
        r#"server:
  addr: "[::1]:{port}"
  certificate: "{cert}"
  key: "{key}"
data_dir: "{data}"
upstream:
  url: "{upstream}"
acl:
  - match: {{labels: {{groups: "devs"}}, name: "devs/*"}}
    actions: ["*"]
oidc_auth:
  issuer: "{issuer}"
  redirect_url: "{site}/oidc_auth"
  client_id: regate
  client_secret_file: "{secret}"
  labels_claims: [groups]
  scopes: [openid, email, groups]
  level_token_db:
    path: "{tokens}"
"#,
        cert = certs.join("server.crt").display(),
        key = certs.join("server.key").display(),
        data = work.path().join("data").display(),
        upstream = registry.url(),
        issuer = provider.url,
        secret = secret_file.display(),
        tokens = tokens.display(),
    );
    let gateway = Gateway::start(&config).await;

    // The start page sends a browser to sign in, which offers the provider; its login
    // form; back at regate, the password page.
    let run = browser(
        &shots,
        "sign-in",
        steps(vec![
            vec![
                json!({"goto": format!("{site}/")}),
                json!({"waitForSelector": "text=Sign in with"}),
            ],
            look(&shots, "1-sign-in-page"),
            vec![
                json!({"click": "text=Sign in with"}),
                json!({"waitForSelector": "#username"}),
                json!({"screenshot": shots.join("2-provider-login.png")}),
            ],
            provider_login("alice", "alice-pw"),
            vec![
                json!({"waitForSelector": "#password-title"}),
                json!({"attribute": "#password", "name": "value", "as": "password"}),
                json!({"text": "#account", "as": "account"}),
                json!({"text": "table.commands", "as": "commands"}),
                json!({"text": "main", "as": "page"}),
            ],
            look(&shots, "3-password-page"),
        ]),
    )
    .await;
    let password = text(&run, "password").to_owned();
    let account = text(&run, "account").to_owned();
    assert_eq!(account, "alice@example.com");
    assert!(password.starts_with("rgt_"), "{password}");
    let commands = text(&run, "commands");
    for tool in ["docker", "podman", "nerdctl"] {
        assert!(
            commands.contains(&format!("{tool} login -u alice@example.com {host}")),
            "{commands}"
        );
    }
    assert!(
        text(&run, "page").contains("groups: devs"),
        "the labels the ACL sees"
    );
    // The authorization request carried state, nonce and PKCE.
    let to_provider = run["navigations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|u| u.starts_with(&format!("{}/auth?", provider.url)))
        .expect("the authorization request");
    for part in [
        "state=",
        "nonce=",
        "code_challenge=",
        "code_challenge_method=S256",
    ] {
        assert!(to_provider.contains(part), "{to_provider}");
    }

    // docker login with it, push and pull through regate in front of the real registry.
    let _trusted = docker::TrustedCa::place(&host, &certs.join("ca.crt"));
    let cli = dockerd.client(work.path().join("docker-config"));
    let (ok, out) = cli.login(&host, &account, &password).await;
    assert!(ok, "docker login with the page's password: {out}");
    let image = format!("{host}/devs/app:v1");
    let id = cli
        .import(
            work.path(),
            "hello.txt",
            b"signed in with OpenID Connect\n",
            &image,
        )
        .await;
    let (ok, out) = cli.docker(&["push", &image]).await;
    assert!(ok, "docker push: {out}");
    assert!(registry.has_repository("devs/app"));
    let (ok, out) = cli.docker(&["rmi", &image]).await;
    assert!(ok, "{out}");
    let (ok, out) = cli.docker(&["pull", &image]).await;
    assert!(ok, "docker pull: {out}");
    assert_eq!(cli.image_id(&image).await.as_deref(), Some(id.as_str()));

    // The token DB is the configured file, private, with no password in it.
    use std::os::unix::fs::PermissionsExt;
    let kept = std::fs::read_to_string(&tokens).unwrap();
    assert_eq!(
        std::fs::metadata(&tokens).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!kept.contains(&password) && !kept.contains("oidc-secret"));
    assert_eq!(
        credentials(&gateway.server, &account).await.len(),
        1,
        "one credential for one sign-in"
    );

    // alice leaves `devs` at the provider: once regate checks again (refresh grant and
    // UserInfo), her label is gone and a push to devs/ is denied.
    provider
        .admin(
            Method::POST,
            "/__test/accounts",
            Some(json!({"id": "alice", "groups": ["qa"]})),
        )
        .await;
    let v2 = format!("{host}/devs/app:v2");
    let (ok, out) = cli.docker(&["tag", &image, &v2]).await;
    assert!(ok, "{out}");
    eventually(
        "a push to devs/ denied once alice left devs",
        POLL,
        || async {
            match cli.docker(&["push", &v2]).await {
                (false, out) if out.contains("denied") => Ok(()),
                (_, out) => Err(out),
            }
        },
    )
    .await;

    // The provider revokes her grant: the next login after the access token ran out fails.
    provider
        .admin(Method::POST, "/__test/revoke?account=alice", None)
        .await;
    eventually(
        "docker login refused once the provider revoked alice",
        POLL,
        || async {
            match cli.login(&host, &account, &password).await {
                (false, out) if out.contains("401") || out.contains("nauthorized") => Ok(()),
                (_, out) => Err(out),
            }
        },
    )
    .await;

    gateway.server.shutdown().await;
    drop(dockerd);
}

#[tokio::test(flavor = "multi_thread")]
async fn google_admits_only_its_workspace_domain() {
    setup();
    let shots = shots("google");
    let work = tempfile::tempdir().unwrap();
    let port = free_port("127.0.0.1");
    let site = format!("http://127.0.0.1:{port}");
    // provider.mjs stands in for Google's issuer (hd claim, verified e-mail addresses).
    let provider = NodeServer::start(
        "provider.mjs",
        &json!({
            "clients": [{"client_id": "google-client", "client_secret": "google-secret",
                         "redirect_uris": [format!("{site}/google_auth")]}],
            "accounts": [
                {"id": "alice", "password": "alice-pw", "email": "alice@example.com",
                 "email_verified": true, "hd": "example.com"},
                // An address at the domain, but no Workspace account of it.
                {"id": "mallory", "password": "mallory-pw", "email": "mallory@example.com",
                 "email_verified": true},
            ],
        }),
        work.path(),
    );
    let config = format!(
        r#"server: {{addr: "127.0.0.1:{port}"}}
data_dir: "{data}"
upstream: {{url: "http://127.0.0.1:9"}}
acl:
  - match: {{account: "/.+/"}}
    actions: ["pull"]
google_auth:
  domain: example.com
  client_id: google-client
  client_secret: google-secret
  issuer: "{issuer}"
"#,
        data = work.path().join("data").display(),
        issuer = provider.url,
    );
    let gateway = Gateway::start(&config).await;

    let alice = browser(
        &shots,
        "alice",
        steps(vec![
            vec![json!({"goto": format!("{site}/google_auth")})],
            provider_login("alice", "alice-pw"),
            vec![
                json!({"waitForSelector": "#password-title"}),
                json!({"attribute": "#password", "name": "value", "as": "password"}),
                json!({"text": "#account", "as": "account"}),
            ],
            look(&shots, "1-alice-password-page"),
        ]),
    )
    .await;
    assert_eq!(text(&alice, "account"), "alice@example.com");
    let to_google = alice["navigations"][1].as_str().unwrap();
    for part in [
        "access_type=offline",
        "hd=example.com",
        "nonce=",
        "code_challenge=",
    ] {
        assert!(to_google.contains(part), "{to_google}");
    }
    let password = text(&alice, "password");
    let (status, actions, body) = auth(
        &site,
        "alice@example.com",
        password,
        "repository:x/app:pull",
    )
    .await;
    assert_eq!((status, actions), (200, vec!["pull".to_owned()]), "{body}");

    let mallory = browser(
        &shots,
        "mallory",
        steps(vec![
            vec![json!({"goto": format!("{site}/google_auth")})],
            provider_login("mallory", "mallory-pw"),
            vec![
                json!({"waitForSelector": "#reason"}),
                json!({"text": "#reason", "as": "reason"}),
            ],
            look(&shots, "2-mallory-refused"),
        ]),
    )
    .await;
    let reason = text(&mallory, "reason");
    assert!(
        reason.contains("only accounts of the Google Workspace domain example.com may sign in here, and mallory@example.com is not a Google Workspace account"),
        "{reason}"
    );
    assert!(reason.contains("No password was made"), "{reason}");
    assert!(credentials(&gateway.server, "mallory@example.com")
        .await
        .is_empty());
    assert_eq!(
        credentials(&gateway.server, "alice@example.com").await[0].1,
        "google_auth"
    );
    gateway.server.shutdown().await;
}

/// provider.mjs with alice, for a regate on `site` signing in at `/oidc_auth`.
fn oidc_provider(site: &str, dir: &std::path::Path, extra: Value) -> NodeServer {
    let mut config = json!({
        "clients": [{"client_id": "regate", "client_secret": "oidc-secret",
                     "redirect_uris": [format!("{site}/oidc_auth")]}],
        "accounts": [{"id": "alice", "password": "alice-pw", "email": "alice@example.com",
                      "email_verified": true, "groups": ["devs"]}],
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    NodeServer::start("provider.mjs", &config, dir)
}

fn oidc_config(port: u16, data: &std::path::Path, issuer: &str, secret: &str) -> String {
    format!(
        r#"server: {{addr: "127.0.0.1:{port}"}}
data_dir: "{data}"
upstream: {{url: "http://127.0.0.1:9"}}
acl:
  - match: {{account: "/.+/"}}
    actions: ["pull"]
oidc_auth:
  issuer: "{issuer}"
  redirect_url: "http://127.0.0.1:{port}/oidc_auth"
  client_id: regate
  {secret}
"#,
        data = data.display(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn named_passwords_revoke_and_sign_out() {
    setup();
    let shots = shots("sign_out");
    let work = tempfile::tempdir().unwrap();
    let port = free_port("127.0.0.1");
    let site = format!("http://127.0.0.1:{port}");
    let provider = oidc_provider(&site, work.path(), json!({}));
    let config = oidc_config(
        port,
        &work.path().join("data"),
        &provider.url,
        "client_secret: oidc-secret",
    );
    let gateway = Gateway::start(&config).await;
    let pull = "repository:x/app:pull";

    let run = browser(
        &shots,
        "manage",
        steps(vec![
            vec![json!({"goto": format!("{site}/oidc_auth")})],
            provider_login("alice", "alice-pw"),
            vec![
                json!({"waitForSelector": "#password-title"}),
                json!({"attribute": "#password", "name": "value", "as": "first"}),
                // A named one for CI, ending in 30 days.
                json!({"fill": "#new-name", "value": "ci-deploy"}),
                json!({"select": "#new-expires", "value": "30"}),
                json!({"click": "text=Make a password"}),
                json!({"waitForSelector": "text=Password for ci-deploy"}),
                json!({"attribute": "#password", "name": "value", "as": "ci"}),
                json!({"text": "table.credentials", "as": "list"}),
            ],
            look(&shots, "1-named-password"),
            vec![
                json!({"fill": "#new-name", "value": "tmp"}),
                json!({"select": "#new-expires", "value": "never"}),
                json!({"click": "text=Make a password"}),
                json!({"waitForSelector": "text=Password for tmp"}),
                json!({"attribute": "#password", "name": "value", "as": "tmp"}),
                // The page asks before revoking; say yes.
                json!({"evaluate": "window.confirm = () => true"}),
                json!({"click": "button[aria-label='Revoke tmp']"}),
                json!({"waitForSelector": ".notice"}),
                json!({"text": ".notice", "as": "revoked"}),
            ],
            look(&shots, "2-revoked"),
            vec![
                json!({"click": "#signout-revoke"}),
                json!({"waitForSelector": "#out-title"}),
            ],
            look(&shots, "3-signed-out"),
            vec![
                json!({"goto": format!("{site}/")}),
                json!({"waitForURL": {"regex": "/ui/login"}}),
            ],
        ]),
    )
    .await;
    let list = text(&run, "list");
    assert!(
        list.contains("ci-deploy") && list.contains("signed in"),
        "{list}"
    );
    assert!(text(&run, "revoked").contains("Revoked “tmp”"), "{run:#}");
    let first = text(&run, "first");
    let ci = text(&run, "ci");
    let tmp = text(&run, "tmp");
    // Signing out revoked the sign-in's password; the named one stays; the revoked one
    // is gone.
    assert_eq!(auth(&site, "alice@example.com", first, pull).await.0, 401);
    assert_eq!(auth(&site, "alice@example.com", tmp, pull).await.0, 401);
    let (status, actions, body) = auth(&site, "alice@example.com", ci, pull).await;
    assert_eq!((status, actions), (200, vec!["pull".to_owned()]), "{body}");
    let left = credentials(&gateway.server, "alice@example.com").await;
    assert_eq!(left, [("ci-deploy".to_owned(), "oidc_auth".to_owned())]);

    // The pages' own "Sign out" revokes the sign-in's password too.
    let run = browser(
        &shots,
        "header-sign-out",
        steps(vec![
            vec![
                json!({"goto": format!("{site}/ui/login")}),
                json!({"click": "text=Sign in with"}),
            ],
            provider_login("alice", "alice-pw"),
            vec![
                json!({"waitForSelector": "#password-title"}),
                json!({"attribute": "#password", "name": "value", "as": "second"}),
                json!({"click": "header .signout button"}),
                json!({"waitForURL": {"regex": "/ui/login"}}),
            ],
            look(&shots, "4-after-header-sign-out"),
        ]),
    )
    .await;
    let second = text(&run, "second");
    assert_eq!(auth(&site, "alice@example.com", second, pull).await.0, 401);
    assert_eq!(auth(&site, "alice@example.com", ci, pull).await.0, 200);
    gateway.server.shutdown().await;
}

fn regate_check(config: &std::path::Path) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_regate"));
    cmd.args(["check", "--config"]).arg(config);
    without_proxies(&mut cmd);
    run_with_deadline(&mut cmd, b"", Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread")]
async fn check_and_start_say_what_is_wrong_with_a_provider() {
    setup();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let port = free_port("127.0.0.1");
    let site = format!("http://127.0.0.1:{port}");
    let file = work.path().join("regate.yml");
    let write = |text: &str| std::fs::write(&file, text).unwrap();

    let provider = oidc_provider(&site, work.path(), json!({}));
    write(&oidc_config(
        port,
        &data,
        &provider.url,
        "client_secret: oidc-secret",
    ));
    let (ok, out) = regate_check(&file);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "oidc_auth: signs in with {} at /oidc_auth",
            provider.url.trim_start_matches("http://")
        )),
        "{out}"
    );

    let missing = work.path().join("no-such-secret");
    write(&oidc_config(
        port,
        &data,
        &provider.url,
        &format!("client_secret_file: \"{}\"", missing.display()),
    ));
    let (ok, out) = regate_check(&file);
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "oidc_auth.client_secret_file: cannot read {}",
            missing.display()
        )),
        "{out}"
    );

    write(
        &oidc_config(port, &data, &provider.url, "client_secret: s")
            .replace("/oidc_auth\"", "/callback\""),
    );
    let (ok, out) = regate_check(&file);
    assert!(!ok);
    assert!(out.contains("must end in /oidc_auth"), "{out}");

    // Nothing listens at the issuer.
    let closed = format!("http://127.0.0.1:{}", free_port("127.0.0.1"));
    write(&oidc_config(port, &data, &closed, "client_secret: s"));
    let (ok, out) = regate_check(&file);
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "error: oidc_auth: {} cannot be reached",
            closed.trim_start_matches("http://")
        )),
        "{out}"
    );
    // `serve` starts anyway (the registry must not go down with the provider), and says
    // why its sign-ins cannot work yet.
    let served = RegateProcess::start(&file, work.path().join("serve.log"));
    let log = || served.log_text();
    eventually("serve logs the issuer it cannot read", POLL, || async {
        match log().contains("the identity provider cannot be used yet") {
            true => Ok(()),
            false => Err(log()),
        }
    })
    .await;
    drop(served);

    // With the pages off, docker_auth's sign-in route (and the files its page uses) stay.
    let no_pages = oidc_config(
        port,
        &work.path().join("data2"),
        &provider.url,
        "client_secret: oidc-secret",
    );
    let gateway = Gateway::start(&format!("{no_pages}ui: {{enabled: false}}\n")).await;
    let start = get(&format!("{site}/oidc_auth"), &[]).await;
    assert_eq!(start.status, 303);
    assert!(start.header("location").unwrap().starts_with(&provider.url));
    assert_eq!(
        get(&format!("{site}/static/app.css"), &[]).await.status,
        200
    );
    assert_eq!(get(&format!("{site}/ui/login"), &[]).await.status, 404);
    gateway.server.shutdown().await;

    // An issuer whose discovery document names another issuer.
    let other = oidc_provider(&site, work.path(), json!({"issuer": "https://id.example"}));
    write(&oidc_config(port, &data, &other.url, "client_secret: s"));
    let (ok, out) = regate_check(&file);
    assert!(!ok);
    assert!(
        out.contains("names the issuer `https://id.example`, not the configured"),
        "{out}"
    );
}
