//! The repository list: the catalog filtered to what the reader may pull, grouped by
//! namespace (the name's first component), searched, paged, counted.

use std::time::Instant;

use askama::Template;
use hyper::{Response, StatusCode};

use super::form::Form;
use super::page::{self, Problem, Shell};
use super::{url_encode, Visit};
use crate::auth::token::Access;
use crate::body::Body;

/// Repositories on a page.
pub const PER_PAGE: usize = 50;
/// Namespaces offered in the filter, at most (beyond this, search does the job).
const NAMESPACES_LISTED: usize = 200;

#[derive(Template)]
#[template(path = "repos.html")]
struct ReposPage {
    shell: Shell,
    q: String,
    ns: String,
    /// Repositories the reader may pull (all of the catalog read so far).
    visible: usize,
    /// Of those, the ones the search and namespace filter keep.
    matching: usize,
    namespace_count: usize,
    complete: bool,
    error: bool,
    namespaces: Vec<Namespace>,
    groups: Vec<Group>,
    first: usize,
    last: usize,
    page: usize,
    pages: usize,
    prev: Option<String>,
    next: Option<String>,
}

struct Namespace {
    value: String,
    label: String,
    count: usize,
    selected: bool,
}

struct Group {
    label: String,
    /// Repositories of the namespace among the matching ones (not only this page's).
    count: usize,
    continued: bool,
    repos: Vec<String>,
}

/// The namespace of a repository: its first component, `""` for a top-level name.
fn namespace(name: &str) -> &str {
    name.split_once('/').map_or("", |(ns, _)| ns)
}

fn label(ns: &str) -> String {
    if ns.is_empty() {
        "(top level)".to_owned()
    } else {
        ns.to_owned()
    }
}

pub async fn page(visit: &Visit<'_>, query: &str) -> Result<Response<Body>, Problem> {
    let Some(identity) = visit.reader() else {
        return Ok(visit.sign_in_first());
    };
    let form = Form::parse(query).ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "The address of this page is not valid.",
        )
    })?;
    let q = form.get("q").unwrap_or("").trim().to_lowercase();
    let ns = form.get("ns").unwrap_or("").to_owned();
    let filtering = !q.is_empty() || form.get("ns").is_some();
    let page: usize = form
        .get("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1)
        .min(100_000);
    let rt = visit.rt;
    let pages = visit.pages;
    let started = Instant::now();
    let mint = || {
        let access = vec![Access {
            resource_type: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        }];
        rt.tokens.issue("regate-ui", access).ok().map(|t| t.token)
    };
    let mut snapshot = pages.catalog.current(&pages.registry.upstream, mint);
    let first_generation = snapshot.generation;
    // Enough to fill this page and know whether another follows.
    let needed = page * PER_PAGE;
    let visible = loop {
        let visible = pages
            .catalog
            .visible(rt, &identity, visit.client_ip, &snapshot)
            .await
            .map_err(|e| {
                tracing::error!("the web pages could not decide access: {e}");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The access rules could not be read. Try again later.",
                )
            })?;
        let failed = snapshot.error.is_some() && snapshot.generation != first_generation;
        if snapshot.complete || failed || (!filtering && visible.len() > needed) {
            break visible;
        }
        match pages.catalog.next(&snapshot, started).await {
            Some(next) => snapshot = next,
            None => break visible,
        }
    };
    let mut namespaces: Vec<Namespace> = Vec::new();
    for name in visible.iter() {
        let n = namespace(name);
        match namespaces.last_mut() {
            Some(last) if last.value == n => last.count += 1,
            _ => namespaces.push(Namespace {
                value: n.to_owned(),
                label: label(n),
                count: 1,
                selected: form.get("ns") == Some(n),
            }),
        }
    }
    let namespace_count = namespaces.len();
    let matching: Vec<&String> = visible
        .iter()
        .filter(|n| form.get("ns").is_none_or(|ns| namespace(n) == ns))
        .filter(|n| q.is_empty() || n.contains(&q))
        .collect();
    let total_pages = matching.len().div_ceil(PER_PAGE).max(1);
    let page = page.min(total_pages);
    let start = (page - 1) * PER_PAGE;
    let shown = &matching[start..(start + PER_PAGE).min(matching.len())];
    let mut groups: Vec<Group> = Vec::new();
    for name in shown {
        let n = namespace(name);
        match groups.last_mut() {
            Some(g) if namespace(&g.repos[0]) == n => g.repos.push((*name).clone()),
            _ => groups.push(Group {
                label: label(n),
                count: matching.iter().filter(|m| namespace(m) == n).count(),
                continued: start > 0 && namespace(matching[start - 1]) == n,
                repos: vec![(*name).clone()],
            }),
        }
    }
    let link = |p: usize, q: &str| {
        let mut href = visit.href(&format!("/ui/repos?page={p}"));
        if !q.is_empty() {
            href.push_str(&format!("&q={}", url_encode(q)));
        }
        if let Some(ns) = form.get("ns") {
            href.push_str(&format!("&ns={}", url_encode(ns)));
        }
        href
    };
    let prev = (page > 1).then(|| link(page - 1, &q));
    let next = (page < total_pages || (!snapshot.complete && shown.len() == PER_PAGE))
        .then(|| link(page + 1, &q));
    let mut shell = visit.shell();
    shell.current = "repos";
    page::render(&ReposPage {
        shell,
        q,
        ns,
        visible: visible.len(),
        matching: matching.len(),
        namespace_count,
        complete: snapshot.complete,
        error: snapshot.error.is_some(),
        namespaces: if namespace_count <= NAMESPACES_LISTED {
            namespaces
        } else {
            Vec::new()
        },
        groups,
        first: if shown.is_empty() { 0 } else { start + 1 },
        last: start + shown.len(),
        page,
        pages: total_pages,
        prev,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_the_first_component() {
        assert_eq!(namespace("team-a/app"), "team-a");
        assert_eq!(namespace("team-a/sub/app"), "team-a");
        assert_eq!(namespace("hello-world"), "");
        assert_eq!(label(""), "(top level)");
    }
}
