//! Placeholders: labels, capture groups, the scanner, and the cache of regexes built
//! from substituted patterns.

use super::super::pattern::{parse_pieces, Piece, REGEX_CACHE_CAPACITY};
use super::*;

#[test]
fn label_placeholders() {
    let acl = acl(r#"
- match: {name: "${labels:group}/*"}
  actions: [pull, push]
- match: {name: "${labels:project}-${labels:tier}/*"}
  actions: [pull]
- match: {name: "/^${labels:re}$/"}
  actions: [delete]
"#);
    let dev = |name: &str| ask("bob", name, "pull,push").label("group", &["dev", "ops"]);
    assert_eq!(dev("ops/app").granted(&acl), "pull,push");
    assert_eq!(dev("dev/app").granted(&acl), "pull,push");
    assert_eq!(dev("qa/app").on(&acl), decision(&[], None));
    assert_eq!(dev("ops/a/b").on(&acl), decision(&[], None));
    // Without the label the pattern is tried as written.
    assert_eq!(
        ask("bob", "${labels:group}/x", "pull").granted(&acl),
        "pull"
    );
    assert_eq!(ask("bob", "dev/app", "pull").on(&acl), decision(&[], None));
    // Every combination of the values of all placeholders.
    let product = |name: &str| {
        ask("bob", name, "pull")
            .label("project", &["web", "db"])
            .label("tier", &["prod", "test"])
    };
    assert_eq!(product("db-test/x").on(&acl), decision(&["pull"], Some(1)));
    assert_eq!(product("db-prod/x").on(&acl), decision(&["pull"], Some(1)));
    assert_eq!(product("web-dev/x").on(&acl), decision(&[], None));
    // Label values are not quoted: a value can be regex syntax.
    let alternation = |name: &str| ask("bob", name, "delete").label("re", &["a|b"]);
    assert_eq!(alternation("b").granted(&acl), "delete");
    assert_eq!(alternation("c").granted(&acl), "");
}

#[test]
fn label_conditions() {
    let acl = acl(r#"
- match: {labels: {team: "dev*", role: "/^(admin|owner)$/"}}
  actions: ["*"]
- match: {labels: {email: "${account}@*"}}
  actions: [pull]
"#);
    let both = ask("bob", "x", "push")
        .label("team", &["ops", "devops", "dev-1"])
        .label("role", &["viewer", "owner"]);
    assert_eq!(both.on(&acl), decision(&["push"], Some(0)));
    let wrong_role = ask("bob", "x", "push")
        .label("team", &["dev"])
        .label("role", &["viewer"]);
    assert_eq!(wrong_role.on(&acl), decision(&[], None));
    let missing = ask("bob", "x", "push").label("team", &["dev"]);
    assert_eq!(missing.on(&acl), decision(&[], None));
    let email = ask("bob", "x", "pull").label("email", &["bob@example.com"]);
    assert_eq!(email.on(&acl), decision(&["pull"], Some(1)));
    let other = ask("eve", "x", "pull").label("email", &["bob@example.com"]);
    assert_eq!(other.on(&acl), decision(&[], None));
}

#[test]
fn capture_groups() {
    let acl = acl(r#"
- match: {account: '/^(.+)@test\.com$/', name: '${account:1}/*'}
  actions: ["*"]
- match: {account: '/^(?:(a)|b)@corp$/', name: '${account:1}*/x'}
  actions: [pull]
"#);
    let john = |name: &str| ask("john.smith@test.com", name, "pull,push");
    assert_eq!(john("john.smith/test").granted(&acl), "pull,push");
    assert_eq!(john("other/test").on(&acl), decision(&[], None));
    assert_eq!(john("john.smith/a/b").on(&acl), decision(&[], None));
    // The captured text is quoted, so it cannot widen the pattern.
    assert_eq!(ask("j*@test.com", "jx/test", "pull").granted(&acl), "");
    assert_eq!(ask("j*@test.com", "j*/test", "pull").granted(&acl), "pull");
    // A group that took no part in the match is empty.
    assert_eq!(
        ask("b@corp", "any/x", "pull").on(&acl),
        decision(&["pull"], Some(1))
    );
    assert_eq!(ask("a@corp", "ant/x", "pull").granted(&acl), "pull");
    assert_eq!(ask("a@corp", "bee/x", "pull").granted(&acl), "");
}

#[test]
fn many_dynamic_patterns_stay_correct_past_the_cache_bound() {
    let acl = acl("- match: {name: '/^${account}$/'}\n  actions: [pull]");
    for i in 0..(REGEX_CACHE_CAPACITY + 10) {
        let account = format!("user{i}");
        assert_eq!(ask(&account, &account, "pull").granted(&acl), "pull");
        assert_eq!(ask(&account, "other", "pull").granted(&acl), "");
    }
}

#[test]
fn placeholder_parsing() {
    use Piece::*;
    assert_eq!(
        parse_pieces("${account}/${labels:a:b}-${name:12}${nope}${type"),
        [
            Var(Field::Account),
            Text("/".into()),
            Label("a:b".into()),
            Text("-".into()),
            Capture(Field::Name, 12),
            Text("${nope}${type".into()),
        ]
    );
    assert_eq!(parse_pieces("${service:x}"), [Text("${service:x}".into())]);
    assert_eq!(
        quote_meta(r"a.b*c\d[e]{f}$^|()+?/-"),
        r"a\.b\*c\\d\[e\]\{f\}\$\^\|\(\)\+\?/-"
    );
}
