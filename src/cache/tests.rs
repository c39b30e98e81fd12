use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::ACCEPT;

use super::*;

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn digest_of(body: &[u8]) -> String {
    let sum = ring::digest::digest(&ring::digest::SHA256, body);
    let hex: String = sum.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn cache(max_bytes: u64, max_object_bytes: u64) -> Cache {
    let settings = Settings {
        max_bytes,
        max_object_bytes,
        ..Settings::default()
    };
    Cache::new(&settings, Arc::default())
}

fn manifest(reference: &str) -> Route {
    Route::Repository {
        name: "team/app".into(),
        kind: RepoKind::Manifest(reference.into()),
    }
}

fn blob(digest: &str) -> Route {
    Route::Repository {
        name: "team/app".into(),
        kind: RepoKind::Blob(digest.into()),
    }
}

fn accepting(types: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for t in types {
        h.append(ACCEPT, HeaderValue::from_str(t).unwrap());
    }
    h
}

/// The registry's answer as registry:2 writes it.
fn answer(status: StatusCode, body: &[u8], digest: &str, content_type: &str) -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::copy_from_slice(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_LENGTH, body.len().into());
    h.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
    h.insert(
        "docker-content-digest",
        HeaderValue::from_str(digest).unwrap(),
    );
    h.insert(
        "etag",
        HeaderValue::from_str(&format!("\"{digest}\"")).unwrap(),
    );
    h.insert(
        DATE,
        HeaderValue::from_static("Fri, 04 Dec 2026 18:05:45 GMT"),
    );
    resp
}

async fn read(resp: Response<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

/// Looks up, answers from the cache or passes `upstream` through `admit`, reads it all.
async fn get(
    cache: &Cache,
    method: Method,
    route: &Route,
    headers: &HeaderMap,
    upstream: impl FnOnce() -> Response<Body>,
) -> (bool, StatusCode, HeaderMap, Bytes) {
    let lookup = cache.lookup(&method, route, headers);
    if let Some(resp) = lookup.as_ref().and_then(|l| cache.answer(l)) {
        let (s, h, b) = read(resp).await;
        return (true, s, h, b);
    }
    let resp = match lookup {
        Some(l) => cache.admit(l, upstream()).await,
        None => upstream(),
    };
    let (s, h, b) = read(resp).await;
    (false, s, h, b)
}

fn never() -> Response<Body> {
    panic!("the registry was asked")
}

#[tokio::test]
async fn a_verified_get_is_served_again_to_get_and_head_with_the_same_headers() {
    let c = cache(1 << 20, 1 << 16);
    let body = b"{\"architecture\":\"amd64\"}";
    let d = digest_of(body);
    let route = blob(&d);
    let none = HeaderMap::new();
    let (hit, _, first, _) = get(&c, Method::GET, &route, &none, || {
        answer(StatusCode::OK, body, &d, "application/octet-stream")
    })
    .await;
    assert!(!hit);
    let (hit, status, headers, bytes) = get(&c, Method::GET, &route, &none, never).await;
    assert!(hit);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&bytes[..], body);
    let mut without_date = first.clone();
    without_date.remove(DATE);
    assert_eq!(headers, without_date);
    let (hit, _, head, bytes) = get(&c, Method::HEAD, &route, &none, never).await;
    assert!(hit);
    assert!(bytes.is_empty());
    assert_eq!(head, without_date);
    assert_eq!(head.get(CONTENT_LENGTH).unwrap(), &body.len().to_string());
}

#[tokio::test]
async fn a_body_that_does_not_match_its_digest_is_passed_on_but_not_kept() {
    let metrics = Arc::new(Metrics::default());
    let c = Cache::new(&Settings::default(), metrics.clone());
    let d = digest_of(b"the real config");
    let route = blob(&d);
    let none = HeaderMap::new();
    for _ in 0..2 {
        let (hit, _, _, bytes) = get(&c, Method::GET, &route, &none, || {
            answer(
                StatusCode::OK,
                b"the fake config",
                &d,
                "application/octet-stream",
            )
        })
        .await;
        assert!(!hit);
        assert_eq!(&bytes[..], b"the fake config");
    }
    assert_eq!(metrics.cache_refused.load(Relaxed), 2);
    assert_eq!(c.usage().entries, 0);
}

#[tokio::test]
async fn errors_and_answers_for_other_digests_are_never_kept() {
    let c = cache(1 << 20, 1 << 16);
    let body = b"{}";
    let d = digest_of(body);
    let route = blob(&d);
    let none = HeaderMap::new();
    let not_found = br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#;
    get(&c, Method::GET, &route, &none, || {
        answer(StatusCode::NOT_FOUND, not_found, &d, "application/json")
    })
    .await;
    // A 200 naming another digest than the one asked for.
    let other = digest_of(b"other");
    get(&c, Method::GET, &route, &none, || {
        answer(StatusCode::OK, b"other", &other, "application/octet-stream")
    })
    .await;
    assert_eq!(c.usage().entries, 0);
}

#[tokio::test]
async fn a_manifest_goes_only_to_requests_that_accept_its_type() {
    let c = cache(1 << 20, 1 << 16);
    let body = br#"{"schemaVersion":2}"#;
    let d = digest_of(body);
    let route = manifest(&d);
    let oci = accepting(&[OCI]);
    get(&c, Method::GET, &route, &oci, || {
        answer(StatusCode::OK, body, &d, OCI)
    })
    .await;
    assert!(get(&c, Method::GET, &route, &oci, never).await.0);
    // registry:2 answers 404 to a request that does not accept OCI manifests.
    let (hit, status, _, _) = get(&c, Method::GET, &route, &accepting(&[DOCKER]), || {
        answer(StatusCode::NOT_FOUND, b"{}", &d, "application/json")
    })
    .await;
    assert!(!hit);
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        !get(&c, Method::GET, &route, &HeaderMap::new(), || {
            answer(StatusCode::NOT_FOUND, b"{}", &d, "application/json")
        })
        .await
        .0
    );
}

#[tokio::test]
async fn a_rewritten_manifest_is_not_kept() {
    // Asked by tag without accepting the stored type, registry:2 rewrites the manifest
    // (schema 1, or a list's amd64 entry): the answer's type is then not one the request
    // lists, unless the request lists the rewritten type, and then it is that request's
    // answer, keyed by its Accept.
    let c = cache(1 << 20, 1 << 16);
    let body = b"signed schema 1";
    let d = digest_of(body);
    let schema1 = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    get(
        &c,
        Method::GET,
        &manifest("latest"),
        &accepting(&[OCI]),
        || answer(StatusCode::OK, body, &d, schema1),
    )
    .await;
    assert_eq!(c.usage().entries, 0);
}

#[tokio::test]
async fn tags_are_keyed_by_what_the_request_accepts() {
    let c = cache(1 << 20, 1 << 16);
    let list = br#"{"manifests":[]}"#;
    let list_type = "application/vnd.docker.distribution.manifest.list.v2+json";
    let platform = br#"{"layers":[]}"#;
    let (dl, dp) = (digest_of(list), digest_of(platform));
    let tag = manifest("latest");
    let both = accepting(&[list_type, DOCKER]);
    let docker_only = accepting(&[DOCKER]);
    get(&c, Method::GET, &tag, &both, || {
        answer(StatusCode::OK, list, &dl, list_type)
    })
    .await;
    // Without the list type registry:2 answers the amd64 manifest instead.
    let (hit, _, _, bytes) = get(&c, Method::GET, &tag, &docker_only, || {
        answer(StatusCode::OK, platform, &dp, DOCKER)
    })
    .await;
    assert!(!hit);
    assert_eq!(&bytes[..], platform);
    let (hit, _, _, bytes) = get(&c, Method::GET, &tag, &both, never).await;
    assert!(hit);
    assert_eq!(&bytes[..], list);
    let (hit, _, _, bytes) = get(&c, Method::GET, &tag, &docker_only, never).await;
    assert!(hit);
    assert_eq!(&bytes[..], platform);
}

#[tokio::test]
async fn a_push_drops_the_tags_and_an_answer_from_before_it_is_not_believed() {
    let c = cache(1 << 20, 1 << 16);
    let oci = accepting(&[OCI]);
    let (old, new) = (&br#"{"v":1}"#[..], &br#"{"v":2}"#[..]);
    let (d_old, d_new) = (digest_of(old), digest_of(new));
    let tag = manifest("latest");
    get(&c, Method::GET, &tag, &oci, || {
        answer(StatusCode::OK, old, &d_old, OCI)
    })
    .await;
    assert!(get(&c, Method::GET, &tag, &oci, never).await.0);

    // A pull looked up before a push completes, answered (old) after it.
    let early = c.lookup(&Method::GET, &tag, &oci).unwrap();
    assert!(c.answer(&early).is_some());
    drop(
        c.write(&Method::PUT, &tag)
            .expect("a manifest PUT changes tags"),
    );
    read(
        c.admit(early, answer(StatusCode::OK, old, &d_old, OCI))
            .await,
    )
    .await;
    let (hit, _, _, bytes) = get(&c, Method::GET, &tag, &oci, || {
        answer(StatusCode::OK, new, &d_new, OCI)
    })
    .await;
    assert!(!hit);
    assert_eq!(&bytes[..], new);
    let (hit, _, _, bytes) = get(&c, Method::GET, &tag, &oci, never).await;
    assert!(hit);
    assert_eq!(&bytes[..], new);
}

#[tokio::test]
async fn a_delete_drops_the_object_and_a_late_answer_from_before_it() {
    let c = cache(1 << 20, 1 << 16);
    let body = b"layer";
    let d = digest_of(body);
    let route = blob(&d);
    let none = HeaderMap::new();
    let registry = || answer(StatusCode::OK, body, &d, "application/octet-stream");
    get(&c, Method::GET, &route, &none, registry).await;
    let early = c.lookup(&Method::GET, &route, &none).unwrap();
    drop(
        c.write(&Method::DELETE, &route)
            .expect("a blob DELETE changes the cache"),
    );
    assert_eq!(c.usage().entries, 0);
    read(c.admit(early, registry()).await).await;
    let (hit, status, _, _) = get(&c, Method::GET, &route, &none, || {
        answer(StatusCode::NOT_FOUND, b"{}", &d, "application/json")
    })
    .await;
    assert!(!hit);
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn memory_stays_within_max_bytes_and_large_objects_are_streamed() {
    let max = 64 << 10;
    let c = cache(max, 4 << 10);
    for i in 0..200u32 {
        let body = vec![i as u8; 3000 + i as usize];
        let d = digest_of(&body);
        get(&c, Method::GET, &blob(&d), &HeaderMap::new(), || {
            answer(StatusCode::OK, &body, &d, "application/octet-stream")
        })
        .await;
        assert!(c.usage().bytes <= max, "{:?}", c.usage());
    }
    assert!(c.usage().entries > 0);
    let big = vec![7u8; (4 << 10) + 1];
    let d = digest_of(&big);
    let before = c.usage();
    get(&c, Method::GET, &blob(&d), &HeaderMap::new(), || {
        answer(StatusCode::OK, &big, &d, "application/octet-stream")
    })
    .await;
    let looked = c
        .lookup(&Method::GET, &blob(&d), &HeaderMap::new())
        .unwrap();
    assert!(c.answer(&looked).is_none());
    assert!(c.usage().bytes <= max && c.usage().entries <= before.entries + 1);
}

#[tokio::test]
async fn copies_in_flight_are_bounded_too() {
    // 64 KiB cache: 16 KiB of copies at once.
    let c = cache(64 << 10, 16 << 10);
    let body = vec![1u8; 16 << 10];
    let d = digest_of(&body);
    let route = blob(&d);
    let first = c.lookup(&Method::GET, &route, &HeaderMap::new()).unwrap();
    let second = c.lookup(&Method::GET, &route, &HeaderMap::new()).unwrap();
    let a = c
        .admit(
            first,
            answer(StatusCode::OK, &body, &d, "application/octet-stream"),
        )
        .await;
    assert_eq!(c.filling.used(), 16 << 10);
    // No room for a second copy: passed on, not copied.
    let b = c
        .admit(
            second,
            answer(StatusCode::OK, &body, &d, "application/octet-stream"),
        )
        .await;
    assert_eq!(c.filling.used(), 16 << 10);
    assert_eq!(read(b).await.2.len(), 16 << 10);
    assert_eq!(read(a).await.2.len(), 16 << 10);
    assert_eq!(c.filling.used(), 0);
    assert_eq!(c.usage().entries, 1);
}

#[tokio::test]
async fn a_manifest_head_fills_the_cache_and_a_blob_head_does_not() {
    let c = cache(1 << 20, 1 << 16);
    let body = br#"{"schemaVersion":2}"#;
    let d = digest_of(body);
    let oci = accepting(&[OCI]);
    let tag = manifest("v1");
    let lookup = c.lookup(&Method::HEAD, &tag, &oci).unwrap();
    // The gateway asks the registry with a GET: its answer has the body.
    assert!(Cache::fetches_body(&lookup));
    let (status, headers, bytes) =
        read(c.admit(lookup, answer(StatusCode::OK, body, &d, OCI)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes.is_empty(), "the client asked HEAD");
    assert_eq!(
        headers.get(CONTENT_LENGTH).unwrap(),
        &body.len().to_string()
    );
    for method in [Method::HEAD, Method::GET] {
        let (hit, _, _, _) = get(&c, method.clone(), &tag, &oci, never).await;
        assert!(hit, "{method}");
        assert!(get(&c, method, &manifest(&d), &oci, never).await.0);
    }
    // An error's body is read and dropped; nothing is kept.
    let missing = manifest("v2");
    let lookup = c.lookup(&Method::HEAD, &missing, &oci).unwrap();
    let (status, _, bytes) = read(
        c.admit(
            lookup,
            answer(StatusCode::NOT_FOUND, b"{}", &d, "application/json"),
        )
        .await,
    )
    .await;
    assert_eq!((status, bytes.len()), (StatusCode::NOT_FOUND, 0));

    let blob_body = b"config";
    let bd = digest_of(blob_body);
    let lookup = c
        .lookup(&Method::HEAD, &blob(&bd), &HeaderMap::new())
        .unwrap();
    assert!(
        !Cache::fetches_body(&lookup),
        "a blob may be large: HEAD stays HEAD"
    );
    assert!(
        !get(&c, Method::HEAD, &blob(&bd), &HeaderMap::new(), || {
            answer(StatusCode::OK, b"", &bd, "application/octet-stream")
        })
        .await
        .0
    );
    let lookup = c
        .lookup(&Method::HEAD, &blob(&bd), &HeaderMap::new())
        .unwrap();
    assert!(c.answer(&lookup).is_none());
}

#[test]
fn off_conditional_and_other_requests_are_not_the_caches() {
    let d = digest_of(b"x");
    let off = cache(0, 1);
    assert!(off
        .lookup(&Method::GET, &blob(&d), &HeaderMap::new())
        .is_none());
    let c = cache(1 << 20, 1 << 10);
    let mut range = HeaderMap::new();
    range.insert("range", HeaderValue::from_static("bytes=0-1"));
    assert!(c.lookup(&Method::GET, &blob(&d), &range).is_none());
    let mut inm = HeaderMap::new();
    inm.insert("if-none-match", HeaderValue::from_static("\"x\""));
    assert!(c.lookup(&Method::HEAD, &blob(&d), &inm).is_none());
    assert!(c
        .lookup(&Method::PUT, &manifest("v1"), &HeaderMap::new())
        .is_none());
    assert!(c
        .lookup(&Method::GET, &manifest("sha256:ABC"), &HeaderMap::new())
        .is_none());
    let tags = Route::Repository {
        name: "a".into(),
        kind: RepoKind::Tags,
    };
    assert!(c.lookup(&Method::GET, &tags, &HeaderMap::new()).is_none());
    assert!(c.write(&Method::GET, &manifest("v1")).is_none());
    assert!(c.write(&Method::PATCH, &blob(&d)).is_none());
}

#[test]
fn checkable_digests() {
    assert!(fill::checkable(&digest_of(b"")));
    assert!(!fill::checkable("sha256:ABCDEF"));
    assert!(!fill::checkable(&digest_of(b"").to_uppercase()));
    assert!(!fill::checkable("md5:d41d8cd98f00b204e9800998ecf8427e"));
    assert!(fill::matches(&digest_of(b"abc"), b"abc"));
    assert!(!fill::matches(&digest_of(b"abc"), b"abd"));
}

/// Replicas see what this one publishes, in the order it happened.
#[test]
fn writes_are_published_to_replicas() {
    use std::sync::Mutex;
    struct Seen(Arc<Mutex<Vec<Change>>>);
    impl Replicas for Seen {
        fn publish(&self, change: &Change) {
            self.0.lock().unwrap().push(change.clone());
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let c = Cache::with_replicas(
        &Settings::default(),
        Arc::default(),
        Box::new(Seen(seen.clone())),
    );
    let d = digest_of(b"m");
    drop(c.write(&Method::DELETE, &manifest(&d)));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Change::Tags {
                repository: "team/app".into()
            },
            Change::Deleted {
                repository: "team/app".into(),
                kind: Kind::Manifest,
                digest: d,
            }
        ]
    );
}
