//! The pages over raw HTTP: bad input gets a clear page and changes nothing, and the
//! first page of a registry with 10,000 repositories, timed.

use std::path::Path;
use std::time::{Duration, Instant};

use hyper::Method;

use super::{config, images, OCI};
use crate::common::*;

const HTML: (&str, &str) = ("accept", "text/html");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// regate over plain HTTP on loopback in front of `registry`, with `extra` in `ui:`.
async fn plain(registry: &Registry, extra: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let server = "server:\n  addr: \"127.0.0.1:0\"\n";
    let cfg = config(&registry.url(), &dir.path().join("data"), server, extra);
    Gateway::start_in(dir, &cfg).await
}

/// Signs in over raw HTTP; the session cookie and the page's CSRF token.
async fn session(base: &str, user: &str, password: &str) -> (String, String) {
    let body = format!("username={user}&password={password}&next=%2Fui%2Fcredentials");
    let resp = http(
        Method::POST,
        &format!("{base}/ui/login"),
        &[FORM],
        body.into_bytes(),
    )
    .await;
    assert_eq!(resp.status, 303, "{}", String::from_utf8_lossy(&resp.body));
    let cookie = resp
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = get(
        &format!("{base}/ui/credentials"),
        &[HTML, ("cookie", &cookie)],
    )
    .await;
    let text = String::from_utf8_lossy(&page.body);
    let at = text.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    (cookie, text[at..at + 43].to_owned())
}

/// A page as the browser with `cookie` gets it.
async fn page(base: &str, path: &str, cookie: &str) -> Resp {
    get(&format!("{base}{path}"), &[HTML, ("cookie", cookie)]).await
}

fn text(resp: &Resp) -> String {
    String::from_utf8_lossy(&resp.body).into_owned()
}

/// skopeo copy of a one-image layout to regate over plain HTTP, as admin.
fn push_plain(layout: &Path, host: &str, target: &str) {
    let source = format!("oci:{}:latest", layout.display());
    let dest = format!("docker://{host}/{target}");
    let (ok, out) = skopeo(
        &layout.join("auth.json"),
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "admin:admin-pw",
            &source,
            &dest,
        ],
    );
    assert!(ok, "skopeo copy {dest}: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_page_and_changes_nothing() {
    let registry = Registry::start(None);
    let gateway = plain(&registry, "").await;
    let base = gateway.url();
    let host = gateway.host();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("one");
    images::single(&layout, 3);
    {
        let (l, h) = (layout.clone(), host.clone());
        blocking(move || {
            for target in ["team-a/app:1.0", "team-b/secret:1.0"] {
                push_plain(&l, &h, target);
            }
        })
        .await;
    }
    let digest = get(
        &format!("{}/v2/team-b/secret/manifests/1.0", registry.url()),
        &[OCI],
    )
    .await
    .header("docker-content-digest")
    .unwrap()
    .to_owned();
    let still_there = || async {
        for path in ["team-a/app/manifests/1.0", "team-b/secret/manifests/1.0"] {
            let r = get(&format!("{}/v2/{path}", registry.url()), &[OCI]).await;
            assert_eq!(r.status, 200, "{path} is still there");
        }
    };
    let (dave, dave_csrf) = session(&base, "dave", "dave-pw").await;

    // An unknown repository, and one dave may not pull: the same clear 404.
    let unknown = page(&base, "/ui/repo/team-a/nope", &dave).await;
    let hidden = page(&base, "/ui/repo/team-b/secret", &dave).await;
    assert_eq!(
        (unknown.status.as_u16(), hidden.status.as_u16()),
        (404, 404)
    );
    assert!(text(&unknown).contains("There is no repository “team-a/nope” that you may pull."));
    assert_eq!(
        text(&unknown).replace("team-a/nope", "X"),
        text(&hidden).replace("team-b/secret", "X")
    );
    let tag = page(&base, "/ui/repo/team-a/app:nope", &dave).await;
    assert_eq!(tag.status, 404);
    assert!(text(&tag).contains("team-a/app has no tag or digest “nope”."));

    // Forged, missing or cross-site CSRF: refused, nothing deleted or created.
    let delete = format!("{base}/ui/delete");
    let body = |csrf: &str, repo: &str| {
        format!(
            "csrf={csrf}&repository={}&digest={}",
            url(repo),
            url(&digest)
        )
        .into_bytes()
    };
    for (csrf, origin) in [
        ("forged", None),
        ("", None),
        (dave_csrf.as_str(), Some("http://evil.example")),
    ] {
        let mut headers = vec![FORM, ("cookie", dave.as_str())];
        if let Some(o) = origin {
            headers.push(("origin", o));
        }
        let r = http(Method::POST, &delete, &headers, body(csrf, "team-a/app")).await;
        assert_eq!(r.status, 403, "csrf {csrf:?} origin {origin:?}");
        assert!(text(&r).contains("This form is out of date or did not come from this site."));
    }
    let r = http(
        Method::POST,
        &format!("{base}/ui/credentials"),
        &[FORM, ("cookie", &dave)],
        b"csrf=forged&name=x&days=30".to_vec(),
    )
    .await;
    assert_eq!(r.status, 403);
    let creds = page(&base, "/ui/credentials", &dave).await;
    assert!(text(&creds).contains("You have no tokens."));
    still_there().await;

    // Path traversal in a repository name: cleaned by the router (then no repository dave
    // may pull), or refused as no name; nothing deleted.
    let r = page(&base, "/ui/repo/team-a/..%2Fteam-b%2Fsecret:1.0", &dave).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/ui/repo/team-b/secret:1.0"));
    let r = page(&base, "/ui/repo/team-b/secret:1.0", &dave).await;
    assert_eq!(r.status, 404);
    assert!(text(&r).contains("There is no repository “team-b/secret” that you may pull."));
    let r = http(
        Method::POST,
        &delete,
        &[FORM, ("cookie", &dave)],
        body(&dave_csrf, "team-a/../team-b/secret"),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        text(&r).contains("is not an image this registry can hold"),
        "{}",
        text(&r)
    );
    let r = page(
        &base,
        &format!(
            "/ui/delete?repository={}&digest={}",
            url("team-a/../team-b/secret"),
            url(&digest)
        ),
        &dave,
    )
    .await;
    assert_eq!(r.status, 400);
    let r = page(
        &base,
        &format!("/ui/access?repository={}", url("../../etc/passwd")),
        &dave,
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(text(&r).contains("is not a repository name"));
    still_there().await;
    // The right form deletes (the refusals above were not for want of rights).
    let r = http(
        Method::POST,
        &delete,
        &[FORM, ("cookie", &dave)],
        body(&dave_csrf, "team-a/app"),
    )
    .await;
    assert_eq!(r.status, 303, "{}", text(&r));
    let r = get(
        &format!("{}/v2/team-a/app/manifests/1.0", registry.url()),
        &[OCI],
    )
    .await;
    assert_eq!(r.status, 404);

    // An expired session: the next page asks to sign in again and says why; a form sent
    // with it changes nothing.
    let short = plain(&registry, "  session_idle: 1\n").await;
    let short_base = short.url();
    let (carol, carol_csrf) = session(&short_base, "carol", "carol-pw").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let location = loop {
        let r = get(
            &format!("{short_base}/ui/repos"),
            &[HTML, ("cookie", &carol)],
        )
        .await;
        if r.status == 303 {
            break r.header("location").unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the session never ended");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        location.contains("ended=1") && location.contains("next=%2Fui%2Frepos"),
        "{location}"
    );
    let r = get(
        &format!("{short_base}{location}"),
        &[HTML, ("cookie", &carol)],
    )
    .await;
    assert!(text(&r).contains("Your sign-in has ended"));
    let r = http(
        Method::POST,
        &format!("{short_base}/ui/credentials"),
        &[FORM, ("cookie", &carol)],
        format!("csrf={carol_csrf}&name=late&days=30").into_bytes(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(text(&r).contains("nothing was changed"));
    let (again, _) = session(&short_base, "carol", "carol-pw").await;
    let creds = get(
        &format!("{short_base}/ui/credentials"),
        &[HTML, ("cookie", &again)],
    )
    .await;
    assert!(text(&creds).contains("You have no tokens."));
}

fn url(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The first page of a registry with 10,000 repositories. registry:2 reads its catalog
/// by walking its storage for every page, so the whole list takes it seconds; the page
/// must not wait for that. Timed and printed, not asserted (the machine is shared).
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_repositories_list_their_first_page_quickly() {
    let registry = Registry::start(None);
    let root = registry
        .dir
        .path()
        .join("storage/docker/registry/v2/repositories");
    for i in 0..10_000 {
        std::fs::create_dir_all(root.join(format!("ns{}/repo{i:05}/_layers", i % 10))).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "server:\n  addr: \"127.0.0.1:0\"\nupstream:\n  url: \"{}\"\ndata_dir: \"{}\"\nusers:\n  admin:\n    password: \"{}\"\n  reader:\n    password: \"{}\"\nacl:\n  - match: {{account: admin}}\n    actions: [\"*\"]\n  - match: {{account: reader, name: \"ns3/*\"}}\n    actions: [pull]\n",
        registry.url(),
        dir.path().join("data").display(),
        bcrypt("admin-pw"),
        bcrypt("reader-pw"),
    );
    let gateway = Gateway::start_in(dir, &cfg).await;
    let base = gateway.url();
    let (admin, _) = session(&base, "admin", "admin-pw").await;
    let (reader, _) = session(&base, "reader", "reader-pw").await;
    let timed = |path: &str, cookie: &str| {
        let url = format!("{base}{path}");
        let cookie = cookie.to_owned();
        async move {
            let started = Instant::now();
            let r = get(&url, &[HTML, ("cookie", &cookie)]).await;
            assert_eq!(r.status, 200, "{}", text(&r));
            (started.elapsed(), text(&r))
        }
    };
    let mut rows = Vec::new();
    let (cold, page) = timed("/ui/repos", &admin).await;
    assert!(
        page.matches("/ui/repo/ns").count() >= 50,
        "a full first page"
    );
    rows.push((
        "first page, catalog never read (admin)",
        cold,
        page.contains("so far"),
    ));
    // The rest of the catalog arrives in the background.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    loop {
        let (_, page) = timed("/ui/repos", &admin).await;
        if !page.contains("so far") {
            assert!(
                page.contains("<strong>10000</strong> repositories"),
                "{page}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the catalog was never read whole"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rows.push((
        "whole catalog read (background)",
        cold + started.elapsed(),
        false,
    ));
    let (t, _) = timed("/ui/repos", &admin).await;
    rows.push(("first page, catalog cached (admin)", t, false));
    let (t, page) = timed("/ui/repos?page=200", &admin).await;
    assert!(page.contains("Page 200 of 200"), "{page}");
    rows.push(("last page (admin)", t, false));
    let (t, page) = timed("/ui/repos?q=repo09999", &admin).await;
    assert!(page.contains("ns9/repo09999"));
    rows.push(("search (admin)", t, false));
    let (t, page) = timed("/ui/repos", &reader).await;
    assert!(
        page.contains("<strong>1000</strong> repositories"),
        "{page}"
    );
    assert!(!page.contains("ns4/"), "the reader sees ns3 only");
    rows.push((
        "first page, 10,000 names filtered by the ACL (reader)",
        t,
        false,
    ));
    let (t, _) = timed("/ui/repos", &reader).await;
    rows.push(("first page again (reader, filter cached)", t, false));
    println!(
        "\n10,000 repositories ({} build):",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for (what, t, partial) in rows {
        println!(
            "  {what:<56} {:>7.1} ms{}",
            t.as_secs_f64() * 1000.0,
            if partial {
                "  (counts not final yet)"
            } else {
                ""
            }
        );
    }
}
