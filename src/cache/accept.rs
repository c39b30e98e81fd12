//! A request's `Accept` headers as registry:2 reads them for manifests
//! (distribution v2.8 `registry/handlers/manifests.go`, `GetManifest`): every value split
//! on `,`, a `;` and what follows dropped, spaces trimmed; `q=` weights and wildcards mean
//! nothing to it. The registry's answer depends on which media types are listed and on
//! nothing else in the header, so the sorted, deduplicated list keys a tag's answer.

use hyper::header::{HeaderMap, ACCEPT};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Accept(String);

impl Accept {
    pub fn of(headers: &HeaderMap) -> Accept {
        let mut types: Vec<&str> = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(media_type)
            .filter(|t| !t.is_empty())
            .collect();
        types.sort_unstable();
        types.dedup();
        Accept(types.join(","))
    }

    /// Whether `media_type` is listed as it is: the one case in which any registry
    /// version answers with the stored manifest unchanged (without it, registry:2 answers
    /// an OCI manifest with 404 and rewrites a Docker manifest fetched by tag).
    pub fn lists(&self, media_type: &str) -> bool {
        !media_type.is_empty() && self.0.split(',').any(|t| t == media_type)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The media type of an `Accept` item or a `Content-Type`: parameters dropped, trimmed.
pub fn media_type(value: &str) -> &str {
    value.split(';').next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    const DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";

    fn accept(values: &[&str]) -> Accept {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        Accept::of(&h)
    }

    #[test]
    fn lists_what_registry_2_reads() {
        let a = accept(&[&format!("{DOCKER}; q=0.9 , {OCI}"), "*/*"]);
        assert!(a.lists(OCI));
        assert!(a.lists(DOCKER));
        assert!(!a.lists("application/vnd.oci.image.index.v1+json"));
        assert!(!a.lists(""));
        // A wildcard is not a media type to registry:2.
        assert!(!accept(&["*/*"]).lists(OCI));
        assert!(!accept(&[]).lists(OCI));
    }

    #[test]
    fn equal_sets_key_alike() {
        assert_eq!(
            accept(&[&format!("{OCI},{DOCKER}")]),
            accept(&[DOCKER, &format!("{OCI};q=0.5"), OCI])
        );
        assert_ne!(accept(&[OCI]), accept(&[OCI, DOCKER]));
    }
}
