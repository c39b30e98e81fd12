//! A registry request's access: what it asks (the scopes registry:2 requires), what the
//! caller holds (a verified token, or a grant made for Basic credentials), and whether
//! that covers it.

use std::net::IpAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, StatusCode};

use crate::auth::authorize::{decide, identify, Login, Refused};
use crate::auth::challenge::{parse_authorization, Challenge, ChallengeError, Credential};
use crate::auth::scope::Scope;
use crate::auth::token::Verified;
use crate::error::{Code, RegistryError};
use crate::route::{self, Classified, RepoKind, Route};
use crate::runtime::Runtime;

/// What a registry request asks for: the access registry:2 requires for it, and the
/// mount source.
pub(super) struct Asked {
    pub(super) method: Method,
    pub(super) query: Option<String>,
    pub(super) from: Option<String>,
    pub(super) required: Vec<Scope>,
}

impl Asked {
    pub(super) fn of(
        req: &Request<Incoming>,
        classified: &Classified,
    ) -> Result<Asked, RegistryError> {
        let method = req.method().clone();
        refuse_form_bodies(req)?;
        let query = req.uri().query().map(str::to_owned);
        let from = route::query_param(query.as_deref(), "from").map_err(|e| {
            RegistryError::new(Code::Unsupported, e.to_string())
                .with_status(StatusCode::BAD_REQUEST)
        })?;
        let from = from.filter(|f| !f.is_empty());
        if from.as_deref().is_some_and(|f| !route::valid_name(f)) {
            return Err(RegistryError::new(
                Code::NameInvalid,
                "invalid repository name in `from`",
            ));
        }
        let required = classified
            .route
            .required_access(&method, from.as_deref())
            .unwrap_or_default();
        Ok(Asked {
            method,
            query,
            from,
            required,
        })
    }
}

/// What the caller holds: a verified token's access (or one made for Basic credentials),
/// and for the latter the token to show a registry that checks tokens itself.
pub(super) struct Grant {
    pub(super) verified: Arc<Verified>,
    pub(super) upstream_bearer: Option<String>,
}

/// The caller's grant, from a bearer token, or from Basic credentials where allowed.
pub(super) async fn grant(
    rt: &Runtime,
    req: &Request<Incoming>,
    asked: &Asked,
    client_ip: IpAddr,
    challenge: &Challenge,
) -> Result<Grant, RegistryError> {
    match parse_authorization(req.headers().get(hyper::header::AUTHORIZATION)) {
        Credential::Bearer(token) => match rt.tokens.verify(token.expose()) {
            Ok(verified) => Ok(Grant {
                verified,
                upstream_bearer: None,
            }),
            Err(e) => {
                tracing::info!(client = %client_ip, error = %e, "token refused");
                Err(RegistryError::unauthorized(
                    challenge.with_error(ChallengeError::InvalidToken),
                ))
            }
        },
        Credential::Basic { user, password } if rt.config.server.basic_auth => {
            basic_grant(rt, user, password, client_ip, &asked.required)
                .await
                .map_err(|refused| match refused.answer() {
                    Ok(e) => e,
                    Err(_) => RegistryError::unauthorized(challenge.clone()),
                })
        }
        Credential::None | Credential::Basic { .. } => {
            Err(RegistryError::unauthorized(challenge.clone()))
        }
    }
}

/// Whether `grant` covers what was asked: the query to forward (a mount whose source the
/// caller may not pull loses `mount` and `from`), or the refusal.
pub(super) fn covered(
    grant: &Grant,
    asked: &Asked,
    route: &Route,
    client_ip: IpAddr,
    challenge: &Challenge,
) -> Result<Option<String>, RegistryError> {
    let missing = grant.verified.missing(&asked.required);
    if missing.is_empty() {
        return Ok(asked.query.clone());
    }
    // A cross-repository mount the caller may not read from is a plain upload (OCI
    // distribution spec: "SHOULD return a 202"), instead of registry:2's 401 for the whole
    // request.
    let upload_start = matches!(
        route,
        Route::Repository {
            kind: RepoKind::UploadStart,
            ..
        }
    );
    let only_source = missing.len() == 1
        && asked.from.as_ref().is_some_and(|f| missing[0].name == *f)
        && upload_start
        && asked.method == Method::POST;
    if only_source {
        return Ok(asked.query.as_deref().map(without_mount));
    }
    tracing::info!(
        client = %client_ip,
        account = %grant.verified.subject,
        missing = %missing.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" "),
        "insufficient scope"
    );
    if grant.upstream_bearer.is_some() {
        // Basic credentials: no token dance to retry, so say it plainly.
        return Err(RegistryError::new(
            Code::Denied,
            "requested access to the resource is denied",
        ));
    }
    Err(RegistryError::unauthorized(
        challenge.with_error(ChallengeError::InsufficientScope),
    ))
}

/// HTTP Basic credentials on a registry route (`curl -u`): authenticated and decided per
/// request through the same ACL, then a short token minted for the registry.
async fn basic_grant(
    rt: &Runtime,
    user: String,
    password: crate::auth::Secret,
    client_ip: IpAddr,
    required: &[Scope],
) -> Result<Grant, Refused> {
    let login = Login::Password { user, password };
    let identity = identify(rt, &login, client_ip).await?;
    let access = decide(rt, &identity, client_ip, required)
        .await
        .map_err(Refused::Authz)?;
    // A token the registry would take; without one (signing failed, which a loaded key
    // never does) the request goes on without, and a token-checking registry says no.
    let token = rt.tokens.issue(&identity.account, access.clone()).ok();
    Ok(Grant {
        verified: Arc::new(Verified::new(identity.account, access)),
        upstream_bearer: token.map(|t| t.token),
    })
}

/// registry:2 reads `from` with Go's `FormValue`, which also parses url-encoded and
/// multipart bodies: a form body could name a mount source regate never saw. No registry
/// client sends one, so it is refused.
fn refuse_form_bodies<B>(req: &Request<B>) -> Result<(), RegistryError> {
    let Some(ct) = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "application/x-www-form-urlencoded" || media == "multipart/form-data" {
        return Err(RegistryError::new(
            Code::Unsupported,
            "form bodies are not accepted on registry routes",
        )
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    Ok(())
}

/// The query without `mount` and `from`, byte-exact otherwise.
fn without_mount(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map(|(k, _)| k).unwrap_or(pair);
            let k = route::form_decode(k);
            k.as_deref() != Some("mount") && k.as_deref() != Some("from")
        })
        .collect::<Vec<_>>()
        .join("&")
}
