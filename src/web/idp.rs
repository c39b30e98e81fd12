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

use askama::Template;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, SET_COOKIE, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode};

use super::page::{self, Problem, Shell};
use super::{form, session, Session, Visit};
use crate::auth::credentials::{Credential, Credentials};
use crate::auth::identity::Identity;
use crate::auth::idp::{Flow, IdpError, Kind, Provider, Taken};
use crate::body::Body;

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

fn host<B>(req: &Request<B>) -> String {
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
fn shown_key(session: &Session) -> String {
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

enum Shown<'a> {
    /// The password a sign-in made (signing out revokes it).
    AtSignIn(&'a str, &'a Credential),
    /// One made on the page ("another password").
    Made(&'a str, &'a Credential),
    Nothing,
}

struct Command {
    tool: &'static str,
    line: String,
}

struct Row {
    id: String,
    name: String,
    made: String,
    ends: String,
    current: bool,
    /// Signing out revokes it.
    at_sign_out: bool,
}

#[derive(Template)]
#[template(path = "idp_password.html")]
struct PasswordPage<'a> {
    shell: Shell,
    provider: &'a str,
    action: String,
    account: &'a str,
    secret: Option<&'a str>,
    name: String,
    at_sign_in: bool,
    labels: Vec<(String, String)>,
    commands: Vec<Command>,
    validity: String,
    rows: Vec<Row>,
    notice: Option<String>,
    manage: bool,
}

#[derive(Template)]
#[template(path = "idp_failed.html")]
struct Failed<'a> {
    shell: Shell,
    provider: &'a str,
    message: &'a str,
    again: String,
}

#[derive(Template)]
#[template(path = "idp_signed_out.html")]
struct SignedOut<'a> {
    shell: Shell,
    provider: &'a str,
    again: String,
}

/// The registry's name in `docker login`: `registry_url`, else the host the browser used.
fn registry_name<B>(provider: &Provider, req: &Request<B>) -> String {
    match &provider.settings.registry_url {
        Some(url) => url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
        None => host(req),
    }
}

async fn password_page(
    visit: &Visit<'_>,
    registry: &str,
    provider: &Provider,
    shell: Shell,
    identity: &Identity,
    shown: Shown<'_>,
    notice: Option<String>,
) -> Response<Body> {
    let label = provider.label();
    let user = shell_quote(&identity.account);
    let commands = ["docker", "podman", "nerdctl"]
        .into_iter()
        .map(|tool| Command {
            tool,
            line: format!("{tool} login -u {user} {registry}"),
        })
        .collect();
    let validity = match &provider.settings.kind {
        Kind::Github { organization: Some(org), .. } => format!("regate asks GitHub again every {}: once you leave {org}, it stops working.", span(provider.settings.revalidate_after)),
        Kind::Gitlab { group: Some(g), .. } => format!("regate asks GitLab again every {}: once you leave {g}, it stops working.", span(provider.settings.revalidate_after)),
        Kind::Github { .. } | Kind::Gitlab { .. } => format!("regate asks {label} again every {}: once {label} no longer knows you, it stops working.", span(provider.settings.revalidate_after)),
        Kind::Oidc { .. } | Kind::Google { .. } => format!("regate asks {label} again whenever its access token runs out: once {label} no longer knows you, it stops working."),
    };
    let (secret, name, at_sign_in, current) = match shown {
        Shown::AtSignIn(s, c) => (Some(s), c.name.clone(), true, Some(c.id.clone())),
        Shown::Made(s, c) => (Some(s), c.name.clone(), false, Some(c.id.clone())),
        Shown::Nothing => (None, String::new(), false, None),
    };
    let section = provider.backend().section();
    let manage = !shell.csrf.is_empty();
    // The one this session's sign-out revokes.
    let goes_at_sign_out = match (&visit.session, at_sign_in) {
        (_, true) => current.clone(),
        (Some(s), false) => visit
            .rt
            .state
            .get(&shown_key(s))
            .await
            .ok()
            .flatten()
            .map(|id| String::from_utf8_lossy(&id).into_owned()),
        (None, false) => None,
    };
    let rows = Credentials::new(visit.rt.state.clone())
        .list(&identity.account)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.source == section)
        .map(|c| Row {
            current: current.as_deref() == Some(c.id.as_str()),
            at_sign_out: goes_at_sign_out.as_deref() == Some(c.id.as_str()),
            made: crate::auth::idp::when(c.created),
            ends: c.expires.map_or(
                "never (while the provider vouches)".to_owned(),
                crate::auth::idp::when,
            ),
            id: c.id,
            name: c.name,
        })
        .collect();
    let labels = identity
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), shorten(v)))
        .collect();
    let page = PasswordPage {
        shell,
        provider: &label,
        action: visit.href(&provider.route()),
        account: &identity.account,
        secret,
        name,
        at_sign_in,
        labels,
        commands,
        validity,
        rows,
        notice,
        manage,
    };
    page::render(&page).unwrap_or_else(|p| p.page(visit))
}

/// A sign-in that did not happen: what went wrong, and a way to sign in again.
fn failed(
    visit: &Visit<'_>,
    provider: &Provider,
    status: StatusCode,
    message: String,
) -> Response<Body> {
    let label = provider.label();
    let page = Failed {
        shell: visit.shell(),
        provider: &label,
        message: &message,
        again: visit.href(&provider.route()),
    };
    let mut resp = page::render(&page).unwrap_or_else(|p| p.page(visit));
    *resp.status_mut() = status;
    resp
}

/// A provider's error, said for the person at the browser.
fn failure(visit: &Visit<'_>, provider: &Provider, e: &IdpError) -> Response<Body> {
    let label = provider.label();
    let (status, message) = match e {
        IdpError::Unreachable(why) => (StatusCode::BAD_GATEWAY, format!("regate could not reach {label}: {why}. Try again later; if it keeps happening, tell the registry's administrator.")),
        IdpError::Refused(why) => (StatusCode::BAD_REQUEST, format!("{label} refused the sign-in: {why}. No password was made. Sign in again.")),
        IdpError::IdToken(why) => (StatusCode::BAD_GATEWAY, format!("{label}'s answer cannot be trusted: its id_token is not valid ({why}). No password was made. If it happens again, tell the registry's administrator.")),
        IdpError::NotAllowed(why) => (StatusCode::FORBIDDEN, format!("Signed in at {label}, but {why}, so this registry does not let you in. No password was made.")),
        IdpError::Misconfigured(why) => (StatusCode::BAD_GATEWAY, format!("regate and {label} do not agree: {why}. Tell the registry's administrator.")),
    };
    failed(visit, provider, status, message)
}

/// A label's values for the page: the first dozen, and how many more (a member of a
/// hundred teams does not need to read them all).
fn shorten(values: &[String]) -> String {
    const SHOWN: usize = 12;
    match values.len() {
        n if n <= SHOWN => values.join(", "),
        n => format!("{}, and {} more", values[..SHOWN].join(", "), n - SHOWN),
    }
}

/// An account name as one shell word.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._-+=:,/".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A duration for people: `1 hour`, `30 minutes`, `45 seconds`.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s >= 3600 && s.is_multiple_of(3600) {
        (s / 3600, "hour")
    } else if s >= 60 && s.is_multiple_of(60) {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// "Chrome on Linux", "Firefox on macOS", ...: what a credential made at sign-in is called.
fn browser_name<B>(req: &Request<B>) -> String {
    let ua = req
        .headers()
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chromium/", "Chromium"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map_or("a browser", |(_, name)| name);
    let system = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| format!(" on {name}"))
    .unwrap_or_default();
    format!("{browser}{system}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_words() {
        let req = |ua: &str| Request::builder().header(USER_AGENT, ua).body(()).unwrap();
        assert_eq!(
            browser_name(&req("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0 Safari/537.36")),
            "Chrome on Linux"
        );
        assert_eq!(
            browser_name(&req("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:131.0) Gecko/20100101 Firefox/131.0")),
            "Firefox on macOS"
        );
        assert_eq!(browser_name(&Request::new(())), "a browser");
        assert_eq!(shell_quote("alice@example.com"), "alice@example.com");
        assert_eq!(shell_quote("o'brien x"), r"'o'\''brien x'");
        assert_eq!(span(Duration::from_secs(3600)), "1 hour");
        assert_eq!(span(Duration::from_secs(90)), "90 seconds");
        assert_eq!(span(Duration::from_secs(120)), "2 minutes");
    }
}
