//! The pages read the registry through regate's own authorization, never with more
//! rights than the person reading: `decide` (the decision `/auth` makes, with its audit
//! line) says what they may do on a repository, regate mints a token for exactly that,
//! and every request is checked against it with the gateway's own route table before it
//! is sent through the gateway's own client. A registry that checks tokens itself sees a
//! token like any other.
//!
//! What the registry says is cached briefly (tag lists, a tag's digest) or for long
//! (manifests and image configs by digest, which cannot change), always by repository:
//! a cache entry is read only after the reader's access to that repository was decided.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::{Method, StatusCode};

use super::manifest::{Config, Manifest};
use crate::auth::authorize::decide;
use crate::auth::identity::Identity;
use crate::auth::scope::Scope;
use crate::auth::token::{Access, Verified};
use crate::proxy::Upstream;
use crate::route::{self, RepoKind, Route};
use crate::runtime::Runtime;

/// What a manifest GET accepts: images and indexes, OCI and Docker.
pub const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// A manifest or config larger than this is not read (registry:2 refuses manifests over
/// 4 MiB itself).
const DOCUMENT_LIMIT: usize = 4 << 20;
/// How long a repository's tag list, and a tag's digest, are reused.
const TAGS_TTL: Duration = Duration::from_secs(10);
/// The registry's largest page (`catalog.maxentries`, 1000 by default; more is a 400).
pub const PAGE: usize = 1000;

/// Why something could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The registry has no such thing (or the reader may not pull it: the same answer).
    NotFound,
    /// The reader lacks the access; nothing was sent.
    Denied,
    /// The registry refuses the operation itself (deletes off: `storage.delete.enabled`).
    Unsupported,
    /// The registry could not be reached, or answered something unexpected.
    Upstream(String),
}

/// The registry client and caches the pages share (one per gateway, across reloads).
pub struct Registry {
    pub(super) upstream: Upstream,
    tags: moka::sync::Cache<String, Arc<Vec<String>>>,
    by_tag: moka::sync::Cache<(String, String), String>,
    manifests: moka::sync::Cache<(String, String), Arc<Manifest>>,
    configs: moka::sync::Cache<(String, String), Arc<Config>>,
}

impl Registry {
    pub fn new(upstream: Upstream) -> Registry {
        // Documents by digest never change: kept while used, up to 64 MiB of each.
        let idle = Duration::from_secs(3600);
        Registry {
            upstream,
            tags: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(TAGS_TTL)
                .build(),
            by_tag: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(TAGS_TTL)
                .build(),
            manifests: moka::sync::Cache::builder()
                .max_capacity(64 << 20)
                .time_to_idle(idle)
                .weigher(|_, m: &Arc<Manifest>| m.raw.len().try_into().unwrap_or(u32::MAX))
                .build(),
            configs: moka::sync::Cache::builder()
                .max_capacity(64 << 20)
                .time_to_idle(idle)
                .weigher(|_, c: &Arc<Config>| c.weight.try_into().unwrap_or(u32::MAX))
                .build(),
        }
    }

    /// A reader of `repository` for `identity`, holding what `decide` grants of `wanted`
    /// (and an audit line saying so). `None` when it grants no pull: to the reader, the
    /// repository is not there.
    pub async fn reader<'a>(
        &'a self,
        rt: &Runtime,
        identity: &Identity,
        client_ip: IpAddr,
        repository: &str,
        wanted: &[&str],
    ) -> Result<Option<Reader<'a>>, ReadError> {
        let scope = Scope::new("repository", repository, wanted);
        let granted = decide(rt, identity, client_ip, &[scope])
            .await
            .map_err(|e| ReadError::Upstream(e.to_string()))?;
        let actions: Vec<String> = granted
            .into_iter()
            .flat_map(|a| a.actions)
            .filter(|a| a != "*")
            .collect();
        if !actions.iter().any(|a| a == "pull") {
            return Ok(None);
        }
        let access = vec![Access {
            resource_type: "repository".into(),
            name: repository.to_owned(),
            actions,
        }];
        let token = rt
            .tokens
            .issue(&identity.account, access.clone())
            .map_err(|e| ReadError::Upstream(e.to_string()))?
            .token;
        Ok(Some(Reader {
            registry: self,
            repository: repository.to_owned(),
            held: Verified::new(identity.account.clone(), access.clone()),
            actions: access.into_iter().flat_map(|a| a.actions).collect(),
            token,
        }))
    }

    /// Forgets what was cached of a repository's tags (after a delete).
    pub fn forget(&self, repository: &str) {
        self.tags.invalidate(repository);
        let repository = repository.to_owned();
        let _ = self
            .by_tag
            .invalidate_entries_if(move |(repo, _), _| *repo == repository);
    }
}

/// Reads one repository with what its reader holds.
pub struct Reader<'a> {
    registry: &'a Registry,
    pub repository: String,
    held: Verified,
    actions: Vec<String>,
    token: String,
}

impl Reader<'_> {
    /// Whether the reader holds `action` here (`delete`).
    pub fn may(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action)
    }

    /// Sends `method path` if what the reader holds covers what registry:2 requires for
    /// it (the gateway's own route table says what that is); never sent otherwise.
    async fn send(&self, method: Method, path: &str) -> Result<Answer, ReadError> {
        let (clean, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let classified = route::classify(clean, query);
        let required = match &classified.route {
            Route::Repository { name, .. } if *name == self.repository => {
                classified.route.required_access(&method, None)
            }
            _ => None,
        }
        .ok_or(ReadError::Denied)?;
        if !self.held.missing(&required).is_empty() {
            return Err(ReadError::Denied);
        }
        let resp = self
            .registry
            .upstream
            .send(method, path, &self.token, &MANIFEST_TYPES)
            .await
            .map_err(|e| ReadError::Upstream(e.message))?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (status, digest, link) = (
            resp.status(),
            header("docker-content-digest"),
            header("link"),
        );
        let content_type = header("content-type");
        let body = Limited::new(resp.into_body(), DOCUMENT_LIMIT)
            .collect()
            .await
            .map_err(|e| ReadError::Upstream(format!("reading the registry's answer: {e}")))?
            .to_bytes();
        Ok(Answer {
            status,
            digest,
            link,
            content_type,
            body,
        })
    }

    /// The repository's tags, every page of them (the registry's `n` and `last`), in the
    /// order people read them (`format::sort_tags`).
    pub async fn tags(&self) -> Result<Arc<Vec<String>>, ReadError> {
        if let Some(hit) = self.registry.tags.get(&self.repository) {
            return Ok(hit);
        }
        #[derive(serde::Deserialize)]
        struct List {
            tags: Option<Vec<String>>,
        }
        let mut all = Vec::new();
        let mut path = format!("/v2/{}/tags/list?n={PAGE}", self.repository);
        // A bound on pages, against a registry that links to itself forever.
        for _ in 0..1000 {
            let answer = self.send(Method::GET, &path).await?;
            match answer.status {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => return Err(ReadError::NotFound),
                s => return Err(ReadError::Upstream(format!("the registry answered {s}"))),
            }
            let list: List = serde_json::from_slice(&answer.body)
                .map_err(|e| ReadError::Upstream(format!("a tag list that is not one: {e}")))?;
            let page = list.tags.unwrap_or_default();
            let more = !page.is_empty();
            all.extend(page);
            match answer.link.as_deref().and_then(next_link) {
                Some(next) if more => path = next,
                _ => break,
            }
        }
        super::format::sort_tags(&mut all);
        all.dedup();
        let all = Arc::new(all);
        self.registry
            .tags
            .insert(self.repository.clone(), all.clone());
        Ok(all)
    }

    /// A manifest by tag or digest.
    pub async fn manifest(&self, reference: &str) -> Result<Arc<Manifest>, ReadError> {
        let repo = self.repository.clone();
        let digest = if reference.contains(':') {
            Some(reference.to_owned())
        } else {
            self.registry
                .by_tag
                .get(&(repo.clone(), reference.to_owned()))
        };
        if let Some(hit) = digest.and_then(|d| self.registry.manifests.get(&(repo.clone(), d))) {
            return Ok(hit);
        }
        let path = format!("/v2/{repo}/manifests/{reference}");
        if !matches!(
            route::classify(&path, None).route,
            Route::Repository {
                kind: RepoKind::Manifest(_),
                ..
            }
        ) {
            return Err(ReadError::NotFound);
        }
        let answer = self.send(Method::GET, &path).await?;
        match answer.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(ReadError::NotFound),
            s => return Err(ReadError::Upstream(format!("the registry answered {s}"))),
        }
        let digest = answer.digest.unwrap_or_else(|| {
            let d = ring::digest::digest(&ring::digest::SHA256, &answer.body);
            format!("sha256:{}", data_encoding::HEXLOWER.encode(d.as_ref()))
        });
        let manifest = Arc::new(Manifest::parse(
            digest.clone(),
            answer.content_type.as_deref(),
            &answer.body,
        ));
        if !reference.contains(':') {
            self.registry
                .by_tag
                .insert((repo.clone(), reference.to_owned()), digest.clone());
        }
        self.registry
            .manifests
            .insert((repo, digest), manifest.clone());
        Ok(manifest)
    }

    /// An image's config blob.
    pub async fn config(&self, digest: &str) -> Result<Arc<Config>, ReadError> {
        let key = (self.repository.clone(), digest.to_owned());
        if let Some(hit) = self.registry.configs.get(&key) {
            return Ok(hit);
        }
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        let answer = self.send(Method::GET, &path).await?;
        match answer.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(ReadError::NotFound),
            // Storage that redirects downloads (S3 with `redirect`): not followed.
            s if s.is_redirection() => {
                return Err(ReadError::Upstream(
                    "the registry sends blob downloads elsewhere".into(),
                ))
            }
            s => return Err(ReadError::Upstream(format!("the registry answered {s}"))),
        }
        let config = Arc::new(Config::parse(&answer.body));
        self.registry.configs.insert(key, config.clone());
        Ok(config)
    }

    /// Deletes the manifest `digest` (and so every tag that points to it).
    pub async fn delete(&self, digest: &str) -> Result<(), ReadError> {
        let path = format!("/v2/{}/manifests/{digest}", self.repository);
        let answer = self.send(Method::DELETE, &path).await;
        self.registry.forget(&self.repository);
        match answer?.status {
            StatusCode::ACCEPTED | StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => Err(ReadError::NotFound),
            StatusCode::METHOD_NOT_ALLOWED => Err(ReadError::Unsupported),
            s => Err(ReadError::Upstream(format!("the registry answered {s}"))),
        }
    }
}

/// A registry answer, read whole (it is small: a list or a document).
pub(super) struct Answer {
    pub(super) status: StatusCode,
    digest: Option<String>,
    pub(super) link: Option<String>,
    content_type: Option<String>,
    pub(super) body: Bytes,
}

/// The path of a `Link: <...>; rel="next"` header (registry:2's pagination).
pub(super) fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            let url = target.trim().trim_start_matches('<').trim_end_matches('>');
            // An absolute URL keeps only its path and query: the registry is ours to name.
            match url.split_once("://") {
                Some((_, rest)) => rest
                    .find('/')
                    .map_or("/".to_owned(), |i| rest[i..].to_owned()),
                None => url.to_owned(),
            }
        })
    })
}
