//! Debian's headless Chromium, driven by `tests/idp/browser.mjs` (playwright-core with
//! `executablePath: /usr/bin/chromium`, never a browser download): a JSON list of steps
//! in, one JSON result out. `tests/idp/setup.sh` installs what is missing first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;

use serde_json::{json, Value};

fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

/// Installs chromium, node and the lockfile's node_modules when missing (idempotent).
fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let out = Command::new(idp_dir().join("setup.sh"))
            .output()
            .expect("tests/idp/setup.sh runs");
        assert!(
            out.status.success(),
            "tests/idp/setup.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Where this run's screenshots go: `target/tmp/ui-screenshots` (printed).
pub fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The result of a script: `results` by name, the URL it ended on, the error if any.
pub struct Run {
    pub ok: bool,
    pub json: Value,
}

impl Run {
    pub fn result(&self, name: &str) -> &Value {
        &self.json["results"][name]
    }

    pub fn text(&self, name: &str) -> String {
        self.result(name).as_str().unwrap_or_default().to_owned()
    }

    /// Fails the test with what went wrong, when a step failed.
    pub fn expect_ok(self, what: &str) -> Run {
        assert!(
            self.ok,
            "browser ({what}): {}\nsteps: {}\nconsole: {}",
            self.json["error"], self.json["steps"], self.json["console"]
        );
        self
    }
}

/// Runs `steps` in a fresh browser profile (no cookies), trusting regate's test CA by
/// ignoring certificate errors (the browser is not what checks the CA here; docker is).
pub fn run(steps: Vec<Value>) -> Run {
    setup();
    let script = json!({
        "timeoutMs": 20000,
        "ignoreHTTPSErrors": true,
        "failureScreenshot": screenshots().join("failure.png"),
        "steps": steps,
    });
    let mut child = Command::new("node")
        .arg(idp_dir().join("browser.mjs"))
        .arg("-")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("browser.mjs printed no JSON ({e}): {text}"));
    Run {
        ok: json["ok"] == true,
        json,
    }
}

/// Steps that sign in at `base` and wait for the page the sign-in leads to.
pub fn sign_in(base: &str, user: &str, password: &str) -> Vec<Value> {
    vec![
        json!({"goto": format!("{base}/ui/login")}),
        json!({"fill": "#username", "value": user}),
        json!({"fill": "#password", "value": password}),
        json!({"click": "button[type=submit]"}),
        json!({"waitForSelector": "form.signout"}),
    ]
}

/// A screenshot of the whole page, and the page checked by axe-core (serious and
/// critical violations fail the step).
pub fn shoot(name: &str) -> Vec<Value> {
    vec![
        json!({"axe": true, "as": format!("axe-{name}"), "failOn": ["serious", "critical"],
               "tags": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}),
        json!({"screenshot": screenshots().join(format!("{name}.png")), "fullPage": true}),
    ]
}
