//! `(method, path, query)` -> what the request is and the access it needs.
//!
//! This mirrors registry:2's own router (distribution v2.8 `registry/api/v2/routes.go`,
//! gorilla/mux with `StrictSlash` and path cleaning) and its `appendAccessRecords`
//! (`registry/handlers/app.go`), so the scope regate checks is exactly the scope the
//! registry serves. The path is percent-decoded first, as Go's `URL.Path` is, and the
//! request forwarded upstream carries the decoded, validated path: what was checked is what
//! is served.

use std::sync::LazyLock;

use hyper::Method;
use regex::Regex;

use crate::auth::scope::Scope;

/// Longest repository name registry:2 accepts (`reference.NameTotalLengthMax`).
pub const NAME_MAX: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/` itself: any valid token passes.
    Base,
    /// `/v2/_catalog`: needs `registry:catalog:*`.
    Catalog,
    Repository {
        name: String,
        kind: RepoKind,
    },
    /// The token endpoint (`/auth`, and `/auth/token` for registry's `autoredirect`).
    Token,
    Healthz,
    Readyz,
    Metrics,
    /// `/.well-known/jwks.json`: the token signing key, for registry v3's `jwks`.
    Jwks,
    /// `GET /`: registry:2 answers 200 here for load balancers (and a browser gets the
    /// web pages, with no `path_prefix`).
    Root,
    /// regate's web pages and sign-in routes, under `server.path_prefix`: the path after
    /// the prefix (`/`, `/ui/login`, `/oidc_auth`).
    Page(String),
    /// The admin API under `server.path_prefix`: the path after `/api` (`/v1/users`).
    Api(String),
    /// Answer 301 with this `Location` (path normalisation, `/v2` -> `/v2/`).
    Redirect(String),
    /// Routed by registry:2 but not a name regate lets through (domain part, upper case,
    /// too long): `NAME_INVALID`, never forwarded.
    InvalidName(String),
    /// Not a route: registry:2's plain 404.
    NotFound,
    /// A path whose percent-encoding Go would refuse: 400.
    BadRequest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoKind {
    Tags,
    Manifest(String),
    Blob(String),
    /// `POST /v2/<name>/blobs/uploads/`.
    UploadStart,
    /// `/v2/<name>/blobs/uploads/<uuid>`.
    Upload(String),
}

/// A classified request: the route, and the path to forward (decoded and clean).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub route: Route,
    pub path: String,
}

static STRICT_NAME: LazyLock<Regex> = LazyLock::new(|| {
    let component = r"[a-z0-9]+(?:(?:[._]|__|-*)[a-z0-9]+)*";
    Regex::new(&format!("^{component}(?:/{component})*$")).expect("static regex")
});
/// distribution 2.8 `reference.NameRegexp`: what its router still routes (a domain part
/// and an upper-case first component included).
static ROUTED_NAME: LazyLock<Regex> = LazyLock::new(|| {
    let component = r"[a-z0-9]+(?:(?:[._]|__|-*)[a-z0-9]+)*";
    let domain_component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain = format!(r"{domain_component}(?:\.{domain_component})*(?::[0-9]+)?");
    Regex::new(&format!("^(?:{domain}/)?{component}(?:/{component})*$")).expect("static regex")
});
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("static regex"));
static DIGEST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
        .expect("static regex")
});
static UUID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_.=-]+$").expect("static regex"));

/// Whether `name` is a repository name regate serves (lower-case path components, no
/// domain, at most 255 bytes).
pub fn valid_name(name: &str) -> bool {
    name.len() <= NAME_MAX && STRICT_NAME.is_match(name)
}

pub fn classify(raw_path: &str, query: Option<&str>) -> Classified {
    classify_in(raw_path, query, "")
}

/// As [`classify`], with regate's own routes under `prefix` (docker_auth's `path_prefix`,
/// without a trailing `/`; `""`: none). The registry's routes are where registry:2 has
/// them whatever the prefix.
pub fn classify_in(raw_path: &str, query: Option<&str>, prefix: &str) -> Classified {
    let Some(path) = crate::percent::decode(raw_path) else {
        return Classified {
            route: Route::BadRequest,
            path: raw_path.to_owned(),
        };
    };
    // gorilla/mux cleans the path and redirects before it routes.
    let clean = clean_path(&path);
    if clean != path {
        return Classified {
            route: Route::Redirect(with_query(&clean, query)),
            path,
        };
    }
    let route = match own_route(&path, prefix) {
        Some(route) => route,
        None => route_of(&path, query),
    };
    Classified { route, path }
}

fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    }
}

/// The pages that are regate's own, under the prefix: the token endpoint (docker_auth's
/// `/auth` and `/auth/token`), docker_auth's sign-in routes, the web pages and their files.
fn own_route(path: &str, prefix: &str) -> Option<Route> {
    let rest = path.strip_prefix(prefix)?;
    match rest {
        "/auth" | "/auth/token" => Some(Route::Token),
        // With a prefix, its own root is the pages' home (`/` stays registry:2's).
        "/" if !prefix.is_empty() => Some(Route::Page("/".to_owned())),
        "" if !prefix.is_empty() => Some(Route::Redirect(format!("{prefix}/"))),
        "/google_auth" | "/github_auth" | "/oidc_auth" | "/gitlab_auth" => {
            Some(Route::Page(rest.to_owned()))
        }
        _ if rest.starts_with("/api/") => Some(Route::Api(rest["/api".len()..].to_owned())),
        _ if rest.starts_with("/ui/") || rest.starts_with("/static/") => {
            Some(Route::Page(rest.to_owned()))
        }
        _ => None,
    }
}

fn route_of(path: &str, query: Option<&str>) -> Route {
    match path {
        "/" => return Route::Root,
        "/healthz" => return Route::Healthz,
        "/readyz" => return Route::Readyz,
        "/metrics" => return Route::Metrics,
        "/.well-known/jwks.json" => return Route::Jwks,
        "/v2" => return Route::Redirect("/v2/".to_owned()),
        "/v2/" => return Route::Base,
        "/v2/_catalog" => return Route::Catalog,
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Route::NotFound;
    };
    if let Some(route) = repository_route(rest) {
        return route;
    }
    // StrictSlash: the same route with the other trailing-slash form redirects.
    let toggled = match rest.strip_suffix('/') {
        Some(r) => r.to_owned(),
        None => format!("{rest}/"),
    };
    let toggled_is_route = toggled == "_catalog" || repository_route(&toggled).is_some();
    if toggled_is_route {
        return Route::Redirect(with_query(&format!("/v2/{toggled}"), query));
    }
    Route::NotFound
}

/// The repository routes in registry:2's order. The name is everything before a fixed
/// suffix, which is what the router's greedy name pattern captures
/// (`/v2/a/manifests/b/manifests/c` has name `a/manifests/b`).
fn repository_route(rest: &str) -> Option<Route> {
    let (name, kind) = if let Some(name) = rest.strip_suffix("/tags/list") {
        (name, RepoKind::Tags)
    } else if let Some((name, reference)) =
        split_last(rest, "/manifests/").filter(|(_, r)| TAG.is_match(r) || DIGEST.is_match(r))
    {
        (name, RepoKind::Manifest(reference.to_owned()))
    } else if let Some((name, digest)) =
        split_last(rest, "/blobs/").filter(|(_, d)| DIGEST.is_match(d))
    {
        (name, RepoKind::Blob(digest.to_owned()))
    } else if let Some(name) = rest.strip_suffix("/blobs/uploads/") {
        (name, RepoKind::UploadStart)
    } else if let Some((name, uuid)) =
        split_last(rest, "/blobs/uploads/").filter(|(_, u)| UUID.is_match(u))
    {
        (name, RepoKind::Upload(uuid.to_owned()))
    } else {
        return None;
    };
    if valid_name(name) {
        return Some(Route::Repository {
            name: name.to_owned(),
            kind,
        });
    }
    if ROUTED_NAME.is_match(name) {
        return Some(Route::InvalidName(name.to_owned()));
    }
    None
}

fn split_last<'a>(s: &'a str, sep: &str) -> Option<(&'a str, &'a str)> {
    let i = s.rfind(sep)?;
    Some((&s[..i], &s[i + sep.len()..]))
}

impl Route {
    /// The access records registry:2 requires for this request (`appendAccessRecords`),
    /// or `None` where the route needs no token at all.
    pub fn required_access(&self, method: &Method, from: Option<&str>) -> Option<Vec<Scope>> {
        match self {
            Route::Base => Some(Vec::new()),
            Route::Catalog => Some(vec![Scope::new("registry", "catalog", &["*"])]),
            Route::Repository { name, .. } => {
                let actions: &[&str] = match *method {
                    Method::GET | Method::HEAD => &["pull"],
                    Method::POST | Method::PUT | Method::PATCH => &["pull", "push"],
                    Method::DELETE => &["delete"],
                    _ => &[],
                };
                let mut scopes = Vec::with_capacity(2);
                if !actions.is_empty() {
                    scopes.push(Scope::new("repository", name, actions));
                }
                // registry:2 asks for pull on `from` whatever the method and route.
                if let Some(from) = from.filter(|f| !f.is_empty()) {
                    scopes.push(Scope::new("repository", from, &["pull"]));
                }
                Some(scopes)
            }
            _ => None,
        }
    }

    /// A short, fixed label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Repository { kind, .. } => match kind {
                RepoKind::Tags => "tags",
                RepoKind::Manifest(_) => "manifest",
                RepoKind::Blob(_) => "blob",
                RepoKind::UploadStart | RepoKind::Upload(_) => "upload",
            },
            Route::Token => "token",
            Route::Healthz | Route::Readyz => "health",
            Route::Metrics => "metrics",
            Route::Jwks => "jwks",
            Route::Root => "root",
            Route::Page(_) => "page",
            Route::Api(_) => "api",
            Route::Redirect(_) => "redirect",
            Route::InvalidName(_) => "invalid_name",
            Route::NotFound | Route::BadRequest => "not_found",
        }
    }
}

/// gorilla/mux `cleanPath`: Go's `path.Clean`, keeping a trailing slash.
fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return "/".to_owned();
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = String::with_capacity(p.len());
    for s in &parts {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || p.ends_with('/') {
        out.push('/');
    }
    out
}

/// A query with a `;`, which Go's parser drops in part (and so could read differently
/// from regate); refused whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("`;` is not a query separator")]
pub struct BadQuery;

/// Go's `r.FormValue(key)` over the query: the first value, `+` as space, pairs that fail
/// to decode skipped.
pub fn query_param(query: Option<&str>, key: &str) -> Result<Option<String>, BadQuery> {
    let Some(query) = query else {
        return Ok(None);
    };
    if query.contains(';') {
        return Err(BadQuery);
    }
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(k) = form_decode(k) else { continue };
        if k != key {
            continue;
        }
        if let Some(v) = form_decode(v) {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

pub(crate) use crate::percent::form_decode;

#[cfg(test)]
mod tests;
