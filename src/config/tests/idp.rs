//! The identity-provider sections: docker_auth's own reference sections load as they are,
//! and each mistake is an error (or a warning) that says what to write.

use super::*;
use crate::auth::idp::{ClientSecret, Kind};

/// docker_auth's `examples/reference.yml` sections (as of its current master, with
/// `oidc_auth` and `gitlab_auth`, and `label_claims` as reference.yml spells it),
/// unchanged but for regate's `upstream`.
const REFERENCE: &str = r#"
upstream: {url: "http://registry:5000"}
google_auth:
  domain: "example.com"  # Optional. If set, only logins from this domain are accepted.
  client_id: "1223123456-somethingsomething.apps.googleusercontent.com"
  # client_secret: "verysecret"
  client_secret_file: "/path/to/client_secret.txt"
  level_token_db:
    path: /somewhere/to/put/google_tokens.ldb
    # Optional token hash cost for bcrypt hashing
    # token_hash_cost: 5
  http_timeout: 10

github_auth:
  organization: "acme"   # Optional. If set, only logins from this organization are accepted.
  client_id: "1223123456"
  client_secret_file: "/path/to/client_secret.txt"
  level_token_db:
    path: /somewhere/to/put/github_tokens.ldb
  http_timeout: "10s"
  revalidate_after: "1h"
  github_web_uri: "https://github.acme.com"
  github_api_uri: "https://github.acme.com/api/v3"
  registry_url: localhost:5000

oidc_auth:
  issuer: "https://accounts.google.com"
  redirect_url: "https://localhost:5001/oidc_auth"
  client_id: "a-client-id"
  client_secret_file: "/path/to/client_secret.txt"
  level_token_db:
    path: /somewhere/to/put/oidc_tokens.ldb
  http_timeout: 10
  registry_url: localhost:5000
  user_claim: email
  label_claims:
    - groups
  scopes:
    - openid
    - email

gitlab_auth:
  client_id: "a-client-id"
  client_secret_file: "/path/to/client_secret.txt"
  level_token_db:
    path: /somewhere/to/put/gitlab_tokens.ldb
  http_timeout: "10s"
  revalidate_after: "1h"
  gitlab_web_uri: "https://gitlab.com"
  gitlab_api_uri: "https://gitlab.com/api/v4"
  registry_url: localhost:5000
  grant_type: "authorization_code"
  redirect_uri: "https://localhost:5001/gitlab_auth"
"#;

#[test]
fn docker_auths_reference_sections_load_unchanged() {
    let c = parse(REFERENCE).unwrap_or_else(|e| panic!("{e}"));
    let sections: Vec<&str> = c.idp.iter().map(|s| s.backend.section()).collect();
    // docker_auth's order, whatever the file's.
    assert_eq!(
        sections,
        ["google_auth", "github_auth", "oidc_auth", "gitlab_auth"]
    );
    let google = &c.idp[0];
    assert_eq!(
        google.kind,
        Kind::Google {
            issuer: "https://accounts.google.com".into(),
            domain: Some("example.com".into())
        }
    );
    assert_eq!(google.http_timeout, Duration::from_secs(10));
    assert!(
        matches!(&google.client_secret, ClientSecret::File(p) if p == Path::new("/path/to/client_secret.txt"))
    );
    let github = &c.idp[1];
    assert_eq!(github.revalidate_after, Duration::from_secs(3600));
    assert_eq!(github.registry_url.as_deref(), Some("localhost:5000"));
    assert!(
        matches!(&github.kind, Kind::Github { api, .. } if api == "https://github.acme.com/api/v3")
    );
    let oidc = &c.idp[2];
    let Kind::Oidc {
        labels_claims,
        user_claim,
        scopes,
        ..
    } = &oidc.kind
    else {
        panic!()
    };
    assert_eq!(labels_claims, &["groups"]);
    assert_eq!(user_claim, "email");
    assert_eq!(scopes, &["openid", "email"]);
    assert_eq!(
        oidc.redirect_url.as_deref(),
        Some("https://localhost:5001/oidc_auth")
    );
    let gitlab = &c.idp[3];
    assert!(
        matches!(&gitlab.kind, Kind::Gitlab { group: None, web, api } if web == "https://gitlab.com" && api == "https://gitlab.com/api/v4")
    );
    // One token DB for all, the first section's; the others are told so.
    assert_eq!(
        c.token_db.as_deref(),
        Some(Path::new("/somewhere/to/put/google_tokens.ldb"))
    );
    let warnings = c.warnings.join("\n");
    assert!(warnings.contains("github_auth.level_token_db.path is /somewhere/to/put/github_tokens.ldb, but regate keeps one token DB"), "{warnings}");
    assert!(warnings.contains("oidc_auth.label_claims: docker_auth's reference.yml spells it so, but docker_auth reads `labels_claims`"), "{warnings}");
}

#[test]
fn without_a_token_db_the_store_is_in_data_dir_and_without_providers_in_memory() {
    let c = parse("upstream: {url: http://r:5000}\ndata_dir: /var/lib/regate\ngithub_auth:\n  organization: acme\n  client_id: id\n  client_secret: s\n").unwrap();
    assert_eq!(
        c.token_db.as_deref(),
        Some(Path::new("/var/lib/regate/tokens.json"))
    );
    assert!(matches!(&c.idp[0].client_secret, ClientSecret::Inline(s) if s.expose() == "s"));
    assert!(
        !format!("{:?}", c.idp[0]).contains("\"s\""),
        "the secret stays out of Debug"
    );
    let c = parse("upstream: {url: http://r:5000}\n").unwrap();
    assert_eq!(c.token_db, None);
}

fn error_of(section: &str) -> String {
    let e = parse(&format!("upstream: {{url: http://r:5000}}\n{section}")).unwrap_err();
    e.all()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn each_mistake_says_what_to_write() {
    let oidc = "oidc_auth:\n  issuer: https://idp.example\n  client_id: id\n  client_secret: s\n";
    let e = error_of(&format!(
        "{oidc}  redirect_url: https://registry.example/callback\n"
    ));
    assert!(
        e.contains(
            "oidc_auth.redirect_url: `https://registry.example/callback` must end in /oidc_auth"
        ),
        "{e}"
    );
    let e = error_of(oidc);
    assert!(e.contains("`redirect_url` is required"), "{e}");
    let ok = format!("{oidc}  redirect_url: https://registry.example/oidc_auth\n");
    assert!(parse(&format!("upstream: {{url: http://r:5000}}\n{ok}")).is_ok());
    let e = error_of(&format!("{ok}  scopes: [email]\n"));
    assert!(e.contains("`scopes` must hold `openid`"), "{e}");
    let e = error_of(&format!(
        "{ok}  redis_token_db:\n    redis_options: {{addr: \"redis:6379\"}}\n"
    ));
    assert!(e.contains("oidc_auth.redis_token_db: regate keeps the token DB in its state store, which is Redis only when `shared_state.redis` names one"), "{e}");
    assert!(e.contains("shared_state: {redis:"), "{e}");
    // With the replicas' Redis, docker_auth's section loads: the token DB is kept there.
    let c = parse(&format!(
        "upstream: {{url: http://r:5000}}\nshared_state: {{redis: {{addr: \"redis:6379\"}}}}\n{ok}  redis_token_db:\n    redis_options: {{addr: \"redis:6379\"}}\n"
    ))
    .unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("the token DB is kept in `shared_state.redis`")),
        "{:?}",
        c.warnings
    );
    let e = error_of(&format!("{ok}  gcs_token_db:\n    bucket: tokens\n"));
    assert!(
        e.contains("gcs_token_db: regate does not keep a token DB in Google Cloud Storage"),
        "{e}"
    );
    let e = error_of(&format!("{ok}  http_timeout: soon\n"));
    assert!(e.contains("`soon` is not a number of seconds"), "{e}");
    let e = error_of("github_auth:\n  client_id: id\n");
    assert!(e.contains("the client secret is missing"), "{e}");
    let e = error_of("github_auth:\n  client_secret: s\n");
    assert!(e.contains("`client_id` is required"), "{e}");
    let e = error_of("gitlab_auth:\n  client_id: id\n  client_secret: s\n  redirect_uri: https://r.example/gitlab\n");
    assert!(e.contains("must end in /gitlab_auth"), "{e}");
    let e = error_of("gitlab_auth:\n  client_id: id\n  client_secret: s\n  grant_type: password\n  redirect_uri: https://r.example/gitlab_auth\n");
    assert!(e.contains("grant_type: `password`"), "{e}");
    let e = error_of(
        "google_auth:\n  client_id: id\n  client_secret: s\n  issuer: accounts.google.com\n",
    );
    assert!(e.contains("is not an http:// or https:// URL"), "{e}");
    // Under a prefix, the route moves with it.
    let c = parse("upstream: {url: http://r:5000}\nserver: {path_prefix: /registry}\ngitlab_auth:\n  client_id: id\n  client_secret: s\n  redirect_uri: https://r.example/gitlab_auth\n").unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("regate answers /registry/gitlab_auth")),
        "{:?}",
        c.warnings
    );
}
