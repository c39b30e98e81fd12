use super::*;

fn key() -> (tempfile::TempDir, Arc<SigningKey>) {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = SigningKey::load_or_generate(dir.path()).unwrap();
    (dir, Arc::new(key))
}

fn tokens(key: &Arc<SigningKey>, issuer: &str, service: &str) -> Tokens {
    Tokens::new(
        key.clone(),
        issuer,
        service,
        Duration::from_secs(300),
        Duration::from_secs(3600),
        Arc::default(),
    )
}

fn access(kind: &str, name: &str, actions: &[&str]) -> Access {
    Access {
        resource_type: kind.into(),
        name: name.into(),
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
    }
}

#[test]
fn issued_token_verifies_and_covers_its_access() {
    let (_d, key) = key();
    let t = tokens(&key, "iss", "svc");
    let issued = t
        .issue(
            "alice",
            vec![access("repository", "alice/app", &["pull", "push"])],
        )
        .unwrap();
    assert_eq!(issued.expires_in, 300);
    let v = t.verify(&issued.token).unwrap();
    assert_eq!(v.subject, "alice");
    let pull_push = [Scope::new("repository", "alice/app", &["pull", "push"])];
    assert!(v.missing(&pull_push).is_empty());
    let other = [Scope::new("repository", "bob/app", &["pull"])];
    assert_eq!(v.missing(&other).len(), 1);
    let delete = [Scope::new("repository", "alice/app", &["delete"])];
    assert_eq!(v.missing(&delete).len(), 1);
    // Cached: the same answer again.
    assert!(t.verify(&issued.token).is_ok());
}

#[test]
fn star_covers_any_action_and_entries_merge() {
    let (_d, key) = key();
    let t = tokens(&key, "iss", "svc");
    let issued = t
        .issue(
            "admin",
            vec![
                access("registry", "catalog", &["*"]),
                access("repository", "a", &["pull"]),
                access("repository", "a", &["push"]),
            ],
        )
        .unwrap();
    let v = t.verify(&issued.token).unwrap();
    assert!(v
        .missing(&[Scope::new("registry", "catalog", &["*"])])
        .is_empty());
    assert!(v
        .missing(&[Scope::new("repository", "a", &["pull", "push"])])
        .is_empty());
}

#[test]
fn header_and_claims_are_what_registry_2_reads() {
    let (_d, key) = key();
    let t = tokens(&key, "Auth Service", "Docker registry");
    let issued = t.issue("", vec![]).unwrap();
    let header = jsonwebtoken::decode_header(&issued.token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
    assert_eq!(header.x5c.as_ref().map(Vec::len), Some(1));
    let payload = issued.token.split('.').nth(1).unwrap();
    use base64::Engine;
    let json: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["aud"], "Docker registry");
    assert_eq!(json["iss"], "Auth Service");
    assert_eq!(json["sub"], "");
    assert!(json["exp"].is_u64() && json["nbf"].is_u64() && json["iat"].is_u64());
    assert!(json["access"].is_array());
    assert_eq!(json["jti"].as_str().unwrap().len(), 32);
}

#[test]
fn wrong_issuer_service_or_key_is_refused() {
    let (_d, key) = key();
    let (_d2, other_key) = key_pair();
    let good = tokens(&key, "iss", "svc");
    let token = good.issue("a", vec![]).unwrap().token;
    assert!(tokens(&key, "other", "svc").verify(&token).is_err());
    assert!(tokens(&key, "iss", "other").verify(&token).is_err());
    assert!(matches!(
        tokens(&other_key, "iss", "svc").verify(&token),
        Err(TokenError::UnknownKey)
    ));
    assert!(good.verify("garbage").is_err());
    assert!(good.verify("a.b.c").is_err());
}

fn key_pair() -> (tempfile::TempDir, Arc<SigningKey>) {
    key()
}

#[test]
fn expiry_honours_the_leeway() {
    let (_d, key) = key();
    let t = tokens(&key, "iss", "svc");
    let sign = |exp: u64, nbf: u64| {
        let claims = Claims {
            iss: "iss".into(),
            sub: "a".into(),
            aud: "svc".into(),
            exp,
            nbf,
            iat: nbf,
            jti: "x".into(),
            access: vec![],
        };
        jsonwebtoken::encode(&t.header, &claims, &key.encoding).unwrap()
    };
    let now = unix_now();
    assert!(
        t.verify(&sign(now - 30, now - 100)).is_ok(),
        "within leeway"
    );
    assert!(t.verify(&sign(now - 90, now - 100)).is_err(), "expired");
    assert!(
        t.verify(&sign(now + 300, now + 30)).is_ok(),
        "nbf within leeway"
    );
    assert!(
        t.verify(&sign(now + 300, now + 90)).is_err(),
        "not yet valid"
    );
}

#[test]
fn refresh_tokens_are_not_access_tokens() {
    let (_d, key) = key();
    let t = tokens(&key, "iss", "svc");
    let refresh = t.issue_refresh("alice", "fp1").unwrap();
    let r = t.verify_refresh(&refresh).unwrap();
    assert_eq!(r.account, "alice");
    assert_eq!(r.fingerprint, "fp1");
    assert!(
        t.verify(&refresh).is_err(),
        "a refresh token opens no registry route"
    );
    let access = t.issue("alice", vec![]).unwrap().token;
    assert!(
        t.verify_refresh(&access).is_err(),
        "an access token refreshes nothing"
    );
}

/// After a rotation, tokens and refresh tokens of the old key keep verifying when its
/// certificate is listed in `token.previous_certificates`, and only then; new ones are
/// signed with the new key, and the JWKS shows both.
#[test]
fn tokens_of_the_key_before_a_rotation_verify_until_they_expire() {
    let (old_dir, old) = key();
    let (_new_dir, new) = key();
    let before = tokens(&old, "iss", "svc");
    let token = before
        .issue("alice", vec![access("repository", "a", &["pull"])])
        .unwrap()
        .token;
    let refresh = before.issue_refresh("alice", "fp").unwrap();

    let without = tokens(&new, "iss", "svc");
    assert!(matches!(
        without.verify(&token),
        Err(TokenError::UnknownKey)
    ));
    assert!(without.verify_refresh(&refresh).is_err());

    let previous = PublicKey::from_certificate(&old_dir.path().join("token.crt")).unwrap();
    let after = tokens(&new, "iss", "svc").with_previous(vec![previous]);
    assert_eq!(after.verify(&token).unwrap().subject, "alice");
    assert_eq!(after.verify_refresh(&refresh).unwrap().account, "alice");
    let fresh = after.issue("bob", Vec::new()).unwrap().token;
    let kid = jsonwebtoken::decode_header(&fresh).unwrap().kid.unwrap();
    assert_eq!(kid, new.kid, "new tokens are signed with the new key");
    assert_eq!(after.jwks()["keys"].as_array().unwrap().len(), 2);
    // A token of the old key whose signature was altered is still refused.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert!(after.verify(&forged).is_err());
}
