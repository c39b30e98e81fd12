//! Deleting an image where the ACL grants `delete`: a page that says what goes (the
//! manifest and every tag pointing to it) and when the space comes back (the registry's
//! garbage collection), then the delete itself, through the same checks as any read.

use askama::Template;
use futures_util::{stream, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::form::{self, Form};
use super::image::split;
use super::page::{self, Problem, Shell};
use super::registry::{ReadError, Reader};
use super::tags::unavailable;
use super::{url_encode, Visit};
use crate::body::Body;

/// Tags looked at for "these tags go too"; past this the page says there may be more.
const TAGS_CHECKED: usize = 300;

#[derive(Template)]
#[template(path = "delete.html")]
struct ConfirmPage {
    shell: Shell,
    heading: String,
    repository: String,
    digest: String,
    tags: Vec<String>,
    more_tags_possible: bool,
}

/// The repository and digest a delete names, checked by the gateway's route table.
fn target(form: &Form) -> Result<(String, String), Problem> {
    let repository = form.get("repository").unwrap_or("");
    let digest = form.get("digest").unwrap_or("");
    let bad = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!(
                "\u{201c}{repository}@{digest}\u{201d} is not an image this registry can hold."
            ),
        )
    };
    if !digest.contains(':') {
        return Err(bad());
    }
    match split(&format!("{repository}@{digest}")) {
        Some((r, d)) => Ok((r.to_owned(), d.to_owned())),
        None => Err(bad()),
    }
}

/// A reader of `repository` that may delete, or why not: a repository the visitor may not
/// pull is not there; one they may pull but not delete in says so.
async fn deleter<'a>(visit: &'a Visit<'_>, repository: &str) -> Result<Reader<'a>, Problem> {
    let session = visit.session_for_form()?;
    let reader = visit
        .pages
        .registry
        .reader(
            visit.rt,
            &session.identity(),
            visit.client_ip,
            repository,
            &["pull", "delete"],
        )
        .await
        .map_err(unavailable)?
        .ok_or_else(|| Problem::no_repository(repository))?;
    if !reader.may("delete") {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            format!(
                "You may pull from {repository} but not delete in it. \u{201c}My access\u{201d} shows the rule that decides."
            ),
        ));
    }
    Ok(reader)
}

/// The question: what goes, and when the space comes back.
pub async fn confirm(visit: &Visit<'_>, query: &str) -> Result<Response<Body>, Problem> {
    if visit.session.is_none() {
        return Ok(visit.sign_in_first());
    }
    let form = Form::parse(query).ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "The address of this page is not valid.",
        )
    })?;
    let (repository, digest) = target(&form)?;
    let reader = deleter(visit, &repository).await?;
    reader.manifest(&digest).await.map_err(unavailable)?;
    let all = reader.tags().await.unwrap_or_default();
    let reader = &reader;
    let digest_ref = &digest;
    let candidates: Vec<String> = all.iter().take(TAGS_CHECKED).cloned().collect();
    let tags: Vec<String> = stream::iter(candidates)
        .map(|tag: String| async move {
            let m = reader.manifest(&tag).await.ok()?;
            (m.digest == *digest_ref).then_some(tag)
        })
        .buffered(6)
        .filter_map(|t| async move { t })
        .collect()
        .await;
    let heading = match tags.as_slice() {
        [tag] => format!("Delete {repository}:{tag}?"),
        _ => format!("Delete this image from {repository}?"),
    };
    page::render(&ConfirmPage {
        shell: visit.shell(),
        heading,
        more_tags_possible: all.len() > TAGS_CHECKED,
        repository,
        digest,
        tags,
    })
}

/// The delete itself.
pub async fn submit(visit: &Visit<'_>, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    let session = visit.session_for_form()?;
    let form = form::read(req, Some(session)).await?;
    let (repository, digest) = target(&form)?;
    let reader = deleter(visit, &repository).await?;
    match reader.delete(&digest).await {
        Ok(()) => {}
        Err(ReadError::NotFound) => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                format!("{repository} has no image {digest} (deleted already?)."),
            ))
        }
        Err(e) => return Err(unavailable(e)),
    }
    // The same audit line as a delete forwarded from a registry client.
    tracing::info!(
        target: "regate::audit",
        event = "write",
        client = %visit.client_ip,
        account = %session.account,
        action = "delete_manifest",
        repository = %repository,
        reference = %digest,
        digest = %digest,
        status = 202u16,
        via = "web",
        "write forwarded"
    );
    Ok(page::see_other(&visit.href(&format!(
        "/ui/repo/{repository}?deleted={}",
        url_encode(&digest)
    ))))
}
