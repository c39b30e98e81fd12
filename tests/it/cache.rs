//! The edge cache (issue #19) against Debian's docker-registry: answers byte for byte as the
//! registry's, authorization checked for every request, digests verified before anything
//! is kept, tags never older than the last push through regate, deletes and 404s, and
//! memory within `cache.max_bytes`. Between regate and the registry sits a relay of the
//! test's own that counts what reaches the registry (and, for one test, tampers with it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// What docker and containerd send when they resolve a reference.
const CLIENT_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, */*";

// ---------------------------------------------------------------------------------------
// A relay between regate and the registry: it records every request it passes on, and is
// a *tampering relay* while `tamper` is set (one byte of every manifest body the registry
// sends is changed, its length and headers kept: a registry or a disk returning the wrong
// bytes).

struct Relay {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    tamper: Arc<AtomicBool>,
    hold: Arc<Hold>,
    task: tokio::task::JoinHandle<()>,
}

/// While `armed`, the next manifest GET's answer is fetched from the registry and then
/// held (`fetched` told) until `release`: an answer overtaken by a write.
#[derive(Default)]
struct Hold {
    armed: AtomicBool,
    fetched: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl Relay {
    async fn start(registry: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tamper = Arc::new(AtomicBool::new(false));
        let hold = Arc::new(Hold::default());
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let (s, t, h) = (seen.clone(), tamper.clone(), hold.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, tamper, hold, client) =
                    (s.clone(), t.clone(), h.clone(), client.clone());
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (seen, tamper, hold, client) =
                            (seen.clone(), tamper.clone(), hold.clone(), client.clone());
                        async move {
                            let (mut parts, body) = req.into_parts();
                            let path = parts.uri.path_and_query().unwrap().to_string();
                            seen.lock()
                                .unwrap()
                                .push(format!("{} {path}", parts.method));
                            parts.uri = format!("http://{registry}{path}").parse().unwrap();
                            let manifest_get =
                                parts.method == Method::GET && path.contains("/manifests/");
                            let body = body.collect().await?.to_bytes();
                            let resp = client
                                .request(Request::from_parts(parts, Full::new(body)))
                                .await
                                .expect("the registry answers the relay");
                            let (mut parts, body) = resp.into_parts();
                            let mut body = body.collect().await?.to_bytes().to_vec();
                            if tamper.load(SeqCst) && manifest_get && parts.status == 200 {
                                let last = body.len() - 2;
                                body[last] ^= 0x20;
                            }
                            if manifest_get && hold.armed.swap(false, SeqCst) {
                                hold.fetched.notify_one();
                                hold.release.notified().await;
                            }
                            parts.headers.remove("transfer-encoding");
                            Ok::<_, hyper::Error>(Response::from_parts(
                                parts,
                                Full::new(Bytes::from(body)),
                            ))
                        }
                    });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Relay {
            addr,
            seen,
            tamper,
            hold,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests for `path` (with this method) reached the registry.
    fn count(&self, method: &str, path: &str) -> usize {
        let wanted = format!("{method} {path}");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| **s == wanted)
            .count()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The registry, the relay in front of it, and regate in front of the relay, with these
/// users and rules and this `cache` section.
struct Stack {
    registry: Registry,
    relay: Relay,
    gateway: Gateway,
}

impl Stack {
    async fn start(cache: &str) -> Stack {
        let registry = Registry::start(None);
        let relay = Relay::start(registry.addr).await;
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"server:
  addr: "127.0.0.1:0"
data_dir: "{data}"
audit_log: "off"
upstream:
  url: "{upstream}"
{cache}
users:
  "admin":
    password: "{admin}"
  "reader":
    password: "{reader}"
  "": {{}}
acl:
  - match: {{account: "admin"}}
    actions: ["*"]
  - match: {{account: "reader", name: "shared/b"}}
    actions: ["pull"]
"#,
            data = dir.path().join("data").display(),
            upstream = relay.url(),
            admin = bcrypt("admin-pw"),
            reader = bcrypt("reader-pw"),
        );
        let gateway = Gateway::start_in(dir, &config).await;
        Stack {
            registry,
            relay,
            gateway,
        }
    }

    fn base(&self) -> String {
        self.gateway.url()
    }

    async fn admin(&self, repo: &str) -> String {
        let scope = format!("repository:{repo}:pull,push,delete");
        let t = token(&self.base(), Some(("admin", "admin-pw")), &[&scope]).await;
        format!("Bearer {t}")
    }

    /// Pushes a config blob and an OCI manifest naming it as `reference`; returns the
    /// manifest (bytes and digest) and the config's digest.
    async fn push_image(
        &self,
        repo: &str,
        reference: &str,
        seed: u64,
    ) -> (Vec<u8>, String, String) {
        let (manifest, config_digest) = push_small_image(&self.base(), repo, seed).await;
        let digest = self.put_manifest(repo, reference, &manifest).await;
        (manifest, digest, config_digest)
    }

    async fn put_manifest(&self, repo: &str, reference: &str, manifest: &[u8]) -> String {
        let auth = self.admin(repo).await;
        let r = http(
            Method::PUT,
            &format!("{}/v2/{repo}/manifests/{reference}", self.base()),
            &[("authorization", &auth), ("content-type", OCI)],
            manifest.to_vec(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        format!("sha256:{}", sha256_hex(manifest))
    }

    /// `method` on `path` through regate with `auth` and the OCI-accepting clients' Accept.
    async fn ask(&self, method: Method, path: &str, auth: &str) -> Resp {
        http(
            method,
            &format!("{}{path}", self.base()),
            &[("authorization", auth), ("accept", CLIENT_ACCEPT)],
            Vec::new(),
        )
        .await
    }

    /// The same straight to the registry.
    async fn direct(&self, method: Method, path: &str) -> Resp {
        http(
            method,
            &format!("{}{path}", self.registry.url()),
            &[("accept", CLIENT_ACCEPT)],
            Vec::new(),
        )
        .await
    }
}

/// Every header but `Date`, names lower-cased, sorted: what a client can compare.
fn headers_without_date(r: &Resp) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(k, _)| k.as_str() != "date")
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    out.sort();
    out
}

/// The head of a raw HTTP/1.1 answer without its `Date` line, as the bytes regate wrote.
fn raw_head_without_date(answer: &str) -> String {
    answer
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_are_the_registrys_byte_for_byte() {
    let s = Stack::start("").await;
    let repo = "shared/a";
    let (manifest, digest, config) = s.push_image(repo, "v1", 1).await;
    let auth = s.admin(repo).await;
    let paths = [
        format!("/v2/{repo}/manifests/v1"),
        format!("/v2/{repo}/manifests/{digest}"),
        format!("/v2/{repo}/blobs/{config}"),
    ];
    for path in &paths {
        for method in [Method::HEAD, Method::GET] {
            let direct = s.direct(method.clone(), path).await;
            assert_eq!(direct.status, 200, "{method} {path}");
            // The first GET fills the cache, the second is answered from it; HEADs come
            // before and after.
            let first = s.ask(method.clone(), path, &auth).await;
            let second = s.ask(method.clone(), path, &auth).await;
            for r in [&first, &second] {
                assert_eq!(r.status, 200, "{method} {path}");
                assert_eq!(headers_without_date(r), headers_without_date(&direct));
                assert_eq!(r.body, direct.body, "{method} {path}");
                assert!(r.header("date").is_some());
            }
        }
    }
    // A manifest's first HEAD is asked of the registry as a GET, which fills the cache;
    // everything after it is answered from memory. A blob's HEAD stays a HEAD (a blob may
    // be large), so the two before the first GET reach the registry.
    assert_eq!(s.relay.count("HEAD", &paths[0]), 0);
    assert_eq!(s.relay.count("GET", &paths[0]), 1);
    assert_eq!(s.relay.count("HEAD", &paths[1]), 0, "filled by the tag's");
    assert_eq!(s.relay.count("GET", &paths[1]), 0);
    assert_eq!(s.relay.count("HEAD", &paths[2]), 2);
    assert_eq!(s.relay.count("GET", &paths[2]), 1);

    // Byte for byte on the wire: a cached answer's head is the forwarded one's, for GET
    // and HEAD.
    let other = "shared/c";
    let (again, _, _) = s.push_image(other, "v1", 1).await;
    assert_eq!(again, manifest);
    let path = format!("/v2/{other}/manifests/{digest}");
    let bearer = s.admin(other).await;
    let request = |method: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {bearer}\r\nAccept: {OCI}\r\nConnection: close\r\n\r\n",
            s.gateway.host()
        )
    };
    let forwarded = raw(s.gateway.addr(), &request("GET")).await;
    let cached = raw(s.gateway.addr(), &request("GET")).await;
    let head = raw(s.gateway.addr(), &request("HEAD")).await;
    assert_eq!(s.relay.count("GET", &path), 1);
    assert_eq!(s.relay.count("HEAD", &path), 0);
    assert_eq!(raw_status(&forwarded), 200);
    assert_eq!(
        raw_head_without_date(&cached),
        raw_head_without_date(&forwarded)
    );
    assert_eq!(
        raw_head_without_date(&head),
        raw_head_without_date(&forwarded)
    );
    assert!(cached.ends_with(std::str::from_utf8(&manifest).unwrap()));
    assert!(head.ends_with("\r\n\r\n"), "a HEAD has no body: {head}");

    // A client that does not accept OCI manifests gets registry:2's own 404 for one,
    // cached or not.
    let r = http(
        Method::GET,
        &format!("{}{}", s.base(), paths[1]),
        &[("authorization", &auth), ("accept", DOCKER)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 404);
    let metrics = get(&format!("{}/metrics", s.base()), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(!text.contains("regate_cache_hits_total 0\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_checked_for_every_cached_answer() {
    let s = Stack::start("").await;
    let (_, digest, config) = s.push_image("shared/a", "v1", 2).await;
    let admin = s.admin("shared/a").await;
    for path in [
        "/v2/shared/a/manifests/v1".to_owned(),
        format!("/v2/shared/a/manifests/{digest}"),
        format!("/v2/shared/a/blobs/{config}"),
    ] {
        // Filled, and answered from the cache.
        assert_eq!(s.ask(Method::GET, &path, &admin).await.status, 200);
        assert_eq!(s.ask(Method::GET, &path, &admin).await.status, 200);
        let reached = s.relay.seen.lock().unwrap().len();
        // No token, a token without pull on shared/a (reader's), anonymous's token, and
        // garbage: each is refused by regate, and nothing reaches the registry.
        let reader = token(
            &s.base(),
            Some(("reader", "reader-pw")),
            &["repository:shared/a:pull"],
        )
        .await;
        let anonymous = token(&s.base(), None, &["repository:shared/a:pull"]).await;
        for (auth, error) in [
            (String::new(), None),
            (format!("Bearer {reader}"), Some("insufficient_scope")),
            (format!("Bearer {anonymous}"), Some("insufficient_scope")),
            ("Bearer x.y.z".to_owned(), Some("invalid_token")),
        ] {
            for method in [Method::GET, Method::HEAD] {
                let r = s.ask(method.clone(), &path, &auth).await;
                assert_eq!(r.status, 401, "{method} {path} with {auth:.20}");
                assert!(r.body.is_empty() || !r.body.starts_with(b"{\"schemaVersion"));
                let challenge = r.header("www-authenticate").unwrap();
                match error {
                    Some(e) => assert!(challenge.contains(e), "{challenge}"),
                    None => assert!(!challenge.contains("error="), "{challenge}"),
                }
            }
        }
        assert_eq!(s.relay.seen.lock().unwrap().len(), reached, "{path}");
    }

    // The same digest in a repository the caller may pull, which does not hold it: the
    // registry's 404 (asked for), not the object cached for shared/a.
    let reader = token(
        &s.base(),
        Some(("reader", "reader-pw")),
        &["repository:shared/b:pull"],
    )
    .await;
    let reader = format!("Bearer {reader}");
    for path in [
        format!("/v2/shared/b/manifests/{digest}"),
        format!("/v2/shared/b/blobs/{config}"),
    ] {
        for method in [Method::GET, Method::HEAD] {
            // A manifest's HEAD goes to the registry as a GET.
            let upstream = if path.contains("/manifests/") {
                "GET"
            } else {
                method.as_str()
            };
            let before = s.relay.count(upstream, &path);
            let r = s.ask(method.clone(), &path, &reader).await;
            assert_eq!(r.status, 404, "{method} {path}");
            assert_eq!(s.relay.count(upstream, &path), before + 1);
        }
    }
    // Once shared/b holds it too, the reader gets it there, and only there.
    let (manifest, digest_b, _) = s.push_image("shared/b", "v1", 2).await;
    assert_eq!(digest_b, digest);
    let path = format!("/v2/shared/b/manifests/{digest}");
    for _ in 0..2 {
        let r = s.ask(Method::GET, &path, &reader).await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], &manifest[..]);
    }
    assert_eq!(
        s.relay.count("GET", &path),
        3,
        "the two 404s before (GET, and HEAD asked as GET), and one fill"
    );
    let r = s
        .ask(
            Method::GET,
            &format!("/v2/shared/a/manifests/{digest}"),
            &reader,
        )
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_match_its_digest_is_not_cached() {
    let s = Stack::start("").await;
    let (manifest, digest, _) = s.push_image("shared/a", "v1", 3).await;
    let auth = s.admin("shared/a").await;
    let path = format!("/v2/shared/a/manifests/{digest}");
    s.relay.tamper.store(true, SeqCst);
    for n in 1..=3 {
        let r = s.ask(Method::GET, &path, &auth).await;
        assert_eq!(r.status, 200);
        // regate passes the registry's bytes on (the client checks the digest), but does
        // not keep them: each GET reaches the registry.
        assert_ne!(&r.body[..], &manifest[..]);
        assert_eq!(r.body.len(), manifest.len());
        assert_eq!(s.relay.count("GET", &path), n);
    }
    let metrics = get(&format!("{}/metrics", s.base()), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("regate_cache_refused_total 3\n"), "{text}");
    assert_eq!(s.gateway.server.gateway().cache().usage().entries, 0);

    // The registry's true bytes are kept, and served.
    s.relay.tamper.store(false, SeqCst);
    for _ in 0..3 {
        let r = s.ask(Method::GET, &path, &auth).await;
        assert_eq!(&r.body[..], &manifest[..]);
    }
    assert_eq!(s.relay.count("GET", &path), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_then_a_pull_sees_the_new_digest() {
    let s = Stack::start("").await;
    let repo = "shared/a";
    let auth = s.admin(repo).await;
    let tag = format!("/v2/{repo}/manifests/latest");
    for seed in 10..30 {
        let (manifest, digest, _) = s.push_image(repo, "latest", seed).await;
        for method in [Method::HEAD, Method::GET, Method::GET] {
            let r = s.ask(method.clone(), &tag, &auth).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
            if method == Method::GET {
                assert_eq!(&r.body[..], &manifest[..]);
            }
        }
    }
    let hits = s.relay.count("GET", &tag);
    assert!(
        hits <= 20,
        "each tag fetched from the registry once per push: {hits}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_from_before_a_push_is_not_cached_after_it() {
    let s = Arc::new(Stack::start("").await);
    let repo = "shared/a";
    let auth = s.admin(repo).await;
    let tag = format!("/v2/{repo}/manifests/latest");
    let (_, old, _) = s.push_image(repo, "latest", 40).await;
    // A pull asks the registry (old digest), and its answer is overtaken by a push.
    s.relay.hold.armed.store(true, SeqCst);
    let pull = {
        let (s, tag, auth) = (s.clone(), tag.clone(), auth.clone());
        tokio::spawn(async move { s.ask(Method::GET, &tag, &auth).await })
    };
    s.relay.hold.fetched.notified().await;
    let (_, new, _) = s.push_image(repo, "latest", 41).await;
    s.relay.hold.release.notify_one();
    let late = pull.await.unwrap();
    assert_eq!(late.header("docker-content-digest"), Some(old.as_str()));
    // Every pull after the push completed sees the new digest.
    for method in [Method::GET, Method::HEAD, Method::GET] {
        let r = s.ask(method.clone(), &tag, &auth).await;
        assert_eq!(
            r.header("docker-content-digest"),
            Some(new.as_str()),
            "{method}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_to_one_tag_leave_no_stale_digest() {
    let s = Arc::new(Stack::start("").await);
    let repo = "shared/a";
    let auth = s.admin(repo).await;
    let tag = format!("/v2/{repo}/manifests/latest");
    // Manifests made first, so the pushes themselves race.
    let mut manifests = Vec::new();
    for seed in 0..8u64 {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","seed":{}}}"#,
            100 + seed
        );
        let config_digest = push_blob(&s.base(), repo, config.as_bytes()).await;
        manifests.push(
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": config_digest, "size": config.len()},
                "layers": []
            }))
            .unwrap(),
        );
    }
    for round in 0..5 {
        let done = Arc::new(AtomicBool::new(false));
        // Readers keep the tag in the cache (and race their fills against the pushes).
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (s, auth, tag, done) = (s.clone(), auth.clone(), tag.clone(), done.clone());
                tokio::spawn(async move {
                    // Whatever the registry answers mid-push (404 before the first, and
                    // registry:2 2.8 sometimes answers 500 while a tag's link is being
                    // rewritten).
                    while !done.load(SeqCst) {
                        s.ask(Method::GET, &tag, &auth).await;
                    }
                })
            })
            .collect();
        let pushers: Vec<_> = manifests
            .iter()
            .cloned()
            .map(|m| {
                let s = s.clone();
                tokio::spawn(async move { s.put_manifest(repo, "latest", &m).await })
            })
            .collect();
        for p in pushers {
            p.await.unwrap();
        }
        // Every push has been answered: what the registry holds now is what regate
        // must serve, by GET and HEAD.
        let truth = s.direct(Method::HEAD, &tag).await;
        let truth = truth.header("docker-content-digest").unwrap().to_owned();
        for method in [Method::GET, Method::HEAD, Method::GET] {
            let r = s.ask(method.clone(), &tag, &auth).await;
            assert_eq!(
                r.header("docker-content-digest"),
                Some(truth.as_str()),
                "round {round}, {method}"
            );
            if method == Method::GET {
                assert_eq!(format!("sha256:{}", sha256_hex(&r.body)), truth);
            }
        }
        done.store(true, SeqCst);
        for r in readers {
            r.await.unwrap();
        }
        manifests.rotate_left(3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_sees_each_new_push_to_a_tag() {
    let s = Stack::start("").await;
    let work = tempfile::tempdir().unwrap();
    let authfile = work.path().join("auth.json");
    let target = format!("docker://{}/shared/a:latest", s.gateway.host());
    let mut last = String::new();
    for seed in 0..3u64 {
        let layout = work.path().join(format!("image-{seed}"));
        oci_image(&layout, 1, 500 + seed);
        let (file, dest) = (authfile.clone(), target.clone());
        let source = format!("oci:{}:latest", layout.display());
        let (ok, out) = blocking(move || {
            skopeo(
                &file,
                &[
                    "copy",
                    "--dest-tls-verify=false",
                    "--dest-creds=admin:admin-pw",
                    &source,
                    &dest,
                ],
            )
        })
        .await;
        assert!(ok, "{out}");
        for _ in 0..2 {
            let (authfile, target) = (authfile.clone(), target.clone());
            let out = blocking(move || {
                std::process::Command::new("skopeo")
                    .args(["inspect", "--raw", "--tls-verify=false"])
                    .args(["--creds=admin:admin-pw", &target])
                    .env("REGISTRY_AUTH_FILE", &authfile)
                    .env("HOME", authfile.parent().unwrap())
                    .output()
                    .unwrap()
            })
            .await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // skopeo may compress the layers on the way: the registry says what it holds.
            let truth = s
                .direct(Method::HEAD, "/v2/shared/a/manifests/latest")
                .await;
            let truth = truth.header("docker-content-digest").unwrap().to_owned();
            assert_eq!(format!("sha256:{}", sha256_hex(&out.stdout)), truth);
            assert_ne!(truth, last, "a new image");
        }
        let truth = s
            .direct(Method::HEAD, "/v2/shared/a/manifests/latest")
            .await;
        last = truth.header("docker-content-digest").unwrap().to_owned();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_drops_the_cached_object() {
    let s = Stack::start("").await;
    let repo = "shared/a";
    let (_, digest, config) = s.push_image(repo, "v1", 4).await;
    let auth = s.admin(repo).await;
    let by_tag = format!("/v2/{repo}/manifests/v1");
    let by_digest = format!("/v2/{repo}/manifests/{digest}");
    let blob = format!("/v2/{repo}/blobs/{config}");
    for path in [&by_tag, &by_digest, &blob, &by_tag, &by_digest, &blob] {
        assert_eq!(s.ask(Method::GET, path, &auth).await.status, 200);
    }
    assert_eq!(
        s.relay.count("GET", &by_digest),
        0,
        "cached by the GET by tag"
    );
    assert_eq!(s.relay.count("GET", &blob), 1);

    let r = s.ask(Method::DELETE, &by_digest, &auth).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    for path in [&by_digest, &by_tag] {
        for method in [Method::GET, Method::HEAD] {
            assert_eq!(
                s.ask(method.clone(), path, &auth).await.status,
                404,
                "{method} {path}"
            );
        }
    }
    // The GET and the HEAD (asked as a GET) after the delete.
    assert_eq!(s.relay.count("GET", &by_digest), 2);

    let r = s.ask(Method::DELETE, &blob, &auth).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    for method in [Method::GET, Method::HEAD] {
        assert_eq!(
            s.ask(method.clone(), &blob, &auth).await.status,
            404,
            "{method}"
        );
    }
    assert_eq!(s.relay.count("GET", &blob), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_is_never_cached() {
    let s = Stack::start("").await;
    let repo = "shared/a";
    let auth = s.admin(repo).await;
    let config = br#"{"architecture":"amd64","os":"linux","seed":5}"#;
    let missing = format!("/v2/{repo}/blobs/sha256:{}", sha256_hex(config));
    let tag = format!("/v2/{repo}/manifests/v1");
    for n in 1..=3 {
        assert_eq!(s.ask(Method::GET, &missing, &auth).await.status, 404);
        assert_eq!(s.ask(Method::GET, &tag, &auth).await.status, 404);
        assert_eq!(s.relay.count("GET", &missing), n);
        assert_eq!(s.relay.count("GET", &tag), n);
    }
    // Pushed now: found at once.
    let (_, digest, config_digest) = s.push_image(repo, "v1", 5).await;
    assert_eq!(format!("/v2/{repo}/blobs/{config_digest}"), missing);
    let r = s.ask(Method::GET, &tag, &auth).await;
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(s.ask(Method::GET, &missing, &auth).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_within_max_bytes() {
    let s = Stack::start("cache: {max_bytes: 256KiB, max_object_bytes: 64KiB}").await;
    let repo = "shared/a";
    let auth = s.admin(repo).await;
    let cache = s.gateway.server.gateway().cache();
    let mut digests = Vec::new();
    for i in 0..24u64 {
        let data = noise(i, 20_000 + 1500 * i as usize);
        digests.push(push_blob(&s.base(), repo, &data).await);
    }
    for round in 0..2 {
        for d in &digests {
            let path = format!("/v2/{repo}/blobs/{d}");
            assert_eq!(s.ask(Method::GET, &path, &auth).await.status, 200);
            let used = cache.usage();
            assert!(used.bytes <= 256 << 10, "round {round}: {used:?}");
        }
    }
    assert!(cache.usage().entries > 0);
    // Over max_object_bytes: streamed every time, never kept.
    let big = push_blob(&s.base(), repo, &noise(99, (64 << 10) + 1)).await;
    let path = format!("/v2/{repo}/blobs/{big}");
    for n in 1..=2 {
        assert_eq!(s.ask(Method::GET, &path, &auth).await.status, 200);
        assert_eq!(s.relay.count("GET", &path), n);
    }

    // Off: everything reaches the registry, nothing is held.
    let off = Stack::start("cache: {max_bytes: 0}").await;
    let (_, digest, _) = off.push_image(repo, "v1", 6).await;
    let auth = off.admin(repo).await;
    let path = format!("/v2/{repo}/manifests/{digest}");
    for n in 1..=3 {
        assert_eq!(off.ask(Method::GET, &path, &auth).await.status, 200);
        assert_eq!(off.relay.count("GET", &path), n);
    }
    assert_eq!(off.gateway.server.gateway().cache().usage().bytes, 0);
}
