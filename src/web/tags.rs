//! A repository's tags: digest, compressed size, created time and platforms of each, and
//! the `docker pull` command to copy.

use askama::Template;
use futures_util::{stream, StreamExt};
use hyper::{Response, StatusCode};

use super::form::Form;
use super::format;
use super::manifest::{Child, Kind};
use super::page::{self, Problem, Shell};
use super::registry::{ReadError, Reader};
use super::{url_encode, Visit};
use crate::body::Body;

/// Tags on a page: each costs the registry a manifest and a config read (cached).
pub const PER_PAGE: usize = 15;
/// Registry reads at once for one page.
const AT_ONCE: usize = 6;

#[derive(Template)]
#[template(path = "tags.html")]
struct TagsPage {
    shell: Shell,
    repository: String,
    namespace: Option<String>,
    q: String,
    /// Just deleted (the delete page comes back here).
    deleted: Option<String>,
    total: usize,
    matching: usize,
    rows: Vec<Row>,
    first: usize,
    last: usize,
    page: usize,
    pages: usize,
    prev: Option<String>,
    next: Option<String>,
}

pub struct Row {
    pub tag: String,
    pub summary: Summary,
    pub pull: String,
}

/// What the tags table and the detail page say of one image or index.
#[derive(Default)]
pub struct Summary {
    pub digest: String,
    pub short: String,
    pub size: String,
    pub created: String,
    pub created_ago: String,
    pub platforms: Vec<String>,
    /// Why it could not be read, when it could not.
    pub problem: Option<String>,
}

/// Reads what the tables show of `reference`: its manifest, and the config (of each
/// platform, for an index).
pub async fn summarize(reader: &Reader<'_>, reference: &str) -> Summary {
    let manifest = match reader.manifest(reference).await {
        Ok(m) => m,
        Err(e) => {
            return Summary {
                problem: Some(match e {
                    ReadError::NotFound => "gone (deleted a moment ago?)".to_owned(),
                    _ => "could not be read".to_owned(),
                }),
                ..Summary::default()
            }
        }
    };
    let mut summary = Summary {
        digest: manifest.digest.clone(),
        short: format::short_digest(&manifest.digest),
        ..Summary::default()
    };
    // (size, created, platform) of each image.
    let images: Vec<(u64, Option<u64>, String)> = match manifest.kind {
        Kind::Image => {
            let config = match &manifest.config {
                Some(c) => reader.config(&c.digest).await.ok(),
                None => None,
            };
            vec![(
                manifest.image_size(),
                config.as_ref().and_then(|c| c.created),
                config.map(|c| c.platform.clone()).unwrap_or_default(),
            )]
        }
        Kind::Index => {
            stream::iter(
                manifest
                    .children
                    .iter()
                    .take(32)
                    .cloned()
                    .collect::<Vec<_>>(),
            )
            .map(|child: Child| async move {
                let m = reader.manifest(&child.digest).await.ok();
                let config = match m.as_ref().and_then(|m| m.config.clone()) {
                    Some(c) => reader.config(&c.digest).await.ok(),
                    None => None,
                };
                (
                    m.map_or(0, |m| m.image_size()),
                    config.and_then(|c| c.created),
                    child.platform.clone(),
                )
            })
            .buffered(AT_ONCE)
            .collect()
            .await
        }
        Kind::Other => Vec::new(),
    };
    let sizes: Vec<u64> = images.iter().map(|i| i.0).filter(|s| *s > 0).collect();
    summary.size = match (sizes.iter().min(), sizes.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => format::size(*lo),
        (Some(lo), Some(hi)) => format!("{} – {}", format::size(*lo), format::size(*hi)),
        _ => "unknown".to_owned(),
    };
    if let Some(created) = images.iter().filter_map(|i| i.1).max() {
        summary.created = format::utc(created);
        summary.created_ago = format::ago(created, format::now());
    }
    summary.platforms = images
        .into_iter()
        .map(|i| i.2)
        .filter(|p| !p.is_empty())
        .collect();
    summary
}

/// The page of `name`'s tags.
pub async fn page(visit: &Visit<'_>, name: &str, query: &str) -> Result<Response<Body>, Problem> {
    let Some(identity) = visit.reader() else {
        return Ok(visit.sign_in_first());
    };
    if !crate::route::valid_name(name) {
        return Err(Problem::no_repository(name));
    }
    let form = Form::parse(query).ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "The address of this page is not valid.",
        )
    })?;
    let reader = visit
        .pages
        .registry
        .reader(visit.rt, &identity, visit.client_ip, name, &["pull"])
        .await
        .map_err(unavailable)?
        .ok_or_else(|| Problem::no_repository(name))?;
    let tags = reader.tags().await.map_err(|e| match e {
        ReadError::NotFound => Problem::no_repository(name),
        e => unavailable(e),
    })?;
    let q = form.get("q").unwrap_or("").trim().to_owned();
    let matching: Vec<&String> = tags.iter().filter(|t| t.contains(&q)).collect();
    let pages = matching.len().div_ceil(PER_PAGE).max(1);
    let page: usize = form
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1usize)
        .clamp(1, pages);
    let start = (page - 1) * PER_PAGE;
    let shown = &matching[start..(start + PER_PAGE).min(matching.len())];
    let reader = &reader;
    // Owned items: a stream of borrowed ones trips the compiler's Send check (rust#102211).
    let owned: Vec<String> = shown.iter().map(|t| (*t).clone()).collect();
    let rows: Vec<Row> = stream::iter(owned)
        .map(|tag: String| async move {
            Row {
                summary: summarize(reader, &tag).await,
                pull: format!("docker pull {}/{name}:{tag}", visit.host),
                tag,
            }
        })
        .buffered(AT_ONCE)
        .collect()
        .await;
    let link = |p: usize, q: &str| {
        let mut href = visit.href(&format!("/ui/repo/{name}?page={p}"));
        if !q.is_empty() {
            href.push_str(&format!("&q={}", url_encode(q)));
        }
        href
    };
    let prev = (page > 1).then(|| link(page - 1, &q));
    let next = (page < pages).then(|| link(page + 1, &q));
    let mut shell = visit.shell();
    shell.current = "repos";
    page::render(&TagsPage {
        shell,
        repository: name.to_owned(),
        namespace: name.split_once('/').map(|(ns, _)| ns.to_owned()),
        total: tags.len(),
        matching: matching.len(),
        first: if shown.is_empty() { 0 } else { start + 1 },
        last: start + shown.len(),
        deleted: form
            .get("deleted")
            .filter(|d| {
                d.contains(':') && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b':')
            })
            .map(format::short_digest),
        q,
        rows,
        page,
        pages,
        prev,
        next,
    })
}

/// The registry (or the rules) could not be read: a 503 that names no cause.
pub fn unavailable(e: ReadError) -> Problem {
    match e {
        ReadError::NotFound => Problem::new(StatusCode::NOT_FOUND, "There is no such image."),
        ReadError::Denied => Problem::new(StatusCode::FORBIDDEN, "You may not do that here."),
        ReadError::Unsupported => Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "The registry does not allow deleting (its storage.delete.enabled is off).",
        ),
        ReadError::Upstream(cause) => {
            tracing::warn!(%cause, "a web page could not read the registry");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The registry could not be read just now. Try again in a moment.",
            )
        }
    }
}
