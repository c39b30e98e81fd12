//! A compose service run here without Docker, as the `compose` and `compose_ha` tests do:
//! the mounts' sources in a temp dir ([`Host`]), container paths rewritten into it, Debian's
//! `docker-registry` on the registry:2 image's own config file plus the service's
//! `REGISTRY_*` variables, regate with the image's ENTRYPOINT and the service's command, and
//! clients that trust only the CA `regate cert init` made.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_yaml::Value;
use tempfile::TempDir;

use super::compose::{dockerfile, env_of, mounts_of, strings, Mount, REPO};
use super::{ca_only_dir, cert_init, oci_manifest_digest, skopeo, Resp};

pub const REGATE: &str = env!("CARGO_BIN_EXE_regate");

/// The registry:2 image's own `/etc/docker/registry/config.yml` (distribution-library-image,
/// 2.x): what the `REGISTRY_*` variables override in the container.
pub const REGISTRY_IMAGE_CONFIG: &str = "\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
";

// ---------------------------------------------------------------------------------------
// The mounts

/// Where the mounts' sources live here: `project/` is the compose file's folder (config/
/// copied into it, certificates made in it), `volumes/NAME` a named volume.
pub struct Host {
    pub dir: TempDir,
}

impl Host {
    /// config/ copied into `project/`, and step 1 of the compose files' comments:
    /// `regate cert init` for `cert_hosts` into `project/config/certs`.
    pub fn new(cert_hosts: &[&str]) -> Host {
        let host = Host {
            dir: tempfile::tempdir().unwrap(),
        };
        let config = host.project().join("config");
        std::fs::create_dir_all(&config).unwrap();
        for entry in std::fs::read_dir(Path::new(REPO).join("config")).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, config.join(path.file_name().unwrap())).unwrap();
            }
        }
        cert_init(&config.join("certs"), cert_hosts);
        host
    }

    pub fn project(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    pub fn ca(&self) -> PathBuf {
        self.project().join("config/certs/ca.crt")
    }

    /// Where a mount's source is here.
    pub fn source(&self, m: &Mount) -> PathBuf {
        let source = m.source.as_deref().unwrap_or_else(|| {
            panic!(
                "anonymous volume at {}: its data would not persist",
                m.target
            )
        });
        let path = if let Some(name) = m.volume_name() {
            self.dir.path().join("volumes").join(name)
        } else if let Some(rel) = source.strip_prefix("./") {
            self.project().join(rel)
        } else if source == "." {
            self.project()
        } else {
            self.dir
                .path()
                .join("root")
                .join(source.trim_start_matches('/'))
        };
        if m.volume_name().is_some() {
            std::fs::create_dir_all(&path).unwrap();
        }
        path
    }

    /// A service's mounts with their sources here.
    pub fn mounts(&self, svc: &Value) -> Vec<(Mount, PathBuf)> {
        mounts_of(svc)
            .into_iter()
            .map(|m| {
                let source = self.source(&m);
                (m, source)
            })
            .collect()
    }
}

/// The host path a container path is at, through the longest mount target above it.
pub fn host_path(mounts: &[(Mount, PathBuf)], container: &str) -> Option<PathBuf> {
    mounts
        .iter()
        .filter(|(m, _)| container == m.target || container.starts_with(&format!("{}/", m.target)))
        .max_by_key(|(m, _)| m.target.len())
        .map(|(m, host)| {
            let rest = container[m.target.len()..].trim_start_matches('/');
            if rest.is_empty() {
                host.clone()
            } else {
                host.join(rest)
            }
        })
}

/// Every string that is a path under a mount target now points at the mount's source.
pub fn rewrite_paths(value: &mut Value, mounts: &[(Mount, PathBuf)]) {
    match value {
        Value::String(s) if s.starts_with('/') => {
            if let Some(p) = host_path(mounts, s) {
                *s = p.display().to_string();
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|v| rewrite_paths(v, mounts)),
        Value::Mapping(map) => map.iter_mut().for_each(|(_, v)| rewrite_paths(v, mounts)),
        _ => {}
    }
}

/// A child process, killed on drop, with its output in a file.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// registry:2

/// A registry service's environment with its paths under its mounts pointing here, and
/// REGISTRY_HTTP_ADDR `127.0.0.1:0`: the `:5000` of the file is private to the container,
/// but here it would listen on every interface, and the port may be taken (Debian's own
/// docker-registry service uses it).
pub fn registry_env(host: &Host, svc: &Value) -> BTreeMap<String, String> {
    let mounts = host.mounts(svc);
    let mut env = env_of(svc);
    for value in env.values_mut() {
        if value.starts_with('/') {
            if let Some(p) = host_path(&mounts, value) {
                *value = p.display().to_string();
            }
        }
    }
    env.insert("REGISTRY_HTTP_ADDR".into(), "127.0.0.1:0".into());
    env
}

/// `docker-registry serve` on the registry:2 image's config file, with `env` and nothing
/// else; its address. Its log is `NAME.log` in the host's folder.
pub fn start_registry(
    host: &Host,
    name: &str,
    env: &BTreeMap<String, String>,
) -> (Process, SocketAddr) {
    let config = host.dir.path().join("registry-image-config.yml");
    std::fs::write(&config, REGISTRY_IMAGE_CONFIG).unwrap();
    let log = host.dir.path().join(format!("{name}.log"));
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .env_clear()
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker-registry is installed (apt-get install docker-registry)");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let log_path = log.clone();
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(log_path).unwrap();
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            if let Some(rest) = line.split("listening on ").nth(1) {
                if let Some(tx) = tx.take() {
                    let addr = rest.split(['"', ' ']).next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
            }
        }
    });
    let process = Process { child, log };
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            panic!(
                "docker-registry ({name}) did not start with {env:?}:\n{}",
                process.log()
            )
        });
    (process, addr.parse().unwrap())
}

// ---------------------------------------------------------------------------------------
// regate

/// A regate service as the image runs it: the Dockerfile's ENTRYPOINT with the service's
/// command (or the image's CMD), and the config file `--config` names, read through the
/// service's mounts. The caller rewrites what belongs to the container in `config`, then
/// [`RegateService::start`]s it.
pub struct RegateService {
    pub mounts: Vec<(Mount, PathBuf)>,
    /// The arguments after the ENTRYPOINT, as the container has them.
    pub args: Vec<String>,
    /// The `--config` argument (a container path).
    pub config_arg: String,
    /// Where that file is here.
    pub config_path: PathBuf,
    pub config: Value,
}

impl RegateService {
    pub fn read(host: &Host, svc: &Value) -> RegateService {
        let mounts = host.mounts(svc);
        let stages = dockerfile();
        let image = stages.last().unwrap();
        assert_eq!(image.exec_form("ENTRYPOINT"), ["/regate"]);
        let args = match svc.get("command") {
            Some(c) => strings(c),
            None => image.exec_form("CMD"),
        };
        let config_arg = args
            .iter()
            .position(|a| a == "--config")
            .map(|i| args[i + 1].clone())
            .unwrap_or_else(|| "/config/regate.yml".to_owned());
        let config_path = host_path(&mounts, &config_arg)
            .unwrap_or_else(|| panic!("{config_arg} is on no mount of the regate service"));
        let text = std::fs::read_to_string(&config_path)
            .unwrap_or_else(|e| panic!("{config_arg} ({}): {e}", config_path.display()));
        let config = serde_yaml::from_str(&text).unwrap();
        RegateService {
            mounts,
            args,
            config_arg,
            config_path,
            config,
        }
    }

    /// data_dir, where regate writes, is on a writable mount.
    pub fn check_data_dir(&self) {
        if let Some(dir) = self.config.get("data_dir").and_then(Value::as_str) {
            let writable = self.mounts.iter().any(|(m, _)| {
                !m.read_only && (dir == m.target || dir.starts_with(&format!("{}/", m.target)))
            });
            assert!(
                writable,
                "{}: data_dir {dir} is on no writable mount",
                self.config_arg
            );
        }
    }

    /// Writes the config, its paths pointing here, to `to` (the file `--config` then
    /// names); runs `regate check` on it as `docker compose run SERVICE check` would; starts
    /// regate with the service's environment and nothing else, and waits until it listens
    /// on `https`. The process (log `NAME.log`) and what check said.
    pub fn start(
        mut self,
        host: &Host,
        svc: &Value,
        name: &str,
        to: &Path,
        https: SocketAddr,
    ) -> (Process, String) {
        rewrite_paths(&mut self.config, &self.mounts);
        std::fs::write(to, serde_yaml::to_string(&self.config).unwrap()).unwrap();
        let mut value_args = Value::Sequence(self.args.iter().map(|a| a.as_str().into()).collect());
        rewrite_paths(&mut value_args, &self.mounts);
        let from = self.config_path.display().to_string();
        let args: Vec<String> = strings(&value_args)
            .into_iter()
            .map(|a| {
                if a == from {
                    to.display().to_string()
                } else {
                    a
                }
            })
            .collect();

        let check = Command::new(REGATE)
            .args(["check", "--config"])
            .arg(to)
            .env_clear()
            .output()
            .unwrap();
        let check_text = format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(
            check.status.success(),
            "{name}: regate check {}: {check_text}",
            self.config_arg
        );
        let log = host.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(REGATE)
            .args(&args)
            .env_clear()
            .envs(env_of(svc))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut process = Process { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(https).is_err() {
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!(
                    "{name}: regate {args:?} exited ({status}):\n{}",
                    process.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name}: regate is not listening on {https} after 30 s:\n{}",
                process.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (process, check_text)
    }
}

// ---------------------------------------------------------------------------------------
// Clients

/// skopeo with its own auth file, trusting only regate's CA, for images at `host`.
pub struct Skopeo {
    pub work: TempDir,
    pub certs: TempDir,
    pub host: String,
}

impl Skopeo {
    pub fn new(ca: &Path, host: String) -> Skopeo {
        Skopeo {
            work: tempfile::tempdir().unwrap(),
            certs: ca_only_dir(ca),
            host,
        }
    }

    pub async fn run(&self, args: Vec<String>) -> (bool, String) {
        let authfile = self.work.path().join("auth.json");
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            skopeo(&authfile, &args)
        })
        .await
        .unwrap()
    }

    pub async fn push(&self, image: &Path, creds: Option<&str>, target: &str) -> (bool, String) {
        let mut args = vec![
            "copy".to_owned(),
            format!("--dest-cert-dir={}", self.certs.path().display()),
        ];
        if let Some(c) = creds {
            args.push(format!("--dest-creds={c}"));
        }
        args.push(format!("oci:{}:latest", image.display()));
        args.push(format!("docker://{}/{target}", self.host));
        self.run(args).await
    }

    /// Pulls into a fresh OCI layout; returns it with the outcome.
    pub async fn pull(&self, creds: Option<&str>, source: &str) -> (bool, String, PathBuf) {
        let out = self.work.path().join(format!(
            "pulled-{}-{}",
            creds
                .map(|c| c.split(':').next().unwrap())
                .unwrap_or("anonymous"),
            source.replace(['/', ':'], "_")
        ));
        let mut args = vec![
            "copy".to_owned(),
            format!("--src-cert-dir={}", self.certs.path().display()),
        ];
        if let Some(c) = creds {
            args.push(format!("--src-creds={c}"));
        }
        args.push(format!("docker://{}/{source}", self.host));
        args.push(format!("oci:{}:latest", out.display()));
        let (ok, text) = self.run(args).await;
        (ok, text, out)
    }
}

/// The image config a pulled OCI layout's manifest names (skopeo compresses layers on the
/// way up, so the manifest changes; the config does not).
pub fn pulled_config(layout: &Path) -> String {
    let manifest = oci_manifest_digest(layout);
    let blob = layout
        .join("blobs/sha256")
        .join(manifest.strip_prefix("sha256:").unwrap());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap();
    manifest["config"]["digest"].as_str().unwrap().to_owned()
}

/// One HTTPS request to `addr`, trusting only the CA `ca`, checking the name `addr`'s IP.
pub async fn https_get(ca: &Path, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    try_https_get(ca, addr, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET https://{addr}{path}: {e}"))
}

/// [`https_get`], its failure an error rather than a panic (for polling).
pub async fn try_https_get(
    ca: &Path,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Resp, String> {
    try_https_get_from(ca, None, addr, path, headers).await
}

/// [`try_https_get`] from the local address `from` (another loopback address: a client
/// that is not the machine's balancer).
pub async fn try_https_get_from(
    ca: &Path,
    from: Option<IpAddr>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Resp, String> {
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::ServerName;

    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(from) = from {
        socket
            .bind(SocketAddr::new(from, 0))
            .map_err(|e| format!("bind {from}: {e}"))?;
    }
    let tcp = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(|e| format!("TLS with regate's certificate, trusting only ca.crt: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .map_err(|e| format!("request: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}
