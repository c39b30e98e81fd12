//! The id_token checks, against keys made here (the flows against a real provider are in
//! `tests/idp.rs`).

use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::keys::{key_of, Key, KeySet};
use super::*;
use crate::auth::identity::Backend;
use crate::auth::idp::{ClientSecret, Settings};
use crate::auth::Secret;
use jsonwebtoken::Algorithm;

const ISSUER: &str = "https://idp.example";
const CLIENT: &str = "regate";

struct Signer {
    kid: String,
    encoding: EncodingKey,
    public: Key,
}

fn signer(kid: &str) -> Signer {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = key.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"});
    Signer {
        kid: kid.to_owned(),
        encoding: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
        public: key_of(jwk).expect("a usable JWK"),
    }
}

fn settings(kind: Kind) -> Settings {
    Settings {
        backend: Backend::OidcAuth,
        kind,
        client_id: CLIENT.into(),
        client_secret: ClientSecret::Inline(Secret::new("s")),
        redirect_url: None,
        registry_url: None,
        http_timeout: Duration::from_secs(1),
        revalidate_after: Duration::ZERO,
        outage_grace: Duration::ZERO,
        token_db: None,
    }
}

fn oidc_kind() -> Kind {
    Kind::Oidc {
        issuer: ISSUER.into(),
        user_claim: "email".into(),
        labels_claims: vec!["groups".into()],
        scopes: vec!["openid".into(), "email".into()],
    }
}

fn client() -> Client {
    Client {
        http: crate::auth::idp::http::Http::new(Duration::from_secs(1)).unwrap(),
        id: CLIENT.into(),
        secret: Secret::new("s"),
    }
}

fn discovery() -> Discovery {
    Discovery {
        issuer: ISSUER.into(),
        authorization_endpoint: format!("{ISSUER}/auth"),
        token_endpoint: format!("{ISSUER}/token"),
        userinfo_endpoint: None,
        // Never asked: the keys are set, and read just now.
        jwks_uri: "http://127.0.0.1:9/jwks".into(),
        token_endpoint_auth_methods_supported: vec![],
    }
}

async fn provider_with(keys: &[&Signer]) -> Oidc {
    let oidc = Oidc::new(&settings(oidc_kind()));
    *oidc.keys.lock().await = KeySet {
        keys: keys.iter().map(|s| s.public.clone()).collect(),
        fetched: Some(Instant::now()),
    };
    oidc
}

fn good_claims() -> Value {
    let now = crate::auth::idp::now();
    json!({
        "iss": ISSUER, "aud": CLIENT, "sub": "u-1", "exp": now + 300, "iat": now,
        "nonce": "n-1", "email": "alice@example.com", "email_verified": true,
        "groups": ["devs", "ops"],
    })
}

fn sign(s: &Signer, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(s.kid.clone());
    jsonwebtoken::encode(&header, claims, &s.encoding).unwrap()
}

fn with(claims: &Value, key: &str, value: Value) -> Value {
    let mut c = claims.clone();
    c[key] = value;
    c
}

#[tokio::test]
async fn an_id_token_proves_what_it_must() {
    let a = signer("a");
    let stranger = signer("a");
    let oidc = provider_with(&[&a]).await;
    let (c, d) = (client(), discovery());
    let verify = |raw: String| {
        let (oidc, c, d) = (&oidc, &c, &d);
        async move { oidc.verify(c, d, &raw, Some("n-1")).await }
    };
    let claims = verify(sign(&a, &good_claims())).await.unwrap();
    let (account, labels) = oidc.account(&claims).unwrap();
    assert_eq!(account, "alice@example.com");
    assert_eq!(labels["groups"], ["devs", "ops"]);

    let bad = |e: IdTokenError| {
        move |r: Result<Map<String, Value>, IdpError>| {
            assert!(
                matches!(&r, Err(IdpError::IdToken(got)) if *got == e),
                "{r:?}"
            );
        }
    };
    bad(IdTokenError::WrongAudience)(
        verify(sign(&a, &with(&good_claims(), "aud", json!("other")))).await,
    );
    bad(IdTokenError::WrongIssuer)(
        verify(sign(
            &a,
            &with(&good_claims(), "iss", json!("https://evil.example")),
        ))
        .await,
    );
    let past = crate::auth::idp::now() - 3600;
    bad(IdTokenError::Expired)(verify(sign(&a, &with(&good_claims(), "exp", json!(past)))).await);
    bad(IdTokenError::NonceMismatch)(
        verify(sign(&a, &with(&good_claims(), "nonce", json!("n-2")))).await,
    );
    let mut no_nonce = good_claims();
    no_nonce.as_object_mut().unwrap().remove("nonce");
    bad(IdTokenError::NonceMismatch)(verify(sign(&a, &no_nonce)).await);
    // Same kid, another key: the signature does not hold.
    bad(IdTokenError::BadSignature)(verify(sign(&stranger, &good_claims())).await);
    // A key the provider never published, read again just now: not asked again.
    bad(IdTokenError::UnknownKey)(verify(sign(&signer("b"), &good_claims())).await);
    // Several audiences: azp must be this client.
    let many = with(&good_claims(), "aud", json!([CLIENT, "other"]));
    bad(IdTokenError::WrongAudience)(verify(sign(&a, &many)).await);
    assert!(verify(sign(&a, &with(&many, "azp", json!(CLIENT))))
        .await
        .is_ok());

    // Unsigned, or HMAC (whose key would be the client secret), or not a JWT at all.
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&good_claims()));
    bad(IdTokenError::Unsigned)(verify(none).await);
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good_claims(),
        &EncodingKey::from_secret(b"s"),
    )
    .unwrap();
    bad(IdTokenError::Algorithm("HS256".into()))(verify(hs).await);
    bad(IdTokenError::Malformed)(verify("not.a-jwt".into()).await);
}

#[test]
fn encryption_and_secret_keys_are_not_verification_keys() {
    assert!(key_of(json!({"kty": "oct", "k": "c2VjcmV0"})).is_none());
    let a = signer("a");
    let _ = a;
    assert!(key_of(json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"})).is_none());
}

#[test]
fn google_admits_its_verified_workspace_accounts_only() {
    let google = Oidc::new(&settings(Kind::Google {
        issuer: "https://accounts.google.com".into(),
        domain: Some("example.com".into()),
    }));
    let claims = |v: Value| v.as_object().unwrap().clone();
    let ok = google
        .account(&claims(
            json!({"email": "alice@example.com", "email_verified": true, "hd": "example.com"}),
        ))
        .unwrap();
    assert_eq!(ok.0, "alice@example.com");
    // An address at the domain is not enough: anyone can make such a Google account.
    let e = google
        .account(&claims(
            json!({"email": "mallory@example.com", "email_verified": true}),
        ))
        .unwrap_err();
    assert!(
        e.to_string().contains("not a Google Workspace account"),
        "{e}"
    );
    let e = google
        .account(&claims(
            json!({"email": "eve@other.org", "email_verified": true, "hd": "other.org"}),
        ))
        .unwrap_err();
    assert!(e.to_string().contains("an account of other.org"), "{e}");
    assert!(google
        .account(&claims(
            json!({"email": "alice@example.com", "email_verified": false, "hd": "example.com"})
        ))
        .is_err());

    let oidc = Oidc::new(&settings(oidc_kind()));
    assert!(matches!(
        oidc.account(&claims(json!({"email": "x@y", "email_verified": false}))),
        Err(IdpError::NotAllowed(_))
    ));
    assert!(matches!(
        oidc.account(&claims(json!({"sub": "1"}))),
        Err(IdpError::Misconfigured(_))
    ));
}
