//! The index decides as the plain scan does: on random configs and requests (property
//! test), and on the shapes it files rules under.

use std::collections::BTreeMap;
use std::net::IpAddr;

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::acl::{Acl, Labels, RawEntry, RawMatch, Request};

/// Patterns for each field, drawn so that rules often match the requests below: literals
/// (which the index files by account or name prefix), globs, `/regexes/`, placeholders,
/// escapes, a character class, a multi-byte name, the empty pattern.
const ACCOUNTS: &[&str] = &[
    "alice",
    "bob",
    "",
    "al*",
    "a?ice",
    "[ab]*",
    "b\\ob",
    "/^b/",
    "/.+/",
    "${labels:team}",
    "${name}",
    "*",
];
const NAMES: &[&str] = &[
    "alice/app",
    "alice/*",
    "alice",
    "al*",
    "alice/a*",
    "bob/x",
    "lib/*",
    "lib",
    "lib*",
    "library/app",
    "/^lib/",
    "/app$/",
    "*",
    "*/*",
    "a/b/c",
    "a/*/c",
    "é/x",
    "é*",
    "${account}/*",
    "${labels:team}/*",
    "team-${labels:team}/x",
    "[a-c]*/app",
    "alice\\/app",
    "",
];
const TYPES: &[&str] = &["repository", "registry", "*", "/^re/", "${labels:kind}"];
const SERVICES: &[&str] = &["registry", "other", "*", "${account}"];
const IPS: &[&str] = &["127.0.0.1", "10.0.0.0/8", "::1", "0.0.0.0/0"];
const LABEL_PATTERNS: &[&str] = &["dev", "d*", "/^o/", "${account}", "${name}"];
const ACTIONS: &[&str] = &["pull", "push", "delete", "*"];

/// What requests ask about.
const ASK_ACCOUNTS: &[&str] = &["alice", "bob", "", "al", "aXice", "b\\ob", "dev", "eve"];
const ASK_NAMES: &[&str] = &[
    "alice/app",
    "alice",
    "alice/a/b",
    "alice/api",
    "bob/x",
    "lib",
    "lib/app",
    "library/app",
    "dev/app",
    "team-dev/x",
    "a/b/c",
    "a/x/c",
    "é/x",
    "éa",
    "c/app",
    "",
];
const ASK_TYPES: &[&str] = &["repository", "registry"];
const ASK_SERVICES: &[&str] = &["registry", "other"];
const ASK_IPS: &[Option<&str>] = &[None, Some("127.0.0.1"), Some("10.1.2.3"), Some("::1")];
const ASK_LABELS: &[&str] = &["dev", "ops", "alice", "repository"];

fn pattern(pool: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    option::of(select(pool).prop_map(str::to_owned))
}

fn entry() -> impl Strategy<Value = RawEntry> {
    let labels = option::of(btree_map(
        select(&["team", "kind"][..]).prop_map(str::to_owned),
        select(LABEL_PATTERNS).prop_map(str::to_owned),
        1..=2,
    ));
    // Half the rules name an account, as a generated config does, so buckets fill up.
    let account = prop_oneof![
        select(&["alice", "bob", "", "dev"][..]).prop_map(|a| Some(a.to_owned())),
        pattern(ACCOUNTS),
    ];
    (
        account,
        pattern(TYPES),
        pattern(NAMES),
        pattern(SERVICES),
        pattern(IPS),
        labels,
        vec(select(ACTIONS).prop_map(str::to_owned), 0..=3),
    )
        .prop_map(
            |(account, type_, name, service, ip, labels, actions)| RawEntry {
                match_: RawMatch {
                    account,
                    type_,
                    name,
                    service,
                    ip,
                    labels,
                },
                actions,
                comment: None,
            },
        )
}

/// A request, owned.
#[derive(Debug, Clone)]
struct Ask {
    account: String,
    labels: Labels,
    ip: Option<IpAddr>,
    service: String,
    resource_type: String,
    name: String,
    actions: Vec<String>,
}

impl Ask {
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
}

fn ask() -> impl Strategy<Value = Ask> {
    let labels = btree_map(
        select(&["team", "kind"][..]).prop_map(str::to_owned),
        vec(select(ASK_LABELS).prop_map(str::to_owned), 0..=2),
        0..=2,
    );
    (
        select(ASK_ACCOUNTS),
        labels,
        select(ASK_IPS),
        select(ASK_SERVICES),
        select(ASK_TYPES),
        select(ASK_NAMES),
        vec(select(ACTIONS).prop_map(str::to_owned), 1..=3),
    )
        .prop_map(|(account, labels, ip, service, kind, name, actions)| Ask {
            account: account.to_owned(),
            labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
            ip: ip.map(|ip| ip.parse().expect("test IP parses")),
            service: service.to_owned(),
            resource_type: kind.to_owned(),
            name: name.to_owned(),
            actions,
        })
}

/// The indexed decision is the scan's, rule and actions, and `explain` names the same
/// deciding rule with every rule before it described as not matching.
fn same_decisions(entries: &[RawEntry], asks: &[Ask]) -> Result<(), TestCaseError> {
    let acl = Acl::compile(entries).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    for ask in asks {
        let req = ask.request();
        let indexed = acl.authorize(&req);
        let scanned = acl.authorize_by_scan(&req);
        prop_assert_eq!(&indexed, &scanned, "request {:?}", ask);
        let explained = acl.explain(&req);
        prop_assert_eq!(&explained.decision, &scanned);
        prop_assert_eq!(
            explained.skipped.len(),
            scanned.rule.unwrap_or(entries.len())
        );
        prop_assert_eq!(explained.unexplained, 0);
        for (_, why) in &explained.skipped {
            prop_assert!(!why.contains("not tried"), "{}", why);
        }
    }
    Ok(())
}

#[test]
fn the_index_decides_as_the_scan_does() {
    // 2,000 random configs of up to 40 rules, 8 requests each: about 2 s in a debug build.
    let config = Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = (vec(entry(), 0..40), vec(ask(), 1..8));
    let result = runner.run(&strategy, |(entries, asks)| same_decisions(&entries, &asks));
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn rule(account: Option<&str>, name: Option<&str>, actions: &[&str]) -> RawEntry {
    RawEntry {
        match_: RawMatch {
            account: account.map(str::to_owned),
            name: name.map(str::to_owned),
            ..RawMatch::default()
        },
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        comment: None,
    }
}

fn pull(account: &str, name: &str) -> Ask {
    Ask {
        account: account.to_owned(),
        labels: Labels::new(),
        ip: None,
        service: "registry".to_owned(),
        resource_type: "repository".to_owned(),
        name: name.to_owned(),
        actions: vec!["pull".to_owned()],
    }
}

#[test]
fn buckets_merge_in_rule_order() {
    let entries = [
        rule(None, Some("lib/*"), &["pull"]),
        rule(Some("alice"), Some("lib/x"), &[]),
        rule(Some("/.+/"), None, &["push"]),
        rule(Some("alice"), None, &["*"]),
        rule(None, Some("lib"), &["delete"]),
    ];
    let acl = Acl::compile(&entries).unwrap();
    // Each rule in one bucket: by account, by name prefix, or the rest.
    assert_eq!(acl.index.by_account["alice"], [1, 3]);
    assert_eq!(acl.index.by_name_prefix["lib/"], [0]);
    assert_eq!(acl.index.by_name_prefix["lib"], [4]);
    assert_eq!(acl.index.other, [2]);
    assert_eq!(acl.index.prefix_lengths, [3, 4]);
    let order = |a: &Ask| acl.index.candidates(&a.request()).collect::<Vec<_>>();
    assert_eq!(order(&pull("alice", "lib/x")), [0, 1, 2, 3, 4]);
    assert_eq!(order(&pull("bob", "lib/x")), [0, 2, 4]);
    assert_eq!(order(&pull("bob", "library")), [2, 4]);
    assert_eq!(order(&pull("alice", "app")), [1, 2, 3]);
    assert_eq!(order(&pull("", "li")), [2]);
    // Rule 0 comes before alice's own rules, and decides.
    assert_eq!(
        acl.authorize(&pull("alice", "lib/x").request()).rule,
        Some(0)
    );
    // Rule 2 (any named account) decides before alice's rule 3.
    assert_eq!(acl.authorize(&pull("alice", "app").request()).rule, Some(2));
    assert_eq!(acl.authorize(&pull("", "app").request()).rule, None);
}

#[test]
fn a_name_is_cut_at_character_boundaries_only() {
    let entries = [
        rule(None, Some("é/*"), &["pull"]),
        rule(None, Some("e"), &[]),
    ];
    let acl = Acl::compile(&entries).unwrap();
    // "é" is two bytes; a one-byte prefix of it is no key and must not panic.
    assert_eq!(acl.authorize(&pull("x", "é/app").request()).rule, Some(0));
    assert_eq!(acl.authorize(&pull("x", "éa").request()).rule, None);
    assert_eq!(acl.authorize(&pull("x", "e").request()).rule, Some(1));
}

#[test]
fn a_log_line_describes_the_first_rules_only() {
    let mut entries: Vec<RawEntry> = (0..50)
        .map(|i| rule(Some(&format!("user{i}")), None, &["*"]))
        .collect();
    entries.push(rule(Some("eve"), None, &[]));
    let acl = Acl::compile(&entries).unwrap();
    let e = acl.explain_first(&pull("eve", "x").request(), crate::acl::LOG_SKIPPED);
    assert_eq!(e.decision.rule, Some(50));
    assert_eq!(e.skipped.len(), crate::acl::LOG_SKIPPED);
    assert_eq!(e.unexplained, 50 - crate::acl::LOG_SKIPPED);
    let line = e.reason(&acl, "acl");
    assert!(line.starts_with("acl[50] decided"), "{line}");
    assert!(
        line.contains("acl[9] account \"eve\" does not match \"user9\""),
        "{line}"
    );
    assert!(line.ends_with("; and 40 more"), "{line}");
    assert_eq!(acl.explain(&pull("eve", "x").request()).skipped.len(), 50);
}
