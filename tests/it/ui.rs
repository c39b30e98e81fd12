//! The web pages in a real browser (Debian's chromium, headless, through
//! `tests/idp/browser.mjs`) against regate over HTTPS in front of Debian's
//! `docker-registry`, with images pushed by skopeo (a multi-arch index, an image with 20
//! tags) and a CI token used by the docker CLI; bad input over raw HTTP; and the first
//! page of a registry with 10,000 repositories, timed (printed, not asserted).
//!
//! Screenshots of every page go to `target/tmp/ui-screenshots/`.

mod browser;
mod docker;
mod images;
mod raw;

use std::path::Path;

use crate::common::*;
use serde_json::{json, Value};

/// registry:2 answers a manifest GET only in a type the client accepts.
const OCI: (&str, &str) = ("accept", "application/vnd.oci.image.manifest.v1+json");

/// Users, rules and the UI: admin does anything, dave maintains team-a (pull, push,
/// delete), carol reads team-a, anyone (anonymous too) pulls public/*.
fn config(upstream: &str, data: &Path, server: &str, extra: &str) -> String {
    format!(
        r#"{server}token:
  issuer: "{ISSUER}"
data_dir: "{data}"
upstream:
  url: "{upstream}"
ui:
  title: "Example registry"
{extra}users:
  "admin":
    password: "{admin}"
  "carol":
    password: "{carol}"
  "dave":
    password: "{dave}"
  "": {{}}
acl:
  - match: {{account: "admin"}}
    actions: ["*"]
    comment: "admins do anything"
  - match: {{account: "dave", name: "team-a/*"}}
    actions: [pull, push, delete]
    comment: "team-a maintainers"
  - match: {{account: "carol", name: "team-a/*"}}
    actions: [pull]
    comment: "team-a readers"
  - match: {{name: "public/*"}}
    actions: [pull]
    comment: "public images"
"#,
        data = data.display(),
        admin = bcrypt("admin-pw"),
        carol = bcrypt("carol-pw"),
        dave = bcrypt("dave-pw"),
    )
}

fn step(v: Value) -> Vec<Value> {
    vec![v]
}

/// Steps in order, from groups of steps.
fn script(groups: Vec<Vec<Value>>) -> Vec<Value> {
    groups.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pages_in_a_real_browser() {
    // The Activity page reads the audit events this process logs, as `regate serve`'s.
    {
        use tracing_subscriber::prelude::*;
        let _ = tracing_subscriber::registry()
            .with(regate::web::journal::layer())
            .try_init();
    }
    ensure_hosts_entry(TLS_HOST);
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    cert_init(&certs, &[TLS_HOST, "::1"]);
    let server = format!(
        "server:\n  addr: \"[::1]:0\"\n  certificate: \"{}\"\n  key: \"{}\"\n",
        certs.join("server.crt").display(),
        certs.join("server.key").display()
    );
    let cfg = config(&registry.url(), &dir.path().join("data"), &server, "");
    let cfg = with_token_pair(&cfg, &certs.join("token.crt"), &certs.join("token.key"));
    let (gateway, dockerd) = tokio::join!(
        Gateway::start_in(dir, &cfg),
        blocking(docker::Dockerd::start)
    );
    let dockerd = dockerd.unwrap_or_else(|e| panic!("{e}"));
    let host = format!("{TLS_HOST}:{}", gateway.addr().port());
    let base = format!("https://{host}");
    println!(
        "regate at {base}; screenshots in {}",
        browser::screenshots().display()
    );

    // Images, pushed by skopeo as admin.
    let work = tempfile::tempdir().unwrap();
    let ca_dir = ca_only_dir(&certs.join("ca.crt"));
    {
        let (w, ca, h) = (
            work.path().to_owned(),
            ca_dir.path().to_owned(),
            host.clone(),
        );
        blocking(move || {
            let multi = w.join("multi");
            images::multi_arch(&multi, 7);
            images::push(&multi, "latest", &h, "team-a/app:latest", &ca);
            images::push(&multi, "latest", &h, "team-a/app:1.0", &ca);
            let tools = w.join("tools");
            images::versions(&tools, 20);
            for i in 1..=20 {
                let tag = format!("v{i}");
                images::push(&tools, &tag, &h, &format!("team-a/tools:{tag}"), &ca);
            }
            let one = w.join("one");
            images::single(&one, 40);
            for target in ["team-b/secret:1.0", "team-b/other:x", "public/hello:latest"] {
                images::push(&one, "latest", &h, target, &ca);
            }
        })
        .await;
    }

    // carol reads team-a: signs in (after one wrong password), browses, copies a pull
    // command, asks why she cannot push, makes a CI token.
    let carol = browser::run(script(vec![
        step(json!({"goto": format!("{base}/")})),
        step(json!({"expectURL": {"regex": "/ui/login"}})),
        browser::shoot("01-sign-in"),
        // Keyboard: Tab goes from user name to password, Enter signs in.
        step(json!({"fill": "#username", "value": "carol"})),
        step(json!({"press": "#username", "key": "Tab"})),
        step(json!({"evaluate": "document.activeElement.id", "as": "after_username"})),
        step(json!({"fill": "#password", "value": "wrong-pw"})),
        step(json!({"press": "#password", "key": "Enter"})),
        step(json!({"waitForSelector": "p.error"})),
        step(json!({"text": "p.error", "as": "wrong_password"})),
        step(json!({"fill": "#password", "value": "carol-pw"})),
        step(json!({"press": "#password", "key": "Enter"})),
        step(json!({"waitForSelector": "form.signout"})),
        browser::shoot("02-repositories"),
        // Keyboard: the skip link comes first and leads past the menu to the search.
        step(json!({"press": "body", "key": "Tab"})),
        step(json!({"evaluate": "document.activeElement.textContent", "as": "first_focus"})),
        step(json!({"press": "a.skip", "key": "Enter"})),
        step(json!({"press": "main", "key": "Tab"})),
        step(json!({"evaluate": "document.activeElement.id", "as": "after_skip"})),
        step(json!({"html": true, "as": "repos_html"})),
        step(json!({"text": "#summary", "as": "repos_summary"})),
        step(json!({"count": "ul.repos li", "as": "repo_count"})),
        step(json!({"click": "a:text-is('team-a/tools')"})),
        step(json!({"waitForSelector": "table.tags"})),
        browser::shoot("03-tags"),
        step(json!({"count": "table.tags tbody tr", "as": "tags_page1"})),
        step(json!({"text": "table.tags tbody tr:first-child", "as": "first_row"})),
        step(json!({"text": ".summary", "as": "tags_summary"})),
        step(json!({"click": "a[rel=next]"})),
        step(json!({"waitForURL": {"regex": "page=2"}})),
        step(json!({"count": "table.tags tbody tr", "as": "tags_page2"})),
        step(json!({"click": "table.tags a:text-is('v3')"})),
        step(json!({"waitForSelector": "#pull-tag"})),
        browser::shoot("04-image"),
        step(json!({"count": ".danger-zone", "as": "carol_delete_section"})),
        step(json!({"text": "#pull-digest", "as": "pull_digest"})),
        step(json!({"text": "main", "as": "image_text"})),
        // Copy: the page's script hands the command to the clipboard API (captured here:
        // headless Chromium grants no clipboard read).
        step(json!({"evaluate": "window.__copied = null; navigator.clipboard.writeText = (t) => { window.__copied = t; return Promise.resolve(); }; true"})),
        step(json!({"click": "button[aria-label='Copy pull command by tag']"})),
        step(json!({"text": "button[aria-label='Copy pull command by tag']", "as": "copied_label"})),
        step(json!({"evaluate": "window.__copied", "as": "copied"})),
        step(json!({"goto": format!("{base}/ui/repo/team-a/app:1.0")})),
        browser::shoot("05-multi-arch"),
        step(json!({"text": "main", "as": "index_text"})),
        step(json!({"goto": format!("{base}/ui/access?repository=team-a/tools")})),
        browser::shoot("06-my-access"),
        step(json!({"text": "main", "as": "access_text"})),
        step(json!({"count": "details", "as": "access_details"})),
        step(json!({"goto": format!("{base}/ui/credentials")})),
        browser::shoot("07-credentials"),
        step(json!({"text": "main", "as": "credentials_text"})),
        step(json!({"fill": "#token-name", "value": "ci-deploy"})),
        step(json!({"select": "#token-days", "value": "30"})),
        step(json!({"click": "button:text-is('Create token')"})),
        step(json!({"waitForSelector": "#new-token"})),
        browser::shoot("08-token-created"),
        step(json!({"text": "#new-token", "as": "token"})),
        step(json!({"goto": format!("{base}/ui/credentials")})),
        browser::shoot("09-token-list"),
        step(json!({"text": "table.credentials", "as": "token_list"})),
        step(json!({"goto": format!("{base}/ui/activity")})),
        step(json!({"text": "main", "as": "activity_refused"})),
    ]))
    .expect_ok("carol browses");
    assert_eq!(carol.text("first_focus"), "Skip to content");
    assert_eq!(
        carol.text("after_skip"),
        "q",
        "the search box follows the skip link"
    );
    assert_eq!(carol.text("after_username"), "password");
    assert!(carol.text("wrong_password").contains("not right"));
    let repos = carol.text("repos_html");
    assert!(repos.contains("team-a/app") && repos.contains("team-a/tools"));
    assert!(repos.contains("public/hello"));
    assert!(
        !repos.contains("team-b"),
        "carol must see nothing of team-b: {repos}"
    );
    assert_eq!(carol.result("repo_count"), 3);
    assert!(carol.text("repos_summary").contains("3 repositories"));
    assert_eq!(carol.result("tags_page1"), 15);
    assert_eq!(carol.result("tags_page2"), 5);
    assert!(carol.text("tags_summary").contains("20 tags"));
    // Newest versions first; each row has digest, size, created, platform.
    let row = carol.text("first_row");
    assert!(
        row.starts_with("v20") && row.contains("sha256:") && row.contains(" kB"),
        "{row}"
    );
    assert!(row.contains("linux/amd64"), "{row}");
    assert_eq!(carol.result("carol_delete_section"), 0);
    let pull = format!("docker pull {host}/team-a/tools:v3");
    assert_eq!(carol.text("copied"), pull);
    assert_eq!(carol.text("copied_label"), "Copied");
    let image = carol.text("image_text");
    for expected in [
        "Layers",
        "History",
        "COPY app /bin/app",
        "org.opencontainers.image.source",
        "2026-11-03 12:00 UTC",
        "8080/tcp",
    ] {
        assert!(
            image.contains(expected),
            "{expected} on the image page: {image}"
        );
    }
    let index = carol.text("index_text");
    assert!(
        index.contains("linux/amd64") && index.contains("linux/arm64"),
        "{index}"
    );
    assert!(index.contains("multi-platform image"), "{index}");
    let access = carol.text("access_text");
    assert!(access.contains("acl[2] \"team-a readers\""), "{access}");
    assert!(access.contains("does not grant push or delete"), "{access}");
    assert_eq!(
        carol.result("access_details"),
        0,
        "no full report for non-admins"
    );
    let creds = carol.text("credentials_text");
    assert!(
        creds.contains(&format!("docker login {host} -u carol")),
        "{creds}"
    );
    assert!(creds.contains("ca.crt"), "{creds}");
    let token = carol.text("token");
    assert!(token.starts_with("rgt_"), "{token}");
    assert!(carol.text("token_list").contains("ci-deploy"));
    assert!(carol
        .text("activity_refused")
        .contains("Only administrators"));
    let digest = carol
        .text("pull_digest")
        .rsplit_once('@')
        .map(|(_, d)| d.to_owned())
        .unwrap();

    // The CA the page offers, the pull command it copied and the token it made work for
    // docker: logged in with the token, docker pulls what carol may pull.
    let ca_pem = get_https_ca(&base).await;
    assert_eq!(
        ca_pem,
        std::fs::read_to_string(certs.join("ca.crt")).unwrap()
    );
    let ca_file = work.path().join("downloaded-ca.crt");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let _trusted = docker::TrustedCa::place(&host, &ca_file);
    let cli = dockerd.client(work.path().join("docker-config"));
    let (ok, out) = cli.login(&host, "carol", &token).await;
    assert!(ok, "docker login with the CI token: {out}");
    let args: Vec<&str> = pull.split(' ').skip(1).collect();
    let (ok, out) = cli.docker(&args).await;
    assert!(ok, "{pull}: {out}");

    // carol may not delete, sees nothing of team-b, revokes her token, signs out.
    let carol = browser::run(script(vec![
        browser::sign_in(&base, "carol", "carol-pw"),
        step(json!({"goto": format!("{base}/ui/delete?repository=team-a/tools&digest={digest}")})),
        step(json!({"text": "main", "as": "delete_refused"})),
        browser::shoot("10-delete-refused"),
        step(json!({"goto": format!("{base}/ui/repo/team-b/secret"), "as": "secret_status"})),
        step(json!({"text": "main", "as": "secret"})),
        browser::shoot("11-no-such-repository"),
        step(
            json!({"goto": format!("{base}/ui/repo/team-b/no-such-thing"), "as": "missing_status"}),
        ),
        step(json!({"text": "main", "as": "missing"})),
        step(json!({"goto": format!("{base}/ui/repos?q=team-b")})),
        step(json!({"text": "main", "as": "search"})),
        step(json!({"goto": format!("{base}/ui/credentials")})),
        step(json!({"click": "button[aria-label='Revoke ci-deploy']"})),
        step(json!({"waitForSelector": "p.ok"})),
        step(json!({"text": "p.ok", "as": "revoked"})),
        browser::shoot("12-token-revoked"),
        step(json!({"click": "button:text-is('Sign out')"})),
        step(json!({"waitForURL": {"regex": "/ui/login"}})),
        step(json!({"goto": format!("{base}/ui/credentials")})),
        step(json!({"url": true, "as": "after_sign_out"})),
    ]))
    .expect_ok("carol is refused and signs out");
    assert!(carol
        .text("delete_refused")
        .contains("but not delete in it"));
    assert_eq!(carol.result("secret_status"), 404);
    assert_eq!(carol.result("missing_status"), 404);
    assert_eq!(
        carol.text("secret").replace("team-b/secret", "X"),
        carol.text("missing").replace("team-b/no-such-thing", "X"),
        "a repository carol may not pull looks like one that is not there"
    );
    assert!(
        !carol.text("search").contains("team-b/"),
        "{}",
        carol.text("search")
    );
    assert!(carol.text("revoked").contains("ci-deploy"));
    assert!(carol.text("after_sign_out").contains("/ui/login?next="));
    // The revoked token no longer pulls, nor logs in.
    let (ok, out) = cli
        .docker(&["pull", &format!("{host}/team-a/tools:v2")])
        .await;
    assert!(!ok, "a revoked token must not pull: {out}");
    let (ok, out) = cli.login(&host, "carol", &token).await;
    assert!(!ok, "a revoked token must not log in: {out}");

    // dave deletes a tag, behind the confirmation.
    let dave = browser::run(script(vec![
        browser::sign_in(&base, "dave", "dave-pw"),
        step(json!({"goto": format!("{base}/ui/repo/team-a/tools:v3")})),
        step(json!({"click": "text=Delete this image…"})),
        step(json!({"waitForSelector": "form.confirm"})),
        browser::shoot("13-delete-confirm"),
        step(json!({"text": "main", "as": "confirm"})),
        step(json!({"click": "form.confirm button"})),
        step(json!({"waitForURL": {"regex": "deleted="}})),
        step(json!({"text": "p.ok", "as": "deleted"})),
        step(json!({"text": ".summary", "as": "after"})),
        browser::shoot("14-deleted"),
    ]))
    .expect_ok("dave deletes");
    let confirm = dave.text("confirm");
    assert!(
        confirm.contains("v3") && confirm.contains("garbage collection"),
        "{confirm}"
    );
    assert!(dave.text("deleted").contains("garbage collection"));
    assert!(
        dave.text("after").contains("19 tags"),
        "{}",
        dave.text("after")
    );
    let gone = get(
        &format!("{}/v2/team-a/tools/manifests/v3", registry.url()),
        &[OCI],
    )
    .await;
    assert_eq!(gone.status, 404, "the registry no longer has v3");
    let kept = get(
        &format!("{}/v2/team-a/tools/manifests/v2", registry.url()),
        &[OCI],
    )
    .await;
    assert_eq!(kept.status, 200, "v2 stays");

    // admin sees the activity; a guest sees what anyone may pull.
    let admin = browser::run(script(vec![
        browser::sign_in(&base, "admin", "admin-pw"),
        step(json!({"goto": format!("{base}/ui/activity")})),
        browser::shoot("15-activity"),
        step(json!({"text": "main", "as": "activity"})),
        step(json!({"evaluate": "Array.from(document.querySelectorAll('table.compact tbody tr:first-child td')).map(td => Number(td.textContent))", "as": "today"})),
        step(json!({"select": "#kind", "value": "delete"})),
        step(json!({"click": "button:text-is('Filter')"})),
        step(json!({"waitForURL": {"regex": "kind=delete"}})),
        step(json!({"count": "table.events tbody tr", "as": "deletes"})),
        step(json!({"goto": format!("{base}/ui/repos")})),
        step(json!({"text": "#summary", "as": "admin_repos"})),
        step(json!({"goto": format!("{base}/ui/access?repository=team-b/secret")})),
        step(json!({"count": "details", "as": "report"})),
        step(json!({"clearCookies": true})),
        step(json!({"goto": format!("{base}/ui/repos")})),
        browser::shoot("16-guest"),
        step(json!({"text": "main", "as": "guest"})),
    ]))
    .expect_ok("admin and a guest");
    let activity = admin.text("activity");
    for expected in [
        "refused login",
        "carol",
        "delete",
        "dave",
        "team-a/tools@sha256:",
        "push",
        "team-a/tools:v20",
    ] {
        assert!(
            activity.contains(expected),
            "{expected} in the activity: {activity}"
        );
    }
    assert_eq!(admin.result("deletes"), 1);
    // Today's bar: the 25 tags pushed; docker's pull of v3 (a HEAD by tag), skopeo's.
    let today = admin.result("today");
    assert_eq!(today[0], 25, "{today}");
    assert!(today[1].as_u64().unwrap() >= 1, "{today}");
    assert!(
        admin.text("admin_repos").contains("5 repositories"),
        "{}",
        admin.text("admin_repos")
    );
    assert_eq!(admin.result("report"), 1, "admins get the full report");
    let guest = admin.text("guest");
    assert!(
        guest.contains("public/hello") && guest.contains("as a guest"),
        "{guest}"
    );
    assert!(
        !guest.contains("team-a") && !guest.contains("team-b"),
        "{guest}"
    );

    gateway.server.shutdown().await;
    drop(dockerd);
}

/// `/ui/ca.crt` over HTTPS, read with curl trusting nothing (the CA is what it fetches).
async fn get_https_ca(base: &str) -> String {
    let url = format!("{base}/ui/ca.crt");
    blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-sSk", "--noproxy", "*", &url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    })
    .await
}
