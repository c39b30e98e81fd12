//! What the pages read from a manifest and an image config: OCI and Docker schema 2
//! images and indexes, taken leniently (a field the registry holds that regate does not
//! know is ignored; one that is missing is shown as unknown).

use std::collections::BTreeMap;

use serde::Deserialize;

/// A manifest as the registry returned it.
#[derive(Debug)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    /// The bytes as pushed (for the pretty view).
    pub raw: String,
    pub kind: Kind,
    /// An image's config.
    pub config: Option<Descriptor>,
    /// An image's layers.
    pub layers: Vec<Descriptor>,
    /// An index's images, one per platform (attestations left out).
    pub children: Vec<Child>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
    /// Anything else (schema 1, an artifact): shown raw.
    Other,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub size: u64,
}

/// One image of an index.
#[derive(Debug, Clone)]
pub struct Child {
    pub digest: String,
    /// `linux/arm64/v8`.
    pub platform: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawChild>>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawChild {
    #[serde(default)]
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl Platform {
    fn name(&self) -> String {
        match &self.variant {
            Some(v) if !v.is_empty() => format!("{}/{}/{v}", self.os, self.architecture),
            _ => format!("{}/{}", self.os, self.architecture),
        }
    }
}

impl Descriptor {
    /// How a layer is compressed, as a reader says it: `gzip`, `zstd`, `none`.
    pub fn compression(&self) -> &'static str {
        let t = self.media_type.as_str();
        if t.contains("zstd") {
            "zstd"
        } else if t.contains("gzip") {
            "gzip"
        } else if t.contains("tar") {
            "none"
        } else {
            "unknown"
        }
    }
}

impl Manifest {
    pub fn parse(digest: String, content_type: Option<&str>, body: &[u8]) -> Manifest {
        let raw = String::from_utf8_lossy(body).into_owned();
        let parsed: Option<Raw> = serde_json::from_slice(body).ok();
        let media_type = parsed
            .as_ref()
            .and_then(|r| r.media_type.clone())
            .or_else(|| content_type.map(str::to_owned))
            .unwrap_or_default();
        let Some(parsed) = parsed else {
            return Manifest {
                digest,
                media_type,
                raw,
                kind: Kind::Other,
                config: None,
                layers: Vec::new(),
                children: Vec::new(),
                annotations: BTreeMap::new(),
            };
        };
        let kind = match (&parsed.manifests, &parsed.config) {
            (Some(_), _) => Kind::Index,
            (None, Some(_)) => Kind::Image,
            _ => Kind::Other,
        };
        let children = parsed
            .manifests
            .unwrap_or_default()
            .into_iter()
            // buildx puts its attestations beside the images, as platform unknown/unknown.
            .filter(|c| !c.annotations.contains_key("vnd.docker.reference.type"))
            .map(|c| Child {
                platform: c
                    .platform
                    .as_ref()
                    .map(Platform::name)
                    .unwrap_or_else(|| "unknown".to_owned()),
                digest: c.digest,
            })
            .collect();
        Manifest {
            digest,
            media_type,
            raw,
            kind,
            config: parsed.config,
            layers: parsed.layers.unwrap_or_default(),
            children,
            annotations: parsed.annotations,
        }
    }

    /// What pulling this image downloads, compressed: its layers and its config.
    pub fn image_size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum::<u64>() + self.config.as_ref().map_or(0, |c| c.size)
    }
}

/// An image config, as far as the pages show it.
#[derive(Debug, Default)]
pub struct Config {
    /// Seconds since the epoch.
    pub created: Option<u64>,
    pub platform: String,
    pub history: Vec<History>,
    pub labels: BTreeMap<String, String>,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub ports: Vec<String>,
    /// Its size in bytes, for the cache.
    pub weight: usize,
}

#[derive(Debug, Clone)]
pub struct History {
    pub created: Option<u64>,
    pub created_by: String,
    pub empty_layer: bool,
}

#[derive(Deserialize, Default)]
struct RawConfig {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    history: Vec<RawHistory>,
    #[serde(default)]
    config: Option<RawRun>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRun {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde::de::IgnoredAny>>,
}

#[derive(Deserialize)]
struct RawHistory {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    created_by: Option<String>,
    #[serde(default)]
    empty_layer: bool,
}

impl Config {
    pub fn parse(body: &[u8]) -> Config {
        let raw: RawConfig = serde_json::from_slice(body).unwrap_or_default();
        let time = |t: &Option<String>| t.as_deref().and_then(super::format::parse_rfc3339);
        let platform = Platform {
            os: raw.os.clone(),
            architecture: raw.architecture.clone(),
            variant: raw.variant.clone(),
        };
        let run = raw.config.unwrap_or_default();
        Config {
            created: time(&raw.created),
            platform: if raw.os.is_empty() {
                String::new()
            } else {
                platform.name()
            },
            history: raw
                .history
                .iter()
                .map(|h| History {
                    created: time(&h.created),
                    created_by: h.created_by.clone().unwrap_or_default(),
                    empty_layer: h.empty_layer,
                })
                .collect(),
            labels: run.labels.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            user: run.user.unwrap_or_default(),
            working_dir: run.working_dir.unwrap_or_default(),
            ports: run
                .exposed_ports
                .map(|p| p.into_keys().collect())
                .unwrap_or_default(),
            weight: body.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_lists_its_platforms_without_attestations() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
          {"digest":"sha256:a","size":10,"platform":{"os":"linux","architecture":"amd64"}},
          {"digest":"sha256:b","size":11,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
          {"digest":"sha256:c","size":12,"platform":{"os":"unknown","architecture":"unknown"},
           "annotations":{"vnd.docker.reference.type":"attestation-manifest"}}]}"#;
        let m = Manifest::parse("sha256:x".into(), None, body);
        assert_eq!(m.kind, Kind::Index);
        let platforms: Vec<&str> = m.children.iter().map(|c| c.platform.as_str()).collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8"]);
    }

    #[test]
    fn an_image_and_its_config() {
        let body =
            br#"{"schemaVersion":2,"config":{"mediaType":"c","digest":"sha256:c","size":100},
          "layers":[{"digest":"sha256:l1","size":1000},{"digest":"sha256:l2","size":2000}]}"#;
        let m = Manifest::parse(
            "sha256:x".into(),
            Some("application/vnd.oci.image.manifest.v1+json"),
            body,
        );
        assert_eq!((m.kind, m.image_size()), (Kind::Image, 3100));
        assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
        let c = Config::parse(br#"{"created":"2026-11-30T00:53:20Z","os":"linux","architecture":"amd64",
          "config":{"Labels":{"org.opencontainers.image.source":"https://example.com"},"ExposedPorts":{"80/tcp":{}}},
          "history":[{"created_by":"/bin/sh -c #(nop) ADD file","empty_layer":false},{"created_by":"CMD [\"sh\"]","empty_layer":true}]}"#);
        assert_eq!(c.created, Some(1_796_000_000));
        assert_eq!(c.platform, "linux/amd64");
        assert_eq!(
            c.labels["org.opencontainers.image.source"],
            "https://example.com"
        );
        assert_eq!(c.ports, ["80/tcp"]);
        assert!(c.history[1].empty_layer);
    }
}
