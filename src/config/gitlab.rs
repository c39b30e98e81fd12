//! `gitlab_auth` as written -> [`idp::Settings`]: gitlab.com or a GitLab of one's own
//! (`gitlab_web_uri`, `gitlab_api_uri`), `redirect_uri` (required, ends in
//! `/gitlab_auth`), `revalidate_after` (default 1 h). `organization`, which docker_auth
//! reads and never uses, admits here only members of that group (or of a group below
//! it); the user's groups become the label `groups`.

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::idp::{self as shared, RawLevelDb, Shared};
use super::keys::Key;
use super::{Cx, Failed};
use crate::auth::identity::Backend;
use crate::auth::idp::{self, Settings};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGitlab {
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
    gitlab_web_uri: Option<String>,
    gitlab_api_uri: Option<String>,
    registry_url: Option<String>,
    grant_type: Option<String>,
    redirect_uri: Option<String>,
    outage_grace: Option<String>,
}

pub(super) const KEYS: &[Key] = &[
    Key::scalar(
        "organization",
        "",
        "regate: only members of this group (full path, `acme` or `acme/platform`) or of a group below it",
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
        "gitlab_web_uri",
        "`https://gitlab.com`",
        "the GitLab's address (OAuth endpoints)",
    ),
    Key::scalar(
        "gitlab_api_uri",
        "`https://gitlab.com/api/v4`",
        "its API",
    ),
    shared::REGISTRY_URL,
    Key::scalar(
        "grant_type",
        "authorization_code",
        "docker_auth's; only `authorization_code`",
    ),
    Key::scalar(
        "redirect_uri",
        "none: required",
        "this site's `…/gitlab_auth`, as registered in the GitLab application",
    ),
    shared::OUTAGE_GRACE,
];

pub(super) fn build(raw: RawGitlab, prefix: &str, cx: &mut Cx<'_>) -> Result<Settings, Failed> {
    const S: &str = "gitlab_auth";
    let web = shared::base_url(
        cx,
        &[S, "gitlab_web_uri"],
        raw.gitlab_web_uri,
        "https://gitlab.com",
    )?;
    let api = shared::base_url(
        cx,
        &[S, "gitlab_api_uri"],
        raw.gitlab_api_uri,
        "https://gitlab.com/api/v4",
    )?;
    if web.ends_with("/api/v4") {
        cx.warn("gitlab_auth.gitlab_web_uri ends in /api/v4: that is the API's address (gitlab_api_uri); the web address is the GitLab's root");
    }
    match raw.grant_type.as_deref().map(str::trim) {
        None | Some("") | Some("authorization_code") => {}
        Some(other) => {
            return cx.fail(
                &[S, "grant_type"],
                format!("`{other}`: the browser sign-in is the `authorization_code` grant"),
            )
        }
    }
    let redirect_url = shared::redirect_url(cx, &[S, "redirect_uri"], raw.redirect_uri, S, prefix)?;
    let Some(redirect_url) = redirect_url else {
        return cx.fail_hint(
            &[S],
            format!("`redirect_uri` is required: where GitLab sends the browser back, this site's {prefix}/gitlab_auth"),
            format!("e.g. `redirect_uri: https://registry.example.com{prefix}/gitlab_auth`, the application's callback URL in GitLab"),
        );
    };
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
    let group = raw
        .organization
        .map(|o| o.trim().trim_matches('/').to_owned())
        .filter(|o| !o.is_empty());
    Ok(Settings {
        backend: Backend::GitlabAuth,
        kind: idp::Kind::Gitlab { group, web, api },
        client_id: common.client_id,
        client_secret: common.client_secret,
        redirect_url: Some(redirect_url),
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
    super::keys::assert_keys_match::<RawGitlab>(KEYS);
}
