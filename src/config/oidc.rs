//! `oidc_auth` as written -> [`idp::Settings`]: any OpenID Connect provider (Keycloak,
//! Dex, Okta, Entra ID, Authelia, ...), with docker_auth's keys and defaults
//! (`user_claim: email`, `scopes: [openid, email]`), both spellings of the labels key
//! (docker_auth's code reads `labels_claims`, its reference.yml says `label_claims`).

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::idp::{self as shared, RawLevelDb, Shared};
use super::keys::{Key, Kind};
use super::{Cx, Failed};
use crate::auth::identity::Backend;
use crate::auth::idp::{self, Settings};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    issuer: Option<String>,
    redirect_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<String>,
    level_token_db: Option<RawLevelDb>,
    token_db: Option<String>,
    redis_token_db: Option<IgnoredAny>,
    gcs_token_db: Option<IgnoredAny>,
    http_timeout: Option<String>,
    registry_url: Option<String>,
    user_claim: Option<String>,
    labels_claims: Option<Vec<String>>,
    label_claims: Option<Vec<String>>,
    scopes: Option<Vec<String>>,
    outage_grace: Option<String>,
}

pub(super) const KEYS: &[Key] = &[
    Key::scalar(
        "issuer",
        "none: required",
        "the provider's issuer URL; its `/.well-known/openid-configuration` is read at start",
    ),
    Key::scalar(
        "redirect_url",
        "none: required",
        "this site's `…/oidc_auth`, as registered at the provider (`https://registry.example.com/oidc_auth`)",
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
        "user_claim",
        "email",
        "the id_token claim that is the account's name (an unverified `email` is refused)",
    ),
    Key::with(
        "labels_claims",
        Kind::List,
        "",
        "claims (lists of strings, or a string) whose values become labels of the same name: `[groups]`; read at sign-in and at every check",
    ),
    Key::with(
        "label_claims",
        Kind::List,
        "",
        "docker_auth's reference.yml spelling of `labels_claims` (which docker_auth ignores): taken, with a warning",
    ),
    Key::with(
        "scopes",
        Kind::List,
        "[openid, email]",
        "the scopes asked; `openid` is needed",
    ),
    shared::OUTAGE_GRACE,
];

pub(super) fn build(raw: RawOidc, prefix: &str, cx: &mut Cx<'_>) -> Result<Settings, Failed> {
    const S: &str = "oidc_auth";
    let Some(issuer) = raw.issuer.filter(|i| !i.trim().is_empty()) else {
        return cx.fail_hint(
            &[S],
            "`issuer` is required: the provider's issuer URL",
            "e.g. https://keycloak.example.com/realms/staff, https://login.microsoftonline.com/TENANT/v2.0 or https://accounts.google.com",
        );
    };
    let issuer = shared::base_url(cx, &[S, "issuer"], Some(issuer), "")?;
    let redirect_url = shared::redirect_url(cx, &[S, "redirect_url"], raw.redirect_url, S, prefix)?;
    let Some(redirect_url) = redirect_url else {
        return cx.fail_hint(
            &[S],
            format!("`redirect_url` is required: where the provider sends the browser back, this site's {prefix}/oidc_auth"),
            format!("e.g. `redirect_url: https://registry.example.com{prefix}/oidc_auth`, registered as a redirect URI at the provider"),
        );
    };
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
    let user_claim = raw
        .user_claim
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "email".to_owned());
    if raw.label_claims.is_some() {
        cx.warn("oidc_auth.label_claims: docker_auth's reference.yml spells it so, but docker_auth reads `labels_claims` and ignores this key; regate takes both: write `labels_claims`");
    }
    let mut labels_claims: Vec<String> = raw
        .labels_claims
        .into_iter()
        .chain(raw.label_claims)
        .flatten()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    labels_claims.dedup();
    let scopes: Vec<String> = raw
        .scopes
        .unwrap_or_else(|| vec!["openid".to_owned(), "email".to_owned()])
        .into_iter()
        .flat_map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    if !scopes.iter().any(|s| s == "openid") {
        return cx.fail(
            &[S, "scopes"],
            "`scopes` must hold `openid`: without it the provider sends no id_token",
        );
    }
    if user_claim == "email" && !scopes.iter().any(|s| s == "email") {
        cx.warn("oidc_auth: user_claim is `email` but `scopes` lacks `email`: many providers then send no e-mail address");
    }
    Ok(Settings {
        backend: Backend::OidcAuth,
        kind: idp::Kind::Oidc {
            issuer,
            user_claim,
            labels_claims,
            scopes,
        },
        client_id: common.client_id,
        client_secret: common.client_secret,
        redirect_url: Some(redirect_url),
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
    super::keys::assert_keys_match::<RawOidc>(KEYS);
}
