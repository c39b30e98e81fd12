//! regate's web pages, served beside the registry API under `server.path_prefix`: sign-in
//! (any login backend regate has, through the same throttled path `/auth` takes), and the
//! pages that build on it. Server-rendered HTML from templates compiled into the binary
//! (askama), a stylesheet and a little plain JavaScript served by regate itself: no build
//! step, no CDN, nothing fetched from elsewhere.
//!
//! ```text
//! Route::Page(path) -> session (cookie -> state store) -> page handler -> template
//!   every page: CSP without inline script, frame-ancestors none, nosniff, no-store
//!   every form that changes state: the session's CSRF token, and a same-origin request
//! ```

mod assets;
mod form;
mod idp;
mod page;
mod session;
mod signin;

use std::net::IpAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::runtime::Runtime;

pub use page::{Problem, Shell};
pub use session::Session;

/// The `ui` section, validated (`config/ui.rs` reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    /// Idle this long, a sign-in ends.
    pub session_idle: Duration,
    /// A sign-in ends this long after it began, whatever happens.
    pub session_max: Duration,
    /// The name the pages show.
    pub title: String,
}

/// What a page handler knows of the request.
pub struct Visit<'a> {
    pub rt: &'a Runtime,
    pub client_ip: IpAddr,
    pub https: bool,
    /// The signed-in browser's session, if any.
    pub session: Option<Session>,
}

impl Visit<'_> {
    /// A URL path of regate's own pages: `path` under the prefix.
    pub fn href(&self, path: &str) -> String {
        format!("{}{path}", self.rt.config.server.path_prefix)
    }

    /// The frame every page shares: title, links, who is signed in.
    pub fn shell(&self) -> Shell {
        Shell {
            title: self.rt.config.ui.title.clone(),
            prefix: self.rt.config.server.path_prefix.clone(),
            account: self.session.as_ref().map(|s| s.account.clone()),
            csrf: self
                .session
                .as_ref()
                .map(|s| s.csrf.clone())
                .unwrap_or_default(),
        }
    }
}

/// Answers a page (`path` is the part after the prefix).
pub async fn handle(
    rt: &Runtime,
    req: Request<Incoming>,
    path: &str,
    client_ip: IpAddr,
    https: bool,
) -> Response<Body> {
    // docker_auth's sign-in routes (and the files their pages use) work with the pages
    // off too: they are how a provider's users get a password.
    let provider_page = rt
        .logins
        .providers()
        .iter()
        .any(|p| p.route() == path || path.starts_with("/static/"));
    if !rt.config.ui.enabled && !provider_page {
        return crate::error::not_found();
    }
    if let Some(asset) = path.strip_prefix("/static/") {
        return assets::serve(asset, &req);
    }
    let session = session::load(rt, &req).await;
    let visit = Visit {
        rt,
        client_ip,
        https,
        session,
    };
    let answer = match (req.method().clone(), path) {
        (Method::GET | Method::HEAD, "/") => home(&visit),
        (Method::GET | Method::HEAD, "/ui/login") => Ok(signin::form(&visit, &req)),
        (Method::POST, "/ui/login") => signin::submit(&visit, req).await,
        (Method::POST, "/ui/logout") => signin::sign_out(&visit, req).await,
        (_, "/" | "/ui/login" | "/ui/logout") => Err(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "This page does not take that kind of request.",
        )),
        (_, p) if idp::provider(&visit, p).is_some() => {
            let provider = idp::provider(&visit, p).cloned().expect("matched above");
            idp::handle(&visit, req, &provider).await
        }
        _ => Err(Problem::not_found()),
    };
    let resp = answer.unwrap_or_else(|problem| problem.page(&visit));
    page::secure(resp, https)
}

/// The home page: who is signed in, or the way to sign in.
fn home(visit: &Visit<'_>) -> Result<Response<Body>, Problem> {
    if visit.session.is_none() {
        return Ok(page::see_other(&visit.href("/ui/login")));
    }
    page::render(&page::Home {
        shell: visit.shell(),
    })
}

/// Whether a request is a browser asking for a page (for `/`, which registry:2 answers
/// with `{}` for load balancers).
pub fn wants_html<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}
