use std::net::IpAddr;

use super::ip::IpNet;
use super::pattern::quote_meta;
use super::*;

mod placeholders;

fn acl(yaml: &str) -> Acl {
    let entries: Vec<RawEntry> = crate::config::yaml::from_str(yaml).expect("test YAML parses");
    Acl::compile(&entries).expect("test ACL compiles")
}

fn compile_error(yaml: &str) -> AclError {
    let entries: Vec<RawEntry> = crate::config::yaml::from_str(yaml).expect("test YAML parses");
    let mut errors = Acl::compile(&entries).expect_err("ACL should be rejected");
    errors.remove(0)
}

/// An owned request with the defaults of a `docker pull` of a repository.
struct Ask {
    account: String,
    labels: Labels,
    ip: Option<IpAddr>,
    service: String,
    resource_type: String,
    name: String,
    actions: Vec<String>,
}

fn ask(account: &str, name: &str, actions: &str) -> Ask {
    Ask {
        account: account.to_owned(),
        labels: Labels::new(),
        ip: None,
        service: "Docker registry".to_owned(),
        resource_type: "repository".to_owned(),
        name: name.to_owned(),
        actions: actions.split(',').map(str::to_owned).collect(),
    }
}

impl Ask {
    fn label(mut self, key: &str, values: &[&str]) -> Ask {
        let values = values.iter().map(|v| (*v).to_owned()).collect();
        self.labels.insert(key.to_owned(), values);
        self
    }

    fn ip(mut self, ip: &str) -> Ask {
        self.ip = Some(ip.parse().expect("test IP parses"));
        self
    }

    fn kind(mut self, resource_type: &str) -> Ask {
        self.resource_type = resource_type.to_owned();
        self
    }

    fn service(mut self, service: &str) -> Ask {
        self.service = service.to_owned();
        self
    }

    fn request(&self) -> Request<'_> {
        Request {
            account: &self.account,
            labels: &self.labels,
            ip: self.ip,
            service: &self.service,
            resource_type: &self.resource_type,
            name: &self.name,
            actions: &self.actions,
        }
    }

    fn on(&self, acl: &Acl) -> Decision {
        acl.authorize(&self.request())
    }

    /// Granted actions joined by commas, for compact assertions.
    fn granted(&self, acl: &Acl) -> String {
        self.on(acl).actions.join(",")
    }
}

fn decision(actions: &[&str], rule: Option<usize>) -> Decision {
    Decision {
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        rule,
    }
}

const SEED: &str = r#"
- match: {account: "admin"}
  actions: ["*"]
- match: {account: "hussien", name: "ubuntu"}
  actions: ["*"]
- match: {account: "test"}
  actions: []
- match: {account: "/.+/"}
  actions: ["pull"]
- match: {account: "", name: "hello-world"}
  actions: ["pull"]
"#;

#[test]
fn seed_config() {
    let acl = acl(SEED);
    assert_eq!(acl.len(), 5);
    assert_eq!(
        ask("admin", "shuyun/hello", "push,pull").on(&acl),
        decision(&["pull", "push"], Some(0))
    );
    let catalog = ask("admin", "catalog", "*").kind("registry");
    assert_eq!(catalog.on(&acl), decision(&["*"], Some(0)));
    // The typo'd rule never applies to the real user, who falls through to pull-only.
    assert_eq!(
        ask("hussein", "ubuntu", "pull,push").on(&acl),
        decision(&["pull"], Some(3))
    );
    assert_eq!(
        ask("hussien", "ubuntu", "pull,push").granted(&acl),
        "pull,push"
    );
    assert_eq!(
        ask("test", "ubuntu", "pull").on(&acl),
        decision(&[], Some(2))
    );
    assert_eq!(ask("bob", "anything/x", "pull,push").granted(&acl), "pull");
    assert_eq!(
        ask("", "hello-world", "pull").on(&acl),
        decision(&["pull"], Some(4))
    );
    assert_eq!(
        ask("", "hello-world", "push").on(&acl),
        decision(&[], Some(4))
    );
    assert_eq!(ask("", "ubuntu", "pull").on(&acl), decision(&[], None));
    let literal: Vec<_> = acl.literal_accounts().collect();
    assert_eq!(
        literal,
        [(0, "admin"), (1, "hussien"), (2, "test"), (4, "")]
    );
}

#[test]
fn explain_names_the_failing_condition_of_each_skipped_rule() {
    let acl = acl(SEED);
    let explanation = acl.explain(&ask("hussein", "ubuntu", "push").request());
    assert_eq!(explanation.decision, decision(&[], Some(3)));
    assert_eq!(
        explanation.skipped,
        [
            (0, r#"account "hussein" does not match "admin""#.to_owned()),
            (
                1,
                r#"account "hussein" does not match "hussien""#.to_owned()
            ),
            (2, r#"account "hussein" does not match "test""#.to_owned()),
        ]
    );
    let acl = self::acl(
        r#"
- match: {ip: "10.0.0.0/8"}
  actions: ["*"]
- match: {ip: "10.0.0.0/8"}
  actions: ["*"]
- match: {labels: {team: "dev"}}
  actions: ["*"]
- match: {labels: {team: "dev"}}
  actions: ["*"]
"#,
    );
    let no_ip = acl.explain(&ask("bob", "x", "pull").request());
    assert_eq!(no_ip.decision, decision(&[], None));
    assert_eq!(no_ip.skipped.len(), 4);
    assert!(no_ip.skipped[0].1.contains("no client address"));
    assert_eq!(no_ip.skipped[2].1, r#"label "team" is missing"#);
    let wrong = acl.explain(
        &ask("bob", "x", "pull")
            .ip("192.168.1.1")
            .label("team", &["ops"])
            .request(),
    );
    assert_eq!(
        wrong.skipped[1].1,
        r#"ip 192.168.1.1 is not in "10.0.0.0/8""#
    );
    assert_eq!(
        wrong.skipped[3].1,
        r#"label "team" values ["ops"] do not match "dev""#
    );
}

#[test]
fn first_matching_rule_decides_even_with_empty_intersection() {
    let acl = acl(r#"
- match: {account: "alice"}
  actions: ["push"]
- match: {}
  actions: ["*"]
"#);
    assert_eq!(ask("alice", "x", "pull").on(&acl), decision(&[], Some(0)));
    assert_eq!(ask("alice", "x", "pull,push").granted(&acl), "push");
    assert_eq!(
        ask("bob", "x", "pull").on(&acl),
        decision(&["pull"], Some(1))
    );
}

#[test]
fn empty_match_covers_anonymous_and_missing_fields_default() {
    let acl = acl("- match: {}\n  actions: [pull]\n- actions: ['*']\n- {}\n");
    assert_eq!(ask("", "x", "pull").on(&acl), decision(&["pull"], Some(0)));
    let no_match_key = self::acl("- actions: ['*']\n");
    assert_eq!(ask("", "x", "pull").granted(&no_match_key), "pull");
    // Without `actions` the entry still decides: deny.
    let no_actions = self::acl("- match: {account: bob}\n- match: {}\n  actions: ['*']\n");
    assert_eq!(
        ask("bob", "x", "pull").on(&no_actions),
        decision(&[], Some(0))
    );
}

#[test]
fn no_rules_denies() {
    let acl = acl("[]");
    assert!(acl.is_empty());
    assert_eq!(ask("admin", "x", "pull").on(&acl), decision(&[], None));
}

#[test]
fn actions_are_sorted_and_deduplicated() {
    let acl = acl("- match: {account: a}\n  actions: [push, pull, pull]\n- actions: ['*']\n");
    assert_eq!(
        ask("a", "x", "push,pull,push,delete").granted(&acl),
        "pull,push"
    );
    assert_eq!(ask("b", "x", "push,pull,push").granted(&acl), "pull,push");
}

#[test]
fn catalog_needs_a_star() {
    let acl = acl(r#"
- match: {account: "pull-only", type: "registry", name: "catalog"}
  actions: ["pull"]
- match: {account: "listed", type: "registry", name: "catalog"}
  actions: ["pull", "*"]
- match: {account: "/.+/", type: "registry", name: "catalog"}
  actions: ["*"]
"#);
    let catalog = |account: &str| ask(account, "catalog", "*").kind("registry");
    assert_eq!(catalog("pull-only").on(&acl), decision(&[], Some(0)));
    assert_eq!(catalog("listed").on(&acl), decision(&["*"], Some(1)));
    assert_eq!(catalog("alice").on(&acl), decision(&["*"], Some(2)));
    // A literal "*" in a longer list is only the string "*".
    assert_eq!(
        ask("listed", "catalog", "pull,push")
            .kind("registry")
            .granted(&acl),
        "pull"
    );
}

#[test]
fn own_namespace_does_not_cross_slash() {
    let acl = acl("- match: {name: '${account}/*'}\n  actions: ['*']\n");
    assert_eq!(ask("alice", "alice/app", "pull").granted(&acl), "pull");
    assert_eq!(ask("alice", "alice/a/b", "pull").granted(&acl), "");
    assert_eq!(ask("alice", "bob/app", "pull").granted(&acl), "");
    assert_eq!(ask("a.b", "a.b/app", "pull").granted(&acl), "pull");
    // The account is quoted: its metacharacters are literal.
    assert_eq!(ask("a*", "abc/app", "pull").granted(&acl), "");
    assert_eq!(ask("a*", "a*/app", "pull").granted(&acl), "pull");
    assert_eq!(ask("[x", "[x/app", "pull").granted(&acl), "pull");
}

#[test]
fn regex_is_unanchored_and_quoted_placeholders_stay_literal() {
    let acl = acl(r#"
- match: {name: "/fooy/"}
  actions: [pull]
- match: {name: "/^${account}_.*$/"}
  actions: [push]
- match: {name: "//"}
  actions: [delete]
"#);
    assert_eq!(ask("x", "xfooy/z", "pull").granted(&acl), "pull");
    assert_eq!(ask("foo", "foo_x", "push").granted(&acl), "push");
    assert_eq!(ask(".*", "foo_x", "push").on(&acl), decision(&[], None));
    // `//` is too short to be a regex: a glob matching itself.
    assert_eq!(ask("x", "//", "delete").granted(&acl), "delete");
    assert_eq!(ask("x", "a", "delete").on(&acl), decision(&[], None));
}

#[test]
fn glob_and_empty_patterns() {
    let acl = acl("- match: {account: '', name: '*'}\n  actions: [pull]\n");
    assert_eq!(ask("", "", "pull").granted(&acl), "pull");
    assert_eq!(ask("", "x", "pull").granted(&acl), "pull");
    assert_eq!(ask("", "x/y", "pull").granted(&acl), "");
    assert_eq!(ask("bob", "x", "pull").granted(&acl), "");
}

#[test]
fn type_and_service_fields() {
    let acl = acl(
        "- match: {type: repository, service: '/^internal/', name: '${service}*'}\n  actions: [pull]\n",
    );
    let good = ask("a", "internal-1x", "pull").service("internal-1");
    assert_eq!(good.granted(&acl), "pull");
    assert_eq!(good.kind("registry").granted(&acl), "");
    assert_eq!(ask("a", "x", "pull").service("public").granted(&acl), "");
}

#[test]
fn ip_conditions() {
    let acl = acl(r#"
- match: {ip: "127.0.0.1"}
  actions: [a]
- match: {ip: "10.0.0.0/8"}
  actions: [b]
- match: {ip: "2001:db8::1"}
  actions: [c]
- match: {ip: "2001:db8::/48"}
  actions: [d]
- match: {ip: "::ffff:192.168.0.0/112"}
  actions: [e]
- match: {ip: "0.0.0.0/0"}
  actions: [f]
"#);
    let from = |ip: &str| ask("x", "y", "a,b,c,d,e,f").ip(ip).on(&acl);
    assert_eq!(from("127.0.0.1"), decision(&["a"], Some(0)));
    assert_eq!(from("::ffff:127.0.0.1"), decision(&["a"], Some(0)));
    assert_eq!(from("10.200.3.4"), decision(&["b"], Some(1)));
    assert_eq!(from("2001:db8::1"), decision(&["c"], Some(2)));
    assert_eq!(from("2001:db8:0:ffff::2"), decision(&["d"], Some(3)));
    assert_eq!(from("192.168.7.7"), decision(&["e"], Some(4)));
    assert_eq!(from("11.0.0.1"), decision(&["f"], Some(5)));
    // An IPv4 network never covers native IPv6 clients.
    assert_eq!(from("2001:db9::1"), decision(&[], None));
    assert_eq!(ask("x", "y", "a").on(&acl), decision(&[], None));
}

#[test]
fn compile_errors_name_index_and_field() {
    let cases = [
        ("- match: {name: '/foo(/'}", 0, "match.name"),
        ("- {}\n- match: {account: '[a'}", 1, "match.account"),
        ("- {}\n- {}\n- match: {type: 'a\\'}", 2, "match.type"),
        ("- match: {service: '/(${service}/'}", 0, "match.service"),
        ("- match: {labels: {team: '/+/'}}", 0, "match.labels.team"),
        ("- match: {ip: '192.168.0.1/100'}", 0, "match.ip"),
        ("- match: {ip: '192.168.0.*'}", 0, "match.ip"),
        ("- match: {ip: 'foo'}", 0, "match.ip"),
        ("- match: {ip: '2001:db8::/222'}", 0, "match.ip"),
        ("- match: {ip: '10.0.0.0/+8'}", 0, "match.ip"),
        ("- match: {ip: '10.0.0.0/'}", 0, "match.ip"),
        (
            "- match: {account: '/^(.+)$/', name: '${account:2}'}",
            0,
            "match.name",
        ),
        (
            "- match: {account: '/^(.+)$/', name: '${account:0}'}",
            0,
            "match.name",
        ),
        (
            "- match: {account: '(.+)', type: '${account:1}'}",
            0,
            "match.type",
        ),
        ("- match: {service: '${name:1}'}", 0, "match.service"),
    ];
    for (yaml, index, field) in cases {
        let error = compile_error(yaml);
        assert_eq!(
            (error.index, error.field.as_str()),
            (index, field),
            "{yaml}"
        );
        assert!(error
            .to_string()
            .starts_with(&format!("acl[{index}].{field}: ")));
    }
    // Placeholders that are not valid regex syntax themselves are accepted.
    acl("- match: {name: '/^${account}/.+$/', account: '/^${labels:x}$/'}");
    acl("- match: {ip: '2001:db8::/48'}\n- match: {ip: '192.168.0.1'}");
}

#[test]
fn unknown_keys_are_rejected() {
    // docs/auth-methods.md shows `match: {team: ...}`, which docker_auth silently ignores,
    // turning the rule into match-all.
    let entries =
        crate::config::yaml::from_str::<Vec<RawEntry>>("- match: {team: dev}\n  actions: ['*']");
    assert!(entries.is_err());
    let entries = crate::config::yaml::from_str::<Vec<RawEntry>>("- match: {}\n  action: ['*']");
    assert!(entries.is_err());
    let acl = acl("- match: {}\n  actions: ['*']\n  comment: everyone");
    assert_eq!(acl.comment(0), Some("everyone"));
    assert_eq!(acl.comment(1), None);
}

#[test]
fn ip_net_parsing() {
    let net = |raw: &str| IpNet::parse(raw);
    assert_eq!(net("10.1.2.3/8").map(|n| n.prefix), Some(8));
    assert_eq!(
        net("::ffff:10.0.0.1").map(|n| (n.addr.is_ipv4(), n.prefix)),
        Some((true, 32))
    );
    assert!(net("10.1.2.3/8").is_some_and(|n| n.contains("10.9.9.9".parse().expect("ip"))));
    assert!(net("::/0").is_some_and(|n| !n.contains("1.2.3.4".parse().expect("ip"))));
    assert!(net("::/0").is_some_and(|n| n.contains("2001:db8::1".parse().expect("ip"))));
    assert_eq!(net("010.0.0.1"), None);
    assert_eq!(net("fe80::1%eth0"), None);
    assert_eq!(net("10.0.0.0/33"), None);
}

#[test]
fn acl_can_be_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Acl>();
}
