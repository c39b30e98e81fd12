//! Shared test parts: the real registry (Debian's `docker-registry`, distribution 2.8.2)
//! on a free loopback port, regate in-process on port 0, a raw HTTP client, OCI images
//! made on the fly, and skopeo. `compose` reads the deployment files as Docker would, and
//! `stand_in` runs their services here (the `compose` and `compose_ha` tests).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
pub use regate::timeouts::Timeouts;

pub mod browser;
pub mod compose;
pub mod stand_in;
use tempfile::TempDir;

pub const SERVICE: &str = "Docker registry";
pub const ISSUER: &str = "Auth Service";

/// A `docker-registry serve` child with its own storage; killed on drop.
pub struct Registry {
    pub addr: SocketAddr,
    pub dir: TempDir,
    /// Serves HTTPS itself (registry:2's `http.tls`).
    https: bool,
    child: Child,
}

/// How the registry itself checks tokens, for the seed's layout.
pub struct TokenAuth {
    pub realm: String,
    pub rootcertbundle: PathBuf,
}

impl Registry {
    pub fn start(token_auth: Option<&TokenAuth>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        Registry::start_in(dir, token_auth, "127.0.0.1:0")
    }

    pub fn start_in(dir: TempDir, token_auth: Option<&TokenAuth>, addr: &str) -> Registry {
        Registry::start_with(dir, token_auth, addr, None)
    }

    /// A registry serving HTTPS itself with `cert` and `key` (PEM).
    pub fn start_tls(cert: &Path, key: &Path) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        Registry::start_with(dir, None, "127.0.0.1:0", Some((cert, key)))
    }

    fn start_with(
        dir: TempDir,
        token_auth: Option<&TokenAuth>,
        addr: &str,
        tls: Option<(&Path, &Path)>,
    ) -> Registry {
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: \"{addr}\"\n  secret: regate-test-secret\n",
            storage.display()
        );
        if let Some((cert, key)) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some(auth) = token_auth {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: \"{}\"\n    service: \"{SERVICE}\"\n    issuer: \"{ISSUER}\"\n    rootcertbundle: {}\n",
                auth.realm,
                auth.rootcertbundle.display()
            ));
        }
        let config_path = dir.path().join("registry.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker-registry is installed (apt-get install docker-registry)");
        let stderr = child.stderr.take().unwrap();
        let log = dir.path().join("registry.log");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(log).unwrap();
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if !sent {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        // "listening on 127.0.0.1:PORT" (", tls" after it with TLS)
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
        Registry {
            addr: addr.parse().unwrap(),
            dir,
            https: tls.is_some(),
            child,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Whether the registry stored anything for `name`.
    pub fn has_repository(&self, name: &str) -> bool {
        self.dir
            .path()
            .join("storage/docker/registry/v2/repositories")
            .join(name)
            .exists()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The log once it holds `needle`, or as it is after 10 s: the registry writes some
    /// lines (a failed TLS handshake) after the client has seen the outcome, and they pass
    /// through a pipe and a thread before they reach the file.
    pub fn log_once_it_holds(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn bcrypt(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

/// config/docker_auth-seed.yml: the seed's docker_auth config, and the one fixture the
/// tests' configs derive from.
pub const SEED: &str = include_str!("../../../config/docker_auth-seed.yml");

/// `text` with each `(from, to)` applied in turn; each `from` must be there exactly once,
/// so that a fixture that changes fails here instead of quietly testing something else.
pub fn derive(text: &str, edits: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in edits {
        assert_eq!(out.matches(from).count(), 1, "{from:?} once in:\n{out}");
        out = out.replacen(from, to, 1);
    }
    out
}

/// A YAML text without its comments: comment lines go, and a comment after a value goes
/// with the spaces before it (a `#` inside double quotes stays; the fixture quotes no other
/// way).
pub fn without_comments(yaml: &str) -> String {
    yaml.lines()
        .filter_map(|line| {
            let mut quoted = false;
            let mut prev = ' ';
            let cut = line.char_indices().find_map(|(i, c)| {
                let starts = c == '#' && !quoted && prev.is_whitespace();
                quoted ^= c == '"';
                prev = c;
                starts.then_some(i)
            });
            match cut {
                Some(i) if line[..i].trim().is_empty() => None,
                Some(i) => Some(format!("{}\n", line[..i].trim_end())),
                None => Some(format!("{line}\n")),
            }
        })
        .collect()
}

/// The quoted password hash of `user` in a config's `users`.
pub fn password_of<'a>(config: &'a str, user: &str) -> &'a str {
    let entry = format!("\n  \"{user}\":\n    password: \"");
    let at = config
        .find(&entry)
        .unwrap_or_else(|| panic!("no user {user:?}"))
        + entry.len();
    let len = config[at..].find('"').unwrap();
    &config[at..at + len]
}

/// The seed as a test runs it: the file without its comments, plain HTTP on 127.0.0.1:0
/// instead of its TLS files, the hashes `admin` and `hussein` instead of its example ones,
/// a comment on the admin rule, `upstream.url` set to `upstream`, and `data_dir`.
pub fn seed_as_run(upstream: &str, data_dir: &Path, admin: &str, hussein: &str) -> String {
    let seed = without_comments(SEED);
    let url = format!("  url: \"{upstream}\"\n");
    derive(
        &seed,
        &[
            (
                "server:\n  addr: \":5001\"\n  certificate: \"/ssl/server.pem\"\n  key: \"/ssl/server.key\"\n",
                "server:\n  addr: \"127.0.0.1:0\"\n",
            ),
            (password_of(&seed, "admin"), admin),
            (password_of(&seed, "hussein"), hussein),
            (
                "  - match: {account: \"admin\"}\n    actions: [\"*\"]\n",
                "  - match: {account: \"admin\"}\n    actions: [\"*\"]\n    comment: \"admin can do anything\"\n",
            ),
            ("  url: \"http://registry:5000\"\n", &url),
        ],
    ) + format!("data_dir: \"{}\"\n", data_dir.display()).as_str()
}

/// [`seed_as_run`] with the passwords `admin-pw` and `hussein-pw`, two more users
/// (`alice`, `test`) and a `${account}/*` namespace rule before the seed's pull rule.
pub fn seed_config(upstream: &str, data_dir: &Path) -> String {
    let seed = seed_as_run(
        upstream,
        data_dir,
        &bcrypt("admin-pw"),
        &bcrypt("hussein-pw"),
    );
    assert!(seed.contains(&format!("  issuer: \"{ISSUER}\"\n")));
    let users = format!(
        "  \"alice\":\n    password: \"{}\"\n  \"test\":\n    password: \"{}\"\n  \"\": {{}}\n",
        bcrypt("alice-pw"),
        bcrypt("test-pw")
    );
    let pull = "  - match: {account: \"/.+/\"}\n";
    let namespace = format!(
        "  - match: {{account: \"/.+/\", name: \"${{account}}/*\"}}\n    actions: [\"*\"]\n    comment: \"each user owns a namespace\"\n{pull}"
    );
    derive(&seed, &[("  \"\": {}\n", &users), (pull, &namespace)])
}

/// regate running in this process.
pub struct Gateway {
    pub server: regate::Server,
    pub dir: TempDir,
}

impl Gateway {
    pub async fn start(config_yaml: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        Gateway::start_in(dir, config_yaml).await
    }

    pub async fn start_in(dir: TempDir, config_yaml: &str) -> Gateway {
        Gateway::start_with(dir, config_yaml, Timeouts::default()).await
    }

    /// As [`Gateway::start_in`], with `timeouts` instead of regate's defaults: a test
    /// that waits for a timeout gives a short one.
    pub async fn start_with(dir: TempDir, config_yaml: &str, timeouts: Timeouts) -> Gateway {
        let path = dir.path().join("regate.yml");
        std::fs::write(&path, config_yaml).unwrap();
        let mut config = regate::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        config.timeouts = timeouts;
        let server = regate::start(config).await.unwrap();
        Gateway { server, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `host:port` as clients name it.
    pub fn host(&self) -> String {
        self.addr().to_string()
    }
}

/// The seed's setup: a registry with no auth of its own, regate in front.
pub struct Seed {
    pub registry: Registry,
    pub gateway: Gateway,
}

impl Seed {
    pub async fn start() -> Seed {
        Seed::start_with(Timeouts::default()).await
    }

    /// The seed's setup with regate's `timeouts` set.
    pub async fn start_with(timeouts: Timeouts) -> Seed {
        let registry = Registry::start(None);
        let dir = tempfile::tempdir().unwrap();
        let config = seed_config(&registry.url(), &dir.path().join("data"));
        let gateway = Gateway::start_with(dir, &config, timeouts).await;
        Seed { registry, gateway }
    }

    /// The seed's own layout: the registry checks regate's tokens too (same issuer and
    /// service, regate's certificate as its `rootcertbundle`).
    pub async fn start_token_checking() -> Seed {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (key, _) = regate::auth::keys::SigningKey::load_or_generate(&data).unwrap();
        // regate's port is not known before it starts, and the registry's realm only
        // matters to clients that talk to the registry directly, which none do here.
        let auth = TokenAuth {
            realm: "http://127.0.0.1:1/auth".into(),
            rootcertbundle: key.certificate_path.clone(),
        };
        let registry = Registry::start(Some(&auth));
        let config = seed_config(&registry.url(), &data);
        let gateway = Gateway::start_in(dir, &config).await;
        Seed { registry, gateway }
    }
}

/// A response read whole.
pub struct Resp {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

pub async fn http(method: Method, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req))
        .await
        .expect("no answer within 60 s")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    http(Method::GET, url, headers, Vec::new()).await
}

pub fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

/// A token from regate's `/auth` for these scopes (`None`: anonymous).
pub async fn token(base: &str, creds: Option<(&str, &str)>, scopes: &[&str]) -> String {
    let mut url = format!("{base}/auth?service=Docker%20registry");
    for s in scopes {
        url.push_str("&scope=");
        url.push_str(s);
    }
    let auth = creds.map(|(u, p)| basic(u, p));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let resp = get(&url, &headers).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    resp.json()["token"].as_str().unwrap().to_owned()
}

/// A JWT's claims (its payload, unverified: what the tests read of a token regate issued).
pub fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("a JWT's payload is base64url");
    serde_json::from_slice(&bytes).expect("a JWT's payload is JSON")
}

/// admin's token (the seed's config grants admin everything) for pull and push on `repo`.
pub async fn admin_token(base: &str, repo: &str) -> String {
    token(
        base,
        Some(("admin", "admin-pw")),
        &[&format!("repository:{repo}:pull,push")],
    )
    .await
}

/// Pushes `data` as a blob of `repo` in one upload through regate at `base`, with admin's
/// token; returns its digest.
pub async fn push_blob(base: &str, repo: &str, data: &[u8]) -> String {
    let auth = format!("Bearer {}", admin_token(base, repo).await);
    let digest = format!("sha256:{}", sha256_hex(data));
    let r = http(
        Method::POST,
        &format!("{base}/v2/{repo}/blobs/uploads/"),
        &[("authorization", &auth)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let location = r.header("location").unwrap();
    let r = http(
        Method::PUT,
        &format!("{location}&digest={digest}"),
        &[
            ("authorization", &auth),
            ("content-type", "application/octet-stream"),
        ],
        data.to_vec(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    digest
}

/// Pushes a small image config (one per `seed`) as a blob of `repo` through `base`; an OCI
/// manifest naming it (to be pushed by the caller) and the config's digest.
pub async fn push_small_image(base: &str, repo: &str, seed: u64) -> (Vec<u8>, String) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#);
    let config_digest = push_blob(base, repo, config.as_bytes()).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": []
    }))
    .unwrap();
    (manifest, config_digest)
}

pub fn sha256_hex(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A minimal ustar archive holding one file.
pub fn tar_with_file(name: &str, contents: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], value: u64| {
        let s = format!("{:0width$o}", value, width = field.len() - 1);
        field[..s.len()].copy_from_slice(s.as_bytes());
    };
    octal(&mut header[100..108], 0o644);
    octal(&mut header[108..116], 0);
    octal(&mut header[116..124], 0);
    octal(&mut header[124..136], contents.len() as u64);
    octal(&mut header[136..148], 1_700_000_000);
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(s.as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(contents);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.resize(out.len() + 1024, 0);
    out
}

/// Pseudo-random bytes, different for each seed (xorshift; no dependency needed).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What an OCI layout written by [`oci_image`] holds.
pub struct Image {
    pub manifest: String,
    pub config: String,
}

/// An OCI image layout in `dir` with `layers` layers.
pub fn oci_image(dir: &Path, layers: usize, seed: u64) -> Image {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let hex = sha256_hex(data);
        std::fs::write(blobs.join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..layers {
        let tar = tar_with_file(
            &format!("file{i}"),
            &noise(seed * 100 + i as u64, 64 * 1024 + i * 1000),
        );
        let (digest, size) = put(&tar);
        diff_ids.push(digest.clone());
        layer_descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest, "size": size
        }));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {}
    });
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layer_descs
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let (manifest_digest, manifest_size) = put(&manifest_bytes);
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    Image {
        manifest: manifest_digest,
        config: config_digest,
    }
}

/// The manifest digest an OCI layout's index names first.
pub fn oci_manifest_digest(dir: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_owned()
}

/// Runs skopeo with its own auth file; returns (success, stderr).
pub fn skopeo(authfile: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("skopeo")
        .args(args)
        .env("REGISTRY_AUTH_FILE", authfile)
        .env("HOME", authfile.parent().unwrap())
        .output()
        .expect("skopeo is installed (apt-get install skopeo)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs a blocking closure (a client process) off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The DNS name the HTTPS tests reach regate by. It resolves to `::1` only (see
/// [`ensure_hosts_entry`]): docker treats every registry whose host resolves into
/// 127.0.0.0/8 as insecure and skips certificate checks, so 127.0.0.1 would prove nothing.
pub const TLS_HOST: &str = "regate-test.internal";

/// Makes `/etc/hosts` map `name` to `::1`, adding the line once (needs root).
pub fn ensure_hosts_entry(name: &str) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let addrs: Vec<Option<&str>> = hosts
        .lines()
        .filter_map(|line| {
            let mut words = line.split('#').next().unwrap_or("").split_whitespace();
            let addr = words.next();
            words.any(|w| w == name).then_some(addr)
        })
        .collect();
    assert!(
        addrs.iter().all(|a| *a == Some("::1")),
        "/etc/hosts maps {name} to something else than ::1: {addrs:?}"
    );
    if addrs.is_empty() {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open("/etc/hosts")
            .unwrap_or_else(|e| panic!("cannot add `::1 {name}` to /etc/hosts (root?): {e}"));
        let sep = if hosts.is_empty() || hosts.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        writeln!(file, "{sep}::1 {name}").unwrap();
    }
}

/// `regate cert init --host ... --out DIR`: the CA, server and token pairs in `out`.
pub fn cert_init(out: &Path, hosts: &[&str]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regate"));
    cmd.args(["cert", "init", "--out"]).arg(out);
    for h in hosts {
        cmd.args(["--host", h]);
    }
    let result = cmd.output().unwrap();
    assert!(
        result.status.success(),
        "regate cert init: {}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// [`seed_config`] serving HTTPS on `addr` with this certificate and key.
pub fn seed_config_tls(
    upstream: &str,
    data_dir: &Path,
    addr: &str,
    cert: &Path,
    key: &Path,
) -> String {
    let plain = seed_config(upstream, data_dir);
    let server = format!(
        "server:\n  addr: \"{addr}\"\n  certificate: \"{}\"\n  key: \"{}\"\n",
        cert.display(),
        key.display()
    );
    let tls = plain.replacen("server:\n  addr: \"127.0.0.1:0\"\n", &server, 1);
    assert_ne!(tls, plain, "seed_config's server section changed");
    tls
}

/// A config's `token:` section given a signing pair of its own.
pub fn with_token_pair(config: &str, cert: &Path, key: &Path) -> String {
    let pair = format!(
        "token:\n  certificate: \"{}\"\n  key: \"{}\"\n",
        cert.display(),
        key.display()
    );
    let out = config.replacen("token:\n", &pair, 1);
    assert_ne!(out, config, "no token section");
    out
}

/// The seed's layout over trusted HTTPS: `regate cert init` for [`TLS_HOST`] and `::1`,
/// regate on `[::1]:0` with the server pair and the token pair.
pub struct TlsSeed {
    pub seed: Seed,
    /// What `regate cert init` wrote: `ca.crt`, `server.crt`, `token.crt`, ...
    pub certs: PathBuf,
}

impl TlsSeed {
    pub async fn start() -> TlsSeed {
        ensure_hosts_entry(TLS_HOST);
        let registry = Registry::start(None);
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        cert_init(&certs, &[TLS_HOST, "::1"]);
        let config = seed_config_tls(
            &registry.url(),
            &dir.path().join("data"),
            "[::1]:0",
            &certs.join("server.crt"),
            &certs.join("server.key"),
        );
        let config = with_token_pair(&config, &certs.join("token.crt"), &certs.join("token.key"));
        let gateway = Gateway::start_in(dir, &config).await;
        TlsSeed {
            seed: Seed { registry, gateway },
            certs,
        }
    }

    /// `regate-test.internal:PORT`, as clients write it in image names.
    pub fn host(&self) -> String {
        format!("{TLS_HOST}:{}", self.seed.gateway.addr().port())
    }

    pub fn ca(&self) -> PathBuf {
        self.certs.join("ca.crt")
    }
}

/// A folder holding only the CA, for `--cert-dir` style options.
pub fn ca_only_dir(ca: &Path) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(ca, dir.path().join("ca.crt")).unwrap();
    dir
}

/// Runs a command with a deadline; returns (success, stdout + stderr). A command still
/// running at the deadline is killed and the test fails with what it printed.
pub fn run_with_deadline(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> (bool, String) {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    match status {
        Some(status) => (status.success(), text),
        None => panic!("{cmd:?} still running after {timeout:?}; it printed: {text}"),
    }
}

/// The `regate` binary as a child process, its log (stderr) in a file; killed on drop.
pub struct RegateProcess {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl RegateProcess {
    pub fn start(config: &Path, log: PathBuf) -> RegateProcess {
        RegateProcess::start_with_env(config, log, &[])
    }

    /// As [`RegateProcess::start`], with extra environment variables.
    pub fn start_with_env(config: &Path, log: PathBuf, env: &[(&str, &str)]) -> RegateProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regate"));
        cmd.envs(env.iter().copied());
        RegateProcess::spawn(cmd, config, log)
    }

    /// As [`RegateProcess::start`], run by `wrapper` (a command that runs the rest of its
    /// arguments, such as `prlimit --nofile=1024:`).
    pub fn start_under(wrapper: &[&str], config: &Path, log: PathBuf) -> RegateProcess {
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).arg(env!("CARGO_BIN_EXE_regate"));
        RegateProcess::spawn(cmd, config, log)
    }

    fn spawn(mut cmd: Command, config: &Path, log: PathBuf) -> RegateProcess {
        let file = std::fs::File::create(&log).unwrap();
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(config)
            .env("REGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let found = text
                .lines()
                .filter(|l| l.contains("regate listening"))
                .find_map(|l| l.split("addr=").nth(1))
                .map(|rest| rest.split(' ').next().unwrap_or("").to_owned());
            if let Some(addr) = found {
                return RegateProcess { child, addr, log };
            }
            if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                let _ = child.kill();
                let _ = child.wait();
                panic!("regate did not start:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RegateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- Daemons a test starts itself (containerd, dockerd) ----

/// Keeps the proxy variables of the machine away from a daemon or client: everything a
/// test talks to is on loopback.
pub fn without_proxies(cmd: &mut Command) -> &mut Command {
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Polls `probe` (success, output) until it succeeds; fails when `child` exits first or
/// `limit` passes, with the probe's last output and the daemon's `log()`.
pub fn wait_ready(
    what: &str,
    child: &mut Child,
    limit: Duration,
    mut probe: impl FnMut() -> (bool, String),
    log: impl Fn() -> String,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!(
                "{what} exited ({status}) before answering; its log:\n{}",
                log()
            ));
        }
        let (ok, out) = probe();
        if ok {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{what} did not answer within {limit:?} ({}); its log:\n{}",
                out.trim(),
                log()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, so a daemon stops what it started; SIGKILL if it is not gone after `grace`.
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A loopback port kept for a daemon that a test starts on it (or restarts): bound with
/// SO_REUSEADDR but not listening, so a connection to it is refused as to a free port.
/// All the tests share one process, and the connection-cap test alone opens 4096
/// connections: a port found free and let go could be taken by any test's outgoing
/// connection or port-0 listener before the daemon binds it. A held one cannot, and a
/// daemon that sets SO_REUSEADDR too (docker-registry, slapd and regate do) binds it
/// while it is held.
pub struct ReservedPort {
    socket: tokio::net::TcpSocket,
}

impl ReservedPort {
    /// A free port on 127.0.0.1.
    pub fn new() -> ReservedPort {
        ReservedPort::at(SocketAddr::from(([127, 0, 0, 1], 0))).expect("a free loopback port")
    }

    /// `addr` itself (a daemon's port between a stop and a start).
    pub fn at(addr: SocketAddr) -> std::io::Result<ReservedPort> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        Ok(ReservedPort { socket })
    }

    pub fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }
}

// ---- Helpers for the adversarial, limits, faults and load suites ----

impl Registry {
    /// Kills the registry and starts it again on the same address with the same storage
    /// (and so the same repositories), as an operator's restart does.
    pub fn restart(&mut self, token_auth: Option<&TokenAuth>) {
        self.kill();
        // Held until the new registry listens; best effort, as before.
        let _held = ReservedPort::at(self.addr).ok();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let addr = self.addr.to_string();
        let fresh = Registry::start_in(dir, token_auth, &addr);
        // The old value only holds the dead child and an empty temp dir now.
        drop(std::mem::replace(self, fresh));
    }

    /// The request URIs the registry logged (`http.request.uri=`), in order.
    pub fn request_uris(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split("http.request.uri=\"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect()
    }
}

/// Writes `request` as it is to `addr` and returns every byte the server sent until it
/// closed the connection, or until nothing came for `quiet`.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], quiet: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything (a refused request).
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// [`raw_exchange`] with a 5 s quiet period; the request should say `Connection: close`.
pub async fn raw(addr: SocketAddr, request: &str) -> String {
    raw_exchange(addr, request.as_bytes(), Duration::from_secs(5)).await
}

/// The status code of the first response in a raw answer (0 when there is none).
pub fn raw_status(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// A header of the first response in a raw answer (name matched case-insensitively).
pub fn raw_header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The `regate_requests_total` lines of `/metrics` whose status is 5xx.
pub async fn server_errors(base: &str) -> Vec<String> {
    let metrics = get(&format!("{base}/metrics"), &[]).await;
    assert_eq!(metrics.status, 200);
    String::from_utf8_lossy(&metrics.body)
        .lines()
        .filter(|l| l.starts_with("regate_requests_total{") && l.contains("status=\"5"))
        .map(str::to_owned)
        .collect()
}

/// The resident memory of a process, in bytes (Linux `/proc/PID/status` `VmRSS`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// Debian's registry and the `regate` binary in front of it with the seed's config.
pub struct SeedProcess {
    // Fields drop in order: regate stops before the registry and the folder go.
    pub regate: RegateProcess,
    pub registry: Registry,
    pub dir: TempDir,
}

impl SeedProcess {
    pub fn start() -> SeedProcess {
        let registry = Registry::start(None);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("regate.yml");
        std::fs::write(
            &config,
            seed_config(&registry.url(), &dir.path().join("data")),
        )
        .unwrap();
        let regate = RegateProcess::start(&config, dir.path().join("regate.log"));
        SeedProcess {
            regate,
            registry,
            dir,
        }
    }
}
