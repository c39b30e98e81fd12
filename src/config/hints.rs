//! Turning serde_yaml's errors into ones an operator can act on: the key's position, and
//! for an unknown key the closest known one, or the section it belongs to when a paste
//! lost its indentation.

use std::path::Path;

use super::raw::KNOWN_KEYS;
use super::ConfigError;

pub(super) fn yaml_error(file: &Path, e: &serde_yaml::Error) -> ConfigError {
    let text = e.to_string();
    // serde_yaml writes "path.to.key: message at line L column C".
    let text = match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    let (key, message) = match text.split_once(": ") {
        Some((k, m)) if !k.contains(' ') => (Some(k.to_owned()), m.to_owned()),
        _ => (None, text.clone()),
    };
    let hint = unknown_field_hint(key.as_deref(), &message);
    ConfigError {
        file: file.to_owned(),
        position: e.location().map(|l| (l.line(), l.column())),
        key,
        message,
        hint,
    }
}

/// For "unknown field `x`": the closest known key, or the section `x` belongs to when it
/// was found at the wrong level (a paste that lost its indentation).
fn unknown_field_hint(section: Option<&str>, message: &str) -> Option<String> {
    let field = message.strip_prefix("unknown field `")?.split('`').next()?;
    let section = section.map(normalise_section).unwrap_or_default();
    if let Some((_, keys)) = KNOWN_KEYS.iter().find(|(s, _)| *s == section) {
        if let Some(best) = closest(field, keys) {
            return Some(format!("did you mean `{best}`?"));
        }
    }
    let home: Vec<&str> = KNOWN_KEYS
        .iter()
        .filter(|(s, keys)| *s != section && keys.contains(&field))
        .map(|(s, _)| *s)
        .collect();
    if let Some(home) = home.first() {
        let at = if section.is_empty() {
            "the top level".to_owned()
        } else {
            format!("`{section}`")
        };
        return Some(format!(
            "`{field}` is a key of `{home}`, but it stands at {at}: was the indentation lost? Keys of a section are indented under it"
        ));
    }
    None
}

/// `acl[3].match` -> `acl[].match`, `users.bob` -> `users.<name>`.
fn normalise_section(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '[' {
            for d in chars.by_ref() {
                if d == ']' {
                    break;
                }
            }
            out.push_str("[]");
        } else {
            out.push(c);
        }
    }
    if out.starts_with("users.") {
        return "users.<name>".to_owned();
    }
    if out.starts_with("ldap_auth.labels.") {
        return "ldap_auth.labels.<name>".to_owned();
    }
    out
}

pub(super) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
