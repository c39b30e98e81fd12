//! Debian's headless Chromium, driven by `tests/idp/browser.mjs` (playwright-core with
//! `executablePath: /usr/bin/chromium`, never a browser download): a JSON list of steps
//! in, one JSON result out (`common::browser`).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

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
    let script = json!({
        "timeoutMs": 20000,
        "ignoreHTTPSErrors": true,
        "failureScreenshot": screenshots().join("failure.png"),
        "steps": steps,
    });
    let json = crate::common::browser::run_script(&script);
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
