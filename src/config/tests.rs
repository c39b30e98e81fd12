use std::time::Duration;

use super::*;
use crate::auth::keys::KidFormat;

fn parse(src: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/regate/config.yml"), src)
}

/// A bcrypt-shaped hash (no test logs in with it).
pub(crate) const HASH: &str = "$2y$05$GcKrd9lJ4a6c/MYWfU6a0OiwSoGcvf0pxjEKyVkrERsDfD3v1D7cG";

/// The seed's docker_auth config (../shared/seed/README.md), with `upstream`; shared with
/// the lint tests.
pub(crate) fn seed() -> String {
    format!(
        r#"server:
  addr: ":5001"
  certificate: "/ssl/server.pem"
  key: "/ssl/server.key"
token:
  issuer: "Auth Service"     # must equal the registry's auth.token.issuer
  expiration: 900
users:
  "admin":
    password: "{HASH}"
  "hussein":
    password: "{HASH}"
  "": {{}}
acl:
  - match: {{account: "admin"}}
    actions: ["*"]
  - match: {{account: "hussien", name: "ubuntu"}}
    actions: ["*"]
  - match: {{account: "test"}}
    actions: []
  - match: {{account: "/.+/"}}
    actions: ["pull"]
  - match: {{account: "", name: "hello-world"}}
    actions: ["pull"]
upstream:
  url: http://127.0.0.1:5000
"#
    )
}

#[test]
fn the_seed_config_loads() {
    let c = parse(&seed()).unwrap();
    assert_eq!(c.server.listen.port(), 5001);
    assert_eq!(c.token.issuer, "Auth Service");
    assert_eq!(c.token.expiration, Duration::from_secs(900));
    assert_eq!(c.token.service, "Docker registry");
    assert_eq!(c.users.len(), 3);
    assert_eq!(c.acl.len(), 5);
    // No token key of its own: docker_auth signs with the server's pair.
    assert_eq!(c.token.key, c.server.tls.and_then(|t| t.files().cloned()));
    assert_eq!(c.data_dir, Path::new("/etc/regate/data"));
}

#[test]
fn lost_indentation_points_at_the_line() {
    let flat: String = seed()
        .lines()
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let e = parse(&flat).unwrap_err();
    assert_eq!(e.position, Some((2, 1)), "{e}");
    let text = e.to_string();
    assert!(text.contains("/etc/regate/config.yml:2:1"), "{text}");
    assert!(text.contains("unknown field `addr`"), "{text}");
    assert!(text.contains("`addr` is a key of `server`"), "{text}");
    assert!(text.contains("indentation"), "{text}");
}

#[test]
fn unknown_keys_get_the_closest_known_one() {
    let e = parse("server:\n  adr: \":5000\"\n").unwrap_err();
    assert_eq!(e.position, Some((2, 3)));
    assert_eq!(e.key.as_deref(), Some("server"));
    assert!(e.to_string().contains("did you mean `addr`?"), "{e}");
    let e = parse("acl:\n  - match: {acount: admin}\n    actions: []\n").unwrap_err();
    assert!(e.to_string().contains("did you mean `account`?"), "{e}");
    assert_eq!(e.position.map(|p| p.0), Some(2));
}

#[test]
fn unimplemented_docker_auth_sections_say_so() {
    let e =
        parse("upstream: {url: http://r:5000}\nmongo_auth:\n  collection: users\n").unwrap_err();
    assert_eq!(e.position, Some((2, 1)));
    assert!(
        e.to_string()
            .contains("mongo_auth: this docker_auth section is not implemented"),
        "{e}"
    );
}

#[test]
fn acl_errors_name_the_rule_and_field() {
    let src = "upstream: {url: http://r:5000}\nacl:\n  - match: {account: admin}\n    actions: [\"*\"]\n  - match: {name: \"/[/\"}\n    actions: [pull]\n";
    let e = parse(src).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("acl[1].match.name"), "{e}");
    assert_eq!(e.position.map(|p| p.0), Some(5), "{e}");
}

#[test]
fn passwords_must_be_bcrypt() {
    let e = parse("upstream: {url: http://r:5000}\nusers:\n  bob:\n    password: hunter2\n")
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("users.bob.password"));
    assert_eq!(e.position, Some((4, 5)));
    assert!(
        !e.to_string().contains("hunter2"),
        "the error does not echo the value"
    );
    let e = parse("upstream: {url: http://r:5000}\nusers:\n  bob: {}\n").unwrap_err();
    assert!(e.to_string().contains("no password"), "{e}");
}

#[test]
fn upstream_is_required_and_checked() {
    let e = parse("server: {addr: \":5000\"}\n").unwrap_err();
    assert!(e.to_string().contains("upstream.url"), "{e}");
    let e = parse("upstream: {url: \"127.0.0.1:5000\"}\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("upstream.url"));
    let c = parse("upstream: {url: \"https://registry.internal:5000\", ca_certificate: ca.crt}\n")
        .unwrap();
    assert_eq!(c.upstream.urls[0].scheme_str(), Some("https"));
    assert!(c.upstream.ca_certificate.unwrap().ends_with("ca.crt"));
    let e = parse("upstream: {url: \"http://r:5000\", ca_certificate: ca.crt}\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("upstream.ca_certificate"));
    assert!(e.message.contains("plain http"), "{e}");
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let c = parse("server: {addr: \"127.0.0.1:0\", certificate: tls/s.crt, key: tls/s.key}\nupstream: {url: http://r:5000}\ndata_dir: state\n").unwrap();
    let tls = c.server.tls.unwrap().files().unwrap().clone();
    assert_eq!(tls.certificate, Path::new("/etc/regate/tls/s.crt"));
    assert_eq!(c.data_dir, Path::new("/etc/regate/state"));
}

#[test]
fn closest_and_distance() {
    assert_eq!(strsim::levenshtein("hussien", "hussein"), 2);
    assert_eq!(keys::closest("adr", ["addr", "net"]), Some("addr"));
    assert_eq!(keys::closest("zzzzzz", ["addr", "net"]), None);
}

#[test]
fn htpasswd_users_join_the_users_list() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    let h = |pw: &str| bcrypt::hash(pw, 4).unwrap();
    std::fs::write(
        &file,
        format!(
            "# registry users\ncarol:{}\n\nadmin:{}\n",
            h("c"),
            h("other")
        ),
    )
    .unwrap();
    let src = format!("upstream: {{url: http://r:5000}}\nhtpasswd: htpasswd\nusers:\n  admin:\n    password: \"{HASH}\"\n    labels: {{team: [ops]}}\n");
    let c = Config::parse(&dir.path().join("regate.yml"), &src).unwrap();
    assert_eq!(c.htpasswd.as_deref(), Some(file.as_path()));
    assert!(c.users.contains_key("carol"));
    // `users` wins: admin keeps its hash and labels.
    assert_eq!(c.users["admin"].password_hash.as_deref(), Some(HASH));
    assert_eq!(c.users["admin"].labels["team"], ["ops"]);
    assert!(c.users["carol"].labels.is_empty());

    std::fs::write(&file, "carol:plaintext\n").unwrap();
    let e = Config::parse(&dir.path().join("regate.yml"), &src).unwrap_err();
    assert_eq!(e.file, file);
    assert_eq!(e.position, Some((1, 1)));
    assert!(e.to_string().contains("not bcrypt"), "{e}");
}

#[test]
fn environment_overrides() {
    let vars = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    };
    let c = Config::parse_with_env(
        Path::new("/etc/regate/config.yml"),
        "token: {issuer: file}\n",
        vars(&[
            ("REGATE_TOKEN_ISSUER", "env"),
            ("REGATE_UPSTREAM_URL", "http://registry:5000"),
        ]),
    )
    .unwrap();
    assert_eq!(c.token.issuer, "env");
    assert_eq!(c.upstream.urls[0].to_string(), "http://registry:5000/");
    let e = Config::parse_with_env(
        Path::new("/etc/regate/config.yml"),
        "upstream: {url: http://r:5000}\n",
        vars(&[("REGATE_TOKEN_EXPIRATION", "later")]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("REGATE_TOKEN_EXPIRATION"), "{e}");

    // A bad value from the environment points at the variable, even where the file has
    // the key too, and a section only the environment made says where it came from.
    let e = Config::parse_with_env(
        Path::new("/etc/regate/config.yml"),
        "upstream: {url: http://r:5000}\ntoken: {expiration: 900}\n",
        vars(&[("REGATE_TOKEN_EXPIRATION", "-5")]),
    )
    .unwrap_err();
    assert_eq!(
        e.hint.as_deref(),
        Some("set from the environment by REGATE_TOKEN_EXPIRATION"),
        "{e}"
    );
    let e = Config::parse_with_env(
        Path::new("/etc/regate/config.yml"),
        "upstream: {url: http://r:5000}\n",
        vars(&[("REGATE_LDAP_AUTH_ADDR", "ldap.example.com:389")]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("`base` is required"), "{e}");
    assert!(e.to_string().contains("by REGATE_LDAP_AUTH_ADDR"), "{e}");
}

#[test]
fn pasted_whitespace_is_named_with_its_line() {
    let e = parse("server:\n\u{a0}\u{a0}addr: \":5000\"\nupstream: {url: http://r:5000}\n")
        .unwrap_err();
    assert_eq!(e.position, Some((2, 1)), "{e}");
    assert!(
        e.message
            .contains("line 2 has 2 non-breaking spaces where YAML needs plain spaces"),
        "{e}"
    );
    assert!(
        e.also.is_empty(),
        "only the cause, not what YAML made of it: {e}"
    );
    let e = parse("upstream:\n\turl: http://r:5000\n").unwrap_err();
    assert!(e.message.contains("line 2 is indented with 1 tab"), "{e}");
    // A non-breaking space inside quotes is the value's own.
    parse("upstream: {url: http://r:5000}\ntoken: {issuer: \"Auth\u{a0}Service\"}\n").unwrap();
}

#[test]
fn no_message_names_a_type_of_ours() {
    for src in [
        "just a string\n",
        "- a\n- list\n",
        "server: [1]\n",
        "token: {expiration: soon}\n",
    ] {
        let e = parse(src).unwrap_err();
        for e in e.all() {
            let text = e.to_string();
            assert!(
                !text.contains("struct") && !text.contains("Raw") && !text.contains("i64"),
                "{src:?}: {text}"
            );
        }
    }
}

#[test]
fn users_at_the_top_level_are_pointed_under_users() {
    let e = parse("upstream: {url: http://r:5000}\n\"admin\":\n  password: x\n").unwrap_err();
    assert_eq!(e.position, Some((2, 1)), "{e}");
    assert!(
        e.hint
            .as_deref()
            .is_some_and(|h| h.contains("looks like a user") && h.contains("`users:`")),
        "{e}"
    );
}

#[test]
fn duplicates_and_list_items_at_column_one_get_their_own_line_and_path() {
    let src = format!("upstream: {{url: http://r:5000}}\nusers:\n  bob: {{password: \"{HASH}\"}}\n  bob: {{password: \"{HASH}\"}}\n");
    let e = parse(&src).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("users.bob"));
    assert_eq!(e.position, Some((4, 3)));
    let e = parse("upstream: {url: http://r:5000}\nacl:\n- match: {account: admin}\n  actions: []\n- match: {acount: admin}\n  actions: []\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("acl[1].match"), "{e}");
    assert_eq!(e.position, Some((5, 11)), "{e}");
    let e =
        parse("upstream: {url: http://r:5000}\nacl:\n- match: {name: \"/[/\"}\n  actions: []\n")
            .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("acl[0].match.name"), "{e}");
    assert_eq!(e.position, Some((3, 11)), "{e}");
}

#[test]
fn every_error_in_one_run_in_file_order() {
    let src = "server:\n  addr: \"no port\"\ntoken:\n  expiration: -1\nusers:\n  bob:\n    password: hunter2\nupstream: {url: http://r:5000}\n";
    let e = parse(src).unwrap_err();
    let keys: Vec<_> = e.all().map(|e| e.key.clone().unwrap_or_default()).collect();
    assert_eq!(
        keys,
        ["server.addr", "token.expiration", "users.bob.password"],
        "{e}"
    );
}

#[test]
fn docker_auths_disable_legacy_key_id_means_rfc7638() {
    let c =
        parse("upstream: {url: http://r:5000}\ntoken: {disable_legacy_key_id: true}\n").unwrap();
    assert_eq!(c.token.kid_format, KidFormat::Rfc7638);
    let e = parse("upstream: {url: http://r:5000}\ntoken: {disable_legacy_key_id: true, kid_format: libtrust}\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("token.kid_format"));
}

/// The README's table of keys is the one the loader reads (`config::KEYS`): a key added to
/// a section without a README row, or a row left for a key that went, fails here.
#[test]
fn the_readme_lists_every_key() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("<!-- keys: begin -->\n")
        .expect("README has the keys table markers")
        + "<!-- keys: begin -->\n".len();
    let end = readme[start..].find("<!-- keys: end -->").unwrap() + start;
    let table = keys::table(KEYS);
    assert!(
        readme[start..end] == table,
        "README.md's table of keys differs from config::KEYS; it should read:\n{table}"
    );
}

#[test]
fn curve_preferences_are_read_not_ignored() {
    let c = parse("server: {addr: \":0\", certificate: s.crt, key: s.key, tls_curve_preferences: [P256, 29]}\nupstream: {url: http://r:5000}\n").unwrap();
    assert_eq!(
        c.server.tls.unwrap().curves,
        [crate::tls::Curve::P256, crate::tls::Curve::X25519]
    );
    let e =
        parse("server:\n  tls_curve_preferences: [X25519, P521]\nupstream: {url: http://r:5000}\n")
            .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("server.tls_curve_preferences[1]"));
    assert_eq!(e.position, Some((2, 35)));
    assert!(e.message.contains("not offered"), "{e}");
}

#[test]
fn real_ip_header_counts_only_from_trusted_proxies() {
    let base =
        "upstream: {url: \"http://r:5000\"}\nacl: []\nserver:\n  real_ip_header: X-Forwarded-For\n";
    // docker_auth's behaviour (any peer), with a warning.
    let c = parse(base).unwrap();
    let real = c.server.real_ip.as_ref().unwrap();
    assert!(real.trusts("203.0.113.9".parse().unwrap()));
    assert!(
        c.warnings.iter().any(|w| w.contains("trusted_proxies")),
        "{:?}",
        c.warnings
    );
    // nginx's set_real_ip_from: addresses and blocks, v4 and v6.
    let c = parse(&format!(
        "{base}  trusted_proxies: [10.0.0.0/8, \"::1\", 192.0.2.7]\n"
    ))
    .unwrap();
    let real = c.server.real_ip.as_ref().unwrap();
    for (peer, trusted) in [
        ("10.1.2.3", true),
        ("::1", true),
        ("192.0.2.7", true),
        ("::ffff:10.0.0.1", true),
        ("127.0.0.1", false),
        ("192.0.2.8", false),
        ("11.0.0.1", false),
    ] {
        assert_eq!(real.trusts(peer.parse().unwrap()), trusted, "{peer}");
    }
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // A block that does not parse is an error at its line.
    let e = parse(&format!(
        "{base}  trusted_proxies:\n    - 10.0.0.0/8\n    - 10.0.0.0/33\n"
    ))
    .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("server.trusted_proxies[1]"));
    assert_eq!(e.position.map(|p| p.0), Some(7), "{e}");
    // Without the header, the list means nothing: a warning says so.
    let c = parse("upstream: {url: \"http://r:5000\"}\nserver: {trusted_proxies: [10.0.0.0/8]}\n")
        .unwrap();
    assert!(c.server.real_ip.is_none());
    assert!(c.warnings.iter().any(|w| w.contains("ignored")));
}

#[test]
fn docker_auths_letsencrypt_loads() {
    let src = "server:\n  addr: \":443\"\n  letsencrypt:\n    host: Registry.Example.com\n    email: ops@example.com\n    cache_dir: /var/cache/regate\nupstream: {url: http://r:5000}\n";
    let c = parse(src).unwrap();
    let tls = c.server.tls.as_ref().unwrap();
    let acme = tls.acme().unwrap();
    assert_eq!(acme.host, "registry.example.com");
    assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
    assert_eq!(acme.cache_dir, Path::new("/var/cache/regate"));
    assert_eq!(acme.directory_url, crate::acme::LETS_ENCRYPT);
    assert_eq!(acme.renewal, crate::acme::Renewal::default());
    // HTTPS as with a pair of files: Basic credentials on, a redirect listener allowed.
    assert!(c.server.basic_auth);
    // The token key is not the renewed certificate's: one is generated in data_dir.
    assert_eq!(c.token.key, None);
    assert!(
        !c.warnings.iter().any(|w| w.contains("letsencrypt")),
        "{:?}",
        c.warnings
    );

    // regate's keys: another CA, its root, and cache_dir under data_dir by default.
    let src = "server:\n  addr: \":8443\"\n  letsencrypt:\n    host: registry.example.com\n    directory_url: https://ca.internal:14000/dir\n    ca_certificate: pebble-ca.pem\nupstream: {url: http://r:5000}\ndata_dir: state\n";
    let c = parse(src).unwrap();
    let acme = c.server.tls.as_ref().unwrap().acme().unwrap().clone();
    assert_eq!(acme.directory_url, "https://ca.internal:14000/dir");
    assert_eq!(
        acme.ca_certificate.as_deref(),
        Some(Path::new("/etc/regate/pebble-ca.pem"))
    );
    assert_eq!(acme.cache_dir, Path::new("/etc/regate/state/letsencrypt"));
    assert!(
        c.warnings.iter().any(|w| w.contains("port 443")),
        "not on 443: {:?}",
        c.warnings
    );
    // From the environment too, as every scalar.
    let c = Config::parse_with_env(
        Path::new("/etc/regate/config.yml"),
        "upstream: {url: http://r:5000}\n",
        [(
            "REGATE_SERVER_LETSENCRYPT_HOST".to_owned(),
            "env.example.com".to_owned(),
        )],
    )
    .unwrap();
    assert_eq!(
        c.server.tls.unwrap().acme().unwrap().host,
        "env.example.com"
    );
}

#[test]
fn letsencrypt_mistakes_are_named() {
    let e = parse("server:\n  certificate: s.crt\n  key: s.key\n  letsencrypt: {host: r.example.com}\nupstream: {url: http://r:5000}\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("server.letsencrypt"));
    assert!(e.message.contains("keep one"), "{e}");
    assert!(e.message.contains("`letsencrypt` for certificates"), "{e}");
    let e =
        parse("server:\n  letsencrypt: {email: a@example.com}\nupstream: {url: http://r:5000}\n")
            .unwrap_err();
    assert!(e.message.contains("`host` is required"), "{e}");
    for (host, says) in [
        ("https://r.example.com", "URL"),
        ("*.example.com", "wildcard"),
        ("10.0.0.5", "address"),
        ("r.example.com:443", "port"),
        ("bad_name.example.com", "not a DNS name"),
    ] {
        let e = parse(&format!(
            "server:\n  letsencrypt: {{host: \"{host}\"}}\nupstream: {{url: http://r:5000}}\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("server.letsencrypt.host"), "{host}");
        assert!(e.message.contains(says), "{host}: {e}");
    }
    let e = parse("server:\n  letsencrypt: {host: r.example.com, directory_url: \"http://ca:80/dir\"}\nupstream: {url: http://r:5000}\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("server.letsencrypt.directory_url"));
    let e = parse("server:\n  letsencrypt: {host: r.example.com, email: nobody}\nupstream: {url: http://r:5000}\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("server.letsencrypt.email"));
    let e =
        parse("server:\n  letsencrypt:\n    hots: r.example.com\nupstream: {url: http://r:5000}\n")
            .unwrap_err();
    assert!(e.to_string().contains("did you mean `host`?"), "{e}");
}

#[test]
fn shared_state_without_a_token_key_warns_that_replicas_generate_their_own() {
    let c = parse("upstream: {url: http://r:5000}\nshared_state: {redis: {addr: \"redis:6379\", password_file: pw}}\n").unwrap();
    let redis = c.shared_state.as_ref().unwrap();
    assert_eq!(redis.to_string(), "redis://redis:6379/0");
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("each replica generates its own")),
        "{:?}",
        c.warnings
    );
    let c = parse("upstream: {url: http://r:5000}\nshared_state: {redis: {url: \"rediss://cache:6380/2\", password_file: pw}}\ntoken: {certificate: t.crt, key: t.key}\n").unwrap();
    assert!(
        !c.warnings.iter().any(|w| w.contains("shared_state")),
        "{:?}",
        c.warnings
    );
    assert!(c.shared_state.as_ref().unwrap().tls);
    let e = parse(
        "upstream: {url: http://r:5000}\nshared_state: {redis: {url: \"redis://:secret@cache\"}}\n",
    )
    .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("shared_state.redis.url"));
    assert!(!e.to_string().contains("secret@"), "{e}");
}

#[test]
fn upstream_url_takes_a_list_of_registries_of_one_scheme() {
    let c = parse("upstream: {url: [\"http://r1:5000\", \"http://r2:5000\"]}\n").unwrap();
    assert_eq!(c.upstream.urls.len(), 2);
    let e = parse("upstream: {url: [\"http://r1:5000\", \"https://r2:5000\"]}\n").unwrap_err();
    assert!(e.to_string().contains("mix http and https"), "{e}");
    let e = parse("upstream: {url: [\"http://r1:5000\", \"r2:5000\"]}\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("upstream.url[1]"), "{e}");
}

#[test]
fn proxy_protocol_needs_the_proxies_it_trusts() {
    let e = parse("upstream: {url: http://r:5000}\nserver: {proxy_protocol: true}\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("server.proxy_protocol"), "{e}");
    let c = parse("upstream: {url: http://r:5000}\nserver: {proxy_protocol: true, trusted_proxies: [10.0.0.0/8]}\n").unwrap();
    assert_eq!(c.server.proxy_protocol.as_deref().map(<[_]>::len), Some(1));
    assert!(c.server.real_ip.is_none());
    assert!(
        !c.warnings.iter().any(|w| w.contains("trusted_proxies")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn max_connections_is_a_positive_count_also_from_the_environment() {
    let base = "upstream: {url: http://r:5000}\n";
    assert_eq!(parse(base).unwrap().server.max_connections, None);
    let c = parse(&format!("{base}server: {{max_connections: 50000}}\n")).unwrap();
    assert_eq!(c.server.max_connections, Some(50_000));
    let e = parse(&format!("{base}server:\n  max_connections: 0\n")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("server.max_connections"), "{e}");
    assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
    assert!(e.to_string().contains("from 1 to"), "{e}");
    assert!(parse(&format!("{base}server: {{max_connections: many}}\n")).is_err());
    assert!(parse(&format!("{base}server: {{max_connections: -1}}\n")).is_err());
    let env = |v: &str| {
        Config::parse_with_env(
            Path::new("/etc/regate/config.yml"),
            base,
            [("REGATE_SERVER_MAX_CONNECTIONS".to_owned(), v.to_owned())],
        )
    };
    assert_eq!(env("20000").unwrap().server.max_connections, Some(20_000));
    let e = env("0").unwrap_err();
    assert!(
        e.to_string().contains("REGATE_SERVER_MAX_CONNECTIONS"),
        "{e}"
    );
}

mod idp;

#[test]
fn users_with_the_same_labels_share_one_set() {
    let src = format!(
        "upstream: {{url: http://r:5000}}\nusers:\n  a: {{password: \"{HASH}\", labels: {{team: [ops]}}}}\n  \
         b: {{password: \"{HASH}\", labels: {{team: [ops]}}}}\n  c: {{password: \"{HASH}\", labels: {{team: [dev]}}}}\n"
    );
    let c = Config::parse(Path::new("/etc/regate.yml"), &src).unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &c.users["a"].labels,
        &c.users["b"].labels
    ));
    assert_eq!(c.users["c"].labels["team"], ["dev"]);
}
