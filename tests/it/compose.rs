//! The deployment files, checked and run here without Docker: compose.yml with the override
//! files in config/, the example configs in config/, and the Dockerfile.
//!
//! No image can be pulled and no Docker engine runs here, so the tests read the files and
//! run the topology they describe with the same programs: Debian's `docker-registry` (the
//! distribution 2.8 code inside registry:2), configured only by the `REGISTRY_*` variables
//! the compose files give it on top of the registry:2 image's own config file; and the regate
//! binary, started with the Dockerfile's ENTRYPOINT and CMD (or the compose `command`) and the
//! config file mounted from config/. skopeo then pushes and pulls over HTTPS, trusting only
//! the CA `regate cert init` made.
//!
//! What is rewritten, because it belongs to the container rather than to the files:
//! - paths under a mount target (in regate's config and argv, in `REGISTRY_*` values) point
//!   into a temp dir standing in for the mounts: a copy of config/ with certificates from
//!   `regate cert init`, and a folder per named volume. That is how data_dir and
//!   REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY land in the volumes' stand-ins;
//! - REGISTRY_HTTP_ADDR becomes `127.0.0.1:0`: `:5000` is private to the registry's
//!   container, but here it would listen on every interface of the machine, and the port may
//!   be taken (Debian's own docker-registry service uses it);
//! - regate's server.addr and http_redirect_addr become free loopback ports instead of 443
//!   and 80, and upstream.url's `registry:5000` (a compose service name) the registry's
//!   address.
//!
//! Each rewritten value is first checked against the compose files: the listen ports are
//! published, the upstream is the registry service on its REGISTRY_HTTP_ADDR port, data_dir
//! is on a writable volume, and where the registry checks tokens, regate's issuer, service and
//! signing certificate are the registry's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::compose::*;
use crate::common::stand_in::{
    self, host_path, https_get, pulled_config, registry_env, Host, Process, RegateService, Skopeo,
    REGATE,
};
use crate::common::{basic, get, oci_image, ReservedPort};
use serde_yaml::{Mapping, Value};

/// The layouts the compose files document: `docker compose -f ...` for each.
const LAYOUT_PLAIN: &[&str] = &["compose.yml"];
const LAYOUT_TOKEN: &[&str] = &["compose.yml", "config/compose.token-registry.yml"];
const LAYOUT_SEED: &[&str] = &["compose.yml", "config/compose.docker_auth-seed.yml"];

/// The example accounts, with the passwords the config files' comments give.
const ADMIN: &str = "admin:admin-example";
const ALICE: &str = "alice:alice-example";
const HUSSEIN: &str = "hussein:hussein-example";

/// The names regate's certificate is made for here: the documented one, and the address
/// the test reaches regate by.
const CERT_HOSTS: &[&str] = &["registry.example.com", "127.0.0.1"];

/// The variables a user would have in the shell or `.env`: none, so defaults apply.
fn no_vars() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::new()
}

/// .dockerignore's patterns: (re-include?, pattern).
fn dockerignore() -> Vec<(bool, String)> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.strip_prefix('!') {
            Some(p) => (
                true,
                p.trim_start_matches("./").trim_matches('/').to_owned(),
            ),
            None => (
                false,
                l.trim_start_matches("./").trim_matches('/').to_owned(),
            ),
        })
        .collect()
}

/// Whether the build context leaves `path` out: the last pattern that matches the path or
/// one of its parent folders decides (moby/patternmatcher's rule).
fn ignored(patterns: &[(bool, String)], path: &str) -> bool {
    let mut prefixes: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
    prefixes.push(path);
    let mut out = false;
    for (include, pattern) in patterns {
        if prefixes
            .iter()
            .any(|p| glob(pattern.as_bytes(), p.as_bytes()))
        {
            out = !include;
        }
    }
    out
}

/// Go's filepath.Match plus `**`: `*` and `?` stay within one path segment.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => {
            let rest = rest.strip_prefix(b"/").unwrap_or(rest);
            (0..=text.len()).any(|i| glob(rest, &text[i..]))
        }
        [b'*', rest @ ..] => (0..=text.len())
            .take_while(|&i| i == 0 || text[i - 1] != b'/')
            .any(|i| glob(rest, &text[i..])),
        [b'?', rest @ ..] => matches!(text, [c, t @ ..] if *c != b'/' && glob(rest, t)),
        [p, rest @ ..] => matches!(text, [c, t @ ..] if c == p && glob(rest, t)),
    }
}

/// Every file under `dir`, relative to the repository.
fn files_under(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new(REPO).join(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(REPO).unwrap();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The topology, run from the files

/// The compose topology, running here.
struct Topology {
    compose: Value,
    host: Host,
    registry: Process,
    registry_addr: SocketAddr,
    /// The registry's storage: the named volume's stand-in.
    storage: PathBuf,
    regate: Regate,
    https: SocketAddr,
    redirect: Option<SocketAddr>,
}

/// regate, running.
struct Regate {
    process: Process,
    https: SocketAddr,
    redirect: Option<SocketAddr>,
    /// The port its config listens on in the container.
    container_port: u16,
    /// What `regate check` says about the config, as `docker compose run regate check`
    /// would.
    check: String,
    /// Its listening ports, held while it runs.
    _ports: Vec<ReservedPort>,
}

impl Topology {
    fn start(files: &[&str]) -> Topology {
        let compose = compose(files, &no_vars());
        let host = Host::new(CERT_HOSTS);
        // The seed's hand-made pair (./ssl), from the certificates of step 1.
        let certs = host.project().join("config/certs");
        let ssl = host.project().join("ssl");
        std::fs::create_dir_all(&ssl).unwrap();
        std::fs::copy(certs.join("server.crt"), ssl.join("server.pem")).unwrap();
        std::fs::copy(certs.join("server.key"), ssl.join("server.key")).unwrap();
        let (registry, registry_addr, storage) = start_registry(&compose, &host);
        let regate = start_regate(&compose, &host, registry_addr);
        Topology {
            compose,
            host,
            registry,
            registry_addr,
            storage,
            https: regate.https,
            redirect: regate.redirect,
            regate,
        }
    }

    /// `host:port` as clients write it in image names.
    fn client_host(&self) -> String {
        self.https.to_string()
    }

    fn logs(&self) -> String {
        format!(
            "--- regate:\n{}\n--- registry:\n{}",
            self.regate.process.log(),
            self.registry.log()
        )
    }

    fn registry_checks_tokens(&self) -> bool {
        env_of(service(&self.compose, "registry"))
            .get("REGISTRY_AUTH")
            .is_some_and(|a| a == "token")
    }
}

/// The registry service's `docker-registry`, its storage on the named volume's stand-in.
fn start_registry(compose: &Value, host: &Host) -> (Process, SocketAddr, PathBuf) {
    let env = registry_env(host, service(compose, "registry"));
    let storage = PathBuf::from(
        env.get("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY")
            .expect("compose sets REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"),
    );
    assert!(
        storage.starts_with(host.dir.path().join("volumes")),
        "the registry's storage is not on a named volume: {}",
        storage.display()
    );
    let (process, addr) = stand_in::start_registry(host, "registry", &env);
    (process, addr, storage)
}

/// regate with the image's argv and the mounted config, its container-only values
/// checked against the compose files and then rewritten.
fn start_regate(compose: &Value, host: &Host, registry_addr: SocketAddr) -> Regate {
    let svc = service(compose, "regate");
    let mut regate = RegateService::read(host, svc);
    let config_arg = regate.config_arg.clone();
    let config = &mut regate.config;

    let published: Vec<u16> = ports_of(svc)
        .into_iter()
        .filter(|p| p.published.is_some())
        .map(|p| p.target)
        .collect();
    let container_port = port_of(config["server"]["addr"].as_str().unwrap());
    assert!(
        published.contains(&container_port),
        "{config_arg}: server.addr's port {container_port} is not published ({published:?})"
    );
    let mut ports = vec![ReservedPort::new()];
    let https = SocketAddr::from(([127, 0, 0, 1], ports[0].port()));
    config["server"]["addr"] = https.to_string().into();
    let mut redirect = None;
    if let Some(addr) = config["server"].get("http_redirect_addr") {
        let port = port_of(addr.as_str().unwrap());
        assert!(
            published.contains(&port),
            "{config_arg}: server.http_redirect_addr's port {port} is not published ({published:?})"
        );
        ports.push(ReservedPort::new());
        let addr = SocketAddr::from(([127, 0, 0, 1], ports[1].port()));
        config["server"]["http_redirect_addr"] = addr.to_string().into();
        redirect = Some(addr);
    }

    let upstream = config["upstream"]["url"].as_str().unwrap().to_owned();
    let upstream_host = upstream
        .strip_prefix("http://")
        .and_then(|r| r.split(':').next())
        .unwrap();
    assert_eq!(
        upstream_host, "registry",
        "{config_arg}: upstream.url names the registry service"
    );
    assert!(
        depends_on(svc).iter().any(|d| d == upstream_host),
        "regate depends_on {upstream_host}"
    );
    let registry_env = env_of(service(compose, "registry"));
    assert_eq!(
        port_of(&upstream),
        port_of(&registry_env["REGISTRY_HTTP_ADDR"]),
        "{config_arg}: upstream.url's port is REGISTRY_HTTP_ADDR's"
    );
    config["upstream"]["url"] = format!("http://{registry_addr}").into();

    if registry_env
        .get("REGISTRY_AUTH")
        .is_some_and(|a| a == "token")
    {
        check_token_trust(compose, host, config, &config_arg);
    }
    regate.check_data_dir();
    let to = regate.config_path.clone();
    let (process, check_text) = regate.start(host, svc, "regate", &to, https);
    Regate {
        process,
        https,
        redirect,
        container_port,
        check: check_text,
        _ports: ports,
    }
}

/// Where the registry checks tokens: it trusts what regate signs, by the same issuer,
/// service and certificate.
fn check_token_trust(compose: &Value, host: &Host, config: &Value, config_arg: &str) {
    let registry = service(compose, "registry");
    let env = env_of(registry);
    let token = config.get("token").cloned().unwrap_or(Value::Null);
    let issuer = token
        .get("issuer")
        .and_then(Value::as_str)
        .unwrap_or("regate");
    let service_name = token
        .get("service")
        .and_then(Value::as_str)
        .unwrap_or("Docker registry");
    assert_eq!(
        issuer, env["REGISTRY_AUTH_TOKEN_ISSUER"],
        "{config_arg}: token.issuer"
    );
    assert_eq!(
        service_name, env["REGISTRY_AUTH_TOKEN_SERVICE"],
        "{config_arg}: token.service"
    );
    // docker_auth's rule, which regate keeps: no token pair means the server pair signs.
    let signing = token
        .get("certificate")
        .or_else(|| config["server"].get("certificate"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{config_arg}: no certificate signs the tokens"));
    let regate_side = host_path(&host.mounts(service(compose, "regate")), signing).unwrap();
    let bundle = &env["REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE"];
    let registry_side = host_path(&host.mounts(registry), bundle)
        .unwrap_or_else(|| panic!("REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE {bundle} is on no mount"));
    assert_eq!(
        regate_side.canonicalize().unwrap(),
        registry_side.canonicalize().unwrap(),
        "{config_arg}: the token certificate {signing} and the registry's bundle {bundle} are different files"
    );
}

/// What every layout serves besides the registry API: health, readiness, the redirect, and
/// the compose healthcheck once regate can run it.
async fn gateway_extras(t: &Topology) {
    let health = https_get(&t.host.ca(), t.https, "/healthz", &[]).await;
    assert_eq!(health.status, 200, "{}", t.logs());
    let ready = https_get(&t.host.ca(), t.https, "/readyz", &[]).await;
    assert_eq!(ready.status, 200, "the registry is up: {}", t.logs());

    if let Some(redirect) = t.redirect {
        let resp = get(&format!("http://{redirect}/v2/"), &[]).await;
        assert!(resp.status.is_redirection(), "{}", resp.status);
        assert_eq!(
            resp.header("location"),
            Some(format!("https://127.0.0.1:{}/v2/", t.https.port()).as_str())
        );
    }

    let test = strings(&service(&t.compose, "regate")["healthcheck"]["test"]);
    assert_eq!(test[0], "CMD", "exec form: the image has no shell");
    assert_eq!(
        test[1], "/regate",
        "the healthcheck runs the image's own binary"
    );
    let args: Vec<String> = test[2..]
        .iter()
        .map(|a| {
            a.replace(
                &format!("127.0.0.1:{}", t.regate.container_port),
                &t.https.to_string(),
            )
        })
        .collect();
    let out = Command::new(REGATE).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "healthcheck {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn no_warnings(check: &str) -> bool {
    !check.lines().any(|l| l.starts_with("warning"))
}

/// skopeo failed because regate said no, not for some other reason.
fn refused(out: &str) -> bool {
    out.contains("denied")
        || out.contains("unauthorized")
        || out.contains("authentication required")
}

/// The example configs' accounts and rules (config/regate.yml and
/// config/regate-token-registry.yml), end to end.
async fn example_accounts(t: &Topology) {
    let c = Skopeo::new(&t.host.ca(), t.client_host());
    let image = c.work.path().join("image");
    let built = oci_image(&image, 2, 23);

    let (ok, out) = c.push(&image, Some("admin:wrong"), "library/app:1.0").await;
    assert!(
        !ok && refused(&out),
        "a wrong password must not push: {out}"
    );
    let (ok, out) = c.push(&image, Some(ADMIN), "library/app:1.0").await;
    assert!(ok, "admin pushes: {out}\n{}", t.logs());
    assert!(
        t.storage
            .join("docker/registry/v2/repositories/library/app")
            .is_dir(),
        "the image is on the registry's volume"
    );

    let (ok, out, pulled) = c.pull(Some(ALICE), "library/app:1.0").await;
    assert!(ok, "alice pulls: {out}");
    assert_eq!(pulled_config(&pulled), built.config);
    let (ok, out) = c.push(&image, Some(ALICE), "alice/app:1.0").await;
    assert!(ok, "alice pushes to her namespace: {out}");
    let (ok, out) = c.push(&image, Some(ALICE), "library/app:2.0").await;
    assert!(
        !ok && refused(&out),
        "alice must not push to library/: {out}"
    );

    let (ok, out) = c.push(&image, Some(ADMIN), "public/app:1.0").await;
    assert!(ok, "{out}");
    let (ok, out, _) = c.pull(None, "public/app:1.0").await;
    assert!(ok, "anonymous pulls public/: {out}");
    let (ok, out, _) = c.pull(None, "library/app:1.0").await;
    assert!(
        !ok && refused(&out),
        "anonymous must not pull library/: {out}"
    );
}

/// The registry itself: open in layout 1 (reachable only through regate because compose
/// publishes nothing of it), checking regate's tokens in the others.
async fn registry_direct(t: &Topology) {
    let direct = format!("http://{}", t.registry_addr);
    let resp = get(&format!("{direct}/v2/"), &[]).await;
    if !t.registry_checks_tokens() {
        assert_eq!(resp.status, 200);
        return;
    }
    assert_eq!(resp.status, 401, "the registry checks tokens itself");
    let env = env_of(service(&t.compose, "registry"));
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(&env["REGISTRY_AUTH_TOKEN_REALM"]),
        "{challenge}"
    );
    // A token regate signs is one the registry accepts.
    let (user, password) = ADMIN.split_once(':').unwrap();
    let service_name = env["REGISTRY_AUTH_TOKEN_SERVICE"].replace(' ', "%20");
    let auth = basic(user, password);
    let resp = https_get(
        &t.host.ca(),
        t.https,
        &format!("/auth?service={service_name}&scope=repository:library/app:pull"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(resp.status, 200);
    let token = resp.json()["token"].as_str().unwrap().to_owned();
    let resp = get(
        &format!("{direct}/v2/library/app/tags/list"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(
        resp.status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&resp.body),
        t.registry.log()
    );
    assert!(String::from_utf8_lossy(&resp.body).contains("1.0"));
}

// ---------------------------------------------------------------------------------------
// The tests

#[test]
fn compose_yml_runs_registry_2_unpublished_and_regate_in_front() {
    let compose = compose(LAYOUT_PLAIN, &no_vars());
    let names: BTreeSet<String> = compose["services"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(scalar)
        .collect();
    assert_eq!(names, BTreeSet::from(["registry".into(), "regate".into()]));
    let declared: BTreeSet<String> = compose["volumes"]
        .as_mapping()
        .expect("top-level volumes")
        .keys()
        .map(scalar)
        .collect();

    let regate = service(&compose, "regate");
    let build = regate
        .get("build")
        .expect("regate is built from the repository");
    let context = build.get("context").unwrap_or(build);
    assert_eq!(scalar(context), ".");
    assert_eq!(regate["restart"], "unless-stopped");
    let ports = ports_of(regate);
    assert!(
        ports.contains(&Port {
            published: Some(443),
            target: 443
        }),
        "{ports:?}"
    );
    assert!(
        ports.iter().all(|p| [443, 80].contains(&p.target)),
        "{ports:?}"
    );
    let mounts = mounts_of(regate);
    assert!(
        mounts.contains(&Mount {
            source: Some("./config".into()),
            target: "/config".into(),
            read_only: true
        }),
        "{mounts:?}"
    );
    let data = mounts
        .iter()
        .find(|m| m.target == "/data")
        .expect("a volume for data_dir");
    assert!(declared.contains(data.volume_name().expect("a named volume")));
    assert!(!data.read_only);
    let test = strings(&regate["healthcheck"]["test"]);
    assert_eq!(&test[..2], ["CMD", "/regate"], "{test:?}");
    let regate_networks = networks_of(regate);
    assert!(
        regate_networks.iter().any(|n| !is_internal(&compose, n)),
        "regate is on a network its ports can be published from"
    );

    let registry = service(&compose, "registry");
    assert!(depends_on(regate).contains(&"registry".to_owned()));
    assert_eq!(registry["restart"], "unless-stopped");
    for n in &networks_of(registry) {
        assert!(is_internal(&compose, n), "registry network {n} is internal");
        assert!(
            regate_networks.contains(n),
            "regate reaches the registry on {n}"
        );
    }
    let storage = mounts_of(registry);
    assert_eq!(storage.len(), 1, "{storage:?}");
    assert_eq!(storage[0].target, "/var/lib/registry");
    assert!(declared.contains(storage[0].volume_name().expect("a named volume")));
    let env = env_of(registry);
    assert_eq!(
        env.get("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY")
            .map(String::as_str),
        Some("/var/lib/registry")
    );
    assert!(env
        .get("REGISTRY_HTTP_SECRET")
        .is_some_and(|s| s.len() >= 16));
}

#[test]
fn every_layout_keeps_registry_2_stock_and_unpublished() {
    for layout in [LAYOUT_PLAIN, LAYOUT_TOKEN, LAYOUT_SEED] {
        let compose = compose(layout, &no_vars());
        let registry = service(&compose, "registry");
        assert_eq!(registry["image"], "registry:2", "{layout:?}");
        for key in [
            "build",
            "ports",
            "expose",
            "command",
            "entrypoint",
            "configs",
            "network_mode",
        ] {
            assert!(
                registry.get(key).is_none(),
                "{layout:?}: registry has `{key}`"
            );
        }
        for key in env_of(registry).keys() {
            assert!(key.starts_with("REGISTRY_"), "{layout:?}: {key}");
        }
        // Configured only by environment: no config file, and no private key, mounted.
        for m in mounts_of(registry) {
            assert!(
                m.target == "/var/lib/registry"
                    || (m.read_only && (m.target.ends_with(".pem") || m.target.ends_with(".crt"))),
                "{layout:?}: registry mounts {m:?}"
            );
        }
        assert_eq!(service(&compose, "regate")["restart"], "unless-stopped");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn layout_registry_without_auth_push_and_pull() {
    let t = Topology::start(LAYOUT_PLAIN);
    assert!(!t.registry_checks_tokens());
    assert!(no_warnings(&t.regate.check), "{}", t.regate.check);
    example_accounts(&t).await;
    registry_direct(&t).await;
    gateway_extras(&t).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn layout_registry_checking_tokens_push_and_pull() {
    let t = Topology::start(LAYOUT_TOKEN);
    assert!(t.registry_checks_tokens());
    assert!(no_warnings(&t.regate.check), "{}", t.regate.check);
    example_accounts(&t).await;
    registry_direct(&t).await;
    gateway_extras(&t).await;
}

/// The migration: the seed's docker_auth config (plus `upstream`), its certificate pair
/// at /ssl and its registry settings, run as they are.
#[tokio::test(flavor = "multi_thread")]
async fn layout_migrated_from_the_seed_push_and_pull() {
    let t = Topology::start(LAYOUT_SEED);
    assert!(t.registry_checks_tokens());
    // regate runs the seed's file as it is, and points at its typo.
    assert!(t.regate.check.contains("hussien"), "{}", t.regate.check);
    let c = Skopeo::new(&t.host.ca(), t.client_host());
    let image = c.work.path().join("image");
    let built = oci_image(&image, 2, 29);

    for target in ["library/app:1.0", "hello-world:latest"] {
        let (ok, out) = c.push(&image, Some(ADMIN), target).await;
        assert!(ok, "admin pushes {target}: {out}\n{}", t.logs());
    }
    let (ok, out, pulled) = c.pull(None, "hello-world:latest").await;
    assert!(ok, "anonymous pulls hello-world (`\"\": {{}}`): {out}");
    assert_eq!(pulled_config(&pulled), built.config);
    let (ok, out, _) = c.pull(None, "library/app:1.0").await;
    assert!(!ok && refused(&out), "anonymous pulls nothing else: {out}");
    let (ok, out, _) = c.pull(Some(HUSSEIN), "library/app:1.0").await;
    assert!(ok, "a logged-in user pulls: {out}");
    let (ok, out) = c.push(&image, Some(HUSSEIN), "ubuntu:latest").await;
    assert!(
        !ok && refused(&out),
        "the seed's rule names `hussien`, so hussein may not push ubuntu: {out}"
    );

    let resp = get(&format!("http://{}/v2/", t.registry_addr), &[]).await;
    assert_eq!(resp.status, 401, "the registry still checks tokens");
    gateway_extras(&t).await;
}

#[test]
fn docker_auth_seed_config_is_the_seeds_plus_upstream() {
    let config = read_yaml("config/docker_auth-seed.yml");
    let seed: Value = serde_yaml::from_str(
        r#"
server:
  addr: ":5001"
  certificate: "/ssl/server.pem"
  key: "/ssl/server.key"
token:
  issuer: "Auth Service"
  expiration: 900
acl:
  - match: {account: "admin"}
    actions: ["*"]
  - match: {account: "hussien", name: "ubuntu"}
    actions: ["*"]
  - match: {account: "test"}
    actions: []
  - match: {account: "/.+/"}
    actions: ["pull"]
  - match: {account: "", name: "hello-world"}
    actions: ["pull"]
"#,
    )
    .unwrap();
    let keys: Vec<String> = config.as_mapping().unwrap().keys().map(scalar).collect();
    assert_eq!(keys, ["server", "token", "users", "acl", "upstream"]);
    for key in ["server", "token", "acl"] {
        assert_eq!(config[key], seed[key], "{key} is the seed's");
    }
    let users: Vec<String> = config["users"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(scalar)
        .collect();
    assert_eq!(users, ["admin", "hussein", ""]);
    assert_eq!(config["users"][""], Value::Mapping(Mapping::new()));
    assert_eq!(config["upstream"]["url"], "http://registry:5000");
}

#[test]
fn example_passwords_are_the_ones_the_comments_give() {
    for (file, accounts) in [
        ("config/regate.yml", &[ADMIN, ALICE][..]),
        ("config/regate-token-registry.yml", &[ADMIN, ALICE][..]),
        ("config/docker_auth-seed.yml", &[ADMIN, HUSSEIN][..]),
    ] {
        let text = read(file);
        let config = read_yaml(file);
        for account in accounts {
            let (user, password) = account.split_once(':').unwrap();
            let hash = config["users"][user]["password"].as_str().unwrap();
            assert!(
                hash.starts_with("$2y$"),
                "{file}: {user}: htpasswd -B's format"
            );
            assert!(
                bcrypt::verify(password, hash).unwrap(),
                "{file}: {user}'s hash is not for {password:?}"
            );
            assert!(
                text.contains(&format!("\"{password}\"")),
                "{file}: the comment names {user}'s password"
            );
        }
    }
}

#[test]
fn dockerfile_builds_from_the_context_and_runs_without_a_shell() {
    let stages = dockerfile();
    assert!(stages.len() >= 2, "multi-stage");
    let build = &stages[0];
    assert!(
        build.image.starts_with("rust:1-bookworm"),
        "{}",
        build.image
    );
    assert!(
        build
            .all("RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "the builder runs cargo build --release --locked"
    );
    let image = stages.last().unwrap();
    // Debian 12 like the builder (the same glibc), with libgcc: what regate links (below).
    assert!(
        image.image.starts_with("gcr.io/distroless/cc-debian12"),
        "{}",
        image.image
    );
    assert!(
        image.all("RUN").is_empty(),
        "the final stage has no shell to RUN"
    );
    let user = image.all("USER");
    let user = user.last().expect("USER in the final stage");
    assert!(
        !["root", "0", "0:0"].contains(user) && !user.starts_with("0:"),
        "runs as root: {user}"
    );
    assert_eq!(image.exec_form("ENTRYPOINT"), ["/regate"]);
    assert_eq!(
        image.exec_form("CMD"),
        ["serve", "--config", "/config/regate.yml"]
    );
    let build_name = build.name.as_deref().expect("the builder stage is named");
    assert!(
        image
            .all("COPY")
            .iter()
            .any(|c| c.contains(&format!("--from={build_name}")) && c.ends_with(" /regate")),
        "the binary is copied to /regate"
    );

    // Everything cargo reads is in the build context and copied into the builder.
    let patterns = dockerignore();
    let copies = build.context_copies();
    let mut inputs: Vec<String> = vec!["Cargo.toml".into(), "Cargo.lock".into()];
    if Path::new(REPO).join("build.rs").exists() {
        inputs.push("build.rs".into());
    }
    inputs.extend(files_under("src"));
    for input in &inputs {
        assert!(
            !ignored(&patterns, input),
            ".dockerignore leaves out {input}"
        );
        let copied = copies.iter().any(|(sources, _)| {
            sources
                .iter()
                .any(|s| input == s || input.starts_with(&format!("{}/", s.trim_end_matches('/'))))
        });
        assert!(copied, "the Dockerfile does not COPY {input}");
    }
    for (sources, _) in &copies {
        for s in sources {
            assert!(Path::new(REPO).join(s).exists(), "COPY {s}: no such file");
        }
    }
    // And nothing secret or bulky goes to the builder.
    for path in [
        "config/certs/server.key",
        "config/regate.yml",
        "target/release/regate",
        ".git/config",
        ".regate-local/admin.password",
    ] {
        assert!(ignored(&patterns, path), ".dockerignore lets {path} in");
    }
}

#[test]
fn regate_links_only_what_distroless_cc_provides() {
    // distroless/cc: glibc (libc, libm, libpthread, libdl, librt) and libgcc_s; no OpenSSL.
    let out = Command::new("ldd").arg(REGATE).output().expect("ldd");
    assert!(out.status.success());
    let allowed = [
        "linux-vdso.so",
        "libc.so",
        "libm.so",
        "libgcc_s.so",
        "libpthread.so",
        "libdl.so",
        "librt.so",
        "ld-linux",
        "/lib64/ld-linux",
        "/lib/ld-linux",
    ];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let lib = line.split_whitespace().next().unwrap_or("");
        assert!(
            allowed.iter().any(|a| lib.starts_with(a)),
            "regate links {lib}, which distroless/cc does not have"
        );
    }
}

#[test]
fn the_test_reads_compose_like_compose() {
    // Interpolation as compose does it.
    let vars = BTreeMap::from([("SET", "x"), ("EMPTY", "")]);
    let cases = [
        ("${SET:-d}", "x"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}/a", "d/a"),
        ("$SET$$", "x$"),
        ("a${UNSET}b", "ab"),
    ];
    for (input, want) in cases {
        assert_eq!(interpolate_str(input, &vars, "t"), want, "{input}");
    }
    // Merging: volumes by target, commands replaced, `!override`.
    let mut base: Value = serde_yaml::from_str(
        "s: {volumes: [a:/x, b:/y], command: [a], ports: ['1:1'], environment: {A: '1'}}",
    )
    .unwrap();
    let over: Value = serde_yaml::from_str(
        "s: {volumes: [c:/y, d:/z], command: [b], ports: !override ['2:2'], environment: {B: '2'}}",
    )
    .unwrap();
    merge(&mut base, over, "");
    let want: Value = serde_yaml::from_str(
        "s: {volumes: [a:/x, c:/y, d:/z], command: [b], ports: ['2:2'], environment: {A: '1', B: '2'}}",
    )
    .unwrap();
    assert_eq!(base, want);
    // .dockerignore: the last matching pattern decides, parents included.
    let patterns = vec![(false, "*".to_owned()), (true, "src".to_owned())];
    assert!(!ignored(&patterns, "src/auth/token.rs"));
    assert!(ignored(&patterns, "config/certs/ca.key"));
    assert!(glob(b"**/*.key", b"config/certs/ca.key"));
    assert!(!glob(b"*.key", b"config/ca.key"));
}
