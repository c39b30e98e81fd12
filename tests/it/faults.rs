//! What regate survives from its upstream: registry:2 killed in the middle of a push and of
//! a pull, not listening at all, or hanging up without an answer. Each time the client gets
//! a clean, quick error (never a hang, never a truncated body that looks complete), regate
//! stays up, and it serves again as soon as the registry is back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn status_of(url: &str) -> u16 {
    get(url, &[]).await.status.as_u16()
}

/// Pushes a fresh image with skopeo through regate at `host`; returns (success, output).
async fn skopeo_push(host: String, target: &str, seed: u64) -> (bool, String) {
    let target = target.to_owned();
    blocking(move || {
        let work = tempfile::tempdir().unwrap();
        let image = work.path().join("image");
        oci_image(&image, 2, seed);
        let source = format!("oci:{}:latest", image.display());
        let dest = format!("docker://{host}/{target}");
        skopeo(
            &work.path().join("auth.json"),
            &[
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds=admin:admin-pw",
                &source,
                &dest,
            ],
        )
    })
    .await
}

/// Reads a response head from `stream`; returns it and whatever body bytes came with it.
async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            return (head, data[end + 4..].to_vec());
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response head within 10 s")
            .unwrap();
        assert!(n > 0, "closed before a response head");
        data.extend_from_slice(&buf[..n]);
    }
}

fn content_length(head: &str) -> Option<u64> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_killed_during_a_push() {
    let mut seed = Seed::start().await;
    let base = seed.gateway.url();
    let addr = seed.gateway.addr();
    let t = admin_token(&base, "faults/push").await;
    let r = http(
        Method::POST,
        &format!("{base}/v2/faults/push/blobs/uploads/"),
        &[("authorization", &format!("Bearer {t}"))],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 202);
    let location = r.header("location").unwrap().to_owned();
    let session = &location[location.find("/v2/").unwrap()..];

    // A chunked PATCH streaming through regate; the registry dies in the middle of it.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH {session} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {t}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = noise(1, 256 * 1024);
    let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
    framed.extend_from_slice(&chunk);
    framed.extend_from_slice(b"\r\n");
    for _ in 0..4 {
        stream.write_all(&framed).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    seed.registry.kill();
    let killed = Instant::now();
    // The client keeps sending for a while (writes may start failing once regate answers).
    for _ in 0..8 {
        if stream.write_all(&framed).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (head, _) = read_head(&mut stream).await;
    assert!(
        head.starts_with("HTTP/1.1 502") || head.starts_with("HTTP/1.1 503"),
        "{head}"
    );
    assert!(killed.elapsed() < Duration::from_secs(10));

    // regate is up, and says the registry is not.
    assert_eq!(status_of(&format!("{base}/healthz")).await, 200);
    assert_eq!(status_of(&format!("{base}/readyz")).await, 503);
    let (ok, _) = skopeo_push(seed.gateway.host(), "faults/push:down", 1).await;
    assert!(!ok, "a push with the registry down must fail");

    // The registry comes back on the same address and storage: the next push succeeds.
    seed.registry.restart(None);
    assert_eq!(status_of(&format!("{base}/readyz")).await, 200);
    let (ok, out) = skopeo_push(seed.gateway.host(), "faults/push:v1", 2).await;
    assert!(ok, "push after the registry restarted: {out}");
    assert!(seed.registry.has_repository("faults/push"));
    let r = get(
        &format!("{base}/v2/faults/push/manifests/v1"),
        &[
            ("authorization", &format!("Bearer {t}")),
            ("accept", "application/vnd.oci.image.manifest.v1+json"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_killed_during_a_pull() {
    let mut seed = Seed::start().await;
    let base = seed.gateway.url();
    let addr = seed.gateway.addr();
    let t = admin_token(&base, "faults/pull").await;

    // A 64 MiB blob: far more than the socket buffers between the registry and the client
    // hold, so the registry is still sending when it dies.
    let blob = noise(3, 64 << 20);
    let digest = format!("sha256:{}", sha256_hex(&blob));
    let auth = format!("Bearer {t}");
    let r = http(
        Method::POST,
        &format!("{base}/v2/faults/pull/blobs/uploads/"),
        &[("authorization", &auth)],
        Vec::new(),
    )
    .await;
    let location = r.header("location").unwrap().to_owned();
    let r = http(
        Method::PUT,
        &format!("{location}&digest={digest}"),
        &[
            ("authorization", &auth),
            ("content-type", "application/octet-stream"),
        ],
        blob.clone(),
    )
    .await;
    assert_eq!(r.status, 201);

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v2/faults/pull/blobs/{digest} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let (head, mut body) = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length = content_length(&head).expect("a blob is sent with its length");
    assert_eq!(length, blob.len() as u64);
    let mut buf = vec![0u8; 64 * 1024];
    while body.len() < 1 << 20 {
        let n = stream.read(&mut buf).await.unwrap();
        body.extend_from_slice(&buf[..n]);
    }
    seed.registry.kill();
    let killed = Instant::now();

    // The client reads on: the body ends short and the connection closes, promptly.
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("regate closes the connection, it does not hang");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        (body.len() as u64) < length,
        "a cut body must not look complete ({} of {length} bytes)",
        body.len()
    );
    assert_eq!(
        &body[..],
        &blob[..body.len()],
        "what came is the blob's start"
    );
    assert!(killed.elapsed() < Duration::from_secs(10));

    assert_eq!(status_of(&format!("{base}/healthz")).await, 200);
    let r = get(
        &format!("{base}/v2/faults/pull/blobs/{digest}"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 503, "registry down: a quick 503");
    assert_eq!(r.json()["errors"][0]["code"], "UNAVAILABLE");

    // Back again: the whole blob comes down, and pushes work.
    seed.registry.restart(None);
    let r = get(
        &format!("{base}/v2/faults/pull/blobs/{digest}"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&blob));
    let (ok, out) = skopeo_push(seed.gateway.host(), "faults/pull:v1", 4).await;
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_not_listening_at_start() {
    // A loopback port nothing listens on, until the registry starts on it.
    let reserved = ReservedPort::new();
    let port = reserved.port();
    let dir = tempfile::tempdir().unwrap();
    let upstream = format!("http://127.0.0.1:{port}");
    let gateway = Gateway::start(&seed_config(&upstream, &dir.path().join("data"))).await;
    let base = gateway.url();

    assert_eq!(status_of(&format!("{base}/healthz")).await, 200);
    let r = get(&format!("{base}/readyz"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["upstream"], "down");
    // Tokens are regate's own business: still issued.
    let t = admin_token(&base, "faults/late").await;
    let auth = format!("Bearer {t}");
    let requests = [
        (Method::GET, "/v2/".to_owned()),
        (Method::GET, "/v2/faults/late/tags/list".to_owned()),
        (Method::POST, "/v2/faults/late/blobs/uploads/".to_owned()),
        (Method::PUT, "/v2/faults/late/manifests/v1".to_owned()),
    ];
    for (method, path) in &requests {
        let started = Instant::now();
        let r = http(
            method.clone(),
            &format!("{base}{path}"),
            &[("authorization", &auth)],
            b"{}".to_vec(),
        )
        .await;
        assert_eq!(r.status, 503, "{method} {path}");
        assert_eq!(r.json()["errors"][0]["code"], "UNAVAILABLE");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{method} {path}"
        );
    }
    // Unauthorized requests are still refused first, as ever.
    assert_eq!(
        status_of(&format!("{base}/v2/faults/late/tags/list")).await,
        401
    );

    // The registry starts late: regate serves at once, without a restart of its own.
    let registry = Registry::start_in(
        tempfile::tempdir().unwrap(),
        None,
        &format!("127.0.0.1:{port}"),
    );
    drop(reserved);
    assert_eq!(status_of(&format!("{base}/readyz")).await, 200);
    let (ok, out) = skopeo_push(gateway.host(), "faults/late:v1", 5).await;
    assert!(ok, "{out}");
    assert!(registry.has_repository("faults/late"));
    assert!(server_errors(&base)
        .await
        .iter()
        .all(|l| l.contains("status=\"503\"")));
}

/// The `upstream.read_timeout` the read-timeout tests configure (the shortest there is; the
/// default is 900 s).
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// The seed's config for the registry at `addr` with `upstream.read_timeout` at
/// [`READ_TIMEOUT`].
fn with_read_timeout(addr: SocketAddr, data: &std::path::Path) -> String {
    let line = format!("read_timeout: {}", READ_TIMEOUT.as_secs());
    let config = seed_config(&format!("http://{addr}"), data)
        .replace("upstream:\n  url:", &format!("upstream:\n  {line}\n  url:"));
    assert!(config.contains(&line));
    config
}

/// A fake upstream that accepts and answers each connection with `reply`, then hangs up.
async fn fake_upstream(reply: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(reply).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_that_hangs_up_or_talks_nonsense() {
    for reply in [
        &b""[..],
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
    ] {
        let upstream = fake_upstream(reply).await;
        let dir = tempfile::tempdir().unwrap();
        let gateway = Gateway::start(&seed_config(
            &format!("http://{upstream}"),
            &dir.path().join("data"),
        ))
        .await;
        let base = gateway.url();
        let t = admin_token(&base, "faults/odd").await;
        let started = Instant::now();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let req = hyper::Request::get(format!("{base}/v2/faults/odd/tags/list"))
            .header("authorization", format!("Bearer {t}"))
            .body(http_body_util::Empty::new())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        let status = resp.status();
        let body = tokio::time::timeout(
            Duration::from_secs(10),
            http_body_util::BodyExt::collect(resp.into_body()),
        )
        .await
        .expect("the body ends within 10 s");
        let label = String::from_utf8_lossy(reply);
        if status == 200 {
            // The head came whole; the short body must end in an error, not look complete.
            assert!(body.is_err(), "{label}: a short body looked complete");
        } else {
            assert_eq!(status, 502, "{label}");
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{label}");
        assert_eq!(status_of(&format!("{base}/healthz")).await, 200);
    }
}

/// A registry that takes the whole request and never answers (a stopped process, a
/// deadlock): the client gets 504 once `upstream.read_timeout` has passed, counted from the
/// end of its request, never a hang.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_that_never_answers_is_a_504_after_the_read_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            // Read whatever comes, answer nothing, keep the connection open.
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
            held.push(());
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = with_read_timeout(addr, &dir.path().join("data"));
    let gw = Gateway::start_in(dir, &config).await;
    let base = gw.url();
    let t = admin_token(&base, "stuck/app").await;
    let bearer = format!("Bearer {t}");

    let started = Instant::now();
    let r = get(
        &format!("{base}/v2/stuck/app/tags/list"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["errors"][0]["code"], "UNAVAILABLE");
    let took = started.elapsed();
    assert!(
        took >= READ_TIMEOUT && took < READ_TIMEOUT + Duration::from_secs(8),
        "{took:?}"
    );

    // With a body, the clock starts when the body is all sent.
    let r = http(
        Method::PATCH,
        &format!("{base}/v2/stuck/app/blobs/uploads/some-id"),
        &[
            ("authorization", &bearer),
            ("content-type", "application/octet-stream"),
        ],
        vec![7u8; 256 * 1024],
    )
    .await;
    assert_eq!(r.status, 504);
    assert_eq!(
        get(&format!("{base}/healthz"), &[]).await.status,
        200,
        "regate stays up"
    );
}

/// A registry that stops sending in the middle of a body: the transfer is cut after
/// `upstream.read_timeout` of silence, never held open forever.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_that_stalls_mid_body_is_cut_after_the_read_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (_head, _) = read_head(&mut stream).await;
                let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nContent-Type: application/octet-stream\r\n\r\n";
                let _ = stream.write_all(reply).await;
                let _ = stream.write_all(&[1u8; 1000]).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = with_read_timeout(addr, &dir.path().join("data"));
    let gw = Gateway::start_in(dir, &config).await;
    let base = gw.url();
    let t = admin_token(&base, "stall/app").await;
    let started = Instant::now();
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let request = format!(
        "GET /v2/stall/app/blobs/{digest} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {t}\r\n\r\n",
        gw.addr()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the stalled transfer was never cut");
    let took = started.elapsed();
    assert!(took >= READ_TIMEOUT, "{took:?}");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        received.len() < 1_000_000,
        "the body ended short, as the registry's did"
    );
    assert_eq!(get(&format!("{base}/healthz"), &[]).await.status, 200);
}
