//! `github_auth` as written -> [`idp::Settings`]: GitHub or GitHub Enterprise
//! (`github_web_uri`, `github_api_uri`), `organization` admitting only its members (their
//! team slugs become the label `teams`), `revalidate_after` (default 1 h). regate's own
//! key: `redirect_url` (without it GitHub uses the app's registered callback).

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::idp::{self as shared, RawLevelDb, Shared};
use super::keys::Key;
use super::{Cx, Failed};
use crate::auth::identity::Backend;
use crate::auth::idp::{self, Settings};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGithub {
    organization: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<String>,
    level_token_db: Option<RawLevelDb>,
    token_db: Option<String>,
    redis_token_db: Option<IgnoredAny>,
    gcs_token_db: Option<IgnoredAny>,
    http_timeout: Option<String>,
    revalidate_after: Option<String>,
    github_web_uri: Option<String>,
    github_api_uri: Option<String>,
    registry_url: Option<String>,
    redirect_url: Option<String>,
    outage_grace: Option<String>,
}

pub(super) const KEYS: &[Key] = &[
    Key::scalar(
        "organization",
        "",
        "only members of this organization; their team slugs in it (and the teams' parents) are the label `teams`, read again at every check",
    ),
    shared::CLIENT_ID,
    shared::CLIENT_SECRET,
    shared::CLIENT_SECRET_FILE,
    shared::LEVEL_TOKEN_DB,
    shared::TOKEN_DB,
    shared::REDIS_TOKEN_DB,
    shared::GCS_TOKEN_DB,
    shared::HTTP_TIMEOUT,
    shared::REVALIDATE_AFTER,
    Key::scalar(
        "github_web_uri",
        "`https://github.com`",
        "GitHub Enterprise's web address",
    ),
    Key::scalar(
        "github_api_uri",
        "`https://api.github.com`",
        "GitHub Enterprise's API (`https://github.example.com/api/v3`)",
    ),
    shared::REGISTRY_URL,
    Key::scalar(
        "redirect_url",
        "the app's registered callback",
        "regate: this site's `…/github_auth`, sent to GitHub as `redirect_uri`",
    ),
    shared::OUTAGE_GRACE,
];

pub(super) fn build(raw: RawGithub, prefix: &str, cx: &mut Cx<'_>) -> Result<Settings, Failed> {
    const S: &str = "github_auth";
    let web = shared::base_url(
        cx,
        &[S, "github_web_uri"],
        raw.github_web_uri,
        "https://github.com",
    )?;
    let api = shared::base_url(
        cx,
        &[S, "github_api_uri"],
        raw.github_api_uri,
        "https://api.github.com",
    )?;
    let redirect_url = shared::redirect_url(cx, &[S, "redirect_url"], raw.redirect_url, S, prefix)?;
    let revalidate_after = shared::duration(
        cx,
        &[S, "revalidate_after"],
        raw.revalidate_after.as_deref(),
        3600,
    )?;
    let common = shared::common(
        S,
        Shared {
            client_id: raw.client_id,
            client_secret: raw.client_secret,
            client_secret_file: raw.client_secret_file,
            level_token_db: raw.level_token_db,
            token_db: raw.token_db,
            redis_token_db: raw.redis_token_db,
            gcs_token_db: raw.gcs_token_db,
            http_timeout: raw.http_timeout,
            registry_url: raw.registry_url,
            outage_grace: raw.outage_grace,
        },
        cx,
    )?;
    let organization = raw
        .organization
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty());
    if organization.is_none() {
        cx.warn("github_auth has no `organization`: every GitHub account can sign in (and gets no `teams` label)");
    }
    Ok(Settings {
        backend: Backend::GithubAuth,
        kind: idp::Kind::Github {
            organization,
            web,
            api,
        },
        client_id: common.client_id,
        client_secret: common.client_secret,
        redirect_url,
        registry_url: common.registry_url,
        http_timeout: common.http_timeout,
        revalidate_after,
        outage_grace: common.outage_grace,
        token_db: common.token_db,
    })
}

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    super::keys::assert_keys_match::<RawGithub>(KEYS);
}
