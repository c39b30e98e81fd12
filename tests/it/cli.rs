//! The `regate` binary's offline commands: `check` (errors and lints) and `explain`, run
//! as an operator would, on the seed's config.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use crate::common::seed_as_run;

/// `regate explain --config CONFIG --account ACCOUNT REST...` with `stdin`.
fn explain(config: &str, account: &str, rest: &[&str], stdin: &str) -> Output {
    let mut args = vec!["explain", "--config", config, "--account", account];
    args.extend_from_slice(rest);
    regate(&args, stdin)
}

fn regate(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_regate"))
        .args(args)
        .env_remove("REGATE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the regate binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `regate hash-password`, as an operator makes a hash.
fn hash(password: &str) -> String {
    let out = regate(&["hash-password", "--cost", "4"], &format!("{password}\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// The seed's config as written (config/docker_auth-seed.yml), typo included, as
/// [`seed_as_run`] makes it: hashes made with `regate hash-password`.
fn seed(dir: &Path) -> String {
    seed_as_run(
        "http://127.0.0.1:5000",
        &dir.join("data"),
        &hash("admin-pw"),
        &hash("hussein-pw"),
    )
}

fn write_config(src: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regate.yml");
    std::fs::write(&path, src).unwrap();
    (dir, path)
}

fn seed_file() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regate.yml");
    std::fs::write(&path, seed(dir.path())).unwrap();
    (dir, path)
}

#[test]
fn check_warns_and_strict_fails() {
    let (_dir, path) = seed_file();
    let config = path.to_str().unwrap();
    let hussien = format!(
        "warning: {config}:16:13: acl[1].match.account: no user \"hussien\"; did you mean \"hussein\"?"
    );

    let out = regate(&["check", "--config", config], "");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.lines().any(|l| l == hussien), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: {config}:18:13: acl[2].match.account: no user \"test\""
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches("warning: ").count(), 2, "{stderr}");

    let out = regate(&["check", "--strict", "--config", config], "");
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "--strict fails on warnings");
    assert!(stderr.lines().any(|l| l == hussien), "{stderr}");
}

#[test]
fn check_strict_passes_a_clean_config() {
    let dir = tempfile::tempdir().unwrap();
    let src = seed(dir.path())
        .replace("hussien", "hussein")
        .replace("  - match: {account: \"test\"}\n    actions: []\n", "");
    let (_dir, path) = write_config(&src);
    let out = regate(
        &["check", "--strict", "--config", path.to_str().unwrap()],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("warning"));
}

#[test]
fn check_locates_a_lost_indentation() {
    let dir = tempfile::tempdir().unwrap();
    let flat: String = seed(dir.path())
        .lines()
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let (_dir, path) = write_config(&flat);
    let config = path.to_str().unwrap();
    let out = regate(&["check", "--config", config], "");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("error: {config}:2:1: ")),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `addr`"), "{stderr}");
    assert!(stderr.contains("indentation"), "{stderr}");
}

#[test]
fn explain_says_why_hussein_may_only_pull_ubuntu() {
    let (_dir, path) = seed_file();
    let config = path.to_str().unwrap();
    let out = explain(
        config,
        "hussein",
        &["--password-stdin", "repository:ubuntu:pull,push"],
        "hussein-pw\n",
    );
    let stdout = text(&out.stdout);
    // push is denied: exit 1, as grep when nothing matched (scripts can test it).
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    for line in [
        "account: \"hussein\": a user in `users`",
        "password: correct",
        "scope: repository:ubuntu:pull,push",
        "  acl[0] \"admin can do anything\": no match: account \"hussein\" does not match \"admin\"",
        "  acl[1]: no match: account \"hussein\" does not match \"hussien\"",
        "  acl[2]: no match: account \"hussein\" does not match \"test\"",
        "  acl[3]: decides: actions [\"pull\"]",
        "  granted: pull",
        "  denied: push",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in\n{stdout}");
    }

    let out = explain(
        config,
        "hussein",
        &["--password-stdin", "repository:ubuntu:pull"],
        "hussein-pw\n",
    );
    assert_eq!(out.status.code(), Some(0), "all granted: exit 0");

    // A wrong password gets no token: no grant is shown, and the exit says so.
    let out = explain(
        config,
        "hussein",
        &["--password-stdin", "repository:ubuntu:pull"],
        "wrong\n",
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("password: wrong: a token request gets 401"));
    assert!(
        stdout.contains("  granted: (none: the login is refused)"),
        "{stdout}"
    );
    assert!(!stdout.contains("  granted: pull"), "{stdout}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn explain_anonymous_unknown_and_json() {
    let (_dir, path) = seed_file();
    let config = path.to_str().unwrap();
    let out = explain(
        config,
        "",
        &["repository:hello-world:pull", "repository:private:pull"],
        "",
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(stdout.contains("  acl[4]: decides: actions [\"pull\"]\n  granted: pull\n"));
    assert!(
        stdout.contains("  no rule matched: denied by default\n"),
        "{stdout}"
    );

    let out = explain(
        config,
        "mallory",
        &["--label", "team=web", "repository:x:pull"],
        "",
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unknown account gets nothing"
    );
    assert!(
        stdout.contains("no such user in `users`: a token request gets 401"),
        "{stdout}"
    );
    assert!(
        stdout.contains("labels: team=web (from --label)"),
        "{stdout}"
    );

    let out = explain(config, "admin", &["--json", "registry:catalog:*"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "user");
    assert_eq!(v["scopes"][0]["rule"], 0);
    assert_eq!(v["scopes"][0]["comment"], "admin can do anything");
    assert_eq!(v["scopes"][0]["granted"], serde_json::json!(["*"]));
}

#[test]
fn explain_refuses_bad_input() {
    let (_dir, path) = seed_file();
    let config = path.to_str().unwrap();
    let out = explain(config, "admin", &["nonsense"], "");
    assert_eq!(out.status.code(), Some(2), "an error is 2, a denial 1");
    assert!(text(&out.stderr).contains("nonsense"));
    let out = explain(
        config,
        "admin",
        &["--label", "novalue", "repository:x:pull"],
        "",
    );
    assert!(!out.status.success());
    let missing = path.with_file_name("missing.yml");
    let out = explain(
        missing.to_str().unwrap(),
        "admin",
        &["repository:x:pull"],
        "",
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot read the config"));
}

#[test]
fn check_reads_the_files_serve_would_read() {
    // A missing LDAP bind password file fails check, not the first login.
    let (_dir, path) = write_config(
        "upstream: {url: \"http://127.0.0.1:5000\"}\nldap_auth:\n  addr: \"127.0.0.1:389\"\n  bind_dn: \"cn=regate,dc=example,dc=org\"\n  bind_password_file: missing-bind-password\n  base: \"dc=example,dc=org\"\n  filter: \"(uid=${account})\"\nacl: []\n",
    );
    let out = regate(&["check", "--config", path.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("missing-bind-password"),
        "{}",
        text(&out.stderr)
    );
    // So does a token key that is not there.
    let (_dir, path) = write_config(
        "upstream: {url: \"http://127.0.0.1:5000\"}\ntoken: {certificate: none.crt, key: none.key}\n",
    );
    let out = regate(&["check", "--config", path.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("none.crt"),
        "{}",
        text(&out.stderr)
    );
}

/// config/quickstart.sh keeps its secrets private: the admin password, the configs (a
/// bcrypt hash, the registry's http.secret) and the state folder are the user's only,
/// also when an earlier run left the password readable by everyone.
#[cfg(unix)]
#[test]
fn quickstart_writes_its_secrets_for_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let root = TempDir::new().unwrap();
    let state = root.path().join("state");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/quickstart.sh");
    let run = || {
        // Under the permissive umask most login shells have.
        let out = Command::new("bash")
            .args(["-c", "umask 022; exec bash \"$0\" --setup-only"])
            .arg(&script)
            .env("STATE", &state)
            .env("REGATE", env!("CARGO_BIN_EXE_regate"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    run();
    let password = state.join("admin.password");
    assert_eq!(mode(&password), 0o600, "admin.password");
    assert_eq!(mode(&state), 0o700, "the state folder");
    assert_eq!(mode(&state.join("regate.yml")), 0o600, "regate.yml");
    assert_eq!(mode(&state.join("registry.yml")), 0o600, "registry.yml");
    // An earlier version's world-readable password is closed on the next run, and kept.
    let before = std::fs::read_to_string(&password).unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).unwrap();
    run();
    assert_eq!(mode(&password), 0o600, "admin.password after a rerun");
    assert_eq!(std::fs::read_to_string(&password).unwrap(), before);
}

/// The README's `regate explain` sample is the command's real output (for the seed's
/// config, as this file's tests write it).
#[test]
fn the_readme_shows_explains_real_output() {
    let (_dir, path) = seed_file();
    let out = explain(
        path.to_str().unwrap(),
        "hussein",
        &["--password-stdin", "repository:ubuntu:pull,push"],
        "hussein-pw\n",
    );
    let mut shown = String::from(
        "    $ regate explain --config regate.yml --account hussein --password-stdin \\\n        repository:ubuntu:pull,push <<< \"$PASSWORD\"\n",
    );
    for line in text(&out.stdout).lines() {
        shown.push_str(format!("    {line}").trim_end());
        shown.push('\n');
    }
    let readme = include_str!("../../README.md");
    let start = readme.find("<!-- explain: begin -->\n").unwrap() + 24;
    let end = readme.find("<!-- explain: end -->").unwrap();
    assert!(
        readme[start..end] == shown,
        "README.md's explain sample is not the real output; it should read:\n{shown}"
    );
}
