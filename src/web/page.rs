//! Turning a template into a response, the headers every page carries, and the page a
//! problem gets (a clear sentence, never a stack or a config detail).

use askama::Template;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use hyper::{Response, StatusCode};

use super::Visit;
use crate::body::{self, Body};

/// What every page's frame shows.
#[derive(Debug, Clone)]
pub struct Shell {
    pub title: String,
    /// `server.path_prefix`, for links.
    pub prefix: String,
    /// Who is signed in.
    pub account: Option<String>,
    /// The Activity page is theirs to see.
    pub admin: bool,
    /// Not signed in, and the anonymous account may pull: browsing as a guest.
    pub guest: bool,
    /// The section of the menu this page belongs to (`repos`, `access`, ...).
    pub current: &'static str,
    /// The session's CSRF token, for the sign-out form in the frame.
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "problem.html")]
struct ProblemPage<'a> {
    shell: Shell,
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// A page that could not be served as asked: its status and one sentence for the reader.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub message: String,
}

impl Problem {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Problem {
        Problem {
            status,
            message: message.into(),
        }
    }

    pub fn not_found() -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "There is no such page.")
    }

    /// A repository that is not there, or that the reader may not pull: one answer for
    /// both, so a page never tells which names exist beyond what the reader may see.
    pub fn no_repository(name: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            format!("There is no repository \u{201c}{name}\u{201d} that you may pull."),
        )
    }

    /// A form that did not come from this session's page (CSRF), or a session that ended.
    pub fn stale_form() -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "This form is out of date or did not come from this site. Reload the page and try again.",
        )
    }

    pub fn page(self, visit: &Visit<'_>) -> Response<Body> {
        let page = ProblemPage {
            shell: visit.shell(),
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or(""),
            message: &self.message,
        };
        let mut resp = html(page.render().unwrap_or_else(|_| self.message.clone()));
        *resp.status_mut() = self.status;
        resp
    }
}

/// A template rendered into a 200 page.
pub fn render(template: &impl Template) -> Result<Response<Body>, Problem> {
    match template.render() {
        Ok(text) => Ok(html(text)),
        Err(e) => {
            tracing::error!("a page template failed: {e}");
            Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "This page could not be shown.",
            ))
        }
    }
}

fn html(text: String) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// 303 to `location` (after a form: the browser GETs it).
pub fn see_other(location: &str) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

/// The headers every page carries: scripts and styles from this site only (no inline
/// script), never in a frame, no guessing of types, no caching of a user's pages, the
/// referrer kept to this site.
pub fn secure(mut resp: Response<Body>, https: bool) -> Response<Body> {
    let headers = resp.headers_mut();
    let set = |headers: &mut hyper::HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    };
    set(
        headers,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, "x-frame-options", "DENY");
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "referrer-policy", "same-origin");
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if https {
        set(
            headers,
            "strict-transport-security",
            "max-age=63072000; includeSubDomains",
        );
    }
    resp
}
