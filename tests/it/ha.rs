//! Several replicas, for real, on loopback: Debian's `redis-server` (the shared state and
//! the registries' blob descriptor cache), two `docker-registry` processes sharing one
//! storage folder, `http.secret` and that cache, three regate processes started from one
//! config file (and one `data_dir`), and Debian's `haproxy` in front: HTTP mode with
//! `/readyz` health checks, and TCP mode with `send-proxy-v2`.
//!
//! Nothing here times how fast something happens (the machine is shared): states are
//! polled for with generous deadlines, and the time a change took is printed.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use hyper::Method;
use tempfile::TempDir;

const REDIS_PASSWORD: &str = "redis-secret-ha-7f3a";
const HTTP_SECRET: &str = "ha-test-shared-http-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on {port}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} is not listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `redis-server` on a free port, its data (append-only file) in `dir`: a restart on the
/// same port finds what it held.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(dir: &Path) -> Redis {
        let port = free_port();
        let mut redis = Redis {
            child: Redis::spawn(dir, port),
            port,
            dir: dir.to_owned(),
        };
        wait_for_port(port, "redis-server", &mut redis.child);
        redis
    }

    fn spawn(dir: &Path, port: u16) -> Child {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(dir.join(format!("redis-{port}.log"))).unwrap();
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--save", "", "--daemonize", "no"])
            .args(["--requirepass", REDIS_PASSWORD])
            .arg("--dir")
            .arg(dir)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.kill();
        self.child = Redis::spawn(&self.dir, self.port);
        wait_for_port(self.port, "redis-server", &mut self.child);
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `docker-registry` sharing `storage`, `http.secret` and the Redis blob descriptor
/// cache with its twin.
struct SharedRegistry {
    child: Child,
    addr: SocketAddr,
}

impl SharedRegistry {
    fn start(dir: &Path, name: &str, storage: &Path, redis: &str) -> SharedRegistry {
        let config = dir.join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\n  cache: {{blobdescriptor: redis}}\nhttp:\n  addr: \"127.0.0.1:0\"\n  secret: {HTTP_SECRET}\nredis:\n  addr: \"{redis}\"\n  password: \"{REDIS_PASSWORD}\"\n  db: 1\n",
                storage.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker-registry is installed");
        let stderr = child.stderr.take().unwrap();
        let log = dir.join(format!("{name}.log"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(log).unwrap();
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if !sent {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let addr = rest.split(['"', ' ', ',']).next().unwrap_or("").to_owned();
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("docker-registry reports its address");
        SharedRegistry {
            child,
            addr: addr.parse().unwrap(),
        }
    }
}

impl Drop for SharedRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// haproxy in front of the replicas: `http` (HTTP mode, `/readyz` checks, retries on a
/// refused connection) and `tcp` (TCP mode, `send-proxy-v2`).
struct Haproxy {
    child: Child,
    http: u16,
    tcp: u16,
}

impl Haproxy {
    fn start(dir: &Path, replicas: &[&str]) -> Haproxy {
        let (http, tcp) = (free_port(), free_port());
        let mut cfg = format!(
            "global\n  maxconn 512\ndefaults\n  timeout connect 2s\n  timeout client 300s\n  timeout server 300s\n  retries 3\n  option redispatch\n\
             frontend http\n  mode http\n  bind 127.0.0.1:{http}\n  option forwardfor\n  default_backend regate_http\n\
             backend regate_http\n  mode http\n  balance roundrobin\n  option httpchk GET /readyz\n  retry-on conn-failure empty-response\n"
        );
        for (i, r) in replicas.iter().enumerate() {
            cfg.push_str(&format!(
                "  server r{i} {r} check inter 500ms fall 1 rise 2\n"
            ));
        }
        cfg.push_str(&format!(
            "frontend tcp\n  mode tcp\n  bind 127.0.0.1:{tcp}\n  default_backend regate_tcp\nbackend regate_tcp\n  mode tcp\n  balance roundrobin\n"
        ));
        for (i, r) in replicas.iter().enumerate() {
            cfg.push_str(&format!(
                "  server r{i} {r} send-proxy-v2 check inter 500ms\n"
            ));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("haproxy is installed (apt-get install haproxy)");
        wait_for_port(http, "haproxy", &mut child);
        wait_for_port(tcp, "haproxy", &mut child);
        Haproxy { child, http, tcp }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole topology. Fields drop in order: the balancer, the replicas, the registries,
/// Redis, then the folder.
struct Ha {
    haproxy: Option<Haproxy>,
    regates: Vec<RegateProcess>,
    registries: Vec<SharedRegistry>,
    redis: Redis,
    config: PathBuf,
    dir: TempDir,
}

fn config_text(dir: &Path, redis: &str, registries: &[String], extra_users: &str) -> String {
    format!(
        r#"server:
  addr: "127.0.0.1:0"
  real_ip_header: "X-Forwarded-For"
  real_ip_pos: -1
  trusted_proxies: ["127.0.0.1"]
  proxy_protocol: true
token:
  issuer: "{ISSUER}"
  expiration: 900
data_dir: "{data}"
audit_log: "off"
shared_state:
  redis:
    addr: "{redis}"
    password_file: "{pw}"
upstream:
  url: [{urls}]
users:
  "admin":
    password: "{admin}"
  "alice":
    password: "{alice}"
{extra_users}acl:
  - match: {{account: "admin"}}
    actions: ["*"]
  - match: {{account: "alice", name: "office/*", ip: "10.20.30.40"}}
    actions: ["pull"]
    comment: "alice pulls office/* from the office only"
  - match: {{account: "alice", name: "lab/*", ip: "127.0.0.2"}}
    actions: ["pull"]
    comment: "alice pulls lab/* from the lab machine only"
"#,
        data = dir.join("data").display(),
        pw = dir.join("redis.pw").display(),
        urls = registries
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", "),
        admin = bcrypt("admin-pw"),
        alice = bcrypt("alice-pw"),
    )
}

impl Ha {
    fn start(with_haproxy: bool) -> Ha {
        let dir = tempfile::tempdir().unwrap();
        let redis = Redis::start(&dir.path().join("redis"));
        let storage = dir.path().join("storage");
        let registries: Vec<SharedRegistry> = ["registry1", "registry2"]
            .iter()
            .map(|n| SharedRegistry::start(dir.path(), n, &storage, &redis.addr()))
            .collect();
        std::fs::write(dir.path().join("redis.pw"), format!("{REDIS_PASSWORD}\n")).unwrap();
        let urls: Vec<String> = registries
            .iter()
            .map(|r| format!("http://{}", r.addr))
            .collect();
        let config = dir.path().join("regate.yml");
        std::fs::write(&config, config_text(dir.path(), &redis.addr(), &urls, "")).unwrap();
        // Three at once on one data_dir: one token key between them (keys.rs's lock).
        let starting: Vec<std::thread::JoinHandle<RegateProcess>> = ["a", "b", "c"]
            .iter()
            .map(|name| {
                let config = config.clone();
                let log = dir.path().join(format!("regate-{name}.log"));
                std::thread::spawn(move || RegateProcess::start(&config, log))
            })
            .collect();
        let regates: Vec<RegateProcess> = starting.into_iter().map(|h| h.join().unwrap()).collect();
        let haproxy = with_haproxy.then(|| {
            let addrs: Vec<&str> = regates.iter().map(|r| r.addr.as_str()).collect();
            Haproxy::start(dir.path(), &addrs)
        });
        Ha {
            haproxy,
            regates,
            registries,
            redis,
            config,
            dir,
        }
    }

    fn urls(&self) -> Vec<String> {
        self.regates.iter().map(RegateProcess::url).collect()
    }

    fn registry_urls(&self) -> Vec<String> {
        self.registries
            .iter()
            .map(|r| format!("http://{}", r.addr))
            .collect()
    }

    /// No log of any replica holds the Redis password.
    fn assert_no_secret_in_logs(&self) {
        for r in &self.regates {
            let log = r.log_text();
            assert!(
                !log.contains(REDIS_PASSWORD),
                "the Redis password in {}",
                r.log.display()
            );
        }
    }
}

/// A token request's status and body through `base`, with Basic credentials and an
/// `X-Forwarded-For` (the client address a trusted proxy names).
async fn auth(base: &str, user: &str, password: &str, xff: &str, query: &str) -> Resp {
    http(
        Method::GET,
        &format!("{base}/auth?service=Docker%20registry{query}"),
        &[
            ("authorization", &basic(user, password)),
            ("x-forwarded-for", xff),
        ],
        Vec::new(),
    )
    .await
}

/// Whether `u` refuses a further guess for `account` with 429. A lock that ran out on a
/// slow machine lets one guess through (counted: the next lock is longer), so up to four
/// are sent.
async fn assert_locked(u: &str, account: &str, ip: &str) {
    let mut seen = Vec::new();
    for j in 0..4 {
        let r = auth(u, account, &format!("more-{u}-{j}"), ip, "").await;
        seen.push(r.status.as_u16());
        if r.status == 429 {
            return;
        }
    }
    panic!("{u}: {account} is not locked: {seen:?}");
}

/// The actions the first scope of a token response grants.
fn granted(resp: &Resp) -> serde_json::Value {
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let token = resp.json()["token"].as_str().unwrap().to_owned();
    claims(&token)["access"][0]["actions"].clone()
}

/// Sends a raw HTTP/1.1 request to `to` from the loopback address `from`; the answer.
async fn raw_from(from: IpAddr, to: SocketAddr, prefix: &[u8], request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    let mut data = prefix.to_vec();
    data.extend_from_slice(request.as_bytes());
    let _ = stream.write_all(&data).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn token_request(scope: &str, user: &str, password: &str, extra: &str) -> String {
    format!(
        "GET /auth?service=Docker%20registry&scope={scope} HTTP/1.1\r\nHost: regate\r\nAuthorization: {}\r\n{extra}Connection: close\r\n\r\n",
        basic(user, password)
    )
}

/// The actions a raw token answer grants for its first scope.
fn raw_granted(answer: &str) -> serde_json::Value {
    assert_eq!(raw_status(answer), 200, "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    // Chunked or not, the JSON object is the part between the outer braces.
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    claims(value["token"].as_str().unwrap())["access"][0]["actions"].clone()
}

async fn metrics_of(base: &str) -> String {
    let r = get(&format!("{base}/metrics"), &[]).await;
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body).into_owned()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `check` every 100 ms until it holds or `limit` passes; how long it took.
async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_logins_and_client_addresses_are_one_across_three_replicas() {
    let ha = Ha::start(true);
    let urls = ha.urls();
    let (a, b, c) = (&urls[0], &urls[1], &urls[2]);

    // One token key for the three (one data_dir, generated once under its lock).
    let kids: Vec<String> = {
        let mut kids = Vec::new();
        for u in &urls {
            let jwks = get(&format!("{u}/.well-known/jwks.json"), &[]).await;
            assert_eq!(jwks.status, 200);
            kids.push(String::from_utf8_lossy(&jwks.body).into_owned());
        }
        kids
    };
    assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");

    // A token from A is accepted by B and C.
    let token =
        crate::common::token(a, Some(("admin", "admin-pw")), &["repository:ha/app:pull"]).await;
    for u in [b, c] {
        let r = get(
            &format!("{u}/v2/ha/app/tags/list"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_ne!(r.status, 401, "{u}: {}", String::from_utf8_lossy(&r.body));
    }
    // A refresh token from A works on B and C.
    let r = auth(
        a,
        "admin",
        "admin-pw",
        "10.0.9.1",
        "&offline_token=true&client_id=ha",
    )
    .await;
    assert_eq!(r.status, 200);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let grant = |u: String, refresh: String| async move {
        http(
            Method::POST,
            &format!("{u}/auth"),
            &[("content-type", "application/x-www-form-urlencoded")],
            format!("grant_type=refresh_token&service=Docker%20registry&client_id=ha&refresh_token={refresh}&scope=repository%3Aha%2Fapp%3Apull").into_bytes(),
        )
        .await
    };
    for u in [b, c] {
        let r = grant(u.clone(), refresh.clone()).await;
        assert_eq!(r.status, 200, "{u}: {}", String::from_utf8_lossy(&r.body));
    }
    // Revoked on the shared state, it is refused by every replica.
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .args(["revoke-refresh", "--account", "admin", "--config"])
        .arg(&ha.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for u in [a, b, c] {
        let r = grant(u.clone(), refresh.clone()).await;
        assert_eq!(
            r.status,
            400,
            "{u}: a revoked refresh token: {}",
            String::from_utf8_lossy(&r.body)
        );
    }

    // Six different wrong passwords spread over A, B, C lock the account on all three.
    let ip = "10.0.1.1";
    for i in 0..6 {
        let r = auth(&urls[i % 3], "alice", &format!("wrong-{i}"), ip, "").await;
        assert_eq!(r.status, 401, "guess {i}");
    }
    // Locked everywhere: each replica refuses a further guess with 429 (a lock that ran
    // out on a slow machine lets one through, counted, and the next lock is longer).
    for u in [a, b, c] {
        assert_locked(u, "alice", ip).await;
    }
    // A good login on B, once the lock has run out, clears the count everywhere: five
    // more wrong passwords on A and C are plain 401s again.
    let took = eventually(Duration::from_secs(120), async || {
        auth(b, "alice", "alice-pw", ip, "").await.status == 200
    })
    .await
    .expect("alice logs in once the lock runs out");
    println!("the lock ran out and a good login cleared it after {took:?}");
    for i in 0..5 {
        let u = if i % 2 == 0 { a } else { c };
        let r = auth(u, "alice", &format!("after-{i}"), "10.0.1.2", "").await;
        assert_eq!(r.status, 401, "{u}: failure {i} after the clear");
    }
    assert_eq!(
        auth(a, "alice", "alice-pw", "10.0.1.3", "").await.status,
        200
    );

    // The same stale password sent to all three, three times each, counts once: four
    // different ones after it leave the account unlocked (5 failures in all).
    for _ in 0..3 {
        for u in [a, b, c] {
            assert_eq!(
                auth(u, "alice", "last-years-password", "10.0.2.1", "")
                    .await
                    .status,
                401
            );
        }
    }
    for i in 0..4 {
        let r = auth(
            &urls[i % 3],
            "alice",
            &format!("stale-then-{i}"),
            "10.0.2.1",
            "",
        )
        .await;
        assert_eq!(
            r.status, 401,
            "guess {i} after the stale password: the stale one counted more than once"
        );
    }
    assert_eq!(
        auth(c, "alice", "alice-pw", "10.0.2.1", "").await.status,
        200
    );

    // X-Forwarded-For from a trusted peer (127.0.0.1) names the client...
    let scope = "repository:office/app:pull";
    let office = auth(
        a,
        "alice",
        "alice-pw",
        "10.20.30.40",
        &format!("&scope={scope}"),
    )
    .await;
    assert_eq!(granted(&office), serde_json::json!(["pull"]));
    // ...from an untrusted one (127.0.0.2) it changes nothing.
    let addr: SocketAddr = ha.regates[1].addr.parse().unwrap();
    let lab_machine: IpAddr = "127.0.0.2".parse().unwrap();
    let spoofed = raw_from(
        lab_machine,
        addr,
        b"",
        &token_request(
            scope,
            "alice",
            "alice-pw",
            "X-Forwarded-For: 10.20.30.40\r\n",
        ),
    )
    .await;
    assert_eq!(
        raw_granted(&spoofed),
        serde_json::json!([]),
        "a spoofed X-Forwarded-For opened the office rule"
    );
    // A PROXY header from an untrusted peer is refused outright.
    let v1 = b"PROXY TCP4 10.20.30.40 127.0.0.1 4000 5000\r\n";
    let answer = raw_from(
        lab_machine,
        addr,
        v1,
        &token_request(scope, "alice", "alice-pw", ""),
    )
    .await;
    assert_eq!(
        raw_status(&answer),
        0,
        "a PROXY header from an untrusted peer was served: {answer}"
    );

    // Through haproxy in TCP mode with send-proxy-v2, regate sees the real client: the
    // lab machine (127.0.0.2) gets lab/*, though regate's peer is haproxy (127.0.0.1).
    let haproxy = ha.haproxy.as_ref().unwrap();
    let tcp: SocketAddr = format!("127.0.0.1:{}", haproxy.tcp).parse().unwrap();
    let lab = "repository:lab/app:pull";
    for _ in 0..3 {
        let from_lab = raw_from(
            lab_machine,
            tcp,
            b"",
            &token_request(lab, "alice", "alice-pw", ""),
        )
        .await;
        assert_eq!(
            raw_granted(&from_lab),
            serde_json::json!(["pull"]),
            "PROXY v2 gave the lab machine's address"
        );
        let elsewhere = raw_from(
            "127.0.0.1".parse().unwrap(),
            tcp,
            b"",
            &token_request(lab, "alice", "alice-pw", ""),
        )
        .await;
        assert_eq!(raw_granted(&elsewhere), serde_json::json!([]));
    }
    // Over haproxy's HTTP mode, its X-Forwarded-For (the last address) names the client.
    let http_base = format!("http://127.0.0.1:{}", haproxy.http);
    let r = auth(
        &http_base,
        "alice",
        "alice-pw",
        "10.20.30.40",
        &format!("&scope={scope}"),
    )
    .await;
    assert_eq!(
        granted(&r),
        serde_json::json!([]),
        "the client's own X-Forwarded-For entry is not the last"
    );

    // Every replica generated nothing of its own and logged no secret.
    let names: Vec<String> = std::fs::read_dir(ha.dir.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    ha.assert_no_secret_in_logs();
}

/// An OCI layout with one layer of `size` bytes; the layer's digest and bytes.
fn big_image(dir: &Path, size: usize) -> (String, Vec<u8>) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer = tar_with_file("big", &noise(4242, size));
    let put = |data: &[u8]| {
        let hex = sha256_hex(data);
        std::fs::write(blobs.join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let (layer_digest, layer_size) = put(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}, "config": {}
    });
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let (m_digest, m_size) = put(&manifest);
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m_digest, "size": m_size,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    (layer_digest, layer)
}

/// A client's slower link to `to`: each connection is relayed, the client's bytes at about
/// `rate` bytes a second (in 64 KiB steps), the answers as fast as they come. Either side
/// closing closes both.
async fn slow_link(to: SocketAddr, rate: u64) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let (mut client_in, mut client_out) = client.into_split();
                let (mut server_in, mut server_out) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = client_in.read(&mut buf).await {
                        if n == 0 || server_out.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
                    }
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut server_in, &mut client_out).await;
                };
                tokio::select! {
                    () = up => {}
                    () = down => {}
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_push_and_an_upload_moving_between_replicas() {
    let mut ha = Ha::start(true);
    let urls = ha.urls();

    // An upload begun through A, continued through B and finished through C (and so over
    // both registries, which share storage and http.secret).
    let auth_header = format!("Bearer {}", admin_token(&urls[0], "moving/app").await);
    let r = http(
        Method::POST,
        &format!("{}/v2/moving/app/blobs/uploads/", urls[0]),
        &[("authorization", &auth_header)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let location = r.header("location").unwrap().to_owned();
    let path = location
        .split_once("/v2/")
        .map(|(_, p)| format!("/v2/{p}"))
        .unwrap();
    let (first, second) = (noise(1, 300_000), noise(2, 200_000));
    let r = http(
        Method::PATCH,
        &format!("{}{path}", urls[1]),
        &[
            ("authorization", &auth_header),
            ("content-type", "application/octet-stream"),
        ],
        first.clone(),
    )
    .await;
    assert_eq!(
        r.status,
        202,
        "PATCH through B: {}",
        String::from_utf8_lossy(&r.body)
    );
    let next = r.header("location").unwrap().to_owned();
    let path = next
        .split_once("/v2/")
        .map(|(_, p)| format!("/v2/{p}"))
        .unwrap();
    let whole = [first, second.clone()].concat();
    let digest = format!("sha256:{}", sha256_hex(&whole));
    let sep = if path.contains('?') { '&' } else { '?' };
    let r = http(
        Method::PUT,
        &format!("{}{path}{sep}digest={digest}", urls[2]),
        &[
            ("authorization", &auth_header),
            ("content-type", "application/octet-stream"),
        ],
        second,
    )
    .await;
    assert_eq!(
        r.status,
        201,
        "PUT through C: {}",
        String::from_utf8_lossy(&r.body)
    );
    for u in &urls {
        let r = get(
            &format!("{u}/v2/moving/app/blobs/{digest}"),
            &[("authorization", &auth_header)],
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.as_ref(), whole.as_slice());
    }

    // A 200 MB layer pushed with skopeo through haproxy; the replica carrying it is
    // killed with SIGKILL mid-way. skopeo retries, haproxy sends it to the others.
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("image");
    let size = 200 * 1024 * 1024;
    let (layer_digest, layer) = big_image(&image, size);
    // skopeo reaches haproxy over a slower link (about 64 MB/s up), so the layer is still
    // on its way when a replica is seen carrying it, however fast the machine: on an idle
    // one, loopback carried all 200 MB before the first look.
    let balancer: SocketAddr = format!("127.0.0.1:{}", ha.haproxy.as_ref().unwrap().http)
        .parse()
        .unwrap();
    let host = slow_link(balancer, 64 << 20).await.to_string();
    let dest = format!("docker://{host}/big/app:1");
    let source = format!("oci:{}:latest", image.display());
    let authfile = work.path().join("auth.json");
    let push = {
        let (authfile, source, dest) = (authfile.clone(), source.clone(), dest.clone());
        std::thread::spawn(move || {
            skopeo(
                &authfile,
                &[
                    "copy",
                    "--preserve-digests",
                    "--retry-times",
                    "5",
                    "--dest-tls-verify=false",
                    "--dest-creds=admin:admin-pw",
                    &source,
                    &dest,
                ],
            )
        })
    };
    // Which replica carries the layer: the one with a connection that has received the
    // most (`ss`: regate counts a body's bytes only once it has ended).
    let read_so_far = |pid: u32| -> f64 {
        let out = Command::new("ss")
            .args(["-tnpi", "state", "established"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut best: f64 = 0.0;
        let mut mine = false;
        let tag = format!("pid={pid},");
        for line in out.lines() {
            if !line.starts_with(char::is_whitespace) {
                mine = line.contains(&tag);
            } else if mine {
                if let Some(n) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("bytes_received:"))
                    .and_then(|v| v.parse::<f64>().ok())
                {
                    best = best.max(n);
                }
            }
        }
        best
    };
    let base: Vec<f64> = vec![0.0; ha.regates.len()];
    let mut victim = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while victim.is_none() && Instant::now() < deadline && !push.is_finished() {
        for (i, r) in ha.regates.iter().enumerate() {
            let received = read_so_far(r.child.id()) - base[i];
            if received > 20.0 * 1024.0 * 1024.0 {
                victim = Some((i, received));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Some((i, received)) = victim else {
        let (ok, out) = crate::common::blocking(move || push.join().unwrap()).await;
        panic!("no replica was seen carrying the upload (push ok: {ok}): {out}");
    };
    assert!(
        received < size as f64,
        "the upload was over before the kill ({received} bytes)"
    );
    ha.regates[i].child.kill().unwrap();
    let _ = ha.regates[i].child.wait();
    println!(
        "killed replica {i} with {:.0} MiB of the layer received",
        received / 1048576.0
    );
    let (ok, out) = crate::common::blocking(move || push.join().unwrap()).await;
    if !ok {
        // Debian's skopeo (1.9) retries only the errors containers/common calls
        // retryable, and a connection the balancer cut mid-body ("broken pipe", "use of
        // closed network connection") is not one of them; docker retries a layer push
        // itself. The command is run again, as a CI job's retry would: it must go
        // through the others.
        let cut = [
            "closed network connection",
            "connection reset",
            "EOF",
            "502",
            "broken pipe",
        ];
        assert!(
            cut.iter().any(|c| out.contains(c)),
            "the push failed for another reason: {out}"
        );
        println!("skopeo gave up on the cut connection; running it again");
        let (ok, out) = skopeo(
            &authfile,
            &[
                "copy",
                "--preserve-digests",
                "--retry-times",
                "5",
                "--dest-tls-verify=false",
                "--dest-creds=admin:admin-pw",
                &source,
                &dest,
            ],
        );
        assert!(
            ok,
            "the push did not complete through the other replicas: {out}"
        );
    } else {
        println!("skopeo's own retry completed the push");
    }

    // The image pulls byte-exact, through haproxy.
    let pulled = work.path().join("pulled");
    let (ok, out) = skopeo(
        &authfile,
        &[
            "copy",
            "--preserve-digests",
            "--dest-oci-accept-uncompressed-layers",
            "--src-tls-verify=false",
            "--src-creds=admin:admin-pw",
            &dest,
            &format!("oci:{}:latest", pulled.display()),
        ],
    );
    assert!(ok, "{out}");
    let hex = layer_digest.trim_start_matches("sha256:");
    let got = std::fs::read(pulled.join("blobs/sha256").join(hex)).unwrap();
    assert!(got == layer, "the pulled layer differs from the pushed one");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_config_file_reaches_every_replica_and_a_broken_one_is_refused_by_all() {
    let ha = Ha::start(false);
    let urls = ha.urls();
    let digests = async |urls: &[String]| {
        let mut out = Vec::new();
        for u in urls {
            let m = metrics_of(u).await;
            let line = m
                .lines()
                .find(|l| l.starts_with("regate_config_info{"))
                .unwrap_or("")
                .to_owned();
            out.push(line);
        }
        out
    };
    let before = digests(&urls).await;
    assert!(
        before.iter().all(|d| !d.is_empty() && *d == before[0]),
        "{before:?}"
    );

    // A user added to the shared file logs in on all three.
    let carol = format!("  \"carol\":\n    password: \"{}\"\n", bcrypt("carol-pw"));
    let text = config_text(ha.dir.path(), &ha.redis.addr(), &ha.registry_urls(), &carol);
    std::fs::write(&ha.config, &text).unwrap();
    let written = Instant::now();
    for u in &urls {
        let took = eventually(Duration::from_secs(60), async || {
            auth(u, "carol", "carol-pw", "10.0.5.1", "").await.status == 200
        })
        .await
        .unwrap_or_else(|| panic!("{u} did not pick the new file up"));
        println!(
            "{u}: the edit reached it after {took:?} ({:?} since the write)",
            written.elapsed()
        );
    }
    let after = digests(&urls).await;
    assert!(
        after.iter().all(|d| *d == after[0]) && after[0] != before[0],
        "{after:?}"
    );

    // A broken file: refused by all three, which keep serving the last good one and say
    // so in /metrics.
    std::fs::write(
        &ha.config,
        text.replacen("users:", "users:\n  broken: [", 1),
    )
    .unwrap();
    for u in &urls {
        let refused = eventually(Duration::from_secs(60), async || {
            let m = metrics_of(u).await;
            metric(&m, "regate_config_reload_failures_total").unwrap_or(0.0) >= 1.0
                && metric(&m, "regate_config_last_reload_successful") == Some(0.0)
        })
        .await;
        assert!(refused.is_some(), "{u} does not show the refused reload");
        assert_eq!(
            auth(u, "carol", "carol-pw", "10.0.5.2", "").await.status,
            200
        );
    }
    assert_eq!(digests(&urls).await, after, "the running config stayed");
    ha.assert_no_secret_in_logs();
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_mid_run_logins_and_pulls_go_on_and_sharing_resumes() {
    let mut ha = Ha::start(false);
    let urls = ha.urls();
    let digest = push_blob(&urls[0], "outage/app", &noise(7, 100_000)).await;
    let pull = async |u: &str| {
        let t = admin_token(u, "outage/app").await;
        get(
            &format!("{u}/v2/outage/app/blobs/{digest}"),
            &[("authorization", &format!("Bearer {t}"))],
        )
        .await
        .status
        .as_u16()
    };

    ha.redis.kill();
    for u in &urls {
        assert_eq!(
            auth(u, "admin", "admin-pw", "10.0.7.1", "").await.status,
            200,
            "{u}: login without Redis"
        );
        assert_eq!(pull(u).await, 200, "{u}: pull without Redis");
        let m = metrics_of(u).await;
        assert_eq!(metric(&m, "regate_shared_state_up"), Some(0.0), "{u}");
        assert!(
            metric(&m, "regate_throttle_local_fallbacks_total").unwrap_or(0.0) >= 1.0,
            "{u}"
        );
    }

    ha.redis.restart();
    let restarted = Instant::now();
    for u in &urls {
        let took = eventually(Duration::from_secs(60), async || {
            let _ = auth(u, "admin", "admin-pw", "10.0.7.2", "").await;
            metric(&metrics_of(u).await, "regate_shared_state_up") == Some(1.0)
        })
        .await
        .unwrap_or_else(|| panic!("{u} does not use Redis again"));
        println!(
            "{u}: sharing resumed {took:?} after the check began ({:?} since the restart)",
            restarted.elapsed()
        );
    }
    // Shared again: a lock made through A holds on B and C.
    for i in 0..6 {
        assert_eq!(
            auth(
                &urls[0],
                "alice",
                &format!("after-outage-{i}"),
                "10.0.7.3",
                ""
            )
            .await
            .status,
            401
        );
    }
    for u in &urls[1..] {
        assert_locked(u, "alice", "10.0.7.3").await;
    }
    for u in &urls {
        assert_eq!(pull(u).await, 200);
    }
    ha.assert_no_secret_in_logs();
}

/// The edge cache across replicas: B holds a tag's digest; a push of that tag through A
/// reaches B's cache through Redis (B counts it), and B's next pull sees the new digest
/// rather than the one it would otherwise believe for 5 s. A blob cached by C and deleted
/// through A is gone from C's cache the same way (it would otherwise stay 5 minutes).
/// Without the shared state's channel neither count moves and the test fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_through_one_replica_reaches_the_others_cache() {
    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    let ha = Ha::start(false);
    let urls = ha.urls();
    let (a, b, c) = (&urls[0], &urls[1], &urls[2]);
    let repo = "shared/cached";
    let bearer = async |u: &str| {
        let t = token(
            u,
            Some(("admin", "admin-pw")),
            &[&format!("repository:{repo}:pull,push,delete")],
        )
        .await;
        format!("Bearer {t}")
    };
    let push = async |seed: u64| {
        let (manifest, _) = push_small_image(a, repo, seed).await;
        let r = http(
            Method::PUT,
            &format!("{a}/v2/{repo}/manifests/latest"),
            &[("authorization", &bearer(a).await), ("content-type", OCI)],
            manifest.clone(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        format!("sha256:{}", sha256_hex(&manifest))
    };
    let ask = async |u: &str, method: Method, path: &str| {
        http(
            method,
            &format!("{u}{path}"),
            &[("authorization", &bearer(u).await), ("accept", OCI)],
            Vec::new(),
        )
        .await
    };
    let tag_on = async |u: &str| {
        let r = ask(u, Method::GET, &format!("/v2/{repo}/manifests/latest")).await;
        assert_eq!(r.status, 200, "{u}");
        r.header("docker-content-digest").unwrap().to_owned()
    };
    let count = async |u: &str, name: &str| metric(&metrics_of(u).await, name).unwrap_or(0.0);
    let received = "regate_cache_changes_received_total";

    let first = push(1).await;
    assert_eq!(tag_on(b).await, first);
    let hits = count(b, "regate_cache_hits_total").await;
    assert_eq!(tag_on(b).await, first);
    assert!(
        count(b, "regate_cache_hits_total").await > hits,
        "B answers the tag from its cache"
    );
    let heard = count(b, received).await;
    let second = push(2).await;
    let took = eventually(Duration::from_secs(30), async || {
        count(b, received).await > heard
    })
    .await
    .expect("B hears of the push through A");
    println!("B heard of the push through A after {took:?}");
    assert_eq!(tag_on(b).await, second, "B's cached tag was dropped");

    let blob = push_blob(a, repo, &noise(41, 50_000)).await;
    let path = format!("/v2/{repo}/blobs/{blob}");
    for _ in 0..2 {
        assert_eq!(ask(c, Method::GET, &path).await.status, 200);
    }
    let heard = count(c, received).await;
    let r = ask(a, Method::DELETE, &path).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    eventually(Duration::from_secs(30), async || {
        count(c, received).await > heard
    })
    .await
    .expect("C hears of the delete through A");
    assert_eq!(
        ask(c, Method::GET, &path).await.status,
        404,
        "C forgot the blob"
    );
    for u in &urls {
        assert_eq!(
            count(u, "regate_cache_changes_unsent_total").await,
            0.0,
            "{u}"
        );
    }
}

/// compose.ha.yml, its haproxy config and config/regate-ha.yml agree with each other (no
/// Docker here: `compose_ha` runs the files themselves with Debian's programs, and the
/// tests above a topology like theirs).
#[test]
fn the_compose_ha_files_fit_together() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo.join("compose.ha.yml")).unwrap())
            .unwrap();
    let services = &compose["services"];
    let s = |v: &serde_yaml::Value| v.as_str().unwrap_or("").to_owned();

    // Three regate replicas, one config, the Redis password as a secret file.
    for name in ["regate1", "regate2", "regate3"] {
        let r = &services[name];
        assert_eq!(s(&r["command"][2]), "/config/regate-ha.yml", "{name}");
        assert_eq!(s(&r["secrets"][0]), "redis-password", "{name}");
        assert!(r["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| s(v) == "./config:/config:ro"));
    }
    assert_eq!(
        s(&compose["secrets"]["redis-password"]["environment"]),
        "REDIS_PASSWORD"
    );

    // Two registries: one storage volume, one http.secret, the Redis cache.
    let env = |name: &str, key: &str| s(&services[name]["environment"][key]);
    for name in ["registry1", "registry2"] {
        assert_eq!(env(name, "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR"), "redis");
        assert_eq!(env(name, "REGISTRY_REDIS_ADDR"), "redis:6379");
        assert_eq!(env(name, "REGISTRY_HTTP_ADDR"), ":5000");
        assert!(env(name, "REGISTRY_HTTP_SECRET").contains("${REGISTRY_HTTP_SECRET"));
        assert_eq!(
            s(&services[name]["volumes"][0]),
            "registry-data:/var/lib/registry"
        );
    }
    let redis_cmd = services["redis"]["command"].as_sequence().unwrap();
    assert!(
        redis_cmd.iter().any(|v| s(v) == "--appendonly"),
        "Redis keeps its data"
    );

    // regate-ha.yml: loads, names a key (no generated ones), shares state in the compose
    // Redis with the secret's file, forwards to both registries, trusts haproxy alone.
    let path = repo.join("config/regate-ha.yml");
    let config =
        regate::config::Config::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(config.token.key.is_some());
    assert!(
        !config.warnings.iter().any(|w| w.contains("shared_state")),
        "{:?}",
        config.warnings
    );
    let redis = config.shared_state.as_ref().expect("shared_state");
    assert_eq!((redis.host.as_str(), redis.port), ("redis", 6379));
    assert_eq!(
        redis.password_file.as_deref(),
        Some(Path::new("/run/secrets/redis-password"))
    );
    let upstreams: Vec<String> = config.upstream.urls.iter().map(|u| u.to_string()).collect();
    assert_eq!(
        upstreams,
        ["http://registry1:5000/", "http://registry2:5000/"]
    );
    let haproxy_ip = s(&services["haproxy"]["networks"]["frontend"]["ipv4_address"]);
    let trusted = config
        .server
        .proxy_protocol
        .as_ref()
        .expect("proxy_protocol");
    assert_eq!(trusted.len(), 1);
    assert!(trusted[0].contains(haproxy_ip.parse().unwrap()));
    assert_eq!(config.server.listen.port(), 443);

    // The haproxy config: valid for haproxy itself, the three replicas on 443 with
    // send-proxy-v2, mounted where the image reads it.
    let cfg_path = repo.join("config/haproxy-ha.cfg");
    let out = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    for name in ["regate1", "regate2", "regate3"] {
        let line = cfg
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("server {name} ")))
            .unwrap();
        assert!(
            line.contains(&format!("{name}:443")) && line.contains("send-proxy-v2"),
            "{line}"
        );
    }
    assert!(services["haproxy"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|v| s(v) == "./config/haproxy-ha.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"));
}

/// The Redis store against a real `redis-server`: what `Local` does (values, expiry,
/// counters, set-if-absent, prefixes), a password from a file, and Redis down then back.
#[tokio::test(flavor = "multi_thread")]
async fn the_redis_store_keeps_what_the_local_one_keeps() {
    use regate::state::{RedisSettings, RedisStore, Store, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(&dir.path().join("redis"));
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{REDIS_PASSWORD}\n")).unwrap();
    let settings = RedisSettings {
        host: "127.0.0.1".into(),
        port: redis.port,
        db: 3,
        username: None,
        password_file: Some(pw),
        tls: false,
        ca_certificate: None,
    };
    let metrics = std::sync::Arc::new(regate::metrics::Metrics::default());
    let store = RedisStore::new(&settings, metrics.clone()).unwrap();
    store.put("a:1", b"one".to_vec(), None).await.unwrap();
    store.put("a:2", b"two".to_vec(), None).await.unwrap();
    store.put("a*[x]:3", b"glob".to_vec(), None).await.unwrap();
    store
        .put("b:1", b"b".to_vec(), Some(Duration::from_millis(300)))
        .await
        .unwrap();
    assert_eq!(
        store.get("a:1").await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    let mut keys = store.keys("a:").await.unwrap();
    keys.sort();
    assert_eq!(keys, ["a:1", "a:2"], "a prefix is matched literally");
    assert_eq!(store.keys("a*[x]").await.unwrap(), ["a*[x]:3"]);
    store.delete("a:1").await.unwrap();
    assert_eq!(store.get("a:1").await.unwrap(), None);
    let gone = eventually(Duration::from_secs(30), async || {
        store.get("b:1").await.unwrap().is_none()
    })
    .await;
    assert!(gone.is_some(), "an entry with a time to live goes");
    let ttl = Duration::from_secs(60);
    for n in 1..=3 {
        assert_eq!(store.incr("c", ttl).await.unwrap(), n);
    }
    assert_eq!(store.add("c", -3, ttl).await.unwrap(), 0);
    assert!(store.put_new("n", b"1".to_vec(), Some(ttl)).await.unwrap());
    assert!(!store.put_new("n", b"2".to_vec(), Some(ttl)).await.unwrap());
    assert_eq!(store.get("n").await.unwrap().as_deref(), Some(&b"1"[..]));

    // Down: an error at once (no hang), and the metric says so.
    redis.kill();
    let asked = Instant::now();
    assert!(matches!(
        store.get("n").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.get("n").await,
        Err(StoreError::Unavailable(_))
    ));
    println!(
        "two calls with Redis down answered in {:?}",
        asked.elapsed()
    );
    assert_eq!(
        metrics
            .shared_state_up
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // Back (its append-only file kept the data): the store reconnects by itself.
    redis.restart();
    let back = eventually(
        Duration::from_secs(60),
        async || matches!(store.get("n").await, Ok(Some(v)) if v == b"1"),
    )
    .await;
    assert!(back.is_some(), "the store did not come back with Redis");
    println!("the store answered again {back:?} after Redis restarted");
}
