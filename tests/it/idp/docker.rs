//! dockerd and the docker CLI, as `tests/docker_cli.rs` drives them (copied: the test
//! harness is being gathered into one binary, where both will share one copy): a dockerd
//! of the test's own (vfs, its own data root and socket), a CLI with its own config
//! folder, and the registry's CA in `/etc/docker/certs.d`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::common::*;

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
pub struct Dockerd {
    child: Child,
    sock: PathBuf,
    dir: TempDir,
}

impl Dockerd {
    /// Starts dockerd and waits until it answers; the error carries dockerd's log.
    pub fn start() -> Result<Dockerd, String> {
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
    pub fn client(&self, config: PathBuf) -> DockerCli {
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
pub struct DockerCli {
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

    pub async fn docker(&self, args: &[&str]) -> (bool, String) {
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

    pub async fn login(&self, host: &str, user: &str, password: &str) -> (bool, String) {
        self.docker_stdin(
            &["login", "--username", user, "--password-stdin", host],
            &format!("{password}\n"),
        )
        .await
    }

    /// `docker import` of a one-file root filesystem (`file` holding `contents`, the tar
    /// written under `dir`) as `image`; its ID, checked against what import printed.
    pub async fn import(&self, dir: &Path, file: &str, contents: &[u8], image: &str) -> String {
        let tar = dir.join("rootfs.tar");
        std::fs::write(&tar, tar_with_file(file, contents)).unwrap();
        let (ok, out) = self.docker(&["import", tar.to_str().unwrap(), image]).await;
        assert!(ok, "docker import: {out}");
        let id = self.image_id(image).await.expect("the imported image");
        assert_eq!(out.trim(), id);
        id
    }

    pub async fn image_id(&self, image: &str) -> Option<String> {
        let (ok, out) = self
            .docker(&["image", "inspect", "--format", "{{.Id}}", image])
            .await;
        ok.then(|| out.trim().to_owned())
    }
}

/// `/etc/docker/certs.d/HOST:PORT/ca.crt`, where dockerd looks for a registry's CA on each
/// connection (no restart); the folder is removed on drop.
pub struct TrustedCa {
    dir: PathBuf,
}

impl TrustedCa {
    pub fn dir_for(host: &str) -> PathBuf {
        Path::new("/etc/docker/certs.d").join(host)
    }

    pub fn place(host: &str, ca: &Path) -> TrustedCa {
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
