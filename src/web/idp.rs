//! The identity providers' pages, at docker_auth's routes under the prefix (`/oidc_auth`,
//! `/google_auth`, `/github_auth`, `/gitlab_auth`):
//!
//! ```text
//! GET  (no answer)          -> a sign-in flow in the store, the browser's cookie -> 303 provider
//! GET  ?code=&state=        -> the flow taken once, same browser -> provider.finish
//!                              -> credential issued, session begun -> the password page
//! GET  ?error=&state=       -> the provider's refusal, as a page
//! POST action=revoke|create|signout (the session's CSRF token) -> its credentials
//! ```
//!
//! Every failure is a page that says what happened and offers to sign in again, and
//! makes no credential.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::body::Incoming;
use hyper::header::{HeaderValue, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};

use super::page::{self, Problem, Shell};
use super::{form, session, Session, Visit};
use crate::auth::credentials::Credentials;
use crate::auth::identity::Identity;
use crate::auth::idp::{Flow, Kind, Provider, Taken};
use crate::body::Body;

mod pages;

use pages::{browser_name, failed, failure, password_page, registry_name, Shown, SignedOut};

/// The cookie that ties a sign-in to the browser that began it.
const FLOW_COOKIE: &str = "regate_idp";

/// The provider whose page `path` is.
pub fn provider<'a>(visit: &'a Visit<'_>, path: &str) -> Option<&'a Arc<Provider>> {
    visit
        .rt
        .logins
        .providers()
        .iter()
        .find(|p| p.route() == path)
}

/// A "Sign in with …" button of the sign-in page.
pub struct Link {
    pub href: String,
    pub label: String,
}

/// The sign-in page's buttons, one per configured provider.
pub fn links(visit: &Visit<'_>) -> Vec<Link> {
    visit
        .rt
        .logins
        .providers()
        .iter()
        .map(|p| Link {
            href: visit.href(&p.route()),
            label: p.label(),
        })
        .collect()
}

pub async fn handle(
    visit: &Visit<'_>,
    req: Request<Incoming>,
    provider: &Arc<Provider>,
) -> Result<Response<Body>, Problem> {
    match *req.method() {
        Method::GET | Method::HEAD => {
            let query = req
                .uri()
                .query()
                .and_then(form::Form::parse)
                .unwrap_or_else(|| form::Form::parse("").expect("an empty form"));
            let answered = ["code", "state", "error"]
                .iter()
                .any(|k| query.get(k).is_some());
            if answered {
                Ok(callback(visit, &req, provider, &query).await)
            } else {
                Ok(start(visit, &req, provider).await)
            }
        }
        Method::POST => manage(visit, req, provider).await,
        _ => Err(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "This page does not take that kind of request.",
        )),
    }
}

/// This site's address as the browser reached it, with the prefix (`https://host/prefix`):
/// `token.realm`'s when set (it is what clients are told), else the request's.
fn this_site<B>(visit: &Visit<'_>, req: &Request<B>) -> String {
    if let Some(realm) = &visit.rt.config.token.realm {
        if let Some(site) = realm.strip_suffix("/auth") {
            return site.to_owned();
        }
    }
    let scheme = if visit.https { "https" } else { "http" };
    format!(
        "{scheme}://{}{}",
        host(req),
        visit.rt.config.server.path_prefix
    )
}

pub(super) fn host<B>(req: &Request<B>) -> String {
    crate::proxy::request_host(req)
        .and_then(|h| h.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| "localhost".to_owned())
}

fn cookie<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn flow_cookie(visit: &Visit<'_>, value: &str) -> HeaderValue {
    let prefix = &visit.rt.config.server.path_prefix;
    let path = if prefix.is_empty() { "/" } else { prefix };
    let secure = if visit.https { "; Secure" } else { "" };
    // Lax: the provider's answer is a top-level GET from its site, which carries it.
    let text = format!(
        "{FLOW_COOKIE}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        crate::auth::idp::FLOW_LIFETIME.as_secs()
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Begins a sign-in: a flow kept in the store, the browser's cookie, off to the provider.
async fn start(
    visit: &Visit<'_>,
    req: &Request<Incoming>,
    provider: &Arc<Provider>,
) -> Response<Body> {
    let browser = cookie(req, FLOW_COOKIE).unwrap_or_else(crate::auth::idp::random);
    let redirect_uri = match (&provider.settings.redirect_url, &provider.settings.kind) {
        (Some(url), _) => Some(url.clone()),
        // GitHub sends the browser to the app's registered callback.
        (None, Kind::Github { .. }) => None,
        (None, _) => Some(format!("{}{}", this_site(visit, req), provider.route())),
    };
    let flow = Flow::new(provider.backend(), &browser, redirect_uri);
    if let Err(e) = flow.save(&visit.rt.state).await {
        tracing::error!("{}: a sign-in could not be stored: {e}", provider.backend());
        return failed(visit, provider, StatusCode::SERVICE_UNAVAILABLE, "Signing in is not possible right now (regate cannot store the sign-in). Try again later.".to_owned());
    }
    match provider.authorize_url(&flow).await {
        Ok(url) => {
            let mut resp = page::see_other(&url);
            resp.headers_mut()
                .append(SET_COOKIE, flow_cookie(visit, &browser));
            resp
        }
        Err(e) => {
            tracing::warn!(section = %provider.backend(), "a sign-in could not begin: {e}");
            failure(visit, provider, &e)
        }
    }
}

/// The provider's answer: checked, then a credential and a session, or a page that says
/// why not.
async fn callback(
    visit: &Visit<'_>,
    req: &Request<Incoming>,
    provider: &Arc<Provider>,
    query: &form::Form,
) -> Response<Body> {
    let label = provider.label();
    let refuse = |status, message: String| {
        tracing::info!(
            target: "regate::audit",
            client = %visit.client_ip,
            backend = %provider.backend(),
            outcome = "refused",
            reason = %message,
            "identity-provider sign-in"
        );
        failed(visit, provider, status, message)
    };
    let Some(state) = query.get("state").filter(|s| !s.is_empty()) else {
        return refuse(StatusCode::BAD_REQUEST, format!("This answer from {label} carries no `state`, so it cannot be matched to a sign-in begun here. Sign in again."));
    };
    let flow = match Flow::take(&visit.rt.state, state).await {
        Ok(Taken::Found(flow)) if flow.section == provider.backend().section() => flow,
        Ok(Taken::Used) => {
            return refuse(StatusCode::BAD_REQUEST, format!("This sign-in was finished already: each answer from {label} works once. Sign in again for a new password."))
        }
        Ok(_) => {
            return refuse(StatusCode::BAD_REQUEST, "This sign-in is not one begun here, or it is older than ten minutes (the state does not match). Sign in again.".to_owned())
        }
        Err(e) => {
            tracing::error!("{}: the sign-in store cannot be read: {e}", provider.backend());
            return failed(visit, provider, StatusCode::SERVICE_UNAVAILABLE, "Signing in is not possible right now. Try again later.".to_owned());
        }
    };
    if !flow.is_from(cookie(req, FLOW_COOKIE).as_deref()) {
        return refuse(StatusCode::BAD_REQUEST, "This sign-in was begun in another browser (or this browser did not keep regate's cookie). Sign in again from this browser.".to_owned());
    }
    if let Some(error) = query.get("error") {
        let detail = query
            .get("error_description")
            .filter(|d| !d.is_empty())
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        return refuse(
            StatusCode::FORBIDDEN,
            format!("{label} did not sign you in ({error}{detail}). No password was made."),
        );
    }
    let Some(code) = query.get("code").filter(|c| !c.is_empty()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("This answer from {label} carries no code. Sign in again."),
        );
    };
    let signed = match provider.finish(code, &flow).await {
        Ok(signed) => signed,
        Err(e) => {
            tracing::info!(
                target: "regate::audit",
                client = %visit.client_ip,
                backend = %provider.backend(),
                outcome = "refused",
                reason = %e,
                "identity-provider sign-in"
            );
            return failure(visit, provider, &e);
        }
    };
    let identity = Identity {
        account: signed.record.account.clone(),
        labels: signed.record.labels.clone(),
        acl: None,
        backend: provider.backend(),
    };
    let name = format!(
        "signed in {} from {}",
        crate::auth::idp::when(crate::auth::idp::now()),
        browser_name(req)
    );
    let credentials = Credentials::new(visit.rt.state.clone());
    let (secret, credential) = match credentials.issue(&identity, &name, None).await {
        Ok(issued) => issued,
        Err(e) => {
            tracing::error!(
                "{}: a credential could not be stored: {e}",
                provider.backend()
            );
            return failed(visit, provider, StatusCode::SERVICE_UNAVAILABLE, "Signing in is not possible right now (regate cannot store the password). Try again later.".to_owned());
        }
    };
    tracing::info!(
        target: "regate::audit",
        client = %visit.client_ip,
        account = %identity.account,
        backend = %provider.backend(),
        credential = %credential.id,
        outcome = "signed_in",
        "identity-provider sign-in"
    );
    // The pages too: the user lands signed in.
    let mut session = None;
    if visit.rt.config.ui.enabled {
        match session::begin(visit.rt, &identity).await {
            Ok(s) => {
                remember_shown(visit, &s, &credential.id).await;
                session = Some(s);
            }
            Err(e) => tracing::error!("a session could not be stored: {e}"),
        }
    }
    let shell = Shell {
        account: session.as_ref().map(|s| s.account.clone()),
        csrf: session.as_ref().map(|s| s.csrf.clone()).unwrap_or_default(),
        ..visit.shell()
    };
    let mut resp = password_page(
        visit,
        &registry_name(provider, req),
        provider,
        shell,
        &identity,
        Shown::AtSignIn(secret.expose(), &credential),
        None,
    )
    .await;
    if let Some(s) = &session {
        let ui = &visit.rt.config.ui;
        resp.headers_mut().append(
            SET_COOKIE,
            session::set_cookie(
                Some(s),
                &visit.rt.config.server.path_prefix,
                visit.https,
                ui.session_max,
            ),
        );
    }
    resp
}

/// The store key that names the credential a session showed at sign-in.
pub(super) fn shown_key(session: &Session) -> String {
    format!("idp:shown:{}", crate::auth::idp::digest(&session.id))
}

async fn remember_shown(visit: &Visit<'_>, session: &Session, id: &str) {
    let ttl = visit.rt.config.ui.session_max + Duration::from_secs(60);
    let _ = visit
        .rt
        .state
        .put(&shown_key(session), id.as_bytes().to_vec(), Some(ttl))
        .await;
}

/// Signing out revokes the password the sign-in showed (any sign-out: this page's, or
/// the pages' own). Credentials made on purpose ("another password") stay.
pub async fn on_sign_out(rt: &crate::runtime::Runtime, session: &Session) {
    let key = shown_key(session);
    let Ok(Some(id)) = rt.state.get(&key).await else {
        return;
    };
    let _ = rt.state.delete(&key).await;
    let id = String::from_utf8_lossy(&id).into_owned();
    let credentials = Credentials::new(rt.state.clone());
    if let Ok(true) = credentials.revoke(&session.account, &id).await {
        tracing::info!(
            target: "regate::audit",
            account = %session.account,
            credential = %id,
            "credential revoked at sign-out"
        );
    }
    if let Some(p) = rt
        .logins
        .providers()
        .iter()
        .find(|p| p.backend().section() == session.backend)
    {
        forget_if_unused(&credentials, p, &session.account).await;
    }
}

/// The provider's tokens go with the account's last credential from it.
async fn forget_if_unused(credentials: &Credentials, provider: &Provider, account: &str) {
    let section = provider.backend().section();
    if let Ok(list) = credentials.list(account).await {
        if !list.iter().any(|c| c.source == section) {
            provider.forget(account).await;
        }
    }
}

/// The credentials page's forms: revoke one, make another, sign out.
async fn manage(
    visit: &Visit<'_>,
    req: Request<Incoming>,
    provider: &Arc<Provider>,
) -> Result<Response<Body>, Problem> {
    let label = provider.label();
    let Some(session) = &visit.session else {
        return Ok(failed(
            visit,
            provider,
            StatusCode::FORBIDDEN,
            "Your sign-in has ended. Sign in again to manage your passwords.".to_owned(),
        ));
    };
    let registry = registry_name(provider, &req);
    let form = form::read(req, Some(session)).await?;
    if session.backend != provider.backend().section() {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            format!("You signed in another way: this page manages passwords of {label} accounts."),
        ));
    }
    let credentials = Credentials::new(visit.rt.state.clone());
    let identity = session.identity();
    let account = &session.account;
    match form.get("action") {
        Some("revoke") => {
            let id = form.get("id").unwrap_or_default();
            let name = credentials
                .list(account)
                .await
                .ok()
                .and_then(|l| l.into_iter().find(|c| c.id == id))
                .map(|c| c.name);
            let done = credentials.revoke(account, id).await.unwrap_or(false);
            forget_if_unused(&credentials, provider, account).await;
            let notice = match (done, name) {
                (true, Some(name)) => {
                    tracing::info!(target: "regate::audit", account = %account, credential = %id, "credential revoked");
                    format!("Revoked “{name}”: it no longer logs in.")
                }
                _ => "That password was revoked already.".to_owned(),
            };
            Ok(password_page(
                visit,
                &registry,
                provider,
                visit.shell(),
                &identity,
                Shown::Nothing,
                Some(notice),
            )
            .await)
        }
        Some("create") => {
            let name = form
                .get("name")
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .unwrap_or("another password");
            if name.chars().count() > 64 {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "A name has at most 64 characters.",
                ));
            }
            let expires = match form.get("expires").unwrap_or("") {
                "" | "never" => None,
                days => match days.parse::<u64>() {
                    Ok(d @ 1..=3650) => Some(SystemTime::now() + Duration::from_secs(d * 86_400)),
                    _ => {
                        return Err(Problem::new(
                            StatusCode::BAD_REQUEST,
                            "Choose when the password ends from the list.",
                        ))
                    }
                },
            };
            // Only while the provider still vouches for the account.
            use crate::auth::credentials::Source;
            let labels = match provider.current(account, &identity.labels).await {
                Ok(Some(labels)) => labels,
                _ => {
                    return Ok(failed(
                        visit,
                        provider,
                        StatusCode::FORBIDDEN,
                        format!("{label} no longer vouches for {account}. Sign in again."),
                    ))
                }
            };
            let identity = Identity { labels, ..identity };
            let (secret, credential) =
                credentials
                    .issue(&identity, name, expires)
                    .await
                    .map_err(|_| {
                        Problem::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "The password could not be stored. Try again later.",
                        )
                    })?;
            tracing::info!(target: "regate::audit", account = %account, credential = %credential.id, "credential made");
            Ok(password_page(
                visit,
                &registry,
                provider,
                visit.shell(),
                &identity,
                Shown::Made(secret.expose(), &credential),
                None,
            )
            .await)
        }
        Some("signout") => {
            on_sign_out(visit.rt, session).await;
            session::end(visit.rt, session).await;
            tracing::info!(target: "regate::audit", client = %visit.client_ip, account = %account, "web sign-out");
            let page = SignedOut {
                shell: Shell {
                    account: None,
                    csrf: String::new(),
                    ..visit.shell()
                },
                provider: &label,
                again: visit.href(&provider.route()),
            };
            let mut resp = page::render(&page)?;
            resp.headers_mut().insert(
                SET_COOKIE,
                session::set_cookie(
                    None,
                    &visit.rt.config.server.path_prefix,
                    visit.https,
                    visit.rt.config.ui.session_max,
                ),
            );
            Ok(resp)
        }
        _ => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "The form could not be read.",
        )),
    }
}
