//! Debian's containerd (1.6) pulling through regate: a `containerd` daemon of the test's own
//! (root, state, sockets in a temp folder; no CRI) and its `ctr` client with `--user`.
//! containerd asks for tokens OAuth2-style, `POST /auth` with `grant_type=password`, and
//! falls back to GET only when that POST fails; regate's access log shows which it did.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use tempfile::TempDir;

const NAMESPACE: &str = "regate-test";

/// A containerd of the test's own; stopped (SIGTERM, then SIGKILL) on drop.
struct Containerd {
    child: Child,
    sock: PathBuf,
    /// Its config, state and log; removed on drop.
    _dir: TempDir,
}

impl Containerd {
    /// Starts containerd and waits until `ctr version` answers; the error carries its log.
    fn start() -> Result<Containerd, String> {
        // Short paths: a unix socket path has at most 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("regate-ctrd")
            .tempdir_in("/tmp")
            .unwrap();
        let root = dir.path();
        let sock = root.join("c.sock");
        let config = root.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = "{root}/debug.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"#,
                root = root.display(),
                sock = sock.display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(root.join("containerd.log")).unwrap();
        let mut cmd = Command::new("containerd");
        without_proxies(&mut cmd)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().map_err(|e| {
            format!("cannot run containerd ({e}); install Debian's containerd (apt-get install containerd)")
        })?;
        let log_path = dir.path().join("containerd.log");
        let mut daemon = Containerd {
            child,
            sock: sock.clone(),
            _dir: dir,
        };
        wait_ready(
            "containerd (`ctr version`)",
            &mut daemon.child,
            Duration::from_secs(30),
            || {
                let (ok, out) = ctr_at(&sock, &["version"]);
                (ok && out.contains("Server:"), out)
            },
            || std::fs::read_to_string(&log_path).unwrap_or_default(),
        )?;
        Ok(daemon)
    }

    /// `ctr -a SOCK -n regate-test ARGS`; (success, stdout + stderr).
    fn ctr(&self, args: &[&str]) -> (bool, String) {
        ctr_at(&self.sock, args)
    }

    /// `ctr content fetch --plain-http [--user USER] REF`.
    async fn fetch(&self, user: Option<&str>, reference: &str) -> (bool, String) {
        let mut args = vec![
            "content".to_owned(),
            "fetch".to_owned(),
            "--plain-http".to_owned(),
        ];
        if let Some(u) = user {
            args.push("--user".to_owned());
            args.push(u.to_owned());
        }
        args.push(reference.to_owned());
        let sock = self.sock.clone();
        blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ctr_at(&sock, &args)
        })
        .await
    }

    /// The digests in containerd's content store.
    fn content(&self) -> String {
        let (ok, out) = self.ctr(&["content", "ls", "--quiet"]);
        assert!(ok, "ctr content ls: {out}");
        out
    }
}

/// `ctr` against the containerd listening on `sock`, in the test's namespace.
fn ctr_at(sock: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("ctr");
    cmd.arg("--address")
        .arg(sock)
        .args(["--namespace", NAMESPACE])
        .args(args)
        .env_remove("CONTAINERD_ADDRESS")
        .env_remove("CONTAINERD_NAMESPACE");
    run_with_deadline(without_proxies(&mut cmd), b"", Duration::from_secs(60))
}

impl Drop for Containerd {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(10));
    }
}

/// regate's access-log lines for the token endpoint, as (method, status), from `text`.
fn token_requests(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| l.contains("regate::access") && l.contains(r#"route="token""#))
        .map(|l| {
            let field = |name: &str| {
                l.split(&format!(" {name}="))
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_owned()
            };
            (field("method"), field("status"))
        })
        .collect()
}

/// What regate logged since `from` bytes into its log, once the access line of the last
/// request is there (it is written when the response body ends).
async fn log_since(regate: &RegateProcess, from: usize) -> String {
    tokio::time::sleep(Duration::from_millis(300)).await;
    regate.log_text().get(from..).unwrap_or("").to_owned()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(m, s)| (m.to_string(), s.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ctr_pulls_with_user_through_the_post_first_flow() {
    let SeedProcess {
        regate,
        registry: _registry,
        dir,
    } = SeedProcess::start();
    let host = regate.addr.clone();
    let containerd = blocking(Containerd::start);

    // An image pushed with skopeo as admin.
    let image = dir.path().join("image");
    let built = oci_image(&image, 2, 61);
    let authfile = dir.path().join("auth.json");
    let target = format!("docker://{host}/library/app:v1");
    let source = format!("oci:{}:latest", image.display());
    let (ok, out) = blocking(move || {
        skopeo(
            &authfile,
            &[
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds",
                "admin:admin-pw",
                &source,
                &target,
            ],
        )
    })
    .await;
    assert!(ok, "skopeo push: {out}");

    let containerd = containerd.await.unwrap_or_else(|e| panic!("{e}"));
    let reference = format!("{host}/library/app:v1");

    // admin: containerd POSTs the password grant, which succeeds: no GET fallback.
    let mark = regate.log_text().len();
    let (ok, out) = containerd.fetch(Some("admin:admin-pw"), &reference).await;
    let log = log_since(&regate, mark).await;
    assert!(
        ok,
        "ctr content fetch as admin: {out}\nregate's log:\n{log}"
    );
    let tokens = token_requests(&log);
    assert!(
        !tokens.is_empty(),
        "no token request in regate's log:\n{log}"
    );
    assert!(
        tokens.iter().all(|t| *t == ("POST".into(), "200".into())),
        "containerd used POST only, and it succeeded: {tokens:?}\n{log}"
    );
    // containerd holds what the registry serves: the manifest (as skopeo pushed it,
    // layers compressed), its config and each layer.
    let content = containerd.content();
    let base = regate.url();
    let t = token(
        &base,
        Some(("admin", "admin-pw")),
        &["repository:library/app:pull"],
    )
    .await;
    let r = get(
        &format!("{base}/v2/library/app/manifests/v1"),
        &[
            ("authorization", &format!("Bearer {t}")),
            ("accept", "application/vnd.oci.image.manifest.v1+json"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let manifest = r.json();
    assert_eq!(manifest["config"]["digest"], built.config.as_str());
    let mut digests = vec![format!("sha256:{}", sha256_hex(&r.body))];
    digests.push(built.config.clone());
    for layer in manifest["layers"].as_array().unwrap() {
        digests.push(layer["digest"].as_str().unwrap().to_owned());
    }
    assert_eq!(digests.len(), 4);
    for digest in &digests {
        assert!(
            content.contains(digest.as_str()),
            "{digest} in {content}; {manifest}"
        );
    }

    // alice may pull library/app (any user may pull): POST again.
    let mark = regate.log_text().len();
    let (ok, out) = containerd.fetch(Some("alice:alice-pw"), &reference).await;
    let log = log_since(&regate, mark).await;
    assert!(
        ok,
        "ctr content fetch as alice: {out}\nregate's log:\n{log}"
    );
    let tokens = token_requests(&log);
    assert!(
        !tokens.is_empty() && tokens.iter().all(|t| t.0 == "POST" && t.1 == "200"),
        "{tokens:?}\n{log}"
    );

    // A wrong password: the POST is refused (401, never 405), containerd falls back to GET
    // with the same credentials, which is refused too; the fetch fails.
    let mark = regate.log_text().len();
    let (ok, out) = containerd.fetch(Some("admin:wrong-pw"), &reference).await;
    let log = log_since(&regate, mark).await;
    assert!(!ok, "a wrong password must not pull: {out}");
    assert!(
        out.contains("401") || out.to_lowercase().contains("unauthorized"),
        "{out}"
    );
    assert_eq!(
        token_requests(&log),
        pairs(&[("POST", "401"), ("GET", "401")]),
        "POST first, then the GET fallback, both refused:\n{log}"
    );

    // `test` logs in but the ACL gives it nothing: a token, then the registry route says no.
    let mark = regate.log_text().len();
    let (ok, out) = containerd.fetch(Some("test:test-pw"), &reference).await;
    let log = log_since(&regate, mark).await;
    assert!(!ok, "test must not pull: {out}");
    assert_eq!(
        token_requests(&log).first(),
        Some(&("POST".to_owned(), "200".to_owned())),
        "{log}"
    );

    // And without credentials: anonymous may not pull library/app either.
    let (ok, out) = containerd.fetch(None, &reference).await;
    assert!(!ok, "anonymous must not pull library/app: {out}");

    // The counters agree with the log.
    let m = get(&format!("{}/metrics", regate.url()), &[]).await;
    let metrics = String::from_utf8_lossy(&m.body).into_owned();
    assert!(
        metrics.contains(r#"regate_requests_total{route="token",status="200"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"regate_requests_total{route="token",status="401"}"#),
        "{metrics}"
    );
}
