use super::*;

fn route(path: &str) -> Route {
    classify(path, None).route
}

fn repo(name: &str, kind: RepoKind) -> Route {
    Route::Repository {
        name: name.to_owned(),
        kind,
    }
}

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn fixed_routes() {
    assert_eq!(route("/v2/"), Route::Base);
    assert_eq!(route("/v2"), Route::Redirect("/v2/".into()));
    assert_eq!(route("/v2/_catalog"), Route::Catalog);
    assert_eq!(route("/auth"), Route::Token);
    assert_eq!(route("/auth/token"), Route::Token);
    assert_eq!(route("/"), Route::Root);
    assert_eq!(route("/v1/_ping"), Route::NotFound);
    assert_eq!(route("/v2/referrers"), Route::NotFound);
}

#[test]
fn repository_routes() {
    assert_eq!(
        route("/v2/foo/bar/tags/list"),
        repo("foo/bar", RepoKind::Tags)
    );
    assert_eq!(
        route("/v2/foo/manifests/latest"),
        repo("foo", RepoKind::Manifest("latest".into()))
    );
    assert_eq!(
        route(&format!("/v2/foo/manifests/{D}")),
        repo("foo", RepoKind::Manifest(D.into()))
    );
    assert_eq!(
        route(&format!("/v2/a/b/blobs/{D}")),
        repo("a/b", RepoKind::Blob(D.into()))
    );
    assert_eq!(
        route("/v2/foo/blobs/uploads/"),
        repo("foo", RepoKind::UploadStart)
    );
    assert_eq!(
        route("/v2/foo/blobs/uploads/3f1c-9a_b.c="),
        repo("foo", RepoKind::Upload("3f1c-9a_b.c=".into()))
    );
}

#[test]
fn greedy_name_like_the_registry_router() {
    assert_eq!(
        route("/v2/a/manifests/b/manifests/c"),
        repo("a/manifests/b", RepoKind::Manifest("c".into()))
    );
    assert_eq!(
        route(&format!("/v2/foo/blobs/blobs/{D}")),
        repo("foo/blobs", RepoKind::Blob(D.into()))
    );
    // `tags/list` wins over a manifest reference, as the router tries tags first.
    assert_eq!(
        route("/v2/a/manifests/tags/list"),
        repo("a/manifests", RepoKind::Tags)
    );
}

#[test]
fn strict_slash_redirects() {
    assert_eq!(
        route("/v2/foo/tags/list/"),
        Route::Redirect("/v2/foo/tags/list".into())
    );
    assert_eq!(
        route("/v2/foo/blobs/uploads"),
        Route::Redirect("/v2/foo/blobs/uploads/".into())
    );
    assert_eq!(
        route("/v2/_catalog/"),
        Route::Redirect("/v2/_catalog".into())
    );
    assert_eq!(
        classify("/v2/foo/tags/list/", Some("n=1")).route,
        Route::Redirect("/v2/foo/tags/list?n=1".into())
    );
}

#[test]
fn path_cleaning_redirects_with_query() {
    assert_eq!(
        classify("/v2/foo//bar/tags/list", Some("n=2")).route,
        Route::Redirect("/v2/foo/bar/tags/list?n=2".into())
    );
    assert_eq!(
        route("/v2/a/../b/tags/list"),
        Route::Redirect("/v2/b/tags/list".into())
    );
    assert_eq!(
        route("/v2/./foo/tags/list"),
        Route::Redirect("/v2/foo/tags/list".into())
    );
    assert_eq!(route("/v2/../../etc"), Route::Redirect("/etc".into()));
}

#[test]
fn percent_encoding_is_decoded_like_go() {
    let c = classify("/v2/a%2Fb/tags/list", None);
    assert_eq!(c.route, repo("a/b", RepoKind::Tags));
    assert_eq!(c.path, "/v2/a/b/tags/list");
    assert_eq!(
        route("/v2/a/%2e%2e/b/tags/list"),
        Route::Redirect("/v2/b/tags/list".into())
    );
    assert_eq!(route("/v2/a%zz/tags/list"), Route::BadRequest);
    assert_eq!(route("/v2/a%2/tags/list"), Route::BadRequest);
    assert_eq!(route("/v2/a%ff/tags/list"), Route::BadRequest);
    // from_str_radix takes a sign: `%+1` was byte 0x01; Go answers 400.
    assert_eq!(route("/v2/a%+1/tags/list"), Route::BadRequest);
    assert_eq!(route("/v2/a%-1/tags/list"), Route::BadRequest);
    assert_eq!(
        query_param(Some("from=a%+1&from=b"), "from")
            .unwrap()
            .as_deref(),
        Some("b")
    );
}

#[test]
fn names_the_registry_routes_but_regate_refuses() {
    assert_eq!(
        route("/v2/Foo/bar/tags/list"),
        Route::InvalidName("Foo/bar".into())
    );
    assert_eq!(
        route("/v2/localhost:5000/foo/tags/list"),
        Route::InvalidName("localhost:5000/foo".into())
    );
    let long = "a".repeat(256);
    assert_eq!(
        route(&format!("/v2/{long}/tags/list")),
        Route::InvalidName(long.clone())
    );
    let ok = "a".repeat(255);
    assert_eq!(
        route(&format!("/v2/{ok}/tags/list")),
        repo(&ok, RepoKind::Tags)
    );
}

#[test]
fn names_the_registry_does_not_route() {
    for p in [
        "/v2/Foo/tags/list",
        "/v2/a___b/tags/list",
        "/v2/a..b/tags/list",
        "/v2/-a/b/tags/list",
        "/v2/foo/manifests/",
        "/v2/foo/manifests/bad:ref",
        "/v2/foo/blobs/sha256:short",
        "/v2/tags/list",
    ] {
        assert_eq!(route(p), Route::NotFound, "{p}");
    }
}

#[test]
fn name_grammar() {
    for ok in [
        "a",
        "a_b",
        "a__b",
        "a-b",
        "a---b",
        "a.b",
        "foo-bar/a__b/c--d",
        "0/1",
    ] {
        assert!(valid_name(ok), "{ok}");
    }
    for bad in [
        "", "A", "a/", "/a", "a//b", "a___b", "a..b", "_a", "a-", "a/B", "a:1/b",
    ] {
        assert!(!valid_name(bad), "{bad}");
    }
}

fn access(path: &str, method: Method, query: Option<&str>) -> Vec<String> {
    let from = query_param(query, "from").unwrap();
    route(path)
        .required_access(&method, from.as_deref())
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn access_like_append_access_records() {
    assert!(access("/v2/", Method::GET, None).is_empty());
    assert_eq!(
        access("/v2/_catalog", Method::GET, None),
        ["registry:catalog:*"]
    );
    assert_eq!(
        access("/v2/foo/tags/list", Method::GET, None),
        ["repository:foo:pull"]
    );
    assert_eq!(
        access("/v2/foo/manifests/latest", Method::HEAD, None),
        ["repository:foo:pull"]
    );
    assert_eq!(
        access("/v2/foo/manifests/latest", Method::PUT, None),
        ["repository:foo:pull,push"]
    );
    assert_eq!(
        access(&format!("/v2/foo/manifests/{D}"), Method::DELETE, None),
        ["repository:foo:delete"]
    );
    assert_eq!(
        access(
            "/v2/foo/blobs/uploads/",
            Method::POST,
            Some(&format!("mount={D}&from=other/repo"))
        ),
        ["repository:foo:pull,push", "repository:other/repo:pull"]
    );
    assert_eq!(
        access("/v2/foo/tags/list", Method::GET, Some("from=zzz")),
        ["repository:foo:pull", "repository:zzz:pull"]
    );
    assert!(access("/v2/foo/tags/list", Method::OPTIONS, None).is_empty());
    assert_eq!(route("/auth").required_access(&Method::GET, None), None);
}

#[test]
fn from_is_the_first_value_like_form_value() {
    assert_eq!(
        query_param(Some("from=a&from=b"), "from")
            .unwrap()
            .as_deref(),
        Some("a")
    );
    assert_eq!(
        query_param(Some("from=&from=b"), "from")
            .unwrap()
            .as_deref(),
        Some("")
    );
    assert_eq!(
        query_param(Some("fr%6Fm=x+y"), "from").unwrap().as_deref(),
        Some("x y")
    );
    assert_eq!(
        query_param(Some("from=%zz&from=b"), "from")
            .unwrap()
            .as_deref(),
        Some("b")
    );
    assert_eq!(query_param(Some("n=1"), "from").unwrap(), None);
    assert!(query_param(Some("from=a;from=b"), "from").is_err());
}
