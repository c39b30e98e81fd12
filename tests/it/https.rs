//! HTTPS: `regate cert init`, a client that trusts only the CA it made, HTTP/2 (hyper and
//! curl multiplexing blobs on one connection) and
//! HTTP/1.1 by ALPN, blob streaming over HTTP/2, certificate renewal without a restart,
//! the plain-HTTP redirect listener, HSTS, and no TLS below 1.2.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};

fn cert_init(out: &Path, hosts: &[&str], force: bool) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regate"));
    cmd.args(["cert", "init", "--out"]).arg(out);
    for h in hosts {
        cmd.args(["--host", h]);
    }
    if force {
        cmd.arg("--force");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/etc/docker/certs.d/"), "{text}");
}

pub(crate) fn tls_config(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

struct Tls {
    alpn: Option<Vec<u8>>,
    leaf: CertificateDer<'static>,
    sender: Sender,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One TLS connection to `addr` as `name`, trusting only `ca`.
async fn connect(
    addr: std::net::SocketAddr,
    name: &str,
    ca: &Path,
    alpn: &[&[u8]],
) -> Result<Tls, std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(tls_config(ca, alpn));
    let stream = connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await?;
    let (_, session) = stream.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let leaf = session.peer_certificates().unwrap()[0].clone().into_owned();
    let io = TokioIo::new(stream);
    let sender = if alpn.as_deref() == Some(b"h2") {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        Sender::H2(send)
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        Sender::H1(send)
    };
    Ok(Tls { alpn, leaf, sender })
}

impl Tls {
    async fn send(
        &mut self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let h2 = matches!(self.sender, Sender::H2(_));
        let uri = if h2 {
            format!("https://{host}{path}")
        } else {
            path.to_owned()
        };
        let mut req = Request::builder().method(method).uri(uri);
        if !h2 {
            req = req.header("host", host);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body))).unwrap();
        let resp = match &mut self.sender {
            Sender::H1(s) => s.send_request(req).await.unwrap(),
            Sender::H2(s) => s.send_request(req).await.unwrap(),
        };
        let (parts, body) = resp.into_parts();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }
}

impl Tls {
    /// `Bearer <token>` for admin, from `/auth` on this connection.
    async fn admin_bearer(&mut self, host: &str, scope: &str) -> String {
        let r = self
            .send(
                Method::GET,
                host,
                &format!("/auth?service=Docker%20registry&scope={scope}"),
                &[("authorization", &basic("admin", "admin-pw"))],
                Vec::new(),
            )
            .await;
        format!("Bearer {}", r.json()["token"].as_str().unwrap())
    }
}

/// Pushes `data` as a blob of `repo` in one PUT on this connection; its digest.
async fn push_blob_on(c: &mut Tls, host: &str, bearer: &str, repo: &str, data: &[u8]) -> String {
    let r = c
        .send(
            Method::POST,
            host,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[("authorization", bearer)],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 202);
    let location = r.header("location").unwrap().to_owned();
    assert!(
        location.starts_with(&format!("https://{host}/")),
        "{location}"
    );
    let digest = format!("sha256:{}", sha256_hex(data));
    let path = location.trim_start_matches(&format!("https://{host}"));
    let r = c
        .send(
            Method::PUT,
            host,
            &format!("{path}&digest={digest}"),
            &[
                ("authorization", bearer),
                ("content-type", "application/octet-stream"),
            ],
            data.to_vec(),
        )
        .await;
    assert_eq!(r.status, 201);
    digest
}

async fn https_gateway(certs: &Path, extra: &str) -> (Registry, Gateway) {
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let config = seed_config(&registry.url(), &dir.path().join("data")).replace(
        "server:\n  addr: \"127.0.0.1:0\"\n",
        &format!(
            "server:\n  addr: \"127.0.0.1:0\"\n  certificate: \"{}\"\n  key: \"{}\"\n{extra}",
            certs.join("server.crt").display(),
            certs.join("server.key").display()
        ),
    );
    let gw = Gateway::start_in(dir, &config).await;
    (registry, gw)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_only_the_ca_over_h2_and_http1() {
    let certs = tempfile::tempdir().unwrap();
    cert_init(certs.path(), &["registry.test", "127.0.0.1"], false);
    let (_registry, gw) = https_gateway(certs.path(), "  hsts: true\n").await;
    let ca = certs.path().join("ca.crt");
    let host = format!("registry.test:{}", gw.addr().port());

    for (alpn, want) in [
        (&[&b"h2"[..], b"http/1.1"][..], &b"h2"[..]),
        (&[&b"http/1.1"[..]][..], b"http/1.1"),
    ] {
        let mut c = connect(gw.addr(), "registry.test", &ca, alpn)
            .await
            .unwrap();
        assert_eq!(c.alpn.as_deref(), Some(want));
        let r = c.send(Method::GET, &host, "/v2/", &[], Vec::new()).await;
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header("www-authenticate"),
            Some(
                format!("Bearer realm=\"https://{host}/auth\",service=\"Docker registry\"")
                    .as_str()
            )
        );
        assert!(r.header("strict-transport-security").is_some());
    }
    // The IP SAN works too; a name not in the certificate does not.
    assert!(connect(gw.addr(), "127.0.0.1", &ca, &[b"h2"]).await.is_ok());
    assert!(connect(gw.addr(), "other.test", &ca, &[b"h2"])
        .await
        .is_err());

    // A blob up and down over HTTP/2.
    let mut c = connect(gw.addr(), "registry.test", &ca, &[b"h2"])
        .await
        .unwrap();
    let bearer = c.admin_bearer(&host, "repository:h2/blob:pull,push").await;
    let data = noise(9, 8 << 20);
    let digest = push_blob_on(&mut c, &host, &bearer, "h2/blob", &data).await;
    let r = c
        .send(
            Method::GET,
            &host,
            &format!("/v2/h2/blob/blobs/{digest}"),
            &[("authorization", &bearer)],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));

    // Many streams at once on that one connection, blobs and small answers mixed: regate
    // gathers HTTP/2 frames into whole TLS records, and none of them may be held back.
    let Sender::H2(sender) = &c.sender else {
        panic!("h2 was negotiated")
    };
    let streams = (0..24).map(|i| {
        let mut sender = sender.clone();
        let path = if i % 6 == 0 {
            format!("/v2/h2/blob/blobs/{digest}")
        } else {
            "/v2/".to_owned()
        };
        let req = Request::get(format!("https://{host}{path}"))
            .header("authorization", &bearer)
            .body(Full::new(Bytes::new()))
            .unwrap();
        tokio::spawn(async move {
            sender.ready().await.unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status();
            (
                path,
                status,
                resp.into_body().collect().await.unwrap().to_bytes(),
            )
        })
    });
    let all = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        join_all(streams.collect()),
    )
    .await
    .expect("every stream answered");
    for (path, status, body) in all {
        assert_eq!(status, 200, "{path}");
        if path.contains("/blobs/") {
            assert_eq!(sha256_hex(&body), sha256_hex(&data));
        } else {
            assert_eq!(&body[..], b"{}");
        }
    }
}

/// curl (nghttp2), a real HTTP/2 client: three blobs and five small answers multiplexed on
/// one TLS connection. Each must arrive whole and unmixed, none held back: what regate's
/// gathering of HTTP/2 frames into TLS records must never break.
#[tokio::test(flavor = "multi_thread")]
async fn curl_multiplexes_blobs_and_small_answers_over_h2() {
    let certs = tempfile::tempdir().unwrap();
    cert_init(certs.path(), &["registry.test"], false);
    let (_registry, gw) = https_gateway(certs.path(), "").await;
    let ca = certs.path().join("ca.crt");
    let port = gw.addr().port();
    let host = format!("registry.test:{port}");

    let mut c = connect(gw.addr(), "registry.test", &ca, &[b"h2"])
        .await
        .unwrap();
    let bearer = c
        .admin_bearer(&host, "repository:curl/blobs:pull,push")
        .await;
    let mut blobs = Vec::new();
    for seed in 1..=3 {
        let data = noise(seed, (5 << 20) + seed as usize * 4099);
        let digest = push_blob_on(&mut c, &host, &bearer, "curl/blobs", &data).await;
        blobs.push((digest, sha256_hex(&data)));
    }

    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--http2", "--parallel"])
        .args(["--parallel-max", "8", "--cacert"])
        .arg(&ca)
        .args(["--resolve", &format!("{host}:127.0.0.1")])
        .args(["--header", &format!("authorization: {bearer}")])
        .args([
            "--write-out",
            "%{http_version} %{response_code} %{num_connects} %{url}\\n",
        ]);
    for i in 0..8 {
        let path = match i % 3 {
            0 if i / 3 < blobs.len() => format!("/v2/curl/blobs/blobs/{}", blobs[i / 3].0),
            _ => "/v2/".to_owned(),
        };
        cmd.arg("--output")
            .arg(out.path().join(format!("answer-{i}")))
            .arg(format!("https://{host}{path}"));
    }
    let (ok, report) = blocking(move || {
        without_proxies(&mut cmd);
        run_with_deadline(&mut cmd, b"", Duration::from_secs(60))
    })
    .await;
    assert!(ok, "curl failed: {report}");
    // One line per transfer (curl's parallel progress meter comes with them on stderr).
    let lines: Vec<&str> = report.lines().filter(|l| l.contains(" https://")).collect();
    assert_eq!(lines.len(), 8, "{report}");
    let mut connections = 0;
    for line in &lines {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(&fields[..2], &["2", "200"], "{report}");
        connections += fields[2].parse::<u32>().unwrap();
    }
    assert_eq!(
        connections, 1,
        "one connection carried all eight:\n{report}"
    );
    for i in 0..8 {
        let body = std::fs::read(out.path().join(format!("answer-{i}"))).unwrap();
        match i % 3 {
            0 if i / 3 < blobs.len() => assert_eq!(sha256_hex(&body), blobs[i / 3].1),
            _ => assert_eq!(body, b"{}"),
        }
    }
}

/// A registry that serves HTTPS itself (registry:2's `http.tls`, nginx's
/// `proxy_pass https://`): regate checks its certificate against
/// `upstream.ca_certificate` and streams through. Without that CA the system's roots
/// refuse the private one: 503, and nothing goes out in plain text.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_serving_https_itself_is_reached_over_verified_tls() {
    let certs = tempfile::tempdir().unwrap();
    cert_init(certs.path(), &["127.0.0.1"], false);
    let registry = Registry::start_tls(
        &certs.path().join("server.crt"),
        &certs.path().join("server.key"),
    );
    let url = registry.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let with_ca = |config: String| {
        config.replace(
            &format!("  url: \"{url}\"\n"),
            &format!(
                "  url: \"{url}\"\n  ca_certificate: \"{}\"\n",
                certs.path().join("ca.crt").display()
            ),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let config = with_ca(seed_config(&url, &dir.path().join("data")));
    assert!(config.contains("ca_certificate"));
    let gw = Gateway::start_in(dir, &config).await;

    let data = noise(21, 3 << 20);
    let digest = push_blob(&gw.url(), "tls/up", &data).await;
    let bearer = format!("Bearer {}", admin_token(&gw.url(), "tls/up").await);
    let auth = [("authorization", bearer.as_str())];
    let r = get(&format!("{}/v2/tls/up/blobs/{digest}", gw.url()), &auth).await;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    assert!(registry.has_repository("tls/up"));
    assert_eq!(get(&format!("{}/readyz", gw.url()), &[]).await.status, 200);

    // The same registry with the system's roots only: the private CA is not trusted.
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(
        dir,
        &seed_config(&url, &tempfile::tempdir().unwrap().path().join("d")),
    )
    .await;
    let bearer = format!(
        "Bearer {}",
        token(
            &gw.url(),
            Some(("admin", "admin-pw")),
            &["repository:tls/up:pull"]
        )
        .await
    );
    let r = get(
        &format!("{}/v2/tls/up/blobs/{digest}", gw.url()),
        &[("authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    // /readyz asks the registry through the same client, so it fails too; the cause
    // (the certificate) goes to the log, not to whoever asked.
    let r = get(&format!("{}/readyz", gw.url()), &[]).await;
    assert_eq!(r.status, 503);
    let reason = r.json()["reason"].as_str().unwrap_or_default().to_owned();
    assert_eq!(reason, regate::gateway::NOT_READY);
    // regate ended those handshakes at the certificate: the registry served only the first
    // regate's two GETs (the blob and its /readyz).
    let log = registry.log_once_it_holds("unknown certificate authority");
    assert!(log.contains("unknown certificate authority"), "{log}");
    let gets = log
        .lines()
        .filter(|l| l.contains("response completed") && l.contains("http.request.method=GET"))
        .count();
    assert_eq!(gets, 2, "the pull and the first /readyz:\n{log}");
}

async fn join_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn renewed_certificates_are_served_without_a_restart() {
    let certs = tempfile::tempdir().unwrap();
    cert_init(certs.path(), &["registry.test"], false);
    let (_registry, gw) = https_gateway(certs.path(), "").await;
    let ca = certs.path().join("ca.crt");
    let host = format!("registry.test:{}", gw.addr().port());
    let mut old = connect(gw.addr(), "registry.test", &ca, &[b"http/1.1"])
        .await
        .unwrap();

    // Renew: a new CA and pair; the open connection keeps working, new ones get the new
    // certificate.
    let renewed = tempfile::tempdir().unwrap();
    cert_init(renewed.path(), &["registry.test"], false);
    for f in ["server.key", "server.crt"] {
        std::fs::copy(renewed.path().join(f), certs.path().join(f)).unwrap();
    }
    let new_ca = renewed.path().join("ca.crt");
    let mut served_new = false;
    for _ in 0..50 {
        if connect(gw.addr(), "registry.test", &new_ca, &[b"h2"])
            .await
            .is_ok()
        {
            served_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served_new, "the renewed certificate is served");
    let r = old.send(Method::GET, &host, "/v2/", &[], Vec::new()).await;
    assert_eq!(
        r.status, 401,
        "the connection opened before the renewal still works"
    );

    // A broken pair (the key of another certificate) is refused; the last good one stays.
    let other = tempfile::tempdir().unwrap();
    cert_init(other.path(), &["registry.test"], false);
    std::fs::copy(
        other.path().join("server.key"),
        certs.path().join("server.key"),
    )
    .unwrap();
    gw.server
        .reload()
        .expect_err("a mismatched pair does not load");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = connect(gw.addr(), "registry.test", &new_ca, &[b"h2"])
        .await
        .unwrap();
    let before = connect(gw.addr(), "registry.test", &new_ca, &[b"h2"])
        .await
        .unwrap();
    assert_eq!(c.leaf, before.leaf);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_listener_only_redirects() {
    let certs = tempfile::tempdir().unwrap();
    cert_init(certs.path(), &["registry.test"], false);
    let (_registry, gw) =
        https_gateway(certs.path(), "  http_redirect_addr: \"127.0.0.1:0\"\n").await;
    let plain = gw.server.redirect_addr().unwrap();
    let r = get(
        &format!("http://{plain}/v2/x/tags/list?n=1"),
        &[("host", "registry.test")],
    )
    .await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some(
            format!(
                "https://registry.test:{}/v2/x/tags/list?n=1",
                gw.addr().port()
            )
            .as_str()
        )
    );
    let r = http(
        Method::PUT,
        &format!("http://{plain}/v2/x/manifests/1"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 308, "a redirect that keeps the method");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_tls_below_1_2() {
    let certs = tempfile::tempdir().unwrap();
    cert_init(certs.path(), &["registry.test"], false);
    let (_registry, gw) = https_gateway(certs.path(), "").await;
    let addr = gw.addr().to_string();
    let s_client = |flag: &'static str| {
        let addr = addr.clone();
        blocking(move || {
            Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &addr,
                    flag,
                    "-cipher",
                    "DEFAULT:@SECLEVEL=0",
                ])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
                .status
                .success()
        })
    };
    assert!(s_client("-tls1_2").await);
    assert!(s_client("-tls1_3").await);
    assert!(!s_client("-tls1_1").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_for_images_without_a_shell() {
    let certs = tempfile::tempdir().unwrap();
    cert_init(certs.path(), &["registry.test"], false);
    let (_registry, gw) = https_gateway(certs.path(), "").await;
    let url = format!("https://127.0.0.1:{}/healthz", gw.addr().port());
    let probe = |args: Vec<String>| {
        blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_regate"))
                .arg("probe")
                .args(args)
                .output()
                .unwrap()
                .status
                .success()
        })
    };
    assert!(probe(vec!["--insecure".into(), url.clone()]).await);
    assert!(
        !probe(vec![url.clone()]).await,
        "verification is on by default"
    );
    let down = format!("http://127.0.0.1:{}/healthz", _registry.addr.port() + 1);
    assert!(!probe(vec!["--timeout".into(), "2".into(), down]).await);
}
