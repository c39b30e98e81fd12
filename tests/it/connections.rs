//! How many connections regate holds (issue #20): 10,000 idle keep-alive connections at
//! once, each answered; `server.max_connections` holding the ones past it in the listen
//! queue until one closes, and counting them; the open files limit raised at start.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough that no connection of these tests is closed for being idle: what they
/// check must not depend on how fast a shared machine opens thousands of connections.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// The idle connections the issue asks regate to hold.
const IDLE: usize = 10_000;
/// Where the client half of the 10,000-connection test finds regate (`ADDR COUNT`).
const CLIENTS_ENV: &str = "IT_IDLE_CLIENTS";
const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

/// This process's (soft, hard) limits on open files, as `/proc/self/limits` says.
fn open_files_limit(pid: &str) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse().ok());
    (
        numbers.next().unwrap_or(0),
        numbers.next().unwrap_or(u64::MAX),
    )
}

/// Sends [`REQUEST`] and reads its whole answer; the status, or `None` if the connection
/// failed or closed first.
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> Option<u16> {
    stream.write_all(REQUEST).await.ok()?;
    answer(stream).await
}

/// Reads one whole answer; its status, or `None` if the connection failed or closed first.
async fn answer<S: AsyncRead + Unpin>(stream: &mut S) -> Option<u16> {
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut answer = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = answer.parse(&buf) {
            let length: usize = answer
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            if buf.len() >= head + length {
                return answer.code;
            }
        }
    }
}

/// regate as the seed runs it, plus `extra` keys in `server:`, with idle connections kept.
async fn gateway_with(registry: &Registry, extra: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let config = derive(
        &seed_config(&registry.url(), &dir.path().join("data")),
        &[(
            "server:\n  addr: \"127.0.0.1:0\"\n",
            &format!("server:\n  addr: \"127.0.0.1:0\"\n{extra}"),
        )],
    );
    let timeouts = Timeouts {
        request_head: IDLE_TIMEOUT,
        ..Timeouts::default()
    };
    Gateway::start_with(dir, &config, timeouts).await
}

/// The value of an unlabelled line of a `/metrics` text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .parse()
        .unwrap()
}

async fn metrics_at(addr: SocketAddr) -> String {
    let r = get(&format!("http://{addr}/metrics"), &[]).await;
    assert_eq!(r.status, 200);
    String::from_utf8(r.body.to_vec()).unwrap()
}

/// Reads what comes within `within`; `""` if nothing does.
async fn read_some(stream: &mut TcpStream, within: Duration) -> String {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_cap_wait_until_one_closes_and_are_counted() {
    const CAP: usize = 8;
    let registry = Registry::start(None);
    let gateway = gateway_with(
        &registry,
        &format!("  metrics_addr: \"127.0.0.1:0\"\n  max_connections: {CAP}\n"),
    )
    .await;
    let addr = gateway.addr();
    let metrics = gateway.server.metrics_addr().unwrap();

    // Each of the first CAP connections is served.
    let mut held = Vec::with_capacity(CAP);
    for _ in 0..CAP {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut s).await, Some(200));
        held.push(s);
    }
    // One more: the kernel takes it, regate does not serve it while the cap is reached.
    let mut extra = TcpStream::connect(addr).await.unwrap();
    extra.write_all(REQUEST).await.unwrap();
    let waited = read_some(&mut extra, Duration::from_secs(2)).await;
    assert_eq!(waited, "", "served past the cap");
    // `/metrics` has a listener and slots of its own, so it answers meanwhile.
    let text = metrics_at(metrics).await;
    assert_eq!(
        metric(&text, "regate_connections_open"),
        CAP as u64,
        "{text}"
    );
    assert_eq!(metric(&text, "regate_connections_max"), CAP as u64);
    assert!(metric(&text, "regate_connection_cap_reached_total") >= 1);

    // One closes: the waiting one is served, and counted as held.
    held.pop();
    let served = read_some(&mut extra, Duration::from_secs(30)).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served:?}");
    let text = metrics_at(metrics).await;
    assert_eq!(metric(&text, "regate_connections_held_total"), 1, "{text}");
    assert_eq!(metric(&text, "regate_connections_open"), CAP as u64);
    drop(held);
    drop(extra);
    let r = get(&format!("{}/healthz", gateway.url()), &[]).await;
    assert_eq!(r.status, 200);
}

/// An idle HTTP/1 keep-alive connection comes back for the next request (also a head sent
/// in two pieces), keeps pipelined requests in order, and closes when a request asks it
/// to: what any change to how idle connections are held (issue #20 item 1) must keep.
#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_resume_keep_order_and_close_when_asked() {
    let registry = Registry::start(None);
    let gateway = gateway_with(&registry, "").await;
    let addr = gateway.addr();
    parked_and_resumed(|| async move { TcpStream::connect(addr).await.unwrap() }).await;
}

/// The same over HTTPS (HTTP/1.1 by ALPN): a parked TLS connection keeps rustls' session
/// and resumes it, whatever rustls had decrypted for it.
#[tokio::test(flavor = "multi_thread")]
async fn idle_tls_connections_resume_keep_order_and_close_when_asked() {
    let tls = TlsSeed::start().await;
    let addr = tls.seed.gateway.addr();
    let connector =
        tokio_rustls::TlsConnector::from(crate::https::tls_config(&tls.ca(), &[b"http/1.1"]));
    parked_and_resumed(|| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from(TLS_HOST).unwrap();
            connector.connect(name, tcp).await.unwrap()
        }
    })
    .await;
}

/// Long enough idle for regate to park a connection (it does after 50 to 100 ms).
const PARKED: Duration = Duration::from_millis(250);

/// What both tests above check, on connections `connect` opens.
async fn parked_and_resumed<S, C, F>(connect: C)
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Fn() -> F,
    F: std::future::Future<Output = S>,
{
    let mut s = connect().await;
    for _ in 0..3 {
        assert_eq!(ask(&mut s).await, Some(200));
        // Idle for a moment: parked (after 50 to 100 ms), then resumed by the next request.
        tokio::time::sleep(PARKED).await;
    }
    // A head in two pieces, the second after a pause.
    s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(PARKED).await;
    s.write_all(b"Host: x\r\n\r\n").await.unwrap();
    assert_eq!(answer(&mut s).await, Some(200));

    // Three requests in one write (over TLS, one record), the last asking to close: three
    // answers in order, then the end of the connection.
    let mut s = connect().await;
    let pipelined = [
        REQUEST,
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ]
    .concat();
    s.write_all(&pipelined).await.unwrap();
    s.flush().await.unwrap();
    let mut all = Vec::new();
    // Over TLS a close without close_notify would be an error after the answers: what
    // counts is that the connection ends, with the three answers before.
    let _ = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut all))
        .await
        .expect("the connection closes after `Connection: close`");
    let all = String::from_utf8_lossy(&all);
    let statuses: Vec<&str> = all
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &all[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "401", "200"], "{all}");
}

/// Both ends of 10,000 connections in one process would take 20,000 descriptors, more than
/// some machines' hard limit; so regate runs here (in-process, with a long idle timeout)
/// and the clients in a child: this test binary again, running [`idle_clients`].
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_idle_connections_are_held_and_each_answered() {
    let registry = Registry::start(None);
    let gateway = gateway_with(&registry, "").await;
    // regate raised this process's soft limit to the hard one when it started.
    let (soft, hard) = open_files_limit("self");
    assert_eq!(soft, hard);
    assert!(
        soft >= IDLE as u64 + 2048,
        "this test needs {} open files; the hard limit is {hard} (raise it: ulimit -Hn)",
        IDLE + 2048
    );
    let mut child = Reaped(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "connections::idle_clients",
                "--ignored",
                "--nocapture",
            ])
            .args(["--test-threads", "1"])
            .env(CLIENTS_ENV, format!("{} {IDLE}", gateway.addr()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    // The child says how many were answered, then holds them all until its stdin closes.
    let (report, mut rest) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let report = lines
            .by_ref()
            .map_while(Result::ok)
            // After libtest's `test NAME ... ` on the same line.
            .find_map(|l| l.split_once("idle-clients: ").map(|(_, r)| r.to_owned()));
        (report, lines)
    })
    .await
    .unwrap();
    let report = report.expect("the client child ended without a report");
    assert_eq!(
        report,
        format!("opened {IDLE}, answered {IDLE}, answered again {IDLE}"),
        "every connection is answered, on its first request and on one after all are open"
    );
    // All of them are open at once, and regate serves more meanwhile.
    let text = metrics_at(gateway.addr()).await;
    assert!(
        metric(&text, "regate_connections_open") > IDLE as u64,
        "{text}"
    );
    assert_eq!(metric(&text, "regate_connection_cap_reached_total"), 0);
    drop(child.0.stdin.take());
    let status = tokio::task::spawn_blocking(move || {
        // Read to the end, so that the child's last lines do not meet a closed pipe.
        rest.by_ref().for_each(drop);
        child.0.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "the client child failed: {status}");
    let r = get(&format!("{}/healthz", gateway.url()), &[]).await;
    assert_eq!(r.status, 200);
}

/// A child process, killed if the test ends before it does.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The client half of [`ten_thousand_idle_connections_are_held_and_each_answered`], which
/// runs it in a child process; on its own it does nothing.
#[test]
#[ignore = "run by ten_thousand_idle_connections_are_held_and_each_answered in a child process"]
fn idle_clients() {
    let Ok(spec) = std::env::var(CLIENTS_ENV) else {
        return;
    };
    let (addr, count) = spec.split_once(' ').unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    let count: usize = count.parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let held = runtime.block_on(async {
        // Opened a few hundred at a time: the listen queue is 1,024 long.
        let gate = Arc::new(tokio::sync::Semaphore::new(256));
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..count {
            let gate = gate.clone();
            opening.spawn(async move {
                let _turn = gate.acquire_owned().await.unwrap();
                let mut stream = TcpStream::connect(addr).await.ok()?;
                let status = ask_within(&mut stream).await;
                Some((stream, status))
            });
        }
        let mut open = Vec::with_capacity(count);
        let mut answered = 0;
        while let Some(done) = opening.join_next().await {
            if let Some((stream, status)) = done.unwrap() {
                answered += usize::from(status == Some(200));
                open.push(stream);
            }
        }
        let opened = open.len();
        eprintln!("idle clients: {opened} open, {answered} answered; asking each again");
        // All open: one more request on each.
        let mut again = tokio::task::JoinSet::new();
        for mut stream in open {
            let gate = gate.clone();
            again.spawn(async move {
                let _turn = gate.acquire_owned().await.unwrap();
                let status = ask_within(&mut stream).await;
                (stream, status)
            });
        }
        let mut held = Vec::with_capacity(count);
        let mut answered_again = 0;
        while let Some(done) = again.join_next().await {
            let (stream, status) = done.unwrap();
            answered_again += usize::from(status == Some(200));
            held.push(stream);
        }
        println!(
            "idle-clients: opened {opened}, answered {answered}, answered again {answered_again}"
        );
        held
    });
    // Held until the test has looked at regate's numbers and closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    eprintln!("idle clients: closing");
    drop(held);
}

/// [`ask`], given up after a generous while: a request regate never answers is a
/// failure of the test, not a hang (no timing is judged: any answer counts).
async fn ask_within(stream: &mut TcpStream) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(120), ask(stream))
        .await
        .ok()
        .flatten()
}

#[test]
fn the_binary_raises_its_open_files_limit_and_derives_its_cap_from_it() {
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("regate.yml");
    std::fs::write(
        &config,
        seed_config(&registry.url(), &dir.path().join("data")),
    )
    .unwrap();
    // Started at 1,024 open files, as most service managers start a process.
    let regate = RegateProcess::start_under(
        &["prlimit", "--nofile=1024:"],
        &config,
        dir.path().join("regate.log"),
    );
    let (soft, hard) = open_files_limit(&regate.child.id().to_string());
    assert_eq!(soft, hard, "the soft limit is raised to the hard one");
    let cap = (hard / 2).max(16_384);
    let log = regate.log_text();
    assert!(
        log.contains(&format!("max_connections={cap}")),
        "max_connections {cap} in:\n{log}"
    );
}
