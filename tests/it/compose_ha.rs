//! compose.ha.yml run from its files, without Docker, as `compose` runs compose.yml (its
//! module doc says how): Debian's `redis-server`, two `docker-registry` processes, three
//! regate processes and Debian's `haproxy`, each started with what compose.ha.yml,
//! config/regate-ha.yml and config/haproxy-ha.cfg give it. skopeo pushes and pulls through
//! haproxy over HTTPS, trusting only the CA `regate cert init` made.
//!
//! Stand-ins, for what a user provides: the `.env` the file's comment asks for (two made-up
//! secrets), written into the project folder and read as compose reads it; the
//! `redis-password` secret, a file holding `.env`'s REDIS_PASSWORD, at the path compose
//! mounts it (`/run/secrets/redis-password`).
//!
//! What is rewritten, because it belongs to the containers rather than to the files, each
//! value first checked against the files:
//! - container paths under mounts (as in `compose`): regate's config and data_dir, the
//!   registries' storage (one volume, so one folder for both), Redis's `/data` (the redis
//!   image's working directory) and haproxy's config file;
//! - listen addresses: `:6379` (Redis), `:5000` (REGISTRY_HTTP_ADDR), `:443` (regate's
//!   server.addr and haproxy's `bind`) become loopback ports, since here the services share
//!   one network namespace; each replica gets its own copy of the one config file, which
//!   differs only in server.addr;
//! - service names: `redis:6379` (REGISTRY_REDIS_ADDR, shared_state.redis.addr),
//!   `registryN:5000` (upstream.url) and `regateN:443` (haproxy's `server` lines) become
//!   those loopback addresses; the names are services the referrer depends_on, on the port
//!   that service listens on;
//! - server.trusted_proxies: haproxy's fixed address on the frontend network (172.30.0.10)
//!   becomes 127.0.0.1, where haproxy's connections to the replicas come from here.
//!
//! haproxy-ha.cfg's `resolvers docker` (Docker's DNS at 127.0.0.11) stays: with addresses
//! in the `server` lines there is nothing to resolve. Its `global maxconn 20000` needs about
//! 40,000 file descriptors, which Docker gives a container; where this machine's limit is
//! lower the copy gets `no strict-limits` (haproxy then warns and runs with fewer).

mod topology;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::compose::{scalar, service, strings};
use crate::common::stand_in::{https_get, try_https_get, try_https_get_from, Skopeo, REGATE};
use crate::common::{basic, http, noise, oci_image, oci_manifest_digest, sha256_hex, Resp};
use hyper::Method;
use topology::{HaTopology, REGATES, REGISTRIES};

/// The example account with the password regate-ha.yml's comment gives.
const ADMIN: &str = "admin:admin-example";

/// One Redis command (RESP) after AUTH and SELECT `db`; the reply's first line.
fn redis_command(addr: SocketAddr, password: &str, db: &str, command: &[&str]) -> String {
    let resp = |args: &[&str]| {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        out
    };
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = [
        resp(&["AUTH", password]),
        resp(&["SELECT", db]),
        resp(command),
        resp(&["QUIT"]),
    ]
    .concat();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(&lines[..2], ["+OK", "+OK"], "AUTH and SELECT: {answer}");
    lines[2].to_owned()
}

/// The `service` regate's challenge names.
fn challenge_service(resp: &Resp) -> String {
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    challenge
        .split("service=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no service in `{challenge}`"))
        .to_owned()
}

/// The path and query of a registry's `Location`.
fn location_path(resp: &Resp) -> String {
    let location = resp.header("location").expect("a Location");
    location
        .split_once("/v2/")
        .map(|(_, p)| format!("/v2/{p}"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_ha_yml_runs_from_its_files_push_pull_and_sharing() {
    let started = Instant::now();
    let t = crate::common::blocking(HaTopology::start).await;
    println!(
        "compose.ha.yml's seven services up after {:?}",
        started.elapsed()
    );
    haproxy_reaches_the_replicas(&t).await;
    let manifest = push_and_pull_through_haproxy(&t).await;
    a_token_from_any_replica_is_accepted_by_the_others(&t).await;
    the_replicas_see_the_client_through_haproxy(&t).await;
    the_registries_share_storage_and_http_secret(&t, &manifest).await;
    redis_holds_the_shared_state_and_the_blob_cache(&t).await;
    the_healthchecks_pass(&t);
    println!(
        "compose.ha.yml, run from its files, passed after {:?}",
        started.elapsed()
    );
}

/// haproxy routes to the replicas once its health checks (/readyz over TLS, after a PROXY
/// header) pass: an unauthenticated /v2/ is then regate's challenge.
async fn haproxy_reaches_the_replicas(t: &HaTopology) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            try_https_get(&t.ca(), t.haproxy_addr, "/v2/", &[]),
        )
        .await;
        match r {
            Ok(Ok(r)) if r.status == 401 => return,
            r => assert!(
                Instant::now() < deadline,
                "haproxy does not reach a replica ({:?}):\n{}",
                r.map(|r| r.map(|r| r.status)),
                t.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// skopeo pushes an image through haproxy and pulls it back byte-exact (no recompression
/// either way); anonymous pulls of library/ are refused (regate-ha.yml's rules). The
/// image's manifest digest.
async fn push_and_pull_through_haproxy(t: &HaTopology) -> String {
    let c = Skopeo::new(&t.ca(), t.haproxy_addr.to_string());
    let image = c.work.path().join("image");
    let built = oci_image(&image, 3, 61);
    let target = format!("docker://{}/library/app:1.0", c.host);
    let (ok, out) = c
        .run(vec![
            "copy".into(),
            "--preserve-digests".into(),
            format!("--dest-cert-dir={}", c.certs.path().display()),
            format!("--dest-creds={ADMIN}"),
            format!("oci:{}:latest", image.display()),
            target.clone(),
        ])
        .await;
    assert!(ok, "admin pushes through haproxy: {out}\n{}", t.logs());
    let pulled = c.work.path().join("pulled");
    let (ok, out) = c
        .run(vec![
            "copy".into(),
            "--preserve-digests".into(),
            "--dest-oci-accept-uncompressed-layers".into(),
            format!("--src-cert-dir={}", c.certs.path().display()),
            format!("--src-creds={ADMIN}"),
            target,
            format!("oci:{}:latest", pulled.display()),
        ])
        .await;
    assert!(ok, "admin pulls through haproxy: {out}\n{}", t.logs());
    assert_eq!(oci_manifest_digest(&pulled), built.manifest);
    for entry in std::fs::read_dir(image.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let back = std::fs::read(pulled.join("blobs/sha256").join(entry.file_name()))
            .unwrap_or_else(|e| panic!("{:?} not pulled: {e}", entry.file_name()));
        assert!(
            back == std::fs::read(entry.path()).unwrap(),
            "{:?} differs",
            entry.file_name()
        );
    }
    let (ok, out, _) = c.pull(None, "library/app:1.0").await;
    let refused = ["unauthorized", "denied", "authentication required"]
        .iter()
        .any(|w| out.contains(w));
    assert!(
        !ok && refused,
        "anonymous must not pull library/ (regate-ha.yml's rules): {out}"
    );
    built.manifest
}

/// One token key (regate-ha.yml's token pair): a token from each replica, asked directly,
/// is accepted by the two others.
async fn a_token_from_any_replica_is_accepted_by_the_others(t: &HaTopology) {
    let ca = t.ca();
    let challenge = https_get(&ca, t.regates[0].1, "/v2/", &[]).await;
    assert_eq!(challenge.status, 401);
    let service_name = challenge_service(&challenge).replace(' ', "%20");
    let (user, password) = ADMIN.split_once(':').unwrap();
    let login = basic(user, password);
    for (i, (_, from)) in t.regates.iter().enumerate() {
        let r = https_get(
            &ca,
            *from,
            &format!("/auth?service={service_name}&scope=repository:library/app:pull"),
            &[("authorization", &login)],
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let bearer = format!("Bearer {}", r.json()["token"].as_str().unwrap());
        for (j, (_, on)) in t.regates.iter().enumerate().filter(|(j, _)| *j != i) {
            let path = "/v2/library/app/tags/list";
            let r = https_get(&ca, *on, path, &[("authorization", &bearer)]).await;
            assert_eq!(
                r.status,
                200,
                "a token from {} on {}: {}",
                REGATES[i],
                REGATES[j],
                String::from_utf8_lossy(&r.body)
            );
            assert!(String::from_utf8_lossy(&r.body).contains("1.0"));
        }
    }
}

/// haproxy's send-proxy-v2 and regate-ha.yml's proxy_protocol, from haproxy's address:
/// a request from 127.0.0.2 through haproxy is logged by a replica as from 127.0.0.2,
/// though the replica's peer is haproxy (127.0.0.1).
async fn the_replicas_see_the_client_through_haproxy(t: &HaTopology) {
    let client: IpAddr = "127.0.0.2".parse().unwrap();
    let path = "/v2/_catalog?n=7";
    let r = try_https_get_from(&t.ca(), Some(client), t.haproxy_addr, path, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let deadline = Instant::now() + Duration::from_secs(60);
    let wanted = format!("client={client} ");
    loop {
        let logged = t.regates.iter().any(|(p, _)| {
            p.log()
                .lines()
                .any(|l| l.contains(&wanted) && l.contains("path=/v2/_catalog"))
        });
        if logged {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no replica logged the request as from {client}:\n{}",
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One storage volume: the image pushed through whichever replica and registry is on both
/// registries. One http.secret: an upload begun on one registry is continued on the other
/// and finished on the first, and its blob reads back byte-exact from both.
async fn the_registries_share_storage_and_http_secret(t: &HaTopology, manifest: &str) {
    let urls: Vec<String> = t
        .registries
        .iter()
        .map(|(_, a)| format!("http://{a}"))
        .collect();
    for (name, url) in REGISTRIES.iter().zip(&urls) {
        let r = http(
            Method::GET,
            &format!("{url}/v2/library/app/manifests/1.0"),
            &[("accept", "application/vnd.oci.image.manifest.v1+json")],
            Vec::new(),
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("docker-content-digest"), Some(manifest), "{name}");
    }
    let (r1, r2) = (&urls[0], &urls[1]);
    let r = http(
        Method::POST,
        &format!("{r1}/v2/shared/blob/blobs/uploads/"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let (first, second) = (noise(71, 150_000), noise(72, 90_000));
    let r = http(
        Method::PATCH,
        &format!("{r2}{}", location_path(&r)),
        &[("content-type", "application/octet-stream")],
        first.clone(),
    )
    .await;
    assert_eq!(
        r.status,
        202,
        "registry2 continues registry1's upload: {}",
        String::from_utf8_lossy(&r.body)
    );
    let whole = [first, second.clone()].concat();
    let digest = format!("sha256:{}", sha256_hex(&whole));
    let path = location_path(&r);
    let sep = if path.contains('?') { '&' } else { '?' };
    let r = http(
        Method::PUT,
        &format!("{r1}{path}{sep}digest={digest}"),
        &[("content-type", "application/octet-stream")],
        second,
    )
    .await;
    assert_eq!(
        r.status,
        201,
        "registry1 finishes it: {}",
        String::from_utf8_lossy(&r.body)
    );
    for (name, url) in REGISTRIES.iter().zip(&urls) {
        let blob = format!("{url}/v2/shared/blob/blobs/{digest}");
        let r = http(Method::GET, &blob, &[], Vec::new()).await;
        assert_eq!(r.status, 200, "{name}");
        assert!(
            r.body.as_ref() == whole.as_slice(),
            "{name}: the blob differs"
        );
    }
}

/// Redis, with the password from the secret: every replica shares its state there, and the
/// registries keep their blob descriptor cache in REGISTRY_REDIS_DB.
async fn redis_holds_the_shared_state_and_the_blob_cache(t: &HaTopology) {
    for (name, (_, addr)) in REGATES.iter().zip(&t.regates) {
        let m = https_get(&t.ca(), *addr, "/metrics", &[]).await;
        assert_eq!(m.status, 200);
        let text = String::from_utf8_lossy(&m.body);
        assert!(
            text.lines().any(|l| l == "regate_shared_state_up 1"),
            "{name} does not use Redis:\n{}",
            t.logs()
        );
    }
    let db = scalar(&service(&t.compose, REGISTRIES[0])["environment"]["REGISTRY_REDIS_DB"]);
    let size = redis_command(t.redis_addr, &t.redis_password, &db, &["DBSIZE"]);
    let size: u64 = size
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("DBSIZE: {size}"));
    assert!(size > 0, "no blob descriptor in Redis db {db}");
}

/// Each replica's compose healthcheck, run at its address.
fn the_healthchecks_pass(t: &HaTopology) {
    for (name, (_, addr)) in REGATES.iter().zip(&t.regates) {
        let test = strings(&service(&t.compose, name)["healthcheck"]["test"]);
        assert_eq!(&test[..2], ["CMD", "/regate"], "{test:?}");
        let args: Vec<String> = test[2..]
            .iter()
            .map(|a| a.replace("127.0.0.1:443", &addr.to_string()))
            .collect();
        assert_ne!(
            args,
            test[2..],
            "{name}: the healthcheck's address is not 127.0.0.1:443"
        );
        let out = Command::new(REGATE)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: healthcheck {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
