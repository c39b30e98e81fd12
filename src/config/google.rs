//! `google_auth` as written -> [`idp::Settings`]: Google Sign-In through Google's OpenID
//! discovery document and the web server flow (docker_auth's gapi page no longer works
//! for new client IDs, docker_auth #341). `domain` admits only that Google Workspace
//! domain's accounts (the `hd` claim). regate's own keys: `issuer` (a stand-in's, for
//! tests), `redirect_url` and `registry_url`.

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::idp::{self as shared, RawLevelDb, Shared};
use super::keys::Key;
use super::{Cx, Failed};
use crate::auth::identity::Backend;
use crate::auth::idp::{self, Settings};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGoogle {
    domain: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<String>,
    level_token_db: Option<RawLevelDb>,
    token_db: Option<String>,
    redis_token_db: Option<IgnoredAny>,
    gcs_token_db: Option<IgnoredAny>,
    http_timeout: Option<String>,
    registry_url: Option<String>,
    issuer: Option<String>,
    redirect_url: Option<String>,
    outage_grace: Option<String>,
}

pub(super) const KEYS: &[Key] = &[
    Key::scalar(
        "domain",
        "",
        "only accounts of this Google Workspace domain (their `hd` claim; an address at the domain alone is not enough)",
    ),
    shared::CLIENT_ID,
    shared::CLIENT_SECRET,
    shared::CLIENT_SECRET_FILE,
    shared::LEVEL_TOKEN_DB,
    shared::TOKEN_DB,
    shared::REDIS_TOKEN_DB,
    shared::GCS_TOKEN_DB,
    shared::HTTP_TIMEOUT,
    shared::REGISTRY_URL,
    Key::scalar(
        "issuer",
        "`https://accounts.google.com`",
        "regate: Google's issuer; another only for a stand-in in tests",
    ),
    Key::scalar(
        "redirect_url",
        "this site's `/google_auth` as the browser reached it",
        "regate: the redirect URI registered at Google, when a proxy in front changes the address",
    ),
    shared::OUTAGE_GRACE,
];

pub(super) fn build(raw: RawGoogle, prefix: &str, cx: &mut Cx<'_>) -> Result<Settings, Failed> {
    const S: &str = "google_auth";
    let issuer = shared::base_url(
        cx,
        &[S, "issuer"],
        raw.issuer,
        "https://accounts.google.com",
    )?;
    let redirect_url = shared::redirect_url(cx, &[S, "redirect_url"], raw.redirect_url, S, prefix)?;
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
    let domain = raw
        .domain
        .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
        .filter(|d| !d.is_empty());
    Ok(Settings {
        backend: Backend::GoogleAuth,
        kind: idp::Kind::Google { issuer, domain },
        client_id: common.client_id,
        client_secret: common.client_secret,
        redirect_url,
        registry_url: common.registry_url,
        http_timeout: common.http_timeout,
        revalidate_after: std::time::Duration::ZERO,
        outage_grace: common.outage_grace,
        token_db: common.token_db,
    })
}

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    super::keys::assert_keys_match::<RawGoogle>(KEYS);
}
