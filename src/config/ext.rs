//! `ext_auth` and `ext_authz` as written -> [`Program`]: docker_auth's `command` and `args`,
//! plus regate's time limit, concurrency and cache. The command must exist and be
//! executable when the config loads (docker_auth checks with `exec.LookPath` too): a
//! missing program is an error with the line, not a failed login later.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::keys::{Key, Kind};
use super::{Cx, Failed};
use crate::auth::ext::Program;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExt {
    command: Option<String>,
    args: Option<Vec<String>>,
    timeout: Option<f64>,
    concurrency: Option<i64>,
    cache_ttl: Option<f64>,
}

pub(super) const KEYS: &[Key] = &[
    Key::scalar(
        "command",
        "",
        "the program: a path (relative to the config's folder) or a name looked up in `PATH`",
    ),
    Key::with("args", Kind::List, "`[]`", "its arguments (never the password)"),
    Key::scalar(
        "timeout",
        "5",
        "seconds one call may take; then it is killed (its process group too) and the request gets 503",
    ),
    Key::scalar(
        "concurrency",
        "8",
        "calls running at once; more wait for a turn within `timeout`",
    ),
    Key::scalar(
        "cache_ttl",
        "10",
        "seconds an answer is remembered (a keyed hash of the input; no password kept); 0: never",
    ),
];

pub(super) fn build(section: &str, raw: RawExt, cx: &mut Cx<'_>) -> Result<Program, Failed> {
    let Some(command) = raw.command.filter(|c| !c.trim().is_empty()) else {
        return cx.fail(&[section], "`command` is required: the program to run");
    };
    let command =
        find_command(&command, |p| cx.resolve(p)).or_else(|m| cx.fail(&[section, "command"], m))?;
    let seconds = |cx: &mut Cx<'_>, k: &str, v: Option<f64>, default: f64, zero: bool| {
        let v = v.unwrap_or(default);
        if v.is_finite() && (v > 0.0 || zero && v == 0.0) && v < 86_400.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            cx.fail(
                &[section, k],
                format!("{v} is not a number of seconds regate takes"),
            )
        }
    };
    let timeout = seconds(cx, "timeout", raw.timeout, 5.0, false)?;
    let cache_ttl = seconds(cx, "cache_ttl", raw.cache_ttl, 10.0, true)?;
    let concurrency = match raw.concurrency.unwrap_or(8) {
        n @ 1..=1024 => n as usize,
        n => {
            return cx.fail(
                &[section, "concurrency"],
                format!("{n} is not a number of calls from 1 to 1024"),
            )
        }
    };
    Ok(Program {
        command,
        args: raw.args.unwrap_or_default(),
        timeout,
        concurrency,
        cache_ttl,
    })
}

/// The program a `command` names, checked: a path with a `/` (relative to the config's
/// folder), or a name looked up in `PATH` as a shell would.
pub fn find_command(command: &str, resolve: impl Fn(&str) -> PathBuf) -> Result<PathBuf, String> {
    let path = if command.contains('/') {
        resolve(command)
    } else {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(command))
                .find(|p| p.is_file())
        });
        found.ok_or_else(|| format!("`{command}` is not found in PATH"))?
    };
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    if !executable(&path, &meta) {
        return Err(format!(
            "{} is not executable (chmod +x it)",
            path.display()
        ));
    }
    Ok(path)
}

#[cfg(unix)]
fn executable(_: &Path, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn executable(_: &Path, _: &std::fs::Metadata) -> bool {
    true
}

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    super::keys::assert_keys_match::<RawExt>(KEYS);
}
