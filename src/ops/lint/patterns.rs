//! Pattern helpers for the lints: each asks the ACL itself (a one-rule ACL, or its
//! placeholder scanner) rather than a second implementation of docker_auth's matching.

use crate::acl::{placeholders, Acl, Labels, Piece, RawEntry, RawMatch, Request};
use crate::config::keys::closest;

use super::{field_raw, FIELDS};

/// Identical patterns with `${field:N}` agree only if that field's regex is the same too.
pub(super) fn same_captures(pattern: &str, a: &RawMatch, b: &RawMatch) -> bool {
    placeholders(pattern).iter().all(|ph| match ph {
        Ok(Piece::Capture(f, _)) => field_raw(a, f.key()) == field_raw(b, f.key()),
        _ => true,
    })
}

pub(super) fn regex_source(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('/')?.strip_suffix('/')?;
    (!inner.is_empty()).then_some(inner)
}

/// Matches exactly one string, itself (the test `Acl::literal_accounts` uses).
pub(super) fn is_literal(raw: &str) -> bool {
    regex_source(raw).is_none() && !raw.contains(['*', '?', '[', '\\']) && !raw.contains("${")
}

#[derive(Clone, Copy)]
pub(super) enum Probe<'a> {
    Field(&'a str),
    Label(&'a str),
}

/// Whether `pattern` matches `value` where `at` says, by asking a one-rule ACL: the exact
/// semantics, with no second implementation to drift. Only for placeholder-free patterns.
pub(super) fn probe(at: Probe<'_>, pattern: &str, value: &str) -> bool {
    let mut m = RawMatch::default();
    let mut labels = Labels::new();
    let (mut account, mut resource_type, mut name, mut service) = ("", "repository", "x", "");
    match at {
        Probe::Field("account") => (m.account, account) = (Some(pattern.into()), value),
        Probe::Field("type") => (m.type_, resource_type) = (Some(pattern.into()), value),
        Probe::Field("name") => (m.name, name) = (Some(pattern.into()), value),
        Probe::Field(_) => (m.service, service) = (Some(pattern.into()), value),
        Probe::Label(k) => {
            m.labels = Some([(k.to_owned(), pattern.to_owned())].into());
            labels.insert(k.to_owned(), vec![value.to_owned()]);
        }
    }
    let entry = RawEntry {
        match_: m,
        actions: vec!["*".into()],
        comment: None,
    };
    let Ok(acl) = Acl::compile(&[entry]) else {
        return false;
    };
    let actions = ["pull".to_owned()];
    acl.authorize(&Request {
        account,
        labels: &labels,
        ip: None,
        service,
        resource_type,
        name,
        actions: &actions,
    })
    .rule
        == Some(0)
}

/// `{account}`, `{labels:tier}`...: a placeholder missing its `$` (reference.yml has one).
pub(super) fn missing_dollar(raw: &str) -> Vec<&str> {
    raw.match_indices('{')
        .filter(|(at, _)| !raw[..*at].ends_with('$'))
        .filter_map(|(at, _)| {
            let inner = &raw[at + 1..at + raw[at..].find('}')?];
            let known = matches!(placeholders(&format!("${{{inner}}}"))[..], [Ok(_)]);
            known.then_some(inner)
        })
        .collect()
}

pub(super) fn suggest_placeholder(inner: &str) -> Option<String> {
    let close = |word: &str, candidates: &[&str]| {
        closest(word, candidates.iter().copied()).map(str::to_owned)
    };
    match inner.split_once(':') {
        Some((head, tail)) => {
            let head = close(head, &["account", "type", "name", "service", "labels"])?;
            Some(format!("{head}:{tail}"))
        }
        None => close(inner, &FIELDS),
    }
}
