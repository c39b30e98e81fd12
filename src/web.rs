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
//!   what a page shows of the registry: read with what `decide` grants the reader
//! ```

mod access;
mod activity;
mod assets;
mod catalog;
mod credentials;
mod delete;
mod form;
mod format;
mod idp;
mod image;
pub mod journal;
mod manifest;
mod page;
mod registry;
mod repos;
mod session;
mod signin;
mod tags;

use std::net::IpAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::auth::identity::Identity;
use crate::body::Body;
use crate::proxy::Upstream;
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

/// What the pages keep across requests and reloads: the registry client (the gateway's
/// own, sharing its connections) and what they cache of the registry.
pub struct Pages {
    registry: registry::Registry,
    catalog: catalog::Catalog,
}

impl Pages {
    pub fn new(upstream: Upstream) -> Pages {
        Pages {
            registry: registry::Registry::new(upstream),
            catalog: catalog::Catalog::default(),
        }
    }
}

/// What a page handler knows of the request.
pub struct Visit<'a> {
    pub rt: &'a Runtime,
    pub pages: &'a Pages,
    pub client_ip: IpAddr,
    pub https: bool,
    /// The signed-in browser's session, if any.
    pub session: Option<Session>,
    /// A session cookie came, but its session has ended (idle, too old, signed out).
    pub ended: bool,
    /// The ACL lets the session's account see the Activity page.
    pub admin: bool,
    /// The host the browser asked for (`registry.example.com:5000`): what `docker`
    /// commands name.
    pub host: String,
    /// The path and query asked for, to come back to after signing in.
    pub target: String,
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
            admin: self.admin,
            guest: self.session.is_none() && self.rt.users.anonymous().is_ok(),
            current: "",
            csrf: self
                .session
                .as_ref()
                .map(|s| s.csrf.clone())
                .unwrap_or_default(),
        }
    }
}

impl Visit<'_> {
    /// Who reads the registry on this visit: the signed-in account, or the anonymous
    /// `""` account when the config allows anonymous pulls (a guest); `None`: nobody.
    /// A browser whose session just ended is asked to sign in again, not quietly shown
    /// the guest's view.
    pub fn reader(&self) -> Option<Identity> {
        match &self.session {
            Some(s) => Some(s.identity()),
            None if self.ended => None,
            None => self.rt.users.anonymous().ok(),
        }
    }

    /// To the sign-in page, and back here after it. A session that ended loses its
    /// cookie here, so the sign-in page (and guest browsing) start afresh.
    pub fn sign_in_first(&self) -> Response<Body> {
        let next = url_encode(&self.target);
        let ended = if self.ended { "&ended=1" } else { "" };
        let mut resp = page::see_other(&self.href(&format!("/ui/login?next={next}{ended}")));
        if self.ended {
            resp.headers_mut().insert(
                hyper::header::SET_COOKIE,
                session::set_cookie(
                    None,
                    &self.rt.config.server.path_prefix,
                    self.https,
                    self.rt.config.ui.session_max,
                ),
            );
        }
        resp
    }

    /// The session a form needs; without one, nothing is changed.
    pub fn session_for_form(&self) -> Result<&Session, Problem> {
        self.session.as_ref().ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "Your sign-in has ended, so nothing was changed. Sign in again and repeat what you were doing.",
            )
        })
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Answers a page (`path` is the part after the prefix).
pub async fn handle(
    rt: &Runtime,
    pages: &Pages,
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
    let ended = session.is_none() && session::cookie_sent(&req);
    let admin = match &session {
        Some(s) => activity::is_admin(rt, &s.identity(), client_ip).await,
        None => false,
    };
    let host = crate::proxy::request_host(&req)
        .and_then(|h| h.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| "REGISTRY".to_owned());
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let visit = Visit {
        rt,
        pages,
        client_ip,
        https,
        session,
        ended,
        admin,
        host,
        target,
    };
    let query = req.uri().query().unwrap_or("").to_owned();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let answer = match (req.method().clone(), path) {
        (Method::GET | Method::HEAD, "/") => home(&visit, &query).await,
        (Method::GET | Method::HEAD, "/ui/login") => Ok(signin::form(&visit, &req)),
        (Method::POST, "/ui/login") => signin::submit(&visit, req).await,
        (Method::POST, "/ui/logout") => signin::sign_out(&visit, req).await,
        (_, "/ui/repos") if get => repos::page(&visit, &query).await,
        (_, p) if get && p.starts_with("/ui/repo/") => {
            let reference = &p["/ui/repo/".len()..];
            match reference.split_once(['@', ':']) {
                Some(_) => image::page(&visit, reference).await,
                None => tags::page(&visit, reference, &query).await,
            }
        }
        (_, "/ui/delete") if get => delete::confirm(&visit, &query).await,
        (Method::POST, "/ui/delete") => delete::submit(&visit, req).await,
        (_, "/ui/access") if get => access::page(&visit, &query).await,
        (_, "/ui/credentials") if get => credentials::page(&visit).await,
        (Method::POST, "/ui/credentials") => credentials::create(&visit, req).await,
        (Method::POST, "/ui/credentials/revoke") => credentials::revoke(&visit, req).await,
        (_, "/ui/ca.crt") if get => credentials::ca_certificate(&visit),
        (_, "/ui/activity") if get => activity::page(&visit, &query).await,
        (
            _,
            "/"
            | "/ui/login"
            | "/ui/logout"
            | "/ui/repos"
            | "/ui/delete"
            | "/ui/access"
            | "/ui/credentials"
            | "/ui/credentials/revoke"
            | "/ui/ca.crt"
            | "/ui/activity",
        ) => Err(Problem::new(
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

/// The home page: a signed-in user's repositories; anyone else is asked to sign in.
async fn home(visit: &Visit<'_>, query: &str) -> Result<Response<Body>, Problem> {
    match (&visit.session, visit.ended) {
        (Some(_), _) => repos::page(visit, query).await,
        (None, true) => Ok(visit.sign_in_first()),
        (None, false) => Ok(page::see_other(&visit.href("/ui/login"))),
    }
}

/// Whether a request is a browser asking for a page (for `/`, which registry:2 answers
/// with `{}` for load balancers).
pub fn wants_html<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}
