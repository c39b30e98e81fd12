//! Signing in with a password and signing out. A password goes through the same path a
//! token request takes (`authorize::identify`: the login backends in order, the throttle,
//! the audit line), so the pages are no softer door than `/auth`.

use askama::Template;
use hyper::body::Incoming;
use hyper::header::SET_COOKIE;
use hyper::{Request, Response, StatusCode};

use super::page::{self, Problem, Shell};
use super::{form, session, Visit};
use crate::auth::authorize::{identify, Login, Refused};
use crate::auth::identity::AuthnError;
use crate::auth::Secret;
use crate::body::Body;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    shell: Shell,
    next: &'a str,
    username: &'a str,
    error: Option<&'a str>,
    /// The browser's session ended (it sent a cookie that no longer signs anyone in).
    ended: bool,
    /// "Sign in with …", one per identity provider.
    providers: Vec<super::idp::Link>,
}

/// Where to go after signing in: a path of this site's pages only (never another host).
fn safe_next(visit: &Visit<'_>, next: Option<&str>) -> String {
    let home = visit.href("/");
    match next {
        Some(n) if n.starts_with(&home) && !n.starts_with("//") && !n.contains('\\') => {
            n.to_owned()
        }
        _ => home,
    }
}

fn login_shell(visit: &Visit<'_>) -> Shell {
    let mut shell = visit.shell();
    shell.current = "login";
    shell
}

/// The sign-in form.
pub fn form<B>(visit: &Visit<'_>, req: &Request<B>) -> Response<Body> {
    let query = req.uri().query().and_then(form::Form::parse);
    let next = query
        .as_ref()
        .and_then(|f| f.get("next").map(str::to_owned));
    let next = safe_next(visit, next.as_deref());
    let page = LoginPage {
        shell: login_shell(visit),
        next: &next,
        username: "",
        error: None,
        ended: visit.ended || query.is_some_and(|f| f.get("ended") == Some("1")),
        providers: super::idp::links(visit),
    };
    page::render(&page).unwrap_or_else(|p| p.page(visit))
}

/// The form posted: signed in (a new session), or the form again with what went wrong.
pub async fn submit(visit: &Visit<'_>, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    // No session yet: the CSRF token is not there to check; the same-site check is.
    let form = form::read(req, None).await?;
    let username = form.get("username").unwrap_or("").trim();
    let password = Secret::new(form.get("password").unwrap_or(""));
    let next = safe_next(visit, form.get("next"));
    let again = |status: StatusCode, error: &str| {
        let page = LoginPage {
            shell: login_shell(visit),
            next: &next,
            username,
            error: Some(error),
            ended: false,
            providers: super::idp::links(visit),
        };
        let mut resp = page::render(&page).unwrap_or_else(|p| p.page(visit));
        *resp.status_mut() = status;
        resp
    };
    if username.is_empty() || password.expose().is_empty() {
        return Ok(again(
            StatusCode::BAD_REQUEST,
            "Give your user name and password.",
        ));
    }
    let login = Login::Password {
        user: username.to_owned(),
        password,
    };
    let identity = match identify(visit.rt, &login, visit.client_ip).await {
        Ok(identity) => identity,
        Err(Refused::Throttled(_)) | Err(Refused::Authn(AuthnError::Busy)) => {
            return Ok(again(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-ins. Wait a minute and try again.",
            ))
        }
        Err(Refused::Authn(e)) if e.is_unavailable() => {
            let says = match e {
                AuthnError::ProviderUnavailable => {
                    "The identity provider does not answer. Try again later."
                }
                _ => "The user directory does not answer. Try again later.",
            };
            return Ok(again(StatusCode::SERVICE_UNAVAILABLE, says));
        }
        Err(Refused::Authz(_)) => {
            return Ok(again(
                StatusCode::SERVICE_UNAVAILABLE,
                "The user directory does not answer. Try again later.",
            ))
        }
        Err(Refused::Authn(AuthnError::Expired)) => {
            return Ok(again(StatusCode::UNAUTHORIZED, "This account has expired."))
        }
        Err(Refused::Authn(_)) => {
            return Ok(again(
                StatusCode::UNAUTHORIZED,
                "The user name or password is not right.",
            ))
        }
    };
    if identity.acl.is_some() {
        return Ok(again(
            StatusCode::FORBIDDEN,
            "Robot accounts are for CI, not for the web pages. Sign in as a person.",
        ));
    }
    let started = session::begin(visit.rt, &identity).await.map_err(|e| {
        tracing::error!("a session could not be stored: {e}");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Signing in is not possible right now. Try again later.",
        )
    })?;
    tracing::info!(
        target: "regate::audit",
        client = %visit.client_ip,
        account = %identity.account,
        backend = %identity.backend,
        "web sign-in"
    );
    let mut resp = page::see_other(&next);
    let ui = &visit.rt.config.ui;
    resp.headers_mut().insert(
        SET_COOKIE,
        session::set_cookie(
            Some(&started),
            &visit.rt.config.server.path_prefix,
            visit.https,
            ui.session_max,
        ),
    );
    Ok(resp)
}

/// Signs out: the session ends in the store (every replica), the cookie goes.
pub async fn sign_out(
    visit: &Visit<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    let Some(current) = &visit.session else {
        return Ok(page::see_other(&visit.href("/ui/login")));
    };
    form::read(req, Some(current)).await?;
    // A provider's sign-in: the password it showed goes too.
    super::idp::on_sign_out(visit.rt, current).await;
    session::end(visit.rt, current).await;
    tracing::info!(
        target: "regate::audit",
        client = %visit.client_ip,
        account = %current.account,
        "web sign-out"
    );
    let mut resp = page::see_other(&visit.href("/ui/login"));
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
