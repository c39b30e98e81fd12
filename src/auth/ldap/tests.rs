use std::path::Path;

use super::*;
use crate::config::Config;
use ldap3::SearchEntry;
use text::convert;

fn config(ldap: &str) -> Result<Config, crate::config::ConfigError> {
    let src = format!("upstream: {{url: \"http://r:5000\"}}\nldap_auth:\n{ldap}");
    Config::parse(Path::new("/etc/regate/c.yml"), &src)
}

fn ldap(section: &str) -> LdapConfig {
    config(section)
        .unwrap_or_else(|e| panic!("{e}"))
        .ldap
        .expect("an ldap_auth section")
}

fn error(section: &str) -> String {
    config(section).unwrap_err().to_string()
}

const MINIMAL: &str =
    "  addr: 127.0.0.1:389\n  base: dc=example,dc=org\n  filter: (uid=${account})\n";

#[test]
fn the_filter_escapes_every_special_character_of_rfc_4515() {
    assert_eq!(escape_filter_value("dora"), "dora");
    assert_eq!(escape_filter_value("*"), "\\2a");
    assert_eq!(escape_filter_value("a(b)c"), "a\\28b\\29c");
    assert_eq!(escape_filter_value("d\\6fra"), "d\\5c6fra");
    assert_eq!(escape_filter_value("x\0y"), "x\\00y");
    // Not special in a value: left as they are (UTF-8 is allowed, RFC 4515 section 3).
    assert_eq!(escape_filter_value("jürgen=&|!~"), "jürgen=&|!~");
    for attack in [
        "*)(uid=*))(|(uid=*",
        "admin*",
        "*",
        "dora)(|(objectClass=*)",
        "\\2a",
    ] {
        let filter = expand(
            "(&(objectClass=person)(uid=${account}))",
            &[("${account}", &escape_filter_value(attack))],
        );
        // Still one equality match: no wildcard and no clause came in with the name.
        assert_eq!(filter.matches('(').count(), 3, "{filter}");
        assert_eq!(filter.matches(')').count(), 3, "{filter}");
        assert!(!filter.contains('*'), "{filter}");
        assert!(ldap3::parse_filter(&filter).is_ok(), "{filter}");
    }
}

#[test]
fn placeholders_are_replaced_in_one_pass() {
    let vars = [("${dn}", "cn=${account}"), ("${account}", "dora")];
    assert_eq!(
        expand("(|(member=${dn})(memberUid=${account}))", &vars),
        "(|(member=cn=${account})(memberUid=dora))"
    );
    assert_eq!(expand("no placeholder: é", &vars), "no placeholder: é");
    assert_eq!(expand("${acc", &vars), "${acc");
}

#[test]
fn parse_cn_takes_the_first_common_name() {
    assert_eq!(cn_of("cn=Devs,ou=groups,dc=example,dc=org"), "Devs");
    assert_eq!(cn_of("CN=Domain Admins,CN=Users,DC=corp"), "Domain Admins");
    assert_eq!(cn_of("uid=x,cn=team,dc=a"), "team");
    assert_eq!(cn_of("cn=Smith\\, John,ou=people"), "Smith, John");
    assert_eq!(cn_of("cn=caf\\C3\\A9,ou=x"), "café");
    assert_eq!(cn_of("ou=no-cn,dc=a"), "ou=no-cn,dc=a");
    assert_eq!(cn_of("devs"), "devs");
    assert_eq!(convert("cn=Devs,ou=groups", true, true), "devs");
    assert_eq!(
        convert("cn=Devs,ou=groups", false, false),
        "cn=Devs,ou=groups"
    );
}

#[test]
fn docker_auth_sections_load_with_its_defaults() {
    let c = ldap("  addr: ldap.example.com:636\n  base: o=example.com\n  filter: (&(uid=${account})(objectClass=person))\n  bind_dn: cn=svc,o=example.com\n  bind_password_file: secrets/ldap\n  labels:\n    group:\n      attribute: memberOf\n      parse_cn: true\n      lower_case: true\n");
    // docker_auth: port 636 without `tls` is LDAPS.
    assert_eq!(c.tls, TlsMode::Always);
    assert_eq!(c.url, "ldaps://ldap.example.com:636");
    assert_eq!(
        c.bind_password_file.as_deref(),
        Some(Path::new("/etc/regate/secrets/ldap"))
    );
    assert_eq!(
        c.labels,
        [LabelMap {
            label: "group".into(),
            attribute: "memberOf".into(),
            parse_cn: true,
            lower_case: true
        }]
    );
    assert_eq!(c.timeout, Duration::from_secs(5));
    assert_eq!(c.cache_ttl, Duration::from_secs(60));
    assert_eq!(c.pool_size, 8);

    let c = ldap(MINIMAL);
    assert_eq!(
        (c.tls, c.url.as_str()),
        (TlsMode::None, "ldap://127.0.0.1:389")
    );
    let c = ldap("  addr: ldaps://[::1]\n  base: dc=x\n  filter: (uid=${account})\n  group_search: {base: \"ou=groups,dc=x\"}\n  cache_ttl: 0\n  timeout: 0.5\n");
    assert_eq!(
        (c.tls, c.url.as_str()),
        (TlsMode::Always, "ldaps://[::1]:636")
    );
    let g = c.group_search.unwrap();
    assert_eq!(
        (g.filter.as_str(), g.attribute.as_str(), g.label.as_str()),
        ("(member=${dn})", "cn", "group")
    );
    assert!(c.cache_ttl.is_zero());
    assert_eq!(c.timeout, Duration::from_millis(500));
    let c = ldap("  addr: dir:389\n  tls: starttls\n  base: dc=x\n  filter: (uid=${account})\n");
    assert_eq!(
        (c.tls, c.url.as_str()),
        (TlsMode::StartTls, "ldap://dir:389")
    );
}

#[test]
fn mistakes_are_reported_at_load_time_with_the_key() {
    for (section, expected) in [
        ("  base: dc=x\n  filter: (uid=${account})\n", "`addr` is required"),
        ("  addr: h:389\n  filter: (uid=${account})\n", "`base` is required"),
        ("  addr: h:389\n  base: dc=x\n  filter: (uid=dora)\n", "ldap_auth.filter: the filter must hold ${account}"),
        ("  addr: h:389\n  base: dc=x\n  filter: (uid=${account}\n", "is not an LDAP search filter"),
        ("  addr: h:389\n  tls: ssl\n  base: dc=x\n  filter: (uid=${account})\n", "ldap_auth.tls: `ssl` is not none, starttls or always"),
        ("  addr: ldaps://h\n  tls: starttls\n  base: dc=x\n  filter: (uid=${account})\n", "use `tls: always`"),
        ("  addr: h:x\n  base: dc=x\n  filter: (uid=${account})\n", "ldap_auth.addr: `h:x` is not HOST:PORT"),
        ("  addr: h:389\n  base: dc=x\n  filter: (uid=${account})\n  bind_dn: cn=svc\n", "`bind_dn` needs `bind_password_file`"),
        ("  addr: h:389\n  base: dc=x\n  filter: (uid=${account})\n  initial_bind_as_user: true\n  bind_dn: cn=svc\n", "must hold ${account}"),
        ("  addr: h:389\n  base: dc=x\n  filter: (uid=${account})\n  labels: {group: {parse_cn: true}}\n", "ldap_auth.labels.group: a label needs `attribute`"),
        ("  addr: h:389\n  base: dc=x\n  filter: (uid=${account})\n  group_search: {base: dc=x, filter: (cn=devs)}\n", "ldap_auth.group_search.filter: the filter must hold ${dn}"),
        ("  addr: h:389\n  base: dc=x\n  filter: (uid=${account})\n  timeout: 0\n", "ldap_auth.timeout: 0 is not a number of seconds"),
        ("  addr: h:389\n  base: dc=x\n  filter: (uid=${account})\n  pool_size: 0\n", "ldap_auth.pool_size: 0 is not a number of connections"),
    ] {
        let e = error(section);
        assert!(e.contains(expected), "{section:?}:\n{e}");
    }
    // A typo gets the usual hint, nested sections included.
    let e = error(&format!("{MINIMAL}  bind_pasword_file: x\n"));
    assert!(e.contains("did you mean `bind_password_file`?"), "{e}");
    let e = error(&format!(
        "{MINIMAL}  labels: {{group: {{atribute: memberOf}}}}\n"
    ));
    assert!(e.contains("did you mean `attribute`?"), "{e}");
    let e = error(&format!(
        "{MINIMAL}  group_search: {{base: dc=x, lable: team}}\n"
    ));
    assert!(e.contains("did you mean `label`?"), "{e}");
}

#[test]
fn clear_text_and_unchecked_certificates_are_warned_about() {
    let plain =
        config("  addr: ldap.example.com:389\n  base: dc=x\n  filter: (uid=${account})\n").unwrap();
    assert!(
        plain.warnings.iter().any(|w| w.contains("clear text")),
        "{:?}",
        plain.warnings
    );
    let local = config(MINIMAL).unwrap();
    assert!(
        local.warnings.iter().all(|w| !w.contains("ldap_auth")),
        "{:?}",
        local.warnings
    );
    let insecure = config("  addr: ldap.example.com:636\n  insecure_tls_skip_verify: true\n  base: dc=x\n  filter: (uid=${account})\n").unwrap();
    assert!(insecure.warnings.iter().any(|w| w.contains("not checked")));
}

fn directory(section: &str) -> Directory {
    Directory::new(ldap(section), Arc::default()).unwrap()
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn an_empty_password_never_reaches_the_directory() {
    // Were it asked, the closed port would make this "unavailable", not a wrong password.
    let d = directory(&format!(
        "  addr: 127.0.0.1:{}\n  base: dc=x\n  filter: (uid=${{account}})\n",
        closed_port()
    ));
    assert_eq!(
        d.authenticate("dora", &Secret::new("")).await.unwrap_err(),
        AuthnError::BadCredentials
    );
    assert_eq!(
        d.lookup("dora", Some(&Secret::new(""))).await.unwrap(),
        Lookup::WrongPassword
    );
}

#[tokio::test]
async fn a_directory_that_is_down_is_unavailable_not_a_wrong_password() {
    let d = directory(&format!(
        "  addr: 127.0.0.1:{}\n  base: dc=x\n  filter: (uid=${{account}})\n",
        closed_port()
    ));
    let started = Instant::now();
    assert_eq!(
        d.authenticate("dora", &Secret::new("pw"))
            .await
            .unwrap_err(),
        AuthnError::DirectoryUnavailable
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_directory_that_never_answers_is_unavailable_within_the_timeout() {
    // Accepts connections and says nothing: the TCP connect succeeds, the bind hangs.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let d = directory(&format!(
        "  addr: 127.0.0.1:{port}\n  base: dc=x\n  filter: (uid=${{account}})\n  timeout: 0.3\n  pool_size: 1\n"
    ));
    let started = Instant::now();
    // Two at once through a pool of one: the second waits for a connection, and still
    // gets its answer by the deadline.
    let pw = Secret::new("pw");
    let (a, b) = tokio::join!(d.authenticate("dora", &pw), d.authenticate("eve", &pw));
    assert_eq!(a.unwrap_err(), AuthnError::DirectoryUnavailable);
    assert_eq!(b.unwrap_err(), AuthnError::DirectoryUnavailable);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    held.abort();
}

#[test]
fn the_cache_key_depends_on_account_and_password() {
    let d = directory(MINIMAL);
    let k = d.cache_key("dora", &Secret::new("pw"));
    assert_eq!(k, d.cache_key("dora", &Secret::new("pw")));
    assert_ne!(k, d.cache_key("dora", &Secret::new("pw2")));
    assert_ne!(k, d.cache_key("dor", &Secret::new("apw")));
    // Another process run (or reload) keys differently: nothing guessable is kept.
    assert_ne!(k, directory(MINIMAL).cache_key("dora", &Secret::new("pw")));
}

#[test]
fn labels_come_from_the_mapped_attributes() {
    let d = directory(&format!(
        "{MINIMAL}  labels:\n    group: {{attribute: memberOf, parse_cn: true, lower_case: true}}\n    mail: {{attribute: mail}}\n    missing: {{attribute: title}}\n"
    ));
    let entry = SearchEntry {
        dn: "uid=dora,dc=x".into(),
        attrs: [
            (
                "memberof".to_owned(),
                vec![
                    "cn=Devs,ou=groups,dc=x".to_owned(),
                    "cn=devs,ou=other,dc=x".to_owned(),
                    "cn=Ops,ou=groups,dc=x".to_owned(),
                ],
            ),
            ("mail".to_owned(), vec!["dora@example.org".to_owned()]),
        ]
        .into(),
        bin_attrs: Default::default(),
    };
    let labels = d.labels_of(&entry);
    assert_eq!(labels["group"], ["devs", "ops"]);
    assert_eq!(labels["mail"], ["dora@example.org"]);
    assert!(!labels.contains_key("missing"));
    assert_eq!(d.user_attributes(), ["memberOf", "mail", "title"]);
    assert_eq!(directory(MINIMAL).user_attributes(), ["1.1"]);
}

#[test]
fn explain_says_when_the_directory_cannot_be_asked() {
    use crate::ops::explain::{explain, Account, Input, Password};
    let c = config(&format!(
        "  addr: 127.0.0.1:{}\n  base: dc=x\n  filter: (uid=${{account}})\n",
        closed_port()
    ))
    .unwrap();
    let password = Secret::new("pw");
    let input = Input {
        account: "dora",
        password: Some(&password),
        ip: None,
        labels: None,
        scopes: &[],
    };
    let r = explain(&c, &input);
    assert_eq!(r.status, Account::DirectoryUnavailable);
    assert_eq!(r.password, Some(Password::NotChecked));
    assert!(r.directory_asked);
    let text = r.to_text();
    assert!(
        text.contains("the LDAP directory could not be asked (connect: "),
        "{text}"
    );
    assert!(text.contains("a token request gets 503"), "{text}");
    // The anonymous entry and users are never the directory's to judge.
    let r = explain(
        &c,
        &Input {
            account: "",
            ..input
        },
    );
    assert!(!r.directory_asked);
}
