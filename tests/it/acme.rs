//! `server.letsencrypt` against a real ACME CA: Debian's `pebble` (Let's Encrypt's test
//! server) on free loopback ports, validating regate by TLS-ALPN-01 on its HTTPS port, and
//! a client that trusts only pebble's root. Nothing here waits for a fixed time: each step
//! polls for the state it needs, with a generous deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use regate::acme::Renewal;
use rustls::pki_types::ServerName;

/// How long any awaited state may take on a shared, busy machine.
const PATIENCE: Duration = Duration::from_secs(180);

/// The name regate gets its certificate for; pebble resolves it with /etc/hosts.
const HOST: &str = "localhost";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A rustls client trusting only the certificates in `ca` (PEM).
fn client_config(ca: &[u8], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca[..]) {
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

/// GET over HTTPS trusting only `ca`: (status, body), or why it failed.
async fn https_get(url: &str, ca: &[u8]) -> Result<(StatusCode, Bytes), String> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*client_config(ca, &[])).clone())
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(connector);
    let resp = tokio::time::timeout(Duration::from_secs(30), client.get(url.parse().unwrap()))
        .await
        .map_err(|_| "no answer in 30 s".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes()))
}

/// Polls `probe` until it gives a value; panics with `what` and the last miss after
/// [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(miss) if Instant::now() > deadline => {
                panic!("{what}: not within {PATIENCE:?}; last: {miss}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Debian's pebble with a TLS certificate from a CA made here, validating on `tls_port`;
/// killed on drop.
struct Pebble {
    child: Child,
    dir: tempfile::TempDir,
    /// The CA of pebble's own HTTPS certificate (regate's `ca_certificate`).
    ca: PathBuf,
    directory: String,
    management: SocketAddr,
}

impl Pebble {
    async fn start(tls_port: u16) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "regate test: pebble's HTTPS CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".into()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let acme = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let management = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = serde_json::json!({"pebble": {
            "listenAddress": acme.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": free_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("pebble.log")).unwrap();
        let mut cmd = Command::new("pebble");
        cmd.arg("-config")
            .arg(&config_path)
            .arg("-strict=false")
            // No random sleeps before validating; every nonce good; a fresh validation for
            // each order (Let's Encrypt reuses them; here each order must be validated).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = without_proxies(&mut cmd)
            .spawn()
            .expect("pebble is installed (apt-get install pebble)");
        let mut pebble = Pebble {
            child,
            dir,
            ca,
            directory: format!("https://{acme}/dir"),
            management,
        };
        let ca_pem = std::fs::read(&pebble.ca).unwrap();
        let directory = pebble.directory.clone();
        eventually("pebble answers", || {
            let exited = pebble.child.try_wait().unwrap();
            let (ca_pem, directory) = (ca_pem.clone(), directory.clone());
            async move {
                if let Some(status) = exited {
                    panic!("pebble exited ({status})");
                }
                match https_get(&directory, &ca_pem).await? {
                    (StatusCode::OK, _) => Ok(()),
                    (status, _) => Err(status.to_string()),
                }
            }
        })
        .await;
        pebble
    }

    /// The root pebble issues under (a new one at each start).
    async fn root(&self) -> Vec<u8> {
        let url = format!("https://{}/roots/0", self.management);
        let (status, body) = https_get(&url, &std::fs::read(&self.ca).unwrap())
            .await
            .unwrap();
        assert_eq!(status, 200);
        body.to_vec()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// How many certificates pebble has issued.
    fn issued(&self) -> usize {
        self.log().matches("Issued certificate serial").count()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The registry, pebble, and a config for regate on a port pebble validates.
struct Setup {
    // Dropped in order: the registry and pebble outlive nothing that needs them.
    registry: Registry,
    pebble: Pebble,
    dir: tempfile::TempDir,
    port: u16,
    /// pebble's root: what a client of regate trusts.
    root: Vec<u8>,
}

impl Setup {
    async fn start() -> Setup {
        let registry = Registry::start(None);
        let port = free_port();
        let pebble = Pebble::start(port).await;
        let root = pebble.root().await;
        Setup {
            registry,
            pebble,
            dir: tempfile::tempdir().unwrap(),
            port,
            root,
        }
    }

    fn cache_dir(&self) -> PathBuf {
        // Not there yet: regate makes it.
        self.dir.path().join("state/letsencrypt")
    }

    /// regate in this process with `letsencrypt` and the renewal timing given.
    async fn regate(&self, renewal: Renewal) -> regate::Server {
        let plain = seed_config(&self.registry.url(), &self.dir.path().join("data"));
        let server = format!(
            "server:\n  addr: \"127.0.0.1:{port}\"\n  metrics_addr: \"127.0.0.1:0\"\n  letsencrypt:\n    host: {HOST}\n    email: ops@example.com\n    cache_dir: \"{cache}\"\n    directory_url: \"{directory}\"\n    ca_certificate: \"{ca}\"\n",
            port = self.port,
            cache = self.cache_dir().display(),
            directory = self.pebble.directory,
            ca = self.pebble.ca.display(),
        );
        let config = plain.replacen("server:\n  addr: \"127.0.0.1:0\"\n", &server, 1);
        assert_ne!(config, plain, "seed_config's server section changed");
        let path = self.dir.path().join("regate.yml");
        std::fs::write(&path, config).unwrap();
        let mut config = regate::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        match config.server.tls.as_mut().map(|t| &mut t.source) {
            Some(regate::tls::CertSource::Acme(acme)) => acme.renewal = renewal,
            other => panic!("not ACME: {other:?}"),
        }
        regate::start(config).await.unwrap()
    }

    /// A TLS connection to regate as `localhost` trusting only pebble's root, or why not.
    async fn connect(&self, alpn: &[u8]) -> Result<Conn, String> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(client_config(&self.root, &[alpn]));
        let name = ServerName::try_from(HOST.to_owned()).unwrap();
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let io = TokioIo::new(stream);
        let sender = if alpn == b"h2" {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(Conn {
            serial: serial(&leaf),
            sender,
        })
    }

    /// Waits until regate completes a handshake that pebble's root verifies.
    async fn first_handshake(&self) -> Conn {
        eventually("a certificate pebble issued", || self.connect(b"http/1.1")).await
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// One verified TLS connection to regate.
struct Conn {
    /// The serial of the certificate it was shown.
    serial: String,
    sender: Sender,
}

impl Conn {
    async fn get(&mut self, path: &str, authorization: Option<&str>) -> (StatusCode, Bytes) {
        let mut req = Request::get(format!("https://{HOST}{path}"));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let req = req.body(Empty::new()).unwrap();
        let resp = match &mut self.sender {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
        }
        .unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }
}

fn serial(der: &[u8]) -> String {
    regate::acme::describe(der).unwrap().serial
}

/// The value of a `/metrics` line `name VALUE` on regate's metrics listener.
async fn metric(server: &regate::Server, name: &str) -> Option<u64> {
    let url = format!("http://{}/metrics", server.metrics_addr().unwrap());
    let text = String::from_utf8(get(&url, &[]).await.body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the metric `name` is at least `at_least`.
async fn metric_reaches(server: &regate::Server, name: &str, at_least: u64) -> u64 {
    eventually(&format!("{name} >= {at_least}"), || async move {
        match metric(server, name).await {
            Some(v) if v >= at_least => Ok(v),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Checks once a second, and renews as by default: a new certificate is not due.
fn quiet() -> Renewal {
    Renewal {
        check_every: Duration::from_secs(1),
        ..Renewal::default()
    }
}

/// Renews at every check, once a second, and retries a failure a second later.
fn forced() -> Renewal {
    Renewal {
        check_every: Duration::from_secs(1),
        renew_in_last: 1,
        retry_first: Duration::from_secs(1),
        retry_most: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_is_obtained_at_start_and_serves_the_registry() {
    let setup = Setup::start().await;
    let server = setup.regate(Renewal::default()).await;
    let mut conn = setup.first_handshake().await;

    // A registry request through it: a token from /auth, the catalog from the registry.
    let admin = basic("admin", "admin-pw");
    let (status, body) = conn
        .get(
            "/auth?service=Docker%20registry&scope=registry:catalog:*",
            Some(&admin),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let token: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    let (status, body) = conn.get("/v2/_catalog", Some(&bearer)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // The registry's answer (regate has no catalog of its own).
    let catalog: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(catalog["repositories"].is_array(), "{catalog}");

    assert_eq!(setup.pebble.issued(), 1);
    assert_eq!(
        metric(&server, "regate_acme_certificates_obtained_total").await,
        Some(1)
    );
    assert_eq!(
        metric(&server, "regate_acme_renewal_failures_total").await,
        Some(0)
    );
    let expiry = metric(&server, "regate_acme_certificate_expiry_timestamp_seconds")
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expiry > now + 30 * 24 * 3600, "{expiry}");

    // The cache: made for its owner only, the keys readable by the owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let cache = setup.cache_dir();
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&cache.join(HOST)), 0o600);
        assert_eq!(mode(&cache.join("regate-acme-account.json")), 0o600);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_serves_the_cached_certificate_without_a_new_order() {
    let setup = Setup::start().await;
    let server = setup.regate(quiet()).await;
    let first = setup.first_handshake().await.serial;
    server.shutdown().await;
    assert_eq!(setup.pebble.issued(), 1);

    let server = setup.regate(quiet()).await;
    // At once: the cached certificate is in place before the listener opens.
    let conn = setup.connect(b"http/1.1").await.unwrap();
    assert_eq!(conn.serial, first);
    // Several checks later, still no order.
    metric_reaches(&server, "regate_acme_checks_total", 3).await;
    assert_eq!(
        metric(&server, "regate_acme_certificates_obtained_total").await,
        Some(0)
    );
    assert_eq!(setup.pebble.issued(), 1, "{}", setup.pebble.log());
    assert_eq!(setup.connect(b"http/1.1").await.unwrap().serial, first);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_certificate_serves_new_connections_while_open_ones_keep_working() {
    let setup = Setup::start().await;
    let server = setup.regate(forced()).await;
    // HTTP/2: no idle timeout closes it while renewals run.
    let mut open = eventually("a certificate pebble issued", || setup.connect(b"h2")).await;
    let (status, _) = open.get("/v2/", None).await;
    assert_eq!(status, 401);
    let renewed = eventually("a new certificate for new connections", || {
        let old = open.serial.clone();
        let setup = &setup;
        async move {
            let conn = setup.connect(b"http/1.1").await?;
            if conn.serial == old {
                return Err(format!("still {old}"));
            }
            Ok(conn.serial)
        }
    })
    .await;
    assert_ne!(renewed, open.serial);
    assert!(setup.pebble.issued() >= 2);
    // The connection made before the renewal was not dropped, and answers.
    for _ in 0..3 {
        let (status, _) = open.get("/v2/", None).await;
        assert_eq!(status, 401);
    }
    assert!(metric(&server, "regate_acme_certificates_obtained_total").await >= Some(2));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_renewal_keeps_the_certificate_and_is_counted() {
    let mut setup = Setup::start().await;
    let server = setup.regate(forced()).await;
    setup.first_handshake().await;
    setup.pebble.stop();

    // Two failures: at least one attempt began after pebble was gone.
    let failed = metric_reaches(&server, "regate_acme_renewal_failures_total", 2).await;
    let kept = setup.connect(b"http/1.1").await.unwrap().serial;
    let obtained = metric(&server, "regate_acme_certificates_obtained_total").await;
    metric_reaches(&server, "regate_acme_renewal_failures_total", failed + 2).await;
    let mut conn = setup.connect(b"http/1.1").await.unwrap();
    assert_eq!(conn.serial, kept, "the certificate being served is kept");
    let (status, _) = conn.get("/v2/", None).await;
    assert_eq!(status, 401);
    assert_eq!(
        metric(&server, "regate_acme_certificates_obtained_total").await,
        obtained
    );
    let cached = std::fs::read(setup.cache_dir().join(HOST)).unwrap();
    let leaf = rustls_pemfile::certs(&mut cached.as_slice())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(serial(&leaf), kept, "and so is the cached one");
    assert!(
        metric(&server, "regate_acme_certificate_expiry_timestamp_seconds")
            .await
            .is_some()
    );
    server.shutdown().await;
}
