//! `token:` -> [`token::Settings`]: docker_auth's issuer, expiration and key pair, and
//! regate's service, realm, refresh tokens and key ID format.

use std::time::Duration;

use serde::Deserialize;

use super::keys::{Key, Kind};
use super::{Cx, Failed};
use crate::auth::keys::KidFormat;
use crate::auth::token::Settings;
use crate::tls::TlsFiles;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    issuer: Option<String>,
    expiration: Option<i64>,
    certificate: Option<String>,
    key: Option<String>,
    disable_legacy_key_id: Option<bool>,
    service: Option<String>,
    realm: Option<String>,
    refresh_expiration: Option<i64>,
    kid_format: Option<String>,
    previous_certificates: Option<Vec<String>>,
}

pub(super) const KEYS: &[Key] = &[
    Key::scalar(
        "issuer",
        "regate",
        "the tokens' `iss` (= the registry's `auth.token.issuer`, if it checks tokens)",
    ),
    Key::scalar("expiration", "300", "seconds a token is valid"),
    Key::scalar(
        "certificate",
        "`server.certificate`",
        "the token signing certificate (PEM)",
    ),
    Key::scalar("key", "`server.key`", "the token signing key (PEM)"),
    Key::scalar(
        "disable_legacy_key_id",
        "false",
        "docker_auth's name for `kid_format: rfc7638`",
    ),
    Key::scalar(
        "service",
        "`Docker registry`",
        "the challenge's `service` and the tokens' `aud` (= the registry's `auth.token.service` if it checks tokens)",
    ),
    Key::scalar(
        "realm",
        "`<scheme>://<Host>/auth`",
        "the realm URL in challenges",
    ),
    Key::scalar(
        "refresh_expiration",
        "2592000 (30 days)",
        "lifetime of refresh tokens (docker login's identity token)",
    ),
    Key::scalar(
        "kid_format",
        "libtrust",
        "`rfc7638` for registry v3 and JWKS",
    ),
    Key::with(
        "previous_certificates",
        Kind::List,
        "",
        "certificates (PEM) of token keys used before a rotation: tokens and refresh tokens they signed are still accepted until they expire; nothing new is signed with them. Drop one once `refresh_expiration` has passed since the rotation",
    ),
];

/// `server` comes first: docker_auth signs with the server's pair when `token` has none.
pub(super) fn build(
    raw: RawToken,
    server: Option<&crate::tls::ServerTls>,
    cx: &mut Cx<'_>,
) -> Result<Settings, Failed> {
    let at = |k: &'static str| ["token", k];
    let seconds = |cx: &mut Cx<'_>, k: &'static str, v: Option<i64>, default: u64| match v {
        None => Ok(default),
        Some(s) if s > 0 => Ok(s as u64),
        Some(s) => cx.fail(&at(k), format!("{s} is not a positive number of seconds")),
    };
    let expiration = seconds(cx, "expiration", raw.expiration, 300)?;
    // docker_auth's `disable_legacy_key_id: true` is regate's `kid_format: rfc7638`.
    let legacy = match raw.disable_legacy_key_id {
        Some(true) => KidFormat::Rfc7638,
        _ => KidFormat::Libtrust,
    };
    let kid_format = match (raw.kid_format.as_deref(), raw.disable_legacy_key_id) {
        (None, _) => legacy,
        (Some("libtrust"), Some(true)) | (Some("rfc7638"), Some(false)) => {
            return cx.fail(
                &at("kid_format"),
                "`kid_format` and docker_auth's `disable_legacy_key_id` disagree; keep one",
            )
        }
        (Some("libtrust"), _) => KidFormat::Libtrust,
        (Some("rfc7638"), _) => KidFormat::Rfc7638,
        (Some(other), _) => {
            return cx.fail(
                &at("kid_format"),
                format!("`{other}` is not libtrust (registry 2.x) or rfc7638 (registry v3)"),
            )
        }
    };
    let refresh_expiration = seconds(
        cx,
        "refresh_expiration",
        raw.refresh_expiration,
        30 * 24 * 3600,
    )?;
    if expiration < 60 {
        cx.warn(format!("token.expiration is {expiration}s: clients treat a token as valid for at least 60s (token spec)"));
    }
    let key = match (&raw.certificate, &raw.key) {
        (Some(c), Some(k)) => Some(TlsFiles {
            certificate: cx.resolve(c),
            key: cx.resolve(k),
        }),
        // docker_auth signs with the server's pair when token has none.
        // With `letsencrypt` there is no pair to share (and a certificate renewed every
        // few weeks would break the registry's `rootcertbundle`): a key is generated.
        (None, None) => server.and_then(|t| t.files().cloned()),
        (Some(_), None) => {
            return cx.fail(&at("certificate"), "`certificate` is set but `key` is not")
        }
        (None, Some(_)) => return cx.fail(&at("key"), "`key` is set but `certificate` is not"),
    };
    if let Some(realm) = &raw.realm {
        let ok = realm
            .parse::<hyper::Uri>()
            .is_ok_and(|u| u.scheme().is_some() && u.authority().is_some());
        if !ok {
            return cx.fail(
                &at("realm"),
                "the realm must be an absolute URL (clients do not resolve a relative one)",
            );
        }
    }
    Ok(Settings {
        issuer: raw.issuer.unwrap_or_else(|| "regate".to_owned()),
        service: raw.service.unwrap_or_else(|| "Docker registry".to_owned()),
        realm: raw.realm,
        expiration: Duration::from_secs(expiration),
        refresh_expiration: Duration::from_secs(refresh_expiration),
        kid_format,
        key,
        previous_certificates: raw
            .previous_certificates
            .unwrap_or_default()
            .iter()
            .map(|p| cx.resolve(p))
            .collect(),
    })
}

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    super::keys::assert_keys_match::<RawToken>(KEYS);
}
