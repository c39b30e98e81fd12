//! What the identity-provider tests share: `setup.sh`, the node servers of `tests/idp`
//! (a real OpenID Provider, and the GitHub/GitLab STAND-IN), the browser driver, where the
//! screenshots go, and regate's credentials as its store holds them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{http, without_proxies, Resp};

pub use crate::common::browser::{idp_dir, setup};

/// Where the screenshots go: `target/tmp/idp-screenshots/TEST/`.
pub fn shots(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("idp-screenshots")
        .join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A free TCP port on `ip` (for the addresses a provider must know before regate starts).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One of the node servers (`provider.mjs`, `standin.mjs`), on a free loopback port;
/// killed on drop, and gone anyway when this process dies (`--exit-with-stdin`).
pub struct NodeServer {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl NodeServer {
    pub fn start(script: &str, config: &Value, dir: &Path) -> NodeServer {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{}-{n}", script.trim_end_matches(".mjs"));
        let config_file = dir.join(format!("{name}.json"));
        std::fs::write(&config_file, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new("node");
        cmd.arg(idp_dir().join(script))
            .args(["--port", "0", "--config"])
            .arg(&config_file)
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        without_proxies(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("node {script}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("READY ") => NodeServer {
                url: line["READY ".len()..].trim().to_owned(),
                child,
                log,
            },
            other => {
                let _ = child.kill();
                panic!(
                    "{script} did not start ({other:?}); its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            }
        }
    }

    /// A test-only admin request (`POST /__test/...`), which must succeed.
    pub async fn admin(&self, method: hyper::Method, path: &str, body: Option<Value>) -> Resp {
        let (headers, bytes) = match body {
            Some(b) => (
                vec![("content-type", "application/json")],
                serde_json::to_vec(&b).unwrap(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let resp = http(method, &format!("{}{path}", self.url), &headers, bytes).await;
        assert!(
            resp.status.is_success(),
            "{path}: {} {}; its log:\n{}",
            resp.status,
            String::from_utf8_lossy(&resp.body),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        resp
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `steps` in a fresh headless Chromium (`browser.mjs`); the result's JSON. A failed
/// step panics with what the browser saw (its screenshot is `DIR/failed-LABEL.png`).
pub async fn browser(dir: &Path, label: &str, steps: Value) -> Value {
    let started = std::time::Instant::now();
    let outcome = browser_outcome(dir, label, steps).await;
    eprintln!("browser run {label}: {:?}", started.elapsed());
    assert_eq!(
        outcome["ok"], true,
        "browser run `{label}` failed: {:#}",
        outcome
    );
    outcome
}

/// As [`browser`], returning a failed run's JSON too.
pub async fn browser_outcome(dir: &Path, label: &str, steps: Value) -> Value {
    let script = json!({
        "timeoutMs": 20000,
        "ignoreHTTPSErrors": true,
        "failureScreenshot": dir.join(format!("failed-{label}.png")),
        "steps": steps,
    });
    let dir = dir.to_owned();
    let label = label.to_owned();
    tokio::task::spawn_blocking(move || {
        let value = crate::common::browser::run_script(&script);
        std::fs::write(
            dir.join(format!("{label}.json")),
            serde_json::to_vec_pretty(&value).unwrap(),
        )
        .unwrap();
        value
    })
    .await
    .unwrap()
}

/// Steps that sign in at `provider.mjs`'s or the stand-in's login form.
pub fn provider_login(user: &str, password: &str) -> Vec<Value> {
    vec![
        json!({"waitForSelector": "#username"}),
        json!({"fill": "#username", "value": user}),
        json!({"fill": "#password", "value": password}),
        json!({"click": "#submit"}),
    ]
}

/// The credentials regate's store holds for `account` (names and sources).
pub async fn credentials(server: &regate::Server, account: &str) -> Vec<(String, String)> {
    let state = server.gateway().runtime().state.clone();
    regate::auth::credentials::Credentials::new(state)
        .list(account)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.name, c.source))
        .collect()
}

/// The status of `/auth` for `account` and `password` asking `scope`, and the actions
/// granted (empty when refused).
pub async fn auth(
    base: &str,
    account: &str,
    password: &str,
    scope: &str,
) -> (u16, Vec<String>, String) {
    let url = format!("{base}/auth?service=Docker%20registry&scope={scope}");
    let basic = crate::common::basic(account, password);
    let resp = crate::common::get(&url, &[("authorization", &basic)]).await;
    let body = String::from_utf8_lossy(&resp.body).into_owned();
    if resp.status != 200 {
        return (resp.status.as_u16(), Vec::new(), body);
    }
    let token = resp.json()["token"].as_str().unwrap().to_owned();
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let actions = claims["access"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|a| a["actions"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (200, actions, body)
}

/// Polls `check` (about once a second) until it holds, for at most `limit`; the provider's
/// and regate's timing is not asserted, only the state they reach.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = std::time::Instant::now();
    let deadline = started + limit;
    loop {
        match check().await {
            Ok(()) => {
                eprintln!("{what}: reached after {:?}", started.elapsed());
                return;
            }
            Err(last) if std::time::Instant::now() > deadline => {
                panic!("{what}: not reached within {limit:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(700)).await,
        }
    }
}
