//! Issue #20: many users and many rules. What the benchmark times (`benches/run.sh
//! --scale-only`), these tests only check works: 100,000 users in `users:` and in an
//! htpasswd file load, a reload of them keeps tokens coming, and a user whose rule is the
//! last of 5,000 gets it. No timing is asserted.

use std::fmt::Write as _;

use crate::common::*;

const USERS: usize = 100_000;
const RULES: usize = 5_000;

/// The seed's config plus `USERS` users in `users:` (labelled), `USERS` more in an
/// htpasswd file, and `RULES` rules, one per user `u{i}`, before the seed's own.
fn scaled(base_config: &str, dir: &std::path::Path, hash: &str) -> String {
    let mut htpasswd = String::new();
    for i in 0..USERS {
        let _ = writeln!(htpasswd, "h{i}:{hash}");
    }
    std::fs::write(dir.join("users.htpasswd"), htpasswd).unwrap();
    let mut users = String::new();
    for i in 0..USERS {
        let _ = writeln!(
            users,
            "  \"u{i}\":\n    password: \"{hash}\"\n    labels: {{team: [t{}]}}",
            i % 100
        );
    }
    let mut rules = String::from("acl:\n");
    for i in 0..RULES {
        let _ = writeln!(
            rules,
            "  - match: {{account: \"u{i}\", name: \"u{i}/*\"}}\n    actions: [pull, push]"
        );
    }
    derive(
        base_config,
        &[
            (
                "users:\n",
                &format!("htpasswd: users.htpasswd\nusers:\n{users}"),
            ),
            ("acl:\n", &rules),
        ],
    )
}

async fn token_status(base: &str, user: &str, password: &str, scope: &str) -> (u16, String) {
    let url = format!("{base}/auth?service=Docker%20registry&scope={scope}");
    let r = get(&url, &[("authorization", &basic(user, password))]).await;
    let actions = match r.status.as_u16() {
        200 => {
            let token = r.json()["token"].as_str().unwrap().to_owned();
            let claims = crate::common::claims(&token);
            let actions = claims["access"][0]["actions"].as_array().unwrap();
            let names: Vec<&str> = actions.iter().map(|a| a.as_str().unwrap()).collect();
            names.join(",")
        }
        _ => String::new(),
    };
    (r.status.as_u16(), actions)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_of_100000_users_keeps_tokens_coming() {
    let dir = tempfile::tempdir().unwrap();
    // /auth never asks the registry: nothing needs to listen upstream.
    let small = seed_config("http://127.0.0.1:9", &dir.path().join("data"));
    let big = scaled(&small, dir.path(), &bcrypt("pw"));
    let path = dir.path().join("regate.yml");
    let gateway = Gateway::start_in(dir, &small).await;
    let base = gateway.url();
    assert_eq!(
        token_status(&base, "u4999", "pw", "repository:u4999/app:push")
            .await
            .0,
        401
    );

    // A client asks for tokens without pause while the watcher loads the big file.
    std::fs::write(&path, &big).unwrap();
    gateway.server.request_reload();
    let mut during = 0;
    loop {
        let (status, _) = token_status(&base, "admin", "admin-pw", "repository:x:pull").await;
        assert_eq!(status, 200, "a token request during the reload");
        during += 1;
        if token_status(&base, "u4999", "pw", "repository:u4999/app:push")
            .await
            .0
            == 200
        {
            break;
        }
        assert!(during < 100_000, "the reload never happened");
    }
    eprintln!("{during} tokens served while 2×{USERS} users were loaded");

    // Both kinds of user are in, and the last user's rule (the 5,000th) decides.
    for user in ["u99999", "h99999", "u0"] {
        assert_eq!(
            token_status(&base, user, "pw", "repository:x:pull").await.0,
            200
        );
    }
    assert_eq!(
        token_status(&base, "u4999", "pw", "repository:u4999/app:push,pull").await,
        (200, "pull,push".to_owned())
    );
    // Another user's namespace: u4999's rule does not apply, and the seed's rules after
    // the 5,000 give any named user pull, as before.
    assert_eq!(
        token_status(&base, "u4998", "pw", "repository:u4999/app:push,pull").await,
        (200, "pull".to_owned())
    );
}
