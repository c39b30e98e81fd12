//! The node tools of `tests/idp` (a real OpenID Provider, the GitHub/GitLab stand-in and
//! the browser driver), shared by the web UI's and the identity providers' tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::{run_with_deadline, without_proxies};

/// `tests/idp`: the node tools and their lockfile.
pub fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

/// `tests/idp/setup.sh` (chromium, chromium-driver, node_modules from the lockfile), once
/// per test process; a failure names what to run. `tests/run.sh` has run it already.
pub fn setup() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = DONE.get_or_init(|| {
        let script = idp_dir().join("setup.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script);
        without_proxies(&mut cmd);
        match cmd.output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "{} failed (it installs Debian's chromium and chromium-driver and the node packages of tests/idp/package-lock.json; run it as root):\n{}{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!("cannot run {}: {e}", script.display())),
        }
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// Runs a `browser.mjs` script (`{"steps": [...], ...}`) in a fresh headless Chromium
/// (Debian's, through playwright-core; a fresh profile each run) and returns the one JSON
/// result it prints. Blocking: call it from `spawn_blocking` in async code.
pub fn run_script(script: &Value) -> Value {
    setup();
    let mut cmd = Command::new("node");
    cmd.arg(idp_dir().join("browser.mjs")).arg("-");
    without_proxies(&mut cmd);
    let (_, out) = run_with_deadline(
        &mut cmd,
        script.to_string().as_bytes(),
        Duration::from_secs(180),
    );
    let json_start = out.find('{').unwrap_or(0);
    serde_json::Deserializer::from_str(&out[json_start..])
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("browser.mjs printed no JSON: {out}"))
}
