//! End to end over trusted HTTPS, with no `--insecure-registry` and no
//! `--tls-verify=false` anywhere: the docker CLI against a dockerd from Debian's
//! `docker.io` that this test starts (vfs, its own data root, exec root, pid file and
//! socket), and skopeo given only the CA. regate's certificates come from
//! `regate cert init`; regate listens on `[::1]` and is reached as [`TLS_HOST`], which
//! `/etc/hosts` maps to `::1` only, because docker skips certificate checks for any
//! registry that resolves into 127.0.0.0/8.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use tempfile::TempDir;

/// Debian's `docker.io` installs the CLI as /usr/bin/docker; prefer it to any other
/// `docker` on PATH (a newer CLI in /usr/local/bin, say).
fn docker_bin() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

fn dockerd_bin() -> &'static str {
    if Path::new("/usr/sbin/dockerd").exists() {
        "/usr/sbin/dockerd"
    } else {
        "dockerd"
    }
}

/// The end of dockerd's log, where the reason it stopped is (containerd's start-up fills
/// the beginning).
fn tail_of_log(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().filter(|l| !l.contains("module=grpc")).collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A dockerd of the test's own; stopped (SIGTERM, then SIGKILL) and its files removed on
/// drop.
struct Dockerd {
    child: Child,
    sock: PathBuf,
    dir: TempDir,
}

impl Dockerd {
    /// Starts dockerd and waits until it answers; the error carries dockerd's log.
    fn start() -> Result<Dockerd, String> {
        // Short paths: containerd's socket lives under the exec root, and a unix socket
        // path has at most 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("regate-dockerd")
            .tempdir_in("/tmp")
            .unwrap();
        let root = dir.path();
        let sock = root.join("docker.sock");
        // An empty daemon.json, so that the host's /etc/docker/daemon.json (mirrors,
        // insecure-registries, ...) plays no part.
        std::fs::write(root.join("daemon.json"), "{}").unwrap();
        let log = std::fs::File::create(root.join("dockerd.log")).unwrap();
        let mut cmd = Command::new(dockerd_bin());
        cmd.arg(format!(
            "--config-file={}",
            root.join("daemon.json").display()
        ))
        .arg(format!("--host=unix://{}", sock.display()))
        .arg(format!("--data-root={}", root.join("data").display()))
        .arg(format!("--exec-root={}", root.join("exec").display()))
        .arg(format!("--pidfile={}", root.join("dockerd.pid").display()))
        .arg("--storage-driver=vfs")
        // Nothing here runs a container: no bridge, no iptables, which a sandbox or a
        // CI container may not allow.
        .args([
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--ip-forward=false",
        ])
        // Should dockerd join a system containerd, keep out of the system dockerd's
        // namespaces.
        .args([
            "--containerd-namespace=regate-test",
            "--containerd-plugins-namespace=regate-test-plugins",
        ])
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        without_proxies(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); install Debian's docker.io (apt-get install docker.io)",
                dockerd_bin()
            )
        });
        let mut daemon = Dockerd { child, sock, dir };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let client = self.client(self.dir.path().join("probe-config"));
        let log_path = self.dir.path().join("dockerd.log");
        wait_ready(
            "dockerd (`docker version`)",
            &mut self.child,
            Duration::from_secs(40),
            || client.run(&["version", "--format", "{{.Server.Version}}"], b""),
            || tail_of_log(&log_path),
        )
    }

    /// A CLI talking to this daemon, with its own config folder (logins) in `config`.
    fn client(&self, config: PathBuf) -> DockerCli {
        DockerCli {
            sock: self.sock.clone(),
            config,
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop the containerd it started; SIGKILL if it takes long.
        terminate(&mut self.child, Duration::from_secs(15));
        // dockerd bind-mounts its data root onto itself and undoes that only on a clean
        // shutdown; after a failed start the mount would keep the folder from going.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(self.dir.path()))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount")
                .args(["--lazy", m])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[derive(Clone)]
struct DockerCli {
    sock: PathBuf,
    config: PathBuf,
}

impl DockerCli {
    /// `docker ARGS` with `stdin`; (success, stdout + stderr).
    fn run(&self, args: &[&str], stdin: &[u8]) -> (bool, String) {
        let mut cmd = Command::new(docker_bin());
        cmd.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", &self.config)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        run_with_deadline(&mut cmd, stdin, Duration::from_secs(60))
    }

    async fn docker(&self, args: &[&str]) -> (bool, String) {
        self.docker_stdin(args, "").await
    }

    async fn docker_stdin(&self, args: &[&str], stdin: &str) -> (bool, String) {
        let cli = self.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let stdin = stdin.to_owned();
        blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli.run(&args, stdin.as_bytes())
        })
        .await
    }

    async fn login(&self, host: &str, user: &str, password: &str) -> (bool, String) {
        self.docker_stdin(
            &["login", "--username", user, "--password-stdin", host],
            &format!("{password}\n"),
        )
        .await
    }

    /// `docker import` of a one-file root filesystem (`file` holding `contents`, the tar
    /// written under `dir`) as `image`; its ID, checked against what import printed.
    async fn import(&self, dir: &Path, file: &str, contents: &[u8], image: &str) -> String {
        let tar = dir.join("rootfs.tar");
        std::fs::write(&tar, tar_with_file(file, contents)).unwrap();
        let (ok, out) = self.docker(&["import", tar.to_str().unwrap(), image]).await;
        assert!(ok, "docker import: {out}");
        let id = self.image_id(image).await.expect("the imported image");
        assert_eq!(out.trim(), id);
        id
    }

    async fn image_id(&self, image: &str) -> Option<String> {
        let (ok, out) = self
            .docker(&["image", "inspect", "--format", "{{.Id}}", image])
            .await;
        ok.then(|| out.trim().to_owned())
    }
}

/// `/etc/docker/certs.d/HOST:PORT/ca.crt`, where dockerd looks for a registry's CA on each
/// connection (no restart); the folder is removed on drop.
struct TrustedCa {
    dir: PathBuf,
}

impl TrustedCa {
    fn dir_for(host: &str) -> PathBuf {
        Path::new("/etc/docker/certs.d").join(host)
    }

    fn place(host: &str, ca: &Path) -> TrustedCa {
        let dir = TrustedCa::dir_for(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(ca, dir.join("ca.crt")).unwrap();
        TrustedCa { dir }
    }
}

impl Drop for TrustedCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn assert_tls_refused(out: &str) {
    assert!(
        out.contains("x509") || out.contains("certificate signed by unknown authority"),
        "expected a certificate verification error, got: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_cli_over_trusted_https() {
    let (tls, dockerd) = tokio::join!(TlsSeed::start(), blocking(Dockerd::start));
    let dockerd = dockerd.unwrap_or_else(|e| panic!("{e}"));
    let host = tls.host();
    let work = tempfile::tempdir().unwrap();
    let cli = dockerd.client(work.path().join("docker-config"));
    // A stale folder for this port (a killed earlier run) would hide the check below.
    let _ = std::fs::remove_dir_all(TrustedCa::dir_for(&host));

    // TLS is verified: without the CA in certs.d, dockerd refuses regate's certificate
    // (it would not, were the host on 127.0.0.0/8 or given as --insecure-registry).
    let (ok, out) = cli.login(&host, "admin", "admin-pw").await;
    assert!(!ok, "login must fail before the CA is trusted: {out}");
    assert_tls_refused(&out);

    let _trusted = TrustedCa::place(&host, &tls.ca());

    // A wrong password fails, the right one succeeds.
    let (ok, out) = cli.login(&host, "admin", "wrong").await;
    assert!(!ok, "a wrong password must not log in: {out}");
    assert!(out.contains("unauthorized"), "{out}");
    let (ok, out) = cli.login(&host, "admin", "admin-pw").await;
    assert!(ok, "admin login: {out}");
    assert!(out.contains("Login Succeeded"), "{out}");

    // An image made with `docker import`, pushed, removed, pulled back: same image ID.
    let image = format!("{host}/library/app:v1");
    let id = cli
        .import(
            work.path(),
            "hello.txt",
            b"hello from regate's docker test\n",
            &image,
        )
        .await;

    let (ok, out) = cli.docker(&["push", &image]).await;
    assert!(ok, "docker push: {out}");
    assert!(out.contains("v1: digest: sha256:"), "{out}");
    assert!(tls.seed.registry.has_repository("library/app"));

    let (ok, out) = cli.docker(&["rmi", &image]).await;
    assert!(ok, "docker rmi: {out}");
    assert_eq!(cli.image_id(&image).await, None, "rmi removed the image");

    let (ok, out) = cli.docker(&["pull", &image]).await;
    assert!(ok, "docker pull: {out}");
    assert!(
        out.contains(&format!("Downloaded newer image for {image}")),
        "{out}"
    );
    assert_eq!(cli.image_id(&image).await.as_deref(), Some(id.as_str()));
    let (ok, out) = cli.docker(&["rmi", &image]).await;
    assert!(ok, "{out}");

    // `test` logs in but the ACL gives it nothing: docker's "denied" wording.
    let (ok, out) = cli.login(&host, "test", "test-pw").await;
    assert!(ok, "test login: {out}");
    let (ok, out) = cli.docker(&["pull", &image]).await;
    assert!(!ok, "test must not pull: {out}");
    assert!(out.contains("pull access denied for"), "{out}");
    assert!(
        out.contains("denied: requested access to the resource is denied"),
        "{out}"
    );
    assert_eq!(cli.image_id(&image).await, None);

    // Logout forgets the credentials; anonymous may not pull library/app either.
    let (ok, out) = cli.docker(&["logout", &host]).await;
    assert!(ok, "docker logout: {out}");
    assert!(
        out.contains(&format!("Removing login credentials for {host}")),
        "{out}"
    );
    let config =
        std::fs::read_to_string(work.path().join("docker-config/config.json")).unwrap_or_default();
    assert!(!config.contains(&host), "{config}");
    let (ok, out) = cli.docker(&["pull", &image]).await;
    assert!(!ok, "anonymous must not pull library/app: {out}");
    assert!(out.contains("pull access denied for"), "{out}");

    tls.seed.gateway.server.shutdown().await;
    // `_trusted` (the certs.d folder) and `dockerd` go on drop, also when an assertion
    // above fails.
    drop(dockerd);
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_over_trusted_https_with_only_the_ca() {
    let tls = TlsSeed::start().await;
    let host = tls.host();
    let work = tempfile::tempdir().unwrap();
    let authfile = work.path().join("auth.json");
    let ca_dir = ca_only_dir(&tls.ca());
    let ca = ca_dir.path().to_str().unwrap().to_owned();
    let image = work.path().join("image");
    let built = oci_image(&image, 2, 11);
    let run = |args: Vec<String>| {
        let authfile = authfile.clone();
        blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            skopeo(&authfile, &args)
        })
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let target = format!("docker://{host}/library/app:v1");

    // Without the CA, skopeo refuses the certificate (verification is on).
    let (ok, out) = run(args(&["login", "-u", "admin", "-p", "admin-pw", &host])).await;
    assert!(!ok, "login must fail without the CA: {out}");
    assert_tls_refused(&out);

    let (ok, out) = run(args(&[
        "login",
        "--cert-dir",
        &ca,
        "-u",
        "admin",
        "-p",
        "wrong",
        &host,
    ]))
    .await;
    assert!(!ok, "a wrong password must not log in: {out}");
    let (ok, out) = run(args(&[
        "login",
        "--cert-dir",
        &ca,
        "-u",
        "admin",
        "-p",
        "admin-pw",
        &host,
    ]))
    .await;
    assert!(ok, "login: {out}");

    let source = format!("oci:{}:latest", image.display());
    let (ok, out) = run(args(&["copy", "--dest-cert-dir", &ca, &source, &target])).await;
    assert!(ok, "push: {out}");
    assert!(tls.seed.registry.has_repository("library/app"));

    let (ok, out) = run(args(&["inspect", "--raw", "--cert-dir", &ca, &target])).await;
    assert!(ok, "inspect: {out}");
    let manifest: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(manifest["config"]["digest"], built.config.as_str());
    let (ok, out) = run(args(&["inspect", "--cert-dir", &ca, &target])).await;
    assert!(ok, "inspect: {out}");

    let pulled = work.path().join("pulled");
    let dest = format!("oci:{}:latest", pulled.display());
    let (ok, out) = run(args(&["copy", "--src-cert-dir", &ca, &target, &dest])).await;
    assert!(ok, "pull: {out}");

    let (ok, out) = run(args(&["logout", &host])).await;
    assert!(ok, "logout: {out}");
    let (ok, out) = run(args(&["inspect", "--cert-dir", &ca, &target])).await;
    assert!(!ok, "anonymous must not read library/app: {out}");

    tls.seed.gateway.server.shutdown().await;
}

/// The identity token (refresh token) docker stored for `host`, after checking that the
/// entry holds no password: `auth`, if there, is `user:` with nothing after the colon.
fn stored_identity_token(config_dir: &Path, host: &str, user: &str) -> String {
    use base64::Engine;
    let text = std::fs::read_to_string(config_dir.join("config.json")).unwrap_or_default();
    let config: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let entry = &config["auths"][host];
    assert!(entry.is_object(), "an entry for {host}: {text}");
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&decoded),
            format!("{user}:"),
            "`auth` holds the user name only, no password: {text}"
        );
    }
    assert!(entry.get("password").is_none(), "{text}");
    let token = entry["identitytoken"]
        .as_str()
        .unwrap_or_else(|| panic!("an identitytoken for {host}: {text}"))
        .to_owned();
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], user, "{claims}");
    assert_ne!(
        claims["aud"], SERVICE,
        "a refresh token, not an access token"
    );
    token
}

/// Rewrites regate's config file and reloads it, as the file watcher would a moment later.
fn rewrite_config(tls: &TlsSeed, text: &str) {
    let path = tls.seed.gateway.dir.path().join("regate.yml");
    std::fs::write(&path, text).unwrap();
    tls.seed
        .gateway
        .server
        .reload()
        .unwrap_or_else(|e| panic!("reload: {e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_login_keeps_a_refresh_token_not_the_password() {
    let (tls, dockerd) = tokio::join!(TlsSeed::start(), blocking(Dockerd::start));
    let dockerd = dockerd.unwrap_or_else(|e| panic!("{e}"));
    let host = tls.host();
    let work = tempfile::tempdir().unwrap();
    let config_dir = work.path().join("docker-config");
    let cli = dockerd.client(config_dir.clone());
    let _ = std::fs::remove_dir_all(TrustedCa::dir_for(&host));
    let _trusted = TrustedCa::place(&host, &tls.ca());

    // A robot for CI, added to the running gateway.
    let original = std::fs::read_to_string(tls.seed.gateway.dir.path().join("regate.yml")).unwrap();
    let with_robot = format!(
        "{original}robots:\n  ci-builder:\n    secret: \"{}\"\n    expires: \"2099-12-31\"\n    acl:\n      - match: {{name: \"team/*\"}}\n        actions: [pull, push]\n",
        bcrypt("ci-secret")
    );
    rewrite_config(&tls, &with_robot);

    // docker login: dockerd asks with offline_token=true, and the CLI keeps only the
    // refresh token regate returns.
    let (ok, out) = cli.login(&host, "alice", "alice-pw").await;
    assert!(ok, "alice login: {out}");
    let first = stored_identity_token(&config_dir, &host, "alice");
    let text = std::fs::read_to_string(config_dir.join("config.json")).unwrap();
    assert!(!text.contains("alice-pw"), "{text}");

    // Push and pull with it (dockerd POSTs grant_type=refresh_token).
    let image = format!("{host}/alice/app:v1");
    let id = cli
        .import(
            work.path(),
            "id.txt",
            b"pushed with a refresh token\n",
            &image,
        )
        .await;
    let (ok, out) = cli.docker(&["push", &image]).await;
    assert!(ok, "docker push with the identity token: {out}");
    assert!(tls.seed.registry.has_repository("alice/app"));
    let (ok, out) = cli.docker(&["rmi", &image]).await;
    assert!(ok, "{out}");
    let (ok, out) = cli.docker(&["pull", &image]).await;
    assert!(ok, "docker pull with the identity token: {out}");
    assert_eq!(cli.image_id(&image).await.as_deref(), Some(id.as_str()));

    // alice's password changes: the stored identity token is dead, pushes and pulls fail.
    let old_hash = with_robot
        .lines()
        .skip_while(|l| !l.contains("\"alice\":"))
        .nth(1)
        .and_then(|l| l.split('"').nth(1))
        .unwrap()
        .to_owned();
    assert!(old_hash.starts_with("$2"), "{old_hash}");
    let changed = with_robot.replacen(&old_hash, &bcrypt("alice-new-pw"), 1);
    rewrite_config(&tls, &changed);
    let started = Instant::now();
    let (ok, out) = cli.docker(&["push", &image]).await;
    assert!(!ok, "a push with a stale identity token must fail: {out}");
    // At once: an error docker takes for a passing one (errcode UNKNOWN, which a
    // `details` field in the OAuth2 body would make it) is retried five times over ~50 s.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "docker retried instead of failing: {out}"
    );
    assert!(
        out.contains("invalid_grant") || out.contains("log in again"),
        "docker shows why: {out}"
    );
    let (ok, out) = cli.docker(&["pull", &format!("{host}/alice/app:v1")]).await;
    assert!(!ok, "a pull with a stale identity token must fail: {out}");
    assert_eq!(
        stored_identity_token(&config_dir, &host, "alice"),
        first,
        "docker keeps the stale token until the next login"
    );

    // Logging in again with the new password gives a new refresh token that works.
    let (ok, out) = cli.login(&host, "alice", "alice-pw").await;
    assert!(!ok, "the old password no longer logs in: {out}");
    let (ok, out) = cli.login(&host, "alice", "alice-new-pw").await;
    assert!(ok, "alice login with the new password: {out}");
    let second = stored_identity_token(&config_dir, &host, "alice");
    assert_ne!(second, first);
    let tag = format!("{host}/alice/app:v2");
    let (ok, out) = cli.docker(&["tag", &image, &tag]).await;
    assert!(ok, "{out}");
    let (ok, out) = cli.docker(&["push", &tag]).await;
    assert!(ok, "docker push after logging in again: {out}");
    assert!(out.contains("v2: digest: sha256:"), "{out}");

    // The robot logs in like a user and pushes only where its own ACL allows (the global
    // rules would give any account pull everywhere and its own namespace).
    let (ok, out) = cli.login(&host, "ci-builder", "ci-secret").await;
    assert!(ok, "robot login: {out}");
    stored_identity_token(&config_dir, &host, "ci-builder");
    let team = format!("{host}/team/app:v1");
    let (ok, out) = cli.docker(&["tag", &image, &team]).await;
    assert!(ok, "{out}");
    let (ok, out) = cli.docker(&["push", &team]).await;
    assert!(ok, "the robot pushes to team/*: {out}");
    assert!(tls.seed.registry.has_repository("team/app"));
    for name in ["other/app", "ci-builder/app"] {
        let other = format!("{host}/{name}:v1");
        let (ok, out) = cli.docker(&["tag", &image, &other]).await;
        assert!(ok, "{out}");
        let (ok, out) = cli.docker(&["push", &other]).await;
        assert!(!ok, "the robot must not push to {name}: {out}");
        assert!(out.contains("denied"), "{out}");
        assert!(!tls.seed.registry.has_repository(name));
    }

    tls.seed.gateway.server.shutdown().await;
    drop(dockerd);
}
