//! Environment overrides in registry:2's style: `REGATE_TOKEN_ISSUER` sets `token.issuer`.
//! Every scalar key of [`super::KEYS`] has one, found by one walk over the keys, and the
//! value enters the YAML tree as if written there, remembering the variable: an error in
//! it names the variable, also when validation refuses it later.

use super::keys::{settable, Kind};
use super::yaml::{Node, Origin, Value};
use super::KEYS;

/// Variables the command line reads itself, not config keys.
const CLI: &[&str] = &["REGATE_CONFIG", "REGATE_LOG"];

/// The variable for a dotted key: `ldap_auth.bind_dn` -> `REGATE_LDAP_AUTH_BIND_DN`.
pub fn variable(path: &str) -> String {
    format!("REGATE_{}", path.replace('.', "_").to_uppercase())
}

/// Sets every `REGATE_*` override in `vars` into `doc`; returns warnings for variables that
/// are not settings.
pub fn apply(doc: &mut Node, vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let known = settable(KEYS);
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("REGATE_") && !CLI.contains(&k.as_str()))
        .collect();
    vars.sort();
    let mut warnings = Vec::new();
    for (name, value) in vars {
        match known.iter().find(|(path, _)| variable(path) == name) {
            Some((path, key)) => {
                let steps: Vec<&str> = path.split('.').collect();
                let origin = Origin::Env(name);
                let scalar = |text: &str| Node {
                    value: Value::Scalar {
                        text: text.to_owned(),
                        plain: true,
                    },
                    origin: origin.clone(),
                };
                // A list from one variable: comma-separated, as most tools write one.
                let value = match key.kind {
                    Kind::List => Value::Seq(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(scalar)
                            .collect(),
                    ),
                    _ => scalar(&value).value,
                };
                doc.set(&steps, value, origin);
            }
            None => warnings.push(format!(
                "environment variable {name} is not a regate setting; ignored"
            )),
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::super::yaml::from_node;
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn overrides_set_nested_keys() {
        let mut doc = Node::parse("token: {issuer: file}\n").unwrap();
        let warnings = apply(
            &mut doc,
            vars(&[
                ("REGATE_TOKEN_ISSUER", "from env"),
                ("REGATE_TOKEN_EXPIRATION", "600"),
                ("REGATE_SERVER_HSTS", "true"),
                ("REGATE_UPSTREAM_URL", "http://registry:5000"),
                ("REGATE_CONFIG", "/config/regate.yml"),
                ("HOME", "/root"),
                ("REGATE_TYPO", "x"),
            ]),
        );
        let token = doc.get("token").unwrap();
        let issuer: String = from_node(token.get("issuer").unwrap()).unwrap();
        assert_eq!(issuer, "from env");
        let expiration: i64 = from_node(token.get("expiration").unwrap()).unwrap();
        assert_eq!(expiration, 600);
        let hsts: bool = from_node(doc.get("server").unwrap().get("hsts").unwrap()).unwrap();
        assert!(hsts);
        assert_eq!(
            doc.get("server").unwrap().origin,
            Origin::Env("REGATE_SERVER_HSTS".into())
        );
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("REGATE_TYPO"));
    }

    #[test]
    fn trusted_proxies_are_a_comma_separated_list() {
        let mut doc = Node::empty_map(Origin::File(1, 1));
        apply(
            &mut doc,
            vars(&[("REGATE_SERVER_TRUSTED_PROXIES", "10.0.0.0/8, ::1,")]),
        );
        let list: Vec<String> =
            from_node(doc.get("server").unwrap().get("trusted_proxies").unwrap()).unwrap();
        assert_eq!(list, ["10.0.0.0/8", "::1"]);
    }

    #[test]
    fn every_scalar_key_has_a_variable_and_no_two_collide() {
        let all = settable(KEYS);
        let mut names: Vec<String> = all.iter().map(|(p, _)| variable(p)).collect();
        assert!(names.contains(&"REGATE_LDAP_AUTH_BIND_PASSWORD_FILE".to_owned()));
        assert!(names.contains(&"REGATE_UPSTREAM_CA_CERTIFICATE".to_owned()));
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}
