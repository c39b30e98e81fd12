//! What regate survives from hostile clients: oversized and overmany headers, clients that
//! dribble or never send a request (slowloris), and uploads that stall, while a slow but
//! live upload is never cut. More connections than it serves at once: connections.rs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The request-head timeout the in-process tests give regate, instead of its default
/// (`Timeouts::request_head`, 10 s), so that they do not wait out the real one.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// The client body timeout they give it, instead of `Timeouts::client_body_idle` (30 s).
/// Longer than the slow upload's gaps, as the default is longer than the head timeout.
const BODY_IDLE: Duration = Duration::from_secs(7);

/// Connects, writes `head`, then one byte of `dribble` a second, until the server closes
/// the connection; returns how long the server kept it after `head`.
async fn held_for(addr: SocketAddr, head: Vec<u8>, dribble: Vec<u8>) -> Duration {
    let mut dribble = dribble.into_iter();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&head).await.unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still open after 60 s"
        );
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            // An error answer (408) before the close.
            Ok(Ok(_)) => {}
            Err(_) => {
                if let Some(b) = dribble.next() {
                    if stream.write_all(&[b]).await.is_err() {
                        return started.elapsed();
                    }
                }
            }
        }
    }
}

/// regate with the short timeouts above.
async fn short_timeouts() -> Seed {
    Seed::start_with(Timeouts {
        request_head: HEADER_TIMEOUT,
        client_body_idle: BODY_IDLE,
        ..Timeouts::default()
    })
    .await
}

async fn healthy(base: &str) {
    let r = get(&format!("{base}/healthz"), &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_and_overmany_headers_are_refused() {
    let seed = Seed::start().await;
    let addr = seed.gateway.addr();
    let base = seed.gateway.url();
    let quiet = Duration::from_secs(5);

    // One huge header, and a head made huge by many headers: 431 and close (hyper's
    // buffer limit), before anything is forwarded.
    let huge = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    let answer = raw_exchange(addr, huge.as_bytes(), quiet).await;
    assert_eq!(raw_status(&answer), 431, "{answer}");
    // The bound on what a connection buffers: a head over 64 KiB is refused (hyper alone
    // would buffer ~400 KiB per connection).
    let over = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let answer = raw_exchange(addr, over.as_bytes(), quiet).await;
    assert_eq!(raw_status(&answer), 431, "{answer}");
    let under = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let answer = raw_exchange(addr, under.as_bytes(), quiet).await;
    assert_eq!(
        raw_status(&answer),
        200,
        "a 32 KiB head is served: {answer}"
    );
    let many_big: String = (0..90)
        .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(8 * 1024)))
        .collect();
    let request = format!("GET /v2/ HTTP/1.1\r\nHost: x\r\n{many_big}\r\n");
    let answer = raw_exchange(addr, request.as_bytes(), quiet).await;
    assert_eq!(raw_status(&answer), 431, "{answer}");

    // More than 100 headers: 431. 100 are fine.
    let headers = |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: v\r\n")).collect() };
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
        headers(120)
    );
    let answer = raw_exchange(addr, request.as_bytes(), quiet).await;
    assert_eq!(raw_status(&answer), 431, "{answer}");
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
        headers(90)
    );
    let answer = raw_exchange(addr, request.as_bytes(), quiet).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");

    // An overlong request line is refused too.
    let long_uri = format!("/v2/{}/tags/list", "a/".repeat(40 * 1024));
    let request = format!("GET {long_uri} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let status = raw_status(&raw_exchange(addr, request.as_bytes(), quiet).await);
    assert!(status == 414 || status == 431 || status == 400, "{status}");

    healthy(&base).await;
    assert!(
        seed.registry.request_uris().is_empty(),
        "nothing was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_clients_are_dropped_after_the_header_timeout() {
    let seed = short_timeouts().await;
    let addr = seed.gateway.addr();
    let base = seed.gateway.url();

    // An idle keep-alive connection, after one answered request.
    let idle = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let started = Instant::now();
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    });
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("connects and sends nothing", Vec::new(), Vec::new()),
        (
            "sends one byte of the HTTP/2 preface",
            b"P".to_vec(),
            Vec::new(),
        ),
        (
            "dribbles the HTTP/2 preface",
            b"PRI * HTTP/2.0".to_vec(),
            b"\r\n\r\nSM\r\n\r".to_vec(),
        ),
        (
            "sends the HTTP/2 preface and settings, then no request",
            [
                &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
                &[0, 0, 0, 4, 0, 0, 0, 0, 0],
            ]
            .concat(),
            Vec::new(),
        ),
        (
            "sends half a request line",
            b"GET /v2/ HT".to_vec(),
            Vec::new(),
        ),
        (
            "dribbles headers a byte a second",
            b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec(),
            vec![b'a'; 60],
        ),
    ];
    let clients: Vec<_> = cases
        .into_iter()
        .map(|(label, head, dribble)| {
            tokio::spawn(async move { (label, held_for(addr, head, dribble).await) })
        })
        .collect();

    // Meanwhile, everyone else is served.
    tokio::time::sleep(HEADER_TIMEOUT / 2).await;
    healthy(&base).await;

    for client in clients {
        let (label, held) = client.await.unwrap();
        assert!(
            held >= HEADER_TIMEOUT - Duration::from_secs(1)
                && held <= HEADER_TIMEOUT + Duration::from_secs(4),
            "a client that {label} was held {held:?}"
        );
    }
    let held = idle.await.unwrap();
    assert!(
        held <= HEADER_TIMEOUT + Duration::from_secs(4),
        "idle keep-alive held {held:?}"
    );
    healthy(&base).await;
}

/// Starts an upload in `repo` through regate; returns the token and the session's
/// path and query.
async fn upload_session(base: &str, repo: &str) -> (String, String) {
    let t = admin_token(base, repo).await;
    let r = http(
        Method::POST,
        &format!("{base}/v2/{repo}/blobs/uploads/"),
        &[("authorization", &format!("Bearer {t}"))],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 202);
    let location = r.header("location").unwrap();
    let rest = location.strip_prefix("http://").unwrap();
    (t, rest[rest.find('/').unwrap()..].to_owned())
}

/// Opens a chunked PATCH of `session`; the body is written by the caller.
async fn open_patch(addr: SocketAddr, session: &str, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH {session} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

async fn write_chunk(stream: &mut TcpStream, data: &[u8]) {
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(b"\r\n");
    stream.write_all(&chunk).await.unwrap();
}

async fn read_answer(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Both at once (they are the slowest cases of this file): a slow but live upload survives
/// gaps longer than the header timeout, and a stalled one is cut off with a 408 after
/// BODY_IDLE, counted as the client's fault, not a 5xx.
#[tokio::test(flavor = "multi_thread")]
async fn slow_uploads_survive_and_stalled_ones_are_cut_off() {
    let seed = short_timeouts().await;
    tokio::join!(a_slow_but_live_upload(&seed), a_stalled_upload(&seed));
    let base = seed.gateway.url();
    assert!(server_errors(&base).await.is_empty());
    healthy(&base).await;
}

async fn a_slow_but_live_upload(seed: &Seed) {
    let base = seed.gateway.url();
    let addr = seed.gateway.addr();
    let (t, session) = upload_session(&base, "slow/app").await;

    // Three chunks HEADER_TIMEOUT + 2 s apart: each gap is longer than the header timeout
    // (and shorter than BODY_IDLE), and the whole upload runs more than twice as long.
    let data = noise(5, 3 * 4096);
    let mut stream = open_patch(addr, &session, &t).await;
    let started = Instant::now();
    for (i, part) in data.chunks(4096).enumerate() {
        if i > 0 {
            tokio::time::sleep(HEADER_TIMEOUT + Duration::from_secs(2)).await;
        }
        write_chunk(&mut stream, part).await;
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = read_answer(&mut stream, Duration::from_secs(20)).await;
    assert!(started.elapsed() > 2 * HEADER_TIMEOUT);
    assert_eq!(raw_status(&answer), 202, "{answer}");
    assert_eq!(raw_header(&answer, "range"), Some("0-12287"));

    // The upload completes, and the registry holds exactly the bytes sent.
    let location = raw_header(&answer, "location").unwrap();
    let digest = format!("sha256:{}", sha256_hex(&data));
    let r = http(
        Method::PUT,
        &format!("{location}&digest={digest}"),
        &[("authorization", &format!("Bearer {t}"))],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = get(
        &format!("{base}/v2/slow/app/blobs/{digest}"),
        &[("authorization", &format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(r.body.as_ref(), data.as_slice());
}

async fn a_stalled_upload(seed: &Seed) {
    let base = seed.gateway.url();
    let addr = seed.gateway.addr();
    let (t, session) = upload_session(&base, "stalled/app").await;

    let mut stream = open_patch(addr, &session, &t).await;
    write_chunk(&mut stream, &noise(6, 4096)).await;
    let started = Instant::now();
    let answer = read_answer(&mut stream, BODY_IDLE + Duration::from_secs(10)).await;
    let held = started.elapsed();
    assert_eq!(raw_status(&answer), 408, "{answer}");
    assert!(
        held >= BODY_IDLE - Duration::from_secs(1) && held <= BODY_IDLE + Duration::from_secs(5),
        "held {held:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_stays_bounded_under_200_dribbling_connections() {
    let SeedProcess {
        regate,
        registry: _registry,
        dir: _dir,
    } = SeedProcess::start();
    let addr: SocketAddr = regate.addr.parse().unwrap();
    let base = regate.url();
    healthy(&base).await;
    let pid = regate.child.id();
    let before = rss_bytes(pid);

    // 200 connections sending a head a byte a second; half of them first send nearly as
    // much of a head as regate buffers (64 KiB).
    let big = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}",
        "a".repeat(60 * 1024)
    );
    let clients: Vec<_> = (0..200)
        .map(|i| {
            let head = if i % 2 == 0 {
                big.clone().into_bytes()
            } else {
                b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec()
            };
            tokio::spawn(held_for(addr, head, vec![b'a'; 60]))
        })
        .collect();

    let mut peak = 0;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(rss_bytes(pid));
        // A normal client is served meanwhile, within a second.
        let started = Instant::now();
        let t = token(&base, Some(("admin", "admin-pw")), &[]).await;
        let r = get(
            &format!("{base}/v2/"),
            &[("authorization", &format!("Bearer {t}"))],
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // The binary runs with regate's default head timeout.
    let header_timeout = Timeouts::default().request_head;
    for client in clients {
        let held = client.await.unwrap();
        assert!(held <= header_timeout + Duration::from_secs(4), "{held:?}");
    }
    let after = rss_bytes(pid);
    eprintln!(
        "regate RSS: {} KiB at rest, {} KiB peak, {} KiB after",
        before / 1024,
        peak / 1024,
        after / 1024
    );
    assert!(peak < 64 * 1024 * 1024, "peak RSS {} KiB", peak / 1024);
    healthy(&base).await;
}
