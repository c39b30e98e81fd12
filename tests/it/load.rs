//! Concurrent load with nothing lost: many skopeo clients push and pull different images
//! through one regate at once, then every manifest and blob is checked by a second pull
//! against what the registry itself serves, and regate answered no request with a 5xx.
//!
//! CI runs 16 clients with 4-layer images. `benches/load.sh` runs a larger size through
//! `REGATE_LOAD_CLIENTS` and `REGATE_LOAD_LAYERS`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::common::*;

fn env_or(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// One client's own image and work folder.
struct Work {
    dir: tempfile::TempDir,
    repo: String,
    built: Image,
}

impl Work {
    fn layout(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn copy(authfile: &Path, from: &str, to: &str) {
    let (ok, out) = skopeo(
        authfile,
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--src-creds=admin:admin-pw",
            "--dest-creds=admin:admin-pw",
            from,
            to,
        ],
    );
    assert!(ok, "skopeo copy {from} {to}: {out}");
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A layout's manifest digest, and the digests of its config and layers.
fn layout_digests(layout: &Path) -> (String, Vec<String>) {
    let manifest = oci_manifest_digest(layout);
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    };
    let doc = read_json(&blob(&manifest));
    let mut blobs = vec![doc["config"]["digest"].as_str().unwrap().to_owned()];
    for layer in doc["layers"].as_array().unwrap() {
        blobs.push(layer["digest"].as_str().unwrap().to_owned());
    }
    // Every file in the layout holds what its name says.
    for digest in std::iter::once(&manifest).chain(&blobs) {
        let data = std::fs::read(blob(digest)).unwrap();
        assert_eq!(
            format!("sha256:{}", sha256_hex(&data)),
            *digest,
            "{}",
            layout.display()
        );
    }
    (manifest, blobs)
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pushes_and_pulls_lose_nothing() {
    let clients = env_or("REGATE_LOAD_CLIENTS", 16);
    let layers = env_or("REGATE_LOAD_LAYERS", 4);
    let seed = Seed::start().await;
    let host = seed.gateway.host();
    let started = Instant::now();

    // Each client builds its own image, pushes it and pulls it straight back: with all of
    // them at once, pushes and pulls overlap.
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let host = host.clone();
            blocking(move || {
                let dir = tempfile::tempdir().unwrap();
                let built = oci_image(&dir.path().join("image"), layers, 1000 + i as u64);
                let work = Work {
                    repo: format!("load/client-{i}"),
                    dir,
                    built,
                };
                let auth = work.dir.path().join("auth.json");
                let image = format!("oci:{}:latest", work.layout("image").display());
                let remote = format!("docker://{host}/{}:v1", work.repo);
                copy(&auth, &image, &remote);
                let first = format!("oci:{}:latest", work.layout("first").display());
                copy(&auth, &remote, &first);
                work
            })
        })
        .collect();
    let mut works = Vec::new();
    for task in tasks {
        works.push(task.await);
    }
    let first_round = started.elapsed();

    // A second pull of every image, each by another client, all at once.
    let works = std::sync::Arc::new(works);
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let host = host.clone();
            let works = works.clone();
            blocking(move || {
                let own = &works[i];
                let other = &works[(i + 1) % works.len()];
                let auth = own.dir.path().join("auth.json");
                let remote = format!("docker://{host}/{}:v1", other.repo);
                let second = format!("oci:{}:latest", own.layout("second").display());
                copy(&auth, &remote, &second);
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }

    // Every image: both pulls agree with each other and with the registry itself, the
    // config is the one built, and no layer is missing.
    let registry = seed.registry.url();
    for (i, work) in works.iter().enumerate() {
        let puller = &works[(i + works.len() - 1) % works.len()];
        let (first, first_blobs) = layout_digests(&work.layout("first"));
        let (second, second_blobs) = layout_digests(&puller.layout("second"));
        assert_eq!(first, second, "{}: the two pulls differ", work.repo);
        assert_eq!(first_blobs, second_blobs, "{}", work.repo);
        assert_eq!(first_blobs[0], work.built.config, "{}", work.repo);
        assert_eq!(first_blobs.len(), layers + 1, "{}", work.repo);

        let served = get(
            &format!("{registry}/v2/{}/manifests/v1", work.repo),
            &[("accept", "application/vnd.oci.image.manifest.v1+json")],
        )
        .await;
        assert_eq!(served.status, 200, "{}", work.repo);
        assert_eq!(format!("sha256:{}", sha256_hex(&served.body)), first);
        for digest in &first_blobs {
            let blob = get(&format!("{registry}/v2/{}/blobs/{digest}", work.repo), &[]).await;
            assert_eq!(blob.status, 200, "{} {digest}", work.repo);
            assert_eq!(
                format!("sha256:{}", sha256_hex(&blob.body)),
                *digest,
                "{}",
                work.repo
            );
        }
    }

    let errors = server_errors(&seed.gateway.url()).await;
    assert!(errors.is_empty(), "regate answered with 5xx: {errors:?}");
    eprintln!(
        "{clients} clients x {layers} layers: push + pull {first_round:?}, all with the second pull {:?}",
        started.elapsed()
    );
}
