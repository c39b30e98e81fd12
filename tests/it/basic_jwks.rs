//! Beyond docker_auth: HTTP Basic credentials straight on registry routes (`curl -u`),
//! and the JWKS document with RFC 7638 key IDs for registry v3.

use crate::common::*;
use base64::Engine;
use hyper::Method;

async fn push_small_blob(base: &str, creds: (&str, &str), repo: &str) -> String {
    let t = token(
        base,
        Some(creds),
        &[&format!("repository:{repo}:pull,push")],
    )
    .await;
    let bearer = format!("Bearer {t}");
    let r = http(
        Method::POST,
        &format!("{base}/v2/{repo}/blobs/uploads/"),
        &[("authorization", &bearer)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 202);
    let data = b"basic".to_vec();
    let digest = format!("sha256:{}", sha256_hex(&data));
    let location = r.header("location").unwrap().to_owned();
    let r = http(
        Method::PUT,
        &format!("{location}&digest={digest}"),
        &[("authorization", &bearer)],
        data,
    )
    .await;
    assert_eq!(r.status, 201);
    digest
}

async fn basic_on_routes(seed: Seed) {
    let base = seed.gateway.url();
    let digest = push_small_blob(&base, ("alice", "alice-pw"), "alice/app").await;
    let blob = format!("{base}/v2/alice/app/blobs/{digest}");

    let r = get(&blob, &[("authorization", &basic("alice", "alice-pw"))]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body.as_ref(), b"basic");
    // Another logged-in user may pull (the seed's `/.+/` rule) but not delete.
    assert_eq!(
        get(&blob, &[("authorization", &basic("hussein", "hussein-pw"))])
            .await
            .status,
        200
    );
    let r = http(
        Method::DELETE,
        &blob,
        &[("authorization", &basic("hussein", "hussein-pw"))],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["errors"][0]["code"], "DENIED");
    // `test` gets nothing; a wrong password is a plain challenge.
    assert_eq!(
        get(&blob, &[("authorization", &basic("test", "test-pw"))])
            .await
            .status,
        403
    );
    let r = get(&blob, &[("authorization", &basic("alice", "wrong"))]).await;
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer realm="));
}

fn with_basic_on(config: String) -> String {
    config.replace(
        "server:\n  addr: \"127.0.0.1:0\"\n",
        "server:\n  addr: \"127.0.0.1:0\"\n  basic_auth: \"on\"\n",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_credentials_on_registry_routes() {
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let config = with_basic_on(seed_config(&registry.url(), &dir.path().join("data")));
    let gateway = Gateway::start_in(dir, &config).await;
    basic_on_routes(Seed { registry, gateway }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_credentials_with_a_registry_that_checks_tokens() {
    // The registry needs a token: regate mints one for the request.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (key, _) = regate::auth::keys::SigningKey::load_or_generate(&data).unwrap();
    let auth = TokenAuth {
        realm: "http://127.0.0.1:1/auth".into(),
        rootcertbundle: key.certificate_path.clone(),
    };
    let registry = Registry::start(Some(&auth));
    let config = with_basic_on(seed_config(&registry.url(), &data));
    let gateway = Gateway::start_in(dir, &config).await;
    basic_on_routes(Seed { registry, gateway }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_is_off_over_plain_http_by_default() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    let r = get(
        &format!("{base}/v2/"),
        &[("authorization", &basic("admin", "admin-pw"))],
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn jwks_document_verifies_rfc7638_tokens() {
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let config = seed_config(&registry.url(), &dir.path().join("data")).replace(
        "  expiration: 900\n",
        "  expiration: 900\n  kid_format: rfc7638\n",
    );
    let gw = Gateway::start_in(dir, &config).await;
    let base = gw.url();
    let t = token(&base, Some(("admin", "admin-pw")), &["repository:a:pull"]).await;
    let r = get(&format!("{base}/.well-known/jwks.json"), &[]).await;
    assert_eq!(r.status, 200);
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&r.body).unwrap();
    let header = jsonwebtoken::decode_header(&t).unwrap();
    let kid = header.kid.unwrap();
    // An RFC 7638 thumbprint: 43 characters of base64url, not libtrust's 12x4 groups.
    assert_eq!(kid.len(), 43);
    assert!(base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&kid)
        .is_ok());
    let jwk = jwks.find(&kid).expect("the token's kid is in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[SERVICE]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&t, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "admin");
    // And regate itself still takes its tokens.
    let r = get(
        &format!("{base}/v2/"),
        &[("authorization", &format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(r.status, 200);
}
