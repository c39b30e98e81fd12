//! OCI image layouts for the UI test, with what the pages show: a created time, history,
//! labels, several platforms; pushed to regate with skopeo.

use std::path::Path;

use serde_json::{json, Value};

use crate::common::{noise, sha256_hex, skopeo, tar_with_file};

/// A blob written into the layout; its descriptor.
fn put(dir: &Path, media_type: &str, data: &[u8]) -> Value {
    let hex = sha256_hex(data);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(&hex), data).unwrap();
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len()})
}

/// One image (two layers, a config with history and labels) for `arch`; its manifest's
/// descriptor.
fn image(dir: &Path, seed: u64, arch: &str, created: &str) -> Value {
    let layer = |i: u64| {
        tar_with_file(
            &format!("file{i}"),
            &noise(seed * 10 + i, 40_000 + (i as usize) * 7_000),
        )
    };
    let layers = [layer(1), layer(2)];
    let descs: Vec<Value> = layers
        .iter()
        .map(|l| put(dir, "application/vnd.oci.image.layer.v1.tar", l))
        .collect();
    let config = json!({
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "Cmd": ["/bin/app", "--serve"],
            "WorkingDir": "/srv",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {
                "org.opencontainers.image.source": "https://git.example.com/team-a/app",
                "org.opencontainers.image.version": created,
            }
        },
        "rootfs": {"type": "layers", "diff_ids": descs.iter().map(|d| d["digest"].clone()).collect::<Vec<_>>()},
        "history": [
            {"created": created, "created_by": "/bin/sh -c #(nop) ADD file:base.tar in /"},
            {"created": created, "created_by": "/bin/sh -c #(nop) WORKDIR /srv", "empty_layer": true},
            {"created": created, "created_by": "COPY app /bin/app # buildkit"},
            {"created": created, "created_by": "CMD [\"/bin/app\" \"--serve\"]", "empty_layer": true},
        ]
    });
    let config = put(
        dir,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": descs,
    });
    let mut desc = put(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    desc["platform"] = json!({"os": "linux", "architecture": arch});
    desc
}

fn write_index(dir: &Path, refs: Vec<(String, Value)>) {
    let manifests: Vec<Value> = refs
        .into_iter()
        .map(|(name, mut desc)| {
            desc.as_object_mut().unwrap().remove("platform");
            desc["annotations"] = json!({"org.opencontainers.image.ref.name": name});
            desc
        })
        .collect();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests})).unwrap(),
    )
    .unwrap();
}

/// A layout with one image per tag `v1`..`vN`, each created a day after the last.
pub fn versions(dir: &Path, n: usize) {
    let refs = (1..=n)
        .map(|i| {
            let created = format!("2026-11-{i:02}T12:00:00Z");
            (
                format!("v{i}"),
                image(dir, 500 + i as u64, "amd64", &created),
            )
        })
        .collect();
    write_index(dir, refs);
}

/// A layout whose `latest` is an image index for linux/amd64 and linux/arm64.
pub fn multi_arch(dir: &Path, seed: u64) {
    let created = "2026-12-01T09:30:00Z";
    let amd = image(dir, seed, "amd64", created);
    let arm = image(dir, seed + 1, "arm64", created);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [amd, arm],
    });
    let desc = put(
        dir,
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    write_index(dir, vec![("latest".to_owned(), desc)]);
}

/// A layout whose `latest` is one image.
pub fn single(dir: &Path, seed: u64) {
    let desc = image(dir, seed, "amd64", "2026-12-02T08:00:00Z");
    write_index(dir, vec![("latest".to_owned(), desc)]);
}

/// `skopeo copy [--all] oci:LAYOUT:REF docker://HOST/REPO:TAG` as admin, trusting `ca_dir`.
pub fn push(layout: &Path, reference: &str, host: &str, target: &str, ca_dir: &Path) {
    let authfile = layout.join("auth.json");
    let source = format!("oci:{}:{reference}", layout.display());
    let dest = format!("docker://{host}/{target}");
    let ca = ca_dir.to_str().unwrap();
    let (ok, out) = skopeo(
        &authfile,
        &[
            "copy",
            "--all",
            "--dest-cert-dir",
            ca,
            "--dest-creds",
            "admin:admin-pw",
            &source,
            &dest,
        ],
    );
    assert!(ok, "skopeo copy {source} {dest}: {out}");
}
