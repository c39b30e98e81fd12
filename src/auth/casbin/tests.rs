//! docker_auth's `casbin_authz_test.go` cases, against a model and policy of the shape its
//! examples use (an admin who may do anything, a user with rules of their own, a role with
//! a network and labels).

use super::*;

const MODEL: &str = "\
[request_definition]
r = account, type, name, service, ip, action, labels

[policy_definition]
p = account, type, name, service, ip, action, labels

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.account == \"admin\" || (g(r.account, p.account) && r.type == p.type && r.name == p.name && r.service == p.service && ipMatch(r.ip, p.ip) && r.action == p.action && labelMatch(r.labels, p.labels))
";

/// docker_auth's example form: JSON quoted in CSV's way.
const POLICY: &str = r#"p, alice, book, book1, bookstore1, 1.2.3.4, read, "{""a"":[""b""]}"
p, alice, book, book1, bookstore1, 1.2.3.4, write, "{""a"":[""b""]}"
p, role1, book, book2, bookstore1, 192.168.1.0/24, read, "{""a"":[""b"",""c""]}"

g, bob, role1
"#;

/// Its older test file's form: the JSON unquoted.
const POLICY_UNQUOTED: &str = r#"p, alice, book, book1, bookstore1, 1.2.3.4, read, {"a":["b"]}
p, alice, book, book1, bookstore1, 1.2.3.4, write, {"a":["b"]}
p, role1, book, book2, bookstore1, 192.168.1.0/24, read, {"a":["b","c"]}

g, bob, role1
"#;

fn labels(pairs: &[(&str, &[&str])]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn check(
    c: &Casbin,
    account: &str,
    type_: &str,
    name: &str,
    service: &str,
    ip: &str,
    labels_: &[(&str, &[&str])],
    want: &[&str],
) {
    let labels = labels(labels_);
    let actions: Vec<String> = ["write", "read", "delete"].map(String::from).to_vec();
    let request = acl::Request {
        account,
        labels: &labels,
        ip: Some(ip.parse().unwrap()),
        service,
        resource_type: type_,
        name,
        actions: &actions,
    };
    let mut got = c.allowed(&request).unwrap();
    got.sort();
    let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(
        got, want,
        "{account} {type_} {name} {service} {ip} {labels_:?}"
    );
}

fn docker_auth_cases(c: &Casbin) {
    let ab: &[(&str, &[&str])] = &[("a", &["b"])];
    let ac: &[(&str, &[&str])] = &[("a", &["c"])];
    let abc: &[(&str, &[&str])] = &[("a", &["b", "c"])];
    let abc_de: &[(&str, &[&str])] = &[("a", &["b", "c"]), ("d", &["e"])];
    let ab_de: &[(&str, &[&str])] = &[("a", &["b"]), ("d", &["e"])];
    // alice is a user.
    check(
        c,
        "alice",
        "book",
        "book1",
        "bookstore1",
        "1.2.3.4",
        ab,
        &["write", "read"],
    );
    check(
        c,
        "alice",
        "book",
        "book1",
        "bookstore1",
        "1.2.3.3",
        ab,
        &[],
    );
    check(
        c,
        "alice",
        "book",
        "book2",
        "bookstore2",
        "1.2.3.4",
        ab,
        &[],
    );
    check(c, "alice", "pen", "book1", "bookstore1", "1.2.3.4", ab, &[]);
    check(
        c,
        "alice",
        "book",
        "book1",
        "bookstore1",
        "1.2.3.4",
        ac,
        &[],
    );
    check(
        c,
        "alice",
        "book",
        "book1",
        "bookstore1",
        "1.2.3.4",
        abc,
        &["write", "read"],
    );
    // bob is a member of role1.
    check(
        c,
        "bob",
        "book",
        "book2",
        "bookstore1",
        "192.168.1.123",
        abc_de,
        &["read"],
    );
    check(
        c,
        "bob",
        "book",
        "book2",
        "bookstore1",
        "192.168.1.123",
        ab_de,
        &[],
    );
    check(
        c,
        "bob",
        "book",
        "book2",
        "bookstore1",
        "192.168.0.123",
        abc_de,
        &[],
    );
    check(
        c,
        "bob",
        "book",
        "book2",
        "bookstore1",
        "192.168.1.123",
        abc,
        &["read"],
    );
    check(
        c,
        "bob",
        "book",
        "book2",
        "restaurant",
        "192.168.1.123",
        abc_de,
        &[],
    );
    // admin may do anything.
    let all = &["write", "read", "delete"];
    check(
        c,
        "admin",
        "book",
        "book1",
        "bookstore1",
        "1.2.3.4",
        ab,
        all,
    );
    check(
        c,
        "admin",
        "book",
        "book1",
        "bookstore1",
        "1.2.3.3",
        ab,
        all,
    );
    check(
        c,
        "admin",
        "book",
        "book2",
        "bookstore2",
        "1.2.3.4",
        ab,
        all,
    );
    check(c, "admin", "pen", "book1", "bookstore1", "1.2.3.4", ab, all);
    check(
        c,
        "admin",
        "book",
        "book1",
        "bookstore1",
        "1.2.3.4",
        ac,
        all,
    );
    check(
        c,
        "admin",
        "book",
        "book1",
        "bookstore1",
        "1.2.3.4",
        abc,
        all,
    );
}

#[test]
fn docker_auth_s_permission_cases() {
    docker_auth_cases(&Casbin::from_text(MODEL, POLICY).unwrap());
    docker_auth_cases(&Casbin::from_text(MODEL, POLICY_UNQUOTED).unwrap());
}

#[test]
fn docker_auth_s_label_cases() {
    let m = |a: &[(&str, &[&str])], b: &[(&str, &[&str])]| label_match(&labels(a), &labels(b));
    assert!(m(&[("a", &["b"])], &[("a", &["b"])]));
    assert!(!m(&[("a", &["b"])], &[("a", &["c"])]));
    assert!(m(&[("a", &["b", "c"])], &[("a", &["b"])]));
    assert!(!m(&[("a", &["b"])], &[("a", &["b", "c"])]));
    assert!(m(
        &[("a", &["b", "c"]), ("d", &["e"])],
        &[("a", &["b", "c"])]
    ));
    assert!(!m(&[("a", &["b"])], &[("a", &["b", "c"]), ("d", &["f"])]));
    // Go's json.Marshal of the labels, and back.
    let l = labels(&[("a", &["b", "c"]), ("d", &["e"])]);
    assert_eq!(labels_json(&l), r#"{"a":["b","c"],"d":["e"]}"#);
    assert!(label_match(&l, &parse_labels(&labels_json(&l))));
    assert_eq!(labels_json(&Labels::new()), "null");
}

#[test]
fn policy_fields_and_bad_input() {
    assert_eq!(
        split_fields(r#"p, a , "x, y", "{""k"":[""v""]}", {"k":["v","w"]}"#),
        ["p", "a", "x, y", r#"{"k":["v"]}"#, r#"{"k":["v","w"]}"#]
    );
    // ipMatch never panics: a bad network or address is no match.
    assert!(ip_match("192.168.1.5", "192.168.1.0/24"));
    assert!(!ip_match("192.168.1.5", "192.168.1.0/99"));
    assert!(!ip_match("", "1.2.3.4"));
    let bad = Casbin::from_text(MODEL, "p, too, few\n").err().unwrap();
    assert!(bad.contains("line 1"), "{bad}");
    assert!(Casbin::from_text("not a model", POLICY).is_err());
}
