//! regate's 401s are registry:2's, byte for byte: the same request sent to the real
//! registry in token mode (trusting regate's key) and to regate in front of it gets the same
//! status, body and headers, for each kind of route, with no token, a forged one, and one
//! that is too small.

mod common;

use common::*;
use hyper::Method;

/// The headers a client may read from a 401 (all but `Date`), names in lower case.
fn shape(resp: &Resp) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .filter(|(k, _)| *k != "date")
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .map(|(k, v)| match k.as_str() {
            "www-authenticate" => (k, same_order(&v)),
            _ => (k, v),
        })
        .collect();
    headers.sort();
    headers
}

/// A challenge with each scope's actions sorted: registry:2 lists a manifest PUT's
/// `pull,push` in the order of a Go map walk, which changes from run to run.
fn same_order(challenge: &str) -> String {
    let Some((head, rest)) = challenge.split_once("scope=\"") else {
        return challenge.to_owned();
    };
    let Some((scope, tail)) = rest.split_once('"') else {
        return challenge.to_owned();
    };
    let scope: Vec<String> = scope
        .split(' ')
        .map(|s| match s.rsplit_once(':') {
            Some((resource, actions)) => {
                let mut a: Vec<&str> = actions.split(',').collect();
                a.sort();
                format!("{resource}:{}", a.join(","))
            }
            None => s.to_owned(),
        })
        .collect();
    format!("{head}scope=\"{}\"{tail}", scope.join(" "))
}

#[tokio::test]
async fn challenges_and_error_bodies_equal_registry_2s() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (key, _) = regate::auth::keys::SigningKey::load_or_generate(&data).unwrap();
    let realm = "http://127.0.0.1:1/auth";
    let registry = Registry::start(Some(&TokenAuth {
        realm: realm.into(),
        rootcertbundle: key.certificate_path.clone(),
    }));
    // regate's realm is the registry's, so even the challenge header can match.
    let config = seed_config(&registry.url(), &data).replace(
        "  expiration: 900\n",
        &format!("  expiration: 900\n  realm: \"{realm}\"\n"),
    );
    let gateway = Gateway::start_in(dir, &config).await;

    // A token both accept, for a scope the requests below do not ask for.
    let small = token(
        &gateway.url(),
        Some(("alice", "alice-pw")),
        &["repository:alice/x:pull"],
    )
    .await;
    let forged = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.AAAA";
    let blob = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let requests: Vec<(Method, String)> = vec![
        (Method::GET, "/v2/".into()),
        (Method::GET, "/v2/team/app/manifests/latest".into()),
        (Method::HEAD, "/v2/team/app/manifests/latest".into()),
        (Method::PUT, "/v2/team/app/manifests/1.0".into()),
        (Method::DELETE, format!("/v2/team/app/manifests/{blob}")),
        (Method::GET, format!("/v2/team/app/blobs/{blob}")),
        (Method::HEAD, format!("/v2/team/app/blobs/{blob}")),
        (Method::POST, "/v2/team/app/blobs/uploads/".into()),
        (Method::PATCH, "/v2/team/app/blobs/uploads/abc-123".into()),
        (Method::GET, "/v2/team/app/tags/list".into()),
        (Method::GET, "/v2/_catalog".into()),
    ];
    let bearer_small = format!("Bearer {small}");
    let bearer_forged = format!("Bearer {forged}");
    let credentials: [(&str, Option<&str>); 3] = [
        ("no token", None),
        ("forged token", Some(&bearer_forged)),
        ("too small a token", Some(&bearer_small)),
    ];
    for (method, path) in &requests {
        for (what, authorization) in credentials {
            // The base route takes any valid token: nothing to refuse there.
            if path == "/v2/" && what == "too small a token" {
                continue;
            }
            let headers: Vec<(&str, &str)> = authorization
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            let direct = http(
                method.clone(),
                &format!("{}{path}", registry.url()),
                &headers,
                Vec::new(),
            )
            .await;
            let through = http(
                method.clone(),
                &format!("{}{path}", gateway.url()),
                &headers,
                Vec::new(),
            )
            .await;
            let at = format!("{method} {path} with {what}");
            assert_eq!(direct.status, 401, "{at}: the registry's own answer");
            assert_eq!(through.status, direct.status, "{at}");
            assert_eq!(
                String::from_utf8_lossy(&through.body),
                String::from_utf8_lossy(&direct.body),
                "{at}: body"
            );
            assert_eq!(shape(&through), shape(&direct), "{at}: headers");
        }
    }
}
