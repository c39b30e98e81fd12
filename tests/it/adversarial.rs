//! What regate refuses: forged and misused tokens, and paths, queries and framings that
//! would have the registry serve another scope than the one regate checked. Every refusal
//! is checked against what the real registry received (its storage and its request log):
//! nothing refused is ever forwarded.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::*;
use base64::Engine;
use hyper::Method;
use jsonwebtoken::{Algorithm, EncodingKey};
use regate::auth::keys::{libtrust_key_id, SigningKey};
use serde_json::{json, Value};
use x509_parser::prelude::{FromDer, X509Certificate};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims as regate issues them, granting `actions` on each repository named.
fn claims(access: &[(&str, &[&str])]) -> Value {
    let t = now();
    let access: Vec<Value> = access
        .iter()
        .map(|(name, actions)| json!({"type": "repository", "name": name, "actions": actions}))
        .collect();
    json!({
        "iss": ISSUER, "sub": "mallory", "aud": SERVICE,
        "exp": t + 300, "nbf": t - 10, "iat": t, "jti": "forged",
        "access": access,
    })
}

/// `header.claims.signature` with any header at all, signed by `key` as `alg`.
fn sign(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

/// A token put together from parts, signature included, with no signing at all.
fn assemble(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// regate's own signing key, read from its data_dir: what a forger must not have.
struct Keys {
    key: SigningKey,
    cert_der: Vec<u8>,
    cert_pem: Vec<u8>,
    spki_der: Vec<u8>,
}

impl Keys {
    fn of(gateway: &Gateway) -> Keys {
        let data = gateway.dir.path().join("data");
        let key = SigningKey::load(&data.join("token.crt"), &data.join("token.key")).unwrap();
        assert_eq!(
            key.algorithm,
            Algorithm::ES256,
            "regate generates ES256 keys"
        );
        let cert_der = base64::engine::general_purpose::STANDARD
            .decode(&key.x5c[0])
            .unwrap();
        let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
        let spki_der = cert.public_key().raw.to_vec();
        Keys {
            cert_pem: std::fs::read(data.join("token.crt")).unwrap(),
            key,
            cert_der,
            spki_der,
        }
    }

    /// The header regate itself puts on its tokens.
    fn header(&self) -> Value {
        json!({"typ": "JWT", "alg": "ES256", "kid": self.key.kid, "x5c": self.key.x5c})
    }

    /// A token exactly as genuine as regate's own.
    fn genuine(&self, claims: &Value) -> String {
        sign(&self.header(), claims, &self.key.encoding, Algorithm::ES256)
    }
}

/// Another P-256 key, with a self-signed certificate that names itself as regate's does.
struct Stranger {
    key: EncodingKey,
    kid: String,
    x5c: String,
}

impl Stranger {
    fn new() -> Stranger {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "regate token signer");
        let cert = params.self_signed(&pair).unwrap();
        use rcgen::PublicKeyData;
        Stranger {
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            kid: libtrust_key_id(&pair.subject_public_key_info()),
            x5c: base64::engine::general_purpose::STANDARD.encode(cert.der()),
        }
    }
}

async fn start_upload(base: &str, repo: &str, token: &str) -> Resp {
    http(
        Method::POST,
        &format!("{base}/v2/{repo}/blobs/uploads/"),
        &[("authorization", &format!("Bearer {token}"))],
        Vec::new(),
    )
    .await
}

fn challenge_error(resp: &Resp) -> &str {
    let header = resp.header("www-authenticate").unwrap_or("");
    header
        .split("error=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}

/// Nothing for `repo` reached the registry: no storage, no request in its log.
fn never_forwarded(registry: &Registry, repo: &str) {
    assert!(
        !registry.has_repository(repo),
        "{repo} reached the registry's storage"
    );
    let seen: Vec<String> = registry
        .request_uris()
        .into_iter()
        .filter(|u| u.contains(&format!("/{repo}/")))
        .collect();
    assert!(seen.is_empty(), "the registry received {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_tokens_are_refused_and_never_forwarded() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    let keys = Keys::of(&seed.gateway);
    let victim: &[(&str, &[&str])] = &[("victim/app", &["pull", "push"])];
    let good = claims(victim);

    // The forger's tools work: with regate's own key they make tokens regate takes, also
    // inside registry:2's 60 s leeway on both sides.
    for (label, shift) in [
        ("fresh", json!({})),
        ("exp 30 s ago", json!({"exp": now() - 30})),
        ("nbf in 30 s", json!({"nbf": now() + 30})),
    ] {
        let mut c = claims(&[("control/app", &["pull", "push"])]);
        c.as_object_mut()
            .unwrap()
            .extend(shift.as_object().unwrap().clone());
        let r = start_upload(&base, "control/app", &keys.genuine(&c)).await;
        assert_eq!(r.status, 202, "control token ({label}) must be accepted");
    }

    let with = |changes: Value| {
        let mut c = good.clone();
        c.as_object_mut()
            .unwrap()
            .extend(changes.as_object().unwrap().clone());
        c
    };
    let without = |claim: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(claim);
        c
    };
    let genuine = keys.genuine(&good);
    let parts: Vec<&str> = genuine.split('.').collect();
    let relabel = |alg: &str| {
        let mut h = keys.header();
        h["alg"] = json!(alg);
        format!(
            "{}.{}.{}",
            b64url(h.to_string().as_bytes()),
            parts[1],
            parts[2]
        )
    };
    let hmac = |secret: &[u8]| {
        let mut h = keys.header();
        h["alg"] = json!("HS256");
        sign(
            &h,
            &good,
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
    };
    let mut flipped = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap();
    flipped[10] ^= 1;
    let stranger = Stranger::new();
    let mut jwk_header = json!({"typ": "JWT", "alg": "ES256"});
    jwk_header["jwk"] = json!({"kty": "EC", "crv": "P-256", "kid": stranger.kid});
    let header_with = |changes: Value| {
        let mut h = keys.header();
        h.as_object_mut()
            .unwrap()
            .extend(changes.as_object().unwrap().clone());
        h
    };

    // A refresh token is signed by regate's own key, but for another audience.
    let r = http(
        Method::POST,
        &format!("{base}/auth"),
        &[("content-type", "application/x-www-form-urlencoded")],
        b"grant_type=password&username=admin&password=admin-pw&service=Docker%20registry&client_id=adversarial&access_type=offline&scope=repository%3Avictim%2Fapp%3Apull%2Cpush".to_vec(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();

    let forged: Vec<(&str, String)> = vec![
        (
            "alg none, no signature",
            assemble(&header_with(json!({"alg": "none"})), &good, ""),
        ),
        (
            "alg none, genuine signature",
            assemble(&header_with(json!({"alg": "none"})), &good, parts[2]),
        ),
        (
            "HS256 keyed with the certificate's DER",
            hmac(&keys.cert_der),
        ),
        (
            "HS256 keyed with the certificate's PEM",
            hmac(&keys.cert_pem),
        ),
        (
            "HS256 keyed with the public key's DER",
            hmac(&keys.spki_der),
        ),
        (
            "HS256 keyed with the x5c text",
            hmac(keys.key.x5c[0].as_bytes()),
        ),
        ("alg swapped to RS256", relabel("RS256")),
        ("alg swapped to ES384", relabel("ES384")),
        ("alg swapped to PS256", relabel("PS256")),
        ("alg swapped to EdDSA", relabel("EdDSA")),
        ("signature stripped", format!("{}.{}.", parts[0], parts[1])),
        (
            "signature part missing",
            format!("{}.{}", parts[0], parts[1]),
        ),
        (
            "signature altered",
            format!("{}.{}.{}", parts[0], parts[1], b64url(&flipped)),
        ),
        (
            "payload altered (another repository)",
            format!(
                "{}.{}.{}",
                parts[0],
                b64url(claims(&[("victim/app", &["*"])]).to_string().as_bytes()),
                keys.genuine(&claims(&[("control/app", &["pull", "push"])]))
                    .split('.')
                    .nth(2)
                    .unwrap()
            ),
        ),
        (
            "payload altered (sub)",
            format!(
                "{}.{}.{}",
                parts[0],
                b64url(with(json!({"sub": "admin"})).to_string().as_bytes()),
                parts[2]
            ),
        ),
        (
            "expired beyond the leeway",
            keys.genuine(&with(json!({"exp": now() - 90, "nbf": now() - 400}))),
        ),
        ("no exp", keys.genuine(&without("exp"))),
        (
            "exp as a string",
            keys.genuine(&with(json!({"exp": (now() + 300).to_string()}))),
        ),
        (
            "nbf beyond the leeway",
            keys.genuine(&with(json!({"nbf": now() + 90}))),
        ),
        (
            "wrong iss",
            keys.genuine(&with(json!({"iss": "Other Service"}))),
        ),
        ("no iss", keys.genuine(&without("iss"))),
        (
            "wrong aud",
            keys.genuine(&with(json!({"aud": "Other registry"}))),
        ),
        (
            "aud as an array (registry 2.8 refuses it)",
            keys.genuine(&with(json!({"aud": [SERVICE]}))),
        ),
        ("no aud", keys.genuine(&without("aud"))),
        (
            "a stranger's key, its own self-made x5c and kid",
            sign(
                &json!({"typ": "JWT", "alg": "ES256", "kid": stranger.kid, "x5c": [stranger.x5c]}),
                &good,
                &stranger.key,
                Algorithm::ES256,
            ),
        ),
        (
            "a stranger's key, self-made x5c, regate's kid",
            sign(
                &header_with(json!({"x5c": [stranger.x5c]})),
                &good,
                &stranger.key,
                Algorithm::ES256,
            ),
        ),
        (
            "a stranger's key under regate's own kid and x5c",
            sign(&keys.header(), &good, &stranger.key, Algorithm::ES256),
        ),
        (
            "a stranger's key in a jwk header",
            sign(&jwk_header, &good, &stranger.key, Algorithm::ES256),
        ),
        (
            "unknown kid, regate's key",
            sign(
                &header_with(
                    json!({"kid": "AAAA:BBBB:CCCC:DDDD:EEEE:FFFF:GGGG:HHHH:IIII:JJJJ:KKKK:LLLL"}),
                ),
                &good,
                &keys.key.encoding,
                Algorithm::ES256,
            ),
        ),
        (
            "a refresh token (regate's own, for the refresh audience)",
            refresh,
        ),
        ("garbage", "a.b.c".to_owned()),
        ("empty", String::new()),
    ];

    for (label, token) in &forged {
        let r = start_upload(&base, "victim/app", token).await;
        assert_eq!(
            r.status,
            401,
            "{label}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["errors"][0]["code"], "UNAUTHORIZED", "{label}");
        // An empty bearer is no token at all: a plain challenge, as registry:2 answers.
        let expected = if token.is_empty() {
            ""
        } else {
            "invalid_token"
        };
        assert_eq!(challenge_error(&r), expected, "{label}");
        let r = get(
            &format!("{base}/v2/victim/app/tags/list"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(r.status, 401, "{label} (pull)");
    }
    never_forwarded(&seed.registry, "victim/app");
    assert!(seed.registry.has_repository("control/app"));
}

#[tokio::test(flavor = "multi_thread")]
async fn genuine_tokens_are_held_to_their_scope() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    let keys = Keys::of(&seed.gateway);
    let bearer = |t: &str| format!("Bearer {t}");
    let refused = |r: &Resp, label: &str| {
        assert_eq!(r.status, 401, "{label}");
        assert_eq!(challenge_error(r), "insufficient_scope", "{label}");
    };

    // From regate's own /auth: admin's token for a/app is no token for b/app, nor for
    // names that merely share a prefix with it.
    let a = token(
        &base,
        Some(("admin", "admin-pw")),
        &["repository:a/app:pull,push"],
    )
    .await;
    assert_eq!(start_upload(&base, "a/app", &a).await.status, 202);
    for other in ["b/app", "a/app/x", "a/ap", "a/appx", "a"] {
        refused(&start_upload(&base, other, &a).await, other);
    }
    for other in ["b/app", "a/app/x", "a/ap", "a/appx"] {
        never_forwarded(&seed.registry, other);
    }
    assert!(
        seed.registry
            .request_uris()
            .iter()
            .all(|u| u.starts_with("/v2/a/app/blobs/uploads/")),
        "{:?}",
        seed.registry.request_uris()
    );

    // A pull token (alice may only pull library/app) does not push, put or delete.
    let pull = token(
        &base,
        Some(("alice", "alice-pw")),
        &["repository:library/app:pull,push,delete"],
    )
    .await;
    let auth = bearer(&pull);
    assert_eq!(
        get(
            &format!("{base}/v2/library/app/tags/list"),
            &[("authorization", &auth)]
        )
        .await
        .status,
        404,
        "pull is granted and forwarded (NAME_UNKNOWN from the registry)"
    );
    refused(
        &start_upload(&base, "library/app", &pull).await,
        "push with a pull token",
    );
    for (method, path) in [
        (Method::PUT, "/v2/library/app/manifests/latest".to_owned()),
        (
            Method::DELETE,
            format!("/v2/library/app/manifests/{DIGEST}"),
        ),
        (Method::DELETE, format!("/v2/library/app/blobs/{DIGEST}")),
        (
            Method::PATCH,
            "/v2/library/app/blobs/uploads/some-uuid".to_owned(),
        ),
        (
            Method::PUT,
            "/v2/library/app/blobs/uploads/some-uuid?digest=x".to_owned(),
        ),
    ] {
        let r = http(
            method.clone(),
            &format!("{base}{path}"),
            &[("authorization", &auth)],
            Vec::new(),
        )
        .await;
        refused(&r, &format!("{method} {path}"));
    }
    // Push without delete does not delete either.
    let r = http(
        Method::DELETE,
        &format!("{base}/v2/a/app/manifests/{DIGEST}"),
        &[("authorization", &bearer(&a))],
        Vec::new(),
    )
    .await;
    refused(&r, "delete with a pull,push token");
    assert!(
        !seed.registry.log().contains("DELETE"),
        "no delete was forwarded"
    );

    // A repository token does not open the catalog, nor does `registry:catalog:pull`: the
    // catalog needs `*` literally, as registry:2 requires.
    let catalog = format!("{base}/v2/_catalog");
    refused(
        &get(&catalog, &[("authorization", &bearer(&a))]).await,
        "catalog, repository token",
    );
    let cat_pull = token(
        &base,
        Some(("admin", "admin-pw")),
        &["registry:catalog:pull"],
    )
    .await;
    refused(
        &get(&catalog, &[("authorization", &bearer(&cat_pull))]).await,
        "catalog:pull",
    );
    // Types are compared literally: a `registry` entry named like a repository, or a
    // `repository` entry named `catalog`, grants neither.
    let t = keys.genuine(&json!({
        "iss": ISSUER, "sub": "mallory", "aud": SERVICE,
        "exp": now() + 300, "nbf": now() - 10, "iat": now(), "jti": "forged",
        "access": [
            {"type": "registry", "name": "victim/app", "actions": ["*"]},
            {"type": "repository", "name": "catalog", "actions": ["*"]},
            {"type": "repository(plugin)", "name": "victim/app", "actions": ["*"]},
        ],
    }));
    refused(
        &start_upload(&base, "victim/app", &t).await,
        "type confusion (repository)",
    );
    refused(
        &get(&catalog, &[("authorization", &bearer(&t))]).await,
        "type confusion (catalog)",
    );
    never_forwarded(&seed.registry, "victim/app");
    assert!(
        !seed
            .registry
            .request_uris()
            .iter()
            .any(|u| u.contains("_catalog")),
        "no catalog request was forwarded"
    );
}

/// A token regate would issue for exactly these grants.
fn token_for(keys: &Keys, access: &[(&str, &[&str])]) -> String {
    keys.genuine(&claims(access))
}

fn request(method: &str, target: &str, token: &str, extra: &str) -> String {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: regate.test\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nContent-Length: 0\r\n{extra}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_cannot_smuggle_a_scope() {
    let seed = Seed::start().await;
    let addr = seed.gateway.addr();
    let keys = Keys::of(&seed.gateway);
    let a = token_for(&keys, &[("a/app", &["pull", "push"])]);

    // Dot segments, raw or percent-encoded, `//`, and encoded slashes: registry:2 (gorilla
    // mux) cleans the decoded path and answers 301 before any auth; regate answers the
    // same 301 itself and forwards nothing.
    let redirects = [
        (
            "/v2/a/app/../../victim/app/blobs/uploads/",
            "/v2/victim/app/blobs/uploads/",
        ),
        (
            "/v2/a/app/%2e%2e/%2E%2E/victim/app/blobs/uploads/",
            "/v2/victim/app/blobs/uploads/",
        ),
        (
            "/v2/a%2Fapp%2F..%2F..%2Fvictim%2Fapp/blobs/uploads/",
            "/v2/victim/app/blobs/uploads/",
        ),
        (
            "/v2/a/app/./../../victim/app/blobs/uploads/",
            "/v2/victim/app/blobs/uploads/",
        ),
        (
            "/v2/a/app/blobs/uploads/../../../../victim/app/blobs/uploads/",
            "/v2/victim/app/blobs/uploads/",
        ),
        (
            "//v2/victim/app/blobs/uploads/",
            "/v2/victim/app/blobs/uploads/",
        ),
        (
            "/v2//victim//app/blobs/uploads/",
            "/v2/victim/app/blobs/uploads/",
        ),
        (
            "/v2/a/app/..%2f..%2fvictim/app/tags/list?n=1",
            "/v2/victim/app/tags/list?n=1",
        ),
    ];
    for (target, location) in redirects {
        let answer = raw(addr, &request("POST", target, &a, "")).await;
        assert_eq!(raw_status(&answer), 301, "{target}: {answer}");
        assert_eq!(raw_header(&answer, "location"), Some(location), "{target}");
    }

    // A percent-encoded slash that leaves a valid name is decoded, checked and forwarded
    // decoded: the registry is told the very name regate checked.
    let answer = raw(addr, &request("POST", "/v2/a%2Fapp/blobs/uploads/", &a, "")).await;
    assert_eq!(raw_status(&answer), 202, "{answer}");
    let answer = raw(
        addr,
        &request("POST", "/v2/vict%69m/app/blobs/uploads/", &a, ""),
    )
    .await;
    assert_eq!(
        raw_status(&answer),
        401,
        "encoded letters decode to the name checked"
    );
    assert!(seed
        .registry
        .request_uris()
        .iter()
        .all(|u| u.starts_with("/v2/a/app/blobs/uploads/")));

    // Bad escapes and control bytes never reach the registry.
    for target in [
        "/v2/a/app%zz/tags/list",
        "/v2/a/app%/tags/list",
        "/v2/a/app%00/tags/list",
        "/v2/a/app%0a/tags/list",
        "/v2/a/app%ff/tags/list",
    ] {
        let answer = raw(addr, &request("GET", target, &a, "")).await;
        let status = raw_status(&answer);
        assert!(status == 400 || status == 404, "{target}: {answer}");
    }

    // Upper case and overlong names: NAME_INVALID from regate, even with a token that
    // grants them (registry:2 would route `Victim/app` as a domain and fail with 500 on
    // 256 characters).
    let long_ok = format!("long/{}", "x".repeat(250));
    let too_long = format!("long/{}", "x".repeat(251));
    assert_eq!(long_ok.len(), 255);
    let t = token_for(
        &keys,
        &[
            ("Victim/app", &["pull", "push"]),
            ("victim/App", &["pull", "push"]),
            (&long_ok, &["pull", "push"]),
            (&too_long, &["pull", "push"]),
        ],
    );
    for name in ["Victim/app", "%56ictim/app", too_long.as_str()] {
        let answer = raw(
            addr,
            &request("POST", &format!("/v2/{name}/blobs/uploads/"), &t, ""),
        )
        .await;
        assert_eq!(raw_status(&answer), 400, "{name}: {answer}");
        assert!(answer.contains("NAME_INVALID"), "{name}: {answer}");
    }
    // Upper case past the first component is not a name registry:2 routes at all: its
    // plain 404, from regate.
    let answer = raw(
        addr,
        &request("POST", "/v2/victim/App/blobs/uploads/", &t, ""),
    )
    .await;
    assert_eq!(raw_status(&answer), 404, "{answer}");
    assert!(answer.ends_with("404 page not found\n"), "{answer}");
    let answer = raw(
        addr,
        &request("POST", &format!("/v2/{long_ok}/blobs/uploads/"), &t, ""),
    )
    .await;
    assert_eq!(
        raw_status(&answer),
        202,
        "255 characters is a valid name: {answer}"
    );
    assert!(seed.registry.has_repository(&long_ok));
    assert!(!seed.registry.has_repository(&too_long));

    // Absolute-form request targets: the scope is the path's, and the registry is sent the
    // path only, whatever host the target names.
    let answer = raw(
        addr,
        &request(
            "GET",
            "http://other.example/v2/victim/app/tags/list",
            &a,
            "",
        ),
    )
    .await;
    assert_eq!(raw_status(&answer), 401, "{answer}");
    assert!(answer.contains("error=\"insufficient_scope\""), "{answer}");
    let answer = raw(
        addr,
        &request(
            "GET",
            "http://other.example/v2/victim/app/tags/list",
            "x",
            "",
        ),
    )
    .await;
    assert!(
        answer.contains("scope=\"repository:victim/app:pull\""),
        "{answer}"
    );
    let answer = raw(
        addr,
        &request(
            "POST",
            "http://other.example/v2/a/app/blobs/uploads/",
            &a,
            "",
        ),
    )
    .await;
    assert_eq!(raw_status(&answer), 202, "{answer}");
    let answer = raw(
        addr,
        &request(
            "GET",
            "http://other.example/v2/a/app/../../victim/app/tags/list",
            &a,
            "",
        ),
    )
    .await;
    assert_eq!(raw_status(&answer), 301, "{answer}");
    for target in ["*", "victim:443", "other.example:80"] {
        let answer = raw(addr, &request("OPTIONS", target, &a, "")).await;
        assert!(raw_status(&answer) >= 300, "{target}: {answer}");
        let answer = raw(addr, &request("CONNECT", target, &a, "")).await;
        assert!(
            raw_status(&answer) >= 300 || answer.is_empty(),
            "{target}: {answer}"
        );
    }

    let uris = seed.registry.request_uris();
    assert!(
        uris.iter()
            .all(|u| u.starts_with("/v2/a/app/blobs/uploads/")
                || u.starts_with(&format!("/v2/{long_ok}/blobs/uploads/"))),
        "the registry received only what was checked: {uris:?}"
    );
    never_forwarded(&seed.registry, "victim/app");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mount_source_the_caller_cannot_pull_is_never_mounted() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    let addr = seed.gateway.addr();
    let keys = Keys::of(&seed.gateway);
    let secret = push_blob(&base, "secret/app", b"the secret layer").await;
    let bob = token_for(&keys, &[("bob/app", &["pull", "push"])]);
    let head_blob = |t: String| {
        let url = format!("{base}/v2/bob/app/blobs/{secret}");
        async move {
            http(
                Method::HEAD,
                &url,
                &[("authorization", &format!("Bearer {t}"))],
                Vec::new(),
            )
            .await
            .status
        }
    };

    // A mount request with `query`, straight on the wire (no client normalises it).
    let post_upload = |query: String| {
        let target = format!("/v2/bob/app/blobs/uploads/?{query}");
        let wire = request("POST", &target, &bob, "");
        async move { raw(addr, &wire).await }
    };

    // Every spelling of `from` that registry:2 (Go's FormValue) would read as secret/app is
    // read so by regate too, and the mount becomes a plain upload (202), never a 201.
    let spellings = [
        format!("mount={secret}&from=secret/app"),
        format!("from=secret/app&mount={secret}"),
        format!("mount={secret}&from=secret%2Fapp"),
        format!("mount={secret}&fr%6Fm=secret/app"),
        format!("mount={secret}&from=%zz&from=secret/app"),
        format!("m%6Funt={secret}&from=secret/app"),
        format!("mount={secret}&from=secret/app&from=bob/app"),
    ];
    for query in &spellings {
        let answer = post_upload(query.clone()).await;
        assert_eq!(raw_status(&answer), 202, "{query}: {answer}");
        assert!(
            raw_header(&answer, "docker-content-digest").is_none(),
            "{query}"
        );
    }
    // A first `from` the caller can read is the one both read; nothing to mount there.
    let query = format!("mount={secret}&from=bob/app&from=secret/app");
    let answer = post_upload(query).await;
    assert_eq!(raw_status(&answer), 202, "{answer}");
    // `;` splits a query differently in Go: refused whole.
    let query = format!("mount={secret};from=secret/app");
    let answer = post_upload(query).await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    // An invalid source name, and a source hidden in a form body (FormValue reads bodies).
    let query = format!("mount={secret}&from=Secret/app");
    let answer = post_upload(query).await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    let form = format!("mount={secret}&from=secret/app");
    let r = http(
        Method::POST,
        &format!("{base}/v2/bob/app/blobs/uploads/"),
        &[
            ("authorization", &format!("Bearer {bob}")),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        form.into_bytes(),
    )
    .await;
    assert_eq!(r.status, 415);
    // `from` on any other route asks for pull on it, as registry:2 does.
    let answer = raw(
        addr,
        &request("GET", "/v2/bob/app/tags/list?from=secret/app", &bob, ""),
    )
    .await;
    assert_eq!(raw_status(&answer), 401, "{answer}");
    assert!(answer.contains("insufficient_scope"), "{answer}");

    assert_eq!(
        head_blob(bob.clone()).await,
        404,
        "the secret blob was not mounted"
    );
    for uri in seed.registry.request_uris() {
        assert_ne!(
            first_from(&uri).as_deref(),
            Some("secret/app"),
            "the registry was asked to mount from secret/app: {uri}"
        );
    }

    // The control: with pull on the source the very same request mounts (201).
    let both = token_for(
        &keys,
        &[("bob/app", &["pull", "push"]), ("secret/app", &["pull"])],
    );
    let target = format!("/v2/bob/app/blobs/uploads/?mount={secret}&from=secret/app");
    let answer = raw(addr, &request("POST", &target, &both, "")).await;
    assert_eq!(raw_status(&answer), 201, "{answer}");
    assert_eq!(head_blob(bob).await, 200);
}

/// The first `from` of a request URI, as Go's `FormValue` reads it (enough for the
/// spellings used here: `%XX` escapes, pairs that fail to decode skipped).
fn first_from(uri: &str) -> Option<String> {
    let decode = |s: &str| -> Option<String> {
        let mut out = Vec::new();
        let mut bytes = s.bytes();
        while let Some(b) = bytes.next() {
            if b == b'%' {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            } else {
                out.push(b);
            }
        }
        String::from_utf8(out).ok()
    };
    let query = uri.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k)? == "from").then(|| decode(v)).flatten()
    })
}

/// Starts an upload session in a/app; returns the path and query of its `Location`.
async fn upload_session(addr: SocketAddr, token: &str) -> String {
    let answer = raw(
        addr,
        &request("POST", "/v2/a/app/blobs/uploads/", token, ""),
    )
    .await;
    assert_eq!(raw_status(&answer), 202, "{answer}");
    let location = raw_header(&answer, "location").unwrap();
    let rest = location.strip_prefix("http://").unwrap();
    rest[rest.find('/').unwrap()..].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_framing_is_refused_or_normalised() {
    let seed = Seed::start().await;
    let addr = seed.gateway.addr();
    let keys = Keys::of(&seed.gateway);
    let a = token_for(&keys, &[("a/app", &["pull", "push"])]);

    // After each body, a second request for victim/app without a token: if any hop framed
    // the body differently, that request would reach the registry unchecked.
    let smuggled = "GET /v2/victim/app/tags/list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let patch = |session: &str, headers: &str, body: &str| {
        format!(
            "PATCH {session} HTTP/1.1\r\nHost: regate.test\r\nAuthorization: Bearer {a}\r\nContent-Type: application/octet-stream\r\n{headers}\r\n{body}"
        )
    };

    // Refused outright (400, connection closed): conflicting or malformed framing. A chunk
    // that turns out malformed after the request was forwarded is the client's fault, a
    // 400 too, never a 5xx blamed on the registry.
    let refused = [
        (
            "Content-Length: 5\r\nContent-Length: 50\r\n",
            format!("hello{smuggled}"),
        ),
        ("Content-Length: 5, 50\r\n", format!("hello{smuggled}")),
        ("Content-Length: +5\r\n", format!("hello{smuggled}")),
        ("Content-Length: -5\r\n", format!("hello{smuggled}")),
        ("Content-Length: 0x5\r\n", format!("hello{smuggled}")),
        ("Transfer-Encoding: gzip\r\n", format!("hello{smuggled}")),
        (
            "Transfer-Encoding: chunked, identity\r\n",
            format!("5\r\nhello\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding: xchunked\r\n",
            format!("5\r\nhello\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding : chunked\r\n",
            format!("5\r\nhello\r\n0\r\n\r\n{smuggled}"),
        ),
        ("Content-Length : 5\r\n", format!("hello{smuggled}")),
        (
            "X-Fold: a\r\n Transfer-Encoding: chunked\r\n",
            format!("5\r\nhello\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding: chunked\r\n",
            format!("5\rhello\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding: chunked\r\n",
            format!("-5\r\nhello\r\n0\r\n\r\n{smuggled}"),
        ),
        // Both Content-Length and Transfer-Encoding, in either order, however spelled
        // (RFC 9112 6.3; nginx >= 1.21.1 answers 400 too). hyper alone would read these
        // as chunked and hide the Content-Length.
        (
            "Content-Length: 50\r\nTransfer-Encoding: chunked\r\n",
            format!("5\r\nhello\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            format!("5\r\nhello\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "content-length: 5\r\ntransfer-encoding: identity, Chunked\r\n",
            format!("5\r\nhello\r\n0\r\n\r\n{smuggled}"),
        ),
    ];
    for (headers, body) in &refused {
        let session = upload_session(addr, &a).await;
        let answer = raw(addr, &patch(&session, headers, body)).await;
        assert_eq!(raw_status(&answer), 400, "{headers:?} {body:?}: {answer}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{headers:?} {body:?}: one answer, then close: {answer}"
        );
    }

    // A CL+TE request later on a kept-alive connection, after an ordinary one: the first
    // is served, the second refused and the connection closed, the smuggled third never
    // read.
    let session = upload_session(addr, &a).await;
    let first =
        format!("GET /v2/ HTTP/1.1\r\nHost: regate.test\r\nAuthorization: Bearer {a}\r\n\r\n");
    let second = patch(
        &session,
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        &format!("5\r\nhello\r\n0\r\n\r\n{smuggled}"),
    );
    let answer = raw(addr, &format!("{first}{second}")).await;
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "400"], "{answer}");
    assert_eq!(
        raw_header(&answer[answer.rfind("HTTP/1.1 ").unwrap()..], "connection"),
        Some("close")
    );

    // Normalised: regate frames the forwarded body itself, so the registry gets exactly the
    // five bytes regate read as the body (`Range: 0-4`), and what follows is a new request
    // that regate checks (401 here).
    let chunked = format!("5\r\nhello\r\n0\r\n\r\n{smuggled}");
    let normalised = [
        ("Transfer-Encoding: chunked\r\n", chunked.clone(), true),
        ("Transfer-Encoding: Chunked\r\n", chunked.clone(), true),
        (
            "Transfer-Encoding: identity, chunked\r\n",
            chunked.clone(),
            true,
        ),
        (
            "Transfer-Encoding: chunked\r\n",
            format!("5;ext=1\r\nhello\r\n0\r\n\r\n{smuggled}"),
            true,
        ),
        ("Content-Length: 5\r\n", format!("hello{smuggled}"), true),
        (
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            format!("hello{smuggled}"),
            true,
        ),
    ];
    for (headers, body, next_is_a_request) in &normalised {
        let session = upload_session(addr, &a).await;
        let answer = raw(addr, &patch(&session, headers, body)).await;
        assert_eq!(raw_status(&answer), 202, "{headers:?}: {answer}");
        assert_eq!(
            raw_header(&answer, "range"),
            Some("0-4"),
            "{headers:?}: {answer}"
        );
        let answers = answer.matches("HTTP/1.1 ").count();
        if *next_is_a_request {
            assert_eq!(answers, 2, "{headers:?}: {answer}");
            let tail = &answer[answer.rfind("HTTP/1.1 ").unwrap()..];
            assert!(tail.starts_with("HTTP/1.1 401"), "{headers:?}: {answer}");
        } else {
            assert_eq!(answers, 1, "{headers:?}: the rest is dropped: {answer}");
            assert_eq!(
                raw_header(&answer, "connection"),
                Some("close"),
                "{headers:?}"
            );
        }
    }
    never_forwarded(&seed.registry, "victim/app");
}

/// The `/metrics` counter `name`, read from loopback.
async fn counter(base: &str, name: &str) -> u64 {
    let resp = get(&format!("{base}/metrics"), &[]).await;
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in\n{text}"))
}

/// User enumeration: an unknown name is answered exactly as a wrong password is (same
/// status, same body) after the same bcrypt work, at the cost the configured accounts
/// use (htpasswd -B's 5 here, not a fixed 10). Counted, never timed.
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_user_costs_what_a_wrong_password_costs() {
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    // `htpasswd -nbB` (cost 5), the seed's tool, for every account.
    let hash = bcrypt::hash("right", 5).unwrap();
    std::fs::write(
        dir.path().join("htpasswd"),
        format!("alice:{hash}\nbob:{hash}\n"),
    )
    .unwrap();
    let config = format!(
        "server: {{addr: \"127.0.0.1:0\"}}\nhtpasswd: htpasswd\nusers:\n  carol: {{password: \"{hash}\"}}\nacl:\n  - match: {{account: \"/.+/\"}}\n    actions: [pull]\nupstream: {{url: \"{}\"}}\n",
        registry.url()
    );
    let gateway = Gateway::start_in(dir, &config).await;
    let base = gateway.url();
    let dummy = gateway
        .server
        .gateway()
        .runtime()
        .users
        .dummy_hash()
        .to_owned();
    assert_eq!(
        regate::auth::users::bcrypt_cost(&dummy),
        Some(5),
        "the unknown-user check runs at the accounts' cost"
    );

    let mut seen = Vec::new();
    for (user, password) in [("alice", "guess-1"), ("mallory", "guess-2")] {
        let before = counter(&base, "regate_credential_cache_misses_total").await;
        let resp = get(
            &format!("{base}/auth?scope=repository:a:pull"),
            &[("authorization", &basic(user, password))],
        )
        .await;
        let bcrypt_runs = counter(&base, "regate_credential_cache_misses_total").await - before;
        seen.push((resp.status.as_u16(), resp.body.clone(), bcrypt_runs));
    }
    assert_eq!(seen[0], seen[1], "wrong password vs unknown user");
    assert_eq!(seen[0].0, 401);
    assert_eq!(seen[0].2, 1, "one bcrypt check each");
}

/// The `access` claim of a token from `/auth`'s answer.
fn granted_actions(resp: &Resp) -> Vec<String> {
    let token = resp.json()["token"].as_str().unwrap().to_owned();
    let claims = crate::common::claims(&token);
    claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["actions"].as_array().unwrap().clone())
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// A client that reaches regate directly cannot choose its own address with
/// `X-Forwarded-For`: from a peer outside `server.trusted_proxies` the header is ignored,
/// for `ip` rules and for the per-address login throttle alike. From a trusted proxy it
/// counts (the control).
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let hash = bcrypt("mallory-pw");
    let config = |trusted: &str| {
        format!(
            "server:\n  addr: \"127.0.0.1:0\"\n  real_ip_header: X-Forwarded-For\n  trusted_proxies: [{trusted}]\nusers:\n  mallory: {{password: \"{hash}\"}}\nacl:\n  - match: {{account: mallory, ip: 203.0.113.0/24}}\n    actions: [pull, push]\n  - match: {{account: mallory}}\n    actions: [pull]\nupstream: {{url: \"http://127.0.0.1:9\"}}\n"
        )
    };
    // The tests reach regate from 127.0.0.1: not a trusted proxy here...
    let untrusted = Gateway::start(&config("192.0.2.0/24")).await;
    // ...and one here.
    let trusted = Gateway::start(&config("127.0.0.0/8")).await;
    let ask = |base: String, user: &str, password: String, forwarded: String| {
        let user = user.to_owned();
        async move {
            get(
                &format!("{base}/auth?scope=repository:team/app:pull,push"),
                &[
                    ("authorization", &basic(&user, &password)),
                    ("x-forwarded-for", &forwarded),
                ],
            )
            .await
        }
    };

    // `ip` rules: the forged address opens nothing.
    let resp = ask(
        untrusted.url(),
        "mallory",
        "mallory-pw".into(),
        "203.0.113.5".into(),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        granted_actions(&resp),
        ["pull"],
        "a forged address matched `ip`"
    );
    let resp = ask(
        trusted.url(),
        "mallory",
        "mallory-pw".into(),
        "203.0.113.5".into(),
    )
    .await;
    assert_eq!(
        granted_actions(&resp),
        ["pull", "push"],
        "a trusted proxy's header"
    );

    // The throttle: a spray of distinct accounts, each guess "from" another address, is
    // still counted against the one address it comes from: past 20 failures it is locked.
    for i in 0..21 {
        let resp = ask(
            untrusted.url(),
            &format!("sprayed-{i}"),
            format!("guess-{i}"),
            format!("198.51.100.{i}"),
        )
        .await;
        assert_eq!(resp.status, 401, "guess {i}");
    }
    let resp = ask(
        untrusted.url(),
        "mallory",
        "mallory-pw".into(),
        "198.51.100.200".into(),
    )
    .await;
    assert_eq!(
        resp.status, 429,
        "the address was locked whatever the header said"
    );
    assert!(resp.header("retry-after").is_some());
}

/// Nothing internal leaks to anonymous callers: `/readyz` names no cause (addresses,
/// certificate names and the registry's words go to the log), and `/metrics` answers
/// only loopback callers that no proxy passed on, or, with `server.metrics_addr`, only
/// on that listener.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_and_metrics_tell_strangers_nothing() {
    // A registry that is not there: the cause would name its address.
    let reserved = ReservedPort::new();
    let port = reserved.port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regate.yml");
    std::fs::write(
        &path,
        seed_config(
            &format!("http://127.0.0.1:{port}"),
            &dir.path().join("data"),
        ),
    )
    .unwrap();
    let regate = RegateProcess::start(&path, dir.path().join("regate.log"));
    let base = regate.url();
    let r = get(&format!("{base}/readyz"), &[]).await;
    assert_eq!(r.status, 503);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.json()["reason"], regate::gateway::NOT_READY);
    for secret in [port.to_string().as_str(), "127.0.0.1", "refused", "error"] {
        assert!(!body.contains(secret), "{secret:?} in /readyz: {body}");
    }
    let log = regate.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("/readyz") && l.contains(&port.to_string())),
        "the cause is logged:\n{log}"
    );

    // /metrics on the main listener: loopback, not forwarded.
    assert_eq!(get(&format!("{base}/metrics"), &[]).await.status, 200);
    for header in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        let r = get(&format!("{base}/metrics"), &[(header, "for=198.51.100.7")]).await;
        assert_eq!(r.status, 404, "/metrics through a proxy ({header})");
        assert!(!String::from_utf8_lossy(&r.body).contains("regate_"));
    }

    // server.metrics_addr: /metrics there and only there.
    let dir = tempfile::tempdir().unwrap();
    let config = seed_config(
        &format!("http://127.0.0.1:{port}"),
        &dir.path().join("data"),
    )
    .replace(
        "  addr: \"127.0.0.1:0\"\n",
        "  addr: \"127.0.0.1:0\"\n  metrics_addr: \"127.0.0.1:0\"\n",
    );
    assert!(config.contains("metrics_addr"));
    let gateway = Gateway::start_in(dir, &config).await;
    let metrics = gateway.server.metrics_addr().expect("a metrics listener");
    assert_ne!(metrics, gateway.addr());
    assert_eq!(
        get(&format!("{}/metrics", gateway.url()), &[]).await.status,
        404
    );
    let r = get(&format!("http://{metrics}/metrics"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("regate_requests_total"));
    // That listener serves nothing else: no registry, no tokens.
    for path in ["/v2/", "/auth", "/readyz"] {
        assert_eq!(
            get(&format!("http://{metrics}{path}"), &[]).await.status,
            404,
            "{path}"
        );
    }
}

/// A password spray from one address, 300 guesses at once with distinct unknown users:
/// each guess is counted when it starts, so no more reach bcrypt than the address may
/// fail (20, plus the one that locks it); the rest are 429 with Retry-After and the
/// registry's TOOMANYREQUESTS body, at once and without bcrypt. Counted, not timed: on a
/// slow machine the spray can outlast the first lock (1 s, then 2 s, 4 s, ...), and each
/// lock that ends lets one more guess through, by design; the bound allows for exactly
/// the locks that could have ended while the spray ran (CI once saw 22 after 1.x s).
#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_spray_reaches_bcrypt_no_more_than_the_limit() {
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let config = seed_config(&registry.url(), &dir.path().join("data"));
    let gateway = Gateway::start_in(dir, &config).await;
    let base = gateway.url();
    let before = counter(&base, "regate_credential_cache_misses_total").await;
    let started = std::time::Instant::now();
    let guesses: Vec<_> = (0..300)
        .map(|i| {
            let base = base.clone();
            tokio::spawn(async move {
                get(
                    &format!("{base}/auth?scope=repository:a:pull"),
                    &[("authorization", &basic(&format!("nobody-{i}"), "guess"))],
                )
                .await
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for g in guesses {
        let resp = g.await.unwrap();
        *statuses.entry(resp.status.as_u16()).or_default() += 1;
        if resp.status == 429 {
            assert!(resp.header("retry-after").is_some());
            assert_eq!(resp.json()["errors"][0]["code"], "TOOMANYREQUESTS");
        }
    }
    let bcrypt_runs = counter(&base, "regate_credential_cache_misses_total").await - before;
    // Locks of 1, 2, 4, ... s: k of them can have ended within 2^k - 1 s of the start.
    let ran = started.elapsed().as_secs_f64();
    let locks_ended = (ran + 1.0).log2().floor() as u64;
    assert!(
        bcrypt_runs <= 21 + locks_ended,
        "{bcrypt_runs} guesses reached bcrypt in {ran:.1} s; answers {statuses:?}"
    );
    assert_eq!(statuses.get(&401).copied().unwrap_or(0) as u64, bcrypt_runs);
    assert_eq!(statuses.values().sum::<usize>(), 300);
    assert!(
        statuses.keys().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
}
