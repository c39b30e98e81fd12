//! `ui:` (regate's own section) -> [`web::Settings`]: the web pages regate serves beside
//! the registry API, and how long a browser stays signed in.

use std::time::Duration;

use serde::Deserialize;

use super::keys::Key;
use super::{Cx, Failed};
use crate::web::Settings;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUi {
    enabled: Option<bool>,
    session_idle: Option<i64>,
    session_max: Option<i64>,
    title: Option<String>,
}

pub(super) const KEYS: &[Key] = &[
    Key::scalar(
        "enabled",
        "true",
        "the web pages at `/` (under `server.path_prefix`); `false`: `/` answers `{}` as registry:2 does",
    ),
    Key::scalar(
        "session_idle",
        "1800",
        "seconds a signed-in browser may stay idle before it must sign in again",
    ),
    Key::scalar(
        "session_max",
        "43200",
        "seconds a sign-in lasts at most, idle or not",
    ),
    Key::scalar("title", "regate", "the name the pages show"),
];

pub(super) fn build(raw: RawUi, cx: &mut Cx<'_>) -> Result<Settings, Failed> {
    let seconds = |cx: &mut Cx<'_>, k: &'static str, v: Option<i64>, default: u64| match v {
        None => Ok(Duration::from_secs(default)),
        Some(s) if s > 0 => Ok(Duration::from_secs(s as u64)),
        Some(s) => cx.fail(
            &["ui", k],
            format!("{s} is not a positive number of seconds"),
        ),
    };
    let idle = seconds(cx, "session_idle", raw.session_idle, 1800)?;
    let max = seconds(cx, "session_max", raw.session_max, 43200)?;
    if idle > max {
        cx.warn("ui.session_idle is longer than ui.session_max, which ends every sign-in first");
    }
    Ok(Settings {
        enabled: raw.enabled.unwrap_or(true),
        session_idle: idle,
        session_max: max,
        title: raw.title.unwrap_or_else(|| "regate".to_owned()),
    })
}

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    super::keys::assert_keys_match::<RawUi>(KEYS);
}
