//! GitHub and GitLab, through the STAND-IN of their OAuth and REST APIs
//! (`tests/idp/standin.mjs`): they cannot be reached from here.

use super::*;

/// A sign-in at the stand-in through the browser; the run's results.
async fn sign_in_at(
    shots: &std::path::Path,
    label: &str,
    url: &str,
    user: &str,
    password: &str,
    ends_at: &str,
) -> Value {
    browser(
        shots,
        label,
        steps(vec![
            vec![json!({"goto": url})],
            provider_login(user, password),
            vec![
                json!({"waitForSelector": ends_at}),
                json!({"text": "main", "as": "page"}),
                match ends_at {
                    "#reason" => json!({"text": "#reason", "as": "reason"}),
                    _ => json!({"attribute": "#password", "name": "value", "as": "password"}),
                },
            ],
            look(shots, label),
        ]),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn github_and_gitlab_through_the_standin() {
    setup();
    let shots = shots("github_gitlab");
    let work = tempfile::tempdir().unwrap();
    let port = free_port("127.0.0.1");
    let site = format!("http://127.0.0.1:{port}");
    // 105 teams in acme: /user/teams answers 100 a page, so team-104 is on the second.
    let mut teams: Vec<Value> = (0..105).map(|i| json!(format!("team-{i:03}"))).collect();
    teams.push(json!({"slug": "infra", "name": "Infra", "parent": "platform"}));
    // THE STAND-IN for GitHub and GitLab (tests/idp/standin.mjs), not the real services.
    let standin = NodeServer::start(
        "standin.mjs",
        &json!({
            "clients": [
                {"client_id": "gh-app", "client_secret": "gh-secret", "redirect_uris": [format!("{site}/github_auth")]},
                {"client_id": "gl-app", "client_secret": "gl-secret", "redirect_uris": [format!("{site}/gitlab_auth")]},
            ],
            "users": [
                {"login": "alice", "password": "alice-pw", "email": "alice@example.com",
                 "github": {"orgs": [{"login": "acme", "teams": teams}, {"login": "other", "teams": ["elsewhere"]}]},
                 "gitlab": {"groups": ["acme/platform"]}},
                {"login": "mallory", "password": "mallory-pw", "email": "mallory@example.org",
                 "github": {"orgs": [{"login": "other", "teams": ["x"]}]},
                 "gitlab": {"groups": ["other"]}},
            ],
        }),
        work.path(),
    );
    let s = &standin.url;
    let config = format!(
        r#"server: {{addr: "127.0.0.1:{port}"}}
data_dir: "{data}"
upstream: {{url: "http://127.0.0.1:9"}}
acl:
  - match: {{labels: {{teams: "team-104"}}, name: "t104/*"}}
    actions: ["*"]
  - match: {{labels: {{teams: "platform"}}, name: "platform/*"}}
    actions: ["*"]
  - match: {{labels: {{groups: "acme/platform"}}, name: "glplatform/*"}}
    actions: ["*"]
  - match: {{account: "/.+/"}}
    actions: ["pull"]
github_auth:
  organization: acme
  client_id: gh-app
  client_secret: gh-secret
  github_web_uri: "{s}"
  github_api_uri: "{s}"
  revalidate_after: 1s
gitlab_auth:
  organization: acme
  client_id: gl-app
  client_secret: gl-secret
  gitlab_web_uri: "{s}"
  gitlab_api_uri: "{s}/api/v4"
  redirect_uri: "{site}/gitlab_auth"
  grant_type: authorization_code
  revalidate_after: 1s
"#,
        data = work.path().join("data").display(),
    );
    let gateway = Gateway::start(&config).await;

    // GitHub: alice, a member of acme; her teams in acme (both pages, and infra's parent),
    // not her team in another organization.
    let run = sign_in_at(
        &shots,
        "1-github-alice",
        &format!("{site}/github_auth"),
        "alice",
        "alice-pw",
        "#password-title",
    )
    .await;
    let page = text(&run, "page");
    assert!(
        page.contains("teams: infra, platform, team-000") && page.contains("and 95 more"),
        "{page}"
    );
    assert!(!page.contains("elsewhere"), "{page}");
    let requests = standin
        .admin(Method::GET, "/__test/requests", None)
        .await
        .json();
    assert!(
        requests.to_string().contains("page=2"),
        "regate followed the Link header to the second page of teams: {requests}"
    );
    let password = text(&run, "password").to_owned();
    for repo in ["t104", "platform"] {
        let (status, actions, body) = auth(
            &site,
            "alice",
            &password,
            &format!("repository:{repo}/app:push"),
        )
        .await;
        assert_eq!(
            (status, actions),
            (200, vec!["push".to_owned()]),
            "{repo}: {body}"
        );
    }
    let run = sign_in_at(
        &shots,
        "2-github-mallory",
        &format!("{site}/github_auth"),
        "mallory",
        "mallory-pw",
        "#reason",
    )
    .await;
    assert!(
        text(&run, "reason").contains("mallory is not a member of the GitHub organization acme"),
        "{run:#}"
    );
    assert!(credentials(&gateway.server, "mallory").await.is_empty());

    // Teams are read again at every check: out of team-104, no push to t104/ (the pull
    // rule decides instead).
    standin
        .admin(
            Method::POST,
            "/__test/github/remove?user=alice&org=acme&team=team-104",
            None,
        )
        .await;
    eventually("alice's teams read again", POLL, || async {
        match auth(&site, "alice", &password, "repository:t104/app:push").await {
            (200, actions, _) if actions.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Out of the organization: her password stops, and says why.
    standin
        .admin(
            Method::POST,
            "/__test/github/remove?user=alice&org=acme",
            None,
        )
        .await;
    eventually("alice refused once out of acme", POLL, || async {
        match auth(&site, "alice", &password, "repository:x/app:pull").await {
            (401, _, body) if body.contains("no longer vouches") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // GitLab: alice, in acme/platform (a group below acme); her groups are labels.
    let run = sign_in_at(
        &shots,
        "3-gitlab-alice",
        &format!("{site}/gitlab_auth"),
        "alice",
        "alice-pw",
        "#password-title",
    )
    .await;
    assert!(
        text(&run, "page").contains("groups: acme/platform"),
        "{run:#}"
    );
    let password = text(&run, "password").to_owned();
    let (status, actions, body) =
        auth(&site, "alice", &password, "repository:glplatform/app:push").await;
    assert_eq!((status, actions), (200, vec!["push".to_owned()]), "{body}");
    // GitLab access tokens expire: the check refreshes them (GitLab rotates the refresh
    // token) and alice keeps working.
    standin
        .admin(Method::DELETE, "/__test/requests", None)
        .await;
    standin
        .admin(Method::POST, "/__test/expire?user=alice", None)
        .await;
    eventually("an expired GitLab token refreshed", POLL, || async {
        let (status, _, body) =
            auth(&site, "alice", &password, "repository:glplatform/app:push").await;
        let seen = standin
            .admin(Method::GET, "/__test/requests", None)
            .await
            .json()
            .to_string();
        match status {
            200 if seen.contains("/oauth/token") => Ok(()),
            _ => Err(format!("{status} {body} {seen}")),
        }
    })
    .await;
    // Out of the group: refused at the next check.
    standin
        .admin(
            Method::POST,
            "/__test/gitlab/remove?user=alice&group=acme/platform",
            None,
        )
        .await;
    eventually("alice refused once out of acme/platform", POLL, || async {
        match auth(&site, "alice", &password, "repository:glplatform/app:pull").await {
            (401, _, body) if body.contains("no longer vouches") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let run = sign_in_at(
        &shots,
        "4-gitlab-mallory",
        &format!("{site}/gitlab_auth"),
        "mallory",
        "mallory-pw",
        "#reason",
    )
    .await;
    assert!(
        text(&run, "reason").contains("mallory is not a member of the GitLab group acme"),
        "{run:#}"
    );
    assert!(credentials(&gateway.server, "mallory").await.is_empty());
    gateway.server.shutdown().await;
}
