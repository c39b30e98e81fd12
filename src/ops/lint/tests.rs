use super::*;

use crate::config::tests::{seed, HASH};

/// A config with these users (`""` for the anonymous entry) and this `acl:` body.
fn with(users: &[&str], acl: &str) -> String {
    let mut src = String::from("upstream: {url: \"http://r:5000\"}\nusers:\n");
    for u in users {
        match *u {
            "" => src.push_str("  \"\": {}\n"),
            u => src.push_str(&format!("  {u:?}:\n    password: \"{HASH}\"\n")),
        }
    }
    src.push_str("acl:\n");
    src.push_str(acl);
    src
}

fn lints(src: &str) -> Vec<Warning> {
    let (config, doc) =
        Config::parse_document(Path::new("/etc/regate/config.yml"), src, std::iter::empty())
            .expect("config loads");
    lint(&config, &doc)
}

fn keys(warnings: &[Warning]) -> Vec<&str> {
    warnings.iter().map(|w| w.key.as_str()).collect()
}

fn one(src: &str, key: &str, needle: &str) {
    let w = lints(src);
    assert_eq!(keys(&w), [key], "{w:#?}");
    assert!(w[0].message.contains(needle), "{}", w[0]);
}

fn none(src: &str) {
    let w = lints(src);
    assert!(w.is_empty(), "{w:#?}");
}

#[test]
fn the_seed_misspells_hussein() {
    let w = lints(&seed());
    // `test` is no user either: the seed's rule for it is dead too. The seed's other
    // rules (admin, /.+/, the anonymous hello-world rule) give nothing.
    assert_eq!(
        keys(&w),
        ["acl[1].match.account", "acl[2].match.account"],
        "{w:#?}"
    );
    assert_eq!(
        w[0].to_string(),
        "/etc/regate/config.yml:17:13: acl[1].match.account: no user \"hussien\"; did you mean \"hussein\"?"
    );
    assert_eq!(w[1].message, "no user \"test\"; the rule never applies");
}

#[test]
fn the_fixed_seed_is_clean() {
    let src = seed()
        .replace("hussien", "hussein")
        .replace("  - match: {account: \"test\"}\n    actions: []\n", "");
    none(&src);
}

#[test]
fn anonymous_rules_need_the_empty_user() {
    let acl = "  - match: {account: \"\", name: \"hello-world\"}\n    actions: [pull]\n";
    one(
        &with(&["admin"], acl),
        "acl[0].match.account",
        "add `\"\": {}` to users",
    );
    none(&with(&["admin", ""], acl));
}

#[test]
fn patterns_that_match_no_user() {
    one(
        &with(
            &["admin"],
            "  - match: {account: \"/^ci-/\"}\n    actions: [pull]\n",
        ),
        "acl[0].match.account",
        "matches no user",
    );
    none(&with(
        &["ci-1"],
        "  - match: {account: \"/^ci-/\"}\n    actions: [pull]\n",
    ));
    none(&with(
        &["a"],
        "  - match: {account: \"*\"}\n    actions: [pull]\n",
    ));
}

#[test]
fn a_rule_beaten_by_an_earlier_one() {
    // docker_auth #213: the catch-all pull rule placed before the namespace rule.
    let acl = "  - match: {account: \"/.+/\"}\n    actions: [pull]\n    comment: everyone pulls\n  - match: {account: \"/.+/\", name: \"${account}/*\"}\n    actions: [\"*\"]\n";
    let w = lints(&with(&["alice"], acl));
    assert_eq!(keys(&w), ["acl[1]"], "{w:#?}");
    assert_eq!(w[0].position, Some((9, 3)));
    assert!(
        w[0].message
            .contains("acl[0] \"everyone pulls\" (line 6) matches every request this rule matches"),
        "{}",
        w[0]
    );
    // A regex before a literal it matches.
    one(
        &with(
            &["admin"],
            "  - match: {account: \"/.+/\"}\n    actions: [pull]\n  - match: {account: admin}\n    actions: [\"*\"]\n",
        ),
        "acl[1]",
        "acl[0]",
    );
    // The same rule twice.
    one(
        &with(
            &["a"],
            "  - match: {account: a, labels: {team: dev}}\n    actions: [pull]\n  - match: {account: a, labels: {team: dev}}\n    actions: [push, pull]\n",
        )
        .replace("password: ", "labels: {team: [dev]}\n    password: "),
        "acl[1]",
        "acl[0]",
    );
}

#[test]
fn rules_that_are_not_shadowed() {
    let users = ["alice", "admin", ""];
    // The seed's order: `/.+/` does not match anonymous.
    none(&with(
        &users,
        "  - match: {account: \"/.+/\"}\n    actions: [pull]\n  - match: {account: \"\", name: \"hello-world\"}\n    actions: [pull]\n",
    ));
    // The earlier rule is narrower (more conditions).
    none(&with(
        &users,
        "  - match: {account: \"/.+/\", name: \"${account}/*\"}\n    actions: [\"*\"]\n  - match: {account: \"/.+/\"}\n    actions: [pull]\n",
    ));
    // A placeholder pattern is not compared with a literal: it depends on the request.
    none(&with(
        &users,
        "  - match: {name: \"${account}/*\"}\n    actions: [\"*\"]\n  - match: {name: \"alice/app\"}\n    actions: [pull]\n",
    ));
    // A glob `*` does not cross `/`, so it does not cover every name.
    none(&with(
        &users,
        "  - match: {name: \"*\"}\n    actions: [pull]\n  - match: {name: \"/^a/b$/\"}\n    actions: [push, pull]\n",
    ));
    // Identical name patterns, but their capture groups come from different regexes.
    none(&with(
        &["a@x.com", "a@y.com"],
        "  - match: {account: \"/^(.+)@x\\\\.com$/\", name: \"${account:1}/*\"}\n    actions: [\"*\"]\n  - match: {account: \"/^(.+)@y\\\\.com$/\", name: \"${account:1}/*\"}\n    actions: [\"*\"]\n",
    ));
    // Different ip blocks.
    none(&with(
        &users,
        "  - match: {ip: 10.0.0.0/8}\n    actions: [pull]\n  - match: {ip: 192.168.0.0/16}\n    actions: [pull]\n",
    ));
}

#[test]
fn match_all_belongs_last() {
    let acl = "  - match: {account: admin}\n    actions: [\"*\"]\n  - match: {}\n    actions: [pull]\n  - match: {account: alice}\n    actions: [push, pull]\n  - match: {name: x}\n    actions: []\n";
    let w = lints(&with(&["admin", "alice"], acl));
    // Reported once, at the match-all rule, not again at each rule after it.
    assert_eq!(keys(&w), ["acl[1].match"], "{w:#?}");
    assert!(
        w[0].message.contains("acl[2]..acl[3] never apply"),
        "{}",
        w[0]
    );
    // Universal patterns count as absent: the service every request carries, any type.
    one(
        &with(
            &["a"],
            "  - match: {type: \"*\", service: \"Docker registry\", account: \"/.*/\"}\n    actions: [pull]\n  - match: {account: a}\n    actions: [\"*\"]\n",
        ),
        "acl[0].match",
        "acl[1] never applies",
    );
    none(&with(
        &["a"],
        "  - match: {account: a}\n    actions: [\"*\"]\n  - match: {}\n    actions: [pull]\n",
    ));
}

#[test]
fn placeholders_that_cannot_expand() {
    let users = ["alice"];
    let labelled = |acl: &str| {
        with(&users, acl).replace("password: ", "labels: {team: [dev]}\n    password: ")
    };
    one(
        &labelled("  - match: {labels: {team: \"${labels:team}\"}}\n    actions: [pull]\n"),
        "acl[0].match.labels.team",
        "never expands in a label pattern",
    );
    one(
        &with(
            &users,
            "  - match: {name: \"${acount}/*\"}\n    actions: [pull]\n",
        ),
        "acl[0].match.name",
        "did you mean `${account}`?",
    );
    one(
        &with(
            &users,
            "  - match: {name: \"${label:team}/*\"}\n    actions: [pull]\n",
        ),
        "acl[0].match.name",
        "did you mean `${labels:team}`?",
    );
    // reference.yml's own slip.
    one(
        &labelled("  - match: {name: \"${labels:team}-{labels:team}/*\"}\n    actions: [pull]\n"),
        "acl[0].match.name",
        "`{labels:team}` lacks the `$`",
    );
    one(
        &with(
            &users,
            "  - match: {name: \"${name}\"}\n    actions: [pull]\n",
        ),
        "acl[0].match.name",
        "compares the name with itself",
    );
    one(
        &with(
            &users,
            "  - match: {name: \"${labels:project}/*\"}\n    actions: [pull]\n",
        ),
        "acl[0].match.name",
        "no user has a label \"project\"",
    );
    // Those that do expand.
    none(&labelled(
        "  - match: {account: \"/.+/\", name: \"${labels:team}/*\", labels: {team: \"${account}\"}}\n    actions: [pull]\n",
    ));
    none(&with(
        &["a@x.com"],
        "  - match: {account: \"/^(.+)@x\\\\.com$/\", name: \"${account:1}/{a,b}\"}\n    actions: [pull]\n",
    ));
}

#[test]
fn placeholders_in_ip_are_a_load_error() {
    let src = with(
        &["a"],
        "  - match: {ip: \"${labels:net}\"}\n    actions: [pull]\n",
    );
    let e = Config::parse(Path::new("/c.yml"), &src).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("acl[0].match.ip"));
    assert!(e.message.contains("placeholders are not expanded"), "{e}");
}

#[test]
fn actions_that_do_not_work() {
    let users = ["a"];
    one(
        &with(&users, "  - match: {account: a}\n    actions: [push]\n"),
        "acl[0].actions",
        "push without pull",
    );
    one(
        &with(
            &users,
            "  - match: {account: a}\n    actions: [pull, write]\n",
        ),
        "acl[0].actions",
        "\"write\" is not an action",
    );
    one(
        &with(
            &users,
            "  - match: {account: a}\n    actions: [\"*\", pull]\n",
        ),
        "acl[0].actions",
        "not a wildcard",
    );
    one(
        &with(
            &users,
            "  - match: {account: a, type: registry, name: catalog}\n    actions: [pull]\n",
        ),
        "acl[0].actions",
        "registry:catalog:*",
    );
    none(&with(
        &users,
        "  - match: {account: a, type: registry, name: catalog}\n    actions: [\"*\"]\n  - match: {account: a}\n    actions: [pull, push, delete]\n  - match: {}\n    actions: []\n",
    ));
    // The Activity page's scope, regate:activity:read.
    none(&with(
        &users,
        "  - match: {account: a, type: regate, name: activity}\n    actions: [read]\n",
    ));
    one(
        &with(&users, "  - match: {account: a}\n    actions: [read]\n"),
        "acl[0].actions",
        "\"read\" is not an action",
    );
}

#[test]
fn conditions_no_request_meets() {
    one(
        &with(
            &["a"],
            "  - match: {service: \"registry.example.com\"}\n    actions: [pull]\n",
        ),
        "acl[0].match.service",
        "token.service",
    );
    one(
        &with(
            &["a"],
            "  - match: {labels: {group: admins}}\n    actions: [\"*\"]\n",
        ),
        "acl[0].match.labels.group",
        "no user has a label \"group\"",
    );
}

#[test]
fn load_and_lint_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regate.yml");
    std::fs::write(&path, seed()).unwrap();
    let (config, warnings) = load_and_lint(&path).unwrap();
    assert_eq!(config.acl.len(), 5);
    assert!(warnings[0]
        .to_string()
        .starts_with(&format!("{}:17:13: ", path.display())));
    // A regex that does not compile is an error at load, located.
    std::fs::write(&path, seed().replace("\"/.+/\"", "\"/[/\"")).unwrap();
    let e = load_and_lint(&path).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("acl[3].match.account"));
    assert_eq!(e.position, Some((21, 13)), "{e}");
}

#[test]
fn placeholder_scanner_agrees_with_the_acl() {
    // The lints ask the ACL's own scanner (acl::placeholders).
    use crate::acl::Field;
    assert_eq!(
        placeholders("${account}/${labels:t}-${name:2}${x}${service"),
        [
            Ok(Piece::Var(Field::Account)),
            Ok(Piece::Label("t".into())),
            Ok(Piece::Capture(Field::Name, 2)),
            Err("x"),
        ]
    );
    assert_eq!(missing_dollar("a{2}${name}{type}"), ["type"]);
}

#[test]
fn robots_are_judged_by_their_own_rules() {
    let src = format!(
        "{}robots:\n  ci:\n    secret: \"{HASH}\"\n    acl:\n      - match: {{account: deploy}}\n        actions: [pull]\n      - match: {{name: \"ci/*\"}}\n        actions: [push]\n",
        with(&["alice"], "  - match: {account: ci}\n    actions: [\"*\"]\n")
    );
    let w = lints(&src);
    assert_eq!(
        keys(&w),
        [
            "acl[0].match.account",
            "robots.ci.acl[0].match.account",
            "robots.ci.acl[1].actions"
        ],
        "{w:#?}"
    );
    assert!(
        w[0].message.contains("\"ci\" is a robot account"),
        "{}",
        w[0]
    );
    assert!(w[1].message.contains("does not match \"ci\""), "{}", w[1]);
    assert_eq!(w[2].position, Some((15, 9)), "{}", w[2]);
}
