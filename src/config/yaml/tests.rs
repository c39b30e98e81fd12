use super::*;

fn at(src: &str, path: &[Seg]) -> Option<(usize, usize)> {
    Node::parse(src).unwrap().locate(path).0
}

fn k(s: &str) -> Seg {
    key(s)
}

#[test]
fn block_and_flow_maps_are_located_exactly() {
    let src = "acl:\n  - match: {account: admin, name: \"x\"}\n    actions: [\"*\"]\n  - match:\n      name: y\n";
    assert_eq!(at(src, &[k("acl")]), Some((1, 1)));
    // A list item is where its `-` is.
    assert_eq!(at(src, &[k("acl"), Seg::Index(0)]), Some((2, 3)));
    assert_eq!(
        at(src, &[k("acl"), Seg::Index(0), k("match"), k("name")]),
        Some((2, 29))
    );
    assert_eq!(
        at(src, &[k("acl"), Seg::Index(1), k("match"), k("name")]),
        Some((5, 7))
    );
    // A step that is missing gives the nearest enclosing one.
    assert_eq!(
        at(src, &[k("acl"), Seg::Index(1), k("match"), k("account")]),
        Some((4, 5))
    );
}

#[test]
fn a_flow_map_over_several_lines_and_quoted_keys() {
    let src = "users: {\n  \"admin\": {password: x},\n  'bob':\n    {password: y}\n}\n";
    assert_eq!(at(src, &[k("users"), k("admin")]), Some((2, 3)));
    assert_eq!(
        at(src, &[k("users"), k("bob"), k("password")]),
        Some((4, 6))
    );
}

#[test]
fn anchors_aliases_and_merge_keys() {
    let src = "base: &m {account: admin, name: x}\nacl:\n  - match: *m\n    actions: [pull]\n  - match:\n      <<: *m\n      name: y\n    actions: [push]\n";
    let doc = Node::parse(src).unwrap();
    // An alias is a copy that points where its value was written.
    assert_eq!(
        doc.locate(&[k("acl"), Seg::Index(0), k("match"), k("account")])
            .0,
        Some((1, 11))
    );
    let second = doc
        .get("acl")
        .and_then(|a| match &a.value {
            Value::Seq(items) => items.get(1),
            _ => None,
        })
        .and_then(|i| i.get("match"))
        .unwrap();
    let name: String = from_node(second.get("name").unwrap()).unwrap();
    let account: String = from_node(second.get("account").unwrap()).unwrap();
    // The mapping's own key wins over the merged one.
    assert_eq!((name.as_str(), account.as_str()), ("y", "admin"));
    assert_eq!(
        doc.locate(&[k("acl"), Seg::Index(1), k("match"), k("name")])
            .0,
        Some((7, 7))
    );
}

#[test]
fn a_key_written_twice_is_refused_at_its_second_line() {
    let mut errors = Node::parse_all("a: 1\na: 2\nb: 3\nb: 4\n")
        .unwrap()
        .duplicates;
    assert_eq!(errors.len(), 2);
    assert_eq!(errors.remove(1).position, (4, 1));
    let e = Node::parse("server:\n  addr: \":1\"\n  key: k\n  addr: \":2\"\n").unwrap_err();
    assert_eq!(e.position, (4, 3));
    assert_eq!(display(&e.path), "server.addr");
    assert!(e.message.contains("first on line 2"), "{}", e.message);
}

#[test]
fn an_alias_bomb_is_refused() {
    let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..8 {
        let prev = format!("*a{}", i - 1);
        src.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            [prev.as_str(); 10].join(", ")
        ));
    }
    let e = Node::parse(&src).unwrap_err();
    assert!(e.message.contains("aliases expand"), "{}", e.message);
    // Hidden at the end of a large honest file, it is refused all the same: the copies
    // allowed grow with the values written, the bomb's copies with their power.
    let mut big = users(100_000, false);
    big.push_str(&src);
    let e = Node::parse(&big).unwrap_err();
    assert!(e.message.contains("aliases expand"), "{}", e.message);
}

/// `users:` with `n` entries, each a password and labels (an alias of one set, or not).
fn users(n: usize, shared_labels: bool) -> String {
    let mut src = String::from("common: &common {team: [dev, ops], site: [eu]}\nusers:\n");
    for i in 0..n {
        let labels = match shared_labels {
            true => "*common".to_owned(),
            false => format!("{{team: [t{}]}}", i % 100),
        };
        src.push_str(&format!(
            "  user{i}: {{password: \"$2y$05$abcdefghijklmnopqrstuv{i:08}\", labels: {labels}}}\n"
        ));
    }
    src
}

#[test]
fn a_large_honest_file_loads() {
    // 100,000 users are 500,000 values written (the bound was once 200,000 values in all),
    // and sharing one label set by alias copies 500,000 more.
    for shared in [false, true] {
        let root = Node::parse(&users(100_000, shared)).expect("100,000 users parse");
        let Some(Value::Map(entries)) = root.get("users").map(|n| &n.value) else {
            panic!("users is a mapping");
        };
        assert_eq!(entries.len(), 100_000);
        assert_eq!(entries[99_999].0.name, "user99999");
    }
}

#[test]
fn scalars_take_the_type_the_reader_asks_for() {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct T {
        text: String,
        number: i64,
        seconds: f64,
        flag: bool,
        none: Option<String>,
        list: Vec<String>,
    }
    let t: T =
        from_str("text: 2024\nnumber: 600\nseconds: 2\nflag: true\nnone: ~\nlist: [a, 'b']\n")
            .unwrap();
    assert_eq!(t.text, "2024");
    assert_eq!(t.number, 600);
    assert_eq!(t.seconds, 2.0);
    assert!(t.flag);
    assert_eq!(t.none, None);
    assert_eq!(t.list, ["a", "b"]);

    let e = from_str::<T>("text: a\nnumber: soon\n").unwrap_err();
    assert_eq!(display(&e.path), "number");
    assert_eq!(e.origin.and_then(|o| o.position()), Some((2, 1)));
    assert!(e.message.contains("whole number"), "{}", e.message);
    assert!(!e.message.contains("i64"), "{}", e.message);

    let e = from_str::<T>("text: a\nnumbr: 1\n").unwrap_err();
    assert!(e.path.is_empty());
    assert_eq!(e.origin.and_then(|o| o.position()), Some((2, 1)));
    assert_eq!(e.unknown.map(|u| u.0), Some("numbr".to_owned()));

    // No Rust type name reaches a message.
    let e = from_str::<T>("just text\n").unwrap_err();
    assert!(!e.message.contains("struct"), "{}", e.message);
}

#[test]
fn environment_values_remember_their_variable() {
    let text = |t: &str| Value::Scalar {
        text: t.to_owned(),
        plain: true,
    };
    let mut doc = Node::parse("token:\n  issuer: file\n").unwrap();
    let origin = Origin::Env("REGATE_TOKEN_EXPIRATION".into());
    doc.set(&["token", "expiration"], text("600"), origin.clone());
    doc.set(
        &["token", "issuer"],
        text("env"),
        Origin::Env("REGATE_TOKEN_ISSUER".into()),
    );
    doc.set(
        &["ldap_auth", "addr"],
        text("h:389"),
        Origin::Env("REGATE_LDAP_AUTH_ADDR".into()),
    );
    // A key the file has keeps its line, and names the variable.
    assert_eq!(
        doc.locate(&[k("token"), k("issuer")]),
        (Some((2, 3)), Some("REGATE_TOKEN_ISSUER"))
    );
    assert_eq!(
        doc.locate(&[k("token"), k("expiration")]),
        (Some((1, 1)), Some("REGATE_TOKEN_EXPIRATION"))
    );
    assert_eq!(
        doc.locate(&[k("ldap_auth")]),
        (None, Some("REGATE_LDAP_AUTH_ADDR"))
    );
}

#[test]
fn list_items_are_located_after_text_that_is_not_ascii() {
    // The parser counts characters; an ASCII file is read by bytes, this one by characters.
    let src = "name: \"é€\"\nlist:\n  - a\n  -   b\n";
    assert_eq!(at(src, &[k("list"), Seg::Index(1)]), Some((4, 3)));
    assert_eq!(
        at(&src.replace("é€", "ee"), &[k("list"), Seg::Index(1)]),
        Some((4, 3))
    );
}
