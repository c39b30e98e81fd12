//! What the four identity-provider sections (`oidc.rs`, `google.rs`, `github.rs`,
//! `gitlab.rs`) share: the client's id and secret, the token DB keys, `http_timeout`,
//! `registry_url`, and the checks of URLs and durations. Each section file reads its own
//! struct and calls these.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::keys::{Key, Kind};
use super::{Cx, Failed};
use crate::auth::idp::{ClientSecret, Settings};
use crate::auth::Secret;

/// docker_auth's `level_token_db`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLevelDb {
    path: Option<String>,
    token_hash_cost: Option<i64>,
}

const LEVEL_KEYS: &[Key] = &[
    Key::scalar(
        "path",
        "`data_dir/tokens.json`",
        "the token DB's file, one for every provider (regate's format: a LevelDB is not read, its users sign in once more)",
    ),
    Key::scalar(
        "token_hash_cost",
        "",
        "accepted, unused: regate's credentials are 160 random bits, kept as SHA-256 (a warning)",
    ),
];

pub(super) const CLIENT_ID: Key = Key::scalar(
    "client_id",
    "none: required",
    "the OAuth client (application) id the provider gave",
);
pub(super) const CLIENT_SECRET: Key =
    Key::scalar("client_secret", "", "its secret; or `client_secret_file`");
pub(super) const CLIENT_SECRET_FILE: Key = Key::scalar(
    "client_secret_file",
    "",
    "a file holding the secret (trimmed), read at start and on reload",
);
pub(super) const LEVEL_TOKEN_DB: Key = Key::new("level_token_db", Kind::Section(LEVEL_KEYS));
pub(super) const TOKEN_DB: Key = Key::scalar(
    "token_db",
    "",
    "docker_auth's older spelling of `level_token_db.path`",
);
pub(super) const REDIS_TOKEN_DB: Key = Key::with(
    "redis_token_db",
    Kind::Free,
    "",
    "with `shared_state.redis`: the token DB is kept there (its own settings are not read); without it, refused",
);
pub(super) const GCS_TOKEN_DB: Key = Key::with(
    "gcs_token_db",
    Kind::Free,
    "",
    "refused: Google Cloud Storage is not supported; use `level_token_db`",
);
pub(super) const HTTP_TIMEOUT: Key = Key::scalar(
    "http_timeout",
    "10",
    "seconds (or a Go duration: `10s`) one request to the provider may take, connecting included",
);
pub(super) const REGISTRY_URL: Key = Key::scalar(
    "registry_url",
    "the host the browser used",
    "the registry's name in the `docker login` commands the password page shows",
);
pub(super) const REVALIDATE_AFTER: Key = Key::scalar(
    "revalidate_after",
    "3600",
    "seconds (or `1h`) a check at the provider holds; then the next login asks again",
);
pub(super) const OUTAGE_GRACE: Key = Key::scalar(
    "outage_grace",
    "3600",
    "regate: seconds an account keeps working past its last check while the provider cannot be reached (logged); 0: none",
);

/// The keys every section has, as read.
pub(super) struct Shared {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub level_token_db: Option<RawLevelDb>,
    pub token_db: Option<String>,
    pub redis_token_db: Option<IgnoredAny>,
    pub gcs_token_db: Option<IgnoredAny>,
    pub http_timeout: Option<String>,
    pub registry_url: Option<String>,
    pub outage_grace: Option<String>,
}

/// The shared keys, validated.
pub(super) struct Common {
    pub client_id: String,
    pub client_secret: ClientSecret,
    pub http_timeout: Duration,
    pub registry_url: Option<String>,
    pub outage_grace: Duration,
    pub token_db: Option<PathBuf>,
}

pub(super) fn common(section: &str, raw: Shared, cx: &mut Cx<'_>) -> Result<Common, Failed> {
    let at = |k: &'static str| [section, k];
    if raw.redis_token_db.is_some() {
        // The token DB is kept in the state store: in Redis when the replicas share one.
        let shared = cx
            .doc
            .get("shared_state")
            .and_then(|s| s.get("redis"))
            .is_some_and(|r| !r.is_null());
        if !shared {
            return cx.fail_hint(
                &at("redis_token_db"),
                "regate keeps the token DB in its state store, which is Redis only when `shared_state.redis` names one",
                "add `shared_state: {redis: {addr: HOST:PORT, password_file: FILE}}` with this Redis (sessions and the login throttle go there too), or use `level_token_db: {path: /data/tokens.json}` for one regate",
            );
        }
        cx.warn(format!(
            "{section}.redis_token_db: the token DB is kept in `shared_state.redis`; this section's own Redis settings are not read"
        ));
    }
    if raw.gcs_token_db.is_some() {
        return cx.fail_hint(
            &at("gcs_token_db"),
            "regate does not keep a token DB in Google Cloud Storage",
            "use `level_token_db: {path: /data/tokens.json}` on a persistent volume, or leave it out (kept in data_dir)",
        );
    }
    let client_id = match raw.client_id.map(|s| s.trim().to_owned()) {
        Some(id) if !id.is_empty() => id,
        _ => {
            return cx.fail_hint(
                &[section],
                "`client_id` is required: the id of the OAuth application registered at the provider",
                "register regate as an application (web / confidential client) at the provider; it gives an id and a secret",
            )
        }
    };
    let client_secret = match (
        raw.client_secret.filter(|s| !s.is_empty()),
        raw.client_secret_file.filter(|s| !s.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            return cx.fail(
                &at("client_secret"),
                "give `client_secret` or `client_secret_file`, not both",
            )
        }
        (Some(s), None) => ClientSecret::Inline(Secret::new(s.trim())),
        (None, Some(f)) => ClientSecret::File(cx.resolve(&f)),
        (None, None) => return cx.fail_hint(
            &[section],
            "the client secret is missing",
            "`client_secret_file: /secrets/client_secret` (a file holding it), or `client_secret`",
        ),
    };
    let http_timeout = duration(cx, &at("http_timeout"), raw.http_timeout.as_deref(), 10)?;
    if http_timeout.is_zero() {
        return cx.fail(
            &at("http_timeout"),
            "a timeout of 0 would fail every request",
        );
    }
    let outage_grace = duration(cx, &at("outage_grace"), raw.outage_grace.as_deref(), 3600)?;
    let registry_url = raw
        .registry_url
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty());
    let level = raw.level_token_db.unwrap_or_default();
    if level.token_hash_cost.is_some() {
        cx.warn(format!("{section}.level_token_db.token_hash_cost is unused: regate's credentials are 160 random bits, kept as SHA-256, not bcrypt"));
    }
    let token_db = match (
        level.path.filter(|p| !p.is_empty()),
        raw.token_db.filter(|p| !p.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            return cx.fail(
                &at("token_db"),
                "`token_db` is the older spelling of `level_token_db.path`: give one of them",
            )
        }
        (Some(p), None) | (None, Some(p)) => Some(cx.resolve(&p)),
        (None, None) => None,
    };
    Ok(Common {
        client_id,
        client_secret,
        http_timeout,
        registry_url,
        outage_grace,
        token_db,
    })
}

/// Seconds as a number, or a Go duration (`10s`, `1m30s`, `1h`: what docker_auth's
/// `time.Duration` keys take); `default` seconds when absent.
pub(super) fn duration(
    cx: &mut Cx<'_>,
    path: &[&str],
    value: Option<&str>,
    default: u64,
) -> Result<Duration, Failed> {
    let Some(text) = value.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(Duration::from_secs(default));
    };
    parse_duration(text).or_else(|m| cx.fail(path, m))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a number of seconds or a duration such as 10s, 5m, 1h");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return match seconds.is_finite() && (0.0..1e9).contains(&seconds) {
            true => Ok(Duration::from_secs_f64(seconds)),
            false => Err(bad()),
        };
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, after) = rest.split_at(digits);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = after;
    }
    match total < 1e9 {
        true => Ok(Duration::from_secs_f64(total)),
        false => Err(bad()),
    }
}

/// An `http(s)://HOST[:PORT][/PATH]` base URL without a trailing `/`; `default` when
/// absent.
pub(super) fn base_url(
    cx: &mut Cx<'_>,
    path: &[&str],
    value: Option<String>,
    default: &str,
) -> Result<String, Failed> {
    let text = value
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned());
    let url = text.trim_end_matches('/').to_owned();
    match url.parse::<hyper::Uri>() {
        Ok(u)
            if matches!(u.scheme_str(), Some("http" | "https"))
                && u.authority().is_some()
                && u.query().is_none() =>
        {
            let host = u.host().unwrap_or_default();
            let local = host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if u.scheme_str() == Some("http") && !local {
                cx.warn(format!(
                    "{}: {url} is plain http: tokens and secrets cross the network in clear text",
                    path.join(".")
                ));
            }
            Ok(url)
        }
        _ => cx.fail(path, format!("`{text}` is not an http:// or https:// URL")),
    }
}

/// The URL the provider sends the browser back to: absolute, and its path ends in the
/// section's route (`/oidc_auth`), which regate answers (under `server.path_prefix`).
pub(super) fn redirect_url(
    cx: &mut Cx<'_>,
    path: &[&str],
    value: Option<String>,
    route: &str,
    prefix: &str,
) -> Result<Option<String>, Failed> {
    let Some(text) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let ours = format!("{prefix}/{route}");
    let uri = match text.parse::<hyper::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => u,
        _ => {
            return cx.fail_hint(
                path,
                format!("`{text}` is not an absolute http(s) URL"),
                format!("this site's address and {ours}, as registered at the provider, e.g. https://registry.example.com{ours}"),
            )
        }
    };
    if !uri.path().ends_with(&format!("/{route}")) || uri.query().is_some() {
        return cx.fail_hint(
            path,
            format!("`{text}` must end in /{route}: the provider sends the browser back there, and regate finishes the sign-in at {ours}"),
            format!("e.g. https://registry.example.com{ours}, and the same at the provider"),
        );
    }
    if uri.path() != ours {
        cx.warn(format!(
            "{}: regate answers {ours}; {text} reaches it only through a proxy that maps {} there",
            path.join("."),
            uri.path()
        ));
    }
    Ok(Some(text))
}

/// The one file regate keeps every provider's token DB in: the first section's
/// (docker_auth's order) `level_token_db.path`, else `data_dir/tokens.json`; none when no
/// provider is configured.
pub(super) fn store_file(
    sections: &[Settings],
    data_dir: &std::path::Path,
    cx: &mut Cx<'_>,
) -> Option<PathBuf> {
    if sections.is_empty() {
        return None;
    }
    let chosen = sections.iter().find_map(|s| s.token_db.clone());
    for s in sections {
        if let (Some(own), Some(chosen)) = (&s.token_db, &chosen) {
            if own != chosen {
                cx.warn(format!(
                    "{}.level_token_db.path is {}, but regate keeps one token DB for every provider, in {} (the first section's)",
                    s.backend,
                    own.display(),
                    chosen.display()
                ));
            }
        }
    }
    Some(chosen.unwrap_or_else(|| data_dir.join("tokens.json")))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_as_docker_auth_writes_them() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "ten", "10x", "s", "-1", "1h-5m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
