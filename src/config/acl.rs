//! `acl:` (and each robot's `acl:`) -> [`Acl`]: docker_auth's rules, compiled; an error
//! names the rule and the field.

use super::keys::{Key, Kind};
use super::{key, Cx, Failed, Seg};
use crate::acl::{Acl, RawEntry};

pub(super) const MATCH_KEYS: &[Key] = &[
    Key::scalar(
        "account",
        "any",
        "the account (`\"\"` anonymous); a glob, or `/regex/`, with placeholders",
    ),
    Key::scalar("type", "any", "the scope's type: `repository`, `registry`"),
    Key::scalar(
        "name",
        "any",
        "the repository name, e.g. `${account}/*` (`*` does not cross `/`)",
    ),
    Key::scalar("service", "any", "the token service asked for"),
    Key::scalar("ip", "any", "the client's address or a CIDR"),
    Key::with(
        "labels",
        Kind::Free,
        "any",
        "label: pattern; one of the account's values for each label must match",
    ),
];

pub(super) const KEYS: &[Key] = &[
    Key::new("match", Kind::Section(MATCH_KEYS)),
    Key::with(
        "actions",
        Kind::List,
        "`[]` (deny)",
        "what the rule grants of what was asked: `pull`, `push`, `delete`, or `\"*\"` (all asked)",
    ),
    Key::scalar(
        "comment",
        "",
        "shown by `regate explain` and in the audit log",
    ),
];

/// `others`: an authorizer after the static `acl` is configured (`acl_xorm`, `ext_authz`,
/// `casbin_authz`), which decides what no rule here matches.
pub(super) fn build(
    entries: Option<Vec<RawEntry>>,
    others: bool,
    cx: &mut Cx<'_>,
) -> Result<std::sync::Arc<Acl>, Failed> {
    let entries = entries.unwrap_or_else(|| {
        if !others {
            cx.warn("no `acl`: every request is denied");
        }
        Vec::new()
    });
    compile(&entries, &[key("acl")], cx).map(std::sync::Arc::new)
}

/// Compiles a list of rules found at `prefix`; every rule that does not compile is an
/// error of its own.
pub(super) fn compile(
    entries: &[RawEntry],
    prefix: &[Seg],
    cx: &mut Cx<'_>,
) -> Result<Acl, Failed> {
    Acl::compile(entries).map_err(|errors| {
        let mut failed = Failed;
        for e in errors {
            let mut path = prefix.to_vec();
            path.push(Seg::Index(e.index));
            path.extend(e.field.split('.').map(key));
            failed = cx.fail_at(&path, e.message);
        }
        failed
    })
}

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    super::keys::assert_keys_match::<RawEntry>(KEYS);
    super::keys::assert_keys_match::<crate::acl::RawMatch>(MATCH_KEYS);
}
