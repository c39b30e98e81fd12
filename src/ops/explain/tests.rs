use std::path::Path;
use std::sync::Arc;

use super::*;

/// The seed's docker_auth config, the one fixture the tests derive theirs from.
const SEED: &str = include_str!("../../../config/docker_auth-seed.yml");

/// `text` with each `(from, to)` applied; each `from` must be there exactly once.
fn derive(text: &str, edits: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in edits {
        assert_eq!(out.matches(from).count(), 1, "{from:?} once in:\n{out}");
        out = out.replacen(from, to, 1);
    }
    out
}

/// The seed (config/docker_auth-seed.yml) with a labelled user `alice` (bcrypt of "pw",
/// cost 4, so the tests stay fast) in place of `hussein`, a comment on the admin rule, and
/// a namespace, a label and an address rule in place of the two rules for `hussien` (sic)
/// and `test`.
fn config() -> Config {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let hussein = SEED
        .lines()
        .skip_while(|l| !l.starts_with("  \"hussein\":"))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    let alice = format!("  \"alice\":\n    password: \"{hash}\"\n    labels: {{team: [web]}}");
    let src = derive(
        SEED,
        &[
            (&hussein, &alice),
            (
                "  - match: {account: \"admin\"}\n    actions: [\"*\"]\n",
                "  - match: {account: \"admin\"}\n    actions: [\"*\"]\n    comment: \"admin can do anything\"\n",
            ),
            (
                "  - match: {account: \"hussien\", name: \"ubuntu\"}   # sic: the user is \"hussein\"\n    actions: [\"*\"]\n  - match: {account: \"test\"}\n    actions: []\n",
                r#"  - match: {account: "/.+/", name: "${account}/*"}
    actions: ["*"]
    comment: "each user owns a namespace"
  - match: {labels: {team: web}, name: "web/*"}
    actions: [pull, push]
  - match: {ip: 10.0.0.0/8}
    actions: [pull]
"#,
            ),
        ],
    );
    Config::parse(Path::new("/c.yml"), &src).unwrap()
}

fn scopes(list: &[&str]) -> Vec<Scope> {
    list.iter().map(|s| Scope::parse(s).unwrap()).collect()
}

fn input<'a>(account: &'a str, scopes: &'a [Scope]) -> Input<'a> {
    Input {
        account,
        password: None,
        ip: None,
        labels: None,
        scopes,
    }
}

#[test]
fn a_user_in_their_namespace_and_elsewhere() {
    let c = config();
    let s = scopes(&[
        "repository:alice/app:pull,push",
        "repository:bob/app:pull,push",
    ]);
    let r = explain(&c, &input("alice", &s));
    assert_eq!(r.status, Account::User);
    assert_eq!(r.labels_from, "users");
    let own = &r.scopes[0];
    assert_eq!(own.rule, Some(1));
    assert_eq!(own.comment.as_deref(), Some("each user owns a namespace"));
    assert_eq!(own.granted, ["pull", "push"]);
    assert!(own.denied.is_empty());
    assert_eq!(own.skipped.len(), 1);
    assert_eq!(
        own.skipped[0].reason,
        "account \"alice\" does not match \"admin\""
    );
    let other = &r.scopes[1];
    assert_eq!(other.rule, Some(4));
    assert_eq!(other.granted, ["pull"]);
    assert_eq!(other.denied, ["push"]);
    let text = r.to_text();
    let expected = "\
account: \"alice\": a user in `users`
labels: team=web (from users)
ip: (none given: rules with `ip` do not match; use --ip)
service: \"Docker registry\"

scope: repository:alice/app:pull,push
  asks: pull,push
  acl[0] \"admin can do anything\": no match: account \"alice\" does not match \"admin\"
  acl[1] \"each user owns a namespace\": decides: actions [\"*\"]
  granted: pull,push
  denied: (none)

scope: repository:bob/app:pull,push
  asks: pull,push
  acl[0] \"admin can do anything\": no match: account \"alice\" does not match \"admin\"
  acl[1] \"each user owns a namespace\": no match: name \"bob/app\" does not match \"${account}/*\"
  acl[2]: no match: name \"bob/app\" does not match \"web/*\"
  acl[3]: no match: ip: no client address to test against \"10.0.0.0/8\"
  acl[4]: decides: actions [\"pull\"]
  granted: pull
  denied: push
";
    assert_eq!(text, expected);
}

#[test]
fn labels_and_ip_can_be_given() {
    let c = config();
    let s = scopes(&["repository:web/site:pull,push"]);
    let r = explain(&c, &input("alice", &s));
    assert_eq!(r.scopes[0].rule, Some(2));
    let none = Labels::new();
    let r = explain(
        &c,
        &Input {
            labels: Some(&none),
            ip: Some("10.1.2.3".parse().unwrap()),
            ..input("alice", &s)
        },
    );
    assert_eq!(r.labels_from, "--label");
    assert_eq!(r.scopes[0].rule, Some(3));
    assert_eq!(r.scopes[0].skipped[2].reason, "label \"team\" is missing");
    assert!(r.to_text().contains("ip: 10.1.2.3\n"));
}

#[test]
fn passwords_are_checked() {
    let c = config();
    let s = scopes(&["repository:x:pull"]);
    let right = Secret::new("pw");
    let wrong = Secret::new("nope");
    let check = |account, password| {
        explain(
            &c,
            &Input {
                password: Some(password),
                ..input(account, &s)
            },
        )
        .password
    };
    assert_eq!(check("alice", &right), Some(Password::Correct));
    assert_eq!(check("alice", &wrong), Some(Password::Wrong));
    assert_eq!(check("mallory", &right), Some(Password::NoUser));
    assert_eq!(check("", &right), Some(Password::Anonymous));
    let r = explain(
        &c,
        &Input {
            password: Some(&wrong),
            ..input("alice", &s)
        },
    );
    assert!(r
        .to_text()
        .contains("password: wrong: a token request gets 401"));
    assert_eq!(explain(&c, &input("alice", &s)).password, None);
}

#[test]
fn unknown_and_anonymous_accounts() {
    let c = config();
    let s = scopes(&["repository:hello-world:pull", "repository:mallory/x:push"]);
    let r = explain(&c, &input("mallory", &s));
    assert_eq!(r.status, Account::Unknown);
    assert_eq!(r.labels_from, "none");
    assert!(r
        .to_text()
        .contains("no such user in `users`: a token request gets 401"));
    // Still explained, as if the user existed.
    assert_eq!(r.scopes[1].rule, Some(1));

    let r = explain(&c, &input("", &s));
    assert_eq!(r.status, Account::Anonymous);
    assert_eq!(r.scopes[0].rule, Some(5));
    assert_eq!(r.scopes[0].granted, ["pull"]);
    assert_eq!(r.scopes[1].rule, None);
    assert!(r
        .to_text()
        .contains("  no rule matched: denied by default\n  granted: (none)\n  denied: push\n"));

    let mut c = c;
    std::sync::Arc::make_mut(&mut c.users).remove("");
    let r = explain(&c, &input("", &s));
    assert_eq!(r.status, Account::AnonymousDisabled);
    assert!(r.to_text().contains("gets 401 before the ACL"));
}

#[test]
fn a_repository_star_asks_for_each_action() {
    let c = config();
    let s = scopes(&["repository:carol/x:*", "registry:catalog:*"]);
    // A user who logs in (an unknown account gets nothing, whatever the rules).
    let r = explain(&c, &input("alice", &s));
    assert_eq!(r.scopes[0].requested, ["*", "pull", "push", "delete"]);
    assert_eq!(r.scopes[0].granted, ["pull"]);
    assert_eq!(r.scopes[0].denied, ["push", "delete"]);
    assert_eq!(r.scopes[1].requested, ["*"]);
    assert_eq!(r.scopes[1].denied, ["*"]);
}

#[test]
fn json_names_every_field() {
    let c = config();
    let s = scopes(&["repository:alice/app:pull"]);
    let r = explain(&c, &input("alice", &s));
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["status"], "user");
    assert_eq!(v["scopes"][0]["rule"], 1);
    assert_eq!(v["scopes"][0]["skipped"][0]["rule"], 0);
    assert_eq!(
        v["scopes"][0]["skipped"][0]["comment"],
        "admin can do anything"
    );
    assert_eq!(v["password"], serde_json::Value::Null);
}

#[test]
fn denial_reasons_for_the_log() {
    let c = config();
    let actions = ["pull".to_owned(), "push".to_owned()];
    let labels = Labels::new();
    let ask = |account, name| acl::Request {
        account,
        labels: &labels,
        ip: None,
        service: "Docker registry",
        resource_type: "repository",
        name,
        actions: &actions,
    };
    let e = c.acl.explain(&ask("bob", "alice/app"));
    assert_eq!(
        e.reason(&c.acl, "acl"),
        "acl[4] decided, allowing [\"pull\"]; before it: acl[0] account \"bob\" does not match \"admin\"; acl[1] name \"alice/app\" does not match \"${account}/*\"; acl[2] name \"alice/app\" does not match \"web/*\"; acl[3] ip: no client address to test against \"10.0.0.0/8\""
    );
    let e = c.acl.explain(&ask("", "private"));
    let reason = e.reason(&c.acl, "acl");
    assert!(
        reason.starts_with(
            "no rule matched (denied by default): acl[0] account \"\" does not match \"admin\"; "
        ),
        "{reason}"
    );
    assert!(
        reason.ends_with("acl[5] name \"private\" does not match \"hello-world\""),
        "{reason}"
    );
    let empty = Acl::compile(&[]).unwrap();
    assert_eq!(
        empty.explain(&ask("bob", "x")).reason(&empty, "acl"),
        "the ACL is empty (denied by default)"
    );
}

#[test]
fn label_arguments() {
    let labels = parse_labels(&["team=web".into(), "team=ops".into(), "tier=".into()]).unwrap();
    assert_eq!(labels["team"], ["web", "ops"]);
    assert_eq!(labels["tier"], [""]);
    assert!(parse_labels(&["team".into()]).is_err());
    assert!(parse_labels(&["=x".into()]).is_err());
}

#[test]
fn a_robot_is_judged_by_its_own_rules() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let src = |expires: &str| {
        format!(
            "upstream: {{url: \"http://r:5000\"}}\nacl:\n  - match: {{}}\n    actions: [\"*\"]\nrobots:\n  ci:\n    secret: \"{hash}\"\n    expires: \"{expires}\"\n    acl:\n      - match: {{name: \"ci/*\"}}\n        actions: [pull, push]\n        comment: ci pushes\n"
        )
    };
    let c = Config::parse(Path::new("/c.yml"), &src("2999-01-01")).unwrap();
    let s = scopes(&["repository:ci/app:push", "repository:other:pull"]);
    let r = explain(&c, &input("ci", &s));
    assert_eq!(r.status, Account::Robot);
    assert_eq!(r.acl, "robots.ci.acl");
    assert_eq!(r.scopes[0].granted, ["push"]);
    assert_eq!(r.scopes[1].rule, None);
    let text = r.to_text();
    assert!(
        text.contains("  robots.ci.acl[0] \"ci pushes\": decides: actions [\"pull\", \"push\"]\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  robots.ci.acl[0] \"ci pushes\": no match: name \"other\" does not match \"ci/*\"\n"
        ),
        "{text}"
    );

    let c = Config::parse(Path::new("/c.yml"), &src("2001-01-01")).unwrap();
    let r = explain(&c, &input("ci", &s));
    assert_eq!(r.status, Account::RobotExpired);
    assert!(r
        .to_text()
        .contains("a token request gets 401 (this robot account has expired)"));
}

/// `explain` and `/auth` cannot disagree about a robot: driven at the second before its
/// end, at the exact second, and after, both give the same answer.
#[tokio::test]
async fn explain_and_the_token_endpoint_agree_on_a_robot_at_its_expiry() {
    use std::time::Duration;

    use crate::auth::identity::AuthnError;
    use crate::auth::users::Users;

    let hash = bcrypt::hash("pw", 4).unwrap();
    let src = format!(
        "upstream: {{url: \"http://r:5000\"}}\nrobots:\n  ci:\n    secret: \"{hash}\"\n    expires: \"2030-01-01T00:00:00Z\"\n    acl: [{{match: {{}}, actions: [pull]}}]\n"
    );
    let c = Config::parse(Path::new("/c.yml"), &src).unwrap();
    let end = c.users["ci"].robot.as_ref().unwrap().expires.unwrap();
    let users = Arc::new(Users::new(
        c.users.clone(),
        Duration::from_secs(60),
        Arc::default(),
    ));
    let secret = Secret::new("pw");
    let s = scopes(&["repository:ci/app:pull"]);
    let mut with_password = input("ci", &s);
    with_password.password = Some(&secret);
    for (now, expired) in [
        (end - Duration::from_secs(1), false),
        (end, true),
        (end + Duration::from_secs(1), true),
    ] {
        let auth = users.authenticate_at("ci", &secret, now).await;
        let report = explain_at(&c, &with_password, now);
        let explained = report.status == Account::RobotExpired;
        let refused = matches!(auth, Err(AuthnError::Expired));
        assert_eq!(
            (refused, explained),
            (expired, expired),
            "at {:?} from the end: /auth {auth:?}, explain {:?}",
            now.duration_since(end).ok(),
            report.status
        );
        assert!(auth.is_ok() || refused, "{auth:?}");
    }
}
