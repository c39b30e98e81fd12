//! Strings into and out of the directory: placeholders, filter escaping (the one defence
//! against LDAP injection), and the attribute values that become labels.

use std::fmt::Write as _;

use ldap3::SearchEntry;

/// An attribute's values, the name compared as LDAP does (case-insensitively).
pub(super) fn attribute<'e>(entry: &'e SearchEntry, name: &str) -> &'e [String] {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or(&[], |(_, v)| v.as_slice())
}

pub(super) fn convert(value: &str, parse_cn: bool, lower_case: bool) -> String {
    let value = if parse_cn {
        cn_of(value)
    } else {
        value.to_owned()
    };
    if lower_case {
        value.to_lowercase()
    } else {
        value
    }
}

pub(super) fn push_unique(values: &mut Vec<String>, value: String) {
    if !values.contains(&value) {
        values.push(value);
    }
}

/// Replaces each placeholder in one pass over the template: a value is never searched
/// for placeholders again (a DN holding the text `${account}` stays as it is).
pub fn expand(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    'scan: while !rest.is_empty() {
        for (name, value) in vars {
            if let Some(after) = rest.strip_prefix(name) {
                out.push_str(value);
                rest = after;
                continue 'scan;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// A value for a search filter (RFC 4515 section 3): `*`, `(`, `)`, `\` and NUL become
/// `\XX`, so an account name is only ever a literal value, never a wildcard or a clause.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' | '(' | ')' | '\\' | '\0' => {
                let _ = write!(out, "\\{:02x}", c as u32);
            }
            _ => out.push(c),
        }
    }
    out
}

/// The value of the first `CN` of a DN (`cn=Devs,ou=groups,dc=example` -> `Devs`), as
/// docker_auth's `parse_cn`; the text itself when it has none.
pub fn cn_of(dn: &str) -> String {
    let mut start = 0;
    let mut escaped = false;
    let bytes = dn.as_bytes();
    for i in 0..=bytes.len() {
        let end = i == bytes.len();
        if !end && escaped {
            escaped = false;
            continue;
        }
        if !end && bytes[i] == b'\\' {
            escaped = true;
            continue;
        }
        if end || bytes[i] == b',' || bytes[i] == b'+' || bytes[i] == b';' {
            let rdn = &dn[start..i];
            if let Some((kind, value)) = rdn.split_once('=') {
                if kind.trim().eq_ignore_ascii_case("cn") {
                    return unescape_dn_value(value.trim());
                }
            }
            start = i + 1;
        }
    }
    dn.to_owned()
}

/// RFC 4514 escapes: `\,` is `,`, `\2C` is the byte 0x2C.
fn unescape_dn_value(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(bytes[i + 1]);
                    i += 2;
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
