//! One tag or digest: the manifest (pretty), the layers and their sizes, the config's
//! history, labels and run settings, the platforms of a multi-arch image, the pull
//! commands, and the way to delete it where the ACL grants `delete`.

use std::collections::BTreeMap;

use askama::Template;
use futures_util::{stream, StreamExt};
use hyper::{Response, StatusCode};

use super::format;
use super::manifest::{Child, Config, Kind};
use super::page::{self, Problem, Shell};
use super::registry::ReadError;
use super::tags::{summarize, unavailable, Summary};
use super::{url_encode, Visit};
use crate::body::Body;
use crate::route::{self, RepoKind, Route};

#[derive(Template)]
#[template(path = "image.html")]
struct ImagePage {
    shell: Shell,
    repository: String,
    namespace: Option<String>,
    /// `app:1.0` or `app@sha256:…` as a heading.
    title: String,
    tag: Option<String>,
    summary: Summary,
    media_type: String,
    kind: &'static str,
    pull_tag: Option<String>,
    pull_digest: String,
    children: Vec<ChildRow>,
    layers: Vec<LayerRow>,
    history: Vec<HistoryRow>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    run: Vec<(&'static str, String)>,
    env: Vec<String>,
    manifest: String,
    delete: Option<String>,
}

struct ChildRow {
    platform: String,
    href: String,
    short: String,
    size: String,
}

struct LayerRow {
    number: usize,
    short: String,
    digest: String,
    size: String,
    compression: &'static str,
    created_by: String,
}

struct HistoryRow {
    created: String,
    created_by: String,
    empty: bool,
}

/// `name:tag` or `name@digest`, checked by the gateway's own route table.
pub fn split(reference: &str) -> Option<(&str, &str)> {
    let (name, rest) = match reference.split_once('@') {
        Some((n, d)) => (n, d),
        None => reference.split_once(':')?,
    };
    let path = format!("/v2/{name}/manifests/{rest}");
    match route::classify(&path, None).route {
        Route::Repository {
            name: routed,
            kind: RepoKind::Manifest(_),
        } if routed == name => Some((name, rest)),
        _ => None,
    }
}

pub async fn page(visit: &Visit<'_>, reference: &str) -> Result<Response<Body>, Problem> {
    let Some(identity) = visit.reader() else {
        return Ok(visit.sign_in_first());
    };
    let name = reference.split(['@', ':']).next().unwrap_or("");
    let (name, wanted) = split(reference).ok_or_else(|| Problem::no_repository(name))?;
    let reader = visit
        .pages
        .registry
        .reader(
            visit.rt,
            &identity,
            visit.client_ip,
            name,
            &["pull", "delete"],
        )
        .await
        .map_err(unavailable)?
        .ok_or_else(|| Problem::no_repository(name))?;
    let manifest = reader.manifest(wanted).await.map_err(|e| match e {
        ReadError::NotFound => Problem::new(
            StatusCode::NOT_FOUND,
            format!("{name} has no tag or digest \u{201c}{wanted}\u{201d}."),
        ),
        e => unavailable(e),
    })?;
    let summary = summarize(&reader, &manifest.digest).await;
    let is_tag = !wanted.contains(':');
    let config: Option<std::sync::Arc<Config>> = match &manifest.config {
        Some(c) if manifest.kind == Kind::Image => reader.config(&c.digest).await.ok(),
        _ => None,
    };
    let reader = &reader;
    let children: Vec<ChildRow> = stream::iter(manifest.children.clone())
        .map(|c: Child| async move {
            let size = match reader.manifest(&c.digest).await {
                Ok(m) => format::size(m.image_size()),
                Err(_) => "unknown".to_owned(),
            };
            ChildRow {
                platform: c.platform,
                href: visit.href(&format!("/ui/repo/{name}@{}", c.digest)),
                short: format::short_digest(&c.digest),
                size,
            }
        })
        .buffered(6)
        .collect()
        .await;
    let history = config
        .as_ref()
        .map(|c| c.history.clone())
        .unwrap_or_default();
    let mut built = history.iter().filter(|h| !h.empty_layer);
    let layers = manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| LayerRow {
            number: i + 1,
            short: format::short_digest(&l.digest),
            digest: l.digest.clone(),
            size: format::size(l.size),
            compression: l.compression(),
            created_by: built
                .next()
                .map(|h| h.created_by.clone())
                .unwrap_or_default(),
        })
        .collect();
    let mut run = Vec::new();
    if let Some(c) = &config {
        let mut add = |key: &'static str, value: String| {
            if !value.is_empty() {
                run.push((key, value));
            }
        };
        add("Entrypoint", c.entrypoint.join(" "));
        add("Command", c.cmd.join(" "));
        add("User", c.user.clone());
        add("Working directory", c.working_dir.clone());
        add("Exposed ports", c.ports.join(", "));
    }
    let delete = reader.may("delete").then(|| {
        visit.href(&format!(
            "/ui/delete?repository={}&digest={}",
            url_encode(name),
            url_encode(&manifest.digest)
        ))
    });
    let mut shell = visit.shell();
    shell.current = "repos";
    page::render(&ImagePage {
        shell,
        repository: name.to_owned(),
        namespace: name.split_once('/').map(|(ns, _)| ns.to_owned()),
        title: if is_tag {
            format!("{name}:{wanted}")
        } else {
            format!("{name}@{}", format::short_digest(wanted))
        },
        tag: is_tag.then(|| wanted.to_owned()),
        pull_tag: is_tag.then(|| format!("docker pull {}/{name}:{wanted}", visit.host)),
        pull_digest: format!("docker pull {}/{name}@{}", visit.host, manifest.digest),
        summary,
        media_type: manifest.media_type.clone(),
        kind: match manifest.kind {
            Kind::Image => "image",
            Kind::Index => "multi-platform image (index)",
            Kind::Other => "other",
        },
        children,
        layers,
        history: history
            .iter()
            .map(|h| HistoryRow {
                created: h.created.map(format::utc).unwrap_or_default(),
                created_by: h.created_by.clone(),
                empty: h.empty_layer,
            })
            .collect(),
        labels: config
            .as_ref()
            .map(|c| c.labels.clone())
            .unwrap_or_default(),
        annotations: manifest.annotations.clone(),
        run,
        env: config.as_ref().map(|c| c.env.clone()).unwrap_or_default(),
        manifest: format::pretty_json(&manifest.raw).unwrap_or_else(|| manifest.raw.clone()),
        delete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_what_the_router_takes() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(split("team/app:1.0"), Some(("team/app", "1.0")));
        assert_eq!(
            split(&format!("team/app@{digest}")),
            Some(("team/app", digest.as_str()))
        );
        for bad in [
            "team/app",
            "Team/app:1",
            "team/../x:1",
            "team/app:-x",
            "team/app@md5:zz",
            ":1",
        ] {
            assert_eq!(split(bad), None, "{bad}");
        }
    }
}
