//! End to end with skopeo (containers/image: the auth code podman and buildah use too)
//! against Debian's docker-registry behind regate, in both backend layouts.

use crate::common::*;

struct Client {
    work: tempfile::TempDir,
    host: String,
}

impl Client {
    fn new(host: String) -> Client {
        Client {
            work: tempfile::tempdir().unwrap(),
            host,
        }
    }

    fn authfile(&self) -> std::path::PathBuf {
        self.work.path().join("auth.json")
    }

    async fn run(&self, args: Vec<String>) -> (bool, String) {
        let authfile = self.authfile();
        blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            skopeo(&authfile, &args)
        })
        .await
    }

    async fn push(
        &self,
        image: &std::path::Path,
        creds: Option<&str>,
        target: &str,
    ) -> (bool, String) {
        let mut args = vec!["copy".to_owned(), "--dest-tls-verify=false".to_owned()];
        if let Some(c) = creds {
            args.push(format!("--dest-creds={c}"));
        }
        args.push(format!("oci:{}:latest", image.display()));
        args.push(format!("docker://{}/{target}", self.host));
        self.run(args).await
    }

    fn pulled(&self, source: &str) -> std::path::PathBuf {
        self.work
            .path()
            .join(format!("pulled-{}", source.replace(['/', ':'], "_")))
    }

    async fn pull(&self, creds: Option<&str>, source: &str) -> (bool, String) {
        let out = self.pulled(source);
        let mut args = vec!["copy".to_owned(), "--src-tls-verify=false".to_owned()];
        if let Some(c) = creds {
            args.push(format!("--src-creds={c}"));
        }
        args.push(format!("docker://{}/{source}", self.host));
        args.push(format!("oci:{}:latest", out.display()));
        self.run(args).await
    }

    /// The digest of the manifest as regate serves it, read with raw HTTP and a token.
    async fn manifest_digest(&self, creds: (&str, &str), repo: &str, reference: &str) -> String {
        let base = format!("http://{}", self.host);
        let scope = format!("repository:{repo}:pull");
        let token = token(&base, Some(creds), &[&scope]).await;
        let resp = get(
            &format!("{base}/v2/{repo}/manifests/{reference}"),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("accept", "application/vnd.oci.image.manifest.v1+json"),
            ],
        )
        .await;
        assert_eq!(resp.status, 200);
        let digest = format!("sha256:{}", sha256_hex(&resp.body));
        assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
        let manifest: serde_json::Value = resp.json();
        manifest["config"]["digest"].as_str().unwrap().to_owned() + " " + digest.as_str()
    }
}

async fn seed_acl_end_to_end(seed: Seed) {
    let c = Client::new(seed.gateway.host());
    let image = c.work.path().join("image");
    let built = oci_image(&image, 3, 7);

    // Login: a wrong password fails, the right one succeeds and is used afterwards.
    let login = |user: &str, pw: &str| {
        vec![
            "login".to_owned(),
            "--tls-verify=false".to_owned(),
            "-u".to_owned(),
            user.to_owned(),
            "-p".to_owned(),
            pw.to_owned(),
            c.host.clone(),
        ]
    };
    let (ok, out) = c.run(login("admin", "wrong")).await;
    assert!(!ok, "a wrong password must not log in: {out}");
    let (ok, out) = c.run(login("admin", "admin-pw")).await;
    assert!(ok, "{out}");

    // admin pushes anything (with the stored login), and the image comes back identical.
    let (ok, out) = c.push(&image, None, "library/app:v1").await;
    assert!(ok, "admin push: {out}");
    assert!(seed.registry.has_repository("library/app"));
    // skopeo compresses the layers on the way to a registry, so the manifest changes but
    // the config (which names the uncompressed layers) does not.
    let served = c
        .manifest_digest(("admin", "admin-pw"), "library/app", "v1")
        .await;
    let (config, digest) = served.split_once(' ').unwrap();
    assert_eq!(config, built.config);
    let (ok, out) = c.pull(None, "library/app:v1").await;
    assert!(ok, "admin pull: {out}");
    assert_eq!(oci_manifest_digest(&c.pulled("library/app:v1")), digest);
    let (ok, out) = c.push(&image, None, "hello-world:latest").await;
    assert!(ok, "{out}");

    // A logged-in user pulls, but cannot push outside their namespace.
    let (ok, out) = c.pull(Some("alice:alice-pw"), "library/app:v1").await;
    assert!(ok, "alice pull: {out}");
    let (ok, out) = c
        .push(&image, Some("alice:alice-pw"), "library/app:v2")
        .await;
    assert!(!ok, "alice must not push to library/app");
    assert!(
        out.contains("denied") || out.contains("unauthorized"),
        "{out}"
    );
    assert_eq!(
        get(
            &format!("{}/v2/library/app/tags/list", seed.registry.url()),
            &[]
        )
        .await
        .status,
        if seed_checks_tokens(&seed) { 401 } else { 200 }
    );

    // `${account}/*`: alice's own namespace, one level deep only.
    let (ok, out) = c.push(&image, Some("alice:alice-pw"), "alice/app:v1").await;
    assert!(ok, "alice pushes to her namespace: {out}");
    let served = c
        .manifest_digest(("alice", "alice-pw"), "alice/app", "v1")
        .await;
    assert!(served.starts_with(&built.config));
    let (ok, _) = c
        .push(&image, Some("alice:alice-pw"), "alice/deep/app:v1")
        .await;
    assert!(!ok, "a glob * does not cross /");
    assert!(!seed.registry.has_repository("alice/deep/app"));
    let (ok, _) = c
        .push(&image, Some("hussein:hussein-pw"), "alice/app:v2")
        .await;
    assert!(!ok, "hussein does not own alice/");

    // The seed's typo: the rule names `hussien`, so hussein gets only the generic pull.
    let (ok, _) = c
        .push(&image, Some("hussein:hussein-pw"), "ubuntu:latest")
        .await;
    assert!(!ok);
    assert!(!seed.registry.has_repository("ubuntu"));

    // `test` gets nothing at all.
    let (ok, out) = c.pull(Some("test:test-pw"), "library/app:v1").await;
    assert!(!ok, "test must not pull: {out}");

    // Anonymous: hello-world only.
    let (ok, out) = c.run(vec!["logout".into(), c.host.clone()]).await;
    assert!(ok, "{out}");
    let (ok, out) = c.pull(None, "hello-world:latest").await;
    assert!(ok, "anonymous pulls hello-world: {out}");
    let (ok, _) = c.pull(None, "library/app:v1").await;
    assert!(!ok, "anonymous must not pull library/app");

    // skopeo delete asks for `repository:<name>:*`; admin's `*` rule grants it.
    let args = vec![
        "delete".to_owned(),
        "--tls-verify=false".to_owned(),
        "--creds=admin:admin-pw".to_owned(),
        format!("docker://{}/library/app:v1", c.host),
    ];
    let (ok, out) = c.run(args).await;
    assert!(ok, "admin deletes: {out}");
    seed.gateway.server.shutdown().await;
}

fn seed_checks_tokens(seed: &Seed) -> bool {
    std::fs::read_to_string(seed.registry.dir.path().join("registry.yml"))
        .unwrap()
        .contains("token:")
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_acl_with_a_registry_without_auth() {
    seed_acl_end_to_end(Seed::start().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_acl_with_a_registry_that_checks_tokens_too() {
    seed_acl_end_to_end(Seed::start_token_checking().await).await;
}
